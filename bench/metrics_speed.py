"""Official metrics on a full-size phantom pair: petloop's one-pass overlaps versus the
per-component loop of the official script.

The ground truth is a full-size phantom (400 x 400 x 326) with 50+ lesions; the prediction misses
some lesions, grows others and adds false positives, so both masks have 50+ components. Both
implementations run in one process on the same pair; their values are compared and the ratio of
their times printed. Target: at least 20 times faster.

    .venv/bin/python bench/metrics_speed.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cc3d
import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from official_metrics_reference import slow_official  # noqa: E402

from petloop.metrics.official import compute_metrics  # noqa: E402
from petloop.phantom import PhantomConfig, generate_case  # noqa: E402


def make_pair(seed: int):
    ph = generate_case(PhantomConfig.preset("autopet-fdg", seed=seed, tracer="psma",
                                            lesions=(60, 70), negative_fraction=0.0), 0)
    gt = ph.case.label.array.astype(bool)
    rng = np.random.default_rng(seed)
    cc, n = cc3d.connected_components(gt, connectivity=18, return_N=True)
    keep = rng.random(n + 1) > 0.2
    keep[0] = False
    pred = ndimage.binary_dilation(keep[cc])
    body = np.argwhere(ph.case.ct.array[::8, ::8, ::8] > -500) * 8
    for p in body[rng.choice(len(body), 40, replace=False)]:
        r = rng.integers(1, 4)
        pred[tuple(slice(max(c - r, 0), c + r) for c in p)] = True
    return gt, pred, ph.case.pet.spacing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    gt, pred, spacing = make_pair(args.seed)
    n_gt = cc3d.connected_components(gt, connectivity=18, return_N=True)[1]
    n_pred = cc3d.connected_components(pred, connectivity=18, return_N=True)[1]
    print(f"pair of {gt.shape} masks: {n_gt} ground-truth and {n_pred} predicted components")
    fast, slow = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        m = compute_metrics(gt, pred, spacing)
        fast.append(time.perf_counter() - t)
    t = time.perf_counter()
    ref = slow_official(gt, pred, spacing)
    slow.append(time.perf_counter() - t)
    f = sorted(fast)[len(fast) // 2]
    s = slow[0]
    same = (m.dice, m.fpv, m.fnv) == ref
    print(f"petloop one pass:        {f:8.3f} s  Dice {m.dice:.4f} FPV {m.fpv:.3f} ml "
          f"FNV {m.fnv:.3f} ml")
    print(f"per-component loop:      {s:8.3f} s  Dice {ref[0]:.4f} FPV {ref[1]:.3f} ml "
          f"FNV {ref[2]:.3f} ml")
    print(f"speed-up: {s / f:.0f}x; identical values: {same}")
    print("targets met (>= 20x, identical)" if s / f >= 20 and same else "TARGETS MISSED")


if __name__ == "__main__":
    main()
