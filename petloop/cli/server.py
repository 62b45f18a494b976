"""``petloop serve``: the browser viewer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from petloop.cli import app, err_console, fail
from petloop.cli.inference import (
    DEFAULT_MODELS,
    BudgetMode,
    Mirrors,
    Models,
    Precision,
    TrustSuv,
    Window,
    _errors,
    _pipeline,
    model_set,
    run_options,
)

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@app.command()
def serve(
    models: Models = DEFAULT_MODELS,
    data: Annotated[Path | None, typer.Option(
        help="Folder of cases to offer (autopet, nnunet or gc layout).")] = None,
    phantoms: Annotated[int, typer.Option(
        min=0, help="Without --data: generate this many default-size phantoms (both tracers, "
        "seed 4242) in a temporary folder and offer them; the folder is removed when the "
        "server stops.")] = 0,
    host: Annotated[str, typer.Option(help="Address to bind; loopback unless told "
                                      "otherwise.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    precision: Precision = "auto",
    time_budget: Annotated[float | None, typer.Option(
        help="Seconds per click for test-time mirroring (0 or none: no mirroring).")] = None,
    window: Window = None,
    mirrors: Mirrors = None,
    budget_mode: BudgetMode = None,
    trust_suv: TrustSuv = False,
    max_upload_mb: Annotated[float, typer.Option(min=1, help="Largest upload (CT and PET "
                                                 "together).")] = 1024.0,
    max_image_voxels: Annotated[int, typer.Option(
        min=1, help="Largest image an upload may declare, in voxels (2^28: 512 x 512 x 1024); "
        "also bounds the PET grid resampled to the models' spacing.")] = 2**28,
    max_image_mb: Annotated[float, typer.Option(
        min=1, help="Largest image an upload may declare, in MiB of voxel data as "
        "stored.")] = 1024.0,
    session_ttl: Annotated[float, typer.Option(min=10, help="Seconds a session lives without "
                                               "a request.")] = 3600.0,
    max_sessions: Annotated[int, typer.Option(min=1)] = 16,
    max_queued_changes: Annotated[int, typer.Option(
        min=0, help="Changes (clicks, undo, reset) of one session that may wait behind the "
        "running one; more are answered 429.")] = 8,
) -> None:
    """Serve the viewer: open a case (or upload CT and PET), click, and watch the mask update."""
    import shutil
    import tempfile

    import uvicorn

    from petloop.cli.guard import positive
    from petloop.io.layouts import LayoutError, find_cases
    from petloop.io.volume import ReadLimits
    from petloop.server.app import ServerConfig, create_app

    options = run_options(device=device, precision=precision, window=window, mirrors=mirrors,
                          time_budget=time_budget, budget_mode=budget_mode,
                          trust_suv=trust_suv)
    models = model_set(models)
    positive(max_upload_mb, "--max-upload-mb")  # finite: the limits become byte counts
    positive(max_image_mb, "--max-image-mb")
    scratch: str | None = None
    try:  # the phantom folder goes on every way out: errors, Ctrl-C, SIGTERM (SystemExit)
        if data is None and phantoms:
            from petloop.phantom import PhantomConfig, write_phantoms

            scratch = tempfile.mkdtemp(prefix="petloop-viewer-")
            data = Path(scratch) / "phantoms"
            write_phantoms(PhantomConfig(seed=4242, tracer="mixed", negative_fraction=0.0),
                           data, phantoms)
        try:
            pipeline = _pipeline(models, options)
            if data is not None:
                n = len(find_cases(data))
                err_console.print(f"{n} cases in {data}")
        except (*_errors(), LayoutError) as exc:
            fail(str(exc))
        if host not in LOOPBACK:
            err_console.print(f"[yellow]serving on {host}: anyone who can reach this address "
                              "can open the cases and upload images[/yellow]")
        limits = ReadLimits(max_voxels=max_image_voxels, max_bytes=int(max_image_mb * 2**20))
        config = ServerConfig(data=data, ttl_seconds=session_ttl, max_sessions=max_sessions,
                              max_upload_mb=max_upload_mb,
                              read_limits=limits, max_pending=max_queued_changes)
        err_console.print(f"viewer at http://{host}:{port}/ (API schema at /docs)")
        uvicorn.run(create_app(pipeline, config), host=host, port=port, log_level="warning")
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
