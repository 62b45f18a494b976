"""Augmentation pieces for click-guided training.

* :class:`ImageChannelsOnly` applies an intensity transform to the image channels and leaves the
  click channels as rendered (the spatial transforms move all channels together).
* :class:`CTMisalignment` shifts or rotates the CT channel alone, as PET and CT are never
  perfectly registered (autoPET III winner: rotation up to 5 degrees with p 0.1, shift of
  (0, 2, 2) voxels with p 0.1).
* :func:`restrict_intensity_transforms` rewrites nnU-Net's default pipeline accordingly.
"""

from __future__ import annotations

import numpy as np
import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from scipy import ndimage

INTENSITY_TRANSFORMS = ("GaussianNoiseTransform", "GaussianBlurTransform",
                        "MultiplicativeBrightnessTransform", "ContrastTransform",
                        "SimulateLowResolutionTransform", "GammaTransform")


class ImageChannelsOnly(BasicTransform):
    def __init__(self, transform: BasicTransform, n_image_channels: int = 2):
        super().__init__()
        self.transform = transform
        self.n = n_image_channels

    def __call__(self, **data_dict) -> dict:
        image = data_dict["image"]
        out = self.transform(**{**data_dict, "image": image[: self.n]})
        out["image"] = torch.cat([out["image"], image[self.n:]], dim=0)
        return out

    def __repr__(self) -> str:
        return f"ImageChannelsOnly(n={self.n}, {self.transform!r})"


class CTMisalignment(BasicTransform):
    """Rotate (about the slice axis) and/or shift the CT channel (0) of a sample."""

    def __init__(self, p_rotation: float = 0.1, max_degrees: float = 5.0, p_shift: float = 0.1,
                 max_shift=(0, 2, 2)):
        super().__init__()
        self.p_rotation, self.max_degrees = p_rotation, max_degrees
        self.p_shift, self.max_shift = p_shift, tuple(max_shift)

    def get_parameters(self, **data_dict) -> dict:
        rotate = torch.rand(1).item() < self.p_rotation
        shift = torch.rand(1).item() < self.p_shift
        angle = (torch.rand(1).item() * 2 - 1) * self.max_degrees
        offsets = [int(torch.randint(-m, m + 1, (1,)).item()) if m else 0 for m in self.max_shift]
        return {"rotate": rotate, "angle": angle, "shift": shift, "offsets": offsets}

    def _apply_to_image(self, img: torch.Tensor, **p) -> torch.Tensor:
        if not (p["rotate"] or p["shift"]):
            return img
        ct = img[0].numpy()
        if p["rotate"] and ct.ndim == 3:
            ct = ndimage.rotate(ct, p["angle"], axes=(1, 2), reshape=False, order=1,
                                mode="nearest")
        if p["shift"]:
            ct = ndimage.shift(ct, p["offsets"][-ct.ndim:], order=0, mode="nearest")
        img = img.clone()
        img[0] = torch.from_numpy(np.ascontiguousarray(ct, dtype=np.float32))
        return img

    def _apply_to_segmentation(self, seg, **p):
        return seg


def restrict_intensity_transforms(pipeline: ComposeTransforms, n_image_channels: int = 2,
                                  misalignment: bool = False) -> ComposeTransforms:
    out = []
    for t in pipeline.transforms:
        inner = t.transform if isinstance(t, RandomTransform) else t
        if type(inner).__name__ in INTENSITY_TRANSFORMS:
            out.append(ImageChannelsOnly(t, n_image_channels))
        else:
            out.append(t)
        if misalignment and isinstance(t, SpatialTransform):
            out.append(CTMisalignment())
    return ComposeTransforms(out)
