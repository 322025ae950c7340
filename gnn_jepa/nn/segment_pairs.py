r"""Edge classification over segment pairs: does this segment continue that one?

A true track segment is recognised by what comes before and after it: the next segment of a
helix turns by a small, steady angle in the transverse plane and keeps its slope in r-z. The
per-edge MLP and the interaction head judge an edge from its two hits and averaged neighbours;
this head lets each segment exchange learned messages with its *continuations* through the shared
hit, with the change of direction between them as input, so "do these two segments continue each
other" is computed explicitly.

Segments. The graph's edges (either or both directions) are merged into oriented segments
:math:`s = (a \to b)`, from the hit nearer the origin to the farther one (the order the
walkthrough builder uses). Both directions of an edge get the segment's one score.

Segment pairs. Two segments :math:`s = (a \to b)` and :math:`t = (b \to c)` sharing hit
:math:`b` form a pair (a triplet of hits). All pairs through a hit are ``in x out`` of its
degrees, so only the ``k`` pairs of smallest kink are kept for every segment, as successor and as
predecessor: the number of pairs stays below :math:`2 k S`, linear in segments. The kink of a
pair is :math:`|\Delta\beta| + |\Delta\alpha|`, with :math:`\beta` the transverse turning angle
between the two segments and :math:`\alpha` their angle in the (r, z) plane.

Rounds (``rounds`` of them, hidden width ``hidden``):

.. math::
    m_{st} &= \mathrm{MLP}_p\big([e_s, e_t, g_{st}]\big) \\
    e_s &\leftarrow e_s + \mathrm{MLP}_e\big([\mathrm{LN}(e_s), n_a, n_b,
        \max_{t \in \mathrm{succ}(s)} m_{st}, \overline{m}_{\mathrm{succ}(s)},
        \max_{r \in \mathrm{pred}(s)} m_{rs}, \overline{m}_{\mathrm{pred}(s)}]\big) \\
    n_v &\leftarrow n_v + \mathrm{MLP}_n\big([\mathrm{LN}(n_v), \overline{e}_{\to v},
        \overline{e}_{v \to}]\big)

where :math:`g_{st}` are the pair's geometric features (turning angles, their difference of
curvature, lengths), given at every round, and the hit states start from the encoder's
embedding and the hit's own position; the hit update runs between rounds (not after the
last). The score of segment :math:`s` is :math:`w^\top \mathrm{LN}(e_s) + b`. Cost: linear in
hits, segments and kept pairs per round, plus one pass over all pairs through each hit to
choose the kept ones. The first Linear of each MLP is applied to segment and hit rows before
they are gathered to pairs and segments (the same map on fewer rows). The pair messages and
their four aggregations are one autograd Function (:func:`pair_messages`) that keeps no
pair-sized float tensor for backward (only boolean winner masks of the maxima) and recomputes
the messages there, a block of pairs at a time: at 1,000 particles (196k pairs) this halves
the memory the head keeps and shortens the step. Tests keep values and gradients equal to the
direct concatenate-then-scatter evaluation.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gnn_jepa.geometry import wrap_phi
from gnn_jepa.nn.layers import MessagePassingHead, mlp

#: Geometric features of one segment (see :func:`segment_geometry`).
SEGMENT_FEATURES = 7
#: Geometric features of one segment pair (see :func:`pair_geometry`).
PAIR_FEATURES = 6


def oriented_segments(pos: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
    """Merge directed edges into segments oriented away from the origin.

    Returns:
        ``segments`` [2, S] (inner hit, outer hit), unique, and ``edge_segment`` [E]: the segment
        of every edge (both directions of a pair map to the same one). Ties in distance are
        broken by hit index, so the orientation is always defined.
    """
    key = torch.linalg.vector_norm(pos, dim=1)
    src, dst = edge_index
    n = pos.shape[0]
    # order by (distance, index): a strict total order on hits
    rank = torch.empty(n, dtype=torch.long, device=pos.device)
    rank[torch.argsort(key, stable=True)] = torch.arange(n, device=pos.device)
    swap = rank[src] > rank[dst]
    inner = torch.where(swap, dst, src)
    outer = torch.where(swap, src, dst)
    code = inner * n + outer
    uniq, edge_segment = torch.unique(code, return_inverse=True)
    return torch.stack([uniq // n, uniq % n]), edge_segment


def segment_geometry(pos: Tensor, segments: Tensor) -> Tensor:
    """[S, 7] O(1)-scaled features of each oriented segment (:func:`segment_features` of its
    inner and outer hit)."""
    return segment_features(pos[segments[0]], pos[segments[1]])


def segment_features(a: Tensor, b: Tensor) -> Tensor:
    """[S, 7] O(1)-scaled features of segments from hits ``a`` to ``b`` ([S, 3], mm):
    transverse length / 100 mm, dz / 100 mm, wrapped dphi / 0.1, d(phi)/dr * 100 mm, dz/dr,
    inner r / 1000 mm, inner z / 1000 mm."""
    ra, rb = torch.hypot(a[:, 0], a[:, 1]), torch.hypot(b[:, 0], b[:, 1])
    dphi = wrap_phi(torch.atan2(b[:, 1], b[:, 0]) - torch.atan2(a[:, 1], a[:, 0]))
    dxy = torch.hypot(b[:, 0] - a[:, 0], b[:, 1] - a[:, 1])
    dz = b[:, 2] - a[:, 2]
    dr = (rb - ra).abs().clamp_min(1.0)
    return torch.stack([dxy / 100.0, dz / 100.0, dphi / 0.1, dphi / dr * 100.0, dz / dr,
                        ra / 1000.0, a[:, 2] / 1000.0], dim=1)


def _turn(u: Tensor, v: Tensor) -> Tensor:
    """Signed angle from 2-D vectors ``u`` to ``v`` (rows)."""
    cross = u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]
    dot = (u * v).sum(1)
    return torch.atan2(cross, dot)


def chain_geometry(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """[P, 6] features of hit chains ``a -> b -> c`` ([P, 3] positions each, mm): transverse
    turning angle / 0.1, its change per transverse length (curvature x 100 mm), (r, z) angle
    change / 0.1, the two transverse lengths / 100 mm, and the kink
    :math:`|\\Delta\\beta| + |\\Delta\\alpha|` / 0.1."""
    u, v = (b - a)[:, :2], (c - b)[:, :2]
    beta = _turn(u, v)
    lu, lv = u.norm(dim=1), v.norm(dim=1)
    ra, rb, rc = (torch.hypot(p[:, 0], p[:, 1]) for p in (a, b, c))
    alpha1 = torch.atan2(b[:, 2] - a[:, 2], rb - ra)
    alpha2 = torch.atan2(c[:, 2] - b[:, 2], rc - rb)
    dalpha = wrap_phi(alpha2 - alpha1)
    curvature = 2.0 * beta / (lu + lv).clamp_min(1e-3)
    kink = beta.abs() + dalpha.abs()
    return torch.stack([beta / 0.1, curvature * 100.0, dalpha / 0.1, lu / 100.0, lv / 100.0,
                        kink / 0.1], dim=1)


def pair_geometry(pos: Tensor, segments: Tensor, first: Tensor, second: Tensor) -> Tensor:
    """[P, 6] :func:`chain_geometry` of segment pairs ``(first[p], second[p])``, ``first``'s
    outer hit being ``second``'s inner hit (the chain inner -> shared -> outer hit)."""
    return chain_geometry(pos[segments[0, first]], pos[segments[1, first]], pos[segments[1, second]])


