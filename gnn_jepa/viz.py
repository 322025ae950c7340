"""Plots of events, graphs, JEPA regions, embeddings, tracks and training curves.

Every function draws into the matplotlib ``ax`` it is given, or into a new figure when
``ax`` is None, and returns the axes it drew on (``ax.figure`` is the figure). Nothing here
picks a backend: in a notebook the figures show inline, in a script without a display
matplotlib falls back to Agg (set ``MPLBACKEND=Agg`` to be explicit).

Views: ``"xy"`` is the transverse plane (x [mm] horizontal, y [mm] vertical, equal aspect);
``"rz"`` is the longitudinal view (z [mm] horizontal, r = hypot(x, y) [mm] vertical).

Inputs follow :mod:`gnn_jepa.data.convert` (a PyG ``Data`` with ``pos`` [N, 3] in mm,
``particle_id`` [N] with 0 = noise, ``hit_order``, ``pt``, ``layer_id``, ``volume_id``) and
:class:`gnn_jepa.masks.RegionMasks`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from gnn_jepa.masks import REGION_PARAM_COLUMNS, RegionMasks
from gnn_jepa.tracking.metrics import match_tracks

__all__ = ["particle_colors", "plot_event_xy", "plot_event_rz", "plot_graph_edges",
           "plot_regions", "region_hit_counts", "plot_embeddings_pca", "plot_tracks",
           "plot_efficiency", "plot_training_curves", "VIEWS"]

VIEWS = ("xy", "rz")
NOISE_COLOR = "0.45"
FAKE_COLOR = "tab:red"
TRUE_COLOR = "tab:blue"

# tab20 reordered (dark shades first, then light ones) so that particles with neighbouring
# ranks get different hues rather than the light/dark pair of one hue.
_PALETTE_ORDER = list(range(0, 20, 2)) + list(range(1, 20, 2))


# ---------------------------------------------------------------------------- helpers
def _np(x: Any, name: str, dtype: Any = None) -> np.ndarray:
    """numpy copy of a tensor / array / list (tensors on any device)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)


def _new_axes(ax, figsize: tuple[float, float]):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize)
    return ax


def _attr(data, name: str, what: str) -> np.ndarray:
    value = getattr(data, name, None)
    if value is None:
        raise ValueError(f"{what}: data has no '{name}' attribute "
                         "(expected the attributes of gnn_jepa.data.convert.event_to_data)")
    return _np(value, name)


def _positions(data, what: str) -> np.ndarray:
    pos = _attr(data, "pos", what).astype(np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"{what}: data.pos must be [N, 3] (x, y, z in mm), got {pos.shape}")
    return pos


def _check_view(view: str, what: str) -> None:
    if view not in VIEWS:
        raise ValueError(f"{what}: view must be one of {VIEWS}, got {view!r}")


def _view_coords(pos: np.ndarray, view: str) -> np.ndarray:
    """[N, 2] plot coordinates: (x, y) or (z, r)."""
    if view == "xy":
        return pos[:, :2]
    return np.stack([pos[:, 2], np.hypot(pos[:, 0], pos[:, 1])], 1)


def _label_view(ax, view: str) -> None:
    if view == "xy":
        ax.set_xlabel("x [mm]")
        ax.set_ylabel("y [mm]")
        ax.set_aspect("equal", adjustable="box")
    else:
        ax.set_xlabel("z [mm]")
        ax.set_ylabel("r [mm]")


def _rank(values: np.ndarray) -> np.ndarray:
    """Index of each value among the sorted unique values."""
    return np.unique(values, return_inverse=True)[1].reshape(-1)


def particle_colors(particle_id: Any) -> np.ndarray:
    """One RGBA colour per hit: a 20-colour cycle over the particles (by rank of their id),
    grey for noise (``particle_id == 0``). Returns [N, 4] floats."""
    from matplotlib import colormaps

    pid = _np(particle_id, "particle_id", np.int64).reshape(-1)
    palette = colormaps["tab20"].colors
    table = np.array([palette[i] + (1.0,) for i in _PALETTE_ORDER])
    colors = table[_rank(pid) % len(table)]
    colors[pid == 0] = (0.45, 0.45, 0.45, 1.0)
    return colors


def _particle_palette(ids: np.ndarray, all_ids: np.ndarray) -> dict[int, np.ndarray]:
    """Colour of each particle in ``ids`` as :func:`particle_colors` gives it over ``all_ids``."""
    cols = particle_colors(all_ids)
    first = {int(p): i for i, p in reversed(list(enumerate(all_ids.tolist())))}
    return {int(p): cols[first[int(p)]] for p in ids}


