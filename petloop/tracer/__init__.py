"""Tracer classification (FDG or PSMA) from PET maximum intensity projections."""

from petloop.tracer.classifier import (
    TRACERS,
    MipClassifier,
    TracerClassifier,
    TracerError,
    TracerPrediction,
    resolve_tracer,
)
from petloop.tracer.mip import mips, orientation_codes, raw_mips

__all__ = ["TRACERS", "MipClassifier", "TracerClassifier", "TracerError", "TracerPrediction",
           "mips", "orientation_codes", "raw_mips", "resolve_tracer"]
