"""scripts/headline.py and benchmarks/results/headline.json: the rendering shows each number as
formatted, --update replaces only the marked block, every headline number equals the raw result
it names (--verify), --refresh re-copies them, and scripts/make_figures.py draws its figures (no
training, no benchmark runs)."""
from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
HEADLINE_JSON = REPO / "benchmarks" / "results" / "headline.json"


def _load_script(name: str):
    path = REPO / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


headline = _load_script("headline")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


TRACK_KEYS = {f"{m}{s}": ["heads", "a", m, k] for m in ("trackml_score", "dm_efficiency",
                                                       "fake_rate")
              for s, k in (("", "mean"), ("_min", "min"), ("_max", "max"))}

SMALL = {
    "about": "test",
    "captions": {"tracking": {"title": "Tracks", "detail": "test events"}},
    "placeholders": {"CKPT": "a checkpoint made by `python make.py`"},
    "tracking": {
        "small_a": {
            "row": "setting A", "trackml_score": 0.64333, "trackml_score_min": 0.63696,
            "trackml_score_max": 0.64825, "dm_efficiency": 0.87841, "dm_efficiency_min": 0.868,
            "dm_efficiency_max": 0.887, "fake_rate": 0.10381, "fake_rate_min": 0.1016,
            "fake_rate_max": 0.10695, "ceiling": 0.96733, "labelled_events": 10,
            "test_events": 20, "runs": 3, "machine": "test box", "command": "python run.py --x 1",
            "ceiling_command": "python other.py", "source": "r/a.json",
            "source_keys": {**TRACK_KEYS,
                            "ceiling": {"source": "r/b.json", "path": ["rows", {"edge": "truth"},
                                                                       "score"]},
                            "labelled_events": {"source": "r/notes.md",
                                                "regex": r"trained on (\d+) labelled events"},
                            "test_events": ["heads", "a", "test_events"],
                            "runs": ["heads", "a", "runs"]}},
        "one_run": {
            "row": "setting B", "trackml_score": 0.80449, "dm_efficiency": 0.96283,
            "fake_rate": 0.11506, "ceiling": None, "ceiling_note": "not measured on this graph",
            "labelled_events": 200, "test_events": 10, "runs": 1, "machine": "gpu box",
            "command": "python big.py", "source": "r/b.json",
            "source_keys": {"trackml_score": ["rows", {"edge": "seg"}, "score"],
                            "dm_efficiency": ["rows", {"edge": "seg"}, "dm"],
                            "fake_rate": ["rows", {"edge": "seg"}, "fake"],
                            "labelled_events": ["labels"], "test_events": ["tests"]}},
        "full": {
            "row": "setting C", "trackml_score": None, "dm_efficiency": None, "fake_rate": None,
            "ceiling": None, "labelled_events": None, "test_events": None, "runs": None,
            "status": "unmeasured: runs in progress", "machine": "test box",
            "command": "python curve.py --labels 300"},
    },
    "label_curve": {
        "scratch": {"1": [0.37345, 0.39753, 0.37715], "10": [0.63696, 0.64825, 0.64479]},
        "frozen": {},
        "meta": {
            "scratch": {"row": "scratch", "command": "python curve.py", "machine": "test box",
                        "source": "r/curve.json",
                        "source_keys": {"all": ["scratch"],
                                        "test_events": ["stats", "scratch", "1", "test_events"]},
                        "test_events": 20},
            "frozen": {"row": "frozen", "command": "python curve.py --ckpt CKPT",
                       "caveat": "needs flag Z", "machine": "test box",
                       "source": "r/frozen_curve.json", "source_keys": {"all": ["frozen"]},
                       "test_events": None, "status": "runs in progress"},
        },
    },
    "speed": {
        "sim": {"row": "Simulator", "value": 2800000.0, "unit": "hits/s", "reference": "ToyTrack",
                "reference_value": 320000.0, "speedup": 8.871, "speedup_basis": "of the medians",
                "target": "10x", "device": "2-core CPU VM", "command": "python sim.py",
                "source": "r/s.json",
                "source_keys": {"value": ["sim", "ours"], "reference_value": ["sim", "toy"],
                                "speedup": ["sim", "speedup"]}},
        "step": {"row": "Step", "value": 392.832, "unit": "ms", "reference": None,
                 "reference_value": None, "peak_mib": 39639.4, "device": "H100",
                 "command": "python run.py --x 1", "run_by": "bash suite.sh", "source": "r/s.json",
                 "source_keys": {"value": ["step", "ms"], "peak_mib": ["step", "peak"]}},
        "gpu_sim": {"row": "Simulator on GPU", "value": None, "unit": "hits/s",
                    "reference": "ToyTrack", "reference_value": None, "device": "H100",
                    "command": "python sim.py --device cuda",
                    "status": "unmeasured: no GPU lent"},
    },
}

