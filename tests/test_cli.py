"""Every YAML in configs/ (and studies/*/configs/) runs through the real CLI for a couple of
steps on CPU, tiny data."""
import csv
import glob
import shutil
import json
from pathlib import Path

import pytest
import torch

from gnn_jepa.cli import main

ROOT = Path(__file__).resolve().parents[1]


def configs(kind: str) -> list[str]:
    """The ``kind`` ("pretrain"/"finetune") configs: configs/<kind>/ and studies/*/configs/*_<kind>."""
    paths = [*(ROOT / "configs" / kind).glob("*.yaml"), *ROOT.glob(f"studies/*/configs/*_{kind}.yaml")]
    assert any("studies" in str(p) for p in paths), "no study config found: did the layout move?"
    # the ColliderML configs read Parquet shards: test_colliderml_configs_end_to_end runs them
    return sorted(str(p.relative_to(ROOT)) for p in paths if not p.name.startswith("colliderml"))


TINY_DATA = ["--data.simulator", '{"preset": "trackml", "num_particles": 20, "eta_range": [-2, 2]}',
             "--data.num_train", "2", "--data.num_val", "2", "--data.num_test", "2",
             "--data.batch_size", "1", "--data.num_workers", "0"]


def tiny_trainer(tmp_path, steps=2, logger=True):
    log = ["--trainer.logger.init_args.save_dir", str(tmp_path)] if logger else []
    return log + ["--trainer.max_steps", str(steps), "--trainer.val_check_interval", "2",
            "--trainer.limit_val_batches", "2", "--trainer.accelerator", "cpu",
            "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path),
            "--data.cache_dir", str(tmp_path / "cache")]


def pretrain(tmp_path, config="configs/pretrain/trackml_small.yaml", extra=(), logger=True, after=()):
    # a small predictor: the segment-level JEPA's (and its head's trunk) or the cell predictor
    text = (ROOT / config).read_text()
    small = (["--model.init_args.predictor.hidden", "16", "--model.init_args.head.hidden", "16"]
             if "SegmentJEPA" in text else ["--model.init_args.head.hidden", "16"]
             if "EventMixingPretraining" in text else ["--model.init_args.predictor.d_model", "16"])
    main(["fit", "--config", str(ROOT / config), *extra, *tiny_trainer(tmp_path, logger=logger), *TINY_DATA,
          "--model.init_args.encoder.d_model", "16", "--model.init_args.encoder.d_embedding", "8",
          "--model.init_args.encoder.n_layers", "1", *small, *after])
    ckpts = glob.glob(str(tmp_path / "**" / "last.ckpt"), recursive=True)
    assert ckpts, "fit wrote no last.ckpt"
    return ckpts[0]


@pytest.mark.parametrize("config", configs("pretrain"))
def test_pretrain_configs_run(tmp_path, config):
    extra = []
    if "toy2d" in config:
        extra = ["--data.simulator", '{"preset": "toy2d", "num_particles": 20}']
    ck = pretrain(tmp_path, config, after=extra)
    state = torch.load(ck, weights_only=False)
    assert state["global_step"] == 2
    assert any(k.startswith("target_encoder.") for k in state["state_dict"])
    rows = list(csv.DictReader(open(glob.glob(str(tmp_path / "**" / "metrics.csv"), recursive=True)[0])))
    monitor = "val/same_event_auc" if "mixing" in config else "val/rankme"
    assert any(r.get(monitor) for r in rows), "validation monitors were not logged"


def test_segment_jepa_pretraining_initialises_the_head_trunk(tmp_path, caplog):
    """configs/pretrain/trackml_small_segments.yaml -> configs/finetune/trackml_small.yaml: the
    fine-tuning loads the encoder and the segment-pair rounds (pretraining's EMA copies)."""
    ck = pretrain(tmp_path / "pre", "configs/pretrain/trackml_small_segments.yaml")
    state = torch.load(ck, weights_only=False)["state_dict"]
    assert any(k.startswith("target_head.segment_mlps.") for k in state)
    assert not any(k.startswith("target_head.out.") for k in state)
    import logging
    with caplog.at_level(logging.INFO):
        main(["fit", "--config", str(ROOT / "configs/finetune/trackml_small.yaml"), "--model.pretrained", ck,
              "--model.encoder.d_model", "16", "--model.encoder.d_embedding", "8",
              "--model.encoder.n_layers", "1", "--model.head.hidden", "16",
              *tiny_trainer(tmp_path / "ft", steps=1), *TINY_DATA])
    assert "the encoder and the edge head's segment-pair rounds" in caplog.text


