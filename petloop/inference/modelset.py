"""Model sets: which nnU-Net model answers which tracer and click count.

A model set is a folder with ``manifest.json``::

    {
      "name": "phantom",
      "tracer_classifier": "tracer_classifier.pt",
      "suv_threshold": {"fdg": 1.5, "psma": 1.0},
      "models": {
        "fdg_v4": {"folder": "fdg_v4/PetloopV4Trainer__petloopCPUPlans__3d_fullres",
                   "folds": ["all"], "checkpoint": "checkpoint_final.pth"},
        "fdg_v3": {"folder": "...", "folds": [0, 1, 2]},
        "fdg_v3b": {"folder": "...", "checkpoint": ["checkpoint_final.pth", "run2.pth"]},
        "psma_v2": {"folder": "..."}
      },
      "routing": {
        "fdg": [{"model": "fdg_v4", "max_background_clicks": 4}, {"model": "fdg_v3"}],
        "psma": [{"model": "psma_v2"}]
      },
      "inference": {"window": "whole", "mirrors": 7}
    }

Several folds, or several checkpoint files per fold, make an ensemble: every one of them runs
and their softmax outputs are averaged. Paths are relative to the manifest (absolute paths work
too, e.g. a downloaded BIRTH model folder
``Dataset723_.../autoPET3_Trainer__ResEncL_Plan__3d_fullres_patch192_bs2``). For each
tracer the first route whose conditions admit the clicks is used: ``max_background_clicks`` (at
most that many background clicks) and ``min_foreground_clicks`` (at least that many lesion
clicks), each optional. The default is the BIRTH rule: FDG the stochastic model below 5
background clicks and the full-guidance model from 5 on, PSMA one model. petloop's
``birth-fg`` variant keeps the stochastic model while no lesion has been clicked::

    "fdg": [{"model": "fdg_v4", "max_background_clicks": 4},
            {"model": "fdg_v3", "min_foreground_clicks": 1}, {"model": "fdg_v4"}]

After prediction, voxels below the tracer's SUV threshold are set to background.

``inference`` (optional) is how the set's models are best run, the defaults of every command
that predicts with it: ``window`` is ``sliding`` (nnU-Net's tiles of the training patch size,
half overlapping, Gaussian-weighted; the default) or ``whole`` (one pass over the whole volume,
padded to what the network's pooling divides, where that is at most four patches' worth of
voxels; sliding otherwise); ``mirrors`` (0 to 7) is how many mirrored passes (test-time
augmentation) each prediction makes; ``budget`` (seconds) is the time budget of each step:
mirrored passes are made while what they cost still fits it (:mod:`petloop.inference.engine`).
Without either there is no mirroring; a budget also caps ``mirrors``. A budget given to a
command replaces the set's. ``crop`` is ``none`` (the default: the networks see the whole image,
as nnU-Net's predictor would) or ``body`` (only the CT's body box, :mod:`petloop.inference.body`,
with nothing marked outside it: on the autoPET grid about a third of the voxels).
``tile_step`` is the sliding window's step as a fraction of the patch (nnU-Net's
``tile_step_size``): 0.5, the default, overlaps tiles by half; 1.0 lays them edge to edge, about
eight times fewer tiles over a volume and per click. ``budget_mode`` is how a budget chooses the
mirrored passes: ``tiles`` (the default, as above) or ``birth`` (the published BIRTH code's
rule, order and logit average; :mod:`petloop.inference.engine`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from petloop.io.jsonfile import read_json
from petloop.models import MANIFEST
from petloop.options import (
    BUDGET_MODES,
    CROPS,
    WINDOWS,
    BudgetMode,
    Crop,
    Window,
    check_mirrors_and_budget,
)
from petloop.tracer.classifier import TRACERS

from .postprocess import DEFAULT_THRESHOLDS, PostProcessing
from .routing import INTERACTIONS, Interaction, Route, Routing


class ModelSetError(ValueError):
    """A model set folder or manifest is incomplete; the message names what is missing."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    folder: Path
    folds: tuple = ("all",)
    checkpoint: str | tuple[str, ...] = "checkpoint_final.pth"  # several: an ensemble

    @property
    def checkpoints(self) -> tuple[str, ...]:
        return (self.checkpoint,) if isinstance(self.checkpoint, str) else tuple(self.checkpoint)