SOURCES = {
    "r/a.json": {"heads": {"a": {
        "trackml_score": {"mean": 0.64333, "min": 0.63696, "max": 0.64825},
        "dm_efficiency": {"mean": 0.87841, "min": 0.868, "max": 0.887},
        "fake_rate": {"mean": 0.10381, "min": 0.1016, "max": 0.10695},
        "test_events": 20, "runs": 3}}},
    "r/b.json": {"labels": 200, "tests": 10, "rows": [
        {"edge": "seg", "score": 0.80449, "dm": 0.96283, "fake": 0.11506},
        {"edge": "truth", "score": 0.96733, "dm": 1.0, "fake": 0.0}]},
    "r/notes.md": "# Notes\n\nThe head was trained on 10 labelled events, 300 steps.\n",
    "r/curve.json": {"scratch": {"1": [0.37345, 0.39753, 0.37715],
                                 "10": [0.63696, 0.64825, 0.64479]},
                     "stats": {"scratch": {"1": {"test_events": 20}}}},
    "r/s.json": {"sim": {"ours": 2800000.0, "toy": 320000.0, "speedup": 8.871},
                 "step": {"ms": 392.832, "peak": 39639.4}},
}


@pytest.fixture
def root(tmp_path):
    """A folder holding SMALL's source files."""
    base = tmp_path / "repo"
    for rel, content in SOURCES.items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else json.dumps(content, indent=1))
    return base


def _write_source(root: Path, rel: str, doc: dict) -> None:
    (root / rel).write_text(json.dumps(doc))


# ---------------------------------------------------------------------------- render
def test_render_tracking_rows():
    md = headline.render(SMALL)
    assert "**Tracks** (test events):" in md
    assert ("| setting | TrackML score | DM eff. (pT > 1) | fake rate | ceiling | runs | machine "
            "| how measured |") in md
    assert ("| setting A | **0.643** [0.637, 0.648] | 0.878 [0.868, 0.887] "
            "| 0.104 [0.102, 0.107] | 0.967 | 3 | test box "
            "| (a) [a.json](r/a.json); ceiling: (b) [b.json](r/b.json) |") in md
    assert ("| setting B | **0.804** | 0.963 | 0.115 | - | 1 | gpu box | (c) [b.json](r/b.json) |"
            in md)
    assert ("| setting C | not measured | - | - | - | - | test box "
            "| (d) unmeasured: runs in progress |") in md
    assert "(a) `python run.py --x 1`" in md
    assert "(b) `python other.py`" in md


def test_render_label_curve_rows():
    md = headline.render(SMALL)
    assert "| encoder | 1 labelled event | 10 labelled events | runs each | how measured |" in md
    assert ("| scratch | **0.383** [0.373, 0.398] | **0.643** [0.637, 0.648] | 3 "
            "| (a) [curve.json](r/curve.json) |") in md
    assert ("| frozen | - | - | - "
            "| (b) [frozen_curve.json](r/frozen_curve.json), runs in progress |") in md
    assert "(b): needs flag Z" in md
    assert "CKPT: a checkpoint made by `python make.py`" in md  # only tables whose commands use it
    assert md.count("CKPT: ") == 1


def test_render_label_curve_without_runs():
    lc = copy.deepcopy(SMALL["label_curve"])
    lc["scratch"] = {}
    lines = headline.render_label_curve(lc)
    assert lines[0] == "| encoder | TrackML score | runs each | how measured |"
    assert lines[2] == "| scratch | no runs | - | (a) [curve.json](r/curve.json) |"
    assert lines[3].startswith("| frozen | runs in progress | - | (b) ")


