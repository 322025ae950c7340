"""Write a control copy of a pretrained checkpoint: every encoder tensor's entries permuted.

A pretrained encoder can beat a random one for reasons that have nothing to do with what it
learned: other weight norms or scales after training, for instance. Permuting the entries of
each tensor keeps exactly the same values (so every norm, mean and spread), but destroys the
structure that training put there. If the shuffled encoder does as well as the trained one in
the fine-tuning probe, the gain was not learned.

    python benchmarks/shuffled_encoder.py PRETRAINED.ckpt SHUFFLED.ckpt [--seed 0] [--encoder target]

Only the ``<encoder>_encoder.*`` tensors are written, with the checkpoint's hyperparameters,
so ``TrackFinding(pretrained=SHUFFLED.ckpt)`` and ``label_efficiency.py --ckpt`` load it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gnn_jepa.models.track_finding import save_pretrained_encoder  # noqa: E402


def shuffle_encoder(state: dict, prefix: str, seed: int) -> dict:
    """The ``prefix*`` tensors of ``state``, prefix dropped, each with its entries permuted
    (seeded)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in state.items():
        if k.startswith(prefix):
            flat = v.reshape(-1)
            out[k[len(prefix):]] = flat[torch.randperm(flat.numel(), generator=g)].reshape(v.shape).clone()
    if not out:
        raise SystemExit(f"no '{prefix}*' tensors in the checkpoint; first keys: {list(state)[:5]}")
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("ckpt")
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--encoder", default="target", choices=("target", "context"))
    a = p.parse_args(argv)
    ck = torch.load(a.ckpt, map_location="cpu", weights_only=False)
    prefix = f"{a.encoder}_encoder."
    state = shuffle_encoder(ck.get("state_dict", ck), prefix, a.seed)
    # written as target_encoder.*, which TrackFinding reads by default, whichever was shuffled
    save_pretrained_encoder(a.out, state, ck.get("hyper_parameters", {}))
    info = {"ckpt": a.ckpt, "out": a.out, "seed": a.seed, "tensors": len(state),
            "parameters": int(sum(v.numel() for v in state.values()))}
    print(json.dumps(info))
    return info


if __name__ == "__main__":
    main()
