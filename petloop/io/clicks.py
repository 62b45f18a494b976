"""Click files: the two JSON forms used by the autoPET IV challenge.

- simple: ``{"tumor": [[i, j, k], ...], "background": [[i, j, k], ...]}``
- grand-challenge (``gc``): ``{"version": {"major": 1, "minor": 0}, "type": "Multiple points",
  "points": [{"point": [i, j, k], "name": "tumor" | "background"}, ...]}``

Points are integer voxel indices of the PET image in ``(i, j, k)`` order (the order of
``Volume.array``, see :mod:`petloop.io.volume`). The order of the points is the order of the
clicks. An empty file, ``{}`` or a file without points means zero clicks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from petloop.io.atomic import write_json_atomic
from petloop.io.jsonfile import read_json

POINT_NAMES = ("tumor", "background")
FORMS = ("simple", "gc")

Point = tuple[int, int, int]
MAX_FILE_BYTES = 64 * 2**20  # a click file holds a few dozen points; 64 MiB is far beyond


class ClickFileError(ValueError):
    """A click file is malformed; the message names the file and the offending point."""


def _as_point(value: object, where: str) -> Point:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ClickFileError(f"{where}: a point needs 3 coordinates (i, j, k), got {value!r}")
    out = []
    for c in value:
        if isinstance(c, bool) or not isinstance(c, (int, float)):
            raise ClickFileError(f"{where}: coordinates must be integers, got {value!r}")
        if isinstance(c, float):
            if not math.isfinite(c) or not c.is_integer():
                raise ClickFileError(f"{where}: coordinates must be integers, got {value!r}")
            c = int(c)
        out.append(int(c))
    return (out[0], out[1], out[2])


@dataclass(frozen=True)
class Clicks:
    """Ordered tumor (foreground) and background clicks, each an ``(i, j, k)`` voxel index."""

    tumor: tuple[Point, ...] = ()
    background: tuple[Point, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "tumor", tuple(_as_point(p, "tumor") for p in self.tumor))
        object.__setattr__(
            self, "background", tuple(_as_point(p, "background") for p in self.background)
        )

    def __len__(self) -> int:
        return len(self.tumor) + len(self.background)

    def step(self, k: int) -> Clicks:
        """The clicks seen at interactive step ``k``: the first k tumor and first k background."""
        if k < 0:
            raise ValueError(f"step must be >= 0, got {k}")
        return Clicks(self.tumor[:k], self.background[:k])

    def check_inside(self, shape: Sequence[int], source: str = "clicks") -> None:
        """Raise :class:`ClickFileError` for the first point outside an image of ``shape``."""
        for name in POINT_NAMES:
            for n, p in enumerate(getattr(self, name)):
                if any(c < 0 or c >= s for c, s in zip(p, shape, strict=True)):
                    raise ClickFileError(
                        f"{source}: {name} point {n} {list(p)} lies outside the image of shape "
                        f"{list(shape)} (i, j, k)"
                    )

    # forms --------------------------------------------------------------------------------------
    def to_simple(self) -> dict:
        return {"tumor": [list(p) for p in self.tumor],
                "background": [list(p) for p in self.background]}

    def to_gc(self) -> dict:
        """Grand-challenge form; tumor points first, then background, each in click order."""
        points = [{"point": list(p), "name": "tumor"} for p in self.tumor]
        points += [{"point": list(p), "name": "background"} for p in self.background]
        return {"version": {"major": 1, "minor": 0}, "type": "Multiple points", "points": points}

    @classmethod
    def from_json(cls, obj: object, source: str = "clicks") -> Clicks:
        """Parse either JSON form (already decoded); errors name ``source`` and the point."""
        if obj is None:
            return cls()
        if not isinstance(obj, dict):
            raise ClickFileError(f"{source}: expected a JSON object, got {type(obj).__name__}")
        if "points" in obj:
            return cls._from_gc(obj, source)
        unknown = sorted(set(obj) - set(POINT_NAMES))
        if unknown:
            raise ClickFileError(
                f"{source}: unknown point name(s) {unknown}; expected 'tumor' and 'background'"
            )
        lists: dict[str, list[Point]] = {}
        for name in POINT_NAMES:
            raw = obj.get(name) or []
            if not isinstance(raw, list):
                raise ClickFileError(f"{source}: '{name}' must be a list of [i, j, k] points")
            lists[name] = [_as_point(p, f"{source}: {name} point {n}") for n, p in enumerate(raw)]
        return cls(tuple(lists["tumor"]), tuple(lists["background"]))

    @classmethod
    def _from_gc(cls, obj: dict, source: str) -> Clicks:
        points = obj.get("points") or []
        if not isinstance(points, list):
            raise ClickFileError(f"{source}: 'points' must be a list")
        lists: dict[str, list[Point]] = {name: [] for name in POINT_NAMES}
        for n, entry in enumerate(points):
            where = f"{source}: point {n}"
            if not isinstance(entry, dict) or "point" not in entry:
                raise ClickFileError(f"{where}: expected {{'point': [i, j, k], 'name': ...}}")
            name = entry.get("name")
            if name not in POINT_NAMES:
                raise ClickFileError(
                    f"{where}: unknown point name {name!r}; expected 'tumor' or 'background'"
                )
            lists[name].append(_as_point(entry["point"], f"{where} ({name})"))
        return cls(tuple(lists["tumor"]), tuple(lists["background"]))

    @classmethod
    def from_points(cls, tumor: Iterable = (), background: Iterable = ()) -> Clicks:
        """Build from any sequences of 3 integers (numpy arrays included)."""
        return cls(tuple(tuple(int(c) for c in p) for p in tumor),
                   tuple(tuple(int(c) for c in p) for p in background))


def read_clicks(path: str | Path, shape: Sequence[int] | None = None) -> Clicks:
    """Read a click file in either form; with ``shape``, points outside the image are errors."""
    path = Path(path)
    obj = read_json(path, ClickFileError, what="click file", max_bytes=MAX_FILE_BYTES,
                    if_empty=None)
    clicks = Clicks() if obj is None else Clicks.from_json(obj, source=str(path))
    if shape is not None:
        clicks.check_inside(shape, source=str(path))
    return clicks


def write_clicks(clicks: Clicks, path: str | Path, form: str = "simple", *,
                 indent: int | None = None) -> Path:
    """Write atomically in the ``simple`` or grand-challenge (``gc``) form (``indent`` as
    ``json.dumps``: autoPET V's loop saves its scribble files with 4)."""
    if form not in FORMS:
        raise ValueError(f"unknown click file form {form!r}; use one of {FORMS}")
    obj = clicks.to_simple() if form == "simple" else clicks.to_gc()
    return write_json_atomic(path, obj, indent=indent)
