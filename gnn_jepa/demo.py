"""``make demo``: label-free pretraining, then track finding on 10 labelled events next to a
scratch run of the same budget, on 2 CPU cores.

Runs the real CLI in-process with the small configs:

1. event-mixing pretraining (``configs/pretrain/trackml_small_mixing.yaml``, no label used):
   the tracker learns whether an edge's two hits come from the same event on overlays of two
   unlabelled 75-particle events;
2. fine-tuning from its final state (``last.ckpt``; the validation same-event AUC is logged
   but picks worse starting points, docs/studies/event-mixing.md) with
   ``configs/finetune/trackml_small.yaml`` (encoder and whole edge head initialised) on
   ``labels`` labelled 150-particle events, then a test of its best checkpoint (validation
   TrackML score) on held-out events;
3. the same from a random init (``--model.mode scratch``): same events, seed, step budget and
   test events.

It prints one row per arm (TrackML score, DM efficiency, fake rate, ...) and writes them to
``<out>/comparison.json``. Pretraining, fine-tuning and test events are disjoint (the configs'
train offsets). The shipped recipe pretrains 5x longer on 5x more events: its label curve is
in the README.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from gnn_jepa.cli import main as cli
from gnn_jepa.models.checkpoints import best_checkpoint, checkpoint_step, final_checkpoint
from gnn_jepa.tracking.metrics import format_table

PRETRAIN = "configs/pretrain/trackml_small_mixing.yaml"
FINETUNE = "configs/finetune/trackml_small.yaml"
#: the columns of the comparison table, from each arm's ``metrics.json``
COLUMNS = ("trackml_score", "dm_efficiency", "fake_rate", "duplicate_rate", "edge_auc", "threshold")


def _in(folder: Path) -> list[str]:
    """Trainer arguments that keep a stage's logs and checkpoints under ``folder`` and turn the
    progress bar off."""
    return ["--trainer.default_root_dir", str(folder), "--trainer.logger.init_args.save_dir", str(folder),
            "--trainer.enable_progress_bar", "false"]


def run(out: str = "demo_out", pretrain_steps: int = 300, finetune_steps: int = 100,
        labels: int = 10, test_events: int = 20, seed: int = 0,
        extra: tuple[str, ...] = ()) -> list[dict]:
    """Run the demo and print its comparison table.

    Args:
        out: folder of every stage's logs, checkpoints and test reports.
        pretrain_steps: event-mixing pretraining steps, one overlay per step (the pretraining
            config's ``mix_events: 2``: twice as many unlabelled events).
        finetune_steps: fine-tuning steps of each arm (validation every 50, early stopping).
        labels: labelled fine-tuning events.
        test_events: held-out test events, the same for both arms.
        seed: ``--seed_everything`` and ``--data.seed`` of every command (init and events).
        extra: arguments appended to every command (e.g. ``--data.cache_dir``).

    Returns:
        One row per arm (``pretrained``, ``scratch``): ``arm``, ``labelled_events``, ``steps``,
        ``best_step`` and :data:`COLUMNS` from its test report (also in
        ``<out>/comparison.json``).
    """
    out_dir = Path(out)
    t0 = time.time()
    seeds = ["--seed_everything", str(seed), "--data.seed", str(seed)]
    print(f"[demo] 1/3 event-mixing pretraining, no labels ({pretrain_steps} steps, one overlay of "
          f"unlabelled events each) -> {out_dir / 'pretrain'}", flush=True)
    cli(["fit", "--config", PRETRAIN, *seeds, "--trainer.max_steps", str(pretrain_steps),
         "--data.num_train", str(pretrain_steps),
         "--trainer.val_check_interval", str(max(1, pretrain_steps // 2)),
         *_in(out_dir / "pretrain"), *extra])
    pretrained = str(final_checkpoint(out_dir / "pretrain"))  # its final state, not the best AUC
    budget = ["--data.num_train", str(labels), "--data.num_test", str(test_events),
              "--trainer.max_steps", str(finetune_steps), *seeds]
    arms = {"pretrained": ["--model.pretrained", pretrained], "scratch": ["--model.mode", "scratch"]}
    rows = []
    for i, (arm, init) in enumerate(arms.items()):
        folder = out_dir / arm
        print(f"[demo] {i + 2}/3 {arm}: fine-tuning on {labels} labelled events, "
              f"{finetune_steps} steps -> {folder}", flush=True)
        cli(["fit", "--config", FINETUNE, *init, *budget, *_in(folder), *extra])
        best = str(best_checkpoint(folder))
        print(f"[demo] {i + 2}/3 {arm}: testing {best} on {test_events} held-out events", flush=True)
        cli(["test", "--config", FINETUNE, *init, *budget, "--ckpt_path", best,
             "--model.output_dir", str(folder / "test"), *_in(folder / "test"), *extra])
        metrics = json.loads((folder / "test" / "metrics.json").read_text())["metrics"]
        rows.append({"arm": arm, "labelled_events": labels, "steps": finetune_steps, "best_step": checkpoint_step(best),
                     **{c: metrics.get(c) for c in COLUMNS}})
    (out_dir / "comparison.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"\n[demo] {test_events} held-out events, same fine-tuning budget; pretraining used no label")
    print(format_table({"comparison": rows}))
    print(f"[demo] done in {time.time() - t0:.0f} s; per-arm metrics and plots in "
          f"{out_dir}/{{pretrained,scratch}}/test, the rows in {out_dir / 'comparison.json'}")
    return rows


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo_out")
    p.add_argument("--pretrain-steps", type=int, default=300)
    p.add_argument("--finetune-steps", type=int, default=100)
    p.add_argument("--labels", type=int, default=10)
    p.add_argument("--test-events", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    run(a.out, a.pretrain_steps, a.finetune_steps, a.labels, a.test_events, a.seed)
