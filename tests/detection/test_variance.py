"""The excess-variance statistic alone (lrscube.variance): pure numpy, small arrays."""

import numpy as np
import pytest

from lrscube.detection import variance
from lrscube.detection.baseline import gaussian_clipped_moments

G1, G2 = gaussian_clipped_moments(1.0, 6.0)


def _noise(rng, n, p):
    """Per-exposure noise from 50 s to 2000 s exposures (a factor ~6 in ERR)."""
    return (0.05 * np.sqrt(1000.0 / rng.uniform(50, 2000, n)))[:, None] * np.ones((1, p))


def test_null_stays_far_below_the_threshold_and_measures_unit_scale():
    rng = np.random.default_rng(0)
    n, p = 60, 4000
    s = _noise(rng, n, p)
    x = rng.normal(size=(n, p))
    u, v = variance.terms(x, s, 6.0, G1, G2)
    stat = variance.scan(u, v, min_length=3)
    # 4000 normal pixels: the largest run is far below a 6-sigma threshold (the trimming makes
    # the null narrower than Gaussian)
    assert stat.max() < 5.0
    assert variance.null_scale(variance.full(u, v)) == 1.0
    # a null twice as wide as the moments say is measured as such
    u2, v2 = variance.terms(2 * x, s, 6.0, G1, G2)
    assert 1.5 < variance.null_scale(variance.full(u2, v2))


def test_no_two_exposures_decide_whatever_their_size():
    rng = np.random.default_rng(1)
    n, p = 60, 200
    s = _noise(rng, n, p)
    x = rng.normal(size=(n, p))
    # cosmic-ray residuals: one or two exposures at any height, in the most precise exposures
    for k in range(p):
        hit = np.argsort(s[:, k])[: 1 + k % 2]
        x[hit, k] = 1e3
    u, v = variance.terms(x, s, 6.0, G1, G2)
    assert variance.scan(u, v, min_length=3).max() < 5.0
    i, j, st = variance.best_run(u[:, 0], v[:, 0], 3)
    assert st < 5.0


def test_a_noisy_pixel_with_a_normal_mean_is_found_with_its_onset_and_recovery():
    rng = np.random.default_rng(2)
    n = 80
    s = _noise(rng, n, 1)[:, 0]
    e = rng.normal(0, s)
    # extra scatter of 0.15 DN/s (additive: 0.7-4 times ERR) from exposure 30 to 59; mean zero
    e[30:60] += rng.normal(0, 0.15, 30)
    u, v = variance.terms(e / s, s, 6.0, G1, G2)
    assert variance.scan(u, v, min_length=3) > 8.0
    i, j, st = variance.best_run(u, v, 3)
    assert st > 8.0
    assert abs(i - 30) <= 2 and abs(j - 60) <= 2
    assert variance.rms_ratio((e / s)[i:j], s[i:j], 6.0, G1) > 1.5
    assert abs(variance.rms_ratio((e / s)[:30], s[:30], 6.0, G1) - 1.0) < 0.35


def test_scan_matches_brute_force_and_best_run_is_the_maximum():
    rng = np.random.default_rng(3)
    n = 23
    u = rng.normal(size=n)
    v = rng.uniform(0.5, 2.0, n)
    best = -np.inf
    for a in range(n):
        for b in range(a + 3, n + 1):
            st = (u[a:b].sum() - variance.TRIM * max(u[a:b].max(), 0.0)) / np.sqrt(v[a:b].sum())
            if st > best:
                best, ab = st, (a, b)
    i, j, st = variance.best_run(u, v, 3)
    assert (i, j) == ab and np.isclose(st, best)
    # the scan uses a grid of lengths: never above the exact maximum, close to it
    sc = variance.scan(u, v, min_length=3, ratio=1.0 + 1e-9)
    assert np.isclose(sc, best)
    assert variance.scan(u, v, min_length=3) <= best + 1e-12


def test_weights_follow_the_precision_and_unused_exposures_count_nothing():
    s = np.array([0.1, 0.2, 0.05, np.nan])
    x = np.array([1.0, 2.0, 3.0, 1.0])
    u, v = variance.terms(x, s, 6.0, G1, G2)
    assert u[3] == 0 and v[3] == 0
    # weight s_ref / s with s_ref the median noise (0.1): 1, 0.5, 2
    assert np.allclose(u[:3], np.array([1.0, 0.5, 2.0]) * (np.array([1.0, 4.0, 9.0]) - G1))
    assert variance.best_run(u[:2], v[:2], 3)[2] == -np.inf


def test_line_factor_is_what_a_line_across_the_dispersion_shares_not_one_noisy_pixel():
    rng = np.random.default_rng(4)
    n, ny, nx = 40, 30, 50
    s = _noise(rng, n, ny * nx)
    x = rng.normal(size=(n, ny, nx))
    x[:, 0, :] *= 2.0      # the first line along the dispersion (axis 0): every pixel twice the noise
    x[:, 10, 7] *= 5.0     # one noisy pixel
    f = variance.line_factor(x.reshape(n, -1), s, 6.0, G1, (ny, nx), axis=0).reshape(ny, nx)
    assert 3.0 < f[0].min() and f[0].max() < 5.0
    assert np.allclose(f[1:], f[1:, :1]) and f[1:].max() < 1.3
    assert f[10, 7] == f[10, 0]
    # dispersion along x: lines are columns
    g = variance.line_factor(np.swapaxes(x, 1, 2).reshape(n, -1), s, 6.0, G1, (nx, ny), axis=1).reshape(nx, ny)
    assert 3.0 < g[:, 0].min()


