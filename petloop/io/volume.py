"""One image type: a voxel array with its geometry.

Axis convention (the only place it is converted)
-------------------------------------------------
``Volume.array`` is indexed ``array[i, j, k]`` in ITK / NIfTI index order: ``i`` runs along the
first image axis (x), ``k`` along the slices (z). This is the order nibabel's arrays use and the
order of click points in autoPET click files, so a click ``(i, j, k)`` addresses
``array[i, j, k]`` directly. ``spacing`` and the columns of ``direction`` follow the same order.

SimpleITK's numpy view (and so nnU-Net's arrays) is indexed ``[k, j, i]``;
:func:`_from_itk_order`, :func:`_to_itk_order` and, for points, :func:`points_to_array_order`
and :func:`points_from_array_order` are the only functions in petloop that reverse the axes.
Everything else (phantoms, clicks, metrics) works on ``Volume.array`` in ``(i, j, k)`` order.

Physical coordinates follow ITK (LPS): ``x = origin + direction @ (spacing * index)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from petloop.io.atomic import atomic_path
from petloop.io.imagefile import (
    DEFAULT_LIMITS,
    READ_SUFFIXES,
    ReadLimits,
    VolumeError,
    VolumeTooLarge,
    check_size,
    read_geometry,
    read_header,
    read_voxels,
)

SUFFIXES = (".nii.gz", ".nii", ".mha")  # what petloop writes (and reads, with .mhd)

__all__ = [
    "DEFAULT_LIMITS", "READ_SUFFIXES", "SUFFIXES", "ReadLimits", "Volume", "VolumeError",
    "VolumeTooLarge", "points_from_array_order", "points_to_array_order", "read_volume",
    "resample_to", "volume_stem", "write_volume",
]


def _from_itk_order(array_kji: np.ndarray) -> np.ndarray:
    return array_kji.transpose(2, 1, 0)


def _to_itk_order(array_ijk: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array_ijk.transpose(2, 1, 0))


def points_to_array_order(points_ijk) -> np.ndarray:
    """Click points ``(i, j, k)`` as indices of SimpleITK's (and nnU-Net's) ``[k, j, i]`` arrays."""
    return np.asarray(points_ijk, dtype=np.int64).reshape(-1, 3)[:, ::-1]


def points_from_array_order(points_kji) -> np.ndarray:
    return np.asarray(points_kji, dtype=np.int64).reshape(-1, 3)[:, ::-1]


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D array in ``(i, j, k)`` order with spacing (mm), origin (mm) and direction cosines."""

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise VolumeError(f"a Volume is 3D; got an array of shape {self.array.shape}")
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        direction = tuple(float(d) for d in np.asarray(self.direction, dtype=float).ravel())
        if len(self.spacing) != 3 or len(self.origin) != 3 or len(direction) != 9:
            raise VolumeError("spacing and origin need 3 values and direction 9")
        if not np.all(np.isfinite(self.spacing)) or min(self.spacing) <= 0:
            raise VolumeError(f"spacing must be positive, got {self.spacing}")
        if not np.all(np.isfinite(self.origin)):
            raise VolumeError(f"origin must be finite, got {self.origin}")
        matrix = np.asarray(direction).reshape(3, 3)
        if not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix)) < 1e-6:
            raise VolumeError(f"direction must be a rotation of the axes, got {direction}")
        object.__setattr__(self, "direction", direction)

    # geometry -------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.array.shape)  # type: ignore[return-value]

    @property
    def direction_matrix(self) -> np.ndarray:
        """3 x 3 matrix whose column ``c`` is the physical direction of index axis ``c``."""
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    def index_to_physical(self, index: np.ndarray | tuple) -> np.ndarray:
        """Physical (LPS, mm) positions of continuous ``(i, j, k)`` indices, shape (..., 3)."""
        idx = np.asarray(index, dtype=float)
        return np.asarray(self.origin) + (idx * np.asarray(self.spacing)) @ self.direction_matrix.T

    def physical_to_index(self, point: np.ndarray | tuple) -> np.ndarray:
        """Continuous ``(i, j, k)`` indices of physical points, shape (..., 3)."""
        p = np.asarray(point, dtype=float) - np.asarray(self.origin)
        return (p @ np.linalg.inv(self.direction_matrix).T) / np.asarray(self.spacing)

    def physical_extent(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned physical bounding box (min, max) of the voxels, edges included."""
        corners = np.array(
            [[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=float
        ) * np.asarray(self.shape) - 0.5
        points = self.index_to_physical(corners)
        return points.min(axis=0), points.max(axis=0)

    def same_grid(self, other: Volume, atol: float = 1e-3) -> bool:
        """True when both volumes sample the same points (shape, spacing, origin, direction)."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=atol * 1e-1)
            and np.allclose(self.origin, other.origin, atol=atol)
            and np.allclose(self.direction, other.direction, atol=1e-5)
        )

    def with_array(self, array: np.ndarray) -> Volume:
        """A new volume on the same grid holding ``array``."""
        if array.shape != self.array.shape:
            raise VolumeError(f"shape {array.shape} does not match the grid {self.array.shape}")
        return Volume(array, self.spacing, self.origin, self.direction)

    def geometry(self) -> dict:
        return {
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": list(self.direction),
        }

    # SimpleITK ------------------------------------------------------------------------------
    def itk_array(self) -> np.ndarray:
        """The voxels in SimpleITK's (and nnU-Net's) ``[k, j, i]`` order."""
        return _to_itk_order(self.array)

    def with_itk_array(self, array_kji: np.ndarray) -> Volume:
        """A volume on this grid from an array in ``[k, j, i]`` order."""
        return self.with_array(_from_itk_order(array_kji))

    def itk_spacing(self) -> tuple[float, float, float]:
        return tuple(reversed(self.spacing))  # type: ignore[return-value]

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> Volume:
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise VolumeError(
                f"expected a 3D scalar image, got {image.GetDimension()}D with "
                f"{image.GetNumberOfComponentsPerPixel()} component(s)"
            )
        return cls(
            _from_itk_order(sitk.GetArrayFromImage(image)),
            image.GetSpacing(),
            image.GetOrigin(),
            image.GetDirection(),
        )

    def to_sitk(self) -> sitk.Image:
        array = self.array
        if array.dtype == bool:
            array = array.astype(np.uint8)
        image = sitk.GetImageFromArray(_to_itk_order(array))
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


