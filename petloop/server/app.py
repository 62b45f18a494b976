"""The viewer's server: a REST API over viewer sessions, and the single-page viewer itself.

``create_app(pipeline, config)`` builds the FastAPI application; ``petloop serve`` runs it with
uvicorn. The API is described by its OpenAPI schema (``/openapi.json``, browsable at ``/docs``).

Binary payloads (volumes and masks) are gzip-compressed little-endian arrays with x (i) fastest,
then j, then k: CT as int16 (HU), PET as uint16 (SUV = value x ``X-Scale``) and masks as bits
(``numpy.packbits`` with little bit order), whole or, after a change, only the box that changed
(``X-Box``). The shape ``[ni, nj, nk]`` comes with the session. A session can be opened without
waiting for its first mask (``"wait": false``): the page draws the images meanwhile.

Safety:

* A case is named by the client but looked up among the cases found under ``--data``, so a
  name never becomes a path.
* Request bodies are capped as they stream in (uploads at ``max_upload_mb``, others at 64 KiB).
  An uploaded image is read by petloop's own reader: its header's declared size is checked
  against ``read_limits`` before a voxel is read or decompressed (413 when over), and only
  self-contained files are read (a MetaImage whose ``ElementDataFile`` names any other file is
  refused), so an upload never makes the server open another file. A PET thinner than
  ``MIN_AXIS`` voxels along any axis, or one whose spacing would make the models' resampled
  grid exceed the voxel limit, is refused (422) before any inference.
* Every malformed request is answered 4xx with a JSON body (never an echo of its non-JSON
  values such as NaN), and no message names a server path: paths under ``--data`` are given
  relative to it, temporary files never.
* Session ids are unguessable; sessions expire; at most ``max_sessions`` exist, counting those
  being opened (a slot is reserved before the slow set-up). At most ``max_pending`` changes of
  one session wait behind the running one; more are answered 429 with ``Retry-After``.
* Reads (session state, mask, report, exports, images) never wait for a prediction: changes
  wait for their turn in the event loop and predict in threads of their own limiter; reads run
  in the event loop or, for the packing of images and the NIfTI export, on another limiter.
* Memory: a deleted or expired session's arrays are freed and the free heap handed back to the
  operating system (:mod:`petloop.server.memory`); the loaded networks stay. Temporary upload
  files are removed after each upload and the upload folder on shutdown.
"""

from __future__ import annotations

import functools
import gzip
import logging
import shutil
import tempfile
import threading
import weakref
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import anyio
import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Query, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

from petloop.clicks.clicklist import ClickError, NoSuchClick
from petloop.inference.modelset import ModelSetError
from petloop.inference.pipeline import Pipeline
from petloop.inference.routing import NoRoute
from petloop.io.clicks import ClickFileError
from petloop.io.layouts import CaseFiles, LayoutError, find_cases
from petloop.io.volume import (
    DEFAULT_LIMITS,
    SUFFIXES,
    ReadLimits,
    Volume,
    VolumeError,
    VolumeTooLarge,
    read_volume,
    volume_stem,
)
from petloop.metrics.report import report_csv
from petloop.tracer.classifier import TracerError

from .files import download_name, nifti_bytes
from .inputs import check_grid, model_spacings, public_message
from .limits import BodyLimit
from .memory import release_memory
from .monailabel import add_monailabel_routes
from .schema import (
    CaseInfo,
    ClickIn,
    NewSession,
    Report,
    SessionState,
    StrokeIn,
    session_state,
    validation_errors,
)
from .sessions import (
    MAX_PENDING,
    QueueFull,
    Reservation,
    SessionNotFound,
    SessionStore,
    Snapshot,
    StoreFull,
    ViewerSession,
    add_click,
    add_stroke,
    pack_mask,
    pack_volume,
    remove_click,
    remove_stroke,
    reset,
    undo,
)

STATIC = resources.files("petloop.server") / "static"
VOLUME_SUFFIXES = SUFFIXES  # what an upload may be (self-contained formats)
log = logging.getLogger(__name__)
BAD_INPUT = (ClickError, ClickFileError, VolumeError, LayoutError, ModelSetError, NoRoute,
             TracerError)


