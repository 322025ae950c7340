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

    python benchmarks/train_step.py --device cpu --hits 1000,2000,5000,10000,20000
    python benchmarks/train_step.py --device cuda --modes fp32,bf16,bf16+compile \\
        --hits 10000,50000,100000 --out gpu_out/train_step.json

Prints one JSON document on stdout (and rewrites ``--out`` after every row, so a run cut
short by a timeout still leaves its finished rows).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_PRETRAIN_CONFIG = ROOT / "configs" / "pretrain" / "trackml_gpu.yaml"
#: Benchmark modes: precision, optionally + torch.compile of the encoder(s).
MODES = ("fp32", "bf16", "fp32+compile", "bf16+compile")
#: The DESIGN's reference degree (94k hits / 628k edges) is what a cap of 6 gives.
REFERENCE_MAX_NEIGHBORS = 6
DEFAULT_SIZES = {"cpu": "1000,2000,5000,10000,20000", "cuda": "1000,10000,20000,50000,100000"}


# --------------------------------------------------------------------------- configs
def load_config(path: str | Path) -> dict:
    """The parts of a ``gnn-jepa fit`` YAML config a benchmark needs.

    Returns:
        ``{"model": init_args, "graph": data.graph, "simulator": data.simulator,
        "gradient_clip_val": trainer.gradient_clip_val, "path": str}``.

    Raises:
        ValueError: naming the file and the missing key.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config {path} does not exist")
    cfg = yaml.safe_load(path.read_text()) or {}
    model = (cfg.get("model") or {}).get("init_args")
    if model is None:
        raise ValueError(f"config {path}: no model.init_args")
    data = cfg.get("data") or {}
    return {"model": dict(model), "graph": dict(data.get("graph") or {}),
            "simulator": dict(data.get("simulator") or {"preset": "trackml"}),
            "gradient_clip_val": (cfg.get("trainer") or {}).get("gradient_clip_val"),
            "path": str(path)}


def bench_graph(config_graph: dict, max_neighbors: int) -> dict:
    """BuildGraph keyword arguments: the config's graph (0), or its own radius graph capped
    at ``max_neighbors`` without the ``union`` members, so the degree is the cap's."""
    graph = dict(config_graph)
    if max_neighbors < 0:
        raise ValueError(f"--max-neighbors must be >= 0, got {max_neighbors}")
    if max_neighbors:
        graph["max_num_neighbors"] = int(max_neighbors)
        graph.pop("union", None)
    return graph


def parse_caps(text: str) -> list[int]:
    """``--max-neighbors`` list: 0 = the config's graph, k > 0 = capped at k neighbours."""
    try:
        caps = [int(c) for c in str(text).split(",") if c.strip()]
    except ValueError:
        raise ValueError(f"--max-neighbors must be a comma list of integers, got {text!r}") from None
    if not caps or min(caps) < 0:
        raise ValueError(f"--max-neighbors must list integers >= 0, got {text!r}")
    return caps


def graph_label(cap: int) -> str:
    return "config" if cap == 0 else f"k{cap}"


def parse_modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"unknown mode(s) {bad or text!r}; choose from {MODES}")
    return modes


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(float(s)) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--hits must be a comma list of hit counts, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--hits must list positive hit counts, got {text!r}")
    return sizes


def mode_flags(mode: str) -> tuple[bool, bool]:
    """(bf16, compile) of a mode name."""
    return mode.startswith("bf16"), mode.endswith("+compile")


# --------------------------------------------------------------------------- events
def simulator_for(simulator: dict, particles: int):
    from gnn_jepa.data.simulator import Simulator

    kw = {k: v for k, v in simulator.items() if k not in ("preset", "num_particles")}
    # An exact particle count (no Poisson draw): a size is then the same in every run.
    kw.update(num_particles=int(particles), poisson=False)
    return Simulator.from_preset(simulator.get("preset", "trackml"), **kw)


