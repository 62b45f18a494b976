"""A trained nnU-Net model folder and nnU-Net's preprocessing of a case.

:func:`load_predictor` loads the folder (folds and checkpoint files as an ensemble) into nnU-Net's
predictor; :func:`preprocess` runs nnU-Net's own preprocessor on CT and PET (and, for published
models, the click channels, which nnU-Net then normalises like any image). The network runs
through :mod:`petloop.nnunet.adapter`, driven by :mod:`petloop.inference.engine`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from petloop.clicks.encode import gaussian_heatmap
from petloop.io.clicks import Clicks
from petloop.io.volume import Volume
from petloop.nnunet.clickspace import click_encoding
from petloop.nnunet.resample import Box


@dataclass
class Preprocessed:
    """One case after nnU-Net's preprocessing, kept so that only the clicks change per click."""

    data: np.ndarray  # (2, ...) preprocessed CT and PET (or 4 channels, published mode)
    properties: dict
    reference: Volume  # the PET grid


def load_predictor(model_folder: str | Path, folds: Sequence = ("all",),
                   checkpoint: str | Sequence[str] = "checkpoint_final.pth", device: str = "cpu",
                   mirroring: bool = False, tile_step_size: float = 0.5):
    """nnU-Net's predictor for ``folds`` of a model folder; with several checkpoint names the
    weights of every fold and name are in ``predictor.list_of_parameters`` (an ensemble)."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from petloop.nnunet.paths import trainers_visible

    predictor = nnUNetPredictor(tile_step_size=tile_step_size, use_gaussian=True,
                                use_mirroring=mirroring, perform_everything_on_device=False,
                                device=torch.device(device), verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    folds = [f if f == "all" else int(f) for f in folds]
    names = [checkpoint] if isinstance(checkpoint, str) else list(checkpoint)
    with trainers_visible():  # the checkpoint names its trainer class
        predictor.initialize_from_trained_model_folder(str(model_folder), use_folds=folds,
                                                       checkpoint_name=names[0])
    for name in names[1:]:
        for f in folds:
            ckpt = torch.load(Path(model_folder) / f"fold_{f}" / name, map_location="cpu",
                              weights_only=False)
            predictor.list_of_parameters.append(ckpt["network_weights"])
    return predictor


def _published_channels(clicks: Clicks, pet: Volume) -> list[np.ndarray]:
    shape = pet.shape
    out = []
    for pts in (clicks.tumor, clicks.background):
        h = gaussian_heatmap(pts, shape, sigma=3.0)  # raw, as the published models saw them
        out.append(pet.with_array(h).itk_array())
    return out


def raw_input(predictor, ct: Volume, pet: Volume, clicks: Clicks | None = None,
              box: Box | None = None) -> tuple[np.ndarray, dict]:
    """The model's raw input channels in nnU-Net's array order, and their properties; with
    ``box`` (``(i, j, k)`` half-open ranges) only that part of the image."""
    enc = click_encoding(predictor.dataset_json)
    channels = [ct.itk_array().astype(np.float32), pet.itk_array().astype(np.float32)]
    if enc is not None and enc.mode == "published":
        channels += _published_channels(clicks or Clicks(), pet)
    data = np.stack(channels)
    if box is not None:  # the itk array's axes are (k, j, i)
        data = np.ascontiguousarray(data[(slice(None), *(slice(a, b) for a, b in box[::-1]))])
    return data, {"spacing": list(pet.itk_spacing())}


def uncrop_properties(props: dict, box: Box | None, image_shape, transpose_forward) -> dict:
    """nnU-Net's properties of a case preprocessed from ``box`` of an image of ``image_shape``
    (``(i, j, k)``), rewritten as if nnU-Net had cropped the whole image to that box itself: its
    export then puts the prediction back into the image, background around it."""
    if box is None:
        return props
    full = [int(n) for n in image_shape[::-1]]
    offset = [int(a) for a, _ in box[::-1]]
    full_t = [full[i] for i in transpose_forward]
    offset_t = [offset[i] for i in transpose_forward]
    props = dict(props)
    props["shape_before_cropping"] = tuple(full_t)
    props["bbox_used_for_cropping"] = [[int(a) + o, int(b) + o] for (a, b), o in
                                       zip(props["bbox_used_for_cropping"], offset_t, strict=True)]
    return props


def preprocess(predictor, ct: Volume, pet: Volume, clicks: Clicks | None = None,
               box: Box | None = None) -> Preprocessed:
    """nnU-Net's preprocessing of CT and PET (plus, for published models, the click channels,
    which then depend on the clicks: call again for new clicks); with ``box``, of that part of
    the image only (see :func:`uncrop_properties`)."""
    data, props = raw_input(predictor, ct, pet, clicks, box)
    pp = predictor.configuration_manager.preprocessor_class(verbose=False)
    data, _, props = pp.run_case_npy(data, None, props, predictor.plans_manager,
                                     predictor.configuration_manager, predictor.dataset_json)
    props = uncrop_properties(props, box, pet.shape, predictor.plans_manager.transpose_forward)
    return Preprocessed(data, props, pet)


__all__ = ["Preprocessed", "load_predictor", "preprocess", "raw_input", "uncrop_properties"]
