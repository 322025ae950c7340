"""JEPA pretraining as a LightningModule.

One step (all K targets of every event in one pass):

1. the :class:`~gnn_jepa.masks.RegionMasker` picks a context region and K target regions
   per event, from a generator seeded by the global step (a resumed run draws the same masks);
2. the context encoder embeds the context subgraph (edges with both ends in the context);
3. the EMA target encoder (no grad) embeds the full event or only the target regions'
   subgraphs (``target_scope``); its outputs are layer-normed and averaged over the cells of a
   fixed grid tiling each target region (``query="cell"``), or kept per hit (``query="hit"``);
4. the predictor maps context embeddings + one query per cell to predicted cell embeddings;
5. loss = smooth L1(prediction, target) over occupied cells (or all cells, the empty ones
   aiming at a zero vector) + an anti-collapse term on the context embeddings.
"""
from __future__ import annotations

import copy
import math
from typing import Optional

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter, subgraph

from gnn_jepa.geometry import cylindrical
from gnn_jepa.masks import DESCRIPTOR_COLUMNS, RegionMasker, assign_cells, tile_regions
from gnn_jepa.models.schedules import cosine_ramp, warmup_cosine
from gnn_jepa.nn.encoder import GraphTransformerEncoder
from gnn_jepa.nn.losses import AntiCollapse
from gnn_jepa.nn.monitors import ap_at_k, edge_probe_auc, embedding_std, rankme
from gnn_jepa.nn.predictor import CellPredictor, position_features

ENCODER_ARGS = ("d_input", "d_model", "d_embedding", "n_layers", "heads", "dropout", "d_edge", "attention")


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


