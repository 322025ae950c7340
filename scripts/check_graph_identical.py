#!/usr/bin/env python
"""Check that ``BuildGraph`` gives bit-for-bit the graphs of another git revision.

The reference is the package as committed at ``--ref`` (default ``main``): ``git archive``
extracts its ``gnn_jepa/`` into a temporary folder and a subprocess with that folder first on
``PYTHONPATH`` builds every graph; this process builds the same graphs with the working
tree's code. Events are simulated once, here, and handed to both sides, so only the graph
code differs. Compared per event and graph: ``edge_index`` (equal), ``edge_attr`` and ``y``
(equal bit patterns, so -0.0 / 0.0 or NaN payloads would count as differences).

    python scripts/check_graph_identical.py                       # config graph, 3 events
    python scripts/check_graph_identical.py --particles 2000 --seeds 1,2,3,4 --extra

``--extra`` adds graphs that take the other code paths (a neighbour cap, self-loops, an
undirected=False member, a geometric frame, a batch of two events). Exit status 1 when any
tensor differs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

EXTRA_GRAPHS = {
    "capped_eta_phi": {"kind": "eta_phi", "w_eta": 0.1, "w_phi": 1.0, "w_r": 2e-4,
                       "radius": 0.09, "max_num_neighbors": 35},
    "learned_loop_union": {"kind": "learned", "embedding": "trackml",
                           "pair_filter": "trackml_all_pt", "radius": 0.04, "loop": True,
                           "union": [{"kind": "cylindrical", "radius": 0.03,
                                      "pair_filter": "trackml_pt1"}]},
    "union_directed_member": {"kind": "learned", "embedding": "trackml_pt1",
                              "pair_filter": "trackml_pt1", "radius": 0.0316,
                              "union": [{"kind": "eta_phi", "w_eta": 0.1, "w_r": 2e-4,
                                         "radius": 0.05, "max_num_neighbors": 8,
                                         "undirected": False}]},
    "edge_filter": {"kind": "learned", "embedding": "trackml", "pair_filter": "trackml_all_pt",
                    "edge_filter": "trackml_edges", "radius": 0.04},
}

# Runs in the subprocess, with the reference package first on sys.path.
_CHILD = r"""
import sys, torch
torch.set_num_threads(int(sys.argv[3]))
import gnn_jepa
assert gnn_jepa.__file__.startswith(sys.argv[1]), gnn_jepa.__file__
from gnn_jepa.graph.transform import BuildGraph
job = torch.load(sys.argv[2], weights_only=False)
out = {}
for gname, block in job["graphs"].items():
    build = BuildGraph(**block)
    for ename, data in job["events"].items():
        d = build(data.clone())
        out[(gname, ename)] = (d.edge_index, d.edge_attr, getattr(d, "y", None))
torch.save(out, sys.argv[2] + ".ref")
"""


def _bits(t: torch.Tensor | None):
    if t is None or not t.is_floating_point():
        return t
    return t.view({torch.float32: torch.int32, torch.float64: torch.int64}[t.dtype])


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(_bits(a), _bits(b))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref", default="main", help="git revision of the reference code")
    p.add_argument("--config", default="configs/pretrain/trackml_gpu.yaml")
    p.add_argument("--particles", type=int, default=10000)
    p.add_argument("--seeds", default="7,8,9")
    p.add_argument("--extra", action="store_true", help="also the graphs of EXTRA_GRAPHS")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    sys.path.insert(0, str(ROOT))
    from benchmarks import common
    from gnn_jepa.data.convert import event_to_data
    from gnn_jepa.data.simulator import Simulator
    from gnn_jepa.graph.transform import BuildGraph
    from torch_geometric.data import Batch

    cfg = common.load_config(str(ROOT / a.config))
    graphs = {"config": cfg["graph"], **(EXTRA_GRAPHS if a.extra else {})}
    sim_cfg = {**cfg["simulator"], "num_particles": a.particles}
    sim = Simulator.from_preset(sim_cfg.pop("preset", "trackml"), **sim_cfg)
    events = {f"seed{s}": event_to_data(sim.simulate(seed=int(s))) for s in a.seeds.split(",")}
    if a.extra and len(events) >= 2:
        first, second = list(events.values())[:2]
        events["batch2"] = Batch.from_data_list([first, second])

    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", a.ref, "gnn_jepa"],
                                 check=True, capture_output=True).stdout
        tar_path = Path(tmp) / "ref.tar"
        tar_path.write_bytes(archive)
        with tarfile.open(tar_path) as tar:
            tar.extractall(tmp, filter="data")
        job = Path(tmp) / "job.pt"
        torch.save({"graphs": graphs, "events": events}, job)
        env = {**os.environ, "PYTHONPATH": tmp, "OMP_NUM_THREADS": str(a.threads)}
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", _CHILD, tmp, str(job), str(a.threads)],
                       check=True, env=env, cwd=tmp)
        t_ref = time.perf_counter() - t0
        ref = torch.load(str(job) + ".ref", weights_only=False)

    t0 = time.perf_counter()
    rows, bad = [], 0
    for gname, block in graphs.items():
        build = BuildGraph(**block)
        for ename, data in events.items():
            d = build(data.clone())
            ei, attr, y = ref[(gname, ename)]
            same = {"edge_index": _same(d.edge_index, ei), "edge_attr": _same(d.edge_attr, attr),
                    "y": _same(getattr(d, "y", None), y)}
            bad += not all(same.values())
            rows.append({"graph": gname, "event": ename, "hits": int(data.num_nodes),
                         "edges": int(ei.shape[1]), **same})
    t_new = time.perf_counter() - t0
    print(json.dumps({"ref": a.ref, "particles": a.particles, "rows": rows,
                      "ref_seconds": round(t_ref, 1), "new_seconds": round(t_new, 1),
                      "identical": bad == 0}, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
