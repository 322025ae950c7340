"""Checkpoints: one place that writes, reads and checks them.

* :func:`load_pretrained_head`: the edge head of a pretraining checkpoint (``target_head.*``):
  a segment-level JEPA's segment-pair trunk (all but the output layer), or an event-mixing
  pretraining's whole head.
* :func:`load_pretrained_encoder` / :func:`save_pretrained_encoder`: the encoder of a JEPA
  checkpoint (its EMA target encoder, ``target_encoder.*``) for fine-tuning, and the same
  layout written for an encoder alone; :func:`encoder_config_of` reads the encoder's
  :class:`~gnn_jepa.nn.encoder.EncoderConfig` from a checkpoint's hyperparameters (nested
  ``encoder`` block, or the flat keys of checkpoints written before it existed).
* :func:`check_checkpoint_fits`: a ``--ckpt_path`` that cannot load into the model, or holds
  NaN/inf weights, is an error naming the file and the settings that differ;
  :func:`read_checkpoint` reads one, naming a file that is no checkpoint.
* :func:`find_last_checkpoint`: what ``--ckpt_path last`` resumes from, across logger versions;
  :func:`best_checkpoint` / :func:`final_checkpoint`: the best and the final checkpoint of the
  newest run in a folder.
* :class:`SigtermCheckpoint`: a resumable ``last.ckpt`` when a fit is stopped by SIGTERM;
  :class:`LastCheckpoint`: one after every validation, next to a ModelCheckpoint that keeps
  only the best.
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import fields
from pathlib import Path
from typing import Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from gnn_jepa.models.guards import non_finite_tensors
from gnn_jepa.nn.encoder import EncoderConfig


def encoder_config_of(hparams: dict) -> Optional[EncoderConfig]:
    """The :class:`EncoderConfig` stored in a checkpoint's hyperparameters, ``None`` if none.

    Reads the nested ``encoder`` block, or the flat encoder keys (``d_model``, ``n_layers``,
    ...) of checkpoints written before the block existed."""
    block = hparams.get("encoder")
    if isinstance(block, EncoderConfig):
        return block
    if isinstance(block, dict):
        return EncoderConfig.coerce(block)
    names = [f.name for f in fields(EncoderConfig)]
    flat = {k: hparams[k] for k in names if k in hparams}
    return EncoderConfig.coerce(flat) if flat else None


class PretrainedLoadError(RuntimeError):
    """A pretrained checkpoint does not fit the encoder."""


def _read_pretrained(path: str) -> tuple[Path, dict, dict]:
    """``(path, state_dict, hyperparameters)`` of a pretraining checkpoint, or a clear error."""
    p = Path(path)
    if not p.is_file():
        raise PretrainedLoadError(f"pretrained checkpoint {p} does not exist")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as err:  # a CSV, a YAML, a truncated file, ...
        raise PretrainedLoadError(
            f"{p}: not a readable torch checkpoint ({type(err).__name__}: {err}); expected the "
            "last.ckpt of a JEPA pretraining run (gnn-jepa fit --config configs/pretrain/...)") from None
    if not isinstance(ckpt, dict):
        raise PretrainedLoadError(f"{p}: holds a {type(ckpt).__name__}, not a checkpoint dict")
    return p, ckpt.get("state_dict", ckpt), dict(ckpt.get("hyper_parameters", {}))


def _load_part(module: torch.nn.Module, part: dict, p: Path, what: str,
               skip: tuple[str, ...] = ()) -> None:
    """Load ``part`` into ``module`` strictly (keys starting with ``skip`` excepted), failing
    loudly on missing, unexpected, mis-shaped or non-finite tensors."""
    own = {k: v for k, v in module.state_dict().items() if not k.startswith(skip)}
    missing = sorted(set(own) - set(part))
    unexpected = sorted(set(part) - set(own))
    shapes = {k: (tuple(part[k].shape), tuple(own[k].shape)) for k in set(own) & set(part)
              if part[k].shape != own[k].shape}
    if missing or unexpected or shapes:
        raise PretrainedLoadError(f"{p}: {what} weights do not fit: missing={missing[:8]}, "
                                  f"unexpected={unexpected[:8]}, shape mismatches={shapes}")
    bad = non_finite_tensors(part)
    if bad:  # else the first training step fails with a NaN loss that seems to blame its events
        raise PretrainedLoadError(
            f"{p}: non-finite values (NaN or inf) in {len(bad)} {what} tensor(s) "
            f"({', '.join(bad[:5])}); the pretraining diverged or the file is corrupt: use an "
            "earlier checkpoint of that run")
    module.load_state_dict(part, strict=not skip)


def load_pretrained_encoder(encoder: torch.nn.Module, path: str,
                            expected: Optional[EncoderConfig] = None) -> dict:
    """Load the EMA target encoder (``target_encoder.*``) of a JEPA checkpoint into ``encoder``.

    Fails loudly when the file is not a torch checkpoint or has no such encoder, when its
    encoder config differs from ``expected``, or on any missing, unexpected or mis-shaped key.

    Returns:
        the checkpoint's hyperparameters.
    """
    p, state, hparams = _read_pretrained(path)
    prefix = "target_encoder."
    enc_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not enc_state:
        raise PretrainedLoadError(
            f"{p}: no '{prefix}*' weights (is it a JEPA pretraining checkpoint?); "
            f"first keys: {list(state)[:5]}")
    stored = encoder_config_of(hparams)
    if expected is not None and stored is not None:
        diff = {k: (v, getattr(expected, k)) for k, v in stored.as_dict().items()
                if v != getattr(expected, k)}
        if diff:
            raise PretrainedLoadError(
                f"{p}: encoder hyperparameters differ from this model's (checkpoint, model): {diff}")
    _load_part(encoder, enc_state, p, "encoder")
    return hparams


#: Edge-head parameters that pretraining never trains: the output layer.
HEAD_OUTPUT = ("out.", "out_norm.")


def load_pretrained_head(head: torch.nn.Module, path: str, expected: dict) -> str | None:
    """Load the pretrained edge head (``target_head.*``) of a checkpoint into ``head``: the
    segment-pair trunk of a segment-level JEPA checkpoint (everything but the output layer,
    which JEPA never trains), or the whole head, output layer included, where the checkpoint
    holds one (an event-mixing pretraining, whose output layer scores same-event segments).

    Args:
        head: the track-finding edge head.
        path: the pretraining checkpoint.
        expected: the head's settings (``HeadConfig`` as a dict); the checkpoint's must equal
            them, else the error names the ones that differ.

    Returns:
        ``None`` when the checkpoint holds no head (a hit-level JEPA checkpoint: only the
        encoder is pretrained), ``"trunk"`` or ``"whole"`` for what was loaded.
    """
    p, state, hparams = _read_pretrained(path)
    prefix = "target_head."
    part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not part:
        return None
    stored = hparams.get("head") or {}
    diff = {k: (stored.get(k), v) for k, v in expected.items() if stored.get(k) != v
            and k != "layers"}  # ``layers`` is the mlp head's only
    if diff:
        raise PretrainedLoadError(
            f"{p}: its segment-pair trunk was pretrained with other head settings than this "
            f"model's (checkpoint, model): {diff}; fine-tune with the pretraining's head block")
    whole = any(k.startswith(HEAD_OUTPUT) for k in part)
    _load_part(head, part, p, "edge head" if whole else "edge-head trunk",
               skip=() if whole else HEAD_OUTPUT)
    return "whole" if whole else "trunk"


def save_pretrained_encoder(path: str | Path, encoder_state: dict, encoder: EncoderConfig,
                            hparams: Optional[dict] = None) -> Path:
    """Write an encoder alone in the layout :func:`load_pretrained_encoder` reads: its weights
    as ``target_encoder.*``, its config as ``hyper_parameters["encoder"]`` (plus any other
    ``hparams`` to keep)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {f"target_encoder.{k}": v for k, v in encoder_state.items()},
                "hyper_parameters": {**(hparams or {}), "encoder": encoder.as_dict()}}, p)
    return p


