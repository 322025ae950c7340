"""Tests of gnn_jepa.nn.encoder.GraphTransformerEncoder."""
from __future__ import annotations

import pytest
import torch

from gnn_jepa.nn.encoder import GraphTransformerEncoder

D_IN, D_EDGE = 4, 5


def random_graph(n: int, e: int, seed: int, d_edge: int = D_EDGE):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D_IN, generator=g)
    src = torch.randint(0, n, (e,), generator=g)
    dst = torch.randint(0, n, (e,), generator=g)
    keep = src != dst
    edge_index = torch.stack([src[keep], dst[keep]])
    edge_attr = torch.randn(edge_index.size(1), d_edge, generator=g) if d_edge else None
    return x, edge_index, edge_attr


def make(attention: str = "local", **kw) -> GraphTransformerEncoder:
    torch.manual_seed(0)
    return GraphTransformerEncoder(D_IN, d_model=32, d_embedding=16, n_layers=2, heads=4,
                                   attention=attention, **kw).eval()


@pytest.mark.parametrize("attention", ["local", "global"])
@pytest.mark.parametrize("d_edge", [0, D_EDGE])
def test_output_shape_and_finite(attention, d_edge):
    enc = make(attention, d_edge=d_edge)
    x, ei, ea = random_graph(50, 300, seed=1, d_edge=d_edge)
    out = enc(x, ei, ea)
    assert out.shape == (50, 16)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("attention", ["local", "global"])
def test_permutation_equivariance(attention):
    enc = make(attention)
    x, ei, ea = random_graph(60, 400, seed=2)
    perm = torch.randperm(60, generator=torch.Generator().manual_seed(3))
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(60)
    # Node i of the permuted graph is old node perm[i]; old node j becomes inv[j].
    ei_p = inv[ei]
    eperm = torch.randperm(ei.size(1), generator=torch.Generator().manual_seed(4))
    out = enc(x, ei, ea)
    out_p = enc(x[perm], ei_p[:, eperm], ea[eperm])
    torch.testing.assert_close(out_p, out[perm], atol=1e-5, rtol=1e-5)


def test_local_no_interaction_between_components():
    enc = make("local")
    xa, eia, eaa = random_graph(30, 150, seed=5)
    xb, eib, eab = random_graph(40, 200, seed=6)
    x = torch.cat([xa, xb])
    ei = torch.cat([eia, eib + 30], dim=1)
    ea = torch.cat([eaa, eab])
    batch = torch.cat([torch.zeros(30, dtype=torch.long), torch.ones(40, dtype=torch.long)])
    out = enc(x, ei, ea, batch)
    torch.testing.assert_close(out[:30], enc(xa, eia, eaa), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[30:], enc(xb, eib, eab), atol=1e-5, rtol=1e-5)
    # Changing component b's features must leave component a's embeddings bit-identical.
    x2 = x.clone()
    x2[30:] += 10.0
    assert torch.equal(enc(x2, ei, ea, batch)[:30], out[:30])


def test_global_attention_mixes_within_graph_not_across():
    enc = make("global")
    xa, eia, eaa = random_graph(30, 150, seed=5)
    xb, eib, eab = random_graph(40, 200, seed=6)
    x = torch.cat([xa, xb])
    ei = torch.cat([eia, eib + 30], dim=1)
    ea = torch.cat([eaa, eab])
    batch = torch.cat([torch.zeros(30, dtype=torch.long), torch.ones(40, dtype=torch.long)])
    out = enc(x, ei, ea, batch)
    torch.testing.assert_close(out[:30], enc(xa, eia, eaa), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[30:], enc(xb, eib, eab), atol=1e-5, rtol=1e-5)
    # An isolated hit (no edges) still sees the rest of its graph through global attention.
    x_iso = torch.cat([xa, torch.zeros(1, D_IN)])
    base = enc(x_iso, eia, eaa)[-1]
    x_iso2 = x_iso.clone()
    x_iso2[0] += 5.0
    assert (enc(x_iso2, eia, eaa)[-1] - base).abs().max() > 1e-4
    # ...whereas with local attention it cannot.
    loc = make("local")
    assert torch.equal(loc(x_iso2, eia, eaa)[-1], loc(x_iso, eia, eaa)[-1])


@pytest.mark.parametrize("attention", ["local", "global"])
def test_gradients_reach_all_parameters(attention):
    enc = make(attention).train()
    x, ei, ea = random_graph(40, 250, seed=7)
    enc(x, ei, ea).pow(2).sum().backward()
    missing = [n for n, p in enc.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_global_refuses_large_graph():
    enc = make("global", max_global_nodes=50)
    x, ei, ea = random_graph(51, 100, seed=8)
    with pytest.raises(ValueError, match="51 hits.*max_global_nodes=50"):
        enc(x, ei, ea)
    # Two graphs of 30 hits each are fine although the batch has 60.
    batch = torch.cat([torch.zeros(30, dtype=torch.long), torch.ones(30, dtype=torch.long)])
    x, ei, ea = random_graph(60, 100, seed=8)
    assert enc(x, ei, ea, batch).shape == (60, 16)


def test_reset_parameters_changes_all_weight_tensors():
    enc = make("global")
    before = {n: p.detach().clone() for n, p in enc.named_parameters()}
    torch.manual_seed(123)
    enc.reset_parameters()
    # LayerNorms (ones/zeros) and zero-initialised biases reset to the same values.
    changed = [n for n, p in enc.named_parameters() if not torch.equal(before[n], p)]
    weights = [n for n in before if n.endswith("weight") and "norm" not in n]
    assert set(weights) <= set(changed)


def test_dropout_eval_is_deterministic_train_is_not():
    enc = make("local", dropout=0.3)
    x, ei, ea = random_graph(40, 250, seed=9)
    enc.eval()
    assert torch.equal(enc(x, ei, ea), enc(x, ei, ea))
    enc.train()
    assert not torch.equal(enc(x, ei, ea), enc(x, ei, ea))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="divisible"):
        GraphTransformerEncoder(D_IN, d_model=30, heads=4)
    with pytest.raises(ValueError, match="attention"):
        GraphTransformerEncoder(D_IN, attention="dense")
    enc = make("local")
    x, ei, ea = random_graph(20, 50, seed=10)
    with pytest.raises(ValueError, match="edge_attr is None"):
        enc(x, ei)
    with pytest.raises(ValueError, match=r"expected \[N, 4\]"):
        enc(x[:, :3], ei, ea)
    with pytest.raises(ValueError, match=r"expected \[E, 5\]"):
        enc(x, ei, ea[:, :2])


def test_repr_names_hyperparameters():
    r = repr(make("global"))
    assert r.startswith("GraphTransformerEncoder(d_input=4, d_model=32, d_embedding=16")
    assert "attention='global'" in r
