"""Typed config blocks: how a nested block of a YAML config or a Python mapping becomes one.

The models take small frozen dataclasses (``EncoderConfig``, ``PredictorConfig``, ``HeadConfig``,
``OptimConfig``, ``TrackBuildingConfig``) that jsonargparse nests under ``--model.<name>.<field>``.
From Python, a plain mapping works too: its keys replace those of the model's default block,
as a partial YAML block does on the command line.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

C = TypeVar("C")


def merge_config(value: Any, default: C, name: str) -> C:
    """``value`` as a config of ``default``'s type.

    Args:
        value: ``None`` (the default), a config of that type (taken as it is), or a mapping of
            some of its fields (the others from ``default``).
        default: the default config block.
        name: the block's name in error messages (``"encoder"``, ``"optim"``, ...).

    Raises:
        ValueError: a mapping with keys the block does not have (named, with the known ones).
        TypeError: anything else.
    """
    cls = type(default)
    if value is None:
        return default
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"{name}: expected a {cls.__name__} or a mapping, got {type(value).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"{name}: unknown keys {unknown}; known: {sorted(known)}")
    return dataclasses.replace(default, **value)
