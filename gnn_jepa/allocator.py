"""The ``gnn-jepa`` command runs under mimalloc on Linux: training memory that stays bounded.

PyTorch frees CPU tensors with ``free()``. With glibc's allocator, a training step's
hundreds of tensors of a few MiB, whose sizes change with every event, end up in the process
heap (glibc raises its ``mmap`` threshold to the largest block freed, up to 32 MiB), and the
small objects that outlive a step sit between them. The heap's free space splits into pieces
that later steps cannot reuse, so the heap grows for the whole fit and its freed pages stay
resident. Fine-tuning on 30 events of 150 particles reached 2.8 GB of resident memory after
60 steps and 3.9 GB after 190 (the live tensors between steps: under 200 MiB), and fits of a
few thousand steps reached 5.5-7.2 GB. glibc's own remedies cost more than they save: a fixed
``mmap`` threshold of 1-4 MiB doubles the CPU time of a step (every large tensor is mapped
and zeroed afresh), and ``malloc_trim`` every 10 steps leaves the growth almost as it was.
mimalloc (Microsoft's allocator, the ``cmeel-mimalloc`` wheel, a dependency on Linux x86_64)
with purging off keeps 150 steps of that fit at 1.6 GB of peak RSS against 4.0 GB, for 21%
less CPU time (``python -m benchmarks.allocator``).

The allocator is chosen when a process starts (``LD_PRELOAD``). The ``gnn-jepa`` console
script is :func:`main` here: before anything heavy is imported, :func:`run_under_mimalloc`
starts the command again as ``python -m gnn_jepa.cli`` with mimalloc preloaded, when it is
installed and not loaded yet (through ``exec``: the same process id, arguments and signals);
otherwise the command runs in this process. ``python -m gnn_jepa.cli`` does the same after its
imports. ``GNN_JEPA_ALLOCATOR=system`` keeps glibc's allocator. :func:`gnn_jepa.cli.main`
called from Python (a notebook, the tests) never restarts the process: start Python with
``LD_PRELOAD=<path>`` for the same effect, the path from :func:`mimalloc_library`.
Everything computed is the same with either allocator, bit for bit.
"""
from __future__ import annotations

import os
import runpy
import sys
from importlib import metadata
from pathlib import Path
from typing import Mapping, Optional, Sequence

__all__ = ["ENV", "allocator_in_use", "main", "mimalloc_library", "run_under_mimalloc"]

#: ``system`` keeps the C library's allocator; anything else (or unset): mimalloc where installed.
ENV = "GNN_JEPA_ALLOCATOR"
#: mimalloc's ``MIMALLOC_PURGE_DELAY`` (ms) unless the environment sets one: -1 never hands
#: freed memory back to the system. Its default, 10 ms, gives pages back between the steps
#: that reuse them: a 1,000-particle fine-tuning step took 4.1 s instead of 2.5 s.
PURGE_DELAY = "-1"
#: Set in the restarted process, so that it never restarts again.
_RESTARTED = "GNN_JEPA_ALLOCATOR_RESTARTED"


def mimalloc_library() -> Optional[Path]:
    """The installed ``libmimalloc.so`` of the ``cmeel-mimalloc`` wheel, or ``None``."""
    try:
        files = metadata.files("cmeel-mimalloc") or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == "libmimalloc.so":
            path = Path(f.locate())
            if path.is_file():
                return path.resolve()
    return None


def allocator_in_use() -> str:
    """``"mimalloc"`` when a mimalloc library is mapped into this process, else ``"system"``
    (read from ``/proc/self/maps``; ``"system"`` without procfs)."""
    try:
        with open("/proc/self/maps") as fh:
            return "mimalloc" if any("libmimalloc" in line for line in fh) else "system"
    except OSError:
        return "system"


def _restart_env(env: Mapping[str, str], library: Path) -> Optional[dict]:
    """The environment to restart with (mimalloc first in ``LD_PRELOAD``), or ``None`` when
    no restart is due: opted out, already restarted, or already preloaded."""
    if env.get(ENV, "").strip().lower() == "system" or env.get(_RESTARTED):
        return None
    preload = env.get("LD_PRELOAD", "")
    if "libmimalloc" in preload:
        return None
    new = dict(env)
    new["LD_PRELOAD"] = f"{library} {preload}".strip()
    new[_RESTARTED] = "1"
    new.setdefault("MIMALLOC_PURGE_DELAY", PURGE_DELAY)
    return new


def run_under_mimalloc(argv: Sequence[str] | None = None, module: str = "gnn_jepa.cli") -> None:
    """Restart this program (``python -m <module>`` with ``argv``, default ``sys.argv[1:]``)
    with mimalloc preloaded, when on Linux, installed and due (module doc); otherwise return
    and let the caller go on."""
    if not sys.platform.startswith("linux"):
        return
    library = mimalloc_library()
    if library is None:
        return
    env = _restart_env(os.environ, library)
    if env is None:
        return
    args = list(sys.argv[1:] if argv is None else argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *args], env)


def main() -> None:
    """The ``gnn-jepa`` console script: :func:`run_under_mimalloc`, else the command in this
    process (:mod:`gnn_jepa.cli` run as ``__main__``, which this launcher does not import)."""
    run_under_mimalloc()
    runpy.run_module("gnn_jepa.cli", run_name="__main__", alter_sys=True)
