"""nnU-Net integration: dataset build, click channels, recipes, fine-tuning, compatibility."""

from __future__ import annotations

import functools
import json
import pickle
from pathlib import Path

import blosc2
import numpy as np
import pytest
import torch

from petloop.clicks.schedules import ClickSchedule, ScheduleError
from petloop.inference.engine import Engine
from petloop.io.clicks import Clicks
from petloop.io.layouts import find_cases
from petloop.nnunet.adapter import NetworkAdapter
from petloop.nnunet.clickspace import (
    ClickChannels,
    ClickEncoding,
    ClickSource,
    click_encoding,
    from_preprocessed,
    to_preprocessed,
)
from petloop.nnunet.pretrained import CheckpointMismatch, load_pretrained
from petloop.nnunet.train import TrainConfig, TrainingError, TrainOptions, train

REFERENCE = Path(__file__).resolve().parent / "data"  # public reference files (README there)
SHAPE, SPACING = (48, 48, 64), (4.0, 4.0, 6.0)
QUICK = TrainOptions(epochs=1, iterations=2, val_iterations=1)


def _cases(built):
    data = built.preprocessed / f"{built.plans_identifier}_3d_fullres"
    return sorted(p.name[:-4] for p in data.glob("*.pkl")), data


def test_build_writes_raw_preprocessed_clicks_and_organs(work):
    root, paths, lesions, organs = work
    assert lesions.cases == 5 and lesions.with_organs == 5 and lesions.simulated_clicks == 5
    raw = json.loads((lesions.raw / "dataset.json").read_text())
    assert raw["channel_names"] == {"0": "CT", "1": "PET"}
    plans = json.loads((lesions.preprocessed / f"{lesions.plans_identifier}.json").read_text())
    conf = plans["configurations"]["3d_fullres"]
    assert conf["normalization_schemes"] == ["CTNormalization", "CTNormalization"]
    assert max(conf["architecture"]["arch_kwargs"]["features_per_stage"]) <= 128
    ids, data = _cases(lesions)
    organ_dir = lesions.preprocessed / "petloop" / "organs" / data.name
    for case in ids:
        seg = blosc2.open(str(data / f"{case}_seg.b2nd"), mode="r")[:]
        org = blosc2.open(str(organ_dir / f"{case}.b2nd"), mode="r")[:]
        assert org.shape == seg.shape[1:] and set(np.unique(org)) <= set(range(11))
        assert (org == 3).any()  # liver
    assert json.loads((organs.raw / "dataset.json").read_text())["labels"]["head_glands"] == 10


def test_a_click_on_a_lesion_lands_on_it_after_preprocessing(work):
    _, _, lesions, _ = work
    ids, data = _cases(lesions)
    clicks_dir = lesions.preprocessed / "petloop" / "clicks"
    tf = json.loads((lesions.preprocessed / f"{lesions.plans_identifier}.json")
                    .read_text())["transpose_forward"]
    checked = 0
    for case in ids:
        clicks = Clicks(**json.loads((clicks_dir / f"{case}_clicks.json").read_text()))
        props = pickle.loads((data / f"{case}.pkl").read_bytes())
        seg = blosc2.open(str(data / f"{case}_seg.b2nd"), mode="r")[:][0]
        pts = to_preprocessed(clicks.tumor, props, tf, seg.shape)
        for p in pts:
            assert seg[tuple(p)] == 1
            checked += 1
    assert checked >= 10


def test_coordinate_map_through_transpose_crop_and_resampling():
    props = {"bbox_used_for_cropping": [[2, 30], [5, 45], [0, 20]],
             "shape_after_cropping_and_before_resampling": [28, 40, 20],
             "shape_after_resampling": [56, 40, 10]}
    tf = (2, 0, 1)
    rng = np.random.default_rng(0)
    # transposed axes (0, 1, 2) are array axes (2, 0, 1) = (i, k, j); points inside the crop
    a, b, c = rng.integers(2, 30, 30), rng.integers(5, 45, 30), rng.integers(0, 20, 30)
    ijk = np.stack([a, c, b], axis=1)
    pre = to_preprocessed(ijk, props, tf, props["shape_after_resampling"])
    assert pre.min() >= 0 and np.all(pre < np.array(props["shape_after_resampling"]))
    back = from_preprocessed(pre, props, tf)
    # the up-sampled axis is exact, the down-sampled one within a voxel of the original grid
    assert np.abs(back - ijk).max() <= 1
    assert np.array_equal(back[:, 0], ijk[:, 0])  # i was up-sampled twofold: exact


