"""Where commands find their model set: --models, PETLOOP_MODELS, else the bundled set, which is
package data (found from any working directory and inside an installed wheel)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

import petloop.models as models
from petloop.cli import app
from petloop.io.volume import write_volume
from petloop.models import BUNDLED_MODEL_SET, ModelSetNotFound, find_model_set
from petloop.phantom import PhantomConfig, generate_case

ROOT = Path(__file__).resolve().parents[1]


def test_the_bundled_set_lies_in_the_package():
    assert BUNDLED_MODEL_SET == Path(models.__file__).resolve().parent / "phantom"
    assert (BUNDLED_MODEL_SET / "manifest.json").is_file()
    assert find_model_set() == BUNDLED_MODEL_SET


def test_given_and_environment_sets_win_and_are_checked(tmp_path):
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "manifest.json").write_text("{}")
    assert find_model_set(tmp_path / "set", environment="/nowhere") == tmp_path / "set"
    assert find_model_set(None, environment=str(tmp_path / "set")) == tmp_path / "set"
    with pytest.raises(ModelSetNotFound, match=r"--models .*empty: no model set here"):
        find_model_set(tmp_path / "empty")
    with pytest.raises(ModelSetNotFound, match="PETLOOP_MODELS /nowhere: no model set here"):
        find_model_set(None, environment="/nowhere")


def test_a_missing_bundled_set_is_one_error_naming_where_petloop_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "BUNDLED_MODEL_SET", tmp_path / "gone")
    with pytest.raises(ModelSetNotFound, match=r"looked for .*gone/manifest\.json"):
        find_model_set()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PETLOOP_MODELS", raising=False)
    result = CliRunner().invoke(app, ["demo", "--cases", "1", "--out", str(tmp_path / "d")])
    assert result.exit_code == 2 and "looked for" in result.output
    assert not (tmp_path / "d").exists()


def test_commands_find_the_bundled_set_from_any_working_directory(tmp_path):
    case = generate_case(PhantomConfig(seed=3, tracer="psma", shape=(40, 32, 64),
                                       spacing=(12.0, 12.0, 16.0)), 0).case
    pet = write_volume(case.pet, tmp_path / "pet.nii.gz")
    env = {k: v for k, v in os.environ.items() if k != "PETLOOP_MODELS"}
    out = subprocess.run([sys.executable, "-m", "petloop", "tracer", "predict", "--pet", str(pet),
                          "--json"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["tracer"] in ("fdg", "psma")


def test_the_wheel_carries_the_bundled_set(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(ROOT)], check=True, timeout=600,
                   capture_output=True)
    wheel = next(tmp_path.glob("petloop-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {str(p.relative_to(ROOT)) for p in BUNDLED_MODEL_SET.rglob("*") if p.is_file()}
    assert shipped and shipped <= names
    assert "petloop/models/__init__.py" in names
