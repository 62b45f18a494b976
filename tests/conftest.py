from __future__ import annotations

import numpy as np
import pytest

from petloop.io.volume import Volume
from petloop.phantom import PhantomConfig, generate_case

SMALL = (48, 48, 64)
SMALL_SPACING = (4.0, 4.0, 6.0)


@pytest.fixture(scope="session")
def small_config() -> PhantomConfig:
    return PhantomConfig(seed=11, tracer="mixed", shape=SMALL, spacing=SMALL_SPACING,
                         negative_fraction=0.0, lesions=(3, 6))


@pytest.fixture(scope="session")
def small_cases(small_config):
    return [generate_case(small_config, i).case for i in range(2)]


@pytest.fixture
def geometry_volume() -> Volume:
    rng = np.random.default_rng(0)
    arr = rng.normal(size=(7, 5, 4)).astype(np.float32)
    # float32-representable geometry, oblique direction
    c, s = np.float32(np.cos(0.3)), np.float32(np.sin(0.3))
    direction = (float(c), float(-s), 0.0, float(s), float(c), 0.0, 0.0, 0.0, 1.0)
    return Volume(arr, (2.03125, 1.5, 3.0), (-401.5, 12.25, -1000.0), direction)
