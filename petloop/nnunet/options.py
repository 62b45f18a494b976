"""Run options of a training, stored as ``petloop_train.json`` in the fold's output folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

OPTIONS_FILE = "petloop_train.json"


@dataclass(frozen=True)
class TrainOptions:
    epochs: int | None = None
    iterations: int | None = None
    val_iterations: int | None = None
    lr: float | None = None
    schedule: str | None = None
    pretrained: str | None = None
    save_every: int | None = None
    organ_weight: float | None = None
    time_budget: float | None = None  # seconds of training; the epochs are fitted to it


def read_options(output_folder: str | Path | None) -> TrainOptions:
    if output_folder is None:
        return TrainOptions()
    path = Path(output_folder) / OPTIONS_FILE
    if not path.is_file():
        return TrainOptions()
    return TrainOptions(**json.loads(path.read_text()).get("options", {}))
