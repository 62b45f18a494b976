"""The body's bounding box in a CT: the part of the field of view worth running a network on.

Whole-body PET/CT grids are wide: the autoPET FDG grid is 815 mm across, an adult about 450 mm
by 300 mm. Outside the body there is air, where no lesion can be, so a model set whose manifest
asks for ``"crop": "body"`` runs its networks on the body's box only and marks nothing outside
it (nnU-Net's own cropping to the non-zero region does nothing for CT, whose air is -1000 HU, not
zero). The box is a pure function of the CT: every caller that prepares a case gets the same one.
"""

from __future__ import annotations

import numpy as np

from petloop.io.volume import Volume
from petloop.options import CROPS, Crop  # noqa: F401 - re-exported

BODY_HU = -500.0  # tissue above, air below (lung parenchyma is about -850 HU but lies inside)
MARGIN_MM = 20.0


def body_box(ct: Volume, *, threshold_hu: float = BODY_HU, margin_mm: float = MARGIN_MM
             ) -> tuple[tuple[int, int], ...] | None:
    """``((i0, i1), (j0, j1), (k0, k1))``, half-open voxel ranges of the CT holding every voxel
    above ``threshold_hu`` plus ``margin_mm`` on each side; None when that is the whole grid or
    when nothing is above the threshold (then nothing is cropped)."""
    arr = np.asarray(ct.array)
    shape = arr.shape
    box = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        profile = (arr > threshold_hu).any(axis=others)
        hits = np.flatnonzero(profile)
        if hits.size == 0:
            return None
        pad = int(np.ceil(margin_mm / ct.spacing[axis]))
        box.append((max(int(hits[0]) - pad, 0), min(int(hits[-1]) + 1 + pad, shape[axis])))
    if all(lo == 0 and hi == n for (lo, hi), n in zip(box, shape, strict=True)):
        return None
    return tuple(box)


__all__ = ["BODY_HU", "CROPS", "MARGIN_MM", "body_box"]
