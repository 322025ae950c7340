"""Distributed pretraining: ``gnn-jepa fit --trainer.devices 2 --trainer.strategy ddp`` on CPU (gloo).

One subprocess (Lightning launches the second rank itself) runs the shipped small
pretraining config, shrunk, for 3 steps. The test-only callback below (imported by both
ranks, ``PYTHONPATH=tests``) writes per rank: the training and validation events it saw,
its final context/target encoder weights and its validation metrics. Checked:

* the EMA target encoder (and the DDP-synchronised context encoder) is bit-identical on
  both ranks: gradients are all-reduced, and the EMA update is computed from identical
  weights with the same momentum;
* each rank trains on different events, and together they cover the epoch exactly once;
* validation metrics (logged with ``sync_dist=True``) are identical on both ranks although
  each rank validated a different event.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
GNN_JEPA = os.path.join(os.path.dirname(sys.executable), "gnn-jepa")
NUM_TRAIN, STEPS = 4, 3


class RankProbe(pl.Callback):
    """Per rank: events seen (train/val), final encoder weights and validation metrics."""

    def __init__(self, out: str):
        self.out = Path(out)
        self.train: list[list[int]] = []
        self.val: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train.append([trainer.current_epoch, *batch.event_id.tolist()])

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self.val.extend(batch.event_id.tolist())

    def on_train_end(self, trainer, pl_module):
        r = trainer.global_rank
        torch.save({"target": pl_module.target_encoder.state_dict(),
                    "context": pl_module.context_encoder.state_dict()}, self.out / f"rank{r}.pt")
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        (self.out / f"rank{r}.json").write_text(json.dumps(
            {"world_size": trainer.world_size, "global_step": trainer.global_step,
             "train": self.train, "val": self.val, "metrics": metrics}))


def _run_ddp(tmp_path: Path, config: str, *extra: str) -> None:
    """``gnn-jepa fit --config`` on 2 CPU ranks (gloo), in its own session, within 400 s."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    # its own session: on a timeout the whole group (rank 0 and the rank 1 it launched) is killed
    proc = subprocess.Popen([GNN_JEPA, "fit", "--config", str(tmp_path / config),
                             "--trainer.accelerator", "cpu", "--trainer.devices", "2",
                             "--trainer.strategy", "ddp", *extra],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"DDP fit did not finish in 400 s:\n{out[-3000:]}")
    assert proc.returncode == 0, out[-6000:]


@pytest.mark.slow
def test_ddp_two_cpu_ranks(tmp_path):
    cfg = yaml.safe_load((ROOT / "configs/pretrain/trackml_small.yaml").read_text())
    tr = cfg["trainer"]
    tr.update(max_steps=STEPS, val_check_interval=STEPS, limit_val_batches=1, enable_progress_bar=False,
              log_every_n_steps=1, default_root_dir=str(tmp_path), num_sanity_val_steps=0)
    tr["logger"]["init_args"] = {"save_dir": str(tmp_path), "name": "logs"}
    tr["callbacks"] = [{"class_path": "test_ddp.RankProbe", "init_args": {"out": str(tmp_path)}}]
    cfg["model"]["init_args"].update(encoder={"d_model": 16, "d_embedding": 8, "n_layers": 1},
                                     predictor={"d_model": 16, "layers": 1}, probe_events=1)
    cfg["data"].update(simulator={"preset": "trackml", "num_particles": 20, "eta_range": [-2, 2]},
                       num_train=NUM_TRAIN, num_val=2, num_test=1, batch_size=1,
                       cache_dir=str(tmp_path / "cache"))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    _run_ddp(tmp_path, "config.yaml")

    info = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    weights = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [i["world_size"] for i in info] == [2, 2] and [i["global_step"] for i in info] == [STEPS] * 2

    # EMA target encoder (and context encoder) identical across ranks, bit for bit
    for part in ("target", "context"):
        assert weights[0][part].keys() == weights[1][part].keys()
        for k in weights[0][part]:
            assert torch.equal(weights[0][part][k], weights[1][part][k]), f"{part} {k} differs across ranks"
    assert any(not torch.equal(weights[0]["target"][k], weights[0]["context"][k]) for k in weights[0]["target"])

    # different events per rank; epoch 0 covered exactly once by the two ranks together
    epoch0 = [[e for rec in i["train"] if rec[0] == 0 for e in rec[1:]] for i in info]
    assert not set(epoch0[0]) & set(epoch0[1])
    assert sorted(epoch0[0] + epoch0[1]) == list(range(NUM_TRAIN))

    # metrics synced: same values on both ranks, though each rank validated another event
    assert info[0]["val"] and info[1]["val"] and info[0]["val"] != info[1]["val"]
    m0, m1 = info[0]["metrics"], info[1]["metrics"]
    assert "val/loss" in m0 and m0 == m1
