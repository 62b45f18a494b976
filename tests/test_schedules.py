from __future__ import annotations

import numpy as np
import pytest

from petloop.clicks.schedules import NAMED, ClickSchedule, ScheduleError


def test_named_schedules_are_valid_vectors():
    for name in NAMED:
        s = ClickSchedule.get(name)
        assert len(s.probs) == 11 and abs(sum(s.probs) - 1) < 1e-9
    assert ClickSchedule.get("full").probs[10] == 1.0
    v4 = ClickSchedule.get("birth_v4").probs
    assert v4 == (0.10, 0.10, 0.10, 0.08, 0.04, 0.04, 0.04, 0.04, 0.08, 0.08, 0.30)
    v1 = ClickSchedule.get("birth_v1").probs
    assert v1[0] == 0.40 and v1[1] == 0.20
    v2 = ClickSchedule.get("birth_v2").probs
    assert v2[0] == 0.10 and v2[10] == 0.30


def test_user_vectors():
    s = ClickSchedule.get("0.5,0,0,0,0,0,0,0,0,0,0.5")
    assert s.name == "custom" and s.mean_clicks == 5.0
    assert ClickSchedule.get([0.0] * 10 + [1.0]).probs == NAMED["full"]


@pytest.mark.parametrize(("spec", "message"), [
    ([0.1] * 10, "needs 11 probabilities"),
    ([0.2] * 11, "sum to"),
    ([-0.1, 0.2] + [0.1] * 9, "finite and >= 0"),
    ("fast", "unknown click schedule 'fast'"),
])
def test_bad_schedules(spec, message):
    with pytest.raises(ScheduleError, match=message):
        ClickSchedule.get(spec)


def test_sampled_frequencies_follow_the_schedule():
    s = ClickSchedule.get("birth_v4")
    rng = np.random.default_rng(0)
    n = 200_000
    counts = np.bincount(s.sample(rng, n), minlength=11)
    p = np.asarray(s.probs)
    expected = n * p
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 29.6  # 99.9 % quantile of chi-square with 10 degrees of freedom
