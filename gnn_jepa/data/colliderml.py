"""Read ColliderML events (Parquet shards, one row per event) as TrackML-format :class:`Event`\\ s.

ColliderML (Open Data Detector, Geant4 + ACTS) stores one event per row, every per-hit or
per-particle quantity as a list column, in shards
``data/{process}_{pu0|pu200}_{tracker_hits|particles|tracks}/*.parquet``.

**Which files.** :class:`ColliderMLReader` takes a root folder: a ``*_tracker_hits`` folder
itself, or a folder holding ``*_tracker_hits`` folders directly or under ``data/``. Every
``*.parquet`` file of each hits folder is a shard; the particles of hits folder
``X_tracker_hits`` are the shards of the sibling folder ``X_particles``, which is optional.
The ``colliderml`` package's download cache nests each folder once more
(``<cache>/<dataset>/X_tracker_hits/data/X_tracker_hits/train-*.parquet``, and the same for
``X_particles``): a folder without shards of its own is read from there, so the root may be
the package's dataset folder, one of its config folders, or the inner one. Without particles the truth is unknown (zero-row truth and particles tables, as
``read_event(prefix, parts=("hits",))`` of a TrackML folder of hits only); with it, each hits
event must have its particles row. Events are listed by ``(event_id, hits folder)`` in sorted
order; one event id twice in one hits folder is an error.

**Reading one event.** Listing reads only the ``event_id`` column of every shard and keeps an
index ``event_id -> (file, row group, row)``. Reading an event reads only the columns it needs
from only the row group holding it, and keeps that decoded row group (one per kind of shard) for
the next event, so reading a row group's events in order decodes it once. A shard with one row
group per event is thus read one event at a time; Parquet cannot decode one row of a larger row
group alone.

**How the columns map** (ColliderML -> TrackML tables, :mod:`gnn_jepa.data.event`):

- ``hit_id`` = the hit's row index within its event + 1 (TrackML hit ids start at 1), so the
  ColliderML hit index is ``hit_id - 1``; hits keep the file's order.
- ``x, y, z`` (digitised position, mm) -> ``x, y, z``; ``volume_id``, ``layer_id`` as they
  are; ``module_id`` = ``surface_id``, or 0 when a shard has no ``surface_id`` column.
- truth ``particle_id`` = ColliderML ``particle_id`` + 1 (ColliderML's per-event particle
  index starts at 0, which is noise in our convention; ColliderML marks no hit as noise, so
  every hit belongs to a particle); ``tx, ty, tz`` = ``true_x, true_y, true_z``.
  ``tpx, tpy, tpz``: ColliderML stores no momentum per hit, so they are the particle's
  momentum at its vertex (``px, py, pz``), which is also what the weights and ``pt`` use.
- particles: ``particle_id`` as above, ``vx, vy, vz, px, py, pz`` as they are, ``q`` =
  ``charge`` (an integer), ``nhits`` = the number of the event's hits on the particle (0 for a
  particle without hits). Extra columns after these: ``colliderml_particle_id`` (the id on
  disk) and those of ``pdg_id, vertex_primary, primary, parent_id, perigee_d0, perigee_z0``
  present in the shard (``parent_id`` keeps ColliderML's numbering).
- truth ``weight``: ColliderML has none; the TrackML weights are computed from the truth
  and particles (:func:`gnn_jepa.data.weights.event_hit_weights`), always, without a warning.
- ``event_id`` is ColliderML's ``event_id``. Other columns (``time``, ``detector``,
  ``cell_id`` of older files, the particles' ``mass``, ``energy``, ``time``) are not read.

**Errors.** Every problem with the data raises :class:`ColliderMLFormatError` (a
:class:`~gnn_jepa.data.trackml.TrackMLFormatError`, so ``on_bad_event: skip`` leaves such an
event out) naming the file, the event id and the column: a missing column, list columns of
different lengths in one event, an event without hits, a non-finite value, a hit coordinate at
or beyond ``max_coordinate``, a hit whose particle is not among its event's particles, a
duplicate particle id, a non-integer charge.

**Writing** (:func:`write_colliderml`, the inverse of the reader; ``gnn-jepa simulate
--format colliderml``): our events become shards
``{root}/data/{process}_tracker_hits/train-00000.parquet`` and
``{root}/data/{process}_particles/train-00000.parquet`` (then ``train-00001`` ...), with the
columns and Arrow types of :data:`HITS_SCHEMA` and :data:`PARTICLES_SCHEMA`. The mapping is
the reader's, backwards: the hits keep their order (the reader then numbers them 1..N again,
so an event with ``hit_id`` 1..N in row order, as the simulator and TrackML give, comes back
with its own hit ids); ColliderML ``particle_id`` = our ``particle_id`` - 1;
``surface_id`` = ``module_id``; ``true_x, true_y, true_z`` = ``tx, ty, tz``; ``charge`` =
``q``; floats are stored as float32 (the reader gives them back as those float32 values).
What is lost: noise hits (``particle_id`` 0: ColliderML has no noise, every hit belongs to a
particle, so they are an error by default, or dropped and counted with ``noise="drop"``),
``hit_id`` values other than 1..N, the per-hit momentum ``tpx, tpy, tpz`` (the reader gives
the particle's vertex momentum), the truth ``weight`` (the reader recomputes it), ``nhits``
(recounted) and ``cells``. Columns our tables lack get fixed fills: hits ``time`` NaN
(unknown), ``detector`` 0; particles ``pdg_id`` 0 (no such particle: unknown), ``mass`` and
``energy`` NaN (unknown), ``time`` 0 (produced at the collision), ``perigee_d0`` and
``perigee_z0`` NaN (not computed), ``primary`` true, ``vertex_primary`` 1, ``parent_id`` -1
(no parent) (:data:`HIT_FILLS`, :data:`PARTICLE_FILLS`). A particles table that has one of
those particle columns (an event read from ColliderML has ``pdg_id``, ``primary``,
``vertex_primary``, ``parent_id``, ``perigee_d0``, ``perigee_z0``) gives it its own values.

pyarrow is an optional dependency (``pip install "gnn_jepa[colliderml]"``); this module
imports without it, and using the reader or the writer without it raises an ImportError
saying so.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from gnn_jepa.data.event import PARTICLE_COLUMNS, TRUTH_COLUMNS, Event
from gnn_jepa.data.trackml import MAX_COORDINATE_MM, TrackMLFormatError, _empty_table
from gnn_jepa.data.weights import event_hit_weights

try:  # optional dependency: gnn_jepa[colliderml]
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError:  # pragma: no cover - exercised by patching pq to None
    pa = pq = None

HITS_SUFFIX = "_tracker_hits"
PARTICLES_SUFFIX = "_particles"
#: Hits columns read when the truth is known / unknown (``surface_id`` is optional).
HIT_COLUMNS_TRUTH = ("x", "y", "z", "true_x", "true_y", "true_z", "particle_id", "volume_id",
                     "layer_id")
HIT_COLUMNS_NO_TRUTH = ("x", "y", "z", "volume_id", "layer_id")
PARTICLE_COLUMNS_READ = ("particle_id", "vx", "vy", "vz", "px", "py", "pz", "charge")
#: Particle columns passed through after the TrackML ones when a shard has them.
PARTICLE_EXTRAS = ("pdg_id", "vertex_primary", "primary", "parent_id", "perigee_d0", "perigee_z0")
INSTALL_HINT = 'pip install "gnn_jepa[colliderml]"'


class ColliderMLFormatError(TrackMLFormatError):
    """A ColliderML shard is missing a column, or an event in it is malformed or inconsistent."""


def require_pyarrow() -> None:
    """Raise an ImportError naming the extra to install when pyarrow is missing."""
    if pq is None:
        raise ImportError("reading ColliderML events (source: colliderml) needs pyarrow: "
                          f'{INSTALL_HINT}')


@dataclass(frozen=True)
class Location:
    """Where one event's row lives: shard file, row group, row within the row group."""

    file: Path
    row_group: int
    row: int


