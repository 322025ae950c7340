"""JEPA training-step benchmark: time and peak memory of one optimisation step vs event size.

One step is what ``gnn-jepa fit --config configs/pretrain/<x>.yaml`` runs per batch (one
event per batch, as in the configs), built from :class:`gnn_jepa.models.JEPAPretraining`
itself:

1. ``model.masker(batch, model.mask_generator(step))`` (fresh masks every step);
2. ``model.jepa_forward(batch, masks)`` (inside ``torch.autocast(bfloat16)`` with
   ``--bf16``, which is what Lightning's ``precision: bf16-mixed`` does);
3. ``loss.backward()``, gradient-norm clipping (the config's ``gradient_clip_val``);
4. AdamW ``step`` + LR-scheduler step from ``model.configure_optimizers()``, ``zero_grad``;
5. ``model.ema_update`` (the EMA update of the target encoder).

Events are simulated (``trackml`` preset, exact particle counts chosen from a calibrated
hits-per-particle ratio to hit the ``--hits`` targets) and their graph is built once, on
the benchmark device, outside the timed steps. ``--max-neighbors`` lists the graphs: ``0``
is the config's graph as it is (what training uses), ``k > 0`` the config's graph with its
``max_num_neighbors`` set to k and without its ``union`` members (``6`` gives ~7 edges per
hit, the degree of the DESIGN's reference measurement, 94k hits / 628k edges); rows say
which (``graph``: ``config``, ``k6``). The config's graph bounds the degree too (learned
frame + layer-pair filter, ~40 edges per hit at 10k particles): without a filter or a cap a
fixed-radius graph gains edges like hits^2.

Timing: ``--warmup`` untimed steps, then the median (and min, mean) of ``--steps`` timed
steps; on CUDA each step is bracketed by ``torch.cuda.synchronize()``. Memory: on CUDA
``torch.cuda.max_memory_allocated`` over the timed steps (``peak_mib``, everything live:
weights, optimizer state, the event) and its excess over what was allocated before them
(``step_mib``); on CPU the process's peak resident set (``VmHWM`` after resetting it via
``/proc/self/clear_refs``) over the timed steps and its excess over the resident set before
them; ``null`` where the kernel does not allow that reset. ``scaling`` holds log-log
least-squares exponents (time ~ hits^a) over the sizes >= ``--fit-from`` hits.

    python -m benchmarks.train_step --device cpu --hits 1000,2000,5000,10000,20000
    python -m benchmarks.train_step --device cuda --modes fp32,bf16,bf16+compile \\
        --hits 10000,50000,100000 --out gpu_out/train_step.json

Prints one JSON document on stdout (and rewrites ``--out`` after every row, so a run cut
short by a timeout still leaves its finished rows).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from typing import Any, Callable, Optional

import torch

from benchmarks.common import (DEFAULT_PRETRAIN_CONFIG, MODES, PHASES, REFERENCE_MAX_NEIGHBORS,
                               as_batch, bench_graph, count_host_syncs, dynamo_graph_count,
                               environment, error_row, fit_exponent, free_device, graph_label,
                               hits_per_particle, jepa_step, load_config, log, make_graph,
                               make_jepa, mode_flags, ms_summary, override_encoder, parse_caps,
                               parse_modes, parse_sizes, resolve_device, simulate_data, sync,
                               time_calls, write_doc)

DEFAULT_SIZES = {"cpu": "1000,2000,5000,10000,20000", "cuda": "1000,10000,20000,50000,100000"}


# --------------------------------------------------------------------------- scaling
def scaling(rows: list[dict], fit_from: int, time_key: str = "ms_median",
            memory_key: str = "step_mib") -> dict:
    """Exponents of time and memory vs hits and edges, per ``mode/graph``, over the rows with
    target >= fit_from."""
    out = {}

    def key(r: dict) -> str:
        return f"{r['mode']}/{r.get('graph', 'config')}"

    for k in dict.fromkeys(key(r) for r in rows):
        sel = [r for r in rows if key(r) == k and r.get(time_key) is not None
               and r["target_hits"] >= fit_from]
        out[k] = {
            "points": len(sel),
            "hits_range": [min(r["hits"] for r in sel), max(r["hits"] for r in sel)] if sel else None,
            "time_vs_hits": fit_exponent([r["hits"] for r in sel], [r[time_key] for r in sel]),
            "time_vs_edges": fit_exponent([r["edges"] for r in sel], [r[time_key] for r in sel]),
            "memory_vs_hits": fit_exponent([r["hits"] for r in sel],
                                           [r.get(memory_key) for r in sel]),
        }
    return out


# --------------------------------------------------------------------------- the step
def compile_encoders(model, dynamic: Optional[bool]) -> None:
    """torch.compile the context and target encoders in place (parameters unchanged)."""
    model.context_encoder.compile(dynamic=dynamic)
    model.target_encoder.compile(dynamic=dynamic)


def phase_breakdown(step_fn: Callable[[int, Callable[[], None]], Any], device: torch.device,
                    first_step: int, steps: int) -> dict:
    """Median ms of each phase over ``steps`` extra steps, synchronising at every boundary
    (so the phases add up to a little more than an unbroken step)."""
    if steps <= 0:
        return {}
    per: list[list[float]] = []
    for i in range(first_step, first_step + steps):
        marks: list[float] = []

        def tick():
            sync(device)
            marks.append(time.perf_counter())

        step_fn(i, tick)
        per.append([(b - a) * 1e3 for a, b in zip(marks[:-1], marks[1:])])
    return {name: round(statistics.median(p[k] for p in per), 3) for k, name in enumerate(PHASES)}


def bench_train(batch, model_args: dict, mode: str, device: torch.device, *, warmup: int,
                steps: int, clip: Optional[float], dynamic: Optional[bool],
                phase_steps: int = 3) -> dict:
    """Time ``steps`` JEPA steps of one mode on one event batch."""
    bf16, compiled = mode_flags(mode)
    torch.manual_seed(0)
    model, opt, sched = make_jepa(model_args, device)
    if compiled:
        compile_encoders(model, dynamic)
    graphs0 = dynamo_graph_count()

    def step(i: int, tick: Optional[Callable[[], None]] = None):
        return jepa_step(model, opt, sched, batch, i, bf16=bf16, clip=clip, tick=tick)

    counts = {}
    warm, timed, mem = time_calls(step, device, warmup, steps,
                                  after_warmup=lambda: counts.update(warm=dynamo_graph_count()))
    graphs1 = dynamo_graph_count()
    row = {**ms_summary(timed), **mem,
           "warmup_s": round(sum(warm), 3), "first_step_s": round(warm[0], 3) if warm else None}
    if compiled:
        # compile time ~ what the warm-up steps took beyond ordinary steps
        med = statistics.median(timed) if timed else 0.0
        row["compile_s_est"] = round(max(sum(warm) - len(warm) * med, 0.0), 3)
        # graphs compiled in warm-up, and during the timed steps (recompiles: they would
        # inflate the timed median; raise --warmup if this is not 0)
        row["graphs_compiled"] = None if graphs0 is None else counts["warm"] - graphs0
        row["graphs_compiled_while_timed"] = None if graphs0 is None else graphs1 - counts["warm"]
    n = warmup + steps
    row["phases_ms_median"] = phase_breakdown(step, device, n, phase_steps)
    loss = step(n + phase_steps)
    row["loss"] = round(float(loss), 5)
    row["finite"] = bool(math.isfinite(row["loss"]))
    row["host_syncs_per_step"] = count_host_syncs(lambda: step(n + phase_steps + 1), device)
    del model, opt, sched
    free_device(device)
    return row


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--hits", default=None,
                   help="target hits per event, comma list (default cpu: %s; cuda: %s)"
                        % (DEFAULT_SIZES["cpu"], DEFAULT_SIZES["cuda"]))
    p.add_argument("--modes", default=None, help=f"comma list of {MODES} (default from --bf16/--compile)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (mode bf16)")
    p.add_argument("--compile", action="store_true", help="torch.compile the encoders (mode ...+compile)")
    p.add_argument("--static", action="store_true",
                   help="compile with dynamic=False (default dynamic=True: masks change every step)")
    p.add_argument("--config", default=str(DEFAULT_PRETRAIN_CONFIG), help="pretraining YAML config")
    p.add_argument("--d-model", type=int, default=None)
    p.add_argument("--n-layers", type=int, default=None)
    p.add_argument("--heads", type=int, default=None)
    p.add_argument("--d-embedding", type=int, default=None)
    p.add_argument("--max-neighbors", default="0",
                   help="graphs, comma list: 0 = the config's graph as is, k = capped at k "
                        f"neighbours ({REFERENCE_MAX_NEIGHBORS}: the DESIGN's reference degree)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--phase-steps", type=int, default=3,
                   help="extra steps timed phase by phase (masks, forward, backward, optimizer, ema)")
    p.add_argument("--fit-from", type=int, default=10_000, help="fit exponents over sizes >= this")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", default=None, help="also write the JSON here (rewritten per row)")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    modes = parse_modes(args.modes) if args.modes else \
        [("bf16" if args.bf16 else "fp32") + ("+compile" if args.compile else "")]
    sizes = parse_sizes(args.hits or DEFAULT_SIZES["cuda" if device.type == "cuda" else "cpu"])
    cfg = load_config(args.config)
    model_args = override_encoder(cfg["model"], d_model=args.d_model, n_layers=args.n_layers,
                                  heads=args.heads, d_embedding=args.d_embedding)
    graphs = {graph_label(c): bench_graph(cfg["graph"], c) for c in parse_caps(args.max_neighbors)}
    clip = cfg["gradient_clip_val"]
    doc = {"benchmark": "train_step", "env": environment(device),
           "config": {"path": cfg["path"], "model": model_args, "gradient_clip_val": clip,
                      "simulator": cfg["simulator"], "graphs": graphs, "modes": modes,
                      "warmup": args.warmup, "steps": args.steps, "seed": args.seed,
                      "compile_dynamic": not args.static},
           "rows": [], "scaling": {}}
    # All events first, then modes outer and sizes inner: a slow compile in a later mode
    # (or a timeout) cannot cost the eager rows of the large sizes.
    events = []
    hpp = hits_per_particle(cfg["simulator"], args.seed)
    for target in sizes:
        particles = max(1, round(target / hpp))
        data = simulate_data(cfg["simulator"], particles, args.seed)
        for label, graph in graphs.items():
            base = {"graph": label, "target_hits": target, "particles": particles,
                    "hits": int(data.num_nodes)}
            try:
                g = make_graph(data, graph, device)
                base["edges"] = int(g.edge_index.shape[1])
                events.append((base, as_batch(g), None))
            except Exception as exc:  # e.g. out of memory building a dense graph
                events.append((base, None, error_row(exc)))
                free_device(device)
            log(f"train_step: event {base}")
    def run(mode: str, base: dict, batch, failed: Optional[dict]) -> dict:
        if failed is not None:  # the graph could not be built
            return {"mode": mode, **base, **failed}
        try:
            return {"mode": mode, **base, **bench_train(
                batch, model_args, mode, device, warmup=args.warmup, steps=args.steps,
                clip=clip, dynamic=False if args.static else True, phase_steps=args.phase_steps)}
        except Exception as exc:  # OOM or a failure at one size: record it, go on
            free_device(device)
            return {"mode": mode, **base, **error_row(exc)}

    for mode in modes:
        for base, batch, failed in events:
            log(f"train_step: {mode} {base}")
            row = run(mode, base, batch, failed)
            doc["rows"].append(row)
            log(json.dumps(row))
            doc["scaling"] = scaling(doc["rows"], args.fit_from)
            write_doc(doc, args.out)
    json.dump(doc, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
