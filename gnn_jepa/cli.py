"""The ``gnn-jepa`` command: Lightning's CLI (fit/validate/test/predict) plus ``simulate``.

    gnn-jepa fit --config configs/pretrain/trackml_small.yaml
    gnn-jepa fit --config configs/finetune/trackml_small.yaml --model.pretrained=<ckpt>
    gnn-jepa test --config configs/finetune/trackml_small.yaml --ckpt_path <ckpt>
    gnn-jepa simulate --preset trackml --num-events 10 --out data/sim
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningCLI

from gnn_jepa.data.datamodule import EventDataModule


class SigtermCheckpoint(pl.Callback):
    """On SIGTERM (what SLURM sends before preemption) save ``last.ckpt`` and stop cleanly."""

    def __init__(self, dirpath: Optional[str] = None):
        self.dirpath = dirpath
        self._trainer = None

    def setup(self, trainer, pl_module, stage):
        import signal
        self._trainer = trainer
        if stage == "fit":
            try:
                signal.signal(signal.SIGTERM, self._handle)
            except ValueError:  # not the main thread
                pass

    def _handle(self, signum, frame):
        self._trainer.should_stop = True
        self._pending = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if getattr(self, "_pending", False):
            import os
            ckpt_cb = trainer.checkpoint_callback
            d = self.dirpath or (ckpt_cb.dirpath if ckpt_cb else trainer.default_root_dir)
            os.makedirs(d, exist_ok=True)
            trainer.save_checkpoint(os.path.join(d, "last.ckpt"))
            self._pending = False


class GnnJepaCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.features", "model.init_args.d_input",
                              compute_fn=len, apply_on="parse")


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
    GnnJepaCLI(pl.LightningModule, EventDataModule, subclass_mode_model=True,
               args=None if argv is None else args,
               save_config_kwargs={"overwrite": True}, auto_configure_optimizers=False)


if __name__ == "__main__":
    main()
