"""Helpers shared by the benchmarks: configs, simulated events, timing, memory, the JEPA step.

* configs: :func:`load_config` (the parts of a ``gnn-jepa fit`` YAML a benchmark needs),
  :func:`override_encoder` (``--d-model`` & co. into the nested ``encoder`` block),
  :func:`bench_graph` and the argument parsers (``--modes``, ``--hits``, ``--max-neighbors``);
* events: :func:`simulate_data` (exact particle counts, no Poisson draw),
  :func:`hits_per_particle`, :func:`make_graph`, :func:`make_events`, :func:`as_batch`;
* measuring: :func:`time_calls` (synchronised wall times), :class:`PeakMemory` (CUDA
  ``max_memory_allocated`` or the CPU's peak RSS), :func:`ms_summary`,
  :func:`count_host_syncs`, :func:`dynamo_graph_count`;
* output: :func:`environment`, :func:`write_doc` (atomic rewrite after every row),
  :func:`error_row`, :func:`log`;
* the JEPA training step of ``train_step`` and ``dataloader``: :func:`make_jepa`,
  :func:`jepa_step`.
"""
from __future__ import annotations

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

import torch

from gnn_jepa import allocator as _allocator

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PRETRAIN_CONFIG = ROOT / "configs" / "pretrain" / "trackml_gpu.yaml"
DEFAULT_FINETUNE_CONFIG = ROOT / "configs" / "finetune" / "trackml_gpu.yaml"
#: Benchmark modes: precision, optionally + torch.compile of the encoder(s).
MODES = ("fp32", "bf16", "fp32+compile", "bf16+compile")
#: The DESIGN's reference degree (94k hits / 628k edges) is what a cap of 6 gives.
REFERENCE_MAX_NEIGHBORS = 6


