"""Experiment planners: nnU-Net's residual-encoder planners, and a small one for CPUs.

``cpu`` plans a residual-encoder U-Net with fewer features (16 to 128) and blocks
(1, 2, 2, 2, ...) than ResEnc-M (32 to 320; 1, 3, 4, 6, ...), and a patch sized for a few
seconds per iteration on two cores. ``resenc_m`` and ``resenc_l`` are nnU-Net's presets (ResEnc-L
is what the published BIRTH and autoPET III models use).

After planning, petloop normalises the PET channel like CT: clipped to the dataset's foreground
percentiles and z-scored with the dataset's statistics (as the autoPET III winner's plans do),
so that SUV keeps its meaning across images instead of being z-scored per image.
"""

from __future__ import annotations

from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import (
    ExperimentPlanner,
)
from nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners import (  # noqa: E501
    ResEncUNetPlanner,
    nnUNetPlannerResEncL,
    nnUNetPlannerResEncM,
)


class PetloopCPUPlanner(ResEncUNetPlanner):
    def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor",
                 plans_name: str = "petloopCPUPlans", overwrite_target_spacing=None,
                 suppress_transpose: bool = False):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name,
                         plans_name, overwrite_target_spacing, suppress_transpose)
        self.UNet_base_num_features = 16
        self.UNet_max_features_3d = 128
        self.UNet_max_features_2d = 128
        self.UNet_blocks_per_stage_encoder = (1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2)
        self.UNet_blocks_per_stage_decoder = (1,) * 12
        # a budget that gives patches of about 64^3 voxels for this network
        self.UNet_vram_target_GB = 0.35
        self.UNet_reference_val_corresp_GB = 8
        self.UNet_min_batch_size = 2
        self.max_dataset_covered = 1

    def generate_data_identifier(self, configuration_name: str) -> str:
        return f"{self.plans_identifier}_{configuration_name}"


PLANNERS: dict[str, type[ExperimentPlanner]] = {
    "cpu": PetloopCPUPlanner,
    "resenc_m": nnUNetPlannerResEncM,
    "resenc_l": nnUNetPlannerResEncL,
    "default": ExperimentPlanner,
}


def planner_class(name: str) -> type[ExperimentPlanner]:
    if name not in PLANNERS:
        raise ValueError(f"unknown planner {name!r}; use one of {sorted(PLANNERS)}")
    return PLANNERS[name]


def normalise_pet_like_ct(plans: dict) -> dict:
    """CT normalisation (dataset-wide statistics) for every channel of every configuration."""
    for conf in plans["configurations"].values():
        if "normalization_schemes" in conf:
            conf["normalization_schemes"] = ["CTNormalization"] * len(
                conf["normalization_schemes"])
    return plans
