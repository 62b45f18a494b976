"""DICOM PET/CT series in, as :class:`~petloop.io.volume.Volume` s: CT in HU, PET in SUV.

Reading (pydicom): every file under the given folders (a DICOMDIR's folder included; files that
are not DICOM are passed over) is read up to its pixels and grouped by SeriesInstanceUID.
:func:`pick_series` takes the one series of a modality (or the one named), and refuses where
there are several with an error listing them. :func:`read_series` sorts the slices by their
position along the slice normal (never by file name), applies each slice's RescaleSlope and
RescaleIntercept, and refuses mixed orientations, pixel spacings or sizes, slices off the line,
repeated positions and gaps, naming the files. The geometry comes from ImagePositionPatient,
ImageOrientationPatient and PixelSpacing: index ``i`` runs along a row (the row direction
cosines), ``j`` down the columns, ``k`` along the normal, in LPS millimetres as everywhere in
petloop. A PET is turned into SUV (:mod:`petloop.io.suv`) per slice.

Writing (:func:`write_series`): one file per slice, CT as signed 16-bit HU, PET in BQML as
signed 16-bit with a rescale slope per slice, as scanners write it (the values round-trip to
half a step, 1 / 65534 of each slice's maximum), with the patient, study, frame of reference,
equipment and PET isotope attributes a viewer and the SUV rules need (:class:`PetAcquisition`)
and that dicom3tools' dciodvfy asks for. Files are written into a hidden folder that is renamed
into place.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from .imagefile import DEFAULT_LIMITS, ReadLimits
from .suv import SuvMode, suv_factors, suv_inputs
from .volume import Volume, VolumeError

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PET_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
IMAGE_STORAGE = {"CT": CT_STORAGE, "PT": PET_STORAGE}
#: how far (mm) slice positions may stray from a regular line before it is a gap or an error
POSITION_TOLERANCE = 0.05
ORIENTATION_TOLERANCE = 1e-4


class DicomError(VolumeError):
    """DICOM input petloop cannot use as one volume; the message names the files."""


@dataclass(frozen=True)
class DicomSeries:
    """One series found on disk."""

    uid: str
    modality: str
    files: tuple[Path, ...]
    description: str = ""
    number: int | None = None
    study_uid: str = ""

    def describe(self) -> str:
        number = f" #{self.number}" if self.number is not None else ""
        text = f" '{self.description}'" if self.description else ""
        return (f"{self.modality} series{number}{text} ({len(self.files)} files, "
                f"SeriesInstanceUID {self.uid})")


def _files(paths: Iterable[Path]) -> list[Path]:
    out = []
    for path in paths:
        path = Path(path)
        if path.is_file():
            out.append(path)
        elif path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.is_file()
                          and not any(part.startswith(".") for part in p.relative_to(path).parts))
        else:
            raise DicomError(f"{path}: no such file or folder")
    return out


def find_series(paths: Iterable[str | Path]) -> list[DicomSeries]:
    """The image series under ``paths`` (folders searched recursively; a DICOMDIR and files
    that are not DICOM images are passed over), in SeriesNumber order."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    groups: dict[str, list] = {}
    for path in _files(Path(p) for p in paths):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError, TypeError):
            continue
        if "SeriesInstanceUID" not in ds or "ImagePositionPatient" not in ds:
            continue  # a DICOMDIR, a structured report, a presentation state ...
        groups.setdefault(str(ds.SeriesInstanceUID), []).append((path, ds))
    out = []
    for uid, items in groups.items():
        ds = items[0][1]
        number = ds.get("SeriesNumber")
        out.append(DicomSeries(uid, str(ds.get("Modality", "")), tuple(p for p, _ in items),
                               str(ds.get("SeriesDescription", "")),
                               int(number) if number not in (None, "") else None,
                               str(ds.get("StudyInstanceUID", ""))))
    return sorted(out, key=lambda s: (s.number is None, s.number or 0, s.uid))


