"""Entry point for nnU-Net's ``nnUNet_extTrainer`` lookup: petloop's trainer classes by name."""

from petloop.nnunet.trainers import *  # noqa: F401,F403
