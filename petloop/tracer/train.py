"""Training the tracer classifier on cases of known tracer (phantoms here).

MIPs are computed once per case; training draws light augmentation (SUV scale, left-right
mirroring) per sample, keeps a stratified validation split, stops early on the validation loss
and keeps the best weights. The weights are saved as a state dict (optionally half precision)
with a JSON beside them saying what they were trained on.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from petloop.io.atomic import atomic_path, write_json_atomic
from petloop.io.layouts import find_cases
from petloop.io.volume import read_volume
from petloop.tracer.classifier import TRACERS, MipClassifier, TracerError, check_pet
from petloop.tracer.mip import mips


@dataclass(frozen=True)
class TracerTrainConfig:
    epochs: int = 15
    batch_size: int = 8
    lr: float = 1e-3
    val_fraction: float = 0.2
    patience: int = 3
    seed: int = 0
    device: str = "cpu"


@dataclass(frozen=True)
class Example:
    case_id: str
    coronal: torch.Tensor
    sagittal: torch.Tensor
    label: int  # 1 = PSMA


def load_examples(data: str | Path, progress: Callable[[int, int], None] | None = None
                  ) -> list[Example]:
    files = find_cases(data)
    out = []
    for n, f in enumerate(files):
        tracer = f.tracer
        if tracer not in TRACERS:
            raise TracerError(f"case {f.case_id} ({f.pet}) has no known tracer; name it fdg_... "
                              "or psma_..., or give it a case.json with the tracer")
        pet = read_volume(f.pet)
        check_pet(pet, str(f.pet))
        cor, sag = mips(pet)
        out.append(Example(f.case_id, cor, sag, int(tracer == "psma")))
        if progress:
            progress(n + 1, len(files))
    return out


def split(examples: Sequence[Example], fraction: float, seed: int):
    """Stratified: the same share of each tracer goes to validation."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in (0, 1):
        group = [e for e in examples if e.label == label]
        order = rng.permutation(len(group))
        n_val = int(round(len(group) * fraction)) if len(group) > 1 else 0
        val += [group[i] for i in order[:n_val]]
        train += [group[i] for i in order[n_val:]]
    return train, val


def _batch(examples, rng=None):
    cor = torch.stack([e.coronal for e in examples])
    sag = torch.stack([e.sagittal for e in examples])
    y = torch.tensor([[float(e.label)] for e in examples])
    if rng is not None:
        scale = torch.from_numpy(rng.uniform(0.8, 1.25, size=(len(examples), 1, 1, 1))).float()
        cor, sag = cor * scale, sag * scale
        flip = torch.from_numpy(rng.random(len(examples)) < 0.5)
        cor[flip] = torch.flip(cor[flip], dims=(-1,))
    return cor, sag, y


@torch.no_grad()
def recalibrate_batchnorm(model: MipClassifier, examples: Sequence[Example], device,
                          batch_size: int = 16) -> None:
    """Exact BatchNorm statistics of the training set (cumulative average, dropout off), so
    that evaluation matches training even after few steps on raw-SUV inputs."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    for i in range(0, len(examples), batch_size):
        chunk = examples[i:i + batch_size]
        if len(chunk) < 2:
            continue
        cor, sag, _ = _batch(chunk)
        model(cor.to(device), sag.to(device))
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    model.eval()


@torch.no_grad()
def evaluate(model: MipClassifier, examples: Sequence[Example], device) -> tuple[float, float]:
    """(mean BCE loss, accuracy)."""
    if not examples:
        return float("nan"), float("nan")
    model.eval()
    cor, sag, y = _batch(examples)
    logits = torch.cat([model(cor[i:i + 16].to(device), sag[i:i + 16].to(device)).cpu()
                        for i in range(0, len(examples), 16)])
    loss = nn.functional.binary_cross_entropy_with_logits(logits, y).item()
    acc = float(((logits > 0).float() == y).float().mean().item())
    return loss, acc


def train_classifier(examples: Sequence[Example], config: TracerTrainConfig,
                     on_epoch: Callable[[int, dict], None] | None = None):
    if len({e.label for e in examples}) < 2:
        raise TracerError("training needs cases of both tracers")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = torch.device(config.device)
    train, val = split(examples, config.val_fraction, config.seed)
    model = MipClassifier().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    best, best_loss, bad, history = None, float("inf"), 0, []
    for epoch in range(config.epochs):
        t0 = time.perf_counter()
        model.train()
        order = rng.permutation(len(train))
        losses = []
        for i in range(0, len(order) - 1, config.batch_size):
            idx = order[i:i + config.batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            cor, sag, y = _batch([train[j] for j in idx], rng)
            loss = nn.functional.binary_cross_entropy_with_logits(
                model(cor.to(device), sag.to(device)), y.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        recalibrate_batchnorm(model, train, device)
        val_loss, val_acc = evaluate(model, val or train, device)
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_loss,
               "val_accuracy": val_acc, "seconds": time.perf_counter() - t0}
        history.append(row)
        if on_epoch:
            on_epoch(epoch, row)
        if val_loss < best_loss - 1e-4:
            best_loss, best, bad = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            bad += 1
            if bad >= config.patience:
                break
    model.load_state_dict(best)
    return model.eval(), history, (train, val)


def save_weights(model: MipClassifier, path: str | Path, info: dict, half: bool = False, *,
                 info_path: str | Path | None = None) -> Path:
    """The weights (optionally in half precision) and ``info`` as JSON beside them
    (``info_path``, default: the weights' name with ``.json``)."""
    state = {k: (v.half() if half and v.is_floating_point() else v).cpu()
             for k, v in model.state_dict().items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    write_json_atomic(info_path or path.with_suffix(".json"), info)
    return path


def describe(config: TracerTrainConfig, data, history, train, val) -> dict:
    return {"config": asdict(config), "data": str(data),
            "train_cases": {t: sum(e.label == i for e in train) for i, t in enumerate(TRACERS)},
            "val_cases": {t: sum(e.label == i for e in val) for i, t in enumerate(TRACERS)},
            "history": history, "mip": "L-A-S flips, [z, y, x], z flipped, 224 x 224 bilinear"}
