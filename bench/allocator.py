"""The process's memory settings for the network on a CPU (``petloop.cli.memory``), side by side:
the interactive click steps of one FDG phantom of the demo's grid through the bundled model set,
in fresh processes, alternately with the C library's and PyTorch's defaults and with the
settings every ``petloop`` command applies.

Prints per setting the median time per click step, the kernel (system) time and the minor page
faults of the whole run, and the peak memory; then their ratios, and whether the masks are
identical.

    .venv/bin/python bench/allocator.py [--models petloop/models/phantom] [--rounds 2] [--steps 11]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import hashlib, json, resource, sys, time
if sys.argv[1] == "tuned":
    from petloop.cli.memory import keep_freed_memory
    keep_freed_memory()
from petloop.inference.evaluate import case_steps
from petloop.inference.modelset import load_model_set
from petloop.inference.pipeline import Pipeline, Session
from petloop.io.layouts import find_cases
session = Session(Pipeline(load_model_set(sys.argv[2]), device="cpu", precision="auto"))
times, digest, t = [], hashlib.sha256(), time.perf_counter()
for _case, _clicks, result in case_steps(session, find_cases(sys.argv[3])[0], tracer="fdg",
                                         steps=int(sys.argv[4])):
    times.append(time.perf_counter() - t)
    digest.update(result.mask.array.tobytes())
    t = time.perf_counter()
use = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"steps": times[1:], "sys": use.ru_stime, "minflt": use.ru_minflt,
                  "peak_mb": use.ru_maxrss / 1024, "masks": digest.hexdigest()}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("petloop/models/phantom"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=11)
    args = parser.parse_args()

    from petloop.phantom import PhantomConfig, write_phantoms

    with tempfile.TemporaryDirectory() as tmp:
        write_phantoms(PhantomConfig.preset("trunk", seed=9003, tracer="fdg",
                                            negative_fraction=0.0),
                       Path(tmp), 1)
        runs: dict[str, list[dict]] = {"default": [], "tuned": []}
        for _ in range(args.rounds):
            for mode in runs:  # in turn, so both see the same machine load
                done = subprocess.run([sys.executable, "-c", CHILD, mode, str(args.models), tmp,
                                       str(args.steps)], capture_output=True, text=True,
                                      check=True)
                runs[mode].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"one FDG phantom (64, 64, 96), {args.steps} click steps, {args.rounds} fresh "
          f"process(es) per setting, alternating")
    rows = {}
    for mode, got in runs.items():
        step = statistics.median(s for r in got for s in r["steps"])
        rows[mode] = (step, statistics.median(r["sys"] for r in got),
                      statistics.median(r["minflt"] for r in got),
                      max(r["peak_mb"] for r in got))
        print(f"{mode:8s} per click step (median, after the first) {step:.2f} s, kernel time "
              f"{rows[mode][1]:.1f} s, minor page faults {rows[mode][2]:,.0f}, "
              f"peak {rows[mode][3]:.0f} MB")
    d, t = rows["default"], rows["tuned"]
    print(f"default/tuned: time per step {d[0] / t[0]:.2f}x, kernel time {d[1] / t[1]:.1f}x, "
          f"page faults {d[2] / t[2]:.1f}x; peak memory tuned/default {t[3] / d[3]:.2f}x")
    same = len({r["masks"] for got in runs.values() for r in got}) == 1
    print(f"masks identical in every run: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
