"""Datasets, organ labels and training with nnU-Net."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Annotated

import typer

from petloop.cli import app, console, err_console, fail, progress
from petloop.cli.guard import check_device, existing_file, not_negative, one_of, positive
from petloop.io.outputs import OutputSet

dataset_app = typer.Typer(help="nnU-Net datasets: build (write, plan and preprocess), or phantoms "
                          "straight to preprocessed data.",
                          no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")

WorkDir = Annotated[Path | None, typer.Option(
    help="petloop work directory holding nnUNet_raw, nnUNet_preprocessed and nnUNet_results "
         "(default: $PETLOOP_WORKDIR or ./petloop_work; nnU-Net's own variables win).")]
DatasetId = Annotated[int, typer.Option("--id", min=1, max=999, help="nnU-Net dataset id.")]
DatasetName = Annotated[str, typer.Option(help="Dataset name: the NAME of DatasetXXX_NAME.")]
PLANNERS = ("cpu", "resenc_m", "resenc_l", "default")


def nnunet_paths(workdir: Path | None, check: bool = False):
    """nnU-Net's three folders; with ``check``, each one a folder that can be written."""
    from petloop.nnunet.paths import NnunetPaths

    root = workdir or Path(os.environ.get("PETLOOP_WORKDIR", "petloop_work"))
    paths = NnunetPaths.under(root, dict(os.environ))
    if check:
        outputs = OutputSet()
        for option, folder in (("nnUNet_raw", paths.raw),
                               ("nnUNet_preprocessed", paths.preprocessed),
                               ("nnUNet_results", paths.results)):
            outputs.add_folder(f"--workdir ({option})", folder)
    return paths


@dataset_app.command("build")
def dataset_build(
    data: Annotated[Path, typer.Option(help="Cases in any layout petloop reads.")],
    dataset_id: DatasetId,
    name: DatasetName = "PetLoop",
    planner: Annotated[str, typer.Option(help="cpu, resenc_m, resenc_l or default.")] = "cpu",
    task: Annotated[str, typer.Option(help="lesions, or organs (CT only, organs as target: "
                                      "single-channel pretraining).")] = "lesions",
    plans_from: Annotated[str | None, typer.Option(
        help="Take the plans of a built dataset (DatasetXXX_NAME/PLANS) instead of planning.")]
    = None,
    processes: Annotated[int, typer.Option(min=1, help="Worker processes for nnU-Net.")] = 2,
    workdir: WorkDir = None,
) -> None:
    """Write an nnU-Net raw dataset (CT, PET, lesion and organ labels, clicks), then run nnU-Net's
    planning and preprocessing in-process."""
    from petloop.io.layouts import LayoutError, find_cases
    from petloop.io.outputs import safe_name
    from petloop.io.volume import VolumeError
    from petloop.nnunet.dataset import BuildConfig, build_dataset
    from petloop.nnunet.paths import dataset_name

    one_of(planner, "--planner", PLANNERS)
    one_of(task, "--task", ("lesions", "organs"))
    safe_name(name, "--name")
    paths = nnunet_paths(workdir, check=True)
    try:  # case names from the data become file names in the dataset
        for f in find_cases(data):
            safe_name(f.case_id, f"case name {f.case_id!r} in {data}")
    except LayoutError as exc:
        fail(str(exc))
    config = BuildConfig(dataset_id, name, planner, num_processes=processes, task=task,
                         plans_from=plans_from)
    with progress() as bar:
        task_ids: dict[str, int] = {}

        def report(step: str, done: int, total: int) -> None:
            if step not in task_ids:
                task_ids[step] = bar.add_task(step, total=total)
            bar.update(task_ids[step], completed=done)

        try:
            built = build_dataset(data, paths, config, report)
        except (LayoutError, VolumeError, ValueError) as exc:
            fail(str(exc))
    console.print(f"built {dataset_name(dataset_id, name)}: {built.cases} cases "
                  f"({built.with_organs} with organ labels, {built.simulated_clicks} with "
                  f"simulated clicks), plans {built.plans_identifier}\n  raw: {built.raw}\n  "
                  f"preprocessed: {built.preprocessed}")