@dataclass(frozen=True)
class EventEntry:
    """One listed event: its id, its hits row and (when a particles folder exists) its
    particles row (``None``: the folder exists but lacks the event; ``particles_known``
    False: no particles folder, truth unknown)."""

    event_id: int
    hits: Location
    particles: Location | None
    particles_known: bool


def shard_folder(folder: Path) -> Path:
    """Where the shards of a ``*_tracker_hits`` / ``*_particles`` folder lie: the folder itself,
    or ``folder/data/<folder name>`` (the ``colliderml`` package's download layout,
    ``<cache>/<dataset>/<config>/data/<config>/train-*.parquet``) when only that holds shards."""
    nested = folder / "data" / folder.name
    if not any(folder.glob("*.parquet")) and nested.is_dir():
        return nested
    return folder


def hits_folders(root: str | Path) -> list[Path]:
    """The shard folders (:func:`shard_folder`) of the ``*_tracker_hits`` folders of ``root``
    (itself, its children, or ``root/data/*``)."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"ColliderML folder '{root}' does not exist")
    if root.name.endswith(HITS_SUFFIX):
        return [shard_folder(root)]
    found = [shard_folder(p) for base in (root, root / "data") if base.is_dir()
             for p in sorted(base.glob(f"*{HITS_SUFFIX}")) if p.is_dir()]
    return found


def particles_folder(hits: Path) -> Path | None:
    """The particles shard folder that goes with the hits shard folder ``hits``
    (``X_tracker_hits`` -> ``X_particles``): its sibling, or in the package's download layout
    (``.../X_tracker_hits/data/X_tracker_hits``) ``.../X_particles/data/X_particles``; ``None``
    when there is none."""
    name = hits.name[: -len(HITS_SUFFIX)] + PARTICLES_SUFFIX
    candidates = [hits.parent / name]
    if hits.parent.name == "data" and hits.parent.parent.name == hits.name:
        candidates.append(hits.parent.parent.parent / name)
    for c in candidates:
        if c.is_dir():
            return shard_folder(c)
    return None


def _index_shards(folder: Path) -> dict[int, Location]:
    """``event_id -> Location`` over every ``*.parquet`` shard of a folder (reads ``event_id`` only)."""
    index: dict[int, Location] = {}
    for path in sorted(folder.glob("*.parquet")):
        pf = pq.ParquetFile(path)
        if "event_id" not in pf.schema_arrow.names:
            raise ColliderMLFormatError(f"{path}: missing column 'event_id'; found "
                                        f"{pf.schema_arrow.names}")
        for rg in range(pf.num_row_groups):
            ids = pf.read_row_group(rg, columns=["event_id"]).column("event_id")
            if ids.null_count:
                raise ColliderMLFormatError(f"{path}: column 'event_id' row group {rg}: "
                                            f"{ids.null_count} null event id(s)")
            for row, eid in enumerate(ids.to_numpy().tolist()):
                eid = int(eid)
                if eid in index:
                    first = index[eid]
                    raise ColliderMLFormatError(
                        f"{path}: column 'event_id': event {eid} appears twice in {folder} "
                        f"({first.file.name} row group {first.row_group} row {first.row}, and "
                        f"{path.name} row group {rg} row {row})")
                index[eid] = Location(path, rg, row)
    return index


class ColliderMLReader:
    """The events of a ColliderML folder, listed by event id, read one at a time.

    Args:
        root: a ``*_tracker_hits`` folder, or a folder holding such folders (directly or
            under ``data/``); see the module doc.
        max_coordinate: a hit with ``|x|``, ``|y|`` or ``|z|`` at or above this many mm is
            an error (as :func:`gnn_jepa.data.trackml.read_event`).

    Raises:
        ImportError: pyarrow is not installed.
        NotADirectoryError: ``root`` does not exist.
        FileNotFoundError: it holds no ``*_tracker_hits`` folder.
        ColliderMLFormatError: a shard lacks ``event_id`` or repeats an event.
    """

    def __init__(self, root: str | Path, max_coordinate: float = MAX_COORDINATE_MM):
        require_pyarrow()
        if not max_coordinate > 0:
            raise ValueError(f"max_coordinate must be > 0 (mm), got {max_coordinate}")
        self.root = Path(root)
        self.max_coordinate = float(max_coordinate)
        folders = hits_folders(self.root)
        if not folders:
            raise FileNotFoundError(
                f"no '*{HITS_SUFFIX}' folder in '{self.root}' or '{self.root / 'data'}' "
                f"(expected e.g. data/ttbar_pu0{HITS_SUFFIX}/train-*.parquet)")
        entries = []
        for folder in folders:
            hits_index = _index_shards(folder)
            pfolder = particles_folder(folder)
            known = pfolder is not None
            p_index = _index_shards(pfolder) if known else {}
            for eid, loc in hits_index.items():
                entries.append(EventEntry(eid, loc, p_index.get(eid), known))
        self.entries: list[EventEntry] = sorted(
            entries, key=lambda e: (e.event_id, e.hits.file.parent.name))
        self._row_groups: dict[str, tuple[tuple, pa.Table]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def event_ids(self) -> list[int]:
        return [e.event_id for e in self.entries]

    def files(self, index: int) -> list[Path]:
        """The shard files event ``index`` is read from (hits, then particles if any)."""
        entry = self.entries[index]
        return [entry.hits.file] + ([entry.particles.file] if entry.particles else [])

    def name(self, index: int) -> str:
        entry = self.entries[index]
        return f"{entry.hits.file} event {entry.event_id}"

    # ------------------------------------------------------------------ reading
    def _row(self, kind: str, loc: Location, columns: list[str]) -> pa.Table:
        """The one-row table of ``loc`` (only ``columns``), decoding its row group unless it is
        the row group decoded last for this ``kind`` (same file, stamps and columns)."""
        st = loc.file.stat()
        key = (str(loc.file), st.st_size, st.st_mtime_ns, loc.row_group, tuple(columns))
        cached = self._row_groups.get(kind)
        if cached is None or cached[0] != key:
            table = pq.ParquetFile(loc.file).read_row_group(loc.row_group, columns=columns)
            self._row_groups[kind] = cached = (key, table)
        return cached[1].slice(loc.row, 1)

    def _lists(self, kind: str, loc: Location, event_id: int, required: tuple[str, ...],
               optional: tuple[str, ...]) -> tuple[dict[str, np.ndarray], int]:
        """Read one event's list columns: ``{column: values}`` and their common length."""
        names = pq.ParquetFile(loc.file).schema_arrow.names
        missing = [c for c in required if c not in names]
        where = f"{loc.file}: event {event_id}"
        if missing:
            raise ColliderMLFormatError(f"{where}: missing column(s) {missing} in the {kind} "
                                        f"shard; found {names}")
        columns = list(required) + [c for c in optional if c in names]
        row = self._row(kind, loc, columns)
        out: dict[str, np.ndarray] = {}
        length, first = None, None
        for col in columns:
            arr = row.column(col).combine_chunks()
            if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
                raise ColliderMLFormatError(f"{where}: column '{col}' is {arr.type}, "
                                            "expected a list column (one list per event)")
            if arr.null_count:
                raise ColliderMLFormatError(f"{where}: column '{col}' is null")
            values = arr.flatten()
            if values.null_count:
                i = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
                raise ColliderMLFormatError(f"{where}: column '{col}' entry {i}: null value")
            out[col] = values.to_numpy(zero_copy_only=False)
            if length is None:
                length, first = len(values), col
            elif len(values) != length:
                raise ColliderMLFormatError(
                    f"{where}: list column '{col}' has {len(values)} values but '{first}' has "
                    f"{length}: the {kind} list columns of one event must have equal lengths")
        return out, int(length or 0)

    def read(self, index: int) -> Event:
        """Read event ``index`` (0-based position in :attr:`entries`)."""
        if not 0 <= index < len(self.entries):
            raise IndexError(f"event index {index} but {self.root} holds {len(self.entries)} "
                             "events")
        return self._read(self.entries[index])

    def read_event_id(self, event_id: int) -> Event:
        """Read the (first listed) event with ColliderML id ``event_id``."""
        for entry in self.entries:
            if entry.event_id == int(event_id):
                return self._read(entry)
        raise KeyError(f"no event {event_id} in {self.root}")

    def _read(self, entry: EventEntry) -> Event:
        eid = entry.event_id
        hfile = entry.hits.file
        if entry.particles_known and entry.particles is None:
            raise ColliderMLFormatError(
                f"{hfile}: event {eid}: column 'event_id': no row for event {eid} in the "
                f"particles shards of {hfile.parent.name[: -len(HITS_SUFFIX)]}{PARTICLES_SUFFIX}")
        truth_known = entry.particles_known
        h, n = self._lists("tracker_hits", entry.hits, eid,
                           HIT_COLUMNS_TRUTH if truth_known else HIT_COLUMNS_NO_TRUTH,
                           ("surface_id",))
        if n == 0:
            raise ColliderMLFormatError(f"{hfile}: event {eid}: no hits (column 'x' is an "
                                        "empty list)")
        float_cols = ("x", "y", "z") + (("true_x", "true_y", "true_z") if truth_known else ())
        for col in float_cols:
            _check_finite(h[col], f"{hfile}: event {eid}", col, "hit")
        hits = pd.DataFrame({
            "hit_id": np.arange(1, n + 1, dtype=np.int64),
            "x": h["x"].astype(np.float64), "y": h["y"].astype(np.float64),
            "z": h["z"].astype(np.float64),
            "volume_id": h["volume_id"].astype(np.int64),
            "layer_id": h["layer_id"].astype(np.int64),
            "module_id": (h["surface_id"].astype(np.int64) if "surface_id" in h
                          else np.zeros(n, dtype=np.int64)),
        })
        for col in ("x", "y", "z"):
            v = hits[col].to_numpy()
            bad = np.flatnonzero(np.abs(v) >= self.max_coordinate)
            if len(bad):
                i = int(bad[0])
                raise ColliderMLFormatError(
                    f"{hfile}: event {eid}: column '{col}' hit {i}: value {float(v[i])!r} mm is "
                    f"outside any detector (|{col}| >= {self.max_coordinate:g} mm; {len(bad)} "
                    "such hits). A unit mix-up or a corrupt value? If your detector is this "
                    "large, raise the limit (max_coordinate, --data.max_coordinate).")
        if not truth_known:
            return Event(hits=hits, truth=_empty_table("truth"),
                         particles=_empty_table("particles"), event_id=eid)

        pfile = entry.particles.file
        p, m = self._lists("particles", entry.particles, eid, PARTICLE_COLUMNS_READ,
                           PARTICLE_EXTRAS)
        pwhere = f"{pfile}: event {eid}"
        for col in ("vx", "vy", "vz", "px", "py", "pz", "charge"):
            _check_finite(p[col], pwhere, col, "particle")
        cml_ids = p["particle_id"]
        if cml_ids.dtype.kind not in "iu":
            raise ColliderMLFormatError(f"{pwhere}: column 'particle_id' has dtype "
                                        f"{cml_ids.dtype}, expected integers")
        if cml_ids.dtype.kind == "i" and (cml_ids < 0).any():
            i = int(np.flatnonzero(cml_ids < 0)[0])
            raise ColliderMLFormatError(f"{pwhere}: column 'particle_id' particle {i}: "
                                        f"negative particle_id {cml_ids[i]}")
        if (cml_ids.astype(np.uint64) >= np.uint64(2 ** 63 - 1)).any():
            i = int(np.flatnonzero(cml_ids.astype(np.uint64) >= np.uint64(2 ** 63 - 1))[0])
            raise ColliderMLFormatError(f"{pwhere}: column 'particle_id' particle {i}: "
                                        f"particle_id {cml_ids[i]} does not fit our int64 ids")
        ids = cml_ids.astype(np.int64) + 1
        uniq, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            dup = int(uniq[counts > 1][0]) - 1
            raise ColliderMLFormatError(f"{pwhere}: column 'particle_id': duplicate "
                                        f"particle_id {dup}")
        charge = p["charge"].astype(np.float64)
        q = np.rint(charge)
        if (q != charge).any():
            i = int(np.flatnonzero(q != charge)[0])
            raise ColliderMLFormatError(f"{pwhere}: column 'charge' particle {i}: charge "
                                        f"{charge[i]} is not an integer")

        hit_cml = h["particle_id"]
        if hit_cml.dtype.kind not in "iu":
            raise ColliderMLFormatError(f"{hfile}: event {eid}: column 'particle_id' has dtype "
                                        f"{hit_cml.dtype}, expected integers")
        known = np.isin(hit_cml, cml_ids)
        if not known.all():
            i = int(np.flatnonzero(~known)[0])
            n_missing = len(np.unique(hit_cml[~known]))
            raise ColliderMLFormatError(
                f"{hfile}: event {eid}: column 'particle_id' hit {i}: particle_id {hit_cml[i]} "
                f"is absent from the particles of event {eid} in {pfile} "
                f"({n_missing} missing particle(s))")
        pid = hit_cml.astype(np.int64) + 1
        order = np.argsort(ids)
        row = order[np.searchsorted(ids, pid, sorter=order)]  # hit -> particle row
        nhits = np.bincount(row, minlength=m).astype(np.int64)

        particles = pd.DataFrame({
            "particle_id": ids,
            "vx": p["vx"].astype(np.float64), "vy": p["vy"].astype(np.float64),
            "vz": p["vz"].astype(np.float64), "px": p["px"].astype(np.float64),
            "py": p["py"].astype(np.float64), "pz": p["pz"].astype(np.float64),
            "q": q.astype(np.int64), "nhits": nhits,
        })[list(PARTICLE_COLUMNS)]
        particles["colliderml_particle_id"] = cml_ids
        for col in PARTICLE_EXTRAS:
            if col in p:
                particles[col] = p[col]
        truth = pd.DataFrame({
            "hit_id": hits["hit_id"].to_numpy(), "particle_id": pid,
            "tx": h["true_x"].astype(np.float64), "ty": h["true_y"].astype(np.float64),
            "tz": h["true_z"].astype(np.float64),
            "tpx": particles["px"].to_numpy()[row], "tpy": particles["py"].to_numpy()[row],
            "tpz": particles["pz"].to_numpy()[row], "weight": np.zeros(n),
        })[list(TRUTH_COLUMNS)]
        truth["weight"] = event_hit_weights(hits, truth, particles)
        return Event(hits=hits, truth=truth, particles=particles, event_id=eid)


