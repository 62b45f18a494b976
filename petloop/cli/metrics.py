"""Metrics, interactive evaluation and lesion reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from petloop.cli import app, console, err_console, fail, progress


@app.command("metrics")
def metrics_cmd(
    gt: Annotated[Path, typer.Option(help="Ground-truth lesion mask.")],
    pred: Annotated[Path, typer.Option(help="Predicted lesion mask on the same grid.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (NaN as null).")] = False,
    label: Annotated[int | None, typer.Option(
        help="Class of both masks to evaluate when they are not binary.")] = None,
) -> None:
    """Dice, false positive volume and false negative volume (ml) of one pair of masks, as the
    challenge computes them."""
    from petloop.io.volume import VolumeError, read_volume
    from petloop.metrics.interactive import load_mask
    from petloop.metrics.official import MaskError, binarize, compute_metrics

    try:
        gt_vol = read_volume(gt)
        g = binarize(gt_vol.array, label, name=f"ground truth {gt}")
        p = load_mask(pred, gt_vol, f"the ground truth {gt}", label)
        m = compute_metrics(g, p, gt_vol.spacing)
    except (MaskError, VolumeError) as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(m.to_json()))
        return
    fmt = lambda v: "NaN" if v != v else f"{v:.6g}"  # noqa: E731
    console.print(f"Dice {fmt(m.dice)}\nFPV  {fmt(m.fpv)} ml\nFNV  {fmt(m.fnv)} ml")


@app.command()
def evaluate(
    data: Annotated[Path, typer.Option(help="Cases with ground truth (any layout).")],
    out: Annotated[Path, typer.Option(help="Folder for the CSV, JSON and plots.")],
    pred: Annotated[list[str] | None, typer.Option(
        help="Predictions folder with <case>_step{k}.nii.gz, as NAME=DIR or DIR; repeat to "
             "compare models.")] = None,
    models: Annotated[Path | None, typer.Option(
        help="Run this model set through the click steps first (session API).")] = None,
    clicks: Annotated[str, typer.Option(help="With --models: official or error-driven.")]
    = "official",
    tracer: Annotated[str, typer.Option(help="With --models: auto, fdg, psma or case.")]
    = "auto",
    time_budget: Annotated[float | None, typer.Option(help="With --models: seconds for "
                                                      "mirroring.")] = None,
    device: Annotated[str, typer.Option(help="With --models: cpu or cuda.")] = "cpu",
    precision: Annotated[str, typer.Option(help="With --models: fp32, bf16 or auto (see "
                                           "predict).")] = "auto",
    window: Annotated[str | None, typer.Option(help="With --models: sliding or whole (see "
                                               "predict).")] = None,
    mirrors: Annotated[int | None, typer.Option(min=0, max=7, help="With --models: mirrored "
                                                "passes (see predict).")] = None,
    steps: Annotated[int, typer.Option(min=1, help="Number of click steps (0..steps-1).")] = 11,
    layout: Annotated[str, typer.Option(help="auto, autopet, nnunet or gc.")] = "auto",
    label: Annotated[int | None, typer.Option(help="Class to evaluate in non-binary masks.")]
    = None,
) -> None:
    """Interactive evaluation: Dice, FPV and FNV at every click step, the official ranking
    numbers, per-tracer tables and plots."""
    from petloop.io.atomic import write_json_atomic, write_text_atomic
    from petloop.io.layouts import LayoutError, find_cases
    from petloop.io.volume import VolumeError
    from petloop.metrics.interactive import (
        MaskError,
        evaluate_model,
        merge,
        records_csv,
        summarize,
        to_json_safe,
    )
    from petloop.metrics.plots import plot_curves
    from petloop.metrics.tables import negative_table, ranking_table, step_table

    if models is None and not pred:
        fail("give --pred folders or --models")
    try:
        cases = find_cases(data, layout)
    except LayoutError as exc:
        fail(str(exc))
    runs = []
    if models is not None:
        from petloop.inference.evaluate import run_steps
        from petloop.inference.modelset import ModelSetError, load_model_set
        from petloop.inference.pipeline import Pipeline
        from petloop.tracer.classifier import TracerError

        try:
            model_set = load_model_set(models)
            name = f"{model_set.name}-{clicks}"
            with progress() as bar:
                task = bar.add_task(f"running {model_set.name} ({clicks} clicks)",
                                    total=len(cases))
                folder = run_steps(Pipeline(model_set, device, precision, window, mirrors), cases,
                                   out / "predictions" / name, clicks, steps, tracer,
                                   time_budget, progress=lambda _: bar.advance(task))
        except (ModelSetError, TracerError, VolumeError, ValueError) as exc:
            fail(str(exc))
        runs.append((name, folder))
    for item in pred or []:
        name, sep, folder = item.partition("=")
        if not sep:
            name, folder = Path(item).name, item
        if not Path(folder).is_dir():
            fail(f"{folder}: no such predictions folder")
        runs.append((name, Path(folder)))
    try:
        evaluations = []
        with progress() as bar:
            for name, folder in runs:
                task = bar.add_task(f"evaluating {name}", total=len(cases))
                evaluations.append(evaluate_model(cases, folder, name, steps, label,
                                                  progress=lambda t=task: bar.advance(t)))
    except (MaskError, VolumeError) as exc:
        fail(str(exc))
    ev = merge(evaluations)
    summary = summarize(ev)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "metrics_per_step.csv", records_csv(ev.records))
    write_json_atomic(out / "summary.json", to_json_safe(summary))
    plots = [plot_curves(summary, out / "curves.png")]
    tracers = sorted({r.tracer for r in ev.records})
    for tracer in tracers:
        console.print(step_table(summary, tracer, f"{tracer.upper()} cases: mean per click step"))
    if len(tracers) > 1:
        console.print(step_table(summary, None, "All cases: mean per click step"))
        plots += [plot_curves(summary, out / f"curves_{t}.png", tracer=t) for t in tracers]
    console.print(ranking_table(summary))
    neg = negative_table(summary)
    if neg is not None:
        console.print(neg)
    if ev.missing:
        err_console.print(f"[yellow]{len(ev.missing)} prediction file(s) missing[/yellow] "
                          "(listed in summary.json), e.g.:")
        for line in ev.missing[:5]:
            err_console.print(f"  {line}")
    console.print(f"wrote {out / 'metrics_per_step.csv'}, {out / 'summary.json'}, "
                  + ", ".join(str(p) for p in plots))


@app.command()
def report(
    pet: Annotated[Path, typer.Option(help="PET image in SUV.")],
    mask: Annotated[Path, typer.Option(help="Lesion mask on the PET grid.")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report as "
                                                  "JSON to this file.")] = None,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Also write one row per lesion "
                                                 "as CSV to this file.")] = None,
    label: Annotated[int | None, typer.Option(help="Class to report in a non-binary mask.")]
    = None,
) -> None:
    """Lesion report: count, volume, SUVmax, SUVmean, SUVpeak and TLG per lesion; TMTV and
    total TLG."""
    from petloop.io.atomic import write_json_atomic, write_text_atomic
    from petloop.io.volume import VolumeError, read_volume
    from petloop.metrics.interactive import load_mask
    from petloop.metrics.official import MaskError
    from petloop.metrics.report import lesion_report, report_csv
    from petloop.metrics.tables import report_table

    try:
        pet_vol = read_volume(pet)
        m = load_mask(mask, pet_vol, f"the PET {pet}", label, what="mask")
        rep = lesion_report(pet_vol, m)
    except (MaskError, VolumeError) as exc:
        fail(str(exc))
    console.print(report_table(rep))
    if json_out is not None:
        write_json_atomic(json_out, rep.to_json())
        console.print(f"wrote {json_out}")
    if csv_out is not None:
        write_text_atomic(csv_out, report_csv(rep))
        console.print(f"wrote {csv_out}")