@dataset_app.command("phantoms")
def dataset_phantoms(
    config: Annotated[Path, typer.Option(
        "--config", help="A phantom configuration (the phantom_config.json written beside every "
        "phantom set).")],
    cases: Annotated[int, typer.Option(min=1, help="Phantoms 0..cases-1 of that configuration.")],
    dataset_id: DatasetId,
    plans_from: Annotated[str, typer.Option(
        help="The plans of a built dataset (DatasetXXX_NAME/PLANS).")],
    name: DatasetName = "PetLoop",
    seed: Annotated[int | None, typer.Option(
        min=0, help="Another seed than the configuration's.")] = None,
    processes: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 2,
    workdir: WorkDir = None,
) -> None:
    """Phantoms straight into nnU-Net's preprocessed format with the plans of a built dataset:
    the same arrays as `dataset build --plans-from` on the written phantoms, without writing or
    reading any image file (thousands of training phantoms where they are trained)."""
    import json

    from petloop.io.layouts import LayoutError
    from petloop.io.outputs import safe_name
    from petloop.nnunet.dataset import BuildConfig
    from petloop.nnunet.paths import dataset_name
    from petloop.nnunet.synthetic import build_generated_dataset
    from petloop.phantom.generate import PhantomConfig, phantom_case

    existing_file(config, "--config")
    safe_name(name, "--name")
    try:
        obj = json.loads(config.read_text(encoding="utf-8"))
        if not isinstance(obj, dict):
            raise TypeError(f"a JSON object is needed, not {type(obj).__name__}")
        phantoms = PhantomConfig.from_json(obj)
        if seed is not None:
            phantoms = PhantomConfig.from_json({**phantoms.to_json(), "seed": seed})
    except OSError as exc:
        fail(f"--config {config}: cannot read it ({exc.strerror or exc})")
    except RecursionError:
        fail(f"--config {config}: JSON nested too deeply to be a phantom configuration")
    except (ValueError, TypeError) as exc:
        fail(f"--config {config}: not a phantom configuration ({exc})")
    nnunet_paths(workdir, check=True)
    build = BuildConfig(dataset_id, name, num_processes=processes, plans_from=plans_from)
    with progress() as bar:
        task = bar.add_task("phantoms", total=cases)
        try:
            built = build_generated_dataset(
                functools.partial(phantom_case, phantoms), cases, nnunet_paths(workdir), build,
                source={"phantoms": phantoms.to_json()},
                progress=lambda done, total: bar.update(task, completed=done))
        except (LayoutError, ValueError) as exc:
            fail(str(exc))
    console.print(f"built {dataset_name(dataset_id, name)}: {built.cases} phantoms (seed "
                  f"{phantoms.seed}, {built.with_organs} with organ labels), plans "
                  f"{built.plans_identifier}\n  preprocessed: {built.preprocessed}")


@app.command()
def organs(
    ct: Annotated[Path, typer.Option(help="CT image.")],
    out: Annotated[Path, typer.Option(help="Organ label to write (classes 1-10).")],
    device: Annotated[str, typer.Option(help="gpu or cpu (TotalSegmentator's).")] = "gpu",
    fast: Annotated[bool, typer.Option("--fast", help="TotalSegmentator's fast mode.")] = False,
) -> None:
    """Organ labels for a real CT with TotalSegmentator (optional extra), mapped to petloop's 10
    organ classes."""
    from petloop.nnunet.organs import OrgansError, run_totalsegmentator

    if not re.fullmatch(r"cpu|mps|gpu(:\d+)?", device):
        fail(f"--device: {device!r} is not one of TotalSegmentator's devices: gpu, gpu:N, cpu "
             "or mps")
    existing_file(ct, "--ct")
    outputs = OutputSet({"--ct": ct})
    outputs.add("--out", out, "volume")
    try:
        with outputs.writing() as w:
            w.call(out, lambda p: run_totalsegmentator(ct, p, device=device, fast=fast))
    except OrgansError as exc:
        fail(str(exc))
    console.print(f"wrote {out}")