class CheckpointMismatchError(ValueError):
    """A ``--ckpt_path`` checkpoint does not fit the model this command built (or is no
    readable checkpoint at all)."""


def read_checkpoint(path: str, *, weights_only: bool = False, what: str = "checkpoint") -> dict:
    """The dict a checkpoint file holds, its tensors memory-mapped (only their metadata is read)
    when the file is in torch's zip format.

    Args:
        path: the file.
        weights_only: ``torch.load``'s option.
        what: how messages name the file (``"--ckpt_path"``).

    Raises:
        CheckpointMismatchError: the file is no readable torch checkpoint (a CSV, random bytes,
            an empty or truncated file) or does not hold a dict; the message names it.
    """
    try:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
        except RuntimeError:  # a legacy (non-zip) file cannot be memory-mapped
            ckpt = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as err:
        text = " ".join(str(err).split())[:300]
        raise CheckpointMismatchError(
            f"{what} {path}: not a readable torch checkpoint ({type(err).__name__}: {text}); "
            "expected a .ckpt file written by gnn-jepa fit") from None
    if not isinstance(ckpt, dict):
        raise CheckpointMismatchError(f"{what} {path}: holds a {type(ckpt).__name__}, not a "
                                      "checkpoint dict")
    return ckpt


def find_last_checkpoint(trainer: "pl.Trainer") -> Optional[str]:
    """The newest ``last*.ckpt`` this run's configuration can have written, ``None`` if none.

    Lightning resolves ``ckpt_path="last"`` inside the *current* run's checkpoint folder,
    ``<save_dir>/<name>/version_<n>/checkpoints``. A resumed run gets a new logger version,
    so that folder is new and empty: Lightning would warn and silently train from scratch.
    This looks in every version folder of the logger (``<save_dir>/<name>/*/checkpoints``),
    in a ModelCheckpoint's explicit ``dirpath``, in ``default_root_dir`` and its
    ``checkpoints`` folder, at the explicit paths of every :class:`SigtermCheckpoint` and
    :class:`LastCheckpoint`, and at the ``hpc_ckpt_<n>.ckpt`` files of Lightning's SLURM
    auto-requeue, and returns the most recently modified file.
    """
    patterns: list[str] = []
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.dirpath:
            patterns.append(os.path.join(str(cb.dirpath), "last*.ckpt"))
    if trainer.loggers:
        logger = trainer.loggers[0]
        save_dir = logger.save_dir or trainer.default_root_dir
        patterns.append(os.path.join(str(save_dir), str(logger.name), "*", "checkpoints", "last*.ckpt"))
    patterns.append(os.path.join(str(trainer.default_root_dir), "checkpoints", "last*.ckpt"))
    patterns.append(os.path.join(str(trainer.default_root_dir), "last*.ckpt"))
    found = {p for pat in patterns for p in glob.glob(pat)
             if re.fullmatch(r"last(-v?\d+)?\.ckpt", os.path.basename(p))}
    # Lightning's SLURM auto-requeue checkpoints (written on SIGUSR1)
    found |= set(glob.glob(os.path.join(str(trainer.default_root_dir), "hpc_ckpt_*.ckpt")))
    for cb in trainer.callbacks:  # SigtermCheckpoint, LastCheckpoint
        if isinstance(cb, _FileCallback) and cb.dirpath is not None:
            path = cb.checkpoint_path(trainer)
            if os.path.isfile(path):
                found.add(path)
    return max(found, key=os.path.getmtime) if found else None


