from __future__ import annotations

import cc3d
import numpy as np
import pytest
from scipy import ndimage

from petloop.phantom import PRESETS, PhantomConfig, generate_case
from petloop.phantom.anatomy import draw_anatomy, render_regions
from petloop.phantom.lesions import (
    FDG_FAINT_SUVMAX,
    LesionSpec,
    _suv_peak,
    recovery,
    render_lesions,
)
from petloop.phantom.physics import ct_map, draw_imaging
from petloop.phantom.regions import ORGAN_IDS, R
from petloop.phantom.shapes import Grid

N_PER_TRACER = 8


@pytest.fixture(scope="module")
def cohort():
    """Default-size phantoms of both tracers (a quarter of them negative controls)."""
    out = {}
    for tracer in ("fdg", "psma"):
        cfg = PhantomConfig(seed=5, tracer=tracer, negative_fraction=0.25)
        out[tracer] = [generate_case(cfg, i) for i in range(N_PER_TRACER)]
    return out


def test_same_seed_same_case_other_seed_other_case():
    cfg = PhantomConfig(seed=3, shape=(48, 48, 64), spacing=(4.0, 4.0, 6.0))
    a, b = generate_case(cfg, 2), generate_case(cfg, 2)
    for name in ("ct", "pet", "label", "organs"):
        np.testing.assert_array_equal(getattr(a.case, name).array, getattr(b.case, name).array)
    assert a.info == b.info
    c = generate_case(PhantomConfig(seed=4, shape=(48, 48, 64), spacing=(4.0, 4.0, 6.0)), 2)
    assert not np.array_equal(a.case.pet.array, c.case.pet.array)


def test_default_case_geometry(cohort):
    case = cohort["fdg"][0].case
    assert case.pet.shape == PRESETS["quick"][0] == (168, 128, 256)
    assert case.pet.spacing == pytest.approx((3.0, 3.0, 4.0))
    assert cohort["fdg"][0].info["field_of_view"]["covers_body"] == {
        "width": True, "depth": True, "length": True}
    assert case.ct.same_grid(case.pet) and case.label.same_grid(case.pet)
    assert case.pet.array.dtype == np.float32 and case.ct.array.dtype == np.int16
    assert case.label.array.dtype == np.uint8 and set(np.unique(case.label.array)) <= {0, 1}


def test_negative_fraction_and_lesion_counts(cohort):
    for tracer, cases in cohort.items():
        negatives = [c for c in cases if c.info["negative_control"]]
        assert len(negatives) == N_PER_TRACER // 4, tracer
        for c in negatives:
            assert c.info["n_lesions"] == 0 and not c.case.label.array.any()
        positives = [c for c in cases if not c.info["negative_control"]]
        counts = [c.info["n_lesions"] for c in positives]
        assert min(counts) >= 1
        assert 2 <= np.mean(counts) <= 15, counts
    # the label is the union of the listed lesions, and their volumes add up
    for c in cohort["fdg"] + cohort["psma"]:
        voxels = int(c.case.label.array.sum())
        assert voxels == sum(x["voxels"] for x in c.info["lesions"])
        ml = voxels * c.case.pet.voxel_volume_ml
        assert c.info["total_lesion_volume_ml"] == pytest.approx(ml, abs=1e-3)
        n_cc = cc3d.connected_components(c.case.label.array, connectivity=26, return_N=True)[1]
        assert n_cc == c.info["n_components"] <= c.info["n_lesions"]


def test_lesion_volume_distribution(cohort):
    lesions = [x for cs in cohort.values() for c in cs for x in c.info["lesions"]]
    assert len(lesions) >= 20
    diam = np.array([x["diameter_mm"] for x in lesions])
    vol = np.array([x["volume_ml"] for x in lesions])
    assert diam.min() >= 4.0 and diam.max() <= 50.0
    # mostly small lesions, a few large ones: a long right tail
    assert np.median(vol) < 1.5 < vol.max()
    assert (vol < 0.5).mean() > 0.2
    # irregular shapes, but of the size drawn: within a factor of the sphere's volume
    sphere = np.pi / 6 * diam**3 / 1000
    ratio = vol / sphere
    assert np.median(ratio) == pytest.approx(1.0, abs=0.6)
    sites = {x["site"] for x in lesions}
    assert {"lymph_node", "bone", "lung", "liver"} <= sites
    assert any(x["site"] == "near_hot_organ" for x in lesions)


