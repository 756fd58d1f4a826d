"""A run of excess that decays within hours is a latent (lrscube.detection.afterglow), while a
defect of the same level that holds it over the same exposures is reported."""

import numpy as np
import pandas as pd

from lrscube.detection import classify
from lrscube.detection.afterglow import busiest_hours, decays_within, explained_by_hit, latent_cautions, latent_images
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


def test_an_excess_that_rises_within_the_visit_is_no_latent():
    # mrs-short (484, 1003) of the 40-exposure set: noisy over one visit, 0.70, 2.47 and 0.92
    # DN/s above its sky (26, 78 and 91 sigma): it ends below its peak, but a latent's charge
    # never climbs from one exposure to the next
    h = np.array([0.0, 0.25, 0.85])
    s = np.array([0.027, 0.031, 0.010])
    assert not decays_within(np.array([0.70, 2.47, 0.92]), s, h, **KW)
    # the same exposures falling from the first are a latent
    assert decays_within(np.array([2.47, 0.70, 0.30]), s, h, **KW)
    # a rise within the noise, or from an exposure not itself in excess, does not count
    assert decays_within(np.array([0.40, 0.42, 0.10]), np.full(3, 0.02), h, **KW)
    assert decays_within(np.array([0.02, 0.40, 0.10]), np.full(3, 0.02), h, **KW)


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


def test_a_run_that_begins_with_a_hit_and_ends_within_hours_is_explained_by_it():
    h = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 480.0, 480.2])
    e = np.array([0.0, 0.5, 0.4, 0.3, 0.25, 0.0, 0.0])
    s = np.full(7, 0.03)
    kw = dict(max_hours=6.0, min_sigma=6.5)
    # run = exposures 1-4; the hit flagged in its first exposure, in one left out before it, or
    # in the normal exposure before it (the ramp fit took the jump out of that exposure's rate;
    # the charge the hit left raises the next ones)
    assert explained_by_hit(e, s, h, 1, 5, [0.2], **kw)
    assert explained_by_hit(e, s, h, 1, 5, [0.1], **kw)
    assert explained_by_hit(e, s, h, 1, 5, [0.0], **kw)
    # no hit, a hit two exposures before the run, a hit after the charge it would explain
    assert not explained_by_hit(e, s, h, 1, 5, [], **kw)
    assert not explained_by_hit(e, s, h, 2, 5, [0.0], **kw)
    assert not explained_by_hit(e, s, h, 1, 5, [0.4], **kw)
    # a run that reaches the series' end within the hours is one (the next detect, with more
    # exposures, sees whether it holds); one that holds its level past them is not
    e_end = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.4])
    assert explained_by_hit(e_end, s, h, 5, 7, [480.0], **kw)
    assert not explained_by_hit(np.r_[e_end, 0.4], np.r_[s, 0.03], np.r_[h, 487.0], 5, 8, [480.0], **kw)
    # a last exposure past the hours within the noise by itself does not make the run last ...
    assert explained_by_hit(np.r_[e[:5], 0.05, 0.0], s, h, 1, 6, [0.2], **kw)
    # ... nor two, while the same two holding the level are a defect's
    assert explained_by_hit(np.r_[e[:5], 0.05, 0.05, 0.0], np.r_[s, 0.03], np.r_[h, 960.0], 1, 7, [0.2], **kw)
    assert not explained_by_hit(np.r_[e[:5], 0.3, 0.3, 0.0], np.r_[s, 0.03], np.r_[h, 960.0], 1, 7, [0.2], **kw)


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


