"""A normal pixel's own baseline, and the noise measured about it.

Pure numpy functions of ``(time, pixel)`` arrays: the spatial residual ``r`` of each pixel
against the local sky of its column (DN/s), its noise ``s`` (DN/s) and the local sky ``sky``
(DN/s), NaN or ``valid=False`` where a pixel was not seen.

**The null model.** Rate files are not flat-fielded: every pixel has its own fixed response,
a few percent off its neighbours (the flat field; MRS adds fringes and slice edges), so a
normal pixel's residual against the sky of its neighbours is not zero but proportional to
that sky: ``r_t = a * sky_t`` (``a`` = response - 1). Rate files are dark-subtracted, so a
normal pixel has no additive excess: an additive level ``d`` is a dark current the dark did not
remove (a warm or hot pixel). The sky level changes from exposure to exposure (exposure time,
zodiacal level, mode), which separates the two: :func:`fit_response_offset` fits ``a`` and
``d`` (the state a pixel is in: response and dark excess, for its physical limits; its start is
the response alone), robust (Tukey biweight, iteratively reweighted), weighted by the noise,
one compiled pass per pixel.

**The noise.** ERR is scaled per exposure (and detector block) so that the residuals of
normal pixels *about their own baseline* have unit robust scale: a fixed response pattern
cannot inflate it (a 2 % flat under a 15 DN/s sky is 0.3 DN/s of spatial scatter against
~0.05 DN/s of noise). The scale is measured from histograms of ``|residual / ERR|`` per
exposure (:func:`abs_histogram`), which tiles of the detector sum into blocks whatever the
tiling, and read back by :func:`calibration`: the MAD-based scale, raised to the RMS of the
values clipped at ``clip`` sigma (sums of clipped values then have unit variance also when the
noise has heavier tails than a Gaussian), and the moments of the clipped squares that the
excess-variance screen measures against (the measured null of each exposure).

Example
-------
>>> rng = np.random.default_rng(0)
>>> sky = rng.uniform(5, 20, (60, 1)) * np.ones((1, 3))
>>> r = sky * np.array([0.02, -0.03, 0.0]) + rng.normal(0, 0.05, sky.shape)
>>> np.round(fit_response_offset(r, np.full_like(r, 0.05), sky).a, 2).tolist()
[0.02, -0.03, 0.0]
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numba

import numpy as np
from scipy.special import log_ndtr, ndtri

from .residuals import local_linear, MAD_TO_SIGMA, running_median
from .running import median_about, median_inplace

#: Tukey biweight tuning constant (95 % efficiency for Gaussian noise), in units of the noise
BIWEIGHT_C = 4.685
#: edges of the |residual / ERR| histogram bins: 96 log-spaced bins from 0.01 to 100, plus an
#: underflow bin (below 0.01) and an overflow bin (above 100)
HIST_EDGES = np.geomspace(1e-2, 1e2, 97)
N_BINS = HIST_EDGES.size + 1
#: a value standing for each bin (geometric centre; the underflow bin's half its upper edge,
#: the overflow bin's twice its lower edge)
HIST_CENTRES = np.r_[0.5 * HIST_EDGES[0], np.sqrt(HIST_EDGES[:-1] * HIST_EDGES[1:]), 2 * HIST_EDGES[-1]]


def _population(v: np.ndarray, err: np.ndarray, window: int, min_count: int, axis: int):
    """(smooth mean, variance) of a per-pixel quantity ``v`` (y, x) measured with errors ``err``:
    the local straight line through its running median along ``axis``, and the robust
    pixel-to-pixel scatter about it less the measurement noise (on the better-measured half of
    the pixels), plus the uncertainty of the mean itself."""
    v = np.asarray(v, np.float32)
    m = local_linear(running_median(v, window, axis=axis, min_count=min_count), window, axis=axis)
    m = np.where(np.isfinite(m), m, np.nanmedian(v) if np.isfinite(v).any() else 0.0)
    dev = (v - m).ravel()
    e = np.asarray(err, float).ravel()
    ok = np.isfinite(dev) & np.isfinite(e)
    if ok.sum() < 20:
        return m, np.full(v.shape, np.inf)
    return m, np.full(v.shape, _scatter_beyond_noise(dev[ok], e[ok], window))


def _scatter_beyond_noise(dev: np.ndarray, e: np.ndarray, window: int) -> float:
    """The robust scatter of the deviations ``dev`` (finite, with errors ``e``) beyond their
    measurement noise, on the better-measured half, plus the uncertainty of a mean over ``window``."""
    good = e <= np.median(e)
    d = dev[good]
    spread = (MAD_TO_SIGMA * np.median(np.abs(d - np.median(d)))) ** 2
    var = max(float(spread - np.median(e[good] ** 2)), 0.0)
    var += 1.5708 * (var + float(np.median(e ** 2))) / window
    return max(var, 1e-12)


#: lit pixels whose skies lie in one bin of this width (a factor, on a log scale centred on the
#: median sky of the lit pixels) share one scatter of the level
LEVEL_BIN_FACTOR = 4.0
#: the fewest pixels a bin of sky needs for a scatter of its own (else the region's)
LEVEL_BIN_MIN = 200


def _level_population(v: np.ndarray, err: np.ndarray, sky: np.ndarray, lit: np.ndarray, window: int,
                      min_count: int, axis: int) -> np.ndarray:
    """The population variance of a per-pixel level ``v`` (y, x) measured with errors ``err``
    beyond its noise (:func:`_population`) for the ``lit`` pixels per bin of their mean ``sky``
    (bins a factor :data:`LEVEL_BIN_FACTOR` wide about their median sky, each with at least
    :data:`LEVEL_BIN_MIN` pixels), and the region's scatter for the others and where every pixel
    is lit and the skies lie within a factor 2 of their median (an LRS tile).

    A flat field scatters levels in proportion to the light, and the structure a sky model leaves
    (an MRS slice's fringes) more where the light is bright: on a MIRIFULONG tile the levels of
    pixels under 0.03 DN/s of scattered light scatter by 0.002 DN/s about their neighbours' and
    those of the slices (12 DN/s) by 2 DN/s. One scatter for the region was the slices': a dead
    pixel between the channels lay 0.03 DN/s below its neighbours, 3 of that scatter and 12 of
    its own population's. Pixels outside the light keep the region's: their level is the
    scattered light they see, which the model of it (a fraction of the sky around) leaves to
    change by a third between visits; with their own tight population such a change was a rise
    (two false WARM pixels past the left edge of the 40-exposure MIRIFUSHORT set)."""
    m, whole = _population(v, err, window, min_count, axis)
    out = whole.ravel().astype(float)
    if not np.isfinite(out).any():
        return whole
    dev = (np.asarray(v, np.float32) - m).ravel()
    e = np.asarray(err, float).ravel()
    sk = np.asarray(sky, float).ravel()
    lit = np.asarray(lit, bool).ravel()
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(dev) & np.isfinite(e) & np.isfinite(sk) & (sk > 0) & lit
    if ok.sum() < LEVEL_BIN_MIN:
        return whole
    centre = float(np.median(sk[ok]))  # bin 0 holds the skies within a factor 2 of the lit pixels' median
    b = np.full(out.size, np.iinfo(np.int64).min, np.int64)
    b[ok] = np.floor(np.log(sk[ok] / centre) / np.log(LEVEL_BIN_FACTOR) + 0.5).astype(np.int64)
    bins = np.unique(b[ok])
    if bins.size == 1 and lit.all():
        return whole
    for k in bins:
        sel = ok & (b == k)
        if sel.sum() >= LEVEL_BIN_MIN:
            out[sel] = _scatter_beyond_noise(dev[sel], e[sel], window)
    return out.reshape(np.shape(v))


def neighbour_prior(st: "State", shape, window: int = 15, min_count: int = 3, axis: int = 0, level=None,
                    lit=None):
    """The population a pixel's response and dark level are drawn from, from the free fits
    ``st`` of the pixels of a region (``shape`` (y, x)): ``(ma, va, md, vd, sk, vl)``, per pixel.

    Each mean is the smooth local level of the neighbours' values along the dispersion, each
    variance their pixel-to-pixel scatter beyond the fitting noise (:func:`_population`). A flat
    field of a few percent gives a loose response prior (the data decide where the sky is
    bright); a detector without one a tight one, so a pixel's baseline is known from its
    neighbours and a weak defect covering most of the series is not confused with a response a
    fraction of a percent different. The dark level of normal pixels scatters by what the dark
    subtraction leaves (a few thousandths of a DN/s) and by sky-model residuals at sharp
    features, which the neighbours along a column share.

    ``level = (sk, W)``: each pixel's precision-weighted mean sky and its sum of weights; ``vl``
    is then the population's scatter of the level ``a sk + d`` at that sky (beyond its fitting
    noise ``1 / W``), else inf. Where the sky barely changes (an area the light does not reach
    but a glow does) response and dark level are each poorly measured, their errors almost
    perfectly anticorrelated, and ``va sk^2 + vd`` overstates how far normal pixels' levels
    scatter; the level itself is measured well (:func:`level_variance`). A ``lit`` pixel's (per
    pixel: inside the light; default all) population is that of the lit pixels under as much
    light (:func:`_level_population`).
    """
    w = int(window) | 1
    ma, va = _population(np.asarray(st.a).reshape(shape), np.asarray(st.a_err).reshape(shape), w, min_count, axis)
    md, vd = _population(np.asarray(st.d).reshape(shape), np.asarray(st.d_err).reshape(shape), w, min_count, axis)
    P = int(np.prod(shape))
    if level is None:
        sk, vl = np.full(P, np.nan), np.full(P, np.inf)
    else:
        sk = np.asarray(level[0], float).reshape(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            lv = np.asarray(st.a, float).reshape(-1) * sk + np.asarray(st.d, float).reshape(-1)
            le = 1.0 / np.sqrt(np.asarray(level[1], float).reshape(-1))
        lit = np.ones(shape, bool) if lit is None else np.asarray(lit, bool).reshape(shape)
        vl = _level_population(lv.reshape(shape), le.reshape(shape), sk.reshape(shape), lit, w, min_count,
                               axis).reshape(-1)
    return ma.reshape(-1), va.reshape(-1), md.reshape(-1), vd.reshape(-1), sk, vl


def level_variance(prior, sky):
    """The population's variance of a normal pixel's level at ``sky`` (DN/s), ``prior`` from
    :func:`neighbour_prior`: ``va sky^2 + vd``, or where smaller the scatter of the level measured
    at the pixel's own mean sky ``vl`` plus the response's over the difference of the skies."""
    ma, va, md, vd = (np.asarray(v, float) for v in prior[:4])
    full = va * sky * sky + vd
    if len(prior) < 6:
        return full
    sk, vl = np.asarray(prior[4], float), np.asarray(prior[5], float)
    with np.errstate(invalid="ignore"):
        near = vl + va * np.abs(sky * sky - sk * sk)
    return np.where(np.isfinite(near), np.minimum(full, near), full)


def at_population(r, s, sky, prior, k: float) -> np.ndarray:
    """Per exposure: the residual ``r`` lies within ``k`` standard errors of the neighbours'
    level at the exposure's ``sky`` (``prior`` from :func:`neighbour_prior`; the error: the noise
    ``s`` and the population's scatter of the level, :func:`level_variance`)."""
    pr = tuple(float(v) for v in prior)
    r, s, sky = (np.asarray(v, float) for v in (r, s, sky))
    with np.errstate(invalid="ignore"):
        return (r - pr[0] * sky - pr[2]) ** 2 <= k * k * (s * s + level_variance(pr, sky))


