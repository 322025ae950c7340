"""Bad events that reach training: an absurd coordinate that passes a raised
``max_coordinate`` stops the run with a NonFiniteError naming the event (no weight changed);
events a model cannot learn from (too small to mask, without an edge) are counted skips; a
folder with bad files trains on the good ones with ``--data.on_bad_event skip``; events
without a TrackML score are left out of the threshold tuning with a warning that counts them.
The guards themselves are tested in tests/models/test_guards.py.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from gnn_jepa.cli import main
from gnn_jepa.data.event import Event
from gnn_jepa.data.trackml import write_event
from gnn_jepa.datamodule import SkippedEventWarning
from gnn_jepa.models import JEPAPretraining
from gnn_jepa.models.guards import NonFiniteError
from gnn_jepa.models.track_finding import TrackFinding
from tests.reliability.conftest import (GRAPH, PRETRAIN_CONFIG, TINY_ENCODER, TINY_MODEL,
                                        config_with, datamodule, edit_table, hits_file, set_cell)


def _truncate(ev: Event, n_hits: int) -> Event:
    hits, truth = ev.hits.iloc[:n_hits], ev.truth.iloc[:n_hits]
    particles = ev.particles[ev.particles["particle_id"].isin(truth["particle_id"])]
    return Event(hits=hits.reset_index(drop=True), truth=truth.reset_index(drop=True),
                 particles=particles.reset_index(drop=True), event_id=ev.event_id)


def _trainer(tmp_path: Path, name: str, steps: int = 2, **kw) -> pl.Trainer:
    logger = pl.loggers.CSVLogger(str(tmp_path), name=name)
    return pl.Trainer(max_steps=steps, accelerator="cpu", logger=logger, log_every_n_steps=1,
                      enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False, **kw)


def _logged(trainer: pl.Trainer, key: str) -> list[float]:
    rows = list(csv.DictReader(open(Path(trainer.logger.log_dir) / "metrics.csv")))
    return [float(r[key]) for r in rows if r.get(key)]


def _tiny_track_finding(**kw) -> TrackFinding:
    pl.seed_everything(0)
    return TrackFinding(mode="scratch", encoder=TINY_ENCODER, head={"kind": "mlp", "hidden": 16}, **kw)


@pytest.mark.parametrize("kind", ["track_finding", "jepa"])
def test_a_huge_coordinate_let_through_stops_training_naming_the_event(tmp_path, data_dir, kind):
    """x = 1e30 mm read with ``max_coordinate: 1e31`` (the reader's check is raised, so it
    passes): the first step on it raises NonFiniteError naming event 1001, before any weight
    changes."""
    edit_table(hits_file(data_dir), set_cell("x", 4, "1e30"))
    dm = datamodule(data_dir, None, train_offset=1, num_train=1, batch_size=1, max_coordinate=1e31)
    if kind == "track_finding":
        model = _tiny_track_finding()
    else:
        pl.seed_everything(0)
        model = JEPAPretraining(**TINY_MODEL)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(NonFiniteError) as err:
        _trainer(tmp_path, kind, limit_val_batches=0).fit(model, dm)
    msg = str(err.value)
    assert msg.startswith("step 0: ") and " on event 1001; stopped before the " in msg, msg
    assert "(no weight changed)" in msg
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0, equal_nan=True)


def test_events_without_valid_targets_are_counted_skips(tmp_path, good_events):
    """A one-hit event and a 12-hit event: no target region can reach min_target_hits=5 x K=4.

    The masker marks both graphs invalid and counts them; the JEPA step returns a zero loss
    that still has a graph (Lightning's backward needs one), and a fit runs through.
    """
    d = tmp_path / "small"
    d.mkdir()
    write_event(_truncate(good_events[0], 1), d)
    write_event(_truncate(good_events[1], 12), d)
    dm = datamodule(d, tmp_path / "cache", num_train=2)
    dm.prepare_data()
    batch = next(iter(dm.train_dataloader()))
    assert sorted(torch.bincount(batch.batch).tolist()) == [1, 12]

    pl.seed_everything(0)
    model = JEPAPretraining(**TINY_MODEL, masker={"num_targets": 4, "min_target_hits": 5})
    masks = model.masker(batch, model.mask_generator(0))
    assert masks.num_skipped == 2 and not masks.graph_valid.any()
    assert masks.num_regions == 0 and not masks.context.any() and (masks.target_region < 0).all()
    loss = model.training_step(batch, 0)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None for g in grads)
    assert all(torch.count_nonzero(g) == 0 for g in grads if g is not None)

    logger = pl.loggers.CSVLogger(str(tmp_path), name="skip")
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=logger, log_every_n_steps=1,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         limit_val_batches=0)
    trainer.fit(model, dm)
    assert trainer.global_step == 2
    rows = list(csv.DictReader(open(Path(logger.log_dir) / "metrics.csv")))
    skipped = [float(r["train/skipped_events"]) for r in rows if r.get("train/skipped_events")]
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert skipped == [2.0, 2.0] and losses == [0.0, 0.0]


def _edgeless_folder(tmp_path: Path, good_events) -> Path:
    """Event 1000 and 1002 have one hit each (no edge), event 1001 is whole."""
    d = tmp_path / "edgeless"
    d.mkdir()
    write_event(_truncate(good_events[0], 1), d)
    write_event(good_events[1], d)
    write_event(_truncate(good_events[2], 1), d)
    return d


def test_events_without_edges_are_counted_skips_in_track_finding(tmp_path, good_events):
    """An event without an edge gives the edge loss nothing to average: it used to make the
    loss NaN and stop the run with a NonFiniteError that blamed the event's coordinates. Now it
    is skipped and counted (``train/skipped_events``); a batch of only such events trains on a
    zero loss."""
    d = _edgeless_folder(tmp_path, good_events)
    dm = datamodule(d, None, batch_size=3)
    batch = next(iter(dm.train_dataloader()))
    model = _tiny_track_finding()
    model.log = lambda *a, **k: None  # outside a Trainer
    assert batch.num_graphs == 3 and batch.edge_index.shape[1] > 0
    loss = model.training_step(batch, 0)  # the whole event's edges: a finite, non-zero loss
    assert math.isfinite(loss.item()) and loss.item() > 0

    model = _tiny_track_finding()
    trainer = _trainer(tmp_path, "edgeless", steps=3, limit_val_batches=0)
    trainer.fit(model, datamodule(d, None, batch_size=1))  # one event per step, shuffled
    assert trainer.global_step == 3
    skipped, losses = _logged(trainer, "train/skipped_events"), _logged(trainer, "train/loss")
    assert sorted(skipped) == [0.0, 1.0, 1.0]
    assert [loss for loss, s in zip(losses, skipped) if s] == [0.0, 0.0]
    assert all(math.isfinite(loss) and loss > 0 for loss, s in zip(losses, skipped) if not s)


def test_an_edgeless_validation_event_keeps_val_loss_finite(tmp_path, good_events):
    """val/loss is the mean over the epoch's edges: an event without an edge adds nothing to it
    (it was NaN for the whole epoch) and is counted in val/skipped_events."""
    d = _edgeless_folder(tmp_path, good_events)
    dm = datamodule(d, None, num_train=0, num_val=3, batch_size=1)
    [metrics] = _trainer(tmp_path, "val").validate(_tiny_track_finding(), dm, verbose=False)
    assert math.isfinite(metrics["val/loss"]) and metrics["val/loss"] > 0
    assert metrics["val/skipped_events"] == 2.0  # events 1000 and 1002


def test_validation_events_without_a_trackml_score_are_counted(tmp_path, good_events):
    """All-noise validation events (every particle_id 0, every weight 0) have no TrackML score:
    threshold tuning leaves them out, with a warning counting them, and keeps its cut."""
    d = tmp_path / "noise"
    d.mkdir()
    for ev in good_events[:2]:
        write_event(Event(hits=ev.hits, truth=ev.truth.assign(particle_id=0, weight=0.0),
                          particles=ev.particles.iloc[:0], event_id=ev.event_id), d)
    dm = datamodule(d, None, num_train=0, num_val=2, batch_size=1)
    model = _tiny_track_finding(tracks={"tune_threshold": True})
    with pytest.warns(UserWarning, match=r"2 of 2 validation events have no TrackML score \(hit "
                                         r"weights sum to 0: no particle with >= 4 hits\) and are left "
                                         r"out of the threshold tuning; none is left, so the cut "
                                         r"stays at 0.5"):
        _trainer(tmp_path, "noise").validate(model, dm, verbose=False)
    assert math.isnan(float(model.tuned_threshold))  # not tuned


def test_fit_with_on_bad_event_skip_trains_on_the_good_events(tmp_path, data_dir, cli_argv):
    """``gnn-jepa fit --data.on_bad_event skip`` on a folder with one bad event: it runs,
    warning about and counting the skipped event."""
    edit_table(hits_file(data_dir), set_cell("x", 1, "12,5"))
    cfg = config_with(PRETRAIN_CONFIG, tmp_path, **{
        "model.init_args.encoder": TINY_ENCODER, "model.init_args.predictor": TINY_MODEL["predictor"],
        "data.source": "trackml", "data.data_dir": str(data_dir), "data.num_train": 3,
        "data.graph": GRAPH, "data.on_bad_event": "skip", "data.simulator": None})
    with pytest.warns(SkippedEventWarning) as record:
        main(["fit", "--config", str(cfg)])
    messages = [str(w.message) for w in record if issubclass(w.category, SkippedEventWarning)]
    assert messages[-1] == (f"skipped 1 of 3 events of split 'train' (bad data): "
                            f"1 ({data_dir / 'event000001001'})")
    assert "'12,5' is not a number" in messages[0]
    [folder] = (tmp_path / "cache").iterdir()
    assert sorted(p.name for p in folder.glob("event_*")) == [
        "event_000000000.pt", "event_000000001.bad.json", "event_000000002.pt"]
