"""The null model of a normal pixel (lrscube.detection.baseline, lrscube.detection.states): pure numpy, one pixel at a time.

A normal pixel's residual against the sky of its neighbours is its own fixed response times
that sky, ``r = a * sky`` (rate files are not flat-fielded); a defect is an additive dark
excess ``d`` or a loss of response beyond the physical limits, or a change of either.
"""

import math

import numba
import numpy as np
import pandas as pd
import pytest

from lrscube.detection import baseline, classify, running
from lrscube.detection.detection_params import DetectionParams
from lrscube.detection.states import pixel_intervals

N = 60


def _series(seed, a=0.0, d=None, response=None, noise=0.05):
    """One pixel over N exposures: sky 2-20 DN/s changing from exposure to exposure, ERR ``noise``;
    ``d`` (N,) additive excess (DN/s), ``response`` (N,) the pixel's response (1 = its
    neighbours'), ``a`` its fixed flat-field offset."""
    rng = np.random.default_rng(seed)
    sky = rng.uniform(2.0, 20.0, N)
    g = (1.0 + a) * (np.ones(N) if response is None else np.asarray(response, float))
    r = (g - 1.0) * sky + (0.0 if d is None else np.asarray(d, float)) + rng.normal(0, noise, N)
    return r, np.full(N, noise), sky


def _intervals(r, s, sky, params=None):
    p = params or DetectionParams()
    th = p.thresholds(1_000_000, N)
    ivs = pixel_intervals(r, s, sky, p, th)
    ev = pd.DataFrame(ivs)
    if len(ev):
        ev = ev[classify.passes_floors(ev, p.classes)]
        ev["flag"] = classify.classify(ev, p.classes)
    return ev


def test_fit_separates_response_from_additive_excess():
    rng = np.random.default_rng(1)
    sky = rng.uniform(2, 20, (N, 1)) * np.ones((1, 3))
    a_true = np.array([0.03, -0.04, 0.0])
    d_true = np.array([0.0, 0.0, 0.2])
    r = sky * a_true + d_true + rng.normal(0, 0.05, sky.shape)
    st = baseline.fit_response_offset(r, np.full_like(r, 0.05), sky)
    assert np.allclose(st.a, a_true, atol=5 * st.a_err)
    assert np.allclose(st.d, d_true, atol=5 * st.d_err)
    assert np.all(st.a_err < 0.005) and np.all(st.d_err < 0.05)


@pytest.mark.parametrize("a", [0.03, -0.03, 0.08])
def test_a_pixel_with_its_own_response_is_normal(a):
    # 3 % (or 8 %) off its neighbours: hundreds of sigma against them, yet the flat field
    r, s, sky = _series(2, a=a)
    assert np.abs(r / s).max() > 5  # against its neighbours it is far from zero
    assert len(_intervals(r, s, sky)) == 0


def test_a_step_in_additive_excess_is_found_with_its_onset():
    d = np.where(np.arange(N) >= 25, 0.3, 0.0)
    r, s, sky = _series(3, a=0.03, d=d)
    ev = _intervals(r, s, sky)
    assert len(ev) == 1
    w = ev.iloc[0]
    assert (w.start, w.stop) == (25, N)
    assert w.flag == "WARM"
    assert abs(w.excess_dn_s - 0.3) < 0.05


def test_a_step_that_recovers_has_its_end():
    d = np.where((np.arange(N) >= 10) & (np.arange(N) < 40), 1.5, 0.0)
    r, s, sky = _series(4, a=-0.02, d=d)
    ev = _intervals(r, s, sky)
    assert len(ev) == 1
    w = ev.iloc[0]
    assert (w.start, w.stop, w.flag) == (10, 40, "HOT")


@pytest.mark.parametrize("left, flag", [(0.02, "DEAD"), (0.3, "LOW_QE")])
def test_a_loss_of_response_is_dead_or_low_qe_by_its_ratio(left, flag):
    resp = np.where(np.arange(N) >= 30, left, 1.0)
    r, s, sky = _series(5, a=0.03, response=resp)
    ev = _intervals(r, s, sky)
    assert len(ev) == 1
    w = ev.iloc[0]
    assert (w.start, w.stop, w.flag) == (30, N, flag)
    assert abs((1.0 - w.deficit) - left) < 0.05


@pytest.mark.parametrize("left, flag", [(0.02, "DEAD"), (0.3, "LOW_QE")])
def test_a_pixel_low_from_the_start_is_bad_throughout_by_its_response(left, flag):
    # no change to see: its normal state itself is beyond LOW_QE's limit (0.5 of its neighbours)
    r, s, sky = _series(6, response=np.full(N, left))
    ev = _intervals(r, s, sky)
    assert len(ev) == 1
    w = ev.iloc[0]
    assert w.static and (w.start, w.stop, w.flag) == (0, N, flag)


def test_a_small_response_change_is_the_flat_field_not_a_defect():
    # 10 % less response from exposure 30: significant, but within LOW_QE's min_deficit
    resp = np.where(np.arange(N) >= 30, 0.9, 1.0)
    r, s, sky = _series(7, response=resp)
    assert len(_intervals(r, s, sky)) == 0


def test_hot_from_the_start_is_bad_throughout_by_its_excess():
    r, s, sky = _series(8, a=0.02, d=np.full(N, 2.0))
    ev = _intervals(r, s, sky)
    assert len(ev) == 1 and ev.iloc[0].static and ev.iloc[0].flag == "HOT"


def test_an_excess_no_response_explains_is_bad_throughout_also_under_a_constant_sky():
    # 50x the sky in every exposure of a sky that does not change: response and dark current are
    # one parameter, but a response 51 times the neighbours' is no flat field
    rng = np.random.default_rng(9)
    n = 6
    sky = np.full(n, 10.0) + rng.normal(0, 0.01, n)
    r = 500.0 + rng.normal(0, 0.5, n)
    p = DetectionParams()
    ivs = pixel_intervals(r, np.full(n, 0.5), sky, p, p.thresholds(1_000_000, n))
    ev = pd.DataFrame(ivs)
    assert len(ev) == 1 and ev.iloc[0].static
    assert classify.classify(ev, p.classes).iloc[0] == "HOT"
    # ... and so is a pixel at a tenth of the sky: DEAD (or a dark reference 9 DN/s off)
    ev = pd.DataFrame(pixel_intervals(-9.0 + rng.normal(0, 0.05, n), np.full(n, 0.05), sky, p,
                                      p.thresholds(1_000_000, n)))
    assert len(ev) == 1 and ev.iloc[0].static and classify.classify(ev, p.classes).iloc[0] == "LOW_QE"
    # ... while a pixel 30 % above its neighbours under the same sky is the flat field
    assert pixel_intervals(3.0 + rng.normal(0, 0.01, n), np.full(n, 0.01), sky, p,
                           p.thresholds(1_000_000, n)) == []


def test_a_pixel_outside_the_light_has_no_response_to_judge_but_its_dark_level():
    # a pixel in a slicer's gap sees a few percent of the slices' sky (its "sky" is theirs):
    # against that sky its response is ~0, which in the light would be a LOW_QE pixel
    # (so do its neighbours in the gap: the prior)
    r, s, sky = _series(21, a=-0.6, noise=0.02)
    p = DetectionParams()
    th = p.thresholds(1_000_000, N)
    prior = (-0.6, 1e-4, 0.0, 1e-4)
    ev = pd.DataFrame(pixel_intervals(r, s, sky, p, th, prior=prior))
    assert len(ev) == 1 and ev.iloc[0].static and classify.classify(ev, p.classes).iloc[0] == "LOW_QE"
    assert pixel_intervals(r, s, sky, p, th, prior=prior, lit=False) == []
    # ... but a hot pixel there is hot
    ev = pd.DataFrame(pixel_intervals(r + 2.0, s, sky, p, th, prior=prior, lit=False))
    assert len(ev) == 1 and ev.iloc[0].static and classify.classify(ev, p.classes).iloc[0] == "HOT"


def test_line_response_is_the_light_a_row_shares_not_one_pixels():
    # a 40 x 30 region, dispersion along y: the last 3 rows are the end of the light (0.45, 0.3,
    # 0.2 of the rows inside, in every column); one low-QE pixel (0.4) inside
    a = np.zeros((40, 30))
    a[-3:] = np.array([0.45, 0.3, 0.2])[:, None] - 1.0
    a[20, 10] = 0.4 - 1.0
    usable = np.ones(a.shape, bool)
    usable[:, 25:] = False  # e.g. a gap: not part of any line's response
    lr = baseline.line_response(a.ravel(), usable.ravel(), a.shape, 15, axis=0).reshape(a.shape)
    assert np.allclose(lr[-3:, :25], np.array([0.45, 0.3, 0.2])[:, None])
    assert lr[20, 10] == 1.0 and np.all(lr[:37] == 1.0)  # one pixel does not move its line
    assert np.all(lr <= 1.0)


