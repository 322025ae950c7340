"""Segment-level JEPA: the trunk it pretrains, its step, and fine-tuning from it."""
import pytest
import torch

from gnn_jepa.models.checkpoints import PretrainedLoadError
from gnn_jepa.models.schedules import OptimConfig
from gnn_jepa.models.segment_jepa import SegmentJEPA, target_segments
from gnn_jepa.models.track_finding import TrackFinding
from gnn_jepa.nn.edge_head import HeadConfig
from gnn_jepa.nn.encoder import EncoderConfig
from gnn_jepa.nn.segment_predictor import SegmentPredictorConfig

ENCODER = EncoderConfig(d_model=16, d_embedding=8, n_layers=2, heads=2)
HEAD = HeadConfig(kind="segment_pairs", hidden=16, rounds=2, pairs_per_segment=2)
SMALL = dict(encoder=ENCODER, head=HEAD, predictor=SegmentPredictorConfig(hidden=16, rounds=2, knn=4),
             masker={"num_targets": 2, "wedge_width": [0.8, 0.8], "eta_width": [1.0, 1.0],
                     "min_target_hits": 2, "min_context_hits": 5, "r_extent": [0, 600]},
             optim=OptimConfig(total_steps=100))


def test_target_segments_have_both_hits_in_one_region():
    region = torch.tensor([-1, 0, 0, 1, 1, 0])
    segments = torch.tensor([[0, 1, 1, 2, 3, 4],
                             [1, 2, 3, 5, 4, 5]])
    # (0,1): one hit outside; (1,2): both in 0; (1,3): two regions; (2,5): both in 0;
    # (3,4): both in 1; (4,5): two regions
    assert target_segments(segments, region).tolist() == [1, 3, 4]


def test_forward_trains_the_trunk_and_predictor_never_the_ema_copy(toy_batch):
    torch.manual_seed(0)
    model = SegmentJEPA(**SMALL)
    assert not hasattr(model.context_head, "out")  # the output layer is not pretrained
    masks = model.masker(toy_batch, model.mask_generator(0))
    assert masks.graph_valid.all()
    out = model.jepa_forward(toy_batch, masks)
    assert out["num_targets"] > 0 and torch.isfinite(out["loss"]) and out["jepa_loss"] > 0
    out["loss"].backward()
    for module in (model.context_encoder, model.context_head, model.predictor):
        assert all(p.grad is not None for p in module.parameters())
        assert any(p.grad.abs().sum() > 0 for p in module.parameters())
    for module in (model.target_encoder, model.target_head):
        assert all(p.grad is None for p in module.parameters())


def test_targets_are_the_layer_normed_ema_states_of_the_target_segments(toy_batch, monkeypatch):
    torch.manual_seed(0)
    model = SegmentJEPA(**SMALL)
    masks = model.masker(toy_batch, model.mask_generator(0))
    seen = {}
    orig = model.predictor.forward

    def spy(*args):
        out = orig(*args)
        seen["query_a"] = args[4]
        return out
    monkeypatch.setattr(model.predictor, "forward", spy)
    out = model.jepa_forward(toy_batch, masks)
    with torch.no_grad():
        state, segs, _ = model.trunk(model.target_encoder, model.target_head, toy_batch.x,
                                     toy_batch.edge_index, toy_batch.edge_attr, toy_batch.pos, toy_batch.batch)
    chosen = target_segments(segs, masks.target_region)
    assert out["num_targets"] == chosen.numel()
    # queries are the target segments' inner hits, in the chosen order
    torch.testing.assert_close(seen["query_a"], toy_batch.pos[segs[0, chosen]])
    # a predictor that outputs the targets exactly scores a zero JEPA loss
    target = torch.nn.functional.layer_norm(state, (state.shape[1],))[chosen]
    monkeypatch.setattr(model.predictor, "forward", lambda *a: target)
    assert float(model.jepa_forward(toy_batch, masks)["jepa_loss"]) == pytest.approx(0.0, abs=1e-7)


def test_max_targets_caps_the_scored_segments(toy_batch):
    torch.manual_seed(0)
    model = SegmentJEPA(**{**SMALL, "max_targets": 3})
    masks = model.masker(toy_batch, model.mask_generator(0))
    assert model.jepa_forward(toy_batch, masks)["num_targets"] == 3


