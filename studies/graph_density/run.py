"""How many neighbours per hit must a hit-pair graph keep as the hit density grows?

    python -m studies.graph_density.run [--config configs/finetune/trackml_1k.yaml] \\
        [--particles 1000,3000,10000] [--events 2] [--max-k 256] [--json OUT.json]

Issue 26 asks for track finding whose time grows at most as hits^1.1. The shipped graph (a
fixed radius in the learned frame) grows as hits^1.62 (``benchmarks/results/scaling``). A
graph that keeps a fixed number k of neighbours per hit is linear by construction; this study
measures what such a graph loses as the density grows, on simulated events of the config's
detector (seed stream 11, events from 4,000,000: disjoint from every config's data).

For each true segment ``(a, b)`` (:func:`~gnn_jepa.graph.edges.true_segments`) and each
candidate rule, the segment's *rank* is the position of ``b`` among ``a``'s candidates ordered
by distance in the config's graph frame (1 = nearest), or of ``a`` among ``b``'s, whichever is
smaller: a graph that joins every hit to its k nearest candidates (both directions kept)
holds the segment exactly when its rank is at most k. Candidate rules:

* ``frame``: every other hit;
* ``pair_filter``: the hits that the config's layer-pair filter keeps with it;
* ``both_filters``: the hits that the layer-pair filter and then the edge filter keep.

Only each hit's ``--max-k`` nearest hits in the frame are ranked; a segment beyond them gets
rank ``max_k + 1``. Reported per event size, for all segments and for those of pT > 1 GeV
particles: the smallest k that keeps 90 / 95 / 99% of them (None where it exceeds the ranked
neighbours), and the share kept at k = 8, 16, 32 and at ``max_k``; then the exponent of the
needed k against hits (``k ~ hits^a``; 0 would make the graph linear). Prints JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from scipy.spatial import cKDTree

from benchmarks.common import fit_exponent, load_config
from benchmarks.radius_graph import kdtree_input
from gnn_jepa.data.convert import event_to_data
from gnn_jepa.data.simulator import Simulator, event_seed
from gnn_jepa.graph.edges import true_segments
from gnn_jepa.graph.pair_filter import hit_geometry
from gnn_jepa.graph.transform import BuildGraph

FIRST_EVENT = 4_000_000
SEED = 11
SHARES = (0.90, 0.95, 0.99)
KS = (8, 16, 32)


def neighbours(coords: np.ndarray, periods: list, k: int) -> np.ndarray:
    """[N, k] indices of each point's k nearest other points, nearest first (minimum image
    on the periodic axes); ``N`` pads rows of events with fewer than k + 1 points."""
    n = len(coords)
    pts, box = kdtree_input(coords.astype(np.float64), periods)
    _, nb = cKDTree(pts, boxsize=box).query(pts, k=min(k + 1, max(n, 1)))
    nb = np.asarray(nb).reshape(n, -1)
    # drop the point itself (its own nearest, unless another hit sits at distance 0 first
    # and pushes it out of the row: then the row's farthest entry goes instead)
    drop = nb == np.arange(n)[:, None]
    drop[~drop.any(1), -1] = True
    rest = nb[~drop].reshape(n, nb.shape[1] - 1)
    out = np.full((n, k), n, dtype=np.int64)
    out[:, :rest.shape[1]] = rest
    return out


def segment_ranks(nb: np.ndarray, ok: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[S] position of ``b[s]`` among ``a[s]``'s counted candidates, 1 = nearest.

    Args:
        nb: [N, K] each hit's K nearest other hits, nearest first.
        ok: [N, K] bool, whether each of them is a candidate (passes the rule).
        a, b: [S] the two hits of each segment.

    Returns:
        ``1 + (number of candidates of a nearer than b)`` where ``b`` is among ``a``'s K
        nearest and a candidate itself, else ``K + 1``.
    """
    k = nb.shape[1]
    if len(a) == 0:
        return np.zeros(0, dtype=np.int64)
    rows = nb[a]
    match = rows == b[:, None]
    col = match.argmax(1)
    s = np.arange(len(a))
    counted = match[s, col] & ok[a, col]
    rank = np.cumsum(ok[a], axis=1)[s, col]
    return np.where(counted, rank, k + 1).astype(np.int64)


def needed_k(ranks: np.ndarray, share: float, max_k: int) -> Optional[int]:
    """Smallest k with at least ``share`` of the ranks <= k; None above ``max_k``."""
    if len(ranks) == 0:
        return None
    k = int(np.sort(ranks)[int(np.ceil(share * len(ranks))) - 1])
    return k if k <= max_k else None


