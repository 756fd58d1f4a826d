"""Robust statistics along time: numerics on small arrays."""

import numpy as np

from lrscube.detection.temporal import (clipped_z, detection_threshold, geometric_lengths, scan_statistic, transients,
                              weighted_level)


def test_clipped_z():
    np.testing.assert_allclose(clipped_z(np.array([1.0, -50.0]), np.array([0.5, 1.0]), 6), [2.0, -6.0])


def test_transients_spikes_not_steps():
    n = 30
    r = np.zeros((n, 4))
    r[10, 0] = 50.0          # cosmic ray
    r[12:14, 1] = 50.0       # two-exposure event
    r[15:, 2] = 50.0         # a hot pixel's onset
    r[-1, 3] = 50.0          # event in the last exposure
    s = np.ones_like(r)
    sky = np.full_like(r, 10.0)
    t = transients(r, s, sky)
    assert t[10, 0] and t[12:14, 1].all() and t[-1, 3]
    assert not t[:, 2].any()
    assert t.sum() == 4


def test_dead_pixel_under_changing_sky_is_not_a_transient():
    rng = np.random.default_rng(0)
    sky = rng.uniform(2, 20, (40, 1))
    r = -sky  # residual of a dead pixel follows the sky
    assert not transients(r, np.full_like(r, 0.1), sky).any()


def test_scan_statistic_finds_a_weak_run_by_stacking():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1, (200, 50))
    z[100:164, 0] += 1.0  # 1 sigma per exposure over 64 exposures: 8 sigma stacked
    st = scan_statistic(z)
    assert st[0] > 7.0
    assert np.median(st[1:]) < 4.0


def test_geometric_lengths_cover():
    L = geometric_lengths(100)
    assert L[0] == 1 and L[-1] == 100 and np.all(L[1:] / L[:-1] <= 2.0)


def test_detection_threshold_grows_with_tests():
    a = detection_threshold(0.1, 10**6, 50)
    b = detection_threshold(0.1, 10**6, 1600)
    assert 5.5 < a < b < 7.5
    assert detection_threshold(1.0, 10**6, 150) < detection_threshold(0.1, 10**6, 150)


def test_weighted_level_additive_and_multiplicative():
    sky = np.array([1.0, 2.0, 4.0, 8.0])
    s = np.full(4, 0.01)
    a, _, chi2_a, _ = weighted_level(np.full(4, 3.0), s)
    b, _, chi2_m, _ = weighted_level(-0.5 * sky, s, weight_shape=sky)
    assert abs(a - 3.0) < 1e-9 and chi2_a < 1e-9
    assert abs(b + 0.5) < 1e-9 and chi2_m < 1e-9


def test_onset_next_to_noisier_exposures_is_not_an_event():
    # a hot pixel of 0.75 DN/s from exposure 3 on, seen in exposures of different length: the
    # onset exposure is precise (0.03), the next ones noisier; against a centred running median
    # (the lowest of the three bad exposures in the window) the onset looked like an event
    r = np.array([0.016, -0.005, 0.008, 0.819, 0.668, 0.575, 0.742, 0.704, 0.733, 0.815, 0.74])[:, None]
    s = np.array([0.012, 0.019, 0.028, 0.031, 0.033, 0.093, 0.048, 0.063, 0.018, 0.122, 0.043])[:, None]
    sky = np.full_like(r, 1.0)
    assert not transients(r, s, sky).any()


def test_a_short_defect_at_the_end_is_not_an_event():
    # bad in the last three exposures: its last two stand above the exposure before the onset,
    # not above the onset exposure
    r = np.zeros((30, 1))
    r[-3:] = 50.0
    assert not transients(r, np.ones_like(r), np.full_like(r, 10.0)).any()