class State(NamedTuple):
    """A pixel's fitted state over a set of exposures: ``r = a * sky + d``."""

    a: np.ndarray  #: response - 1 (fraction)
    d: np.ndarray  #: additive excess (DN/s)
    a_err: np.ndarray  #: standard error of a
    d_err: np.ndarray  #: standard error of d
    leverage: np.ndarray  #: (time, pixel) leverage of each exposure in the fit (0 where unused)
    n: np.ndarray  #: exposures used


def fit_response_offset(r, s, sky, valid=None, *, iterations: int = 4, ridge: float = 1e-6, prior=None,
                        leverage: bool = True) -> State:
    """Robust ``(a, d)`` per pixel of ``r = a * sky + d``, weighted by the noise.

    Where the sky barely changes over a pixel's exposures the two are degenerate; a relative
    ridge of ``ridge`` on ``d`` keeps the solution finite there (d -> 0, the response takes the
    level: the prediction at the observed skies is the same). ``prior = (ma, va, md, vd)``: the
    population each pixel's response and dark level are drawn from (means per pixel, variances;
    :func:`neighbour_prior`), added to the normal equations. The standard errors are those of
    weighted least squares with the final weights; ``leverage`` is each exposure's hat value
    (the residual of a normal pixel has variance ``s^2 (1 - h)``).

    The fit solves the normal equations weighted by the noise alone, then ``iterations`` times
    more with Tukey biweights of the residual about the previous solution in units of the noise,
    scaled up by the pixel's own robust scatter. One compiled pass per pixel
    (:func:`_fit_pixels`): the whole-array version made a dozen (time, pixel) float64
    temporaries per step and was half of detect's CPU. The pass reads the (time, pixel) arrays
    where they are (neighbouring pixels share cache lines), without transposed float64 copies;
    ``leverage=False`` leaves the leverages out (``State.leverage`` None) for callers that do
    not use them.
    """
    r = np.asarray(r)
    T, rest = r.shape[0], r.shape[1:]
    P = int(np.prod(rest, dtype=np.int64))

    def cols(v, dtype=None):  # (T, P) views where possible; float32 and float64 are read as they are
        v = np.asarray(v)
        if dtype is None and v.dtype not in (np.float32, np.float64):
            dtype = float
        if dtype is not None:
            v = v.astype(dtype, copy=False)
        return np.broadcast_to(v, r.shape).reshape(T, P)

    ok = np.ones((T, P), bool) if valid is None else cols(valid, bool)
    if prior is None:
        ma = md = np.zeros(P)
        pa = pd_ = np.zeros(P)
    else:
        ma, va, md, vd = (np.broadcast_to(np.asarray(v, float), rest).reshape(P) for v in prior[:4])
        ma, md = np.where(np.isfinite(ma), ma, 0.0), np.where(np.isfinite(md), md, 0.0)
        pa, pd_ = 1.0 / np.maximum(va, 1e-12), 1.0 / np.maximum(vd, 1e-12)
    out = _fit_pixels(cols(r), cols(s), cols(sky), ok, np.ascontiguousarray(ma), np.ascontiguousarray(pa),
                      np.ascontiguousarray(md), np.ascontiguousarray(pd_), int(iterations), float(ridge),
                      bool(leverage))
    a, d, a_err, d_err, h, n = out
    return State(a.reshape(rest), d.reshape(rest), a_err.reshape(rest), d_err.reshape(rest),
                 h.reshape(r.shape) if leverage else None, n.reshape(rest))