def test_the_end_of_the_light_is_not_low_qe_but_a_low_pixel_beside_lit_ones_is():
    # a pixel at 0.4 of its column's sky: LOW_QE when its row neighbours see the full light,
    # normal when its whole row is at 0.45 (a slice ending along the dispersion)
    r, s, sky = _series(22, a=-0.6, noise=0.02)
    p = DetectionParams()
    th = p.thresholds(1_000_000, N)
    ev = pd.DataFrame(pixel_intervals(r, s, sky, p, th, line_response=1.0))
    assert len(ev) == 1 and classify.classify(ev, p.classes).iloc[0] == "LOW_QE"
    assert pixel_intervals(r, s, sky, p, th, line_response=0.45) == []
    # ... and a pixel at 0.1 of its column there is still low against its row (0.1 / 0.45 < 0.5)
    r2, s2, sky2 = _series(23, a=-0.9, noise=0.02)
    ev = pd.DataFrame(pixel_intervals(r2, s2, sky2, p, th, line_response=0.45))
    assert len(ev) == 1 and classify.classify(ev, p.classes).iloc[0] in ("LOW_QE", "DEAD")


def test_neighbour_noise_pools_the_lit_and_the_unlit_pixels_apart():
    # 60 rows x 20 columns, dispersion along y; a 2-column gap (x 9-10) whose pixels scatter 1.7x
    # their ERR (variance 3) beside slices whose pixels scatter as ERR says
    rng = np.random.default_rng(5)
    n_t, shape = 200, (60, 20)
    var = np.ones(shape)
    var[:, 9:11] = 3.0
    x = rng.normal(0, 1, (n_t,) + shape) * np.sqrt(var)
    x = x.reshape(n_t, -1)
    valid = np.ones_like(x, bool)
    m1 = np.ones_like(x)
    lit = np.ones(shape, bool)
    lit[:, 9:11] = False
    pooled = baseline.neighbour_noise(x, valid, m1, 6.0, shape, (15, 5), axis=0).reshape(shape)
    apart = baseline.neighbour_noise(x, valid, m1, 6.0, shape, (15, 5), axis=0, groups=lit.ravel()).reshape(shape)
    # pooled with the slices across the dispersion, a narrow gap takes the slices' noise (and its
    # noise looks like excess scatter of each of its pixels); apart, each group keeps its own
    assert np.median(pooled[:, 9:11]) < 1.3
    assert np.median(apart[:, 9:11]) == pytest.approx(3.0, rel=0.15)
    assert np.median(apart[:, :8]) == pytest.approx(1.0, abs=0.1)
    assert np.median(apart[:, 12:]) == pytest.approx(1.0, abs=0.1)
    # without groups the function is what it was
    assert np.array_equal(pooled, baseline.neighbour_noise(x, valid, m1, 6.0, shape, (15, 5), axis=0,
                                                           groups=np.ones(lit.size, bool)).reshape(shape))
    # three groups (unlit_codes: lit 0, dark 1, narrow gap 2): each keeps its own noise
    codes = np.where(lit, 0, 2).astype(np.uint8)
    codes[:, 12:14] = 1
    three = baseline.neighbour_noise(x, valid, m1, 6.0, shape, (15, 5), axis=0, groups=codes.ravel()).reshape(shape)
    assert np.median(three[:, 9:11]) == pytest.approx(3.0, rel=0.15)
    assert np.median(three[:, 12:14]) == pytest.approx(1.0, abs=0.1)


def _fit_reference(r, s, sky, valid=None, *, iterations=4, ridge=1e-6, prior=None):
    """fit_response_offset written with whole-array numpy steps: the method as its docstring
    states it, to check the compiled per-pixel pass against."""
    r, s, sky = (np.asarray(v, float) for v in np.broadcast_arrays(r, s, sky))
    ok = np.isfinite(r) & np.isfinite(s) & (s > 0) & np.isfinite(sky)
    if valid is not None:
        ok &= np.asarray(valid, bool)
    w0 = np.where(ok, 1.0 / np.where(ok, s, 1.0) ** 2, 0.0)
    r, s, sky = np.where(ok, r, 0.0), np.where(ok, s, 1.0), np.where(ok, sky, 0.0)
    P = r.shape[1:]
    ma, va, md, vd = (np.zeros(P), np.full(P, np.inf), np.zeros(P), np.full(P, np.inf)) if prior is None \
        else (np.broadcast_to(np.asarray(v, float), P) for v in prior)
    pa, pd_ = (0.0, 0.0) if prior is None else (1 / np.maximum(va, 1e-12), 1 / np.maximum(vd, 1e-12))

    def weights(z):
        scale = baseline.MAD_TO_SIGMA * np.nanmedian(np.abs(np.where(ok, z, np.nan)), axis=0)
        scale = np.where(np.isfinite(scale), np.maximum(scale, 1.0), 1.0)
        u = z / (baseline.BIWEIGHT_C * scale)
        return w0 * np.where(np.abs(u) < 1, (1 - u * u) ** 2, 0.0)

    use = ok & (sky > 0)
    with np.errstate(all="ignore"):
        a = np.nanmedian(np.where(use, (r - md) / np.where(sky > 0, sky, 1), np.nan), axis=0)
        a = np.where(np.isfinite(a), a, 0.0)
        w = weights((r - md - a * sky) / s)
        suu = (w * sky * sky).sum(0) + pa
        a = np.where(suu > 0, ((w * sky * (r - md)).sum(0) + pa * ma) / suu, a)
        a = np.where(use.any(0) & np.isfinite(a), a, ma)
        d = np.asarray(md, float)
        w = w0
        for k in range(iterations + 1):
            if k:
                w = weights((r - a * sky - d) / s)
            s11r = (w.sum(0) + pd_) * (1 + ridge) + 1e-30
            su1, suu = (w * sky).sum(0), (w * sky * sky).sum(0) + pa
            sur, s1r = (w * sky * r).sum(0) + pa * ma, (w * r).sum(0) + pd_ * md
            det = suu * s11r - su1 * su1
            good = det > 1e-12 * np.maximum(suu * s11r, 1e-300)
            a, d = (np.where(good, (s11r * sur - su1 * s1r) / det, np.where(suu > 0, sur / np.maximum(suu, 1e-300), 0)),
                    np.where(good, (suu * s1r - su1 * sur) / det, md))
        h = np.where(good, w * (sky * sky * s11r - 2 * sky * su1 + suu) / det, 0.0)
        return a, d, np.where(good, np.sqrt(s11r / det), np.inf), np.where(good, np.sqrt(suu / det), np.inf), \
            np.clip(h, 0, 1), ok.sum(0)


@pytest.mark.parametrize("with_prior", [False, True])
def test_fit_equals_whole_array_method(with_prior):
    # the compiled per-pixel pass solves the same robust normal equations: gaps, NaN, ERR <= 0,
    # a constant sky (degenerate), no sky at all, outliers, a warm step
    rng = np.random.default_rng(7)
    T, P = 45, 400
    sky = rng.uniform(1, 30, (T, 1)) * rng.uniform(0.5, 1.5, (1, P))
    sky[:, 5] = 7.0
    sky[:, 6] = 0.0
    r = 0.02 * sky + 0.01 + rng.normal(0, 0.05, (T, P))
    r[30:, 10:20] += 0.5
    r[rng.random((T, P)) < 0.05] += 20
    r[rng.random((T, P)) < 0.02] = np.nan
    s = np.full((T, P), 0.05)
    s[rng.random((T, P)) < 0.01] = 0.0
    valid = rng.random((T, P)) > 0.1
    prior = (rng.normal(0.02, 0.01, P), np.full(P, 1e-4), np.full(P, 0.005), np.full(P, 1e-4)) if with_prior else None
    got = baseline.fit_response_offset(r, s, sky, valid, prior=prior)
    want = _fit_reference(r, s, sky, valid, prior=prior)
    for name, g, w in zip(["a", "d", "a_err", "d_err", "leverage", "n"], got, want):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12, err_msg=name)


PRIOR = (0.0, 0.02 ** 2, 0.0, 0.004 ** 2)  # neighbours: a 2 % flat field, dark levels within 0.004 DN/s


def _flagged(r, s, sky, prior=PRIOR):
    p = DetectionParams()
    ev = pd.DataFrame(pixel_intervals(r, s, sky, p, p.thresholds(1_000_000, N), prior=prior))
    if not len(ev):
        return []
    ev = ev[classify.passes_floors(ev, p.classes)]
    return list(zip(ev.start, ev.stop, classify.classify(ev, p.classes)))


