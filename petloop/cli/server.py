"""``petloop serve``: the browser viewer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from petloop.cli import app, err_console, fail
from petloop.cli.inference import (
    DEFAULT_MODELS,
    Mirrors,
    Models,
    Precision,
    Window,
    _errors,
    _pipeline,
)

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@app.command()
def serve(
    models: Models = DEFAULT_MODELS,
    data: Annotated[Path | None, typer.Option(
        help="Folder of cases to offer (autopet, nnunet or gc layout).")] = None,
    phantoms: Annotated[int, typer.Option(
        min=0, help="Without --data: generate this many default-size phantoms (both tracers, "
        "seed 4242) in a temporary folder and offer them.")] = 0,
    host: Annotated[str, typer.Option(help="Address to bind; loopback unless told "
                                      "otherwise.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    precision: Precision = "auto",
    time_budget: Annotated[float | None, typer.Option(
        help="Seconds per click for test-time mirroring (0 or none: no mirroring).")] = None,
    window: Window = None,
    mirrors: Mirrors = None,
    max_upload_mb: Annotated[float, typer.Option(min=1, help="Largest upload (CT and PET "
                                                 "together).")] = 1024.0,
    session_ttl: Annotated[float, typer.Option(min=10, help="Seconds a session lives without "
                                               "a request.")] = 3600.0,
    max_sessions: Annotated[int, typer.Option(min=1)] = 16,
) -> None:
    """Serve the viewer: open a case (or upload CT and PET), click, and watch the mask update."""
    import tempfile

    import uvicorn

    from petloop.io.layouts import LayoutError, find_cases
    from petloop.server.app import ServerConfig, create_app

    scratch = None
    if data is None and phantoms:
        from petloop.phantom import PhantomConfig, write_phantoms

        scratch = tempfile.TemporaryDirectory(prefix="petloop-viewer-")
        data = Path(scratch.name) / "phantoms"
        write_phantoms(PhantomConfig(seed=4242, tracer="mixed", negative_fraction=0.0), data,
                       phantoms)
    try:
        pipeline = _pipeline(models, device, precision, window, mirrors)
        if data is not None:
            n = len(find_cases(data))
            err_console.print(f"{n} cases in {data}")
    except (*_errors(), LayoutError) as exc:
        fail(str(exc))
    if host not in LOOPBACK:
        err_console.print(f"[yellow]serving on {host}: anyone who can reach this address can "
                          "open the cases and upload images[/yellow]")
    config = ServerConfig(data=data, ttl_seconds=session_ttl, max_sessions=max_sessions,
                          max_upload_mb=max_upload_mb, time_budget=time_budget)
    err_console.print(f"viewer at http://{host}:{port}/ (API schema at /docs)")
    try:
        uvicorn.run(create_app(pipeline, config), host=host, port=port, log_level="warning")
    finally:
        if scratch is not None:
            scratch.cleanup()
