"""The challenge's metrics: Dice, false positive volume and false negative volume.

As the organizers' ``evaluation_metrics.py`` defines them (SPEC section 5):

* masks are binary; components are 18-connected;
* Dice = 2|G∩P| / (|G| + |P|), NaN when the ground truth is empty;
* FPV: the summed volume of prediction components that overlap the ground truth in no voxel,
  0 when the prediction is empty; FNV: the same for ground-truth components against the
  prediction, NaN when the ground truth is empty;
* the voxel volume in ml is the product of the three spacings from the NIfTI header (float32,
  as nibabel gives them) divided by 1000;
* the AUC over the interactive steps is the trapezoid rule at unit spacing.

Theirs tests each component with a full-volume ``np.isin``; petloop labels each mask once, on
the bounding box of the two masks, and counts each component's overlap with the other mask with
one ``bincount``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cc3d
import numpy as np
from scipy import integrate

CONNECTIVITY = 18


class MaskError(ValueError):
    """A mask is not binary, or two images do not match."""


def official_voxel_ml(spacing: Sequence[float]) -> np.float32:
    """``pixdim[1] * pixdim[2] * pixdim[3] / 1000`` in float32, as the official script has it."""
    s = np.asarray(spacing, dtype=np.float32)
    return np.float32(s[0] * s[1] * s[2] / 1000)


def binarize(mask: np.ndarray, label: int | None = None, name: str = "mask") -> np.ndarray:
    """A boolean mask; values other than 0 and 1 are an error unless ``label`` selects one."""
    arr = np.asarray(mask)
    if label is not None:
        return arr == label
    if arr.dtype == bool:
        return arr
    values = np.unique(arr) if arr.size <= 4_000_000 else _unique_fast(arr)
    extra = [v for v in values.tolist() if v not in (0, 1)]
    if extra:
        shown = ", ".join(f"{v:g}" for v in extra[:5])
        raise MaskError(f"{name} is not binary: it holds {shown}"
                        f"{' ...' if len(extra) > 5 else ''} besides 0 and 1; choose a class "
                        "with --label N")
    return arr != 0


def _unique_fast(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind in "ui" and arr.dtype.itemsize <= 2:
        counts = np.bincount(arr.ravel(order="K").astype(np.int64) - int(arr.min()))
        return np.nonzero(counts)[0] + int(arr.min())
    return np.unique(arr)


def _crop(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cut to the bounding box of their union (components cannot leave it)."""
    union_any = [np.any(gt, axis=tuple(b for b in range(3) if b != a))
                 | np.any(pred, axis=tuple(b for b in range(3) if b != a)) for a in range(3)]
    sl = []
    for flags in union_any:
        idx = np.flatnonzero(flags)
        if idx.size == 0:
            return gt[:0, :0, :0], pred[:0, :0, :0]
        sl.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return gt[tuple(sl)], pred[tuple(sl)]


def _unmatched_voxels(mask: np.ndarray, other: np.ndarray) -> int:
    """Voxels of the components of ``mask`` that touch ``other`` nowhere."""
    cc, n = cc3d.connected_components(mask, connectivity=CONNECTIVITY, return_N=True,
                                      binary_image=True)
    if n == 0:
        return 0
    sizes = np.bincount(cc.ravel(order="K"), minlength=n + 1)
    hit = np.bincount(cc[other], minlength=n + 1)
    return int(sizes[1:][hit[1:] == 0].sum())


@dataclass(frozen=True)
class Metrics:
    dice: float
    fpv: float  # ml
    fnv: float  # ml
    gt_voxels: int
    pred_voxels: int

    def to_json(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in self.__dict__.items()}


def compute_metrics(gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float]) -> Metrics:
    """Dice, FPV (ml) and FNV (ml) of two binary masks of the same shape."""
    gt = np.asarray(gt, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    if gt.shape != pred.shape:
        raise MaskError(f"ground truth shape {gt.shape} differs from prediction shape "
                        f"{pred.shape}")
    voxel_ml = official_voxel_ml(spacing)
    g_crop, p_crop = _crop(gt, pred)
    n_gt = int(np.count_nonzero(g_crop))
    n_pred = int(np.count_nonzero(p_crop))
    if n_gt == 0:
        dice = math.nan
        fnv = math.nan
    else:
        inter = int(np.count_nonzero(g_crop & p_crop))
        dice = 2 * inter / (n_gt + n_pred)
        fnv = float(np.int64(_unmatched_voxels(g_crop, p_crop)) * voxel_ml)
    fpv = 0.0 if n_pred == 0 else float(np.int64(_unmatched_voxels(p_crop, g_crop)) * voxel_ml)
    return Metrics(float(dice), fpv, fnv, n_gt, n_pred)


def auc(values: Sequence[float]) -> float:
    """Area under the per-step curve, trapezoid rule at unit spacing (NaN propagates)."""
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return math.nan
    return float(integrate.trapezoid(v, dx=1.0))
