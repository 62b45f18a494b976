"""The prediction engine: a case prepared once, then one step from clicks to a mask.

Every caller predicts through :class:`Engine` (the session API and so the viewer and the
evaluation, ``predict``, ``predict-folder``, calibration, the demo). The engine runs nnU-Net's
sliding window itself, tile by tile (:mod:`petloop.nnunet.adapter`), and keeps, per model and
per pass (each fold, plain and each mirrored pass), every tile's output. A click changes the
click channels of petloop's own models (``CLICKS_FG``/``CLICKS_BG``, fixed scale) only within
its heatmap's support, so a step

1. finds the voxels whose click channels differ between the clicks each pass last saw and the
   new ones (the support boxes of the clicks added or removed, rendered both ways and compared),
2. recomputes only the tiles whose input box holds such a voxel,
3. sums again, in nnU-Net's tile order, the Gaussian-weighted tile outputs over the region those
   tiles cover, averages the softmax over the passes there, and
4. exports only the part of the image grid that region reaches (:mod:`petloop.nnunet.resample`).

Because every sum is made the same way whether a region or the whole volume is asked for, the
mask after any sequence of added, removed and undone clicks is the mask a full prediction with
the same passes gives, voxel for voxel. A model whose click channels nnU-Net normalises per
image (the published ``FG``/``BG`` models) changes everywhere with every click: there each step
is a full pass, and the result says so.

Test-time augmentation: the mirrored passes are the published order x, y, z, xy, xz, yz, xyz
(over the axes the model allows). A fixed number (``mirrors``) is made at every step; with a
time budget, the plain work of the step is timed and each next mirrored pass is made while its
expected cost (the tiles it must recompute, at the step's time per tile) still fits the budget.
A pass left out of a step keeps its cache and catches up when it is next used. This is the
``tiles`` budget mode; the passes' lesion probabilities are averaged, and a mirrored pass runs the
sliding window over the flipped volume.

The ``birth`` budget mode is the published BIRTH code's rule (its ``nnUNetPredictor``): each
tile's plain pass is timed, and that time ``t`` times the number of tiles of the whole window
``N`` is the plain cost ``T`` that gives the tile ``min(int((budget - T) / T), 7)`` mirrored
passes (none when ``T`` is 0), whatever a click step actually recomputes. The budget is per
network (their 40 s is per fold). The passes come in their code's order,
``itertools.combinations`` over nnU-Net's array axes: 0, 1, 2, (0, 1), (0, 2), (1, 2),
(0, 1, 2), which on the usual (z, y, x) arrays is z, y, x, zy, zx, yx, zyx, not the x, y, z, ...
of the paper's text; each tile is flipped in place (the same tile boxes as the plain pass), its
logits are averaged over its own passes, and the tiles summed, Gaussian-weighted. Differences
that remain: a tile a click step does not recompute keeps the time of its last computation
(their code predicts everything again and times every tile anew), and their clock reads without
waiting for the GPU (on a GPU it mostly times kernel launches), while petloop's tiles return to
the host before the clock stops.

Routing hand-over: after a step, the models the next click could route to are brought up to
date with the current clicks in a background thread, tile by tile, which gives way at once to
any step (of any session of the process) and is stopped before the process forks. The first
click after a hand-over then costs about one click.

Memory: per model and pass, the tile outputs are float16, about 2 bytes x 6.7 x the
preprocessed voxels on nnU-Net's half-overlapping tiles (250 MB on the autoPET grid at
4 x 3 x 3 mm); per model a float32 map of the preprocessed grid and a uint8 mask of the image.
Models not used recently are dropped when the caches pass ``cache_bytes``; ``close`` frees all.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit

from petloop.io.clicks import Clicks
from petloop.io.volume import Volume
from petloop.nnunet.adapter import ExportGeometry, NetworkAdapter, TileGrid
from petloop.nnunet.clickspace import clicks_in_preprocessed
from petloop.nnunet.predict import Preprocessed
from petloop.nnunet.resample import output_box, plans_for, resample_box, union_box
from petloop.options import BUDGET_MODES, CROPS, MAX_MIRRORS, BudgetMode, Crop, Window

from .body import body_box

# published order x, y, z, xy, xz, yz, xyz as axes of nnU-Net's (z, y, x) arrays
MIRROR_ORDER = ((2,), (1,), (0,), (2, 1), (2, 0), (1, 0), (2, 1, 0))
# the published code's order: itertools.combinations over the array axes, by size
BIRTH_MIRROR_ORDER = ((0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2))
CACHE_BYTES = 6 * 2**30
LOG_FLOOR = 1e-8

Box = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class TTAChoice:
    """The passes one step used and the work they cost."""

    plain_seconds: float  # the plain passes' work in this step
    budget: float | None
    mirrors: tuple[tuple[int, ...], ...]
    window: str = "sliding"
    folds: int = 1
    tiles: int = 0  # tiles recomputed in this step, every pass together
    tiles_total: int = 0  # tiles of a full prediction with the same passes
    incremental: bool = True  # False: the model's click channels forbid reusing tiles
    budget_mode: str = "tiles"  # how a budget chose the mirrored passes
    per_tile: tuple[int, int] | None = None  # birth mode: fewest and most passes of a tile
    note: str = ""

    def describe(self) -> str:
        names = {0: "z", 1: "y", 2: "x"}
        flips = ", ".join("".join(names[a] for a in m) for m in self.mirrors) or "none"
        folds = f", {self.folds} networks averaged" if self.folds > 1 else ""
        work = f"; {self.tiles} of {self.tiles_total} tiles computed" if self.tiles_total else ""
        note = f" ({self.note})" if self.note else ""
        if self.per_tile is not None and self.per_tile[0] != self.per_tile[1]:
            work += f"; {self.per_tile[0]} to {self.per_tile[1]} mirrored passes per tile"
        return (f"{self.window} window{folds}, plain work {self.plain_seconds:.2f} s, budget "
                f"{'none' if not self.budget else f'{self.budget:g} s'}"
                f"{' (BIRTH rule)' if self.budget and self.budget_mode == 'birth' else ''}: "
                f"mirrored passes "
                f"{flips}{work}{note}")


def usable_mirrors(allowed, budget_mode: BudgetMode = "tiles") -> tuple[tuple[int, ...], ...]:
    """The mirrored passes over the ``allowed`` axes, in the budget mode's order."""
    if budget_mode not in BUDGET_MODES:
        raise ValueError(f"unknown budget mode {budget_mode!r}; use one of "
                         f"{', '.join(BUDGET_MODES)}")
    allowed = set(allowed or ())
    order = BIRTH_MIRROR_ORDER if budget_mode == "birth" else MIRROR_ORDER
    return tuple(m for m in order if set(m) <= allowed)


