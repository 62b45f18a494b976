"""The one place that reaches into nnU-Net's predictor: tiles, weights, the network, export.

petloop's prediction engine (:mod:`petloop.inference.engine`) runs nnU-Net's sliding window
itself, one tile at a time, so that it can keep every tile's output and recompute only the tiles
a click changes. Everything it needs from nnU-Net comes from here:

- :class:`NetworkAdapter` loads a trained model folder (folds and checkpoint files as an
  ensemble), preprocesses a case with nnU-Net's own preprocessor, runs the network on one tile
  (CPU autocast to bfloat16 where asked, nnU-Net's autocast on a GPU) and switches fold weights;
- :func:`tile_grid` lays the tiles as nnU-Net's ``predict_sliding_window_return_logits`` does
  (the input padded to at least the patch, centred; tile starts from
  ``compute_steps_for_sliding_window``; nnU-Net's Gaussian importance map, here in float32), or
  one tile over the whole volume padded to what the network's pooling divides (no weighting);
- :func:`export_geometry` reads the crop, transpose and resampling nnU-Net's
  ``convert_predicted_logits_to_segmentation_with_correct_shape`` applies, for the region-wise
  export of :mod:`petloop.nnunet.resample`.

Differences from nnU-Net's own predictor, all on the side of precision: tile outputs are kept
in float16 (nnU-Net sums them in float16) and summed in float32 with float32 Gaussian weights.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from petloop.nnunet.clickspace import click_encoding
from petloop.nnunet.predict import Preprocessed, load_predictor, preprocess
from petloop.nnunet.resample import Box
from petloop.options import WINDOWS

WHOLE_MAX_PATCHES = 4.0


class AdapterError(ValueError):
    """A model folder petloop's engine cannot run (the message says why)."""


def whole_tile(shape, patch, divisors, max_patches: float = WHOLE_MAX_PATCHES):
    """The tile that covers ``shape`` in one pass: each axis padded up to a multiple of its
    divisor and to at least the patch; None where that exceeds ``max_patches`` patches."""
    tile = [max(int(np.ceil(s / d) * d), p) for s, p, d in zip(shape, patch, divisors,
                                                               strict=True)]
    if np.prod(tile, dtype=np.float64) > max_patches * np.prod(patch, dtype=np.float64):
        return None
    return tile


def pooling_divisors(configuration_manager) -> list[int]:
    """Per axis, the product of the network's strides: what an input size must divide by."""
    strides = np.asarray(configuration_manager.pool_op_kernel_sizes, dtype=np.int64)
    return [int(v) for v in strides.prod(axis=0)]


@dataclass(frozen=True, eq=False)
class TileGrid:
    """Where the tiles of one sliding window lie, in the padded frame."""

    window: str  # "sliding" or "whole"
    shape: tuple[int, int, int]  # the preprocessed volume
    pad_lo: tuple[int, int, int]  # padding before the volume on each axis
    padded: tuple[int, int, int]
    patch: tuple[int, int, int]
    starts: tuple[tuple[int, int, int], ...]  # nnU-Net's tile order
    gaussian: np.ndarray | None  # float32 importance map; None: every tile weighs 1

    def __len__(self) -> int:
        return len(self.starts)

    def boxes(self, axes: tuple[int, ...] = ()) -> np.ndarray:
        """``(n, 3, 2)`` tile boxes in the padded frame of the unflipped volume, for the pass
        that runs the window over the volume flipped along ``axes`` (a tile of the flipped
        volume is the flipped box of the original)."""
        out = np.empty((len(self.starts), 3, 2), dtype=np.int64)
        for n, start in enumerate(self.starts):
            for a in range(3):
                lo, hi = start[a], start[a] + self.patch[a]
                out[n, a] = (self.padded[a] - hi, self.padded[a] - lo) if a in axes else (lo, hi)
        return out

    def weights(self, axes: tuple[int, ...] = ()) -> np.ndarray | None:
        if self.gaussian is None or not axes:
            return self.gaussian
        return np.ascontiguousarray(np.flip(self.gaussian, axes))


