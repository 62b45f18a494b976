"""The interactive inference pipeline: tracer, routing, prediction, TTA budget, SUV threshold.

``Pipeline`` keeps the tracer classifier and every nnU-Net model it has used loaded.
``Session`` is the interactive API: set a case once (CT onto the PET grid, tracer, nnU-Net's
preprocessing per model are done once), then change the ordered click list (add, remove any,
undo, reset, or jump to other clicks) and read the mask. Every change is one step of the
prediction engine (:mod:`petloop.inference.engine`), which recomputes only the tiles the clicks
changed and gives the mask a full prediction gives.

Test-time augmentation within a time budget (done better than the published code, which timed
one tile and multiplied): the plain work of a step is timed (with device synchronisation), and
mirrored passes follow, in the published order x, y, z, xy, xz, yz, xyz (only over axes the model
allows), while what each costs (the tiles it must compute) still fits the budget; their softmax
is averaged. A budget of 0 (or none) means no mirroring. A fixed number of mirrored passes can be
asked for instead (the model set's ``inference.mirrors`` or ``mirrors=``); a budget then caps it.
The budget of a step is the model set's ``inference.budget`` unless a call gives one.

Folds: a model entry with several folds (nnU-Net's five cross-validation folds, BIRTH's PSMA
model "all folds") or several checkpoint files (runs of one model) is an ensemble: each network
makes the plain and the mirrored passes and all their softmax outputs are averaged.

Windows: ``sliding`` is nnU-Net's sliding window (tiles of the training patch size, half
overlapping, Gaussian-weighted); ``whole`` runs the network once over the whole volume, padded to
what its pooling divides, where that is at most ``WHOLE_MAX_PATCHES`` patches' worth of voxels
(sliding otherwise). On the small phantoms' 64 x 64 x 96 grid one whole pass costs a fifth of the
eight tiles, so mirroring becomes affordable (``bench/inference_window.py``); a whole window is
one tile, so every click recomputes it.

Precision: ``fp32``, ``bf16`` (the network runs under CPU autocast to bfloat16; on a CPU with
native bfloat16 instructions, AMX or AVX512-BF16, about three times faster) or ``auto`` (bf16
where the CPU has them, else fp32). On a GPU nnU-Net's own mixed precision applies either way.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from petloop.clicks.clicklist import ClickList
from petloop.io.checks import check_ct, check_pet
from petloop.io.clicks import Clicks
from petloop.io.volume import Volume, resample_to
from petloop.nnunet.adapter import WHOLE_MAX_PATCHES, AdapterError, NetworkAdapter, whole_tile
from petloop.nnunet.predict import Preprocessed
from petloop.options import PRECISIONS, Precision, Window
from petloop.tracer.classifier import TracerClassifier, TracerPrediction, resolve_tracer

from .engine import CACHE_BYTES, MIRROR_ORDER, Engine, TTAChoice
from .modelset import ModelEntry, ModelSet, ModelSetError

__all__ = ["MIRROR_ORDER", "PRECISIONS", "WHOLE_MAX_PATCHES", "Pipeline", "Result", "Session",
           "TTAChoice", "apply_suv_threshold", "cpu_has_bf16", "load_model", "resolve_precision",
           "whole_tile"]


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


def load_model(entry: ModelEntry, device: str, precision: str) -> NetworkAdapter:
    """A model set entry's network; a model without click channels is refused."""
    try:
        adapter = NetworkAdapter(entry.folder, entry.folds, entry.checkpoints, device,
                                 resolve_precision(precision, device))
    except AdapterError as exc:
        raise ModelSetError(f"model {entry.name}: {exc}") from exc
    if adapter.encoding is None:
        raise ModelSetError(f"model {entry.name} ({entry.folder}) has no click channels; "
                            "petloop's pipeline needs an interactive model")
    return adapter


def apply_suv_threshold(mask: np.ndarray, pet: np.ndarray, threshold: float) -> np.ndarray:
    """BIRTH's post-processing: voxels of PET below ``threshold`` (SUV) set to 0."""
    out = np.asarray(mask, dtype=np.uint8).copy()
    out[np.asarray(pet) < threshold] = 0
    return out