def birth_mirrors(tile_seconds: np.ndarray, tiles: int, budget: float,
                  most: int = MAX_MIRRORS) -> np.ndarray:
    """The published rule, per tile: ``min(int((budget - T) / T), 7)`` mirrored passes for
    ``T`` = ``tiles`` x that tile's plain time (none where ``T`` is 0 or the tile is untimed;
    ``int`` rounds toward zero, so a plain cost over the budget gives none), at most ``most``.
    """
    total = np.nan_to_num(np.asarray(tile_seconds, dtype=np.float64), nan=0.0) * tiles
    with np.errstate(divide="ignore", invalid="ignore"):
        n = np.where(total > 0, np.trunc((budget - total) / total), 0.0)
    return np.clip(n, 0, min(most, MAX_MIRRORS)).astype(np.int64)


def mirrors_that_fit(tiles: Sequence[int], spent: float, seconds_per_tile: float,
                     budget: float) -> int:
    """How many of the mirrored passes, in order, fit in ``budget`` seconds after ``spent``,
    each costing the tiles it must compute at ``seconds_per_tile``. With every pass cold this
    is the published rule ``int((budget - t) / t)`` for a plain pass of ``t`` seconds."""
    n = 0
    for need in tiles:
        spent += need * seconds_per_tile
        if spent > budget:
            break
        n += 1
    return n


