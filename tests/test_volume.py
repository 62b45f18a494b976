from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from petloop.io.volume import Volume, VolumeError, read_volume, resample_to, write_volume


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha"])
@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8])
def test_round_trip_keeps_array_and_geometry(tmp_path, geometry_volume, suffix, dtype):
    vol = geometry_volume.with_array((geometry_volume.array * 10).astype(dtype))
    path = write_volume(vol, tmp_path / f"img{suffix}")
    back = read_volume(path)
    assert back.array.dtype == vol.array.dtype
    np.testing.assert_array_equal(back.array, vol.array)
    assert back.spacing == vol.spacing
    assert back.origin == vol.origin
    np.testing.assert_allclose(back.direction, vol.direction, atol=1e-6)
    # a second round trip is exact
    again = read_volume(write_volume(back, tmp_path / f"again{suffix}"))
    assert again.direction == back.direction and again.origin == back.origin


def test_mha_keeps_float64_geometry_exactly(tmp_path):
    vol = Volume(np.zeros((3, 4, 5), np.uint8), (2.0364583333, 2.0364583333, 3.0),
                 (-407.2916748046875, -553.2916870117188, -1201.5), )
    back = read_volume(write_volume(vol, tmp_path / "a.mha"))
    assert back.spacing == vol.spacing and back.origin == vol.origin


def test_axis_convention_is_itk_index_order(tmp_path):
    """array[i, j, k] is voxel (i, j, k): the order of nibabel and of click files."""
    arr = np.zeros((6, 5, 4), np.int16)
    arr[4, 1, 2] = 7  # i=4, j=1, k=2
    vol = Volume(arr, (1.0, 2.0, 3.0), (10.0, 20.0, 30.0))
    path = write_volume(vol, tmp_path / "axes.nii.gz")
    assert nib.load(str(path)).get_fdata()[4, 1, 2] == 7
    image = sitk.ReadImage(str(path))
    assert image.GetSize() == (6, 5, 4)
    assert image.GetPixel(4, 1, 2) == 7
    assert sitk.GetArrayFromImage(image)[2, 1, 4] == 7
    np.testing.assert_allclose(vol.index_to_physical((4, 1, 2)),
                               image.TransformIndexToPhysicalPoint((4, 1, 2)))
    np.testing.assert_allclose(vol.physical_to_index(vol.index_to_physical((4, 1, 2))),
                               (4, 1, 2))


def test_oblique_index_to_physical_matches_itk(geometry_volume):
    image = geometry_volume.to_sitk()
    for idx in [(0, 0, 0), (6, 4, 3), (2, 3, 1)]:
        np.testing.assert_allclose(geometry_volume.index_to_physical(idx),
                                   image.TransformIndexToPhysicalPoint(idx), atol=1e-9)


def _ramp(shape, spacing, origin):
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    x = origin[0] + i * spacing[0]
    y = origin[1] + j * spacing[1]
    z = origin[2] + k * spacing[2]
    return (x + 2 * y - 3 * z).astype(np.float32)


def test_resample_ct_onto_pet_grid_is_linear_with_air_outside():
    ct = Volume(_ramp((40, 40, 30), (1.0, 1.0, 1.5), (0, 0, 0)), (1.0, 1.0, 1.5), (0, 0, 0))
    pet = Volume(np.zeros((12, 12, 12), np.float32), (4.0, 4.0, 4.0), (2.0, 2.0, 2.0))
    res = resample_to(ct, pet)
    assert res.same_grid(pet)
    # points inside the CT follow the ramp exactly (linear interpolation of a linear function)
    inside = res.array[:9, :9, :10]
    expected = _ramp((12, 12, 12), (4.0, 4.0, 4.0), (2.0, 2.0, 2.0))[:9, :9, :10]
    np.testing.assert_allclose(inside, expected, atol=1e-3)
    # beyond the CT's extent (x > 39.5 mm) is air
    assert np.all(res.array[10:, :, :] == -1024)


def test_resample_same_grid_returns_input():
    vol = Volume(np.ones((3, 3, 3), np.float32))
    assert resample_to(vol, vol) is vol


def test_resample_without_overlap_names_both_extents():
    ct = Volume(np.zeros((10, 10, 10), np.int16), (1, 1, 1), (0, 0, 0))
    pet = Volume(np.zeros((10, 10, 10), np.float32), (2, 2, 2), (0, 0, 500))
    with pytest.raises(VolumeError) as err:
        resample_to(ct, pet, moving_name="CT a.nii.gz", reference_name="PET b.nii.gz")
    msg = str(err.value)
    assert "do not overlap" in msg and "CT a.nii.gz" in msg and "PET b.nii.gz" in msg
    assert "-0.5..9.5" in msg and "499.0..519.0" in msg


def test_bad_files_get_clear_errors(tmp_path):
    with pytest.raises(VolumeError, match="no such file"):
        read_volume(tmp_path / "missing.nii.gz")
    with pytest.raises(VolumeError, match="unsupported file type"):
        read_volume(tmp_path / "x.png")
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(VolumeError, match="broken.nii.gz: cannot read"):
        read_volume(bad)
    with pytest.raises(VolumeError, match="3D"):
        Volume(np.zeros((3, 3)))


def test_degenerate_geometry_is_refused():
    arr = np.zeros((3, 3, 3), np.float32)
    for bad in [dict(spacing=(1.0, float("nan"), 1.0)), dict(origin=(0.0, float("inf"), 0.0)),
                dict(direction=(0.0,) * 9), dict(direction=(1, 0, 0, 1, 0, 0, 0, 0, 1)),
                dict(direction=(float("nan"),) + (0.0,) * 8)]:
        with pytest.raises(VolumeError):
            Volume(arr, **bad)
