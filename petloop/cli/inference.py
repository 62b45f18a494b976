"""Prediction with a model set: one case, a folder of cases, the challenge container."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from petloop.cli import app, console, err_console, fail, progress
from petloop.cli.guard import check_device, existing_file, existing_folder, not_negative, one_of
from petloop.io.outputs import OutputSet, safe_name

# option sets from a light module: checked before torch loads
from petloop.options import (
    BUDGET_MODES,
    CLICK_MODES,
    CROPS,
    INTERACTIONS,
    PRECISIONS,
    WINDOWS,
    RunOptions,
)

Models = Annotated[Path | None, typer.Option(
    help="Model set folder (manifest.json); default: $PETLOOP_MODELS, else the bundled set.")]
DEFAULT_MODELS = None
Precision = Annotated[str, typer.Option(
    help="Network arithmetic on a CPU: fp32, bf16, or auto (bf16 where the CPU has bfloat16 "
    "instructions, AMX or AVX512-BF16, about three times faster; else fp32).")]
Window = Annotated[str | None, typer.Option(
    help="sliding (nnU-Net's tiles) or whole (one pass over the whole volume where it is at "
    "most four patches' worth); default: the model set's inference.window.")]
Mirrors = Annotated[int | None, typer.Option(
    min=0, max=7, help="Mirrored passes per prediction (test-time augmentation); default: the "
    "model set's inference.mirrors. A --time-budget caps them.")]
BudgetMode = Annotated[str | None, typer.Option(
    help="How a time budget chooses the mirrored passes: tiles (each next pass while the tiles "
    "it must compute still fit) or birth (the published BIRTH code: min(int((B - T) / T), 7) "
    "passes for a plain cost T of the whole window, in its axis order, logits averaged); "
    "default: the model set's inference.budget_mode.")]
Series = Annotated[list[str] | None, typer.Option(
    help="With DICOM folders: the SeriesInstanceUID to take where a folder holds several "
    "series of a modality; repeat for CT and PET.")]
Weight = Annotated[float | None, typer.Option(
    min=1, max=500, help="With a DICOM PET: the patient weight in kg, instead of "
    "PatientWeight (0010,1030).")]
ProtocolOpt = Annotated[str, typer.Option(
    "--protocol", help="autopet4: autoPET IV's clicks, 11 steps; autopet5: autoPET V's scribble "
    "loop (a prediction, then one simulated scribble per step, 6 steps), scored with Dice and "
    "DMM.")]
EmptyRegionOpt = Annotated[str, typer.Option(
    "--empty-region", help="autopet5: official (a step whose error region is empty fails and "
    "scores 0, as in the challenge's loop, and so does every later one) or fixed (scribble the "
    "other region).")]
InteractionOpt = Annotated[str, typer.Option(
    "--interaction", help="clicks or scribbles: what the click file's points are, for the "
    "model set's routing (a set may route scribble steps to scribble models; the points reach "
    "the model as clicks either way).")]
TrustSuv = Annotated[bool, typer.Option(
    "--trust-suv", help="Take the PET as SUV even where it does not look like SUV (values "
    "far below 0, or a body median far above what SUV can be); NaN is refused all the same.")]


def run_options(*, device: str, precision: str = "auto", window: str | None = None,
                mirrors: int | None = None, time_budget: float | None = None,
                budget_mode: str | None = None, trust_suv: bool = False,
                auto: bool = False) -> RunOptions:
    """The options of a network run, checked before anything is read or loaded."""
    check_device(device, auto=auto)
    one_of(precision, "--precision", PRECISIONS)
    one_of(window, "--window", WINDOWS)
    one_of(budget_mode, "--budget-mode", BUDGET_MODES)
    not_negative(time_budget, "--time-budget")
    return RunOptions(device=device, precision=precision, window=window, mirrors=mirrors,
                      budget=time_budget, budget_mode=budget_mode, trust_suv=trust_suv)


def model_set(models: Path | None) -> Path:
    """The model set a command uses (``--models``, else ``PETLOOP_MODELS``, else the bundled
    one), or one clear error naming where petloop looked."""
    from petloop.models import ModelSetNotFound, find_model_set

    try:
        return find_model_set(models, environment=os.environ.get("PETLOOP_MODELS"))
    except ModelSetNotFound as exc:
        fail(str(exc))


def _pipeline(models: Path, options: RunOptions):
    from petloop.inference.modelset import load_model_set
    from petloop.inference.pipeline import Pipeline

    return Pipeline.from_options(load_model_set(models), options)


def _errors():
    from petloop.inference.modelset import ModelSetError
    from petloop.io.clicks import ClickFileError
    from petloop.io.volume import VolumeError
    from petloop.tracer.classifier import TracerError

    return (ModelSetError, ClickFileError, VolumeError, TracerError, ValueError)


@app.command()
def predict(
    ct: Annotated[Path, typer.Option(help="CT image, or a folder of DICOM files (resampled "
                                     "onto the PET grid if needed).")],
    pet: Annotated[Path, typer.Option(help="PET image in SUV, or a folder of DICOM files "
                                      "(read into SUV from its header).")],
    out: Annotated[Path, typer.Option(help="Mask to write (on the PET grid); a name ending in "
                                      ".dcm writes a DICOM SEG (see --seg).")],
    clicks: Annotated[Path | None, typer.Option(help="Click file (either form).")] = None,
    step: Annotated[int | None, typer.Option(min=0, help="Use the first K clicks of each "
                                             "kind.")] = None,
    tracer: Annotated[str, typer.Option(help="auto, fdg or psma.")] = "auto",
    models: Models = DEFAULT_MODELS,
    report: Annotated[Path | None, typer.Option(
        help="Also write the lesion report: JSON, or a DICOM SR where the name ends in .dcm "
             "(see --sr).")] = None,
    seg: Annotated[Path | None, typer.Option(
        help="Also write the lesions as a DICOM SEG (.dcm; one segment per lesion) referencing "
             "the PET series: --pet must be a DICOM folder.")] = None,
    sr: Annotated[Path | None, typer.Option(
        help="Also write a DICOM Structured Report (.dcm; TID 1500: each lesion's volume, "
             "SUVmax, SUVmean, SUVpeak, TLG, and TMTV and total TLG) referencing the SEG and the "
             "PET series: --pet must be a DICOM folder.")] = None,
    time_budget: Annotated[float | None, typer.Option(
        help="Seconds for test-time mirroring (0: none).")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or mps.")] = "cpu",
    precision: Precision = "auto",
    window: Window = None,
    mirrors: Mirrors = None,
    budget_mode: BudgetMode = None,
    trust_suv: TrustSuv = False,
    series: Series = None,
    weight: Weight = None,
    interaction: InteractionOpt = "clicks",
) -> None:
    """Segment lesions in one PET/CT with the model set, given clicks (or scribbles)."""
    from petloop.io.checks import check_ct, check_pet
    from petloop.io.clicks import Clicks, read_clicks
    from petloop.io.dicom import load_image, read_image
    from petloop.metrics.report import labelled_lesions

    options = run_options(device=device, precision=precision, window=window, mirrors=mirrors,
                          time_budget=time_budget, budget_mode=budget_mode,
                          trust_suv=trust_suv)
    models = model_set(models)
    one_of(tracer, "--tracer", ("auto", "fdg", "psma"))
    one_of(interaction, "--interaction", INTERACTIONS)
    outputs = OutputSet({"--ct": ct, "--pet": pet, "--clicks": clicks,
                         "--models": models / "manifest.json"})
    dicom_out = {"--out": out if out.name.endswith(".dcm") else None, "--seg": seg,
                 "--report": report if report and report.name.endswith(".dcm") else None,
                 "--sr": sr}
    wanted = [option for option, path in dicom_out.items() if path is not None]
    if wanted and not pet.is_dir():
        fail(f"{', '.join(wanted)}: a DICOM SEG or SR references the PET series; give --pet as "
             "a folder of DICOM files")
    if dicom_out["--out"] and seg is not None:
        fail("--seg: --out ending in .dcm writes the DICOM SEG already; give it once")
    if (dicom_out["--sr"] or dicom_out["--report"]) and not (dicom_out["--out"] or seg):
        fail(f"{'--sr' if sr else '--report'}: the DICOM SR references the lesions' DICOM SEG; "
             "also give --seg (or --out ending in .dcm)")
    outputs.add("--out", out, "dicom" if dicom_out["--out"] else "volume")
    if report is not None:
        outputs.add("--report", report, "dicom" if dicom_out["--report"] else "json")
    for option in ("--seg", "--sr"):
        if dicom_out[option] is not None:
            outputs.add(option, dicom_out[option], "dicom")
    try:
        pet_vol, pet_source = load_image(pet, "PT", series=series or (), weight_kg=weight)
        check_pet(pet_vol, str(pet), trust_suv=trust_suv)
        ct_vol = read_image(ct, "CT", series=series or ())
        check_ct(ct_vol, str(ct))
        c = read_clicks(clicks, shape=pet_vol.shape) if clicks else Clicks()
        if step is not None:
            check_step(step, c, clicks)
            c = c.step(step)
        result = _pipeline(models, options).predict(ct_vol, pet_vol, c, tracer,
                                                    interaction=interaction)
        rep = seg_ds = sr_ds = None
        if report is not None or wanted:
            rep, labels = labelled_lesions(pet_vol, result.mask.array)
        if wanted:
            from petloop.io.dicom_results import measurement_report, segmentation

            seg_ds = segmentation(pet_vol.with_array(labels), pet_source)
            sr_ds = measurement_report(rep, seg_ds, pet_source)
    except _errors() as exc:
        fail(str(exc))
    with outputs.writing() as w:
        if dicom_out["--out"]:
            w.dicom(out, seg_ds)
        else:
            w.volume(out, result.mask)
        for option, dataset in (("--seg", seg_ds), ("--sr", sr_ds)):
            if dicom_out[option] is not None:
                w.dicom(dicom_out[option], dataset)
        if rep is not None:
            if dicom_out["--report"]:
                w.dicom(report, sr_ds)
            else:
                w.json(report, rep.to_json())
    console.print(f"wrote {out}: tracer {result.tracer.tracer} (p {result.tracer.probability:.3f})"
                  f", model {result.model}, {len(c.tumor)} tumor + {len(c.background)} background "
                  f"clicks; TTA: {result.tta.describe()}")
    if report is not None:
        console.print(f"wrote {report}")
    for option in ("--seg", "--sr"):
        if dicom_out[option] is not None:
            console.print(f"wrote {dicom_out[option]}")


def check_step(step: int, clicks, source: Path | None) -> None:
    """Step k needs k clicks of at least one kind: a step beyond the clicks is an error."""
    most = max(len(clicks.tumor), len(clicks.background))
    if step > most:
        where = f"the click file {source}" if source is not None else "no --clicks"
        fail(f"--step {step}: beyond the clicks: {where} gives {len(clicks.tumor)} tumor and "
             f"{len(clicks.background)} background click(s), so steps 0 to {most}")


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
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or mps.")] = "cpu",
    precision: Precision = "auto",
    window: Window = None,
    mirrors: Mirrors = None,
    budget_mode: BudgetMode = None,
    trust_suv: TrustSuv = False,
) -> None:
    """Segment many cases (with their clicks); nnU-Net's worker processes preprocess ahead;
    --num-parts/--part-id split a cohort across machines."""
    from petloop.inference.batch import predict_cases
    from petloop.io.layouts import LayoutError, find_cases

    options = run_options(device=device, precision=precision, window=window, mirrors=mirrors,
                          time_budget=time_budget, budget_mode=budget_mode,
                          trust_suv=trust_suv)
    models = model_set(models)
    one_of(tracer, "--tracer", ("auto", "fdg", "psma", "case"))
    if part_id >= num_parts:
        fail(f"--part-id {part_id}: must be below the number of parts (--num-parts {num_parts})")
    existing_folder(data, "--data")
    try:
        cases = find_cases(data)[part_id::num_parts]
    except (*_errors(), LayoutError) as exc:
        fail(str(exc))
    # every mask is checked before any network runs: a case name from the data must be a plain
    # file name, and no mask may land on one of the cases' files
    outputs = OutputSet({"--data": [p for f in cases for p in _case_paths(f)],
                         "--models": models / "manifest.json"})
    outputs.add_folder("--out", out)
    for f in cases:
        outputs.in_folder("--out", out, f"{f.case_id}.nii.gz", "volume",
                          what=f"case name {f.case_id!r} in {data}")
    try:
        pipeline = _pipeline(models, options)
        with progress() as bar:
            task = bar.add_task(f"predicting part {part_id + 1}/{num_parts}", total=len(cases))
            predict_cases(pipeline, cases, out, step=step, tracer=tracer,
                          num_processes=processes, progress=lambda _: bar.advance(task))
    except (*_errors(), LayoutError) as exc:
        fail(str(exc))
    console.print(f"wrote {len(cases)} mask(s) to {out}")


def _case_paths(files) -> list[Path]:
    """Every file of a case (what no output may overwrite)."""
    paths = [files.ct, files.pet, files.label, files.organs, files.clicks, files.meta,
             *(files.heatmaps or ())]
    return [p for p in paths if p is not None]


@app.command("gc")
def grand_challenge(
    input_dir: Annotated[Path, typer.Option("--input", help="Grand-challenge input folder.")]
    = Path("/input"),
    output_dir: Annotated[Path, typer.Option("--output", help="Output folder.")]
    = Path("/output"),
    models: Models = DEFAULT_MODELS,
    time_budget: Annotated[float | None, typer.Option(help="Seconds for mirroring.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N, mps or auto.")] = "auto",
    precision: Precision = "auto",
    window: Window = None,
    mirrors: Mirrors = None,
    budget_mode: BudgetMode = None,
    interaction: InteractionOpt = "clicks",
) -> None:
    """The challenge container's entry point: /input/images/{ct,pet}/<uuid>.mha and
    /input/lesion-clicks.json in, /output/images/tumor-lesion-segmentation/<uuid>.mha out
    (autoPET IV's clicks, or autoPET V's scribbles with --interaction scribbles)."""
    from petloop.io.checks import check_ct, check_pet
    from petloop.io.clicks import Clicks
    from petloop.io.layouts import LayoutError, read_gc

    options = run_options(device=device, precision=precision, window=window, mirrors=mirrors,
                          time_budget=time_budget, budget_mode=budget_mode, auto=True)
    models = model_set(models)
    one_of(interaction, "--interaction", INTERACTIONS)
    existing_folder(input_dir, "--input")
    if not (input_dir / "images" / "ct").is_dir() or not (input_dir / "images" / "pet").is_dir():
        fail(f"--input {input_dir}: a grand-challenge input holds images/ct/<uuid>.mha and "
             f"images/pet/<uuid>.mha; images/ct or images/pet is missing")
    try:
        (files,) = read_gc(input_dir)
    except (*_errors(), LayoutError) as exc:
        fail(str(exc))
    outputs = OutputSet({"--input": _case_paths(files), "--models": models / "manifest.json"})
    outputs.add_folder("--output", output_dir)
    target = outputs.in_folder("--output", output_dir / "images" / "tumor-lesion-segmentation",
                               f"{files.case_id}.mha", "volume",
                               what=f"case name {files.case_id!r} of {files.ct}")
    if device == "auto":
        import torch

        options = replace(options, device="cuda" if torch.cuda.is_available() else "cpu")
    try:
        case = files.load(with_label=False)
        check_pet(case.pet, str(files.pet))  # the challenge's PET is SUV
        check_ct(case.ct, str(files.ct))
        result = _pipeline(models, options).predict(case.ct, case.pet,
                                                    case.clicks or Clicks(), "auto",
                                                    interaction=interaction)
    except (*_errors(), LayoutError) as exc:
        fail(str(exc))
    with outputs.writing() as w:
        w.volume(target, result.mask)
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
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or mps.")] = "cpu",
    precision: Precision = "auto",
    workdir: Annotated[Path | None, typer.Option(help="petloop work directory.")] = None,
    trust_suv: TrustSuv = False,
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

    options = run_options(device=device, precision=precision, trust_suv=trust_suv)
    one_of(clicks, "--clicks", CLICK_MODES)
    for f in folds or ():
        if f < 0:
            fail(f"--folds {f}: a fold is a number of at least 0")
    existing_folder(model, "--model")
    model_name = safe_name(model.resolve().name, f"--model {model}")
    outputs = OutputSet({"--model": model})
    outputs.add_folder("--out", out)
    csv_path = outputs.add("--out", out / "metrics_per_step.csv", "csv")
    json_path = outputs.add("--out", out / "summary.json", "json")
    png_path = outputs.add("--out", out / "curves.png", "png")
    paths = nnunet_paths(workdir)
    try:
        name = dataset_folder_name(dataset, paths)
        present = sorted(int(p.name[5:]) for p in model.glob("fold_[0-9]"))
        sets = crossval_model_sets(model, folds or present)
        all_cases = {f.case_id: f for f in find_cases(paths.raw / name, "nnunet")}
        for f in all_cases.values():
            safe_name(f.case_id, f"case name {f.case_id!r} in {paths.raw / name}")
        pred_dir = out / "predictions" / model_name
        evaluated = []
        with progress() as bar:
            for fold, ms in sets.items():
                ids = validation_cases(paths.preprocessed / name, fold)
                missing = [i for i in ids if i not in all_cases]
                if missing:
                    fail(f"{paths.preprocessed / name / 'splits_final.json'}: fold {fold} "
                         f"names case(s) not in {paths.raw / name}: {', '.join(missing[:5])}")
                cases = [all_cases[i] for i in ids]
                task = bar.add_task(f"fold {fold}", total=len(cases))
                run_steps(Pipeline.from_options(ms, options), cases, pred_dir,
                          clicks_mode=clicks, steps=steps, tracer="case",
                          progress=lambda _, t=task: bar.advance(t))
                evaluated += cases
        ev = merge([evaluate_model(evaluated, pred_dir, model_name, steps)])
    except (*_errors(), FileNotFoundError) as exc:
        fail(str(exc))
    from petloop.metrics.interactive import records_csv, to_json_safe
    from petloop.metrics.plots import plot_curves

    summary = summarize(ev)
    with outputs.writing() as w:
        w.text(csv_path, records_csv(ev.records))
        w.json(json_path, to_json_safe(summary))
        w.call(png_path, lambda p: plot_curves(summary, p,
                                               title=f"Cross-validation of {model_name}"))
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
    budget: Annotated[float | None, typer.Option(min=0, help="The set's default time budget "
                                                 "per step, seconds: mirrored passes are made "
                                                 "while they fit (a command's --time-budget "
                                                 "replaces it).")] = None,
    crop: Annotated[str, typer.Option(help="none (the networks see the whole image) or body "
                                     "(only the CT's body box).")] = "none",
    tile_step: Annotated[float, typer.Option(help="The sliding window's step "
                                             "as a fraction of the patch: 0.5 overlaps tiles "
                                             "by half (nnU-Net's default), 1 lays them edge to "
                                             "edge (about 8x fewer tiles).")] = 0.5,
    budget_mode: Annotated[str, typer.Option(
        help="How the budget chooses mirrored passes: tiles or birth (see predict).")]
    = "tiles",
) -> None:
    """Assemble a model set (manifest with the BIRTH routing and how to run it, slim
    checkpoints, tracer weights)."""
    from petloop.inference.export import export_model_set, folder_size
    from petloop.inference.modelset import InferenceSettings

    one_of(routing, "--routing", ("birth", "birth-fg"))
    one_of(window, "--window", WINDOWS)
    one_of(crop, "--crop", CROPS)
    one_of(budget_mode, "--budget-mode", BUDGET_MODES)
    if not 0.1 <= tile_step <= 1.0:
        fail(f"--tile-step: the step is a fraction of the patch from 0.1 to 1, got {tile_step:g}")
    safe_name(name, "--name")  # the set's name becomes part of folder names (evaluate, demo)
    for option, folder in (("--fdg-v4", fdg_v4), ("--fdg-v3", fdg_v3), ("--psma-v2", psma_v2)):
        existing_folder(folder, option)
    existing_file(tracer_weights, "--tracer-weights")
    # the set is written beside --out and renamed onto it; --out may be a set the models come
    # from, but not a model folder itself
    outputs = OutputSet({"--fdg-v4": fdg_v4, "--fdg-v3": fdg_v3, "--psma-v2": psma_v2,
                         "--tracer-weights": tracer_weights})
    outputs.add_folder("--out", out)
    try:
        path = export_model_set(out, fdg_v4, fdg_v3, psma_v2, tracer_weights, name,
                                description, half=not full_precision, routing=routing,
                                inference=InferenceSettings(
                                    window=window, mirrors=mirrors, budget=budget, crop=crop,
                                    tile_step=tile_step, budget_mode=budget_mode))
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


@models_app.command("add-scribbles")
def models_add_scribbles(
    models: Annotated[Path, typer.Option(help="The model set to add them to (changed in "
                                         "place).")],
    fdg: Annotated[Path | None, typer.Option(help="Trained nnU-Net model folder of the FDG "
                                             "scribble model.")] = None,
    psma: Annotated[Path | None, typer.Option(help="Trained nnU-Net model folder of the PSMA "
                                              "scribble model.")] = None,
) -> None:
    """Add scribble models (recipe scribbles or scribbles_gaussian) to a model set: copied as
    <tracer>_scribbles, and the set's scribble steps routed to them (autoPET V; clicks keep
    their routes)."""
    from petloop.inference.export import add_scribble_models
    from petloop.inference.modelset import ModelSetError

    folders = {t: f for t, f in (("fdg", fdg), ("psma", psma)) if f is not None}
    if not folders:
        fail("--fdg/--psma: give at least one scribble model folder")
    existing_file(models / "manifest.json", "--models")
    for option, folder in (("--fdg", fdg), ("--psma", psma)):
        if folder is not None:
            existing_folder(folder, option)
    try:
        manifest = add_scribble_models(models, folders)
    except (ModelSetError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    console.print(f"added {', '.join(f'{t}_scribbles' for t in folders)}; scribble steps route "
                  f"to them ({manifest})")


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
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or mps.")] = "cpu",
    precision: Precision = "auto",
    window: Window = None,
    mirrors: Mirrors = None,
    time_budget: Annotated[float | None, typer.Option(help="Seconds for mirroring.")] = None,
    budget_mode: BudgetMode = None,
    trust_suv: TrustSuv = False,
) -> None:
    """Fit the set's SUV thresholds (the post-processing), and with --routing where its routing
    hands over, on validation cases: each case runs the click steps once (with --routing once
    per model), every candidate is scored on the same masks, and the one with the highest Dice
    AUC goes into the manifest, with the scores in calibration.json."""
    import math

    options = run_options(device=device, precision=precision, window=window, mirrors=mirrors,
                          time_budget=time_budget, budget_mode=budget_mode,
                          trust_suv=trust_suv)
    models = model_set(models)
    try:
        candidates = (None if thresholds is None else
                      [float(v) for v in thresholds.split(",") if v.strip()])
    except ValueError:
        fail(f"--thresholds: {thresholds!r} is not a comma-separated list of numbers")
    if candidates is not None and (not candidates or not all(math.isfinite(v) and v >= 0
                                                             for v in candidates)):
        fail(f"--thresholds: {thresholds!r}: give one or more SUV thresholds of at least 0")
    for folder in data:
        existing_folder(folder, "--data")
    # the fit goes into the set's manifest.json and calibration.json: both must be writable
    # (before the click steps run, not after)
    if not dry_run:
        existing_file(models / "manifest.json", "--models")
        outputs = OutputSet({"--data": data})
        outputs.add("--models", models / "manifest.json", "json")
        outputs.add("--models", models / "calibration.json", "json")
    from petloop.inference.calibrate import (
        CANDIDATES,
        calibrate_thresholds,
        write_calibration,
    )
    from petloop.inference.modelset import load_model_set
    from petloop.inference.pipeline import Pipeline, resolve_precision
    from petloop.io.layouts import LayoutError, find_cases

    if candidates is None:
        candidates = CANDIDATES
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
        loaded = load_model_set(models)
        cases = [c for folder in data for c in find_cases(folder)]
        with progress() as bar:
            task = bar.add_task(f"calibrating {loaded.name}", total=len(cases))
            result = calibrate_thresholds(
                Pipeline.from_options(loaded, options), cases, thresholds=candidates,
                steps=steps, tracer=None if tracer == "case" else tracer,
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
    ran = loaded.inference.override(window=window, mirrors=mirrors)
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
