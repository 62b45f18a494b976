"""Volumes with geometry, dataset layouts and click files."""

from petloop.io.clicks import ClickFileError, Clicks, read_clicks, write_clicks
from petloop.io.layouts import Case, CaseFiles, LayoutError, find_cases, iter_cases, write_case
from petloop.io.volume import Volume, VolumeError, read_volume, resample_to, write_volume

__all__ = [
    "Case", "CaseFiles", "ClickFileError", "Clicks", "LayoutError", "Volume", "VolumeError",
    "find_cases", "iter_cases", "read_clicks", "read_volume", "resample_to", "write_case",
    "write_clicks", "write_volume",
]
