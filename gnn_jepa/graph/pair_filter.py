"""Layer-pair edge filter: keep candidate edges whose detector layer pair and straight-line
geometry look like those of true high-pT segments (a small "module map" at layer level).

Each candidate edge is first oriented *inner -> outer* by distance from the origin
``|pos|`` (ties by hit index), so ``(i, j)`` and ``(j, i)`` get the same decision. With
hit 1 the inner and hit 2 the outer hit (cylindrical ``r, phi, z``):

* layer pair ``(volume_1, layer_1) -> (volume_2, layer_2)``;
* ``z0 = z1 - r1 (z2 - z1) / (r2 - r1)``: where the straight r-z line through the two hits
  meets the beam axis (r = 0). A segment of a track from the luminous region has
  ``|z0|`` of the order of the vertex spread; a random pair of hits has not.
* ``|dphi/dr| = |wrap(phi2 - phi1)| / |r2 - r1|`` (rad/mm): for a track from the beam line
  ``sin(dphi) ~ dr / (2 R)`` with ``R = 1000 pT / (0.3 B)`` mm, so the slope is about
  ``0.3 B / (2000 pT)`` and bounds the track's pT from below.

:meth:`LayerPairFilter.fit` collects the true segments (:func:`~gnn_jepa.graph.edges.true_segments`)
of particles with pT > ``pt_min`` in training events and stores per layer pair a z0 window
and a largest slope; :meth:`LayerPairFilter.apply` keeps an edge when its layer pair was
seen and its z0 and slope lie inside the pair's window. Pairs with ``r2 == r1`` have no
z0 (infinite) and are always rejected.

A filter only knows the (volume, layer) ids of its fitting events. Hits on any other id (a
filter fitted on another detector, or on another numbering of the same one) lose every
candidate edge; the first event where that happens raises an :class:`UnseenLayerWarning`
(once per filter instance, so once per ``BuildGraph``) naming the unknown ids and counting
the hits and candidate edges affected (:meth:`LayerPairFilter.unseen_layers`). Fit a filter
on the detector's own events: ``gnn-jepa fit-graph``.

Saved as small JSON (:meth:`LayerPairFilter.save`, format tag :data:`FORMAT_TAG`) and used by
``BuildGraph(..., pair_filter=path)``.

Applying (:meth:`LayerPairFilter.kept_pairs`, what :meth:`~LayerPairFilter.apply` and
``BuildGraph`` run) takes the per-hit quantities of :func:`hit_geometry`, computed once per
event and shared by every filter and union member: float64 ``r, phi, z`` and each hit's rank
in ``(|pos|, index)`` order, so orienting an edge is one integer comparison. The layer pair is
looked up first, through a small dense table indexed by the two hits' (volume, layer) ids;
z0 and the slope are computed, in float64 with the very operations of :func:`pair_geometry`,
only for the edges whose layer pair was fitted. Decisions are bit-for-bit those of
:func:`pair_geometry` followed by the window test (``tests/graph/test_pair_filter.py``).
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch

from gnn_jepa.geometry import cylindrical, wrap_phi
from gnn_jepa.graph.edges import true_segments
from gnn_jepa.graph.presets import check_format_tag, file_digest, resolve_artifact

__all__ = ["FORMAT_TAG", "HitGeometry", "LayerPairFilter", "UnseenLayerWarning",
           "hit_geometry", "pair_geometry", "pair_key"]

#: Tag stored in every saved filter; loading anything else fails.
FORMAT_TAG = "gnn_jepa.LayerPairFilter/1"

# Layer-pair keys pack (volume_1, layer_1, volume_2, layer_2) into one int64, 15 bits each
# (TrackML ids are < 100), so lookups are one searchsorted over a sorted key table.
_ID_BITS = 15
_ID_MAX = 1 << _ID_BITS


#: Unknown (volume, layer) ids listed by name in the warning; more are counted.
_LIST_IDS = 20


class UnseenLayerWarning(UserWarning):
    """A :class:`LayerPairFilter` met hits on (volume, layer) ids it never saw in fitting:
    every candidate edge touching them is dropped."""


def pair_key(v1, l1, v2, l2):
    """Packed key of (volume_1, layer_1, volume_2, layer_2); tensors or ints."""
    return ((v1 * _ID_MAX + l1) * _ID_MAX + v2) * _ID_MAX + l2


def _unpack_key(key: int) -> tuple[int, int, int, int]:
    out = []
    for _ in range(4):
        out.append(key % _ID_MAX)
        key //= _ID_MAX
    return tuple(reversed(out))


def _quantile(x: torch.Tensor, q: float) -> float:
    """Linear-interpolation quantile (as ``torch.quantile``, without its 2^24 size limit)."""
    x = torch.sort(x.flatten()).values
    pos = q * (x.numel() - 1)
    i = min(int(math.floor(pos)), x.numel() - 1)
    j = min(i + 1, x.numel() - 1)
    return float(x[i] + (x[j] - x[i]) * (pos - i))


def _check_data(data, where: str) -> None:
    for attr in ("pos", "volume_id", "layer_id"):
        if getattr(data, attr, None) is None:
            raise ValueError(f"{where}: data has no {attr!r} attribute (the layer-pair filter "
                             f"needs pos, volume_id and layer_id of every hit)")
    n = data.pos.shape[0]
    for attr in ("volume_id", "layer_id"):
        ids = getattr(data, attr)
        if ids.shape != (n,):
            raise ValueError(f"{where}: {attr} has shape {tuple(ids.shape)}, expected [{n}]")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= _ID_MAX):
            raise ValueError(f"{where}: {attr} values must lie in [0, {_ID_MAX}), got "
                             f"[{int(ids.min())}, {int(ids.max())}]")


def pair_geometry(pos: torch.Tensor, volume_id: torch.Tensor, layer_id: torch.Tensor,
                  edge_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Layer-pair key, z0 and |dphi/dr| of every edge, oriented inner -> outer.

    The inner hit is the one closer to the origin (``|pos|``; on a tie the smaller index),
    so both directions of an edge give identical values.

    Args:
        pos: [N, 3] hit positions (mm).
        volume_id, layer_id: [N] long detector ids.
        edge_index: [2, E] long.

    Returns:
        ``(key [E] int64, z0 [E] float64 mm, slope [E] float64 rad/mm)`` with
        ``z0 = z1 - r1 (z2 - z1) / (r2 - r1)`` (+-inf when ``r2 == r1``) and
        ``slope = |wrap(phi2 - phi1)| / |r2 - r1|`` (inf when ``r2 == r1``).
    """
    a, b = edge_index[0], edge_index[1]
    # float64: z0 extrapolates over ~r1 / (r2 - r1) lever arms, amplifying rounding.
    p = pos.double()
    dist = torch.linalg.vector_norm(p, dim=1)
    swap = (dist[a] > dist[b]) | ((dist[a] == dist[b]) & (a > b))
    a, b = torch.where(swap, b, a), torch.where(swap, a, b)
    r, phi, z, _ = cylindrical(p)
    dr = r[b] - r[a]
    with torch.no_grad():
        z0 = z[a] - r[a] * (z[b] - z[a]) / dr
        slope = wrap_phi(phi[b] - phi[a]).abs() / dr.abs()
    # 0/0 (coincident hits) gives NaN: make it "no z0" like any other dr == 0 pair.
    z0 = torch.nan_to_num(z0, nan=math.inf)
    slope = torch.nan_to_num(slope, nan=math.inf)
    key = pair_key(volume_id[a], layer_id[a], volume_id[b], layer_id[b])
    return key, z0, slope