def volume_stem(name: str) -> str:
    """A volume file's name without its suffix (``.nii.gz``, ``.nii``, ``.mha``, ``.mhd``)."""
    for suffix in READ_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _check_suffix(path: Path, suffixes: tuple[str, ...] = SUFFIXES) -> None:
    if not path.name.endswith(suffixes):
        raise VolumeError(f"{path}: unsupported file type; use one of {', '.join(suffixes)}")


def read_volume(path: str | Path, *, limits: ReadLimits = DEFAULT_LIMITS,
                allow_data_file: bool = True, name: str | None = None) -> Volume:
    """Read a .nii, .nii.gz, .mha or .mhd file into a :class:`Volume` (geometry kept exactly).

    The header is checked before any voxel is read (size within ``limits``; a MetaImage's data
    in the file itself, or with ``allow_data_file`` in a file beside the header), and the
    voxels are refused when the file is cut short, corrupt, or holds NaN or infinite values
    (see :mod:`petloop.io.imagefile`). Errors start with ``name`` (default: the path).
    """
    path = Path(path)
    label = name or str(path)
    if not path.name.endswith(READ_SUFFIXES):
        raise VolumeError(f"{label}: unsupported file type; use one of "
                          f"{', '.join(READ_SUFFIXES)}")
    if not path.is_file():
        raise VolumeError(f"{label}: no such file" if not path.is_dir() else
                          f"{label}: a folder, not an image file")
    try:
        header = read_header(path, name=label, allow_data_file=allow_data_file)
        check_size(header, limits, label)
        array = read_voxels(header, label)
    except OSError as exc:
        raise VolumeError(f"{label}: cannot read the file ({exc.strerror or exc})") from None
    spacing, origin, direction = read_geometry(path, label)
    try:
        return Volume(array, spacing, origin, direction)
    except VolumeError as exc:
        raise VolumeError(f"{label}: {exc}") from None


def write_volume(volume: Volume, path: str | Path, compress: bool = True) -> Path:
    """Write atomically; the format follows the suffix (.nii.gz, .nii, .mha)."""
    path = Path(path)
    _check_suffix(path)
    image = volume.to_sitk()
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=compress and not path.name.endswith(".nii"))
    return path


def _extent_text(volume: Volume) -> str:
    lo, hi = volume.physical_extent()
    return "[" + ", ".join(f"{a:.1f}..{b:.1f}" for a, b in zip(lo, hi, strict=True)) + "] mm"


def resample_to(
    moving: Volume,
    reference: Volume,
    *,
    interpolation: str = "linear",
    default_value: float = -1024.0,
    moving_name: str = "moving image",
    reference_name: str = "reference image",
) -> Volume:
    """Resample ``moving`` onto the grid of ``reference``.

    This is how the public CTres files are made: CT resampled linearly onto the PET grid, with
    air (-1024 HU) outside the CT field of view. Returns ``moving`` unchanged when the grids
    already agree. Raises :class:`VolumeError` naming both extents when the two images do not
    overlap physically.
    """
    if moving.same_grid(reference):
        return moving
    lo_m, hi_m = moving.physical_extent()
    lo_r, hi_r = reference.physical_extent()
    if np.any(np.minimum(hi_m, hi_r) <= np.maximum(lo_m, lo_r)):
        raise VolumeError(
            f"{moving_name} and {reference_name} do not overlap: {moving_name} covers "
            f"{_extent_text(moving)}, {reference_name} covers {_extent_text(reference)}"
        )
    interpolators = {
        "linear": sitk.sitkLinear,
        "nearest": sitk.sitkNearestNeighbor,
        "bspline": sitk.sitkBSpline,
    }
    if interpolation not in interpolators:
        raise VolumeError(f"unknown interpolation {interpolation!r}; use {sorted(interpolators)}")
    src = moving.to_sitk()
    if interpolation != "nearest":
        src = sitk.Cast(src, sitk.sitkFloat32)
    out = sitk.Resample(
        src,
        list(reference.shape),
        sitk.Transform(),
        interpolators[interpolation],
        reference.origin,
        reference.spacing,
        reference.direction,
        float(default_value),
        src.GetPixelID(),
    )
    return Volume.from_sitk(out)
