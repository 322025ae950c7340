"""Every YAML in configs/ (and benchmarks/configs/) runs through the real CLI for a couple of
steps on CPU, tiny data."""
import csv
import glob
from pathlib import Path

import pytest
import torch

from gnn_jepa.cli import main

ROOT = Path(__file__).resolve().parents[1]


def configs(kind: str) -> list[str]:
    """The ``kind`` ("pretrain"/"finetune") configs: configs/<kind>/ and benchmarks/configs/*_<kind>."""
    paths = [*(ROOT / "configs" / kind).glob("*.yaml"), *(ROOT / "benchmarks/configs").glob(f"*_{kind}.yaml")]
    return sorted(str(p.relative_to(ROOT)) for p in paths)


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
    main(["fit", "--config", str(ROOT / config), *extra, *tiny_trainer(tmp_path, logger=logger), *TINY_DATA,
          "--model.init_args.d_model", "16", "--model.init_args.d_embedding", "8",
          "--model.init_args.n_layers", "1", "--model.init_args.d_predictor", "16", *after])
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
    assert any(r.get("val/rankme") for r in rows), "validation monitors were not logged"


@pytest.mark.parametrize("config", configs("finetune"))
def test_finetune_configs_run_and_test_writes_metrics(tmp_path, config):
    # a benchmark finetune config is paired with its pretrain config (same hit features)
    partner = config.replace("_finetune.yaml", "_pretrain.yaml")
    paired = partner != config and (ROOT / partner).is_file()
    ck = pretrain(tmp_path / "pre", **({"config": partner} if paired else {}))
    enc = ["--model.d_model", "16", "--model.d_embedding", "8", "--model.n_layers", "1", "--model.heads", "4"]
    main(["fit", "--config", str(ROOT / config), "--model.pretrained", ck, *enc,
          *tiny_trainer(tmp_path / "ft"), *TINY_DATA])
    ft = glob.glob(str(tmp_path / "ft" / "**" / "last.ckpt"), recursive=True)[0]
    main(["test", "--config", str(ROOT / config), "--model.pretrained", ck, *enc, "--ckpt_path", ft,
          "--model.output_dir", str(tmp_path / "out"), *tiny_trainer(tmp_path / "ft"), *TINY_DATA])
    import json
    summary = json.loads((tmp_path / "out" / "metrics.json").read_text())
    m = summary["metrics"]
    assert 0.0 <= m["trackml_score"] <= 1.0 and m["num_events"] == 2
    assert (tmp_path / "out" / "efficiency.png").stat().st_size > 0
    main(["predict", "--config", str(ROOT / config), "--model.pretrained", ck, *enc, "--ckpt_path", ft,
          "--model.output_dir", str(tmp_path / "out"), *tiny_trainer(tmp_path / "ft"), *TINY_DATA])
    subs = sorted((tmp_path / "out" / "submission").glob("event*-submission.csv"))
    assert len(subs) == 2
    import pandas as pd
    sub = pd.read_csv(subs[0])
    assert list(sub.columns) == ["hit_id", "track_id"]
    assert sub["hit_id"].is_unique and (sub["track_id"] >= 0).all()


def test_wandb_logger_config_runs_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)  # the logger config writes under ./runs
    pretrain(tmp_path, extra=["--config", str(ROOT / "configs/logger/wandb.yaml")], logger=False)
    assert list(tmp_path.rglob("*.wandb")), "wandb wrote no offline run file"


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


def test_simulate_subcommand_writes_trackml_csv(tmp_path):
    main(["simulate", "--preset", "trackml", "--num-events", "2", "--num-particles", "10",
          "--out", str(tmp_path)])
    from gnn_jepa.data.trackml import list_events, read_event
    events = list_events(tmp_path)
    assert len(events) == 2
    ev = read_event(events[0])
    assert len(ev.hits) > 0 and set(ev.truth["hit_id"]) == set(ev.hits["hit_id"])
