"""Coordinate frames in which the radius graph is built.

A frame maps hit positions ``pos`` [N, 3] (x, y, z in mm) to weighted coordinates [N, D]
whose plain Euclidean distance (minimum image along phi) defines the graph:

============  ==========================================  =============================
kind          coordinates                                 periods
============  ==========================================  =============================
cartesian     ``(x, y, z) / scale``                       none
cylindrical   ``(w_r r, w_phi phi, w_z z)``               ``2 pi w_phi`` on phi
eta_phi       ``(w_eta eta, w_phi phi[, w_r r])``         ``2 pi w_phi`` on phi
============  ==========================================  =============================

with ``r = hypot(x, y)``, ``phi = atan2(y, x)`` in (-pi, pi], ``eta = asinh(z / r)`` from
:func:`gnn_jepa.geometry.cylindrical`. Every weight is a plain float so a frame is written
in YAML as ``{kind: eta_phi, w_eta: 1.0, w_phi: 1.0, w_r: 0.001}``. A weight of 0 drops
the ``r`` axis of the eta_phi frame (D = 2); other axes must have positive weights.
"""
from __future__ import annotations

import math

import torch

from gnn_jepa.geometry import check_positions, cylindrical

__all__ = ["FRAME_KINDS", "GraphFrame"]

FRAME_KINDS = ("cartesian", "cylindrical", "eta_phi")


class GraphFrame:
    """Weighted coordinates for the radius graph (see the module table).

    Args:
        kind: "cartesian", "cylindrical" or "eta_phi".
        scale: cartesian only: length unit in mm (coordinates are ``pos / scale``).
        w_r: weight of r in mm (cylindrical: default 1/1000, i.e. metres; eta_phi: default 0,
            meaning no r axis).
        w_phi: weight of phi in radians (cylindrical, eta_phi).
        w_z: weight of z in mm (cylindrical: default 1/1000).
        w_eta: weight of eta (eta_phi).
    """

    def __init__(self, kind: str = "eta_phi", *, scale: float = 1000.0,
                 w_r: float | None = None, w_phi: float = 1.0, w_z: float = 1e-3,
                 w_eta: float = 1.0) -> None:
        if kind not in FRAME_KINDS:
            raise ValueError(f"GraphFrame: unknown kind {kind!r}; choose from {FRAME_KINDS}")
        if w_r is None:
            w_r = 1e-3 if kind == "cylindrical" else 0.0
        self.kind = kind
        self.scale = float(scale)
        self.w_r = float(w_r)
        self.w_phi = float(w_phi)
        self.w_z = float(w_z)
        self.w_eta = float(w_eta)
        needed = {"cartesian": {"scale": self.scale},
                  "cylindrical": {"w_r": self.w_r, "w_phi": self.w_phi, "w_z": self.w_z},
                  "eta_phi": {"w_eta": self.w_eta, "w_phi": self.w_phi}}[kind]
        for name, value in needed.items():
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"GraphFrame({kind}): {name} must be finite and > 0, got {value}")
        if kind == "eta_phi" and (not math.isfinite(self.w_r) or self.w_r < 0):
            raise ValueError(f"GraphFrame(eta_phi): w_r must be finite and >= 0, got {self.w_r}")

    @property
    def dim(self) -> int:
        """Number of coordinates D."""
        if self.kind == "eta_phi":
            return 3 if self.w_r > 0 else 2
        return 3

    @property
    def periods(self) -> list[float | None]:
        """Per coordinate its period (``2 pi w_phi`` for phi) or None."""
        if self.kind == "cartesian":
            return [None, None, None]
        p = 2 * math.pi * self.w_phi
        if self.kind == "cylindrical":
            return [None, p, None]
        return [None, p] + ([None] if self.w_r > 0 else [])

    @property
    def axis_names(self) -> list[str]:
        """Name of each coordinate ("x", "r", "phi", ...)."""
        return {"cartesian": ["x", "y", "z"], "cylindrical": ["r", "phi", "z"],
                "eta_phi": ["eta", "phi", "r"][:self.dim]}[self.kind]

    def coords(self, pos: torch.Tensor) -> torch.Tensor:
        """Frame coordinates [N, D] of Cartesian positions ``pos`` [N, 3] (mm), same dtype."""
        check_positions(pos, "GraphFrame.coords")
        if self.kind == "cartesian":
            return pos / self.scale
        r, phi, z, eta = cylindrical(pos)
        if self.kind == "cylindrical":
            return torch.stack([self.w_r * r, self.w_phi * phi, self.w_z * z], 1)
        cols = [self.w_eta * eta, self.w_phi * phi]
        if self.w_r > 0:
            cols.append(self.w_r * r)
        return torch.stack(cols, 1)

    def to_dict(self) -> dict:
        """Constructor arguments (round-trips through ``GraphFrame(**d)``)."""
        return {"kind": self.kind, "scale": self.scale, "w_r": self.w_r, "w_phi": self.w_phi,
                "w_z": self.w_z, "w_eta": self.w_eta}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GraphFrame) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        args = {"cartesian": ["scale"], "cylindrical": ["w_r", "w_phi", "w_z"],
                "eta_phi": ["w_eta", "w_phi", "w_r"]}[self.kind]
        inner = ", ".join(f"{a}={getattr(self, a):g}" for a in args)
        return f"GraphFrame({self.kind!r}, {inner})"
