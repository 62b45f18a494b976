"""Viewer sessions: one case each, clicks applied in arrival order, reads never wait.

A :class:`ViewerSession` wraps the inference :class:`~petloop.inference.pipeline.Session` of one
case. Every change (add or remove a click, undo, reset) takes a ticket when it arrives and is
applied when its ticket comes up, so concurrent clicks on one session are applied in the order
they arrived. At most ``max_pending`` changes wait behind the running one; a further change is
refused (:class:`QueueFull`) until the queue drains, so a flood of clicks cannot pile up memory
or threads. The result of each change is published as an immutable :class:`Snapshot`; reads
return the latest snapshot and never wait for a running inference. Inference itself runs under
one lock per pipeline (the models are shared between sessions).

Changes wait for their turn either in a thread (:meth:`ViewerSession.apply`) or in the event
loop (:meth:`ViewerSession.apply_async`, the server's way: waiting costs no thread, and only the
prediction runs in one, on the caller's limiter). One session is driven one way at a time.

A :class:`SessionStore` hands out unguessable ids and forgets sessions idle for longer than
``ttl_seconds``; it holds at most ``max_sessions``, counting the ones being set up (a slot is
reserved under the store's lock before the slow set-up and given back if it fails). A deleted or
expired session is closed: its queued changes are dropped (:class:`SessionNotFound`) and its
arrays are freed once the last request using it has finished.
"""

from __future__ import annotations

import gzip
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import numpy as np

from petloop.clicks.clicklist import MAX_STROKE_VOXELS, Click, ClickError, ClickList
from petloop.clicks.scribbles import stroke_voxels
from petloop.inference.pipeline import Pipeline, Result, Session
from petloop.io.volume import Volume
from petloop.metrics.report import LesionReport, lesion_report
from petloop.nnunet.resample import union_box

Change = Callable[[ClickList], ClickList]
Box = tuple[tuple[int, int], ...]
DELTAS = 32  # versions whose changed box a session remembers (masks sent as changed regions)
MAX_PENDING = 8  # changes of one session waiting behind the running one


class SessionNotFound(KeyError):
    pass


class StoreFull(RuntimeError):
    pass