@dataclass(frozen=True)
class InferenceSettings:
    window: Window = "sliding"
    mirrors: int | None = None  # None: none, or as many as a time budget allows
    budget: float | None = None  # seconds per step for test-time augmentation
    crop: Crop = "none"  # "body": the networks run on the CT's body box only (inference.body)
    #: the sliding window's step as a fraction of the patch (nnU-Net's ``tile_step_size``):
    #: 0.5 (nnU-Net's default) overlaps tiles by half; 1.0 lays them edge to edge, about 8x
    #: fewer tiles over a volume and per click
    tile_step: float = 0.5
    #: how a budget chooses the mirrored passes (petloop.inference.engine): ``tiles`` or
    #: ``birth`` (the published code's rule, order and logit average)
    budget_mode: BudgetMode = "tiles"

    def __post_init__(self):
        if self.window not in WINDOWS:
            raise ValueError(f"unknown window {self.window!r}; use one of {', '.join(WINDOWS)}")
        if self.crop not in CROPS:
            raise ValueError(f"unknown crop {self.crop!r}; use one of {', '.join(CROPS)}")
        check_mirrors_and_budget(self.mirrors, self.budget)
        if (isinstance(self.tile_step, bool) or not isinstance(self.tile_step, (int, float))
                or not 0.1 <= self.tile_step <= 1.0):
            raise ValueError(f"tile_step must be a fraction of the patch from 0.1 to 1, "
                             f"got {self.tile_step!r}")
        if self.budget_mode not in BUDGET_MODES:
            raise ValueError(f"unknown budget_mode {self.budget_mode!r}; use one of "
                             f"{', '.join(BUDGET_MODES)}")

    def override(self, *, window: Window | None = None, mirrors: int | None = None,
                 budget: float | None = None, tile_step: float | None = None,
                 budget_mode: BudgetMode | None = None) -> InferenceSettings:
        """These settings with each option given (not None) in place of its value."""
        given = {"window": window, "mirrors": mirrors, "budget": budget, "tile_step": tile_step,
                 "budget_mode": budget_mode}
        return replace(self, **{k: v for k, v in given.items() if v is not None})

    def to_json(self) -> dict:
        return {"window": self.window,
                **({"mirrors": self.mirrors} if self.mirrors is not None else {}),
                **({"budget": self.budget} if self.budget is not None else {}),
                **({"crop": self.crop} if self.crop != "none" else {}),
                **({"tile_step": self.tile_step} if self.tile_step != 0.5 else {}),
                **({"budget_mode": self.budget_mode} if self.budget_mode != "tiles" else {})}


@dataclass(frozen=True)
class ModelSet:
    root: Path
    name: str
    models: dict[str, ModelEntry]
    routing: dict[str, Routing]
    suv_threshold: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    tracer_classifier: Path | None = None
    inference: InferenceSettings = field(default_factory=InferenceSettings)

    def route(self, tracer: str, n_background: int, n_foreground: int, *,
              interaction: Interaction = "clicks") -> ModelEntry:
        if tracer not in self.routing:
            raise ModelSetError(f"model set {self.root} has no model for tracer {tracer!r}")
        return self.models[self.routing[tracer].model_for(
            n_background, n_foreground, f"model set {self.root}, {tracer}: ",
            interaction=interaction)]

    @property
    def postprocessing(self) -> PostProcessing:
        return PostProcessing(self.suv_threshold)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "tracer_classifier": str(self.tracer_classifier) if self.tracer_classifier else None,
            "suv_threshold": self.suv_threshold,
            "models": {k: {"folder": str(m.folder), "folds": list(m.folds),
                           "checkpoint": m.checkpoint if isinstance(m.checkpoint, str)
                           else list(m.checkpoints)} for k, m in self.models.items()},
            "routing": {t: routing.to_json() for t, routing in self.routing.items()},
            "inference": self.inference.to_json(),
        }