@dataclass(frozen=True)
class ServerConfig:
    """How the server runs (``petloop serve``'s options).

    ``read_limits``: the largest image an upload may declare (default 2^28 voxels and 1 GiB of
    voxel data per image: a whole-body CT of 512 x 512 x 1024 as float32); it also bounds the
    PET grid once resampled to the models' spacing. ``max_pending``: changes of one session
    that may wait behind the running one. ``inference_threads``: worker threads for set-ups
    and changes (they share one lock on the models, so more only lets them queue there).
    """

    data: Path | None = None
    ttl_seconds: float = 3600.0
    max_sessions: int = 16
    max_upload_mb: float = 1024.0
    time_budget: float | None = None  # test-time augmentation budget per click, seconds
    read_limits: ReadLimits = DEFAULT_LIMITS
    max_pending: int = MAX_PENDING
    inference_threads: int = 2


SessionId = Annotated[str, PathParam(min_length=1, max_length=64,
                                     description="the id POST /api/sessions returned")]
GZIP = "application/gzip"
RESPONSES = {404: {"description": "no such session (or it expired)"}}
MALFORMED = {400: {"description": "the request body cannot be parsed"}}
CHANGE = {**RESPONSES, 429: {"description": "too many changes of this session are waiting; "
                                            "try again after Retry-After seconds"}}
OPENING = {**MALFORMED, 413: {"description": "a request or image larger than the limits"},
           503: {"description": "too many open sessions"}}


