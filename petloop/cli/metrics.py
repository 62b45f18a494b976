"""Metrics, interactive evaluation and lesion reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from petloop.cli import app, console, err_console, fail, progress
from petloop.cli.guard import one_of
from petloop.cli.inference import (
    CLICK_MODES,
    BudgetMode,
    EmptyRegionOpt,
    ProtocolOpt,
    TrustSuv,
    run_options,
)
from petloop.io.outputs import OutputSet, safe_name
from petloop.options import EMPTY_REGIONS, INTERACTIONS, PROTOCOLS


@app.command("metrics")
def metrics_cmd(
    gt: Annotated[Path, typer.Option(help="Ground-truth lesion mask.")],
    pred: Annotated[Path, typer.Option(help="Predicted lesion mask on the same grid.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (NaN as null).")] = False,
    label: Annotated[int | None, typer.Option(
        min=0, help="Class of both masks to evaluate when they are not binary.")] = None,
) -> None:
    """Dice, false positive volume and false negative volume (ml) of one pair of masks, as the
    autoPET IV challenge computes them, and autoPET V's lesion detection (DMM: tp, fp, fn and
    F1 of lesions matched at IoU >= 0.1, with its own FPV and FNV)."""
    from petloop.io.checks import check_label
    from petloop.io.volume import VolumeError, read_volume
    from petloop.metrics.dmm import dmm
    from petloop.metrics.interactive import load_mask
    from petloop.metrics.official import MaskError, binarize, compute_metrics

    try:
        gt_vol = read_volume(gt)
        if label is None:  # a lesion label holds 0 and 1; --label N picks a class of others
            check_label(gt_vol, str(gt))
        g = binarize(gt_vol.array, label, name=f"ground truth {gt}")
        p = load_mask(pred, gt_vol, f"the ground truth {gt}", label)
        m = compute_metrics(g, p, gt_vol.spacing)
        d = dmm(p, g, gt_vol.spacing)
    except (MaskError, VolumeError) as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps({**m.to_json(), "dmm": d.to_json()}))
        return
    fmt = lambda v: "NaN" if v != v else f"{v:.6g}"  # noqa: E731
    console.print(f"Dice {fmt(m.dice)}\nFPV  {fmt(m.fpv)} ml\nFNV  {fmt(m.fnv)} ml\n"
                  f"DMM  F1 {fmt(d.f1)} (tp {d.tp}, fp {d.fp}, fn {d.fn}; lesions matched at "
                  f"IoU >= 0.1)")


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
    device: Annotated[str, typer.Option(help="With --models: cpu, cuda, cuda:N or mps.")]
    = "cpu",
    precision: Annotated[str, typer.Option(help="With --models: fp32, bf16 or auto (see "
                                           "predict).")] = "auto",
    window: Annotated[str | None, typer.Option(help="With --models: sliding or whole (see "
                                               "predict).")] = None,
    mirrors: Annotated[int | None, typer.Option(min=0, max=7, help="With --models: mirrored "
                                                "passes (see predict).")] = None,
    steps: Annotated[int | None, typer.Option(
        min=1, help="Number of steps (0..steps-1); default 11 (autopet4), 6 (autopet5).")]
    = None,
    protocol: ProtocolOpt = "autopet4",
    strategy: Annotated[str, typer.Option(
        help="autopet5: centerline, random, boundary, or all (one third of the cases each, "
             "in turn over the sorted case names).")] = "all",
    empty_region: EmptyRegionOpt = "official",
    interaction: Annotated[str, typer.Option(
        help="autopet5 with --models: scribbles (the set's scribble routes answer, where its "
             "manifest has them) or clicks (its point models get the same scribbles).")]
    = "scribbles",
    layout: Annotated[str, typer.Option(help="auto, autopet, nnunet or gc.")] = "auto",
    label: Annotated[int | None, typer.Option(
        min=0, help="Class to evaluate in non-binary masks.")] = None,
    budget_mode: BudgetMode = None,
    trust_suv: TrustSuv = False,
) -> None:
    """Interactive evaluation: Dice, FPV and FNV at every click step (autopet5: at every
    scribble step, with DMM), the official ranking numbers, per-tracer tables and plots.

    With autopet5, --pred folders hold a loop's output (<case>/iter_{k}.nii.gz, the case folder
    also as <case>_0000); --models runs the loop and writes that output, with the loop's
    metric_scores.json and metric_scores_AUC.json, under OUT/predictions."""
    from petloop.clicks.scribbles import STRATEGIES
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
    from petloop.metrics.tables import (
        negative_table,
        paired_table,
        ranking_table,
        step_table,
        strategy_table,
    )

    if models is None and not pred:
        fail("--pred: give --pred folders or --models")
    one_of(protocol, "--protocol", PROTOCOLS)
    five = protocol == "autopet5"
    one_of(strategy, "--strategy", ("all", *STRATEGIES))
    one_of(empty_region, "--empty-region", EMPTY_REGIONS)
    one_of(interaction, "--interaction", INTERACTIONS)
    if not five and (strategy != "all" or empty_region != "official"
                     or interaction != "scribbles"):
        fail("--strategy, --empty-region and --interaction belong to --protocol autopet5")
    if five and clicks != "official":
        fail("--clicks: --protocol autopet5 draws scribbles from the errors; --clicks is for "
             "autopet4")
    if steps is None:
        steps = 6 if five else 11
    if models is not None:
        options = run_options(device=device, precision=precision, window=window,
                              mirrors=mirrors, time_budget=time_budget,
                              budget_mode=budget_mode, trust_suv=trust_suv)
        one_of(clicks, "--clicks", CLICK_MODES)
        one_of(tracer, "--tracer", ("auto", "fdg", "psma", "case"))
    folders = []
    for item in pred or []:
        name, sep, folder = item.partition("=")
        if not sep:
            name, folder = Path(item).name, item
        if not name:
            fail(f"--pred {item}: give NAME=DIR with a name, or a folder")
        if not Path(folder).is_dir():
            fail(f"--pred {folder}: no such predictions folder")
        folders.append((name, Path(folder)))
    outputs = OutputSet({"--data": data})
    outputs.add_folder("--out", out)
    try:
        cases = find_cases(data, layout)
    except LayoutError as exc:
        fail(str(exc))
    # every output is checked before anything runs; names from the data (tracers) and the
    # model set become file and folder names
    tracers = sorted({f.tracer or "unknown" for f in cases})
    for f in cases:
        for path in (f.ct, f.pet, f.label):
            outputs.add_input("--data", path)
    csv_path = outputs.add("--out", out / "metrics_per_step.csv", "csv")
    json_path = outputs.add("--out", out / "summary.json", "json")
    plot_paths = {None: outputs.add("--out", out / "curves.png", "png")}
    if len(tracers) > 1:
        for t in tracers:
            plot_paths[t] = outputs.in_folder("--out", out, f"curves_{t}.png", "png",
                                              what=f"tracer {t!r} in {data}")
    runs = []
    if models is not None:
        from petloop.inference.autopet5 import run_loop
        from petloop.inference.evaluate import run_steps
        from petloop.inference.modelset import ModelSetError, load_model_set
        from petloop.inference.pipeline import Pipeline, Session
        from petloop.tracer.classifier import TracerError

        try:
            model_set = load_model_set(models)
            label = (f"{strategy}{'-as-clicks' if interaction == 'clicks' else ''}" if five
                     else clicks)
            name = safe_name(f"{model_set.name}-{label}",
                             f"the model set name {model_set.name!r} of {models}")
            for f in cases:
                safe_name(f.case_id, f"case name {f.case_id!r} in {data}")
            pipeline = Pipeline.from_options(model_set, options)
            what = f"{strategy} scribbles" if five else f"{clicks} clicks"
            with progress() as bar:
                task = bar.add_task(f"running {model_set.name} ({what})", total=len(cases))
                if five:
                    ran = run_loop(Session(pipeline, background=False), cases,
                                   out / "predictions" / name, model=name, strategy=strategy,
                                   steps=steps, tracer=tracer, empty_region=empty_region,
                                   time_budget=time_budget, interaction=interaction,
                                   progress=lambda _: bar.advance(task))
                else:
                    ran = run_steps(pipeline, cases, out / "predictions" / name,
                                    clicks_mode=clicks, steps=steps, tracer=tracer,
                                    progress=lambda _: bar.advance(task))
        except (ModelSetError, TracerError, VolumeError, ValueError) as exc:
            fail(str(exc))
        runs.append((name, ran))
    runs += folders
    try:
        from petloop.inference.autopet5 import score_loop_output

        evaluations = []
        with progress() as bar:
            for name, source in runs:
                if not isinstance(source, Path):  # the loop scored its own steps
                    evaluations.append(source)
                    continue
                task = bar.add_task(f"evaluating {name}", total=len(cases))
                if five:
                    evaluations.append(score_loop_output(
                        cases, source, name, steps=steps, strategy=strategy, label=label,
                        progress=lambda t=task: bar.advance(t)))
                else:
                    evaluations.append(evaluate_model(cases, source, name, steps, label,
                                                      progress=lambda t=task: bar.advance(t)))
    except (MaskError, VolumeError) as exc:
        fail(str(exc))
    ev = merge(evaluations)
    summary = summarize(ev)
    with outputs.writing() as w:
        w.text(csv_path, records_csv(ev.records, ev.protocol))
        w.json(json_path, to_json_safe(summary))
        for t, path in plot_paths.items():
            w.call(path, lambda p, t=t: plot_curves(summary, p, tracer=t))
    plots = list(plot_paths.values())
    shown = sorted({r.tracer for r in ev.records})
    unit = "scribble step" if five else "click step"
    for tracer in shown:
        console.print(step_table(summary, tracer, f"{tracer.upper()} cases: mean per {unit}"))
    if len(shown) > 1:
        console.print(step_table(summary, None, f"All cases: mean per {unit}"))
    console.print(ranking_table(summary))
    if five:
        console.print(strategy_table(summary))
    paired = paired_table(summary)
    if paired is not None:
        console.print(paired)
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
    label: Annotated[int | None, typer.Option(
        min=0, help="Class to report in a non-binary mask.")] = None,
    trust_suv: TrustSuv = False,
) -> None:
    """Lesion report: count, volume, SUVmax, SUVmean, SUVpeak and TLG per lesion; TMTV and
    total TLG."""
    from petloop.io.checks import check_pet
    from petloop.io.volume import VolumeError, read_volume
    from petloop.metrics.interactive import load_mask
    from petloop.metrics.official import MaskError
    from petloop.metrics.report import lesion_report, report_csv
    from petloop.metrics.tables import report_table

    outputs = OutputSet({"--pet": pet, "--mask": mask})
    if json_out is not None:
        outputs.add("--json", json_out, "json")
    if csv_out is not None:
        outputs.add("--csv", csv_out, "csv")
    try:
        pet_vol = read_volume(pet)
        check_pet(pet_vol, str(pet), trust_suv=trust_suv)
        m = load_mask(mask, pet_vol, f"the PET {pet}", label, what="mask")
        rep = lesion_report(pet_vol, m)
    except (MaskError, VolumeError) as exc:
        fail(str(exc))
    with outputs.writing() as w:
        if json_out is not None:
            w.json(json_out, rep.to_json())
        if csv_out is not None:
            w.text(csv_out, report_csv(rep))
    console.print(report_table(rep))
    for path in (json_out, csv_out):
        if path is not None:
            console.print(f"wrote {path}")


