"""Reading image files safely: headers checked before a voxel is read, data checked as it is.

petloop reads NIfTI (``.nii``, ``.nii.gz``) and MetaImage (``.mha``, and ``.mhd`` with its data
file) itself, so that a file from anyone (an upload to the viewer, a folder from elsewhere) is
never trusted further than its header allows:

* **Size first.** The header's declared size and voxel type are checked against
  :class:`ReadLimits` before any voxel is read or decompressed, so a 1 KB header that declares
  a terabyte, or a gzip bomb, costs nothing.
* **Only the file itself.** A MetaImage's ``ElementDataFile`` is ``LOCAL`` (the voxels follow
  the header); a separate data file (``.mhd`` + ``.raw``) is read only where the caller allows
  it (the command line, a data folder; never an upload), and only when it lies in the header's
  own folder. ``LIST`` and file-name patterns are refused. No other file is ever opened.
* **Complete and intact.** The voxels are decompressed into a buffer of exactly the declared
  size; a file that ends early (a cut ``.nii.gz``, a short ``.nii`` or ``.raw``) or whose
  compressed stream is corrupt is refused, never padded with zeros.
* **Finite.** Floating-point voxels that are NaN or infinite are refused (SimpleITK's NIfTI
  reader turns them into 0 without a word).

The voxels are decoded here (x fastest, the files' own order, so no copy is made for native
byte order); the geometry (spacing, origin, direction) comes from SimpleITK's reading of the
header alone, exactly as ``sitk.ReadImage`` gives it. Every error is a :class:`VolumeError`
whose message starts with the file's name (or the name the caller gives, e.g. "PET upload").
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

READ_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd")
_CHUNK = 1 << 24  # bytes per read or decompression step


class VolumeError(ValueError):
    """A volume file could not be read or written, or two grids are incompatible."""


class VolumeTooLarge(VolumeError):
    """A header declares more voxels or bytes than the reader's limits allow."""


@dataclass(frozen=True)
class ReadLimits:
    """The largest image a reader accepts: voxels, and bytes of voxel data as stored.

    The defaults hold a whole-body CT of 512 x 512 x 1024 voxels (2^28) stored as float32
    (1 GiB); the autoPET grids are a fifth of that.
    """

    max_voxels: int = 2**28
    max_bytes: int = 2**30

    def __post_init__(self) -> None:
        if self.max_voxels < 1 or self.max_bytes < 1:
            raise ValueError("read limits must be positive")


DEFAULT_LIMITS = ReadLimits()


