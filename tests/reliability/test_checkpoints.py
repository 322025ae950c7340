"""Bad checkpoints: a file that is no checkpoint (a CSV, random bytes, empty, truncated, a
pickled list), one of another model or config, one with NaN weights or one that does not
exist, given as ``--model.pretrained`` or ``--ckpt_path``, is refused before any training
with an error naming the file and what is wrong with it.
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from gnn_jepa.cli import CheckpointMismatchError, main
from gnn_jepa.models.checkpoints import PretrainedLoadError
from gnn_jepa.models.track_finding import TrackFinding
from tests.reliability.conftest import (FINETUNE_CONFIG, PRETRAIN_CONFIG, ROOT, TINY_ENCODER,
                                        TINY_MODEL, config_with, jepa_checkpoint)


def _nan_weights(path: Path, key: str) -> Path:
    ckpt = torch.load(path, weights_only=False)
    ckpt["state_dict"][key][0].fill_(float("nan"))
    torch.save(ckpt, path)
    return path


def _track_finding_checkpoint(path: Path) -> Path:
    model = TrackFinding(mode="scratch", encoder=TINY_ENCODER)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return path


def _truncated(path: Path) -> Path:
    jepa_checkpoint(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


#: name -> how to make the bad file at a path (``None``: it does not exist)
BAD_FILES = {
    "csv_file": lambda p: p.write_text("hit_id,x,y,z\n1,2.5,3.5,4.5\n"),
    "random_bytes": lambda p: p.write_bytes(random.Random(0).randbytes(4096)),
    "empty_file": lambda p: p.write_bytes(b""),
    "truncated": _truncated,
    "pickled_list": lambda p: torch.save([1, 2, 3], p),
    "nan_weights": None,  # per use: the tensor that matters there
    "missing": None,
}


def _bad_file(tmp_path: Path, case: str, nan_key: str, plain: bool = False) -> Path:
    path = tmp_path / f"{case}.ckpt"
    if case == "nan_weights":
        _nan_weights(jepa_checkpoint(path, cli=not plain), nan_key)
    elif BAD_FILES[case] is not None:
        BAD_FILES[case](path)
    return path


PRETRAINED = {
    "csv_file": "{p}: not a readable torch checkpoint (UnpicklingError: ",
    "random_bytes": "{p}: not a readable torch checkpoint (UnpicklingError: ",
    "empty_file": "{p}: not a readable torch checkpoint (EOFError: Ran out of input)",
    "truncated": "{p}: not a readable torch checkpoint (",
    "pickled_list": "{p}: holds a list, not a checkpoint dict",
    "nan_weights": "{p}: non-finite values (NaN or inf) in 1 encoder tensor(s) (input_proj.weight); "
                   "the pretraining diverged or the file is corrupt",
    "missing": "pretrained checkpoint {p} does not exist",
    "track_finding_checkpoint": "{p}: no 'target_encoder.*' weights (is it a JEPA pretraining "
                                "checkpoint?); first keys: ['tuned_threshold', 'encoder.input_proj.weight'",
}


@pytest.mark.parametrize("case", sorted(PRETRAINED))
def test_bad_pretrained_checkpoint_is_named(tmp_path, case):
    """``--model.pretrained``: each is a PretrainedLoadError naming the file. (A NaN encoder
    used to load and fail the first step with a NaN loss that blamed that step's events.)"""
    if case == "track_finding_checkpoint":
        path = _track_finding_checkpoint(tmp_path / "tf.ckpt")
    else:
        path = _bad_file(tmp_path, case, "target_encoder.input_proj.weight")
    with pytest.raises(PretrainedLoadError) as err:
        TrackFinding(encoder=TINY_ENCODER, pretrained=str(path))
    assert str(err.value).startswith(PRETRAINED[case].format(p=path)), str(err.value)


def test_pretrained_checkpoint_of_another_config_is_refused(tmp_path):
    ck = jepa_checkpoint(tmp_path / "jepa_d16.ckpt")
    with pytest.raises(PretrainedLoadError) as err:
        TrackFinding(encoder={**TINY_ENCODER, "d_model": 32}, pretrained=str(ck))
    msg = str(err.value)
    assert str(ck) in msg and "'d_model': (16, 32)" in msg
    ok = TrackFinding(encoder=TINY_ENCODER, pretrained=str(ck))  # the matching config loads
    sd = torch.load(ck, weights_only=False)["state_dict"]
    assert torch.equal(ok.encoder.input_proj.weight, sd["target_encoder.input_proj.weight"])
    with pytest.raises(PretrainedLoadError, match="no 'target_encoder.\\*' weights"):
        torch.save({"state_dict": {"head.w": torch.zeros(1)}}, tmp_path / "other.ckpt")
        TrackFinding(encoder=TINY_ENCODER, pretrained=str(tmp_path / "other.ckpt"))


def test_a_csv_given_as_pretrained_is_named_by_the_command(tmp_path, cli_argv):
    """Through ``gnn-jepa fit`` the loader's message survives jsonargparse's wrapping."""
    csv = tmp_path / "event000001000-hits.csv"
    csv.write_text("hit_id,x,y,z\n1,2.5,3.5,4.5\n")
    cfg = config_with(FINETUNE_CONFIG, tmp_path, **{"model.init_args.pretrained": str(csv)})
    with pytest.raises(ValueError) as err:
        main(["fit", "--config", str(cfg)])
    assert f"{csv}: not a readable torch checkpoint (UnpicklingError: " in str(err.value)
    assert not (tmp_path / "cache").exists()


CKPT_PATH = {
    "csv_file": (CheckpointMismatchError, "--ckpt_path {p}: not a readable torch checkpoint ("),
    "random_bytes": (CheckpointMismatchError, "--ckpt_path {p}: not a readable torch checkpoint ("),
    "empty_file": (CheckpointMismatchError, "--ckpt_path {p}: not a readable torch checkpoint (EOFError: "),
    "truncated": (CheckpointMismatchError, "--ckpt_path {p}: not a readable torch checkpoint ("),
    "pickled_list": (CheckpointMismatchError, "--ckpt_path {p}: holds a list, not a checkpoint dict"),
    "nan_weights": (CheckpointMismatchError, "checkpoint {p}: non-finite values (NaN or inf) in 1 "
                                             "tensor(s) (context_encoder.input_proj.weight)"),
    "missing": (FileNotFoundError, "Checkpoint file not found: {p}"),
}


@pytest.mark.parametrize("case", sorted(CKPT_PATH))
def test_bad_ckpt_path_is_named_before_training(tmp_path, cli_argv, case):
    """``gnn-jepa fit --ckpt_path``: a file that is no checkpoint used to fail inside torch
    (``mmap can only be used with files saved with ...``, ``OSError: [Errno 22]``, ``'list'
    object has no attribute 'get'``), a NaN checkpoint at the first step blaming its events."""
    expected, message = CKPT_PATH[case]
    path = _bad_file(tmp_path, case, "context_encoder.input_proj.weight", plain=True)
    cfg = config_with(PRETRAIN_CONFIG, tmp_path, **{"model.init_args.encoder": TINY_ENCODER,
                                                    "model.init_args.predictor": TINY_MODEL["predictor"]})
    with pytest.raises(expected) as err:
        main(["fit", "--config", str(cfg), "--ckpt_path", str(path)])
    assert str(err.value).startswith(message.format(p=path)), str(err.value)
    if case != "missing":  # (Lightning looks for the file only when it restores it)
        assert not (tmp_path / "cache").exists()  # refused before any data was prepared


@pytest.mark.parametrize("ckpt", ["file", "plain_trainer_file", "last"])
def test_fit_ckpt_path_of_another_config_is_refused_before_training(tmp_path, ckpt):
    """``--ckpt_path <file>``: LightningCLI would silently build the checkpoint's d_model=16
    instead of the given 32; ``--ckpt_path last`` (not parsed by LightningCLI) and a plain
    Trainer's checkpoint (which LightningCLI cannot parse) would fail inside Lightning's
    state_dict loading. All are refused up front, naming the file and the setting."""
    # default_root_dir/last.ckpt: what "last" finds
    ck = jepa_checkpoint(tmp_path / "last.ckpt", cli=ckpt != "plain_trainer_file")
    args = ["fit", "--config", str(ROOT / "configs/pretrain/trackml_small.yaml"),
            "--trainer.accelerator", "cpu", "--trainer.logger", "false", "--trainer.max_steps", "1",
            "--trainer.default_root_dir", str(tmp_path), "--data.cache_dir", str(tmp_path / "cache"),
            "--ckpt_path", "last" if ckpt == "last" else str(ck)]
    small = [f"--model.init_args.encoder.{k}={v}" for k, v in TINY_ENCODER.items() if k != "d_model"]
    small += ["--model.init_args.predictor.d_model=16", "--model.init_args.predictor.layers=1"]
    with pytest.raises(CheckpointMismatchError) as err:
        main([*args, *small, "--model.init_args.encoder.d_model", "32"])
    msg = str(err.value)
    assert str(ck) in msg
    if ckpt == "file":
        assert "encoder.d_model: 16 vs 32" in msg
    else:
        assert "'encoder.d_model': (16, 32)" in msg and "context_encoder.input_proj.weight" in msg
    assert not (tmp_path / "cache").exists()  # refused before any data was prepared