def test_line_factor_follows_cut_windows_along_a_line_that_shares_excess_not_a_cluster_inside():
    """In a line that shares an excess (the end of the sky model), pixels whose windows are cut
    across the dispersion too (a corner: the last four, 2-3.5 times the noise) get the factor of
    the pixels beside them; a noisy pixel among them keeps its own excess above it. In a line
    that shares none, a group of three noisy pixels does not raise its own factor."""
    rng = np.random.default_rng(5)
    n, ny, nx = 100, 30, 50
    s = _noise(rng, n, ny * nx)
    x = rng.normal(size=(n, ny, nx))
    x[:, 0, :] *= 1.5
    x[:, 0, -4:] *= np.array([2.0, 2.5, 3.0, 3.5]) / 1.5
    x[:, 0, -6] *= 5.0                    # a noisy pixel next to the corner
    x[:, 12, 20:23] *= 4.0                # three noisy pixels side by side inside
    f = variance.line_factor(x.reshape(n, -1), s, 6.0, G1, (ny, nx), axis=0).reshape(ny, nx)
    k2 = (np.minimum(x ** 2, 36.0) * (1.0 / s.reshape(n, ny, nx))).sum(0) / (G1 * (1.0 / s.reshape(n, ny, nx)).sum(0))
    assert np.all(k2[0, -3:] / f[0, -3:] < 1.6)                   # the corner: within its cut neighbours' scatter
    assert np.all(k2[0, -3:] / np.median(f[0]) > 2.5)             # ... which the line's median alone missed
    assert k2[0, -6] / f[0, -6] > 5.0                             # the noisy pixel stands out
    assert np.allclose(f[1:], f[1:, :1]) and f[1:].max() < 1.3    # lines that share nothing: one factor



@pytest.mark.parametrize("n", [1, 2, 3, 8, 31])
def test_terms_compiled_equals_numpy(n):
    """The compiled terms are the numpy ones bit for bit: NaN, inf, zero and negative noise, a
    pixel no exposure sees, clips and moments per exposure or broadcast, NaN moments, float32
    inputs."""
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 300))
    s = rng.uniform(0.5, 2.0, (n, 300)).astype(np.float32)
    for a, value, frac in ((x, np.nan, 0.1), (x, np.inf, 0.02), (s, np.nan, 0.05), (s, 0.0, 0.05),
                           (s, -1.0, 0.02), (s, np.inf, 0.02)):
        a[rng.random(a.shape) < frac] = value
    x[:, :3] = np.nan  # pixels no exposure sees
    s[:, 5] = 1e-30
    clip = np.where(rng.random((n, 300)) < 0.5, 6.0, 4.0)
    clip[rng.random(clip.shape) < 0.02] = np.nan
    m1 = rng.uniform(0.8, 1.0, (n, 300))
    m1[rng.random(m1.shape) < 0.03] = np.nan
    m2 = rng.uniform(2.0, 3.0, (n, 300))
    for args in ((x, s, clip, m1, m2), (x, s, 6.0, G1, G2), (x[:, 7], s[:, 7], 6.0, G1, G2),
                 (x.reshape(n, 15, 20), s.reshape(n, 15, 20), clip.reshape(n, 15, 20), G1, G2),
                 (x, s, 6.0, m1[:, :1], m2[:, :1]),
                 # float32 inputs as they are, widened value by value (no float64 copies)
                 (x.astype(np.float32), s, clip.astype(np.float32), m1.astype(np.float32), m2.astype(np.float32)),
                 (x.astype(np.float32)[:, 7], s[:, 7], np.float32(4.0), G1, G2)):
        for got, want in zip(variance.terms(*args), variance.terms_numpy(*args)):
            assert got.shape == want.shape
            assert np.array_equal(np.asarray(got).view(np.int64), np.asarray(want).view(np.int64))


def test_terms_compiled_equals_numpy_on_empty_masked_and_single_inputs():
    # no exposures, no pixels, every exposure unusable, one exposure of one pixel
    rng = np.random.default_rng(2)
    x, s = rng.normal(size=(12, 40)), rng.uniform(0.5, 2.0, (12, 40))
    for xs, ss in ((x[:0], s[:0]), (x[:, :0], s[:, :0]), (np.full_like(x, np.nan), s), (x, np.zeros_like(s)),
                   (x[:1, :1], s[:1, :1])):
        for got, want in zip(variance.terms(xs, ss, 6.0, G1, G2), variance.terms_numpy(xs, ss, 6.0, G1, G2)):
            assert got.shape == want.shape
            assert np.array_equal(got.view(np.int64), want.view(np.int64))


