"""Click channels for nnU-Net, the same in training and in inference.

Two modes, chosen by the model's ``dataset.json`` channel names (this is the one place that
decides):

``published`` (channels 2 and 3 named ``FG`` and ``BG``)
    The autoPET IV baseline, BIRTH and autoPET III models: raw Gaussian heatmaps (sigma 3,
    not normalised) of the clicks on the full original image, written as input channels 2 and 3
    and normalised by nnU-Net's per-image z-score like any unknown channel. The heatmaps depend
    on the whole volume, so they cannot be rendered per training patch.
``fixed`` (channels named ``CLICKS_FG`` and ``CLICKS_BG``; petloop's own)
    Heatmaps rendered in the preprocessed (cropped, resampled) voxel grid and multiplied by a
    fixed scale so that a lone click peaks at 1. No per-image statistics are involved, so a
    training patch can be rendered on its own and inference renders exactly the same values.
    The settings (encoding, sigma or radius, scale) are stored in ``dataset.json`` under
    ``petloop_clicks``.

Clicks are stored in original voxel coordinates ``(i, j, k)``; :func:`to_preprocessed` maps them
through nnU-Net's transpose, crop and resampling (half-voxel aligned, as its resampling is).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from petloop.clicks.encode import _kernel, encode_clicks
from petloop.clicks.schedules import ClickSchedule
from petloop.clicks.scribble_pool import ScribblePool, apply_draw, draw_scribbles
from petloop.io.clicks import Clicks, read_clicks
from petloop.io.volume import points_from_array_order, points_to_array_order

FIXED_NAMES = ("CLICKS_FG", "CLICKS_BG")
PUBLISHED_NAMES = ("FG", "BG")


@dataclass(frozen=True)
class ClickEncoding:
    mode: str = "fixed"  # "fixed" or "published"
    encoding: str = "gaussian"
    sigma: float = 3.0
    radius: float = 2.0

    @property
    def scale(self) -> float:
        """Fixed mode: the factor that makes a lone Gaussian click peak at 1."""
        if self.mode != "fixed" or self.encoding != "gaussian":
            return 1.0
        kernel = _kernel(float(self.sigma), 4.0)
        return float(1.0 / kernel[(len(kernel) - 1) // 2] ** 3)

    @property
    def support_radius(self) -> int:
        """Voxels from a click beyond which its heatmap is 0 (per axis)."""
        if self.encoding == "gaussian":
            return (_kernel(float(self.sigma), 4.0).size - 1) // 2
        if self.encoding == "binary":
            return 0
        return int(np.ceil(float(self.radius)))

    def to_json(self) -> dict:
        return asdict(self)

    def render(self, clicks: Clicks, shape, crop=None) -> tuple[np.ndarray, np.ndarray]:
        fg, bg = encode_clicks(clicks, shape, None, self.encoding, sigma=self.sigma,
                               radius=self.radius, crop=crop)
        if self.scale != 1.0:
            fg *= np.float32(self.scale)
            bg *= np.float32(self.scale)
        return fg, bg


def click_encoding(dataset_json: dict) -> ClickEncoding | None:
    """The click mode of a model from its dataset.json; None for a model without clicks."""
    names = dataset_json.get("channel_names") or dataset_json.get("modality") or {}
    upper = {int(k): str(v).strip().upper() for k, v in names.items()}
    pair = (upper.get(2), upper.get(3))
    if pair == FIXED_NAMES:
        return ClickEncoding(**{**dataset_json.get("petloop_clicks", {}), "mode": "fixed"})
    if pair == PUBLISHED_NAMES:
        return ClickEncoding(mode="published")
    if len(upper) <= 2:
        return None
    raise ValueError(f"channels 2 and 3 of this model are {pair}; petloop knows clicks as "
                     f"{PUBLISHED_NAMES} (published models) or {FIXED_NAMES} (petloop models)")


def with_click_channels(dataset_json: dict, enc: ClickEncoding) -> dict:
    """A copy of an image-only dataset.json declaring the two click channels of ``enc``."""
    out = json.loads(json.dumps(dataset_json))
    names = dict(out["channel_names"])
    if len(names) != 2:
        raise ValueError(f"expected the two image channels CT and PET, got {names}")
    fg, bg = FIXED_NAMES if enc.mode == "fixed" else PUBLISHED_NAMES
    names.update({"2": fg, "3": bg})
    out["channel_names"] = names
    if enc.mode == "fixed":
        out["petloop_clicks"] = enc.to_json()
    return out


def to_preprocessed(points_ijk, properties: dict, transpose_forward, shape) -> np.ndarray:
    """Original ``(i, j, k)`` voxel indices -> indices of the preprocessed array (spatial axes
    after transpose, crop and resampling)."""
    pts = points_to_array_order(points_ijk).astype(float)
    if pts.size == 0:
        return np.zeros((0, 3), dtype=np.int64)
    pts = pts[:, list(transpose_forward)]
    bbox = np.asarray(properties["bbox_used_for_cropping"], dtype=float)
    pts = pts - bbox[:, 0]
    old = np.asarray(properties["shape_after_cropping_and_before_resampling"], dtype=float)
    new = np.asarray(shape, dtype=float)
    pts = (pts + 0.5) * (new / old) - 0.5
    return np.clip(np.rint(pts), 0, new - 1).astype(np.int64)


def from_preprocessed(points, properties: dict, transpose_forward) -> np.ndarray:
    """The inverse of :func:`to_preprocessed` (to original ``(i, j, k)``), for tests and views."""
    pts = np.asarray(points, dtype=float).reshape(-1, 3)
    old = np.asarray(properties["shape_after_cropping_and_before_resampling"], dtype=float)
    new = np.asarray(properties.get("shape_after_resampling", old), dtype=float)
    pts = (pts + 0.5) * (old / new) - 0.5
    bbox = np.asarray(properties["bbox_used_for_cropping"], dtype=float)
    pts = pts + bbox[:, 0]
    back = np.empty_like(pts)
    back[:, list(transpose_forward)] = pts
    return points_from_array_order(np.rint(back).astype(np.int64))


def clicks_in_preprocessed(clicks: Clicks, properties: dict, transpose_forward,
                           shape) -> Clicks:
    return Clicks.from_points(
        to_preprocessed(clicks.tumor, properties, transpose_forward, shape),
        to_preprocessed(clicks.background, properties, transpose_forward, shape))


class ClickChannels:
    """An image array plus FG/BG click channels that are rendered only for the box asked for.

    nnU-Net's data loader crops a patch with ``array[slices]``; this object answers that with
    the image channels of the patch and the click channels of the same box, so clicks are drawn
    for the patch only and then go through the spatial augmentation with the image.
    """

    def __init__(self, image, clicks: Clicks, enc: ClickEncoding):
        self.image = image
        self.clicks = clicks
        self.enc = enc
        self.spatial = tuple(int(s) for s in image.shape[1:])
        self.shape = (int(image.shape[0]) + 2, *self.spatial)
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, slices):
        if not isinstance(slices, tuple):
            slices = (slices,)
        slices = tuple(slices) + (slice(None),) * (4 - len(slices))
        spatial = [s.indices(n) for s, n in zip(slices[1:], self.spatial, strict=True)]
        if any(step != 1 for _, _, step in spatial):
            raise IndexError("click channels support plain boxes only")
        offset = [a for a, _, _ in spatial]
        size = [max(b - a, 0) for a, b, _ in spatial]
        img = np.asarray(self.image[(slice(None), *slices[1:])], dtype=np.float32)
        fg, bg = self.enc.render(self.clicks, self.spatial, crop=(offset, size))
        full = np.concatenate([img, fg[None], bg[None]], axis=0)
        return full[slices[0]]

    def __array__(self, dtype=None, copy=None):
        out = self[(slice(None),) * 4]
        return out if dtype is None else out.astype(dtype)


def _worker_rng() -> np.random.Generator:
    """A generator for one training sample: data-loading workers are seeded by
    batchgenerators through NumPy's global state."""
    return np.random.default_rng(np.random.randint(2**31))  # noqa: NPY002