def test_a_hit_explains_a_run_whose_other_exposures_show_nothing_by_themselves():
    h = np.array([0.0, 0.2, 480.0, 480.2, 480.4, 480.6, 960.0, 960.2])
    s = np.full(8, 0.03)
    kw = dict(max_hours=6.0, min_sigma=6.5)
    # run = exposures 1-5: the last of a visit 5 sigma high, then a hit's charge over the next visit
    e = np.array([0.0, 0.16, 0.5, 0.4, 0.3, 0.25, 0.0, 0.0])
    assert explained_by_hit(e, s, h, 1, 6, [480.0], **kw)
    assert not explained_by_hit(e, s, h, 1, 6, [0.2], **kw)  # its hours end long before the charge
    assert not explained_by_hit(e, s, h, 1, 6, [], **kw)
    assert not explained_by_hit(e, s, h, 1, 6, [960.0], **kw)  # after the run
    assert not explained_by_hit(e, s, h, 2, 6, [0.0], **kw)  # before the exposure ahead of the run
    # two exposures at the normal level after the hours are no evidence of a defect
    assert explained_by_hit(e, s, h, 2, 8, [480.0], **kw)
    # exposures outside the hours that hold the level by themselves: a defect beside the hit
    e2 = np.array([0.0, 0.13, 0.5, 0.4, 0.3, 0.25, 0.1, 0.1])  # 4.3, 3.3, 3.3 sigma: 6.35 stacked
    assert explained_by_hit(e2, s, h, 1, 8, [480.0], **kw)
    e3 = np.array([0.0, 0.16, 0.5, 0.4, 0.3, 0.25, 0.2, 0.2])  # 5.3, 6.7, 6.7 sigma: 10.8 stacked
    assert not explained_by_hit(e3, s, h, 1, 8, [480.0], **kw)
    # two hits, each explaining its own visit
    e5 = np.array([0.0, 0.0, 0.5, 0.4, 0.3, 0.25, 0.4, 0.3])
    assert explained_by_hit(e5, s, h, 2, 8, [480.0, 960.0], **kw)
    assert not explained_by_hit(e5, s, h, 2, 8, [480.0], **kw)
    # one exposure beyond the threshold just before the hit: charge the hit cannot have left
    # (a telegraph pixel switching within an exposure is flagged JUMP_DET as a hit is)
    e4 = np.array([0.0, 0.6, 0.5, 0.4, 0.3, 0.25, 0.0, 0.0])
    assert not explained_by_hit(e4, s, h, 1, 6, [480.0], **kw)


def test_a_hit_explains_a_span_of_scatter_only_where_the_rest_scatters_by_its_noise():
    """A span of excess scatter that holds a hit: the hit's charge over its visit (10-50 sigma
    about any level) and, outside its hours, the exposures of the next visits. Noise there
    leaves the span to the hit; a pixel whose values swing both ways by several times its
    noise there too is noisy, although their mean is zero."""
    h = np.array([0.0, 480.0, 480.2, 480.4, 480.6, 960.0, 960.2, 1440.0, 1440.2, 1920.0])
    s = np.full(10, 0.03)
    kw = dict(max_hours=6.0, min_sigma=6.5, scatter_clip=6.0)
    quiet = np.array([0.0, 0.6, 1.5, 0.5, 0.4, -0.04, -0.03, 0.02, -0.05, 0.0])
    assert explained_by_hit(quiet, s, h, 1, 9, [480.0], **kw)
    assert not explained_by_hit(quiet, s, h, 1, 9, [], **kw)
    swings = quiet.copy()
    swings[5:9] = [0.15, -0.14, 0.16, -0.15]  # 5 sigma each way: its mean is zero
    assert not explained_by_hit(swings, s, h, 1, 9, [480.0], **kw)
    # judged by its level alone (a level run's rule), the swings would be the hit's
    assert explained_by_hit(swings, s, h, 1, 9, [480.0], max_hours=6.0, min_sigma=6.5)
    # a noisy span without a hit in it stays, whatever the level of the rest
    assert not explained_by_hit(quiet, s, h, 5, 9, [480.0], **kw)


def test_a_hit_s_charge_merged_into_a_span_of_scatter_is_not_a_defect():
    """A hit's charge over its visit, up and down by tens of sigma from one exposure to the
    next, and the next visit a little below normal (1.3 sigma an exposure): the screens read
    the two visits as a pixel swinging both ways. With the hit, nothing outside its hours
    scatters beyond the noise, so no span of scatter is reported."""
    t0 = 6 * 480.0
    charge = {0: 0.6, 1: 1.5, 2: 1.35, 3: 1.4, 4: 0.45}

    def raised(h):
        k = np.round((h - t0) / 0.25).astype(int)
        return np.array([charge.get(int(v), 0.0) if 0 <= hh - t0 < 5 else 0.0 for v, hh in zip(k, h)])

    p = DetectionParams()
    spans_without_hit = 0
    for seed in range(6):
        r, s, sky, hours = _visits(seed, raised)
        r[35:40] -= 0.04
        th = p.thresholds(1_000_000, r.size)
        ev = pd.DataFrame(pixel_intervals(r, s, sky, p, th, hours=hours, hits=[t0]))
        assert not (len(ev) and ev["noisy"].astype(bool).any())
        ev = pd.DataFrame(pixel_intervals(r, s, sky, p, th, hours=hours))
        spans_without_hit += int(len(ev) and ev["noisy"].astype(bool).any())
    assert spans_without_hit >= 1


