"""Robust per-pixel statistics along time.

Pure numpy functions of ``(time, pixel)`` arrays: residuals ``r`` (DN/s), their noise ``sigma``
(DN/s) and the local sky ``sky`` (DN/s) of each pixel in each exposure, NaN where a pixel was not
seen. Nothing here knows about tiles, dask or the store.

The two ideas:

* **Stacking.** A defect below the single-exposure noise is found from the sum of the
  noise-normalised residuals over a run of exposures: a run of ``n`` exposures with a per-exposure
  level ``a`` (in sigma) has significance ``a * sqrt(n)``. :func:`scan_statistic` computes the
  largest such significance over all runs of all lengths (lengths on a geometric grid, every
  start), vectorised over pixels.
* **Single-exposure events never make a defect.** Cosmic-ray residuals, showers and latents are
  positive spikes that last one or two exposures. :func:`transients` finds them against a running
  median along time, and keeps only blocks that clearly exceed the exposures on both sides of
  them (so a defect's onset is never taken for a spike, however noisy the exposures after it),
  and each exposure's contribution is also clipped (:func:`clipped_z`), so no single exposure
  can reach the detection threshold on its own.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.special import ndtri

from .residuals import running_median
from .running import block_events, column_cumsums, max_window_sums



def clipped_z(r: np.ndarray, sigma: np.ndarray, clip: float = 6.0) -> np.ndarray:
    """Noise-normalised residual r / sigma, clipped to +-``clip`` (sigma); NaN stays NaN.

    >>> clipped_z(np.array([1.0, -50.0, np.nan]), np.array([0.5, 1.0, 1.0]), clip=6)
    array([ 2., -6., nan])
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.asarray(r, float) / np.asarray(sigma, float)
    return np.clip(z, -clip, clip)


def transients(
    r: np.ndarray,
    sigma: np.ndarray,
    sky: np.ndarray,
    *,
    window: int = 5,
    nsigma: float = 5.0,
) -> np.ndarray:
    """Single-exposure positive events: (time, pixel) bool.

    An exposure of a pixel is a transient when it exceeds the running median of the pixel's
    residuals over ``window`` exposures (centred, along axis 0) by more than ``nsigma`` times its
    noise, both for an additive level (r) and for a level proportional to the sky (r / sky) -
    so a dead pixel whose residual follows a changing sky is never one - *and* its block (the
    run of one or two such exposures it belongs to) clearly exceeds both sides: on each side at
    least one of the ``window // 2`` exposures is exceeded by ``nsigma / sqrt(2)`` times the noise
    of the difference (its own and that exposure's: the same threshold for a difference of two
    exposures). A step
    (a defect's onset or recovery) has its own level on one side, so it is never an event, also
    when the exposures after it are noisier than the first bad one (the running median of a
    window holding a step is the lowest of the bad exposures in it, which a precise onset
    exposure exceeded by many times its own small noise). Runs of up to ``window // 2``
    exposures are transients; at the ends of the series the side that exists is used.

    Parameters
    ----------
    r, sigma, sky : array (time, pixel)
        Residual, its noise and the local sky (DN/s).
    window : int
        Exposures in the running median (odd); ``window // 2`` on each side of a block.
    nsigma : float
        Threshold in units of ``sigma``.
    """
    r = np.asarray(r, np.float32)
    sigma = np.asarray(sigma, np.float32)
    sky = np.asarray(sky, np.float32)
    half = int(window) // 2
    shape = r.shape
    r2, s2, k2 = (v.reshape(shape[0], -1) for v in (r, sigma, sky))
    med_a = running_median(_edge_pad(r2, half), window, axis=0, min_count=1)[half: half + shape[0]]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (r2 - med_a) / s2 > nsigma
    # the sky-proportional test and the sides only where the additive one fired (few pixels)
    cols = np.flatnonzero(out.any(axis=0))
    if cols.size == 0:
        return out.reshape(shape)
    rr, ss, kk, ma = r2[:, cols], s2[:, cols], k2[:, cols], med_a[:, cols]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(kk > 0, rr / kk, np.nan)
        fsig = np.where(kk > 0, ss / kk, np.nan)
        med_m = running_median(_edge_pad(frac, half), window, axis=0, min_count=1)[half: half + rr.shape[0]]
        e_m = (rr - np.where(np.isfinite(med_m), med_m * kk, ma)) / ss
    sub = out[:, cols] & (e_m > nsigma)
    above = np.zeros(sub.shape, bool)  # in a block of 1..half exposures above both sides
    guard = nsigma / np.sqrt(2.0)  # the same threshold for a difference of two exposures
    for k in range(1, max(half, 1) + 1):
        ev = _block_events(rr, ss, k, half, guard) & _block_events(frac, fsig, k, half, guard)
        for j in range(k):
            above[j:] |= ev[:ev.shape[0] - j] if j else ev
    out[:, cols] = sub & above
    return out.reshape(shape)


