"""How much of the JEPA objective has a pretrained predictor learned?

Loads a JEPA pretraining checkpoint, draws ``--draws`` masks on each of ``--events``
validation events of ``--config``'s data, and prints (JSON) the mean JEPA loss next to the
reference predictors of :func:`gnn_jepa.models.jepa.reference_losses`: "zero", "mean"
(knows nothing) and "occupancy_oracle" (knows which cells hold hits).

    python -m studies.jepa_objective.run CKPT [--config configs/pretrain/trackml_small.yaml]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import yaml

from gnn_jepa.datamodule import EventDataModule
from gnn_jepa.models.jepa import REFERENCE_PREDICTORS, JEPAPretraining

ROOT = Path(__file__).resolve().parents[2]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m studies.jepa_objective.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
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
