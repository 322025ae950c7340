import pytest
import torch

from gnn_jepa.models.checkpoints import PretrainedLoadError, encoder_config_of
from gnn_jepa.models.jepa import JEPAPretraining
from gnn_jepa.models.track_finding import TrackFinding
from gnn_jepa.nn.edge_head import HeadConfig
from gnn_jepa.nn.encoder import EncoderConfig
from gnn_jepa.nn.predictor import PredictorConfig
from gnn_jepa.tracking.building import TrackBuildingConfig

ENCODER = EncoderConfig(d_model=16, d_embedding=8, n_layers=2, heads=2)
ENC = dict(encoder=ENCODER)


def save_jepa(tmp_path, encoder=ENCODER):
    torch.manual_seed(0)
    model = JEPAPretraining(encoder=encoder, predictor=PredictorConfig(d_model=16, heads=2))
    path = tmp_path / "jepa.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return model, path


def test_pretrained_target_encoder_is_loaded_exactly(tmp_path):
    jepa, path = save_jepa(tmp_path)
    with torch.no_grad():  # make the EMA copy differ from the context encoder
        for p in jepa.context_encoder.parameters():
            p.add_(1.0)
    torch.save({"state_dict": jepa.state_dict(), "hyper_parameters": dict(jepa.hparams)}, path)
    tf = TrackFinding(pretrained=str(path), **ENC)
    for (k, a), b in zip(tf.encoder.state_dict().items(), jepa.target_encoder.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)


def test_checkpoints_of_the_flat_layout_still_load(tmp_path):
    """Checkpoints written before the nested ``encoder`` block kept the encoder's fields flat."""
    jepa, path = save_jepa(tmp_path)
    flat = {"d_input": 4, "d_model": 16, "d_embedding": 8, "n_layers": 2, "heads": 2,
            "dropout": 0.0, "d_edge": 5, "attention": "local", "d_predictor": 16}
    assert encoder_config_of(flat) == ENCODER
    assert encoder_config_of({"d_predictor": 16}) is None
    torch.save({"state_dict": jepa.state_dict(), "hyper_parameters": flat}, path)
    tf = TrackFinding(pretrained=str(path), **ENC)
    torch.testing.assert_close(tf.encoder.out_proj.weight, jepa.target_encoder.out_proj.weight)
    with pytest.raises(PretrainedLoadError, match=r"'d_model': \(16, 32\)"):
        TrackFinding(pretrained=str(path), encoder=EncoderConfig(d_model=32, d_embedding=8, heads=2))


def test_loading_fails_loudly(tmp_path):
    _, path = save_jepa(tmp_path)
    with pytest.raises(PretrainedLoadError, match="does not exist"):
        TrackFinding(pretrained=str(tmp_path / "nope.ckpt"), **ENC)
    with pytest.raises(PretrainedLoadError, match="hyperparameters differ"):
        TrackFinding(pretrained=str(path), encoder=EncoderConfig(d_model=32, d_embedding=8, n_layers=2, heads=2))
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"layer.weight": torch.zeros(2)}}, other)
    with pytest.raises(PretrainedLoadError, match="no 'target_encoder"):
        TrackFinding(pretrained=str(other), **ENC)
    csv = tmp_path / "event000001000-hits.csv"
    csv.write_text("hit_id,x,y,z\n1,0,0,0\n")
    with pytest.raises(PretrainedLoadError, match="event000001000-hits.csv: not a readable torch "
                                                  "checkpoint.*expected the last.ckpt"):
        TrackFinding(pretrained=str(csv), **ENC)
    # a key missing from the checkpoint
    ck = torch.load(path, weights_only=False)
    drop = next(k for k in ck["state_dict"] if k.startswith("target_encoder."))
    del ck["state_dict"][drop]
    ck["hyper_parameters"] = {}
    broken = tmp_path / "broken.ckpt"
    torch.save(ck, broken)
    with pytest.raises(PretrainedLoadError, match="missing"):
        TrackFinding(pretrained=str(broken), **ENC)
    with pytest.raises(ValueError, match="mode"):
        TrackFinding(mode="finetune", **ENC)  # no checkpoint given