def _event_title(data, n: int) -> str:
    eid = getattr(data, "event_id", None)
    head = f"event {int(_np(eid, 'event_id').reshape(-1)[0])}: " if eid is not None else ""
    return f"{head}{n} hits"


# ---------------------------------------------------------------------------- events
def _plot_event(data, ax, view: str, color_by: str | None, marker_size: float, what: str):
    _check_view(view, what)
    if color_by not in ("particle", "layer", None):
        raise ValueError(f"{what}: color_by must be 'particle', 'layer' or None, got {color_by!r}")
    pos = _positions(data, what)
    xy = _view_coords(pos, view)
    ax = _new_axes(ax, (6.5, 6.0) if view == "xy" else (9.0, 4.5))
    n = len(pos)
    if color_by == "particle":
        pid = _attr(data, "particle_id", what).astype(np.int64)
        noise = pid == 0
        n_part = len(np.unique(pid[~noise]))
        ax.scatter(*xy[~noise].T, s=marker_size, c=particle_colors(pid)[~noise], linewidths=0,
                   label=f"hits of {n_part} particles (colour = particle)")
        if noise.any():
            ax.scatter(*xy[noise].T, s=marker_size * 2, c=NOISE_COLOR, marker="x", linewidths=0.6,
                       label=f"noise hits ({int(noise.sum())})")
        ax.legend(loc="upper right", fontsize=8, markerscale=2)
    elif color_by == "layer":
        vol = _attr(data, "volume_id", what).astype(np.int64)
        lay = _attr(data, "layer_id", what).astype(np.int64)
        # (volume, layer) pairs numbered in increasing order: one colour per detector layer
        idx = _rank(vol * 100_000 + lay)
        sc = ax.scatter(*xy.T, s=marker_size, c=idx, cmap="turbo", linewidths=0,
                        label=f"hits ({n}) coloured by layer")
        cbar = ax.figure.colorbar(sc, ax=ax, fraction=0.046, pad=0.02)
        cbar.set_label("layer index (sorted by volume_id, layer_id)")
        ax.legend(loc="upper right", fontsize=8, markerscale=2)
    else:
        ax.scatter(*xy.T, s=marker_size, c="k", linewidths=0, label=f"hits ({n})")
        ax.legend(loc="upper right", fontsize=8, markerscale=2)
    _label_view(ax, view)
    ax.set_title(_event_title(data, n))
    return ax


def plot_event_xy(data, ax=None, color_by: str | None = "particle", marker_size: float = 4.0):
    """Hits in the transverse plane (x, y in mm, equal aspect).

    Args:
        data: event graph with ``pos`` [N, 3] (and ``particle_id`` / ``volume_id``,
            ``layer_id`` for the colourings).
        ax: axes to draw on; None makes a new figure.
        color_by: ``"particle"`` (a colour per particle, noise as grey crosses), ``"layer"``
            (a colour per (volume_id, layer_id), with a colour bar) or None (black).
        marker_size: scatter marker area in points^2.

    Returns:
        The axes.
    """
    return _plot_event(data, ax, "xy", color_by, marker_size, "plot_event_xy")


def plot_event_rz(data, ax=None, color_by: str | None = "particle", marker_size: float = 4.0):
    """Hits in the longitudinal view: z [mm] horizontal, r = sqrt(x^2 + y^2) [mm] vertical.

    Arguments as :func:`plot_event_xy`. Returns the axes.
    """
    return _plot_event(data, ax, "rz", color_by, marker_size, "plot_event_rz")


# ---------------------------------------------------------------------------- graphs
def _unique_undirected(edge_index: np.ndarray, num_nodes: int) -> np.ndarray:
    """Column indices of the first occurrence of each unordered pair {i, j}, self-loops out."""
    src, dst = edge_index
    keep = np.flatnonzero(src != dst)
    key = np.minimum(src[keep], dst[keep]) * max(num_nodes, 1) + np.maximum(src[keep], dst[keep])
    _, first = np.unique(key, return_index=True)
    return keep[np.sort(first)]


