"""Does data loading starve training? Step time with the real DataLoader vs pre-loaded batches.

The training step of ``--task``: ``jepa``, the JEPA step of :mod:`benchmarks.train_step`
(pretraining config), or ``finetune``, the track-finding step of :mod:`benchmarks.edge_head`
(fine-tuning config: encoder, edge head, edge loss, optimizer); one event per batch, fed by:

* ``preloaded``: ``--events`` batches already on the device, cycled: the compute-only
  reference;
* ``cached``: :class:`gnn_jepa.datamodule.EventDataModule` over ``--events`` fixed
  simulated events, processed once into an on-disk cache (``prepare_data``, timed apart as
  ``cache_build_s``), loaded with ``num_workers`` from ``--workers``;
* ``on_the_fly``: the same DataModule with ``on_the_fly: true`` (as the GPU pretraining
  config): every batch a freshly simulated event whose graph is built in the loader worker.

Each loop iteration is timed in two parts: ``data_ms`` (``next(loader)`` + ``.to(device)``)
and ``compute_ms`` (the step, synchronised on CUDA). ``data_fraction`` = total data time /
total time over the timed steps: near 0 the loader keeps up, near 1 training waits for data.
``--warmup`` iterations are not timed (they include the workers' start-up).

    python -m benchmarks.dataloader --device cpu --hits 2000 --workers 0,2
    python -m benchmarks.dataloader --task finetune --config configs/finetune/trackml_small.yaml \
        --device cpu --hits 1500 --workers 0,1 --threads 1
    python -m benchmarks.dataloader --device cuda --hits 50000 --workers 0,4,8 --out gpu_out/dataloader.json
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from typing import Iterator, Optional

import torch

from benchmarks import common


def cycle(loader) -> Iterator:
    """Endless iteration over a (re-iterable) loader or list."""
    while True:
        empty = True
        for item in loader:
            empty = False
            yield item
        if empty:
            raise ValueError("the loader yielded no batch (no training events?)")


def timed_loop(source: Iterator, step_fn, device: torch.device, warmup: int, steps: int) -> dict:
    """Run ``warmup + steps`` iterations of (fetch, move, step); summarise the timed ones."""
    data_t, comp_t = [], []
    for i in range(warmup + steps):
        common.sync(device)
        t0 = time.perf_counter()
        batch = next(source).to(device)
        common.sync(device)
        t1 = time.perf_counter()
        step_fn(batch, i)
        common.sync(device)
        t2 = time.perf_counter()
        if i >= warmup:
            data_t.append(t1 - t0)
            comp_t.append(t2 - t1)
    total = [a + b for a, b in zip(data_t, comp_t)]
    return {"ms_per_step_median": round(statistics.median(total) * 1e3, 3),
            "ms_per_step_mean": round(statistics.fmean(total) * 1e3, 3),
            "data_ms_median": round(statistics.median(data_t) * 1e3, 3),
            "data_ms_mean": round(statistics.fmean(data_t) * 1e3, 3),
            "compute_ms_median": round(statistics.median(comp_t) * 1e3, 3),
            "data_fraction": round(sum(data_t) / sum(total), 4),
            "steps": steps}


def make_datamodule(simulator: dict, graph: dict, events: int, on_the_fly: bool,
                    workers: int, cache_dir: Optional[str], seed: int):
    from gnn_jepa.datamodule import EventDataModule

    return EventDataModule(source="simulate", simulator=simulator, num_train=events, num_val=0,
                           num_test=0, on_the_fly=on_the_fly, graph=graph, batch_size=1,
                           num_workers=workers, cache_dir=cache_dir, seed=seed)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--hits", type=int, default=None,
                   help="target hits per event (default cpu: 2000, cuda: 50000)")
    p.add_argument("--workers", default=None, help="num_workers values, comma list "
                   "(default cpu: 0,2; cuda: 0,4,8)")
    p.add_argument("--loaders", default="preloaded,cached,on_the_fly",
                   help="which feeds to compare (comma list)")
    p.add_argument("--events", type=int, default=4, help="events of the preloaded and cached sets")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast in the step")
    p.add_argument("--task", choices=("jepa", "finetune"), default="jepa",
                   help="the training step fed: JEPA pretraining or track-finding fine-tuning")
    p.add_argument("--config", default=None,
                   help="YAML config (default: the GPU pretraining config for --task jepa, the "
                        "GPU fine-tuning config for --task finetune)")
    p.add_argument("--d-model", type=int, default=None)
    p.add_argument("--n-layers", type=int, default=None)
    p.add_argument("--max-neighbors", type=int, default=0,
                   help="0: the config's graph as is (default), k: capped at k neighbours")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (main process)")
    p.add_argument("--cache-dir", default=None, help="cache folder (default: a temporary one, removed)")
    p.add_argument("--out", default=None, help="also write the JSON here (rewritten per row)")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = common.resolve_device(args.device)
    cuda = device.type == "cuda"
    hits = args.hits or (50_000 if cuda else 2000)
    workers = [int(w) for w in (args.workers or ("0,4,8" if cuda else "0,2")).split(",") if w.strip()]
    if any(w < 0 for w in workers):
        raise ValueError(f"--workers must be >= 0, got {args.workers!r}")
    loaders = [s.strip() for s in args.loaders.split(",") if s.strip()]
    bad = [s for s in loaders if s not in ("preloaded", "cached", "on_the_fly")]
    if bad:
        raise ValueError(f"unknown --loaders {bad}; choose from preloaded, cached, on_the_fly")
    if args.events < 1:
        raise ValueError(f"--events must be >= 1, got {args.events}")
    cfg = common.load_config(args.config or (common.DEFAULT_PRETRAIN_CONFIG if args.task == "jepa"
                                             else common.DEFAULT_FINETUNE_CONFIG))
    model_args = common.override_encoder(cfg["model"], d_model=args.d_model, n_layers=args.n_layers)
    graph = common.bench_graph(cfg["graph"], args.max_neighbors)
    particles = max(1, round(hits / common.hits_per_particle(cfg["simulator"], args.seed)))
    simulator = {**cfg["simulator"], "num_particles": particles}
    clip = cfg["gradient_clip_val"]
    doc = {"benchmark": "dataloader", "env": common.environment(device),
           "config": {"path": cfg["path"], "model": model_args, "graph": graph,
                      "simulator": simulator, "target_hits": hits, "events": args.events,
                      "task": args.task, "bf16": args.bf16, "warmup": args.warmup, "steps": args.steps,
                      "workers": workers, "seed": args.seed},
           "rows": []}

    torch.manual_seed(0)
    if args.task == "jepa":
        model, opt, sched = common.make_jepa(model_args, device)

        def step(batch, i):
            common.jepa_step(model, opt, sched, batch, i, bf16=args.bf16, clip=clip)
    else:
        model, opt, sched = common.make_track_finding(model_args, device)

        def step(batch, i):
            common.finetune_step(model, opt, sched, batch, bf16=args.bf16, clip=clip)

    def record(row: dict) -> None:
        doc["rows"].append(row)
        common.log(json.dumps(row))
        common.write_doc(doc, args.out)

    own_cache = args.cache_dir is None
    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="gnn_jepa_bench_cache_")
    try:
        for loader_kind in loaders:
            runs = [None] if loader_kind == "preloaded" else workers
            for nw in runs:
                row = {"loader": loader_kind, "num_workers": nw}
                common.log(f"dataloader: {row}")
                dm = None
                try:
                    if loader_kind == "preloaded":
                        dm = make_datamodule(simulator, graph, args.events, False, 0, None, args.seed)
                        t0 = time.perf_counter()
                        batches = [b.to(device) for b in dm.train_dataloader()]
                        row["load_s"] = round(time.perf_counter() - t0, 3)
                        row["mean_hits"] = round(statistics.fmean(b.num_nodes for b in batches), 1)
                        row["mean_edges"] = round(statistics.fmean(
                            b.edge_index.shape[1] for b in batches), 1)
                        source = cycle(batches)
                    else:
                        fly = loader_kind == "on_the_fly"
                        dm = make_datamodule(simulator, graph, args.events, fly, nw, cache_dir,
                                             args.seed)
                        if not fly:
                            t0 = time.perf_counter()
                            dm.prepare_data()  # builds the cache once (a no-op when built)
                            row["cache_build_s"] = round(time.perf_counter() - t0, 3)
                        source = cycle(dm.train_dataloader())
                    row.update(timed_loop(source, step, device, args.warmup, args.steps))
                except Exception as exc:  # record and go on with the next feed
                    row.update(common.error_row(exc))
                finally:
                    # ends persistent workers before the next configuration starts its own
                    source = None
                    dm = None
                record(row)
        pre = next((r for r in doc["rows"] if r["loader"] == "preloaded"
                    and "ms_per_step_median" in r), None)
        if pre:
            for r in doc["rows"]:
                if "ms_per_step_median" in r:
                    r["slowdown_vs_preloaded"] = round(
                        r["ms_per_step_median"] / pre["ms_per_step_median"], 3)
            common.write_doc(doc, args.out)
    finally:
        if own_cache:
            shutil.rmtree(cache_dir, ignore_errors=True)
    json.dump(doc, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
