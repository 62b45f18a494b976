"""Per-click latency of the session API on a default phantom on the CPU, and the share of each
click's time spent outside the network (click channels, preprocessing, export, threshold).

Trains a small v4 model for a few iterations (speed does not depend on how well it is trained),
then sets a default phantom case once and adds ten clicks one by one.

    .venv/bin/python bench/click_latency.py [--clicks 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=10)
    args = parser.parse_args()

    import numpy as np

    from petloop.clicks.simulate import simulate_clicks
    from petloop.inference.modelset import birth_routing, load_model_set
    from petloop.inference.pipeline import Pipeline, Session
    from petloop.io.layouts import find_cases
    from petloop.nnunet.dataset import BuildConfig, build_dataset
    from petloop.nnunet.paths import NnunetPaths
    from petloop.nnunet.train import TrainConfig, TrainOptions, train
    from petloop.phantom import PhantomConfig, write_phantoms

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_phantoms(PhantomConfig(seed=8, tracer="fdg", negative_fraction=0.0), root / "ph", 5)
        paths = NnunetPaths(root / "raw", root / "pre", root / "res")
        built = build_dataset(root / "ph", paths, BuildConfig(960, "Latency"))
        os.environ["nnUNet_n_proc_DA"] = "0"
        out = train(TrainConfig(960, "Dataset960_Latency", "v4", plans=built.plans_identifier,
                                options=TrainOptions(epochs=1, iterations=2, val_iterations=1)),
                     paths)
        models = {k: {"folder": str(out.parent)} for k in ("fdg_v4", "fdg_v3", "psma_v2")}
        (root / "manifest.json").write_text(json.dumps({
            "name": "bench", "models": models,
            "routing": birth_routing("fdg_v4", "fdg_v3", "psma_v2")}))
        pipeline = Pipeline(load_model_set(root))
        case = find_cases(root / "ph")[0].load()
        clicks = simulate_clicks(case.label.array, case.pet.array)
        session = Session(pipeline)
        t = time.perf_counter()
        session.set_case(case.ct, case.pet, "fdg")
        session.run()
        first = time.perf_counter() - t
        rows = []
        for n in range(args.clicks):
            kind, pts = ("tumor", clicks.tumor) if n % 2 == 0 else ("background",
                                                                    clicks.background)
            t = time.perf_counter()
            result = session.add_click(pts[n // 2], kind)
            rows.append((time.perf_counter() - t, result.seconds))
        total = [r[0] for r in rows]
        network = [r[1]["network"] for r in rows]
        outside = [r[0] - r[1]["network"] for r in rows]
        print(f"default phantom {case.pet.shape}, CPU, model patch "
              f"{pipeline.model(load_model_set(root).models['fdg_v4']).predictor.configuration_manager.patch_size}")  # noqa: E501
        print(f"set case + first mask: {first:.2f} s (tracer given, preprocessing once)")
        print(f"per click over {args.clicks} clicks: median {statistics.median(total):.2f} s, "
              f"max {max(total):.2f} s")
        print(f"network {statistics.median(network):.2f} s; outside the network "
              f"{100 * sum(outside) / sum(total):.1f} % of each click "
              f"(click channels, export, threshold)")
        assert np.isfinite(total).all()


if __name__ == "__main__":
    main()
