"""What the server sends as files: volumes as NIfTI bytes, and names safe for a download."""

from __future__ import annotations

import tempfile
from pathlib import Path

from petloop.io.volume import Volume, write_volume


def nifti_bytes(volume: Volume) -> bytes:
    """``volume`` as the bytes of a .nii.gz file."""
    with tempfile.TemporaryDirectory(prefix="petloop-export-") as tmp:
        return write_volume(volume, Path(tmp) / "volume.nii.gz").read_bytes()


def download_name(name: str, fallback: str = "case") -> str:
    """``name`` with every character but letters, digits, ``-``, ``_`` and ``.`` replaced
    (``fallback`` where nothing is left)."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name))
    return safe.strip("._") or fallback


__all__ = ["download_name", "nifti_bytes"]
