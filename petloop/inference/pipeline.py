"""The interactive inference pipeline: tracer, routing, prediction, TTA budget, SUV threshold.

``Pipeline`` keeps the tracer classifier and every nnU-Net model it has used loaded.
``Session`` is the interactive API: set a case once (CT onto the PET grid, tracer, nnU-Net's
preprocessing per model are done once), then add clicks, undo, reset and read the mask.

Test-time augmentation within a time budget (done better than the published code, which timed
one tile and multiplied): one plain sliding-window pass over the case is timed (with device
synchronisation), and ``min(int((budget - t) / t), 7)`` mirrored passes follow, in the published
order x, y, z, xy, xz, yz, xyz (only over axes the model allows); their softmax is averaged.
A budget of 0 (or none) means no mirroring. A fixed number of mirrored passes can be asked for
instead (the model set's ``inference.mirrors`` or ``mirrors=``); a budget then caps it.

Folds: a model entry with several folds (nnU-Net's five cross-validation folds, BIRTH's PSMA
model "all folds") or several checkpoint files (runs of one model) is an ensemble. The weights
of each are loaded in turn and each makes the plain and the mirrored passes; all their softmax
outputs are averaged. (nnU-Net's own predictor averages folds too, but its sliding-window call,
which petloop uses for the window and the time budget, runs only the weights the network holds.)
The budget counts one plain pass per network.

Windows: ``sliding`` is nnU-Net's sliding window (tiles of the training patch size, half
overlapping, Gaussian-weighted); ``whole`` runs the network once over the whole volume, padded to
what its pooling divides, where that is at most ``WHOLE_MAX_PATCHES`` patches' worth of voxels
(sliding otherwise). Both go through nnU-Net's own predictor: ``whole`` only sets the tile size
to the padded volume (and Gaussian weighting off) for that pass. On the bundled phantoms'
64 x 64 x 96 grid one whole pass costs a fifth of the eight tiles, so mirroring becomes
affordable (``bench/inference_window.py``).

Precision: ``fp32``, ``bf16`` (the network runs under CPU autocast to bfloat16; on a CPU with
native bfloat16 instructions, AMX or AVX512-BF16, about three times faster) or ``auto`` (bf16
where the CPU has them, else fp32). On a GPU nnU-Net's own mixed precision applies either way.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from petloop.io.checks import check_ct, check_pet
from petloop.io.clicks import Clicks
from petloop.io.volume import Volume, resample_to
from petloop.nnunet.clickspace import click_encoding
from petloop.nnunet.predict import Preprocessed, load_predictor, network_input, preprocess
from petloop.tracer.classifier import TracerClassifier, TracerPrediction, resolve_tracer

from .modelset import MAX_MIRRORS, InferenceSettings, ModelEntry, ModelSet, ModelSetError

# published order x, y, z, xy, xz, yz, xyz as axes of nnU-Net's (z, y, x) arrays
MIRROR_ORDER = ((2,), (1,), (0,), (2, 1), (2, 0), (1, 0), (2, 1, 0))
WHOLE_MAX_PATCHES = 4.0


@dataclass(frozen=True)
class TTAChoice:
    plain_seconds: float
    budget: float | None
    mirrors: tuple[tuple[int, ...], ...]
    window: str = "sliding"  # the window the passes used
    folds: int = 1  # networks (folds and checkpoints): each makes the plain and mirrored passes

    def describe(self) -> str:
        names = {0: "z", 1: "y", 2: "x"}
        flips = ", ".join("".join(names[a] for a in m) for m in self.mirrors) or "none"
        folds = f", {self.folds} networks averaged" if self.folds > 1 else ""
        return (f"{self.window} window{folds}, plain pass {self.plain_seconds:.2f} s, budget "
                f"{'none' if not self.budget else f'{self.budget:g} s'}: mirrored passes {flips}")


def choose_mirrors(plain_seconds: float, budget: float | None, allowed,
                   wanted: int | None = None) -> tuple:
    """The mirrored passes to make: ``wanted`` of them (None: none without a budget, up to 7
    with one), capped by what fits in ``budget`` after the timed plain pass."""
    n = MAX_MIRRORS if wanted is None else wanted
    if budget and budget > 0:
        fit = int((budget - plain_seconds) / plain_seconds) if plain_seconds > 0 else 0
        n = min(n, fit)
    elif wanted is None:
        n = 0
    allowed = set(allowed or ())
    usable = [m for m in MIRROR_ORDER if set(m) <= allowed]
    return tuple(usable[:max(0, n)])


def whole_tile(shape, patch, divisors, max_patches: float = WHOLE_MAX_PATCHES):
    """The tile that covers ``shape`` in one pass: each axis padded up to a multiple of its
    divisor and to at least the patch; None where that exceeds ``max_patches`` patches."""
    tile = [max(int(np.ceil(s / d) * d), p) for s, p, d in zip(shape, patch, divisors,
                                                               strict=True)]
    if np.prod(tile, dtype=np.float64) > max_patches * np.prod(patch, dtype=np.float64):
        return None
    return tile


def pooling_divisors(configuration_manager) -> list[int]:
    """Per axis, the product of the network's strides: what an input size must divide by."""
    strides = np.asarray(configuration_manager.pool_op_kernel_sizes, dtype=np.int64)
    return [int(v) for v in strides.prod(axis=0)]


