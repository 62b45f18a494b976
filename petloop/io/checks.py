"""What an image must be for its role: a PET in SUV, a CT in HU, a lesion label of 0 and 1.

The reader (:mod:`petloop.io.imagefile`) refuses files that are broken; these checks refuse
images that are whole but wrong for what they are given as, each with one error naming the
image and the problem. They are pure functions of the volume, run wherever an image enters
petloop's work (``Session.set_case``, case loading, the commands).

A PET in SUV:

* is finite, and has voxels above zero;
* is not negative beyond reconstruction noise: no voxel below ``-NEGATIVE_SUV`` (-1);
* looks like SUV, not activity: the median of the body's voxels (those above a tenth of the
  image's 99.5th percentile) is at most ``MAX_BODY_SUV`` (50). A body's median SUV is around
  1 (muscle 0.7, liver 2); in Bq/ml the same body reads thousands. Convert activity to SUV
  (body weight) with ``SUV = activity (Bq/ml) x weight (g) / decay-corrected dose (Bq)``.

``trust_suv=True`` (``--trust-suv``) skips the last two, for images known to be SUV that look
otherwise; NaN and infinite values are always refused.
"""

from __future__ import annotations

import numpy as np

from petloop.io.imagefile import VolumeError
from petloop.io.volume import Volume

NEGATIVE_SUV = 1.0
MAX_BODY_SUV = 50.0
BODY_QUANTILE = 99.5
BODY_FRACTION = 0.1
TRUST_HINT = "pass --trust-suv if it is SUV all the same"


def _sample(array: np.ndarray, voxels: int = 2_000_000) -> np.ndarray:
    """Every n-th voxel along each axis, about ``voxels`` of them (statistics, not every value)."""
    step = max(1, int(np.ceil((array.size / voxels) ** (1 / 3))))
    return np.asarray(array[::step, ::step, ::step], dtype=np.float32).ravel()


def _finite(volume: Volume, name: str, what: str) -> np.ndarray:
    arr = np.asarray(volume.array)
    if arr.dtype.kind == "f":
        bad = np.count_nonzero(~np.isfinite(arr))
        if bad:
            raise VolumeError(f"{name}: the {what} holds {bad:,} NaN or infinite voxel(s)")
    return arr


def body_median(array: np.ndarray) -> float:
    """The median of the body's voxels: those above a tenth of the 99.5th percentile."""
    sample = _sample(array)
    top = float(np.percentile(sample, BODY_QUANTILE))
    body = sample[sample > BODY_FRACTION * top] if top > 0 else sample[sample > 0]
    return float(np.median(body)) if body.size else 0.0


def check_pet(volume: Volume, name: str = "PET", *, trust_suv: bool = False) -> None:
    """Refuse a PET that is not a plausible SUV image (see the module's text)."""
    arr = _finite(volume, name, "PET")
    if not (arr > 0).any():
        raise VolumeError(f"{name}: the PET has no voxel above 0 (is it in SUV?)")
    if trust_suv:
        return
    low = float(arr.min())
    if low < -NEGATIVE_SUV:
        raise VolumeError(
            f"{name}: the PET goes down to {low:.4g}, below any SUV (at most {NEGATIVE_SUV:g} "
            f"below 0 from noise): is it a PET in SUV, not a CT or a difference image? "
            f"{TRUST_HINT}")
    median = body_median(arr)
    if median > MAX_BODY_SUV:
        raise VolumeError(
            f"{name}: the median value in the body is {median:,.4g}, far above what SUV can be "
            f"(around 1): the PET looks like activity concentration (Bq/ml), not SUV; convert "
            f"it (SUV = Bq/ml x body weight in g / decay-corrected injected dose in Bq) or "
            f"{TRUST_HINT}")


def check_ct(volume: Volume, name: str = "CT") -> None:
    """Refuse a CT with NaN or infinite voxels."""
    _finite(volume, name, "CT")


def check_label(volume: Volume, name: str = "label") -> None:
    """Refuse a lesion label holding anything but 0 (background) and 1 (lesion)."""
    arr = np.asarray(volume.array)
    if arr.dtype == bool:
        return
    _finite(volume, name, "label")
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        extra = np.unique(arr[bad])
        shown = ", ".join(f"{v:g}" for v in extra[:8]) + (", ..." if extra.size > 8 else "")
        raise VolumeError(f"{name}: a lesion label holds 0 (background) and 1 (lesion) only; "
                          f"it also holds {shown}")
