#!/usr/bin/env python
"""The project's headline figures (``benchmarks/results/headline.json``) as Markdown.

    python scripts/headline.py                     # print the Markdown section
    python scripts/headline.py --update README.md  # rewrite the README's marked block
    python scripts/headline.py --check README.md   # exit 1, with a diff, if the block differs
    python scripts/headline.py --verify            # exit 1 if a number differs from its source
    python scripts/headline.py --refresh           # re-copy every number from its source

The block is the text between ``<!-- HEADLINE_BEGIN -->`` and ``<!-- HEADLINE_END -->``.
Every number comes from headline.json, and every number of headline.json from a raw result
file (its ``source``; ``source_keys`` locate it there, see :func:`lookup`, :func:`resolve_key`
and the file's ``"about"``). This script formats and copies; it never computes a figure (the
label-curve table's mean [min, max] of a list of per-seed scores is formatting).

Schema (``"about"`` in headline.json says the same):

* ``tracking``: ``{name: entry}``; an entry has ``trackml_score``, ``dm_efficiency``,
  ``fake_rate`` (means over seeds), ``ceiling``, ``labelled_events``, ``test_events``,
  ``runs``, ``row``, ``machine``, ``command``, ``source``, ``source_keys``; optional
  ``<metric>_min`` / ``<metric>_max``, ``ceiling_note``, ``ceiling_command``, ``run_by``,
  ``caveat``, ``note``.
* ``label_curve``: ``{arm: {"<labelled events>": [score per seed]}, "meta": {arm: {...}}}``.
* ``speed``: ``{name: entry}``; an entry has ``value``, ``unit``, ``reference``,
  ``reference_value``, ``device``, ``command``, ``row``, ``source``, ``source_keys``; optional
  ``speedup`` (+ ``speedup_basis``), ``peak_mib``, ``target``, ``run_by``, ``caveat``, ``note``.

A tracking or speed entry with ``"status": "unmeasured: <reason>"`` may leave its numbers null
(and has no source).
"""
from __future__ import annotations

import argparse
import copy
import difflib
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_HEADLINE = REPO / "benchmarks" / "results" / "headline.json"
BEGIN = "<!-- HEADLINE_BEGIN -->"
END = "<!-- HEADLINE_END -->"
SECTIONS = ("tracking", "label_curve", "speed")
META = "meta"  # the reserved key of label_curve
UNMEASURED = "unmeasured: "
#: Keys every entry must have (numbers among them may be null only with an "unmeasured" status).
TRACKING_REQUIRED = ("row", "trackml_score", "dm_efficiency", "fake_rate", "ceiling",
                     "labelled_events", "test_events", "runs", "machine", "command")
TRACKING_NUMBERS = ("trackml_score", "dm_efficiency", "fake_rate", "ceiling", "labelled_events",
                    "test_events", "runs")
SPEED_REQUIRED = ("row", "value", "unit", "reference", "reference_value", "device", "command")
SPEED_NUMBERS = ("value",)
CURVE_META_REQUIRED = ("row", "command", "machine", "source", "source_keys", "test_events")

__all__ = ["BEGIN", "END", "META", "SECTIONS", "TRACKING_REQUIRED", "SPEED_REQUIRED",
           "CURVE_META_REQUIRED", "load", "lookup", "resolve_key", "verify", "refresh", "render",
           "replace_block", "update_readme", "check_readme", "main"]


