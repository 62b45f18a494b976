"""Error-driven clicks: click where the current mask is wrong, as a reader would.

Given the ground truth, the current prediction and the clicks so far, a reader first clicks what
the challenge's volume metrics count: the next tumour click goes to a lesion the mask misses
altogether (a ground-truth component that no predicted voxel touches, the false negative
volume), and only when every lesion is found to the largest missed part of one; the next
background click goes to a detection that touches no lesion (the false positive volume), and
only when there is none to the largest over-segmentation farther than ``margin`` voxels from
every lesion. A background click on a lesion's edge would say "no lesion here" beside one, which
is not what a reader means and not what the models learned from the official clicks (placed in
bright uptake away from the lesions). Within each kind the largest component (26-connected)
comes first and the click goes to its most interior voxel (EDT argmax); ties in size go to the
component found first (Fortran memory order) and ties in depth to the first voxel in C order. A
voxel already clicked is not clicked again: the next deepest voxel of the same error is taken.
Where there is no such error the official rule decides: the first of the case's official clicks
(``fallback``) that has not been used yet.
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np
from scipy import ndimage

from petloop.io.clicks import Clicks

Point = tuple[int, int, int]
MARGIN = 3.0  # voxels from the nearest lesion, the official click heatmap's sigma


@dataclass(frozen=True)
class NextClicks:
    tumor: Point | None
    background: Point | None
    tumor_source: str  # "missed_lesion", "false_negative", "official" or "none"
    background_source: str  # "spurious", "false_positive", "official" or "none"


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


def _untouched(mask: np.ndarray, other: np.ndarray) -> np.ndarray:
    """The components of ``mask`` (26-connected) that share no voxel with ``other``."""
    cc = cc3d.connected_components(np.asfortranarray(mask), connectivity=26)
    touched = np.unique(cc[other & (cc > 0)])
    return (cc > 0) & ~np.isin(cc, touched)


def next_clicks(gt: np.ndarray, pred: np.ndarray, clicks: Clicks,
                fallback: Clicks | None = None, margin: float = MARGIN) -> NextClicks:
    """The next tumour and background click for the current prediction."""
    gt = np.asarray(gt) != 0
    pred = np.asarray(pred) != 0
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
    taken = set(clicks.tumor) | set(clicks.background)
    tumor, t_src = _deepest_of_largest(_untouched(gt, pred), taken), "missed_lesion"
    if tumor is None:
        tumor, t_src = _deepest_of_largest(gt & ~pred, taken), "false_negative"
    if tumor is None:
        tumor = _first_unused(fallback.tumor, taken) if fallback else None
        t_src = "official" if tumor is not None else "none"
    bg, b_src = _deepest_of_largest(_untouched(pred, gt), taken), "spurious"
    if bg is None:
        far = pred & ~gt
        if gt.any() and far.any():
            far &= ndimage.distance_transform_edt(~gt) > margin
        bg, b_src = _deepest_of_largest(far, taken), "false_positive"
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