def _organ_median(case, organ):
    mask = ndimage.binary_erosion(case.organs.array == ORGAN_IDS[organ], iterations=1)
    mask &= case.label.array == 0
    return float(np.median(case.pet.array[mask]))


def test_organ_uptake_per_tracer(cohort):
    fdg = {o: np.mean([_organ_median(c.case, o) for c in cohort["fdg"]])
           for o in ("liver", "brain", "kidneys", "urinary_bladder", "spleen", "lungs")}
    psma = {o: np.mean([_organ_median(c.case, o) for c in cohort["psma"]])
            for o in ("liver", "brain", "kidneys", "urinary_bladder", "head_glands", "spleen")}
    assert 1.5 < fdg["liver"] < 3.0
    assert fdg["brain"] > 2.5 * fdg["liver"]
    assert fdg["urinary_bladder"] > 3 * fdg["liver"]
    assert fdg["lungs"] < 0.5 * fdg["liver"]
    assert fdg["spleen"] < fdg["liver"] * 1.2
    assert psma["kidneys"] > 15 and psma["kidneys"] > 2 * psma["liver"]
    assert psma["head_glands"] > 6
    assert psma["brain"] < 1.0 < fdg["brain"]
    assert psma["liver"] > fdg["liver"]
    # FDG myocardium varies between patients from background to very hot
    heart = [c.info["organ_suv_mean"]["heart"] for c in cohort["fdg"]]
    assert max(heart) > 2 * min(heart)


def test_liver_noise_and_psf(cohort):
    cvs = []
    for c in cohort["fdg"]:
        mask = ndimage.binary_erosion(c.case.organs.array == ORGAN_IDS["liver"], iterations=2)
        mask &= ndimage.binary_dilation(c.case.label.array, iterations=4) == 0
        vals = c.case.pet.array[mask]
        cvs.append(vals.std() / vals.mean())
    assert 0.06 < np.median(cvs) < 0.25
    # partial-volume loss: the scanner blur lowers the measured SUVmax of small hot lesions
    small = [x for cs in cohort.values() for c in cs for x in c.info["lesions"]
             if x["diameter_mm"] < 8 and x["suv_peak_true"] > 4]
    large = [x for cs in cohort.values() for c in cs for x in c.info["lesions"]
             if x["diameter_mm"] > 20 and x["suv_peak_true"] > 4]
    assert small and large
    recovery_small = np.median([x["suvmax"] / x["suv_peak_true"] for x in small])
    recovery_large = np.median([x["suvmax"] / x["suv_peak_true"] for x in large])
    assert recovery_small < 0.8 and recovery_small < recovery_large - 0.15


def test_ct_numbers_and_organs(cohort):
    c = next(c for c in cohort["psma"])  # PSMA patients are male
    ct, org = c.case.ct.array, c.case.organs.array
    assert set(np.unique(org)) == set(range(11))
    lung = ndimage.binary_erosion(org == ORGAN_IDS["lungs"], iterations=2)
    assert -900 < np.median(ct[lung]) < -750
    liver = ndimage.binary_erosion(org == ORGAN_IDS["liver"], iterations=2)
    assert 30 < np.median(ct[liver]) < 130
    assert ct.max() > 600  # cortical bone
    assert ct.min() <= -990  # air around the body
    females = [x for x in cohort["fdg"] if x.info["sex"] == "female"]
    for f in females:
        assert not (f.case.organs.array == ORGAN_IDS["prostate"]).any()


