"""Exact radius graph against a brute-force reference (dense distances on small inputs)."""
from __future__ import annotations

import math
import os

import pytest
import torch

from gnn_jepa.graph import radius as radius_mod
from gnn_jepa.graph.radius import available_backends, radius_graph, radius_pairs

TWO_PI = 2 * math.pi


def brute_d2(coords: torch.Tensor, periods=None) -> torch.Tensor:
    """Dense [N, N] squared distances, minimum image on periodic dims, summed in dim order."""
    n, d = coords.shape
    periods = periods or [None] * d
    d2 = torch.zeros(n, n, dtype=coords.dtype)
    for k in range(d):
        delta = coords[:, None, k] - coords[None, :, k]
        if periods[k] is not None:
            delta = delta.abs()
            delta = torch.minimum(delta, torch.tensor(periods[k], dtype=coords.dtype) - delta)
        d2 = d2 + delta * delta
    return d2


def brute_adjacency(coords, r, periods=None, batch=None) -> torch.Tensor:
    rt = torch.tensor(r, dtype=coords.dtype)
    adj = brute_d2(coords, periods) <= rt * rt
    adj.fill_diagonal_(False)
    if batch is not None:
        adj &= batch[:, None] == batch[None, :]
    return adj


def brute_pairs(coords, r, periods=None, batch=None) -> torch.Tensor:
    adj = torch.triu(brute_adjacency(coords, r, periods, batch), diagonal=1)
    return adj.nonzero().t()  # nonzero is row-major: sorted by (row, col)


def brute_graph(coords, r, periods=None, batch=None) -> torch.Tensor:
    return brute_adjacency(coords, r, periods, batch).nonzero().t()


def brute_knn(coords, r, k, periods=None, batch=None, undirected=True) -> torch.Tensor:
    """Keep each centre's k nearest neighbours within r, ties by neighbour index."""
    adj = brute_adjacency(coords, r, periods, batch)
    d2 = brute_d2(coords, periods)
    keep = torch.zeros_like(adj)
    for i in range(coords.shape[0]):
        nb = adj[i].nonzero().squeeze(1).tolist()
        nb.sort(key=lambda j: (float(d2[i, j]), j))
        keep[i, nb[:k]] = True
    if undirected:
        return (keep | keep.t()).nonzero().t()
    return keep.t().nonzero().t()  # edge (j -> i) for j kept by centre i


def random_case(seed: int):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(2, 300, (1,), generator=g))
    d = int(torch.randint(1, 4, (1,), generator=g))
    coords = torch.rand(n, d, generator=g) * (0.5 + 4 * torch.rand(d, generator=g))
    periods = [None] * d
    kind = seed % 4
    if kind == 1:  # one phi-like dimension in (-pi, pi]
        k = int(torch.randint(0, d, (1,), generator=g))
        coords[:, k] = (torch.rand(n, generator=g) * 2 - 1) * math.pi
        periods[k] = TWO_PI
    elif kind == 2:  # every dimension periodic
        coords = (torch.rand(n, d, generator=g) * 2 - 1) * math.pi
        periods = [TWO_PI] * d
    batch = torch.randint(0, 3, (n,), generator=g) if seed % 3 == 0 else None
    r = 0.05 + float(torch.rand(1, generator=g))
    return coords, r, periods, batch


@pytest.mark.parametrize("seed", range(40))
def test_random_points_match_brute_force(seed):
    coords, r, periods, batch = random_case(seed)
    chunk = 1 if seed % 2 else radius_mod.DEFAULT_CHUNK_SIZE  # step loop vs ragged tail
    got = radius_pairs(coords, r, periods=periods, batch=batch, chunk_size=chunk)
    assert torch.equal(got, brute_pairs(coords, r, periods, batch))
    graph = radius_graph(coords, r, periods=periods, batch=batch, chunk_size=chunk)
    assert torch.equal(graph, brute_graph(coords, r, periods, batch))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dense_cluster_and_float64(dtype):
    g = torch.Generator().manual_seed(1)
    coords = torch.cat([torch.rand(200, 3, generator=g) * 0.3,  # one crowded cell
                        torch.rand(300, 3, generator=g) * 5]).to(dtype)
    got = radius_graph(coords, 0.4, chunk_size=1000)
    assert got.dtype == torch.long
    assert torch.equal(got, brute_graph(coords, 0.4))


def test_matches_torch_cdist():
    # Independent reference: torch.cdist without the matmul shortcut, float64.
    g = torch.Generator().manual_seed(8)
    coords = torch.rand(400, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5])
    dist = torch.cdist(coords, coords, compute_mode="donot_use_mm_for_euclid_dist")
    ref = torch.triu(dist <= 0.2, diagonal=1).nonzero().t()
    assert ref.shape[1] > 1000
    assert torch.equal(radius_pairs(coords, 0.2), ref)


