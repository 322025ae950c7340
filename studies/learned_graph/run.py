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
* ``learned.pair_filtered`` / ``geometric.pair_filtered``: the learned graph at
  ``--filter-factors`` x margin, and the geometric default frame at ``--geo-filter-factors``
  x its radius (both uncapped, learned also with each cap), then a
  :class:`~gnn_jepa.graph.pair_filter.LayerPairFilter` fitted on the true segments of
  particles with pT > ``--filter-pt-min`` (default 1 GeV; 0 keeps low-pT segments) in
  ``--filter-events`` events (seeds 1000 + k: the embedding's training events
  first, then more; fitting is cheap and sparse layer pairs need many segments): keeps an
  edge when its (volume, layer) pair was seen and its z0 (r-z line at the beam) and
  |dphi/dr| lie inside that pair's window.

``--ceiling`` adds to every listed graph (not the bisections) the TrackML score and DM
efficiency of walkthrough tracks built from truth edge scores on it
(:func:`~gnn_jepa.evaluation.ceiling.tracking_ceiling`): what a perfect classifier would reach.

The margin defaults to ``0.1 * sqrt(1000 / particles)``: at fixed degree the radius shrinks
like 1/sqrt(density) in the two dense embedding axes. Prints one JSON document; ``--save-dir``
keeps each trained embedding (``learned_<particles>.pt``, loadable by
``BuildGraph(kind="learned", embedding=...)``).

    OMP_NUM_THREADS=1 python -m studies.learned_graph.run [--particles 1000,10000] \\
        [--train-events 2] [--eval-events 1] [--filter-events 4] [--steps 400] [--dim 3]
        [--save-dir DIR]

On a loaded 2-core CPU, ``--particles 10000 --eval-events 2`` takes ~6 minutes (~2 min of
training, ~10 s per geometric-default graph), ``--particles 1000`` ~30 s.
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

from gnn_jepa.data.convert import event_to_data
from gnn_jepa.data.simulator import Simulator
from gnn_jepa.evaluation.ceiling import tracking_ceiling
from gnn_jepa.graph.edges import graph_truth_metrics
from gnn_jepa.graph.frames import GraphFrame
from gnn_jepa.graph.metric_learning import HitEmbedding, LearnedFrame, train_hit_embedding
from gnn_jepa.graph.pair_filter import LayerPairFilter
from gnn_jepa.graph.radius import radius_graph
from gnn_jepa.graph.transform import DEFAULT_GRAPH


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _list(text: str, kind=float) -> list:
    return [kind(v) for v in text.split(",") if v.strip()]


