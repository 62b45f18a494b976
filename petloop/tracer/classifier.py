"""FDG or PSMA from PET MIPs: the public autoPET III classifier's network, and petloop's API.

``MipClassifier`` keeps the published module names (``model_cor``, ``model_sag``, ``linear``) so
that a state dict saved from the public ``tracer_classifier.pt`` loads with strict key matching:
two torchvision ResNet-18 with a one-channel ``conv1`` and ``fc = Identity``, their 512 + 512
features fused by ``linear``; ``sigmoid(logit) > 0.5`` means PSMA.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.models import resnet18

from petloop.io.volume import Volume
from petloop.tracer.mip import mips

TRACERS = ("fdg", "psma")


class TracerError(ValueError):
    """Bad input to the tracer classifier, or weights that do not fit it."""


def _branch() -> nn.Module:
    model = resnet18(weights=None)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=(7, 7), stride=(2, 2), padding=(3, 3), bias=False)
    model.fc = nn.Identity()
    return model


class MipClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.model_cor = _branch()
        self.model_sag = _branch()
        self.linear = nn.Sequential(
            nn.Linear(1024, 512), nn.ReLU(), nn.BatchNorm1d(512), nn.Dropout(p=0.5),
            nn.Linear(512, 128), nn.BatchNorm1d(128), nn.Dropout(p=0.5), nn.Linear(128, 1))

    def forward(self, coronal: torch.Tensor, sagittal: torch.Tensor) -> torch.Tensor:
        features = torch.cat((self.model_cor(coronal), self.model_sag(sagittal)), dim=1)
        return self.linear(features)


def check_pet(pet: Volume, source: str = "PET") -> None:
    arr = np.asarray(pet.array)
    if not np.all(np.isfinite(arr)):
        raise TracerError(f"{source}: the PET holds NaN or infinite values")
    if not (arr > 0).any():
        raise TracerError(f"{source}: the PET has no positive voxel (is it in SUV?)")


def load_weights(model: MipClassifier, weights, source: str = "weights") -> MipClassifier:
    """Strict loading; a file that does not fit names the missing and unexpected keys."""
    if isinstance(weights, (str, Path)):
        path = Path(weights)
        if not path.is_file():
            raise TracerError(f"{path}: no such tracer classifier weights")
        if path.name.endswith(".gz"):  # gzip-compressed weights (bundled model sets)
            import gzip
            import io

            try:
                with gzip.open(path, "rb") as fh:
                    weights = torch.load(io.BytesIO(fh.read()), map_location="cpu",
                                         weights_only=False)
            except (OSError, EOFError) as exc:
                raise TracerError(f"{path}: not a gzip-compressed weights file ({exc})") \
                    from None
        else:
            weights = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(weights, dict) and "state_dict" in weights:
        weights = weights["state_dict"]
    if not isinstance(weights, dict):
        raise TracerError(f"{source}: not a state dict")
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    wrong = [k for k in expected if k in weights and tuple(weights[k].shape) != tuple(
        expected[k].shape)]
    if missing or unexpected or wrong:
        raise TracerError(
            f"{source} does not fit the tracer classifier: {len(missing)} missing key(s) "
            f"{missing[:4]}, {len(unexpected)} unexpected key(s) {unexpected[:4]}, "
            f"{len(wrong)} of another shape {wrong[:4]}")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v
                           for k, v in weights.items()}, strict=True)
    return model


@dataclass(frozen=True)
class TracerPrediction:
    tracer: str
    probability_psma: float

    @property
    def probability(self) -> float:
        """Probability of the predicted tracer."""
        return self.probability_psma if self.tracer == "psma" else 1 - self.probability_psma


class TracerClassifier:
    """Loads weights once; ``predict(pet)`` gives the tracer and its probability."""

    def __init__(self, weights, device: str = "cpu"):
        self.device = torch.device(device)
        self.model = load_weights(MipClassifier(), weights, str(weights)).to(self.device).eval()

    @torch.no_grad()
    def predict(self, pet: Volume, source: str = "PET") -> TracerPrediction:
        check_pet(pet, source)
        cor, sag = mips(pet)
        logit = self.model(cor[None].to(self.device), sag[None].to(self.device))
        p = float(torch.sigmoid(logit).item())
        return TracerPrediction("psma" if p > 0.5 else "fdg", p)


def resolve_tracer(explicit: str | None, pet: Volume, classifier: TracerClassifier | None,
                   source: str = "PET") -> TracerPrediction:
    """An explicit ``fdg``/``psma`` overrides the classifier (probability 1)."""
    if explicit not in (None, "auto"):
        tracer = explicit.lower()
        if tracer not in TRACERS:
            raise TracerError(f"unknown tracer {explicit!r}; use fdg, psma or auto")
        return TracerPrediction(tracer, 1.0 if tracer == "psma" else 0.0)
    if classifier is None:
        raise TracerError("no tracer classifier weights to decide the tracer; give --tracer "
                          "fdg|psma or --weights")
    return classifier.predict(pet, source)
