#!/usr/bin/env python
"""The project's headline figures (``benchmarks/results/headline.json``) as Markdown.

    python scripts/headline.py                   # print the Markdown section
    python scripts/headline.py --update README.md  # rewrite the README's marked block
    python scripts/headline.py --check README.md   # exit 1, with a diff, if the block differs
    python scripts/headline.py --verify            # exit 1 if a number differs from its source

The block is the text between ``<!-- HEADLINE_BEGIN -->`` and ``<!-- HEADLINE_END -->``.
Every number comes from headline.json, and every number of headline.json from a raw result
file (its ``source``; ``source_keys`` locate it there, see :func:`lookup` and the file's
``"about"``). This script formats; it never computes a figure.
"""
from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_HEADLINE = REPO / "benchmarks" / "results" / "headline.json"
BEGIN = "<!-- HEADLINE_BEGIN -->"
END = "<!-- HEADLINE_END -->"
SECTIONS = ("tracking", "label_curve", "speed")
#: Numeric fields an entry may carry; each must equal the value its source key locates.
NUMBER_FIELDS = ("value", "mean", "min", "max", "runs")

__all__ = ["BEGIN", "END", "NUMBER_FIELDS", "SECTIONS", "load", "lookup", "verify", "fmt_entry",
           "render", "replace_block", "update_readme", "check_readme", "main"]


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


REQUIRED_FIELDS = ("id", "row", "metric", "label", "machine", "command", "source")


