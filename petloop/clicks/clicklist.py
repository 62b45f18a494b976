"""The ordered click list: what a reader has clicked, in order, with undo.

:class:`ClickList` is an immutable value. ``add``, ``remove`` (any click, by its number) and
``reset`` return a new list and remember the list they came from, so ``undo`` goes back one change
whatever it was: undoing an ``add`` removes that click, undoing a ``remove`` puts the click back
at its place, undoing a ``reset`` brings every click back. Every caller that changes clicks (the
session API, the viewer server, the CLI) goes through it; the prediction engine reads
:attr:`ClickList.clicks`, the per-kind form that click files and the networks use.

Clicking a voxel that was already clicked is accepted and counted (it is a click the reader
made; the heatmap of a repeated click is the same impulse).

A **stroke** (a scribble drawn in the viewer) is a run of clicks of one kind added in one change,
numbered from 1 in :attr:`Click.stroke` (0 for a single click): ``add_stroke`` adds it,
``remove_stroke`` takes all of it away, ``undo`` after ``add_stroke`` removes it whole. The
engine sees its voxels as clicks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal, get_args

from petloop.io.clicks import Clicks, Point

Kind = Literal["tumor", "background"]
KINDS: tuple[str, ...] = get_args(Kind)
MAX_HISTORY = 256  # changes that can be undone
MAX_STROKE_VOXELS = 4096  # voxels of one stroke
MAX_POINTS = 20_000  # clicks and stroke voxels of one list


class ClickError(ValueError):
    """A click change that cannot be made (unknown kind, bad point)."""


class NoSuchClick(ClickError, LookupError):
    """Removing a click the list does not have."""


@dataclass(frozen=True)
class Click:
    kind: Kind
    point: Point
    stroke: int = 0  # the stroke this voxel belongs to (from 1); 0 for a single click

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ClickError(f"a click is 'tumor' or 'background', got {self.kind!r}")
        if isinstance(self.stroke, bool) or not isinstance(self.stroke, int) or self.stroke < 0:
            raise ClickError(f"a stroke number is an integer >= 0, got {self.stroke!r}")
        try:
            pt = tuple(int(v) for v in self.point)
        except (TypeError, ValueError):
            raise ClickError(f"a click point needs 3 voxel indices [i, j, k], "
                             f"got {self.point!r}") from None
        if len(pt) != 3:
            raise ClickError(f"a click point needs 3 voxel indices [i, j, k], got {list(pt)}")
        object.__setattr__(self, "point", pt)

    def to_json(self) -> dict:
        return {"kind": self.kind, "point": list(self.point),
                **({"stroke": self.stroke} if self.stroke else {})}


@dataclass(frozen=True)
class ClickList:
    items: tuple[Click, ...] = ()
    history: tuple[tuple[Click, ...], ...] = field(default=(), repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Click]:
        return iter(self.items)

    def __getitem__(self, index: int) -> Click:
        return self.items[index]

    @property
    def clicks(self) -> Clicks:
        """Tumor and background points, each kind in click order."""
        return Clicks.from_points([c.point for c in self.items if c.kind == "tumor"],
                                  [c.point for c in self.items if c.kind == "background"])

    def _to(self, items: Iterable[Click]) -> ClickList:
        items = tuple(items)
        if len(items) > MAX_POINTS:
            raise ClickError(f"{len(items)} clicks and stroke voxels: at most {MAX_POINTS} in "
                             "one list")
        return ClickList(items, (*self.history, self.items)[-MAX_HISTORY:])

    def add(self, kind: str, point) -> ClickList:
        return self._to((*self.items, Click(kind, point)))  # type: ignore[arg-type]

    @property
    def strokes(self) -> tuple[int, ...]:
        """The stroke numbers in the list, in order."""
        return tuple(dict.fromkeys(c.stroke for c in self.items if c.stroke))

    def add_stroke(self, kind: str, points: Iterable) -> ClickList:
        """A stroke: its voxels as clicks of one kind, numbered after the last stroke."""
        number = max(self.strokes, default=0) + 1
        voxels = [Click(kind, p, number) for p in points]  # type: ignore[arg-type]
        if not voxels:
            raise ClickError("a stroke needs at least one voxel")
        if len(voxels) > MAX_STROKE_VOXELS:
            raise ClickError(f"a stroke of {len(voxels)} voxels: at most {MAX_STROKE_VOXELS}")
        return self._to((*self.items, *voxels))

    def remove_stroke(self, number: int) -> ClickList:
        if isinstance(number, bool) or not isinstance(number, int) or number < 1 \
                or number not in self.strokes:
            raise NoSuchClick(f"no stroke {number}: the strokes are {list(self.strokes)}")
        return self._to(c for c in self.items if c.stroke != number)

    def remove(self, index: int) -> ClickList:
        if isinstance(index, bool) or not isinstance(index, int) \
                or not 0 <= index < len(self.items):
            raise NoSuchClick(f"no click {index}: there are {len(self.items)} clicks "
                              "(numbered from 0 in the order they were added)")
        return self._to(self.items[:index] + self.items[index + 1:])

    def reset(self) -> ClickList:
        return self._to(()) if self.items else self

    def undo(self) -> ClickList:
        """The list before the last change (unchanged when there is nothing to undo)."""
        if not self.history:
            return self
        return ClickList(self.history[-1], self.history[:-1])

    def replace(self, clicks: Clicks | ClickList | Iterable[Click]) -> ClickList:
        """A change to another list of clicks altogether (undo comes back here)."""
        other = ClickList.of(clicks)
        return self if other.items == self.items else self._to(other.items)

    @classmethod
    def of(cls, clicks: Clicks | ClickList | Iterable[Click] | None) -> ClickList:
        """A list without history from click-file clicks (tumor and background interleaved,
        tumor first: the order the official simulation gives them), a list, or clicks."""
        if clicks is None:
            return cls()
        if isinstance(clicks, ClickList):
            return cls(clicks.items)
        if isinstance(clicks, Clicks):
            items = []
            for n in range(max(len(clicks.tumor), len(clicks.background))):
                items += [Click("tumor", p) for p in clicks.tumor[n:n + 1]]
                items += [Click("background", p) for p in clicks.background[n:n + 1]]
            return cls(tuple(items))
        return cls(tuple(c if isinstance(c, Click) else Click(*c) for c in clicks))

    def to_json(self) -> list[dict]:
        return [c.to_json() for c in self.items]


__all__ = ["KINDS", "MAX_POINTS", "MAX_STROKE_VOXELS", "Click", "ClickError", "ClickList", "Kind",
           "NoSuchClick"]
