"""autoPET V's scribbles and interaction loop: the organizers' reference run reproduced, the
strokes against obvious references, the loop's rule and its failure, the CLI."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from petloop.cli import app
from petloop.clicks.scribbles import (
    OfficialLoopFailure,
    largest_slice_region,
    next_scribbles,
    simulate_scribble,
    stroke_boundary,
    stroke_centerline,
    stroke_random,
)
from petloop.io.clicks import Clicks, read_clicks
from petloop.io.layouts import Case, write_case
from petloop.io.volume import Volume, read_volume, write_volume
from petloop.metrics.autopet5 import loop_auc, loop_dice, score_step

runner = CliRunner()
RUN = Path(__file__).parent / "data" / "autopet5_run"
CASE = "psma_ffcaa75377465b37_2018-03-04"


# the organizers' reference run -----------------------------------------------------------------
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_reference_run_scribbles_reproduced(k, tmp_path):
    out = tmp_path / "next.json"
    result = runner.invoke(app, ["scribbles", "next", "--label", str(RUN / "label.nii.gz"),
                                 "--pred", str(RUN / f"iter_{k}.nii.gz"), "--scribbles",
                                 str(RUN / f"iter_{k}_scribbles.json"), "--strategy", "random",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    # the same file as the loop saved, byte for byte (petloop ends its files with a newline)
    assert out.read_text() == (RUN / f"iter_{k + 1}_scribbles.json").read_text() + "\n"


def test_reference_run_scores():
    truth = read_volume(RUN / "label.nii.gz")
    ref = json.loads((RUN / "dice_scores.json").read_text())[f"{CASE}_0000"]
    dice = []
    for k in range(5):
        pred = read_volume(RUN / f"iter_{k}.nii.gz").array
        d = loop_dice(pred, truth.array)
        assert d == pytest.approx(ref[k]["dice"], abs=1e-9)
        dice.append(d)
        # the run predates the loop's DMM (it recorded 0.0); these F1 values come from the
        # organizers' MetricEvaluator (metrics.py at 86aa877) on the same masks
        want = 7 / 9 if k == 0 else 14 / 17
        assert score_step(pred, truth.array, truth.spacing).dmm == pytest.approx(want, abs=1e-12)
    auc = json.loads((RUN / "dice_scores_AUC.json").read_text())[f"{CASE}_0000"]["auc"]
    assert loop_auc(dice) == pytest.approx(auc, abs=1e-12)


def test_evaluate_scores_a_loop_output_folder(tmp_path):
    truth = read_volume(RUN / "label.nii.gz")
    image = truth.with_array(np.zeros(truth.shape, np.float32))
    write_case(Case(CASE, image, image, label=truth), tmp_path / "data", "nnunet")
    (tmp_path / "data" / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT", "1": "PET"}, "labels": {"background": 0, "lesion": 1},
        "numTraining": 1, "file_ending": ".nii.gz"}))
    folder = tmp_path / "run" / f"{CASE}_0000"  # the loop names it after the CT file
    folder.mkdir(parents=True)
    for k in range(5):
        shutil.copy(RUN / f"iter_{k}.nii.gz", folder)
    result = runner.invoke(app, ["evaluate", "--data", str(tmp_path / "data"), "--pred",
                                 f"baseline={tmp_path / 'run'}", "--protocol", "autopet5",
                                 "--steps", "5", "--strategy", "random", "--out",
                                 str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["protocol"] == "autopet5"
    ranking = summary["models"]["baseline"]["ranking"]
    ref = json.loads((RUN / "dice_scores_AUC.json").read_text())[f"{CASE}_0000"]["auc"]
    assert ranking["dice_auc"]["mean"] == pytest.approx(ref, abs=1e-9)
    assert ranking["dmm_final"]["mean"] == pytest.approx(14 / 17)
    rows = (tmp_path / "ev" / "metrics_per_step.csv").read_text().splitlines()
    assert rows[0].endswith("dmm_f1,strategy") and len(rows) == 6
    assert summary["models"]["baseline"]["strategies"]["random"]["cases"] == 1
    # a step the loop did not save is missing, not skipped
    (folder / "iter_4.nii.gz").unlink()
    result = runner.invoke(app, ["evaluate", "--data", str(tmp_path / "data"), "--pred",
                                 f"baseline={tmp_path / 'run'}", "--protocol", "autopet5",
                                 "--steps", "5", "--out", str(tmp_path / "ev2")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "ev2" / "summary.json").read_text())
    assert len(summary["missing"]) == 1 and "iter_4" in summary["missing"][0]
    assert summary["models"]["baseline"]["ranking"]["incomplete_cases"] == 1


# the slice and the strokes ----------------------------------------------------------------------
def _disc(shape2d, centre, radius):
    g = np.indices(shape2d)
    return ((g[0] - centre[0]) ** 2 + (g[1] - centre[1]) ** 2) <= radius ** 2


def test_largest_slice_region_against_scipy():
    rng = np.random.default_rng(3)
    for _ in range(20):
        mask = np.zeros((40, 36, 12), bool)
        for _ in range(rng.integers(1, 6)):
            k = rng.integers(0, 12)
            mask[:, :, k] |= _disc((40, 36), rng.integers(0, 36, 2), rng.uniform(1, 9))
        # slow, obvious reference: every slice, 8-connected components by scipy, the first
        # slice whose largest component is strictly largest
        best = (0, None, None)
        for k in range(mask.shape[2]):
            lab, n = ndimage.label(mask[:, :, k], structure=np.ones((3, 3)))
            for c in range(1, n + 1):
                if (lab == c).sum() > best[0]:
                    best = ((lab == c).sum(), k, lab == c)
        found = largest_slice_region(mask)
        if best[1] is None:
            assert found is None
            continue
        k, region = found
        sizes = sorted(ndimage.label(mask[:, :, k], structure=np.ones((3, 3)))[0].ravel())
        if sizes.count(best[0]) <= 1:  # no tie: the same slice and component
            assert k == best[1]
            np.testing.assert_array_equal(region.astype(bool), best[2])
        assert region.sum() == best[0]


def test_a_tie_goes_to_the_component_labelled_first():
    mask = np.zeros((10, 10, 3), bool)
    mask[1:3, 6:8, 1] = True  # 4 pixels, first in column-major order: (1, 6)
    mask[6:8, 1:3, 1] = True  # 4 pixels, first at (6, 1): before (1, 6) along j, then i
    k, region = largest_slice_region(mask)
    assert k == 1
    assert region[6, 1] == 1 and region[1, 6] == 0  # nibabel's layout: i runs fastest


def test_random_stroke_is_the_line_between_two_seeded_pixels():
    region = np.zeros((30, 40), np.uint8)
    region[5:25, 4:36] = 1  # convex: the whole line lies inside
    for seed in (0, 42, 7):
        coords = np.argwhere(region)
        rng = random.Random(seed)
        a, b = coords[rng.randint(0, len(coords) - 1)], coords[rng.randint(0, len(coords) - 1)]
        out = stroke_random(region, seed)
        n = int(max(abs(b - a))) + 1  # a digital line has one pixel per step of its long axis
        assert out.sum() == n and out[tuple(a)] == 1 and out[tuple(b)] == 1
        assert ndimage.label(out, structure=np.ones((3, 3)))[1] == 1  # one 8-connected line


def test_random_stroke_stays_inside_a_concave_region():
    region = np.zeros((30, 30), np.uint8)
    region[2:28, 2:6] = region[2:6, 2:28] = 1  # an L
    for seed in range(30):
        out = stroke_random(region, seed)
        assert out.sum() >= 1 and not (out & (1 - region)).any()


def test_boundary_stroke_walks_the_ring():
    region = np.zeros((20, 30), np.uint8)
    region[3:15, 4:26] = 1  # 12 x 22: an inner ring of 2 * (12 + 22) - 4 = 64 pixels
    ring = region - ndimage.binary_erosion(region).astype(np.uint8)
    for seed in (1, 42):
        out = stroke_boundary(region, seed)
        assert out.sum() == max(2, int(0.2 * 64)) + 1  # the start and one pixel per step
        assert not (out & (1 - ring)).any()
        coords = np.argwhere(ring)
        start = coords[random.Random(seed).randint(0, len(coords) - 1)]
        assert out[tuple(start)] == 1
        lab, n = ndimage.label(out, structure=np.ones((3, 3)))
        assert n == 1  # one 8-connected stroke


def test_centerline_stroke_of_a_bar_is_its_middle_trimmed():
    region = np.zeros((15, 60), np.uint8)
    region[4:11, 5:55] = 1  # 7 rows: the skeleton runs along row 7
    out = stroke_centerline(region)
    pts = np.argwhere(out)
    assert set(pts[:, 0]) == {7}
    cols = pts[:, 1]
    assert np.all(np.diff(cols) == 1)  # one run
    full = 50
    assert 0.7 * full <= len(cols) <= 0.85 * full  # 10 % trimmed from each end of the path
    assert abs((cols[0] - 5) - (54 - cols[-1])) <= 2  # symmetric


@pytest.mark.parametrize("strategy", ["centerline", "random", "boundary"])
def test_fallbacks_and_coordinates(strategy):
    mask = np.zeros((12, 10, 8), bool)
    assert simulate_scribble(mask, strategy) is None
    mask[4, 6, 5] = True  # one voxel: every strategy returns the whole region
    s = simulate_scribble(mask, strategy)
    assert s.points == ((4, 6, 5),) and s.size == 1 and s.slice_index == 5
    mask[:] = False
    mask[2:11, 3:6, 2] = True
    s = simulate_scribble(mask, strategy)
    assert s.size >= 1 and all(k == 2 and mask[i, j, k] for i, j, k in s.points)
    assert list(s.points) == sorted(s.points)  # argwhere order


# the loop's rule ------------------------------------------------------------------------------
def test_tumour_scribble_when_not_larger_else_background():
    truth = np.zeros((30, 30, 10), np.uint8)
    truth[5:25, 5:25, 3:7] = 1
    pred = truth.copy()
    pred[5:25, 5:15, 3:7] = 0  # a large miss
    pred[28, 28, 5] = 1  # one false positive voxel: its stroke has 1 voxel
    before = Clicks(((1, 1, 1),), ())
    step = next_scribbles(truth, pred, before, "centerline")
    assert step.added == "tumor" and step.background_size == 1 and step.tumor_size >= 1
    assert step.scribbles.tumor[:1] == ((1, 1, 1),)  # appended to what was there
    assert all(truth[p] == 1 and pred[p] == 0 for p in step.scribbles.tumor[1:])
    pred = truth.copy()
    pred[0:5, 0:30, 0:10] = 1  # a large false positive slab
    pred[10, 10, 4] = 0  # one missed voxel
    step = next_scribbles(truth, pred, Clicks(), "centerline")
    assert step.added == "background" and step.tumor_size == 1 and step.background_size > 1
    assert all(truth[p] == 0 and pred[p] == 1 for p in step.scribbles.background)


def test_empty_regions_official_failure_and_fixed_rule():
    truth = np.zeros((20, 20, 6), np.uint8)
    truth[5:15, 5:15, 2:4] = 1
    with pytest.raises(OfficialLoopFailure, match="over-segmentation and under-segmentation"):
        next_scribbles(truth, truth, Clicks(), "random")
    exact = next_scribbles(truth, truth, Clicks(), "random", empty_region="fixed")
    assert exact.added is None and len(exact.scribbles) == 0
    nothing = np.zeros_like(truth)
    with pytest.raises(OfficialLoopFailure, match="over-segmentation region is empty"):
        next_scribbles(truth, nothing, Clicks(), "random")
    step = next_scribbles(truth, nothing, Clicks(), "random", empty_region="fixed")
    assert step.added == "tumor"
    # an empty truth gets no scribble, whatever the prediction
    step = next_scribbles(np.zeros_like(truth), truth, Clicks(), "random")
    assert step.added is None


# the CLI ----------------------------------------------------------------------------------------
def test_cli_refusals_and_gc_form(tmp_path):
    truth = read_volume(RUN / "label.nii.gz")
    label = RUN / "label.nii.gz"
    base = ["scribbles", "next", "--label", str(label)]
    out = tmp_path / "s.json"
    # an exact prediction: the official loop fails; nothing is written
    result = runner.invoke(app, [*base, "--pred", str(label), "--out", str(out)])
    assert result.exit_code == 2 and "region is empty" in result.output and not out.exists()
    result = runner.invoke(app, [*base, "--pred", str(label), "--out", str(out),
                                 "--empty-region", "fixed"])
    assert result.exit_code == 0 and "exact" in result.output
    assert read_clicks(out) == Clicks()
    # another grid
    other = tmp_path / "other.nii.gz"
    write_volume(Volume(truth.array[:, :, :100], truth.spacing, truth.origin, truth.direction),
                 other)
    result = runner.invoke(app, [*base, "--pred", str(other), "--out", str(out)])
    assert result.exit_code == 2 and "grid" in result.output
    # a non-binary prediction
    bad = tmp_path / "bad.nii.gz"
    write_volume(truth.with_array(truth.array * 2), bad)
    result = runner.invoke(app, [*base, "--pred", str(bad), "--out", str(out)])
    assert result.exit_code == 2 and str(bad) in result.output
    result = runner.invoke(app, [*base, "--pred", str(RUN / "iter_0.nii.gz"), "--out",
                                 str(out), "--strategy", "zigzag"])
    assert result.exit_code == 2 and "--strategy" in result.output
    # the grand-challenge form holds the same points
    result = runner.invoke(app, [*base, "--pred", str(RUN / "iter_0.nii.gz"), "--out",
                                 str(out), "--strategy", "random", "--format", "gc"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["type"] == "Multiple points"
    want = json.loads((RUN / "iter_1_scribbles.json").read_text())
    assert read_clicks(out).to_simple() == want
