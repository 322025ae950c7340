"""Exact radius graphs in pure torch (CPU and CUDA), with periodic dimensions and batches.

Built-in backend: a *sorted grid*. The widest open (non-periodic) dimension is the
"sweep" dimension; every other ("outer") dimension is cut into cells of width ``h >= r``,
and a point's outer cells plus its graph index make its *column*. Along the sweep
dimension the columns are cut into fine cells of width ``h / m`` (m <= 3, chosen so the
table below stays within ~32 N entries). Points are sorted by (column, sweep cell), so
any run of consecutive sweep cells of one column is one contiguous slice of the sorted
array, located through a dense table of cell starts (binary search when the grid is
too sparse for a table).

A point meets its candidates in at most ``(3^(D-1) + 1) / 2`` slices: the rest of its own
column up to ``v + h``, and the "positive" half of the neighbouring columns, each searched
only within ``+- sqrt(h^2 - g^2)`` along the sweep, ``g`` being the point's distance to
that column in the outer dimensions (no slice at all when ``g > h``). Each unordered pair
is thus generated exactly once, about 2.8 candidates are tested per pair found in 3D, and
no N x N matrix is ever formed. Candidates are tested with the exact rule

.. math::

    d^2(i, j) = \\sum_k \\delta_k^2 \\le r^2, \\qquad
    \\delta_k = \\begin{cases} c_{ik} - c_{jk} & \\text{open dimension} \\\\
    \\min(|c_{ik} - c_{jk}|,\\ P_k - |c_{ik} - c_{jk}|) & \\text{period } P_k
    \\end{cases}

evaluated in the coordinates' floating dtype (float32 or float64), term by term in
dimension order (minimum image on periodic dimensions): pairs at exactly ``r`` are edges.
The grid is built in float64 with ``h`` a few epsilons wider than ``r`` and margins on
every window, so rounding can never hide a pair; the final test alone decides.

Testing the candidates: on CPU the (point, slice) queries are sorted by slice length and
step ``t`` tests the ``t``-th candidate of every query still running, a prefix of the
queries, so each step is a few vector ops on cache-sized preallocated buffers; the thin
tail is expanded at once. On accelerators all candidates are expanded in a few large
ragged chunks of at most ``chunk_size`` pairs (memory stays bounded either way).

Edge conventions (PyG): ``edge_index[0]`` is the source ``j``, ``edge_index[1]`` the
target ``i`` (``flow="source_to_target"``), and outputs are sorted by
``(edge_index[0], edge_index[1])`` (PyG's coalesced order), so they are deterministic.
"""
from __future__ import annotations

import itertools
import math
from typing import NamedTuple, Sequence

import numpy as np
import torch

__all__ = ["BACKENDS", "available_backends", "radius_graph", "radius_pairs", "pair_distance2"]

BACKENDS = ("auto", "builtin", "torch_cluster", "pyg_lib")

_Pairs = tuple[torch.Tensor, torch.Tensor]

#: Default most candidate pairs expanded at once on CPU (about 50 bytes each at the peak).
DEFAULT_CHUNK_SIZE = 1 << 22
#: Default chunk on accelerators, where a few large kernels beat many small ones.
DEFAULT_CHUNK_SIZE_ACCEL = 1 << 25

#: Cells are widened by this many float epsilons of the compute dtype: a pair accepted by
#: the final float test (whose rounding is a few epsilons) is always inside the grid.
_SLACK_EPS = 64


def _has_torch_cluster() -> bool:
    try:
        import torch_cluster  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def _has_pyg_lib() -> bool:
    try:
        import torch_geometric.typing as pyg_typing
    except ImportError:  # pragma: no cover - torch_geometric is a hard dependency
        return False
    return bool(getattr(pyg_typing, "WITH_RADIUS", False))


def available_backends() -> list[str]:
    """Names of the radius-graph backends usable in this environment ("builtin" always)."""
    out = ["builtin"]
    if _has_torch_cluster():
        out.append("torch_cluster")
    if _has_pyg_lib():
        out.append("pyg_lib")
    return out


