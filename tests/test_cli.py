from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from petloop.cli import app
from petloop.io.clicks import Clicks, read_clicks, write_clicks
from petloop.io.layouts import find_cases
from petloop.io.volume import Volume, read_volume, write_volume

runner = CliRunner()
SMALL = ["--shape", "48", "48", "64", "--spacing", "4", "4", "6"]


def test_help_lists_the_jobs():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("phantom", "cases", "resample-ct", "clicks", "demo"):
        assert name in result.output


def test_phantom_command_writes_each_layout(tmp_path):
    for layout in ("autopet", "nnunet", "gc"):
        out = tmp_path / layout
        result = runner.invoke(app, ["phantom", "--out", str(out), "--cases", "3", "--seed", "2",
                                     "--layout", layout, "--negative-fraction", "0.34", *SMALL])
        assert result.exit_code == 0, result.output
        found = find_cases(out)
        assert len(found) == 3
        assert {f.tracer for f in found} == {"fdg", "psma"}
        info = json.loads(found[0].meta.read_text())
        assert {"tracer", "patient_weight_kg", "lesions", "organ_suv_mean"} <= set(info)
        for les in info["lesions"]:
            assert {"centre_mm", "volume_ml", "suvmax", "site"} <= set(les)
        assert json.loads((out / "phantom_config.json").read_text())["seed"] == 2
    a = read_volume(find_cases(tmp_path / "autopet")[1].pet)
    b = read_volume(find_cases(tmp_path / "gc")[1].pet)
    np.testing.assert_array_equal(a.array, b.array)


