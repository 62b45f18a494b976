"""Lesions: where they go, how big and how hot, and their irregular shapes.

:func:`draw_lesions` takes every random number (sites, centres, sizes, shapes, uptake) and
returns frozen :class:`LesionSpec` records; :func:`render_lesions` rasterises them into a
lesion-id map and writes their activity into the ideal PET and, in lung and bone only, their
density into the CT.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from scipy.special import erf

from petloop.phantom.anatomy import AnatomySpec
from petloop.phantom.regions import BONE_REGIONS, R
from petloop.phantom.shapes import Grid, ellipsoid_norm, rotation

# Lymph-node stations as boxes (lo, hi) in the reference frame.
NODE_STATIONS = {
    "cervical": ((-55, -30, 225), (55, 30, 295)),
    "supraclavicular": ((-80, -20, 300), (80, 30, 330)),
    "axillary": ((-150, -30, 345), (150, 50, 430)),
    "mediastinal": ((-25, -45, 395), (30, 35, 500)),
    "hilar": ((-50, -10, 440), (50, 35, 490)),
    "para-aortic": ((-35, 10, 680), (40, 60, 800)),
    "mesenteric": ((-70, -60, 700), (70, 20, 790)),
    "iliac": ((-85, -10, 800), (85, 40, 880)),
    "inguinal": ((-120, -70, 895), (120, -20, 940)),
}
SOFT = (R["fat"], R["muscle"], R["viscera"])
SITE_REGIONS = {
    "lymph_node": SOFT,
    "lung": (R["lung"],),
    "liver": (R["liver"],),
    "bone": BONE_REGIONS,
    "prostate": (R["prostate"],),
    "soft_tissue": (R["muscle"], R["viscera"]),
}
SITE_P = {
    "fdg": {"lymph_node": 0.42, "lung": 0.18, "liver": 0.12, "bone": 0.12, "soft_tissue": 0.04,
            "near_hot_organ": 0.12},
    "psma": {"lymph_node": 0.38, "bone": 0.34, "prostate": 0.08, "soft_tissue": 0.04,
             "liver": 0.03, "lung": 0.03, "near_hot_organ": 0.10},
}
HOT_ORGANS = {
    "fdg": ("kidney_r", "kidney_l", "bladder", "heart"),
    "psma": ("kidney_r", "kidney_l", "parotid_r", "parotid_l", "submandibular_r",
             "submandibular_l", "bladder"),
}
# PSMA SUVmax by site (mean, sd), 68Ga-PSMA-11 [SPEC section 9]
PSMA_SUV = {"prostate": (11, 8), "lymph_node": (15, 14), "bone": (16, 16),
            "soft_tissue": (24, 16)}
FDG_FAINT_SUVMAX = (2.8, 4.0)  # just above the liver's SUVmax of about 2.7 [SPEC section 9]
FDG_SIZE_EXPONENT = 0.5  # median FDG SUVmax grows as the square root of the diameter


@dataclass(frozen=True)
class LesionSpec:
    lesion_id: int
    site: str
    station: str | None  # lymph-node station or the hot organ it touches
    centre_ref: tuple[float, float, float]
    diameter_mm: float
    lobes: tuple  # ((offset_ref xyz, radii_ref xyz), ...), the first is the main lobe
    angles: tuple[float, float, float]
    roughness: float
    suv_peak: float
    necrotic: bool
    ct_hu: float  # density where the lesion lies in lung or bone
    shape_seed: int

    def to_json(self) -> dict:
        d = asdict(self)
        d["lobes"] = [[list(map(float, o)), list(map(float, r))] for o, r in self.lobes]
        return d


def _lognormal_ms(rng, mean, sd) -> float:
    sigma2 = np.log1p((sd / mean) ** 2)
    return float(np.exp(rng.normal(np.log(mean) - sigma2 / 2, np.sqrt(sigma2))))


def _region_at(grid: Grid, regions: np.ndarray, ref) -> int:
    idx = np.rint(grid.to_index(np.asarray(ref, dtype=float))).astype(int)
    if np.any(idx < 0) or np.any(idx >= grid.shape):
        return -1
    return int(regions[tuple(idx)])


def _sample_in(rng, grid, regions, lo, hi, allowed, tries=300):
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    for _ in range(tries):
        p = rng.uniform(lo, hi)
        if _region_at(grid, regions, p) in allowed:
            return p
    return None


def _organ_box(anatomy: AnatomySpec, name: str):
    c, r = anatomy.organ(name)
    return c - r, c + r


def _site_box(anatomy: AnatomySpec, site: str):
    if site == "lung":
        a, b = _organ_box(anatomy, "lung_r"), _organ_box(anatomy, "lung_l")
        return np.minimum(a[0], b[0]), np.maximum(a[1], b[1])
    if site in ("liver", "prostate"):
        return _organ_box(anatomy, site)
    if site == "bone":
        return np.array([-150.0, -80, 220]), np.array([150.0, 110, 1000])
    return np.array([-150.0, -100, 300]), np.array([150.0, 110, 900])  # soft tissue


def _place(rng, site, tracer, anatomy, grid, regions, radius_ref):
    """A centre (reference frame) for a lesion at ``site``; None when none is found."""
    if site == "near_hot_organ":
        organ = str(rng.choice(HOT_ORGANS[tracer]))
        c, r = anatomy.organ(organ)
        for _ in range(100):
            u = rng.normal(size=3)
            u[2] *= 0.5
            u /= np.linalg.norm(u)
            surface = c + r * u
            p = surface + u * radius_ref * 0.55
            if _region_at(grid, regions, p) in SOFT:
                return p, organ
        return None, organ
    if site == "lymph_node":
        station = str(rng.choice(list(NODE_STATIONS)))
        lo, hi = NODE_STATIONS[station]
        w = np.array([anatomy.body, anatomy.body, 1.0])
        return _sample_in(rng, grid, regions, np.array(lo) * w, np.array(hi) * w, SOFT), station
    lo, hi = _site_box(anatomy, site)
    return _sample_in(rng, grid, regions, lo, hi, SITE_REGIONS[site]), None


def recovery(diameter_mm: float, fwhm_mm: float) -> float:
    """Centre value of a uniform sphere after a Gaussian blur (the recovery coefficient)."""
    s = fwhm_mm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    t = diameter_mm / 2.0 / s
    return float(erf(t / np.sqrt(2.0)) - np.sqrt(2.0 / np.pi) * t * np.exp(-t * t / 2.0))


def _suv_peak(rng, tracer: str, site: str, diameter_mm: float, fwhm_mm: float) -> float:
    """True activity concentration. Published SUVmax values are measured on blurred images,
    so the drawn SUVmax is divided by the recovery of a sphere of that size (at most 4x).

    FDG: a lesion is labelled only when FDG-avid, taking up more than the liver (SUVmax about
    2.7), so the faint tenth are drawn just above it, and the uptake of avid lesions rises with
    their size (median SUVmax 6.4 at 14 mm, 12 at 50 mm), which brings the SUV in lesion voxels
    near the published mean of 7 (SPEC section 9)."""
    faint = rng.random() < 0.1
    if tracer == "fdg":
        mean = 8.0 * (diameter_mm / 14.0) ** FDG_SIZE_EXPONENT
        suvmax = float(rng.uniform(*FDG_FAINT_SUVMAX) if faint
                       else np.clip(_lognormal_ms(rng, mean, 0.75 * mean), 3.0, 60.0))
    elif faint:  # PSMA: barely above the surroundings, a true activity
        return float(rng.uniform(1.6, 3.0))
    else:
        mean, sd = PSMA_SUV.get("soft_tissue" if site == "near_hot_organ" else site, (12, 10))
        suvmax = float(np.clip(_lognormal_ms(rng, mean, sd), 2.0, 100.0))
    return suvmax / max(recovery(diameter_mm, fwhm_mm), 0.25)


def draw_lesions(rng: np.random.Generator, tracer: str, anatomy: AnatomySpec, grid: Grid,
                 regions: np.ndarray, count: int, fwhm_mm: float = 6.5) -> list[LesionSpec]:
    """Draw ``count`` lesions (fewer when a site has no room, e.g. a prostate in a woman)."""
    sites = list(SITE_P[tracer])
    p = np.array([SITE_P[tracer][s] for s in sites])
    body_width_mm = 2 * 160 * anatomy.body
    d_max = float(np.clip(0.3 * body_width_mm, 12.0, 50.0))
    median = 14.0 if tracer == "fdg" else 9.0
    out: list[LesionSpec] = []
    for n in range(count):
        site = str(rng.choice(sites, p=p))
        if site == "prostate" and anatomy.sex != "male":
            site = "lymph_node"
        d = float(np.clip(median * np.exp(rng.normal(0, 0.55)), 4.0, d_max))
        if site in ("prostate", "bone"):
            d = min(d, 28.0)
        radius_ref = d / 2
        centre, station = _place(rng, site, tracer, anatomy, grid, regions, radius_ref)
        # shape draws are taken even when placement failed, so later lesions do not shift
        aspect = rng.uniform(0.65, 1.0, size=2)
        main = (radius_ref, radius_ref * aspect[0], radius_ref * aspect[1])
        lobes = [((0.0, 0.0, 0.0), main)]
        n_extra = int(rng.integers(0, 4 if d > 10 else 2))
        for _ in range(n_extra):
            u = rng.normal(size=3)
            u /= np.linalg.norm(u)
            off = u * radius_ref * rng.uniform(0.35, 0.65)
            lobes.append((tuple(off), tuple(radius_ref * rng.uniform(0.4, 0.7, size=3))))
        angles = tuple(float(a) for a in rng.uniform(0, np.pi, size=3))
        roughness = float(rng.uniform(0.1, 0.35))
        suv = _suv_peak(rng, tracer, site, d, fwhm_mm)
        necrotic = bool(tracer == "fdg" and d > 25 and rng.random() < 0.35)
        in_bone_hu = float(rng.uniform(500, 1100) if (tracer == "psma" or rng.random() < 0.3)
                           else rng.uniform(20, 120))
        ct_hu = in_bone_hu if site == "bone" else float(rng.uniform(10, 60))
        seed = int(rng.integers(0, 2**31 - 1))
        if centre is None:
            continue
        out.append(LesionSpec(
            lesion_id=len(out) + 1, site=site, station=station,
            centre_ref=tuple(float(c) for c in centre), diameter_mm=round(d, 3),
            lobes=tuple((tuple(map(float, o)), tuple(map(float, r))) for o, r in lobes),
            angles=angles, roughness=roughness, suv_peak=suv, necrotic=necrotic, ct_hu=ct_hu,
            shape_seed=seed))
        del n
    return out


def lesion_field(grid: Grid, lesion: LesionSpec):
    """(slices, f) with f <= 1 inside the lesion: min over lobes of the ellipsoidal norm,
    perturbed by smooth noise for an irregular outline."""
    c = np.asarray(lesion.centre_ref)
    reach = max(np.linalg.norm(o) + max(r) for o, r in lesion.lobes) * 1.3
    sl = grid.box(c - reach, c + reach)
    if sl is None:
        return None
    rot = rotation(lesion.angles)
    f = None
    for off, radii in lesion.lobes:
        centre = c + rot @ np.asarray(off)
        g = ellipsoid_norm(grid, sl, centre, radii, rot)
        f = g if f is None else np.minimum(f, g)
    f = np.broadcast_to(f, tuple(s.stop - s.start for s in sl)).astype(np.float32)
    rng = np.random.default_rng(lesion.shape_seed)
    noise = rng.standard_normal(f.shape).astype(np.float32)
    sigma = np.maximum(lesion.diameter_mm / 6 / np.asarray(grid.spacing), 0.5)
    noise = ndimage.gaussian_filter(noise, sigma, mode="wrap")
    noise /= max(float(noise.std()), 1e-6)
    return sl, f + lesion.roughness * noise


def render_lesions(grid: Grid, lesions: list[LesionSpec], regions: np.ndarray,
                   activity: np.ndarray, ct: np.ndarray) -> np.ndarray:
    """Rasterise lesions; returns a uint16 lesion-id map and edits ``activity`` and ``ct``."""
    ids = np.zeros(grid.shape, dtype=np.uint16)
    for les in lesions:
        res = lesion_field(grid, les)
        if res is None:
            continue
        sl, f = res
        reg = regions[sl]
        mask = (f <= 1.0) & (reg != R["air"]) & (reg != R["airway"]) & (reg != R["bowel_gas"])
        if not mask.any():
            idx = np.unravel_index(np.argmin(np.where(reg != R["air"], f, np.inf)), f.shape)
            mask[idx] = True
        prof = np.clip(f, 0, 1)
        value = les.suv_peak * (1.0 - 0.4 * prof)
        if les.necrotic:
            value = np.where(prof < 0.3, 0.25 * les.suv_peak, value)
        act = activity[sl]
        act[mask] = np.maximum(value[mask], act[mask] * 0.5)
        ct_view = ct[sl]
        dense = mask & (np.isin(reg, BONE_REGIONS) | (reg == R["lung"]))
        ct_view[dense] = les.ct_hu
        ids[sl][mask] = les.lesion_id
    return ids