def test_ema_moves_encoder_and_head_trunk(toy_batch):
    torch.manual_seed(0)
    model = SegmentJEPA(**SMALL)
    with torch.no_grad():
        for p in list(model.context_encoder.parameters()) + list(model.context_head.parameters()):
            p.add_(1.0)
    pairs = [(model.target_encoder, model.context_encoder), (model.target_head, model.context_head)]
    before = [[p.clone() for p in t.parameters()] for t, _ in pairs]
    m = model.momentum(0)
    model.ema_update(0)
    for (t_mod, c_mod), old in zip(pairs, before):
        for b, t, c in zip(old, t_mod.parameters(), c_mod.parameters()):
            torch.testing.assert_close(t, m * b + (1 - m) * c)


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="head.kind must be 'segment_pairs'"):
        SegmentJEPA(**{**SMALL, "head": HeadConfig(kind="interaction", hidden=16)})
    with pytest.raises(ValueError, match="max_targets"):
        SegmentJEPA(**{**SMALL, "max_targets": 0})


def _pretrained(tmp_path):
    torch.manual_seed(1)
    model = SegmentJEPA(**SMALL)
    with torch.no_grad():  # make the EMA copies differ from any fresh init
        for p in list(model.target_encoder.parameters()) + list(model.target_head.parameters()):
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "segment_jepa.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return model, path


def test_finetuning_loads_encoder_and_trunk_with_a_fresh_output_layer(tmp_path):
    model, path = _pretrained(tmp_path)
    torch.manual_seed(5)
    tf = TrackFinding(pretrained=str(path), encoder=ENCODER, head=HEAD, mode="finetune")
    assert tf.pretrained_head == "trunk"
    for name, p in tf.encoder.state_dict().items():
        torch.testing.assert_close(p, model.target_encoder.state_dict()[name])
    trunk = model.target_head.state_dict()
    for name, p in tf.head.state_dict().items():
        if name.startswith(("out.", "out_norm.")):
            assert name not in trunk
        else:
            torch.testing.assert_close(p, trunk[name])
    # frozen: only the output layer learns
    frozen = TrackFinding(pretrained=str(path), encoder=ENCODER, head=HEAD, mode="frozen")
    trainable = sorted(n for n, p in frozen.named_parameters() if p.requires_grad)
    assert trainable == ["head.out.bias", "head.out.weight", "head.out_norm.bias", "head.out_norm.weight"]
    frozen.optim = OptimConfig(total_steps=10)
    groups = frozen.configure_optimizers()["optimizer"].param_groups
    assert sum(len(g["params"]) for g in groups) == 4  # the output layer only


def test_finetuning_with_another_head_names_the_settings(tmp_path):
    _, path = _pretrained(tmp_path)
    with pytest.raises(PretrainedLoadError, match="rounds"):
        TrackFinding(pretrained=str(path), encoder=ENCODER, mode="finetune",
                     head=HeadConfig(kind="segment_pairs", hidden=16, rounds=3, pairs_per_segment=2))


def test_hit_level_checkpoint_leaves_the_head_fresh(tmp_path):
    from gnn_jepa.models.checkpoints import save_pretrained_encoder
    torch.manual_seed(0)
    path = save_pretrained_encoder(tmp_path / "enc.ckpt", ENCODER.build().state_dict(), ENCODER)
    tf = TrackFinding(pretrained=str(path), encoder=ENCODER, head=HEAD, mode="frozen")
    assert tf.pretrained_head is None
    assert all(p.requires_grad for p in tf.head.parameters())
    assert not any(p.requires_grad for p in tf.encoder.parameters())


def test_hit_states_by_hand():
    from gnn_jepa.models.segment_jepa import hit_states
    state = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0]])
    segments = torch.tensor([[0, 0, 1],
                             [1, 2, 2]])  # 0->1, 0->2, 1->2
    h = hit_states(state, segments, 4)
    # hit 0: nothing in, out = mean(s0, s1); hit 1: in s0, out s2; hit 2: in mean(s1, s2); hit 3: none
    expected = torch.tensor([[0, 0, 2, 1], [1, 0, 5, 4], [4, 3, 0, 0], [0, 0, 0, 0]], dtype=torch.float)
    torch.testing.assert_close(h, expected)