def candidate_masks(build: BuildGraph, data, nb: np.ndarray) -> dict[str, np.ndarray]:
    """Per rule, the [N, K] bool mask of ``nb``'s entries that are candidates."""
    n, k = nb.shape
    valid = nb < n
    masks = {"frame": valid}
    a = torch.from_numpy(np.repeat(np.arange(n), k)[valid.reshape(-1)])
    b = torch.from_numpy(nb[valid])
    flat = np.flatnonzero(valid.reshape(-1))
    if build.pair_filter is not None:
        geo = hit_geometry(data.pos, data.volume_id, data.layer_id)
        kept = build.pair_filter.kept_pairs(geo, a, b).numpy()
        flat, a, b = flat[kept], a[kept], b[kept]
        m = np.zeros(n * k, dtype=bool)
        m[flat] = True
        masks["pair_filter"] = m.reshape(n, k)
    if build.edge_filter is not None:
        keep = build.edge_filter.keep(data.pos, torch.stack([a, b])).numpy()
        m = np.zeros(n * k, dtype=bool)
        m[flat[keep]] = True
        masks["both_filters"] = m.reshape(n, k)
    return masks


def event_ranks(build: BuildGraph, data, max_k: int) -> dict:
    """Per rule and segment set (``all``, ``pt1``): the segments' ranks (min of both ends)."""
    coords = build.frame.coords(data.pos).numpy()
    nb = neighbours(coords, build.frame.periods, max_k)
    masks = candidate_masks(build, data, nb)
    sets = {"all": true_segments(data.particle_id, data.hit_order),
            "pt1": true_segments(data.particle_id, data.hit_order, pt=data.pt, pt_min=1.0)}
    out = {}
    for rule, ok in masks.items():
        out[rule] = {}
        for name, seg in sets.items():
            a, b = seg[0].numpy(), seg[1].numpy()
            out[rule][name] = np.minimum(segment_ranks(nb, ok, a, b), segment_ranks(nb, ok, b, a))
    return out


def summarise(ranks: np.ndarray, max_k: int) -> dict:
    return {"segments": int(len(ranks)),
            **{f"k_{round(q * 100)}": needed_k(ranks, q, max_k) for q in SHARES},
            **{f"kept_at_{k}": round(float(np.mean(ranks <= k)), 4) if len(ranks) else None
               for k in KS},
            "kept_at_max_k": round(float(np.mean(ranks <= max_k)), 4) if len(ranks) else None}


def main(argv: Optional[list[str]] = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/finetune/trackml_1k.yaml")
    p.add_argument("--particles", default="1000,3000,10000")
    p.add_argument("--events", type=int, default=2)
    p.add_argument("--max-k", type=int, default=256)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.particles.split(",")]
    if args.events < 1 or args.max_k < 1 or min(sizes) < 1:
        raise SystemExit("graph_density: --events, --max-k and every size must be >= 1")
    cfg = load_config(args.config)
    build = BuildGraph(**cfg["graph"])
    sim_cfg = dict(cfg["simulator"])
    preset = sim_cfg.pop("preset", "trackml")
    rows = []
    for n in sizes:
        t0 = time.perf_counter()
        sim = Simulator.from_preset(preset, **{**sim_cfg, "num_particles": n})
        pooled: dict = {}
        hits = 0
        for i in range(args.events):
            data = event_to_data(sim.simulate(event_seed(SEED, FIRST_EVENT + i)))
            hits += data.num_nodes
            for rule, sets in event_ranks(build, data, args.max_k).items():
                for name, r in sets.items():
                    pooled.setdefault(rule, {}).setdefault(name, []).append(r)
        row = {"particles": n, "hits_per_event": hits / args.events,
               "rules": {rule: {name: summarise(np.concatenate(r), args.max_k)
                                for name, r in sets.items()} for rule, sets in pooled.items()},
               "seconds": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        print(json.dumps({"particles": n, "hits": row["hits_per_event"]}), file=sys.stderr)
    hits = [r["hits_per_event"] for r in rows]
    exponents = {rule: {f"{name}_{key}": fit_exponent(hits, [r["rules"][rule][name][key]
                                                            for r in rows])
                        for name in ("all", "pt1") for key in ("k_95", "k_99")}
                 for rule in rows[0]["rules"]}
    doc = {"study": "graph_density", "argv": sys.argv[1:] if argv is None else argv,
           "config": args.config, "graph": cfg["graph"], "events_per_size": args.events,
           "max_k": args.max_k, "torch": torch.__version__, "platform": platform.platform(),
           "load_average": [round(x, 2) for x in os.getloadavg()],
           "sizes": rows, "k_exponent_vs_hits": exponents}
    text = json.dumps(doc, indent=1)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return doc


if __name__ == "__main__":
    main()
