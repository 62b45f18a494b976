"""DICOM PET/CT series: written by petloop, read back (geometry against SimpleITK's own
series reader, values, SUV), and refused where they cannot be one volume."""

from __future__ import annotations

import shutil
from datetime import timedelta

import numpy as np
import pytest
import SimpleITK as sitk

from petloop.io.clicks import Clicks
from petloop.io.dicom import (
    DicomError,
    PetAcquisition,
    Study,
    find_series,
    pick_series,
    read_ct,
    read_pet_suv,
    read_series,
    write_series,
)
from petloop.io.suv import suv_factors, suv_inputs
from petloop.io.volume import Volume


def _volume(rng, shape=(12, 10, 7), direction=None):
    array = rng.gamma(2.0, 1.5, shape).astype(np.float32)
    array[0] = 0.0  # air, zero SUV
    return Volume(array, (2.5, 3.0, 4.0), (-40.0, 25.5, 600.0),
                  direction or (1, 0, 0, 0, 1, 0, 0, 0, 1))


@pytest.fixture()
def study():
    return Study(patient_id="T1")


@pytest.mark.parametrize("decay", ["START", "ADMIN", "NONE"])
def test_a_written_pet_reads_back_as_its_suv(tmp_path, study, decay):
    pet = _volume(np.random.default_rng(1))
    acquisition = PetAcquisition(weight_kg=82.0, dose_bq=310e6, uptake=timedelta(minutes=71),
                                 decay_correction=decay)
    write_series(pet, tmp_path / "pet", "PT", study=study, pet=acquisition)
    (series,) = find_series([tmp_path])
    assert series.modality == "PT" and len(series.files) == pet.shape[2]
    got = read_pet_suv(series)
    assert got.same_grid(pet)
    # the factor is exact; the values are stored in 16 bits with a slope per slice, so they
    # come back to half a step, 1 / 65534 of the slice's maximum
    bqml, datasets = read_series(series)
    factors = suv_factors(suv_inputs(datasets))
    np.testing.assert_allclose(factors, 1 / acquisition.bqml_per_suv(), rtol=1e-12)
    step = pet.array.max(axis=(0, 1)) / 32767
    assert np.all(np.abs(got.array - pet.array) <= 0.5001 * step[None, None, :] + 1e-7)
    heavier = read_pet_suv(series, weight_kg=2 * 82.0)  # --weight
    np.testing.assert_allclose(heavier.array, 2 * got.array, rtol=1e-6)


def _rotation(degrees_z: float, degrees_x: float) -> np.ndarray:
    cz, sz = np.cos(np.radians(degrees_z)), np.sin(np.radians(degrees_z))
    cx, sx = np.cos(np.radians(degrees_x)), np.sin(np.radians(degrees_x))
    return np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array(
        [[1, 0, 0], [0, cx, -sx], [0, sx, cx]])


def test_geometry_agrees_with_simpleitk_for_any_orientation(tmp_path, study):
    rng = np.random.default_rng(2)
    oblique = tuple(_rotation(20, 10).ravel())
    ct = _volume(rng, direction=oblique).with_array(
        np.rint(rng.normal(0, 300, (12, 10, 7))).astype(np.float32))
    write_series(ct, tmp_path / "ct", "CT", study=study)
    (series,) = find_series([tmp_path / "ct"])
    got = read_ct(series)
    np.testing.assert_array_equal(got.array, ct.array)
    np.testing.assert_allclose(got.origin, ct.origin, atol=1e-4)
    np.testing.assert_allclose(got.direction, ct.direction, atol=1e-6)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "ct")))
    image = reader.Execute()
    np.testing.assert_allclose(image.GetOrigin(), got.origin, atol=1e-4)
    np.testing.assert_allclose(image.GetSpacing(), got.spacing, atol=1e-5)
    np.testing.assert_allclose(image.GetDirection(), got.direction, atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image).transpose(2, 1, 0), got.array)
    # slices written along -z (a left-handed grid): read back along the slices' normal, the
    # same voxels at the same places
    ct = Volume(ct.array, ct.spacing, ct.origin, (1, 0, 0, 0, 1, 0, 0, 0, -1))
    write_series(ct, tmp_path / "ct_down", "CT", study=study)
    got = read_ct(find_series([tmp_path / "ct_down"])[0])
    np.testing.assert_array_equal(got.array, ct.array[:, :, ::-1])
    np.testing.assert_allclose(got.origin, ct.index_to_physical((0, 0, 6)), atol=1e-4)
    np.testing.assert_allclose(got.index_to_physical((3, 4, 5)),
                               ct.index_to_physical((3, 4, 1)), atol=1e-4)


