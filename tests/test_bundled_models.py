"""The bundled phantom model set (models/phantom): the demo's experiment on a smaller run.

The demo itself (`make demo`) runs more held-out phantoms; this run uses three, with a seed never
used in training, and checks what the paper's experiment must show on them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from petloop.demo import ERROR_DRIVEN, DemoConfig, run_demo
from petloop.inference.export import folder_size
from petloop.inference.modelset import load_model_set

BUNDLED = Path(__file__).resolve().parents[1] / "models" / "phantom"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    assert (BUNDLED / "manifest.json").is_file(), f"{BUNDLED} is missing"
    out = tmp_path_factory.mktemp("demo")
    return run_demo(DemoConfig(models=BUNDLED, out=out, cases=3, seed=9002,
                               negative_fraction=0.0))


def test_the_bundled_set_is_complete_and_small():
    ms = load_model_set(BUNDLED)
    assert set(ms.models) == {"fdg_v4", "fdg_v3", "psma_v2"} and ms.tracer_classifier
    assert folder_size(BUNDLED) <= 60 * 10**6
    manifest = json.loads((BUNDLED / "manifest.json").read_text())
    assert "not for patients" in manifest["description"]


def test_dice_rises_with_the_clicks_and_false_positives_fall(demo):
    s = demo["summary"]
    fdg = next(m for m in ("hybrid", "v4") if m in s["models"])
    dice = [v["mean"] for v in s["models"][fdg]["tracers"]["fdg"]["per_step"]["dice"]]
    fpv = [v["mean"] for v in s["models"][fdg]["tracers"]["fdg"]["per_step"]["fpv"]]
    assert dice[10] - dice[0] >= 0.05
    # the aim is 0.85; the phantom set reaches 0.85 on these draws (0.83 on the demo's), 1.06
    # of the isocontour drawn around the true lesions here (1.13 there; README)
    assert dice[10] >= 0.75
    reference = demo["references"]["fdg"]
    assert reference.cases >= 1 and dice[10] >= 0.95 * reference.dice
    assert fpv[10] <= fpv[0]
    assert ERROR_DRIVEN in s["models"]
    report = demo["report"].read_text()
    assert "## What the numbers show" in report and "| clicks | Dice" in report
