"""The interactive inference pipeline: tracer, routing, prediction, TTA budget, SUV threshold.

``Pipeline`` keeps the tracer classifier and every nnU-Net model it has used loaded.
``Session`` is the interactive API: set a case once (CT onto the PET grid, tracer, nnU-Net's
preprocessing per model are done once), then change the ordered click list (add, remove any,
undo, reset, or jump to other clicks) and read the mask. Every change is one step of the
prediction engine (:mod:`petloop.inference.engine`), which recomputes only the tiles the clicks
changed and gives the mask a full prediction gives.

Routing (:mod:`petloop.inference.routing`) and post-processing
(:mod:`petloop.inference.postprocess`) are the model set's unless a pipeline is given others:
calibration composes a pipeline of one model and no threshold from the same loaded networks.

Test-time augmentation within a time budget (the ``tiles`` budget mode; ``birth`` is the
published code's rule, :mod:`petloop.inference.engine`): the plain work of a step is timed (with
device synchronisation), and mirrored passes follow, in the paper's order x, y, z, xy, xz, yz,
xyz (only over axes the model allows), while what each costs (the tiles it must compute) still
fits the budget; their softmax is averaged. A budget of 0 (or none) means no mirroring. A fixed
number of mirrored passes can be asked for instead (the model set's ``inference.mirrors`` or
``mirrors=``); a budget then caps it. The budget of a step is the model set's
``inference.budget`` unless the pipeline or a call gives one.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from petloop.clicks.clicklist import ClickList
from petloop.io.checks import check_ct, check_pet
from petloop.io.clicks import Clicks
from petloop.io.volume import Volume, resample_to
from petloop.nnunet.adapter import WHOLE_MAX_PATCHES, AdapterError, NetworkAdapter, whole_tile
from petloop.nnunet.predict import Preprocessed
from petloop.options import PRECISIONS, BudgetMode, Precision, RunOptions, Window
from petloop.tracer.classifier import TracerClassifier, TracerPrediction, resolve_tracer

from .engine import CACHE_BYTES, MIRROR_ORDER, Engine, TTAChoice
from .modelset import ModelEntry, ModelSet, ModelSetError
from .postprocess import PostProcessing, apply_suv_threshold
from .routing import Interaction, NoRoute, Routing

__all__ = ["MIRROR_ORDER", "PRECISIONS", "WHOLE_MAX_PATCHES", "Pipeline", "PostProcessing",
           "Result", "Routing", "Session", "TTAChoice", "apply_suv_threshold", "cpu_has_bf16",
           "load_model", "resolve_precision", "whole_tile"]


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
    """A model set, run: ``window``, ``mirrors``, ``budget``, ``tile_step`` and ``budget_mode``
    override the set's ``inference`` settings, ``routing`` (per tracer) and ``postprocessing``
    its routing and SUV thresholds; ``trust_suv`` lets a PET through that does not look like
    SUV (:mod:`petloop.io.checks`)."""

    def __init__(self, model_set: ModelSet, *, device: str = "cpu",
                 precision: Precision = "fp32", window: Window | None = None,
                 mirrors: int | None = None, budget: float | None = None,
                 tile_step: float | None = None, budget_mode: BudgetMode | None = None,
                 routing: Mapping[str, Routing] | None = None,
                 postprocessing: PostProcessing | None = None, trust_suv: bool = False):
        self.model_set = model_set
        self.trust_suv = trust_suv
        self.device = device
        self.precision = resolve_precision(precision, device)
        try:
            self.settings = model_set.inference.override(
                window=window, mirrors=mirrors, budget=budget, tile_step=tile_step,
                budget_mode=budget_mode)
        except ValueError as exc:
            raise ModelSetError(str(exc)) from exc
        self.routing = self._check_routing(model_set.routing if routing is None else routing)
        self.postprocessing = (model_set.postprocessing if postprocessing is None
                               else postprocessing)
        self._models: dict[ModelEntry, NetworkAdapter] = {}
        self._classifier: TracerClassifier | None = None

    @classmethod
    def from_options(cls, model_set: ModelSet, options: RunOptions, **parts) -> Pipeline:
        """The pipeline a command's :class:`~petloop.options.RunOptions` ask for (``parts``:
        ``routing``, ``postprocessing``, ``tile_step``)."""
        return cls(model_set, device=options.device, precision=options.precision,
                   window=options.window, mirrors=options.mirrors, budget=options.budget,
                   budget_mode=options.budget_mode, trust_suv=options.trust_suv, **parts)

    def _check_routing(self, routing: Mapping[str, Routing]) -> dict[str, Routing]:
        for tracer, r in routing.items():
            missing = [m for m in r.models if m not in self.model_set.models]
            if missing:
                raise ModelSetError(f"routing for {tracer} names {', '.join(missing)}, not in "
                                    f"model set {self.model_set.root}")
        return dict(routing)

    def sharing(self, *, model_set: ModelSet | None = None,
                routing: Mapping[str, Routing] | None = None,
                postprocessing: PostProcessing | None = None) -> Pipeline:
        """A pipeline with another model set, routing or post-processing that shares this
        one's loaded networks: a model both list alike is loaded once. The device, precision
        and inference settings are this pipeline's (a new set's own ``inference`` is not
        read); a new set brings its routing and post-processing unless they are given."""
        other = copy.copy(self)  # the same dict of loaded models
        if model_set is not None:
            other.model_set, other._classifier = model_set, None
            other.routing, other.postprocessing = model_set.routing, model_set.postprocessing
        if routing is not None:
            other.routing = routing
        other.routing = other._check_routing(other.routing)
        if postprocessing is not None:
            other.postprocessing = postprocessing
        return other

    def route(self, tracer: str, n_background: int, n_foreground: int, *,
              interaction: Interaction = "clicks") -> ModelEntry:
        """The model that answers a step of ``tracer`` with these click counts (of voxels, for
        scribbles)."""
        if tracer not in self.routing:
            raise ModelSetError(f"model set {self.model_set.root} has no model for tracer "
                                f"{tracer!r}")
        where = f"model set {self.model_set.root}, {tracer}: "
        return self.model_set.models[self.routing[tracer].model_for(
            n_background, n_foreground, where, interaction=interaction)]

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

    def predict(self, ct: Volume, pet: Volume, clicks: Clicks | ClickList | None = None,
                tracer: str | None = "auto", time_budget: float | None = None, *,
                probabilities: bool = False, interaction: Interaction | None = None) -> Result:
        """One prediction from files' volumes: everything checked, nothing kept."""
        session = Session(self, background=False)
        try:
            session.set_case(ct, pet, tracer)
            return session.set_clicks(clicks, time_budget, probabilities=probabilities,
                                      interaction=interaction)
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
        self._keep: np.ndarray | None = None  # [k, j, i] voxels post-processing keeps; None: all
        self.last: Result | None = None

    @property
    def clicks(self) -> ClickList:
        return self._clicks

    @property
    def ready(self) -> bool:
        """Whether a case is set (and the session not closed since)."""
        return self._engine is not None

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
        self._keep = self.pipeline.postprocessing.keep(pet.itk_array(), self.tracer.tracer)
        self._clicks, self.last = ClickList(), None
        return self.tracer

    def _require_case(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("no case set: call set_case first")
        return self._engine

    def change(self, new: ClickList, time_budget: float | None = None, *,
               probabilities: bool = False, interaction: Interaction | None = None) -> Result:
        """Make ``new`` the session's click list and predict; a list with a click outside the
        image leaves the session as it was. ``interaction`` says what the guidance is for
        routing (``clicks`` or ``scribbles``); by default scribbles where the list holds a
        stroke, else clicks."""
        self._require_case()
        new.clicks.check_inside(self.pet.shape, "click")
        result = self._step(new, time_budget, probabilities, interaction)
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
                   *, probabilities: bool = False,
                   interaction: Interaction | None = None) -> Result:
        """Jump to other clicks (click-file clicks or a list; ``interaction="scribbles"`` for
        a scribble file's voxels); undo comes back."""
        self._require_case()
        return self.change(self._clicks.replace(ClickList.of(clicks)), time_budget,
                           probabilities=probabilities, interaction=interaction)

    def run(self, time_budget: float | None = None, *, probabilities: bool = False) -> Result:
        """The mask for the current clicks."""
        return self.change(self._clicks, time_budget, probabilities=probabilities)

    def _step(self, clicks: ClickList, time_budget: float | None, probabilities: bool,
              interaction: Interaction | None = None) -> Result:
        engine = self._require_case()
        t0 = time.perf_counter()
        tracer = self.tracer.tracer
        pts = clicks.clicks
        if interaction is None:
            interaction = "scribbles" if any(c.stroke for c in clicks) else "clicks"
        entry = self.pipeline.route(tracer, len(pts.background), len(pts.tumor),
                                    interaction=interaction)
        adapter = self.pipeline.model(entry)
        settings = self.pipeline.settings
        budget = settings.budget if time_budget is None else time_budget
        work = engine.step(entry.name, adapter, pts, mirrors=settings.mirrors, budget=budget,
                           budget_mode=settings.budget_mode, probabilities=probabilities)
        t1 = time.perf_counter()
        keep = self._keep
        mask = self.pet.with_itk_array(work.mask.copy() if keep is None else work.mask & keep)
        changed = None if work.changed is None else tuple(reversed(work.changed))
        prob = None
        if work.probabilities is not None:
            p = work.probabilities if keep is None else np.where(keep, work.probabilities, 0)
            prob = self.pet.with_itk_array(p.astype(np.float32))
        seconds = {**work.seconds, "threshold": time.perf_counter() - t1}
        seconds["total"] = time.perf_counter() - t0
        self.last = Result(mask, self.tracer, entry.name, work.choice, seconds, clicks, changed,
                           prob)
        if self.background:
            engine.warm(self._next_models(pts, entry, interaction), pts,
                        mirrors=settings.mirrors, budget=budget,
                        budget_mode=settings.budget_mode)
        return self.last

    def _next_models(self, pts: Clicks, current: ModelEntry,
                     interaction: Interaction = "clicks") -> list:
        """The models one more click (of either kind) would route to, other than ``current``."""
        tracer = self.tracer.tracer
        out = []
        for n_bg, n_fg in ((len(pts.background) + 1, len(pts.tumor)),
                           (len(pts.background), len(pts.tumor) + 1)):
            try:
                entry = self.pipeline.route(tracer, n_bg, n_fg, interaction=interaction)
            except NoRoute:
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