def plot_graph_edges(data, ax=None, view: str = "xy", *, show_hits: bool = True,
                     true_color: str = TRUE_COLOR, fake_color: str = FAKE_COLOR,
                     linewidth: float = 0.5):
    """The event graph: true edges (both hits of one particle) and fake edges in two colours.

    An undirected graph stores each pair twice (i -> j and j -> i); every unordered pair is
    drawn once, as one straight segment between its hits in the chosen view, and self-loops
    are skipped. So the number of segments is the number of distinct unordered pairs.
    Labels come from ``data.y`` when it has one entry per edge, else from ``particle_id``
    (:func:`gnn_jepa.graph.edges.edge_labels`).

    Args:
        data: event graph with ``pos``, ``edge_index`` and ``y`` or ``particle_id``.
        ax: axes, or None for a new figure.
        view: ``"xy"`` or ``"rz"``.
        show_hits: draw the hits as small grey dots under the edges.
        true_color, fake_color, linewidth: style of the two edge collections.

    Returns:
        The axes; its two :class:`~matplotlib.collections.LineCollection` are labelled
        ``"true edges (n)"`` and ``"fake edges (n)"``.
    """
    from matplotlib.collections import LineCollection

    what = "plot_graph_edges"
    _check_view(view, what)
    pos = _positions(data, what)
    ei = _attr(data, "edge_index", what).astype(np.int64)
    if ei.ndim != 2 or ei.shape[0] != 2:
        raise ValueError(f"{what}: edge_index must be [2, E], got {ei.shape}")
    if ei.size and (ei.min() < 0 or ei.max() >= len(pos)):
        raise ValueError(f"{what}: edge_index refers to node {int(ei.max())} but data has "
                         f"{len(pos)} hits")
    y = getattr(data, "y", None)
    if y is not None and _np(y, "y").reshape(-1).shape[0] == ei.shape[1]:
        label = _np(y, "y").reshape(-1) > 0.5
    else:
        pid = _attr(data, "particle_id", what + " (no per-edge 'y')").astype(np.int64)
        label = (pid[ei[0]] == pid[ei[1]]) & (pid[ei[0]] != 0)
    cols = _unique_undirected(ei, len(pos))
    xy = _view_coords(pos, view)
    segs = np.stack([xy[ei[0, cols]], xy[ei[1, cols]]], 1)  # [S, 2, 2]
    true = label[cols]
    ax = _new_axes(ax, (6.5, 6.0) if view == "xy" else (9.0, 4.5))
    if show_hits:
        ax.scatter(*xy.T, s=2, c="0.6", linewidths=0, zorder=1, label=f"hits ({len(pos)})")
    # fakes underneath: they outnumber the true edges and would hide them
    ax.add_collection(LineCollection(segs[~true], colors=fake_color, linewidths=linewidth,
                                     alpha=0.45, zorder=2, label=f"fake edges ({int((~true).sum())})"))
    ax.add_collection(LineCollection(segs[true], colors=true_color, linewidths=1.5 * linewidth,
                                     zorder=3, label=f"true edges ({int(true.sum())})"))
    ax.autoscale_view()
    _label_view(ax, view)
    ax.legend(loc="upper right", fontsize=8)
    purity = float(true.mean()) if len(true) else float("nan")
    ax.set_title(f"{_event_title(data, len(pos))}, {len(cols)} edges (purity {purity:.2f})")
    return ax


# ---------------------------------------------------------------------------- regions
def region_hit_counts(masks: RegionMasks, batch: Any = None) -> list[dict]:
    """Hits per role of every graph: its context, each target region, and unused hits.

    Args:
        masks: the masker's output for one graph or a batch.
        batch: [N] graph index of each hit (PyG ``Batch.batch``); None = one graph.

    Returns:
        Rows (dicts) per graph ``g``: ``{"graph": g, "role": "context", "region": None,
        "num_hits": ...}``, then one ``role="target"`` row per target region (``region`` is
        its index into ``masks.region_params``), then ``role="unused"`` (hits in neither).
        Every row also holds the region's :data:`~gnn_jepa.masks.REGION_PARAM_COLUMNS`
        (the context row those of ``masks.context_params``, NaN for unused hits), so the
        ``num_hits`` of one graph's rows sum to its hit count.
    """
    context = _np(masks.context, "context").astype(bool)
    target = _np(masks.target_region, "target_region").astype(np.int64)
    n = len(context)
    if target.shape != (n,):
        raise ValueError(f"region_hit_counts: target_region has shape {target.shape}, "
                         f"context ({n},)")
    b = np.zeros(n, np.int64) if batch is None else _np(batch, "batch", np.int64).reshape(-1)
    if b.shape != (n,):
        raise ValueError(f"region_hit_counts: batch has {b.shape[0]} entries for {n} hits")
    params = _np(masks.region_params, "region_params").astype(np.float64).reshape(-1, 8)
    region_batch = _np(masks.region_batch, "region_batch", np.int64).reshape(-1)
    ctx_params = (None if masks.context_params is None
                  else _np(masks.context_params, "context_params").astype(np.float64).reshape(-1, 8))
    num_graphs = max(int(b.max()) + 1 if n else 0, len(_np(masks.graph_valid, "graph_valid")))
    per_region = np.bincount(target[target >= 0], minlength=len(params))
    nan = dict.fromkeys(REGION_PARAM_COLUMNS, float("nan"))
    rows: list[dict] = []
    for g in range(num_graphs):
        in_g = b == g
        cp = (dict(zip(REGION_PARAM_COLUMNS, ctx_params[g].tolist()))
              if ctx_params is not None and g < len(ctx_params) else nan)
        rows.append({"graph": g, "role": "context", "region": None,
                     "num_hits": int((context & in_g).sum()), **cp})
        for k in np.flatnonzero(region_batch == g):
            rows.append({"graph": g, "role": "target", "region": int(k),
                         "num_hits": int(per_region[k]),
                         **dict(zip(REGION_PARAM_COLUMNS, params[k].tolist()))})
        rows.append({"graph": g, "role": "unused", "region": None,
                     "num_hits": int((in_g & ~context & (target < 0)).sum()), **nan})
    return rows


