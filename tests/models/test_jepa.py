import math

import pytest
import torch

from gnn_jepa.models.jepa import JEPAPretraining
from gnn_jepa.models.schedules import OptimConfig, adamw_warmup_cosine, cosine_ramp, warmup_cosine
from gnn_jepa.nn.encoder import EncoderConfig
from gnn_jepa.nn.predictor import PredictorConfig

D_EMBEDDING = 8
SMALL = dict(encoder=EncoderConfig(d_model=16, d_embedding=D_EMBEDDING, n_layers=2, heads=2),
             predictor=PredictorConfig(d_model=16, layers=2, heads=2, knn=4), cells=(2, 2, 2),
             masker={"num_targets": 2, "wedge_width": [0.8, 0.8], "eta_width": [1.0, 1.0],
                     "min_target_hits": 2, "min_context_hits": 5, "r_extent": [0, 600]},
             optim=OptimConfig(total_steps=100))


def test_schedules_are_pure_functions_of_the_step():
    assert cosine_ramp(0, 100, 0.996, 1.0) == pytest.approx(0.996)
    assert cosine_ramp(100, 100, 0.996, 1.0) == pytest.approx(1.0)
    assert cosine_ramp(50, 100, 0.996, 1.0) == pytest.approx(0.998)
    assert warmup_cosine(0, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(100, 10, 100, 0.01) == pytest.approx(0.01)


def test_adamw_warmup_cosine_scales_every_group_by_the_schedule():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    o = OptimConfig(weight_decay=0.1, warmup_steps=4, min_lr_ratio=0.1)
    out = adamw_warmup_cosine([{"params": [a], "lr": 1e-3}, {"params": [b], "lr": 4e-3}], o, total=20)
    opt, sched = out["optimizer"], out["lr_scheduler"]["scheduler"]
    assert isinstance(opt, torch.optim.AdamW) and out["lr_scheduler"]["interval"] == "step"
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.1]
    lrs = []
    for _ in range(21):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx([1e-3 / 4, 4e-3 / 4])  # warmup: (step + 1) / 4
    assert lrs[3] == pytest.approx([1e-3, 4e-3])
    assert lrs[20] == pytest.approx([1e-4, 4e-4])  # the floor at ``total``


@pytest.mark.parametrize("scope,empty", [("regions", True), ("full", False)])
def test_jepa_forward_losses_and_gradients(toy_batch, scope, empty):
    torch.manual_seed(0)
    model = JEPAPretraining(target_scope=scope, score_empty_cells=empty, **SMALL)
    masks = model.masker(toy_batch, model.mask_generator(0))
    assert masks.graph_valid.all()
    out = model.jepa_forward(toy_batch, masks)
    assert torch.isfinite(out["loss"]) and out["loss"] > 0
    assert out["num_queries"] > 0
    out["loss"].backward()
    # gradients reach the context encoder and predictor, never the EMA target encoder
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.context_encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.predictor.parameters())
    assert all(p.grad is None for p in model.target_encoder.parameters())


def test_configs_build_the_modules_and_checkpoint_as_plain_dicts():
    model = JEPAPretraining(**SMALL)
    assert model.context_encoder.d_model == 16 and model.context_encoder.n_layers == 2
    assert model.predictor.d_predictor == 16 and model.predictor.knn == 4
    assert model.predictor.out.out_features == D_EMBEDDING
    # what a checkpoint stores: plain values a YAML config or weights_only=True reads back
    assert model.hparams["encoder"] == {**EncoderConfig().as_dict(), "d_model": 16,
                                        "d_embedding": D_EMBEDDING, "n_layers": 2, "heads": 2}
    assert model.hparams["predictor"] == {"d_model": 16, "layers": 2, "heads": 2, "knn": 4}
    assert model.hparams["cells"] == [2, 2, 2]
    assert model.hparams["optim"]["total_steps"] == 100
    # mappings work as well as configs (what a Python user may pass)
    same = JEPAPretraining(**{**SMALL, "encoder": dict(model.hparams["encoder"]),
                              "predictor": dict(model.hparams["predictor"])})
    assert same.encoder_config == model.encoder_config
    with pytest.raises(ValueError, match=r"encoder: unknown keys \['d_modle'\]"):
        JEPAPretraining(**{**SMALL, "encoder": {"d_modle": 8}})


