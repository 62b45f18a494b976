"""Lesion report: what a reader wants from a lesion mask.

Lesions are the 18-connected components of the mask (the metrics' connectivity). For each:
volume (ml), SUVmax, SUVmean, SUVpeak (the mean SUV in a sphere of 1 ml centred on the hottest
voxel) and total lesion glycolysis (TLG = SUVmean x volume); in total the total metabolic tumour
volume (TMTV, ml) and total TLG. Lesions are listed by decreasing volume.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass

import cc3d
import numpy as np

from petloop.io.volume import Volume
from petloop.metrics.official import CONNECTIVITY, MaskError

PEAK_ML = 1.0


@dataclass(frozen=True)
class Lesion:
    id: int
    volume_ml: float
    voxels: int
    suv_max: float
    suv_mean: float
    suv_peak: float
    tlg: float
    hottest_voxel: tuple[int, int, int]  # (i, j, k)
    centre_mm: tuple[float, float, float]  # physical (LPS) centre of mass


@dataclass(frozen=True)
class LesionReport:
    lesions: tuple[Lesion, ...]
    tmtv_ml: float
    total_tlg: float
    suv_max: float  # over all lesions (0 when none)

    @property
    def count(self) -> int:
        return len(self.lesions)

    def to_json(self) -> dict:
        return {"lesion_count": self.count, "tmtv_ml": self.tmtv_ml,
                "total_tlg": self.total_tlg, "suv_max": self.suv_max,
                "lesions": [asdict(les) for les in self.lesions]}


def _peak_offsets(spacing, volume_ml: float = PEAK_ML) -> np.ndarray:
    """Voxel offsets of a sphere of ``volume_ml`` (radius about 6.2 mm for 1 ml)."""
    radius = (3 * volume_ml * 1000 / (4 * np.pi)) ** (1 / 3)
    reach = np.ceil(radius / np.asarray(spacing)).astype(int)
    grids = np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij")
    d2 = sum((g * s) ** 2 for g, s in zip(grids, spacing, strict=True))
    return np.stack([g[d2 <= radius * radius] for g in grids], axis=1)


def suv_peak(pet: np.ndarray, spacing, voxel: tuple[int, int, int]) -> float:
    """Mean SUV in a 1 ml sphere centred on ``voxel`` (the part inside the image)."""
    pts = _peak_offsets(spacing) + np.asarray(voxel)
    inside = np.all((pts >= 0) & (pts < np.asarray(pet.shape)), axis=1)
    pts = pts[inside]
    return float(pet[tuple(pts.T)].mean())


def lesion_report(pet: Volume, mask: np.ndarray) -> LesionReport:
    return labelled_lesions(pet, mask)[0]


def labelled_lesions(pet: Volume, mask: np.ndarray) -> tuple[LesionReport, np.ndarray]:
    """The lesion report and the lesions as labels (0 background, n: lesion ``n`` of the
    report), as a DICOM SEG holds them."""
    if mask.shape != pet.shape:
        raise MaskError(f"mask shape {mask.shape} differs from the PET shape {pet.shape}")
    mask = np.asarray(mask, dtype=bool)
    voxel_ml = pet.voxel_volume_ml
    cc, n = cc3d.connected_components(mask, connectivity=CONNECTIVITY, return_N=True,
                                      binary_image=True)
    lesions, labels_of = [], []
    if n:
        stats = cc3d.statistics(cc)
        values = pet.array
        for lab in range(1, n + 1):
            box = stats["bounding_boxes"][lab]
            sub = cc[box] == lab
            suv = values[box][sub]
            local = np.argwhere(sub)
            hot = local[int(np.argmax(suv))] + [s.start for s in box]
            count = int(sub.sum())
            vol = count * voxel_ml
            mean = float(suv.mean())
            centre = pet.index_to_physical(local.mean(axis=0) + [s.start for s in box])
            labels_of.append(lab)
            lesions.append(Lesion(
                id=0, volume_ml=vol, voxels=count, suv_max=float(suv.max()), suv_mean=mean,
                suv_peak=suv_peak(values, pet.spacing, tuple(int(v) for v in hot)),
                tlg=mean * vol, hottest_voxel=tuple(int(v) for v in hot),
                centre_mm=tuple(round(float(c), 2) for c in centre)))
    order = sorted(range(len(lesions)),
                   key=lambda i: (-lesions[i].voxels, lesions[i].hottest_voxel))
    remap = np.zeros(n + 1, dtype=np.uint16)
    for new, i in enumerate(order):
        remap[labels_of[i]] = new + 1
    lesions = [Lesion(**{**asdict(lesions[i]), "id": new + 1}) for new, i in enumerate(order)]
    report = LesionReport(
        lesions=tuple(lesions),
        tmtv_ml=float(sum(les.volume_ml for les in lesions)),
        total_tlg=float(sum(les.tlg for les in lesions)),
        suv_max=float(max((les.suv_max for les in lesions), default=0.0)))
    return report, remap[cc]


def report_csv(report: LesionReport) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["lesion", "volume_ml", "voxels", "suv_max", "suv_mean", "suv_peak", "tlg",
                     "hottest_i", "hottest_j", "hottest_k", "x_mm", "y_mm", "z_mm"])
    for les in report.lesions:
        writer.writerow([les.id, les.volume_ml, les.voxels, les.suv_max, les.suv_mean,
                         les.suv_peak, les.tlg, *les.hottest_voxel, *les.centre_mm])
    return buf.getvalue()
