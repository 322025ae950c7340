"""Reading ColliderML events: Parquet shard -> Event -> PyG Data, time per event and memory.

1. The parent writes one shard of ``--events`` simulated pileup-200-sized events (trackml
   preset, ``--particles`` per event, exact count; ~100k hits each at the default 11,200)
   with :func:`gnn_jepa.data.colliderml.write_colliderml`, ``--events-per-row-group`` events
   per Parquet row group (default 1: the reader decodes one row group per event), noise hits
   dropped (ColliderML has none). ``--folder`` keeps the shard there (and reuses one already
   there); by default it goes to a temporary folder, removed at the end.
2. For each count in ``--reads`` a fresh child process (``--child``; one thread for torch,
   numpy's BLAS and Arrow) lists the shard with :class:`ColliderMLReader` and reads its first
   ``n`` events one after the other, each ``ColliderMLReader.read`` (Parquet -> Event, the
   TrackML weights included) then ``event_to_data`` (Event -> Data), keeping nothing, as a
   DataLoader worker does. It reports the wall and thread-CPU seconds of both steps per
   event, its resident set after the imports, after listing, and the highest one sampled
   after every event, and the process's peak (``VmHWM``, imports included).

Memory must be flat in the number of events read from a shard: the highest RSS while reading
20 events should equal that of reading 1, up to what the allocators keep for reuse (Arrow's
default pool, mimalloc, holds freed pages; ``ARROW_DEFAULT_MEMORY_POOL=system`` shows the
reading itself; the pool is in the JSON). Times: median and min over the events of the largest
read (the first event, which pays Arrow's warm-up, also separately). Prints one JSON document.

    OMP_NUM_THREADS=1 python -m benchmarks.colliderml_read [--particles 11200] [--events 20] \\
        [--reads 1,5,10,20] [--events-per-row-group 1] [--folder DIR] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, environment, log, proc_status_kib, write_doc

PROCESS = "bench_pu200"


def _rss_mib() -> float | None:
    kib = proc_status_kib("VmRSS")
    return None if kib is None else kib / 1024.0


def _peak_mib() -> float | None:
    """This process's peak resident set (``VmHWM``). Not ``ru_maxrss``: Linux carries that
    over ``execve``, so a child would report the parent's peak from before it started."""
    kib = proc_status_kib("VmHWM")
    return None if kib is None else kib / 1024.0


def _r(x: float | None, nd: int = 1) -> float | None:
    return None if x is None else round(x, nd)


# --------------------------------------------------------------------------- child
def child(folder: str, n: int) -> dict:
    """Read the first ``n`` events of ``folder`` one by one; times and memory."""
    import pyarrow as pa
    import torch

    from gnn_jepa.data.colliderml import ColliderMLReader
    from gnn_jepa.data.convert import event_to_data

    torch.set_num_threads(1)
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    after_imports = _rss_mib()
    t0 = time.perf_counter()
    reader = ColliderMLReader(folder)
    list_s = time.perf_counter() - t0
    after_listing = _rss_mib()
    if n > len(reader):
        raise SystemExit(f"--read {n} but {folder} holds {len(reader)} events")
    rows, highest = [], after_listing
    for i in range(n):
        w0, c0 = time.perf_counter(), time.thread_time()
        event = reader.read(i)
        w1, c1 = time.perf_counter(), time.thread_time()
        data = event_to_data(event)
        w2, c2 = time.perf_counter(), time.thread_time()
        rows.append({"event_id": event.event_id, "hits": int(data.num_nodes),
                     "read_s": w1 - w0, "read_cpu_s": c1 - c0,
                     "to_data_s": w2 - w1, "to_data_cpu_s": c2 - c1, "total_s": w2 - w0})
        del event, data
        rss = _rss_mib()
        rows[-1]["rss_mib"] = _r(rss)
        if rss is not None:
            highest = max(highest, rss)
    return {"events_read": n, "list_s": round(list_s, 4),
            "rss_after_imports_mib": _r(after_imports), "rss_after_listing_mib": _r(after_listing),
            "max_rss_while_reading_mib": _r(highest),
            "rss_growth_while_reading_mib": _r(highest - after_listing),
            "peak_rss_mib": _r(_peak_mib()), "torch_threads": torch.get_num_threads(),
            "arrow_threads": pa.cpu_count(),
            "arrow_memory_pool": pa.default_memory_pool().backend_name, "events": rows}