def test_event_mixing_pretraining_initialises_the_whole_head(tmp_path, caplog):
    """configs/pretrain/trackml_small_mixing.yaml (overlays of two events) ->
    configs/finetune/trackml_small.yaml: the fine-tuning loads the encoder and the whole head."""
    ck = pretrain(tmp_path / "pre", "configs/pretrain/trackml_small_mixing.yaml")
    state = torch.load(ck, weights_only=False)["state_dict"]
    assert any(k.startswith("target_head.out.") for k in state)
    import logging
    with caplog.at_level(logging.INFO):
        main(["fit", "--config", str(ROOT / "configs/finetune/trackml_small.yaml"), "--model.pretrained", ck,
              "--model.encoder.d_model", "16", "--model.encoder.d_embedding", "8",
              "--model.encoder.n_layers", "1", "--model.head.hidden", "16",
              *tiny_trainer(tmp_path / "ft", steps=1), *TINY_DATA])
    assert "the encoder and the whole edge head (output layer included)" in caplog.text


@pytest.mark.parametrize("config", configs("finetune"))
def test_finetune_configs_run_and_test_writes_metrics(tmp_path, config, capsys):
    # a benchmark finetune config is paired with its pretrain config (same hit features)
    partner = config.replace("_finetune.yaml", "_pretrain.yaml")
    paired = partner != config and (ROOT / partner).is_file()
    ck = pretrain(tmp_path / "pre", **({"config": partner} if paired else {}))
    enc = ["--model.encoder.d_model", "16", "--model.encoder.d_embedding", "8",
           "--model.encoder.n_layers", "1", "--model.encoder.heads", "4"]
    main(["fit", "--config", str(ROOT / config), "--model.pretrained", ck, *enc,
          *tiny_trainer(tmp_path / "ft"), *TINY_DATA])
    ft = glob.glob(str(tmp_path / "ft" / "**" / "last.ckpt"), recursive=True)[0]
    capsys.readouterr()
    main(["test", "--config", str(ROOT / config), "--model.pretrained", ck, *enc, "--ckpt_path", ft,
          "--model.output_dir", str(tmp_path / "out"), *tiny_trainer(tmp_path / "ft"), *TINY_DATA])
    printed = capsys.readouterr().out
    # one metrics table (the report's), not Lightning's second one
    assert printed.count("\ndm_efficiency ") == 1, printed
    assert "test/trackml_score" not in printed
    import json
    summary = json.loads((tmp_path / "out" / "metrics.json").read_text())
    m = summary["metrics"]
    assert 0.0 <= m["trackml_score"] <= 1.0 and m["num_events"] == 2
    assert 0.0 <= m["ceiling_trackml_score"] <= 1.0  # the graph's ceiling on the same events
    for k in ("trackml_eff", "fake_rate", "dup_rate", "physics_eff_pt1"):  # the ColliderML task's
        assert 0.0 <= m[f"colliderml_{k}"] <= 1.0, k
    assert (tmp_path / "out" / "efficiency.png").stat().st_size > 0
    main(["predict", "--config", str(ROOT / config), "--model.pretrained", ck, *enc, "--ckpt_path", ft,
          "--model.output_dir", str(tmp_path / "out"), *tiny_trainer(tmp_path / "ft"), *TINY_DATA])
    subs = sorted((tmp_path / "out" / "submission").glob("event*-submission.csv"))
    assert len(subs) == 2
    import pandas as pd
    sub = pd.read_csv(subs[0])
    assert list(sub.columns) == ["hit_id", "track_id"]
    assert sub["hit_id"].is_unique and (sub["track_id"] >= 0).all()
    # the ColliderML task's submission holds the same tracks: hit_id - 1, one table
    pq = pytest.importorskip("pyarrow.parquet")
    task = pq.read_table(tmp_path / "out" / "colliderml_predictions.parquet").to_pandas()
    assert list(task.columns) == ["event_id", "hit_id", "track_id"]
    for path in subs:
        rows = task[task.event_id == int(path.name[5:14])]
        csv_rows = pd.read_csv(path)
        assert rows.hit_id.tolist() == (csv_rows.hit_id - 1).tolist()
        assert rows.track_id.tolist() == csv_rows.track_id.tolist()
    assert len(task) == sum(len(pd.read_csv(p)) for p in subs)


