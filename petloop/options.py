"""The option sets petloop's functions and commands take, as ``Literal`` types with their values.

Light on purpose (no numpy, no torch): the command line checks options against these before it
loads anything heavy, and the modules that take them annotate their parameters with the types.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

#: how the networks cover a volume: nnU-Net's sliding tiles, or one pass over the whole of it
Window = Literal["sliding", "whole"]
#: what the networks see: the whole image, or the CT's body box (petloop.inference.body)
Crop = Literal["none", "body"]
#: where an interactive run's clicks come from: the challenge's simulation, or the errors
ClickMode = Literal["official", "error-driven"]
#: network arithmetic on a CPU (auto: bf16 where the CPU has bfloat16 instructions)
Precision = Literal["auto", "fp32", "bf16"]
#: how a time budget chooses the mirrored passes: ``tiles`` (petloop's: each next pass while the
#: tiles it must compute still fit) or ``birth`` (the published BIRTH code's rule, order and
#: logit average; petloop.inference.engine)
BudgetMode = Literal["tiles", "birth"]

WINDOWS: tuple[str, ...] = get_args(Window)
CROPS: tuple[str, ...] = get_args(Crop)
CLICK_MODES: tuple[str, ...] = get_args(ClickMode)
Interaction = Literal["clicks", "scribbles"]  # what a step's guidance is, for routing
INTERACTIONS: tuple[str, ...] = get_args(Interaction)
#: the interactive protocols: autoPET IV's click steps, autoPET V's scribble loop
Protocol = Literal["autopet4", "autopet5"]
PROTOCOLS: tuple[str, ...] = get_args(Protocol)
#: autoPET V's loop where an error region is empty: fail as the challenge's does, or go on
EmptyRegion = Literal["official", "fixed"]
EMPTY_REGIONS: tuple[str, ...] = get_args(EmptyRegion)
PRECISIONS: tuple[str, ...] = get_args(Precision)
BUDGET_MODES: tuple[str, ...] = get_args(BudgetMode)

MAX_MIRRORS = 7


def check_mirrors_and_budget(mirrors: int | None, budget: float | None) -> None:
    """A number of mirrored passes (0 to 7) and a time budget (seconds, 0 or more), each
    optional; ValueError naming the one that is not."""
    if mirrors is not None and (isinstance(mirrors, bool) or not isinstance(mirrors, int)
                                or not 0 <= mirrors <= MAX_MIRRORS):
        raise ValueError(f"mirrors must be a whole number from 0 to {MAX_MIRRORS}, "
                         f"got {mirrors!r}")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                               or not math.isfinite(budget) or budget < 0):
        raise ValueError(f"budget must be a number of seconds (0 or more), got {budget!r}")


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How a command runs a model set's networks; an option left None is the model set's own
    (its manifest's ``inference``). Checked when made, before anything heavy loads."""

    device: str = "cpu"
    precision: Precision = "auto"
    window: Window | None = None
    mirrors: int | None = None
    budget: float | None = None  # seconds per step for test-time mirroring
    budget_mode: BudgetMode | None = None
    trust_suv: bool = False  # take a PET as SUV even where it does not look like SUV

    def __post_init__(self):
        for name, value, allowed in (("precision", self.precision, PRECISIONS),
                                     ("window", self.window, WINDOWS),
                                     ("budget_mode", self.budget_mode, BUDGET_MODES)):
            if value is not None and value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; use one of {', '.join(allowed)}")
        check_mirrors_and_budget(self.mirrors, self.budget)


__all__ = ["BUDGET_MODES", "CLICK_MODES", "CROPS", "PRECISIONS", "WINDOWS", "BudgetMode",
           "ClickMode", "Crop", "MAX_MIRRORS", "Precision", "RunOptions", "Window",
           "check_mirrors_and_budget"]
