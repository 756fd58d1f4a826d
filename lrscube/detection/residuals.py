"""Per-exposure spatial residuals: each pixel against a robust local sky.

Pure numpy functions of images stacked as ``(..., y, x)``; they loop over nothing in Python.

The sky of a dispersed blank-sky exposure is smooth along the dispersion direction (the
spectrum of the zodiacal and thermal background) but can change abruptly across it (slit
edges, the slitless footprint). So the local sky of a pixel is the NaN-aware running median
of its own line along the dispersion axis (for LRS, DISPAXIS=2: its column). A median
preserves steps, is pulled by at most a few defects in its window, and follows a smooth source
trace, so column-to-column structure (striping, slit edges, the cross-dispersion profile of a
source) never leaks into the residual. Odd/even row offsets and row striping are lines across
the dispersion; they survive the running median and are removed afterwards as the median of
the residual along each such line.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(1)
>>> sci = 10 + rng.normal(0, 0.1, (1, 64, 32)).astype("f4")
>>> sci[0, 20, 10] += 5                         # a hot pixel
>>> res = spatial_residuals(sci, np.full_like(sci, 0.1))
>>> round(float(res.resid[0, 20, 10]), 0)
5.0
"""

from __future__ import annotations

import threading
import warnings
from typing import NamedTuple

import bottleneck as bn
import numpy as np
import xxhash

from . import running

#: 1 / Phi^-1(3/4): MAD -> standard deviation for Gaussian noise
MAD_TO_SIGMA = 1.482602218505602
#: fewest pixels for a block's own noise calibration (the MAD of 2000 values is good to ~2 %)
MIN_CALIBRATION_PIXELS = 2000
#: codes of :func:`unlit_codes`: outside the light, and in a narrow gap between slices that sees
#: the slices' wings (its sky is the gap's own light, :func:`_gap_light`)
DARK, GAP = 1, 2
#: fewest unlit pixels of an exposure that calibrate their noise (a robust scale to ~8 %)
MIN_UNLIT_CALIBRATION_PIXELS = 200


class Residuals(NamedTuple):
    """Residuals of a stack of exposures, all shaped like the input ``(..., y, x)``."""

    resid: np.ndarray  #: sci - local sky - line offsets (DN/s)
    sigma: np.ndarray  #: noise of resid (DN/s): ERR times the per-exposure noise calibration
    sky: np.ndarray  #: local sky level (DN/s)


def running_median(a: np.ndarray, window: int, axis: int = -1, min_count: int = 1) -> np.ndarray:
    """Centred, NaN-aware running median along ``axis`` (window odd; NaN where < min_count values).

    Compiled (:mod:`lrscube.detection.running`); the same numbers as bottleneck's ``move_median``.

    >>> running_median(np.array([1., 9., 2., np.nan, 3.]), 3)
    array([5. , 2. , 5.5, 2.5, 3. ], dtype=float32)
    """
    return running.running_median(a, window, axis=axis, min_count=min_count)


