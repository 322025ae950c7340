"""Smoke tests of the research studies under studies/ (tiniest sizes; no assertion on results).

One slow test per study script that runs on main: it runs end to end on the CPU on a few
20-particle events and writes the JSON its README describes. The studies whose knobs are gone
from main (reinit_encoder, output_width) have results only: they run at tag studies-2026-12.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ROOT / "studies"
#: A tiny model in the configs' nested blocks.
TINY_ENCODER = {"d_model": 16, "d_embedding": 8, "n_layers": 1, "heads": 2}
TINY_PREDICTOR = {"d_model": 8, "layers": 1, "heads": 2}


def _tiny_config(stage: str, tmp_path: Path, particles: int = 20, **data) -> Path:
    """configs/<stage>/trackml_small.yaml with a tiny model, tiny events and a private cache."""
    cfg = yaml.safe_load((ROOT / f"configs/{stage}/trackml_small.yaml").read_text())
    cfg["data"].update(simulator={"preset": "trackml", "num_particles": particles},
                       cache_dir=str(tmp_path / "cache"), **data)
    init = cfg["model"]["init_args"]
    init["encoder"] = {**init["encoder"], **TINY_ENCODER}
    if stage == "pretrain":
        init.update(predictor=TINY_PREDICTOR, probe_events=1)
        init["masker"] = {**init["masker"], "min_target_hits": 2}
    path = tmp_path / f"{stage}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _module(name: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", name, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_studies_run_as_modules_without_path_hacks():
    scripts = [*STUDIES.glob("*/*.py"), *STUDIES.glob("*/*.sh")]
    assert {p.parent.name for p in scripts} >= {"label_efficiency", "track_building",
                                                "learned_graph", "jepa_objective", "gpu_tracking"}
    for path in scripts:
        text = path.read_text()
        assert "sys.path" not in text and "python benchmarks/" not in text, path
    for script in STUDIES.glob("*/*.sh"):
        subprocess.run(["bash", "-n", str(script)], check=True)


@pytest.mark.slow
def test_label_efficiency_study(tmp_path, monkeypatch):
    """Pretraining + finetune/scratch arms; ``--ckpt`` fine-tunes from that checkpoint without
    pretraining again, with nested ``--finetune-overrides`` merged onto the config's block; the
    supervised reference arm; removed knobs fail before training; ``--replot`` merges the runs."""
    from studies.label_efficiency import run as le

    pre = _tiny_config("pretrain", tmp_path, num_val=1, num_test=2)
    ft = _tiny_config("finetune", tmp_path, num_val=1, num_test=2)
    common = ["--pretrain-config", str(pre), "--finetune-config", str(ft), "--labels", "1",
              "--seeds", "0", "--finetune-steps", "2", "--accelerator", "cpu"]
    out = le.main(common + ["--pretrain-steps", "2", "--pretrain-events", "2", "--arms",
                            "finetune,scratch", "--variants", '{"cells 2x2x1": {"cells": [2, 2, 1]}}',
                            "--out", str(tmp_path / "a"), "--json", str(tmp_path / "a.json")])
    assert [(r["arm"], r["variant"]) for r in out["rows"]] == [
        ("scratch", "none (random init)"), ("finetune", "cells 2x2x1")]
    for r in out["rows"]:
        assert 0.0 <= r["edge_auc"] <= 1.0 and 0.0 <= r["trackml_score"] <= 1.0
    ckpt = tmp_path / "a" / "cells 2x2x1" / "p0" / "pretrained.ckpt"
    hp = torch.load(ckpt, map_location="cpu", weights_only=False)["hyper_parameters"]
    assert hp["cells"] == [2, 2, 1] and hp["predictor"]["layers"] == 1
    stamp = ckpt.stat().st_mtime_ns

    seen = []
    real = le.finetune_and_test

    def spy(ckpt_path, *args):
        seen.append((ckpt_path, args[-1]))  # ft_args: what every arm's TrackFinding gets
        return real(ckpt_path, *args)

    monkeypatch.setattr(le, "finetune_and_test", spy)
    again = le.main(common + ["--ckpt", str(ckpt), "--arms", "frozen", "--out", str(tmp_path / "b"),
                              "--finetune-overrides", '{"optim": {"encoder_lr": 1e-4}}',
                              "--json", str(tmp_path / "b.json")])
    assert ckpt.stat().st_mtime_ns == stamp  # read, never pretrained or rewritten
    (row,) = again["rows"]
    assert row["arm"] == "frozen" and row["ckpt"] == str(ckpt)
    ((path, ft_args),) = seen
    assert path == str(ckpt) and ft_args["optim"] == {"encoder_lr": 1e-4, "head_lr": 2e-3}
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["finetune_args"]["head"]["kind"] == "segment_pairs"  # the config's, kept
    assert saved["encoder_args"]["d_model"] == 16
    monkeypatch.setattr(le, "finetune_and_test", real)

    # a misspelt arm or a setting removed from main fails before anything is trained
    for bad in (["--arms", "supervisd"], ["--finetune-overrides", '{"encoder_lr": 1e-4}'],
                ["--variants", '{"hit queries": {"query": "hit"}}']):
        with pytest.raises(SystemExit):
            le.main(common + bad + ["--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()

    # the supervised reference: an encoder trained with labels on the pretraining events, saved
    # so that TrackFinding loads it like a JEPA checkpoint
    sup = le.main(common + ["--pretrain-steps", "2", "--pretrain-events", "2", "--arms", "supervised",
                            "--out", str(tmp_path / "c")])
    (row,) = sup["rows"]
    name = "supervised (labelled pretraining events)"
    assert (row["variant"], row["arm"], row["supervised_steps"]) == (name, "finetune", 2)
    from gnn_jepa.models.checkpoints import load_pretrained_encoder
    from gnn_jepa.nn.encoder import EncoderConfig

    enc = EncoderConfig(**TINY_ENCODER)
    loaded = enc.build()
    load_pretrained_encoder(loaded, str(tmp_path / "c" / name / "p0" / "supervised.ckpt"), expected=enc)

    # --replot: the two saved runs merged into one table and figure
    merged = le.main(["--replot", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                      "--plot", str(tmp_path / "fig.png"), "--json", str(tmp_path / "merged.json")])
    assert {(r["variant"], r["arm"]) for r in merged["summary"]} == {
        ("none (random init)", "scratch"), ("cells 2x2x1", "finetune"), ("checkpoint", "frozen")}
    assert (tmp_path / "fig.png").stat().st_size > 5000
    assert json.loads((tmp_path / "merged.json").read_text())["summary"] == merged["summary"]


@pytest.mark.slow
def test_track_building_study(tmp_path):
    from studies.track_building import run as tb

    cfg = _tiny_config("finetune", tmp_path, num_val=2, num_test=2)
    out = tb.main(["--config", str(cfg), "--labels", "2", "--steps", "2", "--thresholds", "0.3,0.6",
                   "--json", str(tmp_path / "tb.json")])
    rows = out["rows"]
    assert len(rows) == 2 * 2 * 3 + 2  # labels x builders x (2 cuts + the tuned one) + ceilings
    ceiling = [r for r in rows if r["edge_label"] == "truth (ceiling)"]
    assert [r["building"] for r in ceiling] == ["cc", "walkthrough"]
    for r in ceiling:  # truth scores join only hits of one particle: every track is pure
        assert r["fake_rate"] == 0.0 and r["trackml_score"] > 0.5
    for r in rows:
        assert 0.0 <= r["trackml_score"] <= 1.0
        assert math.isnan(r["fake_rate"]) or 0.0 <= r["fake_rate"] <= 1.0  # nan: no track built
        if r.get("validation_tuned"):  # the tuned row repeats its cut's test figures
            same = [q for q in rows if not q.get("validation_tuned") and q["threshold"] == r["threshold"]
                    and q["edge_label"] == r["edge_label"] and q["building"] == r["building"]]
            assert len(same) == 1
            assert all(same[0][k] == r[k] or math.isnan(r[k]) and math.isnan(same[0][k]) for k in tb.KEYS)
    assert all(r["steps_done"] == 2 for r in rows if r["edge_label"] != "truth (ceiling)")
    assert json.loads((tmp_path / "tb.json").read_text())["rows"] == json.loads(json.dumps(rows))


@pytest.mark.slow
def test_jepa_objective_study(tmp_path):
    import lightning.pytorch as pl

    from gnn_jepa.datamodule import EventDataModule
    from gnn_jepa.models.jepa import JEPAPretraining
    from studies.jepa_objective import run as jo

    path = _tiny_config("pretrain", tmp_path, particles=30, num_train=2, num_val=2, num_test=1)
    cfg = yaml.safe_load(path.read_text())
    model = JEPAPretraining(**cfg["model"]["init_args"])
    trainer = pl.Trainer(max_steps=1, logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, limit_val_batches=0, enable_model_summary=False)
    trainer.fit(model, datamodule=EventDataModule(**cfg["data"]))
    trainer.save_checkpoint(tmp_path / "jepa.ckpt")
    out = jo.main([str(tmp_path / "jepa.ckpt"), "--config", str(path), "--events", "2", "--draws", "2"])
    assert out["batches_x_draws"] == 2  # one batch of 2 events x 2 draws
    for k in ("jepa_loss", "zero_loss", "mean_loss", "occupancy_oracle_loss"):
        assert out[k] >= 0.0
    assert 0.0 < out["occupied_fraction"] <= 1.0


@pytest.mark.slow
def test_learned_graph_study(tmp_path):
    """Through ``python -m``: JSON rows in range, trained embedding and fitted filter written
    where --save-dir says."""
    proc = _module("studies.learned_graph.run", "--particles", "100", "--train-events", "1",
                   "--eval-events", "1", "--filter-events", "1", "--steps", "3",
                   "--save-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)["results"][0]
    assert res["particles"] == 100
    for side in ("learned", "geometric"):
        for row in res[side]["pair_filtered"]:
            assert 0.0 <= row["efficiency_pt1"] <= 1.0 and row["mean_degree"] >= 0.0
    assert (tmp_path / "learned_100.pt").is_file() and (tmp_path / "pair_filter_100.json").is_file()


def _gpu_tracking_dry_run(script: str, tmp_path, timeout: int):
    """Run a studies/gpu_tracking script in its CPU smoke mode (OUT, WORK under tmp_path);
    asserts it ends with status 0 and returns the finished process."""
    env = {**os.environ, "GPU_TRACKING_SMOKE": "1", "PYTHON": sys.executable,
           "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work")}
    proc = subprocess.run(["bash", str(STUDIES / "gpu_tracking" / script)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_full_labels_1k_gpu_script_dry_run_on_cpu(tmp_path):
    """Issue 25's 1k full-label GPU run, tiny and on the CPU: fit, test of the best checkpoint,
    edge-head step; the files the headline row reads are there and hold sane figures."""
    proc = _gpu_tracking_dry_run("full_labels_1k.sh", tmp_path, timeout=600)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "edge_head_gpu_10k.json", "edge_head_gpu_1k.json", "full_labels_1k_metrics.json",
        "full_labels_1k_train.csv", "logs.txt", "run.log"], proc.stderr[-2000:]
    m = json.loads((out / "full_labels_1k_metrics.json").read_text())["metrics"]
    assert m["num_events"] == 2 and 0.0 <= m["trackml_score"] <= 1.0
    assert 0.0 < m["ceiling_trackml_score"] <= 1.0
    for name, heads in (("1k", ["mlp", "segment_pairs"]), ("10k", ["interaction", "segment_pairs"])):
        rows = json.loads((out / f"edge_head_gpu_{name}.json").read_text())["rows"]
        assert [r["head"] for r in rows] == heads


@pytest.mark.slow
def test_gpu_tracking_study_dry_run_on_cpu(tmp_path):
    """The track-finding GPU run, tiny and on the CPU: every job ends and reports its figures."""
    proc = _gpu_tracking_dry_run("run.sh", tmp_path, timeout=900)
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
    assert [r["head"] for r in summary["d_edge_head_10k"]["rows"]] == ["mlp", "interaction", "segment_pairs"]
    log = (out / "run.log").read_text()
    assert "TIMED OUT" not in log and log.count(" rc=0") == 3 + 5  # 3 preparations, 5 jobs


@pytest.mark.slow
def test_segment_pairs_study(tmp_path):
    """The script fits and tests the shipped small config (tiny events here) and prints the
    test metrics of the held-out events it was told to use."""
    env = {**os.environ, "OUT": str(tmp_path / "runs"), "THREADS": "1", "PYTHON": sys.executable}
    tiny = ["--data.simulator", '{"preset": "trackml", "num_particles": 20, "eta_range": [-2, 2]}',
            "--data.num_val", "1", "--data.num_test", "2", "--data.batch_size", "1",
            "--data.cache_dir", str(tmp_path / "cache"), "--trainer.val_check_interval", "2",
            *[f"--model.encoder.{k}={v}" for k, v in TINY_ENCODER.items()],
            "--model.head.hidden", "8", "--model.head.rounds", "1"]
    out = subprocess.run(["bash", "studies/segment_pairs/run.sh", "tiny", "2", "2", "0", *tiny],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    metrics = json.loads((tmp_path / "runs/tiny/test/metrics.json").read_text())["metrics"]
    assert metrics["num_events"] == 2 and "'num_events': 2" in out.stdout
    assert 0.0 <= metrics["dm_efficiency"] <= 1.0
    hparams = yaml.safe_load(next((tmp_path / "runs/tiny").glob("*/version_0/hparams.yaml")).read_text())
    assert hparams["head"]["kind"] == "segment_pairs"  # the shipped config's head


def test_segment_pairs_summary_by_hand(tmp_path):
    from studies.segment_pairs import summarize as sp

    base = {"fake_rate": 0.1, "duplicate_rate": 0.0, "edge_auc": 0.9, "num_events": 20}
    for seed, (score, dm) in enumerate([(0.9, 1.0), (0.8, 0.9)]):
        (tmp_path / f"pairs_seed{seed}_metrics.json").write_text(
            json.dumps({"metrics": {**base, "trackml_score": score, "dm_efficiency": dm}}))
    (tmp_path / "inter_seed0_metrics.json").write_text(
        json.dumps({"metrics": {**base, "trackml_score": 0.6, "dm_efficiency": 0.8}}))
    out = sp.main([str(p) for p in sorted(tmp_path.glob("*.json"))] + ["--out", str(tmp_path / "s.json")])
    assert out["pairs"]["trackml_score"] == {"mean": pytest.approx(0.85), "min": 0.8, "max": 0.9,
                                             "per_seed": [0.9, 0.8]}
    assert out["pairs"]["runs"] == 2 and out["inter"]["seeds"] == [0] and out["inter"]["test_events"] == [20]
    assert json.loads((tmp_path / "s.json").read_text()) == json.loads(json.dumps(out))
    with pytest.raises(ValueError, match="expected <head>_seed<k>"):
        sp.summarize([tmp_path / "s.json"])


def test_label_curve_resumes_only_an_interrupted_fit(tmp_path):
    """A fit stopped by SIGTERM (last.ckpt, no test result) resumes in its own logger version;
    a finished run, or one with no checkpoint, starts afresh."""
    from studies.label_curve.run import interrupted_fit

    work = tmp_path / "scratch_L3_s0"
    assert interrupted_fit(work) is None
    ckpts = work / "finetune_trackml_small" / "version_2" / "checkpoints"
    ckpts.mkdir(parents=True)
    assert interrupted_fit(work) is None
    (ckpts / "last.ckpt").write_bytes(b"")
    assert interrupted_fit(work) == (2, ckpts / "last.ckpt")
    (work / "test").mkdir()
    (work / "test" / "metrics.json").write_text("{}")
    assert interrupted_fit(work) is None


@pytest.mark.slow
def test_label_curve_pretrains_each_seed_then_fine_tunes_from_its_final_state(tmp_path, monkeypatch):
    """``--pretrain`` runs the pretraining once per seed and fine-tunes from its last.ckpt; a
    second call reuses the finished pretraining; ``{seed}`` in the extra arguments becomes
    the run's seed."""
    cfg = yaml.safe_load((ROOT / "configs/pretrain/trackml_small_mixing.yaml").read_text())
    cfg["trainer"].update(max_steps=2, val_check_interval=1)
    cfg["data"].update(simulator={"preset": "trackml", "num_particles": 10}, num_train=2,
                       num_val=1, cache_dir=str(tmp_path / "cache"))
    pre_cfg = tmp_path / "pretrain.yaml"
    pre_cfg.write_text(yaml.safe_dump(cfg))
    results, work = tmp_path / "results", tmp_path / "work"
    tiny = ["--trainer.max_steps", "2", "--trainer.val_check_interval", "1",
            "--data.simulator.num_particles", "20", "--data.num_val", "1", "--data.num_test", "1",
            "--data.cache_dir", str(tmp_path / "cache")]
    base = ["--labels", "1", "--seeds", "0", "--threads", "1", "--results", str(results),
            "--work", str(work)]
    proc = _module("studies.label_curve.run", "--arm", "pre", *base, "--pretrain", str(pre_cfg),
                   "--", *tiny)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = work / "pretrain_s0" / "pretrain_trackml_small_mixing" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 2
    row = json.loads((results / "pre_L1_s0.json").read_text())
    assert f"--model.pretrained {last}" in row["fit_command"]
    assert "--seed_everything 0 --data.seed 0" in row["pretrain_command"]
    assert (work / "pretrain_s0" / "finished").read_text().strip() == row["pretrain_command"]
    # the same seed again: the finished pretraining is reused, not rerun
    from studies.label_curve import run as lc

    mtime = last.stat().st_mtime
    assert lc.pretrain(str(pre_cfg), 0, work, 1) == (last, row["pretrain_command"])
    assert last.stat().st_mtime == mtime
    # a committed checkpoint per seed through {seed} (the fine-tuning itself stubbed out)
    seen = []

    def fake_run(arm, labels, seed, work_root, threads, extra):
        seen.append((seed, extra))
        (work_root / lc.run_name(arm, labels, seed) / "test").mkdir(parents=True)
        (work_root / lc.run_name(arm, labels, seed) / "test" / "metrics.json").write_text("{}")
        return {"arm": arm, "labelled_events": labels, "seed": seed, "trackml_score": 0.5,
                "dm_efficiency": 1.0, "fake_rate": 0.0, "best_step": 1, "wall_s": 0.0,
                "num_events": 1}

    monkeypatch.setattr(lc, "one_run", fake_run)
    lc.main(["--arm", "given", "--labels", "1", "--seeds", "3,4", "--results", str(results),
             "--work", str(work), "--", "--model.pretrained", "ckpts/final_s{seed}.ckpt"])
    assert seen == [(3, ["--model.pretrained", "ckpts/final_s3.ckpt"]),
                    (4, ["--model.pretrained", "ckpts/final_s4.ckpt"])]
    with pytest.raises(SystemExit, match="--pretrain"):
        lc.main(["--arm", "scratch", *base, "--pretrain", str(pre_cfg)])


