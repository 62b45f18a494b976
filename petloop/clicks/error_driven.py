"""Error-driven clicks: click where the current mask is wrong, as a reader would.

Given the ground truth, the current prediction and the clicks so far, the next tumour click goes
to the most interior voxel (EDT argmax) of the largest false-negative component and the next
background click to that of the largest false-positive component. Components are 26-connected;
ties in size go to the component found first (Fortran memory order) and ties in depth to the
first voxel in C order. A voxel already clicked is not clicked again: the next deepest voxel of
the same error is taken. Where there is no such error the official rule decides: the first of
the case's official clicks (``fallback``) that has not been used yet.
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np
from scipy import ndimage

from petloop.io.clicks import Clicks

Point = tuple[int, int, int]


@dataclass(frozen=True)
class NextClicks:
    tumor: Point | None
    background: Point | None
    tumor_source: str  # "false_negative", "official" or "none"
    background_source: str


def _deepest_of_largest(error: np.ndarray, taken: set[Point]) -> Point | None:
    if not error.any():
        return None
    cc, n = cc3d.connected_components(np.asfortranarray(error), connectivity=26, return_N=True)
    stats = cc3d.statistics(cc)
    counts = np.asarray(stats["voxel_counts"])[1:]
    order = np.argsort(-counts, kind="stable")  # largest first, ties by label
    for idx in order:
        lab = int(idx) + 1
        box = stats["bounding_boxes"][lab]
        grown = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, size))
                      for s, size in zip(box, error.shape, strict=True))
        mask = cc[grown] == lab
        edt = ndimage.distance_transform_edt(mask)
        flat = np.argsort(-edt, axis=None, kind="stable")  # deepest first, C-order ties
        offset = np.array([s.start for s in grown])
        for f in flat[: int(mask.sum())]:
            p = tuple(int(v) for v in np.asarray(np.unravel_index(f, mask.shape)) + offset)
            if p not in taken:
                return p  # type: ignore[return-value]
    return None


def _first_unused(points, taken: set[Point]) -> Point | None:
    for p in points:
        if tuple(p) not in taken:
            return tuple(int(v) for v in p)  # type: ignore[return-value]
    return None


def next_clicks(gt: np.ndarray, pred: np.ndarray, clicks: Clicks,
                fallback: Clicks | None = None) -> NextClicks:
    """The next tumour and background click for the current prediction."""
    gt = np.asarray(gt) != 0
    pred = np.asarray(pred) != 0
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
    taken = set(clicks.tumor) | set(clicks.background)
    tumor = _deepest_of_largest(gt & ~pred, taken)
    t_src = "false_negative"
    if tumor is None:
        tumor = _first_unused(fallback.tumor, taken) if fallback else None
        t_src = "official" if tumor is not None else "none"
    bg = _deepest_of_largest(pred & ~gt, taken)
    b_src = "false_positive"
    if bg is None:
        bg = _first_unused(fallback.background, taken) if fallback else None
        b_src = "official" if bg is not None else "none"
    return NextClicks(tumor, bg, t_src, b_src)


def add_next(gt: np.ndarray, pred: np.ndarray, clicks: Clicks,
             fallback: Clicks | None = None) -> Clicks:
    """``clicks`` with the next error-driven tumour and background click appended."""
    nxt = next_clicks(gt, pred, clicks, fallback)
    tumor = clicks.tumor + ((nxt.tumor,) if nxt.tumor is not None else ())
    bg = clicks.background + ((nxt.background,) if nxt.background is not None else ())
    return Clicks(tumor, bg)
