"""Where nnU-Net keeps its data, and how petloop points nnU-Net at it.

nnU-Net reads ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` from the
environment (lazily, at each use in 2.8.1) and finds trainers outside its package through
``nnUNet_extTrainer``. :func:`activate` sets all four; by default the three data folders lie
under one petloop work directory, and a folder already set in the environment is kept.
"""

from __future__ import annotations

import os
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

    def activate(self) -> NnunetPaths:
        for p in (self.raw, self.preprocessed, self.results):
            p.mkdir(parents=True, exist_ok=True)
        os.environ["nnUNet_raw"] = str(self.raw)
        os.environ["nnUNet_preprocessed"] = str(self.preprocessed)
        os.environ["nnUNet_results"] = str(self.results)
        register_trainers()
        return self


def register_trainers() -> None:
    """Let nnU-Net find petloop's trainers by name (training and nnUNetv2_predict alike)."""
    current = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if str(EXT_TRAINERS) not in current:
        os.environ["nnUNet_extTrainer"] = os.pathsep.join([*current, str(EXT_TRAINERS)])


def dataset_name(dataset_id: int, name: str) -> str:
    return f"Dataset{int(dataset_id):03d}_{name}"