def _dipped(seed):
    """A normal pixel (1 % flat field, ERR 0.02-0.25 DN/s, sky 3-11 DN/s and sometimes 30-45)
    whose exposures 35-37 lie 0.25 DN/s low: the sky estimate raised by a latent image beside it."""
    rng = np.random.default_rng(seed)
    sky = np.where(rng.random(N) < 0.1, rng.uniform(30, 45, N), rng.uniform(3, 11, N))
    s = rng.uniform(0.02, 0.25, N)
    s[35:38] = 0.06
    r = 0.01 * sky + rng.normal(0, s)
    r[35:38] -= 0.25
    return r, s, sky


def test_a_dip_below_the_neighbours_is_not_the_normal_state(monkeypatch):
    # were the dip its normal state, the other 57 exposures would be a warm or noisy pixel's
    from lrscube.detection import states
    p = DetectionParams()
    th = p.thresholds(1_000_000, N)

    def longest_excess(seed):
        ivs = pixel_intervals(*_dipped(seed), p, th, prior=PRIOR)
        return max([w["stop"] - w["start"] for w in ivs if w["sign"] > 0], default=0)

    assert all(longest_excess(seed) == 0 for seed in range(12))
    monkeypatch.setattr(states, "_below_population", lambda *a: False)
    assert sum(longest_excess(seed) > 20 for seed in range(12)) >= 4  # what the rule prevents


def test_a_pixel_warm_from_the_start_that_recovers_keeps_its_warm_stretch():
    # the normal state is the later, lower one: at the neighbours' dark level
    d = np.where(np.arange(N) < 20, 0.3, 0.0)
    r, s, sky = _series(30, a=-0.02, d=d)
    assert _flagged(r, s, sky) == [(0, 20, "WARM")]


# ---------------------------------------------------------------------------------------------
# The per-pixel fit as it was before its start (the median ratio to the sky and one biweight step
# of the response alone) was dropped: the first solve of ``_solve_reweighted`` overwrote that
# start, so it changed nothing but the time taken. The reference the fit is tested against.

@numba.njit(cache=True, nogil=True)
def _before_robust_scale(z, ok, buf, band, guess):
    n = 0
    low = 0
    plain = True
    for t in range(z.shape[0]):
        if ok[t]:
            x = abs(z[t])
            buf[n] = x
            n += 1
            plain = plain and x == x and x != 0.0
            low += x <= baseline._SCALE_ONE
    if plain and low > n // 2:  # ranks h - 1 and h at most baseline._SCALE_ONE: so is the median
        return 1.0
    med = running.median_about(buf, n, baseline._BAND[0] * guess[0], baseline._BAND[1] * guess[0], band)
    if np.isfinite(med) and med > 0:
        guess[0] = med
    med = baseline.MAD_TO_SIGMA * med
    return max(med, 1.0) if np.isfinite(med) else 1.0


@numba.njit(cache=True, nogil=True)
def _before_reweight(z, ok, w0, w, buf, band, guess):
    cs = baseline.BIWEIGHT_C * _before_robust_scale(z, ok, buf, band, guess)
    for t in range(z.shape[0]):
        u = z[t] / cs
        w[t] = w0[t] * ((1 - u * u) ** 2 if abs(u) < 1 else 0.0)


@numba.njit(cache=True, nogil=True)
def _before_fit_pixels(r_in, s_in, sky_in, valid, ma, pa, md, pd_, iterations, ridge, leverage):
    T, P = r_in.shape
    a_out = np.empty(P)
    d_out = np.empty(P)
    ae_out = np.empty(P)
    de_out = np.empty(P)
    h_out = np.zeros((T, P) if leverage else (0, 0))
    n_out = np.zeros(P, np.int64)
    r = np.empty(T)
    s = np.empty(T)
    sky = np.empty(T)
    ok = np.ones(T, np.bool_)
    w0 = np.empty(T)
    w = np.empty(T)
    z = np.empty(T)
    buf = np.empty(T)
    band = np.empty(T)
    guess = np.full(1, 0.6745)  # the median |z| of Gaussian noise
    at = np.empty(T, np.int64)
    for j in range(P):
        n, has_sky = _before_load_pixel(r_in, s_in, sky_in, valid, j, r, s, sky, w0, at)
        n_out[j] = n
        rj, sj, kj, okj, w0j, wj, zj = r[:n], s[:n], sky[:n], ok[:n], w0[:n], w[:n], z[:n]
        a = _before_start_response(rj, sj, kj, okj, w0j, wj, zj, buf, band, guess, ma[j], pa[j], md[j], has_sky)
        a, d, good, s11r, det, suu, su1 = _before_solve_reweighted(rj, sj, kj, okj, w0j, wj, zj, buf, band, guess, a, ma[j],
                                                            pa[j], md[j], pd_[j], iterations, ridge)
        a_out[j] = a
        d_out[j] = d
        if good:
            ae_out[j] = np.sqrt(s11r / det)
            de_out[j] = np.sqrt(suu / det)
            if leverage:
                for k in range(n):
                    h = w[k] * (sky[k] * sky[k] * s11r - 2 * sky[k] * su1 + suu) / det
                    h_out[at[k], j] = min(max(h, 0.0), 1.0)
        else:
            ae_out[j] = np.inf
            de_out[j] = np.inf
    return a_out, d_out, ae_out, de_out, h_out, n_out


@numba.njit(cache=True, nogil=True)
def _before_load_pixel(r_in, s_in, sky_in, valid, j, r, s, sky, w0, at):
    n = 0
    has_sky = False
    for t in range(r_in.shape[0]):
        rv, sv, kv = np.float64(r_in[t, j]), np.float64(s_in[t, j]), np.float64(sky_in[t, j])
        if valid[t, j] and np.isfinite(rv) and np.isfinite(sv) and sv > 0 and np.isfinite(kv):
            r[n] = rv
            s[n] = sv
            sky[n] = kv
            w0[n] = 1.0 / sv ** 2
            at[n] = t
            n += 1
            has_sky = has_sky or kv > 0
    return n, has_sky


@numba.njit(cache=True, nogil=True)
def _before_start_response(r, s, sky, ok, w0, w, z, buf, band, guess, ma_j, pa_j, md_j, has_sky):
    T = r.shape[0]
    m = 0
    for t in range(T):
        if ok[t] and sky[t] > 0:
            buf[m] = (r[t] - md_j) / sky[t]
            m += 1
    a = running.median_inplace(buf, m)
    if not np.isfinite(a):
        a = 0.0
    for t in range(T):
        z[t] = ((r[t] - md_j) - a * sky[t]) / s[t]
    _before_reweight(z, ok, w0, w, buf, band, guess)
    suu = pa_j
    sur = pa_j * ma_j
    for t in range(T):
        suu += w[t] * sky[t] * sky[t]
        sur += w[t] * sky[t] * (r[t] - md_j)
    if suu > 0:
        a = sur / suu
    if not has_sky or not np.isfinite(a):
        a = ma_j
    return a


@numba.njit(cache=True, nogil=True)
def _before_solve_reweighted(r, s, sky, ok, w0, w, z, buf, band, guess, a, ma_j, pa_j, md_j, pd_j, iterations, ridge):
    T = r.shape[0]
    d = md_j
    for t in range(T):
        w[t] = w0[t]
    good = False
    s11r = det = suu = su1 = 0.0
    for k in range(iterations + 1):
        if k:
            for t in range(T):
                z[t] = (r[t] - a * sky[t] - d) / s[t]
            _before_reweight(z, ok, w0, w, buf, band, guess)
        s11 = pd_j
        su1 = 0.0
        suu = pa_j
        sur = pa_j * ma_j
        s1r = pd_j * md_j
        for t in range(T):
            s11 += w[t]
            su1 += w[t] * sky[t]
            suu += w[t] * sky[t] * sky[t]
            sur += w[t] * sky[t] * r[t]
            s1r += w[t] * r[t]
        s11r = s11 * (1 + ridge) + 1e-30
        det = suu * s11r - su1 * su1
        good = det > 1e-12 * max(suu * s11r, 1e-300)
        if good:
            a, d = (s11r * sur - su1 * s1r) / det, (suu * s1r - su1 * sur) / det
        else:
            a, d = (sur / max(suu, 1e-300) if suu > 0 else 0.0), md_j
    return a, d, good, s11r, det, suu, su1


