"""The mask cube: defect intervals -> epochs -> one full-frame DQ mask per epoch.

Flow (each step a pure function of numpy/pandas data, composed by :func:`plan_epochs`)::

    intervals + exposures
      | prepare_*          checked tables: each interval's DQ bits, each exposure's start,
      |                    mid-time, exposure time and footprint
      | raw_epochs         which bits each pixel has in each exposure (contract rule: bad when
      |                    start_mjd <= mid-time < end_mjd); a new epoch wherever any pixel's
      |                    state changes between consecutive exposures
      | best_segmentation  optional merging (minimum epoch length, maximum number of epochs):
      |                    a dynamic program choosing the merges that wrongly flag or miss the
      |                    fewest pixel-exposures, each weighted by its exposure time
      v
    EpochPlan  ->  write_mask_cube  ->  STORE/detect/RUN/mask   (zarr v3, dq (time, y, x) uint32)

Time rules (shared by ``mask_at``, ``lrscube apply`` and the CRDS export, so all three pick the
same mask for a given exposure):

* An epoch's ``time`` is the START time (EXPSTART) of its first exposure, rounded DOWN to the
  whole second, because CRDS USEAFTER has one-second resolution and CRDS compares it with the
  exposure start (DATE-OBS/TIME-OBS). Rounding down keeps USEAFTER <= that exposure's start.
* An exposure gets the epoch with the latest ``time`` at or before its START time.
* Before the first epoch: the mask cube is valid from ``valid_from`` (attribute; by default the
  UTC date of the first exposure at 00:00:00). Between ``valid_from`` and the first exposure the
  first epoch applies (defects present at the first exposure are assumed present already;
  those that appeared later are not). Before ``valid_from`` lrscube makes no claim:
  :func:`mask_at` raises and ``apply`` skips the file, unless ``extrapolate=True`` (first epoch
  for any earlier time). The CRDS export gives its first file USEAFTER = ``valid_from``.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ..config import flags, profiles as _profiles
from ..times import DAY, MJD0, mjd_to_datetime64, datetime64_to_mjd, to_datetime64, _to_datetime64, _mjd_checked, floor_second, isot
from ..storage import provenance, store as st
from .delivery_rule import candidate_starts, fold_immaterial, pixels_wrong
from .. import __version__

log = logging.getLogger(__name__)

#: slack (days) when comparing an interval boundary with an exposure mid-time: 0.01 s
TIME_TOLERANCE_DAYS = 0.01 / DAY


def default_frame(frame_shape=None) -> tuple[int, int]:
    """``frame_shape``, or when it is not at hand (a store written without it) the default
    mode profile's frame."""
    return tuple(int(v) for v in (frame_shape if frame_shape is not None else _profiles.load().frame_shape))


#: the mask cube attributes that describe the detector (from its mode profile), so a MASK file
#: can be written from the mask cube alone
GEOMETRY_ATTRS = ("instrument", "detectors", "frame_shape", "reference_columns", "reference_rows", "axes",
                  "mask_keywords", "reference_pixel_bits")


def geometry_attrs(profile=None, frame_shape=None) -> dict:
    """The detector description a mask cube carries: its profile's (default profile without one)."""
    p = profile if profile is not None else _profiles.load()
    return {"instrument": p.instrument, "detectors": list(p.detectors),
            "frame_shape": list(frame_shape or p.frame_shape),
            "reference_columns": [list(r) for r in p.reference_columns],
            "reference_rows": [list(r) for r in p.reference_rows],
            "axes": list(p.axes), "mask_keywords": dict(p.mask_file),
            "reference_pixel_bits": int(p.reference_pixel_bits())}


def geometry_of(attrs: dict) -> dict:
    """A mask cube's detector description, the default profile's where a store lacks an entry."""
    need = [k for k in GEOMETRY_ATTRS if k not in attrs]
    return {**(geometry_attrs() if need else {}), **{k: attrs[k] for k in GEOMETRY_ATTRS if k in attrs}}


# --------------------------------------------------------------------------- exposures


def prepare_exposures(exposures: pd.DataFrame, frame_shape=None) -> pd.DataFrame:
    """Normalise an exposure table: sorted by start, with mid/start MJD, weight and footprint.

    Input columns used: ``mjd`` (mid-time) and/or ``expstart`` (start), ``exptime`` (s),
    ``program``, ``filename``, ``subarray``, and the footprint when present as ``y0, x0, ny, nx``
    (0-based) or ``substrt1, substrt2, subsize1, subsize2`` (1-based). FULL exposures cover the
    frame; an exposure of another subarray without footprint columns is counted over the whole
    frame (``footprint_known`` False). A missing exposure time gets the median of the others
    (1 s if none has one).
    """
    if exposures is None or len(exposures) == 0:
        raise ValueError("the exposure table is empty: the mask cube needs at least one exposure (ingest first, or pass exposures=...)")
    df = pd.DataFrame(exposures).reset_index(drop=True)
    cols = {c.lower(): c for c in df.columns}

    def col(name, default=np.nan):
        return df[cols[name]] if name in cols else pd.Series(default, index=df.index)

    exptime = pd.to_numeric(col("exptime"), errors="coerce").to_numpy(dtype="float64")
    mid = pd.to_numeric(col("mjd"), errors="coerce").to_numpy(dtype="float64")
    start = pd.to_numeric(col("expstart"), errors="coerce").to_numpy(dtype="float64")
    half = np.where(np.isfinite(exptime), exptime, 0.0) / 2 / DAY
    mid = np.where(np.isfinite(mid), mid, start + half)
    start = np.where(np.isfinite(start), start, mid - half)
    bad = ~np.isfinite(mid)
    if bad.any():
        raise ValueError(f"exposure table rows {np.flatnonzero(bad)[:10].tolist()} have neither mjd nor expstart")
    good_w = np.isfinite(exptime) & (exptime > 0)
    fill = float(np.median(exptime[good_w])) if good_w.any() else 1.0
    weight = np.where(np.isfinite(exptime) & (exptime >= 0), exptime, fill)

    ny_f, nx_f = default_frame(frame_shape)
    y0 = np.zeros(len(df), "int64")
    x0 = np.zeros(len(df), "int64")
    ny = np.full(len(df), ny_f, "int64")
    nx = np.full(len(df), nx_f, "int64")
    known = np.zeros(len(df), bool)
    subarray = col("subarray", "").fillna("").astype(str).str.strip().str.upper().to_numpy()
    if all(k in cols for k in ("y0", "x0", "ny", "nx")):
        vals = [pd.to_numeric(col(k), errors="coerce").to_numpy() for k in ("y0", "x0", "ny", "nx")]
        ok = np.all([np.isfinite(v) for v in vals], axis=0)
        y0[ok], x0[ok], ny[ok], nx[ok] = (v[ok].astype("int64") for v in vals)
        known |= ok
    elif all(k in cols for k in ("substrt1", "substrt2", "subsize1", "subsize2")):
        vals = [pd.to_numeric(col(k), errors="coerce").to_numpy() for k in ("substrt2", "substrt1", "subsize2", "subsize1")]
        ok = np.all([np.isfinite(v) for v in vals], axis=0)
        y0[ok], x0[ok] = vals[0][ok].astype("int64") - 1, vals[1][ok].astype("int64") - 1
        ny[ok], nx[ok] = vals[2][ok].astype("int64"), vals[3][ok].astype("int64")
        known |= ok
    known |= subarray == "FULL"

    out = pd.DataFrame({
        "mid": mid, "start": start, "exptime": exptime, "weight": weight,
        "y0": y0, "x0": x0, "ny": ny, "nx": nx, "footprint_known": known,
        "program": col("program", "").fillna("").astype(str).str.strip().to_numpy(),
        "filename": col("filename", "").fillna("").astype(str).to_numpy(),
        "subarray": subarray,
    })
    return out.sort_values(["start", "mid"], kind="mergesort").reset_index(drop=True)


