"""Tracer classification: train and predict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from petloop.cli import app, console, err_console, fail, progress
from petloop.cli.guard import check_device, existing_file, existing_folder, positive
from petloop.cli.inference import TrustSuv
from petloop.io.outputs import OutputSet

tracer_app = typer.Typer(help="Tracer classification (FDG or PSMA) from PET MIPs.",
                         no_args_is_help=True)
app.add_typer(tracer_app, name="tracer")


@tracer_app.command("train")
def tracer_train(
    data: Annotated[Path, typer.Option(help="Cases of known tracer (any layout).")],
    out: Annotated[Path, typer.Option(help="Weights file to write (.pt); a .json goes beside.")],
    epochs: Annotated[int, typer.Option(min=1, help="At most this many epochs.")] = 12,
    patience: Annotated[int, typer.Option(min=1, help="Early stopping patience (epochs).")]
    = 4,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 5e-4,
    val_fraction: Annotated[float, typer.Option(help="Share of cases held out.")] = 0.2,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the split and the training.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or mps.")] = "cpu",
    half: Annotated[bool, typer.Option("--half", help="Save in half precision.")] = False,
) -> None:
    """Train the MIP classifier with a validation split and early stopping."""
    check_device(device)
    positive(lr, "--lr")
    if not 0 < val_fraction < 1:
        fail(f"--val-fraction: {val_fraction:g} must lie between 0 and 1")
    existing_folder(data, "--data")
    outputs = OutputSet({"--data": data})
    outputs.add("--out", out, "weights")
    info_path = outputs.add("--out (its .json)", out.with_suffix(".json"), "json")

    from petloop.io.layouts import LayoutError
    from petloop.tracer.classifier import TracerError
    from petloop.tracer.train import (
        TracerTrainConfig,
        describe,
        load_examples,
        save_weights,
        train_classifier,
    )

    config = TracerTrainConfig(epochs, 8, lr, val_fraction, patience, seed, device)
    try:
        with progress() as bar:
            task = bar.add_task("MIPs", total=None)
            examples = load_examples(data, lambda i, n: bar.update(task, completed=i, total=n))
            ep = bar.add_task("training (epochs)", total=epochs)

            def on_epoch(epoch: int, row: dict) -> None:
                bar.update(ep, completed=epoch + 1)
                err_console.print(f"epoch {epoch}: train loss {row['train_loss']:.4f}, "
                                  f"val loss {row['val_loss']:.4f}, "
                                  f"val accuracy {row['val_accuracy']:.3f}")

            model, history, (train, val) = train_classifier(examples, config, on_epoch)
    except (TracerError, LayoutError) as exc:
        fail(str(exc))
    with outputs.writing() as w:  # the weights and their JSON as one set
        save_weights(model, w.path(out), describe(config, data, history, train, val), half,
                     info_path=w.path(info_path))
    console.print(f"wrote {out} ({len(train)} training, {len(val)} validation cases)")


@tracer_app.command("predict")
def tracer_predict(
    pet: Annotated[Path, typer.Option(help="PET image in SUV.")],
    weights: Annotated[Path | None, typer.Option(
        help="Classifier weights (default: the bundled model set's).")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or mps.")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    trust_suv: TrustSuv = False,
) -> None:
    """Print the tracer (fdg or psma) and its probability."""
    check_device(device)
    if weights is None:
        from petloop.models import BUNDLED_MODEL_SET

        weights = BUNDLED_MODEL_SET / "tracer_classifier.pt.gz"
    existing_file(weights, "--weights")
    from petloop.io.checks import check_pet
    from petloop.io.volume import VolumeError, read_volume
    from petloop.tracer.classifier import TracerClassifier, TracerError

    try:
        volume = read_volume(pet)
        check_pet(volume, str(pet), trust_suv=trust_suv)
        result = TracerClassifier(weights, device).predict(volume, str(pet))
    except (TracerError, VolumeError) as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps({"tracer": result.tracer, "probability": result.probability,
                          "probability_psma": result.probability_psma}))
    else:
        console.print(f"{result.tracer} (probability {result.probability:.3f})")
