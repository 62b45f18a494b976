"""Reading a full-size image: petloop's checked reader against SimpleITK's own, side by side.

A CT (int16) and a PET (float32) on the autoPET FDG grid (400 x 400 x 326) are written as
.nii.gz, .nii and .mha; each is read in a fresh process, in turn, by ``sitk.ReadImage`` (the
reader petloop used before: no size check, cut files padded with zeros, NaN in NIfTI turned
into 0) and by ``petloop.io.volume.read_volume`` (header checked first, data checked complete
and finite). Prints seconds and peak resident memory of each, and their ratios (peak: the
resident memory's high-water mark above what the process held before reading; Linux).

    .venv/bin/python bench/read_volume.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, sys, time
path, how = sys.argv[1], sys.argv[2]
import SimpleITK as sitk
from petloop.io.volume import Volume, read_volume
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) restarts from here
base = status("VmRSS")
t = time.perf_counter()
if how == "sitk":
    vol = Volume.from_sitk(sitk.ReadImage(path))
else:
    vol = read_volume(path)
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "grew_mb": status("VmHWM") - base,
                  "sum": float(vol.array.sum(dtype="float64"))}))
"""


def run(path: Path, how: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), how], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import numpy as np

    from petloop.io.volume import Volume, write_volume

    rng = np.random.default_rng(0)
    shape = (400, 400, 326)
    ct = Volume(rng.normal(0, 300, size=shape).astype(np.int16), (2.0364, 2.0364, 3.0))
    pet = Volume(rng.gamma(1.5, 1.0, size=shape).astype(np.float32), (2.0364, 2.0364, 3.0))
    print(f"{'file':<14} {'sitk s':>8} {'petloop s':>10} {'x':>6} {'sitk MB':>9} "
          f"{'petloop MB':>11} {'x':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, vol in (("ct", ct), ("pet", pet)):
            for suffix in (".nii.gz", ".nii", ".mha"):
                path = write_volume(vol, Path(tmp) / f"{name}{suffix}")
                runs = {"sitk": [], "petloop": []}
                for _ in range(args.repeats):
                    for how in runs:  # in turn, so both see the same machine load
                        runs[how].append(run(path, how))
                s, p = runs["sitk"], runs["petloop"]
                if s[0]["sum"] != p[0]["sum"]:
                    raise SystemExit(f"{path.name}: the readers disagree")
                ts, tp = min(r["seconds"] for r in s), min(r["seconds"] for r in p)
                ms, mp = min(r["grew_mb"] for r in s), min(r["grew_mb"] for r in p)
                print(f"{name + suffix:<14} {ts:8.2f} {tp:10.2f} {tp / ts:6.2f} {ms:9.0f} "
                      f"{mp:11.0f} {mp / ms:6.2f}")


if __name__ == "__main__":
    main()