def test_phantom_preview_and_cases_listing(tmp_path):
    out = tmp_path / "ph"
    result = runner.invoke(app, ["phantom", "--out", str(out), "--cases", "2", "--preview",
                                 *SMALL])
    assert result.exit_code == 0, result.output
    png = (out / "preview.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    result = runner.invoke(app, ["cases", str(out), "--json"])
    rows = json.loads(result.output)
    assert [r["tracer"] for r in rows] == ["fdg", "psma"]
    assert all(r["label"] and r["organs"] for r in rows)


def test_phantom_bad_options(tmp_path):
    result = runner.invoke(app, ["phantom", "--out", str(tmp_path), "--tracer", "fgd"])
    assert result.exit_code == 2 and "tracer must be one of" in result.output
    result = runner.invoke(app, ["phantom", "--out", str(tmp_path), "--negative-fraction", "2"])
    assert result.exit_code == 2 and "negative fraction" in result.output


def test_clicks_convert(tmp_path):
    src = write_clicks(Clicks(((1, 2, 3),), ((3, 2, 1),)), tmp_path / "a.json")
    write_volume(Volume(np.zeros((4, 4, 4), np.float32)), tmp_path / "pet.nii.gz")
    result = runner.invoke(app, ["clicks", "convert", str(src), str(tmp_path / "b.json"),
                                 "--image", str(tmp_path / "pet.nii.gz")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "b.json").read_text())["type"] == "Multiple points"
    assert read_clicks(tmp_path / "b.json") == read_clicks(src)
    small = Volume(np.zeros((2, 2, 2), np.float32))
    write_volume(small, tmp_path / "small.nii.gz")
    result = runner.invoke(app, ["clicks", "convert", str(src), str(tmp_path / "c.json"),
                                 "--image", str(tmp_path / "small.nii.gz")])
    assert result.exit_code == 2
    assert "a.json: tumor point 0 [1, 2, 3] lies outside" in result.output
    assert not (tmp_path / "c.json").exists()


def test_resample_ct_command(tmp_path):
    ct = Volume(np.full((10, 10, 10), 40, np.int16), (2, 2, 2), (0, 0, 0))
    pet = Volume(np.zeros((5, 5, 5), np.float32), (4, 4, 4), (1, 1, 1))
    write_volume(ct, tmp_path / "ct.nii.gz")
    write_volume(pet, tmp_path / "pet.nii.gz")
    result = runner.invoke(app, ["resample-ct", "--ct", str(tmp_path / "ct.nii.gz"), "--pet",
                                 str(tmp_path / "pet.nii.gz"), "--out",
                                 str(tmp_path / "ctres.nii.gz")])
    assert result.exit_code == 0, result.output
    res = read_volume(tmp_path / "ctres.nii.gz")
    assert res.same_grid(pet) and np.allclose(res.array[:4, :4, :4], 40)
    far = Volume(np.zeros((5, 5, 5), np.float32), (4, 4, 4), (0, 0, 900))
    write_volume(far, tmp_path / "far.nii.gz")
    result = runner.invoke(app, ["resample-ct", "--ct", str(tmp_path / "ct.nii.gz"), "--pet",
                                 str(tmp_path / "far.nii.gz"), "--out",
                                 str(tmp_path / "x.nii.gz")])
    assert result.exit_code == 2 and "do not overlap" in result.output


def test_clicks_simulate_and_heatmaps(tmp_path, small_cases):
    case = next(c for c in small_cases if c.label.array.any())
    write_volume(case.label, tmp_path / "SEG.nii.gz")
    write_volume(case.pet, tmp_path / "fdg_x_0001.nii.gz")
    result = runner.invoke(app, ["clicks", "simulate", "--label", str(tmp_path / "SEG.nii.gz"),
                                 "--pet", str(tmp_path / "fdg_x_0001.nii.gz"), "--out",
                                 str(tmp_path / "c.json"), "--format", "gc"])
    assert result.exit_code == 0, result.output
    from petloop.clicks.simulate import simulate_clicks

    clicks = read_clicks(tmp_path / "c.json")
    assert clicks == simulate_clicks(case.label.array, case.pet.array)
    assert json.loads((tmp_path / "c.json").read_text())["type"] == "Multiple points"
    result = runner.invoke(app, ["clicks", "heatmaps", "--clicks", str(tmp_path / "c.json"),
                                 "--reference", str(tmp_path / "fdg_x_0001.nii.gz"), "--out-dir",
                                 str(tmp_path / "hm"), "--step", "2"])
    assert result.exit_code == 0, result.output
    fg = read_volume(tmp_path / "hm" / "fdg_x_0002.nii.gz")
    bg = read_volume(tmp_path / "hm" / "fdg_x_0003.nii.gz")
    assert fg.same_grid(case.pet) and fg.array.dtype == np.float32
    from petloop.clicks.encode import encode_clicks

    exp_fg, exp_bg = encode_clicks(clicks, case.pet.shape, step=2)
    np.testing.assert_array_equal(fg.array, exp_fg)
    np.testing.assert_array_equal(bg.array, exp_bg)


def test_clicks_heatmaps_rejects_clicks_outside(tmp_path):
    write_volume(Volume(np.zeros((4, 4, 4), np.float32)), tmp_path / "pet.nii.gz")
    write_clicks(Clicks(((1, 1, 9),), ()), tmp_path / "c.json")
    result = runner.invoke(app, ["clicks", "heatmaps", "--clicks", str(tmp_path / "c.json"),
                                 "--reference", str(tmp_path / "pet.nii.gz"), "--out-dir",
                                 str(tmp_path / "hm")])
    assert result.exit_code == 2 and "tumor point 0 [1, 1, 9] lies outside" in result.output
    assert not (tmp_path / "hm").exists()


MEMORY_CHECK = r"""
import ctypes, os, sys
from typer.testing import CliRunner
from petloop.cli import app
if sys.argv[1] == "command":
    CliRunner().invoke(app, ["cases", sys.argv[2]])
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
n = 64 << 20
block = libc.malloc(n)
ctypes.memset(block, 1, n)
held = rss()
libc.free(block)
print(os.environ.get("THP_MEM_ALLOC_ENABLE"), "torch" in sys.modules, held - rss() > n // 2)
"""


def test_a_command_keeps_freed_memory_for_the_next_network_pass(tmp_path):
    """Every command sets the allocator up before torch is loaded (petloop/cli/memory.py): a
    large freed block stays with the process instead of going back to the kernel."""
    import os
    import subprocess
    import sys

    def run(mode):
        env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
        return subprocess.run([sys.executable, "-c", MEMORY_CHECK, mode, str(tmp_path)],
                              capture_output=True, text=True, check=True,
                              env=env).stdout.split()

    assert run("plain") == ["None", "False", "True"]  # glibc's default: returned at once
    assert run("command") == ["1", "False", "False"]