def fit_one(r, s, sky, use, prior=None, *, iterations: int = 4, ridge: float = 1e-6):
    """``(a, d, a_err, d_err, n)`` (floats) of :func:`fit_response_offset` (no leverages) for one
    pixel over its exposures ``use`` (``r, s, sky``: 1-D; ``prior``: 4+ scalars or 1-element
    arrays). The same compiled fit with the same arguments, without the reshapes for a
    tile: the per-candidate analysis fits one pixel a dozen times, and the wrapper cost ten times
    the fit of ~100 exposures."""
    cols = []
    for v in (r, s, sky):
        v = np.asarray(v)[use]
        if v.dtype not in (np.float32, np.float64):  # float32 and float64 as they are
            v = v.astype(float)
        v = v.reshape(-1, 1)
        v.flags.writeable = False  # read-only, as fit_response_offset passes them: the same compiled kernel
        cols.append(v)
    T = cols[0].shape[0]
    if prior is None:
        ma = md = pa = pd_ = np.zeros(1)
    else:  # fit_response_offset's prior rule in floats (numpy's isfinite, and maximum's NaN): a shared
        # array helper would cost the calls this function saves; tested bit for bit against it
        ma, va, md, vd = (float(v) if np.ndim(v) == 0 else float(np.asarray(v, float).reshape(-1)[0])
                          for v in prior[:4])
        pr = np.array([ma if math.isfinite(ma) else 0.0, 1.0 / (va if (va > 1e-12 or va != va) else 1e-12),
                       md if math.isfinite(md) else 0.0, 1.0 / (vd if (vd > 1e-12 or vd != vd) else 1e-12)])
        ma, pa, md, pd_ = pr[0:1], pr[1:2], pr[2:3], pr[3:4]
    a, d, a_err, d_err, _, n = _fit_pixels(cols[0], cols[1], cols[2], np.ones((T, 1), bool), ma, pa, md, pd_,
                                           int(iterations), float(ridge), False)
    return float(a[0]), float(d[0]), float(a_err[0]), float(d_err[0]), float(n[0])


#: a median |residual| at most this (noise units) makes the scale 1 whatever it is exactly
_SCALE_ONE = 0.999 / MAD_TO_SIGMA
#: the band about a guessed median in which :func:`_robust_scale_1` looks for it first (relative)
_BAND = (0.8, 1.25)