def test_render_speed_rows():
    md = headline.render(SMALL)
    assert "| measurement | result | reference | speed-up | device | how measured |" in md
    assert ("| Simulator | **2.80 M hits/s** (target 10x) | ToyTrack 0.32 M hits/s "
            "| 8.87x (of the medians) | 2-core CPU VM | (a) [s.json](r/s.json) |") in md
    assert "| Step | **392.8 ms**, peak 38.7 GiB | - | - | H100 | (b) [s.json](r/s.json) |" in md
    assert ("| Simulator on GPU | not measured | ToyTrack | - | H100 "
            "| (c) unmeasured: no GPU lent |") in md
    assert "(a) `python sim.py`" in md
    assert "(b) `python run.py --x 1`, run by `bash suite.sh`" in md
    assert headline._num(1.7634, "power of hits") == "~ hits^1.76"


def test_render_needs_every_section():
    broken = {k: v for k, v in SMALL.items() if k != "speed"}
    with pytest.raises(ValueError, match="speed"):
        headline.render(broken)


# ---------------------------------------------------------------------------- verify / refresh
def test_verify_small_against_its_sources(root):
    assert headline.verify(SMALL, root) == []


@pytest.mark.parametrize("where,edit,expect", [
    (("tracking", "small_a", "trackml_score"), lambda x: round(x, 3), "trackml_score"),
    (("tracking", "small_a", "ceiling"), lambda x: x + 1e-9, "r/b.json"),
    (("tracking", "small_a", "labelled_events"), lambda x: x + 1, "r/notes.md"),
    (("tracking", "small_a", "runs"), lambda x: x + 1, "runs"),
    (("label_curve", "scratch", "10"), lambda x: x[:1] + [x[1] + 0.001] + x[2:], "scratch.10"),
    (("label_curve", "scratch", "1"), lambda x: x[:2], "scratch.1"),
    (("speed", "sim", "value"), lambda x: x - 1, "value"),
    (("speed", "sim", "speedup"), lambda x: x * 2, "speedup"),
])
def test_verify_catches_a_number_edited_by_hand(root, where, edit, expect):
    tampered = copy.deepcopy(SMALL)
    section, name, field = where
    tampered[section][name][field] = edit(tampered[section][name][field])
    problems = headline.verify(tampered, root)
    assert len(problems) == 1, problems
    assert name in problems[0] and expect in problems[0]


@pytest.mark.parametrize("path,key", [
    (("tracking", "small_a"), "ceiling"),
    (("tracking", "one_run"), "test_events"),
    (("tracking", "full"), "command"),
    (("speed", "step"), "reference"),
    (("speed", "sim"), "device"),
    (("label_curve", "meta", "scratch"), "source"),
])
def test_verify_catches_a_missing_required_key(root, path, key):
    tampered = copy.deepcopy(SMALL)
    entry = tampered
    for step in path:
        entry = entry[step]
    del entry[key]
    problems = headline.verify(tampered, root)
    assert len(problems) == 1 and "missing key" in problems[0] and key in problems[0], problems


def test_verify_unmeasured_needs_a_status(root):
    for section, name in (("tracking", "full"), ("speed", "gpu_sim")):
        tampered = copy.deepcopy(SMALL)
        del tampered[section][name]["status"]
        problems = headline.verify(tampered, root)
        assert problems and all(f"{section}.{name}" in p for p in problems), problems
        assert f"{section}.{name}: {'trackml_score' if section == 'tracking' else 'value'} is " \
            f"null but the entry has no 'status'" in " ".join(problems)
        tampered[section][name]["status"] = "pending"  # not "unmeasured: <reason>"
        assert any("status must be" in p for p in headline.verify(tampered, root))
    tampered = copy.deepcopy(SMALL)
    tampered["tracking"]["small_a"]["runs"] = 3.0  # a float is not the source's 3
    assert "tracking.small_a: runs must be a positive integer" in headline.verify(tampered, root)
    tampered = copy.deepcopy(SMALL)
    tampered["tracking"]["one_run"]["ceiling_note"] = ""
    assert headline.verify(tampered, root) == [
        "tracking.one_run: a null ceiling needs a ceiling_note"]


def test_verify_every_number_needs_a_source_key(root):
    tampered = copy.deepcopy(SMALL)
    del tampered["tracking"]["small_a"]["source_keys"]["fake_rate_max"]
    assert headline.verify(tampered, root) == [
        "tracking.small_a: fake_rate_max has no source_keys entry"]
    tampered = copy.deepcopy(SMALL)
    tampered["speed"]["step"]["reference_value"] = 100.0
    assert headline.verify(tampered, root) == [
        "speed.step: reference_value has no source_keys entry"]
    tampered = copy.deepcopy(SMALL)
    tampered["tracking"]["one_run"]["runs"] = 2  # more than one run needs its key
    assert headline.verify(tampered, root) == ["tracking.one_run: runs has no source_keys entry"]


