"""nnU-Net trainers for click-guided lesion segmentation: short subclasses of nnU-Net's trainer.

Two mixins carry what the paper adds, each overriding a few of nnU-Net's hooks:

* :class:`OnlineClicks` declares two click input channels (petloop's ``fixed`` mode, see
  :mod:`petloop.nnunet.clickspace`), draws k from the trainer's click schedule for every sample
  and renders the channels for that sample's patch before the spatial augmentation; intensity
  augmentation leaves them alone.
* :class:`OnlineScribbles` shows scribbles in the same two channels: k interactions drawn
  from the trainer's schedule, each a stroke of the case's scribble pool (autoPET V).
* :class:`OrganSupervision` builds the organ-headed network, reads the organ label as a second
  segmentation channel (through nnU-Net's previous-stage mechanism, so it goes through the same
  augmentation), and adds the organ Dice+CE loss 1:1 to the lesion loss.

The recipes are named after the paper's models (V0 to V4); ``autoPET3_Trainer`` and
``nnUNetTrainer_finetune`` carry the names of the published trainers so that their model folders
load in petloop unchanged.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from torch import nn

from petloop.clicks.schedules import ClickSchedule
from petloop.nnunet.augment import restrict_intensity_transforms
from petloop.nnunet.clickspace import (
    ClickChannels,
    ClickEncoding,
    ClickSource,
    ScribbleSource,
    click_encoding,
    with_click_channels,
)
from petloop.nnunet.options import read_options
from petloop.nnunet.pretrained import load_pretrained

ORGAN_NETWORK = "petloop.nnunet.network.ResidualEncoderUNetOrgan"
CUDA = torch.device("cuda")  # nnU-Net's default device argument


def epochs_within_budget(requested: int, epochs_done: int, elapsed: float,
                         recent_epoch_seconds, budget: float) -> int:
    """How many epochs a run ends after so that it stays within ``budget`` seconds.

    ``epochs_done`` epochs (of the whole training, continued runs included) are finished and
    ``elapsed`` seconds of this run spent; the epochs still to come are assumed to take as long
    as the slowest of the recent ones. Never more than ``requested``, never fewer than done.
    """
    if not recent_epoch_seconds:
        return requested
    per_epoch = max(float(max(recent_epoch_seconds)), 1e-9)
    more = int(max(budget - elapsed, 0.0) // per_epoch)
    return max(epochs_done, min(requested, epochs_done + more))


class _BudgetSpent(Exception):
    """Raised between epochs when the time budget allows no further epoch."""


def organ_folder(preprocessed_base: str | Path, data_identifier: str) -> Path:
    return Path(preprocessed_base) / "petloop" / "organs" / data_identifier


def clicks_folder(preprocessed_base: str | Path) -> Path:
    return Path(preprocessed_base) / "petloop" / "clicks"


def scribbles_folder(preprocessed_base: str | Path) -> Path:
    return Path(preprocessed_base) / "petloop" / "scribbles"


class PetloopBase(nnUNetTrainer):
    """Loss weights and the run-length options every petloop recipe shares."""

    dice_weight = 1.0
    ce_weight = 1.0
    dice_smooth = 1e-5
    recipe_lr: float | None = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = CUDA):
        self.continuing = bool(plans.get("continue_training", False))
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.recipe_lr is not None:
            self.initial_lr = self.recipe_lr
        self.petloop_options = read_options(self.output_folder)

    def initialize(self):
        """Apply the run options, build everything (nnU-Net), then load pretrained weights."""
        o = self.petloop_options
        self.configure(o.epochs, o.iterations, o.val_iterations, o.lr, o.save_every)
        if o.organ_weight is not None and hasattr(self, "organ_weight"):
            self.organ_weight = float(o.organ_weight)
        if o.schedule is not None and hasattr(self, "set_schedule"):
            self.set_schedule(o.schedule)
        super().initialize()
        if o.pretrained and not self.continuing:
            net = self.network.module if self.is_ddp else self.network
            report = load_pretrained(getattr(net, "_orig_mod", net), o.pretrained,
                                     source=str(o.pretrained))
            self.print_to_log_file(f"pretrained weights from {o.pretrained}: {report.summary()}")

    def on_train_start(self):
        self._budget_start, self._epoch_spans, self._last_epoch_start = time.monotonic(), [], None
        super().on_train_start()  # initialises: the run options set num_epochs there
        self._requested_epochs = self.num_epochs

    def on_epoch_start(self):
        now = time.monotonic()
        budget = self.petloop_options.time_budget
        if budget is not None and self._last_epoch_start is not None:
            # from one epoch's start to the next: training, validation and nnU-Net's end-of-epoch
            # work (log, progress plot, checkpoints), which takes a good part of a short epoch
            self._epoch_spans.append(now - self._last_epoch_start)
            fitted = epochs_within_budget(self._requested_epochs, self.current_epoch,
                                          now - self._budget_start, self._epoch_spans[-5:],
                                          budget)
            if fitted != self.num_epochs:
                self.print_to_log_file(f"time budget {budget:.0f} s: training ends after epoch "
                                       f"{fitted - 1} (of {self._requested_epochs} requested)")
                self.num_epochs = fitted
                self.lr_scheduler.max_steps = fitted  # the poly learning rate reaches 0 there
        self._last_epoch_start = now
        if self.current_epoch >= self.num_epochs:
            raise _BudgetSpent
        super().on_epoch_start()

    def run_training(self):
        """nnU-Net's loop; a time budget may end it before the requested epochs."""
        try:
            super().run_training()
        except _BudgetSpent:
            self.on_train_end()

    def configure(self, epochs: int | None = None, iterations: int | None = None,
                  val_iterations: int | None = None, lr: float | None = None,
                  save_every: int | None = None) -> None:
        """Run-length options, so one recipe runs minutes on a CPU or days on a GPU."""
        if epochs is not None:
            self.num_epochs = int(epochs)
        if iterations is not None:
            self.num_iterations_per_epoch = int(iterations)
        if val_iterations is not None:
            self.num_val_iterations_per_epoch = int(val_iterations)
        if lr is not None:
            self.initial_lr = float(lr)
        if save_every is not None:
            self.save_every = int(save_every)

    def _lesion_loss(self) -> nn.Module:
        loss = DC_and_CE_loss(
            {"batch_dice": self.configuration_manager.batch_dice, "smooth": self.dice_smooth,
             "do_bg": False, "ddp": self.is_ddp},
            {}, weight_ce=self.ce_weight, weight_dice=self.dice_weight,
            ignore_label=self.label_manager.ignore_label, dice_class=MemoryEfficientSoftDiceLoss)
        return self._deep_supervision(loss)

    def _deep_supervision(self, loss: nn.Module) -> nn.Module:
        if not self.enable_deep_supervision:
            return loss
        weights = np.array([1 / (2**i) for i in range(len(self._get_deep_supervision_scales()))])
        weights[-1] = 1e-6 if self.is_ddp and not self._do_i_compile() else 0
        return DeepSupervisionWrapper(loss, weights / weights.sum())

    def _build_loss(self):
        if self.label_manager.has_regions:
            return super()._build_loss()
        return self._lesion_loss()