# --------------------------------------------------------------------------- validation
def _check_inputs(coords: torch.Tensor, r: float, batch: torch.Tensor | None,
                  periods: Sequence[float | None] | None) -> list[float | None]:
    if not isinstance(coords, torch.Tensor) or coords.dim() != 2:
        shape = tuple(coords.shape) if isinstance(coords, torch.Tensor) else type(coords).__name__
        raise ValueError(f"radius graph: coords must be a 2D tensor [N, D], got {shape}")
    if not coords.is_floating_point():
        raise ValueError(f"radius graph: coords must be floating point, got {coords.dtype}")
    if coords.shape[1] == 0:
        raise ValueError("radius graph: coords has zero dimensions (shape [N, 0])")
    r = float(r)
    if not math.isfinite(r) or r <= 0:
        raise ValueError(f"radius graph: radius r must be finite and > 0, got {r}")
    n, d = coords.shape
    if n and not bool(torch.isfinite(coords).all()):
        bad = int((~torch.isfinite(coords)).any(1).nonzero()[0])
        raise ValueError(f"radius graph: coords row {bad} is not finite: {coords[bad].tolist()}")
    if batch is not None:
        if batch.shape != (n,):
            raise ValueError(f"radius graph: batch must have shape [{n}], got {tuple(batch.shape)}")
        if batch.dtype.is_floating_point or batch.dtype == torch.bool:
            raise ValueError(f"radius graph: batch must be an integer tensor, got {batch.dtype}")
        if n and int(batch.min()) < 0:
            raise ValueError(f"radius graph: batch holds a negative graph index {int(batch.min())}")
        if batch.device != coords.device:
            raise ValueError(f"radius graph: batch is on {batch.device}, coords on {coords.device}")
    if periods is None:
        return [None] * d
    periods = list(periods)
    if len(periods) != d:
        raise ValueError(f"radius graph: {len(periods)} periods given for {d} coordinate dims")
    out: list[float | None] = []
    for k, p in enumerate(periods):
        if p is None:
            out.append(None)
            continue
        p = float(p)
        if not math.isfinite(p) or p <= 0:
            raise ValueError(f"radius graph: period of dim {k} must be finite and > 0, got {p}")
        if n:
            span = float(coords[:, k].max() - coords[:, k].min())
            # float32 phi from atan2 spans 2 pi plus a rounding step: tolerate that much.
            if span > p * (1.0 + 1e-5):
                raise ValueError(f"radius graph: dim {k} spans {span:.6g} > its period {p:.6g}; "
                                 "wrap it into one period first (e.g. phi in (-pi, pi])")
        out.append(p)
    return out


def _compute_dtype(coords: torch.Tensor) -> torch.dtype:
    # Half precision would make the exact test meaningless for typical radii.
    return coords.dtype if coords.dtype in (torch.float32, torch.float64) else torch.float32


def _delta2(a: torch.Tensor, b: torch.Tensor, period: torch.Tensor | None,
            tmp: torch.Tensor | None = None) -> torch.Tensor:
    """``delta**2`` for one dimension, in place in ``a`` (``tmp``: optional scratch buffer).

    The search and :func:`pair_distance2` both go through here so they agree bit for bit;
    separate mul/add (no fused multiply-add) keeps it reproducible by a plain reference.
    """
    a.sub_(b)
    if period is not None:
        a.abs_()
        tmp = torch.sub(period, a) if tmp is None else torch.sub(period, a, out=tmp)
        torch.minimum(a, tmp, out=a)
    return a.mul_(a)


def pair_distance2(coords: torch.Tensor, i: torch.Tensor, j: torch.Tensor,
                   periods: Sequence[float | None] | None = None) -> torch.Tensor:
    """Squared (minimum-image) distance of the pairs ``(i, j)``, exactly as the search tests it.

    Args:
        coords: [N, D] float coordinates.
        i, j: [E] long indices into ``coords``.
        periods: per dimension the period, or None for an open dimension.

    Returns:
        [E] tensor in the compute dtype (float32 or float64): ``sum_k delta_k^2`` summed in
        dimension order, with ``delta_k = min(|d|, P_k - |d|)`` on periodic dimensions.
    """
    dtype = _compute_dtype(coords)
    periods = [None] * coords.shape[1] if periods is None else list(periods)
    d2 = None
    for k in range(coords.shape[1]):
        col = coords[:, k].to(dtype).contiguous()
        p = None if periods[k] is None else torch.tensor(periods[k], dtype=dtype,
                                                        device=coords.device)
        sq = _delta2(col.index_select(0, i), col.index_select(0, j), p)
        d2 = sq if d2 is None else d2.add_(sq)
    return d2


def _nonzero(mask: torch.Tensor) -> torch.Tensor:
    """Indices [K] (int64) of the True entries of a 1-D bool mask, ascending.

    On CPU numpy's ``flatnonzero`` is several times faster than ``torch.nonzero`` (~7x on
    400k entries, one thread, torch 2.13); it shares memory with the returned tensor.
    """
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return mask.nonzero().squeeze(1)


