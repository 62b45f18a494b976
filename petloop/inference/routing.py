"""Routing: which model of a set answers a step, from the tracer's routes and the click counts.

A tracer's :class:`Routing` is an ordered tuple of :class:`Route` s; the first whose conditions
admit the step's clicks answers: ``max_background_clicks`` (at most that many background
clicks), ``min_foreground_clicks`` (at least that many lesion clicks) and ``interaction``
(``clicks`` or ``scribbles``: what the step's guidance is; a scribble's voxels count as clicks),
each optional. :meth:`Routing.model_for` is the one place that refuses a step no route admits.

BIRTH's FDG rule is a routing of the *hand-over* form: its first model answers below a number of
background clicks (5) and the next routes from there on. Calibration moves that hand-over
(:meth:`Routing.with_handover`) and compares the results.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from petloop.options import INTERACTIONS, Interaction


class NoRoute(ValueError):
    """No route of a routing admits a step's clicks."""


@dataclass(frozen=True)
class Route:
    model: str
    max_background_clicks: int | None = None
    min_foreground_clicks: int | None = None
    interaction: str | None = None  # None: any

    def __post_init__(self):
        if self.interaction is not None and self.interaction not in INTERACTIONS:
            raise ValueError(f"a route's interaction is one of {INTERACTIONS}, got "
                             f"{self.interaction!r}")

    def admits(self, n_background: int, n_foreground: int,
               interaction: Interaction = "clicks") -> bool:
        return ((self.interaction is None or self.interaction == interaction)
                and (self.max_background_clicks is None
                     or n_background <= self.max_background_clicks)
                and (self.min_foreground_clicks is None
                     or n_foreground >= self.min_foreground_clicks))

    def to_json(self) -> dict:
        return {"model": self.model,
                **{k: v for k, v in (("max_background_clicks", self.max_background_clicks),
                                     ("min_foreground_clicks", self.min_foreground_clicks),
                                     ("interaction", self.interaction))
                   if v is not None}}


@dataclass(frozen=True)
class Routing:
    """One tracer's routes, tried in order."""

    routes: tuple[Route, ...]

    def __post_init__(self):
        if not self.routes or not all(isinstance(r, Route) for r in self.routes):
            raise ValueError(f"a routing is a non-empty tuple of routes, got {self.routes!r}")
        object.__setattr__(self, "routes", tuple(self.routes))

    @classmethod
    def of(cls, *routes: Route) -> Routing:
        return cls(tuple(routes))

    @classmethod
    def single(cls, model: str) -> Routing:
        """One model answering every step."""
        return cls((Route(model),))

    @property
    def models(self) -> tuple[str, ...]:
        """The models the routes name, each once, in route order."""
        return tuple(dict.fromkeys(r.model for r in self.routes))

    def first_admitting(self, n_background: int, n_foreground: int,
                        interaction: Interaction = "clicks") -> str | None:
        """The model of the first route that admits the step, or None."""
        return next((r.model for r in self.routes
                     if r.admits(n_background, n_foreground, interaction)), None)

    def model_for(self, n_background: int, n_foreground: int, where: str = "", *,
                  interaction: Interaction = "clicks") -> str:
        """The model of the first route that admits the step; :class:`NoRoute` (``where``
        names the routing in the message) when none does."""
        model = self.first_admitting(n_background, n_foreground, interaction)
        if model is None:
            what = "lesion clicks" if interaction == "clicks" else "lesion scribble voxels"
            raise NoRoute(f"{where}no route admits {n_background} background and "
                          f"{n_foreground} {what}")
        return model

    @property
    def clicks(self) -> Routing:
        """The routes that answer clicks (all of them where none is for scribbles only)."""
        rest = self._split()[1]
        return Routing(rest) if rest and len(rest) < len(self.routes) else self

    def _split(self) -> tuple[tuple[Route, ...], tuple[Route, ...]]:
        """(the routes for scribbles only, the others)."""
        only = tuple(r for r in self.routes if r.interaction == "scribbles")
        return only, tuple(r for r in self.routes if r.interaction != "scribbles")

    @property
    def handover(self) -> int | None:
        """Where a routing of the BIRTH form hands over: its first model (of the routes that
        answer clicks) answers below this many background clicks and the next routes from
        there on (None: not of that form)."""
        clicks = self._split()[1]
        if len(clicks) < 2 or clicks[0].max_background_clicks is None \
                or len({r.model for r in clicks}) < 2:
            return None
        return clicks[0].max_background_clicks + 1

    def with_handover(self, at: int) -> Routing:
        """The same routing handing over at ``at`` background clicks (0: the first route goes,
        so the next routes answer from the first step); scribble routes stay as they are."""
        if self.handover is None:
            raise ValueError("the routing has no first model answering below a number of "
                             "background clicks to move")
        scribbles, clicks = self._split()
        first = () if at == 0 else (replace(clicks[0], max_background_clicks=at - 1),)
        return Routing(scribbles + first + clicks[1:])

    def to_json(self) -> list[dict]:
        return [r.to_json() for r in self.routes]


ROUTINGS = ("birth", "birth-fg")


def birth_routing(fdg_stochastic: str, fdg_full: str, psma: str, variant: str = "birth") -> dict:
    """The published rule as manifest routing; ``birth-fg`` also keeps the stochastic model
    while no lesion has been clicked (the full-guidance model learned with lesion clicks and
    on negative controls, which get background clicks only, finds uptake to mark)."""
    if variant not in ROUTINGS:
        raise ValueError(f"unknown routing {variant!r}; use one of {', '.join(ROUTINGS)}")
    below_five = {"model": fdg_stochastic, "max_background_clicks": 4}
    if variant == "birth":
        fdg = [below_five, {"model": fdg_full}]
    else:
        fdg = [below_five, {"model": fdg_full, "min_foreground_clicks": 1},
               {"model": fdg_stochastic}]
    return {"fdg": fdg, "psma": [{"model": psma}]}


__all__ = ["INTERACTIONS", "ROUTINGS", "Interaction", "NoRoute", "Route", "Routing",
           "birth_routing"]