class _DenseClicks:
    """Dataset factory for nnU-Net's final validation: full volumes with the clicks of one step."""

    def __init__(self, base, source: ClickSource):
        self.base, self.source = base, source
        self.get_identifiers = base.get_identifiers

    def __call__(self, folder, identifiers=None, folder_with_segs_from_previous_stage=None):
        return ClickDataset(self.base(folder, identifiers, folder_with_segs_from_previous_stage),
                            self.source, lazy=False, step=self.source.validation_step)


class ClickDataset:
    """Wraps an nnU-Net dataset: ``load_case`` adds the two click channels."""

    def __init__(self, dataset, source: ClickSource, lazy: bool = True, step: int | None = None):
        self.dataset, self.source, self.lazy, self.step = dataset, source, lazy, step
        self.identifiers = dataset.identifiers
        self.source_folder = dataset.source_folder

    def __getitem__(self, identifier):
        return self.load_case(identifier)

    def load_case(self, identifier):
        data, seg, seg_prev, properties = self.dataset.load_case(identifier)
        clicks = self.source.sample(identifier, properties, data.shape[1:], self.step)
        arr = ClickChannels(data, clicks, self.source.encoding)
        return (arr if self.lazy else np.asarray(arr)), seg, seg_prev, properties


class OnlineClicks:
    """Mixin: two click channels rendered per patch from the case's stored clicks."""

    schedule_name = "full"
    click_settings = ClickEncoding()
    n_image_channels = 2

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = CUDA):
        declared = click_encoding(dataset_json)
        if declared is None:
            dataset_json = with_click_channels(dataset_json, self.click_settings)
        elif declared.mode == "published":  # FG/BG heatmaps stored as image channels
            raise ValueError("this dataset's images hold click channels (FG, BG); "
                             f"{type(self).__name__} draws its own from the stored clicks: "
                             "build the dataset from CT and PET only")
        self.schedule = ClickSchedule.get(self.schedule_name)
        super().__init__(plans, configuration, fold, dataset_json, device)

    def set_schedule(self, schedule) -> None:
        self.schedule = ClickSchedule.get(schedule)

    @property
    def click_source(self) -> ClickSource:
        return ClickSource(clicks_folder(self.preprocessed_dataset_folder_base),
                           click_encoding(self.dataset_json), self.schedule,
                           tuple(self.plans_manager.transpose_forward))

    def get_tr_and_val_datasets(self):
        tr, val = super().get_tr_and_val_datasets()
        return ClickDataset(tr, self.click_source), ClickDataset(val, self.click_source)

    def get_training_transforms(self, *args, **kwargs):
        pipeline = nnUNetTrainer.get_training_transforms(*args, **kwargs)
        return restrict_intensity_transforms(pipeline, self.n_image_channels,
                                             getattr(self, "ct_misalignment", False))

    def perform_actual_validation(self, save_probabilities: bool = False):
        base = self.dataset_class
        self.dataset_class = _DenseClicks(base, self.click_source)
        try:
            return super().perform_actual_validation(save_probabilities)
        finally:
            self.dataset_class = base


