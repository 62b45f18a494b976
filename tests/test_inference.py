"""The inference pipeline on phantoms with tiny CPU-trained models (the session fixtures)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from petloop.cli import app
from petloop.inference.engine import MIRROR_ORDER, Engine, mirrors_that_fit, usable_mirrors
from petloop.inference.modelset import InferenceSettings, ModelSetError, load_model_set
from petloop.inference.pipeline import Pipeline, Session, whole_tile
from petloop.io.clicks import Clicks, write_clicks
from petloop.io.layouts import Case, find_cases, write_case
from petloop.io.volume import Volume, VolumeError, read_volume, write_volume
from petloop.nnunet.adapter import NetworkAdapter
from petloop.tracer.classifier import MipClassifier

runner = CliRunner()


@pytest.fixture(scope="session")
def pipeline(model_set):
    return Pipeline(load_model_set(model_set))


@pytest.fixture(scope="session")
def case(work):
    root = work[0]
    return next(c for c in (f.load() for f in find_cases(root / "phantoms"))
                if c.label.array.any())


def test_routing_follows_the_birth_rule(model_set):
    ms = load_model_set(model_set)
    assert ms.route("fdg", 0, 0).name == "fdg_v4" and ms.route("fdg", 4, 4).name == "fdg_v4"
    assert ms.route("fdg", 5, 5).name == "fdg_v3" and ms.route("fdg", 10, 10).name == "fdg_v3"
    assert ms.route("fdg", 7, 0).name == "fdg_v3"  # the published rule counts background only
    assert ms.route("psma", 7, 0).name == "psma_v2"


def test_birth_fg_routing_keeps_the_stochastic_model_until_a_lesion_is_clicked(model_set,
                                                                               tmp_path):
    from petloop.inference.routing import birth_routing

    manifest = json.loads((model_set / "manifest.json").read_text())
    manifest["routing"] = birth_routing("fdg_v4", "fdg_v3", "psma_v2", "birth-fg")
    manifest["tracer_classifier"] = str(model_set / manifest["tracer_classifier"])
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    ms = load_model_set(tmp_path)
    for n_bg in range(11):  # against the rule written out
        for n_fg in range(11):
            want = "fdg_v3" if n_bg >= 5 and n_fg >= 1 else "fdg_v4"
            assert ms.route("fdg", n_bg, n_fg).name == want
    assert ms.to_json()["routing"]["fdg"] == manifest["routing"]["fdg"]
    manifest["routing"]["fdg"][1]["min_foreground_clicks"] = -1
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelSetError, match=r"routing.fdg\[1\].min_foreground_clicks must be"):
        load_model_set(tmp_path)
    with pytest.raises(ValueError, match="unknown routing 'birth-x'"):
        birth_routing("a", "b", "c", "birth-x")


def test_manifest_errors_name_what_is_missing(model_set, tmp_path):
    with pytest.raises(ModelSetError, match="no model set manifest"):
        load_model_set(tmp_path)
    bad = json.loads((model_set / "manifest.json").read_text())
    bad["routing"]["fdg"][0]["model"] = "fdg_v9"
    (tmp_path / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(ModelSetError, match="names model 'fdg_v9'"):
        load_model_set(tmp_path)
    bad = json.loads((model_set / "manifest.json").read_text())
    bad["models"]["fdg_v4"]["folds"] = [3]
    (tmp_path / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(ModelSetError, match="fold_3/checkpoint_final.pth is missing"):
        load_model_set(tmp_path)
    del bad["routing"]
    bad["models"]["fdg_v4"]["folds"] = ["all"]
    (tmp_path / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(ModelSetError, match="missing key 'routing'"):
        load_model_set(tmp_path)


def test_tta_budget_choice():
    # every pass cold (all tiles to compute): the published rule int((budget - t) / t)
    rng = np.random.default_rng(2)
    for _ in range(200):
        t, budget = float(rng.uniform(0.5, 4)), float(rng.uniform(0, 40))
        ratio = (budget - t) / t
        if abs(ratio - round(ratio)) < 1e-6:
            continue
        assert mirrors_that_fit([27] * 7, t, t / 27, budget) == max(0, min(7, int(ratio)))
    # warm passes cost only the tiles a click reaches
    assert mirrors_that_fit([3, 3, 27, 3], 1.0, 0.1, 2.0) == 2
    assert mirrors_that_fit([0] * 7, 5.0, 0.1, 5.0) == 7
    assert usable_mirrors((0, 1, 2)) == MIRROR_ORDER
    assert usable_mirrors((1, 2)) == ((2,), (1,), (2, 1))
    assert usable_mirrors(()) == ()


def test_the_birth_rule_against_the_published_expression():
    """BIRTH's code: ``min(int((40 - total) / total), 7)`` passes for ``total`` = tiles x the
    plain time of a tile (0 when ``total`` is 0), in ``itertools.combinations`` order over the
    allowed axes."""
    import itertools

    from petloop.inference.engine import BIRTH_MIRROR_ORDER, birth_mirrors

    def published(t, n, budget=40):
        total = n * t
        return min(int((budget - total) / total), 7) if total > 0 else 0

    rng = np.random.default_rng(4)
    for n in (1, 7, 60, 399):
        t = rng.uniform(0.001, 3.0, 200)
        np.testing.assert_array_equal(birth_mirrors(t, n, 40.0), [published(v, n) for v in t])
    # an untimed tile (NaN), no time, no tiles, a plain cost over the budget: none
    np.testing.assert_array_equal(birth_mirrors([np.nan, 0.0, 1.0], 50, 40.0), [0, 0, 0])
    np.testing.assert_array_equal(birth_mirrors([1.0], 0, 40.0), [0])
    np.testing.assert_array_equal(birth_mirrors([0.01, 0.5], 10, 40.0, most=2), [2, 2])
    for allowed in ((0, 1, 2), (1, 2), (0,), ()):
        combos = tuple(c for i in range(len(allowed))
                       for c in itertools.combinations(allowed, i + 1))
        assert usable_mirrors(allowed, "birth") == combos
    assert BIRTH_MIRROR_ORDER == usable_mirrors((0, 1, 2), "birth")
    with pytest.raises(ValueError, match="unknown budget mode"):
        usable_mirrors((0,), "fast")


def test_whole_tile_against_the_rule_written_out():
    rng = np.random.default_rng(5)
    for _ in range(300):
        shape = rng.integers(1, 160, 3)
        divisors = rng.choice([1, 2, 4, 8, 16, 32], 3)
        patch = [int(d * rng.integers(1, 6)) for d in divisors]
        want = []
        for s, p, d in zip(shape, patch, divisors, strict=True):
            t = 0
            while t < s:
                t += int(d)
            want.append(max(t, p))
        got = whole_tile(shape, patch, divisors, 3.0)
        if np.prod(want) > 3.0 * np.prod(patch):
            assert got is None
        else:
            assert got == want and all(t % d == 0 for t, d in zip(got, divisors, strict=True))


def test_inference_settings_from_the_manifest_and_overrides(model_set, case, tmp_path):
    manifest = json.loads((model_set / "manifest.json").read_text())
    manifest["tracer_classifier"] = str(model_set / manifest["tracer_classifier"])
    settings = {"window": "whole", "mirrors": 2, "crop": "body", "tile_step": 1.0}
    manifest["inference"] = settings
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    ms = load_model_set(tmp_path)
    assert ms.inference.window == "whole" and ms.inference.mirrors == 2
    assert ms.inference.crop == "body" and ms.inference.tile_step == 1.0
    assert ms.to_json()["inference"] == settings
    result = Pipeline(ms).predict(case.ct, case.pet, Clicks(), "fdg")
    assert len(result.tta.mirrors) == 2 and "mirrored passes x, y" in result.tta.describe()
    result = Pipeline(ms, window="sliding", mirrors=0).predict(case.ct, case.pet, Clicks(), "fdg")
    assert result.tta.window == "sliding" and result.tta.mirrors == ()
    with pytest.raises(ModelSetError, match="unknown window 'tiles'"):
        Pipeline(ms, window="tiles")
    for bad, message in (({"window": "tiles"}, "inference: unknown window 'tiles'"),
                         ({"mirrors": 8}, "inference: mirrors must be a whole number from 0 "
                                          "to 7, got 8"),
                         ({"mirrors": True}, "inference: mirrors must be a whole number"),
                         ({"crop": "lungs"}, "inference: unknown crop 'lungs'"),
                         ({"tile_step": 0}, "inference: tile_step must be a fraction"),
                         ({"tiles": 2}, "inference must be an object with window")):
        manifest["inference"] = bad
        (tmp_path / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ModelSetError, match=f"manifest.json: {message}"):
            load_model_set(tmp_path)


def test_a_pipeline_for_another_routing_shares_the_loaded_networks(model_set, case):
    from dataclasses import replace

    from petloop.inference.modelset import ModelSetError
    from petloop.inference.postprocess import PostProcessing
    from petloop.inference.routing import NoRoute, Route, Routing

    ms = load_model_set(model_set)
    base = Pipeline(ms, mirrors=1)
    v3_alone = {"fdg": Routing.single("fdg_v3")}
    shared = base.sharing(routing=v3_alone)
    clicks = Clicks(((20, 20, 30),), ())
    got = shared.predict(case.ct, case.pet, clicks, "fdg")
    want = Pipeline(ms, mirrors=1, routing=v3_alone).predict(case.ct, case.pet, clicks, "fdg")
    assert got.model == want.model == "fdg_v3" and len(got.tta.mirrors) == 1
    np.testing.assert_array_equal(got.mask.array, want.mask.array)
    v3 = ms.models["fdg_v3"]
    assert base.model(v3) is shared.model(v3)  # loaded once, for both
    assert base.routing == ms.routing  # the original keeps its own
    # no post-processing: the network's mask, a superset of the thresholded one
    raw = base.sharing(postprocessing=PostProcessing.none()).predict(case.ct, case.pet, clicks,
                                                                     "fdg")
    kept = base.predict(case.ct, case.pet, clicks, "fdg")
    assert np.all(raw.mask.array >= kept.mask.array)
    np.testing.assert_array_equal(kept.mask.array,
                                  raw.mask.array * (case.pet.array >= 1.5))
    # a set naming another folder by the same name gets its own network
    other = replace(v3, folder=ms.models["fdg_v4"].folder)
    moved = replace(ms, models={**ms.models, "fdg_v3": other})
    assert shared.sharing(model_set=moved).model(other) is not base.model(v3)
    with pytest.raises(ModelSetError, match="names fdg_v9"):
        base.sharing(routing={"fdg": Routing.single("fdg_v9")})
    lesion_only = base.sharing(routing={"fdg": Routing.of(Route("fdg_v4",
                                                                 min_foreground_clicks=1))})
    with pytest.raises(NoRoute, match="no route admits 0 background and 0 lesion clicks"):
        lesion_only.predict(case.ct, case.pet, Clicks(), "fdg")


def test_session_clicks_undo_reset_and_threshold(pipeline, case):
    session = Session(pipeline)
    tracer = session.set_case(case.ct, case.pet, "fdg")
    assert tracer.tracer == "fdg"
    first = session.run()
    assert first.model == "fdg_v4" and first.mask.same_grid(case.pet)
    pre = dict(session._engine._shared)
    lesion = tuple(int(v) for v in np.argwhere(case.label.array)[0])
    r1 = session.add_click(lesion, "tumor")
    assert session.clicks.clicks.tumor == (lesion,)
    for n in range(5):
        session.add_click((n, 0, 0), "background")
    assert session.last.model == "fdg_v3"  # five background clicks: full-guidance model
    # preprocessing done once per case, shared by the models that preprocess alike
    assert session._engine._shared == pre and len(pre) == 1
    session.undo()
    assert len(session.clicks.clicks.background) == 4 and session.last.model == "fdg_v4"
    session.reset()
    assert len(session.clicks) == 0
    assert len(session.undo().clicks) == 5  # a reset is undone too
    assert not (r1.mask.array[np.asarray(case.pet.array) < 1.5]).any()
    from petloop.io.clicks import ClickFileError

    with pytest.raises(ClickFileError, match="lies outside"):
        session.add_click((999, 0, 0), "tumor")
    assert len(session.clicks) == 5  # the session is as it was
    assert {"preprocess", "network", "export", "total"} <= set(first.seconds)


def test_pipeline_mirroring_and_bad_input(pipeline, case):
    result = pipeline.predict(case.ct, case.pet, Clicks(), "fdg", time_budget=1e6)
    assert result.tta.mirrors == MIRROR_ORDER  # a generous budget takes all seven
    far = Volume(case.ct.array, case.ct.spacing, (0.0, 0.0, 5000.0))
    with pytest.raises(VolumeError, match="do not overlap"):
        pipeline.predict(far, case.pet, Clicks(), "fdg")
    nan = case.pet.with_array(np.full(case.pet.shape, np.nan, np.float32))
    with pytest.raises(VolumeError, match="NaN"):
        pipeline.predict(case.ct, nan, Clicks(), "fdg")
    ct = case.ct.array.astype(np.float32)
    ct[0, 0, 0] = np.nan
    with pytest.raises(VolumeError, match="CT: the CT holds 1 NaN"):
        pipeline.predict(case.ct.with_array(ct), case.pet, Clicks(), "fdg")
    activity = case.pet.with_array(case.pet.array * 4000.0)  # Bq/ml, not SUV
    with pytest.raises(VolumeError, match="looks like activity"):
        pipeline.predict(case.ct, activity, Clicks(), "fdg")
    trusting = Pipeline(pipeline.model_set, trust_suv=True)
    assert trusting.predict(case.ct, activity, Clicks(), "fdg").mask.shape == case.pet.shape


def _two_fold_folder(trained, tmp_path):
    """The tiny v3 as fold ``all`` and, as fold 0, the same network with its weights moved."""
    import shutil

    src = trained["v3"].parent
    folder = tmp_path / src.name
    folder.mkdir()
    for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
        shutil.copyfile(src / name, folder / name)
    (folder / "fold_all").mkdir()
    shutil.copyfile(trained["v3"] / "checkpoint_final.pth",
                    folder / "fold_all" / "checkpoint_final.pth")
    ckpt = torch.load(trained["v3"] / "checkpoint_final.pth", map_location="cpu",
                      weights_only=False)
    gen = torch.Generator().manual_seed(0)
    ckpt["network_weights"] = {
        k: (v + 0.3 * v.float().std().nan_to_num() * torch.randn(v.shape, generator=gen)
            if v.is_floating_point() and v.numel() > 1 else v)
        for k, v in ckpt["network_weights"].items()}
    (folder / "fold_0").mkdir()
    torch.save(ckpt, folder / "fold_0" / "checkpoint_final.pth")
    return folder


def _lesion_probability(adapter, case, clicks=None, mirrors=1):
    """The engine's lesion probability on the preprocessed grid, whole window."""
    from scipy.special import expit

    engine = Engine(case.ct, case.pet, window="whole")
    work = engine.step("m", adapter, clicks or Clicks(), mirrors=mirrors)
    p = expit(engine._states["m"].q)
    engine.close()
    return p, work


