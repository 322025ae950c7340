"""``gnn-jepa fit-graph``: fit the learned graph stage on the labelled events of any
detector (a TrackML CSV folder or ColliderML Parquet shards), choose its radius, and report
what it keeps on held-out events.

    gnn-jepa fit-graph /data/my_events --out graphs/my_detector \\
        [--source auto|trackml|colliderml] \\
        [--fit-events 8] [--eval-events 4] [--offset 0] \\
        [--target-degree 25 | --radius R] [--radii 0.08,0.12] [--steps 800] \\
        [--compare '{"kind": "learned", "embedding": "trackml", ...}'] [--json]

The shipped learned graph (``embedding: trackml, pair_filter: trackml_all_pt``) was fitted on
the simulator's TrackML-like detector; its layer-pair filter knows that detector's
(volume, layer) ids only. This command makes the same pair of files for another detector,
as ``studies/learned_graph`` made the shipped ones (``--pt-weight 1 --filter-pt-min 0``):

1. The events: a folder of TrackML events (``event<id>-hits/-truth/-particles.csv[.gz]``,
   :func:`~gnn_jepa.data.trackml.list_events`, sorted by event id), or ColliderML shards
   (a ``*_tracker_hits`` folder, or a folder holding such folders directly or under
   ``data/``, with their ``*_particles`` folders; read by
   :class:`~gnn_jepa.data.colliderml.ColliderMLReader` in sorted event-id order).
   ``--source auto`` (the default) tells them apart by what the folder holds. Events are
   taken in that order: ``offset .. +fit_events`` fit, the next ``eval_events`` are held
   out. Every one needs its truth (TrackML: the hits, truth and particles files; ColliderML:
   the particles shards, without which the truth is unknown); an event without it is an
   error naming its file and event.
2. A :class:`~gnn_jepa.graph.metric_learning.HitEmbedding` is trained on the true segments
   of all particles of the fit events, all pT alike (``pt_weight=1``), with hinge margin
   ``0.1 * sqrt(9500 / hits per event)`` unless ``--margin`` (the shipped embedding: 0.1 at
   ~9.5k hits per event; at fixed degree the radius scales like 1 / sqrt(density)), for
   ``--steps`` steps (800: fitted on 8 events of 1,000 simulated particles, the graph at
   degree 25 kept 92.8% of all held-out segments after 400 steps, 95.8-96.2% after 800,
   96.2% after 1,600).
3. A :class:`~gnn_jepa.graph.pair_filter.LayerPairFilter` is fitted on the true segments
   of all particles (``pt_min=0``) of the fit events.
4. The radius: the one at which the filtered graph has mean degree ``--target-degree`` on
   the fit events (exact: the distances of the filtered pairs are sorted), rounded up to 4
   significant digits; or ``--radius``.
5. With ``--edge-filter-efficiency E``: an :class:`~gnn_jepa.graph.edge_filter.EdgeFilter`
   (a per-pair MLP on the pair's geometry) is trained on the fit events' graphs at that
   radius and cut so that a share ``E`` of their true segments survives; the graph then
   ends with it (``edge_filter`` in the graph block; the degree target applies before it).
6. On the held-out events, for the chosen graph (and, with an edge filter, the same graph
   without it), each ``--radii`` value and each
   ``--compare`` graph (e.g. the shipped presets): edge efficiency over all true segments
   and over those of particles with pT > ``--pt-min``, mean degree, purity, the hits on
   (volume, layer) ids the graph's filter never saw, and the graph's ceiling (TrackML score
   and DM efficiency of walkthrough tracks built from truth edge scores,
   :func:`~gnn_jepa.evaluation.ceiling.tracking_ceiling`). A table, or JSON with ``--json``.

Writes into ``--out``: ``embedding.pt``, ``pair_filter.json``, ``edge_filter.pt`` (with an
edge filter), ``graph.yaml`` (the config's ``graph:`` block, pointing at those files) and
``fit_graph.json`` (the report).

About 30 s on one CPU thread for 8 + 4 events of ~9.3k hits (1,000 simulated particles),
most of it training; ``--steps``, ``--hidden`` and ``--layers`` make it smaller for tests.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Sequence

import torch

from gnn_jepa.data.colliderml import (HITS_SUFFIX, PARTICLES_SUFFIX, ColliderMLReader,
                                      hits_folders)
from gnn_jepa.data.convert import event_to_data
from gnn_jepa.data.event import Event
from gnn_jepa.data.trackml import TrackMLFormatError, list_events, read_event
from gnn_jepa.evaluation.graph_scan import pooled_graph_metrics
from gnn_jepa.evaluation.report import strict_json_tree
from gnn_jepa.graph.edge_filter import fit_edge_filter
from gnn_jepa.graph.edges import true_segments
from gnn_jepa.graph.metric_learning import HitEmbedding, LearnedFrame, train_hit_embedding
from gnn_jepa.graph.pair_filter import LayerPairFilter, UnseenLayerWarning
from gnn_jepa.graph.radius import pair_distance2, radius_pairs
from gnn_jepa.graph.transform import BuildGraph

__all__ = ["EventRef", "evaluate_graph", "list_labelled_events", "load_labelled_events", "main",
           "radius_for_degree", "run"]

#: Hits per event at which the shipped ``trackml`` embedding was trained with margin 0.1.
REFERENCE_HITS = 9500.0
#: File names written into ``--out``.
EMBEDDING_FILE, FILTER_FILE, EDGE_FILTER_FILE, GRAPH_FILE, REPORT_FILE = (
    "embedding.pt", "pair_filter.json", "edge_filter.pt", "graph.yaml", "fit_graph.json")
PROG = "gnn-jepa fit-graph"
SOURCES = ("auto", "trackml", "colliderml")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- arguments
def _number(kind, minimum, *, strict: bool = False):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            name = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(
                f"must be {'>' if strict else '>='} {minimum:g}, got {text}")
        return value
    return parse


def _radii(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}") from None
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"every radius must be > 0, got {text!r}")
    return values


def _graph_block(text: str) -> dict:
    try:
        block = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err}): {text!r}") from None
    if not isinstance(block, dict):
        raise argparse.ArgumentTypeError(
            f"expected a JSON object of BuildGraph arguments, got {text!r}")
    return block


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Fit the learned graph stage (a hit embedding and a layer-pair filter) "
                    "on labelled events (a TrackML CSV folder or ColliderML Parquet shards), "
                    "choose the radius for "
                    "a target mean degree, and report the graph on held-out events.",
        epilog="Writes OUT/embedding.pt, OUT/pair_filter.json, OUT/edge_filter.pt (with "
               "--edge-filter-efficiency), OUT/graph.yaml (the config's graph: block, pointing "
               "at those files) and OUT/fit_graph.json (the report). "
               "Every event used needs its truth.")
    p.add_argument("data_dir", help="folder of TrackML events (event<id>-hits/-truth/"
                                    "-particles.csv[.gz]) or of ColliderML shards "
                                    "(*_tracker_hits and *_particles folders, directly or "
                                    "under data/), taken in sorted event-id order")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--source", choices=SOURCES, default="auto",
                   help="how to read DATA_DIR (auto: ColliderML if it holds *_tracker_hits "
                        "folders, TrackML if it holds event files)")
    g = p.add_argument_group("events")
    g.add_argument("--fit-events", type=_number(int, 1), default=8,
                   help="events that train the embedding and fit the filter (default 8)")
    g.add_argument("--eval-events", type=_number(int, 1), default=2,
                   help="held-out events after them, for the report (default 2)")
    g.add_argument("--offset", type=_number(int, 0), default=0,
                   help="skip this many events of the folder first (default 0)")
    g = p.add_argument_group("radius")
    r = g.add_mutually_exclusive_group()
    r.add_argument("--target-degree", type=_number(float, 0, strict=True), default=None,
                   help="mean degree of the chosen graph on the fit events (default 25)")
    r.add_argument("--radius", type=_number(float, 0, strict=True), default=None,
                   help="use this radius instead of a target degree")
    g.add_argument("--radii", type=_radii, default=[],
                   help="comma-separated radii also reported on the held-out events")
    g = p.add_argument_group("embedding")
    g.add_argument("--steps", type=_number(int, 1), default=800, help="training steps (800)")
    g.add_argument("--margin", type=_number(float, 0), default=0.0,
                   help="hinge margin (0: 0.1 * sqrt(9500 / hits per event))")
    g.add_argument("--lr", type=_number(float, 0, strict=True), default=3e-3,
                   help="Adam learning rate (3e-3)")
    g.add_argument("--dim", type=_number(int, 2), default=3, help="embedding dimension (3)")
    g.add_argument("--hidden", type=_number(int, 1), default=64, help="MLP width (64)")
    g.add_argument("--layers", type=_number(int, 1), default=3, help="MLP hidden layers (3)")
    g.add_argument("--pt-weight", type=_number(float, 0), default=1.0,
                   help="extra weight of pT > 1 GeV segments (1: the shipped all-pT preset)")
    g.add_argument("--seed", type=_number(int, 0), default=0,
                   help="seeds the embedding's init and its training samples (0)")
    g = p.add_argument_group("layer-pair filter")
    g.add_argument("--filter-pt-min", type=_number(float, 0), default=0.0,
                   help="fit on segments of particles above this pT (0: all, as shipped)")
    g.add_argument("--filter-quantile", type=float, default=0.999,
                   help="each pair's z0 and slope window covers this quantile of its "
                        "segments (0.999), then padded")
    g = p.add_argument_group("edge filter")
    g.add_argument("--edge-filter-efficiency", type=_number(float, 0), default=0.0,
                   help="end the graph with a learned per-pair filter keeping this share of "
                        "the fit events' true segments, e.g. 0.995 (0: no edge filter)")
    g.add_argument("--edge-filter-steps", type=_number(int, 1), default=1500,
                   help="its training steps (1500)")
    g = p.add_argument_group("report")
    g.add_argument("--pt-min", type=_number(float, 0), default=1.0,
                   help="high-pT efficiency and reconstructable particles: pT > this (1 GeV)")
    g.add_argument("--compare", type=_graph_block, action="append", default=[],
                   metavar="GRAPH_JSON",
                   help="also report this graph (a config's graph: block as JSON, e.g. the "
                        "shipped presets); repeatable")
    g.add_argument("--json", action="store_true", help="print JSON instead of the table")
    return p


# --------------------------------------------------------------------------- events
def _truth_file(prefix: Path) -> Path | None:
    for suf in (".csv", ".csv.gz"):
        path = Path(f"{prefix}-truth{suf}")
        if path.exists():
            return path
    return None


class EventRef:
    """One event of the folder: its ``name`` (in the report) and how to read it with truth.

    :meth:`read`, :attr:`where` (the file, or file and event, named when the event cannot be
    converted) and :attr:`truth_where` (named when its truth has no true segment) are what
    :func:`load_labelled_events` needs; the subclasses read a TrackML event or a ColliderML
    one.
    """

    name: str
    where: str
    truth_where: str

    def read(self) -> Event:
        """The event with its truth; ValueError naming the file and event otherwise."""
        raise NotImplementedError


class TrackMLEventRef(EventRef):
    """The TrackML event at ``prefix`` (``dir/event<id>``)."""

    def __init__(self, prefix: Path):
        self.prefix = Path(prefix)
        self.name = self.prefix.name
        self.where = self.truth_where = str(self.prefix)

    def read(self) -> Event:
        prefix = self.prefix
        truth = _truth_file(prefix)
        if truth is None:
            raise ValueError(f"{prefix}: no truth file ({prefix.name}-truth.csv or .csv.gz): "
                             f"events without truth cannot be fitted (fit-graph learns from "
                             f"the true segments of labelled events)")
        self.truth_where = str(truth)
        try:
            return read_event(prefix, parts=("hits", "truth", "particles"))
        except (TrackMLFormatError, ValueError) as err:
            raise ValueError(f"{prefix}: {err}") from err


class ColliderMLEventRef(EventRef):
    """Event ``index`` of a :class:`ColliderMLReader` (named ``<process> event <id>``)."""

    def __init__(self, reader: ColliderMLReader, index: int):
        self.reader, self.index = reader, index
        entry = reader.entries[index]
        process = entry.hits.file.parent.name[: -len(HITS_SUFFIX)]
        self.name = f"{process} event {entry.event_id}"
        self.where = self.truth_where = reader.name(index)

    def read(self) -> Event:
        entry = self.reader.entries[self.index]
        if not entry.particles_known:
            hits_dir = entry.hits.file.parent
            particles = hits_dir.name[: -len(HITS_SUFFIX)] + PARTICLES_SUFFIX
            expected = hits_dir.parent / particles
            if hits_dir.parent.name == "data" and hits_dir.parent.parent.name == hits_dir.name:
                expected = hits_dir.parent.parent.parent / particles  # the package's layout
            raise ValueError(
                f"{self.reader.name(self.index)}: no particles shards ({expected} "
                f"does not exist), so the truth is unknown: fit-graph learns from the true "
                f"segments of labelled events and needs the {particles} shards next to the "
                f"{hits_dir.name} ones")
        try:
            return self.reader.read(self.index)
        except (TrackMLFormatError, ValueError) as err:  # ColliderMLFormatError included
            raise ValueError(str(err)) from err  # it names the file and the event


def list_labelled_events(data_dir: str | Path, source: str = "auto") -> tuple[str, list[EventRef]]:
    """The events of ``data_dir`` in sorted event-id order, and which source read them.

    Args:
        data_dir: a TrackML CSV folder or a ColliderML folder (see the module doc).
        source: ``"trackml"``, ``"colliderml"`` or ``"auto"``: ColliderML when the folder
            holds ``*_tracker_hits`` folders (itself being one, or directly, or under
            ``data/``), TrackML when it holds TrackML event files, an error when both.

    Returns:
        ``(source, events)``; ``events`` is empty when the folder holds none of that source.

    Raises:
        ValueError: ``source`` is unknown, or ``auto`` finds both kinds of events.
        ImportError: ColliderML shards but no pyarrow.
        ColliderMLFormatError: a shard lacks ``event_id`` or repeats an event.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    data_dir = Path(data_dir)
    cml = hits_folders(data_dir) if source != "trackml" else []
    csv = list_events(data_dir) if source != "colliderml" else []
    if source == "auto":
        if cml and csv:
            raise ValueError(
                f"'{data_dir}' holds both TrackML events ({len(csv)}) and ColliderML shards "
                f"({', '.join(f.name for f in cml)}): pass --source trackml or --source "
                "colliderml")
        source = "colliderml" if cml else "trackml"
    if source == "trackml":
        return source, [TrackMLEventRef(p) for p in csv]
    if not cml:
        return source, []
    reader = ColliderMLReader(data_dir)
    return source, [ColliderMLEventRef(reader, i) for i in range(len(reader))]


