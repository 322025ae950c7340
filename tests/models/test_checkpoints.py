"""Finding a run's best checkpoint (gnn_jepa/models/checkpoints.py), on hand-made folders."""
import os
from pathlib import Path

import pytest

from gnn_jepa.models.checkpoints import best_checkpoint, checkpoint_step


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
