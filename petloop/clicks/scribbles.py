"""autoPET V's simulated scribbles, identical to the challenge's ``simulate_scribbles.py``.

A scribble is drawn from a binary mask (the truth, or one of a prediction's errors) in the way
the challenge's ``simulate_scribble_from_label`` draws it:

1. every slice along the third axis (``k``) is split into its 8-connected components; the
   slice whose largest component is largest wins (the first such slice on a tie; on a tie
   inside a slice, the component ``cc3d`` labels first);
2. on that component a stroke is drawn by one of three strategies:

   - ``centerline``: the component's skeleton (scikit-image), its largest 8-connected part,
     the two skeleton pixels farthest apart (first pair of the distance matrix's argmax), the
     shortest path between them on the skeleton's 8-neighbour graph (networkx), 10 % trimmed
     from each end when it is longer than 10 pixels;
   - ``random``: a straight line (``skimage.draw.line``) between two pixels of the component
     drawn with Python's ``random`` seeded with ``seed``, kept where it lies in the component;
   - ``boundary``: a walk along the component's inner boundary from a random boundary pixel,
     always to the first unvisited 8-neighbour (in ``dy, dx`` order from -1 to 1), for
     ``max(2, int(0.2 * boundary pixels))`` steps or until it is stuck;

   with the official fallbacks: the whole component where a strategy has fewer than two
   pixels to work with (or no skeleton path), and a ``random`` stroke where a strategy fails;
3. the stroke's voxels, in ``numpy.argwhere`` order, are the scribble; its size is their
   number.

Coordinates are ``(i, j, k)`` indices of :class:`~petloop.io.volume.Volume` arrays, the order
nibabel reads (the challenge's ``[x, y, z]``). Slices are labelled exactly as the challenge's
loop labels them, boolean and Fortran-ordered as nibabel loads a NIfTI file, because the labels
depend on it: which of two equal components comes first follows the memory layout, and
``cc3d``'s boolean 2D 8-connected labelling (versions 3.29 to 4.1.1 at least) puts a background
pixel into a component on some slices (111 of 2000 random slices), which can move the chosen
slice and put a scribble voxel just outside its region. petloop keeps that behaviour: its
scribbles are the challenge's.

:func:`next_scribbles` is one step of the challenge's ``interactive_loop.py``;
:func:`stroke_voxels` turns a stroke drawn by hand (its vertices) into its voxels.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal, get_args

import cc3d
import numpy as np

from petloop.io.clicks import Clicks, Point
from petloop.options import EMPTY_REGIONS, EmptyRegion

Strategy = Literal["centerline", "random", "boundary"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
SEED = 42
TRIM_FRACTION = 0.1  # centerline: trimmed from each end of a path longer than TRIM_ABOVE
TRIM_ABOVE = 10
BOUNDARY_FRACTION = 0.2  # boundary: walk length as a fraction of the boundary pixels
_NEIGHBOURS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))


def _check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown scribble strategy {strategy!r}; use one of {STRATEGIES}")


# strokes on one slice ---------------------------------------------------------------------------
def stroke_centerline(region: np.ndarray) -> np.ndarray:
    """The centerline stroke of a 2D region (uint8, same shape)."""
    import networkx as nx
    from scipy.spatial.distance import cdist
    from skimage.morphology import skeletonize

    skeleton = skeletonize(region).astype(np.uint8)
    parts = cc3d.connected_components(skeleton, connectivity=8)
    labels, counts = np.unique(parts, return_counts=True)
    sizes = {int(n): int(c) for n, c in zip(labels, counts, strict=True) if n != 0}
    if not sizes:
        return region.copy()
    largest = max(sizes, key=sizes.__getitem__)  # the first label of the largest size
    skeleton = (parts == largest).astype(np.uint8)
    coords = np.argwhere(skeleton)
    if len(coords) < 2:
        return region.copy()
    # the graph is built in the same order as the challenge's: the shortest path networkx
    # returns between two ends depends on the order of each pixel's neighbours
    graph = nx.Graph()
    h, w = skeleton.shape
    for y, x in coords.tolist():
        graph.add_node((y, x))
        for dy, dx in _NEIGHBOURS:
            ny, nx_ = y + dy, x + dx
            if 0 <= ny < h and 0 <= nx_ < w and skeleton[ny, nx_]:
                graph.add_edge((y, x), (ny, nx_))
    far = np.unravel_index(cdist(coords, coords).argmax(), (len(coords), len(coords)))
    a, b = (tuple(int(c) for c in coords[i]) for i in far)
    try:
        path = np.array(nx.shortest_path(graph, source=a, target=b))
    except nx.NetworkXNoPath:
        return region.copy()
    n = len(path)
    if n > TRIM_ABOVE:
        path = path[int(n * TRIM_FRACTION):int(n * (1 - TRIM_FRACTION))]
    out = np.zeros_like(region)
    for y, x in path:
        if region[y, x]:
            out[y, x] = 1
    return out


def stroke_random(region: np.ndarray, seed: int = SEED) -> np.ndarray:
    """A straight stroke between two random pixels of a 2D region, kept inside it."""
    from skimage.draw import line

    rng = random.Random(seed)  # the draws of random.seed(seed) without touching its state
    coords = np.argwhere(region)
    if len(coords) < 2:
        return region.copy()
    p1 = coords[rng.randint(0, len(coords) - 1)]
    p2 = coords[rng.randint(0, len(coords) - 1)]
    rr, cc = line(int(p1[0]), int(p1[1]), int(p2[0]), int(p2[1]))
    inside = (rr >= 0) & (rr < region.shape[0]) & (cc >= 0) & (cc < region.shape[1])
    rr, cc = rr[inside], cc[inside]
    out = np.zeros_like(region)
    keep = region[rr, cc] != 0
    out[rr[keep], cc[keep]] = 1
    return out


def stroke_boundary(region: np.ndarray, seed: int = SEED) -> np.ndarray:
    """A walk along the inner boundary of a 2D region from a random boundary pixel."""
    from skimage.segmentation import find_boundaries

    rng = random.Random(seed)
    boundary = find_boundaries(region, mode="inner")
    coords = np.argwhere(boundary)
    if len(coords) < 2:
        return region.copy()
    current = tuple(int(c) for c in coords[rng.randint(0, len(coords) - 1)])
    out = np.zeros_like(region)
    out[current] = 1
    visited = {current}
    h, w = boundary.shape
    for _ in range(max(2, int(BOUNDARY_FRACTION * len(coords)))):
        y, x = current
        step = next(((y + dy, x + dx) for dy, dx in _NEIGHBOURS
                     if 0 <= y + dy < h and 0 <= x + dx < w and boundary[y + dy, x + dx]
                     and (y + dy, x + dx) not in visited), None)
        if step is None:
            break
        current = step
        out[current] = 1
        visited.add(current)
    return out


def stroke(region: np.ndarray, strategy: Strategy, seed: int = SEED) -> np.ndarray:
    """The stroke of ``strategy`` on a 2D region; a ``random`` one where the strategy fails
    (the challenge's fallback)."""
    _check_strategy(strategy)
    try:
        if strategy == "centerline":
            return stroke_centerline(region)
        if strategy == "boundary":
            return stroke_boundary(region, seed)
    except Exception:  # noqa: BLE001 - the challenge falls back on any failure of a strategy
        pass
    return stroke_random(region, seed)


# the slice and the scribble ---------------------------------------------------------------------
def as_loop_mask(mask: np.ndarray) -> np.ndarray:
    """``mask != 0`` as the challenge's loop holds it: boolean, Fortran-ordered (3D)."""
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"a scribble is drawn on a 3D mask, got shape {mask.shape}")
    return np.asfortranarray(mask != 0)


