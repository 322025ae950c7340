"""Time ``BuildGraph`` on one simulated event: a config's graph next to a reference graph.

What the data path pays per event before training sees it (frame coordinates, radius graph,
layer-pair filter, union members, edge features and labels), on one CPU thread by default,
as in a DataLoader worker. Prints JSON: per graph the median seconds over ``--repeat``
builds, the edge count and the mean degree.

    python -m benchmarks.graph_build --config configs/pretrain/trackml_gpu.yaml --particles 10000

The reference (``--reference``, JSON of ``BuildGraph`` arguments) defaults to the (eta, phi)
graph capped at 35 neighbours that the GPU configs used before the learned union graph.

``ckdtree`` times scipy's ``cKDTree(...).query_pairs`` (tree build + query, one thread) on
the very radius queries of the config's graph: for each member (the graph and its
``union`` members) its frame coordinates (float64, periodic axes through ``boxsize`` as in
``benchmarks/radius_graph.py``) at its radius; ``config_over_ckdtree`` is the whole build
(radius searches, filters, union, features, labels) over the sum of those queries.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

from benchmarks import common

OLD_GPU_GRAPH = {"kind": "eta_phi", "w_eta": 0.1, "w_phi": 1.0, "w_r": 2e-4, "radius": 0.09,
                 "max_num_neighbors": 35}


def time_graph(graph: dict, data, repeat: int) -> dict:
    """Median wall time of ``BuildGraph(**graph)`` on fresh copies of ``data``."""
    from gnn_jepa.graph.transform import BuildGraph

    build = BuildGraph(**graph)
    times, out = [], None
    for _ in range(repeat):
        copy = data.clone()
        t0 = time.perf_counter()
        out = build(copy)
        times.append(time.perf_counter() - t0)
    edges = int(out.edge_index.shape[1])
    return {"graph": graph, "seconds_median": round(statistics.median(times), 4),
            "seconds_min": round(min(times), 4), "edges": edges,
            "mean_degree": round(edges / max(data.num_nodes, 1), 2)}


def time_ckdtree(graph: dict, data, repeat: int) -> dict:
    """Median seconds of cKDTree.query_pairs on each member's frame coordinates and radius."""
    from scipy.spatial import cKDTree

    from benchmarks.radius_graph import kdtree_input
    from gnn_jepa.graph.transform import BuildGraph

    build = BuildGraph(**graph)
    members = []
    for m in [build, *build.union]:
        coords = m.frame.coords(data.pos).double().numpy()
        pts, box = kdtree_input(coords.copy(), m.frame.periods)
        times, pairs = [], None
        for _ in range(repeat):
            t0 = time.perf_counter()
            pairs = cKDTree(pts, boxsize=box).query_pairs(m.radius, output_type="ndarray")
            times.append(time.perf_counter() - t0)
        members.append({"frame": repr(m.frame).split(",")[0] + ")", "radius": m.radius,
                        "pairs": int(len(pairs)),
                        "seconds_median": round(statistics.median(times), 4),
                        "seconds_min": round(min(times), 4)})
    return {"members": members,
            "seconds_median": round(sum(m["seconds_median"] for m in members), 4),
            "seconds_min": round(sum(m["seconds_min"] for m in members), 4)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(common.DEFAULT_PRETRAIN_CONFIG))
    p.add_argument("--reference", type=json.loads, default=OLD_GPU_GRAPH,
                   help="JSON BuildGraph arguments of the reference graph")
    p.add_argument("--particles", type=int, default=10000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-reference", action="store_true", help="skip the reference graph")
    a = p.parse_args(argv)
    if a.repeat < 1 or a.particles < 1:
        raise SystemExit("graph_build: --repeat and --particles must be >= 1")
    torch.set_num_threads(a.threads)
    from gnn_jepa.data.convert import event_to_data
    from gnn_jepa.data.simulator import Simulator

    cfg = common.load_config(a.config)
    sim_cfg = {**cfg["simulator"], "num_particles": a.particles}
    preset = sim_cfg.pop("preset", "trackml")
    data = event_to_data(Simulator.from_preset(preset, **sim_cfg).simulate(seed=a.seed))
    doc = {"benchmark": "graph_build", "argv": sys.argv[1:] if argv is None else argv,
           "torch": torch.__version__, "platform": platform.platform(), "threads": a.threads,
           "hits": int(data.num_nodes), "particles": a.particles,
           "load_average": [round(x, 2) for x in os.getloadavg()],
           "config": time_graph(cfg["graph"], data, a.repeat),
           "ckdtree": time_ckdtree(cfg["graph"], data, a.repeat)}
    doc["config_over_ckdtree"] = round(
        doc["config"]["seconds_median"] / max(doc["ckdtree"]["seconds_median"], 1e-12), 2)
    if not a.no_reference:
        doc["reference"] = time_graph(a.reference, data, a.repeat)
        doc["config_over_reference"] = round(
            doc["config"]["seconds_median"] / max(doc["reference"]["seconds_median"], 1e-12), 3)
    doc["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(doc, indent=1))
    return doc


if __name__ == "__main__":
    main()