def pick_series(series: Sequence[DicomSeries], modality: str, uid: str | None = None,
                where: str = "") -> DicomSeries:
    """The series of ``modality`` (CT or PT), or the one whose SeriesInstanceUID is ``uid``;
    an error listing the candidates where there is none or more than one."""
    label = f"{where}: " if where else ""
    if uid is not None:
        chosen = [s for s in series if s.uid == uid]
        if not chosen:
            raise DicomError(f"{label}no series with SeriesInstanceUID {uid}; found "
                             + "; ".join(s.describe() for s in series))
        if chosen[0].modality != modality:
            raise DicomError(f"{label}series {uid} is {chosen[0].modality}, not {modality}")
        return chosen[0]
    candidates = [s for s in series if s.modality == modality]
    if not candidates:
        found = "; ".join(s.describe() for s in series) or "no DICOM image series"
        raise DicomError(f"{label}no {modality} series; found {found}")
    if len(candidates) > 1:
        raise DicomError(f"{label}{len(candidates)} {modality} series; choose one with its "
                         "SeriesInstanceUID (--series): "
                         + "; ".join(s.describe() for s in candidates))
    return candidates[0]


def _vector(ds, keyword: str, n: int, path: Path) -> np.ndarray:
    value = ds.get(keyword)
    if value is None or len(value) != n:
        raise DicomError(f"{path}: {keyword} is missing or not {n} numbers")
    out = np.asarray([float(v) for v in value])
    if not np.all(np.isfinite(out)):
        raise DicomError(f"{path}: {keyword} is not finite: {list(value)}")
    return out


@dataclass
class _Slice:
    path: Path
    ds: object
    position: np.ndarray
    along: float = 0.0


