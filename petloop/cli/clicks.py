"""Click files, the official simulation and heatmaps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from petloop.cli import clicks_app, console, fail
from petloop.cli.guard import one_of, positive
from petloop.cli.inference import TrustSuv, check_step
from petloop.io.clicks import FORMS
from petloop.io.outputs import OutputSet, safe_name


def _wrote(path: Path, clicks, form: str) -> None:
    console.print(f"wrote {path}: {len(clicks.tumor)} tumor and {len(clicks.background)} "
                  f"background clicks ({form} form)")


@clicks_app.command("convert")
def clicks_convert(
    src: Annotated[Path, typer.Argument(help="Click file in either JSON form.")],
    dst: Annotated[Path, typer.Argument(help="Output click file.")],
    to: Annotated[str, typer.Option("--format", help="simple or gc.")] = "gc",
    image: Annotated[Path | None, typer.Option(
        help="PET image: check that every point lies inside it.")] = None,
) -> None:
    """Convert a click file between the simple and the grand-challenge form."""
    from petloop.io.clicks import ClickFileError, read_clicks
    from petloop.io.volume import VolumeError, read_volume

    one_of(to, "--format", FORMS)
    outputs = OutputSet({"SRC": src, "--image": image})
    outputs.add("DST", dst, "json")
    try:
        shape = read_volume(image).shape if image else None
        clicks = read_clicks(src, shape=shape)
    except (ClickFileError, VolumeError, ValueError) as exc:
        fail(str(exc))
    with outputs.writing() as w:
        w.clicks(dst, clicks, form=to)
    _wrote(dst, clicks, to)


@clicks_app.command("simulate")
def clicks_simulate(
    label: Annotated[Path, typer.Option(help="Lesion label (SEG) on the PET grid.")],
    pet: Annotated[Path, typer.Option(help="PET image in SUV.")],
    out: Annotated[Path, typer.Option(help="Click file to write.")],
    to: Annotated[str, typer.Option("--format", help="simple or gc.")] = "simple",
    budget: Annotated[int, typer.Option(min=0, help="Clicks of each kind.")] = 10,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the official simulation.")] = 42,
    center_offset: Annotated[int | None, typer.Option(
        min=0, help="Jitter centre clicks by up to N voxels per axis (augmentation).")] = None,
    edge_offset: Annotated[int | None, typer.Option(
        min=0, help="Jitter fill-up clicks by up to N voxels per axis (augmentation).")] = None,
    trust_suv: TrustSuv = False,
) -> None:
    """Simulate the official autoPET IV clicks: lesion centres, boundary fill-up, and
    background clicks at PET hot spots outside the lesions."""
    from petloop.clicks.simulate import simulate_clicks
    from petloop.io.checks import check_label, check_pet
    from petloop.io.volume import VolumeError, read_volume

    one_of(to, "--format", FORMS)
    outputs = OutputSet({"--label": label, "--pet": pet})
    outputs.add("--out", out, "json")
    try:
        lab = read_volume(label)
        check_label(lab, str(label))
        suv = read_volume(pet)
        check_pet(suv, str(pet), trust_suv=trust_suv)
        if not lab.same_grid(suv):
            fail(f"{label}: the label grid {lab.geometry()} differs from the PET grid of {pet}")
        clicks = simulate_clicks(lab.array, suv.array, budget=budget, seed=seed,
                                 center_offset=center_offset, edge_offset=edge_offset)
    except (VolumeError, ValueError) as exc:
        fail(str(exc))
    with outputs.writing() as w:
        w.clicks(out, clicks, form=to)
    _wrote(out, clicks, to)


def case_name(reference: Path) -> str:
    """NAME of a reference image NAME_0001.nii.gz (or NAME.nii.gz, .nii, .mha)."""
    from petloop.io.volume import volume_stem

    return volume_stem(reference.name).removesuffix("_0001")


@clicks_app.command("heatmaps")
def clicks_heatmaps(
    clicks: Annotated[Path, typer.Option(help="Click file in either form.")],
    reference: Annotated[Path, typer.Option(help="PET image whose grid the heatmaps take.")],
    out_dir: Annotated[Path, typer.Option(help="Folder for NAME_0002 (FG) and NAME_0003 (BG).")],
    step: Annotated[int | None, typer.Option(
        min=0, help="Interactive step k: first k clicks of each kind (default: all).")] = None,
    encoding: Annotated[str, typer.Option(
        help="gaussian (official), edt_ball, or binary (autoPET V's baseline: 1 at each "
             "click or scribble voxel).")] = "gaussian",
    sigma: Annotated[float, typer.Option(help="Gaussian sigma in voxels (above 0).")] = 3.0,
    radius: Annotated[float, typer.Option(help="edt_ball radius in voxels (above 0).")] = 2.0,
    case: Annotated[str | None, typer.Option(
        help="Case name for the file names, a plain file name (default: from the reference "
             "file).")] = None,
) -> None:
    """Write the FG and BG click channels as NIfTI on the reference grid, named as nnU-Net
    expects (NAME_0002.nii.gz, NAME_0003.nii.gz)."""
    from petloop.clicks.encode import ENCODINGS, encode_clicks
    from petloop.io.clicks import ClickFileError, read_clicks
    from petloop.io.volume import VolumeError, read_volume

    one_of(encoding, "--encoding", ENCODINGS)
    positive(sigma, "--sigma")
    positive(radius, "--radius")
    if case is not None:
        safe_name(case, "--case")
    else:
        case = safe_name(case_name(reference),
                         f"--reference {reference} (the case name it gives; set --case)")
    outputs = OutputSet({"--clicks": clicks, "--reference": reference})
    outputs.add_folder("--out-dir", out_dir)
    paths = [outputs.in_folder("--out-dir", out_dir, f"{case}_{n:04d}.nii.gz", "volume",
                               what="--case") for n in (2, 3)]
    try:
        ref = read_volume(reference)
        c = read_clicks(clicks, shape=ref.shape)
        if step is not None:
            check_step(step, c, clicks)
        fg, bg = encode_clicks(c, ref.shape, step=step, encoding=encoding, sigma=sigma,
                               radius=radius)
    except (VolumeError, ClickFileError, ValueError) as exc:
        fail(str(exc))
    with outputs.writing() as w:
        w.volume(paths[0], ref.with_array(fg))
        w.volume(paths[1], ref.with_array(bg))
    console.print(f"wrote {paths[0]} and {paths[1]} ({encoding}, step "
                  f"{'all' if step is None else step})")
