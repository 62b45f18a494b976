"""A direct statement of the official metric definitions (``evaluation_metrics.py``): a
full-volume ``np.isin`` for every component, on float arrays, as the official script does."""

from __future__ import annotations

import math

import cc3d
import numpy as np


def slow_official(gt, pred, spacing):
    """Direct statement of the official definitions: a full-volume isin per component."""
    vox = np.float32(np.float32(spacing[0]) * np.float32(spacing[1]) * np.float32(spacing[2])
                     / 1000)
    gt = gt.astype(float)
    pred = pred.astype(float)
    if gt.sum() == 0:
        dice = math.nan
        fn = math.nan
    else:
        dice = 2 * (gt * pred).sum() / (gt.sum() + pred.sum())
        cc = cc3d.connected_components(gt.astype(int), connectivity=18)
        fn = 0
        for idx in range(1, cc.max() + 1):
            comp = np.isin(cc, idx)
            if (comp * pred).sum() == 0:
                fn += comp.sum()
        fn = fn * vox
    if pred.sum() == 0:
        fp = 0
    else:
        cc = cc3d.connected_components(pred.astype(int), connectivity=18)
        fp = 0
        for idx in range(1, cc.max() + 1):
            comp = np.isin(cc, idx)
            if (comp * gt).sum() == 0:
                fp += comp.sum()
    fp = fp * vox
    return float(dice), float(fp), float(fn)
