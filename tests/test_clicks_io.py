from __future__ import annotations

import json
from pathlib import Path

import pytest

from petloop.io.clicks import ClickFileError, Clicks, read_clicks, write_clicks

REF = Path(__file__).resolve().parent / "data"  # public reference files (README there)
GC_REF = REF / "autopet4-lesion-clicks-gc.json"
SIMPLE_REF = REF / "autopet4-psma_95b833d46f153cd2_2018-04-16_clicks.json"


def test_reference_files_in_both_forms_are_the_same_clicks():
    gc = read_clicks(GC_REF)
    simple = read_clicks(SIMPLE_REF)
    assert gc == simple
    assert len(gc.tumor) == 10 and len(gc.background) == 10
    assert gc.tumor[0] == (109, 103, 353) and gc.background[-1] == (103, 110, 272)


def test_forms_round_trip(tmp_path):
    clicks = Clicks(((1, 2, 3), (4, 5, 6)), ((7, 8, 9),))
    for form in ("simple", "gc"):
        path = write_clicks(clicks, tmp_path / f"{form}.json", form=form)
        assert read_clicks(path) == clicks
    gc = json.loads((tmp_path / "gc.json").read_text())
    assert gc["type"] == "Multiple points" and gc["version"] == {"major": 1, "minor": 0}
    assert gc["points"][2] == {"point": [7, 8, 9], "name": "background"}
    assert json.loads((tmp_path / "simple.json").read_text()) == {
        "tumor": [[1, 2, 3], [4, 5, 6]], "background": [[7, 8, 9]]}


def test_gc_order_is_click_order_within_each_name(tmp_path):
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps({"points": [
        {"point": [1, 1, 1], "name": "background"},
        {"point": [2, 2, 2], "name": "tumor"},
        {"point": [3, 3, 3], "name": "background"},
        {"point": [4, 4, 4], "name": "tumor"}]}))
    c = read_clicks(path)
    assert c.tumor == ((2, 2, 2), (4, 4, 4)) and c.background == ((1, 1, 1), (3, 3, 3))


@pytest.mark.parametrize("text", ["", "  \n", "{}", '{"tumor": [], "background": []}',
                                  '{"points": []}', "null"])
def test_empty_means_zero_clicks(tmp_path, text):
    path = tmp_path / "c.json"
    path.write_text(text)
    assert len(read_clicks(path)) == 0


def test_step_takes_first_k_of_each():
    c = Clicks(tuple((i, 0, 0) for i in range(10)), tuple((0, i, 0) for i in range(10)))
    s = c.step(3)
    assert s.tumor == ((0, 0, 0), (1, 0, 0), (2, 0, 0))
    assert s.background == ((0, 0, 0), (0, 1, 0), (0, 2, 0))
    assert len(c.step(0)) == 0 and c.step(12) == c


@pytest.mark.parametrize(("content", "message"), [
    ('{"tumor": [[1, 2, 3]], "lesion": [[1, 2, 3]]}', "unknown point name"),
    ('{"points": [{"point": [1, 2, 3], "name": "organ"}]}', "point 0: unknown point name 'organ'"),
    ('{"tumor": [[1, 2.5, 3]]}', "tumor point 0: coordinates must be integers"),
    ('{"tumor": [[1, 2, 3], [1, 2]]}', "tumor point 1: a point needs 3 coordinates"),
    ('{"points": [{"point": [1, 2, 3, 4], "name": "tumor"}]}', "point 0 (tumor): a point needs"),
    ('{"background": [["a", 2, 3]]}', "background point 0: coordinates must be integers"),
    ('{"tumor": [[1, 2, 3]', "malformed JSON at line 1"),
    ('[1, 2, 3]', "expected a JSON object"),
    ('{"points": [[1, 2, 3]]}', "point 0: expected"),
])
def test_bad_click_files_name_file_and_point(tmp_path, content, message):
    path = tmp_path / "bad_clicks.json"
    path.write_text(content)
    with pytest.raises(ClickFileError) as err:
        read_clicks(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_points_outside_image_are_errors(tmp_path):
    path = write_clicks(Clicks(((0, 0, 0),), ((5, 9, 3), (5, 10, 3))), tmp_path / "c.json")
    read_clicks(path, shape=(6, 11, 4))
    with pytest.raises(ClickFileError, match=r"background point 1 \[5, 10, 3\] lies outside"):
        read_clicks(path, shape=(6, 10, 4))
    neg = tmp_path / "neg.json"
    neg.write_text('{"tumor": [[-1, 0, 0]]}')
    with pytest.raises(ClickFileError, match="tumor point 0"):
        read_clicks(neg, shape=(4, 4, 4))


def test_integral_floats_are_accepted(tmp_path):
    path = tmp_path / "f.json"
    path.write_text('{"tumor": [[1.0, 2.0, 3.0]]}')
    assert read_clicks(path).tumor == ((1, 2, 3),)


def test_missing_file(tmp_path):
    with pytest.raises(ClickFileError, match="no such click file"):
        read_clicks(tmp_path / "nope.json")


@pytest.mark.parametrize(("content", "message"), [
    ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply"),
    ('{"tumor": [[' + "1" * 5000 + ", 2, 3]]}", "not valid JSON"),
    (b"\xff\xfe\x00junk", "not a UTF-8 text file"),
])
def test_hostile_click_files_are_one_error(tmp_path, content, message):
    path = tmp_path / "hostile.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ClickFileError) as err:
        read_clicks(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_a_folder_is_not_a_click_file(tmp_path):
    with pytest.raises(ClickFileError, match="a folder, not a click file"):
        read_clicks(tmp_path)


def test_an_oversized_click_file_is_refused_before_reading(tmp_path, monkeypatch):
    import petloop.io.clicks as clicks_io

    monkeypatch.setattr(clicks_io, "MAX_FILE_BYTES", 10)
    path = write_clicks(Clicks(((1, 2, 3),), ()), tmp_path / "c.json")
    with pytest.raises(ClickFileError, match="too large for a click file"):
        read_clicks(path)
