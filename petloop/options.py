"""The option sets petloop's functions and commands take, as ``Literal`` types with their values.

Light on purpose (no numpy, no torch): the command line checks options against these before it
loads anything heavy, and the modules that take them annotate their parameters with the types.
"""

from __future__ import annotations

from typing import Literal, get_args

#: how the networks cover a volume: nnU-Net's sliding tiles, or one pass over the whole of it
Window = Literal["sliding", "whole"]
#: what the networks see: the whole image, or the CT's body box (petloop.inference.body)
Crop = Literal["none", "body"]
#: where an interactive run's clicks come from: the challenge's simulation, or the errors
ClickMode = Literal["official", "error-driven"]
#: network arithmetic on a CPU (auto: bf16 where the CPU has bfloat16 instructions)
Precision = Literal["auto", "fp32", "bf16"]

WINDOWS: tuple[str, ...] = get_args(Window)
CROPS: tuple[str, ...] = get_args(Crop)
CLICK_MODES: tuple[str, ...] = get_args(ClickMode)
PRECISIONS: tuple[str, ...] = get_args(Precision)

__all__ = ["CLICK_MODES", "CROPS", "PRECISIONS", "WINDOWS", "ClickMode", "Crop", "Precision",
           "Window"]