def test_click_channels_render_the_patch_only():
    image = np.random.default_rng(1).random((2, 40, 30, 20)).astype(np.float32)
    clicks = Clicks(((5, 5, 5), (20, 10, 3)), ((39, 29, 19),))
    enc = ClickEncoding()
    arr = ClickChannels(image, clicks, enc)
    dense = np.asarray(arr)
    assert dense.shape == (4, 40, 30, 20) and dense[2].max() >= 1.0  # peak 1, plus reflections
    patch = arr[(slice(None), slice(3, 27), slice(0, 16), slice(2, 20))]
    np.testing.assert_array_equal(patch, dense[:, 3:27, 0:16, 2:20])


def test_drawn_click_counts_follow_the_schedule(work):
    _, _, lesions, _ = work
    ids, data = _cases(lesions)
    case = next(c for c in ids if len(json.loads(
        (lesions.preprocessed / "petloop" / "clicks" / f"{c}_clicks.json").read_text())["tumor"])
        == 10)
    props = pickle.loads((data / f"{case}.pkl").read_bytes())
    shape = blosc2.open(str(data / f"{case}.b2nd"), mode="r").shape[1:]
    schedule = ClickSchedule.get("birth_v4")
    source = ClickSource(lesions.preprocessed / "petloop" / "clicks", ClickEncoding(), schedule,
                         (0, 1, 2))
    np.random.seed(0)  # noqa: NPY002 - the workers' global state, as in training
    n = 3000
    counts = np.bincount([len(source.sample(case, props, shape, None).tumor) for _ in range(n)],
                         minlength=11)
    expected = n * np.asarray(schedule.probs)
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 29.6, counts


def test_drawn_scribbles_follow_the_schedule_and_the_pool(work):
    from petloop.clicks.scribble_pool import ScribblePool
    from petloop.nnunet.clickspace import ScribbleSource, to_preprocessed

    _, _, lesions, _ = work
    ids, data = _cases(lesions)
    pools = lesions.preprocessed / "petloop" / "scribbles"
    assert sorted(p.name for p in pools.glob("*_scribbles.json")) == \
        sorted(f"{c}_scribbles.json" for c in ids)
    case = next(c for c in ids if json.loads((pools / f"{c}_scribbles.json").read_text())
                ["tumor"])
    pool = ScribblePool.from_json(json.loads((pools / f"{case}_scribbles.json").read_text()))
    props = pickle.loads((data / f"{case}.pkl").read_bytes())
    shape = blosc2.open(str(data / f"{case}.b2nd"), mode="r").shape[1:]
    schedule = ClickSchedule.get("autopet5")
    source = ScribbleSource(pools, ClickEncoding(encoding="binary"), schedule, (0, 1, 2))
    every = {kind: {tuple(p) for s in getattr(pool, kind)
                    for p in to_preprocessed(s.points, props, (0, 1, 2), shape)}
             for kind in ("tumor", "background")}
    np.random.seed(1)  # noqa: NPY002 - the workers' global state, as in training
    for _ in range(200):
        clicks = source.sample(case, props, shape, None)
        assert {tuple(p) for p in clicks.tumor} <= every["tumor"]
        assert {tuple(p) for p in clicks.background} <= every["background"]
        assert all(0 <= c < n for p in clicks.tumor + clicks.background
                   for c, n in zip(p, shape, strict=True))
    # validation: the same strokes for a case every time
    assert source.sample(case, props, shape, 5) == source.sample(case, props, shape, 5)
    assert len(source.sample(case, props, shape, 0)) == 0


def test_intensity_augmentation_leaves_click_channels_alone():
    from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform

    from petloop.nnunet.augment import CTMisalignment, ImageChannelsOnly

    img = torch.rand(4, 16, 16, 16)
    t = ImageChannelsOnly(GaussianNoiseTransform(noise_variance=(0.5, 0.5)), 2)
    out = t(image=img.clone(), segmentation=torch.zeros(1, 16, 16, 16))["image"]
    assert not torch.equal(out[:2], img[:2])
    assert torch.equal(out[2:], img[2:])
    shifted = CTMisalignment(p_rotation=0, p_shift=1.0)(image=img.clone())["image"]
    assert torch.equal(shifted[1:], img[1:])


