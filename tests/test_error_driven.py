from __future__ import annotations

import numpy as np
from scipy import ndimage

from petloop.clicks.error_driven import MARGIN, add_next, next_clicks
from petloop.io.clicks import Clicks


def box(shape, lo, hi):
    m = np.zeros(shape, bool)
    m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return m


def test_clicks_go_to_the_deepest_voxel_of_the_largest_errors():
    shape = (40, 40, 40)
    gt = box(shape, (2, 2, 2), (7, 7, 7)) | box(shape, (20, 20, 20), (29, 29, 29))
    pred = box(shape, (2, 2, 2), (7, 7, 7)) | box(shape, (30, 2, 2), (33, 5, 5)) | box(
        shape, (2, 30, 30), (9, 37, 37))
    nxt = next_clicks(gt, pred, Clicks())
    assert nxt.tumor == (24, 24, 24) and nxt.tumor_source == "missed_lesion"
    assert nxt.background == (5, 33, 33) and nxt.background_source == "spurious"


def test_no_error_falls_back_to_unused_official_clicks():
    shape = (20, 20, 20)
    gt = box(shape, (5, 5, 5), (10, 10, 10))
    official = Clicks(((7, 7, 7), (6, 6, 6)), ((0, 0, 0), (1, 1, 1)))
    nxt = next_clicks(gt, gt.copy(), Clicks(((7, 7, 7),), ((0, 0, 0),)), official)
    assert nxt.tumor == (6, 6, 6) and nxt.tumor_source == "official"
    assert nxt.background == (1, 1, 1) and nxt.background_source == "official"
    none = next_clicks(gt, gt.copy(), Clicks(), None)
    assert none.tumor is None and none.background is None and none.tumor_source == "none"


def test_a_voxel_is_not_clicked_twice_and_is_deterministic():
    shape = (20, 20, 20)
    gt = box(shape, (5, 5, 5), (10, 10, 10))
    pred = np.zeros(shape, bool)
    first = next_clicks(gt, pred, Clicks())
    assert first.tumor == (7, 7, 7)
    second = next_clicks(gt, pred, Clicks((first.tumor,), ()))
    assert second.tumor != first.tumor and gt[second.tumor]
    assert next_clicks(gt, pred, Clicks((first.tumor,), ())) == second


def test_add_next_appends_in_order():
    shape = (20, 20, 20)
    gt = box(shape, (5, 5, 5), (10, 10, 10))
    pred = box(shape, (12, 12, 12), (15, 15, 15))
    clicks = add_next(gt, pred, Clicks(((6, 6, 6),), ()))
    assert clicks.tumor == ((6, 6, 6), (7, 7, 7)) and clicks.background == ((13, 13, 13),)


def untouched_reference(mask, other):
    """Components of ``mask`` (26-connected) with no voxel in ``other``, one at a time."""
    lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    out = np.zeros(mask.shape, bool)
    for i in range(1, n + 1):
        comp = lab == i
        if not (comp & other).any():
            out |= comp
    return out


def test_a_missed_lesion_comes_before_the_edge_of_a_found_one():
    shape = (40, 40, 40)
    big = box(shape, (5, 5, 5), (25, 25, 25))
    small = box(shape, (32, 32, 32), (34, 34, 34))
    gt = big | small
    pred = box(shape, (7, 7, 7), (23, 23, 23))  # the big lesion less a 2-voxel shell
    nxt = next_clicks(gt, pred, Clicks())
    assert nxt.tumor_source == "missed_lesion" and small[nxt.tumor]
    # once the small one is found, the missed shell of the big one is next
    nxt = next_clicks(gt, pred | small, Clicks())
    assert nxt.tumor_source == "false_negative" and big[nxt.tumor] and not pred[nxt.tumor]


def test_background_clicks_keep_off_a_lesion_edge():
    shape = (40, 40, 40)
    gt = box(shape, (10, 10, 10), (20, 20, 20))
    official = Clicks((), ((0, 0, 0),))
    halo = ndimage.binary_dilation(gt, iterations=2)  # over-segmentation on the edge only
    nxt = next_clicks(gt, halo, Clicks(), official)
    assert nxt.background == (0, 0, 0) and nxt.background_source == "official"
    spill = halo | box(shape, (10, 10, 20), (20, 20, 32))  # reaches 12 voxels beyond the edge
    nxt = next_clicks(gt, spill, Clicks(), official)
    assert nxt.background_source == "false_positive" and spill[nxt.background]
    assert ndimage.distance_transform_edt(~gt)[nxt.background] > MARGIN


def test_clicks_land_in_the_errors_a_reader_sees_first():
    """Random masks against the rule written out with scipy's labelling."""
    for seed in range(12):
        rng = np.random.default_rng(seed)
        shape = (24, 20, 18)
        gt = ndimage.gaussian_filter(rng.random(shape), 1.2) > 0.56
        if seed % 3 == 0:  # other blobs, and half of the lesion voxels
            pred = ndimage.gaussian_filter(rng.random(shape), 1.2) > 0.56
            pred |= gt & (rng.random(shape) < 0.5)
        else:  # the lesions grown by 1 or 5 voxels, less some of them
            pred = ndimage.binary_dilation(gt, iterations=1 if seed % 3 == 1 else 5)
            pred &= ~(gt & (rng.random(shape) < 0.3))
        nxt = next_clicks(gt, pred, Clicks())
        missed = untouched_reference(gt, pred)
        spurious = untouched_reference(pred, gt)
        far = pred & ~gt & (ndimage.distance_transform_edt(~gt) > MARGIN)
        if missed.any():
            assert nxt.tumor_source == "missed_lesion" and missed[nxt.tumor]
        elif (gt & ~pred).any():
            assert nxt.tumor_source == "false_negative" and (gt & ~pred)[nxt.tumor]
        if spurious.any():
            assert nxt.background_source == "spurious" and spurious[nxt.background]
        elif far.any():
            assert nxt.background_source == "false_positive" and far[nxt.background]
        else:
            assert nxt.background is None and nxt.background_source == "none"