# ---------------------------------------------------------------------------- lookup
def lookup(doc: Any, path: list) -> Any:
    """The value at ``path`` in a parsed JSON document.

    Steps: a string is a dict key, an int a list index, and a dict selects the one element
    of a list whose fields equal all of the dict's items (``{"arm": "scratch", "labels":
    10}``); no match or several matches is an error, so a selector never picks a row by
    accident.
    """
    cur = doc
    for i, step in enumerate(path):
        where = f"step {i} ({json.dumps(step)}) of {json.dumps(path)}"
        if isinstance(step, dict):
            if not isinstance(cur, list):
                raise KeyError(f"{where}: expected a list, got {type(cur).__name__}")
            hits = [x for x in cur if isinstance(x, dict)
                    and all(k in x and x[k] == v and type(x[k]) is type(v)
                            for k, v in step.items())]
            if len(hits) != 1:
                raise KeyError(f"{where}: {len(hits)} list elements match, expected exactly 1")
            cur = hits[0]
        elif isinstance(step, bool) or not isinstance(step, (str, int)):
            raise TypeError(f"{where}: a step is a key (str), an index (int) or a selector (dict)")
        elif isinstance(step, int):
            if not isinstance(cur, list) or not -len(cur) <= step < len(cur):
                raise KeyError(f"{where}: no list index {step}")
            cur = cur[step]
        else:
            if not isinstance(cur, dict) or step not in cur:
                raise KeyError(f"{where}: no key {step!r}")
            cur = cur[step]
    return cur


class SourceMissing(FileNotFoundError):
    """A source file that does not exist (yet)."""