def test_a_hit_s_charge_with_an_ambiguous_exposure_ahead_of_it_is_not_a_defect():
    """The latent of a hit over one visit, and the last exposure of the visit before it ~4 sigma
    high (noise, another hit's tail): the run takes that exposure in, so it neither begins with
    the hit nor lasts hours; nothing outside the hit's hours shows an excess by itself."""
    t0 = 6 * 480.0
    for seed in range(5):
        def raised(h):  # 0.3 DN/s from a hit in the visit's first exposure, decaying with tau 6 h
            return np.where(h >= t0, 0.3 * np.exp(-np.maximum(h - t0, 0) / 6.0), 0.0) * (h < t0 + 5)

        r, s, sky, hours = _visits(seed, raised)
        r[29] += 0.13  # the previous visit's last exposure, ~4 sigma high
        p = DetectionParams()
        th = p.thresholds(1_000_000, r.size)
        assert "WARM" in _flags(r, s, sky, hours)  # without the hit: a warm pixel over 6 exposures
        ev = pd.DataFrame(pixel_intervals(r, s, sky, p, th, hours=hours, hits=[t0]))
        assert len(ev) == 0 or not classify.passes_floors(ev, p.classes).any()
        # a pixel that appears with the hit and holds 0.1 DN/s (3 sigma an exposure) over the
        # next two visits is reported (WARM, or TELEGRAPH for the fall of the hit's charge on it)
        r, s, sky, hours = _visits(seed, lambda h: raised(h) + np.where((h >= t0) & (h < t0 + 961), 0.1, 0.0))
        ev = pd.DataFrame(pixel_intervals(r, s, sky, p, th, hours=hours, hits=[t0]))
        assert len(ev) and classify.passes_floors(ev, p.classes).any()
        assert ev["start"].min() <= 30 and ev["stop"].max() >= 44


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


