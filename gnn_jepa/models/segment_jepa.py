"""Segment-level JEPA: pretraining the part of the tracker that follows tracks.

Track finding decides, segment by segment, which hit pairs continue each other; the
segment-pair trunk (encoder -> :class:`~gnn_jepa.nn.segment_pairs.SegmentPairEdgeHead` up to
its output layer) is where that knowledge lives. This module pretrains that whole trunk
without labels. One step (all target regions of every event in one pass):

1. the :class:`~gnn_jepa.masks.RegionMasker` picks a context region and K target regions per
   event (generator seeded by the global step);
2. the context trunk (encoder + segment-pair rounds) runs on the context subgraph and gives
   every context segment a state;
3. the EMA target trunk (no grad) runs on the whole event; its states of the *target
   segments* (both hits in one target region) are layer-normed: the targets;
4. the :class:`~gnn_jepa.nn.segment_predictor.SegmentPredictor`, told each target segment's
   two hit positions and its region, nothing else of the target hits, predicts its state from
   the context segments near it;
5. loss = smooth L1(prediction, target) averaged over target segments + an anti-collapse
   term on the context segments' states.

A target segment's state depends on the track it belongs to (the trunk saw its continuations
in the whole event), so the prediction needs the context's tracks followed up to it. The EMA
trunk (encoder and segment-pair rounds) is what fine-tuning loads
(:func:`~gnn_jepa.models.checkpoints.load_pretrained_head`): only the edge head's output
layer starts from scratch.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter, subgraph

from gnn_jepa.config import build_from_options, merge_config
from gnn_jepa.graph.edges import edge_features, segment_labels
from gnn_jepa.masks import DESCRIPTOR_COLUMNS, RegionMasker
from gnn_jepa.models.jepa import EMAPretraining
from gnn_jepa.models.schedules import OptimConfig, adamw_warmup_cosine
from gnn_jepa.nn.edge_head import HeadConfig
from gnn_jepa.nn.encoder import EncoderConfig
from gnn_jepa.nn.losses import AntiCollapse
from gnn_jepa.nn.monitors import embedding_std, probe_scores, rankme, roc_auc
from gnn_jepa.nn.segment_predictor import SegmentPredictorConfig
from gnn_jepa.tracking.building import hit_order_key
from gnn_jepa.tracking.metrics import top1_next_hit

#: The trunk this module pretrains: the shipped track-finding head.
SEGMENT_HEAD = HeadConfig(kind="segment_pairs", hidden=64, rounds=4, pairs_per_segment=4)


def without_output(head: nn.Module) -> nn.Module:
    """``head`` with its output layer removed (``out``, ``out_norm``): the trunk that
    pretraining trains; parameters that get no gradient would break DDP."""
    del head.out, head.out_norm
    return head


#: What the predictor predicts (``SegmentJEPA(targets=...)``).
TARGETS = ("segments", "hits", "boundary")


def hit_states(state: Tensor, segments: Tensor, num_nodes: int) -> Tensor:
    """[N, 2 H] per-hit states from segment states [S, H]: the mean state of the segments
    into each hit (it is their outer hit), then of those out of it (0 where none)."""
    into = scatter(state, segments[1], dim=0, dim_size=num_nodes, reduce="mean")
    out_of = scatter(state, segments[0], dim=0, dim_size=num_nodes, reduce="mean")
    return torch.cat([into, out_of], 1)


def displace_hits(pos: Tensor, x: Tensor, fraction: float, mm: tuple[float, float],
                  generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Move ``fraction`` of the hits along phi by ``mm`` (uniform in the range, either sign).

    Returns the new positions, the new hit features (the one column of ``x`` that holds
    phi / pi is updated; the others, r, z and eta, do not change under a rotation) and the
    [N] bool mask of the moved hits.

    Raises:
        ValueError: no column of ``x`` holds phi / pi (hit features without phi).
    """
    n = pos.shape[0]
    r = torch.hypot(pos[:, 0], pos[:, 1]).clamp_min(1e-3)
    phi = torch.atan2(pos[:, 1], pos[:, 0])
    col = [j for j in range(x.shape[1]) if torch.allclose(x[:, j].float(), (phi / math.pi).float(), atol=1e-4)]
    if not col:
        raise ValueError("displaced-hit task: no hit feature column holds phi / pi (data.features "
                         "must include 'phi')")
    u = torch.rand(n, generator=generator).to(pos.device)
    moved = u < fraction
    size = torch.rand(n, generator=generator).to(pos.device) * (mm[1] - mm[0]) + mm[0]
    sign = torch.where(torch.rand(n, generator=generator).to(pos.device) < 0.5, -1.0, 1.0)
    new_phi = torch.where(moved, phi + sign * size / r, phi)
    new_phi = torch.atan2(torch.sin(new_phi), torch.cos(new_phi))
    new_pos = torch.stack([r * torch.cos(new_phi), r * torch.sin(new_phi), pos[:, 2]], 1).to(pos.dtype)
    new_x = x.clone()
    new_x[:, col[0]] = (new_phi / math.pi).to(x.dtype)
    return torch.where(moved[:, None], new_pos, pos), new_x, moved


