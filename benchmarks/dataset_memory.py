"""Peak memory of one training epoch as the dataset grows: lazy on-disk cache vs all in memory.

The datamodule caches one file per processed event (``EventDataset``) and loads each on
access, so a DataLoader epoch should hold only a few batches at a time: peak RSS flat in
the number of events. For contrast, ``in_memory`` first loads every cached event into a
Python list (what an in-memory dataset such as PyG's ``InMemoryDataset`` does), whose peak
grows with the dataset.

1. The parent process simulates and caches the largest set once (``EventDataModule.prepare_data``,
   graphs included), unless the cache already holds it.
2. For every size and mode a fresh child process builds the datamodule over the first
   ``size`` events of that cache and iterates one shuffled epoch of the training DataLoader.
   It reports its resident set size after the imports (the baseline), the highest RSS
   sampled after every batch, their difference (``rss_growth_mib``: the data's share) and
   the process's ``ru_maxrss`` (which also holds import-time peaks).

Prints one JSON document to stdout.

    python -m benchmarks.dataset_memory [--sizes 50,200,800] [--particles 100] [--cache DIR]
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, proc_status_kib


def datamodule_args(size: int, particles: int, cache: str, batch_size: int, workers: int) -> dict:
    return dict(source="simulate", simulator={"preset": "trackml", "num_particles": particles},
                num_train=size, num_val=0, num_test=0, batch_size=batch_size, num_workers=workers,
                cache_dir=cache, seed=0)


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mib() -> float:
    """Current resident set size (``VmRSS`` of /proc/self/status; peak RSS elsewhere)."""
    rss = proc_status_kib("VmRSS")
    return rss / 1024.0 if rss is not None else peak_rss_mib()


def child(args: argparse.Namespace) -> dict:
    """One epoch over ``args.size`` cached events; returns peak RSS before/after (MiB)."""
    import torch
    from torch_geometric.loader import DataLoader

    from gnn_jepa.datamodule import EventDataModule

    torch.set_num_threads(1)
    baseline = rss_mib()  # after the imports, before any event
    dm = EventDataModule(**datamodule_args(args.size, args.particles, args.cache, args.batch_size, 0))
    loader = dm.train_dataloader()
    if args.mode == "in_memory":
        events = [loader.dataset[i] for i in range(len(loader.dataset))]
        loader = DataLoader(events, batch_size=args.batch_size, shuffle=True)
    t0 = time.perf_counter()
    n_events = n_hits = 0
    highest = rss_mib()
    for batch in loader:
        n_events += int(batch.num_graphs)
        n_hits += int(batch.num_nodes)
        highest = max(highest, rss_mib())
    seconds = time.perf_counter() - t0
    return {"size": args.size, "mode": args.mode, "events_seen": n_events, "hits_seen": n_hits,
            "rss_after_imports_mib": round(baseline, 1), "max_rss_during_epoch_mib": round(highest, 1),
            "rss_growth_mib": round(highest - baseline, 1), "peak_rss_mib": round(peak_rss_mib(), 1),
            "epoch_seconds": round(seconds, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="50,200,800")
    p.add_argument("--particles", type=int, default=100, help="particles per simulated event")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--cache", default=None, help="cache folder (default: a temporary one, removed)")
    p.add_argument("--modes", default="lazy,in_memory")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    sizes = sorted(int(s) for s in args.sizes.split(","))
    tmp = None
    if args.cache is None:
        tmp = tempfile.mkdtemp(prefix="gnn_jepa_memory_")
        args.cache = tmp
    try:
        from gnn_jepa.datamodule import EventDataModule

        t0 = time.perf_counter()
        dm = EventDataModule(**datamodule_args(max(sizes), args.particles, args.cache, args.batch_size, 0))
        dm.prepare_data()  # simulate + graph + cache every event once
        prepare_s = time.perf_counter() - t0
        ds = dm._dataset("train")
        files = sorted(ds.cache_path.glob("event_*.pt"))[: max(sizes)]
        mib_per_event = sum(f.stat().st_size for f in files) / len(files) / 2**20

        runs = []
        for mode in args.modes.split(","):
            for size in sizes:
                cmd = [sys.executable, "-m", "benchmarks.dataset_memory", "--child", "--size",
                       str(size), "--mode", mode, "--particles", str(args.particles),
                       "--batch-size", str(args.batch_size), "--cache",
                       str(Path(args.cache).resolve())]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(json.dumps(runs[-1]), file=sys.stderr)
        import torch
        report = {
            "benchmark": "dataset_memory",
            "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.dataset_memory",
                                 *sys.argv[1:]]),
            "platform": {"python": platform.python_version(), "torch": torch.__version__,
                         "machine": platform.machine(), "cpus": __import__("os").cpu_count()},
            "events": {"preset": "trackml", "particles": args.particles,
                       "cache_mib_per_event": round(mib_per_event, 3),
                       "cache_mib_total": round(mib_per_event * max(sizes), 1),
                       "prepare_seconds": round(prepare_s, 1)},
            "batch_size": args.batch_size,
            "runs": runs,
            # RSS above the post-import baseline, per mode and size: flat for lazy loading
            "rss_growth_mib": {mode: {str(r["size"]): r["rss_growth_mib"] for r in runs if r["mode"] == mode}
                               for mode in args.modes.split(",")},
        }
        print(json.dumps(report, indent=1))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