class QueueFull(RuntimeError):
    """Too many changes of one session are waiting; ``retry_after`` is a guess in seconds."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


def pack_mask(mask: Volume, box: Box | None = None) -> bytes:
    """The mask (or its ``box``, ``((i0, i1), (j0, j1), (k0, k1))``) as gzip-packed bits,
    x (i) fastest, then j, then k (little bit order)."""
    if box is not None:
        mask = Volume(mask.array[tuple(slice(a, b) for a, b in box)], mask.spacing)
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
    changed: Box | None = None  # the (i, j, k) box of the mask that differs from the last version


@dataclass(eq=False)
class ViewerSession:
    id: str
    case: str
    inner: Session
    infer_lock: threading.Lock
    snapshot: Snapshot | None = None
    last_access: float = 0.0
    max_pending: int = MAX_PENDING
    closed: bool = False
    _next_ticket: int = 0
    _serving: int = 0
    _abandoned: set = field(default_factory=set)  # tickets whose request went away
    _turn: threading.Condition = field(default_factory=threading.Condition)
    _turn_event: anyio.Event | None = None  # wakes changes waiting in the event loop
    payloads: dict[str, tuple[bytes, float]] = field(default_factory=dict)  # images, packed once
    payload_locks: dict = field(default_factory=dict)  # one packing per image at a time
    deltas: dict[int, Box | None] = field(default_factory=dict)  # version: box changed then
    error: str | None = None  # why the first prediction failed, when it did

    @property
    def pet(self) -> Volume:
        return self.inner.pet

    @property
    def ct(self) -> Volume:
        return self.inner.ct

    @property
    def busy(self) -> bool:
        """Whether a change is running or waiting."""
        return self._next_ticket > self._serving

    def ticket(self) -> int:
        """Take a place in the queue (call this when the request arrives). Raises
        :class:`QueueFull` when ``max_pending`` changes already wait behind the running one,
        :class:`SessionNotFound` when the session has been closed."""
        with self._turn:
            if self.closed:
                raise SessionNotFound(self.id)
            in_flight = self._next_ticket - self._serving
            if in_flight > self.max_pending:
                per_change = self.snapshot.seconds.get("total", 1.0) if self.snapshot else 1.0
                raise QueueFull(f"{self.max_pending} changes of this session are already "
                                "waiting; try again when they are done",
                                max(1, math.ceil(per_change * in_flight)))
            t = self._next_ticket
            self._next_ticket += 1
            return t

    def apply(self, ticket: int, change: Change,
              time_budget: float | None = None) -> Snapshot:
        """Wait (in this thread) for ``ticket``'s turn, apply ``change`` to the click list,
        predict, publish.

        A change that fails (bad click) leaves the session as it was and passes the turn on.
        """
        with self._turn:
            self._turn.wait_for(lambda: self._serving == ticket)
        try:
            return self._change(change, time_budget)
        finally:
            self._advance()

    async def apply_async(self, ticket: int, change: Change,
                          time_budget: float | None = None,
                          limiter: anyio.CapacityLimiter | None = None) -> Snapshot:
        """:meth:`apply` for the event loop: wait for the turn without a thread, then predict
        in a worker thread of ``limiter``. A request cancelled while it waits gives its turn
        up; one cancelled while it predicts finishes the prediction first."""
        try:
            while True:
                with self._turn:
                    if self._serving == ticket:
                        break
                    if self._turn_event is None:
                        self._turn_event = anyio.Event()
                    event = self._turn_event
                await event.wait()
        except BaseException:
            with self._turn:
                mine = self._serving == ticket
                if not mine:
                    self._abandoned.add(ticket)
            if mine:
                self._advance()
            raise
        try:
            return await anyio.to_thread.run_sync(self._change, change, time_budget,
                                                  limiter=limiter)
        finally:
            self._advance()

    def _advance(self) -> None:
        with self._turn:
            self._serving += 1
            while self._serving in self._abandoned:
                self._abandoned.discard(self._serving)
                self._serving += 1
            self._turn.notify_all()
            event, self._turn_event = self._turn_event, None
        if event is not None:
            event.set()

    def _change(self, change: Change, time_budget: float | None) -> Snapshot:
        """Apply ``change`` to the session's click list and predict; the click list is the
        inner session's (this object keeps no clicks of its own)."""
        if self.closed:
            raise SessionNotFound(self.id)
        with self.infer_lock:
            if self.closed:  # deleted while this change waited for the models
                raise SessionNotFound(self.id)
            result: Result = self.inner.change(change(self.inner.clicks), time_budget)
        report = lesion_report(self.pet, result.mask.array)
        version = 0 if self.snapshot is None else self.snapshot.version + 1
        whole = tuple((0, n) for n in self.pet.shape)
        changed = whole if self.snapshot is None else result.changed
        self.deltas[version] = changed
        self.deltas.pop(version - DELTAS, None)
        self.snapshot = Snapshot(version, result.clicks.items, result.mask,
                                 pack_mask(result.mask), report, result.model,
                                 dict(result.seconds), result.tta.describe(), changed)
        return self.snapshot

    def changed_since(self, version: int, snap: Snapshot | None = None) -> Box | None:
        """The box holding every voxel of the mask of ``snap`` (default: the latest) that
        changed after ``version`` (the whole image where that is too long ago); None: nothing
        changed."""
        snap = self.snapshot if snap is None else snap
        if snap is None or version >= snap.version:
            return None
        if version < 0 or any(v not in self.deltas for v in range(version + 1, snap.version + 1)):
            return tuple((0, n) for n in self.pet.shape)
        return union_box(self.deltas[v] for v in range(version + 1, snap.version + 1))

    def close(self) -> None:
        """End the session: changes still queued are dropped, the packed images let go. The
        arrays go with the last reference to the session (a request still running on it)."""
        with self._turn:
            self.closed = True
            self.payloads = {}
            self.inner.last = None  # the last result: a mask and its probabilities' leftovers
        self.inner.close(wait=False)  # background work stops, the engine's caches go


def add_click(kind: str, point) -> Change:
    click = Click(kind, point)  # a bad kind or point fails here, before the request queues
    return lambda clicks: clicks.add(click.kind, click.point)


def remove_click(index: int) -> Change:
    return lambda clicks: clicks.remove(index)


def add_stroke(kind: str, vertices) -> Change:
    """A stroke through ``vertices``: its voxels (:func:`~petloop.clicks.scribbles.stroke_voxels`)
    become clicks of one stroke; a bad kind or a stroke too long fails before it queues."""
    voxels = stroke_voxels(vertices)
    if not voxels:
        raise ClickError("a stroke needs at least one vertex")
    Click(kind, voxels[0])  # type: ignore[arg-type]
    if len(voxels) > MAX_STROKE_VOXELS:
        raise ClickError(f"a stroke of {len(voxels)} voxels: at most {MAX_STROKE_VOXELS}")
    return lambda clicks: clicks.add_stroke(kind, voxels)


