"""What the paper's experiment should show, checked on an evaluation summary.

The claims come from the paper and the project's goals: the hybrid reaches the Dice goal, Dice
rises and FPV falls with the clicks, the model after the routing's hand-over (BIRTH's
full-guidance V3) is worse than the one before it (the stochastic V4) with no clicks and at
least as good with all of them, the hybrid is at least as good as both at every step, PSMA
improves with clicks, and error-driven clicks reach a Dice with fewer clicks. Which column plays
which part comes from the model set's routing (:class:`Roles`), not from model names.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from petloop.inference.routing import Routing
from petloop.metrics.interactive import (
    PairedDifference,
    StepRecord,
    Summary,
    case_curves,
    mean_interval,
    paired_difference,
    per_case,
)
from petloop.metrics.reference import ReferenceScore

N_STEPS = 11
ERROR_DRIVEN = "hybrid_error_driven"
HYBRID = "hybrid"
# Dice levels of the clicks-to-reach count (NoC) that checks the error-driven clicks; the middle
# one is the project's goal, and the paired difference is quoted there
NOC_TARGETS = (0.80, 0.85, 0.90)
NOC_GOAL = 0.85


def short_name(model_key: str) -> str:
    """A model's column name: its key without the tracer prefix (``fdg_v4`` -> ``v4``)."""
    for prefix in ("fdg_", "psma_"):
        if model_key.startswith(prefix):
            return model_key[len(prefix):]
    return model_key


@dataclass(frozen=True)
class Roles:
    """Which columns the comparisons take, from a routing of the hand-over form: the model
    answering before the hand-over (BIRTH: the stochastic V4), the one after it (the
    full-guidance V3), and the hybrid column the routing makes of them."""

    before: str
    after: str
    hybrid: str = HYBRID

    @classmethod
    def of(cls, routing: Routing | None) -> Roles | None:
        """The roles in ``routing`` (None: one model, or no hand-over)."""
        if routing is None or routing.handover is None:
            return None
        first, *rest = routing.clicks.models
        return cls(short_name(first), short_name(rest[0]))


@dataclass(frozen=True)
class Finding:
    claim: str
    observed: str
    holds: bool
    # the claim's difference paired by case, with its 95% interval, where the records are given
    difference: dict | None = None


def _dice_fpv(summary: Summary, model: str, tracer: str, metric: str) -> list[float] | None:
    entry = summary["models"].get(model)
    if entry is None or tracer not in entry["tracers"]:
        return None
    vals = [s["mean"] for s in entry["tracers"][tracer]["per_step"][metric]]
    return [float("nan") if v is None else float(v) for v in vals]


def interval_text(summary: Summary, model: str, tracer: str, step: int) -> str:
    """"; 95% CI lo-hi over n cases" for a mean Dice, where the summary has its sd and n."""
    row = summary["models"][model]["tracers"][tracer]["per_step"]["dice"][step]
    if row.get("sd") is None or not row.get("n"):
        return ""
    n = int(row["n"])
    lo, hi = mean_interval(float(row["mean"]), float(row["sd"]), n)
    if math.isnan(lo):  # one case: no interval
        return f"; {n} case"
    return f"; 95% CI {max(lo, 0.0):.3f} to {min(hi, 1.0):.3f} over {n} cases"


def first_step_reaching(curve: list[float], target: float) -> int | None:
    return next((k for k, v in enumerate(curve) if v >= target - 1e-9), None)


def clicks_to_reach(curve: Sequence[float], target: float) -> int:
    """The clicks one case needs to reach ``target`` Dice (the interactive-segmentation
    literature's NoC@target): its first step at or above it, or the number of steps where it
    never gets there (the count is capped, as NoC's is)."""
    step = first_step_reaching(list(curve), target)
    return len(curve) if step is None else step