def test_verify_curve_source_may_be_missing_only_while_in_progress(root):
    assert not (root / "r/frozen_curve.json").exists()
    tampered = copy.deepcopy(SMALL)
    del tampered["label_curve"]["meta"]["frozen"]["status"]
    problems = headline.verify(tampered, root)
    assert any("frozen" in p and "does not exist" in p for p in problems), problems
    tampered = copy.deepcopy(SMALL)
    tampered["label_curve"]["frozen"] = {"1": [0.3]}
    problems = headline.verify(tampered, root)
    assert any("frozen" in p and "does not exist" in p for p in problems), problems


def test_verify_curve_notices_new_source_runs(root):
    doc = copy.deepcopy(SOURCES["r/curve.json"])
    doc["scratch"]["30"] = [0.7, 0.71]
    _write_source(root, "r/curve.json", doc)
    problems = headline.verify(SMALL, root)
    assert len(problems) == 1 and "scratch.30: missing" in problems[0] \
        and "--refresh" in problems[0], problems


def test_refresh_recopies_every_number(root, tmp_path, capsys):
    tampered = copy.deepcopy(SMALL)
    tampered["tracking"]["small_a"]["dm_efficiency_min"] = 0.5
    tampered["tracking"]["small_a"]["ceiling"] = 0.97
    tampered["label_curve"]["scratch"]["10"][2] = 0.9
    tampered["speed"]["sim"]["value"] = 1.0
    # the curve source gains a labelled-events count and a seed, the frozen arm its first runs
    doc = copy.deepcopy(SOURCES["r/curve.json"])
    doc["scratch"]["1"].append(0.41)
    doc["scratch"]["3"] = [0.5]
    _write_source(root, "r/curve.json", doc)
    _write_source(root, "r/frozen_curve.json", {"frozen": {"1": [0.29]}})
    path = tmp_path / "headline.json"
    path.write_text(json.dumps(tampered))
    assert headline.main(["--headline", str(path), "--root", str(root), "--refresh"]) == 0
    out = capsys.readouterr().out
    assert "changed speed.sim.value: 1.0 -> 2800000.0" in out
    new = json.loads(path.read_text())
    assert path.read_text() == headline.dump(new)
    want = copy.deepcopy(SMALL)
    want["label_curve"]["scratch"] = {"1": [0.37345, 0.39753, 0.37715, 0.41], "3": [0.5],
                                      "10": [0.63696, 0.64825, 0.64479]}
    want["label_curve"]["frozen"] = {"1": [0.29]}
    assert new == want
    assert list(new["label_curve"]["scratch"]) == ["1", "3", "10"]  # in labelled-events order
    assert new["label_curve"]["meta"]["frozen"]["status"] == "runs in progress"  # kept
    assert headline.verify(new, root) == []
    assert headline.main(["--headline", str(path), "--root", str(root), "--verify"]) == 0


def test_refresh_reports_a_key_that_no_longer_resolves(root, tmp_path, capsys):
    broken = copy.deepcopy(SMALL)
    broken["speed"]["sim"]["source_keys"]["value"] = ["sim", "gone"]
    path = tmp_path / "headline.json"
    path.write_text(json.dumps(broken))
    assert headline.main(["--headline", str(path), "--root", str(root), "--refresh"]) == 1
    assert "speed.sim: value: " in capsys.readouterr().out


def test_resolve_key_forms(root):
    sources = headline._Sources(root)
    assert headline.resolve_key(["labels"], "r/b.json", sources) == 200
    assert headline.resolve_key({"source": "r/s.json", "path": ["step", "ms"]}, "r/b.json",
                                sources) == 392.832
    assert headline.resolve_key({"source": "r/notes.md", "regex": r"on (\d+) labelled"}, None,
                                sources) == 10
    assert headline.resolve_key({"source": "r/notes.md", "regex": r"(\d+) steps"}, None,
                                sources) == 300
    with pytest.raises(KeyError, match="2 times"):
        headline.resolve_key({"source": "r/notes.md", "regex": r"(\d+)"}, None, sources)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        headline.resolve_key({"source": "r/nope.json", "path": []}, None, sources)
    with pytest.raises(TypeError):
        headline.resolve_key({"path": ["x"]}, "r/b.json", sources)


