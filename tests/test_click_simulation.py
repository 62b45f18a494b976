from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from official_clicks_reference import reference_clicks
from scipy import ndimage

from petloop.clicks.simulate import percentile_outside, simulate_clicks
from petloop.io.volume import read_volume, write_volume


def ball(shape, centre, radius):
    g = np.indices(shape)
    d2 = sum((g[a] - centre[a]) ** 2 for a in range(3))
    return d2 <= radius * radius


def test_single_sphere_centre_then_boundary_layer():
    shape = (30, 30, 30)
    label = ball(shape, (10, 12, 14), 4).astype(np.uint8)
    pet = np.zeros(shape, np.float32)
    clicks = simulate_clicks(label, pet, background=False)
    assert clicks.tumor[0] == (10, 12, 14)
    assert len(clicks.tumor) == 10 and clicks.background == ()
    edt = ndimage.distance_transform_edt(label)
    for p in clicks.tumor[1:]:
        assert label[p] and edt[p] == 1.0  # the innermost-distance layer: the boundary


def test_two_components_alternate_after_their_centres():
    shape = (40, 30, 30)
    a, b = ball(shape, (8, 15, 15), 3), ball(shape, (30, 15, 15), 5)
    label = (a | b).astype(np.uint8)
    clicks = simulate_clicks(label, None, background=False)
    assert set(clicks.tumor[:2]) == {(8, 15, 15), (30, 15, 15)}
    first = a if clicks.tumor[0] == (8, 15, 15) else b
    for n, p in enumerate(clicks.tumor[2:]):
        in_first = bool(first[p])
        assert in_first == (n % 2 == 0)