def _group_pairs(left: Tensor, right: Tensor) -> tuple[Tensor, Tensor]:
    """All (i, j) with ``left[i] == right[j]``: the pairs of items sharing a key."""
    if left.numel() == 0 or right.numel() == 0:
        empty = torch.empty(0, dtype=torch.long, device=left.device)
        return empty, empty
    n = int(max(left.max(), right.max())) + 1
    lo = torch.argsort(left, stable=True)
    ro = torch.argsort(right, stable=True)
    rc = torch.bincount(right, minlength=n)
    rstart = torch.cumsum(rc, 0) - rc
    per_left = rc[left[lo]]  # partners of each (sorted) left item
    i = lo.repeat_interleave(per_left)
    base = rstart[left[lo]].repeat_interleave(per_left)
    offs = torch.arange(int(per_left.sum()), device=left.device) - \
        torch.repeat_interleave(torch.cumsum(per_left, 0) - per_left, per_left)
    j = ro[base + offs]
    return i, j


def _smallest_k(group: Tensor, value: Tensor, k: int) -> Tensor:
    """Mask of the ``k`` items of smallest ``value`` (>= 0) within each ``group``: one sort by
    ``group + value / (1 + value)`` (ties keep the items' order)."""
    if group.numel() == 0:
        return torch.zeros(0, dtype=torch.bool, device=group.device)
    key = group.double() + (value / (1.0 + value)).double()
    order = torch.argsort(key, stable=True)
    g = group[order]
    first = torch.ones_like(g, dtype=torch.bool)
    first[1:] = g[1:] != g[:-1]
    idx = torch.arange(g.numel(), device=g.device)
    start = torch.cummax(torch.where(first, idx, torch.zeros_like(idx)), 0).values
    keep = torch.zeros_like(first)
    keep[order] = (idx - start) < k
    return keep


