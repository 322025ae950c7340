"""The gnn-jepa command restarts itself under mimalloc, and nothing it computes changes."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gnn_jepa.allocator import ENV, PURGE_DELAY, _restart_env, allocator_in_use, mimalloc_library

LIB = Path("/opt/lib/libmimalloc.so")


def test_restart_env_prepends_mimalloc_once():
    env = _restart_env({"PATH": "/bin", "LD_PRELOAD": "/x/libfoo.so"}, LIB)
    assert env["LD_PRELOAD"] == "/opt/lib/libmimalloc.so /x/libfoo.so" and env["PATH"] == "/bin"
    assert _restart_env({}, LIB)["LD_PRELOAD"] == "/opt/lib/libmimalloc.so"
    # freed memory stays with mimalloc unless the user chose a purge delay
    assert env["MIMALLOC_PURGE_DELAY"] == PURGE_DELAY == "-1"
    assert _restart_env({"MIMALLOC_PURGE_DELAY": "100"}, LIB)["MIMALLOC_PURGE_DELAY"] == "100"
    # the restarted process, a preloaded one, and an opt-out never restart
    assert _restart_env(env, LIB) is None
    assert _restart_env({"LD_PRELOAD": "/usr/lib/libmimalloc.so.2"}, LIB) is None
    assert _restart_env({ENV: "system"}, LIB) is None
    assert _restart_env({ENV: " System "}, LIB) is None


def test_this_process_is_not_restarted():
    # pytest imports gnn_jepa.cli in process: no restart, the C library's allocator
    assert allocator_in_use() in ("system", "mimalloc")
    if "libmimalloc" not in os.environ.get("LD_PRELOAD", ""):
        assert allocator_in_use() == "system"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux") or mimalloc_library() is None,
                    reason="cmeel-mimalloc is installed on Linux x86_64 only")
def test_console_script_runs_fit_under_mimalloc_with_identical_results(tmp_path):
    script = Path(sys.executable).with_name("gnn-jepa")
    root = Path(__file__).resolve().parents[1]
    weights = {}
    for allocator in ("mimalloc", "system"):
        out = tmp_path / allocator
        env = {**os.environ, ENV: allocator, "OMP_NUM_THREADS": "1"}
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
        assert f"memory allocator: {allocator}" in run.stderr, run.stderr[-3000:]
        last = next(out.rglob("last.ckpt"))
        weights[allocator] = torch.load(last, weights_only=False, map_location="cpu")["state_dict"]
    a, b = weights["mimalloc"], weights["system"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
