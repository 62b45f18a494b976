"""autoPET V's part of the demo (``petloop demo --protocol autopet5``).

The demo's held-out phantoms go through autoPET V's interaction loop
(:mod:`petloop.inference.autopet5`): a prediction, then one simulated scribble per step, the
strategies in turn over the cases. Where the model set routes scribble steps to scribble models,
the loop runs twice on the same cases, once with them and once with the point models given the
same kind of scribbles, and the report pairs the two by case.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from petloop.inference.autopet5 import run_loop
from petloop.inference.modelset import load_model_set
from petloop.inference.pipeline import Pipeline, Session, resolve_precision
from petloop.io.atomic import write_json_atomic, write_text_atomic
from petloop.metrics.autopet5 import STEPS
from petloop.metrics.interactive import Summary, merge, records_csv, summarize, to_json_safe
from petloop.metrics.plots import plot_curves

from .demo import DemoConfig, grid_text, held_out_cases, markdown_table

EMPTY_TEXT = {"official": "the official rule where an error region is empty (that step and "
                          "every later one score 0)",
              "fixed": "the fixed rule where an error region is empty (the other region's "
                       "scribble)"}
SCRIBBLE_MODELS = "scribble models"
POINT_MODELS = "point models"


def _paired_lines(summary: Summary) -> list[str]:
    paired = summary.get("paired")
    if not paired:
        return []
    lines = [f"**Against {paired['baseline']}** (difference of the AUCs paired by case, 95 % "
             "Student t interval)", "", "| model | Dice AUC | DMM AUC |", "|---|---|---|"]
    for model, diffs in paired["models"].items():
        cells = []
        for key in ("dice_auc", "dmm_auc"):
            d = diffs[key]
            cells.append(f"{d['mean']:+.3f} ({d['lo']:+.3f} to {d['hi']:+.3f}), n={d['n']}"
                         if d["n"] >= 2 else f"n={d['n']}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def run_demo_autopet5(config: DemoConfig, *, empty_region: str = "official",
                      progress: Callable[[str, int, int], None] | None = None) -> dict:
    out = Path(config.out)
    model_set = load_model_set(config.models)
    cases, by_tracer = held_out_cases(config, out)
    scribble_routes = any(r.interaction == "scribbles" for routing in model_set.routing.values()
                          for r in routing.routes)
    # the point models first: the paired differences are the scribble models' gain over them
    runs = [(POINT_MODELS, "clicks")] + ([(SCRIBBLE_MODELS, "scribbles")] if scribble_routes
                                         else [])
    pipeline = Pipeline(model_set, device=config.device, precision=config.precision,
                        window=config.window, mirrors=config.mirrors, budget=config.time_budget)
    total, done, evaluations = len(runs) * len(cases), 0, []
    for name, interaction in runs:

        def tick(case_id, name=name):
            nonlocal done
            done += 1
            if progress:
                progress(f"{name}: {case_id}", done, total)

        evaluations.append(run_loop(Session(pipeline, background=False), cases,
                                    out / "predictions" / name.replace(" ", "_"), model=name,
                                    steps=STEPS, tracer="case", empty_region=empty_region,
                                    interaction=interaction, progress=tick))
    ev = merge(evaluations)
    summary = summarize(ev)
    write_text_atomic(out / "metrics_per_step.csv", records_csv(ev.records, ev.protocol))
    write_json_atomic(out / "summary.json", to_json_safe({
        **summary, "demo": {k: str(v) for k, v in asdict(config).items()},
        "empty_region": empty_region}))
    plots = {t: plot_curves(summary, out / f"curves_{t}.png", tracer=t,
                            title=f"{model_set.name}, autoPET V's loop on held-out phantoms")
             for t, group in by_tracer.items() if group}
    negatives = sum(bool(c.read_meta().get("negative_control")) for c in cases)
    report = [f"# petloop demo, autoPET V: {model_set.name} on held-out phantoms", "",
              f"{len(cases)} adult phantoms (seed {config.seed}, never used in training; "
              f"{grid_text(config.grid)}): {len(by_tracer['fdg'])} FDG, "
              f"{len(by_tracer['psma'])} PSMA ({negatives} negative control(s)); autoPET V's "
              f"interaction loop, {STEPS} steps (a prediction, then one simulated scribble per "
              "step; centerline, random and boundary in turn over the cases); "
              f"{EMPTY_TEXT[empty_region]}; network arithmetic "
              f"{resolve_precision(config.precision, config.device)} on {config.device}."
              + ("" if scribble_routes else " The set has no scribble models: its point models "
                 "answer."), ""]
    for tracer in ("fdg", "psma"):
        if by_tracer[tracer]:
            report.append(markdown_table(summary, tracer, f"{tracer.upper()} phantoms"))
            report.append(f"![{tracer} curves]({plots[tracer].name})\n")
    report += _paired_lines(summary)
    write_text_atomic(out / "report.md", "\n".join(report) + "\n")
    return {"summary": summary, "report": out / "report.md", "plots": plots, "out": out}


__all__ = ["POINT_MODELS", "SCRIBBLE_MODELS", "run_demo_autopet5"]