def _intersect(a: np.ndarray, b) -> np.ndarray | None:
    lo = np.maximum(a[:, 0], [x[0] for x in b])
    hi = np.minimum(a[:, 1], [x[1] for x in b])
    return None if np.any(hi <= lo) else np.stack([lo, hi], axis=1)


def _slices(box, offset=(0, 0, 0)) -> tuple[slice, ...]:
    return tuple(slice(int(lo - o), int(hi - o)) for (lo, hi), o in zip(box, offset, strict=True))


def changed_boxes(encoding, old: Clicks, new: Clicks, shape) -> list[Box]:
    """Boxes holding every voxel whose click channels differ between ``old`` and ``new``
    (preprocessed indices): the support of each click added or removed, rendered both ways and
    compared, cut down to the voxels that really differ."""
    r = encoding.support_radius
    shape = np.asarray(shape)
    out = []
    for kind in ("tumor", "background"):
        a, b = Counter(getattr(old, kind)), Counter(getattr(new, kind))
        for p in sorted(set((a - b) + (b - a))):
            lo = np.maximum(np.asarray(p) - r, 0)
            hi = np.minimum(np.asarray(p) + r + 1, shape)
            crop = (lo, hi - lo)
            before = encoding.render(old, tuple(shape), crop=crop)
            after = encoding.render(new, tuple(shape), crop=crop)
            diff = (before[0] != after[0]) | (before[1] != after[1])
            if diff.any():
                idx = np.nonzero(diff)
                out.append(tuple((int(lo[a] + i.min()), int(lo[a] + i.max()) + 1)
                                 for a, i in enumerate(idx)))
    return out


@dataclass
class PassState:
    fold: int
    axes: tuple[int, ...]
    in_place: bool  # a mirrored pass flipping each tile in place (the birth mode)
    boxes: np.ndarray  # (n, 3, 2) tile boxes in the padded frame
    weights: np.ndarray | None
    outputs: np.ndarray | None = None  # (n, *patch) float16: lesion minus background logit
    clicks: Clicks | None = None  # the (preprocessed) clicks the pass is being brought to
    pending: set[int] = field(default_factory=set)  # tiles not yet computed for ``clicks``


