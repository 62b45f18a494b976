"""The ``petloop`` command line: one subcommand per job (one module per area).

Environment variables are read in this package and nowhere else in petloop.
"""

from __future__ import annotations

import sys

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

from petloop.cli.guard import PetloopGroup, fail, install_sigterm
from petloop.cli.memory import keep_freed_memory

app = typer.Typer(
    name="petloop",
    help="Interactive, click-guided lesion segmentation in whole-body PET/CT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    cls=PetloopGroup,  # one-line errors for whatever a command raises (guard.py)
)
CLICKS_HELP = """Clicks: simulate them as the challenge does, convert click files, write heatmaps.

Click files hold integer voxel indices [i, j, k] of the PET image, in click order, in one of two
JSON forms:

* simple: `{"tumor": [[i, j, k], ...], "background": [[i, j, k], ...]}`

* gc (grand-challenge): `{"version": {"major": 1, "minor": 0}, "type": "Multiple points",
"points": [{"point": [i, j, k], "name": "tumor"}, {"point": [i, j, k], "name": "background"}]}`

Step k of an interactive run uses the first k tumor and the first k background clicks.
"""


@app.callback()
def _process() -> None:
    # before any command imports torch: memory settings for the network on a CPU (memory.py)
    keep_freed_memory()
    # SIGTERM ends a run like Ctrl-C does: finally-blocks run and no partial output is left
    install_sigterm()


clicks_app = typer.Typer(help=CLICKS_HELP, no_args_is_help=True, rich_markup_mode="markdown")
app.add_typer(clicks_app, name="clicks")
SCRIBBLES_HELP = """Scribbles: autoPET V's simulated strokes and its interaction loop, exactly.

A scribble file is a click file whose points are a stroke's voxels [i, j, k] (the same two JSON
forms); tumor scribbles correct under-segmentation, background ones over-segmentation.
"""
scribbles_app = typer.Typer(help=SCRIBBLES_HELP, no_args_is_help=True,
                            rich_markup_mode="markdown")
app.add_typer(scribbles_app, name="scribbles")

# wide tables (the demo's has 13 columns) stay readable when the output goes to a file or a pipe,
# where rich would otherwise assume 80 columns and cut every cell
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True)


def progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=err_console,
                    transient=False)


__all__ = ["app", "clicks_app", "console", "err_console", "fail", "main", "progress",
           "scribbles_app"]


# the command modules register themselves on ``app``
from petloop.cli import clicks as _clicks  # noqa: E402,F401
from petloop.cli import data as _data  # noqa: E402,F401
from petloop.cli import inference as _inference  # noqa: E402,F401
from petloop.cli import metrics as _metrics  # noqa: E402,F401
from petloop.cli import nnunet as _nnunet  # noqa: E402,F401
from petloop.cli import scribbles as _scribbles  # noqa: E402,F401
from petloop.cli import server as _server  # noqa: E402,F401
from petloop.cli import tracer as _tracer  # noqa: E402,F401


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
