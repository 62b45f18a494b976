"""Preview images of phantoms (or any case): PET MIP, CT slices and the organ label.

Coronal views are shown as a reader sees them: head at the top, the patient's right on the
viewer's left; the PET MIP in inverted grey (black is hot) with the lesion outlines in red.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no backend is chosen, no global state

from petloop.io.atomic import write_figure
from petloop.io.layouts import Case


def _coronal(a: np.ndarray) -> np.ndarray:
    """(i, k) plane -> image rows k (head on top), columns i."""
    return np.flipud(a.T)


def preview_cases(cases: Sequence[Case], out: str | Path, suv_max: float = 10.0) -> Path:
    """Write one row per case: PET MIP, CT coronal, CT axial (liver level), organs, and an
    axial PET/CT fusion through the largest lesion (or the liver)."""
    n = len(cases)
    fig = Figure(figsize=(16, 4.6 * n))
    axes = fig.subplots(n, 5, squeeze=False)
    for row, case in zip(axes, cases, strict=True):
        pet, ct = case.pet.array, case.ct.array
        sx, sy, sz = case.pet.spacing
        aspect = sz / sx
        mip = _coronal(pet.max(axis=1))
        row[0].imshow(mip, cmap="gray_r", vmin=0, vmax=suv_max, aspect=aspect,
                      interpolation="nearest")
        if case.label is not None and case.label.array.any():
            lab = _coronal(case.label.array.max(axis=1))
            row[0].contour(lab, levels=[0.5], colors="red", linewidths=0.7)
        title = f"{case.case_id}\nPET MIP (SUV 0-{suv_max:g})"
        row[0].set_title(title, fontsize=9)
        j = pet.shape[1] // 2
        if case.organs is not None and case.organs.array.any():
            # coronal slice through the liver or the body centre
            j = int(np.argmax(np.bincount(np.nonzero(case.organs.array == 3)[1],
                                          minlength=pet.shape[1]))) or j
        row[1].imshow(_coronal(ct[:, j, :]), cmap="gray", vmin=-400, vmax=600, aspect=aspect,
                      interpolation="nearest")
        row[1].set_title(f"CT coronal j={j} (W1000 L100)", fontsize=9)
        k = pet.shape[2] // 2
        if case.organs is not None and (case.organs.array == 3).any():
            k = int(np.median(np.nonzero(case.organs.array == 3)[2]))
        axial = np.flipud(ct[:, :, k].T)[::-1]  # rows j (anterior on top), columns i
        row[2].imshow(axial, cmap="gray", vmin=-1000, vmax=1000, aspect=sy / sx,
                      interpolation="nearest")
        row[2].set_title(f"CT axial k={k} (W2000 L0)", fontsize=9)
        if case.organs is not None:
            org = _coronal(case.organs.array[:, j, :]).astype(float)
            row[3].imshow(_coronal(ct[:, j, :]), cmap="gray", vmin=-400, vmax=600,
                          aspect=aspect, interpolation="nearest")
            row[3].imshow(np.ma.masked_equal(org, 0), cmap="tab10", vmin=1, vmax=10,
                          alpha=0.6, aspect=aspect, interpolation="nearest")
            row[3].set_title("organ label (coronal)", fontsize=9)
        kf = k
        if case.label is not None and case.label.array.any():
            kf = int(np.argmax(case.label.array.sum(axis=(0, 1))))
        ct_ax = np.flipud(ct[:, :, kf].T)[::-1]
        pet_ax = np.flipud(pet[:, :, kf].T)[::-1]
        row[4].imshow(ct_ax, cmap="gray", vmin=-400, vmax=600, aspect=sy / sx,
                      interpolation="nearest")
        row[4].imshow(np.ma.masked_less(pet_ax, 0.5), cmap="hot", vmin=0, vmax=suv_max,
                      alpha=0.55, aspect=sy / sx, interpolation="nearest")
        if case.label is not None and case.label.array[:, :, kf].any():
            row[4].contour(np.flipud(case.label.array[:, :, kf].T)[::-1], levels=[0.5],
                           colors="cyan", linewidths=0.7)
        row[4].set_title(f"PET/CT axial k={kf} (lesions in cyan)", fontsize=9)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return write_figure(fig, out, dpi=80)
