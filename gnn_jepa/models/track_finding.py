"""Track finding as a LightningModule: encoder -> edge scores -> tracks -> TrackML metrics.

The encoder is loaded from a JEPA checkpoint (``pretrained``) and fine-tuned (``finetune``),
kept fixed (``frozen``: only the head learns), or trained from a random init (``scratch``).
"""
from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import lightning.pytorch as pl
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from gnn_jepa.config import merge_config
from gnn_jepa.graph.edges import edge_labels, segment_labels
from gnn_jepa.models.checkpoints import HEAD_OUTPUT, load_pretrained_encoder, load_pretrained_head
from gnn_jepa.models.guards import GuardedModule, batch_events, check_loss
from gnn_jepa.models.schedules import OptimConfig, adamw_warmup_cosine
from gnn_jepa.nn.edge_head import HeadConfig
from gnn_jepa.nn.encoder import EncoderConfig
from gnn_jepa.tracking.building import (TrackBuildingConfig, build_tracks, hit_order_key,
                                        to_submission_ids)
from gnn_jepa.tracking.colliderml_metrics import summarize_colliderml, write_predictions
from gnn_jepa.tracking.metrics import (edge_metrics, summarize_events, top1_next_hit, trackml_score,
                                       trackml_score_defined)

MODES = ("finetune", "frozen", "scratch")
EDGE_LABELS = ("particle", "segment")

#: Fine-tuning's default optimisation: a faster head than encoder.
FINETUNE_OPTIM = OptimConfig(encoder_lr=5e-4, head_lr=2e-3, weight_decay=0.01, warmup_steps=10)


def events_with_edges(batch) -> int:
    """How many events of a (batched) graph have at least one edge."""
    src = batch.edge_index[0]
    if src.numel() == 0:
        return 0
    graph = getattr(batch, "batch", None)
    return 1 if graph is None else int(torch.unique(graph[src]).numel())