def target_segments(segments: Tensor, target_region: Tensor) -> Tensor:
    """Indices of the segments ([2, S]) with both hits in one target region (``target_region``
    [N], -1 outside every target)."""
    ra, rb = target_region[segments[0]], target_region[segments[1]]
    return torch.nonzero((ra >= 0) & (ra == rb)).flatten()


class SegmentJEPA(EMAPretraining):
    """Self-supervised JEPA pretraining of the segment-pair trunk (module doc).

    Args:
        encoder: the hit encoder (:class:`~gnn_jepa.nn.encoder.EncoderConfig`), the trunk's
            first part.
        head: the segment-pair head (:class:`~gnn_jepa.nn.edge_head.HeadConfig`, ``kind:
            segment_pairs``) whose rounds form the trunk's second part; fine-tuning must use
            the same.
        predictor: :class:`~gnn_jepa.nn.segment_predictor.SegmentPredictorConfig`.
        masker: keyword arguments of :class:`~gnn_jepa.masks.RegionMasker`.
        targets: ``"segments"`` (each target segment's state, the predictor told both its
            hits) or ``"hits"`` (each target hit's state: the means of the final states of
            the segments into and out of it, :func:`hit_states`; the predictor told only the
            hit's position, so where its track goes on must come from the context).
        center_targets: subtract from every target the mean target of its region: what all
            segments of a region share (where the region lies, how dense it is) is then no
            longer predicted, only how each segment differs from its neighbours.
        displaced_weight: weight of the displaced-hit task (0: off): before the context
            trunk runs, ``displaced_fraction`` of the context hits are moved along phi by
            ``displacement_mm`` (uniform, either sign; the graph's edges stay), and a linear
            layer on each hit's trunk state (:func:`hit_states`) must tell which moved. A
            moved hit bends the track it lies on, so the trunk must find the smooth chain
            through each hit: the knowledge track finding needs, with labels that come from
            the corruption, not from truth.
        displaced_fraction, displacement_mm: see ``displaced_weight``.
        jepa_weight: weight of the JEPA loss (0 with ``displaced_weight > 0``: the
            displaced-hit task alone, as a reference).
        max_targets: target segments scored per step at most (a seeded random subset when
            there are more): bounds the predictor's cost on large events.
        loss_beta: smooth L1 beta.
        anti_collapse, anti_collapse_weight: ``"vicreg"``, ``"sigreg"`` or ``"none"``, on the
            context segments' states (:class:`~gnn_jepa.nn.losses.AntiCollapse`).
        ema_momentum: (start, end) of the cosine EMA momentum schedule.
        optim: AdamW learning rates (``encoder_lr`` for the encoder, ``head_lr`` for the
            segment-pair rounds and the predictor), weight decay, warmup + cosine.
        mask_seed: seed of the mask stream.
        probe_events: validation events of the frozen probes (the first trains a linear
            probe on segment states, the others test it).
    """

    def __init__(self, encoder: EncoderConfig = EncoderConfig(), head: HeadConfig = SEGMENT_HEAD,
                 predictor: SegmentPredictorConfig = SegmentPredictorConfig(),
                 masker: Optional[dict[str, Any]] = None, targets: str = "segments",
                 center_targets: bool = False, displaced_weight: float = 0.0,
                 displaced_fraction: float = 0.1,
                 displacement_mm: tuple[float, float] = (2.0, 20.0), jepa_weight: float = 1.0,
                 max_targets: int = 4096,
                 loss_beta: float = 1.0,
                 anti_collapse: str = "vicreg", anti_collapse_weight: float = 1.0,
                 ema_momentum: tuple[float, float] = (0.996, 1.0),
                 optim: OptimConfig = OptimConfig(), mask_seed: int = 0, probe_events: int = 4):
        super().__init__()
        self.encoder_config = EncoderConfig.coerce(encoder)
        self.head_config = merge_config(head, SEGMENT_HEAD, "head")
        if self.head_config.kind != "segment_pairs":
            raise ValueError("SegmentJEPA pretrains the segment-pair head's trunk: head.kind "
                             f"must be 'segment_pairs', got {self.head_config.kind!r}")
        if targets not in TARGETS:
            raise ValueError(f"targets must be one of {TARGETS}, got {targets!r}")
        if int(max_targets) < 1:
            raise ValueError(f"max_targets must be >= 1, got {max_targets}")
        self.predictor_config = merge_config(predictor, SegmentPredictorConfig(), "predictor")
        self.optim = merge_config(optim, OptimConfig(), "optim")
        self.save_hyperparameters()
        self.hparams.update(encoder=self.encoder_config.as_dict(), head=asdict(self.head_config),
                            predictor=asdict(self.predictor_config), optim=asdict(self.optim))
        self.context_encoder = self.encoder_config.build()
        self.context_head = without_output(
            self.head_config.build(self.encoder_config.d_embedding, self.encoder_config.d_edge))
        self.target_encoder = copy.deepcopy(self.context_encoder)
        self.target_head = copy.deepcopy(self.context_head)
        for p in list(self.target_encoder.parameters()) + list(self.target_head.parameters()):
            p.requires_grad_(False)
        self.masker = build_from_options(RegionMasker, masker, "model.masker", seed=mask_seed)
        hidden = self.head_config.hidden
        self.predictor = self.predictor_config.build(
            hidden, len(DESCRIPTOR_COLUMNS), d_out=2 * hidden if targets == "hits" else hidden)
        self.anti_collapse = AntiCollapse(anti_collapse, weight=anti_collapse_weight)
        if jepa_weight < 0 or displaced_weight < 0 or not 0 < displaced_fraction < 1 or not 0 <= displacement_mm[0] <= displacement_mm[1]:
            raise ValueError("need displaced_weight >= 0, 0 < displaced_fraction < 1 and "
                             f"0 <= displacement_mm[0] <= [1], got {displaced_weight}, "
                             f"{displaced_fraction}, {displacement_mm}")
        self.displaced_out = nn.Linear(2 * hidden, 1) if displaced_weight > 0 else None
        self._probe_cache: list = []
        self._probe_note_done = False

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.context_encoder, self.target_encoder), (self.context_head, self.target_head)]

    @staticmethod
    def trunk(encoder: nn.Module, head: nn.Module, x: Tensor, edge_index: Tensor,
              edge_attr: Optional[Tensor], pos: Tensor, batch: Optional[Tensor] = None
              ) -> tuple[Tensor, Tensor, Tensor]:
        """Segment states, segments and edge -> segment map of one (batched) graph."""
        h = encoder(x, edge_index, edge_attr, batch=batch)
        return head.segment_states(h, edge_index, pos=pos)

    # ------------------------------------------------------------------ the JEPA step
    def jepa_forward(self, batch, masks, seed_step: Optional[int] = None) -> dict:
        """The step's losses. ``seed_step`` seeds the displacements and the target subset
        (default: the global step; validation passes the fixed seed of its masks)."""
        hp = self.hparams
        seed_step = self.global_step if seed_step is None else seed_step
        n = batch.num_nodes
        pos = batch.pos
        bvec = batch.batch if getattr(batch, "batch", None) is not None else \
            torch.zeros(n, dtype=torch.long, device=pos.device)
        edge_attr = getattr(batch, "edge_attr", None)

        # context trunk on the context subgraph
        ctx = masks.context
        ctx_ei, ctx_ea = subgraph(ctx, batch.edge_index, edge_attr, relabel_nodes=True, num_nodes=n)
        ctx_pos, ctx_x = pos[ctx], batch.x[ctx]
        moved = None
        if self.displaced_out is not None and ctx_pos.shape[0]:
            ctx_pos, ctx_x, moved = displace_hits(
                ctx_pos, ctx_x, hp.displaced_fraction, hp.displacement_mm,
                self.mask_generator(seed_step + (1 << 42)))
            if ctx_ea is not None:  # the edges' geometry follows the moved hits (else it tells them)
                ctx_ea = edge_features(ctx_pos, ctx_ei).to(ctx_ea.dtype)
        c_state, c_seg, _ = self.trunk(self.context_encoder, self.context_head, ctx_x,
                                       ctx_ei, ctx_ea, ctx_pos, bvec[ctx])

        # EMA trunk on the whole event -> layer norm -> the target segments' (or hits') states
        with torch.no_grad():
            t_state, t_seg, _ = self.trunk(self.target_encoder, self.target_head, batch.x,
                                           batch.edge_index, edge_attr, pos, bvec)
            if hp.targets == "segments":
                chosen = target_segments(t_seg, masks.target_region)
            elif hp.targets == "boundary":
                ctx_idx = torch.nonzero(ctx).flatten()
                g_seg = ctx_idx[c_seg]  # context segments in the event's hit indices
                # the target region next to each hit (-1: none; either edge direction)
                near = torch.full((n,), -1, dtype=torch.long, device=pos.device)
                src, dst = batch.edge_index
                tr = masks.target_region
                near[src[tr[dst] >= 0]] = tr[dst[tr[dst] >= 0]]
                near[dst[tr[src] >= 0]] = tr[src[tr[src] >= 0]]
                chosen = torch.nonzero((near[g_seg[0]] >= 0) | (near[g_seg[1]] >= 0)).flatten()
            else:
                t_state = hit_states(t_state.float(), t_seg, n)
                has_segment = torch.zeros(n, dtype=torch.bool, device=pos.device)
                has_segment[t_seg.flatten()] = True
                chosen = torch.nonzero((masks.target_region >= 0) & has_segment).flatten()
            t_state = F.layer_norm(t_state.float(), (t_state.shape[-1],))
            if chosen.numel() > hp.max_targets:
                gen = self.mask_generator(seed_step + (1 << 41))
                chosen = chosen[torch.randperm(chosen.numel(), generator=gen)[:hp.max_targets]
                                .to(chosen.device)]
            if hp.targets == "boundary":
                # every context segment is a segment of the whole event (same hits, same
                # orientation); the event's segments are sorted by (inner, outer) hit
                codes = t_seg[0] * n + t_seg[1]
                wanted = g_seg[0, chosen] * n + g_seg[1, chosen]
                full = torch.searchsorted(codes, wanted).clamp_max(codes.numel() - 1)
                if not torch.equal(codes[full], wanted):
                    raise RuntimeError("boundary targets: a context segment is not a segment of "
                                       "the whole event (its orientation changed?)")
                target = t_state[full]
            else:
                target = t_state[chosen]
        if hp.targets == "boundary":  # the context segment itself is the query
            qa, qb = ctx_pos[c_seg[0, chosen]], ctx_pos[c_seg[1, chosen]]
            # the query's region: the target next to its inner hit, else to its outer hit
            inner_near = near[g_seg[0, chosen]]
            first = inner_near >= 0
            q_hit = torch.where(first, g_seg[0, chosen], g_seg[1, chosen])
            region = torch.where(first, inner_near, near[g_seg[1, chosen]])
        elif hp.targets == "segments":
            qa, qb = pos[t_seg[0, chosen]], pos[t_seg[1, chosen]]
            q_hit = t_seg[0, chosen]
        else:  # a hit query: a segment of length 0 at the hit
            qa = qb = pos[chosen]
            q_hit = chosen
        if hp.targets != "boundary":
            region = masks.target_region[q_hit]
        if hp.center_targets and chosen.numel():
            target = target - scatter(target, region, dim=0, reduce="mean").index_select(0, region)
        if chosen.numel() and c_state.shape[0]:
            pred = self.predictor(c_state, ctx_pos[c_seg[0]], ctx_pos[c_seg[1]], bvec[ctx][c_seg[0]],
                                  qa, qb, bvec[q_hit], masks.region_descriptor[region])
            jepa_loss = F.smooth_l1_loss(pred.float(), target, beta=hp.loss_beta)
            with torch.no_grad():
                mean = target.mean(0, keepdim=True).expand_as(target)
                baseline = F.smooth_l1_loss(mean, target, beta=hp.loss_beta)
        else:  # no target segment or no context segment in this batch
            jepa_loss = c_state.sum() * 0.0 + sum(p.sum() * 0.0 for p in self.predictor.parameters())
            baseline = torch.zeros((), device=pos.device)
        if c_state.shape[0] > 1:
            ac_loss, ac_parts = self.anti_collapse(c_state, generator=self.projection_generator(c_state.device))
        else:
            ac_loss, ac_parts = c_state.sum() * 0.0, {}
        displaced_loss = torch.zeros((), device=pos.device)
        if self.displaced_out is not None and moved is None:  # no context: touch the layer (DDP)
            displaced_loss = sum(p.sum() * 0.0 for p in self.displaced_out.parameters())
        if moved is not None:
            logit = self.displaced_out(hit_states(c_state, c_seg, ctx_pos.shape[0])).squeeze(-1)
            y = moved.float()
            pw = ((y.numel() - y.sum()) / y.sum().clamp_min(1.0)).clamp(1.0, 100.0)
            displaced_loss = F.binary_cross_entropy_with_logits(logit.float(), y, pos_weight=pw)
        return {"loss": hp.jepa_weight * jepa_loss + ac_loss + hp.displaced_weight * displaced_loss,
                "displaced_loss": displaced_loss,
                "jepa_loss": jepa_loss, "anti_collapse": ac_loss,
                "ac_parts": ac_parts, "baseline_loss": baseline, "c_state": c_state,
                "num_targets": int(chosen.numel())}

    # ------------------------------------------------------------------ validation & probes
    def validation_step(self, batch, batch_idx):
        masks = self.masker(batch, self.mask_generator(10**9 + batch_idx))
        out = self.jepa_forward(batch, masks, seed_step=10**9 + batch_idx)
        bs = int(batch.num_graphs)
        log = dict(batch_size=bs, sync_dist=True)
        self.log("val/loss", out["loss"], prog_bar=True, **log)
        self.log("val/jepa_loss", out["jepa_loss"], **log)
        self.log("val/mean_baseline_loss", out["baseline_loss"], **log)
        self.log("val/target_segments", float(out["num_targets"]), **log)
        with torch.no_grad():
            states = F.layer_norm(self.trunk(self.target_encoder, self.target_head, batch.x,
                                             batch.edge_index, getattr(batch, "edge_attr", None),
                                             batch.pos, batch.batch)[0].float(), (self.head_config.hidden,))
            std = embedding_std(states)
            self.log("val/state_std_mean", std.mean(), **log)
            self.log("val/state_std_min", std.min(), **log)
            self.log("val/rankme", float(rankme(states[:20000])), **log)
            if len(self._probe_cache) < self.hparams.probe_events:
                for data in batch.to_data_list():
                    if len(self._probe_cache) < self.hparams.probe_events:
                        self._probe_cache.append(data.cpu())

    def _random_trunk(self) -> tuple[nn.Module, nn.Module]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(12345)
            enc = self.encoder_config.build()
            head = without_output(self.head_config.build(self.encoder_config.d_embedding,
                                                         self.encoder_config.d_edge))
        return enc.to(self.device).eval(), head.to(self.device).eval()

    @torch.no_grad()
    def probe_features(self, encoder: nn.Module, head: nn.Module, data) -> tuple[Tensor, Tensor, Tensor]:
        """Layer-normed segment states of one event, the segments' truth (a true segment:
        consecutive hits of one particle) and each edge's segment."""
        d = data.to(self.device)
        state, segs, edge_segment = self.trunk(encoder, head, d.x, d.edge_index,
                                               getattr(d, "edge_attr", None), d.pos)
        y_edge = segment_labels(d.particle_id, d.hit_order, d.edge_index)
        y = scatter(y_edge, edge_segment, dim=0, dim_size=segs.shape[1], reduce="max")
        return F.layer_norm(state.float(), (state.shape[-1],)).cpu(), y.cpu(), edge_segment.cpu()

    def segment_probe(self, encoder: nn.Module, head: nn.Module, events: list) -> dict:
        """Linear probe of frozen segment states: trained on ``events[0]``'s segments, tested
        on the others' (AUC of true segments, and top-1: the fraction of hits whose
        best-scoring outward segment is the true next hit)."""
        feats = [self.probe_features(encoder, head, d) for d in events]
        x0, y0, _ = feats[0]
        aucs, top1s = [], []
        for (x, y, edge_segment), d in zip(feats[1:], events[1:]):
            s = probe_scores(x0, y0, x, steps=300, lr=1e-2, seed=0, hidden=0, what="segment probe")
            aucs.append(roc_auc(s, y))
            e_score = s[edge_segment].numpy()
            top1s.append(top1_next_hit(e_score, d.edge_index, y[edge_segment].numpy(),
                                       hit_order_key(d.pos).numpy()))
        top1s = [t for t in top1s if not math.isnan(t)]
        return {"auc": sum(aucs) / len(aucs), "top1": sum(top1s) / len(top1s) if top1s else math.nan}

    def on_validation_epoch_end(self) -> None:
        events, self._probe_cache = self._probe_cache, []
        if self.trainer.sanity_checking:
            return
        labelled = self.labelled_probe_events(events, "probe/segment_*")
        if len(labelled) < 2:
            return
        for name, (enc, head) in (("pretrained", (self.target_encoder, self.target_head)),
                                  ("random", self._random_trunk())):
            was = enc.training, head.training
            enc.eval(), head.eval()
            res = self.segment_probe(enc, head, labelled)
            enc.train(was[0]), head.train(was[1])
            self.log(f"probe/segment_auc_{name}", float(res["auc"]), sync_dist=True)
            if math.isfinite(res["top1"]):
                self.log(f"probe/segment_top1_{name}", float(res["top1"]), sync_dist=True)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        o = self.optim
        groups = [
            {"params": list(self.context_encoder.parameters()), "lr": o.encoder_lr},
            {"params": list(self.context_head.parameters()) + list(self.predictor.parameters())
             + list(self.anti_collapse.parameters()), "lr": o.head_lr},
        ]
        return adamw_warmup_cosine(groups, o, self.total_steps())