def test_every_recipe_trains_and_predicts_through_nnunet(work, trained):
    root, paths, _, _ = work
    case = find_cases(root / "phantoms")[0].load()
    for recipe in ("v0", "v1", "v2", "v3", "v4", "scribbles"):
        folder = trained[recipe]
        assert (folder / "checkpoint_final.pth").is_file()
        model = folder.parent
        ds = json.loads((model / "dataset.json").read_text())
        assert click_encoding(ds).mode == "fixed"
        assert click_encoding(ds).encoding == ("binary" if recipe == "scribbles" else "gaussian")
        mask = _predict(model, case, Clicks(((24, 24, 32),), ()))
        assert mask.same_grid(case.pet) and set(np.unique(mask.array)) <= {0, 1}
    log = "".join(p.read_text() for p in trained["v4"].glob("training_log_*.txt"))
    assert "expanded" in log and "organ-head tensors from the segmentation head" in log
    options = json.loads((trained["v1"] / "petloop_train.json").read_text())["options"]
    assert options["pretrained"].endswith("checkpoint_final.pth")


def test_bad_training_input_fails_before_training(work, tmp_path):
    _, paths, lesions, _ = work
    plans = lesions.plans_identifier
    with pytest.raises(TrainingError, match="unknown recipe 'v9'"):
        train(TrainConfig(901, "Dataset901_Tiny", "v9", plans=plans), paths)
    with pytest.raises(ScheduleError, match="sum to"):
        train(TrainConfig(901, "Dataset901_Tiny", "v4", plans=plans,
                          options=TrainOptions(schedule="0.5,0.5,0.5,0,0,0,0,0,0,0,0")), paths)
    with pytest.raises(TrainingError, match="no such checkpoint"):
        train(TrainConfig(901, "Dataset901_Tiny", "v2", plans=plans,
                          options=TrainOptions(pretrained=str(tmp_path / "x.pth"))), paths)
    with pytest.raises(TrainingError, match="needs organ labels"):
        train(TrainConfig(902, "Dataset902_TinyOrgans", "v4", plans=plans), paths)
    pools = paths.preprocessed / "Dataset901_Tiny" / "petloop" / "scribbles"
    pools.rename(pools.with_name("scribbles_away"))
    try:
        with pytest.raises(TrainingError, match="rebuild the dataset"):
            train(TrainConfig(901, "Dataset901_Tiny", "scribbles", plans=plans), paths)
    finally:
        pools.with_name("scribbles_away").rename(pools)
    with pytest.raises(TrainingError, match="--time-budget needs a single device"):
        train(TrainConfig(901, "Dataset901_Tiny", "v4", plans=plans, num_gpus=2,
                          options=TrainOptions(time_budget=60)), paths)
    # a checkpoint of another architecture is refused before any trainer is made
    other = {"network_weights": _tiny_resenc(1, organ=False).state_dict()}
    torch.save(other, tmp_path / "other.pth")
    with pytest.raises(TrainingError, match="does not fit this network"):
        train(TrainConfig(901, "Dataset901_Tiny", "v2", plans=plans,
                          options=TrainOptions(pretrained=str(tmp_path / "other.pth"))), paths)
    # a dataset whose images already hold click heatmaps would get two more click channels
    declared = paths.preprocessed / "Dataset901_Tiny" / "dataset.json"
    original = declared.read_text()
    ds = json.loads(original)
    ds["channel_names"] = {**ds["channel_names"], "2": "FG", "3": "BG"}
    try:
        declared.write_text(json.dumps(ds))
        with pytest.raises(TrainingError, match="declares click channels 2 and 3"):
            train(TrainConfig(901, "Dataset901_Tiny", "v4", plans=plans), paths)
    finally:
        declared.write_text(original)


