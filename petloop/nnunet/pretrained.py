"""Fine-tuning from pretrained weights, including weights with fewer input channels.

A single-channel pretrained network (CT only, such as the public multi-dataset pretraining or
petloop's phantom organ model) starts a four-channel click model by copying its first-layer
weights to the CT and the PET channel and zeros to the two click channels (SPEC section 7).
Every other parameter is loaded when name and shape match; a pretrained organ-segmentation head
(``seg_layers`` with 11 classes) may start the organ head (``organ_seg_layers``). What was not
loaded is reported. A checkpoint whose encoder does not fit is an error, before any training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

FIRST_LAYER_SUFFIXES = ("encoder.stem.convs.0.conv.weight",
                        "encoder.stem.convs.0.all_modules.0.weight")


class CheckpointMismatch(ValueError):
    """The pretrained weights do not fit the network."""


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    expanded: list[str] = field(default_factory=list)
    from_seg_head: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # in the network, not (fitting) in the file
    unused: list[str] = field(default_factory=list)  # in the file, not in the network

    def summary(self) -> str:
        return (f"{len(self.loaded)} tensors loaded, {len(self.expanded)} first-layer tensors "
                f"expanded to more input channels, {len(self.from_seg_head)} organ-head tensors "
                f"from the segmentation head, {len(self.skipped)} kept as initialised "
                f"({', '.join(self.skipped[:6])}{' ...' if len(self.skipped) > 6 else ''}), "
                f"{len(self.unused)} unused")


def _read(checkpoint) -> dict:
    if isinstance(checkpoint, (str, Path)):
        path = Path(checkpoint)
        if not path.is_file():
            raise CheckpointMismatch(f"{path}: no such checkpoint")
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    weights = (checkpoint.get("network_weights", checkpoint) if isinstance(checkpoint, dict)
               else None)
    if not isinstance(weights, dict):
        raise CheckpointMismatch("not an nnU-Net checkpoint (no 'network_weights')")
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in weights.items()}


def expand_first_layer(pre: torch.Tensor, target_shape) -> torch.Tensor:
    """``(out, c, ...)`` -> ``(out, C, ...)``: one channel goes to CT and PET, two channels to
    themselves; the remaining (click) channels get zeros."""
    out = torch.zeros(target_shape, dtype=pre.dtype)
    c = pre.shape[1]
    if c == 1 and target_shape[1] >= 2:
        out[:, 0] = pre[:, 0]
        out[:, 1] = pre[:, 0]
    else:
        out[:, :c] = pre
    return out


def load_pretrained(network: torch.nn.Module, checkpoint, source: str = "checkpoint") -> LoadReport:
    weights = _read(checkpoint)
    model = network.state_dict()
    report = LoadReport()
    new = {}
    for key, target in model.items():
        pre = weights.get(key)
        if pre is not None and tuple(pre.shape) == tuple(target.shape):
            new[key] = pre
            report.loaded.append(key)
        elif (pre is not None and key.endswith(FIRST_LAYER_SUFFIXES) and pre.ndim == target.ndim
              and pre.shape[0] == target.shape[0] and pre.shape[2:] == target.shape[2:]
              and pre.shape[1] < target.shape[1]):
            new[key] = expand_first_layer(pre, target.shape)
            report.expanded.append(key)
        elif ".organ_seg_layers." in key and tuple(getattr(
                weights.get(key.replace(".organ_seg_layers.", ".seg_layers.")), "shape", ())) == \
                tuple(target.shape):
            new[key] = weights[key.replace(".organ_seg_layers.", ".seg_layers.")]
            report.from_seg_head.append(key)
        else:
            report.skipped.append(key)
    report.unused = [k for k in weights if k not in model]
    bad = [k for k in report.skipped if k.startswith("encoder.")]
    if bad or not (report.loaded or report.expanded):
        detail = ", ".join(
            f"{k} (network {tuple(model[k].shape)}, {source} "
            f"{tuple(weights[k].shape) if k in weights else 'missing'})" for k in bad[:4])
        raise CheckpointMismatch(
            f"{source} does not fit this network: {len(bad)} encoder tensors missing or of another "
            f"shape, e.g. {detail}; unexpected keys in the file: {report.unused[:4]}")
    network.load_state_dict({**model, **new})
    return report
