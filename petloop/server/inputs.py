"""What the server checks about images before any work on them, and what its messages may say.

The reader (:mod:`petloop.io.imagefile`) refuses files that are broken or declare more than the
server's :class:`~petloop.io.volume.ReadLimits`; these checks refuse images that are whole but
unfit for the viewer, before the tracer, the preprocessing or the network see them:

* every axis of the PET has at least ``MIN_AXIS`` voxels (a 1294 x 1 x 1 "PET" costs as many
  network tiles as a whole body, and shows nothing);
* the PET grid, resampled to the spacing the models were trained at (nnU-Net's preprocessing
  does that), stays within the voxel limit: a 64^3 image that declares 1 m voxels would
  otherwise grow to billions of voxels there.

:func:`public_message` takes server paths out of error messages (the data folder's absolute
path, temporary folders), so that an answer never tells a client where files lie or whether a
file exists.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from petloop.io.volume import ReadLimits, Volume, VolumeError

MIN_AXIS = 8  # voxels per axis of an image the viewer opens


class ImageUnfit(VolumeError):
    """An image that reads fine but that the viewer does not open (the message says why)."""


def model_spacings(model_set) -> list[tuple[tuple[int, ...], tuple[float, ...]]]:
    """``(transpose_forward, spacing)`` of each model's configuration, from its plans.json
    (nnU-Net's array order); models whose plans cannot be read are left out."""
    out = []
    for entry in getattr(model_set, "models", {}).values():
        folder = Path(entry.folder)
        configuration = folder.name.rsplit("__", 1)[-1]
        try:
            plans = json.loads((folder / "plans.json").read_text())
            spacing = tuple(float(s) for s in plans["configurations"][configuration]["spacing"])
            transpose = tuple(int(t) for t in plans.get("transpose_forward", (0, 1, 2)))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if len(spacing) == 3 and sorted(transpose) == [0, 1, 2] and min(spacing) > 0:
            out.append((transpose, spacing))
    return out


def resampled_voxels(pet: Volume, transpose: tuple[int, ...], spacing: tuple[float, ...]) -> int:
    """About how many voxels nnU-Net's preprocessing makes of ``pet`` at ``spacing``."""
    shape = np.asarray(pet.shape[::-1], dtype=np.float64)[list(transpose)]  # (k, j, i) order
    own = np.asarray(pet.itk_spacing(), dtype=np.float64)[list(transpose)]
    new = np.maximum(np.round(shape * own / np.asarray(spacing)), 1)
    return int(np.prod(new))


def check_grid(pet: Volume, name: str, limits: ReadLimits, spacings=()) -> None:
    """Refuse a PET the viewer should not open (see the module's text)."""
    if min(pet.shape) < MIN_AXIS:
        raise ImageUnfit(f"{name}: the image is {' x '.join(map(str, pet.shape))} voxels; the "
                         f"viewer needs at least {MIN_AXIS} along every axis")
    for transpose, spacing in spacings:
        n = resampled_voxels(pet, transpose, spacing)
        if n > limits.max_voxels:
            mm = " x ".join(f"{s:g}" for s in pet.spacing)
            raise ImageUnfit(
                f"{name}: its voxels of {mm} mm, resampled to the models' spacing, make "
                f"{n:,} voxels, more than the limit of {limits.max_voxels:,}; is the spacing "
                "in the header right?")


_TEMPORARY = re.compile(
    re.escape(os.path.join(tempfile.gettempdir(), "petloop-")) + r"[^\s'\"]*")


def public_message(message: str, roots: dict[str | Path, str] | None = None) -> str:
    """``message`` without server paths: each root's path (as given and resolved) is cut from
    the front of the paths that start with it (``{root: ""}`` leaves them relative, any other
    value replaces the root), and petloop's temporary files are named as such."""
    text = str(message)
    pairs = []
    for root, label in (roots or {}).items():
        for form in {str(root), str(Path(root).resolve())}:
            if form and form not in (".", os.sep):
                pairs.append((form.rstrip(os.sep), label))
    for form, label in sorted(pairs, key=lambda p: -len(p[0])):
        text = text.replace(form + os.sep, f"{label}{os.sep}" if label else "")
        if os.path.isabs(form):  # a relative root alone may be a plain word ("cases")
            text = text.replace(form, label or ".")
    return _TEMPORARY.sub("(a temporary file)", text)
