"""Fine-tuning step with each edge head: time and peak memory, side by side.

One step is what ``gnn-jepa fit --config configs/finetune/<x>.yaml`` runs per batch of one
event: encoder + edge head forward, the BCE edge loss on the config's ``edge_label``,
backward, gradient clipping, AdamW and LR-scheduler step, built from
:class:`gnn_jepa.models.TrackFinding` (``mode: scratch``) itself. Every ``--heads`` entry
(``mlp``: each edge judged alone, the reference; ``interaction``: edges and hits exchange
messages; ``segment_pairs``: segments exchange messages with their continuations, the shipped
head; the rest of the config's ``head`` block is kept) runs on the same events, simulated
with the config's simulator and graph, one per ``--particles`` count. Rows carry the median
(min, mean) step time over ``--steps`` timed steps after ``--warmup``, the peak memory (see
:class:`benchmarks.common.PeakMemory`), the number of hits and edges, and ``ratio_vs_mlp``.

    python -m benchmarks.edge_head --particles 150,1000
    python -m benchmarks.edge_head --config configs/finetune/trackml_1k.yaml --heads segment_pairs \
        --mode inference --particles 150,1000,10000

``--mode inference`` times full-event inference instead (eval mode, no autograd: encoder, edge
scores and track building, :meth:`TrackFinding.reconstruct`). ``--autocast bf16`` runs the forward under
``torch.autocast`` in bfloat16 (what ``trainer.precision: bf16-mixed`` does). With two or more ``--particles``
values, ``scaling`` gives per head the least-squares exponents of the median step time against
hits and against edges, of the step and peak memory against hits, and of the edges against
hits (:func:`scaling`): 1 is linear.
    python -m benchmarks.edge_head --device cuda --config configs/finetune/trackml_gpu.yaml \\
        --particles 1000,10000

Prints one JSON document. A size or head that fails (out of memory on a large event, say) becomes
a row with ``error`` and the others go on; ``--out`` is rewritten after every row, so a run cut
short by a time limit keeps the rows it finished.
"""
from __future__ import annotations

import argparse
import json
from typing import Optional

import torch

from benchmarks import common

DEFAULT_CONFIG = common.ROOT / "configs" / "finetune" / "trackml_small.yaml"
HEADS = ("mlp", "interaction", "segment_pairs")


def bench_head(batch, model_args: dict, head: str, device: torch.device, *, warmup: int,
               steps: int, clip: Optional[float], mode: str = "train",
               autocast: Optional[str] = None) -> dict:
    torch.manual_seed(0)
    model, opt, sched = common.make_track_finding(model_args, device, head)
    if mode == "inference":
        model.eval()

        def infer(_i: int) -> None:
            with torch.no_grad():
                model.reconstruct(batch)

        _, timed, mem = common.time_calls(infer, device, warmup, steps)
        params = sum(p.numel() for p in model.head.parameters())
        del model, opt, sched
        common.free_device(device)
        return {**common.ms_summary(timed), **mem, "head_params": params}
    y = model.edge_targets(batch)
    losses = []

    def step(_i: int) -> None:
        losses.append(float(common.finetune_step(model, opt, sched, batch, bf16=autocast == "bf16",
                                                 clip=clip, targets=y)))

    _, timed, mem = common.time_calls(step, device, warmup, steps)
    params = sum(p.numel() for p in model.head.parameters())
    del model, opt, sched
    common.free_device(device)
    return {**common.ms_summary(timed), **mem, "head_params": params,
            "loss_first": round(losses[0], 5), "loss_last": round(losses[-1], 5)}