class JEPAPretraining(pl.LightningModule):
    """Self-supervised JEPA pretraining of a graph-transformer hit encoder.

    Args:
        d_input, d_model, d_embedding, n_layers, heads, dropout, d_edge, attention: the
            encoder (:class:`~gnn_jepa.nn.encoder.GraphTransformerEncoder`).
        d_predictor, predictor_layers, predictor_heads, predictor_knn, predictor_knn_r_scale,
            predictor_conv: the predictor (:class:`~gnn_jepa.nn.predictor.CellPredictor`;
            ``predictor_conv`` is its ``conv``).
        masker: keyword arguments of :class:`~gnn_jepa.masks.RegionMasker`.
        cell_phi, cell_eta, cell_r: the grid of cells tiling each target region (1, 1, 1 is the
            original Particle-JEPA's one embedding per region).
        query: ``"cell"`` (default, queries know only cell centres) or ``"hit"`` (one query per
            target hit carrying the hit's own coordinates; a comparison variant).
        query_pairs: link the queries of one region in the predictor. Default (None): for cell
            queries only; hit queries linked to each other would each see where the region's
            other masked hits are.
        target_scope: ``"regions"`` (target encoder sees only the target regions' subgraphs) or
            ``"full"`` (the whole event graph, I-JEPA style).
        score_empty_cells: score all cells, empty ones against a zero target.
        loss_beta: smooth L1 beta.
        occupancy_weight: > 0 adds an output per cell query that predicts ``log(1 + hits in the
            cell)``, trained with smooth L1 at this weight (cell queries only). Per-hit
            layer-normed targets make occupancy a small part of the JEPA loss (see
            :func:`reference_losses`); this term makes "where do the tracks go" explicit.
        anti_collapse, anti_collapse_weight: ``"vicreg"``, ``"sigreg"`` or ``"none"``.
        anti_collapse_expander: width of an expander MLP (Linear -> GELU -> Linear) that maps the
            context embeddings before the anti-collapse term, as VICReg applies its variance and
            covariance terms to an expander's output, not to the representation. 0 (default):
            the term acts on the context embeddings themselves. The expander is trained with the
            predictor and is not part of the encoder that fine-tuning loads.
        ema_momentum: (start, end) of the cosine EMA momentum schedule.
        encoder_lr, predictor_lr, weight_decay, warmup_steps, min_lr_ratio: AdamW and its
            per-step warmup + cosine schedule over ``total_steps`` (default: the trainer's
            estimated stepping batches).
        mask_seed: seed of the mask stream.
        probe_events: validation events embedded for the frozen-encoder probes.
    """

    def __init__(self, d_input: int = 4, d_model: int = 64, d_embedding: int = 32, n_layers: int = 3,
                 heads: int = 4, dropout: float = 0.0, d_edge: int = 5, attention: str = "local",
                 d_predictor: int = 48, predictor_layers: int = 3, predictor_heads: int = 4,
                 predictor_knn: int = 16, predictor_knn_r_scale: float = 1.0,
                 predictor_conv: str = "transformer", masker: Optional[dict] = None, cell_phi: int = 4,
                 cell_eta: int = 4, cell_r: int = 2, query: str = "cell", query_pairs: Optional[bool] = None,
                 target_scope: str = "regions",
                 score_empty_cells: bool = True, loss_beta: float = 1.0,
                 occupancy_weight: float = 0.0, anti_collapse: str = "vicreg",
                 anti_collapse_weight: float = 1.0, anti_collapse_expander: int = 0,
                 ema_momentum: tuple[float, float] = (0.996, 1.0),
                 encoder_lr: float = 1e-3, predictor_lr: float = 1e-3, weight_decay: float = 0.05,
                 warmup_steps: int = 20, total_steps: Optional[int] = None, min_lr_ratio: float = 0.01,
                 mask_seed: int = 0, probe_events: int = 3):
        super().__init__()
        if query not in ("cell", "hit"):
            raise ValueError(f"query must be 'cell' or 'hit', got {query!r}")
        if target_scope not in ("regions", "full"):
            raise ValueError(f"target_scope must be 'regions' or 'full', got {target_scope!r}")
        if occupancy_weight < 0 or (occupancy_weight > 0 and query != "cell"):
            raise ValueError(f"occupancy_weight={occupancy_weight}: must be >= 0, and > 0 only "
                             "with query='cell' (a hit query's cell always holds one hit)")
        self.save_hyperparameters()
        enc = self.encoder_config()
        self.context_encoder = GraphTransformerEncoder(**enc)
        self.target_encoder = copy.deepcopy(self.context_encoder)
        for p in self.target_encoder.parameters():
            p.requires_grad_(False)
        self.masker = RegionMasker(**{**(masker or {}), "seed": mask_seed})
        self.predictor = CellPredictor(d_embedding, d_predictor, predictor_layers, predictor_heads,
                                       d_descriptor=len(DESCRIPTOR_COLUMNS), knn=predictor_knn,
                                       knn_r_scale=predictor_knn_r_scale,
                                       extra_outputs=1 if occupancy_weight > 0 else 0,
                                       query_pairs=(query == "cell") if query_pairs is None else query_pairs,
                                       conv=predictor_conv)
        self.anti_collapse = AntiCollapse(anti_collapse, weight=anti_collapse_weight)
        if anti_collapse_expander < 0:
            raise ValueError(f"anti_collapse_expander must be >= 0, got {anti_collapse_expander}")
        self.expander = nn.Sequential(
            nn.Linear(d_embedding, anti_collapse_expander), nn.GELU(),
            nn.Linear(anti_collapse_expander, anti_collapse_expander),
        ) if anti_collapse_expander > 0 else nn.Identity()
        self._probe_cache: list = []

    # ------------------------------------------------------------------ set-up helpers
    def encoder_config(self) -> dict:
        return {k: self.hparams[k] for k in ENCODER_ARGS}

    def total_steps(self) -> int:
        if self.hparams.total_steps:
            return int(self.hparams.total_steps)
        try:
            return int(self.trainer.estimated_stepping_batches)
        except Exception:
            return 1000

    def momentum(self, step: Optional[int] = None) -> float:
        start, end = self.hparams.ema_momentum
        return cosine_ramp(self.global_step if step is None else step, self.total_steps(), start, end)

    # ------------------------------------------------------------------ the JEPA step
    def mask_generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.hparams.mask_seed * 1_000_003 + int(step))

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
                t = torch.zeros(n, hp.d_embedding, device=batch.pos.device)
                tmask = tr >= 0
                ei, ea = subgraph(tmask, batch.edge_index[:, keep],
                                  None if edge_attr is None else edge_attr[keep],
                                  relabel_nodes=True, num_nodes=n)
                if tmask.any():
                    t[tmask] = self.target_encoder(batch.x[tmask], ei, ea, batch=bvec[tmask]).to(t.dtype)
            t = F.layer_norm(t.float(), (t.shape[-1],))

        if hp.query == "cell":
            cells = tile_regions(masks, n_phi=hp.cell_phi, n_eta=hp.cell_eta, n_r=hp.cell_r,
                                 r_extent=self.masker.r_extent, eta_extent=self.masker.eta_extent)
            hit_cell = assign_cells(r, phi, eta, tr, masks, n_phi=hp.cell_phi, n_eta=hp.cell_eta,
                                    n_r=hp.cell_r, r_extent=self.masker.r_extent,
                                    eta_extent=self.masker.eta_extent)
            num_cells = cells.cell_region.numel()
            inside = hit_cell >= 0
            target = scatter(t[inside], hit_cell[inside], dim=0, dim_size=num_cells, reduce="mean")
            count = scatter(torch.ones_like(hit_cell[inside], dtype=torch.float), hit_cell[inside],
                            dim=0, dim_size=num_cells, reduce="sum")
            c_r, c_phi, c_eta = cells.centre.unbind(-1)
            q_pos = position_features(c_r, c_phi, c_eta)
            q_region, q_batch = cells.cell_region, cells.cell_batch
        else:
            tidx = (tr >= 0).nonzero().squeeze(1)
            target, count = t[tidx], torch.ones(tidx.numel(), device=t.device)
            q_pos = position_features(r[tidx], phi[tidx], eta[tidx])
            q_region, q_batch = tr[tidx], bvec[tidx]
        q_desc = masks.region_descriptor[q_region]

        pred = self.predictor(z_ctx, position_features(r[ctx], phi[ctx], eta[ctx]), bvec[ctx], ctx_ei,
                              q_pos, q_desc, q_batch, q_region)
        occupancy_loss = torch.zeros((), device=pred.device)
        if hp.occupancy_weight > 0:
            pred, occ_pred = pred[:, :hp.d_embedding], pred[:, hp.d_embedding]
            occupancy_loss = F.smooth_l1_loss(occ_pred, torch.log1p(count), beta=hp.loss_beta)
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
            ac_loss, ac_parts = self.anti_collapse(self.expander(z_ctx))
        else:
            ac_loss, ac_parts = z_ctx.sum() * 0.0, {}
        return {"loss": jepa_loss + ac_loss + hp.occupancy_weight * occupancy_loss,
                "jepa_loss": jepa_loss, "anti_collapse": ac_loss, "occupancy_loss": occupancy_loss,
                "ac_parts": ac_parts, "baseline_loss": baselines["mean"],
                "baseline_losses": baselines, "z_ctx": z_ctx,
                "target": target[count > 0], "num_queries": int(count.numel()),
                "occupied": float((count > 0).float().mean()) if count.numel() else 0.0}

    def training_step(self, batch, batch_idx):
        masks = self.masker(batch, self.mask_generator(self.global_step))
        out = self.jepa_forward(batch, masks)
        bs = int(batch.num_graphs)
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=bs)
        self.log("train/jepa_loss", out["jepa_loss"], batch_size=bs)
        self.log("train/anti_collapse", out["anti_collapse"], batch_size=bs)
        if self.hparams.occupancy_weight > 0:
            self.log("train/occupancy_loss", out["occupancy_loss"], batch_size=bs)
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
        """target <- m * target + (1 - m) * context, with m = momentum(step)."""
        m = self.momentum(step)
        tgt = [p for p in self.target_encoder.parameters()]
        src = [p.detach() for p in self.context_encoder.parameters()]
        torch._foreach_mul_(tgt, m)
        torch._foreach_add_(tgt, src, alpha=1.0 - m)

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
            enc = GraphTransformerEncoder(**self.encoder_config())
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
        hp = self.hparams
        groups = [
            {"params": list(self.context_encoder.parameters()), "lr": hp.encoder_lr},
            {"params": list(self.predictor.parameters()) + list(self.anti_collapse.parameters())
             + list(self.expander.parameters()), "lr": hp.predictor_lr},
        ]
        opt = torch.optim.AdamW(groups, weight_decay=hp.weight_decay)
        total = self.total_steps()
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, hp.warmup_steps, total, hp.min_lr_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