def verify(headline: dict, root: str | Path = REPO) -> list[str]:
    """Problems with a headline dict; [] when every number matches its source.

    Checks: each entry has the required fields and one number form (``value``, or ``mean``
    with ``min``/``max``/``runs``); ids are unique; ``source`` exists under ``root``; for a
    JSON source every numeric field has a ``source_keys`` path and equals the value there
    (exactly: headline.json copies, never rounds); a source without keys must be README.md
    with a ``source_section`` (figures recorded nowhere else).
    """
    root = Path(root)
    problems: list[str] = []
    docs: dict[str, Any] = {}
    seen: set[str] = set()
    for section in SECTIONS:
        for i, e in enumerate(headline.get(section, [])):
            name = f"{section}[{i}] ({e.get('id', '?')})"
            missing = [f for f in REQUIRED_FIELDS if f not in e]
            if missing:
                problems.append(f"{name}: missing field(s) {missing}")
                continue
            if e["id"] in seen:
                problems.append(f"{name}: duplicate id")
            seen.add(e["id"])
            numbers = [f for f in NUMBER_FIELDS if f in e]
            if not numbers or ("value" in e) == ("mean" in e):
                problems.append(f"{name}: needs either 'value' or 'mean' (with min/max/runs)")
            for f in numbers:
                if isinstance(e[f], bool) or not isinstance(e[f], (int, float)):
                    problems.append(f"{name}: {f} is not a number ({e[f]!r})")
            path = root / e["source"]
            if not path.is_file():
                problems.append(f"{name}: source {e['source']} does not exist")
                continue
            keys = e.get("source_keys")
            if path.suffix != ".json":
                if keys or e["source"] != "README.md" or not e.get("source_section"):
                    problems.append(f"{name}: a non-JSON source must be README.md with a "
                                    "source_section and no source_keys")
                continue
            if not isinstance(keys, dict):
                problems.append(f"{name}: a JSON source needs source_keys")
                continue
            for f in numbers:
                if f not in keys:
                    problems.append(f"{name}: {f} has no source_keys entry")
            for f, key in keys.items():
                if f not in e:
                    problems.append(f"{name}: source_keys names {f!r}, which the entry lacks")
                    continue
                if e["source"] not in docs:
                    docs[e["source"]] = json.loads(path.read_text())
                try:
                    want = lookup(docs[e["source"]], key)
                except (KeyError, TypeError) as err:
                    problems.append(f"{name}: {f}: {err}")
                    continue
                if isinstance(want, bool) or want != e[f] or type(want) is not type(e[f]):
                    problems.append(f"{name}: {f} = {e[f]!r} but {e['source']} has {want!r} "
                                    f"at {json.dumps(key)}")
    return problems


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
    millions."""
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
    return f"{x:g} {unit}"


def fmt_entry(e: dict, bold: bool = False) -> str:
    """``0.643 [0.637, 0.648]`` for mean/min/max entries, else the value with its unit."""
    unit = e.get("unit")
    if "value" in e:
        s = _num(e["value"], unit)
        return f"**{s}**" if bold else s
    s = _num(e["mean"], unit)
    s = f"**{s}**" if bold else s
    if "min" in e and "max" in e:
        s += f" [{_num(e['min'], unit)}, {_num(e['max'], unit)}]"
    return s


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


class _Refs:
    """Footnote letters for the commands of one table, in order of first use."""

    def __init__(self, placeholders: dict[str, str] | None = None) -> None:
        self.commands: dict[tuple, dict] = {}
        self.placeholders = placeholders or {}

    def __call__(self, entries: list[dict]) -> str:
        parts = []
        for e in entries:
            key = (e["command"], e.get("run_by"), e.get("caveat"))
            ref = self.commands.setdefault(key, {
                "letter": "abcdefghijklmnopqrstuvwxyz"[len(self.commands)],
                "command": e["command"], "run_by": e.get("run_by"), "caveat": e.get("caveat")})
            if e.get("source_section"):  # no raw file: the number is recorded in prose only
                where = f"{e['source']}, \"{e['source_section'].split(' / ')[-1]}\" (no raw file)"
            else:
                where = f"[{Path(e['source']).name}]({e['source']})"
            part = f"({ref['letter']}) {where}"
            if part not in parts:
                parts.append(part)
        return ", ".join(parts)

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
        return [line + "  " for line in out[:-1]] + out[-1:]


def _rows(entries: list[dict]) -> dict[str, list[dict]]:
    """Entries grouped by ``row``, in file order."""
    rows: dict[str, list[dict]] = {}
    for e in entries:
        rows.setdefault(e["row"], []).append(e)
    return rows


def _machines(entries: list[dict]) -> str:
    seen: list[str] = []
    for e in entries:
        if e["machine"] not in seen:
            seen.append(e["machine"])
    return "; ".join(seen)


# ---------------------------------------------------------------------------- sections
TRACKING_COLUMNS = (("trackml_score", "TrackML score"), ("dm_efficiency", "DM eff. (pT > 1)"),
                    ("fake_rate", "fake rate"))


def render_tracking(entries: list[dict], placeholders: dict | None = None) -> list[str]:
    refs = _Refs(placeholders)
    rows = []
    for name, es in _rows(entries).items():
        by_metric = {e["metric"]: e for e in es}
        cells = [name]
        for metric, _ in TRACKING_COLUMNS:
            e = by_metric.get(metric)
            cells.append("-" if e is None else fmt_entry(e, bold=metric == "trackml_score"))
        runs = next((e["runs"] for e in es if "runs" in e), 1)
        cells += [str(runs), _machines(es), refs(es)]
        rows.append(cells)
    header = ["setting"] + [h for _, h in TRACKING_COLUMNS] + ["runs", "machine", "how measured"]
    return _table(header, rows) + [""] + refs.lines()


def render_label_curve(entries: list[dict], placeholders: dict | None = None) -> list[str]:
    refs = _Refs(placeholders)
    labels = sorted({e["labelled_events"] for e in entries})
    groups: dict[tuple[str, str], dict[int, dict]] = {}
    for e in entries:
        groups.setdefault((e["row"], e["label"]), {})[e["labelled_events"]] = e
    rows = []
    for (arm, metric), cells_by_n in groups.items():
        es = list(cells_by_n.values())
        runs = sorted({e["runs"] for e in es})
        rows.append([arm, metric]
                    + [fmt_entry(cells_by_n[n], bold=metric == "TrackML score") if n in cells_by_n
                       else "-" for n in labels]
                    + ["/".join(str(r) for r in runs), refs(es)])
    header = (["encoder", "metric"]
              + [f"{n} labelled event{'s' if n != 1 else ''}" for n in labels]
              + ["runs each", "how measured"])
    return _table(header, rows) + [""] + refs.lines()


def render_speed(entries: list[dict], placeholders: dict | None = None) -> list[str]:
    refs = _Refs(placeholders)
    rows = []
    for name, es in _rows(entries).items():
        result = ", ".join(f"{e['label']} {fmt_entry(e)}" for e in es)
        rows.append([name, result, _machines(es), refs(es)])
    return _table(["measurement", "result", "machine", "how measured"], rows) + [""] + refs.lines()


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
    g = p.add_mutually_exclusive_group()
    g.add_argument("--update", metavar="README", help="rewrite the marked block of this file")
    g.add_argument("--check", metavar="README",
                   help="exit 1 and print a diff when this file's block differs")
    g.add_argument("--verify", action="store_true",
                   help="exit 1 when a number differs from its source file")
    args = p.parse_args(argv)
    try:
        if args.update:
            changed = update_readme(args.update, args.headline)
            print(f"{args.update}: {'updated' if changed else 'already up to date'}")
        elif args.verify:
            problems = verify(load(args.headline))
            for line in problems:
                print(line)
            if problems:
                return 1
            print(f"{args.headline}: every number matches its source")
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
