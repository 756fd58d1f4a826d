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
an additive dark excess above ``static_warm_dn_s``), significantly, is bad in every exposure.
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

import functools
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.special import log_ndtr

from . import baseline
from . import changepoints as cp
from . import classify
from . import variance
from .afterglow import decays_within, explained_by_hit
from .residuals import RESPONSE_RANGE, running_median
from .temporal import clipped_z, weighted_level

#: most passes of "fit the normal state, find the runs against it"
MAX_PASSES = 4


class Thresholds(NamedTuple):
    """Significances (sigma) an interval must reach, from one false-alarm rate per pixel."""

    level: float  #: a run whose mean differs from the normal state (two-sided)
    variance: float  #: a run of excess scatter (one-sided)
    static: float  #: a normal state beyond a physical limit (one-sided)
    alpha: float = float("nan")  #: the false-alarm rate per pixel each screen is given
    #: a rise and a fall beyond this (sigma) within a few exposures are the pixel's own
    #: (:func:`lrscube.detection.variance.swing_level`, measured per tile; inf: never)
    swing: float = float("inf")
    #: two falls beyond this (sigma) within a few exposures are the pixel's own
    #: (:func:`lrscube.detection.variance.fall_level`, measured per tile; inf: never)
    fall: float = float("inf")


def baseline_state(r, s, sky, use, prior=None) -> tuple[float, float]:
    """Robust (a, d) of one pixel over the exposures ``use``, drawn from the population
    ``prior = (ma, va, md, vd)`` (:func:`lrscube.detection.baseline.neighbour_prior`; none: free)."""
    a, d = baseline.fit_one(r, s, sky, use, prior, iterations=2)[:2]
    if not np.isfinite(a):
        a = float(prior[0]) if prior is not None else 0.0
    if not np.isfinite(d):
        d = float(prior[2]) if prior is not None else 0.0
    return a, d


def state(r, s, sky, use) -> baseline.State:
    """Robust (a, d) of r = a * sky + d over the exposures ``use`` (scalars; no leverages)."""
    a, d, a_err, d_err, n = baseline.fit_one(r, s, sky, use)
    return baseline.State(a, d, a_err, d_err, None, n)


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