@pytest.mark.parametrize("n", [1, 2, 8, 31])
def test_terms_with_null_moments_outside_jumps_are_the_terms_of_the_chosen_moments_bit_for_bit(n):
    """``terms(..., jump=, null=)`` (the screen's moments: measured in JUMP_DET exposures, Gaussian
    elsewhere) is ``terms`` of ``np.where(jump, m1, g1)`` and ``np.where(jump, m2, g2)``: NaN,
    inf and zero noise, NaN moments, a pixel no exposure sees, every exposure or none a jump,
    float32 inputs; and on no exposures, no pixels, all unusable and one value."""
    rng = np.random.default_rng(40 + n)
    x = rng.normal(size=(n, 200))
    s = rng.uniform(0.5, 2.0, (n, 200)).astype(np.float32)
    for a, value, frac in ((x, np.nan, 0.1), (x, np.inf, 0.02), (s, np.nan, 0.05), (s, 0.0, 0.05)):
        a[rng.random(a.shape) < frac] = value
    x[:, :3] = np.nan
    clip = np.where(rng.random((n, 200)) < 0.5, 6.0, 4.0).astype(np.float32)
    m1 = rng.uniform(0.3, 0.9, (n, 200))
    m1[rng.random(m1.shape) < 0.05] = np.nan
    m2 = rng.uniform(1.0, 3.0, (n, 200))
    g = gaussian_clipped_moments(1.0, 5.0)
    for jump in (rng.random((n, 200)) < 0.3, np.zeros((n, 200), bool), np.ones((n, 200), bool)):
        for xs in (x, x.astype(np.float32)):
            got = variance.terms(xs, s, clip, m1, m2, jump=jump, null=g)
            want = variance.terms(xs, s, clip, np.where(jump, m1, g[0]), np.where(jump, m2, g[1]))
            for a, b in zip(got, want):
                assert a.shape == b.shape and np.array_equal(a.view(np.int64), b.view(np.int64))
    jump = rng.random((n, 200)) < 0.3
    for sl in (np.s_[:0], np.s_[:, :0], np.s_[:1, :1]):
        got = variance.terms(x[sl], s[sl], 6.0, m1[sl], m2[sl], jump=jump[sl], null=g)
        want = variance.terms(x[sl], s[sl], 6.0, np.where(jump[sl], m1[sl], g[0]), np.where(jump[sl], m2[sl], g[1]))
        for a, b in zip(got, want):
            assert a.shape == b.shape and np.array_equal(a.view(np.int64), b.view(np.int64))
    got = variance.terms(np.full_like(x, np.nan), s, 6.0, m1, m2, jump=jump, null=g)  # all unusable
    assert not got[0].any() and not got[1].any()


def test_a_noisy_pixel_to_the_end_of_the_series_is_bad_to_its_end():
    # excess scatter from exposure 40 on, its last exposure quiet: not a recovery
    from lrscube.detection.detection_params import DetectionParams
    from lrscube.detection.states import pixel_intervals
    n = 60
    rng = np.random.default_rng(11)
    sky = rng.uniform(2.0, 20.0, n)
    s = np.full(n, 0.05)
    r = 0.01 * sky + rng.normal(0, 0.05, n)
    r[40:] += np.array([-8, 1, 0.5, -5, 1, 4, 0, -3, -1, -6.5, 0.5, -9, -5, -2.5, 0.5, 2, -4, 0.3, -6, 0.2]) * 0.05
    p = DetectionParams()
    out = pixel_intervals(r, s, sky, p, p.thresholds(1_000_000, n), prior=(0.0, 4e-4, 0.0, 1.6e-5))
    assert [(w["start"], w["stop"], w["noisy"]) for w in out] == [(40, n, True)]


def test_a_pixel_scattering_far_beyond_the_clip_in_each_of_its_last_exposures_is_noisy_from_its_onset():
    # a simulated noisy pixel of an LRS full frame: the last 6 of its 20 exposures hundreds of
    # times their noise off, both ways; against the measured null (clip 3) every clipped square
    # of them sits at the clip, so only the tail probabilities can judge where the span begins
    from lrscube.detection.detection_params import DetectionParams
    from lrscube.detection.states import pixel_intervals
    r = np.array([0.0329, 0.0375, 0.1029, 0.0219, 0.0781, -0.0009, 0.0525, 0.0157, 0.0475, 0.0255, 0.0506,
                  0.0136, 0.0488, 0.0197, 9.0486, -3.0479, -16.7897, 2.1786, 15.0923, -27.9562])
    s = np.array([0.0237, 0.0346, 0.0325, 0.0092, 0.054, 0.0216, 0.0179, 0.0095, 0.0272, 0.0129, 0.0154,
                  0.0072, 0.0381, 0.0193, 0.1379, 0.021, 0.0391, 0.0488, 0.0098, 0.0398])
    sky = np.array([1.647, 1.194, 1.266, 1.049, 0.892, 1.882, 1.357, 0.977, 0.976, 1.039, 1.125, 0.794, 1.7,
                    0.716, 0.794, 1.817, 1.552, 1.774, 0.847, 0.98])
    n = r.size
    g1, g2 = gaussian_clipped_moments(1.0, 3.0)
    p = DetectionParams()
    out = pixel_intervals(r, s, sky, p, p.thresholds(1_000_000, 40), vnull=(g1, g2, 3.0),
                          prior=(-0.0027, 3.1e-4, 0.0039, 1.85e-5))
    assert [(w["start"], w["stop"], w["noisy"]) for w in out] == [(14, n, True)]