def _need(obj: dict, key: str, where: str):
    if key not in obj:
        raise ModelSetError(f"{where}: missing key {key!r}")
    return obj[key]


def load_model_set(root: str | Path, *, manifest: str | Path | None = None) -> ModelSet:
    """Read and check a model set; every error names the missing file or key. ``manifest``
    reads another manifest file for the set in ``root`` (one about to replace it, say)."""
    root = Path(root)
    manifest = root / MANIFEST if manifest is None else Path(manifest)
    if not manifest.is_file():
        raise ModelSetError(f"{manifest}: no model set manifest here")
    obj = read_json(manifest, ModelSetError, what="model set manifest")
    if not isinstance(obj, dict):
        raise ModelSetError(f"{manifest}: a manifest is a JSON object")
    models = {}
    for key, entry in _need(obj, "models", str(manifest)).items():
        where = f"{manifest}: models.{key}"
        folder = Path(_need(entry, "folder", where))
        folder = folder if folder.is_absolute() else root / folder
        folds = tuple(entry.get("folds", ["all"]))
        checkpoint = entry.get("checkpoint", "checkpoint_final.pth")
        if isinstance(checkpoint, list) and checkpoint and all(
                isinstance(c, str) for c in checkpoint):
            checkpoint = tuple(checkpoint)
        elif not isinstance(checkpoint, str):
            raise ModelSetError(f"{where}.checkpoint must be a file name or a list of them, "
                                f"got {checkpoint!r}")
        for name in ("plans.json", "dataset.json"):
            if not (folder / name).is_file():
                raise ModelSetError(f"{where}: {folder / name} is missing")
        models[key] = ModelEntry(key, folder, folds, checkpoint)
        for f in folds:
            for name in models[key].checkpoints:
                ckpt = folder / f"fold_{f}" / name
                if not ckpt.is_file():
                    raise ModelSetError(f"{where}: {ckpt} is missing")
    routing = {}
    for tracer, routes in _need(obj, "routing", str(manifest)).items():
        if tracer not in TRACERS:
            raise ModelSetError(f"{manifest}: routing for unknown tracer {tracer!r}")
        parsed = []
        for n, r in enumerate(routes):
            model = _need(r, "model", f"{manifest}: routing.{tracer}[{n}]")
            if model not in models:
                raise ModelSetError(f"{manifest}: routing.{tracer}[{n}] names model {model!r}, "
                                    f"which is not in models")
            limits = {}
            for key in ("max_background_clicks", "min_foreground_clicks"):
                v = r.get(key)
                if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                    raise ModelSetError(f"{manifest}: routing.{tracer}[{n}].{key} must be a "
                                        f"whole number of clicks, got {v!r}")
                limits[key] = v
            interaction = r.get("interaction")
            if interaction is not None and interaction not in INTERACTIONS:
                raise ModelSetError(f"{manifest}: routing.{tracer}[{n}].interaction must be one "
                                    f"of {list(INTERACTIONS)}, got {interaction!r}")
            parsed.append(Route(model, **limits, interaction=interaction))
        if not parsed:
            raise ModelSetError(f"{manifest}: routing.{tracer} has no route")
        routing[tracer] = Routing(tuple(parsed))
    thresholds = {**DEFAULT_THRESHOLDS, **obj.get("suv_threshold", {})}
    classifier = obj.get("tracer_classifier")
    if classifier:
        classifier = Path(classifier) if Path(classifier).is_absolute() else root / classifier
        if not classifier.is_file():
            raise ModelSetError(f"{manifest}: tracer_classifier {classifier} is missing")
    inference = obj.get("inference", {})
    fields = ("window", "mirrors", "budget", "crop", "tile_step", "budget_mode")
    if not isinstance(inference, dict) or set(inference) - set(fields):
        raise ModelSetError(f"{manifest}: inference must be an object with "
                            f"{', '.join(fields[:-1])} and/or {fields[-1]}, got {inference!r}")
    try:
        settings = InferenceSettings(**inference)
    except ValueError as exc:
        raise ModelSetError(f"{manifest}: inference: {exc}") from exc
    return ModelSet(root, obj.get("name", root.name), models, routing, thresholds,
                    classifier or None, settings)
