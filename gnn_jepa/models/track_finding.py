"""Track finding as a LightningModule: encoder -> edge scores -> tracks -> TrackML metrics.

The encoder is loaded from a JEPA checkpoint (``pretrained``) and fine-tuned (``finetune``),
kept fixed (``frozen``: only the head learns), or trained from a random init (``scratch``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F

from gnn_jepa.models.jepa import ENCODER_ARGS
from gnn_jepa.models.schedules import warmup_cosine
from gnn_jepa.nn.edge_head import EdgeHead
from gnn_jepa.nn.encoder import GraphTransformerEncoder
from gnn_jepa.tracking.building import build_tracks
from gnn_jepa.tracking.metrics import edge_metrics

MODES = ("finetune", "frozen", "scratch")


class PretrainedLoadError(RuntimeError):
    """A pretrained checkpoint does not fit the encoder."""


def load_pretrained_encoder(encoder: torch.nn.Module, path: str, which: str = "target",
                            expected: Optional[dict] = None) -> dict:
    """Load the ``which`` (``target`` = EMA or ``context``) encoder of a JEPA checkpoint.

    Fails loudly when the file has no such encoder, when its encoder hyperparameters differ
    from ``expected``, or on any missing, unexpected or mis-shaped key.

    Returns:
        the checkpoint's hyperparameters.
    """
    p = Path(path)
    if not p.is_file():
        raise PretrainedLoadError(f"pretrained checkpoint {p} does not exist")
    ckpt = torch.load(p, map_location="cpu", weights_only=False)
    state = ckpt.get("state_dict", ckpt)
    prefix = f"{which}_encoder."
    enc_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not enc_state:
        raise PretrainedLoadError(
            f"{p}: no '{prefix}*' weights (is it a JEPA pretraining checkpoint?); "
            f"first keys: {list(state)[:5]}")
    hparams = dict(ckpt.get("hyper_parameters", {}))
    if expected:
        diff = {k: (hparams[k], expected[k]) for k in expected
                if k in hparams and hparams[k] != expected[k]}
        if diff:
            raise PretrainedLoadError(
                f"{p}: encoder hyperparameters differ from this model's (checkpoint, model): {diff}")
    own = encoder.state_dict()
    missing = sorted(set(own) - set(enc_state))
    unexpected = sorted(set(enc_state) - set(own))
    shapes = {k: (tuple(enc_state[k].shape), tuple(own[k].shape)) for k in set(own) & set(enc_state)
              if enc_state[k].shape != own[k].shape}
    if missing or unexpected or shapes:
        raise PretrainedLoadError(f"{p}: encoder weights do not fit: missing={missing[:8]}, "
                                  f"unexpected={unexpected[:8]}, shape mismatches={shapes}")
    encoder.load_state_dict(enc_state, strict=True)
    return hparams


class TrackFinding(pl.LightningModule):
    """Edge-classification track finding on top of a (pretrained) graph-transformer encoder.

    Args:
        d_input, d_model, d_embedding, n_layers, heads, dropout, d_edge, attention: the encoder;
            must match the pretrained checkpoint's.
        pretrained: path of a JEPA checkpoint (``None`` only with ``mode: scratch``).
        pretrained_encoder: ``"target"`` (EMA, default) or ``"context"`` encoder of the checkpoint.
        mode: ``finetune``, ``frozen`` or ``scratch``.
        head_hidden, head_layers: edge head MLP.
        encoder_lr, head_lr, weight_decay, warmup_steps, total_steps: AdamW + warmup/cosine.
        pos_weight: BCE weight of true edges; ``None`` = #false / #true per batch (imbalance).
        threshold, building, min_hits: track building.
        pt_min: reconstructable-particle pT cut of the metrics (GeV).
        output_dir: where ``test`` writes metrics JSON and plots, ``predict`` submission CSVs
            (default: the logger's folder).
    """

    def __init__(self, d_input: int = 4, d_model: int = 64, d_embedding: int = 32, n_layers: int = 3,
                 heads: int = 4, dropout: float = 0.0, d_edge: int = 5, attention: str = "local",
                 pretrained: Optional[str] = None, pretrained_encoder: str = "target",
                 mode: str = "finetune", head_hidden: int = 64, head_layers: int = 2,
                 encoder_lr: float = 5e-4, head_lr: float = 2e-3, weight_decay: float = 0.01,
                 warmup_steps: int = 10, total_steps: Optional[int] = None,
                 pos_weight: Optional[float] = None, threshold: float = 0.5, building: str = "cc",
                 min_hits: int = 3, pt_min: float = 1.0, output_dir: Optional[str] = None):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode != "scratch" and not pretrained:
            raise ValueError(f"mode {mode!r} needs --model.pretrained=<JEPA checkpoint>; "
                             "use mode: scratch to train from a random init")
        # output_dir is where *this* run writes, not a model property: keep it out of the
        # checkpoint so that `gnn-jepa test --ckpt_path` honours the one given now.
        self.save_hyperparameters(ignore=["output_dir"])
        self.output_dir = output_dir
        enc = {k: self.hparams[k] for k in ENCODER_ARGS}
        self.encoder = GraphTransformerEncoder(**enc)
        if mode != "scratch":
            load_pretrained_encoder(self.encoder, pretrained, pretrained_encoder, expected=enc)
        if mode == "frozen":
            for p in self.encoder.parameters():
                p.requires_grad_(False)
        self.head = EdgeHead(d_embedding, d_edge, head_hidden, head_layers)
        self._test_events: list[dict] = []

    def forward(self, data) -> torch.Tensor:
        """Edge logits [E] for a (batched) event graph."""
        ea = getattr(data, "edge_attr", None)
        if self.hparams.mode == "frozen":
            self.encoder.eval()
            with torch.no_grad():
                h = self.encoder(data.x, data.edge_index, ea)
        else:
            h = self.encoder(data.x, data.edge_index, ea)
        return self.head(h, data.edge_index, ea)

    def _loss(self, logits, y):
        pw = self.hparams.pos_weight
        if pw is None:
            npos = y.sum().clamp_min(1.0)
            pw = ((y.numel() - npos) / npos).clamp(1.0, 100.0)
        pw = torch.as_tensor(pw, device=logits.device, dtype=logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, y.float(), pos_weight=pw)

    def training_step(self, batch, batch_idx):
        logits = self(batch)
        loss = self._loss(logits, batch.y)
        self.log("train/loss", loss, prog_bar=True, batch_size=int(batch.num_graphs))
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self(batch)
        loss = self._loss(logits, batch.y)
        m = edge_metrics(torch.sigmoid(logits).float().cpu().numpy(), batch.y.cpu().numpy(),
                         self.hparams.threshold)
        bs = int(batch.num_graphs)
        self.log("val/loss", loss, prog_bar=True, batch_size=bs, sync_dist=True)
        for k in ("auc", "efficiency", "purity"):
            self.log(f"val/edge_{k}", float(m[k]), batch_size=bs, sync_dist=True)

    # ------------------------------------------------------------------ track building
    def reconstruct(self, data, scores: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Track id per hit (-1: in no track).

        Works on one event or a batch: events share no edge, so their tracks never mix.
        ``scores`` (edge probabilities) are computed when not given.
        """
        if scores is None:
            scores = torch.sigmoid(self(data))
        r = torch.hypot(data.pos[:, 0], data.pos[:, 1])
        return build_tracks(data.num_nodes, data.edge_index, scores, threshold=self.hparams.threshold,
                            min_hits=self.hparams.min_hits, method=self.hparams.building,
                            order_key=torch.hypot(r, data.pos[:, 2]),
                            cc_method="torch" if data.pos.is_cuda else "scipy")

    def test_step(self, batch, batch_idx):
        logits = self(batch)
        scores = torch.sigmoid(logits).float().cpu().numpy()
        y = batch.y.cpu().numpy()
        self._test_events.append({"edge_scores": scores, "edge_y": y})
        # one encoder pass and one track building for the whole batch, then split per event
        track_id = self.reconstruct(batch, torch.sigmoid(logits)).cpu().numpy()
        ptr = batch.ptr.cpu().numpy()
        for k, data in enumerate(batch.to_data_list()):
            tid = track_id[ptr[k]:ptr[k + 1]]
            self._test_events.append({
                "track_id": tid, "particle_id": data.particle_id.cpu().numpy(),
                "pt": data.pt.cpu().numpy(), "eta": data.particle_eta.cpu().numpy(),
                "weight": data.weight.cpu().numpy(), "event_id": int(data.event_id)})

    def on_test_epoch_end(self) -> None:
        from gnn_jepa.tracking.report import summarize_events, write_report
        events = [e for e in self._test_events if "track_id" in e]
        edges = [e for e in self._test_events if "edge_y" in e]
        self._test_events = []
        summary = summarize_events(events, edges, pt_min=self.hparams.pt_min,
                                   min_hits=self.hparams.min_hits, threshold=self.hparams.threshold)
        for k, v in summary["metrics"].items():
            if isinstance(v, (int, float)):
                self.log(f"test/{k}", float(v), sync_dist=True)
        out = self._output_dir()
        if self.trainer.is_global_zero:
            write_report(summary, out)
        self.test_summary = summary

    def _output_dir(self) -> Path:
        if self.output_dir:
            return Path(self.output_dir)
        logdir = getattr(self.trainer, "log_dir", None) or "."
        return Path(logdir)

    def predict_step(self, batch, batch_idx):
        from gnn_jepa.tracking.building import to_submission_ids
        out = self._output_dir() / "submission"
        out.mkdir(parents=True, exist_ok=True)
        written = []
        track_id = self.reconstruct(batch)
        ptr = batch.ptr.tolist()
        for k, data in enumerate(batch.to_data_list()):
            tid = to_submission_ids(track_id[ptr[k]:ptr[k + 1]]).cpu().numpy()
            path = out / f"event{int(data.event_id):09d}-submission.csv"
            tmp = path.with_suffix(".csv.tmp")
            np.savetxt(tmp, np.stack([data.hit_id.cpu().numpy(), tid], 1), fmt="%d", delimiter=",",
                       header="hit_id,track_id", comments="")
            tmp.replace(path)
            written.append(str(path))
        return written

    def configure_optimizers(self):
        hp = self.hparams
        groups = [{"params": list(self.head.parameters()), "lr": hp.head_lr}]
        if hp.mode != "frozen":
            groups.append({"params": list(self.encoder.parameters()), "lr": hp.encoder_lr})
        opt = torch.optim.AdamW(groups, weight_decay=hp.weight_decay)
        total = hp.total_steps or int(self.trainer.estimated_stepping_batches)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, hp.warmup_steps, total, 0.01))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
