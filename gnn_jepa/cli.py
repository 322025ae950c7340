"""The ``gnn-jepa`` command, the project's one front door.

    gnn-jepa --help                      # every command, one line each
    gnn-jepa fit --config configs/pretrain/trackml_small.yaml
    gnn-jepa fit --config configs/finetune/trackml_small.yaml --model.pretrained=<ckpt>
    gnn-jepa test --config configs/finetune/trackml_small.yaml --ckpt_path <ckpt>
    gnn-jepa simulate --preset trackml --num-events 10 --out data/sim

``fit``, ``validate``, ``test`` and ``predict`` are Lightning's CLI around the models and
:class:`~gnn_jepa.datamodule.EventDataModule`; the others are plain argparse commands. Each
command has its own ``--help``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

from gnn_jepa.allocator import allocator_in_use, run_under_mimalloc
from gnn_jepa.data.colliderml import write_colliderml
from gnn_jepa.data.simulator import PRESETS, Simulator, event_seed
from gnn_jepa.data.trackml import write_event
from gnn_jepa.datamodule import EventDataModule
from gnn_jepa.evaluation.fit_graph import main as fit_graph_main
from gnn_jepa.evaluation.report import write_report
from gnn_jepa.models.checkpoints import (CheckpointMismatchError, check_checkpoint_fits,
                                         find_last_checkpoint, read_checkpoint, settings_diff)


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
            hparams = read_checkpoint(str(ckpt_path), weights_only=True,
                                      what="--ckpt_path").get("hyper_parameters") or {}
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
        diff = settings_diff(stored, given)
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
        parser.link_arguments("data.features", "model.init_args.encoder.d_input",
                              compute_fn=len, apply_on="parse")

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs):
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "test":  # the report (after_test) prints the metrics table once
            parser.set_defaults(verbose=False)
        return parser

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
        rank_zero_info(f"memory allocator: {allocator_in_use()} (gnn_jepa.allocator)")
        self._prepare_checkpoint()

    def before_validate(self) -> None:
        self._prepare_checkpoint()

    def before_test(self) -> None:
        self._prepare_checkpoint()

    def before_predict(self) -> None:
        self._prepare_checkpoint()

    def after_test(self) -> None:
        """Track finding: print the metrics table, write ``metrics.json`` and
        ``efficiency.png`` into the model's output folder (rank zero)."""
        summary = getattr(self.model, "test_summary", None)
        if summary is not None and self.trainer.is_global_zero:
            out = write_report(summary, self.model.output_folder())
            print(f"test report written to {out}")


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def simulate_main(argv: Sequence[str]) -> None:
    """Write simulated events as TrackML CSV files, or as ColliderML Parquet shards with
    ``--format colliderml`` (event i of seed s is the event that ``data: {source: simulate,
    seed: s}`` and ``Simulator.simulate_many(seed=s)`` give; as ColliderML, without its noise
    hits, which that format cannot hold)."""
    p = argparse.ArgumentParser(prog="gnn-jepa simulate", description=simulate_main.__doc__)
    p.add_argument("--preset", default="trackml", choices=sorted(PRESETS))
    p.add_argument("--num-events", type=_at_least(1), default=10)
    p.add_argument("--num-particles", type=_at_least(1), default=None,
                   help="particles per event (default: the preset's)")
    p.add_argument("--seed", type=_at_least(0), default=0)
    p.add_argument("--first-event", type=_at_least(0), default=1000,
                   help="event number of the first file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--gzip", action="store_true", help="write .csv.gz (trackml format)")
    p.add_argument("--format", choices=("trackml", "colliderml"), default="trackml",
                   help="trackml (default): OUT/event<id>-hits/-truth/-particles.csv; "
                        "colliderml: Parquet shards OUT/data/PROCESS_tracker_hits/"
                        "train-00000.parquet and OUT/data/PROCESS_particles/..., one row group "
                        "per event, for --data.source colliderml and fit-graph (needs pyarrow; "
                        "the noise hits are dropped: ColliderML has none)")
    p.add_argument("--process", default="sim_pu0",
                   help="colliderml format: the configuration name in the folder names "
                        "(default sim_pu0)")
    p.add_argument("--hits-only", action="store_true",
                   help="write the hits only, no truth and no particles (unlabelled events, "
                        "for pretraining)")
    p.add_argument("--events-per-shard", type=_at_least(1), default=1000,
                   help="colliderml format: events per shard file (default 1000)")
    args = p.parse_args(list(argv))
    colliderml = args.format == "colliderml"
    if colliderml and args.gzip:
        p.error("--gzip applies to --format trackml only")
    overrides = {} if args.num_particles is None else {"num_particles": args.num_particles}
    sim = Simulator.from_preset(args.preset, **overrides)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        p.error(f"--out '{out}' exists and is not a folder")
    events = (sim.simulate(seed=event_seed(args.seed, i), event_id=args.first_event + i)
              for i in range(args.num_events))
    if args.hits_only and not colliderml:
        events = (ev.without_truth() for ev in events)
    if colliderml:
        try:
            summary = write_colliderml(events, out, args.process,
                                       events_per_shard=args.events_per_shard,
                                       row_group_size=1, noise="drop")
        except (FileExistsError, ImportError, ValueError) as err:
            p.error(str(err))
        if args.hits_only:  # the hits shards alone: the reader then knows no truth
            shutil.rmtree(out / "data" / f"{args.process}_particles")
            print(f"--hits-only: removed {out / 'data' / (args.process + '_particles')}")
        print(f"wrote {summary.events} events ({summary.hits} hits; "
              f"{summary.noise_hits_dropped} noise hits left out, ColliderML has none) as "
              f"{len(summary.files) // 2} ColliderML shard(s) to {out / 'data'}/"
              f"{args.process}_tracker_hits and _particles")
        return
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for ev in events:
        write_event(ev, out / f"event{ev.event_id:09d}", compress=args.gzip)
        total += ev.num_hits
    print(f"wrote {args.num_events} events ({total} hits) to {out}")