def _within(series: DicomSeries, limits: ReadLimits) -> None:
    """Refuse a series larger than ``limits`` from its first header, before pixels are read."""
    import pydicom

    ds = pydicom.dcmread(series.files[0], stop_before_pixels=True)
    voxels = int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0) * len(series.files)
    stored = voxels * max(1, int(ds.get("BitsAllocated", 16) or 16) // 8)
    if voxels > limits.max_voxels or stored > limits.max_bytes:
        raise DicomError(f"{series.describe()}: {voxels} voxels ({stored / 2**20:.0f} MiB "
                         f"stored) is more than the {limits.max_voxels} voxels and "
                         f"{limits.max_bytes / 2**20:.0f} MiB allowed")


def read_series(series: DicomSeries, *, limits: ReadLimits = DEFAULT_LIMITS
                ) -> tuple[Volume, list]:
    """The series as a volume of rescaled values (float32), and its slices' datasets in slice
    order; a series larger than ``limits`` is refused before its pixels are read."""
    import pydicom

    if not series.files:
        raise DicomError(f"{series.describe()}: no files")
    _within(series, limits)
    slices = []
    for path in series.files:
        try:
            ds = pydicom.dcmread(path)
        except Exception as exc:  # pydicom raises many kinds for a damaged file
            raise DicomError(f"{path}: cannot be read as DICOM ({exc})") from exc
        if int(ds.get("NumberOfFrames", 1) or 1) != 1:
            raise DicomError(f"{path}: a multi-frame image; petloop reads one slice per file")
        slices.append(_Slice(path, ds, _vector(ds, "ImagePositionPatient", 3, path)))
    first = slices[0]
    iop = _vector(first.ds, "ImageOrientationPatient", 6, first.path)
    row, col = iop[:3], iop[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or \
            abs(float(row @ col)) > 1e-3:
        raise DicomError(f"{first.path}: ImageOrientationPatient {list(iop)} is not two "
                         "orthogonal unit vectors")
    normal = np.cross(row, col)
    spacing_rc = _vector(first.ds, "PixelSpacing", 2, first.path)
    if np.any(spacing_rc <= 0):
        raise DicomError(f"{first.path}: PixelSpacing {list(spacing_rc)} is not positive")
    size = (int(first.ds.Rows), int(first.ds.Columns))
    for s in slices:
        other = _vector(s.ds, "ImageOrientationPatient", 6, s.path)
        if np.abs(other - iop).max() > ORIENTATION_TOLERANCE:
            raise DicomError(f"mixed orientations in {series.describe()}: {first.path} has "
                             f"{list(iop)}, {s.path} has {list(other)}")
        if np.abs(_vector(s.ds, "PixelSpacing", 2, s.path) - spacing_rc).max() > 1e-4:
            raise DicomError(f"mixed pixel spacings in {series.describe()}: {first.path} and "
                             f"{s.path}")
        if (int(s.ds.Rows), int(s.ds.Columns)) != size:
            raise DicomError(f"mixed image sizes in {series.describe()}: {first.path} is "
                             f"{size}, {s.path} is {(int(s.ds.Rows), int(s.ds.Columns))}")
        s.along = float(s.position @ normal)
    slices.sort(key=lambda s: s.along)
    along = np.array([s.along for s in slices])
    if len(slices) > 1:
        steps = np.diff(along)
        repeated = np.nonzero(steps < POSITION_TOLERANCE)[0]
        if repeated.size:
            n = int(repeated[0])
            raise DicomError(f"{slices[n].path} and {slices[n + 1].path} lie at the same "
                             f"position ({along[n]:.3f} mm along the normal): two series in "
                             "one, or a repeated slice")
        step = float(np.median(steps))
        off = np.nonzero(np.abs(steps - step) > max(POSITION_TOLERANCE, 0.01 * step))[0]
        if off.size:
            n = int(off[0])
            raise DicomError(f"a gap in {series.describe()}: {slices[n].path} and "
                             f"{slices[n + 1].path} are {steps[n]:.3f} mm apart, the other "
                             f"slices {step:.3f} mm")
        in_plane = [s.position - (s.along - along[0]) * normal for s in slices]
        drift = max(float(np.abs(p - in_plane[0]).max()) for p in in_plane)
        if drift > max(POSITION_TOLERANCE, 0.01 * min(spacing_rc)):
            raise DicomError(f"the slices of {series.describe()} do not lie on one line along "
                             f"their normal (off by up to {drift:.3f} mm): a tilted or sheared "
                             "series petloop does not read")
    else:
        step = float(first.ds.get("SliceThickness") or 1.0)
    array = np.empty((size[1], size[0], len(slices)), dtype=np.float32)
    for k, s in enumerate(slices):
        try:
            pixels = s.ds.pixel_array.astype(np.float64)
        except Exception as exc:  # truncated or undecodable pixel data
            raise DicomError(f"{s.path}: its pixel data cannot be read ({exc})") from exc
        if pixels.shape != size:
            raise DicomError(f"{s.path}: pixel data of shape {pixels.shape}, not the "
                             f"{size} its Rows and Columns declare")
        slope = float(s.ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(s.ds.get("RescaleIntercept", 0.0) or 0.0)
        array[:, :, k] = (pixels * slope + intercept).T
    direction = np.stack([row, col, normal], axis=1).ravel()
    volume = Volume(array, (float(spacing_rc[1]), float(spacing_rc[0]), step),
                    tuple(slices[0].position), tuple(direction))
    return volume, [s.ds for s in slices]


def read_ct(series: DicomSeries, *, limits: ReadLimits = DEFAULT_LIMITS) -> Volume:
    return read_series(series, limits=limits)[0]


def load_image(path: str | Path, modality: str, *, series: Sequence[str] = (),
               weight_kg: float | None = None, mode: SuvMode = "bw",
               limits: ReadLimits = DEFAULT_LIMITS) -> tuple[Volume, list | None]:
    """A CT (``modality`` CT) or a PET in SUV (PT) from an image file (read as it is: a PET file
    must hold SUV already) or from a folder of DICOM files (``series``: SeriesInstanceUIDs to
    choose from where the folder holds several of the modality), and for a DICOM series its
    slices' datasets in slice order (what a DICOM SEG or SR of it references)."""
    path = Path(path)
    if not path.is_dir():
        from .volume import read_volume

        return read_volume(path, limits=limits), None
    found = find_series([path])
    chosen = [s for s in found if s.uid in set(series) and s.modality == modality]
    picked = pick_series(found, modality, chosen[0].uid if chosen else None, where=str(path))
    volume, datasets = read_series(picked, limits=limits)
    if modality == "PT":
        volume = _in_suv(volume, datasets, picked, weight_kg, mode)
    return volume, datasets


def read_image(path: str | Path, modality: str, **options) -> Volume:
    """:func:`load_image` without the datasets."""
    return load_image(path, modality, **options)[0]


def read_pet_suv(series: DicomSeries, *, weight_kg: float | None = None,
                 mode: SuvMode = "bw", limits: ReadLimits = DEFAULT_LIMITS) -> Volume:
    """A PET series in SUV (body weight, or lean body mass), each slice by its own factor."""
    volume, datasets = read_series(series, limits=limits)
    return _in_suv(volume, datasets, series, weight_kg, mode)


def _in_suv(volume: Volume, datasets: list, series: DicomSeries, weight_kg: float | None,
            mode: SuvMode) -> Volume:
    """A PET series' rescaled values in SUV, each slice by its own factor."""
    factors = suv_factors(suv_inputs(datasets, where=series.describe()), weight_kg=weight_kg,
                          mode=mode)
    return volume.with_array((volume.array * factors[None, None, :]).astype(np.float32))


# writing ----------------------------------------------------------------------------------------
#: what a phantom's tracer is written as: radiopharmaceutical, radionuclide code, half-life (s)
#: and injected activity per kg of body weight
TRACER_ISOTOPES = {
    "fdg": ("Fluorodeoxyglucose F^18^", ("C-111A1", "SRT", "^18^Fluorine"), 6586.2, 3.5e6),
    "psma": ("Ga-68 PSMA-11", ("C-131A3", "SRT", "^68^Gallium"), 4062.6, 2.0e6),
}
@dataclass(frozen=True)
class PetAcquisition:
    """What a written PET series says of its acquisition (and what SUV is computed from)."""

    weight_kg: float = 75.0
    size_m: float = 1.75
    sex: str = "M"
    dose_bq: float = 300e6  # injected (RadionuclideTotalDose)
    half_life_s: float = 6586.2  # F-18
    injection: datetime = datetime(2026, 1, 5, 9, 0, 0)
    uptake: timedelta = timedelta(minutes=60)  # injection to scan start (SeriesTime)
    decay_correction: str = "START"
    radionuclide: tuple[str, str, str] = ("C-111A1", "SRT", "^18^Fluorine")
    radiopharmaceutical: str = "Fluorodeoxyglucose F^18^"

    @property
    def scan_start(self) -> datetime:
        return self.injection + self.uptake

    def bqml_per_suv(self) -> float:
        """Bq/ml per unit of SUVbw as stored: decay corrected to the scan start (START), to
        the injection (ADMIN), or not at all (NONE: the activity at the scan start, when every
        slice of a written series is acquired)."""
        if self.decay_correction == "ADMIN":
            return self.dose_bq / (1000.0 * self.weight_kg)
        decayed = self.dose_bq * 2.0 ** (-self.uptake.total_seconds() / self.half_life_s)
        return decayed / (1000.0 * self.weight_kg)


@dataclass(frozen=True)
class Study:
    """The identity a written series carries (patient, study, frame of reference)."""

    patient_id: str = "PETLOOP-PHANTOM"
    patient_name: str = "Phantom^Petloop"
    study_uid: str = field(default_factory=lambda: _uid())
    frame_of_reference_uid: str = field(default_factory=lambda: _uid())
    date: datetime = datetime(2026, 1, 5, 10, 0, 0)
    accession: str = ""
    sex: str = "O"


def _uid(*entropy) -> str:
    """A new UID, or with ``entropy`` the same UID for the same values (reproducible files)."""
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(e) for e in entropy] if entropy else None)


def _da(t: datetime) -> str:
    return t.strftime("%Y%m%d")


def _tm(t: datetime) -> str:
    return t.strftime("%H%M%S.%f")


def write_series(volume: Volume, folder: str | Path, modality: str, *, study: Study,
                 pet: PetAcquisition | None = None, series_number: int = 1,
                 description: str = "") -> Path:
    """Write ``volume`` (CT in HU, or PET in SUVbw with ``pet``) as a series of one file per
    slice into ``folder`` (written beside it and renamed into place)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    if modality not in IMAGE_STORAGE:
        raise ValueError(f"modality {modality!r}: petloop writes CT and PT series")
    if (modality == "PT") != (pet is not None):
        raise ValueError("a PET series needs its PetAcquisition, a CT none")
    folder = Path(folder)
    work = folder.with_name(f".{folder.name}.writing-{os.getpid()}")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    series_uid = _uid(study.study_uid, modality, series_number, description)
    direction = volume.direction_matrix
    row, col, normal = direction[:, 0], direction[:, 1], direction[:, 2]
    sx, sy, sz = volume.spacing
    when = pet.scan_start if pet is not None else study.date
    for k in range(volume.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = IMAGE_STORAGE[modality]
        meta.MediaStorageSOPInstanceUID = _uid(series_uid, k)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = modality
        ds.PatientName, ds.PatientID = study.patient_name, study.patient_id
        ds.PatientBirthDate, ds.PatientSex = "", pet.sex if pet is not None else study.sex
        ds.StudyInstanceUID, ds.StudyID = study.study_uid, "1"
        ds.StudyDate, ds.StudyTime = _da(study.date), _tm(study.date)
        ds.AccessionNumber, ds.ReferringPhysicianName = study.accession, ""
        ds.SeriesInstanceUID, ds.SeriesNumber = series_uid, series_number
        ds.SeriesDescription = description or ("CT" if modality == "CT" else "PET AC")
        ds.SeriesDate, ds.SeriesTime = _da(when), _tm(when)
        ds.AcquisitionDate, ds.AcquisitionTime = _da(when), _tm(when)
        ds.ContentDate, ds.ContentTime = _da(when), _tm(when)
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = study.frame_of_reference_uid, ""
        ds.Manufacturer = "petloop"
        ds.InstanceNumber, ds.AcquisitionNumber = k + 1, 1
        ds.BodyPartExamined = "WHOLEBODY"  # unpaired: no Laterality
        if modality == "CT":  # a PET says it with codes (PatientOrientationCodeSequence)
            ds.PatientPosition = "HFS"
        ds.ImagePositionPatient = [f"{v:.6f}" for v in
                                   np.asarray(volume.origin) + k * sz * normal]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row, *col)]
        ds.PixelSpacing = [f"{sy:.6f}", f"{sx:.6f}"]
        ds.SliceThickness = f"{sz:.6f}"
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        values = np.asarray(volume.array[:, :, k], dtype=np.float64).T
        if modality == "CT":
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
            ds.KVP = "120"
            stored = np.clip(np.rint(values), -32768, 32767).astype(np.int16)
        else:
            bqml = values * pet.bqml_per_suv()
            _pet_attributes(ds, pet, k, volume.shape[2])
            top = float(np.abs(bqml).max())
            slope = top / 32767 if top > 0 else 1.0
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleIntercept, ds.RescaleSlope = "0", f"{slope:.10E}"
            stored = np.clip(np.rint(bqml / float(ds.RescaleSlope)), -32768, 32767).astype(
                np.int16)
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
        ds.save_as(work / f"{modality}{k + 1:05d}.dcm", enforce_file_format=True)
    if folder.exists():
        shutil.rmtree(folder)
    work.rename(folder)
    return folder


def _pet_attributes(ds, pet: PetAcquisition, k: int, n: int) -> None:
    from pydicom.dataset import Dataset

    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.Units, ds.CountsSource, ds.SeriesType = "BQML", "EMISSION", ["WHOLE BODY", "IMAGE"]
    ds.CorrectedImage = (["DECY"] if pet.decay_correction != "NONE" else []) + [
        "ATTN", "SCAT", "DTIM", "RAN", "NORM"]
    ds.DecayCorrection, ds.RandomsCorrectionMethod = pet.decay_correction, "DLYD"
    ds.AttenuationCorrectionMethod, ds.ReconstructionMethod = "CT", "OSEM"
    ds.CollimatorType = "NONE"
    orientation, gantry = Dataset(), Dataset()  # recumbent, headfirst (SNOMED CT)
    orientation.CodeValue, orientation.CodingSchemeDesignator = "102538003", "SCT"
    orientation.CodeMeaning = "recumbent"
    gantry.CodeValue, gantry.CodingSchemeDesignator, gantry.CodeMeaning = (
        "102540008", "SCT", "headfirst")
    orientation.PatientOrientationModifierCodeSequence = []
    ds.PatientOrientationCodeSequence = [orientation]
    ds.PatientGantryRelationshipCodeSequence = [gantry]
    ds.NumberOfSlices, ds.ImageIndex = n, k + 1
    ds.FrameReferenceTime, ds.ActualFrameDuration = "0", 120000
    ds.DecayFactor = "1"  # every slice acquired at the scan start
    ds.PatientWeight = f"{pet.weight_kg:g}"
    ds.PatientSize = f"{pet.size_m:g}"
    item = Dataset()
    item.Radiopharmaceutical = pet.radiopharmaceutical
    item.RadiopharmaceuticalStartTime = _tm(pet.injection)
    item.RadiopharmaceuticalStartDateTime = pet.injection.strftime("%Y%m%d%H%M%S.%f")
    item.RadionuclideTotalDose = f"{pet.dose_bq:.6E}"
    item.RadionuclideHalfLife = f"{pet.half_life_s:g}"
    item.RadionuclidePositronFraction = "0.9686"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = pet.radionuclide
    item.RadionuclideCodeSequence = [code]
    ds.RadiopharmaceuticalInformationSequence = [item]


def write_study(case, ct_folder: str | Path, pet_folder: str | Path) -> None:
    """A case (:class:`~petloop.io.layouts.Case`: CT in HU, PET in SUV) as a CT and a PET
    series of one study: the PET in BQML with the weight of its ``case.json`` (75 kg without),
    the tracer's isotope, an injection of its usual activity per kg an hour before the scan.
    UIDs are derived from the case id, so a case is written the same way every time."""
    meta = dict(case.meta or {})
    tracer = (case.tracer or meta.get("tracer") or "fdg").lower()
    drug, nuclide, half_life, per_kg = TRACER_ISOTOPES.get(tracer, TRACER_ISOTOPES["fdg"])
    weight = float(meta.get("patient_weight_kg") or 75.0)
    study = Study(patient_id=case.case_id[:64], patient_name=f"Phantom^{case.case_id}"[:64],
                  study_uid=_uid(case.case_id, "study"),
                  frame_of_reference_uid=_uid(case.case_id, "frame of reference"), sex="O")
    pet = PetAcquisition(weight_kg=weight, sex="O", dose_bq=round(per_kg * weight, -5),
                         half_life_s=half_life, radionuclide=nuclide, radiopharmaceutical=drug)
    write_series(case.ct, ct_folder, "CT", study=study, series_number=1, description="CT")
    write_series(case.pet, pet_folder, "PT", study=study, pet=pet, series_number=2,
                 description=f"PET AC {tracer.upper()}")


__all__ = ["TRACER_ISOTOPES", "DicomError", "DicomSeries", "PetAcquisition", "Study",
           "find_series", "load_image", "pick_series", "read_ct", "read_image", "read_pet_suv",
           "read_series", "write_series", "write_study"]