class _Sources:
    """Source files under ``root``, each read once: JSON parsed, anything else as text."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.cache: dict[str, Any] = {}

    def get(self, rel: str) -> Any:
        if rel not in self.cache:
            path = self.root / rel
            if not path.is_file():
                raise SourceMissing(f"source {rel} does not exist")
            text = path.read_text()
            if path.suffix == ".json":
                try:
                    self.cache[rel] = json.loads(text)
                except json.JSONDecodeError as e:
                    raise ValueError(f"source {rel}: not valid JSON ({e})") from None
            else:
                self.cache[rel] = text
        return self.cache[rel]


def _parse_number(text: str) -> int | float:
    return int(text) if re.fullmatch(r"-?\d+", text) else float(text)


def resolve_key(key: Any, source: str | None, sources: _Sources) -> Any:
    """The value a ``source_keys`` item names.

    ``key`` is a path (list) into the entry's own JSON ``source``; or ``{"source": file,
    "path": [...]}``, a path into another JSON file; or ``{"source": file, "regex": pattern}``
    for a number recorded only in text: the pattern must match the file exactly once, and its
    group 1 is the number (an int when it has only digits). Raises SourceMissing, KeyError,
    TypeError or ValueError.
    """
    if isinstance(key, list):
        if not source:
            raise KeyError("a path key needs the entry's source")
        doc = sources.get(source)
        if isinstance(doc, str):
            raise TypeError(f"source {source} is not JSON; a path needs a JSON source")
        return lookup(doc, key)
    if not isinstance(key, dict) or not isinstance(key.get("source"), str) \
            or len(key) != 2 or not ({"path", "regex"} & key.keys()):
        raise TypeError(f"a source key is a path (list), {{'source', 'path'}} or "
                        f"{{'source', 'regex'}}, got {json.dumps(key)}")
    doc = sources.get(key["source"])
    if "path" in key:
        if isinstance(doc, str):
            raise TypeError(f"source {key['source']} is not JSON; a path needs a JSON source")
        return lookup(doc, key["path"])
    text = doc if isinstance(doc, str) else json.dumps(doc)
    hits = list(re.finditer(key["regex"], text))
    if len(hits) != 1:
        raise KeyError(f"regex {key['regex']!r} matches {key['source']} {len(hits)} times, "
                       "expected exactly 1")
    try:
        return _parse_number(hits[0].group(1))
    except (IndexError, ValueError):
        raise ValueError(f"regex {key['regex']!r}: group 1 of the match in {key['source']} is "
                         "not a number") from None


def _key_source(key: Any, source: str | None) -> str | None:
    """The file a source key reads."""
    return key.get("source") if isinstance(key, dict) else source


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _same(a: Any, b: Any) -> bool:
    """Exactly equal: same JSON type and value, element by element for lists."""
    if isinstance(a, list) or isinstance(b, list):
        return (isinstance(a, list) and isinstance(b, list) and len(a) == len(b)
                and all(_same(x, y) for x, y in zip(a, b)))
    return type(a) is type(b) and a == b


# ---------------------------------------------------------------------------- verify
def _needs_key(field: str, value: Any) -> bool:
    """Every number needs a source key, except ``runs == 1`` (a source holding one run)."""
    return _is_number(value) and not (field == "runs" and value == 1)


def _verify_entry(name: str, e: Any, required: tuple, numbers: tuple,
                  sources: _Sources) -> list[str]:
    if not isinstance(e, dict):
        return [f"{name}: an entry is an object, got {type(e).__name__}"]
    missing = [f for f in required if f not in e]
    if missing:
        return [f"{name}: missing key(s) {missing}"]
    problems = []
    status = e.get("status")
    if status is not None and not (isinstance(status, str) and status.startswith(UNMEASURED)
                                   and len(status) > len(UNMEASURED)):
        problems.append(f"{name}: status must be '{UNMEASURED}<reason>', got {status!r}")
        status = None
    for f in numbers:
        if e[f] is None:
            if f == "ceiling" and status is None:
                if not e.get("ceiling_note"):
                    problems.append(f"{name}: a null ceiling needs a ceiling_note")
            elif status is None:
                problems.append(f"{name}: {f} is null but the entry has no "
                                f"'status': '{UNMEASURED}<reason>'")
        elif not _is_number(e[f]):
            problems.append(f"{name}: {f} is not a number ({e[f]!r})")
    if "runs" in e and _is_number(e["runs"]) and (not isinstance(e["runs"], int) or e["runs"] < 1):
        problems.append(f"{name}: runs must be a positive integer")
    keys = e.get("source_keys", {})
    if not isinstance(keys, dict):
        return problems + [f"{name}: source_keys must be an object"]
    has_numbers = any(_is_number(v) for v in e.values())
    source = e.get("source")
    if has_numbers and not isinstance(source, str):
        problems.append(f"{name}: an entry with numbers needs a source")
    for f, v in e.items():
        if _needs_key(f, v) and f not in keys:
            problems.append(f"{name}: {f} has no source_keys entry")
    for f, key in keys.items():
        if f not in e:
            problems.append(f"{name}: source_keys names {f!r}, which the entry lacks")
            continue
        if e[f] is None and status is not None:
            continue  # not measured yet: the key says where the number will come from
        try:
            want = resolve_key(key, source, sources)
        except (SourceMissing, KeyError, TypeError, ValueError) as err:
            problems.append(f"{name}: {f}: {err}")
            continue
        if not _is_number(want) or not _same(want, e[f]):
            problems.append(f"{name}: {f} = {e[f]!r} but {_key_source(key, source)} has "
                            f"{want!r} at {json.dumps(key)}")
    return problems


def _label_key(k: Any) -> bool:
    return isinstance(k, str) and k.isdigit() and str(int(k)) == k and int(k) > 0


def _verify_curve(lc: Any, sources: _Sources) -> list[str]:
    if not isinstance(lc, dict):
        return [f"label_curve: an object {{arm: {{labels: [scores]}}, '{META}': ...}}, "
                f"got {type(lc).__name__}"]
    meta = lc.get(META)
    if not isinstance(meta, dict):
        return [f"label_curve: missing the '{META}' object"]
    problems = []
    arms = [a for a in lc if a != META]
    for arm in arms:
        if arm not in meta:
            problems.append(f"label_curve.{arm}: no {META}.{arm}")
    for arm in meta:
        if arm not in lc:
            problems.append(f"label_curve.{META}.{arm}: no arm {arm!r} beside it")
    for arm in arms:
        name = f"label_curve.{arm}"
        curve, m = lc[arm], meta.get(arm)
        if not isinstance(curve, dict):
            problems.append(f"{name}: an object {{labels: [scores]}}, got {type(curve).__name__}")
            continue
        for labels, scores in curve.items():
            if not _label_key(labels):
                problems.append(f"{name}: key {labels!r} is not a labelled-events count")
            if not isinstance(scores, list) or not scores \
                    or not all(_is_number(s) for s in scores):
                problems.append(f"{name}.{labels}: a non-empty list of scores, got {scores!r}")
        if not isinstance(m, dict):
            continue
        mname = f"label_curve.{META}.{arm}"
        missing = [f for f in CURVE_META_REQUIRED if f not in m]
        if missing:
            problems.append(f"{mname}: missing key(s) {missing}")
            continue
        status = m.get("status")
        keys = m["source_keys"]
        if not isinstance(keys, dict):
            problems.append(f"{mname}: source_keys must be an object")
            continue
        for f, v in m.items():
            if _needs_key(f, v) and f not in keys:
                problems.append(f"{mname}: {f} has no source_keys entry")
        if m["test_events"] is None and not status:
            problems.append(f"{mname}: test_events is null but the arm has no status")
        try:
            sources.get(m["source"])
        except SourceMissing:
            if curve or not status:
                problems.append(f"{mname}: source {m['source']} does not exist (allowed only "
                                "for an empty arm whose meta has a status)")
            continue
        covered: set[str] = set()
        for k, key in keys.items():
            try:
                want = resolve_key(key, m["source"], sources)
            except (SourceMissing, KeyError, TypeError, ValueError) as err:
                if k == "all":
                    copied = bool(curve)
                elif _label_key(k):
                    copied = k in curve
                else:
                    copied = m.get(k) is not None
                if status and not copied:
                    continue  # runs in progress: nothing was copied from there yet
                problems.append(f"{mname}: {k}: {err}")
                continue
            where = f"{m['source']} at {json.dumps(key)}"
            if k == "all":
                if not isinstance(want, dict):
                    problems.append(f"{mname}: all: {where} is not an object")
                    continue
                for labels, scores in want.items():
                    covered.add(labels)
                    if labels not in curve:
                        problems.append(f"{name}.{labels}: missing, {where} has {scores!r}; "
                                        "run python scripts/headline.py --refresh")
                    elif not _same(curve[labels], scores):
                        problems.append(f"{name}.{labels} = {curve[labels]!r} but {where} has "
                                        f"{scores!r}")
            elif _label_key(k):
                covered.add(k)
                if k not in curve:
                    problems.append(f"{name}.{k}: missing, {where} has {want!r}; "
                                    "run python scripts/headline.py --refresh")
                elif not _same(curve[k], want):
                    problems.append(f"{name}.{k} = {curve[k]!r} but {where} has {want!r}")
            elif k not in m:
                problems.append(f"{mname}: source_keys names {k!r}, which the meta lacks")
            elif not _same(m[k], want):
                problems.append(f"{mname}: {k} = {m[k]!r} but {where} has {want!r}"
                                + ("; run python scripts/headline.py --refresh"
                                   if m[k] is None else ""))
        for labels in curve:
            if labels not in covered:
                problems.append(f"{name}.{labels}: no source key covers it")
    return problems


def verify(headline: dict, root: str | Path = REPO) -> list[str]:
    """Problems with a headline dict; [] when every number matches its source.

    Checks the required keys of each entry; that a null number comes with an
    ``"unmeasured: ..."`` status; that every number has a ``source_keys`` item (except
    ``runs`` = 1) and equals exactly (same type, unrounded) the value it locates; that each
    label-curve list equals its source list and every list of an ``"all"`` source is present.
    A label-curve source may be missing only for an empty arm whose meta has a status.
    """
    sources = _Sources(root)
    problems: list[str] = []
    for section in SECTIONS:
        if section not in headline:
            problems.append(f"missing section {section!r}")
    for section, required, numbers in (("tracking", TRACKING_REQUIRED, TRACKING_NUMBERS),
                                       ("speed", SPEED_REQUIRED, SPEED_NUMBERS)):
        entries = headline.get(section, {})
        if not isinstance(entries, dict):
            problems.append(f"{section}: an object {{name: entry}}, got {type(entries).__name__}")
            continue
        for name, e in entries.items():
            problems += _verify_entry(f"{section}.{name}", e, required, numbers, sources)
    if "label_curve" in headline:
        problems += _verify_curve(headline["label_curve"], sources)
    return problems


# ---------------------------------------------------------------------------- refresh
def refresh(headline: dict, root: str | Path = REPO) -> tuple[dict, list[str], list[str]]:
    """Every number re-copied from its source: ``(new headline, changes, problems)``.

    Tracking and speed fields and label-curve meta fields take the value their source key
    locates; a label-curve arm takes the list of each labelled-events key and, for an
    ``"all"`` key, every list of the dict it locates. Keys whose source is missing or does not
    hold the value yet are left alone (a problem unless the entry or arm has a status).
    Statuses are never changed: drop one by hand once its runs are complete.
    """
    new = copy.deepcopy(headline)
    sources = _Sources(root)
    changes: list[str] = []
    problems: list[str] = []

    def put(obj: dict, field: str, value: Any, name: str) -> None:
        if field not in obj or not _same(obj[field], value):
            changes.append(f"{name}: {json.dumps(obj.get(field))} -> {json.dumps(value)}")
            obj[field] = copy.deepcopy(value)

    for section in ("tracking", "speed"):
        for name, e in new.get(section, {}).items():
            for f, key in (e.get("source_keys") or {}).items():
                try:
                    value = resolve_key(key, e.get("source"), sources)
                except (SourceMissing, KeyError, TypeError, ValueError) as err:
                    if not e.get("status"):
                        problems.append(f"{section}.{name}: {f}: {err}")
                    continue
                put(e, f, value, f"{section}.{name}.{f}")
    lc = new.get("label_curve", {})
    for arm, m in lc.get(META, {}).items():
        curve = lc.setdefault(arm, {})
        for k, key in (m.get("source_keys") or {}).items():
            try:
                value = resolve_key(key, m.get("source"), sources)
            except (SourceMissing, KeyError, TypeError, ValueError) as err:
                if not m.get("status"):
                    problems.append(f"label_curve.{META}.{arm}: {k}: {err}")
                continue
            if k == "all":
                if not isinstance(value, dict):
                    problems.append(f"label_curve.{META}.{arm}: all: not an object")
                    continue
                for labels, scores in value.items():
                    put(curve, labels, scores, f"label_curve.{arm}.{labels}")
            elif _label_key(k):
                put(curve, k, value, f"label_curve.{arm}.{k}")
            else:
                put(m, k, value, f"label_curve.{META}.{arm}.{k}")
        ordered = dict(sorted(curve.items(), key=lambda kv: int(kv[0]) if _label_key(kv[0])
                              else 0))
        curve.clear()
        curve.update(ordered)
    return new, changes, problems


def dump(headline: dict) -> str:
    """headline.json's text (the layout of the committed file)."""
    return json.dumps(headline, indent=1, ensure_ascii=False) + "\n"


