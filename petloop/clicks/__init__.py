"""Clicks: the official simulation, heatmap encodings, schedules and error-driven clicks."""

from petloop.clicks.encode import (
    ENCODINGS,
    ClickOutsideError,
    edt_ball_heatmap,
    encode_clicks,
    gaussian_heatmap,
)
from petloop.clicks.error_driven import NextClicks, add_next, next_clicks
from petloop.clicks.schedules import NAMED as SCHEDULES
from petloop.clicks.schedules import ClickSchedule, ScheduleError
from petloop.clicks.simulate import simulate_clicks

__all__ = [
    "ENCODINGS", "SCHEDULES", "ClickOutsideError", "ClickSchedule", "NextClicks", "ScheduleError",
    "add_next", "edt_ball_heatmap", "encode_clicks", "gaussian_heatmap", "next_clicks",
    "simulate_clicks",
]