class ModelState:
    """One model on one case: its input, its passes' tiles, its map and its mask."""

    #: what times a plain tile (the birth budget mode gives each tile passes by its time)
    clock: Callable[[], float] = staticmethod(time.perf_counter)

    def __init__(self, adapter: NetworkAdapter, pre: Preprocessed, window: str,
                 tile_step: float = 0.5):
        self.adapter = adapter
        self.pre = pre
        self.grid: TileGrid = adapter.grid(pre.data.shape[1:], window, tile_step)
        self.geometry: ExportGeometry = adapter.export_geometry(pre)
        g = self.geometry
        self.resample = plans_for(g.model_shape, g.cropped_shape, g.orders)
        self.passes: dict[tuple[int, tuple[int, ...]], PassState] = {}
        self.q: np.ndarray | None = None  # log-odds of lesion on the preprocessed grid
        self.q_passes: tuple = ()
        self.stale: list[Box] = []  # regions of q behind the passes' tiles
        self.mask: np.ndarray | None = None  # uint8, nnU-Net's transposed image frame
        self.seconds_per_tile: float | None = None
        self._tile_seconds: dict[int, np.ndarray] = {}  # per fold, each plain tile's last time
        self.last_used = 0.0

    def tile_seconds(self, fold: int) -> np.ndarray:
        """Each tile's plain time at its last computation, for ``fold`` (NaN: not yet)."""
        if fold not in self._tile_seconds:
            self._tile_seconds[fold] = np.full(len(self.grid), np.nan)
        return self._tile_seconds[fold]

    @property
    def nbytes(self) -> int:
        n = sum(p.outputs.nbytes for p in self.passes.values() if p.outputs is not None)
        n += 0 if self.q is None else self.q.nbytes
        n += 0 if self.mask is None else self.mask.nbytes
        return n + self.pre.data.nbytes

    def pass_state(self, fold: int, axes: tuple[int, ...], in_place: bool = False) -> PassState:
        """A pass: the plain one (no ``axes``), a mirrored one running the window over the
        flipped volume, or (``in_place``) one flipping each tile of the plain window."""
        in_place = bool(axes) and in_place
        key = (fold, axes, in_place)
        if key not in self.passes:
            frame = () if in_place else axes
            self.passes[key] = PassState(fold, axes, in_place, self.grid.boxes(frame),
                                         self.grid.weights(frame))
        return self.passes[key]

    def retarget(self, ps: PassState, clicks: Clicks, full: bool) -> None:
        """Mark the tiles of ``ps`` whose input differs between its clicks and ``clicks``."""
        if ps.outputs is None or ps.clicks is None or full:
            ps.pending = set(range(len(self.grid)))
        elif ps.clicks != clicks:
            boxes = changed_boxes(self.adapter.encoding, ps.clicks, clicks, self.grid.shape)
            lo = np.asarray(self.grid.pad_lo)
            for box in boxes:
                b = np.asarray(box)
                hit = np.all((ps.boxes[:, :, 0] - lo < b[:, 1])
                             & (ps.boxes[:, :, 1] - lo > b[:, 0]), axis=1)
                ps.pending.update(int(i) for i in np.nonzero(hit)[0])
        ps.clicks = clicks

    def tile_input(self, box: np.ndarray, clicks: Clicks, axes) -> np.ndarray:
        data = self.pre.data
        enc = self.adapter.encoding
        fixed = enc is not None and enc.mode == "fixed"
        x = np.zeros((data.shape[0] + 2 * fixed, *self.grid.patch), dtype=np.float32)
        local = box - np.asarray(self.grid.pad_lo)[:, None]
        inside = _intersect(local, [(0, s) for s in self.grid.shape])
        if inside is not None:
            dst = _slices(inside, local[:, 0])
            x[(slice(0, data.shape[0]), *dst)] = data[(slice(None), *_slices(inside))]
            if fixed:
                fg, bg = enc.render(clicks, self.grid.shape,
                                    crop=(inside[:, 0], inside[:, 1] - inside[:, 0]))
                x[(data.shape[0], *dst)] = fg
                x[(data.shape[0] + 1, *dst)] = bg
        if axes:
            x = np.flip(x, tuple(a + 1 for a in axes))
        return x

    def compute_tile(self, ps: PassState, n: int) -> None:
        self.adapter.use_fold(ps.fold)
        x = self.tile_input(ps.boxes[n], ps.clicks, ps.axes)
        if ps.axes:
            logits = self.adapter.run_tile(x)
        else:  # each plain tile's own time, for the published budget rule
            t0 = self.clock()
            logits = self.adapter.run_tile(x)  # numpy: the device is done with it
            self.tile_seconds(ps.fold)[n] = self.clock() - t0
        d = logits[1] - logits[0]
        if ps.axes:
            d = np.flip(d, ps.axes)
        if ps.outputs is None:
            ps.outputs = np.empty((len(self.grid), *self.grid.patch), dtype=np.float16)
        ps.outputs[n] = d
        ps.pending.discard(n)
        self.stale.append(tuple(map(tuple, ps.boxes[n] - np.asarray(self.grid.pad_lo)[:, None])))

    def _weighted(self, boxes: np.ndarray, weights: np.ndarray | None, region: Box,
                  tile: Callable[[int, tuple], np.ndarray]) -> np.ndarray:
        """The Gaussian-weighted mean of tile values over ``region``, summed in nnU-Net's tile
        order whatever the region; ``tile(n, src)`` is tile ``n``'s value on ``src``."""
        size = tuple(hi - lo for lo, hi in region)
        lo = np.asarray(self.grid.pad_lo)[:, None]
        acc = np.zeros(size, dtype=np.float32)
        wsum = np.zeros(size, dtype=np.float32)
        local = boxes - lo
        hit = np.all((local[:, :, 0] < [h for _, h in region])
                     & (local[:, :, 1] > [lo_ for lo_, _ in region]), axis=1)
        for n in np.nonzero(hit)[0]:
            inter = _intersect(local[n], region)
            src = _slices(inter, local[n][:, 0])
            dst = _slices(inter, [lo_ for lo_, _ in region])
            if weights is None:
                acc[dst] += tile(n, src)
                wsum[dst] += 1.0
            else:
                w = weights[src]
                acc[dst] += tile(n, src).astype(np.float32) * w
                wsum[dst] += w
        return acc / wsum

    def region_logodds(self, passes: Sequence[PassState], region: Box,
                       counts: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """The log-odds of lesion on ``region`` of the preprocessed grid.

        Without ``counts`` (the tiles mode): each pass summed from its tiles, the log-odds of
        the passes' mean probability. With ``counts`` (the birth mode, one array per fold:
        each tile's number of mirrored passes), ``passes`` are each fold's plain pass followed
        by its in-place mirrored passes; each tile's logits are averaged over its plain pass
        and its first ``count`` mirrored ones, the tiles summed, and the folds' logits
        averaged, as the published code and nnU-Net do."""
        if counts is None:
            avg = sum(expit(self._weighted(ps.boxes, ps.weights, region,
                                           lambda n, src, ps=ps: ps.outputs[n][src]))
                      for ps in passes) / np.float32(len(passes))
            return np.log(np.maximum(avg, LOG_FLOOR)) - np.log(np.maximum(1 - avg, LOG_FLOOR))
        folds = len(counts)
        logits = np.zeros(tuple(hi - lo for lo, hi in region), dtype=np.float32)
        for f, count in enumerate(counts):
            plain, mirrored = passes[f], passes[folds + f::folds]

            def tile(n, src, plain=plain, mirrored=mirrored, count=count):
                d = plain.outputs[n][src].astype(np.float32)
                for ps in mirrored[:count[n]]:
                    d += ps.outputs[n][src]
                return d / np.float32(count[n] + 1)

            logits += self._weighted(plain.boxes, plain.weights, region, tile)
        return logits / np.float32(folds)

    def update_map(self, passes: Sequence[PassState],
                   counts: Sequence[np.ndarray] | None = None) -> Box | None:
        """Bring the log-odds map up to ``passes`` (and per-tile ``counts``, the birth mode:
        :meth:`region_logodds`); the preprocessed region that changed."""
        key = (tuple((p.fold, p.axes, p.in_place) for p in passes),
               None if counts is None else tuple(c.tobytes() for c in counts))
        whole = tuple((0, s) for s in self.grid.shape)
        if self.q is None or key != self.q_passes:
            region = whole
            self.q = np.empty(self.grid.shape, dtype=np.float32)
        else:
            region = union_box(self.stale)
            if region is None:
                return None
            region = tuple((max(lo, 0), min(hi, s)) for (lo, hi), s in zip(region, self.grid.shape,
                                                                           strict=True))
        self.q[_slices(region)] = self.region_logodds(passes, region, counts)
        self.q_passes, self.stale = key, []
        return region

    def export(self, region: Box | None) -> Box | None:
        """Bring the image-grid mask up to the map over ``region`` (preprocessed); returns the
        box of the transposed image that was recomputed."""
        g = self.geometry
        if self.mask is None:
            self.mask = np.zeros(g.full_shape, dtype=np.uint8)
            region = tuple((0, s) for s in g.model_shape)
        if region is None:
            return None
        out = output_box(self.resample, region)
        if out is None:
            return None
        values = resample_box(self.q, self.resample, out)
        shifted = tuple((lo + b, hi + b) for (lo, hi), (b, _) in zip(out, g.bbox, strict=True))
        self.mask[_slices(shifted)] = values > 0
        return shifted

    def probability_image(self) -> np.ndarray:
        """Lesion probability on the transposed image grid (0 outside nnU-Net's crop)."""
        g = self.geometry
        full = np.zeros(g.full_shape, dtype=np.float32)
        q = resample_box(self.q, self.resample)
        full[_slices(g.bbox)] = expit(q)
        return full


_foreground = threading.Condition()
_foreground_steps = 0
_engines: weakref.WeakSet = weakref.WeakSet()


def _before_fork() -> None:
    """No background tile may run while the process forks (nnU-Net's worker processes, the
    server's workers): a child would inherit locks held by a thread it does not have."""
    for engine in list(_engines):
        if engine._worker is not threading.current_thread():
            engine.stop_background()


os.register_at_fork(before=_before_fork)


class _Foreground:
    """Marks a step running: background work anywhere in the process waits."""

    def __enter__(self):
        global _foreground_steps
        with _foreground:
            _foreground_steps += 1

    def __exit__(self, *exc):
        global _foreground_steps
        with _foreground:
            _foreground_steps -= 1
            _foreground.notify_all()


def _wait_for_quiet(stop: threading.Event) -> bool:
    with _foreground:
        while _foreground_steps and not stop.is_set():
            _foreground.wait(0.5)
    return not stop.is_set()


@dataclass
class StepWork:
    model: str
    choice: TTAChoice
    mask: np.ndarray  # uint8 on the image grid, [k, j, i] order
    changed: Box | None  # the recomputed box, [k, j, i] order
    probabilities: np.ndarray | None
    seconds: dict


class Engine:
    """One case, prepared once; :meth:`step` answers clicks with a mask."""

    def __init__(self, ct: Volume, pet: Volume, *, window: Window = "sliding",
                 crop: Crop = "none", tile_step: float = 0.5,
                 cache_bytes: int = CACHE_BYTES):
        if crop not in CROPS:
            raise ValueError(f"unknown crop {crop!r}; use one of {', '.join(CROPS)}")
        self.ct, self.pet = ct, pet
        self.window = window
        self.tile_step = tile_step  # the sliding window's step, a fraction of the patch
        #: the part of the image the networks run on (``(i, j, k)`` ranges); None: all of it
        self.box = body_box(ct) if crop == "body" else None
        self.cache_bytes = cache_bytes
        self._states: dict[str, ModelState] = {}
        self._shared: dict[str, Preprocessed] = {}  # image channels by preprocessing
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._last_key: tuple | None = None
        self.closed = False
        _engines.add(self)

    # ------------------------------------------------------------------ preparation
    def provide(self, adapter: NetworkAdapter, pre: Preprocessed) -> None:
        """Image channels preprocessed elsewhere (nnU-Net's worker processes) for the models
        that preprocess like ``adapter``."""
        if adapter.encoding is not None and adapter.encoding.mode == "fixed":
            with self._lock:
                self._shared[adapter.preprocessing_key()] = pre

    def _state(self, name: str, adapter: NetworkAdapter, clicks: Clicks) -> tuple[ModelState,
                                                                                  float]:
        t0 = time.perf_counter()
        published = adapter.encoding is None or adapter.encoding.mode == "published"
        state = self._states.get(name)
        if state is not None and state.adapter is not adapter:
            state = None
        if state is None or published:
            if published:
                pre = adapter.preprocess(self.ct, self.pet, clicks, self.box)
            else:
                key = adapter.preprocessing_key()
                pre = self._shared.get(key)
                if pre is None:
                    pre = self._shared[key] = adapter.preprocess(self.ct, self.pet,
                                                                 box=self.box)
            if state is None or state.pre.data.shape != pre.data.shape:
                state = ModelState(adapter, pre, self.window, self.tile_step)
            else:
                state.pre = pre
            self._states[name] = state
            self._trim(keep=name)
        state.last_used = time.monotonic()
        return state, time.perf_counter() - t0

    def _trim(self, keep: str) -> None:
        total = sum(s.nbytes for s in self._states.values())
        for name, s in sorted(self._states.items(), key=lambda kv: kv[1].last_used):
            if total <= self.cache_bytes:
                break
            if name != keep:
                total -= s.nbytes
                del self._states[name]

    # ------------------------------------------------------------------ one step
    def _bring(self, state: ModelState, ps: PassState, clicks: Clicks, full: bool,
               stop: threading.Event | None = None, only: np.ndarray | None = None) -> int:
        """Compute the tiles of ``ps`` that ``clicks`` change (of them, with ``only``, the
        tiles it marks); the number computed."""
        state.retarget(ps, clicks, full)
        done = 0
        for n in sorted(n for n in ps.pending if only is None or only[n]):
            if stop is not None and (not _wait_for_quiet(stop)):
                break
            with self._lock:
                if ps.clicks is not clicks or n not in ps.pending:
                    break  # retargeted by a step meanwhile
                state.compute_tile(ps, n)
            done += 1
        return done

    def step(self, name: str, adapter: NetworkAdapter, clicks: Clicks, *,
             mirrors: int | None = None, budget: float | None = None,
             budget_mode: BudgetMode = "tiles", probabilities: bool = False) -> StepWork:
        """The mask of model ``name`` for ``clicks`` (image voxel indices)."""
        birth = budget_mode == "birth"
        self.stop_background()
        with _Foreground(), self._lock:
            t0 = time.perf_counter()
            state, t_prep = self._state(name, adapter, clicks)
            pc = clicks_in_preprocessed(clicks, state.pre.properties,
                                        adapter.predictor.plans_manager.transpose_forward,
                                        state.grid.shape)
            enc = adapter.encoding
            full = enc is None or enc.mode == "published"
            t1 = time.perf_counter()
            plain = [state.pass_state(f, ()) for f in range(adapter.folds)]
            tiles = sum(self._bring(state, ps, pc, full) for ps in plain)
            adapter.synchronize()
            t_plain = time.perf_counter() - t1
            if tiles:
                state.seconds_per_tile = t_plain / tiles
            candidates = usable_mirrors(adapter.allowed_axes, budget_mode)
            counts = None
            if birth:  # per fold and tile: the whole window's plain cost at the tile's time
                cap = len(candidates[:MAX_MIRRORS if mirrors is None else mirrors])
                n_tiles = len(state.grid)
                counts = [birth_mirrors(state.tile_seconds(f), n_tiles, budget, cap)
                          if budget and budget > 0
                          else np.full(n_tiles, min(mirrors or 0, cap), dtype=np.int64)
                          for f in range(adapter.folds)]
                chosen = list(candidates[:max(int(c.max()) for c in counts)])
            elif budget and budget > 0:
                candidates = candidates[:MAX_MIRRORS if mirrors is None else mirrors]
                need = []
                for axes in candidates:
                    need.append(0)
                    for f in range(adapter.folds):
                        ps = state.pass_state(f, axes)
                        state.retarget(ps, pc, full)
                        need[-1] += len(ps.pending)
                n = mirrors_that_fit(need, t_plain, state.seconds_per_tile or 0.0, budget)
                chosen = list(candidates[:n])
            else:
                chosen = list(candidates[:mirrors or 0])
            passes = list(plain)
            for j, axes in enumerate(chosen):
                for f in range(adapter.folds):
                    ps = state.pass_state(f, axes, birth)
                    tiles += self._bring(state, ps, pc, full,
                                         only=None if counts is None else counts[f] > j)
                    passes.append(ps)
            t2 = time.perf_counter()
            region = state.update_map(passes, counts)
            box = state.export(region)
            switched = self._last_key != (name, id(state))
            self._last_key = (name, id(state))
            mask = state.mask.transpose(state.geometry.transpose_backward)
            tb = state.geometry.transpose_backward
            if switched:
                changed = tuple((0, s) for s in mask.shape)
            else:
                changed = None if box is None else tuple(box[a] for a in tb)
            prob = None
            if probabilities:
                prob = state.probability_image().transpose(tb)
            t3 = time.perf_counter()
            total = (len(state.grid) * len(passes) if counts is None
                     else sum(len(state.grid) + int(c.sum()) for c in counts))
            per_tile = (None if counts is None
                        else (min(int(c.min()) for c in counts),
                              max(int(c.max()) for c in counts)))
            choice = TTAChoice(t_plain, budget, tuple(chosen), state.grid.window, adapter.folds,
                               tiles, total, not full, budget_mode, per_tile,
                               "published click channels are normalised per image: full passes"
                               if full and enc is not None else "")
            return StepWork(name, choice, mask, changed, prob,
                            {"preprocess": t_prep, "network": t2 - t1, "export": t3 - t2,
                             "engine": t3 - t0})

    # ------------------------------------------------------------------ background
    def warm(self, targets: Sequence[tuple[str, NetworkAdapter]], clicks: Clicks, *,
             mirrors: int | None = None, budget: float | None = None,
             budget_mode: BudgetMode = "tiles") -> None:
        """Bring ``targets`` up to ``clicks`` in a background thread (see the module text)."""
        birth = budget_mode == "birth"
        self.stop_background()
        if not targets or self.closed:
            return
        stop = self._stop

        def run() -> None:
            for name, adapter in targets:
                if stop.is_set() or not _wait_for_quiet(stop):
                    return
                with self._lock:
                    if stop.is_set():
                        return
                    state, _ = self._state(name, adapter, clicks)
                    pc = clicks_in_preprocessed(
                        clicks, state.pre.properties,
                        adapter.predictor.plans_manager.transpose_forward, state.grid.shape)
                enc = adapter.encoding
                if enc is None or enc.mode == "published":
                    continue  # nothing to reuse: every step is a full pass
                keys = [(f, (), False) for f in range(adapter.folds)]
                if not budget and mirrors:
                    keys += [(f, axes, birth)
                             for axes in usable_mirrors(adapter.allowed_axes, budget_mode)[:mirrors]
                             for f in range(adapter.folds)]
                for key in keys:
                    with self._lock:
                        ps = state.pass_state(*key)
                    self._bring(state, ps, pc, False, stop)
                    if stop.is_set():
                        return
                with self._lock:
                    if stop.is_set():
                        return
                    passes = [state.pass_state(*k) for k in keys]
                    counts = (None if not birth else
                              [np.full(len(state.grid), len(keys) // adapter.folds - 1,
                                       dtype=np.int64)] * adapter.folds)
                    state.export(state.update_map(passes, counts))

        self._worker = threading.Thread(target=run, name="petloop-warm", daemon=True)
        self._worker.start()

    def stop_background(self, wait: bool = True) -> None:
        """Stop the background work (waiting for the tile it is on, unless ``wait`` is
        False: it then ends on its own at the next tile)."""
        worker = self._worker
        if worker is not None:
            self._stop.set()
            if wait:
                worker.join()
            self._worker = None
        self._stop = threading.Event()

    def close(self, wait: bool = True) -> None:
        """Stop the background work and let the caches go (a step still running on another
        thread finishes on what it holds)."""
        self.closed = True
        self.stop_background(wait)
        self._states, self._shared = {}, {}

    @property
    def cached_bytes(self) -> int:
        return sum(s.nbytes for s in self._states.values())


__all__ = ["BIRTH_MIRROR_ORDER", "CACHE_BYTES", "MIRROR_ORDER", "Engine", "ModelState", "StepWork",
           "TTAChoice", "birth_mirrors", "changed_boxes", "mirrors_that_fit", "usable_mirrors"]
