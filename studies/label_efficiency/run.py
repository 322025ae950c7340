"""Label-efficiency study: does JEPA pretraining make track finding need fewer labels?

For each pretraining variant: pretrain once per pretraining seed, then fine-tune on N labelled
events (N in --labels) for a fixed number of steps with every arm (``finetune`` from the JEPA
encoder, ``frozen`` JEPA encoder + head, ``scratch``), over several fine-tuning seeds, and test
on one fixed held-out set. Pretraining events, fine-tuning events and test events are disjoint
(train offsets 0, 100000 and the datamodule's fixed test range). Same seeds and step budgets
for every arm. Prints JSON (one row per run) and a summary table (mean and min-max over seeds).

The ``supervised`` arm is the reference for what any encoder pretraining could give: its
encoder is first trained *with labels* on the pretraining events (same events and steps as the
JEPA pretraining), then fine-tuned like ``finetune`` with a new head. If even it does not beat
``scratch``, the probe cannot show a pretraining gain.

Run from the repository root:

    python -m studies.label_efficiency.run --labels 1,10 --seeds 0,1,2 --pretrain-steps 800
    python -m studies.label_efficiency.run --variants '{"none": {"anti_collapse": "none"}}'
    python -m studies.label_efficiency.run --variants '{"cells 8x8x2": {"cells": [8, 8, 2]}}'
    python -m studies.label_efficiency.run --ckpt runs/pre/pretrained.ckpt --arms finetune,frozen \
        --finetune-overrides '{"optim": {"encoder_lr": 1e-4}}'  # reuse a checkpoint, other fine-tuning
    python -m studies.label_efficiency.run --arms supervised,scratch --finetune-steps 100  # the reference
    python -m studies.label_efficiency.run --replot a.json b.jsonl --plot study.png  # merge runs

``--variants`` (``JEPAPretraining`` arguments) and ``--finetune-overrides`` (``TrackFinding``
arguments) take the models' nested config keys; a nested block (``predictor``, ``masker``,
``optim``, ``head``, ``tracks``) given as a mapping is merged onto the config's block, so
``{"head": {"kind": "mlp"}}`` keeps the config's other head settings. Every run uses the
pretraining config's ``encoder`` block (``d_input`` from each config's ``data.features``).
Settings that earlier studies rejected and that are gone from main (hit queries, the
predictor's GATv2 convolution, ``reinit_encoder``, ``embedding_std``, ...) need the code at
tag ``studies-2026-12``.

``--plot PATH`` saves the study's figure: TrackML score and edge AUC against the number of
labelled events, one line per (pretraining, arm), mean over seeds with min-max bars.
"""
from __future__ import annotations

import argparse
import inspect
import json
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
import yaml

from gnn_jepa.data.convert import DEFAULT_FEATURES
from gnn_jepa.datamodule import EventDataModule
from gnn_jepa.models import JEPAPretraining, TrackFinding
from gnn_jepa.models.checkpoints import save_pretrained_encoder
from gnn_jepa.nn.encoder import EncoderConfig

ROOT = Path(__file__).resolve().parents[2]

ARMS = ("finetune", "frozen", "scratch", "supervised")


def load_config(path):
    cfg = yaml.safe_load(Path(path).read_text())
    return cfg["model"]["init_args"], cfg["data"]


def input_size(data_args) -> int:
    """Hit features per node of this data config: the encoder's ``d_input``."""
    return len(data_args.get("features", DEFAULT_FEATURES))


def encoder_for(encoder: dict, data_args) -> EncoderConfig:
    """The encoder block with ``d_input`` from the data config's features (as the CLI links it)."""
    return EncoderConfig.coerce({**encoder, "d_input": input_size(data_args)})


#: Arguments the study sets itself: every run's encoder is the pretraining config's.
SET_BY_THE_STUDY = ("encoder", "pretrained", "mode", "output_dir", "mask_seed")


def merge_args(base: dict, overrides: dict, model: type, what: str) -> dict:
    """``base`` (a config's ``init_args``) with ``overrides``: a mapping given for a nested
    block that is a mapping in ``base`` too is merged onto it, anything else replaces.

    Raises:
        ValueError: an override that is no argument of ``model`` or one the study sets itself
            (named, with the known ones).
    """
    known = [k for k in inspect.signature(model).parameters if k not in SET_BY_THE_STUDY]
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ValueError(
            f"{what}: {unknown} cannot be set (settable {model.__name__} arguments: {known}). Nested "
            "settings go in their block, e.g. {\"optim\": {\"encoder_lr\": 1e-4}}; settings "
            "removed from main need the code at tag studies-2026-12")
    out = dict(base)
    for k, v in overrides.items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def with_total_steps(args: dict, steps: int) -> dict:
    """``args`` whose ``optim.total_steps`` is ``steps`` (the LR schedule's length)."""
    return {**args, "optim": {**(args.get("optim") or {}), "total_steps": steps}}


