"""Synthetic whole-body PET/CT cases: configuration, one case, and a whole dataset on disk.

Every case is drawn from its own random stream ``(seed, case index)``, so case ``n`` of a seed is
the same whatever the number of cases asked for. Drawing (anatomy, uptake, lesions) is kept apart
from rendering; the drawn parameters are written to the case's JSON so a case can be explained
and re-rendered.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import cc3d
import numpy as np

from petloop.io.atomic import write_json_atomic
from petloop.io.layouts import LAYOUTS, Case, CaseFiles, write_case, write_nnunet_dataset_json
from petloop.io.outputs import held_signals, replace_folder
from petloop.io.volume import Volume
from petloop.phantom.anatomy import draw_anatomy, render_regions
from petloop.phantom.lesions import draw_lesions, render_lesions
from petloop.phantom.physics import (
    activity_map,
    ct_map,
    ct_physics,
    draw_imaging,
    pet_physics,
)
from petloop.phantom.regions import ORGAN_CLASSES, ORGAN_LUT, R
from petloop.phantom.shapes import TOP_MM, Grid

TRACER_CHOICES = ("fdg", "psma", "mixed")
Preset = Literal["autopet-fdg", "autopet-psma", "quick", "trunk"]
#: Grids of real scans and a coarse one. autopet-fdg: the autoPET FDG grid (Siemens Biograph
#: mCT, 400 x 400 at 2.0364 mm, 326 slices of 3 mm: 815 x 815 x 978 mm, the lowest 40 mm of
#: the thighs outside). autopet-psma: a typical PSMA grid (200 x 200 at 4.0728 mm, 340 slices of
#: 3 mm). quick: an adult body from the vertex to mid-thigh, whole, at 3 x 3 x 4 mm (the bundled
#: models' plan spacing), for tests and CPU training. trunk: a crop of that body, 432 x 312 x
#: 256 mm from 440 mm below the vertex (lower chest, heart, liver, spleen, kidneys): a dozen tiles
#: of the bundled networks within its body box, for the demo.
PRESETS: dict[str, tuple[tuple[int, int, int], tuple[float, float, float]]] = {
    "autopet-fdg": ((400, 400, 326), (2.0364, 2.0364, 3.0)),
    "autopet-psma": ((200, 200, 340), (4.0728, 4.0728, 3.0)),
    "quick": ((168, 128, 256), (3.0, 3.0, 4.0)),
    "trunk": ((144, 104, 64), (3.0, 3.0, 4.0)),
}
PRESET_TOP_MM = {"trunk": 440.0}
DEFAULT_PRESET = "quick"
DEFAULT_SHAPE, DEFAULT_SPACING = PRESETS[DEFAULT_PRESET]


@dataclass(frozen=True)
class PhantomConfig:
    """Everything that decides a phantom set; saved as JSON beside the cases."""

    seed: int = 0
    tracer: str = "mixed"
    shape: tuple[int, int, int] = DEFAULT_SHAPE
    spacing: tuple[float, float, float] = DEFAULT_SPACING
    negative_fraction: float = 0.2
    lesions: tuple[int, int] | None = None  # (min, max) lesions per positive case
    fwhm_mm: tuple[float, float] = (6.0, 7.0)
    noise_cv: tuple[float, float] = (0.10, 0.15)
    top_mm: float = TOP_MM  # the grid's top slice, in mm below the vertex (see Grid.fit)

    def __post_init__(self) -> None:
        if self.tracer not in TRACER_CHOICES:
            raise ValueError(f"tracer must be one of {TRACER_CHOICES}, got {self.tracer!r}")
        if not 0.0 <= self.negative_fraction <= 1.0:
            raise ValueError(f"negative fraction must lie in [0, 1], got {self.negative_fraction}")
        if len(self.shape) != 3 or min(self.shape) < 16:
            raise ValueError(f"shape needs 3 sizes of at least 16 voxels, got {self.shape}")
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"spacing needs 3 positive values, got {self.spacing}")
        if self.lesions is not None and not 0 <= self.lesions[0] <= self.lesions[1]:
            raise ValueError(f"lesions needs 0 <= min <= max, got {self.lesions}")
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        if self.lesions is not None:
            object.__setattr__(self, "lesions", tuple(int(n) for n in self.lesions))

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def preset(cls, name: Preset, **options) -> PhantomConfig:
        """A configuration on one of the :data:`PRESETS` grids."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; use one of {tuple(PRESETS)}")
        shape, spacing = PRESETS[name]  # options (shape, spacing, top_mm too) win
        return cls(**{"shape": shape, "spacing": spacing,
                      "top_mm": PRESET_TOP_MM.get(name, TOP_MM), **options})

    @classmethod
    def from_json(cls, obj: dict) -> PhantomConfig:
        obj = dict(obj)
        for key in ("shape", "spacing", "lesions", "fwhm_mm", "noise_cv"):
            if obj.get(key) is not None:
                obj[key] = tuple(obj[key])
        return cls(**obj)

    # per-case decisions that must not depend on the number of cases
    def tracer_of(self, index: int) -> str:
        if self.tracer != "mixed":
            return self.tracer
        return "fdg" if index % 2 == 0 else "psma"

    def is_negative(self, index: int) -> bool:
        """Low-discrepancy choice: any run of cases holds about the asked fraction."""
        u = np.random.default_rng([self.seed, 999_983]).random()
        f = self.negative_fraction
        return int(np.floor((index + 1) * f + u)) > int(np.floor(index * f + u))

    def case_id(self, index: int) -> str:
        return f"{self.tracer_of(index)}_phantom{index:04d}_s{self.seed}"


