from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from petloop.inference.routing import birth_routing
from petloop.io.volume import Volume
from petloop.nnunet.dataset import BuildConfig, build_dataset
from petloop.nnunet.paths import NnunetPaths
from petloop.nnunet.train import TrainConfig, TrainOptions, train
from petloop.phantom import PhantomConfig, generate_case, write_phantoms
from petloop.tracer.classifier import MipClassifier


def pytest_addoption(parser):
    parser.addoption("--screenshots", default=None,
                     help="folder to keep the viewer test's screenshots in")


SMALL = (48, 48, 64)
SMALL_SPACING = (4.0, 4.0, 6.0)
#: small test grids are crops of an adult body (phantoms are never shrunk to fit a grid): from
#: 300 mm below the vertex (mid chest) down 384 mm, 192 mm across the middle of the trunk
TRUNK_TOP = 300.0


@pytest.fixture(scope="session")
def small_config() -> PhantomConfig:
    return PhantomConfig(seed=11, tracer="mixed", shape=SMALL, spacing=SMALL_SPACING,
                         top_mm=TRUNK_TOP, negative_fraction=0.0, lesions=(3, 6))


@pytest.fixture(scope="session")
def small_cases(small_config):
    return [generate_case(small_config, i).case for i in range(2)]


@pytest.fixture
def geometry_volume() -> Volume:
    rng = np.random.default_rng(0)
    arr = rng.normal(size=(7, 5, 4)).astype(np.float32)
    # float32-representable geometry, oblique direction
    c, s = np.float32(np.cos(0.3)), np.float32(np.sin(0.3))
    direction = (float(c), float(-s), 0.0, float(s), float(c), 0.0, 0.0, 0.0, 1.0)
    return Volume(arr, (2.03125, 1.5, 3.0), (-401.5, 12.25, -1000.0), direction)


NN_SHAPE, NN_SPACING = (48, 48, 64), (4.0, 4.0, 6.0)
QUICK = TrainOptions(epochs=1, iterations=2, val_iterations=1)


@pytest.fixture(scope="session")
def work(tmp_path_factory):
    """Five small phantoms built into a lesion dataset and a CT-only organ dataset."""
    root = tmp_path_factory.mktemp("nnunet")
    cfg = PhantomConfig(seed=21, tracer="fdg", shape=NN_SHAPE, spacing=NN_SPACING,
                        top_mm=TRUNK_TOP, negative_fraction=0.2, lesions=(2, 4))
    write_phantoms(cfg, root / "phantoms", 5)
    paths = NnunetPaths.under(root)  # the folders `--workdir root` names
    lesions = build_dataset(root / "phantoms", paths, BuildConfig(901, "Tiny"))
    organs = build_dataset(root / "phantoms", paths,
                           BuildConfig(902, "TinyOrgans", task="organs",
                                       plans_from=f"Dataset901_Tiny/{lesions.plans_identifier}"))
    os.environ["nnUNet_n_proc_DA"] = "0"  # training data loading in-process
    return root, paths, lesions, organs


@pytest.fixture(scope="session")
def trained(work):
    root, paths, lesions, organs = work
    out = {}
    plans = lesions.plans_identifier
    pre = train(TrainConfig(902, "Dataset902_TinyOrgans", "pretrain", plans=plans,
                            options=QUICK), paths)
    out["pretrain"] = pre
    ckpt = str(pre / "checkpoint_final.pth")
    for recipe in ("v0", "v2", "v3", "v4"):
        opts = TrainOptions(**{**QUICK.__dict__, "pretrained": ckpt if recipe != "v0" else None})
        out[recipe] = train(TrainConfig(901, "Dataset901_Tiny", recipe, plans=plans,
                                        options=opts), paths)
    out["scribbles"] = train(TrainConfig(901, "Dataset901_Tiny", "scribbles", plans=plans,
                                         options=TrainOptions(**{**QUICK.__dict__,
                                                                 "pretrained": ckpt})), paths)
    v0 = str(out["v0"] / "checkpoint_final.pth")
    out["v1"] = train(TrainConfig(901, "Dataset901_Tiny", "v1", plans=plans,
                                  options=TrainOptions(**{**QUICK.__dict__, "pretrained": v0})),
                      paths)
    return out


@pytest.fixture(scope="session")
def model_set(trained, tmp_path_factory):
    root = tmp_path_factory.mktemp("modelset")
    torch.save(MipClassifier().state_dict(), root / "tracer_classifier.pt")
    manifest = {
        "name": "tiny",
        "tracer_classifier": "tracer_classifier.pt",
        "suv_threshold": {"fdg": 1.5, "psma": 1.0},
        "models": {
            "fdg_v4": {"folder": str(trained["v4"].parent), "folds": ["all"]},
            "fdg_v3": {"folder": str(trained["v3"].parent), "folds": ["all"]},
            "psma_v2": {"folder": str(trained["v2"].parent), "folds": ["all"]},
        },
        "routing": birth_routing("fdg_v4", "fdg_v3", "psma_v2"),
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root
