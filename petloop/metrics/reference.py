"""A non-learned reference for the interactive tables: the isocontour around every true lesion.

The clinical way to delineate a PET lesion is a fixed fraction of its SUVmax (41 % in the EANM
guideline). :func:`isocontour_reference` draws that contour around each lesion of the ground
truth: the voxels within ``margin`` voxels of the lesion whose SUV is at least ``fraction`` of the
lesion's SUVmax. It is told where every lesion is, so it is nothing a user could run; it says how
well a lesion can be delineated from the PET alone at the data's resolution and blur, the yardstick
next to which a model's Dice at 10 clicks is read.

:func:`reference_metrics` scores it on cases with the official metrics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cc3d
import numpy as np
from scipy import ndimage

from petloop.metrics.interactive import to_json_safe
from petloop.metrics.official import CONNECTIVITY, MaskError, compute_metrics

EANM_FRACTION = 0.41
MARGIN = 2  # voxels around each true lesion


def isocontour_reference(suv: np.ndarray, label: np.ndarray, fraction: float = EANM_FRACTION,
                         margin: int = MARGIN) -> np.ndarray:
    """Union over the label's lesions (18-connected components) of the voxels within ``margin``
    voxels (6-connected steps) of the lesion with SUV >= ``fraction`` x the lesion's SUVmax."""
    suv = np.asarray(suv)
    label = np.asarray(label) > 0
    if suv.shape != label.shape:
        raise MaskError(f"SUV shape {suv.shape} differs from label shape {label.shape}")
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    if margin < 0:
        raise ValueError(f"margin must be at least 0, got {margin}")
    out = np.zeros(label.shape, dtype=bool)
    cc, n = cc3d.connected_components(label, connectivity=CONNECTIVITY, return_N=True)
    if n == 0:
        return out
    for i, box in enumerate(ndimage.find_objects(cc), start=1):
        grown = tuple(slice(max(s.start - margin, 0), min(s.stop + margin, dim))
                      for s, dim in zip(box, label.shape, strict=True))
        lesion = cc[grown] == i
        level = fraction * float(suv[grown][lesion].max())
        near = ndimage.binary_dilation(lesion, iterations=margin) if margin else lesion
        out[grown] |= near & (suv[grown] >= level)
    return out


@dataclass(frozen=True)
class ReferenceScore:
    tracer: str
    cases: int  # cases with lesions (Dice is defined on them only)
    dice: float
    fpv: float  # ml, over the same cases
    fnv: float  # ml

    def to_json(self) -> dict:
        return to_json_safe(asdict(self))


def reference_metrics(cases: Sequence, tracer: str, fraction: float = EANM_FRACTION,
                      margin: int = MARGIN) -> ReferenceScore:
    """Mean official metrics of the isocontour reference over the cases with lesions (anything
    with ``load()`` giving a case with ``pet`` and ``label`` volumes)."""
    scores = []
    for files in cases:
        case = files.load()
        if case.label is None:
            continue
        gt = case.label.array > 0
        if not gt.any():
            continue
        ref = isocontour_reference(case.pet.array, gt, fraction, margin)
        scores.append(compute_metrics(gt, ref, case.pet.spacing))
    if not scores:
        return ReferenceScore(tracer, 0, math.nan, math.nan, math.nan)
    return ReferenceScore(tracer, len(scores), *(float(np.mean([getattr(m, k) for m in scores]))
                                                 for k in ("dice", "fpv", "fnv")))
