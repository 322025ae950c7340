"""Smoke tests of the speed and memory benchmarks (tiny sizes; never an assertion on speed).

They check that each benchmark runs end to end on the CPU as ``python -m benchmarks.<name>``
(or through its ``main``), that its JSON has the keys and sane values the GPU suite's summary
reads, and that the measuring helpers of :mod:`benchmarks.common` measure what they claim
(exponent fit, peak memory, the training step's EMA, track counts). The research studies'
smoke tests are in tests/test_studies.py.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import common
from benchmarks import dataloader as dl
from benchmarks import edge_head as eh
from benchmarks import graph_build as gb
from benchmarks import inference as inf
from benchmarks import simulate as sim
from benchmarks import train_step as ts

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
TINY = ["--d-model", "16", "--n-layers", "1", "--threads", "1"]
#: A tiny JEPA model (nested blocks, merged onto the config's).
TINY_ENCODER = {"d_model": 16, "n_layers": 1, "heads": 2, "d_embedding": 8}


@pytest.fixture(autouse=True)
def _restore_threads():
    """``--threads 1`` sets torch's global thread count: give it back after each test."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _run_main(mod, argv, capsys) -> dict:
    assert mod.main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _module(name: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m benchmarks.<name> ARGS`` from the repository root, one CPU thread."""
    return subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_benchmarks_run_as_modules_without_path_hacks():
    for path in [*BENCH.glob("*.py"), *BENCH.glob("*.sh")]:
        text = path.read_text()
        assert "sys.path" not in text, path
        assert "python benchmarks/" not in text and "import train_step" not in text, path


# ---------------------------------------------------------------------------- helpers
def test_fit_exponent_recovers_power_laws():
    x = [1e3, 1e4, 5e4, 1e5]
    assert common.fit_exponent(x, [3 * v**1.5 for v in x]) == pytest.approx(1.5, abs=1e-3)
    assert common.fit_exponent(x, [0.2 * v for v in x]) == pytest.approx(1.0, abs=1e-3)
    assert common.fit_exponent([1e4], [5.0]) is None  # one point: no slope
    assert common.fit_exponent([1e4, 1e4], [5.0, 6.0]) is None  # one distinct x
    # missing or non-positive values are skipped, not fitted as log(0)
    assert common.fit_exponent([1e3, 1e4, 1e5], [None, 2.0, 20.0]) == pytest.approx(1.0, abs=1e-3)


def test_scaling_fits_only_sizes_from_fit_from():
    # quadratic below 10k hits, linear from 10k: the fit must see only the linear part
    rows = [{"mode": "fp32", "target_hits": h, "hits": h, "edges": 7 * h,
             "ms_median": (h / 1e3) ** 2 if h < 10_000 else h / 1e2, "step_mib": h / 1e3}
            for h in (1000, 2000, 5000, 10_000, 20_000, 50_000)]
    rows.append({"mode": "bf16", "target_hits": 10_000, "hits": 10_000, "edges": 1,
                 "error": "OOM"})  # a failed row has no time: ignored
    # another graph of the same mode is fitted apart: time ~ hits^2 there
    rows += [{"mode": "fp32", "graph": "k6", "target_hits": h, "hits": h, "edges": h,
              "ms_median": (h / 1e3) ** 2} for h in (10_000, 20_000)]
    sc = ts.scaling(rows, fit_from=10_000)
    fp = sc["fp32/config"]
    assert fp["points"] == 3
    assert fp["hits_range"] == [10_000, 50_000]
    assert fp["time_vs_hits"] == pytest.approx(1.0, abs=1e-3)
    assert fp["time_vs_edges"] == pytest.approx(1.0, abs=1e-3)
    assert fp["memory_vs_hits"] == pytest.approx(1.0, abs=1e-3)
    assert sc["fp32/k6"]["time_vs_hits"] == pytest.approx(2.0, abs=1e-3)
    assert sc["fp32/k6"]["memory_vs_hits"] is None  # no memory figures
    assert sc["bf16/config"]["points"] == 0 and sc["bf16/config"]["time_vs_hits"] is None


def test_config_and_argument_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="nowhere.yaml"):
        common.load_config(tmp_path / "nowhere.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: {max_steps: 1}\n")
    with pytest.raises(ValueError, match="model.init_args"):
        common.load_config(bad)
    with pytest.raises(ValueError, match="fp16"):
        common.parse_modes("fp32,fp16")
    with pytest.raises(ValueError, match="--hits"):
        common.parse_sizes("10k")
    with pytest.raises(ValueError, match="max-neighbors"):
        common.bench_graph({}, -1)
    with pytest.raises(ValueError, match="max-neighbors"):
        common.parse_caps("0,six")
    assert common.parse_caps("0,6") == [0, 6]
    assert [common.graph_label(c) for c in (0, 6)] == ["config", "k6"]
    cfg = common.load_config(common.DEFAULT_PRETRAIN_CONFIG)
    capped = {k: v for k, v in cfg["graph"].items() if k != "union"}
    assert common.bench_graph(cfg["graph"], 6) == {**capped, "max_num_neighbors": 6}
    assert common.bench_graph(cfg["graph"], 0) == cfg["graph"]
    assert common.mode_flags("bf16+compile") == (True, True)
    assert common.mode_flags("fp32") == (False, False)


def test_peak_memory_cpu_sees_a_torch_allocation():
    # In a fresh process: the peak RSS is a property of the whole process, and in the full
    # suite earlier tests leave freed memory that the 256 MiB can reuse without raising it
    # (step_mib 0.0 in about one full run in three here).
    code = (
        "import json, torch\n"
        "from benchmarks import common\n"
        "mem = common.PeakMemory(torch.device('cpu'))\n"
        "mem.start()\n"
        "big = torch.ones(64 * 2**20 // 4 * 4)  # 256 MiB, touched\n"
        "del big\n"
        "print(json.dumps(mem.stop()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    if got["memory_kind"] == "unavailable":
        pytest.skip("this kernel does not allow resetting the peak RSS")
    assert got["memory_kind"] == "cpu_peak_rss"
    assert 200 <= got["step_mib"] <= 400
    assert got["peak_mib"] >= got["step_mib"]


def test_jepa_step_trains_and_updates_the_ema_like_lightning():
    cfg = common.load_config(common.DEFAULT_PRETRAIN_CONFIG)
    args = common.override_encoder(cfg["model"], **TINY_ENCODER)
    graph = common.bench_graph(cfg["graph"], 6)
    dev = torch.device("cpu")
    _, _, data = next(iter(common.make_events(cfg["simulator"], [400], 3, graph, dev)))
    batch = common.as_batch(data)
    torch.manual_seed(0)
    model, opt, sched = common.make_jepa(args, dev)
    ctx0 = [p.detach().clone() for p in model.context_encoder.parameters()]
    tgt0 = [p.detach().clone() for p in model.target_encoder.parameters()]
    lr0 = sched.get_last_lr()
    ticks = []
    loss = common.jepa_step(model, opt, sched, batch, 0, bf16=False, clip=1.0,
                            tick=lambda: ticks.append(1))
    assert math.isfinite(float(loss))
    assert len(ticks) == len(common.PHASES) + 1
    ctx1 = [p.detach() for p in model.context_encoder.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(ctx0, ctx1)), "the optimizer did not step"
    assert all(p.grad is None for p in model.parameters()), "gradients not zeroed"
    assert sched.get_last_lr() != lr0  # warm-up schedule advanced one step
    m = model.momentum(0)
    for t0, c1, t1 in zip(tgt0, ctx1, model.target_encoder.parameters()):
        torch.testing.assert_close(t1, m * t0 + (1 - m) * c1)


# ---------------------------------------------------------------------------- benchmarks
def test_train_step_benchmark_json(capsys, tmp_path):
    out = tmp_path / "ts.json"
    doc = _run_main(ts, ["--device", "cpu", "--hits", "300,600", "--modes", "fp32",
                         "--warmup", "1", "--steps", "2", "--phase-steps", "1", "--heads", "2",
                         "--d-embedding", "8", "--fit-from", "300", "--out", str(out), *TINY],
                    capsys)
    assert json.loads(out.read_text()) == doc  # --out holds the same document
    assert doc["benchmark"] == "train_step" and doc["env"]["device"] == "cpu"
    cfg = common.load_config(common.DEFAULT_PRETRAIN_CONFIG)
    assert doc["config"]["graphs"] == {"config": cfg["graph"]}
    rows = doc["rows"]
    assert [(r["mode"], r["graph"], r["target_hits"]) for r in rows] == [
        ("fp32", "config", 300), ("fp32", "config", 600)]
    for r in rows:
        assert "error" not in r, r.get("error")
        assert 0.5 * r["target_hits"] < r["hits"] < 1.5 * r["target_hits"]
        assert r["edges"] > r["hits"]
        assert 0 < r["ms_min"] <= r["ms_median"]
        assert r["finite"] and r["loss"] > 0
        assert set(r["phases_ms_median"]) == set(common.PHASES)
        assert r["host_syncs_per_step"] is None  # CUDA only
        assert r["memory_kind"] in ("cpu_peak_rss", "unavailable")
    assert rows[0]["hits"] < rows[1]["hits"]
    sc = doc["scaling"]["fp32/config"]
    assert sc["points"] == 2 and isinstance(sc["time_vs_hits"], float)


def test_inference_benchmark_matches_direct_track_building(capsys):
    doc = _run_main(inf, ["--device", "cpu", "--hits", "500", "--modes", "fp32", "--warmup", "1",
                          "--repeat", "2", "--heads", "2", "--max-neighbors", "0,6", "--building", "cc",
                          *TINY], capsys)
    assert [r["graph"] for r in doc["rows"]] == ["config", "k6"]
    assert doc["config"]["cc_method"] == "scipy"

    from gnn_jepa.graph.edges import edge_labels
    from gnn_jepa.graph.transform import BuildGraph
    from gnn_jepa.tracking.building import build_tracks

    cfg = common.load_config(inf.DEFAULT_FINETUNE_CONFIG)
    for row, cap in zip(doc["rows"], (0, 6)):
        assert "error" not in row, row.get("error")
        assert set(row["stages_ms_median"]) == set(inf.STAGES)
        assert all(v > 0 for v in row["stages_ms_median"].values())
        assert row["graph_deterministic"] and row["track_scores"] == "truth"
        # the same event, graph and truth-scored tracks computed directly
        data = common.simulate_data(cfg["simulator"], row["particles"], 1)
        g = BuildGraph(**common.bench_graph(cfg["graph"], cap))(data.clone())
        y = edge_labels(data.particle_id, g.edge_index)
        tid = build_tracks(data.num_nodes, g.edge_index, y.float(), threshold=0.5, min_hits=3)
        assert row["hits"] == data.num_nodes
        assert row["edges"] == g.edge_index.shape[1]
        assert row["kept_edges"] == int(y.sum())
        assert row["tracks"] == int(tid.max()) + 1
        assert row["hits_in_tracks"] == int((tid >= 0).sum())
    assert doc["rows"][1]["edges"] < doc["rows"][0]["edges"]  # k6 is sparser than the config's


def test_dataloader_benchmark_json(capsys):
    doc = _run_main(dl, ["--device", "cpu", "--hits", "300", "--workers", "0", "--events", "2",
                         "--warmup", "1", "--steps", "2", *TINY], capsys)
    rows = doc["rows"]
    assert [(r["loader"], r["num_workers"]) for r in rows] == [
        ("preloaded", None), ("cached", 0), ("on_the_fly", 0)]
    for r in rows:
        assert "error" not in r, r.get("error")
        assert 0.0 <= r["data_fraction"] <= 1.0
        assert r["steps"] == 2 and r["ms_per_step_median"] > 0
        assert r["slowdown_vs_preloaded"] > 0
    assert rows[0]["slowdown_vs_preloaded"] == 1.0
    assert 150 < rows[0]["mean_hits"] < 450 and rows[0]["mean_edges"] > rows[0]["mean_hits"]
    assert rows[1]["cache_build_s"] >= 0


def test_dataloader_benchmark_feeds_the_fine_tuning_step(capsys):
    """--task finetune: the track-finding step (edge loss on the events' truth, which the cache
    keeps) runs from the pre-loaded and the cached feed."""
    doc = _run_main(dl, ["--task", "finetune", "--config", "configs/finetune/trackml_small.yaml",
                         "--device", "cpu", "--hits", "300", "--workers", "0", "--events", "2",
                         "--loaders", "preloaded,cached", "--warmup", "0", "--steps", "2", *TINY],
                    capsys)
    assert doc["config"]["task"] == "finetune"
    assert doc["config"]["model"]["head"]["kind"] == "segment_pairs"
    rows = doc["rows"]
    assert [(r["loader"], r["num_workers"]) for r in rows] == [("preloaded", None), ("cached", 0)]
    for r in rows:
        assert "error" not in r, r.get("error")
        assert 0.0 < r["data_fraction"] < 1.0 and r["steps"] == 2


def test_simulate_benchmark_json(capsys):
    doc = _run_main(sim, ["--no-toytrack", "--particles", "20", "--rounds", "1", "--repeats", "2",
                          "--trackml-particles", "0"], capsys)
    (case,) = doc["cases"]
    assert case["particles"] == 20 and "toytrack" not in case and doc["trackml"] is None
    for key in ("ours_comparable", "ours_toy2d_all_effects"):
        assert case[key]["events"] == 2 and case[key]["mean_hits"] > 0
        assert case[key]["hits_per_s_best"] >= case[key]["hits_per_s_median"] > 0


def test_radius_graph_benchmark_runs_as_a_module_and_matches_ckdtree():
    proc = _module("radius_graph", "--sizes", "30", "--repeat", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert [c["frame"] for c in doc["cases"]][0] == "cartesian_mm" and len(doc["cases"]) == 2
    for case in doc["cases"]:
        checked = {k: v["identical_to_ckdtree"] for k, v in case.items()
                   if isinstance(v, dict) and "identical_to_ckdtree" in v}
        assert checked and all(checked.values()), checked


def test_gpu_suite_script_parses():
    subprocess.run(["bash", "-n", str(BENCH / "gpu_suite.sh")], check=True)


# ---------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_gpu_suite_smoke_run_on_cpu(tmp_path):
    """The whole suite, tiny and on the CPU: every step ends and the summary is complete."""
    env = {**os.environ, "GPU_SUITE_SMOKE": "1", "PYTHON": sys.executable, "OUT": str(tmp_path)}
    proc = subprocess.run(["bash", str(BENCH / "gpu_suite.sh")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["dataloader.json", "inference.json", "radius_graph_large.json",
                     "suite.log", "summary.json", "track_finding_inference.json",
                     "track_finding_train.json", "train_step.json"]  # <= 8: what the device tool brings back
    for key in ("inference", "train_step", "track_finding", "dataloader", "radius_graph"):
        assert isinstance(summary[key], list) and summary[key], (key, summary[key])
        assert all(not r.get("error") for r in summary[key]), summary[key]
    assert {r["mode"] for r in summary["track_finding"]} == {"inference", "train"}
    assert [r["particles"] for r in summary["track_finding"]] == [20, 40, 20, 40]
    assert summary["track_finding_scaling"]["train"]["time_exponent"] is not None
    assert "TIMED OUT" not in (tmp_path / "suite.log").read_text()


@pytest.mark.slow
def test_train_step_compile_on_cpu(capsys):
    doc = _run_main(ts, ["--device", "cpu", "--hits", "300,600", "--modes", "fp32+compile",
                         "--warmup", "2", "--steps", "2", "--phase-steps", "1", "--heads", "2",
                         "--d-embedding", "8", *TINY], capsys)
    for r in doc["rows"]:
        assert "error" not in r, r.get("error")
        assert r["finite"] and r["graphs_compiled_while_timed"] == 0
    assert doc["rows"][0]["graphs_compiled"] >= 1 and doc["rows"][0]["compile_s_est"] > 0


def test_graph_build_benchmark_times_the_config_graph_and_the_reference(capsys):
    doc = gb.main(["--particles", "200", "--repeat", "2"])
    assert json.loads(capsys.readouterr().out) == doc
    assert doc["config"]["graph"]["union"]  # the GPU config's learned union graph
    assert doc["reference"]["graph"] == gb.OLD_GPU_GRAPH
    for key in ("config", "reference"):
        row = doc[key]
        assert 0 < row["seconds_min"] <= row["seconds_median"]
        assert row["edges"] > 0 and row["mean_degree"] == round(row["edges"] / doc["hits"], 2)
    assert doc["config_over_reference"] > 0
    # cKDTree on each member's own radius query: the graph and its one union member
    kd = doc["ckdtree"]
    assert [m["radius"] for m in kd["members"]] == [doc["config"]["graph"]["radius"],
                                                    doc["config"]["graph"]["union"][0]["radius"]]
    assert all(m["pairs"] > 0 and 0 < m["seconds_min"] <= m["seconds_median"]
               for m in kd["members"])
    assert doc["config_over_ckdtree"] > 0


def test_edge_head_benchmark_times_every_head_on_the_same_event(capsys, tmp_path):
    out = tmp_path / "edge_head.json"
    doc = eh.main(["--particles", "40", "--steps", "2", "--warmup", "1", "--out", str(out)])
    assert json.loads(capsys.readouterr().out) == doc == json.loads(out.read_text())
    mlp, inter, pairs = doc["rows"]
    assert (mlp["head"], inter["head"], pairs["head"]) == ("mlp", "interaction", "segment_pairs")
    assert mlp["edges"] == inter["edges"] == pairs["edges"] > 0 and mlp["hits"] == inter["hits"] > 0
    assert mlp["ratio_vs_mlp"] == 1.0
    assert inter["ratio_vs_mlp"] == round(inter["ms_median"] / mlp["ms_median"], 3)
    assert inter["head_params"] > mlp["head_params"]
    for row in doc["rows"]:
        assert 0 < row["ms_min"] <= row["ms_median"] and row["loss_first"] > 0
    with pytest.raises(SystemExit, match="--heads"):
        eh.main(["--heads", "gat"])


def test_edge_head_inference_mode_and_scaling_exponents(capsys):
    doc = eh.main(["--particles", "20,60", "--heads", "segment_pairs", "--mode", "inference",
                   "--steps", "1", "--warmup", "0"])
    capsys.readouterr()
    small, large = doc["rows"]
    assert doc["mode"] == "inference" and large["hits"] > small["hits"] > 0
    assert "loss_first" not in small  # no training step
    fit = doc["scaling"]["segment_pairs"]
    assert fit["hits"] == [small["hits"], large["hits"]]
    import math
    want = math.log(large["ms_median"] / small["ms_median"]) / math.log(large["hits"] / small["hits"])
    assert fit["time_exponent"] == pytest.approx(want, abs=1e-3)
    want_edges = math.log(large["ms_median"] / small["ms_median"]) / math.log(large["edges"] / small["edges"])
    assert fit["time_exponent_vs_edges"] == pytest.approx(want_edges, abs=1e-3)
    # exponents of y = c x^k fitted back exactly, per quantity
    rows = [{"head": "mlp", "hits": h, "edges": 4 * h ** 1.5, "ms_median": 2 * h ** 1.2,
             "step_mib": 0.5 * h, "peak_mib": 100 * h ** 0.5} for h in (10, 100, 1000)]
    assert eh.scaling(rows)["mlp"] == {
        "hits": [10, 100, 1000], "edges": [r["edges"] for r in rows], "time_exponent": 1.2,
        "time_exponent_vs_edges": 0.8, "memory_exponent": 1.0, "peak_memory_exponent": 0.5,
        "edges_exponent": 1.5}
    one = eh.scaling([{"head": "mlp", "hits": 5, "edges": 9, "ms_median": 1.0}])["mlp"]
    assert one["time_exponent"] is None and one["edges_exponent"] is None


def test_edge_head_keeps_the_sizes_that_ran_when_one_fails(tmp_path, monkeypatch, capsys):
    """A failing size becomes an error row, the others are kept and fitted, and --out holds
    every finished row (it is rewritten after each)."""
    real = eh.bench_head
    written = []

    def flaky(batch, *args, **kwargs):
        if batch.num_nodes > 400:
            raise RuntimeError("out of memory (made up)")
        return real(batch, *args, **kwargs)

    monkeypatch.setattr(eh, "bench_head", flaky)
    monkeypatch.setattr(eh.common, "write_doc", lambda doc, out: written.append(
        [dict(r) for r in doc["rows"]]))
    doc = eh.main(["--particles", "10,20,60", "--heads", "mlp", "--steps", "1", "--warmup", "0",
                   "--out", str(tmp_path / "o.json")])
    capsys.readouterr()
    ok = [r for r in doc["rows"] if "error" not in r]
    bad = [r for r in doc["rows"] if "error" in r]
    assert [r["particles"] for r in ok] == [10, 20] and [r["particles"] for r in bad] == [60]
    assert bad[0]["error"] == "RuntimeError: out of memory (made up)" and bad[0]["hits"] > 400
    assert doc["scaling"]["mlp"]["hits"] == [r["hits"] for r in ok]
    assert [len(rows) for rows in written] == [1, 2, 3]  # one write per row


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mimalloc: Linux")
def test_edge_head_benchmark_restarts_itself_under_mimalloc(capsys):
    from gnn_jepa.allocator import allocator_in_use, mimalloc_library
    if mimalloc_library() is None or allocator_in_use() == "mimalloc":
        pytest.skip("no cmeel-mimalloc, or this pytest already runs under it")
    # in-process (this pytest) it cannot restart, and says so instead of measuring glibc
    with pytest.raises(SystemExit, match="runs under system"):
        eh.main(["--allocator", "mimalloc", "--particles", "20"])
    proc = _module("edge_head", "--allocator", "mimalloc", "--particles", "20", "--heads", "mlp",
                   "--steps", "1", "--warmup", "0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc["allocator"] == "mimalloc" and doc["rows"][0]["ms_median"] > 0


@pytest.mark.slow
def test_dataset_memory_benchmark_runs_its_children_as_modules(tmp_path):
    proc = _module("dataset_memory", "--sizes", "2,4", "--particles", "10", "--batch-size", "2",
                   "--cache", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout[proc.stdout.index("{\n"):])
    assert doc["benchmark"] == "dataset_memory" and doc["command"].split()[1:3] == [
        "-m", "benchmarks.dataset_memory"]
    assert [(r["mode"], r["size"], r["events_seen"]) for r in doc["runs"]] == [
        ("lazy", 2, 2), ("lazy", 4, 4), ("in_memory", 2, 2), ("in_memory", 4, 4)]
    assert set(doc["rss_growth_mib"]) == {"lazy", "in_memory"}


def test_colliderml_read_benchmark_runs_its_children_as_modules(tmp_path):
    pytest.importorskip("pyarrow")
    proc = _module("colliderml_read", "--particles", "30", "--events", "3", "--reads", "1,3",
                   "--folder", str(tmp_path / "cml"), "--out", str(tmp_path / "r.json"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc == json.loads((tmp_path / "r.json").read_text())
    assert doc["benchmark"] == "colliderml_read" and doc["shard"]["events"] == 3
    assert doc["shard"]["row_groups"] == 3 and not doc["shard"]["reused"]
    assert [r["events_read"] for r in doc["runs"]] == [1, 3]
    assert all(r["torch_threads"] == 1 and r["arrow_threads"] == 1 for r in doc["runs"])
    assert [len(r["events"]) for r in doc["runs"]] == [1, 3]
    t = doc["timing"]
    assert t["events"] == 3 and t["mean_hits"] > 0
    assert 0 < t["total_s"]["min"] <= t["total_s"]["median"]
    assert set(doc["max_rss_while_reading_mib"]) == {"1", "3"}
    again = _module("colliderml_read", "--particles", "30", "--events", "3", "--reads", "2",
                    "--folder", str(tmp_path / "cml"))
    assert again.returncode == 0 and json.loads(again.stdout)["shard"]["reused"]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="rusage of children, mimalloc: Linux")
def test_allocator_benchmark_runs_each_arm_under_its_allocator(tmp_path):
    pytest.importorskip("gnn_jepa.allocator").mimalloc_library() or pytest.skip("no cmeel-mimalloc")
    proc = _module("allocator", "--steps", "2", "--events", "2", "--work", str(tmp_path),
                   "--out", str(tmp_path / "a.json"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc == json.loads((tmp_path / "a.json").read_text())
    assert [r["allocator"] for r in doc["rows"]] == ["system", "mimalloc"]
    for row in doc["rows"]:
        assert len(row["fits"]) == 1 and row["peak_rss_mib_median"] > 100
        assert row["cpu_s_per_step_median"] > 0
    assert doc["rows"][0]["peak_rss_mib_vs_system"] == 1.0
    # each fit's log names the allocator it ran under (run_fit checks it too)
    assert "memory allocator: mimalloc" in (tmp_path / "mimalloc_r0.log").read_text()
    assert "memory allocator: system" in (tmp_path / "system_r0.log").read_text()