def _check_finite(values: np.ndarray, where: str, col: str, what: str) -> None:
    bad = np.flatnonzero(~np.isfinite(values.astype(np.float64)))
    if len(bad):
        i = int(bad[0])
        raise ColliderMLFormatError(f"{where}: column '{col}' {what} {i}: non-finite value "
                                    f"{values[i]} ({len(bad)} such {what}s)")


# ---------------------------------------------------------------------------------- writing
def _list(t):
    return pa.list_(t)


#: The ColliderML columns :func:`write_colliderml` writes, in order, with their Arrow types.
HITS_SCHEMA = None if pa is None else pa.schema(
    [("event_id", pa.uint32())]
    + [(c, _list(pa.float32())) for c in ("x", "y", "z", "true_x", "true_y", "true_z", "time")]
    + [("particle_id", _list(pa.uint64())), ("volume_id", _list(pa.uint8())),
       ("layer_id", _list(pa.uint16())), ("surface_id", _list(pa.uint32())),
       ("detector", _list(pa.uint8()))])
PARTICLES_SCHEMA = None if pa is None else pa.schema(
    [("event_id", pa.uint32()), ("particle_id", _list(pa.uint64())),
     ("pdg_id", _list(pa.int32()))]
    + [(c, _list(pa.float32())) for c in ("mass", "energy", "charge", "vx", "vy", "vz", "time",
                                          "px", "py", "pz", "perigee_d0", "perigee_z0")]
    + [("primary", _list(pa.bool_())), ("vertex_primary", _list(pa.uint16())),
       ("parent_id", _list(pa.int64()))])