def test_folds_are_averaged_over_every_pass(trained, model_set, case, tmp_path):
    folder = _two_fold_folder(trained, tmp_path)

    def probs(folds, checkpoints=("checkpoint_final.pth",)):
        return _lesion_probability(NetworkAdapter(folder, folds, checkpoints), case)

    (p_all, one), (p_0, _) = probs(("all",)), probs((0,))
    assert one.choice.folds == 1 and len(one.choice.mirrors) == 1
    assert np.abs(p_all - p_0).max() > 1e-3  # the two folds differ
    both = NetworkAdapter(folder, ("all", 0))
    for _ in range(2):  # and again, after the last fold's weights were left in the network
        p, work = _lesion_probability(both, case)
        assert work.choice.folds == 2 and work.choice.mirrors == one.choice.mirrors
        np.testing.assert_allclose(p, (p_all + p_0) / 2, atol=1e-5, rtol=0)
    assert "2 networks averaged" in work.choice.describe()
    # the same two networks as two checkpoint files of one fold
    shutil.copyfile(folder / "fold_0" / "checkpoint_final.pth",
                    folder / "fold_all" / "run2.pth")
    runs, _ = probs(("all",), ("checkpoint_final.pth", "run2.pth"))
    np.testing.assert_allclose(runs, p, atol=1e-6, rtol=0)
    manifest = json.loads((model_set / "manifest.json").read_text())
    manifest["models"]["fdg_v3"] = {"folder": str(folder), "folds": ["all", 0]}
    manifest["tracer_classifier"] = str(model_set / manifest["tracer_classifier"])
    root = tmp_path / "set"
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps(manifest))
    clicks = Clicks(tuple((n, n, n) for n in range(5)), tuple((n, 0, 0) for n in range(5)))
    result = Pipeline(load_model_set(root)).predict(case.ct, case.pet, clicks, "fdg")
    assert result.model == "fdg_v3" and result.tta.folds == 2
    manifest["models"]["fdg_v3"] = {"folder": str(folder), "folds": ["all", 0],
                                    "checkpoint": ["checkpoint_final.pth", "run2.pth"]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelSetError, match="fold_0/run2.pth is missing"):
        load_model_set(root)
    manifest["models"]["fdg_v3"]["checkpoint"] = []
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelSetError, match="a file name or a list of them"):
        load_model_set(root)
    manifest["models"]["fdg_v3"] = {"folder": str(folder),
                                    "checkpoint": ["checkpoint_final.pth", "run2.pth"]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    ms = load_model_set(root)
    assert ms.models["fdg_v3"].checkpoints == ("checkpoint_final.pth", "run2.pth")
    assert ms.to_json()["models"]["fdg_v3"]["checkpoint"] == ["checkpoint_final.pth", "run2.pth"]


def test_predict_command_and_empty_clicks(model_set, case, tmp_path):
    write_volume(case.ct, tmp_path / "ct.nii.gz")
    write_volume(case.pet, tmp_path / "pet.nii.gz")
    (tmp_path / "empty.json").write_text("")
    result = runner.invoke(app, ["predict", "--ct", str(tmp_path / "ct.nii.gz"), "--pet",
                                 str(tmp_path / "pet.nii.gz"), "--clicks",
                                 str(tmp_path / "empty.json"), "--models", str(model_set),
                                 "--tracer", "fdg", "--out", str(tmp_path / "m.nii.gz"),
                                 "--report", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    mask = read_volume(tmp_path / "m.nii.gz")
    assert mask.same_grid(case.pet)
    assert "lesion_count" in json.loads((tmp_path / "r.json").read_text())
    write_clicks(Clicks(((1, 2, 999),), ()), tmp_path / "bad.json")
    result = runner.invoke(app, ["predict", "--ct", str(tmp_path / "ct.nii.gz"), "--pet",
                                 str(tmp_path / "pet.nii.gz"), "--clicks",
                                 str(tmp_path / "bad.json"), "--models", str(model_set),
                                 "--out", str(tmp_path / "x.nii.gz")])
    assert result.exit_code == 2 and "lies outside" in result.output
    assert not (tmp_path / "x.nii.gz").exists()


def test_container_entry_point_end_to_end(model_set, case, tmp_path):
    gc_in = tmp_path / "input"
    write_case(Case("3f2a-uuid", case.ct, case.pet, clicks=Clicks(((20, 20, 30),),
                                                                   ((1, 1, 1),))), tmp_path / "x",
               "gc")
    (tmp_path / "x" / "3f2a-uuid").rename(gc_in)
    result = runner.invoke(app, ["gc", "--input", str(gc_in), "--output",
                                 str(tmp_path / "output"), "--models", str(model_set),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    out = read_volume(tmp_path / "output" / "images" / "tumor-lesion-segmentation" /
                      "3f2a-uuid.mha")
    assert out.same_grid(case.pet)


def test_interactive_evaluation_with_models(model_set, work, tmp_path):
    root = work[0]
    result = runner.invoke(app, ["evaluate", "--data", str(root / "phantoms"), "--models",
                                 str(model_set), "--clicks", "error-driven", "--tracer", "fdg",
                                 "--steps", "3", "--out", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert "tiny-error-driven" in summary["models"]
    preds = sorted((tmp_path / "ev" / "predictions" / "tiny-error-driven").glob("*_step*.nii.gz"))
    assert len(preds) == 5 * 3
    clicks = json.loads(next((tmp_path / "ev" / "predictions" / "tiny-error-driven" / "clicks")
                             .glob("*.json")).read_text())
    assert len(clicks["tumor"]) <= 2


@pytest.mark.parametrize("empty_region", ["official", "fixed"])
def test_autopet5_loop_with_models(model_set, work, tmp_path, empty_region):
    from petloop.clicks.scribbles import OfficialLoopFailure, next_scribbles
    from petloop.io.clicks import read_clicks
    from petloop.io.layouts import find_cases

    root = work[0]
    out = tmp_path / "ev"
    result = runner.invoke(app, ["evaluate", "--data", str(root / "phantoms"), "--models",
                                 str(model_set), "--protocol", "autopet5", "--tracer", "fdg",
                                 "--steps", "3", "--empty-region", empty_region, "--out",
                                 str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"] == "autopet5" and summary["n_steps"] == 3
    entry = summary["models"]["tiny-all"]
    assert set(entry["strategies"]) == {"centerline", "random", "boundary"}  # in turn
    folder = out / "predictions" / "tiny-all"
    scores = json.loads((folder / "metric_scores.json").read_text())
    assert len(scores) == 5
    assert set(json.loads((folder / "metric_scores_AUC.json").read_text())) == set(scores)
    labels = {f.case_id: f.label for f in find_cases(root / "phantoms")}
    for case, steps in scores.items():
        log = json.loads((folder / case / "steps.json").read_text())
        failed = [s["score"]["failed"] for s in log["steps"]]
        if any(failed):  # the official loop: once it fails, every later step fails too
            first = failed.index(True)
            assert empty_region == "official" and first >= 1 and all(failed[first:])
            assert all(s["dice"] == 0.0 and s["dmm"] == 0.0 for s in steps[first:])
            assert not (folder / case / f"iter_{first}.nii.gz").exists()
        # replayed from the saved files, each step's scribbles are the loop's next ones
        truth = read_volume(labels[case]).array
        for k in range(1, 3):
            prev = read_clicks(folder / case / f"iter_{k - 1}_scribbles.json")
            pred = read_volume(folder / case / f"iter_{k - 1}.nii.gz").array
            if failed[k]:
                with pytest.raises(OfficialLoopFailure):
                    next_scribbles(truth, pred, prev, log["strategy"])
                break
            step = next_scribbles(truth, pred, prev, log["strategy"],
                                  empty_region=empty_region)
            assert read_clicks(folder / case / f"iter_{k}_scribbles.json") == step.scribbles
            assert log["steps"][k]["added"] == step.added


def test_autopet5_loop_fails_as_the_official_loop_where_nothing_is_over_segmented(model_set,
                                                                                   case):
    from dataclasses import replace

    from petloop.inference.autopet5 import scribble_steps

    session = Session(Pipeline(load_model_set(model_set)), background=False)
    session.set_case(case.ct, case.pet, "fdg")
    first = session.run().mask.array != 0
    truth = first.copy()
    truth[2:8, 2:8, 2:8] = True  # the step-0 prediction lies inside the truth: no FP voxel
    loop_case = replace(case, label=case.label.with_array(truth.astype(np.uint8)))
    official = list(scribble_steps(session, loop_case, strategy="centerline", steps=3,
                                   tracer="fdg"))
    assert [s.score.failed for s in official] == [False, True, True]
    assert official[0].score.dmm > 0 and official[0].result is not None
    assert all(s.result is None and s.score.dice == 0.0 and s.score.dmm == 0.0
               for s in official[1:])
    fixed = list(scribble_steps(session, loop_case, strategy="centerline", steps=2,
                                tracer="fdg", empty_region="fixed"))
    assert fixed[1].added == "tumor" and len(fixed[1].scribbles.tumor) > 0
    assert all(truth[p] and not first[p] for p in fixed[1].scribbles.tumor)


def test_scribble_models_added_to_a_set_answer_scribble_steps(model_set, trained, case,
                                                               tmp_path):
    from petloop.clicks.clicklist import ClickList
    from petloop.inference.autopet5 import scribble_steps

    ms = tmp_path / "set"
    shutil.copytree(model_set, ms)
    result = runner.invoke(app, ["models", "add-scribbles", "--models", str(ms), "--fdg",
                                 str(trained["scribbles"].parent)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((ms / "manifest.json").read_text())
    assert manifest["routing"]["fdg"][0] == {"model": "fdg_scribbles",
                                             "interaction": "scribbles"}
    assert manifest["routing"]["psma"] == [{"model": "psma_v2"}]  # untouched
    loaded = load_model_set(ms)
    assert loaded.route("fdg", 0, 0, interaction="scribbles").name == "fdg_scribbles"
    assert loaded.route("fdg", 0, 0).name == "fdg_v4"
    session = Session(Pipeline(loaded), background=False)
    session.set_case(case.ct, case.pet, "fdg")
    stroke = ClickList().add_stroke("tumor", [(20, 20, 30), (21, 20, 30), (22, 21, 30)])
    assert session.change(stroke).model == "fdg_scribbles"  # a drawn stroke is a scribble
    assert session.set_clicks(stroke.clicks).model == "fdg_v4"  # a click file: clicks
    assert session.set_clicks(stroke.clicks, interaction="scribbles").model == "fdg_scribbles"
    loop_case = case if case.label.array.any() else None
    steps = list(scribble_steps(session, loop_case, strategy="random", steps=2, tracer="fdg",
                                empty_region="fixed"))
    assert {s.result.model for s in steps} == {"fdg_scribbles"}
    steps = list(scribble_steps(session, loop_case, strategy="random", steps=2, tracer="fdg",
                                empty_region="fixed", interaction="clicks"))
    assert {s.result.model for s in steps} <= {"fdg_v4", "fdg_v3"}  # the click routes
    # a manifest with an unknown interaction is refused, naming the key
    manifest["routing"]["fdg"][0]["interaction"] = "strokes"
    (ms / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelSetError, match=r"routing.fdg\[0\].interaction"):
        load_model_set(ms)


def test_predict_folder_parts_and_workers(model_set, work, tmp_path):
    root = work[0]
    for part, processes in ((0, "2"), (1, "0")):
        result = runner.invoke(app, ["predict-folder", "--data", str(root / "phantoms"),
                                     "--out", str(tmp_path / "o"), "--models", str(model_set),
                                     "--tracer", "fdg", "--num-parts", "2", "--part-id",
                                     str(part), "--processes", processes])
        assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "o").glob("*.nii.gz"))) == 5
    # nnU-Net's worker processes give what in-process preprocessing gives
    result = runner.invoke(app, ["predict-folder", "--data", str(root / "phantoms"), "--out",
                                 str(tmp_path / "p"), "--models", str(model_set), "--tracer",
                                 "fdg", "--num-parts", "2", "--part-id", "0", "--processes",
                                 "0"])
    assert result.exit_code == 0, result.output
    for f in (tmp_path / "p").glob("*.nii.gz"):
        np.testing.assert_array_equal(read_volume(f).array,
                                      read_volume(tmp_path / "o" / f.name).array)


def test_cross_validation_per_fold(work, tmp_path):
    """A fold-0 model evaluated on nnU-Net's fold-0 validation cases."""
    from petloop.nnunet.train import TrainConfig, TrainOptions, train

    root, paths, lesions, _ = work
    fold0 = train(TrainConfig(901, "Dataset901_Tiny", "v0", fold="0",
                              plans=lesions.plans_identifier,
                              options=TrainOptions(epochs=1, iterations=2, val_iterations=1)),
                  paths)
    result = runner.invoke(app, ["crossval", "--dataset", "901", "--model",
                                 str(fold0.parent), "--out", str(tmp_path / "cv"), "--steps",
                                 "2", "--workdir", str(root), "--folds", "0"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "cv" / "summary.json").read_text())
    (entry,) = summary["models"].values()
    splits = json.loads((lesions.preprocessed / "splits_final.json").read_text())
    assert entry["cases"] == len(splits[0]["val"])


def test_demo_smaller_run(model_set, tmp_path):
    """The demo's whole path on a small run: phantoms, columns v4, v3, hybrid, v2, report (the
    paper's column, eight passes a step, is run in ``test_the_paper_column_runs``)."""
    result = runner.invoke(app, ["demo", "--models", str(model_set), "--out",
                                 str(tmp_path / "demo"), "--cases", "2", "--time-budget",
                                 "0.001",  # too short for any mirrored pass: same masks
                                 "--no-paper-column"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert {"v4", "v3", "hybrid"} <= set(summary["models"])
    hybrid = summary["models"]["hybrid"]["per_step"]["dice"]
    v4 = summary["models"]["v4"]["per_step"]["dice"]
    v3 = summary["models"]["v3"]["per_step"]["dice"]
    for k in range(11):  # the hybrid is v4 below five background clicks, v3 from five on
        expected = v4[k]["mean"] if k < 5 else v3[k]["mean"]
        assert hybrid[k]["mean"] == pytest.approx(expected, nan_ok=True)
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "| clicks | Dice" in report and "mip_overlay.png" in report
    assert "test-time mirroring within 0.001 s per prediction" in report
    assert (tmp_path / "demo" / "mip_overlay.png").read_bytes()[:4] == b"\x89PNG"
    assert "FDG phantoms: mean per click step" in result.output
    refs = {t: r for t, r in summary["reference"].items() if r["cases"]}
    assert refs  # the isocontour drawn around the true lesions
    for tracer, ref in refs.items():
        assert 0 < ref["dice"] <= 1 and ref["fnv"] == 0
        assert f"on the {ref['cases']} {tracer.upper()} case(s)" in report


def _summary(curves: dict) -> dict:
    """A summary as metrics.interactive.summarize makes it, from {model: (tracer, dice, fpv)}."""
    models = {}
    for name, (tracer, dice, fpv) in curves.items():
        per = {"dice": [{"mean": d} for d in dice], "fpv": [{"mean": f} for f in fpv]}
        models[name] = {"tracers": {tracer: {"per_step": per}}}
    return {"n_steps": len(next(iter(curves.values()))[1]), "models": models}


def test_demo_findings_are_checked_from_the_curves():
    from petloop.experiments.findings import ERROR_DRIVEN, Roles, findings, first_step_reaching

    roles = Roles("v4", "v3")  # BIRTH's routing: v4 before the hand-over, v3 after

    up = [0.5 + 0.04 * k for k in range(11)]           # 0.50 .. 0.90
    v3 = [0.3, 0.4, 0.45, 0.5, 0.6] + [0.72 + 0.04 * k for k in range(6)]  # 0.92 at 10
    hybrid = up[:5] + v3[5:]
    fpv = [5.0 - 0.4 * k for k in range(11)]
    faster = [min(0.95, 0.5 + 0.08 * k) for k in range(11)]
    s = _summary({"v4": ("fdg", up, fpv), "v3": ("fdg", v3, fpv), "hybrid": ("fdg", hybrid, fpv),
                  "v2": ("psma", up, fpv), ERROR_DRIVEN: ("fdg", faster, fpv)})
    found = findings(s, roles=roles)
    assert all(f.holds for f in found), [f for f in found if not f.holds]
    assert len(found) == 8
    # the hybrid is worse than v4 where v3 takes over too early, and the check says where
    v3_late = [0.3, 0.4, 0.45, 0.5, 0.6, 0.65, 0.7, 0.8, 0.85, 0.9, 0.92]
    s = _summary({"v4": ("fdg", up, fpv), "v3": ("fdg", v3_late, fpv),
                  "hybrid": ("fdg", up[:5] + v3_late[5:], fpv)})
    bad = [f for f in findings(s, roles=roles) if not f.holds]
    assert any("every step" in f.claim and "5, 6" in f.observed for f in bad)
    # with the per-case records, each comparison carries its difference paired by case: two
    # cases that agree on it tell the models apart, two that disagree do not
    from petloop.metrics.interactive import StepRecord

    curves = {"v4": up, "v3": v3_late, "hybrid": up[:5] + v3_late[5:]}

    def records(offsets):
        return [StepRecord(m, c, "fdg", False, k, curve[k] + off[m], fpv[k] + off[m], 0.0)
                for m, curve in curves.items() for c, off in offsets.items() for k in range(11)]

    same = {"a": dict.fromkeys(curves, 0.02), "b": dict.fromkeys(curves, -0.02)}
    every = next(f for f in findings(s, roles=roles, records=records(same))
                 if "every step" in f.claim)
    assert "most at step 5: 0.650 against v4 0.700" in every.observed
    assert every.difference["n"] == 2 and every.difference["separates"]
    assert every.difference["mean"] == pytest.approx(0.65 - 0.70)
    assert "difference -0.050, 95% CI -0.050 to -0.050 over 2 cases" in every.observed
    split = {"a": {"v4": 0.0, "v3": 0.0, "hybrid": 0.1}, "b": {"v4": 0.0, "v3": 0.0,
                                                              "hybrid": -0.1}}
    found = {f.claim: f for f in findings(s, roles=roles, records=records(split))}
    every = next(f for c, f in found.items() if "every step" in c)
    assert every.difference["mean"] == pytest.approx(-0.05) and not every.difference["separates"]
    drop = found["hybrid: FPV at step 10 below FPV at step 0"]
    assert drop.difference["mean"] == pytest.approx(fpv[10] - fpv[0]) and "ml, 95% CI" in \
        drop.observed
    assert found["hybrid: Dice at 10 clicks at least 0.85"].difference is None  # has its own CI
    # with the spread over cases, the goal's observation carries the mean's interval
    s = _summary({"hybrid": ("fdg", up, fpv)})
    s["models"]["hybrid"]["tracers"]["fdg"]["per_step"]["dice"][-1].update(sd=0.1, n=10)
    goal = findings(s, roles=roles)[0]
    half = 2.2622 * 0.1 / 10 ** 0.5  # Student's t, 9 degrees of freedom
    assert f"95% CI {0.9 - half:.3f} to {min(0.9 + half, 1):.3f} over 10 cases" in goal.observed
    s["models"]["hybrid"]["tracers"]["fdg"]["per_step"]["dice"][-1].update(sd=0.0, n=1)
    assert findings(s, roles=roles)[0].observed.endswith("; 1 case")
    assert first_step_reaching([0.1, 0.5, 0.7], 0.5) == 1
    assert first_step_reaching([0.1, 0.5], 0.9) is None


def test_error_driven_clicks_are_checked_by_the_clicks_each_case_needs():
    """With the per-case records the verdict is the clicks to reach 0.80, 0.85 and 0.90 (NoC,
    11 where never reached), not the mean curves: one case that error-driven clicks never bring
    to 0.85 costs them 11 clicks there, however the means fall."""
    from petloop.experiments.findings import ERROR_DRIVEN, clicks_to_reach, findings
    from petloop.metrics.interactive import StepRecord

    assert clicks_to_reach([0.5, 0.8, 0.86, 0.91], 0.85) == 2
    assert clicks_to_reach([0.5, 0.8], 0.85) == 2  # never: the number of steps
    official = {"a": [0.6 + 0.03 * k for k in range(11)],  # 0.80 at 7, 0.85 at 9, 0.90 at 10
                "b": [0.84, 0.86] + [0.9] * 9}  # 0.80 at 0, 0.85 at 1, 0.90 at 2
    fast = {"a": [0.6, 0.81, 0.86, 0.9] + [0.9] * 7, "b": [0.7, 0.82, 0.86, 0.91] + [0.91] * 7}

    def check(ed):
        curves = {"hybrid": official, ERROR_DRIVEN: ed}
        records = [StepRecord(m, c, "fdg", False, k, v[k], 0.0, 0.0)
                   for m, by in curves.items() for c, v in by.items() for k in range(11)]
        means = {m: [sum(v[k] for v in by.values()) / 2 for k in range(11)]
                 for m, by in curves.items()}
        s = _summary({m: ("fdg", d, [0.0] * 11) for m, d in means.items()})
        return next(f for f in findings(s, records=records) if "error-driven" in f.claim)

    found = check(fast)  # error-driven: a and b at 1, 2, 3
    assert found.holds and "official 3.5 / 5.0 / 6.0, error-driven 1.0 / 2.0 / 3.0" in \
        found.observed, found.observed
    assert found.difference["mean"] == -3.0 and found.difference["n"] == 2  # (2-9 + 2-1) / 2
    # ahead on the mean curves at every level, but case b never reaches 0.85 with them
    found = check({"a": [0.6] + [0.99] * 10, "b": [0.84] * 11})
    assert "error-driven 0.5 / 6.0 / 6.0" in found.observed and not found.holds
    assert "0 later or never" in found.observed


def test_precision_choice_and_bf16_agrees_with_fp32(model_set, case, tmp_path):
    from petloop.inference.pipeline import cpu_has_bf16, resolve_precision

    with_amx, without = tmp_path / "amx", tmp_path / "plain"
    with_amx.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f amx_bf16 amx_tile\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert cpu_has_bf16(str(with_amx)) and not cpu_has_bf16(str(without))
    assert not cpu_has_bf16(str(tmp_path / "missing"))
    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_has_bf16() else "fp32")
    assert resolve_precision("bf16", "cuda") == "fp32"  # nnU-Net's own autocast there
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        resolve_precision("fp8", "cpu")
    ms = load_model_set(model_set)
    p32, _ = _lesion_probability(Pipeline(ms).model(ms.models["fdg_v4"]), case,
                                 mirrors=0)
    bf16 = Pipeline(ms, precision="bf16")
    p16, _ = _lesion_probability(bf16.model(ms.models["fdg_v4"]), case, mirrors=0)
    assert np.abs(p32 - p16).mean() < 0.01 and not np.array_equal(p32, p16)
    assert np.mean((p32 > 0.5) == (p16 > 0.5)) > 0.99  # the classes agree
    full = bf16.predict(case.ct, case.pet, Clicks(), tracer="fdg")
    assert full.mask.shape == case.pet.shape


def test_model_set_export_is_slim_and_loads(trained, case, tmp_path):
    from petloop.inference.export import export_model_set, folder_size
    from petloop.tracer.classifier import TracerClassifier

    weights = tmp_path / "tracer.pt"
    torch.save({k: v.half() for k, v in MipClassifier().state_dict().items()}, weights)
    weights.with_suffix(".json").write_text('{"history": []}')  # its training record
    with pytest.raises(ValueError, match="unknown routing 'birth-x'"):
        export_model_set(tmp_path / "set", trained["v4"].parent, trained["v3"].parent,
                         trained["v2"].parent, weights, routing="birth-x")
    assert not (tmp_path / "set").exists()  # refused before anything was written
    out = export_model_set(tmp_path / "set", trained["v4"].parent, trained["v3"].parent,
                           trained["v2"].parent, weights, name="t", description="test",
                           inference=InferenceSettings("whole", 3, crop="body",
                                                       tile_step=1.0))
    ms = load_model_set(out)
    assert ms.tracer_classifier.name == "tracer_classifier.pt.gz"
    assert ms.inference == InferenceSettings("whole", 3, crop="body", tile_step=1.0)
    assert folder_size(out) < weights.stat().st_size + 3 * (trained["v4"] /
                                                            "checkpoint_final.pth").stat().st_size
    ckpt = torch.load(out / "fdg_v4" / trained["v4"].parent.name / "fold_all" /
                      "checkpoint_final.pth", weights_only=False)
    assert {v.dtype for v in ckpt["network_weights"].values() if v.is_floating_point()} == \
        {torch.float16}
    assert "optimizer_state" not in ckpt
    logs = sorted(trained["v4"].glob("training_log_*.txt"))  # every run's log, in order
    exported = (out / "fdg_v4" / trained["v4"].parent.name / "fold_all" / "training_log.txt")
    assert logs and exported.read_text() == "".join(p.read_text() for p in logs)
    from PIL import Image

    curve, source = exported.with_name("progress.png"), trained["v4"] / "progress.png"
    with Image.open(curve) as im, Image.open(source) as src:  # the training curve, smaller
        assert im.mode == "P" and im.size == src.size
    assert curve.stat().st_size < source.stat().st_size
    TracerClassifier(ms.tracer_classifier).predict(case.pet)  # the gzip-compressed weights load
    full = Pipeline(load_model_set(out)).predict(case.ct, case.pet, Clicks(), tracer="fdg")
    assert full.mask.shape == case.pet.shape and full.model == "fdg_v4"
    # exported again from itself, with a new run of v3 beside the history it brought along:
    # nothing is lost, and the log holds the history, then the new run
    run = tmp_path / "run" / trained["v3"].parent.name
    shutil.copytree(trained["v3"].parent, run)
    history = out / "fdg_v3" / trained["v3"].parent.name / "fold_all" / "training_log.txt"
    shutil.copyfile(history, run / "fold_all" / "training_log.txt")
    v4 = out / "fdg_v4" / trained["v4"].parent.name
    before = torch.load(v4 / "fold_all" / "checkpoint_final.pth", weights_only=False)
    tracer_before = (out / "tracer_classifier.pt.gz").read_bytes()
    again = export_model_set(out, v4, run, out / "psma_v2" / trained["v2"].parent.name,
                             out / "tracer_classifier.pt.gz", name="t")
    after = torch.load(v4 / "fold_all" / "checkpoint_final.pth", weights_only=False)
    for k, v in before["network_weights"].items():
        assert torch.equal(after["network_weights"][k], v)
    assert (again / "tracer_classifier.pt.gz").read_bytes() == tracer_before
    assert (again / "tracer_classifier.json").read_text() == '{"history": []}'  # kept too
    TracerClassifier(load_model_set(again).tracer_classifier).predict(case.pet)
    logs = sorted(trained["v3"].glob("training_log_*.txt"))
    assert history.read_text() == "".join(p.read_text() for p in logs * 2)
    # a failed export leaves the set as it was
    with pytest.raises(FileNotFoundError, match="no fold"):
        export_model_set(out, v4, tmp_path / "run", run, None)
    assert load_model_set(out).models.keys() == ms.models.keys()
    assert not list(tmp_path.glob(".set.*"))
    bad = tmp_path / "bad.pt.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="bad.pt.gz: not a gzip-compressed weights file"):
        TracerClassifier(bad)
