"""The prediction engine: exact incremental steps, the click list, region-wise export."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
import torch

from petloop.clicks.clicklist import Click, ClickError, ClickList, NoSuchClick
from petloop.inference.engine import changed_boxes
from petloop.inference.modelset import load_model_set
from petloop.inference.pipeline import Pipeline, Session
from petloop.io.clicks import ClickFileError, Clicks
from petloop.nnunet.clickspace import ClickEncoding
from petloop.nnunet.resample import input_box, output_box, plans_for, resample_box
from petloop.phantom import PhantomConfig, generate_case

# --------------------------------------------------------------------------- the click list


def test_click_list_add_remove_undo_reset():
    cl = ClickList().add("tumor", (1, 2, 3)).add("background", (4, 5, 6)).add("tumor", (7, 8, 9))
    assert [c.kind for c in cl] == ["tumor", "background", "tumor"]
    assert cl.clicks == Clicks(((1, 2, 3), (7, 8, 9)), ((4, 5, 6),))
    removed = cl.remove(0)
    assert removed.clicks == Clicks(((7, 8, 9),), ((4, 5, 6),))
    assert removed.undo() == cl  # undo puts a removed click back at its place
    assert cl.undo() == cl.remove(2)  # undoing an add is removing the last click
    assert cl.reset().undo() == cl and len(cl.reset()) == 0
    assert ClickList().undo() == ClickList()
    again = cl.add("tumor", (1, 2, 3))  # a click on a clicked voxel is counted
    assert len(again) == 4 and again.clicks.tumor.count((1, 2, 3)) == 2
    with pytest.raises(NoSuchClick, match="no click 3: there are 3 clicks"):
        cl.remove(3)
    with pytest.raises(NoSuchClick):
        cl.remove(-1)
    with pytest.raises(ClickError, match="'tumor' or 'background'"):
        cl.add("lesion", (0, 0, 0))
    with pytest.raises(ClickError, match="3 voxel indices"):
        Click("tumor", (1, 2))


def test_click_list_from_click_files_interleaves_in_the_official_order():
    clicks = Clicks(((1, 1, 1), (2, 2, 2), (3, 3, 3)), ((9, 9, 9),))
    cl = ClickList.of(clicks)
    assert [(c.kind, c.point) for c in cl] == [("tumor", (1, 1, 1)), ("background", (9, 9, 9)),
                                               ("tumor", (2, 2, 2)), ("tumor", (3, 3, 3))]
    assert cl.clicks == clicks
    jumped = ClickList().add("tumor", (0, 0, 0)).replace(clicks)
    assert jumped.clicks == clicks and jumped.undo().clicks == Clicks(((0, 0, 0),), ())



def test_strokes_are_added_removed_and_undone_whole():
    from petloop.clicks.clicklist import MAX_POINTS, MAX_STROKE_VOXELS

    cl = ClickList().add("tumor", (1, 1, 1)).add_stroke("tumor", [(2, 2, 2), (3, 2, 2)])
    cl = cl.add_stroke("background", [(5, 5, 5)]).add("background", (0, 0, 0))
    assert [c.stroke for c in cl] == [0, 1, 1, 2, 0] and cl.strokes == (1, 2)
    assert cl.clicks == Clicks(((1, 1, 1), (2, 2, 2), (3, 2, 2)), ((5, 5, 5), (0, 0, 0)))
    without = cl.remove_stroke(1)
    assert [c.stroke for c in without] == [0, 2, 0] and without.undo() == cl
    assert without.add_stroke("tumor", [(4, 4, 4)]).strokes == (2, 3)  # numbers go on
    added = ClickList().add_stroke("tumor", [(1, 1, 1), (1, 2, 1)])
    assert added.undo() == ClickList()  # one change: undone whole
    assert cl[1].to_json() == {"kind": "tumor", "point": [2, 2, 2], "stroke": 1}
    assert cl[0].to_json() == {"kind": "tumor", "point": [1, 1, 1]}
    with pytest.raises(NoSuchClick, match="no stroke 7: the strokes are \\[1, 2\\]"):
        cl.remove_stroke(7)
    with pytest.raises(ClickError, match="at least one voxel"):
        cl.add_stroke("tumor", [])
    with pytest.raises(ClickError, match=f"at most {MAX_STROKE_VOXELS}"):
        cl.add_stroke("tumor", [(n, 0, 0) for n in range(MAX_STROKE_VOXELS + 1)])
    full = ClickList.of(Clicks(tuple((n, 0, 0) for n in range(MAX_POINTS)), ()))
    with pytest.raises(ClickError, match=f"at most {MAX_POINTS}"):
        full.add("tumor", (0, 0, 0))


def test_stroke_voxels_against_exact_rounding():
    from fractions import Fraction

    from petloop.clicks.scribbles import stroke_voxels

    def slow(vertices):  # each segment: a + (b - a) t / n, rounded half away from zero
        out = []
        for a, b in zip(vertices[:-1], vertices[1:], strict=True):
            n = max(abs(q - p) for p, q in zip(a, b, strict=True))
            for t in range(n + 1):
                p = []
                for u, v in zip(a, b, strict=True):
                    x = u + Fraction((v - u) * t, max(n, 1))
                    r = int(abs(x - u) + Fraction(1, 2)) * (1 if x >= u else -1) + u
                    p.append(r)
                if tuple(p) not in out:
                    out.append(tuple(p))
        return tuple(out) if len(vertices) > 1 else (tuple(vertices[0]),)

    rng = np.random.default_rng(4)
    for _ in range(200):
        v = [tuple(int(c) for c in rng.integers(0, 30, 3)) for _ in range(rng.integers(1, 5))]
        assert stroke_voxels(v) == slow(v), v
    line = stroke_voxels([(0, 0, 5), (6, 3, 5)])
    assert len(line) == 7 and all(p[2] == 5 for p in line)
    assert max(max(abs(a - b) for a, b in zip(p, q, strict=True))
               for p, q in zip(line[:-1], line[1:], strict=True)) == 1  # 26-connected

# --------------------------------------------------------------------------- region-wise export


@pytest.mark.parametrize("orders", [(1, 1, 1), (0, 1, 1)])
def test_resampling_matches_nnunet_and_any_box_is_the_box_of_the_whole(orders):
    from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg

    rng = np.random.default_rng(3)
    data = rng.normal(size=(9, 13, 11)).astype(np.float32)
    new = (17, 20, 11)
    plans = plans_for(data.shape, new, orders)
    whole = resample_box(data, plans)
    separate = orders[0] == 0
    want = resample_data_or_seg(data[None], new, False, 0 if separate else None, 1, separate,
                                order_z=0)[0]
    np.testing.assert_allclose(whole, want, rtol=0, atol=2e-5)
    for _ in range(20):
        box = tuple(tuple(sorted(rng.choice(n + 1, 2, replace=False))) for n in new)
        part = resample_box(data, plans, box)
        assert np.array_equal(part, whole[tuple(slice(a, b) for a, b in box)])
        # the input a box reads, and the outputs an input box reaches, against brute force
        src = input_box(plans, box)
        bumped = data.copy()
        bumped[tuple(slice(a, b) for a, b in src)] += 1
        outside = np.ones(new, bool)
        outside[tuple(slice(a, b) for a, b in box)] = False
        inp = tuple(tuple(sorted(rng.choice(n + 1, 2, replace=False))) for n in data.shape)
        poked = data.copy()
        poked[tuple(slice(a, b) for a, b in inp)] += 1
        diff = resample_box(poked, plans) != whole
        reach = output_box(plans, inp)
        if reach is None:
            assert not diff.any()
        else:
            inside = np.zeros(new, bool)
            inside[tuple(slice(a, b) for a, b in reach)] = True
            assert not (diff & ~inside).any()


def test_changed_boxes_hold_every_voxel_whose_click_channels_change():
    rng = np.random.default_rng(5)
    shape = (40, 36, 30)
    for enc in (ClickEncoding(), ClickEncoding(encoding="edt_ball", radius=3.0)):
        for _ in range(15):
            pts = [tuple(int(v) for v in rng.integers(0, shape)) for _ in range(4)]
            old = Clicks(tuple(pts[:2]), tuple(pts[2:3]))
            new = Clicks(tuple(pts[:1] + pts[3:]), tuple(pts[2:3]) + (pts[0],))
            a, b = enc.render(old, shape), enc.render(new, shape)  # the slow whole volumes
            diff = (a[0] != b[0]) | (a[1] != b[1])
            covered = np.zeros(shape, bool)
            boxes = changed_boxes(enc, old, new, shape)
            for box in boxes:
                covered[tuple(slice(lo, hi) for lo, hi in box)] = True
            assert not (diff & ~covered).any()
            assert all(diff[tuple(slice(lo, hi) for lo, hi in box)].any() for box in boxes)
        dup = Clicks(((5, 5, 5),), ())
        assert changed_boxes(enc, dup, Clicks(((5, 5, 5), (5, 5, 5)), ()), shape) == []


# --------------------------------------------------------------------------- exact steps


@pytest.fixture(scope="module")
def wide_case():
    """A phantom wide enough for several tiles of the tiny models on every axis."""
    cfg = PhantomConfig(seed=31, tracer="fdg", shape=(80, 80, 112), spacing=(4.0, 4.0, 6.0),
                        negative_fraction=0.0, lesions=(4, 6))
    return generate_case(cfg, 0).case


def _lesion_points(case, n, rng):
    idx = np.argwhere(case.label.array > 0)
    return [tuple(int(v) for v in idx[i]) for i in rng.choice(len(idx), n, replace=False)]


def test_incremental_steps_equal_full_predictions_voxel_for_voxel(model_set, wide_case):
    ms = load_model_set(model_set)
    pipeline = Pipeline(ms, window="sliding", mirrors=0)
    rng = np.random.default_rng(0)
    tumor = _lesion_points(wide_case, 5, rng)
    body = np.argwhere((wide_case.label.array == 0) & (wide_case.pet.array > 0.5))
    background = [tuple(int(v) for v in body[i]) for i in rng.choice(len(body), 6, replace=False)]
    session = Session(pipeline)
    session.set_case(wide_case.ct, wide_case.pet, "fdg")
    steps = [lambda s: s.run(probabilities=True)]
    steps += [lambda s, p=p: s.add_click(p, "tumor", probabilities=True) for p in tumor[:2]]
    steps += [lambda s, p=p: s.add_click(p, "background", probabilities=True)
              for p in background[:3]]
    steps += [lambda s: s.remove_click(1, probabilities=True),
              lambda s: s.undo(probabilities=True)]
    steps += [lambda s: s.add_click(background[3], "background", probabilities=True),
              # the fifth background click hands over to fdg_v3
              lambda s: s.add_click(background[4], "background", probabilities=True),
              lambda s: s.add_click(tumor[2], "tumor", probabilities=True)]
    assert len(steps) == 11
    models, partial = set(), 0
    for step in steps:
        got = step(session)
        fresh = Session(pipeline, background=False)
        fresh.set_case(wide_case.ct, wide_case.pet, "fdg")
        want = fresh.set_clicks(session.clicks, probabilities=True)
        fresh.close()
        assert got.model == want.model and got.tta.mirrors == want.tta.mirrors
        assert np.array_equal(got.mask.array, want.mask.array)
        np.testing.assert_allclose(got.probabilities.array, want.probabilities.array,
                                   rtol=0, atol=1e-4)
        models.add(got.model)
        partial += got.tta.tiles < got.tta.tiles_total
    assert models == {"fdg_v4", "fdg_v3"}
    assert partial >= 2  # steps recomputed only some tiles (a corner click: next test)
    session.close()


def test_a_step_does_only_the_tiles_a_click_reaches(model_set, wide_case):
    ms = load_model_set(model_set)
    session = Session(Pipeline(ms, window="sliding"), background=False)
    session.set_case(wide_case.ct, wide_case.pet, "fdg")
    first = session.run()
    assert first.tta.tiles == first.tta.tiles_total > 8 and first.tta.incremental
    corner = session.add_click((2, 2, 2), "background")
    assert 0 < corner.tta.tiles < first.tta.tiles_total
    assert corner.changed is not None and corner.changed[0][0] == 0
    assert all(hi < n for (_, hi), n in zip(corner.changed, wide_case.pet.shape, strict=True))
    again = session.add_click((2, 2, 2), "background")  # the same voxel: counted, no work
    assert len(session.clicks) == 2 and again.tta.tiles == 0 and again.changed is None
    assert np.array_equal(again.mask.array, corner.mask.array)
    with pytest.raises(NoSuchClick):
        session.remove_click(5)
    with pytest.raises(ClickFileError, match="outside the image"):
        session.add_click((500, 0, 0), "tumor")
    assert len(session.clicks) == 2  # a refused change leaves the session as it was
    session.close()


def _nnunet_mask(adapter, case, clicks, threshold: float) -> np.ndarray:
    """The reference: nnU-Net's predictor end to end (its sliding window, its float16 sums,
    its export) on the case with the clicks' heatmaps, thresholded at ``threshold`` SUV."""
    from nnunetv2.inference.export_prediction import (
        convert_predicted_logits_to_segmentation_with_correct_shape,
    )

    from petloop.io.volume import resample_to
    from petloop.nnunet.clickspace import clicks_in_preprocessed

    p = adapter.predictor
    pre = adapter.preprocess(resample_to(case.ct, case.pet), case.pet)
    shape = pre.data.shape[1:]
    pc = clicks_in_preprocessed(clicks, pre.properties, p.plans_manager.transpose_forward, shape)
    fg, bg = adapter.encoding.render(pc, shape)
    x = torch.from_numpy(np.concatenate([pre.data, fg[None], bg[None]]).astype(np.float32))
    logits = p.predict_sliding_window_return_logits(x)
    seg = convert_predicted_logits_to_segmentation_with_correct_shape(
        logits.float(), p.plans_manager, p.configuration_manager, p.label_manager,
        pre.properties)
    want = case.pet.with_itk_array(np.asarray(seg, np.uint8)).array
    return want * (case.pet.array >= threshold)


