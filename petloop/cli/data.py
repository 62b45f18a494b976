"""Phantoms, dataset listing, CT resampling and the demo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from petloop.cli import app, console, fail, progress
from petloop.cli.guard import one_of
from petloop.cli.inference import (
    CLICK_MODES,
    DEFAULT_MODELS,
    EmptyRegionOpt,
    Models,
    Precision,
    ProtocolOpt,
    Window,
    model_set,
    run_options,
)
from petloop.io.layouts import LAYOUTS
from petloop.io.outputs import OutputSet
from petloop.options import EMPTY_REGIONS, PROTOCOLS

# petloop.experiments.demo.GRIDS, named before torch loads
DEMO_GRIDS = ("trunk", "quick", "autopet")


@app.command()
def phantom(
    out: Annotated[Path, typer.Option(help="Folder to write the cases to.")],
    cases: Annotated[int, typer.Option(min=1, help="Number of cases.")] = 4,
    tracer: Annotated[str, typer.Option(help="fdg, psma or mixed (alternating).")] = "mixed",
    seed: Annotated[int, typer.Option(
        min=0, help="Random seed; case n of a seed is always the same.")] = 0,
    preset: Annotated[str, typer.Option(
        help="Grid: autopet-fdg (400 x 400 x 326 at 2.0364 x 2.0364 x 3 mm), autopet-psma "
             "(200 x 200 x 340 at 4.0728 x 4.0728 x 3 mm), quick (168 x 128 x 256 at "
             "3 x 3 x 4 mm, the whole body) or trunk (144 x 104 x 64 at 3 x 3 x 4 mm from "
             "440 mm below the vertex). The body is adult-sized on every grid; a smaller grid "
             "crops it.")]
    = "quick",
    shape: Annotated[tuple[int, int, int] | None, typer.Option(
        help="Voxels along i, j, k (instead of the preset's).")] = None,
    spacing: Annotated[tuple[float, float, float] | None, typer.Option(
        help="Voxel size in mm (instead of the preset's).")] = None,
    top_mm: Annotated[float | None, typer.Option(
        help="Where the field of view starts: its top slice, in mm below the vertex (default: "
             "the preset's; -10, just above the head, for all but trunk).")] = None,
    layout: Annotated[str, typer.Option(help="autopet, nnunet, gc or dicom (CT and PET "
                                        "series, the PET in BQML).")] = "autopet",
    negative_fraction: Annotated[float, typer.Option(help="Fraction of negative controls.")] = 0.2,
    lesions: Annotated[tuple[int, int] | None, typer.Option(
        help="Lesions per positive case as MIN MAX (default: drawn per tracer).")] = None,
    preview: Annotated[bool, typer.Option(
        "--preview", help="Also write preview.png (PET MIP, CT, organs) of the first cases.")]
    = False,
) -> None:
    """Generate synthetic whole-body PET/CT cases with lesion and organ labels. Each case is
    written whole or not at all: an interrupted run leaves the cases it finished."""
    from petloop.phantom import PRESETS, PhantomConfig, write_phantoms

    one_of(layout, "--layout", LAYOUTS)
    one_of(preset, "--preset", tuple(PRESETS))
    try:
        grid = {k: v for k, v in (("shape", shape), ("spacing", spacing), ("top_mm", top_mm))
                if v is not None}
        config = PhantomConfig.preset(preset, seed=seed, tracer=tracer, lesions=lesions,
                                      negative_fraction=negative_fraction, **grid)
    except ValueError as exc:
        fail(str(exc))
    outputs = OutputSet()
    outputs.add_folder("--out", out)
    preview_path = outputs.add("--out", out / "preview.png", "png") if preview else None
    summary = []
    with progress() as bar:
        task = bar.add_task(f"phantoms -> {out}", total=cases)

        def on_case(index: int, info: dict) -> None:
            summary.append(info)
            bar.advance(task)

        try:
            files = write_phantoms(config, out, cases, layout=layout, on_case=on_case)
        except ValueError as exc:
            fail(str(exc))
    table = Table(title=f"{cases} phantom case(s) in {out} ({layout} layout)")
    for col in ("case", "tracer", "weight kg", "lesions", "lesion ml", "SUVmax", "liver SUV"):
        table.add_column(col, justify="right" if col not in ("case", "tracer") else "left",
                         no_wrap=col == "case")
    for info in summary:
        suvmax = max((x["suvmax"] for x in info["lesions"]), default=0.0)
        table.add_row(info["case_id"], info["tracer"], f"{info['patient_weight_kg']:.0f}",
                      str(info["n_lesions"]), f"{info['total_lesion_volume_ml']:.1f}",
                      f"{suvmax:.1f}" if info["lesions"] else "-",
                      f"{info['organ_suv_mean'].get('liver', 0):.2f}")
    console.print(table)
    if preview:
        from petloop.phantom.preview import preview_cases

        shown = [f.load() for f in files[: min(len(files), 4)]]
        with outputs.writing() as w:
            w.call(preview_path, lambda p: preview_cases(shown, p))
        console.print(f"preview: {preview_path}")


@app.command("cases")
def list_cases(
    data: Annotated[Path, typer.Argument(help="Dataset folder (autopet, nnunet or gc layout).")],
    layout: Annotated[str, typer.Option(help="auto, autopet, nnunet or gc.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
    = False,
) -> None:
    """List the cases petloop finds in a dataset folder, and what each one has."""
    from petloop.io.layouts import LayoutError, find_cases

    try:
        found = find_cases(data, layout)
    except (LayoutError, ValueError) as exc:
        fail(str(exc))
    rows = [{"case": f.case_id, "layout": f.layout, "tracer": f.tracer, "ct": str(f.ct),
             "pet": str(f.pet), "label": bool(f.label), "organs": bool(f.organs),
             "clicks": bool(f.clicks)} for f in found]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"{len(rows)} case(s) in {data}")
    for col in ("case", "layout", "tracer", "label", "organs", "clicks"):
        table.add_column(col, no_wrap=col == "case")
    for r in rows:
        table.add_row(r["case"], r["layout"], str(r["tracer"]), *("yes" if r[k] else "-" for k in
                                                                  ("label", "organs", "clicks")))
    console.print(table)


@app.command()
def convert(
    ct: Annotated[Path, typer.Option(help="CT: a folder of DICOM files (or an image file).")],
    pet: Annotated[Path, typer.Option(help="PET: a folder of DICOM files (read into SUV from "
                                      "its header), or an image file already in SUV.")],
    out: Annotated[Path, typer.Option(help="Case folder to write (autoPET layout: "
                                      "CTres.nii.gz on the PET grid, SUV.nii.gz, case.json).")],
    series: Annotated[list[str] | None, typer.Option(
        help="SeriesInstanceUID of the series to take where a folder holds several of a "
             "modality; repeat for CT and PET.")] = None,
    weight: Annotated[float | None, typer.Option(
        help="Patient weight in kg, instead of PatientWeight (0010,1030).")] = None,
    suv: Annotated[str, typer.Option(help="bw (body weight) or lbm (lean body mass, "
                                     "Janmahasatian; needs PatientSize and PatientSex).")]
    = "bw",
    tracer: Annotated[str | None, typer.Option(help="fdg or psma, written to case.json.")]
    = None,
) -> None:
    """Turn a PET/CT study from the scanner (DICOM) into a petloop case: the PET in SUV by the
    QIBA rules, the CT on the PET grid."""
    from petloop.io.checks import check_ct, check_pet
    from petloop.io.dicom import read_image
    from petloop.io.suv import SUV_MODES
    from petloop.io.volume import VolumeError, resample_to

    one_of(suv, "--suv", SUV_MODES)
    one_of(tracer, "--tracer", ("fdg", "psma"))
    if weight is not None and not 1 <= weight <= 500:
        fail(f"--weight: {weight:g} kg is not a plausible patient weight (1 to 500 kg)")
    outputs = OutputSet({"--ct": ct, "--pet": pet})
    outputs.add_folder("--out", out)
    paths = {name: outputs.in_folder("--out", out, name, kind)
             for name, kind in (("CTres.nii.gz", "volume"), ("SUV.nii.gz", "volume"),
                                ("case.json", "json"))}
    try:
        pet_vol = read_image(pet, "PT", series=series or (), weight_kg=weight, mode=suv)
        check_pet(pet_vol, str(pet))
        ct_vol = read_image(ct, "CT", series=series or ())
        check_ct(ct_vol, str(ct))
        res = resample_to(ct_vol, pet_vol, default_value=-1024.0, moving_name=f"CT {ct}",
                          reference_name=f"PET {pet}")
    except (VolumeError, ValueError) as exc:
        fail(str(exc))
    meta = {"source": {"ct": str(ct), "pet": str(pet)}, "suv": suv,
            **({"tracer": tracer} if tracer else {}),
            **({"patient_weight_kg": weight} if weight is not None else {})}
    with outputs.writing() as w:
        w.volume(paths["CTres.nii.gz"], res)
        w.volume(paths["SUV.nii.gz"], pet_vol)
        w.json(paths["case.json"], meta)
    console.print(f"wrote {out}: SUV{suv} {list(pet_vol.shape)} at "
                  f"{[round(v, 4) for v in pet_vol.spacing]} mm (max "
                  f"{float(pet_vol.array.max()):.2f}), CT on the PET grid")


@app.command("resample-ct")
def resample_ct(
    ct: Annotated[Path, typer.Option(help="CT image (.nii.gz, .nii or .mha).")],
    pet: Annotated[Path, typer.Option(help="PET image whose grid the CT is resampled onto.")],
    out: Annotated[Path, typer.Option(help="Output CT on the PET grid (CTres).")],
) -> None:
    """Resample a CT onto the PET grid (linear, -1024 HU outside), as CTres files are made."""
    from petloop.io.checks import check_ct
    from petloop.io.volume import VolumeError, read_volume, resample_to

    outputs = OutputSet({"--ct": ct, "--pet": pet})
    outputs.add("--out", out, "volume")
    try:
        pet_vol = read_volume(pet)
        ct_vol = read_volume(ct)
        check_ct(ct_vol, str(ct))
        res = resample_to(ct_vol, pet_vol, moving_name=f"CT {ct}",
                          reference_name=f"PET {pet}")
    except VolumeError as exc:
        fail(str(exc))
    with outputs.writing() as w:
        w.volume(out, res)
    console.print(f"wrote {out} {list(res.shape)} at {list(res.spacing)} mm")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo's output.")] = Path("demo_out"),
    cases: Annotated[int, typer.Option(min=1, help="Held-out phantom cases.")] = 4,
    models: Models = DEFAULT_MODELS,
    clicks: Annotated[str, typer.Option(help="official or error-driven.")] = "official",
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or mps.")] = "cpu",
    precision: Precision = "auto",
    seed: Annotated[int, typer.Option(min=0, help="Seed of the held-out phantoms.")] = 9001,
    grid: Annotated[str, typer.Option(
        help="Phantom grid: trunk (adult trunk crops, 144 x 104 x 64 at 3 x 3 x 4 mm), quick "
             "(whole adult bodies, 168 x 128 x 256 at 3 x 3 x 4 mm) or autopet (FDG on the "
             "autoPET FDG grid, PSMA on a PSMA grid: minutes per case on a CPU).")] = "trunk",
    time_budget: Annotated[float | None, typer.Option(
        min=0, help="Seconds per prediction for test-time mirroring (the paper's TTA within a "
        "time budget: as many of the 7 mirrored passes as fit after the plain one, at most "
        "--mirrors or the model set's inference.mirrors).")] = None,
    window: Window = None,
    mirrors: Annotated[int | None, typer.Option(
        min=0, max=7, help="Mirrored passes per prediction (test-time augmentation) of the "
        "set's own columns; default none (the paper's column makes as many as its 40 s "
        "budget allows). A --time-budget caps them.")] = None,
    paper_column: Annotated[bool, typer.Option(
        "--paper-column/--no-paper-column",
        help="Also run the paper's exact configuration (BIRTH's routing, SUV thresholds 1.5 / "
        "1.0, a 40 s test-time augmentation budget): the slowest column by far.")] = True,
    protocol: ProtocolOpt = "autopet4",
    empty_region: EmptyRegionOpt = "official",
) -> None:
    """The paper's interactive experiment on held-out phantoms with the bundled model set:
    tables per click step, plots and a report (autoPET V's loop with --protocol autopet5)."""
    run_options(device=device, precision=precision, window=window, mirrors=mirrors,
                time_budget=time_budget)
    one_of(clicks, "--clicks", CLICK_MODES)
    one_of(grid, "--grid", DEMO_GRIDS)
    one_of(protocol, "--protocol", PROTOCOLS)
    one_of(empty_region, "--empty-region", EMPTY_REGIONS)
    models = model_set(models)
    OutputSet({"--models": models}).add_folder("--out", out)
    if protocol == "autopet5":
        _demo_autopet5(models, out, cases, device, precision, seed, grid, time_budget, window,
                       mirrors, empty_region)
        return
    from petloop.experiments.demo import PAIRED_NOTE, DemoConfig, run_demo
    from petloop.metrics.tables import negative_table, ranking_table

    config = DemoConfig(models=models, out=out, cases=cases, clicks=clicks, device=device,
                        seed=seed, grid=grid, precision=precision, time_budget=time_budget,
                        window=window, mirrors=mirrors, paper_column=paper_column)
    result = _with_progress("click steps", lambda tick: run_demo(config, tick))
    summary = result["summary"]
    _step_tables(summary, "click step", result["references"])
    console.print(ranking_table(summary))
    neg = negative_table(summary)
    if neg is not None:
        console.print(neg)
    from rich.table import Table

    table = Table(title="What the numbers show")
    for col in ("claim", "observed", "holds"):
        table.add_column(col)
    for f in result["findings"]:
        table.add_row(f.claim, f.observed, "[green]yes[/green]" if f.holds else "[red]no[/red]")
    console.print(table)
    console.print(PAIRED_NOTE)
    console.print(f"report: {result['report']}; plots: "
                  + ", ".join(str(p) for p in result["plots"].values()))


def _with_progress(what: str, run):
    """``run(tick)`` under a progress bar; a model set or input error ends the command."""
    from petloop.inference.modelset import ModelSetError

    try:
        with progress() as bar:
            task = bar.add_task(what, total=None)
            return run(lambda text, i, n: bar.update(task, completed=i, total=n,
                                                     description=text))
    except (ModelSetError, ValueError) as exc:
        fail(str(exc))


def _step_tables(summary, unit: str, references: dict | None = None) -> None:
    from petloop.experiments.demo import reference_line
    from petloop.metrics.tables import step_table

    for tracer in ("fdg", "psma"):
        if any(tracer in e["tracers"] for e in summary["models"].values()):
            console.print(step_table(summary, tracer, f"{tracer.upper()} phantoms: mean per "
                                                      f"{unit}"))
            if references and tracer in references:
                console.print(reference_line(references[tracer]))


def _demo_autopet5(models, out, cases, device, precision, seed, grid, time_budget, window,
                   mirrors, empty_region) -> None:
    from petloop.experiments.demo import DemoConfig
    from petloop.experiments.demo5 import run_demo_autopet5
    from petloop.metrics.tables import paired_table, ranking_table, strategy_table

    config = DemoConfig(models=models, out=out, cases=cases, device=device, seed=seed,
                        grid=grid, precision=precision, time_budget=time_budget, window=window,
                        mirrors=mirrors, steps=6)
    result = _with_progress("scribble steps", lambda tick: run_demo_autopet5(
        config, empty_region=empty_region, progress=tick))
    summary = result["summary"]
    _step_tables(summary, "scribble step")
    console.print(ranking_table(summary))
    console.print(strategy_table(summary))
    paired = paired_table(summary)
    if paired is not None:
        console.print(paired)
    console.print(f"report: {result['report']}; plots: "
                  + ", ".join(str(p) for p in result["plots"].values()))
