import torch

from gnn_jepa.datamodule import EventDataModule
from gnn_jepa.data.dataset import CACHE_FORMAT, CacheRebuildWarning, EventDataset, EventSource
from gnn_jepa.data.simulator import event_seed

import pytest

SIM = {"preset": "trackml", "num_particles": 15, "eta_range": [-2, 2]}


def test_event_seed_is_stable_and_distinct():
    assert event_seed(0, 1) == event_seed(0, 1)
    assert len({event_seed(0, i) for i in range(100)}) == 100


def test_cache_roundtrip_and_lazy_load(tmp_path):
    src = EventSource("simulate", simulator=SIM, seed=3)
    ds = EventDataset(src, [0, 1, 2], cache_dir=str(tmp_path))
    first = ds[1]
    files = sorted(ds.cache_path.glob("event_*.pt"))
    assert [f.name for f in files] == ["event_000000001.pt"]  # only what was asked for
    again = EventDataset(src, [0, 1, 2], cache_dir=str(tmp_path))[1]
    assert torch.equal(first.pos, again.pos) and torch.equal(first.particle_id, again.particle_id)
    assert not list(ds.cache_path.glob("*.tmp"))


def test_corrupt_cache_file_is_rebuilt_naming_the_file(tmp_path):
    src = EventSource("simulate", simulator=SIM, seed=3)
    ds = EventDataset(src, [0], cache_dir=str(tmp_path))
    original = ds[0]
    f = next(ds.cache_path.glob("event_*.pt"))
    f.write_bytes(f.read_bytes()[:50])
    with pytest.warns(CacheRebuildWarning) as record:
        rebuilt = EventDataset(src, [0], cache_dir=str(tmp_path))[0]
    assert len(record) == 1
    msg = str(record[0].message)
    assert msg.startswith(f"cached event file {f}: unreadable (") and msg.endswith(": rebuilding event 0")
    assert rebuilt.keys() == original.keys()
    assert all(torch.equal(rebuilt[k], original[k]) for k in original.keys() if torch.is_tensor(original[k]))
    record = torch.load(f, weights_only=False)  # rewritten as a checksummed record
    assert record["format"] == CACHE_FORMAT == 3 and record["source"] is None and len(record["checksum"]) == 64


def test_datamodule_splits_are_disjoint_and_fixed(tmp_path):
    kw = dict(simulator=SIM, num_train=3, num_val=2, num_test=2, cache_dir=str(tmp_path), batch_size=1)
    pre = EventDataModule(train_offset=0, **kw)
    ft = EventDataModule(train_offset=100000, **kw)
    ids = lambda loader: [int(b.event_id) for b in loader]  # noqa: E731
    pre_train, ft_train = set(ids(pre.train_dataloader())), set(ids(ft.train_dataloader()))
    val, test = ids(pre.val_dataloader()), ids(pre.test_dataloader())
    assert not (pre_train & ft_train) and not (pre_train & set(val)) and not (set(val) & set(test))
    assert ids(ft.val_dataloader()) == val and ids(ft.test_dataloader()) == test
    b = next(iter(pre.train_dataloader()))
    assert b.edge_index.shape[0] == 2 and b.edge_attr.shape[1] == 5 and b.y.shape[0] == b.edge_index.shape[1]


def test_on_the_fly_never_repeats(tmp_path):
    dm = EventDataModule(simulator=SIM, on_the_fly=True, batch_size=1, cache_dir=None)
    it = iter(dm.train_dataloader())
    seen = [int(next(it).event_id) for _ in range(4)]
    assert seen == [0, 1, 2, 3]


def test_bad_source():
    with pytest.raises(ValueError, match="unknown event source"):
        EventSource("hdf5")
    with pytest.raises(ValueError, match="data_dir"):
        EventSource("trackml")


def test_parallel_prepare_caches_the_same_events_as_serial(tmp_path):
    kw = dict(simulator=SIM, num_train=4, num_val=2, num_test=2, batch_size=1)
    serial = EventDataModule(cache_dir=str(tmp_path / "serial"), **kw)
    serial.prepare_data()
    parallel = EventDataModule(cache_dir=str(tmp_path / "parallel"), prepare_workers=2, **kw)
    parallel.prepare_data()
    for split in ("train", "val", "test"):
        a, b = serial._dataset(split), parallel._dataset(split)
        assert all(b._file(index).exists() for index in b.indices)  # cached before any access
        for i in range(len(a)):
            x, y = a[i], b[i]
            assert torch.equal(x.pos, y.pos) and torch.equal(x.edge_index, y.edge_index)
            assert torch.equal(x.particle_id, y.particle_id)
    assert not list((tmp_path / "parallel").rglob("*.tmp"))
    n_files = len(list((tmp_path / "parallel").rglob("event_*.pt")))
    assert n_files == 8
    parallel.prepare_data()  # everything cached: nothing to do, nothing rewritten
    assert len(list((tmp_path / "parallel").rglob("event_*.pt"))) == n_files


def test_prepare_workers_must_not_be_negative():
    with pytest.raises(ValueError, match="prepare_workers"):
        EventDataModule(simulator=SIM, prepare_workers=-1)


def test_parallel_prepare_raises_a_workers_error_naming_the_file(tmp_path):
    from gnn_jepa.data.trackml import TrackMLFormatError, event_prefix, write_event

    src = EventSource("simulate", simulator=SIM, seed=1)
    data_dir = tmp_path / "trackml"
    data_dir.mkdir()
    for i in range(4):
        write_event(src.event(1000 + i), event_prefix(data_dir, 1000 + i))
    bad = data_dir / "event000001002-hits.csv"
    lines = bad.read_text().splitlines()
    bad.write_text("\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n")  # drop module_id
    dm = EventDataModule(source="trackml", data_dir=str(data_dir), num_train=2, num_val=1, num_test=1,
                         cache_dir=str(tmp_path / "cache"), prepare_workers=2)
    with pytest.raises(TrackMLFormatError, match=r"event000001002-hits\.csv: missing column"):
        dm.prepare_data()
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_trackml_events_of_hits_only_are_unlabelled(tmp_path):
    """A TrackML folder whose events have only -hits.csv reads (pretraining needs no truth);
    an event with truth but no particles file is still an error naming the file."""
    from gnn_jepa.data.convert import event_to_data
    from gnn_jepa.data.simulator import Simulator
    from gnn_jepa.data.trackml import TrackMLFormatError, write_event

    sim = Simulator.from_preset("trackml", num_particles=10)
    full = sim.simulate(seed=1, event_id=5)
    write_event(full.without_truth(), tmp_path / "event000000005")
    write_event(sim.simulate(seed=2, event_id=6), tmp_path / "event000000006")
    assert sorted(p.name for p in tmp_path.glob("event000000005*")) == ["event000000005-hits.csv"]
    src = EventSource("trackml", data_dir=str(tmp_path))
    ev = src.event(0)
    assert not ev.has_truth and len(ev.hits) == len(full.hits) and len(ev.particles) == 0
    data = event_to_data(ev)
    assert not bool(data.has_truth) and int(data.particle_id.abs().sum()) == 0
    assert bool(event_to_data(src.event(1)).has_truth)
    (tmp_path / "event000000006-particles.csv").unlink()
    with pytest.raises(TrackMLFormatError, match="event000000006-particles"):
        src.event(1)
