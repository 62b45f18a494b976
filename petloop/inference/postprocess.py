"""Post-processing of a predicted mask: BIRTH's SUV threshold.

After prediction, voxels whose PET is below the tracer's threshold (SUV; BIRTH: 1.5 for FDG,
1.0 for PSMA) are set to background. It is voxel-wise and comes after the network, so
calibration predicts once with :meth:`PostProcessing.none` and applies each candidate threshold
to the same masks (:mod:`petloop.inference.calibrate`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

DEFAULT_THRESHOLDS = {"fdg": 1.5, "psma": 1.0}


def apply_suv_threshold(mask: np.ndarray, pet: np.ndarray, threshold: float) -> np.ndarray:
    """BIRTH's post-processing: voxels of PET below ``threshold`` (SUV) set to 0."""
    out = np.asarray(mask, dtype=np.uint8).copy()
    out[np.asarray(pet) < threshold] = 0
    return out


@dataclass(frozen=True)
class PostProcessing:
    """The SUV threshold per tracer; a tracer without one keeps every voxel."""

    suv_threshold: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))

    def __post_init__(self):
        for tracer, value in self.suv_threshold.items():
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or math.isnan(value)):
                raise ValueError(f"suv_threshold.{tracer} must be a number (SUV), got {value!r}")
        object.__setattr__(self, "suv_threshold", dict(self.suv_threshold))

    @classmethod
    def none(cls) -> PostProcessing:
        """No post-processing: the network's mask as it is."""
        return cls({})

    def threshold(self, tracer: str) -> float | None:
        return self.suv_threshold.get(tracer)

    def keep(self, pet: np.ndarray, tracer: str) -> np.ndarray | None:
        """Where a mask may stay lesion (None: everywhere)."""
        t = self.threshold(tracer)
        return None if t is None else np.asarray(pet) >= t

    def apply(self, mask: np.ndarray, pet: np.ndarray, tracer: str) -> np.ndarray:
        t = self.threshold(tracer)
        return (np.asarray(mask, dtype=np.uint8).copy() if t is None
                else apply_suv_threshold(mask, pet, t))


__all__ = ["DEFAULT_THRESHOLDS", "PostProcessing", "apply_suv_threshold"]
