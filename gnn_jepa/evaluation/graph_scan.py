"""Scan graph radius (and neighbour cap) against truth on simulated events.

Example::

    python -m gnn_jepa.evaluation.graph_scan --preset trackml --particles 1000 --events 3 \\
        --frame eta_phi --w-eta 0.1 --w-phi 1 --w-r 2e-4 --radii 0.06,0.07,0.08,0.09

``--frame learned --embedding PATH`` scans the frame of a trained
:class:`~gnn_jepa.graph.metric_learning.HitEmbedding` instead; ``--pair-filter PATH`` applies
a saved :class:`~gnn_jepa.graph.pair_filter.LayerPairFilter` to every graph; ``--union
JSON`` adds the edges of more graphs (a list of ``BuildGraph`` argument dicts, as a config's
``graph: {union: [...]}``) to every scanned one; ``--ceiling`` adds the TrackML score of
tracks built from truth edge scores (the graph's ceiling).

For each radius (and each ``--max-num-neighbors`` value, 0 = no cap) it prints the edge
efficiency for true segments of particles with pT > ``--pt-min`` (pooled over the events),
the efficiency over all segments, the purity, the mean degree and the edges per event.
``--json`` prints one JSON document instead of the table. The line above the table gives
the radius an uncapped graph needs for 95 / 99 / 99.5% efficiency (quantiles of the true
segments' frame distances), which is where to centre a scan.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Iterable

import torch

from gnn_jepa.data.convert import event_to_data
from gnn_jepa.data.simulator import Simulator
from gnn_jepa.evaluation.ceiling import tracking_ceiling
from gnn_jepa.graph.edges import graph_truth_metrics, true_segments
from gnn_jepa.graph.frames import FRAME_KINDS, GraphFrame
from gnn_jepa.graph.metric_learning import LearnedFrame
from gnn_jepa.graph.pair_filter import LayerPairFilter
from gnn_jepa.graph.radius import pair_distance2, radius_graph
from gnn_jepa.graph.transform import BuildGraph, union_edges

__all__ = ["main", "scan"]


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from err


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from err


def simulate_events(preset: str, particles: int, events: int, seed: int) -> list:
    """``events`` simulated events converted to PyG Data (seeds ``event_seed(seed, i)``)."""
    sim = Simulator.from_preset(preset, num_particles=particles)
    return [event_to_data(ev) for ev in sim.simulate_many(events, seed=seed)]


def segment_radius_quantiles(datas: list, frame: GraphFrame, pt_min: float,
                             quantiles=(0.95, 0.99, 0.995)) -> dict[str, float]:
    """Radius an uncapped graph needs for each efficiency: quantiles of segment distances."""
    dists = []
    for d in datas:
        seg = true_segments(d.particle_id, d.hit_order, pt=d.pt, pt_min=pt_min)
        dists.append(pair_distance2(frame.coords(d.pos), seg[0], seg[1], frame.periods).sqrt())
    dist = torch.cat(dists).double()
    if dist.numel() == 0:
        return {str(q): math.nan for q in quantiles}
    return {str(q): float(torch.quantile(dist, q)) for q in quantiles}


def pooled_graph_metrics(graphs: Iterable[tuple], pt_min: float = 1.0, *,
                         ceiling: bool = False) -> dict:
    """Truth metrics of graphs pooled over events: efficiency over all true segments and over
    those of pT > ``pt_min`` particles (segment-weighted), purity (edge-weighted), mean degree
    (2 x hit pairs / hits, pooled), edges per event; with ``ceiling`` the mean TrackML score and
    DM efficiency of walkthrough tracks from truth edge scores
    (:func:`~gnn_jepa.evaluation.ceiling.tracking_ceiling`) over the events that have them
    (``ceiling_events``: an event whose weights sum to 0 has no score).

    Args:
        graphs: ``(data, edge_index)`` per event.
    """
    found_hi = seg_hi = found = seg = pure = edges = pairs = nodes = 0.0
    scores, dms, n = [], [], 0
    for d, ei in graphs:
        n += 1
        m = graph_truth_metrics(ei, d.particle_id, d.hit_order, d.pt, pt_min=pt_min)
        found_hi += m["efficiency_pt_min"] * m["num_segments_pt_min"] if m["num_segments_pt_min"] else 0.0
        seg_hi += m["num_segments_pt_min"]
        found += m["efficiency"] * m["num_segments"] if m["num_segments"] else 0.0
        seg += m["num_segments"]
        pure += m["purity"] * m["num_edges"] if m["num_edges"] else 0.0
        edges += m["num_edges"]
        pairs += m["mean_degree"] * m["num_nodes"] / 2
        nodes += m["num_nodes"]
        if ceiling:
            c = tracking_ceiling(d, ei, pt_min=pt_min)
            if c["trackml_score"] is not None:
                scores.append(c["trackml_score"])
            if not math.isnan(c["dm_efficiency"]):
                dms.append(c["dm_efficiency"])
    nan = math.nan
    out = {"efficiency_pt_min": found_hi / seg_hi if seg_hi else nan,
           "efficiency": found / seg if seg else nan,
           "purity": pure / edges if edges else nan,
           "mean_degree": 2 * pairs / nodes if nodes else nan,
           "edges_per_event": edges / n if n else nan}
    if ceiling:
        out.update(ceiling_trackml_score=sum(scores) / len(scores) if scores else nan,
                   ceiling_dm_efficiency=sum(dms) / len(dms) if dms else nan,
                   ceiling_events=len(scores))
    return out


def scan(datas: list, frame: GraphFrame, radii: list[float], caps: list[int],
         pt_min: float = 1.0, *, pair_filter=None, union=None,
         ceiling: bool = False) -> list[dict]:
    """One row per (radius, cap): efficiencies pooled over events, mean degree and purity.

    ``pair_filter`` (a :class:`~gnn_jepa.graph.pair_filter.LayerPairFilter`) is applied to
    each radius graph, as ``BuildGraph(pair_filter=...)`` does; the edges of each
    :class:`~gnn_jepa.graph.transform.BuildGraph` in ``union`` are then added, as
    ``BuildGraph(union=...)`` does. With ``ceiling``, each row
    also has the mean TrackML score and DM efficiency of tracks built by the walkthrough
    from truth edge scores (:func:`~gnn_jepa.evaluation.ceiling.tracking_ceiling`): the best
    any edge classifier can do on that graph.
    """
    rows = []
    for radius in radii:
        for cap in caps:
            t0 = time.perf_counter()

            def graphs(radius=radius, cap=cap):
                for d in datas:
                    ei = radius_graph(frame.coords(d.pos), radius, periods=frame.periods,
                                      max_num_neighbors=cap or None)
                    if pair_filter is not None:
                        ei = ei[:, pair_filter(d, ei)]
                    if union:
                        ei = union_edges([ei] + [u.edges(d) for u in union], d.num_nodes)
                    yield d, ei

            row = {"radius": radius, "max_num_neighbors": cap or None,
                   **pooled_graph_metrics(graphs(), pt_min, ceiling=ceiling)}
            row["seconds_per_event"] = (time.perf_counter() - t0) / len(datas)
            rows.append(row)
    return rows


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gnn_jepa.evaluation.graph_scan",
                                description="Radius scan: edge efficiency, purity, degree.")
    p.add_argument("--preset", default="trackml", help="simulator detector preset")
    p.add_argument("--particles", type=int, default=1000, help="particles per event")
    p.add_argument("--events", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frame", default="eta_phi", choices=FRAME_KINDS + ("learned",))
    p.add_argument("--embedding", default=None,
                   help="saved HitEmbedding (.pt) for --frame learned")
    p.add_argument("--scale", type=float, default=1000.0, help="cartesian unit (mm)")
    p.add_argument("--w-r", type=float, default=None)
    p.add_argument("--w-phi", type=float, default=1.0)
    p.add_argument("--w-z", type=float, default=1e-3)
    p.add_argument("--w-eta", type=float, default=1.0)
    p.add_argument("--radii", type=_floats, default=[0.02, 0.03, 0.05, 0.07, 0.1])
    p.add_argument("--max-num-neighbors", type=_ints, default=[0],
                   help="comma-separated caps; 0 = no cap")
    p.add_argument("--pt-min", type=float, default=1.0)
    p.add_argument("--pair-filter", default=None,
                   help="saved LayerPairFilter (.json) applied to every radius graph")
    p.add_argument("--union", type=json.loads, default=None,
                   help="JSON dict or list of dicts of BuildGraph arguments: their edges are "
                        "added to every scanned graph (a config's graph: {union: [...]})")
    p.add_argument("--ceiling", action="store_true",
                   help="also build tracks from truth edge scores (walkthrough) and print "
                        "their TrackML score and DM efficiency: the graph's ceiling")
    p.add_argument("--json", action="store_true", help="emit JSON instead of a table")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.events < 1 or args.particles < 1:
        raise SystemExit("report: --events and --particles must be >= 1")
    if not args.radii or min(args.radii) <= 0:
        raise SystemExit(f"report: --radii must be positive, got {args.radii}")
    if (args.frame == "learned") != (args.embedding is not None):
        raise SystemExit("report: --frame learned and --embedding PATH go together")
    if args.frame == "learned":
        frame = LearnedFrame(args.embedding)
    else:
        frame = GraphFrame(args.frame, scale=args.scale, w_r=args.w_r, w_phi=args.w_phi,
                           w_z=args.w_z, w_eta=args.w_eta)
    pair_filter = None
    if args.pair_filter is not None:
        pair_filter = LayerPairFilter.load(args.pair_filter)
    union = None
    if args.union is not None:
        members = [args.union] if isinstance(args.union, dict) else args.union
        union = [BuildGraph(**m) for m in members]
    datas = simulate_events(args.preset, args.particles, args.events, args.seed)
    quant = segment_radius_quantiles(datas, frame, args.pt_min)
    rows = scan(datas, frame, args.radii, args.max_num_neighbors, args.pt_min,
                pair_filter=pair_filter, union=union, ceiling=args.ceiling)
    out = {"preset": args.preset, "particles": args.particles, "events": args.events,
           "seed": args.seed, "frame": frame.to_dict(), "pt_min": args.pt_min,
           "pair_filter": repr(pair_filter) if pair_filter is not None else None,
           "union": repr(union) if union is not None else None,
           "mean_hits": sum(d.num_nodes for d in datas) / len(datas),
           "radius_for_efficiency": quant, "rows": rows}
    if args.json:
        json.dump(out, sys.stdout, indent=1)
        print()
        return 0
    print(f"{frame!r}  {args.preset}: {args.particles} particles, {args.events} events, "
          f"{out['mean_hits']:.0f} hits/event"
          + (f"\n{pair_filter!r}" if pair_filter is not None else "")
          + (f"\n+ edges of {union!r}" if union is not None else ""))
    print("radius for pT>%g efficiency (uncapped): " % args.pt_min
          + ", ".join(f"{float(q) * 100:g}%: {v:.4g}" for q, v in quant.items()))
    print(f"{'radius':>8} {'cap':>5} {'eff(pT>' + format(args.pt_min, 'g') + ')':>11} "
          f"{'eff(all)':>9} {'purity':>7} {'degree':>7} {'edges/ev':>10} {'s/ev':>6}"
          + (f" {'ceiling TrackML':>15} {'ceiling DM':>10}" if args.ceiling else ""))
    for r in rows:
        print(f"{r['radius']:8.4g} {r['max_num_neighbors'] or '-':>5} "
              f"{r['efficiency_pt_min']:11.4f} {r['efficiency']:9.4f} {r['purity']:7.4f} "
              f"{r['mean_degree']:7.1f} {r['edges_per_event']:10.0f} "
              f"{r['seconds_per_event']:6.2f}"
              + (f" {r['ceiling_trackml_score']:15.4f} {r['ceiling_dm_efficiency']:10.4f}"
                 if args.ceiling else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
