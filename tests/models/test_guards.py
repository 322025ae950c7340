"""Non-finite guards: a bad event stops training with its name before any weight changes,
and no checkpoint of non-finite values is written."""
import glob

import lightning.pytorch as pl
import pytest
import torch
from torch_geometric.loader import DataLoader

from gnn_jepa.models.guards import (NonFiniteError, batch_events, check_gradients, check_loss,
                                    check_state)
from gnn_jepa.models.jepa import JEPAPretraining
from gnn_jepa.models.track_finding import TrackFinding
from tests.models.conftest import toy_event
from tests.models.test_jepa import SMALL
from tests.models.test_track_finding import ENC


def test_checks_name_the_quantity_the_step_and_the_events():
    b = torch.nn.Module()
    b.event_id = torch.tensor([4, 9])
    assert batch_events(b) == "events 4, 9"
    check_loss(torch.tensor(1.5), step=3, events="event 4")
    with pytest.raises(NonFiniteError, match=r"step 3: the training loss is nan on event 4"):
        check_loss(torch.tensor(float("nan")), step=3, events="event 4")
    lin = torch.nn.Linear(2, 1)
    lin.weight.grad = torch.tensor([[1.0, float("inf")]])
    lin.bias.grad = torch.zeros(1)
    with pytest.raises(NonFiniteError, match=r"step 7: non-finite gradients of 1 parameter\(s\) "
                                             r"\(weight\) on events 4, 9"):
        check_gradients(lin.named_parameters(), step=7, events=batch_events(b))
    check_state({"a": torch.ones(2), "tuned_threshold": torch.tensor(float("nan")),
                 "n": torch.tensor([1, 2])}, where="x")
    with pytest.raises(NonFiniteError, match=r"ckpt: non-finite values in 1 tensor\(s\) \(head.w\)"):
        check_state({"head.w": torch.tensor([0.0, float("-inf")])}, where="ckpt")


def _bad_events():
    """Three toy events; event 1 has one hit at x = 1e30 (finite, absurd)."""
    events = [toy_event(s) for s in range(3)]
    events[1].pos[5, 0] = 1e30
    events[1].x[5, 0] = 1e30
    return events


def _fit(model, tmp_path, events):
    trainer = pl.Trainer(max_steps=4, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path),
                         callbacks=[pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ck"),
                                                                 every_n_train_steps=1, save_last=True)])
    trainer.fit(model, DataLoader(events, batch_size=1, shuffle=False))


@pytest.mark.parametrize("kind", ["track_finding", "jepa"])
def test_a_bad_event_stops_training_before_any_weight_changes(tmp_path, kind):
    torch.manual_seed(0)
    model = (TrackFinding(mode="scratch", **ENC) if kind == "track_finding" else JEPAPretraining(**SMALL))
    events = _bad_events()
    with pytest.raises(NonFiniteError, match=r"step 1: .* on event 1\b"):
        _fit(model, tmp_path, events)
    # step 0 (event 0) trained and was checkpointed; event 1 changed nothing after it
    files = glob.glob(str(tmp_path / "ck" / "*.ckpt"))
    assert files
    for f in files:
        state = torch.load(f, weights_only=False)["state_dict"]
        assert all(torch.isfinite(v).all() for k, v in state.items()
                   if v.is_floating_point() and not k.endswith("tuned_threshold"))
    last = torch.load(str(tmp_path / "ck" / "last.ckpt"), weights_only=False)
    assert last["global_step"] == 1
    now = model.state_dict()
    for k, v in last["state_dict"].items():
        torch.testing.assert_close(now[k], v, rtol=0, atol=0, equal_nan=True)


def test_a_checkpoint_of_non_finite_weights_is_refused(tmp_path):
    model = TrackFinding(mode="scratch", **ENC)
    with torch.no_grad():
        next(model.head.parameters()).fill_(float("nan"))
    trainer = pl.Trainer(max_steps=0, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.strategy.connect(model)
    trainer.strategy.model_to_device()
    with pytest.raises(NonFiniteError, match="refusing to write a checkpoint"):
        trainer.save_checkpoint(tmp_path / "x.ckpt")
    assert not (tmp_path / "x.ckpt").exists()