def test_an_exposure_at_the_clip_counts_by_its_tail_probability():
    from scipy.stats import norm

    from lrscube.detection.states import _scatter_loglik
    c = np.full(4, 3.0)
    m1 = np.full(4, gaussian_clipped_moments(1.0, 3.0)[0])
    q = np.array([1.0, 9.0, 9.0, 0.25])
    for k in (2.0, 50.0, 1e6):
        g = _scatter_loglik(q, m1, c, k)
        kk = min(k, 1e3)
        # below the clip: the density ratio of N(0, k^2) to N(0, 1) at z^2 = q
        assert g[1] == pytest.approx(-np.log(kk) + 0.5 * (1 - 1 / kk**2))
        # at the clip: P(|z| >= 3 | scatter k) / P(|z| >= 3 | normal), which grows with k
        assert g[2] - g[1] == pytest.approx(np.log(norm.sf(3.0 / kk) / norm.sf(3.0)))
        assert g[2] - g[1] > 0


@pytest.mark.parametrize("n", [7, 48, 100])
def test_terms_compiled_equals_numpy_where_pixels_share_their_exposures_noise(n):
    """Neighbouring pixels' noise follows the same exposures (the median of the one before is
    where the next one's is looked for first): still numpy's terms bit for bit."""
    rng = np.random.default_rng(n)
    per_exposure = rng.uniform(0.02, 0.2, (n, 1))
    s = (per_exposure * rng.uniform(0.995, 1.005, (n, 2000))).astype(np.float32)
    s[:, 1000:1010] *= 3  # a few pixels far from the ones before
    s[rng.random(s.shape) < 0.01] = np.nan
    x = rng.normal(size=(n, 2000))
    x[rng.random(x.shape) < 0.05] = np.nan
    for got, want in zip(variance.terms(x, s, 6.0, G1, G2), variance.terms_numpy(x, s, 6.0, G1, G2)):
        assert np.array_equal(got.view(np.int64), want.view(np.int64))


@pytest.mark.parametrize("n", [0, 1, 2, 8, 100])
def test_weighted_ratios_compiled_equal_numpy(n):
    """line_factor's per-pixel ratios, compiled, are the numpy ones bit for bit: NaN, inf, zero
    and negative noise, float32 noise, pixels no exposure sees, clips and moments per exposure
    or broadcast, NaN clips and moments."""
    rng = np.random.default_rng(50 + n)
    x = rng.normal(size=(n, 400)) * np.exp(rng.uniform(-3, 3, (n, 400)))
    s = rng.uniform(0.5, 2.0, (n, 400)).astype(np.float32)
    for a, value, frac in ((x, np.nan, 0.1), (x, np.inf, 0.02), (s, np.nan, 0.05), (s, 0.0, 0.05),
                           (s, -1.0, 0.02), (s, np.inf, 0.02)):
        a[rng.random(a.shape) < frac] = value
    x[:, :3] = np.nan
    clip = np.where(rng.random((n, 400)) < 0.5, 6.0, 4.0)
    clip[rng.random(clip.shape) < 0.02] = np.nan
    m1 = rng.uniform(0.8, 1.0, (n, 400))
    m1[rng.random(m1.shape) < 0.03] = np.nan
    for args in ((x, s, clip, m1), (x, s, 6.0, G1), (x, s.astype(float), 4.0, m1[:, :1]), (x.astype(np.float32), s, 6.0, G1)):
        got, want = variance.weighted_ratios(*args), variance.weighted_ratios_numpy(*args)
        assert np.array_equal(got.view(np.int64), want.view(np.int64))


@pytest.mark.parametrize("pairwise", [False, True])
@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 48, 100, 129, 300])
def test_full_compiled_equals_numpy_bit_for_bit(n, pairwise):
    """The full-series statistic of the compiled pass is numpy's bit for bit, its sums exposure
    after exposure (C-ordered terms) or pairwise (Fortran-ordered, as ``u[:, cols]`` copies):
    NaN and inf terms, signed zeros, all-zero (unused) pixels, terms of widely different sizes
    (the order of the sums shows), a subset of the pixels, none, one pixel (1-D)."""
    rng = np.random.default_rng(n)
    u = rng.normal(size=(n, 400)) * 10.0 ** rng.uniform(-6, 6, (n, 400))
    v = rng.uniform(0.5, 2.0, (n, 400)) * 10.0 ** rng.uniform(-6, 6, (n, 400))
    u[rng.random(u.shape) < 0.01] = np.nan
    u[rng.random(u.shape) < 0.01] = np.inf
    u[rng.random(u.shape) < 0.01] = -np.inf
    u[:, 10] = 0.0
    v[:, 10] = 0.0                                   # a pixel no exposure sees
    u[:, 11] = -0.0
    u[:, 12] = -np.abs(u[:, 12])                      # all below zero: the maximum is clipped to 0
    u[::2, 13] = -0.0
    u[1::2, 13] = 0.0
    v[rng.random(v.shape) < 0.01] = 0.0
    lay = np.asfortranarray if pairwise else np.ascontiguousarray
    def same(a, b):  # bit for bit; a NaN's sign and payload are not numbers (null_scale drops them)
        nan = np.isnan(a)
        return (a.shape == b.shape and np.array_equal(nan, np.isnan(b))
                and np.array_equal(a[~nan].view(np.int64), b[~nan].view(np.int64)))

    assert same(variance.full(u, v, pairwise=pairwise), variance.full_numpy(lay(u), lay(v)))
    cols = np.flatnonzero(rng.random(400) < 0.3)
    assert same(variance.full(u, v, cols, pairwise=pairwise), variance.full_numpy(lay(u[:, cols]), lay(v[:, cols])))
    if pairwise:
        assert same(variance.full(u, v, cols, pairwise=True), variance.full_numpy(u[:, cols], v[:, cols]))
    assert same(variance.full(u, v, cols[:0], pairwise=pairwise), np.empty(0))
    # by default in the order numpy sums the arrays as they are laid out (a strided view: numpy's)
    assert same(variance.full(lay(u), lay(v)), variance.full_numpy(lay(u), lay(v)))
    assert same(variance.full(u[:, ::3], v[:, ::3]), variance.full_numpy(u[:, ::3], v[:, ::3]))
    assert same(variance.full(u[:, 5], v[:, 5], pairwise=pairwise), variance.full_numpy(u[:, 5], v[:, 5]))


