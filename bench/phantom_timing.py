"""Phantom generation time and memory: a case on the quick grid and one on the autoPET FDG grid.

Targets: quick (the default grid, 168 x 128 x 256 at 3 x 3 x 4 mm) under 5 s; autopet-fdg
(400 x 400 x 326 at 2.0364 x 2.0364 x 3 mm) under 30 s and 4 GB. Each figure is measured in a
fresh process so the peak resident memory belongs to that case alone.

    .venv/bin/python bench/phantom_timing.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from petloop.phantom import PRESETS

CHILD = """
import json, resource, sys, time
from petloop.phantom import PhantomConfig, generate_case
lesions = tuple(json.loads(sys.argv[2])) if sys.argv[2] != 'null' else None
cfg = PhantomConfig.preset(sys.argv[1], seed=int(sys.argv[3]), tracer='fdg', lesions=lesions)
t = time.perf_counter()
ph = generate_case(cfg, 0)
dt = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": dt, "peak_rss_bytes": rss, "lesions": ph.info["n_lesions"]}))
"""


def run(preset, lesions, seed) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, preset, json.dumps(lesions),
                          str(seed)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for name, lesions, limit_s in (("quick", None, 5.0), ("autopet-fdg", [20, 30], 30.0)):
        shape = list(PRESETS[name][0])
        runs = [run(name, lesions, seed) for seed in range(args.repeats)]
        secs = sorted(r["seconds"] for r in runs)
        rss = max(r["peak_rss_bytes"] for r in runs) / 2**30
        median = secs[len(secs) // 2]
        rows.append((name, shape, median, rss, limit_s, [r["lesions"] for r in runs]))
    print(f"{'grid':<12} {'shape':<16} {'median s':>9} {'limit s':>8} {'peak GB':>8}  lesions")
    ok = True
    for name, shape, median, rss, limit_s, les in rows:
        print(f"{name:<12} {'x'.join(map(str, shape)):<16} {median:9.2f} {limit_s:8.1f} "
              f"{rss:8.2f}  {les}")
        ok &= median < limit_s
    ok &= rows[1][3] < 4.0
    print("targets met" if ok else "TARGETS MISSED")
    print(f"measured {time.strftime('%Y-%m-%d %H:%M')} on {sys.platform}")


if __name__ == "__main__":
    main()
