"""Excess variance of a pixel about its own baseline: the noisy / telegraph screen.

A noisy pixel, or a telegraph pixel switching around a mean that stays near the sky, adds a
variance of its own, in DN/s^2, to the noise the exposure's ERR predicts. Its normalised
residual ``x_t = e_t / s_t`` then has ``E[x_t^2] = 1 + tau^2 / s_t^2``: a precise (long)
exposure shows the same excess many times more clearly than a short one. The statistic here is
the weighted sum of clipped squares about their measured null,

    u_t = w_t (min(x_t^2, c^2) - m1_t),   v_t = w_t^2 (m2_t - m1_t^2),   w_t = s_ref / s_t,

over a run of exposures, ``(sum u - max u) / sqrt(sum v)``: the clip at ``c`` = ``clip_sigma``
(6) keeps most of a precise exposure's excess (a clip at 3 sigma, as the per-run scatter
statistic uses, caps every exposure at the same share whatever its precision), the weight
``1 / s`` (between 1, equal shares, and ``1 / s^2``, the locally most powerful weight for an
additive variance when ERR is exact) keeps one long exposure from dominating the sum, and the
run's largest term is left out twice, so no two raised exposures (cosmic-ray residuals, a
shower, a latent) reach the threshold by themselves, whatever their size. A pixel that swings
beyond the event threshold both ways, or has three exposures beyond it within a few of each
other, or a rise and a fall beyond the tile's measured swing level (:func:`swing_level`) within
a few, or two falls beyond its fall level (:func:`fall_level`) within a few (:func:`trims`), has
its largest term left out once: a cosmic ray only adds charge and hits a pixel in ~1e-4 of its
exposures (a latent only decays from an excess), so such excursions are the pixel's own, and trimming
twice left a strongly noisy pixel seen in a few exposures under the threshold.

Everything here is pure numpy on arrays (time, pixels) or 1-D series; :mod:`lrscube.detection.detect`
maps it over the tiles, :mod:`lrscube.detection.states` uses the exact run search for the onset and the
recovery.
"""
from __future__ import annotations

import warnings

import numba
import numpy as np

from . import running
from .temporal import geometric_lengths

#: the run's largest term is left out this many times: no two exposures (two cosmic-ray
#: residuals, a latent over two exposures) reach the threshold by themselves, whatever their size
TRIM = 2
#: ... and this many times for a pixel that swings both ways (:func:`trims`): no single
#: exposure reaches it by itself
TRIM_SWINGING = 1


def trims(x: np.ndarray, sigma: float, window: int | None = None, swing: float = np.inf,
          own_known=None, fall: float = np.inf) -> np.ndarray:
    """(pixels,) how many times each pixel's largest term is left out: ``TRIM_SWINGING`` for a
    pixel whose excursions are its own, else ``TRIM``. Its own: exposures beyond ``sigma`` (the
    single-exposure event threshold) above and below its baseline and at least three in all, or
    (``window`` given) within ``2 window + 1`` consecutive exposures three beyond it either way,
    or one above ``swing`` and one below ``-swing`` (:func:`swing_level`), or two below ``-fall``
    (:func:`fall_level`), as
    :func:`lrscube.detection.detect.keep_whole_pixels` keeps a pixel's events as its own.
    ``x`` (time, pixels): the normalised residual (NaN: not used). Three exposures that far out
    in one pixel are a defect's or a telegraph pixel's, not cosmic rays (which hit ~1e-4 of a
    pixel's exposures and only add charge); so is a fall beside a rise where the data show such
    pairs to be rarer than the false-alarm rate. ``own_known`` (pixels,) bool or None: pixels known to
    be their own otherwise (:func:`lrscube.detection.detect.own_excursions`)."""
    x = np.asarray(x)
    with np.errstate(invalid="ignore"):
        up, down = x > sigma, x < -sigma
    n_out = up.sum(axis=0) + down.sum(axis=0)
    both = up.any(axis=0) & down.any(axis=0)
    own = both & (n_out >= 3)
    if own_known is not None:
        own |= np.asarray(own_known, bool)
    if window is not None and x.shape[0]:
        w = min(2 * int(window) + 1, x.shape[0])
        # a few pixels of a tile: only theirs are counted (a swing needs both signs beyond sigma)
        cols = np.flatnonzero(((n_out >= 3) | (both & np.isfinite(swing))
                               | ((down.sum(axis=0) >= 2) & np.isfinite(fall))) & ~own)
        own[cols] = ((_in_window(up[:, cols], w) + _in_window(down[:, cols], w)).max(axis=0) >= 3) | swings(
            x[:, cols], swing, window) | falls(x[:, cols], fall, window)
    return np.where(own, float(TRIM_SWINGING), float(TRIM))


