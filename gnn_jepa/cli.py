"""The ``gnn-jepa`` command: Lightning's CLI (fit/validate/test/predict) plus ``simulate``.

    gnn-jepa fit --config configs/pretrain/trackml_small.yaml
    gnn-jepa fit --config configs/finetune/trackml_small.yaml --model.pretrained=<ckpt>
    gnn-jepa test --config configs/finetune/trackml_small.yaml --ckpt_path <ckpt>
    gnn-jepa simulate --preset trackml --num-events 10 --out data/sim
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import signal
import sys
from typing import Optional, Sequence

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

from gnn_jepa.data.datamodule import EventDataModule


class SigtermCheckpoint(pl.Callback):
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
        if not filename:
            raise ValueError("SigtermCheckpoint filename must not be empty")
        self.dirpath = dirpath
        self.filename = filename
        #: where the checkpoint was written, once it was
        self.saved_path: Optional[str] = None
        self._rewind_epoch = False

    def checkpoint_path(self, trainer: "pl.Trainer") -> str:
        """The path this callback saves to for ``trainer``."""
        d = self.dirpath
        if d is None:
            ckpt_cb = trainer.checkpoint_callback
            d = getattr(ckpt_cb, "dirpath", None) or trainer.default_root_dir
        return os.path.join(str(d), f"{self.filename}.ckpt")

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        self.saved_path, self._rewind_epoch = None, False

    def _save(self, trainer: "pl.Trainer") -> None:
        path = self.checkpoint_path(trainer)
        if trainer.is_global_zero:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            if os.path.islink(path):  # ModelCheckpoint(save_last="link"): never write through it
                os.unlink(path)
        trainer.save_checkpoint(path)
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


class CheckpointMismatchError(ValueError):
    """A ``--ckpt_path`` checkpoint does not fit the model this command built."""


def find_last_checkpoint(trainer: "pl.Trainer") -> Optional[str]:
    """The newest ``last*.ckpt`` this run's configuration can have written, ``None`` if none.

    Lightning resolves ``ckpt_path="last"`` inside the *current* run's checkpoint folder,
    ``<save_dir>/<name>/version_<n>/checkpoints``. A resumed run gets a new logger version,
    so that folder is new and empty: Lightning would warn and silently train from scratch.
    This looks in every version folder of the logger (``<save_dir>/<name>/*/checkpoints``),
    in a ModelCheckpoint's explicit ``dirpath``, in ``default_root_dir`` and its
    ``checkpoints`` folder, at every :class:`SigtermCheckpoint`'s explicit path and at the
    ``hpc_ckpt_<n>.ckpt`` files of Lightning's SLURM auto-requeue, and returns the most
    recently modified file.
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
    for cb in trainer.callbacks:
        if isinstance(cb, SigtermCheckpoint) and cb.dirpath is not None:
            path = cb.checkpoint_path(trainer)
            if os.path.isfile(path):
                found.add(path)
    return max(found, key=os.path.getmtime) if found else None


def _plain(value):
    """``value`` with tuples as lists, for comparing settings that went through YAML."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _model_settings(subcommand_config) -> dict:
    """``class_path`` and init arguments of the model in a parsed subcommand config."""
    model = subcommand_config.get("model")
    if model is None:
        return {}
    out = {"class_path": model.get("class_path")}
    for key in ("init_args", "dict_kwargs"):
        args = model.get(key)
        if args:
            out.update(args.as_dict() if hasattr(args, "as_dict") else dict(args))
    return out


def check_checkpoint_fits(path: str, model: "pl.LightningModule") -> None:
    """Raise :class:`CheckpointMismatchError` when ``path``'s weights cannot load into ``model``.

    Lightning loads ``--ckpt_path`` strictly; on a mismatch its error lists tensor shapes but
    not the file nor the configuration that differs. This names both.
    """
    import torch

    try:  # mmap: only the tensors' metadata is read
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except RuntimeError:  # a legacy (non-zip) file cannot be memory-mapped
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
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
        return
    saved = {k: v for k, v in (ckpt.get("hyper_parameters") or {}).items() if not k.startswith("_")}
    now = dict(model.hparams)
    diff = {k: (saved.get(k, "<absent>"), now.get(k, "<absent>")) for k in sorted(set(saved) | set(now))
            if _plain(saved.get(k, "<absent>")) != _plain(now.get(k, "<absent>"))}
    first_shapes = dict(list(shapes.items())[:4])
    raise CheckpointMismatchError(
        f"checkpoint {path} does not fit this {type(model).__name__}: hyperparameters that differ "
        f"(checkpoint, this run): {diff}; shape mismatches (checkpoint, model): {first_shapes} "
        f"({len(shapes)} in all); missing keys: {missing[:5]} ({len(missing)}); unexpected keys: "
        f"{unexpected[:5]} ({len(unexpected)}). Resume with the configuration the checkpoint was "
        "trained with, or pass --ckpt_path null to start afresh.")


class GnnJepaCLI(LightningCLI):
    """LightningCLI with ``--ckpt_path`` made safe.

    * ``--ckpt_path <file>``: LightningCLI builds the model from the hyperparameters stored in
      the checkpoint, silently replacing the ones the command gives. Here any difference is
      an error for ``fit`` (a resumed run must continue the same model and optimisation) and
      a warning naming the replaced values for ``validate``/``test``/``predict``. A
      checkpoint written by a plain ``Trainer`` (no stored model class), which LightningCLI
      cannot parse at all, is used with the given configuration.
    * ``--ckpt_path last``: resolved with :func:`find_last_checkpoint` (across logger versions).
    * Before Lightning loads the weights, :func:`check_checkpoint_fits` turns a mismatch into
      an error naming the file and the differing settings.
    """

    def _parse_ckpt_path(self) -> None:
        sub = self.config.get("subcommand")
        ckpt_path = self.config[sub].get("ckpt_path") if sub else None
        given = _model_settings(self.config[sub]) if sub else {}
        if ckpt_path and os.path.isfile(str(ckpt_path)) and self.subclass_mode_model:
            import torch

            hparams = torch.load(ckpt_path, weights_only=True, map_location="cpu", mmap=True).get(
                "hyper_parameters") or {}
            if hparams and "_class_path" not in hparams:
                # Written by a plain Trainer (e.g. benchmarks/), not by this CLI: LightningCLI
                # cannot parse it without the class and would exit; build the model from the
                # given configuration and let check_checkpoint_fits compare the weights.
                rank_zero_warn(f"--ckpt_path {ckpt_path}: the checkpoint names no model class "
                               "(not written by gnn-jepa); building the model from the given configuration")
                return
        try:
            super()._parse_ckpt_path()
        except SystemExit:
            raise CheckpointMismatchError(
                f"--ckpt_path {ckpt_path}: its stored hyperparameters do not describe this command's "
                f"model ({given.get('class_path')}); see the parser message above") from None
        if not sub:
            return
        stored = _model_settings(self.config[sub])
        diff = {k: (stored.get(k, "<absent>"), given.get(k, "<absent>"))
                for k in sorted(set(given) | set(stored))
                if _plain(stored.get(k, "<absent>")) != _plain(given.get(k, "<absent>"))}
        if not diff:
            return
        listed = "; ".join(f"{k}: {a!r} vs {b!r}" for k, (a, b) in diff.items())
        msg = (f"--ckpt_path {ckpt_path} was trained with other model settings than this command "
               f"gives (checkpoint vs given): {listed}. Lightning builds the model from the "
               "checkpoint's settings, so the given ones would be ignored.")
        if sub == "fit":
            raise CheckpointMismatchError(
                msg + " Resume with the configuration the checkpoint was trained with (the "
                "config.yaml of its run), or drop --ckpt_path to start afresh.")
        rank_zero_warn(msg)

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.features", "model.init_args.d_input",
                              compute_fn=len, apply_on="parse")

    def _prepare_checkpoint(self) -> None:
        cfg = self.config_init[self.subcommand]
        ckpt_path = cfg.get("ckpt_path")
        if ckpt_path == "last":
            found = find_last_checkpoint(self.trainer)
            if found is not None:
                rank_zero_info(f"--ckpt_path last: resuming from {found}")
                cfg["ckpt_path"] = ckpt_path = found
        if ckpt_path and ckpt_path not in ("last", "best", "hpc") and os.path.isfile(str(ckpt_path)):
            check_checkpoint_fits(str(ckpt_path), self.model)

    def before_fit(self) -> None:
        self._prepare_checkpoint()

    def before_validate(self) -> None:
        self._prepare_checkpoint()

    def before_test(self) -> None:
        self._prepare_checkpoint()

    def before_predict(self) -> None:
        self._prepare_checkpoint()


def simulate_main(argv: Sequence[str]) -> None:
    """Write simulated events as TrackML CSV files."""
    from gnn_jepa.data.dataset import event_seed
    from gnn_jepa.data.simulator import Simulator
    from gnn_jepa.data.trackml import write_event

    p = argparse.ArgumentParser(prog="gnn-jepa simulate", description=simulate_main.__doc__)
    p.add_argument("--preset", default="trackml", choices=["trackml", "toy2d"])
    p.add_argument("--num-events", type=int, default=10)
    p.add_argument("--num-particles", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--first-event", type=int, default=1000, help="event number of the first file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--gzip", action="store_true", help="write .csv.gz")
    args = p.parse_args(list(argv))
    overrides = {} if args.num_particles is None else {"num_particles": args.num_particles}
    sim = Simulator.from_preset(args.preset, **overrides)
    from pathlib import Path
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for i in range(args.num_events):
        eid = args.first_event + i
        ev = sim.simulate(seed=event_seed(args.seed, i), event_id=eid)
        write_event(ev, out / f"event{eid:09d}", compress=args.gzip)
        total += ev.num_hits
    print(f"wrote {args.num_events} events ({total} hits) to {out}")


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "simulate":
        return simulate_main(args[1:])
    try:
        GnnJepaCLI(pl.LightningModule, EventDataModule, subclass_mode_model=True,
                   args=None if argv is None else args,
                   save_config_kwargs={"overwrite": True}, auto_configure_optimizers=False)
    except SIGTERMException:
        # Lightning stops a SIGTERMed fit with a bare SystemExit (status 0): report the
        # interruption as the shell convention 128 + SIGTERM, so job scripts can tell.
        raise SystemExit(128 + signal.SIGTERM) from None


if __name__ == "__main__":
    main()
