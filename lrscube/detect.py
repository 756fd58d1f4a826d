"""Detect defective pixels: the exposure cube in, the defect-intervals table (and mask cube) out.

This module is the thin layer. The numerics live in their own modules and are tested alone:
:mod:`lrscube.residuals` (per-exposure residual against the local sky), :mod:`lrscube.temporal`
(robust statistics along time), :mod:`lrscube.changepoints` (onset and recovery) and
:mod:`lrscube.classify` (the registered defect classes). Here they are composed per tile
(:func:`analyse_tile`, pure numpy), mapped over the cube with dask (:func:`detect_dataset`), and
wrapped for a store (:func:`detect`).

The flow of :func:`detect`::

    open_cube -> stage 1 per batch of exposures (whole frames: residuals, traces, static bits)
      -> STORE/detect/RUN/work (lrscube.workstore: an object per batch; removed after the run)
      -> stage 2 per tile (all exposures x ty x tx: temporal statistics, change points, classes)
      -> interval records -> detect/RUN/intervals.parquet -> detect/RUN/mask -> detect.json (the commit)

Example (in memory, no store)::

    ds = lrscube.open_cube(store)            # or any Dataset with sci/err/dq (time, y, x)
    iv, meta = detect_dataset(ds, "lrs")
"""

from __future__ import annotations

import logging
import time as _time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import changepoints as cp
from . import classify, flags, profiles
from . import provenance
from . import store as st
from . import workstore
from .cluster import worker_threads
from .detection_params import DetectionParams
from .residuals import spatial_residuals, trace_mask
from .temporal import clipped_z, scan_statistic, transients, weighted_level

log = logging.getLogger(__name__)

INTERVAL_COLUMNS = [
    "y", "x", "flag", "start_mjd", "end_mjd", "dq", "amplitude", "significance",
    "onset_significance", "recovery_significance", "n_bad", "last_good_mjd", "first_bad_mjd",
    "first_good_mjd", "reason", "carried",
]
_DTYPES = {"y": "int64", "x": "int64", "flag": "object", "start_mjd": "float64", "end_mjd": "float64",
           "dq": "uint32", "amplitude": "float64", "significance": "float64",
           "onset_significance": "float64", "recovery_significance": "float64", "n_bad": "int64",
           "last_good_mjd": "float64", "first_bad_mjd": "float64", "first_good_mjd": "float64",
           "reason": "object", "carried": "bool"}

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
    threshold: float  #: detection threshold (sigma)
    ys: np.ndarray | None = None  #: full-frame row of each dataset row
    xs: np.ndarray | None = None  #: full-frame column of each dataset column


# --------------------------------------------------------------------------------------------
# per pixel: intervals and their evidence