def test_a_pixel_swinging_both_ways_has_its_largest_term_left_out_once():
    x = np.zeros((10, 5))
    x[[2, 5], 0] = [8.0, -7.0]             # one each way: two exposures beyond the event threshold
    x[[2, 5, 7], 1] = [8.0, -7.0, 9.0]     # three, both ways: the pixel's own
    x[[2, 5, 7], 2] = [8.0, 7.0, 9.0]      # three, all raised (cosmic rays, a latent, a hot run)
    x[[2, 5, 7], 3] = [-8.0, -7.0, -9.0]   # three, all below
    x[:, 4] = np.nan
    x[[2, 5, 7], 4] = [8.0, -7.0, 9.0]     # unused exposures count for nothing
    assert variance.trims(x, 5.0).tolist() == [variance.TRIM, variance.TRIM_SWINGING, variance.TRIM,
                                               variance.TRIM, variance.TRIM_SWINGING]


def test_three_excursions_close_together_are_the_pixel_s_own_whatever_their_signs():
    """Cosmic rays hit a pixel in ~1e-4 of its exposures: three exposures beyond the event
    threshold within 2 window + 1 exposures of each other are the pixel's own (as detect keeps
    such a pixel's events whole), so its largest term is left out once, not twice; the same three
    spread over the series may be hits."""
    x = np.zeros((40, 4))
    x[[30, 33, 36], 0] = [8.0, 7.0, 9.0]      # a noisy pixel's last visits, all raised
    x[[30, 33, 36], 1] = [-8.0, -7.0, -9.0]   # ... all below
    x[[2, 20, 38], 2] = [8.0, 7.0, 9.0]       # far apart
    x[[30, 36], 3] = [8.0, 9.0]               # two only
    own, hit = variance.TRIM_SWINGING, variance.TRIM
    assert variance.trims(x, 5.0, 5).tolist() == [own, own, hit, hit]
    assert variance.trims(x, 5.0).tolist() == [hit, hit, hit, hit]  # no window: both signs needed
    assert variance.trims(x[:5], 5.0, 5).tolist() == [hit] * 4      # a series shorter than the window


def test_one_excursion_below_beside_one_above_is_the_pixel_s_own_where_such_pairs_are_rare():
    """A cosmic ray only adds charge: an exposure 9 sigma below the baseline within a few
    exposures of one 27 sigma above (lrs (547, 790) of the 40-exposure set, noisy over its last
    six full frames) is a pixel swinging both ways, not a hit, where both lie beyond the swing
    level; two above, or the two far apart, may be hits."""
    x = np.zeros((20, 4))
    x[[15, 18, 19], 0] = [-9.1, 26.9, 4.4]
    x[[15, 18], 1] = [9.1, 26.9]              # both above
    x[[2, 18], 2] = [-9.1, 26.9]              # further apart than the window
    x[[15, 18], 3] = [-6.0, 26.9]             # the fall short of the swing level
    own, hit = variance.TRIM_SWINGING, variance.TRIM
    assert variance.trims(x, 5.0, 5, swing=8.0).tolist() == [own, hit, hit, hit]
    assert variance.trims(x, 5.0, 5).tolist() == [hit] * 4          # no swing level: never
    assert variance.trims(x, 5.0, swing=8.0).tolist() == [hit] * 4  # no window: three beyond as well


def test_the_swing_level_is_where_the_data_make_such_pairs_rarer_than_the_false_alarm_rate():
    """Gaussian noise: a rise and a fall beyond 5 sigma within 11 exposures are rare (about
    40 x 11 x 3e-7 x 3e-7 per pixel): the level is the event threshold; Student-t noise (3
    degrees of freedom, unit variance) falls beyond 5 sigma in ~2e-3 of its exposures: such
    pairs arise in ~1e-4 of its pixels and the level must rise far; too few values to measure a
    rarity: none. The tails are the single excursions': defects that swing often do not count."""
    rng = np.random.default_rng(2)
    alpha = 0.1 / 3 / 1e6
    g = rng.normal(size=(40, 60000))
    assert variance.swing_level(g, 5.0, 5, alpha) == 5.0
    t = rng.standard_t(3, size=(40, 60000)) / np.sqrt(3.0)
    f = variance.swing_level(t, 5.0, 5, alpha)
    assert f > 10.0
    # at that level the pairs are as rare as asked, by the tails of the single excursions
    single = t[:, (np.abs(t) > 5.0).sum(axis=0) == 1]
    n_up, n_down = (single > f).sum(), (single < -f).sum()
    assert 40 * 11 * max(n_up, 1) / t.size * max(n_down, 1) / t.size <= alpha
    # a noisy pixel's own swings do not raise the level: 50 pixels swinging by 20 sigma
    g2 = g.copy()
    g2[::4, :50] = 20.0
    g2[1::4, :50] = -20.0
    assert variance.swing_level(g2, 5.0, 5, alpha) == 5.0
    assert variance.swing_level(g[:, :100], 5.0, 5, alpha) == np.inf
    assert variance.swing_level(np.full((5, 5), np.nan), 5.0, 5, alpha) == np.inf


