"""Rasterising analytic shapes onto a phantom grid, each only within its bounding box.

The phantom is modelled in an adult body frame (mm): ``x`` towards the patient's left, ``y``
posterior, ``z`` downwards from the vertex (``z = 0`` at the top of the head). A :class:`Grid`
places that frame on the voxel grid at its true size, the way a scanner's field of view does:
the body is centred in ``x`` and ``y``, the grid's top slice lies ``top_mm`` below the vertex
(10 mm above it by default), and what falls outside the grid is not imaged (a short grid keeps
the head and loses the thighs; a narrow one loses the flanks). Shapes are evaluated in their
bounding boxes only, which keeps a full-size phantom fast.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BODY_LENGTH_MM = 1000.0  # vertex to mid-thigh
BODY_HALF_WIDTH_MM = 200.0  # widest half-width of an average body with a margin (shoulders)
BODY_HALF_DEPTH_MM = 150.0
TOP_MM = -10.0  # default top of the field of view: 10 mm above the vertex


@dataclass(frozen=True)
class Grid:
    """Voxel grid (``(i, j, k)`` order, identity direction) and its map to the body frame."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    z_top: float  # body-frame z of the physical plane z = 0 (the top slice's centre)

    @classmethod
    def fit(cls, shape, spacing, top_mm: float = TOP_MM) -> Grid:
        """The field of view: centred on the body in x and y, top slice ``top_mm`` below the
        vertex, at the body's true size."""
        shape = tuple(int(n) for n in shape)
        spacing = tuple(float(s) for s in spacing)
        origin = (
            -(shape[0] - 1) / 2 * spacing[0],
            -(shape[1] - 1) / 2 * spacing[1],
            -(shape[2] - 1) * spacing[2],
        )
        return cls(shape, spacing, origin, float(top_mm))

    def covers(self, body_width: float = 1.0) -> dict[str, bool]:
        """Whether the field of view holds the whole body of habitus ``body_width`` along
        each direction (width, depth, vertex to mid-thigh)."""
        fov = [n * s for n, s in zip(self.shape, self.spacing, strict=True)]
        return {"width": fov[0] >= 2 * BODY_HALF_WIDTH_MM * body_width,
                "depth": fov[1] >= 2 * BODY_HALF_DEPTH_MM * body_width ** 1.1,
                "length": self.z_top <= 0 and self.z_top + fov[2] >= BODY_LENGTH_MM}

    # 1D body-frame coordinates of the voxel centres along each axis
    def axis(self, a: int) -> np.ndarray:
        phys = self.origin[a] + np.arange(self.shape[a]) * self.spacing[a]
        if a == 2:
            return (self.z_top - phys).astype(np.float32)
        return phys.astype(np.float32)

    def to_physical(self, ref: np.ndarray) -> np.ndarray:
        ref = np.asarray(ref, dtype=float)
        return np.stack([ref[..., 0], ref[..., 1], self.z_top - ref[..., 2]], axis=-1)

    def to_index(self, ref: np.ndarray) -> np.ndarray:
        phys = self.to_physical(ref)
        return (phys - np.asarray(self.origin)) / np.asarray(self.spacing)

    def to_ref(self, index: np.ndarray) -> np.ndarray:
        idx = np.asarray(index, dtype=float)
        phys = np.asarray(self.origin) + idx * np.asarray(self.spacing)
        return np.stack([phys[..., 0], phys[..., 1], self.z_top - phys[..., 2]], axis=-1)

    def box(self, lo_ref, hi_ref) -> tuple[slice, slice, slice] | None:
        """Index slices covering the reference-frame box [lo, hi], or None when outside."""
        a = self.to_index(np.asarray(lo_ref, dtype=float))
        b = self.to_index(np.asarray(hi_ref, dtype=float))
        lo = np.floor(np.minimum(a, b)).astype(int)
        hi = np.ceil(np.maximum(a, b)).astype(int) + 1
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, self.shape)
        if np.any(hi <= lo):
            return None
        return tuple(slice(int(l_), int(h)) for l_, h in zip(lo, hi, strict=True))  # type: ignore

    def coords(self, sl: tuple[slice, slice, slice]):
        """Broadcastable reference coordinates (x[:, None, None], y[None, :, None], z[..])."""
        x = self.axis(0)[sl[0]][:, None, None]
        y = self.axis(1)[sl[1]][None, :, None]
        z = self.axis(2)[sl[2]][None, None, :]
        return x, y, z



