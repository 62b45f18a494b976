"""Assembling a model set folder from trained nnU-Net model folders.

Each model folder is copied with what prediction needs (``plans.json``, ``dataset.json``, the
fingerprint, the training options, the log and the curve, nnU-Net's ``progress.png`` kept as a
64-colour palette PNG of about a third of the size) and, per fold, a slimmed checkpoint: the
network weights (optionally in half precision, tensors that share storage kept shared), the
trainer name, its init arguments and the mirroring axes; no optimizer state.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import torch

from petloop.io.atomic import atomic_path, write_json_atomic

from .modelset import MANIFEST, InferenceSettings, load_model_set
from .routing import birth_routing

KEEP = ("plans.json", "dataset.json", "dataset_fingerprint.json")
FOLD_KEEP = ("petloop_train.json",)


def copy_curve(src: Path, dst: Path) -> None:
    """nnU-Net's ``progress.png`` (lines on a plain background) as a 64-colour palette PNG."""
    from PIL import Image

    with Image.open(src) as im:
        small = im.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    with atomic_path(dst) as tmp:
        small.save(tmp, format="PNG", optimize=True)


def slim_checkpoint(src: Path, dst: Path, half: bool = True) -> None:
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    converted: dict[int, torch.Tensor] = {}
    weights = {}
    for k, v in ckpt["network_weights"].items():
        key = v.untyped_storage().data_ptr()
        if key not in converted:
            converted[key] = v.half() if half and v.is_floating_point() else v.clone()
        weights[k] = converted[key]
    slim = {"network_weights": weights, "trainer_name": ckpt["trainer_name"],
            "init_args": ckpt.get("init_args", {}),
            "inference_allowed_mirroring_axes": ckpt.get("inference_allowed_mirroring_axes"),
            "current_epoch": ckpt.get("current_epoch")}
    with atomic_path(dst) as tmp:
        torch.save(slim, tmp)


def copy_model(folder: Path, dst: Path, half: bool = True) -> list[str]:
    folder = Path(folder)
    dst.mkdir(parents=True, exist_ok=True)
    for name in KEEP:
        if (folder / name).is_file():
            shutil.copyfile(folder / name, dst / name)
    folds = []
    for fold_dir in sorted(folder.glob("fold_*")):
        ckpt = fold_dir / "checkpoint_final.pth"
        if not ckpt.is_file():
            continue
        (dst / fold_dir.name).mkdir(exist_ok=True)
        slim_checkpoint(ckpt, dst / fold_dir.name / "checkpoint_final.pth", half)
        for name in FOLD_KEEP:
            if (fold_dir / name).is_file():
                shutil.copyfile(fold_dir / name, dst / fold_dir.name / name)
        if (fold_dir / "progress.png").is_file():
            copy_curve(fold_dir / "progress.png", dst / fold_dir.name / "progress.png")
        # the history an exported model brought along, then one log per run, continued ones too
        earlier = fold_dir / "training_log.txt"
        logs = ([earlier] if earlier.is_file() else []) + sorted(
            fold_dir.glob("training_log_*.txt"))
        if logs:
            (dst / fold_dir.name / "training_log.txt").write_text(
                "".join(log.read_text(encoding="utf-8", errors="replace") for log in logs),
                encoding="utf-8")
        folds.append(fold_dir.name.removeprefix("fold_"))
    if not folds:
        raise FileNotFoundError(f"{folder}: no fold with checkpoint_final.pth")
    return folds