def test_label_curve_statistics(tmp_path):
    """The curve lists each cell's scores in seed order and its mean, min and max of the
    TrackML score, DM efficiency and fake rate (worked out by hand)."""
    from studies.label_curve.run import curve

    runs = [("scratch", 3, 1, 0.90, 0.98, 0.02), ("scratch", 3, 0, 0.80, 1.00, 0.04),
            ("scratch", 10, 0, 0.95, 0.99, 0.01), ("jepa", 3, 0, 0.93, 0.97, 0.03)]
    for arm, labels, seed, score, dm, fake in runs:
        (tmp_path / f"{arm}_L{labels}_s{seed}.json").write_text(json.dumps(
            {"arm": arm, "labelled_events": labels, "seed": seed, "trackml_score": score,
             "dm_efficiency": dm, "fake_rate": fake, "best_step": 100 * (seed + 1), "num_events": 20}))
    doc = curve(tmp_path)
    assert doc["scratch"] == {"3": [0.80, 0.90], "10": [0.95]} and doc["jepa"] == {"3": [0.93]}
    cell = doc["stats"]["scratch"]["3"]
    assert cell["seeds"] == [0, 1] and cell["runs"] == 2
    assert cell["best_step"] == [100, 200] and cell["test_events"] == [20]
    assert (cell["mean"], cell["min"], cell["max"]) == (pytest.approx(0.85), 0.80, 0.90)
    assert (cell["dm_efficiency"], cell["dm_efficiency_min"], cell["dm_efficiency_max"]) == \
        (pytest.approx(0.99), 0.98, 1.00)
    assert (cell["fake_rate"], cell["fake_rate_min"], cell["fake_rate_max"]) == \
        (pytest.approx(0.03), 0.02, 0.04)


