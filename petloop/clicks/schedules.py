"""Click schedules: how many clicks (k = 0..10) a training sample sees.

Stochastic click sampling draws, for each training sample, k from a probability vector over
0..10 and shows the network the first k tumour and first k background clicks, so that one model
works with no click and improves with every click.

Named schedules:

``full``      always 10 clicks (a full-guidance model, BIRTH V3).
``birth_v4``  the final BIRTH FDG schedule [0.10, 0.10, 0.10, 0.08, 0.04, 0.04, 0.04, 0.04, 0.08,
              0.08, 0.30] (SPEC section 7).
``birth_v1``  40 % k = 0, 20 % k = 1 (the paper); the remaining 40 % spread evenly over k = 2..10.
``birth_v2``  10 % k = 0, 30 % k = 10 (the paper); the remaining 60 % spread evenly over 1..9.
``uniform``   1/11 each.
``none``      always 0 clicks (an automatic model).
``autopet5``  1/6 each for k = 0..5: autoPET V's steps (k scribbles; a scribble model's
              training draws k interactions from it).

Any other vector of 11 non-negative numbers summing to 1 (within 1e-6) can be given, as a list
or as text ``"0.1,0.1,..."``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAX_CLICKS = 10
N_STEPS = MAX_CLICKS + 1

NAMED: dict[str, tuple[float, ...]] = {
    "full": tuple([0.0] * MAX_CLICKS + [1.0]),
    "none": tuple([1.0] + [0.0] * MAX_CLICKS),
    "birth_v4": (0.10, 0.10, 0.10, 0.08, 0.04, 0.04, 0.04, 0.04, 0.08, 0.08, 0.30),
    "birth_v1": tuple([0.40, 0.20] + [0.40 / 9] * 9),
    "birth_v2": tuple([0.10] + [0.60 / 9] * 9 + [0.30]),
    "uniform": tuple([1.0 / N_STEPS] * N_STEPS),
    "autopet5": tuple([1.0 / 6] * 6 + [0.0] * 5),
}


class ScheduleError(ValueError):
    """A click schedule is not a probability vector over k = 0..10."""


@dataclass(frozen=True)
class ClickSchedule:
    name: str
    probs: tuple[float, ...]

    def __post_init__(self) -> None:
        p = np.asarray(self.probs, dtype=float)
        if p.ndim != 1 or p.size != N_STEPS:
            raise ScheduleError(
                f"schedule {self.name!r}: needs {N_STEPS} probabilities (k = 0..{MAX_CLICKS}), "
                f"got {p.size}")
        if not np.all(np.isfinite(p)) or np.any(p < 0):
            raise ScheduleError(f"schedule {self.name!r}: probabilities must be finite and >= 0")
        if abs(p.sum() - 1.0) > 1e-6:
            raise ScheduleError(f"schedule {self.name!r}: probabilities sum to {p.sum():.8f}, "
                                "not 1")
        object.__setattr__(self, "probs", tuple(float(v) for v in p))

    @classmethod
    def get(cls, spec: str | Sequence[float] | ClickSchedule) -> ClickSchedule:
        """A named schedule, a vector, or a comma-separated vector."""
        if isinstance(spec, ClickSchedule):
            return spec
        if isinstance(spec, str):
            if spec in NAMED:
                return cls(spec, NAMED[spec])
            try:
                values = [float(v) for v in spec.replace(" ", "").split(",") if v]
            except ValueError as exc:
                raise ScheduleError(
                    f"unknown click schedule {spec!r}; use one of {sorted(NAMED)} or 11 "
                    "comma-separated probabilities") from exc
            return cls("custom", tuple(values))
        return cls("custom", tuple(float(v) for v in spec))

    def sample(self, rng: np.random.Generator, size: int | None = None):
        """Draw k (or an array of ``size`` k's)."""
        return rng.choice(N_STEPS, size=size, p=np.asarray(self.probs))

    @property
    def mean_clicks(self) -> float:
        return float(np.dot(np.arange(N_STEPS), self.probs))

    def to_json(self) -> dict:
        return {"name": self.name, "probs": list(self.probs)}
