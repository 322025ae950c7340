"""Geometric context / target regions for JEPA pretraining, and the target-cell grid.

Per event the masker picks K *target* regions and one *context* region of the detector.
A region is an axis-aligned box in cylindrical coordinates, stored as one row of 8
floats (:data:`REGION_PARAM_COLUMNS`)::

    phi_center, phi_half_width, r_min, r_max, absz_min, absz_max, eta_min, eta_max

A hit at ``(r, phi, |z|, eta)`` lies in the region when (:func:`hits_in_region`)

    |wrap(phi - phi_center)| <= phi_half_width,   r_min <= r < r_max,
    absz_min <= |z| < absz_max,                  eta_min <= eta < eta_max.

Upper bounds are half-open so that regions that touch (the inner and outer half of the
detector, say) never share a hit. An unbounded side is ``-inf`` / ``+inf`` and
``phi_half_width >= pi`` means all phi. The phi test is closed on both sides: two wedges
that touch share only the measure-zero boundary, where the first region wins.

Targets are pairwise disjoint and disjoint from the context, so every hit has at most one
role. :class:`RegionMasker` draws them; :func:`tile_regions` then tiles every target region
with a fixed grid of cells in (phi, eta, r) -- the predictor's queries -- and
:func:`assign_cells` gives each target hit its cell, with the same index layout
(region-major: ``cell = region * n_cells + (i_phi * n_eta + i_eta) * n_r + i_r``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor
from torch_geometric.data import Data

from gnn_jepa.geometry import cylindrical, wrap_phi

#: Columns of a region's parameter row; unbounded ends are +-inf, phi_half_width >= pi = all phi.
REGION_PARAM_COLUMNS = ("phi_center", "phi_half_width", "r_min", "r_max", "absz_min", "absz_max",
                        "eta_min", "eta_max")

#: Columns of :attr:`RegionMasks.region_descriptor` (see :func:`region_descriptor`).
DESCRIPTOR_COLUMNS = ("sin_phi_center", "cos_phi_center", "phi_half_width", "r_min", "r_max",
                      "absz_min", "absz_max", "eta_min", "eta_max")

#: Target shape name -> the coordinates it restricts (the others stay unbounded).
TARGET_SHAPES: dict[str, tuple[str, ...]] = {
    "wedge": ("phi",),
    "annulus": ("r",),
    "eta_band": ("eta",),
    "zband": ("absz",),
    "wedge_annulus": ("phi", "r"),
    "wedge_eta": ("phi", "eta"),
    "wedge_zband": ("phi", "absz"),
    "eta_annulus": ("eta", "r"),
    "wedge_eta_annulus": ("phi", "eta", "r"),
}

CONTEXT_MODES = ("complement", "wedge")
ANCHOR_MODES = ("hits", "uniform")

# Columns of the per-candidate uniform draws (one [B, T, K, 7] tensor per call, so the draw
# sequence is the same whatever the shape; a config change never shifts other draws).
_U_ANCHOR, _U_PHI, _U_PHI_WIDTH, _U_ETA, _U_ETA_WIDTH, _U_R, _U_Z = range(7)


def _unbounded_params(shape: tuple[int, ...], device: torch.device | str | None = None) -> Tensor:
    """Parameter rows covering the whole detector: all phi, every other range +-inf."""
    inf = math.inf
    row = torch.tensor([0.0, math.pi, -inf, inf, -inf, inf, -inf, inf], device=device)
    return row.expand(*shape, 8).clone()


def hits_in_region(r: Tensor, phi: Tensor, absz: Tensor, eta: Tensor, params: Tensor) -> Tensor:
    """Membership of hits in regions.

    Args:
        r, phi, absz, eta: hit coordinates (mm, rad, mm, -), any shape that broadcasts
            against ``params[..., 0]`` (e.g. [N, 1] against params [K, 8] gives [N, K]).
        params: region parameters [..., 8] in :data:`REGION_PARAM_COLUMNS` order.

    Returns:
        Bool tensor, True where the hit lies in the region:
        ``|wrap(phi - phi_center)| <= phi_half_width`` and ``lo <= value < hi`` for r, |z|, eta.
    """
    if params.shape[-1] != len(REGION_PARAM_COLUMNS):
        raise ValueError(f"region params must have {len(REGION_PARAM_COLUMNS)} columns "
                         f"{REGION_PARAM_COLUMNS}, got shape {tuple(params.shape)}")
    c, hw, r0, r1, z0, z1, e0, e1 = params.unbind(-1)
    # hw >= pi tested on its own: float32 rounding of pi must never drop a hit at phi = +-pi.
    in_phi = (hw >= math.pi) | (wrap_phi(phi - c).abs() <= hw)
    return (in_phi & (r >= r0) & (r < r1) & (absz >= z0) & (absz < z1)
            & (eta >= e0) & (eta < e1))


def regions_disjoint(a: Tensor, b: Tensor) -> Tensor:
    """Whether regions ``a`` and ``b`` (params [..., 8], broadcast) provably share no hit.

    Two boxes are disjoint when their ranges are disjoint in at least one coordinate:
    wedges when ``|wrap(c_a - c_b)| >= hw_a + hw_b``, half-open ranges when
    ``hi_a <= lo_b`` or ``hi_b <= lo_a``. The test is conservative: r, |z| and eta are not
    independent (eta = asinh(z / r)), so some boxes declared overlapping hold no common point.
    """
    ca, hwa, *ra = a.unbind(-1)
    cb, hwb, *rb = b.unbind(-1)
    out = (hwa < math.pi) & (hwb < math.pi) & (wrap_phi(ca - cb).abs() >= hwa + hwb)
    for i in range(0, 6, 2):
        out = out | (ra[i + 1] <= rb[i]) | (rb[i + 1] <= ra[i])
    return out


def _check_extent(name: str, extent: Sequence[float]) -> tuple[float, float]:
    if len(extent) != 2 or not float(extent[0]) < float(extent[1]):
        raise ValueError(f"{name} must be (low, high) with low < high, got {extent!r}")
    if not all(math.isfinite(float(v)) for v in extent):
        raise ValueError(f"{name} must be finite, got {extent!r}")
    return float(extent[0]), float(extent[1])


def region_descriptor(params: Tensor, r_extent: Sequence[float] = (0.0, 1100.0),
                      z_extent: Sequence[float] = (0.0, 3000.0),
                      eta_extent: Sequence[float] = (-4.0, 4.0)) -> Tensor:
    """O(1)-scaled geometric description of regions, for the predictor's queries.

    Columns (:data:`DESCRIPTOR_COLUMNS`): ``sin(phi_center), cos(phi_center),
    min(phi_half_width, pi) / pi``, then ``r_min, r_max`` divided by
    ``r_scale = max|r_extent|``, ``absz_min, absz_max`` by ``z_scale = max|z_extent|`` and
    ``eta_min, eta_max`` by ``eta_scale = max|eta_extent|``. An unbounded end (+-inf) is
    replaced by the detector extent on that side before scaling, so every entry is finite.

    Args:
        params: region parameters [R, 8].
        r_extent, z_extent, eta_extent: detector extent in r (mm), |z| (mm) and eta.

    Returns:
        Float tensor [R, 9].
    """
    extents = [_check_extent("r_extent", r_extent), _check_extent("z_extent", z_extent),
               _check_extent("eta_extent", eta_extent)]
    c, hw = params[..., 0], params[..., 1]
    cols = [torch.sin(c), torch.cos(c), hw.clamp(max=math.pi) / math.pi]
    for i, (lo, hi) in enumerate(extents):
        scale = max(abs(lo), abs(hi))
        for v, fill in ((params[..., 2 + 2 * i], lo), (params[..., 3 + 2 * i], hi)):
            # An unbounded end means "to the edge of the detector" on that side.
            cols.append(torch.where(torch.isinf(v), torch.full_like(v, fill), v) / scale)
    return torch.stack(cols, -1)


@dataclass
class RegionMasks:
    """Context and target regions of a batch of B graphs with N hits, R regions.

    Attributes:
        context: [N] bool, hit is a context hit.
        target_region: [N] long, index (0..R-1) of the target region holding the hit, -1 none.
        region_params: [R, 8] float, :data:`REGION_PARAM_COLUMNS` of each target region.
        region_descriptor: [R, 9] float, :func:`region_descriptor` of each target region.
        region_batch: [R] long, graph index of each target region (sorted; K per valid graph).
        graph_valid: [B] bool, False when no try satisfied the minimum hit counts; such a
            graph has no context hits, no target hits and no regions.
        num_skipped: number of invalid graphs in this batch.
        context_params: [B, 8] float, the region the context was cut from (the whole detector
            for ``context="complement"``, the context wedge for ``"wedge"``); the context is
            that region minus the targets.
    """

    context: Tensor
    target_region: Tensor
    region_params: Tensor
    region_descriptor: Tensor
    region_batch: Tensor
    graph_valid: Tensor
    num_skipped: int
    context_params: Tensor | None = None

    @property
    def num_regions(self) -> int:
        """R, the number of target regions in the batch."""
        return int(self.region_params.shape[0])


def _parse_bands(spec: str | Sequence[Sequence[float]], extent: tuple[float, float],
                 name: str) -> Tensor:
    """``"halves"`` or a list of ``[lo, hi]`` choices -> float tensor [n_options, 2]."""
    if isinstance(spec, str):
        if spec != "halves":
            raise ValueError(f"{name} must be 'halves' or a list of [min, max] pairs, got {spec!r}")
        mid = 0.5 * (extent[0] + extent[1])
        # Open outer ends: every hit, even beyond the nominal extent, falls in one half.
        return torch.tensor([[-math.inf, mid], [mid, math.inf]])
    rows = []
    for i, pair in enumerate(spec):
        vals = [math.inf * (1 if j else -1) if v is None else float(v) for j, v in enumerate(pair)]
        if len(vals) != 2 or not vals[0] < vals[1]:
            raise ValueError(f"{name}[{i}] must be [min, max] with min < max, got {pair!r}")
        rows.append(vals)
    if not rows:
        raise ValueError(f"{name} is an empty list; give at least one [min, max] pair")
    return torch.tensor(rows, dtype=torch.float32)


def _max_disjoint_bands(bands: Tensor) -> int:
    """Largest number of pairwise disjoint half-open intervals among ``bands`` (greedy)."""
    order = torch.argsort(bands[:, 1])
    count, end = 0, -math.inf
    for lo, hi in bands[order].tolist():
        if lo >= end:
            count, end = count + 1, hi
    return count


def _check_width(name: str, width: Sequence[float], upper: float | None = None) -> tuple[float, float]:
    if len(width) != 2 or not 0.0 < float(width[0]) <= float(width[1]):
        raise ValueError(f"{name} must be (min, max) with 0 < min <= max, got {width!r}")
    if upper is not None and float(width[1]) > upper:
        raise ValueError(f"{name} max {width[1]} exceeds {upper}")
    return float(width[0]), float(width[1])


class RegionMasker:
    """Draws 1 context region and K disjoint target regions per graph.

    Sampling (vectorised over graphs; a loop over tries and over K only):

    1. All random numbers for ``B`` graphs x ``max_tries`` tries x ``K`` candidates are drawn
       at once on a CPU generator, then moved to the hits' device.
    2. Each candidate is a box of ``target_shape``. With ``anchor="hits"`` (default) it is
       placed on a random hit of its graph: the wedge centre is the hit's phi plus a uniform
       offset within +-half width, the eta band likewise, and the annulus / |z| band is one
       of the choices containing the hit. Regions thus follow the hit density and are never
       empty by construction. ``anchor="uniform"`` places them uniformly over the extents.
    3. Tries are scanned in order; candidate k of try t fills a graph's next free target
       slot when it holds at least ``min_target_hits`` hits and is geometrically disjoint
       (:func:`regions_disjoint`) from the targets already accepted (sequential
       acceptance: far fewer rejected graphs than redrawing all K at once). The scan stops
       as soon as every graph has K targets.
    4. The context is all non-target hits (``"complement"``) or, for ``"wedge"``, the
       non-target hits of a wedge covering ``context_scale`` of 2 pi (first try with at least
       ``min_context_hits`` hits).
    5. A graph left with fewer than K targets or too small a context is marked invalid and
       counted (``num_skipped`` and the cumulative :attr:`total_skipped`).

    Args:
        num_targets: K, target regions per graph.
        target_shape: one of :data:`TARGET_SHAPES`.
        wedge_width: (min, max) full wedge width in radians, drawn uniformly.
        eta_width: (min, max) full eta-band width, drawn uniformly.
        annulus: how r is cut: ``"halves"`` (r < mid and r >= mid of ``r_extent``) or an
            explicit list of ``[r_min, r_max]`` choices (e.g. layer-aligned; None = unbounded).
        zband: the same for |z| over ``z_extent`` (endcap disks), for shapes with a |z| band.
        context: ``"complement"`` or ``"wedge"``.
        context_scale: (min, max) fraction of 2 pi covered by the context wedge.
        min_context_hits, min_target_hits: minimum hits in the context / in each target.
        max_tries: candidate draws per target slot.
        r_extent, eta_extent, z_extent: detector extent (mm, -, mm for |z|): the range of
            uniform placement, the "halves" split and the descriptor's scale.
        seed: seed of the internal generator used when ``__call__`` gets none.
        anchor: ``"hits"`` or ``"uniform"`` placement (see 2.).

    Attributes:
        total_skipped, total_graphs: cumulative counts over calls (per process: each
            DataLoader worker holds its own copy).
    """

    def __init__(self, num_targets: int = 4, target_shape: str = "wedge_eta_annulus",
                 wedge_width: tuple[float, float] = (math.pi / 8, math.pi / 8),
                 eta_width: tuple[float, float] = (0.6, 0.6),
                 annulus: str | list[list[float | None]] = "halves",
                 context: str = "complement",
                 context_scale: tuple[float, float] = (0.85, 1.0),
                 min_context_hits: int = 10, min_target_hits: int = 5, max_tries: int = 20,
                 r_extent: tuple[float, float] = (0.0, 1100.0),
                 eta_extent: tuple[float, float] = (-4.0, 4.0),
                 z_extent: tuple[float, float] = (0.0, 3000.0),
                 seed: int = 0, zband: str | list[list[float | None]] = "halves",
                 anchor: str = "hits") -> None:
        if int(num_targets) < 1:
            raise ValueError(f"num_targets must be >= 1, got {num_targets}")
        if target_shape not in TARGET_SHAPES:
            raise ValueError(f"unknown target_shape {target_shape!r}; choose from {sorted(TARGET_SHAPES)}")
        if context not in CONTEXT_MODES:
            raise ValueError(f"unknown context {context!r}; choose from {CONTEXT_MODES}")
        if anchor not in ANCHOR_MODES:
            raise ValueError(f"unknown anchor {anchor!r}; choose from {ANCHOR_MODES}")
        if int(min_context_hits) < 0 or int(min_target_hits) < 0:
            raise ValueError(f"min_context_hits ({min_context_hits}) and min_target_hits "
                             f"({min_target_hits}) must be >= 0")
        if int(max_tries) < 1:
            raise ValueError(f"max_tries must be >= 1, got {max_tries}")
        self.num_targets = int(num_targets)
        self.target_shape = target_shape
        self.wedge_width = _check_width("wedge_width", wedge_width, 2 * math.pi)
        self.eta_width = _check_width("eta_width", eta_width)
        self.context = context
        self.context_scale = _check_width("context_scale", context_scale, 1.0)
        self.min_context_hits = int(min_context_hits)
        self.min_target_hits = int(min_target_hits)
        self.max_tries = int(max_tries)
        self.r_extent = _check_extent("r_extent", r_extent)
        self.eta_extent = _check_extent("eta_extent", eta_extent)
        self.z_extent = _check_extent("z_extent", z_extent)
        self.seed = int(seed)
        self.anchor = anchor
        self.annulus = annulus
        self.zband = zband
        self._r_bands = _parse_bands(annulus, self.r_extent, "annulus")
        self._z_bands = _parse_bands(zband, self.z_extent, "zband")
        self._components = TARGET_SHAPES[target_shape]
        self._check_feasible()
        self._generator: torch.Generator | None = None
        self._generator_key: tuple[int, int] | None = None
        self.total_skipped = 0
        self.total_graphs = 0

    def _check_feasible(self) -> None:
        """Refuse configurations where K disjoint targets can never exist."""
        comps, k = self._components, self.num_targets
        if comps == ("r",) and k > _max_disjoint_bands(self._r_bands):
            raise ValueError(f"target_shape 'annulus' with num_targets={k}: only "
                             f"{_max_disjoint_bands(self._r_bands)} disjoint annuli in {self.annulus!r}")
        if comps == ("absz",) and k > _max_disjoint_bands(self._z_bands):
            raise ValueError(f"target_shape 'zband' with num_targets={k}: only "
                             f"{_max_disjoint_bands(self._z_bands)} disjoint |z| bands in {self.zband!r}")
        if comps == ("phi",) and k * self.wedge_width[0] > 2 * math.pi:
            raise ValueError(f"{k} disjoint wedges of width >= {self.wedge_width[0]:.3f} rad "
                             "do not fit in 2 pi")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_targets={self.num_targets}, "
                f"target_shape={self.target_shape!r}, wedge_width={self.wedge_width}, "
                f"eta_width={self.eta_width}, annulus={self.annulus!r}, zband={self.zband!r}, "
                f"context={self.context!r}, context_scale={self.context_scale}, "
                f"min_context_hits={self.min_context_hits}, min_target_hits={self.min_target_hits}, "
                f"max_tries={self.max_tries}, r_extent={self.r_extent}, eta_extent={self.eta_extent}, "
                f"z_extent={self.z_extent}, anchor={self.anchor!r}, seed={self.seed})")

    # -- random numbers --------------------------------------------------------------------
    def _default_generator(self) -> torch.Generator:
        """Internal CPU generator, distinct per DataLoader worker and per worker start.

        In the main process it is seeded with ``seed``; in a worker with
        ``seed * 1_000_003 + worker_info.seed`` (PyTorch's per-worker seed, reproducible under
        a fixed global seed, different for each worker and each epoch's worker start).
        """
        info = torch.utils.data.get_worker_info()
        key = None if info is None else (info.id, info.seed)
        if self._generator is None or key != self._generator_key:
            s = self.seed if info is None else self.seed * 1_000_003 + info.seed
            self._generator = torch.Generator().manual_seed(s % (2 ** 63))
            self._generator_key = key
        return self._generator

    # -- candidates ------------------------------------------------------------------------
    @staticmethod
    def _choose_band(value: Tensor, u: Tensor, bands: Tensor, anchored: bool) -> Tensor:
        """Pick one band per candidate: uniformly among those containing ``value`` (anchored;
        uniformly among all when none does) or uniformly among all. Returns [..., 2]."""
        n_opt = bands.shape[0]
        pick = (u * n_opt).long().clamp(max=n_opt - 1)
        if anchored:
            contains = (value[..., None] >= bands[:, 0]) & (value[..., None] < bands[:, 1])
            cnt = contains.sum(-1)
            j = torch.minimum((u * cnt).long(), (cnt - 1).clamp_min(0))
            nth = contains & (contains.long().cumsum(-1) == (j + 1)[..., None])
            pick = torch.where(cnt > 0, nth.long().argmax(-1), pick)
        return bands[pick]

    def _target_candidates(self, u: Tensor, r: Tensor, phi: Tensor, absz: Tensor, eta: Tensor,
                           ptr: Tensor, counts: Tensor) -> Tensor:
        """Candidate target boxes [B, T, K, 8] from uniforms ``u`` [B, T, K, 7]."""
        dev = u.device
        anchored = self.anchor == "hits"
        params = _unbounded_params(tuple(u.shape[:-1]), dev)
        if r.numel() > 0:
            n = counts[:, None, None]
            # Anchor hit: uniform over the graph's hits (PyG batches store them contiguously).
            idx = ptr[:-1, None, None] + torch.minimum((u[..., _U_ANCHOR] * n).long(),
                                                       (n - 1).clamp_min(0))
            idx = idx.clamp(0, r.numel() - 1)  # empty graphs: any hit, they fail min hits anyway
            a_r, a_phi, a_absz, a_eta = r[idx], phi[idx], absz[idx], eta[idx]
        else:
            a_r = a_phi = a_absz = a_eta = torch.zeros(u.shape[:-1], device=dev)
        if "phi" in self._components:
            lo, hi = self.wedge_width
            hw = 0.5 * (lo + (hi - lo) * u[..., _U_PHI_WIDTH])
            if anchored:
                centre = a_phi + (2 * u[..., _U_PHI] - 1) * hw
            else:
                centre = (2 * u[..., _U_PHI] - 1) * math.pi
            params[..., 0] = wrap_phi(centre)
            params[..., 1] = hw
        if "eta" in self._components:
            lo, hi = self.eta_width
            hw = 0.5 * (lo + (hi - lo) * u[..., _U_ETA_WIDTH])
            if anchored:
                centre = a_eta + (2 * u[..., _U_ETA] - 1) * hw
            else:
                e0, e1 = self.eta_extent
                free = (e1 - e0 - 2 * hw).clamp_min(0)  # centre range keeping the band inside
                centre = 0.5 * (e0 + e1) + (u[..., _U_ETA] - 0.5) * free
            params[..., 6] = centre - hw
            params[..., 7] = centre + hw
        if "r" in self._components:
            params[..., 2:4] = self._choose_band(a_r, u[..., _U_R], self._r_bands.to(dev), anchored)
        if "absz" in self._components:
            params[..., 4:6] = self._choose_band(a_absz, u[..., _U_Z], self._z_bands.to(dev), anchored)
        return params

    def _context_candidates(self, uc: Tensor) -> Tensor:
        """Candidate context regions [B, T, 8] from uniforms ``uc`` [B, T, 2]."""
        params = _unbounded_params(tuple(uc.shape[:-1]), uc.device)
        if self.context == "wedge":
            lo, hi = self.context_scale
            params[..., 0] = wrap_phi((2 * uc[..., 0] - 1) * math.pi)
            params[..., 1] = (lo + (hi - lo) * uc[..., 1]) * math.pi
        return params

    # -- entry points ----------------------------------------------------------------------
    def __call__(self, batch: Data, generator: torch.Generator | None = None) -> RegionMasks:
        """Masks for a PyG ``Data`` (one graph) or ``Batch``; hit coordinates from ``pos``.

        Args:
            batch: graph(s) with ``pos`` [N, 3] (x, y, z in mm), on any device.
            generator: CPU generator for the draws, e.g.
                ``torch.Generator().manual_seed(seed * 1_000_003 + global_step)`` so the masks
                are a pure function of the step. None: the masker's internal generator.
        """
        pos = getattr(batch, "pos", None)
        if pos is None:
            raise ValueError(f"{type(batch).__name__} has no 'pos' attribute; the masker needs "
                             "hit positions pos [N, 3] (x, y, z in mm)")
        if pos.dim() != 2 or pos.shape[1] != 3:
            raise ValueError(f"pos must have shape [N, 3], got {tuple(pos.shape)}")
        r, phi, z, eta = cylindrical(pos)
        batch_index = getattr(batch, "batch", None)
        if batch_index is None:
            batch_index = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
            num_graphs = 1
        else:
            num_graphs = int(batch.num_graphs)
        return self.sample(r, phi, z.abs(), eta, batch_index, num_graphs, generator)

    def sample(self, r: Tensor, phi: Tensor, absz: Tensor, eta: Tensor, batch_index: Tensor,
               num_graphs: int, generator: torch.Generator | None = None) -> RegionMasks:
        """Masks from precomputed hit coordinates [N] and the graph index of each hit [N].

        Hits of one graph must be contiguous and graphs in order (the PyG ``Batch`` layout).
        """
        gen = self._default_generator() if generator is None else generator
        if gen.device.type != "cpu":
            raise ValueError(f"generator must be a CPU torch.Generator, got one on {gen.device}")
        dev = r.device
        B, T, K, N = int(num_graphs), self.max_tries, self.num_targets, r.numel()
        if batch_index.shape != r.shape:
            raise ValueError(f"batch_index shape {tuple(batch_index.shape)} != hit shape {tuple(r.shape)}")
        counts = (torch.bincount(batch_index, minlength=B) if N
                  else torch.zeros(B, dtype=torch.long, device=dev))
        if counts.shape[0] != B:
            raise ValueError(f"batch_index refers to graph {counts.shape[0] - 1} but num_graphs={B}")
        ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])

        # All draws at once on the CPU generator: the masks depend on the generator state only.
        u = torch.rand(B, T, K, 7, generator=gen).to(dev)
        uc = torch.rand(B, T, 2, generator=gen).to(dev)
        cand = self._target_candidates(u, r, phi, absz, eta, ptr, counts)  # [B, T, K, 8]
        ctx_cand = self._context_candidates(uc)  # [B, T, 8]

        slots = _unbounded_params((B, K), dev)  # accepted target boxes
        filled = torch.zeros(B, dtype=torch.long, device=dev)
        local = torch.full((N,), -1, dtype=torch.long, device=dev)  # hit -> slot in its graph
        slot_ids = torch.arange(K, device=dev)
        coords = (r[:, None], phi[:, None], absz[:, None], eta[:, None])
        for t in range(T):
            if t > 0 and not bool((filled < K).any()):
                break  # every graph has its K targets
            member = hits_in_region(*coords, cand[:, t][batch_index])  # [N, K]
            n_in = torch.zeros(B, K, dtype=torch.long, device=dev).index_add_(0, batch_index, member.long())
            for k in range(K):
                box = cand[:, t, k]  # [B, 8]
                used = slot_ids[None, :] < filled[:, None]
                apart = (regions_disjoint(box[:, None, :], slots) | ~used).all(-1)
                ok = (filled < K) & (n_in[:, k] >= self.min_target_hits) & apart
                into = (slot_ids[None, :] == filled[:, None]) & ok[:, None]
                slots = torch.where(into[..., None], box[:, None, :], slots)
                # First region wins on a shared wedge boundary, so each hit has one target.
                new = member[:, k] & ok[batch_index] & (local < 0)
                local = torch.where(new, filled[batch_index], local)
                filled = filled + ok.long()
        has_targets = filled == K

        free = local < 0
        if self.context == "complement":
            context = free
            ctx_params = ctx_cand[:, 0]
            n_ctx = torch.zeros(B, dtype=torch.long, device=dev).index_add_(0, batch_index, free.long())
            ctx_ok = n_ctx >= self.min_context_hits
        else:
            context = torch.zeros(N, dtype=torch.bool, device=dev)
            ctx_params = ctx_cand[:, 0].clone()
            ctx_ok = torch.zeros(B, dtype=torch.bool, device=dev)
            for t in range(T):
                if t > 0 and not bool((has_targets & ~ctx_ok).any()):
                    break
                inside = hits_in_region(r, phi, absz, eta, ctx_cand[:, t][batch_index]) & free
                n_ctx = torch.zeros(B, dtype=torch.long, device=dev).index_add_(0, batch_index, inside.long())
                acc = has_targets & ~ctx_ok & (n_ctx >= self.min_context_hits)
                context = context | (inside & acc[batch_index])
                ctx_params = torch.where(acc[:, None], ctx_cand[:, t], ctx_params)
                ctx_ok = ctx_ok | acc

        valid = has_targets & ctx_ok
        hit_valid = valid[batch_index]
        rank = valid.long().cumsum(0) - 1  # index of each valid graph among valid graphs
        target_region = torch.where((local >= 0) & hit_valid, rank[batch_index] * K + local,
                                    torch.full_like(local, -1))
        region_params = slots[valid].reshape(-1, 8)
        num_skipped = int((~valid).sum())
        self.total_skipped += num_skipped
        self.total_graphs += B
        return RegionMasks(
            context=context & hit_valid,
            target_region=target_region,
            region_params=region_params,
            region_descriptor=region_descriptor(region_params, self.r_extent, self.z_extent,
                                                self.eta_extent),
            region_batch=torch.arange(B, device=dev).repeat_interleave(K)[valid.repeat_interleave(K)],
            graph_valid=valid,
            num_skipped=num_skipped,
            context_params=ctx_params,
        )


# -- target cells -----------------------------------------------------------------------------
@dataclass
class TargetCells:
    """Fixed grid of cells tiling every target region in (phi, eta, r); C = R * n_cells.

    Attributes:
        centre: [C, 3] float, (r, phi, eta) of each cell centre (phi wrapped into (-pi, pi]).
        cell_region: [C] long, region index of each cell.
        cell_batch: [C] long, graph index of each cell.
        cell_size: [C, 3] float, (dr, dphi, deta) of each cell.
    """

    centre: Tensor
    cell_region: Tensor
    cell_batch: Tensor
    cell_size: Tensor


def _grid_bounds(params: Tensor, r_extent: Sequence[float], eta_extent: Sequence[float]
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per-region grid bounds: phi centre and half width (at most pi), eta and r ranges with
    unbounded ends replaced by the extents (an upper end never below its lower end)."""
    r_lo, r_hi = _check_extent("r_extent", r_extent)
    e_lo, e_hi = _check_extent("eta_extent", eta_extent)
    c = params[..., 0]
    hw = params[..., 1].clamp(max=math.pi)

    def fill(lo: Tensor, hi: Tensor, ext_lo: float, ext_hi: float) -> tuple[Tensor, Tensor]:
        lo = torch.where(torch.isinf(lo), torch.full_like(lo, ext_lo), lo)
        hi = torch.where(torch.isinf(hi), torch.full_like(hi, ext_hi), hi)
        return lo, torch.maximum(hi, lo)

    e0, e1 = fill(params[..., 6], params[..., 7], e_lo, e_hi)
    r0, r1 = fill(params[..., 2], params[..., 3], r_lo, r_hi)
    return c, hw, e0, e1, r0, r1


def _check_grid(n_phi: int, n_eta: int, n_r: int) -> None:
    if min(int(n_phi), int(n_eta), int(n_r)) < 1:
        raise ValueError(f"cell grid sizes must be >= 1, got n_phi={n_phi}, n_eta={n_eta}, n_r={n_r}")


def tile_regions(masks: RegionMasks, n_phi: int = 4, n_eta: int = 4, n_r: int = 2,
                 r_extent: Sequence[float] = (0.0, 1100.0),
                 eta_extent: Sequence[float] = (-4.0, 4.0)) -> TargetCells:
    """Tile each target region with an ``n_phi x n_eta x n_r`` grid of equal cells.

    The grid spans the region's bounds -- ``phi_center +- phi_half_width`` (all of 2 pi for an
    unbounded wedge), ``[eta_min, eta_max]`` and ``[r_min, r_max]`` with unbounded ends
    replaced by ``eta_extent`` / ``r_extent`` -- independent of where hits fell. Cell
    ``region * n_cells + (i_phi * n_eta + i_eta) * n_r + i_r`` has centre
    ``lo + (i + 1/2) * (hi - lo) / n`` along each axis. ``n_phi = n_eta = n_r = 1`` gives one
    cell per region (one embedding per region).
    """
    _check_grid(n_phi, n_eta, n_r)
    params = masks.region_params
    dev = params.device
    n_cells = n_phi * n_eta * n_r
    c, hw, e0, e1, r0, r1 = (v[:, None] for v in _grid_bounds(params, r_extent, eta_extent))
    idx = torch.arange(n_cells, device=dev)
    i_phi = (idx // (n_eta * n_r)).to(params.dtype)
    i_eta = ((idx // n_r) % n_eta).to(params.dtype)
    i_r = (idx % n_r).to(params.dtype)
    dphi, deta, dr = 2 * hw / n_phi, (e1 - e0) / n_eta, (r1 - r0) / n_r
    centre = torch.stack([r0 + (i_r + 0.5) * dr,
                          wrap_phi(c - hw + (i_phi + 0.5) * dphi),
                          e0 + (i_eta + 0.5) * deta], -1)  # [R, n_cells, 3]
    size = torch.stack([dr, dphi, deta], -1).expand(-1, n_cells, -1)
    R = params.shape[0]
    return TargetCells(
        centre=centre.reshape(-1, 3),
        cell_region=torch.arange(R, device=dev).repeat_interleave(n_cells),
        cell_batch=masks.region_batch.repeat_interleave(n_cells),
        cell_size=size.reshape(-1, 3),
    )


def assign_cells(r: Tensor, phi: Tensor, eta: Tensor, target_region: Tensor,
                 masks: RegionMasks | Tensor, n_phi: int = 4, n_eta: int = 4, n_r: int = 2,
                 r_extent: Sequence[float] = (0.0, 1100.0),
                 eta_extent: Sequence[float] = (-4.0, 4.0)) -> Tensor:
    """Index of the :func:`tile_regions` cell holding each target hit, -1 for other hits.

    Bin along each axis ``i = floor((x - lo) / (hi - lo) * n)`` with
    ``x - lo = wrap(phi - phi_center) + half_width`` for phi, clamped into ``[0, n - 1]`` so a
    hit outside the grid (r beyond ``r_extent``, say) lands in the edge cell.

    Args:
        r, phi, eta: hit coordinates [N].
        target_region: [N] region index per hit, -1 for non-target hits (as in
            :attr:`RegionMasks.target_region`).
        masks: the :class:`RegionMasks` (or its ``region_params`` [R, 8]).
        n_phi, n_eta, n_r, r_extent, eta_extent: as given to :func:`tile_regions`.

    Returns:
        Long tensor [N].
    """
    _check_grid(n_phi, n_eta, n_r)
    params = masks.region_params if isinstance(masks, RegionMasks) else masks
    if target_region.shape != r.shape:
        raise ValueError(f"target_region shape {tuple(target_region.shape)} != hit shape {tuple(r.shape)}")
    is_target = target_region >= 0
    if params.shape[0] == 0:
        return torch.full_like(target_region, -1)
    reg = target_region.clamp_min(0)
    c, hw, e0, e1, r0, r1 = (v[reg] for v in _grid_bounds(params, r_extent, eta_extent))

    def bin_of(offset: Tensor, width: Tensor, n: int) -> Tensor:
        # A zero-width range (a band squeezed at the extent's edge) puts everything in bin 0.
        return (offset / width.clamp_min(1e-12) * n).floor().long().clamp(0, n - 1)

    i_phi = bin_of(wrap_phi(phi - c) + hw, 2 * hw, n_phi)
    i_eta = bin_of(eta - e0, e1 - e0, n_eta)
    i_r = bin_of(r - r0, r1 - r0, n_r)
    cell = target_region * (n_phi * n_eta * n_r) + (i_phi * n_eta + i_eta) * n_r + i_r
    return torch.where(is_target, cell, torch.full_like(cell, -1))
