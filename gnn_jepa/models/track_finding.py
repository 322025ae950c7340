"""Track finding as a LightningModule: encoder -> edge scores -> tracks -> TrackML metrics.

The encoder is loaded from a JEPA checkpoint (``pretrained``) and fine-tuned (``finetune``),
kept fixed (``frozen``: only the head learns), or trained from a random init (``scratch``).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Optional, Sequence, Union

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F

from gnn_jepa.models.jepa import ENCODER_ARGS
from gnn_jepa.models.schedules import warmup_cosine
from gnn_jepa.graph.edges import edge_labels, segment_labels
from gnn_jepa.nn.edge_head import EDGE_HEADS, EdgeHead, InteractionEdgeHead
from gnn_jepa.nn.encoder import GraphTransformerEncoder
from gnn_jepa.tracking.building import build_tracks
from gnn_jepa.tracking.ceiling import hit_order_key
from gnn_jepa.tracking.metrics import edge_metrics

MODES = ("finetune", "frozen", "scratch")
EDGE_LABELS = ("particle", "segment")


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


def save_pretrained_encoder(path: str | Path, encoder_state: dict, hparams: dict) -> Path:
    """Write an encoder alone in the layout :func:`load_pretrained_encoder` reads: its weights
    as ``target_encoder.*`` and ``hparams`` (at least the encoder's) as the hyperparameters."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {f"target_encoder.{k}": v for k, v in encoder_state.items()},
                "hyper_parameters": dict(hparams)}, p)
    return p


def select_state(state: dict, prefixes: Sequence[str]) -> dict:
    """The entries of a state dict under any of ``prefixes`` (a module name and its children),
    cloned. An unknown prefix is an error that lists the top-level modules."""
    out = {}
    for p in prefixes:
        hit = {k: v.detach().clone() for k, v in state.items() if k == p or k.startswith(p + ".")}
        if not hit:
            top = sorted({k.split(".")[0] for k in state})
            raise ValueError(f"reinit_encoder: no encoder parameter under {p!r}; modules: {top}")
        out.update(hit)
    return out


