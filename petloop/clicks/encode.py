"""Click heatmaps: the FG and BG input channels, on a whole volume or on a crop of it.

``gaussian`` (official and BIRTH)
    What ``scipy.ndimage.gaussian_filter(impulses, sigma)`` gives for a volume of unit impulses
    at the clicks (``truncate=4``, ``mode='reflect'``, float32, not normalised, clicks adding
    up; a repeated click is one impulse). The filter is separable, so one click's response is the
    outer product of three 1D responses, each the sampled Gaussian folded back at the borders as
    ``reflect`` does. Each click touches only a window of ``2 * radius + 1`` voxels per axis, so
    the cost does not depend on the volume size.
``edt_ball`` (DKFZ LesionLocator style)
    A ball of ``radius`` voxels per click whose inside is its Euclidean distance transform
    scaled to a peak of 1; several clicks merge by maximum. The ball is computed as if the volume
    went on past its border and then clipped to it.

``binary`` (autoPET V's baseline)
    1 at every click voxel, 0 elsewhere: what the baseline's ``gaussian_filter(impulses,
    sigma=0)`` gives, the encoding its scribbles are trained with.

All accept ``crop=(offset, size)`` and return only that box of the full-volume heatmap (a
training patch) without building the full volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy import ndimage

from petloop.io.clicks import Clicks

ENCODINGS = ("gaussian", "edt_ball", "binary")
Crop = tuple[Sequence[int], Sequence[int]]
ACC64_MAX_VOXELS = 8_000_000


class ClickOutsideError(ValueError):
    """A click does not lie inside the volume."""


def _check_points(points: Sequence[Sequence[int]], shape: Sequence[int], name: str) -> np.ndarray:
    pts = np.asarray(points, dtype=np.int64).reshape(-1, 3)
    for n, p in enumerate(pts):
        if np.any(p < 0) or np.any(p >= np.asarray(shape)):
            raise ClickOutsideError(
                f"{name} click {n} {p.tolist()} lies outside the volume of shape {list(shape)}")
    return pts


def _positive(value: float, name: str) -> float:
    """A finite number above zero; sigma 0 or below would give no heatmap (or a broken one)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive number of voxels, got {value!r}")
    return v


def _crop_box(shape, crop: Crop | None) -> tuple[np.ndarray, np.ndarray]:
    if crop is None:
        return np.zeros(3, dtype=np.int64), np.asarray(shape, dtype=np.int64)
    offset = np.asarray(crop[0], dtype=np.int64)
    size = np.asarray(crop[1], dtype=np.int64)
    if len(offset) != 3 or len(size) != 3 or np.any(size <= 0):
        raise ValueError(f"crop needs a 3D offset and a positive 3D size, got {crop}")
    return offset, size