PRECISIONS = ("auto", "fp32", "bf16")


@functools.cache
def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU has native bfloat16 instructions (AMX or AVX512-BF16; Linux only)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device: str) -> str:
    """``fp32`` or ``bf16``: what a CPU run uses (``auto``: bf16 where the CPU has it)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if not device.startswith("cpu"):
        return "fp32"  # nnU-Net's predictor brings its own autocast on a GPU
    if precision == "auto":
        return "bf16" if cpu_has_bf16() else "fp32"
    return precision


class LoadedModel:
    def __init__(self, entry: ModelEntry, device: str, precision: str = "fp32",
                 settings: InferenceSettings | None = None):
        self.entry = entry
        self.device = device
        self.precision = resolve_precision(precision, device)
        self.settings = settings or InferenceSettings()
        # the whole window changes the predictor's tile size, and folds its network's weights
        self._lock = threading.Lock()
        self.predictor = load_predictor(entry.folder, entry.folds, entry.checkpoints, device,
                                        mirroring=False)
        self.encoding = click_encoding(self.predictor.dataset_json)
        if self.encoding is None:
            raise ModelSetError(f"model {entry.name} ({entry.folder}) has no click channels; "
                                "petloop's pipeline needs an interactive model")
        self.allowed_axes = tuple(self.predictor.allowed_mirroring_axes or ())

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def tile(self, shape) -> list[int] | None:
        """The whole-volume tile for an input of ``shape`` (z, y, x), or None for sliding."""
        if self.settings.window != "whole":
            return None
        cm = self.predictor.configuration_manager
        return whole_tile(shape, cm.patch_size, pooling_divisors(cm))

    @property
    def folds(self) -> int:
        return len(self.predictor.list_of_parameters)

    def _logits(self, data: torch.Tensor, tile) -> torch.Tensor:
        """One pass of the network as it is loaded; the caller holds ``_lock``."""
        autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if self.precision == "bf16"
                    else contextlib.nullcontext())
        cm = self.predictor.configuration_manager
        with autocast:
            if tile is None:
                return self.predictor.predict_sliding_window_return_logits(data)
            # one tile: no Gaussian weights (in nnU-Net's half-precision sum they would only
            # round the logits near the volume's edges, where the weights are small)
            saved = cm.configuration["patch_size"], self.predictor.use_gaussian
            cm.configuration["patch_size"] = list(tile)
            self.predictor.use_gaussian = False
            try:
                return self.predictor.predict_sliding_window_return_logits(data)
            finally:
                cm.configuration["patch_size"], self.predictor.use_gaussian = saved

    def _load_fold(self, n: int) -> None:
        if self.folds > 1:  # one fold's weights stay in the network between predictions
            net = self.predictor.network
            getattr(net, "_orig_mod", net).load_state_dict(self.predictor.list_of_parameters[n])

    def probabilities(self, x: np.ndarray, budget: float | None):
        """Softmax averaged over every fold and mirrored pass. The plain pass of the first fold
        is timed; the budget then counts one plain pass per fold, and the mirrored passes that
        fit are made for every fold."""
        data = torch.from_numpy(x)
        tile = self.tile(data.shape[1:])
        window = "sliding" if tile is None else "whole"
        with self._lock:
            probs, choice = None, None
            for fold in range(self.folds):
                self._load_fold(fold)
                t0 = time.perf_counter()
                logits = self._logits(data, tile)
                self._sync()
                p = torch.softmax(logits.float(), 0)
                if choice is None:
                    plain = (time.perf_counter() - t0) * self.folds
                    mirrors = choose_mirrors(plain, budget, self.allowed_axes,
                                             self.settings.mirrors)
                    choice = TTAChoice(plain, budget, mirrors, window, self.folds)
                for axes in choice.mirrors:
                    dims = tuple(a + 1 for a in axes)
                    flipped = self._logits(torch.flip(data, dims), tile)
                    p += torch.softmax(torch.flip(flipped.float(), dims), 0)
                probs = p if probs is None else probs + p
        probs /= self.folds * (1 + len(choice.mirrors))
        return probs, choice

    def to_mask(self, probs, pre: Preprocessed) -> Volume:
        from petloop.nnunet.predict import logits_to_mask

        return logits_to_mask(self.predictor, torch.log(probs.clamp_min(1e-8)), pre)


def apply_suv_threshold(mask: np.ndarray, pet: np.ndarray, threshold: float) -> np.ndarray:
    """BIRTH's post-processing: voxels of PET below ``threshold`` (SUV) set to 0."""
    out = np.asarray(mask, dtype=np.uint8).copy()
    out[np.asarray(pet) < threshold] = 0
    return out


