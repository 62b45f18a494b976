"""The viewer API's request and response models, and a session's state as the API shows it."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from petloop.metrics.report import Lesion

from .sessions import Snapshot, ViewerSession


class CaseInfo(BaseModel):
    name: str
    tracer: str | None = Field(None, description="tracer from the case's metadata or name")


class NewSession(BaseModel):
    case: str = Field(..., max_length=1000, description="a case name from GET /api/cases")
    tracer: Literal["auto", "fdg", "psma"] = "auto"
    wait: bool = Field(True, description="false: answer once the case is set up, before the "
                       "first mask (version -1 until it is there; poll the session)")


Index = Annotated[int, Field(ge=0, le=1_000_000, strict=True)]
MAX_STROKE_VERTICES = 2048


class ClickIn(BaseModel):
    kind: Literal["tumor", "background"]
    point: Annotated[list[Index], Field(min_length=3, max_length=3,
                                        description="voxel index [i, j, k]")]


class StrokeIn(BaseModel):
    kind: Literal["tumor", "background"]
    points: Annotated[list[Annotated[list[Index], Field(min_length=3, max_length=3)]],
                      Field(min_length=1, max_length=MAX_STROKE_VERTICES,
                            description="the stroke's vertices [i, j, k] in drawing order; its "
                                        "voxels are the digital lines between them")]


class ClickOut(BaseModel):
    index: int
    kind: str
    point: list[int]
    stroke: int = Field(0, description="the stroke this voxel belongs to (from 1); 0 for a "
                        "click")


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
    model: str | None = Field(..., description="the model of the last mask (null before the "
                              "first)")
    version: int = Field(..., description="increases with every change of the mask; -1 while "
                         "the first mask is being made")
    clicks: list[ClickOut]
    seconds: dict[str, float]
    tta: str
    report: ReportSummary | None
    error: str | None = Field(None, description="why the first mask could not be made")


class Report(ReportSummary):
    lesions: list[Lesion]


def session_state(session: ViewerSession, snap: Snapshot | None) -> SessionState:
    pet, tracer = session.pet, session.inner.tracer
    geometry = dict(id=session.id, case=session.case, shape=list(pet.shape),
                    spacing=list(pet.spacing), origin=list(pet.origin),
                    direction=list(pet.direction), tracer=tracer.tracer,
                    tracer_probability=tracer.probability, error=session.error)
    if snap is None:
        return SessionState(**geometry, model=None, version=-1, clicks=[], seconds={}, tta="",
                            report=None)
    r = snap.report
    return SessionState(
        **geometry, model=snap.model, version=snap.version,
        clicks=[ClickOut(index=n, kind=c.kind, point=list(c.point), stroke=c.stroke)
                for n, c in enumerate(snap.clicks)],
        seconds={k: round(float(v), 4) for k, v in snap.seconds.items()}, tta=snap.tta,
        report=ReportSummary(lesion_count=r.count, tmtv_ml=r.tmtv_ml, total_tlg=r.total_tlg,
                             suv_max=r.suv_max))


def validation_errors(exc: RequestValidationError) -> list[dict]:
    """pydantic's errors with what is safe to send back: where, what, and the error's type
    (never the input, which may be NaN or a large value, nor the context)."""
    out = []
    for err in exc.errors():
        loc = [p if isinstance(p, (int, str)) and not isinstance(p, bool) else str(p)
               for p in err.get("loc", ())]
        out.append({"loc": loc, "msg": str(err.get("msg", "invalid")),
                    "type": str(err.get("type", "value_error"))})
    return out

