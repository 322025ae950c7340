"""How much of the JEPA objective has a pretrained predictor learned?

Loads a JEPA pretraining checkpoint, draws ``--draws`` masks on each of ``--events``
validation events of ``--config``'s data, and prints (JSON) the mean JEPA loss next to the
reference predictors of :func:`gnn_jepa.models.jepa.reference_losses`: "zero", "mean"
(knows nothing) and "occupancy_oracle" (knows which cells hold hits).

    python benchmarks/jepa_objective.py CKPT [--config configs/pretrain/trackml_small.yaml]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gnn_jepa.data.datamodule import EventDataModule  # noqa: E402
from gnn_jepa.models.jepa import REFERENCE_PREDICTORS, JEPAPretraining  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--config", default=str(ROOT / "configs/pretrain/trackml_small.yaml"))
    p.add_argument("--events", type=int, default=8, help="validation events")
    p.add_argument("--draws", type=int, default=4, help="mask draws per batch")
    p.add_argument("--seed", type=int, default=123, help="mask seed")
    a = p.parse_args(argv)
    model = JEPAPretraining.load_from_checkpoint(a.checkpoint, map_location="cpu").eval()
    data = yaml.safe_load(Path(a.config).read_text())["data"]
    dm = EventDataModule(**{**data, "num_val": a.events})
    dm.setup("validate")
    gen = torch.Generator().manual_seed(a.seed)
    sums = {k: 0.0 for k in ("jepa", *REFERENCE_PREDICTORS, "occupied_fraction")}
    n = 0
    with torch.no_grad():
        for batch in dm.val_dataloader():
            for _ in range(a.draws):
                out = model.jepa_forward(batch, model.masker(batch, gen))
                sums["jepa"] += float(out["jepa_loss"])
                for k in REFERENCE_PREDICTORS:
                    sums[k] += float(out["baseline_losses"][k])
                sums["occupied_fraction"] += out["occupied"]
                n += 1
    result = {"checkpoint": a.checkpoint, "batches_x_draws": n,
              **{f"{k}_loss" if k != "occupied_fraction" else k: round(v / max(n, 1), 5) for k, v in sums.items()}}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
