"""Gaussian click heatmaps on a full-size volume: petloop's windows versus a full-volume filter.

Both build the FG and BG channels of 10 tumour and 10 background clicks on a 400 x 400 x 326
grid; the full-volume approach is ``scipy.ndimage.gaussian_filter`` of a volume of impulses (what
the official code does). Runs alternate, and the medians and their ratio are printed, with the
largest difference between the two results. Target: at least 50 times faster. A training patch
(192^3 crop) is timed too.

    .venv/bin/python bench/heatmaps.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

from petloop.clicks.encode import encode_clicks
from petloop.io.clicks import Clicks

SHAPE = (400, 400, 326)


def full_volume(clicks: Clicks, shape) -> tuple[np.ndarray, np.ndarray]:
    out = []
    for points in (clicks.tumor, clicks.background):
        vol = np.zeros(shape, np.float32)
        for p in points:
            vol[p] = 1.0
        out.append(ndimage.gaussian_filter(vol, sigma=3))
    return out[0], out[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    pts = np.stack([rng.integers(0, s, size=20) for s in SHAPE], axis=1)
    pts[0] = (0, 0, 0)  # a corner and a border click too
    pts[11] = (399, 200, 325)
    clicks = Clicks.from_points(pts[:10], pts[10:])
    fast, slow, patch = [], [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        ours = encode_clicks(clicks, SHAPE)
        fast.append(time.perf_counter() - t)
        t = time.perf_counter()
        ref = full_volume(clicks, SHAPE)
        slow.append(time.perf_counter() - t)
        t = time.perf_counter()
        encode_clicks(clicks, SHAPE, crop=((100, 100, 60), (192, 192, 192)))
        patch.append(time.perf_counter() - t)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(ours, ref, strict=True))
    f, s, p = (sorted(x)[len(x) // 2] for x in (fast, slow, patch))
    print(f"20 clicks on {SHAPE}, FG + BG channels, median of {args.repeats}")
    print(f"petloop windows:           {f * 1000:9.1f} ms")
    print(f"full-volume gaussian_filter: {s * 1000:7.1f} ms")
    print(f"192^3 training patch:      {p * 1000:9.1f} ms")
    print(f"speed-up: {s / f:.0f}x; largest difference {diff:.2e}")
    print("targets met (>= 50x, <= 1e-7)" if s / f >= 50 and diff <= 1e-7 else "TARGETS MISSED")


if __name__ == "__main__":
    main()