@dataclass(frozen=True)
class ClickSource:
    """Where a preprocessed dataset's clicks are, and how a trainer shows them."""

    clicks_dir: Path
    encoding: ClickEncoding
    schedule: ClickSchedule
    transpose_forward: tuple[int, ...]
    validation_step: int = 10

    def clicks_for(self, identifier: str) -> Clicks:
        path = Path(self.clicks_dir) / f"{identifier}_clicks.json"
        return read_clicks(path) if path.is_file() else Clicks()

    def sample(self, identifier: str, properties: dict, shape, k: int | None) -> Clicks:
        """Clicks of step ``k`` (drawn from the schedule when None) in preprocessed indices."""
        if k is None:
            k = int(self.schedule.sample(_worker_rng()))
        return clicks_in_preprocessed(self.clicks_for(identifier).step(k), properties,
                                      self.transpose_forward, shape)


@lru_cache(maxsize=64)
def _pool(path: str) -> ScribblePool:
    return ScribblePool.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


@dataclass(frozen=True)
class ScribbleSource:
    """Where a preprocessed dataset's scribble pools are (:mod:`petloop.clicks.scribble_pool`),
    and how a trainer shows them: k interactions drawn from the schedule, each a stroke of the
    case's pool, in the click channels."""

    scribbles_dir: Path
    encoding: ClickEncoding
    schedule: ClickSchedule
    transpose_forward: tuple[int, ...]
    validation_step: int = 5

    def pool_for(self, identifier: str) -> ScribblePool:
        path = Path(self.scribbles_dir) / f"{identifier}_scribbles.json"
        return _pool(str(path)) if path.is_file() else ScribblePool()

    def sample(self, identifier: str, properties: dict, shape, k: int | None) -> Clicks:
        """Scribbles of ``k`` interactions (drawn from the schedule when None; a fixed ``k``,
        as in validation, draws the same strokes for a case every time)."""
        if k is None:
            rng = _worker_rng()
            k = int(self.schedule.sample(rng))
        else:
            rng = np.random.default_rng(zlib.crc32(identifier.encode()))
        pool = self.pool_for(identifier)
        return clicks_in_preprocessed(apply_draw(pool, draw_scribbles(pool, k, rng)),
                                      properties, self.transpose_forward, shape)
