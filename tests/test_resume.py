"""Preemption: a fit killed (SIGKILL) or stopped (SIGTERM) and resumed ends exactly where an
uninterrupted fit ends.

Four ``gnn-jepa fit`` subprocesses of the shipped pretraining config, shrunk (CPU,
``--trainer.deterministic true``, seed 0), 5 training events in batches of 2 (3 batches per
epoch), 14 steps, ``ModelCheckpoint(every_n_train_steps=4, save_last=True)``:

* A runs 14 steps uninterrupted (in parallel with the chain below);
* B pauses before step 5 -- checkpoint of step 4, *mid-epoch*, already written -- and gets SIGKILL;
* C = ``--ckpt_path last`` from B, pauses before step 8 and gets SIGTERM: the step in flight
  finishes and :class:`gnn_jepa.models.checkpoints.SigtermCheckpoint` saves step 9 (the *end* of an epoch)
  before the process exits with 143;
* E = ``--ckpt_path last`` from C runs to step 14.

The test-only callbacks below are imported by the subprocesses (``PYTHONPATH=tests``): the
pause makes the kill points deterministic (the process waits at a known step until the
signal arrives), the recorder logs, per step, the events of the batch, learning rates and
EMA momentum, and saves the final checkpoint.

Tolerance: masks, schedules and the training shuffle are pure functions of (seed, step,
epoch), so on CPU in deterministic mode the resumed run must match bit for bit; the test
asserts exact equality of every weight, optimizer moment and scheduler state.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
# the console script, as users run it
GNN_JEPA = [os.path.join(os.path.dirname(sys.executable), "gnn-jepa")]
STEPS, EVERY, BATCH, NUM_TRAIN = 14, 4, 2, 5
KILL_AT, TERM_AT = 5, 8  # pause before these global steps


# ----------------------------------------------------------------------- test-only callbacks
class Recorder(pl.Callback):
    """Appends one JSON line per training batch; saves the final state on train end."""

    def __init__(self, path: str, final: str):
        self.path, self.final = path, final

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        rec = {"step": trainer.global_step, "epoch": trainer.current_epoch, "batch_idx": batch_idx,
               "events": batch.event_id.tolist(),
               "lr": [g["lr"] for g in trainer.optimizers[0].param_groups],
               "momentum": pl_module.momentum(), "pid": os.getpid()}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(rec) + "\n")

    def on_train_end(self, trainer, pl_module):
        trainer.save_checkpoint(self.final)


class Pause(pl.Callback):
    """Before global step ``at``: write ``ready`` and wait (up to ``timeout`` s) for a signal.

    SIGKILL ends the process while it waits; SIGTERM is recorded by Lightning's handler,
    which ends the wait, and the run stops after this batch.
    """

    def __init__(self, at: int, ready: str, timeout: float = 300.0):
        self.at, self.ready, self.timeout = at, ready, timeout

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step != self.at:
            return
        Path(self.ready).write_text(str(os.getpid()))
        t0 = time.monotonic()
        while not trainer.received_sigterm:
            if time.monotonic() - t0 > self.timeout:
                raise RuntimeError(f"Pause at step {self.at}: no signal within {self.timeout} s")
            time.sleep(0.05)


# ----------------------------------------------------------------------- helpers
def write_config(tmp: Path, name: str, pause: int | None = None, anti_collapse: str = "vicreg") -> Path:
    """The shipped small pretraining config, shrunk, with the test callbacks."""
    cfg = yaml.safe_load((ROOT / "configs/pretrain/trackml_small.yaml").read_text())
    run = tmp / name
    tr = cfg["trainer"]
    tr.update(max_steps=STEPS, val_check_interval=STEPS, limit_val_batches=1, accelerator="cpu",
              deterministic=True, enable_progress_bar=False, log_every_n_steps=1,
              default_root_dir=str(run))
    tr["logger"]["init_args"] = {"save_dir": str(run), "name": "logs"}
    cbs = [c for c in tr["callbacks"] if not c["class_path"].endswith("ModelCheckpoint")]
    cbs.append({"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                "init_args": {"save_last": True, "every_n_train_steps": EVERY}})
    cbs.append({"class_path": "test_resume.Recorder",
                "init_args": {"path": str(run / "record.jsonl"), "final": str(run / "final.ckpt")}})
    if pause is not None:
        cbs.append({"class_path": "test_resume.Pause",
                    "init_args": {"at": pause, "ready": str(run / "ready")}})
    tr["callbacks"] = cbs
    cfg["model"]["init_args"].update(encoder={"d_model": 16, "d_embedding": 8, "n_layers": 1},
                                     predictor={"d_model": 16, "layers": 1},
                                     optim={"warmup_steps": 3}, probe_events=1,
                                     anti_collapse=anti_collapse)
    cfg["data"].update(simulator={"preset": "trackml", "num_particles": 20, "eta_range": [-2, 2]},
                       num_train=NUM_TRAIN, num_val=1, num_test=1, batch_size=BATCH,
                       cache_dir=str(tmp / "cache"))
    run.mkdir(parents=True, exist_ok=True)
    path = run / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def launch(config: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "WANDB_MODE": "disabled"}
    log = open(config.parent / "stdout.txt", "w")
    return subprocess.Popen([*GNN_JEPA, "fit", "--config", str(config), *extra], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def wait_for(proc: subprocess.Popen, ready: Path, timeout: float = 240.0) -> None:
    t0 = time.monotonic()
    while not ready.exists():
        if proc.poll() is not None:
            raise AssertionError(f"run exited ({proc.returncode}) before pausing:\n{tail(ready.parent)}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"run did not reach its pause in {timeout} s:\n{tail(ready.parent)}")
        time.sleep(0.1)


def finish(proc: subprocess.Popen, timeout: float = 240.0) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def tail(run: Path, n: int = 3000) -> str:
    f = run / "stdout.txt"
    return f.read_text()[-n:] if f.exists() else ""


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "record.jsonl").read_text().splitlines()]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def assert_same(a, b, where: str = "") -> None:
    """Exact equality of nested checkpoint state (tensors bit for bit)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where}: max |diff| {(a.double() - b.double()).abs().max().item()}"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys {set(a) ^ set(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