def load(path: str | Path = DEFAULT_HEADLINE) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such headline file") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    missing = [s for s in SECTIONS if s not in data]
    if missing:
        raise ValueError(f"{path}: missing section(s) {missing}; expected {list(SECTIONS)}")
    return data


# ---------------------------------------------------------------------------- formatting
def _num(x: float, unit: str | None) -> str:
    """One number in its display form: fractions 3 decimals, ms 1 decimal, MiB as GiB, hits/s in
    millions, a scaling exponent (unit ``power of hits``) as ``~ hits^a``."""
    if unit is None:
        return f"{x:.3f}"
    if unit == "ms":
        return f"{x:.1f} ms"
    if unit == "MiB":
        return f"{x / 1024:.1f} GiB"
    if unit == "x":
        return f"{x:.1f}x" if x != int(x) or x > 100 else f"{x:g}x"
    if unit == "hits/s":
        return f"{x / 1e6:.2f} M hits/s"
    if unit == "power of hits":  # a fitted scaling exponent
        return f"~ hits^{x:.2f}"
    return f"{x:g} {unit}"


def fmt_stat(mean: float, lo: float | None = None, hi: float | None = None,
             bold: bool = False, unit: str | None = None) -> str:
    """``**0.643** [0.637, 0.648]``; without ``lo``/``hi`` just the (bold) number."""
    s = _num(mean, unit)
    s = f"**{s}**" if bold else s
    if lo is not None and hi is not None:
        s += f" [{_num(lo, unit)}, {_num(hi, unit)}]"
    return s


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def _link(source: str) -> str:
    return f"[{Path(source).name}]({source})"