def test_two_falls_far_below_the_baseline_within_a_few_exposures_are_the_pixel_s_own():
    """Neither a cosmic ray nor a latent takes charge away: two exposures 15.8 and 6.2 sigma
    below the baseline next to each other (full size (333, 392), noisy over one visit, +4.2 just
    before them) are the pixel swinging, where both lie beyond the tile's fall level; one fall,
    two rises, or two falls further apart than the window may be chance or hits."""
    x = np.zeros((20, 5))
    x[[14, 15, 16], 0] = [4.2, -15.8, -6.2]
    x[[15, 16], 1] = [15.8, 6.2]              # both above: hits, a latent
    x[[2, 16], 2] = [-15.8, -6.2]             # further apart than the window
    x[[15, 16], 3] = [-15.8, -5.5]            # the second short of the fall level
    x[15, 4] = -15.8                          # one fall
    own, hit = variance.TRIM_SWINGING, variance.TRIM
    assert variance.trims(x, 5.0, 5, fall=6.0).tolist() == [own, hit, hit, hit, hit]
    assert variance.falls(x, 6.0, 5).tolist() == [True, False, False, False, False]
    assert variance.trims(x, 5.0, 5).tolist() == [hit] * 5          # no fall level: never
    assert variance.trims(x, 5.0, fall=6.0).tolist() == [hit] * 5   # no window: never
    assert variance.falls(x, np.inf, 5).tolist() == [False] * 5


def test_the_fall_level_is_where_the_data_make_two_falls_rarer_than_the_false_alarm_rate():
    """Gaussian noise: two falls beyond 5 sigma within 11 exposures are rare (40 x 11 x
    (3e-7)^2 per pixel): the level is the event threshold. Student-t noise (3 degrees of
    freedom) falls beyond 5 sigma in ~2e-3 of its exposures: the level must rise far, and at
    it the pairs are as rare as asked by the single excursions' tail; too few values: none."""
    rng = np.random.default_rng(3)
    alpha = 0.1 / 3 / 1e6
    g = rng.normal(size=(40, 60000))
    assert variance.fall_level(g, 5.0, 5, alpha) == 5.0
    t = rng.standard_t(3, size=(40, 60000)) / np.sqrt(3.0)
    f = variance.fall_level(t, 5.0, 5, alpha)
    assert f > 10.0
    single = t[:, (np.abs(t) > 5.0).sum(axis=0) == 1]
    assert 40 * 11 * (max((single < -f).sum(), 1) / t.size) ** 2 <= alpha
    # a level below it would not be: the tail there is measured, not assumed
    f0 = f - 0.5
    assert 40 * 11 * (max((single < -f0).sum(), 1) / t.size) ** 2 > alpha
    assert variance.fall_level(g[:, :100], 5.0, 5, alpha) == np.inf
    assert variance.fall_level(np.full((5, 5), np.nan), 5.0, 5, alpha) == np.inf


def test_scan_full_and_best_run_take_one_trim_per_pixel():
    rng = np.random.default_rng(4)
    n = 23
    u = rng.normal(size=(n, 2)) * 3.0
    v = rng.uniform(0.5, 2.0, (n, 2))
    tr = np.array([2.0, 1.0])
    for k in range(2):
        best, ab = -np.inf, None
        for a in range(n):
            for b in range(a + 3, n + 1):
                st = (u[a:b, k].sum() - tr[k] * max(u[a:b, k].max(), 0.0)) / np.sqrt(v[a:b, k].sum())
                if st > best:
                    best, ab = st, (a, b)
        i, j, st = variance.best_run(u[:, k], v[:, k], 3, trim=tr[k])
        assert (i, j) == ab and np.isclose(st, best)
        assert np.isclose(variance.scan(u, v, min_length=3, ratio=1.0 + 1e-9, trim=tr)[k], best)
    assert variance.scan(u, v, min_length=3, trim=np.full(2, 2.0)).tolist() == variance.scan(u, v, min_length=3).tolist()
    for pairwise in (False, True):
        lay = np.asfortranarray if pairwise else np.ascontiguousarray
        got = variance.full(lay(u), lay(v), [1], pairwise=pairwise, trim=tr)
        assert np.isclose(got[0], (u[:, 1].sum() - max(u[:, 1].max(), 0.0)) / np.sqrt(v[:, 1].sum()))
        assert np.isclose(got[0], variance.full_numpy(lay(u[:, [1]]), lay(v[:, [1]]), tr[[1]])[0])