# ---------------------------------------------------------------------------- README block
def _readme(tmp_path, body: str) -> Path:
    path = tmp_path / "README.md"
    path.write_text(body)
    return path


def _headline_file(tmp_path) -> Path:
    path = tmp_path / "headline.json"
    path.write_text(json.dumps(SMALL))
    return path


def test_update_readme_replaces_only_the_block(tmp_path):
    before = "# Title\n\nintro text\n\n" + headline.BEGIN + "\n"
    after = headline.END + "\n\n## Next\nmore text with | pipes |\n"
    readme = _readme(tmp_path, before + "old stale table\n" + after)
    hl = _headline_file(tmp_path)
    assert headline.update_readme(readme, hl) is True
    text = readme.read_text()
    assert text.startswith(before)
    assert text.endswith(after)
    assert "old stale table" not in text
    assert text == before + headline.render(SMALL) + after
    assert headline.update_readme(readme, hl) is False  # idempotent
    assert readme.read_text() == text


@pytest.mark.parametrize("body,missing", [
    ("# no markers at all\n", "HEADLINE_BEGIN"),
    ("x\n<!-- HEADLINE_BEGIN -->\nblock\n", "HEADLINE_END"),
])
def test_update_readme_without_markers_names_the_file(tmp_path, body, missing):
    readme = _readme(tmp_path, body)
    with pytest.raises(ValueError, match=missing) as err:
        headline.update_readme(readme, _headline_file(tmp_path))
    assert str(readme) in str(err.value)
    assert readme.read_text() == body  # untouched


def test_update_readme_rejects_reversed_or_repeated_markers(tmp_path):
    hl = _headline_file(tmp_path)
    for body in (f"{headline.END}\n{headline.BEGIN}\n",
                 f"{headline.BEGIN}\n{headline.END}\n{headline.BEGIN}\n{headline.END}\n"):
        with pytest.raises(ValueError, match="README.md"):
            headline.update_readme(_readme(tmp_path, body), hl)


def test_cli_check_and_update(tmp_path, capsys):
    readme = _readme(tmp_path, f"top\n{headline.BEGIN}\nstale\n{headline.END}\nbottom\n")
    hl = str(_headline_file(tmp_path))
    assert headline.main(["--headline", hl, "--check", str(readme)]) == 1
    out = capsys.readouterr().out
    assert "-stale" in out and "+| setting A |" in out
    assert headline.main(["--headline", hl, "--update", str(readme)]) == 0
    assert headline.main(["--headline", hl, "--check", str(readme)]) == 0
    assert headline.main(["--headline", hl, "--check", str(tmp_path / "nope.md")]) == 2
    capsys.readouterr()
    assert headline.main(["--headline", hl]) == 0
    assert capsys.readouterr().out == headline.render(SMALL)


def test_cli_check_without_markers_is_an_error(tmp_path, capsys):
    readme = _readme(tmp_path, "no block here\n")
    assert headline.main(["--headline", str(_headline_file(tmp_path)), "--check", str(readme)]) == 2
    assert str(readme) in capsys.readouterr().err


# ---------------------------------------------------------------------------- lookup
def test_lookup_steps_and_selectors():
    doc = {"rows": [{"arm": "a", "n": 1, "v": 0.5}, {"arm": "a", "n": 10, "v": 0.7},
                    {"arm": "b", "n": 1, "v": 0.2, "flag": True}]}
    assert headline.lookup(doc, ["rows", {"arm": "a", "n": 10}, "v"]) == 0.7
    assert headline.lookup(doc, ["rows", 2, "v"]) == 0.2
    assert headline.lookup(doc, ["rows", {"flag": True}, "arm"]) == "b"
    with pytest.raises(KeyError, match="2 list elements match"):
        headline.lookup(doc, ["rows", {"arm": "a"}, "v"])
    with pytest.raises(KeyError, match="0 list elements match"):
        headline.lookup(doc, ["rows", {"arm": "c"}, "v"])
    with pytest.raises(KeyError, match="0 list elements match"):  # 1 is not True
        headline.lookup(doc, ["rows", {"n": True}, "v"])
    with pytest.raises(KeyError, match="no key"):
        headline.lookup(doc, ["rows", 0, "w"])