def _arc(r: float, a0: float, a1: float, n: int = 64) -> np.ndarray:
    t = np.linspace(a0, a1, n)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _xy_outline(p: np.ndarray, r_max: float) -> list[np.ndarray]:
    """Closed polylines bounding a region's (phi, r) box in the xy plane; [] when it spans
    all phi and all r (the xy view cannot show an eta or |z| cut)."""
    c, hw, r0, r1 = p[0], p[1], p[2], p[3]
    r0 = 0.0 if not np.isfinite(r0) or r0 < 0 else float(r0)
    r1 = r_max if not np.isfinite(r1) else float(r1)
    if hw >= math.pi:
        if r0 <= 0 and r1 >= r_max:
            return []
        rings = [_arc(r1, -math.pi, math.pi, 128)]
        if r0 > 0:
            rings.append(_arc(r0, -math.pi, math.pi, 128))
        return rings
    outer = _arc(r1, c - hw, c + hw)
    inner = _arc(r0, c + hw, c - hw) if r0 > 0 else np.zeros((1, 2))
    return [np.concatenate([outer, inner, outer[:1]])]


def _clip(poly: list[tuple[float, float]], a: float, b: float, c: float) -> list[tuple[float, float]]:
    """Sutherland-Hodgman: keep the part of a convex polygon where a*h + b*v <= c."""
    out: list[tuple[float, float]] = []
    for i, cur in enumerate(poly):
        prev = poly[i - 1]
        fc, fp = a * cur[0] + b * cur[1] - c, a * prev[0] + b * prev[1] - c
        if fc <= 0:
            if fp > 0:
                t = fp / (fp - fc)
                out.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
            out.append(cur)
        elif fp <= 0:
            t = fp / (fp - fc)
            out.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
    return out


def _rz_outline(p: np.ndarray, r_max: float, z_max: float) -> list[np.ndarray]:
    """Closed polygons bounding a region in the (z, r) half plane; [] when it spans it all.

    The region ``r0 <= r < r1, z0 <= |z| < z1, e0 <= eta < e1`` is convex in (z, r) on each
    side of z = 0: eta >= e0 is the half plane ``z >= r sinh(e0)`` (eta = asinh(z / r)), and
    the r and z bounds are half planes too. So each part is a box clipped by half planes.
    """
    _, _, r0, r1, z0, z1, e0, e1 = (float(v) for v in p)
    if all(not np.isfinite(v) for v in (r0, r1, z0, z1, e0, e1)):
        return []
    r_lo, r_hi = max(r0, 0.0) if np.isfinite(r0) else 0.0, min(r1, r_max) if np.isfinite(r1) else r_max
    z_hi = min(z1, z_max) if np.isfinite(z1) else z_max
    z_lo = max(z0, 0.0) if np.isfinite(z0) else 0.0
    sides = [(-z_hi, z_hi)] if z_lo <= 0 else [(-z_hi, -z_lo), (z_lo, z_hi)]
    polys = []
    for lo, hi in sides:
        poly = [(lo, r_lo), (hi, r_lo), (hi, r_hi), (lo, r_hi)]
        if np.isfinite(e0):
            poly = _clip(poly, -1.0, math.sinh(e0), 0.0) if poly else poly  # z >= r sinh(e0)
        if np.isfinite(e1):
            poly = _clip(poly, 1.0, -math.sinh(e1), 0.0) if poly else poly  # z <= r sinh(e1)
        if len(poly) >= 3:
            polys.append(np.array(poly + poly[:1]))
    return polys