def pooled_metrics(frame, coords: list[torch.Tensor], datas: list, radius: float,
                   cap: int | None, edge_filter=None, ceiling: bool = False) -> dict:
    """Graph metrics pooled over events (segment- and node-weighted); ``edge_filter(data,
    edge_index) -> edge_index`` is applied to each radius graph when given. With
    ``ceiling``, also the mean TrackML score / DM efficiency of walkthrough tracks built
    from truth edge scores (``tracking_ceiling``, not timed)."""
    found_hi = seg_hi = found = seg = pure = edges = deg = nodes = 0.0
    score = dm = untimed = 0.0
    t0 = time.perf_counter()
    for c, d in zip(coords, datas):
        ei = radius_graph(c, radius, periods=frame.periods, max_num_neighbors=cap)
        if edge_filter is not None:
            ei = edge_filter(d, ei)
        if ceiling:
            t1 = time.perf_counter()
            m = tracking_ceiling(d, ei)
            score, dm = score + m["trackml_score"], dm + m["dm_efficiency"]
            untimed += time.perf_counter() - t1
        m = graph_truth_metrics(ei, d.particle_id, d.hit_order, d.pt)
        found_hi += m["efficiency_pt_min"] * m["num_segments_pt_min"]
        seg_hi += m["num_segments_pt_min"]
        found += m["efficiency"] * m["num_segments"]
        seg += m["num_segments"]
        pure += (m["purity"] if m["num_edges"] else 0.0) * m["num_edges"]
        edges += m["num_edges"]
        deg += m["mean_degree"] * m["num_nodes"]
        nodes += m["num_nodes"]
    row = {"radius": radius, "max_num_neighbors": cap or 0,
           "efficiency_pt1": found_hi / seg_hi if seg_hi else math.nan,
           "efficiency_all": found / seg if seg else math.nan,
           "purity": pure / edges if edges else math.nan,
           "mean_degree": deg / nodes if nodes else math.nan,
           "edges_per_event": edges / len(datas),
           "time_s_per_event": (time.perf_counter() - t0 - untimed) / len(datas)}
    if ceiling:
        row.update(ceiling_trackml_score=score / len(datas), ceiling_dm_efficiency=dm / len(datas))
    return row


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
            row = pooled_metrics(learned, lc, test, f * margin, cap or None,
                                 ceiling=args.ceiling)
            _log(f"[{particles}] learned r={row['radius']:.4g} cap={cap}: "
                 f"eff_pt1={row['efficiency_pt1']:.4f} deg={row['mean_degree']:.1f}")
            scan.append(row)
    l_deg = at_degree(learned, lc, test, args.target_degree, 0.5 * margin)
    _log(f"[{particles}] learned at degree {l_deg['mean_degree']:.1f}: "
         f"eff_pt1={l_deg['efficiency_pt1']:.4f}")
    filtered = []
    filt, filt_info = None, {}
    if args.filter_events > 0:
        t0 = time.perf_counter()
        filt_seeds = [1000 + k for k in range(args.filter_events)]
        fit_events = train[:args.filter_events] + [
            event_to_data(sim.simulate(s, s)) for s in filt_seeds[len(train):]]
        filt = LayerPairFilter.fit(fit_events, pt_min=args.filter_pt_min,
                                   quantile=args.filter_quantile,
                                   pad=args.filter_pad, pool=not args.filter_no_pool)
        del fit_events
        filt_info = {"filter": repr(filt), "filter_config": filt.config,
                     "filter_seeds": filt_seeds, "filter_fit_s": time.perf_counter() - t0}
        if args.save_dir:
            filt_info["filter_saved"] = str(Path(args.save_dir) / f"pair_filter_{particles}.json")
            filt.save(filt_info["filter_saved"])
        _log(f"[{particles}] {filt!r}")

        def keep(d, ei):
            return ei[:, filt(d, ei)]

        for f in args.filter_factors:
            for cap in args.caps:
                row = pooled_metrics(learned, lc, test, f * margin, cap or None,
                                     edge_filter=keep, ceiling=args.ceiling)
                _log(f"[{particles}] learned r={row['radius']:.4g} cap={cap} + pair filter: "
                     f"eff_pt1={row['efficiency_pt1']:.4f} deg={row['mean_degree']:.1f}")
                filtered.append(row)

    geo = GraphFrame(DEFAULT_GRAPH["kind"], w_eta=DEFAULT_GRAPH["w_eta"],
                     w_phi=DEFAULT_GRAPH["w_phi"], w_r=DEFAULT_GRAPH["w_r"])
    gc = [geo.coords(d.pos) for d in test]
    g_default = [pooled_metrics(geo, gc, test, DEFAULT_GRAPH["radius"], cap or None,
                                ceiling=args.ceiling)
                 for cap in args.caps]
    g_deg = at_degree(geo, gc, test, args.target_degree,
                      DEFAULT_GRAPH["radius"] * math.sqrt(1000.0 / particles))
    _log(f"[{particles}] geometric at degree {g_deg['mean_degree']:.1f}: "
         f"eff_pt1={g_deg['efficiency_pt1']:.4f}")
    g_filtered = []
    if filt is not None:
        for f in args.geo_filter_factors:
            row = pooled_metrics(geo, gc, test, f * DEFAULT_GRAPH["radius"], None,
                                 edge_filter=keep, ceiling=args.ceiling)
            _log(f"[{particles}] geometric r={row['radius']:.4g} + pair filter: "
                 f"eff_pt1={row['efficiency_pt1']:.4f} deg={row['mean_degree']:.1f}")
            g_filtered.append(row)
    return {"particles": particles, "hits_per_event": sum(d.num_nodes for d in test) / len(test),
            "train_seeds": [1000 + k for k in range(args.train_events)],
            "eval_seeds": [2000 + k for k in range(args.eval_events)],
            "margin": margin, "train_s": train_s, "model": repr(model),
            "model_config": model.config, "w_phi": model.w_phi, "saved": saved,
            "train_history": [history[0], history[-1]] if history else [],
            **filt_info,
            "learned": {"scan": scan, "at_degree": l_deg, "pair_filtered": filtered},
            "geometric": {"frame": repr(geo), "default": g_default, "at_degree": g_deg,
                          "pair_filtered": g_filtered}}


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
    p.add_argument("--filter-events", type=int, default=4,
                   help="events (seeds 1000 + k, the embedding's first) fitting the "
                        "LayerPairFilter (0: no filter rows)")
    p.add_argument("--filter-quantile", type=float, default=0.999)
    p.add_argument("--filter-pt-min", type=float, default=1.0,
                   help="the filter's windows come from segments of particles above this pT "
                        "(0: all particles, so low-pT segments survive it)")
    p.add_argument("--ceiling", action="store_true",
                   help="add each graph's ceiling: TrackML score / DM efficiency of "
                        "walkthrough tracks from truth edge scores")
    p.add_argument("--filter-pad", type=float, default=0.05)
    p.add_argument("--filter-no-pool", action="store_true",
                   help="fit per-pair windows without the pooled floor")
    p.add_argument("--filter-factors", type=_list, default=[1.4],
                   help="radius / margin of the learned candidate graph before the filter")
    p.add_argument("--geo-filter-factors", type=_list, default=[1.0, 1.25],
                   help="radius / DEFAULT_GRAPH radius of the geometric candidate graph "
                        "before the filter")
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
