"""A run of excess that decays within hours is a latent (lrscube.detection.afterglow), while a
defect of the same level that holds it over the same exposures is reported."""

import numpy as np
import pandas as pd

from lrscube.detection import classify
from lrscube.detection.afterglow import decays_within
from lrscube.detection.detection_params import DetectionParams
from lrscube.detection.states import pixel_intervals

KW = dict(max_hours=6.0, min_sigma=3.5, max_ratio=0.75)


def test_an_excess_falling_within_an_hour_decays():
    h = np.array([0.0, 0.2, 0.4, 0.6, 0.8])
    e = 0.4 * np.exp(-h / 0.5)  # a latent of 0.4 DN/s, tau 30 min
    assert decays_within(e, np.full(5, 0.02), h, **KW)


def test_a_steady_excess_or_a_slow_one_does_not():
    h = np.array([0.0, 0.2, 0.4, 0.6, 0.8])
    rng = np.random.default_rng(1)
    steady = [decays_within(0.2 + rng.normal(0, 0.02, 5), np.full(5, 0.02), h, **KW) for _ in range(2000)]
    assert np.mean(steady) < 0.002  # a warm pixel over one visit: its level holds
    # the same fall over days is a defect changing, not a latent
    assert not decays_within(0.4 * np.exp(-h / 0.5), np.full(5, 0.02), h * 24 * 5, **KW)
    # a fall within the noise is not evidence
    assert not decays_within(np.array([0.2, 0.18, 0.15]), np.full(3, 0.05), h[:3], **KW)


def _visits(seed, excess_of_hours):
    """60 exposures in visits of 5 exposures 15 min apart, visits ~20 days apart; sky 2-20 DN/s,
    ERR 0.03 DN/s; ``excess_of_hours(h)`` the additive excess in DN/s at time h (hours)."""
    rng = np.random.default_rng(seed)
    hours = np.concatenate([v * 480.0 + np.arange(5) * 0.25 for v in range(12)])
    sky = rng.uniform(2.0, 20.0, hours.size)
    s = np.full(hours.size, 0.03)
    r = excess_of_hours(hours) + rng.normal(0, 0.03, hours.size)
    return r, s, sky, hours


def _flags(r, s, sky, hours):
    p = DetectionParams()
    ev = pd.DataFrame(pixel_intervals(r, s, sky, p, p.thresholds(1_000_000, r.size), hours=hours))
    if not len(ev):
        return []
    return list(classify.classify(ev[classify.passes_floors(ev, p.classes)], p.classes))


def test_a_latent_over_one_visit_is_not_a_defect_but_a_warm_pixel_over_it_is():
    t0 = 6 * 480.0  # the seventh visit

    def latent(h):  # raised by a hit at t0 - 5 min, 0.5 DN/s decaying with tau 40 min
        dt = h - (t0 - 1 / 12)
        return np.where(dt > 0, 0.5 * np.exp(-np.maximum(dt, 0) / (2 / 3)), 0.0)

    def warm(h):  # a warm pixel on over that visit only (off again by the next)
        return np.where((h >= t0) & (h < t0 + 2), 0.3, 0.0)

    for seed in range(5):
        r, s, sky, hours = _visits(seed, latent)
        assert _flags(r, s, sky, hours) == []
        # without the exposure times the run is reported (what the latent rule changes)
        assert "WARM" in _flags(r, s, sky, None)
        r, s, sky, hours = _visits(seed, warm)
        assert _flags(r, s, sky, hours) == ["WARM"]