# ---------------------------------------------------------------------------- the real file
@pytest.fixture(scope="module")
def real():
    return headline.load(HEADLINE_JSON)


def test_real_headline_has_documented_sections(real):
    assert isinstance(real["about"], str) and "source_keys" in real["about"]
    for key in ("unmeasured", "ceiling", "reference_value", "meta", "--refresh"):
        assert key in real["about"]
    assert isinstance(real["tracking"], dict) and isinstance(real["speed"], dict)
    assert "meta" in real["label_curve"]
    for name in ("small_10labels", "small_interaction_10labels", "small_full",
                 "1k_interaction_200labels", "1k_full"):
        assert name in real["tracking"], name
    for e in real["tracking"].values():
        for key in ("trackml_score", "dm_efficiency", "fake_rate", "ceiling", "labelled_events",
                    "test_events", "command"):
            assert key in e
    for e in real["speed"].values():
        for key in ("value", "unit", "reference", "reference_value", "device", "command"):
            assert key in e


def test_real_headline_numbers_equal_their_sources(real):
    assert headline.verify(real, REPO) == []
    keyed = sum(len(e.get("source_keys", {})) for s in ("tracking", "speed")
                for e in real[s].values())
    assert keyed >= 45  # the check above really compared numbers


@pytest.mark.parametrize("section,name,field,edit", [
    ("tracking", "small_10labels", "trackml_score", lambda x: round(x, 3)),  # rounding is editing
    ("tracking", "small_interaction_10labels", "fake_rate_max", lambda x: x * (1 + 1e-9)),
    ("tracking", "small_10labels", "ceiling", lambda x: x + 0.01),
    ("tracking", "1k_interaction_200labels", "labelled_events", lambda x: x + 1),
    ("speed", "simulator_1k", "value", lambda x: x - 1),
    ("speed", "train_step_fp32", "peak_mib", lambda x: x + 0.1),
])
def test_real_verify_catches_a_number_edited_by_hand(real, section, name, field, edit):
    tampered = copy.deepcopy(real)
    tampered[section][name][field] = edit(tampered[section][name][field])
    problems = headline.verify(tampered, REPO)
    assert len(problems) == 1, problems
    assert name in problems[0] and field in problems[0]


def test_real_refresh_restores_a_hand_edited_number(real, tmp_path, capsys):
    tampered = copy.deepcopy(real)
    tampered["tracking"]["small_10labels"]["trackml_score"] = 0.95
    tampered["speed"]["inference_fp32"]["value"] = 163.0
    path = tmp_path / "headline.json"
    path.write_text(headline.dump(tampered))
    assert headline.main(["--headline", str(path), "--refresh"]) == 0
    assert "2 value(s) re-copied" in capsys.readouterr().out
    assert path.read_text() == HEADLINE_JSON.read_text()


def test_real_headline_is_in_dump_layout():
    assert HEADLINE_JSON.read_text() == headline.dump(json.loads(HEADLINE_JSON.read_text()))


def test_real_headline_renders(real):
    md = headline.render(real)
    assert md.count("| how measured |") == 3
    for e in real["tracking"].values():
        if e["trackml_score"] is not None:
            assert f"**{e['trackml_score']:.3f}**" in md
        else:
            assert f"| {e['row']} | not measured |" in md


# ---------------------------------------------------------------------------- figures
figures = _load_script("make_figures")


def test_label_curve_figure():
    fig = figures.label_curve_figure(SMALL, figsize=(4, 3))
    assert isinstance(fig, matplotlib.figure.Figure)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    labels = ax.get_legend_handles_labels()[1]
    assert len(labels) == 2  # the one arm with runs (frozen has none) and the ceiling line
    assert "scratch (3 seeds)" in labels
    assert any("ceiling" in label and "0.967" in label for label in labels)
    assert "mm" not in ax.get_xlabel()  # counts of events, not lengths
    assert "20 held-out" in ax.get_ylabel()
    (line,) = [c for c in ax.containers]
    x, y = line.lines[0].get_data()
    assert list(x) == [1, 10]
    assert y[1] == pytest.approx((0.63696 + 0.64825 + 0.64479) / 3)
    # the y range spans the scores and the ceiling, not [0, 1]
    lo, hi = ax.get_ylim()
    low = min(min(s) for s in SMALL["label_curve"]["scratch"].values())
    assert low - 0.06 < lo <= low
    assert 0.967 < hi <= 1.0