def scaling(rows: list[dict]) -> dict:
    """Per head, least-squares exponents (:func:`common.fit_exponent`; None with < 2 sizes) of
    the median step time against hits and against edges, of the step memory (``step_mib``)
    and the peak memory (``peak_mib``) against hits, and of the edges against hits (how the
    graph itself grows). Rows with an ``error`` are left out."""
    out = {}
    ok = [r for r in rows if "error" not in r]  # failed sizes are left out of the fit
    for head in dict.fromkeys(r["head"] for r in ok):
        rs = [r for r in ok if r["head"] == head]
        hits, edges = [r["hits"] for r in rs], [r["edges"] for r in rs]
        mem = [r.get("step_mib") for r in rs]
        out[head] = {
            "hits": hits, "edges": edges,
            "time_exponent": common.fit_exponent(hits, [r["ms_median"] for r in rs]),
            "time_exponent_vs_edges": common.fit_exponent(edges, [r["ms_median"] for r in rs]),
            # a size with no step memory measured leaves the exponent undefined
            "memory_exponent": (common.fit_exponent(hits, mem)
                                if all(m is not None and m > 0 for m in mem) else None),
            "peak_memory_exponent": common.fit_exponent(hits, [r.get("peak_mib") for r in rs]),
            "edges_exponent": common.fit_exponent(hits, edges)}
    return out


def main(argv: Optional[list[str]] = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--particles", default="150,1000", help="comma list, one event each")
    p.add_argument("--heads", default=",".join(HEADS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--autocast", choices=("bf16",), default=None,
                   help="train steps under bfloat16 autocast (default: float32)")
    p.add_argument("--mode", choices=("train", "inference"), default="train",
                   help="train: one fine-tuning step (default); inference: encoder, edge scores "
                        "and tracks of one event, no autograd")
    p.add_argument("--allocator", choices=common.ALLOCATORS, default="system",
                   help="memory allocator: the C library's (default) or mimalloc, which the "
                        "gnn-jepa command runs under (restarts this benchmark with it preloaded)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    common.use_allocator(args.allocator, "benchmarks.edge_head", restart=argv is None)
    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    if not heads or any(h not in HEADS for h in heads):
        raise SystemExit(f"--heads must list some of {HEADS}, got {args.heads!r}")
    device = common.resolve_device(args.device)
    cfg = common.load_config(args.config)
    rows: list[dict] = []
    doc = {"benchmark": "edge_head", "mode": args.mode, "autocast": args.autocast, "config": cfg["path"],
           "env": common.environment(device), "allocator": args.allocator, "warmup": args.warmup, "steps": args.steps,
           "rows": rows, "scaling": {}}
    for particles in [int(x) for x in args.particles.split(",") if x.strip()]:
        ref = None
        try:
            data = common.make_graph(common.simulate_data(cfg["simulator"], particles, args.seed),
                                     cfg["graph"], device)
            batch = common.as_batch(data)
            size = {"particles": particles, "hits": int(batch.num_nodes),
                    "edges": int(batch.edge_index.shape[1])}
        except Exception as exc:  # e.g. out of memory building a large graph: keep the other sizes
            rows.append({"particles": particles, **common.error_row(exc)})
            common.free_device(device)
            common.write_doc(doc, args.out)
            continue
        for head in heads:
            common.log(f"edge_head: {particles} particles, head {head}")
            try:
                row = {**size, "head": head,
                       **bench_head(batch, cfg["model"], head, device, warmup=args.warmup,
                                    steps=args.steps, clip=cfg["gradient_clip_val"], mode=args.mode,
                                    autocast=args.autocast)}
            except Exception as exc:
                row = {**size, "head": head, **common.error_row(exc)}
                common.free_device(device)
            else:
                if head == "mlp":
                    ref = row["ms_median"]
                row["ratio_vs_mlp"] = round(row["ms_median"] / ref, 3) if ref else None
            rows.append(row)
            # after every row, so that a step cut short by a time limit keeps what it finished
            doc["scaling"] = scaling(rows)
            common.write_doc(doc, args.out)
        del batch, data
    print(json.dumps(doc, indent=1))
    return doc


if __name__ == "__main__":
    main()