def test_cell_targets_are_mean_of_layer_normed_hit_embeddings(toy_batch):
    torch.manual_seed(0)
    model = JEPAPretraining(score_empty_cells=False, target_scope="full", **SMALL)
    masks = model.masker(toy_batch, model.mask_generator(3))
    out = model.jepa_forward(toy_batch, masks)
    # recompute the occupied-cell targets by hand
    from gnn_jepa.geometry import cylindrical
    from gnn_jepa.masks import assign_cells
    r, phi, _, eta = cylindrical(toy_batch.pos)
    with torch.no_grad():
        t = model.target_encoder(toy_batch.x, toy_batch.edge_index, toy_batch.edge_attr)
        t = torch.nn.functional.layer_norm(t, (t.shape[-1],))
    cell = assign_cells(r, phi, eta, masks.target_region, masks, n_phi=2, n_eta=2, n_r=2,
                        r_extent=model.masker.r_extent, eta_extent=model.masker.eta_extent)
    expect = torch.stack([t[cell == c].mean(0) for c in sorted(set(cell[cell >= 0].tolist()))])
    torch.testing.assert_close(out["target"], expect)


def test_ema_update_follows_momentum(toy_batch):
    torch.manual_seed(0)
    model = JEPAPretraining(**SMALL)
    with torch.no_grad():
        for p in model.context_encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.target_encoder.parameters()]
    ctx = [p.clone() for p in model.context_encoder.parameters()]
    m = model.momentum(0)
    model.ema_update(0)
    for b, c, a in zip(before, ctx, model.target_encoder.parameters()):
        torch.testing.assert_close(a, m * b + (1 - m) * c)


def test_masks_are_a_function_of_the_step(toy_batch):
    model = JEPAPretraining(**SMALL)
    a = model.masker(toy_batch, model.mask_generator(7))
    b = model.masker(toy_batch, model.mask_generator(7))
    c = model.masker(toy_batch, model.mask_generator(8))
    assert torch.equal(a.target_region, b.target_region)
    assert not torch.equal(a.target_region, c.target_region)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="target_scope"):
        JEPAPretraining(target_scope="everything", **SMALL)
    with pytest.raises(ValueError, match="cells"):
        JEPAPretraining(**{**SMALL, "cells": (2, 0, 2)})
    with pytest.raises(ValueError, match="optim"):
        OptimConfig(encoder_lr=-1.0)


def test_reference_losses_hand_case():
    from gnn_jepa.models.jepa import reference_losses

    target = torch.tensor([[2.0, 0.0], [0.0, 0.0], [4.0, 0.0]])
    ref = reference_losses(target, torch.tensor([True, False, True]), beta=1.0)
    # smooth L1 (beta 1) of the element errors, averaged over the 6 elements:
    # zero -> 1.5 + 3.5; mean [2, 0] -> 1.5 + 1.5; occupancy oracle [3, 0] / 0 -> 0.5 + 0.5
    assert float(ref["zero"]) == pytest.approx(5.0 / 6)
    assert float(ref["mean"]) == pytest.approx(3.0 / 6)
    assert float(ref["occupancy_oracle"]) == pytest.approx(1.0 / 6)


def test_sigreg_directions_depend_on_the_step_not_the_global_rng(toy_batch):
    """SIGReg's random directions come from a generator of (mask_seed, step): the same at one
    step whatever the global RNG holds (so a resumed run draws what the uninterrupted one did)."""
    torch.manual_seed(0)
    model = JEPAPretraining(anti_collapse="sigreg", **SMALL)
    masks = model.masker(toy_batch, model.mask_generator(0))
    torch.manual_seed(1)
    first = model.jepa_forward(toy_batch, masks)["anti_collapse"]
    torch.manual_seed(2)
    assert torch.equal(model.jepa_forward(toy_batch, masks)["anti_collapse"], first)
    g0, g1 = model.projection_generator(torch.device("cpu")), model.projection_generator(torch.device("cpu"))
    assert torch.equal(torch.randn(4, generator=g0), torch.randn(4, generator=g1))
