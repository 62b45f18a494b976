"""Prediction with a model set: one case, a folder of cases, the challenge container."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from petloop.cli import app, console, err_console, fail, progress

Models = Annotated[Path, typer.Option(help="Model set folder (manifest.json).")]
DEFAULT_MODELS = Path("models/phantom")
Precision = Annotated[str, typer.Option(
    help="Network arithmetic on a CPU: fp32, bf16, or auto (bf16 where the CPU has bfloat16 "
    "instructions, AMX or AVX512-BF16, about three times faster; else fp32).")]
Window = Annotated[str | None, typer.Option(
    help="sliding (nnU-Net's tiles) or whole (one pass over the whole volume where it is at "
    "most four patches' worth); default: the model set's inference.window.")]
Mirrors = Annotated[int | None, typer.Option(
    min=0, max=7, help="Mirrored passes per prediction (test-time augmentation); default: the "
    "model set's inference.mirrors. A --time-budget caps them.")]


def _pipeline(models: Path, device: str, precision: str = "fp32", window: str | None = None,
              mirrors: int | None = None):
    from petloop.inference.modelset import load_model_set
    from petloop.inference.pipeline import Pipeline

    return Pipeline(load_model_set(models), device, precision, window, mirrors)


def _errors():
    from petloop.inference.modelset import ModelSetError
    from petloop.io.clicks import ClickFileError
    from petloop.io.volume import VolumeError
    from petloop.tracer.classifier import TracerError

    return (ModelSetError, ClickFileError, VolumeError, TracerError, ValueError)


@app.command()
def predict(
    ct: Annotated[Path, typer.Option(help="CT image (resampled onto the PET grid if needed).")],
    pet: Annotated[Path, typer.Option(help="PET image in SUV.")],
    out: Annotated[Path, typer.Option(help="Mask to write (on the PET grid).")],
    clicks: Annotated[Path | None, typer.Option(help="Click file (either form).")] = None,
    step: Annotated[int | None, typer.Option(min=0, help="Use the first K clicks of each "
                                             "kind.")] = None,
    tracer: Annotated[str, typer.Option(help="auto, fdg or psma.")] = "auto",
    models: Models = DEFAULT_MODELS,
    report: Annotated[Path | None, typer.Option(help="Also write the lesion report (JSON).")]
    = None,
    time_budget: Annotated[float | None, typer.Option(
        help="Seconds for test-time mirroring (0: none).")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    precision: Precision = "auto",
    window: Window = None,
    mirrors: Mirrors = None,
) -> None:
    """Segment lesions in one PET/CT with the model set, given clicks."""
    from petloop.io.atomic import write_json_atomic
    from petloop.io.clicks import Clicks, read_clicks
    from petloop.io.volume import read_volume, write_volume
    from petloop.metrics.report import lesion_report

    try:
        pipeline = _pipeline(models, device, precision, window, mirrors)
        pet_vol = read_volume(pet)
        c = read_clicks(clicks, shape=pet_vol.shape) if clicks else Clicks()
        if step is not None:
            c = c.step(step)
        result = pipeline.predict(read_volume(ct), pet_vol, c, tracer, time_budget)
    except _errors() as exc:
        fail(str(exc))
    write_volume(result.mask, out)
    console.print(f"wrote {out}: tracer {result.tracer.tracer} (p {result.tracer.probability:.3f})"
                  f", model {result.model}, {len(c.tumor)} tumor + {len(c.background)} background "
                  f"clicks; TTA: {result.tta.describe()}")
    if report is not None:
        write_json_atomic(report, lesion_report(pet_vol, result.mask.array).to_json())
        console.print(f"wrote {report}")


@app.command("predict-folder")
def predict_folder(
    data: Annotated[Path, typer.Option(help="Cases (any layout).")],
    out: Annotated[Path, typer.Option(help="Folder for <case>.nii.gz masks.")],
    models: Models = DEFAULT_MODELS,
    step: Annotated[int | None, typer.Option(min=0, help="Use the first K clicks.")] = None,
    tracer: Annotated[str, typer.Option(help="auto, fdg, psma or case (from the data).")]
    = "auto",
    num_parts: Annotated[int, typer.Option(min=1, help="Split the cohort into N parts.")] = 1,
    part_id: Annotated[int, typer.Option(min=0, help="Which part this run does.")] = 0,
    time_budget: Annotated[float | None, typer.Option(help="Seconds for mirroring.")] = None,
    processes: Annotated[int, typer.Option(min=0, help="nnU-Net preprocessing workers (0: none)."
                                           )] = 2,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    precision: Precision = "auto",
    window: Window = None,
    mirrors: Mirrors = None,
) -> None:
    """Segment many cases (with their clicks); nnU-Net's worker processes preprocess ahead;
    --num-parts/--part-id split a cohort across machines."""
    from petloop.inference.batch import predict_cases
    from petloop.io.layouts import LayoutError, find_cases

    if part_id >= num_parts:
        fail(f"part id {part_id} must be below the number of parts {num_parts}")
    try:
        cases = find_cases(data)[part_id::num_parts]
        pipeline = _pipeline(models, device, precision, window, mirrors)
        with progress() as bar:
            task = bar.add_task(f"predicting part {part_id + 1}/{num_parts}", total=len(cases))
            predict_cases(pipeline, cases, out, step, tracer, time_budget, processes,
                          progress=lambda _: bar.advance(task))
    except (*_errors(), LayoutError) as exc:
        fail(str(exc))
    console.print(f"wrote {len(cases)} mask(s) to {out}")


@app.command("gc")
def grand_challenge(
    input_dir: Annotated[Path, typer.Option("--input", help="Grand-challenge input folder.")]
    = Path("/input"),
    output_dir: Annotated[Path, typer.Option("--output", help="Output folder.")]
    = Path("/output"),
    models: Models = DEFAULT_MODELS,
    time_budget: Annotated[float | None, typer.Option(help="Seconds for mirroring.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
    precision: Precision = "auto",
    window: Window = None,
    mirrors: Mirrors = None,
) -> None:
    """The challenge container's entry point: /input/images/{ct,pet}/<uuid>.mha and
    /input/lesion-clicks.json in, /output/images/tumor-lesion-segmentation/<uuid>.mha out."""
    import torch

    from petloop.io.layouts import LayoutError, read_gc
    from petloop.io.volume import write_volume

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        (files,) = read_gc(input_dir)
        case = files.load(with_label=False)
        from petloop.io.clicks import Clicks

        result = _pipeline(models, device, precision, window, mirrors).predict(
            case.ct, case.pet, case.clicks or Clicks(), "auto", time_budget)
    except (*_errors(), LayoutError) as exc:
        fail(str(exc))
    target = output_dir / "images" / "tumor-lesion-segmentation" / f"{files.case_id}.mha"
    write_volume(result.mask, target)
    err_console.print(json.dumps({"tracer": result.tracer.tracer, "model": result.model,
                                  "tta": result.tta.describe(), "output": str(target)}))


@app.command()
def crossval(
    dataset: Annotated[int, typer.Option(help="nnU-Net dataset id built with petloop.")],
    model: Annotated[Path, typer.Option(help="Model folder holding fold_0 .. fold_4.")],
    out: Annotated[Path, typer.Option(help="Folder for predictions, CSV, JSON and plots.")],
    folds: Annotated[list[int] | None, typer.Option(help="Folds (default: those present).")]
    = None,
    clicks: Annotated[str, typer.Option(help="official or error-driven.")] = "official",
    steps: Annotated[int, typer.Option(min=1, help="Click steps.")] = 11,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    precision: Precision = "auto",
    workdir: Annotated[Path | None, typer.Option(help="petloop work directory.")] = None,
) -> None:
    """Cross-validation as in the paper's Table 1: each fold's checkpoint on that fold's
    validation cases (nnU-Net's split), summarised per click step."""
    from petloop.cli.nnunet import nnunet_paths
    from petloop.inference.evaluate import crossval_model_sets, run_steps, validation_cases
    from petloop.inference.pipeline import Pipeline
    from petloop.io.layouts import find_cases
    from petloop.metrics.interactive import evaluate_model, merge, summarize
    from petloop.metrics.tables import ranking_table, step_table
    from petloop.nnunet.train import dataset_folder_name

    paths = nnunet_paths(workdir)
    try:
        name = dataset_folder_name(dataset, paths)
        present = sorted(int(p.name[5:]) for p in model.glob("fold_[0-9]"))
        sets = crossval_model_sets(model, folds or present)
        all_cases = {f.case_id: f for f in find_cases(paths.raw / name, "nnunet")}
        pred_dir = out / "predictions" / model.name
        evaluated = []
        with progress() as bar:
            for fold, ms in sets.items():
                ids = validation_cases(paths.preprocessed / name, fold)
                cases = [all_cases[i] for i in ids]
                task = bar.add_task(f"fold {fold}", total=len(cases))
                run_steps(Pipeline(ms, device, precision), cases, pred_dir, clicks, steps, "case",
                          progress=lambda _, t=task: bar.advance(t))
                evaluated += cases
        ev = merge([evaluate_model(evaluated, pred_dir, model.name, steps)])
    except (*_errors(), FileNotFoundError) as exc:
        fail(str(exc))
    from petloop.io.atomic import write_json_atomic, write_text_atomic
    from petloop.metrics.interactive import records_csv, to_json_safe
    from petloop.metrics.plots import plot_curves

    summary = summarize(ev)
    write_text_atomic(out / "metrics_per_step.csv", records_csv(ev.records))
    write_json_atomic(out / "summary.json", to_json_safe(summary))
    plot_curves(summary, out / "curves.png", title=f"Cross-validation of {model.name}")
    console.print(step_table(summary, None, "Cross-validation: mean per click step"))
    console.print(ranking_table(summary))


models_app = typer.Typer(help="Model sets: assemble one from trained nnU-Net model folders.",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("export")
def models_export(
    out: Annotated[Path, typer.Option(help="Model set folder to write.")],
    fdg_v4: Annotated[Path, typer.Option(help="Model folder of the stochastic FDG model.")],
    fdg_v3: Annotated[Path, typer.Option(help="Model folder of the full-guidance FDG model.")],
    psma_v2: Annotated[Path, typer.Option(help="Model folder of the PSMA model.")],
    tracer_weights: Annotated[Path | None, typer.Option(help="Tracer classifier weights.")]
    = None,
    name: Annotated[str, typer.Option(help="Model set name.")] = "phantom",
    description: Annotated[str, typer.Option(help="One line on what it is.")] = "",
    full_precision: Annotated[bool, typer.Option("--full-precision",
                                                 help="Keep float32 weights.")] = False,
    routing: Annotated[str, typer.Option(
        help="birth: the published rule (FDG: v4 below 5 background clicks, v3 from 5); "
        "birth-fg: the same, but v3 only once a lesion has been clicked.")] = "birth",
    window: Annotated[str, typer.Option(help="The set's default window: sliding or whole "
                                       "(see predict).")] = "sliding",
    mirrors: Annotated[int | None, typer.Option(min=0, max=7, help="The set's default number "
                                                "of mirrored passes (none: only within a time "
                                                "budget).")] = None,
) -> None:
    """Assemble a model set (manifest with the BIRTH routing and how to run it, slim
    checkpoints, tracer weights)."""
    from petloop.inference.export import export_model_set, folder_size
    from petloop.inference.modelset import InferenceSettings
    try:
        path = export_model_set(out, fdg_v4, fdg_v3, psma_v2, tracer_weights, name,
                                description, half=not full_precision, routing=routing,
                                inference=InferenceSettings(window, mirrors))
    except (ValueError, FileNotFoundError) as exc:  # ModelSetError is a ValueError
        fail(str(exc))
    console.print(f"wrote model set {path} ({folder_size(path) / 2**20:.1f} MiB)")


def _score_table(title: str, last: int, first: str, scores, label, chosen, previous,
                 key=lambda s: s.threshold):
    """Calibration scores as a table, one row per candidate, ``key`` naming the candidate."""
    from rich.table import Table

    table = Table(title=title)
    for col in (first, "Dice AUC", f"Dice at {last}", "FPV AUC ml", "FNV AUC ml", ""):
        table.add_column(col, justify="right")
    for s in scores:
        mark = ("chosen" if key(s) == chosen else "") + (" (was)" if key(s) == previous else "")
        table.add_row(label(s), f"{s.dice_auc:.4f}", f"{s.dice_last:.4f}", f"{s.fpv_auc:.3f}",
                      f"{s.fnv_auc:.3f}", mark.strip())
    return table


@models_app.command("calibrate")
def models_calibrate(
    data: Annotated[list[Path], typer.Option(
        help="Validation cases with lesion labels (any layout; repeat for several folders). "
             "Not the cases the set is tested on.")],
    models: Models = DEFAULT_MODELS,
    tracer: Annotated[str, typer.Option(help="case (each case's own tracer), fdg or psma.")]
    = "case",
    thresholds: Annotated[str | None, typer.Option(
        help="Candidate SUV thresholds, comma-separated (default: nine from 0 to 3, and "
             "the set's own).")] = None,
    steps: Annotated[int, typer.Option(min=2, help="Click steps (0..steps-1).")] = 11,
    routing: Annotated[bool, typer.Option(
        "--routing", help="Also fit where the routing hands over from its first model (FDG: "
        "the stochastic one below N background clicks, BIRTH's N = 5) to the next.")] = False,
    clicks: Annotated[str, typer.Option(
        help="official, or error-driven: fit the hand-over (with --routing; the thresholds "
             "stay) for clicks placed where the mask is wrong, as a reader places them.")]
    = "official",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the scores; change "
                                          "nothing.")] = False,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    precision: Precision = "auto",
    window: Window = None,
    mirrors: Mirrors = None,
) -> None:
    """Fit the set's SUV thresholds (the post-processing), and with --routing where its routing
    hands over, on validation cases: each case runs the click steps once (with --routing once
    per model), every candidate is scored on the same masks, and the one with the highest Dice
    AUC goes into the manifest, with the scores in calibration.json."""
    from petloop.inference.calibrate import (
        CANDIDATES,
        CLICK_MODES,
        calibrate_thresholds,
        write_calibration,
    )
    from petloop.inference.modelset import load_model_set
    from petloop.inference.pipeline import Pipeline, resolve_precision
    from petloop.io.layouts import LayoutError, find_cases

    try:
        candidates = (CANDIDATES if thresholds is None else
                      [float(v) for v in thresholds.split(",") if v.strip()])
    except ValueError:
        fail(f"--thresholds: {thresholds!r} is not a comma-separated list of numbers")
    if tracer not in ("case", "fdg", "psma"):
        fail(f"--tracer: {tracer!r} is not case, fdg or psma")
    if clicks not in CLICK_MODES:
        fail(f"--clicks: {clicks!r} is not one of {', '.join(CLICK_MODES)}")
    if clicks != "official" and not routing:
        fail("--clicks error-driven fits the routing's hand-over only: add --routing (the SUV "
             "thresholds are fitted with the official clicks)")
    if clicks != "official" and thresholds is not None:
        fail("--thresholds: error-driven clicks are fitted at the set's own SUV threshold "
             "(the thresholds are fitted with the official clicks); leave it out")
    try:
        model_set = load_model_set(models)
        cases = [c for folder in data for c in find_cases(folder)]
        with progress() as bar:
            task = bar.add_task(f"calibrating {model_set.name}", total=len(cases))
            shared = Pipeline(model_set, device, precision, window, mirrors)
            result = calibrate_thresholds(
                shared.with_model_set, model_set, cases,
                candidates, steps, None if tracer == "case" else tracer,
                progress=lambda _: bar.advance(task), routing=routing, clicks=clicks)
    except (*_errors(), LayoutError, FileNotFoundError) as exc:
        fail(str(exc))
    for t, cal in result.items():
        title = (f"{t.upper()}: {len(cal.cases)} validation case(s), {cal.lesion_cases} with "
                 f"lesions, {cal.steps} click steps")
        if cal.routing is None:
            console.print(_score_table(title, cal.steps - 1, "SUV threshold", cal.scores,
                                       lambda s: f"{s.threshold:g}", cal.chosen, cal.previous))
            continue
        # the thresholds at the chosen hand-over, then the hand-overs at the chosen threshold
        at = cal.chosen_handover
        if cal.clicks == "official":
            console.print(_score_table(f"{title}, hand-over at {at}", cal.steps - 1,
                                       "SUV threshold",
                                       [s for s in cal.scores if s.handover == at],
                                       lambda s: f"{s.threshold:g}", cal.chosen, cal.previous))
        else:
            given = sum((c.tracer if tracer == "case" else tracer) == t for c in cases)
            title = (f"{t.upper()}: {cal.lesion_cases} validation case(s) with lesions "
                     f"({given - cal.lesion_cases} without, left out), {cal.steps} click "
                     f"steps, {cal.clicks} clicks")
        console.print(_score_table(f"{title}, SUV threshold {cal.chosen:g}", cal.steps - 1,
                                   "hand-over at",
                                   [s for s in cal.scores if s.threshold == cal.chosen],
                                   lambda s: f"{s.handover} background", at,
                                   cal.previous_handover, key=lambda s: s.handover))
    if dry_run:
        console.print("dry run: the manifest is unchanged")
        return
    ran = model_set.inference.override(window, mirrors)
    settings = {"data": [str(d) for d in data], "window": ran.window, "mirrors": ran.mirrors,
                "precision": resolve_precision(precision, device), "device": device}
    path = write_calibration(models, result, settings)
    handovers = [f"{t} at {c.chosen_handover} background clicks" for t, c in result.items()
                 if c.routing is not None]
    kept = " kept" if clicks != "official" else ""
    console.print(f"SUV thresholds{kept} "
                  f"{', '.join(f'{t} {c.chosen:g}' for t, c in result.items())}"
                  + (f", routing hand-over {', '.join(handovers)}" if handovers else "")
                  + f" written to {models / 'manifest.json'}; scores in {path}")
