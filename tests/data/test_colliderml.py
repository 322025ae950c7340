"""ColliderML Parquet shards -> TrackML-format events (gnn_jepa.data.colliderml), on small
shards written here with the ColliderML schema (one row per event, parallel list columns)."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from gnn_jepa.data import colliderml  # noqa: E402
from gnn_jepa.data.colliderml import ColliderMLFormatError, ColliderMLReader  # noqa: E402
from gnn_jepa.data.convert import event_to_data  # noqa: E402
from gnn_jepa.data.dataset import EventDataset, EventSource  # noqa: E402
from gnn_jepa.data.trackml import TrackMLFormatError  # noqa: E402
from gnn_jepa.data.weights import order_weights, pt_weight  # noqa: E402
from gnn_jepa.datamodule import EventDataModule, SkippedEventWarning  # noqa: E402
from gnn_jepa.graph.transform import BuildGraph  # noqa: E402

F32, U8, U16, U32, U64 = pa.float32(), pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()
HIT_TYPES = {"x": F32, "y": F32, "z": F32, "true_x": F32, "true_y": F32, "true_z": F32,
             "time": F32, "particle_id": U64, "volume_id": U8, "layer_id": U16,
             "surface_id": U32, "detector": U8}
PARTICLE_TYPES = {"particle_id": U64, "pdg_id": pa.int32(), "mass": F32, "energy": F32,
                  "charge": F32, "vx": F32, "vy": F32, "vz": F32, "time": F32, "px": F32,
                  "py": F32, "pz": F32, "perigee_d0": F32, "perigee_z0": F32,
                  "primary": pa.bool_(), "vertex_primary": U16, "parent_id": pa.int64()}
OLD_DROPPED = ("perigee_d0", "perigee_z0", "primary")
NHITS = 5  # hits per particle
RADII = np.array([30.0, 70.0, 120.0, 200.0, 300.0])  # distance of each hit from its vertex


def make_event(event_id: int, n_particles: int = 3, old: bool = False):
    """One event as ``(hits row, particles row)`` dicts of lists, ColliderML style.

    Particle k (ColliderML id k, so id 0 is a real particle) starts at (0, 0, k) mm with
    momentum (1 + k, 0.5, 0.2 k) GeV and leaves NHITS hits on a straight line at RADII from its
    vertex; the hits are stored in a scrambled order so the reader must sort them.
    """
    hits = {c: [] for c in HIT_TYPES}
    rng = np.random.default_rng(event_id)
    for k in range(n_particles):
        p = np.array([1.0 + k, 0.5, 0.2 * k])
        v = np.array([0.0, 0.0, float(k)])
        for r in RADII:
            pos = v + r * p / np.linalg.norm(p)
            hits["true_x"].append(pos[0]); hits["true_y"].append(pos[1]); hits["true_z"].append(pos[2])
            hits["x"].append(pos[0] + 0.01); hits["y"].append(pos[1] - 0.01); hits["z"].append(pos[2])
            hits["time"].append(r / 300.0)
            hits["particle_id"].append(k)
            hits["volume_id"].append(16 + k % 2)
            hits["layer_id"].append(2 * (int(r) // 50 + 1))
            hits["surface_id"].append(1000 * k + int(r))
            hits["detector"].append(k % 9)
    perm = rng.permutation(len(hits["x"]))
    hits = {c: [v[i] for i in perm] for c, v in hits.items()}
    n = n_particles
    particles = {
        "particle_id": list(range(n)), "pdg_id": [13 * (-1) ** k for k in range(n)],
        "mass": [0.105] * n, "energy": [10.0] * n, "charge": [(-1.0) ** k for k in range(n)],
        "vx": [0.0] * n, "vy": [0.0] * n, "vz": [float(k) for k in range(n)],
        "time": [0.0] * n, "px": [1.0 + k for k in range(n)], "py": [0.5] * n,
        "pz": [0.2 * k for k in range(n)], "perigee_d0": [0.0] * n, "perigee_z0": [float(k) for k in range(n)],
        "primary": [True] * n, "vertex_primary": [1] * n, "parent_id": [-1] * n,
    }
    if old:
        hits["cell_id"] = [7 * i for i in range(len(hits["x"]))]
        for c in OLD_DROPPED:
            del particles[c]
    return {"event_id": event_id, **hits}, {"event_id": event_id, **particles}


def write_shard(path: Path, rows: list[dict], types: dict, row_group_size: int | None = None):
    """Write event rows as one Parquet shard: ``event_id`` uint32, every other column a list."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {"event_id": pa.array([r["event_id"] for r in rows], pa.uint32())}
    for col in rows[0]:
        if col == "event_id":
            continue
        t = types.get(col, U64)
        columns[col] = pa.array([r[col] for r in rows], pa.list_(t))
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def write_dataset(root: Path, shards: list[list[int]], *, old=False, particles=True,
                  process="ttbar_pu0", row_group_size=None, edit=None):
    """``root/data/{process}_tracker_hits/train-0000k.parquet`` (+ particles) with the events
    of each shard; ``edit(hits_row, particles_row)`` may spoil an event in place."""
    files = []
    for s, ids in enumerate(shards):
        events = [make_event(e, old=old) for e in ids]
        if edit is not None:
            for h, p in events:
                edit(h, p)
        name = f"train-{s:05d}-of-{len(shards):05d}.parquet"
        files.append(write_shard(root / "data" / f"{process}_tracker_hits" / name,
                                 [h for h, _ in events], HIT_TYPES, row_group_size))
        if particles:
            files.append(write_shard(root / "data" / f"{process}_particles" / name,
                                     [p for _, p in events], PARTICLE_TYPES, row_group_size))
    return files