# ----------------------------------------------------------------------- in-process: kill points
class ToyModule(pl.LightningModule):
    """A linear model over PyG batches; records the event ids of every trained batch.

    ``kill`` = (hook, global step): send this process SIGTERM from that hook at that step.
    """

    def __init__(self, kill: tuple[str, int] | None = None, d_in: int = 3):
        super().__init__()
        self.lin = torch.nn.Linear(d_in, 1)
        self.kill = kill
        self.seen: list[list[int]] = []

    def _maybe_kill(self, hook: str) -> None:
        if self.kill == (hook, self.global_step):
            os.kill(os.getpid(), signal.SIGTERM)

    def training_step(self, batch, batch_idx):
        self.seen.append(batch.event_id.tolist())
        self._maybe_kill("training_step")
        return self.lin(batch.x).pow(2).mean() + self.lin.bias.abs().sum()

    def on_train_epoch_end(self):
        self._maybe_kill("on_train_epoch_end")

    def validation_step(self, batch, batch_idx):
        self._maybe_kill("validation_step")
        self.log("val/loss", self.lin(batch.x).pow(2).mean(), batch_size=int(batch.num_graphs))

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=0.05)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class ToyData(pl.LightningDataModule):
    """7 tiny graphs, batches of 2 (4 batches per epoch), through the project's ResumableLoader."""

    def __init__(self):
        super().__init__()
        from torch_geometric.data import Data
        g = torch.Generator().manual_seed(0)
        self.events = [Data(x=torch.randn(5, 3, generator=g), event_id=torch.tensor([i])) for i in range(7)]

    def train_dataloader(self):
        from gnn_jepa.datamodule import ResumableLoader, ResumableSampler
        return ResumableLoader(self.events, ResumableSampler(self.events, seed=1), batch_size=2)

    def val_dataloader(self):
        from torch_geometric.loader import DataLoader
        return DataLoader(self.events[:4], batch_size=2)


