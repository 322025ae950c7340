import pytest
import torch

from gnn_jepa.models.jepa import JEPAPretraining
from gnn_jepa.models.track_finding import PretrainedLoadError, TrackFinding

ENC = dict(d_model=16, d_embedding=8, n_layers=2, heads=2)


def save_jepa(tmp_path, **over):
    torch.manual_seed(0)
    model = JEPAPretraining(d_predictor=16, predictor_heads=2, **{**ENC, **over})
    path = tmp_path / "jepa.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return model, path


def test_pretrained_encoder_is_loaded_exactly(tmp_path):
    jepa, path = save_jepa(tmp_path)
    for which, ref in (("target", jepa.target_encoder), ("context", jepa.context_encoder)):
        tf = TrackFinding(pretrained=str(path), pretrained_encoder=which, **ENC)
        for (k, a), b in zip(tf.encoder.state_dict().items(), ref.state_dict().values()):
            torch.testing.assert_close(a, b, msg=k)


def test_reinit_encoder_keeps_the_scratch_init_of_the_named_modules(tmp_path):
    jepa, path = save_jepa(tmp_path)
    torch.manual_seed(7)
    scratch = TrackFinding(mode="scratch", **ENC).encoder.state_dict()
    torch.manual_seed(7)
    tf = TrackFinding(pretrained=str(path), reinit_encoder=["convs.1", "out_proj"], **ENC)
    pre = jepa.target_encoder.state_dict()
    fresh = [k for k in pre if k.startswith(("convs.1.", "out_proj."))]
    assert fresh and len(fresh) < len(pre)
    for k, v in tf.encoder.state_dict().items():
        # the named modules equal scratch's init with the same seed, the rest the checkpoint
        torch.testing.assert_close(v, scratch[k] if k in fresh else pre[k], msg=k)
        if k in fresh:
            assert not torch.equal(v, pre[k]), k
    one = TrackFinding(pretrained=str(path), reinit_encoder="out_proj", **ENC).encoder.state_dict()
    torch.testing.assert_close(one["convs.1.lin_query.weight"], pre["convs.1.lin_query.weight"])
    assert not torch.equal(one["out_proj.weight"], pre["out_proj.weight"])
    with pytest.raises(ValueError, match="no encoder parameter under 'convs.9'.*out_proj"):
        TrackFinding(pretrained=str(path), reinit_encoder=["convs.9"], **ENC)
    with pytest.raises(ValueError, match="needs a pretrained encoder"):
        TrackFinding(mode="scratch", reinit_encoder=["out_proj"], **ENC)


def test_loading_fails_loudly(tmp_path):
    _, path = save_jepa(tmp_path)
    with pytest.raises(PretrainedLoadError, match="does not exist"):
        TrackFinding(pretrained=str(tmp_path / "nope.ckpt"), **ENC)
    with pytest.raises(PretrainedLoadError, match="hyperparameters differ"):
        TrackFinding(pretrained=str(path), **{**ENC, "d_model": 32})
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"layer.weight": torch.zeros(2)}}, other)
    with pytest.raises(PretrainedLoadError, match="no 'target_encoder"):
        TrackFinding(pretrained=str(other), **ENC)
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


def _partition(track_id):
    groups = {}
    for i, t in enumerate(track_id.tolist()):
        if t >= 0:
            groups.setdefault(t, []).append(i)
    return sorted(groups.values())


@pytest.mark.parametrize("building", ["cc", "walkthrough"])
def test_batched_reconstruction_equals_per_event(toy_batch, building):
    torch.manual_seed(0)
    tf = TrackFinding(mode="scratch", building=building, threshold=0.3, **ENC).eval()
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
    tf = TrackFinding(mode="scratch", head="interaction", head_hidden=16, head_rounds=2, **ENC)
    assert isinstance(tf.head, InteractionEdgeHead) and tf.head.rounds == 2
    logits = tf(toy_batch)
    assert logits.shape == (toy_batch.edge_index.shape[1],)
    tf.edge_loss(logits, tf.edge_targets(toy_batch)).backward()
    assert all(p.grad is not None for p in tf.head.parameters())
    assert any(p.grad.abs().sum() > 0 for p in tf.encoder.parameters() if p.grad is not None)
    with pytest.raises(ValueError, match="head must be one of"):
        TrackFinding(mode="scratch", head="gat", **ENC)


