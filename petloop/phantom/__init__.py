"""Synthetic whole-body PET/CT phantoms (CT, PET in SUV, lesion and organ labels)."""

from petloop.phantom.generate import (
    DEFAULT_SHAPE,
    DEFAULT_SPACING,
    PRESETS,
    PhantomCase,
    PhantomConfig,
    Preset,
    generate_case,
    phantom_case,
    write_phantoms,
)

__all__ = [
    "DEFAULT_SHAPE", "DEFAULT_SPACING", "PRESETS", "PhantomCase", "PhantomConfig",
    "Preset", "generate_case", "phantom_case", "write_phantoms",
]