def largest_slice_region(mask: np.ndarray) -> tuple[int, np.ndarray] | None:
    """``(k, region)``: the slice along the third axis holding the largest 8-connected
    component, and that component (uint8, 2D); None for an empty mask."""
    mask = as_loop_mask(mask)
    per_slice = mask.sum(axis=(0, 1))
    best_area, best = 0, None
    for k in np.nonzero(per_slice)[0].tolist():
        # no pruning by the slice's sum: the labelling can hold more pixels than the slice
        labels = cc3d.connected_components(mask[:, :, k], connectivity=8)
        counts = np.bincount(labels.ravel())
        counts[0] = 0
        largest = int(counts.argmax())  # the first label of the largest size
        if counts[largest] > best_area:
            best_area = int(counts[largest])
            best = (k, (labels == largest).astype(np.uint8))
    return best


@dataclass(frozen=True)
class Scribble:
    """One simulated stroke: its voxels ``(i, j, k)`` in ``argwhere`` order, on slice ``k``."""

    points: tuple[Point, ...]
    slice_index: int
    strategy: str

    @property
    def size(self) -> int:
        return len(self.points)

    def to_json(self) -> dict:
        return {"points": [list(p) for p in self.points], "slice": self.slice_index,
                "strategy": self.strategy, "size": self.size}


def simulate_scribble(mask: np.ndarray, strategy: Strategy = "centerline", *,
                      seed: int = SEED) -> Scribble | None:
    """The challenge's ``simulate_scribble_from_label(mask, strategy, seed)``: a scribble on
    the slice of the mask's largest 2D component, or None for an empty mask (where the
    challenge returns two values instead of three)."""
    _check_strategy(strategy)
    found = largest_slice_region(mask)
    return None if found is None else scribble_on_slice(*found, strategy, seed=seed)


def scribble_on_slice(k: int, region: np.ndarray, strategy: Strategy, *,
                      seed: int = SEED) -> Scribble:
    """The scribble of ``strategy`` on ``region``, the 2D component on slice ``k`` that
    :func:`largest_slice_region` found (several strokes on one region find it once)."""
    drawn = stroke(region, strategy, seed)
    points = tuple((int(i), int(j), k) for i, j in np.argwhere(drawn > 0).tolist())
    return Scribble(points, k, strategy)


