"""Bad configs given to ``gnn-jepa fit``: an unknown key, a value of the wrong type, an
unknown choice or an impossible size, at the top level or inside a nested block, stops the
command before any event is prepared, with a message naming the key (or its block) and the
value. The Python-level checks of the same blocks are in tests/test_config.py.
"""
from __future__ import annotations

import pytest
import yaml

from gnn_jepa.cli import main
from tests.reliability.conftest import (FINETUNE_CONFIG as FT, PRETRAIN_CONFIG as PRE, ROOT,
                                        config_with, datamodule, exit_code_and_stderr)

EXIT = "exit"  # a parser error: exit status 2, the message on stderr
M = "model.init_args."

# name -> (config, {dotted key: value}, EXIT or the exception type, [message fragments])
CONFIGS = {
    # unknown keys inside the nested blocks
    "encoder_unknown_key": (PRE, {M + "encoder.d_modle": 3}, EXIT,
                            ["Group 'encoder' does not accept option 'd_modle'"]),
    "head_unknown_key": (FT, {M + "head.kindd": "mlp"}, EXIT,
                         ["Group 'head' does not accept option 'kindd'"]),
    "optim_unknown_key": (PRE, {M + "optim.lr": 1}, EXIT, ["Group 'optim' does not accept option 'lr'"]),
    "tracks_unknown_key": (FT, {M + "tracks.buildng": "cc"}, EXIT,
                           ["Group 'tracks' does not accept option 'buildng'"]),
    "masker_unknown_key": (PRE, {M + "masker.num_target": 4}, ValueError,
                           ["model.masker: unknown key(s) ['num_target']; known: ['anchor', "]),
    "graph_unknown_key": (PRE, {"data.graph.radiu": 0.1}, ValueError,
                          ["data.graph: unknown key(s) ['radiu']; known: ['backend', "]),
    "simulator_unknown_key": (PRE, {"data.simulator.num_partcles": 5}, ValueError,
                              ["Simulator: unknown config field(s) ['num_partcles']; valid: "]),
    # values of the wrong type
    "encoder_size_as_text": (PRE, {M + "encoder.d_model": "big"}, EXIT,
                             ['Parser key "encoder.d_model"', "Expected a <class 'int'>. Got value: big"]),
    "head_size_as_text": (FT, {M + "head.hidden": "wide"}, EXIT,
                          ['Parser key "head.hidden"', "Expected a <class 'int'>. Got value: wide"]),
    "tracks_threshold_as_text": (FT, {M + "tracks.threshold": "high"}, EXIT,
                                 ['Parser key "tracks.threshold"',
                                  "Expected a <class 'float'>. Got value: high"]),
    "optim_lr_as_text": (PRE, {M + "optim.encoder_lr": "fast"}, EXIT,
                         ['Parser key "optim.encoder_lr"', "Expected a <class 'float'>. Got value: fast"]),
    "masker_count_as_text": (PRE, {M + "masker.num_targets": "four"}, ValueError,
                             ["model.masker.num_targets: expected int, got 'four'"]),
    "graph_radius_as_text": (PRE, {"data.graph.radius": "big"}, ValueError,
                             ["data.graph.radius: expected float, got 'big'"]),
    "batch_size_as_text": (PRE, {"data.batch_size": "two"}, EXIT,
                           ['Parser key "data.batch_size"', "Expected a <class 'int'>. Got value: two"]),
    "event_count_fraction": (PRE, {"data.num_train": 2.5}, EXIT,
                             ['Parser key "data.num_train"', "Expected a <class 'int'>. Got value: 2.5"]),
    # unknown choices
    "head_kind": (FT, {M + "head.kind": "gat"}, ValueError,
                  ["head.kind must be one of ('mlp', 'interaction', 'segment_pairs'), got 'gat'"]),
    "tracks_building": (FT, {M + "tracks.building": "x"}, ValueError,
                        ["tracks.building must be one of ('cc', 'walkthrough'), got 'x'"]),
    "mode": (FT, {M + "mode": "x"}, ValueError, ["mode must be one of ('finetune', 'frozen', 'scratch'), "
                                                 "got 'x'"]),
    "edge_label": (FT, {M + "edge_label": "x"}, ValueError,
                   ["edge_label must be one of ('particle', 'segment'), got 'x'"]),
    "anti_collapse": (PRE, {M + "anti_collapse": "x"}, ValueError,
                      ["AntiCollapse: kind='x'; choose from ('vicreg', 'sigreg', 'none')"]),
    "encoder_attention": (PRE, {M + "encoder.attention": "x"}, ValueError,
                          ["GraphTransformerEncoder: attention='x'; choose from ('local', 'global')"]),
    "target_scope": (PRE, {M + "target_scope": "x"}, ValueError,
                     ["target_scope must be 'regions' or 'full', got 'x'"]),
    "data_source": (PRE, {"data.source": "x"}, ValueError,
                    ["unknown event source 'x'; use 'simulate', 'trackml' or 'colliderml'"]),
    "graph_kind": (PRE, {"data.graph": {"kind": "nope", "radius": 0.1}}, ValueError,
                   ["data.graph: GraphFrame: unknown kind 'nope'; choose from ('cartesian', "]),
    "simulator_preset": (PRE, {"data.simulator.preset": "lhc"}, ValueError,
                         ["unknown detector preset 'lhc'; choose from ['trackml', 'toy2d']"]),
    "node_feature": (PRE, {"data.features": ["r", "nope"]}, ValueError,
                     ["unknown node feature(s) ['nope']; choose from ['eta', 'phi', 'r', "]),
    # impossible sizes
    "encoder_width_zero": (PRE, {M + "encoder.d_model": 0}, ValueError,
                           ["GraphTransformerEncoder: d_model must be >= 1, got 0"]),
    "encoder_heads_not_dividing": (PRE, {M + "encoder.heads": 3}, ValueError,
                                   ["GraphTransformerEncoder: d_model=64 is not divisible by heads=3"]),
    "encoder_dropout_above_one": (PRE, {M + "encoder.dropout": 1.5}, ValueError,
                                  ["GraphTransformerEncoder: dropout must be in [0, 1), got 1.5"]),
    "masker_no_targets": (PRE, {M + "masker.num_targets": 0}, ValueError,
                          ["model.masker: num_targets must be >= 1, got 0"]),
    "cells_zero": (PRE, {M + "cells": [0, 1, 1]}, ValueError,
                   ["cells must be three counts >= 1 (n_phi, n_eta, n_r), got (0, 1, 1)"]),
    "optim_lr_negative": (PRE, {M + "optim.encoder_lr": -1.0}, ValueError,
                          ["optim: learning rates and weight_decay must be >= 0, got "
                           "OptimConfig(encoder_lr=-1.0"]),
    "tracks_min_hits_zero": (FT, {M + "tracks.min_hits": 0}, ValueError,
                             ["tracks.min_hits must be >= 1, got 0"]),
    "tracks_threshold_grid": (FT, {M + "tracks.threshold_grid": [0.5, 1.5]}, ValueError,
                              ["tracks.threshold_grid must be non-empty scores in [0, 1), got (0.5, 1.5)"]),
    "graph_radius_zero": (PRE, {"data.graph.radius": 0}, ValueError,
                          ["data.graph: BuildGraph: radius must be > 0, got 0"]),
    "batch_size_zero": (PRE, {"data.batch_size": 0}, ValueError, ["data.batch_size must be >= 1, got 0"]),
    "num_train_negative": (PRE, {"data.num_train": -1}, ValueError, ["data.num_train must be >= 0, got -1"]),
    "num_val_negative": (PRE, {"data.num_val": -2}, ValueError, ["data.num_val must be >= 0, got -2"]),
    "train_offset_negative": (PRE, {"data.train_offset": -1}, ValueError,
                              ["data.train_offset must be >= 0, got -1"]),
    "num_workers_negative": (PRE, {"data.num_workers": -1}, ValueError,
                             ["data.num_workers must be >= 0, got -1"]),
    "max_coordinate_negative": (PRE, {"data.max_coordinate": -1.0}, ValueError,
                                ["max_coordinate must be > 0 (mm), got -1.0"]),
    # inconsistent settings
    "trackml_without_folder": (PRE, {"data.source": "trackml"}, ValueError,
                               ["source 'trackml' needs data_dir (a folder of TrackML CSV events)"]),
    "finetune_without_checkpoint": (FT, {M + "mode": "finetune"}, ValueError,
                                    ["mode 'finetune' needs --model.pretrained=<JEPA checkpoint>; "
                                     "use mode: scratch"]),
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_bad_config_is_refused_naming_the_key(tmp_path, capsys, cli_argv, case):
    base, keys, expected, fragments = CONFIGS[case]
    if base is FT:  # track finding from scratch unless the case says otherwise
        keys = {M + "mode": "scratch", **keys}
    argv = ["fit", "--config", str(config_with(base, tmp_path, **keys))]
    if expected is EXIT:
        code, msg = exit_code_and_stderr(argv, capsys)
        assert code == 2
    else:
        with pytest.raises(expected) as err:
            main(argv)
        msg = str(err.value)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    assert not list(tmp_path.rglob("event_*.pt"))  # refused before any event was prepared


@pytest.mark.parametrize("section,key", [("model", "d_modle"), ("data", "num_trian"), ("trainer", "max_step")])
def test_unknown_config_key_exits_nonzero_naming_it(tmp_path, capsys, cli_argv, section, key):
    cfg = yaml.safe_load((ROOT / "configs/pretrain/trackml_small.yaml").read_text())
    target = cfg[section]["init_args"] if section == "model" else cfg[section]
    target[key] = 3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(bad)])
    assert exit_.value.code not in (0, None)
    assert key in capsys.readouterr().err


def test_invalid_on_bad_event_is_refused(tmp_path, data_dir, cli_argv):
    expected = r"data.on_bad_event must be one of \('error', 'skip'\), got 'ignore'"
    with pytest.raises(ValueError, match=expected):
        datamodule(data_dir, None, on_bad_event="ignore")
    with pytest.raises(ValueError, match="data.on_bad_event must be one of"):
        main(["fit", "--config", str(ROOT / "configs/pretrain/trackml_small.yaml"),
              "--trainer.accelerator", "cpu", "--trainer.logger", "false",
              "--data.cache_dir", str(tmp_path / "cache"), "--data.on_bad_event", "ignore"])
