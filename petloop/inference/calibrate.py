"""Fitting a model set's SUV thresholds on validation cases (``petloop models calibrate``).

BIRTH's post-processing sets every voxel below a fixed SUV to background (1.5 for FDG, 1.0 for
PSMA). Which value helps depends on how the lesions were delineated: a contour drawn on the PET
rarely holds voxels below 1.5, while the true outline of a faint lesion blurred by the scanner
does. So a model set's thresholds are best fitted on labelled cases like those it will see, and
not on the cases it is tested on.

For each tracer, every validation case goes once through the click steps with the set's
routing, with the official clicks and with no threshold; each candidate threshold is then
applied to those same masks. The post-processing is voxel-wise and comes after the network, so
this equals a run with that threshold (a test checks it), at the cost of one run. The masks are
scored with the challenge's metrics; the chosen threshold has the highest mean Dice AUC over the
click steps (the challenge's ranking metric) on the cases with lesions, ties going to the higher
threshold, which removes more. FPV and FNV AUCs, over all cases, are reported beside it.
Error-driven clicks depend on the thresholded masks, so calibration uses the official ones.

With ``routing`` the hand-over of a routing of the BIRTH form (its first model below a number of
background clicks, the next routes from there; BIRTH's FDG rule hands over at 5) is fitted too.
Every model of the routing then runs every click step of every case once. Each candidate
hand-over, from 0 (the first model never answers) to the number of steps (it always does) and
the set's own, takes step by step the mask of the model it routes to, which equals a run with
that routing. Each pair of hand-over and threshold is scored as above and the pair with the
highest Dice AUC wins; ties keep the set's own hand-over, then go to the higher threshold.

With ``clicks="error-driven"`` the hand-over is fitted for clicks placed as a reader places them
(:mod:`petloop.clicks.error_driven`) instead of the official ones, at the set's own threshold:
there each click depends on the mask before it, so a candidate hand-over changes the clicks that
follow, and each candidate runs the case through. Predictions are cached by model and clicks, so
the steps that candidates share (all steps before their hand-overs) run once. Only cases with
lesions take part (as in the demo: a reader's clicks need a lesion to find). Such a fit goes
into ``calibration.json`` under ``handover`` and leaves the thresholds' entry as it was.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from petloop.clicks.error_driven import add_next
from petloop.clicks.simulate import simulate_clicks
from petloop.io.atomic import write_json_atomic, write_text_atomic
from petloop.io.clicks import Clicks
from petloop.io.layouts import CaseFiles
from petloop.metrics.official import auc, compute_metrics

from .evaluate import CLICK_MODES, case_steps
from .modelset import MANIFEST, ModelSetError, load_model_set
from .pipeline import Pipeline, Session
from .postprocess import PostProcessing, apply_suv_threshold
from .routing import Routing

CANDIDATES = (0.0, 0.5, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)
CALIBRATION = "calibration.json"
TIE = 1e-9


def score_case(gt: np.ndarray, masks: Sequence[np.ndarray], pet: np.ndarray,
               spacing: Sequence[float], thresholds: Sequence[float]) -> np.ndarray:
    """Dice, FPV and FNV of one case's unthresholded step masks under every threshold:
    an array of shape (thresholds, steps, 3)."""
    out = np.empty((len(thresholds), len(masks), 3))
    for t, threshold in enumerate(thresholds):
        for k, mask in enumerate(masks):
            m = compute_metrics(gt, apply_suv_threshold(mask, pet, threshold) != 0, spacing)
            out[t, k] = m.dice, m.fpv, m.fnv
    return out


@dataclass(frozen=True)
class ThresholdScore:
    threshold: float
    dice_auc: float  # mean over the cases with lesions of the Dice AUC over the steps
    dice_last: float  # mean Dice at the last step, cases with lesions
    fpv_auc: float  # ml, mean over all cases
    fnv_auc: float  # ml, mean over the cases with lesions
    handover: int | None = None  # background clicks where the routing hands over, if fitted

    def to_json(self) -> dict:
        out = {k: (None if isinstance(v, float) and math.isnan(v) else round(v, 5))
               for k, v in self.__dict__.items() if k != "handover"}
        return out if self.handover is None else {"handover": self.handover, **out}


def _mean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def summarize_scores(per_case: Sequence[np.ndarray], thresholds: Sequence[float],
                     handover: int | None = None) -> tuple[ThresholdScore, ...]:
    """One score per threshold from :func:`score_case` arrays (Dice is NaN without lesions)."""
    out = []
    for t, threshold in enumerate(thresholds):
        dice = [auc(a[t, :, 0]) for a in per_case]
        out.append(ThresholdScore(
            float(threshold), _mean(dice), _mean([a[t, -1, 0] for a in per_case]),
            _mean([auc(a[t, :, 1]) for a in per_case]),
            _mean([auc(a[t, :, 2]) for a in per_case]), handover))
    return tuple(out)


def choose(scores: Sequence[ThresholdScore], keep_handover: int | None = None) -> ThresholdScore:
    """The highest Dice AUC; ties keep the hand-over ``keep_handover``, then go to the higher
    threshold."""
    usable = [s for s in scores if not math.isnan(s.dice_auc)]
    if not usable:
        raise ValueError("no validation case has a lesion: Dice cannot choose a threshold")
    best = max(s.dice_auc for s in usable)
    return max((s for s in usable if s.dice_auc >= best - TIE),
               key=lambda s: (s.handover == keep_handover, s.threshold))


def routed_masks(routing: Routing, masks: dict[str, Sequence[np.ndarray] | dict],
                 counts: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Step by step, the mask of the model that ``routing`` chooses for that step's
    (background, lesion) click counts, from the models' masks indexed by step."""
    return [masks[routing.model_for(n_background, n_foreground)][k]
            for k, (n_background, n_foreground) in enumerate(counts)]