def test_a_wide_latent_image_is_its_rim_and_one_in_the_last_visit_is_judged_by_its_fade():
    # exposures: a visit of 4 at day 100, the next at day 130; the series ends with a visit at 200
    mjd = np.r_[100.0 + np.arange(4) * 0.25 / 24, 130.0, 130.01, 200.0 + np.arange(3) * 0.25 / 24]
    kw = dict(max_hours=6.0, min_pixels=3, min_fall_sigma=3.5, image_pixels=9)
    # the rim of an image 7 pixels wide (its interior taken in by the local sky): rows of the rim
    # a pixel apart, neither fading within the visit
    rim = [(10, x) for x in range(20, 27)] + [(12, 20), (12, 26)] + [(14, x) for x in range(20, 27, 2)]
    n = len(rim)
    iv = _rows(rim, np.full(n, 100.0), np.full(n, 130.0), fall=0.3)
    assert not latent_images(iv, mjd, **kw).any()  # adjacent pixels only: pieces of 7, 2, 2, 1, ...
    assert latent_images(iv, mjd, **kw, join_px=2).all()
    # pixels three apart are not one image
    apart = [(10, 20 + 3 * i) for i in range(9)]
    assert not latent_images(_rows(apart, np.full(9, 100.0), np.full(9, 130.0), fall=0.3), mjd, **kw, join_px=2).any()
    # the last visit: nothing shows the runs end, so only a fade makes them a latent, whatever
    # their number (a cluster of defects that appeared in that visit holds its level)
    blob = [(40 + dy, 40 + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    last = _rows(blob, np.full(9, 200.0), np.full(9, np.nan), fall=1.5)
    assert latent_images(last, mjd, **kw, join_px=2).all()
    held = _rows(blob, np.full(9, 200.0), np.full(9, np.nan), fall=0.3)
    assert not latent_images(held, mjd, **kw, join_px=2).any()
    assert latent_images(held.assign(first_good_mjd=np.nan, fall_sigma=np.inf), mjd, **kw).sum() == 0
    # a run to the end that began in an earlier visit lasts longer than hours: kept
    assert not latent_images(_rows(blob, np.full(9, 130.0), np.full(9, np.nan), fall=4.0), mjd, **kw).any()


def test_a_span_of_scatter_holding_a_hit_is_judged_outside_its_hours_by_the_chi2_tail():
    # imager (351, 230): a normal pixel a hit left raised over one visit (13, 3.6, 3.6 and 21.5
    # sigma), found as a span of excess scatter with two exposures of the visit before and three
    # of the visit after (-2.9, -0.8; -2.7, 2.4, -2.1 sigma). Those five sum to 26.5 in squares:
    # chi^2 with 5 degrees is exceeded with probability 7e-5 (3.8 sigma), while the Gaussian
    # approximation of the sum, (26.5 - 5) / sqrt(10), said 6.8 and kept the span as a defect
    h = np.array([1167.15, 1167.23, 2535.03, 2535.12, 2535.16, 2535.38, 4300.45, 4300.71, 4300.84])
    z = np.array([-2.9, -0.8, 13.0, 3.6, 3.6, 21.5, -2.7, 2.4, -2.1])
    s = np.full(9, 0.02)
    kw = dict(max_hours=6.0, min_sigma=6.43, scatter_clip=6.0)
    assert explained_by_hit(z * s, s, h, 0, 9, [2535.03], **kw)
    # a noisy pixel scatters outside the hours too: the same visits at 4-5 sigma are not a hit's
    noisy = np.where(np.abs(z) < 3.5, np.sign(z) * 4.5, z)
    assert not explained_by_hit(noisy * s, s, h, 0, 9, [2535.03], **kw)


def test_a_fall_within_a_visit_is_no_latent_when_the_pixel_shows_that_excess_again():
    # a telegraph switching within exposures: its rate falls over a visit (0.5 to 0.33 DN/s) as a
    # latent's would, and it is back at that level over a later visit; a latent needs a bright
    # exposure before it each time, so both visits are the defect. Back at ten times the level
    # (another defect), the fall stays a latent.
    t0, t1 = 6 * 480.0, 9 * 480.0
    fall = np.array([0.5, 0.45, 0.40, 0.36, 0.33])

    def pixel(level):
        def excess(h):
            out = np.zeros(h.size)
            out[30:35] = fall
            out[(h >= t1) & (h < t1 + 2)] = level
            return out
        return excess

    p = DetectionParams()
    for level, runs in ((0.3, [(30, 35), (45, 50)]), (3.0, [(45, 50)])):
        for seed in range(3):
            r, s, sky, hours = _visits(seed, pixel(level))
            got = [(w["start"], w["stop"]) for w in pixel_intervals(r, s, sky, p, p.thresholds(1_000_000, r.size),
                                                                     hours=hours)]
            assert got == runs, (level, seed, got)


def test_a_hit_s_charge_over_a_visit_leaves_the_normal_state_whole():
    """A normal pixel of the 40-exposure mrs-long set (707, 813), on a fringe's crest (its
    residual 0.17 of the flat-fielded sky), that a hit (JUMP_DET in exposure 16) left raised over
    its visit: 26, 25 and 60 sigma. About a running median of exposures whose noise differs
    tenfold the first look finds a span of scatter over exposures 4-39; taken out with it, the
    normal state would be the few exposures outside, against which every other one is off, and
    the pixel reported over 37 exposures (or two runs around the visit without the population).
    The hit explains that span: the normal state is every other exposure, and nothing is
    reported; without the JUMP_DET flag the charge is the pixel's own."""
    r = np.array([1.2057, 0.5784, 0.98, 0.9238, 0.7458, 0.9061, 1.7624, 0.9072, 0.9533, 1.1626, 1.0736, 1.6392,
                  1.3878, 1.6282, 1.3966, 1.1111, 2.2726, 3.0453, 1.6428, 0.939, 0.5869, 0.74, 0.6989, 1.5796,
                  0.7757, 1.8147, 2.0557, 0.6089, 1.1263, 0.7493, 0.6781, 1.102, 0.7966, 1.0179, 0.6058, 1.4314,
                  0.5313, 0.9275, 1.6386, 1.5005])
    s = np.array([0.1092, 0.1005, 0.0333, 0.0711, 0.0315, 0.0304, 0.1102, 0.089, 0.0259, 0.1333, 0.1682, 0.1186,
                  0.0452, 0.0438, 0.0314, 0.1786, 0.0445, 0.0518, 0.0175, 0.027, 0.1502, 0.0349, 0.0236, 0.0395,
                  0.0217, 0.2385, 0.1893, 0.056, 0.1069, 0.1948, 0.093, 0.1931, 0.0217, 0.0369, 0.0402, 0.0912,
                  0.0212, 0.1915, 0.0286, 0.1321])
    sky = np.array([8.29, 3.467, 6.183, 5.594, 4.22, 5.244, 11.237, 5.672, 5.463, 5.914, 7.967, 9.641, 8.025, 9.669,
                    8.103, 5.449, 6.61, 10.477, 3.473, 5.523, 4.3, 4.6, 4.306, 9.404, 4.498, 11.268, 12.073, 3.719,
                    6.437, 4.406, 4.214, 5.229, 4.613, 5.862, 3.449, 8.241, 2.97, 3.141, 9.814, 7.697])
    hours = np.array([0.0, 0.05, 0.25, 2263.29, 2263.46, 2662.19, 2662.4, 2662.46, 2662.74, 2677.55, 2886.19, 3912.88,
                      3913.04, 3913.31, 3913.72, 6674.58, 7672.01, 7672.26, 7672.83, 9404.33, 9404.6, 9404.73,
                      9405.09, 9811.47, 9811.96, 10977.57, 12297.77, 12297.83, 12297.9, 12297.94, 15315.3, 15315.34,
                      15315.66, 19303.45, 19303.66, 20111.71, 21226.07, 21226.29, 21226.67, 21227.07])
    clip = np.full(40, 6.0)
    clip[16] = 3.0  # a JUMP_DET exposure is clipped like the scatter
    p = DetectionParams()
    th = p.thresholds(1_000_000, r.size)
    # the neighbours' population as detect measured it, and none
    for prior in ((0.0137, 0.0139, -0.0019, 2e-05, 5.344, 0.1924), None):
        ev = pixel_intervals(r, s, sky, p, th, clip=clip, hours=hours, hits=[7672.01], prior=prior)
        assert ev == [], [(w["start"], w["stop"]) for w in ev]
        ev = pixel_intervals(r, s, sky, p, th, clip=clip, hours=hours, prior=prior)
        assert any(w["start"] <= 16 and w["stop"] >= 19 for w in ev)


def test_a_series_that_one_visit_holds_half_of_is_cautioned():
    """A latent lasts hours: where one span of afterglow_max_hours holds half a footprint's
    exposures, the latent of a bright target seen before that visit can pass for the normal
    state (a 6-exposure SLITLESSPRISM set with 4 exposures in its first hour flagged 27 normal
    pixels, benchmarks/README.md, *Short series*). Longer series are not cautioned."""
    visit = 60285.39 + np.array([0.0, 0.014, 0.033, 0.042])     # 4 exposures in one hour
    later = np.array([60291.26, 60425.70])
    assert busiest_hours(np.r_[later, visit], 6.0) == 4
    assert busiest_hours(visit, 0.5) == 2                       # 20 min: two of them at most
    assert busiest_hours([], 6.0) == 0
    six = latent_cautions({"SLITLESSPRISM": np.r_[visit, later]}, 6.0)
    assert len(six) == 1 and "SLITLESSPRISM: 4 of its 6 exposures lie within 6 h" in six[0]
    ten = np.r_[visit, later, 60500.0 + 30 * np.arange(4)]
    assert latent_cautions({"SLITLESSPRISM": ten, "FULL": later}, 6.0) == []