def plot_regions(data, masks: RegionMasks, ax=None, view: str = "xy", *,
                 marker_size: float = 5.0, outlines: bool = True):
    """JEPA regions of one event: context hits, each target region's hits in its own colour.

    Outlines: in xy each target's (phi, r) box -- a wedge, an annulus or an annular sector
    (its eta / |z| cut does not show in xy); in rz its (r, |z|, eta) box, where an eta band is
    the cone z = r sinh(eta). A context wedge (``context="wedge"``) is outlined dashed grey.

    Args:
        data: one event graph with ``pos`` [N, 3] (a single graph, not a batch).
        masks: the :class:`~gnn_jepa.masks.RegionMasks` drawn for that event.
        ax: axes or None.
        view: ``"xy"`` or ``"rz"``.
        marker_size: marker area of context / unused hits (targets are drawn 2x larger).
        outlines: draw the region outlines.

    Returns:
        The axes; legend entries ``"context (n hits)"``, ``"target k (n hits)"`` and, when
        some hits have no role, ``"unused (n hits)"``.
    """
    from matplotlib import colormaps

    what = "plot_regions"
    _check_view(view, what)
    pos = _positions(data, what)
    n = len(pos)
    context = _np(masks.context, "context").astype(bool)
    target = _np(masks.target_region, "target_region").astype(np.int64)
    if context.shape != (n,) or target.shape != (n,):
        raise ValueError(f"{what}: masks are for {len(context)} hits but data has {n}; pass the "
                         "masks of this single event")
    params = _np(masks.region_params, "region_params").astype(np.float64).reshape(-1, 8)
    xy = _view_coords(pos, view)
    r = np.hypot(pos[:, 0], pos[:, 1])
    r_max = float(r.max()) * 1.03 if n else 1.0
    z_max = float(np.abs(pos[:, 2]).max()) * 1.03 if n else 1.0
    ax = _new_axes(ax, (6.5, 6.0) if view == "xy" else (9.0, 4.5))
    unused = ~context & (target < 0)
    if unused.any():
        ax.scatter(*xy[unused].T, s=marker_size, c="0.82", linewidths=0,
                   label=f"unused ({int(unused.sum())} hits)")
    ax.scatter(*xy[context].T, s=marker_size, c="0.35", linewidths=0,
               label=f"context ({int(context.sum())} hits)")
    palette = [c for i, c in enumerate(colormaps["tab10"].colors) if i != 7]  # 7 is grey
    for k in range(len(params)):
        color = palette[k % len(palette)]
        sel = target == k
        ax.scatter(*xy[sel].T, s=marker_size * 2, color=color, linewidths=0,
                   label=f"target {k} ({int(sel.sum())} hits)", zorder=3)
        if outlines:
            shapes = _xy_outline(params[k], r_max) if view == "xy" else _rz_outline(params[k], r_max, z_max)
            for line in shapes:
                ax.plot(line[:, 0], line[:, 1], color=color, linewidth=1.3, zorder=4)
    cp = masks.context_params
    if outlines and view == "xy" and cp is not None and len(cp):
        row = _np(cp, "context_params").astype(np.float64).reshape(-1, 8)[0]
        if row[1] < math.pi:
            for i, line in enumerate(_xy_outline(row, r_max)):
                ax.plot(line[:, 0], line[:, 1], color="0.3", linestyle="--", linewidth=1.0,
                        label="context wedge" if i == 0 else None)
    _label_view(ax, view)
    valid = _np(masks.graph_valid, "graph_valid").astype(bool)
    note = "" if valid.all() else " -- no valid regions (event skipped by the masker)"
    ax.set_title(f"context and {len(params)} target regions{note}")
    ax.legend(loc="upper right", fontsize=7, markerscale=1.5)
    return ax


