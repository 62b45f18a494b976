"""Whole-body anatomy of the phantom: draw a patient, then rasterise its region map.

Drawing (:func:`draw_anatomy`) takes all random numbers and returns a frozen
:class:`AnatomySpec`; rendering (:func:`render_regions`) is deterministic given the spec and the
grid. Coordinates are the reference body frame of :mod:`petloop.phantom.shapes` (mm, ``x`` to the
patient's left, ``y`` posterior, ``z`` down from the vertex).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from petloop.phantom.regions import R
from petloop.phantom.shapes import Grid, ellipsoid, interp, paint, rotation, tube

# Trunk cross-section along z: (z_ref, half-width, half-depth, centre y), for a body factor 1.
_TRUNK = [
    (0, 18, 20, 5), (15, 52, 62, 5), (50, 70, 86, 5), (105, 76, 95, 5), (165, 70, 92, 2),
    (200, 58, 75, 0), (222, 50, 56, 8), (262, 54, 56, 14), (298, 64, 62, 14), (318, 150, 95, 10),
    (360, 168, 110, 6), (450, 166, 116, 6), (550, 160, 116, 6), (620, 154, 118, 2),
    (700, 150, 120, 0), (800, 160, 118, 4), (860, 172, 115, 8), (905, 176, 110, 10),
    (925, 160, 100, 10),
]
TRUNK_END = 925.0
THIGH_START = 880.0
LEG_END = 1040.0

# Organs: name -> (centre, radii) in the reference frame for a body factor 1.
ORGANS = {
    "skull": ((0, 5, 100), (73, 89, 96)),
    "brain": ((0, 7, 100), (65, 81, 86)),
    "lung_r": ((-74, 12, 462), (63, 90, 136)),
    "lung_l": ((72, 12, 472), (58, 88, 126)),
    "heart": ((22, -22, 522), (56, 48, 62)),
    "liver": ((-55, 8, 642), (96, 86, 78)),
    "spleen": ((90, 48, 622), (32, 44, 50)),
    "stomach": ((48, -32, 626), (44, 38, 50)),
    "kidney_r": ((-72, 56, 708), (28, 24, 56)),
    "kidney_l": ((72, 56, 700), (28, 24, 56)),
    "bladder": ((0, -42, 866), (46, 38, 38)),
    "prostate": ((0, -12, 912), (18, 15, 18)),
    "parotid_r": ((-46, 18, 192), (11, 16, 18)),
    "parotid_l": ((46, 18, 192), (11, 16, 18)),
    "submandibular_r": ((-30, -22, 214), (9, 9, 8)),
    "submandibular_l": ((30, -22, 214), (9, 9, 8)),
    "tonsils": ((0, 2, 206), (20, 8, 10)),
    "lacrimal_r": ((-28, -68, 78), (6, 4, 4)),
    "lacrimal_l": ((28, -68, 78), (6, 4, 4)),
    "iliac_r": ((-105, 38, 822), (44, 18, 60)),
    "iliac_l": ((105, 38, 822), (44, 18, 60)),
    "sacrum": ((0, 84, 832), (38, 18, 50)),
    "pubis_r": ((-35, -58, 906), (30, 10, 12)),
    "pubis_l": ((35, -58, 906), (30, 10, 12)),
    "femoral_head_r": ((-90, 6, 896), (24, 24, 24)),
    "femoral_head_l": ((90, 6, 896), (24, 24, 24)),
}


@dataclass(frozen=True)
class AnatomySpec:
    """One drawn patient: body habitus, organ placement and sizes."""

    sex: str
    body: float  # habitus factor: widths scale with it
    fat_mm: float
    bladder_fill: float
    organ_jitter: dict  # organ -> (dx, dy, dz, scale)
    bowel: tuple  # ((centre, radii), ...)

    def organ(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        (c, r) = ORGANS[name]
        dx, dy, dz, s = self.organ_jitter.get(name, (0.0, 0.0, 0.0, 1.0))
        width = np.array([self.body, self.body ** 1.1, 1.0])
        centre = np.asarray(c, dtype=float) * width + (dx, dy, dz)
        radii = np.asarray(r, dtype=float) * s * np.array([self.body ** 0.5, self.body ** 0.5, 1])
        if name == "bladder":
            radii = radii * self.bladder_fill ** (1 / 3)
        return centre, radii

    def to_json(self) -> dict:
        out = asdict(self)
        out["organ_jitter"] = {k: [round(float(x), 3) for x in v]
                               for k, v in self.organ_jitter.items()}
        out["bowel"] = [[list(map(float, c)), list(map(float, r))] for c, r in self.bowel]
        return out


def draw_anatomy(rng: np.random.Generator, sex: str | None = None) -> AnatomySpec:
    sex = sex or ("male" if rng.random() < 0.5 else "female")
    body = float(np.clip(rng.normal(1.0, 0.08), 0.82, 1.2))
    fat = float(np.clip(8 + 40 * (body - 0.85) + rng.normal(0, 4), 5, 40))
    jitter = {}
    for name in ORGANS:
        if name.startswith(("skull", "brain")):
            jitter[name] = (0.0, 0.0, 0.0, float(rng.uniform(0.96, 1.04)))
            continue
        d = rng.normal(0, 4, size=3)
        jitter[name] = (float(d[0]), float(d[1]), float(d[2]), float(rng.uniform(0.88, 1.12)))
    bowel = []
    for _ in range(int(rng.integers(7, 13))):
        c = (rng.uniform(-95, 95), rng.uniform(-85, 30), rng.uniform(700, 835))
        r = rng.uniform(11, 22, size=3)
        bowel.append((tuple(float(v) for v in c), tuple(float(v) for v in r)))
    return AnatomySpec(sex, body, fat, float(rng.uniform(0.4, 1.4)), jitter, tuple(bowel))


def _trunk_functions(spec: AnatomySpec):
    z = [t[0] for t in _TRUNK]
    a = interp([(zz, t[1] * spec.body) for zz, t in zip(z, _TRUNK, strict=True)])
    b = interp([(zz, t[2] * spec.body ** 1.1) for zz, t in zip(z, _TRUNK, strict=True)])
    cy = interp([(zz, t[3]) for zz, t in zip(z, _TRUNK, strict=True)])
    fat = interp([(0, 4), (290, 5), (320, spec.fat_mm), (1040, spec.fat_mm)])
    wall = interp([(0, 0), (215, 0), (230, 14), (1040, 14)])
    return a, b, cy, fat, wall


def _body(spec: AnatomySpec, grid: Grid, regions: np.ndarray, chunk: int = 24) -> None:
    """Skin/fat, muscle wall, visceral space and ribs, slab by slab along k."""
    a_f, b_f, cy_f, fat_f, wall_f = _trunk_functions(spec)
    x = grid.axis(0)[:, None, None]
    y = grid.axis(1)[None, :, None]
    zr = grid.axis(2)
    leg_a, leg_b = 72 * spec.body, 78 * spec.body ** 1.1
    for k0 in range(0, grid.shape[2], chunk):
        z = zr[k0:k0 + chunk]
        a, b, cy = a_f(z), b_f(z), cy_f(z)
        fat, wall = fat_f(z), wall_f(z)
        in_trunk = (z >= 0) & (z <= TRUNK_END)
        out = np.zeros((grid.shape[0], grid.shape[1], len(z)), dtype=np.uint8)

        def ell(shrink, a=a, b=b, cy=cy):
            aa = np.maximum(a - shrink, 1e-3)[None, None, :]
            bb = np.maximum(b - shrink, 1e-3)[None, None, :]
            return (x / aa) ** 2 + ((y - cy[None, None, :]) / bb) ** 2 <= 1

        trunk = ell(0.0) & in_trunk[None, None, :]
        muscle = ell(fat) & trunk
        viscera = ell(fat + wall) & trunk & (wall > 0)[None, None, :]
        legs_z = (z >= THIGH_START) & (z <= LEG_END)
        if legs_z.any():
            for side in (-1, 1):
                cx = side * 84 * spec.body
                leg = ((x - cx) / leg_a) ** 2 + ((y - 8) / leg_b) ** 2 <= 1
                leg = leg & legs_z[None, None, :]
                leg_in = (((x - cx) / max(leg_a - spec.fat_mm, 5)) ** 2
                          + ((y - 8) / max(leg_b - spec.fat_mm, 5)) ** 2 <= 1) & leg
                trunk |= leg
                muscle |= leg_in
        out[trunk] = R["fat"]
        out[muscle] = R["muscle"]
        out[viscera] = R["viscera"]
        # ribs: bands of bone just inside the muscle wall of the thorax
        ribs_z = (z >= 330) & (z <= 610) & (np.mod(z - 330, 26) < 9)
        if ribs_z.any():
            ring = ell(fat + 3) & ~ell(fat + 11) & ribs_z[None, None, :]
            ring &= ~((np.abs(x) < 22) & (y < 0))
            out[ring & trunk] = R["cortical_bone"]
        regions[:, :, k0:k0 + chunk] = out


def _bone_shell(grid, regions, centre, radii, shell=4.0, only=None) -> None:
    paint(regions, ellipsoid(grid, centre, radii), R["cortical_bone"], only)
    inner = np.maximum(np.asarray(radii) - shell, 1.0)
    paint(regions, ellipsoid(grid, centre, inner), R["marrow"], only)


def _const(v):
    return lambda z: np.full(np.shape(z), v, dtype=np.float32)


def render_regions(spec: AnatomySpec, grid: Grid) -> np.ndarray:
    """Rasterise the anatomy into a region-id map (uint8, ``(i, j, k)`` order)."""
    regions = np.zeros(grid.shape, dtype=np.uint8)
    _body(spec, grid, regions)
    body = [R["fat"], R["muscle"], R["viscera"]]
    soft = [R["muscle"], R["viscera"]]
    o = spec.organ

    # head
    c, r = o("skull")
    paint(regions, ellipsoid(grid, c, r), R["cortical_bone"], only=soft + [R["fat"]])
    c, r = o("brain")
    paint(regions, ellipsoid(grid, c, r), R["brain"])
    for name, rid in (("parotid", "parotid"), ("submandibular", "submandibular"),
                      ("lacrimal", "lacrimal")):
        for side in ("_r", "_l"):
            paint(regions, ellipsoid(grid, *o(name + side)), R[rid], only=body)
    paint(regions, ellipsoid(grid, *o("tonsils")), R["tonsils"], only=body)

    # thorax
    for side in ("lung_r", "lung_l"):
        paint(regions, ellipsoid(grid, *o(side)), R["lung"], only=[R["viscera"]])
    c, r = o("heart")
    rot = rotation((0.0, 0.35, -0.4))
    paint(regions, ellipsoid(grid, c, r, rot), R["myocardium"], only=soft + [R["lung"]])
    paint(regions, ellipsoid(grid, c, r * 0.68, rot), R["heart_blood"])
    airway = tube(grid, 212, 425, _const(0.0), interp([(212, -14), (300, -20), (425, 2)]),
                  _const(8.0), _const(8.0))
    paint(regions, airway, R["airway"], only=soft + [R["lung"]])
    sternum = tube(grid, 335, 505, _const(0.0),
                   lambda z: -(interp([(t[0], t[2]) for t in _TRUNK])(z) * spec.body ** 1.1
                               - spec.fat_mm - 9),
                   _const(14.0), _const(5.0))
    paint(regions, sternum, R["marrow"], only=soft)
    # aorta: ascending, arch, descending
    paint(regions, tube(grid, 430, 475, _const(12.0), _const(-14.0), _const(13.0), _const(13.0)),
          R["blood"], only=soft + [R["lung"]])
    for t in np.linspace(0, 1, 7):
        centre = (12 + 6 * t, -14 + 56 * t, 430 - 14 * np.sin(np.pi * t))
        paint(regions, ellipsoid(grid, centre, (12, 12, 12)), R["blood"],
              only=soft + [R["lung"]])
    desc = tube(grid, 425, 800, interp([(425, 18), (800, 4)]),
                interp([(425, 42), (600, 46), (800, 38)]), _const(11.0), _const(11.0))
    paint(regions, desc, R["blood"], only=soft + [R["lung"]])

    # abdomen
    paint(regions, ellipsoid(grid, *o("liver")), R["liver"], only=soft + [R["lung"]])
    paint(regions, ellipsoid(grid, *o("spleen")), R["spleen"], only=soft)
    c, r = o("stomach")
    paint(regions, ellipsoid(grid, c, r), R["stomach"], only=soft)
    gas = ellipsoid(grid, c + np.array([4, -r[1] * 0.5, -r[2] * 0.75]), r * (0.55, 0.35, 0.25))
    paint(regions, gas, R["stomach_gas"], only=[R["stomach"]])
    for side, sgn in (("kidney_r", -1), ("kidney_l", 1)):
        c, r = o(side)
        rot = rotation((0.0, sgn * 0.25, 0.0))
        paint(regions, ellipsoid(grid, c, r, rot), R["kidney"], only=soft)
        paint(regions, ellipsoid(grid, c + (-sgn * 10, -4, 0), r * (0.35, 0.35, 0.35)),
              R["renal_pelvis"], only=[R["kidney"]])
    for n, (c, r) in enumerate(spec.bowel):
        paint(regions, ellipsoid(grid, c, r), R["bowel"], only=[R["viscera"]])
        if n % 3 == 0:
            paint(regions, ellipsoid(grid, c, np.asarray(r) * 0.35), R["bowel_gas"],
                  only=[R["bowel"]])
    paint(regions, ellipsoid(grid, *o("bladder")), R["bladder"], only=soft + [R["bowel"]])
    if spec.sex == "male":
        paint(regions, ellipsoid(grid, *o("prostate")), R["prostate"], only=soft + [R["fat"]])

    # skeleton: spine with discs and canal, pelvis, femora
    cy_spine = interp([(220, 24), (300, 34), (450, 60), (600, 66), (700, 56), (800, 56),
                       (860, 70)])
    rad = interp([(220, 10), (320, 13), (600, 17), (860, 19)])
    paint(regions, tube(grid, 218, 860, _const(0.0), cy_spine, rad, rad), R["cortical_bone"],
          only=body + [R["lung"]])
    inner = lambda z: rad(z) - 3  # noqa: E731
    paint(regions, tube(grid, 218, 860, _const(0.0), cy_spine, inner, inner), R["marrow"])
    for z0 in np.arange(240, 860, 30):
        disc = tube(grid, z0, z0 + 5, _const(0.0), cy_spine, rad, rad)
        paint(regions, disc, R["muscle"], only=[R["marrow"], R["cortical_bone"]])
    post = lambda z: cy_spine(z) + rad(z) + 9  # noqa: E731
    paint(regions, tube(grid, 218, 850, _const(0.0), post, _const(12.0), _const(11.0)),
          R["cortical_bone"], only=body + [R["lung"]])
    paint(regions, tube(grid, 218, 850, _const(0.0), post, _const(6.0), _const(6.0)), R["csf"])
    for name in ("iliac_r", "iliac_l", "sacrum", "pubis_r", "pubis_l", "femoral_head_r",
                 "femoral_head_l"):
        _bone_shell(grid, regions, *o(name), only=body + [R["bowel"]])
    for sgn in (-1, 1):
        cx = interp([(896, sgn * 90 * spec.body), (LEG_END, sgn * 78 * spec.body)])
        paint(regions, tube(grid, 896, LEG_END, cx, _const(6.0), _const(15.0), _const(15.0)),
              R["cortical_bone"], only=body)
        paint(regions, tube(grid, 896, LEG_END, cx, _const(6.0), _const(10.0), _const(10.0)),
              R["marrow"])
    return regions