def test_wandb_logger_config_runs_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)  # the logger config writes under ./runs
    pretrain(tmp_path, extra=["--config", str(ROOT / "configs/logger/wandb.yaml")], logger=False)
    assert list(tmp_path.rglob("*.wandb")), "wandb wrote no offline run file"


def test_pretrained_tracker_overlay_changes_only_the_learning_rates(capsys):
    """configs/finetune/overlays/pretrained_tracker.yaml, given after a fine-tuning config:
    the learning rates are its own, every other setting the fine-tuning config's."""
    import yaml

    def printed(*configs):
        args = [a for c in configs for a in ("--config", str(ROOT / c))]
        with pytest.raises(SystemExit) as e:
            main(["fit", *args, "--print_config"])
        assert e.value.code == 0
        return yaml.safe_load(capsys.readouterr().out)

    base = printed("configs/finetune/trackml_small.yaml")
    both = printed("configs/finetune/trackml_small.yaml", "configs/finetune/overlays/pretrained_tracker.yaml")
    optim = both["model"]["init_args"].pop("optim")
    assert (optim["encoder_lr"], optim["head_lr"]) == (1.25e-4, 5.0e-4)
    base_optim = base["model"]["init_args"].pop("optim")
    assert {k: v for k, v in optim.items() if not k.endswith("_lr")} == \
        {k: v for k, v in base_optim.items() if not k.endswith("_lr")}
    assert (base_optim["encoder_lr"], base_optim["head_lr"]) == (4 * 1.25e-4, 4 * 5.0e-4)
    assert both == base


def test_nested_data_and_masker_keys_on_the_command_line_keep_their_types(capsys):
    """``--data.simulator.num_particles 20`` is the number 20 (not the text "20", which the
    simulator refused deep inside fit and which keyed the event cache apart from YAML's 20);
    likewise inside data.graph and a pretraining's masker."""
    import yaml

    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(ROOT / "configs/pretrain/trackml_small.yaml"),
              "--data.simulator.num_particles", "20", "--data.simulator.poisson", "false",
              "--data.graph.radius", "0.2", "--model.masker.min_target_hits", "3",
              "--print_config"])
    assert e.value.code == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    sim, graph = cfg["data"]["simulator"], cfg["data"]["graph"]
    assert sim["num_particles"] == 20 and type(sim["num_particles"]) is int
    assert sim["poisson"] is False
    assert graph["radius"] == 0.2 and type(graph["radius"]) is float
    masker = cfg["model"]["init_args"]["masker"]
    assert masker["min_target_hits"] == 3 and type(masker["min_target_hits"]) is int


def test_print_config_and_unknown_key(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(ROOT / "configs/pretrain/trackml_small.yaml"), "--print_config"])
    assert e.value.code == 0
    assert "JEPAPretraining" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  class_path: gnn_jepa.models.JEPAPretraining\n  init_args:\n    d_modle: 3\n")
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(bad)])
    assert e.value.code != 0
    assert "d_modle" in capsys.readouterr().err
    # a mistyped key inside a nested block is named with its path
    bad.write_text("model:\n  class_path: gnn_jepa.models.JEPAPretraining\n  init_args:\n"
                   "    encoder: {d_modle: 3}\n")
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(bad)])
    assert e.value.code != 0
    assert "d_modle" in capsys.readouterr().err


