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
  median along time (which keeps steps, so a defect's onset is never taken for a spike), and each
  exposure's contribution is also clipped (:func:`clipped_z`), so no single exposure can reach
  the detection threshold on its own.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.special import ndtri



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

    An event is a block of one or two exposures (up to ``window // 2``) that stands above the
    pixel's level on *both* sides: each exposure of the block exceeds every one of the
    ``window // 2`` exposures before and after it by more than ``nsigma`` times the noise of
    the difference (its own and that of the exposure compared with),
    both for an additive level (r) and for a level proportional to the sky (r / sky). A step (a
    defect's onset or recovery) has its own level on one side, so it is never an event, however
    different the noise of the exposures around it (with a centred running median the onset
    exposure of a strong defect was compared with the lowest of the next ones and taken for an
    event when those were noisier), nor is a dead pixel whose residual follows a changing sky.
    At the ends of the series the side that exists is used.

    Parameters
    ----------
    r, sigma, sky : array (time, pixel)
        Residual, its noise and the local sky (DN/s).
    window : int
        Exposures considered around an event: ``window // 2`` on each side (odd).
    nsigma : float
        Threshold in units of the noise of the difference.
    """
    r = np.asarray(r, np.float32)
    sigma = np.asarray(sigma, np.float32)
    sky = np.asarray(sky, np.float32)
    half = max(int(window) // 2, 1)
    shape = r.shape
    r2, s2, k2 = (v.reshape(shape[0], -1) for v in (r, sigma, sky))
    out = np.zeros(r2.shape, bool)
    for k in range(1, half + 1):
        ev = _block_events(r2, s2, k, half, nsigma)
        # the sky-proportional test only where the additive one fired (few pixels)
        cols = np.flatnonzero(ev.any(axis=0))
        if cols.size == 0:
            continue
        kk = k2[:, cols]
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(kk > 0, r2[:, cols] / kk, np.nan)
            fsig = np.where(kk > 0, s2[:, cols] / kk, np.nan)
        ev[:, cols] &= _block_events(frac, fsig, k, half, nsigma)
        for j in range(k):
            out[j:] |= ev[:ev.shape[0] - j] if j else ev
    return out.reshape(shape)


def _shift(a: np.ndarray, k: int) -> np.ndarray:
    """a[t + k] at index t along axis 0 (NaN beyond the ends)."""
    out = np.full_like(a, np.nan)
    n = a.shape[0]
    if k >= 0:
        if k < n:
            out[:n - k] = a[k:]
    elif -k < n:
        out[-k:] = a[:n + k]
    return out


def _side_level(a: np.ndarray, s: np.ndarray, offsets) -> tuple[np.ndarray, np.ndarray]:
    """Highest of a[t + o] over ``offsets`` and its noise (NaN where no value).

    The highest, not a median or mean: a side that holds a defect's step (its onset next to the
    block) is at the defect's level, and a mean of two exposures straddling the step would
    put a defect's last exposures above "their" level.
    """
    vals = np.stack([_shift(a, o) for o in offsets])
    sig = np.stack([_shift(s, o) for o in offsets])
    filled = np.where(np.isfinite(vals), vals, -np.inf)
    k = np.argmax(filled, axis=0)
    lev = np.take_along_axis(vals, k[None], 0)[0]
    noise = np.take_along_axis(sig, k[None], 0)[0]
    return lev, noise


def _block_events(a: np.ndarray, s: np.ndarray, k: int, half: int, nsigma: float) -> np.ndarray:
    """(time, pixel) bool at the first exposure t of each block [t, t + k) that exceeds the levels
    on both sides of it by ``nsigma`` in every exposure of the block."""
    before, nb = _side_level(a, s, range(-half, 0))
    after, na = _side_level(a, s, range(k, k + half))
    use_b = np.isfinite(before) & (~np.isfinite(after) | (before >= after))
    ref = np.where(use_b, before, after)
    rnoise = np.where(use_b, nb, na)
    ok = np.isfinite(ref)
    with np.errstate(invalid="ignore", divide="ignore"):
        for j in range(k):
            v, sv = _shift(a, j), _shift(s, j)
            ok &= (v - ref) / np.sqrt(sv * sv + rnoise * rnoise) > nsigma
    return ok


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


def scan_statistic(z: np.ndarray, *, min_length: int = 1, ratio: float = 1.25) -> np.ndarray:
    """Largest |sum of z over a run| / sqrt(run length) per pixel, runs of ``min_length`` .. n.

    ``z`` is (time, pixel), noise-normalised (and clipped), NaN where missing (missing exposures
    are skipped: a run is counted over the exposures present). Vectorised over pixels; cost
    O(n log n) per pixel.

    >>> z = np.zeros((20, 2)); z[5:15, 1] = 2.0
    >>> np.round(scan_statistic(z), 2).tolist()
    [0.0, 6.32]
    """
    z = np.asarray(z, float)
    n = z.shape[0]
    best = np.zeros(z.shape[1:])
    if n == 0:
        return best
    present = np.isfinite(z)
    lengths = [int(L) for L in geometric_lengths(n, ratio) if L >= min_length]
    # pixels seen in every exposure (most of them) need no count of exposures per run: their
    # run of L exposures always holds L values
    full = present.all(axis=0)
    for cols, counted in ((np.flatnonzero(full), False), (np.flatnonzero(~full), True)):
        if cols.size == 0:
            continue
        zc = np.where(present[:, cols], z[:, cols], 0.0)
        # float64 running sums, differenced in float32: the error (~1e-3 of a sum of 1e4 values
        # of a few sigma) is far below what separates a candidate from noise
        c = np.zeros((n + 1, cols.size), np.float32)
        c[1:] = np.cumsum(zc, axis=0)
        if counted:
            m = np.zeros((n + 1, cols.size), np.float32)
            m[1:] = np.cumsum(present[:, cols], axis=0)
        out = np.zeros(cols.size, np.float32)
        for L in lengths:
            sL = np.abs(c[L:] - c[:-L])
            if counted:
                k = m[L:] - m[:-L]
                with np.errstate(invalid="ignore", divide="ignore"):
                    sL = np.where(k >= min_length, sL / np.sqrt(np.maximum(k, 1)), 0.0)
                np.maximum(out, sL.max(axis=0), out=out)
            else:
                np.maximum(out, sL.max(axis=0) / np.float32(np.sqrt(L)), out=out)
        best[cols] = out
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
