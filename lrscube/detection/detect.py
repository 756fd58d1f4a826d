"""Detect defective pixels: the exposure cube in, the defect-intervals table (and mask cube) out.

This module is the thin layer. The numerics live in their own modules and are tested alone:
:mod:`lrscube.detection.residuals` (per-exposure residual against the local sky), :mod:`lrscube.detection.temporal`
(robust statistics along time), :mod:`lrscube.detection.changepoints` (onset and recovery) and
:mod:`lrscube.detection.classify` (the registered defect classes). Here they are composed per tile
(:func:`analyse_tile`, pure numpy), mapped over the cube with dask (:func:`detect_dataset`), and
wrapped for a store (:func:`detect`).

The flow of :func:`detect`::

    open_cube -> stage 1 per batch of exposures (whole frames: residuals, traces, static bits)
      -> STORE/detect/RUN/work (lrscube.storage.workstore: an object per batch; removed after the run)
      -> stage 2 per tile (all exposures x ty x tx: temporal statistics, change points, classes)
      -> interval records -> detect/RUN/intervals.parquet -> detect/RUN/mask -> detect.json (the commit)

Example (in memory, no store)::

    ds = lrscube.open_cube(store)            # or any Dataset with sci/err/dq (time, y, x)
    iv, meta = detect_dataset(ds, "lrs")
"""

from __future__ import annotations

import functools
import logging
import time as _time
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from . import baseline, classify, companions, intscat as intscat_screen, noise_law, running, variance
from ..config import flags, profiles
from ..storage import cube, provenance
from ..storage import store as st
from ..storage import workstore
from ..deploy.cluster import worker_threads
from .detection_params import DetectionParams
from .residuals import (GAP, MIN_CALIBRATION_PIXELS, RESPONSE_RANGE, response_pattern, sky_ratio, spatial_residuals,
                        trace_mask, unlit_codes, unlit_pixels)
from .afterglow import latent_cautions, latent_images
from .states import Thresholds, companion_interval, pixel_intervals
from ..intervals import active
from .temporal import scan_statistic, transients
from ..masks.maskcube import write_mask_cube
from ..storage.cube import cube_url, exposure_table, open_cube, read_frames

log = logging.getLogger(__name__)

INTERVAL_COLUMNS = [
    "y", "x", "flag", "start_mjd", "end_mjd", "dq", "amplitude", "significance",
    "onset_significance", "recovery_significance", "n_bad", "last_good_mjd", "first_bad_mjd",
    "first_good_mjd", "reason", "carried", "last_bad_mjd", "fall_sigma",
]
_DTYPES = {"y": "int64", "x": "int64", "flag": "object", "start_mjd": "float64", "end_mjd": "float64",
           "dq": "uint32", "amplitude": "float64", "significance": "float64",
           "onset_significance": "float64", "recovery_significance": "float64", "n_bad": "int64",
           "last_good_mjd": "float64", "first_bad_mjd": "float64", "first_good_mjd": "float64",
           "reason": "object", "carried": "bool", "last_bad_mjd": "float64", "fall_sigma": "float64"}

#: input DQ bits that make a pixel part of the static mask that is carried into the output
STATIC_BITS = flags.DO_NOT_USE | sum(flags.value(c) for c in flags.DEFECT_CLASSES)
_ALL_BITS = np.uint32(0xFFFFFFFF)


def empty_intervals() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=_DTYPES[c]) for c in INTERVAL_COLUMNS})


@dataclass
class TileContext:
    """What a tile needs besides its pixels: exposure times, parameters, the threshold."""

    expstart: np.ndarray  #: (time,) MJD of exposure start
    mjd: np.ndarray  #: (time,) MJD mid-exposure
    params: DetectionParams
    profile: profiles.Profile
    threshold: float  #: detection threshold of a level run (sigma)
    ys: np.ndarray | None = None  #: full-frame row of each dataset row
    xs: np.ndarray | None = None  #: full-frame column of each dataset column
    thresholds: Thresholds | None = None  #: every screen's threshold (default: from ``threshold``)
    #: (y, x) of the dataset: pixels outside the light (:func:`unlit_of`), whose response is not judged
    unlit: np.ndarray | None = None
    #: (time,) degrees of freedom of each exposure's scatter between integrations (``nints - 1``;
    #: 0: none, a rate product or fewer than 3 integrations); None: no exposure has it
    dof: np.ndarray | None = None

    def __post_init__(self):
        if self.thresholds is None:  # the other screens at the false-alarm rate the level threshold implies
            self.thresholds = self.params.__class__(**{**self.params.to_dict(), "detection_sigma": self.threshold}
                                                    ).thresholds(2, len(self.mjd))


# --------------------------------------------------------------------------------------------
# stage 1, per exposure: spatial residuals (whole frames, no tiles)


def response_indices(n: int, k: int) -> np.ndarray:
    """Time indices of the ``k`` exposures (of ``n``, in time order) that measure the pixels'
    response: spread evenly over the data set."""
    if n <= 0 or k <= 0:
        return np.zeros(0, int)
    return np.unique(np.round(np.linspace(0, n - 1, min(int(k), n))).astype(int))


def _footprints(sci: np.ndarray):
    """(b, (rows, columns)) of each exposure of ``sci`` (B, y, x) with a finite value: the
    slices of its footprint, the smallest box that holds its finite values."""
    for b in range(sci.shape[0]):
        fin = np.isfinite(sci[b])
        if not fin.any():
            continue
        rows = np.flatnonzero(fin.any(axis=1))
        cols = np.flatnonzero(fin.any(axis=0))
        yield b, (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))


def sky_pieces(fp: tuple[slice, slice], boxes, origin=(0, 0)) -> list[tuple[slice, slice, list]]:
    """The parts of a footprint ``fp`` (array slices) whose sky is modelled apart: ``(rows,
    columns, others)``, ``others`` the slices (relative to the part) of the parts modelled apart
    inside it. A region of ``boxes`` (full-frame :class:`~lrscube.config.profiles.Box`,
    ``origin`` the full-frame (y, x) of the array's first pixel) that lies inside the footprint
    but does not fill it is a part of its own: its sky windows stop at its ends, as at a
    footprint's edge (``sky_end_regions``). The rest is modelled over the whole footprint as
    before (the pixels beyond a spectrum's end keep the sky of the fall-off itself) and gives
    only the pixels outside those parts. A footprint inside a region (a subarray) is one part."""
    ys, xs = fp
    rest_holes, parts = [], []
    for bx in boxes:
        y0, y1 = max(bx.y0 - origin[0], ys.start), min(bx.y1 - origin[0], ys.stop)
        x0, x1 = max(bx.x0 - origin[1], xs.start), min(bx.x1 - origin[1], xs.stop)
        if y0 >= y1 or x0 >= x1 or (y0, y1, x0, x1) == (ys.start, ys.stop, xs.start, xs.stop):
            continue
        parts.append((slice(y0, y1), slice(x0, x1), []))
        rest_holes.append((slice(y0 - ys.start, y1 - ys.start), slice(x0 - xs.start, x1 - xs.start)))
    return [(ys, xs, rest_holes)] + parts


def _sky_end_boxes(params: DetectionParams, profile) -> list:
    return [profile.regions[r] for r in params.sky_end_regions]


def response_stage(sci, err, params: DetectionParams, profile, response=None, origin=(0, 0)) -> np.ndarray:
    """Stage 0 for a few exposures ``(B, y, x)``: each pixel's value over the smooth sky of its
    line (:func:`lrscube.detection.residuals.sky_ratio`, cropped to each footprint), ``(B, y, x)`` float32;
    their stack gives the response pattern (:func:`lrscube.detection.residuals.response_pattern`). With
    ``response`` (y, x), of the images flat-fielded by it (a second pass)."""
    sci = np.asarray(sci, np.float32)
    err = np.asarray(err, np.float32)
    if response is not None:
        sci, err = sci / response, err / response
    out = np.full(sci.shape, np.nan, np.float32)
    boxes = _sky_end_boxes(params, profile)
    for b, fp in _footprints(sci):
        for ys, xs, _ in sky_pieces(fp, boxes, origin):  # the rest first, the parts over it
            out[b, ys, xs] = sky_ratio(sci[b:b + 1, ys, xs], err[b:b + 1, ys, xs],
                                       dispersion_axis=profile.dispersion_axis, sky_window=params.sky_window_px,
                                       min_sky_pixels=params.min_sky_pixels)[0]
    return out


def spatial_stage(sci, err, dq, params: DetectionParams, profile, response=None, unlit=None,
                  origin=(0, 0)) -> dict:
    """Residuals of a batch of exposures ``(B, y, x)`` against their local sky, whole frames.

    Returns ``r, s, sky`` (float32, DN/s, NaN where the pixel is not usable), ``trace`` (bool,
    on a source trace), ``jump`` (bool, JUMP_DET in the exposure's DQ: the pipeline found a
    cosmic ray in the pixel), ``and_bits`` (uint32 (y, x): DQ bits set in every exposure of the batch
    that covers the pixel; all ones where none does), ``n_seen`` (int32 (y, x): exposures of the
    batch that cover the pixel) and ``trace_pixels`` (per exposure). Each exposure is cropped to
    its footprint first (a subarray costs its own size, not the frame's). ``s`` is ERR: the noise
    is calibrated in stage 2, about each pixel's own baseline (:func:`calibration_stage`).
    ``response`` (y, x): the pixels' response pattern (stage 0), which flat-fields the
    neighbours of each pixel for its sky (:func:`lrscube.detection.residuals.spatial_residuals`); ``unlit``
    (y, x) the pixels outside the light (:func:`illumination_stage`), whose sky comes from
    their own kind. The regions of ``sky_end_regions`` inside a larger footprint are modelled
    apart (:func:`sky_pieces`; ``origin`` the full-frame (y, x) of the arrays' first pixel).
    """
    p = params
    sci = np.asarray(sci, np.float32)
    err = np.asarray(err, np.float32)
    dq = np.asarray(dq, np.uint32)
    B = sci.shape[0]
    out = {k: np.full(sci.shape, np.nan, np.float32) for k in ("r", "s", "sky")}
    out["trace"] = np.zeros(sci.shape, bool)
    # one compiled pass: no block-sized uint32 or bool temporaries (fresh pages, each of them)
    out["jump"], out["and_bits"], out["n_seen"] = running.coverage(sci, dq, flags.JUMP_DET)
    out["trace_pixels"] = np.zeros(B, np.int64)
    boxes = _sky_end_boxes(p, profile)
    for b, ys, xs, holes in ((b, *pc) for b, fp in _footprints(sci) for pc in sky_pieces(fp, boxes, origin)):
        res = spatial_residuals(sci[b:b + 1, ys, xs], err[b:b + 1, ys, xs],
                                dispersion_axis=profile.dispersion_axis,
                                sky_window=p.sky_window_px, min_sky_pixels=p.min_sky_pixels,
                                remove_line_offsets=p.remove_line_offsets, calibrate_noise=False,
                                cross_window=p.cross_sky_window_px or None,
                                response=None if response is None else response[ys, xs],
                                unlit=None if unlit is None else unlit[ys, xs],
                                cross_apart=_parts_mask(ys, xs, holes))
        if p.source_traces:
            tr = trace_mask(res.sky, res.sigma, dispersion_axis=profile.dispersion_axis, sky_window=p.sky_window_px,
                            cross_window=p.trace_cross_window_px, nsigma=p.trace_sigma,
                            min_length=p.trace_min_length_px, margin=p.trace_margin_px,
                            max_length=p.trace_max_length_px)
        else:
            tr = np.zeros(res.sky.shape, bool)
        keep = True  # a whole piece is copied as it is (a masked copy is slower)
        if holes:
            keep = np.ones(res.resid.shape[1:], bool)
            for hy, hx in holes:  # the parts modelled apart are written by their own pass
                keep[hy, hx] = False
        for k, v in (("r", res.resid), ("s", res.sigma), ("sky", res.sky), ("trace", tr)):
            np.copyto(out[k][b, ys, xs], v[0], where=keep)  # in place, no temporary
        out["trace_pixels"][b] += int((tr[0] & keep).sum())
    return out


def _parts_mask(ys: slice, xs: slice, holes: list) -> np.ndarray | None:
    """(y, x) bool over a piece: the parts inside it modelled apart (``holes``); None if none."""
    if not holes:
        return None
    m = np.zeros((ys.stop - ys.start, xs.stop - xs.start), bool)
    for hy, hx in holes:
        m[hy, hx] = True
    return m


def static_bits(and_bits: np.ndarray, n_seen: np.ndarray) -> np.ndarray:
    """Bits set in the DQ of every exposure that covers a pixel (the static mask), (y, x) uint32."""
    return np.where(n_seen > 0, and_bits, 0).astype(np.uint32)


def carried_records(sbits: np.ndarray, n_seen: np.ndarray, origin=(0, 0)) -> list[dict]:
    """Rows of the pixels already flagged as defects in every input DQ (carried, not analysed)."""
    carried = (sbits & np.uint32(STATIC_BITS)) != 0
    out = []
    for yy, xx in zip(*np.nonzero(carried)):
        bits = int(sbits[yy, xx])
        names = [n for n in flags.names(bits) if n in flags.DEFECT_CLASSES]
        out.append({"y": origin[0] + int(yy), "x": origin[1] + int(xx), "flag": "+".join(names) or flags.names(bits)[-1],
                    "start_mjd": np.nan, "end_mjd": np.nan, "dq": bits, "amplitude": np.nan,
                    "significance": np.nan, "onset_significance": np.nan, "recovery_significance": np.nan,
                    "n_bad": int(n_seen[yy, xx]), "last_good_mjd": np.nan, "first_bad_mjd": np.nan,
                    "first_good_mjd": np.nan, "reason": "static: input DQ " + "|".join(flags.names(bits)),
                    "carried": True})
    return out