class HitGeometry(NamedTuple):
    """Per-hit quantities the filter gathers per edge (:func:`hit_geometry`), one event."""

    rank: torch.Tensor | None  # [N] int64 rank in (|pos|, index) order; None if |pos| has NaN
    order: torch.Tensor | None  # [N] int64 hit of each rank (rank's inverse)
    dist: torch.Tensor         # [N] float64 |pos|
    r: torch.Tensor            # [N] float64 hypot(x, y)
    phi: torch.Tensor          # [N] float64 atan2(y, x)
    z: torch.Tensor            # [N] float64
    ids: torch.Tensor          # [N] int64 packed (volume, layer): volume * 2^15 + layer


def hit_geometry(pos: torch.Tensor, volume_id: torch.Tensor,
                 layer_id: torch.Tensor) -> HitGeometry:
    """Per-hit inputs of :meth:`LayerPairFilter.kept_pairs`, once per event.

    The float64 values are those :func:`pair_geometry` computes (the same torch functions on
    ``pos.double()``), so per-edge results are bit-for-bit the same. Orientation: the inner
    hit of an edge is the one of lower rank, where ranks order the hits by ``|pos|`` and then
    by index (a stable sort), which is :func:`pair_geometry`'s rule when no ``|pos|`` is NaN
    (then ``rank`` is None and the rule is applied to ``dist`` directly).
    """
    p = pos.double()
    dist = torch.linalg.vector_norm(p, dim=1)
    rank = order = None
    if not bool(torch.isnan(dist).any()):
        order = torch.sort(dist, stable=True).indices
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=order.device)
    x, y, z = p.unbind(-1)
    # as gnn_jepa.geometry.cylindrical, without the eta the filter does not use
    return HitGeometry(rank, order, dist, torch.hypot(x, y), torch.atan2(y, x), z.contiguous(),
                       volume_id.long() * _ID_MAX + layer_id.long())