def window_median_position(finite: np.ndarray, window: int, min_count: int = 1) -> np.ndarray:
    """Median index of the True entries of ``finite`` in a centred window along the last axis.

    The same as the running median of ``where(finite, index, nan)`` (NaN where fewer than
    ``min_count`` are True), but from cumulative counts instead of a sort: the True positions
    in a window are already in order, so the median is one (or the mean of two) of them.

    >>> window_median_position(np.array([True, True, False, True, True]), 3)
    array([0.5, 0.5, 2. , 3.5, 3.5], dtype=float32)
    """
    window = int(window) | 1
    half = window // 2
    f = np.ascontiguousarray(finite, dtype=bool)
    shape = f.shape
    n = shape[-1]
    f = f.reshape(-1, n)
    rows = f.shape[0]
    # c[r, k]: True entries of row r before column k; gpos: their flat positions, in order
    c = np.zeros((rows, n + 1), np.int32)
    np.cumsum(f, axis=1, out=c[:, 1:])
    i = np.arange(n)
    lo = np.maximum(i - half, 0)
    hi = np.minimum(i + half, n - 1) + 1
    out = np.broadcast_to(i.astype(np.float32), (rows, n)).copy()  # a complete window: the pixel
    # the rest (holes in the window, or cut by an edge): the middle True position(s)
    incomplete = np.ones((rows, n), bool)
    if n >= window:
        incomplete[:, half:n - half] = (c[:, window:] - c[:, :n + 1 - window]) < window
    r, j = np.nonzero(incomplete)
    if r.size:
        gpos = np.flatnonzero(f)
        row_base = np.concatenate([[0], np.cumsum(c[:, -1], dtype=np.int64)[:-1]])
        mm = c[r, hi[j]] - c[r, lo[j]]
        base = row_base[r] + c[r, lo[j]]
        last = max(gpos.size - 1, 0)
        k1 = np.clip(base + (mm - 1) // 2, 0, last)
        k2 = np.clip(base + mm // 2, 0, last)
        med = 0.5 * (gpos[k1] + gpos[k2]) - r * n if gpos.size else np.full(r.size, np.nan)
        out[r, j] = np.where(mm >= max(1, min(min_count, window)), med, np.nan)
    return out.reshape(shape)


def local_sky(img: np.ndarray, window: int, axis: int = -2, min_count: int = 5) -> np.ndarray:
    """Running median along ``axis``, corrected for truncated windows.

    Where the window is cut by the footprint edge (or has NaN holes), the median of a sloped sky
    sits at the median position of the pixels present, not at the pixel: the running median is moved back to the
    pixel along the local slope (a running least-squares slope of the median itself). Where the
    window is complete the correction is zero.

    >>> y = np.arange(40, dtype="f4")[:, None] * 0.5          # a linear ramp, cut at both ends
    >>> float(np.abs(local_sky(y, 15, axis=0) - y).max()) < 1e-4
    True
    """
    window = int(window) | 1
    med = running_median(img, window, axis=axis, min_count=min_count)
    ax = axis % med.ndim
    if ax < med.ndim - 1 and med.size:  # lanes along the axes after it: one compiled pass
        return running.sky_correction(img, med, window, ax, min_count)
    # Everything below works in the image's own memory layout (a moved axis made every
    # elementwise step strided); idx is the position along the axis, broadcast over the others.
    idx = _positions(med.shape, ax)
    # the median of a monotonic sky sits at the median position of the pixels present
    finite = np.isfinite(np.moveaxis(np.asarray(img), ax, -1))
    centre = np.moveaxis(window_median_position(finite, window, min_count), -1, ax)
    with np.errstate(invalid="ignore", divide="ignore"):
        offset = idx - centre                                # pixel minus median position
        # slope from the medians whose window is (nearly) centred on their pixel: unbiased
        wm = (np.isfinite(med) & (np.abs(offset) <= 0.25)).astype(np.float32)
        mm = np.where(wm > 0, med, 0.0).astype(np.float32)
        s0, s1, s2, sy, sxy = running.line_moments(wm, mm, 2 * window + 1, ax)
        slope = (sxy - s1 * sy / s0) / (s2 - s1 * s1 / s0)
        line = s0 * (2 * window + 1) >= 1.5  # two centred medians at least: through one, a slope is 0 / 0
    with np.errstate(invalid="ignore"):
        corr = np.where(line & np.isfinite(slope) & np.isfinite(offset), slope * offset, 0.0)
    return (med + corr).astype(np.float32)


def _positions(shape: tuple[int, ...], axis: int) -> np.ndarray:
    """0, 1, 2, ... (float32) along ``axis``, shaped to broadcast against ``shape``."""
    return np.arange(shape[axis], dtype=np.float32).reshape([-1 if d == axis else 1 for d in range(len(shape))])


def local_linear(m: np.ndarray, window: int, axis: int = -2) -> np.ndarray:
    """Local least-squares straight line through ``m`` over ``window`` pixels along ``axis``,
    evaluated at each pixel (NaN-aware): a smooth version of a running-median sky that keeps
    its slope, also where the window is cut by an edge."""
    window = int(window) | 1
    mv = np.asarray(m, np.float32)
    ax = axis % mv.ndim
    if ax < mv.ndim - 1 and mv.size:  # lanes along the axes after it: one compiled pass
        return running.local_line(mv, window, ax)
    idx = _positions(mv.shape, ax)
    w = np.isfinite(mv).astype(np.float32)
    mm = np.where(w > 0, mv, 0.0).astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        s0, s1, s2, sy, sxy = running.line_moments(w, mm, window | 1, ax)
        xbar = s1 / s0
        ybar = sy / s0
        den = s2 / s0 - xbar * xbar
        slope = np.where(den > 1e-6, (sxy / s0 - xbar * ybar) / den, 0.0)
        out = ybar + slope * (idx - xbar)
    return np.where(s0 * window >= 2, out, np.nan).astype(np.float32)


def sky_model(img: np.ndarray, err: np.ndarray, window: int, axis: int = -2, min_count: int = 5,
              outlier_sigma: float = 5.0) -> np.ndarray:
    """Robust local sky: running median along the dispersion of the data minus a smooth trend.

    Where the sky is steep along the dispersion, the values in a median window are ordered by
    the slope, and one defect in the window moves the median by a whole step of the slope: its
    neighbours would inherit a bias that stacking makes significant. So (1) a first running
    median gives a robust, sloped sky, (2) its local straight-line fit is the trend, (3) pixels
    more than ``outlier_sigma`` ERR from the first sky are left out, and (4) the running median
    of the detrended data, which is flat and noise-dominated, is added back to the trend.
    """
    return _sky_parts(img, err, window, axis, min_count, outlier_sigma)[0]


def _sky_parts(img, err, window, axis, min_count, outlier_sigma=5.0, cross_window=None, cross_apart=None):
    """:func:`sky_model` and its parts (sky, trend, detrended data with outliers left out, and
    the scatter a normal pixel has about the sky: ERR and the pixel response, :func:`local_scatter`).

    With ``cross_window``, a pixel is an outlier when it is far from the first sky *after* the
    structure that the neighbouring lines across the dispersion share is removed
    (:func:`cross_deviation`): at a sharp end of the dispersed sky the first sky of every line
    is off by tens of ERR, which is not an outlier of any one pixel.
    """
    sky1 = local_sky(img, window, axis=axis, min_count=min_count)
    trend = local_linear(sky1, window, axis=axis)
    dev = img - sky1
    if cross_window:
        dev = cross_deviation(dev, cross_window, -1 if axis in (-2, img.ndim - 2) else -2, apart=cross_apart)
    sloc = local_scatter(dev, sky1, err)
    with np.errstate(invalid="ignore"):
        out = np.abs(dev) > outlier_sigma * sloc
        # Where the sky is steep along the dispersion a window's values are ordered by the
        # slope, so one outlier moves the median of every window holding it by a step of the
        # slope: the pixels on one side of it are that step off the first sky without being
        # outliers. Gross outliers stand out beyond that step too; a line holding pixels
        # that do not is judged again about its first sky with the gross ones replaced by the
        # line between their neighbours (a hole would move its windows' medians off their
        # pixels), and its trend is the line through that sky.
        step = np.abs(np.gradient(trend, axis=axis)) if trend.shape[axis] > 1 else np.zeros_like(trend)
        gross = np.abs(dev) > outlier_sigma * np.sqrt(sloc ** 2 + np.where(np.isfinite(step), step, 0.0) ** 2)
        # only where the step exceeds the scatter: on a flatter sky a window's order is the noise's
        lanes = (out & ~gross & (step > sloc)).any(axis=axis, keepdims=True)
    if lanes.any():
        out, trend = _lines_again(img, sky1, dev, gross, lanes, outlier_sigma, sloc, out, trend, window, axis,
                                  min_count)
    d = np.where(out, np.nan, img) - trend
    return trend + local_sky(d, window, axis=axis, min_count=min_count), trend, d, sloc


def _lines_again(img, sky1, dev, gross, lanes, outlier_sigma, sloc, out, trend, window, axis, min_count):
    """(outliers, trend) with the ``lanes`` (lines along the dispersion, ``keepdims``) judged
    again about the first sky of their data with the ``gross`` outliers replaced by the line
    between their neighbours along the dispersion (their first sky where none is within 2
    pixels), less what the lines across shared about the first sky (``img - sky1 - dev``: it
    barely moves with one line's sky): only those lines are computed."""
    out, trend = out.copy(), np.array(trend, np.float32)
    last = axis % img.ndim == img.ndim - 1  # the dispersion along the last axis: its lines are rows
    im, s1, dv, gr, sc, o, tr = (np.swapaxes(a, -1, -2) if last else a
                                 for a in (img, sky1, dev, gross, np.broadcast_to(sloc, img.shape), out, trend))
    ln = (np.swapaxes(lanes, -1, -2) if last else lanes)[..., 0, :]
    for lead in np.ndindex(im.shape[:-2]):
        cols = np.flatnonzero(ln[lead])
        if not cols.size:
            continue
        x, s1x, g = im[lead][:, cols], s1[lead][:, cols], gr[lead][:, cols]
        filled = fill_holes(np.where(g, np.nan, x), 0, 2)[0]
        first = local_sky(np.where(g, np.where(np.isfinite(filled), filled, s1x), x), window, axis=0,
                          min_count=min_count)
        with np.errstate(invalid="ignore"):
            shared = (x - s1x) - dv[lead][:, cols]
            o[lead][:, cols] = np.abs(x - first - shared) > outlier_sigma * sc[lead][:, cols]
        tr[lead][:, cols] = local_linear(first, window, axis=0)
    return out, trend


#: median of a chi-square variable with one degree of freedom
_CHI2_1_MEDIAN = 0.454936423119572


def response_scatter(dev: np.ndarray, sky: np.ndarray, err: np.ndarray, max_pixels: int = 20000) -> np.ndarray:
    """Fractional pixel-to-pixel response scatter ``f`` of each image (leading indices), (...,).

    Rate files are not flat-fielded: a normal pixel sits ``(g - 1) * sky`` off the sky of its
    neighbours, ``g`` its response, a few percent rms. ``f`` solves
    ``median(dev^2 / (err^2 + f^2 sky^2)) = median of chi^2_1`` over the image's pixels (a
    subsample of at most ``max_pixels``): the deviation's scatter beyond ERR that grows with
    the sky. Robust to defects (a median); 0 where the deviation is within ERR.
    """
    dev = np.asarray(dev, np.float32)
    lead = dev.shape[:-2]
    d2 = dev.reshape((-1,) + dev.shape[-2:])
    k2 = np.broadcast_to(np.asarray(sky, np.float32), dev.shape).reshape(d2.shape)
    e2 = np.broadcast_to(np.asarray(err, np.float32), dev.shape).reshape(d2.shape)
    out = np.zeros(d2.shape[0], np.float32)
    for b in range(d2.shape[0]):
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(d2[b]) & np.isfinite(k2[b]) & (k2[b] > 0) & np.isfinite(e2[b]) & (e2[b] > 0)
        idx = np.flatnonzero(ok)
        if idx.size < 50:
            continue
        idx = idx[:: max(1, idx.size // max_pixels)]
        u2 = (d2[b].ravel()[idx] / k2[b].ravel()[idx]).astype(float) ** 2
        w2 = (e2[b].ravel()[idx] / k2[b].ravel()[idx]).astype(float) ** 2
        if np.median(u2 / w2) <= _CHI2_1_MEDIAN:
            continue
        hi = float(np.sqrt(np.median(u2) / _CHI2_1_MEDIAN)) + 1e-9
        out[b] = running.response_bisection(u2, w2, _CHI2_1_MEDIAN, hi, 40)  # 40 halvings, compiled
    return out.reshape(lead)


def local_scatter(dev: np.ndarray, sky: np.ndarray, err: np.ndarray) -> np.ndarray:
    """The scatter of a normal pixel about the sky of its neighbours (DN/s): ERR and the pixel
    response scatter times the sky, ``sqrt(err^2 + (f sky)^2)`` (:func:`response_scatter`)."""
    f = response_scatter(dev, sky, err)
    f = np.asarray(f, np.float32)[(...,) + (None,) * 2]
    with np.errstate(invalid="ignore"):
        return np.sqrt(np.asarray(err, np.float32) ** 2 + (f * np.abs(np.asarray(sky, np.float32))) ** 2)


def cross_deviation(resid: np.ndarray, window: int, cross_axis: int, exclude: np.ndarray | None = None,
                    keep_nan: bool = False, apart: np.ndarray | None = None) -> np.ndarray:
    """``resid`` minus its running median across the dispersion over ``window`` pixels: what a
    pixel does that its neighbouring lines do not (the structure they share is sky).

    ``exclude`` leaves pixels out of the median; where it is undefined (fewer than 5 pixels)
    nothing is subtracted, or the result is NaN with ``keep_nan``. The pixels of ``apart`` and
    the others are not each other's neighbours: each takes the median of its own kind."""
    src = resid if exclude is None else np.where(exclude, np.nan, resid)
    mc = min(5, int(window))
    if apart is None:
        loc = running_median(src, window, axis=cross_axis, min_count=mc)
    else:
        loc = running_median(np.where(apart, np.nan, src), window, axis=cross_axis, min_count=mc)
        own = _box_of(apart)  # the part's own medians over its bounding box only (a small part of a frame)
        if own is not None:
            box = (Ellipsis,) + own
            loc[box] = np.where(apart[own], running_median(np.where(apart[own], src[box], np.nan), window,
                                                            axis=cross_axis, min_count=mc), loc[box])
    if keep_nan:
        return resid - loc
    return resid - np.where(np.isfinite(loc), loc, 0.0).astype(np.float32)


def _box_of(mask: np.ndarray) -> tuple[slice, slice] | None:
    """The bounding box (rows, columns) of a (y, x) mask's True pixels; None if it has none."""
    ys = np.flatnonzero(mask.any(axis=1))
    if not ys.size:
        return None
    xs = np.flatnonzero(mask.any(axis=0))
    return slice(int(ys[0]), int(ys[-1]) + 1), slice(int(xs[0]), int(xs[-1]) + 1)


def fill_holes(img: np.ndarray, cross_axis: int = -1, max_gap: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Fill NaN pixels from their neighbours across the dispersion; returns (filled, holes).

    A hole (a pixel NaN in SCI: DO_NOT_USE in the input DQ) takes the linear interpolation of
    the nearest finite pixels of its line across the dispersion within ``max_gap`` pixels on
    each side (the one side's value when only one is there; NaN when neither). The running
    median along the dispersion of a column with a hole is a different estimator from that of
    the columns beside it: on a smooth sky that does not matter, but at a sharp end of the
    dispersed sky (biased by tens of ERR there) the difference is a bias of several sigma per
    exposure that the neighbouring columns do not share, over the whole window around the hole
    (a static bad pixel next to the red end of the slitless sky made a dozen false pixels). The
    filled values only stand in for the hole in its column's sky; the hole stays NaN in the
    residual.

    >>> fill_holes(np.array([[1.0, np.nan, 3.0, np.nan, np.nan, np.nan, np.nan, np.nan, 9.0]]))[0].tolist()
    [[1.0, 2.0, 3.0, 3.0, 3.0, nan, 9.0, 9.0, 9.0]]
    """
    a = np.moveaxis(np.asarray(img, np.float32), cross_axis, -1)
    holes = ~np.isfinite(a)
    if not holes.any():
        return np.moveaxis(a, -1, cross_axis), np.moveaxis(holes, -1, cross_axis)
    n = a.shape[-1]
    where = np.nonzero(holes)  # only the holes are visited (a few thousand in a full frame)
    x = where[-1]
    vals, dists = [], []
    for step in (-1, 1):
        v = np.full(x.size, np.nan, np.float32)
        d = np.zeros(x.size)
        for k in range(1, int(max_gap) + 1):
            xx = x + step * k
            inside = (xx >= 0) & (xx < n)
            cand = a[where[:-1] + (np.clip(xx, 0, n - 1),)]
            take = inside & np.isnan(v) & np.isfinite(cand)
            v[take] = cand[take]
            d[take] = k
        vals.append(v)
        dists.append(d)
    (vl, vr), (dl, dr) = vals, dists
    with np.errstate(invalid="ignore", divide="ignore"):
        both = (vl * dr + vr * dl) / (dl + dr)
    out = a.copy()
    out[where] = np.where(np.isfinite(vl) & np.isfinite(vr), both, np.where(np.isfinite(vl), vl, vr))
    return np.moveaxis(out, -1, cross_axis), np.moveaxis(holes, -1, cross_axis)


def robust_sigma(a: np.ndarray, axis=None) -> np.ndarray:
    """Standard deviation from the median absolute deviation, NaN-aware."""
    med = np.nanmedian(a, axis=axis, keepdims=True)
    return MAD_TO_SIGMA * np.nanmedian(np.abs(a - med), axis=axis)


def _line_offsets(resid: np.ndarray, disp_axis: int) -> np.ndarray:
    """Median of the residual along each line across the dispersion (row offsets for LRS)."""
    cross_axis = -1 if disp_axis == -2 else -2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if cross_axis == -1 and np.asarray(resid).dtype == np.float32:
            off = running.row_nanmedians(resid)  # bottleneck's numbers, compiled
        else:
            off = bn.nanmedian(resid, axis=cross_axis)
    off = np.where(np.isfinite(off), off, 0.0).astype(np.float32)
    return np.expand_dims(off, cross_axis)


def _weighted_line_median(values: np.ndarray, weights: np.ndarray, cross_axis: int) -> np.ndarray:
    """The weighted median of ``values`` along ``cross_axis`` (kept, length 1): the smallest
    value whose cumulative weight reaches half the line's total; 0 where the line has no finite
    value with a positive weight."""
    v = np.moveaxis(np.asarray(values, np.float32), cross_axis, -1)
    w = np.moveaxis(np.asarray(weights, np.float64), cross_axis, -1)
    ok = np.isfinite(v) & np.isfinite(w) & (w > 0)
    order = np.argsort(np.where(ok, v, np.inf), axis=-1)
    vs = np.take_along_axis(np.where(ok, v, np.nan), order, -1)
    cw = np.cumsum(np.take_along_axis(np.where(ok, w, 0.0), order, -1), axis=-1)
    half = 0.5 * cw[..., -1:]
    i = np.minimum((cw < half).sum(axis=-1, keepdims=True), v.shape[-1] - 1)
    off = np.take_along_axis(vs, i, -1)
    off = np.where((half > 0) & np.isfinite(off), off, 0.0).astype(np.float32)
    return np.moveaxis(off, -1, cross_axis)


def _unlit_residuals(dark: np.ndarray, err: np.ndarray, disp_axis: int, window: int, min_count: int,
                     remove_line_offsets: bool, calibrate_noise: bool, clip_sigma: float | None):
    """(values, noise, offsets) of the pixels outside the light (NaN elsewhere in ``dark``):
    each value less the offset of its line across the dispersion, and ERR scaled per exposure
    (``calibrate_noise``) to the scatter of the values about their running median along the
    dispersion over ``window`` pixels; the offsets (DN/s, one per line, NaN where the line has
    no unlit pixel; None without ``remove_line_offsets``).

    An offset of a row's electronics is common to the row; what each unlit pixel sees of the
    light is not: the centre of a narrow gap between two slices takes the slices' wings, which
    widen with wavelength (diffraction), and scattered light, a few percent of the sky, large
    at the long wavelengths of MIRIFULONG where the thermal background is bright; a wide dark
    band (between the channels, past the slices' ends) sees almost nothing. The median of the
    raw values of a row's unlit pixels is then the light of its narrow gaps, many times the
    dark pixels' noise, and would be taken from every dark pixel of the row as if it were an
    offset. That light and a pixel's dark level are smooth along the dispersion and the
    offsets are not, so the offset is taken about the running median along it, as the lit
    pixels' offsets are taken about their sky; so is the noise, as the lit pixels' noise is
    calibrated about theirs (a pattern the exposure's dark pixels share, EMI stripes, weighs
    that exposure down)."""
    sigma = np.where(np.isfinite(err) & (err > 0) & np.isfinite(dark), err, np.nan).astype(np.float32)
    off = None
    if not (remove_line_offsets or calibrate_noise):
        return dark, sigma, off
    def about_smooth(v):
        return v - running_median(v, int(window) | 1, axis=disp_axis, min_count=min_count)

    detrended = about_smooth(dark)
    if remove_line_offsets:
        # weighted by 1/ERR^2: the dark pixels, whose noise is the read noise alone, say more
        # of the offset than the gaps' pixels with their light's photon noise; twice, as for the
        # lit pixels: the offsets are in the first running median, and its error in the offsets
        cross = -1 if disp_axis == -2 else -2
        off = _weighted_line_median(detrended, sigma ** -2.0, cross)
        off = _weighted_line_median(about_smooth(dark - off) + off, sigma ** -2.0, cross)
        dark = dark - off
        detrended = about_smooth(dark)
        off = np.where(np.isfinite(dark).any(axis=cross, keepdims=True), off, np.nan)
    if calibrate_noise:
        n = np.isfinite(detrended / sigma).reshape(dark.shape[:-2] + (-1,)).sum(axis=-1)
        scale = np.where(n >= MIN_UNLIT_CALIBRATION_PIXELS, _noise_scale(detrended, sigma, clip_sigma), 1.0)
        sigma = sigma * scale[..., None, None].astype(np.float32)
    return dark, sigma, off


def spatial_residuals(
    sci: np.ndarray,
    err: np.ndarray,
    *,
    dispersion_axis: str = "y",
    sky_window: int = 15,
    min_sky_pixels: int = 5,
    remove_line_offsets: bool = True,
    calibrate_noise: bool = True,
    clip_sigma: float | None = 6.0,
    calibration_block: tuple[int, int] | None = None,
    cross_window: int | None = None,
    response: np.ndarray | None = None,
    unlit: np.ndarray | None = None,
    cross_apart: np.ndarray | None = None,
    _empty: np.ndarray | None = None,
    _offsets: np.ndarray | None = None,
) -> Residuals:
    """Residual of every pixel against a robust local sky, per exposure.

    Parameters
    ----------
    sci, err : array (..., y, x)
        Rate image(s) and their ERR (DN/s). NaN marks pixels outside the footprint or unusable.
    dispersion_axis : {"y", "x"}
        Image axis along which light is dispersed (LRS: "y").
    sky_window : int
        Length (pixels, odd) of the running median along the dispersion axis. A defect cluster
        must cover less than half of it to leave the sky unbiased; sky structure narrower than
        about half of it along the dispersion is treated as residual.
    min_sky_pixels : int
        Minimum number of finite pixels in the window for a sky value (else NaN).
    remove_line_offsets : bool
        Remove the median residual of each line across the dispersion (odd/even row offsets,
        row striping), estimated over the pixels present in the array.
    calibrate_noise : bool
        Scale ERR per exposure (per leading index) so that resid/sigma has a robust standard
        deviation of 1 over the image. This absorbs mis-scaled ERR and the noise of the sky
        estimate itself. With ``clip_sigma``, the scale is further raised (never lowered) to the
        RMS of the normalised residual clipped at +-clip_sigma, so that the sums of clipped values
        that the temporal statistics make have unit variance also for heavy-tailed noise.
    cross_window : int, optional
        Remove the running median of the residual across the dispersion over this many pixels
        (pixels more than 5 ERR from a first such median left out): residual structure that neighbouring
        columns of a row share is sky the column-wise model could not follow (a cusp or sharp
        end of the dispersed sky, where a 15-pixel median along the column is biased by the
        curvature), not a pixel defect. A defect cluster narrower than half of it is kept.
        The outliers left out of the sky along the dispersion are then judged the same way
        (:func:`cross_deviation`): by what a pixel does that its neighbouring lines do not.
    calibration_block : (int, int), optional
        Calibrate the noise separately in blocks of this many pixels (y, x) of each exposure
        (the stored chunk, 256 x 258, in detect): a local factor that does not depend on how the
        frame is cut into tiles. Default: one factor per exposure.
    response : array (y, x), optional
        The pixels' response relative to their neighbours (:func:`response_pattern`). The sky
        is then built from the flat-fielded image ``sci / response``: where the pixel-to-pixel
        response dominates a pixel's scatter about its neighbours (bright sky, long exposures)
        a running median is the value of whichever pixel sits at the middle rank, and carries
        that single pixel's noise (a residual up to ~1.7 times ERR); flat-fielded, the window's
        values scatter by their noise only and the median averages it. The residual is still
        against the sky of the neighbours, ``sci - local``, so it keeps the pixel's own
        response (its flat-field deviation, and any defect of response).
    unlit : array (y, x) of bool, or of codes (0 lit, :data:`DARK`, :data:`GAP`), optional
        Pixels outside the light (:func:`unlit_pixels`: the gaps between an image slicer's
        slices). The lit and the unlit pixels each get a sky from their own kind only, as if the
        other were holes: a column that runs from a slice into a gap would otherwise give its
        pixels near the edge a median that is a lit or a dark pixel by the noise, and the row's
        offsets and its running median across the dispersion, where the lit pixels' sky falls
        off, would give the dark pixels the lit ones' deficit. The lit pixels are treated as if
        the unlit ones were holes; an unlit pixel's residual is its own value (less the offset
        of its row), its sky that of the lit pixels around it, its noise its ERR calibrated over
        the unlit pixels (:func:`_unlit_residuals`). A :data:`GAP` pixel (a narrow gap between
        two slices, :func:`gap_pixels`) is against the light of its gap instead
        (:func:`_gap_light`).
    cross_apart : array (y, x) of bool, optional
        A part of the image whose sky is modelled apart (:func:`lrscube.detection.detect.sky_pieces`):
        its pixels and the others are not each other's neighbours across the dispersion
        (``cross_window``). They still enter the running medians along the dispersion, so that
        the sky beyond a spectrum's end follows its fall-off; but their residuals here are
        against a sky that runs through the spectrum's end, and at the part's side they would
        be the cross-dispersion sky of the pixels beside them.

    Returns
    -------
    Residuals
        ``resid`` (DN/s), ``sigma`` (DN/s) and ``sky`` (DN/s), shaped like ``sci``.
    """
    sci = np.asarray(sci, dtype=np.float32)
    err = np.asarray(err, dtype=np.float32)
    kw = dict(dispersion_axis=dispersion_axis, sky_window=sky_window, min_sky_pixels=min_sky_pixels,
              remove_line_offsets=remove_line_offsets, calibrate_noise=calibrate_noise, clip_sigma=clip_sigma,
              calibration_block=calibration_block)
    if unlit is not None and np.any(unlit):
        codes = np.asarray(unlit)
        return _lit_and_unlit(sci, err, np.broadcast_to(codes != 0, sci.shape),
                              cross_window=cross_window, response=response, cross_apart=cross_apart,
                              gap=np.broadcast_to(codes == GAP, sci.shape) if codes.dtype != bool else None, **kw)
    if response is not None:
        return _flat_fielded(sci, err, response, cross_window=cross_window, cross_apart=cross_apart,
                             _empty=_empty, _offsets=_offsets, **kw)
    ax = -2 if dispersion_axis == "y" else -1
    cax = -1 if ax == -2 else -2
    # holes (static bad pixels) take their neighbours' values across the dispersion, so that
    # every column's sky is the same estimator (fill_holes); they are NaN again in the residual
    sci, holes = fill_holes(sci, cax)
    if _empty is not None:
        sci = np.where(_empty, np.nan, sci)
    sky, trend, d, sloc = _sky_parts(sci, err, sky_window, ax, min_sky_pixels, cross_window=cross_window,
                                     cross_apart=cross_apart)
    resid = sci - sky
    if remove_line_offsets:
        sky, resid = _without_line_offsets(sci, err, resid, trend, d, ax, sky_window, min_sky_pixels, cross_window)
    resid = np.where(holes, np.nan, resid).astype(np.float32)
    if cross_window:  # then again without the pixels far from that first estimate
        with np.errstate(invalid="ignore"):
            far = np.abs(cross_deviation(resid, cross_window, cax, keep_nan=True, apart=cross_apart)) > 5.0 * sloc
        resid = cross_deviation(resid, cross_window, cax, exclude=far, apart=cross_apart)
    good_err = np.isfinite(err) & (err > 0)
    sigma = np.where(good_err, err, np.nan).astype(np.float32)
    if calibrate_noise:
        if calibration_block is None:
            sigma = sigma * _noise_scale(resid, sigma, clip_sigma)[..., None, None]
        else:
            sigma = _block_calibrated(resid, sigma, clip_sigma, calibration_block)
    resid = np.where(np.isfinite(sigma), resid, np.nan).astype(np.float32)
    return Residuals(resid.astype(np.float32), sigma.astype(np.float32), sky.astype(np.float32))


def _lit_and_unlit(sci, err, u, *, dispersion_axis, sky_window, min_sky_pixels, remove_line_offsets,
                   calibrate_noise, clip_sigma, calibration_block, cross_window, response,
                   cross_apart=None, gap=None) -> Residuals:
    """:func:`spatial_residuals` with pixels outside the light ``u`` (its ``unlit``): the lit
    pixels' residuals as if the unlit ones were holes; an unlit pixel's residual its own value
    (less its row's offset), its sky that of the lit pixels around it, its noise its ERR
    calibrated over the unlit pixels (:func:`_unlit_residuals`)."""
    kw = dict(dispersion_axis=dispersion_axis, sky_window=sky_window, min_sky_pixels=min_sky_pixels,
              remove_line_offsets=remove_line_offsets, calibrate_noise=calibrate_noise, clip_sigma=clip_sigma,
              calibration_block=calibration_block)
    # the unlit pixels are left empty, not filled from their neighbours across the dispersion
    # (which, at a slice's edge, are lit: the edge's column would get the slice's sky)
    dark, dark_sigma, off = _unlit_residuals(np.where(u, sci, np.nan).astype(np.float32), err,
                                             -2 if dispersion_axis == "y" else -1, sky_window, min_sky_pixels,
                                             remove_line_offsets, calibrate_noise, clip_sigma)
    # a line's offset as its dark pixels show it: no light, so none of the sky's structure
    lit = spatial_residuals(np.where(u, np.nan, sci), err, cross_window=cross_window, response=response,
                            cross_apart=cross_apart, _empty=u, _offsets=off, **kw)
    # what an unlit pixel sees is its dark level plus a little scattered light, in
    # proportion to the sky of the lit pixels around it (filled across the gap from both
    # sides, or along the dispersion past the slices' ends): its residual is its value, its
    # "sky" that lit sky, so the baseline r = a sky + d measures the scattered light (a) and
    # the dark level (d); its noise is its ERR, calibrated over the unlit pixels
    cax = -1 if dispersion_axis == "y" else -2
    near = np.where(u, np.nan, lit.sky)
    near = fill_holes(near, cax, max_gap=max(int(cross_window or 0), int(sky_window)))[0]
    near = fill_holes(near, -3 - cax, max_gap=int(sky_window))[0]  # past the slices' ends
    sky = np.where(u, np.where(np.isfinite(near), near, 0.0), lit.sky).astype(np.float32)
    if gap is not None and gap.any():
        dark, sky = _gap_light(dark, sky, gap, -2 if dispersion_axis == "y" else -1, sky_window, min_sky_pixels)
    return Residuals(np.where(u, dark, lit.resid).astype(np.float32),
                     np.where(u, dark_sigma, lit.sigma).astype(np.float32),
                     sky)


def _gap_light(dark, sky, gap, disp_axis: int, window: int, min_count: int):
    """``(resid, sky)`` with the pixels of the narrow gaps ``gap`` against the light of their gap:
    the running median along the dispersion over ``window`` pixels of the gap's own values
    (``dark``, each less its line's offset) is their sky, their residual the value less it
    (NaN where the window holds fewer than ``min_count`` gap pixels).

    A narrow gap between two slices takes the slices' wings and scattered light, which change
    from exposure to exposure by more than the lit sky around does (the wings widen with
    wavelength, the thermal background's share of the light changes): against the sky around,
    a gap pixel's residual carries that light, many times its noise in some exposures, and a
    normal gap pixel becomes an excess. That light is smooth along the gap, as a slice's sky is
    along the slice; a defect of one pixel is not. Its baseline ``r = a sky + d`` then says how
    it differs from the gap, and a loss of all its light is ``a = -1``, as for a lit pixel."""
    light = running_median(np.where(gap, dark, np.nan).astype(np.float32), int(window) | 1, axis=disp_axis,
                           min_count=min_count)
    return np.where(gap, dark - light, dark), np.where(gap, light, sky)


def gap_pixels(unlit: np.ndarray, *, dispersion_axis: str = "y", max_width: int = 3) -> np.ndarray:
    """(y, x) bool: the pixels of ``unlit`` (y, x) in runs across the dispersion at most
    ``max_width`` pixels wide: the narrow gaps between an image slicer's slices, which see the
    slices' wings, as opposed to the wide dark bands (between the channels, past the slices'
    ends, at the frame's edges) that see almost nothing."""
    u = np.asarray(unlit, bool)
    # runs along the axis across the dispersion (x where the light is dispersed along y)
    return u & (_run_lengths(u, 1 if dispersion_axis == "y" else 0) <= int(max_width))


def _run_lengths(mask: np.ndarray, axis: int) -> np.ndarray:
    """int like ``mask``: the length of the run of True along ``axis`` each pixel is in (0
    where False)."""
    from scipy import ndimage

    m = np.asarray(mask, bool)
    line = np.zeros((3,) * m.ndim, bool)
    centre = [1] * m.ndim
    centre[axis] = slice(None)
    line[tuple(centre)] = True  # neighbours along the axis only
    lab, n = ndimage.label(m, structure=line)
    size = np.bincount(lab.ravel(), minlength=1)
    size[0] = 0
    return size[lab]


def unlit_codes(unlit: np.ndarray, *, dispersion_axis: str = "y", gap_max_width: int | None = None) -> np.ndarray:
    """(y, x) uint8: 0 lit, :data:`DARK` outside the light, :data:`GAP` in a narrow gap between
    slices (:func:`gap_pixels`, runs at most ``gap_max_width`` wide; None: no pixel is)."""
    u = np.asarray(unlit, bool)
    codes = np.where(u, DARK, 0).astype(np.uint8)
    if gap_max_width:
        codes[gap_pixels(u, dispersion_axis=dispersion_axis, max_width=gap_max_width)] = GAP
    return codes


def _flat_fielded(sci, err, response, *, cross_window, _empty, cross_apart=None, _offsets=None, **kw) -> Residuals:
    """:func:`spatial_residuals` with the pixels' ``response``: the sky from the flat-fielded
    image (a running median then averages the noise instead of taking one pixel's), the residual
    still against the neighbours' sky, so that it keeps the pixel's own response."""
    g = np.asarray(response, np.float32)
    g = np.where(np.isfinite(g), np.clip(g, RESPONSE_RANGE[0], RESPONSE_RANGE[1]), 1.0).astype(np.float32)
    v = sci / g
    res = spatial_residuals(v, err / g, cross_window=cross_window, cross_apart=cross_apart, _empty=_empty, **kw)
    local = v - res.resid  # the neighbours' sky (and what the neighbouring lines share)
    resid = sci - local
    if kw.get("remove_line_offsets", True):
        resid = resid - _offset_left(sci, g, res.sky, -2 if kw.get("dispersion_axis", "y") == "y" else -1,
                                     cross_window, _offsets)
    return Residuals(resid.astype(np.float32), (res.sigma * g).astype(np.float32), res.sky)


def _offset_left(sci, g, sky, ax: int, cross_window: int | None, offsets=None) -> np.ndarray:
    """What a line's offset leaves in ``sci - local`` when the sky is built from the flat-fielded
    image ``sci / g``. The offset ``o`` is additive: ``o / g`` there, so the line's median and
    the running median across the dispersion take out about ``o / g_loc``, ``g_loc`` the median
    response of the pixels around (the line's, without ``cross_window``), and ``o (1 - 1 / g_loc)``
    is left in every pixel: a tenth of the offset along a row at a trough of the MRS fringes, a dark
    change of the whole row over the exposures the offset lasts. ``o``: the line's ``offsets``
    as its pixels outside the light show them (no sky there, so no structure of the sky's that
    the line shares is taken for one), else the line's median of ``sci - g sky``."""
    cross = -1 if ax == -2 else -2
    if offsets is not None and np.isfinite(offsets).all():
        o = np.asarray(offsets, np.float32)
    else:
        with np.errstate(invalid="ignore"):
            o = _line_offsets((sci - g * sky).astype(np.float32), ax)
        if offsets is not None:
            o = np.where(np.isfinite(offsets), offsets, o).astype(np.float32)
    seen = np.isfinite(sci).reshape((-1,) + sci.shape[-2:]).any(axis=0)
    g_loc = _local_response(g, seen, cross, cross_window)
    with np.errstate(invalid="ignore", divide="ignore"):
        left = o * (1.0 - 1.0 / g_loc)
    return np.where(np.isfinite(left), left, 0.0).astype(np.float32)


#: the last few local-response maps (read-only): stage 1 asks for the same one exposure after
#: exposure; a worker's threads share them
_LOCAL_RESPONSE: dict = {}
_LOCAL_RESPONSE_LOCK = threading.Lock()


def _local_response(g, seen, cross: int, cross_window: int | None) -> np.ndarray:
    """The median response of the pixels ``seen`` around each pixel across the dispersion, over
    ``cross_window`` (else the whole line): a median, as the offsets' are, so a dead pixel's
    response does not move it. Kept for the next exposure with the same response and footprint
    (a NaN-aware running median over a frame costs tens of milliseconds)."""
    g = np.ascontiguousarray(g, np.float32)
    seen = np.ascontiguousarray(seen)
    key = (g.shape, cross, cross_window, xxhash.xxh3_128_hexdigest(memoryview(g)),
           xxhash.xxh3_128_hexdigest(memoryview(np.packbits(seen))))
    with _LOCAL_RESPONSE_LOCK:
        got = _LOCAL_RESPONSE.get(key)
    if got is not None:
        return got
    gl = np.where(seen, g, np.nan).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if cross_window:
            out = running_median(gl, int(cross_window) | 1, axis=cross)
        else:
            out = np.nanmedian(gl, axis=cross, keepdims=True)
    out.flags.writeable = False
    with _LOCAL_RESPONSE_LOCK:
        if len(_LOCAL_RESPONSE) >= 4:
            _LOCAL_RESPONSE.pop(next(iter(_LOCAL_RESPONSE)))
        _LOCAL_RESPONSE[key] = out
    return out


def _without_line_offsets(sci, err, resid, trend, d, ax, sky_window, min_sky_pixels, cross_window):
    """(sky, resid) with the offsets of the lines across the dispersion removed. The line offsets
    alternate along the dispersion, so they bias the running median of the detrended data and
    the outlier mask; both are redone without them (the smooth trend is barely affected by them
    and is kept: one running median, not four)."""
    off = _line_offsets(resid, ax)
    if cross_window:  # the outliers were judged across the dispersion: offsets of lines did not enter
        out = np.isnan(d) & np.isfinite(sci)
    else:
        with np.errstate(invalid="ignore"):
            out = np.abs(resid - off) > 5.0 * err
    d = np.where(out, np.nan, sci - off) - trend
    sky = trend + local_sky(d, sky_window, axis=ax, min_count=min_sky_pixels)
    resid = sci - off - sky
    resid -= _line_offsets(resid, ax)
    return sky, resid


def _block_calibrated(resid, sigma, clip_sigma, calibration_block) -> np.ndarray:
    """``sigma`` calibrated per block of ``calibration_block`` pixels of each exposure; blocks with
    too few pixels for a robust scale (edges) take the exposure's factor."""
    by, bx = (int(v) for v in calibration_block)
    whole = None  # the exposure's factor, computed only if some block needs it
    out = np.empty_like(sigma)
    for a in range(0, resid.shape[-2], by):
        for b in range(0, resid.shape[-1], bx):
            blk = (..., slice(a, a + by), slice(b, b + bx))
            n = np.isfinite(resid[blk] / sigma[blk]).reshape(resid.shape[:-2] + (-1,)).sum(axis=-1)
            sc = _noise_scale(resid[blk], sigma[blk], clip_sigma)
            if (n < MIN_CALIBRATION_PIXELS).any():
                if whole is None:
                    whole = _noise_scale(resid, sigma, clip_sigma)
                sc = np.where(n >= MIN_CALIBRATION_PIXELS, sc, whole)
            out[blk] = sigma[blk] * sc[..., None, None]
    return out


def _noise_scale(resid: np.ndarray, sigma: np.ndarray, clip_sigma: float | None) -> np.ndarray:
    """Per-exposure factor on ERR: the MAD-scale of resid/ERR, raised (never lowered) to the RMS
    of the normalised residual clipped at +-clip_sigma (see :func:`spatial_residuals`)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        zz = (resid / sigma).reshape(resid.shape[:-2] + (-1,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = bn.nanmedian(zz, axis=-1)
        scale = MAD_TO_SIGMA * bn.nanmedian(np.abs(zz - med[..., None]), axis=-1)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0).astype(np.float32)
    if clip_sigma:
        # the sums along time are of clipped values: their variance is what normalises them
        # (1 for Gaussian noise; more when the noise has heavier tails than a Gaussian)
        zc = np.clip((zz - med[..., None]) / scale[..., None], -clip_sigma, clip_sigma)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            rms = np.sqrt(bn.nanmean(zc * zc, axis=-1))
        scale = scale * np.where(np.isfinite(rms) & (rms > 0), np.maximum(rms, 1.0), 1.0).astype(np.float32)
    return np.asarray(scale, np.float32)


#: a pixel's response relative to its neighbours is taken within these bounds for the
#: flat-fielding of the sky (beyond them a pixel is a defect, not the flat field)
RESPONSE_RANGE = (0.5, 2.0)


def sky_ratio(sci: np.ndarray, err: np.ndarray, *, dispersion_axis: str = "y", sky_window: int = 15,
              min_sky_pixels: int = 5, min_snr: float = 5.0) -> np.ndarray:
    """Each pixel's value over the smooth sky of its line along the dispersion, (..., y, x): one
    sample of its response relative to its neighbours (NaN where the sky is not at least
    ``min_snr`` times ERR, where the ratio says little). The smooth sky is the running mean of
    the pixels over twice ``sky_window`` along the dispersion, those more than 10 times their
    expected scatter from the running median left out."""
    sci = np.asarray(sci, np.float32)
    err = np.asarray(err, np.float32)
    ax = -2 if dispersion_axis == "y" else -1
    filled, holes = fill_holes(sci, -1 if ax == -2 else -2)
    med = local_sky(filled, sky_window, axis=ax, min_count=min_sky_pixels)
    # a running mean of the pixels themselves over twice the window (outliers left out): a running
    # median of pixels whose responses differ by more than their noise is one of them, and which
    # one changes with the noise from exposure to exposure; a mean of all of them changes only
    # with the sky. Its bias (the sky's curvature, a one-sided window at an edge) is the same in
    # every exposure, so it is part of the pattern, which only has to be smooth along the column
    dev = filled - med
    with np.errstate(invalid="ignore"):
        keep = np.isfinite(filled) & ~(np.abs(dev) > 10.0 * local_scatter(dev, med, err))
    w = 2 * int(sky_window) + 1
    num = running.running_mean(np.where(keep, filled, 0.0).astype(np.float32), w, ax)
    den = running.running_mean(keep.astype(np.float32), w, ax)
    with np.errstate(invalid="ignore", divide="ignore"):
        sky = np.where(den * w >= min_sky_pixels, num / den, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = ~holes & np.isfinite(sky) & (sky > min_snr * err)
        return np.where(ok, sci / sky, np.nan).astype(np.float32)


def unlit_pixels(snr: np.ndarray, *, fraction: float, dispersion_axis: str = "y", window: int = 15,
                 cross_window: int = 15, min_length: int = 64, min_snr: float = 5.0) -> np.ndarray:
    """Pixels outside the light, (y, x) bool, from exposures' ``sci / err`` ``(k, y, x)``.

    An image slicer (the MRS) puts its slices side by side across the dispersion with dark gaps
    between them; the slices curve, so a column runs from a slice into a gap and out again, and
    they end before the frame does along the dispersion. A pixel there sees (almost) no sky. A
    running median along a column that crosses an edge is a lit or a dark pixel's value, as the
    noise orders them, and the line offsets and the running median across the dispersion of a
    row where the lit pixels' sky falls off give the dark pixels the lit ones' deficit. So the
    lit and the unlit pixels are two populations, each with a sky of its own
    (:func:`spatial_residuals` ``unlit``).

    A pixel is unlit where its illumination (the median over the exposures, then the running
    median of 3 pixels along the dispersion: a hot pixel in a gap is in the gap, a dead pixel in
    a slice in the slice) is below ``fraction`` of the brightest light (a running median of 7
    along the dispersion) within ``window``
    pixels along and ``cross_window`` across the dispersion, that brightest is at least
    ``min_snr`` (in a field dark everywhere nothing is lit to compare with), and the dark pixels
    it connects to extend ``min_length`` pixels or
    more along either axis over an area of at least twice that: a gap runs the length of the
    spectrum and is more than a column wide, the end of the slices spans the frame; a cluster
    of dead pixels, or one dead column, does not. Conversely a lit patch shorter than
    ``min_length`` along both axes whose surroundings are mostly unlit is in the dark
    (:func:`_dark_islands`): a slice spans the spectrum, a cluster of hot pixels in a gap does not.
    """
    from scipy import ndimage

    q = np.asarray(snr, np.float32)
    ax = -2 if dispersion_axis == "y" else -1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        level = bn.nanmedian(q, axis=0) if q.ndim == 3 else q
    smooth = running_median(level, 3, axis=ax, min_count=2)
    # the light to compare with: a slice's is long along the dispersion, so a 7-pixel median
    # along it keeps it and drops a short cluster of hot pixels, which would otherwise make its
    # surroundings in the slice look dark
    light = running_median(level, 7, axis=ax, min_count=4)
    size = [int(cross_window) | 1, int(cross_window) | 1]
    size[ax] = int(window) | 1
    bright = ndimage.maximum_filter(np.where(np.isfinite(light), light, -np.inf), size=size, mode="constant",
                                    cval=-np.inf)
    with np.errstate(invalid="ignore"):
        dark = np.isfinite(smooth) & (bright >= min_snr) & (smooth < fraction * bright)
    lab, n = ndimage.label(dark, structure=np.ones((3, 3), bool))
    if not n:
        return dark
    keep = np.zeros(n + 1, bool)
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        ext = max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start)
        keep[i] = ext >= min_length and (lab[sl] == i).sum() >= 2 * min_length
    unlit = keep[lab]
    return unlit | _dark_islands(np.isfinite(smooth) & ~unlit, unlit, min_length)


def _dark_islands(lit: np.ndarray, unlit: np.ndarray, min_length: int) -> np.ndarray:
    """The lit pixels (y, x) bool of patches shorter than ``min_length`` along both axes whose
    neighbouring pixels are at least half unlit: hot pixels in a gap, a cluster of them bright
    in most exposures (the 3-pixel median along the dispersion takes only single ones). Taken
    as lit, such a patch would be its own sky and its excess would vanish from its residuals;
    among the unlit pixels its dark level is its baseline, and its onset a change of it."""
    from scipy import ndimage

    lab, n = ndimage.label(lit)
    out = np.zeros(lit.shape, bool)
    ring3 = np.ones((3, 3), bool)
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        if max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start) >= min_length:
            continue
        grown = tuple(slice(max(0, a.start - 1), a.stop + 1) for a in sl)
        patch = lab[grown] == i
        ring = ndimage.binary_dilation(patch, ring3) & ~patch
        if ring.any() and unlit[grown][ring].mean() >= 0.5:
            out[grown] |= patch
    return out


def response_pattern(ratios: np.ndarray, *, dispersion_axis: str = "y", window: int | None = 15,
                     gate_variance: float | None = None, return_gate: bool = False, edge: int = 15):
    """The pixels' response relative to their neighbours, (y, x), from a stack of :func:`sky_ratio`
    samples ``(k, y, x)`` (exposures spread over the data set).

    The median over the samples, shrunk by its own noise towards the pattern's local level
    ``L`` (:func:`_stable_level`: the level the pixels across the dispersion share, where it is
    the same in every exposure): ``L (1 + w (median / L - 1))`` with ``w = F / (F + v)``, ``v`` the variance of ``median / L``
    (from the samples' MAD) and ``F`` the spread of the medians over the frame (their robust
    variance minus the typical variance of a median). Bright pixels (small ``v``) keep their measured response;
    faint ones, whose ratios are noise, stay near their neighbours'. ``L`` is what the smooth sky
    of a line cannot follow (a spectrum's steep end, MRS fringes), the same in every exposure and
    measured by many pixels at once: shrunk towards 1 instead, each faint pixel there would keep
    a share of it set by its own noise, and the flat-fielded neighbours of every pixel would
    scatter by that much (their running medians then pick a pixel by the noise). Bounded to
    :data:`RESPONSE_RANGE`; ``L`` (or 1) where no sample exists. Its errors do not matter
    downstream otherwise: the pattern only flat-fields the neighbours of each pixel for its sky,
    and a fixed error is a fixed multiple of the sky, part of each pixel's fitted response.
    ``window`` None: no level (``L`` = 1). ``edge``: no level within this many pixels of the
    ends of a sample's data along the dispersion, where its smooth sky (:func:`sky_ratio`'s running
    mean over twice ``sky_window``) is cut short: what the ratio holds there is the cut, not the sky. ``gate_variance``: the spread of the pixels' responses
    the level must stand out from (:func:`_stable_level`), by default measured on these samples;
    a pass on images an earlier pattern flat-fielded passes the first pass's, since what is left
    of the responses there no longer measures it. ``return_gate``: also return the spread used.
    """
    q = np.asarray(ratios, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = running.first_axis_nanmedians(q)  # bottleneck's nanmedian along axis 0, compiled
        n = np.isfinite(q).sum(axis=0)
        mad = MAD_TO_SIGMA * running.first_axis_nanmedians(np.abs(q - med[None]))
        v = 1.5708 * mad ** 2 / np.maximum(n, 1)
        v = np.where(n >= 3, v, np.inf)
        ok = np.isfinite(med) & np.isfinite(v)
        if ok.sum() < 50:
            ones = np.ones(q.shape[1:], np.float32)
            return (ones, gate_variance) if return_gate else ones
        # the spread of the pixels' own responses over the frame (a level shared by many pixels
        # covers a small part of it and leaves this robust spread as it is)
        F = _spread_beyond_noise(med[ok], v[ok])
        level, gate = ((np.ones(med.shape, np.float32), gate_variance) if window is None
                       else _stable_level(q, int(window) | 1, -1 if dispersion_axis == "y" else -2, med, v, gate_variance,
                                          edge))
        u = med / level
        v = v / (level.astype(np.float64) ** 2)
        w = np.where(ok, F / (F + v), 0.0)
        g = level * (1.0 + w * (np.where(ok, u, 1.0) - 1.0))
    out = np.clip(np.where(np.isfinite(g), g, 1.0), RESPONSE_RANGE[0], RESPONSE_RANGE[1]).astype(np.float32)
    return (out, gate) if return_gate else out


def _stable_level(q: np.ndarray, window: int, cross_axis: int, med: np.ndarray | None = None,
                  v: np.ndarray | None = None, gate_variance: float | None = None,
                  edge: int = 0) -> tuple[np.ndarray, float]:
    """The pattern's local level (y, x) from the samples ``q`` (k, y, x): each sample's running
    median over ``window`` pixels across the dispersion, ``l``; their median over the samples,
    ``L``, shrunk towards 1 by how much ``l`` changes from sample to sample (``sd``, from their
    MAD) and by the spread ``F`` of the pixels' own responses about it (the robust variance of
    the samples' medians ``med`` over ``L``, less the typical variance ``v`` of a median; none
    without ``med``; ``gate_variance`` when given): ``1 + w (L - 1)``
    with ``w = (L - 1)^2 / ((L - 1)^2 + sd^2 + 9 F)`` where ``w`` exceeds 0.5, exactly 1
    elsewhere (a level that is not firm leaves the pattern as it was). A level within three times the spread of the
    pixels' responses is what a flat field's large scales do, which the sky of each pixel's
    neighbours already follows; only a structure beyond them is the sky's. A level that is a fixed multiple of
    the sky (the fall-off beyond a spectrum's end that the smooth sky of a column cannot
    follow, fringes) is the same in every exposure; one that a light of its own makes (the
    stray light of an IFU's gap, a constant floor under a sky that changes fourfold) is a
    different ratio in each, and flat-fielding by it would give each exposure a different
    error. 1 where no sample has a level. Returns the level and ``F``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        q = np.asarray(q, np.float32)
        across_rows = cross_axis % q.ndim == q.ndim - 1
        if across_rows:  # lanes of the transposed copy (one compiled pass)
            lk = np.ascontiguousarray(running_median(np.ascontiguousarray(np.swapaxes(q, -1, -2)), window, axis=-2,
                                                     min_count=min(5, window)).swapaxes(-1, -2))
        else:
            lk = running_median(q, window, axis=cross_axis, min_count=min(5, window))
        if edge > 0:  # not where a sample's smooth sky along the dispersion is cut short by its data's end
            lk = np.where(_inside_ends(np.isfinite(q), -2 if across_rows else -1, int(edge)),
                          lk, np.nan).astype(np.float32)
        L = running.first_axis_nanmedians(np.ascontiguousarray(lk))
        sd = MAD_TO_SIGMA * running.first_axis_nanmedians(np.abs(lk - L[None]))
        F = 0.0 if gate_variance is None else float(gate_variance)
        if gate_variance is None and med is not None:  # about the level: a structure over much of a small frame is not a response
            u = med / L
            vu = (np.inf if v is None else v) / (L.astype(np.float64) ** 2)
            ok = np.isfinite(u) & np.isfinite(vu)
            if ok.sum() >= 50:
                F = _spread_beyond_noise(u[ok], vu[ok])
        d2 = (L.astype(np.float64) - 1.0) ** 2
        w = np.where(d2 > 0, d2 / (d2 + np.where(np.isfinite(sd), sd, np.inf) ** 2 + 9.0 * F), 0.0)
        level = np.where(w > 0.5, 1.0 + w * (L - 1.0), 1.0)  # exactly 1 unless the level is firm
    return np.where(np.isfinite(level) & (level > 0), level, 1.0).astype(np.float32), F


def _spread_beyond_noise(values: np.ndarray, var: np.ndarray) -> float:
    """The robust (MAD) variance of ``values`` less the typical variance ``var`` of each, at least 0."""
    return max(float((MAD_TO_SIGMA * np.median(np.abs(values - np.median(values)))) ** 2 - np.median(var)), 0.0)


def _inside_ends(finite: np.ndarray, axis: int, edge: int) -> np.ndarray:
    """``finite``'s shape, bool: at least ``edge`` pixels inside the first and the last finite
    pixel of its line along ``axis``."""
    f = np.moveaxis(np.asarray(finite, bool), axis, -1)
    n = f.shape[-1]
    idx = np.arange(n)
    first = np.argmax(f, axis=-1)[..., None]
    last = (n - 1 - np.argmax(f[..., ::-1], axis=-1))[..., None]
    ok = f.any(axis=-1)[..., None] & (idx >= first + edge) & (idx <= last - edge)
    return np.moveaxis(ok, -1, axis)


def estimate_response(sci: np.ndarray, err: np.ndarray, *, iterations: int = 2, dispersion_axis: str = "y",
                      sky_window: int = 15, min_sky_pixels: int = 5) -> np.ndarray:
    """The pixels' response relative to their neighbours, (y, x), from exposures ``(k, y, x)``
    spread over the data set: :func:`response_pattern` of their :func:`sky_ratio`, repeated on
    the images flat-fielded by the previous estimate (the smooth sky of the raw images carries
    a trace of the response pattern, ~0.15 % for a 2 % flat; one more pass removes it)."""
    sci = np.asarray(sci, np.float32)
    err = np.asarray(err, np.float32)
    g = np.ones(sci.shape[1:], np.float32)
    gate = None
    for _ in range(max(1, int(iterations))):
        q = sky_ratio(sci / g, err / g, dispersion_axis=dispersion_axis, sky_window=sky_window,
                      min_sky_pixels=min_sky_pixels)
        q, gate = response_pattern(q, dispersion_axis=dispersion_axis, gate_variance=gate, return_gate=True,
                                   edge=sky_window)
        g = np.clip(g * q, RESPONSE_RANGE[0], RESPONSE_RANGE[1]).astype(np.float32)
    return g


def trace_mask(
    sky: np.ndarray,
    err: np.ndarray,
    *,
    dispersion_axis: str = "y",
    sky_window: int = 15,
    cross_window: int = 9,
    nsigma: float = 5.0,
    min_length: int = 21,
    margin: int = 2,
    max_length: int | None = None,
) -> np.ndarray:
    """Pixels covered by a source trace: a narrow, long bump of the sky across the dispersion.

    A point source in the slit (or the slitless field) adds a spectrum a few pixels wide across
    the dispersion and hundreds of pixels long along it. The running-median sky follows it, so
    it shows as a bump of the sky profile across the dispersion, which blank sky does not have
    (slit edges are steps, and a median across ``cross_window`` pixels keeps steps).

    Parameters
    ----------
    sky, err : array (..., y, x)
        Local sky and ERR (DN/s) of each exposure.
    cross_window : int
        Width (pixels, odd) of the running median across the dispersion that defines the
        bump-free sky profile. Traces narrower than about half of it are found.
    nsigma : float
        Threshold on the bump averaged over ``min_length`` pixels along the dispersion, in units
        of the noise of the sky estimate (ERR * 1.25 / sqrt(sky_window)).
    min_length : int
        Length (pixels) along the dispersion over which the bump is averaged.
    margin : int
        Pixels added on each side of the trace across the dispersion.
    max_length : int, optional
        The longest a source's spectrum runs along the dispersion (pixels). A bump over a longer
        stretch of a line along the dispersion is a detector pattern (a column offset, EMI
        striping: the whole column of a full frame), not a source: the running sky along the
        dispersion follows it, and masking it left the exposures of the defects on those
        columns out of their analysis.

    Returns
    -------
    bool array like ``sky``: True where an exposure's pixel lies on a trace.
    """
    dax = -2 if dispersion_axis == "y" else -1
    cax = -1 if dax == -2 else -2
    base = running_median(sky, cross_window, axis=cax, min_count=3)
    noise = err * (1.2533 / np.sqrt(sky_window))
    with np.errstate(all="ignore"):
        sig = (sky - base) / noise
    sig = np.where(np.isfinite(sig), sig, 0.0).astype(np.float32)
    L = int(min_length)
    kernel_axis = dax
    mean_sig = _running_mean(sig, L, kernel_axis)
    hit = mean_sig > nsigma * _bump_scale(mean_sig, np.isfinite(sky) & (noise > 0))
    if max_length is not None and hit.any():
        hit = _without_long_runs(hit, int(max_length), kernel_axis, L)
    if not hit.any():
        return hit
    # grow along the dispersion over the averaging length, across it by the margin
    hit = _dilate(hit, L // 2, kernel_axis)
    hit = _dilate(hit, int(margin), cax)
    return hit


def _without_long_runs(hit: np.ndarray, max_length: int, axis: int, gap: int) -> np.ndarray:
    """``hit`` without its runs along ``axis`` longer than ``max_length``, a run going on over
    gaps of at most ``gap`` (a bump at the threshold comes and goes with the noise). Only the
    lines along ``axis`` that hold a hit are looked at (a few dozen of a frame's)."""
    h = np.moveaxis(hit, axis, -1)
    lanes = h.any(axis=-1)
    sub = h[lanes]  # (lines, n)
    n = sub.shape[-1]
    c = np.concatenate([np.zeros((sub.shape[0], 1), np.int32), np.cumsum(sub, axis=-1, dtype=np.int32)], axis=-1)
    i = np.arange(n)
    before = c[:, i] - c[:, np.clip(i - gap, 0, n)]           # hits in [i - gap, i)
    after = c[:, np.clip(i + gap + 1, 0, n)] - c[:, i + 1]     # hits in (i, i + gap]
    joined = sub | ((before > 0) & (after > 0))
    out = h.copy()
    out[lanes] = sub & (_run_lengths(joined, -1) <= max_length)
    return np.moveaxis(out, -1, axis)


def _bump_scale(mean_sig: np.ndarray, ok: np.ndarray, stride: int = 3) -> np.ndarray:
    """Per image (leading axes), the robust scale of the averaged bump significance over its
    pixels, at least 1 (broadcastable to ``mean_sig``).

    Blank sky has bumps across the dispersion too: the sky of a column is the running median of
    its own pixels, so it carries that column's mean response over the window, a fixed pattern of
    a few tenths of a percent for a flat field of a few percent rms (the response pattern
    flat-fields pixels along a column only). In a deep exposure under a bright sky that pattern
    is several times the noise of the sky estimate and would pass for source traces in every
    such exposure, always at the same columns. A trace is a bump that stands out from the
    image's own bumps: the threshold is raised by their robust scale where it exceeds the noise
    (a trace covers a few columns: it does not move the scale)."""
    lead = mean_sig.shape[:-2]
    flat_sig = mean_sig.reshape(-1, *mean_sig.shape[-2:])[:, ::stride, ::stride]
    flat_ok = np.broadcast_to(ok, mean_sig.shape).reshape(-1, *mean_sig.shape[-2:])[:, ::stride, ::stride]
    out = np.ones(flat_sig.shape[0], np.float32)
    for i in range(flat_sig.shape[0]):
        v = flat_sig[i][flat_ok[i]]
        if v.size >= 100:
            med = np.median(v)
            out[i] = max(1.0, float(MAD_TO_SIGMA * np.median(np.abs(v - med))))
    return out.reshape(*lead, 1, 1)


def _running_mean(a: np.ndarray, window: int, axis: int) -> np.ndarray:
    """Centred running mean over ``window`` (odd) values along ``axis``, zero beyond the ends:
    scipy.ndimage's running sum in double precision (:func:`lrscube.detection.running.running_mean`)."""
    return running.running_mean(a, int(window) | 1, axis)


def _dilate(mask: np.ndarray, n: int, axis: int) -> np.ndarray:
    if n <= 0:
        return mask
    m = _running_mean(mask.astype(np.float32), 2 * n + 1, axis)
    return m > 0
