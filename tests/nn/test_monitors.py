"""Tests of gnn_jepa.nn.monitors (collapse monitors, AP@k, ROC AUC, edge probe)."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from gnn_jepa.nn.monitors import ap_at_k, edge_probe_auc, embedding_std, rankme, roc_auc


def test_embedding_std():
    z = torch.tensor([[0.0, 1.0, 5.0], [2.0, 1.0, 5.0], [4.0, 1.0, 5.0]])
    torch.testing.assert_close(embedding_std(z), torch.tensor([2.0, 0.0, 0.0]))


def test_rankme_rank_one_and_isotropic():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 1, generator=g)
    v = torch.randn(1, 32, generator=g)
    assert rankme(a @ v) == pytest.approx(1.0, abs=1e-3)
    iso = torch.randn(20000, 16, generator=g)
    assert 15.5 < rankme(iso) <= 16.0
    # Two equal singular values -> exactly 2 (up to eps).
    z = torch.zeros(10, 4)
    z[0, 0] = 3.0
    z[1, 2] = 3.0
    assert rankme(z) == pytest.approx(2.0, abs=1e-5)
    assert rankme(torch.zeros(5, 3)) == 0.0


def brute_ap_at_k(emb, pid, pt, pt_min, batch):
    vals = []
    n = len(pid)
    for i in range(n):
        same_graph = [j for j in range(n) if batch[j] == batch[i]]
        mates = [j for j in same_graph if pid[j] == pid[i]]
        if pid[i] == 0 or pt[i] <= pt_min or len(mates) < 2:
            continue
        k = len(mates) - 1
        others = sorted((float(torch.dist(emb[i], emb[j])), j) for j in same_graph if j != i)
        vals.append(sum(pid[j] == pid[i] for _, j in others[:k]) / k)
    return sum(vals) / len(vals)


def test_ap_at_k_perfect_clusters_is_one():
    g = torch.Generator().manual_seed(1)
    pid = torch.tensor([1, 1, 1, 2, 2, 3, 3, 3, 3, 0, 0, 4])
    centres = 10.0 * torch.randn(5, 3, generator=g)
    emb = centres[pid] + 1e-3 * torch.randn(len(pid), 3, generator=g)
    emb[pid == 0] = 10.0 * torch.randn(2, 3, generator=g)  # noise scattered
    pt = torch.full((len(pid),), 2.0)
    assert ap_at_k(emb, pid, pt) == 1.0
    # All members of a particle at the identical point still count (self excluded by index).
    assert ap_at_k(centres[pid], pid, pt) == 1.0


def test_ap_at_k_matches_brute_force_with_batches_and_cuts():
    g = torch.Generator().manual_seed(2)
    n = 80
    pid = torch.randint(0, 9, (n,), generator=g)
    # pT is a particle property: make it constant per (graph, particle).
    batch = torch.cat([torch.zeros(45, dtype=torch.long), torch.ones(35, dtype=torch.long)])
    pt = (pid * 0.37 + batch * 0.5) % 3.0
    emb = torch.randn(n, 4, generator=g) + 0.8 * torch.nn.functional.one_hot(pid, 9)[:, :4]
    expected = brute_ap_at_k(emb, pid.tolist(), pt.tolist(), 1.0, batch.tolist())
    assert ap_at_k(emb, pid, pt, pt_min=1.0, batch=batch) == pytest.approx(expected, abs=1e-12)
    # Tiny chunks give the same answer as one chunk.
    assert ap_at_k(emb, pid, pt, 1.0, batch, max_chunk_elements=50) == pytest.approx(expected, abs=1e-12)
    # Query subsampling: all queries -> same value; fewer -> a different, seeded estimate.
    assert ap_at_k(emb, pid, pt, 1.0, batch, max_queries=1000) == pytest.approx(expected, abs=1e-12)
    sub = ap_at_k(emb, pid, pt, 1.0, batch, max_queries=5, seed=3)
    assert sub == ap_at_k(emb, pid, pt, 1.0, batch, max_queries=5, seed=3)
    assert 0.0 <= sub <= 1.0 and sub != pytest.approx(expected, abs=1e-9)


def test_ap_at_k_random_is_low_and_empty_is_nan():
    g = torch.Generator().manual_seed(3)
    n_part, hits = 100, 8
    pid = torch.arange(1, n_part + 1).repeat_interleave(hits)
    emb = torch.randn(len(pid), 16, generator=g)
    pt = torch.full((len(pid),), 5.0)
    # Chance level: k=7 mates among 799 others -> 7/799 ~ 0.009.
    assert ap_at_k(emb, pid, pt) < 0.05
    assert math.isnan(ap_at_k(emb, pid, torch.full_like(pt, 0.5)))  # nothing above pt_min


def brute_auc(scores, labels):
    pos = [s for s, l in zip(scores, labels) if l]
    neg = [s for s, l in zip(scores, labels) if not l]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p, q in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_matches_pairwise_count_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 6, (150,), generator=g).float()  # many ties
    labels = (torch.rand(150, generator=g) < 0.3 + 0.1 * scores / 5).long()
    assert roc_auc(scores, labels) == pytest.approx(brute_auc(scores.tolist(), labels.tolist()), abs=1e-12)


def test_roc_auc_extremes_and_errors():
    assert roc_auc(torch.tensor([0.1, 0.2, 0.9, 0.8]), torch.tensor([0, 0, 1, 1])) == 1.0
    assert roc_auc(torch.tensor([0.9, 0.8, 0.1, 0.2]), torch.tensor([0, 0, 1, 1])) == 0.0
    assert roc_auc(torch.ones(6), torch.tensor([0, 1, 0, 1, 1, 0])) == 0.5
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(torch.rand(4), torch.zeros(4))
    with pytest.raises(ValueError, match="0/1"):
        roc_auc(torch.rand(3), torch.tensor([0, 2, 1]))


def synthetic_edges(n_part: int, hits: int, seed: int):
    """Embeddings clustered by particle; radius-graph-like edges, ~1 true per 4 fake."""
    g = torch.Generator().manual_seed(seed)
    pid = torch.arange(n_part).repeat_interleave(hits)
    emb = 2.0 * torch.randn(n_part, 8, generator=g)[pid] + 0.3 * torch.randn(len(pid), 8, generator=g)
    src = torch.randint(0, len(pid), (3000,), generator=g)
    same = pid[src] * hits + torch.randint(0, hits, (3000,), generator=g)
    other = torch.randint(0, len(pid), (3000,), generator=g)
    dst = torch.where(torch.rand(3000, generator=g) < 0.2, same, other)
    keep = src != dst  # a self-pair would be trivially "true" (|h_i - h_j| = 0)
    edges = torch.stack([src[keep], dst[keep]])
    return emb, edges, (pid[edges[0]] == pid[edges[1]]).long()


def test_edge_probe_auc_easy_case_and_determinism():
    train = synthetic_edges(40, 6, seed=4)
    test = synthetic_edges(40, 6, seed=5)
    state = torch.random.get_rng_state()
    auc = edge_probe_auc(*train, *test, steps=150)
    assert auc > 0.9
    assert torch.equal(torch.random.get_rng_state(), state)  # probe leaves global RNG alone
    assert edge_probe_auc(*train, *test, steps=150) == auc


def test_edge_probe_uninformative_embedding_is_chance():
    emb, edges, labels = synthetic_edges(40, 6, seed=6)
    noise = torch.randn(emb.shape, generator=torch.Generator().manual_seed(7))
    test_emb, test_edges, test_labels = synthetic_edges(40, 6, seed=8)
    test_noise = torch.randn(test_emb.shape, generator=torch.Generator().manual_seed(9))
    auc = edge_probe_auc(noise, edges, labels, test_noise, test_edges, test_labels, steps=100)
    assert 0.4 < auc < 0.6


def test_edge_probe_bad_edges():
    emb, edges, labels = synthetic_edges(10, 4, seed=1)
    bad = edges.clone()
    bad[0, 0] = 999
    with pytest.raises(ValueError, match="outside"):
        edge_probe_auc(emb, bad, labels, emb, edges, labels)
    with pytest.raises(ValueError, match="labels"):
        edge_probe_auc(emb, edges, labels[:-1], emb, edges, labels)


def test_linear_probe_scores_separate_a_linear_rule_and_restore_the_rng():
    from gnn_jepa.nn.monitors import probe_scores
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 3, generator=g)
    y = (x[:, 0] - 2 * x[:, 2] > 0.5).float()  # a linear rule
    state = torch.get_rng_state()
    s = probe_scores(x[:200], y[:200], x[200:], hidden=0, steps=300)
    assert torch.equal(torch.get_rng_state(), state)
    assert s.shape == (200,)
    assert roc_auc(s, y[200:]) > 0.99
    with pytest.raises(ValueError, match="segment probe: train labels need both classes"):
        probe_scores(x[:10], torch.zeros(10), x[10:], hidden=0, what="segment probe")
