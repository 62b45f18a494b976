"""Build an nnU-Net dataset from any layout petloop reads, and plan and preprocess it.

``<nnUNet_raw>/DatasetXXX_Name`` gets CT (``_0000``) and PET (``_0001``) on the PET grid, the
lesion labels, petloop's ``organsTr`` (organ classes 1-10), ``clicksTr`` (the case's clicks, or
the official simulation of them), ``scribblesTr`` (the case's scribble pool for scribble
recipes, :mod:`petloop.clicks.scribble_pool`) and ``casesTr`` (tracer and other facts).
nnU-Net's fingerprint, planning and preprocessing then run in-process. Beside nnU-Net's
preprocessed data petloop keeps ``<nnUNet_preprocessed>/DatasetXXX_Name/petloop/``: the clicks
and scribble pools (original voxel indices) and the organ labels preprocessed exactly as nnU-Net
preprocessed the lesion labels (same transpose, crop and resampling).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from petloop.clicks.scribble_pool import scribble_pool
from petloop.clicks.simulate import simulate_clicks
from petloop.io.atomic import write_json_atomic
from petloop.io.layouts import Case, LayoutError, find_cases, write_case, write_nnunet_dataset_json
from petloop.io.organs import N_ORGAN_CLASSES, ORGAN_CLASSES
from petloop.io.volume import write_volume
from petloop.metrics.official import binarize
from petloop.nnunet.paths import NnunetPaths, dataset_name, planning_workers
from petloop.nnunet.plans import normalise_pet_like_ct, planner_class
from petloop.nnunet.trainers import clicks_folder, organ_folder, scribbles_folder


@dataclass(frozen=True)
class BuildConfig:
    """``task`` is ``lesions`` (CT, PET, lesion label, organs, clicks) or ``organs`` (CT alone
    with the organ label as target: single-channel pretraining). ``plans_from`` takes the plans
    of an already built dataset (``DatasetXXX_Name/plans_identifier``) instead of planning, so
    that a pretrained network has exactly the architecture it will be fine-tuned in."""

    dataset_id: int
    name: str
    planner: str = "cpu"
    configuration: str = "3d_fullres"
    num_processes: int = 2
    click_seed: int = 42
    task: str = "lesions"
    plans_from: str | None = None

    @property
    def folder_name(self) -> str:
        return dataset_name(self.dataset_id, self.name)


@dataclass(frozen=True)
class BuiltDataset:
    raw: Path
    preprocessed: Path
    plans_identifier: str
    configuration: str
    cases: int
    with_organs: int
    simulated_clicks: int


def prepare_case(case: Case, seed: int) -> tuple[Case, bool]:
    if case.label is None:
        raise LayoutError(f"case {case.case_id} has no lesion label; training needs one (an "
                          "empty label marks a negative control)")
    label = case.label.with_array(
        binarize(case.label.array, name=f"lesion label of {case.case_id}").astype(np.uint8))
    organs = None
    if case.organs is not None:
        arr = np.asarray(case.organs.array)
        if arr.min() < 0 or arr.max() > N_ORGAN_CLASSES:
            raise LayoutError(f"organ label of {case.case_id} holds values outside 0..10")
        organs = case.organs.with_array(arr.astype(np.uint8))
    clicks, simulated = case.clicks, False
    if clicks is None:
        clicks = simulate_clicks(label.array, case.pet.array, seed=seed)
        simulated = True
    pet = case.pet.with_array(np.asarray(case.pet.array, dtype=np.float32))
    ct = case.ct.with_array(np.asarray(case.ct.array, dtype=np.float32))
    return Case(case.case_id, ct, pet, label, organs, clicks, case.tracer, case.meta), simulated


def write_raw(source: str | Path, paths: NnunetPaths, config: BuildConfig,
              progress: Callable[[int, int], None] | None = None) -> tuple[Path, int, int, int]:
    if config.task not in ("lesions", "organs"):
        raise ValueError(f"unknown task {config.task!r}; use 'lesions' or 'organs'")
    files = find_cases(source)
    raw = paths.raw / config.folder_name
    if raw.exists():
        shutil.rmtree(raw)
    with_organs = simulated = 0
    for n, f in enumerate(files):
        case, sim = prepare_case(f.load(), config.click_seed)
        if config.task == "organs":
            if case.organs is None:
                raise LayoutError(f"case {case.case_id} has no organ label for the organs task")
            write_volume(case.ct, raw / "imagesTr" / f"{case.case_id}_0000.nii.gz")
            write_volume(case.organs, raw / "labelsTr" / f"{case.case_id}.nii.gz")
        else:
            write_case(case, raw, "nnunet")
            write_json_atomic(raw / "scribblesTr" / f"{case.case_id}_scribbles.json",
                              scribble_pool(case.label.array, case.pet.array).to_json(),
                              indent=None)
            simulated += sim
        with_organs += case.organs is not None
        if progress:
            progress(n + 1, len(files))
    if config.task == "organs":
        labels = {"background": 0, **{name: idx for idx, name in ORGAN_CLASSES.items()}}
        write_nnunet_dataset_json(raw, len(files), config.name, channel_names={"0": "CT"},
                                  labels=labels)
    else:
        write_nnunet_dataset_json(raw, len(files), config.name)
    return raw, len(files), with_organs, simulated


def plan_and_preprocess(paths: NnunetPaths, config: BuildConfig) -> str:
    """nnU-Net's fingerprint, planning and preprocessing, in-process."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
    )

    extract_fingerprint_dataset(config.dataset_id, num_processes=config.num_processes,
                                check_dataset_integrity=True, clean=True, verbose=False)
    with planning_workers():
        return _plan_and_preprocess(paths, config)


