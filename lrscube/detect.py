"""Detect defective pixels: the exposure cube in, the defect-intervals table (and mask cube) out.

This module is the thin layer. The numerics live in their own modules and are tested alone:
:mod:`lrscube.residuals` (per-exposure residual against the local sky), :mod:`lrscube.temporal`
(robust statistics along time), :mod:`lrscube.changepoints` (onset and recovery) and
:mod:`lrscube.classify` (the registered defect classes). Here they are composed per tile
(:func:`analyse_tile`, pure numpy), mapped over the cube with dask (:func:`detect_dataset`), and
wrapped for a store (:func:`detect`).

The flow of :func:`detect`::

    open_cube -> tiles (all exposures x ty x tx, with a spatial halo) -> analyse_tile per tile
      -> concatenate interval records -> intervals.parquet -> mask cube -> detect.json

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
from . import store as st
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


def pixel_intervals(r, s, sky, ctx: TileContext) -> list[dict]:
    """Bad intervals of one pixel from its series (1-D, exposures in time order, gaps removed).

    Returns evidence dicts with ``start``/``stop`` indices into the given series.
    """
    p = ctx.params
    z = clipped_z(r, s, p.clip_sigma)
    runs = cp.find_runs(z, min_sigma=p.changepoint_sigma)
    if not runs:
        return []

    def row(run):
        sl = slice(run.start, run.stop)
        return {"start": run.start, "stop": run.stop, "sign": run.sign, "significance": run.significance,
                "onset_significance": run.onset_significance,
                "recovery_significance": run.recovery_significance,
                **_evidence(r[sl], s[sl], sky[sl], p.state_sigma)}

    def passes(rw):
        return rw["significance"] >= ctx.threshold and rw["stop"] - rw["start"] >= p.min_bad_exposures

    out = []
    # telegraph pixels: bad runs separated by short normal stretches are one interval
    merged = cp.merge_close(runs, z, p.telegraph_max_gap) if len(runs) > 1 and p.telegraph_max_gap > 0 else runs
    for m in merged:
        parts = [u for u in runs if u.start >= m.start and u.stop <= m.stop]
        if len(parts) > 1:
            rw = row(m)
            if passes(rw) and classify.classify(pd.DataFrame([rw]), p.classes).iloc[0] == "TELEGRAPH":
                out.append(rw)
                continue
        for u in parts:
            if u.significance >= ctx.threshold and u.stop - u.start >= p.min_bad_exposures:
                out.append(row(u))
    return out


# --------------------------------------------------------------------------------------------
# per tile


def _static_bits(sci: np.ndarray, dq: np.ndarray) -> np.ndarray:
    """Bits set in the DQ of every exposure that covers a pixel (the static mask), (y, x) uint32."""
    inside = np.isfinite(sci) | (dq != 0)
    d = np.where(inside, dq, _ALL_BITS)
    out = np.bitwise_and.reduce(d, axis=0) if d.shape[0] else np.zeros(d.shape[1:], np.uint32)
    out[~inside.any(axis=0)] = 0
    return out.astype(np.uint32)


def analyse_tile(sci, err, dq, ctx: TileContext, core: tuple[slice, slice] | None = None,
                 origin: tuple[int, int] = (0, 0)) -> tuple[pd.DataFrame, dict]:
    """Defect intervals of one tile: all exposures of a block of pixels (plus a halo).

    Parameters
    ----------
    sci, err, dq : arrays (time, y, x)
        The tile with its halo, exposures sorted by time.
    ctx : TileContext
    core : (slice, slice)
        The tile's own pixels within the arrays (the rest is halo); default all.
    origin : (int, int)
        Full-frame (y, x) of the first pixel of ``core``.

    Returns
    -------
    (intervals DataFrame, diagnostics dict with per-exposure counts of trace and transient pixels)
    """
    p = ctx.params
    prof = ctx.profile
    sci = np.asarray(sci, np.float32)
    err = np.asarray(err, np.float32)
    dq = np.asarray(dq, np.uint32)
    n_t = sci.shape[0]
    if core is None:
        core = (slice(None), slice(None))
    diag0 = {"trace_pixels": np.zeros(n_t, np.int64), "transient_pixels": np.zeros(n_t, np.int64),
             "candidates": 0, "pixels": 0}
    # crop to the part of the tile any exposure sees (subarray-only data leaves most tiles empty)
    seen = (np.isfinite(sci) | (dq != 0)).any(axis=0)
    cy0, cy1, _ = core[0].indices(sci.shape[1])
    cx0, cx1, _ = core[1].indices(sci.shape[2])
    if not seen[cy0:cy1, cx0:cx1].any():
        return empty_intervals(), diag0
    rows = np.flatnonzero(seen.any(axis=1))
    cols = np.flatnonzero(seen.any(axis=0))
    ya, yb = rows[0], rows[-1] + 1
    xa, xb = cols[0], cols[-1] + 1
    sci, err, dq = sci[:, ya:yb, xa:xb], err[:, ya:yb, xa:xb], dq[:, ya:yb, xa:xb]
    ncy0, ncy1 = max(cy0, ya), min(cy1, yb)
    ncx0, ncx1 = max(cx0, xa), min(cx1, xb)
    origin = (origin[0] + ncy0 - cy0, origin[1] + ncx0 - cx0)
    core = (slice(ncy0 - ya, ncy1 - ya), slice(ncx0 - xa, ncx1 - xa))
    res = spatial_residuals(sci, err, dispersion_axis=prof.dispersion_axis, sky_window=p.sky_window_px,
                            min_sky_pixels=p.min_sky_pixels, remove_line_offsets=p.remove_line_offsets,
                            clip_sigma=p.clip_sigma)
    trace = trace_mask(res.sky, res.sigma, dispersion_axis=prof.dispersion_axis, sky_window=p.sky_window_px,
                       cross_window=p.trace_cross_window_px, nsigma=p.trace_sigma,
                       min_length=p.trace_min_length_px, margin=p.trace_margin_px)
    cy, cx = core
    r = res.resid[:, cy, cx]
    s = res.sigma[:, cy, cx]
    sky = res.sky[:, cy, cx]
    trace = trace[:, cy, cx]
    sci_c, dq_c = sci[:, cy, cx], dq[:, cy, cx]
    ny, nx = r.shape[1:]
    y0, x0 = origin
    diag = {"trace_pixels": trace.sum(axis=(1, 2)).astype(np.int64),
            "transient_pixels": np.zeros(n_t, np.int64), "candidates": 0, "pixels": 0}

    records = []
    # 1. carried static pixels: input DQ bits set in every exposure that covers them
    sbits = _static_bits(sci_c, dq_c)
    carried = (sbits & np.uint32(STATIC_BITS)) != 0
    for yy, xx in zip(*np.nonzero(carried)):
        bits = int(sbits[yy, xx])
        names = [n for n in flags.names(bits) if n in flags.DEFECT_CLASSES]
        records.append({"y": y0 + int(yy), "x": x0 + int(xx), "flag": "+".join(names) or flags.names(bits)[-1],
                        "start_mjd": np.nan, "end_mjd": np.nan, "dq": bits, "amplitude": np.nan,
                        "significance": np.nan, "onset_significance": np.nan, "recovery_significance": np.nan,
                        "n_bad": int((np.isfinite(sci_c[:, yy, xx]) | (dq_c[:, yy, xx] != 0)).sum()),
                        "last_good_mjd": np.nan, "first_bad_mjd": np.nan, "first_good_mjd": np.nan,
                        "reason": "static: input DQ " + "|".join(flags.names(bits)), "carried": True})

    # 2. time series of every other pixel
    P = ny * nx
    r2 = r.reshape(n_t, P)
    s2 = s.reshape(n_t, P)
    sky2 = sky.reshape(n_t, P)
    tr2 = trace.reshape(n_t, P)
    valid = np.isfinite(r2) & np.isfinite(s2) & (s2 > 0)
    valid[:, carried.reshape(P)] = False
    # reference pixels see no light: never analysed (they are flagged in the input DQ anyway)
    ref = (sbits & np.uint32(flags.REFERENCE_PIXEL)) != 0
    xs_full = x0 + np.arange(nx)
    for a, b in prof.reference_columns:
        ref[:, (xs_full >= a) & (xs_full < b)] = True
    valid[:, ref.reshape(P)] = False
    # a "trace" present in most of a pixel's exposures is a defective column, not a source
    n_valid = valid.sum(axis=0)
    tr_frac = np.where(n_valid > 0, (tr2 & valid).sum(axis=0) / np.maximum(n_valid, 1), 0.0)
    tr2 = tr2 & (tr_frac <= p.trace_max_fraction)[None, :]
    diag["pixels"] = int((n_valid > 0).sum())

    # group pixels by the exposures that see them (footprints), so each group is gap-free
    has = n_valid > 0
    if not has.any():
        return _finish(records), diag
    packed = np.packbits(valid.T, axis=1)
    keys, inverse = np.unique(packed, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    rows_ev, rows_meta = [], []
    for g in range(keys.shape[0]):
        pix = np.flatnonzero((inverse == g) & has)
        if pix.size == 0:
            continue
        t_idx = np.flatnonzero(valid[:, pix[0]])
        if t_idx.size < p.min_bad_exposures:
            continue
        rg = r2[np.ix_(t_idx, pix)]
        sg = s2[np.ix_(t_idx, pix)]
        kg = sky2[np.ix_(t_idx, pix)]
        excl = tr2[np.ix_(t_idx, pix)].copy()
        rr = np.where(excl, np.nan, rg)
        trans = transients(rr, sg, kg, window=p.transient_window, nsigma=p.transient_sigma)
        n_tr = trans.sum(axis=0)
        keep_whole = n_tr > p.max_transients
        trans[:, keep_whole] = False
        np.add.at(diag["transient_pixels"], t_idx, trans.sum(axis=1))
        excl |= trans
        z = clipped_z(np.where(excl, np.nan, rg), sg, p.clip_sigma)
        stat = scan_statistic(z)
        cand = np.flatnonzero(stat >= p.screen_fraction * ctx.threshold)
        diag["candidates"] += int(cand.size)
        for j in cand:
            use = ~excl[:, j]
            ti = t_idx[use]
            ivs = pixel_intervals(rg[use, j], sg[use, j], kg[use, j], ctx)
            if not ivs:
                continue
            yy, xx = divmod(int(pix[j]), nx)
            for iv in ivs:
                rows_ev.append(iv)
                rows_meta.append((yy, xx, ti, t_idx))
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
    """Tile (ty, tx) whose arrays for all exposures fit the memory budget.

    Sizes are divisors of the stored chunk so that tiles never straddle chunks unevenly.
    ``bytes_per_value`` counts the input (sci, err, dq) and the intermediate float arrays per
    pixel and exposure.
    """
    budget = params.tile_memory_mb * 1e6
    cy, cx = chunk
    best = (1, 1)
    hy, hx = params.halo()
    for ty in sorted({d for d in range(1, cy + 1) if cy % d == 0}, reverse=True):
        for tx in sorted({d for d in range(1, cx + 1) if cx % d == 0}, reverse=True):
            if (ty + 2 * hy) * (tx + 2 * hx) * max(n_exposures, 1) * bytes_per_value <= budget:
                if ty * tx > best[0] * best[1]:
                    best = (ty, tx)
    return best


def _tile_task(sci, err, dq, ctx, core, origin):
    return analyse_tile(sci, err, dq, ctx, core=core, origin=origin)


def detect_dataset(ds, profile=None, *, params: DetectionParams | None = None, tiles: tuple[int, int] | None = None,
                   progress: bool | None = None, **overrides) -> tuple[pd.DataFrame, dict]:
    """Defect intervals of a cube held in an xarray Dataset (numpy- or dask-backed).

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
        Tile size in pixels; default from ``tile_memory_mb`` and the number of exposures.
    progress : bool
        Show a progress bar (distributed.progress when a client is active); default when a
        distributed client is active.
    **overrides
        Single parameters, e.g. ``false_alarm_pixels=1.0``.

    Returns
    -------
    (intervals DataFrame, metadata dict)
    """
    import dask

    t0 = _time.time()
    prof = profiles.load(profile)
    p = params or DetectionParams.from_profile(prof, **overrides)
    if "mjd" in ds.coords:
        ds = ds.sortby("mjd")
    n_t = ds.sizes["time"]
    mjd = np.asarray(ds["mjd"].values, float)
    expstart = np.asarray(ds["expstart"].values, float) if "expstart" in ds.coords else mjd.copy()
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    ys = np.asarray(ds["y"].values, int) if "y" in ds.coords else np.arange(ny)
    xs = np.asarray(ds["x"].values, int) if "x" in ds.coords else np.arange(nx)
    n_pix = int(np.prod(prof.frame_shape))
    thr = p.threshold(n_pix, n_t)
    ctx = TileContext(expstart=expstart, mjd=mjd, params=p, profile=prof, threshold=thr)
    chunk = (256, 258)
    if getattr(ds["sci"].data, "chunks", None) is not None:
        chunk = (ds["sci"].data.chunks[1][0], ds["sci"].data.chunks[2][0])
    ty, tx = tiles or tile_shape(n_t, p, chunk)
    hy, hx = p.halo()
    if prof.dispersion_axis == "x":
        hy, hx = hx, hy
    tasks = []
    for a in range(0, ny, ty):
        for b in range(0, nx, tx):
            ya, yb = max(0, a - hy), min(ny, a + ty + hy)
            xa, xb = max(0, b - hx), min(nx, b + tx + hx)
            core = (slice(a - ya, a - ya + min(ty, ny - a)), slice(b - xa, b - xa + min(tx, nx - b)))
            sub = ds.isel(y=slice(ya, yb), x=slice(xa, xb))
            args = [sub[v].data for v in ("sci", "err", "dq")]
            origin = (int(ys[a]), int(xs[b]))
            tasks.append(dask.delayed(_tile_task, pure=True)(*args, ctx, core, origin))
    results = _compute(tasks, progress)
    frames = [r[0] for r in results if len(r[0])]
    iv = pd.concat(frames, ignore_index=True) if frames else empty_intervals()
    iv = iv.sort_values(["y", "x", "start_mjd"], na_position="first", kind="stable").reset_index(drop=True)
    trace_px = np.sum([r[1]["trace_pixels"] for r in results], axis=0) if results else np.zeros(n_t)
    trans_px = np.sum([r[1]["transient_pixels"] for r in results], axis=0) if results else np.zeros(n_t)
    names = ds["filename"].values if "filename" in ds.coords else np.arange(n_t).astype(str)
    nonblank = [{"exposure": str(names[i]), "mjd": float(mjd[i]), "trace_pixels": int(trace_px[i]),
                 "reason": "source trace or latent: a narrow, long bump of the sky across the dispersion; "
                           "these pixels were left out of the statistics for this exposure"}
                for i in np.flatnonzero(trace_px > 0)]
    meta = {
        "profile": prof.name, "n_exposures": int(n_t), "threshold_sigma": thr, "tiles": [int(ty), int(tx)],
        "n_tiles": len(tasks), "parameters": p.to_dict(),
        "pixels_analysed": int(sum(r[1]["pixels"] for r in results)),
        "candidates": int(sum(r[1]["candidates"] for r in results)),
        "intervals": int(len(iv)), "carried_static": int(iv["carried"].sum()) if len(iv) else 0,
        "by_class": {k: int(v) for k, v in iv.loc[~iv["carried"], "flag"].value_counts().items()} if len(iv) else {},
        "non_blank_exposures": nonblank,
        "transient_pixels_per_exposure": {str(names[i]): int(trans_px[i]) for i in range(n_t) if trans_px[i]},
        "seconds": round(_time.time() - t0, 2),
    }
    return iv, meta


def _compute(tasks, progress):
    import dask

    client = None
    try:
        from distributed import get_client

        client = get_client()
    except (ImportError, ValueError):
        client = None
    if client is not None:
        futures = client.compute(tasks)
        if progress is None or progress:
            from distributed import progress as dprogress

            dprogress(futures)
        return client.gather(futures)
    if progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar():
            return list(dask.compute(*tasks))
    return list(dask.compute(*tasks))


# --------------------------------------------------------------------------------------------
# the store


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
    The intervals table (also in ``STORE/intervals.parquet``). Every run recomputes everything
    from the whole cube (see docs/detection.md).
    """
    from .cube import open_cube

    ds = open_cube(store)
    if mode is None:
        mode = ds.attrs.get("mode") or ds.attrs.get("profile") or profiles.DEFAULT_MODE
        if isinstance(mode, dict):
            mode = mode.get("name", profiles.DEFAULT_MODE)
    prof = profiles.load(mode)
    iv, meta = detect_dataset(ds, prof, tiles=tiles, progress=progress, **overrides)
    st.write_table(store, st.INTERVALS, iv)
    meta["mask_cube"] = None
    if write_mask:
        try:
            from .maskcube import write_mask_cube
        except ImportError as e:  # the mask-cube module is built separately
            log.warning("mask cube not written: %s", e)
            meta["mask_cube"] = f"not written: {e}"
        else:
            from .cube import exposure_table

            write_mask_cube(store, iv, prof, exposures=exposure_table(store), min_epoch_days=min_epoch_days)
            meta["mask_cube"] = st.join(store, st.MASK)
    st.write_json(store, st.DETECT_META, meta)
    return iv


def open_intervals(store: str) -> pd.DataFrame:
    """The defect-intervals table of a store (one row per pixel and bad interval)."""
    return st.read_table(store, st.INTERVALS)