@dataclass
class Result:
    mask: Volume
    tracer: TracerPrediction
    model: str
    tta: TTAChoice
    seconds: dict = field(default_factory=dict)


class Pipeline:
    """``window`` and ``mirrors`` override the model set's ``inference`` settings;
    ``trust_suv`` lets a PET through that does not look like SUV (:mod:`petloop.io.checks`)."""

    def __init__(self, model_set: ModelSet, device: str = "cpu", precision: str = "fp32",
                 window: str | None = None, mirrors: int | None = None, *,
                 trust_suv: bool = False):
        self.model_set = model_set
        self.trust_suv = trust_suv
        self.device = device
        self.precision = resolve_precision(precision, device)
        try:
            self.settings = model_set.inference.override(window, mirrors)
        except ValueError as exc:
            raise ModelSetError(str(exc)) from exc
        self._models: dict[ModelEntry, LoadedModel] = {}
        self._classifier: TracerClassifier | None = None

    def with_model_set(self, model_set: ModelSet) -> Pipeline:
        """A pipeline for another model set (another routing over the same models, say) that
        shares this one's loaded networks: a model the two sets list alike is loaded once. The
        device, precision and inference settings are this pipeline's; the new set's own
        ``inference`` is not read."""
        other = copy.copy(self)  # the same dict of loaded models
        other.model_set, other._classifier = model_set, None
        return other

    @property
    def classifier(self) -> TracerClassifier | None:
        if self._classifier is None and self.model_set.tracer_classifier is not None:
            self._classifier = TracerClassifier(self.model_set.tracer_classifier, self.device)
        return self._classifier

    def model(self, entry: ModelEntry) -> LoadedModel:
        if entry not in self._models:
            self._models[entry] = LoadedModel(entry, self.device, self.precision, self.settings)
        return self._models[entry]

    def tracer(self, pet: Volume, explicit: str | None = None,
               source: str = "PET") -> TracerPrediction:
        classifier = self.classifier if explicit in (None, "auto") else None
        return resolve_tracer(explicit, pet, classifier, source)

    def postprocess(self, mask: Volume, pet: Volume, tracer: str) -> Volume:
        return mask.with_array(apply_suv_threshold(mask.array, pet.array,
                                                   self.model_set.suv_threshold[tracer]))

    def predict(self, ct: Volume, pet: Volume, clicks: Clicks | None = None,
                tracer: str | None = "auto", time_budget: float | None = None) -> Result:
        """One prediction from files' volumes: everything checked, nothing cached."""
        session = Session(self)
        session.set_case(ct, pet, tracer)
        session.clicks = clicks or Clicks()
        return session.run(time_budget)


