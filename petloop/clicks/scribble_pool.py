"""Scribbles for training: a pool of strokes per case, drawn from with a schedule.

autoPET V corrects a prediction with scribbles in its errors (:mod:`petloop.clicks.scribbles`).
A model learns to use them from strokes placed where those errors fall, without a model in the
loop: tumour strokes on lesions and on their rims (what an under-segmenting model misses),
background strokes on a shell around the lesions (the baseline's dilation by two voxels, what an
over-segmenting model adds) and on hot physiological uptake (PET above the 99.5th percentile
outside the lesions, where false positives appear).

The pool is made once per case, at dataset build, with the challenge's own strategies
(centerline, random and boundary, the latter two with several seeds) on each region's slice of
largest area, each region cropped to its box. For every training sample a
:class:`ScribbleDraw` is drawn (how many interactions, and which stroke each takes) and then
applied: the draw is a value that can be stored and replayed, the application a pure function.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cc3d
import numpy as np
from scipy import ndimage

from petloop.clicks.scribbles import STRATEGIES, largest_slice_region, scribble_on_slice
from petloop.io.clicks import Clicks, Point

SEEDS = (42, 7, 1234)  # for the random and boundary strokes (centerline has no draw)
MAX_LESIONS = 8  # the largest lesion components get strokes
MAX_HOT = 6  # the largest hot-uptake components get background strokes
HOT_PERCENTILE = 99.5
SHELL = 2  # voxels: the baseline's background shell (two dilations by a ball of radius 1)
KINDS = ("tumor", "background")


@dataclass(frozen=True)
class PoolStroke:
    points: tuple[Point, ...]
    region: str  # lesion, rim, shell or hot
    strategy: str

    def to_json(self) -> dict:
        return {"points": [list(p) for p in self.points], "region": self.region,
                "strategy": self.strategy}

    @classmethod
    def from_json(cls, obj: dict) -> PoolStroke:
        return cls(tuple(tuple(int(c) for c in p) for p in obj["points"]), str(obj["region"]),
                   str(obj["strategy"]))


@dataclass(frozen=True)
class ScribblePool:
    tumor: tuple[PoolStroke, ...] = ()
    background: tuple[PoolStroke, ...] = ()

    def to_json(self) -> dict:
        return {kind: [s.to_json() for s in getattr(self, kind)] for kind in KINDS}

    @classmethod
    def from_json(cls, obj: dict) -> ScribblePool:
        return cls(*(tuple(PoolStroke.from_json(s) for s in obj.get(kind, [])) for kind in KINDS))


def _boxes(labels: np.ndarray, ids: Sequence[int], margin: int) -> list[tuple[slice, ...]]:
    found = ndimage.find_objects(labels)
    out = []
    for i in ids:
        box = found[i - 1]
        out.append(tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n))
                         for s, n in zip(box, labels.shape, strict=True)))
    return out


def _largest(labels: np.ndarray, n: int, limit: int) -> list[int]:
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    order = np.argsort(-sizes, kind="stable")[:limit]
    return [int(i) + 1 for i in order if sizes[i] > 0]


def _strokes(region: np.ndarray, offset, name: str, seeds: Sequence[int]) -> list[PoolStroke]:
    found = largest_slice_region(region)  # once: every stroke is drawn on that slice
    if found is None:
        return []
    out, seen = [], set()
    for strategy in STRATEGIES:
        for seed in (seeds[:1] if strategy == "centerline" else seeds):
            s = scribble_on_slice(*found, strategy, seed=seed)  # type: ignore[arg-type]
            pts = tuple((i + offset[0], j + offset[1], k + offset[2]) for i, j, k in s.points)
            if pts not in seen:
                seen.add(pts)
                out.append(PoolStroke(pts, name, strategy))
    return out


def scribble_pool(label: np.ndarray, pet: np.ndarray | None = None, *,
                  seeds: Sequence[int] = SEEDS, max_lesions: int = MAX_LESIONS,
                  max_hot: int = MAX_HOT) -> ScribblePool:
    """The strokes of one case (arrays in ``(i, j, k)`` order; ``pet`` for hot uptake)."""
    lesion = np.asarray(label) != 0
    tumor: list[PoolStroke] = []
    background: list[PoolStroke] = []
    ball = ndimage.generate_binary_structure(3, 1)
    labels, n = cc3d.connected_components(lesion, connectivity=26, return_N=True)
    ids = _largest(labels, n, max_lesions)
    for i, box in zip(ids, _boxes(labels, ids, SHELL + 1), strict=True):
        comp = labels[box] == i
        offset = [s.start for s in box]
        tumor += _strokes(comp, offset, "lesion", seeds)
        rim = comp & ~ndimage.binary_erosion(comp, ball)
        if rim.any() and rim.sum() < comp.sum():
            tumor += _strokes(rim, offset, "rim", seeds)
        shell = ndimage.binary_dilation(comp, ball, iterations=SHELL) & ~lesion[box]
        background += _strokes(shell, offset, "shell", seeds)
    if pet is not None:
        pet = np.asarray(pet, dtype=np.float32)
        outside = pet[~lesion]
        if outside.size:
            hot = (pet > np.percentile(outside, HOT_PERCENTILE)) & ~lesion
            hot_labels, m = cc3d.connected_components(hot, connectivity=26, return_N=True)
            hot_ids = _largest(hot_labels, m, max_hot)
            for i, box in zip(hot_ids, _boxes(hot_labels, hot_ids, 1), strict=True):
                background += _strokes(hot_labels[box] == i, [s.start for s in box], "hot",
                                       seeds)
    return ScribblePool(tuple(tumor), tuple(background))


@dataclass(frozen=True)
class ScribbleDraw:
    """One sample's interactions: ``(kind, index into the pool's strokes of that kind)``."""

    picks: tuple[tuple[str, int], ...] = ()

    def to_json(self) -> list:
        return [list(p) for p in self.picks]


def draw_scribbles(pool: ScribblePool, n: int, rng: np.random.Generator) -> ScribbleDraw:
    """``n`` interactions, each a tumour or background stroke (even odds where both exist)."""
    kinds = [k for k in KINDS if getattr(pool, k)]
    picks = []
    for _ in range(n if kinds else 0):
        kind = kinds[int(rng.integers(len(kinds)))]
        picks.append((kind, int(rng.integers(len(getattr(pool, kind))))))
    return ScribbleDraw(tuple(picks))


def apply_draw(pool: ScribblePool, draw: ScribbleDraw) -> Clicks:
    """The drawn strokes' voxels as clicks (each stroke's voxels in order)."""
    out: dict[str, list[Point]] = {k: [] for k in KINDS}
    for kind, index in draw.picks:
        out[kind] += getattr(pool, kind)[index].points
    return Clicks(tuple(out["tumor"]), tuple(out["background"]))


__all__ = ["HOT_PERCENTILE", "MAX_HOT", "MAX_LESIONS", "SEEDS", "PoolStroke", "ScribbleDraw",
           "ScribblePool", "apply_draw", "draw_scribbles", "scribble_pool"]
