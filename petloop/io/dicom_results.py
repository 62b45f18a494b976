"""Results back to the PACS: a DICOM Segmentation of the lesions and a Structured Report of
their measurements (highdicom).

* **SEG** (:func:`segmentation`): a binary segmentation that references the PET series it was
  predicted on (its slices and frame of reference), one segment per lesion (``lesion 1``, ...,
  numbered as in the lesion report: by decreasing volume), so a viewer can show and a reader can
  address each; their union is the mask. A mask without a lesion gives one empty segment.
* **SR** (:func:`measurement_report`): a Comprehensive 3D SR with the TID 1500 Measurement
  Report: per lesion a volumetric measurement group (TID 1411) that references its segment and
  holds its volume (ml), SUVmax, SUVmean, SUVpeak (SUVbw, g/ml) and total lesion glycolysis
  (g); then one group (TID 1501) with the totals, the metabolic tumour volume and the total
  lesion glycolysis.

The report is any object with ``lesions`` (each with ``id``, ``volume_ml``, ``suv_max``,
``suv_mean``, ``suv_peak``, ``tlg``), ``tmtv_ml`` and ``total_tlg``: the lesion report of
:mod:`petloop.metrics.report`. :func:`read_segmentation` and :func:`read_measurements` read both
back. Files are written whole or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .volume import Volume, VolumeError

SOFTWARE = "petloop"


def _codes():
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    return {
        "category": codes.SCT.MorphologicallyAbnormalStructure,
        "type": Code("108369006", "SCT", "Neoplasm"),
        "volume": codes.SCT.Volume,
        "volume_method": codes.DCM.SumOfSegmentedVoxelMethodForVolume,
        "suv": codes.DCM.StandardizedUptakeValue,
        "suv_method": codes.DCM.SUVBodyWeightCalculationMethod,
        "maximum": codes.SCT.Maximum, "mean": codes.SCT.Mean,
        "peak": codes.DCM.PeakValueWithinROI,
        "tlg": codes.DCM.TotalLesionGlycolysis,
        "mtv": codes.DCM.MetabolicVolume,
        "ml": Code("ml", "UCUM", "milliliter"),
        "suv_unit": Code("{SUVbw}g/ml", "UCUM", "Standardized Uptake Value body weight"),
        "g": Code("g", "UCUM", "gram"),
        "procedure": codes.LN.PETWholeBody,
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(SOFTWARE)
    except PackageNotFoundError:
        return "unknown"


def _algorithm():
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.AlgorithmIdentificationSequence(
        name=SOFTWARE, version=_version(), family=codes.DCM.ArtificialIntelligence)


def _check_grid(labels: Volume, source: Sequence) -> None:
    rows, cols = int(source[0].Rows), int(source[0].Columns)
    if labels.shape != (cols, rows, len(source)):
        raise VolumeError(f"the lesion labels' grid {labels.shape} is not the PET series' "
                          f"({cols} x {rows} x {len(source)} slices)")


def segmentation(labels: Volume, source: Sequence, *, series_number: int = 901,
                 uid_seed: str | None = None):
    """A DICOM SEG of lesion ``labels`` (0 background, n: lesion n) on the grid of the PET
    series ``source`` (its datasets in slice order, as :func:`petloop.io.dicom.read_series`
    gives them)."""
    import highdicom as hd
    from pydicom.uid import generate_uid

    _check_grid(labels, source)
    c = _codes()
    array = np.asarray(labels.array)
    n = int(array.max()) if array.size else 0
    descriptions = [hd.seg.SegmentDescription(
        segment_number=k, segment_label=f"lesion {k}" if n else "lesion",
        segmented_property_category=c["category"], segmented_property_type=c["type"],
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=_algorithm()) for k in range(1, max(n, 1) + 1)]
    frames = np.ascontiguousarray(array.transpose(2, 1, 0)).astype(np.uint16)
    entropy = None if uid_seed is None else [uid_seed]
    return hd.seg.Segmentation(
        source_images=list(source), pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(entropy_srcs=entropy and entropy + ["seg series"]),
        series_number=series_number,
        sop_instance_uid=generate_uid(entropy_srcs=entropy and entropy + ["seg"]),
        instance_number=1, manufacturer=SOFTWARE, manufacturer_model_name=SOFTWARE,
        software_versions=_version(), device_serial_number="0",
        series_description="petloop lesions",
        omit_empty_frames=n > 0)  # a frame per slice a lesion is on (one empty one without)


def _measurement(name, value: float, unit, derivation=None, method=None):
    import highdicom as hd

    return hd.sr.Measurement(name=name, value=float(value), unit=unit, derivation=derivation,
                             method=method)


def measurement_report(report, seg, source: Sequence, *, series_number: int = 902,
                       uid_seed: str | None = None):
    """A Comprehensive 3D SR (TID 1500) of the lesion ``report``, each lesion's group
    referencing its segment of ``seg`` (from :func:`segmentation`)."""
    import highdicom as hd
    from pydicom.uid import generate_uid

    c = _codes()
    ref_series = hd.sr.SourceSeriesForSegmentation(source[0].SeriesInstanceUID)
    groups = []
    for lesion in report.lesions:
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=generate_uid(entropy_srcs=[seg.SOPInstanceUID, str(lesion.id)]),
                identifier=f"lesion {lesion.id}"),
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID,
                segment_number=int(lesion.id), source_series=ref_series),
            finding_type=c["type"], algorithm_id=hd.sr.AlgorithmIdentification(
                name=SOFTWARE, version=_version()),
            measurements=[
                _measurement(c["volume"], lesion.volume_ml, c["ml"],
                             method=c["volume_method"]),
                _measurement(c["suv"], lesion.suv_max, c["suv_unit"], c["maximum"],
                             c["suv_method"]),
                _measurement(c["suv"], lesion.suv_mean, c["suv_unit"], c["mean"],
                             c["suv_method"]),
                _measurement(c["suv"], lesion.suv_peak, c["suv_unit"], c["peak"],
                             c["suv_method"]),
                _measurement(c["tlg"], lesion.tlg, c["g"]),
            ]))
    groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(entropy_srcs=[seg.SOPInstanceUID, "all lesions"]),
            identifier="all lesions"),
        measurements=[_measurement(c["mtv"], report.tmtv_ml, c["ml"]),
                      _measurement(c["tlg"], report.total_tlg, c["g"])]))
    observer = hd.sr.ObserverContext(
        observer_type=hd.sr.CodedConcept("121007", "DCM", "Device"),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[SOFTWARE]), name=SOFTWARE))
    content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=c["procedure"], imaging_measurements=groups)
    entropy = None if uid_seed is None else [uid_seed]
    return hd.sr.Comprehensive3DSR(
        evidence=[*source, seg], content=content,
        series_instance_uid=generate_uid(entropy_srcs=entropy and entropy + ["sr series"]),
        series_number=series_number,
        sop_instance_uid=generate_uid(entropy_srcs=entropy and entropy + ["sr"]),
        instance_number=1, manufacturer=SOFTWARE, is_complete=True, is_final=False,
        is_verified=False, series_description="petloop lesion measurements")


def save(dataset, path: str | Path) -> Path:
    """Write a DICOM object whole or not at all."""
    path = Path(path)
    with atomic_path(path) as tmp:
        dataset.save_as(tmp, enforce_file_format=True)
    return path


def read_segmentation(path: str | Path, source: Sequence) -> np.ndarray:
    """Lesion labels (0 background, n: segment n) on the grid of the PET series ``source``
    from a SEG written by :func:`segmentation`."""
    import highdicom as hd

    seg = hd.seg.segread(str(path))
    uids = [str(ds.SOPInstanceUID) for ds in source]
    frames = seg.get_pixels_by_source_instance(
        uids, combine_segments=True, ignore_spatial_locations=True,
        assert_missing_frames_are_empty=True, dtype=np.uint16)
    return np.ascontiguousarray(frames.transpose(2, 1, 0))


def read_measurements(path: str | Path) -> dict:
    """The measurements of an SR written by :func:`measurement_report`: per group (``lesion
    n`` or ``all lesions``) a dict ``(concept, derivation) -> value``."""
    import highdicom as hd

    sr = hd.sr.srread(str(path))
    out: dict[str, dict[tuple[str, str | None], float]] = {}
    content = sr.content
    for group in [*content.get_volumetric_roi_measurement_groups(),
                  *content.get_image_measurement_groups()]:
        name = group.tracking_identifier
        values = {}
        for m in group.get_measurements():
            derivation = m.derivation.meaning if m.derivation is not None else None
            values[(m.name.meaning, derivation)] = float(m.value)
        out[name] = values
    return out


__all__ = ["measurement_report", "read_measurements", "read_segmentation", "save",
           "segmentation"]