def test_hit_targets_query_hits_only(toy_batch):
    torch.manual_seed(0)
    model = SegmentJEPA(**{**SMALL, "targets": "hits",
                           "predictor": SegmentPredictorConfig(hidden=16, rounds=2, knn=4, link="offset")})
    assert model.predictor.d_out == 2 * HEAD.hidden
    masks = model.masker(toy_batch, model.mask_generator(0))
    out = model.jepa_forward(toy_batch, masks)
    assert out["num_targets"] == int((masks.target_region >= 0).sum())  # every toy hit has a segment
    out["loss"].backward()
    assert any(p.grad.abs().sum() > 0 for p in model.context_head.parameters())
    with pytest.raises(ValueError, match="targets must be one of"):
        SegmentJEPA(**{**SMALL, "targets": "cells"})


def test_boundary_targets_are_the_full_event_states_of_context_segments_next_to_a_target(toy_batch, monkeypatch):
    torch.manual_seed(0)
    model = SegmentJEPA(**{**SMALL, "targets": "boundary"})
    masks = model.masker(toy_batch, model.mask_generator(0))
    seen = {}

    def fake(*args):
        seen["q"] = args[4:6]
        seen["desc"] = args[7]
        return torch.zeros(args[4].shape[0], HEAD.hidden)
    monkeypatch.setattr(model.predictor, "forward", fake)
    out = model.jepa_forward(toy_batch, masks)
    qa, qb = seen["q"]
    ctx = masks.context
    tr = masks.target_region
    src, dst = toy_batch.edge_index
    near = torch.zeros(toy_batch.num_nodes, dtype=torch.bool)
    near[src[tr[dst] >= 0]] = True
    # by hand: every context segment (both hits in the context) with a hit next to a target hit
    pos = toy_batch.pos
    from gnn_jepa.nn.segment_pairs import oriented_segments
    segs, _ = oriented_segments(pos, toy_batch.edge_index)
    keep = ctx[segs[0]] & ctx[segs[1]] & (near[segs[0]] | near[segs[1]])
    assert out["num_targets"] == int(keep.sum()) > 0
    got = sorted(map(tuple, torch.cat([qa, qb], 1).tolist()))
    want = sorted(map(tuple, torch.cat([pos[segs[0, keep]], pos[segs[1, keep]]], 1).tolist()))
    assert got == want
    assert out["jepa_loss"] > 0
    # each query is told the region of a target hit next to one of its hits
    regions_near = {}
    tr = masks.target_region
    for a, b in zip(src.tolist(), dst.tolist()):
        if tr[b] >= 0:
            regions_near.setdefault(a, set()).add(int(tr[b]))
    desc = seen["desc"]
    for k in torch.nonzero(keep).flatten().tolist():
        i = torch.nonzero((qa == pos[segs[0, k]]).all(1) & (qb == pos[segs[1, k]]).all(1)).flatten()[0]
        allowed = regions_near.get(int(segs[0, k]), set()) | regions_near.get(int(segs[1, k]), set())
        assert any(torch.equal(desc[i], masks.region_descriptor[r]) for r in allowed)
    # centring per region works with boundary queries too
    model2 = SegmentJEPA(**{**SMALL, "targets": "boundary", "center_targets": True})
    assert torch.isfinite(model2.jepa_forward(toy_batch, masks)["loss"])


def test_centred_targets_have_zero_mean_per_region(toy_batch, monkeypatch):
    torch.manual_seed(0)
    model = SegmentJEPA(**{**SMALL, "center_targets": True})
    masks = model.masker(toy_batch, model.mask_generator(0))
    seen = {}
    orig = model.predictor.forward

    def spy(*args):
        seen["region_desc"] = args[7]
        return orig(*args)
    monkeypatch.setattr(model.predictor, "forward", spy)
    captured = {}
    real_loss = torch.nn.functional.smooth_l1_loss

    def loss_spy(pred, target, **kw):
        captured["target"] = target
        return real_loss(pred, target, **kw)
    monkeypatch.setattr(torch.nn.functional, "smooth_l1_loss", loss_spy)
    model.jepa_forward(toy_batch, masks)
    target, desc = captured["target"], seen["region_desc"]
    regions = torch.unique(desc, dim=0, return_inverse=True)[1]
    assert regions.max() >= 1  # two regions or more
    for k in range(int(regions.max()) + 1):
        torch.testing.assert_close(target[regions == k].mean(0), torch.zeros(target.shape[1]),
                                   atol=1e-5, rtol=0)