def test_pretraining_on_a_trackml_folder_of_hits_only(tmp_path):
    """Unlabelled events (``-hits.csv`` only) pretrain; track finding refuses them by name."""
    main(["simulate", "--hits-only", "--num-events", "6", "--num-particles", "20",
          "--out", str(tmp_path / "hits")])
    names = sorted(p.name for p in (tmp_path / "hits").iterdir())
    assert len(names) == 6 and all(n.endswith("-hits.csv") for n in names)
    folder = ["--data.source", "trackml", "--data.data_dir", str(tmp_path / "hits"),
              "--data.train_offset", "0", "--data.num_train", "2", "--data.num_val", "2",
              "--data.num_test", "2", "--data.num_workers", "0"]
    ck = pretrain(tmp_path / "pre", after=folder)
    assert torch.load(ck, weights_only=False)["global_step"] == 2
    enc = ["--model.encoder.d_model", "16", "--model.encoder.d_embedding", "8",
           "--model.encoder.n_layers", "1", "--model.encoder.heads", "4"]
    with pytest.raises(ValueError, match=r"event\(s\) 100\d.* have no truth \(hits only"):
        main(["fit", "--config", str(ROOT / "configs/finetune/trackml_small.yaml"),
              "--model.pretrained", ck, *enc, *tiny_trainer(tmp_path / "ft"), *TINY_DATA, *folder])


def test_simulate_subcommand_writes_trackml_csv(tmp_path):
    main(["simulate", "--preset", "trackml", "--num-events", "2", "--num-particles", "10",
          "--out", str(tmp_path)])
    from gnn_jepa.data.trackml import list_events, read_event
    events = list_events(tmp_path)
    assert len(events) == 2
    ev = read_event(events[0])
    assert len(ev.hits) > 0 and set(ev.truth["hit_id"]) == set(ev.hits["hit_id"])