#: Fill values of the columns our tables do not have (see the module doc).
HIT_FILLS = {"time": np.nan, "detector": 0}
PARTICLE_FILLS = {"pdg_id": 0, "mass": np.nan, "energy": np.nan, "time": 0.0,
                  "perigee_d0": np.nan, "perigee_z0": np.nan, "primary": True,
                  "vertex_primary": 1, "parent_id": -1}
NOISE_MODES = ("error", "drop")


@dataclass(frozen=True)
class WriteSummary:
    """What :func:`write_colliderml` wrote.

    Attributes:
        files: the shard files, hits and particles of each shard in turn.
        events: events written.
        hits: hits written (noise hits dropped excluded).
        particles: particles written.
        noise_hits_dropped: noise hits left out (``noise="drop"``).
    """

    files: tuple[Path, ...]
    events: int
    hits: int
    particles: int
    noise_hits_dropped: int


def _np_type(t: "pa.DataType") -> np.dtype:
    return np.dtype(t.value_type.to_pandas_dtype())


def _fit_integers(values: np.ndarray, t: "pa.DataType", where: str, col: str) -> np.ndarray:
    """``values`` (integers) as the numpy type of list type ``t``; ValueError if one does not
    fit (named, with its row)."""
    dtype = _np_type(t)
    v = np.asarray(values)
    if v.dtype.kind == "f":
        bad = ~np.isfinite(v) | (v != np.rint(v))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{where}: column '{col}' row {i}: {v[i]} is not an integer")
    elif v.dtype.kind == "b":
        return v.astype(dtype)
    elif v.dtype.kind not in "iu":
        raise ValueError(f"{where}: column '{col}' has dtype {v.dtype}, expected integers")
    info = np.iinfo(dtype)
    bad = (v < info.min) | (v > info.max)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{where}: column '{col}' row {i}: {v[i]} does not fit ColliderML's "
                         f"{t.value_type} ({info.min} .. {info.max})")
    return v.astype(dtype)


