"""What the sliding window's step costs and gives: the same model set with nnU-Net's
half-overlapping tiles and with tiles edge to edge, on the same held-out adult phantoms.

Writes FDG phantoms on a grid where the bundled networks slide (default the quick preset: whole
adult bodies, 168 x 128 x 256 at 3 x 3 x 4 mm; seed 9800, never used in training), runs the 11
click steps with official clicks and no mirrored pass through the set's routing with each step,
and prints, side by side from the one run, the time it took and mean Dice (0 and 10 clicks, AUC)
and FPV at 10 clicks, with the difference paired by case and its 95 % interval.

    .venv/bin/python bench/tile_step.py [--cases 6] [--preset quick] [--models SET]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--seed", type=int, default=9800)
    parser.add_argument("--models", default=None, help="model set (default: the bundled one)")
    parser.add_argument("--steps", type=float, nargs=2, default=[1.0, 0.5],
                        help="the two tile steps to compare (fractions of the patch)")
    args = parser.parse_args()

    from petloop.inference.evaluate import run_steps
    from petloop.inference.modelset import load_model_set
    from petloop.inference.pipeline import Pipeline
    from petloop.io.layouts import find_cases
    from petloop.metrics.interactive import evaluate_model, paired_difference, per_case
    from petloop.metrics.official import auc
    from petloop.models import find_model_set
    from petloop.phantom import PhantomConfig, write_phantoms

    ms = load_model_set(find_model_set(args.models))
    with tempfile.TemporaryDirectory() as tmp:
        write_phantoms(PhantomConfig.preset(args.preset, seed=args.seed, tracer="fdg",
                                            negative_fraction=0.0), Path(tmp) / "ph",
                       args.cases)
        cases = find_cases(Path(tmp) / "ph")
        runs = {}
        for step in args.steps:
            pipe = Pipeline(ms, device="cpu", precision="auto", mirrors=0, budget=0, tile_step=step)
            t = time.perf_counter()
            run_steps(pipe, cases, Path(tmp) / f"s{step}", steps=11, tracer="fdg")
            seconds = time.perf_counter() - t
            ev = evaluate_model(cases, Path(tmp) / f"s{step}", f"s{step}", 11)
            runs[step] = (seconds, ev.records)
            print(f"tile step {step:g}: {seconds:.0f} s for {len(cases)} cases x 11 steps",
                  flush=True)

    def values(step, metric, at=None):
        recs = runs[step][1]
        if at is not None:
            return per_case(recs, f"s{step}", "fdg", at, metric)
        curves = {}
        for r in recs:
            curves.setdefault(r.case, [math.nan] * 11)[r.step] = getattr(r, metric)
        return {c: auc(v) for c, v in curves.items()}

    a, b = args.steps
    print(f"\n{args.cases} FDG phantoms ({args.preset}, seed {args.seed}), official clicks, "
          f"no mirrored pass, {ms.root.name}")
    print(f"{'':16}{f'step {a:g}':>12}{f'step {b:g}':>12}   paired difference (95 % CI)")
    print(f"{'seconds':16}{runs[a][0]:>12.0f}{runs[b][0]:>12.0f}   "
          f"{runs[b][0] / runs[a][0]:.1f}x")
    for label, metric, at in (("Dice 0 clicks", "dice", 0), ("Dice 10 clicks", "dice", 10),
                              ("Dice AUC", "dice", None), ("FPV 10 (ml)", "fpv", 10)):
        va, vb = values(a, metric, at), values(b, metric, at)
        d = paired_difference(va, vb)
        mean = lambda v: sum(v.values()) / len(v)  # noqa: E731
        print(f"{label:16}{mean(va):>12.3f}{mean(vb):>12.3f}   {d.mean:+.3f} "
              f"({d.lo:+.3f} to {d.hi:+.3f})")


if __name__ == "__main__":
    main()
