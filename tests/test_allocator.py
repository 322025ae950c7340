"""The gnn-jepa command restarts itself under mimalloc, and nothing it computes changes."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gnn_jepa import allocator
from gnn_jepa.allocator import ENV, PURGE_DELAY, _restart_env, mimalloc_library

LIB = Path("/opt/lib/libmimalloc.so")


def test_restart_env_preloads_mimalloc_only_when_nothing_is_preloaded(capsys):
    env = _restart_env({"PATH": "/bin"}, LIB)
    assert env == {"PATH": "/bin", "LD_PRELOAD": "/opt/lib/libmimalloc.so",
                   "MIMALLOC_PURGE_DELAY": PURGE_DELAY}
    assert PURGE_DELAY == "-1"  # freed memory stays with mimalloc for the next step
    assert _restart_env({"MIMALLOC_PURGE_DELAY": "100"}, LIB)["MIMALLOC_PURGE_DELAY"] == "100"
    # the restarted process, the user's own allocator, and an opt-out never restart
    assert _restart_env(env, LIB) is None
    assert _restart_env({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, LIB) is None
    assert _restart_env({ENV: "system"}, LIB) is None and _restart_env({ENV: " System "}, LIB) is None
    assert _restart_env({ENV: "mimalloc"}, LIB) is not None
    with pytest.raises(SystemExit, match="GNN_JEPA_ALLOCATOR='glibc': expected 'mimalloc'"):
        _restart_env({ENV: "glibc"}, LIB)
    # LD_PRELOAD splits at spaces and colons: such a path is not used, and that is said
    assert _restart_env({}, Path("/home/John Doe/libmimalloc.so")) is None
    assert "has a space or colon" in capsys.readouterr().err


@pytest.fixture
def execs(monkeypatch):
    """``os.execve`` replaced by a recorder; mimalloc 'installed' at LIB, nothing preloaded."""
    calls = []
    monkeypatch.setattr(allocator.os, "execve", lambda *a: calls.append(a))
    monkeypatch.setattr(allocator, "mimalloc_library", lambda: LIB)
    monkeypatch.setattr(allocator.sys, "platform", "linux")
    for key in ("LD_PRELOAD", ENV, "MIMALLOC_PURGE_DELAY"):
        monkeypatch.delenv(key, raising=False)
    return calls


def test_restart_keeps_the_program_its_arguments_and_interpreter_options(execs, monkeypatch):
    monkeypatch.setattr(allocator.sys, "argv", ["/venv/bin/gnn-jepa", "fit", "--config", "a b.yaml"])
    monkeypatch.setattr(allocator.subprocess, "_args_from_interpreter_flags", lambda: ["-u", "-X", "faulthandler"])
    monkeypatch.setattr(allocator.sys, "stdout", None)  # a closed stdout is no error
    allocator.run_under_mimalloc(["/venv/bin/gnn-jepa"])
    (exe, argv, env), = execs
    assert exe == sys.executable
    assert argv == [sys.executable, "-u", "-X", "faulthandler", "/venv/bin/gnn-jepa", "fit",
                    "--config", "a b.yaml"]
    assert env["LD_PRELOAD"] == str(LIB) and env["MIMALLOC_PURGE_DELAY"] == "-1"
    allocator.run_under_mimalloc(["-m", "gnn_jepa.cli"])
    assert execs[1][1][-5:] == ["-m", "gnn_jepa.cli", "fit", "--config", "a b.yaml"]


def test_no_restart_when_opted_out_preloaded_or_called_in_process(execs, monkeypatch, capsys):
    monkeypatch.setenv(ENV, "system")
    allocator.run_under_mimalloc(["x"])
    monkeypatch.setenv(ENV, "")
    monkeypatch.setenv("LD_PRELOAD", str(LIB))
    allocator.run_under_mimalloc(["x"])
    monkeypatch.delenv("LD_PRELOAD")
    from gnn_jepa.cli import main
    main(["--help"])  # in-process: the command runs here, never restarts
    assert "usage: gnn-jepa <command>" in capsys.readouterr().out
    assert execs == []


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux") or mimalloc_library() is None,
                    reason="cmeel-mimalloc is installed on Linux x86_64 only")
def test_console_script_runs_fit_under_mimalloc_with_identical_results(tmp_path):
    script = Path(sys.executable).with_name("gnn-jepa")
    root = Path(__file__).resolve().parents[1]
    weights = {}
    for choice in ("mimalloc", "system"):
        out = tmp_path / choice
        env = {**os.environ, ENV: choice, "OMP_NUM_THREADS": "1"}
        env.pop("LD_PRELOAD", None)
        run = subprocess.run(
            [str(script), "fit", "--config", str(root / "configs/finetune/trackml_small.yaml"),
             "--model.mode", "scratch", "--model.encoder.d_model", "16", "--model.encoder.d_embedding", "8",
             "--model.encoder.n_layers", "1", "--model.head.hidden", "16",
             "--data.simulator", '{"preset": "trackml", "num_particles": 20, "eta_range": [-2, 2]}',
             "--data.num_train", "2", "--data.num_val", "1", "--data.num_test", "1",
             "--data.batch_size", "1", "--data.cache_dir", str(tmp_path / "cache"),
             "--trainer.max_steps", "4", "--trainer.val_check_interval", "2",
             "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
             "--trainer.logger.init_args.save_dir", str(out)],
            env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
        assert f"memory allocator: {choice}" in run.stderr, run.stderr[-3000:]
        last = next(out.rglob("last.ckpt"))
        weights[choice] = torch.load(last, weights_only=False, map_location="cpu")["state_dict"]
    a, b = weights["mimalloc"], weights["system"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the restarted script keeps its name in the help and errors
    help_run = subprocess.run([str(script), "fit", "--help"], capture_output=True, text=True,
                              timeout=300, env={**os.environ, "LD_PRELOAD": ""})
    assert help_run.returncode == 0 and help_run.stdout.startswith("usage: gnn-jepa"), help_run.stdout[:300]
