"""What a plan spacing costs on adult phantoms on the autoPET FDG grid, side by side.

For each candidate spacing (the bundled plan's 4 x 3 x 3 mm, the autoPET grid's own 3 x 2.04 x
2.04 mm, and a coarser 5 x 4 x 4 mm), with the bundled network's patch (80 x 56 x 56) and the
body crop:

- tiles per pass of nnU-Net's half-overlapping sliding window over the body box, and the seconds
  that makes at the time one tile of the bundled network takes here (measured in this run);
- the Dice ceiling: each phantom's true lesion mask resampled to that spacing and back (linear,
  as nnU-Net exports probabilities; 0.5), scored against itself, i.e. the best Dice any model at
  that spacing could reach, over the phantoms with lesions (mean and 95 % interval).

A finer plan's trained accuracy would need a model trained there; this prints what the spacing
alone decides.

    .venv/bin/python bench/plan_spacing.py [--cases 6] [--seed 9700]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from petloop.inference.body import body_box
from petloop.io.volume import Volume, resample_to
from petloop.metrics.interactive import mean_interval
from petloop.metrics.official import compute_metrics
from petloop.phantom import PhantomConfig, generate_case

PATCH = (56, 56, 80)  # (i, j, k): 56 x 56 in-plane, 80 along the axis
CANDIDATES = {"plan 3 x 3 x 4": (3.0, 3.0, 4.0), "autoPET 2.04 x 2.04 x 3": (2.0364, 2.0364, 3.0),
              "coarse 4 x 4 x 5": (4.0, 4.0, 5.0)}


def tiles(shape) -> int:
    n = 1
    for s, p in zip(shape, PATCH, strict=True):
        n *= math.ceil((max(s, p) - p) / (p * 0.5)) + 1
    return n


def grid(volume: Volume, spacing) -> Volume:
    shape = [max(int(round(n * s / t)), 1) for n, s, t in
             zip(volume.shape, volume.spacing, spacing, strict=True)]
    return Volume(np.zeros(shape, np.float32), spacing, volume.origin, volume.direction)


def tile_seconds() -> float:
    from petloop.inference.modelset import load_model_set
    from petloop.inference.pipeline import Pipeline
    from petloop.models import find_model_set

    ms = load_model_set(find_model_set())
    adapter = Pipeline(ms, device="cpu", precision="fp32").model(ms.models["fdg_v3"])
    x = np.zeros((4, 80, 56, 56), np.float32)
    adapter.run_tile(x)
    t = time.perf_counter()
    for _ in range(3):
        adapter.run_tile(x)
    return (time.perf_counter() - t) / 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--seed", type=int, default=9700)
    args = parser.parse_args()
    per_tile = tile_seconds()
    counts = {k: [] for k in CANDIDATES}
    ceilings = {k: [] for k in CANDIDATES}
    for i in range(args.cases):
        case = generate_case(PhantomConfig.preset("autopet-fdg", seed=args.seed, tracer="fdg",
                                                  negative_fraction=0.0), i).case
        box = body_box(case.ct)
        sub = tuple(slice(a, b) for a, b in box)
        label = case.label.with_array(case.label.array.astype(np.float32))
        body = Volume(label.array[sub], label.spacing)
        for name, spacing in CANDIDATES.items():
            counts[name].append(tiles(grid(body, spacing).shape))
            down = resample_to(label, grid(label, spacing), default_value=0.0)
            back = resample_to(down, label, default_value=0.0)
            m = compute_metrics(case.label.array > 0, back.array >= 0.5, case.pet.spacing)
            ceilings[name].append(m.dice)
        print(f"case {i}: {int(case.label.array.sum())} lesion voxels, body box "
              f"{[b - a for a, b in box]} of {list(case.ct.shape)}", flush=True)
    print(f"\none tile (80 x 56 x 56) of the bundled network, float32: {per_tile:.2f} s\n")
    print(f"{'spacing (mm)':<26} {'tiles/pass':>10} {'s/pass':>8} {'x plan':>7} "
          f"{'Dice ceiling':>13} {'95% CI':>15}")
    base = np.mean(counts["plan 3 x 3 x 4"])
    for name in CANDIDATES:
        n = float(np.mean(counts[name]))
        d = np.asarray(ceilings[name])
        lo, hi = mean_interval(float(d.mean()), float(d.std(ddof=1)), len(d))
        print(f"{name:<26} {n:10.0f} {n * per_tile:8.1f} {n / base:7.2f} {d.mean():13.3f} "
              f"{lo:7.3f}-{hi:.3f}")


if __name__ == "__main__":
    main()
