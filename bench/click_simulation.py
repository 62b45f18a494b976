"""Official click simulation on a full-size phantom: petloop versus the full-volume approach.

The full-volume approach is the literal algorithm of the official script (a distance transform
of the whole volume for every component, recomputed at each fill-up click), run with SciPy on
the CPU (tests/official_clicks_reference.py). Both are run on the same phantom in one process,
their clicks are compared, and the ratio of their times is printed. Target: petloop under 3 s and
at least 50 times faster.

    .venv/bin/python bench/click_simulation.py [--repeats 3] [--seed 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from official_clicks_reference import reference_clicks  # noqa: E402

from petloop.clicks.simulate import simulate_clicks  # noqa: E402
from petloop.phantom import PhantomConfig, generate_case  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    ph = generate_case(PhantomConfig.preset("autopet-fdg", seed=args.seed, tracer="fdg",
                                            lesions=(20, 30)), 0)
    label, pet = ph.case.label.array, ph.case.pet.array
    print(f"phantom {ph.case.pet.shape}, {ph.info['n_lesions']} lesions, "
          f"{ph.info['n_components']} components")
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        ours = simulate_clicks(label, pet)
        times.append(time.perf_counter() - t)
    fast = sorted(times)[len(times) // 2]
    t = time.perf_counter()
    ref = reference_clicks(label, pet)
    slow = time.perf_counter() - t
    same = list(ours.tumor) == ref["tumor"] and list(ours.background) == ref["background"]
    print(f"petloop (bounding boxes, partial sort): {fast:8.2f} s (median of {args.repeats})")
    print(f"full-volume approach:                   {slow:8.2f} s")
    print(f"speed-up: {slow / fast:.0f}x; identical clicks: {same}")
    ok = fast < 3.0 and slow / fast >= 50 and same
    print("targets met (< 3 s, >= 50x, identical)" if ok else "TARGETS MISSED")


if __name__ == "__main__":
    main()