def test_lesions_change_ct_only_in_lung_and_bone():
    grid = Grid.fit((128, 96, 256), (4.0, 4.0, 4.0))
    anatomy = draw_anatomy(np.random.default_rng(1), "male")
    regions = render_regions(anatomy, grid)
    imaging = draw_imaging(np.random.default_rng(2), "fdg")
    ct = ct_map(regions, imaging)
    before = ct.copy()
    activity = np.ones(grid.shape, np.float32)
    big = (80.0, 80.0, 80.0)
    specs = [LesionSpec(i + 1, site, None, centre, 60.0, (((0, 0, 0), big),), (0, 0, 0), 0.2,
                        9.0, False, 500.0, 7 + i)
             for i, (site, centre) in enumerate([("lung", (-74, 12, 462)),
                                                 ("liver", (-55, 8, 642)),
                                                 ("bone", (0, 60, 600))])]
    ids = render_lesions(grid, specs, regions, activity, ct)
    changed = ct != before
    assert changed.any()
    assert np.isin(regions[changed], [R["lung"], R["cortical_bone"], R["marrow"]]).all()
    assert ((ids == 2) & (regions == R["liver"])).sum() > 10
    assert not (changed & (regions == R["liver"])).any()
    assert activity[ids > 0].min() > 1.0


def test_fdg_uptake_is_avid_and_rises_with_size():
    """Drawn FDG SUVmax (true activity times the sphere's recovery) is above the liver's SUVmax
    of about 2.7, with a median of about 6.4 at 14 mm that rises with the diameter."""
    rng = np.random.default_rng(0)

    def measured(d, n=4000):
        return np.array([_suv_peak(rng, "fdg", "lymph_node", d, 6.5) * recovery(d, 6.5)
                         for _ in range(n)])

    small, typical, large = measured(8.0), measured(14.0), measured(50.0)
    assert min(small.min(), typical.min(), large.min()) >= FDG_FAINT_SUVMAX[0] - 1e-9
    assert np.median(typical) == pytest.approx(6.4, rel=0.1)
    assert np.median(large) > 1.6 * np.median(typical)
    assert np.median(small) < np.median(typical)
    assert 0.07 < np.mean(typical < FDG_FAINT_SUVMAX[1]) < 0.35  # the faint tenth and the tail
    # PSMA keeps its published SUVmax by site, independent of size
    psma = [_suv_peak(rng, "psma", "bone", 30.0, 6.5) * recovery(30.0, 6.5) for _ in range(4000)]
    assert np.median(psma) == pytest.approx(np.median(
        [_suv_peak(rng, "psma", "bone", 60.0, 6.5) * recovery(60.0, 6.5) for _ in range(4000)]),
        rel=0.1)


def test_fdg_lesion_voxels_near_published_suv(cohort):
    """SUV in FDG lesion voxels near the published lesion mean of 7.06 (SPEC section 9)."""
    values = np.concatenate([c.case.pet.array[c.case.label.array > 0] for c in cohort["fdg"]
                             if c.case.label.array.any()])
    assert 5.0 < values.mean() < 10.0
    assert np.percentile(values, 0.5) < 1.5 < 15.0 < np.percentile(values, 99.5)


SMALL = dict(shape=(32, 32, 40), spacing=(6.0, 6.0, 9.0))


@pytest.mark.parametrize("layout", ["autopet", "nnunet", "gc"])
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_interrupted_phantom_write_leaves_whole_cases_only(tmp_path, monkeypatch, layout,
                                                               error):
    """A failure in the middle of case 1 (its third volume): case 0 is there whole, case 1 not at
    all, and no temporary file or folder is left."""
    import petloop.io.layouts as layouts
    from petloop.io.layouts import find_cases
    from petloop.phantom import write_phantoms

    config = PhantomConfig(seed=3, tracer="fdg", negative_fraction=0.0, **SMALL)
    write = layouts.write_volume
    calls = []

    def failing(volume, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 4 + 3:  # four volumes per case
            raise error("stopped")
        return write(volume, path, *args, **kwargs)

    monkeypatch.setattr(layouts, "write_volume", failing)
    out = tmp_path / layout
    with pytest.raises(error):
        write_phantoms(config, out, 3, layout=layout)
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]
    if layout == "nnunet":  # dataset.json comes last; the files say which cases are whole
        assert {p.name for p in out.rglob("*.nii.gz")} == {
            "fdg_phantom0000_s3_0000.nii.gz", "fdg_phantom0000_s3_0001.nii.gz",
            "fdg_phantom0000_s3.nii.gz"}
        layouts.write_nnunet_dataset_json(out, 1, "interrupted")
    found = find_cases(out)
    assert [f.case_id for f in found] == ["fdg_phantom0000_s3"]
    assert found[0].load().organs is not None
    # a run over the same folder replaces cases whole
    monkeypatch.setattr(layouts, "write_volume", write)
    files = write_phantoms(config, out, 2, layout=layout)
    assert [f.case_id for f in find_cases(out)] == [f.case_id for f in files]
    assert all(f.pet.is_file() and not any(part.startswith(".") for part in f.pet.parts)
               for f in files)
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]