@dataclass
class Result:
    """One step: the mask for the session's clicks and how it was made."""

    mask: Volume
    tracer: TracerPrediction
    model: str
    tta: TTAChoice
    seconds: dict = field(default_factory=dict)
    clicks: ClickList = field(default_factory=ClickList)
    changed: tuple | None = None  # the (i, j, k) box of the mask that was recomputed
    probabilities: Volume | None = None  # lesion probability, when asked for

    def summary(self) -> dict:
        return {"model": self.model, "tracer": self.tracer.tracer, "clicks": len(self.clicks),
                "tta": self.tta.describe(), "tiles": self.tta.tiles,
                "tiles_total": self.tta.tiles_total, "incremental": self.tta.incremental,
                "seconds": {k: round(v, 4) for k, v in self.seconds.items()}}


class Pipeline:
    """``window``, ``mirrors``, ``budget`` and ``tile_step`` override the model set's
    ``inference`` settings;
    ``trust_suv`` lets a PET through that does not look like SUV (:mod:`petloop.io.checks`)."""

    def __init__(self, model_set: ModelSet, device: str = "cpu", precision: Precision = "fp32",
                 window: Window | None = None, mirrors: int | None = None, *,
                 budget: float | None = None, tile_step: float | None = None,
                 trust_suv: bool = False):
        self.model_set = model_set
        self.trust_suv = trust_suv
        self.device = device
        self.precision = resolve_precision(precision, device)
        try:
            self.settings = model_set.inference.override(window, mirrors, budget,
                                                         tile_step=tile_step)
        except ValueError as exc:
            raise ModelSetError(str(exc)) from exc
        self._models: dict[ModelEntry, NetworkAdapter] = {}
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

    def model(self, entry: ModelEntry) -> NetworkAdapter:
        if entry not in self._models:
            self._models[entry] = load_model(entry, self.device, self.precision)
        return self._models[entry]

    def tracer(self, pet: Volume, explicit: str | None = None,
               source: str = "PET") -> TracerPrediction:
        classifier = self.classifier if explicit in (None, "auto") else None
        return resolve_tracer(explicit, pet, classifier, source)

    def postprocess(self, mask: Volume, pet: Volume, tracer: str) -> Volume:
        return mask.with_array(apply_suv_threshold(mask.array, pet.array,
                                                   self.model_set.suv_threshold[tracer]))

    def predict(self, ct: Volume, pet: Volume, clicks: Clicks | ClickList | None = None,
                tracer: str | None = "auto", time_budget: float | None = None, *,
                probabilities: bool = False) -> Result:
        """One prediction from files' volumes: everything checked, nothing kept."""
        session = Session(self, background=False)
        try:
            session.set_case(ct, pet, tracer)
            return session.set_clicks(clicks, time_budget, probabilities=probabilities)
        finally:
            session.close()


