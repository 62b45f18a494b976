from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from petloop.clicks.encode import (
    ClickOutsideError,
    edt_ball_heatmap,
    encode_clicks,
    gaussian_heatmap,
)
from petloop.io.clicks import Clicks


def impulses(points, shape):
    vol = np.zeros(shape, np.float32)
    for p in points:
        vol[tuple(p)] = 1.0
    return vol


def random_points(rng, shape, n):
    pts = np.stack([rng.integers(0, s, size=n) for s in shape], axis=1)
    # always some on the border and in the corners
    pts[0] = 0
    pts[1] = np.asarray(shape) - 1
    pts[2] = [0, shape[1] // 2, shape[2] - 1]
    return pts


@pytest.mark.parametrize("shape", [(40, 35, 30), (24, 64, 17), (5, 7, 3), (1, 13, 26),
                                   (2, 2, 2), (30, 30, 30)])
@pytest.mark.parametrize("sigma", [3.0, 1.5])
def test_gaussian_equals_scipy_filter_everywhere(shape, sigma):
    rng = np.random.default_rng(int(np.prod(shape) + sigma * 10))
    pts = random_points(rng, shape, 20)
    expected = ndimage.gaussian_filter(impulses(pts, shape), sigma=sigma)
    ours = gaussian_heatmap(pts, shape, sigma=sigma)
    assert ours.dtype == np.float32
    assert np.abs(ours - expected).max() <= 1e-7


def test_single_click_peak_and_duplicates():
    shape = (40, 40, 40)
    h = gaussian_heatmap([(20, 20, 20)], shape)
    assert h.max() == pytest.approx(2.35e-3, rel=0.01)
    # a repeated click is one impulse, as in the official volume of impulses
    np.testing.assert_array_equal(gaussian_heatmap([(20, 20, 20)] * 3, shape), h)
    assert not gaussian_heatmap([], shape).any()


def test_gaussian_on_a_crop_equals_the_full_volume_crop():
    rng = np.random.default_rng(7)
    shape = (50, 40, 60)
    pts = random_points(rng, shape, 20)
    full = gaussian_heatmap(pts, shape)
    for offset, size in [((0, 0, 0), (16, 16, 16)), ((30, 20, 40), (20, 20, 20)),
                         ((10, 5, 0), (7, 30, 60)), ((49, 39, 59), (1, 1, 1))]:
        patch = gaussian_heatmap(pts, shape, crop=(offset, size))
        sl = tuple(slice(o, o + s) for o, s in zip(offset, size, strict=True))
        np.testing.assert_array_equal(patch, full[sl])
    # crops reaching past the volume are zero there
    patch = gaussian_heatmap(pts, shape, crop=((40, 30, 50), (20, 20, 20)))
    np.testing.assert_array_equal(patch[:10, :10, :10], full[40:, 30:, 50:])
    assert not patch[10:].any()


def _edt_ball_reference(points, shape, radius):
    pad = int(np.ceil(radius)) + 1
    big = tuple(s + 2 * pad for s in shape)
    out = np.zeros(big, np.float32)
    g = np.indices(big)
    for p in points:
        c = np.asarray(p) + pad
        inside = sum((g[a] - c[a]) ** 2 for a in range(3)) <= radius * radius
        edt = ndimage.distance_transform_edt(inside)
        out = np.maximum(out, (edt / edt.max()).astype(np.float32))
    return out[pad:-pad, pad:-pad, pad:-pad]


@pytest.mark.parametrize("radius", [2.0, 3.0, 1.0])
def test_edt_ball_equals_reference(radius):
    rng = np.random.default_rng(int(radius * 10))
    shape = (20, 18, 15)
    pts = random_points(rng, shape, 8)
    ours = edt_ball_heatmap(pts, shape, radius=radius)
    np.testing.assert_allclose(ours, _edt_ball_reference(pts, shape, radius), atol=1e-7)
    assert ours.max() == 1.0
    patch = edt_ball_heatmap(pts, shape, radius=radius, crop=((3, 4, 5), (10, 10, 10)))
    np.testing.assert_array_equal(patch, ours[3:13, 4:14, 5:15])


def test_default_ball_profile():
    h = edt_ball_heatmap([(5, 5, 5)], (11, 11, 11))
    assert h[5, 5, 5] == 1.0
    assert 0 < h[7, 5, 5] < h[6, 5, 5] < 1.0
    assert h[8, 5, 5] == 0.0 and h[7, 7, 5] == 0.0


def test_step_k_uses_first_k_of_each():
    shape = (30, 30, 30)
    clicks = Clicks(tuple((3 * i, 5, 5) for i in range(10)), tuple((5, 3 * i, 20)
                                                                   for i in range(10)))
    fg, bg = encode_clicks(clicks, shape, step=2)
    np.testing.assert_array_equal(fg, gaussian_heatmap([(0, 5, 5), (3, 5, 5)], shape))
    np.testing.assert_array_equal(bg, gaussian_heatmap([(5, 0, 20), (5, 3, 20)], shape))
    fg0, bg0 = encode_clicks(clicks, shape, step=0)
    assert not fg0.any() and not bg0.any()
    fg_b, _ = encode_clicks(clicks, shape, step=1, encoding="edt_ball")
    assert fg_b.max() == 1.0


def test_click_outside_is_an_error_not_dropped():
    clicks = Clicks(((1, 1, 1),), ((30, 0, 0),))
    with pytest.raises(ClickOutsideError, match=r"background click 0 \[30, 0, 0\] lies outside"):
        encode_clicks(clicks, (30, 30, 30))
    # also when the click lies outside a crop's volume
    with pytest.raises(ClickOutsideError):
        encode_clicks(clicks, (30, 30, 30), crop=((0, 0, 0), (8, 8, 8)))
    with pytest.raises(ClickOutsideError, match="tumor click 0"):
        gaussian_heatmap([(-1, 0, 0)], (4, 4, 4), name="tumor")
    with pytest.raises(ValueError, match="unknown click encoding"):
        encode_clicks(Clicks(), (4, 4, 4), encoding="disk")
