import pytest
import torch

from gnn_jepa.nn.edge_head import EdgeHead, InteractionEdgeHead


def _paths(num: int, d: int, generator: torch.Generator):
    """``num`` disjoint 3-hit paths a -> b -> c. Hit embeddings are noise; each edge has one
    feature, a random sign. An edge's label is the *other* edge's sign, so only a head that
    lets the two edges of a path talk through their shared hit can learn it."""
    h = torch.randn(3 * num, d, generator=generator)
    a = torch.arange(num) * 3
    edge_index = torch.cat([torch.stack([a, a + 1]), torch.stack([a + 1, a + 2])], dim=1)
    sign = torch.randint(0, 2, (num,), generator=generator).float(), \
        torch.randint(0, 2, (num,), generator=generator).float()
    edge_attr = torch.cat([sign[0], sign[1]])[:, None] * 2 - 1
    label = torch.cat([sign[1], sign[0]])
    return h, edge_index, edge_attr, label


def _accuracy_after_training(head, steps=300):
    g = torch.Generator().manual_seed(0)
    train, test = _paths(256, 4, g), _paths(256, 4, g)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(*train[:3]), train[3])
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(((head(*test[:3]) > 0).float() == test[3]).float().mean())


def test_interaction_head_learns_what_depends_on_the_neighbouring_edge():
    torch.manual_seed(0)
    assert _accuracy_after_training(InteractionEdgeHead(4, d_edge=1, hidden=32, rounds=1)) > 0.95
    torch.manual_seed(0)
    assert _accuracy_after_training(EdgeHead(4, d_edge=1, hidden=32)) < 0.65


def test_interaction_head_is_local():
    """An edge's score changes with an edge that shares a hit with it, never with an edge of
    another connected component (events in a batch never mix)."""
    torch.manual_seed(0)
    head = InteractionEdgeHead(4, d_edge=1, hidden=16, rounds=2).eval()
    g = torch.Generator().manual_seed(1)
    h, ei, ea, _ = _paths(2, 4, g)  # edges 0, 1: a -> b of paths 0, 1; edges 2, 3: b -> c
    base = head(h, ei, ea)
    moved = ea.clone()
    moved[2] += 1.0  # path 0's second edge
    out = head(h, ei, moved)
    assert out.shape == (4,)
    assert not torch.isclose(out[0], base[0])  # same path
    torch.testing.assert_close(out[[1, 3]], base[[1, 3]])  # the other path


def test_interaction_head_gradients_and_repr():
    head = InteractionEdgeHead(4, d_edge=1, hidden=16, rounds=2)
    h = torch.randn(6, 4, requires_grad=True)
    ei = torch.tensor([[0, 1, 3], [1, 2, 4]])
    head(h, ei, torch.randn(3, 1)).sum().backward()
    assert h.grad.abs().sum() > 0
    assert all(p.grad is not None for p in head.parameters())
    assert repr(head) == "InteractionEdgeHead(d_embedding=4, d_edge=1, hidden=16, rounds=2)"
    with pytest.raises(ValueError, match="rounds >= 0"):
        InteractionEdgeHead(4, rounds=-1)
