"""autoPET V's detection-matching metric: petloop's one-pass version against the loop over
lesion pairs (what the challenge's MetricEvaluator does: a boolean mask per true and predicted
lesion for each overlapping pair), on an adult phantom's lesions and a perturbed copy, in one
run, with the results compared.

    .venv/bin/python bench/dmm.py                       # the autoPET grid, 400 x 400 x 326
    .venv/bin/python bench/dmm.py --shape 200 200 160
"""

from __future__ import annotations

import argparse
import time

import cc3d
import numpy as np
from scipy import ndimage


def per_pair(pred: np.ndarray, truth: np.ndarray, box) -> tuple[int, int, int]:
    """The pair loop, on the same crop: IoU of each overlapping pair from boolean masks."""
    g, n_gt = cc3d.connected_components(truth[box], connectivity=18, return_N=True)
    p, n_pred = cc3d.connected_components(pred[box], connectivity=18, return_N=True)
    code = (p.astype(np.int64) * (n_gt + 1) + g)[g > 0]
    matched_gt, matched_pred = set(), set()
    for c in np.unique(code):
        i, j = int(c % (n_gt + 1)), int(c // (n_gt + 1))
        if j == 0:
            continue
        a, b = g == i, p == j
        if (a & b).sum() / (a.sum() + b.sum() - (a & b).sum()) >= 0.1:
            matched_gt.add(i)
            matched_pred.add(j)
    return len(matched_gt), n_pred - len(matched_pred), n_gt - len(matched_gt)


def adult_pair(shape, lesions: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A truth of spheres (3 to 12 voxels' radius) through the grid, and a prediction: the
    truth shifted, with specks."""
    truth = np.zeros(shape, np.uint8)
    for _ in range(lesions):
        r = int(rng.integers(3, 12))
        c = [int(rng.integers(r, s - r)) for s in shape]
        zz, yy, xx = np.ogrid[tuple(slice(ci - r, ci + r + 1) for ci in c)]
        ball = ((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) <= r * r
        truth[tuple(slice(ci - r, ci + r + 1) for ci in c)] |= ball.astype(np.uint8)
    pred = ndimage.shift(truth.astype(np.float32), (1.5, -2.0, 1.0), order=0) > 0.5
    pred = (pred ^ (rng.random(shape) < 2e-5)).astype(np.uint8)
    return truth, pred


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[400, 400, 326])
    parser.add_argument("--lesions", type=int, default=40)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    from petloop.metrics.dmm import dmm, paired_box

    rng = np.random.default_rng(args.seed)
    shape = tuple(args.shape)
    truth, pred = adult_pair(shape, args.lesions, rng)
    t = time.perf_counter()
    fast = dmm(pred, truth, (2.0364, 2.0364, 3.0))
    t_fast = time.perf_counter() - t
    t = time.perf_counter()
    slow = per_pair(pred, truth, paired_box(pred, truth))
    t_slow = time.perf_counter() - t
    same = (fast.tp, fast.fp, fast.fn) == slow
    print(f"{shape}, {fast.gt_lesions} true and {fast.pred_lesions} predicted lesions")
    print(f"{'':24}{'seconds':>10}")
    print(f"{'one pass (petloop)':24}{t_fast:>10.2f}")
    print(f"{'pair loop':24}{t_slow:>10.2f}")
    print(f"{'pair loop / one pass':24}{t_slow / t_fast:>9.1f}x")
    print(f"tp, fp, fn {fast.tp}, {fast.fp}, {fast.fn} (pair loop {slow}): same {same}")


if __name__ == "__main__":
    main()
