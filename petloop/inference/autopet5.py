"""autoPET V's interaction loop with a model set, and scoring of a loop's saved output.

Per case, as the challenge's ``interactive_loop.py`` runs it: step 0 predicts without
scribbles; each later step adds one scribble drawn from the previous prediction's errors
(:func:`petloop.clicks.scribbles.next_scribbles`) and predicts again with every scribble so far.
Scribbles reach the model as clicks: each stroke voxel is a point of the click file, encoded
into the click channels the way the model set encodes clicks, and the steps route as scribbles
(to a set's scribble models where its manifest has them; ``interaction="clicks"`` gives the
same scribbles to its point models). An empty truth gets no scribble;
where an error region is empty the official loop fails, scores that step and (nothing changing)
every later one 0 and 0, and saves nothing for them; ``empty_region="fixed"`` goes on instead.

Output, in the loop's layout: ``<out>/<case>/iter_{k}.nii.gz`` and ``iter_{k}_scribbles.json``
per step, ``<case>/steps.json`` (what each step added, its scores, the model that answered),
and ``metric_scores.json`` and ``metric_scores_AUC.json`` over all cases (rewritten after each
case).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from petloop.clicks.scribbles import (
    SEED,
    STRATEGIES,
    EmptyRegion,
    OfficialLoopFailure,
    Strategy,
    next_scribbles,
)
from petloop.io.atomic import write_json_atomic
from petloop.io.clicks import Clicks, write_clicks
from petloop.io.layouts import Case, CaseFiles
from petloop.io.volume import read_volume, write_volume
from petloop.metrics.autopet5 import (
    AUC_FILE,
    SCORES_FILE,
    STEPS,
    LoopScore,
    loop_auc_json,
    loop_scores_json,
    score_step,
)
from petloop.metrics.interactive import PRED_SUFFIXES, Evaluation, StepRecord
from petloop.metrics.official import MaskError, binarize
from petloop.options import Interaction

from .pipeline import Result, Session

ALL = "all"
SCRIBBLE_INDENT = 4  # the loop saves iter_k_scribbles.json with indent=4


def case_strategies(case_ids: Sequence[str], strategy: str = ALL) -> dict[str, Strategy]:
    """The strategy of each case: one for all, or with ``"all"`` one third each, in turn
    (centerline, random, boundary) over the cases sorted by name."""
    if strategy != ALL and strategy not in STRATEGIES:
        raise ValueError(f"unknown scribble strategy {strategy!r}; use {ALL!r} or one of "
                         f"{STRATEGIES}")
    ordered = sorted(case_ids)
    return {c: (STRATEGIES[n % len(STRATEGIES)] if strategy == ALL else strategy)  # type: ignore
            for n, c in enumerate(ordered)}


@dataclass(frozen=True)
class LoopStep:
    """One step of the loop on one case."""

    step: int
    scribbles: Clicks  # every scribble voxel so far
    added: str | None  # "tumor", "background" or None (step 0, empty truth, exact prediction)
    score: LoopScore
    result: Result | None  # None where the loop failed

    def to_json(self) -> dict:
        return {"step": self.step, "added": self.added,
                "tumor_voxels": len(self.scribbles.tumor),
                "background_voxels": len(self.scribbles.background),
                "score": self.score.to_json(),
                **({"model": self.result.model, "seconds": {
                    k: round(v, 4) for k, v in self.result.seconds.items()}}
                   if self.result is not None else {})}


def scribble_steps(session: Session, case: Case, *, strategy: Strategy, steps: int = STEPS,
                   tracer: str | None = "auto", seed: int = SEED,
                   empty_region: EmptyRegion = "official", time_budget: float | None = None,
                   interaction: Interaction = "scribbles") -> Iterator[LoopStep]:
    """Set ``case`` on ``session`` and run the loop's steps on it."""
    if case.label is None:
        raise ValueError(f"case {case.case_id} has no ground truth to draw scribbles from")
    truth = np.asarray(case.label.array)
    spacing = case.label.spacing
    session.set_case(case.ct, case.pet, case.tracer if tracer == "case" else tracer,
                     f"CT of {case.case_id}", f"PET of {case.case_id}")
    scribbles, pred, failed = Clicks(), None, False
    empty_truth = not truth.any()
    for k in range(steps):
        added = None
        if k > 0 and not empty_truth:
            if not failed:
                try:
                    step = next_scribbles(truth, pred, scribbles, strategy, seed=seed,
                                          empty_region=empty_region)
                    scribbles, added = step.scribbles, step.added
                except OfficialLoopFailure:
                    failed = True  # the same inputs fail again at every later step
            if failed:
                yield LoopStep(k, scribbles, None, LoopScore.failure(), None)
                continue
        result = session.set_clicks(scribbles, time_budget, interaction=interaction)
        pred = np.asarray(result.mask.array)
        yield LoopStep(k, scribbles, added, score_step(pred, truth, spacing), result)


