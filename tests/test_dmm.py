"""autoPET V's detection-matching metric against a slow, obvious reference and hand-made cases."""

from __future__ import annotations

import math

import cc3d
import numpy as np
import pytest

from petloop.metrics.dmm import aggregate_f1, dmm, paired_box


def reference(pred, truth, spacing):
    """Every true lesion against every predicted lesion, one pair at a time, on the whole
    volume (the crop changes no lesion, so it is left out here)."""
    g, n_gt = cc3d.connected_components(truth != 0, connectivity=18, return_N=True)
    p, n_pred = cc3d.connected_components(pred != 0, connectivity=18, return_N=True)
    matched_gt, matched_pred, touched_gt, touched_pred = set(), set(), set(), set()
    for i in range(1, n_gt + 1):
        for j in range(1, n_pred + 1):
            a, b = g == i, p == j
            inter = int((a & b).sum())
            if inter == 0:
                continue
            touched_gt.add(i)
            touched_pred.add(j)
            if inter / int((a | b).sum()) >= 0.1:
                matched_gt.add(i)
                matched_pred.add(j)
    tp = len(matched_gt)
    fp, fn = n_pred - len(matched_pred), n_gt - tp
    f1 = math.nan if tp + fn == 0 else (0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    ml = float(np.prod(spacing)) / 1000
    fpv = sum(int((p == j).sum()) for j in range(1, n_pred + 1) if j not in touched_pred) * ml
    fnv = (sum(int((g == i).sum()) for i in range(1, n_gt + 1) if i not in touched_gt) * ml
           if n_gt else math.nan)
    dsc = math.nan if truth.sum() == 0 else 2 * (truth & pred).sum() / (truth.sum() + pred.sum())
    return dict(tp=tp, fp=fp, fn=fn, f1=f1, fpv=fpv, fnv=fnv, dsc=dsc)


def _same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


def test_dmm_against_the_slow_reference():
    rng = np.random.default_rng(0)
    for n in range(60):
        shape = tuple(int(v) for v in rng.integers(6, 24, 3))
        truth = rng.random(shape) < rng.uniform(0, 0.08)
        pred = rng.random(shape) < rng.uniform(0, 0.08)
        if n % 3 == 0:  # predictions near the truth: overlaps of every size
            pred = truth ^ (rng.random(shape) < 0.04)
        spacing = tuple(float(v) for v in rng.uniform(0.5, 4, 3))
        got = dmm(pred.astype(np.uint8), truth.astype(np.uint8), spacing)
        want = reference(pred, truth, spacing)
        for key, value in want.items():
            assert _same(getattr(got, key), value), (n, key, getattr(got, key), value)


def test_hand_made_cases():
    truth = np.zeros((40, 40, 5), np.uint8)
    truth[5:15, 5:15, 1:4] = 1  # one lesion, 300 voxels
    two = np.zeros_like(truth)
    two[5:15, 5:9, 1:4] = 1  # two predictions, each IoU > 0.1 with it
    two[5:15, 11:15, 1:4] = 1
    s = dmm(two, truth, (1, 1, 1))
    assert (s.tp, s.fp, s.fn, s.f1) == (1, 0, 0, 1.0)  # many-to-one is not punished
    touch = np.zeros_like(truth)
    touch[14:25, 14:25, 1:4] = 1  # shares 3 voxels: IoU far below 0.1
    s = dmm(touch, truth, (1, 1, 1))
    assert (s.tp, s.fp, s.fn, s.f1) == (0, 1, 1, 0.0)
    assert s.fpv == 0 and s.fnv == 0  # touching lesions are no false volume
    s = dmm(touch, np.zeros_like(truth), (2, 2, 2))  # empty truth
    assert math.isnan(s.f1) and math.isnan(s.dsc) and math.isnan(s.fnv)
    assert s.fp == 1 and s.fpv == pytest.approx(363 * 8 / 1000)
    s = dmm(np.zeros_like(truth), np.zeros_like(truth), (1, 1, 1))
    assert (s.tp, s.fp, s.fn) == (0, 0, 0) and math.isnan(s.f1) and s.fpv == 0
    assert s.to_json()["f1"] is None
    labelled = truth.copy()
    labelled[20:22, 20:22, 1:3] = 2  # a truth with values above 1 is taken as labelled
    assert dmm(truth, labelled).gt_lesions == 2
    assert aggregate_f1([dmm(two, truth), dmm(touch, truth)]) == pytest.approx(2 / 4)
    # the crop: the union's box, 2 voxels wider, clamped
    box = paired_box(two, truth)
    assert box == (slice(3, 17), slice(3, 17), slice(0, 6))
    with pytest.raises(ValueError, match="differs"):
        dmm(truth[:-1], truth)