def findings(summary: Summary, steps: int = N_STEPS, reference: ReferenceScore | None = None,
             records: Sequence[StepRecord] | None = None, *,
             roles: Roles | None = None) -> list[Finding]:
    """The issue's and the paper's claims, checked on the demo's means (FDG unless noted);
    ``reference`` (the isocontour around the true lesions) is quoted next to the Dice goal;
    ``roles`` (from the FDG routing) name the columns the hand-over comparisons take, and
    without them (one FDG model) those comparisons are left out.
    With the per-case ``records``, each comparison also gets its difference paired by case and
    that difference's 95% interval: the verdict stays the means' own, and the interval says
    whether the cases can tell the two apart at all."""
    last = steps - 1
    out = []

    def paired(model_a, step_a, model_b, step_b, metric, tracer="fdg"
               ) -> PairedDifference | None:
        if records is None:
            return None
        return paired_difference(per_case(records, model_a, tracer, step_a, metric),
                                 per_case(records, model_b, tracer, step_b, metric))

    def finding(claim, observed, holds, diff: PairedDifference | None, unit="") -> Finding:
        if diff is None:
            return Finding(claim, observed, holds)
        bounds = (-math.inf, math.inf) if unit else (-1.0, 1.0)  # Dice differences
        return Finding(claim, f"{observed}; {diff.text(unit=unit, bounds=bounds)}", holds,
                       diff.to_json())

    fdg_models = [m for m, e in summary["models"].items() if "fdg" in e["tracers"]
                  and m != ERROR_DRIVEN]
    hybrid = roles.hybrid if roles is not None else HYBRID
    main = hybrid if hybrid in fdg_models else (fdg_models[0] if fdg_models else None)
    if main is not None:
        dice = _dice_fpv(summary, main, "fdg", "dice")
        fpv = _dice_fpv(summary, main, "fdg", "fpv")
        ref = (f" (isocontour reference: {reference.dice:.3f})"
               if reference is not None and reference.cases else "")
        out.append(Finding(f"{main}: Dice at {last} clicks at least 0.85",
                           f"{dice[last]:.3f}{ref}{interval_text(summary, main, 'fdg', last)}",
                           dice[last] >= 0.85))
        out.append(finding(f"{main}: Dice rises with the clicks (step {last} above step 0 by "
                           "at least 0.05)", f"{dice[0]:.3f} to {dice[last]:.3f}",
                           dice[last] - dice[0] >= 0.05,
                           paired(main, last, main, 0, "dice")))
        out.append(finding(f"{main}: FPV at step {last} below FPV at step 0",
                           f"{fpv[0]:.3f} to {fpv[last]:.3f} ml", fpv[last] < fpv[0],
                           paired(main, last, main, 0, "fpv"), " ml"))
    if roles is not None:
        out += _handover_findings(summary, steps, roles, paired, finding)
    psma = [m for m, e in summary["models"].items() if "psma" in e["tracers"]]
    for m in psma:
        d = _dice_fpv(summary, m, "psma", "dice")
        out.append(finding(f"PSMA {m}: Dice rises with the clicks (by at least 0.05)",
                           f"{d[0]:.3f} to {d[last]:.3f}", d[last] - d[0] >= 0.05,
                           paired(m, last, m, 0, "dice", "psma")))
    ed = _dice_fpv(summary, ERROR_DRIVEN, "fdg", "dice")
    official = _dice_fpv(summary, main, "fdg", "dice") if main else None
    if ed and official:
        out.append(_error_driven_finding(main, official, ed, steps, records))
    return out