def _r2(r: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    rt = torch.tensor(r, dtype=dtype, device=device)
    return rt * rt


# --------------------------------------------------------------------------- builtin
#: Sweep-dimension cells per radius (at most): a sweep window is rounded out to whole cells,
#: about r / m of slack per slice (m = 3: 2.8 candidates per pair in 3D, m = 1: 3.7).
_SWEEP_CELLS_PER_R = 3
#: Queries still active below which the step loop hands the tail to one ragged expansion.
_TAIL_QUERIES = 8192


def _table_budget(n: int) -> int:
    """Largest dense cell-start table (entries) worth building for n points."""
    return max(32 * n, 1 << 16)


def _order_by_count_desc(count: torch.Tensor) -> torch.Tensor:
    """Permutation sorting small non-negative counts in decreasing order.

    On CPU numpy's stable argsort is a radix sort for int16 keys: several times faster
    than a comparison sort for the ~5 N run lengths sorted here.
    """
    if count.device.type == "cpu" and count.numel() and int(count.max()) < 2 ** 15:
        neg = np.negative(count.numpy().astype(np.int16))
        return torch.from_numpy(np.argsort(neg, kind="stable"))
    return torch.sort(count, descending=True, stable=True).indices


def _check_cells(num: float, dim: int) -> None:
    if num > 2 ** 52:
        raise ValueError(f"radius graph: dim {dim} spans {num:.3g} radii; the radius is too small "
                         "for the coordinate extent")


class _Grid(NamedTuple):
    """Cells of the sorted grid (see the module docstring)."""

    col: torch.Tensor          # [N] column of each point (occupied columns 0..C-1, key order)
    col_keys: torch.Tensor     # [C] sorted column keys (graph, outer cells)
    col_idx: list[torch.Tensor]  # per outer dim: [C] cell index of each column
    col_graph: torch.Tensor    # [C] graph index of each column
    ncell: list[int]           # cells along each outer dim
    width: list[float]         # cell width along each outer dim (>= h)
    offset: list[torch.Tensor]  # per outer dim: [N] distance of each point to its cell's lower edge
    outer: list[int]           # outer dimension numbers
    sweep_val: torch.Tensor    # [N] sweep coordinate minus its minimum (zeros: no sweep dim)
    sweep_width: float         # sweep cell width (h / m; inf without a sweep dim)
    sweep_cell: torch.Tensor   # [N] sweep cell of each point
    nsweep: int                # number of sweep cells


def _grid(coords: torch.Tensor, h: float, batch: torch.Tensor | None,
          periods: list[float | None]) -> _Grid:
    """Assign every point to a column (outer cells + graph) and a sweep cell (float64)."""
    device = coords.device
    n, dim = coords.shape
    c64 = coords.to(torch.float64)
    open_dims = [k for k in range(dim) if periods[k] is None]
    sweep = None
    if open_dims:  # the widest open dimension: fewest columns, longest runs
        ext = (c64[:, open_dims].amax(0) - c64[:, open_dims].amin(0)).tolist()
        sweep = open_dims[int(np.argmax(ext))]
    outer = [k for k in range(dim) if k != sweep]

    cell_idx, ncell, width, offset = [], [], [], []
    for k in outer:
        v = c64[:, k]
        if periods[k] is None:
            v = v - v.min()
            w, m = h, None
        else:
            p = periods[k]
            m = int(p // h)
            if m < 3:  # with 1 or 2 cells the +-1 neighbours coincide: use one cell
                m = 1
            v = torch.remainder(v, p)
            w = p / m
        _check_cells(float(v.max()) / w, k)
        idx = torch.floor(v / w).long()
        if m is None:
            m = int(idx.max()) + 1
        else:
            idx.clamp_(0, m - 1)
        cell_idx.append(idx)
        ncell.append(m)
        width.append(w)
        offset.append((v - idx * w).clamp_(min=0.0))
    num_graphs = int(batch.max()) + 1 if batch is not None else 1
    if num_graphs * math.prod(ncell) >= 2 ** 62:
        raise ValueError(f"radius graph: too many grid cells ({num_graphs} graphs x {ncell}); "
                         "the radius is tiny compared with the coordinate extent")
    key = (batch.long() if batch is not None
           else torch.zeros(n, dtype=torch.long, device=device))
    for idx, m in zip(cell_idx, ncell):
        key = key * m + idx
    ukey, col = torch.unique(key, sorted=True, return_inverse=True)

    if sweep is None:
        sval = torch.zeros(n, dtype=torch.float64, device=device)
        scell = torch.zeros(n, dtype=torch.long, device=device)
        sw, nsweep = math.inf, 1
    else:
        # Finest sweep cells (up to _SWEEP_CELLS_PER_R per radius) whose dense start table
        # stays small: the table costs memory and time in proportion to its size.
        sval = c64[:, sweep] - c64[:, sweep].min()
        span = float(sval.max())
        msw = 1
        for m in range(_SWEEP_CELLS_PER_R, 0, -1):
            if ukey.numel() * (math.floor(span / (h / m)) + 1) <= _table_budget(n):
                msw = m
                break
        sw = h / msw
        _check_cells(span / sw, sweep)
        scell = torch.floor(sval / sw).long()
        nsweep = int(scell.max()) + 1
    # Per occupied column: its per-dim cell indices and graph, decoded from the key.
    rest = ukey.clone()
    col_idx = [torch.empty(0)] * len(outer)
    for t in range(len(outer) - 1, -1, -1):
        col_idx[t] = torch.remainder(rest, ncell[t])
        rest = torch.div(rest, ncell[t], rounding_mode="floor")
    return _Grid(col, ukey, col_idx, rest, ncell, width, offset, outer, sval, sw, scell, nsweep)


def _builtin_pairs(coords: torch.Tensor, r: float, batch: torch.Tensor | None,
                   periods: list[float | None], chunk_size: int) -> torch.Tensor:
    """Every unordered pair within ``r`` once, as original indices, unsorted: [2, M]."""
    device = coords.device
    n, dim = coords.shape
    dtype = _compute_dtype(coords)
    h = r * (1.0 + _SLACK_EPS * torch.finfo(dtype).eps)
    g = _grid(coords, h, batch, periods)
    ncol, nsweep = g.col_keys.numel(), g.nsweep
    # Safety margin (absolute) for the float64 window arithmetic: far above its rounding,
    # far below any radius worth asking for.
    eps = 1e-9 * (float(coords.abs().max()) + h)

    # Sort points by fine cell (column, sweep cell).
    if ncol * nsweep > 2 ** 62:
        raise ValueError(f"radius graph: {ncol} columns x {nsweep} sweep cells overflow int64")
    fine_sorted, perm = torch.sort(g.col * nsweep + g.sweep_cell, stable=True)
    if ncol * nsweep <= _table_budget(n):  # dense table of cell starts: a gather per lookup
        counts = torch.bincount(fine_sorted, minlength=ncol * nsweep)
        table = torch.zeros(ncol * nsweep + 1, dtype=torch.long, device=device)
        torch.cumsum(counts, 0, out=table[1:])

        def cell_start(c: torch.Tensor) -> torch.Tensor:
            return table.index_select(0, c)
    else:  # sparse grid: binary search of the sorted fine-cell ids
        def cell_start(c: torch.Tensor) -> torch.Tensor:
            return torch.searchsorted(fine_sorted, c)

    col_s = g.col.index_select(0, perm)
    sval = g.sweep_val.index_select(0, perm)

    def sweep_cells(half: torch.Tensor | float, v: torch.Tensor) -> _Pairs:
        """Sweep cells [lo, hi) covering [v - half, v + half] (widened by eps)."""
        if nsweep == 1:
            z = torch.zeros_like(v, dtype=torch.long)
            return z, z + 1
        lo = torch.floor((v - half - eps) / g.sweep_width).long().clamp_(0, nsweep - 1)
        hi = torch.floor((v + half + eps) / g.sweep_width).long().clamp_(0, nsweep - 1) + 1
        return lo, hi

    # Own column: the points after this one, up to v + h (each pair counted once).
    own_start = torch.arange(1, n + 1, device=device)
    own_end = cell_start(col_s * nsweep + sweep_cells(h, sval)[1])
    # Positive half of the neighbouring columns, all K offsets at once ([C, K], [N, K]).
    # Along the sweep dimension a neighbour column is searched only within
    # sqrt(h^2 - d^2) of the point, d being the point's distance to that column in the
    # outer dimensions (no query at all when d > h).
    choices = [(-1, 0, 1) if m > 1 else (0,) for m in g.ncell]
    offsets = [o for o in itertools.product(*choices)
               if any(o) and next(x for x in o if x) > 0]
    if offsets:
        off = torch.tensor(offsets, dtype=torch.long, device=device)  # [K, D_outer]
        valid = torch.ones(ncol, len(offsets), dtype=torch.bool, device=device)
        nkey = g.col_graph[:, None]
        d2 = torch.zeros(n, len(offsets), dtype=torch.float64, device=device)
        for t, (idx, m, w) in enumerate(zip(g.col_idx, g.ncell, g.width)):
            j = idx[:, None] + off[:, t]
            if periods[g.outer[t]] is None:
                valid &= (j >= 0) & (j < m)
            else:
                j = torch.remainder(j, m)
            nkey = nkey * m + j
            # Gaps to the lower / upper neighbour column, shrunk by eps (never overestimated).
            ofs = g.offset[t].index_select(0, perm)
            gaps = torch.stack([ofs - eps, torch.zeros_like(ofs), (w - eps) - ofs], 1)
            gaps.clamp_(min=0.0).square_()
            d2 += gaps.index_select(1, off[:, t] + 1)
        pos = torch.searchsorted(g.col_keys, nkey.reshape(-1)).clamp_(max=ncol - 1)
        valid &= (g.col_keys.index_select(0, pos) == nkey.reshape(-1)).view(ncol, -1)
        nbr = torch.where(valid, pos.view(ncol, -1), -1).index_select(0, col_s)  # [N, K]
        ok = (nbr >= 0) & (d2 <= h * h)
        lo, hi = sweep_cells(d2.neg_().add_(h * h).clamp_(min=0.0).sqrt_(), sval[:, None])
        base = nbr.clamp_(min=0) * nsweep
        s = cell_start((base + lo).view(-1)).view(n, -1)
        e = torch.where(ok, cell_start((base + hi).view(-1)).view(n, -1), s)
        start = torch.cat([own_start[:, None], s], 1).view(-1)
        count = (torch.cat([own_end[:, None], e], 1).view(-1) - start).clamp_(min=0)
    else:
        start, count = own_start, (own_end - own_start).clamp_(min=0)
    live = _nonzero(count > 0)
    if live.numel() == 0:
        return torch.zeros(2, 0, dtype=torch.long, device=device)
    count = count.index_select(0, live)
    start = start.index_select(0, live)
    src = torch.div(live, len(offsets) + 1, rounding_mode="floor")  # query -> its point
    del live

    cols = [coords[:, k].to(dtype).index_select(0, perm).contiguous() for k in range(dim)]
    per = [None if periods[k] is None else torch.tensor(periods[k], dtype=dtype, device=device)
           for k in range(dim)]
    r2 = _r2(r, dtype, device)
    if _use_steps(device):
        return _scan_steps(cols, per, r2, src, start, count, chunk_size, perm)
    return _scan_ragged(cols, per, r2, src, start, count, chunk_size, perm)


def _use_steps(device: torch.device) -> bool:
    """CPU: the step loop (cache-sized vectors); accelerators: large ragged kernels."""
    return device.type == "cpu"


def _test_ragged(cols: list[torch.Tensor], per: list[torch.Tensor | None], r2: torch.Tensor,
                 src: torch.Tensor, start: torch.Tensor, cnt: torch.Tensor, total: int,
                 perm: torch.Tensor) -> _Pairs:
    """Expand the runs ``start[q] .. start[q] + cnt[q] - 1`` of queries q at once and keep
    the pairs within r (as original indices ``perm[position]``)."""
    device = src.device
    excl = torch.cumsum(cnt, 0) - cnt
    a = torch.repeat_interleave(src, cnt, output_size=total)
    b = torch.repeat_interleave(start - excl, cnt, output_size=total)
    b += torch.arange(total, device=device)
    d2 = None
    for col, p in zip(cols, per):
        sq = _delta2(col.index_select(0, b), col.index_select(0, a), p)
        d2 = sq if d2 is None else d2.add_(sq)
    keep = _nonzero(d2 <= r2)
    return (perm.index_select(0, a.index_select(0, keep)),
            perm.index_select(0, b.index_select(0, keep)))


def _cat_rows(out_a: list[torch.Tensor], out_b: list[torch.Tensor]) -> torch.Tensor:
    """[2, M]: the concatenated ``out_a`` above the concatenated ``out_b`` (one copy)."""
    total = sum(a.numel() for a in out_a)
    out = torch.empty(2, total, dtype=out_a[0].dtype, device=out_a[0].device)
    torch.cat(out_a, out=out[0])
    torch.cat(out_b, out=out[1])
    return out


def _scan_ragged(cols: list[torch.Tensor], per: list[torch.Tensor | None], r2: torch.Tensor,
                 src: torch.Tensor, start: torch.Tensor, count: torch.Tensor, chunk_size: int,
                 perm: torch.Tensor) -> torch.Tensor:
    """Accelerator path: few large kernels, queries cut into chunks of about chunk_size
    candidates (a single longer query is a chunk of its own)."""
    cum = torch.cumsum(count, 0)
    total = int(cum[-1])
    if total <= chunk_size:
        return torch.stack(_test_ragged(cols, per, r2, src, start, count, total, perm))
    cum = cum.cpu()
    marks = torch.arange(chunk_size, max(total, chunk_size), chunk_size)
    cuts = sorted({0, count.numel(), *torch.searchsorted(cum, marks, right=True).tolist()})
    out_a, out_b = [], []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        tot = int(cum[hi - 1]) - (int(cum[lo - 1]) if lo else 0)
        a, b = _test_ragged(cols, per, r2, src[lo:hi], start[lo:hi], count[lo:hi], tot, perm)
        out_a.append(a)
        out_b.append(b)
    return _cat_rows(out_a, out_b)


def _scan_steps(cols: list[torch.Tensor], per: list[torch.Tensor | None], r2: torch.Tensor,
                src: torch.Tensor, start: torch.Tensor, count: torch.Tensor, chunk_size: int,
                perm: torch.Tensor) -> torch.Tensor:
    """CPU path: queries sorted by decreasing run length; step t tests the t-th candidate
    of every query still running (a prefix), so each step is a handful of cache-friendly
    vector ops on preallocated buffers. The thin tail (few long runs) is expanded at once."""
    device = src.device
    order = _order_by_count_desc(count)
    count = count.index_select(0, order)
    start = start.index_select(0, order)
    src = src.index_select(0, order)
    qcols = [c.index_select(0, src) for c in cols]
    perm_src = perm.index_select(0, src)
    nq = count.numel()
    # m_t = number of queries with count > t; rem_t = candidates left from step t on.
    hist = torch.bincount(count)
    m_steps = torch.flip(torch.cumsum(torch.flip(hist, (0,)), 0), (0,))[1:]
    rem = torch.flip(torch.cumsum(torch.flip(m_steps, (0,)), 0), (0,))
    m_list = m_steps.tolist()
    rem_list = rem.tolist()
    dst_buf = torch.empty(nq, dtype=torch.long, device=device)
    d2_buf = torch.empty(nq, dtype=cols[0].dtype, device=device)
    sq_buf = torch.empty(nq, dtype=cols[0].dtype, device=device)
    tmp_buf = torch.empty(nq, dtype=cols[0].dtype, device=device)
    out_a: list[torch.Tensor] = []
    out_b: list[torch.Tensor] = []
    for t, m in enumerate(m_list):
        if m < _TAIL_QUERIES and rem_list[t] <= chunk_size and t + 1 < len(m_list):
            a, b = _test_ragged(cols, per, r2, src[:m], start[:m] + t, count[:m] - t,
                                rem_list[t], perm)
            out_a.append(a)
            out_b.append(b)
            break
        dst = torch.add(start[:m], t, out=dst_buf[:m])
        d2 = d2_buf[:m]
        sq = sq_buf[:m]
        tmp = tmp_buf[:m]
        for k, (col, p) in enumerate(zip(cols, per)):
            if k == 0:
                _delta2(torch.index_select(col, 0, dst, out=d2), qcols[k][:m], p, tmp)
            else:
                d2.add_(_delta2(torch.index_select(col, 0, dst, out=sq), qcols[k][:m], p, tmp))
        keep = _nonzero(d2 <= r2)
        out_a.append(perm_src[:m].index_select(0, keep))
        out_b.append(perm.index_select(0, dst.index_select(0, keep)))
    return _cat_rows(out_a, out_b)


# --------------------------------------------------------------------------- compiled
def _compiled_pairs(coords: torch.Tensor, r: float, batch: torch.Tensor | None,
                    backend: str) -> torch.Tensor:
    """Pairs from torch_cluster / pyg_lib, queried with a slightly larger radius (their tie
    convention at distance == r is not ours) and then filtered by the exact test."""
    n = coords.shape[0]
    dtype = _compute_dtype(coords)
    r_query = r * (1.0 + _SLACK_EPS * torch.finfo(dtype).eps)
    x = coords.to(dtype)
    order = None
    if batch is not None and not bool((batch[1:] >= batch[:-1]).all()):
        # Both libraries expect the points of each graph to be contiguous.
        batch, order = torch.sort(batch, stable=True)
        x = x[order]
    if backend == "torch_cluster":
        import torch_cluster

        ei = torch_cluster.radius_graph(x, r_query, batch=batch, loop=False,
                                        max_num_neighbors=max(n, 1))
    elif backend == "pyg_lib":
        ptr = None
        if batch is not None:
            ptr = torch.zeros(int(batch.max()) + 2, dtype=torch.long, device=x.device)
            ptr[1:] = torch.cumsum(torch.bincount(batch, minlength=int(batch.max()) + 1), 0)
        ei = torch.ops.pyg.radius(x, x, ptr, ptr, r_query, max(n, 1), 1, True)
    else:  # pragma: no cover - guarded by the caller
        raise ValueError(f"unknown compiled backend {backend!r}")
    i, j = ei[0], ei[1]
    if order is not None:
        i, j = order[i], order[j]
    once = i < j
    i, j = i[once], j[once]
    keep = pair_distance2(coords, i, j) <= _r2(r, dtype, coords.device)
    return torch.stack([i[keep], j[keep]])


# --------------------------------------------------------------------------- ordering
def _sort_keys(keys: torch.Tensor) -> torch.Tensor:
    """Sort an int64 key vector (non-negative keys: edge keys and the like).

    On CPU torch sorts a 1-D integer tensor with a radix sort (fbgemm): ~2.3x numpy's
    ``ndarray.sort`` on 1-11 M edge keys (34 bits) on one thread (torch 2.13, numpy 2.4).
    """
    return torch.sort(keys).values


def _key_bits(n: int) -> int:
    bits = max(1, (n - 1).bit_length())
    if 2 * bits > 62:
        raise ValueError(f"radius graph: {n} points are too many for int64 edge keys")
    return bits


def _pack(i: torch.Tensor, j: torch.Tensor, bits: int,
          out: torch.Tensor | None = None) -> torch.Tensor:
    """Edge key ``(i << bits) | j``: sorting keys sorts edges by (i, j)."""
    if out is None:
        return torch.bitwise_left_shift(i, bits).bitwise_or_(j)
    return torch.bitwise_left_shift(i, bits, out=out).bitwise_or_(j)


def _unpack(keys: torch.Tensor, bits: int) -> torch.Tensor:
    out = torch.empty(2, keys.numel(), dtype=torch.long, device=keys.device)
    torch.bitwise_right_shift(keys, bits, out=out[0])
    torch.bitwise_and(keys, (1 << bits) - 1, out=out[1])
    return out


def _resolve_backend(backend: str, periods: list[float | None]) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"radius graph: unknown backend {backend!r}; choose from {BACKENDS}")
    periodic = any(p is not None for p in periods)
    if backend == "auto":
        if periodic:
            return "builtin"
        if _has_torch_cluster():
            return "torch_cluster"
        if _has_pyg_lib():
            return "pyg_lib"
        return "builtin"
    if backend != "builtin":
        if periodic:
            raise ValueError(f"radius graph: backend {backend!r} has no periodic dimensions; "
                             "use backend='builtin'")
        if backend not in available_backends():
            raise ImportError(f"radius graph: backend {backend!r} is not installed")
    return backend


def _pairs(coords: torch.Tensor, r: float, batch: torch.Tensor | None,
           periods: Sequence[float | None] | None, backend: str,
           chunk_size: int | None) -> tuple[torch.Tensor, list[float | None]]:
    """Every pair within ``r`` once, [2, M] in no particular orientation or order."""
    periods = _check_inputs(coords, r, batch, periods)
    if chunk_size is None:
        chunk_size = DEFAULT_CHUNK_SIZE if coords.device.type == "cpu" else DEFAULT_CHUNK_SIZE_ACCEL
    if chunk_size < 1:
        raise ValueError(f"radius graph: chunk_size must be >= 1, got {chunk_size}")
    backend = _resolve_backend(backend, periods)
    if coords.shape[0] < 2:
        return torch.zeros(2, 0, dtype=torch.long, device=coords.device), periods
    if backend == "builtin":
        ij = _builtin_pairs(coords, float(r), batch, periods, int(chunk_size))
    else:
        ij = _compiled_pairs(coords, float(r), batch, backend)
    return ij, periods


def radius_pairs(coords: torch.Tensor, r: float, *, batch: torch.Tensor | None = None,
                 periods: Sequence[float | None] | None = None, backend: str = "auto",
                 chunk_size: int | None = None, sort: bool = True) -> torch.Tensor:
    """Every unordered pair of points within distance ``r``, once (like cKDTree.query_pairs).

    Args:
        coords: [N, D] float coordinates (the frame of :mod:`gnn_jepa.graph.frames`).
        r: radius; a pair is kept when its squared distance (module docstring) is <= r^2.
        batch: optional [N] graph index; points of different graphs are never paired.
        periods: per dimension the period (e.g. 2 pi for phi) or None; periodic dimensions
            use the minimum image distance and must span at most one period.
        backend: "builtin", "torch_cluster", "pyg_lib" or "auto" (see :func:`radius_graph`).
        chunk_size: most candidate pairs expanded at once (bounds memory: ~50 bytes each);
            None: 2**22 on CPU, 2**25 on accelerators.
        sort: False skips the orientation and the sort: each pair still appears once, as
            ``(i, j)`` or ``(j, i)``, in an unspecified (but deterministic) order.

    Returns:
        [2, M] long tensor on coords' device with ``row < col``, sorted by (row, col)
        (``sort=True``).
    """
    ij, _ = _pairs(coords, r, batch, periods, backend, chunk_size)
    n = coords.shape[0]
    if ij.shape[1] == 0 or not sort:
        return ij
    i, j = ij[0], ij[1]
    bits = _key_bits(n)
    lo = torch.minimum(i, j)
    torch.maximum(i, j, out=j)
    return _unpack(_sort_keys(lo.bitwise_left_shift_(bits).bitwise_or_(j)), bits)


def radius_graph(coords: torch.Tensor, r: float, *, batch: torch.Tensor | None = None,
                 periods: Sequence[float | None] | None = None,
                 max_num_neighbors: int | None = None, loop: bool = False,
                 undirected: bool = True, backend: str = "auto",
                 chunk_size: int | None = None) -> torch.Tensor:
    """Exact radius graph: an edge for every pair of points within distance ``r``.

    Semantics:
        * Without ``max_num_neighbors`` the graph is symmetric: each pair {i, j} within
          ``r`` appears as both ``(i, j)`` and ``(j, i)``, which is what PyG message passing
          needs; ``undirected`` then changes nothing.
        * With ``max_num_neighbors = k`` every node ``i`` keeps its ``k`` nearest neighbours
          (ties by distance, then by neighbour index). ``undirected=True`` keeps a pair when
          either end keeps it and returns both directions (symmetric graph);
          ``undirected=False`` returns only the kept ``(neighbour j -> centre i)`` edges, so
          ``edge_index[1] == i`` receives at most ``k`` messages (PyG ``radius_graph``'s
          ``flow="source_to_target"``; unlike PyG the kept neighbours are the nearest ones).
        * ``loop=True`` adds ``(i, i)`` for every node (never counted in ``k``).

    Args:
        coords: [N, D] float coordinates.
        r: radius (inclusive: distance == r is an edge).
        batch: optional [N] graph index of each point; graphs are never connected.
        periods: per dimension the period or None (see :func:`radius_pairs`).
        max_num_neighbors: optional per-node cap ``k >= 1`` (nearest kept).
        loop: add self-loops.
        undirected: see Semantics.
        backend: "builtin" (pure torch sorted grid), "torch_cluster" or "pyg_lib" (when
            importable; no periodic dims), or "auto": builtin unless all dims are open and a
            compiled backend is installed. Every backend gives the identical edge set.
        chunk_size: see :func:`radius_pairs`.

    Returns:
        [2, E] long tensor on coords' device, sorted by (edge_index[0], edge_index[1]).
    """
    if max_num_neighbors is not None and int(max_num_neighbors) < 1:
        raise ValueError(f"radius graph: max_num_neighbors must be >= 1 or None, "
                         f"got {max_num_neighbors}")
    ij, periods = _pairs(coords, r, batch, periods, backend, chunk_size)
    i, j = ij[0], ij[1]
    n = coords.shape[0]
    device = coords.device
    bits = _key_bits(max(n, 1))
    m = i.numel()
    if max_num_neighbors is None:
        extra = n if loop else 0
        keys = torch.empty(2 * m + extra, dtype=torch.long, device=device)
        _pack(i, j, bits, out=keys[:m])
        _pack(j, i, bits, out=keys[m:2 * m])
        if loop:
            ar = torch.arange(n, device=device)
            _pack(ar, ar, bits, out=keys[2 * m:])
        return _unpack(_sort_keys(keys), bits)

    k = int(max_num_neighbors)
    # Both directions sorted by (centre, neighbour), then a stable sort by (centre,
    # distance) leaves the neighbour index as the tie-break.
    keys = torch.empty(2 * m, dtype=torch.long, device=device)
    _pack(i, j, bits, out=keys[:m])
    _pack(j, i, bits, out=keys[m:])
    row, col = _unpack(_sort_keys(keys), bits)
    d2 = pair_distance2(coords, row, col, periods)
    if d2.dtype == torch.float32 and bits <= 31:
        # d2 >= 0, so its IEEE bits order like its values: one sort of (centre, d2 bits).
        dkey = torch.bitwise_left_shift(row, 32).bitwise_or_(d2.view(torch.int32).long())
        o = torch.sort(dkey, stable=True).indices
    else:
        o = torch.sort(d2, stable=True).indices
        o = o[torch.sort(row[o], stable=True).indices]
    row, col = row[o], col[o]
    deg = torch.bincount(row, minlength=n)
    first = torch.cumsum(deg, 0) - deg
    rank = torch.arange(row.numel(), device=device) - first[row]
    keep = rank < k
    row, col = row[keep], col[keep]
    if undirected:
        keys = torch.unique(torch.cat([_pack(row, col, bits), _pack(col, row, bits)]))
    else:
        keys = _pack(col, row, bits)  # neighbour -> centre
    if loop:
        ar = torch.arange(n, device=device)
        keys = torch.cat([keys, _pack(ar, ar, bits)])
    if keys.numel() == 0:
        return torch.zeros(2, 0, dtype=torch.long, device=device)
    return _unpack(_sort_keys(keys), bits)
