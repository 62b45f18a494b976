"""Organ labels for real CT: TotalSegmentator's classes mapped to petloop's 10 organ classes.

SPEC section 7: from the ``total`` task spleen (1), kidneys (2, 3), liver (5), urinary bladder
(21), the five lung lobes (10-14), brain (90), heart (51), stomach (6) and prostate (22); from
``head_glands_cavities`` the parotid and submandibular glands (7, 8, 9, 10: both sides of
each; the published mapping used 6-9, which takes the right optic nerve and misses the left
submandibular gland). TotalSegmentator is an optional extra that downloads its own weights.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from petloop.io.organs import ORGAN_IDS
from petloop.io.volume import Volume, read_volume, write_volume

TOTAL = {1: "spleen", 2: "kidneys", 3: "kidneys", 5: "liver", 21: "urinary_bladder",
         10: "lungs", 11: "lungs", 12: "lungs", 13: "lungs", 14: "lungs", 90: "brain",
         51: "heart", 6: "stomach", 22: "prostate"}
HEAD_GLANDS = {7: "head_glands", 8: "head_glands", 9: "head_glands", 10: "head_glands"}


class OrgansError(RuntimeError):
    """TotalSegmentator is missing or failed."""


def _lut(mapping: dict[int, str], size: int = 256) -> np.ndarray:
    lut = np.zeros(size, dtype=np.uint8)
    for src, name in mapping.items():
        lut[src] = ORGAN_IDS[name]
    return lut


def map_totalsegmentator(total: np.ndarray, head_glands: np.ndarray | None = None) -> np.ndarray:
    """petloop organ classes from TotalSegmentator label maps (head glands fill background)."""
    total = np.asarray(total).astype(np.int64)
    if total.min() < 0 or total.max() > 255:
        raise OrgansError("a TotalSegmentator label map holds ids outside 0..255")
    organs = _lut(TOTAL)[total]
    if head_glands is not None:
        glands = _lut(HEAD_GLANDS)[np.asarray(head_glands).astype(np.int64)]
        organs = np.where(organs == 0, glands, organs)
    return organs


def run_totalsegmentator(ct_path: str | Path, out_path: str | Path, device: str = "gpu",
                         fast: bool = False) -> Volume:
    try:
        from totalsegmentator.python_api import totalsegmentator
    except ImportError as exc:
        raise OrgansError(
            "TotalSegmentator is not installed; install the optional extra "
            "(pip install 'petloop[organs]'); it downloads its own model weights on first use") \
            from exc
    ct = read_volume(ct_path)
    with tempfile.TemporaryDirectory() as tmp:
        total_file = Path(tmp) / "total.nii.gz"
        glands_file = Path(tmp) / "glands.nii.gz"
        try:
            totalsegmentator(str(ct_path), str(total_file), ml=True, task="total", fast=fast,
                             device=device, quiet=True)
            totalsegmentator(str(ct_path), str(glands_file), ml=True, task="head_glands_cavities",
                             device=device, quiet=True)
        except Exception as exc:  # noqa: BLE001 - any failure of the external tool
            raise OrgansError(f"TotalSegmentator failed on {ct_path}: {exc}") from exc
        total = read_volume(total_file).array
        glands = read_volume(glands_file).array
    organs = ct.with_array(map_totalsegmentator(total, glands))
    write_volume(organs, out_path)
    return organs