def toy_fit(root: Path, kill=None, ckpt_path=None, extra_callbacks=(), val: str = "epoch",
            data: pl.LightningDataModule | None = None) -> ToyModule:
    """10 steps; validation at every epoch end (``val="epoch"``) or at step 6 (``"step"``, mid-epoch)."""
    from gnn_jepa.models.checkpoints import SigtermCheckpoint
    pl.seed_everything(0)
    data = ToyData() if data is None else data
    model = ToyModule(kill, d_in=int(next(iter(data.train_dataloader())).x.shape[1]))
    when = {"epoch": {}, "step": {"val_check_interval": 6, "check_val_every_n_epoch": None}}[val]
    trainer = pl.Trainer(max_steps=10, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(root), num_sanity_val_steps=0,
                         callbacks=[SigtermCheckpoint(dirpath=str(root)), *extra_callbacks],
                         deterministic=True, **when)
    trainer.fit(model, data, ckpt_path=ckpt_path)
    return model


@pytest.mark.parametrize("val,kill", [
    ("epoch", ("training_step", 5)),       # mid-epoch 1 (batch 1 of 4)
    ("epoch", ("training_step", 7)),       # last batch of epoch 1
    ("epoch", ("on_train_epoch_end", 8)),  # after epoch 1
    ("epoch", ("validation_step", 8)),     # during epoch 1's validation
    ("step", ("training_step", 5)),
    ("step", ("training_step", 7)),        # epoch end, step-based validation: Lightning's weak spot
    ("step", ("on_train_epoch_end", 8)),
    ("step", ("validation_step", 6)),      # during a mid-epoch validation
])
def test_sigterm_checkpoint_resumes_exactly(tmp_path, val, kill):
    """Wherever SIGTERM lands, the checkpoint resumes to the uninterrupted run's exact result."""
    ref = toy_fit(tmp_path / "ref", val=val)
    with pytest.raises(SystemExit):  # Lightning's SIGTERMException
        toy_fit(tmp_path / "run", kill=kill, val=val)
    ckpt = tmp_path / "run" / "last.ckpt"
    assert ckpt.is_file(), "SIGTERM left no checkpoint"
    step = load(ckpt)["global_step"]
    # a training step in flight finishes first; at epoch end/validation nothing more trains
    assert step == (kill[1] + 1 if kill[0] == "training_step" else kill[1])
    resumed = toy_fit(tmp_path / "run", ckpt_path=str(ckpt), val=val)
    assert ref.seen[step:] == resumed.seen, "data order after resuming differs"
    assert_same(ref.state_dict(), resumed.state_dict(), "weights")
    assert_same(ref.trainer.optimizers[0].state_dict(), resumed.trainer.optimizers[0].state_dict(), "adam")
    assert ref.trainer.lr_scheduler_configs[0].scheduler.last_epoch == \
        resumed.trainer.lr_scheduler_configs[0].scheduler.last_epoch == 10


@pytest.mark.parametrize("where", ["epoch_end", "step"])
def test_model_checkpoint_resume_keeps_data_order(tmp_path, where):
    """Resuming Lightning's own checkpoints (epoch end; mid-epoch step) continues the exact order.

    At an epoch end Lightning 2.6 would set the sampler's epoch one too high after resuming;
    the ResumableLoader corrects it.
    """
    from lightning.pytorch.callbacks import ModelCheckpoint
    kw = {"every_n_epochs": 1} if where == "epoch_end" else {"every_n_train_steps": 3}
    ref = toy_fit(tmp_path / "ref", extra_callbacks=[ModelCheckpoint(
        dirpath=str(tmp_path / "ck"), save_top_k=-1, **kw)])
    name = "epoch=0-step=4.ckpt" if where == "epoch_end" else "epoch=1-step=6.ckpt"
    ckpt = tmp_path / "ck" / name
    resumed = toy_fit(tmp_path / "run", ckpt_path=str(ckpt))
    step = load(ckpt)["global_step"]
    assert ref.seen[step:] == resumed.seen
    assert_same(ref.state_dict(), resumed.state_dict(), "weights")