def _directions(pos: Tensor, segments: Tensor) -> tuple[Tensor, Tensor]:
    """Transverse direction angle and (r, z) angle of each oriented segment."""
    a, b = pos[segments[0]], pos[segments[1]]
    phi = torch.atan2(b[:, 1] - a[:, 1], b[:, 0] - a[:, 0])
    alpha = torch.atan2(b[:, 2] - a[:, 2], torch.hypot(b[:, 0], b[:, 1]) - torch.hypot(a[:, 0], a[:, 1]))
    return phi, alpha


def segment_pairs(pos: Tensor, segments: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """The kept segment pairs: ``(first, second, features)``, ``first``'s outer hit being
    ``second``'s inner hit; for each segment its ``k`` successors and ``k`` predecessors of
    smallest kink (the union). The kink of every candidate pair comes from per-segment angles
    (two lookups per pair); :func:`pair_geometry` runs on the kept pairs only."""
    first, second = _group_pairs(segments[1], segments[0])
    if first.numel() == 0:
        return first, second, pos.new_zeros(0, PAIR_FEATURES)
    phi, alpha = _directions(pos, segments)
    kink = wrap_phi(phi[second] - phi[first]).abs() + wrap_phi(alpha[second] - alpha[first]).abs()
    keep = _smallest_k(first, kink, k) | _smallest_k(second, kink, k)
    first, second = first[keep], second[keep]
    return first, second, pair_geometry(pos, segments, first, second)

def _counts(index: Tensor, size: int, like: Tensor) -> tuple[Tensor, int]:
    """[size, 1] number of items per group, at least 1 (the divisor of a mean), and the number
    of non-empty groups."""
    count = torch.bincount(index, minlength=size)
    return count.clamp_min(1).to(like.dtype).unsqueeze(1), int(count.count_nonzero())


def _scatter_sum(src: Tensor, index: Tensor, size: int) -> Tensor:
    """Row sums of ``src`` per group ``index`` ([size, F]; 0 for an empty group)."""
    return src.new_zeros(size, src.shape[1]).index_add_(0, index, src)


class _ScatterMax(torch.autograd.Function):
    """Column-wise group maximum with the gradient of ``scatter_reduce(..., "amax")``: each
    group's gradient goes to its maximal entries, shared evenly by ties. Saves a boolean mask
    of the winners, and tie counts for the (rare) columns that have a tie."""

    @staticmethod
    def forward(ctx, src: Tensor, index: Tensor, size: int, groups: int) -> Tensor:
        best, win, tied, ties = _group_max(src, index, size, groups)
        ctx.save_for_backward(index, win, tied, ties)
        return best

    @staticmethod
    def backward(ctx, grad: Tensor):
        index, win, tied, ties = ctx.saved_tensors
        return _max_share(grad, index, win, tied, ties), None, None, None


def _group_max(src: Tensor, index: Tensor, size: int, groups: int
               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Column-wise group maximum ([size, F], 0 for an empty group), the boolean winner mask
    of ``src``'s entries, the tied columns and their per-group winner counts."""
    best = src.new_full((size, src.shape[1]), -math.inf).scatter_reduce_(
        0, index.unsqueeze(1).expand_as(src), src, "amax")
    win = src == best.index_select(0, index)
    # one winner per non-empty group and column, unless two entries tie for the maximum:
    # one host sync per call checks the total (a per-column count costs ~15x more), and
    # only then are the tied columns found and counted
    tied = index.new_zeros(0)
    ties = torch.zeros(size, 0, dtype=torch.float32, device=src.device)
    if int(torch.count_nonzero(win)) != groups * src.shape[1]:
        # exact integer counts (a bf16 product would round counts above 256)
        tied = torch.nonzero(torch.count_nonzero(win, dim=0) != groups).flatten()
        ties = torch.zeros(size, tied.numel(), dtype=torch.float32, device=src.device)
        ties.index_add_(0, index, win[:, tied].to(torch.float32))
    return best.masked_fill_(torch.isneginf(best), 0.0), win, tied, ties


def _max_share(grad: Tensor, index: Tensor, win: Tensor, tied: Tensor, ties: Tensor) -> Tensor:
    """Each entry's share of its group maximum's gradient ``grad`` ([size, F]): the whole of it
    for a winner, an even split among tied winners, 0 for the others."""
    out = grad.index_select(0, index).masked_fill_(~win, 0.0)
    if tied.numel():
        out[:, tied] = (out[:, tied].float() / ties.index_select(0, index).clamp_min(1.0)
                        ).to(out.dtype)
    return out


def _scatter_max(src: Tensor, index: Tensor, size: int, groups: int) -> Tensor:
    """Column-wise maximum of the rows of ``src`` per group ``index`` ([size, F]; 0 for an
    empty group), with the gradient of ``torch.scatter_reduce(..., "amax")`` (shared evenly by
    tied maxima) at a fraction of its cost and memory (:class:`_ScatterMax`). ``groups``: the
    number of non-empty groups (one host sync per call checks for ties)."""
    return _ScatterMax.apply(src, index, size, groups)


#: Pairs per chunk of :func:`pair_messages` (a [chunk, hidden] block at a time).
PAIR_CHUNK = 1 << 16


class _PairMessages(torch.autograd.Function):
    """Messages of segment pairs and their four aggregations, without keeping pair-sized
    float tensors for backward.

    Forward: :math:`z = a_{f} + b_{s} + W_g g + c`, :math:`m = W_2\,\mathrm{GELU}(z) + d`,
    then the group maxima and sums of ``m`` over ``first`` (a segment's successors) and
    ``second`` (its predecessors). Saved: the inputs, the two boolean winner masks of the
    maxima and tie counts for the (rare) columns that tie. Backward recomputes ``z`` chunk by
    chunk of pairs. Each maximum sends its gradient to its maximal entries, shared evenly by
    ties (the gradient of ``scatter_reduce(..., "amax")``).
    """

    @staticmethod
    def forward(ctx, seg, w_a, w_b, geo, w_geo, bias1, w2, bias2, first, second, g_first,
                g_second, chunk):
        if ctx.needs_input_grad[3]:
            raise ValueError("pair_messages: the pair geometry must not require a gradient")
        ctx.in_dtypes = [t.dtype for t in (seg, w_a, w_b, w_geo, bias1, w2, bias2)]
        size = seg.shape[0]
        with torch.autocast(seg.device.type, enabled=_lowp(seg)):
            a, b = seg @ w_a.t(), seg @ w_b.t()
        dt = a.dtype
        with torch.autocast(seg.device.type, enabled=False):
            b, geo, w_geo, bias1, w2, bias2 = (t.to(dt) for t in (b, geo, w_geo, bias1, w2, bias2))
            z = _PairMessages._pre(a, b, geo, w_geo, bias1, first, second)
            m = torch.addmm(bias2, nn.functional.gelu(z), w2.t())
            del z
            outs, saved = [], []
            for ix, groups in ((first, g_first), (second, g_second)):
                best, win, tied, ties = _group_max(m, ix, size, groups)
                saved += [win, tied, ties]
                outs += [best, m.new_zeros(size, m.shape[1]).index_add_(0, ix, m)]
        # the segment states, not their two [S, H] maps (the layer norm after keeps them anyway)
        ctx.save_for_backward(seg, w_a, w_b, geo, w_geo, bias1, w2, bias2, first, second, *saved)
        ctx.chunk = chunk
        return tuple(outs)

    @staticmethod
    def _pre(a, b, geo, w_geo, bias1, f, s) -> Tensor:
        """``z`` of a block of pairs (the pre-activation of the message MLP)."""
        z = a.index_select(0, f)
        return z.add_(b.index_select(0, s)).addmm_(geo, w_geo.t()).add_(bias1)

    @staticmethod
    def backward(ctx, g_max_f, g_sum_f, g_max_s, g_sum_s):
        (seg, w_a, w_b, geo, w_geo, bias1, w2, bias2, first, second,
         win_f, tied_f, ties_f, win_s, tied_s, ties_s) = ctx.saved_tensors
        dt = g_max_f.dtype
        with torch.autocast(seg.device.type, enabled=False):
            seg_c, w_ab = seg.to(dt), torch.cat([w_a, w_b]).to(dt)
            a, b = (seg_c @ w_ab.t()).split(w_a.shape[0], dim=1)
            geo, w_geo, bias1, w2, bias2 = (t.to(dt) for t in (geo, w_geo, bias1, w2, bias2))
            g_max_f, g_sum_f, g_max_s, g_sum_s = (g.to(dt) for g in (g_max_f, g_sum_f, g_max_s, g_sum_s))
            grads = [torch.zeros_like(t) for t in (a, b, w_geo, bias1, w2, bias2)]
            for lo in range(0, first.numel(), ctx.chunk):
                sl = slice(lo, lo + ctx.chunk)
                f, s, geo_c = first[sl], second[sl], geo[sl]
                z = _PairMessages._pre(a, b, geo_c, w_geo, bias1, f, s)
                gm = g_sum_f.index_select(0, f).add_(g_sum_s.index_select(0, s))
                gm.add_(_max_share(g_max_f, f, win_f[sl], tied_f, ties_f))
                gm.add_(_max_share(g_max_s, s, win_s[sl], tied_s, ties_s))
                grads[4].addmm_(gm.t(), nn.functional.gelu(z))
                grads[5].add_(gm.sum(0))
                gz = torch.ops.aten.gelu_backward(gm @ w2, z)
                grads[0].index_add_(0, f, gz)
                grads[1].index_add_(0, s, gz)
                grads[2].add_(torch.mm(geo_c.t(), gz).t())
                grads[3].add_(gz.sum(0))
            g_ab = torch.cat([grads[0], grads[1]], 1)
            g_seg = g_ab @ w_ab
            g_w = g_ab.t() @ seg_c
        g_wa, g_wb = g_w.split(w_a.shape[0])
        out = [g_seg, g_wa, g_wb, None, grads[2], grads[3], grads[4], grads[5]]
        out = [g if g is None else g.to(d) for g, d in zip(out, ctx.in_dtypes[:3] + [None] + ctx.in_dtypes[3:])]
        return (*out, None, None, None, None, None)


def pair_messages(net: nn.Sequential, seg: Tensor, first: Tensor, second: Tensor, geo: Tensor,
                  g_first: int, g_second: int, chunk: int = PAIR_CHUNK) -> tuple[Tensor, ...]:
    """Column-wise maxima and sums of the pair messages
    :math:`m_p = \mathrm{net}([e_{f_p}, e_{s_p}, g_p])` over each segment's pairs as ``first``
    and as ``second``: ``(max over first, sum over first, max over second, sum over second)``,
    [S, H] each (0 for a segment without pairs). ``net`` is an :func:`mlp`; its first Linear is
    split by input block and applied to the segment rows before the gather. Values and
    gradients equal those of the direct formula (``scatter_reduce`` amax, ties sharing), at a
    memory cost of [S, H] tensors and one chunk of pairs (:class:`_PairMessages`); ``g_first``,
    ``g_second``: the numbers of non-empty groups."""
    first_layer, _, last = net
    hid = seg.shape[1]
    w_a, w_b, w_geo = first_layer.weight.split([hid, hid, geo.shape[1]], dim=1)
    return _PairMessages.apply(seg, w_a, w_b, geo, w_geo, first_layer.bias, last.weight, last.bias,
                               first, second, g_first, g_second, chunk)


def _lowp(x: Tensor) -> bool:
    """Whether autocast is on for ``x``'s device (the Function's matmuls then follow it)."""
    return torch.is_autocast_enabled(x.device.type)


def _mlp_of_sum(net: nn.Sequential, parts: list[tuple[Tensor, Tensor | None]]) -> Tensor:
    """``net(cat([x[idx] for x, idx in parts], 1))`` for an :func:`mlp` ``net``, computed
    without building the concatenation: its first Linear is split by input block and each
    block is applied to ``x`` before the gather by ``idx`` (``None``: rows as they are). The
    sum is accumulated in place (one output-sized buffer; the bias added on the first
    gathered block's rows), since memory traffic, not arithmetic, bounds these sizes."""
    first, act, last = net
    blocks = first.weight.split([x.shape[1] for x, _ in parts], dim=1)
    out = None
    bias_added = False
    for (x, idx), w in sorted(zip(parts, blocks), key=lambda pw: pw[0][1] is None):
        if idx is not None:
            y = x @ w.t()
            if not bias_added:
                y = y + first.bias.to(y.dtype)
                bias_added = True
            y = y.index_select(0, idx)
            out = y if out is None else out.add_(y.to(out.dtype))
        elif out is None:
            out = torch.addmm(first.bias, x, w.t())
            bias_added = True
        elif out.dtype == x.dtype == w.dtype:
            out = out.addmm_(x, w.t())
        else:  # mixed precision: autocast applies to addmm, never to an in-place op
            out = torch.addmm(out, x, w.t())
    return last(act(out))


class SegmentPairEdgeHead(MessagePassingHead):
    """Scores edges by message passing between segments and their continuations (module doc).

    Args:
        d_embedding: hit embedding size (the encoder's output).
        hidden: width of every state and MLP.
        rounds: message-passing rounds.
        pairs_per_segment: ``k``, continuations kept per segment and direction.
    """

    def __init__(self, d_embedding: int, hidden: int = 64, rounds: int = 4, pairs_per_segment: int = 4):
        super().__init__()
        if hidden <= 0 or rounds < 1 or pairs_per_segment < 1:
            raise ValueError("SegmentPairEdgeHead needs hidden > 0, rounds >= 1, pairs_per_segment "
                             f">= 1, got {hidden}, {rounds}, {pairs_per_segment}")
        self.d_embedding, self.hidden, self.rounds, self.k = d_embedding, hidden, rounds, pairs_per_segment
        self.node_in = mlp(d_embedding + 4, hidden, hidden)
        self.segment_in = mlp(2 * hidden + SEGMENT_FEATURES, hidden, hidden)
        self.pair_mlps = nn.ModuleList(mlp(2 * hidden + PAIR_FEATURES, hidden, hidden) for _ in range(rounds))
        self.segment_norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(rounds))
        self.segment_mlps = nn.ModuleList(mlp(7 * hidden, hidden, hidden) for _ in range(rounds))
        # hit states are updated between rounds (after the last, nothing reads them)
        self.node_norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(rounds - 1))
        self.node_mlps = nn.ModuleList(mlp(3 * hidden, hidden, hidden) for _ in range(rounds - 1))
        self._add_output(hidden)

    def forward(self, h: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None, *,
                pos: Tensor) -> Tensor:
        """One logit per edge [E]; both directions of a hit pair get the same one.

        Args:
            h: [N, d_embedding] hit embeddings.
            edge_index: [2, E] graph edges.
            edge_attr: unused (the head computes its geometry from ``pos``).
            pos: [N, 3] hit positions in mm.
        """
        seg, _, edge_segment = self.segment_states(h, edge_index, pos=pos)
        return self.logits(seg)[edge_segment]

    def segment_states(self, h: Tensor, edge_index: Tensor, *, pos: Tensor
                       ) -> tuple[Tensor, Tensor, Tensor]:
        """The trunk: every segment's final state, before the output layer.

        Segment-level JEPA pretraining (:class:`~gnn_jepa.models.segment_jepa.SegmentJEPA`)
        trains exactly this part; fine-tuning adds the output layer.

        Returns:
            ``(states, segments, edge_segment)``: [S, hidden] states, the [2, S] oriented
            segments (inner hit, outer hit) and [E] the segment of every edge
            (:func:`oriented_segments`).
        """
        n = h.shape[0]
        segments, edge_segment = oriented_segments(pos, edge_index)
        num_seg = segments.shape[1]
        first, second, pair_feat = segment_pairs(pos, segments, self.k)
        r = torch.hypot(pos[:, 0], pos[:, 1])
        phi = torch.atan2(pos[:, 1], pos[:, 0])
        hit_geo = torch.stack([r / 1000.0, torch.cos(phi), torch.sin(phi), pos[:, 2] / 1000.0], 1)
        node = self.node_in(torch.cat([h, hit_geo.to(h.dtype)], 1))
        inner, outer = segments
        seg = _mlp_of_sum(self.segment_in, [(node, inner), (node, outer),
                                            (segment_geometry(pos, segments).to(h.dtype), None)])
        pair_feat = pair_feat.to(h.dtype)
        n_succ, g_succ = _counts(first, num_seg, seg)
        n_pred, g_pred = _counts(second, num_seg, seg)
        n_into, n_out_of = _counts(outer, n, seg)[0], _counts(inner, n, seg)[0]
        for t in range(self.rounds):
            # the first layer of each MLP is applied to its inputs' own rows (segments, hits)
            # before they are gathered to pairs or segments: the same map, far fewer rows
            max_succ, sum_succ, max_pred, sum_pred = pair_messages(
                self.pair_mlps[t], seg, first, second, pair_feat, g_succ, g_pred)
            seg = seg + _mlp_of_sum(self.segment_mlps[t], [
                (self.segment_norms[t](seg), None), (node, inner), (node, outer),
                (max_succ, None), (sum_succ / n_succ, None), (max_pred, None), (sum_pred / n_pred, None)])
            if t == self.rounds - 1:
                break
            into = _scatter_sum(seg, outer, n) / n_into
            out_of = _scatter_sum(seg, inner, n) / n_out_of
            node = node + self.node_mlps[t](torch.cat([self.node_norms[t](node), into, out_of], 1))
        return seg, segments, edge_segment

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(d_embedding={self.d_embedding}, hidden={self.hidden}, "
                f"rounds={self.rounds}, pairs_per_segment={self.k})")
