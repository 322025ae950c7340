"""Learned graph frame (metric learning) vs the geometric default graph, on held-out events.

For each multiplicity in ``--particles`` (trackml preset), trains a
:class:`~gnn_jepa.graph.metric_learning.HitEmbedding` on ``--train-events`` simulated events
(seeds 1000 + k) and measures on ``--eval-events`` other events (seeds 2000 + k), pooled:

* ``learned.scan``: a radius scan (``--radius-factors`` x the hinge margin) with each
  ``--caps`` value (0 = uncapped): pT > 1 GeV segment efficiency, all-segment efficiency,
  purity, mean degree (``graph_truth_metrics``);
* ``learned.at_degree`` / ``geometric.at_degree``: the uncapped radius whose pooled mean
  degree is ``--target-degree`` (bisection) and its efficiency, i.e. the like-for-like
  comparison at the issue-3 degree budget;
* ``geometric.default``: ``DEFAULT_GRAPH`` (eta_phi 0.1/1/2e-4, radius 0.09) uncapped and
  with each cap, on the same events;
* ``learned.layer_pair_filtered`` (diagnostic, not part of the frame): the learned graph at
  ``--filter-factor`` x margin, then only pairs whose (volume, layer) pair occurs among the
  true pT > 1 GeV segments of the *training* events and whose z0 (r-z line at the beam)
  and |dphi/dr| lie inside that layer pair's training range (:func:`layer_pair_windows`):
  a module-map-like pair filter, to show what a pair-level stage adds to a per-hit metric.

The margin defaults to ``0.1 * sqrt(1000 / particles)``: at fixed degree the radius shrinks
like 1/sqrt(density) in the two dense embedding axes. Prints one JSON document; ``--save-dir``
keeps each trained embedding (``learned_<particles>.pt``, loadable by
``BuildGraph(kind="learned", embedding=...)``).

    OMP_NUM_THREADS=1 python benchmarks/learned_graph.py [--particles 1000,10000] \\
        [--train-events 2] [--eval-events 1] [--steps 400] [--dim 3] [--save-dir DIR]

The default run takes ~6.5 minutes on a loaded 2-core CPU (10k particles: ~2 min of
training, ~10 s per geometric-default graph).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gnn_jepa.data.convert import event_to_data  # noqa: E402
from gnn_jepa.data.simulator import Simulator  # noqa: E402
from gnn_jepa.geometry import cylindrical, wrap_phi  # noqa: E402
from gnn_jepa.graph.edges import graph_truth_metrics, true_segments  # noqa: E402
from gnn_jepa.graph.frames import GraphFrame  # noqa: E402
from gnn_jepa.graph.metric_learning import (HitEmbedding, LearnedFrame,  # noqa: E402
                                            train_hit_embedding)
from gnn_jepa.graph.radius import radius_graph  # noqa: E402
from gnn_jepa.graph.transform import DEFAULT_GRAPH  # noqa: E402


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _list(text: str, kind=float) -> list:
    return [kind(v) for v in text.split(",") if v.strip()]


def pooled_metrics(frame, coords: list[torch.Tensor], datas: list, radius: float,
                   cap: int | None, edge_filter=None) -> dict:
    """Graph metrics pooled over events (segment- and node-weighted); ``edge_filter(data,
    edge_index) -> edge_index`` is applied to each radius graph when given."""
    found_hi = seg_hi = found = seg = pure = edges = deg = nodes = 0.0
    t0 = time.perf_counter()
    for c, d in zip(coords, datas):
        ei = radius_graph(c, radius, periods=frame.periods, max_num_neighbors=cap)
        if edge_filter is not None:
            ei = edge_filter(d, ei)
        m = graph_truth_metrics(ei, d.particle_id, d.hit_order, d.pt)
        found_hi += m["efficiency_pt_min"] * m["num_segments_pt_min"]
        seg_hi += m["num_segments_pt_min"]
        found += m["efficiency"] * m["num_segments"]
        seg += m["num_segments"]
        pure += (m["purity"] if m["num_edges"] else 0.0) * m["num_edges"]
        edges += m["num_edges"]
        deg += m["mean_degree"] * m["num_nodes"]
        nodes += m["num_nodes"]
    return {"radius": radius, "max_num_neighbors": cap or 0,
            "efficiency_pt1": found_hi / seg_hi if seg_hi else math.nan,
            "efficiency_all": found / seg if seg else math.nan,
            "purity": pure / edges if edges else math.nan,
            "mean_degree": deg / nodes if nodes else math.nan,
            "edges_per_event": edges / len(datas),
            "time_s_per_event": (time.perf_counter() - t0) / len(datas)}


def at_degree(frame, coords: list, datas: list, degree: float, r_start: float,
              iters: int = 14) -> dict:
    """Uncapped graph with pooled mean degree just >= ``degree`` (bisection in log radius).

    The bracket grows from ``r_start`` by factors of 1.5 (down while the degree is above
    ``degree``, then up), so no graph much denser than the target is ever built (a radius
    3x too large would hold ~10x the edges: ~100M pairs at 100k hits). Each step builds
    one graph per event.
    """
    r = r_start
    m = pooled_metrics(frame, coords, datas, r, None)
    while m["mean_degree"] >= degree and r > 1e-9:
        r /= 1.5
        m = pooled_metrics(frame, coords, datas, r, None)
    lo = r
    for _ in range(40):
        if m["mean_degree"] >= degree:
            break
        lo, r = r, 1.5 * r
        m = pooled_metrics(frame, coords, datas, r, None)
    else:
        raise ValueError(f"at_degree: radius {r} still gives degree "
                         f"{m['mean_degree']:.1f} < target {degree}")
    hi, best = r, m
    for _ in range(iters):
        mid = math.sqrt(lo * hi)
        m = pooled_metrics(frame, coords, datas, mid, None)
        if m["mean_degree"] >= degree:
            hi, best = mid, m
        else:
            lo = mid
    return best


def _pair_geometry(d, a: torch.Tensor, b: torch.Tensor):
    """(layer-pair key, z0, |dphi/dr|) of pairs oriented inner -> outer by |pos|.

    ``z0 = z_a - r_a (z_b - z_a) / (r_b - r_a)`` is where the straight r-z line through the
    two hits meets the beam axis; ``|dphi / dr|`` ~ 0.3 B / (2000 pT) per mm bounds pT.
    """
    r, phi, z, _ = cylindrical(d.pos)
    swap = d.pos.norm(dim=1)[a] > d.pos.norm(dim=1)[b]
    a, b = torch.where(swap, b, a), torch.where(swap, a, b)
    dr = r[b] - r[a]
    dr = torch.where(dr.abs() < 1e-3, torch.full_like(dr, 1e-3), dr)
    z0 = z[a] - r[a] * (z[b] - z[a]) / dr
    slope = wrap_phi(phi[b] - phi[a]).abs() / dr.abs()
    layer = d.volume_id * 100 + d.layer_id
    return layer[a] * 100000 + layer[b], z0, slope


def layer_pair_windows(datas: list, pt_min: float = 1.0, q: float = 0.999,
                       widen: float = 0.05, pad_z0: float = 10.0,
                       pad_slope: float = 2e-5) -> dict[int, tuple[float, float, float]]:
    """Per (volume, layer) -> (volume, layer) pair of the true pT > ``pt_min`` segments of
    ``datas``: the z0 range (quantiles 1 - q, q, widened by ``widen`` of its width plus
    ``pad_z0`` mm) and the largest |dphi/dr| (quantile q, x (1 + widen), + ``pad_slope``)."""
    keys, z0s, slopes = [], [], []
    for d in datas:
        seg = true_segments(d.particle_id, d.hit_order, pt=d.pt, pt_min=pt_min)
        k, z0, sl = _pair_geometry(d, seg[0], seg[1])
        keys.append(k), z0s.append(z0), slopes.append(sl)
    keys, z0s, slopes = torch.cat(keys), torch.cat(z0s).double(), torch.cat(slopes).double()
    out = {}
    for key in torch.unique(keys).tolist():
        m = keys == key
        lo, hi = float(torch.quantile(z0s[m], 1 - q)), float(torch.quantile(z0s[m], q))
        pad = widen * (hi - lo) + pad_z0
        out[key] = (lo - pad, hi + pad,
                    float(torch.quantile(slopes[m], q)) * (1 + widen) + pad_slope)
    return out


def layer_pair_filter(windows: dict):
    """Edge filter keeping the pairs whose layer pair has a window and that lie inside it."""
    keys = torch.tensor(sorted(windows))
    table = torch.tensor([windows[k] for k in sorted(windows)], dtype=torch.float64)

    def apply(d, ei: torch.Tensor) -> torch.Tensor:
        k, z0, slope = _pair_geometry(d, ei[0], ei[1])
        idx = torch.searchsorted(keys, k).clamp_max(len(keys) - 1)
        known = keys[idx] == k
        lo, hi, smax = table[idx].unbind(1)
        z0, slope = z0.double(), slope.double()
        return ei[:, known & (z0 >= lo) & (z0 <= hi) & (slope <= smax)]

    return apply


def run(particles: int, args: argparse.Namespace) -> dict:
    """Train and measure at one multiplicity."""
    sim = Simulator.from_preset("trackml", num_particles=particles)
    train = [event_to_data(sim.simulate(1000 + k, 1000 + k)) for k in range(args.train_events)]
    test = [event_to_data(sim.simulate(2000 + k, 2000 + k)) for k in range(args.eval_events)]
    margin = args.margin if args.margin > 0 else 0.1 * math.sqrt(1000.0 / particles)
    torch.manual_seed(args.seed)
    model = HitEmbedding(dim=args.dim, hidden=args.hidden, num_layers=args.layers)
    _log(f"[{particles}] training {model!r} on {len(train)} events "
         f"({train[0].num_nodes} hits), margin {margin:.4g}")
    t0 = time.perf_counter()
    model, history = train_hit_embedding(
        train, model, steps=args.steps, lr=args.lr, margin=margin,
        pt_min_positive=args.pt_min_positive, pt_weight=args.pt_weight,
        seed=args.seed, log_every=max(args.steps // 8, 1), log=_log)
    train_s = time.perf_counter() - t0
    saved = None
    if args.save_dir:
        Path(args.save_dir).mkdir(parents=True, exist_ok=True)
        saved = str(Path(args.save_dir) / f"learned_{particles}.pt")
        model.save(saved, particles=particles, margin=margin, train_seeds=[
            1000 + k for k in range(args.train_events)])
    learned = LearnedFrame(model)
    lc = [learned.coords(d.pos) for d in test]
    scan = []
    for f in args.radius_factors:
        for cap in args.caps:
            row = pooled_metrics(learned, lc, test, f * margin, cap or None)
            _log(f"[{particles}] learned r={row['radius']:.4g} cap={cap}: "
                 f"eff_pt1={row['efficiency_pt1']:.4f} deg={row['mean_degree']:.1f}")
            scan.append(row)
    l_deg = at_degree(learned, lc, test, args.target_degree, 0.5 * margin)
    _log(f"[{particles}] learned at degree {l_deg['mean_degree']:.1f}: "
         f"eff_pt1={l_deg['efficiency_pt1']:.4f}")
    filtered = []
    if args.filter_factor > 0:
        filt = layer_pair_filter(layer_pair_windows(train))
        for cap in args.caps:
            row = pooled_metrics(learned, lc, test, args.filter_factor * margin, cap or None,
                                 edge_filter=filt)
            _log(f"[{particles}] learned r={row['radius']:.4g} cap={cap} + layer-pair filter: "
                 f"eff_pt1={row['efficiency_pt1']:.4f} deg={row['mean_degree']:.1f}")
            filtered.append(row)

    geo = GraphFrame(DEFAULT_GRAPH["kind"], w_eta=DEFAULT_GRAPH["w_eta"],
                     w_phi=DEFAULT_GRAPH["w_phi"], w_r=DEFAULT_GRAPH["w_r"])
    gc = [geo.coords(d.pos) for d in test]
    g_default = [pooled_metrics(geo, gc, test, DEFAULT_GRAPH["radius"], cap or None)
                 for cap in args.caps]
    g_deg = at_degree(geo, gc, test, args.target_degree,
                      DEFAULT_GRAPH["radius"] * math.sqrt(1000.0 / particles))
    _log(f"[{particles}] geometric at degree {g_deg['mean_degree']:.1f}: "
         f"eff_pt1={g_deg['efficiency_pt1']:.4f}")
    return {"particles": particles, "hits_per_event": sum(d.num_nodes for d in test) / len(test),
            "train_seeds": [1000 + k for k in range(args.train_events)],
            "eval_seeds": [2000 + k for k in range(args.eval_events)],
            "margin": margin, "train_s": train_s, "model": repr(model),
            "model_config": model.config, "w_phi": model.w_phi, "saved": saved,
            "train_history": [history[0], history[-1]] if history else [],
            "learned": {"scan": scan, "at_degree": l_deg,
                        "layer_pair_filtered": filtered},
            "geometric": {"frame": repr(geo), "default": g_default, "at_degree": g_deg}}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--particles", type=lambda s: _list(s, int), default=[1000, 10000])
    p.add_argument("--train-events", type=int, default=2)
    p.add_argument("--eval-events", type=int, default=1)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--margin", type=float, default=0.0, help="0: 0.1 sqrt(1000 / particles)")
    p.add_argument("--dim", type=int, default=3)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--pt-min-positive", type=float, default=0.0)
    p.add_argument("--pt-weight", type=float, default=4.0)
    p.add_argument("--radius-factors", type=_list, default=[0.5, 0.75, 1.0, 1.25])
    p.add_argument("--caps", type=lambda s: _list(s, int), default=[0, 35])
    p.add_argument("--target-degree", type=float, default=40.0)
    p.add_argument("--filter-factor", type=float, default=1.4,
                   help="radius / margin of the candidate graph for the layer-pair filter "
                        "(0: skip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-dir", default="")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    out = {"benchmark": "learned_graph", "argv": sys.argv[1:] if argv is None else argv,
           "torch": torch.__version__, "platform": platform.platform(),
           "threads": args.threads, "results": [run(n, args) for n in args.particles]}
    out["total_s"] = time.perf_counter() - t0
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