# a stroke drawn by hand -------------------------------------------------------------------------
def stroke_voxels(vertices) -> tuple[Point, ...]:
    """The voxels of a polyline through ``vertices`` (``(i, j, k)`` each): a digital line per
    segment (one voxel per step along its longest axis, the others rounded half away from
    zero), each voxel once, in drawing order."""
    pts = np.asarray(vertices, dtype=np.int64).reshape(-1, 3)
    if len(pts) == 0:
        return ()
    out: dict[Point, None] = {tuple(int(c) for c in pts[0]): None}
    for a, b in zip(pts[:-1], pts[1:], strict=True):
        d = b - a
        n = int(np.abs(d).max())
        if n == 0:
            continue
        t = np.arange(1, n + 1)[:, None]
        step = a + np.sign(d) * ((np.abs(d) * t * 2 + n) // (2 * n))  # exact rounding
        out.update(dict.fromkeys(tuple(int(c) for c in p) for p in step))
    return tuple(out)


# one step of the interaction loop ---------------------------------------------------------------
class OfficialLoopFailure(ValueError):
    """The challenge's loop fails at this step (an error region is empty): it scores the step
    0 and, since nothing changes, every later step of the case too."""


@dataclass(frozen=True)
class ScribbleStep:
    """The scribbles after one correction: all so far, and what this step added."""

    scribbles: Clicks
    added: Literal["tumor", "background"] | None
    stroke: Scribble | None
    tumor_size: int  # size of the stroke drawn in the under-segmentation (0: none)
    background_size: int  # size of the stroke drawn in the over-segmentation (0: none)

    def to_json(self) -> dict:
        return {"added": self.added, "tumor_size": self.tumor_size,
                "background_size": self.background_size,
                "stroke": None if self.stroke is None else self.stroke.to_json()}


def error_regions(truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(over, under)`` as the loop forms them: ``pred == 1 & truth == 0`` and
    ``pred == 0 & truth == 1``."""
    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.shape != pred.shape:
        raise ValueError(f"the prediction's shape {pred.shape} differs from the truth's "
                         f"{truth.shape}")
    return (pred == 1) & (truth == 0), (pred == 0) & (truth == 1)


def next_scribbles(truth: np.ndarray, pred: np.ndarray, scribbles: Clicks,
                   strategy: Strategy = "centerline", *, seed: int = SEED,
                   empty_region: EmptyRegion = "official") -> ScribbleStep:
    """One correction of the challenge's loop: a scribble in the over-segmentation
    (background) and one in the under-segmentation (tumour); the tumour one is added when it
    is not larger (``fp <= fn`` on the strokes' sizes), else the background one.

    An empty truth adds nothing (the loop simulates nothing for it). Where an error region is
    empty the challenge's loop fails (:class:`OfficialLoopFailure`, ``empty_region=
    "official"``); ``"fixed"`` adds the other region's stroke instead, and nothing when the
    prediction is exact."""
    _check_strategy(strategy)
    if empty_region not in EMPTY_REGIONS:
        raise ValueError(f"unknown empty_region {empty_region!r}; use one of {EMPTY_REGIONS}")
    over, under = error_regions(truth, pred)
    if not np.any(np.asarray(truth) != 0):
        return ScribbleStep(scribbles, None, None, 0, 0)
    bg = simulate_scribble(over, strategy, seed=seed)
    fg = simulate_scribble(under, strategy, seed=seed)
    if (bg is None or fg is None) and empty_region == "official":
        empty = " and ".join(n for n, s in (("over-segmentation", bg), ("under-segmentation", fg))
                             if s is None)
        raise OfficialLoopFailure(
            f"the {empty} region is empty: the challenge's loop fails at this step and scores "
            f"it 0 (use the fixed rule to go on)")
    fp = 0 if bg is None else bg.size
    fn = 0 if fg is None else fg.size
    if fg is not None and (bg is None or fp <= fn):
        return ScribbleStep(Clicks(scribbles.tumor + fg.points, scribbles.background), "tumor",
                            fg, fn, fp)
    if bg is not None:
        return ScribbleStep(Clicks(scribbles.tumor, scribbles.background + bg.points),
                            "background", bg, fn, fp)
    return ScribbleStep(scribbles, None, None, 0, 0)


__all__ = [
    "EMPTY_REGIONS", "SEED", "STRATEGIES", "EmptyRegion", "OfficialLoopFailure", "Scribble",
    "ScribbleStep", "Strategy", "as_loop_mask", "error_regions", "largest_slice_region",
    "next_scribbles", "scribble_on_slice", "simulate_scribble", "stroke", "stroke_boundary",
    "stroke_centerline",
    "stroke_random", "stroke_voxels",
]