def create_app(pipeline: Pipeline, config: ServerConfig = ServerConfig()) -> FastAPI:
    store = SessionStore(pipeline, config.ttl_seconds, config.max_sessions,
                         max_pending=config.max_pending)
    cases_lock = threading.Lock()
    # worker threads by kind of work, so that none waits behind another (module docstring)
    inference = anyio.CapacityLimiter(config.inference_threads)
    packing = anyio.CapacityLimiter(2)
    reading = anyio.CapacityLimiter(4)
    housekeeping = anyio.CapacityLimiter(1)
    uploads: dict[str, Path] = {}
    model_set = getattr(pipeline, "model_set", None)
    spacings = model_spacings(model_set) if model_set is not None else []
    roots: dict = {}  # server folders that messages name relative to themselves, or not at all
    for folder, label in ((getattr(model_set, "root", None), "(model set)"), (config.data, "")):
        if folder is not None:
            roots[str(folder)] = roots[str(Path(folder).absolute())] = label

    def public(exc: BaseException) -> str:
        return public_message(str(exc), {**roots, **{p: "(upload)" for p in uploads.values()}})

    def upload_root() -> Path:
        if "root" not in uploads:
            root = Path(tempfile.mkdtemp(prefix="petloop-upload-"))
            uploads["root"] = root
            weakref.finalize(store, shutil.rmtree, root, True)  # at exit at the latest
        return uploads["root"]

    def remove_uploads() -> None:
        root = uploads.pop("root", None)
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)

    async def release() -> None:
        await anyio.to_thread.run_sync(release_memory, limiter=housekeeping)

    async def sweeper(interval: float) -> None:
        """Expire idle sessions even when no request comes, and give their memory back."""
        while True:
            await anyio.sleep(interval)
            try:
                store.sweep()
                if store.take_closed():
                    await release()
            except Exception:  # pragma: no cover - keep sweeping; the server goes on
                log.exception("sweeping expired sessions failed")

    running: dict = {}  # the lifespan's task group, for first masks made after the answer

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            async with anyio.create_task_group() as tg:
                running["tasks"] = tg
                tg.start_soon(sweeper, min(60.0, max(1.0, config.ttl_seconds / 4)))
                try:
                    yield
                finally:
                    running.clear()
                    tg.cancel_scope.cancel()
        finally:
            store.close_all()
            remove_uploads()

    app = FastAPI(
        title="petloop viewer API",
        version="1",
        description=__doc__,
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_bytes=int(config.max_upload_mb * 2**20),
                       small_bytes=64 * 1024,
                       large_paths=("/api/sessions/upload", "/session/"))
    app.state.store = store
    app.state.uploads = uploads  # {"root": the upload folder} once there was an upload

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, exc: RequestValidationError):
        return JSONResponse({"detail": validation_errors(exc)}, status_code=422)

    def cases() -> dict[str, CaseFiles]:
        if config.data is None:
            return {}
        with cases_lock:
            try:
                return {c.case_id: c for c in find_cases(config.data)}
            except LayoutError:
                return {}

    def session_or_404(session_id: str) -> ViewerSession:
        try:
            return store.get(session_id)
        except SessionNotFound:
            raise HTTPException(404, f"no session {session_id!r} (it may have expired)") \
                from None

    def snapshot(session: ViewerSession) -> Snapshot:
        if session.snapshot is None:  # pragma: no cover - create() publishes one
            raise HTTPException(409, "the session has no result yet")
        return session.snapshot

    async def change(session: ViewerSession, fn) -> SessionState:
        error, ran = None, True
        try:
            ticket = session.ticket()
        except QueueFull as exc:
            raise HTTPException(429, str(exc),
                                headers={"Retry-After": str(exc.retry_after)}) from None
        except SessionNotFound:
            raise HTTPException(404, f"no session {session.id!r}") from None
        try:
            snap = await session.apply_async(ticket, fn, config.time_budget, inference)
        except SessionNotFound:
            error, ran = (404, f"session {session.id!r} was deleted before this change ran"), False
        except NoSuchClick as exc:
            error = (404, public(exc))
        except BAD_INPUT as exc:
            error = (422, public(exc))
        if ran and session.closed:  # deleted while this change ran: its arrays are free now
            await release()
        if error is not None:
            raise HTTPException(*error)
        return session_state(session, snap)

    async def first_mask(session: ViewerSession) -> None:
        """The first prediction of a session opened without waiting for it."""
        try:
            await session.apply_async(session.ticket(), reset, config.time_budget, inference)
        except SessionNotFound:  # deleted meanwhile
            pass
        except BAD_INPUT as exc:
            session.error = public(exc)
        except Exception as exc:  # pragma: no cover - the server stays up; the page is told
            log.exception("the first prediction of session %s failed", session.id)
            session.error = f"the first prediction failed ({type(exc).__name__})"

    async def open_session(name: str, images: list[Volume], tracer: str,
                           slot: Reservation, wait: bool = True) -> SessionState:
        """Check the images ``[ct, pet]``, set the session up in the reserved slot, predict
        once (or, without ``wait``, answer now and predict after the answer). ``images`` is
        emptied: the session holds the only references then."""
        ct, pet = images
        images.clear()
        error = None
        later = not wait and "tasks" in running
        try:
            check_grid(pet, f"PET of {name}", config.read_limits, spacings)
            session = await anyio.to_thread.run_sync(
                functools.partial(store.create, name, ct, pet, tracer, config.time_budget,
                                  reservation=slot, predict=not later), limiter=inference)
        except BAD_INPUT as exc:
            error = (422, public(exc))
        if error is not None:  # the images go with this frame; give their memory back
            del ct, pet
            await release()
            raise HTTPException(*error)
        if later:
            running["tasks"].start_soon(first_mask, session)
            return session_state(session, None)
        return session_state(session, snapshot(session))

    def reserve() -> Reservation:
        try:
            return store.reserve()
        except StoreFull as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": "60"}) from None

    add_monailabel_routes(app, pipeline=pipeline, config=config, cases=cases, reading=reading,
                          inference=inference, public=public, bad_input=BAD_INPUT)

    # pages ---------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(str(STATIC / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    # API -----------------------------------------------------------------------------------
    @app.get("/api/health")
    async def health() -> dict:
        ms = pipeline.model_set
        return {"status": "ok", "model_set": ms.name, "models": sorted(ms.models),
                "sessions": len(store), "data": config.data is not None}

    @app.get("/api/cases", response_model=list[CaseInfo])
    def list_cases():
        return [CaseInfo(name=k, tracer=v.tracer) for k, v in cases().items()]

    @app.post("/api/sessions", response_model=SessionState, status_code=201,
              responses={**OPENING, 404: {"description": "no case of that name under --data"},
                         422: {"description": "the case cannot be read or is unfit"}})
    async def create_session(body: NewSession):
        files = (await anyio.to_thread.run_sync(cases, limiter=reading)).get(body.case)
        if files is None:
            raise HTTPException(404, f"no case {body.case!r} in the server's data folder")
        with reserve() as slot:
            error = None
            try:
                case = await anyio.to_thread.run_sync(
                    functools.partial(files.load, with_label=False,
                                      limits=config.read_limits), limiter=reading)
            except VolumeTooLarge as exc:
                error = (413, public(exc))
            except BAD_INPUT as exc:
                error = (422, public(exc))
            if error is not None:
                raise HTTPException(*error)
            tracer = body.tracer
            if tracer == "auto" and case.tracer in ("fdg", "psma") and \
                    pipeline.model_set.tracer_classifier is None:
                tracer = case.tracer
            images = [case.ct, case.pet]
            del case
            return await open_session(body.case, images, tracer, slot, body.wait)

    @app.post("/api/sessions/upload", response_model=SessionState, status_code=201,
              responses={**OPENING, 422: {"description": "an image cannot be read or is "
                                                         "unfit"}})
    async def upload_session(
        ct: Annotated[UploadFile, File(description="CT (.nii.gz, .nii or .mha, with its "
                                                   "voxels in the file: ElementDataFile = "
                                                   "LOCAL)")],
        pet: Annotated[UploadFile, File(description="PET in SUV (.nii.gz, .nii or .mha)")],
        tracer: Annotated[Literal["auto", "fdg", "psma"], Form()] = "auto",
        wait: Annotated[bool, Form(description="false: answer before the first mask")] = True,
    ):
        named = []
        for role, up in (("CT", ct), ("PET", pet)):
            filename = (up.filename or "")[:200]
            suffix = next((s for s in VOLUME_SUFFIXES if filename.lower().endswith(s)), None)
            if suffix is None:
                raise HTTPException(422, f"{role} upload {filename!r}: use a .nii.gz, .nii or "
                                    ".mha file")
            named.append((role, up, f"{role} upload {filename!r}", suffix))
        with reserve() as slot:
            vols: list[Volume] = []
            error = None
            tmp = Path(tempfile.mkdtemp(prefix="upload-", dir=upload_root()))
            try:
                for role, up, label, suffix in named:
                    path = tmp / f"{role.lower()}{suffix}"
                    await anyio.to_thread.run_sync(_copy, up.file, path, limiter=reading)
                    vols.append(await anyio.to_thread.run_sync(functools.partial(
                        read_volume, path, limits=config.read_limits, allow_data_file=False,
                        name=label), limiter=reading))
                    path.unlink()
            except VolumeTooLarge as exc:
                error = (413, public(exc))
            except VolumeError as exc:
                error = (422, public(exc))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            if error is not None:
                if vols:
                    vols.clear()
                    await release()
                raise HTTPException(*error)
            label = volume_stem(Path((pet.filename or "upload").replace("\\", "/")).name)
            return await open_session(f"upload:{label[:100]}", vols, tracer, slot, wait)

    @app.get("/api/sessions/{session_id}", response_model=SessionState, responses=RESPONSES)
    async def get_session(session_id: SessionId):
        session = session_or_404(session_id)
        return session_state(session, session.snapshot)

    @app.delete("/api/sessions/{session_id}", status_code=204, responses=RESPONSES)
    async def delete_session(session_id: SessionId):
        try:
            store.delete(session_id)
        except SessionNotFound:
            raise HTTPException(404, f"no session {session_id!r}") from None
        if store.take_closed():
            await release()
        return Response(status_code=204)

    @app.get("/api/sessions/{session_id}/volume/{which}", response_class=Response,
             responses={**RESPONSES, 200: {"content": {GZIP: {}}, "description":
                        "gzip-compressed voxels, x fastest: CT int16 (HU), PET uint16 (SUV = "
                        "value x X-Scale)"}})
    async def get_volume(session_id: SessionId, which: Literal["ct", "pet"]):
        session = session_or_404(session_id)
        packed = session.payloads.get(which)
        if packed is None:  # packed once per session, in a thread, one packing per image
            lock = session.payload_locks.setdefault(which, anyio.Lock())
            async with lock:
                packed = session.payloads.get(which)
                if packed is None:
                    packed = await anyio.to_thread.run_sync(_pack_image, session.inner, which,
                                                            limiter=packing)
                    if not session.closed:
                        session.payloads[which] = packed
        data, scale = packed
        return Response(data, media_type=GZIP,
                        headers={"X-Shape": ",".join(map(str, session.pet.shape)),
                                 "X-Scale": repr(scale),
                                 "Cache-Control": "private, max-age=3600"})

    @app.post("/api/sessions/{session_id}/clicks", response_model=SessionState,
              responses={**CHANGE, **MALFORMED,
                         422: {"description": "the point lies outside the image"}})
    async def post_click(session_id: SessionId, click: ClickIn):
        session = session_or_404(session_id)
        return await change(session, add_click(click.kind, click.point))

    @app.delete("/api/sessions/{session_id}/clicks/{index}", response_model=SessionState,
                responses={**CHANGE, 404: {"description": "no session, or no click with that "
                                                      "index"}})
    async def delete_click(session_id: SessionId,
                           index: Annotated[int, PathParam(ge=0, le=100_000)]):
        session = session_or_404(session_id)
        return await change(session, remove_click(index))

    @app.post("/api/sessions/{session_id}/strokes", response_model=SessionState,
              responses={**CHANGE, **MALFORMED,
                         422: {"description": "a voxel lies outside the image, or the stroke "
                                              "or the session holds too many voxels"}})
    async def post_stroke(session_id: SessionId, stroke: StrokeIn):
        """A scribble: the voxels of the polyline through ``points`` become clicks of one
        kind, added (and undone) in one change."""
        session = session_or_404(session_id)
        try:
            fn = add_stroke(stroke.kind, stroke.points)
        except ClickError as exc:
            raise HTTPException(422, public(exc)) from None
        return await change(session, fn)

    @app.delete("/api/sessions/{session_id}/strokes/{number}", response_model=SessionState,
                responses={**CHANGE, 404: {"description": "no session, or no stroke with that "
                                                      "number"}})
    async def delete_stroke(session_id: SessionId,
                            number: Annotated[int, PathParam(ge=1, le=100_000)]):
        session = session_or_404(session_id)
        return await change(session, remove_stroke(number))

    @app.post("/api/sessions/{session_id}/undo", response_model=SessionState,
              responses=CHANGE)
    async def post_undo(session_id: SessionId):
        return await change(session_or_404(session_id), undo)

    @app.post("/api/sessions/{session_id}/reset", response_model=SessionState,
              responses=CHANGE)
    async def post_reset(session_id: SessionId):
        return await change(session_or_404(session_id), reset)

    @app.get("/api/sessions/{session_id}/mask", response_class=Response,
             responses={**RESPONSES, 200: {"content": {GZIP: {}}, "description":
                        "gzip-packed mask bits (little bit order), x fastest"}})
    async def get_mask(session_id: SessionId,
                       since: Annotated[int | None, Query(ge=-1, le=2**31, description=(
                           "the version the client holds: only the box changed since then "
                           "is sent (X-Box), the whole mask when that is too long ago"))] = None):
        session = session_or_404(session_id)
        snap = snapshot(session)
        shape = session.pet.shape
        whole = tuple((0, n) for n in shape)
        box = whole if since is None else session.changed_since(since, snap)
        if box is None:
            data = gzip.compress(b"")
        elif box == whole:
            data = snap.packed_mask
        else:
            data = await anyio.to_thread.run_sync(pack_mask, snap.mask, box, limiter=packing)
        return Response(data, media_type=GZIP, headers={
            "X-Mask-Version": str(snap.version), "X-Shape": ",".join(map(str, shape)),
            "X-Box": "none" if box is None else ",".join(str(v) for b in box for v in b)})

    @app.get("/api/sessions/{session_id}/mask.nii.gz", response_class=Response,
             responses={**RESPONSES, 200: {"content": {GZIP: {}},
                                           "description": "the mask as NIfTI"}})
    async def export_mask(session_id: SessionId):
        session = session_or_404(session_id)
        snap = snapshot(session)
        data = await anyio.to_thread.run_sync(nifti_bytes, snap.mask, limiter=packing)
        name = download_name(session.case)
        return Response(data, media_type=GZIP, headers={
            "Content-Disposition": f'attachment; filename="{name}_mask.nii.gz"'})

    @app.get("/api/sessions/{session_id}/report", response_model=Report, responses=RESPONSES)
    async def get_report(session_id: SessionId):
        return snapshot(session_or_404(session_id)).report.to_json()

    @app.get("/api/sessions/{session_id}/report.csv", response_class=PlainTextResponse,
             responses={**RESPONSES, 200: {"content": {"text/csv": {}}}})
    async def get_report_csv(session_id: SessionId):
        session = session_or_404(session_id)
        name = download_name(session.case)
        return PlainTextResponse(report_csv(snapshot(session).report), media_type="text/csv",
                                 headers={"Content-Disposition":
                                          f'attachment; filename="{name}_report.csv"'})

    return app


def _copy(source, path: Path) -> None:
    source.seek(0)
    with path.open("wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)


def _pack_image(inner, which: str) -> tuple[bytes, float]:
    """The voxels the page draws, and the factor from stored values to HU or SUV: CT as int16,
    PET as uint16 over 0 to its maximum (steps of max / 65535 SUV; below 0 is drawn as 0)."""
    if which == "ct":
        ct = inner.ct
        return pack_volume(ct.with_array(np.clip(ct.array, -32768, 32767).round()), "<i2"), 1.0
    pet = inner.pet
    top = float(np.max(pet.array))
    scale = top / 65535 if top > 0 else 1.0
    values = np.clip(np.rint(np.asarray(pet.array, np.float64) / scale), 0, 65535)
    return pack_volume(pet.with_array(values), "<u2"), scale


__all__ = ["ServerConfig", "create_app"]
