"""JEPA pretraining as a LightningModule.

One step (all K targets of every event in one pass):

1. the :class:`~gnn_jepa.masks.RegionMasker` picks a context region and K target regions
   per event, from a generator seeded by the global step (a resumed run draws the same masks);
2. the context encoder embeds the context subgraph (edges with both ends in the context);
3. the EMA target encoder (no grad) embeds the full event or only the target regions'
   subgraphs (``target_scope``); its outputs are layer-normed and averaged over the cells of a
   fixed grid tiling each target region;
4. the predictor maps context embeddings + one query per cell to predicted cell embeddings;
5. loss = smooth L1(prediction, target) over occupied cells (or all cells, the empty ones
   aiming at a zero vector) + an anti-collapse term on the context embeddings.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict
from typing import Any, Optional

import lightning.pytorch as pl
from lightning.pytorch.utilities.rank_zero import rank_zero_info
import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.utils import scatter, subgraph

from gnn_jepa.config import build_from_options, merge_config
from gnn_jepa.geometry import cylindrical
from gnn_jepa.masks import DESCRIPTOR_COLUMNS, RegionMasker, assign_cells, tile_regions
from gnn_jepa.models.guards import GuardedModule, batch_events, check_loss
from gnn_jepa.models.schedules import OptimConfig, adamw_warmup_cosine, cosine_ramp
from gnn_jepa.nn.encoder import EncoderConfig
from gnn_jepa.nn.losses import AntiCollapse
from gnn_jepa.nn.monitors import ap_at_k, edge_probe_auc, embedding_std, rankme
from gnn_jepa.nn.predictor import PredictorConfig, position_features


#: Reference predictors the JEPA loss is compared with (see :func:`reference_losses`).
REFERENCE_PREDICTORS = ("zero", "mean", "occupancy_oracle")


def reference_losses(target: torch.Tensor, occupied: torch.Tensor, beta: float) -> dict:
    """Smooth-L1 losses of trivial predictors of the scored cells' targets.

    * ``zero``: every cell predicted as the "empty" target 0;
    * ``mean``: every cell predicted as the mean target of the batch (a predictor that
      learned nothing about where it is);
    * ``occupancy_oracle``: told which cells hold hits, 0 for empty cells and the mean
      occupied-cell target elsewhere. A JEPA loss that does not go well below it means the
      predictor has learned little beyond where hits are.

    Args:
        target: [C, D] targets of the scored cells. occupied: [C] bool. beta: smooth-L1 beta.
    """
    mean = target.mean(0, keepdim=True).expand_as(target)
    occ_mean = target[occupied].mean(0, keepdim=True) if occupied.any() else target.new_zeros(1, target.shape[1])
    oracle = torch.where(occupied[:, None], occ_mean.expand_as(target), torch.zeros_like(target))
    return {"zero": F.smooth_l1_loss(torch.zeros_like(target), target, beta=beta),
            "mean": F.smooth_l1_loss(mean, target, beta=beta),
            "occupancy_oracle": F.smooth_l1_loss(oracle, target, beta=beta)}


class EMAPretraining(GuardedModule, pl.LightningModule):
    """What the JEPA pretraining modules share: an EMA target copy of the trained modules
    (:meth:`ema_pairs`), the mask and projection generators seeded by the step, the
    momentum schedule, the training step and the guards. Subclasses set ``self.masker`` and
    ``self.optim`` and define :meth:`jepa_forward` and :meth:`ema_pairs`."""

    def ema_pairs(self) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
        """``(trained, EMA copy)`` module pairs."""
        raise NotImplementedError

    def total_steps(self) -> int:
        if self.optim.total_steps:
            return int(self.optim.total_steps)
        try:
            return int(self.trainer.estimated_stepping_batches)
        except Exception:
            return 1000

    def momentum(self, step: Optional[int] = None) -> float:
        start, end = self.hparams.ema_momentum
        return cosine_ramp(self.global_step if step is None else step, self.total_steps(), start, end)

    def projection_generator(self, device: torch.device) -> torch.Generator:
        """SIGReg's random directions at the current step: a generator seeded by
        ``(mask_seed, global_step)`` on ``device``, never the global RNG, so a resumed run
        draws the directions the uninterrupted one drew."""
        seed = self.hparams.mask_seed * 1_000_003 + int(self.global_step) + (1 << 40)
        return torch.Generator(device=device).manual_seed(seed)

    def mask_generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.hparams.mask_seed * 1_000_003 + int(step))

    def labelled_probe_events(self, events: list, probes: str) -> list:
        """The events that carry truth (the probes need it); events of hits only (e.g.
        ColliderML hits shards without particles) are left out, and said so once."""
        labelled = [d for d in events if (bool(d.has_truth.all()) if "has_truth" in d
                                          else bool((d.particle_id != 0).any()))]
        if len(labelled) < len(events) and not self._probe_note_done:
            self._probe_note_done = True
            rank_zero_info(f"probes: {len(events) - len(labelled)} of {len(events)} validation "
                           f"events carry no truth (every hit unlabelled) and are left out of the "
                           f"truth probes ({probes})"
                           + ("; none is left, so no probe is logged" if not labelled else ""))
        return labelled

    def training_step(self, batch, batch_idx):
        masks = self.masker(batch, self.mask_generator(self.global_step))
        out = self.jepa_forward(batch, masks)
        self._batch_events = batch_events(batch)
        check_loss(out["loss"], step=self.global_step, events=self._batch_events)
        bs = int(batch.num_graphs)
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=bs)
        self.log("train/jepa_loss", out["jepa_loss"], batch_size=bs)
        self.log("train/anti_collapse", out["anti_collapse"], batch_size=bs)
        if "displaced_loss" in out:
            self.log("train/displaced_loss", out["displaced_loss"], batch_size=bs)
        self.log("train/ema_momentum", self.momentum(), batch_size=bs)
        self.log("train/skipped_events", float(masks.num_skipped), batch_size=bs, reduce_fx="sum")
        return out["loss"]

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        # EMA right after the optimizer step, before any callback (a step checkpoint must
        # hold this step's EMA) and once per optimizer step (gradient accumulation).
        self.ema_update(self.global_step)

    @torch.no_grad()
    def ema_update(self, step: int) -> None:
        """target <- m * target + (1 - m) * context, with m = momentum(step), for every
        pair of :meth:`ema_pairs`."""
        m = self.momentum(step)
        tgt = [p for _, t in self.ema_pairs() for p in t.parameters()]
        src = [p.detach() for c, _ in self.ema_pairs() for p in c.parameters()]
        torch._foreach_mul_(tgt, m)
        torch._foreach_add_(tgt, src, alpha=1.0 - m)


class JEPAPretraining(EMAPretraining):
    """Self-supervised JEPA pretraining of a graph-transformer hit encoder.

    Args:
        encoder: the context encoder (:class:`~gnn_jepa.nn.encoder.EncoderConfig`); the
            EMA target encoder is its copy.
        predictor: the predictor (:class:`~gnn_jepa.nn.predictor.PredictorConfig`).
        masker: keyword arguments of :class:`~gnn_jepa.masks.RegionMasker`.
        cells: ``(n_phi, n_eta, n_r)``, the grid of cells tiling each target region
            (``(1, 1, 1)`` is the original Particle-JEPA's one embedding per region).
        target_scope: ``"regions"`` (target encoder sees only the target regions' subgraphs) or
            ``"full"`` (the whole event graph, I-JEPA style).
        score_empty_cells: score all cells, empty ones against a zero target (else occupied
            cells only).
        loss_beta: smooth L1 beta.
        anti_collapse, anti_collapse_weight: ``"vicreg"``, ``"sigreg"`` or ``"none"``, on the
            context embeddings (:class:`~gnn_jepa.nn.losses.AntiCollapse`).
        ema_momentum: (start, end) of the cosine EMA momentum schedule.
        optim: AdamW learning rates (``head_lr`` for the predictor), weight decay, warmup +
            cosine schedule (:class:`~gnn_jepa.models.schedules.OptimConfig`).
        mask_seed: seed of the mask stream.
        probe_events: validation events embedded for the frozen-encoder probes.
    """

    def __init__(self, encoder: EncoderConfig = EncoderConfig(),
                 predictor: PredictorConfig = PredictorConfig(), masker: Optional[dict[str, Any]] = None,
                 cells: tuple[int, int, int] = (4, 4, 2), target_scope: str = "regions",
                 score_empty_cells: bool = True, loss_beta: float = 1.0,
                 anti_collapse: str = "vicreg", anti_collapse_weight: float = 1.0,
                 ema_momentum: tuple[float, float] = (0.996, 1.0), optim: OptimConfig = OptimConfig(),
                 mask_seed: int = 0, probe_events: int = 3):
        super().__init__()
        if target_scope not in ("regions", "full"):
            raise ValueError(f"target_scope must be 'regions' or 'full', got {target_scope!r}")
        cells = tuple(int(c) for c in cells)
        if len(cells) != 3 or min(cells) < 1:
            raise ValueError(f"cells must be three counts >= 1 (n_phi, n_eta, n_r), got {cells}")
        self.encoder_config = EncoderConfig.coerce(encoder)
        self.predictor_config = merge_config(predictor, PredictorConfig(), "predictor")
        self.optim = merge_config(optim, OptimConfig(), "optim")
        self.cells = cells
        self.save_hyperparameters()
        # plain dicts in the checkpoint (readable with weights_only=True, comparable with YAML)
        self.hparams.update(encoder=self.encoder_config.as_dict(), predictor=asdict(self.predictor_config),
                            optim=asdict(self.optim), cells=list(cells))
        self.context_encoder = self.encoder_config.build()
        self.target_encoder = copy.deepcopy(self.context_encoder)
        for p in self.target_encoder.parameters():
            p.requires_grad_(False)
        self.masker = build_from_options(RegionMasker, masker, "model.masker", seed=mask_seed)
        self.predictor = self.predictor_config.build(self.encoder_config.d_embedding,
                                                     d_descriptor=len(DESCRIPTOR_COLUMNS))
        self.anti_collapse = AntiCollapse(anti_collapse, weight=anti_collapse_weight)
        self._probe_cache: list = []
        self._probe_note_done = False

    # ------------------------------------------------------------------ the JEPA step
    def ema_pairs(self) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
        return [(self.context_encoder, self.target_encoder)]

    def jepa_forward(self, batch, masks) -> dict:
        hp = self.hparams
        n = batch.num_nodes
        r, phi, _, eta = cylindrical(batch.pos)
        bvec = batch.batch if getattr(batch, "batch", None) is not None else \
            torch.zeros(n, dtype=torch.long, device=batch.pos.device)
        edge_attr = getattr(batch, "edge_attr", None)

        # context encoder on the context subgraph
        ctx = masks.context
        ctx_ei, ctx_ea = subgraph(ctx, batch.edge_index, edge_attr, relabel_nodes=True, num_nodes=n)
        z_ctx = self.context_encoder(batch.x[ctx], ctx_ei, ctx_ea, batch=bvec[ctx])

        # target encoder (EMA, no grad) -> layer norm -> gather into cells
        tr = masks.target_region
        with torch.no_grad():
            if hp.target_scope == "full":
                t = self.target_encoder(batch.x, batch.edge_index, edge_attr, batch=bvec)
            else:
                src, dst = batch.edge_index
                keep = (tr[src] >= 0) & (tr[src] == tr[dst])
                t = torch.zeros(n, self.encoder_config.d_embedding, device=batch.pos.device)
                tmask = tr >= 0
                ei, ea = subgraph(tmask, batch.edge_index[:, keep],
                                  None if edge_attr is None else edge_attr[keep],
                                  relabel_nodes=True, num_nodes=n)
                if tmask.any():
                    t[tmask] = self.target_encoder(batch.x[tmask], ei, ea, batch=bvec[tmask]).to(t.dtype)
            t = F.layer_norm(t.float(), (t.shape[-1],))

        n_phi, n_eta, n_r = self.cells
        cells = tile_regions(masks, n_phi=n_phi, n_eta=n_eta, n_r=n_r,
                             r_extent=self.masker.r_extent, eta_extent=self.masker.eta_extent)
        hit_cell = assign_cells(r, phi, eta, tr, masks, n_phi=n_phi, n_eta=n_eta, n_r=n_r,
                                r_extent=self.masker.r_extent, eta_extent=self.masker.eta_extent)
        num_cells = cells.cell_region.numel()
        inside = hit_cell >= 0
        target = scatter(t[inside], hit_cell[inside], dim=0, dim_size=num_cells, reduce="mean")
        count = scatter(torch.ones_like(hit_cell[inside], dtype=torch.float), hit_cell[inside],
                        dim=0, dim_size=num_cells, reduce="sum")
        c_r, c_phi, c_eta = cells.centre.unbind(-1)
        q_desc = masks.region_descriptor[cells.cell_region]
        pred = self.predictor(z_ctx, position_features(r[ctx], phi[ctx], eta[ctx]), bvec[ctx], ctx_ei,
                              position_features(c_r, c_phi, c_eta), q_desc, cells.cell_batch,
                              cells.cell_region)
        scored = torch.ones_like(count, dtype=torch.bool) if hp.score_empty_cells else count > 0
        if scored.any():
            per_cell = F.smooth_l1_loss(pred[scored], target[scored], beta=hp.loss_beta,
                                        reduction="none").mean(-1)
            jepa_loss = per_cell.mean()
            with torch.no_grad():
                baselines = reference_losses(target[scored], count[scored] > 0, hp.loss_beta)
        else:  # no valid target in this batch: a zero loss that still touches the graph
            jepa_loss = pred.sum() * 0.0
            baselines = {k: torch.zeros((), device=pred.device) for k in REFERENCE_PREDICTORS}
        if z_ctx.shape[0] > 1:
            ac_loss, ac_parts = self.anti_collapse(z_ctx, generator=self.projection_generator(z_ctx.device))
        else:
            ac_loss, ac_parts = z_ctx.sum() * 0.0, {}
        return {"loss": jepa_loss + ac_loss,
                "jepa_loss": jepa_loss, "anti_collapse": ac_loss,
                "ac_parts": ac_parts, "baseline_loss": baselines["mean"],
                "baseline_losses": baselines, "z_ctx": z_ctx,
                "target": target[count > 0], "num_queries": int(count.numel()),
                "occupied": float((count > 0).float().mean()) if count.numel() else 0.0}

    # ------------------------------------------------------------------ validation & probes
    def validation_step(self, batch, batch_idx):
        # fixed masks per validation batch, so epochs compare like with like
        masks = self.masker(batch, self.mask_generator(10**9 + batch_idx))
        out = self.jepa_forward(batch, masks)
        bs = int(batch.num_graphs)
        log = dict(batch_size=bs, sync_dist=True)
        self.log("val/loss", out["loss"], prog_bar=True, **log)
        self.log("val/jepa_loss", out["jepa_loss"], **log)
        self.log("val/mean_baseline_loss", out["baseline_loss"], **log)
        self.log("val/occupancy_oracle_loss", out["baseline_losses"]["occupancy_oracle"], **log)
        self.log("val/occupied_fraction", out["occupied"], **log)
        with torch.no_grad():
            full = self.target_encoder(batch.x, batch.edge_index, getattr(batch, "edge_attr", None),
                                       batch=batch.batch)
            full = F.layer_norm(full, (full.shape[-1],))
            std = embedding_std(full)
            self.log("val/emb_std_mean", std.mean(), **log)
            self.log("val/emb_std_min", std.min(), **log)
            self.log("val/rankme", float(rankme(full)), **log)
            ctx_std = embedding_std(out["z_ctx"]) if out["z_ctx"].shape[0] > 1 else torch.zeros(1)
            self.log("val/context_std_mean", ctx_std.mean(), **log)
            if len(self._probe_cache) < self.hparams.probe_events:
                for data in batch.to_data_list():
                    if len(self._probe_cache) < self.hparams.probe_events:
                        self._probe_cache.append(data.cpu())

    def _random_encoder(self):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(12345)
            enc = self.encoder_config.build()
        return enc.eval()

    @torch.no_grad()
    def _embed(self, encoder, data) -> Tensor:
        encoder = encoder.to(self.device)
        d = data.to(self.device)
        return encoder(d.x, d.edge_index, getattr(d, "edge_attr", None)).float().cpu()

    def on_validation_epoch_end(self) -> None:
        events = self._probe_cache
        self._probe_cache = []
        if not events or self.trainer.sanity_checking:
            return
        events = self.labelled_probe_events(events, "probe/ap_at_k_*, probe/edge_auc_*")
        if not events:
            return
        for name, enc in (("pretrained", self.target_encoder), ("random", self._random_encoder())):
            embs = [self._embed(enc, d) for d in events]
            aps = [ap_at_k(e, d.particle_id, d.pt, max_queries=2000) for e, d in zip(embs, events)]
            aps = [a for a in aps if not math.isnan(a)]  # NaN: no pT > 1 GeV particle in the event
            if aps:
                self.log(f"probe/ap_at_k_{name}", float(sum(aps) / len(aps)), sync_dist=True)
            if len(events) >= 2 and hasattr(events[0], "y"):
                test_e = torch.cat([e for e in embs[1:]])
                offs = torch.cumsum(torch.tensor([0] + [d.num_nodes for d in events[1:-1]]), 0)
                test_ei = torch.cat([d.edge_index + o for d, o in zip(events[1:], offs)], 1)
                test_y = torch.cat([d.y for d in events[1:]])
                auc = edge_probe_auc(embs[0], events[0].edge_index, events[0].y,
                                     test_e, test_ei, test_y, seed=0)
                self.log(f"probe/edge_auc_{name}", float(auc), sync_dist=True)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        o = self.optim
        groups = [
            {"params": list(self.context_encoder.parameters()), "lr": o.encoder_lr},
            {"params": list(self.predictor.parameters()) + list(self.anti_collapse.parameters()),
             "lr": o.head_lr},
        ]
        return adamw_warmup_cosine(groups, o, self.total_steps())
