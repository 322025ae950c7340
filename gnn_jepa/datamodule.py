"""The LightningDataModule: simulated or TrackML events -> radius graphs -> batches.

Training order is resumable: the training loader is a :class:`ResumableLoader` over a
:class:`ResumableSampler`, whose permutation in epoch ``e`` is a pure function of
``(seed, e)`` (split across distributed ranks) and which Lightning checkpoints and restores
mid-epoch. A run resumed from any checkpoint therefore sees the same remaining events in
the same order as an uninterrupted run. (The endless on-the-fly stream is the exception:
it restarts at its first event on resume.)
"""
from __future__ import annotations

import multiprocessing
import signal
import warnings
from typing import Any, Iterator, Optional

import lightning.pytorch as pl
import torch
from torch.utils.data import DistributedSampler
from torch_geometric.loader import DataLoader

from gnn_jepa.config import build_from_options
from gnn_jepa.data.convert import DEFAULT_FEATURES
from gnn_jepa.data.dataset import EventDataset, EventSource, OnTheFlyDataset
from gnn_jepa.data.mixing import MixedEventSource
from gnn_jepa.data.trackml import MAX_COORDINATE_MM
from gnn_jepa.graph.transform import BuildGraph, load_graph_block

#: Global-index offsets of the fixed validation and test sets of a simulated stream: far
#: from any training range, so train / val / test never share an event.
VAL_OFFSET = 1_000_000
TEST_OFFSET = 2_000_000
SPLITS = ("train", "val", "test")
#: Values of ``EventDataModule(on_bad_event=...)``.
BAD_EVENT_POLICIES = ("error", "skip")


class SkippedEventWarning(UserWarning):
    """An event with bad data was left out of its split (``on_bad_event: skip``)."""


class ResumableSampler(DistributedSampler):
    """A shuffled (or ordered) sampler that is a pure function of ``(seed, epoch)``, split by rank.

    It is torch's :class:`~torch.utils.data.DistributedSampler` (rank ``r`` of ``W`` takes
    every ``W``-th index of the epoch's permutation, padded to equal length), which Lightning
    keeps as it is in DDP. With ``W = 1`` it is a plain shuffle that, unlike
    :class:`~torch.utils.data.RandomSampler`, does not draw from the global RNG, so a resumed
    run cannot end up with another order.

    ``skip``: the next iteration starts after that many of this rank's indices (once).
    """

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed, drop_last=drop_last)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0  # one-shot
        return iter(indices[skip:])


class ResumableLoader(DataLoader):
    """A PyG :class:`~torch_geometric.loader.DataLoader` whose position Lightning can checkpoint.

    Lightning saves ``state_dict()`` of a training loader that has one (its ``_Stateful``
    protocol) in every checkpoint and passes it to ``load_state_dict()`` before the resumed
    run iterates. The state is the epoch and the number of batches handed out in it:
    Lightning fetches a sized loader's batches one at a time, without pre-fetching, so that
    count is exactly the number of batches the training loop consumed (DataLoader workers
    pre-fetch internally, which does not move it). The first pass after a resume continues
    that epoch after those batches (or starts the next epoch when it was complete).

    The epoch of a pass is the one Lightning set on the sampler (``set_epoch``), shifted by
    the difference seen on the first pass after a resume: resuming from a checkpoint written
    at an epoch end (``ModelCheckpoint`` in ``on_train_epoch_end``), Lightning 2.6 sets every
    later epoch one higher than an uninterrupted run would, which would change the order.

    Args:
        dataset: the map-style dataset.
        sampler: its :class:`ResumableSampler`.
        batch_size: events per batch; other keyword arguments go to the DataLoader.
    """

    def __init__(self, dataset, sampler: ResumableSampler, batch_size: int = 1, **kwargs: Any):
        if not isinstance(sampler, ResumableSampler):
            raise TypeError(f"ResumableLoader needs a ResumableSampler, got {type(sampler).__name__}")
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, **kwargs)
        self._epoch, self._consumed = 0, 0
        self._offset = 0  # our epoch - the epoch Lightning set
        self._resume: Optional[tuple[int, int]] = None

    def __iter__(self):
        # a generator: this body runs at the first next(), after Lightning's set_epoch
        sampler = self.sampler
        if self._resume is not None:
            epoch, batches = self._resume
            self._offset, self._resume = epoch - sampler.epoch, None
        else:
            epoch, batches = sampler.epoch + self._offset, 0
        sampler.set_epoch(epoch)
        sampler.skip = batches * self.batch_size
        self._epoch, self._consumed = epoch, batches
        for batch in super().__iter__():
            self._consumed += 1
            yield batch

    def state_dict(self) -> dict:
        if self._resume is not None:  # restored but not iterated yet
            return {"epoch": self._resume[0], "batches": self._resume[1]}
        return {"epoch": int(self._epoch), "batches": int(self._consumed)}

    def load_state_dict(self, state: dict) -> None:
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if batches >= len(self):  # saved at the end of an epoch: the next one starts afresh
            epoch, batches = epoch + 1, 0
        self._resume = (epoch, batches)