@dataclass(frozen=True, eq=False)
class PhantomCase:
    case: Case
    info: dict = field(default_factory=dict)
    regions: np.ndarray | None = None


def _lesion_count(rng: np.random.Generator, config: PhantomConfig, tracer: str) -> int:
    if config.lesions is not None:
        return int(rng.integers(config.lesions[0], config.lesions[1] + 1))
    if tracer == "fdg":
        return int(min(1 + rng.negative_binomial(1.2, 1.2 / 6.2), 40))
    return int(min(1 + rng.negative_binomial(1.0, 1.0 / 8.0), 60))


def phantom_case(config: PhantomConfig, index: int) -> Case:
    """Case ``index`` of ``config`` (module level, so ``functools.partial(phantom_case, config)``
    can go to worker processes)."""
    return generate_case(config, index).case


def generate_case(config: PhantomConfig, index: int, keep_regions: bool = False) -> PhantomCase:
    """Draw and render case ``index`` of ``config``."""
    tracer = config.tracer_of(index)
    rng = np.random.default_rng([config.seed, index])
    anatomy = draw_anatomy(rng, sex="male" if tracer == "psma" else None)
    imaging = draw_imaging(rng, tracer, config.fwhm_mm, config.noise_cv)
    weight = float(np.clip(75 * anatomy.body ** 2 + rng.normal(0, 6), 40, 150))
    negative = config.is_negative(index)
    count = 0 if negative else _lesion_count(rng, config, tracer)
    lesion_rng = np.random.default_rng(rng.integers(0, 2**63 - 1))

    grid = Grid.fit(config.shape, config.spacing, top_mm=config.top_mm)
    regions = render_regions(anatomy, grid)
    lesions = draw_lesions(lesion_rng, tracer, anatomy, grid, regions, count,
                           imaging.fwhm_mm)
    activity = activity_map(regions, imaging)
    organ_means = _organ_means(activity, regions)
    ct_ideal = ct_map(regions, imaging)
    ids = render_lesions(grid, lesions, regions, activity, ct_ideal)
    pet = pet_physics(activity, grid.spacing, imaging, liver_suv=imaging.suv[R["liver"]])
    del activity
    ct = ct_physics(ct_ideal, grid.spacing, imaging)
    del ct_ideal
    label = (ids > 0).astype(np.uint8)
    organs = ORGAN_LUT[regions]

    def vol(a: np.ndarray) -> Volume:
        return Volume(a, grid.spacing, grid.origin)

    voxel_ml = float(np.prod(grid.spacing)) / 1000.0
    lesion_info = _lesion_records(lesions, ids, pet, grid, voxel_ml)
    n_components = int(cc3d.connected_components(label, connectivity=26, return_N=True)[1])
    info = {
        "case_id": config.case_id(index),
        "tracer": tracer,
        "agent": imaging.agent,
        "patient_weight_kg": round(weight, 1),
        "sex": anatomy.sex,
        "negative_control": negative,
        "n_lesions": len(lesion_info),
        "n_components": n_components,
        "total_lesion_volume_ml": round(sum(x["volume_ml"] for x in lesion_info), 4),
        "lesions": lesion_info,
        "organ_suv_mean": organ_means,
        "organ_classes": {str(k): v for k, v in ORGAN_CLASSES.items()},
        "geometry": vol(label).geometry(),
        "field_of_view": {"top_mm": grid.z_top, "covers_body": grid.covers(anatomy.body)},
        "anatomy": anatomy.to_json(),
        "imaging": imaging.to_json(),
        "phantom_config": config.to_json(),
        "index": index,
    }
    case = Case(config.case_id(index), vol(ct), vol(pet), vol(label), vol(organs), None,
                tracer, {k: info[k] for k in ("tracer", "patient_weight_kg", "agent")})
    return PhantomCase(case, info, regions if keep_regions else None)