def test_front_door_lists_every_command_and_each_has_its_help(capsys):
    from gnn_jepa.cli import COMMANDS

    for argv in ([], ["--help"], ["-h"]):
        main(argv)
        out = capsys.readouterr().out
        for name, (summary, _) in COMMANDS.items():
            assert f"  {name}" in out and summary in out
    assert {"fit", "validate", "test", "predict", "simulate"} <= set(COMMANDS)
    for name in COMMANDS:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        assert "usage:" in capsys.readouterr().out.lower()
    with pytest.raises(SystemExit) as e:
        main(["pretrain"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unknown command 'pretrain'" in err and "simulate" in err


@pytest.mark.parametrize("argv,message", [
    (["--num-events", "-3"], "--num-events: must be >= 1, got -3"),
    (["--num-particles", "0"], "--num-particles: must be >= 1, got 0"),
    (["--first-event", "-5"], "--first-event: must be >= 0, got -5"),
    (["--seed", "x"], "--seed: expected an integer, got 'x'"),
])
def test_simulate_validates_its_arguments(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(["simulate", "--out", str(tmp_path / "sim"), *argv])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "sim").exists()


def test_one_event_numbering_everywhere(tmp_path):
    """``gnn-jepa simulate --seed s``, ``Simulator.simulate_many(seed=s)`` and the dataset source
    with ``seed: s`` give the same events."""
    import pandas as pd

    from gnn_jepa.data.dataset import EventSource
    from gnn_jepa.data.simulator import Simulator
    from gnn_jepa.data.trackml import list_events, read_event

    main(["simulate", "--preset", "toy2d", "--num-events", "3", "--num-particles", "15",
          "--seed", "5", "--first-event", "0", "--out", str(tmp_path)])
    written = [read_event(p) for p in list_events(tmp_path)]
    many = Simulator.from_preset("toy2d", num_particles=15).simulate_many(3, seed=5)
    source = EventSource("simulate", simulator={"preset": "toy2d", "num_particles": 15}, seed=5)
    for i in range(3):
        ref = many[i].hits[["hit_id", "x", "y", "z"]].reset_index(drop=True)
        pd.testing.assert_frame_equal(source.event(i).hits[["hit_id", "x", "y", "z"]]
                                      .reset_index(drop=True), ref, check_exact=True)
        # the CSV round trip keeps the values (written with full precision)
        pd.testing.assert_frame_equal(written[i].hits[["hit_id", "x", "y", "z"]].reset_index(drop=True),
                                      ref, check_dtype=False, check_exact=True)
    assert not many[0].hits.equals(many[1].hits)



def test_colliderml_configs_end_to_end(tmp_path, capsys):
    """The ColliderML walkthrough of the README on simulated shards: pretrain on hits only,
    fine-tune, test (TrackML score and the task's metrics), predict the task's submission;
    the submission, scored against the shards' own truth, gives the test's task metrics."""
    pq = pytest.importorskip("pyarrow.parquet")
    import pandas as pd

    from gnn_jepa.tracking.colliderml_metrics import read_predictions, score_tables

    main(["simulate", "--format", "colliderml", "--num-events", "8", "--num-particles", "20",
          "--out", str(tmp_path / "cml")])
    data = tmp_path / "cml" / "data"
    hits_only = tmp_path / "hits_only" / "sim_pu0_tracker_hits"
    shutil.copytree(data / "sim_pu0_tracker_hits", hits_only)  # no particles: unlabelled
    graph = tmp_path / "graph.yaml"  # what fit-graph writes: a graph: block
    graph.write_text('graph: {"kind": "eta_phi", "radius": 0.3}\n')
    small = ["--data.graph", str(graph), "--data.num_workers", "0", "--data.num_val", "2"]
    enc = ["--model.init_args.encoder.d_model", "16", "--model.init_args.encoder.d_embedding", "8",
           "--model.init_args.encoder.n_layers", "1"]
    main(["fit", "--config", str(ROOT / "configs/pretrain/colliderml_pu200.yaml"),
          *tiny_trainer(tmp_path / "pre"), *small, *enc, "--data.data_dir", str(hits_only),
          "--data.num_train", "2", "--model.init_args.predictor.d_model", "16"])
    ck = glob.glob(str(tmp_path / "pre" / "**" / "last.ckpt"), recursive=True)[0]
    tune = ["--config", str(ROOT / "configs/finetune/colliderml_pu200.yaml"), *small, *enc,
            "--data.data_dir", str(data), "--data.train_offset", "0", "--data.num_train", "2",
            "--data.num_test", "4", "--model.pretrained", ck, *tiny_trainer(tmp_path / "ft")]
    main(["fit", *tune])
    ft = glob.glob(str(tmp_path / "ft" / "**" / "last.ckpt"), recursive=True)[0]
    out = ["--ckpt_path", ft, "--model.output_dir", str(tmp_path / "out")]
    main(["test", *tune, *out])
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"]
    assert m["num_events"] == 4 and 0.0 <= m["trackml_score"] <= 1.0
    main(["predict", *tune, *out])
    preds = read_predictions(tmp_path / "out" / "colliderml_predictions.parquet")
    assert preds.event_id.nunique() == 4
    # the test events' truth, flat, from the shards themselves (the last 4 event ids)
    hits = pq.read_table(data / "sim_pu0_tracker_hits").to_pandas()
    parts = pq.read_table(data / "sim_pu0_particles").to_pandas()
    test_ids = sorted(hits.event_id)[-4:]
    truth = hits[hits.event_id.isin(test_ids)].explode(["particle_id"])
    truth = truth.assign(hit_id=truth.groupby("event_id").cumcount())[
        ["event_id", "hit_id", "particle_id"]].astype("int64")
    parts = parts[parts.event_id.isin(test_ids)].explode(["particle_id", "px", "py", "primary"])
    assert sorted(preds.event_id.unique()) == test_ids
    assert len(preds) == len(truth)  # every hit submitted once
    scored = score_tables(preds, truth, parts.astype({"particle_id": "int64", "px": float,
                                                      "py": float, "primary": bool}))
    for k, v in scored.items():
        assert m[f"colliderml_{k}"] == pytest.approx(v, abs=1e-12), k
    # predicting needs no truth: the same test events from the hits-only shards
    main(["predict", *tune, "--data.data_dir", str(hits_only), "--ckpt_path", ft,
          "--model.output_dir", str(tmp_path / "out_hits")])
    unlabelled = read_predictions(tmp_path / "out_hits" / "colliderml_predictions.parquet")
    pd.testing.assert_frame_equal(unlabelled, preds)