class _Refs:
    """Footnote letters for the commands of one table, in order of first use."""

    def __init__(self, placeholders: dict[str, str] | None = None) -> None:
        self.commands: dict[tuple, dict] = {}
        self.placeholders = placeholders or {}

    def letter(self, command: str, run_by: str | None = None, caveat: str | None = None) -> str:
        ref = self.commands.setdefault((command, run_by, caveat), {
            "letter": "abcdefghijklmnopqrstuvwxyz"[len(self.commands)],
            "command": command, "run_by": run_by, "caveat": caveat})
        return f"({ref['letter']})"

    def __call__(self, e: dict) -> str:
        """``(a) [file](path)`` for an entry (``(a) <status>`` for an unmeasured one)."""
        parts = []
        if e.get("command"):
            parts.append(self.letter(e["command"], e.get("run_by"), e.get("caveat")))
        if e.get("status"):
            parts.append(e["status"])
        elif e.get("source"):
            parts.append(_link(e["source"]))
        return " ".join(parts) or "-"

    def lines(self) -> list[str]:
        out, caveats = [], {}
        for ref in self.commands.values():
            line = f"({ref['letter']}) `{ref['command']}`"
            if ref["run_by"]:
                line += f", run by `{ref['run_by']}`"
            out.append(line)
            if ref["caveat"]:
                caveats.setdefault(ref["caveat"], []).append(f"({ref['letter']})")
        out += [f"{', '.join(letters)}: {text}" for text, letters in caveats.items()]
        out += [f"{name}: {text}" for name, text in self.placeholders.items()
                if any(name in ref["command"].split() for ref in self.commands.values())]
        if not out:
            return []
        return [""] + [line + "  " for line in out[:-1]] + out[-1:]