def swings(x: np.ndarray, swing: float, window: int) -> np.ndarray:
    """(pixels,) bool: a rise above ``swing`` and a fall below ``-swing`` within ``2 window + 1``
    consecutive exposures (``x`` (time, pixels): the normalised residual, NaN not used; ``swing``:
    :func:`swing_level`, inf: never)."""
    x = np.asarray(x)
    if not np.isfinite(swing) or not x.shape[0]:
        return np.zeros(x.shape[1:], bool)
    w = min(2 * int(window) + 1, x.shape[0])
    with np.errstate(invalid="ignore"):
        rise, fall = _in_window(x > swing, w), _in_window(x < -swing, w)
    return ((rise > 0) & (fall > 0)).any(axis=0)


def falls(x: np.ndarray, fall: float, window: int) -> np.ndarray:
    """(pixels,) bool: two exposures below ``-fall`` within ``2 window + 1`` consecutive
    exposures (``x`` (time, pixels): the normalised residual, NaN not used; ``fall``:
    :func:`fall_level`, inf: never)."""
    x = np.asarray(x)
    if not np.isfinite(fall) or not x.shape[0]:
        return np.zeros(x.shape[1:], bool)
    w = min(2 * int(window) + 1, x.shape[0])
    with np.errstate(invalid="ignore"):
        return (_in_window(x < -fall, w) >= 2).any(axis=0)


def _in_window(b: np.ndarray, w: int) -> np.ndarray:
    """(windows, pixels): how many exposures of ``b`` (time, pixels) each window of ``w``
    consecutive exposures holds."""
    c = np.concatenate([np.zeros((1,) + b.shape[1:], np.int64), np.cumsum(b, axis=0)])
    return c[w:] - c[:-w]


def swing_level(x: np.ndarray, sigma: float, window: int, alpha: float, step: float = 0.5,
                top: float = 100.0) -> float:
    """The least level ``f >= sigma`` (on a grid of ``step``) beyond which an exposure above a
    pixel's baseline and one below it within ``2 window + 1`` consecutive exposures arise by
    chance in fewer than ``alpha`` of the pixels, by the tails the data show:
    ``n (2 window + 1) P(x > f) P(x < -f)`` (``x`` (time, pixels): normalised residuals, NaN
    not used; ``n`` its exposures; a count of none taken as one, so a few values cannot claim a
    rarity they do not measure). inf where no level does. The tails are those of the pixels
    with one exposure beyond ``sigma``: a chance pair is two such single excursions in one
    pixel, while a defect's swings (a noisy or telegraph pixel, a step) are several.

    A cosmic ray only adds charge, so a fall far below the baseline beside a rise is a pixel
    swinging both ways, unless the noise itself makes such falls: Gaussian noise falls 5 sigma
    in 3e-7 of its exposures, the simulated sets' residuals in ~4e-6, Student-t noise with 3
    degrees of freedom in ~2e-3 (where such pairs are then everywhere and the level is high)."""
    return pair_levels(x, sigma, window, alpha, step, top)[0]


def fall_level(x: np.ndarray, sigma: float, window: int, alpha: float, step: float = 0.5,
               top: float = 100.0) -> float:
    """As :func:`swing_level`, for two exposures below the baseline within ``2 window + 1``
    consecutive exposures: ``n (2 window + 1) P(x < -f)^2``, by the tail of the pixels with one
    exposure beyond ``sigma``. Neither a cosmic ray nor a latent takes charge away, so where the
    data show such pairs to be rarer than the false-alarm rate, two falls that far within a few
    exposures are the pixel's own (a noisy pixel in a visit, swinging below its baseline
    twice), as a rise beside a fall is."""
    return pair_levels(x, sigma, window, alpha, step, top)[1]


def pair_levels(x: np.ndarray, sigma: float, window: int, alpha: float, step: float = 0.5,
                top: float = 100.0) -> tuple[float, float]:
    """(:func:`swing_level`, :func:`fall_level`) of ``x`` from one count of its tails."""
    t = _single_tails(x, sigma, step, top)
    return (_least_level(t, window, alpha, lambda up, down: up * down),
            _least_level(t, window, alpha, lambda up, down: down * down))


def _single_tails(x, sigma: float, step: float, top: float):
    """(levels, P(x > level), P(x < -level), exposures) over the pixels of ``x`` (time, pixels)
    with one exposure beyond ``sigma`` (a count of none taken as one); None without values."""
    x = np.asarray(x)
    n_values = int(np.isfinite(x).sum())
    if n_values == 0:
        return None
    with np.errstate(invalid="ignore"):
        out = np.abs(x) > sigma
    single = x[:, out.sum(axis=0) == 1]
    v = single[np.abs(np.nan_to_num(single)) > sigma]
    ups = np.sort(v[v > 0])
    downs = np.sort(-v[v < 0])
    levels = np.arange(float(sigma), float(top) + step / 2, step)
    n_up = np.maximum(ups.size - np.searchsorted(ups, levels, side="right"), 1)
    n_down = np.maximum(downs.size - np.searchsorted(downs, levels, side="right"), 1)
    return levels, n_up / n_values, n_down / n_values, x.shape[0]


