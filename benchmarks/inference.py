"""Full-event reconstruction benchmark: graph -> encoder -> edge scores -> tracks, per stage.

Per event (hit positions and node features already on the device, as after reading):

1. ``graph``: :class:`gnn_jepa.graph.transform.BuildGraph` (exact radius graph + edge
   features) on the device;
2. ``encoder``: the track-finding model's :class:`GraphTransformerEncoder`;
3. ``edge_scores``: its :class:`EdgeHead` + sigmoid;
4. ``tracks``: :func:`gnn_jepa.tracking.building.build_tracks` (connected components with
   the all-torch method on CUDA, scipy on the CPU; ``--building walkthrough`` optional).

The model is :class:`gnn_jepa.models.TrackFinding` built from the fine-tuning config
(``configs/finetune/trackml_gpu.yaml``: d_model 128, 4 layers) with random weights
(``mode: scratch``): the cost does not depend on the weights, except for track building,
which depends on which edges pass the cut. ``--track-scores truth`` (default when the event
has truth) therefore feeds the true edge labels to the track builder, the topology a
trained model produces; the model's own scores are still computed and timed in stage 3.
``--track-scores model`` uses the random model's scores instead.

``--max-neighbors`` lists the graphs as in :mod:`benchmarks.train_step`: 0 = the
fine-tuning config's graph, k = that graph capped at k neighbours, without its ``union``
members (6: the DESIGN's reference degree, ~7 edges per hit). ``--bf16`` runs encoder and head under
bf16 autocast, ``--compile`` compiles both (compile time reported apart, as the warm-up's
excess over ordinary passes). Timing: on CUDA one ``torch.cuda.synchronize`` per pass (none
between stages); the stages are timed with CUDA events recorded between them, so the
stage times are device-timeline intervals and include any host stall inside a stage.
``host_syncs`` counts, per stage, the operations that block the host
(``torch.cuda.set_sync_debug_mode``), in one extra untimed pass. Memory: on CUDA
``max_memory_allocated`` over the timed passes (model weights and the event's positions
included); on CPU the peak resident set over them (:class:`benchmarks.common.PeakMemory`).

Target (DESIGN.md): on an H100, a 100k-hit event in <= 8 ms total and <= 2 GiB peak.

    python -m benchmarks.inference --device cpu --hits 1000,10000,20000
    python -m benchmarks.inference --device cuda --modes fp32,bf16,bf16+compile \\
        --hits 10000,50000,100000 --out gpu_out/inference.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Optional

import torch

from benchmarks import common
from benchmarks.common import DEFAULT_FINETUNE_CONFIG
from gnn_jepa.tracking.building import TrackBuildingConfig

STAGES = ("graph", "encoder", "edge_scores", "tracks")
#: Per-hit fields the pipeline may read: the detector's readout, never truth.
READOUT = ("pos", "x", "volume_id", "layer_id")
DEFAULT_SIZES = {"cpu": "1000,10000,20000", "cuda": "10000,20000,50000,100000"}
#: DESIGN.md targets for a ~100k-hit event on an H100-class GPU.
TARGET_TOTAL_MS = 8.0
TARGET_PEAK_MIB = 2048.0


def make_model(model_args: dict, device: torch.device):
    """TrackFinding from the config's encoder/head arguments, random weights, eval mode."""
    from gnn_jepa.models import TrackFinding

    args = dict(model_args)
    args.update(mode="scratch", pretrained=None)
    return TrackFinding(**args).to(device).eval()