def hits_per_particle(simulator: dict, seed: int, particles: int = 500) -> float:
    """Mean hits per particle (noise included) of one calibration event."""
    ev = simulator_for(simulator, particles).simulate(seed=seed, event_id=0)
    return len(ev.hits) / particles


def simulate_data(simulator: dict, particles: int, seed: int):
    """One simulated event as PyG Data (no graph yet)."""
    from gnn_jepa.data.convert import event_to_data

    return event_to_data(simulator_for(simulator, particles).simulate(seed=seed, event_id=seed))


def make_graph(data, graph: dict, device: torch.device):
    """The event on ``device`` with its graph (BuildGraph runs on ``device``)."""
    from gnn_jepa.graph.transform import BuildGraph

    return BuildGraph(**graph)(data.clone().to(device))


def make_events(simulator: dict, targets: list[int], seed: int, graph: dict,
                device: torch.device) -> Iterable[tuple[int, int, Any]]:
    """Yield (target hits, particles, event Data with graph on device) for each target."""
    hpp = hits_per_particle(simulator, seed)
    for target in targets:
        particles = max(1, round(target / hpp))
        data = simulate_data(simulator, particles, seed)
        yield target, particles, make_graph(data, graph, device)


def as_batch(data):
    """A one-event PyG Batch (``batch``, ``num_graphs``), like the DataLoader yields."""
    from torch_geometric.data import Batch

    return Batch.from_data_list([data])