def test_more_components_than_budget_gives_one_centre_each():
    shape = (60, 60, 20)
    label = np.zeros(shape, np.uint8)
    centres = [(5 + 10 * (n % 5), 5 + 20 * (n // 5), 10) for n in range(12)]
    for c in centres:
        label |= ball(shape, c, 2).astype(np.uint8)
    clicks = simulate_clicks(label, None, background=False)
    assert len(clicks.tumor) == 10 and len(set(clicks.tumor)) == 10
    assert set(clicks.tumor) <= set(centres)


def test_budget_and_seed():
    label = ball((20, 20, 20), (10, 10, 10), 3).astype(np.uint8)
    assert len(simulate_clicks(label, None, background=False, budget=3).tumor) == 3
    a = simulate_clicks(label, None, background=False, seed=1)
    b = simulate_clicks(label, None, background=False, seed=2)
    assert a.tumor[0] == b.tumor[0] and a.tumor != b.tumor


def test_empty_label_background_only_at_hot_spots():
    shape = (60, 60, 60)
    pet = np.zeros(shape, np.float32)
    centres = [(10, 10, 10), (40, 20, 30), (20, 45, 45)]
    for c in centres:
        pet[ball(shape, c, 3)] = 10.0
    label = np.zeros(shape, np.uint8)
    clicks = simulate_clicks(label, pet)
    assert clicks.tumor == ()
    # three candidate components: their centres first, then random voxels of them, in turn
    assert set(clicks.background[:3]) == set(centres)
    assert len(clicks.background) == 10
    order = [min(range(3), key=lambda i: np.abs(np.subtract(p, centres[i])).sum())
             for p in clicks.background]
    assert order[3:] == (order[:3] * 3)[: 7]
    for p in clicks.background:
        assert pet[p] == 10.0


def test_background_never_in_tumour_and_threshold_excludes_label():
    shape = (50, 50, 50)
    rng = np.random.default_rng(3)
    pet = rng.gamma(2.0, 0.5, size=shape).astype(np.float32)
    label = ball(shape, (25, 25, 25), 6).astype(np.uint8)
    pet[label > 0] = 50.0
    clicks = simulate_clicks(label, pet)
    th = np.percentile(pet[label == 0].astype(np.float64), 99.75)
    for p in clicks.background:
        assert not label[p] and pet[p] > th


def test_percentile_matches_numpy():
    rng = np.random.default_rng(0)
    for shape in [(13, 11, 7), (64, 64, 40), (1, 1, 5)]:
        pet = rng.lognormal(size=shape).astype(np.float32)
        label = (rng.random(shape) < 0.3).astype(np.uint8)
        label.flat[0] = 0
        expected = np.percentile(pet[label == 0].astype(np.float64), 99.75)
        assert percentile_outside(pet, label) == expected
        for q in (50.0, 99.0, 100.0, 0.0):
            assert percentile_outside(pet, label, q) == np.percentile(
                pet[label == 0].astype(np.float64), q)


def _random_case(seed, shape=(40, 36, 32)):
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    for _ in range(rng.integers(0, 14)):
        c = [rng.integers(0, s) for s in shape]
        label |= ball(shape, c, rng.uniform(0.5, 4)).astype(np.uint8)
    pet = ndimage.gaussian_filter(rng.gamma(1.5, 1.0, size=shape), 1.0).astype(np.float32)
    pet[rng.random(shape) < 0.002] = 20.0  # single-voxel hot spots: thin components
    pet += 3 * label
    return label, pet


@pytest.mark.parametrize("seed", range(12))
def test_equal_to_the_literal_official_algorithm(seed):
    label, pet = _random_case(seed)
    ours = simulate_clicks(label, pet)
    ref = reference_clicks(label, pet)
    assert list(ours.tumor) == ref["tumor"]
    assert list(ours.background) == ref["background"]


def test_thin_background_components_fill_up_anywhere_outside_them():
    """When every voxel of a component has the same EDT, the official fill-up mask is the whole
    volume outside that component."""
    shape = (30, 30, 30)
    pet = np.zeros(shape, np.float32)
    for c in [(3, 3, 3), (20, 20, 20)]:
        pet[c] = 5.0
    label = np.zeros(shape, np.uint8)
    label[10:14, 10:14, 10:14] = 1
    ours = simulate_clicks(label, pet)
    assert ours.background[:2] in (((3, 3, 3), (20, 20, 20)), ((20, 20, 20), (3, 3, 3)))
    assert list(ours.background) == reference_clicks(label, pet)["background"]
    assert any(pet[p] == 0 for p in ours.background[2:])


@pytest.mark.parametrize("seed", range(4))
def test_jitter_equal_to_reference(seed):
    label, pet = _random_case(100 + seed)
    ours = simulate_clicks(label, pet, center_offset=2, edge_offset=1)
    ref = reference_clicks(label, pet, center_offset=2, edge_offset=1)
    assert list(ours.tumor) == ref["tumor"] and list(ours.background) == ref["background"]
    for p in ours.tumor:
        assert label[p]


def test_files_read_as_the_official_script_reads_them(tmp_path, small_cases):
    """Their script loads with nibabel (float64, Fortran order); petloop reads with SimpleITK."""
    case = next(c for c in small_cases if c.label.array.any())
    write_volume(case.label, tmp_path / "SEG.nii.gz")
    write_volume(case.pet, tmp_path / "SUV.nii.gz")
    label_nib = nib.load(str(tmp_path / "SEG.nii.gz")).get_fdata()
    pet_nib = nib.load(str(tmp_path / "SUV.nii.gz")).get_fdata()
    ref = reference_clicks(label_nib, pet_nib)
    ours = simulate_clicks(read_volume(tmp_path / "SEG.nii.gz").array,
                           read_volume(tmp_path / "SUV.nii.gz").array)
    assert list(ours.tumor) == ref["tumor"] and list(ours.background) == ref["background"]
    # C-ordered input is numbered as nibabel's Fortran-ordered arrays are
    again = simulate_clicks(np.ascontiguousarray(case.label.array),
                            np.ascontiguousarray(case.pet.array))
    assert again == ours


def test_shape_mismatch():
    with pytest.raises(ValueError, match="differs from PET shape"):
        simulate_clicks(np.zeros((3, 3, 3)), np.zeros((3, 3, 4)))
