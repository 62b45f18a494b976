from __future__ import annotations

import math

import numpy as np
import pytest
from official_metrics_reference import slow_official
from scipy import integrate

from petloop.metrics.official import MaskError, auc, binarize, compute_metrics, official_voxel_ml


def blobs(rng, shape, n, p=0.5):
    m = np.zeros(shape, bool)
    for _ in range(n):
        c = [rng.integers(0, s) for s in shape]
        r = rng.integers(1, 4, size=3)
        sl = tuple(slice(max(ci - ri, 0), ci + ri) for ci, ri in zip(c, r, strict=True))
        m[sl] = True
    return m | (rng.random(shape) < p * 0.002)


@pytest.mark.parametrize("seed", range(10))
def test_equal_to_the_direct_definition(seed):
    rng = np.random.default_rng(seed)
    shape = (30, 26, 22)
    gt = blobs(rng, shape, rng.integers(0, 8))
    pred = blobs(rng, shape, rng.integers(0, 8)) | (gt & (rng.random(shape) < 0.7))
    spacing = (2.0364, 2.0364, 3.0)
    m = compute_metrics(gt, pred, spacing)
    d, fp, fn = slow_official(gt, pred, spacing)
    assert (math.isnan(m.dice) and math.isnan(d)) or m.dice == d
    assert m.fpv == fp
    assert (math.isnan(m.fnv) and math.isnan(fn)) or m.fnv == fn


def test_empty_masks():
    z = np.zeros((5, 5, 5), bool)
    one = z.copy()
    one[2, 2, 2] = True
    m = compute_metrics(z, z, (1, 1, 1))
    assert math.isnan(m.dice) and math.isnan(m.fnv) and m.fpv == 0
    m = compute_metrics(z, one, (1, 1, 1))
    assert math.isnan(m.dice) and m.fpv == pytest.approx(0.001)
    m = compute_metrics(one, z, (2, 2, 2))
    assert m.dice == 0 and m.fpv == 0 and m.fnv == pytest.approx(0.008)


def test_18_connectivity_splits_corner_touching_voxels():
    gt = np.zeros((6, 6, 6), bool)
    gt[1, 1, 1] = True
    pred = np.zeros((6, 6, 6), bool)
    pred[1, 1, 1] = True
    pred[2, 2, 2] = True  # touches only by a corner: a separate component at 18-connectivity
    pred[3, 3, 2] = True  # edge neighbour of (2, 2, 2): joins it
    m = compute_metrics(gt, pred, (1, 1, 1))
    assert m.fpv == pytest.approx(0.002)


def test_voxel_volume_is_the_float32_header_product():
    spacing = (2.0364, 2.0364, 3.0)
    v = official_voxel_ml(spacing)
    assert v.dtype == np.float32
    assert v == np.float32(np.float32(2.0364) * np.float32(2.0364) * np.float32(3.0) / 1000)


def test_auc_trapezoid_unit_spacing():
    vals = np.linspace(0.5, 0.9, 11)
    assert auc(vals) == pytest.approx(integrate.cumulative_trapezoid(vals, np.arange(11))[-1])
    assert auc(np.ones(11)) == 10.0
    assert math.isnan(auc([1.0, math.nan, 1.0]))


def test_binarize():
    a = np.array([[[0, 1, 2]]], np.uint8)
    with pytest.raises(MaskError, match="is not binary: it holds 2 besides 0 and 1"):
        binarize(a, name="mask x.nii.gz")
    assert binarize(a, label=2).tolist() == [[[False, False, True]]]
    assert binarize(np.array([[[0.0, 1.0]]])).tolist() == [[[False, True]]]


def test_shape_mismatch():
    with pytest.raises(MaskError, match="differs from prediction shape"):
        compute_metrics(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)), (1, 1, 1))