def _edge_pad(a: np.ndarray, half: int) -> np.ndarray:
    """Pad along axis 0 by reflection without repeating the end value (so an event in the last
    exposure is not copied into its own window, while a step near the end is kept)."""
    if half <= 0 or a.shape[0] == 0:
        return a
    n = a.shape[0]
    if n == 1:
        return np.concatenate([a] * (2 * half + 1), axis=0)
    k = min(half, n - 1)
    top = a[1 : k + 1][::-1]
    bot = a[n - 1 - k : n - 1][::-1]
    if k < half:  # very short series: fill the rest with NaN (ignored by the median)
        fill = np.full((half - k,) + a.shape[1:], np.nan, dtype=a.dtype)
        top = np.concatenate([fill, top])
        bot = np.concatenate([bot, fill])
    return np.concatenate([top, a, bot], axis=0)


def _block_events(a: np.ndarray, s: np.ndarray, k: int, half: int, nsigma: float) -> np.ndarray:
    """(time, pixel) bool at the first exposure t of each block [t, t + k) that clearly exceeds
    both sides of it: on each side, at least one of the ``half`` exposures is exceeded by every
    exposure of the block by ``nsigma`` times the noise of the difference. A step has both
    exposures of one side at its level; a side holding a second event (two cosmic rays two
    exposures apart) still has its other exposure. A side with no exposure (an end of the
    series) is not tested."""
    # compiled (lrscube.detection.running.block_events): the same comparisons as the numpy version in
    # tests/detection/test_running.py, without 2 x half x (k + 1) shifted copies of the series
    return block_events(a, s, k, half, nsigma)


def geometric_lengths(n: int, ratio: float = 1.25) -> np.ndarray:
    """Run lengths 1, 2, ... n on a geometric grid: every run of length m contains a grid run of
    length >= m / ratio, so the scan loses at most a factor sqrt(1/ratio) in significance.

    >>> geometric_lengths(10).tolist()
    [1, 2, 3, 4, 5, 6, 8, 10]
    """
    out, L = [], 1.0
    while L < n:
        out.append(int(round(L)))
        L = max(L * ratio, L + 1)
    out.append(n)
    return np.unique(np.asarray(out, int))