@pytest.mark.parametrize("tile_step", [0.5, 1.0])
def test_the_engine_agrees_with_nnunets_own_sliding_window(model_set, wide_case, tile_step):
    """The reference is nnU-Net's predictor end to end (its float16 sums, its export), with
    the same step between tiles."""
    ms = load_model_set(model_set)
    pipeline = Pipeline(ms, window="sliding", mirrors=0, tile_step=tile_step)
    clicks = Clicks(tuple(_lesion_points(wide_case, 2, np.random.default_rng(1))), ((3, 3, 3),))
    got = pipeline.predict(wide_case.ct, wide_case.pet, clicks, "fdg")
    adapter = pipeline.model(ms.models[got.model])
    p = adapter.predictor
    if tile_step == 1.0:  # edge to edge: far fewer tiles than nnU-Net's default half overlap
        half = Pipeline(ms, window="sliding", mirrors=0).predict(
            wide_case.ct, wide_case.pet, clicks, "fdg")
        assert got.tta.tiles_total * 3 <= half.tta.tiles_total
    p.tile_step_size = tile_step
    want = _nnunet_mask(adapter, wide_case, clicks, ms.suv_threshold["fdg"])
    agree = np.mean(got.mask.array == want)
    assert agree > 0.9999, agree


def test_the_birth_budget_mode_is_the_published_code(model_set, wide_case, monkeypatch):
    """Each plain tile is timed (a fake clock here: tile n takes n % 4 + 1 seconds) and gets
    the published rule's passes from its own time; the reference is nnU-Net's predictor with
    the published code's per-tile function written out (its order, flips in place, logits
    averaged over the tile's own passes)."""
    import itertools

    from petloop.inference.engine import BIRTH_MIRROR_ORDER, ModelState

    calls = itertools.count()

    def clock():  # start and end of the k-th plain tile: k * 100 and k * 100 + k % 4 + 1
        k, end = divmod(next(calls), 2)
        return k * 100.0 + end * (k % 4 + 1)

    monkeypatch.setattr(ModelState, "clock", staticmethod(clock))
    ms = load_model_set(model_set)
    # edge to edge: fewer tiles, the same rule
    pipeline = Pipeline(ms, window="sliding", budget_mode="birth", tile_step=1.0)
    clicks = Clicks(tuple(_lesion_points(wide_case, 2, np.random.default_rng(2))), ((3, 3, 3),))
    session = Session(pipeline, background=False)
    session.set_case(wide_case.ct, wide_case.pet, "fdg")
    assert session.set_clicks(clicks).tta.mirrors == ()  # no budget: no mirroring
    n_tiles = session.last.tta.tiles_total
    budget = 8.0 * n_tiles  # a tile of 1 s: 7 passes, 2 s: 3, 3 s and 4 s: 1
    got = session.run(time_budget=budget)
    assert got.tta.mirrors == BIRTH_MIRROR_ORDER and got.tta.per_tile == (1, 7)
    assert "1 to 7 mirrored passes per tile" in got.tta.describe()
    assert session.run(time_budget=1.0).tta.mirrors == ()  # the plain cost is over the budget
    session.close()

    def published(t):  # BIRTH's nnUNetPredictor, 40 s replaced by the budget
        total = n_tiles * t
        return min(int((budget - total) / total), 7) if total > 0 else 0

    limits = iter([published(n % 4 + 1) for n in range(n_tiles)])  # nnU-Net's tile order
    adapter = pipeline.model(ms.models[got.model])
    p = adapter.predictor

    def birth_tile(x, num_steps=None):  # the published signature; nnU-Net 2.8.1 passes x
        prediction = p.network(x)
        limit = next(limits)
        combos = [c for i in range(3) for c in itertools.combinations([2, 3, 4], i + 1)]
        for axes in combos[:limit]:
            prediction += torch.flip(p.network(torch.flip(x, axes)), axes)
        return prediction / (limit + 1)

    monkeypatch.setattr(p, "_internal_maybe_mirror_and_predict", birth_tile)
    monkeypatch.setattr(p, "tile_step_size", 1.0)
    want = _nnunet_mask(adapter, wide_case, clicks, ms.suv_threshold["fdg"])
    assert next(limits, None) is None  # every tile went through it once
    agree = np.mean(got.mask.array == want)
    assert agree > 0.9999, agree


