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

from gnn_jepa.models.checkpoints import best_checkpoint, checkpoint_step, final_checkpoint

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


def test_final_checkpoint_is_the_newest_runs_last(tmp_path):
    with pytest.raises(FileNotFoundError, match="no training run"):
        final_checkpoint(tmp_path)
    for version, names in ((0, ("epoch=3-step=20.ckpt", "last.ckpt")), (1, ("last-v1.ckpt",))):
        folder = tmp_path / "pretrain_x" / f"version_{version}" / "checkpoints"
        folder.mkdir(parents=True)
        for name in names:
            (folder / name).touch()
        os.utime(folder, (1000 + version, 1000 + version))
        if version == 0:
            assert final_checkpoint(tmp_path) == folder / "last.ckpt"
    # the newest run wrote no last.ckpt: an error, never the older run's
    with pytest.raises(FileNotFoundError, match="wrote no last.ckpt"):
        final_checkpoint(tmp_path)


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


class _PeakAtTwo(BoringModel):
    """Logs ``metric`` = -|global step - 2 ``every``| at each validation: it improves up to
    the 2nd validation (step 2 ``every``) and worsens after. Constant learning rate and the
    same batch every step, so every step moves the weights and a resumed fit sees the data
    an uninterrupted one does wherever Lightning restarts the epoch."""

    def __init__(self, metric: str, every: int):
        super().__init__()
        self.metric, self.every = metric, every

    def validation_step(self, batch, batch_idx):
        self.log(self.metric, -abs(float(self.global_step) - 2 * self.every))
        return super().validation_step(batch, batch_idx)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.linspace(-1, 1, 32).expand(8, 32).clone(), batch_size=2)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


def _fit(root: Path, cfg: dict, steps: int, ckpt_path: str | None = None) -> pl.Trainer:
    every = cfg["trainer"]["val_check_interval"]
    monitor = next(c["init_args"]["monitor"] for c in cfg["trainer"]["callbacks"]
                   if "monitor" in c.get("init_args", {}))
    pl.seed_everything(0)
    trainer = pl.Trainer(max_steps=steps, val_check_interval=every, check_val_every_n_epoch=None,
                         limit_val_batches=1, callbacks=_callbacks(cfg), deterministic=True,
                         logger=CSVLogger(root, name="run"), default_root_dir=root,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(_PeakAtTwo(monitor, every), ckpt_path=ckpt_path)
    return trainer


def _state(path: Path) -> tuple[int, str, list[int]]:
    """global step, the monitored ModelCheckpoint's best path and early stopping's wait
    counts held by a checkpoint file."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    best = [v["best_model_path"] for k, v in ck["callbacks"].items() if k.startswith("ModelCheckpoint")]
    waits = [v["wait_count"] for k, v in ck["callbacks"].items() if k.startswith("EarlyStopping")]
    assert len(best) == 1
    return ck["global_step"], best[0], waits


@pytest.mark.parametrize("config", MONITORED)
def test_shipped_configs_keep_the_best_and_a_resumable_last_checkpoint(tmp_path, config):
    """``last.ckpt`` (what ``--ckpt_path last`` resumes) must hold the last validated step,
    with that validation's early-stopping count and best checkpoint, not the best step:
    Lightning 2.6 writes a monitored ModelCheckpoint's own ``save_last`` copy only when the
    metric improves. A fit resumed from it ends where an uninterrupted one does."""
    cfg = yaml.safe_load((ROOT / config).read_text())
    every = cfg["trainer"]["val_check_interval"]
    stopping = any(c["class_path"].endswith("EarlyStopping") for c in cfg["trainer"]["callbacks"])
    whole = _fit(tmp_path / "whole", cfg, 3 * every)
    ckpts = tmp_path / "whole" / "run" / "version_0" / "checkpoints"
    best = best_checkpoint(tmp_path / "whole")
    assert checkpoint_step(best) == 2 * every
    assert whole.checkpoint_callback.best_model_path == str(best)  # `test --ckpt_path best`
    assert sorted(p.name for p in ckpts.glob("*.ckpt")) == sorted([best.name, "last.ckpt"])
    assert _state(ckpts / "last.ckpt") == (3 * every, str(best), [1] * stopping)

    # stopped at the best validation: last.ckpt already knows it is the best
    _fit(tmp_path / "cut", cfg, 2 * every)
    last = tmp_path / "cut" / "run" / "version_0" / "checkpoints" / "last.ckpt"
    assert _state(last) == (2 * every, str(best_checkpoint(tmp_path / "cut")), [0] * stopping)
    resumed = _fit(tmp_path / "cut", cfg, 3 * every, ckpt_path=str(last))
    assert resumed.global_step == 3 * every
    for a, b in zip(whole.lightning_module.parameters(), resumed.lightning_module.parameters()):
        assert torch.equal(a, b)
    # one step fewer or more would show
    off = _fit(tmp_path / "off", cfg, 3 * every + 1)
    assert not all(torch.equal(a, b) for a, b in zip(whole.lightning_module.parameters(),
                                                       off.lightning_module.parameters()))


def test_last_checkpoint_skips_debug_runs_and_follows_epoch_end_validation(tmp_path):
    """No file in a ``fast_dev_run``; with validation at epoch ends, ``last.ckpt`` holds the
    early-stopping count of that epoch's validation, also when early stopping ends the fit."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from gnn_jepa.models.checkpoints import LastCheckpoint

    trainer = pl.Trainer(fast_dev_run=True, callbacks=[LastCheckpoint()], default_root_dir=tmp_path,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(BoringModel())
    assert not list(tmp_path.rglob("*.ckpt"))

    class Falling(BoringModel):  # best at the first epoch's validation, worse after
        def validation_step(self, batch, batch_idx):
            self.log("m", -float(self.current_epoch))
            return super().validation_step(batch, batch_idx)

    stop = EarlyStopping(monitor="m", mode="max", patience=2)
    trainer = pl.Trainer(max_epochs=10, limit_train_batches=2, limit_val_batches=1,
                         callbacks=[ModelCheckpoint(monitor="m", mode="max"), LastCheckpoint(), stop],
                         logger=CSVLogger(tmp_path, name="run"), default_root_dir=tmp_path,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(Falling())
    assert trainer.current_epoch == 3 and stop.wait_count == 2  # stopped by early stopping
    step, best, waits = _state(tmp_path / "run" / "version_0" / "checkpoints" / "last.ckpt")
    assert (step, waits) == (trainer.global_step, [2])
    assert checkpoint_step(best) == 2


def test_ckpt_path_last_finds_a_last_checkpoint_with_its_own_folder(tmp_path):
    from gnn_jepa.models.checkpoints import LastCheckpoint, find_last_checkpoint

    trainer = pl.Trainer(callbacks=[LastCheckpoint(dirpath=str(tmp_path / "elsewhere"))],
                         default_root_dir=tmp_path / "root", logger=False, accelerator="cpu")
    assert find_last_checkpoint(trainer) is None
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "last.ckpt").write_bytes(b"x")
    assert find_last_checkpoint(trainer) == str(tmp_path / "elsewhere" / "last.ckpt")