def test_label_curve_figure_ceiling_is_that_of_the_curve_test_events():
    """A tracking row read from the curve's own source gives the ceiling line; without one,
    the first small-config row does."""
    h = copy.deepcopy(SMALL)
    assert figures._small_ceiling(h) == 0.96733
    src = h["label_curve"]["meta"]["scratch"]["source"]
    h["tracking"]["small_curve"] = {**h["tracking"]["small_a"], "source": src, "ceiling": 0.965}
    assert figures._small_ceiling(h) == 0.965


def test_label_curve_figure_prefers_the_short_legend():
    import copy
    headline = copy.deepcopy(SMALL)
    headline["label_curve"]["meta"]["scratch"]["legend"] = "from scratch"
    (ax,) = figures.label_curve_figure(headline, figsize=(4, 3)).axes
    assert "from scratch (3 seeds)" in ax.get_legend_handles_labels()[1]


def test_label_curve_figure_real(real):
    if any(curve for arm, curve in real["label_curve"].items() if arm != "meta"):
        assert isinstance(figures.label_curve_figure(real, figsize=(4, 3)),
                          matplotlib.figure.Figure)
    else:
        with pytest.raises(ValueError, match="no label_curve arm has runs"):
            figures.label_curve_figure(real)


def test_event_display_figure_small():
    fig = figures.event_display_figure(figsize=(5, 5), num_particles=40)
    assert isinstance(fig, matplotlib.figure.Figure)
    assert len(fig.axes) == 4
    for ax in fig.axes:
        assert ax.get_xlabel().endswith("[mm]") and ax.get_ylabel().endswith("[mm]")
        assert ax.get_title()


def test_readme_headline_block_is_generated_from_headline_json():
    """The README's headline section is exactly what headline.json renders (edit the JSON,
    then `python scripts/headline.py --update README.md`)."""
    assert headline.check_readme(REPO / "README.md", HEADLINE_JSON) == ""


def test_real_refresh_takes_the_label_curve_from_run_py(real, tmp_path, capsys):
    """Once studies/label_curve/run.py has written curve.json, --refresh copies every list
    (here from made-up run files under a temporary root that links the other sources)."""
    from studies.label_curve import run as label_curve_run

    root = tmp_path / "repo"
    meta = real["label_curve"]["meta"]["scratch"]
    real = copy.deepcopy(real)
    # tracking rows read from the curve too (the 300-label row): they would not find their
    # cells in the made-up curve
    real["tracking"] = {k: e for k, e in real["tracking"].items() if e.get("source") != meta["source"]}
    files = {e["source"] for s in ("tracking", "speed") for e in real[s].values() if "source" in e}
    files |= {k["source"] for s in ("tracking", "speed") for e in real[s].values()
              for k in e.get("source_keys", {}).values() if isinstance(k, dict)}
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(REPO / rel)
    results = (root / meta["source"]).parent
    results.mkdir(parents=True, exist_ok=True)
    scores = {(1, 0): 0.41, (1, 1): 0.38, (10, 0): 0.93}
    for (labels, seed), score in scores.items():
        row = {"arm": "scratch", "labelled_events": labels, "seed": seed, "trackml_score": score,
               "dm_efficiency": 0.9, "fake_rate": 0.01, "num_events": 20, "best_step": 100}
        (results / f"scratch_L{labels}_s{seed}.json").write_text(json.dumps(row))
    label_curve_run.write_curve(results)
    # the scratch arm alone, as before any run (the real file may hold some)
    real["label_curve"] = {"scratch": {}, "meta": {"scratch": real["label_curve"]["meta"]["scratch"]}}
    path = tmp_path / "headline.json"
    path.write_text(headline.dump(real))
    assert headline.verify(real, root)  # stale: the source has runs the headline lacks
    assert headline.main(["--headline", str(path), "--root", str(root), "--refresh"]) == 0
    new = json.loads(path.read_text())
    assert new["label_curve"]["scratch"] == {"1": [0.41, 0.38], "10": [0.93]}
    assert new["label_curve"]["meta"]["scratch"]["test_events"] == 20
    assert headline.verify(new, root) == []
    md = headline.render(new)
    assert "| encoder | 1 labelled event | 10 labelled events | runs each | how measured |" in md
    assert "**0.395** [0.380, 0.410]" in md
