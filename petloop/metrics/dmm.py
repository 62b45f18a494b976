"""autoPET V's detection-matching metric (DMM) and its companions, as the challenge's
``MetricEvaluator`` computes them, fast.

For a predicted and a true mask:

1. both are cropped to the bounding box of their union, 2 voxels wider on each side (clamped
   to the volume; the whole volume where both are empty);
2. in that box, lesions are the 18-connected components of each (a truth with values above 1
   is taken as already labelled: one lesion per value);
3. a true and a predicted lesion that share a voxel are a pair, with IoU = shared / (true +
   predicted - shared) voxels;
4. a true lesion with a pair of IoU >= 0.1 is a true positive (several predicted lesions may
   match one true lesion, and one predicted lesion several true ones: no one-to-one
   assignment); ``fn`` = true lesions - ``tp``; ``fp`` = predicted lesions without such a pair;
5. ``f1`` = 2 tp / (2 tp + fp + fn), 0 when ``tp`` is 0, NaN when the truth has no lesion;
6. beside them: Dice over the whole volumes (NaN for an empty truth), and the challenge's FPV
   and FNV in ml: the volume of predicted lesions that touch no true lesion, and of true
   lesions that no predicted lesion touches (FNV NaN when the truth has no lesion).

Each mask is labelled once and every pair's overlap counted in one pass over the voxels
(``bench/dmm.py`` compares it with a loop over the pairs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cc3d
import numpy as np

IOU_THRESHOLD = 0.1
CONNECTIVITY = 18
PAD = 2


@dataclass(frozen=True)
class DmmScore:
    dsc: float
    tp: int
    fp: int
    fn: int
    f1: float
    fpv: float | None  # ml; None without a spacing
    fnv: float | None
    gt_lesions: int
    pred_lesions: int

    def to_json(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in asdict(self).items()}


def paired_box(pred: np.ndarray, truth: np.ndarray, pad: int = PAD) -> tuple[slice, ...]:
    """The bounding box of both masks' voxels, ``pad`` wider on each side and clamped (the
    whole volume where both are empty)."""
    both = (pred != 0) | (truth != 0)
    if not both.any():
        return tuple(slice(0, s) for s in both.shape)
    out = []
    for axis in range(both.ndim):
        others = tuple(a for a in range(both.ndim) if a != axis)
        idx = np.nonzero(np.any(both, axis=others))[0]
        out.append(slice(max(int(idx[0]) - pad, 0),
                         min(int(idx[-1]) + pad, both.shape[axis]) + 1))
    return tuple(out)


def f1_score(tp: int, fp: int, fn: int) -> float:
    if tp + fn == 0:
        return math.nan
    if tp == 0:
        return 0.0
    return 2 * tp / (2 * tp + fp + fn)


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    total = float(truth.sum())
    if total == 0:
        return math.nan
    return 2 * float((truth * pred).sum()) / (total + float(pred.sum()))


def dmm(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None = None, *,
        threshold: float = IOU_THRESHOLD) -> DmmScore:
    """DMM and its companions of one case (see the module text)."""
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from the truth's "
                         f"{truth.shape}")
    box = paired_box(pred, np.clip(truth, 0, 1))
    p = (pred[box] != 0)
    if truth.max(initial=0) > 1:
        g = truth[box].astype(np.int64)
        n_gt = int(g.max(initial=0))
    else:
        g, n_gt = cc3d.connected_components(truth[box] != 0, connectivity=CONNECTIVITY,
                                            return_N=True)
    pl, n_pred = cc3d.connected_components(p, connectivity=CONNECTIVITY, return_N=True)
    g = np.asarray(g, dtype=np.int64)
    pl = np.asarray(pl, dtype=np.int64)
    gt_size = np.bincount(g.ravel(), minlength=n_gt + 1)
    pred_size = np.bincount(pl.ravel(), minlength=n_pred + 1)
    both = (g > 0) & (pl > 0)
    codes = g[both] * (n_pred + 1) + pl[both]
    pairs, shared = np.unique(codes, return_counts=True)
    gi, pj = pairs // (n_pred + 1), pairs % (n_pred + 1)
    iou = shared / (gt_size[gi] + pred_size[pj] - shared)
    hit = iou >= threshold
    tp = len(np.unique(gi[hit]))
    fp = n_pred - len(np.unique(pj[hit]))
    fn = n_gt - tp
    fpv = fnv = None
    if spacing is not None:
        ml = float(np.prod(spacing)) / 1000.0
        touched_pred = np.zeros(n_pred + 1, bool)
        touched_pred[pj] = True
        touched_gt = np.zeros(n_gt + 1, bool)
        touched_gt[gi] = True
        fpv = float(pred_size[1:][~touched_pred[1:]].sum()) * ml
        fnv = float(gt_size[1:][~touched_gt[1:]].sum()) * ml if n_gt else math.nan
    return DmmScore(_dice(pred, truth), int(tp), int(fp), int(fn), f1_score(tp, fp, fn), fpv,
                    fnv, n_gt, int(n_pred))


def aggregate_f1(scores: Sequence[DmmScore]) -> float:
    """The challenge's cohort F1: from the summed tp, fp and fn of all cases."""
    return f1_score(sum(s.tp for s in scores), sum(s.fp for s in scores),
                    sum(s.fn for s in scores))


__all__ = ["CONNECTIVITY", "IOU_THRESHOLD", "DmmScore", "aggregate_f1", "dmm", "f1_score",
           "paired_box"]