@lru_cache(maxsize=64)
def _kernel(sigma: float, truncate: float) -> np.ndarray:
    """scipy's 1D Gaussian weights (radius ``int(truncate * sigma + 0.5)``)."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 / (sigma * sigma) * x * x)
    return phi / phi.sum()


def _reflect_response(c: int, n: int, kernel: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """1D response on [lo, hi) of a unit impulse at ``c`` in a line of length ``n``,
    extended by 'reflect' (d c b a | a b c d | d c b a): the impulse's mirror images
    at ``2 m n + c`` and ``2 m n - 1 - c`` all contribute."""
    radius = (kernel.size - 1) // 2
    x = np.arange(lo, hi)
    out = np.zeros(hi - lo, dtype=np.float64)
    period = 2 * n
    m_lo = (lo - radius - c) // period - 1
    m_hi = (hi + radius + c) // period + 2
    for m in range(m_lo, m_hi):
        for image in (period * m + c, period * m - 1 - c):
            d = x - image
            near = np.abs(d) <= radius
            if near.any():
                out[near] += kernel[d[near] + radius]
    return out


def gaussian_heatmap(points: Sequence[Sequence[int]], shape: Sequence[int], sigma: float = 3.0,
                     truncate: float = 4.0, crop: Crop | None = None,
                     name: str = "") -> np.ndarray:
    """Sum of Gaussian responses, equal to ``gaussian_filter(impulses, sigma)`` (float32)."""
    sigma = _positive(sigma, "sigma")
    truncate = _positive(truncate, "truncate")
    shape = tuple(int(s) for s in shape)
    pts = _check_points(points, shape, name or "a")
    offset, size = _crop_box(shape, crop)
    # sums of overlapping clicks are exact in float64; a full-size volume accumulates in float32
    # (clicks there rarely overlap and the difference stays below 1e-9)
    acc = np.float64 if np.prod(size) <= ACC64_MAX_VOXELS else np.float32
    out = np.zeros(tuple(size), dtype=acc)
    if pts.size == 0:
        return out.astype(np.float32, copy=False)
    kernel = _kernel(float(sigma), float(truncate))
    radius = (kernel.size - 1) // 2
    for p in np.unique(pts, axis=0):  # a repeated click sets the same impulse once
        lo = np.maximum(np.maximum(p - radius, 0), offset)
        hi = np.minimum(np.minimum(p + radius + 1, shape), offset + size)
        if np.any(hi <= lo):
            continue
        r = [_reflect_response(int(p[a]), shape[a], kernel, int(lo[a]), int(hi[a]))
             for a in range(3)]
        block = r[0][:, None, None] * r[1][None, :, None] * r[2][None, None, :]
        sl = tuple(slice(int(a - o), int(b - o)) for a, b, o in zip(lo, hi, offset, strict=True))
        out[sl] += block.astype(acc, copy=False)
    return out.astype(np.float32, copy=False)


@lru_cache(maxsize=16)
def _ball(radius: float) -> np.ndarray:
    r = int(np.ceil(radius))
    g = np.arange(-r, r + 1)
    d2 = g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2
    inside = np.pad(d2 <= radius * radius, 1)
    edt = ndimage.distance_transform_edt(inside)[1:-1, 1:-1, 1:-1]
    return (edt / edt.max()).astype(np.float32)


def edt_ball_heatmap(points: Sequence[Sequence[int]], shape: Sequence[int], radius: float = 2.0,
                     crop: Crop | None = None, name: str = "") -> np.ndarray:
    """Per click a ball whose inside is its EDT scaled to peak 1; merged by maximum."""
    radius = _positive(radius, "radius")
    shape = tuple(int(s) for s in shape)
    pts = _check_points(points, shape, name or "a")
    offset, size = _crop_box(shape, crop)
    out = np.zeros(tuple(size), dtype=np.float32)
    ball = _ball(float(radius))
    r = (ball.shape[0] - 1) // 2
    for p in pts:
        lo = np.maximum(p - r, offset)
        hi = np.minimum(np.minimum(p + r + 1, shape), offset + size)
        if np.any(hi <= lo):
            continue
        src = tuple(slice(int(a - (q - r)), int(b - (q - r))) for a, b, q in zip(lo, hi, p,
                                                                                 strict=True))
        dst = tuple(slice(int(a - o), int(b - o)) for a, b, o in zip(lo, hi, offset, strict=True))
        np.maximum(out[dst], ball[src], out=out[dst])
    return out


def binary_heatmap(points: Sequence[Sequence[int]], shape: Sequence[int],
                   crop: Crop | None = None, name: str = "") -> np.ndarray:
    """1 at each click voxel (inside the crop), 0 elsewhere."""
    shape = tuple(int(s) for s in shape)
    pts = _check_points(points, shape, name or "a")
    offset, size = _crop_box(shape, crop)
    out = np.zeros(tuple(size), dtype=np.float32)
    local = pts - offset
    inside = np.all((local >= 0) & (local < size), axis=1)
    out[tuple(local[inside].T)] = 1.0
    return out


def encode_points(points, shape, encoding: str = "gaussian", *, sigma: float = 3.0,
                  radius: float = 2.0, crop: Crop | None = None, name: str = "") -> np.ndarray:
    if encoding == "gaussian":
        return gaussian_heatmap(points, shape, sigma=sigma, crop=crop, name=name)
    if encoding == "edt_ball":
        return edt_ball_heatmap(points, shape, radius=radius, crop=crop, name=name)
    if encoding == "binary":
        return binary_heatmap(points, shape, crop=crop, name=name)
    raise ValueError(f"unknown click encoding {encoding!r}; use one of {ENCODINGS}")


def encode_clicks(clicks: Clicks, shape, step: int | None = None, encoding: str = "gaussian", *,
                  sigma: float = 3.0, radius: float = 2.0,
                  crop: Crop | None = None) -> tuple[np.ndarray, np.ndarray]:
    """FG and BG channels at interactive step ``step`` (first k tumour and first k background
    clicks; ``None`` uses them all). A click outside the volume is an error, and so are an
    unknown encoding, a negative step, and a sigma or radius that is not a positive number."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown click encoding {encoding!r}; use one of {ENCODINGS}")
    if encoding == "gaussian":
        _positive(sigma, "sigma")
    elif encoding == "edt_ball":
        _positive(radius, "radius")
    if step is not None:
        clicks = clicks.step(step)
    _check_points(clicks.tumor, shape, "tumor")  # check all, including those outside the crop
    _check_points(clicks.background, shape, "background")
    fg = encode_points(clicks.tumor, shape, encoding, sigma=sigma, radius=radius, crop=crop,
                       name="tumor")
    bg = encode_points(clicks.background, shape, encoding, sigma=sigma, radius=radius,
                       crop=crop, name="background")
    return fg, bg
