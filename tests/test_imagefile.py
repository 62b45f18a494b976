"""The safe image reader: same voxels and geometry as SimpleITK for good files; hostile, cut,
corrupt and oversized files refused with one error naming the file, before their voxels are
read."""

from __future__ import annotations

import gzip
import os
import resource
import struct
import zlib

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from petloop.io.imagefile import ReadLimits, VolumeTooLarge
from petloop.io.volume import Volume, VolumeError, read_volume, write_volume


def _sitk_reference(path) -> Volume:
    """The obvious reader: SimpleITK's own (which pads cut files and drops NaN: good files only)."""
    image = sitk.ReadImage(str(path))
    if image.GetDimension() == 4:
        image = image[:, :, :, 0]
    return Volume.from_sitk(image)


def _geometry_volume(dtype, shape=(7, 5, 4), seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        arr = rng.normal(size=shape).astype(dtype)
    else:
        info = np.iinfo(dtype)
        arr = rng.integers(max(info.min, -3000), min(info.max, 3000), size=shape).astype(dtype)
    angle = 0.3
    direction = (np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle), 0, 0, 0, -1)
    return Volume(arr, (2.0364, 1.5, 3.0), (-400.5, -12.25, 90.0), direction)


def _assert_same(got: Volume, want: Volume) -> None:
    assert got.shape == want.shape
    assert got.array.dtype == want.array.dtype
    np.testing.assert_array_equal(got.array, want.array)
    np.testing.assert_allclose(got.spacing, want.spacing)
    np.testing.assert_allclose(got.origin, want.origin)
    np.testing.assert_allclose(got.direction, want.direction, atol=1e-12)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.float32,
                                   np.float64])
def test_good_files_read_as_simpleitk_reads_them(tmp_path, suffix, dtype):
    path = write_volume(_geometry_volume(dtype), tmp_path / f"img{suffix}")
    _assert_same(read_volume(path), _sitk_reference(path))


def test_compressed_and_uncompressed_metaimage(tmp_path):
    vol = _geometry_volume(np.float32)
    for compress in (True, False):
        path = tmp_path / f"c{compress}.mha"
        sitk.WriteImage(vol.to_sitk(), str(path), useCompression=compress)
        _assert_same(read_volume(path), _sitk_reference(path))


def test_mhd_with_its_data_file_beside_it(tmp_path):
    vol = _geometry_volume(np.int16)
    sitk.WriteImage(vol.to_sitk(), str(tmp_path / "ct.mhd"))
    assert (tmp_path / "ct.raw").is_file()
    _assert_same(read_volume(tmp_path / "ct.mhd"), _sitk_reference(tmp_path / "ct.mhd"))
    with pytest.raises(VolumeError, match="only self-contained"):
        read_volume(tmp_path / "ct.mhd", allow_data_file=False)


def test_nifti_big_endian_4d_and_scaled(tmp_path):
    arr = (np.arange(6 * 5 * 4).reshape(6, 5, 4) - 30).astype(">i2")
    affine = np.diag([-2.0, -3.0, 4.0, 1.0])
    nib.save(nib.Nifti1Image(arr[..., None], affine), tmp_path / "be4d.nii.gz")
    _assert_same(read_volume(tmp_path / "be4d.nii.gz"), _sitk_reference(tmp_path / "be4d.nii.gz"))
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape(arr.shape)
    header.set_qform(affine, code=1)
    header["vox_offset"], header["scl_slope"], header["scl_inter"] = 352, 0.5, -3.0
    raw = header.binaryblock + bytes(4) + arr.astype("<i2").tobytes(order="F")
    (tmp_path / "scaled.nii").write_bytes(raw)  # nibabel's own writer would drop the scaling
    got = read_volume(tmp_path / "scaled.nii")
    assert got.array.dtype == np.float32
    np.testing.assert_allclose(got.array, arr * 0.5 - 3.0)
    np.testing.assert_allclose(got.array, _sitk_reference(tmp_path / "scaled.nii").array)


def _mha_header(element_data_file: str, dims=(4, 4, 4), extra: str = "") -> bytes:
    return ("ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
            f"{extra}DimSize = {' '.join(map(str, dims))}\nElementType = MET_UCHAR\n"
            f"ElementDataFile = {element_data_file}\n").encode()


@pytest.mark.parametrize("target", ["/etc/passwd", "../../../../etc/passwd", "missing.raw",
                                    "LIST", "slice%03d.raw 0 3 1"])
def test_metaimage_never_reads_another_file(tmp_path, target):
    path = tmp_path / "evil.mha"
    path.write_bytes(_mha_header(target))
    with pytest.raises(VolumeError) as err:
        read_volume(path, allow_data_file=False, name="PET upload 'evil.mha'")
    msg = str(err.value)
    assert msg.startswith("PET upload 'evil.mha': ") and "root:" not in msg
    assert str(tmp_path) not in msg and "No such file" not in msg
    with pytest.raises(VolumeError, match="beside the header|lists and file-name patterns"):
        read_volume(path)  # even where a data file is allowed