def test_body_box_against_a_voxel_by_voxel_reference():
    rng = np.random.default_rng(3)
    arr = np.full((30, 24, 20), -1000, np.int16)
    arr[7:19, 5:11, 3:17] = 40
    arr[25, 20, 0] = 300  # one dense voxel far away still counts
    from petloop.inference.body import body_box
    from petloop.io.volume import Volume

    vol = Volume(arr + rng.integers(-20, 20, arr.shape).astype(np.int16), (2.0, 3.0, 5.0))
    box = body_box(vol, margin_mm=6.0)
    lo = [min(v[a] for v in np.argwhere(vol.array > -500)) for a in range(3)]
    hi = [max(v[a] for v in np.argwhere(vol.array > -500)) + 1 for a in range(3)]
    pad = [3, 2, 2]  # ceil(6 mm / spacing)
    want = tuple((max(a - p, 0), min(b + p, n)) for a, b, p, n in
                 zip(lo, hi, pad, arr.shape, strict=True))
    assert box == want and box[0] == (4, 29)  # the far voxel (i = 25) plus 3 voxels
    assert body_box(vol.with_array(np.full(arr.shape, 50, np.int16))) is None  # all body
    assert body_box(vol.with_array(np.full(arr.shape, -1000, np.int16))) is None  # no body