def rotation(angles: tuple[float, float, float]) -> np.ndarray:
    """Rotation matrix from three angles (radians) about x, y and z."""
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def ellipsoid_norm(grid: Grid, sl, center, radii, rot: np.ndarray | None = None) -> np.ndarray:
    """Squared ellipsoidal norm of every voxel of box ``sl`` (<= 1 inside)."""
    x, y, z = grid.coords(sl)
    dx, dy, dz = x - center[0], y - center[1], z - center[2]
    if rot is None:
        return (dx / radii[0]) ** 2 + (dy / radii[1]) ** 2 + (dz / radii[2]) ** 2
    r = np.asarray(rot, dtype=np.float32)
    out = 0.0
    for row in range(3):
        u = r[0, row] * dx + r[1, row] * dy + r[2, row] * dz
        out = out + (u / radii[row]) ** 2
    return out


def ellipsoid(grid: Grid, center, radii, rot: np.ndarray | None = None):
    """(slices, boolean mask) of an ellipsoid in the reference frame, or None when outside."""
    reach = float(max(radii)) if rot is not None else np.asarray(radii, dtype=float)
    c = np.asarray(center, dtype=float)
    sl = grid.box(c - reach, c + reach)
    if sl is None:
        return None
    mask = ellipsoid_norm(grid, sl, center, radii, rot) <= 1.0
    return sl, mask


def tube(grid: Grid, z_lo: float, z_hi: float, cx, cy, ax, ay):
    """(slices, mask) of a tube along z whose centre and half-axes are functions of z_ref.

    ``cx, cy, ax, ay`` are callables mapping an array of z_ref values to arrays.
    """
    zs = np.linspace(z_lo, z_hi, 64)
    reach_x = np.abs(cx(zs)) + ax(zs)
    reach_y = np.abs(cy(zs)) + ay(zs)
    xlo, xhi = float((cx(zs) - ax(zs)).min()), float(reach_x.max())
    ylo, yhi = float((cy(zs) - ay(zs)).min()), float(reach_y.max())
    sl = grid.box((xlo, ylo, z_lo), (xhi, yhi, z_hi))
    if sl is None:
        return None
    x, y, z = grid.coords(sl)
    zz = z[0, 0]
    inside = (zz >= z_lo) & (zz <= z_hi)
    a = np.maximum(ax(zz), 1e-3)[None, None, :]
    b = np.maximum(ay(zz), 1e-3)[None, None, :]
    mask = ((x - cx(zz)[None, None, :]) / a) ** 2 + ((y - cy(zz)[None, None, :]) / b) ** 2 <= 1
    mask &= inside[None, None, :]
    return sl, mask


def interp(table: list[tuple[float, float]]):
    """Piecewise-linear function of z_ref from (z, value) pairs."""
    zt = np.array([t[0] for t in table], dtype=float)
    vt = np.array([t[1] for t in table], dtype=float)
    return lambda z: np.interp(z, zt, vt).astype(np.float32)


def paint(regions: np.ndarray, shape_result, value: int, only=None) -> None:
    """Set ``value`` where the shape is, optionally only over the region ids in ``only``."""
    if shape_result is None:
        return
    sl, mask = shape_result
    view = regions[sl]
    if only is not None:
        mask = mask & np.isin(view, only)
    view[mask] = value