def excluded_pixels(sbits: np.ndarray, profile, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """(y, x) bool: pixels never analysed: the carried static mask and the reference pixels
    (flagged REFERENCE_PIXEL, or in the profile's reference rows and columns; they see no light).
    ``ys``, ``xs``: the full-frame rows and columns of ``sbits``."""
    ex = ((sbits & np.uint32(STATIC_BITS)) != 0) | ((sbits & np.uint32(flags.REFERENCE_PIXEL)) != 0)
    return ex | profile.reference_mask()[np.ix_(ys, xs)]


# --------------------------------------------------------------------------------------------
# stage 2, per tile of pixels with the whole time axis


def _usable(r, s, trace, exclude, params):
    """(valid, on_trace) (time, P): exposures of each pixel that can be analysed, and those on a
    source trace (left out; a "trace" in most of a pixel's exposures is a defective column)."""
    n_t = r.shape[0]
    P = r.shape[1]
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(r) & np.isfinite(s) & (s > 0)
    valid[:, np.asarray(exclude, bool).reshape(P)] = False
    tr2 = np.asarray(trace, bool).reshape(n_t, P)
    n_valid = valid.sum(axis=0)
    tr_frac = np.where(n_valid > 0, (tr2 & valid).sum(axis=0) / np.maximum(n_valid, 1), 0.0)
    return valid, tr2 & (tr_frac <= params.trace_max_fraction)[None, :]


#: the calibration "block" of the pixels of the narrow gaps between slices: one per exposure
#: over the frame (:func:`pixel_blocks`)
GAP_BLOCK = (-1, -1)


def pixel_blocks(origin, shape, block, gap=None) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Calibration blocks (full-frame (row, column) block indices) of a tile's pixels:
    (the blocks, the index of each pixel's block (ty * tx,)). ``gap`` (ty, tx) bool: pixels of
    the narrow gaps between slices, calibrated together apart from the others (:data:`GAP_BLOCK`):
    their residuals are against their gap's light (:func:`lrscube.detection.residuals.gap_pixels`),
    whose profile across the gap changes with the light's colour from exposure to exposure, a
    scatter beyond ERR that the gaps share and the slices' pixels do not."""
    ty, tx = shape
    by, bx = (int(v) for v in block)
    yb = (int(origin[0]) + np.arange(ty)) // by
    xb = (int(origin[1]) + np.arange(tx)) // bx
    keys = yb[:, None] * 100000 + xb[None, :]
    if gap is not None and np.any(gap):
        keys = np.where(np.asarray(gap, bool).reshape(ty, tx), -1, keys)
    uniq, inv = np.unique(keys.ravel(), return_inverse=True)
    return [GAP_BLOCK if k < 0 else (int(k) // 100000, int(k) % 100000) for k in uniq], inv.reshape(-1)


def calibration_stage(r, s, sky, trace, exclude, params: DetectionParams, origin=(0, 0), gap=None) -> dict:
    """Stage 2a of a tile: histograms of the residual about each pixel's own baseline.

    Each pixel's ``r = a * sky + d`` is fitted robustly over its exposures
    (:func:`lrscube.detection.baseline.fit_response_offset`); the residuals, in units of ERR and corrected
    for each exposure's leverage in the fit, are counted per exposure and calibration block
    (:func:`lrscube.detection.baseline.standardised_histograms`). Returns ``{block: counts (time, bins)}``; the
    blocks' counts over all tiles give each exposure's noise calibration
    (:func:`calibrations`), immune to the pixels' fixed response pattern. ``gap``: the pixels
    calibrated apart (:func:`pixel_blocks`).
    """
    n_t, ny, nx = r.shape
    P = ny * nx
    r2 = np.asarray(r, np.float32).reshape(n_t, P)
    s2 = np.asarray(s, np.float32).reshape(n_t, P)
    k2 = np.asarray(sky, np.float32).reshape(n_t, P)
    valid, on_trace = _usable(r2, s2, trace, exclude, params)
    use = valid & ~on_trace
    use[:, use.sum(axis=0) < 4] = False  # a 2-parameter fit needs more exposures than that
    blocks, idx = pixel_blocks(origin, (ny, nx), params.calibration_block_px, gap)
    out = {}
    cols = np.flatnonzero(use.any(axis=0))
    if cols.size == 0:
        return out
    # every column as it is (no copies of the used ones): a pixel's fit is its own, and one
    # without a usable exposure fits none and counts none
    st_ = baseline.fit_response_offset(r2, s2, k2, use)
    counts = baseline.standardised_histograms(r2, s2, k2, use, st_, idx, len(blocks))
    for b in np.unique(idx[cols]):
        out[blocks[b]] = counts[b]
    return out


def calibrations(block_counts: dict, params: DetectionParams) -> dict:
    """Each block's :class:`lrscube.detection.baseline.Calibration` from its summed histograms; in an
    exposure where a block holds fewer than 2000 pixels (an edge, a subarray), the exposure's
    histogram over all blocks is used (the MAD of 2000 values is good to ~2 %)."""
    if not block_counts:
        return {}
    total = sum(block_counts.values())
    clips = (float(params.variance_clip_sigma), float(min(params.jump_clip_sigma, params.variance_clip_sigma)))
    out = {}
    for key, c in block_counts.items():
        few = c.sum(axis=1) < MIN_CALIBRATION_PIXELS
        out[key] = baseline.calibration(np.where(few[:, None], total, c), params.clip_sigma, clips)
    return out


def _calibration_arrays(cal: dict | None, origin, shape, n_t, params, gap=None):
    """Per pixel and exposure of a tile: the factor on ERR and the null moments of the clipped
    squares (normal and JUMP_DET exposures), from the blocks' calibrations (1 and Gaussian
    without them)."""
    P = shape[0] * shape[1]
    blocks, idx = pixel_blocks(origin, shape, params.calibration_block_px, gap)
    scale = np.ones((len(blocks), n_t), np.float32)
    c1 = float(params.variance_clip_sigma)
    c2 = float(min(params.jump_clip_sigma, params.variance_clip_sigma))
    g = [baseline.gaussian_clipped_moments(1.0, c) for c in (c1, c2)]
    m1 = np.tile(np.array([g[0][0], g[1][0]]), (len(blocks), n_t, 1))
    m2 = np.tile(np.array([g[0][1], g[1][1]]), (len(blocks), n_t, 1))
    for b, key in enumerate(blocks):
        c = (cal or {}).get(key)
        if c is not None:
            scale[b], m1[b], m2[b] = c.scale, c.m1, c.m2
    return scale, m1, m2, idx[:P]


@functools.lru_cache(maxsize=64)
def _scatter_divisor(n: int, sigma: float, c: float) -> np.ndarray:
    return baseline.scatter_scan_scale(int(n), float(sigma), float(c))


def beyond_either_description(r, s, sky, use, prior, min_excess: float, low_qe_response: float,
                              min_sigma: float, lit=True) -> np.ndarray:
    """(P,) bool: pixels whose level over their exposures ``use`` is a defect whichever
    description fits, also where the sky barely changes and the free fit of ``(a, d)`` cannot
    tell a response from a dark level: an additive excess of at least ``min_excess`` (DN/s, at
    the neighbours' response, ``min_sigma`` standard errors) that as a response would be more
    than :data:`lrscube.detection.residuals.RESPONSE_RANGE`'s upper bound times the neighbours' (a flat
    field never is); or a response at most ``low_qe_response`` of the neighbours' (at their dark
    level, ``min_sigma``) that as a dark level would be ``min_excess`` or more below theirs (a
    dark reference off by that much is a bad pixel too), only where ``lit`` (P,) (a pixel outside
    the light has no response to lose). ``prior`` as for
    :func:`lrscube.detection.baseline.neighbour_prior`."""
    ma, md = np.asarray(prior[0], float), np.asarray(prior[2], float)
    sums = baseline.level_sums if np.ndim(r) == 2 and r.shape[0] > 0 else baseline.level_sums_numpy
    sw, skk, s_d, s_a = sums(r, s, sky, use, ma, md)
    with np.errstate(invalid="ignore", divide="ignore"):
        d_lvl = s_d / sw - md
        a_lvl = s_a / skk
        hot = (d_lvl >= min_excess) & (d_lvl * np.sqrt(sw) >= min_sigma) & ~(1.0 + a_lvl <= RESPONSE_RANGE[1])
        low = ((1.0 + a_lvl <= low_qe_response) & (-a_lvl * np.sqrt(skk) >= min_sigma)
               & (-d_lvl >= min_excess) & (-d_lvl * np.sqrt(sw) >= min_sigma) & np.asarray(lit, bool))
    return hot | low


def _tile_unlit(ctx: TileContext, origin, shape) -> np.ndarray:
    """(ty, tx) uint8: the codes of the tile's pixels outside the light (0: lit; all 0 without
    ``ctx.unlit``; :func:`unlit_of`)."""
    u = getattr(ctx, "unlit", None)
    if u is None:
        return np.zeros(shape, np.uint8)
    ya = int(np.searchsorted(ctx.ys, origin[0])) if ctx.ys is not None else int(origin[0])
    xa = int(np.searchsorted(ctx.xs, origin[1])) if ctx.xs is not None else int(origin[1])
    return np.asarray(u[ya:ya + shape[0], xa:xa + shape[1]]).astype(np.uint8)


def _tile_gap(ctx: TileContext, origin, shape) -> np.ndarray:
    """(ty, tx) bool: the tile's pixels in the narrow gaps between slices (:func:`_tile_unlit`)."""
    return _tile_unlit(ctx, origin, shape) == GAP


def keep_whole_pixels(trans: np.ndarray, beyond: np.ndarray, max_events: int, window: int,
                      rise: np.ndarray | None = None, fall: np.ndarray | None = None,
                      own: np.ndarray | None = None) -> np.ndarray:
    """(P,) bool: pixels whose single-exposure events are more likely their own than cosmic rays:
    more than ``max_events`` event exposures, or within ``2 window + 1`` exposures around an
    event three exposures beyond the event threshold (``beyond``: above it, or as far below the
    baseline), or an event that is a ``rise`` with a ``fall`` within ``2 window + 1``
    consecutive exposures (both beyond the tile's :func:`lrscube.detection.variance.swing_level`).
    Cosmic rays hit a pixel in ~1e-4 of its exposures: three of them that close in one pixel
    are a fraction of a pixel of a million over a data set; a telegraph pixel's rare high states
    look exactly like that; and a cosmic ray only adds charge, so a fall beside an event is the
    pixel swinging both ways, a noisy one, where the data show such pairs to be rare (as
    :func:`lrscube.detection.variance.trims` judges it). Two close events are still taken for
    cosmic rays: kept, they would make a run of three exposures at 2 x clip_sigma / sqrt(3),
    above the threshold. ``own`` (P,) bool: pixels whose excursions are their own by the
    scatter between integrations (:func:`own_excursions`), kept whole too."""
    trans = np.asarray(trans, bool)
    beyond = np.asarray(beyond, bool)
    out = trans.sum(axis=0) > max_events
    if own is not None:
        out |= own
    n = beyond.shape[0]
    swings = np.zeros(trans.shape[1], bool)
    if rise is not None and fall is not None:
        rise = np.asarray(rise, bool) & trans
        fall = np.asarray(fall, bool)
        swings = rise.any(axis=0) & fall.any(axis=0)
    for j in np.flatnonzero(~out & trans.any(axis=0) & ((beyond.sum(axis=0) >= 3) | swings)):
        c = np.concatenate([[0], np.cumsum(beyond[:, j])])
        t = np.flatnonzero(trans[:, j])
        lo = np.clip(t - window, 0, n)
        hi = np.clip(t + window + 1, 0, n)
        if np.any(c[hi] - c[lo] >= 3):
            out[j] = True
        elif swings[j]:  # a fall within 2 window + 1 consecutive exposures of a rising event
            cf = np.concatenate([[0], np.cumsum(fall[:, j])])
            t = np.flatnonzero(rise[:, j])
            out[j] = bool(np.any(cf[np.clip(t + 2 * window + 1, 0, n)] - cf[np.clip(t - 2 * window, 0, n)] >= 1))
    return out


def temporal_stage(r, s, sky, trace, exclude, ctx: TileContext, origin=(0, 0), jump=None,
                   calibration: dict | None = None, intscat=None) -> tuple[pd.DataFrame, dict]:
    """Defect intervals of a tile from its stage-1 arrays ``(time, ty, tx)`` (no halo needed).

    ``exclude`` (ty, tx) marks pixels not to analyse; ``origin`` is the full-frame (y, x) of the
    tile's first pixel; ``calibration`` the blocks' noise calibrations (:func:`calibrations`;
    none: ERR as it is). Per pixel: the baseline (its own response,
    :func:`lrscube.detection.baseline.fit_response_offset`), single-exposure events against it, then four
    screens on the same arrays: the largest level run (:func:`lrscube.detection.temporal.scan_statistic`
    of the clipped residual), the largest run of excess scatter (the same scan, one-sided, of the
    standardised clipped squares), the largest run of excess variance weighted by precision
    (:func:`lrscube.detection.variance.scan`, against the tile's measured null scale) and the
    pixel's state against its physical limits (:func:`lrscube.detection.baseline.fit_response_offset`).
    Candidates are analysed one by one (:func:`lrscube.detection.states.pixel_intervals`).
    Returns (intervals, diagnostics).

    The steps: what the tile's pixels are judged against (:func:`_tile_noise`), then per group
    of pixels seen by the same exposures (:func:`_footprint_groups`, :func:`_group_series`) the
    single-exposure events (:func:`_single_exposure_events`), the screens (:func:`_screens`) and
    each candidate's analysis (:func:`_candidate_intervals`); the rows classified last
    (:func:`_tile_records`). ``intscat`` (time, ty, tx): the calibrated scatter between the
    integrations of each exposure (:func:`lrscube.detection.intscat.calibrate`; NaN where the
    exposure has none), the screen of pixels noisy within exposures (:func:`_intscat_records`).
    """
    p = ctx.params
    n_t, ny, nx = r.shape
    diag = {"transient_pixels": np.zeros(n_t, np.int64), "candidates": 0, "pixels": 0,
            "candidates_level": 0, "candidates_scatter": 0, "candidates_static": 0, "companions": 0}
    P = ny * nx
    r2 = np.asarray(r, np.float32).reshape(n_t, P)
    e2 = np.asarray(s, np.float32).reshape(n_t, P)
    sky2 = np.asarray(sky, np.float32).reshape(n_t, P)
    jp2 = np.zeros((n_t, P), bool) if jump is None else np.asarray(jump, bool).reshape(n_t, P)
    valid, tr2 = _usable(r2, e2, trace, exclude, p)
    n_valid = valid.sum(axis=0)
    has = n_valid >= p.min_bad_exposures
    diag["pixels"] = int((n_valid > 0).sum())
    if not has.any():
        return empty_intervals(), diag
    tn = _tile_noise(r2, e2, sky2, valid, tr2, has, calibration, ctx, origin, (ny, nx))
    diag["variance_null_scale"] = tn.vscale
    diag["swing_level"] = tn.swing
    diag["fall_level"] = tn.fall
    for side in ("upper", "lower"):  # the noise law, each side apart
        tail = getattr(tn.law, side)
        diag[f"noise_tail_{side}"], diag[f"noise_dof_{side}"] = tail.ratio, tail.dof
    its = _IntScat.of(intscat, ctx, valid, tr2, has, n_t, P)
    diag["candidates_intscat"] = 0
    rows_ev, rows_meta, extra = [], [], []
    for pix, t_idx in _footprint_groups(valid, has):
        g = _group_series(pix, t_idx, r2, e2, sky2, tr2, jp2, tn, p)
        scattered = _scattered(its, t_idx, pix, p)
        trans, excl, e, own = _single_exposure_events(g, p, tn.swing, scattered)
        np.add.at(diag["transient_pixels"], t_idx, trans.sum(axis=1))
        c_level, c_scatter, static = _screens(g, e, excl, tn, p, ctx.thresholds, own)
        cand = np.flatnonzero(c_level | c_scatter | static)
        diag["candidates"] += int(cand.size)
        diag["candidates_level"] += int(c_level.sum())
        diag["candidates_scatter"] += int(c_scatter.sum())
        diag["candidates_static"] += int(static.sum())
        found = []  # (column, evidence, exposures used) of the group's intervals
        for j in cand:
            ivs, ti = _candidate_intervals(g, j, trans, excl, tn, ctx, own is not None and bool(own[j]))
            yy, xx = divmod(int(pix[j]), nx)
            for iv in ivs:
                rows_ev.append(iv)
                rows_meta.append((yy, xx, ti, t_idx))
                found.append((j, iv, ti))
        if p.companion_test and found:
            for iv, meta in _companion_rows(g, found, excl, ctx, (ny, nx), origin):
                rows_ev.append(iv)
                rows_meta.append(meta)
                diag["companions"] += 1
        if its is not None:
            got = _intscat_records(its, g, origin, nx, ctx)
            diag["candidates_intscat"] += len(got)
            extra += got
    records = _tile_records(rows_ev, rows_meta, origin, ctx)
    return _finish(_with_intscat(extra, records, ctx)), diag


def _scattered(its, t_idx, pix, p) -> np.ndarray | None:
    """(m, k) bool: the group's exposures whose integrations scatter beyond chance
    (:func:`lrscube.detection.intscat.beyond` at ``transient_sigma``); None where none does. Only
    the exposures with the plane can: the others are not looked at."""
    rows = np.empty(0, np.int64) if its is None else np.flatnonzero(its.dof[t_idx] > 0)
    if not rows.size:
        return None
    sc = intscat_screen.beyond(its.q[np.ix_(t_idx[rows], pix)], its.dof[t_idx[rows]], p.transient_sigma, its.scale)
    if not sc.any():
        return None
    out = np.zeros((t_idx.size, pix.size), bool)
    out[rows] = sc
    return out


def own_excursions(scattered: np.ndarray | None, beyond: np.ndarray) -> np.ndarray | None:
    """(k,) bool: pixels with an exposure ``beyond`` the single-exposure event threshold (either
    way about their baseline) whose integrations ``scattered`` beyond chance
    (:func:`lrscube.detection.intscat.beyond`): their own excursion, not a hit. A cosmic ray hits
    one integration, which ingest leaves out of that scatter; a pixel switching within the
    exposure (a telegraph dwelling seconds to minutes) moves its mean and raises its scatter
    alike. None where no exposure scatters."""
    if scattered is None:
        return None
    return (np.asarray(scattered, bool) & np.asarray(beyond, bool)).any(axis=0)


def _companion_rows(g: _Group, found: list, excl, ctx: TileContext, shape, origin):
    """(evidence, meta) of the group's pixels beside its found intervals that changed with them
    (:mod:`lrscube.detection.companions`); ``found``: (column, evidence, exposures used) of each
    interval of the group's candidates, classified here as :func:`_tile_records` will."""
    p = ctx.params
    ny, nx = shape
    ev = pd.DataFrame([iv for _, iv, _ in found])
    cls = classify.classify(ev, p.classes)
    keep = classify.passes_floors(ev, p.classes).to_numpy()
    amp = classify.amplitude(ev, cls)
    defects, spans = [], {}
    for k in np.flatnonzero(keep):
        j, iv, ti = found[k]
        yy, xx = divmod(int(g.pix[j]), nx)
        first, last = int(ti[iv["start"]]), int(ti[iv["stop"] - 1])
        spans.setdefault((yy, xx), []).append((first, last))
        defects.append({"y": yy, "x": xx, "flag": cls.iloc[k], "first": first, "last": last, "amplitude": amp[k],
                        "hours": float(ctx.mjd[last] - ctx.mjd[first]) * 24.0,
                        **{f: bool(iv.get(f, False)) for f in ("static", "noisy", "switching")}})
    column = np.full(ny * nx, -1, np.int64)
    column[g.pix] = np.arange(g.pix.size)
    todo = companions.to_test(defects, column.reshape(ny, nx), spans, shape, origin, p.afterglow_max_hours)
    if not todo:
        return
    thr = companions.threshold(ctx.thresholds.static, g.pix.size, len(todo), p.changepoint_sigma)
    taken: dict = {}  # the spans of each pixel's companion intervals: one over any exposure
    for t in sorted(todo, key=lambda t: t.first - t.last):  # the longest interval first
        j = t.j
        if any(a <= t.last and t.first <= b for a, b in taken.get(j, ())):
            continue
        use = ~excl[:, j]
        ti = g.t_idx[use]
        start, stop = int(np.searchsorted(ti, t.first)), int(np.searchsorted(ti, t.last, side="right"))
        yy, xx = divmod(int(g.pix[j]), nx)
        own = np.zeros(ti.size, bool)  # the pixel's own intervals elsewhere: not its normal state
        for a, b in spans.get((yy, xx), ()):
            own |= (ti >= a) & (ti <= b)
        row = companion_interval(g.r[use, j], g.s[use, j], g.sky[use, j], p, start, stop, t.sign, thr,
                                 clip=g.clip[use, j], vnull=(g.m1[use, j], g.m2[use, j], g.vc[use, j]),
                                 prior=tuple(v[j] for v in g.prior), exclude=own)
        if row is not None and companions.shares_change(row, classify.classify(pd.DataFrame([row]), p.classes).iloc[0],
                                                        t, p.companion_min_ratio):
            taken.setdefault(j, []).append((t.first, t.last))
            row["beside"] = t.beside
            yield row, (yy, xx, ti, g.t_idx)


def _with_intscat(runs: list[dict], records: list[dict], ctx: TileContext) -> list[dict]:
    """``records`` and the intscat ``runs`` (:func:`_intscat_records`) as one set of rows in which
    no two rows of a pixel overlap. Where a pixel's rows from the other screens cover part of its
    run, they keep those exposures (their analysis, with states and classes, says more there) and
    the run gives its uncovered exposures (:func:`_uncovered`); each such piece joins a TELEGRAPH
    row it touches (one bad span of one class: :func:`_joined`), else it is a TELEGRAPH row of its
    own (:func:`_intscat_record`), its onset its first exposure and its recovery the exposure
    after its last. So every exposure of the run stays in the mask, under one row."""
    rows = list(records)
    of_pixel: dict = {}
    for k, r in enumerate(rows):
        of_pixel.setdefault((r["y"], r["x"]), []).append(k)
    for run in runs:
        t_all, a, b = run["t_all"], run["first"], run["last"]
        m = ctx.mjd[t_all]
        ks = of_pixel.setdefault((run["y"], run["x"]), [])
        for a2, b2 in _uncovered(m, a, b, [rows[k] for k in ks if rows[k] is not None]):
            piece = _intscat_record(t_all, a2, b2, run["significance"], run["ratio"], run["y"], run["x"], ctx,
                                    run_length=b - a + 1)
            live = [k for k in ks if rows[k] is not None]
            touching = [k for k in live if rows[k]["flag"] == "TELEGRAPH" and not rows[k]["carried"]
                        and _covers(rows[k], m, [i for i in (a2 - 1, b2 + 1) if 0 <= i < m.size]).any()]
            if touching:  # the joined row says the run's evidence once, however many pieces join it
                piece["reason"] = _intscat_record(t_all, a, b, run["significance"], run["ratio"], run["y"], run["x"],
                                                  ctx)["reason"]
            for k in touching:
                piece = _joined(rows[k], piece, m)
                rows[k] = None
            rows.append(piece)
            ks.append(len(rows) - 1)
    return [r for r in rows if r is not None]


def _covers(row: dict, m: np.ndarray, positions) -> np.ndarray:
    """Whether ``row`` covers the exposures at ``positions`` of the mid-times ``m`` (the mask's rule)."""
    return np.atleast_1d(active(row["start_mjd"], row["end_mjd"], m[np.asarray(positions, int)]))


def _uncovered(m: np.ndarray, a: int, b: int, rows: list[dict]) -> list[tuple[int, int]]:
    """The runs ``(first, last)`` of positions ``a .. b`` (inclusive) of the exposures with
    mid-times ``m`` that none of ``rows`` covers."""
    free = np.zeros(m.size, bool)
    free[a:b + 1] = True
    for r in rows:
        free &= ~_covers(r, m, np.arange(m.size))
    edges = np.flatnonzero(np.diff(np.concatenate([[0], free.astype(np.int8), [0]])))
    return [(int(i), int(j) - 1) for i, j in zip(edges[::2], edges[1::2], strict=True)]


def _positions(row: dict, m: np.ndarray) -> tuple[int, int]:
    """The first and last of the pixel's exposures (mid-times ``m``) that ``row`` covers."""
    on = np.flatnonzero(_covers(row, m, np.arange(m.size)))
    return int(on[0]), int(on[-1])


def _joined(row: dict, other: dict, m: np.ndarray) -> dict:
    """``row`` and ``other`` (of one pixel, one class, touching or overlapping) as one row over
    both spans: ``row``'s class, amplitude and reason (``other``'s reason added), the larger
    significance, the onset (and its significance) of the one that starts first, the recovery of
    the one that ends last, ``n_bad`` the pixel's exposures from the first bad to the last."""
    (f1, l1), (f2, l2) = _positions(row, m), _positions(other, m)
    out = dict(row)
    start, end = (row if f1 <= f2 else other), (row if l1 >= l2 else other)
    for c in ("start_mjd", "last_good_mjd", "first_bad_mjd", "onset_significance"):
        out[c] = start[c]
    for c in ("end_mjd", "first_good_mjd", "recovery_significance"):
        out[c] = end[c]
    out["n_bad"] = max(l1, l2) - min(f1, f2) + 1
    out["significance"] = max(row["significance"], other["significance"])
    out["reason"] = row["reason"] if other["reason"] in row["reason"] else f"{row['reason']}; with {other['reason']}"
    return out


class _IntScat(NamedTuple):
    """The tile's scatter between integrations as the screen takes it (P: pixels)."""

    q: np.ndarray  #: (time, P) calibrated reduced chi-square, NaN where absent or not usable
    dof: np.ndarray  #: (time,) its degrees of freedom
    scale: float  #: the measured null scale of the statistic over the tile's pixels

    @classmethod
    def of(cls, intscat, ctx: TileContext, valid, on_trace, has, n_t: int, P: int):
        """None where no exposure of the tile has the plane."""
        if intscat is None or ctx.dof is None:
            return None
        q = np.asarray(intscat, np.float32).reshape(n_t, P)
        q = np.where(valid & ~on_trace, q, np.nan)
        # the null over the pixels with enough exposures, without their terms (None: no plane)
        scale = intscat_screen.null_scale_of(q, ctx.dof, ctx.params.clip_sigma, np.flatnonzero(has))
        if scale is None:
            return None
        return cls(q, np.asarray(ctx.dof, float), scale)


def _intscat_records(its: _IntScat, g: _Group, origin, nx: int, ctx: TileContext) -> list[dict]:
    """Runs of exposures over which the group's pixels' integrations scatter beyond their ERR
    (:mod:`lrscube.detection.intscat`), at the scatter screen's threshold times the tile's null
    scale; traces left out, single-exposure events kept (a noisy pixel's own largest exposures
    are such events; the statistic's trim keeps one or two raised exposures from reaching the
    threshold alone). Each run: the pixel (``y``, ``x``), its exposures ``t_all`` and the
    positions in them of the run's ``first`` and ``last`` exposure that has the plane, its
    ``significance`` and scatter ``ratio``; :func:`_with_intscat` makes them rows."""
    p, th = ctx.params, ctx.thresholds
    q = np.where(g.on_trace, np.nan, its.q[np.ix_(g.t_idx, g.pix)])
    u, v = intscat_screen.terms(q, its.dof[g.t_idx], p.clip_sigma)
    stat = intscat_screen.scan(u, v, min_length=p.min_bad_exposures) / its.scale
    out = []
    for j in np.flatnonzero(stat >= p.screen_fraction * th.variance):
        a, b, sig, ratio = intscat_screen.best_run(u[:, j], v[:, j], min_length=p.min_bad_exposures,
                                                   boundary_sigma=p.boundary_sigma)
        sig /= its.scale
        if a < 0 or sig < th.variance:
            continue
        yy, xx = divmod(int(g.pix[j]), nx)
        out.append({"y": yy + origin[0], "x": xx + origin[1], "t_all": g.t_idx, "first": int(a), "last": int(b),
                    "significance": float(sig), "ratio": float(ratio)})
    return out


def _intscat_record(t_all, a: int, b: int, sig: float, ratio: float, y: int, x: int, ctx: TileContext,
                    run_length: int | None = None) -> dict:
    """The intervals-table row of an excess scatter between integrations over exposures
    ``t_all[a] .. t_all[b]`` (``t_all``: every exposure the pixel was analysed in); ``sig`` and
    ``ratio`` are those of the run it is part of, ``run_length`` exposures long (default: this one)."""
    first_bad = int(t_all[a])
    last_good = int(t_all[a - 1]) if a > 0 else None
    first_good = int(t_all[b + 1]) if b + 1 < len(t_all) else None
    n_bad = b - a + 1
    run_length = n_bad if run_length is None else run_length
    reason = (f"excess scatter between integrations {ratio:.2f}x their ERR, {sig:.1f} sigma over {run_length} "
              "exposures (rateints)")
    if run_length != n_bad:
        reason += f"; {n_bad} of them here, the rest in the pixel's other rows"
    return {"y": y, "x": x, "flag": "TELEGRAPH", "start_mjd": float(ctx.expstart[first_bad]) if last_good is not None
            else np.nan, "end_mjd": float(ctx.expstart[first_good]) if first_good is not None else np.nan,
            "dq": ctx.profile.flag_bits("TELEGRAPH"), "amplitude": float(ratio), "significance": float(sig),
            "onset_significance": np.nan, "recovery_significance": np.nan, "n_bad": int(n_bad),
            "last_good_mjd": float(ctx.mjd[last_good]) if last_good is not None else np.nan,
            "first_bad_mjd": float(ctx.mjd[first_bad]),
            "first_good_mjd": float(ctx.mjd[first_good]) if first_good is not None else np.nan,
            "reason": reason, "carried": False}


class _TileNoise(NamedTuple):
    """What each pixel of a tile is judged against, measured over the whole tile (P: pixels)."""

    cal_scale: np.ndarray  #: (blocks, time) the calibrated factor on ERR ...
    cal_m1: np.ndarray  #: ... and the null moments of the clipped squares (blocks, time, 2)
    cal_m2: np.ndarray
    blk: np.ndarray  #: (P,) each pixel's calibration block
    lit: np.ndarray  #: (P,) bool: inside the light
    gap: np.ndarray  #: (P,) bool: in a narrow gap between slices, its sky the gap's own light
    prior: tuple  #: (ma, va, md, vd, sk, vl), each (P,): the population of responses and dark levels
    lresp: np.ndarray  #: (P,) the response the pixel's line across the dispersion shares
    hnoise: np.ndarray  #: (P,) the variance factor its neighbours show about their baselines
    vline: np.ndarray  #: (P,) the variance factor its line across the dispersion shares
    vscale: float  #: the measured null scale of the excess-variance statistic
    g1: float  #: Gaussian null moments of squares clipped at ``clip_sigma``
    g2: float
    swing: float  #: :func:`lrscube.detection.variance.swing_level` of the tile
    fall: float  #: :func:`lrscube.detection.variance.fall_level` of the tile
    law: noise_law.NoiseLaw = noise_law.GAUSSIAN  #: the noise's law about the baselines


def _tile_noise(r2, e2, sky2, valid, tr2, has, calibration, ctx: TileContext, origin, shape) -> _TileNoise:
    """The tile's :class:`_TileNoise`: the blocks' calibrations; the population of the pixels'
    responses and dark levels (a prior for each pixel's own); the response a line across the
    dispersion shares (the end of the light along it), which the physical limit on a pixel's
    response is relative to; the noise each pixel's neighbours show about their own baselines
    (an edge, a pattern left in the sky: what the calibration per exposure and block cannot
    see); and the null of the excess-variance statistic (:func:`_variance_null`)."""
    p = ctx.params
    n_t, P = r2.shape
    codes = _tile_unlit(ctx, origin, shape)
    cal_scale, cal_m1, cal_m2, blk = _calibration_arrays(calibration, origin, shape, n_t, p, codes == GAP)
    codes = codes.reshape(P)
    lit = codes == 0
    use_all = valid & ~tr2
    # ERR calibrated (float32), its weights where used and their sums, in one pass
    s_all, w_all, w_sum = baseline.scaled_noise(e2, cal_scale, blk, use_all)
    st_all = baseline.fit_response_offset(r2, s_all, sky2, use_all, iterations=2)
    disp = 0 if ctx.profile.dispersion_axis == "y" else 1
    with np.errstate(divide="ignore", invalid="ignore"):
        sk_all = np.einsum("tp,tp->p", w_all, np.where(use_all, sky2, 0.0)) / w_sum
    pri = baseline.neighbour_prior(st_all, shape, p.sky_window_px, axis=disp, level=(sk_all, w_sum), lit=lit)
    lresp = baseline.line_response(st_all.a, use_all.any(axis=0) & lit, shape, p.cross_sky_window_px, axis=disp)
    x_all = baseline.standardised_residuals(r2, s_all, sky2, st_all)
    hnoise = baseline.neighbour_noise(x_all, use_all & np.isfinite(x_all), np.take(cal_m1[:, :, 0].T, blk, axis=1),
                                      float(p.variance_clip_sigma), shape, (p.sky_window_px, 5), axis=disp,
                                      groups=codes)
    g1, g2 = baseline.gaussian_clipped_moments(1.0, float(p.clip_sigma))
    vline, vscale, swing, fall = _variance_null(x_all, s_all, use_all, hnoise, has, (g1, g2), p, shape, disp,
                                                ctx.thresholds.alpha)
    cols = noise_law.sample_columns(np.flatnonzero(has), n_t)
    with np.errstate(invalid="ignore", divide="ignore"):
        law = noise_law.measure(x_all[:, cols] / np.sqrt(hnoise[cols] * vline[cols]), use_all[:, cols])
    return _TileNoise(cal_scale, cal_m1, cal_m2, blk, lit, codes == GAP, pri, lresp, hnoise, vline, vscale, g1, g2,
                      swing, fall, law)


def _variance_null(x_all, s_all, use_all, hnoise, has, g, p, shape, disp, alpha):
    """(vline, vscale, swing, fall): the variance factor each line across the dispersion shares
    (an end of the sky model), the measured null of the excess-variance statistic after it (its
    robust scale over the tile's pixels) and the levels beyond which a rise and a fall, or two
    falls, are a pixel's own (:func:`lrscube.detection.variance.pair_levels`, at the false-alarm
    rate ``alpha``). ``x_all``: residuals about each pixel's baseline in units of the noise;
    ``g``: Gaussian null moments at ``clip_sigma``."""
    g1, g2 = g
    xa = np.where(use_all, x_all / np.sqrt(hnoise), np.nan)
    vline = variance.line_factor(xa, s_all, p.clip_sigma, g1, shape, axis=disp,
                                 window=max(3, (p.cross_sky_window_px or 0) // 2) | 1)
    swing, fall = variance.pair_levels(xa[:, has], p.transient_sigma, p.transient_window, alpha)
    tr = variance.trims(xa, p.transient_sigma, p.transient_window, swing, fall=fall)
    # the statistic of variance.terms(xa / sqrt(vline), ...) without the tile's terms
    stat = variance.full_terms(xa, s_all, p.clip_sigma, g1, g2, np.flatnonzero(has), trim=tr, div=np.sqrt(vline))
    return vline, variance.null_scale(stat), swing, fall


def _footprint_groups(valid, has):
    """(pixels, exposures) of each group of pixels seen by the same exposures (a footprint), so
    each group's series are gap-free; pixels without enough exposures (``has`` False) left out."""
    packed = np.ascontiguousarray(np.packbits(valid.T, axis=1))
    # rows as opaque byte strings: one sort of P keys instead of a lexicographic one
    keys, inverse = np.unique(packed.view(np.dtype((np.void, packed.shape[1]))).ravel(), return_inverse=True)
    inverse = inverse.reshape(-1)
    for g in range(keys.shape[0]):
        pix = np.flatnonzero((inverse == g) & has)
        if pix.size == 0:
            continue
        yield pix, np.flatnonzero(valid[:, pix[0]])


class _Group(NamedTuple):
    """The series of a footprint group (exposures x pixels) as every screen takes them."""

    pix: np.ndarray  #: (k,) the pixels (flat tile index)
    t_idx: np.ndarray  #: (m,) the exposures (time index)
    r: np.ndarray  #: (m, k) residual against the local sky (DN/s)
    sky: np.ndarray  #: (m, k) the local sky (DN/s)
    s: np.ndarray  #: (m, k) the noise every screen judges against (DN/s)
    on_trace: np.ndarray  #: (m, k) bool: on a source trace
    jump: np.ndarray  #: (m, k) bool: JUMP_DET
    clip: np.ndarray  #: (m, k) the clip of the normalised residual (sigma)
    vc: np.ndarray  #: (m, k) the clip of the squares (sigma) ...
    m1: np.ndarray  #: ... and their measured null moments
    m2: np.ndarray
    prior: tuple  #: (ma, va, md, vd, sk, vl), each (k,)


def group_values(v: np.ndarray, t_idx: np.ndarray, pix: np.ndarray) -> np.ndarray:
    """``v[np.ix_(t_idx, pix)]`` of a (time, P) array, a contiguous copy: the rows taken first,
    then the columns, without the copy of the rows where ``t_idx`` holds every exposure (a
    footprint group of full frames: the tile's whole time axis). ``t_idx`` sorted and unique
    (:func:`_footprint_groups`)."""
    rows = v if t_idx.size == v.shape[0] else v[t_idx]
    return np.take(rows, pix, axis=1)


def _group_series(pix, t_idx, r2, e2, sky2, tr2, jp2, tn: _TileNoise, p) -> _Group:
    """The group's :class:`_Group`. The noise: ERR, calibrated per block and exposure, times
    what the neighbours and the pixel's line across the dispersion show beyond it (every screen
    judges against it); JUMP_DET exposures clipped lower, with their own measured null."""
    def ix(v):
        return group_values(v, t_idx, pix)

    jg = ix(jp2)
    # ERR times its block's calibration and the pixel's factor; the block's null moments
    sg, m1, m2 = baseline.group_noise(e2, tn.cal_scale, tn.cal_m1, tn.cal_m2, tn.blk, t_idx, pix,
                                      np.sqrt(tn.hnoise[pix] * tn.vline[pix]), jg)
    clip = np.where(jg, p.jump_clip_sigma, p.clip_sigma).astype(np.float32)
    vc = np.where(jg, min(p.jump_clip_sigma, p.variance_clip_sigma), p.variance_clip_sigma)
    return _Group(pix, t_idx, ix(r2), ix(sky2), sg, ix(tr2), jg, clip, vc, m1, m2, tuple(v[pix] for v in tn.prior))


def _single_exposure_events(g: _Group, p, swing: float = np.inf, scattered=None):
    """(trans, excl, e, own): single-exposure events against each pixel's own baseline (cosmic
    rays, unless the pixel's own: :func:`keep_whole_pixels`, ``swing`` the tile's
    :func:`lrscube.detection.variance.swing_level`; ``scattered`` (m, k) bool or None: exposures
    whose integrations scatter beyond chance), the exposures left out (events and traces), the
    residual against the baseline refitted without them (NaN where left out), and the pixels
    whose excursions are their own by that scatter (:func:`own_excursions`; None: no exposure
    scatters)."""
    b0 = baseline.fit_response_offset(g.r, g.s, g.sky, ~g.on_trace, iterations=2, prior=g.prior,
                                      leverage=False)
    e0 = baseline.residuals_about(g.r, g.sky, b0.a, b0.d, g.on_trace)
    trans = transients(e0, g.s, g.sky, window=p.transient_window, nsigma=p.transient_sigma)
    with np.errstate(invalid="ignore"):
        x0 = e0 / g.s
        beyond = np.abs(x0) > p.transient_sigma
        rise, fall = (x0 > swing, x0 < -swing) if np.isfinite(swing) else (None, None)
    own = own_excursions(scattered, beyond)
    trans[:, keep_whole_pixels(trans, beyond, p.max_transients, p.transient_window, rise, fall, own)] = False
    excl = g.on_trace | trans
    # refitted where events were left out: elsewhere the exposures, and so the fit, are the same
    # (each pixel's fit is its own: fit_response_offset over any set of columns gives their bits)
    a, d = b0.a.copy(), b0.d.copy()
    redo = np.flatnonzero(trans.any(axis=0))
    if redo.size:
        k = g.r.shape[1]
        # take, not [:, redo]: numpy's fancy index along the columns gives a Fortran-ordered copy,
        # a layout the compiled fit would compile for again (a first run's seconds)
        b1 = baseline.fit_response_offset(g.r.take(redo, 1), g.s.take(redo, 1), g.sky.take(redo, 1),
                                          ~excl.take(redo, 1), iterations=2,
                                          prior=tuple(np.broadcast_to(v, (k,))[redo] for v in g.prior), leverage=False)
        a[redo], d[redo] = b1.a, b1.d
    return trans, excl, baseline.residuals_about(g.r, g.sky, a, d, excl), own


def _screens(g: _Group, e, excl, tn: _TileNoise, p, th, own=None):
    """(c_level, c_scatter, static), each (k,) bool: the group's pixels each screen makes
    candidates, at ``screen_fraction`` of its threshold (the static screen at the threshold)."""
    # the residual in units of the noise (x, as screens 2 and 2b take it), clipped (z, screen 1)
    # and as standardised clipped squares (yv, screen 2): one compiled pass
    m1, m2 = g.m1, g.m2
    if not tn.law.gaussian:  # judged as the Gaussian values of their tail probabilities, against Gaussian moments
        with np.errstate(invalid="ignore", divide="ignore"):
            e = noise_law.gaussianise(e / g.s, tn.law) * g.s
        m1, m2 = _gaussian_moments(g.vc)
    x, z, yv = variance.screen_values(e, g.s, g.clip, g.vc, m1, m2)
    # screen 1: a run whose level differs from the baseline
    stat = scan_statistic(z, min_length=p.min_bad_exposures)  # a defect lasts min_bad_exposures
    # screen 2: a run of excess scatter (standardised clipped squares, one-sided)
    vstat = scan_statistic(yv, min_length=p.min_bad_exposures, one_sided=True,
                           divisor=_scatter_divisor(g.t_idx.size, p.screen_fraction * th.variance,
                                                    p.variance_clip_sigma))
    # screen 2b: excess variance weighted by each exposure's precision, clipped at
    # clip_sigma, the run's largest exposure left out twice, once for a pixel that swings both
    # ways (lrscube.detection.variance)
    with np.errstate(invalid="ignore", divide="ignore"):
        # the measured null moments in JUMP_DET exposures, the Gaussian ones elsewhere
        uw, vw = variance.terms(x, g.s, g.clip, m1, m2, jump=g.jump, null=(tn.g1, tn.g2))
        tr = variance.trims(x, p.transient_sigma, p.transient_window, tn.swing, own, fall=tn.fall)
    wstat = variance.scan(uw, vw, min_length=p.min_bad_exposures, trim=tr) / tn.vscale
    c_level = stat >= p.screen_fraction * th.level
    c_scatter = (vstat >= p.screen_fraction * th.variance) | (wstat >= p.screen_fraction * th.variance)
    return c_level, c_scatter, _static_screen(g, excl, tn, p, th)


def _gaussian_moments(vc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Gaussian null moments of squares clipped at ``vc`` (an array of a few values)."""
    m1 = np.empty(np.shape(vc))
    m2 = np.empty(np.shape(vc))
    for c in np.unique(vc):
        m1[vc == c], m2[vc == c] = baseline.gaussian_clipped_moments(1.0, float(c))
    return m1, m2


def _static_screen(g: _Group, excl, tn: _TileNoise, p, th) -> np.ndarray:
    """(k,) bool, screen 3: the pixel's state beyond a physical limit (a dark excess over the
    neighbours', a response below the line's; a pixel outside the light has no response to
    judge, only its dark level), or a level no response or no dark level explains, also where
    the sky does not change enough to separate the two (:func:`beyond_either_description`)."""
    sta = baseline.fit_response_offset(g.r, g.s, g.sky, ~excl, leverage=False)
    lit = tn.lit[g.pix]
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = sta.d - g.prior[2]  # the dark excess over that of the neighbours
        static = (((dx >= p.static_warm_dn_s) & (dx / sta.d_err >= th.static))
                  | ((1 + sta.a <= p.low_qe_response * tn.lresp[g.pix]) & (-sta.a / sta.a_err >= th.static)
                     & lit))
        static |= beyond_either_description(g.r, g.s, g.sky, ~excl, g.prior, p.static_excess_dn_s,
                                            p.low_qe_response, th.static, lit=lit)
    return static


def _candidate_intervals(g: _Group, j: int, trans, excl, tn: _TileNoise, ctx: TileContext, own: bool = False):
    """(intervals, exposures used) of the group's candidate pixel ``j``
    (:func:`lrscube.detection.states.pixel_intervals`). A pixel with an excess: its isolated high
    states are more likely its own (a telegraph pixel's) than cosmic rays, which hit one
    pixel-exposure in ~1e4; the single-exposure events are put back and the pixel analysed
    again (they join an interval only as telegraph pieces, as a defect's returns at its own level
    or next to its ends). So is a candidate with no interval: a screen found its excess, and an
    event may be part of it (a defect's first exposure above the rest of its run; a telegraph's
    short high states at one level, the first taken for events, the last too short alone; a
    pixel beyond a physical limit in all its exposures whose series without them was too short
    to know its baseline). ``own``: its excursions are its own (:func:`temporal_stage`)."""
    use = ~excl[:, j]
    ivs = _analyse_pixel(g, j, use, tn, ctx, own)
    if trans[:, j].any() and (any(iv["sign"] > 0 or iv["noisy"] for iv in ivs)
                              or not ivs):
        use = ~g.on_trace[:, j]
        ivs = _analyse_pixel(g, j, use, tn, ctx, own)
    elif any(iv["static"] for iv in ivs):
        ends = _normal_end_events(g, j, use, ctx.params.changepoint_sigma)
        if ends.any():
            use = use | ends
            ivs = _analyse_pixel(g, j, use, tn, ctx, own)
    return ivs, g.t_idx[use]


def _normal_end_events(g: _Group, j: int, use, k: float) -> np.ndarray:
    """The single-exposure events of pixel ``j`` before its first exposure in ``use`` (after its
    last) whose value lies at the neighbours' population (within ``k`` sigma of their
    level at its sky, in its noise and their scatter): against a dead or low-QE pixel's baseline
    the exposures before its onset are positive events, which a cosmic ray at the level of a
    normal pixel would only be by chance. Put back, they let the analysis end the defect there."""
    u = np.flatnonzero(use)
    ends = np.zeros(use.size, bool)
    if u.size == 0:
        return ends
    ends[:u[0]] = True
    ends[u[-1] + 1:] = True
    ends &= ~use & ~g.on_trace[:, j]
    if not ends.any():
        return ends
    return ends & baseline.at_population(g.r[:, j], g.s[:, j], g.sky[:, j], tuple(v[j] for v in g.prior), k)


def _analyse_pixel(g: _Group, j: int, use, tn: _TileNoise, ctx: TileContext, own: bool = False) -> list[dict]:
    """:func:`lrscube.detection.states.pixel_intervals` of pixel ``j`` over its exposures ``use``."""
    k = g.pix[j]
    th = ctx.thresholds._replace(swing=tn.swing, fall=tn.fall)
    return pixel_intervals(g.r[use, j], g.s[use, j], g.sky[use, j], ctx.params, th, g.clip[use, j],
                           (g.m1[use, j], g.m2[use, j], g.vc[use, j]), prior=tuple(v[j] for v in g.prior),
                           variance_scale=tn.vscale, lit=bool(tn.lit[k]), gap=bool(tn.gap[k]),
                           hours=ctx.mjd[g.t_idx[use]] * 24.0, line_response=float(tn.lresp[k]),
                           hits=ctx.mjd[g.t_idx[g.jump[:, j]]] * 24.0, own=own)


def _tile_records(rows_ev: list[dict], rows_meta: list, origin, ctx: TileContext) -> list[dict]:
    """Intervals-table rows of the evidence rows that pass their class's floors, classified
    together (:mod:`lrscube.detection.classify`); ``rows_meta``: each row's (y, x) in the tile,
    exposures used and exposures that see the pixel."""
    if not rows_ev:
        return []
    p = ctx.params
    ev = pd.DataFrame(rows_ev)
    cls = classify.classify(ev, p.classes)
    keep = classify.passes_floors(ev, p.classes).to_numpy()
    amp = classify.amplitude(ev, cls)
    records = []
    for k in np.flatnonzero(keep):
        yy, xx, ti, t_all = rows_meta[k]
        records.append(_record(ev.iloc[k], cls.iloc[k], amp[k], yy + origin[0], xx + origin[1], ti, t_all, ctx))
    return records


def analyse_tile(sci, err, dq, ctx: TileContext, core: tuple[slice, slice] | None = None,
                 origin: tuple[int, int] = (0, 0)) -> tuple[pd.DataFrame, dict]:
    """Defect intervals of one block of pixels held in memory: stages 1 and 2 and the carried
    static pixels (what :func:`detect_dataset` does, for arrays).

    ``sci, err, dq`` are (time, y, x), exposures sorted by time; ``core`` the pixels to report
    (the rest only serves the local sky); ``origin`` the full-frame (y, x) of the first pixel of
    ``core``.
    """
    if core is None:
        core = (slice(None), slice(None))
    idx = response_indices(np.shape(sci)[0], ctx.params.response_exposures)
    at = (origin[0] - (core[0].start or 0), origin[1] - (core[1].start or 0))  # the arrays' first pixel
    g = response_of(np.asarray(sci)[idx], np.asarray(err)[idx], ctx.params, ctx.profile, origin=at)
    st1 = spatial_stage(sci, err, dq, ctx.params, ctx.profile, response=g, origin=at)
    cy, cx = core
    sbits = static_bits(st1["and_bits"], st1["n_seen"])[cy, cx]
    ys, xs = origin[0] + np.arange(sbits.shape[0]), origin[1] + np.arange(sbits.shape[1])
    exclude = excluded_pixels(sbits, ctx.profile, xs, ys)
    arrays = (st1["r"][:, cy, cx], st1["s"][:, cy, cx], st1["sky"][:, cy, cx], st1["trace"][:, cy, cx])
    cal = calibrations(calibration_stage(*arrays, exclude, ctx.params, origin), ctx.params)
    iv, diag = temporal_stage(*arrays, exclude, ctx, origin, jump=st1["jump"][:, cy, cx], calibration=cal)
    diag["trace_pixels"] = st1["trace"][:, cy, cx].sum(axis=(1, 2)).astype(np.int64)
    rec = carried_records(sbits, st1["n_seen"][cy, cx], origin)
    if rec:
        iv = pd.concat([_finish(rec), iv], ignore_index=True) if len(iv) else _finish(rec)
    return iv, diag


def _record(e, cls: str, amp: float, y: int, x: int, ti: np.ndarray, t_all: np.ndarray, ctx: TileContext) -> dict:
    """One intervals-table row from an interval's evidence and its exposure indices.

    ``ti`` are the exposures used (time indices), ``t_all`` every exposure that sees the pixel.
    """
    start, stop = int(e["start"]), int(e["stop"])
    first_bad = ti[start]
    last_bad = ti[stop - 1]
    first_good = ti[stop] if stop < ti.size else None
    last_good = ti[start - 1] if start > 0 else None
    n_bad = int(((t_all >= first_bad) & (t_all <= last_bad)).sum())
    start_mjd = float(ctx.expstart[first_bad]) if last_good is not None else np.nan
    end_mjd = float(ctx.expstart[first_good]) if first_good is not None else np.nan
    unit = "" if cls in ("DEAD", "LOW_QE") else " DN/s"
    noisy = bool(e.get("noisy", False))
    static = bool(e.get("static", False))
    model = "sky-proportional deficit" if cls in ("DEAD", "LOW_QE") else (
        ("excess scatter" if noisy and e["frac_high"] < 0.15 else "switching excess") if cls == "TELEGRAPH"
        else ("additive excess" if e["sign"] > 0 else "deficit"))
    if static:
        model = "normal state beyond its physical limit: " + ("response" if cls in ("DEAD", "LOW_QE") else model)
    beside = e.get("beside")
    if isinstance(beside, tuple):  # lrscube.detection.companions
        model = f"{model} with the defect beside it at (y, x) = {beside}, over its exposures,"
    reason = (f"{model} {amp:.3g}{unit}, {e['significance']:.1f} sigma over {n_bad} exposures; "
              f"onset {e['onset_significance']:.1f} sigma, recovery {e['recovery_significance']:.1f} sigma; "
              f"chi2 additive {e['chi2_add']:.1f} / sky-proportional {e['chi2_mult']:.1f} (n={int(e['n'])}); "
              f"normal response {e.get('response', np.nan):.3f}; scatter {e.get('scatter_ratio', np.nan):.2f}x "
              f"({e.get('scatter_sigma', np.nan):.1f} sigma)")
    return {"y": y, "x": x, "flag": cls, "start_mjd": start_mjd, "end_mjd": end_mjd,
            "dq": ctx.profile.flag_bits(cls), "amplitude": float(amp), "significance": float(e["significance"]),
            "onset_significance": float(e["onset_significance"]),
            "recovery_significance": float(e["recovery_significance"]), "n_bad": n_bad,
            "last_good_mjd": float(ctx.mjd[last_good]) if last_good is not None else np.nan,
            "first_bad_mjd": float(ctx.mjd[first_bad]),
            "first_good_mjd": float(ctx.mjd[first_good]) if first_good is not None else np.nan,
            "reason": reason, "carried": False, "last_bad_mjd": float(ctx.mjd[last_bad]),
            "fall_sigma": float(e.get("fall_sigma", np.nan))}


def _finish(records: list[dict]) -> pd.DataFrame:
    if not records:
        return empty_intervals()
    df = pd.DataFrame(records, columns=INTERVAL_COLUMNS)
    return df.astype(_DTYPES)


# --------------------------------------------------------------------------------------------
# over a Dataset (dask or numpy)


def tile_shape(n_exposures: int, params: DetectionParams, chunk: tuple[int, int] | None = None,
               bytes_per_value: int = 48) -> tuple[int, int]:
    """Tile (ty, tx) of stage 2 whose arrays for all exposures fit the memory budget.

    Sizes are divisors of the stored chunk (the profile's ``geometry.chunk``; default: the
    default profile's), so tiles cut the frame exactly and never straddle a chunk of the work
    store. ``bytes_per_value`` counts the stage-1 arrays
    (r, s, sky, trace) and the temporal intermediates per pixel and exposure.
    """
    budget = params.tile_memory_mb * 1e6
    cy, cx = chunk or profiles.load().chunk
    best = (1, 1)
    for ty in sorted({d for d in range(1, cy + 1) if cy % d == 0}, reverse=True):
        for tx in sorted({d for d in range(1, cx + 1) if cx % d == 0}, reverse=True):
            if ty * tx * max(n_exposures, 1) * bytes_per_value <= budget:
                if ty * tx > best[0] * best[1] or (ty * tx == best[0] * best[1] and abs(ty - tx) < abs(best[0] - best[1])):
                    best = (ty, tx)
    return best


def seen_box(ds, tile: tuple[int, int]) -> tuple[slice, slice] | None:
    """Index slices (y, x) of ``ds`` holding every exposure's footprint (the cube's ``y0, x0,
    ny, nx`` coordinates), widened to the stage-2 tile grid of ``ds`` (``tile`` (ty, tx)): the
    tiles detect analyses are then the same as over the whole of ``ds``, and what lies outside
    (never seen: NaN in every exposure) is not read into frames, response samples or work store.
    None when the box is all of ``ds`` or the coordinates do not say where the exposures lie.
    A set of subarray exposures (SLITLESSPRISM, NIRSpec's SUBS200A1) costs its own size."""
    if ds.sizes["time"] == 0 or any(k not in ds.coords for k in ("y0", "x0", "ny", "nx")):
        return None
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    ys = np.asarray(ds["y"].values, int) if "y" in ds.coords else np.arange(ny)
    xs = np.asarray(ds["x"].values, int) if "x" in ds.coords else np.arange(nx)
    if (np.diff(ys) != 1).any() or (np.diff(xs) != 1).any():
        return None
    y0, x0, h, w = (np.asarray(ds[k].values, np.int64) for k in ("y0", "x0", "ny", "nx"))
    if (y0 < 0).any() or (x0 < 0).any() or (h <= 0).any() or (w <= 0).any():
        return None
    out = []
    for lo, hi, start, size, step in ((y0.min(), (y0 + h).max(), ys[0], ny, tile[0]),
                                      (x0.min(), (x0 + w).max(), xs[0], nx, tile[1])):
        a = max(int(lo) - int(start), 0) // step * step  # on the grid of the tiles of ds
        b = min(-(-(int(hi) - int(start)) // step) * step, size)
        if a >= b:
            return None
        out.append(slice(a, b))
    if (out[0].start, out[0].stop, out[1].start, out[1].stop) == (0, ny, 0, nx):
        return None
    return out[0], out[1]


def _context(ds, prof, p) -> TileContext:
    mjd = np.asarray(ds["mjd"].values, float)
    expstart = np.asarray(ds["expstart"].values, float) if "expstart" in ds.coords else mjd.copy()
    th = p.thresholds(int(np.prod(prof.frame_shape)), ds.sizes["time"])
    dof = None
    if "intscat" in ds.data_vars and "nints" in ds.coords:
        dof = intscat_screen.degrees_of_freedom(ds["nints"].values)
        dof = dof if (dof > 0).any() else None
    return TileContext(expstart=expstart, mjd=mjd, params=p, profile=prof, threshold=th.level, thresholds=th,
                       dof=dof)


def _response_task(sci, err, params, profile, source=None, rows=None, response=None, origin=(0, 0), crop=None):
    if source is not None:
        sci, err, _ = read_frames(source, rows, missing="error", region=crop)
    return response_stage(sci, err, params, profile, response, origin)


def illumination_stage(sci, err) -> np.ndarray:
    """Stage 0 for a few exposures ``(B, y, x)``: the median over them of each pixel's
    ``sci / err``, (y, x) float32 (how much sky the pixel sees, in units of its noise)."""
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        q = np.asarray(sci, np.float32) / np.asarray(err, np.float32)
        q[~np.isfinite(q)] = np.nan
        return running.first_axis_nanmedians_numpy(q)  # np.nanmedian's numbers, compiled


def unlit_of(levels, params: DetectionParams, profile) -> np.ndarray | None:
    """The pixels outside the light (:func:`lrscube.detection.residuals.unlit_pixels`) from the
    :func:`illumination_stage` of groups of exposures ``(k, y, x)``, as (y, x) codes
    (:func:`lrscube.detection.residuals.unlit_codes`: those of the narrow gaps between slices
    apart); None where the profile has no ``unlit_fraction`` (every pixel lit) or no pixel is unlit."""
    if params.unlit_fraction is None or np.shape(levels)[0] == 0:
        return None
    u = unlit_pixels(np.asarray(levels, np.float32), fraction=params.unlit_fraction,
                     dispersion_axis=profile.dispersion_axis, window=params.sky_window_px,
                     cross_window=params.cross_sky_window_px or params.sky_window_px,
                     min_length=params.unlit_min_length_px)
    if not u.any():
        return None
    return unlit_codes(u, dispersion_axis=profile.dispersion_axis, gap_max_width=params.gap_max_width_px)


def _illumination_task(sci, err, source=None, rows=None, crop=None):
    if source is not None:
        sci, err, _ = read_frames(source, rows, missing="error", region=crop)
    return illumination_stage(sci, err)


def _pattern_kw(params: DetectionParams, profile) -> dict:
    """:func:`lrscube.detection.residuals.response_pattern`'s axis and window (its local level
    across the dispersion, over the residuals' cross-dispersion window)."""
    return dict(dispersion_axis=profile.dispersion_axis, window=params.cross_sky_window_px or params.sky_window_px,
                edge=int(params.sky_window_px))


def response_of(sci, err, params, profile, origin=(0, 0)) -> np.ndarray | None:
    """The response pattern from exposures ``(k, y, x)`` in memory: ``response_passes`` passes of
    :func:`response_stage` and :func:`lrscube.detection.residuals.response_pattern`, each on the images
    flat-fielded by the one before."""
    if np.shape(sci)[0] == 0:
        return None
    g = gate = None  # every pass's level stands out from the first pass's response spread
    for _ in range(max(1, params.response_passes)):
        q, gate = response_pattern(response_stage(sci, err, params, profile, g, origin), **_pattern_kw(params, profile),
                                   gate_variance=gate, return_gate=True)
        g = q if g is None else np.clip(g * q, RESPONSE_RANGE[0], RESPONSE_RANGE[1]).astype(np.float32)
    return g


def trace_jump_bits(trace: np.ndarray, jump: np.ndarray) -> np.ndarray:
    """The work store's uint8 per pixel and exposure: bit 0 on a source trace, bit 1 JUMP_DET.
    A bool array's bytes are 0 or 1: one shifted copy of ``jump``'s bytes, ``trace``'s or-ed
    in place (no uint8 copies of both)."""
    bits = np.left_shift(np.ascontiguousarray(jump, bool).view(np.uint8), 1)
    bits |= np.ascontiguousarray(trace, bool).view(np.uint8)
    return bits


def _stage1_to_work(work, a, sci, err, dq, params, profile, spans, source=None, rows=None, response=None,
                    unlit=None, intscat=None, dof=None, origin=(0, 0), crop=None):
    """Stage 1 for exposures [a, a + B) written into the work store, one object holding every
    stage-2 tile (:mod:`lrscube.storage.workstore`); returns the small reductions.

    With ``source`` (the exposure cube's zarr URL) and ``rows`` (their storage positions), the
    task reads its exposures itself (the part ``crop`` of their frames, :func:`seen_box`; None:
    whole frames) instead of receiving them from dask.
    ``dof`` (B,): the degrees of freedom of the exposures' scatter between integrations (None:
    the cube has none); ``intscat`` that plane when not read from ``source``; it is calibrated
    per exposure over the whole frame (:func:`lrscube.detection.intscat.calibrate`).
    """
    if source is not None:
        sci, err, dq, *more = read_frames(source, rows, missing="error", planes=("intscat",) if dof is not None else (),
                                        region=crop)
        intscat = more[0] if more else None
    out = spatial_stage(sci, err, dq, params, profile, response=response, unlit=unlit, origin=origin)
    bits = trace_jump_bits(out["trace"], out["jump"])
    q = None if intscat is None or dof is None else intscat_screen.calibrate(np.asarray(intscat), dof)
    workstore.write_batch(work, a, spans, out["r"], out["s"], out["sky"], bits,
                         params.work_precision_sigma or None, intscat=q)
    return {"and_bits": out["and_bits"], "n_seen": out["n_seen"], "trace_pixels": out["trace_pixels"], "a": a}


def _calibration_from_work(work, starts, ya, yb, xa, xb, exclude, ctx):
    r, s, sky, bits = workstore.read_tile(work, starts, ya, xa)
    origin = (int(ctx.ys[ya]), int(ctx.xs[xa]))
    return calibration_stage(r, s, sky, (bits & 1) != 0, exclude, ctx.params, origin,
                             _tile_gap(ctx, origin, exclude.shape))


def _stage2_from_work(work, starts, ya, yb, xa, xb, exclude, ctx, cal):
    # the scatter between integrations only where the cube has it: else a NaN plane per tile
    r, s, sky, bits, *q = workstore.read_tile(work, starts, ya, xa, with_intscat=ctx.dof is not None)
    tr, jump = (bits & 1) != 0, (bits & 2) != 0
    return temporal_stage(r, s, sky, tr, exclude, ctx, (int(ctx.ys[ya]), int(ctx.xs[xa])), jump=jump,
                          calibration=cal, intscat=q[0] if q else None)


def _tile_calibration(cal: dict, origin, shape, params, gap=None) -> dict:
    """The blocks' calibrations a tile needs."""
    blocks, _ = pixel_blocks(origin, shape, params.calibration_block_px, gap)
    return {k: cal[k] for k in blocks if k in cal}


def _add_counts(total: dict, part: dict) -> None:
    for k, v in part.items():
        if k in total:
            total[k] += v
        else:
            total[k] = v.copy()


def _sorted(v) -> bool:
    """Whether ``v`` is in non-decreasing order without NaN (what ``sortby`` would leave as it is)."""
    v = np.asarray(v)
    return bool(v.size < 2 or np.all(v[1:] >= v[:-1])) and not (v.dtype.kind == "f" and np.isnan(v).any())


def detect_dataset(ds, profile=None, *, params: DetectionParams | None = None, tiles: tuple[int, int] | None = None,
                   progress: bool | None = None, work: str | None = None, source: str | None = None,
                   **overrides) -> tuple[pd.DataFrame, dict]:
    """Defect intervals of a cube held in an xarray Dataset (numpy- or dask-backed).

    Two stages: (1) per exposure, whole frames: residuals against the local sky, source traces,
    the static DQ bits; (2) per tile of pixels holding the whole time axis: temporal statistics,
    change points, classes. With ``work`` (a folder path or URL, e.g. inside the store), stage 1
    runs as dask tasks over batches of exposures, each reading its exposures exactly once and
    writing the residuals to ``work``, one object per batch (:mod:`lrscube.storage.workstore`);
    stage 2 runs as one task per tile reading its byte range of each object once. Memory per task is bounded by
    ``tile_memory_mb`` (the tile shrinks as exposures grow) and by the batch size. Without ``work`` everything runs in this process, in memory (tests,
    small cubes).

    Parameters
    ----------
    ds : xarray.Dataset
        ``sci``, ``err``, ``dq`` (time, y, x) with coordinates ``expstart`` and ``mjd`` (MJD) along
        time and 0-based full-frame ``y``/``x`` (default: 0..n-1).
    profile : str, path or Profile
        Mode profile (default ``lrs``); its ``detection:`` block gives the parameters.
    params : DetectionParams
        Overrides the profile's parameters entirely.
    tiles : (ty, tx)
        Stage-2 tile size in pixels; default from ``tile_memory_mb`` and the number of exposures.
    progress : bool
        Show a progress bar (distributed.progress when a client is active).
    work : str
        Scratch folder (path or URL) for the two-stage dask run (removed afterwards by :func:`detect`).
    source : str
        The zarr URL of the exposure cube ``ds`` was opened from (``lrscube.storage.cube.cube_url``):
        stage-1 tasks then read their whole frames straight from it (no chunk tasks moved
        between workers). Ignored unless ``ds`` holds whole frames of that cube.
    **overrides
        Single parameters, e.g. ``false_alarm_pixels=1.0``.

    Returns
    -------
    (intervals DataFrame, metadata dict)
    """
    t0 = _time.time()
    prof = profiles.load(profile)
    p = params or DetectionParams.from_profile(prof, **overrides)
    if "mjd" in ds.coords and not _sorted(ds["mjd"].values):
        ds = ds.sortby("mjd")  # a copy of every plane: only when the exposures are out of order
    n_t = ds.sizes["time"]
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    ys = np.asarray(ds["y"].values, int) if "y" in ds.coords else np.arange(ny)
    xs = np.asarray(ds["x"].values, int) if "x" in ds.coords else np.arange(nx)
    ctx = _context(ds, prof, p)
    ty, tx = tiles or tile_shape(n_t, p, prof.chunk)
    ty, tx = min(ty, ny), min(tx, nx)
    # tasks read the frames of the cube (positions ``rows``) themselves, only the part in the box
    rows = _storage_rows(ds, source) if work is not None and source is not None else None
    crop = seen_box(ds, (ty, tx))
    if crop is not None:
        ds = ds.isel(y=crop[0], x=crop[1])
        ny, nx, ys, xs = ds.sizes["y"], ds.sizes["x"], ys[crop[0]], xs[crop[1]]
    ctx.ys, ctx.xs = ys, xs
    spans = [(a, min(a + ty, ny), b, min(b + tx, nx)) for a in range(0, ny, ty) for b in range(0, nx, tx)]

    if work is None:
        results, sbits, n_seen, trace_px, n_tasks = _detect_in_memory(ds, prof, p, ctx, spans)
    else:
        results, sbits, n_seen, trace_px, n_tasks = _detect_two_stage(ds, prof, p, ctx, work, (ty, tx), spans,
                                                                      progress, source, rows, crop)
    records = carried_records(sbits, n_seen, (int(ys[0]), int(xs[0])))
    frames = [_finish(records)] if records else []
    frames += [r[0] for r in results if len(r[0])]
    iv = pd.concat(frames, ignore_index=True) if frames else empty_intervals()
    iv = iv.sort_values(["y", "x", "start_mjd"], na_position="first", kind="stable").reset_index(drop=True)
    image = latent_images(iv, ctx.mjd, max_hours=p.afterglow_max_hours, min_pixels=p.latent_min_pixels,
                          min_fall_sigma=p.afterglow_decay_sigma, image_pixels=p.latent_image_pixels,
                          join_px=p.latent_join_px)
    iv = iv[~image].reset_index(drop=True)
    meta = {"latent_image_intervals": int(image.sum()),
            "profile": prof.name, "n_exposures": int(n_t), "threshold_sigma": ctx.threshold,
            "tiles": [int(ty), int(tx)], "n_tiles": int(n_tasks), "parameters": p.to_dict(),
            # the full-frame rows and columns analysed (seen_box): [start, stop)
            "region": {"y": [int(ys[0]), int(ys[-1]) + 1], "x": [int(xs[0]), int(xs[-1]) + 1]},
            **_findings(ds, ctx, results, iv, trace_px),
            "seconds": round(_time.time() - t0, 2), "timing": getattr(ctx, "timing", None)}
    return iv, meta


def _detect_in_memory(ds, prof, p: DetectionParams, ctx: TileContext, spans):
    """Both stages in this process on a cube held in memory (tests, small cubes): the tiles'
    results, the static bits, exposures per pixel, trace pixels per exposure, tiles analysed."""
    n_t = ds.sizes["time"]
    ys, xs = ctx.ys, ctx.xs
    idx = response_indices(n_t, p.response_exposures)
    g = response_of(ds["sci"].values[idx], ds["err"].values[idx], p, prof, origin=(int(ys[0]), int(xs[0])))
    unlit = unlit_of(illumination_stage(ds["sci"].values[idx], ds["err"].values[idx])[None], p, prof) \
        if idx.size else None
    ctx.unlit = unlit
    st1 = spatial_stage(ds["sci"].values, ds["err"].values, ds["dq"].values, p, prof, response=g, unlit=unlit,
                        origin=(int(ys[0]), int(xs[0])))
    sbits = static_bits(st1["and_bits"], st1["n_seen"])
    exclude = excluded_pixels(sbits, prof, xs, ys)
    todo = [sp for sp in spans if (st1["n_seen"][sp[0]:sp[1], sp[2]:sp[3]] > 0).any()]
    counts: dict = {}
    for ya, yb, xa, xb in todo:
        sl = (slice(None), slice(ya, yb), slice(xa, xb))
        at = (int(ys[ya]), int(xs[xa]))
        _add_counts(counts, calibration_stage(st1["r"][sl], st1["s"][sl], st1["sky"][sl], st1["trace"][sl],
                                              exclude[ya:yb, xa:xb], p, at, _tile_gap(ctx, at, (yb - ya, xb - xa))))
    cal = calibrations(counts, p)
    q = intscat_screen.calibrate(ds["intscat"].values, ctx.dof) if ctx.dof is not None else None
    results = []
    for ya, yb, xa, xb in todo:
        sl = (slice(None), slice(ya, yb), slice(xa, xb))
        results.append(temporal_stage(st1["r"][sl], st1["s"][sl], st1["sky"][sl], st1["trace"][sl],
                                      exclude[ya:yb, xa:xb], ctx, (int(ys[ya]), int(xs[xa])),
                                      jump=st1["jump"][sl], calibration=cal, intscat=None if q is None else q[sl]))
    return results, sbits, st1["n_seen"], st1["trace_pixels"], len(results)


def _findings(ds, ctx: TileContext, results: list, iv: pd.DataFrame, trace_px) -> dict:
    """What a detect run found, for its metadata: pixels analysed, candidates (per screen),
    intervals per class, exposures with a source trace, transient pixels per exposure."""
    n_t = ds.sizes["time"]
    trans_px = np.sum([r[1]["transient_pixels"] for r in results], axis=0) if results else np.zeros(n_t)
    mjd = ctx.mjd
    names = ds["filename"].values if "filename" in ds.coords else np.arange(n_t).astype(str)
    nonblank = [{"exposure": str(names[i]), "mjd": float(mjd[i]), "trace_pixels": int(trace_px[i]),
                 "reason": "source trace or latent: a narrow, long bump of the sky across the dispersion; "
                           "these pixels were left out of the statistics for this exposure"}
                for i in np.flatnonzero(np.asarray(trace_px) > 0)]
    return {
        "pixels_analysed": int(sum(r[1]["pixels"] for r in results)),
        "candidates": int(sum(r[1]["candidates"] for r in results)),
        "thresholds_sigma": {k: getattr(ctx.thresholds, k) for k in ("level", "variance", "static")},
        "candidates_by_screen": {k: int(sum(r[1].get("candidates_" + k, 0) for r in results))
                                 for k in ("level", "scatter", "static", "intscat")},
        "companion_intervals": int(sum(r[1].get("companions", 0) for r in results)),
        "noise_law": _noise_law_summary(results),
        "intervals": int(len(iv)), "carried_static": int(iv["carried"].sum()) if len(iv) else 0,
        "by_class": {k: int(v) for k, v in iv.loc[~iv["carried"], "flag"].value_counts().items()} if len(iv) else {},
        "non_blank_exposures": nonblank,
        "cautions": latent_cautions(_footprint_series(ds, mjd), ctx.params.afterglow_max_hours),
        "transient_pixels_per_exposure": {str(names[i]): int(trans_px[i]) for i in range(n_t) if trans_px[i]},
    }


def _noise_law_summary(results: list) -> dict:
    """The tiles' measured noise laws (:mod:`lrscube.detection.noise_law`), each side apart: how
    many tiles, the largest tail ratio, and the tiles whose tail on that side is heavier than
    Gaussian noise gives (their residuals there judged by their tail probabilities under a
    Student t) with the fewest degrees of freedom."""
    out = {"tiles": int(len(results)), "tail_ratio_gaussian_input": noise_law.GAUSSIAN_INPUT_TAIL}
    heavy_any = np.zeros(len(results), bool)
    for side in ("upper", "lower"):
        tails = np.array([r[1].get(f"noise_tail_{side}", np.nan) for r in results], float)
        dofs = np.array([r[1].get(f"noise_dof_{side}", np.inf) for r in results], float)
        heavy = np.isfinite(dofs)
        heavy_any |= heavy
        out[side] = {"tail_ratio_max": float(np.nanmax(tails)) if np.isfinite(tails).any() else None,
                     "tiles_heavier_than_gaussian": int(heavy.sum()),
                     "student_t_dof_min": float(dofs[heavy].min()) if heavy.any() else None}
    sides = [out[k] for k in ("upper", "lower")]
    tails = [d["tail_ratio_max"] for d in sides if d["tail_ratio_max"] is not None]
    dofs = [d["student_t_dof_min"] for d in sides if d["student_t_dof_min"] is not None]
    out.update({"tail_ratio_max": max(tails) if tails else None, "tiles_heavier_than_gaussian": int(heavy_any.sum()),
                "student_t_dof_min": min(dofs) if dofs else None})
    return out


def _footprint_series(ds, mjd) -> dict:
    """Mid-times (``mjd``, per exposure of ``ds``) of the exposures that see each footprint of the
    cube, by the footprint's subarray name: a subarray's pixels are seen by the full frames too."""
    keys = ("y0", "x0", "ny", "nx")
    mjd = np.asarray(mjd, float)
    if not all(k in ds.coords for k in keys):
        return {"the cube": mjd}
    box = np.stack([np.asarray(ds[k].values, np.int64) for k in keys], axis=1)
    names = ds["subarray"].values if "subarray" in ds.coords else None
    out = {}
    for b in np.unique(box, axis=0):
        y0, x0, ny, nx = (int(v) for v in b)
        sees = ((box[:, 0] <= y0) & (box[:, 1] <= x0) & (box[:, 0] + box[:, 2] >= y0 + ny)
                & (box[:, 1] + box[:, 3] >= x0 + nx))
        own = np.flatnonzero((box == b).all(axis=1))[0]
        name = str(names[own]) if names is not None else f"rows {y0}-{y0 + ny - 1}, columns {x0}-{x0 + nx - 1}"
        out[name] = mjd[sees]
    return out


def _storage_rows(ds, source: str) -> np.ndarray | None:
    """Storage position in the cube at ``source`` of each exposure of ``ds`` (matched by file
    name and time), or None when ``ds`` is not a whole-frame selection of that cube."""
    import zarr

    try:
        g = zarr.open_group(cube.zarr_store(source, read_only=True), mode="r")
        n = int(g.attrs["lrscube"]["n_committed"])
        gone = {int(i) for i in g.attrs["lrscube"].get("dropped", ())}
        if tuple(g["sci"].shape[1:]) != (ds.sizes["y"], ds.sizes["x"]) or "filename" not in ds.coords:
            return None
        if "y" in ds.coords and int(ds["y"].values[0]) != 0 or "x" in ds.coords and int(ds["x"].values[0]) != 0:
            return None
        names = g["filename"][:n]
        names = [v.decode() if isinstance(v, bytes) else str(v) for v in names]
        where = {(f, round(float(m), 9)): i for i, (f, m) in enumerate(zip(names, g["mjd"][:n])) if i not in gone}
        rows = [where.get((str(f), round(float(m), 9))) for f, m in zip(ds["filename"].values, ds["mjd"].values)]
    except (KeyError, FileNotFoundError, ValueError, TypeError):
        return None
    if any(r is None for r in rows):
        return None
    return np.asarray(rows, np.int64)


def balanced_batch(n: int, batch: int, slots: int) -> int:
    """Exposures per stage-1 task: at most ``batch`` and at least half of it, chosen so that the
    ``n`` exposures are shared as evenly as possible over ``slots`` worker threads.

    Stage-1 tasks cost about the same per exposure and go to whichever worker is free, so a
    worker's share is every ``slots``-th task. With a fixed batch the shares can differ by most
    of a batch (400 exposures in batches of 16 on 2 workers: 25 tasks, 208 exposures against
    192); batches of 10 give 200 each. Ties go to the larger batch (fewer, larger work-store
    chunks).

    >>> balanced_batch(100, 16, 2), balanced_batch(400, 16, 2), balanced_batch(1600, 16, 2)
    (10, 10, 16)
    """
    batch, slots = max(1, int(batch)), max(1, int(slots))
    if n <= 0:
        return batch

    def busiest(b):  # exposures of the worker with the most, tasks dealt round-robin
        sizes = [min(b, n - a) for a in range(0, n, b)]
        return max(sum(sizes[w::slots]) for w in range(min(slots, len(sizes))))

    smallest = max(1, min((batch + 1) // 2, -(-n // slots)))  # fewer exposures than slots x batch: split them
    return min(range(batch, smallest - 1, -1), key=busiest)


def _stage0(ds, prof, p: DetectionParams, rows, source, origin=(0, 0), crop=None):
    """The response pattern (``response_passes`` passes, each on the images flat-fielded by the
    last) and the pixels outside the light, from a few exposures spread over the data set, as
    dask tasks; and the cube's planes as dask arrays when tasks do not read the cube themselves
    (``rows`` None)."""
    import dask

    idx = response_indices(ds.sizes["time"], p.response_exposures)
    groups = [idx[k:k + 4] for k in range(0, idx.size, 4)]
    sci = err = dq = None
    if rows is None:
        sci, err, dq = (ds[v].data for v in ("sci", "err", "dq"))
        if not hasattr(sci, "dask"):
            import dask.array as da

            sci, err, dq = (da.from_array(np.asarray(v), chunks=(1, -1, -1)) for v in (sci, err, dq))
    g = gate = None  # every pass's level stands out from the first pass's response spread
    for _ in range(max(1, p.response_passes) if groups else 0):
        g_in = _shared(g)
        if rows is None:
            s0 = [dask.delayed(_response_task, pure=False)(sci[gi], err[gi], p, prof, None, None, g_in, origin)
                  for gi in groups]
        else:
            s0 = [dask.delayed(_response_task, pure=False)(None, None, p, prof, source, rows[gi], g_in, origin, crop)
                  for gi in groups]
        q, gate = response_pattern(np.concatenate(list(_iter_compute(s0, False))), **_pattern_kw(p, prof),
                                   gate_variance=gate, return_gate=True)
        g = q if g is None else np.clip(g * q, RESPONSE_RANGE[0], RESPONSE_RANGE[1]).astype(np.float32)
    unlit = None
    if p.unlit_fraction is not None and groups:  # the pixels outside the light, from the same exposures
        if rows is None:
            s0 = [dask.delayed(_illumination_task, pure=False)(sci[gi], err[gi]) for gi in groups]
        else:
            s0 = [dask.delayed(_illumination_task, pure=False)(None, None, source, rows[gi], crop) for gi in groups]
        unlit = unlit_of(np.stack(list(_iter_compute(s0, False))), p, prof)
    return g, unlit, (sci, err, dq)


def _plane_data(ds, name: str):
    """Plane ``name`` of ``ds`` as a dask array of one exposure per chunk."""
    import dask.array as da

    data = ds[name].data
    return data if hasattr(data, "dask") else da.from_array(np.asarray(data), chunks=(1, -1, -1))


def _detect_two_stage(ds, prof, p, ctx, work, tile, spans, progress, source=None, rows=None, crop=None):
    """Stage 1 over batches of exposures into ``work``, then stage 2 over tiles (dask). With
    ``rows`` (storage positions in the cube at ``source``) tasks read their frames themselves,
    only the part ``crop`` that ``ds`` holds (:func:`seen_box`)."""
    import dask

    n_t = ds.sizes["time"]
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    B = balanced_batch(n_t, int(p.work_batch_exposures), worker_threads())
    workstore.create(work)
    t00 = _time.time()
    # stage 0: the pixels' response pattern, from a few exposures spread over the data set
    at = (int(ctx.ys[0]), int(ctx.xs[0]))  # the full-frame (y, x) of the arrays' first pixel
    g, unlit, arrays = _stage0(ds, prof, p, rows, source, at, crop)
    sci, err, dq = arrays
    ctx.unlit = unlit
    g_node, u_node = _shared(g), _shared(unlit)
    dof = ctx.dof
    if rows is not None:  # each task reads its whole frames from the cube: no chunk tasks, no transfers
        s1 = [dask.delayed(_stage1_to_work, pure=False)(work, a, None, None, None, p, prof, spans, source,
                                                         rows[a:a + B], g_node, u_node, None,
                                                         None if dof is None else dof[a:a + B], at, crop)
              for a in range(0, n_t, B)]
    else:
        qs = _plane_data(ds, "intscat") if dof is not None else None
        s1 = [dask.delayed(_stage1_to_work, pure=False)(work, a, sci[a:a + B], err[a:a + B], dq[a:a + B], p, prof,
                                                         spans, None, None, g_node, u_node,
                                                         None if qs is None else qs[a:a + B],
                                                         None if dof is None else dof[a:a + B], at)
              for a in range(0, n_t, B)]
    and_bits = np.full((ny, nx), _ALL_BITS, np.uint32)
    n_seen = np.zeros((ny, nx), np.int32)
    trace_px = np.zeros(n_t, np.int64)
    t0 = _time.time()
    for res in _iter_compute(s1, progress):
        and_bits &= res["and_bits"]
        n_seen += res["n_seen"]
        trace_px[res["a"]:res["a"] + res["trace_pixels"].size] = res["trace_pixels"]
    sbits = static_bits(and_bits, n_seen)
    exclude = excluded_pixels(sbits, prof, ctx.xs, ctx.ys)
    starts = list(range(0, n_t, B))
    todo = [sp for sp in spans if (n_seen[sp[0]:sp[1], sp[2]:sp[3]] > 0).any()]
    t1 = _time.time()
    # stage 2a: the noise about each pixel's own baseline, counted per exposure and block
    ctx_node = _shared(ctx)  # it holds the full-frame unlit pixels
    s2a = [dask.delayed(_calibration_from_work, pure=False)(work, starts, ya, yb, xa, xb, exclude[ya:yb, xa:xb],
                                                            ctx_node)
           for ya, yb, xa, xb in todo]
    counts: dict = {}
    for res in _iter_compute(s2a, progress):
        _add_counts(counts, res)
    cal = _shared_parts(calibrations(counts, p))
    t2 = _time.time()
    def tile_cal(ya, yb, xa, xb):  # the calibrations of the tile's blocks (its gap pixels' apart)
        at, shape = (int(ctx.ys[ya]), int(ctx.xs[xa])), (yb - ya, xb - xa)
        return _tile_calibration(cal, at, shape, p, _tile_gap(ctx, at, shape))

    s2 = [dask.delayed(_stage2_from_work, pure=False)(
              work, starts, ya, yb, xa, xb, exclude[ya:yb, xa:xb], ctx_node, tile_cal(ya, yb, xa, xb))
          for ya, yb, xa, xb in todo]
    results = list(_iter_compute(s2, progress))
    ctx.timing = {"stage0_s": round(t0 - t00, 2), "stage1_s": round(t1 - t0, 2), "stage2a_s": round(t2 - t1, 2), "stage2_s": round(_time.time() - t2, 2),
                  "stage1_tasks": len(s1), "stage2_tasks": len(s2),
                  "stage1_reads": "whole frames from the cube" if rows is not None else "dask chunks"}
    return results, sbits, n_seen, trace_px, len(s1) + len(s2)


def _active_client():
    """The distributed client in use, or None (dask's local schedulers)."""
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


def _shared(obj):
    """``obj`` as an argument of many tasks, sent once: scattered to every worker when a
    distributed client runs them (a full-frame array in each task's graph would be pickled with
    every task: 16 MiB of response pattern per task for a 2048 x 2048 frame), else one graph key."""
    import dask

    if obj is None:
        return None
    client = _active_client()
    if client is not None:
        return client.scatter(obj, broadcast=True, hash=False)
    return dask.delayed(obj, pure=True)


def _shared_parts(parts: dict) -> dict:
    """``parts`` (a dict of arguments, each needed by some tasks) with each value sent once:
    scattered to the cluster (a worker fetches a value when a task of its needs it) when a
    distributed client runs the tasks, else as it is. A block's noise calibration holds a few
    bytes per exposure and every stage-2 tile inside the block needs it: carried in each task,
    stage 2's messages to the workers would sum to tiles x N bytes, i.e. grow as N^2 (the tile
    shrinks as N grows)."""
    client = _active_client()
    if client is None or not parts:
        return parts
    keys = list(parts)
    return dict(zip(keys, client.scatter([parts[k] for k in keys], hash=False)))


def _iter_compute(tasks, progress):
    """Results of delayed ``tasks`` as they finish (a distributed client if one is active)."""
    import dask

    client = _active_client()
    if client is not None:
        from distributed import as_completed

        futures = client.compute(tasks)
        if progress:
            from distributed import progress as dprogress

            dprogress(futures)
        for f in as_completed(futures):
            yield f.result()
            f.release()
        return
    if progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar():
            yield from dask.compute(*tasks)
        return
    yield from dask.compute(*tasks)


# --------------------------------------------------------------------------------------------
# the store


def _run_config(a: dict) -> dict:
    mode = provenance.store_mode(a["store"], a.get("mode"))
    known = {"store", "mode", "tiles", "progress", "write_mask", "min_epoch_days", "full"}
    overrides = {k: v for k, v in a.items() if k not in known and v is not None}
    params = DetectionParams.from_profile(profiles.load(mode), **overrides).to_dict()
    return {"mode": mode, "parameters": params, "overrides": overrides, "tiles": a.get("tiles"),
            "write_mask": a.get("write_mask"), "min_epoch_days": a.get("min_epoch_days"),
            "do_not_use": list(profiles.load(mode).do_not_use)}


def _run_summary(run: provenance.Run, a: dict, iv) -> None:
    run.inputs = provenance.exposure_summary(cube.exposure_table(run.store))
    carried = iv["carried"].astype(bool) if "carried" in iv else pd.Series(False, index=iv.index)
    new = iv[~carried]
    run.result.update({"intervals": int(len(iv)), "pixels": int(iv[["y", "x"]].drop_duplicates().shape[0]) if len(iv) else 0,
                  "carried": int(carried.sum()),
                  "by_class": {str(k): int(v) for k, v in new.groupby("flag")[["y", "x"]].apply(
                      lambda g: g.drop_duplicates().shape[0]).items()} if len(new) else {},
                  "recovered": int(new["end_mjd"].notna().sum()) if len(new) else 0})


def _basis(exposures: pd.DataFrame, config: dict) -> dict:
    """What a detect run's outputs follow from: the exposures (their content digest), the
    effective configuration (:func:`_run_config`'s digest) and the whole mode profile (its
    regions and geometry too), the code and the libraries."""
    return {"content_digest": provenance.content_digest(exposures["content_hash"]) if len(exposures) else "",
            "config_digest": provenance.config_digest(config),
            "profile_digest": provenance.config_digest(provenance.profile_config(config["mode"])),
            "code_digest": provenance.code_digest(), "software": provenance.software()}


def _committed_with(store: str, basis: dict) -> str | None:
    """The committed detect run if it was made from ``basis`` (same exposures, configuration,
    code and libraries: it would come out the same), else None."""
    meta = st.detect_meta(store) or {}
    if meta.get("basis") != basis or not isinstance(meta.get("outputs"), dict):
        return None
    return meta.get("run")


@provenance.recorded("detect", _run_config, _run_summary)
def detect(store: str, mode: str | None = None, *, tiles: tuple[int, int] | None = None,
           progress: bool | None = None, write_mask: bool = True, min_epoch_days: float = 0.0,
           full: bool = False, **overrides) -> pd.DataFrame:
    """Detect defects in a store's exposure cube; write intervals, mask cube and detect.json.

    Parameters
    ----------
    store : str
        Path or fsspec URL of an lrscube store holding an exposure cube.
    mode : str
        Mode profile name or YAML path (default: the store's mode, else ``lrs``).
    tiles : (ty, tx)
        Tile size (pixels); default from the memory budget ``tile_memory_mb``.
    write_mask : bool
        Also write the mask cube (lrscube.masks.maskcube.write_mask_cube).
    min_epoch_days : float
        Merge mask-cube epochs shorter than this (days), choosing the least costly merges.
    full : bool
        Recompute even when nothing changed since the committed run.
    **overrides
        Detection parameters, e.g. ``false_alarm_pixels=1.0`` or ``detection_sigma=7``.

    Returns
    -------
    The intervals table as the store holds it (``lrscube.open_intervals``). A run recomputes everything
    from the whole cube (see docs/detection.md), unless the committed run was made from the same
    exposures, configuration, code and libraries: its intervals and mask are kept as they are.
    """
    # One detect at a time per store (STORE/detect.lock). The run writes everything into its
    # own folder STORE/detect/RUN and commits by rewriting detect.json to name it: a killed run
    # leaves the last committed intervals and mask, and its folder is removed by the next run.
    with st.writer_lock(store, st.DETECT_LOCK, "detect"):
        st.clean_detect_runs(store)
        ds = open_cube(store)
        if mode is None:
            mode = ds.attrs.get("mode") or ds.attrs.get("profile") or profiles.DEFAULT_MODE
            if isinstance(mode, dict):
                mode = mode.get("name", profiles.DEFAULT_MODE)
        prof = profiles.load(mode)
        exposures = exposure_table(store)  # the exposures ds holds: read before the frames
        basis = _basis(exposures, _run_config({"store": store, "mode": mode, "tiles": tiles,
                                                      "write_mask": write_mask,
                                                      "min_epoch_days": min_epoch_days, **overrides}))
        kept = None if full else _committed_with(store, basis)
        if kept is not None:  # a detect run is deterministic: the same inputs give these outputs
            record = provenance.current()
            if record is not None:
                record.result["unchanged_since"] = kept
            return open_intervals(store)
        run = st.new_run_id()
        work = st.run_url(store, run, "work")
        try:
            iv, meta = detect_dataset(ds, prof, tiles=tiles, progress=progress, work=work,
                                      source=cube_url(store), **overrides)
        except st.CorruptDataError as e:
            raise _named(e, store) from None
        finally:
            _remove(work)
        st.write_table(st.run_url(store, run), st.INTERVALS, iv)
        meta["mask_cube"] = None
        if write_mask:
            mask = write_mask_cube(store, iv, prof, exposures=exposures, min_epoch_days=min_epoch_days, run=run)
            record = provenance.current()
            if record is not None:
                record.result.update(mask_epochs=int(mask.sizes['time']),
                                     mask_epochs_unmerged=int(mask.attrs.get('n_raw_epochs', mask.sizes['time'])))
            meta["mask_cube"] = st.run_url(store, run, st.MASK)
        meta["basis"] = basis
        st.publish_detect(store, run, meta, mask=write_mask)  # the commit point
        st.clean_detect_runs(store)
    # the table as stored (parquet's column types), the same whether computed or kept
    return open_intervals(store)


def _named(e: st.CorruptDataError, store: str) -> st.CorruptDataError:
    """The corrupt exposure's file name added to the error, when its coordinates read."""
    if e.slot is not None and e.exposure is None:
        try:
            import zarr

            g = zarr.open_group(cube.zarr_store(st.join(store, st.EXPOSURES), read_only=True), mode="r")
            e.exposure = str(g["filename"][int(e.slot)])
        except Exception:  # noqa: BLE001 - the name is a courtesy; the slot is in the message
            pass
    return e


def _remove(url: str) -> None:
    fs, path = st.fs_and_path(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def open_intervals(store: str) -> pd.DataFrame:
    """The defect-intervals table of a store (one row per pixel and bad interval)."""
    return st.read_table(store, st.INTERVALS)


def summarize_intervals(iv) -> str:
    """A few lines on an intervals table: pixels per class, new vs carried."""
    if not len(iv):
        return "detect: no defective pixels found"
    carried = iv["carried"].astype(bool) if "carried" in iv else iv["start_mjd"].isna() & iv["end_mjd"].isna()
    new = iv[~carried]
    lines = [f"detect: {len(iv)} intervals on {iv[['y', 'x']].drop_duplicates().shape[0]} pixels "
             f"({int(carried.sum())} carried from the input static mask, {len(new)} found)"]
    for flag, g in new.groupby("flag"):
        rec = int(g["end_mjd"].notna().sum())
        lines.append(f"  {flag:<16} {len(g):6d} intervals, {rec} recovered")
    return "\n".join(lines)