# --------------------------------------------------------------------------- parent
def write_shard(folder: Path, particles: int, events: int, per_row_group: int, seed: int) -> dict:
    """Simulate and write the benchmark's shard (unless ``folder`` holds one); what it holds."""
    from gnn_jepa.data.colliderml import ColliderMLReader, write_colliderml
    from gnn_jepa.data.simulator import Simulator

    hits_dir = folder / "data" / f"{PROCESS}_tracker_hits"
    info: dict = {"reused": hits_dir.is_dir() and any(hits_dir.glob("*.parquet"))}
    if not info["reused"]:
        sim = Simulator.from_preset("trackml", num_particles=particles, poisson=False)
        t0 = time.perf_counter()
        summary = write_colliderml(sim.simulate_many(events, seed=seed), folder, PROCESS,
                                   events_per_shard=events, row_group_size=per_row_group,
                                   noise="drop")
        info.update(simulate_and_write_s=round(time.perf_counter() - t0, 2),
                    noise_hits_dropped=summary.noise_hits_dropped)
    import pyarrow.parquet as pq

    reader = ColliderMLReader(folder)
    files = sorted({f for i in range(len(reader)) for f in reader.files(i)})
    hits_pf = pq.ParquetFile(next(f for f in files if f.parent == hits_dir))
    info.update(folder=str(folder), events=len(reader), shard_files=[str(f) for f in files],
                row_groups=hits_pf.num_row_groups,
                events_per_row_group=round(len(reader) / hits_pf.num_row_groups, 2),
                mib_on_disk=round(sum(f.stat().st_size for f in files) / 2**20, 1),
                mib_on_disk_per_event=round(sum(f.stat().st_size for f in files) / 2**20
                                            / max(len(reader), 1), 2))
    return info


def summarise(rows: list[dict]) -> dict:
    out = {"events": len(rows),
           "mean_hits": round(statistics.fmean(r["hits"] for r in rows), 1)}
    for key in ("read_s", "read_cpu_s", "to_data_s", "to_data_cpu_s", "total_s"):
        values = [r[key] for r in rows]
        out[key] = {"median": round(statistics.median(values), 4), "min": round(min(values), 4),
                    "first_event": round(values[0], 4)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--particles", type=int, default=11200,
                   help="particles per event (11,200: ~100k hits, noise dropped)")
    p.add_argument("--events", type=int, default=20, help="events in the shard")
    p.add_argument("--reads", default="1,5,10,20",
                   help="comma list: events read by each child process")
    p.add_argument("--events-per-row-group", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folder", default=None,
                   help="write the shard here and keep it (reused if already there); "
                        "default: a temporary folder, removed")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--read", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.folder, args.read)))
        return 0
    reads = sorted({int(r) for r in args.reads.split(",") if r.strip()})
    if not reads or reads[0] < 1 or reads[-1] > args.events:
        p.error(f"--reads must list counts in 1..{args.events}, got {args.reads!r}")

    import torch

    load_before = [round(v, 2) for v in os.getloadavg()]
    tmp = None
    folder = Path(args.folder) if args.folder else Path(
        tmp := tempfile.mkdtemp(prefix="gnn_jepa_cml_read_"))
    try:
        log(f"writing {args.events} events of {args.particles} particles to {folder}")
        shard = write_shard(folder, args.particles, args.events, args.events_per_row_group,
                            args.seed)
        runs = []
        for n in reads:
            cmd = [sys.executable, "-m", "benchmarks.colliderml_read", "--child",
                   "--folder", str(folder.resolve()), "--read", str(n)]
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                   "OPENBLAS_NUM_THREADS": "1"}
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
            if out.returncode != 0:
                raise SystemExit(f"child --read {n} failed:\n{out.stderr[-3000:]}")
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = runs[-1]
            log(f"read {n}: max RSS {r['max_rss_while_reading_mib']} MiB (+"
                f"{r['rss_growth_while_reading_mib']} over listing), median "
                f"{statistics.median(e['total_s'] for e in r['events']):.3f} s/event")
        largest = runs[-1]
        timing = summarise(largest["events"])
        doc = {
            "benchmark": "colliderml_read",
            "command": " ".join(["python", "-m", "benchmarks.colliderml_read",
                                 *(sys.argv[1:] if argv is None else argv)]),
            "environment": {**environment(torch.device("cpu")),
                            "loadavg_before_after": [load_before,
                                                     [round(v, 2) for v in os.getloadavg()]]},
            "events": {"preset": "trackml", "particles": args.particles, "seed": args.seed,
                       "noise": "dropped (ColliderML has no noise hits)"},
            "shard": shard,
            "timing": {"from": f"the child that read {largest['events_read']} events",
                       **timing},
            "target_total_s": 0.5,
            "memory": [{k: v for k, v in r.items() if k != "events"} for r in runs],
            "max_rss_while_reading_mib": {str(r["events_read"]): r["max_rss_while_reading_mib"]
                                          for r in runs},
            "runs": runs,
        }
        write_doc(doc, args.out)
        print(json.dumps(doc, indent=1))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
