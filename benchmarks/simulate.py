"""Simulator throughput in hits per second: gnn_jepa's simulator vs ToyTrack 0.1.23.

Both run on the same machine in interleaved rounds (ours, then ToyTrack in a subprocess,
repeated), so that a background load hits both alike. Reported per event: wall time
(median and best) and the thread's CPU time (median), which other processes sharing the
cores do not inflate; speedups are given for all three. ToyTrack pins numpy<2, so it lives
in its own virtual environment (created on first use under ``benchmarks/.toytrack-venv``
with ``pip install toytrack==0.1.23``). Timing covers one whole event each: particles,
propagation, hits and truth tables (``EventGenerator.generate_event`` for ToyTrack,
``Simulator.simulate`` for us).

Comparable setup: ToyTrack's 2D barrel of 10 layers at r = 0.3 ... 3 (its length unit),
pT in [2, 20] (its curvature radius equals pT in that unit), vertex uniform in
[-0.1, 0.1]^2, no noise, no holes. Ours: the ``toy2d`` preset (10 layers at
r = 100 ... 1000 mm, B = 2 T) with pT uniform in [0.4, 4] GeV, i.e. the same curvature
radius / outer radius ratio, a Gaussian vertex of the same RMS, no scattering, smearing,
noise or holes. Every particle crosses all 10 layers in both.

Usage::

    python -m benchmarks.simulate                 # JSON on stdout (progress on stderr)
    python -m benchmarks.simulate --no-toytrack   # ours only
    python -m benchmarks.simulate --particles 100 --rounds 1 --repeats 1 --trackml-particles 0
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from gnn_jepa.data.simulator import Simulator

TOYTRACK_VERSION = "0.1.23"
DEFAULT_VENV = Path(__file__).resolve().parent / ".toytrack-venv"
# ToyTrack units: layers at 0.3 ... 3, curvature radius = pT in [2, 20].
TT_RMIN, TT_RMAX, TT_PT = 0.3, 3.0, (2.0, 20.0)
# The same geometry in mm: scale 1000 / 3; R = 1000 pT / (0.3 B) -> pT = R * 0.3 * 2 / 1000.
MM_PER_TT = 1000.0 / TT_RMAX
OUR_PT = tuple(round(r * MM_PER_TT * 0.3 * 2.0 / 1000.0, 9) for r in TT_PT)  # (0.4, 4.0) GeV
OUR_VERTEX_SIGMA = 0.1 / 3 ** 0.5 * MM_PER_TT  # RMS of uniform [-0.1, 0.1], in mm

TOYTRACK_WORKER = r"""
import json, sys, time
import numpy as np
from toytrack import Detector, EventGenerator, ParticleGun
args = json.loads(sys.argv[1])
det = Detector(dimension=2).add_from_template(
    "barrel", min_radius=args["rmin"], max_radius=args["rmax"], number_of_layers=10)
np.random.seed(args["seed"])
out = {}
for n in args["particles"]:
    gun = ParticleGun(num_particles=n, pt=list(args["pt"]), pphi=[-np.pi, np.pi],
                      vx=[-0.1, 0.1], vy=[-0.1, 0.1], dimension=2)
    gen = EventGenerator(gun, det, noise=None)
    gen.generate_event()  # warm-up
    times, cpu, hits = [], [], []
    for _ in range(args["repeats"]):
        t0, c0 = time.perf_counter(), time.thread_time()
        ev = gen.generate_event()
        cpu.append(time.thread_time() - c0)
        times.append(time.perf_counter() - t0)
        hits.append(len(ev.hits))
    out[str(n)] = {"times": times, "cpu": cpu, "hits": hits}