def _tiny_resenc(input_channels, organ):
    from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet

    from petloop.nnunet.network import ResidualEncoderUNetOrgan

    cls = ResidualEncoderUNetOrgan if organ else ResidualEncoderUNet
    return cls(input_channels, 3, [8, 16, 32], torch.nn.Conv3d, 3, [1, 2, 2], [1, 1, 1], 2,
               [1, 1], conv_bias=True, norm_op=torch.nn.InstanceNorm3d,
               norm_op_kwargs={"affine": True}, nonlin=torch.nn.LeakyReLU,
               deep_supervision=False)


def test_channel_expansion_and_mismatch():
    single = _tiny_resenc(1, organ=False)
    net = _tiny_resenc(4, organ=True)
    report = load_pretrained(net, {"network_weights": single.state_dict()})
    w1 = single.state_dict()["encoder.stem.convs.0.conv.weight"]
    w4 = net.state_dict()["encoder.stem.convs.0.conv.weight"]
    assert torch.equal(w4[:, 0], w1[:, 0]) and torch.equal(w4[:, 1], w1[:, 0])
    assert not w4[:, 2:].any()
    assert "encoder.stem.convs.0.conv.weight" in report.expanded
    other = _tiny_resenc(4, organ=False)
    other.load_state_dict({**other.state_dict(), "decoder.seg_layers.0.weight":
                           torch.zeros_like(other.state_dict()["decoder.seg_layers.0.weight"])})
    wrong = {k: v for k, v in single.state_dict().items() if "stages.1" not in k}
    with pytest.raises(CheckpointMismatch, match="does not fit this network"):
        load_pretrained(_tiny_resenc(4, organ=True), {"network_weights": wrong})


def test_published_trainers_build_the_published_networks():
    from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from petloop.nnunet.trainers import autoPET3_Trainer, nnUNetTrainer_finetune

    pm = PlansManager(str(REFERENCE / "nnUNetResEncUNetLPlansMultiTalent.json"))
    cm = pm.get_configuration("3d_fullres")
    organ = autoPET3_Trainer.build_network_architecture(pm, cm, 4, 2, True)
    plain = nnUNetTrainer_finetune.build_network_architecture(pm, cm, 4, 2, True)
    kwargs = dict(cm.network_arch_init_kwargs)
    for k in cm.network_arch_init_kwargs_req_import:
        if kwargs[k] is not None:
            import pydoc

            kwargs[k] = pydoc.locate(kwargs[k])
    reference = ResidualEncoderUNet(4, num_classes=2, deep_supervision=True, **kwargs)
    ref_keys = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in plain.state_dict().items()} == ref_keys
    organ_keys = {k: tuple(v.shape) for k, v in organ.state_dict().items()}
    extra = {k: s for k, s in organ_keys.items() if k not in ref_keys}
    assert {k: s for k, s in organ_keys.items() if k in ref_keys} == ref_keys
    feats = [32, 64, 128, 256, 320]  # decoder stage widths, lowest resolution first: 320..32
    expected = {}
    for i, c in enumerate(reversed(feats)):
        expected[f"decoder.organ_seg_layers.{i}.weight"] = (11, c, 1, 1, 1)
        expected[f"decoder.organ_seg_layers.{i}.bias"] = (11,)
    assert extra == expected
    assert organ.state_dict()["encoder.stem.convs.0.conv.weight"].shape[1] == 4


