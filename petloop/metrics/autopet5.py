"""autoPET V's scores of an interactive run, as its ``interactive_loop.py`` computes them.

Per iteration (step) of a case the loop records:

- ``dice``: Dice of ``pred > 0`` and ``truth > 0``, **1.0 when both are empty** (unlike autoPET
  IV's Dice, undefined for an empty truth);
- ``dmm``: the F1 of :func:`petloop.metrics.dmm.dmm` (NaN for an empty truth);
- a step where the loop fails (an empty error region, see
  :class:`petloop.clicks.scribbles.OfficialLoopFailure`) scores 0 and 0.

Per case the ranking takes the areas under both curves, ``np.trapz`` over the iteration numbers
(unit spacing; NaN propagates). petloop adds the challenge's FPV and FNV of the DMM (ml) to each
step. The loop writes ``metric_scores.json`` (``{case: [{"iteration", "dice", "dmm"}]}``) and
``metric_scores_AUC.json`` (``{case: {"auc_dice", "auc_dmm"}}``); :func:`loop_scores_json` and
:func:`loop_auc_json` build the same objects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from petloop.metrics.dmm import dmm

STEPS = 6  # the challenge: a prediction without scribbles, then five corrections
LOOP_ITERATIONS = 5  # interactive_loop.py's --max_iters default (its reference run)
METRICS = ("dice", "dmm", "fpv", "fnv")
SCORES_FILE = "metric_scores.json"
AUC_FILE = "metric_scores_AUC.json"


def loop_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """The loop's Dice: ``pred > 0`` against ``truth > 0``, 1.0 when both are empty."""
    p = np.asarray(pred) > 0
    t = np.asarray(truth) > 0
    denom = int(p.sum()) + int(t.sum())
    if denom == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(p & t)) / denom


@dataclass(frozen=True)
class LoopScore:
    """One step's scores: the loop's Dice and DMM, and the DMM's FPV and FNV (ml)."""

    dice: float
    dmm: float
    fpv: float
    fnv: float
    failed: bool = False  # the loop failed here: 0 and 0, no prediction

    @classmethod
    def failure(cls) -> LoopScore:
        return cls(0.0, 0.0, math.nan, math.nan, failed=True)

    def to_json(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in asdict(self).items()}


def score_step(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> LoopScore:
    """The scores the loop gives a prediction (masks as the loop casts them: ``uint8``)."""
    p = np.asarray(pred).astype(np.uint8)
    t = np.asarray(truth).astype(np.uint8)
    d = dmm(p, t, spacing)
    return LoopScore(loop_dice(pred, truth), d.f1, float(d.fpv), float(d.fnv))


def loop_auc(values: Sequence[float]) -> float:
    """``np.trapz(values, iterations)`` at iterations 0, 1, ...: 0.0 below two values, NaN
    propagates."""
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return 0.0
    return float((1.0 * (v[1:] + v[:-1]) / 2.0).sum())


def loop_scores_json(curves: dict[str, Sequence[LoopScore]]) -> dict:
    """``metric_scores.json``: per case, per iteration, Dice and DMM (NaN kept, as ``json``
    writes it)."""
    return {case: [{"iteration": k, "dice": float(s.dice), "dmm": float(s.dmm)}
                   for k, s in enumerate(scores)] for case, scores in curves.items()}


def loop_auc_json(curves: dict[str, Sequence[LoopScore]]) -> dict:
    """``metric_scores_AUC.json``: per case, the areas under the Dice and DMM curves."""
    return {case: {"auc_dice": loop_auc([s.dice for s in scores]),
                   "auc_dmm": loop_auc([s.dmm for s in scores])}
            for case, scores in curves.items()}


__all__ = ["AUC_FILE", "LOOP_ITERATIONS", "METRICS", "SCORES_FILE", "STEPS", "LoopScore",
           "loop_auc", "loop_auc_json", "loop_dice", "loop_scores_json", "score_step"]