def test_a_strongly_noisy_pixel_seen_in_its_last_five_exposures_is_found_and_no_cosmic_ray_decides():
    # LRS, 20 exposures: a pixel 24 times noisier than its ERR from exposure 15 on, its excursions
    # beyond the clip twice above and twice below the baseline. Its largest term trimmed twice,
    # two precise exposures at the clip left less than the threshold
    s = np.array([0.0189, 0.0282, 0.0277, 0.0077, 0.0487, 0.0171, 0.0146, 0.0078, 0.0229, 0.0109, 0.0136, 0.006,
                  0.0307, 0.017, 0.1338, 0.0167, 0.0328, 0.0412, 0.0086, 0.0348])
    e = np.array([0.0017, 0.0203, 0.0064, -0.0014, -0.0122, 0.0017, 0.0359, 0.0138, 0.0135, -0.0023, -0.0104, 0.0061,
                  0.0237, 0.0055, -0.0255, 0.5785, -0.1317, -0.011, -0.1409, 0.8309])
    x = (e / s)[:, None]
    u, v = variance.terms(x, s[:, None], 6.0, G1, G2)
    tr = variance.trims(x, 5.0)
    assert tr[0] == variance.TRIM_SWINGING
    assert variance.scan(u, v, min_length=3)[0] < 6.3 < variance.scan(u, v, min_length=3, trim=tr)[0]
    i, j, st = variance.best_run(u[:, 0], v[:, 0], 3, trim=tr[0])
    assert (i, j) == (15, 20) and st > 10.0
    # the same pixel with its two raised exposures alone (cosmic rays): nothing
    x2 = np.clip(x, -1.0, 1.0)
    x2[[15, 19]] = x[[15, 19]]
    u2, v2 = variance.terms(x2, s[:, None], 6.0, G1, G2)
    assert variance.trims(x2, 5.0)[0] == variance.TRIM
    assert variance.scan(u2, v2, min_length=3, trim=variance.trims(x2, 5.0))[0] < 5.0


def _best_run_numpy(u, v, min_length=3, lo=0, hi=None, trim=variance.TRIM):
    """best_run as the (start, end) table in numpy computed it (the code the kernel replaces)."""
    u = np.asarray(u, float)
    v = np.asarray(v, float)
    n = u.size
    hi = n if hi is None else hi
    m = hi - lo
    if m < max(min_length, 1):
        return lo, lo, -np.inf
    uu, vv = u[lo:hi], v[lo:hi]
    U = np.concatenate([[0.0], np.cumsum(uu)])
    V = np.concatenate([[0.0], np.cumsum(vv)])
    i = np.arange(m + 1)[:, None]
    j = np.arange(m + 1)[None, :]
    top = np.full((m + 1, m + 1), -np.inf)
    for a in range(m):
        top[a, a + 1:] = np.maximum.accumulate(uu[a:])
    with np.errstate(invalid="ignore", divide="ignore"):
        st = (U[None, :] - U[:, None] - float(trim) * np.maximum(top, 0.0)) / np.sqrt(V[None, :] - V[:, None])
    st = np.where((j - i >= max(min_length, 1)) & np.isfinite(st), st, -np.inf)
    k = int(np.argmax(st))
    a, b = divmod(k, m + 1)
    if not np.isfinite(st[a, b]):
        return lo, lo, -np.inf
    return lo + a, lo + b, float(st[a, b])


def test_compiled_best_run_is_the_numpy_tables_bit_for_bit():
    # noise, runs, NaN and infinite terms, zero and negative variances, signed zeros, ties,
    # one exposure, none, lengths beyond the series, windows lo:hi
    rng = np.random.default_rng(11)
    cases = []
    for k in range(300):
        n = int(rng.integers(1, 90))
        u = rng.normal(0, 1, n) + (rng.random(n) < 0.2) * rng.uniform(0, 30, n)
        v = rng.uniform(0.5, 2, n)
        if k % 4 == 0:
            u[rng.random(n) < 0.1] = np.nan
            v[rng.random(n) < 0.1] = 0.0
        if k % 5 == 0:
            u[rng.random(n) < 0.1] = np.inf
            v[rng.random(n) < 0.1] = -1.0
        if k % 6 == 0:
            u = np.round(u)  # ties
            u[rng.random(n) < 0.3] = -0.0
        if k % 7 == 0:
            u = np.zeros(n)
            u[::2] = -0.0
        cases.append((u, v))
    cases += [(np.array([5.0]), np.array([1.0])), (np.zeros(0), np.zeros(0)), (np.array([-0.0, -0.0, 0.0]), np.ones(3)),
              (np.full(10, np.nan), np.ones(10)), (np.ones(10), np.zeros(10))]
    for u, v in cases:
        n = u.size
        for ml in (0, 1, 3, n + 2):
            for trim in (0.0, variance.TRIM, 1.0):
                for lo, hi in ((0, None), (min(2, n), max(n - 1, min(2, n)))):
                    got = variance.best_run(u, v, ml, lo, hi, trim)
                    want = _best_run_numpy(u, v, ml, lo, hi, trim)
                    assert got[:2] == want[:2] and np.float64(got[2]).tobytes() == np.float64(want[2]).tobytes(), \
                        (u, v, ml, trim, lo, hi, got, want)