@numba.njit(cache=True)
def _fit_every_exposure(r_in, s_in, sky_in, valid, ma, pa, md, pd_, iterations, ridge, leverage):
    """The per-pixel pass over every exposure, the unusable ones with weight 0 (what
    ``baseline._fit_pixels`` computed before it loaded the usable ones alone)."""
    T, P = r_in.shape
    a_out, d_out, ae_out, de_out = np.empty(P), np.empty(P), np.empty(P), np.empty(P)
    h_out = np.zeros((T, P) if leverage else (0, 0))
    n_out = np.zeros(P, np.int64)
    r, s, sky, ok, w0, w, z, buf = (np.empty(T), np.empty(T), np.empty(T), np.empty(T, np.bool_), np.empty(T),
                                    np.empty(T), np.empty(T), np.empty(T))
    band, guess = np.empty(T), np.full(1, 0.6745)
    for j in range(P):
        n = 0
        has_sky = False
        for t in range(T):
            rv, sv, kv = np.float64(r_in[t, j]), np.float64(s_in[t, j]), np.float64(sky_in[t, j])
            good = valid[t, j] and np.isfinite(rv) and np.isfinite(sv) and sv > 0 and np.isfinite(kv)
            ok[t] = good
            r[t] = rv if good else 0.0
            s[t] = sv if good else 1.0
            sky[t] = kv if good else 0.0
            w0[t] = 1.0 / sv ** 2 if good else 0.0
            n += good
            has_sky = has_sky or (good and kv > 0)
        n_out[j] = n
        a = _before_start_response(r, s, sky, ok, w0, w, z, buf, band, guess, ma[j], pa[j], md[j], has_sky)
        a, d, good, s11r, det, suu, su1 = _before_solve_reweighted(r, s, sky, ok, w0, w, z, buf, band, guess, a,
                                                                     ma[j], pa[j], md[j], pd_[j], iterations, ridge)
        a_out[j], d_out[j] = a, d
        if good:
            ae_out[j], de_out[j] = np.sqrt(s11r / det), np.sqrt(suu / det)
            if leverage:
                for t in range(T):
                    h = w[t] * (sky[t] * sky[t] * s11r - 2 * sky[t] * su1 + suu) / det
                    h_out[t, j] = min(max(h, 0.0), 1.0)
        else:
            ae_out[j], de_out[j] = np.inf, np.inf
    return a_out, d_out, ae_out, de_out, h_out, n_out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_prior", [False, True])
def test_fit_of_the_usable_exposures_alone_is_the_fit_over_all_bit_for_bit(with_prior, dtype):
    # a mixed cube's full-frame rows: half the exposures unseen (NaN), besides gaps, ERR <= 0,
    # a constant and a zero sky, outliers, too few exposures, none at all
    rng = np.random.default_rng(11)
    T, P = 60, 500
    sky = rng.uniform(1, 30, (T, 1)) * rng.uniform(0.5, 1.5, (1, P))
    sky[:, 5] = 7.0
    sky[:, 6] = 0.0
    r = 0.02 * sky + 0.01 + rng.normal(0, 0.05, (T, P))
    r[rng.random(T) < 0.5] = np.nan
    r[rng.random((T, P)) < 0.05] += 20
    r[rng.random((T, P)) < 0.02] = np.nan
    r[:, 7] = np.nan
    r[3:, 8] = np.nan
    s = np.full((T, P), 0.05)
    s[rng.random((T, P)) < 0.01] = 0.0
    valid = rng.random((T, P)) > 0.1
    r, s, sky = (v.astype(dtype) for v in (r, s, sky))
    prior = (rng.normal(0.02, 0.01, P), rng.uniform(1e-5, 1e-3, P), np.full(P, 0.005), np.full(P, 1e-4)) \
        if with_prior else (np.zeros(P), np.full(P, np.inf), np.zeros(P), np.full(P, np.inf))
    ma, va, md, vd = prior
    pa, pd_ = (1 / np.maximum(va, 1e-12), 1 / np.maximum(vd, 1e-12)) if with_prior else (np.zeros(P), np.zeros(P))
    for iterations, lev in ((4, True), (2, False)):
        got = baseline._fit_pixels(r, s, sky, valid, ma, pa, md, pd_, iterations, 1e-6, lev)
        want = _fit_every_exposure(r, s, sky, valid, ma, pa, md, pd_, iterations, 1e-6, lev)
        for name, g, w in zip(["a", "d", "a_err", "d_err", "leverage", "n"], got, want):
            assert np.array_equal(np.asarray(g).view(np.uint8), np.asarray(w).view(np.uint8)), name