def load_labelled_events(events: Sequence[EventRef | Path]) -> list:
    """Read and convert events that must carry truth; errors name the file (and event).

    Args:
        events: :class:`EventRef`\\ s (:func:`list_labelled_events`), or TrackML prefixes.

    Raises:
        ValueError: an event has no truth (no TrackML truth file, no ColliderML particles
            shards), or its truth has no true segment (every hit noise, or no particle with
            two hits), or it breaks its format.
    """
    datas = []
    for ref in events:
        if not isinstance(ref, EventRef):
            ref = TrackMLEventRef(Path(ref))
        event = ref.read()
        try:
            data = event_to_data(event)
        except ValueError as err:
            raise ValueError(f"{ref.where}: {err}") from err
        if true_segments(data.particle_id, data.hit_order).shape[1] == 0:
            raise ValueError(f"{ref.truth_where}: no true segment (every hit is noise, "
                             f"particle_id 0, or no particle has two hits): events without "
                             f"truth cannot be fitted")
        datas.append(data)
    return datas


# --------------------------------------------------------------------------- radius
def _round_up(x: float, digits: int = 4) -> float:
    """Smallest number with ``digits`` significant digits that is >= x (x > 0)."""
    step = 10.0 ** (math.floor(math.log10(x)) - digits + 1)
    out = float(f"{math.ceil(x / step - 1e-9) * step:.{digits}g}")
    return out if out >= x else float(f"{out + step:.{digits}g}")


