"""Interactive evaluation: metrics at every click step, per case, per model, per tracer.

Predictions for a case are files ``<case>_step{k}.nii.gz`` (also ``.nii`` or ``.mha``),
``k = 0..10``, on the grid of the case's ground truth. Step k is the prediction made with the
first k tumour and first k background clicks.

The ranking numbers are the official ones: Dice, FPV and FNV at the last step and their AUCs
over the steps, each averaged over the cases where it is defined (NaN skipped, as the
official script's pandas mean does), with the number of cases behind each mean. Negative
controls (empty ground truth) have Dice and FNV undefined and count for FPV only.

Under autoPET V's protocol (``protocol="autopet5"``, :mod:`petloop.metrics.autopet5`) the steps
are scribble corrections, each record also holds the DMM (lesion F1) and the strategy that drew
the case's scribbles, and the summary has the same numbers for Dice, DMM, FPV and FNV, with a
breakdown per strategy.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NotRequired, TypedDict

import numpy as np

from petloop.io.layouts import CaseFiles
from petloop.io.volume import Volume, VolumeError, read_volume
from petloop.metrics.official import MaskError, auc, binarize, compute_metrics
from petloop.options import PROTOCOLS, Protocol

N_STEPS = 11
PRED_SUFFIXES = (".nii.gz", ".nii", ".mha")
METRICS = ("dice", "fpv", "fnv")
PROTOCOL_METRICS = {"autopet4": METRICS, "autopet5": ("dice", "dmm", "fpv", "fnv")}


@dataclass(frozen=True)
class StepRecord:
    model: str
    case: str
    tracer: str
    negative: bool
    step: int
    dice: float
    fpv: float
    fnv: float
    dmm: float = math.nan  # autoPET V's lesion F1 (autopet5)
    strategy: str = ""  # the scribble strategy of the case (autopet5)


@dataclass
class Evaluation:
    """All records of one or more models, and what was missing."""

    records: list[StepRecord] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    n_steps: int = N_STEPS
    protocol: Protocol = "autopet4"

    @property
    def metrics(self) -> tuple[str, ...]:
        return PROTOCOL_METRICS[self.protocol]

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(r.model for r in self.records))

    def select(self, model: str | None = None, tracer: str | None = None,
               negative: bool | None = None) -> list[StepRecord]:
        return [r for r in self.records
                if (model is None or r.model == model) and (tracer is None or r.tracer == tracer)
                and (negative is None or r.negative == negative)]


def prediction_path(pred_dir: Path, case: str, step: int) -> Path | None:
    for suffix in PRED_SUFFIXES:
        p = pred_dir / f"{case}_step{step}{suffix}"
        if p.is_file():
            return p
    return None


def load_mask(path: Path, reference: Volume, reference_name: str, label: int | None = None,
              what: str = "prediction") -> np.ndarray:
    vol = read_volume(path)
    if not vol.same_grid(reference):
        raise MaskError(
            f"{what} {path} is on another grid than {reference_name}: {vol.geometry()} versus "
            f"{reference.geometry()}")
    return binarize(vol.array, label, name=f"{what} {path}")


def evaluate_model(cases: Sequence[CaseFiles], pred_dir: str | Path, model: str,
                   n_steps: int = N_STEPS, label: int | None = None,
                   progress=None) -> Evaluation:
    """Metrics of every step of every case; missing step files are listed, not skipped
    silently (a case with a missing step has no AUC)."""
    pred_dir = Path(pred_dir)
    ev = Evaluation(n_steps=n_steps)
    for files in cases:
        if files.label is None:
            raise MaskError(f"case {files.case_id} has no ground-truth label to evaluate against")
        gt_vol = read_volume(files.label)
        gt = binarize(gt_vol.array, label, name=f"ground truth {files.label}")
        tracer = files.tracer or "unknown"
        negative = not gt.any()
        for step in range(n_steps):
            path = prediction_path(pred_dir, files.case_id, step)
            if path is None:
                ev.missing.append(f"{model}: {pred_dir / f'{files.case_id}_step{step}.nii.gz'}")
                continue
            pred = load_mask(path, gt_vol, f"the ground truth {files.label}")
            m = compute_metrics(gt, pred, gt_vol.spacing)
            ev.records.append(StepRecord(model, files.case_id, tracer, negative, step, m.dice,
                                         m.fpv, m.fnv))
        if progress is not None:
            progress()
    return ev


def merge(evaluations: Iterable[Evaluation]) -> Evaluation:
    out = Evaluation()
    for ev in evaluations:
        out.records.extend(ev.records)
        out.missing.extend(ev.missing)
        out.n_steps = ev.n_steps
        out.protocol = ev.protocol
    return out


# summaries ------------------------------------------------------------------------------------
# The summary's one schema (``summary.json`` of ``evaluate`` and the demo): typed here, built
# only by :func:`summarize`, read by the tables, the plots and the demo's findings.
class StepStat(TypedDict):
    """One metric at one click step: mean and sd over the cases where it is defined."""

    step: int
    mean: float
    sd: float
    n: int


class RankingNumber(TypedDict):
    mean: float
    n: int  # cases behind the mean


class Ranking(TypedDict):
    """The official numbers (``{metric}_final``, ``{metric}_auc`` for each metric)."""

    dice_final: RankingNumber
    dice_auc: RankingNumber
    fpv_final: RankingNumber
    fpv_auc: RankingNumber
    fnv_final: RankingNumber
    fnv_auc: RankingNumber
    dmm_final: NotRequired[RankingNumber]  # autopet5
    dmm_auc: NotRequired[RankingNumber]
    cases: int
    incomplete_cases: int


PerStep = dict[str, list[StepStat]]  # metric -> one StepStat per click step


class TracerSummary(TypedDict):
    cases: int
    per_step: PerStep
    ranking: Ranking


class ModelSummary(TypedDict):
    cases: int
    negative_controls: int
    per_step: PerStep
    ranking: Ranking
    tracers: dict[str, TracerSummary]
    strategies: NotRequired[dict[str, TracerSummary]]  # autopet5: per scribble strategy
    negative_fpv: NotRequired[list[StepStat]]  # only where there are negative controls


class Paired(TypedDict):
    """Each model against the first, paired by case: the difference of each metric's AUC."""

    baseline: str
    models: dict[str, dict[str, dict]]  # model -> "{metric}_auc" -> PairedDifference.to_json()