def test_on_the_fly_stream_resumes_where_it_stopped(tmp_path):
    """The endless simulated stream goes on after the trained events instead of starting over."""
    from gnn_jepa.datamodule import EventDataModule

    def data():
        return EventDataModule(simulator={"preset": "trackml", "num_particles": 5}, on_the_fly=True,
                               num_val=2, batch_size=2, cache_dir=None, train_offset=100)
    ref = toy_fit(tmp_path / "ref", val="step", data=data())
    assert [e for b in ref.seen for e in b] == list(range(100, 120))  # never repeats
    with pytest.raises(SystemExit):
        toy_fit(tmp_path / "run", kill=("training_step", 3), val="step", data=data())
    resumed = toy_fit(tmp_path / "run", ckpt_path=str(tmp_path / "run" / "last.ckpt"), val="step", data=data())
    assert resumed.seen == ref.seen[4:]
    assert_same(ref.state_dict(), resumed.state_dict(), "weights")


def test_step_checkpoint_holds_the_steps_ema_update(tmp_path):
    """A ModelCheckpoint(every_n_train_steps) checkpoint must hold the EMA target encoder of its step.

    ModelCheckpoint saves in the callbacks' ``on_train_batch_end``, which Lightning calls
    *before* the LightningModule's own ``on_train_batch_end``: an EMA update made there is
    missing from the checkpoint, and a run resumed from it (after SIGKILL, say) lags one EMA
    update behind an uninterrupted run (``test_sigkill_and_sigterm_resume_exactly`` then
    differs in its final weights). The update belongs right after the optimizer step
    (``optimizer_step``), before any callback sees the batch end.
    """
    from lightning.pytorch.callbacks import ModelCheckpoint

    from gnn_jepa.datamodule import EventDataModule
    from gnn_jepa.models import JEPAPretraining

    pl.seed_everything(0)
    model = JEPAPretraining(encoder={"d_model": 16, "d_embedding": 8, "n_layers": 1, "heads": 2},
                            predictor={"d_model": 16, "layers": 1}, optim={"warmup_steps": 1})
    data = EventDataModule(simulator={"preset": "trackml", "num_particles": 20, "eta_range": [-2, 2]},
                           num_train=2, num_val=1, num_test=1, batch_size=1, cache_dir=None,
                           graph={"kind": "eta_phi", "radius": 0.05, "w_r": 0.0})
    ck = ModelCheckpoint(dirpath=str(tmp_path), every_n_train_steps=2, save_top_k=-1)
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, callbacks=[ck])
    trainer.fit(model, data)
    saved = load(tmp_path / "epoch=0-step=2.ckpt")["state_dict"]
    final = model.state_dict()
    assert_same({k: final[k] for k in final if k.startswith("context_encoder.")},
                {k: saved[k] for k in saved if k.startswith("context_encoder.")}, "context encoder")
    assert_same({k: final[k] for k in final if k.startswith("target_encoder.")},
                {k: saved[k] for k in saved if k.startswith("target_encoder.")},
                "EMA target encoder (checkpoint of step 2 vs. after step 2)")


