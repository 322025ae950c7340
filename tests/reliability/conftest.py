"""Shared fixtures and helpers of the bad-input corpus (``README.md`` here lists every case).

The corpus is generated from small simulated events (15 particles, ~150 hits) written as
TrackML CSV and then damaged; events are read the way training reads them
(``EventDataModule(source="trackml")`` -> ``EventDataset`` -> on-disk cache -> DataLoader), and
commands run through ``gnn_jepa.cli.main([...])`` in-process.
"""
from __future__ import annotations

import contextlib
import sys
import warnings
from pathlib import Path
from typing import Callable

import lightning.pytorch as pl
import pandas as pd
import pytest
import torch
import yaml

from gnn_jepa.cli import main
from gnn_jepa.data.dataset import CacheRebuildWarning
from gnn_jepa.data.event import Event
from gnn_jepa.data.simulator import Simulator
from gnn_jepa.data.trackml import write_event
from gnn_jepa.datamodule import EventDataModule
from gnn_jepa.models import JEPAPretraining

ROOT = Path(__file__).resolve().parents[2]
PRETRAIN_CONFIG = ROOT / "configs/pretrain/trackml_small.yaml"
FINETUNE_CONFIG = ROOT / "configs/finetune/trackml_small.yaml"
NUM_EVENTS = 3
GRAPH = {"kind": "eta_phi", "radius": 0.05, "w_r": 0.0}
TINY_ENCODER = dict(d_model=16, d_embedding=8, n_layers=1, heads=2)
TINY_MODEL = dict(encoder=TINY_ENCODER, predictor={"d_model": 16, "layers": 1})
#: Config settings that make any ``gnn-jepa fit`` that gets past its checks tiny: one simulated
#: event of 10 particles, one step, no logger, no callbacks, on the CPU.
TINY_RUN = {"trainer.accelerator": "cpu", "trainer.logger": False, "trainer.max_steps": 1,
            "trainer.callbacks": [], "trainer.enable_checkpointing": False,
            "data.num_train": 1, "data.num_val": 0, "data.num_test": 0,
            "data.simulator": {"preset": "trackml", "num_particles": 10}}


def simulate(n_particles: int, event_id: int) -> Event:
    sim = Simulator.from_preset("trackml", num_particles=n_particles, eta_range=(-2.0, 2.0))
    return sim.simulate(seed=event_id, event_id=event_id)


@pytest.fixture(scope="module")
def good_events() -> list[Event]:
    return [simulate(15, 1000 + i) for i in range(NUM_EVENTS)]


@pytest.fixture
def data_dir(tmp_path, good_events) -> Path:
    """A folder of ``NUM_EVENTS`` good events, 1000 .. 1002."""
    d = tmp_path / "events"
    d.mkdir()
    for ev in good_events:
        write_event(ev, d)
    return d


@pytest.fixture
def cli_argv(monkeypatch):
    """``sys.argv`` without pytest's arguments, which LightningCLI would warn about."""
    monkeypatch.setattr(sys, "argv", ["gnn-jepa"])


def datamodule(data_dir: Path, cache: Path | None, **kw) -> EventDataModule:
    args = dict(source="trackml", data_dir=str(data_dir), num_train=NUM_EVENTS, num_val=0, num_test=0,
                batch_size=2, graph=GRAPH, cache_dir=None if cache is None else str(cache))
    return EventDataModule(**{**args, **kw})


def leftovers(*dirs: Path) -> list[Path]:
    """Temporary files (of atomic writes) left anywhere under ``dirs``."""
    return [p for d in dirs if d.exists() for p in d.rglob("*") if p.name.endswith(".tmp")]


def hits_file(d: Path, event_id: int = 1001, part: str = "hits") -> Path:
    return d / f"event{event_id:09d}-{part}.csv"


# ----------------------------------------------------------------------- editing CSV tables
def edit_table(path: Path, fn: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    """Rewrite a CSV table through ``fn`` on its cells as text (so any value can be written)."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    fn(df).to_csv(path, index=False)


def set_cell(col: str, row: int, value: str):
    def fn(df):
        df.loc[row, col] = value
        return df
    return fn


# ----------------------------------------------------------------------- the cache
def assert_same_data(a, b) -> None:
    """Every attribute of two ``Data`` equal exactly (tensors element for element)."""
    assert sorted(a.keys()) == sorted(b.keys())
    for key in a.keys():
        if torch.is_tensor(a[key]):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def rebuild_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, CacheRebuildWarning)]


@contextlib.contextmanager
def no_rebuild():
    """A context in which a CacheRebuildWarning fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheRebuildWarning)
        yield


# ----------------------------------------------------------------------- configs and commands
def config_with(base: Path, tmp_path: Path, **keys) -> Path:
    """A copy of the config ``base`` made tiny (:data:`TINY_RUN`, its cache and runs under
    ``tmp_path``) with dotted keys set on top (``**{"data.graph.radius": 0}``), written to
    ``tmp_path/bad.yaml``."""
    cfg = yaml.safe_load(base.read_text())
    keys = {**TINY_RUN, "data.cache_dir": str(tmp_path / "cache"),
            "trainer.default_root_dir": str(tmp_path), **keys}
    for key, value in keys.items():
        *parents, last = key.split(".")
        block = cfg
        for k in parents:
            block = block.setdefault(k, {})
        block[last] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def exit_code_and_stderr(argv: list[str], capsys) -> tuple[object, str]:
    """Run ``gnn-jepa <argv>`` in-process; it must exit (argparse, jsonargparse or
    ``SystemExit(message)``): its code and what it wrote to stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    return exit_.value.code, capsys.readouterr().err


def jepa_checkpoint(path: Path, cli: bool = True, **hp) -> Path:
    """A checkpoint with the layout ``gnn-jepa fit`` writes (LightningCLI adds ``_class_path``),
    or (``cli=False``) a plain ``Trainer`` writes."""
    pl.seed_everything(0)
    model = JEPAPretraining(**{**TINY_MODEL, **hp})
    hparams = dict(model.hparams)
    if cli:
        hparams = {"_class_path": "gnn_jepa.models.JEPAPretraining", **hparams,
                   "_instantiator": "lightning.pytorch.cli.instantiate_module"}
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams, "global_step": 0}, path)
    return path