def test_sparse_grid_path_matches_brute_force():
    # Tiny radius against a huge extent: too many cells for the dense start table.
    g = torch.Generator().manual_seed(2)
    base = torch.rand(150, 3, generator=g, dtype=torch.float64) * 1e5
    coords = torch.cat([base, base + 0.3 * torch.rand(150, 3, generator=g, dtype=torch.float64)])
    got = radius_pairs(coords, 0.5)
    ref = brute_pairs(coords, 0.5)
    assert ref.shape[1] >= 100  # each point pairs with its displaced copy (mostly)
    assert torch.equal(got, ref)


def test_pairs_across_phi_wrap():
    # Two points 0.02 rad apart across the +-pi seam, one far away.
    phi = torch.tensor([math.pi - 0.01, -math.pi + 0.01, 0.0])
    coords = torch.stack([torch.zeros(3), phi], 1)
    assert radius_pairs(coords, 0.05, periods=[None, TWO_PI]).tolist() == [[0], [1]]
    assert radius_pairs(coords, 0.05).shape == (2, 0)  # no wrap without a period
    sym = radius_graph(coords, 0.05, periods=[None, TWO_PI])
    assert sym.tolist() == [[0, 1], [1, 0]]


def test_exact_ties_at_radius_are_edges():
    # Integer lattice: neighbours at distance exactly 1 (== r) are edges, sqrt(2) are not.
    ax = torch.arange(4.0)
    coords = torch.cartesian_prod(ax, ax, ax)
    graph = radius_graph(coords, 1.0)
    deg = torch.bincount(graph[1], minlength=64)
    corner, centre = 0, 1 * 16 + 1 * 4 + 1
    assert int(deg[corner]) == 3 and int(deg[centre]) == 6
    assert graph.shape[1] == 2 * 3 * 4 * 4 * 3  # 3 axes x 16 lines x 3 links, both ways
    # Periodic lattice: 10 sites on a ring of period 10, every site has 2 neighbours at 1.
    ring = torch.arange(10.0)[:, None]
    ring_graph = radius_graph(ring, 1.0, periods=[10.0])
    assert torch.equal(torch.bincount(ring_graph[0]), torch.full((10,), 2))
    assert [0, 9] in ring_graph.t().tolist()


def test_batches_are_never_connected():
    g = torch.Generator().manual_seed(3)
    pts = torch.rand(50, 2, generator=g)
    coords = torch.cat([pts, pts])
    batch = torch.cat([torch.zeros(50, dtype=torch.long), torch.ones(50, dtype=torch.long)])
    got = radius_graph(coords, 0.2, batch=batch)
    single = radius_graph(pts, 0.2)
    assert torch.equal(got, torch.cat([single, single + 50], 1))
    # Unsorted batch vector: same edges as the brute force.
    perm = torch.randperm(100, generator=g)
    got = radius_graph(coords[perm], 0.2, batch=batch[perm])
    assert torch.equal(got, brute_graph(coords[perm], 0.2, batch=batch[perm]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("undirected", [True, False])
@pytest.mark.parametrize("k", [1, 3, 8])
def test_max_num_neighbors_keeps_nearest(k, undirected, dtype):
    g = torch.Generator().manual_seed(4)
    coords = torch.rand(120, 2, generator=g, dtype=dtype)
    coords[:, 1] = coords[:, 1] * TWO_PI - math.pi
    periods = [None, TWO_PI]
    got = radius_graph(coords, 0.5, periods=periods, max_num_neighbors=k, undirected=undirected)
    ref = brute_knn(coords, 0.5, k, periods, undirected=undirected)
    assert torch.equal(got, ref)
    if not undirected:
        assert int(torch.bincount(got[1]).max()) <= k


def test_max_num_neighbors_ties_by_index():
    # Centre 0 with four neighbours at distance exactly 1: k = 2 keeps the two lowest indices.
    coords = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, -1.0], [-1.0, 0.0]])
    got = radius_graph(coords, 1.0, max_num_neighbors=2, undirected=False)
    into_0 = got[0, got[1] == 0].tolist()
    assert into_0 == [1, 2]
    assert torch.equal(got, brute_knn(coords, 1.0, 2, undirected=False))


def test_empty_and_single_point():
    for n in (0, 1):
        coords = torch.zeros(n, 3)
        assert radius_graph(coords, 1.0).shape == (2, 0)
        assert radius_pairs(coords, 1.0).shape == (2, 0)
    assert radius_graph(torch.zeros(1, 3), 1.0, loop=True).tolist() == [[0], [0]]
    far = torch.tensor([[0.0], [10.0]])
    assert radius_graph(far, 1.0).shape == (2, 0)


