from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from petloop.cli import app
from petloop.io.volume import Volume, write_volume
from petloop.phantom import PhantomConfig, write_phantoms
from petloop.tracer.classifier import (
    MipClassifier,
    TracerClassifier,
    TracerError,
    load_weights,
    resolve_tracer,
)
from petloop.tracer.mip import mips, orientation_codes, raw_mips
from petloop.tracer.train import TracerTrainConfig, evaluate, load_examples, train_classifier

runner = CliRunner()
SMALL = dict(shape=(48, 48, 64), spacing=(4.0, 4.0, 6.0))


@pytest.mark.parametrize("direction", [
    (1, 0, 0, 0, 1, 0, 0, 0, 1),  # LPS identity: codes L, P, S
    (-1, 0, 0, 0, -1, 0, 0, 0, 1),  # codes R, A, S
    (1, 0, 0, 0, 1, 0, 0, 0, -1),  # codes L, P, I
])
def test_orientation_codes_match_nibabel(tmp_path, direction):
    vol = Volume(np.zeros((4, 5, 6), np.float32), (2, 2, 3), (1, 2, 3), direction)
    path = write_volume(vol, tmp_path / "pet.nii.gz")
    assert orientation_codes(vol) == nib.aff2axcodes(nib.load(str(path)).affine)


@pytest.mark.parametrize(("direction", "flip_i"), [
    ((1, 0, 0, 0, 1, 0, 0, 0, 1), False),
    ((-1, 0, 0, 0, -1, 0, 0, 0, 1), True),
])
def test_hot_spots_appear_where_they_must(direction, flip_i):
    shape = (30, 20, 40)  # i, j, k
    arr = np.zeros(shape, np.float32)
    arr[5, 3, 30] = 10.0  # near the head, on one side
    arr[20, 15, 4] = 6.0  # near the feet, on the other side
    vol = Volume(arr, (2, 2, 3), (0, 0, 0), direction)
    cor, sag = raw_mips(vol)
    assert cor.shape == (40, 30) and sag.shape == (40, 20)  # (z, x) and (z, y)
    i = (29 - 5) if flip_i else 5
    assert np.unravel_index(np.argmax(cor), cor.shape) == (40 - 1 - 30, i)  # head on top
    j = 3 if flip_i else 20 - 1 - 3  # flipped to anterior first unless already A
    assert np.unravel_index(np.argmax(sag), sag.shape) == (40 - 1 - 30, j)
    cor_t, sag_t = mips(vol)
    assert cor_t.shape == (1, 224, 224) and sag_t.shape == (1, 224, 224)
    r, c = np.unravel_index(int(torch.argmax(cor_t)), (224, 224))
    assert abs(r - (9 + 0.5) * 224 / 40) < 6 and abs(c - (i + 0.5) * 224 / 30) < 8


def test_published_state_dict_keys_load_strictly():
    model = MipClassifier()
    sd = model.state_dict()
    assert sd["model_cor.conv1.weight"].shape == (64, 1, 7, 7)
    assert sd["model_sag.conv1.weight"].shape == (64, 1, 7, 7)
    assert sd["linear.0.weight"].shape == (512, 1024)
    assert sd["linear.2.running_mean"].shape == (512,)
    assert sd["linear.4.weight"].shape == (128, 512)
    assert sd["linear.5.weight"].shape == (128,)
    assert sd["linear.7.weight"].shape == (1, 128)
    assert not any(".fc." in k for k in sd)
    published = {k: torch.randn(v.shape) if v.is_floating_point() else v for k, v in sd.items()}
    load_weights(MipClassifier(), published)
    with pytest.raises(TracerError, match=r"1 missing key\(s\) \['linear.7.bias'\], 1 unexpected"):
        bad = dict(published)
        bad["linear.8.bias"] = bad.pop("linear.7.bias")
        load_weights(MipClassifier(), bad)


def test_bad_pet_and_weights(tmp_path):
    clf = TracerClassifier(MipClassifier().state_dict())
    with pytest.raises(TracerError, match="NaN or infinite"):
        clf.predict(Volume(np.full((4, 4, 4), np.nan, np.float32)))
    with pytest.raises(TracerError, match="no positive voxel"):
        clf.predict(Volume(np.zeros((4, 4, 4), np.float32)))
    with pytest.raises(TracerError, match="no such tracer classifier weights"):
        TracerClassifier(tmp_path / "none.pt")
    pet = Volume(np.ones((8, 8, 8), np.float32))
    assert resolve_tracer("psma", pet, None).tracer == "psma"
    with pytest.raises(TracerError, match="no tracer classifier weights"):
        resolve_tracer("auto", pet, None)


def test_phantom_training_separates_the_tracers(tmp_path):
    write_phantoms(PhantomConfig(seed=3, tracer="mixed", **SMALL), tmp_path / "train", 24)
    write_phantoms(PhantomConfig(seed=4, tracer="mixed", **SMALL), tmp_path / "test", 16)
    train = load_examples(tmp_path / "train")
    model, history, (tr, val) = train_classifier(
        train, TracerTrainConfig(epochs=6, patience=3, lr=5e-4, seed=1))
    assert len(val) == 4 and {e.label for e in val} == {0, 1}
    loss, acc = evaluate(model, load_examples(tmp_path / "test"), torch.device("cpu"))
    assert acc >= 0.9, history


def test_tracer_commands(tmp_path):
    write_phantoms(PhantomConfig(seed=5, tracer="mixed", **SMALL), tmp_path / "data", 6)
    out = tmp_path / "w.pt"
    result = runner.invoke(app, ["tracer", "train", "--data", str(tmp_path / "data"), "--out",
                                 str(out), "--epochs", "1", "--half"])
    assert result.exit_code == 0, result.output
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["train_cases"]["fdg"] + info["val_cases"]["fdg"] == 3
    assert torch.load(out)["linear.0.weight"].dtype == torch.float16
    pet = next((tmp_path / "data").glob("*/*/SUV.nii.gz"))
    result = runner.invoke(app, ["tracer", "predict", "--pet", str(pet), "--weights", str(out),
                                 "--json"])
    assert result.exit_code == 0, result.output
    pred = json.loads(result.output)
    assert pred["tracer"] in ("fdg", "psma") and 0.5 <= pred["probability"] <= 1
