"""Where nnU-Net keeps its data, and how petloop points nnU-Net at it.

nnU-Net reads ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` from the
environment (lazily, at each use in 2.8.1) and finds trainers outside its package through
``nnUNet_extTrainer``. :meth:`NnunetPaths.activated` sets all four for the duration of a
``with`` block and puts the environment back afterwards (:func:`trainers_visible` the last one
alone); by default the three data folders lie under one petloop work directory, and the command
line passes the folders its own environment names (:meth:`NnunetPaths.under`). Nothing else in
petloop sets an environment variable outside the command line.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

EXT_TRAINERS = Path(__file__).resolve().parent / "ext_trainers"


@dataclass(frozen=True)
class NnunetPaths:
    raw: Path
    preprocessed: Path
    results: Path

    @classmethod
    def under(cls, workdir: str | Path, environ: dict | None = None) -> NnunetPaths:
        """Folders under ``workdir`` unless ``environ`` (the command line's) names them."""
        env = environ or {}
        w = Path(workdir)
        return cls(Path(env.get("nnUNet_raw") or w / "nnUNet_raw"),
                   Path(env.get("nnUNet_preprocessed") or w / "nnUNet_preprocessed"),
                   Path(env.get("nnUNet_results") or w / "nnUNet_results"))

    @contextlib.contextmanager
    def activated(self) -> Iterator[NnunetPaths]:
        """nnU-Net pointed at these folders (created if missing) and at petloop's trainers for
        the duration of the block; the environment is put back afterwards. Worker processes
        started inside the block inherit it."""
        for p in (self.raw, self.preprocessed, self.results):
            p.mkdir(parents=True, exist_ok=True)
        with environment(nnUNet_raw=self.raw, nnUNet_preprocessed=self.preprocessed,
                         nnUNet_results=self.results), trainers_visible():
            yield self


# held for the whole block, so that blocks in other threads cannot interleave their restores
_lock = threading.RLock()


@contextlib.contextmanager
def environment(**values) -> Iterator[None]:
    """Environment variables set for the duration of a block (nnU-Net reads its settings from
    the environment) and put back as they were afterwards."""
    with _lock:
        old = {k: os.environ.get(k) for k in values}
        os.environ.update({k: str(v) for k, v in values.items()})
        try:
            yield
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@contextlib.contextmanager
def trainers_visible() -> Iterator[None]:
    """nnU-Net finds petloop's trainers by name (training and prediction alike) within the
    block, beside any folders ``nnUNet_extTrainer`` already names."""
    current = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if str(EXT_TRAINERS) in current:
        yield
        return
    with environment(nnUNet_extTrainer=os.pathsep.join([*current, str(EXT_TRAINERS)])):
        yield


@contextlib.contextmanager
def planning_workers() -> Iterator[None]:
    """nnU-Net's planning (its VRAM estimate) sets torch's threads to ``nnUNet_n_proc_DA``,
    which fails at 0 (the command line's choice for training on 2 cores): 1 within the block."""
    if os.environ.get("nnUNet_n_proc_DA") == "0":
        with environment(nnUNet_n_proc_DA=1):
            yield
    else:
        yield


def dataset_name(dataset_id: int, name: str) -> str:
    return f"Dataset{int(dataset_id):03d}_{name}"