class Pipeline:
    """The four stages on one device; each stage a method so it can be timed alone."""

    def __init__(self, model, graph: dict, device: torch.device, *, bf16: bool,
                 cc_method: str, building: str, threshold: float, min_hits: int):
        from gnn_jepa.graph.transform import BuildGraph

        self.encoder, self.head = model.encoder, model.head
        self.build = BuildGraph(**graph)
        self.device = device
        self.bf16 = bf16
        self.cc_method = cc_method
        self.building = building
        self.threshold = threshold
        self.min_hits = min_hits
        self.track_scores: Optional[torch.Tensor] = None  # None: use the model's scores

    def graph(self, hits):
        """The event's graph from what the detector reads out: positions, hit features and,
        when the event has them, the (volume, layer) ids a layer-pair filter needs. Truth
        (particle ids) never enters the timed pipeline."""
        from torch_geometric.data import Data

        readout = {k: hits[k] for k in READOUT if getattr(hits, k, None) is not None}
        return self.build(Data(**readout, num_nodes=hits.num_nodes))

    def embed(self, d) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.encoder(d.x, d.edge_index, d.edge_attr)

    def scores(self, d, h: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.head(h, d.edge_index, d.edge_attr, pos=d.pos)
        return torch.sigmoid(logits.float())

    def tracks(self, d, scores: torch.Tensor) -> torch.Tensor:
        from gnn_jepa.tracking.building import build_tracks, hit_order_key

        s = scores if self.track_scores is None else self.track_scores
        order_key = hit_order_key(d.pos) if self.building == "walkthrough" else None
        return build_tracks(d.num_nodes, d.edge_index, s, threshold=self.threshold,
                            min_hits=self.min_hits, method=self.building, order_key=order_key,
                            cc_method=self.cc_method)

    def run(self, hits, marks: Optional[list] = None):
        """All stages; ``marks`` gets one CUDA event / host time per stage boundary."""
        def mark():
            if marks is not None:
                if self.device.type == "cuda":
                    ev = torch.cuda.Event(enable_timing=True)
                    ev.record()
                    marks.append(ev)
                else:
                    marks.append(time.perf_counter())

        mark()
        d = self.graph(hits)
        mark()
        h = self.embed(d)
        mark()
        s = self.scores(d, h)
        mark()
        tid = self.tracks(d, s)
        mark()
        return d, s, tid


def stage_ms(marks: list, device: torch.device) -> list[float]:
    if device.type == "cuda":
        return [a.elapsed_time(b) for a, b in zip(marks[:-1], marks[1:])]
    return [(b - a) * 1e3 for a, b in zip(marks[:-1], marks[1:])]


def bench_inference(pipe: Pipeline, hits, device: torch.device,
                    *, warmup: int, repeat: int, compiled: bool) -> dict:
    """Time ``repeat`` full passes after ``warmup``; per-stage medians, total, memory."""
    graphs0 = common.dynamo_graph_count()
    per_pass: list[list[float]] = []

    def one(i: int):
        marks: list = []
        pipe.run(hits, marks)
        per_pass.append(marks)

    counts = {}
    warm, timed, mem = common.time_calls(
        one, device, warmup, repeat, after_warmup=lambda: counts.update(warm=common.dynamo_graph_count()))
    graphs1 = common.dynamo_graph_count()
    stages = [stage_ms(m, device) for m in per_pass[warmup:]]
    row = {"total": common.ms_summary(timed),
           "stages_ms_median": {name: round(statistics.median(s[k] for s in stages), 3)
                                for k, name in enumerate(STAGES)},
           **mem, "warmup_s": round(sum(warm), 3)}
    row["stages_sum_ms_median"] = round(sum(row["stages_ms_median"].values()), 3)
    if compiled:
        med = statistics.median(timed)
        row["compile_s_est"] = round(max(sum(warm) - len(warm) * med, 0.0), 3)
        row["graphs_compiled"] = None if graphs0 is None else counts["warm"] - graphs0
        row["graphs_compiled_while_timed"] = None if graphs0 is None else graphs1 - counts["warm"]
    return row


def host_syncs(pipe: Pipeline, hits, device: torch.device) -> Optional[dict]:
    """Blocking host-device syncs per stage in one pass (CUDA only)."""
    if device.type != "cuda":
        return None
    d = pipe.graph(hits)
    h = pipe.embed(d)
    s = pipe.scores(d, h)
    return {"graph": common.count_host_syncs(lambda: pipe.graph(hits), device),
            "encoder": common.count_host_syncs(lambda: pipe.embed(d), device),
            "edge_scores": common.count_host_syncs(lambda: pipe.scores(d, h), device),
            "tracks": common.count_host_syncs(lambda: pipe.tracks(d, s), device)}


def bench_event(data, mode: str, model_args: dict, graph: dict, device: torch.device, args,
                *, building: str, cc_method: str, threshold: float, min_hits: int) -> dict:
    """One mode on one event: a fresh model, reference pass, timed passes, track counts."""
    bf16, compiled = common.mode_flags(mode)
    torch.manual_seed(0)
    model = make_model(model_args, device)
    pipe = Pipeline(model, graph, device, bf16=bf16, cc_method=cc_method, building=building,
                    threshold=threshold, min_hits=min_hits)
    with torch.inference_mode():
        ref, _, _ = pipe.run(data)
        same = torch.equal(pipe.graph(data).edge_index, ref.edge_index)
        use_truth = args.track_scores == "truth" or (
            args.track_scores == "auto" and getattr(data, "particle_id", None) is not None)
        if use_truth:
            from gnn_jepa.graph.edges import edge_labels

            # the graph's edge order is deterministic, so these labels fit every rebuild
            pipe.track_scores = edge_labels(data.particle_id, ref.edge_index).float()
        if compiled:
            pipe.encoder.compile(dynamic=not args.static)
            pipe.head.compile(dynamic=not args.static)
        row = {"edges": int(ref.edge_index.shape[1]), "graph_deterministic": bool(same),
               "track_scores": "truth" if use_truth else "model",
               **bench_inference(pipe, data, device, warmup=args.warmup, repeat=args.repeat,
                                 compiled=compiled)}
        _, s, tid = pipe.run(data)
        kept = (pipe.track_scores if use_truth else s) > threshold
        row["kept_edges"] = int(kept.sum())
        row["tracks"] = int(tid.max()) + 1 if tid.numel() else 0
        row["hits_in_tracks"] = int((tid >= 0).sum())
        row["host_syncs"] = host_syncs(pipe, data, device)
    if device.type == "cuda" and data.num_nodes >= 90_000:
        row["within_targets"] = {
            "total_ms": row["total"]["ms_median"] <= TARGET_TOTAL_MS,
            "peak_mib": row["peak_mib"] is not None and row["peak_mib"] <= TARGET_PEAK_MIB}
    return row


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--hits", default=None, help="target hits per event, comma list (default cpu: "
                   f"{DEFAULT_SIZES['cpu']}; cuda: {DEFAULT_SIZES['cuda']})")
    p.add_argument("--modes", default=None, help=f"comma list of {common.MODES}")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast of encoder and head")
    p.add_argument("--compile", action="store_true", help="torch.compile encoder and head")
    p.add_argument("--static", action="store_true", help="compile with dynamic=False (default True)")
    p.add_argument("--config", default=str(DEFAULT_FINETUNE_CONFIG), help="fine-tuning YAML config")
    p.add_argument("--d-model", type=int, default=None)
    p.add_argument("--n-layers", type=int, default=None)
    p.add_argument("--heads", type=int, default=None)
    p.add_argument("--max-neighbors", default="0",
                   help="graphs, comma list: 0 = the config's graph as is, k = capped at k "
                        f"neighbours ({common.REFERENCE_MAX_NEIGHBORS}: the DESIGN's reference degree)")
    p.add_argument("--building", choices=("cc", "walkthrough"), default=None,
                   help="track building (default: the config's)")
    p.add_argument("--cc-method", choices=("auto", "torch", "scipy"), default="auto",
                   help="auto: torch on CUDA, scipy on the CPU")
    p.add_argument("--track-scores", choices=("auto", "truth", "model"), default="auto",
                   help="scores fed to track building (auto: truth when the event has it)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", default=None, help="also write the JSON here (rewritten per row)")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = common.resolve_device(args.device)
    modes = common.parse_modes(args.modes) if args.modes else \
        [("bf16" if args.bf16 else "fp32") + ("+compile" if args.compile else "")]
    sizes = common.parse_sizes(args.hits or DEFAULT_SIZES["cuda" if device.type == "cuda" else "cpu"])
    cfg = common.load_config(args.config)
    model_args = common.override_encoder(cfg["model"], d_model=args.d_model,
                                         n_layers=args.n_layers, heads=args.heads)
    tracks = TrackBuildingConfig(**(model_args.get("tracks") or {}))
    graphs = {common.graph_label(c): common.bench_graph(cfg["graph"], c)
              for c in common.parse_caps(args.max_neighbors)}
    building = args.building or tracks.building
    cc_method = args.cc_method if args.cc_method != "auto" else \
        ("torch" if device.type == "cuda" else "scipy")
    threshold = float(tracks.threshold)
    min_hits = int(tracks.min_hits)
    doc = {"benchmark": "inference", "env": common.environment(device),
           "config": {"path": cfg["path"], "model": model_args, "graphs": graphs, "modes": modes,
                      "building": building, "cc_method": cc_method, "threshold": threshold,
                      "min_hits": min_hits, "track_scores": args.track_scores,
                      "warmup": args.warmup, "repeat": args.repeat, "seed": args.seed,
                      "compile_dynamic": not args.static},
           "targets": {"total_ms": TARGET_TOTAL_MS, "peak_mib": TARGET_PEAK_MIB,
                       "applies_to": "CUDA (H100-class), ~100k hits"},
           "rows": []}
    hpp = common.hits_per_particle(cfg["simulator"], args.seed)
    events = []  # all events first; modes outer, sizes inner (see train_step.py)
    for target in sizes:
        particles = max(1, round(target / hpp))
        data = common.simulate_data(cfg["simulator"], particles, args.seed).to(device)
        events.append(({"target_hits": target, "particles": particles,
                        "hits": int(data.num_nodes)}, data))
    runs = [(mode, label, graph, base, data) for mode in modes
            for label, graph in graphs.items() for base, data in events]
    for mode, label, graph, base, data in runs:
        row = {"mode": mode, "graph": label, **base}
        common.log(f"inference: {row}")
        try:
            row.update(bench_event(data, mode, model_args, graph, device, args,
                                   building=building, cc_method=cc_method,
                                   threshold=threshold, min_hits=min_hits))
        except Exception as exc:  # OOM or a failure at one size: record it, go on
            row.update(common.error_row(exc))
        common.free_device(device)
        doc["rows"].append(row)
        common.log(json.dumps(row))
        common.write_doc(doc, args.out)
    json.dump(doc, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
