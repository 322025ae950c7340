"""gnn_jepa.viz draws what the data holds: one point per hit, one segment per edge, the
right counts in the legends, outlines around the hits they bound, PCA and efficiency values
equal to a direct computation, and a PNG of non-trivial size."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import LineCollection, PathCollection  # noqa: E402
from matplotlib.path import Path as MplPath  # noqa: E402
from torch_geometric.data import Batch, Data  # noqa: E402

from gnn_jepa import viz  # noqa: E402
from gnn_jepa.data.convert import event_to_data  # noqa: E402
from gnn_jepa.data.simulator import Simulator  # noqa: E402
from gnn_jepa.graph.transform import BuildGraph  # noqa: E402
from gnn_jepa.masks import RegionMasker  # noqa: E402
from gnn_jepa.tracking.metrics import efficiency_table  # noqa: E402
from gnn_jepa.evaluation.report import save_efficiency_plots  # noqa: E402
from gnn_jepa.tracking.metrics import ETA_BINS, PT_BINS  # noqa: E402

MIN_PNG_BYTES = 8_000  # an empty 640x480 axes is ~5 kB; real plots are 30-500 kB


@pytest.fixture(scope="module")
def event():
    sim = Simulator.from_preset("trackml", num_particles=40, eta_range=(-2.5, 2.5))
    ev = sim.simulate(seed=3, event_id=7)
    return BuildGraph(kind="eta_phi", radius=0.05, w_r=0.0)(event_to_data(ev))


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _png(fig, tmp_path, name="fig.png") -> int:
    path = tmp_path / name
    fig.savefig(path, dpi=80)
    return path.stat().st_size


def _scatter_points(ax) -> dict[str, np.ndarray]:
    """Offsets of every labelled scatter collection, by label."""
    return {c.get_label(): np.asarray(c.get_offsets()) for c in ax.collections
            if isinstance(c, PathCollection)}


def _legend_labels(ax) -> list[str]:
    leg = ax.get_legend()
    assert leg is not None, "axes has no legend"
    return [t.get_text() for t in leg.get_texts()]


# ----------------------------------------------------------------------------- events
def test_event_xy_one_point_per_hit_coloured_by_particle(event, tmp_path):
    ax = viz.plot_event_xy(event)
    pid = event.particle_id.numpy()
    noise = pid == 0
    pts = _scatter_points(ax)
    n_part = len(np.unique(pid[~noise]))
    hits = pts[f"hits of {n_part} particles (colour = particle)"]
    np.testing.assert_allclose(hits, event.pos[~torch.from_numpy(noise), :2].numpy(), rtol=1e-6)
    np.testing.assert_allclose(pts[f"noise hits ({noise.sum()})"], event.pos[noise, :2].numpy(), rtol=1e-6)
    # hits of one particle share one colour; the colours are those of particle_colors
    coll = next(c for c in ax.collections if c.get_label().startswith("hits of"))
    np.testing.assert_allclose(coll.get_facecolors(), viz.particle_colors(pid)[~noise])
    assert ax.get_xlabel() == "x [mm]" and ax.get_ylabel() == "y [mm]"
    assert ax.get_aspect() == 1.0
    assert any(label.startswith("noise hits") for label in _legend_labels(ax))
    assert _png(ax.figure, tmp_path) > MIN_PNG_BYTES


def test_particle_colors_same_for_same_particle_grey_noise():
    pid = np.array([5, 0, 9, 5, 9, 0, 12])
    c = viz.particle_colors(pid)
    assert c.shape == (7, 4)
    np.testing.assert_array_equal(c[0], c[3])
    np.testing.assert_array_equal(c[2], c[4])
    assert not np.array_equal(c[0], c[2]) and not np.array_equal(c[2], c[6])
    np.testing.assert_allclose(c[1, :3], 0.45)


def test_event_rz_plots_z_and_radius(event, tmp_path):
    ax = viz.plot_event_rz(event, color_by=None)
    pts = _scatter_points(ax)[f"hits ({event.num_nodes})"]
    pos = event.pos.numpy().astype(np.float64)
    np.testing.assert_allclose(pts[:, 0], pos[:, 2], rtol=1e-6)
    np.testing.assert_allclose(pts[:, 1], np.hypot(pos[:, 0], pos[:, 1]), rtol=1e-5)
    assert ax.get_xlabel() == "z [mm]" and ax.get_ylabel() == "r [mm]"
    assert _png(ax.figure, tmp_path) > MIN_PNG_BYTES


def test_event_color_by_layer_one_colour_index_per_layer_and_colorbar(event):
    ax = viz.plot_event_xy(event, color_by="layer")
    coll = next(c for c in ax.collections if isinstance(c, PathCollection))
    values = np.asarray(coll.get_array())
    pairs = set(zip(event.volume_id.tolist(), event.layer_id.tolist()))
    assert len(np.unique(values)) == len(pairs)
    assert len(ax.figure.axes) == 2  # the axes and its colour bar
    assert "layer" in ax.figure.axes[1].get_ylabel()


def test_event_bad_input_errors(event):
    with pytest.raises(ValueError, match="color_by"):
        viz.plot_event_xy(event, color_by="charge")
    with pytest.raises(ValueError, match="'pos'"):
        viz.plot_event_xy(Data(x=torch.zeros(3, 2)))
    with pytest.raises(ValueError, match="particle_id"):
        viz.plot_event_rz(Data(pos=torch.zeros(3, 3)))


# ----------------------------------------------------------------------------- graph edges
def test_graph_edges_one_segment_per_unordered_pair(event, tmp_path):
    ax = viz.plot_graph_edges(event)
    ei = event.edge_index.t().tolist()
    pid = event.particle_id.tolist()
    pairs = {(min(a, b), max(a, b)) for a, b in ei if a != b}
    n_true = sum(pid[a] == pid[b] and pid[a] != 0 for a, b in pairs)
    lines = {c.get_label(): c for c in ax.collections if isinstance(c, LineCollection)}
    true = lines[f"true edges ({n_true})"]
    fake = lines[f"fake edges ({len(pairs) - n_true})"]
    assert len(true.get_segments()) == n_true
    assert len(fake.get_segments()) == len(pairs) - n_true
    # every true segment joins two hits of one particle
    pos = {tuple(np.round(p, 3)): i for i, p in enumerate(event.pos[:, :2].numpy().astype(np.float64))}
    for seg in true.get_segments()[:50]:
        a, b = (pos[tuple(np.round(p, 3))] for p in seg)
        assert pid[a] == pid[b] != 0
    assert {f"true edges ({n_true})", f"fake edges ({len(pairs) - n_true})"} <= set(_legend_labels(ax))
    assert ax.get_aspect() == 1.0 and ax.get_xlabel() == "x [mm]"
    assert _png(ax.figure, tmp_path) > MIN_PNG_BYTES


def test_graph_edges_small_graph_rz_labels_from_particle_id():
    # hits 0, 1 of particle 1 and hit 2 noise; edges 0<->1 (both directions), 1->2 and a self-loop
    pos = torch.tensor([[100.0, 0.0, 10.0], [200.0, 0.0, 20.0], [0.0, 300.0, -30.0]])
    data = Data(pos=pos, particle_id=torch.tensor([1, 1, 0]),
                edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 2]]))
    ax = viz.plot_graph_edges(data, view="rz", show_hits=False)
    lines = {c.get_label(): c for c in ax.collections if isinstance(c, LineCollection)}
    np.testing.assert_allclose(lines["true edges (1)"].get_segments()[0], [[10, 100], [20, 200]])
    np.testing.assert_allclose(lines["fake edges (1)"].get_segments()[0], [[20, 200], [-30, 300]])
    assert ax.get_xlabel() == "z [mm]" and ax.get_ylabel() == "r [mm]"
    with pytest.raises(ValueError, match="view"):
        viz.plot_graph_edges(data, view="xz")


# ----------------------------------------------------------------------------- regions
@pytest.fixture(scope="module")
def masks(event):
    masker = RegionMasker(num_targets=3, target_shape="wedge_annulus", wedge_width=(0.6, 0.8),
                          annulus=[[0, 300], [300, 700], [700, None]], context="wedge",
                          context_scale=(0.5, 0.6), min_target_hits=3)
    m = masker(event, torch.Generator().manual_seed(0))
    assert bool(m.graph_valid.all())
    return m


def test_regions_hits_and_outlines(event, masks, tmp_path):
    ax = viz.plot_regions(event, masks)
    pts = _scatter_points(ax)
    tr = masks.target_region.numpy()
    ctx = masks.context.numpy()
    assert len(pts[f"context ({ctx.sum()} hits)"]) == ctx.sum()
    unused = (~ctx & (tr < 0)).sum()
    assert len(pts[f"unused ({unused} hits)"]) == unused
    xy = event.pos[:, :2].numpy().astype(np.float64)
    outlines = [line for line in ax.get_lines() if line.get_label().startswith("_")]
    assert len(outlines) == masks.num_regions  # one closed sector per target
    for k in range(masks.num_regions):
        got = pts[f"target {k} ({(tr == k).sum()} hits)"]
        np.testing.assert_allclose(got, xy[tr == k], rtol=1e-6)
        # the outline (an annular sector) encloses exactly the region's hits
        path = MplPath(outlines[k].get_xydata())
        assert path.contains_points(xy[tr == k]).all()
        assert not path.contains_points(xy[(tr >= 0) & (tr != k)]).any()
    assert "context wedge" in _legend_labels(ax)
    assert ax.get_aspect() == 1.0
    assert _png(ax.figure, tmp_path) > MIN_PNG_BYTES


def test_regions_rz_outline_encloses_eta_annulus_targets(event, tmp_path):
    masker = RegionMasker(num_targets=2, target_shape="eta_annulus", eta_width=(0.8, 0.8),
                          annulus=[[0, 400], [400, None]], min_target_hits=3)
    m = masker(event, torch.Generator().manual_seed(1))
    ax = viz.plot_regions(event, m, view="rz")
    pos = event.pos.numpy().astype(np.float64)
    zr = np.stack([pos[:, 2], np.hypot(pos[:, 0], pos[:, 1])], 1)
    tr = m.target_region.numpy()
    outlines = [line for line in ax.get_lines() if line.get_label().startswith("_")]
    assert len(outlines) == m.num_regions
    for k, line in enumerate(outlines):
        path = MplPath(line.get_xydata())
        assert path.contains_points(zr[tr == k]).all()
        # every hit inside the outline is in region k (no hit lies on a boundary here)
        assert (tr[path.contains_points(zr)] == k).all()
    assert ax.get_xlabel() == "z [mm]"
    assert _png(ax.figure, tmp_path) > MIN_PNG_BYTES


def test_regions_wrong_event_errors(event, masks):
    with pytest.raises(ValueError, match="masks are for"):
        viz.plot_regions(Data(pos=event.pos[:10]), masks)


def test_region_hit_counts_sum_to_hits(event, masks):
    rows = viz.region_hit_counts(masks)
    assert sum(r["num_hits"] for r in rows) == event.num_nodes
    targets = [r for r in rows if r["role"] == "target"]
    assert [r["num_hits"] for r in targets] == np.bincount(
        masks.target_region[masks.target_region >= 0].numpy(), minlength=3).tolist()
    assert [r["r_min"] for r in targets] == masks.region_params[:, 2].tolist()
    ctx = next(r for r in rows if r["role"] == "context")
    assert ctx["num_hits"] == int(masks.context.sum())
    assert ctx["phi_half_width"] == pytest.approx(float(masks.context_params[0, 1]))


def test_region_hit_counts_batch(event):
    batch = Batch.from_data_list([event, event.clone()])
    m = RegionMasker(num_targets=2, target_shape="wedge", wedge_width=(0.5, 0.5))(
        batch, torch.Generator().manual_seed(2))
    rows = viz.region_hit_counts(m, batch.batch)
    for g in range(2):
        assert sum(r["num_hits"] for r in rows if r["graph"] == g) == event.num_nodes
        assert sum(r["role"] == "target" for r in rows if r["graph"] == g) == 2
    with pytest.raises(ValueError, match="batch has"):
        viz.region_hit_counts(m, batch.batch[:5])


# ----------------------------------------------------------------------------- embeddings
def test_embeddings_pca_matches_direct_pca(tmp_path):
    g = torch.Generator().manual_seed(0)
    n = 300
    pid = torch.arange(n) % 30  # particle 0 = noise
    pid[:40] = 7  # particle 7 has the most hits
    # a clear principal axis (std 5) then a second one (std 2), then noise (std 0.1)
    emb = torch.randn(n, 6, generator=g) * torch.tensor([5.0, 2.0, 0.1, 0.1, 0.1, 0.1])
    ax = viz.plot_embeddings_pca(emb, pid, max_particles=5)
    pts = _scatter_points(ax)
    coloured = [c for c in ax.collections if isinstance(c, PathCollection) and c.get_zorder() == 3]
    assert len(coloured) == 5
    # the particle with most hits comes first
    assert len(coloured[0].get_offsets()) == int((pid == 7).sum()) == 48
    z = emb.double().numpy()
    zc = z - z.mean(0)
    evals, evecs = np.linalg.eigh(np.cov(zc.T))
    top = evecs[:, ::-1][:, :2]
    ref = zc @ top
    got = np.asarray(coloured[0].get_offsets())
    sel = (pid == 7).numpy()
    for k in range(2):  # principal directions are defined up to sign
        assert min(np.abs(got[:, k] - ref[sel, k]).max(), np.abs(got[:, k] + ref[sel, k]).max()) < 1e-6
    share = evals[::-1] / evals.sum()
    assert ax.get_xlabel() == f"PC 1 ({100 * share[0]:.0f}% of variance)"
    assert ax.get_ylabel() == f"PC 2 ({100 * share[1]:.0f}% of variance)"
    n_noise = int((pid == 0).sum())
    assert len(pts[f"noise ({n_noise} hits)"]) == n_noise
    assert "other particles (" in " ".join(_legend_labels(ax))
    assert _png(ax.figure, tmp_path) > MIN_PNG_BYTES


def test_embeddings_pca_bad_input():
    with pytest.raises(ValueError, match="D >= 2"):
        viz.plot_embeddings_pca(torch.zeros(5, 1), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="4 particle ids for 5"):
        viz.plot_embeddings_pca(torch.zeros(5, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="non-finite"):
        viz.plot_embeddings_pca(torch.full((5, 3), float("nan")), torch.zeros(5, dtype=torch.long))


# ----------------------------------------------------------------------------- tracks
def _truth_tracks(event) -> torch.Tensor:
    """Every particle with >= 3 hits as one track, noise and shorter particles unassigned."""
    pid = event.particle_id
    ids, counts = torch.unique(pid[pid != 0], return_counts=True)
    long = ids[counts >= 3]
    tid = torch.full_like(pid, -1)
    for t, p in enumerate(long.tolist()):
        tid[pid == p] = t
    return tid, len(long)


def test_tracks_perfect_reconstruction_all_matched(event, tmp_path):
    tid, n_tracks = _truth_tracks(event)
    truth_ax, reco_ax = viz.plot_tracks(event, tid)
    n_particles = len(torch.unique(event.particle_id[event.particle_id != 0]))
    truth_lines = [c for c in truth_ax.collections if isinstance(c, LineCollection)]
    assert len(truth_lines[0].get_segments()) == n_particles  # one polyline per particle
    labels = _legend_labels(reco_ax)
    assert f"DM-matched tracks ({n_tracks}, colour = particle)" in labels
    assert "other tracks (0)" in labels
    matched = [c for c in reco_ax.collections if isinstance(c, LineCollection)][0]
    assert len(matched.get_segments()) == n_tracks
    # a matched track is drawn in its particle's colour, the same as its truth twin
    p0 = int(event.particle_id[tid == 0][0])
    truth_colour = viz.particle_colors(event.particle_id)[(event.particle_id == p0).numpy()][0]
    np.testing.assert_allclose(matched.get_colors()[0], truth_colour)
    assert truth_ax.get_xlabel() == "x [mm]" and reco_ax.get_aspect() == 1.0
    assert _png(truth_ax.figure, tmp_path) > MIN_PNG_BYTES


def test_tracks_merged_track_is_fake_and_overlay(event):
    tid, n_tracks = _truth_tracks(event)
    # merge the three longest tracks into one: it stays DM-matched (to the longest particle,
    # whose hits are all on it) only if that particle holds more than half of its hits
    sizes = torch.bincount(tid[tid >= 0])
    order = torch.argsort(sizes, descending=True)
    a, b, c = order[:3].tolist()
    merged = tid.clone()
    merged[(tid == b) | (tid == c)] = a
    fake_expected = int(sizes[a].item() <= 0.5 * (sizes[a] + sizes[b] + sizes[c]).item())
    (ax,) = viz.plot_tracks(event, merged, plt.figure().gca(), view="rz")
    labels = _legend_labels(ax)
    assert f"other tracks ({fake_expected})" in labels
    assert f"DM-matched tracks ({n_tracks - 3 + 1 - fake_expected}, colour = particle)" in labels
    assert any(c.get_label().startswith("true particles (") for c in ax.collections)
    assert ax.get_xlabel() == "z [mm]"
    with pytest.raises(ValueError, match="track_id has 3 entries"):
        viz.plot_tracks(event, torch.zeros(3, dtype=torch.long))


# ----------------------------------------------------------------------------- efficiency
def test_efficiency_points_and_errors(event, tmp_path):
    rows = [{"lo": -1.0, "hi": 0.0, "n": 4, "n_matched": 3, "efficiency": 0.75,
             "error": math.sqrt(0.75 * 0.25 / 4)},
            {"lo": 0.0, "hi": 1.0, "n": 0, "n_matched": 0, "efficiency": float("nan"), "error": float("nan")},
            {"lo": 1.0, "hi": 3.0, "n": 10, "n_matched": 5, "efficiency": 0.5}]  # no "error": computed
    ax = viz.plot_efficiency(rows, by="eta", label="run A")
    line = ax.lines[0]
    np.testing.assert_allclose(line.get_xdata(), [-0.5, 2.0])  # the empty bin is left out
    np.testing.assert_allclose(line.get_ydata(), [0.75, 0.5])
    ybars = [c for c in ax.collections if isinstance(c, LineCollection)][-1].get_segments()
    np.testing.assert_allclose([s[1, 1] - s[0, 1] for s in ybars],
                               [2 * math.sqrt(0.75 * 0.25 / 4), 2 * math.sqrt(0.25 / 10)])
    assert "run A" in _legend_labels(ax) and ax.get_xlabel() == r"particle $\eta$"
    assert _png(ax.figure, tmp_path) > MIN_PNG_BYTES


def test_efficiency_vs_pt_from_summary(event):
    tid, _ = _truth_tracks(event)
    rows = efficiency_table(tid, event.particle_id, event.pt, event.particle_eta, PT_BINS, by="pt")
    ax = viz.plot_efficiency({"efficiency_vs_pt": rows}, by="pt")
    assert ax.get_xscale() == "log" and "[GeV]" in ax.get_xlabel()
    filled = [r for r in rows if r["n"] > 0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [r["efficiency"] for r in filled])
    # a perfect reconstruction is fully efficient above any pT
    assert all(r["efficiency"] == 1.0 for r in filled)
    with pytest.raises(KeyError, match="efficiency_vs_eta"):
        viz.plot_efficiency({"efficiency_vs_pt": rows}, by="eta")
    with pytest.raises(ValueError, match="by must be"):
        viz.plot_efficiency(rows, by="phi")


def test_report_efficiency_png_keeps_backend(event, tmp_path):
    tid, _ = _truth_tracks(event)
    summary = {"efficiency_vs_pt": efficiency_table(tid, event.particle_id, event.pt,
                                                    event.particle_eta, PT_BINS, by="pt"),
               "efficiency_vs_eta": efficiency_table(tid, event.particle_id, event.pt,
                                                     event.particle_eta, ETA_BINS, by="eta")}
    backend = matplotlib.get_backend()
    n_figs = len(plt.get_fignums())
    path = save_efficiency_plots(summary, tmp_path / "eff.png")
    assert path.stat().st_size > MIN_PNG_BYTES
    assert matplotlib.get_backend() == backend and len(plt.get_fignums()) == n_figs


# ----------------------------------------------------------------------------- training curves
def test_training_curves_from_csvlogger_file(tmp_path):
    # CSVLogger layout: one row per logging call, blank where a key was not logged
    csv = tmp_path / "metrics.csv"
    csv.write_text("epoch,step,train/loss,val/loss,val/rankme\n"
                   "0,1,0.9,,\n0,3,0.7,,\n0,4,,0.8,12.5\n0,5,0.6,,\n0,9,,0.55,13.0\n")
    ax = viz.plot_training_curves(csv, ["train/loss", "val/loss"])
    by_label = {line.get_label(): line for line in ax.lines}
    np.testing.assert_array_equal(by_label["train/loss"].get_xdata(), [1, 3, 5])
    np.testing.assert_allclose(by_label["train/loss"].get_ydata(), [0.9, 0.7, 0.6])
    np.testing.assert_allclose(by_label["val/loss"].get_ydata(), [0.8, 0.55])
    assert ax.get_xlabel() == "training step"
    ax2 = viz.plot_training_curves(csv, "val/rankme", logy=True)
    assert ax2.get_ylabel() == "val/rankme" and ax2.get_yscale() == "log"
    with pytest.raises(KeyError, match=r"no column\(s\) \['val/jepa_loss'\].*columns"):
        viz.plot_training_curves(csv, ["val/jepa_loss"])
    with pytest.raises(FileNotFoundError, match="no metrics file"):
        viz.plot_training_curves(tmp_path / "missing.csv", "val/loss")
    assert _png(ax.figure, tmp_path) > 5_000
