"""ColliderML Parquet shards -> TrackML-format events (gnn_jepa.data.colliderml), on small
shards written here with the ColliderML schema (one row per event, parallel list columns)."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
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
