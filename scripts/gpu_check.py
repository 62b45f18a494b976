"""GPU check of the training recipes and of prediction on CUDA (nnU-Net's autocast, gradient
scaling and torch.compile paths, which a CPU never takes).

Expects a petloop work directory with a built dataset (``--workdir``, default ``.gpuwork``),
trains recipes v4 (organ supervision, stochastic clicks) and v0 for a few iterations on CUDA and
predicts a phantom case with the v4 checkpoint, mirroring on. Prints iterations per second.

    python scripts/gpu_check.py --workdir .gpuwork --dataset 901
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=".gpuwork")
    parser.add_argument("--dataset", type=int, default=901)
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("nnUNet_n_proc_DA", "4")

    import torch

    from petloop.inference.engine import Engine
    from petloop.io.clicks import Clicks
    from petloop.io.layouts import find_cases
    from petloop.nnunet.adapter import NetworkAdapter
    from petloop.nnunet.paths import NnunetPaths
    from petloop.nnunet.train import TrainConfig, TrainOptions, dataset_folder_name, train

    work = Path(args.workdir)
    paths = NnunetPaths(work / "raw", work / "pre", work / "res")
    name = dataset_folder_name(args.dataset, paths)
    print("cuda:", torch.cuda.get_device_name(0), "torch", torch.__version__)
    for recipe in ("v4", "v0"):
        t = time.perf_counter()
        out = train(TrainConfig(args.dataset, name, recipe, device="cuda",
                                options=TrainOptions(epochs=2, iterations=args.iterations,
                                                     val_iterations=2)), paths)
        dt = time.perf_counter() - t
        log = "".join(p.read_text() for p in out.glob("training_log_*.txt"))
        epoch_times = [line.split("Epoch time: ")[1] for line in log.splitlines()
                       if "Epoch time: " in line]
        print(f"{recipe}: trained 2 x {args.iterations} iterations in {dt:.1f} s; epoch times "
              f"{epoch_times}; compile: {'torch.compile' in log}")
    case = find_cases(work / "case")[0].load()
    adapter = NetworkAdapter(out.parent.parent / out.parent.name.replace("V0", "V4"),
                             device="cuda")
    engine = Engine(case.ct, case.pet)
    for n in (0, 1):
        t = time.perf_counter()
        work = engine.step("v4", adapter, Clicks(((32, 32, 48),) * n, ()), mirrors=7)
        torch.cuda.synchronize()
        print(f"engine step with {n} clicks on CUDA (7 mirrored passes): "
              f"{time.perf_counter() - t:.2f} s, {work.choice.tiles}/{work.choice.tiles_total} "
              f"tiles, {int(work.mask.sum())} voxels")
    print("GPU CHECK OK")


if __name__ == "__main__":
    main()
