"""The demo's configuration: its phantom grids and the paper's exact configuration column."""

from __future__ import annotations

import json

import pytest

from petloop.experiments.demo import (
    BIRTH,
    BIRTH_BUDGET,
    GRIDS,
    DemoConfig,
    birth_column,
    columns,
    grid_text,
)
from petloop.experiments.findings import Roles, findings
from petloop.inference.modelset import load_model_set
from petloop.inference.postprocess import DEFAULT_THRESHOLDS
from petloop.inference.routing import Route, Routing
from petloop.models import BUNDLED_MODEL_SET
from petloop.phantom import PRESETS


def test_the_paper_column_is_birth_exactly():
    ms = load_model_set(BUNDLED_MODEL_SET)
    col = birth_column(ms)
    assert col.name == BIRTH and col.tracer == "fdg" and col.time_budget == BIRTH_BUDGET == 40
    assert col.budget_mode == "birth"  # the published rule, order and logit average
    assert col.postprocessing.suv_threshold == DEFAULT_THRESHOLDS == {"fdg": 1.5, "psma": 1.0}
    # V4 below 5 background clicks, V3 from 5, whatever hand-over the set itself fitted
    assert col.routing == Routing.of(Route("fdg_v4", max_background_clicks=4), Route("fdg_v3"))
    assert col.routing.model_for(4, 9) == "fdg_v4" and col.routing.model_for(5, 0) == "fdg_v3"
    one = ms.__class__(**{**ms.__dict__, "routing": {"fdg": Routing.single("fdg_v4")}})
    assert birth_column(one) is None


def test_columns_and_roles_come_from_the_routing():
    """The demo names no model: its columns are the routing's models and the hybrid, and the
    comparisons take their parts from the hand-over."""
    ms = load_model_set(BUNDLED_MODEL_SET)
    assert [(c.name, c.tracer) for c in columns(ms)] == [
        ("v4", "fdg"), ("v3", "fdg"), ("hybrid", "fdg"), ("v2", "psma")]
    assert Roles.of(ms.routing["fdg"]) == Roles("v4", "v3")
    assert Roles.of(ms.routing["psma"]) is None
    renamed = {"fdg": Routing.of(Route("fdg_alpha", max_background_clicks=2),
                                 Route("fdg_beta"))}
    assert Roles.of(renamed["fdg"]) == Roles("alpha", "beta")
    up = [0.5 + 0.04 * k for k in range(11)]
    fpv = [1.0] * 11
    summary = {"n_steps": 11, "models": {
        m: {"tracers": {"fdg": {"per_step": {"dice": [{"mean": d} for d in curve],
                                             "fpv": [{"mean": f} for f in fpv]}}}}
        for m, curve in (("alpha", up), ("beta", [d - 0.1 for d in up]), ("hybrid", up))}}
    claims = [f.claim for f in findings(summary, roles=Roles.of(renamed["fdg"]))]
    assert any("after the hand-over (beta)" in c and "(alpha)" in c for c in claims)
    assert not any("hand-over" in c for c in findings_claims(summary))


def findings_claims(summary):
    return [f.claim for f in findings(summary)]


def test_grids_are_adult_presets():
    for grid in GRIDS.values():
        assert set(grid) == {"fdg", "psma"} and set(grid.values()) <= set(PRESETS)
    assert grid_text("trunk") == "144 x 104 x 64 voxels of 3 x 3 x 4 mm (trunk)"
    assert "FDG 400 x 400 x 326 voxels of 2.0364 x 2.0364 x 3 mm" in grid_text("autopet")


def test_an_unknown_grid_is_refused():
    with pytest.raises(ValueError, match="unknown grid 'tiny'"):
        DemoConfig(models=BUNDLED_MODEL_SET, grid="tiny")


def test_the_paper_column_runs(model_set, tmp_path):
    """The paper's column on one FDG phantom, two click steps: its own folder of masks, its
    own rows in the summary, beside the set's own columns."""
    from petloop.experiments.demo import run_demo

    out = tmp_path / "demo"
    result = run_demo(DemoConfig(models=model_set, out=out, cases=1, steps=2,
                                 compare_error_driven=False))
    models = result["summary"]["models"]
    assert BIRTH in models and {"v4", "v3", "hybrid"} <= set(models)
    assert len(models[BIRTH]["per_step"]["dice"]) == 2
    case = next(p.name for p in (out / "phantoms" / "fdg").iterdir() if p.is_dir())
    masks = sorted(p.name for p in (out / "predictions" / f"fdg_{BIRTH}").glob("*.nii.gz"))
    assert len(masks) == 2 and all(m.startswith(case) for m in masks)
    assert BIRTH in (out / "report.md").read_text()


def test_the_autopet5_part_pairs_scribble_and_point_models(model_set, trained, tmp_path):
    """With scribble models in the set, the loop runs twice on the same held-out phantoms and
    the report pairs the two by case."""
    import shutil

    from petloop.experiments.demo5 import POINT_MODELS, SCRIBBLE_MODELS, run_demo_autopet5
    from petloop.inference.export import add_scribble_models

    ms = tmp_path / "set"
    shutil.copytree(model_set, ms)
    add_scribble_models(ms, {"fdg": trained["scribbles"].parent})
    out = tmp_path / "demo5"
    result = run_demo_autopet5(DemoConfig(models=ms, out=out, cases=2, steps=6),
                               empty_region="fixed")
    summary = result["summary"]
    assert summary["protocol"] == "autopet5" and summary["n_steps"] == 6
    assert set(summary["models"]) == {SCRIBBLE_MODELS, POINT_MODELS}
    assert summary["paired"]["baseline"] == POINT_MODELS
    logs = sorted((out / "predictions" / "scribble_models").glob("*/steps.json"))
    models = {s.get("model") for log in logs for s in json.loads(log.read_text())["steps"]}
    assert "fdg_scribbles" in models  # the FDG case's scribble steps went to the scribble model
    report = (out / "report.md").read_text()
    assert "Against point models" in report and "| step |" in report