def _error_driven_finding(main: str, official: list[float], ed: list[float], steps: int,
                          records: Sequence[StepRecord] | None) -> Finding:
    """Clicks to reach a Dice, per case (NoC at :data:`NOC_TARGETS`, where the records are
    given: the verdict), and on the mean curves (every level the official curve reaches)."""
    claim = f"error-driven clicks reach a given Dice with fewer clicks than the official ones " \
            f"({main})"
    targets = [official[k] for k in range(1, steps)]
    pairs = [(first_step_reaching(official, t), first_step_reaching(ed, t)) for t in targets]
    earlier = sum(b is not None and b < a for a, b in pairs)
    later = sum(b is None or b > a for a, b in pairs)
    t5 = official[min(5, steps - 1)]
    curves = (f"Dice {t5:.3f}: official at step {first_step_reaching(official, t5)}, "
              f"error-driven at step {first_step_reaching(ed, t5)}; of the {len(pairs)} Dice "
              f"levels the official clicks reach, error-driven clicks reach {earlier} earlier "
              f"and {later} later or never")
    dice = {m: {c: v["dice"] for c, v in case_curves(
        [r for r in records or () if r.model == m and r.tracer == "fdg"], steps).items()
        if not any(math.isnan(x) for x in v["dice"])} for m in (main, ERROR_DRIVEN)}
    by_official, by_ed = dice[main], dice[ERROR_DRIVEN]
    cases = sorted(set(by_ed) & set(by_official))
    if not cases:  # the means alone: every level the official curve reaches, none later
        return Finding(claim, curves, earlier > 0 and later == 0)
    noc = {name: {t: {c: clicks_to_reach(by[c], t) for c in cases} for t in NOC_TARGETS}
           for name, by in (("official", by_official), ("ed", by_ed))}
    mean = {name: [sum(v[t].values()) / len(cases) for t in NOC_TARGETS]
            for name, v in noc.items()}
    levels = " / ".join(f"{t:.2f}" for t in NOC_TARGETS)
    diff = paired_difference({c: float(v) for c, v in noc["ed"][NOC_GOAL].items()},
                             {c: float(v) for c, v in noc["official"][NOC_GOAL].items()})
    observed = (f"clicks to reach Dice {levels} per case (mean over {len(cases)} cases, "
                f"{steps} where never reached): official "
                + " / ".join(f"{v:.1f}" for v in mean["official"]) + ", error-driven "
                + " / ".join(f"{v:.1f}" for v in mean["ed"])
                + f"; at {NOC_GOAL:.2f} {diff.text(1, ' clicks', (-steps, steps))}; on the mean "
                f"curves, {curves}")
    holds = all(e <= o for e, o in zip(mean["ed"], mean["official"], strict=True)) and \
        any(e < o for e, o in zip(mean["ed"], mean["official"], strict=True))
    return Finding(claim, observed, holds, diff.to_json())


def _handover_findings(summary: Summary, steps: int, roles: Roles, paired, finding
                       ) -> list[Finding]:
    """The model after the hand-over worse than the one before it with no clicks, at least as
    good with all, and the hybrid at least as good as both at every step."""
    before, after, hybrid = roles.before, roles.after, roles.hybrid
    b, a = (_dice_fpv(summary, m, "fdg", "dice") for m in (before, after))
    if not (a and b):
        return []
    last = steps - 1
    out = [finding(f"the model after the hand-over ({after}) worse than the one before it "
                   f"({before}) at 0 clicks", f"{after} {a[0]:.3f}, {before} {b[0]:.3f}",
                   a[0] < b[0], paired(after, 0, before, 0, "dice")),
           finding(f"the model after the hand-over ({after}) at least as good as {before} at "
                   f"{last} clicks", f"{after} {a[last]:.3f}, {before} {b[last]:.3f}",
                   a[last] >= b[last], paired(after, last, before, last, "dice"))]
    hy = _dice_fpv(summary, hybrid, "fdg", "dice")
    if not hy:
        return out
    claim = f"{hybrid} at least as good as {after} and {before} at every step"
    gap = {k: hy[k] - max(a[k], b[k]) for k in range(steps)}
    worse = [k for k in range(steps) if gap[k] < -1e-9]
    if not worse:
        return out + [Finding(claim, "at every step", True)]
    k = min(worse, key=lambda s: gap[s])  # where it falls furthest behind
    rival = after if a[k] >= b[k] else before
    most = "" if len(worse) == 1 else f"most at step {k}: "
    where = ("worse at step" + ("s " if len(worse) > 1 else " ") + ", ".join(map(str, worse))
             + f" ({most}{hy[k]:.3f} against {rival} {max(a[k], b[k]):.3f})")
    return out + [finding(claim, where, False, paired(hybrid, k, rival, k, "dice"))]
