"""Official metrics, interactive evaluation, lesion reports, tables and plots."""

from petloop.metrics.official import MaskError, Metrics, auc, binarize, compute_metrics
from petloop.metrics.report import Lesion, LesionReport, lesion_report

__all__ = ["Lesion", "LesionReport", "MaskError", "Metrics", "auc", "binarize",
           "compute_metrics", "lesion_report"]
