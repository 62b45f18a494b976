"""Phantoms straight into nnU-Net's preprocessed format, with the plans of a built dataset.

`dataset build` writes every case as NIfTI, then lets nnU-Net read it back; for cases made in
memory (phantoms), :func:`build_generated_dataset` hands the arrays to nnU-Net's own
preprocessor instead (``run_case_npy``, with the properties its SimpleITK reader would give) and
writes what `dataset build --plans-from` writes beside them: the plans, ``dataset.json``, the
organ labels through the same transpose, crop and resampling, the official clicks and
``petloop/build.json``. The arrays are the same as through the files (tests compare them); no
NIfTI is written, so it is quick and needs no image library, and thousands of training phantoms
can be made where they are trained. Without the raw files nnU-Net's final validation
(``--validate``) has nothing to compare with; training needs only these.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from petloop.clicks.scribble_pool import scribble_pool
from petloop.io.atomic import write_json_atomic
from petloop.io.clicks import write_clicks
from petloop.io.layouts import Case, LayoutError, write_nnunet_dataset_json
from petloop.nnunet.dataset import BuildConfig, BuiltDataset, prepare_case, resample_organs
from petloop.nnunet.paths import NnunetPaths
from petloop.nnunet.plans import normalise_pet_like_ct
from petloop.nnunet.trainers import clicks_folder, organ_folder, scribbles_folder

#: makes case ``index`` in memory; picklable (worker processes call it), e.g. a
#: ``functools.partial`` of a module-level function such as ``petloop.phantom.phantom_case``
CaseMaker = Callable[[int], Case]

READER = "SimpleITKIO"  # how the plans read .nii.gz at prediction time, as after --plans-from


def nnunet_properties(volume) -> dict:
    """The properties nnU-Net's SimpleITK reader gives for an image on ``volume``'s grid."""
    return {"sitk_stuff": {"spacing": tuple(float(s) for s in volume.spacing),
                           "origin": tuple(float(o) for o in volume.origin),
                           "direction": tuple(float(d) for d in volume.direction)},
            "spacing": [float(s) for s in volume.itk_spacing()]}


def _take_plans(paths: NnunetPaths, config: BuildConfig) -> tuple[Path, str]:
    if not config.plans_from:
        raise LayoutError("phantoms go straight to preprocessed data only with the plans of a "
                          "built dataset (plans_from, e.g. Dataset601_PhantomFDG/petloopCPUPlans)")
    if config.task != "lesions":
        raise LayoutError(f"phantom datasets are for the lesions task, not {config.task!r}")
    source, _, plans_identifier = config.plans_from.partition("/")
    source_dir = paths.preprocessed / source
    plans_file = source_dir / f"{plans_identifier}.json"
    if not plans_file.is_file():
        raise LayoutError(f"{plans_file}: no such plans to take over")
    base = paths.preprocessed / config.folder_name
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    plans = json.loads(plans_file.read_text())
    plans["dataset_name"] = config.folder_name
    plans["image_reader_writer"] = READER
    write_json_atomic(base / f"{plans_identifier}.json", normalise_pet_like_ct(plans))
    # nnU-Net's trainer copies the fingerprint next to its results: the plans' own
    fingerprint = source_dir / "dataset_fingerprint.json"
    if fingerprint.is_file():
        shutil.copyfile(fingerprint, base / "dataset_fingerprint.json")
    return base, plans_identifier


@functools.cache
def _plans(base: Path, plans_identifier: str, configuration: str):
    """The plans, configuration and dataset.json, read once per worker process."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(str(base / f"{plans_identifier}.json"))
    return pm, pm.get_configuration(configuration), json.loads((base / "dataset.json").read_text())