class Summary(TypedDict):
    n_steps: int
    models: dict[str, ModelSummary]
    missing: list[str]
    protocol: NotRequired[str]  # autopet4 where absent
    metrics: NotRequired[list[str]]  # METRICS where absent
    paired: NotRequired[Paired]  # with two models or more


def summary_metrics(summary: Summary) -> tuple[str, ...]:
    return tuple(summary.get("metrics", METRICS))


def _mean_sd_n(values: Sequence[float]) -> tuple[float, float, int]:
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=float)
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def mean_interval(mean: float, sd: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Student's t interval for a mean of ``n`` cases with sample sd ``sd`` (NaN below 2)."""
    from scipy.stats import t

    if n < 2 or math.isnan(mean) or math.isnan(sd):
        return math.nan, math.nan
    half = float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


@dataclass(frozen=True)
class PairedDifference:
    """The mean of ``a - b`` over the cases where both are defined, with its Student t
    interval (NaN for fewer than two cases)."""

    mean: float
    lo: float
    hi: float
    n: int

    @property
    def separates(self) -> bool:
        """Whether the interval excludes 0: the cases tell the two apart."""
        return self.n >= 2 and (self.lo > 0 or self.hi < 0)

    def to_json(self) -> dict:
        return {**asdict(self), "separates": self.separates}

    def text(self, digits: int = 3, unit: str = "",
             bounds: tuple[float, float] = (-math.inf, math.inf)) -> str:
        """E.g. "difference +0.020, 95% CI -0.010 to +0.050 over 9 cases"; the interval is
        clipped to ``bounds``, what the difference can be (Dice: -1 to 1)."""
        f = f"{{:+.{digits}f}}"
        head = f"difference {f.format(self.mean)}{unit}"
        if self.n == 0:
            return "no case has both values"
        if self.n < 2:
            return f"{head} (1 case: no interval)"
        lo, hi = max(self.lo, bounds[0]), min(self.hi, bounds[1])
        return f"{head}, 95% CI {f.format(lo)} to {f.format(hi)} over {self.n} cases"


def paired_difference(a: dict[str, float], b: dict[str, float],
                      level: float = 0.95) -> PairedDifference:
    """``a - b`` paired by case (``{case: value}``), NaN values skipped."""
    diffs = [a[c] - b[c] for c in a if c in b and not (math.isnan(a[c]) or math.isnan(b[c]))]
    mean, sd, n = _mean_sd_n(diffs)
    lo, hi = mean_interval(mean, sd, n, level)
    return PairedDifference(mean, lo, hi, n)


def per_case(records: Iterable[StepRecord], model: str, tracer: str, step: int,
             metric: str) -> dict[str, float]:
    """``{case: value}`` of one metric at one step for one model and tracer."""
    return {r.case: float(getattr(r, metric)) for r in records
            if r.model == model and r.tracer == tracer and r.step == step}


def per_step(records: Sequence[StepRecord], n_steps: int,
             metrics: Sequence[str] = METRICS) -> PerStep:
    """For each metric, per step: mean, sd and the number of cases where it is defined."""
    out: PerStep = {}
    for metric in metrics:
        rows = []
        for step in range(n_steps):
            mean, sd, n = _mean_sd_n([getattr(r, metric) for r in records if r.step == step])
            rows.append(StepStat(step=step, mean=mean, sd=sd, n=n))
        out[metric] = rows
    return out


def case_curves(records: Sequence[StepRecord], n_steps: int,
                metrics: Sequence[str] = METRICS) -> dict[str, dict[str, list]]:
    """case -> metric -> values over the steps (NaN where a step is missing)."""
    curves: dict[str, dict[str, list]] = {}
    for r in records:
        c = curves.setdefault(r.case, {m: [math.nan] * n_steps for m in metrics})
        for m in metrics:
            c[m][r.step] = getattr(r, m)
    return curves


def ranking(records: Sequence[StepRecord], n_steps: int,
            metrics: Sequence[str] = METRICS) -> Ranking:
    """The official numbers: each metric at the last step and its AUC, means over the cases
    where they are defined.

    A case with a missing step has no AUC; it is counted in ``incomplete_cases``."""
    curves = case_curves(records, n_steps, metrics)
    steps_seen: dict[str, int] = {}
    for r in records:
        steps_seen[r.case] = steps_seen.get(r.case, 0) + 1
    complete = {case for case, n in steps_seen.items() if n == n_steps}

    def number(values) -> RankingNumber:
        mean, _, n = _mean_sd_n(values)
        return RankingNumber(mean=mean, n=n)

    out = {}
    for m in metrics:
        out[f"{m}_final"] = number([c[m][-1] for c in curves.values()])
        out[f"{m}_auc"] = number([auc(c[m]) for case, c in curves.items() if case in complete])
    return Ranking(**out, cases=len(curves),  # type: ignore[typeddict-item]
                   incomplete_cases=len(curves) - len(complete))


def summarize(ev: Evaluation) -> Summary:
    """Everything the report needs, per model: all cases, per tracer, negative controls."""
    summary = Summary(n_steps=ev.n_steps, models={}, missing=list(ev.missing),
                      protocol=ev.protocol, metrics=list(ev.metrics))
    metrics, n = ev.metrics, ev.n_steps

    def part(sub: list[StepRecord]) -> TracerSummary:
        return TracerSummary(cases=len({r.case for r in sub}), per_step=per_step(sub, n, metrics),
                             ranking=ranking(sub, n, metrics))

    for model in ev.models:
        recs = ev.select(model)
        cases = {r.case: r for r in recs}
        entry = ModelSummary(cases=len(cases),
                             negative_controls=sum(r.negative for r in cases.values()),
                             per_step=per_step(recs, n, metrics),
                             ranking=ranking(recs, n, metrics), tracers={})
        for tracer in sorted({r.tracer for r in recs}):
            entry["tracers"][tracer] = part([r for r in recs if r.tracer == tracer])
        if ev.protocol == "autopet5":
            entry["strategies"] = {s: part([r for r in recs if r.strategy == s])
                                   for s in sorted({r.strategy for r in recs})}
        negatives = [r for r in recs if r.negative]
        if negatives:
            entry["negative_fpv"] = per_step(negatives, n, metrics)["fpv"]
        summary["models"][model] = entry
    if len(ev.models) > 1:
        summary["paired"] = paired_aucs(ev)
    return summary


def case_aucs(records: Sequence[StepRecord], n_steps: int,
              metrics: Sequence[str] = METRICS) -> dict[str, dict[str, float]]:
    """metric -> {case: AUC} for the cases with every step."""
    curves = case_curves(records, n_steps, metrics)
    steps_seen: dict[str, int] = {}
    for r in records:
        steps_seen[r.case] = steps_seen.get(r.case, 0) + 1
    return {m: {case: auc(c[m]) for case, c in curves.items() if steps_seen[case] == n_steps}
            for m in metrics}


def paired_aucs(ev: Evaluation) -> Paired:
    """Each model's AUCs minus the first model's, paired by case, with Student t intervals."""
    base, *others = ev.models
    ref = case_aucs(ev.select(base), ev.n_steps, ev.metrics)
    out: dict[str, dict[str, dict]] = {}
    for model in others:
        mine = case_aucs(ev.select(model), ev.n_steps, ev.metrics)
        out[model] = {f"{m}_auc": paired_difference(mine[m], ref[m]).to_json()
                      for m in ev.metrics}
    return Paired(baseline=base, models=out)


def records_csv(records: Sequence[StepRecord], protocol: Protocol = "autopet4") -> str:
    """One row per case and step (autopet5 adds the DMM and the scribble strategy)."""
    five = protocol == "autopet5"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["model", "case", "tracer", "negative_control", "step", "dice", "fpv_ml",
                     "fnv_ml", *(("dmm_f1", "strategy") if five else ())])
    fmt = lambda v: "NaN" if math.isnan(v) else repr(float(v))  # noqa: E731
    for r in records:
        writer.writerow([r.model, r.case, r.tracer, int(r.negative), r.step,
                         *(fmt(v) for v in (r.dice, r.fpv, r.fnv)),
                         *((fmt(r.dmm), r.strategy) if five else ())])
    return buf.getvalue()


def to_json_safe(obj):
    """NaN -> None, recursively, so the JSON is standard."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {k: to_json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json_safe(v) for v in obj]
    if isinstance(obj, StepRecord):
        return to_json_safe(asdict(obj))
    return obj


__all__ = [
    "PROTOCOLS", "PROTOCOL_METRICS", "Paired", "Protocol", "case_aucs", "paired_aucs",
    "summary_metrics",
    "Evaluation", "MaskError", "ModelSummary", "PairedDifference", "PerStep", "Ranking",
    "RankingNumber", "StepRecord", "StepStat", "Summary", "TracerSummary", "VolumeError",
    "case_curves",
    "evaluate_model", "load_mask", "mean_interval", "merge", "paired_difference", "per_case",
    "per_step", "prediction_path", "ranking", "records_csv", "summarize", "to_json_safe",
]
