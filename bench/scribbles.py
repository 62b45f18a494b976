"""autoPET V's scribble simulation: petloop's against the challenge's own code, for equality on
random masks and on error regions of the autoPET grid, and for time, in one run.

The challenge's code is not part of petloop: give its ``simulate_scribbles.py`` from a checkout
of the autoPET V repository (it needs scikit-image, networkx, nibabel and cc3d, which petloop
installs). Without it, petloop's times alone are printed.

    git clone https://github.com/lab-midas/autoPETV /tmp/autoPETV   # or a fork of it
    .venv/bin/python bench/scribbles.py --official /tmp/autoPETV/interactive/simulate_scribbles.py
    .venv/bin/python bench/scribbles.py --shape 200 200 160 --random 300
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import numpy as np
from scipy import ndimage

STRATEGIES = ("centerline", "random", "boundary")


def load_official(path: str):
    spec = importlib.util.spec_from_file_location("official_scribbles", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.simulate_scribble_from_label


def random_masks(n: int, rng: np.random.Generator):
    """Noise, smoothed blobs and balls on small grids, as nibabel holds a mask (Fortran)."""
    for trial in range(n):
        shape = tuple(int(s) for s in rng.integers(5, 40, 3))
        if trial % 3 == 0:
            m = rng.random(shape) > rng.uniform(0.5, 0.97)
        elif trial % 3 == 1:
            m = ndimage.gaussian_filter(rng.random(shape), rng.uniform(0.5, 2.5)) > 0.5
        else:
            m = np.zeros(shape, bool)
            g = np.indices(shape)
            for _ in range(int(rng.integers(1, 4))):
                c, r = rng.integers(0, shape), int(rng.integers(1, 8))
                m |= sum((g[a] - c[a]) ** 2 for a in range(3)) <= r * r
        yield np.asfortranarray(m), int(rng.integers(0, 100))


def adult_errors(shape, lesions: int, rng: np.random.Generator):
    """The pair of ``bench/dmm.py`` (spheres through the grid, a shifted and speckled
    prediction), as nibabel holds it: its over- and under-segmentation, as the loop forms
    them."""
    from dmm import adult_pair  # bench/dmm.py, beside this script

    truth, pred = (np.asfortranarray(a) for a in adult_pair(shape, lesions, rng))
    return {"over": (pred == 1) & (truth == 0), "under": (pred == 0) & (truth == 1)}


def same(official_out, ours) -> bool:
    if len(official_out) == 2:  # the challenge's return for an empty mask
        return ours is None
    coords, _, size = official_out
    return ours is not None and [list(p) for p in ours.points] == coords and ours.size == size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", default=None, help="the challenge's simulate_scribbles.py")
    parser.add_argument("--shape", type=int, nargs=3, default=[400, 400, 326])
    parser.add_argument("--lesions", type=int, default=40)
    parser.add_argument("--random", type=int, default=300, help="random small masks")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    from petloop.clicks.scribbles import simulate_scribble

    official = load_official(args.official) if args.official else None
    rng = np.random.default_rng(args.seed)
    if official is not None:
        checked = mismatches = 0
        for mask, seed in random_masks(args.random, rng):
            for strategy in STRATEGIES:
                checked += 1
                mismatches += not same(official(mask, strategy, seed),
                                       simulate_scribble(mask, strategy, seed=seed))
        print(f"random masks: {checked} scribbles compared, {mismatches} differ")
    regions = adult_errors(tuple(args.shape), args.lesions, rng)
    print(f"{tuple(args.shape)}: over-segmentation {int(regions['over'].sum())} voxels, "
          f"under-segmentation {int(regions['under'].sum())} voxels")
    head = f"{'':22}{'petloop s':>10}" + (f"{'official s':>12}{'ratio':>8}{'same':>6}"
                                          if official else "")
    print(head)
    for strategy in STRATEGIES:
        for name, region in regions.items():
            t = time.perf_counter()
            ours = simulate_scribble(region, strategy)
            t_ours = time.perf_counter() - t
            row = f"{strategy + ' ' + name:22}{t_ours:>10.2f}"
            if official is not None:
                t = time.perf_counter()
                theirs = official(region, strategy)
                t_off = time.perf_counter() - t
                row += f"{t_off:>12.2f}{t_off / t_ours:>7.1f}x{str(same(theirs, ours)):>6}"
            print(row)


if __name__ == "__main__":
    main()
