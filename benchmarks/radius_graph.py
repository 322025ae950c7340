"""Benchmark the exact radius graph: built-in sorted grid vs scipy cKDTree vs brute force.

Prints one JSON document. Points are simulated events (trackml preset: 1,000 particles
~ 10k hits, 10,000 particles ~ 100k hits), in two frames:

* ``cartesian_mm``: x, y, z in mm (60 mm at ~10k hits, 20 mm at ~100k: mean degree 20-40);
* the default graph frame (eta_phi, periodic phi; radius 0.09 at ~10k hits, 0.03 at ~100k:
  mean degree 20-35); cKDTree gets the same metric via ``boxsize`` (the period on phi, a
  box wider than twice the extent elsewhere).

Every backend is timed on the same float64 points and its pair set is checked identical to
cKDTree.query_pairs (and to a brute force at 10k). ``builtin_pairs_f64`` returns the pairs
sorted (``radius_pairs``); ``builtin_pairs_unsorted_f64`` (``sort=False``) returns them in no
particular order, as ``query_pairs`` does. Timings are the minimum and median of
``--repeat`` runs. CUDA timings (after warm-up, with torch.cuda.synchronize) are added when
a GPU is present, torch_cluster when installed.

    python -m benchmarks.radius_graph [--sizes 1000,10000] [--repeat 5] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import numpy as np
import torch
from scipy.spatial import cKDTree

from gnn_jepa.graph.frames import GraphFrame
from gnn_jepa.graph.radius import available_backends, radius_graph, radius_pairs
from gnn_jepa.graph.transform import DEFAULT_GRAPH


def event_points(particles: int, seed: int) -> tuple[torch.Tensor, str]:
    """Hit positions [N, 3] (mm, float64) of one simulated event, or cylinders as fallback."""
    try:
        from gnn_jepa.data.convert import event_to_data
        from gnn_jepa.data.simulator import Simulator
    except ImportError:  # simulator absent: points on the trackml barrel cylinders
        rng = np.random.default_rng(seed)
        n = particles * 9
        radii = np.array([32, 72, 116, 172, 260, 360, 500, 660, 820, 1020.0])
        r = radii[rng.integers(0, len(radii), n)]
        phi = rng.uniform(-np.pi, np.pi, n)
        z = rng.uniform(-1000, 1000, n)
        pts = np.stack([r * np.cos(phi), r * np.sin(phi), z], 1)
        return torch.from_numpy(pts), "cylinders"
    data = event_to_data(Simulator.from_preset("trackml", num_particles=particles).simulate(seed))
    return data.pos.double(), "simulator trackml"


def timed(fn, repeat: int, sync=None) -> tuple[object, list[float]]:
    out, times = None, []
    for _ in range(repeat):
        if sync:
            sync()
        t0 = time.perf_counter()
        out = fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return out, times


def summary(times: list[float]) -> dict:
    return {"min_ms": round(min(times) * 1e3, 2),
            "median_ms": round(statistics.median(times) * 1e3, 2)}


def pair_keys(pairs: np.ndarray, n: int) -> np.ndarray:
    """Sorted unique int64 keys of unordered pairs [M, 2]."""
    lo, hi = np.minimum(pairs[:, 0], pairs[:, 1]), np.maximum(pairs[:, 0], pairs[:, 1])
    return np.sort(lo.astype(np.int64) * n + hi)


def brute_pairs(coords: torch.Tensor, r: float, periods, rows: int = 512) -> np.ndarray:
    """All pairs i < j within r by dense distance blocks (same arithmetic as the search)."""
    n, d = coords.shape
    rt = torch.tensor(r, dtype=coords.dtype)
    r2 = rt * rt
    out = []
    for s in range(0, n, rows):
        blk = coords[s:s + rows]
        d2 = torch.zeros(blk.shape[0], n, dtype=coords.dtype)
        for k in range(d):
            delta = blk[:, None, k] - coords[None, :, k]
            if periods[k] is not None:
                delta = delta.abs()
                delta = torch.minimum(delta, torch.tensor(periods[k], dtype=coords.dtype) - delta)
            d2 += delta * delta
        i, j = (d2 <= r2).nonzero(as_tuple=True)
        i = i + s
        keep = i < j
        out.append(torch.stack([i[keep], j[keep]], 1))
    return torch.cat(out).numpy()


def kdtree_input(coords: np.ndarray, periods) -> tuple[np.ndarray, np.ndarray | None]:
    """Shift into [0, L) boxes: periodic dims use their period, open dims a box > 2 extent."""
    if all(p is None for p in periods):
        return coords, None
    lo = coords.min(0)
    shifted = coords - lo
    box = []
    for k, p in enumerate(periods):
        if p is None:
            box.append(2.0 * (shifted[:, k].max() + 1.0) + 1.0)
        else:
            shifted[:, k] = np.mod(coords[:, k], p)
            box.append(p)
    return shifted, np.array(box)


def bench_case(coords: torch.Tensor, r: float, periods, repeat: int, brute: bool) -> dict:
    n = coords.shape[0]
    c64 = coords.double()
    kd_pts, box = kdtree_input(c64.numpy().copy(), periods)

    def kd():
        return cKDTree(kd_pts, boxsize=box).query_pairs(r, output_type="ndarray")

    ref_pairs, t_kd = timed(kd, repeat)
    ref = pair_keys(ref_pairs, n)
    res = {"num_points": n, "radius": r, "num_pairs": int(len(ref)),
           "mean_degree": round(2 * len(ref) / n, 2),
           "scipy_ckdtree_query_pairs": summary(t_kd)}

    def check(pairs: torch.Tensor) -> bool:
        return bool(np.array_equal(pair_keys(pairs.t().cpu().numpy(), n), ref))

    got, t = timed(lambda: radius_pairs(c64, r, periods=periods, backend="builtin"), repeat)
    res["builtin_pairs_f64"] = {**summary(t), "identical_to_ckdtree": check(got)}
    # like query_pairs' ndarray: each pair once, in no particular order (what BuildGraph uses)
    got, t = timed(lambda: radius_pairs(c64, r, periods=periods, backend="builtin", sort=False),
                   repeat)
    res["builtin_pairs_unsorted_f64"] = {**summary(t), "identical_to_ckdtree": check(got)}
    _, t = timed(lambda: radius_graph(c64, r, periods=periods, backend="builtin"), repeat)
    res["builtin_graph_f64"] = summary(t)  # both directions, sorted: what training uses
    c32 = coords.float()
    got32, t = timed(lambda: radius_pairs(c32, r, periods=periods, backend="builtin"), repeat)
    k32 = pair_keys(got32.t().numpy(), n)
    res["builtin_pairs_f32"] = {**summary(t), "pairs_differing_from_f64": int(
        len(np.setxor1d(k32, ref, assume_unique=True)))}
    res["speedup_builtin_f64_vs_ckdtree_min"] = round(
        res["scipy_ckdtree_query_pairs"]["min_ms"] / res["builtin_pairs_f64"]["min_ms"], 2)
    res["speedup_builtin_unsorted_f64_vs_ckdtree_min"] = round(
        res["scipy_ckdtree_query_pairs"]["min_ms"] / res["builtin_pairs_unsorted_f64"]["min_ms"], 2)
    if brute:
        bp, t = timed(lambda: brute_pairs(c64, r, periods), 1)
        res["brute_force"] = {**summary(t), "identical_to_ckdtree": bool(
            np.array_equal(pair_keys(bp, n), ref))}
    if "torch_cluster" in available_backends() and all(p is None for p in periods):
        got, t = timed(lambda: radius_pairs(c64, r, backend="torch_cluster"), repeat)
        res["torch_cluster_pairs_f64"] = {**summary(t), "identical_to_ckdtree": check(got)}
    if torch.cuda.is_available():
        g32 = coords.float().cuda()
        g64 = c64.cuda()
        sync = torch.cuda.synchronize
        for _ in range(3):  # warm-up: kernels, allocator
            radius_graph(g32, r, periods=periods)
        got, t = timed(lambda: radius_pairs(g64, r, periods=periods), repeat, sync)
        res["cuda_pairs_f64"] = {**summary(t), "identical_to_ckdtree": check(got)}
        _, t = timed(lambda: radius_pairs(g32, r, periods=periods), repeat, sync)
        res["cuda_pairs_f32"] = summary(t)
        _, t = timed(lambda: radius_graph(g32, r, periods=periods), repeat, sync)
        res["cuda_graph_f32"] = summary(t)
    return res


def profile_cuda(coords: torch.Tensor, r: float, periods) -> None:
    """Kernel and host time of one CUDA radius_graph, to stderr (where the time goes)."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        radius_graph(coords, r, periods=periods)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        radius_graph(coords, r, periods=periods)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25), file=sys.stderr)
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=15), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,10000", help="particles per event (comma list)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--cartesian-radius", type=float, default=None,
                   help="mm; default: chosen for mean degree ~20 at each size")
    p.add_argument("--cuda-profile", action="store_true",
                   help="print a torch.profiler table of one CUDA radius_graph (largest size)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    frame = GraphFrame(DEFAULT_GRAPH["kind"], w_eta=DEFAULT_GRAPH["w_eta"],
                       w_phi=DEFAULT_GRAPH["w_phi"], w_r=DEFAULT_GRAPH["w_r"])
    out = {"host": platform.node(), "machine": platform.machine(), "torch": torch.__version__,
           "torch_threads": torch.get_num_threads(),
           "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
           "backends": available_backends(), "cases": []}
    for particles in [int(s) for s in args.sizes.split(",")]:
        pos, source = event_points(particles, args.seed)
        n = pos.shape[0]
        brute = n <= 20_000
        # Radii for a mean degree of 20-40 (measured on this preset): hit density grows
        # with the event, so the radius shrinks from ~10k to ~100k hits.
        small = n < 30_000
        r_mm = args.cartesian_radius or (60.0 if small else 20.0)
        r_frame = DEFAULT_GRAPH["radius"] if small else 0.03
        case = {"particles": particles, "points": source, "frame": "cartesian_mm",
                **bench_case(pos, r_mm, [None] * 3, args.repeat, brute)}
        out["cases"].append(case)
        coords = frame.coords(pos)
        case = {"particles": particles, "points": source, "frame": repr(frame),
                **bench_case(coords, r_frame, frame.periods, args.repeat, brute)}
        out["cases"].append(case)
        print(json.dumps(out["cases"][-2:], indent=1), file=sys.stderr, flush=True)
        if args.cuda_profile and torch.cuda.is_available():
            profile_cuda(coords.float().cuda(), r_frame, frame.periods)
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
