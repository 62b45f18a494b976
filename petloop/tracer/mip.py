"""Maximum intensity projections of PET, exactly as the public autoPET III tracer classifier
makes them.

1. Flip (never permute) the image axes so that the NIfTI orientation codes read ``L, A, S``
   (nibabel's ``aff2axcodes``; RAS convention: the label of the end each axis runs towards).
2. Transpose to ``[z, y, x]`` and flip along z (head on top).
3. Coronal MIP = maximum over y, sagittal MIP = maximum over x.
4. Resize each bilinearly to 224 x 224 (``align_corners=False``); raw SUV, one channel.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from petloop.io.volume import Volume

MIP_SIZE = (224, 224)
TARGET_CODES = ("L", "A", "S")
# LPS (ITK) axis labels of the positive direction, per physical axis
_LPS_POSITIVE = ("L", "P", "S")
_LPS_NEGATIVE = ("R", "A", "I")


def orientation_codes(volume: Volume) -> tuple[str, str, str]:
    """nibabel's ``aff2axcodes`` for the volume's affine: where each voxel axis points to."""
    d = volume.direction_matrix
    codes = []
    for axis in range(3):
        col = d[:, axis]
        m = int(np.argmax(np.abs(col)))
        codes.append(_LPS_POSITIVE[m] if col[m] > 0 else _LPS_NEGATIVE[m])
    return tuple(codes)  # type: ignore[return-value]


def reorient_las(volume: Volume) -> np.ndarray:
    """The array flipped (axes not permuted) so that its codes read L, A, S."""
    arr = np.asarray(volume.array)
    for axis, (code, target) in enumerate(zip(orientation_codes(volume), TARGET_CODES,
                                              strict=True)):
        if code != target:
            arr = np.flip(arr, axis)
    return arr


def raw_mips(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Coronal (z, x) and sagittal (z, y) MIPs before resizing, head on top."""
    img = np.transpose(reorient_las(volume), (2, 1, 0))[::-1]
    return img.max(axis=1), img.max(axis=2)


def resize_mip(mip: np.ndarray, size=MIP_SIZE) -> torch.Tensor:
    """(1, 224, 224) float tensor, bilinear, align_corners False."""
    t = torch.from_numpy(np.ascontiguousarray(mip)).float()[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0]


def mips(volume: Volume, size=MIP_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    cor, sag = raw_mips(volume)
    return resize_mip(cor, size), resize_mip(sag, size)
