"""Scatter between the integrations of one exposure: the screen for pixels noisy within exposures.

A ``_rateints`` product holds one slope per integration. Ingest averages them into the cube's
slope and keeps, per exposure and pixel, their reduced chi-square about their mean
(``intscat``: :func:`lrscube.intake.products.integration_scatter`, after the cosmic-ray clip),
with ``k = nints - 1`` degrees of freedom. A normal pixel has ``k q ~ chi2(k)``; a pixel whose
signal switches within the exposure (a random telegraph signal of seconds to minutes) or that
is noisy between its integrations has ``q`` above 1 in every exposure that shows it, while its
mean, the only thing the rest of detect sees, may stay at the sky.

Per pixel, over the exposures that have the plane, the terms

    u_t = k_t (min(q_t, 1 + c sqrt(2 / k_t)) - 1),   v_t = 2 k_t

(each exposure's term capped at ``c`` = ``clip_sigma`` (6) of its own null standard deviation,
as the other screens clip each exposure) are summed over a run of exposures exactly like the weighted excess-variance statistic
(:mod:`lrscube.detection.variance`: ``(sum u - TRIM max u) / sqrt(sum v)``, the run's largest
term left out twice, so one or two exposures with a decaying latent or a cosmic ray the clip
missed never reach the threshold by themselves). ``sum u / sqrt(sum v)`` over a whole span is
the chi-square of all its integrations standardised: the significance of an excess variance
between integrations. Before that, each exposure's ``q`` is divided by its median over the
frame relative to the chi-square median (:func:`calibrate`: ERR that under- or overstates the
noise between integrations shifts every pixel of the exposure alike), and the threshold is the
scatter screen's (the same false-alarm rate per pixel) times the robust scale of the statistic
over the tile's pixels (:func:`lrscube.detection.variance.null_scale`).

Pure numpy; :mod:`lrscube.detection.detect` maps it over the tiles.
"""
from __future__ import annotations

import warnings

import numba
import numpy as np
from scipy import stats

from . import variance

#: fewest finite values of an exposure's plane for its calibration (else left as it is)
MIN_CALIBRATION_PIXELS = 200


def degrees_of_freedom(nints) -> np.ndarray:
    """(time,) float: ``nints - 1`` per exposure (0 where fewer than 3 integrations)."""
    n = np.asarray(nints, float)
    return np.where(n >= 3, n - 1.0, 0.0)


def calibrate(q: np.ndarray, dof: np.ndarray) -> np.ndarray:
    """``q`` (B, y, x) divided, per exposure, by its median over the frame relative to the median
    of ``chi2(k) / k`` (float16; exposures with fewer than :data:`MIN_CALIBRATION_PIXELS` finite
    values, or no degrees of freedom, unchanged)."""
    q = np.asarray(q)
    if q.dtype not in (np.float16, np.float32):
        q = q.astype(np.float32)
    out = np.empty(q.shape, np.float16)  # each exposure cast once (no float32 copy of the block)
    for b in range(q.shape[0]):
        k = float(dof[b])
        out[b] = q[b]  # float16 as it is (through float32 it is the same number)
        if k <= 0:
            continue
        fin = np.isfinite(q[b])
        if fin.sum() < MIN_CALIBRATION_PIXELS:
            continue
        qb = q[b].astype(np.float32, copy=False)  # the exposure's float32 values (float16 widened exactly)
        scale = float(np.median(qb[fin])) / (stats.chi2.median(k) / k)
        if scale > 0:
            out[b] = qb / scale
    return out