def scan_statistic(z: np.ndarray, *, min_length: int = 1, ratio: float = 1.25, one_sided: bool = False,
                   divisor: np.ndarray | None = None) -> np.ndarray:
    """Largest |sum of z over a run| / sqrt(run length) per pixel, runs of ``min_length`` .. n.

    ``z`` is (time, pixel), noise-normalised (and clipped), NaN where missing (missing exposures
    are skipped: a run is counted over the exposures present). Vectorised over pixels; cost
    O(n log n) per pixel. ``one_sided``: the largest sum itself (runs above zero only), not its
    absolute value. ``divisor`` (length n + 1): the divisor of a run of L exposures instead of
    sqrt(L) (:func:`lrscube.detection.baseline.scatter_scan_scale` for skewed terms).

    >>> z = np.zeros((20, 2)); z[5:15, 1] = 2.0
    >>> np.round(scan_statistic(z), 2).tolist()
    [0.0, 6.32]
    """
    z = np.asarray(z, float)
    n = z.shape[0]
    best = np.full(z.shape[1:], -np.inf if one_sided else 0.0)
    if n == 0:
        return np.zeros(z.shape[1:])
    present = np.isfinite(z)
    lengths = [int(L) for L in geometric_lengths(n, ratio) if L >= min_length]
    # pixels seen in every exposure (most of them) need no count of exposures per run: their
    # run of L exposures always holds L values
    full = present.all(axis=0)
    for cols, counted in ((np.flatnonzero(full), False), (np.flatnonzero(~full), True)):
        if cols.size == 0:
            continue
        # float64 running sums, differenced in float32: the error (~1e-3 of a sum of 1e4 values
        # of a few sigma) is far below what separates a candidate from noise
        if counted:
            zc = np.where(present[:, cols], z[:, cols], 0.0)
            c = np.zeros((n + 1, cols.size), np.float32)
            c[1:] = np.cumsum(zc, axis=0)
            m = np.zeros((n + 1, cols.size), np.float32)
            m[1:] = np.cumsum(present[:, cols], axis=0)
        else:  # every value present: the same sums compiled, without the columns' copies
            c = column_cumsums(z, cols)
        out = np.full(cols.size, -np.inf if one_sided else 0.0, np.float32)
        if not counted:  # compiled, one pass per length, no (n, pixels) temporaries
            ls = [L for L in lengths if L <= n]
            max_window_sums(c, ls, out, signed=one_sided, scale=None if divisor is None else divisor[ls])
        else:
            for L in lengths:
                sL = c[L:] - c[:-L]
                if not one_sided:
                    sL = np.abs(sL)
                k = m[L:] - m[:-L]
                d = np.sqrt(np.maximum(k, 1)) if divisor is None else divisor[np.maximum(k, 1).astype(int)]
                with np.errstate(invalid="ignore", divide="ignore"):
                    sL = np.where(k >= min_length, sL / d, -np.inf if one_sided else 0.0)
                np.maximum(out, sL.max(axis=0), out=out)
        best[cols] = out
    if one_sided:
        best = np.where(np.isfinite(best), best, 0.0)
    return best.reshape(z.shape[1:])


def detection_threshold(false_alarms: float, n_pixels: int, n_exposures: int) -> float:
    """Significance (sigma) at which ``false_alarms`` pixels are expected to pass by chance.

    Each pixel is tested over runs of all lengths and starts; the number of effectively
    independent runs is taken as ``n_exposures * log2(n_exposures)`` (a Bonferroni bound for a
    scan over a geometric grid of lengths), two-sided, Gaussian noise.

    >>> round(detection_threshold(0.1, 1024 * 1032, 150), 2)
    6.5
    """
    n = max(int(n_exposures), 2)
    tests = 2.0 * max(int(n_pixels), 1) * n * np.ceil(np.log2(n))
    return float(-ndtri(min(float(false_alarms) / tests, 0.5)))


def weighted_level(r: np.ndarray, sigma: np.ndarray, weight_shape: np.ndarray | None = None,
                   clip: float | None = None) -> tuple[float, float, float, int]:
    """Weighted least-squares level of ``r`` for the model ``r = level * shape`` (shape 1: additive).

    With ``clip``, exposures further than ``clip`` sigma from a first median-based fit are left
    out (the detector removes single-exposure events before, so it does not clip: a telegraph
    pixel's mean level is the mean of both its states). Returns (level, its standard error, chi^2, number of
    exposures used).
    """
    r = np.asarray(r, float)
    s = np.asarray(sigma, float)
    u = np.ones_like(r) if weight_shape is None else np.asarray(weight_shape, float)
    ok = np.isfinite(r) & np.isfinite(s) & (s > 0) & np.isfinite(u)
    if weight_shape is not None:
        ok &= u > 0
    if not ok.any():
        return np.nan, np.inf, np.nan, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        keep = ok
        if clip is not None:
            first = np.nanmedian(r[ok] / u[ok])
            keep = ok & (np.abs(r - first * u) <= clip * s + 1e-30)
            if keep.sum() < max(2, ok.sum() // 2):
                keep = ok
        w = u[keep] ** 2 / s[keep] ** 2
        level = float(np.sum(r[keep] * u[keep] / s[keep] ** 2) / np.sum(w))
        se = float(1.0 / np.sqrt(np.sum(w)))
        chi2 = float(np.sum(((r[ok] - level * u[ok]) / s[ok]) ** 2))
    return level, se, chi2, int(ok.sum())


def robust_pixel_summary(z: np.ndarray) -> dict[str, np.ndarray]:
    """Median and MAD-sigma of z along time for each pixel (diagnostics, the pixel-history plot)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(z, axis=0)
        mad = 1.4826 * np.nanmedian(np.abs(z - med), axis=0)
    return {"median": med, "mad_sigma": mad, "n": np.isfinite(z).sum(axis=0)}