def _evidence(r, s, sky, state_sigma) -> dict:
    """Evidence of one candidate interval (1-D arrays over its exposures, excluded ones removed)."""
    a, a_err, chi2_a, n = weighted_level(r, s)
    skyp = np.where(sky > 0, sky, np.nan)
    b, b_err, chi2_m, n_m = weighted_level(r, s, weight_shape=skyp)
    if n_m < max(2, n // 2):  # too little sky to test a sky-proportional model
        b, b_err, chi2_m = np.nan, np.inf, np.inf
    z = r / s
    high = z > state_sigma
    low = np.abs(z) <= state_sigma
    best = np.nanmin([chi2_a, chi2_m])
    return {
        "n": n, "excess_dn_s": a, "excess_err": a_err, "deficit": -b, "deficit_err": b_err,
        "chi2_add": chi2_a, "chi2_mult": chi2_m, "variance_ratio": best / max(n - 1, 1),
        "frac_high": float(high.mean()) if z.size else 0.0, "frac_low": float(low.mean()) if z.size else 0.0,
        "high_level_dn_s": float(np.mean(r[high])) if high.any() else a,
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
    state = r > 0.5 * high_level
    ok = high_level >= separation * s
    counts = ok[1:] & ok[:-1]
    return (state[1:] != state[:-1]) & counts, counts


def pixel_intervals(r, s, sky, ctx: TileContext, clip=None) -> list[dict]:
    """Bad intervals of one pixel from its series (1-D, exposures in time order, gaps removed).

    ``clip`` (per exposure, sigma; default ``clip_sigma``) bounds each exposure's normalised
    residual. Returns evidence dicts with ``start``/``stop`` indices into the given series.
    """
    p = ctx.params
    cap = p.clip_sigma if clip is None else clip
    z = clipped_z(r, s, cap)
    # the level of a defect in each exposure, in z units: a current (excess) is seen at 1 / s,
    # a lost fraction of the sky (deficit) at sky / s
    with np.errstate(divide="ignore", invalid="ignore"):
        excess = 1.0 / np.asarray(s, float)
        deficit = np.where(np.asarray(sky, float) > 0, np.asarray(sky, float) * excess, excess)
    runs = cp.find_runs(z, min_sigma=p.changepoint_sigma, boundary_sigma=p.boundary_sigma,
                        shapes=(excess, deficit), cap=cap, raw=np.asarray(r, float) * excess)
    if not runs:
        return []

    def row(start, stop, run_sig, on, rec):
        sl = slice(start, stop)
        v = z[sl]
        return {"start": start, "stop": stop, "sign": 1 if v.sum() >= 0 else -1,
                "significance": float(abs(v.sum()) / np.sqrt(v.size)) if run_sig is None else run_sig,
                "onset_significance": on, "recovery_significance": rec,
                **_evidence(r[sl], s[sl], sky[sl], p.state_sigma)}

    def passes(rw):
        return rw["significance"] >= ctx.threshold and rw["stop"] - rw["start"] >= p.min_bad_exposures

    def is_telegraph(rw):
        return classify.classify(pd.DataFrame([rw]), p.classes).iloc[0] == "TELEGRAPH"

    # telegraph pixels: excess runs separated by quiet stretches that the pixel's own switching
    # makes probable are one interval (a stretch of g quiet exposures has probability
    # (1 - p_switch)^g; below telegraph_gap_probability it is a recovery). p_switch is the
    # pixel's own: the fraction of consecutive exposure pairs whose state differs, from the
    # first to the last excess run, leaving out the stretch being tested (a stretch would
    # otherwise make itself probable) and pairs whose states are not resolved (2 state_sigma).
    # A piece joins only if the merged span is at least as significant as its strongest piece
    # (a weak noise run far from a defect dilutes it and is not part of it), or if both sides
    # are high states of one defect: on average above state_sigma (or switching by themselves),
    # with high-state levels (DN/s) within telegraph_level_ratio of each other (clipping makes
    # a strong telegraph's sparse high states count at most clip_sigma each, so its quiet
    # stretches dilute it although they are part of its switching).
    def idx_of(pieces):
        return np.concatenate([np.arange(u.start, u.stop) for u in pieces])

    def high_level(pieces):
        idx = idx_of(pieces)
        hi = idx[z[idx] > p.state_sigma]
        return float(np.mean(r[hi if hi.size else idx]))

    def in_high_state(pieces):
        """on average above state_sigma, or switching by itself (a TELEGRAPH span)"""
        if float(np.mean(z[idx_of(pieces)])) >= p.state_sigma:
            return True
        return is_telegraph(row(pieces[0].start, pieces[-1].stop, None, 0.0, 0.0))

    pos = [u for u in runs if u.sign > 0]
    flips = counts = None
    if len(pos) > 1 and p.telegraph_gap_probability > 0:
        flips, counts = switch_counts(r, s, high_level(pos), 2 * p.state_sigma)
        a, b = pos[0].start, pos[-1].stop - 1  # pairs (t, t + 1) with a <= t < b
        f_all, c_all = int(flips[a:b].sum()), int(counts[a:b].sum())

    def p_switch_without(i, j):
        """switching probability over the excess runs' span without the stretch [i, j)"""
        lo, hi = i - 1, j  # the pairs that touch the stretch: (i - 1, i) ... (j - 1, j)
        c = c_all - int(counts[lo:hi].sum())
        return (f_all - int(flips[lo:hi].sum())) / c if c > 0 else 0.0

    groups = [[runs[0]]]
    for u in runs[1:]:
        g = groups[-1]
        if u.sign > 0 and g[-1].sign > 0 and flips is not None:
            gap = u.start - g[-1].stop
            ps = p_switch_without(g[-1].stop, u.start)
            if ps > 0 and (1.0 - ps) ** gap >= p.telegraph_gap_probability:
                span = z[g[0].start:u.stop]
                stronger = abs(span.sum()) / np.sqrt(span.size) >= max(v.significance for v in g + [u])
                if not stronger:
                    lu, lg = high_level([u]), high_level(g)
                    same = (lu > 0 and lg > 0 and min(lu, lg) >= p.telegraph_level_ratio * max(lu, lg)
                            and in_high_state([u]) and in_high_state(g))
                if stronger or same:
                    g.append(u)
                    continue
        groups.append([u])
    out = []
    for g in groups:
        if len(g) > 1:
            rw = row(g[0].start, g[-1].stop, None, g[0].onset_significance, g[-1].recovery_significance)
            if passes(rw) and is_telegraph(rw):
                out.append(rw)
                continue
        for u in g:
            if u.significance >= ctx.threshold and u.stop - u.start >= p.min_bad_exposures:
                out.append(row(u.start, u.stop, u.significance, u.onset_significance, u.recovery_significance))
    return out


# --------------------------------------------------------------------------------------------
# stage 1, per exposure: spatial residuals (whole frames, no tiles)


def spatial_stage(sci, err, dq, params: DetectionParams, profile) -> dict:
    """Residuals of a batch of exposures ``(B, y, x)`` against their local sky, whole frames.

    Returns ``r, s, sky`` (float32, DN/s, NaN where the pixel is not usable), ``trace`` (bool,
    on a source trace), ``jump`` (bool, JUMP_DET in the exposure's DQ: the pipeline found a
    cosmic ray in the pixel), ``and_bits`` (uint32 (y, x): DQ bits set in every exposure of the batch
    that covers the pixel; all ones where none does), ``n_seen`` (int32 (y, x): exposures of the
    batch that cover the pixel) and ``trace_pixels`` (per exposure). Each exposure is cropped to
    its footprint first (a subarray costs its own size, not the frame's). The noise is calibrated
    per stored chunk (256 x 258 pixels) of each exposure.
    """
    p = params
    sci = np.asarray(sci, np.float32)
    err = np.asarray(err, np.float32)
    dq = np.asarray(dq, np.uint32)
    B = sci.shape[0]
    inside = np.isfinite(sci) | (dq != 0)
    out = {k: np.full(sci.shape, np.nan, np.float32) for k in ("r", "s", "sky")}
    out["trace"] = np.zeros(sci.shape, bool)
    out["jump"] = (dq & np.uint32(flags.JUMP_DET)) != 0
    out["and_bits"] = np.bitwise_and.reduce(np.where(inside, dq, _ALL_BITS), axis=0).astype(np.uint32) if B \
        else np.full(sci.shape[1:], _ALL_BITS, np.uint32)
    out["n_seen"] = inside.sum(axis=0).astype(np.int32)
    out["trace_pixels"] = np.zeros(B, np.int64)
    for b in range(B):
        fin = np.isfinite(sci[b])
        if not fin.any():
            continue
        rows = np.flatnonzero(fin.any(axis=1))
        cols = np.flatnonzero(fin.any(axis=0))
        ys, xs = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
        res = spatial_residuals(sci[b:b + 1, ys, xs], err[b:b + 1, ys, xs], dispersion_axis=profile.dispersion_axis,
                                sky_window=p.sky_window_px, min_sky_pixels=p.min_sky_pixels,
                                remove_line_offsets=p.remove_line_offsets, clip_sigma=p.clip_sigma,
                                calibration_block=p.calibration_block_px,
                                cross_window=p.cross_sky_window_px or None)
        tr = trace_mask(res.sky, res.sigma, dispersion_axis=profile.dispersion_axis, sky_window=p.sky_window_px,
                        cross_window=p.trace_cross_window_px, nsigma=p.trace_sigma,
                        min_length=p.trace_min_length_px, margin=p.trace_margin_px)
        out["r"][b, ys, xs] = res.resid[0]
        out["s"][b, ys, xs] = res.sigma[0]
        out["sky"][b, ys, xs] = res.sky[0]
        out["trace"][b, ys, xs] = tr[0]
        out["trace_pixels"][b] = int(tr.sum())
    return out


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


def excluded_pixels(sbits: np.ndarray, profile, xs: np.ndarray) -> np.ndarray:
    """(y, x) bool: pixels never analysed: the carried static mask and the reference pixels
    (flagged REFERENCE_PIXEL, or in the profile's reference columns; they see no light)."""
    ex = ((sbits & np.uint32(STATIC_BITS)) != 0) | ((sbits & np.uint32(flags.REFERENCE_PIXEL)) != 0)
    for a, b in profile.reference_columns:
        ex[:, (xs >= a) & (xs < b)] = True
    return ex


# --------------------------------------------------------------------------------------------
# stage 2, per tile of pixels with the whole time axis: temporal statistics


def temporal_stage(r, s, sky, trace, exclude, ctx: TileContext, origin=(0, 0), jump=None) -> tuple[pd.DataFrame, dict]:
    """Defect intervals of a tile from its stage-1 arrays ``(time, ty, tx)`` (no halo needed).

    ``exclude`` (ty, tx) marks pixels not to analyse; ``origin`` is the full-frame (y, x) of the
    tile's first pixel. Returns (intervals, diagnostics).
    """
    p = ctx.params
    n_t, ny, nx = r.shape
    y0, x0 = origin
    diag = {"transient_pixels": np.zeros(n_t, np.int64), "candidates": 0, "pixels": 0}
    P = ny * nx
    r2 = np.asarray(r, np.float32).reshape(n_t, P)
    s2 = np.asarray(s, np.float32).reshape(n_t, P)
    sky2 = np.asarray(sky, np.float32).reshape(n_t, P)
    tr2 = np.asarray(trace, bool).reshape(n_t, P)
    jp2 = np.zeros((n_t, P), bool) if jump is None else np.asarray(jump, bool).reshape(n_t, P)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(r2) & np.isfinite(s2) & (s2 > 0)
    valid[:, np.asarray(exclude, bool).reshape(P)] = False
    # a "trace" present in most of a pixel's exposures is a defective column, not a source
    n_valid = valid.sum(axis=0)
    tr_frac = np.where(n_valid > 0, (tr2 & valid).sum(axis=0) / np.maximum(n_valid, 1), 0.0)
    tr2 = tr2 & (tr_frac <= p.trace_max_fraction)[None, :]
    has = n_valid >= p.min_bad_exposures
    diag["pixels"] = int((n_valid > 0).sum())
    if not has.any():
        return empty_intervals(), diag
    # group pixels by the exposures that see them (footprints), so each group is gap-free
    packed = np.ascontiguousarray(np.packbits(valid.T, axis=1))
    # rows as opaque byte strings: one sort of P keys instead of a lexicographic one
    keys, inverse = np.unique(packed.view(np.dtype((np.void, packed.shape[1]))).ravel(), return_inverse=True)
    inverse = inverse.reshape(-1)
    rows_ev, rows_meta = [], []
    for g in range(keys.shape[0]):
        pix = np.flatnonzero((inverse == g) & has)
        if pix.size == 0:
            continue
        t_idx = np.flatnonzero(valid[:, pix[0]])
        rg = r2[np.ix_(t_idx, pix)]
        sg = s2[np.ix_(t_idx, pix)]
        kg = sky2[np.ix_(t_idx, pix)]
        on_trace = tr2[np.ix_(t_idx, pix)]
        clip = np.where(jp2[np.ix_(t_idx, pix)], p.jump_clip_sigma, p.clip_sigma).astype(np.float32)
        trans = transients(np.where(on_trace, np.nan, rg), sg, kg, window=p.transient_window, nsigma=p.transient_sigma)
        keep_whole = trans.sum(axis=0) > p.max_transients
        trans[:, keep_whole] = False
        np.add.at(diag["transient_pixels"], t_idx, trans.sum(axis=1))
        excl = on_trace | trans
        z = clipped_z(np.where(excl, np.nan, rg), sg, clip)
        stat = scan_statistic(z)
        cand = np.flatnonzero(stat >= p.screen_fraction * ctx.threshold)
        diag["candidates"] += int(cand.size)
        for j in cand:
            use = ~excl[:, j]
            ivs = pixel_intervals(rg[use, j], sg[use, j], kg[use, j], ctx, clip[use, j])
            if trans[:, j].any() and any(iv["sign"] > 0 for iv in ivs):
                # a pixel with an excess: its isolated high states are more likely its own (a
                # telegraph pixel's) than cosmic rays, which hit one pixel-exposure in ~1e4;
                # the single-exposure events are put back and the pixel analysed again (they
                # join an interval only as telegraph pieces or next to its ends)
                use = ~on_trace[:, j]
                ivs = pixel_intervals(rg[use, j], sg[use, j], kg[use, j], ctx, clip[use, j])
            ti = t_idx[use]
            yy, xx = divmod(int(pix[j]), nx)
            for iv in ivs:
                rows_ev.append(iv)
                rows_meta.append((yy, xx, ti, t_idx))
    records = []
    if rows_ev:
        ev = pd.DataFrame(rows_ev)
        cls = classify.classify(ev, p.classes)
        keep = classify.passes_floors(ev, p.classes).to_numpy()
        amp = classify.amplitude(ev, cls)
        for k in np.flatnonzero(keep):
            e = ev.iloc[k]
            yy, xx, ti, t_all = rows_meta[k]
            records.append(_record(e, cls.iloc[k], amp[k], yy + y0, xx + x0, ti, t_all, ctx))
    return _finish(records), diag


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
    st1 = spatial_stage(sci, err, dq, ctx.params, ctx.profile)
    cy, cx = core
    sbits = static_bits(st1["and_bits"], st1["n_seen"])[cy, cx]
    xs = origin[1] + np.arange(sbits.shape[1])
    exclude = excluded_pixels(sbits, ctx.profile, xs)
    iv, diag = temporal_stage(st1["r"][:, cy, cx], st1["s"][:, cy, cx], st1["sky"][:, cy, cx],
                              st1["trace"][:, cy, cx], exclude, ctx, origin, jump=st1["jump"][:, cy, cx])
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
    model = "sky-proportional deficit" if cls in ("DEAD", "LOW_QE") else (
        "switching excess" if cls == "TELEGRAPH" else ("additive excess" if e["sign"] > 0 else "deficit"))
    reason = (f"{model} {amp:.3g}{unit}, {e['significance']:.1f} sigma over {n_bad} exposures; "
              f"onset {e['onset_significance']:.1f} sigma, recovery {e['recovery_significance']:.1f} sigma; "
              f"chi2 additive {e['chi2_add']:.1f} / sky-proportional {e['chi2_mult']:.1f} (n={int(e['n'])})")
    return {"y": y, "x": x, "flag": cls, "start_mjd": start_mjd, "end_mjd": end_mjd,
            "dq": ctx.profile.flag_bits(cls), "amplitude": float(amp), "significance": float(e["significance"]),
            "onset_significance": float(e["onset_significance"]),
            "recovery_significance": float(e["recovery_significance"]), "n_bad": n_bad,
            "last_good_mjd": float(ctx.mjd[last_good]) if last_good is not None else np.nan,
            "first_bad_mjd": float(ctx.mjd[first_bad]),
            "first_good_mjd": float(ctx.mjd[first_good]) if first_good is not None else np.nan,
            "reason": reason, "carried": False}


def _finish(records: list[dict]) -> pd.DataFrame:
    if not records:
        return empty_intervals()
    df = pd.DataFrame(records, columns=INTERVAL_COLUMNS)
    return df.astype(_DTYPES)


# --------------------------------------------------------------------------------------------
# over a Dataset (dask or numpy)


def tile_shape(n_exposures: int, params: DetectionParams, chunk: tuple[int, int] = (256, 258),
               bytes_per_value: int = 48) -> tuple[int, int]:
    """Tile (ty, tx) of stage 2 whose arrays for all exposures fit the memory budget.

    Sizes are divisors of the stored chunk, so tiles cut the frame (4 x 4 chunks) exactly and
    never straddle a chunk of the work store. ``bytes_per_value`` counts the stage-1 arrays
    (r, s, sky, trace) and the temporal intermediates per pixel and exposure.
    """
    budget = params.tile_memory_mb * 1e6
    cy, cx = chunk
    best = (1, 1)
    for ty in sorted({d for d in range(1, cy + 1) if cy % d == 0}, reverse=True):
        for tx in sorted({d for d in range(1, cx + 1) if cx % d == 0}, reverse=True):
            if ty * tx * max(n_exposures, 1) * bytes_per_value <= budget:
                if ty * tx > best[0] * best[1] or (ty * tx == best[0] * best[1] and abs(ty - tx) < abs(best[0] - best[1])):
                    best = (ty, tx)
    return best


def _context(ds, prof, p) -> TileContext:
    mjd = np.asarray(ds["mjd"].values, float)
    expstart = np.asarray(ds["expstart"].values, float) if "expstart" in ds.coords else mjd.copy()
    thr = p.threshold(int(np.prod(prof.frame_shape)), ds.sizes["time"])
    return TileContext(expstart=expstart, mjd=mjd, params=p, profile=prof, threshold=thr)


def _stage1_to_work(work, a, sci, err, dq, params, profile, spans, source=None, rows=None):
    """Stage 1 for exposures [a, a + B) written into the work store, one object holding every
    stage-2 tile (:mod:`lrscube.workstore`); returns the small reductions.

    With ``source`` (the exposure cube's zarr URL) and ``rows`` (their storage positions), the
    task reads its exposures itself, whole frames, instead of receiving them from dask.
    """
    if source is not None:
        from .cube import read_frames

        sci, err, dq = read_frames(source, rows, missing="error")
    out = spatial_stage(sci, err, dq, params, profile)
    # one uint8 per pixel and exposure: bit 0 on a source trace, bit 1 JUMP_DET
    bits = out["trace"].astype(np.uint8) | (out["jump"].astype(np.uint8) << 1)
    workstore.write_batch(work, a, spans, out["r"], out["s"], out["sky"], bits)
    return {"and_bits": out["and_bits"], "n_seen": out["n_seen"], "trace_pixels": out["trace_pixels"], "a": a}


def _stage2_from_work(work, starts, ya, yb, xa, xb, exclude, ctx):
    r, s, sky, bits = workstore.read_tile(work, starts, ya, xa)
    tr, jump = (bits & 1) != 0, (bits & 2) != 0
    return temporal_stage(r, s, sky, tr, exclude, ctx, (int(ctx.ys[ya]), int(ctx.xs[xa])), jump=jump)


def detect_dataset(ds, profile=None, *, params: DetectionParams | None = None, tiles: tuple[int, int] | None = None,
                   progress: bool | None = None, work: str | None = None, source: str | None = None,
                   **overrides) -> tuple[pd.DataFrame, dict]:
    """Defect intervals of a cube held in an xarray Dataset (numpy- or dask-backed).

    Two stages: (1) per exposure, whole frames: residuals against the local sky, source traces,
    the static DQ bits; (2) per tile of pixels holding the whole time axis: temporal statistics,
    change points, classes. With ``work`` (a folder path or URL, e.g. inside the store), stage 1
    runs as dask tasks over batches of exposures, each reading its exposures exactly once and
    writing the residuals to ``work``, one object per batch (:mod:`lrscube.workstore`);
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
        The zarr URL of the exposure cube ``ds`` was opened from (``lrscube.cube.cube_url``):
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
    if "mjd" in ds.coords:
        ds = ds.sortby("mjd")
    n_t = ds.sizes["time"]
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    ys = np.asarray(ds["y"].values, int) if "y" in ds.coords else np.arange(ny)
    xs = np.asarray(ds["x"].values, int) if "x" in ds.coords else np.arange(nx)
    ctx = _context(ds, prof, p)
    ctx.ys, ctx.xs = ys, xs
    ty, tx = tiles or tile_shape(n_t, p)
    ty, tx = min(ty, ny), min(tx, nx)
    spans = [(a, min(a + ty, ny), b, min(b + tx, nx)) for a in range(0, ny, ty) for b in range(0, nx, tx)]

    if work is None:
        st1 = spatial_stage(ds["sci"].values, ds["err"].values, ds["dq"].values, p, prof)
        sbits = static_bits(st1["and_bits"], st1["n_seen"])
        exclude = excluded_pixels(sbits, prof, xs)
        trace_px = st1["trace_pixels"]
        results = []
        for ya, yb, xa, xb in spans:
            if not (st1["n_seen"][ya:yb, xa:xb] > 0).any():
                continue
            sl = (slice(None), slice(ya, yb), slice(xa, xb))
            results.append(temporal_stage(st1["r"][sl], st1["s"][sl], st1["sky"][sl], st1["trace"][sl],
                                          exclude[ya:yb, xa:xb], ctx, (int(ys[ya]), int(xs[xa])),
                                          jump=st1["jump"][sl]))
        n_seen = st1["n_seen"]
        del st1
        n_tasks = len(results)
    else:
        results, sbits, n_seen, trace_px, n_tasks = _detect_two_stage(ds, prof, p, ctx, work, (ty, tx), spans,
                                                                      progress, source)
    records = carried_records(sbits, n_seen, (int(ys[0]), int(xs[0])))
    frames = [_finish(records)] if records else []
    frames += [r[0] for r in results if len(r[0])]
    iv = pd.concat(frames, ignore_index=True) if frames else empty_intervals()
    iv = iv.sort_values(["y", "x", "start_mjd"], na_position="first", kind="stable").reset_index(drop=True)
    trans_px = np.sum([r[1]["transient_pixels"] for r in results], axis=0) if results else np.zeros(n_t)
    mjd = ctx.mjd
    names = ds["filename"].values if "filename" in ds.coords else np.arange(n_t).astype(str)
    nonblank = [{"exposure": str(names[i]), "mjd": float(mjd[i]), "trace_pixels": int(trace_px[i]),
                 "reason": "source trace or latent: a narrow, long bump of the sky across the dispersion; "
                           "these pixels were left out of the statistics for this exposure"}
                for i in np.flatnonzero(np.asarray(trace_px) > 0)]
    meta = {
        "profile": prof.name, "n_exposures": int(n_t), "threshold_sigma": ctx.threshold, "tiles": [int(ty), int(tx)],
        "n_tiles": int(n_tasks), "parameters": p.to_dict(),
        "pixels_analysed": int(sum(r[1]["pixels"] for r in results)),
        "candidates": int(sum(r[1]["candidates"] for r in results)),
        "intervals": int(len(iv)), "carried_static": int(iv["carried"].sum()) if len(iv) else 0,
        "by_class": {k: int(v) for k, v in iv.loc[~iv["carried"], "flag"].value_counts().items()} if len(iv) else {},
        "non_blank_exposures": nonblank,
        "transient_pixels_per_exposure": {str(names[i]): int(trans_px[i]) for i in range(n_t) if trans_px[i]},
        "seconds": round(_time.time() - t0, 2),
        "timing": getattr(ctx, "timing", None),
    }
    return iv, meta


def _storage_rows(ds, source: str) -> np.ndarray | None:
    """Storage position in the cube at ``source`` of each exposure of ``ds`` (matched by file
    name and time), or None when ``ds`` is not a whole-frame selection of that cube."""
    import zarr

    try:
        g = zarr.open_group(st.zarr_store(source, read_only=True), mode="r")
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


def _detect_two_stage(ds, prof, p, ctx, work, tile, spans, progress, source=None):
    """Stage 1 over batches of exposures into ``work``, then stage 2 over tiles (dask)."""
    import dask

    n_t = ds.sizes["time"]
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    B = balanced_batch(n_t, int(p.work_batch_exposures), worker_threads())
    workstore.create(work)
    rows = _storage_rows(ds, source) if source is not None else None
    if rows is not None:  # each task reads its whole frames from the cube: no chunk tasks, no transfers
        s1 = [dask.delayed(_stage1_to_work, pure=False)(work, a, None, None, None, p, prof, spans, source,
                                                         rows[a:a + B])
              for a in range(0, n_t, B)]
    else:
        sci, err, dq = (ds[v].data for v in ("sci", "err", "dq"))
        if not hasattr(sci, "dask"):
            import dask.array as da

            sci, err, dq = (da.from_array(np.asarray(v), chunks=(1, -1, -1)) for v in (sci, err, dq))
        s1 = [dask.delayed(_stage1_to_work, pure=False)(work, a, sci[a:a + B], err[a:a + B], dq[a:a + B], p, prof,
                                                         spans)
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
    exclude = excluded_pixels(sbits, prof, ctx.xs)
    starts = list(range(0, n_t, B))
    s2 = [dask.delayed(_stage2_from_work, pure=False)(work, starts, ya, yb, xa, xb, exclude[ya:yb, xa:xb], ctx)
          for ya, yb, xa, xb in spans if (n_seen[ya:yb, xa:xb] > 0).any()]
    t1 = _time.time()
    results = list(_iter_compute(s2, progress))
    ctx.timing = {"stage1_s": round(t1 - t0, 2), "stage2_s": round(_time.time() - t1, 2),
                  "stage1_tasks": len(s1), "stage2_tasks": len(s2),
                  "stage1_reads": "whole frames from the cube" if rows is not None else "dask chunks"}
    return results, sbits, n_seen, trace_px, len(s1) + len(s2)


def _iter_compute(tasks, progress):
    """Results of delayed ``tasks`` as they finish (a distributed client if one is active)."""
    import dask

    client = None
    try:
        from distributed import get_client

        client = get_client()
    except (ImportError, ValueError):
        client = None
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


@provenance.recorded("detect", provenance.detect_config, provenance.detect_summary)
def detect(store: str, mode: str | None = None, *, tiles: tuple[int, int] | None = None,
           progress: bool | None = None, write_mask: bool = True, min_epoch_days: float = 0.0,
           **overrides) -> pd.DataFrame:
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
        Also write the mask cube (lrscube.maskcube.write_mask_cube).
    min_epoch_days : float
        Merge mask-cube epochs shorter than this (days), choosing the least costly merges.
    **overrides
        Detection parameters, e.g. ``false_alarm_pixels=1.0`` or ``detection_sigma=7``.

    Returns
    -------
    The intervals table (also in the store: ``lrscube.open_intervals``). Every run recomputes everything
    from the whole cube (see docs/detection.md).
    """
    from .cube import cube_url, exposure_table, open_cube

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
            from .maskcube import write_mask_cube

            write_mask_cube(store, iv, prof, exposures=exposures, min_epoch_days=min_epoch_days, run=run)
            meta["mask_cube"] = st.run_url(store, run, st.MASK)
        st.publish_detect(store, run, meta, mask=write_mask)  # the commit point
        st.clean_detect_runs(store)
    return iv


def _named(e: st.CorruptDataError, store: str) -> st.CorruptDataError:
    """The corrupt exposure's file name added to the error, when its coordinates read."""
    if e.slot is not None and e.exposure is None:
        try:
            import zarr

            g = zarr.open_group(st.zarr_store(st.join(store, st.EXPOSURES), read_only=True), mode="r")
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