def test_a_body_crop_runs_the_networks_on_the_body_box_and_pastes_it_back(model_set):
    """With ``crop: body`` the networks see the CT's body box only: fewer tiles, nothing marked
    outside, and inside exactly nnU-Net's own prediction of the cropped image, pasted back."""
    from dataclasses import replace

    from nnunetv2.inference.export_prediction import (
        convert_predicted_logits_to_segmentation_with_correct_shape,
    )

    from petloop.inference.body import body_box
    from petloop.inference.modelset import InferenceSettings
    from petloop.io.volume import Volume
    from petloop.nnunet.clickspace import clicks_in_preprocessed
    from petloop.nnunet.predict import preprocess

    case = generate_case(PhantomConfig(seed=32, tracer="fdg", shape=(72, 64, 64),
                                       spacing=(8.0, 8.0, 10.0), negative_fraction=0.0,
                                       lesions=(3, 5)), 0).case
    box = body_box(case.ct)
    assert box is not None and box[0][1] - box[0][0] < 60 and box[1][1] - box[1][0] < 50
    ms = load_model_set(model_set)
    cropped = replace(ms, inference=InferenceSettings(crop="body"))
    clicks = Clicks(tuple(_lesion_points(case, 2, np.random.default_rng(2))), ((36, 32, 30),))
    got = Pipeline(cropped, window="sliding", mirrors=0).predict(
        case.ct, case.pet, clicks, "fdg")
    whole = Pipeline(ms, window="sliding", mirrors=0).predict(
        case.ct, case.pet, clicks, "fdg")
    assert got.tta.tiles_total < whole.tta.tiles_total
    outside = np.ones(case.pet.shape, bool)
    outside[tuple(slice(a, b) for a, b in box)] = False
    assert not got.mask.array[outside].any()
    # the reference: nnU-Net's predictor and export on the cropped image alone, pasted back
    pipe = Pipeline(cropped, window="sliding", mirrors=0)
    adapter = pipe.model(ms.models[got.model])
    p = adapter.predictor
    sub = tuple(slice(a, b) for a, b in box)
    ct_c = Volume(case.ct.array[sub], case.ct.spacing)
    pet_c = Volume(case.pet.array[sub], case.pet.spacing)
    pre = preprocess(p, ct_c, pet_c)
    shape = pre.data.shape[1:]
    local = Clicks(tuple(tuple(int(v) - a for v, (a, _) in zip(pt, box, strict=True))
                         for pt in clicks.tumor),
                   tuple(tuple(int(v) - a for v, (a, _) in zip(pt, box, strict=True))
                         for pt in clicks.background))
    pc = clicks_in_preprocessed(local, pre.properties, p.plans_manager.transpose_forward, shape)
    fg, bg = adapter.encoding.render(pc, shape)
    x = torch.from_numpy(np.concatenate([pre.data, fg[None], bg[None]]).astype(np.float32))
    seg = convert_predicted_logits_to_segmentation_with_correct_shape(
        p.predict_sliding_window_return_logits(x).float(), p.plans_manager,
        p.configuration_manager, p.label_manager, pre.properties)
    want = np.zeros(case.pet.shape, np.uint8)
    want[sub] = pet_c.with_itk_array(np.asarray(seg, np.uint8)).array
    want = want * (case.pet.array >= ms.suv_threshold["fdg"])
    assert np.mean(got.mask.array == want) > 0.9999