class Session:
    """Interactive use: one case, then one step per change of the ordered click list.

    With ``background`` (the default), after each step the models the next click could route
    to are brought up to date in a background thread (hand-over without a stall)."""

    def __init__(self, pipeline: Pipeline, *, background: bool = True,
                 cache_bytes: int = CACHE_BYTES):
        self.pipeline = pipeline
        self.background = background
        self.cache_bytes = cache_bytes
        self.ct: Volume | None = None
        self.pet: Volume | None = None
        self.tracer: TracerPrediction | None = None
        self._clicks = ClickList()
        self._engine: Engine | None = None
        self._keep: np.ndarray | None = None  # [k, j, i] voxels at or above the SUV threshold
        self.last: Result | None = None

    @property
    def clicks(self) -> ClickList:
        return self._clicks

    def set_case(self, ct: Volume, pet: Volume, tracer: str | None = "auto",
                 ct_name: str = "CT", pet_name: str = "PET", *,
                 prepared: Sequence[tuple[NetworkAdapter, Preprocessed]] = ()
                 ) -> TracerPrediction:
        """Check and prepare a case; ``prepared`` hands over image channels that nnU-Net's
        preprocessing already made (for the CT on the PET grid)."""
        check_pet(pet, pet_name, trust_suv=self.pipeline.trust_suv)
        check_ct(ct, ct_name)
        self.close()
        self.pet = pet
        self.ct = resample_to(ct, pet, moving_name=ct_name, reference_name=pet_name)
        self.tracer = self.pipeline.tracer(pet, tracer, pet_name)
        self._engine = Engine(self.ct, self.pet, window=self.pipeline.settings.window,
                              crop=self.pipeline.settings.crop,
                              tile_step=self.pipeline.settings.tile_step,
                              cache_bytes=self.cache_bytes)
        for adapter, pre in prepared:
            self._engine.provide(adapter, pre)
        threshold = self.pipeline.model_set.suv_threshold[self.tracer.tracer]
        self._keep = pet.itk_array() >= threshold
        self._clicks, self.last = ClickList(), None
        return self.tracer

    def _require_case(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("no case set: call set_case first")
        return self._engine

    def change(self, new: ClickList, time_budget: float | None = None, *,
               probabilities: bool = False) -> Result:
        """Make ``new`` the session's click list and predict; a list with a click outside the
        image leaves the session as it was."""
        self._require_case()
        new.clicks.check_inside(self.pet.shape, "click")
        result = self._step(new, time_budget, probabilities)
        self._clicks = new
        return result

    def add_click(self, point, kind: str = "tumor", time_budget: float | None = None, *,
                  probabilities: bool = False) -> Result:
        self._require_case()
        return self.change(self._clicks.add(kind, point), time_budget,
                           probabilities=probabilities)

    def remove_click(self, index: int, time_budget: float | None = None, *,
                     probabilities: bool = False) -> Result:
        """Remove click ``index`` (0: the first clicked); :class:`NoSuchClick` if none."""
        self._require_case()
        return self.change(self._clicks.remove(index), time_budget, probabilities=probabilities)

    def undo(self, time_budget: float | None = None, *, probabilities: bool = False) -> Result:
        """Back to the clicks before the last change (an add, a removal, a reset, a jump)."""
        self._require_case()
        return self.change(self._clicks.undo(), time_budget, probabilities=probabilities)

    def reset(self, time_budget: float | None = None, *, probabilities: bool = False) -> Result:
        self._require_case()
        return self.change(self._clicks.reset(), time_budget, probabilities=probabilities)

    def set_clicks(self, clicks: Clicks | ClickList | None, time_budget: float | None = None,
                   *, probabilities: bool = False) -> Result:
        """Jump to other clicks (click-file clicks or a list); undo comes back."""
        self._require_case()
        return self.change(self._clicks.replace(ClickList.of(clicks)), time_budget,
                           probabilities=probabilities)

    def run(self, time_budget: float | None = None, *, probabilities: bool = False) -> Result:
        """The mask for the current clicks."""
        return self.change(self._clicks, time_budget, probabilities=probabilities)

    def _step(self, clicks: ClickList, time_budget: float | None,
              probabilities: bool) -> Result:
        engine = self._require_case()
        t0 = time.perf_counter()
        tracer = self.tracer.tracer
        pts = clicks.clicks
        entry = self.pipeline.model_set.route(tracer, len(pts.background), len(pts.tumor))
        adapter = self.pipeline.model(entry)
        settings = self.pipeline.settings
        budget = settings.budget if time_budget is None else time_budget
        work = engine.step(entry.name, adapter, pts, mirrors=settings.mirrors, budget=budget,
                           probabilities=probabilities)
        t1 = time.perf_counter()
        mask = self.pet.with_itk_array(work.mask & self._keep)  # a new array each step
        changed = None if work.changed is None else tuple(reversed(work.changed))
        prob = None
        if work.probabilities is not None:
            prob = self.pet.with_itk_array(np.where(self._keep, work.probabilities, 0)
                                           .astype(np.float32))
        seconds = {**work.seconds, "threshold": time.perf_counter() - t1}
        seconds["total"] = time.perf_counter() - t0
        self.last = Result(mask, self.tracer, entry.name, work.choice, seconds, clicks, changed,
                           prob)
        if self.background:
            engine.warm(self._next_models(pts, entry), pts, mirrors=settings.mirrors,
                        budget=budget)
        return self.last

    def _next_models(self, pts: Clicks, current: ModelEntry) -> list:
        """The models one more click (of either kind) would route to, other than ``current``."""
        ms, tracer = self.pipeline.model_set, self.tracer.tracer
        out = []
        for n_bg, n_fg in ((len(pts.background) + 1, len(pts.tumor)),
                           (len(pts.background), len(pts.tumor) + 1)):
            try:
                entry = ms.route(tracer, n_bg, n_fg)
            except ModelSetError:
                continue
            if entry != current and entry.name not in [n for n, _ in out]:
                out.append((entry.name, self.pipeline.model(entry)))
        return out

    def close(self, *, wait: bool = True) -> None:
        """Stop background work and free the caches (the session can take a new case);
        without ``wait`` the background thread is told to stop and not waited for."""
        if self._engine is not None:
            self._engine.close(wait)
        self._engine = None
