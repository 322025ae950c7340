"""Datasets of events as PyG graphs: cached on disk and loaded lazily, or simulated on the fly.

An event is identified by its *global index* ``g``. Simulated events draw from the seed
``event_seed(seed, g)``, so the same (seed, g) gives the same event everywhere, and disjoint
index ranges give disjoint event sets (pretraining, fine-tuning, validation, test).

**The cache.** Each processed event is one file ``<cache_dir>/<recipe hash>/event_<index>.pt``
holding a *record* (:data:`CACHE_FORMAT` 3; 3 added the ``has_truth``, ``primary_pt1`` and
``num_primary_pt1`` attributes of :mod:`gnn_jepa.data.convert`)::

    {"format": 3, "payload": <bytes of torch.save(data)>, "checksum": <SHA-256 hex of payload>,
     "source": <fingerprint of the event's source files, None for simulated events>}

written atomically (temp file + rename). The recipe hash covers how events are made
(simulator settings, folder, features, graph); the fingerprint covers what a TrackML event
was read from: name, size, ``mtime_ns`` and SHA-256 of each of its files. Loading verifies
both: a file that is unreadable, of an older format or whose payload fails its checksum, and
an event whose source files changed content (or appeared, or disappeared) since it was
cached, is processed again and rewritten, with a :class:`CacheRebuildWarning` naming the
file and the reason. The source check is a ``stat`` of each file; only a changed size or
``mtime_ns`` makes it hash the file, and the same content under a new ``mtime_ns`` is
kept (its stamp refreshed). An event whose data is bad can be recorded as such
(:meth:`EventDataset.bad_reason`): ``event_<index>.bad.json`` with the reason and the
fingerprint, valid while the source files keep their content; an event has a data file or
a bad-event record, never both.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info
from torch_geometric.data import Data

from gnn_jepa.data.colliderml import ColliderMLReader, require_pyarrow
from gnn_jepa.data.convert import DEFAULT_FEATURES, event_to_data
from gnn_jepa.data.simulator import Simulator, event_seed
from gnn_jepa.data.trackml import (MAX_COORDINATE_MM, TrackMLFormatError, event_files, list_events,
                                   read_event, table_files)

#: Version of the cache record (see the module doc); part of every recipe hash, so files of
#: another version live in another folder.
CACHE_FORMAT = 3
#: Pickle protocol of a cache record: from 3 on, ``bytes`` are stored as they are (protocol 2,
#: ``torch.save``'s default, stores them as latin-1 text: 1.5x the size, slower to load).
RECORD_PICKLE_PROTOCOL = 4
#: Errors that mean "this event's data is bad" (not a bug, not a setting): a TrackML file
#: that breaks the format, including a coordinate beyond ``max_coordinate``.
BAD_EVENT_ERRORS: tuple[type[Exception], ...] = (TrackMLFormatError,)
#: Values of ``EventSource(kind=...)``.
KINDS = ("simulate", "trackml", "colliderml")


def config_hash(config: dict) -> str:
    """Short stable hash of a JSON-able config: names the cache folder of one dataset recipe."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def atomic_torch_save(obj: Any, path: Path, **kwargs: Any) -> None:
    """``torch.save`` to a temp file in the same folder, then rename: never a half-written file.

    ``kwargs`` go to ``torch.save`` (e.g. ``pickle_protocol``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh, **kwargs)
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


class CacheRebuildWarning(UserWarning):
    """A cached event file was unusable (unreadable, old format, failed checksum) or its
    source files changed since it was cached: the event is processed again."""


#: ``(path, size, mtime_ns) -> SHA-256`` of files hashed by :func:`source_fingerprint` in this
#: process: the events of one ColliderML shard share its file, which is hashed once, not once per
#: event. The same (size, mtime_ns) is taken as the same content, as :func:`fingerprint_changes` does.
_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's content, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint_names(paths: Sequence[Path]) -> list[str]:
    """How a fingerprint names each file: its name, or ``folder/name`` for every file when two
    share a name (a ColliderML event's hits and particles shards: ``train-00000.parquet`` in
    ``X_tracker_hits`` and in ``X_particles``)."""
    names = [Path(path).name for path in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{Path(path).parent.name}/{Path(path).name}" for path in paths]


def source_fingerprint(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Name, size, ``mtime_ns`` and SHA-256 of each file, in the order given."""
    out = []
    for name, path in zip(fingerprint_names(paths), paths):
        st = Path(path).stat()
        key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
        if key not in _SHA_MEMO:
            _SHA_MEMO[key] = file_sha256(path)
        out.append({"name": name, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                    "sha256": _SHA_MEMO[key]})
    return out


