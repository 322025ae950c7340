"""TrackML score against the number of labelled events: the supervised reference curve.

Each run fits ``configs/finetune/trackml_small.yaml`` (150 particles/event; early stopping on
the validation TrackML score, 5 validations of patience, at most 1,500 steps) on N labelled
events with one seed, then tests its best checkpoint (the cut tuned at that validation) on the
config's 20 held-out events, through the ``gnn-jepa`` CLI itself:

    python -m studies.label_curve.run --arm scratch --labels 1,3,10,30,100,300 --seeds 0,1,2

Every finished run leaves ``<results>/<arm>_L<labels>_s<seed>.json`` (test metrics, best and
last step, wall time, the two commands) and the test's own ``metrics.json`` as
``<results>/metrics/<arm>_L<labels>_s<seed>.json`` (logs and checkpoints under ``--work``);
runs whose file exists are skipped and a fit stopped by SIGTERM resumes from its
``last.ckpt``, so the command resumes and several copies with different
``--seeds`` can share the machine. After each run the curve is rewritten from all run files:
``<results>/curve.json``, ``{"<arm>": {"<labels>": [score per seed, seed order], ...},
"stats": {...}}``. ``--threads`` sets ``OMP_NUM_THREADS`` of
the runs; extra ``gnn-jepa`` arguments follow ``--`` (e.g. ``-- --model.pretrained CKPT`` with
``--arm jepa``), where ``{seed}`` stands for the run's seed.

A pretrained arm from one line: ``--pretrain CONFIG`` first runs ``gnn-jepa fit --config
CONFIG --seed_everything S --data.seed S`` once per seed (under ``<work>/pretrain_s<S>``; a
finished one is reused, an interrupted one resumes from its ``last.ckpt``), then fine-tunes
every run of that seed from its final state (``last.ckpt``, the shipped recipe), e.g. the
shipped event-mixing arm::

    python -m studies.label_curve.run --arm mixing1500_lr4_last --labels 1,3,10 --seeds 0,1,2,3,4 \
        --pretrain configs/pretrain/trackml_small_mixing.yaml \
        -- --model.optim.encoder_lr 1.25e-4 --model.optim.head_lr 5.0e-4
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "configs/finetune/trackml_small.yaml"
RESULTS = ROOT / "studies" / "label_curve" / "results"
WORK = ROOT / "runs" / "label_curve"
KEYS = ("trackml_score", "dm_efficiency", "fake_rate", "duplicate_rate", "edge_auc", "threshold",
        "num_events", "ceiling_trackml_score")


def run_name(arm: str, labels: int, seed: int) -> str:
    return f"{arm}_L{labels}_s{seed}"


def last_step(metrics_csv: Path) -> int:
    with metrics_csv.open() as f:
        return max(int(r["step"]) for r in csv.DictReader(f) if r.get("step"))


def interrupted_fit(work: Path) -> Optional[tuple[int, Path]]:
    """``(version, last.ckpt)`` of a fit that was stopped before it finished, else ``None``.

    A fit killed by SIGTERM (``SigtermCheckpoint``) leaves ``last.ckpt`` and no test result;
    resuming it in the same logger version keeps its best checkpoint, its early-stopping
    count and its ``metrics.csv`` (appended to)."""
    if (work / "test" / "metrics.json").exists():
        return None
    versions = sorted(work.glob("*/version_*"), key=lambda p: p.stat().st_mtime)
    if not versions or not (versions[-1] / "checkpoints" / "last.ckpt").exists():
        return None
    return int(versions[-1].name.split("_")[1]), versions[-1] / "checkpoints" / "last.ckpt"


def _env(threads: int) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "disabled"}


def _fit(args: list[str], work: Path, env: dict) -> Optional[tuple[int, Path]]:
    """``gnn-jepa fit <args>`` logged to ``work/fit.log``; an interrupted fit in ``work``
    (:func:`interrupted_fit`) is resumed in its logger version. Returns what was resumed."""
    work.mkdir(parents=True, exist_ok=True)
    resume = interrupted_fit(work)
    more = (["--ckpt_path", str(resume[1]), "--trainer.logger.init_args.version", str(resume[0])]
            if resume else [])
    with (work / "fit.log").open("a" if resume else "w") as log:
        if resume:
            log.write(f"label_curve: resuming from {resume[1]}\n")
            log.flush()
        subprocess.run([sys.executable, "-m", "gnn_jepa.cli", "fit", *args, *more], cwd=ROOT,
                       env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    return resume


def pretrain(config: str, seed: int, work_root: Path, threads: int) -> tuple[Path, str]:
    """The final state (``last.ckpt``) of ``gnn-jepa fit --config config`` with ``seed``, and
    the command. Runs it unless ``<work_root>/pretrain_s<seed>`` holds a finished one (marked
    by a ``finished`` file); an interrupted one resumes from its ``last.ckpt``."""
    from gnn_jepa.models.checkpoints import final_checkpoint

    work = work_root / f"pretrain_s{seed}"
    args = ["--config", config, "--seed_everything", str(seed), "--data.seed", str(seed),
            "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir",
            str(work)]
    command = "gnn-jepa fit " + " ".join(args)
    if not (work / "finished").exists():
        _fit(args, work, _env(threads))
        (work / "finished").write_text(command + "\n")
    return final_checkpoint(work), command


def one_run(arm: str, labels: int, seed: int, work_root: Path, threads: int, extra: list[str]) -> dict:
    # here, not at the top: --summarize and the curve writer stay free of torch and Lightning
    from gnn_jepa.models.checkpoints import best_checkpoint, checkpoint_step

    work = work_root / run_name(arm, labels, seed)
    common = ["--config", CONFIG, "--data.num_train", str(labels), "--seed_everything", str(seed),
              "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir",
              str(work)]
    if arm == "scratch":
        common += ["--model.mode", "scratch"]
    common += extra
    env = _env(threads)
    cli = [sys.executable, "-m", "gnn_jepa.cli"]
    start = time.time()
    resume = _fit(common, work, env)
    ckpt = best_checkpoint(work)
    best = checkpoint_step(ckpt)
    versions = sorted(work.glob("*/version_*"), key=lambda p: p.stat().st_mtime)
    test_args = common + ["--ckpt_path", str(ckpt), "--model.output_dir", str(work / "test")]
    with (work / "test.log").open("w") as log:
        subprocess.run(cli + ["test"] + test_args, cwd=ROOT, env=env, stdout=log,
                       stderr=subprocess.STDOUT, check=True)
    metrics = json.loads((work / "test" / "metrics.json").read_text())["metrics"]
    fmt = lambda args: "gnn-jepa " + " ".join(args)  # noqa: E731
    return {"arm": arm, "labelled_events": labels, "seed": seed,
            **{k: metrics.get(k) for k in KEYS},
            "best_step": best, "last_step": last_step(versions[-1] / "metrics.csv"),
            "wall_s": round(time.time() - start, 1), "threads": threads,
            "fit_command": fmt(["fit"] + common), "resumed": bool(resume),
            "test_command": fmt(["test"] + test_args)}


def curve(results: Path) -> dict:
    """``{arm: {labels: [score per seed]}}`` plus per-cell statistics, from the run files."""
    runs: dict[str, dict[int, dict[int, dict]]] = {}
    for path in sorted(results.glob("*_L*_s*.json")):
        r = json.loads(path.read_text())
        runs.setdefault(r["arm"], {}).setdefault(r["labelled_events"], {})[r["seed"]] = r
    doc: dict = {}
    stats: dict = {}
    for arm, by_labels in sorted(runs.items()):
        doc[arm] = {}
        stats[arm] = {}
        for labels in sorted(by_labels):
            seeds = by_labels[labels]
            scores = [seeds[s]["trackml_score"] for s in sorted(seeds)]
            doc[arm][str(labels)] = scores
            stats[arm][str(labels)] = {
                "seeds": sorted(seeds), "runs": len(seeds), "mean": statistics.fmean(scores),
                "min": min(scores), "max": max(scores),
                **{f"{k}{suffix}": agg(seeds[s][k] for s in seeds)
                   for k in ("dm_efficiency", "fake_rate")
                   for suffix, agg in (("", statistics.fmean), ("_min", min), ("_max", max))},
                "best_step": [seeds[s]["best_step"] for s in sorted(seeds)],
                "test_events": sorted({seeds[s]["num_events"] for s in seeds})}
    doc["stats"] = stats
    return doc


def write_curve(results: Path) -> dict:
    doc = curve(results)
    tmp = results / f".curve.{os.getpid()}.json"
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(results / "curve.json")
    return doc


def main(argv: Optional[list[str]] = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arm", default="scratch", help="scratch, or a name for runs given -- args")
    p.add_argument("--labels", default="1,3,10,30,100,300")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--work", type=Path, default=WORK, help="run folders (logs, checkpoints)")
    p.add_argument("--summarize", action="store_true", help="only rewrite curve.json")
    p.add_argument("--pretrain", metavar="CONFIG", default=None,
                   help="pretrain with this config per seed; runs fine-tune from its last.ckpt")
    args = p.parse_args(argv)
    if not re.fullmatch(r"[a-z0-9_]+", args.arm):
        raise SystemExit(f"--arm must be lower-case letters, digits or _, got {args.arm!r}")
    if args.pretrain is not None and (args.arm == "scratch" or "--model.pretrained" in extra):
        raise SystemExit("--pretrain gives the runs their --model.pretrained: not with "
                         "--arm scratch, nor with --model.pretrained after --")
    args.results.mkdir(parents=True, exist_ok=True)
    if not args.summarize:
        for seed in [int(s) for s in args.seeds.split(",")]:
            pending = [n for n in (int(n) for n in args.labels.split(","))
                       if not (args.results / f"{run_name(args.arm, n, seed)}.json").exists()]
            seed_extra = [a.replace("{seed}", str(seed)) for a in extra]
            pretrain_command = None
            if pending and args.pretrain is not None:
                ckpt, pretrain_command = pretrain(args.pretrain, seed, args.work, args.threads)
                seed_extra += ["--model.pretrained", str(ckpt)]
            for labels in pending:
                path = args.results / f"{run_name(args.arm, labels, seed)}.json"
                print(f"label_curve: {args.arm}, {labels} labelled events, seed {seed}", flush=True)
                row = one_run(args.arm, labels, seed, args.work, args.threads, seed_extra)
                if pretrain_command is not None:
                    row["pretrain_command"] = pretrain_command
                path.write_text(json.dumps(row, indent=1) + "\n")
                (args.results / "metrics").mkdir(exist_ok=True)
                shutil.copy(args.work / run_name(args.arm, labels, seed) / "test" / "metrics.json",
                            args.results / "metrics" / f"{run_name(args.arm, labels, seed)}.json")
                print(json.dumps({k: row[k] for k in ("trackml_score", "dm_efficiency",
                                                      "fake_rate", "best_step", "wall_s")}), flush=True)
                write_curve(args.results)
    doc = write_curve(args.results)
    print(json.dumps(doc["stats"], indent=1))
    return doc


if __name__ == "__main__":
    main()