def beyond(q: np.ndarray, dof: np.ndarray, sigma: float, scale: float = 1.0) -> np.ndarray:
    """bool like ``q`` (time, ...): exposures whose integrations scatter beyond chance at the
    one-sided Gaussian tail of ``sigma``: ``k q`` beyond the quantile of ``chi2(k)`` (``k`` =
    ``dof`` per exposure), its excess over 1 widened by the tile's measured null ``scale``.
    A cosmic ray hits one integration, which ingest leaves out of ``q`` (docs/storage.md), so
    an exposure raised by a hit does not scatter so."""
    q = np.asarray(q, float)
    k = np.asarray(dof, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        thr = np.where(k > 0, stats.chi2.isf(stats.norm.sf(sigma), np.maximum(k, 1.0)) / np.maximum(k, 1.0), np.inf)
        thr = 1.0 + (thr - 1.0) * max(float(scale), 1.0)
        return np.nan_to_num(q, nan=-np.inf) > thr.reshape((-1,) + (1,) * (q.ndim - 1))


def terms(q: np.ndarray, dof: np.ndarray, clip_sigma: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """``(u, v)`` shaped like ``q`` (time, pixels): ``k (q - 1)``, capped at ``clip_sigma`` times
    its null standard deviation ``sqrt(2 k)`` (a pixel's significance comes from several
    exposures, not from one enormous one), and ``2 k``, where ``q`` is finite and the exposure has
    degrees of freedom ``dof`` (time,), else 0. One compiled pass (:func:`_terms_rows`;
    :func:`terms_numpy` is the same in numpy, without its float64 temporaries)."""
    q = np.asarray(q)
    if q.dtype not in (np.float32, np.float64):
        q = q.astype(float)
    k = np.asarray(dof, float).reshape(-1)
    if q.ndim == 0 or k.size != q.shape[0]:
        return terms_numpy(q, dof, clip_sigma)
    u, v = _terms_rows(q.reshape(q.shape[0], -1), k, float(clip_sigma))
    return u.reshape(q.shape), v.reshape(q.shape)


def terms_numpy(q: np.ndarray, dof: np.ndarray, clip_sigma: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`terms` in numpy (the reference the compiled pass is tested against)."""
    q = np.asarray(q, float)
    k = np.broadcast_to(np.asarray(dof, float).reshape(-1, *([1] * (q.ndim - 1))), q.shape)
    ok = np.isfinite(q) & (k > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cap = clip_sigma * np.sqrt(2.0 * np.where(ok, k, 1.0))
        u = np.where(ok, np.minimum(k * (np.where(ok, q, 0.0) - 1.0), cap), 0.0)
    v = np.where(ok, 2.0 * k, 0.0)
    return u, v


@numba.njit(cache=True, nogil=True)
def _terms_rows(q, k, clip_sigma):
    """:func:`terms_numpy` of (T, P) ``q`` (float32 or float64, any strides) and ``k`` (T,)."""
    T, P = q.shape
    u = np.zeros((T, P))
    v = np.zeros((T, P))
    for t in range(T):
        kt = k[t]
        if not kt > 0:
            continue
        cap = clip_sigma * np.sqrt(2.0 * kt)
        for j in range(P):
            qv = np.float64(q[t, j])
            if np.isfinite(qv):
                x = kt * (qv - 1.0)
                u[t, j] = np.nan if (x != x or cap != cap) else (x if x < cap else cap)
                v[t, j] = 2.0 * kt
    return u, v


def null_scale(u: np.ndarray, v: np.ndarray, min_terms: int = 3) -> float:
    """The measured null scale of the statistic: :func:`lrscube.detection.variance.null_scale`
    of the full-series statistic of the pixels with at least ``min_terms`` exposures that have
    the plane."""
    has = (np.asarray(v) > 0).sum(axis=0) >= min_terms
    if not has.any():
        return 1.0
    # pairwise: the sums numpy made of the copy u[:, has] (Fortran-ordered)
    return variance.null_scale(variance.full(u, v, np.flatnonzero(has), pairwise=True))


def null_scale_of(q: np.ndarray, dof: np.ndarray, clip_sigma: float = 6.0, cols=None, min_terms: int = 3):
    """:func:`null_scale` of the terms of the columns ``cols`` of (time, P) ``q`` (``null_scale(
    *terms(q[:, cols], dof, clip_sigma), min_terms)``) in one compiled pass per column, without
    the column copy and the (time, pixel) float64 terms; None where no value of those columns
    is finite."""
    q = np.asarray(q)
    if q.dtype not in (np.float32, np.float64):
        q = q.astype(float)
    k = np.asarray(dof, float).reshape(-1)
    c = np.arange(q.shape[1]) if cols is None else np.asarray(cols, np.int64).reshape(-1)
    if q.ndim != 2 or k.size != q.shape[0] or q.shape[0] == 0:
        qc = q[:, c]
        if not np.isfinite(qc).any():
            return None
        return null_scale(*terms(qc, dof, clip_sigma), min_terms=min_terms)
    stat, keep, finite = _null_columns(q, k, float(clip_sigma), c, int(min_terms), float(variance.TRIM))
    if not finite:
        return None
    if not keep.any():
        return 1.0
    return variance.null_scale(stat[keep])


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _null_columns(q, k, clip_sigma, cols, min_terms, trim):
    """Per column ``cols[i]`` of ``q``: :func:`_terms_rows`' terms, whether at least
    ``min_terms`` of them are used (v > 0) and :func:`lrscube.detection.variance.full` of them with
    pairwise sums (as of the copy ``u[:, has]``, :func:`null_scale`); and whether any value of
    the columns is finite."""
    T = q.shape[0]
    m = cols.shape[0]
    out = np.zeros(m)
    keep = np.zeros(m, np.bool_)
    finite = False
    bu = np.empty(T)
    bv = np.empty(T)
    for i in range(m):
        j = cols[i]
        used = 0
        mu = 0.0
        for t in range(T):
            qv = np.float64(q[t, j])
            fin = np.isfinite(qv)
            finite |= fin
            kt = k[t]
            u = 0.0
            v = 0.0
            if kt > 0 and fin:
                cap = clip_sigma * np.sqrt(2.0 * kt)
                x = kt * (qv - 1.0)
                u = np.nan if (x != x or cap != cap) else (x if x < cap else cap)
                v = 2.0 * kt
            bu[t] = u
            bv[t] = v
            used += v > 0
            if t == 0:
                mu = u
            elif mu == mu and (u != u or u > mu):
                mu = u
        if used < min_terms:
            continue
        keep[i] = True
        su = 0.0  # numpy's sums start from 0 (-0.0 terms sum to 0.0)
        sv = 0.0
        su += variance._pairwise_sum(bu, T)
        sv += variance._pairwise_sum(bv, T)
        mx = mu if (mu >= 0.0 or mu != mu) else 0.0
        out[i] = (su - trim * mx) / np.sqrt(sv)
    return out, keep, finite


def scan(u: np.ndarray, v: np.ndarray, min_length: int = 3) -> np.ndarray:
    """(pixels,) the largest trimmed run statistic (:func:`lrscube.detection.variance.scan`);
    ``-inf`` for pixels with fewer than three exposures that have the plane."""
    out = np.full(u.shape[1:], -np.inf)
    has = (np.asarray(v) > 0).sum(axis=0) >= 3
    if has.any():
        out[has] = variance.scan(u[:, has], v[:, has], min_length=min_length)
    return out


def best_run(u: np.ndarray, v: np.ndarray, min_length: int = 3, boundary_sigma: float | None = None
             ) -> tuple[int, int, float, float]:
    """The most significant run of one pixel (1-D terms), over its exposures that have the plane:
    ``(first, last, statistic, ratio)`` with ``first`` and ``last`` the positions (in ``u``) of
    the run's first and last such exposure and ``ratio`` the scatter between integrations in
    units of the expected, ``sqrt(mean q)`` over the run (weighted by the degrees of freedom).
    ``(-1, -1, -inf, nan)`` when no run fits. With ``boundary_sigma``, a recovery must be
    supported (:func:`supported_recovery`), else the run goes on to the last exposure."""
    u = np.asarray(u, float)
    v = np.asarray(v, float)
    where = np.flatnonzero(v > 0)
    i, j, stat = variance.best_run(u[where], v[where], min_length=min_length)
    if not np.isfinite(stat) or j <= i:
        return -1, -1, -np.inf, np.nan
    if boundary_sigma is not None and not supported_recovery(u[where], v[where], i, j, boundary_sigma):
        j = where.size
    sel = where[i:j]
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ratio = float(np.sqrt(1.0 + 2.0 * u[sel].sum() / v[sel].sum()))
    return int(sel[0]), int(sel[-1]), float(stat), ratio


def supported_recovery(u: np.ndarray, v: np.ndarray, i: int, j: int, boundary_sigma: float) -> bool:
    """Is the stretch after run ``[i, j)`` (terms of the exposures with the plane) normal rather
    than still at the run's excess, by ``boundary_sigma``? The run's excess per degree of freedom
    ``sum u / sum (v / 2)`` predicts ``sum u`` after it; the recovery holds where the stretch falls
    short of that by ``boundary_sigma`` of its null ``sqrt(sum v)`` (no stretch: True). As for the
    other screens' recoveries (docs/detection.md): a noisy end of a few exposures does not declare
    a still-bad pixel recovered."""
    if j >= u.size:
        return True
    level = float(u[i:j].sum() / (v[i:j].sum() / 2.0))
    after_u, after_v = float(u[j:].sum()), float(v[j:].sum())
    return (level * after_v / 2.0 - after_u) / np.sqrt(after_v) >= boundary_sigma
