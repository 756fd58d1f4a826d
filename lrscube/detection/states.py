"""One candidate pixel: its normal state, and the intervals in which it differs from it.

Pure functions of 1-D numpy arrays (one pixel, its exposures in time order, gaps and excluded
exposures removed): the spatial residual ``r`` against the local sky (DN/s), its calibrated
noise ``s`` (DN/s) and the local sky ``sky`` (DN/s).

**The normal state is the least-bad state.** A normal pixel's residual is its own fixed
response times the sky, ``r = a * sky`` (:mod:`lrscube.detection.baseline`). Defects are one-directional
physics: hot, warm and telegraph pixels add a dark current, dead and low-QE pixels lose
response, noisy pixels scatter more than their noise. A baseline fitted over all exposures
lands on the majority state, which for a defect that appeared early is the defective one; its
healthy exposures would then look like a change of the opposite sign. So the baseline is
fitted, the runs of exposures that differ from it are found (:func:`lrscube.detection.changepoints.find_runs`),
the baseline is refitted on the exposures outside them, and when a run is clearly a *better*
state than the rest (a lower dark current, or a higher response: :func:`better_run`), it becomes
the normal state and everything is measured against it again.

**Defects are physical.** Every interval is a *change* of the pixel against its own normal
state, significant at the detection threshold; a change of response must also reach LOW_QE's
``min_deficit``. A pixel whose normal state itself lies beyond a physical limit (in the spirit
of the jwst_reffiles bad-pixel criteria: response below ``low_qe_response`` of its neighbours',
an additive dark excess above ``static_excess_dn_s``), significantly, is bad in every exposure.
A response a few percent off its neighbours is the flat field, however significant.

**Scatter as well as level.** About its levels, a pixel's residual has the noise its ERR and
its neighbours predict (the calibrated noise and the measured null moments of clipped squares
per exposure, :func:`lrscube.detection.baseline.calibration`). Runs of excess scatter (a noisy pixel, a
telegraph pixel switching faster than its exposures) are found on the standardised clipped
squares, judged by the saddlepoint tail of their sum
(:func:`lrscube.detection.baseline.clipped_square_sigma`), and kept where the scatter is at least
``noisy_rms_ratio`` times the expected noise.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from . import baseline
from . import changepoints as cp
from . import classify
from . import variance
from .afterglow import decays_within
from .residuals import RESPONSE_RANGE, running_median
from .temporal import clipped_z, weighted_level

#: most passes of "fit the normal state, find the runs against it"
MAX_PASSES = 4


class Thresholds(NamedTuple):
    """Significances (sigma) an interval must reach, from one false-alarm rate per pixel."""

    level: float  #: a run whose mean differs from the normal state (two-sided)
    variance: float  #: a run of excess scatter (one-sided)
    static: float  #: a normal state beyond a physical limit (one-sided)


def baseline_state(r, s, sky, use, prior=None) -> tuple[float, float]:
    """Robust (a, d) of one pixel over the exposures ``use``, drawn from the population
    ``prior = (ma, va, md, vd)`` (:func:`lrscube.detection.baseline.neighbour_prior`; none: free)."""
    pr = None if prior is None else tuple(np.atleast_1d(np.asarray(v, float)) for v in prior)
    st = baseline.fit_response_offset(r[use, None], s[use, None], sky[use, None], iterations=2, prior=pr)
    a, d = float(st.a[0]), float(st.d[0])
    if not np.isfinite(a):
        a = float(prior[0]) if prior is not None else 0.0
    if not np.isfinite(d):
        d = float(prior[2]) if prior is not None else 0.0
    return a, d


def state(r, s, sky, use) -> baseline.State:
    """Robust (a, d) of r = a * sky + d over the exposures ``use`` (scalars)."""
    st = baseline.fit_response_offset(r[use, None], s[use, None], sky[use, None])
    return baseline.State(*(float(v[0]) if np.ndim(v) == 1 else v[:, 0] for v in st))


def _cover(runs, n: int) -> np.ndarray:
    m = np.zeros(n, bool)
    for u in runs:
        m[u.start:u.stop] = True
    return m


def _wls(X: np.ndarray, y: np.ndarray, w: np.ndarray):
    """Weighted least squares: (coefficients, covariance, chi^2)."""
    sw = np.sqrt(w)
    A = X * sw[:, None]
    b = y * sw
    AtA = A.T @ A
    try:
        cov = np.linalg.inv(AtA + 1e-12 * np.trace(AtA) * np.eye(AtA.shape[0]))
    except np.linalg.LinAlgError:
        return None, None, np.inf
    coef = cov @ (A.T @ b)
    chi2 = float(np.sum((b - A @ coef) ** 2))
    return coef, cov, chi2


def step_models(r, s, sky, normal, run) -> dict:
    """Two descriptions of a run against the normal exposures, fitted jointly over both:

    * additive: ``r = a * sky + d_normal`` (normal) ``+ d_run`` (run), one response: the run
      differs by a dark current ``d_run - d_normal`` (DN/s);
    * multiplicative: ``r = a_normal * sky`` (normal), ``a_run * sky`` (run), no dark current:
      the run differs by a response ``a_run - a_normal``.

    Returns the steps, their standard errors and each model's chi^2.
    """
    use = normal | run
    w = 1.0 / s[use] ** 2
    y = r[use]
    k = sky[use]
    isr = run[use].astype(float)
    X_add = np.column_stack([k, 1.0 - isr, isr])
    c_add, v_add, chi_add = _wls(X_add, y, w)
    X_mul = np.column_stack([k * (1.0 - isr), k * isr])
    c_mul, v_mul, chi_mul = _wls(X_mul, y, w)
    out = {"chi2_add": chi_add, "chi2_mult": chi_mul, "step_add": np.nan, "step_add_err": np.inf,
           "step_mult": np.nan, "step_mult_err": np.inf}
    if c_add is not None:
        out["step_add"] = float(c_add[2] - c_add[1])
        out["step_add_err"] = float(np.sqrt(max(v_add[1, 1] + v_add[2, 2] - 2 * v_add[1, 2], 0.0)))
    if c_mul is not None:
        out["step_mult"] = float(c_mul[1] - c_mul[0])
        out["step_mult_err"] = float(np.sqrt(max(v_mul[0, 0] + v_mul[1, 1] - 2 * v_mul[0, 1], 0.0)))
    return out


#: a state whose scatter about its own (a, d) exceeds this (variance in units of the noise,
#: clipped; the TELEGRAPH test's figure) switches or is noisy; ...
STEADY_VARIANCE = 4.0
#: ... and a steady run is the normal state of exposures that scatter this many times more
CLEAN_RATIO = 4.0
#: a normal state is judged against the physical limits only if it is one state: its exposures
#: scatter about its own (a, d) by at most this (variance in units of the noise; a slow drift,
#: a switching pixel or a mixture of states does more), or by no more than chance allows at
#: 1e-3 over few exposures
STATIC_MAX_SCATTER = 2.0
def _chi2_isf(p: float, dof: int) -> float:
    from scipy.stats import chi2

    return float(chi2.isf(p, max(dof, 1)))


#: the noise of a value less the running median of 5 values (itself among them), in units of
#: the values' noise (Gaussian; measured by simulation: the median's own noise, less the value's
#: share in it)
LOCAL_MEDIAN_NOISE = 0.943


def scatter_about_state(r, s, sky, use, clip: float = 6.0) -> float:
    """Mean square of the residual about the state (a, d) fitted over the exposures ``use``, in
    units of the noise, each exposure clipped at ``clip`` (a cosmic ray weighs at most that)."""
    if use.sum() < 3:
        return 1.0
    st = state(r, s, sky, use)
    z = (r[use] - st.a * sky[use] - st.d) / s[use]
    return float(np.mean(np.minimum(z * z, clip * clip)) * use.sum() / max(use.sum() - 2, 1))


def segments(runs, n: int) -> list[tuple[int, int, bool]]:
    """The runs and the stretches between them, in time order: (start, stop, is_run)."""
    out, pos = [], 0
    for u in sorted(runs, key=lambda u: u.start):
        if u.start > pos:
            out.append((pos, u.start, False))
        out.append((u.start, u.stop, True))
        pos = max(pos, u.stop)
    if pos < n:
        out.append((pos, n, False))
    return out


def segment_levels(r, s, sky, segs) -> dict:
    """Two joint descriptions of a pixel's segments (one state each):

    * additive: ``r = a * sky + c_k`` in segment k, one response, a dark level per segment;
    * multiplicative: ``r = a_k * sky`` in segment k, a response per segment, no dark current.

    Returns each model's chi^2, the levels and their standard errors (``c`` in DN/s, ``a``).
    """
    n = r.size
    k = len(segs)
    ind = np.zeros((n, k))
    for j, (i0, i1, _) in enumerate(segs):
        ind[i0:i1, j] = 1.0
    w = 1.0 / s ** 2
    c_add, v_add, chi_add = _wls(np.column_stack([sky, ind]), r, w)
    c_mul, v_mul, chi_mul = _wls(ind * sky[:, None], r, w)
    out = {"chi2_add": chi_add, "chi2_mult": chi_mul, "dof": max(n - k - 1, 1)}
    if c_add is not None:
        out["c"], out["c_err"] = c_add[1:], np.sqrt(np.maximum(np.diag(v_add)[1:], 0.0))
    if c_mul is not None:
        out["a"], out["a_err"] = c_mul, np.sqrt(np.maximum(np.diag(v_mul), 0.0))
    return out


def choose_normal(r, s, sky, runs, *, min_sigma: float, model_preference_chi2: float, min_length: int,
                  min_significance: float, min_deficit: float = 0.0, exclude=None) -> np.ndarray:
    """The exposures of the pixel's normal state: its least-bad state, given the runs found
    against the current baseline. (n,) bool.

    The runs and the stretches between them are the candidate states, fitted jointly
    (:func:`segment_levels`). Where the additive description is clearly better (its chi^2
    lower by ``model_preference_chi2`` in units of the scatter it leaves: a switching pixel fits
    neither, and its chi^2 difference says nothing), the state with the lowest dark level is
    the least bad; where the multiplicative one is, the state with the highest response; where
    neither is (a weak step under a sky that barely changes), the stretches between the runs
    stay normal: an excess stays an excess and a deficit a deficit. A run is the normal state
    only if it is a change by itself (``min_length`` exposures, ``min_significance``: a few
    exposures in the tail of the noise are not a state) and lies ``min_significance`` standard
    errors below the stretches' level (the same evidence as for a defect); the normal state is
    then every segment within ``min_sigma`` standard errors of its level.
    A steady run beside stretches that switch or scatter far beyond their noise (a pixel
    telegraph or noisy from early on) is the normal state too, if it is no higher in dark
    level and no lower in response. And where neither description is preferred, a run below
    the stretches by less than ``min_deficit`` of their response cannot be a loss of response
    (not a defect), so if it is a lower dark level by ``min_significance`` standard errors it is
    the normal state (the stretches being a warm pixel's): a weak excess that appeared early
    under a faint sky. Exposures in ``exclude`` (a span of excess scatter) are in no state.
    """
    n = r.size
    ex = np.zeros(n, bool) if exclude is None else np.asarray(exclude, bool)
    segs = segments(runs, n)
    gaps = np.zeros(n, bool)
    for i0, i1, is_run in segs:
        if not is_run:
            gaps[i0:i1] = True
    gaps &= ~ex
    if not runs:
        return ~ex if (~ex).sum() >= 2 else np.ones(n, bool)
    m = segment_levels(r, s, sky, segs)
    over = max(1.0, min(m["chi2_add"], m["chi2_mult"]) / m["dof"])
    if "c" in m and (m["chi2_mult"] - m["chi2_add"]) / over >= model_preference_chi2:
        level, err = m["c"], m["c_err"] * np.sqrt(over)  # lower is better
    elif "a" in m and (m["chi2_add"] - m["chi2_mult"]) / over >= model_preference_chi2:
        level, err = -m["a"], m["a_err"] * np.sqrt(over)
    else:
        level = None
    by_run = {(u.start, u.stop): u for u in runs}
    eligible = [j for j, (i0, i1, is_run) in enumerate(segs)
                if i1 - i0 >= max(2, min_length) and ex[i0:i1].mean() < 0.5
                and (not is_run or by_run[(i0, i1)].significance >= min_significance)]
    if level is not None and eligible:
        # the level of the stretches between the runs, as one state
        if gaps.sum() >= 2:
            ref = float(np.average([level[j] for j, sg in enumerate(segs) if not sg[2]],
                                   weights=[sg[1] - sg[0] for sg in segs if not sg[2]]))
        else:
            ref = np.inf
        j = min(eligible, key=lambda j: level[j])
        if segs[j][2] and ref - level[j] >= max(min_sigma, min_significance) * err[j]:
            return np.array([abs(level[k] - level[j]) <= min_sigma * max(err[k], err[j]) for k in range(len(segs))
                             for _ in range(segs[k][1] - segs[k][0])]) & ~ex
        if not segs[j][2] or ref - level[j] < max(min_sigma, min_significance) * err[j]:
            # the stretches are (as good as) the best state: with them, every run that is not
            # worse than they are by a defect's evidence
            keep = gaps.copy()
            for k, (i0, i1, is_run) in enumerate(segs):
                if is_run and level[k] - ref < max(min_sigma, min_significance) * err[k]:
                    keep[i0:i1] = True
            keep &= ~ex
            if keep.sum() >= 2:
                return keep
    if level is None and eligible and gaps.sum() >= 2 and min_deficit > 0:
        best, best_sig = None, 0.0
        for j in eligible:
            i0, i1, is_run = segs[j]
            if not is_run or by_run[(i0, i1)].sign > 0:
                continue
            run = np.zeros(n, bool)
            run[i0:i1] = True
            st = step_models(r, s, sky, gaps, run)
            a_gap = state(r, s, sky, gaps).a
            deficit = -st["step_mult"] / max(1.0 + a_gap, 0.1)
            sig = -st["step_add"] / st["step_add_err"] if st["step_add_err"] > 0 else 0.0
            if deficit < min_deficit and sig >= max(min_sigma, min_significance) and sig > best_sig:
                best, best_sig = run, sig
        if best is not None:
            return best & ~ex
    # a steady, no-worse run beside stretches that switch or scatter far beyond their noise
    if gaps.sum() >= 3:
        q_gap = scatter_about_state(r, s, sky, gaps)
        if q_gap >= STEADY_VARIANCE:
            for j in eligible:
                i0, i1, is_run = segs[j]
                if not is_run:
                    continue
                run = np.zeros(n, bool)
                run[i0:i1] = True
                st = step_models(r, s, sky, gaps, run)
                no_worse = (st["step_add"] <= min_sigma * st["step_add_err"]
                            and st["step_mult"] >= -min_sigma * st["step_mult_err"])
                if no_worse and scatter_about_state(r, s, sky, run) * CLEAN_RATIO <= q_gap:
                    return run & ~ex
    if gaps.sum() >= 2:
        return gaps
    if len(segs) > 1:
        # the runs cover the series (the first fit was a mixture of states) and neither
        # description says which state is better: the state of most exposures is normal (the
        # segments whose mean residuals agree within min_sigma standard errors, pooled; each
        # error inflated by the segment's own scatter about its mean)
        mu, err = np.zeros(len(segs)), np.zeros(len(segs))
        for k, (i0, i1, _) in enumerate(segs):
            w = 1.0 / s[i0:i1] ** 2
            mu[k] = float(np.sum(w * r[i0:i1]) / np.sum(w))
            chi = float(np.sum(w * (r[i0:i1] - mu[k]) ** 2)) / max(i1 - i0 - 1, 1)
            err[k] = float(np.sqrt(max(chi, 1.0) / np.sum(w)))
        size = np.array([i1 - i0 for i0, i1, _ in segs], float)
        near = np.abs(mu[:, None] - mu[None, :]) <= min_sigma * np.maximum(err[:, None], err[None, :])
        j = int(np.argmax(near @ size))
        keep = np.concatenate([np.full(i1 - i0, bool(near[j, k])) for k, (i0, i1, _) in enumerate(segs)]) & ~ex
        if keep.sum() >= 2:
            return keep
    return ~ex if (~ex).sum() >= 2 else np.ones(n, bool)


def _evidence(e, s, sky_eff, state_sigma) -> dict:
    """Evidence of one interval from the residual against the normal state ``e`` (1-D arrays
    over its exposures): an additive level (DN/s) and a fraction of the normal response lost."""
    a, a_err, chi2_a, n = weighted_level(e, s)
    skyp = np.where(sky_eff > 0, sky_eff, np.nan)
    b, b_err, chi2_m, n_m = weighted_level(e, s, weight_shape=skyp)
    if n_m < max(2, n // 2):  # too little sky to test a sky-proportional model
        b, b_err, chi2_m = np.nan, np.inf, np.inf
    z = e / s
    high = z > state_sigma
    low = np.abs(z) <= state_sigma
    best = np.nanmin([chi2_a, chi2_m])
    return {
        "n": n, "excess_dn_s": a, "excess_err": a_err, "deficit": -b, "deficit_err": b_err,
        "chi2_add": chi2_a, "chi2_mult": chi2_m, "variance_ratio": best / max(n - 1, 1),
        "frac_high": float(high.mean()) if z.size else 0.0, "frac_low": float(low.mean()) if z.size else 0.0,
        "high_level_dn_s": float(np.mean(e[high])) if high.any() else a,
    }


def switch_counts(r: np.ndarray, s: np.ndarray, high_level: float, separation: float) -> tuple[np.ndarray, np.ndarray]:
    """Per consecutive exposure pair (t, t + 1): (changed state, counts), both bool (n - 1,).

    The state of an exposure is the nearer of the two levels: high when the residual ``r``
    (DN/s) is above half the high-state level ``high_level``. A pair counts only when the two
    levels are at least ``separation`` noise sigmas apart in both exposures: where they are not,
    noise decides the state (and a steady hot pixel seen in a short exposure would look like a
    switch), so a steady defect never switches, whatever its exposures' noise.
    """
    n = r.size
    if n < 2 or not (np.isfinite(high_level) and high_level > 0):
        return np.zeros(max(n - 1, 0), bool), np.zeros(max(n - 1, 0), bool)
    state_ = r > 0.5 * high_level
    ok = high_level >= separation * s
    counts = ok[1:] & ok[:-1]
    return (state_[1:] != state_[:-1]) & counts, counts


class Scatter(NamedTuple):
    """Excess scatter of a stretch of exposures against the measured null."""

    sigma: float  #: one-sided significance of the excess (gamma law of the clipped squares)
    ratio: float  #: scatter in units of the expected noise (rms)
    excess_rms_dn_s: float  #: rms of the excess scatter (DN/s)


def scatter(q, m1, m2, c, s) -> Scatter:
    """:class:`Scatter` of clipped squares ``q`` (1-D) with per-exposure null moments ``m1``,
    ``m2`` (of the clip ``c``) and noise ``s`` (DN/s)."""
    if q.size == 0:
        return Scatter(0.0, 1.0, 0.0)
    total, mean = float(q.sum()), float(m1.sum())
    k = baseline.rms_ratio(total / q.size, mean / q.size, c)
    ex = float(np.sqrt(max(k * k - 1.0, 0.0)) * np.median(s)) if np.isfinite(k) else float(np.max(np.sqrt(q) * s))
    # the measured null as a Gaussian of the scale whose clipped squares average m1
    g1, _ = baseline.gaussian_clipped_moments(1.0, c)
    s_null = baseline.rms_ratio(mean / q.size, g1, c)
    return Scatter(baseline.clipped_square_sigma(total, q.size, c, s_null if np.isfinite(s_null) else 1.0), k, ex)


def scatter_ends(q, m1, c, i, j, lo, hi, ratio, boundary_sigma) -> tuple[int, int]:
    """Onset and end of a run of excess scatter [i, j) by likelihood, between ``lo`` and ``hi``.

    Each exposure adds ``-log k + q' (1 - 1/k^2) / 2`` to the log-likelihood of "scatter k times
    the noise" against "normal" (``q'``: its clipped square ``q`` on the Gaussian scale of the
    measured null ``m1``, clip ``c``); each end goes where the sum over the run is largest. A
    recovery claims the pixel is normal after it: where the run reaches the end of the series
    and the stretch after it does not favour "normal" by ``boundary_sigma^2 / 2`` (a few quiet
    exposures of a noisy pixel are not a recovery), the run extends to the end. Onsets are not
    moved back (as for level runs).
    """
    k = float(min(max(ratio, 1.0 + 1e-3), 1e3))
    g1 = np.array([baseline.gaussian_clipped_moments(1.0, float(cc))[0] for cc in np.unique(c)])
    gmap = dict(zip(np.unique(c).tolist(), g1.tolist()))
    gs = np.array([gmap[float(cc)] for cc in c])
    qn = q * gs / np.maximum(m1, 1e-6)
    ll = -np.log(k) + 0.5 * qn * (1.0 - 1.0 / (k * k))
    g = np.concatenate([[0.0], np.cumsum(ll)])
    for _ in range(2):
        i = lo + int(np.argmax(g[j] - g[lo:j]))
        j = i + 1 + int(np.argmax(g[i + 1:hi + 1] - g[i]))
    n = q.size
    if hi == n and j < n and g[n] - g[j] > -0.5 * boundary_sigma ** 2:
        j = n
    return i, j


def pixel_intervals(r, s, sky, params, thresholds: Thresholds, clip=None, vnull=None, prior=None,
                    variance_scale: float = 1.0, variance_line: float = 1.0, lit: bool = True,
                    hours=None, line_response: float = 1.0) -> list[dict]:
    """Bad intervals of one pixel against its normal state.

    ``r, s, sky`` are 1-D over the pixel's exposures (time order, excluded ones removed);
    ``clip`` (per exposure, sigma; default ``clip_sigma``) bounds each exposure's normalised
    residual; ``vnull = (m1, m2, c)``: per exposure, the measured null moments of
    ``min(z^2, c^2)`` and the clip ``c`` (default: Gaussian, ``variance_clip_sigma``);
    ``prior = (ma, va, md, vd)``: the population the pixel's response and dark level are drawn
    from (:func:`lrscube.detection.baseline.neighbour_prior`; none: both free). ``variance_scale``: the
    measured null scale of the weighted excess-variance statistic (:func:`lrscube.detection.variance.null_scale`);
    ``variance_line``: the variance factor the pixel's line across the dispersion shares
    (:func:`lrscube.detection.variance.line_factor`), divided out of it. ``lit`` False: the pixel is
    outside the light (an image slicer's gap, :func:`lrscube.detection.residuals.unlit_pixels`), its
    response is not judged against the physical limit (only its dark level is). ``hours``: the
    exposures' mid-times (hours); with them, a run of excess that decays within
    ``afterglow_max_hours`` is a latent and not reported (:mod:`lrscube.detection.afterglow`).
    ``line_response``: the response the pixel's line across the dispersion shares
    (:func:`lrscube.detection.baseline.line_response`, at most 1); the physical limit on the
    pixel's response is relative to it.
    Returns evidence dicts with ``start``/``stop`` indices into the given series.
    """
    p = params
    r = np.asarray(r, float)
    s = np.asarray(s, float)
    sky = np.asarray(sky, float)
    n = r.size
    if n < p.min_bad_exposures:
        return []
    cap = np.broadcast_to(np.asarray(p.clip_sigma if clip is None else clip, float), (n,))
    if vnull is None:
        c = float(p.variance_clip_sigma)
        g1, g2 = baseline.gaussian_clipped_moments(1.0, c)
        vnull = (np.full(n, g1), np.full(n, g2), np.full(n, c))
    m1, m2, vc = (np.broadcast_to(np.asarray(v, float), (n,)) for v in vnull)
    with np.errstate(divide="ignore", invalid="ignore"):
        excess = 1.0 / s
        deficit = np.where(sky > 0, sky * excess, excess)
    pref = p.classes["DEAD"]["model_preference_chi2"]

    # --- the normal state and the level runs against it
    def level_runs(a, d=0.0):
        e = r - a * sky - d
        z = clipped_z(e, s, cap)
        return e, z, cp.find_runs(z, min_sigma=p.changepoint_sigma, min_length=1, boundary_sigma=p.boundary_sigma,
                                  shapes=(excess, deficit), cap=cap, raw=e * excess)

    def scatter_spans(e, z, runs, local=False):
        """Residual about the levels of the runs that are defects by themselves (a noisy pixel's
        excursions are its scatter), its clipped squares and the runs of excess scatter in them.
        ``local``: about a running median of 5 exposures instead (its own noise divided out),
        which follows any level change, found or not (a first look, before the normal state)."""
        zu = e * excess
        zr = zu.copy()
        if local:  # a steady excess is steady in DN/s, a steady deficit as a fraction of the sky
            za = (r - running_median(r, 5, axis=0, min_count=1).astype(float)) * excess
            with np.errstate(divide="ignore", invalid="ignore"):
                f = np.where(sky > 0, r / sky, 0.0)
                zm = (f - running_median(f, 5, axis=0, min_count=1).astype(float)) * np.where(sky > 0, sky, 0.0) * excess
            qa, qm = np.minimum(za * za, vc * vc).sum(), np.minimum(zm * zm, vc * vc).sum()
            zr = (za if qa <= qm else zm) / LOCAL_MEDIAN_NOISE
        levels = []
        for u in runs if not local else []:
            if u.stop - u.start < p.min_bad_exposures or u.significance < thresholds.level:
                continue
            levels.append((u.start, u.stop, None))
            mu = cp.expected_levels(z, u.start, u.stop, (excess, deficit), None, zu)
            if mu is not None:
                zr[u.start:u.stop] -= mu[u.start:u.stop]
        q = np.minimum(zr * zr, vc * vc)
        with np.errstate(divide="ignore", invalid="ignore"):
            y = (q - m1) / np.sqrt(np.maximum(m2 - m1 * m1, 1e-12))
        vruns = [u for u in cp.find_runs(y, min_sigma=p.changepoint_sigma, min_length=p.min_bad_exposures, split=False)
                 if u.sign > 0]
        spans = []
        for k, u in enumerate(vruns):
            sl = slice(u.start, u.stop)
            sc = scatter(q[sl], m1[sl], m2[sl], float(np.median(vc[sl])), s[sl])
            if not (sc.sigma >= thresholds.variance and sc.ratio >= p.noisy_rms_ratio):
                continue
            lo = vruns[k - 1].stop if k else 0
            hi = vruns[k + 1].start if k + 1 < len(vruns) else n
            i, j = scatter_ends(q, m1, vc, u.start, u.stop, lo, hi, sc.ratio, p.boundary_sigma)
            sl = slice(i, j)
            sc = scatter(q[sl], m1[sl], m2[sl], float(np.median(vc[sl])), s[sl])
            if sc.sigma >= thresholds.variance and sc.ratio >= p.noisy_rms_ratio and j - i >= p.min_bad_exposures:
                spans.append((i, j, sc))
        if not local:
            for w in weighted_spans(zr, e, levels):
                over = [sp for sp in spans if sp[0] < w[1] and w[0] < sp[1]]
                if not over or w[2].sigma > max(sp[2].sigma for sp in over):
                    spans = sorted([sp for sp in spans if sp not in over] + [w], key=lambda sp: sp[0])
        return q, spans

    g1, g2 = baseline.gaussian_clipped_moments(1.0, float(p.clip_sigma))
    wm1 = np.where(cap == vc, m1, g1)  # JUMP_DET exposures: clipped like the scatter, measured null
    wm2 = np.where(cap == vc, m2, g2)

    def weighted_spans(x, e, levels):
        """The most significant run of excess variance weighted by precision (clip ``cap``, its
        largest exposures left out: :mod:`lrscube.detection.variance`) of ``x``, the residual in
        units of its noise about the level runs (``e``: about the normal state, DN/s); its ends
        are the run's (onset and recovery). It replaces the clip-3 scatter runs it overlaps where
        it is more significant than each of them (the clip-3 statistic caps a precise exposure's
        share). Where it overlaps a level run that is a defect by itself (``levels``) and the
        span's median (DN/s) exceeds its robust scatter (1.4826 MAD), the level describes the
        pixel (a HOT or WARM pixel a little noisier than its ERR says) and the span is not kept:
        a noisy pixel's mean stays near its baseline over its span, whatever runs its excursions
        make."""
        x = x / np.sqrt(variance_line)
        u, v = variance.terms(x, s, cap, wm1, wm2)
        i, j, st = variance.best_run(u, v, p.min_bad_exposures)
        if not np.isfinite(st) or st / variance_scale < thresholds.variance:
            return []
        k = variance.rms_ratio(x[i:j], s[i:j], cap[i:j], wm1[i:j])
        if k < p.noisy_rms_ratio:
            return []
        ex = float(np.sqrt(max(k * k - 1.0, 0.0)) * np.median(s[i:j]))
        if any(a < j and i < b for a, b, _ in levels):
            # robust: the clip caps the ratio k, so the scatter is measured without it
            ev = e[i:j]
            mid = float(np.median(ev))
            if abs(mid) > 1.4826 * float(np.median(np.abs(ev - mid))):
                return []
        return [(i, j, Scatter(float(st / variance_scale), float(k), ex))]

    # first guess: the majority state, with its own response and dark level (a pixel hot for
    # most of the series is not described by a response alone), and the spans of excess
    # scatter against it, which belong to no level state
    normal = np.ones(n, bool)
    st0 = state(r, s, sky, normal)
    e, z, runs = level_runs(st0.a, st0.d)
    _, spans0 = scatter_spans(e, z, runs, local=True)
    noisy0 = np.zeros(n, bool)
    for i, j, _ in spans0:
        noisy0[i:j] = True
    # then the least-bad of the states the runs against it show, refitted until it does not change
    a, d = st0.a, st0.d
    seen = []
    for k in range(MAX_PASSES + 1):
        new = choose_normal(r, s, sky, runs, min_sigma=p.changepoint_sigma, model_preference_chi2=p.boundary_sigma ** 2,
                            min_length=p.min_bad_exposures, min_significance=thresholds.level,
                            min_deficit=p.classes["LOW_QE"]["min_deficit"], exclude=noisy0)
        if k and (new == normal).all():
            break
        if any((new == v).all() for v in seen):  # a cycle: the largest of its states is normal
            new = max(seen + [normal], key=lambda v: int(v.sum()))
            if (new == normal).all():
                break
            seen = [new] * (MAX_PASSES + 2)  # stop after this one
        seen.append(normal)
        normal = new
        a, d = baseline_state(r, s, sky, normal, prior)
        e, z, runs = level_runs(a, d)
        if len(seen) > MAX_PASSES + 1:
            break
    sky_eff = (1.0 + a) * sky  # the normal response times the local sky

    # --- scatter about the levels against the normal state
    q, noisy_spans = scatter_spans(e, z, runs)

    def row(start, stop, run_sig, on, rec):
        sl = slice(start, stop)
        v = z[sl]
        sc = scatter(q[sl], m1[sl], m2[sl], float(np.median(vc[sl])), s[sl])
        return {"start": start, "stop": stop, "sign": 1 if v.sum() >= 0 else -1,
                "significance": float(abs(v.sum()) / np.sqrt(v.size)) if run_sig is None else run_sig,
                "onset_significance": on, "recovery_significance": rec, "noisy": False, "static": False,
                "switching": False,
                "scatter_sigma": sc.sigma, "scatter_ratio": sc.ratio, "excess_rms_dn_s": sc.excess_rms_dn_s,
                "response": 1.0 + a, **_evidence(e[sl], s[sl], sky_eff[sl], p.state_sigma)}

    out = _level_intervals(runs, r=e, s=s, z=z, p=p, threshold=thresholds.level, row=row)

    # --- noisy intervals (merged with overlapping level intervals)
    for i, j, sc in noisy_spans:
        over = [w for w in out if w["start"] < j and i < w["stop"]]
        lo = min([i] + [w["start"] for w in over])
        hi = max([j] + [w["stop"] for w in over])
        for w in over:
            out.remove(w)
        on = float("inf") if lo == 0 else (over[0]["onset_significance"] if over and over[0]["start"] == lo else sc.sigma)
        rec = float("inf") if hi == n else (over[-1]["recovery_significance"] if over and over[-1]["stop"] == hi
                                            else sc.sigma)
        rw = row(lo, hi, None, on, rec)
        rw["noisy"] = True
        rw["significance"] = max([rw["significance"], sc.sigma] + [w["significance"] for w in over])
        out.append(rw)
    out.sort(key=lambda w: w["start"])
    if hours is not None and p.afterglow_max_hours > 0:
        h = np.asarray(hours, float)
        out = [w for w in out if not (
            w["sign"] > 0 and not w["noisy"] and w["stop"] < n
            and decays_within(e[w["start"]:w["stop"]], s[w["start"]:w["stop"]], h[w["start"]:w["stop"]],
                              max_hours=p.afterglow_max_hours, min_sigma=p.afterglow_decay_sigma,
                              max_ratio=p.afterglow_max_ratio))]

    # --- the normal state against the physical limits: bad throughout?
    if normal.sum() >= max(3, p.min_bad_exposures) and scatter_about_state(r, s, sky, normal) <= max(
            STATIC_MAX_SCATTER, _chi2_isf(1e-3, int(normal.sum()) - 2) / max(int(normal.sum()) - 2, 1)):
        st = state(r, s, sky, normal)
        resp = 1.0 + st.a
        dx = st.d - (float(prior[2]) if prior is not None else 0.0)  # over the neighbours' dark level
        hot = (dx >= p.static_excess_dn_s and np.isfinite(st.d_err) and dx / st.d_err >= thresholds.static)
        low_limit = p.low_qe_response * min(float(line_response), 1.0)
        low = (lit and resp <= low_limit and np.isfinite(st.a_err) and -st.a / st.a_err >= thresholds.static)
        # the level itself must show it, each parameter measured with the other at the
        # neighbours' value: where the sky barely changes, its estimate's own noise (in the sky
        # and, with the opposite sign, in the residual) pulls the slope of r on the sky towards
        # -1, and the free fit trades a response of 0 against a dark level equal to the sky
        ma = float(prior[0]) if prior is not None else 0.0
        md = float(prior[2]) if prior is not None else 0.0
        w = normal / s ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            a_lvl = float(np.sum(w * sky * (r - md)) / np.sum(w * sky * sky))
            d_lvl = float(np.sum(w * (r - ma * sky)) / np.sum(w)) - md
        with np.errstate(invalid="ignore", divide="ignore"):
            d_lvl_err = float(1.0 / np.sqrt(np.sum(w)))
            a_lvl_err = float(1.0 / np.sqrt(np.sum(w * sky * sky)))
        hot = hot and d_lvl >= p.static_excess_dn_s and d_lvl / d_lvl_err >= thresholds.static
        low = low and 1.0 + a_lvl <= low_limit and -a_lvl / a_lvl_err >= thresholds.static
        # an excess no response can explain (more than twice the neighbours'): a defect
        # whichever description, also where the sky does not separate them
        d_err, a_st, a_err = st.d_err, st.a, st.a_err
        if not hot and (d_lvl >= p.static_excess_dn_s and d_lvl / d_lvl_err >= thresholds.static
                        and not 1.0 + a_lvl <= RESPONSE_RANGE[1]):
            hot, dx, d_err = True, d_lvl, d_lvl_err
        # ... and a response loss no dark level explains (a dark reference off by more than
        # static_excess_dn_s would make a bad pixel too)
        if not low and not hot and lit and (1.0 + a_lvl <= low_limit and -a_lvl / a_lvl_err >= thresholds.static
                                    and -d_lvl >= p.static_excess_dn_s and -d_lvl / d_lvl_err >= thresholds.static):
            low, a_st, a_err = True, a_lvl, a_lvl_err
            resp = 1.0 + a_lvl
        if hot or low:
            # bad in every exposure; the evidence is the normal state's own (excess or response)
            rw = row(0, n, None, float("inf"), float("inf"))
            used = normal
            chi2 = float(np.sum(((r[used] - st.a * sky[used] - st.d) / s[used]) ** 2))
            rw.update(static=True, response=resp, variance_ratio=chi2 / max(int(used.sum()) - 2, 1),
                      significance=max(dx / d_err if hot else 0.0, -a_st / a_err if low else 0.0))
            if low:
                rw.update(sign=-1, deficit=1.0 - resp, deficit_err=a_err, chi2_add=np.inf, chi2_mult=0.0)
            else:
                rw.update(sign=1, excess_dn_s=dx, excess_err=d_err, chi2_add=0.0, chi2_mult=np.inf)
            out = [rw]
    return out


def _level_intervals(runs, *, r, s, z, p, threshold, row) -> list[dict]:
    """Intervals from the level runs: telegraph pieces merged, each reaching ``threshold``.

    Consecutive excess runs are one interval when the quiet stretch between them is probable
    for this pixel's switching (a stretch of g quiet exposures has probability (1 - p_switch)^g;
    below ``telegraph_gap_probability`` it is a recovery). p_switch is the pixel's own: the
    fraction of consecutive exposure pairs whose state differs, from the first to the last
    excess run, leaving out the stretch being tested (a stretch would otherwise make itself
    probable) and pairs whose states are not resolved (2 state_sigma). A piece joins only if the
    merged span is at least as significant as its strongest piece (a weak noise run far from a
    defect dilutes it and is not part of it), or if both sides are high states of one defect:
    on average above state_sigma (or switching by themselves), with high-state levels (DN/s)
    within telegraph_level_ratio of each other (clipping makes a strong telegraph's sparse
    high states count at most clip_sigma each, so its quiet stretches dilute it although they
    are part of its switching). ``r`` is the residual against the normal state.
    """
    if not runs:
        return []

    def passes(rw):
        return rw["significance"] >= threshold and rw["stop"] - rw["start"] >= p.min_bad_exposures

    def is_telegraph(rw):
        return classify.classify(pd.DataFrame([rw]), p.classes).iloc[0] == "TELEGRAPH"

    def idx_of(pieces):
        return np.concatenate([np.arange(u.start, u.stop) for u in pieces])

    def high_level(pieces):
        idx = idx_of(pieces)
        hi = idx[z[idx] > p.state_sigma]
        return float(np.mean(r[hi if hi.size else idx]))

    def in_high_state(pieces):
        if float(np.mean(z[idx_of(pieces)])) >= p.state_sigma:
            return True
        return is_telegraph(row(pieces[0].start, pieces[-1].stop, None, 0.0, 0.0))

    pos = [u for u in runs if u.sign > 0]
    flips = counts = None
    if len(pos) > 1 and p.telegraph_gap_probability > 0:
        flips, counts = switch_counts(r, s, high_level(pos), 2 * p.state_sigma)
        a, b = pos[0].start, pos[-1].stop - 1
        f_all, c_all = int(flips[a:b].sum()), int(counts[a:b].sum())

    def p_switch_without(i, j):
        lo, hi = i - 1, j
        c = c_all - int(counts[lo:hi].sum())
        return (f_all - int(flips[lo:hi].sum())) / c if c > 0 else 0.0

    groups = [[runs[0]]]
    switching = [False]  # a group holding high-state runs joined across a probable quiet stretch
    for u in runs[1:]:
        g = groups[-1]
        if u.sign > 0 and g[-1].sign > 0 and flips is not None:
            gap = u.start - g[-1].stop
            ps = p_switch_without(g[-1].stop, u.start)
            if ps > 0 and (1.0 - ps) ** gap >= p.telegraph_gap_probability:
                span = z[g[0].start:u.stop]
                stronger = abs(span.sum()) / np.sqrt(span.size) >= max(v.significance for v in g + [u])
                same = False
                if not stronger:
                    lu, lg = high_level([u]), high_level(g)
                    same = (lu > 0 and lg > 0 and min(lu, lg) >= p.telegraph_level_ratio * max(lu, lg)
                            and in_high_state([u]) and in_high_state(g))
                if stronger or same:
                    g.append(u)
                    switching[-1] |= same
                    continue
        groups.append([u])
        switching.append(False)
    out = []
    for g, sw in zip(groups, switching):
        if len(g) > 1:
            rw = row(g[0].start, g[-1].stop, None, g[0].onset_significance, g[-1].recovery_significance)
            if sw:
                # high states at one level with quiet stretches between them that the pixel's
                # switching makes probable: a telegraph pixel whatever its duty cycle, and a
                # defect when one of its high-state runs is (the quiet stretches dilute the
                # span's mean, not the evidence)
                rw["switching"] = True
                rw["significance"] = max(rw["significance"], max(v.significance for v in g))
            if passes(rw) and is_telegraph(rw):
                out.append(rw)
                continue
        for u in g:
            if u.significance >= threshold and u.stop - u.start >= p.min_bad_exposures:
                out.append(row(u.start, u.stop, u.significance, u.onset_significance, u.recovery_significance))
    return out