def test_a_published_style_model_folder_predicts_in_petloop(tmp_path, small_cases):
    """A model folder as BIRTH publishes it (autoPET3_Trainer, channels CT/PET/FG/BG, raw
    Gaussian click channels) loads through nnU-Net's predictor and predicts."""
    case = small_cases[0]
    folder = tmp_path / "autoPET3_Trainer__ResEncL_Plan__3d_fullres"
    arch = {"n_stages": 3, "features_per_stage": [8, 16, 32],
            "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * 3,
            "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]], "n_blocks_per_stage": [1, 1, 1],
            "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
            "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True}}
    stats = {"max": 1000.0, "mean": 50.0, "median": 40.0, "min": -1000.0,
             "percentile_00_5": -900.0, "percentile_99_5": 900.0, "std": 200.0}
    plans = {
        "dataset_name": "Dataset723_AutoPET", "plans_name": "ResEncL_Plan",
        "original_median_spacing_after_transp": list(SPACING[::-1]),
        "original_median_shape_after_transp": list(SHAPE[::-1]),
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2], "experiment_planner_used": "nnUNetPlannerResEncL",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {str(c): stats for c in range(4)},
        "configurations": {"3d_fullres": {
            "data_identifier": "x", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": [32, 32, 32], "median_image_size_in_voxels":
            list(SHAPE[::-1]), "spacing": list(SPACING[::-1]),
            "normalization_schemes": ["CTNormalization", "ZScoreNormalization",
                                      "ZScoreNormalization", "ZScoreNormalization"],
            "use_mask_for_norm": [False] * 4,
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0,
                                          "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0,
                                         "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None},
            "architecture": {"network_class_name":
                             "dynamic_network_architectures.architectures.unet."
                             "ResidualEncoderUNet", "arch_kwargs": arch,
                             "_kw_requires_import": ["conv_op", "norm_op", "dropout_op",
                                                     "nonlin"]},
            "batch_dice": False}}}
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT", "1": "PET", "2": "FG", "3": "BG"},
        "labels": {"background": 0, "tumor": 1}, "numTraining": 1, "file_ending": ".nii.gz"}))
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from petloop.nnunet.trainers import autoPET3_Trainer

    pm = PlansManager(plans)
    net = autoPET3_Trainer.build_network_architecture(pm, pm.get_configuration("3d_fullres"), 4,
                                                      2, False)
    torch.save({"network_weights": net.state_dict(), "trainer_name": "autoPET3_Trainer",
                "inference_allowed_mirroring_axes": (0, 1, 2),
                "init_args": {"configuration": "3d_fullres"}},
               folder / "fold_0" / "checkpoint_final.pth")
    adapter = NetworkAdapter(folder, folds=(0,))
    assert adapter.encoding.mode == "published"
    engine = Engine(case.ct, case.pet)
    clicks = Clicks(((10, 10, 10),), ((20, 20, 20),))
    first = engine.step("published", adapter, clicks)
    assert first.mask.shape == case.pet.itk_array().shape
    # its click channels are normalised per image: every step is a full pass, and says so
    again = engine.step("published", adapter, Clicks(clicks.tumor, ()))
    assert not again.choice.incremental and again.choice.tiles == again.choice.tiles_total
    assert "normalised per image" in again.choice.describe()
    engine.close()


def _predict(model_folder, case, clicks):
    """One prediction of a model folder through the engine (no threshold)."""
    engine = Engine(case.ct, case.pet)
    work = engine.step("m", NetworkAdapter(model_folder), clicks)
    engine.close()
    return case.pet.with_itk_array(work.mask.copy())


def test_totalsegmentator_mapping_and_missing_tool(tmp_path):
    from petloop.nnunet.organs import OrgansError, map_totalsegmentator, run_totalsegmentator

    total = np.array([[[0, 1, 2, 3, 5, 21, 10, 14, 90, 51, 6, 22, 4, 7, 50]]])
    glands = np.array([[[7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6, 10, 9]]])
    out = map_totalsegmentator(total, glands)
    assert out.tolist() == [[[10, 1, 2, 2, 3, 4, 5, 5, 6, 7, 8, 9, 0, 10, 10]]]
    try:
        import totalsegmentator  # noqa: F401
    except ImportError:
        with pytest.raises(OrgansError, match="TotalSegmentator is not installed"):
            run_totalsegmentator(tmp_path / "ct.nii.gz", tmp_path / "o.nii.gz")