def _organ_ml(ph, organ: str) -> float:
    return float((ph.case.organs.array == ORGAN_IDS[organ]).sum() * ph.case.pet.voxel_volume_ml)


def test_adult_anatomy_on_every_grid():
    """Organs and lesions keep their size in mm whatever the grid: the same patient on the
    quick grid and on the autoPET PSMA grid has the same liver, brain and lesions."""
    quick = generate_case(PhantomConfig.preset("quick", seed=8, tracer="psma", lesions=(4, 4)),
                          0)
    fine = generate_case(PhantomConfig.preset("autopet-psma", seed=8, tracer="psma",
                                              lesions=(4, 4)), 0)
    for organ in ("liver", "brain", "kidneys"):
        assert _organ_ml(quick, organ) == pytest.approx(_organ_ml(fine, organ), rel=0.06), organ
    # an adult liver (1.2 to 2.4 l), brain (1.1 to 1.6 l)
    assert 1000 < _organ_ml(quick, "liver") < 2600
    assert 1000 < _organ_ml(quick, "brain") < 1800
    # the same lesions are drawn (a placement can fail on one grid and not on the other)
    a = {x["diameter_mm"] for x in quick.info["lesions"]}
    b = {x["diameter_mm"] for x in fine.info["lesions"]}
    assert len(a & b) >= 3
    assert quick.info["anatomy"] == fine.info["anatomy"]


def test_a_smaller_grid_crops_the_body_as_a_scanner_would():
    """A short field of view keeps the head and loses the legs; ``top_mm`` moves it down the
    body; nothing is shrunk to fit."""
    whole = generate_case(PhantomConfig.preset("quick", seed=8, tracer="fdg"), 0)
    short = generate_case(PhantomConfig(seed=8, tracer="fdg", shape=(168, 128, 64),
                                        spacing=(3.0, 3.0, 4.0)), 0)
    np.testing.assert_array_equal(short.case.organs.array, whole.case.organs.array[..., -64:])
    assert short.info["field_of_view"]["covers_body"]["length"] is False
    assert ORGAN_IDS["brain"] in np.unique(short.case.organs.array)
    assert ORGAN_IDS["liver"] not in np.unique(short.case.organs.array)
    chest = generate_case(PhantomConfig(seed=8, tracer="fdg", shape=(168, 128, 64),
                                        spacing=(3.0, 3.0, 4.0), top_mm=246.0), 0)
    # 246 mm below the vertex is 64 slices of 4 mm under the quick grid's top at -10 mm
    np.testing.assert_array_equal(chest.case.organs.array,
                                  whole.case.organs.array[..., -128:-64])
    narrow = generate_case(PhantomConfig(seed=8, tracer="fdg", shape=(100, 128, 256),
                                         spacing=(3.0, 3.0, 4.0)), 0)
    np.testing.assert_array_equal(narrow.case.organs.array, whole.case.organs.array[34:134])
    assert narrow.info["field_of_view"]["covers_body"]["width"] is False


def test_presets():
    assert PRESETS["autopet-fdg"] == ((400, 400, 326), (2.0364, 2.0364, 3.0))
    cfg = PhantomConfig.preset("autopet-psma", seed=1)
    assert (cfg.shape, cfg.spacing) == PRESETS["autopet-psma"]
    with pytest.raises(ValueError, match="unknown preset"):
        PhantomConfig.preset("tiny")
