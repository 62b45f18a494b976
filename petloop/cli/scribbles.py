"""autoPET V's scribbles: one step of the challenge's interaction loop."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from petloop.cli import console, fail, scribbles_app
from petloop.cli.guard import one_of
from petloop.io.clicks import FORMS
from petloop.io.outputs import OutputSet

LOOP_INDENT = 4  # the loop saves its iter_k_scribbles.json with json.dump(..., indent=4)


@scribbles_app.command("next")
def scribbles_next(
    label: Annotated[Path, typer.Option(help="Ground-truth lesion label.")],
    pred: Annotated[Path, typer.Option(help="The previous step's prediction, on the label's "
                                       "grid.")],
    out: Annotated[Path, typer.Option(help="Scribble file to write: all scribbles so far.")],
    scribbles: Annotated[Path | None, typer.Option(
        help="The scribbles so far (either form); none: start from no scribbles.")] = None,
    strategy: Annotated[str, typer.Option(help="centerline, random or boundary.")]
    = "centerline",
    to: Annotated[str, typer.Option("--format", help="simple (as the loop saves its "
                                    "iter_k_scribbles.json) or gc (its lesion-clicks.json).")]
    = "simple",
    seed: Annotated[int, typer.Option(min=0, help="Seed of the random and boundary strokes.")]
    = 42,
    empty_region: Annotated[str, typer.Option(
        help="official: fail where an error region is empty, as the challenge's loop does; "
             "fixed: add the other region's scribble (none for an exact prediction).")]
    = "official",
) -> None:
    """One correction of autoPET V's interaction loop: a scribble simulated in the
    over-segmentation and one in the under-segmentation of PRED, the tumour one added when it
    is not larger than the background one, else the background one; written with all earlier
    scribbles. An empty label adds nothing."""
    from petloop.clicks.scribbles import (
        EMPTY_REGIONS,
        STRATEGIES,
        OfficialLoopFailure,
        next_scribbles,
    )
    from petloop.io.checks import check_label
    from petloop.io.clicks import ClickFileError, Clicks, read_clicks
    from petloop.io.volume import VolumeError, read_volume

    one_of(strategy, "--strategy", STRATEGIES)
    one_of(to, "--format", FORMS)
    one_of(empty_region, "--empty-region", EMPTY_REGIONS)
    outputs = OutputSet({"--label": label, "--pred": pred, "--scribbles": scribbles})
    outputs.add("--out", out, "json")
    try:
        truth = read_volume(label)
        check_label(truth, str(label))
        prediction = read_volume(pred)
        check_label(prediction, str(pred))
        if not prediction.same_grid(truth):
            fail(f"{pred}: the prediction's grid {prediction.geometry()} differs from the "
                 f"label's {truth.geometry()} ({label})")
        before = Clicks() if scribbles is None else read_clicks(scribbles, shape=truth.shape)
        step = next_scribbles(truth.array, prediction.array, before, strategy, seed=seed,
                              empty_region=empty_region)
    except OfficialLoopFailure as exc:
        fail(f"{pred}: {exc}")
    except (VolumeError, ClickFileError, ValueError) as exc:
        fail(str(exc))
    with outputs.writing() as w:
        w.clicks(out, step.scribbles, form=to, indent=LOOP_INDENT if to == "simple" else None)
    if step.added is None:
        what = "added nothing (empty label)" if not truth.array.any() else \
            "added nothing (the prediction is exact)"
    else:
        s = step.stroke
        what = (f"added a {step.added} scribble of {s.size} voxels on slice k={s.slice_index} "
                f"({strategy}; tumour stroke {step.tumor_size}, background stroke "
                f"{step.background_size})")
    console.print(f"{what}\nwrote {out}: {len(step.scribbles.tumor)} tumor and "
                  f"{len(step.scribbles.background)} background voxels ({to} form)")