@dataclass(frozen=True)
class Header:
    """What a header declares: shape ``(i, j, k)``, stored voxel type, where the voxels are."""

    shape: tuple[int, ...]
    dtype: np.dtype
    data_file: Path  # the file holding the voxels (the header's own file unless .mhd/.raw)
    offset: int  # bytes before the voxels in ``data_file`` (-1: at the end, MetaImage)
    compression: str | None  # None, "gzip" (whole .nii.gz file) or "zlib" (MetaImage)
    compressed_size: int | None = None
    slope: float | None = None  # NIfTI scaling
    inter: float | None = None

    @property
    def voxels(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.voxels * self.dtype.itemsize


def _fail(name: str, problem: str) -> VolumeError:
    return VolumeError(f"{name}: {problem}")


# headers ---------------------------------------------------------------------------------------
def _nifti_header(path: Path, name: str) -> Header:
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        img = nib.load(str(path))  # reads the header only
        dtype = np.dtype(img.get_data_dtype())
        shape = tuple(int(n) for n in img.shape)
        offset = int(img.dataobj.offset)
        slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)  # header's scl_*
    except (ImageFileError, OSError, EOFError, ValueError, zlib.error, TypeError) as exc:
        raise _fail(name, f"cannot read the file as NIfTI ({_short(exc, path)})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise _fail(name, f"not a NIfTI image ({type(img).__name__})")
    if dtype.fields is not None or dtype.kind not in "biuf":
        raise _fail(name, f"voxels of type {dtype} are not scalar numbers")
    compression = "gzip" if path.name.endswith(".gz") else None
    return Header(shape, dtype, path, offset, compression, None, slope, inter)


_MET_TYPES = {
    "MET_CHAR": "i1", "MET_UCHAR": "u1", "MET_SHORT": "i2", "MET_USHORT": "u2",
    "MET_INT": "i4", "MET_UINT": "u4", "MET_LONG": "i4", "MET_ULONG": "u4",
    "MET_LONG_LONG": "i8", "MET_ULONG_LONG": "u8", "MET_FLOAT": "f4", "MET_DOUBLE": "f8",
}
_MAX_META_HEADER = 1 << 16


def _meta_fields(path: Path, name: str) -> tuple[dict[str, str], int]:
    """The ``Key = Value`` fields of a MetaImage header and the header's length in bytes."""
    with path.open("rb") as fh:
        head = fh.read(_MAX_META_HEADER)
    fields: dict[str, str] = {}
    pos = 0
    while True:
        end = head.find(b"\n", pos)
        if end < 0:
            raise _fail(name, "not a MetaImage file (no ElementDataFile line in its header)")
        line = head[pos:end].decode("latin-1").strip()
        pos = end + 1
        if not line:
            continue
        key, eq, value = line.partition("=")
        if not eq:
            raise _fail(name, f"not a MetaImage file (header line {line[:40]!r})")
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            return fields, pos


def _meta_data_file(path: Path, value: str, name: str, allow_data_file: bool) -> Path | None:
    """``None`` for LOCAL, else the data file beside the header (where allowed)."""
    if value == "LOCAL":
        return None
    if not allow_data_file:
        raise _fail(name, "the header points at a separate data file (ElementDataFile = "
                    f"{value[:80]}); only self-contained images (ElementDataFile = LOCAL) "
                    "are accepted here")
    if value.split()[0].upper() == "LIST" or "%" in value or len(value.split()) > 1:
        raise _fail(name, f"ElementDataFile = {value[:80]}: lists and file-name patterns are "
                    "not read; use one data file beside the header")
    if "/" in value or "\\" in value or value in (".", "..") or "\x00" in value:
        raise _fail(name, f"ElementDataFile = {value[:80]}: the data file must lie beside the "
                    "header (a plain file name)")
    data = path.parent / value
    if not data.is_file() or data.resolve().parent != path.resolve().parent:
        raise _fail(name, f"ElementDataFile = {value}: no such file beside the header")
    return data


def _meta_header(path: Path, name: str, allow_data_file: bool) -> Header:
    fields, header_len = _meta_fields(path, name)
    try:
        ndims = int(fields.get("NDims", "0"))
        shape = tuple(int(v) for v in fields.get("DimSize", "").split())
        channels = int(fields.get("ElementNumberOfChannels", "1"))
    except ValueError:
        raise _fail(name, "malformed NDims, DimSize or ElementNumberOfChannels") from None
    if ndims != len(shape) or ndims < 1 or min(shape) < 1:
        raise _fail(name, f"malformed size: NDims = {ndims}, DimSize = "
                    f"{fields.get('DimSize', '')[:60]}")
    if channels != 1:
        raise _fail(name, f"expected a scalar image, got {channels} channels per voxel")
    met = fields.get("ElementType", "")
    if met not in _MET_TYPES:
        raise _fail(name, f"unsupported ElementType {met[:40]!r}")
    if fields.get("BinaryData", "True").lower() != "true":
        raise _fail(name, "ASCII voxel data (BinaryData = False) is not read")
    msb = (fields.get("BinaryDataByteOrderMSB") or fields.get("ElementByteOrderMSB")
           or "False").lower() == "true"
    dtype = np.dtype(_MET_TYPES[met]).newbyteorder(">" if msb else "<")
    data = _meta_data_file(path, fields["ElementDataFile"], name, allow_data_file)
    compressed = fields.get("CompressedData", "False").lower() == "true"
    try:
        csize = int(fields["CompressedDataSize"]) if "CompressedDataSize" in fields else None
        offset = header_len if data is None else int(fields.get("HeaderSize", "0"))
    except ValueError:
        raise _fail(name, "malformed CompressedDataSize or HeaderSize") from None
    return Header(shape, dtype, data or path, offset, "zlib" if compressed else None, csize)


def read_header(path: Path, *, name: str | None = None, allow_data_file: bool = True) -> Header:
    """The header of ``path``, checked for form (not yet for size)."""
    name = name or str(path)
    if path.name.endswith((".nii", ".nii.gz")):
        return _nifti_header(path, name)
    return _meta_header(path, name, allow_data_file)


def check_size(header: Header, limits: ReadLimits, name: str) -> None:
    shape = header.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise _fail(name, f"expected a 3D image, the header declares {len(shape)}D "
                    f"{' x '.join(map(str, header.shape))}")
    if header.voxels > limits.max_voxels or header.nbytes > limits.max_bytes:
        raise VolumeTooLarge(
            f"{name}: the header declares {' x '.join(map(str, shape))} voxels of "
            f"{header.dtype.name} ({header.nbytes / 2**20:,.0f} MiB); images are read up to "
            f"{limits.max_voxels:,} voxels and {limits.max_bytes / 2**20:,.0f} MiB")


# voxels ----------------------------------------------------------------------------------------
def _fill(buf: memoryview, read) -> int:
    """Fill ``buf`` by calling ``read(view) -> n`` until full or at the end; bytes filled."""
    got = 0
    while got < len(buf):
        n = read(buf[got:got + _CHUNK])
        if not n:
            break
        got += n
    return got


def _read_plain(h: Header, name: str) -> bytearray:
    size = os.path.getsize(h.data_file)
    offset = size - h.nbytes if h.offset < 0 else h.offset
    if offset < 0 or size - offset < h.nbytes:
        raise _fail(name, f"the file is cut short: it holds {max(size - max(offset, 0), 0):,} "
                    f"bytes of voxels, the header declares {h.nbytes:,}")
    buf = bytearray(h.nbytes)
    with h.data_file.open("rb") as fh:
        fh.seek(offset)
        _fill(memoryview(buf), fh.readinto)
    return buf


def _read_gzip(h: Header, name: str) -> bytearray:
    buf = bytearray(h.nbytes)
    try:
        with gzip.open(h.data_file, "rb") as fh:
            head = fh.read(h.offset)
            got = _fill(memoryview(buf), fh.readinto) if len(head) == h.offset else -1
    except EOFError:
        got = -1
    except (OSError, zlib.error) as exc:
        raise _fail(name, f"corrupt compressed data ({_short(exc, h.data_file)})") from None
    if got != h.nbytes:
        raise _fail(name, f"the file is cut short: its compressed data end before the "
                    f"{h.nbytes:,} bytes of voxels its header declares")
    return buf


def _read_zlib(h: Header, name: str) -> bytearray:
    size = os.path.getsize(h.data_file)
    start = h.offset
    if h.compressed_size is not None and size - start < h.compressed_size:
        raise _fail(name, f"the file is cut short: it holds {size - start:,} bytes of "
                    f"compressed voxels, the header declares {h.compressed_size:,}")
    buf = bytearray(h.nbytes)
    view = memoryview(buf)
    got = 0
    inflate = zlib.decompressobj()
    try:
        with h.data_file.open("rb") as fh:
            fh.seek(start)
            pending = b""
            while got < h.nbytes:
                if not pending:
                    pending = fh.read(_CHUNK)
                    if not pending:
                        break
                out = inflate.decompress(pending, min(_CHUNK, h.nbytes - got))
                pending = inflate.unconsumed_tail
                view[got:got + len(out)] = out
                got += len(out)
                if inflate.eof:
                    break
    except zlib.error as exc:
        raise _fail(name, f"corrupt compressed data ({_short(exc, h.data_file)})") from None
    if got != h.nbytes:
        raise _fail(name, f"the file is cut short: its compressed data hold {got:,} of the "
                    f"{h.nbytes:,} bytes of voxels its header declares")
    return buf


def read_voxels(h: Header, name: str) -> np.ndarray:
    """The voxels in ``(i, j, k)`` order (x fastest in memory), checked complete and finite."""
    reader = {None: _read_plain, "gzip": _read_gzip, "zlib": _read_zlib}[h.compression]
    buf = reader(h, name)
    shape = h.shape[:3]
    arr = np.frombuffer(buf, dtype=h.dtype).reshape(shape, order="F")
    if not h.dtype.isnative:
        arr = arr.astype(h.dtype.newbyteorder("="))
    if h.slope is not None and (h.slope, h.inter) != (1.0, 0.0):
        out_type = np.float64 if h.dtype.itemsize == 8 and h.dtype.kind == "f" else np.float32
        scaled = arr.astype(out_type)
        scaled *= out_type(h.slope)
        scaled += out_type(h.inter or 0.0)
        arr = scaled
    if arr.dtype.kind == "f":
        bad = np.count_nonzero(~np.isfinite(arr))
        if bad:
            raise _fail(name, f"{bad:,} voxel(s) are NaN or infinite")
    return arr


def read_geometry(path: Path, name: str) -> tuple[tuple, tuple, tuple]:
    """Spacing, origin and direction (3D, ITK's LPS) as SimpleITK reads them from the header."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise _fail(name, f"cannot read the header's geometry ({_short(exc, path)})") from None
    dim = reader.GetDimension()
    spacing = reader.GetSpacing()[:3]
    origin = reader.GetOrigin()[:3]
    direction = np.asarray(reader.GetDirection(), dtype=float).reshape(dim, dim)[:3, :3]
    return spacing, origin, tuple(direction.ravel())


def _short(exc: BaseException, path: Path) -> str:
    """The last line of a library's error, without the file's path (the caller names it)."""
    text = str(exc).replace(str(path), "").replace(path.name, "")
    lines = [" ".join(ln.split()) for ln in text.splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:160]
