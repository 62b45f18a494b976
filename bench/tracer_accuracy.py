"""Tracer classifier on phantoms: training time on this machine, held-out accuracy per tracer,
and the size the weights would take in the repository.

Trains on phantoms of one seed and tests on phantoms of another (never seen), as the demo does.
Targets: at least 99 % accuracy on the held-out phantoms of each tracer; training (phantoms,
MIPs and network) in under two minutes on 2 CPU cores if the demo is to train it.

    .venv/bin/python bench/tracer_accuracy.py [--train 80] [--test 100]
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
    args = parser.parse_args()

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
        write_phantoms(PhantomConfig(seed=100, tracer="mixed"), root / "train", args.train)
        examples = load_examples(root / "train")
        t1 = time.perf_counter()
        model, history, _ = train_classifier(examples, TracerTrainConfig(
            epochs=12, patience=4, lr=5e-4))
        t2 = time.perf_counter()
        write_phantoms(PhantomConfig(seed=200, tracer="mixed"), root / "test", args.test)
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


if __name__ == "__main__":
    main()
