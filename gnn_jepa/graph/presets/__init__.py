"""Graph-construction artifacts shipped with the package, referred to by name.

``BuildGraph(kind="learned", embedding="trackml", pair_filter="trackml_all_pt")`` loads
``trackml.pt`` and ``trackml_all_pt.json`` from this folder, so a config works from any
working directory and never downloads anything. Any other string is a file path.

Shipped (each file's metadata / config records how it was made; commands in the README):

* ``trackml.pt``: a :class:`~gnn_jepa.graph.metric_learning.HitEmbedding` trained on
  simulated ``trackml``-preset events (1,000 particles, all pT, eta in [-4, 4]).
* ``trackml_all_pt.json``: a :class:`~gnn_jepa.graph.pair_filter.LayerPairFilter` fitted
  on the true segments of *all* particles (pT > 0) of such events, so it keeps low-pT
  segments, which carry most of the TrackML score.
* ``trackml_pt1.pt`` / ``trackml_pt1.json``: an embedding trained on the true segments of
  pT > 1 GeV particles, and a filter fitted on them, at 10,000 particles per event (pileup
  ~200 scale). Tighter for high pT: at 10k particles radius 0.0316 keeps 99.2% of the
  pT > 1 segments at mean degree ~30, where the all-pT pair would need degree > 40. The
  GPU configs add the all-pT pair's edges to it (``BuildGraph(union=...)``), so low-pT
  segments are not lost.
* ``trackml_edges.pt``: an :class:`~gnn_jepa.graph.edge_filter.EdgeFilter` fitted on the
  graph ``trackml`` + ``trackml_all_pt`` at radius 0.13 of 1,000-particle events, for 99.5%
  of their true segments (``python -m studies.edge_filter.run``): on held-out events it
  thins that graph from mean degree 37.7 to 10.0, keeping 96.3% of all true segments
  (96.9% before) and a ceiling of 0.946 (0.960).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

__all__ = ["PRESET_DIR", "file_digest", "load_torch_artifact", "preset_names", "resolve_artifact"]

PRESET_DIR = Path(__file__).resolve().parent


def preset_names(suffix: str) -> list[str]:
    """Names of the shipped artifacts with file suffix ``suffix`` (e.g. ``".pt"``)."""
    return sorted(p.stem for p in PRESET_DIR.glob(f"*{suffix}"))


def resolve_artifact(name_or_path: str | Path, suffix: str) -> Path:
    """The file a config names: a shipped preset (a bare name, no folder and no suffix, that
    exists here) or otherwise a path, returned as given (loaders report a missing file)."""
    text = str(name_or_path)
    if "/" not in text and "\\" not in text and not Path(text).suffix:
        candidate = PRESET_DIR / f"{text}{suffix}"
        if candidate.is_file():
            return candidate
        raise FileNotFoundError(f"no shipped graph preset {text!r} (a bare name); shipped "
                                f"{suffix} presets: {preset_names(suffix)}; a file path "
                                f"needs a folder or a suffix")
    return Path(text)


def file_digest(path: str | Path) -> str:
    """First 12 hex digits of the file's SHA-256: cache keys change when the file does."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def load_torch_artifact(name_or_path: str | Path, format_tag: str, *, where: str,
                        what: str) -> tuple[dict, Path]:
    """Read a saved graph artifact (``.pt``, a shipped name or a path) whose dict carries
    ``"format": format_tag``; returns ``(the dict, the resolved path)``.

    Args:
        where: how messages name the caller (``"EdgeFilter.load"``).
        what: what the file should be (``"EdgeFilter"``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable torch file, or not one with that format tag.
    """
    path = resolve_artifact(name_or_path, ".pt")
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no file {str(path)!r}")
    try:
        blob = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise ValueError(f"{where}: {str(path)!r} is not a readable torch file "
                         f"({type(err).__name__}: {err})") from err
    check_format_tag(blob, format_tag, path, where=where, what=what)
    return blob, path


def check_format_tag(blob, format_tag: str, path: str | Path, *, where: str, what: str) -> None:
    """Raise ValueError unless ``blob`` is a dict whose ``"format"`` is ``format_tag`` (a saved
    artifact's marker; messages name the caller ``where``, the file and the expected ``what``)."""
    tag = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
    if tag != format_tag:
        raise ValueError(f"{where}: {str(path)!r} is not a saved {what} "
                         f"(format {tag!r}, expected {format_tag!r})")
