"""Training a recipe in-process with nnU-Net's own training loop.

The run options (epochs, iterations, learning rate, schedule, pretrained weights) are saved as
``petloop_train.json`` in the fold's output folder before the trainer is made; the trainer reads
them there, so single-process and nnU-Net's multi-GPU (DDP) runs see the same options and the
results folder records how it was trained.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from petloop.clicks.schedules import ClickSchedule
from petloop.io.atomic import write_json_atomic
from petloop.nnunet.clickspace import click_encoding, with_click_channels
from petloop.nnunet.options import OPTIONS_FILE, TrainOptions, read_options
from petloop.nnunet.paths import NnunetPaths, dataset_name
from petloop.nnunet.pretrained import CheckpointMismatch, _read, load_pretrained
from petloop.nnunet.trainers import (
    RECIPES,
    OnlineClicks,
    OnlineScribbles,
    OrganSupervision,
    scribbles_folder,
)


class TrainingError(ValueError):
    """Bad training input, found before training starts."""


@dataclass(frozen=True)
class TrainConfig:
    dataset_id: int
    dataset: str  # DatasetXXX_Name
    recipe: str
    fold: str = "all"
    configuration: str = "3d_fullres"
    plans: str = "petloopCPUPlans"
    device: str = "cpu"
    num_gpus: int = 1
    validate: bool = False
    continue_training: bool = False
    options: TrainOptions = TrainOptions()

    @property
    def trainer_class(self):
        if self.recipe in RECIPES:
            return RECIPES[self.recipe]
        from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

        try:
            return recursive_find_trainer_class_by_name(self.recipe)
        except RuntimeError as exc:
            raise TrainingError(f"unknown recipe {self.recipe!r}; use one of {sorted(RECIPES)} "
                                "or the name of an nnU-Net trainer") from exc

    def output_folder(self, paths: NnunetPaths) -> Path:
        fold = self.fold if self.fold == "all" else f"{int(self.fold)}"
        return (paths.results / self.dataset /
                f"{self.trainer_class.__name__}__{self.plans}__{self.configuration}" /
                f"fold_{fold}")


def _network(cls, pm, configuration: str, base: Path):
    """The network the trainer will build (to try pretrained weights on it first)."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

    dataset_json = json.loads((base / "dataset.json").read_text())
    if issubclass(cls, OnlineClicks) and click_encoding(dataset_json) is None:
        dataset_json = with_click_channels(dataset_json, cls.click_settings)
    cm = pm.get_configuration(configuration)
    n_in = determine_num_input_channels(pm, cm, dataset_json)
    n_out = pm.get_label_manager(dataset_json).num_segmentation_heads
    return cls.build_network_architecture(pm, cm, n_in, n_out, True)


def check(config: TrainConfig, paths: NnunetPaths) -> None:
    """Everything that can be wrong, before a trainer is made."""
    base = paths.preprocessed / config.dataset
    plans_file = base / f"{config.plans}.json"
    if not plans_file.is_file():
        raise TrainingError(f"{plans_file}: no such plans; build the dataset first "
                            "(petloop dataset build)")
    plans = json.loads(plans_file.read_text())
    if config.configuration not in plans["configurations"]:
        raise TrainingError(f"{plans_file} has no configuration {config.configuration!r}")
    cls = config.trainer_class
    declared = click_encoding(json.loads((base / "dataset.json").read_text()))
    if issubclass(cls, OnlineClicks) and declared is not None:
        raise TrainingError(
            f"{base / 'dataset.json'} declares click channels 2 and 3 in its images "
            f"({declared.mode} heatmaps); recipe {config.recipe} draws its click channels "
            "from the stored clicks itself: build the dataset from CT and PET only")
    if config.options.schedule is not None:
        ClickSchedule.get(config.options.schedule)
    if config.options.time_budget is not None and config.num_gpus > 1:
        raise TrainingError("--time-budget needs a single device: each of several GPUs' "
                            "processes would fit its own number of epochs")
    if config.fold != "all" and not 0 <= int(config.fold) < 5:
        raise TrainingError(f"fold must be 0-4 or 'all', got {config.fold}")
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(str(plans_file))
    if config.options.pretrained is not None:
        try:
            weights = _read(config.options.pretrained)
            load_pretrained(_network(cls, pm, config.configuration, base), weights,
                            source=str(config.options.pretrained))
        except CheckpointMismatch as exc:
            raise TrainingError(str(exc)) from exc
    if issubclass(cls, OrganSupervision):
        ident = pm.get_configuration(config.configuration).data_identifier
        organs = base / "petloop" / "organs" / ident
        cases = sorted(p.name[: -len(".pkl")] for p in (base / ident).glob("*.pkl"))
        missing = [c for c in cases if not (organs / f"{c}.b2nd").is_file()]
        if missing:
            raise TrainingError(f"recipe {config.recipe} needs organ labels; missing for "
                                f"{len(missing)} case(s), e.g. {missing[:3]}")
    if issubclass(cls, OnlineScribbles):
        ident = pm.get_configuration(config.configuration).data_identifier
        cases = sorted(p.name[: -len(".pkl")] for p in (base / ident).glob("*.pkl"))
        pools = scribbles_folder(base)
        missing = [c for c in cases if not (pools / f"{c}_scribbles.json").is_file()]
        if missing:
            raise TrainingError(f"recipe {config.recipe} draws scribbles from each case's pool; "
                                f"{pools} lacks {len(missing)} case(s), e.g. {missing[:3]}: "
                                "rebuild the dataset (petloop dataset build)")


def train(config: TrainConfig, paths: NnunetPaths):
    """Train (and optionally validate) one fold; returns the trainer's output folder."""
    with paths.activated():
        return _train(config, paths)


def _train(config: TrainConfig, paths: NnunetPaths):
    import torch

    check(config, paths)
    out = config.output_folder(paths)
    write_json_atomic(out / OPTIONS_FILE, {"config": {k: v for k, v in asdict(config).items()
                                                      if k != "options"},
                                           "options": asdict(config.options)})
    device = torch.device(config.device)
    if config.num_gpus > 1:
        from nnunetv2.run.run_training import run_training

        run_training(config.dataset, config.configuration, str(config.fold),
                     config.trainer_class.__name__, config.plans, None, config.num_gpus,
                     continue_training=config.continue_training, device=device)
        return out
    from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint

    fold = config.fold if config.fold == "all" else int(config.fold)
    trainer = get_trainer_from_args(config.dataset, config.configuration, fold,
                                    config.trainer_class.__name__, config.plans,
                                    config.continue_training, device=device)
    maybe_load_checkpoint(trainer, config.continue_training, False, None)
    trainer.run_training()
    if config.validate:
        trainer.perform_actual_validation(False)
    return Path(trainer.output_folder)


def dataset_folder_name(dataset_id: int, paths: NnunetPaths) -> str:
    matches = sorted(paths.preprocessed.glob(f"Dataset{int(dataset_id):03d}_*"))
    if not matches:
        raise TrainingError(f"no preprocessed dataset with id {dataset_id} in {paths.preprocessed}")
    return matches[0].name


__all__ = ["TrainConfig", "TrainOptions", "TrainingError", "dataset_name", "read_options", "train"]
