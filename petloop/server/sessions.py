"""Viewer sessions: one case each, clicks applied in arrival order, reads never wait.

A :class:`ViewerSession` wraps the inference :class:`~petloop.inference.pipeline.Session` of one
case. Every change (add or remove a click, undo, reset) takes a ticket when it arrives and is
applied when its ticket comes up, so concurrent clicks on one session are applied in the order
they arrived. The result of each change is published as an immutable :class:`Snapshot`; reads
return the latest snapshot and never wait for a running inference. Inference itself runs under
one lock per pipeline (the models are shared between sessions).

A :class:`SessionStore` hands out unguessable ids and forgets sessions idle for longer than
``ttl_seconds``; it holds at most ``max_sessions``.
"""

from __future__ import annotations

import gzip
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from petloop.inference.pipeline import Pipeline, Result, Session
from petloop.io.clicks import Clicks
from petloop.io.volume import Volume
from petloop.metrics.report import LesionReport, lesion_report

KINDS = ("tumor", "background")


class SessionError(ValueError):
    """A request a session cannot carry out (the message says why)."""


class SessionNotFound(KeyError):
    pass


class StoreFull(RuntimeError):
    pass


def pack_mask(mask: Volume) -> bytes:
    """The mask as gzip-packed bits, x (i) fastest, then j, then k (little bit order)."""
    bits = np.packbits(np.asarray(mask.itk_array() != 0).ravel(), bitorder="little")
    return gzip.compress(bits.tobytes(), compresslevel=6)


def unpack_mask(data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    """Inverse of :func:`pack_mask`, to an (i, j, k) boolean array."""
    n = int(np.prod(shape))
    bits = np.unpackbits(np.frombuffer(gzip.decompress(data), np.uint8), count=n,
                         bitorder="little")
    return bits.reshape(shape[::-1]).transpose(2, 1, 0).astype(bool)


def pack_volume(volume: Volume, dtype) -> bytes:
    """A volume's voxels gzip-compressed, little-endian ``dtype``, x (i) fastest."""
    data = np.ascontiguousarray(volume.itk_array(), dtype=np.dtype(dtype).newbyteorder("<"))
    return gzip.compress(data.tobytes(), compresslevel=1)


@dataclass(frozen=True)
class Click:
    kind: str
    point: tuple[int, int, int]


@dataclass(frozen=True)
class Snapshot:
    """What readers see: the state after the last applied change."""

    version: int
    clicks: tuple[Click, ...]
    mask: Volume
    packed_mask: bytes
    report: LesionReport
    model: str
    seconds: dict
    tta: str


@dataclass
class ViewerSession:
    id: str
    case: str
    inner: Session
    infer_lock: threading.Lock
    snapshot: Snapshot | None = None
    last_access: float = 0.0
    _next_ticket: int = 0
    _serving: int = 0
    _turn: threading.Condition = field(default_factory=threading.Condition)
    payloads: dict[str, bytes] = field(default_factory=dict)  # packed images, made once

    @property
    def pet(self) -> Volume:
        return self.inner.pet

    @property
    def ct(self) -> Volume:
        return self.inner.ct

    def ticket(self) -> int:
        """Take a place in the queue (call this when the request arrives)."""
        t = self._next_ticket
        self._next_ticket += 1
        return t

    def apply(self, ticket: int, change: Callable[[list[Click]], list[Click]],
              time_budget: float | None = None) -> Snapshot:
        """Wait for ``ticket``'s turn, apply ``change`` to the click list, predict, publish.

        A change that fails (bad click) leaves the session as it was and passes the turn on.
        """
        with self._turn:
            self._turn.wait_for(lambda: self._serving == ticket)
        try:
            current = list(self.snapshot.clicks) if self.snapshot is not None else []
            return self._predict(change(current), time_budget)
        finally:
            with self._turn:
                self._serving += 1
                self._turn.notify_all()

    def _predict(self, clicks: list[Click], time_budget: float | None) -> Snapshot:
        new = Clicks.from_points([c.point for c in clicks if c.kind == "tumor"],
                                 [c.point for c in clicks if c.kind == "background"])
        new.check_inside(self.pet.shape, "click")
        with self.infer_lock:
            self.inner.clicks = new
            result: Result = self.inner.run(time_budget)
        report = lesion_report(self.pet, result.mask.array)
        version = 0 if self.snapshot is None else self.snapshot.version + 1
        self.snapshot = Snapshot(version, tuple(clicks), result.mask, pack_mask(result.mask),
                                 report, result.model, dict(result.seconds),
                                 result.tta.describe())
        return self.snapshot


def add_click(kind: str, point) -> Callable[[list[Click]], list[Click]]:
    if kind not in KINDS:
        raise SessionError(f"a click is 'tumor' or 'background', got {kind!r}")
    pt = tuple(int(v) for v in point)
    if len(pt) != 3:
        raise SessionError(f"a click point needs 3 voxel indices [i, j, k], got {list(point)}")
    return lambda clicks: [*clicks, Click(kind, pt)]


def remove_click(index: int) -> Callable[[list[Click]], list[Click]]:
    def change(clicks: list[Click]) -> list[Click]:
        if not 0 <= index < len(clicks):
            raise SessionError(f"no click {index}: the session has {len(clicks)} clicks "
                               "(numbered from 0 in the order they were added)")
        return clicks[:index] + clicks[index + 1:]
    return change


def undo(clicks: list[Click]) -> list[Click]:
    return clicks[:-1]


def reset(clicks: list[Click]) -> list[Click]:
    return []


class SessionStore:
    """Sessions by unguessable id, forgotten after ``ttl_seconds`` without a request."""

    def __init__(self, pipeline: Pipeline, ttl_seconds: float = 3600.0, max_sessions: int = 16,
                 clock: Callable[[], float] = time.monotonic):
        self.pipeline = pipeline
        self.ttl = ttl_seconds
        self.max_sessions = max_sessions
        self.clock = clock
        self.infer_lock = threading.Lock()
        self._sessions: dict[str, ViewerSession] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def sweep(self) -> list[str]:
        now = self.clock()
        with self._lock:
            old = [k for k, s in self._sessions.items() if now - s.last_access > self.ttl]
            for k in old:
                del self._sessions[k]
        return old

    def create(self, case: str, ct: Volume, pet: Volume, tracer: str | None = "auto",
               time_budget: float | None = None) -> ViewerSession:
        """Set the case up, predict with no clicks, and register the session."""
        self.sweep()
        if len(self._sessions) >= self.max_sessions:
            raise StoreFull(f"{self.max_sessions} sessions are open; delete one or wait until "
                            f"one expires ({self.ttl:g} s without a request)")
        inner = Session(self.pipeline)
        with self.infer_lock:
            inner.set_case(ct, pet, tracer, ct_name=f"CT of {case}", pet_name=f"PET of {case}")
        session = ViewerSession(secrets.token_urlsafe(24), case, inner, self.infer_lock,
                                last_access=self.clock())
        session.apply(session.ticket(), reset, time_budget)
        with self._lock:
            self._sessions[session.id] = session
        return session

    def get(self, session_id: str) -> ViewerSession:
        self.sweep()
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            raise SessionNotFound(session_id)
        session.last_access = self.clock()
        return session

    def delete(self, session_id: str) -> None:
        with self._lock:
            if self._sessions.pop(session_id, None) is None:
                raise SessionNotFound(session_id)