def fingerprint_changes(stored: Sequence[dict[str, Any]],
                        paths: Sequence[Path]) -> tuple[list[str], list[dict[str, Any]]]:
    """How the files ``paths`` differ from a stored :func:`source_fingerprint`.

    A file whose size and ``mtime_ns`` equal the stored ones is taken as unchanged without
    reading it; otherwise its content is hashed and compared.

    Args:
        stored: the fingerprint recorded when the event was cached.
        paths: the event's source files now.

    Returns:
        ``(changes, current)``: one entry per differing file, e.g.
        ``"event000001000-hits.csv (content changed)"``, ``"... (new file)"``,
        ``"... (removed)"``; and the current fingerprint (the stored one with refreshed
        stamps where only the stamps changed), meaningful when ``changes`` is empty.
    """
    before = {entry["name"]: entry for entry in stored}
    now = {name: Path(path) for name, path in zip(fingerprint_names(paths), paths)}
    changes = [f"{name} (removed)" for name in before if name not in now]
    current = []
    for name, path in now.items():
        old = before.get(name)
        if old is None:
            changes.append(f"{name} (new file)")
            continue
        st = path.stat()
        if st.st_size == old["size"] and st.st_mtime_ns == old["mtime_ns"]:
            current.append(dict(old))
            continue
        sha = file_sha256(path)
        if sha != old["sha256"]:
            changes.append(f"{name} (content changed)")
        current.append({"name": name, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha})
    return changes, current


def _short(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters) of an exception."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    return f"{type(exc).__name__}: {text[:200]}"


class EventSource:
    """Where events come from: the simulator, a folder of TrackML CSV events, or ColliderML
    Parquet shards.

    Args:
        kind: ``"simulate"``, ``"trackml"`` or ``"colliderml"``.
        simulator: keyword arguments of :class:`gnn_jepa.data.simulator.Simulator`
            (``preset`` plus overrides) when ``kind == "simulate"``.
        data_dir: the folder of ``event*-hits.csv`` files when ``kind == "trackml"``; the
            ColliderML root (a ``*_tracker_hits`` folder, or a folder holding such folders
            directly or under ``data/``, see :mod:`gnn_jepa.data.colliderml`) when
            ``kind == "colliderml"``: its events in sorted event-id order.
        seed: the simulation seed stream.
        max_coordinate: largest hit ``|x|, |y|, |z|`` (mm) a TrackML file may hold
            (:func:`gnn_jepa.data.trackml.read_event`).
    """

    def __init__(self, kind: str = "simulate", simulator: dict | None = None,
                 data_dir: str | None = None, seed: int = 0,
                 max_coordinate: float = MAX_COORDINATE_MM):
        if kind not in KINDS:
            raise ValueError(f"unknown event source {kind!r}; use 'simulate', 'trackml' or "
                             "'colliderml'")
        self.kind = kind
        self.simulator_kwargs = dict(simulator or {})
        self.data_dir = data_dir
        self.seed = int(seed)
        if not max_coordinate > 0:
            raise ValueError(f"max_coordinate must be > 0 (mm), got {max_coordinate}")
        self.max_coordinate = float(max_coordinate)
        self._simulator = None
        self._prefixes: list[Path] | None = None
        self._colliderml: ColliderMLReader | None = None
        if kind == "trackml" and not data_dir:
            raise ValueError("source 'trackml' needs data_dir (a folder of TrackML CSV events)")
        if kind == "colliderml":
            require_pyarrow()
            if not data_dir:
                raise ValueError("source 'colliderml' needs data_dir (a folder of ColliderML "
                                 "*_tracker_hits Parquet shards)")

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

    @property
    def colliderml(self) -> ColliderMLReader:
        """The ColliderML reader (source ``colliderml``), listing its folder on first use."""
        if self._colliderml is None:
            self._colliderml = ColliderMLReader(self.data_dir, max_coordinate=self.max_coordinate)
        return self._colliderml

    def _check_index(self, index: int) -> None:
        n = len(self)
        if not 0 <= index < n:
            raise IndexError(f"event index {index} but {self.data_dir} holds {n} ColliderML "
                             "events")

    def prefixes(self) -> list[Path]:
        if self._prefixes is None:
            self._prefixes = list(list_events(self.data_dir))
        return self._prefixes

    def __len__(self) -> int:
        if self.kind == "colliderml":
            return len(self.colliderml)
        return len(self.prefixes()) if self.kind == "trackml" else 2**31

    def prefix(self, index: int) -> Path:
        """The TrackML prefix (``dir/event<digits>``) of event ``index`` (source ``trackml``)."""
        prefixes = self.prefixes()
        if not 0 <= index < len(prefixes):
            hint = (" (no file named event<digits>-hits.csv or event<digits>-hits.csv.gz)"
                    if not prefixes else "")
            raise IndexError(f"event index {index} but {self.data_dir} holds {len(prefixes)} "
                             f"events{hint}")
        return prefixes[index]

    def name(self, index: int) -> str:
        """How messages name event ``index``: its TrackML prefix, ``<hits shard> event <id>``
        (ColliderML), or ``simulated event <index>``."""
        if self.kind == "colliderml":
            self._check_index(index)
            return self.colliderml.name(index)
        return str(self.prefix(index)) if self.kind == "trackml" else f"simulated event {index}"

    def files(self, index: int) -> list[Path] | None:
        """The files event ``index`` is read from (every existing table file of its TrackML
        prefix; the hits and particles shards holding a ColliderML event), ``None`` for a
        simulated event (its recipe is the simulator's settings)."""
        if self.kind == "colliderml":
            self._check_index(index)
            return self.colliderml.files(index)
        return None if self.kind == "simulate" else event_files(self.prefix(index))

    def event(self, index: int):
        """The event with global index ``index``."""
        if self.kind == "simulate":
            return self.simulator.simulate(seed=event_seed(self.seed, index), event_id=index)
        if self.kind == "colliderml":
            self._check_index(index)
            return self.colliderml.read(index)
        prefix = self.prefix(index)
        if not table_files(prefix, "truth"):  # hits only (unlabelled): fine for pretraining
            parts = ("hits", "cells") if table_files(prefix, "cells") else ("hits",)
            return read_event(prefix, parts=parts, max_coordinate=self.max_coordinate)
        return read_event(prefix, max_coordinate=self.max_coordinate)


