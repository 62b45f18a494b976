"""Atomic file writes: write to a temporary file in the target folder, then rename.

An interrupted run therefore never leaves a half-written mask or JSON behind: the target either
keeps its previous content or holds the complete new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _default_mode()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    The temporary name keeps the target's suffixes (``.nii.gz``, ``.mha``) so that libraries that
    pick a format from the file name still write the right one. On error the temporary file is
    removed and ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _FILE_MODE)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write(target: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` and move the result onto ``target`` atomically."""
    with atomic_path(target) as tmp:
        writer(tmp)
    return Path(target)


def write_text_atomic(target: str | os.PathLike, text: str) -> Path:
    return atomic_write(target, lambda p: p.write_text(text, encoding="utf-8"))


def write_json_atomic(target: str | os.PathLike, obj: object, indent: int | None = 2) -> Path:
    return write_text_atomic(target, json.dumps(obj, indent=indent) + "\n")


def write_figure(fig, target: str | os.PathLike, dpi: int = 90) -> Path:
    """Save a matplotlib figure (a ``matplotlib.figure.Figure``, made without pyplot, so no
    backend is chosen and nothing global is kept) as PNG atomically."""
    atomic_write(target, lambda p: fig.savefig(p, dpi=dpi, format="png"))
    return Path(target)