def _plan_and_preprocess(paths: NnunetPaths, config: BuildConfig) -> str:
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        plan_experiment_dataset,
        preprocess_dataset,
    )

    if config.plans_from:
        from nnunetv2.experiment_planning.plans_for_pretraining.move_plans_between_datasets import (  # noqa: E501
            move_plans_between_datasets,
        )

        source, _, plans_identifier = config.plans_from.partition("/")
        if not (paths.preprocessed / source / f"{plans_identifier}.json").is_file():
            raise LayoutError(f"{paths.preprocessed / source / plans_identifier}.json: no such "
                              "plans to take over")
        move_plans_between_datasets(source, config.dataset_id, plans_identifier)
        shutil.copyfile(paths.raw / config.folder_name / "dataset.json",
                        paths.preprocessed / config.folder_name / "dataset.json")
    else:
        _, plans_identifier = plan_experiment_dataset(config.dataset_id,
                                                      planner_class(config.planner))
    plans_file = paths.preprocessed / config.folder_name / f"{plans_identifier}.json"
    plans = normalise_pet_like_ct(json.loads(plans_file.read_text()))
    write_json_atomic(plans_file, plans)
    preprocess_dataset(config.dataset_id, plans_identifier, (config.configuration,),
                       (config.num_processes,), verbose=False)
    return plans_identifier


def preprocess_organs(paths: NnunetPaths, config: BuildConfig, plans_identifier: str) -> int:
    """Organ labels through the lesion labels' transpose, crop and resampling."""
    import blosc2
    from batchgenerators.utilities.file_and_folder_operations import load_pickle
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    base = paths.preprocessed / config.folder_name
    pm = PlansManager(str(base / f"{plans_identifier}.json"))
    cm = pm.get_configuration(config.configuration)
    data_dir = base / cm.data_identifier
    out_dir = organ_folder(base, cm.data_identifier)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    n = 0
    for organ_file in sorted((paths.raw / config.folder_name / "organsTr").glob("*.nii.gz")):
        case = organ_file.name[: -len(".nii.gz")]
        props = load_pickle(str(data_dir / f"{case}.pkl"))
        shape = blosc2.open(str(data_dir / f"{case}.b2nd"), mode="r").shape[1:]
        seg, _ = SimpleITKIO().read_seg(str(organ_file))
        nnUNetDatasetBlosc2.save_seg(resample_organs(seg, props, shape, pm, cm),
                                     str(out_dir / case))
        n += 1
    return n


def resample_organs(seg: np.ndarray, props: dict, shape, pm, cm) -> np.ndarray:
    """An organ label ``(1, z, y, x)`` as nnU-Net preprocessed the case's lesion label: its
    transpose, the crop in ``props`` and the resampling to ``shape``."""
    tf = list(pm.transpose_forward)
    seg = seg.transpose([0, *[i + 1 for i in tf]])
    bbox = props["bbox_used_for_cropping"]
    seg = seg[(slice(None), *[slice(int(a), int(b)) for a, b in bbox])]
    spacing = [props["spacing"][i] for i in tf]
    seg = cm.resampling_fn_seg(seg, shape, spacing, cm.spacing)
    return np.asarray(seg[0], dtype=np.int8)


def build_dataset(source: str | Path, paths: NnunetPaths, config: BuildConfig,
                  progress: Callable[[str, int, int], None] | None = None) -> BuiltDataset:
    with paths.activated():
        return _build_dataset(source, paths, config, progress)


def _build_dataset(source, paths: NnunetPaths, config: BuildConfig, progress) -> BuiltDataset:
    raw, n, with_organs, simulated = write_raw(
        source, paths, config, (lambda i, t: progress("writing cases", i, t)) if progress else None)
    if progress:
        progress("planning and preprocessing (nnU-Net)", 0, 1)
    plans_identifier = plan_and_preprocess(paths, config)
    if progress:
        progress("planning and preprocessing (nnU-Net)", 1, 1)
    base = paths.preprocessed / config.folder_name
    for folder, raw_folder, pattern in ((clicks_folder(base), "clicksTr", "*_clicks.json"),
                                        (scribbles_folder(base), "scribblesTr",
                                         "*_scribbles.json")):
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for f in sorted((raw / raw_folder).glob(pattern)):
            shutil.copyfile(f, folder / f.name)
    organs = (preprocess_organs(paths, config, plans_identifier)
              if with_organs and config.task == "lesions" else 0)
    built = BuiltDataset(raw, base, plans_identifier, config.configuration, n, organs, simulated)
    write_json_atomic(base / "petloop" / "build.json",
                      {"config": asdict(config),
                       **{k: str(v) if isinstance(v, Path) else v
                          for k, v in asdict(built).items()}})
    return built


