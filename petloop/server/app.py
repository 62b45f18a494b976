"""The viewer's server: a REST API over viewer sessions, and the single-page viewer itself.

``create_app(pipeline, config)`` builds the FastAPI application; ``petloop serve`` runs it with
uvicorn. The API is described by its OpenAPI schema (``/openapi.json``, browsable at ``/docs``).

Binary payloads (volumes and masks) are gzip-compressed little-endian arrays with x (i) fastest,
then j, then k: CT as int16, PET (SUV) as float32 and masks as bits (``numpy.packbits`` with
little bit order). The shape ``[ni, nj, nk]`` comes with the session.

Safety: a case is named by the client but looked up among the cases found under ``--data``, so a
name never becomes a path; uploads are capped in size; session ids are unguessable and sessions
expire; inference runs in worker threads, so reads of other sessions go on meanwhile.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import anyio
from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from petloop.inference.modelset import ModelSetError
from petloop.inference.pipeline import Pipeline
from petloop.io.clicks import ClickFileError
from petloop.io.layouts import CaseFiles, LayoutError, find_cases
from petloop.io.volume import VolumeError, read_volume, write_volume
from petloop.metrics.report import Lesion, report_csv
from petloop.tracer.classifier import TracerError

from .limits import BodyLimit
from .sessions import (
    SessionError,
    SessionNotFound,
    SessionStore,
    Snapshot,
    StoreFull,
    ViewerSession,
    add_click,
    pack_volume,
    remove_click,
    reset,
    undo,
)

STATIC = resources.files("petloop.server") / "static"
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha")
BAD_INPUT = (SessionError, ClickFileError, VolumeError, LayoutError, ModelSetError, TracerError)


@dataclass(frozen=True)
class ServerConfig:
    data: Path | None = None
    ttl_seconds: float = 3600.0
    max_sessions: int = 16
    max_upload_mb: float = 1024.0
    time_budget: float | None = None  # test-time augmentation budget per click, seconds


# API models ------------------------------------------------------------------------------------
class CaseInfo(BaseModel):
    name: str
    tracer: str | None = Field(None, description="tracer from the case's metadata or name")


class NewSession(BaseModel):
    case: str = Field(..., description="a case name from GET /api/cases")
    tracer: Literal["auto", "fdg", "psma"] = "auto"


class ClickIn(BaseModel):
    kind: Literal["tumor", "background"]
    point: Annotated[list[Annotated[int, Field(ge=0, le=1_000_000)]],
                     Field(min_length=3, max_length=3, description="voxel index [i, j, k]")]


class ClickOut(BaseModel):
    index: int
    kind: str
    point: list[int]


class ReportSummary(BaseModel):
    lesion_count: int
    tmtv_ml: float
    total_tlg: float
    suv_max: float


class SessionState(BaseModel):
    id: str
    case: str
    shape: list[int] = Field(..., description="[ni, nj, nk] of the PET grid")
    spacing: list[float]
    origin: list[float]
    direction: list[float]
    tracer: str
    tracer_probability: float
    model: str
    version: int = Field(..., description="increases with every change of the mask")
    clicks: list[ClickOut]
    seconds: dict[str, float]
    tta: str
    report: ReportSummary


class Report(ReportSummary):
    lesions: list[Lesion]


def _state(session: ViewerSession, snap: Snapshot) -> SessionState:
    pet, tracer = session.pet, session.inner.tracer
    r = snap.report
    return SessionState(
        id=session.id, case=session.case, shape=list(pet.shape), spacing=list(pet.spacing),
        origin=list(pet.origin), direction=list(pet.direction), tracer=tracer.tracer,
        tracer_probability=tracer.probability, model=snap.model, version=snap.version,
        clicks=[ClickOut(index=n, kind=c.kind, point=list(c.point))
                for n, c in enumerate(snap.clicks)],
        seconds={k: round(float(v), 4) for k, v in snap.seconds.items()}, tta=snap.tta,
        report=ReportSummary(lesion_count=r.count, tmtv_ml=r.tmtv_ml, total_tlg=r.total_tlg,
                             suv_max=r.suv_max))


SessionId = Annotated[str, PathParam(min_length=1, max_length=64,
                                     description="the id POST /api/sessions returned")]
GZIP = "application/gzip"
RESPONSES = {404: {"description": "no such session (or it expired)"}}
MALFORMED = {400: {"description": "the request body cannot be parsed"}}


def create_app(pipeline: Pipeline, config: ServerConfig = ServerConfig()) -> FastAPI:
    store = SessionStore(pipeline, config.ttl_seconds, config.max_sessions)
    cases_lock = threading.Lock()
    app = FastAPI(
        title="petloop viewer API",
        version="1",
        description=__doc__,
    )
    app.add_middleware(BodyLimit, max_bytes=int(config.max_upload_mb * 2**20),
                       small_bytes=64 * 1024, large_paths=("/api/sessions/upload",))
    app.state.store = store

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
        ticket = session.ticket()
        try:
            snap = await anyio.to_thread.run_sync(session.apply, ticket, fn, config.time_budget)
        except BAD_INPUT as exc:
            raise HTTPException(422, str(exc)) from None
        return _state(session, snap)

    async def open_session(name: str, ct, pet, tracer: str) -> SessionState:
        try:
            session = await anyio.to_thread.run_sync(
                lambda: store.create(name, ct, pet, tracer, config.time_budget))
        except StoreFull as exc:
            raise HTTPException(503, str(exc)) from None
        except BAD_INPUT as exc:
            raise HTTPException(422, str(exc)) from None
        return _state(session, snapshot(session))

    # pages ---------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(str(STATIC / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    # API -----------------------------------------------------------------------------------
    @app.get("/api/health")
    def health() -> dict:
        ms = pipeline.model_set
        return {"status": "ok", "model_set": ms.name, "models": sorted(ms.models),
                "sessions": len(store), "data": config.data is not None}

    @app.get("/api/cases", response_model=list[CaseInfo])
    def list_cases():
        return [CaseInfo(name=k, tracer=v.tracer) for k, v in cases().items()]

    @app.post("/api/sessions", response_model=SessionState, status_code=201,
              responses={**MALFORMED, 404: {"description": "no such case under --data"},
                         422: {"description": "the case cannot be read"},
                         503: {"description": "too many open sessions"}})
    async def create_session(body: NewSession):
        files = cases().get(body.case)
        if files is None:
            raise HTTPException(404, f"no case {body.case!r} in the server's data folder")
        try:
            case = await anyio.to_thread.run_sync(lambda: files.load(with_label=False))
        except BAD_INPUT as exc:
            raise HTTPException(422, str(exc)) from None
        tracer = body.tracer
        if tracer == "auto" and case.tracer in ("fdg", "psma") and \
                pipeline.model_set.tracer_classifier is None:
            tracer = case.tracer
        return await open_session(body.case, case.ct, case.pet, tracer)

    @app.post("/api/sessions/upload", response_model=SessionState, status_code=201,
              responses={**MALFORMED,
                         413: {"description": "upload larger than the server's limit"},
                         422: {"description": "an image cannot be read"},
                         503: {"description": "too many open sessions"}})
    async def upload_session(
        ct: Annotated[UploadFile, File(description="CT (.nii.gz, .nii or .mha)")],
        pet: Annotated[UploadFile, File(description="PET in SUV (.nii.gz, .nii or .mha)")],
        tracer: Annotated[Literal["auto", "fdg", "psma"], Form()] = "auto",
    ):
        tmp = Path(tempfile.mkdtemp(prefix="petloop-upload-"))
        try:
            vols = []
            for role, up in (("CT", ct), ("PET", pet)):
                name = up.filename or ""
                suffix = next((s for s in VOLUME_SUFFIXES if name.lower().endswith(s)), None)
                if suffix is None:
                    raise HTTPException(422, f"{role} upload {name!r}: use a .nii.gz, .nii or "
                                        ".mha file")
                path = tmp / f"{role.lower()}{suffix}"
                with path.open("wb") as out:
                    await anyio.to_thread.run_sync(shutil.copyfileobj, up.file, out)
                try:
                    vol = await anyio.to_thread.run_sync(read_volume, path)
                except VolumeError as exc:
                    raise HTTPException(422, f"{role} upload {name!r}: "
                                        f"{str(exc).split(': ', 1)[-1]}") from None
                vols.append(vol)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        label = Path(pet.filename or "upload").name
        for s in VOLUME_SUFFIXES:
            label = label.removesuffix(s)
        return await open_session(f"upload:{label}", vols[0], vols[1], tracer)

    @app.get("/api/sessions/{session_id}", response_model=SessionState, responses=RESPONSES)
    def get_session(session_id: SessionId):
        session = session_or_404(session_id)
        return _state(session, snapshot(session))

    @app.delete("/api/sessions/{session_id}", status_code=204, responses=RESPONSES)
    def delete_session(session_id: SessionId):
        try:
            store.delete(session_id)
        except SessionNotFound:
            raise HTTPException(404, f"no session {session_id!r}") from None
        return Response(status_code=204)

    @app.get("/api/sessions/{session_id}/volume/{which}", response_class=Response,
             responses={**RESPONSES, 200: {"content": {GZIP: {}}, "description":
                        "gzip-compressed voxels: CT int16, PET float32, x fastest"}})
    def get_volume(session_id: SessionId, which: Literal["ct", "pet"]):
        session = session_or_404(session_id)
        if which not in session.payloads:
            vol, dtype = (session.ct, "<i2") if which == "ct" else (session.pet, "<f4")
            if which == "ct":
                vol = vol.with_array(vol.array.clip(-32768, 32767).round())
            session.payloads[which] = pack_volume(vol, dtype)
        return Response(session.payloads[which], media_type=GZIP,
                        headers={"X-Shape": ",".join(map(str, session.pet.shape)),
                                 "Cache-Control": "private, max-age=3600"})

    @app.post("/api/sessions/{session_id}/clicks", response_model=SessionState,
              responses={**RESPONSES, **MALFORMED,
                         422: {"description": "the point lies outside the image"}})
    async def post_click(session_id: SessionId, click: ClickIn):
        session = session_or_404(session_id)
        return await change(session, add_click(click.kind, click.point))

    @app.delete("/api/sessions/{session_id}/clicks/{index}", response_model=SessionState,
                responses={**RESPONSES, 422: {"description": "no click with that index"}})
    async def delete_click(session_id: SessionId,
                           index: Annotated[int, PathParam(ge=0, le=100_000)]):
        session = session_or_404(session_id)
        return await change(session, remove_click(index))

    @app.post("/api/sessions/{session_id}/undo", response_model=SessionState,
              responses=RESPONSES)
    async def post_undo(session_id: SessionId):
        return await change(session_or_404(session_id), undo)

    @app.post("/api/sessions/{session_id}/reset", response_model=SessionState,
              responses=RESPONSES)
    async def post_reset(session_id: SessionId):
        return await change(session_or_404(session_id), reset)

    @app.get("/api/sessions/{session_id}/mask", response_class=Response,
             responses={**RESPONSES, 200: {"content": {GZIP: {}}, "description":
                        "gzip-packed mask bits (little bit order), x fastest"}})
    def get_mask(session_id: SessionId):
        session = session_or_404(session_id)
        snap = snapshot(session)
        return Response(snap.packed_mask, media_type=GZIP,
                        headers={"X-Mask-Version": str(snap.version),
                                 "X-Shape": ",".join(map(str, session.pet.shape))})

    @app.get("/api/sessions/{session_id}/mask.nii.gz", response_class=Response,
             responses={**RESPONSES, 200: {"content": {GZIP: {}},
                                           "description": "the mask as NIfTI"}})
    def export_mask(session_id: SessionId):
        session = session_or_404(session_id)
        snap = snapshot(session)
        with tempfile.TemporaryDirectory(prefix="petloop-export-") as tmp:
            path = write_volume(snap.mask, Path(tmp) / "mask.nii.gz")
            data = path.read_bytes()
        name = _download_name(session.case)
        return Response(data, media_type=GZIP, headers={
            "Content-Disposition": f'attachment; filename="{name}_mask.nii.gz"'})

    @app.get("/api/sessions/{session_id}/report", response_model=Report, responses=RESPONSES)
    def get_report(session_id: SessionId):
        return snapshot(session_or_404(session_id)).report.to_json()

    @app.get("/api/sessions/{session_id}/report.csv", response_class=PlainTextResponse,
             responses={**RESPONSES, 200: {"content": {"text/csv": {}}}})
    def get_report_csv(session_id: SessionId):
        session = session_or_404(session_id)
        name = _download_name(session.case)
        return PlainTextResponse(report_csv(snapshot(session).report), media_type="text/csv",
                                 headers={"Content-Disposition":
                                          f'attachment; filename="{name}_report.csv"'})

    return app


def _download_name(case: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in case)
    return safe.strip("._") or "case"