def _fit_cases():
    """(name, r, s, sky, valid, prior arrays) of the fit's edge cases: a real-looking tile (half the
    exposures unseen, gaps, NaN, inf, ERR <= 0, a constant and a zero sky, outliers, noisy and
    warm pixels, too few exposures, none), one exposure, one pixel, every exposure masked, no
    pixels, no exposures."""
    rng = np.random.default_rng(23)
    T, P = 48, 600
    sky = rng.uniform(1, 30, (T, 1)) * rng.uniform(0.5, 1.5, (1, P))
    sky[:, 5], sky[:, 6] = 7.0, 0.0
    sky[rng.random((T, P)) < 0.01] = np.inf
    r = rng.normal(0.0, 0.02, P) * sky + 0.01 + rng.normal(0, 0.05, (T, P))
    r[:, 100:150] *= rng.uniform(1, 6, 50)  # noisy: a robust scale above 1
    r[20:, 200:220] += 0.4
    r[rng.random(T) < 0.5] = np.nan
    r[rng.random((T, P)) < 0.05] += 20
    r[rng.random((T, P)) < 0.02] = np.nan
    r[rng.random((T, P)) < 0.01] = 0.0
    r[:, 7] = np.nan
    r[3:, 8] = np.nan
    r[1:, 9] = np.nan
    s = np.full((T, P), 0.05)
    s[rng.random((T, P)) < 0.01] = 0.0
    s[rng.random((T, P)) < 0.01] = -1.0
    s[rng.random((T, P)) < 0.01] = np.nan
    valid = rng.random((T, P)) > 0.1
    prior = (rng.normal(0.0, 0.02, P), rng.uniform(1e-5, 1e-3, P), rng.normal(0.0, 0.003, P), np.full(P, 1e-5))
    yield "tile", r, s, sky, valid, prior
    yield "one exposure", r[:1], s[:1], sky[:1], valid[:1], prior
    yield "one pixel", r[:, 20:21], s[:, 20:21], sky[:, 20:21], valid[:, 20:21], tuple(v[20:21] for v in prior)
    yield "all masked", r, s, sky, np.zeros_like(valid), prior
    yield "no pixels", r[:, :0], s[:, :0], sky[:, :0], valid[:, :0], tuple(v[:0] for v in prior)
    yield "no exposures", r[:0], s[:0], sky[:0], valid[:0], prior


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fit_is_the_fit_from_its_former_start_bit_for_bit(dtype):
    # the fit without the start the first solve overwrote gives every output of the former fit
    for name, r, s, sky, valid, (ma, va, md, vd) in _fit_cases():
        r, s, sky = (np.ascontiguousarray(v, dtype) for v in (r, s, sky))
        valid = np.ascontiguousarray(valid)
        for pa, pd_ in ((1 / va, 1 / vd), (np.zeros_like(va), np.zeros_like(vd))):
            for iterations, lev in ((4, True), (2, False), (0, True)):
                got = baseline._fit_pixels(r, s, sky, valid, ma, pa, md, pd_, iterations, 1e-6, lev)
                want = _before_fit_pixels(r, s, sky, valid, ma, pa, md, pd_, iterations, 1e-6, lev)
                for k, g, w in zip(["a", "d", "a_err", "d_err", "leverage", "n"], got, want):
                    assert g.shape == w.shape and np.array_equal(g.view(np.uint8), w.view(np.uint8)), (name, k)
    got = baseline.fit_response_offset(r, s, sky, valid)  # the last case through the public function
    assert got.a.shape == (r.shape[1],) and np.all(got.n == 0)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _in_place_fit_pixels(r_in, s_in, sky_in, valid, ma, pa, md, pd_, iterations, ridge, leverage):
    """``baseline._fit_pixels`` reading each pixel's column where it is (what it did for every
    series before it copied the columns of long ones in blocks)."""
    T, P = r_in.shape
    a_out, d_out, ae_out, de_out = np.empty(P), np.empty(P), np.empty(P), np.empty(P)
    h_out = np.zeros((T, P) if leverage else (0, 0))
    n_out = np.zeros(P, np.int64)
    r, s, sky, w0, w, z, buf, band = (np.empty(T), np.empty(T), np.empty(T), np.empty(T), np.empty(T), np.empty(T),
                                      np.empty(T), np.empty(T))
    guess = np.full(1, 0.6745)
    at = np.empty(T, np.int64)
    for j in range(P):
        n = baseline._load_pixel(r_in, s_in, sky_in, valid, j, r, s, sky, w0, at)
        n_out[j] = n
        a, d, good, s11r, det, suu, su1 = baseline._solve_reweighted(r, s, sky, w0, w, z, buf, band, guess, n, ma[j],
                                                                     pa[j], md[j], pd_[j], iterations, ridge)
        a_out[j], d_out[j] = a, d
        if good:
            ae_out[j], de_out[j] = np.sqrt(s11r / det), np.sqrt(suu / det)
            if leverage:
                for k in range(n):
                    h = w[k] * (sky[k] * sky[k] * s11r - 2 * sky[k] * su1 + suu) / det
                    h_out[at[k], j] = min(max(h, 0.0), 1.0)
        else:
            ae_out[j], de_out[j] = np.inf, np.inf
    return a_out, d_out, ae_out, de_out, h_out, n_out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fit_of_long_series_copied_in_blocks_is_the_fit_in_place_bit_for_bit(dtype):
    # series of FIT_COPY_FROM exposures and more are copied FIT_BLOCK columns at a time first:
    # the edge cases repeated along time past that length (pixels not a multiple of the block,
    # one pixel, all masked, none), a broadcast (stride-0) sky, and the short cases as they are
    reps = -(-baseline.FIT_COPY_FROM // 48) + 1
    for name, r, s, sky, valid, (ma, va, md, vd) in _fit_cases():
        long = [np.tile(v, (reps, 1)) for v in (r, s, sky, valid)]
        for case in ((r, s, sky, valid), long, [v[:, :37] for v in long]):
            rr, ss, kk = (np.ascontiguousarray(v, dtype) for v in case[:3])
            vv = np.ascontiguousarray(case[3])
            P = rr.shape[1]
            prior = [np.ascontiguousarray(v[:P]) for v in (ma, va, md, vd)]
            for pa, pd_ in ((1 / prior[1], 1 / prior[3]), (np.zeros(P), np.zeros(P))):
                for iterations, lev in ((4, True), (2, False)):
                    got = baseline._fit_pixels(rr, ss, kk, vv, prior[0], pa, prior[2], pd_, iterations, 1e-6, lev)
                    want = _in_place_fit_pixels(rr, ss, kk, vv, prior[0], pa, prior[2], pd_, iterations, 1e-6, lev)
                    for k, g, w in zip(["a", "d", "a_err", "d_err", "leverage", "n"], got, want):
                        assert g.shape == w.shape and np.array_equal(g.view(np.uint8), w.view(np.uint8)), (name, k)
    T = baseline.FIT_COPY_FROM + 5  # the sky of every pixel one column (a broadcast view), NaN in it
    rng = np.random.default_rng(3)
    sky = rng.uniform(1, 20, (T, 1)).astype(dtype)
    sky[7] = np.nan
    r = (0.02 * sky + rng.normal(0, 0.05, (T, 40))).astype(dtype)
    s = np.full((T, 40), 0.05, dtype)
    got = baseline.fit_response_offset(r, s, sky, iterations=2)
    ok = np.ones((T, 40), bool)
    want = _in_place_fit_pixels(r, s, np.broadcast_to(sky, r.shape), ok, np.zeros(40), np.zeros(40), np.zeros(40),
                                np.zeros(40), 2, 1e-6, True)
    for g, w in zip((got.a, got.d, got.a_err, got.d_err, got.leverage, got.n), want):
        assert np.array_equal(np.asarray(g).view(np.uint8), np.asarray(w).view(np.uint8))
    assert np.all(got.n == T - 1)


@numba.njit(cache=True)
def _scale_by_median(z, ok):
    """The robust scale as the median of every |z| gives it (``baseline._residual_scale`` before
    it skipped or narrowed the selection)."""
    buf = np.empty(z.size)
    m = 0
    for t in range(z.shape[0]):
        if ok[t]:
            buf[m] = abs(z[t])
            m += 1
    med = baseline.MAD_TO_SIGMA * running.median_inplace(buf, m)
    return max(med, 1.0) if np.isfinite(med) else 1.0


def test_robust_scale_is_that_of_the_median_of_every_value_bit_for_bit():
    # scales below, at and above 1, every length (odd and even), guesses good, poor, zero, NaN,
    # values with ties, zeros, NaN and infinities, exposures left out
    rng = np.random.default_rng(5)
    n_checked = 0
    for n in list(range(0, 41)) + [47, 48, 99, 100, 400]:
        for trial in range(60):
            k = [0.3, 0.6, 0.6745, 0.7, 1.0, 1.5, 5.0][trial % 7]
            z = rng.normal(0, k, n)
            if trial % 5 == 1:
                z = np.round(z * 4) / 4  # ties, zeros
            if trial % 11 == 3 and n:
                z[rng.integers(0, n)] = np.nan
            if trial % 13 == 4 and n:
                z[rng.integers(0, n)] = np.inf
            ok = rng.random(n) > (0.3 if trial % 2 else 0.0)
            for g in (0.6745 * k, 0.9 * k * 0.6745, 2.0 * k, 0.0, np.nan, 1e-3):
                zs = z[ok]  # the scale of z = (r - a sky - d) / s with r = z, s = 1, sky = a = d = 0
                m = zs.size
                buf, band, zz, guess = np.empty(m), np.empty(m), np.empty(m), np.array([g])
                got = baseline._residual_scale(zs, np.ones(m), np.zeros(m), 0.0, 0.0, m, zz, buf, band, guess)
                assert np.array_equal(zz, zs, equal_nan=True)
                want = _scale_by_median(z, ok)
                assert np.float64(got).view(np.int64) == np.float64(want).view(np.int64), (n, trial, g, got, want)
                n_checked += 1
    assert n_checked > 10000


def _moments_python(k, c):
    """gaussian_clipped_moments as plain Python computes it (math, and ``**`` of floats)."""
    b = c / max(k, 1e-12)
    p_in = math.erf(b / math.sqrt(2.0))
    phi = math.exp(-0.5 * b * b) / math.sqrt(2.0 * math.pi)
    ez2 = p_in - 2 * b * phi
    ez4 = 3 * p_in - 2 * phi * (b ** 3 + 3 * b)
    out = 1 - p_in
    return k * k * ez2 + c * c * out, k ** 4 * ez4 + c ** 4 * out


def _rms_ratio_python(mean_clipped_square, null_mean, c):
    g1, _ = _moments_python(1.0, c)
    target = float(mean_clipped_square) * g1 / max(float(null_mean), 1e-12)
    if target <= g1:
        return float(np.sqrt(max(target / g1, 0.0)))
    if target >= c * c * 0.999:
        return float("inf")
    lo, hi = 1.0, 1e4
    for _ in range(50):
        mid = np.sqrt(lo * hi)
        if _moments_python(mid, c)[0] < target:
            lo = mid
        else:
            hi = mid
    return float(np.sqrt(lo * hi))


def test_compiled_clipped_moments_and_rms_ratio_are_pythons_bit_for_bit():
    rng = np.random.default_rng(2)
    for k, c in zip(np.r_[np.exp(rng.uniform(-5, 10, 20000)), 1.0, 0.0, 1e-13],
                    np.r_[rng.uniform(0.5, 10, 20000), 4.0, 6, 3.0]):
        assert baseline.gaussian_clipped_moments(float(k), c) == _moments_python(float(k), float(c))
    for mean, null, c in zip(np.r_[rng.uniform(0, 40, 3000), np.nan, 0.0, 30.0],
                             np.r_[rng.uniform(0.3, 1.5, 3000), 1.0, 0.0, 1e-15],
                             np.r_[rng.choice([3.0, 4.0, 6.0], 3000), 4.0, 4.0, 6.0]):
        got, want = baseline.rms_ratio(mean, null, c), _rms_ratio_python(mean, null, c)
        assert np.float64(got).view(np.int64) == np.float64(want).view(np.int64), (mean, null, c)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_fit_one_is_fit_response_offset_of_one_column_bit_for_bit(dtype):
    # NaN and infinite residuals, zero and NaN noise, a constant sky; priors with NaN, infinite,
    # zero and negative variances; no exposure, one, every one unusable, masks and index arrays
    rng = np.random.default_rng(8)
    n = 60
    cases = []
    for k in range(40):
        sky = rng.uniform(1, 20, n) if k % 7 else np.full(n, 5.0)
        r = 0.03 * sky + 0.2 + rng.normal(0, 0.1, n) * (10.0 if k % 5 == 0 else 1.0)
        s = np.full(n, 0.1)
        if k % 3 == 0:
            r[rng.random(n) < 0.1] = np.nan
            r[rng.integers(n)] = np.inf
            s[rng.integers(n)] = 0.0
            s[rng.integers(n)] = np.nan
        use = rng.random(n) < 0.8
        cases.append((r, s, sky, use))
    r, s, sky, _ = cases[1]
    cases += [(r, s, sky, np.zeros(n, bool)), (r, s, sky, np.eye(1, n, 3, dtype=bool)[0]),
              (np.full(n, np.nan), s, sky, np.ones(n, bool)), (r, s, sky, np.array([4, 2, 9])),
              (r[:1], s[:1], sky[:1], np.ones(1, bool)), (r[:0], s[:0], sky[:0], np.ones(0, bool))]
    priors = [None, (0.02, 1e-4, 0.1, 0.01), (np.nan, 1e-4, 0.1, np.inf), (0.02, 0.0, -1.0, -0.0),
              (np.array([0.01]), np.array([np.nan]), np.array([0.3]), np.array([1e-3])),
              (np.float32(0.02), np.float32(1e-4), np.float32(0.1), np.float32(0.01), 3.0, 0.5)]
    for i, (r, s, sky, use) in enumerate(cases):
        r, s, sky = (np.round(np.nan_to_num(v, posinf=1e6)).astype(dtype) if dtype is np.int64 else v.astype(dtype)
                     for v in (r, s, sky))
        for prior in priors:
            for it in (2, 4):
                pr = None if prior is None else tuple(np.atleast_1d(np.asarray(v, float)) for v in prior)
                with np.errstate(all="ignore"):
                    st = baseline.fit_response_offset(r[use, None], s[use, None], sky[use, None], iterations=it,
                                                      prior=pr, leverage=False)
                    got = baseline.fit_one(r, s, sky, use, prior, iterations=it)
                want = (st.a[0], st.d[0], st.a_err[0], st.d_err[0], st.n[0])
                assert [_bits(v) for v in got] == [_bits(v) for v in want], (i, prior, it)


def _log_mgf_python(theta, c, log=math.log):
    """The clipped square's log MGF in Python through scipy's and numpy's ufuncs; ``log``: libm's
    (what the compiled kernel computes) or numpy's (``np.log``, SIMD on this machine)."""
    from scipy.special import dawsn, log_ndtr, ndtr
    log_out = theta * c * c + math.log(2.0) + float(log_ndtr(-c))
    if abs(theta - 0.5) < 1e-9:
        log_in = log(2.0 * c / math.sqrt(2.0 * np.pi))
    elif theta < 0.5:
        a = math.sqrt(1.0 - 2.0 * theta)
        log_in = -log(a) + log(max(2.0 * float(ndtr(c * a)) - 1.0, 1e-300))
    else:
        b = theta - 0.5
        x = c * math.sqrt(b)
        log_in = 0.5 * log(2.0 / np.pi) + b * c * c + log(max(float(dawsn(x)), 1e-300)) - 0.5 * log(b)
    return float(np.logaddexp(log_in, log_out))


def _lr_python(t, n, cz, log):
    from scipy.special import log_ndtr
    h = 1e-4 * (1.0 + t)
    k0, kp, km = (_log_mgf_python(v, cz, log) for v in (t, t + h, t - h))
    k1 = (kp - km) / (2 * h)
    k2 = (kp - 2 * k0 + km) / (h * h)
    w2 = 2.0 * n * (t * k1 - k0)
    if not (w2 > 0 and k2 > 0):
        return k1, 0.0
    w = math.sqrt(w2)
    u = t * math.sqrt(n * k2)
    mills = math.exp(float(log_ndtr(-w)) + 0.5 * w * w + 0.5 * math.log(2 * math.pi))
    corr = mills + 1.0 / u - 1.0 / w
    if not corr > 0:
        corr = mills
    return k1, -0.5 * w * w - 0.5 * math.log(2 * math.pi) + math.log(corr)


def _mean_python(t, cz, log):
    h = 1e-4 * (1.0 + t)
    return (_log_mgf_python(t + h, cz, log) - _log_mgf_python(t - h, cz, log)) / (2 * h)


def _t_max_python(cz, log):
    lo, hi = 0.0, 1.0
    while _mean_python(hi, cz, log) < 0.98 * cz * cz and hi < 1e5:
        lo, hi = hi, 2 * hi
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _mean_python(mid, cz, log) < 0.98 * cz * cz else (lo, mid)
    return hi


def _clipped_square_sigma_python(total, n, c, scale, log=math.log):
    """clipped_square_sigma's bisections in Python (the reference the compiled ones follow)."""
    if n <= 0:
        return 0.0
    s2 = float(scale) ** 2
    cz = float(c) / max(float(scale), 1e-12)
    xbar = float(total) / n / s2
    if xbar <= baseline.gaussian_clipped_moments(1.0, cz)[0]:
        return 0.0
    lo, hi = 0.0, _t_max_python(cz, log)
    if _mean_python(hi, cz, log) <= xbar:
        return baseline._sigma_from_log_p(_lr_python(hi, n, cz, log)[1])
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _mean_python(mid, cz, log) < xbar else (lo, mid)
    return baseline._sigma_from_log_p(_lr_python(0.5 * (lo + hi), n, cz, log)[1])


def _clipped_square_total_python(sigma, n, c):
    """clipped_square_total's bisection in Python."""
    from scipy.special import log_ndtr
    cz = float(c)
    target = float(log_ndtr(-float(sigma)))
    lo, hi = 1e-9, _t_max_python(cz, math.log)
    if _lr_python(hi, n, cz, math.log)[1] > target:
        return n * cz * cz
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _lr_python(mid, n, cz, math.log)[1] > target else (lo, mid)
    return n * _lr_python(0.5 * (lo + hi), n, cz, math.log)[0]


def _bits(v):
    return np.float64(v).view(np.int64)


def test_scalar_logaddexp_is_numpys_bit_for_bit():
    rng = np.random.default_rng(5)
    x = np.r_[rng.normal(0, 30, 20000), np.inf, -np.inf, np.nan, 0.0, -0.0, 5.0, np.inf, -np.inf, 1e308, -745.0]
    y = np.r_[rng.normal(0, 30, 20000), np.inf, -np.inf, 1.0, -0.0, 0.0, 5.0, -np.inf, np.inf, 1e308, -746.0]
    y[:5000] = x[:5000] + rng.normal(0, 1e-3, 5000)  # close pairs: log1p of values near 1
    for a, b in zip(x.tolist(), y.tolist()):
        got, want = baseline._logaddexp(a, b), float(np.logaddexp(a, b))
        assert _bits(got) == _bits(want) or (np.isnan(got) and np.isnan(want)), (a, b)


def test_the_compiled_log_mgf_and_clipped_square_tails_are_the_python_code_bit_for_bit():
    # tilts on both sides of 1/2 and at it, clips from 0.3 to 50, NaN and infinite ones
    rng = np.random.default_rng(6)
    thetas = np.r_[rng.uniform(-3, 30, 30000), 0.5, 0.5 + 1e-10, 0.5 - 2e-9, 0.0, -0.0, 1e-4, np.nan, 0.3, 0.3]
    cs = np.r_[np.exp(rng.uniform(np.log(0.3), np.log(50), 30000)), 4.0, 4.0, 4.0, 6.0, 3.0, 1e-3, 4.0, np.inf, np.nan]
    for th, c in zip(thetas.tolist(), cs.tolist()):
        got, want = baseline._log_mgf_clipped_square(th, c), _log_mgf_python(th, c)
        assert _bits(got) == _bits(want) or (np.isnan(got) and np.isnan(want)), (th, c)
    # the significances through the compiled bisections, against the same bisections in Python
    args = [(float(t), int(n), float(c), float(s)) for t, n, c, s in zip(
        rng.uniform(0, 40, 150), rng.integers(1, 120, 150), rng.choice([3.0, 4.0, 6.0], 150), rng.uniform(0.7, 1.6, 150))]
    args = [(t * n, n, c, s) for t, n, c, s in args] + [(0.0, 5, 4.0, 1.0), (1.0, 1, 4.0, 1.0), (80.0, 5, 4.0, 1.0),
                                                      (0.0, 0, 4.0, 1.0)]
    got = [baseline.clipped_square_sigma(*a) for a in args]
    assert [_bits(v) for v in got] == [_bits(_clipped_square_sigma_python(*a)) for a in args]
    assert len(set(got)) > 100  # most of them in the bisection, not at 0 or the tilt's end
    # numpy's logarithm instead of libm's moves a significance by far less than any threshold's
    # resolution: the last bits of the log MGF, divided by the derivatives' step
    numpy_log = [_clipped_square_sigma_python(*a, log=np.log) for a in args]
    assert np.max(np.abs(np.subtract(got, numpy_log))) < 1e-6
    # the totals at a significance (the scan's divisors), the clip's end included
    for sigma, n, c in [(5.0, 1, 4.0), (5.0, 7, 4.0), (6.5, 300, 3.0), (3.0, 2000, 6.0), (40.0, 1, 3.0)]:
        assert _bits(baseline.clipped_square_total(sigma, n, c)) == _bits(_clipped_square_total_python(sigma, n, c))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_standardised_histograms_are_those_of_the_whole_array_residuals(dtype):
    # NaN and infinite residuals, ERR 0, leverages at 0, 1 and beyond, values on the bin edges
    rng = np.random.default_rng(4)
    T, P = 30, 300
    sky = rng.uniform(1, 30, (T, P))
    r = 0.02 * sky + rng.normal(0, 0.05, (T, P)) * np.exp(rng.uniform(-6, 6, (T, P)))
    r[rng.random((T, P)) < 0.03] = np.nan
    r[rng.random((T, P)) < 0.01] = np.inf
    s = np.full((T, P), 0.05)
    s[rng.random((T, P)) < 0.02] = 0.0
    r, s, sky = (v.astype(dtype) for v in (r, s, sky))
    valid = rng.random((T, P)) > 0.1
    st = baseline.fit_response_offset(r, s, sky, valid)
    lev = st.leverage.copy()
    lev[rng.random((T, P)) < 0.02] = 1.0
    st = st._replace(leverage=lev)
    block = rng.integers(0, 3, P)
    got = baseline.standardised_histograms(r, s, sky, valid, st, block, 4)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = (r - st.a * sky - st.d) / (s * np.sqrt(np.maximum(1.0 - st.leverage, 1e-3)))
    for b in range(4):
        sel = block == b
        want = baseline.abs_histogram(x[:, sel], valid[:, sel]) if sel.any() else np.zeros((T, baseline.N_BINS))
        assert np.array_equal(got[b], want)
    # residuals exactly on the edges land in the bin numpy puts them in
    e = baseline.HIST_EDGES[::7]
    one = baseline.standardised_histograms(e[:, None], np.ones((e.size, 1)), np.zeros((e.size, 1)),
                                           np.ones((e.size, 1), bool), st._replace(a=np.zeros(1), d=np.zeros(1),
                                           leverage=np.zeros((e.size, 1))), np.zeros(1, int), 1)
    assert np.array_equal(one[0], baseline.abs_histogram(e[:, None]))


def test_histogram_bin_is_searchsorteds():
    # every cell's ends, the edges and their neighbours, zero, subnormal and huge values
    e = baseline.HIST_EDGES
    cells = (np.arange(baseline._BIN_BASE - 2, baseline._BIN_BASE + baseline._BIN_TABLE.size + 2)
             << baseline._BIN_SHIFT).view(np.float64)
    v = np.r_[0.0, 5e-324, 1e-300, np.exp(np.random.default_rng(6).uniform(-12, 12, 20000)), e, np.nextafter(e, 0),
              np.nextafter(e, np.inf), cells, np.nextafter(cells, 0), 1e300, np.finfo(float).max]
    bits = v.view(np.int64)
    got = np.array([baseline._bin(e, baseline._BIN_TABLE, baseline._BIN_BASE, float(x), int(b)) for x, b in zip(v, bits)])
    assert np.array_equal(got, np.searchsorted(e, v))
    with pytest.raises(ValueError):
        baseline._bin_table(np.geomspace(1.0, 1.01, 5))  # edges closer than a cell


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_standardised_residuals_and_clipped_ratios_are_the_whole_array_ones_bit_for_bit(dtype):
    rng = np.random.default_rng(8)
    T, P = 40, 300
    sky = rng.uniform(1, 30, (T, P))
    r = 0.02 * sky + rng.normal(0, 0.05, (T, P)) * np.exp(rng.uniform(-4, 4, (T, P)))
    r[rng.random((T, P)) < 0.03] = np.nan
    r[rng.random((T, P)) < 0.01] = np.inf
    s = np.full((T, P), 0.05)
    s[rng.random((T, P)) < 0.02] = 0.0
    r, s, sky = (v.astype(dtype) for v in (r, s, sky))
    valid = rng.random((T, P)) > 0.1
    st = baseline.fit_response_offset(r, s, sky, valid)
    lev = st.leverage.copy()
    lev[rng.random((T, P)) < 0.02] = 1.0
    st = st._replace(leverage=lev)
    got = baseline.standardised_residuals(r, s, sky, st)
    with np.errstate(invalid="ignore", divide="ignore"):
        want = (r - st.a * sky - st.d) / (s * np.sqrt(np.maximum(1.0 - st.leverage, 1e-3)))
    assert np.array_equal(got.view(np.int64), want.view(np.int64))
    m1 = rng.uniform(0.8, 1.0, (T, P))
    m1[rng.random((T, P)) < 0.02] = np.nan
    ok = valid & np.isfinite(got)
    for x, v, m, c in ((got, ok, m1, 4.0), (got, valid, m1, 6.0), (got.astype(np.float32), ok, 0.9, 4.0),
                       (got[:0], ok[:0], m1[:0], 4.0), (got, ok, m1, np.nan)):
        a, b = baseline.clipped_ratios(x, v, m, c), baseline.clipped_ratios_numpy(x, v, m, c)
        assert np.array_equal(a.view(np.int64), b.view(np.int64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 2, 48, 130])
def test_level_sums_are_the_whole_array_ones_bit_for_bit(n, dtype):
    # unused exposures, NaN and inf values, ERR zero or negative, a pixel with none used, a
    # non-finite prior (NaN terms even where unused, as numpy's products give), broadcast inputs
    rng = np.random.default_rng(n)
    P = 300
    sky = rng.uniform(1, 30, (n, 1)) * rng.uniform(0.5, 1.5, (1, P))
    r = 0.02 * sky + rng.normal(0, 0.05, (n, P)) * 10.0 ** rng.uniform(-3, 3, (n, P))
    r[rng.random((n, P)) < 0.03] = np.nan
    r[rng.random((n, P)) < 0.01] = np.inf
    s = rng.uniform(0.01, 0.1, (n, P))
    s[rng.random((n, P)) < 0.02] = 0.0
    s[rng.random((n, P)) < 0.01] = -0.05
    use = rng.random((n, P)) > 0.2
    use[:, 4] = False
    ma, md = rng.normal(0.02, 0.01, P), rng.normal(0.01, 0.01, P)
    ma[7], md[8], ma[9] = np.nan, np.inf, -np.inf
    r, s, sky = (v.astype(dtype) for v in (r, s, sky))
    bits = lambda a: np.asarray(a, float).view(np.int64)  # noqa: E731
    for args in ((r, s, sky, use, ma, md), (r, s[:, :1], sky, use, 0.02, md), (r, s, sky, True, ma, 0.0)):
        got, want = baseline.level_sums(*args), baseline.level_sums_numpy(*args)
        for g, w in zip(got, want):
            nan = np.isnan(w)
            assert np.array_equal(np.isnan(g), nan) and np.array_equal(bits(g)[~nan], bits(w)[~nan])


def test_the_population_of_the_level_is_measured_where_response_and_dark_level_are_not():
    # a 40 x 40 region under a constant glow of 0.2 DN/s: each pixel's free fit trades response
    # against dark level along r = a sky + d (errors anticorrelated, ~0.5 and ~0.1), while the
    # level a sky + d is measured to its noise; the population's true scatter of that level is
    # 0.2 * 0.02 (flat) and 0.003 (dark) in quadrature, 0.005 DN/s
    from lrscube.detection.baseline import State, level_variance, neighbour_prior
    rng = np.random.default_rng(2)
    shape, sky, P = (40, 40), 0.2, 1600
    a_true, d_true = rng.normal(0, 0.02, P), rng.normal(0, 0.003, P)
    trade = rng.normal(0, 0.5, P)  # the fits' error along the degenerate line
    noise = rng.normal(0, 0.001, P)  # ... and of the level itself (1 / sqrt(W))
    st = State(a=a_true + trade, d=d_true - trade * sky + noise, a_err=np.full(P, 0.5), d_err=np.full(P, 0.1),
               leverage=None, n=np.full(P, 30))
    prior = neighbour_prior(st, shape, level=(np.full(P, sky), np.full(P, 1e6)))
    v = level_variance(prior, sky)
    true = (0.2 * 0.02) ** 2 + 0.003 ** 2
    assert np.all(v < 2.0 * true) and np.all(v > 0.5 * true)
    ma, va, md, vd = prior[:4]
    assert np.all(va * sky ** 2 + vd > 4.0 * true)  # what the two scatters alone say
    assert np.allclose(level_variance(prior[:4], sky), va * sky ** 2 + vd)  # without the level


@pytest.mark.parametrize("shape", [(0, 5), (1, 1), (7, 300), (100, 1000), (3, 0)])
def test_scaled_noise_is_the_whole_array_expressions_bit_for_bit(shape):
    """ERR times each block's calibration (float32), the weights where used and their sums
    over exposures are the whole-array expressions' bit for bit: NaN, zero, negative and
    infinite ERR, a NaN and a zero scale, products beyond float32's range and below its
    normal range, no exposures, no pixels; a NaN sum's sign and payload aside (it is NaN)."""
    T, P = shape
    rng = np.random.default_rng(T + P)
    e = (rng.uniform(0.1, 3, shape) * 10.0 ** rng.uniform(-40, 38, shape)).astype(np.float32)
    for value, frac in ((np.nan, 0.05), (0.0, 0.05), (-1.0, 0.02), (np.inf, 0.02)):
        e[rng.random(shape) < frac] = value
    scale = rng.uniform(0.5, 2.0, (4, T)).astype(np.float32)
    if T:
        scale[0, 0], scale[-1, -1] = np.nan, 0.0
    blk = rng.integers(0, 4, P)
    use = rng.random(shape) < 0.8
    with np.errstate(all="ignore"):
        s_want = (e * np.take(scale.T, blk, axis=1)).astype(np.float32)
        w_want = np.where(use, 1.0 / np.square(s_want, dtype=np.float64), 0.0)
        sum_want = w_want.sum(axis=0)
    s, w, w_sum = baseline.scaled_noise(e, scale, blk, use)
    assert s.dtype == np.float32 and np.array_equal(s.view(np.int32), s_want.view(np.int32))
    assert w.dtype == np.float64 and np.array_equal(w.view(np.int64), w_want.view(np.int64))
    nan = np.isnan(sum_want)
    assert np.array_equal(np.isnan(w_sum), nan)
    assert np.array_equal(w_sum[~nan].view(np.int64), sum_want[~nan].view(np.int64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_histograms_of_every_column_are_those_of_the_used_columns_alone(dtype):
    """The calibration fits and counts every column of a tile as it is: columns without a
    usable exposure (all masked, all NaN) fit nothing and count nothing, and the others' fits
    and counts are those of the used columns copied out (each pixel's fit is its own)."""
    rng = np.random.default_rng(5)
    T, P = 40, 200
    sky = rng.uniform(1, 30, (T, P))
    r = 0.02 * sky + rng.normal(0, 0.05, (T, P))
    r[rng.random((T, P)) < 0.03] = np.nan
    s = np.full((T, P), 0.05)
    r[:, 7] = np.nan                                  # a column no exposure sees
    r, s, sky = (v.astype(dtype) for v in (r, s, sky))
    use = rng.random((T, P)) > 0.1
    use[:, 20:30] = False                             # excluded columns
    use[:, 40] = False
    use[5, 40] = True                                 # one exposure (below four: not used, as there)
    use[:, use.sum(axis=0) < 4] = False
    use &= np.isfinite(r)
    cols = np.flatnonzero(use.any(axis=0))
    block = rng.integers(0, 3, P)
    st_all = baseline.fit_response_offset(r, s, sky, use)
    got = baseline.standardised_histograms(r, s, sky, use, st_all, block, 3)
    st_c = baseline.fit_response_offset(r[:, cols], s[:, cols], sky[:, cols], use[:, cols])
    want = baseline.standardised_histograms(r[:, cols], s[:, cols], sky[:, cols], use[:, cols], st_c, block[cols], 3)
    assert np.array_equal(got, want) and got.sum() == use.sum()
    for f in ("a", "d", "a_err", "d_err", "leverage", "n"):
        assert np.array_equal(getattr(st_all, f)[..., cols], getattr(st_c, f))


@pytest.mark.parametrize("shape", [(0, 5), (1, 1), (9, 40), (100, 600)])
def test_group_noise_is_the_gathers_and_products_bit_for_bit(shape):
    """A group's noise (ERR times its block's calibration and a per-pixel factor, float32) and
    its null moments per JUMP_DET are the numpy gathers and products' bit for bit: NaN, zero,
    negative and infinite ERR, NaN and zero scales and factors, products beyond float32's range
    and below its normal range, no exposures, no pixels, one of each."""
    T, P = shape
    rng = np.random.default_rng(T + 7 * P)
    e = (rng.uniform(0.1, 3, shape) * 10.0 ** rng.uniform(-40, 38, shape)).astype(np.float32)
    for value, frac in ((np.nan, 0.05), (0.0, 0.05), (-1.0, 0.02), (np.inf, 0.02)):
        e[rng.random(shape) < frac] = value
    B = 3
    scale = rng.uniform(0.5, 2.0, (B, T)).astype(np.float32)
    if T:
        scale[0, 0], scale[-1, -1] = np.nan, 0.0
    m1 = rng.uniform(0.5, 1.0, (B, T, 2))
    m2 = rng.uniform(1.0, 3.0, (B, T, 2))
    blk = rng.integers(0, B, P)
    for t_idx, pix in ((np.arange(T), np.arange(P)), (np.flatnonzero(rng.random(T) < 0.7), np.flatnonzero(rng.random(P) < 0.5)),
                       (np.arange(min(T, 1)), np.arange(min(P, 1)))):
        factor = rng.uniform(0.8, 3.0, pix.size) * 10.0 ** rng.uniform(-10, 10, pix.size)
        if pix.size > 2:
            factor[:2] = [np.nan, 0.0]
        jump = rng.random((t_idx.size, pix.size)) < 0.2
        bk = blk[pix]
        per_block = lambda v: np.take(v[:, t_idx].T, bk, axis=1)  # noqa: E731
        with np.errstate(all="ignore"):
            s_want = (np.take(e[t_idx], pix, axis=1) * per_block(scale) * factor).astype(np.float32)
        g1_want = np.where(jump, per_block(m1[:, :, 1]), per_block(m1[:, :, 0]))
        g2_want = np.where(jump, per_block(m2[:, :, 1]), per_block(m2[:, :, 0]))
        s, g1, g2 = baseline.group_noise(e, scale, m1, m2, blk, t_idx, pix, factor, jump)
        assert s.dtype == np.float32 and np.array_equal(s.view(np.int32), s_want.view(np.int32))
        assert np.array_equal(g1, g1_want) and np.array_equal(g2, g2_want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(0, 4), (1, 1), (9, 300)])
def test_residuals_about_the_states_are_the_whole_array_ones_bit_for_bit(shape, dtype):
    """The residuals about each pixel's (a, d), NaN where dropped, are the numpy expression's bit
    for bit: NaN and infinite series and states, signed zeros, everything dropped, nothing."""
    rng = np.random.default_rng(shape[0] * 11 + shape[1])
    r = (rng.normal(size=shape) * 10.0 ** rng.uniform(-3, 3, shape)).astype(dtype)
    sky = rng.uniform(1, 30, shape).astype(dtype)
    r[rng.random(shape) < 0.05] = np.nan
    sky[rng.random(shape) < 0.03] = np.inf
    r[rng.random(shape) < 0.03] = -0.0
    a = rng.normal(0, 0.05, shape[1])
    d = rng.normal(0, 1.0, shape[1])
    if shape[1] > 3:
        a[:3] = [np.nan, np.inf, -0.0]
        d[3] = -0.0
    for drop in (rng.random(shape) < 0.2, np.ones(shape, bool), np.zeros(shape, bool)):
        with np.errstate(invalid="ignore"):
            want = np.where(drop, np.nan, r - a * sky - d)
        got = baseline.residuals_about(r, sky, a, d, drop)
        nan = np.isnan(want)
        assert got.dtype == np.float64 and np.array_equal(np.isnan(got), nan)
        assert np.array_equal(got[~nan].view(np.int64), want[~nan].view(np.int64))


def test_the_population_of_the_level_is_that_of_pixels_under_as_much_light():
    # an MRS tile: a band of pixels under 0.03 DN/s of scattered light between slices under
    # 12 DN/s. The slices' levels scatter by 2 DN/s about their neighbours' (fringes the sky
    # model leaves), the band's by 0.002: each pixel's population is that of its own light
    from lrscube.detection.baseline import State, level_variance, neighbour_prior
    rng = np.random.default_rng(4)
    shape = (64, 64)
    P = shape[0] * shape[1]
    sky = np.full(shape, 12.0)
    sky[:, 20:40] = 0.03
    scatter = np.where(sky > 1, 2.0, 0.002)
    level = rng.normal(0, scatter)
    noise = np.full(shape, 0.001)
    st = State(a=np.zeros(P), d=(level + rng.normal(0, noise)).ravel(), a_err=np.full(P, 0.5),
               d_err=noise.ravel(), leverage=None, n=np.full(P, 40))
    prior = neighbour_prior(st, shape, level=(sky.ravel(), 1.0 / noise.ravel() ** 2))
    v = level_variance(prior, sky.ravel()).reshape(shape)
    dim, bright = v[:, 20:40], v[:, np.r_[0:20, 40:64]]
    assert np.all(dim < 2.0 * 0.002 ** 2) and np.all(dim > 0.5 * 0.002 ** 2)
    assert np.all(bright > 0.5 * 2.0 ** 2)
    # one light: the region's scatter, as for a quantity without a sky
    one = neighbour_prior(st, shape, level=(np.full(P, 12.0), 1.0 / noise.ravel() ** 2))
    region = baseline._population((st.d).reshape(shape), noise, 15, 3, 0)[1].ravel()
    assert np.array_equal(one[5], region)
    # the band outside the light (an image slicer's gap): the region's scatter, not its own
    gap = neighbour_prior(st, shape, level=(sky.ravel(), 1.0 / noise.ravel() ** 2), lit=sky > 1)
    assert np.array_equal(gap[5].reshape(shape)[:, 20:40], region.reshape(shape)[:, 20:40])
    assert np.array_equal(gap[5].reshape(shape)[:, :20], prior[5].reshape(shape)[:, :20])
