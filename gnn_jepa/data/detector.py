"""Detector geometry for the simulator: barrel cylinders and endcap disks in a solenoid.

Every sensitive surface is a thin cylinder centred on the beam (z) axis or a thin annular
disk perpendicular to it. Each carries a TrackML ``(volume_id, layer_id)`` pair, a material
budget ``x/X0`` (for multiple scattering) and a module segmentation (for ``module_id``).

The simulator works on one flat table of surfaces (:class:`SurfaceTable`): cylinders first,
then disks, in the order given to :class:`DetectorGeometry`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

CYLINDER = 0
DISK = 1


def pseudo_angle(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A monotone stand-in for ``atan2(y, x)``: the "diamond angle" in (-2, 2].

    ``y / (|x| + |y|)`` on the right half-plane, ``+-2 - y / (|x| + |y|)`` on the left;
    it increases with the azimuth like ``atan2`` (same order, same wrap at +-pi) at a
    fraction of the cost.
    """
    p = y / np.maximum(np.abs(x) + np.abs(y), 1e-300)
    return np.where(x >= 0, p, np.where(y >= 0, 2.0 - p, -2.0 - p))


@dataclass(frozen=True)
class Layer:
    """What every sensitive layer carries, whatever its shape (:class:`Cylinder`, :class:`Disk`).

    Attributes:
        volume_id: TrackML volume id.
        layer_id: TrackML layer id inside the volume.
        x_over_x0: material crossed at normal incidence, in radiation lengths.
        module_width: module size along r*phi in mm (sets the number of phi sectors; on a disk
            counted at the mean radius).
        module_length: module size along the layer's long coordinate in mm (z on a cylinder,
            r on a disk).
    """

    volume_id: int
    layer_id: int
    x_over_x0: float = 0.02
    module_width: float = 17.0
    module_length: float = 72.0


@dataclass(frozen=True)
class Cylinder(Layer):
    """A barrel layer: the surface ``r = radius, |z| <= half_length`` (mm), given by keyword:
    ``Cylinder(volume_id, layer_id, radius=..., half_length=...)``."""

    radius: float = field(kw_only=True)
    half_length: float = field(kw_only=True)


@dataclass(frozen=True)
class Disk(Layer):
    """An endcap layer: the annulus ``z = z, r_min <= r <= r_max`` (mm; ``z`` of either sign, one
    :class:`Disk` per side), given by keyword: ``Disk(volume_id, layer_id, z=..., r_min=...,
    r_max=...)``."""

    z: float = field(kw_only=True)
    r_min: float = field(kw_only=True)
    r_max: float = field(kw_only=True)


@dataclass(frozen=True)
class SurfaceTable:
    """All surfaces of a geometry as flat numpy arrays (index ``i`` = surface ``i``).

    Cylinders come first (``kind == CYLINDER``), then disks (``kind == DISK``). For a
    cylinder ``a = radius`` and ``b = half_length``; for a disk ``a = z``, ``(r_min, r_max)``.
    ``long_min``/``long_pitch``/``n_long`` segment the long coordinate (z on a cylinder,
    r on a disk); ``n_phi`` is the number of phi sectors. ``rank`` orders the surfaces by
    ``(volume_id, layer_id)``, the TrackML row order.
    """

    kind: np.ndarray
    volume_id: np.ndarray
    layer_id: np.ndarray
    x_over_x0: np.ndarray
    radius: np.ndarray
    half_length: np.ndarray
    z: np.ndarray
    r_min: np.ndarray
    r_max: np.ndarray
    n_phi: np.ndarray
    long_min: np.ndarray
    long_pitch: np.ndarray
    n_long: np.ndarray
    rank: np.ndarray
    area: np.ndarray

    def __len__(self) -> int:
        return len(self.kind)


#: The detector presets by name.
PRESETS = ("trackml", "toy2d")


