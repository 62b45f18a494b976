from __future__ import annotations

import numpy as np

from petloop.clicks.error_driven import add_next, next_clicks
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
    assert nxt.tumor == (24, 24, 24) and nxt.tumor_source == "false_negative"
    assert nxt.background == (5, 33, 33) and nxt.background_source == "false_positive"


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
