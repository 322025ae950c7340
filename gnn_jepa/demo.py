"""``make demo``: simulate -> JEPA pretraining -> fine-tuning -> test, on 2 CPU cores in minutes.

Runs the real CLI in-process with the small configs and prints the tracking metrics table.
Pretraining, fine-tuning and test events are disjoint (train offsets in the configs).
"""
from __future__ import annotations

import argparse
import glob
import os
import time
from pathlib import Path

from gnn_jepa.cli import main as cli


def _last_ckpt(root: Path) -> str:
    found = sorted(glob.glob(str(root / "**" / "last.ckpt"), recursive=True), key=os.path.getmtime)
    if not found:
        raise FileNotFoundError(f"no last.ckpt under {root}")
    return found[-1]


def _in(folder: Path) -> list[str]:
    """Trainer arguments that keep a stage's logs and checkpoints under ``folder``."""
    return ["--trainer.default_root_dir", str(folder), "--trainer.logger.init_args.save_dir", str(folder)]


def run(out: str = "demo_out", pretrain_steps: int = 150, finetune_steps: int = 100) -> dict:
    out_dir = Path(out)
    t0 = time.time()
    print(f"[demo] 1/3 JEPA pretraining ({pretrain_steps} steps) -> {out_dir / 'pretrain'}", flush=True)
    cli(["fit", "--config", "configs/pretrain/trackml_small.yaml",
         "--trainer.max_steps", str(pretrain_steps), *_in(out_dir / "pretrain")])
    ckpt = _last_ckpt(out_dir / "pretrain")
    print(f"[demo] 2/3 fine-tuning from {ckpt} ({finetune_steps} steps)", flush=True)
    cli(["fit", "--config", "configs/finetune/trackml_small.yaml", "--model.pretrained", ckpt,
         "--trainer.max_steps", str(finetune_steps), *_in(out_dir / "finetune")])
    ft = _last_ckpt(out_dir / "finetune")
    print(f"[demo] 3/3 test on held-out events with {ft}", flush=True)
    cli(["test", "--config", "configs/finetune/trackml_small.yaml", "--model.pretrained", ckpt,
         "--ckpt_path", ft, "--model.output_dir", str(out_dir / "test"), *_in(out_dir / "finetune")])
    print(f"[demo] done in {time.time() - t0:.0f} s; metrics and plots in {out_dir / 'test'}")
    return {"pretrain_ckpt": ckpt, "finetune_ckpt": ft}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="demo_out")
    p.add_argument("--pretrain-steps", type=int, default=150)
    p.add_argument("--finetune-steps", type=int, default=100)
    a = p.parse_args()
    run(a.out, a.pretrain_steps, a.finetune_steps)
