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
with purging off keeps 150 steps of that fit at 1.6 GiB of peak RSS against 3.9 GiB, for a
fifth less CPU time in one side-by-side run (``python -m benchmarks.allocator``). On glibc
older than 2.28 (CentOS 7) the wheel does not install and pip builds it from source.

The allocator is chosen when a process starts (``LD_PRELOAD``). The ``gnn-jepa`` console
script is :func:`main` here: before anything heavy is imported, :func:`run_under_mimalloc`
starts the same script again, with the same interpreter options and arguments, with mimalloc
preloaded, when it is installed and ``LD_PRELOAD`` is empty (a preload of the user's own, say
jemalloc, is kept). It does so through ``exec``: the same process id, so a SIGTERM from SLURM
reaches it. ``python -m gnn_jepa.cli`` does the same after its imports.
``GNN_JEPA_ALLOCATOR=system`` keeps glibc's allocator. :func:`gnn_jepa.cli.main`
called from Python (a notebook, the tests) never restarts the process: start Python with
``LD_PRELOAD=<path>`` for the same effect, the path from :func:`mimalloc_library`.
Everything computed is the same with either allocator, bit for bit.
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Mapping, Optional, Sequence

__all__ = ["CHOICES", "ENV", "allocator_in_use", "main", "mimalloc_library", "run_under_mimalloc"]

#: The environment variable that chooses: ``mimalloc`` (unset or empty: the default, where
#: installed) or ``system`` (the C library's allocator); any other value is an error.
ENV = "GNN_JEPA_ALLOCATOR"
#: Its values.
CHOICES = ("system", "mimalloc")
#: mimalloc's ``MIMALLOC_PURGE_DELAY`` (ms) unless the environment sets one: -1 never hands
#: freed memory back to the system. Its default, 10 ms, gives pages back between the steps
#: that reuse them: a 1,000-particle fine-tuning step took 4.1 s instead of 2.5 s.
PURGE_DELAY = "-1"


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


def _choice(env: Mapping[str, str]) -> str:
    """``GNN_JEPA_ALLOCATOR``: ``"mimalloc"`` (unset or empty) or ``"system"``.

    Raises:
        SystemExit: any other value, named.
    """
    value = env.get(ENV, "").strip().lower() or "mimalloc"
    if value not in CHOICES:
        raise SystemExit(f"{ENV}={env[ENV]!r}: expected 'mimalloc' (the default) or 'system'")
    return value


def _restart_env(env: Mapping[str, str], library: Path) -> Optional[dict]:
    """The environment to restart with (``LD_PRELOAD`` = mimalloc, its purge delay), or
    ``None`` when no restart is due: opted out (``system``), or ``LD_PRELOAD`` already set
    (mimalloc after a restart, or the user's own allocator, which is kept), or a library path
    that ``LD_PRELOAD`` cannot hold (a space or colon splits it; a warning says so)."""
    if _choice(env) == "system" or env.get("LD_PRELOAD", "").strip():
        return None
    if any(c in str(library) for c in " \t:"):
        print(f"gnn-jepa: not using mimalloc: its path {str(library)!r} has a space or colon, "
              "which LD_PRELOAD cannot hold", file=sys.stderr)
        return None
    new = dict(env)
    new["LD_PRELOAD"] = str(library)
    new.setdefault("MIMALLOC_PURGE_DELAY", PURGE_DELAY)
    return new


def run_under_mimalloc(program: Sequence[str]) -> None:
    """Restart this process as ``python <interpreter options> <program> <sys.argv[1:]>``
    (``program``: ``[script]`` or ``["-m", module]``) with mimalloc preloaded, when on Linux,
    installed and due (module doc); otherwise return and let the caller go on."""
    if not sys.platform.startswith("linux"):
        return
    library = mimalloc_library()
    if library is None:
        _choice(os.environ)  # still refuse a misspelt choice
        return
    env = _restart_env(os.environ, library)
    if env is None:
        return
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    flags = subprocess._args_from_interpreter_flags()  # -u, -X ..., -W ... as given
    os.execve(sys.executable, [sys.executable, *flags, *program, *sys.argv[1:]], env)


def main() -> None:
    """The ``gnn-jepa`` console script: :func:`run_under_mimalloc` (restarting this very
    script), else the command in this process (:func:`gnn_jepa.cli.main`, imported only here,
    after the restart, since this launcher sits below every other module)."""
    run_under_mimalloc([sys.argv[0]])
    importlib.import_module("gnn_jepa.cli").main()