class TrackFinding(GuardedModule, pl.LightningModule):
    """Edge-classification track finding on top of a (pretrained) graph-transformer encoder.

    Args:
        encoder: the encoder (:class:`~gnn_jepa.nn.encoder.EncoderConfig`); must match the
            pretrained checkpoint's.
        pretrained: path of a JEPA checkpoint, whose EMA target encoder is loaded, and, from a
            segment-level JEPA checkpoint (:class:`~gnn_jepa.models.segment_jepa.SegmentJEPA`),
            the edge head's segment-pair rounds too (``None`` only with ``mode: scratch``).
        mode: ``finetune`` (everything trains), ``frozen`` (what was pretrained stays fixed:
            the head, or only the head's output layer after a segment-level JEPA, trains) or
            ``scratch`` (same architecture, random init).
        head: the edge head (:class:`~gnn_jepa.nn.edge_head.HeadConfig`).
        optim: AdamW learning rates (``head_lr`` for the head), weight decay, warmup + cosine
            (:class:`~gnn_jepa.models.schedules.OptimConfig`).
        pos_weight: BCE weight of true edges; ``None`` = #false / #true per batch (imbalance).
        edge_label: what a true edge is, for training and the edge metrics: ``"particle"``
            (both hits from one non-noise particle, ``data.y``) or ``"segment"`` (and
            consecutive along it: :func:`~gnn_jepa.graph.edges.segment_labels`).
        tracks: track building and the score cut
            (:class:`~gnn_jepa.tracking.building.TrackBuildingConfig`). With
            ``tune_threshold``, the cut with the best mean TrackML score on the validation
            events is kept in the buffer ``tuned_threshold`` and travels with the checkpoint.
        pt_min: reconstructable-particle pT cut of the metrics (GeV).
        output_dir: where ``predict`` writes its submissions and ``gnn-jepa test`` its report
            (default: the logger's folder).
        recompute_encoder: in training (train mode, autograd on), keep only the encoder's
            inputs for backward and run its forward again there (activation checkpointing):
            the memory of the encoder's activations (about 0.2 GB at 1,000 particles) for one
            more encoder forward per step. Same values and gradients (bitwise on CPU; dropout
            masks are replayed). Ignored with ``mode: frozen`` (no encoder gradients).

    ``predict`` writes a TrackML submission CSV per event (``submission/``) and, for all
    events together, the ColliderML tracking task's submission
    ``colliderml_predictions.parquet`` (rows ``event_id, hit_id, track_id``, ``hit_id`` the
    hit's row index in its event, i.e. our ``hit_id - 1``; CSV without pyarrow) with the same
    tracks. After ``test``, :attr:`test_summary` holds the metrics
    (:func:`~gnn_jepa.tracking.metrics.summarize_events`), the ColliderML task's among them
    (``colliderml_*``, :func:`~gnn_jepa.tracking.colliderml_metrics.summarize_colliderml`).
    """

    def __init__(self, encoder: EncoderConfig = EncoderConfig(), pretrained: Optional[str] = None,
                 mode: str = "finetune", head: HeadConfig = HeadConfig(),
                 optim: OptimConfig = FINETUNE_OPTIM, pos_weight: Optional[float] = None,
                 edge_label: str = "particle", tracks: TrackBuildingConfig = TrackBuildingConfig(),
                 pt_min: float = 1.0, output_dir: Optional[str] = None,
                 recompute_encoder: bool = False):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if edge_label not in EDGE_LABELS:
            raise ValueError(f"edge_label must be one of {EDGE_LABELS}, got {edge_label!r}")
        if mode != "scratch" and not pretrained:
            raise ValueError(f"mode {mode!r} needs --model.pretrained=<JEPA checkpoint>; "
                             "use mode: scratch to train from a random init")
        self.encoder_config = EncoderConfig.coerce(encoder)
        self.head_config = merge_config(head, HeadConfig(), "head")
        self.optim = merge_config(optim, FINETUNE_OPTIM, "optim")
        self.tracks = merge_config(tracks, TrackBuildingConfig(), "tracks")
        # output_dir is where *this* run writes, not a model property: keep it out of the
        # checkpoint so that `gnn-jepa test --ckpt_path` honours the one given now.
        self.save_hyperparameters(ignore=["output_dir"])
        # plain dicts in the checkpoint (readable with weights_only=True, comparable with YAML)
        self.hparams.update(encoder=self.encoder_config.as_dict(), head=asdict(self.head_config),
                            optim=asdict(self.optim), tracks=asdict(self.tracks))
        self.output_dir = output_dir
        self.encoder = self.encoder_config.build()
        if mode != "scratch":
            load_pretrained_encoder(self.encoder, pretrained, expected=self.encoder_config)
        if mode == "frozen":
            for p in self.encoder.parameters():
                p.requires_grad_(False)
        self.head = self.head_config.build(self.encoder_config.d_embedding, self.encoder_config.d_edge)
        # a segment-level JEPA checkpoint also holds the head's trunk (all but its output
        # layer), an event-mixing one the whole head
        self.pretrained_head = load_pretrained_head(self.head, pretrained, asdict(
            self.head_config)) if mode != "scratch" else None
        if mode != "scratch":
            rank_zero_info(f"pretrained from {pretrained}: the encoder" + {
                "trunk": " and the edge head's segment-pair rounds (its output layer starts from "
                         "scratch)",
                "whole": " and the whole edge head (output layer included)",
                None: " (the edge head starts from scratch)"}[self.pretrained_head])
        if mode == "frozen" and self.pretrained_head:
            for name, p in self.head.named_parameters():
                p.requires_grad_(name.startswith(HEAD_OUTPUT))
        # NaN = not tuned yet; a buffer so that the tuned value travels with the checkpoint
        self.register_buffer("tuned_threshold", torch.tensor(float("nan")))
        self._test_events: list[dict] = []
        self._val_events: list[dict] = []
        self._predictions: list[tuple] = []  # (event_id, hit row, track id): ColliderML
        self._ceiling_reported = False
        self.test_summary: Optional[dict] = None

    def forward(self, data) -> torch.Tensor:
        """Edge logits [E] for a (batched) event graph."""
        ea = getattr(data, "edge_attr", None)
        if self.hparams.mode == "frozen":
            was_training = self.encoder.training
            self.encoder.eval()
            with torch.no_grad():
                h = self.encoder(data.x, data.edge_index, ea)
            self.encoder.train(was_training)
        elif self.hparams.recompute_encoder and self.training and torch.is_grad_enabled():
            h = checkpoint(self.encoder, data.x, data.edge_index, ea, use_reentrant=False)
        else:
            h = self.encoder(data.x, data.edge_index, ea)
        return self.head(h, data.edge_index, ea, pos=data.pos)

    def edge_targets(self, data) -> torch.Tensor:
        """Truth label of every edge of ``data`` under ``edge_label`` ([E] float).

        Unlabelled events are refused before they reach it (:meth:`on_before_batch_transfer`).
        """
        if self.hparams.edge_label == "segment":
            return segment_labels(data.particle_id, data.hit_order, data.edge_index,
                                  getattr(data, "batch", None))
        y = getattr(data, "y", None)
        return y if y is not None else edge_labels(data.particle_id, data.edge_index)

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """Refuse unlabelled events in fit, validate and test, on the host (no device sync).

        Raises:
            ValueError: an event of the batch has no truth (hits only): track finding trains,
                validates and tests on labelled events only.
        """
        if self.trainer.predicting or "has_truth" not in batch or bool(batch.has_truth.all()):
            return batch
        ids = batch.event_id.reshape(-1)[~batch.has_truth.reshape(-1)].tolist()
        raise ValueError(
            f"event(s) {', '.join(map(str, ids[:5]))}{' ...' if len(ids) > 5 else ''} have no "
            "truth (hits only: no -truth.csv, or ColliderML hits without their particles "
            "shards): track finding trains, validates and tests on labelled events; "
            "unlabelled events are for pretraining (or gnn-jepa predict)")

    def edge_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """BCE of edge logits against labels, true edges weighted by ``pos_weight``."""
        pw = self.hparams.pos_weight
        if pw is None:
            npos = y.sum().clamp_min(1.0)
            pw = ((y.numel() - npos) / npos).clamp(1.0, 100.0)
        pw = torch.as_tensor(pw, device=logits.device, dtype=logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, y.float(), pos_weight=pw)

    def training_step(self, batch, batch_idx):
        logits = self(batch)
        bs = int(batch.num_graphs)
        # An event without an edge (a single hit, or a graph too sparse for it) has nothing to
        # classify: it is skipped and counted, as the JEPA counts events without a valid
        # target region. A batch of only such events trains on a zero loss that still has a
        # graph (Lightning's backward needs one): the mean over no edge would be NaN.
        skipped = bs - events_with_edges(batch)
        if logits.numel() == 0:
            loss = logits.sum() * 0.0
        else:
            loss = self.edge_loss(logits, self.edge_targets(batch))
        self._batch_events = batch_events(batch)
        check_loss(loss, step=self.global_step, events=self._batch_events)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/skipped_events", float(skipped), batch_size=bs, reduce_fx="sum")
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self(batch)
        y = self.edge_targets(batch)
        bs, n_edges = int(batch.num_graphs), int(logits.numel())
        # val/loss is the mean over the epoch's edges (each batch weighted by its edge count):
        # an event without an edge adds nothing to it and is counted in val/skipped_events
        loss = self.edge_loss(logits, y) if n_edges else logits.new_zeros(())
        self.log("val/loss", loss, prog_bar=True, batch_size=n_edges, sync_dist=True)
        self.log("val/skipped_events", float(bs - events_with_edges(batch)), batch_size=bs,
                 reduce_fx="sum", sync_dist=True)
        scores = torch.sigmoid(logits).float()
        m = edge_metrics(scores.cpu().numpy(), y.cpu().numpy(), self.threshold)
        m["top1"] = top1_next_hit(scores.cpu().numpy(), batch.edge_index.cpu().numpy(),
                                  y.cpu().numpy(), hit_order_key(batch.pos).cpu().numpy())
        for k in ("auc", "efficiency", "purity", "top1"):
            if math.isfinite(m[k]):  # AUC is undefined on a batch with one class
                self.log(f"val/edge_{k}", float(m[k]), batch_size=bs, sync_dist=True)
        if self.tracks.tune_threshold:
            self._val_events.append(self._event_arrays(batch, torch.sigmoid(logits.float())))

    @staticmethod
    def _truth_scores(data) -> torch.Tensor:
        """Perfect edge scores: 1 on the true segments (consecutive hits of a particle).
        Tracks built from them give the graph's ceiling (``gnn_jepa.evaluation.ceiling``)."""
        ptr = data["ptr"]  # a Batch, or the dict of _event_arrays
        batch = torch.repeat_interleave(torch.arange(len(ptr) - 1, device=ptr.device), ptr.diff())
        return segment_labels(data["particle_id"], data["hit_order"], data["edge_index"], batch).float()

    @staticmethod
    def _event_arrays(batch, scores: torch.Tensor) -> dict:
        """What track building and the TrackML score need, on the CPU."""
        keys = ("edge_index", "pos", "particle_id", "hit_order", "weight", "ptr")
        return {"scores": scores.detach().cpu(), **{k: getattr(batch, k).detach().cpu() for k in keys}}

    def on_validation_epoch_end(self) -> None:
        events, self._val_events = self._val_events, []
        if not self.tracks.tune_threshold or self.trainer.sanity_checking:
            return
        grid = self.tracks.threshold_grid
        # per threshold: summed scores of the events that have one; then the count of those
        # events and of the events without a score (weights summing to 0), reduced over ranks
        # the last three: the ceiling (truth edge scores) summed over the scored events, then
        # the counts of scored and unscored events
        totals = torch.zeros(len(grid) + 3, dtype=torch.float64)
        for b in events:
            ptr = b["ptr"].tolist()
            pid, w = b["particle_id"].numpy(), b["weight"].numpy()
            scored = [slice(ptr[k], ptr[k + 1]) for k in range(len(ptr) - 1)
                      if trackml_score_defined(w[ptr[k]:ptr[k + 1]])]
            totals[-2] += len(scored)
            totals[-1] += len(ptr) - 1 - len(scored)
            if not scored:
                continue
            truth = self.reconstruct(b, self._truth_scores(b), threshold=0.5).numpy()
            totals[-3] += sum(trackml_score(truth[sl], pid[sl], w[sl]) for sl in scored)
            for i, thr in enumerate(grid):
                tid = self.reconstruct(b, b["scores"], threshold=thr).numpy()
                totals[i] += sum(trackml_score(tid[sl], pid[sl], w[sl]) for sl in scored)
        totals = self.trainer.strategy.reduce(totals.to(self.device), reduce_op="sum").cpu()
        n_scored, n_unscored = int(totals[-2]), int(totals[-1])
        if n_unscored:
            rank_zero_warn(f"{n_unscored} of {n_scored + n_unscored} validation events have no "
                           "TrackML score (hit weights sum to 0: no particle with >= 4 hits) and "
                           "are left out of the threshold tuning" + (
                               "" if n_scored else f"; none is left, so the cut stays at {self.threshold}"))
        if n_scored == 0:
            return
        means = totals[:len(grid)] / n_scored
        ceiling = float(totals[-3] / n_scored)
        if not self._ceiling_reported:
            rank_zero_info(f"Graph ceiling on the {n_scored} validation events: TrackML score "
                           f"{ceiling:.4f} with truth edge scores ({self.tracks.building} building)")
            self._ceiling_reported = True
        self.log("val/ceiling_trackml_score", ceiling, rank_zero_only=True)
        if not torch.isfinite(means).all():
            raise RuntimeError(f"threshold tuning: non-finite mean TrackML scores {means.tolist()}")
        best = int(torch.argmax(means))  # ties: the lowest threshold
        self.tuned_threshold.fill_(float(grid[best]))
        self.log("val/threshold", float(grid[best]), rank_zero_only=True)
        self.log("val/trackml_score", float(means[best]), rank_zero_only=True)

    @property
    def threshold(self) -> float:
        """The score cut that track building uses: the tuned one once there is one."""
        t = float(self.tuned_threshold)
        # the grid value back from the float32 buffer (0.3, not 0.30000001)
        return self.tracks.threshold if t != t else min(self.tracks.threshold_grid, key=lambda g: abs(g - t))

    # ------------------------------------------------------------------ track building
    def reconstruct(self, data, scores: Optional[torch.Tensor] = None,
                    threshold: Optional[float] = None) -> torch.Tensor:
        """Track id per hit (-1: in no track).

        Works on one event or a batch: events share no edge, so their tracks never mix.
        ``scores`` (edge probabilities) are computed when not given; ``threshold`` defaults to
        :attr:`threshold`. ``data`` needs ``pos`` and ``edge_index`` (a dict with them works).
        """
        if scores is None:
            scores = torch.sigmoid(self(data))
        pos, edge_index = data["pos"], data["edge_index"]
        thr = self.threshold if threshold is None else threshold
        return build_tracks(pos.shape[0], edge_index, scores, threshold=thr,
                            min_hits=self.tracks.min_hits, method=self.tracks.building,
                            order_key=hit_order_key(pos),
                            cc_method="torch" if pos.is_cuda else "scipy")

    def test_step(self, batch, batch_idx):
        logits = self(batch)
        scores = torch.sigmoid(logits).float().cpu().numpy()
        y = self.edge_targets(batch).cpu().numpy()
        self._test_events.append({"edge_scores": scores, "edge_y": y})
        # one encoder pass and one track building for the whole batch, then split per event
        track_id = self.reconstruct(batch, torch.sigmoid(logits)).cpu().numpy()
        truth_id = self.reconstruct(batch, self._truth_scores(batch), threshold=0.5).cpu().numpy()
        ptr = batch.ptr.cpu().numpy()
        for k, data in enumerate(batch.to_data_list()):
            tid = track_id[ptr[k]:ptr[k + 1]]
            self._test_events.append({
                "track_id": tid, "ceiling_track_id": truth_id[ptr[k]:ptr[k + 1]],
                "particle_id": data.particle_id.cpu().numpy(),
                "pt": data.pt.cpu().numpy(), "eta": data.particle_eta.cpu().numpy(),
                "weight": data.weight.cpu().numpy(), "event_id": int(data.event_id),
                "primary_pt1": (data.primary_pt1.cpu().numpy()
                                if "primary_pt1" in data else None),
                "num_primary_pt1": (int(data.num_primary_pt1)
                                    if "num_primary_pt1" in data else None)})

    def on_test_epoch_end(self) -> None:
        events = [e for e in self._test_events if "track_id" in e]
        edges = [e for e in self._test_events if "edge_y" in e]
        self._test_events = []
        summary = summarize_events(events, edges, pt_min=self.hparams.pt_min,
                                   min_hits=self.tracks.min_hits, threshold=self.threshold)
        # the graph's ceiling on the same events: tracks built from truth edge scores
        ceiling = summarize_events([{**e, "track_id": e["ceiling_track_id"]} for e in events],
                                   pt_min=self.hparams.pt_min, min_hits=self.tracks.min_hits)
        for k in ("trackml_score", "dm_efficiency", "fake_rate"):
            summary["metrics"][f"ceiling_{k}"] = ceiling["metrics"][k]
            if f"metrics.{k}" in ceiling["undefined"]:
                summary["undefined"][f"metrics.ceiling_{k}"] = ceiling["undefined"][f"metrics.{k}"]
        colliderml, undefined = summarize_colliderml(events)
        summary["metrics"].update(colliderml)
        summary["undefined"].update(undefined)
        for k, v in summary["metrics"].items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self.log(f"test/{k}", float(v), sync_dist=True)
        self.test_summary = summary

    def output_folder(self) -> Path:
        """``output_dir``, else the logger's folder: where this run's outputs go."""
        if self.output_dir:
            return Path(self.output_dir)
        logdir = getattr(self.trainer, "log_dir", None) or "."
        return Path(logdir)

    def predict_step(self, batch, batch_idx):
        out = self.output_folder() / "submission"
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
            self._predictions.append((int(data.event_id), data.hit_id.cpu().numpy() - 1, tid))
        return written

    def on_predict_epoch_start(self) -> None:
        self._predictions = []

    def on_predict_epoch_end(self) -> None:
        # one file per process when several predict (each holds its own events)
        rank = self.global_rank if self.trainer.world_size > 1 else None
        path = write_predictions(self._predictions, self.output_folder(), rank=rank)
        rank_zero_info(f"ColliderML task submission ({len(self._predictions)} events): {path}")
        self._predictions = []

    def configure_optimizers(self):
        o = self.optim
        groups = [{"params": [p for p in self.head.parameters() if p.requires_grad], "lr": o.head_lr}]
        if self.hparams.mode != "frozen":
            groups.append({"params": list(self.encoder.parameters()), "lr": o.encoder_lr})
        return adamw_warmup_cosine(groups, o, o.total_steps or int(self.trainer.estimated_stepping_batches))
