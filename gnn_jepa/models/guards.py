"""Non-finite guards: a NaN or inf never changes a weight and never reaches a checkpoint.

One bad hit (a coordinate of 1e30 passes every finiteness check of a reader) is enough to
make a loss NaN; an optimizer step then turns every weight NaN, and a run that does not
validate in between exits normally with a checkpoint of NaNs. Every LightningModule calls
these checks (the last two through :class:`GuardedModule`):

- :func:`check_loss` on the training loss, before the backward pass;
- :func:`check_gradients` from ``on_before_optimizer_step`` (before clipping and the step);
- :func:`check_state` from ``on_save_checkpoint``, on everything the checkpoint holds.

Each raises :class:`NonFiniteError` naming the quantity, the step and the events of the batch
(``event_id``), so the bad event can be found and removed. The loss check costs one
device-to-host copy of a scalar per step; the gradient check one more.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import torch

__all__ = ["GuardedModule", "NonFiniteError", "batch_events", "check_loss", "check_gradients",
           "check_state", "non_finite_tensors"]

#: How many offending names an error lists before "and N more".
MAX_NAMES = 5


class NonFiniteError(FloatingPointError):
    """A loss, gradient or checkpoint value is NaN or infinite."""


def batch_events(batch) -> str:
    """``"events 3, 17"`` from the batch's ``event_id`` (``"events of an unknown id"`` without)."""
    ids = getattr(batch, "event_id", None)
    if ids is None:
        return "events of an unknown id"
    ids = [int(i) for i in torch.as_tensor(ids).reshape(-1).tolist()]
    return ("event " if len(ids) == 1 else "events ") + ", ".join(map(str, ids))


def _names(names: list[str]) -> str:
    more = len(names) - MAX_NAMES
    return ", ".join(names[:MAX_NAMES]) + (f" and {more} more" if more > 0 else "")


def check_loss(loss: torch.Tensor, *, step: int, events: str, what: str = "training loss") -> None:
    """Raise :class:`NonFiniteError` if ``loss`` has a NaN or inf."""
    if not bool(torch.isfinite(loss).all()):
        raise NonFiniteError(
            f"step {step}: the {what} is {loss.detach().float().cpu().tolist()} on {events}; "
            "stopped before the backward pass (no weight changed). Look for extreme or "
            "corrupt hit coordinates in those events.")


def check_gradients(named_parameters: Iterable[tuple[str, torch.nn.Parameter]], *, step: int,
                    events: str) -> None:
    """Raise :class:`NonFiniteError` if a gradient has a NaN or inf, naming the parameters."""
    params = [(n, p) for n, p in named_parameters if p.grad is not None]
    if not params:
        return
    finite = torch.stack([torch.isfinite(p.grad).all() for _, p in params])
    if bool(finite.all()):
        return
    bad = [n for (n, _), ok in zip(params, finite.tolist()) if not ok]
    raise NonFiniteError(
        f"step {step}: non-finite gradients of {len(bad)} parameter(s) ({_names(bad)}) on "
        f"{events}; stopped before the optimizer step (no weight changed).")


def non_finite_tensors(state: Mapping[str, object]) -> list[str]:
    """Names of the floating tensors of a state dict holding a NaN or inf (``*tuned_threshold``
    may be NaN: it means "not tuned")."""
    return [k for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point()
            and not k.endswith("tuned_threshold") and not bool(torch.isfinite(v).all())]


def check_state(state: Mapping[str, object], *, where: str) -> None:
    """Raise :class:`NonFiniteError` if a floating tensor of ``state`` (a state dict) has a NaN
    or inf (:func:`non_finite_tensors`)."""
    bad = non_finite_tensors(state)
    if bad:
        raise NonFiniteError(f"{where}: non-finite values in {len(bad)} tensor(s) "
                             f"({_names(bad)}); refusing to write a checkpoint of them.")


class GuardedModule:
    """LightningModule mixin: gradients are checked before every optimizer step, and the
    state before every checkpoint is written. ``training_step`` sets ``_batch_events``
    (:func:`batch_events`) so that an error names the batch's events."""

    def on_before_optimizer_step(self, optimizer) -> None:
        check_gradients(self.named_parameters(), step=self.global_step,
                        events=getattr(self, "_batch_events", "events of an unknown id"))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        check_state(checkpoint["state_dict"], where=f"checkpoint at step {self.global_step}")