def _one_case(job) -> tuple[str, bool, bool]:
    """Make case ``index`` and write its preprocessed arrays, organs and clicks."""
    make_case, index, base, plans_identifier, config = job
    from nnunetv2.training.dataloading.nnunet_dataset import (
        comp_blosc2_params,
        nnUNetDatasetBlosc2,
    )

    pm, cm, dataset_json = _plans(base, plans_identifier, config.configuration)
    case, simulated = prepare_case(make_case(index), config.click_seed)
    data = np.stack([case.ct.itk_array(), case.pet.itk_array()]).astype(np.float32)
    seg = case.label.itk_array()[None].astype(np.float32)
    properties = nnunet_properties(case.pet)
    data, seg, properties = cm.preprocessor_class(verbose=False).run_case_npy(
        data, seg, properties, pm, cm, dataset_json)
    data = data.astype(np.float32, copy=False)
    seg = seg.astype(np.int16, copy=False)
    patch = tuple(cm.patch_size)
    blocks, chunks = comp_blosc2_params(data.shape, patch, data.itemsize)
    blocks_seg, chunks_seg = comp_blosc2_params(seg.shape, patch, seg.itemsize)
    nnUNetDatasetBlosc2.save_case(data, seg, properties, str(base / cm.data_identifier /
                                                             case.case_id),
                                  chunks=chunks, blocks=blocks, chunks_seg=chunks_seg,
                                  blocks_seg=blocks_seg)
    if case.organs is not None:
        organs = case.organs.itk_array()[None].astype(np.float32)
        nnUNetDatasetBlosc2.save_seg(resample_organs(organs, properties, data.shape[1:], pm, cm),
                                     str(organ_folder(base, cm.data_identifier) / case.case_id))
    write_clicks(case.clicks, clicks_folder(base) / f"{case.case_id}_clicks.json")
    write_json_atomic(scribbles_folder(base) / f"{case.case_id}_scribbles.json",
                      scribble_pool(case.label.array, case.pet.array).to_json(), indent=None)
    return case.case_id, case.organs is not None, simulated


def build_generated_dataset(make_case: CaseMaker, cases: int, paths: NnunetPaths,
                            config: BuildConfig, *, source: dict | None = None,
                            progress: Callable[[int, int], None] | None = None
                            ) -> BuiltDataset:
    """Cases 0..cases-1 of ``make_case`` as preprocessed dataset ``config.folder_name``, with
    the plans named by ``config.plans_from``; ``source`` (JSON) says in ``build.json`` what made
    them (a phantom configuration, say)."""
    if cases < 1:
        raise ValueError(f"a dataset needs at least one case, got {cases}")
    with paths.activated():
        return _build(make_case, cases, paths, config, source, progress)


def _build(make_case: CaseMaker, cases: int, paths: NnunetPaths, config: BuildConfig,
           source: dict | None, progress) -> BuiltDataset:
    _plans.cache_clear()  # a rebuilt folder may hold other plans under the same name
    base, plans_identifier = _take_plans(paths, config)
    write_nnunet_dataset_json(base, cases, config.name)
    data_identifier = _plans(base, plans_identifier, config.configuration)[1].data_identifier
    for folder in (base / data_identifier, organ_folder(base, data_identifier),
                   clicks_folder(base), scribbles_folder(base)):
        folder.mkdir(parents=True, exist_ok=True)
    jobs = [(make_case, i, base, plans_identifier, config) for i in range(cases)]
    with_organs = simulated = 0
    if config.num_processes > 1:
        pool = get_context("spawn").Pool(config.num_processes)
        results = pool.imap(_one_case, jobs)
    else:
        pool, results = None, map(_one_case, jobs)
    try:
        for n, (_, organs, sim) in enumerate(results):
            with_organs += organs
            simulated += sim
            if progress:
                progress(n + 1, cases)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    built = BuiltDataset(paths.raw / config.folder_name, base, plans_identifier,
                         config.configuration, cases, with_organs, simulated)
    write_json_atomic(base / "petloop" / "build.json",
                      {"config": asdict(config), "source": source,
                       **{k: str(v) if isinstance(v, Path) else v
                          for k, v in asdict(built).items()}})
    return built
