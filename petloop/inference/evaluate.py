"""Interactive evaluation with a model set: the 11 click steps of every case, run through the
session API, with the official clicks or error-driven ones, written as prediction files that the
metrics module then scores."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from petloop.clicks.error_driven import add_next
from petloop.clicks.simulate import simulate_clicks
from petloop.io.clicks import Clicks, write_clicks
from petloop.io.layouts import Case, CaseFiles
from petloop.io.volume import write_volume
from petloop.options import CLICK_MODES, ClickMode  # noqa: F401 - re-exported

from .pipeline import Pipeline, Result, Session


def case_steps(session: Session, files: CaseFiles, *, tracer: str | None = "auto",
               clicks_mode: str = "official", steps: int = 11,
               time_budget: float | None = None) -> Iterator[tuple[Case, Clicks, Result]]:
    """Load one case, set it on ``session`` and run its click steps: ``(case, clicks, result)``
    per step, the clicks placed from its ground truth (official, or error-driven from the
    previous step's mask)."""
    if clicks_mode not in CLICK_MODES:
        raise ValueError(f"unknown click mode {clicks_mode!r}; use one of {CLICK_MODES}")
    case = files.load()
    if case.label is None:
        raise ValueError(f"case {case.case_id} has no ground truth to place clicks from")
    gt = np.asarray(case.label.array) != 0
    official = case.clicks or simulate_clicks(gt.astype(np.uint8), case.pet.array)
    explicit = case.tracer if tracer == "case" else tracer
    session.set_case(case.ct, case.pet, explicit, str(files.ct), str(files.pet))
    clicks = Clicks()
    for k in range(steps):
        if clicks_mode == "official":
            clicks = official.step(k)
        result = session.set_clicks(clicks, time_budget)
        yield case, clicks, result
        if clicks_mode == "error-driven" and k + 1 < steps:
            clicks = add_next(gt, result.mask.array, clicks, fallback=official)


def run_steps(pipeline: Pipeline, cases: Sequence[CaseFiles], out: str | Path, *,
              clicks_mode: str = "official", steps: int = 11, tracer: str | None = "auto",
              time_budget: float | None = None,
              progress: Callable[[str], None] | None = None) -> Path:
    """Write ``<out>/<case>_step{k}.nii.gz`` for k = 0..steps-1 and the clicks used."""
    out = Path(out)
    session = Session(pipeline, background=False)  # steps follow at once: nothing to overlap
    for files in cases:
        for k, (case, clicks, result) in enumerate(case_steps(
                session, files, tracer=tracer, clicks_mode=clicks_mode, steps=steps,
                time_budget=time_budget)):
            write_volume(result.mask, out / f"{case.case_id}_step{k}.nii.gz")
            if k == steps - 1:  # the clicks of the last step hold all the case got
                write_clicks(clicks, out / "clicks" / f"{case.case_id}_clicks.json")
        if progress:
            progress(files.case_id)
    return out


def crossval_model_sets(model_folder: str | Path, folds: Sequence[int],
                        checkpoint: str = "checkpoint_final.pth"):
    """One single-model set per fold of an nnU-Net model folder (every tracer to that fold)."""
    from .modelset import ModelEntry, ModelSet
    from .routing import Routing

    model_folder = Path(model_folder)
    out = {}
    for f in folds:
        ckpt = model_folder / f"fold_{f}" / checkpoint
        if not ckpt.is_file():
            raise FileNotFoundError(f"{ckpt}: fold {f} has no checkpoint")
        entry = ModelEntry(f"fold_{f}", model_folder, (f,), checkpoint)
        route = Routing.single(entry.name)
        out[f] = ModelSet(model_folder, f"{model_folder.name}-fold{f}", {entry.name: entry},
                          {"fdg": route, "psma": route})
    return out


def validation_cases(preprocessed_base: str | Path, fold: int) -> list[str]:
    """The case ids nnU-Net held out for ``fold`` (its splits_final.json)."""
    import json

    splits = Path(preprocessed_base) / "splits_final.json"
    if not splits.is_file():
        raise FileNotFoundError(f"{splits}: no split file; train a numbered fold first")
    folds = json.loads(splits.read_text())
    if fold >= len(folds):
        raise ValueError(f"{splits} has {len(folds)} folds, not fold {fold}")
    return list(folds[fold]["val"])
