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


def _callbacks(config: dict) -> list[pl.Callback]:
    """The config's checkpoint and early-stopping callbacks, instantiated."""
    out = []
    for cb in config["trainer"]["callbacks"]:
        if cb["class_path"].rsplit(".", 1)[1] in ("ModelCheckpoint", "LastCheckpoint", "EarlyStopping"):
            module, name = cb["class_path"].rsplit(".", 1)
            out.append(getattr(importlib.import_module(module), name)(**cb.get("init_args", {})))
    return out


MONITORED = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("configs/*/*.yaml")
                   if "monitor:" in p.read_text() and "ModelCheckpoint" in p.read_text())


class _Worsening(BoringModel):
    """Logs ``metric`` = -global_step at each validation: only the first one is the best.
    Every training batch is the same, so a resumed fit sees the data an uninterrupted one
    does wherever Lightning restarts the epoch."""

    def __init__(self, metric: str):
        super().__init__()
        self.metric = metric

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.linspace(-1, 1, 32).expand(8, 32).clone(), batch_size=2)

    def validation_step(self, batch, batch_idx):
        self.log(self.metric, -float(self.global_step))
        return super().validation_step(batch, batch_idx)


def _fit(root: Path, cfg: dict, steps: int, ckpt_path: str | None = None) -> pl.Trainer:
    every = cfg["trainer"]["val_check_interval"]
    monitor = next(c["init_args"]["monitor"] for c in cfg["trainer"]["callbacks"]
                   if "monitor" in c.get("init_args", {}))
    pl.seed_everything(0)
    trainer = pl.Trainer(max_steps=steps, val_check_interval=every, check_val_every_n_epoch=None,
                         limit_val_batches=1, callbacks=_callbacks(cfg), deterministic=True,
                         logger=CSVLogger(root, name="run"), default_root_dir=root,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(_Worsening(monitor), ckpt_path=ckpt_path)
    return trainer


@pytest.mark.parametrize("config", MONITORED)
def test_shipped_configs_keep_the_best_and_a_resumable_last_checkpoint(tmp_path, config):
    """With a worsening metric, ``last.ckpt`` (what ``--ckpt_path last`` resumes) must hold the
    last validated step with early stopping's count, not the best step: Lightning 2.6 writes a
    monitored ModelCheckpoint's own ``save_last`` copy only when the metric improves. A fit
    resumed from it ends where an uninterrupted one does."""
    cfg = yaml.safe_load((ROOT / config).read_text())
    every = cfg["trainer"]["val_check_interval"]
    whole = _fit(tmp_path / "whole", cfg, 3 * every)
    best = best_checkpoint(tmp_path / "whole")
    assert checkpoint_step(best) == every
    assert whole.checkpoint_callback.best_model_path == str(best)  # `test --ckpt_path best`
    lasts = list((tmp_path / "whole").glob("run/version_0/checkpoints/*.ckpt"))
    assert sorted(p.name for p in lasts) == sorted([best.name, "last.ckpt"])

    _fit(tmp_path / "cut", cfg, 2 * every)
    last = tmp_path / "cut" / "run" / "version_0" / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["global_step"] == 2 * every
    stopping = [v for k, v in state["callbacks"].items() if k.startswith("EarlyStopping")]
    has_stopping = any(c["class_path"].endswith("EarlyStopping") for c in cfg["trainer"]["callbacks"])
    assert [s["wait_count"] for s in stopping] == [1] * has_stopping  # the 2nd validation counted
    resumed = _fit(tmp_path / "cut", cfg, 3 * every, ckpt_path=str(last))
    assert resumed.global_step == 3 * every
    for a, b in zip(whole.lightning_module.parameters(), resumed.lightning_module.parameters()):
        assert torch.equal(a, b)