def test_displace_hits_moves_the_chosen_hits_along_phi_only(toy_batch):
    import math
    from gnn_jepa.models.segment_jepa import displace_hits
    pos, x = toy_batch.pos, toy_batch.x
    new_pos, new_x, moved = displace_hits(pos, x, 0.3, (5.0, 5.0), torch.Generator().manual_seed(0))
    assert 0 < int(moved.sum()) < pos.shape[0]
    torch.testing.assert_close(new_pos[~moved], pos[~moved])
    r, new_r = pos[:, :2].norm(dim=1), new_pos[:, :2].norm(dim=1)
    torch.testing.assert_close(new_r, r, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(new_pos[:, 2], pos[:, 2])
    # 5 mm of arc at every moved hit
    arc = (new_pos[moved, :2] - pos[moved, :2]).norm(dim=1)
    torch.testing.assert_close(arc, torch.full_like(arc, 5.0), rtol=1e-3, atol=1e-3)
    # the phi feature follows, r / z / eta do not move
    phi = torch.atan2(new_pos[:, 1], new_pos[:, 0])
    torch.testing.assert_close(new_x[:, 1], phi / math.pi, atol=1e-5, rtol=0)
    torch.testing.assert_close(new_x[:, [0, 2, 3]], x[:, [0, 2, 3]])
    with pytest.raises(ValueError, match="phi"):
        displace_hits(pos, x[:, [0, 2, 3]], 0.3, (5.0, 5.0), torch.Generator().manual_seed(0))


def test_displaced_task_adds_a_loss_that_trains_the_trunk(toy_batch):
    torch.manual_seed(0)
    model = SegmentJEPA(**{**SMALL, "displaced_weight": 1.0})
    masks = model.masker(toy_batch, model.mask_generator(0))
    out = model.jepa_forward(toy_batch, masks)
    assert out["displaced_loss"] > 0
    out["displaced_loss"].backward()
    assert any(p.grad.abs().sum() > 0 for p in model.context_head.parameters())
    assert model.displaced_out.weight.grad.abs().sum() > 0


def test_displaced_hits_carry_their_moved_edge_geometry(toy_batch, monkeypatch):
    """The encoder's edge features are recomputed from the moved positions: left as they were,
    their mismatch with the hits' phi would give the moved hits away."""
    from gnn_jepa.graph.edges import edge_features
    torch.manual_seed(0)
    batch = toy_batch.clone()
    batch.edge_attr = edge_features(batch.pos, batch.edge_index)
    model = SegmentJEPA(**{**SMALL, "displaced_weight": 1.0,
                           "encoder": EncoderConfig(d_model=16, d_embedding=8, n_layers=2, heads=2)})
    masks = model.masker(batch, model.mask_generator(0))
    calls = []
    orig = model.context_encoder.forward

    def spy(x, edge_index, edge_attr=None, **kw):
        calls.append((x, edge_index, edge_attr))
        return orig(x, edge_index, edge_attr, **kw)
    monkeypatch.setattr(model.context_encoder, "forward", spy)
    seen = {}
    real_trunk = model.trunk

    def trunk_spy(encoder, head, x, ei, ea, pos, batch=None):
        if encoder is model.context_encoder:
            seen["pos"] = pos
        return real_trunk(encoder, head, x, ei, ea, pos, batch)
    monkeypatch.setattr(model, "trunk", trunk_spy)
    model.jepa_forward(batch, masks)
    x, ei, ea = calls[0]
    assert not torch.equal(seen["pos"], batch.pos[masks.context])  # some hits moved
    torch.testing.assert_close(ea, edge_features(seen["pos"], ei))
