"""Resident memory and CPU time of a real fit under each memory allocator, side by side.

Each ``--allocators`` entry is one ``gnn-jepa fit`` of the fine-tuning ``--config`` (scratch
encoder, ``--events`` labelled events, ``--steps`` steps, validation as the config has it)
through the console script, with ``GNN_JEPA_ALLOCATOR`` set to it (``system``: glibc's
``malloc``; ``mimalloc``: what the command runs under by default, :mod:`gnn_jepa.allocator`).
The arms alternate ``--rounds`` times on one shared event cache (built first, untimed). Per
fit: the peak resident set size and the user and system CPU seconds of the child
(``os.wait4``; the restart under mimalloc keeps the process id), and the wall time. Per arm:
the medians, and ratios against the first arm.

    OMP_NUM_THREADS=1 python -m benchmarks.allocator --steps 150 --events 30

Prints one JSON document.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch

from benchmarks import common

DEFAULT_CONFIG = common.ROOT / "configs" / "finetune" / "trackml_small.yaml"


def fit_command(config: str, work: Path, steps: int, events: int, seed: int, name: str) -> list[str]:
    """The ``gnn-jepa fit`` of one arm (logs and checkpoints under ``work/runs``)."""
    return [str(Path(sys.executable).with_name("gnn-jepa")), "fit", "--config", config,
            "--model.mode", "scratch", "--data.num_train", str(events),
            "--data.cache_dir", str(work / "cache"), "--seed_everything", str(seed),
            "--trainer.max_steps", str(steps), "--trainer.enable_progress_bar", "false",
            "--trainer.logger.init_args.save_dir", str(work / "runs"),
            "--trainer.logger.init_args.name", name]


def run_fit(cmd: list[str], allocator: str, log: Path) -> dict:
    """Run ``cmd`` as a child under ``allocator``; its peak RSS (MiB), user/system CPU and
    wall seconds."""
    env = {**os.environ, "GNN_JEPA_ALLOCATOR": allocator}
    env.pop("LD_PRELOAD", None)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=common.ROOT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"fit exited with {code}; see {log}")
    if f"memory allocator: {allocator}" not in log.read_text():
        raise RuntimeError(f"the fit did not run under {allocator}; see {log}")
    return {"peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "user_s": round(usage.ru_utime, 2),
            "sys_s": round(usage.ru_stime, 2), "wall_s": round(wall, 2)}


def summarize(fits: list[dict], steps: int) -> dict:
    out = {f"{k}_median": round(statistics.median(f[k] for f in fits), 2)
           for k in ("peak_rss_mib", "user_s", "sys_s", "wall_s")}
    out["cpu_s_per_step_median"] = round(statistics.median(f["user_s"] + f["sys_s"] for f in fits) / steps, 4)
    return out


def main(argv: Optional[list[str]] = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--allocators", default=",".join(common.ALLOCATORS))
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--events", type=int, default=30, help="labelled (training) events")
    p.add_argument("--rounds", type=int, default=1, help="alternations of the arms")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=None, help="folder for cache, runs and logs (default: a temp dir)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    arms = [a.strip() for a in args.allocators.split(",") if a.strip()]
    if not arms or any(a not in common.ALLOCATORS for a in arms):
        raise SystemExit(f"--allocators must list some of {common.ALLOCATORS}, got {args.allocators!r}")
    work = Path(args.work or tempfile.mkdtemp(prefix="allocator_"))
    work.mkdir(parents=True, exist_ok=True)
    common.log(f"allocator: building the event cache in {work}")
    run_fit(fit_command(args.config, work, 1, args.events, args.seed, "warmup"), arms[0], work / "warmup.log")
    fits: dict[str, list[dict]] = {a: [] for a in arms}
    for r in range(args.rounds):
        for a in arms:
            common.log(f"allocator: round {r}, {a}")
            fits[a].append(run_fit(fit_command(args.config, work, args.steps, args.events, args.seed,
                                               f"{a}_r{r}"), a, work / f"{a}_r{r}.log"))
    rows = [{"allocator": a, **summarize(fits[a], args.steps), "fits": fits[a]} for a in arms]
    ref = rows[0]
    for row in rows:
        for k in ("peak_rss_mib", "wall_s", "cpu_s_per_step"):
            row[f"{k}_vs_{ref['allocator']}"] = round(row[f"{k}_median"] / ref[f"{k}_median"], 3)
    doc = {"benchmark": "allocator", "config": str(args.config), "steps": args.steps,
           "events": args.events, "rounds": args.rounds, "omp_threads": os.environ.get("OMP_NUM_THREADS"),
           "env": common.environment(torch.device("cpu")),
           "loadavg_end": round(os.getloadavg()[0], 2), "rows": rows}
    common.write_doc(doc, args.out)
    print(json.dumps(doc, indent=1))
    return doc


if __name__ == "__main__":
    main()
