"""nnU-Net's export resampling, separable and computable on any box of the output.

nnU-Net brings a prediction back to the image grid with ``resample_data_or_seg_to_shape``
(``order=1``, ``order_z=0``): linear interpolation along every axis (``skimage`` ``resize``,
``mode='edge'``, no anti-aliasing: output voxel ``o`` reads input coordinate
``(o + 0.5) * n_in / n_out - 0.5``, clamped at the edges), or, where the spacing is anisotropic
enough to resample the slice axis separately, nearest-neighbour along that axis. Both are
separable, so an output voxel depends on at most two input voxels per axis.

:class:`AxisPlan` holds the two source indices and the weight of every output index along one
axis; :func:`resample_box` evaluates the same arithmetic for any box of the output, so a box
computed alone is bit for bit the box of the whole (the engine re-exports only what a click
changed). :func:`input_box` says which input voxels a box reads, :func:`output_box` which output
voxels an input box reaches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Box = tuple[tuple[int, int], ...]  # per axis [lo, hi)


@dataclass(frozen=True)
class AxisPlan:
    i0: np.ndarray  # per output index: the lower source index
    i1: np.ndarray  # the upper source index
    w: np.ndarray  # float32 weight of i1

    @classmethod
    def make(cls, n_in: int, n_out: int, order: int) -> AxisPlan:
        o = np.arange(n_out, dtype=np.float64)
        if n_in == n_out:
            idx = o.astype(np.int64)
            return cls(idx, idx, np.zeros(n_out, dtype=np.float32))
        c = (o + 0.5) * (n_in / n_out) - 0.5
        if order == 0:
            idx = np.clip(np.floor(c + 0.5), 0, n_in - 1).astype(np.int64)
            return cls(idx, idx, np.zeros(n_out, dtype=np.float32))
        if order != 1:
            raise ValueError(f"only orders 0 and 1 are separable here, got {order}")
        f = np.floor(c)
        w = (c - f).astype(np.float32)
        i0 = np.clip(f, 0, n_in - 1).astype(np.int64)
        i1 = np.clip(f + 1, 0, n_in - 1).astype(np.int64)
        return cls(i0, i1, w)


def union_box(boxes) -> Box | None:
    """The smallest box holding every box given (None ones left out); None if there is none."""
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return None
    return tuple((min(int(b[a][0]) for b in boxes), max(int(b[a][1]) for b in boxes))
                 for a in range(len(boxes[0])))


def plans_for(shape_in, shape_out, orders) -> tuple[AxisPlan, ...]:
    return tuple(AxisPlan.make(int(a), int(b), int(o))
                 for a, b, o in zip(shape_in, shape_out, orders, strict=True))


def input_box(plans, box: Box) -> Box:
    """The input voxels the output ``box`` reads."""
    return tuple((int(p.i0[lo:hi].min()), int(p.i1[lo:hi].max()) + 1)
                 for p, (lo, hi) in zip(plans, box, strict=True))


def output_box(plans, box: Box) -> Box | None:
    """The output voxels that read any input voxel of ``box`` (None: no output voxel does)."""
    out = []
    for p, (lo, hi) in zip(plans, box, strict=True):
        hit = np.nonzero(((p.i0 >= lo) & (p.i0 < hi)) | ((p.i1 >= lo) & (p.i1 < hi)))[0]
        if hit.size == 0:
            return None
        out.append((int(hit[0]), int(hit[-1]) + 1))
    return tuple(out)


def resample_box(data: np.ndarray, plans, box: Box | None = None) -> np.ndarray:
    """The output ``box`` (default: all) of the resampled ``data`` (float32, spatial axes
    only), evaluated axis by axis in the same order whatever the box."""
    if box is None:
        box = tuple((0, len(p.i0)) for p in plans)
    src = input_box(plans, box)
    out = np.asarray(data[tuple(slice(a, b) for a, b in src)], dtype=np.float32)
    for axis, (p, (lo, hi), (s0, _)) in enumerate(zip(plans, box, src, strict=True)):
        i0, i1, w = p.i0[lo:hi] - s0, p.i1[lo:hi] - s0, p.w[lo:hi]
        shape = [1] * out.ndim
        shape[axis] = hi - lo
        a = np.take(out, i0, axis=axis)
        if np.any(w):
            b = np.take(out, i1, axis=axis)
            out = a + w.reshape(shape) * (b - a)
        else:
            out = a
    return out


__all__ = ["AxisPlan", "Box", "input_box", "output_box", "plans_for", "resample_box",
           "union_box"]
