"""Track building: which builder, which edge labels, which score cut?

Trains a scratch track-finding model (encoder + edge head) per edge-label definition on N
labelled events, scores the fixed held-out test events once, then builds tracks on those same
scores with every builder (``cc``, ``walkthrough``) at every threshold and prints the TrackML
score, DM efficiency, fake and duplicate rates (mean over test events) as JSON rows plus a
table. The "validation-tuned" rows are what ``tune_threshold: true`` would pick: the cut with
the best mean TrackML score on the validation events, applied to the test events. The
"truth (ceiling)" rows build tracks from truth segment scores on the same test graphs: what a
perfect edge classifier would reach with each builder.

Run from the repository root:

    python -m studies.track_building.run --labels 100 --steps 1500
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
import yaml

from gnn_jepa.datamodule import EventDataModule
from gnn_jepa.evaluation.ceiling import tracking_ceiling
from gnn_jepa.models import TrackFinding
from gnn_jepa.tracking.metrics import tracking_metrics

ROOT = Path(__file__).resolve().parents[2]

KEYS = ("trackml_score", "dm_efficiency", "fake_rate", "unmatched_rate", "duplicate_rate")


def scored_events(model: TrackFinding, loader, device: str = "cpu") -> list[dict]:
    """Edge scores and truth of every event of ``loader``, one dict per event (kept on the CPU;
    the model runs on ``device``)."""
    out = []
    model.eval().to(device)
    with torch.no_grad():
        for batch in loader:
            for g in batch.to_data_list():
                out.append({"data": g, "scores": torch.sigmoid(model(g.to(device)).float()).cpu()})
                g.to("cpu")
    model.cpu()
    return out


def evaluate(model: TrackFinding, events: list[dict], building: str, threshold: float) -> dict:
    model.tracks = dataclasses.replace(model.tracks, building=building)
    rows = []
    for e in events:
        g = e["data"]
        tid = model.reconstruct(g, e["scores"], threshold=threshold).numpy()
        rows.append(tracking_metrics(tid, g.particle_id.numpy(), g.pt.numpy(), g.particle_eta.numpy(),
                                     g.weight.numpy(), pt_min=model.hparams.pt_min,
                                     min_hits=model.tracks.min_hits))
    return {k: float(np.nanmean([r[k] for r in rows])) for k in KEYS}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m studies.track_building.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs/finetune/trackml_small.yaml"))
    p.add_argument("--labels", type=int, default=100, help="labelled training events")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--edge-labels", default="particle,segment")
    p.add_argument("--builders", default="cc,walkthrough")
    p.add_argument("--thresholds", default="0.3,0.4,0.5,0.6,0.7,0.8,0.85,0.9,0.95")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default="32-true", help="Lightning precision of training")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop training after this many minutes even before --steps (then the "
                        "learning rate has not reached the end of its schedule; rows say so)")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    a = p.parse_args(argv)
    torch.set_float32_matmul_precision("high")
    device = "cuda" if torch.cuda.is_available() else "cpu"

    cfg = yaml.safe_load(Path(a.config).read_text())
    model_args = {k: v for k, v in cfg["model"]["init_args"].items()
                  if k not in ("pretrained", "mode", "edge_label", "output_dir")}
    if cfg["data"].get("features"):  # the encoder's d_input, as the CLI links it
        model_args["encoder"] = {**(model_args.get("encoder") or {}),
                                 "d_input": len(cfg["data"]["features"])}
    model_args["optim"] = {**(model_args.get("optim") or {}), "total_steps": a.steps}
    data_args = {**cfg["data"], "num_train": a.labels}
    thresholds = [float(x) for x in a.thresholds.split(",")]
    rows, t0 = [], time.time()
    for label in a.edge_labels.split(","):
        pl.seed_everything(a.seed, workers=True)
        dm = EventDataModule(**data_args)
        model = TrackFinding(mode="scratch", edge_label=label, **model_args)
        trainer = pl.Trainer(max_steps=a.steps, logger=False, enable_progress_bar=False,
                             enable_checkpointing=False, enable_model_summary=False,
                             limit_val_batches=0, num_sanity_val_steps=0, gradient_clip_val=1.0,
                             precision=a.precision,
                             max_time=None if a.max_minutes is None else {"minutes": a.max_minutes})
        t_fit = time.time()
        trainer.fit(model, datamodule=dm)
        trained = {"steps_done": trainer.global_step, "train_seconds": round(time.time() - t_fit, 1)}
        print(json.dumps({"edge_label": label, **trained}), flush=True)
        dm.setup("test")
        val = scored_events(model, dm.val_dataloader(), device)
        test = scored_events(model, dm.test_dataloader(), device)
        for building in a.builders.split(","):
            per_thr = {t: (evaluate(model, val, building, t), evaluate(model, test, building, t))
                       for t in thresholds}
            for t, (_, m) in per_thr.items():
                rows.append({"edge_label": label, "building": building, "threshold": t, **m, **trained})
                print(json.dumps(rows[-1]), flush=True)
            best = max(thresholds, key=lambda t: per_thr[t][0]["trackml_score"])  # ties: lowest
            rows.append({"edge_label": label, "building": building, "threshold": best,
                         "validation_tuned": True, **per_thr[best][1], **trained})
            print(json.dumps(rows[-1]), flush=True)
    # the graph's ceiling: truth segment scores on the test graphs (the same events for every
    # label definition; min_hits and pt_min are the models' shared settings), each builder
    for building in a.builders.split(","):
        ms = [tracking_ceiling(e["data"], e["data"].edge_index, building=building,
                               min_hits=model.tracks.min_hits, pt_min=model.hparams.pt_min)
              for e in test]
        rows.append({"edge_label": "truth (ceiling)", "building": building, "threshold": 0.5,
                     **{k: float(np.nanmean([m[k] for m in ms])) for k in KEYS}})
        print(json.dumps(rows[-1]), flush=True)
    result = {"argv": sys.argv[1:] if argv is None else list(argv), "rows": rows,
              "labels": a.labels, "steps": a.steps, "seconds": time.time() - t0,
              "num_test_events": len(test), "precision": a.precision,
              "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu"}
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
    print("| edge labels | building | threshold | TrackML score | DM eff. | fake rate | unmatched rate | duplicate rate |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        thr = f"{r['threshold']:.2f}" + (" (val-tuned)" if r.get("validation_tuned") else "")
        print(f"| {r['edge_label']} | {r['building']} | {thr} | " +
              " | ".join(f"{r[k]:.3f}" for k in KEYS) + " |")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
