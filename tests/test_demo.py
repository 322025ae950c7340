"""``make demo`` end to end on tiny events: label-free pretraining, then the pretrained and the
scratch fine-tuning with the same budget, both tested on the same held-out events."""
import json
import logging

import pytest
import torch

from gnn_jepa import demo
from gnn_jepa.models.checkpoints import best_checkpoint

SMALL = ["--data.simulator", '{"preset": "trackml", "num_particles": 20, "eta_range": [-2, 2]}',
         "--data.num_val", "1", "--data.batch_size", "1", "--data.num_workers", "0",
         "--trainer.val_check_interval", "2", "--trainer.accelerator", "cpu",
         "--model.init_args.encoder.d_model", "16", "--model.init_args.encoder.d_embedding", "8",
         "--model.init_args.encoder.n_layers", "1", "--model.init_args.head.hidden", "16"]


@pytest.mark.slow
def test_demo_compares_pretrained_and_scratch_fine_tuning(tmp_path, capsys, caplog):
    with caplog.at_level(logging.INFO):
        rows = demo.run(str(tmp_path / "demo"), pretrain_steps=4, finetune_steps=4, labels=2, test_events=2,
                        extra=(*SMALL, "--data.cache_dir", str(tmp_path / "cache")))
    out = capsys.readouterr().out

    assert [r["arm"] for r in rows] == ["pretrained", "scratch"]
    for row in rows:
        assert row["labelled_events"] == 2 and row["steps"] == 4 and row["best_step"] in (2, 4)
        # each row is its arm's own test report
        saved = json.loads((tmp_path / "demo" / row["arm"] / "test" / "metrics.json").read_text())["metrics"]
        assert {c: row[c] for c in demo.COLUMNS} == {c: saved.get(c) for c in demo.COLUMNS}
        assert saved["num_events"] == 2
        assert 0.0 <= row["trackml_score"] <= 1.0
    assert json.loads((tmp_path / "demo" / "comparison.json").read_text()) == rows
    # the printed table has both rows
    table = out[out.index("comparison"):]
    assert "pretrained" in table and "scratch" in table

    # the pretrained arm started from the pretraining's final state (its last.ckpt after the
    # last step), its whole edge head included; the scratch arm from nothing
    (last,) = (tmp_path / "demo" / "pretrain").glob("*/version_*/checkpoints/last.ckpt")
    assert torch.load(last, weights_only=False)["global_step"] == 4
    hp = {arm: torch.load(best_checkpoint(tmp_path / "demo" / arm), weights_only=False)["hyper_parameters"]
          for arm in ("pretrained", "scratch")}
    assert hp["pretrained"]["pretrained"] == str(last) and hp["pretrained"]["mode"] == "finetune"
    assert hp["scratch"]["mode"] == "scratch" and hp["scratch"]["pretrained"] is None
    # (built twice, for fit and for test, by the pretrained arm only)
    assert caplog.text.count("the encoder and the whole edge head (output layer included)") == 2