# ---------------------------------------------------------------------------- embeddings
def _pca2(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Projection on the two leading principal components and their variance fractions."""
    centred = emb - emb.mean(0, keepdims=True)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    var = s ** 2
    frac = var[:2] / var.sum() if var.sum() > 0 else np.zeros(2)
    proj = centred @ vt[:2].T
    if proj.shape[1] < 2:  # fewer hits than 2: pad so the plot still has two axes
        proj = np.pad(proj, ((0, 0), (0, 2 - proj.shape[1])))
        frac = np.pad(frac, (0, 2 - len(frac)))
    return proj, frac


def plot_embeddings_pca(emb: Any, particle_id: Any, ax=None, max_particles: int = 20, *,
                        marker_size: float = 10.0, title: str | None = None):
    """Hit embeddings projected on their two leading principal components, by particle.

    PCA over all hits: with the centred embeddings ``Z - mean(Z) = U S V^T`` the hits are
    drawn at ``(Z - mean) V[:, :2]``; axis labels give each component's share
    ``S_k^2 / sum S^2`` of the variance. The ``max_particles`` particles with the most hits
    (ties: smaller id) get one colour each -- the same particles and colours for any two
    embeddings of the same event, so a pretrained and a random encoder compare side by
    side; other particles' hits are light grey dots, noise hits grey crosses.

    Args:
        emb: [N, D] embeddings (D >= 2), tensor or array.
        particle_id: [N] particle of each hit, 0 = noise.
        ax: axes or None.
        max_particles: particles coloured.
        marker_size: marker area of the coloured hits.
        title: axes title (default says how many particles are coloured).

    Returns:
        The axes.
    """
    what = "plot_embeddings_pca"
    z = _np(emb, "emb").astype(np.float64)
    pid = _np(particle_id, "particle_id", np.int64).reshape(-1)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"{what}: emb must be [N, D] with D >= 2, got shape {z.shape}")
    if len(pid) != len(z):
        raise ValueError(f"{what}: {len(pid)} particle ids for {len(z)} embeddings")
    if max_particles < 0:
        raise ValueError(f"{what}: max_particles must be >= 0, got {max_particles}")
    if not np.isfinite(z).all():
        raise ValueError(f"{what}: emb holds {int((~np.isfinite(z)).sum())} non-finite values")
    proj, frac = _pca2(z)
    ids, counts = np.unique(pid[pid != 0], return_counts=True)
    chosen = ids[np.lexsort((ids, -counts))][:max_particles]
    ax = _new_axes(ax, (6.0, 5.5))
    other = (pid != 0) & ~np.isin(pid, chosen)
    noise = pid == 0
    if other.any():
        ax.scatter(*proj[other].T, s=marker_size * 0.4, c="0.85", linewidths=0,
                   label=f"other particles ({int(other.sum())} hits)")
    if noise.any():
        ax.scatter(*proj[noise].T, s=marker_size * 0.8, c=NOISE_COLOR, marker="x", linewidths=0.6,
                   label=f"noise ({int(noise.sum())} hits)")
    from matplotlib import colormaps

    palette = colormaps["tab20"].colors
    for i, p in enumerate(chosen):
        sel = pid == p
        ax.scatter(*proj[sel].T, s=marker_size, color=palette[_PALETTE_ORDER[i % 20]],
                   edgecolors="k", linewidths=0.2, zorder=3,
                   label=f"{len(chosen)} longest particles (colour = particle)" if i == 0 else None)
    ax.set_xlabel(f"PC 1 ({100 * frac[0]:.0f}% of variance)")
    ax.set_ylabel(f"PC 2 ({100 * frac[1]:.0f}% of variance)")
    ax.set_title(title if title is not None else f"hit embeddings (D={z.shape[1]}), PCA")
    ax.legend(loc="best", fontsize=7, markerscale=1.2)
    return ax


# ---------------------------------------------------------------------------- tracks
def _polylines(xy: np.ndarray, groups: np.ndarray, key: np.ndarray, keep: np.ndarray
               ) -> tuple[list[np.ndarray], np.ndarray]:
    """One polyline per group id (``keep`` hits only), points ordered by ``key``."""
    idx = np.flatnonzero(keep)
    idx = idx[np.lexsort((key[idx], groups[idx]))]
    g = groups[idx]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if len(idx) else np.zeros(0, np.int64)
    parts = np.split(idx, starts[1:]) if len(idx) else []
    return [xy[p] for p in parts], (g[starts] if len(idx) else np.zeros(0, np.int64))


def plot_tracks(data, track_id: Any, ax=None, view: str = "xy", *, min_track_hits: int = 3,
                linewidth: float = 0.9):
    """Reconstructed tracks against the truth.

    * Truth: each particle's hits joined in ``hit_order`` (from its vertex outwards), in the
      particle's colour (:func:`particle_colors`).
    * Reconstruction: each track (``track_id >= 0``, at least ``min_track_hits`` hits) joined
      by distance from the origin ``sqrt(r^2 + z^2)``. A track DM-matched to a particle
      (:func:`gnn_jepa.tracking.metrics.match_tracks`: > 50% of the track's hits are the
      particle's and > 50% of the particle's hits are on the track) takes that particle's
      colour, so matched tracks look like their truth panel twin; any other track is a
      dashed red "fake". Hits in no track are grey dots.

    Args:
        data: one event graph with ``pos``, ``particle_id``, ``hit_order``.
        track_id: [N] track of each hit, -1 = none (as from
            :func:`gnn_jepa.tracking.building.build_tracks`).
        ax: None -> a new figure with truth and reconstruction side by side; a pair of axes
            -> the same into them; one axes -> the reconstruction drawn over thin grey truth.
        view: ``"xy"`` or ``"rz"``.
        min_track_hits: shorter tracks count as unassigned hits.
        linewidth: line width of the tracks.

    Returns:
        The tuple of axes drawn on: ``(truth_ax, reco_ax)`` or ``(ax,)``.
    """
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D

    what = "plot_tracks"
    _check_view(view, what)
    pos = _positions(data, what)
    n = len(pos)
    pid = _attr(data, "particle_id", what).astype(np.int64)
    order = _attr(data, "hit_order", what).astype(np.int64)
    tid = _np(track_id, "track_id", np.int64).reshape(-1)
    if len(tid) != n:
        raise ValueError(f"{what}: track_id has {len(tid)} entries for {n} hits")
    xy = _view_coords(pos, view)

    # matched tracks borrow their particle's colour
    m = match_tracks(tid, pid, min_track_hits=min_track_hits)
    real = m["track_id"] >= 0
    m = {k: v[real] for k, v in m.items()}
    in_track = np.isin(tid, m["track_id"])
    colour_of = _particle_palette(np.unique(pid), pid)

    if ax is None:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(13, 6) if view == "xy" else (15, 4.5),
                                 sharex=True, sharey=True)
        axes = tuple(axes)
    elif isinstance(ax, (list, tuple, np.ndarray)):
        axes = tuple(np.ravel(ax))
        if len(axes) != 2:
            raise ValueError(f"{what}: ax must be one axes or a pair, got {len(axes)}")
    else:
        axes = (ax,)
    overlay = len(axes) == 1
    truth_ax, reco_ax = axes[0], axes[-1]

    lines, ids = _polylines(xy, pid, order, pid != 0)
    if overlay:
        truth_ax.add_collection(LineCollection(lines, colors="0.7", linewidths=linewidth * 2,
                                               zorder=1, label=f"true particles ({len(ids)})"))
    else:
        truth_ax.add_collection(LineCollection(lines, colors=[colour_of[int(p)] for p in ids],
                                               linewidths=linewidth, zorder=2))
        truth_ax.scatter(*xy[pid == 0].T, s=6, c=NOISE_COLOR, marker="x", linewidths=0.5,
                         label=f"noise hits ({int((pid == 0).sum())})")
        truth_ax.legend(handles=[Line2D([], [], color="k", lw=linewidth,
                                        label=f"true particles ({len(ids)}, colour = particle)"),
                                 *truth_ax.get_legend_handles_labels()[0]],
                        loc="upper right", fontsize=8)
        truth_ax.set_title(f"truth: {_event_title(data, n)}, {len(ids)} particles")
        _label_view(truth_ax, view)
        truth_ax.autoscale_view()

    dist = np.hypot(np.hypot(pos[:, 0], pos[:, 1]), pos[:, 2])
    t_lines, t_ids = _polylines(xy, tid, dist, in_track)
    matched = dict(zip(m["track_id"].tolist(), m["dm_matched"].tolist()))
    major = dict(zip(m["track_id"].tolist(), m["major_particle_id"].tolist()))
    good = np.array([matched[int(t)] for t in t_ids], bool)
    reco_ax.add_collection(LineCollection(
        [line for line, g in zip(t_lines, good) if g],
        colors=[colour_of[major[int(t)]] for t, g in zip(t_ids, good) if g],
        linewidths=linewidth * 1.5, zorder=3))
    reco_ax.add_collection(LineCollection(
        [line for line, g in zip(t_lines, good) if not g], colors=FAKE_COLOR,
        linewidths=linewidth * 1.5, linestyles="--", zorder=4))
    free = ~in_track
    reco_ax.scatter(*xy[free].T, s=4, c="0.55", linewidths=0, zorder=2,
                    label=f"hits in no track ({int(free.sum())})")
    handles = [Line2D([], [], color="k", lw=linewidth * 1.5,
                      label=f"DM-matched tracks ({int(good.sum())}, colour = particle)"),
               Line2D([], [], color=FAKE_COLOR, lw=linewidth * 1.5, ls="--",
                      label=f"other tracks ({int((~good).sum())})"),
               *reco_ax.get_legend_handles_labels()[0]]
    reco_ax.legend(handles=handles, loc="upper right", fontsize=8)
    reco_ax.set_title(f"reconstructed: {len(t_ids)} tracks" + (" over truth (grey)" if overlay else ""))
    _label_view(reco_ax, view)
    reco_ax.autoscale_view()
    return axes


# ---------------------------------------------------------------------------- metrics
def plot_efficiency(summary_rows: Sequence[Mapping[str, Any]] | Mapping[str, Any], ax=None,
                    by: str = "pt", *, label: str | None = "double-majority", **errorbar_kw):
    """Tracking efficiency per bin of particle pT or eta, with binomial error bars.

    Args:
        summary_rows: rows of :func:`gnn_jepa.tracking.metrics.efficiency_table` (``lo``,
            ``hi``, ``n``, ``efficiency``, optional ``error``), or a
            :func:`gnn_jepa.evaluation.report.summarize_events` summary (its
            ``efficiency_vs_<by>`` rows are used). Bins without particles are left out; a
            missing ``error`` is ``sqrt(eff (1 - eff) / n)``.
        ax: axes or None. Call again on the same axes with another ``label`` to compare runs.
        by: ``"pt"`` (log x axis, GeV) or ``"eta"``.
        label: legend label of this series.
        **errorbar_kw: passed to :meth:`~matplotlib.axes.Axes.errorbar`.

    Returns:
        The axes.
    """
    if by not in ("pt", "eta"):
        raise ValueError(f"plot_efficiency: by must be 'pt' or 'eta', got {by!r}")
    rows = summary_rows
    if isinstance(rows, Mapping):
        key = f"efficiency_vs_{by}"
        if key not in rows:
            raise KeyError(f"plot_efficiency: summary has no '{key}' (keys: {sorted(rows)})")
        rows = rows[key]
    for i, r in enumerate(rows):
        missing = [k for k in ("lo", "hi", "n", "efficiency") if k not in r]
        if missing:
            raise KeyError(f"plot_efficiency: row {i} lacks {missing} (has {sorted(r)})")
    rows = [r for r in rows if r["n"] > 0]
    ax = _new_axes(ax, (5.5, 4.0))
    if rows:
        lo = np.array([r["lo"] for r in rows], float)
        hi = np.array([r["hi"] for r in rows], float)
        eff = np.array([r["efficiency"] for r in rows], float)
        n = np.array([r["n"] for r in rows], float)
        err = np.array([r.get("error", math.nan) for r in rows], float)
        err = np.where(np.isfinite(err), err, np.sqrt(np.clip(eff * (1 - eff), 0, None) / n))
        if by == "pt":
            # geometric bin centre on the log axis; a bin starting at 0 is drawn from hi / 10
            lo_vis = np.where(lo > 0, lo, hi / 10)
            centre = np.sqrt(lo_vis * hi)
        else:
            lo_vis, centre = lo, 0.5 * (lo + hi)
        kw = {"fmt": "o", "capsize": 2, "markersize": 4, **errorbar_kw}
        ax.errorbar(centre, eff, xerr=[centre - lo_vis, hi - centre], yerr=err, label=label, **kw)
    if by == "pt":
        ax.set_xscale("log")
        ax.set_xlabel(r"particle $p_T$ [GeV]")
    else:
        ax.set_xlabel(r"particle $\eta$")
    ax.set_ylabel("tracking efficiency")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    if label is not None:
        ax.legend(loc="lower right", fontsize=8)
    return ax


def plot_training_curves(metrics_csv_path: str | Path, keys: str | Sequence[str], ax=None, *,
                         x: str = "step", logy: bool = False):
    """Curves of logged metrics from a Lightning ``CSVLogger`` ``metrics.csv``.

    The CSV has one column per logged key, filled only on the rows where that key was
    logged; each key is drawn over its own non-empty rows (the last value when a step
    logged it twice), with markers when it has few points (validation metrics).

    Args:
        metrics_csv_path: path of ``metrics.csv``.
        keys: one key or several (e.g. ``["train/jepa_loss", "val/jepa_loss"]``).
        ax: axes or None.
        x: the x column (``"step"`` or ``"epoch"``).
        logy: log y axis.

    Returns:
        The axes.

    Raises:
        FileNotFoundError: no such file. KeyError: a key (or ``x``) is not a column of the
            file; the message lists the columns.
    """
    import pandas as pd

    path = Path(metrics_csv_path)
    if not path.is_file():
        raise FileNotFoundError(f"plot_training_curves: no metrics file {path}")
    df = pd.read_csv(path)
    keys = [keys] if isinstance(keys, str) else list(keys)
    if not keys:
        raise ValueError("plot_training_curves: give at least one key")
    missing = [k for k in [x, *keys] if k not in df.columns]
    if missing:
        raise KeyError(f"plot_training_curves: {path} has no column(s) {missing}; "
                       f"columns: {list(df.columns)}")
    ax = _new_axes(ax, (6.0, 4.0))
    for k in keys:
        s = df[[x, k]].dropna().groupby(x, sort=True)[k].last()
        style = {"marker": "o", "markersize": 4} if len(s) <= 25 else {}
        ax.plot(s.index.to_numpy(), s.to_numpy(), label=k, **style)
    ax.set_xlabel("training step" if x == "step" else x)
    ax.set_ylabel(keys[0] if len(keys) == 1 else "value")
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax
