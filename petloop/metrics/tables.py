"""Readable tables of an interactive evaluation (as the paper's Tables 2 and 3) and reports."""

from __future__ import annotations

import math

from rich.table import Table

from petloop.metrics.interactive import Summary, summary_metrics
from petloop.metrics.report import LesionReport

HEAD = {"dice": "Dice", "dmm": "DMM (F1)", "fpv": "FPV (ml)", "fnv": "FNV (ml)"}
BETTER_HIGH = {"dice": True, "dmm": True, "fpv": False, "fnv": False}


def _step_word(summary: Summary) -> str:
    return "step" if summary.get("protocol") == "autopet5" else "clicks"


def _fmt(v: float, digits: int = 3) -> str:
    return "NaN" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def step_table(summary: Summary, tracer: str | None = None, title: str = "") -> Table:
    """Rows: clicks 0..10 (autopet5: steps 0..5). Column groups: one per metric (Dice, FPV,
    FNV; autopet5 adds DMM), one column per model in each; the best value of each row and
    metric in bold."""
    models = [m for m, e in summary["models"].items() if tracer is None or tracer in e["tracers"]]
    metrics = summary_metrics(summary)
    table = Table(title=title or "Mean over cases per click step", title_justify="left")
    table.add_column(_step_word(summary), justify="right")
    for metric in metrics:
        for n, model in enumerate(models):
            header = f"{HEAD[metric]}\n{model}" if n == 0 else f"\n{model}"
            table.add_column(header, justify="right")
    for step in range(summary["n_steps"]):
        cells = [str(step)]
        for metric in metrics:
            vals = []
            for model in models:
                entry = summary["models"][model]
                src = entry if tracer is None else entry["tracers"][tracer]
                vals.append(src["per_step"][metric][step]["mean"])
            finite = [v for v in vals if not math.isnan(v)]
            best = (max if BETTER_HIGH[metric] else min)(finite) if finite else None
            for v in vals:
                text = _fmt(v)
                cells.append(f"[bold]{text}[/bold]" if len(models) > 1 and v == best else text)
        table.add_row(*cells)
    return table


def ranking_table(summary: Summary) -> Table:
    """The official ranking numbers per model (each metric at the last step and its AUC), with
    the cases behind each mean."""
    metrics = summary_metrics(summary)
    keys = [f"{m}_final" for m in metrics] + [f"{m}_auc" for m in metrics]
    last = summary["n_steps"] - 1
    table = Table(title="Ranking numbers (mean over cases where defined; n in brackets)",
                  title_justify="left")
    table.add_column("model")
    for key in keys:
        metric, kind = key.split("_")
        table.add_column(f"{HEAD[metric].split(' ')[0]} "
                         f"{f'step {last}' if kind == 'final' else 'AUC'}", justify="right")
    table.add_column("cases (neg.)", justify="right")
    for model, entry in summary["models"].items():
        r = entry["ranking"]
        cells = [model]
        for key in keys:
            cells.append(f"{_fmt(r[key]['mean'])} ({r[key]['n']})")
        cells.append(f"{entry['cases']} ({entry['negative_controls']})")
        table.add_row(*cells)
    return table


def strategy_table(summary: Summary) -> Table:
    """autoPET V: per model and scribble strategy, the cases, the last step's Dice and DMM and
    the areas under both curves (means over the cases where defined)."""
    last = summary["n_steps"] - 1
    table = Table(title="Per scribble strategy (mean over cases where defined; n in brackets)",
                  title_justify="left")
    for head in ("model", "strategy", "cases", f"Dice step {last}", f"DMM step {last}",
                 "Dice AUC", "DMM AUC"):
        table.add_column(head, justify="left" if head in ("model", "strategy") else "right")
    for model, entry in summary["models"].items():
        for strategy, part in entry.get("strategies", {}).items():
            r = part["ranking"]
            table.add_row(model, strategy or "?", str(part["cases"]),
                          *(f"{_fmt(r[k]['mean'])} ({r[k]['n']})"  # type: ignore[literal-required]
                            for k in ("dice_final", "dmm_final", "dice_auc", "dmm_auc")))
    return table


def paired_table(summary: Summary) -> Table | None:
    """Each model's AUCs minus the first model's, paired by case, with 95 % intervals."""
    paired = summary.get("paired")
    if not paired:
        return None
    metrics = summary_metrics(summary)
    table = Table(title=f"Against {paired['baseline']}: difference of the AUCs, paired by case "
                        "(95 % CI; * where it excludes 0)", title_justify="left")
    table.add_column("model")
    for m in metrics:
        table.add_column(f"{HEAD[m].split(' ')[0]} AUC", justify="right")
    for model, diffs in paired["models"].items():
        cells = [model]
        for m in metrics:
            d = diffs[f"{m}_auc"]
            if d["n"] < 2:
                cells.append(f"{_fmt(d['mean'])} (n={d['n']})")
                continue
            star = "*" if d["separates"] else ""
            cells.append(f"{d['mean']:+.3f} ({d['lo']:+.3f} to {d['hi']:+.3f}){star} "
                         f"n={d['n']}")
        table.add_row(*cells)
    return table


def negative_table(summary: Summary) -> Table | None:
    rows = {m: e["negative_fpv"] for m, e in summary["models"].items() if "negative_fpv" in e}
    if not rows:
        return None
    unit = "step" if summary.get("protocol") == "autopet5" else "click step"
    table = Table(title=f"Negative controls: mean false positive volume (ml) per {unit}",
                  title_justify="left")
    table.add_column(_step_word(summary), justify="right")
    for model in rows:
        table.add_column(model, justify="right")
    for step in range(summary["n_steps"]):
        table.add_row(str(step), *(_fmt(rows[m][step]["mean"]) for m in rows))
    return table


def report_table(report: LesionReport, title: str = "") -> Table:
    table = Table(title=title or (f"{report.count} lesion(s); TMTV {report.tmtv_ml:.2f} ml; "
                                  f"total TLG {report.total_tlg:.1f}; SUVmax "
                                  f"{report.suv_max:.2f}"), title_justify="left")
    for col in ("lesion", "volume ml", "SUVmax", "SUVmean", "SUVpeak", "TLG", "hottest (i,j,k)"):
        table.add_column(col, justify="right")
    for les in report.lesions:
        table.add_row(str(les.id), f"{les.volume_ml:.3f}", f"{les.suv_max:.2f}",
                      f"{les.suv_mean:.2f}", f"{les.suv_peak:.2f}", f"{les.tlg:.2f}",
                      ",".join(map(str, les.hottest_voxel)))
    return table
