"""A run of excess that decays within hours is a latent (lrscube.detection.afterglow), while a
defect of the same level that holds it over the same exposures is reported."""

import numpy as np
import pandas as pd

from lrscube.detection import classify
from lrscube.detection.afterglow import decays_within, follows_hit, latent_images
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


def test_a_run_that_begins_with_a_hit_and_ends_within_hours_follows_it():
    h = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 480.0, 480.2])
    kw = dict(max_hours=6.0)
    # run = exposures 1-4; the hit flagged in its first exposure, in one left out before it, or
    # in the normal exposure before it (the ramp fit took the jump out of that exposure's rate;
    # the charge the hit left raises the next ones)
    assert follows_hit(h, 1, 5, [0.2], **kw)
    assert follows_hit(h, 1, 5, [0.1], **kw)
    assert follows_hit(h, 1, 5, [0.0], **kw)
    # no hit, a hit two exposures before the run, a hit after its start: no latent
    assert not follows_hit(h, 1, 5, [], **kw)
    assert not follows_hit(h, 2, 5, [0.0], **kw)
    assert not follows_hit(h, 1, 5, [0.4], **kw)
    # a run that lasts beyond the hours is not one; one that reaches the series' end within
    # them is (the next run, with more exposures, sees whether it holds), one beyond them not
    assert not follows_hit(h, 1, 6, [0.2], **kw)
    assert follows_hit(h, 5, 7, [480.0], **kw)
    assert not follows_hit(np.r_[h, 487.0], 5, 8, [480.0], **kw)
    # ... unless its last exposure, past the hours, is within the noise by itself
    assert follows_hit(h, 1, 6, [0.2], **kw, last_weak=True)
    assert not follows_hit(np.r_[h, 960.0], 1, 7, [0.2], **kw, last_weak=True)  # two past them


def test_a_pixel_raised_by_a_hit_over_one_visit_is_not_a_defect():
    t0 = 6 * 480.0

    def raised(h):  # a hit in the visit's first exposure leaves 0.3 DN/s, decaying with tau 6 h
        return np.where(h >= t0, 0.3 * np.exp(-np.maximum(h - t0, 0) / 6.0), 0.0) * (h < t0 + 5)

    for seed in range(5):
        r, s, sky, hours = _visits(seed, raised)
        p = DetectionParams()
        th = p.thresholds(1_000_000, r.size)
        # over one visit it barely falls: without the hit the run is a warm pixel
        assert "WARM" in _flags(r, s, sky, hours)
        ev = pd.DataFrame(pixel_intervals(r, s, sky, p, th, hours=hours, hits=[t0]))
        assert len(ev) == 0 or not classify.passes_floors(ev, p.classes).any()
        # a warm pixel that appears with a hit (radiation damage) and stays is reported
        r, s, sky, hours = _visits(seed, lambda h: np.where(h >= t0, 0.3, 0.0))
        ev = pd.DataFrame(pixel_intervals(r, s, sky, p, th, hours=hours, hits=[t0]))
        assert list(classify.classify(ev[classify.passes_floors(ev, p.classes)], p.classes)) == ["WARM"]


def _rows(pixels, first, good, flag="WARM", fall=4.0):
    return pd.DataFrame({"y": [p[0] for p in pixels], "x": [p[1] for p in pixels], "flag": flag,
                         "first_bad_mjd": first, "first_good_mjd": good, "carried": False, "fall_sigma": fall})


def test_adjacent_pixels_bad_over_the_same_hours_are_a_latent_image():
    # exposures: a visit of 4 (15 min apart) at day 100, the next visit at day 130
    mjd = np.r_[np.arange(4) * 0.25 / 24 + 50.0, 100.0 + np.arange(4) * 0.25 / 24, 130.0, 130.01]
    blob = [(10 + dy, 20 + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    n = len(blob)
    kw = dict(max_hours=6.0, min_pixels=3)
    iv = _rows(blob, np.full(n, 100.0), np.full(n, 130.0))
    assert latent_images(iv, mjd, **kw).all()
    # a lone pixel, or two, over that visit: a pixel's own behaviour, kept
    assert not latent_images(iv.iloc[:1], mjd, **kw).any()
    assert not latent_images(iv.iloc[:2], mjd, **kw).any()
    # the same pixels bad for a month (a cluster of defects), or to the end: kept
    assert not latent_images(_rows(blob, np.full(n, 50.0), np.full(n, 130.0)), mjd, **kw).any()
    assert not latent_images(_rows(blob, np.full(n, 100.0), np.full(n, np.nan)), mjd, **kw).any()
    # adjacent pixels bad in different visits are not one image
    iv2 = _rows(blob[:3] + [(40, 40)], [100.0, 50.0, 100.0, 100.0], [130.0, 50.02, 130.0, 130.0])
    assert latent_images(iv2, mjd, **kw).tolist() == [False, False, False, False]
    # a cluster that holds its level over the visit, or that lost its response, is no latent
    kw = dict(kw, min_fall_sigma=3.5)
    assert latent_images(iv, mjd, **kw).all()
    assert not latent_images(_rows(blob, np.full(n, 100.0), np.full(n, 130.0), fall=0.3), mjd, **kw).any()
    assert not latent_images(_rows(blob, np.full(n, 100.0), np.full(n, 130.0), flag="DEAD"), mjd, **kw).any()
    # ... unless it covers a point source's image core: seen within a visit too short to fade
    assert latent_images(_rows(blob, np.full(n, 100.0), np.full(n, 130.0), fall=0.3), mjd, **kw, image_pixels=9).all()
    assert not latent_images(_rows(blob[:6], np.full(6, 100.0), np.full(6, 130.0), fall=0.3), mjd, **kw,
                             image_pixels=9).any()
    # off
    assert not latent_images(iv, mjd, max_hours=6.0, min_pixels=0).any()
