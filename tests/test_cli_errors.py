"""Hostile and broken inputs at the command line (issue 23): one line, exit code 2, nothing
written, no input touched; outputs written as a set; interrupted runs leave nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from petloop.cli import app
from petloop.io.clicks import Clicks, write_clicks
from petloop.io.layouts import find_cases
from petloop.io.outputs import OutputError, OutputSet, safe_name, staged_folder
from petloop.io.volume import Volume, read_volume, write_volume

runner = CliRunner()
SHAPE = (12, 10, 8)


# inputs ----------------------------------------------------------------------------------------
@pytest.fixture
def d(tmp_path) -> Path:
    """A folder of small, valid inputs and a few traps."""
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(0)
    pet = (1.0 + rng.random(SHAPE)).astype(np.float32)
    pet[4:7, 4:7, 3:5] = 8.0
    label = np.zeros(SHAPE, np.uint8)
    label[4:7, 4:7, 3:5] = 1
    write_volume(Volume(pet, (4.0, 4.0, 6.0)), d / "pet.nii.gz")
    write_volume(Volume(np.full(SHAPE, 40, np.int16), (4.0, 4.0, 6.0)), d / "ct.nii.gz")
    write_volume(Volume(label, (4.0, 4.0, 6.0)), d / "seg.nii.gz")
    write_volume(Volume(label * 2, (4.0, 4.0, 6.0)), d / "seg2.nii.gz")  # not a lesion label
    write_volume(Volume(pet * 5000, (4.0, 4.0, 6.0)), d / "activity.nii.gz")  # Bq/ml, not SUV
    write_clicks(Clicks(((5, 5, 4), (1, 1, 1)), ((0, 0, 0), (2, 2, 2))), d / "clicks.json")
    (d / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (d / "clicksdir").mkdir()
    (d / "file").write_text("a regular file\n")
    (d / "existing.nii.gz").mkdir()  # a folder with an output's name
    (d / "link.json").symlink_to(d / "seg.nii.gz")
    os.link(d / "seg.nii.gz", d / "hard.json")
    gc_no_pet = d / "gc_no_pet"
    (gc_no_pet / "images" / "ct").mkdir(parents=True)
    write_volume(Volume(np.zeros(SHAPE, np.int16)), gc_no_pet / "images" / "ct" / "u.mha")
    (d / "gc_empty" / "images" / "ct").mkdir(parents=True)
    (d / "gc_empty" / "images" / "pet").mkdir(parents=True)
    return d


def snapshot(root: Path) -> dict:
    """Every file and folder under ``root`` (hidden ones included) with bytes and mtime."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            out[rel] = ("dir",)
        else:
            out[rel] = (p.read_bytes(), p.stat().st_mtime_ns)
    return out


def _s(p) -> str:
    return str(p)


