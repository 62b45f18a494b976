"""Tracer uptake, CT numbers and the imaging physics of the phantom.

:func:`draw_imaging` draws a patient's physiological uptake and the scanner's properties;
:func:`activity_map` and :func:`ct_map` turn a region map into ideal images; :func:`pet_physics`
and :func:`ct_physics` blur them with the scanner resolution and add noise. Noise in PET has a
variance proportional to the local mean (counting statistics), so small, faint lesions are
partly lost, as in real scans.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from petloop.phantom.regions import N_REGIONS, R, region_table

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


@dataclass(frozen=True)
class ImagingSpec:
    tracer: str
    agent: str
    suv: tuple[float, ...]  # mean SUV per region id
    contrast: float  # 0 (unenhanced CT) .. 1 (full portal-venous enhancement)
    fwhm_mm: float
    noise_cv: float  # coefficient of variation of noise at the liver's mean SUV
    ct_noise_hu: float
    heterogeneity: float
    seed: int  # noise and texture

    def to_json(self) -> dict:
        out = asdict(self)
        names = [r.name for r in region_table()]
        out["suv"] = {n: round(float(v), 3) for n, v in zip(names, self.suv, strict=True)}
        return out


def _lognormal(rng, mean: float, cv: float) -> float:
    if mean <= 0:
        return 0.0
    sigma = np.sqrt(np.log1p(cv * cv))
    return float(mean * np.exp(rng.normal(-sigma * sigma / 2, sigma)))


def draw_imaging(rng: np.random.Generator, tracer: str, fwhm_mm=(6.0, 7.0),
                 noise_cv=(0.10, 0.15)) -> ImagingSpec:
    if tracer not in ("fdg", "psma"):
        raise ValueError(f"unknown tracer {tracer!r}; use 'fdg' or 'psma'")
    agent = "18F-FDG"
    if tracer == "psma":
        agent = "68Ga-PSMA-11" if rng.random() < 0.6 else "18F-PSMA-1007"
    suv = np.zeros(N_REGIONS)
    for reg in region_table():
        mean, cv = reg.fdg if tracer == "fdg" else reg.psma
        suv[reg.rid] = _lognormal(rng, mean, cv)
    if tracer == "fdg":
        # myocardium: from background to very hot between patients
        suv[R["myocardium"]] = (float(rng.uniform(1.4, 3.0)) if rng.random() < 0.4
                                else float(rng.uniform(4.0, 14.0)))
    elif agent == "18F-PSMA-1007":
        # mostly hepatobiliary excretion: about twice the liver uptake, little urine activity
        suv[R["liver"]] *= 2.1
        suv[R["spleen"]] *= 1.3
        suv[R["bladder"]] *= 0.25
        suv[R["renal_pelvis"]] *= 0.4
    # the bladder is never colder than the blood and the kidneys never colder than the liver
    suv[R["bladder"]] = float(np.clip(suv[R["bladder"]], 2.0, 50.0))
    suv[R["kidney"]] = max(suv[R["kidney"]], suv[R["liver"]] * 1.05)
    return ImagingSpec(
        tracer=tracer,
        agent=agent,
        suv=tuple(float(v) for v in suv),
        contrast=float(rng.choice([0.0, rng.uniform(0.6, 1.0)], p=[0.25, 0.75])),
        fwhm_mm=float(rng.uniform(*fwhm_mm)),
        noise_cv=float(rng.uniform(*noise_cv)),
        ct_noise_hu=float(rng.uniform(10.0, 20.0)),
        heterogeneity=float(rng.uniform(0.05, 0.10)),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def _smooth_field(rng, shape, cell: int = 8) -> np.ndarray:
    """Unit-variance, low-frequency random field (about ``cell`` voxels correlation)."""
    coarse = [max(2, n // cell + 2) for n in shape]
    low = rng.standard_normal(coarse).astype(np.float32)
    field = ndimage.zoom(low, [n / c for n, c in zip(shape, coarse, strict=True)], order=1,
                         grid_mode=True, mode="nearest")
    field = field[: shape[0], : shape[1], : shape[2]]
    return field / max(float(field.std()), 1e-6)


def activity_map(regions: np.ndarray, spec: ImagingSpec) -> np.ndarray:
    """Ideal SUV image: per-region uptake with smooth within-organ variation."""
    lut = np.asarray(spec.suv, dtype=np.float32)
    activity = lut[regions]
    rng = np.random.default_rng([spec.seed, 1])
    activity *= 1.0 + spec.heterogeneity * _smooth_field(rng, regions.shape)
    np.maximum(activity, 0, out=activity)
    return activity


def ct_map(regions: np.ndarray, spec: ImagingSpec) -> np.ndarray:
    table = region_table()
    lut = np.array([r.hu + spec.contrast * r.contrast_hu for r in table], dtype=np.float32)
    return lut[regions]


def _sigma_vox(fwhm_mm: float, spacing) -> list[float]:
    return [fwhm_mm * FWHM_TO_SIGMA / s for s in spacing]


def pet_physics(activity: np.ndarray, spacing, spec: ImagingSpec, liver_suv: float) -> np.ndarray:
    """Blur with the scanner PSF, then add correlated noise with variance ∝ mean."""
    blurred = ndimage.gaussian_filter(activity, _sigma_vox(spec.fwhm_mm, spacing), mode="nearest")
    rng = np.random.default_rng([spec.seed, 2])
    noise = rng.standard_normal(activity.shape, dtype=np.float32)
    noise = ndimage.gaussian_filter(noise, _sigma_vox(4.0, spacing), mode="nearest")
    noise /= max(float(noise.std()), 1e-6)
    alpha = spec.noise_cv ** 2 * max(liver_suv, 0.5)  # var = alpha * mean
    np.maximum(blurred, 0, out=blurred)
    pet = blurred + np.sqrt(alpha * blurred) * noise
    np.maximum(pet, 0, out=pet)
    return pet.astype(np.float32, copy=False)


def ct_physics(ct: np.ndarray, spacing, spec: ImagingSpec) -> np.ndarray:
    """Partial-volume blur of resampling onto the PET grid, plus CT noise; int16 HU."""
    out = ndimage.gaussian_filter(ct, [0.5, 0.5, 0.4], mode="nearest")
    rng = np.random.default_rng([spec.seed, 3])
    noise = rng.standard_normal(ct.shape, dtype=np.float32)
    out += spec.ct_noise_hu * noise
    np.clip(out, -1024, 3071, out=out)
    return np.rint(out).astype(np.int16)