def radius_for_degree(frame, pair_filter: LayerPairFilter, datas: Sequence, degree: float,
                      r_start: float, *, grow: float = 1.5, max_tries: int = 30) -> float:
    """Radius at which ``pair_filter`` applied to the radius graph in ``frame`` has pooled
    mean degree ``degree`` (2 x pairs / hits over all ``datas``), rounded up to 4 digits.

    Exact: the candidate pairs within a radius ``r`` large enough are filtered once, and the
    radius is the distance of the ``ceil(degree x hits / 2)``-th nearest kept pair (the
    filter's decision does not depend on the radius). ``r`` starts at ``r_start`` and grows
    by ``grow`` until enough pairs survive.
    """
    coords = [frame.coords(d.pos) for d in datas]
    need = max(1, math.ceil(degree * sum(d.num_nodes for d in datas) / 2))
    r = float(r_start)
    for _ in range(max_tries):
        d2 = []
        with warnings.catch_warnings():  # unseen layers are reported on held-out events
            warnings.simplefilter("ignore", UnseenLayerWarning)
            for c, d in zip(coords, datas):
                ei = radius_pairs(c, r, periods=frame.periods)
                ei = ei[:, pair_filter(d, ei)]
                d2.append(pair_distance2(c, ei[0], ei[1], frame.periods))
        d2 = torch.cat(d2)
        if d2.numel() >= need:
            kth = float(torch.kthvalue(d2.double().cpu(), need).values)
            return _round_up(max(math.sqrt(kth), 1e-12))
        r *= grow
    raise ValueError(f"radius_for_degree: even radius {r:.4g} gives only {d2.numel()} "
                     f"filtered pairs, fewer than the {need} of mean degree {degree}")


