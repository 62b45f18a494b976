"""Training scribbles: the pool's strokes lie where they should, draws replay, encodings."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TRUNK_TOP
from scipy import ndimage

from petloop.clicks.encode import encode_clicks
from petloop.clicks.scribble_pool import (
    ScribbleDraw,
    ScribblePool,
    apply_draw,
    draw_scribbles,
    scribble_pool,
)
from petloop.io.clicks import Clicks
from petloop.phantom import PhantomConfig, generate_case


@pytest.fixture(scope="module")
def case():
    cfg = PhantomConfig(seed=31, tracer="fdg", shape=(64, 56, 64), spacing=(4.0, 4.0, 6.0),
                        top_mm=TRUNK_TOP, negative_fraction=0.0, lesions=(3, 5))
    return generate_case(cfg, 0).case


def test_strokes_lie_on_their_regions(case):
    label = case.label.array != 0
    pool = scribble_pool(case.label.array, case.pet.array)
    assert pool.tumor and pool.background
    assert {s.region for s in pool.tumor} <= {"lesion", "rim"}
    assert {s.region for s in pool.background} == {"shell", "hot"}
    near = ndimage.binary_dilation(label, ndimage.generate_binary_structure(3, 1), iterations=2)
    hot = case.pet.array > np.percentile(case.pet.array[~label], 99.5)
    for s in pool.tumor:
        assert all(label[p] for p in s.points)
        assert len({p[2] for p in s.points}) == 1  # one axial slice, as the protocol draws
    for s in pool.background:
        assert not any(label[p] for p in s.points)
        where = near if s.region == "shell" else hot
        assert all(where[p] for p in s.points)
    assert {s.strategy for s in pool.tumor} == {"centerline", "random", "boundary"}


def test_a_pool_without_lesions_has_background_strokes_only(case):
    pool = scribble_pool(np.zeros(case.pet.shape, np.uint8), case.pet.array)
    assert not pool.tumor and {s.region for s in pool.background} == {"hot"}
    assert scribble_pool(np.zeros((8, 8, 8), np.uint8)) == ScribblePool()
    assert len(apply_draw(ScribblePool(), draw_scribbles(ScribblePool(), 4,
                                                         np.random.default_rng(0)))) == 0


def test_draws_are_values_that_replay(case):
    pool = scribble_pool(case.label.array, case.pet.array)
    back = ScribblePool.from_json(json.loads(json.dumps(pool.to_json())))
    assert back == pool
    draw = draw_scribbles(pool, 5, np.random.default_rng(3))
    assert draw == draw_scribbles(pool, 5, np.random.default_rng(3))
    assert len(draw.picks) == 5
    clicks = apply_draw(back, ScribbleDraw(tuple(tuple(p) for p in draw.to_json())))
    assert clicks == apply_draw(pool, draw)
    n_tumor = sum(len(pool.tumor[i].points) for k, i in draw.picks if k == "tumor")
    assert len(clicks.tumor) == n_tumor
    kinds = [k for _ in range(50) for k, _ in draw_scribbles(pool, 4,
                                                           np.random.default_rng(_)).picks]
    assert 0.3 < kinds.count("tumor") / len(kinds) < 0.7  # even odds


def test_binary_encoding_marks_the_voxels():
    clicks = Clicks(((1, 2, 3), (4, 4, 4)), ((0, 0, 0),))
    fg, bg = encode_clicks(clicks, (6, 6, 6), encoding="binary")
    assert fg.sum() == 2 and fg[1, 2, 3] == 1 and fg[4, 4, 4] == 1 and bg[0, 0, 0] == 1
    crop_fg, _ = encode_clicks(clicks, (6, 6, 6), encoding="binary", crop=((1, 2, 2), (3, 3, 3)))
    np.testing.assert_array_equal(crop_fg, fg[1:4, 2:5, 2:5])
