"""The LightningDataModule: simulated or TrackML events -> radius graphs -> batches."""
from __future__ import annotations

from typing import Optional

import lightning.pytorch as pl
from torch_geometric.loader import DataLoader

from gnn_jepa.data.convert import DEFAULT_FEATURES
from gnn_jepa.data.dataset import EventDataset, EventSource, OnTheFlyDataset

#: Global-index offsets of the fixed validation and test sets of a simulated stream: far
#: from any training range, so train / val / test never share an event.
VAL_OFFSET = 1_000_000
TEST_OFFSET = 2_000_000


class EventDataModule(pl.LightningDataModule):
    """Events for pretraining and track finding.

    Args:
        source: ``"simulate"`` (built-in simulator) or ``"trackml"`` (CSV folder).
        simulator: simulator preset and overrides, e.g. ``{"preset": "trackml", "num_particles": 200}``.
        data_dir: TrackML folder (``source: trackml``); events are split in sorted order:
            ``train_offset .. +num_train`` train, then val, then test.
        num_train, num_val, num_test: event counts. Validation and test sets are fixed.
        train_offset: first global index of the training events. Pretraining and fine-tuning
            use different offsets so that their events are disjoint.
        on_the_fly: train on an endless stream of fresh simulated events instead.
        graph: keyword arguments of :class:`gnn_jepa.graph.transform.BuildGraph`.
        features: node features.
        batch_size, num_workers: DataLoader settings.
        cache_dir: on-disk cache of processed events (``null``: memory only).
        seed: the simulation seed stream.
    """

    def __init__(self, source: str = "simulate", simulator: Optional[dict] = None,
                 data_dir: Optional[str] = None, num_train: int = 16, num_val: int = 4,
                 num_test: int = 4, train_offset: int = 0, on_the_fly: bool = False,
                 graph: Optional[dict] = None, features: list[str] = list(DEFAULT_FEATURES),
                 batch_size: int = 2, num_workers: int = 0, cache_dir: Optional[str] = "data/cache",
                 seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.source = EventSource(source, simulator=simulator, data_dir=data_dir, seed=seed)
        from gnn_jepa.graph.transform import BuildGraph
        self.graph_transform = BuildGraph(**(graph or {}))
        self.features = list(features)
        self.batch_size = batch_size
        self.num_workers = num_workers
        if source == "trackml":
            self._train_idx = list(range(train_offset, train_offset + num_train))
            self._val_idx = list(range(self._train_idx[-1] + 1 if num_train else train_offset,
                                       train_offset + num_train + num_val))
            self._test_idx = list(range(train_offset + num_train + num_val,
                                        train_offset + num_train + num_val + num_test))
        else:
            self._train_idx = list(range(train_offset, train_offset + num_train))
            self._val_idx = list(range(VAL_OFFSET, VAL_OFFSET + num_val))
            self._test_idx = list(range(TEST_OFFSET, TEST_OFFSET + num_test))
        self._datasets: dict[str, object] = {}

    def _dataset(self, split: str):
        if split not in self._datasets:
            hp = self.hparams
            if split == "train" and hp.on_the_fly:
                ds = OnTheFlyDataset(self.source, start=hp.train_offset, features=self.features,
                                     pre_transform=self.graph_transform)
            else:
                idx = {"train": self._train_idx, "val": self._val_idx, "test": self._test_idx}[split]
                ds = EventDataset(self.source, idx, cache_dir=hp.cache_dir, features=self.features,
                                  pre_transform=self.graph_transform)
            self._datasets[split] = ds
        return self._datasets[split]

    def prepare_data(self) -> None:
        # Simulate/read and cache every fixed event once, in the main process.
        for split in ("train", "val", "test"):
            ds = self._dataset(split)
            if isinstance(ds, EventDataset) and ds.cache_path is not None:
                for i in range(len(ds)):
                    ds[i]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = self._dataset(split)
        if isinstance(ds, OnTheFlyDataset):
            shuffle = False
        return DataLoader(ds, batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
