"""Click latency at the scale of a real scan: the engine's per-click updates against full
re-predictions with the same settings, in one run, with the masks compared voxel for voxel.

Writes an adult phantom on the grid asked for (default the autoPET FDG grid, 400 x 400 x 326 at
2.0364 x 2.0364 x 3 mm) in a child process, takes its official clicks, opens a session with the
model set (default the bundled one, with its own inference settings), and times

- setting the case and the first mask (no clicks);
- each click added one by one (tumor and background interleaved, the official order), then the
  removal of one click and an undo; the session's background work (routing hand-over) gets
  ``--think`` seconds between clicks, as a reader would give it;
- after the session is closed (so that the peak memory above is the session's own), a full
  re-prediction in a fresh session for the steps in ``--full-at``, with the same passes.

    .venv/bin/python bench/click_latency.py --shape 400 400 326
    .venv/bin/python bench/click_latency.py --shape 160 160 200 --clicks 6 --full-at 1 6
    .venv/bin/python bench/click_latency.py --shape 400 400 326 --tile-step 0.5  # overlapping
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[400, 400, 326])
    parser.add_argument("--spacing", type=float, nargs=3, default=[2.0364, 2.0364, 3.0])
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--models", default="petloop/models/phantom")
    parser.add_argument("--clicks", type=int, default=10)
    parser.add_argument("--think", type=float, default=3.0, help="seconds between clicks")
    parser.add_argument("--full-at", type=int, nargs="*", default=[1, 10],
                        help="click counts whose mask is also predicted in full")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--tile-step", type=float, default=None,
                        help="replace the set's sliding-window step (fraction of the patch)")
    parser.add_argument("--budget", type=float, default=None,
                        help="replace the set's time budget per step (seconds)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()

    import numpy as np

    from petloop.clicks.clicklist import ClickList
    from petloop.inference.modelset import load_model_set
    from petloop.inference.pipeline import Pipeline, Session
    from petloop.io.layouts import find_cases

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        cli = str(Path(sys.executable).with_name("petloop"))
        subprocess.run([cli, "phantom", "--out", f"{tmp}/ph",
                        "--cases", "1", "--tracer", "fdg", "--seed", str(args.seed),
                        "--shape", *map(str, args.shape), "--spacing", *map(str, args.spacing),
                        "--negative-fraction", "0", "--lesions", "8", "12"],
                       check=True, stdout=subprocess.DEVNULL)
        print(f"phantom {args.shape} at {args.spacing} mm written in "
              f"{time.perf_counter() - t:.0f} s (child process)")
        case = find_cases(f"{tmp}/ph")[0].load()
        from petloop.clicks.simulate import simulate_clicks

        official = case.clicks or simulate_clicks(case.label.array, case.pet.array)
        order = ClickList.of(official).items[:args.clicks]

        ms = load_model_set(args.models)
        pipeline = Pipeline(ms, device="cpu", precision=args.precision, budget=args.budget,
                            tile_step=args.tile_step)
        print(f"model set {ms.root} ({pipeline.settings.to_json()}), precision "
              f"{pipeline.precision}, {len(order)} clicks, think {args.think:g} s")
        session = Session(pipeline)
        t = time.perf_counter()
        session.set_case(case.ct, case.pet, "fdg")
        result = session.run()
        first = time.perf_counter() - t
        print(f"set case + first mask: {first:.1f} s ({result.model}: {result.tta.describe()})")
        rows, kept = [], {}
        changes = [("add", c) for c in order] + [("remove", 2), ("undo", None)]
        for what, arg in changes:
            time.sleep(args.think)
            t = time.perf_counter()
            if what == "add":
                result = session.add_click(arg.point, arg.kind)
            elif what == "remove":
                result = session.remove_click(arg)
            else:
                result = session.undo()
            dt = time.perf_counter() - t
            n = len(session.clicks)
            label = f"{what} {arg.kind if what == 'add' else arg if arg is not None else ''}"
            rows.append({"change": label.strip(), "clicks": n, "seconds": dt,
                         "model": result.model, "tiles": result.tta.tiles,
                         "tiles_total": result.tta.tiles_total,
                         "network": result.seconds["network"],
                         "export": result.seconds["export"]})
            if what == "add" and n in args.full_at:
                kept[n] = (session.clicks, result.mask.array.copy(), dt, result.tta.mirrors)
            print(f"  {label:<20} -> {n:2d} clicks {dt:7.2f} s  {result.model:<8} "
                  f"{result.tta.tiles:4d}/{result.tta.tiles_total} tiles", flush=True)
        session_peak = peak_gb()
        cached = session._engine.cached_bytes / 2**30 if session._engine else 0.0
        session.close()

        fulls = []
        for n, (clicks, mask, dt, mirrors) in sorted(kept.items()):
            fresh = Pipeline(ms, device="cpu", precision=args.precision, mirrors=len(mirrors),
                             budget=0, tile_step=args.tile_step)
            s = Session(fresh, background=False)
            t = time.perf_counter()
            s.set_case(case.ct, case.pet, "fdg")
            full = s.set_clicks(clicks)
            dt_full = time.perf_counter() - t
            same = bool(np.array_equal(full.mask.array, mask))
            fulls.append({"clicks": n, "full_seconds": dt_full, "click_seconds": dt,
                          "ratio": dt_full / dt if dt > 0 else float("inf"), "identical": same})
            s.close()
            print(f"  full re-prediction at {n} clicks: {dt_full:.1f} s against {dt:.2f} s "
                  f"({dt_full / dt:.0f}x), masks identical: {same}", flush=True)

    per_click = [r["seconds"] for r in rows]
    median = statistics.median(per_click)
    full_median = statistics.median([f["full_seconds"] for f in fulls]) if fulls else None
    print()
    print(f"{'':34}{'measured':>12}{'goal':>12}")
    print(f"{'first mask (set case + 0 clicks)':34}{first:>10.1f} s{'<= 60 s':>12}")
    print(f"{'median per-click update':34}{median:>10.2f} s{'<= 3 s':>12}")
    print(f"{'max per-click update':34}{max(per_click):>10.2f} s")
    if full_median:
        print(f"{'full re-prediction (median)':34}{full_median:>10.1f} s")
        print(f"{'full / median click':34}{full_median / median:>11.0f}x{'>= 50x':>12}")
        print(f"{'masks identical to full':34}"
              f"{str(all(f['identical'] for f in fulls)):>12}{'True':>12}")
    print(f"{'peak memory of the session':34}{session_peak:>9.2f} GB{'< 8 GB':>12}")
    print(f"{'engine caches at the end':34}{cached:>9.2f} GB")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "shape": args.shape, "spacing": args.spacing, "first_seconds": first,
            "clicks": rows, "full": fulls, "median_click_seconds": median,
            "session_peak_gb": session_peak, "cached_gb": cached}, indent=1))


if __name__ == "__main__":
    main()