def trainer(steps, out, accelerator, precision, val=False):
    return pl.Trainer(max_steps=steps, accelerator=accelerator, devices=1, precision=precision,
                      logger=False, enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False, default_root_dir=str(out),
                      limit_val_batches=0 if not val else 1.0, num_sanity_val_steps=0,
                      gradient_clip_val=1.0)


def pretrain(model_args, data_args, overrides, steps, seed, out, accelerator, precision):
    pl.seed_everything(seed, workers=True)
    args = merge_args(model_args, overrides, JEPAPretraining, "--variants")
    args = with_total_steps({**args, "mask_seed": seed}, steps)
    args["encoder"] = encoder_for(args.get("encoder") or {}, data_args)
    model = JEPAPretraining(**args)
    dm = EventDataModule(**data_args)
    t = trainer(steps, out, accelerator, precision)
    t.fit(model, datamodule=dm)
    path = Path(out) / "pretrained.ckpt"
    t.save_checkpoint(path)
    return str(path), model


def supervised_pretrain(enc_args, ft_args, data_args, steps, seed, out, accelerator, precision):
    """Train encoder + edge head with labels on the pretraining events; save the encoder as a
    checkpoint that ``TrackFinding(pretrained=...)`` loads like a JEPA one (``target_encoder.*``
    weights and the encoder's config)."""
    pl.seed_everything(seed, workers=True)
    encoder = encoder_for(enc_args, data_args)
    model = TrackFinding(encoder=encoder, mode="scratch", **with_total_steps(ft_args, steps))
    trainer(steps, out, accelerator, precision).fit(model, datamodule=EventDataModule(**data_args))
    path = save_pretrained_encoder(Path(out) / "supervised.ckpt", model.encoder.state_dict(), encoder)
    return str(path)


def finetune_and_test(ckpt, enc_args, data_args, mode, n_labels, seed, steps, out, accelerator,
                      precision, ft_args):
    pl.seed_everything(seed, workers=True)
    data = {**data_args, "num_train": n_labels, "train_offset": 100000, "seed": data_args.get("seed", 0),
            "batch_size": min(n_labels, data_args.get("batch_size", 2))}
    dm = EventDataModule(**data)
    model = TrackFinding(encoder=encoder_for(enc_args, data_args),
                         pretrained=None if mode == "scratch" else ckpt, mode=mode,
                         output_dir=str(out), **with_total_steps(ft_args, steps))
    t = trainer(steps, out, accelerator, precision)
    t.fit(model, datamodule=dm)
    if model.tracks.tune_threshold:  # choose the track-building cut on the validation events
        trainer(0, out, accelerator, precision, val=True).validate(model, datamodule=dm, verbose=False)
    t.test(model, datamodule=dm, verbose=False)
    m = model.test_summary["metrics"]
    return {"threshold": model.threshold,
            **{k: float(m[k]) for k in ("edge_auc", "edge_efficiency", "edge_purity", "trackml_score",
                                        "dm_efficiency", "fake_rate", "unmatched_rate",
                                        "duplicate_rate")}}


def summarize(rows):
    table = {}
    for r in rows:
        table.setdefault((r["variant"], r["arm"], r["labels"]), []).append(r)
    out = []
    for (variant, arm, n), rs in sorted(table.items()):
        row = {"variant": variant, "arm": arm, "labels": n, "runs": len(rs)}
        for k in ("edge_auc", "trackml_score", "dm_efficiency", "fake_rate"):
            v = np.array([r[k] for r in rs])
            row[k] = {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())}
        out.append(row)
    return out


def markdown(summary):
    lines = ["| pretraining | arm | labelled events | runs | edge AUC mean [min, max] | TrackML score mean [min, max] | DM eff. mean | fake rate mean |",
             "|---|---|---|---|---|---|---|---|"]
    for r in summary:
        a, s = r["edge_auc"], r["trackml_score"]
        lines.append(f"| {r['variant']} | {r['arm']} | {r['labels']} | {r['runs']} | "
                     f"{a['mean']:.3f} [{a['min']:.3f}, {a['max']:.3f}] | "
                     f"{s['mean']:.3f} [{s['min']:.3f}, {s['max']:.3f}] | "
                     f"{r['dm_efficiency']['mean']:.3f} | {r['fake_rate']['mean']:.3f} |")
    return "\n".join(lines)


