"""Datasets of events as PyG graphs: cached on disk and loaded lazily, or simulated on the fly.

An event is identified by its *global index* ``g``. Simulated events draw from the seed
``event_seed(seed, g)``, so the same (seed, g) gives the same event everywhere, and disjoint
index ranges give disjoint event sets (pretraining, fine-tuning, validation, test).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info
from torch_geometric.data import Data

from gnn_jepa.data.convert import DEFAULT_FEATURES, event_to_data
from gnn_jepa.data.simulator import Simulator, event_seed
from gnn_jepa.data.trackml import MAX_COORDINATE_MM, list_events, read_event


def config_hash(config: dict) -> str:
    """Short stable hash of a JSON-able config: names the cache folder of one dataset recipe."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def atomic_torch_save(obj, path: Path) -> None:
    """``torch.save`` to a temp file in the same folder, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(text: str, path: Path) -> None:
    """Write ``text`` to a temp file in the same folder, then rename (see :func:`atomic_torch_save`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class CorruptCacheError(RuntimeError):
    """A cached event file could not be read."""


class EventSource:
    """Where events come from: the simulator or a folder of TrackML CSV events.

    Args:
        kind: ``"simulate"`` or ``"trackml"``.
        simulator: keyword arguments of :class:`gnn_jepa.data.simulator.Simulator`
            (``preset`` plus overrides) when ``kind == "simulate"``.
        data_dir: the folder of ``event*-hits.csv`` files when ``kind == "trackml"``.
        seed: the simulation seed stream.
        max_coordinate: largest hit ``|x|, |y|, |z|`` (mm) a TrackML file may hold
            (:func:`gnn_jepa.data.trackml.read_event`).
    """

    def __init__(self, kind: str = "simulate", simulator: dict | None = None,
                 data_dir: str | None = None, seed: int = 0,
                 max_coordinate: float = MAX_COORDINATE_MM):
        if kind not in ("simulate", "trackml"):
            raise ValueError(f"unknown event source {kind!r}; use 'simulate' or 'trackml'")
        self.kind = kind
        self.simulator_kwargs = dict(simulator or {})
        self.data_dir = data_dir
        self.seed = int(seed)
        if not max_coordinate > 0:
            raise ValueError(f"max_coordinate must be > 0 (mm), got {max_coordinate}")
        self.max_coordinate = float(max_coordinate)
        self._simulator = None
        self._prefixes: list[Path] | None = None
        if kind == "trackml" and not data_dir:
            raise ValueError("source 'trackml' needs data_dir (a folder of TrackML CSV events)")

    def describe(self) -> dict:
        return {"kind": self.kind, "simulator": self.simulator_kwargs,
                "data_dir": str(self.data_dir), "seed": self.seed}

    @property
    def simulator(self):
        if self._simulator is None:
            kw = dict(self.simulator_kwargs)
            preset = kw.pop("preset", "trackml")
            self._simulator = Simulator.from_preset(preset, **kw)
        return self._simulator

    def prefixes(self) -> list[Path]:
        if self._prefixes is None:
            self._prefixes = list(list_events(self.data_dir))
        return self._prefixes

    def __len__(self) -> int:
        return len(self.prefixes()) if self.kind == "trackml" else 2**31

    def event(self, index: int):
        """The event with global index ``index``."""
        if self.kind == "simulate":
            return self.simulator.simulate(seed=event_seed(self.seed, index), event_id=index)
        prefixes = self.prefixes()
        if index >= len(prefixes):
            raise IndexError(f"event index {index} but {self.data_dir} holds {len(prefixes)} events")
        return read_event(prefixes[index], max_coordinate=self.max_coordinate)


class EventDataset(Dataset):
    """A fixed list of events, each processed once to a PyG ``Data`` and cached on disk.

    Args:
        source: the :class:`EventSource`.
        indices: global event indices of this dataset.
        cache_dir: root of the cache; ``None`` keeps processed events in memory only.
        features: node features (see :mod:`gnn_jepa.data.convert`).
        pre_transform: applied once before caching (e.g. graph building).
        transform: applied at every access.
    """

    def __init__(self, source: EventSource, indices: Sequence[int], cache_dir: str | None = None,
                 features: Sequence[str] = DEFAULT_FEATURES, pre_transform: Callable | None = None,
                 transform: Callable | None = None):
        self.source = source
        self.indices = list(indices)
        self.features = tuple(features)
        self.pre_transform = pre_transform
        self.transform = transform
        self._memory: dict[int, Data] = {}
        self.cache_path = None
        if cache_dir is not None:
            recipe = {"source": source.describe(), "features": self.features,
                      "pre_transform": repr(pre_transform)}
            self.cache_path = Path(cache_dir) / config_hash(recipe)
            self.cache_path.mkdir(parents=True, exist_ok=True)
            meta = self.cache_path / "recipe.json"
            if not meta.exists():
                # atomic: concurrent writers (DDP ranks, parallel jobs) never see half a file
                atomic_write_text(json.dumps(recipe, indent=1, default=str), meta)

    def __len__(self) -> int:
        return len(self.indices)

    def process(self, index: int) -> Data:
        event = self.source.event(index)
        data = event_to_data(event, self.features)
        if self.pre_transform is not None:
            data = self.pre_transform(data)
        return data

    def _file(self, index: int) -> Path:
        return self.cache_path / f"event_{index:09d}.pt"

    def load(self, index: int) -> Data:
        if self.cache_path is None:
            if index not in self._memory:
                self._memory[index] = self.process(index)
            return self._memory[index]
        path = self._file(index)
        if path.exists():
            try:
                return torch.load(path, weights_only=False)
            except Exception as exc:  # truncated or corrupt file
                raise CorruptCacheError(
                    f"cached event file {path} is unreadable ({type(exc).__name__}: {exc}); "
                    "delete it to rebuild it") from exc
        data = self.process(index)
        atomic_torch_save(data, path)
        return data

    def __getitem__(self, i: int) -> Data:
        data = self.load(self.indices[i])
        return self.transform(data) if self.transform is not None else data


class OnTheFlyDataset(IterableDataset):
    """An endless stream of freshly simulated events (never repeats an event).

    Each DataLoader worker and each distributed rank draws its own disjoint index stream:
    event ``start + k * stride + offset`` with ``stride = workers * world_size``.
    """

    def __init__(self, source: EventSource, start: int = 0, features: Sequence[str] = DEFAULT_FEATURES,
                 pre_transform: Callable | None = None, transform: Callable | None = None):
        if source.kind != "simulate":
            raise ValueError("on-the-fly events need the simulator as source")
        self.source = source
        self.start = int(start)
        self.features = tuple(features)
        self.pre_transform = pre_transform
        self.transform = transform

    def __iter__(self) -> Iterator[Data]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        rank, world = 0, 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        stride = nw * world
        k = rank * nw + wid
        while True:
            index = self.start + k
            data = event_to_data(self.source.event(index), self.features)
            if self.pre_transform is not None:
                data = self.pre_transform(data)
            yield self.transform(data) if self.transform is not None else data
            k += stride
