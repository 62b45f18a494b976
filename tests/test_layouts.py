from __future__ import annotations

import json

import numpy as np
import pytest

from petloop.io.clicks import Clicks, write_clicks
from petloop.io.layouts import (
    Case,
    LayoutError,
    detect_layout,
    find_cases,
    tracer_from_name,
    write_case,
    write_nnunet_dataset_json,
)
from petloop.io.volume import Volume, VolumeError, write_volume


def _with_clicks(case: Case) -> Case:
    fg = np.argwhere(case.label.array)[:2] if case.label.array.any() else np.zeros((0, 3))
    clicks = Clicks.from_points(fg, [(0, 0, 0)])
    return Case(case.case_id, case.ct, case.pet, case.label, case.organs, clicks, case.tracer)


@pytest.mark.parametrize("layout", ["autopet", "nnunet", "gc"])
def test_write_then_read_every_layout(tmp_path, small_cases, layout):
    cases = [_with_clicks(c) for c in small_cases]
    for c in cases:
        write_case(c, tmp_path, layout)
    if layout == "nnunet":
        write_nnunet_dataset_json(tmp_path, len(cases), "test")
    assert detect_layout(tmp_path) == layout
    found = find_cases(tmp_path)
    assert [f.case_id for f in found] == sorted(c.case_id for c in cases)
    by_id = {c.case_id: c for c in cases}
    for files in found:
        loaded = files.load()
        orig = by_id[loaded.case_id]
        assert loaded.tracer == orig.tracer
        np.testing.assert_array_equal(loaded.pet.array, orig.pet.array)
        np.testing.assert_array_equal(loaded.ct.array, orig.ct.array)
        np.testing.assert_array_equal(loaded.label.array, orig.label.array)
        np.testing.assert_array_equal(loaded.organs.array, orig.organs.array)
        assert loaded.clicks == orig.clicks
        assert loaded.pet.spacing == pytest.approx(orig.pet.spacing, abs=1e-5)


def test_autopet_ct_on_its_own_grid_is_resampled(tmp_path, small_cases):
    case = small_cases[0]
    study = tmp_path / "psma_abc" / "2018-04-16"
    write_volume(case.pet, study / "SUV.nii.gz")
    # a CT at twice the resolution over the same field of view
    ct = Volume(np.repeat(np.repeat(case.ct.array, 2, 0), 2, 1).astype(np.int16),
                (case.ct.spacing[0] / 2, case.ct.spacing[1] / 2, case.ct.spacing[2]),
                tuple(np.asarray(case.ct.origin) - [case.ct.spacing[0] / 4,
                                                    case.ct.spacing[1] / 4, 0]))
    write_volume(ct, study / "CT.nii.gz")
    (files,) = find_cases(tmp_path)
    assert files.case_id == "psma_abc_2018-04-16" and files.tracer == "psma"
    loaded = files.load()
    assert loaded.ct.same_grid(loaded.pet)
    assert loaded.label is None and loaded.clicks is None
    # averaging two identical neighbours gives back the original values
    np.testing.assert_allclose(loaded.ct.array[1:-1, 1:-1], case.ct.array[1:-1, 1:-1], atol=1e-3)


def test_nnunet_with_click_channels_and_channel_names(tmp_path, small_cases):
    case = small_cases[0]
    images = tmp_path / "imagesTr"
    zeros = case.pet.with_array(np.zeros(case.pet.shape, np.float32))
    # channels in a non-default order: PET first
    write_volume(case.pet, images / "fdg_x_0000.nii.gz")
    write_volume(case.ct, images / "fdg_x_0001.nii.gz")
    write_volume(zeros, images / "fdg_x_0002.nii.gz")
    write_volume(zeros, images / "fdg_x_0003.nii.gz")
    write_nnunet_dataset_json(tmp_path, 1, "t", channel_names={"0": "PET", "1": "CT", "2": "FG",
                                                               "3": "BG"})
    # ct is channel 1: the case is found through it
    (files,) = find_cases(tmp_path)
    assert files.ct.name == "fdg_x_0001.nii.gz" and files.pet.name == "fdg_x_0000.nii.gz"
    assert files.heatmaps is not None and files.heatmaps[0].name == "fdg_x_0002.nii.gz"
    assert files.label is None and files.tracer == "fdg"


def test_gc_input_folder_with_clicks(tmp_path, small_cases):
    case = small_cases[1]
    write_volume(case.ct, tmp_path / "images" / "ct" / "uuid-1.mha")
    write_volume(case.pet, tmp_path / "images" / "pet" / "uuid-1.mha")
    write_clicks(Clicks(((1, 2, 3),), ()), tmp_path / "lesion-clicks.json", form="gc")
    (files,) = find_cases(tmp_path, "gc")
    loaded = files.load()
    assert loaded.case_id == "uuid-1" and loaded.clicks.tumor == ((1, 2, 3),)
    assert loaded.tracer is None