@dataclass(frozen=True)
class DetectorGeometry:
    """A set of barrel cylinders and endcap disks in a uniform solenoid field along +z.

    Attributes:
        cylinders: barrel layers.
        disks: endcap layers (both signs of z listed explicitly).
        b_field: magnetic field in tesla (must be > 0; B points along +z).
        planar: if True the detector is a 2D slice at z = 0 (ToyTrack-like): the simulator
            forces eta = 0, vertex z = 0, no z smearing and in-plane scattering only, so every
            hit has z == 0. Only cylinders are allowed.
        name: a label (the preset name).
    """

    cylinders: tuple[Cylinder, ...]
    disks: tuple[Disk, ...] = ()
    b_field: float = 2.0
    planar: bool = False
    name: str = "custom"

    def __post_init__(self) -> None:
        object.__setattr__(self, "cylinders", tuple(self.cylinders))
        object.__setattr__(self, "disks", tuple(self.disks))
        if not self.cylinders and not self.disks:
            raise ValueError(f"geometry {self.name!r}: no surfaces")
        if not (math.isfinite(self.b_field) and self.b_field > 0):
            raise ValueError(f"geometry {self.name!r}: b_field must be a finite value > 0 T, "
                             f"got {self.b_field}")
        if self.planar and self.disks:
            raise ValueError(f"geometry {self.name!r}: a planar (z = 0) detector cannot have disks")
        for c in self.cylinders:
            if not (c.radius > 0 and c.half_length > 0):
                raise ValueError(f"geometry {self.name!r}: cylinder (volume {c.volume_id}, layer "
                                 f"{c.layer_id}) needs radius > 0 and half_length > 0, got "
                                 f"{c.radius}, {c.half_length}")
        for d in self.disks:
            if not (0 <= d.r_min < d.r_max) or d.z == 0:
                raise ValueError(f"geometry {self.name!r}: disk (volume {d.volume_id}, layer "
                                 f"{d.layer_id}) needs 0 <= r_min < r_max and z != 0, got "
                                 f"z={d.z}, r=({d.r_min}, {d.r_max})")
        for s in (*self.cylinders, *self.disks):
            if s.x_over_x0 < 0 or s.module_width <= 0 or s.module_length <= 0:
                raise ValueError(f"geometry {self.name!r}: surface (volume {s.volume_id}, layer "
                                 f"{s.layer_id}) needs x_over_x0 >= 0 and module sizes > 0")
        keys = [(s.volume_id, s.layer_id) for s in (*self.cylinders, *self.disks)]
        dup = {k for k in keys if keys.count(k) > 1}
        if dup:
            raise ValueError(f"geometry {self.name!r}: duplicate (volume_id, layer_id) "
                             f"{sorted(dup)}")

    @property
    def num_surfaces(self) -> int:
        return len(self.cylinders) + len(self.disks)

    @property
    def r_max(self) -> float:
        """Outermost sensitive radius in mm."""
        return max([c.radius for c in self.cylinders] + [d.r_max for d in self.disks])

    @property
    def z_max(self) -> float:
        """Largest |z| of any sensitive surface in mm."""
        return max([c.half_length for c in self.cylinders] + [abs(d.z) for d in self.disks])

    @cached_property
    def surfaces(self) -> SurfaceTable:
        """The flat :class:`SurfaceTable` (computed once)."""
        cyl, dsk = self.cylinders, self.disks
        nc, nd = len(cyl), len(dsk)

        def col(cvals, dvals, dtype=np.float64):
            return np.array(list(cvals) + list(dvals), dtype=dtype)

        nan_c, nan_d = [np.nan] * nc, [np.nan] * nd
        radius = col([c.radius for c in cyl], nan_d)
        half_length = col([c.half_length for c in cyl], nan_d)
        z = col(nan_c, [d.z for d in dsk])
        r_min = col(nan_c, [d.r_min for d in dsk])
        r_max = col(nan_c, [d.r_max for d in dsk])
        # Phi sectors: as many modules as fit around the (mean) circumference.
        circ = col([2 * math.pi * c.radius for c in cyl],
                   [math.pi * (d.r_min + d.r_max) for d in dsk])
        width = col([c.module_width for c in cyl], [d.module_width for d in dsk])
        n_phi = np.maximum(1, np.round(circ / width)).astype(np.int64)
        long_min = col([-c.half_length for c in cyl], [d.r_min for d in dsk])
        long_span = col([2 * c.half_length for c in cyl], [d.r_max - d.r_min for d in dsk])
        long_pitch = col([c.module_length for c in cyl], [d.module_length for d in dsk])
        n_long = np.maximum(1, np.ceil(long_span / long_pitch)).astype(np.int64)
        volume_id = col([c.volume_id for c in cyl], [d.volume_id for d in dsk], np.int64)
        layer_id = col([c.layer_id for c in cyl], [d.layer_id for d in dsk], np.int64)
        order = np.lexsort((layer_id, volume_id))
        rank = np.empty(nc + nd, dtype=np.int64)
        rank[order] = np.arange(nc + nd)
        if self.planar:
            # a planar detector is the z = 0 slice: its "area" is the circumference
            area = col([2 * math.pi * c.radius for c in cyl], [])
        else:
            area = col([4 * math.pi * c.radius * c.half_length for c in cyl],
                       [math.pi * (d.r_max ** 2 - d.r_min ** 2) for d in dsk])
        return SurfaceTable(
            kind=np.array([CYLINDER] * nc + [DISK] * nd, dtype=np.int64),
            volume_id=volume_id, layer_id=layer_id,
            x_over_x0=col([c.x_over_x0 for c in cyl], [d.x_over_x0 for d in dsk]),
            radius=radius, half_length=half_length, z=z, r_min=r_min, r_max=r_max,
            n_phi=n_phi, long_min=long_min, long_pitch=long_pitch, n_long=n_long,
            rank=rank, area=area,
        )

    def module_id(self, surface: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray,
                  angle: np.ndarray | None = None) -> np.ndarray:
        """Deterministic module number (from 1) of points on the given surfaces.

        ``module_id = 1 + i_long * n_phi + i_phi`` where ``i_phi`` is the phi sector
        (``floor((phi + pi) / 2pi * n_phi)``) and ``i_long`` the bin of the long coordinate
        (z on a cylinder, r on a disk), both clipped to the surface. The sector comes from
        :func:`pseudo_angle` and a per-surface lookup table (exact, no arctangent);
        ``angle`` may pass ``pseudo_angle(x, y)`` when already known.
        """
        st = self.surfaces
        surface = np.asarray(surface, dtype=np.int64)
        if angle is None:
            angle = pseudo_angle(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
        sec, bnd, g = self._sector_lut
        cell = np.minimum(((angle + 2.0) * (g / 4.0)).astype(np.int64), g - 1)
        cell += surface * g
        i_phi = sec[cell]
        i_phi += angle >= bnd[cell]
        if self._segmented:
            n_phi = st.n_phi[surface]
            along = (np.where(st.kind[surface] == DISK, np.sqrt(x * x + y * y), z)
                     if self.disks else z)
            i_long = np.floor((along - st.long_min[surface]) / st.long_pitch[surface])
            i_long = np.clip(i_long, 0, st.n_long[surface] - 1).astype(np.int64)
            i_phi += i_long * n_phi
        i_phi += 1
        return i_phi

    @cached_property
    def _sector_lut(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Phi-sector lookup on a uniform grid of ``g`` cells of :func:`pseudo_angle` per
        surface: ``sector = sec[cell] + (angle >= bnd[cell])``. Cells are narrower than
        half the narrowest sector (the pseudo-angle stretches angles by at most 2), so a
        cell holds at most one sector boundary, ``bnd`` (+inf if none)."""
        st = self.surfaces
        g = 4 * int(st.n_phi.max())
        lo = -2.0 + 4.0 * np.arange(g) / g
        hi = -2.0 + 4.0 * np.arange(1, g + 1) / g
        sec = np.zeros((len(st), g), dtype=np.int64)
        bnd = np.full((len(st), g), np.inf)
        for s, n in enumerate(st.n_phi):
            phi_k = -math.pi + 2.0 * math.pi * np.arange(1, n) / n  # interior boundaries
            b = pseudo_angle(np.cos(phi_k), np.sin(phi_k))
            j = np.searchsorted(b, lo, side="right")
            sec[s] = j
            inside = j < len(b)
            nxt = b[np.minimum(j, max(len(b) - 1, 0))] if len(b) else np.full(g, np.inf)
            bnd[s] = np.where(inside & (nxt < hi), nxt, np.inf)
        return sec.ravel(), bnd.ravel(), g

    @cached_property
    def _segmented(self) -> bool:
        return bool((self.surfaces.n_long > 1).any())

    def surface_index(self, volume_id: np.ndarray, layer_id: np.ndarray) -> np.ndarray:
        """Surface index of each ``(volume_id, layer_id)`` pair; -1 where none matches."""
        st = self.surfaces
        key = np.asarray(volume_id, dtype=np.int64) * 100_000 + np.asarray(layer_id, dtype=np.int64)
        skey = st.volume_id * 100_000 + st.layer_id
        order = np.argsort(skey)
        pos = np.clip(np.searchsorted(skey[order], key), 0, len(skey) - 1)
        idx = order[pos]
        return np.where(skey[idx] == key, idx, -1)

    def distance_to_surface(self, surface: np.ndarray, x: np.ndarray, y: np.ndarray,
                            z: np.ndarray) -> np.ndarray:
        """Euclidean distance in mm from points to their (bounded) surfaces; 0 on the surface."""
        st = self.surfaces
        surface = np.asarray(surface, dtype=np.int64)
        r = np.hypot(x, y)
        is_disk = st.kind[surface] == DISK
        # cylinder: radial offset and overshoot beyond the half-length
        c_out = np.maximum(np.abs(z) - np.nan_to_num(st.half_length[surface]), 0.0)
        c_dist = np.hypot(r - np.nan_to_num(st.radius[surface]), c_out)
        # disk: z offset and overshoot outside [r_min, r_max]
        d_out = np.maximum(np.nan_to_num(st.r_min[surface]) - r, 0.0) + \
            np.maximum(r - np.nan_to_num(st.r_max[surface]), 0.0)
        d_dist = np.hypot(z - np.nan_to_num(st.z[surface]), d_out)
        return np.where(is_disk, d_dist, c_dist)

    @classmethod
    def preset(cls, name: str) -> "DetectorGeometry":
        """A named geometry: ``"trackml"`` or ``"toy2d"`` (see :func:`trackml_geometry`,
        :func:`toy2d_geometry`)."""
        if name == "trackml":
            return trackml_geometry()
        if name == "toy2d":
            return toy2d_geometry()
        raise ValueError(f"unknown detector preset {name!r}; choose from {list(PRESETS)}")


#: TrackML-like barrel: (radii, half-length, volume_id, x/X0, module width, module length).
_TRACKML_BARRELS = (
    ((32.0, 72.0, 116.0, 172.0), 491.0, 8, 0.02, 17.0, 72.0),        # pixel
    ((260.0, 360.0, 500.0, 660.0), 1080.0, 13, 0.03, 48.0, 108.0),   # short strips
    ((820.0, 1020.0), 1080.0, 17, 0.03, 48.0, 108.0),                # long strips
)
#: TrackML-like endcaps: (|z| list, r_min, r_max, volume_id at -z, volume_id at +z, x/X0,
#: module sizes).
_TRACKML_ENDCAPS = (
    ((600.0, 700.0, 820.0, 960.0, 1100.0, 1300.0, 1500.0), 30.0, 175.0, 7, 9, 0.02, 17.0, 72.0),
    ((1220.0, 1500.0, 1800.0, 2150.0, 2550.0, 2950.0), 230.0, 700.0, 12, 14, 0.03, 48.0, 108.0),
    ((1220.0, 1500.0, 1800.0, 2150.0, 2550.0, 2950.0), 720.0, 1020.0, 16, 18, 0.03, 48.0, 108.0),
)


def trackml_geometry() -> DetectorGeometry:
    """The TrackML-like detector (B = 2 T).

    Barrel: pixel volume 8 (r = 32, 72, 116, 172 mm, |z| <= 491), short strips volume 13
    (r = 260, 360, 500, 660, |z| <= 1080) and long strips volume 17 (r = 820, 1020,
    |z| <= 1080); layer ids 2, 4, 6, ... outward. Endcaps on both sides: pixel volumes 7 (-z)
    and 9 (+z) at |z| = 600 ... 1500 with 30 <= r <= 175, strip volumes 12/14 (230-700 mm)
    and 16/18 (720-1020 mm) at |z| = 1220 ... 2950; layer ids 2, 4, ... increase with z, as
    in TrackML. Material: x/X0 = 0.02 per pixel layer, 0.03 per strip layer.
    """
    cylinders = []
    for radii, half, vol, x0, mw, ml in _TRACKML_BARRELS:
        for k, r in enumerate(radii):
            cylinders.append(Cylinder(vol, 2 * (k + 1), x0, mw, ml, radius=r, half_length=half))
    disks = []
    for zs, rmin, rmax, vol_neg, vol_pos, x0, mw, ml in _TRACKML_ENDCAPS:
        neg = sorted(-z for z in zs)  # layer ids increase with z on both sides
        for k, z in enumerate(neg):
            disks.append(Disk(vol_neg, 2 * (k + 1), x0, mw, ml, z=z, r_min=rmin, r_max=rmax))
        for k, z in enumerate(sorted(zs)):
            disks.append(Disk(vol_pos, 2 * (k + 1), x0, mw, ml, z=z, r_min=rmin, r_max=rmax))
    return DetectorGeometry(tuple(cylinders), tuple(disks), b_field=2.0, planar=False,
                            name="trackml")


def toy2d_geometry(num_layers: int = 10, r_min: float = 100.0,
                   r_max: float = 1000.0) -> DetectorGeometry:
    """A ToyTrack-like 2D barrel: ``num_layers`` equally spaced cylinders at z = 0 (B = 2 T).

    Radii run from ``r_min`` to ``r_max`` mm (default 100, 200, ..., 1000), volume 8, layer ids
    2, 4, ..., x/X0 = 0.02. The geometry is planar: every hit has z = 0.
    """
    if num_layers < 1 or not 0 < r_min <= r_max:
        raise ValueError(f"toy2d geometry needs num_layers >= 1 and 0 < r_min <= r_max, got "
                         f"{num_layers}, {r_min}, {r_max}")
    radii = np.linspace(r_min, r_max, num_layers) if num_layers > 1 else np.array([r_min])
    cylinders = tuple(Cylinder(8, 2 * (k + 1), 0.02, 20.0, 2000.0, radius=float(r), half_length=1000.0)
                      for k, r in enumerate(radii))
    return DetectorGeometry(cylinders, (), b_field=2.0, planar=True, name="toy2d")
