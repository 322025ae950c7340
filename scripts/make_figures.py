#!/usr/bin/env python
"""The figures a reader of the README sees, in ``docs/figures/`` (``make figures``).

    python scripts/make_figures.py            # docs/figures/label_curve.png, event_display.png
    python scripts/make_figures.py --out DIR  # somewhere else

* ``label_curve.png``: TrackML score vs labelled events for each arm of the ``label_curve``
  section of ``benchmarks/results/headline.json`` that has runs (scratch; JEPA arms once they
  are added), mean with min-max bars over the per-seed scores, and the small config's ceiling
  from ``tracking``; skipped (the existing file kept) while no arm has runs.
* ``event_display.png``: one simulated event of the small configs (trackml preset, 150
  particles, |eta| < 2.5, fixed seed): hits by particle, the radius graph's true and fake
  edges, and one draw of the JEPA context and target regions (xy and rz), built with the
  package's own simulator, converter, ``BuildGraph``, ``RegionMasker`` and ``gnn_jepa.viz``
  with the graph and masker settings of ``configs/pretrain/trackml_small.yaml``.

Deterministic: fixed seeds, one thread, and PNG metadata without the matplotlib version, so a
rerun writes identical bytes on the same software stack.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
HEADLINE = REPO / "benchmarks" / "results" / "headline.json"
PRETRAIN_CONFIG = REPO / "configs" / "pretrain" / "trackml_small.yaml"
OUT = REPO / "docs" / "figures"

EVENT_SEED = 1  # simulator seed of the displayed event
EVENT_ID = 1
MASK_SEED = 0   # torch generator seed of the region draw
DPI = {"label_curve": 130, "event_display": 90}  # event display: 1080 x 990 px, ~0.6 MB
EDGE_ZOOM = (-50, 650)  # mm, x and y range of the graph panel
#: savefig options that keep the PNG bytes independent of the matplotlib version / date
SAVE_KW = {"metadata": {"Software": None}, "pil_kwargs": {"optimize": False}}

ARM_STYLE = {  # arm -> (colour, marker, x offset factor so the bars do not overlap)
    "scratch": ("tab:blue", "o", 1.0),
    "jepa": ("tab:orange", "s", 1.06),
    "finetune": ("tab:orange", "s", 1.06),
    "frozen": ("tab:green", "^", 1.12),
    "mixing1500_lr4_last": ("black", "s", 1.06),  # the shipped recipe
    "mixing1500_last_frozen": ("tab:green", "^", 1.12),
    "mixing1500_lr4": ("tab:red", "D", 0.94),
    "mixing1500": ("lightcoral", "d", 0.89),
    "mixing": ("tab:purple", "v", 1.18),
    "mixing1500_frozen": ("yellowgreen", "^", 0.84),
}

__all__ = ["label_curve_figure", "event_display_figure", "small_config", "main"]


# ---------------------------------------------------------------------------- label curve
def _small_ceiling(headline: dict) -> float | None:
    """The ceiling on the curve's own test events: that of a tracking entry read from a label
    curve's source file (the same runs), else of the first small-config tracking entry (name
    ``small...``) that has one."""
    tracking = headline.get("tracking", {})
    sources = {m.get("source") for m in headline.get("label_curve", {}).get("meta", {}).values()}
    for e in tracking.values():
        if e.get("source") in sources and e.get("ceiling") is not None:
            return e["ceiling"]
    for name, e in tracking.items():
        if name.startswith("small") and e.get("ceiling") is not None:
            return e["ceiling"]
    return None


def _legend(meta: dict, arm: str) -> str:
    """An arm's legend: its meta's short ``legend``, else its table ``row``, else its name."""
    return meta.get("legend") or meta.get("row") or arm


def label_curve_figure(headline: dict, figsize: tuple[float, float] = (6.4, 4.4)):
    """TrackML score vs labelled events (log x), one series per arm with runs (mean, min-max
    bars over its per-seed scores); arms without runs are left out. Raises ValueError when no
    arm has any run."""
    lc = headline["label_curve"]
    meta = lc.get("meta", {})
    arms = {arm: curve for arm, curve in lc.items() if arm != "meta" and curve}
    if not arms:
        raise ValueError("headline.json: no label_curve arm has runs yet")
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    for arm, curve in arms.items():
        ns = sorted(curve, key=int)
        scores = [curve[n] for n in ns]
        color, marker, shift = ARM_STYLE.get(arm, ("0.3", "D", 1.0))
        x = [int(n) * shift for n in ns]
        y = [statistics.fmean(s) for s in scores]
        err = [[m - min(s) for m, s in zip(y, scores)], [max(s) - m for m, s in zip(y, scores)]]
        runs = sorted({len(s) for s in scores})
        ax.errorbar(x, y, yerr=err, color=color, marker=marker, capsize=4, linewidth=1.6,
                    markersize=6, label=f"{_legend(meta.get(arm, {}), arm)} "
                                        f"({'/'.join(map(str, runs))} seed{'' if runs == [1] else 's'})")
    ceiling = _small_ceiling(headline)
    if ceiling is not None:
        ax.axhline(ceiling, color="0.35", linestyle="--", linewidth=1.0,
                   label=f"ceiling: truth edge scores on the same graphs ({ceiling:.3f})")
    ns = sorted({int(n) for curve in arms.values() for n in curve})
    ax.set_xscale("log")
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlim(ns[0] / 1.6, ns[-1] * 1.8)
    # the scores' range, not [0, 1]: the arms differ by hundredths
    values = [v for curve in arms.values() for s in curve.values() for v in s]
    top = max([*values, ceiling or 0.0])
    ax.set_ylim(max(0.0, math.floor((min(values) - 0.01) * 20) / 20), min(1.0, top + 0.015))
    ax.set_xlabel("labelled training events (150 particles each)")
    test_events = {meta.get(arm, {}).get("test_events") for arm in arms}
    ax.set_ylabel(f"TrackML score ({test_events.pop()} held-out events)"
                  if len(test_events) == 1 and None not in test_events
                  else "TrackML score (held-out events)")
    ax.set_title("Track finding vs labelled events", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    note = "marker = mean, bar = min-max over seeds"
    if len(arms) > 1:
        note += ";\narms shifted sideways for legibility"
    ax.text(0.02, 0.97, note, transform=ax.transAxes, fontsize=7, color="0.35", va="top")
    return fig


# ---------------------------------------------------------------------------- event display
def small_config(path: str | Path = PRETRAIN_CONFIG) -> dict:
    """Simulator, graph and masker settings of the small pretraining config."""
    import yaml

    path = Path(path)
    cfg = yaml.safe_load(path.read_text())
    try:
        return {"simulator": dict(cfg["data"]["simulator"]), "graph": dict(cfg["data"]["graph"]),
                "masker": dict(cfg["model"]["init_args"]["masker"])}
    except (KeyError, TypeError) as e:
        raise KeyError(f"{path}: expected data.simulator, data.graph and "
                       f"model.init_args.masker ({e})") from None


def event_display_figure(figsize: tuple[float, float] = (12.0, 11.0), *, seed: int = EVENT_SEED,
                         event_id: int = EVENT_ID, mask_seed: int = MASK_SEED,
                         config: str | Path = PRETRAIN_CONFIG, num_particles: int | None = None):
    """2x2 panels of one simulated event: hits by particle (xy), the graph's edges (xy),
    the JEPA context and target regions in xy and in rz. Returns the Figure."""
    import torch

    from gnn_jepa import viz
    from gnn_jepa.data.convert import event_to_data
    from gnn_jepa.data.simulator import Simulator
    from gnn_jepa.graph.transform import BuildGraph
    from gnn_jepa.masks import RegionMasker

    cfg = small_config(config)
    sim_kw = dict(cfg["simulator"])
    preset = sim_kw.pop("preset")
    if "eta_range" in sim_kw:
        sim_kw["eta_range"] = tuple(sim_kw["eta_range"])
    if num_particles is not None:
        sim_kw["num_particles"] = num_particles
    event = Simulator.from_preset(preset, **sim_kw).simulate(seed=seed, event_id=event_id)
    data = BuildGraph(**cfg["graph"])(event_to_data(event))
    masker_kw = {k: (tuple(v) if isinstance(v, list) and k.endswith("width") else v)
                 for k, v in cfg["masker"].items()}
    masks = RegionMasker(**masker_kw)(data, torch.Generator().manual_seed(mask_seed))

    fig, axes = plt.subplots(2, 2, figsize=figsize, layout="constrained")
    (a, b), (c, d) = axes
    viz.plot_event_xy(data, ax=a, marker_size=7)
    a.set_title(f"Simulated event ({sim_kw.get('num_particles')} particles, {preset} preset, "
                f"|eta| < {max(abs(x) for x in sim_kw.get('eta_range', (0, 0)))}): "
                f"{data.num_nodes} hits", fontsize=10)
    viz.plot_graph_edges(data, ax=b, linewidth=0.5)
    n_pairs = data.edge_index.shape[1] // 2
    g = cfg["graph"]
    pos = data.pos.numpy()
    b.scatter(pos[:, 0], pos[:, 1], s=4, c="k", linewidths=0, zorder=5)  # hits above the edges
    b.set_xlim(*EDGE_ZOOM)
    b.set_ylim(*EDGE_ZOOM)
    b.set_title(f"Graph ({g.get('kind')} frame + {g.get('pair_filter')} filter, radius "
                f"{g.get('radius')}): {n_pairs} hit pairs,\nzoom on x, y in "
                f"[{EDGE_ZOOM[0]}, {EDGE_ZOOM[1]}] mm; true = both hits on one particle",
                fontsize=10)
    viz.plot_regions(data, masks, ax=c, view="xy", marker_size=6)
    c.set_title(f"JEPA masks (xy): context + {masks.num_regions} target regions "
                f"({cfg['masker'].get('target_shape')})", fontsize=10)
    viz.plot_regions(data, masks, ax=d, view="rz", marker_size=6)
    d.set_title("JEPA masks (rz): each target is a wedge x eta band x r half", fontsize=10)
    for ax in (a, c):
        ax.set_xlim(-1100, 1100)
        ax.set_ylim(-1100, 1100)
    fig.suptitle(f"gnn_jepa event display: simulator seed {seed}, event {event_id}; masks drawn "
                 f"with generator seed {mask_seed} (configs/pretrain/trackml_small.yaml settings)",
                 fontsize=11)
    return fig


# ---------------------------------------------------------------------------- main
def save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI.get(path.stem, 100), **SAVE_KW)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(OUT), help="output folder (default docs/figures)")
    p.add_argument("--headline", default=str(HEADLINE), help="headline JSON")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    headline = json.loads(Path(args.headline).read_text())
    try:
        curve = label_curve_figure(headline)
    except ValueError as e:  # no runs yet: keep the existing label_curve.png
        print(f"skipped {out / 'label_curve.png'}: {e}")
        curve = None
    paths = [save(curve, out / "label_curve.png")] if curve is not None else []
    for path in paths + [save(event_display_figure(), out / "event_display.png")]:
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