def test_dataset_build_and_train_commands(work, tmp_path):
    """The command line as the README shows it (small: five phantoms, two iterations)."""
    from typer.testing import CliRunner

    from petloop.cli import app

    root = work[0]
    runner = CliRunner()
    result = runner.invoke(app, ["dataset", "build", "--data", str(root / "phantoms"), "--id",
                                 "903", "--name", "Cli", "--workdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "built Dataset903_Cli: 5 cases (5 with organ labels, 5 with simulated clicks)" in \
        result.output.replace("\n", " ")
    result = runner.invoke(app, ["train", "--dataset", "903", "--recipe", "v4", "--epochs", "3",
                                 "--iters", "2", "--val-iters", "1", "--time-budget", "1",
                                 "--workdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    from petloop.cli.nnunet import nnunet_paths

    fold = next((nnunet_paths(tmp_path).results / "Dataset903_Cli").glob("*V4*/fold_all"))
    log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert "time budget 1 s: training ends after epoch 0 (of 3 requested)" in log
    ckpt = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["current_epoch"] == 1  # one epoch fitted in the budget, then the final checkpoint
    result = runner.invoke(app, ["train", "--dataset", "903", "--recipe", "v7", "--workdir",
                                 str(tmp_path)])
    assert result.exit_code == 2 and "unknown recipe 'v7'" in result.output


def test_phantoms_straight_to_preprocessed_data(work, tmp_path):
    """`dataset phantoms` gives exactly the arrays, labels, organ labels, clicks and properties
    that `dataset build --plans-from` gives through the written phantoms, and trains."""
    import pickle

    import blosc2
    from typer.testing import CliRunner

    from petloop.cli import app
    from petloop.nnunet.dataset import BuildConfig, build_dataset
    from petloop.nnunet.synthetic import build_generated_dataset
    from petloop.phantom.generate import PhantomConfig, phantom_case

    root, paths, lesions, _ = work
    plans = f"Dataset901_Tiny/{lesions.plans_identifier}"
    cfg = PhantomConfig.from_json(json.loads((root / "phantoms" / "phantom_config.json")
                                             .read_text()))
    from_files = paths.preprocessed / "Dataset905_TinyFiles"
    build_dataset(root / "phantoms", paths, BuildConfig(905, "TinyFiles", plans_from=plans))
    built = build_generated_dataset(functools.partial(phantom_case, cfg), 5, paths,
                                    BuildConfig(904, "TinySynth", plans_from=plans,
                                                num_processes=1))
    assert (built.cases, built.with_organs, built.simulated_clicks) == (5, 5, 5)
    ident = json.loads((built.preprocessed / f"{lesions.plans_identifier}.json").read_text())[
        "configurations"]["3d_fullres"]["data_identifier"]

    def arrays(base, case):
        def b2(p):
            return blosc2.open(str(p), mode="r")[:]
        props = pickle.loads((base / ident / f"{case}.pkl").read_bytes())
        return (b2(base / ident / f"{case}.b2nd"), b2(base / ident / f"{case}_seg.b2nd"),
                b2(base / "petloop" / "organs" / ident / f"{case}.b2nd"),
                json.loads((base / "petloop" / "clicks" / f"{case}_clicks.json").read_text()),
                props)

    cases = sorted(p.name[:-4] for p in (from_files / ident).glob("*.pkl"))
    assert cases == sorted(p.name[:-4] for p in (built.preprocessed / ident).glob("*.pkl"))
    assert len(cases) == 5
    for case in cases:
        a, b = arrays(from_files, case), arrays(built.preprocessed, case)
        for x, y in zip(a[:3], b[:3], strict=True):
            assert x.shape == y.shape and np.array_equal(x, y), case
        assert a[3] == b[3]
        pa, pb = a[4], b[4]
        for key in ("bbox_used_for_cropping", "shape_before_cropping",
                    "shape_after_cropping_and_before_resampling"):
            assert np.array_equal(pa[key], pb[key]), key
        assert np.allclose(pa["spacing"], pb["spacing"])
        for key, locations in pa["class_locations"].items():
            assert np.array_equal(locations, pb["class_locations"][key])
    # the command line, with worker processes, then a training epoch on what it wrote
    runner = CliRunner()
    result = runner.invoke(app, ["dataset", "phantoms", "--config",
                                 str(root / "phantoms" / "phantom_config.json"), "--cases", "2",
                                 "--id", "906", "--plans-from", "Dataset901_Tiny/nope"])
    assert result.exit_code == 2 and "nope.json: no such plans" in result.output
    (tmp_path / "bad.json").write_text('{"tracer": "xray"}')
    result = runner.invoke(app, ["dataset", "phantoms", "--config", str(tmp_path / "bad.json"),
                                 "--cases", "2", "--id", "906", "--plans-from", plans])
    assert result.exit_code == 2 and "bad.json: not a phantom configuration" in result.output
    result = runner.invoke(app, ["dataset", "phantoms", "--config",
                                 str(root / "phantoms" / "phantom_config.json"), "--cases", "2",
                                 "--id", "906", "--name", "CliSynth", "--plans-from", plans,
                                 "--processes", "2", "--seed", "22", "--workdir", str(root)])
    assert result.exit_code == 0, result.output
    assert "built Dataset906_CliSynth: 2 phantoms (seed 22, 2 with organ labels)" in \
        result.output.replace("\n", " ")
    result = runner.invoke(app, ["train", "--dataset", "906", "--recipe", "v4", "--epochs", "1",
                                 "--iters", "1", "--val-iters", "1", "--workdir", str(root)])
    assert result.exit_code == 0, result.output


def _budgeted_run(epoch_seconds, requested, budget):
    """Simulate nnU-Net's loop with the budget check after every epoch."""
    from petloop.nnunet.trainers import epochs_within_budget

    total, elapsed, spans = requested, 0.0, []
    for epoch in range(requested):
        if epoch >= total:
            break
        elapsed += epoch_seconds[epoch]
        spans.append(epoch_seconds[epoch])
        total = epochs_within_budget(requested, epoch + 1, elapsed, spans[-5:], budget)
    return len(spans), elapsed


def test_time_budget_fits_the_epochs():
    from petloop.nnunet.trainers import epochs_within_budget

    # constant epochs: as many as fit, never more than requested, at least the one run
    for per, requested, budget in ((3.0, 1000, 450), (2.5, 10, 450), (7.0, 50, 5), (1.0, 4, 4)):
        done, elapsed = _budgeted_run([per] * requested, requested, budget)
        assert done == min(requested, max(1, int(budget // per)))
        assert elapsed <= max(budget, per)
    # uneven epochs: within the budget but for at most one epoch, and nearly filling it
    rng = np.random.default_rng(3)
    times = list(rng.uniform(2.0, 4.0, 500))
    done, elapsed = _budgeted_run(times, 500, 450)
    assert 450 - 2 * 4.0 <= elapsed <= 450 + 4.0 and done < 500
    assert epochs_within_budget(100, 10, 50.0, [], 60) == 100  # nothing measured yet
    assert epochs_within_budget(100, 10, 70.0, [5.0], 60) == 10  # over budget: stop now


def test_time_budget_counts_whole_epochs(monkeypatch):
    """The trainer's pace is measured from one epoch's start to the next, so nnU-Net's
    end-of-epoch work (log, progress plot, checkpoints) counts: the learning-rate schedule is
    fitted to the right number of epochs from the start, not cut short later."""
    from types import SimpleNamespace

    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    import petloop.nnunet.trainers as tr

    clock = [0.0]
    monkeypatch.setattr(tr.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(nnUNetTrainer, "on_train_start", lambda self: None)
    monkeypatch.setattr(nnUNetTrainer, "on_epoch_start", lambda self: None)
    trainer = object.__new__(tr.PetloopBase)
    trainer.petloop_options = SimpleNamespace(time_budget=60.0)
    trainer.num_epochs, trainer.current_epoch = 1000, 0
    trainer.lr_scheduler = SimpleNamespace(max_steps=1000)
    trainer.print_to_log_file = lambda *a: None
    trainer.on_train_start()
    schedules = []
    with pytest.raises(tr._BudgetSpent):
        while True:
            trainer.on_epoch_start()
            schedules.append(trainer.lr_scheduler.max_steps)
            clock[0] += 1.0  # training and validation
            clock[0] += 2.0  # nnU-Net's on_epoch_end
            trainer.current_epoch += 1
    assert trainer.current_epoch == 20 and clock[0] == 60.0
    assert set(schedules[1:]) == {20}  # fitted after the first epoch, never changed again


def test_organ_supervised_loss_parts_and_weight():
    from petloop.nnunet.trainers import OrganSupervisedLoss

    class Sum(torch.nn.Module):
        def forward(self, out, target):
            return sum(o.sum() * 0 + t.float().sum() for o, t in zip(out, target, strict=True))

    target = [torch.stack([torch.ones(2, 4, 4), 2 * torch.ones(2, 4, 4)], 1)]  # lesion 1, organ 2
    out = ([torch.zeros(2, 2, 4, 4)], [torch.zeros(2, 11, 4, 4)])
    loss = OrganSupervisedLoss(Sum(), Sum(), organ_weight=0.25)
    assert loss(out, target).item() == 32 + 0.25 * 64
    assert loss(out[0], target).item() == 32  # lesion output only: the lesion loss alone
