"""Coordinate conventions shared by every stage (see DESIGN.md, "Physics conventions").

Units are mm, GeV and tesla. Cylindrical coordinates:
``r = hypot(x, y)``, ``phi = atan2(y, x)`` in ``(-pi, pi]``,
``eta = -ln tan(theta / 2) = asinh(z / r)``. Every phi difference wraps around +-pi.
"""
from __future__ import annotations

import math

import numpy as np
import torch

#: Conversion constant in R[mm] = PT_TO_RADIUS * pT[GeV] / B[T]  (R = pT / (0.3 B) in metres).
PT_TO_RADIUS = 1000.0 / 0.3


def helix_radius(pt, b_field: float):
    """Transverse radius of curvature in mm of a unit-charge track: R = 1000 pT / (0.3 B)."""
    return PT_TO_RADIUS * pt / b_field


def wrap_phi(dphi):
    """Wrap an angle (numpy array or tensor) into ``(-pi, pi]``."""
    if isinstance(dphi, torch.Tensor):
        out = torch.remainder(dphi + math.pi, 2 * math.pi) - math.pi
        return torch.where(out <= -math.pi, out + 2 * math.pi, out)
    out = np.remainder(np.asarray(dphi) + np.pi, 2 * np.pi) - np.pi
    return np.where(out <= -np.pi, out + 2 * np.pi, out)


def check_positions(pos, where: str) -> None:
    """Raise ``ValueError`` (naming ``where``) unless ``pos`` is a floating [N, 3] tensor of
    x, y, z in mm."""
    if not isinstance(pos, torch.Tensor) or pos.dim() != 2 or pos.shape[1] != 3:
        shape = tuple(pos.shape) if isinstance(pos, torch.Tensor) else type(pos).__name__
        raise ValueError(f"{where}: pos must be [N, 3] (x, y, z in mm), got {shape}")
    if not pos.is_floating_point():
        raise ValueError(f"{where}: pos must be floating point, got {pos.dtype}")


def cylindrical(pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(r, phi, z, eta)`` of Cartesian positions ``pos`` [N, 3] (tensor)."""
    x, y, z = pos.unbind(-1)
    r = torch.hypot(x, y)
    phi = torch.atan2(y, x)
    # asinh(z / r) is eta for a point seen from the origin; r == 0 only on the beam axis.
    eta = torch.asinh(z / r.clamp_min(1e-6))
    return r, phi, z, eta


def cylindrical_np(x, y, z):
    """numpy version of :func:`cylindrical` taking separate coordinate arrays."""
    r = np.hypot(x, y)
    phi = np.arctan2(y, x)
    eta = np.arcsinh(z / np.maximum(r, 1e-6))
    return r, phi, z, eta
