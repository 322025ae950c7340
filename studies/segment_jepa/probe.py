"""Linear probe of segment-pair trunks: how well do their frozen states tell true segments?

For each trunk (a segment-level JEPA checkpoint's EMA trunk, a track-finding checkpoint's
encoder + edge head without its output layer, or ``random``: a fresh init), embeds ``--events``
validation events of ``--config``'s data, trains a linear probe on the first event's segment
truth and prints (JSON) its AUC and top-1 on the others
(:meth:`gnn_jepa.models.segment_jepa.SegmentJEPA.segment_probe`, the probe that pretraining
logs as ``probe/segment_*``).

    python -m studies.segment_jepa.probe random CKPT [CKPT ...] [--events 6]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import yaml

from gnn_jepa.datamodule import EventDataModule
from gnn_jepa.models.segment_jepa import SegmentJEPA, without_output
from gnn_jepa.models.track_finding import TrackFinding

ROOT = Path(__file__).resolve().parents[2]


def trunk_of(spec: str, reference: SegmentJEPA):
    """``(encoder, head trunk)`` of a checkpoint, or the reference's random trunk."""
    if spec == "random":
        return reference._random_trunk()
    hp = torch.load(spec, map_location="cpu", weights_only=False)["hyper_parameters"]
    if "pretrained" in hp:  # a track-finding checkpoint
        tf = TrackFinding.load_from_checkpoint(spec, map_location="cpu", pretrained=None,
                                               mode="scratch")
        return tf.encoder.eval(), without_output(tf.head).eval()
    sj = SegmentJEPA.load_from_checkpoint(spec, map_location="cpu")
    return sj.target_encoder.eval(), sj.target_head.eval()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m studies.segment_jepa.probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trunks", nargs="+", help="'random' or checkpoint paths")
    p.add_argument("--config", default=str(ROOT / "configs/pretrain/trackml_small_segments.yaml"))
    p.add_argument("--events", type=int, default=6, help="validation events (first trains the probe)")
    a = p.parse_args(argv)
    cfg = yaml.safe_load(Path(a.config).read_text())
    data = cfg["data"]
    dm = EventDataModule(**{**data, "num_val": a.events})
    dm.setup("validate")
    events = [d for batch in dm.val_dataloader() for d in batch.to_data_list()][:a.events]
    reference = SegmentJEPA(**{k: v for k, v in cfg["model"]["init_args"].items()
                               if k in ("encoder", "head")},
                            )
    rows = []
    for spec in a.trunks:
        enc, head = trunk_of(spec, reference)
        with torch.no_grad():
            res = reference.segment_probe(enc, head, events)
        rows.append({"trunk": spec, "auc": res["auc"], "top1": res["top1"]})
        print(json.dumps(rows[-1]), flush=True)
    return {"events": len(events), "config": a.config, "rows": rows}


if __name__ == "__main__":
    main()
