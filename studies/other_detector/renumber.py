"""Give simulated TrackML-format events another detector's numbering, in place.

    python -m studies.other_detector.renumber FOLDER [--keep-weights]

The 10 barrel layers become volume 1, layers 1..10 by radius; the disks at z < 0 volume 2 and
those at z > 0 volume 3, layers 1.. by |z| (then r_min). Unless ``--keep-weights``, the truth
``weight`` column is set to 0, as in files whose producer left it empty. What stays is the
geometry, so a graph fitted to these events (``gnn-jepa fit-graph``) can be judged against the
simulator's own: the shipped presets know only the simulator's (volume, layer) numbers.
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from gnn_jepa.data.detector import trackml_geometry
from gnn_jepa.data.trackml import list_events, read_event, write_event
from gnn_jepa.data.weights import ComputedWeightsWarning


def layer_map() -> dict[tuple[int, int], tuple[int, int]]:
    """(volume_id, layer_id) of the simulator's trackml preset -> the other numbering."""
    geo = trackml_geometry()
    new = {(c.volume_id, c.layer_id): (1, k + 1)
           for k, c in enumerate(sorted(geo.cylinders, key=lambda c: c.radius))}
    for vol, side in ((2, -1), (3, 1)):
        disks = sorted((d for d in geo.disks if np.sign(d.z) == side), key=lambda d: (abs(d.z), d.r_min))
        new.update({(d.volume_id, d.layer_id): (vol, k + 1) for k, d in enumerate(disks)})
    return new


def renumber(folder: Path, zero_weights: bool = True) -> int:
    """Rewrite every event of ``folder``; returns the number of events."""
    new = layer_map()
    events = list_events(folder)
    for prefix in events:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ComputedWeightsWarning)
            ev = read_event(prefix)
        ids = np.array([new[(v, lay)] for v, lay in zip(ev.hits.volume_id, ev.hits.layer_id)])
        ev.hits["volume_id"], ev.hits["layer_id"] = ids[:, 0], ids[:, 1]
        if zero_weights:
            ev.truth["weight"] = 0.0
        write_event(ev, prefix)
    return len(events)


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--keep-weights", action="store_true")
    args = p.parse_args(argv)
    n = renumber(args.folder, zero_weights=not args.keep_weights)
    print(f"renumbered {n} events in {args.folder}" + ("" if args.keep_weights else ", weights set to 0"))


if __name__ == "__main__":
    main()
