"""Smoke tests of the performance benchmarks (tiny sizes; never an assertion on speed).

They check that each benchmark runs end to end on the CPU, that its JSON has the keys and
sane values the GPU suite's summary reads, and that the measuring helpers measure what
they claim (exponent fit, peak memory, the training step's EMA, track counts).
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
TINY = ["--d-model", "16", "--n-layers", "1", "--threads", "1"]


def _load(name: str):
    """Import benchmarks/<name>.py (not a package) under a unique module name."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # the benchmarks import train_step as a helper
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ts = _load("train_step")


@pytest.fixture(autouse=True)
def _restore_threads():
    """``--threads 1`` sets torch's global thread count: give it back after each test."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _run_main(mod, argv, capsys) -> dict:
    assert mod.main(argv) == 0
    return json.loads(capsys.readouterr().out)


# ---------------------------------------------------------------------------- helpers
def test_fit_exponent_recovers_power_laws():
    x = [1e3, 1e4, 5e4, 1e5]
    assert ts.fit_exponent(x, [3 * v**1.5 for v in x]) == pytest.approx(1.5, abs=1e-3)
    assert ts.fit_exponent(x, [0.2 * v for v in x]) == pytest.approx(1.0, abs=1e-3)
    assert ts.fit_exponent([1e4], [5.0]) is None  # one point: no slope
    assert ts.fit_exponent([1e4, 1e4], [5.0, 6.0]) is None  # one distinct x
    # missing or non-positive values are skipped, not fitted as log(0)
    assert ts.fit_exponent([1e3, 1e4, 1e5], [None, 2.0, 20.0]) == pytest.approx(1.0, abs=1e-3)


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
        ts.load_config(tmp_path / "nowhere.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: {max_steps: 1}\n")
    with pytest.raises(ValueError, match="model.init_args"):
        ts.load_config(bad)
    with pytest.raises(ValueError, match="fp16"):
        ts.parse_modes("fp32,fp16")
    with pytest.raises(ValueError, match="--hits"):
        ts.parse_sizes("10k")
    with pytest.raises(ValueError, match="max-neighbors"):
        ts.bench_graph({}, -1)
    with pytest.raises(ValueError, match="max-neighbors"):
        ts.parse_caps("0,six")
    assert ts.parse_caps("0,6") == [0, 6]
    assert [ts.graph_label(c) for c in (0, 6)] == ["config", "k6"]
    cfg = ts.load_config(ts.DEFAULT_PRETRAIN_CONFIG)
    capped = {k: v for k, v in cfg["graph"].items() if k != "union"}
    assert ts.bench_graph(cfg["graph"], 6) == {**capped, "max_num_neighbors": 6}
    assert ts.bench_graph(cfg["graph"], 0) == cfg["graph"]
    assert ts.mode_flags("bf16+compile") == (True, True)
    assert ts.mode_flags("fp32") == (False, False)


def test_peak_memory_cpu_sees_a_torch_allocation():
    # In a fresh process: the peak RSS is a property of the whole process, and in the full
    # suite earlier tests leave freed memory that the 256 MiB can reuse without raising it
    # (step_mib 0.0 in about one full run in three here).
    code = (
        "import json, sys, torch\n"
        f"sys.path.insert(0, {str(BENCH)!r})\n"
        "import train_step as ts\n"
        "mem = ts.PeakMemory(torch.device('cpu'))\n"
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
    cfg = ts.load_config(ts.DEFAULT_PRETRAIN_CONFIG)
    args = {**cfg["model"], "d_model": 16, "n_layers": 1, "heads": 2, "d_embedding": 8}
    graph = ts.bench_graph(cfg["graph"], 6)
    dev = torch.device("cpu")
    _, _, data = next(iter(ts.make_events(cfg["simulator"], [400], 3, graph, dev)))
    batch = ts.as_batch(data)
    torch.manual_seed(0)
    model, opt, sched = ts.make_model(args, dev)
    ctx0 = [p.detach().clone() for p in model.context_encoder.parameters()]
    tgt0 = [p.detach().clone() for p in model.target_encoder.parameters()]
    lr0 = sched.get_last_lr()
    ticks = []
    loss = ts.jepa_step(model, opt, sched, batch, 0, bf16=False, clip=1.0,
                        tick=lambda: ticks.append(1))
    assert math.isfinite(float(loss))
    assert len(ticks) == len(ts.PHASES) + 1
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
    cfg = ts.load_config(ts.DEFAULT_PRETRAIN_CONFIG)
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
        assert set(r["phases_ms_median"]) == set(ts.PHASES)
        assert r["host_syncs_per_step"] is None  # CUDA only
        assert r["memory_kind"] in ("cpu_peak_rss", "unavailable")
    assert rows[0]["hits"] < rows[1]["hits"]
    sc = doc["scaling"]["fp32/config"]
    assert sc["points"] == 2 and isinstance(sc["time_vs_hits"], float)


def test_inference_benchmark_matches_direct_track_building(capsys):
    inf = _load("inference")
    doc = _run_main(inf, ["--device", "cpu", "--hits", "500", "--modes", "fp32", "--warmup", "1",
                          "--repeat", "2", "--heads", "2", "--max-neighbors", "0,6", "--building", "cc",
                          *TINY], capsys)
    assert [r["graph"] for r in doc["rows"]] == ["config", "k6"]
    assert doc["config"]["cc_method"] == "scipy"

    from gnn_jepa.graph.edges import edge_labels
    from gnn_jepa.graph.transform import BuildGraph
    from gnn_jepa.tracking.building import build_tracks

    cfg = ts.load_config(inf.DEFAULT_FINETUNE_CONFIG)
    for row, cap in zip(doc["rows"], (0, 6)):
        assert "error" not in row, row.get("error")
        assert set(row["stages_ms_median"]) == set(inf.STAGES)
        assert all(v > 0 for v in row["stages_ms_median"].values())
        assert row["graph_deterministic"] and row["track_scores"] == "truth"
        # the same event, graph and truth-scored tracks computed directly
        data = ts.simulate_data(cfg["simulator"], row["particles"], 1)
        g = BuildGraph(**ts.bench_graph(cfg["graph"], cap))(data.clone())
        y = edge_labels(data.particle_id, g.edge_index)
        tid = build_tracks(data.num_nodes, g.edge_index, y.float(), threshold=0.5, min_hits=3)
        assert row["hits"] == data.num_nodes
        assert row["edges"] == g.edge_index.shape[1]
        assert row["kept_edges"] == int(y.sum())
        assert row["tracks"] == int(tid.max()) + 1
        assert row["hits_in_tracks"] == int((tid >= 0).sum())
    assert doc["rows"][1]["edges"] < doc["rows"][0]["edges"]  # k6 is sparser than the config's


def test_dataloader_benchmark_json(capsys):
    dl = _load("dataloader")
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


def test_gpu_scripts_parse():
    for script in ("gpu_suite.sh", "gpu_tracking.sh", "gpu_study.sh"):
        subprocess.run(["bash", "-n", str(BENCH / script)], check=True)


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
                     "radius_graph_small.json", "suite.log", "summary.json",
                     "train_step.json"]  # <= 8: what the device tool brings back
    for key in ("inference", "train_step", "dataloader", "radius_graph"):
        assert isinstance(summary[key], list) and summary[key], (key, summary[key])
        assert all(not r.get("error") for r in summary[key]), summary[key]
    assert "TIMED OUT" not in (tmp_path / "suite.log").read_text()


@pytest.mark.slow
def test_gpu_tracking_smoke_run_on_cpu(tmp_path):
    """The track-finding GPU run, tiny and on the CPU: every job ends and reports its figures."""
    env = {**os.environ, "GPU_TRACKING_SMOKE": "1", "PYTHON": sys.executable, "OUT": str(tmp_path / "out"),
           "WORK": str(tmp_path / "work")}
    proc = subprocess.run(["bash", str(BENCH / "gpu_tracking.sh")], env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert json.loads(proc.stdout) == summary
    assert sorted(p.name for p in out.iterdir()) == [  # <= 8: what the device tool brings back
        "a_full_labels_1k.json", "b_full_labels_10k.json", "c_pretrained_10labels_1k.json",
        "c_scratch_10labels_1k.json", "d_edge_head_10k.json", "logs.tgz", "run.log", "summary.json"]
    for key in ("a_full_labels_1k", "b_full_labels_10k"):
        tuned = [r for r in summary[key]["rows"] if r.get("validation_tuned")]
        ceiling = [r for r in summary[key]["rows"] if r["edge_label"] == "truth (ceiling)"]
        assert summary[key]["finished"] and len(tuned) == 1 and len(ceiling) == 1, summary[key]
        assert 0.0 <= tuned[0]["trackml_score"] <= 1.0 and 0.0 < ceiling[0]["trackml_score"] <= 1.0
        assert tuned[0]["steps_done"] >= 1
    for key, arm in (("c_scratch", "scratch"), ("c_pretrained", "finetune")):
        assert summary[key]["finished"] and [r["arm"] for r in summary[key]["runs"]] == [arm, arm]
    assert [r["head"] for r in summary["d_edge_head_10k"]["rows"]] == ["mlp", "interaction"]
    log = (out / "run.log").read_text()
    assert "TIMED OUT" not in log and log.count(" rc=0") == 3 + 5  # 3 preparations, 5 jobs


@pytest.mark.slow
def test_train_step_compile_on_cpu(capsys):
    doc = _run_main(ts, ["--device", "cpu", "--hits", "300,600", "--modes", "fp32+compile",
                         "--warmup", "2", "--steps", "2", "--phase-steps", "1", "--heads", "2",
                         "--d-embedding", "8", *TINY], capsys)
    for r in doc["rows"]:
        assert "error" not in r, r.get("error")
        assert r["finite"] and r["graphs_compiled_while_timed"] == 0
    assert doc["rows"][0]["graphs_compiled"] >= 1 and doc["rows"][0]["compile_s_est"] > 0


def test_track_building_benchmark_tunes_on_validation(tmp_path, capsys):
    import yaml

    tb = _load("track_building")
    cfg = yaml.safe_load((ROOT / "configs/finetune/trackml_small.yaml").read_text())
    cfg["data"].update(simulator={"preset": "trackml", "num_particles": 20}, num_val=2, num_test=2,
                       cache_dir=str(tmp_path / "cache"))
    cfg["model"]["init_args"].update(d_model=16, d_embedding=8, n_layers=1, heads=2)
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tb.main(["--config", str(path), "--labels", "2", "--steps", "2",
                   "--thresholds", "0.3,0.6,0.9", "--json", str(tmp_path / "tb.json")])
    rows = out["rows"]
    assert len(rows) == 2 * 2 * 4 + 2  # labels x builders x (3 cuts + the tuned one) + ceilings
    ceiling = [r for r in rows if r["edge_label"] == "truth (ceiling)"]
    assert [r["building"] for r in ceiling] == ["cc", "walkthrough"]
    for r in ceiling:  # truth scores join only hits of one particle: every track is pure
        assert r["fake_rate"] == 0.0 and r["trackml_score"] > 0.5  # (fragments: unmatched)
    saved = json.loads((tmp_path / "tb.json").read_text())["rows"]
    assert [(r["edge_label"], r["building"], r["threshold"]) for r in saved] == \
        [(r["edge_label"], r["building"], r["threshold"]) for r in rows]
    for r in rows:
        assert 0.0 <= r["trackml_score"] <= 1.0
        assert math.isnan(r["fake_rate"]) or 0.0 <= r["fake_rate"] <= 1.0  # nan: no track built
        if r.get("validation_tuned"):  # the tuned row repeats its cut's test figures
            same = [q for q in rows if not q.get("validation_tuned") and q["threshold"] == r["threshold"]
                    and q["edge_label"] == r["edge_label"] and q["building"] == r["building"]]
            assert len(same) == 1
            assert all(same[0][k] == r[k] or math.isnan(r[k]) and math.isnan(same[0][k]) for k in tb.KEYS)
    assert out["num_test_events"] == 2
    assert all(r["steps_done"] == 2 for r in rows if r["edge_label"] != "truth (ceiling)")
    assert out["precision"] == "32-true" and out["device"] == "cpu"
    # --max-minutes stops training before --steps, and the rows say how far it got
    short = tb.main(["--config", str(path), "--labels", "2", "--steps", "500", "--max-minutes", "0.001",
                     "--edge-labels", "segment", "--builders", "walkthrough", "--thresholds", "0.5"])
    done = {r["steps_done"] for r in short["rows"] if r["edge_label"] != "truth (ceiling)"}
    assert len(done) == 1 and 1 <= done.pop() < 500


def test_jepa_objective_benchmark_reports_reference_losses(tmp_path, capsys):
    import lightning.pytorch as pl
    import yaml

    from gnn_jepa.data.datamodule import EventDataModule
    from gnn_jepa.models.jepa import JEPAPretraining

    cfg = yaml.safe_load((ROOT / "configs/pretrain/trackml_small.yaml").read_text())
    cfg["data"].update(simulator={"preset": "trackml", "num_particles": 30}, num_train=2, num_val=2,
                       num_test=1, cache_dir=str(tmp_path / "cache"))
    (tmp_path / "pre.yaml").write_text(yaml.safe_dump(cfg))
    model = JEPAPretraining(d_model=16, d_embedding=8, n_layers=1, heads=2, d_predictor=16,
                            predictor_heads=2, masker={**cfg["model"]["init_args"]["masker"],
                                                       "min_target_hits": 2})
    trainer = pl.Trainer(max_steps=1, logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, limit_val_batches=0, enable_model_summary=False)
    trainer.fit(model, datamodule=EventDataModule(**cfg["data"]))
    trainer.save_checkpoint(tmp_path / "jepa.ckpt")
    out = _load("jepa_objective").main([str(tmp_path / "jepa.ckpt"), "--config", str(tmp_path / "pre.yaml"),
                                        "--events", "2", "--draws", "2"])
    assert out["batches_x_draws"] == 2  # one batch of 2 events x 2 draws
    for k in ("jepa_loss", "zero_loss", "mean_loss", "occupancy_oracle_loss"):
        assert out[k] >= 0.0
    assert 0.0 < out["occupied_fraction"] <= 1.0


def test_learned_graph_benchmark_json(tmp_path):
    """Tiny run through the real script: JSON rows in range, trained embedding and fitted
    filter written where --save-dir says."""
    out = subprocess.run([sys.executable, str(BENCH / "learned_graph.py"), "--particles", "100",
                          "--train-events", "1", "--eval-events", "1", "--filter-events", "1",
                          "--steps", "3", "--save-dir", str(tmp_path)],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout)["results"][0]
    assert res["particles"] == 100
    for side in ("learned", "geometric"):
        for row in res[side]["pair_filtered"]:
            assert 0.0 <= row["efficiency_pt1"] <= 1.0 and row["mean_degree"] >= 0.0
    assert (tmp_path / "learned_100.pt").is_file() and (tmp_path / "pair_filter_100.json").is_file()


def test_label_efficiency_pretrains_then_reuses_a_checkpoint(tmp_path, capsys, monkeypatch):
    """Tiny study: pretraining + finetune/scratch arms; then ``--ckpt`` fine-tunes from that
    checkpoint without pretraining again, and ``--finetune-overrides`` reaches every arm."""
    import yaml

    le = _load("label_efficiency")
    small = {"preset": "trackml", "num_particles": 20}
    paths = {}
    for stage in ("pretrain", "finetune"):
        cfg = yaml.safe_load((ROOT / f"configs/{stage}/trackml_small.yaml").read_text())
        cfg["data"].update(simulator=small, num_val=1, num_test=2, cache_dir=str(tmp_path / "cache"))
        cfg["model"]["init_args"].update(d_model=16, d_embedding=8, n_layers=1, heads=2)
        if stage == "pretrain":
            cfg["model"]["init_args"].update(d_predictor=8, predictor_layers=1, probe_events=1)
        paths[stage] = tmp_path / f"{stage}.yaml"
        paths[stage].write_text(yaml.safe_dump(cfg))
    common = ["--pretrain-config", str(paths["pretrain"]), "--finetune-config",
              str(paths["finetune"]), "--labels", "1", "--seeds", "0", "--finetune-steps", "2",
              "--accelerator", "cpu"]
    out = le.main(common + ["--pretrain-steps", "2", "--pretrain-events", "2",
                            "--arms", "finetune,scratch", "--out", str(tmp_path / "a")])
    assert [(r["arm"], r["variant"]) for r in out["rows"]] == [
        ("scratch", "none (random init)"), ("finetune", "vicreg")]
    for r in out["rows"]:
        assert 0.0 <= r["edge_auc"] <= 1.0 and 0.0 <= r["trackml_score"] <= 1.0
    ckpt = tmp_path / "a" / "vicreg" / "p0" / "pretrained.ckpt"
    assert ckpt.is_file()
    stamp = ckpt.stat().st_mtime_ns
    seen = []
    real = le.finetune_and_test

    def spy(ckpt_path, *args):
        seen.append((ckpt_path, args[-1]))  # ft_args: what every arm's TrackFinding gets
        return real(ckpt_path, *args)

    monkeypatch.setattr(le, "finetune_and_test", spy)
    again = le.main(common + ["--ckpt", str(ckpt), "--arms", "frozen", "--out",
                              str(tmp_path / "b"), "--finetune-overrides",
                              '{"encoder_lr": 1e-4}', "--json", str(tmp_path / "b.json")])
    assert ckpt.stat().st_mtime_ns == stamp  # read, never pretrained or rewritten
    assert not (tmp_path / "b" / "vicreg").exists()
    (row,) = again["rows"]
    assert row["arm"] == "frozen" and row["ckpt"] == str(ckpt)
    assert 0.0 <= row["edge_auc"] <= 1.0
    assert [(c, a["encoder_lr"]) for c, a in seen] == [(str(ckpt), 1e-4)]
    assert seen[0][1]["head_lr"] == 2e-3  # the config's other arguments stay
    saved = json.loads((tmp_path / "b.json").read_text())
    assert json.loads(saved["args"]["finetune_overrides"]) == {"encoder_lr": 1e-4}
    # the resolved fine-tuning arguments are saved: the config's head next to the override
    assert saved["finetune_args"]["encoder_lr"] == 1e-4
    assert saved["finetune_args"]["head"] == "interaction" and saved["encoder_args"]["d_model"] == 16

    # the supervised reference arm: an encoder trained with labels on the pretraining events,
    # saved so TrackFinding loads it like a JEPA checkpoint, then fine-tuned with a new head
    monkeypatch.setattr(le, "finetune_and_test", real)
    with pytest.raises(SystemExit):  # a misspelt arm fails before anything is trained
        le.main(common + ["--arms", "supervisd", "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
    sup = le.main(common + ["--pretrain-steps", "3", "--pretrain-events", "2", "--arms", "supervised",
                            "--out", str(tmp_path / "c")])
    (row,) = sup["rows"]
    name = "supervised (labelled pretraining events)"
    assert (row["variant"], row["arm"], row["supervised_steps"]) == (name, "finetune", 3)
    from gnn_jepa.models import TrackFinding
    from gnn_jepa.models.track_finding import load_pretrained_encoder
    sup_ckpt = tmp_path / "c" / name / "p0" / "supervised.ckpt"
    enc_args = dict(d_model=16, d_embedding=8, n_layers=1, heads=2)
    import lightning.pytorch as pl
    pl.seed_everything(0)  # what supervised_pretrain does first: the same initial encoder
    fresh = TrackFinding(mode="scratch", **enc_args).encoder
    loaded = TrackFinding(mode="scratch", **enc_args).encoder
    load_pretrained_encoder(loaded, str(sup_ckpt), expected={**enc_args, "d_input": 4})
    saved_w = torch.load(sup_ckpt, weights_only=False)["state_dict"]
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(v, saved_w[f"target_encoder.{k}"])
    # three labelled steps moved the weights away from their initialisation
    assert any(not torch.equal(v, fresh.state_dict()[k]) for k, v in loaded.state_dict().items()
               if v.dtype.is_floating_point)


def test_graph_build_benchmark_times_the_config_graph_and_the_reference(capsys):
    gb = _load("graph_build")
    doc = gb.main(["--particles", "200", "--repeat", "2"])
    assert json.loads(capsys.readouterr().out) == doc
    assert doc["config"]["graph"]["union"]  # the GPU config's learned union graph
    assert doc["reference"]["graph"] == gb.OLD_GPU_GRAPH
    for key in ("config", "reference"):
        row = doc[key]
        assert 0 < row["seconds_min"] <= row["seconds_median"]
        assert row["edges"] > 0 and row["mean_degree"] == round(row["edges"] / doc["hits"], 2)
    assert doc["config_over_reference"] > 0


def test_edge_head_benchmark_times_both_heads_on_the_same_event(capsys, tmp_path):
    eh = _load("edge_head")
    out = tmp_path / "edge_head.json"
    doc = eh.main(["--particles", "40", "--steps", "2", "--warmup", "1", "--out", str(out)])
    assert json.loads(capsys.readouterr().out) == doc == json.loads(out.read_text())
    mlp, inter = doc["rows"]
    assert (mlp["head"], inter["head"]) == ("mlp", "interaction")
    assert mlp["edges"] == inter["edges"] > 0 and mlp["hits"] == inter["hits"] > 0
    assert mlp["ratio_vs_mlp"] == 1.0
    assert inter["ratio_vs_mlp"] == round(inter["ms_median"] / mlp["ms_median"], 3)
    assert inter["head_params"] > mlp["head_params"]
    for row in doc["rows"]:
        assert 0 < row["ms_min"] <= row["ms_median"] and row["loss_first"] > 0
    with pytest.raises(SystemExit, match="--heads"):
        eh.main(["--heads", "gat"])


def test_label_efficiency_replot_merges_saved_runs_into_table_and_figure(tmp_path, capsys):
    le = _load("label_efficiency")

    def row(arm, labels, seed, score, variant="none (random init)"):
        return {"variant": variant, "arm": arm, "labels": labels, "seed": seed, "trackml_score": score,
                "edge_auc": 0.9, "dm_efficiency": 0.8, "fake_rate": 0.1}

    (tmp_path / "a.json").write_text(json.dumps({"rows": [row("scratch", 10, 0, 0.5), row("scratch", 10, 1, 0.7)]}))
    lines = [row("finetune", 10, 0, 0.6, "checkpoint"), row("scratch", 1, 0, 0.2), {"summary": []}]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\nnot json\n")
    out = le.main(["--replot", str(tmp_path / "a.json"), str(tmp_path / "b.jsonl"),
                   "--plot", str(tmp_path / "fig.png"), "--json", str(tmp_path / "merged.json")])
    by = {(r["variant"], r["arm"], r["labels"]): r for r in out["summary"]}
    assert set(by) == {("none (random init)", "scratch", 10), ("none (random init)", "scratch", 1),
                       ("checkpoint", "finetune", 10)}
    s = by[("none (random init)", "scratch", 10)]
    assert s["runs"] == 2 and s["trackml_score"] == pytest.approx({"mean": 0.6, "min": 0.5, "max": 0.7})
    assert "| none (random init) | scratch | 10 | 2 |" in capsys.readouterr().out
    assert (tmp_path / "fig.png").stat().st_size > 5000
    assert json.loads((tmp_path / "merged.json").read_text())["summary"] == out["summary"]
    fig = le.plot(out["summary"], tmp_path / "again.png")
    assert len(fig.axes[0].containers) == 2  # one error-bar line per (variant, arm)
    (tmp_path / "one.jsonl").write_text(json.dumps(row("frozen", 1, 0, 0.3, "checkpoint")) + "\n")
    assert [r["arm"] for r in le.load_rows(tmp_path / "one.jsonl")] == ["frozen"]  # one-line JSON lines
    (tmp_path / "bad.json").write_text(json.dumps({"rows": [{"arm": "scratch", "labels": 1}]}))
    with pytest.raises(ValueError, match="bad.json.*lacks"):
        le.main(["--replot", str(tmp_path / "bad.json")])
    (tmp_path / "other.json").write_text(json.dumps({"something": "else"}))
    with pytest.raises(ValueError, match="other.json: no study rows"):
        le.load_rows(tmp_path / "other.json")
    (tmp_path / "cut.jsonl").write_text(json.dumps(row("scratch", 1, 0, 0.2)) + '\n{"variant": "none (ra\n')
    with pytest.raises(ValueError, match="cut.jsonl: line 2 is not valid JSON"):
        le.load_rows(tmp_path / "cut.jsonl")


def test_shuffled_encoder_control_keeps_values_and_destroys_structure(tmp_path):
    from gnn_jepa.models.jepa import JEPAPretraining
    from gnn_jepa.models.track_finding import TrackFinding

    enc = dict(d_input=1, d_model=16, d_embedding=8, n_layers=2, heads=2)
    torch.manual_seed(0)
    jepa = JEPAPretraining(d_predictor=16, predictor_heads=2, **enc)
    with torch.no_grad():  # make the two encoders differ, as after training
        jepa.context_encoder.input_proj.weight.add_(1.0)
    src = tmp_path / "jepa.ckpt"
    torch.save({"state_dict": jepa.state_dict(), "hyper_parameters": dict(jepa.hparams)}, src)
    out = tmp_path / "shuffled.ckpt"
    info = _load("shuffled_encoder").main([str(src), str(out), "--seed", "3"])
    ref = jepa.target_encoder.state_dict()
    assert info["tensors"] == len(ref)
    shuffled = TrackFinding(pretrained=str(out), **enc).encoder.state_dict()
    moved = 0
    for k, v in shuffled.items():
        # the same multiset of values in every tensor ...
        torch.testing.assert_close(v.reshape(-1).sort().values, ref[k].reshape(-1).sort().values, msg=k)
        moved += int(not torch.equal(v, ref[k]))
    # ... but not in the same places (constant tensors such as LayerNorm's init stay equal)
    assert moved == len([k for k, v in ref.items() if v.unique().numel() > 1]) > 0
    # the context encoder is written under target_encoder.*, so TrackFinding loads it
    _load("shuffled_encoder").main([str(src), str(out), "--encoder", "context"])
    ctx = TrackFinding(pretrained=str(out), **enc).encoder.state_dict()
    k = "input_proj.weight"
    torch.testing.assert_close(ctx[k].reshape(-1).sort().values,
                               jepa.context_encoder.state_dict()[k].reshape(-1).sort().values)
    assert not torch.equal(ctx[k].reshape(-1).sort().values, ref[k].reshape(-1).sort().values)
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "bad.ckpt")
    with pytest.raises(SystemExit, match="no 'target_encoder"):
        _load("shuffled_encoder").main([str(tmp_path / "bad.ckpt"), str(out)])


def test_embedding_scale_measures_the_checkpoint_output_width(tmp_path, capsys):
    """A checkpoint whose output projection is 3x a fresh encoder's reads 3x its mean
    per-dimension std and norm and the same effective rank; a fresh seed matches a hand
    computation on the same events."""
    import yaml

    from gnn_jepa.data.datamodule import EventDataModule
    from gnn_jepa.models.track_finding import save_pretrained_encoder
    from gnn_jepa.nn.encoder import GraphTransformerEncoder

    cfg = yaml.safe_load((ROOT / "configs/finetune/trackml_small.yaml").read_text())
    cfg["data"].update(simulator={"preset": "trackml", "num_particles": 20}, num_train=1, num_val=1,
                       cache_dir=str(tmp_path / "cache"))
    enc = dict(d_model=16, d_embedding=8, n_layers=1, heads=2)
    cfg["model"]["init_args"].update(enc)
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(cfg))
    enc = {**enc, "d_input": 4}  # the config's features: the default r, phi, z, eta
    torch.manual_seed(5)
    fresh = GraphTransformerEncoder(**enc)
    state = {k: v * 3.0 if k.startswith("out_proj.") else v for k, v in fresh.state_dict().items()}
    save_pretrained_encoder(tmp_path / "wide.ckpt", state, enc)
    out = _load("embedding_scale").main(["--finetune-config", str(tmp_path / "ft.yaml"), "--events", "2",
                                         "--random-seeds", "5", f"wide={tmp_path / 'wide.ckpt'}"])
    rnd, wide = out["encoders"]["random seed 5"], out["encoders"]["wide"]
    assert rnd["hits"] == wide["hits"] > 0 and out["events"] == 2
    assert wide["mean_std"] == pytest.approx(3 * rnd["mean_std"], rel=1e-4)
    assert wide["mean_norm"] == pytest.approx(3 * rnd["mean_norm"], rel=1e-4)
    assert wide["rankme"] == pytest.approx(rnd["rankme"], rel=1e-4)
    dm = EventDataModule(**{**cfg["data"], "num_test": 2, "batch_size": 1})
    with torch.no_grad():
        h = torch.cat([fresh.eval()(b.x, b.edge_index, b.edge_attr) for b in dm.test_dataloader()])
    assert rnd["mean_std"] == pytest.approx(float(h.std(0).mean()), rel=1e-5)
    with pytest.raises(SystemExit, match="NAME=CKPT"):
        _load("embedding_scale").main(["--finetune-config", str(tmp_path / "ft.yaml"), "no-name.ckpt"])
