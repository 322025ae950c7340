import pytest
import torch
from torch_geometric.data import Data

from gnn_jepa.models import EventMixingPretraining, TrackFinding
from gnn_jepa.models.event_mixing import balanced_bce, same_event_labels
from gnn_jepa.nn.edge_head import HeadConfig
from gnn_jepa.nn.encoder import EncoderConfig

ENCODER = EncoderConfig(d_model=16, d_embedding=8, n_layers=1, heads=2)
HEAD = HeadConfig(kind="segment_pairs", hidden=8, rounds=2, pairs_per_segment=2)


def test_same_event_labels_by_hand():
    d = Data(edge_index=torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]]), mix_source=torch.tensor([0, 0, 1, 1]))
    assert same_event_labels(d).tolist() == [1.0, 0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="mix_events: 2"):
        same_event_labels(Data(edge_index=torch.tensor([[0], [1]]), event_id=torch.tensor([3])))


def test_balanced_bce_weights_the_positives_by_the_class_ratio():
    logits, y = torch.tensor([0.5, -1.0, 2.0, 0.0]), torch.tensor([1.0, 0.0, 0.0, 0.0])
    # 3 negatives per positive: the positive's term counts 3 times
    pos = torch.nn.functional.softplus(-logits[0]) * 3
    neg = torch.nn.functional.softplus(logits[1:]).sum()
    torch.testing.assert_close(balanced_bce(logits, y), (pos + neg) / 4)
    torch.testing.assert_close(balanced_bce(logits, torch.zeros(4)),
                               torch.nn.functional.softplus(logits).mean())


def _mixed_batch(seed=0, n=30):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(n, 3, generator=g) * 200
    ei = torch.randint(0, n, (2, 120), generator=g)
    ei = ei[:, ei[0] != ei[1]]
    from gnn_jepa.graph.edges import edge_features
    return Data(x=torch.randn(n, 4, generator=g), pos=pos, edge_index=ei,
                edge_attr=edge_features(pos, ei), mix_source=(torch.arange(n) >= n // 2).long(),
                num_nodes=n)


def test_the_whole_head_is_trained_and_fine_tuning_loads_it(tmp_path):
    torch.manual_seed(0)
    model = EventMixingPretraining(encoder=ENCODER, head=HEAD)
    batch = _mixed_batch()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = balanced_bce(model(batch), same_event_labels(batch))
    loss.backward()
    opt.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert "target_head.out.weight" in changed  # the output layer is trained too
    assert any(k.startswith("target_encoder.") for k in changed)
    path = tmp_path / "mixing.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    tf = TrackFinding(pretrained=str(path), encoder=ENCODER, head=HEAD, mode="finetune")
    assert tf.pretrained_head == "whole"
    for name, p in tf.head.state_dict().items():  # output layer included
        torch.testing.assert_close(p, model.target_head.state_dict()[name])
    for name, p in tf.encoder.state_dict().items():
        torch.testing.assert_close(p, model.target_encoder.state_dict()[name])
    tf.eval(), model.eval()
    with torch.no_grad():  # the fine-tuning model starts as the pretext scorer
        torch.testing.assert_close(tf(batch), model(batch))