# ---------------------------------------------------------------------------- sections
TRACKING_COLUMNS = (("trackml_score", "TrackML score"), ("dm_efficiency", "DM eff. (pT > 1)"),
                    ("fake_rate", "fake rate"))


def _tracking_stat(e: dict, metric: str) -> str:
    if e.get(metric) is None:
        return "-"
    several = isinstance(e.get("runs"), int) and e["runs"] > 1
    lo, hi = (e.get(f"{metric}_min"), e.get(f"{metric}_max")) if several else (None, None)
    return fmt_stat(e[metric], lo, hi, bold=metric == "trackml_score")


def render_tracking(entries: dict, placeholders: dict | None = None) -> list[str]:
    refs = _Refs(placeholders)
    rows = []
    for e in entries.values():
        how = refs(e)
        if e.get("status") and e.get("trackml_score") is None:
            cells = [e["row"], "not measured"] + [_tracking_stat(e, m)
                                                  for m, _ in TRACKING_COLUMNS[1:]]
        else:
            cells = [e["row"]] + [_tracking_stat(e, m) for m, _ in TRACKING_COLUMNS]
        cells.append("-" if e.get("ceiling") is None else _num(e["ceiling"], None))
        key = e.get("source_keys", {}).get("ceiling")
        ceiling_source = _key_source(key, e.get("source")) if key is not None else None
        if e.get("ceiling") is not None and ceiling_source and ceiling_source != e.get("source"):
            how += "; ceiling: "
            if e.get("ceiling_command"):
                how += refs.letter(e["ceiling_command"]) + " "
            how += _link(ceiling_source)
        cells += ["-" if e.get("runs") is None else str(e["runs"]), e.get("machine") or "-", how]
        rows.append(cells)
    header = (["setting"] + [h for _, h in TRACKING_COLUMNS]
              + ["ceiling", "runs", "machine", "how measured"])
    return _table(header, rows) + refs.lines()


