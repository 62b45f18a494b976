"""Fitting a model set's SUV thresholds on validation cases."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from petloop.cli import app
from petloop.experiments.demo import routing_text, threshold_text
from petloop.inference.calibrate import (
    ThresholdScore,
    apply_suv_threshold,
    calibrate_thresholds,
    choose,
    routed_masks,
    score_case,
    summarize_scores,
)
from petloop.inference.modelset import load_model_set
from petloop.inference.pipeline import Pipeline, Session
from petloop.inference.postprocess import PostProcessing
from petloop.inference.routing import NoRoute, Route, Routing
from petloop.io.clicks import Clicks
from petloop.io.layouts import find_cases

runner = CliRunner()


def slow_dice(gt, pred):
    inter = n_gt = n_pred = 0
    for g, p in zip(gt.ravel().tolist(), pred.ravel().tolist(), strict=True):
        inter += g and p
        n_gt += g
        n_pred += p
    return math.nan if n_gt == 0 else 2 * inter / (n_gt + n_pred)


def test_threshold_scores_against_the_definition_written_out():
    rng = np.random.default_rng(3)
    shape = (12, 10, 9)
    pet = rng.gamma(2.0, 1.0, shape).astype(np.float32)
    gt = rng.random(shape) < 0.15
    masks = [(rng.random(shape) < 0.2) | (gt & (rng.random(shape) < p)) for p in (0.2, 0.6, 0.9)]
    thresholds = (0.0, 1.0, 2.0)
    scores = score_case(gt, masks, pet, (2.0, 2.0, 3.0), thresholds)
    assert scores.shape == (3, 3, 3)
    for t, thr in enumerate(thresholds):
        for k, m in enumerate(masks):
            kept = np.array([[[bool(m[i, j, kk]) and float(pet[i, j, kk]) >= thr
                               for kk in range(shape[2])] for j in range(shape[1])]
                             for i in range(shape[0])])
            assert scores[t, k, 0] == pytest.approx(slow_dice(gt, kept))
    # a negative control: Dice NaN, so only the lesion case counts for Dice
    empty = score_case(np.zeros(shape, bool), masks, pet, (2.0, 2.0, 3.0), thresholds)
    summary = summarize_scores([scores, empty], thresholds)
    for t, s in enumerate(summary):
        dice = scores[t, :, 0]
        assert s.dice_auc == pytest.approx((dice[0] + dice[2]) / 2 + dice[1])  # trapezoid
        assert s.dice_last == pytest.approx(dice[-1])
        fpv = [a[t, :, 1] for a in (scores, empty)]
        assert s.fpv_auc == pytest.approx(np.mean([(f[0] + f[2]) / 2 + f[1] for f in fpv]))


def test_choice_is_the_best_dice_auc_and_ties_go_to_the_higher_threshold():
    def s(t, d):
        return ThresholdScore(t, d, d, 0.0, 0.0)

    assert choose([s(0.0, 8.0), s(1.0, 8.2), s(1.5, 8.1)]).threshold == 1.0
    assert choose([s(0.0, 8.2), s(1.0, 8.2), s(1.5, 8.1)]).threshold == 1.0
    assert choose([s(0.0, math.nan), s(2.0, 7.0)]).threshold == 2.0
    with pytest.raises(ValueError, match="no validation case has a lesion"):
        choose([s(0.0, math.nan)])
    # with hand-overs: ties keep the set's own, then the higher threshold
    scores = [ThresholdScore(t, d, d, 0.0, 0.0, at) for at, t, d in
              ((3, 1.0, 8.2), (5, 0.5, 8.2), (5, 1.5, 8.1), (7, 2.0, 8.2))]
    assert (choose(scores, 5).handover, choose(scores, 5).threshold) == (5, 0.5)
    assert (choose(scores, 4).handover, choose(scores, 4).threshold) == (7, 2.0)


def test_handover_moves_the_first_route_only():
    birth_fg = Routing.of(Route("v4", max_background_clicks=4),
                          Route("v3", min_foreground_clicks=1), Route("v4"))
    assert birth_fg.handover == 5 and birth_fg.models == ("v4", "v3")
    assert birth_fg.with_handover(2).routes == ((Route("v4", max_background_clicks=1),)
                                                + birth_fg.routes[1:])
    # the next routes from the first step
    assert birth_fg.with_handover(0).routes == birth_fg.routes[1:]
    assert Routing.single("v2").handover is None
    assert Routing.of(Route("a", max_background_clicks=3), Route("a")).handover is None
    with pytest.raises(ValueError, match="no first model"):
        Routing.single("v2").with_handover(3)
    with pytest.raises(ValueError, match="non-empty"):
        Routing(())
    # the routed masks against the rule written out, clicks (background, lesion) per step
    masks = {m: [np.full(2, 10 * i + k) for k in range(4)] for i, m in enumerate(("v4", "v3"))}
    counts = [(0, 0), (1, 1), (2, 0), (3, 3)]
    got = routed_masks(birth_fg.with_handover(2), masks, counts)
    want = ["v4", "v4", "v4", "v3"]  # step 2: no lesion click, so v4 by birth-fg's fallback
    for k, model in enumerate(want):
        np.testing.assert_array_equal(got[k], masks[model][k])


def test_scribble_routes_answer_scribbles_and_leave_the_handover_alone():
    birth_fg = Routing.of(Route("v4", max_background_clicks=4),
                          Route("v3", min_foreground_clicks=1), Route("v4"))
    both = Routing((Route("s", interaction="scribbles"), *birth_fg.routes))
    for n_bg, n_fg in ((0, 0), (7, 0), (7, 3), (300, 40)):
        assert both.model_for(n_bg, n_fg, interaction="scribbles") == "s"
        assert both.model_for(n_bg, n_fg) == birth_fg.model_for(n_bg, n_fg)
    assert both.handover == 5 and both.models == ("s", "v4", "v3")
    assert both.with_handover(2).routes == (Route("s", interaction="scribbles"),
                                            *birth_fg.with_handover(2).routes)
    assert both.to_json()[0] == {"model": "s", "interaction": "scribbles"}
    assert both.clicks == birth_fg and birth_fg.clicks == birth_fg
    clicks_only = Routing.of(Route("p", interaction="clicks"))
    with pytest.raises(NoRoute, match="no route admits 2 background and 9 lesion scribble"):
        clicks_only.model_for(2, 9, interaction="scribbles")
    with pytest.raises(ValueError, match="interaction is one of"):
        Route("x", interaction="strokes")

def test_a_threshold_applied_afterwards_equals_a_run_with_it(model_set, work):
    """Calibration scores each candidate on masks predicted without a threshold."""
    case = next(c for c in (f.load() for f in find_cases(work[0] / "phantoms"))
                if c.label.array.any())
    ms = load_model_set(model_set)
    lesion = tuple(int(v) for v in np.argwhere(case.label.array)[0])
    clicks = Clicks((lesion,), ((0, 0, 0),))
    raw = Session(Pipeline(ms, postprocessing=PostProcessing.none()))
    raw.set_case(case.ct, case.pet, "fdg")
    unthresholded = np.asarray(raw.set_clicks(clicks).mask.array)
    pet = np.asarray(case.pet.array)
    removed = 0
    for threshold in (0.5, 1.5, 3.0):
        run = Session(Pipeline(ms, postprocessing=PostProcessing({"fdg": threshold})))
        run.set_case(case.ct, case.pet, "fdg")
        after = apply_suv_threshold(unthresholded, pet, threshold)
        np.testing.assert_array_equal(np.asarray(run.set_clicks(clicks).mask.array), after)
        removed += int(unthresholded.sum() - after.sum())
    assert removed > 0  # the thresholds did remove voxels, so the comparison means something


def _own_set(model_set, tmp_path):
    root = tmp_path / "set"
    root.mkdir()
    for name in ("manifest.json", "tracer_classifier.pt"):
        shutil.copyfile(model_set / name, root / name)
    return root


def test_calibrate_command_writes_the_manifest_and_the_scores(model_set, work, tmp_path):
    root = _own_set(model_set, tmp_path)
    phantoms = work[0] / "phantoms"
    before = (root / "manifest.json").read_text()
    args = ["models", "calibrate", "--models", str(root), "--data", str(phantoms),
            "--thresholds", "0,2,40", "--steps", "3"]
    dry = runner.invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "dry run" in dry.output and "Dice AUC" in dry.output
    assert (root / "manifest.json").read_text() == before
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    cal = json.loads((root / "calibration.json").read_text())["suv_threshold"]["fdg"]
    n_cases = len(find_cases(phantoms))
    assert len(cal["cases"]) == n_cases and cal["steps"] == 3 and cal["previous"] == 1.5
    assert [s["threshold"] for s in cal["scores"]] == [0.0, 1.5, 2.0, 40.0]  # with its own
    best = max(s["dice_auc"] for s in cal["scores"])
    assert cal["chosen"] == max(s["threshold"] for s in cal["scores"]
                                if s["dice_auc"] >= best - 1e-9)
    # no phantom voxel reaches SUV 40: nothing is left, which never wins
    assert cal["scores"][-1]["dice_auc"] == 0.0 and cal["chosen"] != 40.0
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["suv_threshold"] == {"fdg": cal["chosen"], "psma": 1.0}
    assert load_model_set(root).suv_threshold["fdg"] == cal["chosen"]
    assert cal["settings"]["data"] == [str(phantoms)]
    assert cal["settings"]["window"] == "sliding" and cal["settings"]["precision"] in ("fp32",
                                                                                     "bf16")
    # the demo's report says where the thresholds came from
    text = threshold_text(load_model_set(root))
    assert f"FDG {cal['chosen']:g} (fitted on {n_cases} validation cases)" in text
    assert "PSMA 1 (as set)" in text


def test_fitted_handover_scores_equal_runs_with_that_routing(model_set, work):
    """Every model runs each step once; a candidate hand-over takes the masks it routes to,
    which must score exactly as a run of the set with that routing."""
    ms = load_model_set(model_set)
    cases = find_cases(work[0] / "phantoms")

    pipeline = Pipeline(ms)
    fitted = calibrate_thresholds(pipeline, cases, thresholds=(0.0, 1.5), steps=3,
                                  routing=True)["fdg"]
    assert fitted.previous_handover == 5
    assert len(fitted.scores) == 5 * 2  # hand-overs 0..3 and its own, 2 thresholds
    for at in (0, 2):
        routes = ms.routing["fdg"].with_handover(at)
        moved = pipeline.sharing(routing={**ms.routing, "fdg": routes})
        run = calibrate_thresholds(moved, cases, thresholds=(0.0, 1.5), steps=3)["fdg"]
        assert run.routing is None
        got = [sc for sc in fitted.scores if sc.handover == at]
        assert [replace(sc, handover=None) for sc in got] == list(run.scores)
    best = max(sc.dice_auc for sc in fitted.scores)
    assert next(sc for sc in fitted.scores if sc.handover == fitted.chosen_handover
                and sc.threshold == fitted.chosen).dice_auc >= best - 1e-9
    assert fitted.routing == ms.routing["fdg"].with_handover(fitted.chosen_handover)


def test_error_driven_handover_scores_equal_runs_with_that_routing(model_set, work, tmp_path):
    """With error-driven clicks each candidate hand-over changes the clicks after it; the fit
    (predictions shared through a cache) must score exactly as the set run with that routing
    through the evaluation's own error-driven loop, at the set's threshold."""
    from petloop.inference.evaluate import case_steps

    ms = load_model_set(model_set)
    cases = find_cases(work[0] / "phantoms")
    lesioned = [c for c in cases if c.load().label.array.any()]
    assert 0 < len(lesioned) < len(cases)  # a negative control is left out
    pipeline = Pipeline(ms)
    fitted = calibrate_thresholds(pipeline, cases, steps=3, routing=True,
                                  clicks="error-driven")["fdg"]
    assert fitted.clicks == "error-driven" and fitted.cases == tuple(c.case_id for c in lesioned)
    assert fitted.chosen == fitted.previous == 1.5  # the threshold is the set's
    assert [sc.handover for sc in fitted.scores] == [0, 1, 2, 3, 5]
    for at in [sc.handover for sc in fitted.scores]:  # each shares cached steps with others
        session = Session(pipeline.sharing(
            routing={**ms.routing, "fdg": ms.routing["fdg"].with_handover(at)}))
        per_case = []
        for files in lesioned:
            runs = list(case_steps(session, files, tracer="fdg", clicks_mode="error-driven",
                                   steps=3))
            case = runs[0][0]
            per_case.append(score_case(np.asarray(case.label.array) != 0,
                                       [np.asarray(r.mask.array) for _, _, r in runs],
                                       np.asarray(case.pet.array), case.pet.spacing, [1.5]))
        want = summarize_scores(per_case, [1.5], at)
        assert [sc for sc in fitted.scores if sc.handover == at] == list(want)
    # written under its own key: the thresholds' entry stays; the demo names where it came from
    root = _own_set(model_set, tmp_path)
    args = ["models", "calibrate", "--models", str(root), "--data", str(work[0] / "phantoms"),
            "--steps", "2"]
    assert runner.invoke(app, [*args, "--thresholds", "2"]).exit_code == 0
    before = json.loads((root / "calibration.json").read_text())["suv_threshold"]
    refused = runner.invoke(app, [*args, "--clicks", "error-driven"])
    assert refused.exit_code == 2 and "add --routing" in refused.output
    refused = runner.invoke(app, [*args, "--clicks", "error-driven", "--routing",
                                  "--thresholds", "2"])
    assert refused.exit_code == 2 and "set's own SUV threshold" in " ".join(
        refused.output.split())
    result = runner.invoke(app, [*args, "--clicks", "error-driven", "--routing"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    fdg = sum(c.tracer == "fdg" for c in cases)
    assert f"FDG: {len(lesioned)} validation case(s) with lesions " \
        f"({fdg - len(lesioned)} without, left out), 2 click steps, error-driven " \
        f"clicks" in said and f"SUV thresholds kept fdg {before['fdg']['chosen']:g}" in said
    cal = json.loads((root / "calibration.json").read_text())
    assert cal["suv_threshold"] == before
    reader = cal["handover"]["fdg"]
    assert reader["clicks"] == "error-driven" and reader["lesion_cases"] == len(lesioned)
    best = max(sc["dice_auc"] for sc in reader["scores"])  # its own run: 2 steps, its precision
    assert reader["chosen_handover"] == max(
        (sc for sc in reader["scores"] if sc["dice_auc"] >= best - 1e-9),
        key=lambda sc: sc["handover"] == reader["previous_handover"])["handover"]
    routes = load_model_set(root).routing["fdg"]
    assert routes.to_json() == reader["routing"]
    if routes.handover is not None:
        assert routing_text(load_model_set(root)).endswith(
            f"(hand-over fitted on {len(lesioned)} validation cases with error-driven clicks)")
    else:  # hand-over 0 left v3 alone: nothing a later fit could move
        assert runner.invoke(app, [*args, "--thresholds", "2", "--routing"]).exit_code == 0
        assert json.loads((root / "calibration.json").read_text())["handover"] == cal["handover"]
        manifest = json.loads((root / "manifest.json").read_text())
        manifest["routing"]["fdg"] = ms.routing["fdg"].to_json()  # put it back
        (root / "manifest.json").write_text(json.dumps(manifest))
    # a later fit of the routing with the official clicks replaces it
    assert runner.invoke(app, [*args, "--thresholds", "2", "--routing"]).exit_code == 0
    assert "handover" not in json.loads((root / "calibration.json").read_text())


def test_calibrate_command_fits_the_routing(model_set, work, tmp_path):
    root = _own_set(model_set, tmp_path)
    phantoms = work[0] / "phantoms"
    args = ["models", "calibrate", "--models", str(root), "--data", str(phantoms),
            "--thresholds", "0,2", "--steps", "3", "--routing"]
    dry = runner.invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "hand-over at" in dry.output and "5 background" in dry.output
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    cal = json.loads((root / "calibration.json").read_text())["suv_threshold"]["fdg"]
    assert cal["previous_handover"] == 5 and cal["chosen_handover"] in (0, 1, 2, 5)
    assert {s["handover"] for s in cal["scores"]} == {0, 1, 2, 3, 5}
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["routing"]["fdg"] == cal["routing"]
    routes = load_model_set(root).routing["fdg"]
    assert routes.handover in (cal["chosen_handover"], None)  # None: the first route went
    assert f"hand-over fdg at {cal['chosen_handover']} background clicks" in \
        result.output.replace("\n", " ")
    # the demo's report says which model answers which clicks, and where that came from
    assert "FDG v4 up to 4 background clicks, v3 otherwise" in routing_text(
        load_model_set(model_set))
    text = routing_text(load_model_set(root))
    if len(routes.models) > 1:
        assert text.startswith("routing FDG ") and text.endswith(
            f"(hand-over fitted on {len(cal['cases'])} validation cases)")
    else:  # hand-over at 0 with BIRTH's rule: v3 alone is left
        assert cal["chosen_handover"] == 0 and text == "one model per tracer"


def test_calibrate_command_refuses_bad_input(model_set, work, tmp_path):
    root = _own_set(model_set, tmp_path)
    phantoms = work[0] / "phantoms"
    bad = runner.invoke(app, ["models", "calibrate", "--models", str(root), "--data",
                              str(phantoms), "--thresholds", "1,x"])
    assert bad.exit_code == 2 and "not a comma-separated list" in bad.output
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["routing"].pop("fdg")
    (root / "manifest.json").write_text(json.dumps(manifest))
    no_route = runner.invoke(app, ["models", "calibrate", "--models", str(root), "--data",
                                   str(phantoms), "--steps", "2"])
    assert no_route.exit_code == 2 and "has no route" in no_route.output
    assert not (root / "calibration.json").exists()


def test_a_calibration_the_manifest_cannot_hold_changes_nothing(model_set, tmp_path):
    """The manifest is written first and checked; if the check fails it is put back and the
    scores are not written, so manifest and calibration.json never disagree."""
    from petloop.inference.calibrate import TracerCalibration, write_calibration
    from petloop.inference.modelset import ModelSetError

    root = _own_set(model_set, tmp_path)
    before = (root / "manifest.json").read_text()
    score = ThresholdScore(2.0, 8.0, 0.8, 0.1, 0.2, 3)
    bad = TracerCalibration("fdg", ("c1",), 1, 11, 1.5, 2.0, (score,),
                            Routing.single("nowhere"), 5, 3)
    with pytest.raises(ModelSetError, match="nowhere"):
        write_calibration(root, {"fdg": bad})
    assert (root / "manifest.json").read_text() == before
    assert not (root / "calibration.json").exists()
    with pytest.raises(ValueError, match="no validation cases"):
        calibrate_thresholds(Pipeline(load_model_set(root)), [])
