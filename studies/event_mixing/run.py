"""Event-mixing pretraining screen: does "are these two hits from the same event?" teach
the tracker's trunk what "are they one track's neighbours?" needs, without labels?

Two unlabelled events A and B (``--particles`` each, 75: together the fine-tuning events'
density) are overlaid into one (B rotated by a random angle in phi), and the shipped graph is
built on the union. Every candidate segment gets the label "both hits from the same event". A
segment joining two events is always fake; one inside an event is true or a fake between two
of its particles, and such a fake looks like a cross-event one (independent particles; the
simulator draws each particle's vertex on its own). So the best same-event score is
``rho + (1 - rho) P(true | segment)``, a monotone function of the trueness a tracker wants
(``rho``: the share of fakes inside an event). The whole trunk (encoder + segment-pair rounds
+ output layer) of the fine-tuning config's ``TrackFinding`` is trained on it with BCE.

Screens: the same-event AUC on held-out mixed events, and *zero-shot* the segment-truth AUC
and top-1 of the pretext scores on single, unmixed validation events (the fine-tuning
config's). Writes a checkpoint in the layout ``--model.pretrained`` loads (``target_encoder.*``,
``target_head.*``) and a JSON of the curves.

    python -m studies.event_mixing.run --pairs 200 --steps 600 --out /tmp/mix
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import yaml

from gnn_jepa.data.convert import event_to_data
from gnn_jepa.data.dataset import EventSource
from gnn_jepa.data.event import Event
from gnn_jepa.data.mixing import mix_events
from gnn_jepa.datamodule import VAL_OFFSET
from gnn_jepa.config import build_from_options
from gnn_jepa.graph.transform import BuildGraph
from gnn_jepa.models.event_mixing import balanced_bce, same_event_labels
from gnn_jepa.models.track_finding import TrackFinding
from gnn_jepa.tracking.metrics import roc_auc

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "finetune" / "trackml_small.yaml"


def mix(a: Event, b: Event, rng: np.random.Generator) -> Event:
    """``a`` and ``b`` overlaid by :func:`gnn_jepa.data.mixing.mix_events`, ``b`` rotated by
    an angle drawn from ``rng`` (the screen's own stream; the data module draws its angles per
    overlay index instead)."""
    return mix_events([a, b], [0.0, rng.uniform(0.0, 2.0 * math.pi)])


def segment_truth(data) -> torch.Tensor:
    from gnn_jepa.graph.edges import segment_labels
    return segment_labels(data.particle_id, data.hit_order, data.edge_index, None)


def top1(scores: torch.Tensor, labels: torch.Tensor, edge_index: torch.Tensor) -> float:
    """Share of hits with an outgoing true segment whose best-scored outgoing edge is true."""
    src = edge_index[0]
    n = int(src.max()) + 1 if src.numel() else 0
    best = torch.full((n,), -math.inf).scatter_reduce(0, src, scores, "amax")
    is_best = scores == best[src]
    has_true = torch.zeros(n, dtype=torch.bool).index_fill_(0, src[labels > 0.5], True)
    hit_ok = torch.zeros(n, dtype=torch.bool).index_fill_(0, src[is_best & (labels > 0.5)], True)
    return float(hit_ok[has_true].float().mean()) if has_true.any() else float("nan")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=200, help="mixed training events")
    ap.add_argument("--val-pairs", type=int, default=4)
    ap.add_argument("--single-val", type=int, default=6, help="unmixed events for the zero-shot screen")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--particles", type=int, default=75,
                    help="particles per unlabelled event (two make one mixed event)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", default=str(CONFIG))
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load(open(args.config))
    dcfg, mcfg = cfg["data"], cfg["model"]["init_args"]
    source = EventSource("simulate", simulator={**dcfg["simulator"], "num_particles": args.particles},
                         seed=dcfg.get("seed", 0))
    singles_source = EventSource("simulate", simulator=dcfg["simulator"], seed=dcfg.get("seed", 0))
    graph = build_from_options(BuildGraph, dcfg["graph"], "data.graph")
    rng = np.random.default_rng(args.seed)

    def mixed(i: int):
        return graph(event_to_data(mix(source.event(2 * i), source.event(2 * i + 1), rng)))

    t0 = time.time()
    train = [mixed(i) for i in range(args.pairs)]
    val_mixed = [mixed(50_000 + i) for i in range(args.val_pairs)]
    singles = [graph(event_to_data(singles_source.event(VAL_OFFSET + i))) for i in range(args.single_val)]
    print(f"events built in {time.time() - t0:.0f} s; mixed hits {train[0].num_nodes}, edges "
          f"{train[0].edge_index.shape[1]}, same-event share {float(same_event_labels(train[0]).mean()):.3f}",
          flush=True)

    torch.manual_seed(args.seed)
    model = TrackFinding(**{**mcfg, "mode": "scratch", "pretrained": None})
    opt = torch.optim.AdamW([
        {"params": model.encoder.parameters(), "lr": mcfg["optim"]["encoder_lr"]},
        {"params": model.head.parameters(), "lr": mcfg["optim"]["head_lr"]}], weight_decay=0.01)
    warm = 20
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (
        1 + math.cos(math.pi * min(s, args.steps) / args.steps)))

    def evaluate(step: int) -> dict:
        model.eval()
        with torch.no_grad():
            same = [roc_auc(model(d).sigmoid(), same_event_labels(d)) for d in val_mixed]
            zs, t1 = [], []
            for d in singles:
                sc, y = model(d), segment_truth(d)
                zs.append(roc_auc(sc.sigmoid(), y))
                t1.append(top1(sc, y, d.edge_index))
        model.train()
        row = {"step": step, "same_event_auc": float(np.mean(same)),
               "zero_shot_segment_auc": float(np.mean(zs)), "zero_shot_top1": float(np.mean(t1))}
        print(json.dumps(row), flush=True)
        return row

    curve = [evaluate(0)]
    model.train()
    order = rng.permutation(len(train))
    for step in range(1, args.steps + 1):
        d = train[order[(step - 1) % len(train)]]
        loss = balanced_bce(model(d), same_event_labels(d))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % args.eval_every == 0 or step == args.steps:
            curve.append({**evaluate(step), "loss": float(loss.detach())})
            ckpt = {"state_dict": {**{f"target_encoder.{k}": v for k, v in model.encoder.state_dict().items()},
                                   **{f"target_head.{k}": v for k, v in model.head.state_dict().items()}},
                    "hyper_parameters": {"encoder": asdict(model.encoder_config),
                                         "head": asdict(model.head_config),
                                         "pretext": "event mixing", "step": step}}
            torch.save(ckpt, out / f"step{step}.ckpt")
    doc = {"args": vars(args), "curve": curve, "wall_s": round(time.time() - t0, 1)}
    (out / "curve.json").write_text(json.dumps(doc, indent=1))
    return doc


if __name__ == "__main__":
    main()