# --------------------------------------------------------------------------- configs
def load_config(path: str | Path) -> dict:
    """The parts of a ``gnn-jepa fit`` YAML config a benchmark needs.

    The model's ``encoder.d_input`` is set from ``data.features`` when the config lists them,
    as the CLI links them.

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
    model = dict(model)
    data = cfg.get("data") or {}
    if data.get("features"):
        model["encoder"] = {**(model.get("encoder") or {}), "d_input": len(data["features"])}
    return {"model": model, "graph": dict(data.get("graph") or {}),
            "simulator": dict(data.get("simulator") or {"preset": "trackml"}),
            "gradient_clip_val": (cfg.get("trainer") or {}).get("gradient_clip_val"),
            "path": str(path)}


def override_encoder(model_args: dict, **fields: Optional[int]) -> dict:
    """``model_args`` with the given (not ``None``) encoder fields set in its ``encoder`` block."""
    given = {k: v for k, v in fields.items() if v is not None}
    if not given:
        return dict(model_args)
    return {**model_args, "encoder": {**(model_args.get("encoder") or {}), **given}}


def with_total_steps(model_args: dict, total_steps: int) -> dict:
    """``model_args`` whose ``optim.total_steps`` is set (the config's, else ``total_steps``):
    with no Trainer to ask, the LR schedule needs it."""
    optim = dict(model_args.get("optim") or {})
    optim["total_steps"] = optim.get("total_steps") or total_steps
    return {**model_args, "optim": optim}


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
def fit_exponent(x: Iterable[Optional[float]], y: Iterable[Optional[float]]) -> Optional[float]:
    """Least-squares slope ``a`` of log y on log x (``y ~ x^a``), rounded to 3 decimals;
    points with a missing or non-positive value are left out, and ``None`` is returned with
    fewer than two points at distinct x."""
    pts = [(a, b) for a, b in zip(x, y) if a and b and a > 0 and b > 0]
    if len(pts) < 2 or len({a for a, _ in pts}) < 2:
        return None
    lx, ly = [math.log(a) for a, _ in pts], [math.log(b) for _, b in pts]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return round(sum((a - mx) * (b - my) for a, b in zip(lx, ly))
                 / sum((a - mx) ** 2 for a in lx), 3)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def proc_status_kib(field: str) -> Optional[int]:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``), ``None`` where unreadable."""
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
            rss = proc_status_kib("VmRSS")
            self.base = None if rss is None else rss / 1024

    def stop(self) -> dict:
        if self.device.type == "cuda":
            sync(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
            return {"peak_mib": round(peak, 1), "step_mib": round(peak - self.base, 1),
                    "memory_kind": "cuda_max_memory_allocated"}
        hwm = proc_status_kib("VmHWM")
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


# --------------------------------------------------------------------------- output
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


#: ``--allocator`` values: the C library's malloc, or mimalloc as the ``gnn-jepa`` command uses.
ALLOCATORS = _allocator.CHOICES


def use_allocator(name: str, module: str, restart: bool) -> str:
    """Make this benchmark (``python -m <module>``) run under allocator ``name``: for
    ``mimalloc`` with ``restart`` (run as a program, not called in-process) it restarts itself
    with mimalloc preloaded, as ``gnn-jepa`` does (:mod:`gnn_jepa.allocator`). Returns the
    allocator in use.

    Raises:
        SystemExit: mimalloc asked for but not installed or (without ``restart``) not loaded,
            or ``system`` asked for while ``LD_PRELOAD`` loads mimalloc.
    """
    if name not in ALLOCATORS:
        raise SystemExit(f"--allocator must be one of {ALLOCATORS}, got {name!r}")
    if name == "mimalloc" and _allocator.allocator_in_use() != "mimalloc":
        if _allocator.mimalloc_library() is None:
            raise SystemExit("--allocator mimalloc: cmeel-mimalloc is not installed")
        if restart:
            os.environ.pop(_allocator.ENV, None)
            _allocator.run_under_mimalloc(["-m", module])
    used = _allocator.allocator_in_use()
    if used != name:
        raise SystemExit(f"--allocator {name}: this process runs under {used} (LD_PRELOAD?)")
    return used


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


# --------------------------------------------------------------------------- the JEPA step
def make_jepa(model_args: dict, device: torch.device, total_steps: int = 1000):
    """JEPAPretraining with its optimizer and scheduler, as ``configure_optimizers`` makes them."""
    from gnn_jepa.models import JEPAPretraining

    model = JEPAPretraining(**with_total_steps(model_args, total_steps)).to(device).train()
    conf = model.configure_optimizers()
    return model, conf["optimizer"], conf["lr_scheduler"]["scheduler"]


def make_track_finding(model_args: dict, device: torch.device, head: Optional[str] = None,
                       total_steps: int = 1000):
    """A scratch :class:`~gnn_jepa.models.TrackFinding` from a fine-tuning config's model
    arguments (``pretrained``, ``mode`` and ``output_dir`` dropped; ``head``: another edge-head
    kind, the rest of the head block kept), with its optimizer and scheduler."""
    from gnn_jepa.models import TrackFinding

    args = {k: v for k, v in model_args.items() if k not in ("pretrained", "mode", "output_dir")}
    args["mode"] = "scratch"
    if head is not None:
        args["head"] = {**(args.get("head") or {}), "kind": head}
    model = TrackFinding(**with_total_steps(args, total_steps)).to(device).train()
    conf = model.configure_optimizers()
    return model, conf["optimizer"], conf["lr_scheduler"]["scheduler"]


def finetune_step(model, optimizer, scheduler, batch, *, bf16: bool, clip: Optional[float],
                  targets: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One track-finding optimisation step, as Lightning runs it; returns the detached loss.

    Edge loss on ``model.edge_targets(batch)`` (or the given ``targets``; the forward in bf16
    autocast with ``bf16``) -> ``backward`` -> gradient-norm clipping -> optimizer and scheduler
    step, ``zero_grad``.
    """
    y = model.edge_targets(batch) if targets is None else targets
    with torch.autocast(batch.pos.device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = model.edge_loss(model(batch), y)
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


#: What :func:`jepa_step`'s ``tick`` separates.
PHASES = ("masks", "forward", "backward", "optimizer", "ema")


def jepa_step(model, optimizer, scheduler, batch, step: int, *, bf16: bool,
              clip: Optional[float], tick: Optional[Callable[[], None]] = None) -> torch.Tensor:
    """One JEPA optimisation step, as Lightning runs it; returns the detached loss.

    ``model.masker(batch, model.mask_generator(step))`` -> ``model.jepa_forward`` (in bf16
    autocast with ``bf16``) -> ``backward`` -> gradient-norm clipping -> optimizer and
    scheduler step, ``zero_grad`` -> ``model.ema_update``. ``tick``, when given, is called at
    the start and after each of :data:`PHASES`: the phase breakdown.
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