@app.command()
def train(
    dataset: Annotated[int, typer.Option(help="nnU-Net dataset id (built with petloop).")],
    recipe: Annotated[str, typer.Option(
        help="v0, v1, v2, v3, v4, pretrain, scribbles (autoPET V: 0-5 scribbles, the "
             "baseline's binary encoding), scribbles_gaussian (scribbles as Gaussian "
             "heatmaps, to fine-tune a point model), or an nnU-Net trainer name.")] = "v4",
    fold: Annotated[str, typer.Option(help="0-4 or all.")] = "all",
    epochs: Annotated[int | None, typer.Option(min=1, help="Epochs (default: nnU-Net's).")]
    = None,
    iters: Annotated[int | None, typer.Option(min=1, help="Iterations per epoch.")] = None,
    val_iters: Annotated[int | None, typer.Option(min=1, help="Validation iterations per "
                                                  "epoch.")] = None,
    lr: Annotated[float | None, typer.Option(help="Initial learning rate.")] = None,
    schedule: Annotated[str | None, typer.Option(help="Click schedule instead of the recipe's "
                                                 "(name or 11 probabilities).")] = None,
    pretrained: Annotated[Path | None, typer.Option(help="Checkpoint to start from (fewer input "
                                                    "channels are expanded).")] = None,
    organ_weight: Annotated[float | None, typer.Option(
        help="Organ loss weight of organ-supervised recipes (published: 1).")] = None,
    save_every: Annotated[int | None, typer.Option(min=1, help="Save a checkpoint every N "
                                                   "epochs (nnU-Net: 50).")] = None,
    time_budget: Annotated[float | None, typer.Option(
        min=1, help="Seconds of training: the run ends within them, after at most --epochs, and "
        "the learning rate decays over the epochs that fit.")] = None,
    plans: Annotated[str, typer.Option(help="Plans identifier.")] = "petloopCPUPlans",
    configuration: Annotated[str, typer.Option(help="Plans configuration.")] = "3d_fullres",
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or mps.")] = "cpu",
    num_gpus: Annotated[int, typer.Option(min=1, help="GPUs (nnU-Net's DDP).")] = 1,
    validate: Annotated[bool, typer.Option("--validate", help="Run nnU-Net's final "
                                           "validation.")] = False,
    resume: Annotated[bool, typer.Option("--continue", help="Continue from the last "
                                         "checkpoint.")] = False,
    workdir: WorkDir = None,
) -> None:
    """Train a recipe with nnU-Net (v0-v4 as in the paper) on a petloop-built dataset."""
    check_device(device)
    if fold != "all" and not (fold.isdigit() and len(fold) < 4):
        fail(f"--fold: {fold!r} is not a fold number (0-4) or all")
    positive(lr, "--lr")
    not_negative(organ_weight, "--organ-weight")
    existing_file(pretrained, "--pretrained")
    paths = nnunet_paths(workdir, check=True)

    from petloop.clicks.schedules import ScheduleError
    from petloop.nnunet.train import (
        TrainConfig,
        TrainingError,
        TrainOptions,
        dataset_folder_name,
    )
    from petloop.nnunet.train import train as run

    if device == "cpu":
        os.environ.setdefault("nnUNet_n_proc_DA", "0" if (os.cpu_count() or 1) <= 2 else "2")
    options = TrainOptions(epochs, iters, val_iters, lr, schedule,
                           str(pretrained) if pretrained else None, organ_weight=organ_weight,
                           save_every=save_every, time_budget=time_budget)
    try:
        config = TrainConfig(dataset, dataset_folder_name(dataset, paths), recipe, fold,
                             configuration, plans, device, num_gpus, validate, resume, options)
        out = run(config, paths)
    except (TrainingError, ScheduleError) as exc:
        fail(str(exc))
    err_console.print(f"trained {recipe}: {out}")