@dataclass(frozen=True)
class TracerCalibration:
    tracer: str
    cases: tuple[str, ...]
    lesion_cases: int
    steps: int
    previous: float
    chosen: float
    scores: tuple[ThresholdScore, ...]
    routing: Routing | None = None  # the fitted routing; None: not fitted
    previous_handover: int | None = None
    chosen_handover: int | None = None
    clicks: str = "official"

    def to_json(self) -> dict:
        fitted = self.routing is not None
        if self.clicks == "official":
            criterion = ("highest mean Dice AUC over the click steps (official clicks), ties "
                         + ("keeping the set's hand-over, then " if fitted else "")
                         + "to the higher threshold")
        else:
            criterion = (f"highest mean Dice AUC over the click steps ({self.clicks} clicks, "
                         "cases with lesions, the set's SUV threshold), ties keeping the set's "
                         "hand-over")
        out = {"tracer": self.tracer, "clicks": self.clicks, "cases": list(self.cases),
               "lesion_cases": self.lesion_cases, "steps": self.steps,
               "previous": self.previous, "chosen": self.chosen}
        if fitted:
            out |= {"previous_handover": self.previous_handover,
                    "chosen_handover": self.chosen_handover,
                    "routing": self.routing.to_json()}
        return out | {"criterion": criterion, "scores": [s.to_json() for s in self.scores]}


def _case_masks(sessions, files, tracer, steps):
    """One case's unthresholded masks of the click steps, run through each session: a dict
    model -> step -> mask (the model each step was routed to), the click counts of each step,
    and the case."""
    masks: dict[str, dict[int, np.ndarray]] = {}
    for session in sessions:
        runs = list(case_steps(session, files, tracer=tracer, steps=steps))
        for k, (_, _, r) in enumerate(runs):
            masks.setdefault(r.model, {})[k] = np.asarray(r.mask.array)
    counts = [(len(c.background), len(c.tumor)) for _, c, _ in runs]
    return masks, counts, runs[0][0]


def error_driven_masks(sessions: dict[str, Session], gt: np.ndarray, pet: np.ndarray,
                       official: Clicks, threshold: float,
                       options: dict[int | None, Routing], steps: int
                       ) -> dict[int | None, list[np.ndarray]]:
    """Per candidate routing, the thresholded masks of a case's click steps with error-driven
    clicks, each step answered by the model the routing chooses for that step's clicks.
    ``sessions`` (one per model, the case set, no threshold) predict each (model, clicks)
    once: the steps before a hand-over are the same for every later one."""
    cache: dict[tuple, np.ndarray] = {}
    out = {}
    for at, routing in options.items():
        clicks, masks = Clicks(), []
        for k in range(steps):
            model = routing.model_for(len(clicks.background), len(clicks.tumor))
            key = (model, clicks.tumor, clicks.background)
            if key not in cache:
                mask = sessions[model].set_clicks(clicks).mask.array
                cache[key] = apply_suv_threshold(mask, pet, threshold)
            masks.append(cache[key])
            if k + 1 < steps:
                clicks = add_next(gt, cache[key], clicks, fallback=official)
        out[at] = masks
    return out