class TrackFinding(pl.LightningModule):
    """Edge-classification track finding on top of a (pretrained) graph-transformer encoder.

    Args:
        d_input, d_model, d_embedding, n_layers, heads, dropout, d_edge, attention: the encoder;
            must match the pretrained checkpoint's.
        pretrained: path of a JEPA checkpoint (``None`` only with ``mode: scratch``).
        pretrained_encoder: ``"target"`` (EMA, default) or ``"context"`` encoder of the checkpoint.
        reinit_encoder: encoder submodules (state-dict prefixes such as ``"out_proj"`` or
            ``"convs.2"``) that keep this run's fresh initialisation -- the one ``scratch``
            would get with the same seed -- instead of the checkpoint's weights. The layers
            nearest the pretext task's output specialise to it (SimCLR's projection head;
            re-initialising BERT's top layers for few-sample fine-tuning), so the trunk
            alone may transfer better.
        embedding_std: rescale the encoder's output projection once, just before the first
            training step, so that the embeddings of that step's batch have this mean
            per-dimension standard deviation (over hits), :math:`\bar\sigma = \frac1D
            \sum_d \mathrm{std}_n(h_{nd})`. ``"init"``: the value a fresh encoder -- the one
            ``scratch`` starts from with the same seed -- gives on that batch (a no-op in
            ``scratch``). ``None`` (default): no rescaling. The edge head concatenates the hit
            embeddings with the edge features, so the embeddings' scale sets how much the head
            first listens to each; an anti-collapse term (VICReg's variance hinge at 1) leaves a
            pretrained encoder's output about twice as wide as a fresh one's. The factor is
            kept in the buffer ``embedding_rescale`` (NaN until applied), so a resumed run does
            not rescale twice.
        mode: ``finetune``, ``frozen`` or ``scratch``.
        head: ``"mlp"`` (:class:`~gnn_jepa.nn.edge_head.EdgeHead`: each edge judged alone) or
            ``"interaction"`` (:class:`~gnn_jepa.nn.edge_head.InteractionEdgeHead`: edges
            and hits exchange messages for ``head_rounds`` rounds before scoring).
        head_hidden, head_layers, head_rounds: edge head width, MLP depth (``mlp``), rounds
            (``interaction``).
        encoder_lr, head_lr, weight_decay, warmup_steps, total_steps: AdamW + warmup/cosine.
        encoder_frozen_steps: ``finetune`` only: for this many first steps the encoder is
            frozen (no gradient, no update) and only the head trains; then the encoder's
            learning rate warms up and decays over the remaining steps (linear probe, then
            fine-tuning: a head trained first does not send large random gradients into
            pretrained features).
        pos_weight: BCE weight of true edges; ``None`` = #false / #true per batch (imbalance).
        edge_label: what a true edge is, for training and the edge metrics: ``"particle"``
            (both hits from one non-noise particle, ``data.y``) or ``"segment"`` (and
            consecutive along it: :func:`~gnn_jepa.graph.edges.segment_labels`).
        threshold, building, min_hits: track building (edges scoring above ``threshold`` are kept).
        tune_threshold: at every validation, build tracks on the validation events at each
            threshold of ``threshold_grid`` and keep the one with the best mean TrackML score;
            test and predict then use it (saved in the checkpoint as the buffer
            ``tuned_threshold``). Off, or before any validation, ``threshold`` is used.
        threshold_grid: the thresholds tried by ``tune_threshold``.
        pt_min: reconstructable-particle pT cut of the metrics (GeV).
        output_dir: where ``test`` writes metrics JSON and plots, ``predict`` submission CSVs
            (default: the logger's folder).
    """

    def __init__(self, d_input: int = 4, d_model: int = 64, d_embedding: int = 32, n_layers: int = 3,
                 heads: int = 4, dropout: float = 0.0, d_edge: int = 5, attention: str = "local",
                 pretrained: Optional[str] = None, pretrained_encoder: str = "target",
                 reinit_encoder: tuple[str, ...] = (),
                 embedding_std: Optional[Union[float, str]] = None,
                 mode: str = "finetune", head: str = "mlp", head_hidden: int = 64, head_layers: int = 2,
                 head_rounds: int = 3,
                 encoder_lr: float = 5e-4, head_lr: float = 2e-3, weight_decay: float = 0.01,
                 warmup_steps: int = 10, total_steps: Optional[int] = None,
                 encoder_frozen_steps: int = 0,
                 pos_weight: Optional[float] = None, edge_label: str = "particle", threshold: float = 0.5, building: str = "cc",
                 tune_threshold: bool = False,
                 threshold_grid: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95),
                 min_hits: int = 3, pt_min: float = 1.0, output_dir: Optional[str] = None):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if head not in EDGE_HEADS:
            raise ValueError(f"head must be one of {EDGE_HEADS}, got {head!r}")
        if edge_label not in EDGE_LABELS:
            raise ValueError(f"edge_label must be one of {EDGE_LABELS}, got {edge_label!r}")
        if encoder_frozen_steps < 0:
            raise ValueError(f"encoder_frozen_steps must be >= 0, got {encoder_frozen_steps}")
        if mode != "scratch" and not pretrained:
            raise ValueError(f"mode {mode!r} needs --model.pretrained=<JEPA checkpoint>; "
                             "use mode: scratch to train from a random init")
        # output_dir is where *this* run writes, not a model property: keep it out of the
        # checkpoint so that `gnn-jepa test --ckpt_path` honours the one given now.
        self.save_hyperparameters(ignore=["output_dir"])
        self.output_dir = output_dir
        enc = {k: self.hparams[k] for k in ENCODER_ARGS}
        self.encoder = GraphTransformerEncoder(**enc)
        if isinstance(reinit_encoder, str):  # one module name, not its characters
            reinit_encoder = (reinit_encoder,)
        if reinit_encoder and mode == "scratch":
            raise ValueError(f"reinit_encoder={list(reinit_encoder)} needs a pretrained encoder "
                             "(mode finetune or frozen); a scratch encoder is all fresh")
        if embedding_std is not None and embedding_std != "init" and not (
                isinstance(embedding_std, (int, float)) and not isinstance(embedding_std, bool)
                and embedding_std > 0):
            raise ValueError(f"embedding_std must be None, 'init' or a number > 0, got {embedding_std!r}")
        # the fresh init, kept (not as a module: it is no part of the model) to measure its scale
        self._fresh_encoder_state = {k: v.clone() for k, v in self.encoder.state_dict().items()} \
            if embedding_std == "init" and mode != "scratch" else None
        if embedding_std is not None:
            self.register_buffer("embedding_rescale", torch.tensor(float("nan")))
        # whether this fit has looked at the buffer yet: reading it is a device sync, so once
        # per fit (at its first step, after any checkpoint restore), not at every step
        self._rescale_checked = False
        if mode != "scratch":
            fresh = select_state(self.encoder.state_dict(), reinit_encoder)
            load_pretrained_encoder(self.encoder, pretrained, pretrained_encoder, expected=enc)
            self.encoder.load_state_dict(fresh, strict=False)
        if mode == "frozen":
            for p in self.encoder.parameters():
                p.requires_grad_(False)
        self.head = EdgeHead(d_embedding, d_edge, head_hidden, head_layers) if head == "mlp" else \
            InteractionEdgeHead(d_embedding, d_edge, head_hidden, head_rounds)
        if not all(0.0 <= t < 1.0 for t in threshold_grid) or not threshold_grid:
            raise ValueError(f"threshold_grid must be non-empty scores in [0, 1), got {threshold_grid}")
        # NaN = not tuned yet; a buffer so that the tuned value travels with the checkpoint
        self.register_buffer("tuned_threshold", torch.tensor(float("nan")))
        self._test_events: list[dict] = []
        self._val_events: list[dict] = []

    def forward(self, data) -> torch.Tensor:
        """Edge logits [E] for a (batched) event graph."""
        ea = getattr(data, "edge_attr", None)
        if self.hparams.mode == "frozen" or self._encoder_frozen_now():
            was_training = self.encoder.training
            self.encoder.eval()
            with torch.no_grad():
                h = self.encoder(data.x, data.edge_index, ea)
            self.encoder.train(was_training)
        else:
            h = self.encoder(data.x, data.edge_index, ea)
        return self.head(h, data.edge_index, ea)

    def _encoder_frozen_now(self) -> bool:
        """In the first ``encoder_frozen_steps`` training steps of ``finetune``."""
        n = self.hparams.encoder_frozen_steps
        return n > 0 and self.hparams.mode == "finetune" and self.training and \
            self._trainer is not None and self.global_step < n

    def edge_targets(self, data) -> torch.Tensor:
        """Truth label of every edge of ``data`` under ``edge_label`` ([E] float)."""
        if self.hparams.edge_label == "segment":
            return segment_labels(data.particle_id, data.hit_order, data.edge_index,
                                  getattr(data, "batch", None))
        y = getattr(data, "y", None)
        return y if y is not None else edge_labels(data.particle_id, data.edge_index)

    def edge_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """BCE of edge logits against labels, true edges weighted by ``pos_weight``."""
        pw = self.hparams.pos_weight
        if pw is None:
            npos = y.sum().clamp_min(1.0)
            pw = ((y.numel() - npos) / npos).clamp(1.0, 100.0)
        pw = torch.as_tensor(pw, device=logits.device, dtype=logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, y.float(), pos_weight=pw)

    @torch.no_grad()
    def match_embedding_std(self, batch) -> float:
        """Scale ``encoder.out_proj`` so that ``batch``'s embeddings have the mean per-dimension
        std that ``embedding_std`` asks for; record and return the factor (see the class
        docstring). Under DDP the factor is averaged over ranks so the replicas stay equal."""
        target = self.hparams.embedding_std
        if batch.num_nodes < 2:
            raise ValueError(f"embedding_std: the first training batch has {batch.num_nodes} hit(s); "
                             "a standard deviation over hits needs at least 2")
        ea = getattr(batch, "edge_attr", None)

        def mean_std(encoder) -> torch.Tensor:
            was_training = encoder.training
            encoder.eval()
            h = encoder(batch.x, batch.edge_index, ea).float()
            encoder.train(was_training)
            return h.std(0).mean()

        if target == "init" and self._fresh_encoder_state is None:  # scratch: already the init
            factor = torch.tensor(1.0, device=self.device)
        else:
            if target == "init":  # a copy holding the fresh weights: no new init, no RNG draw
                fresh = copy.deepcopy(self.encoder)
                fresh.load_state_dict(self._fresh_encoder_state)
                target = mean_std(fresh.to(self.device))
            factor = torch.as_tensor(target, dtype=torch.float32, device=self.device) / \
                mean_std(self.encoder).clamp_min(1e-12)
            if self._trainer is not None:
                factor = self.trainer.strategy.reduce(factor, reduce_op="mean")
        self.encoder.out_proj.weight.mul_(factor.to(self.encoder.out_proj.weight.dtype))
        self.encoder.out_proj.bias.mul_(factor.to(self.encoder.out_proj.bias.dtype))
        self.embedding_rescale.fill_(float(factor))
        return float(factor)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Let a checkpoint written with another ``embedding_std`` setting load: one written
        without it was never rescaled, so it gets the factor 1 (applied, nothing to do) instead
        of a missing-key error; one written with it into a model without it drops the buffer
        (its weights already hold the factor)."""
        state = checkpoint.get("state_dict")
        if state is None:
            return
        if hasattr(self, "embedding_rescale"):
            state.setdefault("embedding_rescale", torch.tensor(1.0))
        else:
            state.pop("embedding_rescale", None)

    def training_step(self, batch, batch_idx):
        if not self._rescale_checked:
            self._rescale_checked = True
            if self.hparams.embedding_std is not None and torch.isnan(self.embedding_rescale):
                self.match_embedding_std(batch)
        logits = self(batch)
        loss = self.edge_loss(logits, self.edge_targets(batch))
        self.log("train/loss", loss, prog_bar=True, batch_size=int(batch.num_graphs))
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self(batch)
        y = self.edge_targets(batch)
        loss = self.edge_loss(logits, y)
        m = edge_metrics(torch.sigmoid(logits).float().cpu().numpy(), y.cpu().numpy(),
                         self.threshold)
        bs = int(batch.num_graphs)
        self.log("val/loss", loss, prog_bar=True, batch_size=bs, sync_dist=True)
        for k in ("auc", "efficiency", "purity"):
            self.log(f"val/edge_{k}", float(m[k]), batch_size=bs, sync_dist=True)
        if self.hparams.tune_threshold:
            self._val_events.append(self._event_arrays(batch, torch.sigmoid(logits.float())))

    @staticmethod
    def _event_arrays(batch, scores: torch.Tensor) -> dict:
        """What track building and the TrackML score need, on the CPU."""
        keys = ("edge_index", "pos", "particle_id", "weight", "ptr")
        return {"scores": scores.detach().cpu(), **{k: getattr(batch, k).detach().cpu() for k in keys}}

    def on_validation_epoch_end(self) -> None:
        from gnn_jepa.tracking.metrics import trackml_score
        events, self._val_events = self._val_events, []
        if not self.hparams.tune_threshold or self.trainer.sanity_checking:
            return
        grid = self.hparams.threshold_grid
        # per threshold: summed event scores and the event count, reduced over DDP ranks
        totals = torch.zeros(len(grid) + 1, dtype=torch.float64)
        for b in events:
            ptr = b["ptr"].tolist()
            for i, thr in enumerate(grid):
                tid = self.reconstruct(b, b["scores"], threshold=thr).numpy()
                for k in range(len(ptr) - 1):
                    sl = slice(ptr[k], ptr[k + 1])
                    totals[i] += trackml_score(tid[sl], b["particle_id"][sl].numpy(), b["weight"][sl].numpy())
            totals[-1] += len(ptr) - 1
        totals = self.trainer.strategy.reduce(totals.to(self.device), reduce_op="sum").cpu()
        if totals[-1] == 0:
            return
        means = totals[:-1] / totals[-1]
        best = int(torch.argmax(means))  # ties: the lowest threshold
        self.tuned_threshold.fill_(float(grid[best]))
        self.log("val/threshold", float(grid[best]), rank_zero_only=True)
        self.log("val/trackml_score", float(means[best]), rank_zero_only=True)

    @property
    def threshold(self) -> float:
        """The score cut that track building uses: the tuned one once there is one."""
        t = float(self.tuned_threshold)
        # the grid value back from the float32 buffer (0.3, not 0.30000001)
        return self.hparams.threshold if t != t else min(self.hparams.threshold_grid, key=lambda g: abs(g - t))

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
                            min_hits=self.hparams.min_hits, method=self.hparams.building,
                            order_key=hit_order_key(pos),
                            cc_method="torch" if pos.is_cuda else "scipy")

    def test_step(self, batch, batch_idx):
        logits = self(batch)
        scores = torch.sigmoid(logits).float().cpu().numpy()
        y = self.edge_targets(batch).cpu().numpy()
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
                                   min_hits=self.hparams.min_hits, threshold=self.threshold)
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
        frozen = hp.encoder_frozen_steps if hp.mode == "finetune" else 0

        def head_factor(s):
            return warmup_cosine(s, hp.warmup_steps, total, 0.01)

        def encoder_factor(s):  # 0 while frozen, then its own warmup + cosine
            if s < frozen:
                return 0.0
            return warmup_cosine(s - frozen, hp.warmup_steps, max(total - frozen, 1), 0.01)

        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, [head_factor, encoder_factor][:len(groups)])
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