# --------------------------------------------------------------------------- report
def evaluate_graph(build: BuildGraph, datas: Sequence, *, pt_min: float = 1.0) -> dict:
    """Pooled truth metrics of ``build``'s graph on ``datas``: efficiencies (segment
    weighted), purity (edge weighted), mean degree (2 x pairs / hits), the hits on
    (volume, layer) ids its filter never saw, and the ceiling (mean over events).
    Warnings raised while building (e.g. :class:`UnseenLayerWarning`) are returned as
    ``"warnings"``, not shown."""
    t0 = time.perf_counter()
    unseen = nodes = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graphs = [(d, build.edges(d)) for d in datas]
        pooled = pooled_graph_metrics(graphs, pt_min, ceiling=True)
    for d, _ in graphs:
        nodes += d.num_nodes
        if build.pair_filter is not None:
            info = build.pair_filter.unseen_layers(d)
            unseen += info["hits"] if info else 0
    n = len(datas)
    return {
        "radius": build.radius,
        **pooled,
        "unseen_hit_fraction": unseen / nodes if nodes else math.nan,
        "seconds_per_event": (time.perf_counter() - t0) / n,
        "warnings": list(dict.fromkeys(str(w.message) for w in caught)),
    }


def _label(block: dict) -> str:
    name = block.get("embedding") or block.get("kind", "eta_phi")
    if block.get("pair_filter"):
        name += f" + {block['pair_filter']}"
    if block.get("edge_filter"):
        name += f" + {block['edge_filter']}"
    if block.get("union"):
        name += " + union"
    return name