# one row per bad input: arguments (a function of the input folder and tmp_path) and the words
# the one error line must hold (the option and/or the file)
ROWS = {
    "predict --out is --pet": (lambda d, t: [
        "predict", "--ct", d / "ct.nii.gz", "--pet", d / "pet.nii.gz", "--out",
        d / "pet.nii.gz"], ["--out", "pet.nii.gz", "--pet"]),
    "predict --report is --ct": (lambda d, t: [
        "predict", "--ct", d / "ct.nii.gz", "--pet", d / "pet.nii.gz", "--out", t / "m.nii.gz",
        "--report", d / "ct.nii.gz"], ["--report", "ct.nii.gz", "--ct"]),
    "predict --out in a folder that is a file": (lambda d, t: [
        "predict", "--ct", d / "ct.nii.gz", "--pet", d / "pet.nii.gz", "--out",
        d / "file" / "m.nii.gz"], ["--out", "file", "not a folder"]),
    "predict --out an existing folder": (lambda d, t: [
        "predict", "--ct", d / "ct.nii.gz", "--pet", d / "pet.nii.gz", "--out",
        d / "existing.nii.gz"], ["--out", "existing.nii.gz", "folder"]),
    "predict --out with an invalid suffix": (lambda d, t: [
        "predict", "--ct", d / "ct.nii.gz", "--pet", d / "pet.nii.gz", "--out", t / "m.txt"],
        ["--out", "m.txt", ".nii.gz"]),
    "predict --report with an invalid suffix": (lambda d, t: [
        "predict", "--ct", d / "ct.nii.gz", "--pet", d / "pet.nii.gz", "--out", t / "m.nii.gz",
        "--report", t / "r.csv"], ["--report", "r.csv", ".json"]),
    "predict --device tpu": (lambda d, t: [
        "predict", "--ct", d / "ct.nii.gz", "--pet", d / "pet.nii.gz", "--out", t / "m.nii.gz",
        "--device", "tpu"], ["--device", "tpu"]),
    "predict --tracer xray": (lambda d, t: [
        "predict", "--ct", d / "ct.nii.gz", "--pet", d / "pet.nii.gz", "--out", t / "m.nii.gz",
        "--tracer", "xray"], ["--tracer", "xray"]),
    "predict --time-budget -1": (lambda d, t: [
        "predict", "--ct", d / "ct.nii.gz", "--pet", d / "pet.nii.gz", "--out", t / "m.nii.gz",
        "--time-budget=-1"], ["--time-budget"]),
    "predict --clicks a folder": (lambda d, t: [
        "predict", "--ct", d / "ct.nii.gz", "--pet", d / "pet.nii.gz", "--out", t / "m.nii.gz",
        "--clicks", d / "clicksdir"], ["clicksdir", "folder"]),
    "predict --step beyond the clicks": (lambda d, t: [
        "predict", "--ct", d / "ct.nii.gz", "--pet", d / "pet.nii.gz", "--out", t / "m.nii.gz",
        "--clicks", d / "clicks.json", "--step", "3"], ["--step 3", "clicks.json"]),
    "predict a PET in Bq/ml": (lambda d, t: [
        "predict", "--ct", d / "ct.nii.gz", "--pet", d / "activity.nii.gz", "--out",
        t / "m.nii.gz"], ["activity.nii.gz", "--trust-suv"]),
    "predict-folder --device tpu": (lambda d, t: [
        "predict-folder", "--data", d, "--out", t / "o", "--device", "tpu"], ["--device"]),
    "predict-folder --part-id beyond the parts": (lambda d, t: [
        "predict-folder", "--data", d, "--out", t / "o", "--num-parts", "2", "--part-id", "2"],
        ["--part-id"]),
    "gc --input missing": (lambda d, t: [
        "gc", "--input", d / "nope", "--output", t / "o", "--device", "cpu"],
        ["--input", "nope"]),
    "gc --input without a PET": (lambda d, t: [
        "gc", "--input", d / "gc_no_pet", "--output", t / "o", "--device", "cpu"],
        ["--input", "gc_no_pet", "images/pet"]),
    "gc --input without images": (lambda d, t: [
        "gc", "--input", d / "gc_empty", "--output", t / "o", "--device", "cpu"],
        ["gc_empty"]),
    "gc --device tpu": (lambda d, t: [
        "gc", "--input", d / "gc_no_pet", "--output", t / "o", "--device", "tpu"],
        ["--device", "tpu"]),
    "report --csv is --pet": (lambda d, t: [
        "report", "--pet", d / "pet.nii.gz", "--mask", d / "seg.nii.gz", "--csv",
        d / "pet.nii.gz"], ["--csv", "pet.nii.gz", "--pet"]),
    "report --json is --mask": (lambda d, t: [
        "report", "--pet", d / "pet.nii.gz", "--mask", d / "seg.nii.gz", "--json",
        d / "seg.nii.gz"], ["--json", "seg.nii.gz", "--mask"]),
    "report --json with an invalid suffix": (lambda d, t: [
        "report", "--pet", d / "pet.nii.gz", "--mask", d / "seg.nii.gz", "--json",
        t / "r.txt"], ["--json", "r.txt"]),
    "metrics --gt not a lesion label": (lambda d, t: [
        "metrics", "--gt", d / "seg2.nii.gz", "--pred", d / "seg.nii.gz"], ["seg2.nii.gz"]),
    "clicks simulate --out is --label": (lambda d, t: [
        "clicks", "simulate", "--label", d / "seg.nii.gz", "--pet", d / "pet.nii.gz", "--out",
        d / "seg.nii.gz"], ["--out", "seg.nii.gz", "--label"]),
    "clicks simulate --out a symlink to --label": (lambda d, t: [
        "clicks", "simulate", "--label", d / "seg.nii.gz", "--pet", d / "pet.nii.gz", "--out",
        d / "link.json"], ["--out", "link.json", "--label"]),
    "clicks simulate --out a hard link to --label": (lambda d, t: [
        "clicks", "simulate", "--label", d / "seg.nii.gz", "--pet", d / "pet.nii.gz", "--out",
        d / "hard.json"], ["--out", "hard.json", "--label"]),
    "clicks simulate --label not a lesion label": (lambda d, t: [
        "clicks", "simulate", "--label", d / "seg2.nii.gz", "--pet", d / "pet.nii.gz", "--out",
        t / "c.json"], ["seg2.nii.gz", "0 (background) and 1"]),
    "clicks simulate --format xml": (lambda d, t: [
        "clicks", "simulate", "--label", d / "seg.nii.gz", "--pet", d / "pet.nii.gz", "--out",
        t / "c.json", "--format", "xml"], ["--format"]),
    "clicks convert DST is SRC": (lambda d, t: [
        "clicks", "convert", d / "clicks.json", d / "clicks.json"], ["DST", "clicks.json"]),
    "clicks heatmaps --case ../../x": (lambda d, t: [
        "clicks", "heatmaps", "--clicks", d / "clicks.json", "--reference", d / "pet.nii.gz",
        "--out-dir", t / "hm", "--case", "../../x"], ["--case", "../../x"]),
    "clicks heatmaps --case an absolute name": (lambda d, t: [
        "clicks", "heatmaps", "--clicks", d / "clicks.json", "--reference", d / "pet.nii.gz",
        "--out-dir", t / "hm", "--case", str(t / "abs")], ["--case", "abs"]),
    "clicks heatmaps --case ..": (lambda d, t: [
        "clicks", "heatmaps", "--clicks", d / "clicks.json", "--reference", d / "pet.nii.gz",
        "--out-dir", t / "hm", "--case", ".."], ["--case"]),
    "clicks heatmaps --clicks a folder": (lambda d, t: [
        "clicks", "heatmaps", "--clicks", d / "clicksdir", "--reference", d / "pet.nii.gz",
        "--out-dir", t / "hm"], ["clicksdir", "folder"]),
    "clicks heatmaps --clicks 100000-deep JSON": (lambda d, t: [
        "clicks", "heatmaps", "--clicks", d / "deep.json", "--reference", d / "pet.nii.gz",
        "--out-dir", t / "hm"], ["deep.json", "nested"]),
    "clicks heatmaps --sigma 0": (lambda d, t: [
        "clicks", "heatmaps", "--clicks", d / "clicks.json", "--reference", d / "pet.nii.gz",
        "--out-dir", t / "hm", "--sigma", "0"], ["--sigma"]),
    "clicks heatmaps --sigma -1": (lambda d, t: [
        "clicks", "heatmaps", "--clicks", d / "clicks.json", "--reference", d / "pet.nii.gz",
        "--out-dir", t / "hm", "--sigma=-1"], ["--sigma"]),
    "clicks heatmaps --radius 0": (lambda d, t: [
        "clicks", "heatmaps", "--clicks", d / "clicks.json", "--reference", d / "pet.nii.gz",
        "--out-dir", t / "hm", "--encoding", "edt_ball", "--radius", "0"], ["--radius"]),
    "clicks heatmaps --step beyond the clicks": (lambda d, t: [
        "clicks", "heatmaps", "--clicks", d / "clicks.json", "--reference", d / "pet.nii.gz",
        "--out-dir", t / "hm", "--step", "5"], ["--step 5"]),
    "clicks heatmaps --out-dir a file": (lambda d, t: [
        "clicks", "heatmaps", "--clicks", d / "clicks.json", "--reference", d / "pet.nii.gz",
        "--out-dir", d / "file"], ["--out-dir", "file"]),
    "clicks heatmaps --reference missing": (lambda d, t: [
        "clicks", "heatmaps", "--clicks", d / "clicks.json", "--reference", d / "no.nii.gz",
        "--out-dir", t / "hm"], ["no.nii.gz"]),
    "resample-ct --out is --ct": (lambda d, t: [
        "resample-ct", "--ct", d / "ct.nii.gz", "--pet", d / "pet.nii.gz", "--out",
        d / "ct.nii.gz"], ["--out", "ct.nii.gz", "--ct"]),
    "phantom --out a file": (lambda d, t: [
        "phantom", "--out", d / "file"], ["--out", "file"]),
    "phantom --layout zip": (lambda d, t: [
        "phantom", "--out", t / "ph", "--layout", "zip"], ["--layout", "zip"]),
    "evaluate --out a file": (lambda d, t: [
        "evaluate", "--data", d, "--pred", d, "--out", d / "file"], ["--out", "file"]),
    "evaluate --device tpu": (lambda d, t: [
        "evaluate", "--data", d, "--models", d, "--out", t / "ev", "--device", "tpu"],
        ["--device"]),
    "tracer predict --device tpu": (lambda d, t: [
        "tracer", "predict", "--pet", d / "pet.nii.gz", "--device", "tpu"], ["--device"]),
    "tracer train --out with an invalid suffix": (lambda d, t: [
        "tracer", "train", "--data", d, "--out", t / "w.bin"], ["--out", "w.bin"]),
    "train --device tpu": (lambda d, t: [
        "train", "--dataset", "1", "--device", "tpu"], ["--device"]),
    "train --fold x": (lambda d, t: ["train", "--dataset", "1", "--fold", "x"], ["--fold"]),
    "models export --name ../x": (lambda d, t: [
        "models", "export", "--out", t / "set", "--fdg-v4", d, "--fdg-v3", d, "--psma-v2", d,
        "--name", "../x"], ["--name", "../x"]),
    "models export --tile-step 0": (lambda d, t: [
        "models", "export", "--out", t / "set", "--fdg-v4", d, "--fdg-v3", d, "--psma-v2", d,
        "--tile-step", "0"], ["--tile-step"]),
    "models calibrate --thresholds -1": (lambda d, t: [
        "models", "calibrate", "--data", d, "--thresholds=-1"], ["--thresholds"]),
    "dataset phantoms --config 100000-deep JSON": (lambda d, t: [
        "dataset", "phantoms", "--config", d / "deep.json", "--cases", "1", "--id", "5",
        "--plans-from", "x/y", "--workdir", t / "w"], ["--config", "deep.json"]),
    "organs --out is --ct": (lambda d, t: [
        "organs", "--ct", d / "ct.nii.gz", "--out", d / "ct.nii.gz"], ["--out", "--ct"]),
}


