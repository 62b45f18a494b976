"""The ``petloop`` command line: one subcommand per job.

Environment variables are read here and nowhere else in petloop.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

app = typer.Typer(
    name="petloop",
    help="Interactive, click-guided lesion segmentation in whole-body PET/CT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
CLICKS_HELP = """Clicks: simulate them as the challenge does, convert click files, write heatmaps.

Click files hold integer voxel indices [i, j, k] of the PET image, in click order, in one of two
JSON forms:

* simple: `{"tumor": [[i, j, k], ...], "background": [[i, j, k], ...]}`

* gc (grand-challenge): `{"version": {"major": 1, "minor": 0}, "type": "Multiple points",
"points": [{"point": [i, j, k], "name": "tumor"}, {"point": [i, j, k], "name": "background"}]}`

Step k of an interactive run uses the first k tumor and the first k background clicks.
"""
clicks_app = typer.Typer(help=CLICKS_HELP, no_args_is_help=True, rich_markup_mode="markdown")
app.add_typer(clicks_app, name="clicks")

console = Console()
err_console = Console(stderr=True)


def progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=err_console,
                    transient=False)


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


@app.command()
def phantom(
    out: Annotated[Path, typer.Option(help="Folder to write the cases to.")],
    cases: Annotated[int, typer.Option(min=1, help="Number of cases.")] = 4,
    tracer: Annotated[str, typer.Option(help="fdg, psma or mixed (alternating).")] = "mixed",
    seed: Annotated[int, typer.Option(help="Random seed; case n of a seed is always the same.")]
    = 0,
    shape: Annotated[tuple[int, int, int], typer.Option(help="Voxels along i, j, k.")] = (96, 96,
                                                                                            128),
    spacing: Annotated[tuple[float, float, float], typer.Option(help="Voxel size in mm.")] = (
        2.0364, 2.0364, 3.0),
    layout: Annotated[str, typer.Option(help="autopet, nnunet or gc.")] = "autopet",
    negative_fraction: Annotated[float, typer.Option(help="Fraction of negative controls.")] = 0.2,
    lesions: Annotated[tuple[int, int] | None, typer.Option(
        help="Lesions per positive case as MIN MAX (default: drawn per tracer).")] = None,
    preview: Annotated[bool, typer.Option(
        "--preview", help="Also write preview.png (PET MIP, CT, organs) of the first cases.")]
    = False,
) -> None:
    """Generate synthetic whole-body PET/CT cases with lesion and organ labels."""
    from petloop.phantom import PhantomConfig, write_phantoms

    try:
        config = PhantomConfig(seed=seed, tracer=tracer, shape=shape, spacing=spacing,
                               negative_fraction=negative_fraction, lesions=lesions)
    except ValueError as exc:
        fail(str(exc))
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
        path = preview_cases(shown, Path(out) / "preview.png")
        console.print(f"preview: {path}")


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


@app.command("resample-ct")
def resample_ct(
    ct: Annotated[Path, typer.Option(help="CT image (.nii.gz, .nii or .mha).")],
    pet: Annotated[Path, typer.Option(help="PET image whose grid the CT is resampled onto.")],
    out: Annotated[Path, typer.Option(help="Output CT on the PET grid (CTres).")],
) -> None:
    """Resample a CT onto the PET grid (linear, -1024 HU outside), as CTres files are made."""
    from petloop.io.volume import VolumeError, read_volume, resample_to, write_volume

    try:
        pet_vol = read_volume(pet)
        res = resample_to(read_volume(ct), pet_vol, moving_name=f"CT {ct}",
                          reference_name=f"PET {pet}")
        write_volume(res, out)
    except VolumeError as exc:
        fail(str(exc))
    console.print(f"wrote {out} {list(res.shape)} at {list(res.spacing)} mm")


@clicks_app.command("convert")
def clicks_convert(
    src: Annotated[Path, typer.Argument(help="Click file in either JSON form.")],
    dst: Annotated[Path, typer.Argument(help="Output click file.")],
    to: Annotated[str, typer.Option("--format", help="simple or gc.")] = "gc",
    image: Annotated[Path | None, typer.Option(
        help="PET image: check that every point lies inside it.")] = None,
) -> None:
    """Convert a click file between the simple and the grand-challenge form."""
    from petloop.io.clicks import ClickFileError, read_clicks, write_clicks
    from petloop.io.volume import VolumeError, read_volume

    try:
        shape = read_volume(image).shape if image else None
        clicks = read_clicks(src, shape=shape)
        write_clicks(clicks, dst, form=to)
    except (ClickFileError, VolumeError, ValueError) as exc:
        fail(str(exc))
    console.print(f"wrote {dst}: {len(clicks.tumor)} tumor and {len(clicks.background)} "
                  f"background clicks ({to} form)")


@clicks_app.command("simulate")
def clicks_simulate(
    label: Annotated[Path, typer.Option(help="Lesion label (SEG) on the PET grid.")],
    pet: Annotated[Path, typer.Option(help="PET image in SUV.")],
    out: Annotated[Path, typer.Option(help="Click file to write.")],
    to: Annotated[str, typer.Option("--format", help="simple or gc.")] = "simple",
    budget: Annotated[int, typer.Option(min=0, help="Clicks of each kind.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the official simulation.")] = 42,
    center_offset: Annotated[int | None, typer.Option(
        help="Jitter centre clicks by up to N voxels per axis (augmentation).")] = None,
    edge_offset: Annotated[int | None, typer.Option(
        help="Jitter fill-up clicks by up to N voxels per axis (augmentation).")] = None,
) -> None:
    """Simulate the official autoPET IV clicks: lesion centres, boundary fill-up, and
    background clicks at PET hot spots outside the lesions."""
    from petloop.clicks.simulate import simulate_clicks
    from petloop.io.clicks import write_clicks
    from petloop.io.volume import VolumeError, read_volume

    try:
        lab = read_volume(label)
        suv = read_volume(pet)
        if not lab.same_grid(suv):
            fail(f"{label}: the label grid {lab.geometry()} differs from the PET grid of {pet}")
        clicks = simulate_clicks(lab.array, suv.array, budget=budget, seed=seed,
                                 center_offset=center_offset, edge_offset=edge_offset)
        write_clicks(clicks, out, form=to)
    except (VolumeError, ValueError) as exc:
        fail(str(exc))
    console.print(f"wrote {out}: {len(clicks.tumor)} tumor and {len(clicks.background)} "
                  f"background clicks ({to} form)")


@clicks_app.command("heatmaps")
def clicks_heatmaps(
    clicks: Annotated[Path, typer.Option(help="Click file in either form.")],
    reference: Annotated[Path, typer.Option(help="PET image whose grid the heatmaps take.")],
    out_dir: Annotated[Path, typer.Option(help="Folder for NAME_0002 (FG) and NAME_0003 (BG).")],
    step: Annotated[int | None, typer.Option(
        min=0, help="Interactive step k: first k clicks of each kind (default: all).")] = None,
    encoding: Annotated[str, typer.Option(help="gaussian (official) or edt_ball.")] = "gaussian",
    sigma: Annotated[float, typer.Option(help="Gaussian sigma in voxels.")] = 3.0,
    radius: Annotated[float, typer.Option(help="edt_ball radius in voxels.")] = 2.0,
    case: Annotated[str | None, typer.Option(
        help="Case name for the file names (default: from the reference file).")] = None,
) -> None:
    """Write the FG and BG click channels as NIfTI on the reference grid, named as nnU-Net
    expects (NAME_0002.nii.gz, NAME_0003.nii.gz)."""
    from petloop.clicks.encode import encode_clicks
    from petloop.io.clicks import ClickFileError, read_clicks
    from petloop.io.volume import VolumeError, read_volume, write_volume

    try:
        ref = read_volume(reference)
        c = read_clicks(clicks, shape=ref.shape)
        fg, bg = encode_clicks(c, ref.shape, step=step, encoding=encoding, sigma=sigma,
                               radius=radius)
    except (VolumeError, ClickFileError, ValueError) as exc:
        fail(str(exc))
    if case is None:
        name = reference.name
        for suffix in (".nii.gz", ".nii", ".mha"):
            name = name.removesuffix(suffix)
        case = name.removesuffix("_0001")
    paths = [write_volume(ref.with_array(a), out_dir / f"{case}_{n:04d}.nii.gz")
             for n, a in ((2, fg), (3, bg))]
    console.print(f"wrote {paths[0]} and {paths[1]} ({encoding}, step "
                  f"{'all' if step is None else step})")


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
    pred: Annotated[list[str], typer.Option(
        help="Predictions folder with <case>_step{k}.nii.gz, as NAME=DIR or DIR; repeat to "
             "compare models.")],
    out: Annotated[Path, typer.Option(help="Folder for the CSV, JSON and plots.")],
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

    runs = []
    for item in pred:
        name, sep, folder = item.partition("=")
        if not sep:
            name, folder = Path(item).name, item
        if not Path(folder).is_dir():
            fail(f"{folder}: no such predictions folder")
        runs.append((name, Path(folder)))
    try:
        cases = find_cases(data, layout)
        evaluations = []
        with progress() as bar:
            for name, folder in runs:
                task = bar.add_task(f"evaluating {name}", total=len(cases))
                evaluations.append(evaluate_model(cases, folder, name, steps, label,
                                                  progress=lambda t=task: bar.advance(t)))
    except (LayoutError, MaskError, VolumeError) as exc:
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


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo's output.")] = Path("demo_out"),
    cases: Annotated[int, typer.Option(min=1, help="Number of phantom cases.")] = 4,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 2026,
) -> None:
    """Generate a small mixed FDG/PSMA phantom set and preview it."""
    phantom(out=out / "phantoms", cases=cases, tracer="mixed", seed=seed, shape=(96, 96, 128),
            spacing=(2.0364, 2.0364, 3.0), layout="autopet", negative_fraction=0.25,
            lesions=None, preview=True)


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