def _organ_means(activity: np.ndarray, regions: np.ndarray) -> dict:
    """Ideal mean SUV (before blur and noise) per organ class and of the blood pool."""
    organs = ORGAN_LUT[regions]
    sums = np.bincount(organs.ravel(), weights=activity.ravel(), minlength=11)
    counts = np.bincount(organs.ravel(), minlength=11)
    out = {ORGAN_CLASSES[c]: round(float(sums[c] / counts[c]), 3)
           for c in ORGAN_CLASSES if counts[c] > 0}
    blood = regions == R["blood"]
    if blood.any():
        out["blood_pool"] = round(float(activity[blood].mean()), 3)
    return out


def _lesion_records(lesions, ids, pet, grid, voxel_ml) -> list[dict]:
    records = []
    counts = np.bincount(ids.ravel(), minlength=len(lesions) + 1)
    for les in lesions:
        n = int(counts[les.lesion_id])
        if n == 0:
            continue
        c_idx = grid.to_index(np.asarray(les.centre_ref))
        lo = np.maximum(np.floor(c_idx - les.diameter_mm / np.asarray(grid.spacing)), 0)
        hi = np.minimum(np.ceil(c_idx + les.diameter_mm / np.asarray(grid.spacing)) + 1,
                        grid.shape)
        sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        inside = ids[sl] == les.lesion_id
        suvmax = float(pet[sl][inside].max()) if inside.any() else float(pet[ids == les.lesion_id]
                                                                          .max())
        records.append({
            "id": les.lesion_id,
            "site": les.site,
            "station": les.station,
            "centre_mm": [round(float(v), 2) for v in grid.to_physical(np.asarray(les.centre_ref))],
            "centre_index": [int(round(float(v))) for v in c_idx],
            "diameter_mm": les.diameter_mm,
            "volume_ml": round(n * voxel_ml, 4),
            "voxels": n,
            "suv_peak_true": round(les.suv_peak, 3),
            "suvmax": round(suvmax, 3),
            "necrotic": les.necrotic,
            "spec": les.to_json(),
        })
    return records


def write_phantoms(config: PhantomConfig, out: str | Path, cases: int, layout: str = "autopet",
                   on_case: Callable[[int, dict], None] | None = None) -> list[CaseFiles]:
    """Generate ``cases`` phantoms into ``out`` in ``layout``; returns their files.

    The per-case JSON (tracer, weight, lesions) is written beside each case, the configuration
    as ``phantom_config.json`` and, for the nnU-Net layout, ``dataset.json``. Each case is
    written whole or not at all (:func:`write_case_whole`): an interrupted run leaves the cases
    it finished, and neither a temporary file nor a half-written case.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; use one of {LAYOUTS}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(cases):
        ph = generate_case(config, index)
        case = Case(ph.case.case_id, ph.case.ct, ph.case.pet, ph.case.label, ph.case.organs,
                    None, ph.case.tracer, ph.info)
        files = write_case_whole(case, out, layout)
        written.append(files)
        if on_case is not None:
            on_case(index, ph.info)
    if layout == "nnunet":
        write_nnunet_dataset_json(out, cases, name=f"petloop_phantoms_s{config.seed}")
    write_json_atomic(out / "phantom_config.json", config.to_json())
    return written


def _paths(files: CaseFiles) -> list[Path]:
    return [p for p in (files.label, files.organs, files.clicks, files.meta, files.pet, files.ct)
            if p is not None]


def write_case_whole(case: Case, out: str | Path, layout: str) -> CaseFiles:
    """Write one case into ``out`` (see :func:`petloop.io.layouts.write_case`) whole or not at
    all: its files go into a hidden temporary folder in ``out`` first (``.case-...``, which
    :func:`~petloop.io.layouts.find_cases` skips), and are renamed into place once all are
    written, with SIGINT and SIGTERM held back for those renames. On any error or interrupt
    while the case is written, the temporary folder is removed and a case written before under
    the same name stays as it was.
    """
    out = Path(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".case-{case.case_id}.", suffix=".part", dir=out))
    try:
        files = write_case(case, tmp, layout)
        paths = _paths(files)
        if layout != "nnunet":  # autopet and gc: one folder per case, renamed at once
            common = Path(os.path.commonpath(paths))
            replace_folder(common, out / common.relative_to(tmp))
        else:  # nnunet: one file per folder, the CT (by which a case is found) last
            moved: list[Path] = []
            with held_signals():
                try:
                    for p in paths:
                        dest = out / p.relative_to(tmp)
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(p, dest)
                        moved.append(dest)
                except BaseException:
                    for dest in moved:
                        dest.unlink(missing_ok=True)
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def moved(p: Path | None) -> Path | None:
        return None if p is None else out / p.relative_to(tmp)

    return dataclasses.replace(files, ct=moved(files.ct), pet=moved(files.pet),
                               label=moved(files.label), organs=moved(files.organs),
                               clicks=moved(files.clicks), meta=moved(files.meta))