def test_threshold_is_tuned_on_validation_events(tmp_path):
    """Scores 0.75 on true edges and 0.55 on fakes: cuts below 0.55 merge tracks through the
    fakes, 0.6 and above give perfect tracks; the lowest best cut (0.6) is kept, used by
    test/predict, and travels with the checkpoint."""
    import lightning.pytorch as pl
    from torch_geometric.loader import DataLoader

    from tests.models.conftest import toy_event

    events = [toy_event(s) for s in range(3)]
    tf = TrackFinding(mode="scratch", tune_threshold=True, threshold=0.5,
                      threshold_grid=(0.3, 0.5, 0.6, 0.7), **ENC)
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


def test_encoder_frozen_steps_probe_then_finetune(tmp_path, toy_batch):
    """With ``encoder_frozen_steps=3`` a real Trainer leaves the pretrained encoder exactly as
    loaded for 3 steps while the head trains, then updates it; the encoder's lr is 0 in the
    frozen phase and then warms up on its own."""
    import lightning.pytorch as pl
    from torch_geometric.loader import DataLoader

    from tests.models.conftest import toy_event

    _, path = save_jepa(tmp_path)
    events = [toy_event(s) for s in range(4)]

    def fit(steps):
        torch.manual_seed(0)
        tf = TrackFinding(pretrained=str(path), mode="finetune", encoder_frozen_steps=3,
                          warmup_steps=2, total_steps=8, **ENC)
        enc0 = [p.detach().clone() for p in tf.encoder.parameters()]
        head0 = [p.detach().clone() for p in tf.head.parameters()]
        trainer = pl.Trainer(max_steps=steps, accelerator="cpu", logger=False,
                             enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, limit_val_batches=0)
        trainer.fit(tf, DataLoader(events, batch_size=2))
        enc_same = all(torch.equal(a, b) for a, b in zip(enc0, tf.encoder.parameters()))
        head_same = all(torch.equal(a, b) for a, b in zip(head0, tf.head.parameters()))
        return tf, trainer, enc_same, head_same

    tf, trainer, enc_same, head_same = fit(3)
    assert enc_same and not head_same
    assert tf.encoder.training  # the frozen phase does not leave the encoder in eval mode
    _, _, enc_same, _ = fit(5)
    assert not enc_same
    sched = trainer.lr_scheduler_configs[0].scheduler
    head_f, enc_f = sched.lr_lambdas
    assert [enc_f(s) for s in range(3)] == [0.0, 0.0, 0.0]
    assert enc_f(3) == 0.5 and enc_f(4) == 1.0  # warmup_steps=2, counted from step 3
    assert head_f(0) == 0.5
    with pytest.raises(ValueError, match="encoder_frozen_steps"):
        TrackFinding(mode="scratch", encoder_frozen_steps=-1, **ENC)


