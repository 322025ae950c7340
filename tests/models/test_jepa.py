import math

import pytest
import torch

from gnn_jepa.models.jepa import JEPAPretraining
from gnn_jepa.models.schedules import cosine_ramp, warmup_cosine

SMALL = dict(d_model=16, d_embedding=8, n_layers=2, heads=2, d_predictor=16, predictor_layers=2,
             predictor_heads=2, predictor_knn=4, cell_phi=2, cell_eta=2, cell_r=2,
             masker={"num_targets": 2, "wedge_width": [0.8, 0.8], "eta_width": [1.0, 1.0],
                     "min_target_hits": 2, "min_context_hits": 5, "r_extent": [0, 600]},
             total_steps=100)


def test_schedules_are_pure_functions_of_the_step():
    assert cosine_ramp(0, 100, 0.996, 1.0) == pytest.approx(0.996)
    assert cosine_ramp(100, 100, 0.996, 1.0) == pytest.approx(1.0)
    assert cosine_ramp(50, 100, 0.996, 1.0) == pytest.approx(0.998)
    assert warmup_cosine(0, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(100, 10, 100, 0.01) == pytest.approx(0.01)


@pytest.mark.parametrize("query,scope,empty,conv", [("cell", "regions", True, "transformer"),
                                                    ("cell", "full", False, "transformer"),
                                                    ("hit", "regions", False, "transformer"),
                                                    ("hit", "regions", False, "gatv2")])
def test_jepa_forward_losses_and_gradients(toy_batch, query, scope, empty, conv):
    torch.manual_seed(0)
    model = JEPAPretraining(query=query, target_scope=scope, score_empty_cells=empty,
                            **{**SMALL, "predictor_conv": conv})
    assert model.predictor.conv == conv
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


def test_query_pairs_default_links_cells_not_hits():
    assert JEPAPretraining(**SMALL).predictor.query_pairs
    assert not JEPAPretraining(query="hit", **SMALL).predictor.query_pairs
    assert JEPAPretraining(query="hit", query_pairs=True, **SMALL).predictor.query_pairs


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
    with pytest.raises(ValueError, match="query"):
        JEPAPretraining(query="pixels", **SMALL)
    with pytest.raises(ValueError, match="target_scope"):
        JEPAPretraining(target_scope="everything", **SMALL)


def test_reference_losses_hand_case():
    from gnn_jepa.models.jepa import reference_losses

    target = torch.tensor([[2.0, 0.0], [0.0, 0.0], [4.0, 0.0]])
    ref = reference_losses(target, torch.tensor([True, False, True]), beta=1.0)
    # smooth L1 (beta 1) of the element errors, averaged over the 6 elements:
    # zero -> 1.5 + 3.5; mean [2, 0] -> 1.5 + 1.5; occupancy oracle [3, 0] / 0 -> 0.5 + 0.5
    assert float(ref["zero"]) == pytest.approx(5.0 / 6)
    assert float(ref["mean"]) == pytest.approx(3.0 / 6)
    assert float(ref["occupancy_oracle"]) == pytest.approx(1.0 / 6)


def test_occupancy_term_predicts_log_hit_counts(toy_batch):
    """With occupancy_weight, the predictor's extra output is regressed on log(1 + hits per
    cell): the total loss is JEPA + anti-collapse + weight x that term, and the same seed
    with weight 0 gives the plain JEPA loss and a predictor without the extra output."""
    from gnn_jepa.geometry import cylindrical
    from gnn_jepa.masks import assign_cells

    torch.manual_seed(0)
    model = JEPAPretraining(occupancy_weight=0.5, **SMALL)
    assert model.predictor.out.out_features == SMALL["d_embedding"] + 1
    masks = model.masker(toy_batch, model.mask_generator(0))
    captured = {}
    model.predictor.register_forward_hook(lambda m, i, o: captured.update(out=o.detach()))
    out = model.jepa_forward(toy_batch, masks)
    r, phi, _, eta = cylindrical(toy_batch.pos)
    cell = assign_cells(r, phi, eta, masks.target_region, masks, n_phi=2, n_eta=2, n_r=2,
                        r_extent=model.masker.r_extent, eta_extent=model.masker.eta_extent)
    count = torch.bincount(cell[cell >= 0], minlength=captured["out"].shape[0]).float()
    expect = torch.nn.functional.smooth_l1_loss(captured["out"][:, -1], torch.log1p(count))
    torch.testing.assert_close(out["occupancy_loss"], expect)
    torch.testing.assert_close(out["loss"], out["jepa_loss"] + out["anti_collapse"] + 0.5 * expect)
    out["loss"].backward()
    assert model.context_encoder.input_proj.weight.grad.abs().sum() > 0
    plain = JEPAPretraining(**SMALL)
    assert plain.predictor.out.out_features == SMALL["d_embedding"]
    with pytest.raises(ValueError, match="occupancy_weight"):
        JEPAPretraining(occupancy_weight=1.0, query="hit", **SMALL)


def test_anti_collapse_expander_regularises_the_expanded_context_embeddings(toy_batch):
    """With anti_collapse_expander the VICReg term is computed on expander(z_ctx), not on
    z_ctx; the expander is trained (with the predictor's learning rate) and is not part of the
    encoder; 0 keeps the term on z_ctx and adds no parameters."""
    from gnn_jepa.nn.losses import vicreg_variance_covariance

    torch.manual_seed(0)
    model = JEPAPretraining(anti_collapse_expander=24, **SMALL)
    assert model.expander[-1].out_features == 24
    masks = model.masker(toy_batch, model.mask_generator(0))
    out = model.jepa_forward(toy_batch, masks)
    var, cov = vicreg_variance_covariance(model.expander(out["z_ctx"]))
    torch.testing.assert_close(out["anti_collapse"], var + cov)
    on_z = sum(vicreg_variance_covariance(out["z_ctx"]))
    assert not torch.allclose(out["anti_collapse"], on_z)
    out["anti_collapse"].backward()
    assert model.expander[0].weight.grad.abs().sum() > 0
    assert model.context_encoder.input_proj.weight.grad.abs().sum() > 0
    opt = model.configure_optimizers()["optimizer"]
    predictor_group = {id(p) for p in opt.param_groups[1]["params"]}
    assert all(id(p) in predictor_group for p in model.expander.parameters())
    assert not any(k.startswith("expander") for k in model.target_encoder.state_dict())

    plain = JEPAPretraining(**SMALL)
    assert not list(plain.expander.parameters())
    out = plain.jepa_forward(toy_batch, masks)
    torch.testing.assert_close(out["anti_collapse"], sum(vicreg_variance_covariance(out["z_ctx"])))
    with pytest.raises(ValueError, match="anti_collapse_expander"):
        JEPAPretraining(anti_collapse_expander=-1, **SMALL)