def load_rows(path) -> list[dict]:
    """Rows of a saved study: a ``--json`` file (its ``rows``) or JSON lines (one row each)."""
    text = Path(path).read_text()
    try:
        doc = json.loads(text)
        rows = doc.get("rows", [doc]) if isinstance(doc, dict) else doc  # a one-line log: one row
    except json.JSONDecodeError:  # JSON lines: the rows a run printed
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip().startswith("{"):
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}: line {n} is not valid JSON ({exc})") from exc
    # skip the summary lines of JSON-lines logs
    rows = [r for r in rows if isinstance(r, dict) and "arm" in r] if isinstance(rows, list) else []
    if not rows:
        raise ValueError(f"{path}: no study rows (neither a label-efficiency JSON with 'rows' "
                         "nor JSON lines of rows)")
    for r in rows:
        missing = [k for k in ("variant", "arm", "labels", "trackml_score", "edge_auc") if k not in r]
        if missing:
            raise ValueError(f"{path}: a row lacks {missing}: {r}")
    return rows


def plot(summary, path, title: str | None = None):
    """Save TrackML score and edge AUC vs labelled events (log x), one line per (variant, arm):
    the mean over seeds, bars from the lowest to the highest seed. Returns the figure."""
    from matplotlib.figure import Figure  # no pyplot: no backend or global figure state

    lines = {}
    for r in summary:
        lines.setdefault((r["variant"], r["arm"]), []).append(r)
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, metric, label in zip(axes, ("trackml_score", "edge_auc"), ("TrackML score", "edge AUC")):
        for (variant, arm), rs in sorted(lines.items()):
            rs = sorted(rs, key=lambda r: r["labels"])
            x = [r["labels"] for r in rs]
            mean = np.array([r[metric]["mean"] for r in rs])
            err = np.array([[m - r[metric]["min"], r[metric]["max"] - m] for r, m in zip(rs, mean)]).T
            name = arm if arm == "scratch" else f"{variant} · {arm}"
            ax.errorbar(x, mean, yerr=err, marker="o", capsize=3, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("labelled events")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return fig


def save(result: dict, a) -> dict:
    """Write ``result`` to ``--json`` and its figure to ``--plot`` (each when given)."""
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=1))
    if a.plot:
        plot(result["summary"], a.plot, a.title)
    return result


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m studies.label_efficiency.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretrain-config", default=str(ROOT / "configs/pretrain/trackml_small.yaml"))
    p.add_argument("--finetune-config", default=str(ROOT / "configs/finetune/trackml_small.yaml"))
    p.add_argument("--variants", default='{"vicreg": {}}',
                   help="JSON {name: JEPAPretraining overrides} (nested blocks merge onto the "
                        "config's)")
    p.add_argument("--pretrain-seeds", default="0")
    p.add_argument("--pretrain-steps", type=int, default=800)
    p.add_argument("--finetune-steps", type=int, default=150)
    p.add_argument("--labels", default="1,10")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--arms", default="finetune,scratch",
                   help=f"comma-separated, from {','.join(ARMS)}")
    p.add_argument("--particles", type=int, default=None, help="override particles per event")
    p.add_argument("--num-test", type=int, default=None)
    p.add_argument("--pretrain-events", type=int, default=None,
                   help="override the number of unlabelled pretraining events")
    p.add_argument("--ckpt", default=None,
                   help="fine-tune from this JEPA checkpoint instead of pretraining "
                        "(--variants and --pretrain-* are then not used)")
    p.add_argument("--finetune-overrides", default="{}",
                   help="JSON {TrackFinding argument: value} for every arm (nested blocks "
                        "merge onto the config's), e.g. '{\"optim\": {\"encoder_lr\": 1e-4}}'")
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--precision", default="32-true")
    p.add_argument("--out", default="runs/label_efficiency")
    p.add_argument("--json", default=None, help="write the rows and summary to this file")
    p.add_argument("--plot", default=None, help="save the figure (PNG) to this file")
    p.add_argument("--title", default=None, help="the figure's title")
    p.add_argument("--replot", nargs="+", default=None, metavar="FILE",
                   help="run nothing: merge the rows of saved studies (--json files or JSON "
                        "lines), print the table, write --json / --plot")
    a = p.parse_args(argv)
    if a.replot:
        rows = [r for f in a.replot for r in load_rows(f)]
        summary = summarize(rows)
        print(markdown(summary))
        return save({"rows": rows, "summary": summary, "merged_from": a.replot}, a)

    torch.set_float32_matmul_precision("high")
    pre_model, pre_data = load_config(a.pretrain_config)
    ft_model, ft_data = load_config(a.finetune_config)
    for d in (pre_data, ft_data):
        if a.particles:
            d["simulator"] = {**d.get("simulator", {}), "num_particles": a.particles}
        if a.num_test:
            d["num_test"] = a.num_test
    if a.pretrain_events:
        pre_data["num_train"] = a.pretrain_events
    # one encoder for every arm: the pretraining config's (d_input from each data config)
    enc_args = {k: v for k, v in (pre_model.get("encoder") or {}).items() if k != "d_input"}
    ft_args = {k: v for k, v in ft_model.items()
               if k not in ("encoder", "pretrained", "mode", "output_dir")}
    arms = a.arms.split(",")
    if not set(arms) <= set(ARMS):
        p.error(f"--arms: unknown {sorted(set(arms) - set(ARMS))}; choose from {','.join(ARMS)}")
    variants = json.loads(a.variants)
    try:  # a misspelt or removed setting fails here, before anything is trained
        ft_args = merge_args(ft_args, json.loads(a.finetune_overrides), TrackFinding,
                             "--finetune-overrides")
        for name, overrides in variants.items():
            merge_args(pre_model, overrides, JEPAPretraining, f"--variants {name!r}")
    except ValueError as exc:
        p.error(str(exc))
    labels = [int(x) for x in a.labels.split(",")]
    seeds = [int(x) for x in a.seeds.split(",")]
    rows, t0 = [], time.time()
    out = Path(a.out)

    def record(variant, arm, n, seed, pseed, ckpt, pretrain_info):
        run_dir = out / variant / f"p{pseed}" / f"{arm}_n{n}_s{seed}"
        m = finetune_and_test(ckpt, enc_args, ft_data, arm, n, seed, a.finetune_steps, run_dir,
                              a.accelerator, a.precision, ft_args)
        row = {"variant": variant, "arm": arm, "labels": n, "seed": seed, "pretrain_seed": pseed,
               **pretrain_info, **m}
        rows.append(row)
        print(json.dumps(row), flush=True)

    if "scratch" in arms:
        for n in labels:
            for s in seeds:
                record("none (random init)", "scratch", n, s, -1, None, {})
    if "supervised" in arms:
        for pseed in [int(x) for x in a.pretrain_seeds.split(",")]:
            name = "supervised (labelled pretraining events)"
            ckpt = supervised_pretrain(enc_args, ft_args, pre_data, a.pretrain_steps, pseed,
                                       out / name / f"p{pseed}", a.accelerator, a.precision)
            for n in labels:
                for s in seeds:
                    record(name, "finetune", n, s, pseed, ckpt, {"supervised_steps": a.pretrain_steps})
    pretrained_arms = [x for x in arms if x not in ("scratch", "supervised")]

    def run_pretrained_arms(name, pseed, ckpt, info):
        for arm in pretrained_arms:
            for n in labels:
                for s in seeds:
                    record(name, arm, n, s, pseed, ckpt, info)

    if pretrained_arms and a.ckpt:  # one given checkpoint stands for the pretraining
        run_pretrained_arms("checkpoint", -1, a.ckpt, {"ckpt": a.ckpt})
    elif pretrained_arms:
        for name, overrides in variants.items():
            for pseed in [int(x) for x in a.pretrain_seeds.split(",")]:
                ckpt, _ = pretrain(pre_model, pre_data, overrides, a.pretrain_steps, pseed,
                                   out / name / f"p{pseed}", a.accelerator, a.precision)
                run_pretrained_arms(name, pseed, ckpt, {"pretrain_overrides": overrides})
    summary = summarize(rows)
    result = {"rows": rows, "summary": summary, "seconds": time.time() - t0,
              "args": vars(a), "finetune_args": ft_args, "encoder_args": enc_args,
              "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
    print(json.dumps({"summary": summary, "seconds": result["seconds"]}))
    print(markdown(summary))
    return save(result, a)


if __name__ == "__main__":
    main()
