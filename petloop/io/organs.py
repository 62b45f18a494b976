"""The organ label's classes: the 10 organs BIRTH's organ supervision predicts.

An organ label (``ORGANS.nii.gz``, ``organsTr``) holds 0 outside the organs and these class
numbers inside them; the phantoms draw them, TotalSegmentator's classes map onto them
(:mod:`petloop.nnunet.organs`), and the organ-supervised networks predict them.
"""

from __future__ import annotations

ORGAN_CLASSES = {
    1: "spleen", 2: "kidneys", 3: "liver", 4: "urinary_bladder", 5: "lungs",
    6: "brain", 7: "heart", 8: "stomach", 9: "prostate", 10: "head_glands",
}
ORGAN_IDS = {name: idx for idx, name in ORGAN_CLASSES.items()}
N_ORGAN_CLASSES = len(ORGAN_CLASSES)

__all__ = ["N_ORGAN_CLASSES", "ORGAN_CLASSES", "ORGAN_IDS"]