def step_models(r, s, sky, normal, run, which=("add", "mult")) -> dict:
    """Two descriptions of a run against the normal exposures, fitted jointly over both:

    * additive (``"add"``): ``r = a * sky + d_normal`` (normal) ``+ d_run`` (run), one response:
      the run differs by a dark current ``d_run - d_normal`` (DN/s);
    * multiplicative (``"mult"``): ``r = a_normal * sky`` (normal), ``a_run * sky`` (run), no
      dark current: the run differs by a response ``a_run - a_normal``.

    Returns the steps, their standard errors and each model's chi^2 (of the models in
    ``which``; the others NaN, with infinite errors and chi^2).
    """
    use = normal | run
    w = 1.0 / s[use] ** 2
    y = r[use]
    k = sky[use]
    isr = run[use].astype(float)
    out = {"chi2_add": np.inf, "chi2_mult": np.inf, "step_add": np.nan, "step_add_err": np.inf,
           "step_mult": np.nan, "step_mult_err": np.inf}
    if "add" in which:
        c_add, v_add, out["chi2_add"] = _wls(np.column_stack([k, 1.0 - isr, isr]), y, w)
        if c_add is not None:
            out["step_add"] = float(c_add[2] - c_add[1])
            out["step_add_err"] = float(np.sqrt(max(v_add[1, 1] + v_add[2, 2] - 2 * v_add[1, 2], 0.0)))
    if "mult" in which:
        c_mul, v_mul, out["chi2_mult"] = _wls(np.column_stack([k * (1.0 - isr), k * isr]), y, w)
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
                  min_significance: float, min_deficit: float = 0.0, exclude=None, lit: bool = True) -> np.ndarray:
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
    Where the sky-proportional description is preferred, a run more responsive than the
    stretches is their normal state only if they lack ``min_deficit`` of its response (a
    ``lit`` pixel's: outside the light the "response" is the fraction of the sky around that
    the pixel's scattered light is, and any state of it may be normal).
    """
    n = r.size
    ex = np.zeros(n, bool) if exclude is None else np.asarray(exclude, bool)
    segs = segments(runs, n)
    gaps = _between_runs(segs, n) & ~ex
    if not runs:
        return ~ex if (~ex).sum() >= 2 else np.ones(n, bool)
    level, err, response = _preferred_level(segment_levels(r, s, sky, segs), model_preference_chi2)
    eligible = _eligible_segments(segs, runs, ex, min_length, min_significance)
    evidence = max(min_sigma, min_significance)
    keep = None
    if level is not None and eligible:
        keep = _least_bad_segment(segs, level, err, eligible, gaps, ex, min_sigma, evidence,
                                  min_loss=min_deficit if response and lit else 0.0)
    if keep is None and level is None and eligible and gaps.sum() >= 2 and min_deficit > 0:
        keep = _lower_dark_run(r, s, sky, segs, runs, eligible, gaps, evidence, min_deficit)
        keep = None if keep is None else keep & ~ex
    if keep is None and gaps.sum() >= 3:
        keep = _steady_run(r, s, sky, segs, eligible, gaps, min_sigma)
        keep = None if keep is None else keep & ~ex
    if keep is None and gaps.sum() >= 2:
        keep = gaps
    if keep is None and len(segs) > 1:
        keep = _majority_state(r, s, segs, ex, min_sigma)
    if keep is not None:
        return keep
    return ~ex if (~ex).sum() >= 2 else np.ones(n, bool)


def _between_runs(segs, n: int) -> np.ndarray:
    """(n,) bool: the exposures in the stretches between the runs (the current normal state's
    candidates before any run is judged better)."""
    gaps = np.zeros(n, bool)
    for i0, i1, is_run in segs:
        if not is_run:
            gaps[i0:i1] = True
    return gaps


def _preferred_level(m: dict, model_preference_chi2: float):
    """(level, err, response) per segment, lower is better, from the description the segments
    prefer by ``model_preference_chi2`` (a dark level, or minus a response: ``response`` True),
    errors inflated by the scatter it leaves; (None, None, False) where neither is preferred (a
    switching pixel fits neither)."""
    over = max(1.0, min(m["chi2_add"], m["chi2_mult"]) / m["dof"])
    if "c" in m and (m["chi2_mult"] - m["chi2_add"]) / over >= model_preference_chi2:
        return m["c"], m["c_err"] * np.sqrt(over), False
    if "a" in m and (m["chi2_add"] - m["chi2_mult"]) / over >= model_preference_chi2:
        return -m["a"], m["a_err"] * np.sqrt(over), True
    return None, None, False


def _eligible_segments(segs, runs, ex, min_length: int, min_significance: float) -> list[int]:
    """Segments that can be a state: long enough, mostly not excluded, and a run only if it is
    a change by itself (a few exposures in the tail of the noise are not a state)."""
    by_run = {(u.start, u.stop): u for u in runs}
    return [j for j, (i0, i1, is_run) in enumerate(segs)
            if i1 - i0 >= max(2, min_length) and ex[i0:i1].mean() < 0.5
            and (not is_run or by_run[(i0, i1)].significance >= min_significance)]


def _least_bad_segment(segs, level, err, eligible, gaps, ex, min_sigma: float, evidence: float,
                       min_loss: float = 0.0):
    """Where one description is preferred: a run clearly better than the stretches' level (by
    ``evidence`` standard errors) with every segment at its level; else the stretches with every
    run not worse than they are by a defect's evidence. None: fewer than two exposures.
    ``min_loss`` (the levels are minus responses): a run is better only if the stretches' response
    is below its own by at least that fraction (a loss of response that can be a defect: a
    response does not rise on its own, and a few percent less is what a flat field does)."""
    # the level of the stretches between the runs, as one state
    if gaps.sum() >= 2:
        ref = float(np.average([level[j] for j, sg in enumerate(segs) if not sg[2]],
                               weights=[sg[1] - sg[0] for sg in segs if not sg[2]]))
    else:
        ref = np.inf

    def rise(k) -> bool:  # clearly above the stretches, by a response gain no loss of which is a defect
        return (min_loss > 0 and np.isfinite(ref) and ref - level[k] >= evidence * err[k]
                and 1.0 - (1.0 - ref) / (1.0 - level[k]) < min_loss)

    j = min(eligible, key=lambda j: level[j])
    if segs[j][2] and ref - level[j] >= evidence * err[j] and not rise(j):
        return np.array([abs(level[k] - level[j]) <= min_sigma * max(err[k], err[j]) for k in range(len(segs))
                         for _ in range(segs[k][1] - segs[k][0])]) & ~ex
    # the stretches are (as good as) the best state: with them, every run that is not worse than
    # they are by a defect's evidence, nor a rise above them
    keep = gaps.copy()
    for k, (i0, i1, is_run) in enumerate(segs):
        if is_run and level[k] - ref < evidence * err[k] and not rise(k):
            keep[i0:i1] = True
    keep &= ~ex
    return keep if keep.sum() >= 2 else None


def _lower_dark_run(r, s, sky, segs, runs, eligible, gaps, evidence: float, min_deficit: float):
    """Where neither description is preferred: the most significant run below the stretches by
    less than ``min_deficit`` of their response (not a loss of response, so a lower dark level,
    the stretches being a warm pixel's) by ``evidence`` standard errors; None if there is none."""
    by_run = {(u.start, u.stop): u for u in runs}
    best, best_sig = None, 0.0
    for j in eligible:
        i0, i1, is_run = segs[j]
        if not is_run or by_run[(i0, i1)].sign > 0:
            continue
        run = np.zeros(r.size, bool)
        run[i0:i1] = True
        st = step_models(r, s, sky, gaps, run)
        a_gap = state(r, s, sky, gaps).a
        deficit = -st["step_mult"] / max(1.0 + a_gap, 0.1)
        sig = -st["step_add"] / st["step_add_err"] if st["step_add_err"] > 0 else 0.0
        if deficit < min_deficit and sig >= evidence and sig > best_sig:
            best, best_sig = run, sig
    return best


def _steady_run(r, s, sky, segs, eligible, gaps, min_sigma: float):
    """A steady run, no worse in dark level or response, beside stretches that switch or scatter
    far beyond their noise (a pixel telegraph or noisy from early on); None if there is none."""
    q_gap = scatter_about_state(r, s, sky, gaps)
    if not q_gap >= STEADY_VARIANCE:  # (NaN: no evidence of switching)
        return None
    for j in eligible:
        i0, i1, is_run = segs[j]
        if not is_run:
            continue
        run = np.zeros(r.size, bool)
        run[i0:i1] = True
        st = step_models(r, s, sky, gaps, run)
        no_worse = (st["step_add"] <= min_sigma * st["step_add_err"]
                    and st["step_mult"] >= -min_sigma * st["step_mult_err"])
        if no_worse and scatter_about_state(r, s, sky, run) * CLEAN_RATIO <= q_gap:
            return run
    return None


def _majority_state(r, s, segs, ex, min_sigma: float):
    """The runs cover the series (the first fit was a mixture of states) and neither description
    says which state is better: the state of most exposures is normal (the segments whose mean
    residuals agree within ``min_sigma`` standard errors, pooled; each error inflated by the
    segment's own scatter about its mean). None: fewer than two exposures."""
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
    return keep if keep.sum() >= 2 else None


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
    g = _scatter_loglik(q, m1, c, ratio)
    for _ in range(2):
        i = lo + int(np.argmax(g[j] - g[lo:j]))
        j = i + 1 + int(np.argmax(g[i + 1:hi + 1] - g[i]))
    n = q.size
    if hi == n and _no_recovery(g, j, boundary_sigma):
        j = n
    return i, j


def _scatter_loglik(q, m1, c, ratio) -> np.ndarray:
    """Cumulative log-likelihood of "scatter ``ratio`` times the noise" against "normal", one
    term per exposure (:func:`scatter_ends`), with a leading 0: ``g[j] - g[i]`` is [i, j)'s.

    An exposure at its clip (``q`` = ``c^2``) says only that ``|z| >= c``: its term is the
    ratio of the two tail probabilities, not of the densities at the clip (which would make a
    pixel scattering far beyond the clip in every exposure less likely noisy the noisier it is)."""
    k = float(min(max(ratio, 1.0 + 1e-3), 1e3))
    c = np.asarray(c, float)
    g1 = np.array([baseline.gaussian_clipped_moments(1.0, float(cc))[0] for cc in np.unique(c)])
    gmap = dict(zip(np.unique(c).tolist(), g1.tolist()))
    gs = np.array([gmap[float(cc)] for cc in c])
    qn = q * gs / np.maximum(m1, 1e-6)
    ll = -np.log(k) + 0.5 * qn * (1.0 - 1.0 / (k * k))
    at_clip = q >= c * c
    if at_clip.any():
        ll = np.where(at_clip, log_ndtr(-c / k) - log_ndtr(-c), ll)
    return np.concatenate([[0.0], np.cumsum(ll)])


def _no_recovery(g, j: int, boundary_sigma: float) -> bool:
    """The stretch from ``j`` to the end of the series does not favour "normal" by
    ``boundary_sigma^2 / 2`` (``g`` from :func:`_scatter_loglik`): a few quiet exposures of a
    noisy pixel at the end are not a recovery."""
    n = g.size - 1
    return bool(j < n and g[n] - g[j] > -0.5 * boundary_sigma ** 2)


class _Pixel(NamedTuple):
    """One pixel's series and what each step of :func:`pixel_intervals` judges them by."""

    r: np.ndarray  #: residual against the local sky (DN/s)
    s: np.ndarray  #: its calibrated noise (DN/s)
    sky: np.ndarray  #: the local sky (DN/s)
    cap: np.ndarray  #: per exposure, the clip of the normalised residual (sigma)
    m1: np.ndarray  #: per exposure, the measured null moments of the clipped squares ...
    m2: np.ndarray
    vc: np.ndarray  #: ... and their clip (sigma)
    wm1: np.ndarray  #: the null moments of the precision-weighted variance statistic (clip ``cap``)
    wm2: np.ndarray
    excess: np.ndarray  #: the shape of an additive change in units of the noise (1 / s) ...
    deficit: np.ndarray  #: ... and of a change of response (sky / s)
    p: object  #: :class:`lrscube.detection.detection_params.DetectionParams`
    thresholds: Thresholds
    variance_scale: float
    variance_line: float
    log_prior: np.ndarray | None = None  #: of a change before each exposure (:func:`~lrscube.detection.changepoints.boundary_log_prior`)
    #: the pixel's excursions are its own (an exposure beyond the event threshold whose
    #: integrations scatter beyond chance): a span's largest term is left out once
    own: bool = False

    @property
    def n(self) -> int:
        return self.r.size


def _pixel(r, s, sky, p, thresholds, clip, vnull, variance_scale, variance_line, hours=None, own=False) -> _Pixel:
    """The series with their clips, null moments (default: Gaussian, ``variance_clip_sigma``) and
    the shapes of a level change, as :func:`pixel_intervals` takes them."""
    n = r.size
    cap = np.broadcast_to(np.asarray(p.clip_sigma if clip is None else clip, float), (n,))
    if vnull is None:
        c = float(p.variance_clip_sigma)
        g1, g2 = baseline.gaussian_clipped_moments(1.0, c)
        vnull = (np.full(n, g1), np.full(n, g2), np.full(n, c))
    m1, m2, vc = (np.broadcast_to(np.asarray(v, float), (n,)) for v in vnull)
    with np.errstate(divide="ignore", invalid="ignore"):
        excess = 1.0 / s
        deficit = np.where(sky > 0, sky * excess, excess)
    g1, g2 = baseline.gaussian_clipped_moments(1.0, float(p.clip_sigma))
    wm1 = np.where(cap == vc, m1, g1)  # JUMP_DET exposures: clipped like the scatter, measured null
    wm2 = np.where(cap == vc, m2, g2)
    return _Pixel(r, s, sky, cap, m1, m2, vc, wm1, wm2, excess, deficit, p, thresholds,
                  variance_scale, variance_line, None if hours is None else cp.boundary_log_prior(hours), bool(own))


def pixel_intervals(r, s, sky, params, thresholds: Thresholds, clip=None, vnull=None, prior=None,
                    variance_scale: float = 1.0, variance_line: float = 1.0, lit: bool = True, gap: bool = False,
                    hours=None, line_response: float = 1.0, hits=None, own: bool = False) -> list[dict]:
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
    response is not judged against the physical limit (only its dark level is); ``gap`` True:
    it is in a narrow gap between slices and its ``sky`` is the gap's own light
    (:func:`lrscube.detection.residuals.gap_pixels`), not the sky around. ``hours``: the
    exposures' mid-times (hours); with them, a run of excess that decays within
    ``afterglow_max_hours`` is a latent and not reported (:mod:`lrscube.detection.afterglow`);
    ``hits``: the mid-times (hours) of the pixel's JUMP_DET exposures, those left out of the
    series included: a run that holds one and shows no excess of its own outside those hours
    is a latent too.
    ``own``: the pixel's excursions are its own, not cosmic rays (an exposure beyond the event
    threshold whose integrations scatter beyond chance, :func:`lrscube.detection.detect.own_excursions`).
    ``line_response``: the response the pixel's line across the dispersion shares
    (:func:`lrscube.detection.baseline.line_response`, at most 1); the physical limit on the
    pixel's response is relative to it.
    Returns evidence dicts with ``start``/``stop`` indices into the given series.

    The steps: the normal state and the level runs against it (:func:`_normal_state`), the
    spans of excess scatter about those levels (:func:`_scatter_spans`), the level intervals
    (:func:`_level_intervals`) merged with the noisy ones (:func:`_merge_noisy`), latents left out
    (:func:`_without_latents`), and the normal state against the physical limits, which makes
    the pixel bad throughout (:func:`_static_interval`).
    """
    p = params
    r = np.asarray(r, float)
    s = np.asarray(s, float)
    sky = np.asarray(sky, float)
    n = r.size
    if n < p.min_bad_exposures:
        return []
    px = _pixel(r, s, sky, p, thresholds, clip, vnull, variance_scale, variance_line, hours, own)
    h = None if hours is None or p.afterglow_max_hours <= 0 else np.asarray(hours, float)
    normal, a, e, z, runs = _normal_state(px, prior, lit, gap, None if h is None else (h, hits))
    q, noisy_spans = _scatter_spans(px, e, z, runs)
    row = functools.partial(_row, px, _Against(a, e, z, q, (1.0 + a) * sky))
    out = _level_intervals(runs, r=e, s=s, z=z, p=p, threshold=thresholds.level, row=row)
    out = _merge_noisy(out, noisy_spans, row, n)
    if h is not None:
        out = _without_latents(out, e, s, h, p, hits, thresholds.level)
    if not lit:
        out = _outside_light(out, a, p, gap)
    static = _static_interval(px, normal, prior, lit, line_response, row)
    return out if static is None else [static]


def _outside_light(out: list, a: float, p, gap: bool = False) -> list:
    """The rows of a pixel outside the light (an image slicer's gap), whose baseline's ``a`` is
    the fraction of the sky around that its scattered light is: a loss is measured against that
    light (the row's ``deficit`` was against the sky around, ``1 + a`` of it), and only the loss
    of (nearly) all of it, DEAD's ``max_response`` left within ``changepoint_sigma`` of the
    loss's error, is a defect; the model of that light lets it change by a third between visits.
    Excesses, excess scatter and static rows stay.
    ``gap``: the pixel's sky is its narrow gap's own light, so the deficit is already against
    the light the pixel sees (``1 + a`` of its gap's)."""
    keep, max_left = [], float(p.classes["DEAD"]["max_response"])
    for w in out:
        if w["sign"] < 0 and not w.get("noisy") and not w.get("static"):
            if gap:
                own = 1.0
            else:
                own = (1.0 + a) / a if a > 0 else float("nan")
            w = dict(w, deficit=w["deficit"] * own, deficit_err=w["deficit_err"] * own)
            if not 1.0 - w["deficit"] <= max_left + p.changepoint_sigma * w["deficit_err"]:  # (NaN: no light)
                continue
        keep.append(w)
    return keep


def companion_interval(r, s, sky, params, start: int, stop: int, sign: int, threshold: float, clip=None,
                       vnull=None, prior=None, exclude=None) -> dict | None:
    """The evidence dict of exposures ``[start, stop)`` of a pixel beside a defect with that
    interval (:mod:`lrscube.detection.companions`), or None: whether the pixel changed over the
    same exposures, in the same direction (``sign`` +1: an additive excess, -1: a loss of
    response), against its state in the others.

    No run is searched: the interval is given, so the test is one comparison, not a scan.
    Its significance is the smaller of two: the weighted step of the description ``sign``
    names (:func:`step_models`, the baseline's own uncertainty in its error) and the clipped
    residual against the baseline fitted outside, stacked over the interval, its variance
    grown by the baseline's share (``1 + n_in / n_out``: robust to an exposure far beyond its
    noise, which the weighted step is not). ``exclude``: exposures outside the interval that are
    not the pixel's normal state (its own defects). Arguments as :func:`pixel_intervals` takes them.
    """
    p = params
    r = np.asarray(r, float)
    s = np.asarray(s, float)
    sky = np.asarray(sky, float)
    n = r.size
    run = np.zeros(n, bool)
    run[start:stop] = True
    normal = ~run if exclude is None else ~run & ~np.asarray(exclude, bool)
    n_in, n_out = int(run.sum()), int(normal.sum())
    if n_in < p.min_bad_exposures or n_out < 2:
        return None
    kind = "add" if sign > 0 else "mult"
    m = step_models(r, s, sky, normal, run, which=(kind,))
    with np.errstate(invalid="ignore", divide="ignore"):
        weighted = sign * m["step_" + kind] / m["step_" + kind + "_err"]
    if not weighted >= threshold:  # most neighbours: the rest is not needed
        return None
    px = _pixel(r, s, sky, p, None, clip, vnull, 1.0, 1.0)
    a, d = baseline_state(r, s, sky, normal, prior)
    e = r - a * sky - d
    z = clipped_z(e, s, px.cap)
    robust = sign * float(np.sum(z[run])) / np.sqrt(n_in * (1.0 + n_in / n_out))
    sig = float(min(weighted, robust))
    if not sig >= threshold:
        return None
    q = np.minimum((e * px.excess) ** 2, px.vc * px.vc)
    row = _row(px, _Against(a, e, z, q, (1.0 + a) * sky), start, stop, sig, float("nan"), float("nan"))
    row["sign"] = int(sign)
    return row


def _level_runs(px: _Pixel, a, d=0.0):
    """The residual ``e`` against the state (a, d), its clipped normalised form ``z`` and the
    runs of exposures whose level differs from it (:func:`lrscube.detection.changepoints.find_runs`)."""
    p = px.p
    e = px.r - a * px.sky - d
    z = clipped_z(e, px.s, px.cap)
    return e, z, cp.find_runs(z, min_sigma=p.changepoint_sigma, min_length=1, boundary_sigma=p.boundary_sigma,
                              shapes=(px.excess, px.deficit), cap=px.cap, raw=e * px.excess, log_prior=px.log_prior)


def _normal_state(px: _Pixel, prior, lit: bool = True, gap: bool = False, hits=None):
    """(normal, a, e, z, runs): the exposures of the pixel's normal state, its response ``a`` and
    the level runs against it (:func:`_level_runs`).

    First guess: the majority state, with its own response and dark level (a pixel hot for most
    of the series is not described by a response alone), and the spans of excess scatter about
    a running median, which belong to no level state. Then the least-bad of the states the runs
    against it show (:func:`choose_normal`), refitted until it does not change; in a cycle, the
    largest of its states is normal. ``lit``: the pixel is inside the light
    (:func:`choose_normal`); ``gap``: in a narrow gap, its sky its gap's light (:func:`_step_state`).
    ``hits``: (hours, JUMP_DET hours) as :func:`pixel_intervals` takes them; a first-guess span
    that a hit's charge explains (:func:`_scatter_of_hit`) stays in the normal state: a hit that
    leaves a pixel raised over its visit makes the running median of that visit scatter, and
    left out with the span, the normal state would be the few exposures outside it."""
    r, s, sky, p, n = px.r, px.s, px.sky, px.p, px.n
    normal = np.ones(n, bool)
    st0 = state(r, s, sky, normal)
    e, z, runs = _level_runs(px, st0.a, st0.d)
    _, spans0 = _scatter_spans(px, e, z, runs, local=True)
    if hits is not None:
        spans0 = [sp for sp in spans0 if not _scatter_of_hit(e, px.s, *hits, sp[0], sp[1], p, px.thresholds.level)]
    noisy0 = np.zeros(n, bool)
    for i, j, _ in spans0:
        noisy0[i:j] = True
    a, d = st0.a, st0.d
    seen = []
    for k in range(MAX_PASSES + 1):
        new = choose_normal(r, s, sky, runs, min_sigma=p.changepoint_sigma, model_preference_chi2=p.boundary_sigma ** 2,
                            min_length=p.min_bad_exposures, min_significance=px.thresholds.level,
                            min_deficit=p.classes["LOW_QE"]["min_deficit"], exclude=noisy0, lit=lit)
        if not (new == normal).all():
            if _below_population(px, new, normal, prior):
                new = normal
            elif _above_population(px, new, normal, prior):
                new = normal & ~new  # the rest, at the neighbours' level, is the normal state
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
        e, z, runs = _level_runs(px, a, d)
        if len(seen) > MAX_PASSES + 1:
            break
    one = _step_state(px, ~normal | noisy0, None if lit or gap else prior)
    if one is not None and _below_population(px, one, normal & ~noisy0, prior):
        one = None  # the step's lower side is a dip below the neighbours, the higher at them
    if one is not None:
        normal = one
        a, d = baseline_state(r, s, sky, normal, prior)
        e, z, runs = _level_runs(px, a, d)
    at = _at_population(px, normal, runs, prior)
    if at is not None:
        normal = at
        a, d = baseline_state(r, s, sky, normal, prior)
        e, z, runs = _level_runs(px, a, d)
    return normal, a, e, z, runs


def _scatter_of_hit(e, s, h, hits, a: int, b: int, p, level: float) -> bool:
    """The span [a, b) of excess scatter holds a JUMP_DET hit (``hits``, hours; ``h`` the
    exposures' hours) and its exposures outside the hit's hours scatter by their noise about the
    residual ``e``: the hit's charge (:func:`explained_by_hit`, judged by its chi^2 tail below
    ``level``). A span of scatter is left out as a latent by this rule only."""
    return hits is not None and explained_by_hit(e, s, h, a, b, hits, max_hours=p.afterglow_max_hours,
                                                 min_sigma=level, scatter_clip=p.clip_sigma)


def _step_state(px: _Pixel, exclude, outside=None):
    """The better side of a significant single step inside the exposures not in ``exclude``
    (the normal state), or None: a normal state is one state.

    The states the runs show are judged on their levels, each with an error inflated by the
    scatter its description leaves; a pixel that changed under a sky that follows time even
    loosely leaves a state of all its exposures whose fitted response took part of the change,
    so neither side's run reaches the threshold, or the run's level is not "worse by a defect's
    evidence" than the rest, and the change is absorbed (the residual about the wrong state
    then scatters like a noisy pixel's over the whole series). Here the normal exposures get
    one step, shared response, in the dark level (``d`` -> ``d + delta`` from the k-th on) or in
    the response, for every k leaving ``min_bad_exposures`` on each side (closed form from
    running sums); where the best reaches the level threshold (its chi^2 gain, in units of the
    scatter the step model leaves, at least the threshold squared), the side with the lower dark
    level (or the higher response; not for a change of response too small to be a defect that a
    step of the dark level describes as well, :func:`_small_response_step`) is the normal state,
    if it is one state (scatters about its
    own (a, d) by at most :data:`STATIC_MAX_SCATTER`: a noisy stretch's scatter fits a step too).

    ``outside``: the neighbours' population (``prior``) of a pixel outside the light (not of a
    narrow gap, whose sky is its own light), whose whole level is the light it sees: what its
    neighbours share above zero is a glow (the rate is dark-subtracted), so a step of its dark
    level down is as much a loss (DEAD) as a step up is an excess, and of the two sides of such
    a step the one nearer the population's dark level is its normal state. A dead pixel between
    MIRIFUSHORT's channels, seen dead in its last 5 exposures 0.03 DN/s below its neighbours,
    was otherwise normal there and WARM in its 35 healthy exposures."""
    p, thr = px.p, px.thresholds.level
    L = int(max(p.min_bad_exposures, 2))
    r, s, sky = px.r, px.s, px.sky
    idx = np.flatnonzero(~exclude & np.isfinite(r) & np.isfinite(s) & (s > 0) & np.isfinite(sky))
    m = idx.size
    if m < 2 * L + 1:
        return None
    w, x, y = 1.0 / s[idx] ** 2, sky[idx].astype(float), r[idx].astype(float)

    def suffix(v):  # sums over t >= k for k = 0..m-1
        return np.cumsum(v[::-1])[::-1]

    Sw, Sx, Sxx, Sy, Sxy, Syy = (float(np.sum(v)) for v in (w, w * x, w * x * x, w * y, w * x * y, w * y * y))
    A1 = np.array([[Sxx, Sx], [Sx, Sw]])
    if abs(np.linalg.det(A1)) <= 1e-12 * np.abs(A1).max() ** 2:
        return None
    b1 = np.array([Sxy, Sy])
    chi1 = Syy - b1 @ np.linalg.solve(A1, b1)
    ks = np.arange(L, m - L + 1)
    Tw, Tx, Txx, Ty, Txy = (suffix(v)[ks] for v in (w, w * x, w * x * x, w * y, w * x * y))
    fits = {}
    for kind, (Tu, Txu, Tuu, Tyu) in (("add", (Tw, Tx, Tw, Ty)), ("mult", (Tx, Txx, Txx, Txy))):
        A = np.empty((ks.size, 3, 3))
        A[:, 0, 0], A[:, 0, 1], A[:, 1, 0], A[:, 1, 1] = Sxx, Sx, Sx, Sw
        A[:, 0, 2] = A[:, 2, 0] = Txu
        A[:, 1, 2] = A[:, 2, 1] = Tu
        A[:, 2, 2] = Tuu
        b = np.stack([np.full(ks.size, Sxy), np.full(ks.size, Sy), Tyu], axis=1)
        good = np.abs(np.linalg.det(A)) > 1e-12 * np.abs(A).max(axis=(1, 2)) ** 3
        if not good.any():
            continue
        beta = np.full(b.shape, np.nan)
        beta[good] = np.linalg.solve(A[good], b[good][..., None])[..., 0]
        chi = np.where(good, Syy - np.einsum("ki,ki->k", np.nan_to_num(beta), b), np.inf)
        j = int(np.argmin(chi))
        fits[kind] = (float(chi[j]), kind, int(ks[j]), float(beta[j, 2]), float(beta[j, 0]))
    if not fits:
        return None
    chi2, kind, k, delta, a0 = min(fits.values())
    unit = max(1.0, chi2 / (m - 3))
    gain = (chi1 - chi2) / unit
    if not gain >= thr * thr:
        return None
    if kind == "mult" and "add" in fits and _small_response_step(delta, a0, fits["add"][0] - chi2, unit, p):
        chi2, kind, k, delta, a0 = fits["add"]
    low_first = delta > 0 if kind == "add" else delta < 0
    if outside is not None and kind == "add":
        first, later = np.zeros(px.n, bool), np.zeros(px.n, bool)
        first[idx[:k]], later[idx[k:]] = True, True
        z_first, z_later = (abs(_population_z(px, v, outside)[0]) for v in (first, later))
        if np.isfinite(z_first) and np.isfinite(z_later):
            low_first = z_first < z_later
    keep = np.zeros(px.n, bool)
    keep[idx[:k] if low_first else idx[k:]] = True
    return keep if scatter_about_state(r, s, sky, keep) <= STATIC_MAX_SCATTER else None


def _small_response_step(delta: float, a: float, excess_chi2: float, unit: float, p) -> bool:
    """True when a step fitted best as a change of response is too small to be a defect (a
    fractional change below LOW_QE's ``min_deficit``, within the flat field's own variations)
    and a step of the dark level describes the exposures as well (its chi^2 within
    ``boundary_sigma`` squared, in units of the scatter the step leaves). Over a narrow range of
    sky the two are one description, and they name opposite sides normal: a rise of the dark
    level (a warm pixel's onset) leaves the earlier side normal, a rise of the response the
    later one, and the earlier side's loss of a few percent is then no defect at all. A pixel's
    dark current steps; its response does not move by a few percent on its own."""
    frac = abs(delta) / max(1.0 + a, 1e-6)
    return bool(frac < float(p.classes["LOW_QE"]["min_deficit"])
                and excess_chi2 <= float(p.boundary_sigma) ** 2 * unit)


def _population_z(px: _Pixel, m, prior) -> tuple[float, float]:
    """(dark, response): how far the exposures ``m`` lie from the neighbours' population
    (``prior`` = (ma, va, md, vd[, sk, vl]), :func:`lrscube.detection.baseline.neighbour_prior`), in
    standard errors that include its scatter (:func:`lrscube.detection.baseline.level_variance`):
    their dark level at the neighbours' response, and their response at the neighbours' dark level."""
    ma, va, md, vd = (float(v) for v in prior[:4])
    r, s, sky = px.r[m], px.s[m], px.sky[m]
    w = 1.0 / s ** 2
    W, Wss = float(np.sum(w)), float(np.sum(w * sky * sky))
    if not (W > 0 and Wss > 0 and np.isfinite(va) and np.isfinite(vd)):
        return float("nan"), float("nan")
    sk = float(np.sum(w * sky)) / W
    vlev = float(baseline.level_variance(prior, sk))  # the population's scatter of the level at that sky
    dz = _dark_rise(r, s, sky, ma, md) / np.sqrt(1.0 / W + vlev)
    az = (float(np.sum(w * sky * (r - md))) / Wss - ma) / np.sqrt(1.0 / Wss + vlev / max(sk * sk, 1e-12))
    return dz, az


def _at_population(px: _Pixel, normal, runs, prior):
    """The exposures of a run that is the normal state instead of ``normal``, or None.

    Normal pixels share their neighbours' dark level (rate files are dark-subtracted) and, within
    the flat field's scatter, their response: the population of :func:`baseline.neighbour_prior`.
    Where the state taken as normal lies above the population's dark level or below its response
    by ``changepoint_sigma`` (a loss of response of at least LOW_QE's ``min_deficit``) and a run
    that is a change by itself lies at the population, the run is the pixel's normal state and
    the rest its defect: a warm or low-QE pixel whose defect began early, seen in few exposures
    before it, where the state of most exposures would pass for normal (and a response fitted to
    both would make the defect's early exposures a deficit)."""
    if prior is None:
        return None
    p, k = px.p, px.p.changepoint_sigma
    min_deficit = float(p.classes["LOW_QE"]["min_deficit"])
    best = None
    for start, stop, sig in [(u.start, u.stop, u.significance) for u in runs] + _population_blocks(px, normal, prior):
        if stop - start < p.min_bad_exposures or sig < px.thresholds.level:
            continue
        run = np.zeros(px.n, bool)
        run[start:stop] = True
        rest = normal & ~run
        if rest.sum() < p.min_bad_exposures:
            continue
        dz_u, az_u = _population_z(px, run, prior)
        if not (abs(dz_u) < k and abs(az_u) < k):
            continue
        dz_n, az_n = _population_z(px, rest, prior)
        low = az_n <= -k and _deficit(px, rest, prior) >= min_deficit
        if (dz_n >= k or low) and (best is None or stop - start > best.sum()):
            best = run
    return best


def _deficit(px: _Pixel, m, prior) -> float:
    """The fraction of the neighbours' response the exposures ``m`` lack: the larger of their
    free fit's and their response at the neighbours' dark level (:func:`_level_at_neighbours`).
    Where the sky barely changes the free fit gives part of a loss of response to a dark level
    below the neighbours', which a dark current cannot be: a dead pixel under 0.03 DN/s of
    scattered light lost 1.0 of its response at the neighbours' dark level and 0.12 in the free fit."""
    one = 1.0 + float(prior[0])
    free = 1.0 - (1.0 + baseline_state(px.r, px.s, px.sky, m, prior)[0]) / one
    at_dark = 1.0 - (1.0 + _level_at_neighbours(px, m, prior)[0]) / one
    return float(np.nanmax([free, at_dark]))


def _population_blocks(px: _Pixel, normal, prior) -> list[tuple[int, int, float]]:
    """(start, stop, significance) of each stretch of consecutive exposures that each lie at the
    neighbours' population (within ``changepoint_sigma`` of their level at the exposure's sky, in
    the noise and the population's scatter); the significance of their clipped mean against the
    state of the rest of ``normal``. Against a state fitted to a defect that grew (a drift), the
    exposures before it and those of its rise are one run at the clip, so the runs do not show
    the normal stretch apart; against one fitted to all exposures of a pixel whose defect faded,
    the exposures before its onset lie only a little below it."""
    at = baseline.at_population(px.r, px.s, px.sky, prior, px.p.changepoint_sigma)
    if at.all() or not at.any():
        return []
    edges = np.flatnonzero(np.diff(np.r_[0, at.astype(np.int8), 0]))
    out = []
    for i, j in zip(edges[::2], edges[1::2]):
        rest = normal.copy()
        rest[i:j] = False
        if j - i < px.p.min_bad_exposures or rest.sum() < max(3, px.p.min_bad_exposures):
            continue
        a, d = baseline_state(px.r, px.s, px.sky, rest, prior)
        z = clipped_z(px.r[i:j] - a * px.sky[i:j] - d, px.s[i:j], px.cap[i:j])
        out.append((int(i), int(j), float(abs(z.sum()) / np.sqrt(j - i))))
    return out


def _below_population(px: _Pixel, new, normal, prior) -> bool:
    """True when the proposed normal state ``new`` is a dip below a normal one: the exposures of
    the current ``normal`` state not in ``new`` have a dark level like the neighbours' (within
    ``changepoint_sigma``), and ``new``, measured at their response, lies below it by
    ``changepoint_sigma``; or (the mirror of :func:`_above_population`) those exposures each
    lie at the neighbours' level and ``new``'s dark level, at the neighbours' response, lies
    ``changepoint_sigma`` below the population's and is no lower response (:func:`_a_response`:
    a pixel a few percent less responsive than its neighbours whose WARM excess later brings it
    to their level keeps its earlier exposures normal). A dark current does not fall below the
    normal one; such a dip is the sky estimate's (beside a latent image) or a noisy pixel's low
    excursions, not the state the rest is an excess over. The second test holds where the rest's
    own response and dark level are poorly separated (a sky that barely changes) and the
    population knows them better. A pixel warm from the start that recovers is not stopped: its
    warm stretch is above the neighbours'."""
    other = normal & ~new
    if prior is None or new.sum() < 2 or other.sum() < 3:
        return False
    k = px.p.changepoint_sigma
    if _rest_at_population(px, other, prior):
        dz, _ = _population_z(px, new, prior)
        if np.isfinite(dz) and dz < -k and not _a_response(px, new, prior, k, sign=-1):
            return True
    r, s, sky = px.r, px.s, px.sky
    st = state(r, s, sky, other)
    if st.a_err is None or not np.isfinite(st.d) or not np.isfinite(st.a):
        return False
    md, vd = float(prior[2]), float(prior[3])
    if abs(st.d - md) > k * np.sqrt(st.d_err ** 2 + vd):
        return False
    w = new / s ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        d_new = float(np.sum(w * (r - st.a * sky)) / np.sum(w))
        sky_new = float(np.sum(w * sky) / np.sum(w))
        err = np.sqrt(1.0 / np.sum(w) + (st.a_err * sky_new) ** 2 + st.d_err ** 2 + vd)
    z = (d_new - md) / err
    return bool(np.isfinite(z) and z < -k)


def _above_population(px: _Pixel, new, normal, prior) -> bool:
    """True when the proposed normal state ``new`` is a rise above a normal one (which the
    exposures of the current ``normal`` state not in ``new`` then are): those exposures each lie
    at the neighbours' level (all but a tenth of them within ``changepoint_sigma``,
    :func:`lrscube.detection.baseline.at_population`: a noisy stretch's mean may sit there, its
    exposures do not) and ``new``'s dark level lies more than ``changepoint_sigma`` above theirs
    (:func:`_population_z`). A raised run chosen for its higher
    response (where the sky-proportional description fits better) made every other exposure a
    loss of response: a normal pixel with a cosmic ray's afterglow over three exposures became
    LOW_QE throughout. A pixel low from the start that recovers is not stopped: its low stretch
    lies below the neighbours'."""
    other = normal & ~new
    if prior is None or new.sum() < 1 or other.sum() < 3:
        return False
    k = px.p.changepoint_sigma
    if not _rest_at_population(px, other, prior):
        return False
    dz, _ = _population_z(px, new, prior)
    if not (np.isfinite(dz) and dz > k):
        return False
    return not _a_response(px, new, prior, k)


def _rest_at_population(px: _Pixel, m, prior) -> bool:
    """All but a tenth of the exposures ``m`` lie at the neighbours' level (within
    ``changepoint_sigma``, :func:`lrscube.detection.baseline.at_population`): a noisy stretch's
    mean may sit there, its exposures do not."""
    pr = tuple(float(v) for v in prior)
    return bool(np.mean(baseline.at_population(px.r[m], px.s[m], px.sky[m], pr, px.p.changepoint_sigma)) >= 0.9)


def _a_response(px: _Pixel, m, prior, k: float, sign: int = 1) -> bool:
    """True when the exposures ``m``, which lie above (``sign`` -1: below) the neighbours at
    their response, are a response above (below) theirs, not a dark rise (fall): their own fit
    ``r = a sky + d`` separates the two (its ``d`` known to better than the rise over ``k``) and
    puts ``d`` at the neighbours' dark level (within ``k`` standard errors). A pixel a few percent
    more (or less) responsive than its neighbours is normal however significant (issue 14), and a
    WARM onset later in its series is a rise above *it*; a short raised run (a hit's afterglow)
    has no such fit and stays a rise."""
    ma, md, vd = float(prior[0]), float(prior[2]), float(prior[3])
    st = state(px.r, px.s, px.sky, m)
    if not (np.isfinite(st.d) and np.isfinite(st.d_err) and st.d_err > 0):
        return False
    rise = sign * _dark_rise(px.r[m], px.s[m], px.sky[m], ma, md)
    return bool(rise > k * st.d_err and abs(st.d - md) <= k * np.sqrt(st.d_err ** 2 + vd))


def _dark_rise(r, s, sky, ma: float, md: float) -> float:
    """The weighted dark level of exposures ``r, s, sky`` at the neighbours' response ``ma``, over
    their dark level ``md`` (DN/s)."""
    w = 1.0 / s ** 2
    return float(np.sum(w * (r - ma * sky))) / float(np.sum(w)) - md


def _scatter_spans(px: _Pixel, e, z, runs, local=False):
    """(q, spans): the clipped squares of the residual about the levels of the runs that are
    defects by themselves (a noisy pixel's excursions are its scatter), and the spans of excess
    scatter in them, each (start, stop, :class:`Scatter`). ``local``: about a running median of
    5 exposures instead (:func:`_about_running_median`), which follows any level change, found or
    not (a first look, before the normal state)."""
    if local:
        zr, levels = _about_running_median(px), []
    else:
        zr, levels = _about_level_runs(px, e, z, runs)
    q = np.minimum(zr * zr, px.vc * px.vc)
    spans = [sp for sp in _clipped_scatter_spans(px, q) if not _level_describes(px, e, sp[0], sp[1], levels)]
    # the exact weighted run too, in the first look as well: the clip-3 runs split a noisy span
    # wherever a few of its exposures lie near the running median, each piece then too short
    # for the threshold, and a noisy pixel's low excursions would pass for its normal state
    for w in _weighted_spans(px, zr, e, levels, falls=not local):
        if _no_recovery(_scatter_loglik(q, px.m1, px.vc, w[2].ratio), w[1], px.p.boundary_sigma):
            w = (w[0], px.n, w[2])  # as for the clip-3 runs (scatter_ends)
        over = [sp for sp in spans if sp[0] < w[1] and w[0] < sp[1]]
        if not over or w[2].sigma > max(sp[2].sigma for sp in over):
            spans = sorted([sp for sp in spans if sp not in over] + [w], key=lambda sp: sp[0])
    return q, spans


def _about_running_median(px: _Pixel) -> np.ndarray:
    """The residual less its running median of 5 exposures, in units of the noise (the median's
    own noise divided out): additive or as a fraction of the sky, whichever scatters less (a
    steady excess is steady in DN/s, a steady deficit as a fraction of the sky)."""
    r, sky, vc = px.r, px.sky, px.vc
    za = (r - running_median(r, 5, axis=0, min_count=1).astype(float)) * px.excess
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(sky > 0, r / sky, 0.0)
        zm = (f - running_median(f, 5, axis=0, min_count=1).astype(float)) * np.where(sky > 0, sky, 0.0) * px.excess
    qa, qm = np.minimum(za * za, vc * vc).sum(), np.minimum(zm * zm, vc * vc).sum()
    return (za if qa <= qm else zm) / LOCAL_MEDIAN_NOISE


def _about_level_runs(px: _Pixel, e, z, runs):
    """(zr, levels): the residual in units of the noise less the expected level of each run that
    is a defect by itself, and those runs as (start, stop, None)."""
    zu = e * px.excess
    zr = zu.copy()
    levels = []
    for u in runs:
        if u.stop - u.start < px.p.min_bad_exposures or u.significance < px.thresholds.level:
            continue
        levels.append((u.start, u.stop, None))
        mu = cp.expected_levels(z, u.start, u.stop, (px.excess, px.deficit), None, zu)
        if mu is not None:
            zr[u.start:u.stop] -= mu[u.start:u.stop]
    return zr, levels


def _clipped_scatter_spans(px: _Pixel, q) -> list:
    """Runs of excess scatter in the standardised clipped squares ``q`` that reach the variance
    threshold and ``noisy_rms_ratio``, their ends moved by likelihood (:func:`scatter_ends`)."""
    p, th, m1, m2, vc, s, n = px.p, px.thresholds, px.m1, px.m2, px.vc, px.s, px.n
    with np.errstate(divide="ignore", invalid="ignore"):
        y = (q - m1) / np.sqrt(np.maximum(m2 - m1 * m1, 1e-12))
    vruns = [u for u in cp.find_runs(y, min_sigma=p.changepoint_sigma, min_length=p.min_bad_exposures, split=False)
             if u.sign > 0]
    spans = []
    for k, u in enumerate(vruns):
        sl = slice(u.start, u.stop)
        sc = scatter(q[sl], m1[sl], m2[sl], float(np.median(vc[sl])), s[sl])
        if not (sc.sigma >= th.variance and sc.ratio >= p.noisy_rms_ratio):
            continue
        lo = vruns[k - 1].stop if k else 0
        hi = vruns[k + 1].start if k + 1 < len(vruns) else n
        i, j = scatter_ends(q, m1, vc, u.start, u.stop, lo, hi, sc.ratio, p.boundary_sigma)
        sl = slice(i, j)
        sc = scatter(q[sl], m1[sl], m2[sl], float(np.median(vc[sl])), s[sl])
        if sc.sigma >= th.variance and sc.ratio >= p.noisy_rms_ratio and j - i >= p.min_bad_exposures:
            spans.append((i, j, sc))
    return spans


def _weighted_spans(px: _Pixel, x, e, levels, falls: bool = True) -> list:
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
    p, s, cap = px.p, px.s, px.cap
    x = x / np.sqrt(px.variance_line)
    u, v = variance.terms(x, s, cap, px.wm1, px.wm2)
    # two falls far below are the pixel's own about its level runs, not about a running median
    # (``falls`` False: the first look), which a step down leaves two exposures below at its edge
    trim = float(variance.trims(x[:, None], p.transient_sigma, p.transient_window, px.thresholds.swing,
                                [px.own], fall=px.thresholds.fall if falls else np.inf)[0])
    i, j, st = variance.best_run(u, v, p.min_bad_exposures, trim=trim)
    if not np.isfinite(st) or st / px.variance_scale < px.thresholds.variance:
        return []
    k = variance.rms_ratio(x[i:j], s[i:j], cap[i:j], px.wm1[i:j])
    if k < p.noisy_rms_ratio:
        return []
    ex = float(np.sqrt(max(k * k - 1.0, 0.0)) * np.median(s[i:j]))
    if _level_describes(px, e, i, j, levels):
        return []
    return [(i, j, Scatter(float(st / px.variance_scale), float(k), ex))]


def _level_describes(px: _Pixel, e, i: int, j: int, levels) -> bool:
    """The span [i, j) overlaps a level run that is a defect by itself (``levels``) and its
    median residual (DN/s, about the normal state) exceeds its robust scatter (1.4826 MAD): the
    level describes the pixel (a HOT or WARM pixel, a drift, a little noisier than its ERR says),
    not excess scatter. Robust: the clip caps the scatter ratio, so it is measured without it.
    A span that swings both ways is not one level, whatever its median: two exposures or more
    beyond the single-exposure event threshold on each side of the normal state, or, outside
    the level runs, a rise and a fall beyond the tile's swing level within
    ``2 transient_window + 1`` exposures (as :func:`lrscube.detection.variance.trims` judges a
    pixel's excursions its own). A defect's level lies on one side (one exposure on the other
    is a misfit of the state or a hit, or chance where the noise falls that far), and a noisy
    pixel's median over a few exposures sits on either side by chance."""
    if not any(a < j and i < b for a, b, _ in levels):
        return False
    with np.errstate(invalid="ignore", divide="ignore"):
        x = e[i:j] / px.s[i:j]
        k = px.p.transient_sigma
        if min(int((x > k).sum()), int((x < -k).sum())) >= 2:
            return False
        outside = np.ones(j - i, bool)
        for a, b, _ in levels:
            outside[max(a - i, 0):max(b - i, 0)] = False
        if variance.swings(np.where(outside, x, np.nan)[:, None], px.thresholds.swing, px.p.transient_window)[0]:
            return False
    ev = e[i:j]
    mid = float(np.median(ev))
    return abs(mid) > 1.4826 * float(np.median(np.abs(ev - mid)))


class _Against(NamedTuple):
    """The pixel against its normal state: what every interval's evidence is measured on."""

    a: float  #: the normal response (less 1)
    e: np.ndarray  #: residual against the normal state (DN/s)
    z: np.ndarray  #: ... clipped, in units of the noise
    q: np.ndarray  #: clipped squares about the level runs
    sky_eff: np.ndarray  #: the normal response times the local sky (DN/s)


def _row(px: _Pixel, ag: _Against, start, stop, run_sig, on, rec) -> dict:
    """The evidence dict of the interval [start, stop) (``run_sig``: its run's significance;
    None: the mean of its clipped residual's)."""
    sl = slice(start, stop)
    v = ag.z[sl]
    sc = scatter(ag.q[sl], px.m1[sl], px.m2[sl], float(np.median(px.vc[sl])), px.s[sl])
    return {"start": start, "stop": stop, "sign": 1 if v.sum() >= 0 else -1,
            "significance": float(abs(v.sum()) / np.sqrt(v.size)) if run_sig is None else run_sig,
            "onset_significance": on, "recovery_significance": rec, "noisy": False, "static": False,
            "switching": False,
            "scatter_sigma": sc.sigma, "scatter_ratio": sc.ratio, "excess_rms_dn_s": sc.excess_rms_dn_s,
            "response": 1.0 + ag.a, "fall_sigma": _fall(ag.e[sl], px.s[sl]),
            **_evidence(ag.e[sl], px.s[sl], ag.sky_eff[sl], px.p.state_sigma)}


def _fall(e, s) -> float:
    """How far the run's level falls towards normal from its first exposure to its last, in the
    noise of their difference (sigma; positive: it fades, as a latent does)."""
    if e.size < 2:
        return float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.sign(e[0]) * (e[0] - e[-1]) / np.hypot(s[0], s[-1]))


def _merge_noisy(out: list, noisy_spans, row, n: int) -> list:
    """The level intervals with the noisy spans, each merged with the level intervals it
    overlaps (their onset and recovery kept where they are its ends), in time order."""
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
    return out


def _without_latents(out: list, e, s, h, p, hits, level: float) -> list:
    """The intervals less the runs of excess that end before the series does and decay within
    ``afterglow_max_hours``, or hold a hit and show no excess of their own (below ``level``)
    outside its hours (latents, :func:`lrscube.detection.afterglow.decays_within`,
    :func:`~lrscube.detection.afterglow.explained_by_hit`; ``h``: the exposures' mid-times,
    hours; ``hits``: those of the JUMP_DET exposures). A span of excess scatter (``noisy``) is a
    latent only by the second rule, its exposures outside the hours scattering by their noise
    too: a hit's charge over its visit is far beyond the noise about any level, and merged with
    the exposures around it reads as a pixel that swings.

    A run that only decays is not a latent when the pixel shows an excess at its level (DN/s,
    within ``telegraph_level_ratio``) in an interval that is not a latent: a latent needs a
    bright exposure before it each time, a defect (a telegraph whose rate within an exposure
    falls 0.47, 0.41, 0.15 DN/s over a visit) shows itself again."""
    n = e.size
    hits = np.zeros(0) if hits is None else np.asarray(hits, float)

    def latent(w) -> str:
        a, b = w["start"], w["stop"]
        if w["noisy"]:  # a span of excess scatter: only a hit whose hours hold all of it explains it
            return "hit" if _scatter_of_hit(e, s, h, hits, a, b, p, level) else ""
        if explained_by_hit(e, s, h, a, b, hits, max_hours=p.afterglow_max_hours, min_sigma=level):
            return "hit"
        return "decays" if b < n and decays_within(e[a:b], s[a:b], h[a:b], max_hours=p.afterglow_max_hours,
                                                   min_sigma=p.afterglow_decay_sigma,
                                                   max_ratio=p.afterglow_max_ratio) else ""

    why = [latent(w) if w["sign"] > 0 else "" for w in out]
    levels = [w["high_level_dn_s"] for w, y in zip(out, why) if w["sign"] > 0 and not y]

    def again(w) -> bool:
        lw = w["high_level_dn_s"]
        return any(_same_level(lw, v, p) for v in levels)

    return [w for w, y in zip(out, why) if not y or (y == "decays" and again(w))]


def _one_state(px: _Pixel, normal, prior=None) -> bool:
    """The normal state is one state (judged against the physical limits only then): enough
    exposures, scattering about their own (a, d) by at most :data:`STATIC_MAX_SCATTER` or by no
    more than chance allows at 1e-3, or keeping to it within a tenth (rms) of its distance from
    the neighbours' state (``prior``; a dead pixel's response follows the sky model a little more
    than its own tiny noise allows: :func:`lrscube.detection.changepoints.within_fraction`)."""
    k = int(normal.sum())
    if k < max(3, px.p.min_bad_exposures):
        return False
    if scatter_about_state(px.r, px.s, px.sky, normal) <= max(STATIC_MAX_SCATTER, _chi2_isf(1e-3, k - 2) / max(k - 2, 1)):
        return True
    if prior is None:
        return False
    st = state(px.r, px.s, px.sky, normal)
    r, sky = px.r[normal], px.sky[normal]
    ma, md = float(prior[0]), float(prior[2])
    # about the neighbours' state, the pixel's state is its distance from it
    return cp.within_fraction(r - ma * sky - md, (st.a - ma) * sky + (st.d - md))


def _level_at_neighbours(px: _Pixel, normal, prior):
    """(a_lvl, a_lvl_err, d_lvl, d_lvl_err): the normal state's response measured with the dark
    level at the neighbours' value, and its dark level over the neighbours' measured at their
    response. Where the sky barely changes, its estimate's own noise (in the sky and, with the
    opposite sign, in the residual) pulls the slope of r on the sky towards -1, and the free fit
    trades a response of 0 against a dark level equal to the sky: the level itself must show it."""
    r, s, sky = px.r, px.s, px.sky
    ma = float(prior[0]) if prior is not None else 0.0
    md = float(prior[2]) if prior is not None else 0.0
    w = normal / s ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        a_lvl = float(np.sum(w * sky * (r - md)) / np.sum(w * sky * sky))
        d_lvl = float(np.sum(w * (r - ma * sky)) / np.sum(w)) - md
    with np.errstate(invalid="ignore", divide="ignore"):
        d_lvl_err = float(1.0 / np.sqrt(np.sum(w)))
        a_lvl_err = float(1.0 / np.sqrt(np.sum(w * sky * sky)))
    return a_lvl, a_lvl_err, d_lvl, d_lvl_err


def _static_interval(px: _Pixel, normal, prior, lit, line_response, row) -> dict | None:
    """The whole series as one interval where the normal state itself lies beyond a physical
    limit, significantly (a dark excess over the neighbours' above ``static_excess_dn_s``, a
    response below ``low_qe_response`` of the line's; only the dark level outside the light),
    both in the free fit and in the level measured at the neighbours' values
    (:func:`_level_at_neighbours`); None where it does not."""
    p, th = px.p, px.thresholds
    # the exposures at the series' ends that show the pixel's normal state, before the defect
    # began or after it ended, are neither the defect's state nor in its interval
    start, stop, on, rec = _static_ends(px, normal, prior)
    if start > 0 or stop < px.n:
        normal = normal.copy()
        normal[:start] = False
        normal[stop:] = False
    if not _one_state(px, normal, prior):
        return None
    st = state(px.r, px.s, px.sky, normal)
    resp = 1.0 + st.a
    dx = st.d - (float(prior[2]) if prior is not None else 0.0)  # over the neighbours' dark level
    # the neighbours' own scatter of dark level joins the error: where the dark subtraction
    # leaves normal pixels scattered, an excess within that scatter is theirs, not a defect's
    vd = float(prior[3]) if prior is not None and np.isfinite(prior[3]) else 0.0
    warm = _warm_floor(p, st, prior)
    hot = (dx >= warm and np.isfinite(st.d_err) and dx / np.sqrt(st.d_err ** 2 + vd) >= th.static)
    low_limit = p.low_qe_response * min(float(line_response), 1.0)
    low = (lit and resp <= low_limit and np.isfinite(st.a_err) and -st.a / st.a_err >= th.static)
    a_lvl, a_lvl_err, d_lvl, d_lvl_err = _level_at_neighbours(px, normal, prior)
    hot = hot and d_lvl >= warm and d_lvl / np.sqrt(d_lvl_err ** 2 + vd) >= th.static
    low = low and 1.0 + a_lvl <= low_limit and -a_lvl / a_lvl_err >= th.static
    # an excess no response can explain (more than twice the neighbours'): a defect
    # whichever description, also where the sky does not separate them
    d_err, a_st, a_err = st.d_err, st.a, st.a_err
    if not hot and (d_lvl >= p.static_excess_dn_s and d_lvl / d_lvl_err >= th.static
                    and not 1.0 + a_lvl <= RESPONSE_RANGE[1]):
        hot, dx, d_err = True, d_lvl, d_lvl_err
    # ... and a response loss no dark level explains (a dark reference off by more than
    # static_excess_dn_s would make a bad pixel too)
    if not low and not hot and lit and (1.0 + a_lvl <= low_limit and -a_lvl / a_lvl_err >= th.static
                                        and -d_lvl >= p.static_excess_dn_s and -d_lvl / d_lvl_err >= th.static):
        low, a_st, a_err = True, a_lvl, a_lvl_err
        resp = 1.0 + a_lvl
    if not (hot or low):
        return None
    # bad in every exposure but those ends; the evidence is the defect state's own (excess or response)
    rw = row(start, stop, None, on, rec)
    chi2 = float(np.sum(((px.r[normal] - st.a * px.sky[normal] - st.d) / px.s[normal]) ** 2))
    rw.update(static=True, response=resp, variance_ratio=chi2 / max(int(normal.sum()) - 2, 1),
              significance=max(dx / d_err if hot else 0.0, -a_st / a_err if low else 0.0))
    if low:
        rw.update(sign=-1, deficit=1.0 - resp, deficit_err=a_err, chi2_add=np.inf, chi2_mult=0.0)
    else:
        rw.update(sign=1, excess_dn_s=dx, excess_err=d_err, chi2_add=0.0, chi2_mult=np.inf)
    return rw


def _warm_floor(p, st, prior) -> float:
    """The dark excess (DN/s) a normal state must reach to be WARM: ``static_warm_dn_s`` where the
    pixel's response is one of its neighbours' (within ``changepoint_sigma`` of their population),
    else ``static_excess_dn_s``. Light its response does not scale as the sky model assumes
    (stray light under an MRS fringe pattern) reads as a dark level in proportion to how far
    its response is off theirs: a stressed MIRIFUSHORT pixel at 1.27 of its neighbours'
    response showed 0.025 DN/s of it, 8 sigma."""
    if prior is None or not np.isfinite(prior[1]):
        return p.static_warm_dn_s
    off = abs(float(st.a) - float(prior[0])) / np.sqrt(float(prior[1]) + float(st.a_err) ** 2)
    return p.static_warm_dn_s if off <= p.changepoint_sigma else p.static_excess_dn_s


def _static_ends(px: _Pixel, normal, prior) -> tuple[int, int, float, float]:
    """(start, stop, onset, recovery significance) of a defect whose normal state may lie beyond
    a physical limit: the whole series but the exposures at its ends that show the pixel's normal
    state, before the defect began or after it ended. Those are the exposures at an end each of
    which lies at the neighbours' population and off the state of ``normal`` (:func:`_at_normal`),
    that together lie at the population (:func:`_population_z`) and off the state by the level
    threshold. Fewer than ``min_bad_exposures`` of them (one exposure before a hot pixel's onset)
    make no level run, so the majority state stays the normal one and would otherwise cover them."""
    n, inf = px.n, float("inf")
    start, stop, on, rec = 0, n, inf, inf
    if prior is None or normal.sum() < 3:
        return start, stop, on, rec
    st = state(px.r, px.s, px.sky, normal)
    near = _at_normal(px, st, prior)
    lead = n if near.all() else int(np.argmin(near))
    trail = n if near.all() else int(np.argmin(near[::-1]))
    if lead + trail >= n - max(3, px.p.min_bad_exposures):
        return start, stop, on, rec
    for lo, hi in ((0, lead), (n - trail, n)):
        if hi <= lo:
            continue
        m = np.zeros(n, bool)
        m[lo:hi] = True
        z = _off_state(px, m, st, prior)
        if z is None:
            continue
        if lo == 0:
            start, on = hi, z
            # the defect's state is that of its exposures, after its onset: a state fitted over
            # the normal ones too misjudges the other end (a warm pixel's last exposures under
            # another sky read as a recovery where its response is off its neighbours')
            st = _after(px, normal, start, st)
        else:
            stop, rec = lo, z
    if start == 0:
        start, on = _quiet_end(px, st, prior, True, stop)
        st = _after(px, normal, start, st)
    if stop == n:
        length, rec = _quiet_end(px, st, prior, False, n - start)
        stop = n - length
    return start, stop, on, rec


def _after(px: _Pixel, normal, start: int, st):
    """The state of the exposures ``normal`` from ``start`` on (``st`` where that leaves fewer
    than three)."""
    if start <= 0:
        return st
    m = normal.copy()
    m[:start] = False
    return state(px.r, px.s, px.sky, m) if m.sum() >= 3 else st


def _quiet_end(px: _Pixel, st, prior, first: bool, n_left: int) -> tuple[int, float]:
    """(length, significance) of the stretch at the series' first (else last) end whose exposures
    each lie at the neighbours' population and that together lie off the state ``st`` most
    significantly, by at least ``changepoint_sigma``; (0, inf) where none does. A weak defect's
    exposures each lie within the noise of both its state and the population (a warm pixel of
    0.17 DN/s in exposures of 0.03-0.3 DN/s of noise), so :func:`_at_normal` takes none of them;
    once the pixel is known to be beyond a physical limit, where its defect began is a question
    of its onset, judged at ``changepoint_sigma`` like every onset, not of a new defect. The
    stretch must leave ``max(3, min_bad_exposures)`` exposures of ``n_left`` to the defect."""
    k, inf = px.p.changepoint_sigma, float("inf")
    idx = np.arange(px.n) if first else np.arange(px.n)[::-1]
    at = baseline.at_population(px.r[idx], px.s[idx], px.sky[idx], prior, k)
    top = min(px.n if at.all() else int(np.argmin(at)), n_left - max(3, px.p.min_bad_exposures))
    if top < 1:
        return 0, inf
    w = 1.0 / px.s[idx[:top]] ** 2
    e = px.r[idx[:top]] - st.a * px.sky[idx[:top]] - st.d
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.abs(np.cumsum(w * e)) / np.sqrt(np.cumsum(w))
    if not np.isfinite(z).any():
        return 0, inf
    length = int(np.nanargmax(z)) + 1
    if not z[length - 1] >= k:
        return 0, inf
    m = np.zeros(px.n, bool)
    m[idx[:length]] = True
    dz, az = _population_z(px, m, prior)
    if not (abs(dz) < k and abs(az) < k):
        return 0, inf
    return length, float(z[length - 1])


def _at_normal(px: _Pixel, st, prior) -> np.ndarray:
    """Per exposure: it shows a normal pixel and not the state ``st``: within ``changepoint_sigma``
    of the neighbours' population (its mean at the exposure's sky; variance the noise plus the
    population's scatter), beyond it from the state (in the noise), and likelier the former."""
    k = px.p.changepoint_sigma
    v_pop = px.s ** 2 + baseline.level_variance(tuple(float(v) for v in prior), px.sky)
    d_pop = px.r - float(prior[0]) * px.sky - float(prior[2])
    d_st = px.r - st.a * px.sky - st.d
    with np.errstate(invalid="ignore", divide="ignore"):
        l_pop = -0.5 * (d_pop ** 2 / v_pop + np.log(v_pop))
        l_st = -0.5 * ((d_st / px.s) ** 2 + np.log(px.s ** 2))
        return baseline.at_population(px.r, px.s, px.sky, prior, k) & (np.abs(d_st) >= k * px.s) & (l_pop > l_st)


def _off_state(px: _Pixel, m, st, prior) -> float | None:
    """How far the exposures ``m`` lie from the state ``st`` (sigma, unclipped: they must also lie
    at the population, which a cosmic ray's excess does not), or None where they are not at the
    neighbours' population or not off the state by the level threshold."""
    k = px.p.changepoint_sigma
    dz, az = _population_z(px, m, prior)
    if not (abs(dz) < k and abs(az) < k):
        return None
    w = 1.0 / px.s[m] ** 2
    e = px.r[m] - st.a * px.sky[m] - st.d
    with np.errstate(invalid="ignore", divide="ignore"):
        z = abs(float(np.sum(w * e))) / float(np.sqrt(np.sum(w)))
    return z if np.isfinite(z) and z >= px.thresholds.level else None


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
    pos = [u for u in runs if u.sign > 0]
    rate = None
    if len(pos) > 1 and p.telegraph_gap_probability > 0:
        rate = _SwitchRate.of(r, s, _high_level(pos, r, z, p), pos, p)
    groups = [[runs[0]]]
    switching = [False]  # a group holding high-state runs joined across a probable quiet stretch
    for u in runs[1:]:
        g = groups[-1]
        if u.sign > 0 and g[-1].sign > 0 and rate is not None:
            joins, same = _joins(g, u, rate, r=r, z=z, p=p, row=row)
            if joins:
                g.append(u)
                switching[-1] |= same
                continue
        groups.append([u])
        switching.append(False)
    out = []
    for g, sw in zip(groups, switching):
        out.extend(_group_intervals(g, sw, p, threshold, row))
    return sorted(out + _recurrences(pos, out, r=r, z=z, p=p, threshold=threshold, row=row), key=lambda w: w["start"])


def _recurrences(pos, out, *, r, z, p, threshold, row) -> list[dict]:
    """The short excess runs (two exposures, up to ``min_bad_exposures``) in which a defect of
    this pixel shows again: each reaches ``threshold``, is in the high state, and lies at the
    high-state level (DN/s, within ``telegraph_level_ratio``) of the pixel's other high-state
    runs, which together hold at least ``min_bad_exposures`` exposures. ``min_bad_exposures``
    keeps a cosmic ray's afterglow from being a defect, and one exposure is a cosmic ray's
    signature (on a defective pixel too); a switching pixel whose quiet stretch is not bridged
    (nothing else in its series tells its switching rate) returns at its own level for two
    exposures or so at a time, often at the series' end, where no run can be longer yet."""
    def free(u):
        return not any(w["start"] < u.stop and u.start < w["stop"] for w in out)

    short = [u for u in pos if 2 <= u.stop - u.start < p.min_bad_exposures and u.significance >= threshold and free(u)]
    if not short:
        return []
    high = [(u, _high_level([u], r, z, p)) for u in pos if _in_high_state([u], z, p, row)]
    rows = []
    for u, lu in high:
        if not any(u is v for v in short):
            continue
        same = [v for v, lv in high if _same_level(lu, lv, p)]
        if len(same) > 1 and sum(v.stop - v.start for v in same) >= p.min_bad_exposures:
            rows.append(row(u.start, u.stop, u.significance, u.onset_significance, u.recovery_significance))
    return rows


def _indices(pieces) -> np.ndarray:
    return np.concatenate([np.arange(u.start, u.stop) for u in pieces])


def _high_level(pieces, r, z, p) -> float:
    """Mean residual (DN/s) of the pieces' exposures in the high state (all, if none is)."""
    idx = _indices(pieces)
    hi = idx[z[idx] > p.state_sigma]
    return float(np.mean(r[hi if hi.size else idx]))


def _same_level(a: float, b: float, p) -> bool:
    """Two excess levels (DN/s) are one defect's high state: both positive, within a factor
    1 / ``telegraph_level_ratio`` of each other."""
    return a > 0 and b > 0 and min(a, b) >= p.telegraph_level_ratio * max(a, b)


def _is_telegraph(rw: dict, p) -> bool:
    return classify.classify(pd.DataFrame([rw]), p.classes).iloc[0] == "TELEGRAPH"


def _in_high_state(pieces, z, p, row) -> bool:
    """The pieces are on average above ``state_sigma``, or switch by themselves (TELEGRAPH)."""
    if float(np.mean(z[_indices(pieces)])) >= p.state_sigma:
        return True
    return _is_telegraph(row(pieces[0].start, pieces[-1].stop, None, 0.0, 0.0), p)


class _SwitchRate(NamedTuple):
    """The pixel's switching from its first to its last excess run (:func:`switch_counts`)."""

    flips: np.ndarray
    counts: np.ndarray
    f_all: int
    c_all: int

    @classmethod
    def of(cls, r, s, high_level: float, pos, p) -> "_SwitchRate":
        flips, counts = switch_counts(r, s, high_level, 2 * p.state_sigma)
        a, b = pos[0].start, pos[-1].stop - 1
        return cls(flips, counts, int(flips[a:b].sum()), int(counts[a:b].sum()))

    def without(self, i: int, j: int) -> float:
        """p_switch leaving out the quiet stretch [i, j) (it would make itself probable)."""
        lo, hi = i - 1, j
        c = self.c_all - int(self.counts[lo:hi].sum())
        return (self.f_all - int(self.flips[lo:hi].sum())) / c if c > 0 else 0.0


def _joins(g, u, rate: _SwitchRate, *, r, z, p, row) -> tuple[bool, bool]:
    """(joins, same): the excess run ``u`` joins the group ``g`` across the quiet stretch between
    them, which the pixel's switching makes probable, if the merged span is at least as
    significant as its strongest piece, or if both sides are high states at one level (same)."""
    gap = u.start - g[-1].stop
    ps = rate.without(g[-1].stop, u.start)
    if not (ps > 0 and (1.0 - ps) ** gap >= p.telegraph_gap_probability):
        return False, False
    span = z[g[0].start:u.stop]
    stronger = abs(span.sum()) / np.sqrt(span.size) >= max(v.significance for v in g + [u])
    same = False
    if not stronger:
        lu, lg = _high_level([u], r, z, p), _high_level(g, r, z, p)
        same = (_same_level(lu, lg, p)
                and _in_high_state([u], z, p, row) and _in_high_state(g, z, p, row))
    return bool(stronger or same), bool(same)


def _group_intervals(g, switching: bool, p, threshold, row) -> list[dict]:
    """A group of joined runs as one TELEGRAPH interval where it reaches ``threshold`` and
    classifies so; else its runs that reach it, each an interval."""
    if len(g) > 1:
        rw = row(g[0].start, g[-1].stop, None, g[0].onset_significance, g[-1].recovery_significance)
        if switching:
            # high states at one level with quiet stretches between them that the pixel's
            # switching makes probable: a telegraph pixel whatever its duty cycle, and a
            # defect when one of its high-state runs is (the quiet stretches dilute the
            # span's mean, not the evidence)
            rw["switching"] = True
            rw["significance"] = max(rw["significance"], max(v.significance for v in g))
        if rw["significance"] >= threshold and rw["stop"] - rw["start"] >= p.min_bad_exposures and _is_telegraph(rw, p):
            return [rw]
    return [row(u.start, u.stop, u.significance, u.onset_significance, u.recovery_significance)
            for u in g if u.significance >= threshold and u.stop - u.start >= p.min_bad_exposures]