# ----------------------------------------------------------------------- the CLI test
@pytest.fixture
def processes():
    """Subprocesses started by a test; any still running at its end are killed."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("anti_collapse", ["vicreg", "sigreg", "none"])
def test_sigkill_and_sigterm_resume_exactly(tmp_path, processes, anti_collapse):
    """See the module docstring; for each anti-collapse term (SIGReg draws random directions
    at every step, from a generator of the step). The SIGKILL leg resumes a
    ModelCheckpoint(every_n_train_steps) checkpoint, so it also needs
    test_step_checkpoint_holds_the_steps_ema_update to pass."""
    ac = {"anti_collapse": anti_collapse}
    cfg_a = write_config(tmp_path, "A", **ac)
    cfg_b = write_config(tmp_path, "B", pause=KILL_AT, **ac)
    a = launch(cfg_a)
    b = launch(cfg_b)
    processes += [a, b]
    # B: SIGKILL while paused before step 5; its last checkpoint is step 4 (mid-epoch 1)
    wait_for(b, cfg_b.parent / "ready")
    b.send_signal(signal.SIGKILL)
    assert finish(b) == -signal.SIGKILL
    b_last = list((tmp_path / "B").rglob("last.ckpt"))
    assert len(b_last) == 1 and load(b_last[0])["global_step"] == 4

    # C: resume B with --ckpt_path last (C's own logger folder is a new, empty version),
    # SIGTERM while paused before step 8: the run finishes that step and saves step 9
    cfg_c = write_config(tmp_path, "B", pause=TERM_AT, **ac)  # same run folder as B
    (cfg_b.parent / "ready").unlink()
    c = launch(cfg_c, "--ckpt_path", "last")
    processes.append(c)
    wait_for(c, cfg_c.parent / "ready")
    c.send_signal(signal.SIGTERM)
    rc = finish(c)
    assert rc == 128 + signal.SIGTERM, f"SIGTERMed fit exited {rc}:\n{tail(cfg_c.parent)}"
    assert "SIGTERM: saved checkpoint" in tail(cfg_c.parent, 100_000)
    versions = sorted(p.name for p in (tmp_path / "B" / "logs").iterdir())
    assert versions == ["version_0", "version_1"]
    term_ckpt = tmp_path / "B" / "logs" / "version_1" / "checkpoints" / "last.ckpt"
    term = load(term_ckpt)
    assert term["global_step"] == TERM_AT + 1
    assert not (tmp_path / "B" / "final.ckpt").exists()  # C never reached the end

    # E: resume C -> step 14
    cfg_e = write_config(tmp_path, "B", **ac)
    e = launch(cfg_e, "--ckpt_path", "last")
    processes.append(e)
    assert finish(e) == 0, tail(cfg_e.parent)
    assert finish(a) == 0, tail(cfg_a.parent)

    ref, chain = records(tmp_path / "A"), records(tmp_path / "B")
    pids = list(dict.fromkeys(r["pid"] for r in chain))
    assert len(pids) == 3
    by_run = [[r for r in chain if r["pid"] == p] for p in pids]
    # B trained steps 0..4 and recorded the start of step 5 (then it was killed);
    # C restarted at step 4 (the checkpoint), E at step 9 (the SIGTERM checkpoint)
    assert [r["step"] for r in by_run[0]] == list(range(0, KILL_AT + 1))
    assert [r["step"] for r in by_run[1]] == list(range(4, TERM_AT + 1))
    assert [r["step"] for r in by_run[2]] == list(range(TERM_AT + 1, STEPS))
    # each step as finally trained: the last process that ran it
    trained = {r["step"]: r for r in chain}
    assert [r["step"] for r in ref] == list(range(STEPS)) and sorted(trained) == list(range(STEPS))
    for r in ref:
        t = trained[r["step"]]
        # data order, epoch bookkeeping, LR schedule and EMA momentum all continue
        for key in ("events", "epoch", "batch_idx", "lr", "momentum"):
            assert t[key] == r[key], f"step {r['step']}: {key} {t[key]} != {r[key]} (uninterrupted)"
    # the shuffle really reorders epochs (else data order would be a weak check)
    epochs = [[e for r in ref if r["epoch"] == k for e in r["events"]] for k in range(3)]
    assert all(sorted(x) == list(range(NUM_TRAIN)) for x in epochs) and len({tuple(x) for x in epochs}) > 1

    fa, fe = load(tmp_path / "A" / "final.ckpt"), load(tmp_path / "B" / "final.ckpt")
    assert fa["global_step"] == fe["global_step"] == STEPS
    assert_same(fa["state_dict"], fe["state_dict"], "state_dict")  # incl. the EMA target encoder
    assert_same(fa["optimizer_states"], fe["optimizer_states"], "optimizer")
    assert_same(fa["lr_schedulers"], fe["lr_schedulers"], "lr_scheduler")
    # the validation metrics at the end agree too
    def last_val(run: Path) -> dict:
        rows = [r for f in sorted(run.glob("logs/version_*/metrics.csv")) for r in csv.DictReader(open(f))]
        return {k: float(v) for r in rows for k, v in r.items() if k.startswith("val/") and v}
    va, ve = last_val(tmp_path / "A"), last_val(tmp_path / "B")
    assert va and va == ve