def _table(out: dict) -> str:
    pt = format(out["pt_min"], "g")
    cols = (f"{'graph':<34} {'radius':>8} {'degree':>7} {'eff(all)':>9} "
            f"{'eff(pT>' + pt + ')':>10} {'purity':>7} {'unseen hits':>11} "
            f"{'ceiling TrackML':>15} {'ceiling DM':>10}")
    lines = [cols]
    def num(x, spec: str, width: int) -> str:
        return format(x, spec) if isinstance(x, (int, float)) else "-".rjust(width)

    for row in out["rows"]:
        label = row["graph"] if len(row["graph"]) <= 34 else row["graph"][:31] + "..."
        lines.append(f"{label:<34} {num(row['radius'], '8.4g', 8)} {num(row['mean_degree'], '7.1f', 7)} "
                     f"{num(row['efficiency'], '9.4f', 9)} {num(row['efficiency_pt_min'], '10.4f', 10)} "
                     f"{num(row['purity'], '7.4f', 7)} {num(row['unseen_hit_fraction'], '11.1%', 11)} "
                     f"{num(row['ceiling_trackml_score'], '15.4f', 15)} "
                     f"{num(row['ceiling_dm_efficiency'], '10.4f', 10)}")
    for row in out["rows"]:
        for w in row["warnings"]:
            lines.append(f"warning ({row['graph']}): {w}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command
def run(argv: Sequence[str]) -> dict:
    """Parse ``argv``, fit, write the files, print the report; returns the report dict."""
    p = _parser()
    args = p.parse_args(list(argv))
    t_start = time.perf_counter()
    if not 0.5 < args.filter_quantile <= 1.0:
        p.error(f"--filter-quantile must be in (0.5, 1], got {args.filter_quantile}")
    if args.edge_filter_efficiency > 1.0:
        p.error(f"--edge-filter-efficiency must be in (0, 1] (0: none), got "
                f"{args.edge_filter_efficiency}")
    compare = []
    for block in args.compare:
        try:
            compare.append((block, BuildGraph(**block)))
        except (TypeError, ValueError, FileNotFoundError) as err:
            p.error(f"--compare {json.dumps(block)}: {err}")
    data_dir = Path(args.data_dir)
    if not data_dir.exists():
        p.error(f"data folder '{data_dir}' does not exist")
    if not data_dir.is_dir():
        p.error(f"data folder '{data_dir}' is not a folder")
    try:
        source, prefixes = list_labelled_events(data_dir, args.source)
    except TrackMLFormatError as err:  # a ColliderML shard without event_id or a repeat
        raise SystemExit(f"{PROG}: {err}") from None
    except (ValueError, ImportError) as err:  # both kinds of events; pyarrow missing
        p.error(str(err))
    if not prefixes:
        if source == "colliderml":
            p.error(f"no ColliderML events in '{data_dir}' (expected *{HITS_SUFFIX} folders of "
                    f"*.parquet shards, directly or under data/, with their *{PARTICLES_SUFFIX} "
                    "folders)")
        p.error(f"no TrackML events in '{data_dir}' (expected event<digits>-hits.csv or "
                f"-hits.csv.gz files with their -truth and -particles files)"
                + ("" if args.source == "trackml" else
                   f", nor ColliderML shards (*{HITS_SUFFIX} folders)"))
    need = args.offset + args.fit_events + args.eval_events
    if len(prefixes) < need:
        p.error(f"'{data_dir}' holds {len(prefixes)} events; --offset {args.offset} + "
                f"--fit-events {args.fit_events} + --eval-events {args.eval_events} need {need}")
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        p.error(f"--out '{out_dir}' exists and is not a folder")
    target = 25.0 if args.target_degree is None and args.radius is None else args.target_degree

    fit_p = prefixes[args.offset:args.offset + args.fit_events]
    eval_p = prefixes[args.offset + args.fit_events:need]
    t0 = time.perf_counter()
    try:
        fit = load_labelled_events(fit_p)
        held = load_labelled_events(eval_p)
    except ValueError as err:
        raise SystemExit(f"{PROG}: {err}") from None
    read_s = time.perf_counter() - t0
    hits = sum(d.num_nodes for d in fit) / len(fit)
    margin = args.margin if args.margin > 0 else 0.1 * math.sqrt(REFERENCE_HITS / hits)
    _log(f"{PROG}: {len(fit)} fit events ({fit_p[0].name} .. {fit_p[-1].name}, {hits:.0f} "
         f"hits/event), {len(held)} held out ({eval_p[0].name} .. {eval_p[-1].name}); "
         f"read in {read_s:.1f} s")

    t0 = time.perf_counter()
    with torch.random.fork_rng():  # seeded init without touching the global RNG
        torch.manual_seed(args.seed)
        model = HitEmbedding(dim=args.dim, hidden=args.hidden, num_layers=args.layers)
    _log(f"training {model!r} for {args.steps} steps, margin {margin:.4g}")
    model, history = train_hit_embedding(
        fit, model, steps=args.steps, lr=args.lr, margin=margin, pt_weight=args.pt_weight,
        pt_min_positive=0.0, seed=args.seed, log_every=max(args.steps // 4, 1), log=_log)
    train_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    try:
        filt = LayerPairFilter.fit(fit, pt_min=args.filter_pt_min,
                                   quantile=args.filter_quantile)
    except ValueError as err:
        raise SystemExit(f"{PROG}: {err}") from None
    filter_s = time.perf_counter() - t0
    _log(f"{filt!r} in {filter_s:.1f} s")

    out_dir.mkdir(parents=True, exist_ok=True)
    emb_path, filt_path = out_dir / EMBEDDING_FILE, out_dir / FILTER_FILE
    fit_ids = [p.name for p in fit_p]
    model.save(emb_path, data_dir=str(data_dir), fit_events=fit_ids, margin=margin,
               steps=args.steps, pt_weight=args.pt_weight, seed=args.seed)
    filt.save(filt_path)

    t0 = time.perf_counter()
    frame = LearnedFrame(str(emb_path))
    if args.radius is not None:
        radius = float(args.radius)
    else:
        radius = radius_for_degree(frame, LayerPairFilter.load(filt_path), fit, target, margin)
    radius_s = time.perf_counter() - t0
    block = {"kind": "learned", "embedding": str(emb_path), "pair_filter": str(filt_path),
             "radius": radius}
    _log(f"radius {radius:g}" + (f" (mean degree {target:g} on the fit events, "
                                 f"{radius_s:.1f} s)" if args.radius is None else ""))

    edge_filter_s, edge_filter = 0.0, None
    if args.edge_filter_efficiency > 0:
        t0 = time.perf_counter()
        unfiltered = BuildGraph(**block)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnseenLayerWarning)
            graphs = [(d, unfiltered.edges(d)) for d in fit]
        try:
            edge_filter = fit_edge_filter(graphs, efficiency=args.edge_filter_efficiency,
                                          steps=args.edge_filter_steps, seed=args.seed, log=_log)
        except ValueError as err:
            raise SystemExit(f"{PROG}: {err}") from None
        edge_filter.save(out_dir / EDGE_FILTER_FILE, data_dir=str(data_dir), fit_events=fit_ids,
                         efficiency=args.edge_filter_efficiency, steps=args.edge_filter_steps,
                         radius=radius, seed=args.seed)
        block["edge_filter"] = str(out_dir / EDGE_FILTER_FILE)
        edge_filter_s = time.perf_counter() - t0
        _log(f"{edge_filter!r} in {edge_filter_s:.1f} s")

    t0 = time.perf_counter()
    rows = []
    for r in [radius] + [r for r in args.radii if r != radius]:
        row = evaluate_graph(BuildGraph(**{**block, "radius": r}), held, pt_min=args.pt_min)
        rows.append({"graph": "fitted (chosen)" if r == radius else "fitted", **row})
    if edge_filter is not None:
        plain = {k: v for k, v in block.items() if k != "edge_filter"}
        rows.append({"graph": "fitted, no edge filter",
                     **evaluate_graph(BuildGraph(**plain), held, pt_min=args.pt_min)})
    for cblock, build in compare:
        rows.append({"graph": _label(cblock), "block": cblock,
                     **evaluate_graph(build, held, pt_min=args.pt_min)})
    eval_s = time.perf_counter() - t0

    chosen = rows[0]
    out = {
        "command": f"{PROG} " + shlex.join(argv), "data_dir": str(data_dir), "source": source,
        "fit_events": fit_ids, "eval_events": [p.name for p in eval_p],
        "hits_per_event": hits, "held_out_hits_per_event":
            sum(d.num_nodes for d in held) / len(held),
        "pt_min": args.pt_min, "margin": margin, "embedding": repr(model),
        "embedding_config": model.config,
        "train_history": [history[0], history[-1]] if history else [],
        "pair_filter": repr(filt), "pair_filter_config": filt.config,
        "target_degree": target, "radius": radius, "graph": block,
        "edge_filter": repr(edge_filter) if edge_filter is not None else None,
        "files": {"embedding": str(emb_path), "pair_filter": str(filt_path),
                  **({"edge_filter": block["edge_filter"]} if edge_filter is not None else {}),
                  "graph": str(out_dir / GRAPH_FILE), "report": str(out_dir / REPORT_FILE)},
        "rows": rows,
        "seconds": {"read": read_s, "train": train_s, "filter": filter_s, "radius": radius_s,
                    "edge_filter": edge_filter_s, "evaluate": eval_s},
    }
    block_json = json.dumps(block)
    (out_dir / GRAPH_FILE).write_text(
        f"# {out['command']}\n"
        f"# fitted on {len(fit)} events; on {len(held)} held-out events: edge efficiency "
        f"{chosen['efficiency']:.4f} (all), {chosen['efficiency_pt_min']:.4f} "
        f"(pT > {args.pt_min:g}), mean degree {chosen['mean_degree']:.1f}, ceiling TrackML "
        f"{chosen['ceiling_trackml_score']:.4f}\n"
        f"graph: {block_json}\n")
    out["seconds"]["total"] = time.perf_counter() - t_start
    # strict JSON: an undefined figure (the purity of a graph without edges) is null
    out, _ = strict_json_tree(out)
    text = json.dumps(out, indent=1, allow_nan=False)
    (out_dir / REPORT_FILE).write_text(text + "\n")
    if args.json:
        print(text)
        return out
    print(f"{PROG}: {data_dir}: fitted on {len(fit)} events ({hits:.0f} hits/event), "
          f"radius {radius:g}" + (f" for mean degree {target:g} on them" if target else ""))
    print(f"held-out events: {len(held)} ({eval_p[0].name} .. {eval_p[-1].name}, "
          f"{out['held_out_hits_per_event']:.0f} hits/event)")
    print(_table(out))
    written = [emb_path, filt_path] + ([block["edge_filter"]] if edge_filter is not None else [])
    print(f"wrote {', '.join(map(str, written))}, {out_dir / GRAPH_FILE}, {out_dir / REPORT_FILE}")
    print(f"config:  graph: {block_json}")
    print(f"or:      --data.graph '{block_json}'")
    print(f"time: {out['seconds']['total']:.1f} s (training {train_s:.1f} s)")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """``gnn-jepa fit-graph`` (``argv`` without the command name; None: ``sys.argv``)."""
    run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
