"""Learned graph frame ("metric learning"): an MLP embeds each hit so that the two hits of
a true segment are close, and the graph is the exact radius graph in that space.

Embedding (per hit, from ``pos`` only; the simulator has no cell-shape features):

* ``periodic_phi=True`` (default): ``e = (w_phi * phi, f(r, z, eta))`` with a learned
  ``w_phi > 0`` and an MLP ``f`` to ``dim - 1`` coordinates. The phi axis keeps its period
  ``2 pi w_phi`` (minimum image in :func:`~gnn_jepa.graph.radius.radius_graph`), so the
  MLP never has to spend two output dimensions on wrapping a circle.
* ``periodic_phi=False``: ``e = f(r, z, eta, cos phi, sin phi)``, all ``dim`` axes open.

Inputs are scaled to O(1): ``r / 1000``, ``z / 1000`` (mm), ``eta / 3``.

Training (:func:`train_hit_embedding`) minimises a hinge ("contrastive") loss over pairs,

.. math::

    L = \\frac{\\sum_{(i,j) \\in P} w_{ij} d_{ij}^2}{\\sum_{P} w_{ij}}
      + \\lambda \\frac{1}{|N|} \\sum_{(i,j) \\in N} \\max(0, m - d_{ij})^2,

``d`` the frame distance (minimum image on phi), ``P`` the true segments
(:func:`~gnn_jepa.graph.edges.true_segments`, weight ``1 + pt_weight`` when pT > 1 GeV),
``N`` negatives: *hard* pairs of the radius graph at ``margin`` in the current embedding
(rebuilt every ``refresh`` steps) plus uniformly random pairs; pairs of one particle are
never negatives. After training, graphs are built at radii around ``margin``.

A trained embedding is saved with :meth:`HitEmbedding.save` (config, weights and a format
tag in one small ``.pt``) and used by ``BuildGraph(kind="learned", embedding=path)``
through :class:`LearnedFrame`.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from gnn_jepa.geometry import check_positions, cylindrical, wrap_phi
from gnn_jepa.graph.edges import true_segments
from gnn_jepa.graph.radius import radius_graph
from gnn_jepa.graph.presets import file_digest, load_torch_artifact, resolve_artifact

__all__ = ["FORMAT_TAG", "HitEmbedding", "LearnedFrame", "hit_features",
           "load_hit_embedding", "train_hit_embedding"]

#: Tag stored in every saved embedding; loading anything else fails.
FORMAT_TAG = "gnn_jepa.HitEmbedding/1"

_ACTIVATIONS = {"tanh": nn.Tanh, "silu": nn.SiLU, "relu": nn.ReLU}


def hit_features(pos: torch.Tensor, periodic_phi: bool = True) -> torch.Tensor:
    """Per-hit MLP inputs [N, F]: ``(r/1000, z/1000, eta/3[, cos phi, sin phi])``.

    Args:
        pos: [N, 3] hit positions (x, y, z) in mm.
        periodic_phi: when False, cos and sin of phi are appended (F = 5, else 3).
    """
    check_positions(pos, "hit_features")
    r, phi, z, eta = cylindrical(pos)
    cols = [r / 1000.0, z / 1000.0, eta / 3.0]
    if not periodic_phi:
        cols += [torch.cos(phi), torch.sin(phi)]
    return torch.stack(cols, 1)


class HitEmbedding(nn.Module):
    """Hit position -> ``dim`` embedding coordinates (see the module docstring).

    Args:
        dim: embedding dimension D (the radius graph tests ``3^(D-1)`` grid slices per
            point, so D <= 4 keeps it fast).
        hidden: width of the hidden layers.
        num_layers: number of hidden layers (>= 1).
        periodic_phi: first axis is ``w_phi * phi`` (periodic) and the MLP gives the rest.
        w_phi: initial phi weight (learned, kept > 0 through its logarithm).
        activation: "tanh", "silu" or "relu".
    """

    def __init__(self, dim: int = 3, hidden: int = 64, num_layers: int = 3, *,
                 periodic_phi: bool = True, w_phi: float = 1.0,
                 activation: str = "tanh") -> None:
        super().__init__()
        if int(dim) < (2 if periodic_phi else 1):
            raise ValueError(f"HitEmbedding: dim must be >= {2 if periodic_phi else 1}, got {dim}")
        if int(hidden) < 1 or int(num_layers) < 1:
            raise ValueError(f"HitEmbedding: hidden and num_layers must be >= 1, "
                             f"got {hidden}, {num_layers}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"HitEmbedding: unknown activation {activation!r}; "
                             f"choose from {sorted(_ACTIVATIONS)}")
        if not (math.isfinite(w_phi) and w_phi > 0):
            raise ValueError(f"HitEmbedding: w_phi must be finite and > 0, got {w_phi}")
        self.config = {"dim": int(dim), "hidden": int(hidden), "num_layers": int(num_layers),
                       "periodic_phi": bool(periodic_phi), "w_phi": float(w_phi),
                       "activation": activation}
        self.dim = int(dim)
        self.periodic_phi = bool(periodic_phi)
        n_in = 3 if periodic_phi else 5
        n_out = self.dim - 1 if periodic_phi else self.dim
        layers: list[nn.Module] = []
        width = n_in
        for _ in range(int(num_layers)):
            layers += [nn.Linear(width, int(hidden)), _ACTIVATIONS[activation]()]
            width = int(hidden)
        layers.append(nn.Linear(width, n_out))
        self.mlp = nn.Sequential(*layers)
        self.log_w_phi = nn.Parameter(torch.zeros(()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise the MLP (PyTorch defaults) and set ``w_phi`` to its initial value."""
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                m.reset_parameters()
        with torch.no_grad():
            self.log_w_phi.fill_(math.log(self.config["w_phi"]))

    @property
    def w_phi(self) -> float:
        """Current weight of the phi axis (periodic_phi only)."""
        return float(self.log_w_phi.detach().exp())

    @property
    def periods(self) -> list[float | None]:
        """Per embedding axis its period (``2 pi w_phi`` on phi) or None."""
        if self.periodic_phi:
            return [2 * math.pi * self.w_phi] + [None] * (self.dim - 1)
        return [None] * self.dim

    def embed_features(self, feats: torch.Tensor, phi: torch.Tensor | None) -> torch.Tensor:
        """Embedding [N, D] from :func:`hit_features` and phi (needed when periodic)."""
        out = self.mlp(feats)
        if self.periodic_phi:
            if phi is None:
                raise ValueError("HitEmbedding.embed_features: periodic_phi needs phi")
            out = torch.cat([(self.log_w_phi.exp() * phi).unsqueeze(1), out], 1)
        return out

    def forward(self, pos: torch.Tensor) -> torch.Tensor:
        """Embedding [N, D] of hit positions ``pos`` [N, 3] (mm), in the MLP's dtype."""
        feats = hit_features(pos, self.periodic_phi).to(self.log_w_phi.dtype)
        phi = torch.atan2(pos[:, 1], pos[:, 0]).to(self.log_w_phi.dtype)
        return self.embed_features(feats, phi)

    def pair_distance(self, emb: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """Frame distance [P] between rows i and j of ``emb`` (minimum image on phi)."""
        diff = emb[i] - emb[j]
        if self.periodic_phi:
            w = self.log_w_phi.exp()
            # wrap the raw phi difference, then scale: the same minimum image as radius_graph.
            dphi = wrap_phi(diff[:, 0] / w) * w
            diff = torch.cat([dphi.unsqueeze(1), diff[:, 1:]], 1)
        return torch.linalg.vector_norm(diff, dim=1)

    def save(self, path: str | Path, **metadata) -> None:
        """Write config, weights and ``metadata`` (plain values) to ``path`` (.pt)."""
        torch.save({"format": FORMAT_TAG, "config": dict(self.config),
                    "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
                    "metadata": metadata}, str(path))

    def __repr__(self) -> str:
        c = self.config
        phi = f", w_phi={self.w_phi:.4g}" if self.periodic_phi else ", periodic_phi=False"
        return (f"{type(self).__name__}(dim={c['dim']}, hidden={c['hidden']}, "
                f"num_layers={c['num_layers']}{phi}, activation={c['activation']!r})")


def load_hit_embedding(path: str | Path) -> tuple[HitEmbedding, dict]:
    """Load a :meth:`HitEmbedding.save` file; returns ``(model in eval mode, metadata)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a saved HitEmbedding (wrong format tag, missing keys,
            or weights that do not match the stored config).
    """
    blob, path = load_torch_artifact(path, FORMAT_TAG, where="load_hit_embedding",
                                     what="HitEmbedding")
    for key in ("config", "state_dict"):
        if not isinstance(blob.get(key), dict):
            raise ValueError(f"load_hit_embedding: {str(path)!r} lacks its {key!r} dict")
    try:
        model = HitEmbedding(**blob["config"])
        model.load_state_dict(blob["state_dict"])
    except (TypeError, RuntimeError, ValueError) as err:
        raise ValueError(f"load_hit_embedding: {str(path)!r}: weights do not match config "
                         f"{blob['config']}: {err}") from err
    model.eval()
    return model, dict(blob.get("metadata") or {})


class LearnedFrame:
    """Graph frame of a trained :class:`HitEmbedding` (same interface as GraphFrame).

    Args:
        embedding: path of a saved embedding, or a HitEmbedding instance.
    """

    kind = "learned"

    def __init__(self, embedding: str | Path | HitEmbedding) -> None:
        self.digest = None
        if isinstance(embedding, HitEmbedding):
            self.path = None
            self.model = embedding
        elif isinstance(embedding, (str, Path)):
            self.path = str(embedding)
            self.model, _ = load_hit_embedding(embedding)
            self.digest = file_digest(resolve_artifact(embedding, ".pt"))
        else:
            raise ValueError(f"LearnedFrame: embedding must be a path or a HitEmbedding, "
                             f"got {type(embedding).__name__}")

    @property
    def dim(self) -> int:
        """Number of coordinates D."""
        return self.model.dim

    @property
    def periods(self) -> list[float | None]:
        """Per coordinate its period or None."""
        return self.model.periods

    @property
    def axis_names(self) -> list[str]:
        """Axis names: ``phi`` then ``e1, e2, ...`` (or ``e0...`` without periodic phi)."""
        if self.model.periodic_phi:
            return ["phi"] + [f"e{k}" for k in range(1, self.dim)]
        return [f"e{k}" for k in range(self.dim)]

    @torch.no_grad()
    def coords(self, pos: torch.Tensor) -> torch.Tensor:
        """Embedded coordinates [N, D] of positions ``pos`` [N, 3] (mm), in pos' dtype."""
        check_positions(pos, "LearnedFrame.coords")
        model = self.model
        if next(model.parameters()).device != pos.device:
            model = model.to(pos.device)
        was_training = model.training
        model.eval()
        out = model(pos).to(pos.dtype)
        model.train(was_training)
        return out

    def to_dict(self) -> dict:
        """``{"kind": "learned", "embedding": path}`` (path None for an in-memory model)."""
        return {"kind": "learned", "embedding": self.path}

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, LearnedFrame) and self.path is not None
                and self.path == other.path)

    def __repr__(self) -> str:
        # the file's digest: a dataset cache keyed on this repr is rebuilt when the file changes
        src = (f"{self.path!r}, sha256={self.digest}" if self.path is not None
               else "in-memory")
        return f"LearnedFrame({src}, {self.model!r})"