def test_loops_and_sorted_output():
    g = torch.Generator().manual_seed(5)
    coords = torch.rand(80, 3, generator=g)
    plain = radius_graph(coords, 0.3)
    loops = radius_graph(coords, 0.3, loop=True)
    assert loops.shape[1] == plain.shape[1] + 80
    keys = loops[0] * 80 + loops[1]
    assert bool((keys[1:] > keys[:-1]).all())  # strictly sorted by (row, col)
    assert torch.equal(loops[:, loops[0] != loops[1]], plain)


def test_bad_inputs_name_the_problem():
    x = torch.rand(5, 2)
    with pytest.raises(ValueError, match="2D tensor"):
        radius_graph(torch.rand(5), 1.0)
    with pytest.raises(ValueError, match="radius r"):
        radius_graph(x, 0.0)
    with pytest.raises(ValueError, match="row 2"):
        bad = x.clone()
        bad[2, 1] = float("nan")
        radius_graph(bad, 1.0)
    with pytest.raises(ValueError, match="periods given"):
        radius_graph(x, 1.0, periods=[None])
    with pytest.raises(ValueError, match="spans"):
        radius_graph(x * 100, 1.0, periods=[None, 1.0])
    with pytest.raises(ValueError, match="negative graph index"):
        radius_graph(x, 1.0, batch=torch.tensor([0, 0, -1, 1, 1]))
    with pytest.raises(ValueError, match="unknown backend"):
        radius_graph(x, 1.0, backend="kdtree")
    with pytest.raises(ValueError, match="max_num_neighbors"):
        radius_graph(x, 1.0, max_num_neighbors=0)
    with pytest.raises(ValueError, match="periodic"):
        radius_graph(x, 1.0, periods=[None, TWO_PI], backend="torch_cluster")
    if "torch_cluster" not in available_backends():
        with pytest.raises(ImportError, match="torch_cluster"):
            radius_graph(x, 1.0, backend="torch_cluster")


@pytest.mark.parametrize("backend", ["torch_cluster", "pyg_lib"])
def test_compiled_backends_give_identical_edges(backend):
    if backend == "torch_cluster" and os.environ.get("GNN_JEPA_REQUIRE_CLUSTER") == "1":
        import torch_cluster  # noqa: F401  (.ci/run builds it: it must not skip there)
    elif backend == "torch_cluster":
        pytest.importorskip("torch_cluster")
    elif backend not in available_backends():
        pytest.skip("pyg_lib radius not installed")
    g = torch.Generator().manual_seed(6)
    coords = torch.rand(400, 3, generator=g)
    batch = torch.randint(0, 2, (400,), generator=g)
    ref = radius_graph(coords, 0.15, batch=batch, backend="builtin")
    assert torch.equal(radius_graph(coords, 0.15, batch=batch, backend=backend), ref)
    assert torch.equal(radius_graph(coords, 0.15, batch=batch, backend="auto"), ref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(7)
    coords = torch.rand(3000, 3, generator=g)
    coords[:, 1] = coords[:, 1] * TWO_PI - math.pi
    periods = [None, TWO_PI, None]
    cpu = radius_graph(coords, 0.05, periods=periods, max_num_neighbors=6)
    gpu = radius_graph(coords.cuda(), 0.05, periods=periods, max_num_neighbors=6)
    assert gpu.device.type == "cuda"
    assert torch.equal(gpu.cpu(), cpu)


@pytest.mark.parametrize("chunk", [1, 50, 1 << 22])
def test_ragged_accelerator_path_on_cpu(monkeypatch, chunk):
    # The GPU code path (ragged expansion in chunks), forced on CPU.
    monkeypatch.setattr(radius_mod, "_use_steps", lambda device: False)
    for seed in (1, 2, 3):
        coords, r, periods, batch = random_case(seed)
        got = radius_pairs(coords, r, periods=periods, batch=batch, chunk_size=chunk)
        assert torch.equal(got, brute_pairs(coords, r, periods, batch))


@pytest.mark.parametrize("seed", range(6))
def test_unsorted_pairs_are_the_same_pairs(seed):
    coords, r, periods, batch = random_case(seed)
    ref = radius_pairs(coords, r, periods=periods, batch=batch)
    raw = radius_pairs(coords, r, periods=periods, batch=batch, sort=False)
    assert raw.shape == ref.shape
    lo, hi = raw.min(0).values, raw.max(0).values
    assert torch.equal(torch.unique(lo * coords.shape[0] + hi), ref[0] * coords.shape[0] + ref[1])