def _event_columns(event: Event, noise: str) -> tuple[dict, dict, int]:
    """One event's hits and particles list values ``{column: numpy array}`` (ColliderML
    columns and types) and its count of dropped noise hits. ValueError names the event."""
    eid = int(event.event_id)
    where = f"event {eid}"
    if not 0 <= eid <= np.iinfo(np.uint32).max:
        raise ValueError(f"{where}: event_id {eid} does not fit ColliderML's uint32 event_id")
    hits, truth, particles = event.hits, event.truth, event.particles
    if len(truth) == 0 and len(hits):
        raise ValueError(f"{where}: no truth table: ColliderML shards store every hit's "
                         "particle, so an event without truth cannot be written")
    if len(truth) != len(hits):
        raise ValueError(f"{where}: {len(truth)} truth rows for {len(hits)} hits")
    hit_ids, truth_ids = hits["hit_id"].to_numpy(), truth["hit_id"].to_numpy()
    if not np.array_equal(hit_ids, truth_ids):
        i = int(np.flatnonzero(hit_ids != truth_ids)[0])
        raise ValueError(f"{where}: truth row {i} has hit_id {truth_ids[i]} but hits row {i} "
                         f"has {hit_ids[i]}: the truth must list the hits in their order")
    pid = truth["particle_id"].to_numpy()
    noise_rows = pid == 0
    n_noise = int(noise_rows.sum())
    keep = slice(None)
    if n_noise:
        if noise == "error":
            raise ValueError(
                f"{where}: {n_noise} noise hit(s) (particle_id 0, first at hit_id "
                f"{hit_ids[np.flatnonzero(noise_rows)[0]]}): ColliderML has no noise hits, "
                "every hit belongs to a particle; drop them with noise='drop' (gnn-jepa "
                "simulate --format colliderml does) or simulate with noise_fraction=0")
        keep = ~noise_rows
    if n_noise == len(pid):
        raise ValueError(f"{where}: no hits to write ({len(pid)} hit(s), all noise)")
    pid = pid[keep]

    p_ids = particles["particle_id"].to_numpy()
    _fit_integers(p_ids, pa.list_(pa.int64()), f"{where} particles", "particle_id")
    p_ids = p_ids.astype(np.int64)
    if (p_ids < 1).any():
        i = int(np.flatnonzero(p_ids < 1)[0])
        raise ValueError(f"{where} particles: row {i} has particle_id {p_ids[i]}: particle ids "
                         "start at 1 (0 is noise)")
    uniq, counts = np.unique(p_ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{where} particles: duplicate particle_id {uniq[counts > 1][0]}")
    known = np.isin(pid, p_ids)
    if not known.all():
        raise ValueError(f"{where}: a hit's particle_id {pid[~known][0]} is absent from its "
                         "particles table")

    h: dict[str, np.ndarray] = {}
    f32 = np.float32
    for src, dst in (("x", "x"), ("y", "y"), ("z", "z")):
        h[dst] = hits[src].to_numpy(np.float64)[keep].astype(f32)
    for src, dst in (("tx", "true_x"), ("ty", "true_y"), ("tz", "true_z")):
        h[dst] = truth[src].to_numpy(np.float64)[keep].astype(f32)
    n = len(h["x"])
    h["time"] = np.full(n, HIT_FILLS["time"], f32)
    h["particle_id"] = (pid.astype(np.int64) - 1).astype(np.uint64)
    for src, dst in (("volume_id", "volume_id"), ("layer_id", "layer_id"),
                     ("module_id", "surface_id")):
        h[dst] = _fit_integers(hits[src].to_numpy()[keep], HITS_SCHEMA.field(dst).type,
                               f"{where} hits", src)
    h["detector"] = np.full(n, HIT_FILLS["detector"], np.uint8)

    m = len(particles)
    p: dict[str, np.ndarray] = {"particle_id": (p_ids - 1).astype(np.uint64)}
    for col in ("vx", "vy", "vz", "px", "py", "pz"):
        p[col] = particles[col].to_numpy(np.float64).astype(f32)
    p["charge"] = _fit_integers(particles["q"].to_numpy(), pa.list_(pa.int64()),
                                f"{where} particles", "q").astype(f32)
    for col, fill in PARTICLE_FILLS.items():
        t = PARTICLES_SCHEMA.field(col).type
        if col in particles.columns:
            values = particles[col].to_numpy()
            if pa.types.is_floating(t.value_type):
                p[col] = values.astype(np.float64).astype(f32)
            else:
                p[col] = _fit_integers(values, t, f"{where} particles", col)
        else:
            p[col] = np.full(m, fill, _np_type(t))
    for name, arrays in (("hits", h), ("particles", p)):
        schema = HITS_SCHEMA if name == "hits" else PARTICLES_SCHEMA
        for col in schema.names[1:]:
            arrays[col] = arrays[col].astype(_np_type(schema.field(col).type), copy=False)
    return h, p, n_noise


def _row_group(schema: "pa.Schema", event_ids: list[int], rows: list[dict]) -> "pa.Table":
    """A table of ``rows`` (one dict of list values per event) with ``schema``."""
    lengths = np.array([len(r[schema.names[1]]) for r in rows], dtype=np.int64)
    if lengths.sum() > np.iinfo(np.int32).max:
        raise ValueError(f"events {event_ids[0]} .. {event_ids[-1]}: {lengths.sum()} values in "
                         "one row group exceed a list column's int32 offsets; write fewer "
                         "events per row group")
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    columns = [pa.array(np.asarray(event_ids, dtype=np.uint32), pa.uint32())]
    for col in schema.names[1:]:
        t = schema.field(col).type
        values = pa.array(np.concatenate([r[col] for r in rows]), t.value_type)
        columns.append(pa.ListArray.from_arrays(offsets, values, type=t))
    return pa.Table.from_arrays(columns, schema=schema)


def write_colliderml(events: Iterable[Event], root: str | Path, process: str = "sim_pu0", *,
                     events_per_shard: int = 1000, row_group_size: int = 1,
                     noise: str = "error") -> WriteSummary:
    """Write events as ColliderML Parquet shards, the inverse of :class:`ColliderMLReader`.

    Shard ``k`` (``events_per_shard`` events each, the last one fewer) is
    ``{root}/data/{process}_tracker_hits/train-{k:05d}.parquet`` plus the same name under
    ``{process}_particles``; its row groups hold ``row_group_size`` events each (the reader
    decodes a whole row group to read one of its events, so 1, the default, reads one event
    at a time with the least memory). Column mapping, fill values and what is lost: see the
    module doc. The events are consumed one at a time (a generator works), and a row group
    is written as soon as it is full, so memory holds at most one row group of events.

    Args:
        events: our events (e.g. :meth:`Simulator.simulate_many`), each with its truth.
        root: the dataset folder (created); the shards go under ``root/data``.
        process: the ColliderML configuration name, e.g. ``"sim_pu0"`` or ``"ttbar_pu200"``
            (a plain folder-name prefix: no ``/``).
        events_per_shard: events per shard file (>= 1).
        row_group_size: events per Parquet row group (>= 1).
        noise: ``"error"`` (default): an event with noise hits (``particle_id`` 0), which
            ColliderML cannot store, raises a ValueError naming it; ``"drop"``: leave the
            noise hits out and count them in the summary.

    Returns:
        A :class:`WriteSummary` (files, events, hits, particles, noise hits dropped).

    Raises:
        ImportError: pyarrow is not installed.
        ValueError: a bad argument, no events, two events with one id, or an event that
            cannot be written (no truth, noise hits with ``noise="error"``, a truth particle
            absent from its particles, a particle id below 1, an id or a number that does
            not fit its ColliderML type), naming the event.
        FileExistsError: the process's folders already hold ``*.parquet`` shards (the reader
            would mix the old events with the new ones); nothing is written then.

    On an error the shards this call wrote are removed again.
    """
    require_pyarrow()
    if noise not in NOISE_MODES:
        raise ValueError(f"noise must be one of {NOISE_MODES}, got {noise!r}")
    for name, value in (("events_per_shard", events_per_shard),
                        ("row_group_size", row_group_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not process or "/" in process or "\\" in process or process in (".", ".."):
        raise ValueError(f"process must be a folder-name prefix such as 'sim_pu0', got "
                         f"{process!r}")
    data = Path(root) / "data"
    folders = {"hits": data / f"{process}{HITS_SUFFIX}",
               "particles": data / f"{process}{PARTICLES_SUFFIX}"}
    for folder in folders.values():
        old = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
        if old:
            raise FileExistsError(f"{folder} already holds {len(old)} shard(s) ({old[0].name} "
                                  "...): write into another root or process, or remove them")
    schemas = {"hits": HITS_SCHEMA, "particles": PARTICLES_SCHEMA}
    files: list[Path] = []
    writers: dict[str, pq.ParquetWriter] = {}
    pending: list[tuple[int, dict, dict]] = []
    seen: set[int] = set()
    counts = {"events": 0, "hits": 0, "particles": 0, "noise": 0}
    in_shard = 0

    def flush() -> None:
        ids = [eid for eid, _, _ in pending]
        for kind, k in (("hits", 1), ("particles", 2)):
            writers[kind].write_table(_row_group(schemas[kind], ids, [r[k] for r in pending]))
        pending.clear()

    def close_shard() -> None:
        if pending:
            flush()
        for w in writers.values():
            w.close()
        writers.clear()

    try:
        for event in events:
            h, p, n_noise = _event_columns(event, noise)
            eid = int(event.event_id)
            if eid in seen:
                raise ValueError(f"event {eid}: written twice; ColliderML events of one "
                                 "process need distinct event ids")
            seen.add(eid)
            if not writers:
                shard = f"train-{len(files) // 2:05d}.parquet"
                for kind in ("hits", "particles"):
                    folders[kind].mkdir(parents=True, exist_ok=True)
                    path = folders[kind] / shard
                    writers[kind] = pq.ParquetWriter(path, schemas[kind])
                    files.append(path)
                in_shard = 0
            pending.append((eid, h, p))
            in_shard += 1
            counts["events"] += 1
            counts["hits"] += len(h["x"])
            counts["particles"] += len(p["particle_id"])
            counts["noise"] += n_noise
            if len(pending) == row_group_size:
                flush()
            if in_shard == events_per_shard:
                close_shard()
        close_shard()
    except BaseException:
        # leave nothing half-written: the folders held no shard before this call
        for w in writers.values():
            w.close()
        for path in files:
            path.unlink(missing_ok=True)
        raise
    if not counts["events"]:
        raise ValueError("write_colliderml: no events to write")
    return WriteSummary(files=tuple(files), events=counts["events"], hits=counts["hits"],
                        particles=counts["particles"], noise_hits_dropped=counts["noise"])