class EventDataModule(pl.LightningDataModule):
    """Events for pretraining and track finding.

    Args:
        source: ``"simulate"`` (built-in simulator), ``"trackml"`` (CSV folder) or
            ``"colliderml"`` (ColliderML Parquet shards, needs ``gnn_jepa[colliderml]``).
        simulator: simulator preset and overrides, e.g. ``{"preset": "trackml", "num_particles": 200}``.
        data_dir: TrackML folder (``source: trackml``) or ColliderML root (``source:
            colliderml``, see :mod:`gnn_jepa.data.colliderml`); events are split in sorted
            order (ColliderML: by event id): ``train_offset .. +num_train`` train, then val,
            then test.
        num_train, num_val, num_test: event counts. Validation and test sets are fixed.
        train_offset: first global index of the training events. Pretraining and fine-tuning
            use different offsets so that their events are disjoint.
        on_the_fly: train on an endless stream of fresh simulated events instead. A resumed
            run continues the stream after the events already trained on (exactly so with
            ``num_workers: 0``; with workers it skips at most their pre-fetched events).
        graph: keyword arguments of :class:`gnn_jepa.graph.transform.BuildGraph`, or the path
            of a YAML file holding them under ``graph:`` (``gnn-jepa fit-graph``'s
            ``OUT/graph.yaml``).
        features: node features.
        mix_events: ``k >= 2`` makes every event of every split the overlay of ``k`` source
            events (global index ``i``: the source's ``k i .. k i + k - 1``, rotated in phi,
            each hit marked with its event in ``data.mix_source``; :mod:`gnn_jepa.data.mixing`),
            for event-mixing pretraining (:class:`~gnn_jepa.models.EventMixingPretraining`).
            1 (default): the events as they are.
        batch_size, num_workers: DataLoader settings.
        cache_dir: on-disk cache of processed events (``null``: memory only).
        seed: the simulation seed stream; also seeds the training shuffle (epoch ``e`` uses
            the permutation of ``(seed, e)``, see :class:`ResumableSampler`).
        prepare_workers: processes that simulate and cache the fixed events in
            :meth:`prepare_data` (0: the main process alone). A 10k-particle event takes
            seconds to simulate and graph, so 100 of them take minutes in one process. The
            cached files are the same either way; it needs the ``fork`` start method (Linux),
            elsewhere the main process does the work.
        max_coordinate: a TrackML hit with ``|x|``, ``|y|`` or ``|z|`` at or above this many
            mm is an error naming file, row and value (default 1e5).
        on_bad_event: what an event whose data is bad does, i.e. whose reading raises one of
            :data:`gnn_jepa.data.dataset.BAD_EVENT_ERRORS` (a file breaking the TrackML
            format, a coordinate beyond ``max_coordinate``). ``"error"`` (default): the first
            one stops the run, naming the file. ``"skip"``: it is left out of its split, with
            a :class:`SkippedEventWarning` naming the event, its file and the reason, and one
            per split counting them ("skipped 2 of 30 events of split 'train' (bad data):
            ..."); :attr:`skipped` lists them, ``{split: [(global index, reason), ...]}``.
            :meth:`prepare_data` (one process per node) then checks every fixed event, also
            verifying each cached file (it reads them all once), and records a bad event in
            the cache (``event_<index>.bad.json``, valid while its files keep their content);
            every rank then drops the recorded events, so the split lists are the same on
            every rank and in every run over the same files. Without a cache each process
            reads every event of a split when it first needs the split.

    Attributes:
        skipped: ``{split: [(global index, reason), ...]}`` of the events left out (empty
            lists with ``on_bad_event: error``), for each fixed split built so far.
    """

    def __init__(self, source: str = "simulate", simulator: Optional[dict[str, Any]] = None,
                 data_dir: Optional[str] = None, num_train: int = 16, num_val: int = 4,
                 num_test: int = 4, train_offset: int = 0, on_the_fly: bool = False,
                 graph: Optional[dict[str, Any] | str] = None, features: list[str] = list(DEFAULT_FEATURES),
                 batch_size: int = 2, num_workers: int = 0, cache_dir: Optional[str] = "data/cache",
                 seed: int = 0, prepare_workers: int = 0,
                 max_coordinate: float = MAX_COORDINATE_MM, on_bad_event: str = "error",
                 mix_events: int = 1):
        super().__init__()
        # a negative count or offset would silently index events from the end of a folder
        for key, value, least in (("num_train", num_train, 0), ("num_val", num_val, 0),
                                  ("num_test", num_test, 0), ("train_offset", train_offset, 0),
                                  ("batch_size", batch_size, 1), ("num_workers", num_workers, 0),
                                  ("prepare_workers", prepare_workers, 0), ("mix_events", mix_events, 1)):
            if value < least:
                raise ValueError(f"data.{key} must be >= {least}, got {value}")
        if on_bad_event not in BAD_EVENT_POLICIES:
            raise ValueError(f"data.on_bad_event must be one of {BAD_EVENT_POLICIES}, "
                             f"got {on_bad_event!r}")
        self.on_bad_event = on_bad_event
        self.skipped: dict[str, list[tuple[int, str]]] = {}
        self.save_hyperparameters()
        self.source = EventSource(source, simulator=simulator, data_dir=data_dir, seed=seed,
                                  max_coordinate=max_coordinate)
        if mix_events > 1:
            self.source = MixedEventSource(self.source, mix_events)
        if isinstance(graph, str):
            graph = load_graph_block(graph)
        self.graph_transform = build_from_options(BuildGraph, graph, "data.graph")
        self.features = list(features)
        self.batch_size = batch_size
        self.num_workers = num_workers
        if source in ("trackml", "colliderml"):
            self._train_idx = list(range(train_offset, train_offset + num_train))
            self._val_idx = list(range(self._train_idx[-1] + 1 if num_train else train_offset,
                                       train_offset + num_train + num_val))
            self._test_idx = list(range(train_offset + num_train + num_val,
                                        train_offset + num_train + num_val + num_test))
        else:
            self._train_idx = list(range(train_offset, train_offset + num_train))
            self._val_idx = list(range(VAL_OFFSET, VAL_OFFSET + num_val))
            self._test_idx = list(range(TEST_OFFSET, TEST_OFFSET + num_test))
        self._indices = {"train": self._train_idx, "val": self._val_idx, "test": self._test_idx}
        self._datasets: dict[str, object] = {}

    def _event_dataset(self, split: str) -> EventDataset:
        """A dataset over every event of a fixed split, bad ones included."""
        return EventDataset(self.source, self._indices[split], cache_dir=self.hparams.cache_dir,
                            features=self.features, pre_transform=self.graph_transform)

    def _dataset(self, split: str):
        if split not in self._datasets:
            if split == "train" and self.hparams.on_the_fly:
                ds = OnTheFlyDataset(self.source, start=self.hparams.train_offset,
                                     features=self.features, pre_transform=self.graph_transform)
            else:
                ds = self._event_dataset(split)
                self.skipped[split] = []
                if self.on_bad_event == "skip":
                    self._leave_out_bad(split, ds)
            self._datasets[split] = ds
        return self._datasets[split]

    def _leave_out_bad(self, split: str, ds: EventDataset) -> None:
        """Drop the events with bad data from ``ds`` (``on_bad_event: skip``), warn and count.

        After :meth:`prepare_data` every cached event has its data file or a bad-event
        record, so this only looks at which exists: the same answer on every rank.
        """
        good, bad = [], []
        for index in ds.indices:
            reason = ds.bad_reason(index, verify=False)
            if reason is None:
                good.append(index)
                continue
            bad.append((index, reason))
            warnings.warn(f"skipping event {index} ({self.source.name(index)}) of split "
                          f"'{split}' (bad data): {reason}", SkippedEventWarning, stacklevel=3)
        self.skipped[split] = bad
        if not bad:
            return
        names = ", ".join(f"{index} ({self.source.name(index)})" for index, _ in bad)
        warnings.warn(f"skipped {len(bad)} of {len(ds.indices)} events of split '{split}' "
                      f"(bad data): {names}", SkippedEventWarning, stacklevel=3)
        if not good:
            raise ValueError(f"every one of the {len(bad)} events of split '{split}' has bad data "
                             f"(data.on_bad_event: skip): {names}")
        ds.indices = good

    def prepare_data(self) -> None:
        """Simulate/read and cache every fixed event once (``prepare_workers`` in parallel).

        With ``on_bad_event: skip`` it checks every event, cached ones included (see the
        class doc), and records the bad ones in the cache.
        """
        skip = self.on_bad_event == "skip"
        datasets: dict[str, EventDataset] = {}
        todo = []  # (split, global index) of every event to process or check
        for split in SPLITS:
            if split == "train" and self.hparams.on_the_fly:
                continue
            ds = self._event_dataset(split)
            if ds.cache_path is None:
                continue
            datasets[split] = ds
            todo += [(split, index) for index in self._indices[split]
                     if skip or not ds._file(index).exists()]
        if skip:  # a split built before is built again from the records written now
            for split in datasets:
                self._datasets.pop(split, None)
                self.skipped.pop(split, None)
        workers = min(self.hparams.prepare_workers, len(todo))
        if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
            for split, index in todo:
                _prepare_event(datasets[split], index, skip)
            return
        # fork: the workers inherit the datasets (graph-building modules included) unpickled;
        # they only run CPU code, so a CUDA context in this process does not matter. Each
        # file is written atomically, so an interrupted pool leaves no half-written event.
        ctx = multiprocessing.get_context("fork")
        pool = ctx.Pool(workers, initializer=_init_prepare_worker, initargs=(datasets, skip))
        try:
            for _ in pool.imap_unordered(_prepare_in_worker, todo):
                pass
        except BaseException:
            pool.terminate()  # stop the others now (SIGTERM: they remove their half-written file)
            raise
        else:
            # Every event done: the idle workers exit on the pool's end-of-tasks sentinel. Not
            # terminate() (what `with Pool` does): an idle worker waits in a C semaphore call, and
            # a SIGTERM that lands on one of its other (torch) threads never wakes it to run the
            # Python handler, so join() hung (seen once in CI, in the GPU config's 8-worker prepare).
            pool.close()
        finally:
            pool.join()

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = self._dataset(split)
        # every DataLoader iterator draws a base seed for its workers; from this generator, not
        # from the global RNG, so loading never shifts what the model draws
        workers = dict(num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                       generator=torch.Generator().manual_seed(self.hparams.seed))
        if isinstance(ds, OnTheFlyDataset):
            # Rank r's k-th event is start + r + k * world (no workers): after B batches per
            # rank the stream goes on at start + B * batch_size * world. Lightning restores the
            # loop counters before it asks for the training loader, so a resumed run goes on
            # where the interrupted one stopped instead of repeating its first events.
            world, _ = self._world()
            start = self.hparams.train_offset + self._batches_trained() * self.batch_size * world
            ds = OnTheFlyDataset(self.source, start=start, features=self.features,
                                 pre_transform=self.graph_transform)
            return DataLoader(ds, batch_size=self.batch_size, **workers)
        if split == "train":
            world, rank = self._world()
            sampler = ResumableSampler(ds, num_replicas=world, rank=rank, shuffle=shuffle,
                                       seed=self.hparams.seed)
            return ResumableLoader(ds, sampler, batch_size=self.batch_size, **workers)
        return DataLoader(ds, batch_size=self.batch_size, shuffle=shuffle, **workers)

    def _batches_trained(self) -> int:
        """Training batches this fit has already run (restored from a checkpoint on resume)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0
        return int(trainer.fit_loop.epoch_loop.batch_progress.total.processed)

    def _world(self) -> tuple[int, int]:
        """(world size, global rank) of the run this datamodule serves."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return int(trainer.world_size), int(trainer.global_rank)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size(), torch.distributed.get_rank()
        return 1, 0

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


def _prepare_event(ds: EventDataset, index: int, skip: bool) -> None:
    """Cache event ``index``; with ``skip``, check it (verifying a cached file) and record it
    as bad instead of raising when its data is bad."""
    if skip:
        ds.bad_reason(index, verify=True)
    else:
        ds.load(index)


_PREPARE_STATE: dict = {}


def _init_prepare_worker(datasets: dict, skip: bool) -> None:
    torch.set_num_threads(1)  # one core per worker: the pool is the parallelism
    # The pool is terminated (SIGTERM) when another worker fails: exit through an exception so
    # that a half-written cache file is removed (atomic_torch_save cleans up on BaseException)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    _PREPARE_STATE.update(datasets=datasets, skip=skip)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _prepare_in_worker(task: tuple[str, int]) -> None:
    split, index = task
    _prepare_event(_PREPARE_STATE["datasets"][split], index, _PREPARE_STATE["skip"])
