"""Step schedules: pure functions of the global step, so a resumed run continues exactly."""
from __future__ import annotations

import math


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
