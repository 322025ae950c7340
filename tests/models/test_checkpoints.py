"""Finding a run's best checkpoint (gnn_jepa/models/checkpoints.py), on hand-made folders;
the shipped configs' checkpoint callbacks in a real Trainer."""
import importlib
import os
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.loggers import CSVLogger

from gnn_jepa.models.checkpoints import best_checkpoint, checkpoint_step

ROOT = Path(__file__).resolve().parents[2]


def test_best_checkpoint_is_the_newest_runs_own(tmp_path):
    def run(version: int, *names: str) -> Path:
        folder = tmp_path / "finetune_x" / f"version_{version}" / "checkpoints"
        folder.mkdir(parents=True)
        for name in names:
            (folder / name).touch()
        os.utime(folder, (1000 + version, 1000 + version))
        return folder

    with pytest.raises(FileNotFoundError, match="no training run"):
        best_checkpoint(tmp_path)
    first = run(0, "epoch=3-step=20.ckpt", "last.ckpt")
    assert best_checkpoint(tmp_path) == first / "epoch=3-step=20.ckpt"
    run(1, "last.ckpt")  # a newer run that kept no best checkpoint: never the older one's
    with pytest.raises(FileNotFoundError, match="kept no best checkpoint"):
        best_checkpoint(tmp_path)
    assert checkpoint_step("x/epoch=9-step=50-v1.ckpt") == 50
    with pytest.raises(ValueError, match="no step"):
        checkpoint_step("last.ckpt")
    run(2, "epoch=1-step=10.ckpt", "epoch=2-step=20.ckpt", "last.ckpt")  # save_top_k above 1
    with pytest.raises(RuntimeError, match="expected one best checkpoint"):
        best_checkpoint(tmp_path)


def _checkpoint_callbacks(config: dict) -> list[pl.Callback]:
    out = []
    for cb in config["trainer"]["callbacks"]:
        if cb["class_path"].endswith(".ModelCheckpoint"):
            module, name = cb["class_path"].rsplit(".", 1)
            out.append(getattr(importlib.import_module(module), name)(**cb.get("init_args", {})))
    return out


MONITORED = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("configs/*/*.yaml")
                   if "monitor:" in p.read_text() and "ModelCheckpoint" in p.read_text())


class _Worsening(BoringModel):
    """Logs ``metric`` = -global_step at each validation: only the first one is the best."""

    def __init__(self, metric: str):
        super().__init__()
        self.metric = metric

    def validation_step(self, batch, batch_idx):
        self.log(self.metric, -float(self.global_step))
        return super().validation_step(batch, batch_idx)


@pytest.mark.parametrize("config", MONITORED)
def test_shipped_configs_keep_the_best_and_a_resumable_last_checkpoint(tmp_path, config):
    """With early stopping or a worsening metric, ``last.ckpt`` (what ``--ckpt_path last``
    resumes) must hold the last validated step, not the best one: Lightning 2.6 writes a
    monitored ModelCheckpoint's own ``save_last`` copy only when the metric improves."""
    cfg = yaml.safe_load((ROOT / config).read_text())
    every = cfg["trainer"]["val_check_interval"]
    monitored = [c for c in cfg["trainer"]["callbacks"] if "monitor" in c.get("init_args", {})
                 and c["class_path"].endswith(".ModelCheckpoint")]
    assert len(monitored) == 1, config
    trainer = pl.Trainer(max_steps=3 * every, val_check_interval=every, check_val_every_n_epoch=None,
                         limit_val_batches=1, callbacks=_checkpoint_callbacks(cfg),
                         logger=CSVLogger(tmp_path, name="run"), default_root_dir=tmp_path,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(_Worsening(monitored[0]["init_args"]["monitor"]))
    best = best_checkpoint(tmp_path)
    assert checkpoint_step(best) == every
    assert trainer.checkpoint_callback.best_model_path == str(best)  # what `test --ckpt_path best` uses
    lasts = list(tmp_path.glob("run/version_0/checkpoints/last*.ckpt"))
    assert [p.name for p in lasts] == ["last.ckpt"]
    assert torch.load(lasts[0], map_location="cpu", weights_only=False)["global_step"] == 3 * every