def calibrate_thresholds(pipeline: Pipeline, cases: Sequence[CaseFiles], *,
                         thresholds: Sequence[float] = CANDIDATES, steps: int = 11,
                         tracer: str | None = None,
                         progress: Callable[[str], None] | None = None,
                         routing: bool = False, clicks: str = "official"
                         ) -> dict[str, TracerCalibration]:
    """Fit each tracer's threshold on ``cases`` (their own tracer unless ``tracer`` is given),
    and with ``routing`` where a routing of the BIRTH form hands over; with
    ``clicks="error-driven"`` only the hand-over, for clicks placed where the mask is wrong.

    ``pipeline`` runs the model set (the caller sets device, precision and inference
    settings); its routing and SUV thresholds are the ones fitted. Calibration composes from
    its loaded networks a pipeline per model (one model answering every step) and one with
    the routing, both without post-processing."""
    model_set = pipeline.model_set
    if steps < 2:
        raise ValueError("calibration needs at least 2 click steps for a Dice AUC")
    if clicks not in CLICK_MODES:
        raise ValueError(f"unknown click mode {clicks!r}; use one of {', '.join(CLICK_MODES)}")
    if clicks != "official" and not routing:
        raise ValueError("error-driven clicks fit the routing's hand-over only (add --routing): "
                         "the SUV thresholds are fitted with the official clicks, since "
                         "error-driven ones depend on the thresholded masks")
    if not cases:
        raise ValueError("no validation cases to calibrate on")
    groups: dict[str, list[CaseFiles]] = {}
    for files in cases:
        t = tracer or files.tracer
        if t not in pipeline.routing:
            raise ModelSetError(f"case {files.case_id}: tracer {t!r} is unknown or has no "
                                f"route in {model_set.root} (give it with --tracer)")
        if pipeline.postprocessing.threshold(t) is None:
            raise ValueError(f"the pipeline has no SUV threshold for {t} to start from")
        if files.label is None:
            raise ValueError(f"case {files.case_id}: no lesion label to calibrate against")
        groups.setdefault(t, []).append(files)
    # no threshold while predicting: each candidate is applied to the same masks afterwards
    raw = pipeline.sharing(postprocessing=PostProcessing.none())
    sessions: dict[str, Session] = {}

    def session_for(model: str) -> Session:  # one model answering every click count
        if model not in sessions:
            alone = {t: Routing.single(model) for t in raw.routing}
            sessions[model] = Session(raw.sharing(routing=alone), background=False)
        return sessions[model]

    routed = Session(raw, background=False)
    result = {}
    for t, group in groups.items():
        if clicks != "official":
            if pipeline.routing[t].handover is not None:  # one model: nothing to fit
                result[t] = _fit_error_driven(t, group, pipeline, session_for, steps,
                                              progress)
            elif progress:
                for files in group:
                    progress(files.case_id)
            continue
        current = float(pipeline.postprocessing.threshold(t))
        own = sorted({float(v) for v in thresholds} | {current})
        routes = pipeline.routing[t]
        previous = routes.handover
        fit = routing and previous is not None
        options = ({at: routes.with_handover(at)
                    for at in sorted(set(range(steps + 1)) | {previous})} if fit
                   else {previous: routes})
        per_case: dict[int | None, list[np.ndarray]] = {at: [] for at in options}
        # fitting: every model on every step, each routing picks from them; else the set's
        # routing, once
        runs = [session_for(m) for m in routes.clicks.models] if fit else [routed]
        lesions = 0
        for files in group:
            masks, counts, case = _case_masks(runs, files, t, steps)
            gt = np.asarray(case.label.array) != 0
            lesions += bool(gt.any())
            pet = np.asarray(case.pet.array)
            for at, candidate in options.items():
                per_case[at].append(score_case(gt, routed_masks(candidate, masks, counts), pet,
                                               case.pet.spacing, own))
            if progress:
                progress(files.case_id)
        scores = tuple(sc for at in options
                       for sc in summarize_scores(per_case[at], own, at if fit else None))
        best = choose(scores, previous if fit else None)
        result[t] = TracerCalibration(
            t, tuple(f.case_id for f in group), lesions, steps,
            current, best.threshold, scores,
            options[best.handover] if fit else None, previous if fit else None,
            best.handover if fit else None)
    if not result:
        raise ModelSetError(f"no routing of {model_set.root} for these cases' tracers has a "
                            "hand-over to fit")
    return result