# --------------------------------------------------------------------------- measuring
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status_kib(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_rss_peak() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """Peak memory over a timed section.

    CUDA: ``max_memory_allocated`` after ``reset_peak_memory_stats`` (everything live counts).
    CPU: the peak resident set size (VmHWM) after resetting it, since tracemalloc does not
    see torch's allocations. ``step_mib`` is the peak minus the level at ``start``.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.base: Optional[float] = None
        self.ok = True

    def start(self) -> None:
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            self.ok = _reset_rss_peak()
            rss = _proc_status_kib("VmRSS")
            self.base = None if rss is None else rss / 1024

    def stop(self) -> dict:
        if self.device.type == "cuda":
            sync(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
            return {"peak_mib": round(peak, 1), "step_mib": round(peak - self.base, 1),
                    "memory_kind": "cuda_max_memory_allocated"}
        hwm = _proc_status_kib("VmHWM")
        if not self.ok or hwm is None or self.base is None:
            return {"peak_mib": None, "step_mib": None, "memory_kind": "unavailable"}
        return {"peak_mib": round(hwm / 1024, 1), "step_mib": round(hwm / 1024 - self.base, 1),
                "memory_kind": "cpu_peak_rss"}


def time_calls(fn: Callable[[int], Any], device: torch.device, warmup: int, steps: int,
               after_warmup: Optional[Callable[[], None]] = None
               ) -> tuple[list[float], list[float], dict]:
    """Run ``fn(i)`` ``warmup`` then ``steps`` times; wall seconds of each (synchronised).
    ``after_warmup`` is called between the two (untimed).

    Returns:
        (warmup times, timed times, memory dict of the timed calls).
    """
    warm, timed = [], []
    for i in range(warmup):
        sync(device)
        t0 = time.perf_counter()
        fn(i)
        sync(device)
        warm.append(time.perf_counter() - t0)
    if after_warmup is not None:
        after_warmup()
    mem = PeakMemory(device)
    mem.start()
    for i in range(warmup, warmup + steps):
        sync(device)
        t0 = time.perf_counter()
        fn(i)
        sync(device)
        timed.append(time.perf_counter() - t0)
    return warm, timed, mem.stop()


def ms_summary(times: list[float]) -> dict:
    if not times:
        return {"ms_median": None, "ms_min": None, "ms_mean": None}
    return {"ms_median": round(statistics.median(times) * 1e3, 3),
            "ms_min": round(min(times) * 1e3, 3),
            "ms_mean": round(statistics.fmean(times) * 1e3, 3)}


def count_host_syncs(fn: Callable[[], Any], device: torch.device) -> Optional[int]:
    """Number of host-device synchronisations in one call of ``fn`` (CUDA only, else None).

    Uses ``torch.cuda.set_sync_debug_mode("warn")``, which warns at every synchronising
    op (``.item()``, ``bool(tensor)``, ``nonzero``, copies to the host...).
    """
    if device.type != "cuda":
        return None
    sync(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message).lower() for w in caught)


def dynamo_graph_count() -> Optional[int]:
    """Graphs compiled by torch.compile so far in this process (None if unknown)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:  # pragma: no cover - very old torch
        return None
    return int(counters["stats"].get("unique_graphs", 0))


def fit_exponent(x: list[float], y: list[float]) -> Optional[float]:
    """Least-squares slope of log y on log x (y ~ x^a); None with < 2 usable points."""
    pts = [(a, b) for a, b in zip(x, y) if a and b and a > 0 and b > 0]
    if len(pts) < 2 or len({a for a, _ in pts}) < 2:
        return None
    lx, ly = np.log([a for a, _ in pts]), np.log([b for _, b in pts])
    return round(float(np.polyfit(lx, ly, 1)[0]), 3)


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


def environment(device: torch.device) -> dict:
    env = {"host": platform.node(), "machine": platform.machine(), "python": platform.python_version(),
           "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
           "cpu_count": os.cpu_count(), "device": str(device),
           "loadavg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
    try:
        import torch_geometric

        env["torch_geometric"] = torch_geometric.__version__
    except ImportError:  # pragma: no cover
        pass
    if device.type == "cuda":
        env["cuda_device"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but torch.cuda.is_available() is False")
    return device


def write_doc(doc: dict, out: Optional[str]) -> None:
    """Atomically (re)write the JSON document to ``out`` (if given)."""
    if not out:
        return
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def error_row(exc: BaseException) -> dict:
    return {"error": f"{type(exc).__name__}: {exc}"[:800],
            "traceback_tail": traceback.format_exc().splitlines()[-6:]}


def free_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- the step
def make_model(model_args: dict, device: torch.device, total_steps: int = 1000):
    """JEPAPretraining with its optimizer and scheduler, as ``configure_optimizers`` makes them."""
    from gnn_jepa.models import JEPAPretraining

    args = dict(model_args)
    args["total_steps"] = args.get("total_steps") or total_steps  # no Trainer to ask
    model = JEPAPretraining(**args).to(device).train()
    conf = model.configure_optimizers()
    return model, conf["optimizer"], conf["lr_scheduler"]["scheduler"]


def compile_encoders(model, dynamic: Optional[bool]) -> None:
    """torch.compile the context and target encoders in place (parameters unchanged)."""
    model.context_encoder.compile(dynamic=dynamic)
    model.target_encoder.compile(dynamic=dynamic)


PHASES = ("masks", "forward", "backward", "optimizer", "ema")


def jepa_step(model, optimizer, scheduler, batch, step: int, *, bf16: bool,
              clip: Optional[float], tick: Optional[Callable[[], None]] = None) -> torch.Tensor:
    """One JEPA optimisation step (module docstring); returns the detached loss.

    ``tick``, when given, is called at the start and after each of :data:`PHASES` (masks,
    forward, backward, clip + optimizer + scheduler, EMA): the phase breakdown.
    """
    tick = tick or (lambda: None)
    dev = batch.pos.device
    tick()
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
        masks = model.masker(batch, model.mask_generator(step))
        tick()
        out = model.jepa_forward(batch, masks)
    tick()
    loss = out["loss"]
    loss.backward()
    tick()
    if clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    tick()
    model.ema_update(step)
    tick()
    return loss.detach()


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
    model, opt, sched = make_model(model_args, device)
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
    model_args = dict(cfg["model"])
    for key in ("d_model", "n_layers", "heads", "d_embedding"):
        if getattr(args, key) is not None:
            model_args[key] = getattr(args, key)
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