print(json.dumps(out))
"""


def ensure_toytrack_venv(venv: Path) -> Path:
    """Python of a venv holding toytrack==0.1.23 (created if missing)."""
    py = venv / "bin" / "python"
    probe = [str(py), "-c", "import importlib.metadata as m; print(m.version('toytrack'))"]
    if py.exists():
        res = subprocess.run(probe, capture_output=True, text=True)
        if res.returncode == 0 and res.stdout.strip() == TOYTRACK_VERSION:
            return py
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True,
                   stdout=sys.stderr)
    subprocess.run([str(py), "-m", "pip", "install", "-q", f"toytrack=={TOYTRACK_VERSION}"],
                   check=True, stdout=sys.stderr)
    return py


def run_toytrack(py: Path, particles: list[int], repeats: int, seed: int) -> dict:
    args = dict(particles=particles, repeats=repeats, seed=seed, rmin=TT_RMIN, rmax=TT_RMAX,
                pt=TT_PT)
    res = subprocess.run([str(py), "-c", TOYTRACK_WORKER, json.dumps(args)], capture_output=True,
                         text=True)
    if res.returncode != 0:
        raise RuntimeError(f"ToyTrack worker failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def comparable_simulator(n: int) -> Simulator:
    return Simulator.from_preset(
        "toy2d", num_particles=n, poisson=False, pt_spectrum="uniform", pt_min=OUR_PT[0],
        pt_max=OUR_PT[1], vertex_sigma_xy=OUR_VERTEX_SIGMA, vertex_sigma_z=0.0,
        multiple_scattering=False, resolution_rphi=0.0, resolution_z=0.0, noise_fraction=0.0,
        hit_efficiency=1.0)


def time_ours(sim: Simulator, repeats: int, seed: int) -> dict:
    sim.simulate(seed)  # warm-up
    times, cpu, hits = [], [], []
    for i in range(repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        ev = sim.simulate(seed + 1 + i)
        cpu.append(time.thread_time() - c0)
        times.append(time.perf_counter() - t0)
        hits.append(len(ev.hits))
    return {"times": times, "cpu": cpu, "hits": hits}


def summarise(runs: list[dict]) -> dict:
    """Per-event wall time (median, best) and thread CPU time (median; unaffected by other
    processes taking turns on the cores), as seconds and as hits per second."""
    times = [t for r in runs for t in r["times"]]
    cpu = [t for r in runs for t in r["cpu"]]
    hits = [h for r in runs for h in r["hits"]]
    mean_hits = statistics.fmean(hits)
    med, best, cpu_med = statistics.median(times), min(times), statistics.median(cpu)
    return {"events": len(times), "mean_hits": round(mean_hits, 1),
            "median_s": med, "min_s": best, "cpu_median_s": cpu_med,
            "hits_per_s_median": mean_hits / med, "hits_per_s_best": mean_hits / best,
            "hits_per_s_cpu": mean_hits / cpu_med}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-toytrack", action="store_true", help="skip ToyTrack (no venv needed)")
    ap.add_argument("--particles", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (ours, ToyTrack)")
    ap.add_argument("--repeats", type=int, default=5, help="events per size and round")
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trackml-particles", type=int, default=10000,
                    help="also time the trackml preset at this Poisson mean (0: skip)")
    ap.add_argument("--out", type=Path, help="also write the JSON to this file")
    args = ap.parse_args(argv)

    tt_py = None if args.no_toytrack else ensure_toytrack_venv(args.venv)
    load_before = os.getloadavg()
    ours = {n: [] for n in args.particles}
    ours_full = {n: [] for n in args.particles}
    toytrack = {n: [] for n in args.particles}
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
        seed = args.seed + 1000 * r
        for n in args.particles:
            ours[n].append(time_ours(comparable_simulator(n), args.repeats, seed))
            full = Simulator.from_preset("toy2d", num_particles=n, poisson=False)
            ours_full[n].append(time_ours(full, args.repeats, seed))
        if tt_py is not None:
            res = run_toytrack(tt_py, args.particles, args.repeats, seed)
            for n in args.particles:
                toytrack[n].append(res[str(n)])
    trackml = []
    if args.trackml_particles > 0:
        sim = Simulator.from_preset("trackml", num_particles=args.trackml_particles)
        trackml = [time_ours(sim, args.repeats, args.seed + 1000 * r) for r in range(args.rounds)]

    cases = []
    for n in args.particles:
        case = {"particles": n,
                "ours_comparable": summarise(ours[n]),
                "ours_toy2d_all_effects": summarise(ours_full[n])}
        if tt_py is not None:
            case["toytrack"] = summarise(toytrack[n])
            case["speedup_median"] = (case["ours_comparable"]["hits_per_s_median"]
                                      / case["toytrack"]["hits_per_s_median"])
            case["speedup_best"] = (case["ours_comparable"]["hits_per_s_best"]
                                    / case["toytrack"]["hits_per_s_best"])
            case["speedup_cpu"] = (case["ours_comparable"]["hits_per_s_cpu"]
                                   / case["toytrack"]["hits_per_s_cpu"])
        cases.append(case)
    result = {
        "benchmark": "simulator hits per second (whole events)",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    # other work on the machine slows both simulators, not always alike
                    "loadavg_1min_before_after": [load_before[0], os.getloadavg()[0]]},
        "toytrack_version": None if tt_py is None else TOYTRACK_VERSION,
        "setup": {"ours_comparable": f"toy2d, pT uniform {OUR_PT} GeV, vertex sigma "
                                     f"{OUR_VERTEX_SIGMA:.1f} mm, no MS/smearing/noise/holes",
                  "ours_toy2d_all_effects": "toy2d with the default SimulatorConfig effects "
                                            "(MS, smearing, 2% holes, 5% noise, power-law pT)",
                  "toytrack": f"barrel 10 layers r={TT_RMIN}..{TT_RMAX}, pt={list(TT_PT)}, "
                              "vertex uniform +-0.1, no noise",
                  "trackml": f"trackml preset, Poisson mean {args.trackml_particles} particles "
                             "(10000: pileup-200-like), default effects"},
        "rounds": args.rounds, "repeats": args.repeats,
        "cases": cases,
        "trackml": summarise(trackml) if trackml else None,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