def test_graph_density_ranks_by_hand():
    """Nearest-neighbour rows (minimum image on a periodic axis), segment ranks among the
    counted candidates, and the k that keeps a share of the segments, worked out by hand on
    five points of a line at 0, 1, 3, 7, 15."""
    from studies.graph_density.run import needed_k, neighbours, segment_ranks

    line = np.array([[0.0], [1.0], [3.0], [7.0], [15.0]])
    nb = neighbours(line, [None], 2)
    assert nb.tolist() == [[1, 2], [0, 2], [1, 0], [2, 1], [3, 2]]
    # period 17: 15 is 2 from 0 and 3 from 1
    assert neighbours(line, [17.0], 2)[[0, 4]].tolist() == [[1, 4], [0, 1]]
    # fewer points than k + 1: rows padded with N
    assert neighbours(line[:2], [None], 2).tolist() == [[1, 2], [0, 2]]
    a, b = np.array([0, 2, 3, 0]), np.array([2, 0, 0, 1])
    every = np.ones_like(nb, dtype=bool)
    assert segment_ranks(nb, every, a, b).tolist() == [2, 2, 3, 1]  # 0 not in 3's row: K + 1
    # hit 1 is no candidate: it stops counting in front of 2 and 0, and its segment is lost
    assert segment_ranks(nb, nb != 1, a, b).tolist() == [1, 1, 3, 3]
    ranks = np.array([5, 1, 3, 1, 2])
    assert [needed_k(ranks, q, 8) for q in (0.4, 0.6, 0.8, 1.0)] == [1, 2, 3, 5]
    assert needed_k(ranks, 1.0, 4) is None and needed_k(np.zeros(0, int), 0.9, 4) is None