# --------------------------------------------------------------------------- intervals -> states


def prepare_intervals(intervals: pd.DataFrame, profile=None, frame_shape=None) -> pd.DataFrame:
    """Check an intervals table and give each row its DQ bits (``dq``; else ``profile.flag_bits``)."""
    df = pd.DataFrame(intervals).reset_index(drop=True)
    missing = [c for c in ("y", "x", "flag", "start_mjd", "end_mjd") if c not in df.columns]
    if missing:
        raise ValueError(f"intervals table lacks columns {missing} (contract: y, x, flag, start_mjd, end_mjd[, dq])")
    y = pd.to_numeric(df["y"]).to_numpy().astype("int64")
    x = pd.to_numeric(df["x"]).to_numpy().astype("int64")
    frame_shape = default_frame(frame_shape if frame_shape is not None else getattr(profile, "frame_shape", None))
    outside = (y < 0) | (y >= frame_shape[0]) | (x < 0) | (x >= frame_shape[1])
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(f"intervals row {i}: pixel (y={y[i]}, x={x[i]}) is outside the {frame_shape[0]}x{frame_shape[1]} frame")
    dq = np.zeros(len(df), "uint32")
    if "dq" in df.columns:
        given = pd.to_numeric(df["dq"], errors="coerce").to_numpy()
        ok = np.isfinite(given) & (given > 0)
        dq[ok] = given[ok].astype("uint64").astype("uint32")
    else:
        ok = np.zeros(len(df), bool)
    if (~ok).any():
        if profile is None:
            bits = {f: flags.value(f) for f in pd.unique(df["flag"][~ok])}
        else:
            bits = {f: profile.flag_bits(f) for f in pd.unique(df["flag"][~ok])}
        dq[~ok] = [bits[f] for f in df["flag"][~ok]]
    return pd.DataFrame({
        "y": y, "x": x, "flag": df["flag"].astype(str).to_numpy(), "dq": dq,
        "start_mjd": pd.to_numeric(df["start_mjd"], errors="coerce").to_numpy("float64"),
        "end_mjd": pd.to_numeric(df["end_mjd"], errors="coerce").to_numpy("float64"),
    })


@dataclass
class RawEpochs:
    """Epochs as found: a new one wherever any pixel's DQ state changes between exposures.

    Pixels whose state never changes over the exposures are kept apart (``static_*``), so the
    per-epoch arrays hold only the pixels that do change.
    """

    ys: np.ndarray  # (P,) 0-based rows of the pixels whose state changes
    xs: np.ndarray  # (P,)
    values: np.ndarray  # (E, P) uint32 state of each such pixel in each epoch
    first_exposure: np.ndarray  # (E,) index (into the sorted exposures) of each epoch's first exposure
    exposure_epoch: np.ndarray  # (N,) epoch of each exposure
    times: np.ndarray  # (E,) datetime64[s]: first exposure's start, rounded down to the second
    static_ys: np.ndarray = field(default_factory=lambda: np.zeros(0, "int64"))
    static_xs: np.ndarray = field(default_factory=lambda: np.zeros(0, "int64"))
    static_values: np.ndarray = field(default_factory=lambda: np.zeros(0, "uint32"))  # same in every epoch