def _nonzero(mask: torch.Tensor) -> torch.Tensor:
    """Ascending int64 indices of the True entries of a 1-D mask (numpy's ``flatnonzero``
    on CPU: several times faster than ``torch.nonzero`` there)."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return mask.nonzero().squeeze(1)


class LayerPairFilter:
    """Per layer pair z0 window and largest |dphi/dr| of true segments (module docstring).

    Build with :meth:`fit` or :meth:`load`; call on ``(data, edge_index)`` for a keep mask.

    Args:
        keys: [P] int64 sorted layer-pair keys (packed volume/layer ids).
        z0_min, z0_max: [P] z0 window (mm) per pair.
        slope_max: [P] largest |dphi/dr| (rad/mm) per pair.
        counts: [P] number of training segments behind each window.
        config: the fit parameters (stored with the filter).
    """

    #: edges per vectorised chunk in :meth:`apply`
    chunk_size: int = 1 << 20

    def __init__(self, keys: torch.Tensor, z0_min: torch.Tensor, z0_max: torch.Tensor,
                 slope_max: torch.Tensor, counts: torch.Tensor | None = None,
                 config: dict | None = None) -> None:
        keys = torch.as_tensor(keys, dtype=torch.long)
        p = keys.shape[0]
        cols = {"z0_min": z0_min, "z0_max": z0_max, "slope_max": slope_max}
        cols = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in cols.items()}
        for name, v in cols.items():
            if v.shape != (p,):
                raise ValueError(f"LayerPairFilter: {name} has shape {tuple(v.shape)}, "
                                 f"expected [{p}] like keys")
        if p > 1 and not bool((keys[1:] > keys[:-1]).all()):
            raise ValueError("LayerPairFilter: keys must be strictly increasing")
        self.keys = keys
        self.z0_min, self.z0_max, self.slope_max = cols["z0_min"], cols["z0_max"], cols["slope_max"]
        self.counts = (torch.zeros(p, dtype=torch.long) if counts is None
                       else torch.as_tensor(counts, dtype=torch.long))
        self.config = dict(config or {})
        self.path: str | None = None
        self.digest: str | None = None
        # packed (volume, layer) ids at either end of a fitted pair, sorted
        self.known_ids = torch.unique(torch.cat([keys // (_ID_MAX * _ID_MAX),
                                                 keys % (_ID_MAX * _ID_MAX)]))
        self._warned = False
        self._tables: dict = {}

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, datas: Sequence, *, pt_min: float = 1.0, quantile: float = 0.999,
            pad: float = 0.05, pad_z0: float = 10.0, pad_slope: float = 2e-5,
            pool: bool = True) -> LayerPairFilter:
        """Windows from the true segments of particles with pT > ``pt_min`` in ``datas``.

        Per layer pair with segment z0 values ``Z`` and slopes ``S``:
        ``z0_min = q_{1-q}(Z) - w``, ``z0_max = q_q(Z) + w`` with
        ``w = pad (q_q(Z) - q_{1-q}(Z)) + pad_z0``, and
        ``slope_max = q_q(S) (1 + pad) + pad_slope`` (``q_x`` the x-quantile, linear
        interpolation; ``quantile=1`` takes min / max). With ``pool``, each pair's window is
        then widened to cover at least the same window computed from *all* segments pooled
        (all layer pairs together): the extreme quantiles of a pair with few segments
        underestimate its range (the z0 spread is mostly the vertex spread, common to all
        pairs), so without the floor held-out events lose several % of their segments
        unless the fit sees many events (``tests/graph/test_pair_filter.py``).

        Args:
            datas: PyG Data with ``pos``, ``volume_id``, ``layer_id``, ``particle_id``,
                ``hit_order``, ``pt``.
            pt_min: segments of particles with pT > this (GeV) define the windows.
            quantile: q in (0.5, 1].
            pad: relative widening of each window.
            pad_z0: absolute z0 widening (mm) on each side.
            pad_slope: absolute slope widening (rad/mm).
            pool: floor every window at the pooled window (see above).
        """
        if not datas:
            raise ValueError("LayerPairFilter.fit: no events given")
        if not 0.5 < quantile <= 1.0:
            raise ValueError(f"LayerPairFilter.fit: quantile must be in (0.5, 1], got {quantile}")
        if pad < 0 or pad_z0 < 0 or pad_slope < 0:
            raise ValueError(f"LayerPairFilter.fit: pads must be >= 0, got pad={pad}, "
                             f"pad_z0={pad_z0}, pad_slope={pad_slope}")
        keys, z0s, slopes = [], [], []
        for k, d in enumerate(datas):
            _check_data(d, f"LayerPairFilter.fit (event {k})")
            for attr in ("particle_id", "hit_order", "pt"):
                if getattr(d, attr, None) is None:
                    raise ValueError(f"LayerPairFilter.fit: event {k} has no {attr!r} attribute")
            seg = true_segments(d.particle_id, d.hit_order, pt=d.pt, pt_min=pt_min)
            key, z0, slope = pair_geometry(d.pos, d.volume_id, d.layer_id, seg)
            ok = torch.isfinite(z0) & torch.isfinite(slope)
            keys.append(key[ok]), z0s.append(z0[ok]), slopes.append(slope[ok])
        keys, z0s, slopes = torch.cat(keys), torch.cat(z0s), torch.cat(slopes)
        if keys.numel() == 0:
            raise ValueError(f"LayerPairFilter.fit: the {len(datas)} events hold no true "
                             f"segment of a particle with pT > {pt_min}")
        uniq, inverse, counts = torch.unique(keys, return_inverse=True, return_counts=True)
        order = torch.argsort(inverse, stable=True)
        z0s, slopes = z0s[order], slopes[order]
        lo, hi, smax = (torch.empty(uniq.shape[0], dtype=torch.float64) for _ in range(3))
        start = 0
        # a loop over layer pairs (~100), not edges
        for p, c in enumerate(counts.tolist()):
            z, s = z0s[start:start + c], slopes[start:start + c]
            start += c
            zl, zh = _quantile(z, 1 - quantile), _quantile(z, quantile)
            w = pad * (zh - zl) + pad_z0
            lo[p], hi[p] = zl - w, zh + w
            smax[p] = _quantile(s, quantile) * (1 + pad) + pad_slope
        if pool:
            zl, zh = _quantile(z0s, 1 - quantile), _quantile(z0s, quantile)
            w = pad * (zh - zl) + pad_z0
            lo = lo.clamp_max(zl - w)
            hi = hi.clamp_min(zh + w)
            smax = smax.clamp_min(_quantile(slopes, quantile) * (1 + pad) + pad_slope)
        config = {"pt_min": float(pt_min), "quantile": float(quantile), "pad": float(pad),
                  "pad_z0": float(pad_z0), "pad_slope": float(pad_slope), "pool": bool(pool),
                  "num_events": len(datas), "num_segments": int(keys.numel())}
        return cls(uniq, lo, hi, smax, counts, config)

    # ------------------------------------------------------------------ applying
    def unseen_layers(self, data, edge_index: torch.Tensor | None = None) -> dict | None:
        """Hits on (volume, layer) ids that no fitted layer pair contains, or None if none.

        Returns:
            ``{"ids": [(volume, layer), ...] sorted, "hits": hits on them, "num_hits": N}``
            plus, with ``edge_index``, ``"edges"`` (edges with an end on such a hit: the
            filter drops them all) and ``"num_edges"`` (E).
        """
        _check_data(data, "LayerPairFilter")
        ids = data.volume_id * _ID_MAX + data.layer_id
        unknown = ~torch.isin(ids, self.known_ids.to(ids.device))
        hits = int(unknown.sum())
        if hits == 0:
            return None
        out = {"ids": [(k // _ID_MAX, k % _ID_MAX) for k in torch.unique(ids[unknown]).tolist()],
               "hits": hits, "num_hits": int(ids.numel())}
        if edge_index is not None:
            unknown = unknown.to(edge_index.device)
            out["edges"] = int((unknown[edge_index[0]] | unknown[edge_index[1]]).sum())
            out["num_edges"] = int(edge_index.shape[1])
        return out

    def _warn_unseen(self, data, edge_index: torch.Tensor, per_pair: int = 1,
                     loops: bool = False) -> None:
        """Warn once (see :meth:`unseen_layers`). ``per_pair=2`` when ``edge_index`` holds
        each pair once for a graph that holds both directions, ``loops`` when that graph
        also has every self-loop: the counts are those of the graph's edge_index."""
        info = self.unseen_layers(data, edge_index)
        if info is None:
            return
        info["edges"] *= per_pair
        info["num_edges"] *= per_pair
        if loops:
            info["edges"] += info["hits"]
            info["num_edges"] += info["num_hits"]
        self._warned = True
        ids = ", ".join(f"({v}, {lay})" for v, lay in info["ids"][:_LIST_IDS])
        if len(info["ids"]) > _LIST_IDS:
            ids += f", ... ({len(info['ids'])} in all)"
        warnings.warn(
            f"{self!r} never saw (volume, layer) ids {ids} in fitting: {info['hits']} of the "
            f"{info['num_hits']} hits lie on them, and {info['edges']} of the "
            f"{info['num_edges']} candidate edges touch those hits and are all dropped. Was "
            f"the filter fitted on another detector or layer numbering? Fit one on these "
            f"events: `gnn-jepa fit-graph`. (Warned once per filter.)",
            UnseenLayerWarning, stacklevel=3)

    def apply(self, data, edge_index: torch.Tensor) -> torch.Tensor:
        """Keep mask [E] bool: the edge's layer pair is known and its z0 and |dphi/dr| lie in
        the pair's window (inclusive). Self-loops and pairs with ``r2 == r1`` are rejected.

        The first call (per filter instance) that meets hits on (volume, layer) ids the
        filter never saw raises an :class:`UnseenLayerWarning` (:meth:`unseen_layers`).

        Args:
            data: Data with ``pos``, ``volume_id``, ``layer_id``.
            edge_index: [2, E] long (either orientation).
        """
        _check_data(data, "LayerPairFilter")
        if edge_index.dim() != 2 or edge_index.shape[0] != 2 or edge_index.dtype != torch.long:
            raise ValueError(f"LayerPairFilter: edge_index must be [2, E] int64, got "
                             f"{tuple(edge_index.shape)} {edge_index.dtype}")
        if not self._warned:
            self._warn_unseen(data, edge_index)
        dev = edge_index.device
        keep = torch.zeros(edge_index.shape[1], dtype=torch.bool, device=dev)
        if edge_index.shape[1] == 0 or self.keys.numel() == 0:
            return keep
        geo = hit_geometry(data.pos.to(dev), data.volume_id.to(dev), data.layer_id.to(dev))
        keep[self.kept_pairs(geo, edge_index[0], edge_index[1])] = True
        return keep

    def _lookup(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(known_ids, table)`` on ``device``: ``table[c1 * (K + 1) + c2]`` is the row of the
        fitted pair (known id number c1 -> c2) or -1; number K stands for every unknown id."""
        key = str(device)
        if key not in self._tables:
            known = self.known_ids.to(device)
            k1 = known.numel() + 1
            table = torch.full((k1 * k1,), -1, dtype=torch.int32, device=device)
            keys = self.keys.to(device)
            c1 = torch.searchsorted(known, keys // (_ID_MAX * _ID_MAX))
            c2 = torch.searchsorted(known, keys % (_ID_MAX * _ID_MAX))
            table[c1 * k1 + c2] = torch.arange(keys.numel(), dtype=torch.int32, device=device)
            self._tables[key] = (known, table)
        return self._tables[key]

    def hit_codes(self, geo: HitGeometry) -> torch.Tensor:
        """Per hit ``rank << B | c``, ``c`` the number of its (volume, layer) id among the
        filter's K known ids (K for an id it never saw) and ``B`` the bits of K; int32 when
        it fits. The inner hit of an edge is then the end of smaller code. Without ranks
        (NaN ``|pos|``) just ``c``. For :meth:`kept_pairs`."""
        known, _ = self._lookup(geo.ids.device)
        num = known.numel()
        if num == 0:
            c = torch.zeros_like(geo.ids)
        else:
            at = torch.searchsorted(known, geo.ids).clamp_max_(num - 1)
            c = torch.where(known.index_select(0, at) == geo.ids, at, num)
        if geo.rank is None:
            return c
        bits = max(1, num.bit_length())
        out = torch.bitwise_left_shift(geo.rank, bits).bitwise_or_(c)
        if (geo.rank.numel() << bits) < 2 ** 31:
            out = out.int()  # half the bytes per gather
        return out

    def kept_pairs(self, geo: HitGeometry, a: torch.Tensor, b: torch.Tensor,
                   codes: torch.Tensor | None = None) -> torch.Tensor:
        """Ascending indices of the edges ``(a[e], b[e])`` the filter keeps (:meth:`apply`'s
        decision, bit for bit; either orientation gives the same).

        Args:
            geo: :func:`hit_geometry` of the event.
            a, b: [E] int64 hit indices.
            codes: :meth:`hit_codes` of ``geo`` (computed when None).
        """
        dev = a.device
        if a.numel() == 0 or self.keys.numel() == 0:
            return torch.zeros(0, dtype=torch.long, device=dev)
        if codes is None:
            codes = self.hit_codes(geo)
        known, table = self._lookup(dev)
        k1 = known.numel() + 1
        bits = max(1, known.numel().bit_length())
        low = (1 << bits) - 1
        lo, hi, smax = self.z0_min.to(dev), self.z0_max.to(dev), self.slope_max.to(dev)
        out = []
        # chunks bound the temporaries (a few int / float64 per edge) on 10^7+ edges
        for start in range(0, a.numel(), self.chunk_size):
            ca, cb = a[start:start + self.chunk_size], b[start:start + self.chunk_size]
            va, vb = codes.index_select(0, ca), codes.index_select(0, cb)
            if geo.rank is not None:
                # rank in the high bits: the smaller code is the inner hit
                vin, vout = torch.minimum(va, vb), torch.maximum(va, vb)
                cell = torch.bitwise_and(vin, low).mul_(k1).add_(torch.bitwise_and(vout, low))
            else:  # pair_geometry's rule itself on |pos|
                da, db = geo.dist.index_select(0, ca), geo.dist.index_select(0, cb)
                swap = (da > db) | ((da == db) & (ca > cb))
                cell = torch.where(swap, vb * k1 + va, va * k1 + vb)
            # layer pair first (integer lookups), then float64 on the fitted pairs only
            row = table.index_select(0, cell)
            sel = _nonzero(row >= 0)
            row = row.index_select(0, sel)
            if geo.rank is not None:
                ia = geo.order.index_select(0, vin.index_select(0, sel).bitwise_right_shift_(bits))
                ib = geo.order.index_select(0, vout.index_select(0, sel).bitwise_right_shift_(bits))
            else:
                swap = swap.index_select(0, sel)
                ca, cb = ca.index_select(0, sel), cb.index_select(0, sel)
                ia, ib = torch.where(swap, cb, ca), torch.where(swap, ca, cb)
            r1, r2 = geo.r.index_select(0, ia), geo.r.index_select(0, ib)
            z1, z2 = geo.z.index_select(0, ia), geo.z.index_select(0, ib)
            # the operations of pair_geometry, in its order (in place where a temporary is
            # free): z0 = z1 - r1 * (z2 - z1) / dr, slope = |wrap(phi2 - phi1)| / |dr|
            dr = r2.sub_(r1)
            z0 = torch.sub(z1, r1.mul_(z2.sub_(z1)).div_(dr), out=z1)
            dphi = geo.phi.index_select(0, ib).sub_(geo.phi.index_select(0, ia))
            slope = wrap_phi(dphi).abs_().div_(dr.abs_())
            z0.nan_to_num_(nan=math.inf)
            slope.nan_to_num_(nan=math.inf)
            ok = ((z0 >= lo.index_select(0, row)) & (z0 <= hi.index_select(0, row))
                  & (slope <= smax.index_select(0, row)))
            out.append(sel.index_select(0, _nonzero(ok)) + start)
        return torch.cat(out)

    __call__ = apply

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        """Plain-JSON form (floats round-trip exactly through ``json``)."""
        return {"format": FORMAT_TAG, "config": self.config,
                "pairs": [{"volume_1": v1, "layer_1": l1, "volume_2": v2, "layer_2": l2,
                           "z0_min": zl, "z0_max": zh, "slope_max": s, "count": c}
                          for (v1, l1, v2, l2), zl, zh, s, c in zip(
                              (_unpack_key(k) for k in self.keys.tolist()),
                              self.z0_min.tolist(), self.z0_max.tolist(),
                              self.slope_max.tolist(), self.counts.tolist())]}

    def save(self, path: str | Path) -> None:
        """Write the filter to ``path`` as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> LayerPairFilter:
        """Read a :meth:`save` file.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not JSON, wrong format tag, or malformed pair entries.
        """
        given, path = str(path), resolve_artifact(path, ".json")
        if not path.is_file():
            raise FileNotFoundError(f"LayerPairFilter.load: no file {str(path)!r}")
        try:
            blob = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"LayerPairFilter.load: {str(path)!r} is not a JSON file "
                             f"({type(err).__name__}: {err})") from err
        check_format_tag(blob, FORMAT_TAG, path, where="LayerPairFilter.load",
                         what="LayerPairFilter")
        pairs = blob.get("pairs")
        if not isinstance(pairs, list):
            raise ValueError(f"LayerPairFilter.load: {str(path)!r} lacks its 'pairs' list")
        try:
            rows = []
            for p in pairs:
                ids = [int(p[f]) for f in ("volume_1", "layer_1", "volume_2", "layer_2")]
                if not all(0 <= i < _ID_MAX for i in ids):
                    raise ValueError(f"ids {ids} outside [0, {_ID_MAX})")
                rows.append((pair_key(*ids), float(p["z0_min"]), float(p["z0_max"]),
                             float(p["slope_max"]), int(p.get("count", 0))))
            rows.sort()
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"LayerPairFilter.load: {str(path)!r} has a malformed pair "
                             f"entry ({type(err).__name__}: {err})") from err
        cols = list(zip(*rows)) if rows else [[], [], [], [], []]
        try:
            f64 = torch.float64  # python floats -> float64 exactly (the default is float32)
            out = cls(torch.tensor(cols[0], dtype=torch.long), torch.tensor(cols[1], dtype=f64),
                      torch.tensor(cols[2], dtype=f64), torch.tensor(cols[3], dtype=f64),
                      torch.tensor(cols[4], dtype=torch.long), blob.get("config") or {})
        except ValueError as err:
            raise ValueError(f"LayerPairFilter.load: {str(path)!r}: {err}") from err
        out.path = given
        out.digest = file_digest(path)
        return out

    def __len__(self) -> int:
        return int(self.keys.numel())

    def __repr__(self) -> str:
        c = self.config
        fit = ", ".join(f"{k}={c[k]:g}" for k in ("pt_min", "quantile", "pad") if k in c)
        if c.get("pool") is False:
            fit += ", pool=False"
        # the file's digest: a dataset cache keyed on this repr is rebuilt when the file changes
        src = f", path={self.path!r}, sha256={self.digest}" if self.path else ""
        return (f"{type(self).__name__}(pairs={len(self)}, segments={int(self.counts.sum())}"
                f"{', ' + fit if fit else ''}{src})")
