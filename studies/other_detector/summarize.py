"""Collect the other-detector study's outputs into one results file.

    python -m studies.other_detector.summarize [--runs runs/other_detector] \\
        [--out studies/other_detector/results/summary.json]

Reads ``<runs>/graph/fit_graph.json`` (the fitted graph on the held-out events, and the shipped
presets next to it) and every ``<runs>/L<labels>_s<seed>/test/metrics.json`` (the trained
pipeline on the 20 test events, with the graph's ceiling there), and writes them with the run's
labelled events and seed.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Optional

from gnn_jepa.evaluation.report import strict_json_tree

KEYS = ("trackml_score", "dm_efficiency", "fake_rate", "duplicate_rate", "edge_auc", "threshold",
        "num_events", "ceiling_trackml_score", "ceiling_dm_efficiency", "ceiling_fake_rate")
GRAPH_KEYS = ("graph", "radius", "mean_degree", "efficiency", "efficiency_pt_min", "purity",
              "unseen_hit_fraction", "ceiling_trackml_score", "ceiling_dm_efficiency")


def summarize(runs: Path) -> dict:
    fit = json.loads((runs / "graph" / "fit_graph.json").read_text())
    out = {"fit_graph": {"command": fit["command"], "fit_events": fit["fit_events"],
                         "eval_events": fit["eval_events"], "graph": fit["graph"],
                         "rows": [{k: r[k] for k in GRAPH_KEYS} for r in fit["rows"]]},
           "runs": []}
    for path in sorted(runs.glob("L*_s*/test/metrics.json")):
        m = re.fullmatch(r"L(\d+)_s(\d+)", path.parent.parent.name)
        metrics = json.loads(path.read_text())["metrics"]
        out["runs"].append({"labelled_events": int(m.group(1)), "seed": int(m.group(2)),
                            **{k: metrics[k] for k in KEYS}})
    return out


def main(argv: Optional[list[str]] = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, default=Path("runs/other_detector"))
    p.add_argument("--out", type=Path, default=Path("studies/other_detector/results/summary.json"))
    args = p.parse_args(argv)
    doc, _ = strict_json_tree(summarize(args.runs))  # an undefined purity is null
    text = json.dumps(doc, indent=1, allow_nan=False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)
    return doc


if __name__ == "__main__":
    main()
