from __future__ import annotations

import cc3d
import numpy as np
import pytest

from petloop.io.volume import Volume
from petloop.metrics.report import lesion_report, suv_peak
from petloop.phantom import PhantomConfig, generate_case


def test_report_on_a_phantom_with_known_lesions():
    ph = generate_case(PhantomConfig(seed=4, tracer="psma", lesions=(6, 8),
                                     negative_fraction=0.0), 0)
    pet, label = ph.case.pet, ph.case.label.array.astype(bool)
    rep = lesion_report(pet, label)
    cc, n = cc3d.connected_components(label, connectivity=18, return_N=True)
    assert rep.count == n >= ph.info["n_components"]
    assert rep.tmtv_ml == pytest.approx(ph.info["total_lesion_volume_ml"], abs=1e-3)
    assert rep.suv_max == pytest.approx(max(x["suvmax"] for x in ph.info["lesions"]), abs=1e-3)
    # each listed lesion matches its component
    for les in rep.lesions:
        lab = cc[les.hottest_voxel]
        comp = cc == lab
        assert les.voxels == comp.sum()
        assert les.suv_max == pytest.approx(pet.array[comp].max())
        assert les.suv_mean == pytest.approx(pet.array[comp].mean(), rel=1e-5)
        assert les.tlg == pytest.approx(les.suv_mean * les.volume_ml)
        assert les.suv_peak <= les.suv_max
    vols = [les.volume_ml for les in rep.lesions]
    assert vols == sorted(vols, reverse=True)


def test_suv_peak_is_the_mean_in_a_1ml_sphere():
    rng = np.random.default_rng(0)
    pet = rng.random((30, 30, 30)).astype(np.float32)
    spacing = (2.0, 2.0, 3.0)
    g = np.indices(pet.shape)
    centre = (15, 14, 13)
    d2 = sum(((g[a] - centre[a]) * spacing[a]) ** 2 for a in range(3))
    r = (3 * 1000 / (4 * np.pi)) ** (1 / 3)
    assert suv_peak(pet, spacing, centre) == pytest.approx(float(pet[d2 <= r * r].mean()))
    # near the border only the part inside the image counts
    d2 = sum(((g[a] - (0, 0, 0)[a]) * spacing[a]) ** 2 for a in range(3))
    assert suv_peak(pet, spacing, (0, 0, 0)) == pytest.approx(float(pet[d2 <= r * r].mean()))


def test_empty_mask_report():
    rep = lesion_report(Volume(np.ones((4, 4, 4), np.float32)), np.zeros((4, 4, 4), bool))
    assert rep.count == 0 and rep.tmtv_ml == 0 and rep.suv_max == 0
    assert rep.to_json()["lesions"] == []