def export_model_set(out: str | Path, fdg_stochastic: Path, fdg_full: Path, psma: Path,
                     tracer_weights: Path | None = None, name: str = "phantom",
                     description: str = "", half: bool = True, routing: str = "birth",
                     inference: InferenceSettings | None = None) -> Path:
    """A model set with the BIRTH routing: fdg_v4 below 5 background clicks, fdg_v3 from 5,
    psma_v2 for PSMA (``birth-fg``: fdg_v3 only once a lesion has been clicked); ``inference``
    becomes the manifest's default window and mirrored passes."""
    routes = birth_routing("fdg_v4", "fdg_v3", "psma_v2", routing)  # a bad name: before any copy
    out = Path(out)
    # written beside ``out`` and moved in place at the end: a failed export leaves an existing
    # set as it was, and the models may come from that set itself
    work = out.with_name(f".{out.name}.export-{os.getpid()}")
    if work.exists():
        shutil.rmtree(work)
    try:
        _write_model_set(work, routes, fdg_stochastic, fdg_full, psma, tracer_weights, name,
                         description, half, inference)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    old = out.with_name(f".{out.name}.replaced-{os.getpid()}")
    if out.exists():
        out.rename(old)
    work.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def _write_model_set(out: Path, routes: dict, fdg_stochastic: Path, fdg_full: Path, psma: Path,
                     tracer_weights: Path | None, name: str, description: str, half: bool,
                     inference: InferenceSettings | None) -> None:
    models = {}
    for key, folder in (("fdg_v4", fdg_stochastic), ("fdg_v3", fdg_full), ("psma_v2", psma)):
        folds = copy_model(Path(folder), out / key / Path(folder).name, half)
        models[key] = {"folder": f"{key}/{Path(folder).name}",
                       "folds": [f if f == "all" else int(f) for f in folds]}
    manifest = {"name": name, "description": description,
                "suv_threshold": {"fdg": 1.5, "psma": 1.0}, "models": models,
                "routing": routes}
    if inference is not None:
        manifest["inference"] = inference.to_json()
    if tracer_weights is not None:
        # gzip saves about 8 % of half-precision weights; the loader reads either form
        # mtime 0: the same weights give the same bytes, so a re-export changes nothing
        target = out / "tracer_classifier.pt.gz"
        with open(tracer_weights, "rb") as src:
            compressed = src.read(2) == b"\x1f\x8b"  # an exported set's weights: as they are
        if compressed:
            shutil.copyfile(tracer_weights, target)
        else:
            with open(tracer_weights, "rb") as src, open(target, "wb") as raw, \
                    gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as dst:
                shutil.copyfileobj(src, dst)
        # its training record: tracer.json beside tracer.pt, or beside tracer.pt.gz
        weights = Path(tracer_weights)
        record = weights.with_name(weights.name.removesuffix(".gz")).with_suffix(".json")
        if record.is_file():
            shutil.copyfile(record, out / "tracer_classifier.json")
        manifest["tracer_classifier"] = "tracer_classifier.pt.gz"
    write_json_atomic(out / MANIFEST, manifest)
    load_model_set(out)  # the result must be a valid model set


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


__all__ = ["copy_model", "export_model_set", "folder_size", "slim_checkpoint"]


def add_scribble_models(root: str | Path, folders: dict[str, Path], half: bool = True) -> Path:
    """Copy trained scribble models into a model set (``<tracer>_scribbles``) and route its
    scribble steps to them: a first route ``{"model": ..., "interaction": "scribbles"}`` per
    tracer, before the click routes (an earlier scribble route of that tracer is replaced).
    The manifest is checked by loading the set before it replaces the old one."""
    import json

    root = Path(root)
    manifest_path = root / MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for tracer, folder in folders.items():
        if tracer not in manifest.get("routing", {}):
            raise ValueError(f"{manifest_path}: no routing for tracer {tracer!r} to add a "
                             "scribble model to")
        key = f"{tracer}_scribbles"
        target = root / key / Path(folder).name
        if target.exists():
            shutil.rmtree(target)
        folds = copy_model(Path(folder), target, half)
        manifest["models"][key] = {"folder": f"{key}/{Path(folder).name}",
                                   "folds": [f if f == "all" else int(f) for f in folds]}
        routes = [r for r in manifest["routing"][tracer] if r.get("interaction") != "scribbles"]
        manifest["routing"][tracer] = [{"model": key, "interaction": "scribbles"}, *routes]
    staged = root / f".{MANIFEST}.new"
    write_json_atomic(staged, manifest)
    try:
        load_model_set(root, manifest=staged)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    staged.replace(manifest_path)
    return manifest_path
