"""Tissue regions of the phantom, with their CT numbers, tracer uptake and organ class.

Every phantom voxel belongs to one region. The CT, the physiological PET uptake and the organ
label all follow from the region map through the tables below, so the three images agree.
Uptake values are the centre of a per-case draw (see :mod:`petloop.phantom.anatomy`); they are
calibrated on the published ranges summarised in SPEC section 9.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from petloop.io.organs import ORGAN_CLASSES, ORGAN_IDS  # noqa: F401 - re-exported


@dataclass(frozen=True)
class Region:
    rid: int
    name: str
    hu: float  # unenhanced CT number
    contrast_hu: float  # added at full contrast enhancement
    fdg: tuple[float, float]  # SUV mean, coefficient of variation between patients
    psma: tuple[float, float]
    organ: int = 0


_REGIONS = [
    Region(0, "air", -1000, 0, (0.0, 0.0), (0.0, 0.0)),
    Region(1, "fat", -95, 0, (0.35, 0.2), (0.2, 0.2)),
    Region(2, "muscle", 50, 10, (0.8, 0.2), (0.6, 0.2)),
    Region(3, "lung", -850, 0, (0.45, 0.2), (0.3, 0.2), ORGAN_IDS["lungs"]),
    Region(4, "cortical_bone", 1100, 0, (0.6, 0.2), (0.5, 0.2)),
    Region(5, "marrow", 280, 0, (1.5, 0.2), (1.2, 0.25)),
    Region(6, "brain", 35, 5, (8.0, 0.25), (0.25, 0.3), ORGAN_IDS["brain"]),
    Region(7, "myocardium", 45, 60, (4.0, 0.8), (1.8, 0.25), ORGAN_IDS["heart"]),
    Region(8, "liver", 58, 50, (2.1, 0.12), (5.4, 0.3), ORGAN_IDS["liver"]),
    Region(9, "spleen", 48, 60, (1.8, 0.12), (8.0, 0.35), ORGAN_IDS["spleen"]),
    Region(10, "kidney", 35, 140, (3.0, 0.3), (40.0, 0.3), ORGAN_IDS["kidneys"]),
    Region(11, "bladder", 8, 0, (20.0, 0.5), (15.0, 0.6), ORGAN_IDS["urinary_bladder"]),
    Region(12, "stomach", 28, 20, (2.2, 0.35), (3.5, 0.4), ORGAN_IDS["stomach"]),
    Region(13, "prostate", 42, 20, (2.0, 0.25), (4.0, 0.4), ORGAN_IDS["prostate"]),
    Region(14, "parotid", 38, 30, (2.2, 0.25), (14.5, 0.3), ORGAN_IDS["head_glands"]),
    Region(15, "blood", 42, 160, (1.6, 0.12), (1.8, 0.2)),
    Region(16, "bowel", 30, 30, (2.0, 0.45), (7.0, 0.5)),
    Region(17, "tonsils", 45, 20, (3.5, 0.3), (1.0, 0.3)),
    Region(18, "lacrimal", 40, 20, (1.2, 0.3), (10.0, 0.3)),
    Region(19, "airway", -1000, 0, (0.0, 0.0), (0.0, 0.0)),
    Region(20, "renal_pelvis", 10, 0, (12.0, 0.6), (30.0, 0.4), ORGAN_IDS["kidneys"]),
    Region(21, "csf", 8, 0, (0.6, 0.2), (0.2, 0.2)),
    Region(22, "stomach_gas", -1000, 0, (0.0, 0.0), (0.0, 0.0), ORGAN_IDS["stomach"]),
    Region(23, "viscera", 40, 20, (0.9, 0.2), (0.8, 0.2)),
    Region(24, "heart_blood", 42, 160, (1.6, 0.12), (1.8, 0.2), ORGAN_IDS["heart"]),
    Region(25, "submandibular", 40, 30, (2.2, 0.25), (17.0, 0.3), ORGAN_IDS["head_glands"]),
    Region(26, "bowel_gas", -1000, 0, (0.0, 0.0), (0.0, 0.0)),
]
REGIONS = {r.name: r for r in _REGIONS}
R = {r.name: r.rid for r in _REGIONS}
N_REGIONS = len(_REGIONS)
assert [r.rid for r in _REGIONS] == list(range(N_REGIONS))

#: region id -> organ class id
ORGAN_LUT = np.array([r.organ for r in _REGIONS], dtype=np.uint8)
#: regions that are bone (lesions there get a CT signal)
BONE_REGIONS = (R["cortical_bone"], R["marrow"])


def region_table() -> list[Region]:
    return list(_REGIONS)