def _curve_arms(lc: dict) -> dict[str, dict]:
    return {arm: curve for arm, curve in lc.items() if arm != META}


def render_label_curve(lc: dict, placeholders: dict | None = None) -> list[str]:
    refs = _Refs(placeholders)
    meta = lc.get(META, {})
    arms = _curve_arms(lc)
    labels = sorted({int(n) for curve in arms.values() for n in curve})
    rows = []
    for arm, curve in arms.items():
        m = meta.get(arm, {})
        cells = [m.get("row", arm)]
        if not labels:
            cells.append(m.get("status") or "no runs")
        for n in labels:
            scores = curve.get(str(n))
            if not scores:
                cells.append("-")
            elif len(scores) == 1:
                cells.append(fmt_stat(scores[0], bold=True))
            else:
                cells.append(fmt_stat(statistics.fmean(scores), min(scores), max(scores),
                                      bold=True))
        runs = sorted({len(s) for s in curve.values()})
        cells.append("/".join(map(str, runs)) or "-")
        how = "-"
        if m.get("command") and m.get("source"):
            how = f"{refs.letter(m['command'], m.get('run_by'), m.get('caveat'))} " \
                  f"{_link(m['source'])}"
        if m.get("status") and labels:
            how += f", {m['status']}"
        cells.append(how)
        rows.append(cells)
    header = (["encoder"]
              + ([f"{n} labelled event{'s' if n != 1 else ''}" for n in labels] if labels
                 else ["TrackML score"])
              + ["runs each", "how measured"])
    return _table(header, rows) + refs.lines()


def render_speed(entries: dict, placeholders: dict | None = None) -> list[str]:
    refs = _Refs(placeholders)
    rows = []
    for e in entries.values():
        unit = e.get("unit")
        if e.get("value") is None:
            result = "not measured"
        else:
            result = f"**{_num(e['value'], unit)}**"
            if e.get("peak_mib") is not None:
                result += f", peak {_num(e['peak_mib'], 'MiB')}"
        if e.get("target"):
            result += f" (target {e['target']})"
        if e.get("reference_value") is not None:
            reference = f"{e['reference']} {_num(e['reference_value'], unit)}"
        else:
            reference = e.get("reference") or "-"
        speedup = "-"
        if e.get("speedup") is not None:
            speedup = f"{e['speedup']:.3g}x"
            if e.get("speedup_basis"):
                speedup += f" ({e['speedup_basis']})"
        rows.append([e["row"], result, reference, speedup, e["device"], refs(e)])
    header = ["measurement", "result", "reference", "speed-up", "device", "how measured"]
    return _table(header, rows) + refs.lines()


