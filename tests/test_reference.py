"""The isocontour reference against a slow, obvious voxel-by-voxel version."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import ndimage

from petloop.io.volume import Volume
from petloop.metrics.official import MaskError
from petloop.metrics.reference import isocontour_reference, reference_metrics


def slow_isocontour(suv, label, fraction, margin):
    structure = np.zeros((3, 3, 3), dtype=bool)  # 18-connectivity: no corner neighbours
    for d in itertools.product((-1, 0, 1), repeat=3):
        structure[tuple(x + 1 for x in d)] = sum(map(abs, d)) <= 2
    lesions, n = ndimage.label(label, structure=structure)
    out = np.zeros(label.shape, dtype=bool)
    for i in range(1, n + 1):
        voxels = np.argwhere(lesions == i)
        level = fraction * suv[lesions == i].max()
        for v in itertools.product(*map(range, label.shape)):
            if suv[v] >= level and np.abs(voxels - v).sum(axis=1).min() <= margin:
                out[v] = True
    return out


def random_case(seed, shape=(10, 11, 12)):
    rng = np.random.default_rng(seed)
    suv = ndimage.gaussian_filter(rng.gamma(2.0, 1.0, shape), 1.0) * 3
    label = ndimage.gaussian_filter(rng.random(shape), 1.5) > 0.56
    return suv, label


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("fraction", "margin"), [(0.41, 2), (0.7, 0), (0.5, 1)])
def test_matches_the_slow_version(seed, fraction, margin):
    suv, label = random_case(seed)
    assert label.any()
    np.testing.assert_array_equal(isocontour_reference(suv, label, fraction, margin),
                                  slow_isocontour(suv, label, fraction, margin))


def test_each_lesion_has_its_own_level_and_hot_neighbours_far_away_stay_out():
    suv = np.full((20, 20, 20), 1.0)
    label = np.zeros(suv.shape, dtype=bool)
    suv[3:6, 3:6, 3:6] = 20.0  # hot lesion
    label[3:6, 3:6, 3:6] = True
    suv[12:15, 12:15, 12:15] = 2.0  # faint lesion: 41 % of 2 is below the background
    label[12:15, 12:15, 12:15] = True
    suv[3:6, 3:6, 12:18] = 30.0  # hot organ more than two voxels from either lesion
    ref = isocontour_reference(suv, label)
    assert ref[3:6, 3:6, 3:6].all() and ref[:8, :8, :8].sum() == 27
    assert not ref[3:6, 3:6, 12:18].any()
    faint = np.zeros_like(label)  # the faint lesion's level is below the background:
    faint[12:15, 12:15, 12:15] = True  # the contour is the lesion grown by two voxels
    assert ref[10:, 10:, 10:].sum() == ndimage.binary_dilation(faint, iterations=2).sum()


def test_empty_label_and_bad_input():
    suv, _ = random_case(0)
    assert not isocontour_reference(suv, np.zeros(suv.shape, bool)).any()
    with pytest.raises(MaskError, match="differs"):
        isocontour_reference(suv, np.zeros((2, 2, 2), bool))
    with pytest.raises(ValueError, match="fraction"):
        isocontour_reference(suv, suv > 1, fraction=1.5)


def test_reference_metrics_skip_negative_controls():
    suv, label = random_case(1)
    spacing = (2.0, 2.0, 3.0)

    def case(lab):
        return SimpleNamespace(load=lambda: SimpleNamespace(
            pet=Volume(suv, spacing), label=Volume(lab.astype(np.uint8), spacing)))

    score = reference_metrics([case(label), case(np.zeros_like(label))], "fdg")
    assert score.cases == 1
    ref = isocontour_reference(suv, label)
    inter = (ref & label).sum()
    assert math.isclose(score.dice, 2 * inter / (ref.sum() + label.sum()))
    assert score.fnv == 0.0  # the contour touches every lesion it is drawn around
    assert math.isnan(reference_metrics([case(np.zeros_like(label))], "fdg").dice)