def test_frozen_mode_trains_only_the_head(tmp_path, toy_batch):
    _, path = save_jepa(tmp_path)
    tf = TrackFinding(pretrained=str(path), mode="frozen", **ENC)
    enc_before = [p.clone() for p in tf.encoder.parameters()]
    opt = torch.optim.AdamW([p for p in tf.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        loss = tf.edge_loss(tf(toy_batch), toy_batch.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for a, b in zip(enc_before, tf.encoder.parameters()):
        assert torch.equal(a, b)
    # the optimizer holds no encoder parameter; a partial optim mapping keeps fine-tuning's
    # other defaults (warmup 10 steps: step 0 runs at head_lr / 10)
    tf = TrackFinding(pretrained=str(path), mode="frozen", **ENC,
                      optim={"head_lr": 1e-2, "total_steps": 10})
    assert tf.optim.warmup_steps == 10 and tf.optim.encoder_lr == 5e-4
    groups = tf.configure_optimizers()["optimizer"].param_groups
    assert len(groups) == 1 and groups[0]["lr"] == pytest.approx(1e-3)
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in tf.head.parameters()}


def test_scratch_training_learns_edges(toy_batch):
    torch.manual_seed(0)
    tf = TrackFinding(mode="scratch", **ENC)
    opt = torch.optim.AdamW(tf.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = tf.edge_loss(tf(toy_batch), toy_batch.y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_track_building_config_is_validated():
    with pytest.raises(ValueError, match="tracks.building"):
        TrackBuildingConfig(building="greedy")
    with pytest.raises(ValueError, match="threshold_grid"):
        TrackBuildingConfig(threshold_grid=(0.5, 1.2))
    with pytest.raises(ValueError, match="min_hits"):
        TrackBuildingConfig(min_hits=0)
    assert TrackBuildingConfig(threshold_grid=[0.2, 0.4]).threshold_grid == (0.2, 0.4)


def _partition(track_id):
    groups = {}
    for i, t in enumerate(track_id.tolist()):
        if t >= 0:
            groups.setdefault(t, []).append(i)
    return sorted(groups.values())


@pytest.mark.parametrize("building", ["cc", "walkthrough"])
def test_batched_reconstruction_equals_per_event(toy_batch, building):
    torch.manual_seed(0)
    tf = TrackFinding(mode="scratch", tracks=TrackBuildingConfig(building=building, threshold=0.3), **ENC).eval()
    with torch.no_grad():
        batched = tf.reconstruct(toy_batch)
        ptr = toy_batch.ptr.tolist()
        for k, data in enumerate(toy_batch.to_data_list()):
            alone = tf.reconstruct(data)
            assert _partition(batched[ptr[k]:ptr[k + 1]]) == _partition(alone)
    assert (batched >= 0).any()


def test_segment_label_mode_trains_on_consecutive_hits(toy_batch):
    tf = TrackFinding(mode="scratch", edge_label="segment", **ENC)
    y = tf.edge_targets(toy_batch)
    ei, pid, order = toy_batch.edge_index, toy_batch.particle_id, toy_batch.hit_order
    same = (pid[ei[0]] == pid[ei[1]]) & (pid[ei[0]] != 0)
    consecutive = (order[ei[0]] - order[ei[1]]).abs() == 1
    assert torch.equal(y.bool(), same & consecutive)  # dense orders: consecutive = differ by 1
    assert torch.equal(TrackFinding(mode="scratch", **ENC).edge_targets(toy_batch), toy_batch.y)
    with pytest.raises(ValueError, match="edge_label"):
        TrackFinding(mode="scratch", edge_label="pairs", **ENC)


def test_interaction_head_scores_every_edge_and_trains(toy_batch):
    from gnn_jepa.nn.edge_head import InteractionEdgeHead
    torch.manual_seed(0)
    tf = TrackFinding(mode="scratch", head=HeadConfig(kind="interaction", hidden=16, rounds=2), **ENC)
    assert isinstance(tf.head, InteractionEdgeHead) and tf.head.rounds == 2
    logits = tf(toy_batch)
    assert logits.shape == (toy_batch.edge_index.shape[1],)
    tf.edge_loss(logits, tf.edge_targets(toy_batch)).backward()
    assert all(p.grad is not None for p in tf.head.parameters())
    assert any(p.grad.abs().sum() > 0 for p in tf.encoder.parameters() if p.grad is not None)
    with pytest.raises(ValueError, match="head.kind must be one of"):
        TrackFinding(mode="scratch", head={"kind": "gat"}, **ENC)


def test_threshold_is_tuned_on_validation_events(tmp_path):
    """Scores 0.75 on true edges and 0.55 on fakes: cuts below 0.55 merge tracks through the
    fakes, 0.6 and above give perfect tracks; the lowest best cut (0.6) is kept, used by
    test/predict, and travels with the checkpoint."""
    import lightning.pytorch as pl
    from torch_geometric.loader import DataLoader

    from tests.models.conftest import toy_event

    events = [toy_event(s) for s in range(3)]
    tf = TrackFinding(mode="scratch", tracks=TrackBuildingConfig(
        tune_threshold=True, threshold=0.5, threshold_grid=(0.3, 0.5, 0.6, 0.7)), **ENC)
    tf.forward = lambda data: torch.where(data.y > 0, 1.0986, 0.2007) + 0 * tf.head.mlp[0].bias.sum()
    assert tf.threshold == 0.5  # not tuned yet
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         default_root_dir=str(tmp_path), enable_model_summary=False)
    out = trainer.validate(tf, DataLoader(events, batch_size=2), verbose=False)[0]
    assert tf.threshold == pytest.approx(0.6)
    assert out["val/threshold"] == pytest.approx(0.6)
    assert out["val/trackml_score"] == pytest.approx(1.0)
    # what reconstruct now does by default is the tuned cut
    b = next(iter(DataLoader(events[:1], batch_size=1)))
    s = torch.sigmoid(tf(b))
    assert torch.equal(tf.reconstruct(b, s), tf.reconstruct(b, s, threshold=0.6))
    assert not torch.equal(tf.reconstruct(b, s), tf.reconstruct(b, s, threshold=0.5))
    path = tmp_path / "tf.ckpt"
    trainer.save_checkpoint(path)
    assert TrackFinding.load_from_checkpoint(path).threshold == pytest.approx(0.6)


def test_graph_ceiling_is_logged_at_validation_and_reported_at_test(tmp_path):
    """With the middle segment of 4 of the 12 tracks cut from every graph, truth edge scores
    can no longer give perfect tracks: the ceiling that validation logs and the one the test
    summary reports both equal ``evaluation.ceiling.tracking_ceiling`` averaged over the
    events, and lie below 1."""
    import lightning.pytorch as pl
    from torch_geometric.loader import DataLoader

    from gnn_jepa.evaluation.ceiling import tracking_ceiling
    from tests.models.conftest import toy_event

    events = []
    for s in range(3):
        d = toy_event(s)
        a, b = d.edge_index
        cut = ((d.particle_id[a] == d.particle_id[b]) & (d.particle_id[a] <= 4)
               & (torch.minimum(d.hit_order[a], d.hit_order[b]) == 3)
               & ((d.hit_order[a] - d.hit_order[b]).abs() == 1))
        d.edge_index, d.edge_attr, d.y = d.edge_index[:, ~cut], d.edge_attr[~cut], d.y[~cut]
        events.append(d)
    want = sum(tracking_ceiling(d, d.edge_index)["trackml_score"] for d in events) / len(events)
    assert 0.5 < want < 0.99
    tf = TrackFinding(mode="scratch", edge_label="segment", tracks=TrackBuildingConfig(
        tune_threshold=True, threshold_grid=(0.5,)), **ENC)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         default_root_dir=str(tmp_path), enable_model_summary=False)
    out = trainer.validate(tf, DataLoader(events, batch_size=2), verbose=False)[0]
    assert out["val/ceiling_trackml_score"] == pytest.approx(want, rel=1e-6)
    trainer.test(tf, DataLoader(events, batch_size=2), verbose=False)
    m = tf.test_summary["metrics"]
    assert m["ceiling_trackml_score"] == pytest.approx(want, rel=1e-6)
    assert m["ceiling_fake_rate"] == 0.0 and m["ceiling_dm_efficiency"] <= 1.0


def _saved_bytes(fn):
    """``(fn(), bytes)``: the forward's result and the bytes of the tensors that autograd hands
    to the saved-tensor hooks while ``fn()`` runs (parameters included, shared storage counted
    each time). Under activation checkpointing the checkpointed region's tensors never reach
    the outer hooks, so the count falls by what the region would have kept."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, total


@pytest.mark.parametrize("head", ["mlp", "segment_pairs"])
def test_recompute_encoder_gives_the_same_gradients_and_keeps_less(toy_batch, head, monkeypatch):
    """Activation checkpointing of the encoder: identical loss and gradients (dropout on, so the
    recomputed forward must replay the same random mask), fewer bytes kept for backward; only
    a training forward with autograd on is checkpointed."""
    from gnn_jepa.models import track_finding
    calls = []
    real = track_finding.checkpoint
    monkeypatch.setattr(track_finding, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    enc = EncoderConfig(d_model=16, d_embedding=8, n_layers=2, heads=2, dropout=0.2)
    hc = HeadConfig(kind=head, hidden=16, rounds=2)
    torch.manual_seed(0)
    plain = TrackFinding(mode="scratch", encoder=enc, head=hc, edge_label="segment").train()
    again = TrackFinding(mode="scratch", encoder=enc, head=hc, edge_label="segment", recompute_encoder=True).train()
    again.load_state_dict(plain.state_dict())
    y = plain.edge_targets(toy_batch)
    results = []
    for model in (plain, again):
        torch.manual_seed(1)
        loss, saved = _saved_bytes(lambda: model.edge_loss(model(toy_batch), y))
        loss.backward()
        results.append((loss.detach(), saved, {n: p.grad for n, p in model.named_parameters()}))
    assert len(calls) == 1  # the recomputing model's training forward, not the plain one's
    (l0, s0, g0), (l1, s1, g1) = results
    assert torch.equal(l0, l1)
    assert g0.keys() == g1.keys() and all(g0[n] is not None for n in g0)
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-5, atol=1e-7, msg=n)
    assert s1 < s0
    # validation / inference (eval mode, or no autograd) runs the encoder as it is
    again.eval()
    with torch.no_grad():
        again(toy_batch)
    again(toy_batch)
    again.train()
    with torch.no_grad():
        again(toy_batch)
    assert len(calls) == 1