def test_the_next_model_is_warmed_so_a_hand_over_costs_about_one_click(model_set, wide_case):
    ms = load_model_set(model_set)
    session = Session(Pipeline(ms, window="sliding"))
    session.set_case(wide_case.ct, wide_case.pet, "fdg")
    for n in range(4):  # the BIRTH rule hands over to fdg_v3 at the fifth background click
        assert session.add_click((4 + 6 * n, 4, 4), "background").model == "fdg_v4"
    engine = session._engine
    engine._worker.join(timeout=600)  # the reader looks at the mask meanwhile
    handover = session.add_click((40, 4, 4), "background")
    assert handover.model == "fdg_v3"
    assert 0 < handover.tta.tiles < handover.tta.tiles_total
    session.undo()  # back to fdg_v4: its cache is current, fdg_v3 warms again
    session.close()
    assert engine.closed and engine._worker is None
    assert not any(t.name == "petloop-warm" and t.is_alive() for t in threading.enumerate())


def test_mirrored_passes_follow_the_budget_and_the_published_order(model_set, wide_case):
    ms = load_model_set(model_set)
    pipe = Pipeline(ms, window="sliding", mirrors=3)
    session = Session(pipe, background=False)
    session.set_case(wide_case.ct, wide_case.pet, "fdg")
    fixed = session.run()
    assert fixed.tta.mirrors == ((2,), (1,), (0,))
    tiny = session.run(time_budget=1e-6)  # nothing fits: the plain pass only
    assert tiny.tta.mirrors == () and tiny.tta.budget == 1e-6
    roomy = session.run(time_budget=1e6)  # all fit, capped by mirrors=3, caches warm
    assert roomy.tta.mirrors == ((2,), (1,), (0,)) and roomy.tta.tiles == 0
    assert np.array_equal(roomy.mask.array, fixed.mask.array)
    clicked = session.add_click((3, 3, 3), "tumor", probabilities=True)  # mirrored passes too
    assert 0 < clicked.tta.tiles < clicked.tta.tiles_total
    fresh = Session(pipe, background=False)
    fresh.set_case(wide_case.ct, wide_case.pet, "fdg")
    want = fresh.set_clicks(session.clicks, probabilities=True)
    assert np.array_equal(clicked.mask.array, want.mask.array)
    np.testing.assert_allclose(clicked.probabilities.array, want.probabilities.array, atol=1e-4)
    fresh.close()
    session.close()


def test_options_are_checked(model_set):
    ms = load_model_set(model_set)
    from petloop.inference.modelset import ModelSetError

    with pytest.raises(ModelSetError, match="budget must be"):
        Pipeline(ms, budget=-1)
    for step in (0, 1.5, float("nan"), True):
        with pytest.raises(ModelSetError, match="tile_step must be"):
            Pipeline(ms, tile_step=step)
    for bad in itertools.islice(({"window": "tiles"}, {"mirrors": 9}), 2):
        with pytest.raises(ModelSetError):
            Pipeline(ms, **bad)
