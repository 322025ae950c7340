"""Fit the shipped edge filter on top of the shipped learned graph, and report what it keeps.

    python -m studies.edge_filter.run [--particles 1000] [--radius 0.13] [--fit-events 8] \\
        [--eval-events 4] [--efficiency 0.995] [--steps 1500] [--out FILE.pt] [--json OUT.json]

Simulated ``trackml``-preset events (seed stream 7, indices from 3,000,000: disjoint from every
config's training, validation and test events) go through the shipped learned graph
(``embedding: trackml, pair_filter: trackml_all_pt``, ``--radius``); an
:class:`~gnn_jepa.graph.edge_filter.EdgeFilter` is fitted on the first ``--fit-events`` graphs
for ``--efficiency`` of their true segments, saved to ``--out`` (default: the shipped preset
``gnn_jepa/graph/presets/trackml_edges.pt``), and the held-out events' graphs with and without
it are compared (edge efficiency, purity, mean degree, ceiling). Prints JSON.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Optional

import torch

from gnn_jepa.data.convert import event_to_data
from gnn_jepa.data.simulator import Simulator, event_seed
from gnn_jepa.evaluation.graph_scan import pooled_graph_metrics
from gnn_jepa.graph.edge_filter import EdgeFilter, fit_edge_filter
from gnn_jepa.graph.presets import PRESET_DIR
from gnn_jepa.graph.transform import BuildGraph

FIRST_EVENT = 3_000_000
SEED = 7


def main(argv: Optional[list[str]] = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--particles", type=int, default=1000)
    p.add_argument("--radius", type=float, default=0.13)
    p.add_argument("--fit-events", type=int, default=8)
    p.add_argument("--eval-events", type=int, default=4)
    p.add_argument("--efficiency", type=float, default=0.995)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--out", type=Path, default=PRESET_DIR / "trackml_edges.pt")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    block = {"kind": "learned", "embedding": "trackml", "pair_filter": "trackml_all_pt",
             "radius": args.radius}
    sim = Simulator.from_preset("trackml", num_particles=args.particles)
    build = BuildGraph(**block)
    t0 = time.perf_counter()
    n = args.fit_events + args.eval_events
    graphs = []
    for k in range(n):
        i = FIRST_EVENT + k
        d = event_to_data(sim.simulate(seed=event_seed(SEED, i), event_id=i))
        graphs.append((d, build.edges(d)))
    events_s = time.perf_counter() - t0
    fit, held = graphs[:args.fit_events], graphs[args.fit_events:]
    t0 = time.perf_counter()
    filt = fit_edge_filter(fit, efficiency=args.efficiency, steps=args.steps, seed=0,
                           log=lambda m: print(m, flush=True))
    fit_s = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    filt.save(args.out, graph=block, particles=args.particles, efficiency=args.efficiency,
              steps=args.steps, fit_events=[FIRST_EVENT, FIRST_EVENT + args.fit_events - 1],
              seed_stream=SEED, command="python -m studies.edge_filter.run " + " ".join(
                  argv if argv is not None else __import__("sys").argv[1:]))
    loaded = EdgeFilter.load(args.out)
    filtered = [(d, ei[:, loaded.keep(d.pos, ei)]) for d, ei in held]
    doc = {"benchmark": "edge_filter", "graph": block, "particles": args.particles,
           "efficiency_target": args.efficiency, "steps": args.steps, "filter": repr(loaded),
           "fit_events": args.fit_events, "eval_events": args.eval_events,
           "hits_per_event": sum(d.num_nodes for d, _ in held) / len(held),
           "without_filter": pooled_graph_metrics(held, ceiling=True),
           "with_filter": pooled_graph_metrics(filtered, ceiling=True),
           "seconds": {"events_and_graphs": events_s, "fit": fit_s}}
    text = json.dumps(doc, indent=1)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return doc


if __name__ == "__main__":
    main()