def _least_level(tails, window: int, alpha: float, pair) -> float:
    """The least of ``tails``' levels at which ``n (2 window + 1) pair(P_up, P_down) <= alpha``
    (:func:`_single_tails`); inf where none is."""
    if tails is None or not alpha > 0:
        return float("inf")
    levels, p_up, p_down, n = tails
    chance = n * (2 * int(window) + 1) * pair(p_up, p_down)
    ok = np.flatnonzero(chance <= alpha)
    return float(levels[ok[0]]) if ok.size else float("inf")


def terms(x: np.ndarray, s: np.ndarray, clip, m1, m2, *, jump=None, null=None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted terms ``(u, v)`` of the excess-variance statistic, shaped like ``x``.

    ``x`` the normalised residual about the pixel's baseline (NaN: not used), ``s`` its noise
    (DN/s), ``clip`` the clip of ``x`` per exposure (sigma), ``m1, m2`` the null mean and second
    moment of ``min(x^2, clip^2)`` (broadcastable). Weights ``s_ref / s`` with ``s_ref`` the
    median noise of the pixel (along axis 0): a unit-free scale, so ``u / sqrt(v)`` sums are in
    sigma. Unused exposures get ``u = v = 0``. One compiled pass per pixel
    (:func:`_terms_columns`; :func:`terms_numpy` is the same in numpy): numpy's median along a
    short axis goes through masked arrays and was most of the screen's cost.

    ``jump`` (bool, broadcastable) and ``null`` (two floats): the moments ``m1, m2`` where
    ``jump``, ``null`` elsewhere, i.e. the terms of ``np.where(jump, m1, null[0])`` and
    ``np.where(jump, m2, null[1])`` without those two float64 arrays.
    """
    x = _float(x)
    if x.ndim == 0:
        u, v = terms(x[None], s, clip, m1, m2, jump=jump, null=null)
        return u[0], v[0]
    shape = x.shape
    n, P = shape[0], int(np.prod(shape[1:], dtype=np.int64))  # P: also where n is 0
    cols = lambda a: np.broadcast_to(_float(a), shape).reshape(n, P)  # noqa: E731
    if jump is None:
        jump, null = np.ones(1, bool), (0.0, 0.0)  # m1, m2 everywhere
    jc = np.broadcast_to(np.asarray(jump, bool), shape).reshape(n, P)
    u, v = _terms_columns(cols(x), cols(s), cols(clip), cols(m1), cols(m2), jc, float(null[0]), float(null[1]))
    return u.reshape(shape), v.reshape(shape)


def _float(a) -> np.ndarray:
    """``a`` as float32 or float64 as it is (the kernels widen float32 values exactly, as
    ``astype(float)`` does, without a float64 copy of a whole tile), else as float64."""
    a = np.asarray(a)
    return a if a.dtype in (np.float32, np.float64) else a.astype(float)


def terms_numpy(x: np.ndarray, s: np.ndarray, clip, m1, m2) -> tuple[np.ndarray, np.ndarray]:
    """:func:`terms` in numpy (the reference the compiled pass is tested against)."""
    x = np.asarray(x, float)
    s = np.asarray(s, float)
    ok = np.isfinite(x) & np.isfinite(s) & (s > 0)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a pixel no exposure sees: all NaN
        inv = np.where(ok, 1.0 / s, np.nan)
        ref = np.nanmedian(inv, axis=0)
        w = np.where(ok, inv / ref, 0.0)
        c = np.broadcast_to(np.asarray(clip, float), x.shape)
        q = np.minimum(np.where(ok, x * x, 0.0), c * c)
        m1 = np.broadcast_to(np.asarray(m1, float), x.shape)
        m2 = np.broadcast_to(np.asarray(m2, float), x.shape)
        u = np.where(ok, w * (q - m1), 0.0)
        v = np.where(ok, w * w * np.maximum(m2 - m1 * m1, 1e-12), 0.0)
    return u, v


@numba.njit(cache=True, nogil=True)
def _nan_min(a, b):
    """np.minimum of two floats: NaN if either is."""
    if a != a or b != b:
        return np.nan
    return a if a < b else b


@numba.njit(cache=True, nogil=True)
def _nan_max(a, b):
    """np.maximum of two floats: NaN if either is."""
    if a != a or b != b:
        return np.nan
    return a if a > b else b


@numba.njit(cache=True, nogil=True)
def _terms_columns(x, s, clip, m1, m2, jump, g1, g2):
    """:func:`terms_numpy` over the columns of (T, P) float32 or float64 arrays (any strides; every
    value read widened to float64): per column the median of ``1 / s`` over its usable exposures
    (:func:`lrscube.detection.running.median_about` the previous pixel's, the same number as a
    quickselect), then the terms row by row (contiguous reads and writes); the moments ``m1, m2``
    where ``jump``, ``g1, g2`` elsewhere."""
    T, P = x.shape
    u = np.empty((T, P))
    v = np.empty((T, P))
    buf = np.empty(T)
    band = np.empty(T)
    ref = np.full(P, np.nan)  # NaN: no usable exposure (whose terms are all 0)
    last = np.nan  # the previous pixel's median: its noise follows the same exposures
    for j in range(P):
        m = 0
        for t in range(T):
            xv, sv = np.float64(x[t, j]), np.float64(s[t, j])
            if np.isfinite(xv) and np.isfinite(sv) and sv > 0:
                buf[m] = 1.0 / sv
                m += 1
        if m == 0:
            continue
        ref[j] = running.median_about(buf, m, 0.98 * last, 1.02 * last, band)
        last = ref[j]
    for t in range(T):
        for j in range(P):
            xv, sv = np.float64(x[t, j]), np.float64(s[t, j])
            if np.isfinite(xv) and np.isfinite(sv) and sv > 0:
                w = (1.0 / sv) / ref[j]
                c = np.float64(clip[t, j])
                jt = jump[t, j]
                a1 = np.float64(m1[t, j]) if jt else g1
                a2 = np.float64(m2[t, j]) if jt else g2
                q = _nan_min(xv * xv, c * c)
                u[t, j] = w * (q - a1)
                v[t, j] = w * w * _nan_max(a2 - a1 * a1, 1e-12)
            else:
                u[t, j] = 0.0
                v[t, j] = 0.0
    return u, v


def screen_values(e: np.ndarray, s: np.ndarray, clip, vc, m1, m2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, z, y)`` (float64, shaped like ``e``) of the residuals ``e`` about the baselines
    (float64) and their noise ``s`` (time, pixels): ``x = e / s``, the clipped ``z = np.clip(x,
    -clip, clip)`` of the level screen and the standardised clipped squares ``y = (min(x^2,
    vc^2) - m1) / sqrt(max(m2 - m1^2, 1e-12))`` of the scatter screen (``clip, vc, m1, m2``
    broadcastable; float32 values widened), the numbers of those numpy expressions in one
    compiled pass, without their dozen whole-group temporaries."""
    e = np.asarray(e, float)
    shape = e.shape
    e2 = e.reshape((shape[0], int(np.prod(shape[1:], dtype=np.int64))) if e.ndim else (1, 1))
    b = lambda a: np.broadcast_to(_float(a), shape).reshape(e2.shape)  # noqa: E731  (views for 2-D)
    x = np.empty(e2.shape)
    z = np.empty(e2.shape)
    y = np.empty(e2.shape)
    _screen_values(e2, b(s), b(clip), b(vc), b(m1), b(m2), x, z, y)
    return x.reshape(shape), z.reshape(shape), y.reshape(shape)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _screen_values(e, s, clip, vc, m1, m2, x, z, y):
    """:func:`screen_values` row by row (np.clip, np.minimum and np.maximum keep a NaN)."""
    T, P = e.shape
    for t in range(T):
        for j in range(P):
            xv = np.float64(e[t, j]) / np.float64(s[t, j])
            x[t, j] = xv
            c = np.float64(clip[t, j])
            z[t, j] = _nan_min(_nan_max(xv, -c), c)
            cv = np.float64(vc[t, j])
            a1 = np.float64(m1[t, j])
            q = _nan_min(xv * xv, cv * cv)
            y[t, j] = (q - a1) / np.sqrt(_nan_max(np.float64(m2[t, j]) - a1 * a1, 1e-12))


def scan(u: np.ndarray, v: np.ndarray, *, min_length: int = 3, ratio: float = 1.25, trim=None) -> np.ndarray:
    """Largest trimmed run statistic ``(sum u - trim max(max u, 0)) / sqrt(sum v)`` per pixel
    (``trim``: one number or one per pixel, :func:`trims`; default ``TRIM``).

    ``u, v`` (time, pixels) from :func:`terms`; runs of every start and of lengths on a
    geometric grid (:func:`lrscube.detection.temporal.geometric_lengths`) of at least ``min_length``:
    O(N log N) per pixel, like the level scan (compiled: :func:`lrscube.detection.running.max_trimmed_ratio`).
    ``-inf`` where no run fits.
    """
    u = np.asarray(u, float)
    v = np.asarray(v, float)
    if u.ndim == 1:
        return scan(u[:, None], v[:, None], min_length=min_length, ratio=ratio, trim=trim)[0]
    n = u.shape[0]
    lengths = [int(L) for L in geometric_lengths(n, ratio) if max(min_length, 1) <= L <= n]
    if not lengths:
        return np.full(u.shape[1:], -np.inf)
    tr = TRIM if trim is None else np.broadcast_to(np.asarray(trim, float), u.shape[1:]).reshape(-1)
    flat = running.max_trimmed_ratio(u.reshape(n, -1), v.reshape(n, -1), lengths, tr)
    return flat.reshape(u.shape[1:])


def full(u: np.ndarray, v: np.ndarray, cols=None, pairwise: bool | None = None, trim=None) -> np.ndarray:
    """The trimmed statistic over all of each pixel's exposures (axis 0): the one number per
    pixel whose distribution over the pixels measures the null (:func:`null_scale`); ``trim``
    as for :func:`scan` (per pixel: one for each of all the pixels, not only ``cols``).

    ``cols``: of those pixels (columns) alone, without copying them. The sums over exposures
    are numpy's: exposure after exposure (its axis-0 sums of C-ordered arrays), or ``pairwise``
    (its sums of a pixel's exposures held contiguous: Fortran-ordered arrays, and the copy
    ``u[:, cols]`` of C-ordered ones); by default as numpy sums ``u`` itself. C- or
    Fortran-ordered 2-D terms take one compiled pass (:func:`_full_columns`, tested bit for bit
    against :func:`full_numpy`), others numpy."""
    u = np.asarray(u, float)
    v = np.asarray(v, float)
    if u.ndim == 2 and u.shape == v.shape and u.shape[0] > 0:
        if pairwise is None and u.flags.c_contiguous and v.flags.c_contiguous:
            pairwise = False
        elif pairwise is None and u.flags.f_contiguous and v.flags.f_contiguous:
            pairwise = True
        if pairwise is not None:
            c = np.arange(u.shape[1]) if cols is None else np.asarray(cols, np.int64).reshape(-1)
            tr = np.ascontiguousarray(np.broadcast_to(np.asarray(TRIM if trim is None else trim, float), u.shape[1:]))
            return _full_columns(u, v, tr, c, bool(pairwise))
    if cols is not None:
        u, v = u[:, cols], v[:, cols]
        trim = None if trim is None or np.ndim(trim) == 0 else np.asarray(trim)[cols]
    order = np.asfortranarray if pairwise else np.asarray
    return full_numpy(order(u), order(v), trim)


def full_numpy(u: np.ndarray, v: np.ndarray, trim=None) -> np.ndarray:
    """:func:`full` in numpy (the reference the compiled pass is tested against; the order of
    its sums follows the arrays' layout)."""
    u = np.asarray(u, float)
    v = np.asarray(v, float)
    tr = TRIM if trim is None else np.asarray(trim, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (u.sum(axis=0) - tr * np.maximum(u.max(axis=0), 0.0)) / np.sqrt(v.sum(axis=0))


@numba.njit(cache=True, nogil=True)
def _pairwise_sum(a, n):
    """numpy's sum of the contiguous ``a[:n]``, its pairwise summation: blocks of up to 128
    values summed with eight running sums, longer runs halved (at a multiple of 8) and the
    halves' sums added; the halving done with a stack (a recursive kernel would not cache)."""
    lo_s = np.empty(128, np.int64)
    n_s = np.empty(128, np.int64)
    join_s = np.empty(128, np.bool_)
    vals = np.empty(128)
    top = 1
    lo_s[0], n_s[0], join_s[0] = 0, n, False
    nv = 0
    while top > 0:
        top -= 1
        lo, m, join = lo_s[top], n_s[top], join_s[top]
        if join:  # both halves done: left + right
            vals[nv - 2] = vals[nv - 2] + vals[nv - 1]
            nv -= 1
        elif m <= 128:
            vals[nv] = _pairwise_block(a, lo, m)
            nv += 1
        else:
            m2 = m // 2
            m2 -= m2 % 8
            lo_s[top], n_s[top], join_s[top] = lo, m, True
            lo_s[top + 1], n_s[top + 1], join_s[top + 1] = lo + m2, m - m2, False
            lo_s[top + 2], n_s[top + 2], join_s[top + 2] = lo, m2, False  # popped first: the left half
            top += 3
    return vals[0]


@numba.njit(cache=True, nogil=True)
def _pairwise_block(a, lo, n):
    """numpy's pairwise sum of ``a[lo:lo + n]``, n <= 128."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - n % 8:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _full_columns(u, v, trim, cols, pairwise):
    """:func:`full_numpy` of columns ``cols`` of (T, P) arrays, T >= 1: the sums exposure after
    exposure from 0, or ``pairwise`` (:func:`_pairwise_sum`); the maximum keeping any
    NaN (``np.maximum``'s)."""
    T = u.shape[0]
    out = np.empty(cols.shape[0])
    bu = np.empty(T)
    bv = np.empty(T)
    for k in range(cols.shape[0]):
        j = cols[k]
        mu = u[0, j]
        for t in range(T):
            x = u[t, j]
            bu[t] = x
            bv[t] = v[t, j]
            if mu == mu and (x != x or x > mu):
                mu = x
        su = 0.0  # numpy's sums start from 0 (-0.0 terms sum to 0.0)
        sv = 0.0
        if pairwise:
            su += _pairwise_sum(bu, T)
            sv += _pairwise_sum(bv, T)
        else:
            for t in range(T):
                su += bu[t]
                sv += bv[t]
        m = mu if (mu >= 0.0 or mu != mu) else 0.0
        out[k] = (su - trim[j] * m) / np.sqrt(sv)
    return out


def full_terms(x: np.ndarray, s: np.ndarray, clip, m1, m2, cols=None, trim=None, div=None) -> np.ndarray:
    """``full(*terms(x / div, s, clip, m1, m2), cols, trim=trim)`` (sums in exposure order, as
    :func:`full` takes C-ordered terms) in one compiled pass per pixel, without the (time,
    pixel) float64 terms: the null of a tile needs only each pixel's full-series statistic.
    ``div`` (pixels,): a divisor of each pixel's ``x`` (default none). Arrays (time, pixels);
    anything else (no exposures, 1-D) through :func:`terms` and :func:`full`."""
    x = _float(x)
    if x.ndim != 2 or x.shape[0] == 0:
        if div is not None:
            x = x / np.asarray(div, float)
        u, v = terms(x, s, clip, m1, m2)
        return full(u, v, cols, pairwise=False, trim=trim)
    n, P = x.shape
    b = lambda a: np.broadcast_to(_float(a), (n, P))  # noqa: E731
    c = np.arange(P) if cols is None else np.asarray(cols, np.int64).reshape(-1)
    tr = np.ascontiguousarray(np.broadcast_to(np.asarray(TRIM if trim is None else trim, float), (P,)))
    dv = np.ones(P) if div is None else np.ascontiguousarray(np.broadcast_to(np.asarray(div, float), (P,)))
    return _full_terms_columns(x, b(s), b(clip), b(m1), b(m2), c, tr, dv, div is not None)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _full_terms_columns(x, s, clip, m1, m2, cols, trim, div, divide):
    """:func:`_full_columns` (exposure order) of :func:`_terms_columns`' terms of ``x / div``,
    column by column: the same median of ``1 / s`` per pixel, the same terms, added as they
    are made. Numpy's error model, as numpy's ``x / div`` and :func:`_full_columns` (the terms'
    own divisors are never zero)."""
    T = x.shape[0]
    out = np.empty(cols.shape[0])
    buf = np.empty(T)
    band = np.empty(T)
    last = np.nan
    for k in range(cols.shape[0]):
        j = cols[k]
        dj = div[j]
        m = 0
        for t in range(T):
            xv, sv = np.float64(x[t, j]), np.float64(s[t, j])
            if divide:
                xv = xv / dj
            if np.isfinite(xv) and np.isfinite(sv) and sv > 0:
                buf[m] = 1.0 / sv
                m += 1
        ref = np.nan
        if m > 0:
            ref = running.median_about(buf, m, 0.98 * last, 1.02 * last, band)
            last = ref
        su = 0.0  # numpy's sums start from 0 (-0.0 terms sum to 0.0)
        sv_sum = 0.0
        mu = 0.0
        for t in range(T):
            xv, sv = np.float64(x[t, j]), np.float64(s[t, j])
            if divide:
                xv = xv / dj
            if m > 0 and np.isfinite(xv) and np.isfinite(sv) and sv > 0:
                w = (1.0 / sv) / ref
                c = np.float64(clip[t, j])
                a1 = np.float64(m1[t, j])
                q = _nan_min(xv * xv, c * c)
                u = w * (q - a1)
                v = w * w * _nan_max(np.float64(m2[t, j]) - a1 * a1, 1e-12)
            else:
                u = 0.0
                v = 0.0
            if t == 0:
                mu = u
            elif mu == mu and (u != u or u > mu):
                mu = u
            su += u
            sv_sum += v
        mx = mu if (mu >= 0.0 or mu != mu) else 0.0
        out[k] = (su - trim[j] * mx) / np.sqrt(sv_sum)
    return out


def null_scale(stat: np.ndarray, min_pixels: int = 100) -> float:
    """Robust scale (1.4826 MAD) of the full-series statistic over the pixels, at least 1.

    Defects are a small fraction of the pixels, so the bulk of ``stat`` is the null on the data
    at hand. A statistic standardised with the right per-exposure null moments has unit scale;
    a scale above 1 (noise ERR does not predict, a null the calibration missed) widens every
    run's null by the same factor, and the threshold with it. Never below 1: the trimming makes
    the null narrower than the moments say, and a threshold is not lowered on that account.
    Fewer than ``min_pixels`` finite values: 1.
    """
    v = np.asarray(stat, float)
    v = v[np.isfinite(v)]
    if v.size < min_pixels:
        return 1.0
    med = float(np.median(v))
    return max(1.0, 1.4826 * float(np.median(np.abs(v - med))))


def best_run(u: np.ndarray, v: np.ndarray, min_length: int = 3, lo: int = 0, hi: int | None = None,
             trim: float = TRIM) -> tuple[int, int, float]:
    """The most significant trimmed run ``[i, j)`` of one pixel's terms (1-D), exactly
    (``trim``: :func:`trims`).

    Searched over every start and end between ``lo`` and ``hi`` (O(n^2), for the few candidate
    pixels only). Returns ``(i, j, statistic)``; ``(lo, lo, -inf)`` when no run fits.
    """
    u = np.asarray(u, float)
    v = np.asarray(v, float)
    n = u.size
    hi = n if hi is None else hi
    m = hi - lo
    if m < max(min_length, 1):
        return lo, lo, -np.inf
    a, b, st = _best_trimmed_run(np.ascontiguousarray(u[lo:hi]), np.ascontiguousarray(v[lo:hi]),
                                 int(max(min_length, 1)), float(trim))
    if not np.isfinite(st):
        return lo, lo, -np.inf
    return lo + int(a), lo + int(b), float(st)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _best_maximum(x, y):
    """``np.maximum`` of two floats as numpy computes it here: NaN if either is, else ``x`` where
    ``x > y``, else ``y`` (of two zeros the second, whatever their signs)."""
    return x if (x > y or x != x) else y


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _best_trimmed_run(uu, vv, min_length, trim):
    """:func:`best_run`'s scan, compiled: each run's statistic ``(U_j - U_i - trim max(0,
    max(uu[i:j]))) / sqrt(V_j - V_i)`` (``U, V``: prefix sums from 0, as ``np.cumsum``), the
    first largest finite one in (start, end) order as ``np.argmax`` finds it over the (start,
    end) table it replaces; ``(0, 0, -inf)`` when none is finite."""
    m = uu.size
    U = np.zeros(m + 1)
    V = np.zeros(m + 1)
    if m:
        U[1], V[1] = uu[0], vv[0]  # np.cumsum starts from the first term, not 0 + it (-0.0)
    for k in range(1, m):
        U[k + 1] = U[k] + uu[k]
        V[k + 1] = V[k] + vv[k]
    best, bi, bj = -np.inf, 0, 0
    for i in range(m):
        top = uu[i]  # np.maximum.accumulate from the start
        for j in range(i + 1, m + 1):
            if j > i + 1:
                top = _best_maximum(top, uu[j - 1])
            if j - i < min_length:
                continue
            st = (U[j] - U[i] - trim * _best_maximum(top, 0.0)) / np.sqrt(V[j] - V[i])
            if st > best and np.isfinite(st):
                best, bi, bj = st, i, j
    return bi, bj, best


def rms_ratio(x: np.ndarray, s: np.ndarray, clip, m1) -> float:
    """The scatter of a run in units of its expected noise, weighted like the statistic:
    ``sqrt(sum w q / sum w m1)`` (``q`` the clipped squares, ``m1`` their null mean, so a normal
    run has 1 whatever its clip)."""
    x = np.asarray(x, float)
    s = np.asarray(s, float)
    ok = np.isfinite(x) & np.isfinite(s) & (s > 0)
    if not ok.any():
        return 1.0
    w = np.where(ok, 1.0 / np.where(ok, s, 1.0), 0.0)
    c = np.broadcast_to(np.asarray(clip, float), x.shape)
    q = np.minimum(np.where(ok, x * x, 0.0), c * c)
    m = np.broadcast_to(np.asarray(m1, float), x.shape)
    den = float(np.sum(w * np.where(ok, m, 0.0)))
    return float(np.sqrt(np.sum(w * q) / den)) if den > 0 else 1.0


#: a line shares an excess variance when its median ratio exceeds 1 by this many standard
#: errors of that median (from the spread of its pixels' ratios): an interior line never does
#: by chance (~3e-7 per line), a line where the sky model is cut does by tens
SHARED_SIGMA = 5.0


def weighted_ratios(x: np.ndarray, s: np.ndarray, clip, m1) -> np.ndarray:
    """Per pixel (column of the (time, P) arrays), ``sum w q / sum w m1`` over its usable
    exposures, ``w = 1 / s``, ``q = min(x^2, clip^2)`` (:func:`line_factor`'s ratio). One
    compiled pass (:func:`_weighted_ratio_columns`; :func:`weighted_ratios_numpy` is the same
    in numpy, whose float64 temporaries of whole tiles were most of its cost)."""
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(float)
    n, P = x.shape[0], int(np.prod(x.shape[1:], dtype=np.int64))
    cols = lambda a: np.broadcast_to(np.asarray(a, float), x.shape).reshape(n, P)  # noqa: E731
    s = np.asarray(s)
    s = np.broadcast_to(s if s.dtype in (np.float32, np.float64) else s.astype(float), x.shape).reshape(n, P)
    return _weighted_ratio_columns(x.reshape(n, P), s, cols(clip), cols(m1)).reshape(x.shape[1:])


def weighted_ratios_numpy(x: np.ndarray, s: np.ndarray, clip, m1) -> np.ndarray:
    """:func:`weighted_ratios` in numpy (the reference the compiled pass is tested against)."""
    x = np.asarray(x, float)
    s = np.asarray(s, float)
    ok = np.isfinite(x) & np.isfinite(s) & (s > 0)
    w = np.where(ok, 1.0 / np.where(ok, s, 1.0), 0.0)
    c = np.broadcast_to(np.asarray(clip, float), x.shape)
    q = np.minimum(np.where(ok, x * x, 0.0), c * c)
    m = np.broadcast_to(np.asarray(m1, float), x.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w * q).sum(axis=0) / (w * np.where(ok, m, 0.0)).sum(axis=0)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _weighted_ratio_columns(x, s, clip, m1):
    """:func:`weighted_ratios_numpy` per column, the sums in its order (exposure after exposure,
    the unusable ones adding ``0 * min(0, clip^2)`` and ``0 * 0`` as there), along the rows."""
    T, P = x.shape
    num = np.zeros(P)  # no exposures: 0 / 0, as numpy's empty sums
    den = np.zeros(P)
    for t in range(T):
        for j in range(P):
            xv = np.float64(x[t, j])
            sv = np.float64(s[t, j])
            c = clip[t, j]
            if np.isfinite(xv) and np.isfinite(sv) and sv > 0:
                w = 1.0 / sv
                a = w * _nan_min(xv * xv, c * c)
                b = w * m1[t, j]
            else:
                a = 0.0 * _nan_min(0.0, c * c)
                b = 0.0 * 0.0
            if t == 0:
                num[j] = a
                den[j] = b
            else:
                num[j] += a
                den[j] += b
    return num / den


def line_factor(x: np.ndarray, s: np.ndarray, clip, m1, shape, axis: int = 0, min_pixels: int = 20,
                window: int = 7) -> np.ndarray:
    """The excess variance each pixel shares with the pixels of its line across the dispersion
    (the same position along it, so the same illumination and the same sky-model windows), (P,).

    ``x`` (time, P) the residuals in units of their noise, ``s`` the noise, ``clip`` and ``m1``
    as for :func:`terms`; ``shape`` the tile's (ny, nx), ``axis`` the dispersion axis. Per pixel,
    the weighted ratio ``sum w q / sum w m1`` over its exposures (:func:`rms_ratio` squared); per
    line, its median over the line's pixels: what a sky model cut by the end of the frame or of
    the spectrum adds to every pixel of the line, a noisy pixel to itself alone. At least 1; 1
    for lines with fewer than ``min_pixels`` pixels.

    Where a line shares an excess (its median above 1 by :data:`SHARED_SIGMA` standard errors)
    the sky model is cut there, and how much it errs changes along the line as its windows
    across the dispersion are cut too: at a corner of the frame, at the edge of an illuminated
    field, at a subarray's side, a few pixels of the line scatter several times more than the
    line's median. There a pixel's factor is the running median of the ratios of the
    ``window`` pixels of its line around it (at least 3 present: the pixels with the same cuts)
    where that exceeds the line's median by more than 3 of its standard errors (from the line's
    spread), the line's median elsewhere (the local median's own noise would otherwise raise
    every pixel of an end line). A noisy pixel is one of them and does not raise it; the lines
    where the sky model is not cut (the median within its noise of 1) keep the line's median,
    so a defect cluster there never raises its own noise.
    """
    k2 = weighted_ratios(x, s, clip, m1)
    img = np.where(np.isfinite(k2), k2, np.nan).reshape(shape)
    lines = img if axis == 0 else img.T  # one line per position along the dispersion
    count = np.isfinite(lines).sum(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(lines, axis=1)
        # standard error of a median: 1.2533 sigma / sqrt(n), sigma from the pixels' MAD
        se = 1.2533 * 1.4826 * np.nanmedian(np.abs(lines - med[:, None]), axis=1) / np.sqrt(np.maximum(count, 1))
    enough = count >= min_pixels
    med = np.where(enough, med, 1.0)
    f = np.maximum(np.where(np.isfinite(med), med, 1.0), 1.0)
    out = np.broadcast_to(f[:, None], lines.shape).copy()
    with np.errstate(invalid="ignore"):
        shared = enough & np.isfinite(se) & (med - 1.0 > SHARED_SIGMA * se)
    if shared.any():
        win = int(window) | 1
        sub = lines[shared].astype(np.float32)
        loc = np.asarray(running.running_median(sub, win, axis=1, min_count=3), float)
        cum = np.concatenate([np.zeros((sub.shape[0], 1)), np.cumsum(np.isfinite(sub), axis=1)], axis=1)
        i = np.arange(sub.shape[1])
        n_loc = cum[:, np.minimum(i + win // 2 + 1, sub.shape[1])] - cum[:, np.maximum(i - win // 2, 0)]
        # the local median's standard error, from the spread of the whole line's ratios; it
        # replaces the line's median only where it exceeds it beyond that noise (3 sigma)
        sd = (se * np.sqrt(np.maximum(count, 1)))[shared][:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            beyond = np.isfinite(loc) & (loc - out[shared] > 3.0 * sd / np.sqrt(np.maximum(n_loc, 1.0)))
        out[shared] = np.where(beyond, loc, out[shared])
    return np.ascontiguousarray(out if axis == 0 else out.T).reshape(-1)
