"""Tracer classifier on phantoms: training time on this machine, held-out accuracy per tracer,
and the size the weights would take in the repository.

Trains on phantoms of one seed and tests on phantoms of another (never seen), as the demo does.
Targets: at least 99 % accuracy on the held-out phantoms of each tracer; training (phantoms,
MIPs and network) in under two minutes on 2 CPU cores if the demo is to train it.

    .venv/bin/python bench/tracer_accuracy.py [--train 80] [--test 100] [--preset quick]
    .venv/bin/python bench/tracer_accuracy.py --weights bundled --test 40   # no training

With ``--weights`` (a file, or ``bundled`` for the bundled set's) nothing is trained: the
weights classify the held-out phantoms only.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=80)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--preset", default="quick", help="the phantoms' grid (a preset)")
    parser.add_argument("--weights", default=None,
                        help="classify with these weights ('bundled': the bundled set's)")
    args = parser.parse_args()
    if args.weights is not None:
        held_out(args)
        return

    from petloop.phantom import PhantomConfig, write_phantoms
    from petloop.tracer.train import (
        TracerTrainConfig,
        evaluate,
        load_examples,
        save_weights,
        train_classifier,
    )

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        write_phantoms(PhantomConfig.preset(args.preset, seed=100, tracer="mixed"),
                       root / "train", args.train)
        examples = load_examples(root / "train")
        t1 = time.perf_counter()
        model, history, _ = train_classifier(examples, TracerTrainConfig(
            epochs=12, patience=4, lr=5e-4))
        t2 = time.perf_counter()
        write_phantoms(PhantomConfig.preset(args.preset, seed=200, tracer="mixed"),
                       root / "test", args.test)
        test = load_examples(root / "test")
        by_tracer = {}
        for label, name in ((0, "fdg"), (1, "psma")):
            subset = [e for e in test if e.label == label]
            by_tracer[name] = (evaluate(model, subset, torch.device("cpu"))[1], len(subset))
        size = save_weights(model, root / "w.pt", {}, half=True).stat().st_size
    print(f"training data: {args.train} phantoms + MIPs in {t1 - t0:.1f} s; "
          f"network: {len(history)} epochs in {t2 - t1:.1f} s; total {t2 - t0:.1f} s")
    for name, (acc, n) in by_tracer.items():
        print(f"held-out {name}: accuracy {100 * acc:.1f} % of {n} phantoms")
    print(f"half-precision weights: {size / 2**20:.1f} MiB")
    ok = all(acc >= 0.99 for acc, _ in by_tracer.values())
    print("accuracy target met (>= 99 % per tracer)" if ok else "ACCURACY TARGET MISSED")
    print(f"train in the demo: {'yes' if t2 - t0 < 120 else 'no'} (under two minutes)")


def held_out(args) -> None:
    """Given weights on held-out phantoms: accuracy per tracer with a Wilson interval."""
    import math

    from petloop.inference.modelset import load_model_set
    from petloop.models import BUNDLED_MODEL_SET
    from petloop.phantom import PhantomConfig, write_phantoms
    from petloop.tracer.classifier import TracerClassifier
    from petloop.tracer.train import evaluate, load_examples

    weights = (load_model_set(BUNDLED_MODEL_SET).tracer_classifier
               if args.weights == "bundled" else Path(args.weights))
    model = TracerClassifier(weights).model
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_phantoms(PhantomConfig.preset(args.preset, seed=200, tracer="mixed"),
                       Path(tmp) / "test", args.test)
        test = load_examples(Path(tmp) / "test")
        print(f"{args.test} held-out phantoms ({args.preset}, seed 200) and their MIPs in "
              f"{time.perf_counter() - t0:.0f} s; weights {weights}")
        for label, name in ((0, "fdg"), (1, "psma")):
            subset = [e for e in test if e.label == label]
            acc, n = evaluate(model, subset, torch.device("cpu"))[1], len(subset)
            z, k = 1.96, round(acc * n)  # Wilson score interval
            centre = (k + z * z / 2) / (n + z * z)
            half = z * math.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
            print(f"held-out {name}: accuracy {100 * acc:.1f} % of {n} phantoms "
                  f"(95 % interval {100 * (centre - half):.1f}-{100 * (centre + half):.1f} %)")


if __name__ == "__main__":
    main()