class Session:
    """Interactive use: one case, clicks added one at a time, undo and reset."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self.ct: Volume | None = None
        self.pet: Volume | None = None
        self.tracer: TracerPrediction | None = None
        self.clicks = Clicks()
        self._history: list[Clicks] = []
        self._pre: dict[str, Preprocessed] = {}
        self.last: Result | None = None

    def set_case(self, ct: Volume, pet: Volume, tracer: str | None = "auto",
                 ct_name: str = "CT", pet_name: str = "PET") -> TracerPrediction:
        check_pet(pet, pet_name, trust_suv=self.pipeline.trust_suv)
        check_ct(ct, ct_name)
        self.pet = pet
        self.ct = resample_to(ct, pet, moving_name=ct_name, reference_name=pet_name)
        self.tracer = self.pipeline.tracer(pet, tracer, pet_name)
        self.clicks, self._history, self._pre, self.last = Clicks(), [], {}, None
        return self.tracer

    def _require_case(self) -> None:
        if self.pet is None:
            raise RuntimeError("no case set: call set_case first")

    def add_click(self, point, kind: str = "tumor", time_budget: float | None = None) -> Result:
        self._require_case()
        if kind not in ("tumor", "background"):
            raise ValueError(f"a click is 'tumor' or 'background', got {kind!r}")
        new = Clicks(self.clicks.tumor + ((tuple(point),) if kind == "tumor" else ()),
                     self.clicks.background + ((tuple(point),) if kind == "background" else ()))
        new.check_inside(self.pet.shape, f"{kind} click")
        self._history.append(self.clicks)
        self.clicks = new
        return self.run(time_budget)

    def undo(self, time_budget: float | None = None) -> Result:
        self._require_case()
        if self._history:
            self.clicks = self._history.pop()
        return self.run(time_budget)

    def reset(self, time_budget: float | None = None) -> Result:
        self._require_case()
        self._history, self.clicks = [], Clicks()
        return self.run(time_budget)

    def run(self, time_budget: float | None = None) -> Result:
        """The mask for the current clicks (the model chosen by tracer and click count)."""
        self._require_case()
        self.clicks.check_inside(self.pet.shape, "clicks")
        t0 = time.perf_counter()
        tracer = self.tracer.tracer
        entry = self.pipeline.model_set.route(tracer, len(self.clicks.background),
                                                len(self.clicks.tumor))
        model = self.pipeline.model(entry)
        pre = self._pre.get(entry.name)
        if pre is None or model.encoding.mode == "published":
            pre = preprocess(model.predictor, self.ct, self.pet, self.clicks)
            self._pre[entry.name] = pre
        t1 = time.perf_counter()
        x = network_input(model.predictor, pre, self.clicks)
        t2 = time.perf_counter()
        probs, choice = model.probabilities(x, time_budget)
        t3 = time.perf_counter()
        mask = self.pipeline.postprocess(model.to_mask(probs, pre), self.pet, tracer)
        t4 = time.perf_counter()
        self.last = Result(mask, self.tracer, entry.name, choice,
                           {"preprocess": t1 - t0, "clicks": t2 - t1, "network": t3 - t2,
                            "export": t4 - t3, "total": t4 - t0})
        return self.last
