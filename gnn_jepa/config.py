"""Typed config blocks: how a nested block of a YAML config or a Python mapping becomes one.

The models take small frozen dataclasses (``EncoderConfig``, ``PredictorConfig``, ``HeadConfig``,
``OptimConfig``, ``TrackBuildingConfig``) that jsonargparse nests under ``--model.<name>.<field>``.
From Python, a plain mapping works too: its keys replace those of the model's default block,
as a partial YAML block does on the command line.
"""
from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any, Callable, Mapping, TypeVar

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


def build_from_options(factory: Callable[..., C], options: Mapping[str, Any] | None, name: str,
                       **fixed: Any) -> C:
    """``factory(**options, **fixed)`` for a plain-dict config block (``data.graph``,
    ``model.masker``), with errors that name the key path.

    Unknown keys are named with the known ones; a value of the wrong kind for a parameter
    annotated ``int``, ``float`` or ``bool`` (``num_targets: "four"``) is named with its key;
    any other ``ValueError`` or ``TypeError`` of the factory is prefixed with ``name``.

    Args:
        factory: a class or function taking keyword arguments.
        options: the block (``None``: no options).
        name: its key path in messages, e.g. ``"data.graph"``.
        fixed: arguments the caller sets (not user keys).
    """
    options = dict(options or {})
    target = factory.__init__ if inspect.isclass(factory) else factory
    params = [p for p in inspect.signature(target).parameters if p != "self"]
    unknown = sorted(set(options) - set(params) | set(options) & set(fixed))
    if unknown:
        raise ValueError(f"{name}: unknown key(s) {unknown}; known: "
                         f"{sorted(set(params) - set(fixed))}")
    hints = typing.get_type_hints(target)
    for key, value in options.items():
        want = hints.get(key)
        if want is bool:
            ok = isinstance(value, bool)
        elif want is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif want is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            continue
        if not ok:
            raise ValueError(f"{name}.{key}: expected {want.__name__}, got {value!r}")
    try:
        return factory(**options, **fixed)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{name}: {err}") from err