def raw_epochs(intervals: pd.DataFrame, exposures: pd.DataFrame) -> RawEpochs:
    """Cut the exposure sequence into epochs of constant mask.

    ``intervals`` from :func:`prepare_intervals`, ``exposures`` from :func:`prepare_exposures`.
    A pixel is bad (its ``dq`` bits set) in exposure i when ``start_mjd <= mid_i < end_mjd``
    (NaN start: from before the first exposure; NaN end: to after the last), up to 0.01 s.
    """
    n = len(exposures)
    mid = np.maximum.accumulate(exposures["mid"].to_numpy())  # monotonic for searchsorted
    t = mid + TIME_TOLERANCE_DAYS
    s = intervals["start_mjd"].to_numpy()
    e = intervals["end_mjd"].to_numpy()
    i0 = np.where(np.isfinite(s), np.searchsorted(t, np.nan_to_num(s), side="left"), 0)
    i1 = np.where(np.isfinite(e), np.searchsorted(t, np.nan_to_num(e), side="left"), n)
    keep = i0 < i1  # an interval between two exposures flags nothing
    iv = intervals[keep]
    i0, i1 = i0[keep].astype("int64"), i1[keep].astype("int64")

    key = iv["y"].to_numpy() * 1_000_000 + iv["x"].to_numpy()
    dq = iv["dq"].to_numpy()
    # a pixel whose intervals all cover every exposure never changes: keep it out of the matrix
    covers_all = (i0 == 0) & (i1 == n)
    moving = np.isin(key, np.unique(key[~covers_all]))
    skey = key[~moving]
    spix, sinv = np.unique(skey, return_inverse=True)
    svals = np.zeros(len(spix), "uint32")
    np.bitwise_or.at(svals, sinv.ravel(), dq[~moving].astype("uint32"))

    key, dq, i0, i1 = key[moving], dq[moving], i0[moving], i1[moving]
    pix, col = np.unique(key, return_inverse=True)
    col = col.ravel()
    ys, xs = (pix // 1_000_000).astype("int64"), (pix % 1_000_000).astype("int64")

    # candidate rows: exposure indices where some interval begins or ends
    cand = np.unique(np.concatenate([[0], i0[i0 > 0], i1[i1 < n]])).astype("int64")
    r0 = np.searchsorted(cand, i0)
    r1 = np.searchsorted(cand, i1)  # i1 == n -> len(cand)
    vals = np.zeros((len(cand), len(pix)), "uint32")
    for d in np.unique(dq):
        sel = dq == d
        diff = np.zeros((len(cand) + 1, len(pix)), "int32")
        np.add.at(diff, (r0[sel], col[sel]), 1)
        np.add.at(diff, (r1[sel], col[sel]), -1)
        active = np.cumsum(diff, axis=0, out=diff)[:-1] > 0
        vals[active] |= np.uint32(d)
    change = np.ones(len(cand), bool)
    change[1:] = np.any(vals[1:] != vals[:-1], axis=1)
    first = cand[change]
    values = vals[change]
    exposure_epoch = np.searchsorted(first, np.arange(n), side="right") - 1
    times = floor_second(mjd_to_datetime64(exposures["start"].to_numpy()[first]))
    return RawEpochs(ys=ys, xs=xs, values=values, first_exposure=first,
                     exposure_epoch=exposure_epoch, times=times,
                     static_ys=(spix // 1_000_000).astype("int64"), static_xs=(spix % 1_000_000).astype("int64"),
                     static_values=svals)


def epoch_weights(raw: RawEpochs, exposures: pd.DataFrame, weight: str = "weight") -> tuple[np.ndarray, np.ndarray]:
    """How much data each epoch holds for each pixel, by footprint group.

    Returns ``(wg, group)``: ``wg[e, g]`` = sum of ``exposures[weight]`` (exposure time, or 1 per
    exposure with ``weight=None``) over the exposures of epoch e with footprint g, and
    ``group[p]`` = a footprint-pattern index such that pixel p's weight in epoch e is
    ``wg_pix[e, group[p]]`` (see :func:`pixel_weights`).
    """
    E = len(raw.first_exposure)
    if len(raw.ys) == 0:
        return np.zeros((E, 1)), np.zeros(0, "int64")
    fp = exposures[["y0", "x0", "ny", "nx"]].to_numpy()
    ufp, fp_idx = np.unique(fp, axis=0, return_inverse=True)
    fp_idx = fp_idx.ravel()
    w = np.ones(len(exposures)) if weight is None else exposures[weight].to_numpy(dtype="float64")
    wg = np.zeros((E, len(ufp)))
    for g in range(len(ufp)):
        sel = fp_idx == g
        wg[:, g] = np.bincount(raw.exposure_epoch[sel], weights=w[sel], minlength=E)
    # inside[g, p]: footprint g covers pixel p; pixels with the same coverage pattern share weights
    y, x = raw.ys, raw.xs
    inside = ((y[None] >= ufp[:, 0:1]) & (y[None] < ufp[:, 0:1] + ufp[:, 2:3])
              & (x[None] >= ufp[:, 1:2]) & (x[None] < ufp[:, 1:2] + ufp[:, 3:4]))
    patterns, group = np.unique(inside.T, axis=0, return_inverse=True)
    wpat = wg @ patterns.T.astype("float64")  # (E, n_patterns)
    return wpat, group.ravel()


# --------------------------------------------------------------------------- merging


def canonical_codes(values: np.ndarray, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, number its distinct values in order of first appearance.

    Returns ``codes`` (E, P) int and ``table`` (P, K) uint32 with ``table[p, codes[e, p]] ==
    values[e, p]`` (unused slots 0). Pixels whose values change at the same epochs in the same
    pattern get the same code column, whatever their bits. Works on ``chunk`` pixels at a time.
    """
    E, P = values.shape
    codes = np.zeros((E, P), "int32")
    if P == 0 or E == 0:
        return codes, np.zeros((P, 1), "uint32")
    tables = []
    for p0 in range(0, P, chunk):
        v = values[:, p0:p0 + chunk]
        c = v.shape[1]
        pix = np.broadcast_to(np.arange(c, dtype="int64")[None], (E, c)).ravel()
        ep = np.broadcast_to(np.arange(E, dtype="int64")[:, None], (E, c)).ravel()
        key = (pix << 32) | v.astype("int64").ravel()
        ukey, inv = np.unique(key, return_inverse=True)
        inv = inv.ravel()
        first = np.full(len(ukey), E, "int64")
        np.minimum.at(first, inv, ep)
        upix = ukey >> 32
        order = np.lexsort((first, upix))  # by pixel, then by first appearance
        spix = upix[order]
        rank = np.empty(len(ukey), "int64")
        rank[order] = np.arange(len(ukey)) - np.searchsorted(spix, spix, side="left")
        table = np.zeros((c, int(rank.max()) + 1), "uint32")
        table[upix, rank] = (ukey & 0xFFFFFFFF).astype("uint32")
        codes[:, p0:p0 + c] = rank[inv].reshape(E, c)
        tables.append(table)
    K = max(t.shape[1] for t in tables)
    return codes, np.concatenate([np.pad(t, ((0, 0), (0, K - t.shape[1]))) for t in tables])


def segment_cost_matrix(codes: np.ndarray, wpat: np.ndarray, group: np.ndarray) -> np.ndarray:
    """``C[a, b]`` = least weight of pixel-exposures a single mask for epochs a..b gets wrong.

    For one pixel and one merged segment, the best single value is the one with the most
    weight (exposure time) in the segment; the cost is the weight of the others. Pixels with
    identical (code column, footprint group) share one term, counted with multiplicity.

    A pixel's codes form runs (constant stretches between its changes). A segment that starts
    in run i and ends in run j > i costs the same function of (first partial run, last partial
    run, whole runs between) over the rectangle of such (a, b), so each pixel adds a few
    rectangle updates whose total area is at most E^2/2 and in practice far less (a pixel
    that changes once at epoch c touches only c * (E - c) cells).
    """
    E, P = codes.shape
    C = np.zeros((E, E))
    if P == 0 or E < 2:
        return C
    varying = np.any(codes != codes[:1], axis=0)
    if not varying.any():
        return C
    sig = np.vstack([codes[:, varying], group[varying][None]]).T
    usig, mult = np.unique(sig, axis=0, return_counts=True)
    pref = np.vstack([np.zeros((1, wpat.shape[1])), np.cumsum(wpat, axis=0)])  # (E+1, groups)
    for row, n in zip(usig, mult):
        k, g = row[:-1], int(row[-1])
        P_ = pref[:, g]
        cuts = np.concatenate([[0], np.flatnonzero(k[1:] != k[:-1]) + 1, [E]])
        rk = k[cuts[:-1]]  # code of each run
        R = P_[cuts[1:]] - P_[cuts[:-1]]  # weight of each run
        ncodes = int(rk.max()) + 1
        for i in range(len(rk) - 1):
            a0, a1 = cuts[i], cuts[i + 1]
            F = P_[a1] - P_[a0:a1]  # weight of run i from a to its end, for each a
            M = np.zeros(ncodes)  # whole runs strictly between i and j, per code
            for j in range(i + 1, len(rk)):
                b0, b1 = cuts[j], cuts[j + 1]
                L = P_[b0 + 1:b1 + 1] - P_[b0]  # weight of run j from its start to b, for each b
                if ncodes == 2:  # the common case (onset, onset + recovery): cost = min(X0, X1)
                    X0 = np.add.outer(F if rk[i] == 0 else np.zeros_like(F), L if rk[j] == 0 else np.zeros_like(L))
                    X1 = np.add.outer(F if rk[i] == 1 else np.zeros_like(F), L if rk[j] == 1 else np.zeros_like(L))
                    X0 += M[0]
                    X1 += M[1]
                    np.minimum(X0, X1, out=X0)
                    X0 *= n
                    C[a0:a1, b0:b1] += X0
                else:
                    X = np.broadcast_to(M[:, None, None], (ncodes, a1 - a0, b1 - b0)).copy()
                    X[rk[i]] += F[:, None]
                    X[rk[j]] += L[None, :]
                    C[a0:a1, b0:b1] += n * (X.sum(0) - X.max(0))
                M[rk[j]] += R[j]
    return C


def best_segmentation(C: np.ndarray, times_s: np.ndarray, min_epoch_days: float = 0.0,
                      max_epochs: int | None = None,
                      allowed_starts: np.ndarray | None = None) -> tuple[list[tuple[int, int]], float]:
    """Cheapest cut of epochs 0..E-1 into contiguous segments (dynamic program).

    A segment a..b is allowed when it is the last one or when the next segment starts at least
    ``min_epoch_days`` (and at least one second, the USEAFTER resolution) after it starts, and
    (with ``allowed_starts``, (E,) bool) when a segment may start at epoch a (epoch 0 always).
    At most ``max_epochs`` segments. Among equally cheap cuts the one with fewer segments wins.
    ``times_s`` are epoch starts as datetime64. Returns ([(a, b), ...], cost).
    """
    E = C.shape[0]
    if E == 0:
        return [], 0.0
    T = np.asarray(times_s, dtype="datetime64[s]").astype("int64").astype("float64")
    min_len = max(float(min_epoch_days) * DAY, 1.0)
    a_idx, b_idx = np.meshgrid(np.arange(E), np.arange(E), indexing="ij")
    nxt = np.append(T[1:], np.inf)  # start of epoch b+1
    valid = (b_idx >= a_idx) & ((b_idx == E - 1) | (nxt[b_idx] - T[a_idx] >= min_len))
    if allowed_starts is not None:
        ok = np.asarray(allowed_starts, bool).copy()
        ok[0] = True
        valid &= ok[a_idx]
    Cv = np.where(valid, C, np.inf)
    tol = 1e-9 * max(1.0, float(np.nanmax(np.where(np.isfinite(Cv), Cv, 0))))
    K = E if max_epochs is None else max(1, min(int(max_epochs), E))

    if K >= E:  # no limit on the count: 1-D DP on (cost, number of segments)
        g = np.full(E + 1, np.inf)
        nseg = np.zeros(E + 1, "int64")
        back = np.zeros(E, "int64")
        g[0] = 0.0  # g[b+1]: best cost covering epochs 0..b
        for b in range(E):
            cand = g[: b + 1] + Cv[: b + 1, b]  # segment a..b after cover of 0..a-1
            best = cand.min()
            ties = np.flatnonzero(cand <= best + tol)
            a = ties[np.argmin(nseg[ties])]
            g[b + 1], nseg[b + 1], back[b] = cand[a], nseg[a] + 1, a
        segs, b = [], E - 1
        while b >= 0:
            a = int(back[b])
            segs.append((a, b))
            b = a - 1
        return segs[::-1], float(g[E])

    f = np.full((K + 1, E), np.inf)  # f[j, b]: best cost covering 0..b with j segments
    arg = np.zeros((K + 1, E), "int64")
    f[1] = Cv[0]
    for j in range(2, K + 1):
        M = f[j - 1, :-1][:, None] + Cv[1:, :]  # row a-1 <-> segment a..b
        arg[j] = M.argmin(axis=0) + 1
        f[j] = M.min(axis=0)
    last = f[1:, E - 1]
    best = last.min()
    if not np.isfinite(best):
        raise ValueError("no allowed merge of the epochs (this should not happen: one epoch is always allowed)")
    j = int(np.flatnonzero(last <= best + tol)[0]) + 1  # fewest segments among the cheapest
    segs, b = [], E - 1
    while j >= 1:
        a = int(arg[j, b]) if j > 1 else 0
        segs.append((a, b))
        b, j = a - 1, j - 1
    return segs[::-1], float(best)


def segment_values(values: np.ndarray, wpix: np.ndarray, segments: list[tuple[int, int]],
                   codes_table: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The value each pixel gets in each merged segment: the one with the most weight there.

    ``wpix`` (E, P) is each pixel's weight per epoch. Ties (including no data at all) go to the
    value with more bits set numerically higher, so a tie flags rather than clears.
    ``codes_table``: :func:`canonical_codes` of ``values`` when the caller has it already.
    Returns (S, P) uint32.
    """
    if all(a == b for a, b in segments):
        return values[[a for a, _ in segments]].copy()
    codes, table = codes_table if codes_table is not None else canonical_codes(values)
    K = table.shape[1]
    out = np.zeros((len(segments), values.shape[1]), "uint32")
    for s, (a, b) in enumerate(segments):
        if a == b:
            out[s] = values[a]
            continue
        cs = codes[a:b + 1]
        onehot = cs[..., None] == np.arange(K)
        w = (onehot * wpix[a:b + 1, :, None]).sum(0)  # (P, K)
        present = onehot.any(0)
        w = np.where(present, w, -np.inf)
        wmax = w.max(-1, keepdims=True)
        tied = present & (w >= wmax - 1e-9 * np.maximum(1.0, np.abs(wmax)))
        out[s] = np.where(tied, table, 0).max(-1)
    return out


def merge_cost(values: np.ndarray, merged: np.ndarray, segments: list[tuple[int, int]],
               wpix: np.ndarray) -> dict[str, float]:
    """What the merged masks get wrong, summed over pixel-exposures weighted by ``wpix``.

    ``wrongly_flagged``: truth good, mask flags; ``missed``: truth bad, mask clean;
    ``relabelled``: both flagged with different bits; ``total`` = their sum.
    """
    out = {"wrongly_flagged": 0.0, "missed": 0.0, "relabelled": 0.0}
    for s, (a, b) in enumerate(segments):
        if a == b:
            continue
        truth = values[a:b + 1]
        m = merged[s][None]
        w = wpix[a:b + 1]
        diff = truth != m
        out["wrongly_flagged"] += float(w[diff & (truth == 0)].sum())
        out["missed"] += float(w[diff & (m == 0)].sum())
        out["relabelled"] += float(w[diff & (truth != 0) & (m != 0)].sum())
    out["total"] = out["wrongly_flagged"] + out["missed"] + out["relabelled"]
    return out


def pixel_weights(wpat: np.ndarray, group: np.ndarray) -> np.ndarray:
    """(E, P) weight of each pixel in each epoch from :func:`epoch_weights`' output."""
    return wpat[:, group]


@dataclass
class EpochPlan:
    """The epochs a mask cube or a CRDS delivery uses, and what merging them cost."""

    exposures: pd.DataFrame  # prepared, sorted by start
    ys: np.ndarray  # (P,) pixels whose state changes
    xs: np.ndarray  # (P,)
    values: np.ndarray  # (S, P) uint32 merged masks at those pixels
    times: np.ndarray  # (S,) datetime64[s] epoch starts
    segments: list[tuple[int, int]]  # raw epochs a..b merged into each epoch
    raw: RawEpochs
    exposure_epoch: np.ndarray  # (N,) epoch of each exposure after merging
    cost: dict[str, Any] = field(default_factory=dict)
    min_epoch_days: float = 0.0
    max_epochs: int | None = None
    static_ys: np.ndarray = field(default_factory=lambda: np.zeros(0, "int64"))
    static_xs: np.ndarray = field(default_factory=lambda: np.zeros(0, "int64"))
    static_values: np.ndarray = field(default_factory=lambda: np.zeros(0, "uint32"))

    @property
    def n_epochs(self) -> int:
        return len(self.segments)

    def frame(self, s: int, frame_shape=None) -> np.ndarray:
        """Full-frame uint32 mask of epoch ``s``."""
        return render_frame(default_frame(frame_shape), self.static_ys, self.static_xs, self.static_values,
                            self.ys, self.xs, self.values[s])


def render_frame(frame_shape, static_ys, static_xs, static_values, ys, xs, values) -> np.ndarray:
    """A full-frame uint32 mask from the never-changing pixels and one epoch's changing ones."""
    out = np.zeros(tuple(frame_shape), "uint32")
    out[static_ys, static_xs] = static_values
    out[ys, xs] = values
    return out


def plan_epochs(intervals: pd.DataFrame, exposures: pd.DataFrame, profile=None,
                min_epoch_days: float = 0.0, max_epochs: int | None = None,
                baseline: np.ndarray | None = None, frame_shape=None, rule=None) -> EpochPlan:
    """Intervals + exposures -> epochs, merged as the limits ask at the least cost.

    ``baseline`` (full-frame uint32) is ORed into every state before costs are counted, so a
    pixel the baseline flags anyway costs nothing to merge. Costs are reported in pixel-seconds
    (exposure time) and in pixel-exposures, split into wrongly flagged / missed / relabelled,
    and in distinct pixels wrong for at least one exposure (``cost["pixels"]``).

    ``rule`` (:class:`lrscube.masks.delivery_rule.DeliveryRule`): plan a CRDS delivery. Epochs are
    then at least ``rule.min_interval_days`` apart (instead of ``min_epoch_days``), start only
    where the mask changes in the rule's regions, and each differs materially there from the
    one before (see :mod:`lrscube.masks.delivery_rule`).
    """
    frame_shape = tuple(frame_shape or (profile.frame_shape if profile is not None else default_frame()))
    exp = prepare_exposures(exposures, frame_shape)
    iv = prepare_intervals(intervals, profile, frame_shape)
    raw = raw_epochs(iv, exp)
    values = raw.values
    static_values = raw.static_values
    if baseline is not None:
        values = values | np.asarray(baseline, "uint32")[raw.ys, raw.xs][None]
        static_values = static_values | np.asarray(baseline, "uint32")[raw.static_ys, raw.static_xs]
    E = len(raw.first_exposure)
    wpat, group = epoch_weights(raw, exp, "weight")
    wpix = pixel_weights(wpat, group)
    secs = raw.times.astype("int64")
    if rule is not None:
        min_epoch_days = float(rule.min_interval_days)
        in_region = rule.region_frame(frame_shape)[raw.ys, raw.xs]
    needs_merge = E > 1 and (
        rule is not None
        or (max_epochs is not None and max_epochs < E)
        or bool(np.any(np.diff(secs) < max(float(min_epoch_days) * DAY, 1.0)))
        or bool(np.any(np.all(values[1:] == values[:-1], axis=1)))  # identical after the baseline
    )
    cost = {"pixel_seconds": _zero_cost(), "pixel_exposures": _zero_cost()}
    segs = [(e, e) for e in range(E)]
    codes_table = None
    if needs_merge:
        codes_table = canonical_codes(values)
        allowed = None
        if rule is not None:
            allowed = candidate_starts(values, in_region)
        segs, _ = best_segmentation(segment_cost_matrix(codes_table[0], wpat, group), raw.times, min_epoch_days,
                                    max_epochs, allowed_starts=allowed)
        if rule is not None:
            segs = fold_immaterial(segs, lambda a, b: segment_values(values, wpix, [(a, b)], codes_table)[0],
                                   in_region, rule.min_changed_pixels)
    merged = segment_values(values, wpix, segs, codes_table)
    wpat_n, group_n = epoch_weights(raw, exp, None)
    wpix_n = pixel_weights(wpat_n, group_n)
    if needs_merge:
        cost["pixel_seconds"] = merge_cost(values, merged, segs, wpix)
        cost["pixel_exposures"] = merge_cost(values, merged, segs, wpix_n)
    # the denominator of "missed": pixel-exposures the unmerged epochs flag among the changing pixels
    cost["pixel_exposures"]["bad"] = float(wpix_n[values != 0].sum())
    cost["pixels"] = pixels_wrong(values, merged, segs, wpix_n > 0, in_region if rule is not None else None)
    firsts = np.array([a for a, _ in segs], "int64")
    seg_of_raw = np.searchsorted(firsts, np.arange(E), side="right") - 1
    cost["n_raw_epochs"] = int(E)
    cost["n_epochs"] = len(segs)
    cost["footprints_known"] = bool(exp["footprint_known"].all())
    return EpochPlan(exposures=exp, ys=raw.ys, xs=raw.xs, values=merged,
                     times=raw.times[firsts], segments=segs, raw=raw,
                     exposure_epoch=seg_of_raw[raw.exposure_epoch], cost=cost,
                     min_epoch_days=float(min_epoch_days), max_epochs=max_epochs,
                     static_ys=raw.static_ys, static_xs=raw.static_xs, static_values=static_values)


def _zero_cost() -> dict[str, float]:
    return {"wrongly_flagged": 0.0, "missed": 0.0, "relabelled": 0.0, "total": 0.0}


# --------------------------------------------------------------------------- the mask cube


def mask_url(store: str) -> str | None:
    """Where the store's mask cube is (the last detect run's; None if that run wrote none)."""
    return st.output_url(store, st.MASK)


def _checksummed(ds: xr.Dataset) -> dict:
    """to_zarr encoding giving every variable's chunks a crc32c after zstd (zarr checks it on read)."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return {name: {"compressors": (ZstdCodec(level=0), Crc32cCodec())} for name in ds.variables}


def _default_valid_from(first_start: np.datetime64) -> np.datetime64:
    return np.datetime64(first_start, "D").astype("datetime64[s]")


def mask_dataset(plan: EpochPlan, profile=None, valid_from=None, frame_shape=None) -> xr.Dataset:
    """The mask cube as a (dask-backed) Dataset, ready for ``to_zarr``."""
    frame_shape = tuple(frame_shape or (profile.frame_shape if profile is not None else default_frame()))
    ny, nx = frame_shape
    start = plan.exposures["start"].to_numpy()
    mjd = np.atleast_1d(datetime64_to_mjd(plan.times))
    first_start = mjd_to_datetime64(start[0])[()]
    vf = floor_second(to_datetime64(valid_from))[()] if valid_from is not None else _default_valid_from(first_start)
    if vf > plan.times[0]:
        raise ValueError(f"valid_from {isot(vf)} is after the first epoch start {isot(plan.times[0])}")
    bits, epoch_vars = _epoch_variables(plan, frame_shape)
    ds = xr.Dataset(
        data_vars={**epoch_vars, **_exposure_variables(plan)},
        coords={
            "time": ("time", plan.times.astype("datetime64[ns]"),
                     {"long_name": "epoch start (first exposure start, rounded down to the second)"}),
            "mjd": ("time", mjd, {"long_name": "epoch start (MJD UTC)"}),
            "end_mjd": ("time", np.append(mjd[1:], np.nan), {"long_name": "next epoch start (MJD), NaN for the last"}),
            "y": ("y", np.arange(ny, dtype="int32"), {"long_name": "0-based full-frame row"}),
            "x": ("x", np.arange(nx, dtype="int32"), {"long_name": "0-based full-frame column"}),
            "flag": ("flag", np.array(bits, dtype=object)),
        },
        attrs={
            "title": "lrscube time-variable bad-pixel mask",
            "lrscube_version": __version__,
            "profile": getattr(profile, "name", ""),
            **geometry_attrs(profile, frame_shape),
            "do_not_use_policy": list(getattr(profile, "do_not_use", ())),
            "valid_from": isot(vf),
            "n_exposures": int(len(plan.exposures)),
            "first_exposure": isot(first_start),
            "last_exposure": isot(mjd_to_datetime64(start[-1])[()]),
            "first_exposure_mjd": float(start[0]),
            "last_exposure_mjd": float(start[-1]),
            "programs": sorted({p for p in plan.exposures["program"] if p}),
            "min_epoch_days": plan.min_epoch_days,
            "n_raw_epochs": int(plan.cost.get("n_raw_epochs", plan.n_epochs)),
            "merge_cost_pixel_seconds": plan.cost["pixel_seconds"],
            "merge_cost_pixel_exposures": plan.cost["pixel_exposures"],
            "footprints_known": bool(plan.cost.get("footprints_known", False)),
            "time_rule": ("an exposure gets the epoch with the latest time at or before its START "
                          "(EXPSTART); epoch time = first exposure start rounded down to the second; "
                          "between valid_from and the first epoch the first epoch applies"),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )
    ds["time"].encoding.update(units="seconds since 1858-11-17 00:00:00", dtype="int64", calendar="proleptic_gregorian")
    return ds


def _dq_frames(plan: EpochPlan, frame_shape: tuple[int, int]):
    """The epochs' full-frame DQ as a dask array (time, y, x), rendered one epoch per task."""
    import dask
    import dask.array as da

    ny, nx = frame_shape
    # One shared graph key holds the pixel lists and each pixel's changes (epoch, value): a few
    # per flagged pixel, where the (epochs x pixels) values grow as both (16 MB, and dask's
    # "large graph" warning, at 1,600 exposures). A task names its epoch.
    shared = dask.delayed((plan.static_ys, plan.static_xs, plan.static_values, plan.ys, plan.xs,
                           *value_changes(plan.values)), pure=True, traverse=False)
    frames = [da.from_delayed(dask.delayed(_render_epoch, pure=True)(frame_shape, shared, s),
                              shape=(ny, nx), dtype="uint32") for s in range(plan.n_epochs)]
    return da.stack(frames) if plan.n_epochs else da.zeros((0, ny, nx), "uint32")


def value_changes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(epoch, pixel, value)`` where each pixel's value in the (S, P) ``values`` changes, every
    pixel's first epoch included; sorted by epoch. :func:`values_at` inverts it."""
    values = np.asarray(values)
    changed = np.ones(values.shape, bool)
    changed[1:] = values[1:] != values[:-1]
    epoch, pixel = np.nonzero(changed)
    return epoch, pixel, values[epoch, pixel]


def values_at(s: int, epoch: np.ndarray, pixel: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Epoch ``s``'s values of every pixel from :func:`value_changes`: each pixel's last change at
    or before ``s``."""
    k = int(np.searchsorted(epoch, s, side="right"))
    # the last change per pixel is its first occurrence in the reversed prefix; every pixel has
    # one (its first epoch's), so np.unique's pixels are 0..P-1 in order
    _, first = np.unique(pixel[:k][::-1], return_index=True)
    return value[:k][::-1][first]


def _epoch_variables(plan: EpochPlan, frame_shape: tuple[int, int]) -> tuple[list[str], dict]:
    """The flag names counted and the per-epoch variables: DQ, exposures, exposure time, first
    and last exposure, pixels flagged (any bit, each bit), the unmerged epochs merged."""
    S, vals, exp = plan.n_epochs, plan.values, plan.exposures
    start = exp["start"].to_numpy()
    first = np.array([plan.raw.first_exposure[a] for a, _ in plan.segments], "int64")
    n_exp = np.bincount(plan.exposure_epoch, minlength=S)
    last = first + n_exp - 1
    static_counts = mask_counts(plan.static_values)
    epoch_counts = [mask_counts(vals[s]) for s in range(S)]
    bits = sorted({*static_counts, *(b for c in epoch_counts for b in c)}, key=flags.value)
    counts = np.array([[static_counts.get(b, 0) + epoch_counts[s].get(b, 0) for b in bits] for s in range(S)],
                      "int64").reshape(S, len(bits))
    n_flagged = np.count_nonzero(plan.static_values) + (np.count_nonzero(vals, axis=1) if vals.size
                                                        else np.zeros(S, "int64"))
    return bits, {
        "dq": (("time", "y", "x"), _dq_frames(plan, frame_shape),
               {"long_name": "JWST pixel DQ bits (stdatamodels dqflags.pixel) valid from time"}),
        "n_exposures": ("time", n_exp.astype("int64"), {"long_name": "exposures in the epoch"}),
        "exptime": ("time", np.bincount(plan.exposure_epoch, weights=exp["weight"].to_numpy(), minlength=S),
                    {"units": "s", "long_name": "summed exposure time of the epoch"}),
        "first_exposure_mjd": ("time", start[first], {"long_name": "start (MJD) of the epoch's first exposure"}),
        "last_exposure_mjd": ("time", start[last], {"long_name": "start (MJD) of the epoch's last exposure"}),
        "n_flagged": ("time", np.asarray(n_flagged, "int64"), {"long_name": "pixels with any bit set"}),
        "flag_count": (("time", "flag"), counts, {"long_name": "pixels with each bit set"}),
        "raw_epoch_first": ("time", np.array([a for a, _ in plan.segments], "int64"),
                            {"long_name": "first unmerged epoch in this epoch"}),
        "raw_epoch_last": ("time", np.array([b for _, b in plan.segments], "int64")),
    }


def _exposure_variables(plan: EpochPlan) -> dict:
    """The per-exposure variables: times, exposure time, epoch, program, file, subarray, footprint."""
    exp = plan.exposures
    return {
        "exposure_mjd": ("exposure", exp["mid"].to_numpy(), {"long_name": "mid-time (MJD)"}),
        "exposure_expstart": ("exposure", exp["start"].to_numpy(), {"long_name": "start time (MJD)"}),
        "exposure_exptime": ("exposure", exp["exptime"].to_numpy(), {"units": "s"}),
        "exposure_epoch": ("exposure", plan.exposure_epoch.astype("int64")),
        "exposure_program": ("exposure", exp["program"].to_numpy().astype(object)),
        "exposure_filename": ("exposure", exp["filename"].to_numpy().astype(object)),
        "exposure_subarray": ("exposure", exp["subarray"].to_numpy().astype(object)),
        "exposure_footprint": (("exposure", "corner"),
                               np.where(exp["footprint_known"].to_numpy()[:, None],
                                        exp[["y0", "x0", "ny", "nx"]].to_numpy(), -1).astype("int64"),
                               {"long_name": "y0, x0, ny, nx (0-based; -1 unknown)"}),
    }


def _render_epoch(frame_shape, shared, s):
    sy, sx, sv, ys, xs, epoch, pixel, value = shared
    return render_frame(frame_shape, sy, sx, sv, ys, xs, values_at(s, epoch, pixel, value))


def write_mask_cube(store: str, intervals: pd.DataFrame, profile=None, exposures: pd.DataFrame | None = None,
                    min_epoch_days: float = 0.0, valid_from=None, run: str | None = None) -> xr.Dataset:
    """Build the mask cube from the intervals table and make it the store's mask cube.

    Written whole into a detect run's folder (``STORE/detect/RUN/mask``, every chunk with a
    crc32c), together with these intervals, and then committed by detect.json naming that
    folder (:func:`lrscube.storage.store.publish_detect`): readers see the old mask cube or the new one,
    never a mix. With ``run`` (what :func:`lrscube.detection.detect.detect` passes) only the mask is
    written into that run's folder and the caller commits.

    Parameters
    ----------
    store : str
        lrscube store (path or fsspec URL).
    intervals : DataFrame
        ``y, x, flag, start_mjd, end_mjd[, dq]`` (design contract).
    profile : Profile or str, optional
        Mode profile (frame shape, detector, DO_NOT_USE policy when ``dq`` is absent).
    exposures : DataFrame, optional
        Per-exposure table (``mjd``, ``expstart``, ``exptime``, ``program``, ``filename``,
        ``subarray``...). Default: ``lrscube.storage.cube.exposure_table(store)``.
    min_epoch_days : float
        Merge epochs shorter than this many days (the last epoch is exempt) at the least cost.
    valid_from : time, optional
        Earliest time the first epoch applies to; default the first exposure's UTC date, 00:00.

    Returns the written Dataset (lazy). Example::

        >>> write_mask_cube("run.zarr", intervals, "lrs", exposures)  # doctest: +SKIP
        >>> open_mask("run.zarr").dq.sel(time="2023-05-01", method="ffill")  # doctest: +SKIP
    """
    profile = _profiles.load(profile)
    if exposures is None:
        try:
            from ..storage.cube import exposure_table

            exposures = exposure_table(store)
        except Exception as e:
            raise ValueError(f"write_mask_cube needs the exposure table: pass exposures=..., or ingest "
                             f"into {store} first ({type(e).__name__}: {e})") from None
    plan = plan_epochs(intervals, exposures, profile, min_epoch_days=min_epoch_days)
    ds = mask_dataset(plan, profile, valid_from=valid_from)

    prov = provenance.current()
    if prov is not None:  # the run that made this cube, quoted by the MASK files' HISTORY
        ds.attrs["run"] = prov.brief()
    commit = run is None
    if commit:
        run = st.new_run_id()
        st.write_table(st.run_url(store, run), st.INTERVALS, pd.DataFrame(intervals))
    url = st.run_url(store, run, st.MASK)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
        ds.to_zarr(st.zarr_store(url), mode="w", zarr_format=3, consolidated=False, encoding=_checksummed(ds))
    _seal_mask(url)
    if commit:
        meta = {k: v for k, v in (st.detect_meta(store) or {}).items() if k not in ("run", "outputs")}
        meta["mask_cube"] = url
        with st.writer_lock(store, st.DETECT_LOCK, "detect"):
            st.publish_detect(store, run, meta)
            st.clean_detect_runs(store)
    log.info("mask cube: %d epochs (%d before merging) from %d exposures -> %s",
             plan.n_epochs, len(plan.raw.first_exposure), len(plan.exposures), url)
    return _open_mask_url(url, store)


def open_mask(store: str) -> xr.Dataset:
    """The mask cube as a lazy xarray Dataset: ``dq (time, y, x)`` uint32, ``time`` = epoch start.

    ``open_mask(store).dq.sel(time=t, method="ffill")`` is the mask for an exposure starting at t
    (t at or after the first epoch; see :func:`mask_at` for earlier times).
    """
    url = mask_url(store)
    if url is None:
        raise FileNotFoundError(f"{st.join(store, st.DETECT_META)}: the last detect run wrote no mask cube "
                                f"(it ran with --no-mask); run `lrscube detect --store {store}`")
    return _open_mask_url(url, store)


def _seal_mask(url: str) -> None:
    """Record the checksums of the mask cube's metadata (group attributes, every array's
    zarr.json) in its group attributes; :func:`open_mask` checks them."""
    import zarr

    g = zarr.open_group(st.zarr_store(url), mode="r+")
    names = sorted(k for k, _ in g.arrays())
    g.attrs[st.METADATA_CRC] = st.seal_metadata(url, names, volatile=())


def _open_mask_url(url: str, store: str) -> xr.Dataset:
    import zarr

    try:
        crcs = zarr.open_group(st.zarr_store(url, read_only=True), mode="r").attrs.get(st.METADATA_CRC)
    except (FileNotFoundError, KeyError, ValueError, zarr.errors.GroupNotFoundError):
        crcs = None
    if crcs:
        st.check_metadata(url, crcs, volatile=())
    try:
        # one dask chunk per epoch's whole frame (the stored object), as open_cube per exposure
        ds = xr.open_zarr(st.zarr_store(url, read_only=True), consolidated=False, zarr_format=3,
                          chunks={"y": -1, "x": -1})
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise FileNotFoundError(f"{url}: no mask cube here (run `lrscube detect --store {store}` first) ({e})") from None
    ds.attrs.pop(st.METADATA_CRC, None)
    for name in ("exposure_program", "exposure_filename", "exposure_subarray", "flag"):
        if name in ds.variables:
            ds[name] = (ds[name].dims, np.array([str(v) for v in ds[name].values], dtype=object))
    return ds


class BeforeValidity(ValueError):
    """A time before the mask's validity. ``reason`` says so; each caller adds what its user can
    do instead (``hint``)."""

    def __init__(self, reason: str, hint: str = ""):
        super().__init__(f"{reason}; {hint}" if hint else reason)
        self.reason = reason


#: what a caller of :func:`select_epoch` can do (the API's keyword and the commands' option)
EXTRAPOLATE_HINT = "extrapolate=True (--extrapolate) uses the first epoch's mask"


def select_epoch(ds: xr.Dataset, time: Any, extrapolate: bool = False) -> tuple[int, bool]:
    """Index of the epoch for an exposure STARTING at ``time`` and whether time < first epoch.

    Raises :class:`BeforeValidity` (a ValueError) before ``valid_from`` unless ``extrapolate``.
    """
    t = to_datetime64(time)
    times = ds["time"].values.astype("datetime64[us]")
    i = int(np.searchsorted(times, t, side="right")) - 1
    if i >= 0:
        return i, False
    vf = np.datetime64(ds.attrs.get("valid_from", str(times[0])), "us")
    if t >= vf or extrapolate:
        return 0, True
    raise BeforeValidity(f"time {isot(t)} is before the mask's validity (valid_from {ds.attrs.get('valid_from')}, "
                         f"first exposure {ds.attrs.get('first_exposure')})", EXTRAPOLATE_HINT)


def useafter_of(ds: xr.Dataset, i: int) -> str:
    """USEAFTER of epoch ``i`` as the CRDS export writes it (first epoch: ``valid_from``)."""
    if i == 0:
        return str(ds.attrs.get("valid_from") or isot(ds["time"].values[0]))
    return isot(ds["time"].values[i])


def mask_at(store: str | xr.Dataset, time: Any, extrapolate: bool = False) -> xr.DataArray:
    """The full-frame mask (y, x) uint32 for an exposure starting at ``time``.

    ``time``: ISO date/time string, MJD (number or numeric string), datetime, numpy.datetime64,
    pandas.Timestamp or astropy Time, UTC. The attrs say which epoch it is (``epoch``,
    ``epoch_start``, ``useafter`` as the CRDS file has it, ``before_first_epoch``).

    Example::

        >>> m = mask_at("run.zarr", "2023-05-01T12:00:00")  # doctest: +SKIP
        >>> int((m & 1 > 0).sum())  # DO_NOT_USE pixels  # doctest: +SKIP
    """
    t = to_datetime64(time)
    latest = np.datetime64(datetime.now(timezone.utc).replace(tzinfo=None), "us") + np.timedelta64(1, "D")
    if t > latest:
        raise ValueError(f"time {time!r} ({isot(t)}) is after now + 1 day: no exposure starts then, and the "
                         "mask of a later time is not known yet")
    ds = store if isinstance(store, xr.Dataset) else open_mask(store)
    i, before = select_epoch(ds, t, extrapolate)
    da_ = ds["dq"].isel(time=i).load()
    da_.attrs = {
        "epoch": i,
        "n_epochs": int(ds.sizes["time"]),
        "epoch_start": isot(ds["time"].values[i]),
        "epoch_end": "" if i + 1 >= ds.sizes["time"] else isot(ds["time"].values[i + 1]),
        "useafter": useafter_of(ds, i),
        "requested_time": str(to_datetime64(time)),
        "before_first_epoch": bool(before),
        "epoch_n_exposures": int(ds["n_exposures"].values[i]),
        "epoch_first_exposure": isot(mjd_to_datetime64(ds["first_exposure_mjd"].values[i])[()]),
        "epoch_last_exposure": isot(mjd_to_datetime64(ds["last_exposure_mjd"].values[i])[()]),
        **{k: v for k, v in geometry_of(ds.attrs).items() if k != "detectors"},
        "detector": str(geometry_of(ds.attrs)["detectors"][0]),
        "long_name": "JWST pixel DQ bits (stdatamodels dqflags.pixel)",
        "store": "" if isinstance(store, xr.Dataset) else str(store),
        "detect_run": dict(ds.attrs.get("run") or {}),  # the run that wrote the mask cube
    }
    return da_


def summarize_mask(mask: xr.DataArray) -> str:
    """A few lines describing a mask from :func:`mask_at` (for ``lrscube mask-at``)."""
    v = np.asarray(mask.values, "uint32")
    a = mask.attrs
    lines = [f"epoch {a.get('epoch')} of {a.get('n_epochs')}: from {a.get('epoch_start')} "
             f"to {a.get('epoch_end') or 'now'} (USEAFTER {a.get('useafter')}), "
             f"{a.get('epoch_n_exposures')} exposures",
             f"requested {a.get('requested_time')}" + (" (before the first exposure: first epoch used)"
                                                      if a.get("before_first_epoch") else ""),
             f"{int(np.count_nonzero(v))} pixels flagged"]
    for name, n in mask_counts(v).items():
        lines.append(f"  {name:16s} {n}")
    return "\n".join(lines)


def mask_counts(v: np.ndarray) -> dict[str, int]:
    """Pixels with each DQ bit set (bits that occur)."""
    vals, n = np.unique(np.asarray(v, "uint32"), return_counts=True)
    out: dict[str, int] = {}
    for val, c in zip(vals, n):
        for name in flags.names(val):
            out[name] = out.get(name, 0) + int(c)
    return dict(sorted(out.items(), key=lambda kv: flags.value(kv[0])))


