"""Training speed of a click-guided recipe on the CPU plan: iterations per second and the share
of each iteration spent waiting for data (online click rendering and augmentation included).

Builds a small default-size phantom dataset in a temporary work directory, then runs nnU-Net's
own data loading (background workers, as in training) and ``train_step`` for a recipe, timing
the wait for each batch and the step itself. Target: data waiting under 20 % of an iteration.

    .venv/bin/python bench/training_speed.py [--recipe v4] [--iterations 20] [--workers 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="v4")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1, help="data augmentation processes")
    parser.add_argument("--cases", type=int, default=8)
    args = parser.parse_args()

    import torch

    from petloop.nnunet.dataset import BuildConfig, build_dataset
    from petloop.nnunet.paths import NnunetPaths
    from petloop.nnunet.train import TrainConfig, TrainOptions, check
    from petloop.phantom import PhantomConfig, write_phantoms

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_phantoms(PhantomConfig(seed=5, tracer="fdg", negative_fraction=0.1),
                       root / "phantoms", args.cases)
        paths = NnunetPaths(root / "raw", root / "pre", root / "res")
        built = build_dataset(root / "phantoms", paths, BuildConfig(950, "Bench"))
        os.environ["nnUNet_n_proc_DA"] = str(args.workers)
        config = TrainConfig(950, "Dataset950_Bench", args.recipe, plans=built.plans_identifier,
                             options=TrainOptions(epochs=1, iterations=args.iterations))
        check(config, paths)
        from nnunetv2.run.run_training import get_trainer_from_args

        trainer = get_trainer_from_args(config.dataset, "3d_fullres", "all",
                                        config.trainer_class.__name__, config.plans,
                                        device=torch.device("cpu"))
        trainer.on_train_start()
        trainer.on_train_epoch_start()
        waits, steps = [], []
        for _ in range(3):  # warm-up
            trainer.train_step(next(trainer.dataloader_train))
        for _ in range(args.iterations):
            t0 = time.perf_counter()
            batch = next(trainer.dataloader_train)
            t1 = time.perf_counter()
            trainer.train_step(batch)
            t2 = time.perf_counter()
            waits.append(t1 - t0)
            steps.append(t2 - t1)
        trainer.on_train_end()
        total = sum(waits) + sum(steps)
        patch = trainer.configuration_manager.patch_size
        print(f"recipe {args.recipe}, patch {patch}, batch {trainer.batch_size}, "
              f"{args.workers} data worker(s), {torch.get_num_threads()} torch threads")
        print(f"iterations per second: {args.iterations / total:.3f} "
              f"({total / args.iterations:.2f} s per iteration)")
        print(f"waiting for data: {100 * sum(waits) / total:.1f} % of each iteration "
              f"(train step {sum(steps) / args.iterations:.2f} s)")
        print("target met (< 20 %)" if sum(waits) / total < 0.2 else "TARGET MISSED")


if __name__ == "__main__":
    main()