def lightning_main(args: Optional[Sequence[str]]) -> None:
    """Lightning's CLI (``args=None``: ``sys.argv``)."""
    try:
        GnnJepaCLI(pl.LightningModule, EventDataModule, subclass_mode_model=True,
                   args=None if args is None else list(args),
                   save_config_kwargs={"overwrite": True}, auto_configure_optimizers=False)
    except SIGTERMException:
        # Lightning stops a SIGTERMed fit with a bare SystemExit (status 0): report the
        # interruption as the shell convention 128 + SIGTERM, so job scripts can tell.
        raise SystemExit(128 + signal.SIGTERM) from None


#: Every command: its one-line summary; ``None`` marks Lightning's.
COMMANDS: dict[str, tuple[str, Optional[Callable[[Sequence[str]], None]]]] = {
    "fit": ("train a model from a config: JEPA pretraining or track finding", None),
    "validate": ("run the validation loop on a checkpoint", None),
    "test": ("score track finding on the test events: metrics table, metrics.json, plots", None),
    "predict": ("write reconstructed tracks as TrackML submission CSVs", None),
    "simulate": ("write simulated events as TrackML CSV files or ColliderML Parquet shards",
                 simulate_main),
    "fit-graph": ("fit the learned graph (hit embedding + layer-pair filter) on your labelled "
                  "TrackML or ColliderML events", fit_graph_main),
}


def usage() -> str:
    """The front door's help: every command with its line."""
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: gnn-jepa <command> [options]", "",
             "Self-supervised JEPA pretraining and GNN track finding for charged-particle tracking.",
             "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (summary, _) in COMMANDS.items()]
    lines += ["", "`gnn-jepa <command> --help` lists a command's options. Quickstart: README.md."]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return
    command = args[0]
    if command in COMMANDS and COMMANDS[command][1] is not None:
        return COMMANDS[command][1](args[1:])
    if command not in COMMANDS and not command.startswith("-"):
        print(f"gnn-jepa: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        raise SystemExit(2)
    lightning_main(None if argv is None else args)


if __name__ == "__main__":
    run_under_mimalloc(["-m", "gnn_jepa.cli"])  # under mimalloc (gnn_jepa.allocator)
    main()