class OnlineScribbles(OnlineClicks):
    """Mixin: the click channels show scribbles drawn from the case's pool, k interactions per
    sample from the schedule (autoPET V's 0 to 5 by default)."""

    schedule_name = "autopet5"
    click_settings = ClickEncoding(encoding="binary")  # autoPET V's baseline: the voxels, 1

    @property
    def click_source(self) -> ScribbleSource:
        return ScribbleSource(scribbles_folder(self.preprocessed_dataset_folder_base),
                              click_encoding(self.dataset_json), self.schedule,
                              tuple(self.plans_manager.transpose_forward))


class OrganSupervisedLoss(nn.Module):
    """Lesion loss on target channel 0 plus organ loss on channel 1 (1:1). With lesion-only
    network output (validation) only the lesion loss is computed."""

    def __init__(self, lesion: nn.Module, organ: nn.Module, organ_weight: float = 1.0):
        super().__init__()
        self.lesion, self.organ, self.organ_weight = lesion, organ, organ_weight

    def forward(self, output, target):
        def part(t, sl):
            return [x[:, sl] for x in t] if isinstance(t, (list, tuple)) else t[:, sl]

        if isinstance(output, tuple):
            lesion_out, organ_out = output
            return self.lesion(lesion_out, part(target, slice(0, 1))) + self.organ_weight * \
                self.organ(organ_out, part(target, slice(1, 2)))
        return self.lesion(output, part(target, slice(0, 1)))


class OrganSupervision:
    """Mixin: the organ head of the autoPET III winner, trained on 10 organ classes."""

    ct_misalignment = True
    organ_weight = 1.0  # organ loss : lesion loss (1:1 as published)

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = CUDA):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.preprocessed_dataset_folder_base is not None:
            self.folder_with_segs_from_previous_stage = str(organ_folder(
                self.preprocessed_dataset_folder_base, self.configuration_manager.data_identifier))
        self.initial_lr = 1e-3 if getattr(self, "recipe_lr", None) is None else self.recipe_lr

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision=True):
        return get_network_from_plans(
            ORGAN_NETWORK, configuration_manager.network_arch_init_kwargs,
            configuration_manager.network_arch_init_kwargs_req_import, num_input_channels,
            num_output_channels, allow_init=True, deep_supervision=enable_deep_supervision)

    def _net(self):
        net = self.network.module if self.is_ddp else self.network
        return getattr(net, "_orig_mod", net)

    def _build_loss(self):
        organ = DC_and_CE_loss(
            {"batch_dice": self.configuration_manager.batch_dice, "smooth": 0, "do_bg": False,
             "ddp": self.is_ddp}, {}, weight_ce=1, weight_dice=1, ignore_label=None,
            dice_class=MemoryEfficientSoftDiceLoss)
        return OrganSupervisedLoss(self._lesion_loss(), self._deep_supervision(organ),
                                   self.organ_weight)

    def on_train_start(self):
        folder = Path(self.folder_with_segs_from_previous_stage)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder}: no preprocessed organ labels; build the dataset with organ labels "
                "(petloop dataset build) before training an organ-supervised recipe")
        super().on_train_start()

    def train_step(self, batch: dict) -> dict:
        self._net().organ_output = True
        try:
            return super().train_step(batch)
        finally:
            self._net().organ_output = False

    def validation_step(self, batch: dict) -> dict:
        target = batch["target"]
        lesion = [t[:, :1] for t in target] if isinstance(target, list) else target[:, :1]
        return super().validation_step({**batch, "target": lesion})


