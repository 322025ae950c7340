"""Summarise the segment-pair study's runs: mean, min and max over seeds per head.

    python -m studies.segment_pairs.summarize studies/segment_pairs/results/*_metrics.json \
        --out studies/segment_pairs/results/summary.json

Each input is a run's ``test/metrics.json`` (copied as ``<head>_seed<k>_metrics.json``); the head
and seed come from the file name.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

KEYS = ("trackml_score", "dm_efficiency", "fake_rate", "duplicate_rate", "edge_auc")


def summarize(paths: list[Path]) -> dict:
    runs: dict[str, dict[int, dict]] = {}
    for path in paths:
        m = re.fullmatch(r"(.+)_seed(\d+)_metrics\.json", path.name)
        if not m:
            raise ValueError(f"{path}: expected <head>_seed<k>_metrics.json")
        metrics = json.loads(path.read_text())["metrics"]
        runs.setdefault(m.group(1), {})[int(m.group(2))] = metrics
    out = {}
    for head, seeds in sorted(runs.items()):
        rows = [seeds[s] for s in sorted(seeds)]
        out[head] = {"seeds": sorted(seeds), "runs": len(rows),
                     "test_events": sorted({r["num_events"] for r in rows})}
        for k in KEYS:
            vals = [r[k] for r in rows]
            out[head][k] = {"mean": statistics.fmean(vals), "min": min(vals), "max": max(vals),
                            "per_seed": vals}
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    summary = summarize(args.files)
    text = json.dumps(summary, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return summary


if __name__ == "__main__":
    main()
