"""Step schedules: pure functions of the global step, so a resumed run continues exactly;
the AdamW optimizer every model trains with (:func:`adamw_warmup_cosine`)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch


def cosine_ramp(step: int, total: int, start: float, end: float) -> float:
    """Cosine interpolation from ``start`` (step 0) to ``end`` (step >= total)."""
    if total <= 0:
        return end
    t = min(max(step / total, 0.0), 1.0)
    return end - (end - start) * 0.5 * (1.0 + math.cos(math.pi * t))


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float = 0.01) -> float:
    """LR multiplier: linear warmup over ``warmup`` steps, then cosine decay to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    return cosine_ramp(step - warmup, max(total - warmup, 1), 1.0, min_ratio)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW and its per-step schedule (a nested ``optim:`` block in configs).

    Two parameter groups: the encoder at ``encoder_lr``, and the rest (the JEPA predictor, the
    track-finding edge head) at ``head_lr``. Each learning rate warms up linearly over
    ``warmup_steps``, then decays by a cosine to ``min_lr_ratio`` of itself at ``total_steps``
    (default: the trainer's estimated stepping batches).
    """

    encoder_lr: float = 1e-3
    head_lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 20
    total_steps: Optional[int] = None
    min_lr_ratio: float = 0.01

    def __post_init__(self) -> None:
        if self.encoder_lr < 0 or self.head_lr < 0 or self.weight_decay < 0:
            raise ValueError(f"optim: learning rates and weight_decay must be >= 0, got {self}")
        if self.warmup_steps < 0 or (self.total_steps is not None and self.total_steps < 1):
            raise ValueError(f"optim: warmup_steps must be >= 0 and total_steps >= 1, got {self}")


def adamw_warmup_cosine(groups: list[dict], optim: OptimConfig, total: int) -> dict:
    """AdamW over parameter ``groups`` (``{"params", "lr"}`` each) with ``optim``'s weight
    decay, every learning rate scaled per step by :func:`warmup_cosine` (``optim``'s warmup and
    floor, ``total`` steps): what a module's ``configure_optimizers`` returns."""
    opt = torch.optim.AdamW(groups, weight_decay=optim.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, optim.warmup_steps, total, optim.min_lr_ratio))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