# --------------------------------------------------------------------------- training
def _pair_keys(i: torch.Tensor, j: torch.Tensor, n: int) -> torch.Tensor:
    return torch.minimum(i, j) * n + torch.maximum(i, j)


def train_hit_embedding(datas: Sequence, model: HitEmbedding | None = None, *,
                        steps: int = 300, lr: float = 3e-3, margin: float = 0.1,
                        neg_weight: float = 1.0, pt_weight: float = 4.0,
                        pt_min_positive: float = 0.0, num_positives: int = 20000,
                        num_hard: int = 40000, num_random: int = 10000,
                        hard_cap: int = 64, hard_nodes: int = 20000, refresh: int = 25,
                        seed: int = 0,
                        log_every: int = 0, log=None) -> tuple[HitEmbedding, list[dict]]:
    """Train a :class:`HitEmbedding` on events with the hinge loss of the module docstring.

    Each step takes one event (round robin), ``num_positives`` true segments (uniform),
    ``num_hard`` hard negatives (from the current radius graph at ``margin``, capped at
    ``hard_cap`` neighbours per hit, refreshed every ``refresh`` steps per event) and
    ``num_random`` random pairs; seeded, one Adam optimiser. The hard-negative graph is
    built over at most ``hard_nodes`` random hits of the event (an untrained embedding can
    put far more than ``hard_cap`` hits within ``margin``: the subset bounds that cost), and
    only from step ``refresh`` on (the random negatives spread the embedding first).

    Args:
        datas: PyG Data with ``pos``, ``particle_id``, ``hit_order``, ``pt``.
        model: embedding to train (a fresh default one when None).
        steps: optimiser steps.
        lr: Adam learning rate.
        margin: hinge margin m; graphs are later built at radii near it.
        neg_weight: lambda, weight of the negative term.
        pt_weight: extra weight of segments with pT > 1 GeV.
        pt_min_positive: drop segments of particles with pT <= this from the positives.
        num_positives, num_hard, num_random: pairs per step.
        hard_cap: neighbour cap of the hard-negative graph.
        hard_nodes: most hits searched for hard negatives per rebuild.
        refresh: steps between hard-negative graph rebuilds (per event).
        seed: seeds the model init (when ``model`` is None) and every sample.
        log_every: log the loss every this many steps (0: never).
        log: callable taking a string (default print to stderr).

    Returns:
        ``(model in eval mode, history)``, history one dict per logged step.
    """
    if not datas:
        raise ValueError("train_hit_embedding: no events given")
    for k, d in enumerate(datas):
        for attr in ("pos", "particle_id", "hit_order", "pt"):
            if getattr(d, attr, None) is None:
                raise ValueError(f"train_hit_embedding: event {k} has no {attr!r} attribute")
    if log is None:
        import sys

        def log(msg: str) -> None:
            print(msg, file=sys.stderr, flush=True)

    gen = torch.Generator().manual_seed(int(seed))
    if model is None:
        with torch.random.fork_rng():  # seeded init without touching the global RNG
            torch.manual_seed(int(seed))
            model = HitEmbedding()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    prepared = []
    for d in datas:
        pos = d.pos.float()
        seg = true_segments(d.particle_id, d.hit_order, pt=d.pt, pt_min=pt_min_positive)
        w = 1.0 + pt_weight * (d.pt[seg[0]] > 1.0).float()
        phi = torch.atan2(pos[:, 1], pos[:, 0])
        prepared.append({"pos": pos, "feats": hit_features(pos, model.periodic_phi),
                         "phi": phi, "seg": seg, "w": w, "pid": d.particle_id,
                         "hard": torch.zeros(2, 0, dtype=torch.long), "age": 0})
    history = []
    t0 = time.perf_counter()
    for step in range(int(steps)):
        ev = prepared[step % len(prepared)]
        n = ev["pos"].shape[0]
        pid = ev["pid"]
        if ev["age"] >= refresh:
            sub = torch.randperm(n, generator=gen)[:hard_nodes]
            with torch.no_grad():
                emb = model.embed_features(ev["feats"][sub], ev["phi"][sub])
                ei = radius_graph(emb, margin, periods=model.periods, max_num_neighbors=hard_cap,
                                  undirected=False)
            ei = sub[ei]
            ei = ei[:, (pid[ei[0]] != pid[ei[1]]) | (pid[ei[0]] == 0)]
            ev["hard"] = ei
            ev["age"] = 0
        ev["age"] += 1
        seg, w = ev["seg"], ev["w"]
        k = torch.randint(seg.shape[1], (min(num_positives, seg.shape[1]),), generator=gen)
        pi, pj, pw = seg[0, k], seg[1, k], w[k]
        negs = []
        hard = ev["hard"]
        if hard.shape[1] and num_hard:
            k = torch.randint(hard.shape[1], (min(num_hard, hard.shape[1]),), generator=gen)
            negs.append(hard[:, k])
        if num_random:
            rnd = torch.randint(n, (2, num_random), generator=gen)
            keep = (pid[rnd[0]] != pid[rnd[1]]) | (pid[rnd[0]] == 0)
            keep &= rnd[0] != rnd[1]
            negs.append(rnd[:, keep])
        neg = torch.cat(negs, 1)
        emb = model.embed_features(ev["feats"], ev["phi"])
        d_pos = model.pair_distance(emb, pi, pj)
        d_neg = model.pair_distance(emb, neg[0], neg[1])
        loss_pos = (pw * d_pos.square()).sum() / pw.sum()
        loss_neg = torch.relu(margin - d_neg).square().mean()
        loss = loss_pos + neg_weight * loss_neg
        opt.zero_grad()
        loss.backward()
        opt.step()
        if log_every and (step % log_every == 0 or step == steps - 1):
            with torch.no_grad():
                eff = float((d_pos <= margin).float().mul(pw).sum() / pw.sum())
            rec = {"step": step, "loss": float(loss.detach()), "loss_pos": float(loss_pos.detach()),
                   "loss_neg": float(loss_neg.detach()), "pos_within_margin": eff,
                   "hard_pairs": int(hard.shape[1]), "w_phi": model.w_phi,
                   "time_s": time.perf_counter() - t0}
            history.append(rec)
            log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in rec.items()))
    model.eval()
    return model, history