def run_loop(session: Session, cases: Sequence[CaseFiles], out: str | Path, *, model: str,
             strategy: str = ALL, steps: int = STEPS, tracer: str | None = "auto",
             seed: int = SEED, empty_region: EmptyRegion = "official",
             time_budget: float | None = None, interaction: Interaction = "scribbles",
             progress: Callable[[str], None] | None = None) -> Evaluation:
    """Run the loop on every case, write its output (module text) and return the records."""
    out = Path(out)
    plan = case_strategies([f.case_id for f in cases], strategy)
    ev = Evaluation(n_steps=steps, protocol="autopet5")
    curves: dict[str, list[LoopScore]] = {}
    for files in cases:
        case = files.load()
        folder = out / case.case_id
        negative = case.label is not None and not np.asarray(case.label.array).any()
        log = []
        for s in scribble_steps(session, case, strategy=plan[case.case_id], steps=steps,
                                tracer=tracer, seed=seed, empty_region=empty_region,
                                time_budget=time_budget, interaction=interaction):
            if s.result is not None:
                write_clicks(s.scribbles, folder / f"iter_{s.step}_scribbles.json",
                             indent=SCRIBBLE_INDENT)
                write_volume(s.result.mask, folder / f"iter_{s.step}.nii.gz")
            curves.setdefault(case.case_id, []).append(s.score)
            log.append(s.to_json())
            ev.records.append(StepRecord(
                model, case.case_id, session.tracer.tracer if session.tracer else "unknown",
                negative, s.step, s.score.dice, s.score.fpv, s.score.fnv, s.score.dmm,
                plan[case.case_id]))
        write_json_atomic(folder / "steps.json", {"case": case.case_id,
                                                  "strategy": plan[case.case_id],
                                                  "empty_region": empty_region,
                                                  "interaction": interaction, "steps": log})
        write_json_atomic(out / SCORES_FILE, loop_scores_json(curves), indent=4)
        write_json_atomic(out / AUC_FILE, loop_auc_json(curves), indent=4)
        if progress:
            progress(case.case_id)
    return ev


def _iter_path(case_folder: Path, step: int) -> Path | None:
    for suffix in PRED_SUFFIXES:
        p = case_folder / f"iter_{step}{suffix}"
        if p.is_file():
            return p
    return None


def score_loop_output(cases: Sequence[CaseFiles], folder: str | Path, model: str, *,
                      steps: int = STEPS, strategy: str = ALL, label: int | None = None,
                      progress: Callable[[], None] | None = None) -> Evaluation:
    """Score a loop's saved predictions (``<folder>/<case>/iter_{k}.nii.gz``, the case folder
    also as ``<case>_0000``) under autoPET V's protocol. petloop's ``steps.json`` beside them
    gives each case's strategy (else ``strategy`` does) and the steps where the loop failed
    (scored 0 and 0, as the loop scores them); any other missing step is listed as missing.
    ``label`` picks a class of non-binary masks."""
    folder = Path(folder)
    ev = Evaluation(n_steps=steps, protocol="autopet5")
    plan = case_strategies([f.case_id for f in cases], strategy)
    for files in cases:
        if files.label is None:
            raise MaskError(f"case {files.case_id} has no ground-truth label to evaluate against")
        gt_vol = read_volume(files.label)
        truth = binarize(gt_vol.array, label, name=f"ground truth {files.label}")
        case_folder = next((folder / n for n in (files.case_id, f"{files.case_id}_0000")
                            if (folder / n).is_dir()), folder / files.case_id)
        used, failed = plan[files.case_id], set()
        log = case_folder / "steps.json"
        if log.is_file():
            saved = json.loads(log.read_text(encoding="utf-8"))
            used = str(saved.get("strategy", used))
            failed = {s["step"] for s in saved.get("steps", []) if s["score"].get("failed")}
        for k in range(steps):
            path = _iter_path(case_folder, k)
            if path is None and k in failed:
                s = LoopScore.failure()
                ev.records.append(StepRecord(model, files.case_id, files.tracer or "unknown",
                                             not truth.any(), k, s.dice, s.fpv, s.fnv, s.dmm,
                                             used))
                continue
            if path is None:
                ev.missing.append(f"{model}: {case_folder / f'iter_{k}.nii.gz'}")
                continue
            vol = read_volume(path)
            if not vol.same_grid(gt_vol):
                raise MaskError(f"prediction {path} is on another grid than the ground truth "
                                f"{files.label}: {vol.geometry()} versus {gt_vol.geometry()}")
            s = score_step(binarize(vol.array, label, name=f"prediction {path}"), truth,
                           gt_vol.spacing)
            ev.records.append(StepRecord(model, files.case_id, files.tracer or "unknown",
                                         not truth.any(), k, s.dice, s.fpv, s.fnv, s.dmm, used))
        if progress is not None:
            progress()
    return ev


__all__ = ["ALL", "LoopStep", "case_strategies", "run_loop", "scribble_steps",
           "score_loop_output"]