def tile_grid(predictor, shape, window: str, tile_step_size: float | None = None) -> TileGrid:
    """The tiles nnU-Net's sliding window uses for a preprocessed volume of ``shape``."""
    from nnunetv2.inference.sliding_window_prediction import (
        compute_gaussian,
        compute_steps_for_sliding_window,
    )

    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}; use one of {', '.join(WINDOWS)}")
    cm = predictor.configuration_manager
    if len(cm.patch_size) != 3:
        raise AdapterError(f"petloop runs 3D configurations; this one has patch {cm.patch_size}")
    shape = tuple(int(s) for s in shape)
    patch = tuple(int(p) for p in cm.patch_size)
    whole = whole_tile(shape, patch, pooling_divisors(cm)) if window == "whole" else None
    if whole is not None:
        patch = tuple(whole)
    padded = tuple(max(s, p) for s, p in zip(shape, patch, strict=True))
    pad_lo = tuple((p - s) // 2 for s, p in zip(shape, padded, strict=True))
    step = predictor.tile_step_size if tile_step_size is None else tile_step_size
    steps = compute_steps_for_sliding_window(padded, patch, step)
    starts = tuple((int(a), int(b), int(c)) for a in steps[0] for b in steps[1]
                   for c in steps[2])
    gaussian = None
    if whole is None and predictor.use_gaussian:
        gaussian = compute_gaussian(patch, sigma_scale=1. / 8, value_scaling_factor=10,
                                    dtype=torch.float32, device=torch.device("cpu"))
        gaussian = gaussian.numpy().astype(np.float32, copy=True)
    return TileGrid("whole" if whole is not None else "sliding", shape, pad_lo, padded, patch,
                    starts, gaussian)


@dataclass(frozen=True)
class ExportGeometry:
    """How a prediction on the preprocessed grid goes back onto the image (nnU-Net's export),
    all in nnU-Net's transposed axis order until :attr:`transpose_backward`."""

    model_shape: tuple[int, int, int]  # the preprocessed grid
    cropped_shape: tuple[int, int, int]  # after cropping, before resampling
    bbox: Box  # the crop inside the full (transposed) image
    full_shape: tuple[int, int, int]  # the transposed image before cropping
    orders: tuple[int, int, int]  # interpolation order per axis (1, or 0 along a separate z)
    transpose_backward: tuple[int, int, int]


def export_geometry(predictor, pre: Preprocessed) -> ExportGeometry:
    from nnunetv2.preprocessing.resampling.default_resampling import (
        determine_do_sep_z_and_axis,
        resample_data_or_seg_to_shape,
    )

    pm, cm, props = predictor.plans_manager, predictor.configuration_manager, pre.properties
    name = cm.configuration.get("resampling_fn_probabilities")
    fn = getattr(cm.resampling_fn_probabilities, "func", cm.resampling_fn_probabilities)
    if fn is not resample_data_or_seg_to_shape:
        raise AdapterError(f"this model resamples its predictions with {name}; petloop's "
                           "engine knows nnU-Net's default resample_data_or_seg_to_shape")
    kwargs = dict(cm.configuration.get("resampling_fn_probabilities_kwargs", {}))
    order, order_z = int(kwargs.get("order", 1)), int(kwargs.get("order_z", 0))
    if order not in (0, 1) or order_z not in (0, 1):
        raise AdapterError(f"petloop's engine resamples predictions with order 0 or 1, this "
                           f"model asks for order {order} (order_z {order_z})")
    spacing_t = [props["spacing"][i] for i in pm.transpose_forward]
    separate, axis = determine_do_sep_z_and_axis(kwargs.get("force_separate_z"), cm.spacing,
                                                 spacing_t)
    orders = tuple(order_z if separate and a == axis else order for a in range(3))
    cropped = props["shape_after_cropping_and_before_resampling"]
    return ExportGeometry(tuple(int(s) for s in pre.data.shape[1:]),
                          tuple(int(s) for s in cropped),
                          tuple((int(a), int(b)) for a, b in props["bbox_used_for_cropping"]),
                          tuple(int(s) for s in props["shape_before_cropping"]),
                          orders, tuple(int(a) for a in pm.transpose_backward))


class NetworkAdapter:
    """A trained nnU-Net model, run one tile at a time."""

    def __init__(self, folder: str | Path, folds=("all",), checkpoints=("checkpoint_final.pth",),
                 device: str = "cpu", precision: str = "fp32"):
        self.device = device
        self.precision = precision
        self.predictor = load_predictor(folder, folds, tuple(checkpoints), device,
                                        mirroring=False)
        self.encoding = click_encoding(self.predictor.dataset_json)
        lm = self.predictor.label_manager
        if lm.has_regions or lm.num_segmentation_heads != 2:
            raise AdapterError(f"{folder}: petloop's engine answers models with a background "
                               f"and one lesion class; this one has "
                               f"{lm.num_segmentation_heads} outputs"
                               f"{' (regions)' if lm.has_regions else ''}")
        self.allowed_axes = tuple(int(a) for a in self.predictor.allowed_mirroring_axes or ())
        self._fold = 0
        net = self.predictor.network
        self.network = getattr(net, "_orig_mod", net).to(torch.device(device)).eval()

    @property
    def folds(self) -> int:
        return len(self.predictor.list_of_parameters)

    def use_fold(self, n: int) -> None:
        """Put the weights of ensemble member ``n`` into the network."""
        if n != self._fold:
            self.network.load_state_dict(self.predictor.list_of_parameters[n])
            self._fold = n

    def preprocess(self, ct, pet, clicks=None, box: Box | None = None) -> Preprocessed:
        return preprocess(self.predictor, ct, pet, clicks, box)

    def preprocessing_key(self) -> str:
        """Models with equal keys preprocess a case alike (their image channels can be shared)."""
        import json

        cm, pm = self.predictor.configuration_manager, self.predictor.plans_manager
        published = self.encoding is not None and self.encoding.mode == "published"
        return json.dumps([cm.configuration, pm.plans.get("foreground_intensity_properties_per_"
                                                          "channel"),
                           pm.transpose_forward, self.predictor.dataset_json.get("channel_names"),
                           published], sort_keys=True, default=str)

    def grid(self, shape, window: str, tile_step: float = 0.5) -> TileGrid:
        return tile_grid(self.predictor, shape, window, tile_step)

    def export_geometry(self, pre: Preprocessed) -> ExportGeometry:
        return export_geometry(self.predictor, pre)

    @torch.inference_mode()
    def run_tile(self, x: np.ndarray) -> np.ndarray:
        """Logits ``(2, *patch)`` (float32) of the network for one input tile ``(c, *patch)``."""
        dev = torch.device(self.device)
        t = torch.from_numpy(np.ascontiguousarray(x))[None].to(dev)
        if dev.type == "cuda":
            ctx = torch.autocast("cuda", enabled=True)
        elif self.precision == "bf16":
            ctx = torch.autocast("cpu", dtype=torch.bfloat16)
        else:
            ctx = contextlib.nullcontext()
        with ctx:
            out = self.network(t)
        if isinstance(out, (list, tuple)):  # deep supervision left on: the full resolution
            out = out[0]
        return out[0].float().cpu().numpy()

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()


__all__ = ["AdapterError", "ExportGeometry", "NetworkAdapter", "TileGrid", "WINDOWS",
           "export_geometry", "pooling_divisors", "tile_grid", "whole_tile"]