@pytest.mark.slow
def test_graph_density_study(tmp_path):
    """Through ``python -m``: per size and rule the needed k grow with the share kept, the
    kept shares with k, and the JSON file equals what was printed."""
    out = tmp_path / "density.json"
    proc = _module("studies.graph_density.run", "--particles", "50,150", "--events", "1",
                   "--max-k", "32", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == doc
    assert [r["particles"] for r in doc["sizes"]] == [50, 150]
    for row in doc["sizes"]:
        assert set(row["rules"]) == {"frame", "pair_filter", "both_filters"}
        for rule in row["rules"].values():
            for cell in rule.values():
                ks = [cell[k] for k in ("k_90", "k_95", "k_99") if cell[k] is not None]
                assert ks == sorted(ks) and all(1 <= k <= 32 for k in ks)
                kept = [cell[f"kept_at_{k}"] for k in (8, 16, 32)] + [cell["kept_at_max_k"]]
                assert kept == sorted(kept) and 0.0 <= kept[0] and kept[-1] <= 1.0
        # each filter only removes candidates from the ranked rows: it keeps a subset
        kept = [row["rules"][r]["all"]["kept_at_max_k"] for r in ("frame", "pair_filter",
                                                                   "both_filters")]
        assert kept == sorted(kept, reverse=True)
    assert set(doc["k_exponent_vs_hits"]) == {"frame", "pair_filter", "both_filters"}


@pytest.mark.slow
def test_event_mixing_study(tmp_path):
    """The event-mixing screen: overlays, the pretext training, the zero-shot screen on single
    events, and checkpoints that fine-tuning loads (encoder and whole head)."""
    from gnn_jepa.models import TrackFinding
    from studies.event_mixing import run as em

    cfg = _tiny_config("finetune", tmp_path, num_val=1)
    doc = em.main(["--pairs", "2", "--val-pairs", "1", "--single-val", "1", "--steps", "2",
                   "--eval-every", "1", "--particles", "10", "--config", str(cfg),
                   "--out", str(tmp_path / "mix")])
    assert [r["step"] for r in doc["curve"]] == [0, 1, 2]
    for r in doc["curve"]:
        for k in ("same_event_auc", "zero_shot_segment_auc"):
            assert 0.0 <= r[k] <= 1.0, (k, r)
    saved = json.loads((tmp_path / "mix" / "curve.json").read_text())
    assert saved["curve"] == doc["curve"]
    model_args = yaml.safe_load(cfg.read_text())["model"]["init_args"]
    tf = TrackFinding(**{**model_args, "mode": "finetune", "pretrained": str(tmp_path / "mix" / "step2.ckpt")})
    assert tf.pretrained_head == "whole"


@pytest.mark.parametrize("path", sorted((STUDIES / "event_mixing" / "checkpoints").glob("*.ckpt")),
                         ids=lambda p: p.name)
def test_committed_pretraining_states_load_into_the_shipped_tracker(path):
    """The stripped final pretraining states fine-tune as the label curve does: the shipped
    fine-tuning config takes encoder and whole edge head from them, weights unchanged."""
    from gnn_jepa.models import TrackFinding

    cfg = yaml.safe_load((ROOT / "configs/finetune/trackml_small.yaml").read_text())
    model = TrackFinding(**{**cfg["model"]["init_args"], "pretrained": str(path)})
    assert model.pretrained_head == "whole"
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    for prefix, module in (("target_encoder.", model.encoder), ("target_head.", model.head)):
        own = module.state_dict()
        part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        assert part.keys() == own.keys()
        assert all(torch.equal(own[k], v) for k, v in part.items())