# recipes (the paper's models) ---------------------------------------------------------------
class PetloopV0Trainer(OnlineClicks, PetloopBase):
    """V0: full guidance (10 clicks), Dice:CE 2:1, Dice smooth 0."""

    schedule_name = "full"
    dice_weight, ce_weight, dice_smooth = 2.0, 1.0, 0.0


class PetloopV1Trainer(OnlineClicks, PetloopBase):
    """V1: fine-tune of V0 with the birth_v1 schedule at lr 2e-4."""

    schedule_name = "birth_v1"
    dice_weight, ce_weight, dice_smooth = 2.0, 1.0, 0.0
    recipe_lr = 2e-4


class PetloopV2Trainer(OnlineClicks, PetloopBase):
    """V2: from single-channel pretrained weights, birth_v2 schedule (the PSMA model)."""

    schedule_name = "birth_v2"
    dice_smooth = 0.0
    recipe_lr = 1e-3


class PetloopV3Trainer(OnlineClicks, OrganSupervision, PetloopBase):
    """V3: organ supervision, pretrained weights, full guidance (FDG, 5+ clicks)."""

    schedule_name = "full"
    dice_smooth = 0.0


class PetloopV4Trainer(OnlineClicks, OrganSupervision, PetloopBase):
    """V4: organ supervision, pretrained weights, birth_v4 schedule (FDG, 0-4 clicks)."""

    schedule_name = "birth_v4"
    dice_smooth = 0.0


class PetloopScribbleTrainer(OnlineScribbles, OrganSupervision, PetloopBase):
    """Scribbles (autoPET V): organ supervision like V3/V4, 0-5 interactions per sample, each
    a stroke of the case's pool, the stroke voxels as 1 in the click channels (the encoding of
    the challenge's baseline)."""

    dice_smooth = 0.0


class PetloopScribbleGaussianTrainer(PetloopScribbleTrainer):
    """Scribbles as the point models see clicks (Gaussian heatmaps, sigma 3, a lone voxel
    peaking at 1): a point model fine-tunes into it without a change of input."""

    click_settings = ClickEncoding()


class PetloopOrganPretrainTrainer(PetloopBase):
    """Single-channel pretraining: organs from CT alone (the multi-dataset pretraining's
    analogue on phantoms); its weights start V2-V4 through channel expansion."""

    dice_smooth = 0.0


# published trainer names ------------------------------------------------------------------------
class autoPET3_Trainer(OrganSupervision, PetloopBase):  # noqa: N801 - the published name
    """The organ-supervised trainer of the autoPET III winner and of BIRTH (clicks, if any, as
    precomputed input channels)."""

    dice_smooth = 0.0


class nnUNetTrainer_finetune(PetloopBase):  # noqa: N801 - the published name
    """The published fine-tuning trainer: nnU-Net's default with Dice smooth 0, lr 1e-3."""

    dice_smooth = 0.0
    recipe_lr = 1e-3


RECIPES = {
    "v0": PetloopV0Trainer, "v1": PetloopV1Trainer, "v2": PetloopV2Trainer,
    "v3": PetloopV3Trainer, "v4": PetloopV4Trainer, "pretrain": PetloopOrganPretrainTrainer,
    "scribbles": PetloopScribbleTrainer, "scribbles_gaussian": PetloopScribbleGaussianTrainer,
}

__all__ = [
    "RECIPES", "PetloopOrganPretrainTrainer", "PetloopScribbleGaussianTrainer",
    "PetloopScribbleTrainer", "PetloopV0Trainer",
    "PetloopV1Trainer", "PetloopV2Trainer", "PetloopV3Trainer", "PetloopV4Trainer",
    "autoPET3_Trainer", "nnUNetTrainer_finetune",
]
