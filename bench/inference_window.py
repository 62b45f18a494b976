"""Inference windows and test-time mirroring, side by side: nnU-Net's sliding window against one
whole-volume pass, each with 0, 3 or 7 mirrored passes, with the bundled model set on held-out
FDG phantoms of the demo's grid (64 x 64 x 96 at 3 x 3 x 4 mm), through the interactive session.

For every case and click step (official clicks) all settings predict in turn, so that they see
the same machine load. Prints, per setting, the median seconds per prediction, the ratio to the
first setting (the plain sliding window by default), and the mean Dice against the truth at
each step measured.

    .venv/bin/python bench/inference_window.py [--models petloop/models/phantom] [--cases 4]
        [--steps 0 5 10] [--seed 9300] [--sliding-mirrors] [--settings whole:7 whole:3 ...]

--sliding-mirrors adds the sliding window with 7 mirrored passes (about 8 times the plain time).
--settings replaces the list (window:mirrors); where whole:7 is among them, each other setting's
Dice is also given as its difference from it, paired by case, with that difference's standard
error.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("petloop/models/phantom"))
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 5, 10])
    parser.add_argument("--seed", type=int, default=9300)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--sliding-mirrors", action="store_true")
    parser.add_argument("--settings", nargs="+", metavar="WINDOW:MIRRORS")
    args = parser.parse_args()

    import numpy as np
    import torch

    from petloop.clicks.simulate import simulate_clicks
    from petloop.inference.modelset import load_model_set
    from petloop.inference.pipeline import Pipeline, Session, resolve_precision
    from petloop.io.layouts import find_cases
    from petloop.phantom import PhantomConfig, write_phantoms

    ms = load_model_set(args.models)
    settings = [("sliding", 0), ("whole", 0), ("whole", 3), ("whole", 7)]
    if args.sliding_mirrors:
        settings.append(("sliding", 7))
    if args.settings:
        settings = [(w, int(m)) for w, m in (s.split(":") for s in args.settings)]
    pipelines = {(w, m): Pipeline(ms, device="cpu", precision=args.precision, window=w, mirrors=m)
                 for w, m in settings}
    with tempfile.TemporaryDirectory() as tmp:
        config = PhantomConfig.preset("trunk", seed=args.seed, tracer="fdg",
                                      negative_fraction=0.0)
        write_phantoms(config, Path(tmp), args.cases)
        cases = [f.load() for f in find_cases(Path(tmp))]
    times = {s: [] for s in settings}
    dice = {(s, k): [] for s in settings for k in args.steps}
    for case in cases:
        truth = np.asarray(case.label.array) != 0
        clicks = simulate_clicks(case.label.array, case.pet.array)  # the official simulation
        sessions = {}
        for s, pipeline in pipelines.items():
            sessions[s] = Session(pipeline)
            sessions[s].set_case(case.ct, case.pet, "fdg")
        for k in args.steps:
            for s, session in sessions.items():
                t = time.perf_counter()
                mask = np.asarray(session.set_clicks(clicks.step(k)).mask.array) != 0
                times[s].append(time.perf_counter() - t)
                dice[s, k].append(2 * (mask & truth).sum() / max(mask.sum() + truth.sum(), 1))
    base = statistics.median(times[settings[0]])
    print(f"model set {ms.name}, {len(cases)} FDG phantoms (seed {args.seed}) "
          f"{cases[0].pet.shape}, {torch.get_num_threads()} threads, "
          f"{resolve_precision(args.precision, 'cpu')}")
    head = " ".join(f"Dice@{k:<3d}" for k in args.steps)
    first = "x sliding" if settings[0] == ("sliding", 0) else "x {}:{}".format(*settings[0])
    print(f"{'window':8s} {'mirrors':>7s} {'s/prediction':>12s} {first:>9s}  {head}")
    for s in settings:
        t = statistics.median(times[s])
        scores = " ".join(f"{statistics.mean(dice[s, k]):8.3f}" for k in args.steps)
        print(f"{s[0]:8s} {s[1]:7d} {t:12.2f} {t / base:9.2f}  {scores}")
    full = ("whole", 7)
    if full in settings and len(cases) > 1:
        print("Dice difference from whole:7, paired by case (standard error)")
        for s in settings:
            if s == full:
                continue
            cells = []
            for k in args.steps:
                d = [a - b for a, b in zip(dice[s, k], dice[full, k], strict=True)]
                se = statistics.stdev(d) / len(d) ** 0.5
                cells.append(f"@{k}: {statistics.mean(d):+.4f} ({se:.4f})")
            print(f"{s[0]:8s} {s[1]:7d}  " + "  ".join(cells))


if __name__ == "__main__":
    main()