def _fit_error_driven(t: str, group: Sequence[CaseFiles], pipeline: Pipeline,
                      session_for: Callable[[str], Session], steps: int,
                      progress: Callable[[str], None] | None) -> TracerCalibration:
    routes = pipeline.routing[t]
    previous = routes.handover
    threshold = float(pipeline.postprocessing.threshold(t))
    options = {at: routes.with_handover(at)
               for at in sorted(set(range(steps + 1)) | {previous})}
    sessions = {m: session_for(m) for m in routes.clicks.models}
    per_case: dict[int | None, list[np.ndarray]] = {at: [] for at in options}
    used = []
    for files in group:
        case = files.load()
        gt = np.asarray(case.label.array) != 0
        if gt.any():
            pet = np.asarray(case.pet.array)
            official = case.clicks or simulate_clicks(gt.astype(np.uint8), pet)
            for session in sessions.values():
                session.set_case(case.ct, case.pet, t, str(files.ct), str(files.pet))
            masks = error_driven_masks(sessions, gt, pet, official, threshold, options, steps)
            for at, m in masks.items():
                per_case[at].append(score_case(gt, m, pet, case.pet.spacing, [threshold]))
            used.append(files.case_id)
        if progress:
            progress(files.case_id)
    if not used:
        raise ValueError(f"no {t} validation case has a lesion: error-driven clicks need one")
    scores = tuple(sc for at in options for sc in summarize_scores(per_case[at], [threshold], at))
    best = choose(scores, previous)
    return TracerCalibration(t, tuple(used), len(used), steps, threshold, threshold, scores,
                             options[best.handover], previous, best.handover, "error-driven")


def write_calibration(root: str | Path, calibration: dict[str, TracerCalibration],
                      settings: dict | None = None) -> Path:
    """Set the chosen thresholds (and fitted routings) in the model set's manifest and keep the
    scores beside it in ``calibration.json``; both written atomically, the manifest checked
    again afterwards."""
    root = Path(root)
    manifest = root / MANIFEST
    before = manifest.read_text(encoding="utf-8")
    obj = json.loads(before)
    obj["suv_threshold"] = {**obj.get("suv_threshold", {}),
                            **{t: c.chosen for t, c in calibration.items()}}
    for t, c in calibration.items():
        if c.routing is not None:
            obj["routing"][t] = c.routing.to_json()
    previous = root / CALIBRATION  # a tracer calibrated before keeps its entry
    kept = json.loads(previous.read_text(encoding="utf-8")) if previous.is_file() else {}
    entry = {t: {**c.to_json(), **({"settings": settings} if settings else {})}
             for t, c in calibration.items()}
    # thresholds (and a hand-over fitted with them) under suv_threshold; a hand-over fitted
    # with error-driven clicks under handover, the newer of the two fits naming the routing
    official = {t: e for t, e in entry.items() if calibration[t].clicks == "official"}
    reader = {t: e for t, e in entry.items() if calibration[t].clicks != "official"}
    tracers = {**kept.get("suv_threshold", {}), **official}
    handovers = {t: e for t, e in kept.get("handover", {}).items()
                 if not (t in official and calibration[t].routing is not None)} | reader
    # the manifest first, checked, and put back if the check fails; then the scores beside it
    write_json_atomic(manifest, obj)
    try:
        load_model_set(root)
    except Exception:
        write_text_atomic(manifest, before)
        raise
    return write_json_atomic(previous, {"suv_threshold": tracers,
                                        **({"handover": handovers} if handovers else {})})


__all__ = ["CANDIDATES", "CLICK_MODES", "ThresholdScore", "TracerCalibration",
           "apply_suv_threshold", "calibrate_thresholds", "choose", "error_driven_masks",
           "routed_masks", "score_case", "summarize_scores", "write_calibration"]