def render(headline: dict) -> str:
    """The Markdown section (without the begin/end markers) for a headline dict."""
    for s in SECTIONS:
        if s not in headline:
            raise ValueError(f"headline: missing section {s!r}; expected {list(SECTIONS)}")
    captions = headline.get("captions", {})
    ph = headline.get("placeholders", {})
    out = ["<!-- generated by `python scripts/headline.py --update README.md` from "
           "benchmarks/results/headline.json; edit that file, not this block -->"]
    for name, fn in (("tracking", render_tracking), ("label_curve", render_label_curve),
                     ("speed", render_speed)):
        cap = captions.get(name, {})
        title = cap.get("title", name.replace("_", " ").capitalize())
        detail = f" ({cap['detail']})" if cap.get("detail") else ""
        out += ["", f"**{title}**{detail}:", ""] + fn(headline[name], ph)
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------- README block
def replace_block(text: str, block: str, name: str = "<text>") -> str:
    """``text`` with everything between the markers replaced by ``block``."""
    b, e = text.find(BEGIN), text.find(END)
    if b < 0 or e < 0:
        missing = " and ".join(m for m, i in ((BEGIN, b), (END, e)) if i < 0)
        raise ValueError(f"{name}: no {missing} marker; add a '{BEGIN}' line and an '{END}' "
                         "line where the headline figures go")
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError(f"{name}: the markers {BEGIN} / {END} must each appear exactly once")
    if e < b:
        raise ValueError(f"{name}: {END} comes before {BEGIN}")
    return text[:b + len(BEGIN)] + "\n" + block.rstrip("\n") + "\n" + text[e:]


def update_readme(readme_path: str | Path, headline_path: str | Path = DEFAULT_HEADLINE) -> bool:
    """Rewrite the marked block of ``readme_path`` from ``headline_path``.

    Returns True when the file changed, False when it already held this rendering.
    Raises ValueError naming the file when a marker is missing.
    """
    readme_path = Path(readme_path)
    old = readme_path.read_text()
    new = replace_block(old, render(load(headline_path)), str(readme_path))
    if new == old:
        return False
    readme_path.write_text(new)
    return True


def check_readme(readme_path: str | Path, headline_path: str | Path = DEFAULT_HEADLINE) -> str:
    """Unified diff between the README and what ``--update`` would write ('' = up to date)."""
    readme_path = Path(readme_path)
    old = readme_path.read_text()
    new = replace_block(old, render(load(headline_path)), str(readme_path))
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                        f"{readme_path} (now)", f"{readme_path} (rendered)"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--headline", default=str(DEFAULT_HEADLINE), help="headline JSON file")
    p.add_argument("--root", default=str(REPO),
                   help="folder the sources are relative to (default: the repository)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--update", metavar="README", help="rewrite the marked block of this file")
    g.add_argument("--check", metavar="README",
                   help="exit 1 and print a diff when this file's block differs")
    g.add_argument("--verify", action="store_true",
                   help="exit 1 when a number differs from its source file")
    g.add_argument("--refresh", action="store_true",
                   help="re-copy every number from its source into the headline file, then verify")
    args = p.parse_args(argv)
    try:
        if args.update:
            changed = update_readme(args.update, args.headline)
            print(f"{args.update}: {'updated' if changed else 'already up to date'}")
        elif args.verify:
            problems = verify(load(args.headline), args.root)
            for line in problems:
                print(line)
            if problems:
                return 1
            print(f"{args.headline}: every number matches its source")
        elif args.refresh:
            new, changes, problems = refresh(load(args.headline), args.root)
            for line in changes:
                print(f"changed {line}")
            if changes:
                Path(args.headline).write_text(dump(new))
                print(f"{args.headline}: {len(changes)} value(s) re-copied; now run "
                      "python scripts/headline.py --update README.md")
            else:
                print(f"{args.headline}: already equal to its sources")
            problems += [p for p in verify(new, args.root) if p not in problems]
            for line in problems:
                print(line)
            return 1 if problems else 0
        elif args.check:
            diff = check_readme(args.check, args.headline)
            if diff:
                sys.stdout.write(diff)
                print(f"{args.check}: headline block is out of date; run "
                      f"python scripts/headline.py --update {args.check}", file=sys.stderr)
                return 1
            print(f"{args.check}: headline block up to date")
        else:
            sys.stdout.write(render(load(args.headline)))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