def test_slices_are_sorted_by_position_not_by_name(tmp_path, study):
    ct = _volume(np.random.default_rng(3)).with_array(
        np.arange(12 * 10 * 7, dtype=np.float32).reshape(12, 10, 7))
    folder = write_series(ct, tmp_path / "ct", "CT", study=study)
    files = sorted(folder.iterdir())
    for n, f in enumerate(files):  # reverse the names
        f.rename(folder / f"x{len(files) - n:03d}.tmp")
    for f in folder.iterdir():
        f.rename(f.with_suffix(".dcm"))
    np.testing.assert_array_equal(read_ct(find_series([folder])[0]).array, ct.array)


def test_gaps_duplicates_mixed_series_and_choices_are_refused(tmp_path, study):
    ct = _volume(np.random.default_rng(4))
    folder = write_series(ct, tmp_path / "ct", "CT", study=study)
    files = sorted(folder.iterdir())
    gap = tmp_path / "gap"
    shutil.copytree(folder, gap)
    (gap / files[3].name).unlink()
    with pytest.raises(DicomError, match="a gap in CT series .* 8.000 mm apart"):
        read_series(find_series([gap])[0])
    twice = tmp_path / "twice"
    shutil.copytree(folder, twice)
    shutil.copy(folder / files[2].name, twice / "copy.dcm")
    with pytest.raises(DicomError, match="same position"):
        read_series(find_series([twice])[0])
    write_series(ct, tmp_path / "ct2", "CT", study=study, series_number=2,
                 description="second")
    found = find_series([tmp_path / "ct", tmp_path / "ct2"])
    with pytest.raises(DicomError, match="2 CT series; choose one .*'second'"):
        pick_series(found, "CT")
    assert pick_series(found, "CT", found[1].uid) is found[1]
    with pytest.raises(DicomError, match="no PT series; found CT series"):
        pick_series(found, "PT")
    with pytest.raises(DicomError, match="no series with SeriesInstanceUID 1.2.3"):
        pick_series(found, "CT", "1.2.3")
    from petloop.io.imagefile import ReadLimits

    with pytest.raises(DicomError, match="840 voxels .* more than the 800 voxels"):
        read_series(found[0], limits=ReadLimits(max_voxels=800))
    (tmp_path / "notes.txt").write_text("not DICOM")
    assert len(find_series([tmp_path])) == 2  # the copies keep their SeriesInstanceUID


def test_mixed_orientations_are_refused(tmp_path, study):
    import pydicom

    folder = write_series(_volume(np.random.default_rng(5)), tmp_path / "ct", "CT",
                          study=study)
    path = sorted(folder.iterdir())[4]
    ds = pydicom.dcmread(path)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0.98, 0.199]
    ds.save_as(path)
    with pytest.raises(DicomError, match=f"mixed orientations .*{path.name}"):
        read_series(find_series([folder])[0])

    fresh = write_series(_volume(np.random.default_rng(5)), tmp_path / "cut", "CT",
                         study=study)
    cut = sorted(fresh.iterdir())[2]
    cut.write_bytes(cut.read_bytes()[:-100])  # truncated pixel data
    with pytest.raises(DicomError, match=f"{cut.name}: its pixel data cannot be read"):
        read_series(find_series([fresh])[0])