@pytest.mark.parametrize("n", [1, 2, 3, 8, 31, 100])
def test_full_terms_is_full_of_terms_bit_for_bit(n):
    """The fused full-series statistic (no (time, pixel) terms) is ``full(terms(x / div, ...))``
    with its sums in exposure order, bit for bit: NaN, inf, zero and negative noise, pixels no
    exposure sees, divisors NaN, zero and infinite, per-pixel trims, a subset of the pixels,
    none, float32 and float64 residuals, clips and moments per exposure or broadcast."""
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 300)) * 3.0
    s = rng.uniform(0.5, 2.0, (n, 300)).astype(np.float32)
    for a, value, frac in ((x, np.nan, 0.1), (x, np.inf, 0.02), (s, np.nan, 0.05), (s, 0.0, 0.05),
                           (s, -1.0, 0.02), (s, np.inf, 0.02)):
        a[rng.random(a.shape) < frac] = value
    x[:, :3] = np.nan                       # pixels no exposure sees (their statistic is 0 / 0)
    x[:, 9] = -0.0
    div = rng.uniform(0.5, 2.0, 300)
    div[[4, 6, 8]] = [np.nan, 0.0, np.inf]
    trim = np.where(rng.random(300) < 0.5, 1.0, 2.0)
    clip = np.where(rng.random((n, 300)) < 0.5, 6.0, 4.0)
    m1 = rng.uniform(0.8, 1.0, (n, 300))
    m2 = rng.uniform(2.0, 3.0, (n, 300))
    cols = np.flatnonzero(rng.random(300) < 0.7)

    def same(a, b):  # bit for bit; a NaN's sign and payload are not numbers (null_scale drops them)
        nan = np.isnan(a)
        return (a.shape == b.shape and np.array_equal(nan, np.isnan(b))
                and np.array_equal(a[~nan].view(np.int64), b[~nan].view(np.int64)))

    with np.errstate(divide="ignore", invalid="ignore"):
        for xx in (x, x.astype(np.float32)):
            for args in ((xx, s, 6.0, G1, G2), (xx, s, clip, m1, m2), (xx, s, clip.astype(np.float32), G1, m2[:1])):
                for d in (None, div):
                    for c, t in ((cols, trim), (None, None), (cols[:0], trim), (cols[:1], 1.0)):
                        want = variance.full(*variance.terms(xx if d is None else xx / d, *args[1:]), c,
                                             pairwise=False, trim=t)
                        assert same(variance.full_terms(*args, cols=c, trim=t, div=d), want)
            # one pixel (1-D), and no exposures (an error, as there): through terms and full
            assert same(variance.full_terms(xx[:, 5], s[:, 5], 6.0, G1, G2),
                        variance.full(*variance.terms(xx[:, 5], s[:, 5], 6.0, G1, G2), pairwise=False))
            for f in (lambda: variance.full(*variance.terms(xx[:0], s[:0], 6.0, G1, G2)),  # numpy's max of nothing
                      lambda: variance.full_terms(xx[:0], s[:0], 6.0, G1, G2)):
                with pytest.raises(ValueError):
                    f()


@pytest.mark.parametrize("shape", [(0, 4), (1, 1), (7, 300), (100, 500)])
def test_screen_values_are_the_numpy_expressions_bit_for_bit(shape):
    """x, the level screen's clipped z and the scatter screen's standardised clipped squares
    are the numpy expressions' (float64 residuals, float32 noise and clips) bit for bit: NaN,
    inf and -0.0 residuals, zero and NaN noise, NaN moments, per-exposure or broadcast clips and
    moments, one pixel (1-D); NaN where they are NaN (the screens skip those values)."""
    rng = np.random.default_rng(sum(shape))
    e = rng.normal(size=shape) * 10.0 ** rng.uniform(-3, 3, shape)
    for value, frac in ((np.nan, 0.1), (np.inf, 0.02), (-np.inf, 0.02), (-0.0, 0.02)):
        e[rng.random(shape) < frac] = value
    s = rng.uniform(0.1, 2, shape).astype(np.float32)
    s[rng.random(shape) < 0.05] = 0.0
    s[rng.random(shape) < 0.02] = np.nan
    jump = rng.random(shape) < 0.1
    clip = np.where(jump, 3.0, 6.0).astype(np.float32)
    vc = np.where(jump, 3.0, 5.0)
    m1 = rng.uniform(0.8, 1.0, shape)
    m2 = rng.uniform(0.5, 3.0, shape)
    m1[rng.random(shape) < 0.02] = np.nan

    def want(e, s, clip, vc, m1, m2):
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.clip(e / s, -clip, clip)   # temporal.clipped_z's
            x = e / s
            q = np.minimum(x ** 2, vc * vc)
            return x, z, (q - m1) / np.sqrt(np.maximum(m2 - m1 * m1, 1e-12))

    def same(a, b):
        nan = np.isnan(a)
        return (a.shape == b.shape and a.dtype == b.dtype == np.float64 and np.array_equal(nan, np.isnan(b))
                and np.array_equal(a[~nan].view(np.int64), b[~nan].view(np.int64)))

    for args in ((e, s, clip, vc, m1, m2), (e, s, np.float32(6.0), 5.0, G1, G2), (e, s, clip, vc, m1[:1], m2[:1]),
                 (e[:, 0], s[:, 0], clip[:, 0], vc[:, 0], 0.9, 2.0)):
        for got, ref in zip(variance.screen_values(*args), want(*args)):
            assert same(got, ref)