def test_data_file_through_a_link_out_of_the_folder_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    secret = tmp_path / "elsewhere" / "secret.raw"
    secret.write_bytes(bytes(64))
    inner = tmp_path / "case"
    inner.mkdir()
    os.symlink(secret, inner / "data.raw")
    (inner / "img.mhd").write_bytes(_mha_header("data.raw"))
    with pytest.raises(VolumeError, match="no such file beside the header"):
        read_volume(inner / "img.mhd")


def _nifti_header_only(shape, dtype=np.float32) -> bytes:
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    header["vox_offset"] = 352
    return header.binaryblock + b"\0" * 4


def test_size_bomb_is_refused_before_reading(tmp_path):
    path = tmp_path / "bomb.nii.gz"
    path.write_bytes(gzip.compress(_nifti_header_only((1000, 1000, 1000))))
    assert path.stat().st_size < 2000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(VolumeTooLarge, match=r"1000 x 1000 x 1000 voxels of float32"):
        read_volume(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB
    mha = tmp_path / "bomb.mha"
    mha.write_bytes(_mha_header("LOCAL", dims=(5000, 5000, 5000)))
    with pytest.raises(VolumeTooLarge):
        read_volume(mha)
    with pytest.raises(VolumeTooLarge):  # the limit is the caller's to set
        read_volume(write_volume(Volume(np.zeros((8, 8, 8), np.float32)), tmp_path / "s.nii"),
                    limits=ReadLimits(max_voxels=100))


def test_gzip_bomb_is_refused_without_inflating_it(tmp_path):
    # 4 GiB of zeros declared, gzip-compressed to a few MB: refused from the header alone
    path = tmp_path / "zeros.nii.gz"
    zeros = bytes(1 << 24)
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(_nifti_header_only((1024, 1024, 1024)))
        for _ in range(8):  # 128 MiB written; the header declares 4 GiB
            fh.write(zeros)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(VolumeTooLarge, match="MiB"):
        read_volume(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000


@pytest.mark.parametrize("suffix,compress", [(".nii.gz", True), (".nii", False),
                                             (".mha", False), (".mha", True)])
def test_cut_files_are_refused_not_padded(tmp_path, suffix, compress):
    vol = _geometry_volume(np.float32, shape=(40, 30, 20))
    path = tmp_path / f"full{suffix}"
    sitk.WriteImage(vol.to_sitk(), str(path), useCompression=compress)
    data = path.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VolumeError, match=r"cut\.(nii|mha).*cut short"):
        read_volume(cut)


def test_corrupt_compressed_data_is_refused(tmp_path):
    vol = _geometry_volume(np.float32, shape=(40, 30, 20))
    path = write_volume(vol, tmp_path / "img.nii.gz")
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(range(64))
    path.write_bytes(bytes(data))
    with pytest.raises(VolumeError, match="img.nii.gz: (corrupt|the file is cut)"):
        read_volume(path)
    mha = tmp_path / "img.mha"
    payload = zlib.compress(vol.itk_array().tobytes())
    header = _mha_header("LOCAL", dims=(40, 30, 20), extra="CompressedData = True\n")
    header = header.replace(b"MET_UCHAR", b"MET_FLOAT")
    mha.write_bytes(header + payload[:20] + b"\xff" * 50 + payload[70:])
    with pytest.raises(VolumeError, match="img.mha: corrupt compressed data"):
        read_volume(mha)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_refused_in_every_format(tmp_path, suffix, value):
    arr = np.ones((6, 5, 4), np.float32)
    arr[1, 2, 3] = value
    path = tmp_path / f"pet{suffix}"
    if suffix == ".mha":
        write_volume(Volume(arr), path)
    else:  # nibabel keeps NaN in the file (SimpleITK's reader would turn it into 0)
        nib.save(nib.Nifti1Image(arr, np.eye(4)), path)
    with pytest.raises(VolumeError, match=r"pet\.(nii|mha).*1 voxel\(s\) are NaN or infinite"):
        read_volume(path)


def test_not_3d_and_vector_images_are_refused(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4), np.float32), np.eye(4)), tmp_path / "2d.nii")
    with pytest.raises(VolumeError, match="2d.nii: expected a 3D image"):
        read_volume(tmp_path / "2d.nii")
    header = _mha_header("LOCAL", extra="ElementNumberOfChannels = 3\n")
    (tmp_path / "rgb.mha").write_bytes(header + bytes(4 * 4 * 4 * 3))
    with pytest.raises(VolumeError, match="rgb.mha: expected a scalar image"):
        read_volume(tmp_path / "rgb.mha")


def test_garbage_and_folders_get_one_clear_error(tmp_path):
    (tmp_path / "x.mha").write_bytes(b"\x89PNG" + bytes(200))
    with pytest.raises(VolumeError, match="x.mha: not a MetaImage file"):
        read_volume(tmp_path / "x.mha")
    (tmp_path / "d.nii.gz").mkdir()
    with pytest.raises(VolumeError, match="d.nii.gz: a folder"):
        read_volume(tmp_path / "d.nii.gz")
    (tmp_path / "short.nii").write_bytes(struct.pack("<i", 348) + bytes(20))
    with pytest.raises(VolumeError, match="short.nii: cannot read the file as NIfTI"):
        read_volume(tmp_path / "short.nii")