def test_tracer_from_name():
    assert tracer_from_name("psma_95b833d46f153cd2_2018-04-16") == "psma"
    assert tracer_from_name("fdg_0011f3deaf_2003-01-01") == "fdg"
    assert tracer_from_name("PETCT_0011f3deaf") == "fdg"
    assert tracer_from_name("case_001") is None


def test_layout_errors(tmp_path, small_cases):
    with pytest.raises(LayoutError, match="not a dataset petloop can read"):
        find_cases(tmp_path)
    study = tmp_path / "p" / "s"
    write_volume(small_cases[0].pet, study / "PET.nii.gz")
    write_volume(small_cases[0].ct, study / "CTres.nii.gz")
    with pytest.raises(LayoutError, match=r"no SUV.nii.gz \(PET.nii.gz is activity, not SUV\)"):
        find_cases(tmp_path, "autopet")
    nn = tmp_path / "nn"
    nn.mkdir()
    (nn / "dataset.json").write_text("{broken")
    with pytest.raises(LayoutError, match="dataset.json: malformed JSON"):
        find_cases(nn)


def test_label_on_another_grid_is_an_error(tmp_path, small_cases):
    case = small_cases[0]
    study = tmp_path / "fdg_a" / "b"
    write_volume(case.pet, study / "SUV.nii.gz")
    write_volume(case.ct, study / "CTres.nii.gz")
    write_volume(Volume(np.zeros((3, 3, 3), np.uint8)), study / "SEG.nii.gz")
    with pytest.raises(VolumeError, match="SEG.nii.gz: the label grid"):
        find_cases(tmp_path)[0].load()


def test_case_json_tracer_wins_over_name(tmp_path, small_cases):
    case = small_cases[0]
    write_case(Case("fdg_a_b", case.ct, case.pet, tracer="psma"), tmp_path, "autopet")
    (files,) = find_cases(tmp_path)
    assert json.loads(files.meta.read_text())["tracer"] == "psma"
    assert files.tracer == "psma"


def test_hostile_case_files_get_one_error_each(tmp_path, small_cases):
    case = small_cases[0]
    files = write_case(Case("fdg_a_b", case.ct, case.pet, label=case.label, tracer="fdg"),
                       tmp_path / "ok", "autopet")
    files.meta.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(LayoutError, match="case.json: JSON nested too deeply"):
        files.tracer  # noqa: B018
    files.meta.write_text("[1, 2]")
    with pytest.raises(LayoutError, match="case.json: a case description is a JSON object"):
        files.load()
    files.meta.write_text("{}")
    label = case.label.array.astype(np.uint8)
    label[0, 0, 0] = 2  # a second class is not a lesion
    write_volume(case.label.with_array(label), files.label)
    with pytest.raises(VolumeError, match=r"SEG.nii.gz: a lesion label holds 0 .* also holds 2"):
        files.load()
    assert files.load(with_label=False).label is None
    nn = tmp_path / "nn"
    write_case(Case("fdg_c", case.ct, case.pet), nn, "nnunet")
    (nn / "dataset.json").write_text(json.dumps({"file_ending": "/../../x"}))
    with pytest.raises(LayoutError, match="file_ending '/../../x' is not one of"):
        find_cases(nn)


def test_hidden_folders_and_files_are_not_cases(tmp_path, small_cases):
    """Writes in progress (or interrupted) are hidden: nothing half-written is listed."""
    case = small_cases[0]
    for layout in ("autopet", "nnunet", "gc"):
        root = tmp_path / layout
        write_case(Case("fdg_a_b", case.ct, case.pet), root, layout)
        write_case(Case("fdg_a_b", case.ct, case.pet), root / ".tmp", layout)
        if layout == "nnunet":
            write_nnunet_dataset_json(root, 1, "x")
        if layout == "autopet":
            write_volume(case.pet, root / "fdg_c" / ".d" / "SUV.nii.gz")
            write_volume(case.ct, root / "fdg_c" / ".d" / "CTres.nii.gz")
        if layout == "nnunet":
            (root / "imagesTr" / "fdg_a_b_0000.nii.gz").replace(
                root / "imagesTr" / ".fdg_x_0000.nii.gz")
            write_case(Case("fdg_a_b", case.ct, case.pet), root, layout)
        assert [c.case_id for c in find_cases(root)] == ["fdg_a_b"], layout