def test_embedding_std_rescales_the_output_once_before_the_first_step(tmp_path, toy_batch):
    """``embedding_std="init"`` scales the loaded encoder's out_proj so that the first batch's
    embeddings have the mean per-dimension std of scratch's same-seed init; a number sets that
    std; a real Trainer applies it once, before the first optimizer step, and a resumed run
    (the factor restored from the checkpoint) does not apply it again."""
    import lightning.pytorch as pl
    from torch_geometric.loader import DataLoader

    from tests.models.conftest import toy_event

    jepa, path = save_jepa(tmp_path)
    ck = torch.load(path, weights_only=False)
    for k in ("target_encoder.out_proj.weight", "target_encoder.out_proj.bias"):
        ck["state_dict"][k] = ck["state_dict"][k] * 5.0  # a pretrained output 5x too wide
    wide = tmp_path / "wide.ckpt"
    torch.save(ck, wide)

    @torch.no_grad()
    def mean_std(tf, batch):
        return float(tf.encoder.eval()(batch.x, batch.edge_index, batch.edge_attr).std(0).mean())

    torch.manual_seed(3)
    scratch = TrackFinding(mode="scratch", **ENC)
    torch.manual_seed(3)
    tf = TrackFinding(pretrained=str(wide), embedding_std="init", **ENC)
    before = {k: v.clone() for k, v in tf.encoder.state_dict().items()}
    assert torch.isnan(tf.embedding_rescale)
    assert mean_std(tf, toy_batch) > 2 * mean_std(scratch, toy_batch)
    factor = tf.match_embedding_std(toy_batch)
    assert mean_std(tf, toy_batch) == pytest.approx(mean_std(scratch, toy_batch), rel=1e-5)
    assert float(tf.embedding_rescale) == pytest.approx(factor) and factor < 0.5
    for k, v in tf.encoder.state_dict().items():  # only the output projection moved
        torch.testing.assert_close(v, before[k] * factor if k.startswith("out_proj.") else before[k])

    fixed = TrackFinding(pretrained=str(wide), embedding_std=0.25, **ENC)
    fixed.match_embedding_std(toy_batch)
    assert mean_std(fixed, toy_batch) == pytest.approx(0.25, rel=1e-5)
    same = TrackFinding(mode="scratch", embedding_std="init", **ENC)
    assert same.match_embedding_std(toy_batch) == 1.0
    assert not hasattr(TrackFinding(mode="scratch", **ENC), "embedding_rescale")
    one_hit = toy_batch.subgraph(torch.tensor([0]))
    with pytest.raises(ValueError, match="1 hit"):
        TrackFinding(pretrained=str(wide), embedding_std=0.25, **ENC).match_embedding_std(one_hit)
    for bad in (0.0, -1.0, "fresh", True):
        with pytest.raises(ValueError, match="embedding_std"):
            TrackFinding(mode="scratch", embedding_std=bad, **ENC)

    # in a real fit: applied before the first step's forward, recorded, not applied on resume
    events = [toy_event(s) for s in range(4)]
    torch.manual_seed(0)
    tf = TrackFinding(pretrained=str(wide), embedding_std=0.25, total_steps=4, **ENC)
    seen = []
    tf.encoder.register_forward_hook(
        lambda m, i, o: seen.append(float(o.std(0).mean())) if m.training else None)
    kw = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
              limit_val_batches=0, default_root_dir=str(tmp_path))
    trainer = pl.Trainer(max_steps=2, enable_checkpointing=False, **kw)
    trainer.fit(tf, DataLoader(events, batch_size=2))
    assert seen[0] == pytest.approx(0.25, rel=1e-4)
    applied = float(tf.embedding_rescale)
    assert applied < 0.5
    trainer.save_checkpoint(tmp_path / "step2.ckpt")
    resumed = TrackFinding(pretrained=str(wide), embedding_std=0.25, total_steps=4, **ENC)
    pl.Trainer(max_steps=3, enable_checkpointing=False, **kw).fit(
        resumed, DataLoader(events, batch_size=2), ckpt_path=tmp_path / "step2.ckpt")
    assert float(resumed.embedding_rescale) == applied
    # one AdamW step from step 2's weights (lr 5e-4), not a second rescale of them
    assert (resumed.encoder.out_proj.weight - tf.encoder.out_proj.weight).abs().max() < 1e-2


def test_checkpoints_load_across_embedding_std_settings(tmp_path):
    """A fine-tuning checkpoint written without ``embedding_std`` loads into a model that sets it
    (the factor reads 1: never rescaled, and not to be rescaled on resume), and one written with
    it loads into a model without it."""
    import lightning.pytorch as pl

    plain = TrackFinding(mode="scratch", **ENC)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(plain)
    trainer.save_checkpoint(tmp_path / "plain.ckpt")
    with_std = TrackFinding.load_from_checkpoint(tmp_path / "plain.ckpt", embedding_std=0.1)
    assert float(with_std.embedding_rescale) == 1.0
    torch.testing.assert_close(with_std.encoder.out_proj.weight, plain.encoder.out_proj.weight)
    trainer.strategy.connect(with_std)
    trainer.save_checkpoint(tmp_path / "with.ckpt")
    back = TrackFinding.load_from_checkpoint(tmp_path / "with.ckpt", embedding_std=None)
    assert not hasattr(back, "embedding_rescale")