def test_dicom_studies_from_phantom_to_prediction(tmp_path, model_set):
    """``phantom --layout dicom`` writes CT and PET series (PET in BQML) whose SUV read back is
    the phantom's; ``cases`` finds them; ``convert`` makes an autoPET case of one; ``predict``
    takes the DICOM folders and gives the mask it gives for the converted files."""
    import json

    from typer.testing import CliRunner

    from petloop.cli import app
    from petloop.io.layouts import find_cases
    from petloop.io.volume import read_volume
    from petloop.phantom import PhantomConfig
    from petloop.phantom.generate import generate_case

    runner = CliRunner()
    args = ["phantom", "--out", str(tmp_path / "dcm"), "--cases", "2", "--preset", "trunk",
            "--seed", "8", "--negative-fraction", "0", "--layout", "dicom"]
    assert runner.invoke(app, args).exit_code == 0
    cases = find_cases(tmp_path / "dcm")
    assert [c.layout for c in cases] == ["dicom", "dicom"]
    config = PhantomConfig.preset("trunk", seed=8, tracer="mixed", negative_fraction=0.0)
    for n, files in enumerate(cases):
        case, truth = files.load(), generate_case(config, n).case
        assert case.tracer == truth.tracer and case.pet.same_grid(truth.pet)
        # 16-bit storage: within 1e-4 of the largest SUV
        np.testing.assert_allclose(case.pet.array, truth.pet.array, rtol=0,
                                   atol=1e-4 * float(truth.pet.array.max()))
        np.testing.assert_array_equal(case.label.array, truth.label.array)
    study = cases[0].pet.parent
    result = runner.invoke(app, ["convert", "--ct", str(study / "CT"), "--pet",
                                 str(study / "PET"), "--out", str(tmp_path / "conv"),
                                 "--tracer", "fdg"])
    assert result.exit_code == 0, result.output
    suv = read_volume(tmp_path / "conv" / "SUV.nii.gz")
    np.testing.assert_array_equal(suv.array, cases[0].load().pet.array)
    assert json.loads((tmp_path / "conv" / "case.json").read_text())["suv"] == "bw"
    masks = {}
    for name, ct, pet in (("dicom", study / "CT", study / "PET"),
                          ("nifti", tmp_path / "conv" / "CTres.nii.gz",
                           tmp_path / "conv" / "SUV.nii.gz")):
        out = tmp_path / f"{name}.nii.gz"
        result = runner.invoke(app, ["predict", "--ct", str(ct), "--pet", str(pet), "--out",
                                     str(out), "--models", str(model_set), "--tracer", "fdg",
                                     "--precision", "fp32"])
        assert result.exit_code == 0, result.output
        masks[name] = read_volume(out)
    assert masks["dicom"].same_grid(masks["nifti"])
    np.testing.assert_array_equal(masks["dicom"].array, masks["nifti"].array)
    # the same prediction as a DICOM SEG and SR beside the mask (clicks so there is a lesion)
    from petloop.io.clicks import write_clicks
    from petloop.io.dicom import pick_series as pick
    from petloop.io.dicom_results import read_measurements, read_segmentation

    truth = cases[0].load()
    lesion = tuple(int(v) for v in np.argwhere(truth.label.array)[0])
    write_clicks(Clicks((lesion,), ()), tmp_path / "clicks.json")
    result = runner.invoke(app, [
        "predict", "--ct", str(study / "CT"), "--pet", str(study / "PET"), "--out",
        str(tmp_path / "m.nii.gz"), "--seg", str(tmp_path / "seg.dcm"), "--sr",
        str(tmp_path / "sr.dcm"), "--report", str(tmp_path / "r.json"), "--clicks",
        str(tmp_path / "clicks.json"), "--models", str(model_set), "--tracer", "fdg"])
    assert result.exit_code == 0, result.output
    for name in ("seg.dcm", "sr.dcm"):
        assert not _dciodvfy_errors(tmp_path / name), name
    source = read_series(pick(find_series([study / "PET"]), "PT"))[1]
    mask = read_volume(tmp_path / "m.nii.gz").array
    assert mask.any()
    np.testing.assert_array_equal(read_segmentation(tmp_path / "seg.dcm", source) > 0, mask > 0)
    report = json.loads((tmp_path / "r.json").read_text())
    totals = read_measurements(tmp_path / "sr.dcm")["all lesions"]
    assert totals[("Metabolic Volume", None)] == pytest.approx(report["tmtv_ml"])
    result = runner.invoke(app, [  # a SEG needs the PET series it references
        "predict", "--ct", str(tmp_path / "conv" / "CTres.nii.gz"), "--pet",
        str(tmp_path / "conv" / "SUV.nii.gz"), "--out", str(tmp_path / "x.dcm"),
        "--models", str(model_set)])
    assert result.exit_code != 0 and "give --pet as a folder of DICOM files" in result.output
    # a folder of DICOM studies is a dataset like the others
    result = runner.invoke(app, ["predict-folder", "--data", str(tmp_path / "dcm"), "--out",
                                 str(tmp_path / "masks"), "--models", str(model_set),
                                 "--processes", "0"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == sorted(
        f"{c.case_id}.nii.gz" for c in cases)
    # one clear line for a folder that holds no PET
    result = runner.invoke(app, ["convert", "--ct", str(study / "CT"), "--pet",
                                 str(study / "CT"), "--out", str(tmp_path / "bad")])
    assert result.exit_code != 0 and "no PT series; found CT series" in result.output
    assert not (tmp_path / "bad").exists()


def test_written_series_pass_dciodvfy(tmp_path, study):
    """dicom3tools' validator finds no error in the CT and PET petloop writes."""
    rng = np.random.default_rng(6)
    write_series(_volume(rng), tmp_path / "pet", "PT", study=study, pet=PetAcquisition())
    write_series(_volume(rng).with_array(np.zeros((12, 10, 7), np.float32)), tmp_path / "ct",
                 "CT", study=study)
    for folder in ("pet", "ct"):
        path = sorted((tmp_path / folder).iterdir())[3]
        assert not _dciodvfy_errors(path), folder


def _dciodvfy_errors(path) -> list[str]:
    import subprocess

    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def test_seg_and_sr_of_several_lesions_read_back_and_pass_dciodvfy(tmp_path, study):
    """Three lesions on a written PET series: the SEG holds one segment per lesion, numbered as
    in the lesion report, on the PET's slices; the SR holds each lesion's numbers and the
    totals; both pass dciodvfy and read back to the same labels and numbers."""
    from petloop.io.dicom_results import (
        measurement_report,
        read_measurements,
        read_segmentation,
        save,
        segmentation,
    )
    from petloop.metrics.report import labelled_lesions, lesion_report

    rng = np.random.default_rng(7)
    pet = _volume(rng)
    write_series(pet, tmp_path / "pet", "PT", study=study, pet=PetAcquisition())
    (series,) = find_series([tmp_path / "pet"])
    _, source = read_series(series)
    suv = read_pet_suv(series)
    mask = np.zeros(pet.shape, dtype=np.uint8)
    mask[1:4, 1:3, 1:3] = 1  # 12 voxels
    mask[6:8, 5:7, 4:6] = 1  # 8
    mask[10, 8, 6] = 1  # 1
    report, labels = labelled_lesions(suv, mask)
    assert report == lesion_report(suv, mask)
    assert [les.voxels for les in report.lesions] == [12, 8, 1]
    assert all(int((labels == les.id).sum()) == les.voxels for les in report.lesions)
    seg = segmentation(suv.with_array(labels), source)
    sr = measurement_report(report, seg, source)
    save(seg, tmp_path / "seg.dcm")
    save(sr, tmp_path / "sr.dcm")
    for path in ("seg.dcm", "sr.dcm"):
        assert not _dciodvfy_errors(tmp_path / path), path
    assert seg.FrameOfReferenceUID == source[0].FrameOfReferenceUID
    assert {item.SeriesInstanceUID for item in seg.ReferencedSeriesSequence} == {series.uid}
    np.testing.assert_array_equal(read_segmentation(tmp_path / "seg.dcm", source), labels)
    values = read_measurements(tmp_path / "sr.dcm")
    assert set(values) == {"lesion 1", "lesion 2", "lesion 3", "all lesions"}
    for les in report.lesions:
        got = values[f"lesion {les.id}"]
        assert got[("Volume", None)] == pytest.approx(les.volume_ml)
        assert got[("Standardized Uptake Value", "Maximum")] == pytest.approx(les.suv_max)
        assert got[("Standardized Uptake Value", "Mean")] == pytest.approx(les.suv_mean)
        assert got[("Standardized Uptake Value", "Peak Value Within ROI")] == pytest.approx(
            les.suv_peak)
        assert got[("Total Lesion Glycolysis", None)] == pytest.approx(les.tlg)
    totals = values["all lesions"]
    assert totals[("Metabolic Volume", None)] == pytest.approx(report.tmtv_ml)
    assert totals[("Total Lesion Glycolysis", None)] == pytest.approx(report.total_tlg)
    # no lesion: one empty segment, still a valid SEG
    empty = segmentation(suv.with_array(np.zeros(pet.shape, np.uint16)), source)
    save(empty, tmp_path / "empty.dcm")
    assert not _dciodvfy_errors(tmp_path / "empty.dcm")
    assert not read_segmentation(tmp_path / "empty.dcm", source).any()


def test_the_viewer_serves_dicom_studies(tmp_path, model_set):
    """``serve --data`` over DICOM studies: the case is listed, opens (PET in SUV from its
    header) and answers a click."""
    from fastapi.testclient import TestClient

    from petloop.inference.modelset import load_model_set
    from petloop.inference.pipeline import Pipeline
    from petloop.phantom import PhantomConfig, write_phantoms
    from petloop.server.app import ServerConfig, create_app

    config = PhantomConfig.preset("trunk", seed=12, tracer="fdg", negative_fraction=0.0)
    (files,) = write_phantoms(config, tmp_path / "dcm", 1, layout="dicom")
    app = create_app(Pipeline(load_model_set(model_set)), ServerConfig(data=tmp_path / "dcm"))
    with TestClient(app) as client:
        assert [c["name"] for c in client.get("/api/cases").json()] == [files.case_id]
        r = client.post("/api/sessions", json={"case": files.case_id})
        assert r.status_code == 201, r.text
        assert r.json()["shape"] == list(files.load().pet.shape)
        sid = r.json()["id"]
        lesion = [int(v) for v in np.argwhere(files.load().label.array)[0]]
        r = client.post(f"/api/sessions/{sid}/clicks", json={"kind": "tumor", "point": lesion})
        assert r.status_code == 200, r.text
        assert client.delete(f"/api/sessions/{sid}").status_code in (200, 204)
