"""The demo's configuration: its phantom grids and the paper's exact configuration column."""

from __future__ import annotations

import pytest

from petloop.demo import BIRTH, BIRTH_BUDGET, GRIDS, DemoConfig, birth_column, grid_text
from petloop.inference.modelset import DEFAULT_THRESHOLDS, Route, load_model_set
from petloop.models import BUNDLED_MODEL_SET
from petloop.phantom import PRESETS


def test_the_paper_column_is_birth_exactly():
    ms = load_model_set(BUNDLED_MODEL_SET)
    col = birth_column(ms)
    assert col.name == BIRTH and col.tracer == "fdg" and col.time_budget == BIRTH_BUDGET == 40
    assert col.model_set.suv_threshold == DEFAULT_THRESHOLDS == {"fdg": 1.5, "psma": 1.0}
    # V4 below 5 background clicks, V3 from 5, whatever hand-over the set itself fitted
    assert col.model_set.routing["fdg"] == (Route("fdg_v4", max_background_clicks=4),
                                            Route("fdg_v3"))
    assert col.model_set.route("fdg", 4, 9).name == "fdg_v4"
    assert col.model_set.route("fdg", 5, 0).name == "fdg_v3"
    one = ms.__class__(**{**ms.__dict__, "routing": {"fdg": (Route("fdg_v4"),)}})
    assert birth_column(one) is None


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
    from petloop.demo import run_demo

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
