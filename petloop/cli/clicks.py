"""Click files, the official simulation and heatmaps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from petloop.cli import clicks_app, console, fail


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
    from petloop.io.clicks import ClickFileError, read_clicks, write_clicks
    from petloop.io.volume import VolumeError, read_volume

    try:
        shape = read_volume(image).shape if image else None
        clicks = read_clicks(src, shape=shape)
        write_clicks(clicks, dst, form=to)
    except (ClickFileError, VolumeError, ValueError) as exc:
        fail(str(exc))
    _wrote(dst, clicks, to)


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
    _wrote(out, clicks, to)


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


