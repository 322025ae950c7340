"""Read, write and list events stored as TrackML challenge CSV files.

An event ``dir/event000001000`` is a *prefix*; its tables live in ``<prefix>-hits.csv``,
``-truth.csv``, ``-particles.csv`` and, optionally, ``-cells.csv``, each either plain or
gzip-compressed (``.csv.gz``). The official challenge files are read as they are.

Canonical dtypes: every id, count and charge column is ``int64`` (official particle ids
reach ~1e18 and must stay exact, so they are never parsed as floats), every coordinate,
momentum and weight column is ``float64``. Floats are written with the shortest text
that parses back to the same double, so ``read_event(write_event(e))`` reproduces an event
in canonical dtypes bit for bit.

Test-set events have no truth: ``read_event(prefix, parts=("hits",))`` then returns an
:class:`~gnn_jepa.data.event.Event` whose ``truth`` and ``particles`` tables have the
canonical columns and **zero rows** (truth unknown, which is different from "all hits are
noise"). :func:`write_event` writes no truth/particles files for such an event.

Every problem with the files raises :class:`TrackMLFormatError` naming the file, the column
and the offending row/value; "row i" is the 0-based data row, i.e. line i + 2 of the file.

Hit weights: the truth ``weight`` column is kept bit for bit when it has a positive sum (it
need not sum to 1). When it is missing, blank in every row, or all zero (TrackML-format
files of another detector often carry zeros), :func:`read_event` computes the TrackML
weights from the truth and particles as the simulator assigns them
(:func:`gnn_jepa.data.weights.event_hit_weights`) and says so with a
:class:`~gnn_jepa.data.weights.ComputedWeightsWarning`: for the first such event of each
folder, then at the 10th, 100th, ... (:func:`~gnn_jepa.data.weights.note_computed_weights`).
Some weights non-finite or negative is an error, like any other bad value.
"""
from __future__ import annotations

import gzip
import io
import os
import re
import uuid
import zlib
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from gnn_jepa.data.event import HIT_COLUMNS, PARTICLE_COLUMNS, TRUTH_COLUMNS, Event
from gnn_jepa.data.weights import event_hit_weights, note_computed_weights, weight_column_problem

CELL_COLUMNS = ("hit_id", "ch0", "ch1", "value")
PARTS = ("hits", "truth", "particles", "cells")
SUFFIXES = (".csv", ".csv.gz")
#: gzip level of written ``.csv.gz``: level 1 compressed a 700k-row cells table 5x faster
#: than level 6 into a 7% larger file.
GZIP_LEVEL = 1

_INT = np.dtype(np.int64)
_FLOAT = np.dtype(np.float64)
_INT_COLUMNS = {"hit_id", "particle_id", "volume_id", "layer_id", "module_id", "q", "nhits",
                "ch0", "ch1"}
_COLUMNS = {"hits": HIT_COLUMNS, "truth": TRUTH_COLUMNS, "particles": PARTICLE_COLUMNS,
            "cells": CELL_COLUMNS}
#: Required columns and their canonical dtype, per table.
SCHEMA: dict[str, dict[str, np.dtype]] = {
    part: {c: (_INT if c in _INT_COLUMNS else _FLOAT) for c in cols}
    for part, cols in _COLUMNS.items()
}
#: Columns a file may lack: a missing truth ``weight`` is computed (see the module doc).
OPTIONAL_COLUMNS = {"truth": ("weight",)}
_ID_COLUMN = {"hits": "hit_id", "truth": "hit_id", "particles": "particle_id", "cells": "hit_id"}
_EVENT_RE = re.compile(r"^event(\d+)$")
# Up to pandas 3.0 the default float parser can be one ulp off (seen with pandas 3.0.6)
# unless asked for "round_trip"; pandas 3.1 parses exactly by default and deprecates the
# option (checked on 1e5 random doubles over the whole exponent range with pandas 3.1.1).
_PANDAS_VERSION = tuple(int(v) for v in re.findall(r"\d+", pd.__version__)[:2])
_EXACT_FLOATS = {"float_precision": "round_trip"} if _PANDAS_VERSION < (3, 1) else {}
_INT_RE = re.compile(r"^\s*[+-]?\d+\s*$")
_INT64_MIN, _INT64_MAX = -(2 ** 63), 2 ** 63 - 1