@pytest.mark.parametrize("row", list(ROWS), ids=list(ROWS))
def test_bad_input_gives_one_error_line_and_writes_nothing(row, d, tmp_path):
    make, words = ROWS[row]
    args = [_s(a) for a in make(d, tmp_path)]
    before = snapshot(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in result.output
    assert "unexpected" not in lines[0]
    assert snapshot(tmp_path) == before  # no output, no temporary, no input touched


def test_usage_errors_are_still_click_s_own(d):
    result = runner.invoke(app, ["clicks", "heatmaps", "--clicks", str(d / "clicks.json")])
    assert result.exit_code == 2
    assert "Missing option '--reference'" in result.stderr
    result = runner.invoke(app, ["clicks", "heatmaps", "--clicks", "c.json", "--reference",
                                 "r.nii.gz", "--out-dir", "o", "--sigma", "abc"])
    assert result.exit_code == 2 and "Invalid value for '--sigma'" in result.stderr
    assert runner.invoke(app, ["predict", "--help"]).exit_code == 0


# the net at the edge ----------------------------------------------------------------------------
def test_an_unexpected_exception_is_one_line(d, tmp_path, monkeypatch):
    import petloop.metrics.report as report

    def boom(*args, **kwargs):
        raise RuntimeError("something\nbroke")

    monkeypatch.setattr(report, "lesion_report", boom)
    args = ["report", "--pet", str(d / "pet.nii.gz"), "--mask", str(d / "seg.nii.gz")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr == ("error: unexpected RuntimeError: something broke (set "
                             "PETLOOP_DEBUG=1 for the traceback)\n")
    monkeypatch.setenv("PETLOOP_DEBUG", "1")
    result = runner.invoke(app, args)
    assert isinstance(result.exception, RuntimeError)  # the traceback, for a developer


def test_an_os_error_names_its_file(d, tmp_path, monkeypatch):
    import petloop.metrics.report as report

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(d / "pet.nii.gz"))

    monkeypatch.setattr(report, "lesion_report", denied)
    result = runner.invoke(app, ["report", "--pet", str(d / "pet.nii.gz"), "--mask",
                                 str(d / "seg.nii.gz")])
    assert result.exit_code == 2
    assert result.stderr == f"error: {d / 'pet.nii.gz'}: Permission denied\n"


# output sets -------------------------------------------------------------------------------------
def test_a_failing_second_writer_leaves_no_output(d, tmp_path, monkeypatch):
    """report writes its JSON, then its CSV: the CSV failing leaves neither."""
    from petloop.io import outputs

    text = outputs.Staged.text

    def failing(self, target, content):
        if str(target).endswith(".csv"):
            raise OSError(28, "No space left on device")
        return text(self, target, content)

    monkeypatch.setattr(outputs.Staged, "text", failing)
    before = snapshot(tmp_path)
    result = runner.invoke(app, ["report", "--pet", str(d / "pet.nii.gz"), "--mask",
                                 str(d / "seg.nii.gz"), "--json", str(tmp_path / "o" / "r.json"),
                                 "--csv", str(tmp_path / "o" / "r.csv")])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: unexpected OSError")
    assert snapshot(tmp_path) == before  # not even the folder "o"
    monkeypatch.setattr(outputs.Staged, "text", text)
    result = runner.invoke(app, ["report", "--pet", str(d / "pet.nii.gz"), "--mask",
                                 str(d / "seg.nii.gz"), "--json", str(tmp_path / "o" / "r.json"),
                                 "--csv", str(tmp_path / "o" / "r.csv")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["r.csv", "r.json"]


def test_predict_interrupted_between_mask_and_report_writes_neither(d, tmp_path, monkeypatch):
    """The mask is staged first; an interrupt while the report is written leaves neither (and
    the PET and CT as they were). No network runs: the model set is replaced."""
    import petloop.cli.inference as inference
    from petloop.io import outputs

    pet = read_volume(d / "pet.nii.gz")

    class Pipeline:
        def predict(self, ct, pet_vol, clicks, tracer, *, interaction="clicks"):
            mask = pet_vol.with_array((pet_vol.array > 4).astype(np.uint8))
            return SimpleNamespace(mask=mask, model="fake", tta=SimpleNamespace(
                describe=lambda: "none"), tracer=SimpleNamespace(tracer="fdg", probability=1.0))

    seen = {}
    monkeypatch.setattr(inference, "_pipeline", lambda *a, **k: Pipeline())
    json_writer = outputs.Staged.json

    def interrupted(self, target, obj, indent=2):
        seen["staged"] = sorted(p.name for p in (tmp_path / "out").iterdir())
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs.Staged, "json", interrupted)
    args = ["predict", "--ct", str(d / "ct.nii.gz"), "--pet", str(d / "pet.nii.gz"), "--out",
            str(tmp_path / "out" / "m.nii.gz"), "--report", str(tmp_path / "out" / "r.json")]
    before = snapshot(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert len(seen["staged"]) == 1 and seen["staged"][0].startswith(".m.nii.gz.")
    assert snapshot(tmp_path) == before
    monkeypatch.setattr(outputs.Staged, "json", json_writer)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert read_volume(tmp_path / "out" / "m.nii.gz").array.sum() == (pet.array > 4).sum()
    assert "lesion_count" in json.loads((tmp_path / "out" / "r.json").read_text())


def test_heatmaps_write_both_channels_or_neither(d, tmp_path, monkeypatch):
    from petloop.io import outputs

    volume = outputs.Staged.volume
    calls = []

    def second_fails(self, target, vol, compress=True):
        calls.append(target)
        if len(calls) == 2:
            raise RuntimeError("disk gone")
        return volume(self, target, vol, compress)

    monkeypatch.setattr(outputs.Staged, "volume", second_fails)
    result = runner.invoke(app, ["clicks", "heatmaps", "--clicks", str(d / "clicks.json"),
                                 "--reference", str(d / "pet.nii.gz"), "--out-dir",
                                 str(tmp_path / "hm")])
    assert result.exit_code == 2 and len(calls) == 2
    assert not (tmp_path / "hm").exists()  # no _0002 without _0003


# the pieces ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["case_01", "a.b", "fdg_x_0001", "x y", "ünïcode"])
def test_safe_name_accepts_plain_names(name):
    assert safe_name(name, "--case") == name


@pytest.mark.parametrize("name", ["", " ", ".", "..", "../x", "a/b", "/abs", "..\\x", "a\\b",
                                  "a\0b", ".hidden", "a\nb"])
def test_safe_name_refuses_paths_and_hidden_names(name):
    with pytest.raises(OutputError, match="^--case: "):
        safe_name(name, "--case")


def test_output_checks(tmp_path):
    (tmp_path / "in.nii.gz").write_bytes(b"input")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir.json").mkdir()
    (tmp_path / "alias.nii.gz").symlink_to(tmp_path / "in.nii.gz")
    outputs = OutputSet({"--pet": tmp_path / "in.nii.gz", "--none": None})
    assert outputs.add("--out", tmp_path / "new" / "deeper" / "m.nii.gz", "volume")
    bad = [("--out", tmp_path / "in.nii.gz", "volume", "the same file as the input --pet"),
           ("--out", tmp_path / "alias.nii.gz", "volume", "the same file as the input --pet"),
           ("--out", tmp_path / "sub" / ".." / "in.nii.gz", "volume", "the same file"),
           ("--out", tmp_path / "m.nii.gz.txt", "volume", "must end in"),
           ("--json", tmp_path / ".json", "json", "must end in"),
           ("--json", tmp_path / "adir.json", "json", "an existing folder"),
           ("--json", tmp_path / "afile" / "x.json", "json", "is a file, not a folder"),
           ("--out", tmp_path / "new" / "deeper" / "m.nii.gz", "volume", "the same file as "
            "the output --out")]
    for option, path, kind, message in bad:
        with pytest.raises(OutputError, match=f"^{option} .*{message}"):
            outputs.add(option, path, kind)
    with pytest.raises(OutputError, match="a file, not a folder"):
        outputs.add_folder("--out-dir", tmp_path / "afile")
    with pytest.raises(OutputError, match="the same file as the input --pet"):
        outputs.add_folder("--out-dir", tmp_path / "in.nii.gz")


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt, SystemExit])
def test_an_output_set_is_written_whole_or_not_at_all(tmp_path, error):
    (tmp_path / "old.json").write_text("old\n")
    outputs = OutputSet()
    a = outputs.add("--json", tmp_path / "old.json", "json")
    b = outputs.add("--csv", tmp_path / "new" / "sub" / "b.csv", "csv")
    with pytest.raises(error):
        with outputs.writing() as w:
            w.json(a, {"new": 1})
            assert (tmp_path / "old.json").read_text() == "old\n"  # not yet
            w.text(b, "x\n")
            raise error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json"]  # no temporary, no folder
    assert (tmp_path / "old.json").read_text() == "old\n"
    with outputs.writing() as w:
        w.json(a, {"new": 1})
        w.text(b, "x\n")
    assert json.loads(a.read_text()) == {"new": 1} and b.read_text() == "x\n"
    assert oct(b.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert not [p for p in tmp_path.rglob(".*")]


def test_an_output_set_refuses_to_commit_half(tmp_path):
    outputs = OutputSet()
    a = outputs.add("--json", tmp_path / "a.json", "json")
    outputs.add("--csv", tmp_path / "b.csv", "csv")
    with pytest.raises(RuntimeError, match="outputs not written: --csv"):
        with outputs.writing() as w:
            w.json(a, {})
    assert list(tmp_path.iterdir()) == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_staged_folder(tmp_path):
    (tmp_path / "case").mkdir()
    (tmp_path / "case" / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with staged_folder(tmp_path / "case") as tmp:
            (tmp / "new.txt").write_text("new")
            raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["case"]
    assert [p.name for p in (tmp_path / "case").iterdir()] == ["old.txt"]
    with staged_folder(tmp_path / "case") as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["case"]
    assert [p.name for p in (tmp_path / "case").iterdir()] == ["new.txt"]


def test_encode_refuses_nonsense():
    from petloop.clicks.encode import encode_clicks, gaussian_heatmap

    clicks = Clicks(((1, 1, 1),), ())
    for sigma in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="sigma must be a positive number"):
            encode_clicks(clicks, (4, 4, 4), sigma=sigma)
        with pytest.raises(ValueError, match="sigma"):
            gaussian_heatmap([(1, 1, 1)], (4, 4, 4), sigma=sigma)
    with pytest.raises(ValueError, match="radius"):
        encode_clicks(clicks, (4, 4, 4), encoding="edt_ball", radius=0)
    with pytest.raises(ValueError, match="unknown click encoding"):
        encode_clicks(clicks, (4, 4, 4), encoding="disc")
    with pytest.raises(ValueError, match="step must be >= 0"):
        encode_clicks(clicks, (4, 4, 4), step=-1)


def test_trust_suv_lets_a_pet_through(d, tmp_path):
    """--trust-suv takes a PET that does not look like SUV (report reads one, nothing else)."""
    args = ["report", "--pet", str(d / "activity.nii.gz"), "--mask", str(d / "seg.nii.gz")]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and "--trust-suv" in refused.stderr
    assert runner.invoke(app, [*args, "--trust-suv"]).exit_code == 0


# interrupted phantom runs ----------------------------------------------------------------------
def test_a_phantom_run_ended_by_sigterm_leaves_whole_cases_only(tmp_path):
    out = tmp_path / "ph"
    proc = subprocess.Popen(
        [sys.executable, "-m", "petloop", "phantom", "--out", str(out), "--cases", "400",
         "--shape", "32", "32", "40", "--spacing", "6", "6", "9"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("*/s0/SUV.nii.gz")):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no case written in time"
            time.sleep(0.02)
        time.sleep(0.15)  # somewhere in a later case
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary left
    found = find_cases(out)
    assert 1 <= len(found) < 400
    for f in found:  # each listed case is whole
        case = f.load()
        assert case.label is not None and case.organs is not None and f.meta.is_file()
    studies = {p.parent for p in out.glob("*/*") if p.is_dir()}
    assert len(studies) == len(found)  # no half-written case folder either


def test_the_cli_option_sets_are_the_modules_own():
    """Option sets are named once (petloop.options, a module light enough for the CLI to check
    options before torch loads); the demo's grids the CLI names itself."""
    import subprocess
    import sys

    from petloop import options
    from petloop.cli import data
    from petloop.cli import inference as cli
    from petloop.experiments import demo
    from petloop.inference import body, evaluate, modelset, pipeline
    from petloop.nnunet import adapter

    assert cli.WINDOWS is modelset.WINDOWS is adapter.WINDOWS is options.WINDOWS
    assert cli.CROPS is body.CROPS is options.CROPS
    assert cli.PRECISIONS is pipeline.PRECISIONS is options.PRECISIONS
    assert cli.CLICK_MODES is evaluate.CLICK_MODES is options.CLICK_MODES
    assert cli.BUDGET_MODES is options.BUDGET_MODES
    assert set(data.DEMO_GRIDS) == set(demo.GRIDS)
    light = subprocess.run([sys.executable, "-c", "import sys, petloop.options; "
                            "print(sorted(m for m in ('numpy', 'torch') if m in sys.modules))"],
                           capture_output=True, text=True, check=True)
    assert light.stdout.strip() == "[]"