# ------------------------------------------------------------------ reading
@pytest.mark.parametrize("old", [False, True], ids=["current", "old"])
def test_event_values_by_hand(tmp_path, old):
    write_dataset(tmp_path, [[4, 2]], old=old)
    reader = ColliderMLReader(tmp_path)
    assert reader.event_ids() == [2, 4]
    event = reader.read(1)
    raw_h, raw_p = make_event(4, old=old)
    n = 3 * NHITS
    assert event.event_id == 4 and len(event.hits) == n and len(event.particles) == 3
    h, t, p = event.hits, event.truth, event.particles
    assert h["hit_id"].tolist() == list(range(1, n + 1))  # row index + 1, file order kept
    f32 = lambda v: np.asarray(v, np.float32).astype(np.float64)  # noqa: E731
    np.testing.assert_array_equal(h["x"], f32(raw_h["x"]))
    np.testing.assert_array_equal(h["z"], f32(raw_h["z"]))
    np.testing.assert_array_equal(t["tx"], f32(raw_h["true_x"]))
    np.testing.assert_array_equal(t["ty"], f32(raw_h["true_y"]))
    assert h["volume_id"].tolist() == raw_h["volume_id"]
    assert h["layer_id"].tolist() == raw_h["layer_id"]
    assert h["module_id"].tolist() == raw_h["surface_id"]
    assert [str(d) for d in h.dtypes[:7]] == ["int64"] + ["float64"] * 3 + ["int64"] * 3
    # ColliderML particle k -> our particle k + 1: ColliderML's particle 0 is not noise
    assert (t["particle_id"] == np.asarray(raw_h["particle_id"]) + 1).all()
    assert (t["particle_id"] > 0).all()
    assert p["particle_id"].tolist() == [1, 2, 3]
    assert p["colliderml_particle_id"].tolist() == [0, 1, 2]
    assert p["q"].tolist() == [1, -1, 1] and p["nhits"].tolist() == [NHITS] * 3
    np.testing.assert_array_equal(p["px"], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(p["vz"], [0.0, 1.0, 2.0])
    # no momentum per hit on disk: the truth carries the particle's vertex momentum
    row = t["particle_id"].to_numpy() - 1
    np.testing.assert_array_equal(t["tpx"], p["px"].to_numpy()[row])
    np.testing.assert_array_equal(t["tpz"], p["pz"].to_numpy()[row])
    assert ("perigee_d0" in p.columns) == (not old) and "pdg_id" in p.columns

    data = event_to_data(event)
    pid = data.particle_id.numpy()
    for k in (1, 2, 3):
        mine = np.flatnonzero(pid == k)
        # hit order along the particle = order of the distance from its vertex
        dist = [RADII.tolist().index(round(float(np.linalg.norm(
            [raw_h["true_x"][i], raw_h["true_y"][i], raw_h["true_z"][i] - (k - 1)])), 3))
            for i in mine]
        assert data.hit_order[mine].tolist() == dist
        # TrackML weight: order profile of 5 hits times the pT weight, normalised over the event
        w = data.weight.numpy().astype(np.float64)[mine]
        np.testing.assert_allclose(w / w.sum(), order_weights(NHITS)[dist], rtol=1e-5)
    pts = np.hypot([1.0, 2.0, 3.0], 0.5)
    sums = [data.weight[pid == k].sum().item() for k in (1, 2, 3)]
    np.testing.assert_allclose(sums, pt_weight(pts) / pt_weight(pts).sum(), rtol=1e-5)
    assert data.weight.sum().item() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(data.pt.numpy()[mine], np.hypot(3.0, 0.5), rtol=1e-6)


def test_only_the_requested_event_is_read(tmp_path, monkeypatch):
    hits_file = write_dataset(tmp_path, [[10, 11, 12]], row_group_size=1)[0]
    assert pq.ParquetFile(hits_file).num_row_groups == 3
    calls = []
    original = pq.ParquetFile.read_row_group

    def spy(self, i, columns=None, **kwargs):
        table = original(self, i, columns=columns, **kwargs)
        calls.append((i, tuple(columns or ()), table.num_rows))
        return table

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    reader = ColliderMLReader(tmp_path)
    # listing reads the event_id column only, of every row group of both shards
    assert {c[1] for c in calls} == {("event_id",)} and len(calls) == 6
    calls.clear()
    event = reader.read(1)
    assert event.event_id == 11
    # one row group of the hits shard and one of the particles shard: event 11's, one row each
    assert [(c[0], c[2]) for c in calls] == [(1, 1), (1, 1)]
    assert "time" not in calls[0][1] and "detector" not in calls[0][1]


def test_row_group_is_decoded_once_for_its_events(tmp_path, monkeypatch):
    write_dataset(tmp_path, [[1, 2, 3]])  # one row group holding three events
    reader = ColliderMLReader(tmp_path)
    calls = []
    original = pq.ParquetFile.read_row_group
    monkeypatch.setattr(pq.ParquetFile, "read_row_group",
                        lambda self, i, **kw: calls.append(i) or original(self, i, **kw))
    events = [reader.read(i) for i in range(3)]
    assert [e.event_id for e in events] == [1, 2, 3] and len(calls) == 2  # hits + particles
    assert events[2].hits["x"].tolist() == np.asarray(make_event(3)[0]["x"], np.float32).tolist()


def test_hits_only_folder_has_unknown_truth(tmp_path):
    write_dataset(tmp_path, [[3, 1]], particles=False)
    reader = ColliderMLReader(tmp_path / "data" / "ttbar_pu0_tracker_hits")  # the folder itself
    event = reader.read(0)
    assert event.event_id == 1 and len(event.hits) == 15
    assert len(event.truth) == 0 and len(event.particles) == 0
    assert list(event.truth.columns)[:3] == ["hit_id", "particle_id", "tx"]
    data = event_to_data(event)
    assert (data.particle_id == 0).all() and (data.weight == 0).all()
    assert reader.files(0) == [tmp_path / "data/ttbar_pu0_tracker_hits/train-00000-of-00001.parquet"]


def test_events_are_listed_by_event_id_across_shards(tmp_path):
    write_dataset(tmp_path, [[9, 1, 5], [3, 7, 2]])
    src = EventSource("colliderml", data_dir=str(tmp_path))
    assert len(src) == 6 and src.colliderml.event_ids() == [1, 2, 3, 5, 7, 9]
    hits_dir = tmp_path / "data" / "ttbar_pu0_tracker_hits"
    assert src.name(1) == f"{hits_dir / 'train-00001-of-00002.parquet'} event 2"
    assert [f.name for f in src.files(0)] == ["train-00000-of-00002.parquet"] * 2
    assert [f.parent.name for f in src.files(0)] == ["ttbar_pu0_tracker_hits", "ttbar_pu0_particles"]
    assert src.event(4).event_id == 7
    with pytest.raises(IndexError, match="event index 6 but .* holds 6 ColliderML events"):
        src.event(6)


def test_the_colliderml_package_download_layout(tmp_path):
    """``colliderml download`` nests every config: <cache>/<dataset>/<config>/data/<config>/."""
    write_dataset(tmp_path / "flat", [[4, 2]])
    dataset = tmp_path / "cache" / "CERN_ColliderML-Release-1"
    for kind in ("tracker_hits", "particles"):
        config = f"ttbar_pu0_{kind}"
        inner = dataset / config / "data" / config
        inner.parent.mkdir(parents=True)
        shutil.copytree(tmp_path / "flat" / "data" / config, inner)
    want = EventSource("colliderml", data_dir=str(tmp_path / "flat"))
    for root in (dataset, dataset / "ttbar_pu0_tracker_hits",
                 dataset / "ttbar_pu0_tracker_hits" / "data" / "ttbar_pu0_tracker_hits"):
        src = EventSource("colliderml", data_dir=str(root))
        assert src.colliderml.event_ids() == [2, 4], root
        assert [f.parent.name for f in src.files(0)] == ["ttbar_pu0_tracker_hits",
                                                         "ttbar_pu0_particles"]
        got, ref = src.event(1), want.event(1)
        pd.testing.assert_frame_equal(got.truth, ref.truth)
        pd.testing.assert_frame_equal(got.particles, ref.particles)


def test_duplicate_event_in_a_folder_is_an_error(tmp_path):
    write_dataset(tmp_path, [[1, 2], [2, 3]])
    with pytest.raises(ColliderMLFormatError, match=r"train-00001-of-00002.parquet: column "
                       r"'event_id': event 2 appears twice"):
        ColliderMLReader(tmp_path)


def test_missing_folder_and_no_shards(tmp_path):
    with pytest.raises(NotADirectoryError, match="does not exist"):
        ColliderMLReader(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"no '\*_tracker_hits' folder"):
        ColliderMLReader(tmp_path)


# ------------------------------------------------------------------ bad events
def _drop(col, table="hits"):
    def edit(h, p):
        (h if table == "hits" else p).pop(col)
    return edit


def _spoil(eid, fn):
    def edit(h, p):
        if h["event_id"] == eid:
            fn(h, p)
    return edit


def _set(key, i, value, table="hits"):
    def fn(h, p):
        (h if table == "hits" else p)[key][i] = value
    return fn


def _empty(h, p):
    for c in h:
        if c != "event_id":
            h[c] = []


BAD = {
    "missing hits column": (_drop("true_y"), "hits", 1,
                            ["event 1: missing column(s) ['true_y'] in the tracker_hits shard"]),
    "missing particles column": (_drop("px", "particles"), "particles", 1,
                                 ["event 1: missing column(s) ['px'] in the particles shard"]),
    "list lengths differ": (_spoil(2, lambda h, p: h["true_x"].pop()), "hits", 2,
                            ["event 2: list column 'true_x' has 14 values but 'x' has 15"]),
    "particle list lengths differ": (_spoil(2, lambda h, p: p["vy"].pop()), "particles", 2,
                                     ["event 2: list column 'vy' has 2 values but "
                                      "'particle_id' has 3"]),
    "unknown particle": (_spoil(2, _set("particle_id", 4, 99)), "hits", 2,
                         ["event 2: column 'particle_id' hit 4: particle_id 99 is absent from "
                          "the particles of event 2 in", "particles/train-00000-of-00001.parquet"]),
    "empty event": (_spoil(2, _empty), "hits", 2, ["event 2: no hits (column 'x' is an empty list)"]),
    "non-finite hit": (_spoil(2, _set("y", 3, float("nan"))), "hits", 2,
                       ["event 2: column 'y' hit 3: non-finite value nan (1 such hits)"]),
    "non-finite truth": (_spoil(2, _set("true_z", 0, float("inf"))), "hits", 2,
                         ["event 2: column 'true_z' hit 0: non-finite value inf"]),
    "non-finite particle": (_spoil(2, _set("pz", 1, float("nan"), "particles")), "particles", 2,
                            ["event 2: column 'pz' particle 1: non-finite value nan"]),
    "coordinate limit": (_spoil(2, _set("z", 6, 2.0e5)), "hits", 2,
                         ["event 2: column 'z' hit 6: value 200000.0 mm is outside any "
                          "detector (|z| >= 100000 mm; 1 such hits)"]),
    "fractional charge": (_spoil(2, _set("charge", 0, 0.5, "particles")), "particles", 2,
                          ["event 2: column 'charge' particle 0: charge 0.5 is not an integer"]),
    "duplicate particle": (_spoil(2, _set("particle_id", 2, 1, "particles")), "particles", 2,
                           ["event 2: column 'particle_id': duplicate particle_id 1"]),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_events_name_file_event_and_column(tmp_path, case):
    edit, table, eid, fragments = BAD[case]
    write_dataset(tmp_path, [[1, 2]], edit=edit)
    reader = ColliderMLReader(tmp_path)
    folder = "ttbar_pu0_tracker_hits" if table == "hits" else "ttbar_pu0_particles"
    shard = tmp_path / "data" / folder / "train-00000-of-00001.parquet"
    with pytest.raises(ColliderMLFormatError) as err:
        reader.read(eid - 1)
    msg = str(err.value)
    assert msg.startswith(f"{shard}: event {eid}: "), msg
    for fragment in fragments:
        assert fragment in msg, msg
    assert isinstance(err.value, TrackMLFormatError)
    if case not in ("missing hits column", "missing particles column"):
        assert reader.read(2 - eid).event_id == 3 - eid  # the other event reads


def test_max_coordinate_is_a_setting(tmp_path):
    write_dataset(tmp_path, [[1]])
    with pytest.raises(ColliderMLFormatError, match=r"event 1: column 'x' hit \d+: "
                       r"value .* mm is outside any detector \(\|x\| >= 100 mm"):
        ColliderMLReader(tmp_path, max_coordinate=100).read(0)
    assert len(EventSource("colliderml", data_dir=str(tmp_path), max_coordinate=1e4).event(0).hits) == 15


def test_event_missing_from_the_particles_shards(tmp_path):
    write_dataset(tmp_path, [[1, 2]])
    hits_dir = tmp_path / "data" / "ttbar_pu0_tracker_hits"
    write_shard(hits_dir / "extra.parquet", [make_event(5)[0]], HIT_TYPES)
    reader = ColliderMLReader(tmp_path)
    with pytest.raises(ColliderMLFormatError, match=r"extra.parquet: event 5: column 'event_id': "
                       r"no row for event 5 in the particles shards of ttbar_pu0_particles"):
        reader.read(2)


# ------------------------------------------------------------------ data module, cache, pyarrow
GRAPH = {"kind": "eta_phi", "radius": 0.3}


def test_datamodule_splits_by_event_id_and_graphs(tmp_path):
    write_dataset(tmp_path / "cml", [[9, 1, 5], [3, 7, 2]])
    dm = EventDataModule(source="colliderml", data_dir=str(tmp_path / "cml"), num_train=2,
                         num_val=2, num_test=2, graph=GRAPH, cache_dir=str(tmp_path / "cache"),
                         batch_size=2)
    dm.prepare_data()
    ids = {split: [int(d.event_id) for d in dm._dataset(split)] for split in ("train", "val", "test")}
    assert ids == {"train": [1, 2], "val": [3, 5], "test": [7, 9]}
    batch = next(iter(dm.train_dataloader()))
    assert batch.num_graphs == 2 and batch.edge_index.shape[0] == 2 and batch.edge_index.shape[1] > 0
    assert batch.y.shape[0] == batch.edge_index.shape[1] and batch.y.any()
    data = dm._dataset("test")[0]
    assert data.weight.sum().item() == pytest.approx(1.0, abs=1e-6) and (data.particle_id > 0).all()
    # cached like a TrackML event: the fingerprint lists the shards it was read from
    record = torch.load(next(dm._dataset("train").cache_path.glob("event_000000000.pt")),
                        weights_only=False)
    assert [f["name"] for f in record["source"]] == [
        "ttbar_pu0_tracker_hits/train-00000-of-00002.parquet",
        "ttbar_pu0_particles/train-00000-of-00002.parquet"]
    assert all(len(f["sha256"]) == 64 for f in record["source"])


def test_graph_stage_accepts_the_data(tmp_path):
    write_dataset(tmp_path, [[1]])
    data = BuildGraph(**GRAPH)(event_to_data(ColliderMLReader(tmp_path).read(0)))
    assert data.edge_index.shape[1] > 0 and data.edge_attr.shape[0] == data.edge_index.shape[1]


def test_on_bad_event_skip_covers_colliderml_errors(tmp_path):
    write_dataset(tmp_path / "cml", [[1, 2, 3]], edit=_spoil(2, _set("x", 0, float("nan"))))
    dm = EventDataModule(source="colliderml", data_dir=str(tmp_path / "cml"), num_train=3,
                         num_val=0, num_test=0, graph=GRAPH, cache_dir=str(tmp_path / "cache"),
                         on_bad_event="skip")
    with pytest.warns(SkippedEventWarning) as record:
        dm.prepare_data()
        ds = dm._dataset("train")
    messages = [str(w.message) for w in record if w.category is SkippedEventWarning]
    assert len(messages) == 2, messages
    assert re.match(r"skipping event 1 \(.*train-00000-of-00001.parquet event 2\) of split "
                    r"'train' \(bad data\): .*event 2: column 'x' hit 0", messages[0])
    assert messages[1].startswith("skipped 1 of 3 events of split 'train' (bad data)")
    assert [int(d.event_id) for d in ds] == [1, 3]
    assert [i for i, _ in dm.skipped["train"]] == [1]


def test_cache_is_rebuilt_when_a_shard_changes(tmp_path):
    files = write_dataset(tmp_path / "cml", [[1, 2]])
    src = EventSource("colliderml", data_dir=str(tmp_path / "cml"))
    ds = EventDataset(src, [0, 1], cache_dir=str(tmp_path / "cache"))
    assert ds[0].pos.shape[0] == 15
    write_shard(files[0], [make_event(1)[0], make_event(2)[0]], HIT_TYPES, row_group_size=1)
    with pytest.warns(Warning, match=r"source file\(s\) ttbar_pu0_tracker_hits/train-00000-of-00001.parquet "
                      r"\(content changed\) changed since it was cached"):
        EventDataset(EventSource("colliderml", data_dir=str(tmp_path / "cml")), [0, 1],
                     cache_dir=str(tmp_path / "cache"))[0]


def test_without_pyarrow_a_clear_import_error(tmp_path, monkeypatch):
    monkeypatch.setattr(colliderml, "pq", None)
    with pytest.raises(ImportError, match=r'pip install "gnn_jepa\[colliderml\]"'):
        EventSource("colliderml", data_dir=str(tmp_path))
    with pytest.raises(ImportError, match=r'pip install "gnn_jepa\[colliderml\]"'):
        EventDataModule(source="colliderml", data_dir=str(tmp_path), cache_dir=None)


def test_gnn_jepa_imports_without_pyarrow():
    code = ("import sys; sys.modules['pyarrow'] = None\n"
            "import gnn_jepa.datamodule, gnn_jepa.data.colliderml as c\n"
            "assert c.pq is None\n"
            "try:\n    gnn_jepa.datamodule.EventDataModule(source='colliderml', data_dir='.')\n"
            "except ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert out.returncode == 0, out.stderr
    assert 'pip install "gnn_jepa[colliderml]"' in out.stdout


# ------------------------------------------------------------------ writing (write_colliderml)
from gnn_jepa.cli import main as cli_main  # noqa: E402
from gnn_jepa.data.colliderml import write_colliderml  # noqa: E402
from gnn_jepa.data.event import Event  # noqa: E402
from gnn_jepa.data.simulator import Simulator  # noqa: E402
from gnn_jepa.data.trackml import list_events, read_event  # noqa: E402
from gnn_jepa.data.weights import event_hit_weights  # noqa: E402


def _f32(values) -> np.ndarray:
    """float64 values as the float32 ColliderML stores, widened back (what the reader gives)."""
    return np.asarray(values, np.float64).astype(np.float32).astype(np.float64)


def _sim(n=3, noise=True, first=1000):
    sim = Simulator.from_preset("trackml", num_particles=100,
                                **({} if noise else {"noise_fraction": 0.0}))
    return sim.simulate_many(n, seed=0, first_event_id=first)


def test_simulated_events_round_trip(tmp_path):
    """simulate -> write_colliderml -> ColliderMLReader: the same hits, truth and particles
    (floats as float32; noise hits dropped, counted; the per-hit momentum becomes the
    vertex momentum), and Data equal to that of the expected event."""
    events = _sim()
    noise = [int((e.truth["particle_id"] == 0).sum()) for e in events]
    assert min(noise) > 0  # the simulator emits noise hits (noise_fraction 0.05)
    summary = write_colliderml(events, tmp_path, noise="drop", events_per_shard=2)
    assert summary.events == 3 and summary.noise_hits_dropped == sum(noise)
    assert summary.hits == sum(e.num_hits for e in events) - sum(noise)
    assert summary.particles == sum(len(e.particles) for e in events)
    data = tmp_path / "data"
    assert [p.relative_to(data).as_posix() for p in summary.files] == [
        "sim_pu0_tracker_hits/train-00000.parquet", "sim_pu0_particles/train-00000.parquet",
        "sim_pu0_tracker_hits/train-00001.parquet", "sim_pu0_particles/train-00001.parquet"]

    # on disk: the ColliderML schema (the types this test file writes its shards with)
    hits_pf = pq.ParquetFile(summary.files[0])
    part_pf = pq.ParquetFile(summary.files[1])
    assert hits_pf.schema_arrow.names == ["event_id", *HIT_TYPES]
    assert part_pf.schema_arrow.names == ["event_id", *PARTICLE_TYPES]
    for pf, types in ((hits_pf, HIT_TYPES), (part_pf, PARTICLE_TYPES)):
        assert pf.schema_arrow.field("event_id").type == pa.uint32()
        for col, t in types.items():
            assert pf.schema_arrow.field(col).type == pa.list_(t), col
    assert hits_pf.num_row_groups == 2 and hits_pf.metadata.num_rows == 2  # one event each
    raw_h = hits_pf.read_row_group(0).to_pylist()[0]
    raw_p = part_pf.read_row_group(0).to_pylist()[0]
    ev = events[0]
    kept = (ev.truth["particle_id"] != 0).to_numpy()
    first = int(np.flatnonzero(kept)[0])  # the first non-noise hit is ColliderML hit 0
    assert raw_h["event_id"] == 1000 and len(raw_h["x"]) == kept.sum()
    assert raw_h["x"][0] == np.float32(ev.hits["x"].iat[first])
    assert raw_h["true_z"][0] == np.float32(ev.truth["tz"].iat[first])
    assert raw_h["particle_id"][0] == ev.truth["particle_id"].iat[first] - 1
    assert raw_h["surface_id"][0] == ev.hits["module_id"].iat[first]
    assert np.isnan(raw_h["time"]).all() and set(raw_h["detector"]) == {0}
    assert raw_p["particle_id"][:3] == [0, 1, 2] and raw_p["charge"][0] == ev.particles["q"].iat[0]
    assert raw_p["px"][1] == np.float32(ev.particles["px"].iat[1])
    assert set(raw_p["pdg_id"]) == {0} and np.isnan(raw_p["mass"]).all()
    assert np.isnan(raw_p["energy"]).all() and set(raw_p["time"]) == {0.0}
    assert np.isnan(raw_p["perigee_d0"]).all() and set(raw_p["primary"]) == {True}
    assert set(raw_p["vertex_primary"]) == {1} and set(raw_p["parent_id"]) == {-1}

    reader = ColliderMLReader(tmp_path)
    assert reader.event_ids() == [1000, 1001, 1002]
    for ev, expect_noise in zip(events, noise):
        got = reader.read_event_id(ev.event_id)
        kept = (ev.truth["particle_id"] != 0).to_numpy()
        n = int(kept.sum())
        assert n == ev.num_hits - expect_noise and got.num_hits == n
        h, t, p = got.hits, got.truth, got.particles
        assert h["hit_id"].tolist() == list(range(1, n + 1))
        for col in ("x", "y", "z"):
            np.testing.assert_array_equal(h[col], _f32(ev.hits[col].to_numpy()[kept]))
        for col in ("volume_id", "layer_id", "module_id"):
            np.testing.assert_array_equal(h[col], ev.hits[col].to_numpy()[kept])
        np.testing.assert_array_equal(t["particle_id"], ev.truth["particle_id"].to_numpy()[kept])
        for col in ("tx", "ty", "tz"):
            np.testing.assert_array_equal(t[col], _f32(ev.truth[col].to_numpy()[kept]))
        # the per-hit momentum is not stored: the particle's vertex momentum comes back
        row = t["particle_id"].to_numpy() - 1
        np.testing.assert_array_equal(t["tpx"], _f32(ev.particles["px"])[row])
        np.testing.assert_array_equal(t["tpz"], _f32(ev.particles["pz"])[row])
        # the weights are recomputed: the simulator's, up to the float32 rounding
        np.testing.assert_allclose(t["weight"], ev.truth["weight"].to_numpy()[kept],
                                   rtol=1e-5, atol=1e-12)
        np.testing.assert_array_equal(p["particle_id"], ev.particles["particle_id"])
        np.testing.assert_array_equal(p["colliderml_particle_id"], ev.particles["particle_id"] - 1)
        for col in ("q", "nhits"):
            np.testing.assert_array_equal(p[col], ev.particles[col])
        for col in ("vx", "vy", "vz", "px", "py", "pz"):
            np.testing.assert_array_equal(p[col], _f32(ev.particles[col]))
        # the Data is the expected event's: float32 values, no noise, hits renumbered
        expected = Event(
            hits=ev.hits[kept].assign(hit_id=np.arange(1, n + 1),
                                      **{c: _f32(ev.hits[c].to_numpy()[kept]) for c in "xyz"}),
            truth=t, particles=p.iloc[:, :9], event_id=ev.event_id)
        np.testing.assert_array_equal(t["weight"], event_hit_weights(expected.hits, t, p))
        a, b = event_to_data(got), event_to_data(expected)
        for key in ("pos", "x", "hit_id", "particle_id", "pt", "weight", "volume_id",
                    "layer_id", "hit_order", "event_id"):
            assert torch.equal(a[key], b[key]), key

    # dropping the noise hits leaves exactly the event simulated without noise
    quiet = _sim(noise=False)[1]
    got = reader.read(1)
    for col in ("x", "y", "z", "module_id"):
        np.testing.assert_array_equal(got.hits[col], _f32(quiet.hits[col]))
    np.testing.assert_array_equal(got.truth["particle_id"], quiet.truth["particle_id"])


def test_colliderml_event_round_trips_with_its_own_columns(tmp_path):
    """ColliderML shards -> reader -> write_colliderml -> the same columns on disk, the
    particles' pdg_id, primary, parent_id ... included (time, detector, mass, energy: fills)."""
    write_dataset(tmp_path / "a", [[4, 2, 7]])
    events = [ColliderMLReader(tmp_path / "a").read(i) for i in range(3)]
    summary = write_colliderml(events, tmp_path / "b", "ttbar_pu0", row_group_size=2)
    assert pq.ParquetFile(summary.files[0]).num_row_groups == 2  # events 2 and 4, then 7
    for kind, dropped in (("tracker_hits", {"time", "detector"}),
                          ("particles", {"mass", "energy", "time"})):
        old = pq.read_table(tmp_path / "a/data" / f"ttbar_pu0_{kind}").to_pylist()
        new = pq.read_table(tmp_path / "b/data" / f"ttbar_pu0_{kind}").to_pylist()
        old.sort(key=lambda r: r["event_id"])
        assert [r["event_id"] for r in new] == [2, 4, 7]
        for o, n in zip(old, new):
            for col in set(o) - dropped:
                assert n[col] == o[col], (kind, col)
    again = ColliderMLReader(tmp_path / "b")
    for i, ev in enumerate(events):
        got = again.read(i)
        for name in ("hits", "truth", "particles"):
            assert getattr(got, name).equals(getattr(ev, name)), name


def test_shards_and_row_groups(tmp_path):
    summary = write_colliderml(_sim(5, noise=False), tmp_path, "x_pu200", events_per_shard=2,
                               row_group_size=2)
    hits = [f for f in summary.files if f.parent.name == "x_pu200_tracker_hits"]
    assert [f.name for f in hits] == [f"train-0000{k}.parquet" for k in range(3)]
    assert [pq.ParquetFile(f).num_row_groups for f in hits] == [1, 1, 1]
    assert [pq.ParquetFile(f).metadata.num_rows for f in hits] == [2, 2, 1]
    assert ColliderMLReader(tmp_path).event_ids() == list(range(1000, 1005))


def test_writer_errors_name_the_event(tmp_path):
    events = _sim(3)
    with pytest.raises(ValueError, match=r"event 1000: \d+ noise hit\(s\) \(particle_id 0, "
                       r"first at hit_id \d+\): ColliderML has no noise hits"):
        write_colliderml(events, tmp_path)
    clean = _sim(3, noise=False)
    # an error at the third event removes the shards written before it
    clean[2].hits.loc[5, "volume_id"] = 300
    with pytest.raises(ValueError, match=r"event 1002 hits: column 'volume_id' row 5: 300 "
                       r"does not fit ColliderML's uint8"):
        write_colliderml(clean, tmp_path, events_per_shard=1)
    assert not list(tmp_path.rglob("*.parquet"))
    clean = _sim(2, noise=False)
    clean[1].event_id = 1000
    with pytest.raises(ValueError, match="event 1000: written twice"):
        write_colliderml(clean, tmp_path)
    no_truth = _sim(1, noise=False)[0]
    no_truth.truth = no_truth.truth.iloc[:0]
    with pytest.raises(ValueError, match="event 1000: no truth table"):
        write_colliderml([no_truth], tmp_path)
    orphan = _sim(1, noise=False)[0]
    orphan.particles = orphan.particles.iloc[1:]
    with pytest.raises(ValueError, match="event 1000: a hit's particle_id 1 is absent"):
        write_colliderml([orphan], tmp_path)
    for kwargs, message in (({"noise": "skip"}, "noise must be one of"),
                            ({"events_per_shard": 0}, "events_per_shard must be"),
                            ({"row_group_size": 1.5}, "row_group_size must be"),
                            ({"process": "a/b"}, "process must be")):
        with pytest.raises(ValueError, match=message):
            write_colliderml(_sim(1, noise=False), tmp_path, **kwargs)
    with pytest.raises(ValueError, match="no events to write"):
        write_colliderml([], tmp_path)
    write_colliderml(_sim(1, noise=False), tmp_path)
    with pytest.raises(FileExistsError, match=r"sim_pu0_tracker_hits already holds 1 shard"):
        write_colliderml(_sim(1, noise=False), tmp_path)


def test_simulate_command_writes_colliderml_shards(tmp_path, capsys):
    out = tmp_path / "cml"
    cli_main(["simulate", "--format", "colliderml", "--num-events", "3", "--num-particles",
              "50", "--seed", "4", "--out", str(out), "--events-per-shard", "2"])
    msg = capsys.readouterr().out
    assert re.match(r"wrote 3 events \(\d+ hits; \d+ noise hits left out, ColliderML has none\) "
                    r"as 2 ColliderML shard\(s\)", msg), msg
    reader = ColliderMLReader(out)
    assert reader.event_ids() == [1000, 1001, 1002]
    assert sorted(p.name for p in (out / "data").iterdir()) == ["sim_pu0_particles",
                                                               "sim_pu0_tracker_hits"]
    # the events of `gnn-jepa simulate --seed 4` (TrackML), less their noise, as float32
    cli_main(["simulate", "--num-events", "3", "--num-particles", "50", "--seed", "4",
              "--out", str(tmp_path / "csv")])
    for i, prefix in enumerate(list_events(tmp_path / "csv")):
        ev, got = read_event(prefix), reader.read(i)
        kept = (ev.truth["particle_id"] != 0).to_numpy()
        np.testing.assert_array_equal(got.hits["x"], _f32(ev.hits["x"].to_numpy()[kept]))
        np.testing.assert_array_equal(got.truth["particle_id"],
                                      ev.truth["particle_id"].to_numpy()[kept])
        assert len(got.particles) == len(ev.particles)
    capsys.readouterr()
    for argv, message in ((["--gzip"], "--gzip applies to --format trackml only"),
                          ([], "sim_pu0_tracker_hits already holds 2 shard(s)")):
        with pytest.raises(SystemExit):
            cli_main(["simulate", "--format", "colliderml", "--num-events", "1", "--out",
                      str(out), *argv])
        assert message in capsys.readouterr().err
