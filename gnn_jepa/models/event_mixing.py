r"""Event-mixing pretraining: the tracker's whole edge classifier learns "same event?" on
overlays of unlabelled events.

Batches come from ``EventDataModule(mix_events=2)``: every event is an overlay of two
unlabelled ones, each hit marked with its event (``data.mix_source``,
:mod:`gnn_jepa.data.mixing`), the graph built on the overlay. Each edge gets the label "both
hits from the same event", and the hit encoder plus the edge head (the track-finding
config's, output layer included) are trained on it with a class-balanced BCE. A segment
across events is always fake and one inside an event true or fake, with fakes alike on both
sides, so the best same-event score ranks segments as their trueness does (module doc of
:mod:`gnn_jepa.data.mixing`): the head learns track continuation without a label.

Fine-tuning (``TrackFinding(mode="finetune", pretrained=<this run's checkpoint>)``) loads the
encoder and the whole head, output layer included; the modules are named ``target_encoder``
and ``target_head`` as in the JEPA checkpoints that fine-tuning reads (here there is no EMA
copy: they are the trained modules). Validation logs the same-event loss and AUC on overlays of
validation events, the run's label-free model selection.
"""
from __future__ import annotations

from dataclasses import asdict

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F

from gnn_jepa.config import merge_config
from gnn_jepa.data.mixing import MIX_COLUMN
from gnn_jepa.models.guards import GuardedModule, batch_events, check_loss
from gnn_jepa.models.schedules import OptimConfig, adamw_warmup_cosine
from gnn_jepa.nn.edge_head import HeadConfig
from gnn_jepa.nn.encoder import EncoderConfig
from gnn_jepa.tracking.metrics import roc_auc

#: The fine-tuning defaults (``configs/finetune/trackml_small.yaml``'s learning rates).
MIXING_OPTIM = OptimConfig(encoder_lr=5e-4, head_lr=2e-3, weight_decay=0.01, warmup_steps=20)


def same_event_labels(batch) -> torch.Tensor:
    """[E] 1.0 where both hits of an edge come from the same event of the overlay.

    Raises:
        ValueError: the batch has no ``mix_source`` (events that are no overlay: set
            ``data.mix_events: 2``).
    """
    src = getattr(batch, MIX_COLUMN, None)
    if src is None:
        raise ValueError("event-mixing pretraining needs overlays of events (data.mix_events: 2); "
                         f"batch of {batch_events(batch)} has no '{MIX_COLUMN}'")
    return (src[batch.edge_index[0]] == src[batch.edge_index[1]]).to(torch.float32)


def balanced_bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """BCE with the positives weighted by negatives / positives (1 without either)."""
    pos = y.sum()
    neg = y.numel() - pos
    pw = (neg / pos) if bool(pos > 0) and bool(neg > 0) else torch.ones((), device=y.device)
    return F.binary_cross_entropy_with_logits(logits.float(), y, pos_weight=pw.float())


class EventMixingPretraining(GuardedModule, pl.LightningModule):
    """Pretrains the track-finding encoder and edge head on same-event labels of overlays.

    Args:
        encoder: the hit encoder (the fine-tuning config's ``encoder`` block).
        head: the edge head (the fine-tuning config's ``head`` block).
        optim: AdamW and schedule (encoder and head learning rates).
    """

    def __init__(self, encoder: EncoderConfig = EncoderConfig(),
                 head: HeadConfig = HeadConfig(kind="segment_pairs", hidden=64, rounds=4),
                 optim: OptimConfig = MIXING_OPTIM):
        super().__init__()
        self.encoder_config = EncoderConfig.coerce(encoder)
        self.head_config = merge_config(head, HeadConfig(), "head")
        self.optim = merge_config(optim, MIXING_OPTIM, "optim")
        self.save_hyperparameters()
        # plain dicts in the checkpoint, in the blocks fine-tuning compares with its own
        self.hparams.update(encoder=self.encoder_config.as_dict(), head=asdict(self.head_config),
                            optim=asdict(self.optim))
        self.target_encoder = self.encoder_config.build()
        self.target_head = self.head_config.build(self.encoder_config.d_embedding,
                                                  self.encoder_config.d_edge)
        self._val_auc: list[float] = []

    def forward(self, data) -> torch.Tensor:
        """Edge logits [E] (same event) of a batch of overlays."""
        ea = getattr(data, "edge_attr", None)
        h = self.target_encoder(data.x, data.edge_index, ea)
        return self.target_head(h, data.edge_index, ea, pos=data.pos)

    def training_step(self, batch, batch_idx):
        logits = self(batch)
        y = same_event_labels(batch)
        loss = balanced_bce(logits, y) if logits.numel() else logits.sum() * 0.0
        self._batch_events = batch_events(batch)
        check_loss(loss, step=self.global_step, events=self._batch_events)
        bs = int(batch.num_graphs)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/same_event_share", y.mean() if y.numel() else 0.0, batch_size=bs)
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self(batch)
        y = same_event_labels(batch)
        if logits.numel() == 0:
            return
        self.log("val/loss", balanced_bce(logits, y), batch_size=int(batch.num_graphs))
        auc = roc_auc(logits.detach().float().cpu(), y.cpu())
        if np.isfinite(auc):
            self._val_auc.append(auc)

    def on_validation_epoch_end(self) -> None:
        if self._val_auc:
            self.log("val/same_event_auc", float(np.mean(self._val_auc)))
        self._val_auc = []

    def configure_optimizers(self):
        o = self.optim
        groups = [{"params": list(self.target_encoder.parameters()), "lr": o.encoder_lr},
                  {"params": list(self.target_head.parameters()), "lr": o.head_lr}]
        return adamw_warmup_cosine(groups, o, o.total_steps or int(self.trainer.estimated_stepping_batches))
