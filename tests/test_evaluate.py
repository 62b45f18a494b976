from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from conftest import TRUNK_TOP
from scipy import ndimage
from typer.testing import CliRunner

from petloop.cli import app
from petloop.io.layouts import Case, find_cases, write_case
from petloop.io.volume import read_volume, write_volume
from petloop.metrics.interactive import (
    evaluate_model,
    mean_interval,
    merge,
    paired_difference,
    summarize,
)
from petloop.metrics.official import auc, compute_metrics
from petloop.phantom import PhantomConfig, generate_case

runner = CliRunner()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = root / "data"
    cfg = PhantomConfig(seed=9, tracer="mixed", shape=(48, 48, 64), spacing=(4.0, 4.0, 6.0),
                        top_mm=TRUNK_TOP, negative_fraction=0.0, lesions=(2, 4))
    cases = [generate_case(cfg, i).case for i in (0, 5)]  # an FDG and a PSMA case with lesions
    neg = generate_case(PhantomConfig(seed=9, tracer="fdg", shape=(48, 48, 64),
                                      spacing=(4.0, 4.0, 6.0), top_mm=TRUNK_TOP,
                                      negative_fraction=1.0), 5).case
    cases.append(neg)
    for c in cases:
        write_case(c, data, "gc")
    # two "models": A grows towards the truth with the clicks, B is the truth dilated
    for model in ("A", "B"):
        for c in cases:
            gt = c.label.array.astype(bool)
            fp_blob = np.zeros_like(gt)
            fp_blob[2:5, 2:5, 2:5] = True
            for k in range(11):
                if model == "A":
                    pred = ndimage.binary_erosion(gt, iterations=max(0, 2 - k // 4))
                    if k < 3:
                        pred = pred | fp_blob
                else:
                    pred = ndimage.binary_dilation(gt)
                if c is cases[1] and model == "A" and k == 7:
                    continue  # one missing step
                write_volume(c.label.with_array(pred.astype(np.uint8)),
                             root / model / f"{c.case_id}_step{k}.nii.gz")
    return root, cases


def test_records_match_direct_metrics(dataset):
    root, cases = dataset
    files = find_cases(root / "data")
    ev = evaluate_model(files, root / "A", "A")
    assert len(ev.records) == 3 * 11 - 1
    assert len(ev.missing) == 1 and f"{cases[1].case_id}_step7" in ev.missing[0]
    for r in ev.records[:15]:
        case = next(c for c in cases if c.case_id == r.case)
        pred = read_volume(root / "A" / f"{r.case}_step{r.step}.nii.gz").array.astype(bool)
        m = compute_metrics(case.label.array.astype(bool), pred, case.label.spacing)
        assert (r.dice == m.dice or (math.isnan(r.dice) and math.isnan(m.dice)))
        assert r.fpv == m.fpv


def test_summary_ranking_handles_nan_and_missing(dataset):
    root, cases = dataset
    files = find_cases(root / "data")
    ev = merge([evaluate_model(files, root / m, m) for m in ("A", "B")])
    s = summarize(ev)
    a = s["models"]["A"]
    assert a["cases"] == 3 and a["negative_controls"] == 1
    # Dice at step 10 is defined for the two positive cases only
    r = a["ranking"]
    assert r["dice_final"]["n"] == 2 and r["fpv_final"]["n"] == 3
    # the case with a missing step has no AUC
    assert r["incomplete_cases"] == 1 and r["dice_auc"]["n"] == 1 and r["fpv_auc"]["n"] == 2
    recs = [x for x in ev.records if x.model == "A" and x.case == cases[0].case_id]
    expected_auc = auc([x.dice for x in sorted(recs, key=lambda x: x.step)])
    assert r["dice_auc"]["mean"] == pytest.approx(expected_auc)
    dice10 = [x.dice for x in ev.records if x.model == "A" and x.step == 10 and not x.negative]
    assert a["per_step"]["dice"][10]["mean"] == pytest.approx(np.mean(dice10))
    assert set(a["tracers"]) == {"fdg", "psma"}
    assert len(a["negative_fpv"]) == 11
    assert a["per_step"]["fpv"][0]["mean"] > a["per_step"]["fpv"][10]["mean"]


def test_evaluate_command(dataset, tmp_path):
    root, _ = dataset
    out = tmp_path / "ev"
    result = runner.invoke(app, ["evaluate", "--data", str(root / "data"), "--pred",
                                 f"A={root / 'A'}", "--pred", f"B={root / 'B'}", "--out",
                                 str(out)])
    assert result.exit_code == 0, result.output
    assert "Ranking numbers" in result.output and "FDG cases" in result.output
    assert "missing" in result.output
    rows = list(csv.DictReader((out / "metrics_per_step.csv").open()))
    assert len(rows) == 2 * 33 - 1
    assert {r["dice"] for r in rows if r["negative_control"] == "1"} == {"NaN"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"]["A"]["per_step"]["dice"][0]["mean"] is not None
    assert summary["models"]["A"]["negative_fpv"][0]["n"] == 1
    for name in ("curves.png", "curves_fdg.png", "curves_psma.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


def test_evaluate_rejects_a_prediction_on_another_grid(dataset, tmp_path):
    root, cases = dataset
    bad = tmp_path / "bad"
    c = cases[0]
    for k in range(11):
        vol = c.label
        from petloop.io.volume import Volume

        write_volume(Volume(vol.array, (1.0, 1.0, 1.0), vol.origin), bad /
                     f"{c.case_id}_step{k}.nii.gz")
    single = tmp_path / "single"
    write_case(Case(c.case_id, c.ct, c.pet, c.label, None, None, c.tracer), single, "gc")
    result = runner.invoke(app, ["evaluate", "--data", str(single), "--pred", str(bad), "--out",
                                 str(tmp_path / "o")])
    assert result.exit_code == 2 and "is on another grid than the ground truth" in result.output


def test_metrics_and_report_commands(dataset, tmp_path):
    root, cases = dataset
    c = cases[0]
    gt = root / "data" / c.case_id / "labels" / f"{c.case_id}.mha"
    pred = root / "B" / f"{c.case_id}_step0.nii.gz"
    result = runner.invoke(app, ["metrics", "--gt", str(gt), "--pred", str(pred), "--json"])
    assert result.exit_code == 0, result.output
    m = json.loads(result.output)
    assert 0 < m["dice"] < 1 and m["fpv"] == 0
    assert m["dmm"]["dsc"] == pytest.approx(m["dice"])  # autoPET V beside autoPET IV
    assert m["dmm"]["tp"] + m["dmm"]["fn"] == m["dmm"]["gt_lesions"] > 0
    neg = cases[2]
    neg_gt = root / "data" / neg.case_id / "labels" / f"{neg.case_id}.mha"
    result = runner.invoke(app, ["metrics", "--gt", str(neg_gt), "--pred", str(neg_gt),
                                 "--json"])
    assert json.loads(result.output)["dice"] is None
    result = runner.invoke(app, ["metrics", "--gt", str(neg_gt), "--pred", str(neg_gt)])
    assert "Dice NaN" in result.output
    pet = root / "data" / c.case_id / "images" / "pet" / f"{c.case_id}.mha"
    result = runner.invoke(app, ["report", "--pet", str(pet), "--mask", str(gt), "--json",
                                 str(tmp_path / "r.json"), "--csv", str(tmp_path / "r.csv")])
    assert result.exit_code == 0, result.output
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["lesion_count"] >= 1 and rep["tmtv_ml"] > 0
    assert len((tmp_path / "r.csv").read_text().splitlines()) == rep["lesion_count"] + 1
    organs = root / "data" / c.case_id / "organs" / f"{c.case_id}.mha"
    result = runner.invoke(app, ["report", "--pet", str(pet), "--mask", str(organs)])
    assert result.exit_code == 2 and "is not binary" in result.output
    result = runner.invoke(app, ["report", "--pet", str(pet), "--mask", str(organs), "--label",
                                 "3"])
    assert result.exit_code == 0 and "lesion(s)" in result.output


def _t_quantile(p: float, df: int) -> float:
    """Student's t quantile by integrating its density on a fine grid (slow and obvious)."""
    x = np.linspace(0, 200, 2_000_001)
    c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    cdf = 0.5 + np.cumsum(c * (1 + x * x / df) ** (-(df + 1) / 2)) * (x[1] - x[0])
    return float(x[np.searchsorted(cdf, p)])


@pytest.mark.parametrize("n", [2, 5, 30])
def test_mean_interval_is_the_t_interval(n):
    lo, hi = mean_interval(0.8, 0.12, n)
    half = _t_quantile(0.975, n - 1) * 0.12 / math.sqrt(n)
    assert lo == pytest.approx(0.8 - half, abs=2e-3 * half)
    assert hi == pytest.approx(0.8 + half, abs=2e-3 * half)
    assert all(math.isnan(v) for v in mean_interval(0.8, 0.0, 1))


def test_paired_difference_pairs_by_case_and_skips_what_is_undefined():
    a = {"c1": 0.9, "c2": 0.7, "c3": 0.8, "c4": math.nan, "c5": 0.6}
    b = {"c1": 0.8, "c2": 0.75, "c3": 0.6, "c4": 0.5, "c6": 0.1}  # c5, c6 unpaired
    d = paired_difference(a, b)
    diffs = [0.9 - 0.8, 0.7 - 0.75, 0.8 - 0.6]  # c1, c2, c3 by hand
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in diffs) / 2)
    half = _t_quantile(0.975, 2) * sd / math.sqrt(3)
    assert d.n == 3 and d.mean == pytest.approx(mean)
    assert (d.lo, d.hi) == pytest.approx((mean - half, mean + half), abs=2e-3 * half)
    assert not d.separates  # three cases this spread cannot tell the two apart
    assert d.text().startswith(f"difference {mean:+.3f}, 95% CI ") and "over 3 cases" in d.text()
    # a consistent difference separates, even over few cases; the means alone say nothing of it
    close = paired_difference({c: 0.5 + i / 100 for i, c in enumerate("abcd")},
                              {c: 0.48 + i / 100 + (i % 2) / 1000 for i, c in enumerate("abcd")})
    assert close.separates and close.lo > 0
    one = paired_difference({"c1": 0.2}, {"c1": 0.1, "c2": 0.3})
    assert one.n == 1 and math.isnan(one.lo) and not one.separates
    assert one.text(unit=" ml") == "difference +0.100 ml (1 case: no interval)"
    none = paired_difference({"c1": math.nan}, {"c1": 0.1})
    assert none.n == 0 and math.isnan(none.mean) and none.text() == "no case has both values"
    wide = paired_difference({"a": 0.9, "b": 0.1}, {"a": 0.1, "b": 0.6})
    assert wide.lo < -1 and wide.hi > 1 and "CI -1.000 to +1.000" in wide.text(bounds=(-1, 1))
