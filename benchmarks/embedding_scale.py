"""How wide are an encoder's hit embeddings? Fresh init against pretrained checkpoints.

The fine-tuning edge head reads ``[h_i, h_j, a_ij]``: hit embeddings next to the edge
features. A pretrained encoder whose embeddings are much wider than a fresh one's starts the
head with other proportions than ``scratch`` has (see ``TrackFinding(embedding_std=...)``).
For each encoder this prints, over the hits of the finetune config's test events:

* ``mean_std``: the mean over dimensions of the per-dimension std, the quantity that
  ``embedding_std`` sets;
* ``mean_norm``: the mean L2 norm of an embedding;
* ``rankme``: the effective rank (RankMe) of the centred embeddings.

    python benchmarks/embedding_scale.py --finetune-config configs/finetune/trackml_small.yaml \
        --random-seeds 0,1,2 JEPA=path/to/pretrained.ckpt [NAME=CKPT ...]

``random seed s`` is a fresh encoder drawn after ``torch.manual_seed(s)``. A checkpoint is read
the way fine-tuning reads it (``TrackFinding``'s loader, the ``target`` encoder by default).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gnn_jepa.data.datamodule import EventDataModule  # noqa: E402
from gnn_jepa.models.jepa import ENCODER_ARGS  # noqa: E402
from gnn_jepa.models.track_finding import load_pretrained_encoder  # noqa: E402
from gnn_jepa.nn.encoder import GraphTransformerEncoder  # noqa: E402
from gnn_jepa.nn.monitors import rankme  # noqa: E402
from label_efficiency import input_size, load_config  # noqa: E402


@torch.no_grad()
def embedding_scale(encoder: torch.nn.Module, batches: list) -> dict:
    """``mean_std``, ``mean_norm`` and ``rankme`` of ``encoder``'s embeddings of all hits of
    ``batches`` (one pooled set)."""
    encoder.eval()
    h = torch.cat([encoder(b.x, b.edge_index, getattr(b, "edge_attr", None)).float() for b in batches])
    return {"hits": int(h.shape[0]), "mean_std": float(h.std(0).mean()),
            "mean_norm": float(h.norm(dim=1).mean()), "rankme": rankme(h - h.mean(0)),
            "dims": int(h.shape[1])}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="*", help="NAME=CKPT pairs")
    p.add_argument("--finetune-config", default="configs/finetune/trackml_small.yaml")
    p.add_argument("--events", type=int, default=3, help="test events embedded")
    p.add_argument("--random-seeds", default="0", help="fresh encoders to measure, comma-separated")
    p.add_argument("--encoder", default="target", choices=("target", "context"))
    p.add_argument("--json", help="also write the result here")
    a = p.parse_args(argv)
    model_args, data_args = load_config(a.finetune_config)
    enc_args = {**{k: model_args[k] for k in ENCODER_ARGS if k in model_args},
                "d_input": input_size(data_args)}
    dm = EventDataModule(**{**data_args, "num_test": a.events, "batch_size": 1})
    dm.prepare_data()
    batches = list(dm.test_dataloader())
    rows = {}
    for s in [int(x) for x in a.random_seeds.split(",") if x.strip()]:
        torch.manual_seed(s)
        rows[f"random seed {s}"] = embedding_scale(GraphTransformerEncoder(**enc_args), batches)
    for spec in a.checkpoints:
        name, sep, path = spec.partition("=")
        if not sep:
            raise SystemExit(f"checkpoint {spec!r}: expected NAME=CKPT")
        enc = GraphTransformerEncoder(**enc_args)
        load_pretrained_encoder(enc, path, a.encoder, expected=enc_args)
        rows[name] = {"ckpt": path, **embedding_scale(enc, batches)}
    result = {"args": vars(a), "events": len(batches), "encoders": rows}
    print(json.dumps(result, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