class TrackMLFormatError(ValueError):
    """A TrackML event file is missing, malformed, or inconsistent with its sibling files."""


# ----------------------------------------------------------------------------- names
def parse_event_id(prefix: str | Path) -> int:
    """Event number of a prefix: ``.../event000001000`` -> 1000.

    Raises:
        TrackMLFormatError: the last path component is not ``event<digits>``.
    """
    name = Path(prefix).name
    m = _EVENT_RE.match(name)
    if m is None:
        hint = ""
        for part in PARTS:
            for suf in SUFFIXES:
                if name.endswith(f"-{part}{suf}"):
                    hint = f" (pass the prefix without '-{part}{suf}')"
        raise TrackMLFormatError(
            f"cannot parse an event id from '{prefix}': the prefix must end in "
            f"'event<digits>', e.g. 'dir/event000001000'{hint}")
    return int(m.group(1))


def event_prefix(directory: str | Path, event_id: int) -> Path:
    """The TrackML prefix of event ``event_id`` in ``directory`` (9-digit zero padding)."""
    return Path(directory) / f"event{int(event_id):09d}"


def list_events(directory: str | Path) -> list[Path]:
    """Prefixes of all events in ``directory`` that have a hits file, sorted by event id.

    Raises:
        NotADirectoryError: ``directory`` does not exist or is not a directory.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise NotADirectoryError(f"TrackML event directory '{directory}' does not exist")
    prefixes = set()
    for suf in SUFFIXES:
        for path in directory.glob(f"event*-hits{suf}"):
            stem = path.name[: -len(f"-hits{suf}")]
            if _EVENT_RE.match(stem):
                prefixes.add(directory / stem)
    return sorted(prefixes, key=lambda p: (parse_event_id(p), p.name))


def table_files(prefix: str | Path, part: str) -> list[Path]:
    """The existing files of one table of an event: ``<prefix>-<part>.csv`` and/or ``.csv.gz``.

    Normally none or one; both is an ambiguity that reading the table reports.
    """
    found = [Path(f"{prefix}-{part}{suf}") for suf in SUFFIXES]
    return [p for p in found if p.exists()]


def event_files(prefix: str | Path) -> list[Path]:
    """Every existing table file of an event (hits, truth, particles, cells; ``.csv`` or
    ``.csv.gz``), in that order: what :func:`read_event` may read."""
    return [path for part in PARTS for path in table_files(prefix, part)]


def _locate(prefix: Path, part: str) -> Path | None:
    """The existing file of one table, ``None`` if absent; both variants present is an error."""
    found = table_files(prefix, part)
    if len(found) > 1:
        raise TrackMLFormatError(
            f"both {found[0]} and {found[1]} exist: ambiguous {part} table, remove one")
    return found[0] if found else None


# ----------------------------------------------------------------------------- reading
def _empty_table(part: str) -> pd.DataFrame:
    return pd.DataFrame({c: np.zeros(0, dtype=t) for c, t in SCHEMA[part].items()})


def _diagnose_dtypes(path: Path, part: str) -> None:
    """Find the first value that cannot be parsed with its column's canonical dtype.

    Only runs after pandas' fast typed parser failed, so a Python loop is affordable.
    """
    raw = _read_csv(path, dtype=str, keep_default_na=False)
    for col, dtype in SCHEMA[part].items():
        if col not in raw.columns:  # an optional column
            continue
        for i, s in enumerate(raw[col].tolist()):
            if dtype == _INT:
                ok = bool(_INT_RE.match(s)) and _INT64_MIN <= int(s) <= _INT64_MAX
                what = "a 64-bit integer"
            else:
                try:
                    float(s)
                    ok = "_" not in s
                except ValueError:
                    ok = False
                what = "a number"
            if not ok:
                raise TrackMLFormatError(
                    f"{path}: column '{col}' row {i} (line {i + 2}): value {s!r} is not {what}")


#: What reading bytes that are not CSV text raises: a truncated or corrupt gzip stream
#: (``EOFError``, ``BadGzipFile``, ``zlib.error``), bytes that are not UTF-8, a row with too
#: many fields or an unterminated quote (``ParserError``).
_UNREADABLE = (EOFError, gzip.BadGzipFile, zlib.error, UnicodeDecodeError, pd.errors.ParserError)


def _read_csv(path: Path, **kwargs) -> pd.DataFrame:
    """``pd.read_csv``; bytes that are not a CSV table raise :class:`TrackMLFormatError`
    naming the file."""
    try:
        return pd.read_csv(path, **kwargs)
    except _UNREADABLE as err:
        raise TrackMLFormatError(f"{path}: not a readable CSV table ({type(err).__name__}: "
                                 f"{str(err).strip()})") from err


def _read_table(path: Path, part: str) -> pd.DataFrame:
    """Read one table with canonical dtypes, checking columns, types and finiteness."""
    if path.stat().st_size == 0:
        raise TrackMLFormatError(f"{path}: empty file (expected a header line with columns "
                                 f"{', '.join(SCHEMA[part])})")
    try:
        # the header as written: pandas renames a repeated name ('x', 'x.1'), hiding it
        header = _read_csv(path, header=None, nrows=1, dtype=str,
                           keep_default_na=False).iloc[0].tolist()
    except pd.errors.EmptyDataError:
        raise TrackMLFormatError(f"{path}: empty file (no header line)") from None
    repeated = sorted({c for c in header if c in SCHEMA[part] and header.count(c) > 1})
    if repeated:
        raise TrackMLFormatError(f"{path}: column(s) {repeated} appear more than once in the "
                                 f"header (which one holds the data?); found {header}")
    optional = OPTIONAL_COLUMNS.get(part, ())
    missing = [c for c in SCHEMA[part] if c not in header and c not in optional]
    if missing:
        raise TrackMLFormatError(f"{path}: missing column(s) {missing}; found {header}")
    dtypes = {c: t for c, t in SCHEMA[part].items() if c in header}
    try:
        df = _read_csv(path, dtype=dtypes, **_EXACT_FLOATS)
    except TrackMLFormatError:
        raise
    except (ValueError, OverflowError) as err:
        _diagnose_dtypes(path, part)
        raise TrackMLFormatError(f"{path}: cannot parse ({err})") from err
    extra = [c for c in df.columns if c not in SCHEMA[part]]
    return df[[c for c in SCHEMA[part] if c in dtypes] + extra]


#: Largest |x|, |y|, |z| (mm) a hit may have by default: ten times the size of the largest
#: collider detectors, so that only a unit mix-up or a corrupt value trips it.
MAX_COORDINATE_MM = 1e5


def read_event(prefix: str | Path, *, parts: Sequence[str] = PARTS,
               max_coordinate: float = MAX_COORDINATE_MM) -> Event:
    """Read one TrackML event.

    Args:
        prefix: e.g. ``"dir/event000001000"``; the event id is parsed from its name.
        parts: tables to read, a subset of ``("hits", "truth", "particles", "cells")``;
            ``"hits"`` is required. A requested ``cells`` table may be absent (then
            ``event.cells is None``); requested hits/truth/particles must exist. Tables
            not requested come back as zero-row tables with the canonical columns
            (``cells``: ``None``).
        max_coordinate: a hit with ``|x|``, ``|y|`` or ``|z|`` at or above this many mm is
            an error (default :data:`MAX_COORDINATE_MM`): one absurd but finite hit would
            otherwise make every loss of its batch NaN.

    Returns:
        The :class:`Event`, columns in canonical order and dtypes (extra columns kept
        after them). A truth ``weight`` column that is missing, blank or all zero comes
        back filled with computed TrackML weights (see the module doc).

    Raises:
        TrackMLFormatError: a missing/empty file, a missing or repeated column, a non-numeric or
            non-finite value, a hit coordinate beyond ``max_coordinate``, a negative weight,
            duplicate ids, truth rows that do not match
            the hits row for row, or a truth particle absent from the particles table.
    """
    prefix = Path(prefix)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown part(s) {unknown}; choose from {PARTS}")
    if "hits" not in parts:
        raise ValueError(f"parts={tuple(parts)} must include 'hits'")
    event_id = parse_event_id(prefix)

    tables: dict[str, pd.DataFrame | None] = {}
    sources: dict[str, str] = {}
    for part in PARTS:
        if part not in parts:
            tables[part] = None if part == "cells" else _empty_table(part)
            continue
        path = _locate(prefix, part)
        if path is None:
            if part == "cells":
                tables[part] = None
                continue
            raise TrackMLFormatError(
                f"missing {part} file for event {event_id}: neither "
                f"{prefix}-{part}.csv nor {prefix}-{part}.csv.gz exists")
        tables[part] = _read_table(path, part)
        sources[part] = str(path)
    reason = _stub_weights(tables["truth"]) if "truth" in parts else None
    _validate(tables, sources, truth_known="truth" in parts, particles_known="particles" in parts)
    _check_coordinates(tables["hits"], sources["hits"], max_coordinate)
    if "truth" in parts:
        _complete_weights(prefix, tables, sources, reason, particles_known="particles" in parts)
    return Event(hits=tables["hits"], truth=tables["truth"], particles=tables["particles"],
                 event_id=event_id, cells=tables["cells"])


def _stub_weights(truth: pd.DataFrame) -> str | None:
    """Why the truth weights must be computed, if the column is missing or blank; such a
    column is replaced by zeros (in place, canonical position) until they are."""
    column = truth["weight"].to_numpy() if "weight" in truth.columns else None
    reason = weight_column_problem(column)
    if reason is None or reason == "sums to 0":
        return reason
    if column is None:
        truth.insert(list(SCHEMA["truth"]).index("weight"), "weight", np.zeros(len(truth)))
    else:
        truth["weight"] = np.zeros(len(truth))
    return reason


def _complete_weights(prefix: Path, tables: dict, sources: dict[str, str], reason: str | None,
                      *, particles_known: bool) -> None:
    """Fill a truth ``weight`` column that is missing, blank or all zero with computed weights.

    The particles table is needed for the particles' vertices and momenta: when it was not
    asked for, it is read here if its file exists (else :func:`event_hit_weights` estimates
    both from the truth).
    """
    truth = tables["truth"]
    if reason is None:
        reason = weight_column_problem(truth["weight"].to_numpy())
    if reason is None:
        return
    particles = tables["particles"] if particles_known else None
    if particles is None:
        path = _locate(prefix, "particles")
        if path is not None:
            particles = _read_table(path, "particles")
            _validate({"hits": tables["hits"], "truth": truth, "particles": particles,
                       "cells": None}, {**sources, "particles": str(path)},
                      truth_known=True, particles_known=True)
    weights = event_hit_weights(tables["hits"], truth, particles)
    if reason == "sums to 0" and not weights.any():
        return  # no particle with >= 4 hits: zero is the right weight of every hit
    truth["weight"] = weights
    note_computed_weights(str(prefix.parent), sources["truth"], reason)


# ----------------------------------------------------------------------------- checks
def _row_desc(df: pd.DataFrame, part: str, i: int) -> str:
    idc = _ID_COLUMN[part]
    return f"row {i} ({idc} {df[idc].iat[i]})"


def _check_coordinates(hits: pd.DataFrame, source: str, limit: float) -> None:
    """Every hit within ``|x|, |y|, |z| < limit`` mm, else an error naming the first bad one."""
    if not limit > 0:
        raise ValueError(f"max_coordinate must be > 0 (mm), got {limit}")
    for col in ("x", "y", "z"):
        v = hits[col].to_numpy()
        bad = np.flatnonzero(np.abs(v) >= limit)
        if len(bad):
            i = int(bad[0])
            raise TrackMLFormatError(
                f"{source}: column '{col}' {_row_desc(hits, 'hits', i)}: value {float(v[i])!r} mm is "
                f"outside any detector (|{col}| >= {limit:g} mm; {len(bad)} such rows). A unit "
                "mix-up or a corrupt value? If your detector is this large, raise the limit "
                "(read_event(max_coordinate=...), --data.max_coordinate).")


def _validate(tables: dict[str, pd.DataFrame | None], sources: dict[str, str], *,
              truth_known: bool, particles_known: bool) -> None:
    """Check one event's tables for self-consistency (shared by reading and writing).

    Args:
        tables: ``part -> table`` (``cells`` may be ``None``).
        sources: ``part -> text naming the table in messages`` (its file).
        truth_known: check truth against hits (else truth is "unknown", zero rows).
        particles_known: check that every truth particle is in the particles table.
    """
    def src(part: str) -> str:
        return sources.get(part, f"{part} table")

    for part, df in tables.items():
        if df is None:
            continue
        for col, dtype in SCHEMA[part].items():
            if dtype != _FLOAT:
                continue
            bad = np.flatnonzero(~np.isfinite(df[col].to_numpy()))
            hint = (" (TrackML weights are finite and >= 0; leave the column out, or all zero, "
                    "to have them computed)") if col == "weight" else ""
            if len(bad):
                i = int(bad[0])
                raise TrackMLFormatError(
                    f"{src(part)}: column '{col}' {_row_desc(df, part, i)}: non-finite value "
                    f"{df[col].iat[i]} ({len(bad)} such rows){hint}")
            if col == "weight":
                bad = np.flatnonzero(df[col].to_numpy() < 0)
                if len(bad):
                    i = int(bad[0])
                    raise TrackMLFormatError(
                        f"{src(part)}: column '{col}' {_row_desc(df, part, i)}: negative weight "
                        f"{df[col].iat[i]} ({len(bad)} such rows){hint}")

    hits, truth, particles, cells = (tables["hits"], tables["truth"], tables["particles"],
                                     tables["cells"])
    if len(hits) == 0:
        raise TrackMLFormatError(f"{src('hits')}: no hits (header only)")
    _check_unique(hits, "hit_id", src("hits"))

    if truth_known:
        h_ids = hits["hit_id"].to_numpy()
        t_ids = truth["hit_id"].to_numpy()
        if len(t_ids) != len(h_ids) or not np.array_equal(t_ids, h_ids):
            raise TrackMLFormatError(f"{src('truth')}: " + _mismatch(t_ids, h_ids, src("hits")))
    if truth_known and particles_known:
        _check_unique(particles, "particle_id", src("particles"))
        pid = truth["particle_id"].to_numpy()
        known = np.isin(pid, particles["particle_id"].to_numpy()) | (pid == 0)
        if not known.all():
            i = int(np.flatnonzero(~known)[0])
            n_missing = len(np.unique(pid[~known]))
            raise TrackMLFormatError(
                f"{src('truth')}: column 'particle_id' {_row_desc(truth, 'truth', i)}: "
                f"particle_id {pid[i]} is absent from {src('particles')} "
                f"({n_missing} missing particle(s))")

    if cells is not None and len(cells):
        ok = np.isin(cells["hit_id"].to_numpy(), hits["hit_id"].to_numpy())
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise TrackMLFormatError(
                f"{src('cells')}: column 'hit_id' row {i}: hit_id {cells['hit_id'].iat[i]} "
                f"is absent from {src('hits')}")


def _check_unique(df: pd.DataFrame, col: str, source: str) -> None:
    dup = df[col].duplicated(keep="first").to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        value = df[col].iat[i]
        first = int(np.flatnonzero(df[col].to_numpy() == value)[0])
        raise TrackMLFormatError(f"{source}: column '{col}': duplicate {col} {value} "
                                 f"(rows {first} and {i})")


def _mismatch(t_ids: np.ndarray, h_ids: np.ndarray, hits_source: str) -> str:
    """Describe how the truth hit_id column differs from the hits hit_id column."""
    only_t = np.setdiff1d(t_ids, h_ids)
    only_h = np.setdiff1d(h_ids, t_ids)
    msg = (f"truth rows must list the hits of {hits_source} row for row; truth has "
           f"{len(t_ids)} rows, hits {len(h_ids)}")
    if len(only_t):
        msg += f"; hit_id {only_t[0]} is in truth but not in hits ({len(only_t)} such)"
    if len(only_h):
        msg += f"; hit_id {only_h[0]} is in hits but not in truth ({len(only_h)} such)"
    if not len(only_t) and not len(only_h):
        n = min(len(t_ids), len(h_ids))
        diff = np.flatnonzero(t_ids[:n] != h_ids[:n])
        if len(diff):
            i = int(diff[0])
            msg += f"; order differs first at row {i}: truth hit_id {t_ids[i]}, hits hit_id {h_ids[i]}"
        else:
            msg += "; the hit_id sets agree but counts differ (duplicate hit_id in truth)"
    return msg


# ----------------------------------------------------------------------------- writing
def _canonical(df: pd.DataFrame, part: str, event_id: int) -> pd.DataFrame:
    """Copy of ``df`` with required columns first in canonical dtypes (exact casts only)."""
    missing = [c for c in SCHEMA[part] if c not in df.columns]
    if missing:
        raise TrackMLFormatError(f"event {event_id} {part} table: missing column(s) {missing}; "
                                 f"found {list(df.columns)}")
    out = {}
    for col, dtype in SCHEMA[part].items():
        values = df[col].to_numpy()
        if values.dtype.kind not in "iufb":
            raise TrackMLFormatError(f"event {event_id} {part} table: column '{col}' has "
                                     f"non-numeric dtype {values.dtype}")
        cast = values.astype(dtype)
        if dtype == _INT:
            with np.errstate(invalid="ignore"):
                inexact = cast != values
            if np.any(inexact):
                i = int(np.flatnonzero(inexact)[0])
                raise TrackMLFormatError(f"event {event_id} {part} table: column '{col}' row {i}:"
                                         f" value {values[i]} is not an integer")
        out[col] = cast
    for col in df.columns:
        if col not in out:
            out[col] = df[col].to_numpy()
    return pd.DataFrame(out)


def _csv_text(df: pd.DataFrame) -> str | None:
    """CSV text of an all-numeric table, ``None`` if a column is not numeric.

    Python's ``repr`` of a float is the shortest text that parses back to the same double
    (``-0.0`` and subnormals included), and formatting column lists in Python is ~3x
    faster than ``DataFrame.to_csv`` on a 700k-row cells table.
    """
    columns = []
    for col in df.columns:
        values = df[col].to_numpy()
        if values.dtype.kind in "iub":
            columns.append(list(map(str, values.tolist())))
        elif values.dtype.kind == "f":
            columns.append(list(map(repr, values.astype(np.float64).tolist())))
        else:
            return None
    header = ",".join(map(str, df.columns))
    return header + "\n" + "".join(line + "\n" for line in map(",".join, zip(*columns)))


def _write_csv(df: pd.DataFrame, path: Path, compress: bool) -> None:
    """Write one table; gzip without timestamp or file name, so equal tables give equal bytes."""
    text = _csv_text(df)
    if text is None:  # non-numeric extra columns: let pandas quote them
        buf = io.StringIO()
        df.to_csv(buf, index=False)
        text = buf.getvalue()
    data = text.encode("utf-8")
    with open(path, "wb") as raw:
        if compress:
            with gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0,
                               compresslevel=GZIP_LEVEL) as gz:
                gz.write(data)
        else:
            raw.write(data)


def write_event(event: Event, prefix: str | Path, *, compress: bool = False) -> list[Path]:
    """Write ``event`` as TrackML CSV files and return their paths.

    Each file is written to a temporary name in the target directory and renamed into
    place (``os.replace``) only once every file has been written, so a crash never leaves
    a half-written table. Floats are written as the shortest decimal text that parses back
    to the same double (exact round trip); float32 columns are widened to float64 first.
    Truth and particles files are written only when the truth table has rows (an event
    read without truth stays without truth); ``cells`` only when present. A file of the
    other compression (``.csv`` vs ``.csv.gz``) at the same name is removed, so the prefix
    never holds two versions of a table.

    Args:
        event: the event; its tables are validated like :func:`read_event` validates files.
        prefix: ``dir/event<digits>`` (its number must equal ``event.event_id``), or an
            existing directory, in which case ``dir/event<event_id:09d>`` is used.
        compress: write ``.csv.gz`` (gzip with a fixed timestamp, so identical events give
            identical bytes) instead of ``.csv``.

    Raises:
        TrackMLFormatError: the event's tables are inconsistent or the prefix's event
            number differs from ``event.event_id``.
    """
    prefix = Path(prefix)
    if prefix.is_dir():
        prefix = event_prefix(prefix, event.event_id)
    if parse_event_id(prefix) != int(event.event_id):
        raise TrackMLFormatError(f"prefix '{prefix}' names event {parse_event_id(prefix)} but "
                                 f"event.event_id is {event.event_id}")
    eid = int(event.event_id)
    tables: dict[str, pd.DataFrame | None] = {
        "hits": _canonical(event.hits, "hits", eid),
        # a zero-row truth means "truth unknown": its particles are neither checked nor written
        "truth": (_canonical(event.truth, "truth", eid) if len(event.truth)
                  else _empty_table("truth")),
        "particles": (_canonical(event.particles, "particles", eid) if len(event.truth)
                      else _empty_table("particles")),
        "cells": None if event.cells is None else _canonical(event.cells, "cells", eid),
    }
    truth_known = len(tables["truth"]) > 0
    _validate(tables, {p: f"event {eid} {p} table" for p in PARTS},
              truth_known=truth_known, particles_known=truth_known)
    to_write = ["hits"]
    if len(tables["truth"]):
        to_write += ["truth", "particles"]
    if tables["cells"] is not None:
        to_write.append("cells")

    prefix.parent.mkdir(parents=True, exist_ok=True)
    suffix, other = (".csv.gz", ".csv") if compress else (".csv", ".csv.gz")
    staged: list[tuple[Path, Path]] = []
    try:
        for part in to_write:
            final = Path(f"{prefix}-{part}{suffix}")
            tmp = final.parent / f".{final.name}.{uuid.uuid4().hex}.tmp"
            staged.append((tmp, final))
            _write_csv(tables[part], tmp, compress)
        for tmp, final in staged:
            os.replace(tmp, final)
            twin = Path(str(final)[: -len(suffix)] + other)
            if twin.exists():
                twin.unlink()
    finally:
        for tmp, _ in staged:
            if tmp.exists():
                tmp.unlink()
    return [final for _, final in staged]


def read_events(prefixes: Iterable[str | Path], **kwargs) -> list[Event]:
    """Read several events (``kwargs`` go to :func:`read_event`)."""
    return [read_event(p, **kwargs) for p in prefixes]
