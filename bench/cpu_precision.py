"""Network arithmetic on the CPU: bfloat16 against float32, side by side, with the bundled model
set on one FDG phantom of the demo's grid (64 x 64 x 96 at 3 x 3 x 4 mm), through the
interactive session.

For each click step 0-10 (official clicks) the mask is computed in fp32 and in bf16, in turn, so
that both see the same machine load; prints the median time per step of each, their ratio, and
how far the bf16 masks are from the fp32 ones (Dice between the two masks, voxels that differ).

    .venv/bin/python bench/cpu_precision.py [--models petloop/models/phantom] [--steps 11]
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
    parser.add_argument("--steps", type=int, default=11)
    args = parser.parse_args()

    import numpy as np
    import torch

    from petloop.clicks.simulate import simulate_clicks
    from petloop.inference.modelset import load_model_set
    from petloop.inference.pipeline import Pipeline, Session, cpu_has_bf16
    from petloop.io.layouts import find_cases
    from petloop.phantom import PhantomConfig, write_phantoms

    ms = load_model_set(args.models)
    with tempfile.TemporaryDirectory() as tmp:
        config = PhantomConfig.preset("trunk", seed=77, tracer="fdg", negative_fraction=0.0)
        write_phantoms(config, Path(tmp), 1)
        case = find_cases(Path(tmp))[0].load()
    clicks = simulate_clicks(case.label.array, case.pet.array)  # the official simulation
    sessions = {}
    for precision in ("fp32", "bf16"):
        session = Session(Pipeline(ms, device="cpu", precision=precision))
        session.set_case(case.ct, case.pet, "fdg")
        sessions[precision] = session
    times = {"fp32": [], "bf16": []}
    dice, differ = [], []
    for k in range(args.steps):
        masks = {}
        for precision, session in sessions.items():
            t = time.perf_counter()
            masks[precision] = np.asarray(session.set_clicks(clicks.step(k)).mask.array, bool)
            times[precision].append(time.perf_counter() - t)
        a, b = masks["fp32"], masks["bf16"]
        both = a.sum() + b.sum()
        dice.append(1.0 if both == 0 else 2 * (a & b).sum() / both)
        differ.append(int((a ^ b).sum()))
    fp32, bf16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
    print(f"model set {ms.name}, phantom {case.pet.shape}, {torch.get_num_threads()} threads, "
          f"CPU bfloat16 instructions: {'yes' if cpu_has_bf16() else 'no'}")
    print(f"per click step (median of {args.steps}): fp32 {fp32:.2f} s, bf16 {bf16:.2f} s, "
          f"fp32/bf16 {fp32 / bf16:.2f}x")
    print(f"bf16 mask against fp32: Dice min {min(dice):.4f}, mean {statistics.mean(dice):.4f}; "
          f"voxels that differ: at most {max(differ)} of {case.pet.array.size}")


if __name__ == "__main__":
    main()
