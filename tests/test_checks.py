"""Role checks: a PET in SUV, a CT, a lesion label of 0 and 1."""

from __future__ import annotations

import numpy as np
import pytest

from petloop.io.checks import MAX_BODY_SUV, body_median, check_ct, check_label, check_pet
from petloop.io.volume import Volume, VolumeError
from petloop.phantom import PhantomConfig, generate_case


@pytest.fixture(scope="module")
def pets():
    return [generate_case(PhantomConfig(seed=31, tracer=t), i).case.pet
            for t in ("fdg", "psma") for i in range(2)]


def test_phantom_pets_pass_and_the_same_in_bq_per_ml_is_refused(pets):
    for pet in pets:
        check_pet(pet, "PET x")
        assert 0.3 < body_median(pet.array) < 10
        # 300 MBq in 75 kg: 1 SUV is 4000 Bq/ml
        activity = pet.with_array(pet.array * 4000.0)
        with pytest.raises(VolumeError, match=r"^PET x: .*looks like activity .*--trust-suv"):
            check_pet(activity, "PET x")
        check_pet(activity, "PET x", trust_suv=True)


def test_body_median_against_a_sort():
    rng = np.random.default_rng(3)
    arr = np.zeros((40, 40, 40), np.float32)
    arr[10:30, 10:30, 5:35] = rng.gamma(2.0, 0.6, size=(20, 20, 30))
    arr[18:22, 18:22, 18:22] = 80.0
    top = np.percentile(arr, 99.5)
    body = np.sort(arr[arr > 0.1 * top])
    assert body_median(arr) == pytest.approx(np.median(body), rel=1e-6)
    assert body_median(arr) < MAX_BODY_SUV


def test_negative_nan_and_empty_pets(pets):
    pet = pets[0]
    ct_like = pet.with_array(np.where(pet.array > 0.1, pet.array, -1024.0))
    with pytest.raises(VolumeError, match="goes down to -1024"):
        check_pet(ct_like, "PET y")
    noisy = pet.array.copy()
    noisy[0, 0, 0] = -0.4  # reconstruction noise below zero is allowed
    check_pet(pet.with_array(noisy))
    bad = pet.array.copy()
    bad[1, 2, 3] = np.nan
    for trust in (False, True):
        with pytest.raises(VolumeError, match="PET y: the PET holds 1 NaN or infinite"):
            check_pet(pet.with_array(bad), "PET y", trust_suv=trust)
    with pytest.raises(VolumeError, match="no voxel above 0"):
        check_pet(pet.with_array(np.zeros(pet.shape, np.float32)), "PET y")


def test_ct_and_label_checks():
    ct = np.full((5, 5, 5), -1000.0, np.float32)
    check_ct(Volume(ct))
    ct[2, 2, 2] = np.inf
    with pytest.raises(VolumeError, match="CT z: the CT holds 1 NaN"):
        check_ct(Volume(ct), "CT z")
    label = np.zeros((5, 5, 5), np.uint8)
    label[1, 1, 1] = 1
    check_label(Volume(label))
    check_label(Volume(label.astype(bool)))
    check_label(Volume(label.astype(np.float32)))
    label[2, 2, 2], label[3, 3, 3] = 2, 7
    with pytest.raises(VolumeError, match=r"SEG: a lesion label holds 0 .* also holds 2, 7$"):
        check_label(Volume(label), "SEG")