#: pixels :func:`_fit_pixels` copies together (a 64-byte line of float32 values of one exposure),
#: for series of at least FIT_COPY_FROM exposures (below, the columns read in place stay cached
#: from one pixel to the next and the copy costs more than it saves)
FIT_BLOCK = 16
FIT_COPY_FROM = 512


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _fit_pixels(r_in, s_in, sky_in, valid, ma, pa, md, pd_, iterations, ridge, leverage):
    """:func:`fit_response_offset` over the columns of (T, P) arrays; returns a, d, a_err, d_err
    (P,), leverage (T, P; (0, 0) without ``leverage``) and the exposures used (P,). Per pixel:
    its usable exposures (:func:`_load_pixel`), the reweighted normal equations
    (:func:`_solve_reweighted`) and the errors and leverages of their solution.

    Only the usable exposures are loaded, in their order: an unusable one has weight 0 and
    adds exact zeros to every sum (a block of a mixed cube sees a full frame's rows in a
    fraction of its exposures; the passes over the others were half the fit's cost there).
    For long series the columns are first copied :data:`FIT_BLOCK` pixels at a time into
    narrow (T, B) arrays (:func:`_copy_columns`): a pixel's column read in place touches one
    cache line per exposure and array, far apart, which for a long series no longer stay cached
    for the next pixels of the line (the fit's cost per value grew by 60 % from 100 to 2,000
    exposures)."""
    T, P = r_in.shape
    B = FIT_BLOCK
    a_out = np.empty(P)
    d_out = np.empty(P)
    ae_out = np.empty(P)
    de_out = np.empty(P)
    h_out = np.zeros((T, P) if leverage else (0, 0))
    n_out = np.zeros(P, np.int64)
    copy = T >= FIT_COPY_FROM
    rc = np.empty((T if copy else 0, B), r_in.dtype)
    sc = np.empty((T if copy else 0, B), s_in.dtype)
    kc = np.empty((T if copy else 0, B), sky_in.dtype)
    vc = np.empty((T if copy else 0, B), np.bool_)
    r = np.empty(T)
    s = np.empty(T)
    sky = np.empty(T)
    w0 = np.empty(T)
    w = np.empty(T)
    z = np.empty(T)
    buf = np.empty(T)
    band = np.empty(T)
    guess = np.full(1, 0.6745)  # the median |z| of Gaussian noise
    at = np.empty(T, np.int64)
    for j0 in range(0, P, B):
        m = min(B, P - j0)
        if copy:
            _copy_columns(r_in, s_in, sky_in, valid, j0, m, rc, sc, kc, vc)
        for b in range(m):
            j = j0 + b
            if copy:
                n = _load_pixel(rc, sc, kc, vc, b, r, s, sky, w0, at)
            else:
                n = _load_pixel(r_in, s_in, sky_in, valid, j, r, s, sky, w0, at)
            n_out[j] = n
            a, d, good, s11r, det, suu, su1 = _solve_reweighted(r, s, sky, w0, w, z, buf, band, guess, n, ma[j],
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
def _copy_columns(a, b, c, d, j0, m, oa, ob, oc, od):
    """Columns ``j0 .. j0 + m - 1`` of the (T, P) arrays ``a, b, c, d`` into the first ``m``
    columns of ``oa, ob, oc, od`` (T, B), row after row (unsigned indices: no negative-index
    wrap, so a whole block's row is one vector copy)."""
    for t in range(a.shape[0]):
        ut = np.uint64(t)
        for k in range(m):
            uk = np.uint64(k)
            uj = np.uint64(j0 + k)
            oa[ut, uk] = a[ut, uj]
            ob[ut, uk] = b[ut, uj]
            oc[ut, uk] = c[ut, uj]
            od[ut, uk] = d[ut, uj]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _load_pixel(r_in, s_in, sky_in, valid, j, r, s, sky, w0, at):
    """Pixel ``j``'s usable exposures (finite r, s > 0, finite sky, valid) of the (T, P) inputs,
    in double precision and in order, into the first n values of the buffers ``r, s, sky``, the
    weights ``w0 = 1 / s^2`` and their time indices ``at``; returns n."""
    n = 0
    for t in range(r_in.shape[0]):
        rv, sv, kv = np.float64(r_in[t, j]), np.float64(s_in[t, j]), np.float64(sky_in[t, j])
        if valid[t, j] and np.isfinite(rv) and np.isfinite(sv) and sv > 0 and np.isfinite(kv):
            r[n] = rv
            s[n] = sv
            sky[n] = kv
            w0[n] = 1.0 / sv ** 2
            at[n] = t
            n += 1
    return n


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _residual_scale(r, s, sky, a, d, n, z, buf, band, guess):
    """The residuals ``z = (r - a sky - d) / s`` of one pixel's ``n`` exposures (into ``z``) and
    their MAD-based scale, at least 1 (units of the noise): a noisy pixel's own scatter widens
    its biweight.

    The number ``max(MAD_TO_SIGMA * median_inplace(|z|), 1)``, found with less work (the median
    selections were most of the fit's cost): where more than half the values are at most
    :data:`_SCALE_ONE`, the median is too and the scale is 1; otherwise the median is selected
    among the few values in a band about ``guess[0]`` (the median the pixel's previous reweight
    found, or the previous pixel's) when that band holds its ranks, and by
    :func:`median_inplace` of all the values when not
    (:func:`~lrscube.detection.running.median_about`). Values holding NaN or a zero always take
    :func:`median_inplace` (whose result they define). ``buf`` and ``band`` are scratch."""
    low = 0
    plain = True
    for t in range(n):
        zt = (r[t] - a * sky[t] - d) / s[t]
        z[t] = zt
        x = abs(zt)
        buf[t] = x
        plain &= (x == x) & (x != 0.0)  # no branch: the pass vectorises
        low += x <= _SCALE_ONE
    if plain and low > n // 2:  # ranks h - 1 and h at most _SCALE_ONE: so is the median
        return 1.0
    med = median_about(buf, n, _BAND[0] * guess[0], _BAND[1] * guess[0], band)
    if np.isfinite(med) and med > 0:
        guess[0] = med
    med = MAD_TO_SIGMA * med
    return max(med, 1.0) if np.isfinite(med) else 1.0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _solve_reweighted(r, s, sky, w0, w, z, buf, band, guess, n, ma_j, pa_j, md_j, pd_j, iterations, ridge):
    """The weighted normal equations of ``r = a sky + d`` over a pixel's ``n`` exposures with the
    prior's terms, solved ``iterations + 1`` times: first with the noise weights ``w0``, then
    each time with ``w0`` times the Tukey biweights (zero beyond BIWEIGHT_C robust scales,
    :func:`_residual_scale`) of the residuals about the previous solution; ``w`` holds the last
    weights. Returns (a, d, solved, s11r, det, suu, su1), the last four the system's terms the
    errors and leverages are made of. Each solve is three passes: the residuals and their scale,
    the weights, the five sums (added in exposure order). Numpy's error model (x / 0 is inf or
    NaN, no check per division) lets the first two vectorise."""
    a = 0.0
    d = md_j
    good = False
    s11r = det = suu = su1 = 0.0
    for k in range(iterations + 1):
        s11 = pd_j
        su1 = 0.0
        suu = pa_j
        sur = pa_j * ma_j
        s1r = pd_j * md_j
        if k == 0:
            for t in range(n):
                wt = w0[t]
                w[t] = wt
                s11 += wt
                su1 += wt * sky[t]
                suu += wt * sky[t] * sky[t]
                sur += wt * sky[t] * r[t]
                s1r += wt * r[t]
        else:
            cs = BIWEIGHT_C * _residual_scale(r, s, sky, a, d, n, z, buf, band, guess)
            for t in range(n):  # the weights (a vectorised pass), then their sums in order
                u = z[t] / cs
                b = 1 - u * u
                w[t] = w0[t] * (b * b if abs(u) < 1 else 0.0)
            for t in range(n):
                wt = w[t]
                s11 += wt
                su1 += wt * sky[t]
                suu += wt * sky[t] * sky[t]
                sur += wt * sky[t] * r[t]
                s1r += wt * r[t]
        s11r = s11 * (1 + ridge) + 1e-30
        det = suu * s11r - su1 * su1
        good = det > 1e-12 * max(suu * s11r, 1e-300)
        if good:
            a, d = (s11r * sur - su1 * s1r) / det, (suu * s1r - su1 * sur) / det
        else:
            a, d = (sur / max(suu, 1e-300) if suu > 0 else 0.0), md_j
    return a, d, good, s11r, det, suu, su1


def level_sums(r, s, sky, use, ma, md) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(P,) sums over the exposures ``use`` of the (time, P) arrays, with ``w = 1 / s^2``: ``sum
    w``, ``sum w sky^2``, ``sum w (r - ma sky)`` and ``sum w sky (r - md)`` (``ma, md`` (P,):
    the neighbours' response and dark level), what a pixel's level at either description is
    made of (:func:`lrscube.detection.detect.beyond_either_description`). One compiled pass,
    the numbers of :func:`level_sums_numpy` (numpy's axis-0 sums add exposure after exposure;
    unused exposures add their exact zeros, or NaN where ``ma`` or ``md`` is not finite, as there)."""
    shape = np.shape(r)
    f = [np.broadcast_to(v if v.dtype in (np.float32, np.float64) else v.astype(float), shape)
         for v in (np.asarray(x) for x in (r, s, sky))]
    P = shape[1]
    ma = np.ascontiguousarray(np.broadcast_to(np.asarray(ma, float), (P,)))
    md = np.ascontiguousarray(np.broadcast_to(np.asarray(md, float), (P,)))
    return _level_sums(*f, np.broadcast_to(np.asarray(use, bool), shape), ma, md)


def level_sums_numpy(r, s, sky, use, ma, md):
    """:func:`level_sums` in numpy (the reference the compiled pass is tested against)."""
    ma, md = np.asarray(ma, float), np.asarray(md, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(use, 1.0 / np.asarray(s, float) ** 2, 0.0)
        r = np.where(use, np.asarray(r, float), 0.0)
        k = np.where(use, np.asarray(sky, float), 0.0)
        return w.sum(axis=0), (w * k * k).sum(axis=0), (w * (r - ma * k)).sum(axis=0), (w * k * (r - md)).sum(axis=0)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _level_sums(r, s, sky, use, ma, md):
    T, P = r.shape
    sw = np.zeros(P)
    skk = np.zeros(P)
    sd = np.zeros(P)
    sa = np.zeros(P)
    for t in range(T):
        for j in range(P):
            if use[t, j]:
                sv = np.float64(s[t, j])
                w = 1.0 / (sv * sv)
                rv = np.float64(r[t, j])
                kv = np.float64(sky[t, j])
            else:
                w = rv = kv = 0.0
            a = w
            b = w * kv * kv
            c = w * (rv - ma[j] * kv)
            d = w * kv * (rv - md[j])
            sw[j] += a  # numpy's sums start from 0 (-0.0 terms sum to 0.0)
            skk[j] += b
            sd[j] += c
            sa[j] += d
    return sw, skk, sd, sa


# --------------------------------------------------------------------------------------------
# noise calibration from histograms of |residual / ERR|


def abs_histogram(x: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Counts of ``|x|`` per exposure in the bins of :data:`HIST_EDGES`: ``(time, N_BINS)`` int64.

    ``x`` is ``(time, pixel)``; NaN and ``valid=False`` entries are not counted. Histograms of
    the tiles of a block add up to the block's, whatever the tiling.
    """
    x = np.asarray(x, float)
    T = x.shape[0]
    ok = np.isfinite(x) if valid is None else (np.asarray(valid, bool) & np.isfinite(x))
    t = np.broadcast_to(np.arange(T)[:, None], x.shape)[ok]
    idx = np.searchsorted(HIST_EDGES, np.abs(x[ok]))
    return np.bincount(t * N_BINS + idx, minlength=T * N_BINS).reshape(T, N_BINS).astype(np.int64)


def standardised_histograms(r, s, sky, valid, st: "State", block: np.ndarray, n_blocks: int) -> np.ndarray:
    """:func:`abs_histogram` of each block's residuals about the fitted states ``st`` (of the
    columns of the (time, P) arrays; ``st.leverage`` (time, P)), in units of ``s`` corrected for
    the leverage, ``x = (r - a sky - d) / (s sqrt(max(1 - h, 1e-3)))``: ``(n_blocks, time,
    N_BINS)`` counts, pixel ``j`` counted in block ``block[j]``.

    One compiled pass, the same double-precision operations as the whole-array expression
    (float32 inputs widened first) and the same bins as ``np.searchsorted``: the temporaries of
    whole tiles it made were most of the calibration's cost besides the fit."""
    T = r.shape[0]
    f = [np.asarray(v) if np.asarray(v).dtype in (np.float32, np.float64) else np.asarray(v, float) for v in (r, s, sky)]
    out = np.zeros((int(n_blocks), T, N_BINS), np.int64)
    _standardised_counts(*f, np.asarray(valid, bool), np.asarray(st.a, float), np.asarray(st.d, float),
                         np.asarray(st.leverage, float), np.asarray(block, np.int64), HIST_EDGES, _BIN_TABLE,
                         _BIN_BASE, out)
    return out


def scaled_noise(e, scale, blk, use) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(s, w, w_sum)`` of a tile: ``s = (e * scale.T[:, blk]).astype(float32)`` (``e`` (T, P)
    float32, ``scale`` (blocks, T) float32, ``blk`` (P,) each pixel's block), the weights
    ``w = np.where(use, 1 / s^2, 0)`` (float64, ``s`` widened first) and their sums over axis 0
    (numpy's: exposure after exposure), in one compiled pass without the whole-tile temporaries
    of those expressions."""
    e = np.asarray(e, np.float32)
    T, P = e.shape
    s = np.empty((T, P), np.float32)
    w = np.empty((T, P))
    w_sum = np.zeros(P)
    _scaled_noise(e, np.asarray(scale, np.float32), np.asarray(blk, np.int64), np.asarray(use, bool), s, w, w_sum)
    return s, w, w_sum


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _scaled_noise(e, scale, blk, use, s, w, w_sum):
    """:func:`scaled_noise` row by row. The float32 product from the exact float64 one (24-bit
    significands: one rounding, as numpy's float32 multiply); the first row's weights are the
    sums' start, as numpy's reduction copies them."""
    T, P = e.shape
    for t in range(T):
        for j in range(P):
            sv = np.float32(np.float64(e[t, j]) * np.float64(scale[blk[j], t]))
            s[t, j] = sv
            s2 = np.float64(sv) * np.float64(sv)
            wv = 1.0 / s2 if use[t, j] else 0.0
            w[t, j] = wv
            w_sum[j] = wv if t == 0 else w_sum[j] + wv


def group_noise(e, scale, m1, m2, blk, t_idx, pix, factor, jump) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(s, g1, g2)`` (m, k) of a group of a tile's pixels ``pix`` (k,) over its exposures
    ``t_idx`` (m,): ERR ``e`` (T, P) float32 times its block's calibration ``scale`` (blocks, T)
    float32 (each pixel's block ``blk`` (P,)), times ``factor`` (k,) float64, as float32; and the
    null moments ``m1, m2`` (blocks, T, 2) of the block, exposure and ``jump`` (m, k; index 1
    where JUMP_DET). The numbers of the numpy expressions (gathers, a float32 product, a
    float64 one rounded to float32, ``np.where``), in one compiled pass without their
    temporaries."""
    t_idx = np.asarray(t_idx, np.int64)
    pix = np.asarray(pix, np.int64)
    m, k = t_idx.size, pix.size
    s = np.empty((m, k), np.float32)
    g1 = np.empty((m, k))
    g2 = np.empty((m, k))
    _group_noise(np.asarray(e, np.float32), np.asarray(scale, np.float32), np.asarray(m1, float),
                 np.asarray(m2, float), np.asarray(blk, np.int64), t_idx, pix, np.asarray(factor, float),
                 np.asarray(jump, bool), s, g1, g2)
    return s, g1, g2


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _group_noise(e, scale, m1, m2, blk, t_idx, pix, factor, jump, s, g1, g2):
    """:func:`group_noise` row by row; the float32 product from the exact float64 one (one
    rounding, as numpy's float32 multiply)."""
    for r in range(t_idx.shape[0]):
        t = t_idx[r]
        for i in range(pix.shape[0]):
            j = pix[i]
            b = blk[j]
            p32 = np.float32(np.float64(e[t, j]) * np.float64(scale[b, t]))
            s[r, i] = np.float32(np.float64(p32) * factor[i])
            c = 1 if jump[r, i] else 0
            g1[r, i] = m1[b, t, c]
            g2[r, i] = m2[b, t, c]


def residuals_about(r, sky, a, d, drop) -> np.ndarray:
    """(time, P) float64: ``np.where(drop, nan, r - a * sky - d)``, the residuals about the
    states ``a, d`` (P,) (float32 ``r, sky`` widened first), NaN where ``drop``; the numbers of
    that expression in one compiled pass, without its four whole-array temporaries."""
    f = [np.asarray(v) if np.asarray(v).dtype in (np.float32, np.float64) else np.asarray(v, float) for v in (r, sky)]
    shape = f[0].shape
    out = np.empty(shape)
    P = shape[1]
    _residuals_about(f[0], np.broadcast_to(f[1], shape), np.broadcast_to(np.asarray(a, float), (P,)),
                     np.broadcast_to(np.asarray(d, float), (P,)), np.broadcast_to(np.asarray(drop, bool), shape), out)
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _residuals_about(r, sky, a, d, drop, out):
    """:func:`residuals_about` row by row, in the expression's order: (r - a sky) - d."""
    T, P = r.shape
    for t in range(T):
        for j in range(P):
            out[t, j] = np.nan if drop[t, j] else np.float64(r[t, j]) - a[j] * np.float64(sky[t, j]) - d[j]


def standardised_residuals(r, s, sky, st: "State") -> np.ndarray:
    """(time, P) float64: ``(r - a sky - d) / (s sqrt(max(1 - h, 1e-3)))``, the residuals about
    the fitted states ``st`` (with leverages) in units of ``s`` corrected for the leverage, as
    that whole-array expression computes them (float32 inputs widened first), in one compiled
    pass without its temporaries."""
    f = [np.asarray(v) if np.asarray(v).dtype in (np.float32, np.float64) else np.asarray(v, float) for v in (r, s, sky)]
    out = np.empty(f[0].shape)
    _standardised_values(*f, np.asarray(st.a, float), np.asarray(st.d, float), np.asarray(st.leverage, float), out)
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _standardised_values(r, s, sky, a, d, h, out):
    T, P = r.shape
    for t in range(T):
        for j in range(P):
            out[t, j] = (np.float64(r[t, j]) - a[j] * np.float64(sky[t, j]) - d[j]) / (
                np.float64(s[t, j]) * np.sqrt(max(1.0 - h[t, j], 1e-3)))


@numba.njit(cache=True, nogil=True, error_model="numpy")  # x / 0 is inf or NaN, as in numpy
def _standardised_counts(r, s, sky, valid, a, d, h, block, edges, table, base, out):
    T, P = r.shape
    fb = np.empty(1)
    ib = fb.view(np.int64)  # the bits of a float64 (:func:`_bin`)
    for t in range(T):  # along the rows of the (time, P) arrays
        for j in range(P):
            if valid[t, j]:
                x = (np.float64(r[t, j]) - a[j] * np.float64(sky[t, j]) - d[j]) / (
                    np.float64(s[t, j]) * np.sqrt(max(1.0 - h[t, j], 1e-3)))
                if np.isfinite(x):
                    fb[0] = abs(x)
                    out[block[j], t, _bin(edges, table, base, fb[0], ib[0])] += 1


#: :func:`_bin`'s cells: float64 values with the same top 19 bits (sign, exponent, 7 bits of the
#: mantissa: 1/128 of an octave, under a tenth of a bin)
_BIN_SHIFT = 45


def _bin_table(edges: np.ndarray) -> tuple[int, np.ndarray]:
    """(the first cell, ``np.searchsorted(edges, c)`` for the lower end ``c`` of every cell from
    the one holding ``edges[0]`` to the one holding ``edges[-1]``): :func:`_bin`'s table."""
    edges = np.asarray(edges, np.float64)
    if not (edges[0] > 0 and np.all(edges[1:] / edges[:-1] > 1 + 2.0 ** -6)):
        raise ValueError("bin edges must be positive and at least two cells apart")
    base = int(edges[:1].view(np.int64)[0]) >> _BIN_SHIFT
    top = int(edges[-1:].view(np.int64)[0]) >> _BIN_SHIFT
    cells = (np.arange(base, top + 1, dtype=np.int64) << _BIN_SHIFT).view(np.float64)
    return base, np.searchsorted(edges, cells).astype(np.int64)


_BIN_BASE, _BIN_TABLE = _bin_table(HIST_EDGES)


@numba.njit(cache=True, nogil=True, inline="always")
def _bin(edges, table, base, v, bits):
    """``np.searchsorted(edges, v)`` (the edges below ``v`` >= 0; ``bits`` its float64 bits): the
    count at the lower end of ``v``'s cell (:func:`_bin_table`), plus one where the cell's one
    possible edge lies below ``v``. Below the first cell no edge is below ``v``, above the last
    every one (the logarithm and a search were a third of the histograms' cost)."""
    n = edges.size
    i = (bits >> _BIN_SHIFT) - base
    if i < 0:
        return 0
    if i >= table.size:
        return n
    k = table[i]
    if k < n and edges[k] < v:
        k += 1
    return k


def _median_abs(counts: np.ndarray) -> np.ndarray:
    """Median of |x| per exposure from its histogram (log-linear interpolation in the bin)."""
    n = counts.sum(axis=1)
    cdf = np.cumsum(counts, axis=1)
    half = 0.5 * n
    k = np.argmax(cdf >= half[:, None], axis=1)  # bin holding the median
    below = np.where(k > 0, np.take_along_axis(cdf, np.maximum(k - 1, 0)[:, None], 1)[:, 0], 0)
    inbin = np.take_along_axis(counts, k[:, None], 1)[:, 0]
    frac = np.where(inbin > 0, (half - below) / np.maximum(inbin, 1), 0.5)
    lo_edge = np.r_[HIST_EDGES[0] * 0.1, HIST_EDGES][k]
    hi_edge = np.r_[HIST_EDGES, HIST_EDGES[-1] * 10][k]
    med = np.exp(np.log(lo_edge) + frac * (np.log(hi_edge) - np.log(lo_edge)))
    return np.where(n > 0, med, np.nan)


class Calibration(NamedTuple):
    """Per exposure (of one block): the factor on ERR and the null moments of clipped squares."""

    scale: np.ndarray  #: (time,) factor on ERR
    m1: np.ndarray  #: (time, len(clips)) E[min(z^2, c^2)] of the calibrated residual z
    m2: np.ndarray  #: (time, len(clips)) E[min(z^2, c^2)^2]
    n: np.ndarray  #: (time,) pixels counted


def calibration(counts: np.ndarray, clip: float | None = 6.0, clips=(4.0,)) -> Calibration:
    """Noise calibration of each exposure from its histogram of ``|residual / ERR|``.

    ``scale`` is the MAD-based scale of the residual in units of ERR, raised (never lowered) to
    the RMS of the calibrated residual clipped at ``clip`` (the sums the temporal statistics make
    are of clipped values); 1 where an exposure has no pixels. ``m1``/``m2`` are the first two
    moments of ``min(z^2, c^2)`` for each ``c`` in ``clips`` (the measured null of the
    excess-variance statistic).
    """
    counts = np.asarray(counts, float)
    n = counts.sum(axis=1)
    scale = MAD_TO_SIGMA * _median_abs(counts)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    c2 = HIST_CENTRES[None, :] ** 2
    if clip:
        zc2 = np.minimum(c2 / scale[:, None] ** 2, clip * clip)
        with np.errstate(invalid="ignore", divide="ignore"):
            rms = np.sqrt((counts * zc2).sum(axis=1) / n)
        scale = scale * np.where(np.isfinite(rms) & (rms > 0), np.maximum(rms, 1.0), 1.0)
    m1 = np.empty((counts.shape[0], len(clips)))
    m2 = np.empty_like(m1)
    for j, c in enumerate(clips):
        v = np.minimum(c2 / scale[:, None] ** 2, c * c)
        with np.errstate(invalid="ignore", divide="ignore"):
            m1[:, j] = (counts * v).sum(axis=1) / n
            m2[:, j] = (counts * v * v).sum(axis=1) / n
    # exposures without pixels: the Gaussian values
    for j, c in enumerate(clips):
        g1, g2 = gaussian_clipped_moments(1.0, c)
        m1[:, j] = np.where(n > 0, m1[:, j], g1)
        m2[:, j] = np.where(n > 0, m2[:, j], g2)
    return Calibration(scale.astype(np.float32), m1, m2, n.astype(np.int64))


def gaussian_clipped_moments(k: float, c: float) -> tuple[float, float]:
    """E[min(k^2 Z^2, c^2)] and E[min(k^2 Z^2, c^2)^2] for Z ~ N(0, 1) (k: the noise in units of
    the expected noise; c: the clip)."""
    return _clipped_moments(float(k), float(c))


@numba.njit(cache=True, nogil=True)
def _clipped_moments(k, c):
    """:func:`gaussian_clipped_moments` compiled: the same libm calls in the same order (the
    powers through ``math.pow``, as Python's ``**`` of floats computes them)."""
    b = c / max(k, 1e-12)  # |Z| < b: unclipped
    p_in = math.erf(b / math.sqrt(2.0))
    phi = math.exp(-0.5 * b * b) / math.sqrt(2.0 * math.pi)
    ez2 = p_in - 2 * b * phi  # E[Z^2 ; |Z| < b]
    ez4 = 3 * p_in - 2 * phi * (math.pow(b, 3.0) + 3 * b)  # E[Z^4 ; |Z| < b]
    out = 1 - p_in
    return k * k * ez2 + c * c * out, math.pow(k, 4.0) * ez4 + math.pow(c, 4.0) * out


def rms_ratio(mean_clipped_square: float, null_mean: float, c: float) -> float:
    """The scatter (in units of the expected noise) whose clipped squares average
    ``mean_clipped_square``, for noise whose clipped squares average ``null_mean`` (measured);
    by bisection on the Gaussian shape, the measured null scaling it."""
    return _rms_ratio(float(mean_clipped_square), float(null_mean), float(c))


@numba.njit(cache=True, nogil=True)
def _rms_ratio(mean_clipped_square, null_mean, c):
    g1 = _clipped_moments(1.0, c)[0]
    target = mean_clipped_square * g1 / max(null_mean, 1e-12)
    if target <= g1:
        return math.sqrt(max(target / g1, 0.0))
    if target >= c * c * 0.999:
        return np.inf
    lo, hi = 1.0, 1e4
    for _ in range(50):
        mid = math.sqrt(lo * hi)
        if _clipped_moments(mid, c)[0] < target:
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi)


def one_sided_sigma(p: float) -> float:
    """The Gaussian significance (sigma) of a one-sided tail probability ``p``."""
    return float(-ndtri(min(max(float(p), 1e-300), 0.5)))


# --------------------------------------------------------------------------------------------
# the tail of a sum of clipped squares (the excess-scatter statistic's null)


def _scipy_scalar(name: str):
    """scipy's scalar ``double f(double)`` special function ``name`` (``cython_special``'s C
    entry point, the code behind the ufunc) for compiled code: bound by a symbol name, not an
    address, so that the kernels calling it stay in numba's cache. Of the function's fused
    variants, the one whose C signature takes and returns a double (the others are complex)."""
    import ctypes

    import llvmlite.binding as llvm
    from numba.extending import get_cython_function_address
    from scipy.special import cython_special

    capsule_name = ctypes.pythonapi.PyCapsule_GetName
    capsule_name.restype, capsule_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    capi = cython_special.__pyx_capi__
    real = [k for k in (name, *(f"__pyx_fuse_{i}{name}" for i in range(4)))
            if k in capi and capsule_name(capi[k]).decode().startswith("double (double, int")]
    if len(real) != 1:
        raise ImportError(f"scipy.special.cython_special: no single double {name}(double) entry point ({real})")
    symbol = f"lrscube_scipy_{name}"
    llvm.add_symbol(symbol, get_cython_function_address("scipy.special.cython_special", real[0]))
    # the second argument is Cython's skip_dispatch flag
    return numba.types.ExternalFunction(symbol, numba.types.float64(numba.types.float64, numba.types.int32))


_c_ndtr = _scipy_scalar("ndtr")
_c_log_ndtr = _scipy_scalar("log_ndtr")
_c_dawsn = _scipy_scalar("dawsn")
_LOG_2 = math.log(2.0)
_LOG_2PI = math.log(2 * math.pi)


@numba.njit(cache=True, nogil=True)
def _logaddexp(x, y):
    """``np.logaddexp`` of two floats, bit for bit (numpy's ``npy_logaddexp``: libm's ``exp``
    and ``log1p``)."""
    if x == y:  # infinities of the same sign
        return x + _LOG_2
    tmp = x - y
    if tmp > 0:
        return x + math.log1p(math.exp(-tmp))
    if tmp <= 0:
        return y + math.log1p(math.exp(tmp))
    return tmp  # NaN


@numba.njit(cache=True, nogil=True)
def _log_mgf_at(theta, c, log_tail):
    """log E[exp(theta min(Z^2, c^2))], Z ~ N(0, 1), given ``log_tail`` = log P(Z < -c) (the
    same for every tilt of one clip, so the bisections take it once)."""
    log_out = theta * c * c + _LOG_2 + log_tail  # |Z| > c
    if abs(theta - 0.5) < 1e-9:
        log_in = math.log(2.0 * c / math.sqrt(2.0 * math.pi))
    elif theta < 0.5:
        a = math.sqrt(1.0 - 2.0 * theta)
        log_in = -math.log(a) + math.log(max(2.0 * _c_ndtr(c * a, 0) - 1.0, 1e-300))
    else:  # integral of exp(b z^2) over |z| < c, b = theta - 1/2, through Dawson's function
        b = theta - 0.5
        x = c * math.sqrt(b)
        log_in = 0.5 * math.log(2.0 / math.pi) + b * c * c + math.log(max(_c_dawsn(x, 0), 1e-300)) - 0.5 * math.log(b)
    return _logaddexp(log_in, log_out)


@numba.njit(cache=True, nogil=True)
def _log_mgf_clipped_square(theta, c):
    """log E[exp(theta min(Z^2, c^2))], Z ~ N(0, 1): libm's logarithm and exponential and
    scipy's special functions (not numpy's SIMD logarithm, which differs from libm's in the last
    bit for about one argument in 4,000), so that the compiled bisections below give the numbers
    of the same code run in Python."""
    return _log_mgf_at(theta, c, _c_log_ndtr(-c, 0))


@numba.njit(cache=True, nogil=True)
def _step(t):
    """The step of the numerical derivatives of the log MGF at tilt ``t``."""
    return 1e-4 * (1.0 + t)


@numba.njit(cache=True, nogil=True)
def _mean_per_term(t, cz, lt):
    """The mean per term that tilt ``t`` describes (the first element of :func:`_lr_log_tail`,
    which does not depend on the number of terms): what the tilt's bisections compare."""
    h = _step(t)
    return (_log_mgf_at(t + h, cz, lt) - _log_mgf_at(t - h, cz, lt)) / (2 * h)


@numba.njit(cache=True, nogil=True)
def _lr_log_tail(t, n, cz, lt):
    """Saddlepoint at tilt ``t`` > 0 for a sum of ``n`` independent ``min(Z^2, cz^2)``: (the mean
    per term it describes, the Lugannani-Rice log tail probability of that sum)."""
    h = _step(t)
    k0 = _log_mgf_at(t, cz, lt)
    kp = _log_mgf_at(t + h, cz, lt)
    km = _log_mgf_at(t - h, cz, lt)
    k1 = (kp - km) / (2 * h)
    k2 = (kp - 2 * k0 + km) / (h * h)
    w2 = 2.0 * n * (t * k1 - k0)
    if not (w2 > 0 and k2 > 0):
        return k1, 0.0
    w = math.sqrt(w2)
    u = t * math.sqrt(n * k2)
    mills = math.exp(_c_log_ndtr(-w, 0) + 0.5 * w * w + 0.5 * _LOG_2PI)
    corr = mills + 1.0 / u - 1.0 / w
    if not corr > 0:
        corr = mills
    return k1, -0.5 * w * w - 0.5 * _LOG_2PI + math.log(corr)


@numba.njit(cache=True, nogil=True)
def _t_max_of(cz):
    lt = _c_log_ndtr(-cz, 0)
    lo, hi = 0.0, 1.0
    while _mean_per_term(hi, cz, lt) < 0.98 * cz * cz and hi < 1e5:
        lo, hi = hi, 2 * hi
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if _mean_per_term(mid, cz, lt) < 0.98 * cz * cz:
            lo = mid
        else:
            hi = mid
    return hi


@functools.lru_cache(maxsize=256)
def _t_max(cz: float) -> float:
    """The largest tilt used: there the mean per term is ~98 % of the clip (the saddlepoint is
    numerically delicate beyond; a sum closer to the clip is taken as this one: conservative)."""
    return _t_max_of(cz)


@numba.njit(cache=True, nogil=True)
def _log_tail_of_mean(xbar, n, cz, t_max):
    """The log tail probability of a sum of ``n`` clipped squares averaging ``xbar`` per term:
    the tilt whose mean is ``xbar`` by bisection below ``t_max``."""
    lt = _c_log_ndtr(-cz, 0)
    lo, hi = 0.0, t_max
    if _mean_per_term(hi, cz, lt) <= xbar:
        return _lr_log_tail(hi, n, cz, lt)[1]
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if _mean_per_term(mid, cz, lt) < xbar:
            lo = mid
        else:
            hi = mid
    return _lr_log_tail(0.5 * (lo + hi), n, cz, lt)[1]


@numba.njit(cache=True, nogil=True)
def _mean_of_log_tail(target, n, cz, t_max):
    """The mean per term of a sum of ``n`` clipped squares whose log tail probability is
    ``target``; NaN if no mean below ``t_max``'s is that improbable."""
    lt = _c_log_ndtr(-cz, 0)
    lo, hi = 1e-9, t_max
    if _lr_log_tail(hi, n, cz, lt)[1] > target:
        return np.nan
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if _lr_log_tail(mid, n, cz, lt)[1] > target:
            lo = mid
        else:
            hi = mid
    return _lr_log_tail(0.5 * (lo + hi), n, cz, lt)[0]


def clipped_square_sigma(total: float, n: int, c: float, scale: float = 1.0) -> float:
    """One-sided significance (sigma) of a sum ``total`` of ``n`` independent ``min(s^2 Z^2, c^2)``
    (Z Gaussian, ``s = scale``): the saddlepoint (Lugannani-Rice) tail of the sum, accurate far
    into the tail where a normal or gamma approximation of a sum of bounded terms is not. 0 below
    the mean."""
    n = int(n)
    if n <= 0:
        return 0.0
    s2 = float(scale) ** 2
    cz = float(c) / max(float(scale), 1e-12)  # the clip in units of s Z
    xbar = float(total) / n / s2  # per term, in units of s^2
    m1, _ = gaussian_clipped_moments(1.0, cz)
    if xbar <= m1:
        return 0.0
    return _sigma_from_log_p(_log_tail_of_mean(xbar, n, cz, _t_max(cz)))


def clipped_square_total(sigma: float, n: int, c: float) -> float:
    """The sum of ``n`` independent ``min(Z^2, c^2)`` whose one-sided significance
    (:func:`clipped_square_sigma`) is ``sigma``; ``n c^2`` (every term at the clip) if no sum
    below that is as significant."""
    cz = float(c)
    mean = _mean_of_log_tail(_log_p_from_sigma(sigma), int(n), cz, _t_max(cz))
    return n * cz * cz if np.isnan(mean) else n * mean


def _log_p_from_sigma(sigma: float) -> float:
    return float(log_ndtr(-float(sigma)))


def _sigma_from_log_p(log_p: float) -> float:
    """Gaussian one-sided significance of a tail probability given as its logarithm."""
    if log_p > -700:
        return one_sided_sigma(np.exp(log_p))
    # asymptotic inverse of the normal tail: log p = -x^2/2 - log(x sqrt(2 pi))
    x = np.sqrt(-2 * log_p)
    for _ in range(20):
        x = np.sqrt(max(-2 * (log_p + np.log(x * np.sqrt(2 * np.pi))), 1e-12))
    return float(x)


def scatter_scan_scale(n: int, sigma: float, c: float) -> np.ndarray:
    """Divisors ``D_L`` (L = 0..n) that make the scan of standardised clipped squares exact at
    ``sigma``: a run of ``L`` exposures whose standardised sum ``y`` reaches ``sigma * D_L`` is
    as improbable as a Gaussian ``sigma`` event (by the saddlepoint tail of its sum), although
    each term is skewed (one clipped square adds up to ``(c^2 - m1) / sd`` ~ 6 sigma). For long
    runs ``D_L -> sqrt(L)``."""
    m1, m2 = gaussian_clipped_moments(1.0, c)
    sd = math.sqrt(m2 - m1 * m1)
    n = int(n)
    out = np.sqrt(np.arange(n + 1, dtype=float))
    if n < 1:
        return out
    # exact on a grid of lengths (all up to 8, then geometric), interpolated in log L between
    grid = np.unique(np.r_[np.arange(1, min(n, 8) + 1), np.round(np.geomspace(8, max(n, 8), 24)).astype(int)])
    grid = grid[grid <= n]
    ratio = np.array([max((clipped_square_total(sigma, int(L), c) - L * m1) / sd / sigma, 1e-6) / math.sqrt(L)
                      for L in grid])
    L = np.arange(1, n + 1)
    out[1:] = np.sqrt(L) * np.interp(np.log(L), np.log(grid), ratio)
    return out


def clipped_ratios(x: np.ndarray, valid: np.ndarray, m1: np.ndarray, c: float) -> np.ndarray:
    """(P,) ``sum min(x^2, c^2) / sum m1`` of each column of the (time, P) arrays over its
    ``valid`` exposures (:func:`neighbour_noise`'s ratio): one compiled pass in the order of
    numpy's sums (:func:`clipped_ratios_numpy`, the reference it is tested against)."""
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(float)
    m1 = np.broadcast_to(np.asarray(m1, float), x.shape)
    return _clipped_ratio_columns(x, np.broadcast_to(np.asarray(valid, bool), x.shape), m1, float(c))


def clipped_ratios_numpy(x: np.ndarray, valid: np.ndarray, m1: np.ndarray, c: float) -> np.ndarray:
    q = np.where(valid, np.minimum(np.asarray(x, float) ** 2, c * c), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return q.sum(axis=0) / np.where(valid, m1, 0.0).sum(axis=0)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _clipped_ratio_columns(x, valid, m1, c):
    T, P = x.shape
    num = np.zeros(P)  # no exposures: 0 / 0, as numpy's empty sums
    den = np.zeros(P)
    cc = c * c
    for t in range(T):
        for j in range(P):
            if valid[t, j]:
                xv = np.float64(x[t, j])
                xx = xv * xv
                a = np.nan if (xx != xx or cc != cc) else (xx if xx < cc else cc)  # np.minimum
                b = m1[t, j]
            else:
                a = 0.0
                b = 0.0
            if t == 0:
                num[j] = a
                den[j] = b
            else:
                num[j] += a
                den[j] += b
    return num / den


def neighbour_noise(x: np.ndarray, valid: np.ndarray, m1: np.ndarray, c: float, shape, window=(15, 5),
                    axis: int = 0, groups: np.ndarray | None = None) -> np.ndarray:
    """Each pixel's noise relative to the calibrated ERR, as its neighbours show it, (P,).

    ``x`` (time, P) are residuals about each pixel's own baseline in units of the calibrated
    ERR; ``m1`` (time, P) the measured null mean of their clipped squares ``min(x^2, c^2)``. A
    pixel's own ratio ``R = sum q / sum m1`` over its exposures is pooled over its
    neighbours (running medians, ``window`` pixels along and across ``axis``, the dispersion):
    what the sky estimate adds where its windows are cut by an edge, or where a pattern is left
    in the sky, the neighbours share; a noisy pixel's excess they do not (it is one of many).
    The factor on the variance, at least 1 (it raises the noise where the neighbours show more,
    never lowers it below the calibration: over few exposures the residuals about a fitted
    baseline are too few to say less); 1 where nothing is known.

    ``groups`` (P,) bool or integer labels: pixels pooled only with their own group (the lit
    pixels with the lit, those outside the light with each other, and those of the narrow gaps
    between slices apart, :func:`lrscube.detection.residuals.unlit_codes`): a gap pixel's noise
    is its read and dark noise about a sky of its own, a lit pixel's beside it the sky's photon
    noise about the slice's sky model; neither says what the other's is.
    """
    ratio = clipped_ratios(x, valid, m1, c)
    img = np.where(np.isfinite(ratio), ratio, np.nan).astype(np.float32).reshape(shape)
    along, across = (int(w) | 1 for w in window)

    def pooled(sel):
        h = running_median(np.where(sel, img, np.nan), along, axis=axis, min_count=3)
        if sel is not True:
            h = np.where(sel, h, np.nan)
        return running_median(h, across, axis=1 - axis, min_count=1)

    labels = None if groups is None else np.unique(np.asarray(groups))
    if labels is None or labels.size == 1:
        h = pooled(True)
    else:
        g = np.asarray(groups).reshape(shape)
        h = np.full(shape, np.nan, np.float32)
        for k in labels:
            h = np.where(g == k, pooled(g == k), h)
    h = np.where(np.isfinite(h), h, 1.0)
    return np.clip(h, 1.0, 100.0).reshape(-1)


def line_response(a, usable, shape, window: int = 15, axis: int = 0) -> np.ndarray:
    """(P,) the response ``1 + a`` that a pixel's line across the dispersion shares: the running
    median over ``window`` pixels across it (``axis`` is the dispersion axis of ``shape`` (y, x))
    of the ``usable`` pixels' responses, at most 1 (1 where none is usable).

    Where the light ends along the dispersion (an image slicer's slice ends over a few rows),
    every pixel of those rows sees a fraction of the light its column's sky model predicts from
    the rows inside: a response well below its column neighbours' that the whole row shares. A
    low-QE pixel is low against the pixels beside it too; the physical limit on a pixel's
    response is therefore taken relative to this line response."""
    g = np.where(np.asarray(usable, bool) & np.isfinite(a), 1.0 + np.asarray(a, float), np.nan).reshape(shape)
    m = np.asarray(running_median(g.astype(np.float32), int(window) | 1, axis=1 - axis, min_count=3), float)
    return np.minimum(np.where(np.isfinite(m), m, 1.0), 1.0).reshape(-1)
