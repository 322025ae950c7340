"""scripts/headline.py and benchmarks/results/headline.json: the rendering shows each number as
formatted, --update replaces only the marked block, every headline number equals the raw result
it names, and scripts/make_figures.py draws its figures (no training, no benchmark runs)."""
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


def _entry(**kw):
    base = {"machine": "test box", "command": "python run.py --x 1", "source": "r/a.json"}
    return {**base, **kw}


SMALL = {
    "about": "test",
    "captions": {"tracking": {"title": "Tracks", "detail": "test events"}},
    "placeholders": {"CKPT": "a checkpoint made by `python make.py`"},
    "tracking": [
        _entry(id="t1", row="setting A", metric="trackml_score", label="TrackML score",
               mean=0.64333, min=0.63696, max=0.64825, runs=3),
        _entry(id="t2", row="setting A", metric="dm_efficiency", label="DM eff.", mean=0.87841,
               min=0.868, max=0.887, runs=3),
        _entry(id="t3", row="ceiling B", metric="trackml_score", label="TrackML score",
               value=0.96733, command="python other.py", source="r/b.json"),
    ],
    "label_curve": [
        _entry(id="l1", row="scratch", metric="trackml_score", label="TrackML score", arm="scratch",
               labelled_events=1, mean=0.38271, min=0.37345, max=0.39753, runs=3),
        _entry(id="l2", row="scratch", metric="trackml_score", label="TrackML score", arm="scratch",
               labelled_events=10, mean=0.64333, min=0.63696, max=0.64825, runs=3),
        _entry(id="l3", row="frozen", metric="trackml_score", label="TrackML score", arm="frozen",
               labelled_events=1, mean=0.29202, min=0.27045, max=0.30781, runs=2,
               command="python le.py --ckpt CKPT", caveat="needs flag Z"),
    ],
    "speed": [
        _entry(id="s1", row="Simulator", metric="hits_per_s", label="ours", value=2.8,
               unit="M hits/s", source="README.md", source_section="Speed",
               command="python sim.py"),
        _entry(id="s2", row="Simulator", metric="speedup", label="speed-up", value=13.4, unit="x",
               source="README.md", source_section="Speed", command="python sim.py"),
        _entry(id="s3", row="Step", metric="time", label="step", value=392.832, unit="ms",
               run_by="bash suite.sh"),
        _entry(id="s4", row="Step", metric="peak_memory", label="peak", value=39639.4, unit="MiB",
               run_by="bash suite.sh"),
    ],
}


# ---------------------------------------------------------------------------- render
def test_render_tracking_rows():
    md = headline.render(SMALL)
    assert "**Tracks** (test events):" in md
    assert ("| setting A | **0.643** [0.637, 0.648] | 0.878 [0.868, 0.887] | - | 3 | test box | "
            "(a) [a.json](r/a.json) |") in md
    assert "| ceiling B | **0.967** | - | - | 1 | test box | (b) [b.json](r/b.json) |" in md
    assert "(a) `python run.py --x 1`" in md
    assert "(b) `python other.py`" in md


def test_render_label_curve_rows():
    md = headline.render(SMALL)
    assert ("| encoder | metric | 1 labelled event | 10 labelled events | runs each "
            "| how measured |") in md
    assert ("| scratch | TrackML score | **0.383** [0.373, 0.398] | **0.643** [0.637, 0.648] | 3 | "
            "(a) [a.json](r/a.json) |") in md
    assert ("| frozen | TrackML score | **0.292** [0.270, 0.308] | - | 2 "
            "| (b) [a.json](r/a.json) |") in md
    assert "(b): needs flag Z" in md
    assert "CKPT: a checkpoint made by `python make.py`" in md  # only tables whose commands use it
    assert md.count("CKPT: ") == 1


def test_render_speed_rows():
    md = headline.render(SMALL)
    assert ("| Simulator | ours 2.8 M hits/s, speed-up 13.4x | test box | "
            "(a) README.md, \"Speed\" (no raw file) |") in md
    assert "| Step | step 392.8 ms, peak 38.7 GiB | test box | (b) [a.json](r/a.json) |" in md
    assert "(a) `python sim.py`" in md
    assert "(b) `python run.py --x 1`, run by `bash suite.sh`" in md


def test_render_needs_every_section():
    broken = {k: v for k, v in SMALL.items() if k != "speed"}
    with pytest.raises(ValueError, match="speed"):
        headline.render(broken)


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
    for section in headline.SECTIONS:
        assert real[section], f"headline.json: section {section} is empty"


def test_real_headline_sources_exist(real):
    for section in headline.SECTIONS:
        for e in real[section]:
            assert (REPO / e["source"]).is_file(), f"{e['id']}: {e['source']} missing"


def test_real_headline_numbers_equal_their_sources(real):
    assert headline.verify(real, REPO) == []
    json_sources = [e for s in headline.SECTIONS for e in real[s] if e["source"].endswith(".json")]
    assert len(json_sources) >= 40  # the check above really compared numbers


@pytest.mark.parametrize("section,field,edit", [
    ("tracking", "mean", lambda x: round(x, 3)),  # rounding is editing too
    ("tracking", "value", lambda x: x + 0.01),
    ("label_curve", "max", lambda x: x * (1 + 1e-9)),
    ("label_curve", "runs", lambda x: x + 1),
    ("speed", "value", lambda x: x - 1),
])
def test_verify_catches_a_number_edited_by_hand(real, section, field, edit):
    tampered = copy.deepcopy(real)
    entry = next(e for e in tampered[section] if field in e and e["source"].endswith(".json"))
    entry[field] = edit(entry[field])
    problems = headline.verify(tampered, REPO)
    assert len(problems) == 1, problems
    assert entry["id"] in problems[0] and field in problems[0]


def test_verify_catches_a_number_without_a_source_key(real):
    tampered = copy.deepcopy(real)
    entry = next(e for e in tampered["tracking"] if "value" in e)
    del entry["source_keys"]["value"]
    assert any("no source_keys entry" in p for p in headline.verify(tampered, REPO))
    tampered = copy.deepcopy(real)
    entry = next(e for e in tampered["speed"] if e["source"].endswith(".json"))
    entry["source"] = "benchmarks/results/does_not_exist.json"
    assert any("does not exist" in p for p in headline.verify(tampered, REPO))


def test_real_headline_renders(real):
    md = headline.render(real)
    assert md.count("| how measured |") == 3
    for e in real["tracking"]:
        if e["metric"] == "trackml_score":
            assert headline.fmt_entry(e, bold=True) in md


# ---------------------------------------------------------------------------- figures
figures = _load_script("make_figures")


def test_label_curve_figure(real):
    fig = figures.label_curve_figure(real, figsize=(4, 3))
    assert isinstance(fig, matplotlib.figure.Figure)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    labels = ax.get_legend_handles_labels()[1]
    arms = {e["row"] for e in real["label_curve"]}
    assert len(labels) == len(arms) + 1  # one series per arm and the ceiling line
    assert "mm" not in ax.get_xlabel()  # counts of events, not lengths


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