def remove_stroke(number: int) -> Change:
    return lambda clicks: clicks.remove_stroke(number)


def undo(clicks: ClickList) -> ClickList:
    return clicks.undo()


def reset(clicks: ClickList) -> ClickList:
    return clicks.reset()


class Reservation:
    """A slot in the store held while a session is being set up (see
    :meth:`SessionStore.reserve`); given back on leaving the ``with`` block unless a session
    took it."""

    def __init__(self, store: SessionStore):
        self.store = store
        self.taken = False
        self.returned = False

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc) -> None:
        self.store._give_back(self)


class SessionStore:
    """Sessions by unguessable id, forgotten after ``ttl_seconds`` without a request."""

    def __init__(self, pipeline: Pipeline, ttl_seconds: float = 3600.0, max_sessions: int = 16,
                 clock: Callable[[], float] = time.monotonic, max_pending: int = MAX_PENDING):
        self.pipeline = pipeline
        self.ttl = ttl_seconds
        self.max_sessions = max_sessions
        self.max_pending = max_pending
        self.clock = clock
        self.infer_lock = threading.Lock()
        self._sessions: dict[str, ViewerSession] = {}
        self._reserved = 0
        self._closed = 0  # sessions closed since take_closed() was last called
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def reserved(self) -> int:
        """Slots held by sessions being set up."""
        return self._reserved

    def sweep(self) -> list[str]:
        """Forget (and close) the sessions idle for longer than the time to live; a session
        with a change running or waiting is not idle."""
        now = self.clock()
        with self._lock:
            old = [k for k, s in self._sessions.items()
                   if now - s.last_access > self.ttl and not s.busy]
            gone = [self._sessions.pop(k) for k in old]
            self._closed += len(gone)
        for s in gone:
            s.close()
        return old

    def take_closed(self) -> int:
        """How many sessions were closed (deleted, expired) since the last call: whether there
        is memory to hand back."""
        with self._lock:
            n, self._closed = self._closed, 0
        return n

    def reserve(self) -> Reservation:
        """Hold a slot for a session about to be set up; raises :class:`StoreFull` when the
        open sessions and the slots already held reach ``max_sessions``."""
        self.sweep()
        with self._lock:
            if len(self._sessions) + self._reserved >= self.max_sessions:
                raise StoreFull(f"{self.max_sessions} sessions are open; delete one or wait "
                                f"until one expires ({self.ttl:g} s without a request)")
            self._reserved += 1
        return Reservation(self)

    def _give_back(self, reservation: Reservation) -> None:
        with self._lock:
            if not reservation.taken and not reservation.returned:
                reservation.returned = True
                self._reserved -= 1

    def create(self, case: str, ct: Volume, pet: Volume, tracer: str | None = "auto",
               time_budget: float | None = None,
               reservation: Reservation | None = None, *, predict: bool = True
               ) -> ViewerSession:
        """Set the case up, predict with no clicks (unless ``predict`` is False: the caller
        makes that first change), and register the session (in the slot ``reservation``
        holds, or in one reserved now)."""
        if reservation is None:
            with self.reserve() as slot:
                return self.create(case, ct, pet, tracer, time_budget, slot, predict=predict)
        if reservation.taken or reservation.returned:
            raise RuntimeError("a reservation holds one session")
        inner = Session(self.pipeline)
        with self.infer_lock:
            inner.set_case(ct, pet, tracer, ct_name=f"CT of {case}", pet_name=f"PET of {case}")
        session = ViewerSession(secrets.token_urlsafe(24), case, inner, self.infer_lock,
                                last_access=self.clock(), max_pending=self.max_pending)
        if predict:
            session.apply(session.ticket(), reset, time_budget)
        with self._lock:
            if reservation.returned:  # pragma: no cover - the caller's block has ended
                raise RuntimeError("the reservation was given back during the set-up")
            reservation.taken = True
            self._reserved -= 1
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
        """Forget and close a session."""
        with self._lock:
            session = self._sessions.pop(session_id, None)
            self._closed += session is not None
        if session is None:
            raise SessionNotFound(session_id)
        session.close()

    def close_all(self) -> int:
        """Forget and close every session (the server is shutting down)."""
        with self._lock:
            gone = list(self._sessions.values())
            self._sessions.clear()
            self._closed += len(gone)
        for s in gone:
            s.close()
        return len(gone)