class EventDataset(Dataset):
    """A fixed list of events, each processed once to a PyG ``Data`` and cached on disk.

    Every cached file is verified when it is loaded and rebuilt, with a
    :class:`CacheRebuildWarning`, when it is corrupt or stale (see the module doc).

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
        self._bad: dict[int, str] = {}  # memory-only: index -> why its data is bad
        self.cache_path = None
        if cache_dir is not None:
            recipe = {"source": source.describe(), "features": self.features,
                      "pre_transform": repr(pre_transform), "cache_format": CACHE_FORMAT}
            self.cache_path = Path(cache_dir) / config_hash(recipe)
            self.cache_path.mkdir(parents=True, exist_ok=True)
            meta = self.cache_path / "recipe.json"
            if not meta.exists():
                # atomic: concurrent writers (DDP ranks, parallel jobs) never see half a file
                atomic_write_text(json.dumps(recipe, indent=1, default=str), meta)

    def __len__(self) -> int:
        return len(self.indices)

    def process(self, index: int) -> Data:
        """Read or simulate event ``index`` and make its ``Data`` (no cache involved)."""
        event = self.source.event(index)
        data = event_to_data(event, self.features)
        if self.pre_transform is not None:
            data = self.pre_transform(data)
        return data

    def _file(self, index: int) -> Path:
        return self.cache_path / f"event_{index:09d}.pt"

    def _bad_file(self, index: int) -> Path:
        return self.cache_path / f"event_{index:09d}.bad.json"

    def load(self, index: int) -> Data:
        """The processed event ``index``: from memory, from its verified cache file, or
        processed now (and cached).

        A cache file that is unreadable, of an older format, fails its checksum, or whose
        event's source files changed since it was written is rebuilt with a
        :class:`CacheRebuildWarning` naming the file and the reason.

        Raises:
            TrackMLFormatError: the event's files break the TrackML format (naming the file).
        """
        return self._load(index, record_bad=False)

    def _load(self, index: int, record_bad: bool) -> Data:
        if self.cache_path is None:
            if index not in self._memory:
                self._memory[index] = self.process(index)
            return self._memory[index]
        path = self._file(index)
        if path.exists():
            data, problem = self._read_cached(index, path)
            if data is not None:
                return data
            warnings.warn(f"cached event file {path}: {problem}: rebuilding event {index}",
                          CacheRebuildWarning, stacklevel=3)
        return self._build(index, path, record_bad)

    def _read_cached(self, index: int, path: Path) -> tuple[Data | None, str | None]:
        """``(data, None)`` from a valid, current cache file, else ``(None, why not)``."""
        try:
            record = torch.load(path, weights_only=False, map_location="cpu")
        except Exception as exc:  # truncated, empty, garbage
            return None, f"unreadable ({_short(exc)})"
        if isinstance(record, Data):
            return None, "old cache format (a bare Data, no checksum)"
        if not isinstance(record, dict) or "format" not in record:
            return None, f"not a cache record (a {type(record).__name__})"
        if record["format"] != CACHE_FORMAT:
            return None, f"cache format {record['format']!r}, expected {CACHE_FORMAT}"
        payload = record.get("payload")
        if not isinstance(payload, bytes) or hashlib.sha256(payload).hexdigest() != record.get("checksum"):
            return None, "checksum mismatch (its bytes changed after it was written)"
        stored, files = record.get("source"), self.source.files(index)
        if files is not None:
            changes, current = fingerprint_changes(stored or [], files)
            if changes:
                return None, (f"source file(s) {', '.join(changes)} changed since it was cached")
            if current != stored:  # same content, new stamps: refresh them (a cheap stat next time)
                try:
                    atomic_torch_save({**record, "source": current}, path,
                                      pickle_protocol=RECORD_PICKLE_PROTOCOL)
                except OSError:
                    pass  # a read-only cache still loads; the stamps are only a shortcut
        try:
            data = torch.load(io.BytesIO(payload), weights_only=False, map_location="cpu")
        except Exception as exc:
            return None, f"unreadable payload ({_short(exc)})"
        if not isinstance(data, Data):
            return None, f"payload is a {type(data).__name__}, not a Data"
        return data, None

    def _build(self, index: int, path: Path, record_bad: bool) -> Data:
        """Process event ``index`` and cache it (or, with ``record_bad``, record why its data
        is bad). The source is fingerprinted before it is read, so an edit made while it is
        processed shows up as a change at the next load."""
        files = self.source.files(index)
        fingerprint = None if files is None else source_fingerprint(files)
        try:
            data = self.process(index)
        except BAD_EVENT_ERRORS as err:
            if record_bad:
                record = {"format": CACHE_FORMAT, "event": index, "error": type(err).__name__,
                          "reason": str(err), "source": fingerprint}
                atomic_write_text(json.dumps(record, indent=1), self._bad_file(index))
                path.unlink(missing_ok=True)  # a stale file of the event before it went bad
            raise
        buffer = io.BytesIO()
        torch.save(data, buffer)
        payload = buffer.getvalue()
        atomic_torch_save({"format": CACHE_FORMAT, "payload": payload,
                           "checksum": hashlib.sha256(payload).hexdigest(), "source": fingerprint},
                          path, pickle_protocol=RECORD_PICKLE_PROTOCOL)
        return data

    def _recorded_bad(self, index: int) -> str | None:
        """The reason of a bad-event record that still holds (same source content), else None."""
        marker = self._bad_file(index)
        try:
            record = json.loads(marker.read_text())
            stored, reason = record["source"], str(record["reason"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent or unreadable: the event is checked again
        files = self.source.files(index)
        if files is None:
            return reason
        changes, current = fingerprint_changes(stored or [], files)
        if changes:
            return None
        if current != stored:
            try:
                atomic_write_text(json.dumps({**record, "source": current}, indent=1), marker)
            except OSError:
                pass
        return reason

    def bad_reason(self, index: int, verify: bool = True) -> str | None:
        """Why event ``index``'s data is bad (the error message, naming the file), or ``None``
        when it loads.

        An event neither cached nor recorded as bad is processed now: cached if it loads,
        recorded as bad (``event_<index>.bad.json``, or in memory without a cache) if its
        reading raises one of :data:`BAD_EVENT_ERRORS`. A bad-event record holds while the
        event's source files keep their content.

        Args:
            index: the global event index.
            verify: also load and verify an existing cache file (rebuilding it if corrupt or
                stale, which may find the event bad now); ``False`` takes an existing cache
                file as good without reading it.
        """
        if self.cache_path is None:
            if index not in self._memory and index not in self._bad:
                try:
                    self._memory[index] = self.process(index)
                except BAD_EVENT_ERRORS as err:
                    self._bad[index] = str(err)
            return self._bad.get(index)
        if self._bad_file(index).exists():
            reason = self._recorded_bad(index)
            if reason is not None:
                return reason
        elif not verify and self._file(index).exists():
            return None
        try:
            self._load(index, record_bad=True)
        except BAD_EVENT_ERRORS as err:
            return str(err)
        self._bad_file(index).unlink(missing_ok=True)
        return None

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
