"""Collapse monitors and frozen-embedding probes (no gradients flow out of this module).

* :func:`embedding_std`, :func:`rankme`: is the embedding collapsing (to a point or a subspace)?
* :func:`ap_at_k`: do a particle's hits sit together in embedding space (HEPT's AP@k)?
* :func:`edge_probe_auc`: can a small MLP on frozen embeddings tell true track segments
  from fake graph edges? (:func:`roc_auc` is the exact rank-based AUC it reports.)
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from gnn_jepa.tracking.metrics import roc_auc as _rank_auc


@torch.no_grad()
def embedding_std(z: Tensor) -> Tensor:
    """Per-dimension standard deviation (unbiased) of embeddings ``z`` [N, D] -> [D].

    A dimension whose std falls towards 0 has collapsed.
    """
    if z.dim() != 2 or z.size(0) < 2:
        raise ValueError(f"embedding_std: z must be [N >= 2, D], got shape {tuple(z.shape)}")
    return z.float().std(dim=0)


@torch.no_grad()
def rankme(z: Tensor, eps: float = 1e-7) -> float:
    """RankMe effective rank (Garrido et al. 2023).

    With singular values :math:`\\sigma_k` of ``z`` (uncentred, as in the paper) and
    :math:`p_k = \\sigma_k / \\lVert\\sigma\\rVert_1 + \\epsilon`:

    .. math:: \\mathrm{RankMe}(z) = \\exp\\Big(-\\sum_k p_k \\log p_k\\Big) \\in [1, \\min(N, D)].

    Args:
        z: Embeddings [N, D].
        eps: Keeps ``log`` finite for zero singular values.

    Returns:
        The effective rank as a float (0.0 for an all-zero ``z``, which has no spectrum).
    """
    if z.dim() != 2 or z.numel() == 0:
        raise ValueError(f"rankme: z must be a non-empty [N, D], got shape {tuple(z.shape)}")
    s = torch.linalg.svdvals(z.double())
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))


@torch.no_grad()
def ap_at_k(
    emb: Tensor,
    particle_id: Tensor,
    pt: Tensor,
    pt_min: float = 1.0,
    batch: Optional[Tensor] = None,
    max_chunk_elements: int = 1 << 24,
    max_queries: Optional[int] = None,
    seed: int = 0,
) -> float:
    """HEPT's AP@k: how many of a hit's nearest neighbours in embedding space are its track mates.

    For every query hit i (not noise, its particle's pT > ``pt_min``, its particle with
    :math:`n_p \\ge 2` hits in i's graph) let :math:`k_i = n_p - 1` and
    :math:`\\mathcal N_k(i)` its :math:`k_i` nearest hits by Euclidean distance (all hits of
    the same graph, noise included, i itself excluded). Then

    .. math:: \\mathrm{AP@k} = \\operatorname{mean}_i\\;
        \\frac{|\\{j \\in \\mathcal N_k(i) : p_j = p_i\\}|}{k_i}.

    Exact kNN by ``torch.cdist`` over chunks of queries, so memory stays at about
    ``max_chunk_elements`` distances whatever N is. Time is O(Q N_g D) for Q queries in a
    graph of N_g hits (all hits are queries by default, so quadratic): pass
    ``max_queries`` to average over a random subset of the queries instead (an unbiased
    estimate) when monitoring large events during training.

    Args:
        emb: Embeddings [N, D].
        particle_id: [N], 0 = noise.
        pt: [N] pT of each hit's particle (GeV).
        pt_min: Only particles with pT strictly above this are queried.
        batch: Graph index of each hit [N]; None = one graph. Particle ids are
            matched within a graph only.
        max_chunk_elements: Upper bound on the distance-matrix chunk size.
        max_queries: If set, at most this many query hits per graph, drawn uniformly
            without replacement.
        seed: Seeds that draw (a local generator: the global RNG is untouched).

    Returns:
        AP@k in [0, 1], or NaN when no hit qualifies as a query.
    """
    if emb.dim() != 2:
        raise ValueError(f"ap_at_k: emb must be [N, D], got shape {tuple(emb.shape)}")
    if max_queries is not None and max_queries < 1:
        raise ValueError(f"ap_at_k: max_queries must be >= 1, got {max_queries}")
    n = emb.size(0)
    for name, t in (("particle_id", particle_id), ("pt", pt), ("batch", batch)):
        if t is not None and t.shape != (n,):
            raise ValueError(f"ap_at_k: {name} has shape {tuple(t.shape)}, expected ({n},)")
    emb = emb.float()
    if batch is None:
        batch = torch.zeros(n, dtype=torch.long, device=emb.device)

    total, count = 0.0, 0
    for g in torch.unique(batch).tolist():
        idx = torch.nonzero(batch == g).flatten()
        e, pid, ptg = emb[idx], particle_id[idx], pt[idx]
        _, inverse, counts = torch.unique(pid, return_inverse=True, return_counts=True)
        k_all = counts[inverse] - 1
        query = torch.nonzero((pid != 0) & (ptg > pt_min) & (k_all >= 1)).flatten()
        if query.numel() == 0:
            continue
        if max_queries is not None and query.numel() > max_queries:
            gen = torch.Generator().manual_seed(seed + int(g))
            pick = torch.randperm(query.numel(), generator=gen)[:max_queries]
            query = query[pick.to(query.device)]
        ng = idx.numel()
        chunk = max(1, max_chunk_elements // ng)
        for start in range(0, query.numel(), chunk):
            q = query[start : start + chunk]
            k = k_all[q]
            dist = torch.cdist(e[q], e)
            # Exclude the query itself by index, not by zero distance: another hit may
            # legitimately share the exact same embedding.
            dist[torch.arange(q.numel(), device=dist.device), q] = math.inf
            kmax = int(k.max())
            nn_idx = dist.topk(kmax, dim=1, largest=False).indices
            same = pid[nn_idx] == pid[q].unsqueeze(1)
            within_k = torch.arange(kmax, device=dist.device).unsqueeze(0) < k.unsqueeze(1)
            frac = (same & within_k).sum(dim=1).double() / k.double()
            total += float(frac.sum())
            count += q.numel()
    return total / count if count else math.nan


@torch.no_grad()
def roc_auc(scores: Tensor, labels: Tensor) -> float:
    """Exact ROC AUC by the Mann-Whitney rank statistic, ties counted as one half.

    .. math:: \\mathrm{AUC} = \\frac{R_+ - P(P+1)/2}{P\\,Q},

    with :math:`R_+` the sum of (1-based, tie-averaged) ranks of the P positives among all
    P + Q scores. Equals the fraction of (positive, negative) pairs ordered correctly, a tie
    counting 1/2.

    Args:
        scores: [E] real scores (higher = more likely positive).
        labels: [E] binary labels (bool or 0/1).

    Returns:
        AUC in [0, 1].

    Raises:
        ValueError: On mismatched shapes, non-binary labels, NaN scores, or when one
            class is absent.
    """
    scores = scores.detach().flatten().double()
    labels = labels.detach().flatten()
    if scores.shape != labels.shape:
        raise ValueError(
            f"roc_auc: scores has {scores.numel()} entries but labels has {labels.numel()}"
        )
    if torch.isnan(scores).any():
        raise ValueError("roc_auc: scores contain NaN")
    if labels.dtype != torch.bool:
        if not bool(((labels == 0) | (labels == 1)).all()):
            raise ValueError("roc_auc: labels must be 0/1 or bool")
        labels = labels.bool()
    n_pos = int(labels.sum())
    n_neg = labels.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"roc_auc: needs both classes, got {n_pos} positives and {n_neg} negatives")
    # the rank statistic itself lives with the other tracking metrics
    return _rank_auc(scores.cpu().numpy(), labels.cpu().numpy())


def _pair_features(emb: Tensor, edges: Tensor, name: str) -> Tensor:
    if edges.dim() != 2 or edges.size(0) != 2:
        raise ValueError(f"edge_probe_auc: {name} edges must be [2, E], got {tuple(edges.shape)}")
    if edges.numel() and (int(edges.min()) < 0 or int(edges.max()) >= emb.size(0)):
        raise ValueError(
            f"edge_probe_auc: {name} edges index outside [0, {emb.size(0)}) "
            f"(min {int(edges.min())}, max {int(edges.max())})"
        )
    hi, hj = emb[edges[0]], emb[edges[1]]
    return torch.cat([hi, hj, (hi - hj).abs()], dim=1)


def edge_probe_auc(
    train_emb: Tensor,
    train_edges: Tensor,
    train_labels: Tensor,
    test_emb: Tensor,
    test_edges: Tensor,
    test_labels: Tensor,
    steps: int = 200,
    lr: float = 1e-2,
    seed: int = 0,
    hidden: int = 64,
) -> float:
    """Linear-ish probe of frozen embeddings: edge classifier ROC AUC on held-out edges.

    Trains ``MLP([h_i, h_j, |h_i - h_j|]) -> logit`` (one hidden ReLU layer) full-batch with
    Adam on the train edges, using ``BCEWithLogits(pos_weight = #neg / #pos)`` against the
    class imbalance of radius graphs; inputs are standardised with train-set statistics.
    Embeddings are detached: the encoder is not touched. The global RNG state is restored
    afterwards, so calling the probe does not perturb training.

    Args:
        train_emb: [N_train, D] embeddings of the training hits.
        train_edges: [2, E_train] edges into ``train_emb``.
        train_labels: [E_train] 1 = both ends on the same particle (true segment).
        test_emb, test_edges, test_labels: Same for the held-out hits.
        steps: Optimiser steps.
        lr: Adam learning rate.
        seed: Seeds the MLP initialisation.
        hidden: Hidden width of the MLP.

    Returns:
        Exact ROC AUC (:func:`roc_auc`) of the probe on the test edges.
    """
    if train_emb.dim() != 2 or test_emb.dim() != 2 or train_emb.size(1) != test_emb.size(1):
        raise ValueError(
            "edge_probe_auc: train_emb and test_emb must be [N, D] with equal D, got "
            f"{tuple(train_emb.shape)} and {tuple(test_emb.shape)}"
        )
    for name, edges, labels in (
        ("train", train_edges, train_labels),
        ("test", test_edges, test_labels),
    ):
        if labels.numel() != edges.size(-1):
            raise ValueError(
                f"edge_probe_auc: {name} has {edges.size(-1)} edges but {labels.numel()} labels"
            )
    with torch.no_grad():
        x_train = _pair_features(train_emb.detach().float(), train_edges, "train")
        x_test = _pair_features(test_emb.detach().float(), test_edges, "test")
    scores = probe_scores(x_train, train_labels, x_test, steps=steps, lr=lr, seed=seed,
                          hidden=hidden, what="edge_probe_auc")
    return roc_auc(scores, test_labels.to(scores.device))


def probe_scores(x_train: Tensor, y_train: Tensor, x_test: Tensor, steps: int = 200,
                 lr: float = 1e-2, seed: int = 0, hidden: int = 64,
                 what: str = "probe_scores") -> Tensor:
    """Train a small probe on frozen features and score held-out rows.

    ``MLP(x) -> logit`` (one hidden ReLU layer of ``hidden``; ``hidden=0``: linear),
    full-batch Adam on ``BCEWithLogits(pos_weight = #neg / #pos)``, inputs standardised with
    the train rows' statistics. Features are detached; the global RNG state is restored.

    Args:
        x_train: [N, F] train features. y_train: [N] 0/1 labels (both classes needed).
        x_test: [M, F] held-out features.
        what: the caller's name, for error messages.

    Returns:
        [M] probe logits of the held-out rows.
    """
    with torch.no_grad():
        x_train, x_test = x_train.detach().float(), x_test.detach().float()
        mean = x_train.mean(dim=0, keepdim=True)
        std = x_train.std(dim=0, keepdim=True).clamp_min(1e-6)
        x_train = (x_train - mean) / std
        x_test = (x_test - mean) / std
    y = y_train.detach().flatten().float().to(x_train.device)
    n_pos = float(y.sum())
    n_neg = y.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"{what}: train labels need both classes, got {n_pos:.0f} positives and "
            f"{n_neg:.0f} negatives"
        )

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers = ([nn.Linear(x_train.size(1), hidden), nn.ReLU(), nn.Linear(hidden, 1)] if hidden
                  else [nn.Linear(x_train.size(1), 1)])
        net = nn.Sequential(*layers).to(x_train.device)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(n_neg / n_pos, device=x_train.device))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(x_train).squeeze(-1), y)
            loss.backward()
            opt.step()
    with torch.no_grad():
        return net(x_test).squeeze(-1)