def _newest_run(root: str | Path) -> Path:
    """The ``checkpoints`` folder of the newest training run under ``root``: the most recently
    modified ``<root>/<name>/version_<n>/checkpoints`` folder (a logger's save_dir)."""
    runs = sorted(Path(root).glob("*/version_*/checkpoints"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise FileNotFoundError(f"no training run (*/version_*/checkpoints) under {root}")
    return runs[-1]


def best_checkpoint(root: str | Path) -> Path:
    """The checkpoint that the newest training run under ``root`` kept for its monitored
    metric (a ModelCheckpoint with ``save_top_k: 1``, as the shipped configs have).

    The newest run is the most recently modified ``<root>/<name>/version_<n>/checkpoints``
    folder (a logger's save_dir); the checkpoint is its one file besides ``last*.ckpt``. An
    older run's checkpoint is never returned in its place.

    Raises:
        FileNotFoundError: no run under ``root``, or its newest run kept no such checkpoint
            (no validation ran).
        RuntimeError: the newest run kept several (``save_top_k`` above 1).
    """
    run = _newest_run(root)
    found = [p for p in run.glob("*.ckpt") if not re.fullmatch(r"last(-v?\d+)?\.ckpt", p.name)]
    if not found:
        raise FileNotFoundError(f"{run}: the run kept no best checkpoint besides last.ckpt "
                                "(did any validation run?)")
    if len(found) > 1:
        raise RuntimeError(f"{run}: expected one best checkpoint besides last.ckpt, found "
                           f"{sorted(p.name for p in found)}")
    return found[0]


def final_checkpoint(root: str | Path) -> Path:
    """The ``last.ckpt`` of the newest training run under ``root`` (as :func:`best_checkpoint`
    finds it): with :class:`LastCheckpoint`, the state at the run's last validation, which
    for a pretraining that ran to ``max_steps`` is its final state, what fine-tuning starts
    from (docs/studies/event-mixing.md: the pretext's own validation AUC selects badly).

    Raises:
        FileNotFoundError: no run under ``root``, or its newest run wrote no ``last.ckpt``.
    """
    run = _newest_run(root)
    if not (run / "last.ckpt").is_file():
        raise FileNotFoundError(f"{run}: the run wrote no last.ckpt (did any validation run?)")
    return run / "last.ckpt"


def checkpoint_step(path: str | Path) -> int:
    """The global step in a ModelCheckpoint file name (``epoch=9-step=50.ckpt`` -> 50)."""
    match = re.search(r"step=(\d+)", Path(path).name)
    if match is None:
        raise ValueError(f"{path}: no step=<n> in the checkpoint's name")
    return int(match.group(1))


def _plain(value):
    """``value`` with tuples as lists, for comparing settings that went through YAML."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _flat(settings: dict, prefix: str = "") -> dict:
    """Nested blocks as dotted keys (``{"encoder": {"d_model": 16}}`` -> ``encoder.d_model``),
    so a difference names the field that differs, not the whole block."""
    out = {}
    for key, value in settings.items():
        if isinstance(value, dict) and value and key != "masker":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def settings_diff(a: dict, b: dict) -> dict:
    """``{dotted key: (a's value, b's value)}`` for every setting that differs (absent:
    ``"<absent>"``); private keys (``_class_path``, ...) are ignored."""
    fa = {k: v for k, v in _flat(a).items() if not k.startswith("_")}
    fb = {k: v for k, v in _flat(b).items() if not k.startswith("_")}
    return {k: (fa.get(k, "<absent>"), fb.get(k, "<absent>")) for k in sorted(set(fa) | set(fb))
            if _plain(fa.get(k, "<absent>")) != _plain(fb.get(k, "<absent>"))}


def check_checkpoint_fits(path: str, model: "pl.LightningModule") -> None:
    """Raise :class:`CheckpointMismatchError` when ``path``'s weights cannot load into ``model``,
    or hold a NaN or inf (a corrupt file, a diverged run), or the file is no checkpoint.

    Lightning loads ``--ckpt_path`` strictly; on a mismatch its error lists tensor shapes but
    not the file nor the configuration that differs. This names both.
    """
    ckpt = read_checkpoint(path)
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointMismatchError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
    own = model.state_dict()
    strict = getattr(model, "strict_loading", True)
    missing = sorted(set(own) - set(state)) if strict else []
    unexpected = sorted(set(state) - set(own)) if strict else []
    shapes = {k: (tuple(state[k].shape), tuple(own[k].shape)) for k in own  # module order
              if k in state and hasattr(state[k], "shape") and state[k].shape != own[k].shape}
    if not (missing or unexpected or shapes):
        bad = non_finite_tensors(state)
        if bad:  # else the first step fails with a NaN loss that seems to blame its events
            raise CheckpointMismatchError(
                f"checkpoint {path}: non-finite values (NaN or inf) in {len(bad)} tensor(s) "
                f"({', '.join(bad[:5])}); the file is corrupt or its run diverged: use an "
                "earlier checkpoint")
        return
    diff = settings_diff(dict(ckpt.get("hyper_parameters") or {}), dict(model.hparams))
    first_shapes = dict(list(shapes.items())[:4])
    raise CheckpointMismatchError(
        f"checkpoint {path} does not fit this {type(model).__name__}: hyperparameters that differ "
        f"(checkpoint, this run): {diff}; shape mismatches (checkpoint, model): {first_shapes} "
        f"({len(shapes)} in all); missing keys: {missing[:5]} ({len(missing)}); unexpected keys: "
        f"{unexpected[:5]} ({len(unexpected)}). Resume with the configuration the checkpoint was "
        "trained with, or pass --ckpt_path null to start afresh.")


class _FileCallback:
    """``dirpath`` / ``filename`` of a callback that writes one checkpoint file."""

    def __init__(self, dirpath: Optional[str] = None, filename: str = "last"):
        if not filename:
            raise ValueError(f"{type(self).__name__} filename must not be empty")
        self.dirpath = dirpath
        self.filename = filename

    def checkpoint_path(self, trainer: "pl.Trainer") -> str:
        """``<dirpath>/<filename>.ckpt`` for ``trainer``; ``dirpath`` defaults to the first
        ModelCheckpoint's folder (where ``--ckpt_path last`` looks), else
        ``trainer.default_root_dir``."""
        dirpath = self.dirpath
        if dirpath is None:
            dirpath = next((cb.dirpath for cb in trainer.checkpoint_callbacks
                            if isinstance(cb, ModelCheckpoint) and cb.dirpath), None)
        return os.path.join(str(dirpath or trainer.default_root_dir), f"{self.filename}.ckpt")

    def _write(self, trainer: "pl.Trainer") -> str:
        """``trainer.save_checkpoint`` to :meth:`checkpoint_path` (collective in DDP), never
        through a symlink; returns the path."""
        path = self.checkpoint_path(trainer)
        if trainer.is_global_zero:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            if os.path.islink(path):  # ModelCheckpoint(save_last="link"): never write through it
                os.unlink(path)
        trainer.save_checkpoint(path)
        return path

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dirpath={self.dirpath!r}, filename={self.filename!r})"


class LastCheckpoint(_FileCallback, Checkpoint):
    """Save ``last.ckpt`` after every validation of a fit, and at its end (not in a
    ``fast_dev_run``).

    Lightning 2.6's ``ModelCheckpoint(monitor=..., save_last=True)`` writes its ``last.ckpt``
    only together with a new best checkpoint: once the monitored metric stops improving,
    ``last.ckpt`` stays at the best step, and ``--ckpt_path last`` silently restarts from
    there (an early-stopped fine-tuning, or a 1,500-step pretraining whose best validation was
    step 250). This callback writes the state after each validation instead, so a resumed
    run continues from the last validated step. Being a
    :class:`~lightning.pytorch.callbacks.Checkpoint`, Lightning runs it after the other
    callbacks, so the file holds early stopping's patience count and the monitored
    ModelCheckpoint's best score as updated by that validation (list it after that
    ModelCheckpoint, which must stay the first checkpoint callback: ``--ckpt_path best``
    reads the first). With validation at epoch ends (``val_check_interval: 1.0``), where
    those callbacks act in ``on_train_epoch_end``, it saves there instead.

    Use it with ``ModelCheckpoint(monitor=..., save_top_k=1)`` and no ``save_last`` (which
    would compete for the name: Lightning writes ``last-v1.ckpt`` next to a file it did not
    write). Configs without a monitor (``every_n_train_steps``, ``save_last=True``) do not
    need it.

    Args:
        dirpath: folder of the checkpoint (default: the first ModelCheckpoint's folder, else
            ``trainer.default_root_dir``).
        filename: file name without ``.ckpt``.
    """

    def __init__(self, dirpath: Optional[str] = None, filename: str = "last"):
        super().__init__(dirpath, filename)
        #: global step of the last checkpoint written in this fit
        self.saved_step: Optional[int] = None

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        self.saved_step = None

    @staticmethod
    def _validates_at_epoch_end(trainer: "pl.Trainer") -> bool:
        """Validation runs at epoch ends, where early stopping and ModelCheckpoint act in
        ``on_train_epoch_end`` (after ``on_validation_end``), not by steps."""
        return trainer.check_val_every_n_epoch is not None and trainer.val_check_interval == 1.0

    def _save(self, trainer: "pl.Trainer") -> None:
        if trainer.fast_dev_run:  # as Lightning's own checkpoints: none for a debug run
            return
        self._write(trainer)
        self.saved_step = trainer.global_step

    def on_validation_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if (trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking
                and not self._validates_at_epoch_end(trainer)):
            self._save(trainer)

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self._validates_at_epoch_end(trainer):
            self._save(trainer)

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # steps trained after the last save (max_steps between two validations); a fit that
        # early stopping ended was saved by that validation's hook, which ran after it
        if self.saved_step != trainer.global_step:
            self._save(trainer)


class SigtermCheckpoint(_FileCallback, pl.Callback):
    """Save a resumable ``last.ckpt`` when a fit is stopped by SIGTERM (SLURM preemption, ``kill``).

    How it works with Lightning's own signal handling (checked against Lightning 2.6): at the
    start of every fit the Trainer installs a SIGTERM handler (chained with any handler
    installed before it) that only records the signal (``trainer.received_sigterm``) and
    forwards it to DDP child processes. The loops stop at their next check by raising
    :class:`~lightning.pytorch.utilities.exceptions.SIGTERMException` -- after the current
    training batch *and all its hooks* (optimizer step, callbacks' and the module's
    ``on_train_batch_end``, any due validation), at an epoch end, or between validation
    batches -- and every callback's ``on_exception`` runs. This callback saves there, so the
    checkpoint holds the complete state of the last finished step. Lightning 2.6 resumes such
    a checkpoint exactly mid-epoch and mid-validation; when the loop stopped at an epoch end,
    the loop counters are written as in a checkpoint of the epoch's last batch (see
    :meth:`on_save_checkpoint`), since Lightning would resume the epoch-end state with one
    extra batch.

    (The previous version installed its own handler in ``setup``, which Lightning then
    chained, and saved only in ``on_train_batch_end``: a signal arriving after that hook
    stopped the run with no checkpoint at all, and one arriving before it saved the state
    before the module's own ``on_train_batch_end`` had run.)

    The file is ``<dirpath>/<filename>.ckpt``; ``dirpath`` defaults to the first
    :class:`~lightning.pytorch.callbacks.ModelCheckpoint`'s folder (else
    ``trainer.default_root_dir``), where ``--ckpt_path last`` looks. :func:`main` then exits
    with status 143 (128 + SIGTERM). In DDP every rank must receive the signal (``srun``
    and SLURM preemption send it to all tasks): the save is collective.

    Args:
        dirpath: folder of the checkpoint (default: see above).
        filename: file name without ``.ckpt``.
    """

    def __init__(self, dirpath: Optional[str] = None, filename: str = "last"):
        super().__init__(dirpath, filename)
        #: where the checkpoint was written, once it was
        self.saved_path: Optional[str] = None
        self._rewind_epoch = False

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        self.saved_path, self._rewind_epoch = None, False

    def _save(self, trainer: "pl.Trainer") -> None:
        path = self._write(trainer)
        self.saved_path = path
        rank_zero_info(f"SIGTERM: saved checkpoint {path} at global step {trainer.global_step}")

    def on_exception(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                     exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != TrainerFn.FITTING:
            return
        epochs = trainer.fit_loop.epoch_progress.current
        # the fit loop stopped right after it marked an epoch completed
        self._rewind_epoch = epochs.completed == epochs.started > 0
        try:
            self._save(trainer)
        finally:
            self._rewind_epoch = False

    def on_save_checkpoint(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                           checkpoint: dict) -> None:
        if not self._rewind_epoch:
            return
        # Lightning 2.6 restores a checkpoint taken after the epoch end wrongly (with
        # step-based validation it trains one extra batch as part of the finished epoch).
        # Write the loop counters as ModelCheckpoint(every_n_train_steps) has them in
        # on_train_batch_end of the epoch's last batch, a state Lightning resumes exactly:
        # epoch not yet processed, last batch not yet completed, its step not yet counted.
        # Everything else (weights, optimizer, schedulers, EMA) is the finished state, as
        # it is at that point too, except for hooks that ran after it, which the resumed
        # run then does not repeat.
        loops = checkpoint["loops"]["fit_loop"]
        for counter in ("current", "total"):
            loops["epoch_progress"][counter]["processed"] -= 1
            loops["epoch_progress"][counter]["completed"] -= 1
            loops["epoch_loop.batch_progress"][counter]["completed"] -= 1
        loops["epoch_loop.state_dict"]["_batches_that_stepped"] -= 1
