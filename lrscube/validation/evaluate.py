"""Score detected defect intervals against a truth table (the simulator's), with two baselines.

Everything is counted over **pixel-exposures**: a pixel inside an exposure's footprint (finite
SCI or non-zero DQ) is bad or not in that exposure. Pixels flagged in the input DQ in every
exposure (the current static mask, carried into the output unchanged) are left out of every
count.

* precision: of the pixel-exposures flagged by the detector, the fraction bad in the truth
  (any truth defect, detectable or not);
* recall: of the pixel-exposures of **detectable** truth defects, the fraction flagged; also per
  truth class and for defects that appeared after the first exposure;
* new-defect recall: of the detectable truth defects with an onset after the first exposure,
  the fraction of which at least half of the pixel-exposures are flagged;
* onset error: for those found, first flagged exposure minus first truly bad exposure, counted
  in the exposures that see the pixel (median, and 90th percentile of its absolute value).

Beside these, from the same matrices:

* **per behaviour** (the truth's ``behaviour`` column, /work/TRUTH-SCHEMA.md): defects,
  detectable ones, recall, new-defect recall and onset error (median, 90th percentile);
* **normal pixels flagged**: of the pixels with no truth row (not carried from the input mask,
  not reference pixels) that the cube's exposures see, the fraction with any detected interval,
  and the same over pixel-exposures; ``mode`` names the profile, so that a run per mode gives
  the figure per mode;
* **look-alikes** (``truth/lookalikes``: one row per pixel-exposure of each must-not event):
  per behaviour, the fraction of its pixel-exposures flagged, leaving out pixel-exposures bad
  in the truth (a flag there is right).

**Detectable** (decided from the truth and the cube's ERR, never from the detector's output),
per behaviour by the evidence it leaves (:func:`detectable`):

* a **level shift** (steps, recoveries, drifts, clusters, ...) lasts ``MIN_EXPOSURES`` (3) or
  more exposures that see the pixel bad and its stacked significance

      S = sum_t min(A_t / ERR_t, clip) / sqrt(n)

  reaches ``MIN_SNR`` (5 sigma); ``A_t`` is the amplitude in DN/s for additive defects (scaled
  by the ramp of a drift, or the row's ``mean_excess_dn_s`` when the truth gives it, e.g. a
  telegraph switching within exposures), and the fractional deficit times the local sky
  (median SCI of the 14 neighbours along the dispersion) for DEAD and LOW_QE; a deficit below
  ``DEFICIT_FLOOR`` lies within a normal pixel's response and is not detectable;
* a **telegraph** (or any row whose ``high_mjd`` lists its high exposures) in its quiet state
  looks exactly like a good pixel, so only its span from the first to the last high state is
  detectable (:func:`detectable_span`), with ``A_t`` counted in the high exposures; for truth
  tables without states, a TELEGRAPH row's whole interval counts with half the clipped term;
* a **noisy** pixel (behaviour ``noisy``, or a row with a ``noise_factor``), whose mean stays
  normal: its excess variance sum_t (A_t / ERR_t)^2 / sqrt(2 n), A_t the rms of its excess
  scatter, reaches ``MIN_SNR`` over n >= 3 bad exposures (the chi-square excess in sigma).

``min_snr=None`` instead asks the detection threshold plus 2.33 sigma of a level shift (a
detector working at its threshold finds it with 99 % probability). Truth tables without a
``behaviour`` column get one from :func:`legacy_behaviour`.

Baselines scored in the same run:

* ``static``: the defects present at the first exposure (truth), flagged for all time: what a
  constant mask made at the start of the mission could at best do;
* ``selfcal``: per exposure, the residual against a median filter along the dispersion
  (kernel 15), flagging the most extreme 0.1 % at each tail, in the spirit of the pipeline's
  ``badpix_selfcal`` (which has no memory across time).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from ..config import profiles
from ..intervals import active
from ..detection.detection_params import DetectionParams
from ..detection.residuals import running_median
from ..detection.detect import open_intervals
from ..storage import store as st
from ..storage.cube import open_cube
from .sim_defects import parse_high_mjd

POWER_MARGIN_SIGMA = 2.33
#: a level shift (or an excess variance) is detectable from this stacked significance (sigma)
MIN_SNR = 5.0
#: ... over at least this many exposures that see the pixel bad
MIN_EXPOSURES = 3
#: each exposure contributes at most this many sigma to a stacked level shift
CLIP_SIGMA = 6.0
#: a fractional response deficit below this is within a normal pixel's response: not detectable
DEFICIT_FLOOR = 0.1
#: behaviour names whose evidence is excess scatter, not a level
NOISE_BEHAVIOURS = ("noisy",)


def _pixel_matrix(df: pd.DataFrame, keys: np.ndarray, key_index: dict, mjd: np.ndarray) -> np.ndarray:
    """(n_times, n_pixels) bool: any row of ``df`` covers the pixel at that exposure."""
    out = np.zeros((mjd.size, keys.size), bool)
    if len(df) == 0:
        return out
    col = np.array([key_index[k] for k in (df["y"].to_numpy() * 4096 + df["x"].to_numpy())])
    on = active(df["start_mjd"].to_numpy(float), df["end_mjd"].to_numpy(float), mjd)
    for i in range(len(df)):
        out[:, col[i]] |= on[i]
    return out


def selfcal_flags(sci: np.ndarray, *, axis: int = -2, kernel: int = 15, tail: float = 0.001) -> np.ndarray:
    """Per-exposure median-filter threshold (badpix_selfcal-like): bool image of flagged pixels.

    The residual against a running median of ``kernel`` pixels along the dispersion axis; the
    ``tail`` fraction of the finite pixels at each end is flagged.
    """
    sci = np.asarray(sci, np.float32)
    resid = sci - running_median(sci, kernel, axis=axis, min_count=1)
    v = resid[np.isfinite(resid)]
    out = np.zeros(sci.shape, bool)
    if v.size == 0:
        return out
    lo, hi = np.quantile(v, [tail, 1 - tail])
    with np.errstate(invalid="ignore"):
        out = (resid < lo) | (resid > hi)
    return out


def _sky_at(ds, y: np.ndarray, x: np.ndarray, dispersion_axis: str, half: int = 7) -> np.ndarray:
    """(time, pixels) median SCI of the neighbours along the dispersion (the pixel excluded)."""
    import xarray as xr

    off = np.r_[-half:0, 1:half + 1]
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    if dispersion_axis == "y":
        yy = np.clip(y[:, None] + off[None, :], 0, ny - 1)
        xx = np.broadcast_to(x[:, None], yy.shape)
    else:
        xx = np.clip(x[:, None] + off[None, :], 0, nx - 1)
        yy = np.broadcast_to(y[:, None], xx.shape)
    vals = ds["sci"].isel(y=xr.DataArray(yy, dims=("p", "k")), x=xr.DataArray(xx, dims=("p", "k"))).values
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmedian(vals, axis=-1)


def _evidence_kind(truth: pd.DataFrame, high: np.ndarray | None) -> np.ndarray:
    """Per truth row: "noise" (a noisy pixel), "switching" (high states known) or "level"."""
    n = len(truth)
    noise = np.zeros(n, bool)
    if "behaviour" in truth:
        noise |= truth["behaviour"].astype(str).isin(NOISE_BEHAVIOURS).to_numpy()
    if "noise_factor" in truth:
        noise |= np.isfinite(pd.to_numeric(truth["noise_factor"], errors="coerce").to_numpy(float))
    switching = high.any(axis=0) if high is not None else np.zeros(n, bool)
    return np.where(noise, "noise", np.where(switching, "switching", "level"))


def detectable(truth: pd.DataFrame, seen: np.ndarray, bad: np.ndarray, err: np.ndarray, sky: np.ndarray,
               params: DetectionParams | None = None, threshold: float | None = None, high: np.ndarray | None = None,
               min_snr: float | None = MIN_SNR, mjd: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per truth row: (detectable bool, the significance its rule uses).

    ``seen``, ``err`` and ``sky`` are (time, row) for each row's pixel; ``bad`` (time, row) the
    exposures its interval (or detectable span, :func:`detectable_span`) covers; ``high`` (time,
    row), where known, the exposures in which a switching or noisy row is in its bad state.

    - a **level** shift (steps, drifts, recoveries, clusters, ...): stacked significance
      S = sum_t min(A_t / ERR_t, clip) / sqrt(n) >= ``min_snr`` over its n >= 3 bad exposures
      that see it; A_t = the amplitude in DN/s (times the ramp of a drift, or the row's
      ``mean_excess_dn_s`` when given), or the fractional deficit times the local sky;
    - a **switching** row (telegraphs; high states known): the same sum over its high
      exposures, divided by sqrt of all n exposures of its span;
    - a **noisy** row: its excess variance, sum_t (A_t / ERR_t)^2 / sqrt(2 n) >= ``min_snr``
      (A_t the rms of the excess scatter), over its n >= 3 bad exposures.

    ``min_snr=None`` uses the detection ``threshold`` plus 2.33 sigma (a detector working at
    its threshold finds such a defect with 99 % probability) instead of a fixed significance.
    A fractional deficit below :data:`DEFICIT_FLOOR` is within a normal pixel's response and not
    detectable by definition.
    """
    amp = pd.to_numeric(truth["amplitude"], errors="coerce").to_numpy(float)
    flag = truth["flag"].astype(str).to_numpy()
    mult = np.isin(flag, ["DEAD", "LOW_QE"])
    clip = CLIP_SIGMA
    a = amp[None, :] * np.ones_like(err)
    if "mean_excess_dn_s" in truth:
        mean_ex = pd.to_numeric(truth["mean_excess_dn_s"], errors="coerce").to_numpy(float)
        a = np.where(np.isfinite(mean_ex)[None, :], mean_ex[None, :], a)
    if mjd is not None and {"ramp_start_mjd", "ramp_end_mjd", "ramp_from", "ramp_to"} <= set(truth.columns):
        a = a * _ramp(truth, np.asarray(mjd, float))
    a = np.where(mult[None, :], a * np.where(sky > 0, sky, 0.0), a)
    kind = _evidence_kind(truth, high)
    with np.errstate(all="ignore"):
        ratio = np.abs(a) / err
        z = np.minimum(ratio, clip)
    if high is not None:
        z = np.where((kind == "switching")[None, :], np.where(high, z, 0.0), z)
    # TELEGRAPH rows whose states are unknown: half the clipped term over the whole interval
    z = np.where(((flag == "TELEGRAPH") & (kind == "level"))[None, :], 0.5 * z, z)
    use = seen & bad & np.isfinite(z)
    n = use.sum(axis=0)
    s = np.where(use, z, 0.0).sum(axis=0) / np.sqrt(np.maximum(n, 1))
    var_sig = np.where(use, ratio**2, 0.0).sum(axis=0) / np.sqrt(2.0 * np.maximum(n, 1))
    s = np.where(kind == "noise", var_sig, s)
    need = (threshold + POWER_MARGIN_SIGMA) if min_snr is None else float(min_snr)
    floor_ok = np.where(mult, amp >= DEFICIT_FLOOR, amp > 0)
    ok = (n >= MIN_EXPOSURES) & (s >= need) & floor_ok & np.isfinite(amp)
    return ok, s


def _ramp(truth: pd.DataFrame, mjd: np.ndarray) -> np.ndarray:
    """(time, row) amplitude scale of rows with a ramp (drifts); 1 elsewhere."""
    t0, t1, a, b = (pd.to_numeric(truth[c], errors="coerce").to_numpy(float)
                    for c in ("ramp_start_mjd", "ramp_end_mjd", "ramp_from", "ramp_to"))
    has = np.isfinite(t0) & np.isfinite(t1) & (t1 > t0)
    with np.errstate(all="ignore"):
        u = np.clip((mjd[:, None] - t0[None, :]) / np.where(has, t1 - t0, 1.0)[None, :], 0.0, 1.0)
    return np.where(has[None, :], a[None, :] + (b - a)[None, :] * u, 1.0)


def detectable_span(bad: np.ndarray, seen: np.ndarray, high: np.ndarray | None, telegraph: np.ndarray) -> np.ndarray:
    """(time, row) bool: the part of each truth interval that the data can show to be bad.

    For rows without high states, the whole interval. A switching pixel in its quiet state is
    indistinguishable from a good pixel, so before its first high state (seen by an exposure)
    the data hold no trace of the defect, nor after its last one: no method can date the onset
    earlier than the first high exposure or the recovery later than the last. Its detectable
    span runs from the first to the last high exposure inside the interval (quiet exposures
    between them count: a method can bridge them). ``telegraph`` selects the rows this applies
    to (rows whose high states are known: TELEGRAPH, intermittent or noisy-like rows); where the
    states are unknown, the whole interval is used.
    """
    out = bad.copy()
    if high is None:
        return out
    t = np.arange(bad.shape[0])[:, None]
    hs = bad & seen & high
    has = hs.any(axis=0)
    first = np.where(has, np.argmax(hs, axis=0), 0)
    last = np.where(has, bad.shape[0] - 1 - np.argmax(hs[::-1], axis=0), -1)
    span = (t >= first[None, :]) & (t <= last[None, :])
    rows = telegraph & high.any(axis=0)
    out[:, rows] = (bad & span)[:, rows]
    return out


def legacy_behaviour(truth: pd.DataFrame) -> pd.Series:
    """Behaviour names for a truth table written without them: ``static`` rows, ``telegraph``
    (TELEGRAPH), ``cluster`` (cluster_id >= 0) and ``step`` (every other row)."""
    flag = truth["flag"].astype(str)
    out = pd.Series(np.where(flag == "TELEGRAPH", "telegraph", "step"), index=truth.index, dtype=object)
    if "cluster_id" in truth:
        out[(pd.to_numeric(truth["cluster_id"], errors="coerce") >= 0).to_numpy()] = "cluster"
    if "static" in truth:
        out[truth["static"].astype(bool).to_numpy()] = "static"
    return out


def read_truth(truth) -> pd.DataFrame:
    """A truth table (/work/TRUTH-SCHEMA.md) with ``behaviour`` and ``high_mjd``, from a DataFrame,
    a CSV or Parquet file, or a folder written by ``lrscube simulate`` (its ``truth/truth.parquet``).

    Tables written without those columns still read: their behaviours come from
    :func:`legacy_behaviour` and their high states are unknown (``high_mjd`` None).
    """
    if isinstance(truth, pd.DataFrame):
        out = truth.copy()
    else:
        path = Path(truth)
        if path.is_dir():
            found = [c for c in (path / "truth" / "truth.parquet", path / "truth.parquet",
                                 path / "truth" / "truth.csv", path / "truth.csv") if c.exists()]
            if not found:
                raise FileNotFoundError(f"{truth}: no truth/truth.parquet or truth.csv "
                                        "(a folder written by lrscube simulate)")
            path = found[0]
        out = pd.read_parquet(path) if path.suffix == ".parquet" else \
            pd.read_csv(path, dtype={"high_mjd": object, "behaviour": object})
    if "behaviour" not in out:
        out["behaviour"] = legacy_behaviour(out)
    if "high_mjd" not in out:
        out["high_mjd"] = None
    return out


def read_lookalikes(truth_path) -> pd.DataFrame | None:
    """``lookalikes.parquet`` (or ``.csv``) beside a truth table, or None when there is none."""
    folder = Path(truth_path).parent
    for name in ("lookalikes.parquet", "lookalikes.csv"):
        p = folder / name
        if p.exists():
            return pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
    return None


def _scores(flagged: np.ndarray, bad: np.ndarray, det_bad: np.ndarray, seen: np.ndarray,
            n_flagged_elsewhere: int = 0) -> dict:
    tp = int((flagged & bad & seen).sum())
    fp = int((flagged & ~bad & seen).sum()) + int(n_flagged_elsewhere)
    rec_n = int((det_bad & seen).sum())
    rec_hit = int((det_bad & seen & flagged).sum())
    return {"precision": tp / (tp + fp) if tp + fp else float("nan"),
            "recall": rec_hit / rec_n if rec_n else float("nan"),
            "flagged_pixel_exposures": tp + fp, "true_positive": tp, "false_positive": fp,
            "detectable_pixel_exposures": rec_n}


def _footprints(ds, mjd_order: np.ndarray) -> np.ndarray | None:
    """(time, 4) footprint boxes y0, y1, x0, x1 of each exposure (time order), or None when the cube
    has no footprint coordinates (then every exposure sees the whole cube)."""
    if not all(c in ds.coords for c in ("y0", "x0", "ny", "nx")):
        return None
    y0, x0, ny, nx = (np.asarray(ds[c].values, int) for c in ("y0", "x0", "ny", "nx"))
    return np.stack([y0, y0 + ny, x0, x0 + nx], axis=1)[mjd_order]


def normal_pixel_figures(ds, prof, det: pd.DataFrame, truth_keys: set, carried_keys: set,
                         mjd: np.ndarray, boxes: np.ndarray | None) -> dict:
    """How many NORMAL pixels (no truth row, not carried from the input mask, not a reference
    pixel) the detector flagged: as pixels (any interval) and as pixel-exposures."""
    ys = np.asarray(ds["y"].values) if "y" in ds.coords else np.arange(ds.sizes["y"])
    xs = np.asarray(ds["x"].values) if "x" in ds.coords else np.arange(ds.sizes["x"])
    ref = prof.reference_mask()[np.ix_(ys, xs)]
    n_t = mjd.size
    if boxes is None:
        boxes = np.tile([ys.min(), ys.max() + 1, xs.min(), xs.max() + 1], (n_t, 1))
    seen_any = np.zeros((ys.size, xs.size), bool)
    area = 0
    for y0, y1, x0, x1 in boxes:
        iy, ix = (ys >= y0) & (ys < y1), (xs >= x0) & (xs < x1)
        sees = ~ref[np.ix_(iy, ix)]
        seen_any[np.ix_(iy, ix)] |= sees
        area += int(sees.sum())
    excluded = np.array(sorted(truth_keys | carried_keys), dtype=np.int64)
    ey, ex = excluded // 4096, excluded % 4096
    iy, ix = np.searchsorted(ys, ey), np.searchsorted(xs, ex)
    inside = (iy < ys.size) & (ix < xs.size)
    inside[inside] &= (ys[iy[inside]] == ey[inside]) & (xs[ix[inside]] == ex[inside])
    inside[inside] &= seen_any[iy[inside], ix[inside]]
    n_pix = int(seen_any.sum()) - int(inside.sum())
    # pixel-exposures of the excluded pixels
    exc_pe = 0
    for y, x in zip(ey[inside], ex[inside]):
        exc_pe += int(((boxes[:, 0] <= y) & (y < boxes[:, 1]) & (boxes[:, 2] <= x) & (x < boxes[:, 3])).sum())
    n_pe = area - exc_pe
    k = (det["y"].to_numpy() * 4096 + det["x"].to_numpy()).astype(np.int64) if len(det) else np.zeros(0, np.int64)
    normal = ~np.isin(k, excluded)
    d = det[normal]
    flagged_pix = int(np.unique(k[normal]).size)
    if len(d):
        on = active(d["start_mjd"].to_numpy(float), d["end_mjd"].to_numpy(float), mjd)
        y, x = d["y"].to_numpy()[:, None], d["x"].to_numpy()[:, None]
        sees = (boxes[None, :, 0] <= y) & (y < boxes[None, :, 1]) & (boxes[None, :, 2] <= x) & (x < boxes[None, :, 3])
        cover = pd.DataFrame(on & sees).groupby(k[normal]).any()  # a pixel's intervals may overlap
        flagged_pe = int(cover.to_numpy().sum())
    else:
        flagged_pe = 0
    return {"pixels": n_pix, "flagged_pixels": flagged_pix,
            "fraction_pixels": flagged_pix / n_pix if n_pix else float("nan"),
            "pixel_exposures": int(n_pe), "flagged_pixel_exposures": flagged_pe,
            "fraction_pixel_exposures": flagged_pe / n_pe if n_pe else float("nan")}


def lookalike_figures(lookalikes: pd.DataFrame | None, det: pd.DataFrame, truth: pd.DataFrame,
                      carried_keys: set, mjd: np.ndarray) -> dict:
    """Per must-not behaviour: of its pixel-exposures (in the cube's exposures, on pixels not bad in
    the truth at that time nor carried from the input mask), how many the detector flagged."""
    if lookalikes is None or not len(lookalikes):
        return {}
    la = lookalikes[["y", "x", "mjd", "behaviour"]].copy()
    la["mjd"] = la["mjd"].astype(float)
    la = la[np.isin(np.round(la["mjd"].to_numpy(), 6), np.round(mjd, 6))]
    la = la.drop_duplicates(["y", "x", "mjd", "behaviour"])
    la["key"] = la["y"].astype(np.int64) * 4096 + la["x"].astype(np.int64)
    la = la[~la["key"].isin(list(carried_keys))]

    def covered(rows: pd.DataFrame, iv: pd.DataFrame) -> np.ndarray:
        if not len(iv) or not len(rows):
            return np.zeros(len(rows), bool)
        iv = iv.assign(key=iv["y"].astype(np.int64) * 4096 + iv["x"].astype(np.int64))[["key", "start_mjd", "end_mjd"]]
        m = rows[["key", "mjd"]].reset_index().merge(iv, on="key", how="inner")
        s = m["start_mjd"].astype(float).fillna(-np.inf)
        e = m["end_mjd"].astype(float).fillna(np.inf)
        hit = m.loc[(s <= m["mjd"]) & (m["mjd"] < e), "index"].unique()
        return rows.index.isin(hit)

    la = la[~covered(la, truth)]  # a pixel-exposure bad in the truth: a flag there is right
    flagged = covered(la, det)
    out = {}
    for name, grp in la.groupby("behaviour"):
        f = int(flagged[la.index.get_indexer(grp.index)].sum())
        out[str(name)] = {"pixel_exposures": int(len(grp)), "flagged": f, "rate": f / len(grp) if len(grp) else float("nan")}
    return out


def _onset_error(flagged_col: np.ndarray, tb: np.ndarray, seen_col: np.ndarray) -> int:
    """First flagged exposure of the run that overlaps the truth minus the first truly bad one,
    counted in exposures that see the pixel."""
    idx = np.flatnonzero(seen_col)
    pos = {t: j for j, t in enumerate(idx)}
    t_true = np.flatnonzero(tb)[0]
    f = np.flatnonzero(flagged_col & tb)[0]
    j = pos[f]
    while j > 0 and flagged_col[idx[j - 1]]:
        j -= 1
    return j - pos[t_true]


def evaluate_arrays(ds, intervals: pd.DataFrame, truth: pd.DataFrame, profile=None,
                    params: DetectionParams | None = None, threshold: float | None = None,
                    baselines: bool = True, lookalikes: pd.DataFrame | None = None,
                    min_snr: float | None = MIN_SNR) -> dict:
    """Scores of ``intervals`` against ``truth`` (and ``lookalikes``) for the cube ``ds`` (see the
    module docstring). ``min_snr=None``: detectability from the detection threshold + 2.33 sigma."""
    prof = profiles.load(profile)
    p = params or DetectionParams.from_profile(prof)
    ds = ds.sortby("mjd")
    mjd = np.asarray(ds["mjd"].values, float)
    n_t = mjd.size
    thr = threshold if threshold is not None else p.threshold(int(np.prod(prof.frame_shape)), n_t)
    iv = intervals.copy()
    carried = iv[iv["carried"].astype(bool)] if "carried" in iv else iv.iloc[:0]
    det = iv[~iv["carried"].astype(bool)] if "carried" in iv else iv
    static_keys = set((carried["y"] * 4096 + carried["x"]).tolist())
    full_truth = _with_behaviour(truth)
    all_truth_keys = set((full_truth["y"].astype(np.int64) * 4096 + full_truth["x"].astype(np.int64)).tolist())
    tk = full_truth["y"].to_numpy() * 4096 + full_truth["x"].to_numpy()
    truth = full_truth[~np.isin(tk, list(static_keys))].reset_index(drop=True)
    keys = np.unique(np.r_[truth["y"].to_numpy() * 4096 + truth["x"].to_numpy(),
                           det["y"].to_numpy() * 4096 + det["x"].to_numpy()]).astype(np.int64)
    key_index = {int(k): i for i, k in enumerate(keys)}
    px = _pixels_of(ds, keys)
    bad = _pixel_matrix(truth, keys, key_index, mjd)
    flagged = _pixel_matrix(det, keys, key_index, mjd)
    seen = px.seen
    high = _high_states(truth, mjd)
    rows = _detectable_rows(ds, truth, key_index, mjd, px, prof.dispersion_axis, high,
                            partial(detectable, params=p, threshold=thr, high=high, min_snr=min_snr, mjd=mjd), bad.shape)
    ok = rows.ok
    det_bad = rows.bad_where(np.ones(len(truth), bool))

    rule = (f"detectable: >= {MIN_EXPOSURES} exposures that see it bad and a level shift stacked to "
            + (f">= {min_snr:g} sigma" if min_snr is not None else f">= threshold + {POWER_MARGIN_SIGMA} sigma")
            + " (switching rows: over their high exposures, from the first to the last high state; "
            + "noisy rows: excess variance)")
    out = {"mode": prof.name, "n_exposures": int(n_t), "threshold_sigma": float(thr), "criterion": rule,
           "min_snr": min_snr, "telegraph_states_known": high is not None,
           "truth_defects": int(len(truth)), "detectable_defects": int(ok.sum()),
           "static_pixels_excluded": int(len(static_keys))}
    out["lrscube"] = _scores(flagged, bad, det_bad, seen)
    out["recall_per_class"] = _recall_per_class(truth, rows, seen, flagged)
    first = mjd[0] if n_t else np.nan
    new = ~truth["static"].to_numpy(bool) & (truth["start_mjd"].to_numpy(float) > first)
    found, onset = _new_defects_found(rows, new, seen, flagged)
    out.update(_new_defect_scores(rows, new, found, onset, seen, flagged))
    out["per_behaviour"] = _per_behaviour(truth, rows, new, found, onset, high, seen, flagged)
    out["new_defects_by_own_evidence"] = own_evidence(truth, rows, new, found, seen, thr)
    # normal pixels and look-alikes
    order = np.argsort(np.asarray(ds["mjd"].values, float), kind="stable")
    boxes = _footprints(ds, order)
    out["normal_pixels"] = normal_pixel_figures(ds, prof, det, all_truth_keys, static_keys, mjd, boxes)
    out["lookalikes"] = lookalike_figures(lookalikes, det, full_truth, static_keys, mjd)
    if len(det) and len(truth):
        out["class_confusion"] = _class_confusion(truth, det, keys, rows)
    if baselines:
        out["baseline_static"] = _static_baseline(truth, keys, key_index, mjd, bad, det_bad, seen)
        out["baseline_selfcal"] = _selfcal_baseline(ds, prof, keys, bad, det_bad, seen, static_keys)
    return out


def _detectable_rows(ds, truth, key_index, mjd, px, dispersion_axis, high, judge, shape) -> "_TruthRows":
    """Per truth row: its pixel's column (``col``), when it is bad as far as the cube can show
    it (``row_bad``) and whether it is detectable (``judge``: :func:`detectable` with the
    figures' parameters; multiplicative rows are judged against the sky at their pixel)."""
    col = np.array([key_index[int(k)] for k in truth["y"].to_numpy() * 4096 + truth["x"].to_numpy()], dtype=int)
    row_bad = active(truth["start_mjd"].to_numpy(float), truth["end_mjd"].to_numpy(float), mjd).T
    mult_rows = truth["flag"].isin(["DEAD", "LOW_QE"]).to_numpy()
    sky = np.full((mjd.size, len(truth)), np.nan)
    if mult_rows.any():
        sky[:, mult_rows] = _sky_at(ds, px.iy[col[mult_rows]], px.ix[col[mult_rows]], dispersion_axis)
    known = high.any(axis=0) if high is not None else np.zeros(len(truth), bool)
    row_bad = detectable_span(row_bad, px.seen[:, col], high, known)
    ok, sig = judge(truth, px.seen[:, col], row_bad, px.err[:, col], sky)
    return _TruthRows(ok=ok, col=col, row_bad=row_bad, shape=shape, significance=sig)


def _new_defect_scores(rows: "_TruthRows", new, found, onset, seen, flagged) -> dict:
    m = rows.bad_where(new)
    nm = int((m & seen).sum())
    n_new = int((rows.ok & new).sum())
    return {"recall_new_pixel_exposures": int((m & seen & flagged).sum()) / nm if nm else float("nan"),
            "new_defects_detectable": n_new,
            "recall_new_defects": int(found.sum()) / n_new if n_new else float("nan"),
            "onset_error_exposures": _onset_summary(onset[found])}


def _with_behaviour(truth: pd.DataFrame) -> pd.DataFrame:
    """A copy of the truth table with ``static`` (bool) and ``behaviour`` (older tables: from
    their columns) filled in."""
    truth = truth.copy()
    if "static" not in truth:
        truth["static"] = False
    truth["static"] = truth["static"].astype(bool)
    if "behaviour" not in truth:
        truth["behaviour"] = legacy_behaviour(truth)
    truth["behaviour"] = truth["behaviour"].fillna("step").astype(str)
    return truth


def _pixels_of(ds, keys: np.ndarray):
    """The cube's positions (``iy``, ``ix``) of the pixels ``keys`` (y * 4096 + x), their ERR
    (time x pixel) and where an exposure sees them (``seen``: a finite SCI or a DQ bit)."""
    import xarray as xr

    py, px = keys // 4096, keys % 4096
    ys = np.asarray(ds["y"].values) if "y" in ds.coords else np.arange(ds.sizes["y"])
    xs = np.asarray(ds["x"].values) if "x" in ds.coords else np.arange(ds.sizes["x"])
    iy = np.searchsorted(ys, py)
    ix = np.searchsorted(xs, px)
    sel = dict(y=xr.DataArray(iy, dims="p"), x=xr.DataArray(ix, dims="p"))
    sci = ds["sci"].isel(**sel).values
    dq = ds["dq"].isel(**sel).values
    err = ds["err"].isel(**sel).values.astype(float)
    return SimpleNamespace(iy=iy, ix=ix, err=err, seen=np.isfinite(sci) | (dq != 0))


def _high_states(truth: pd.DataFrame, mjd: np.ndarray) -> np.ndarray | None:
    """(time, truth row): the exposures in a switching row's high state, or None when the truth
    table records no states."""
    if "high_mjd" not in truth or not truth["high_mjd"].notna().any():
        return None
    high = np.zeros((mjd.size, len(truth)), bool)
    for i, hm in enumerate(truth["high_mjd"]):
        hm = parse_high_mjd(hm)
        if hm.size:
            high[:, i] = np.isin(np.round(mjd, 6), np.round(hm, 6))
    return high


@dataclass
class _TruthRows:
    """The truth rows as the scores use them: detectable (``ok``), their pixel's column in the
    (time, pixel) matrices (``col``) and when each is bad (``row_bad``: time x row)."""

    ok: np.ndarray
    col: np.ndarray
    row_bad: np.ndarray
    shape: tuple[int, int]
    significance: np.ndarray  #: the significance its detectability rule uses (:func:`detectable`)

    def bad_where(self, rows: np.ndarray) -> np.ndarray:
        """(time, pixel): where the detectable rows among ``rows`` are bad."""
        m = np.zeros(self.shape, bool)
        for i in np.flatnonzero(self.ok & rows):
            m[:, self.col[i]] |= self.row_bad[:, i]
        return m


def _recall_per_class(truth: pd.DataFrame, rows: _TruthRows, seen, flagged) -> dict:
    per = {}
    for cls in sorted(truth["flag"].unique()):
        is_cls = (truth["flag"] == cls).to_numpy()
        m = rows.bad_where(is_cls)
        n = int((m & seen).sum())
        per[cls] = {"recall": (int((m & seen & flagged).sum()) / n) if n else float("nan"),
                    "detectable_pixel_exposures": n,
                    "defects": int(is_cls.sum()), "detectable": int((rows.ok & is_cls).sum())}
    return per


def _new_defects_found(rows: _TruthRows, new: np.ndarray, seen, flagged) -> tuple[np.ndarray, np.ndarray]:
    """A detectable new defect is found when at least half of its detectable pixel-exposures
    are flagged; its onset error (exposures) where found."""
    found = np.zeros(len(new), bool)
    onset = np.full(len(new), np.nan)
    for i in np.flatnonzero(rows.ok & new):
        c = rows.col[i]
        tb = rows.row_bad[:, i] & seen[:, c]
        if tb.any() and (flagged[:, c] & tb).sum() >= 0.5 * tb.sum():
            found[i] = True
            onset[i] = _onset_error(flagged[:, c], tb, seen[:, c])
    return found, onset


def own_evidence(truth: pd.DataFrame, rows: _TruthRows, new, found, seen, threshold: float) -> dict:
    """The detectable new defects binned by the evidence of their change against the pixel's own
    exposures outside it, per class and in all: ``{class: {bin: {"detectable", "found"}}}``.

    Detectability stacks a defect's bad exposures against the truth's level; a detector sees a
    change only against the pixel's other exposures (a fixed excess within the physical limits
    is a normal pixel), so the same significance times ``sqrt(n_good / (n_good + n_bad))``, a
    two-sample one. Bins: below the detection ``threshold``, up to ``POWER_MARGIN_SIGMA`` above
    it, beyond. (For noisy rows, whose significance is of excess variance, the scaling is only
    indicative.)"""
    edges = (float(threshold), float(threshold) + POWER_MARGIN_SIGMA)
    names = (f"below {edges[0]:.1f}", f"{edges[0]:.1f}-{edges[1]:.1f}", f"above {edges[1]:.1f}")
    flag = truth["flag"].astype(str).to_numpy()
    out: dict = {}
    for i in np.flatnonzero(rows.ok & new):
        c = rows.col[i]
        bad = rows.row_bad[:, i] & seen[:, c]
        nb, ng = int(bad.sum()), int((seen[:, c] & ~rows.row_bad[:, i]).sum())
        own = float(rows.significance[i]) * np.sqrt(ng / max(ng + nb, 1))
        b = names[int(np.searchsorted(edges, own, side="right"))]
        for cls in (flag[i], "all"):
            cell = out.setdefault(cls, {n: {"detectable": 0, "found": 0} for n in names})[b]
            cell["detectable"] += 1
            cell["found"] += int(found[i])
    return out


def _per_behaviour(truth, rows: _TruthRows, new, found, onset, high, seen, flagged) -> dict:
    """Per behaviour: detectability by its own rule, recall, new-defect recall, onset error."""
    beh = truth["behaviour"].to_numpy()
    kinds = _evidence_kind(truth, high)
    ok = rows.ok
    per_b = {}
    for name in sorted(set(beh)):
        sel = beh == name
        mb = rows.bad_where(sel)
        n = int((mb & seen).sum())
        nb = int((ok & sel & new).sum())
        per_b[str(name)] = {
            "defects": int(sel.sum()), "detectable": int((ok & sel).sum()),
            "evidence": ", ".join(sorted(set(kinds[sel]))),
            "recall": int((mb & seen & flagged).sum()) / n if n else float("nan"),
            "detectable_pixel_exposures": n, "new_detectable": nb,
            "recall_new_defects": int((found & sel).sum()) / nb if nb else float("nan"),
            "onset_error_exposures": _onset_summary(onset[found & sel])}
    return per_b


def _class_confusion(truth, det, keys, rows: _TruthRows) -> dict:
    """Classification agreement on true positives: truth class -> detected class -> defects."""
    first_flag = det.assign(k=det["y"] * 4096 + det["x"]).drop_duplicates("k").set_index("k")["flag"]
    conf = {}
    for i in np.flatnonzero(rows.ok):
        k = int(keys[rows.col[i]])
        if k in first_flag.index:
            t, d = str(truth["flag"].iloc[i]), str(first_flag[k])
            conf.setdefault(t, {}).setdefault(d, 0)
            conf[t][d] += 1
    return conf


def _onset_summary(errs) -> dict:
    errs = np.asarray(errs, float)
    return {"median": float(np.median(errs)) if errs.size else float("nan"),
            "p90_abs": float(np.percentile(np.abs(errs), 90)) if errs.size else float("nan"),
            "n": int(errs.size)}


def _static_baseline(truth, keys, key_index, mjd, bad, det_bad, seen) -> dict:
    first = mjd[0]
    present = truth[active(truth["start_mjd"].to_numpy(float), truth["end_mjd"].to_numpy(float),
                           np.array([first]))[:, 0]]
    flagged = np.zeros_like(bad)
    for k in (present["y"] * 4096 + present["x"]).to_numpy():
        flagged[:, key_index[int(k)]] = True
    return _scores(flagged, bad, det_bad, seen)


def _selfcal_baseline(ds, prof, keys, bad, det_bad, seen, static_keys) -> dict:
    """Per exposure, flag the 0.1 % tails of the median-filter residual; score like the detector."""
    import dask

    ax = -2 if prof.dispersion_axis == "y" else -1
    ys = np.asarray(ds["y"].values) if "y" in ds.coords else np.arange(ds.sizes["y"])
    xs = np.asarray(ds["x"].values) if "x" in ds.coords else np.arange(ds.sizes["x"])

    def one(sci):
        f = selfcal_flags(np.asarray(sci)[0], axis=ax)
        yy, xx = np.nonzero(f)
        return ys[yy] * 4096 + xs[xx]

    sci = ds["sci"].data
    if hasattr(sci, "to_delayed"):
        sci = sci.rechunk({0: 1, 1: -1, 2: -1})
        parts = dask.compute(*[dask.delayed(one)(b) for b in sci.to_delayed().ravel()])
    else:
        parts = [one(sci[t:t + 1]) for t in range(sci.shape[0])]
    flagged = np.zeros_like(bad)
    key_pos = {int(k): i for i, k in enumerate(keys)}
    elsewhere = 0
    static = np.array(sorted(static_keys), dtype=np.int64)
    for t, ks in enumerate(parts):
        ks = ks[~np.isin(ks, static)]
        inside = np.isin(ks, keys)
        for k in ks[inside]:
            flagged[t, key_pos[int(k)]] = True
        elsewhere += int((~inside).sum())
    return _scores(flagged, bad, det_bad, seen, n_flagged_elsewhere=elsewhere)


def evaluate(store: str, truth, mode: str | None = None, *, baselines: bool = True,
             lookalikes=None, min_snr: float | None = MIN_SNR) -> dict:
    """Score the store's intervals against a truth table (path or DataFrame) and its look-alikes.

    ``lookalikes``: a DataFrame or path; by default ``lookalikes.parquet``/``.csv`` beside a truth
    path (none for a DataFrame truth). Returns a dict; :func:`format_report` prints it.
    """
    if lookalikes is None and not isinstance(truth, pd.DataFrame):
        lookalikes = read_lookalikes(truth)
    elif lookalikes is not None and not isinstance(lookalikes, pd.DataFrame):
        lp = Path(lookalikes)
        lookalikes = pd.read_parquet(lp) if lp.suffix == ".parquet" else pd.read_csv(lp)
    if not isinstance(truth, pd.DataFrame):
        truth = read_truth(truth)
    ds = open_cube(store)
    iv = open_intervals(store)
    thr = None
    params = None
    prof = profiles.load(mode)
    try:
        meta = st.read_json(store, st.DETECT_META)
        thr = meta.get("threshold_sigma")
        prof = profiles.load(mode or meta.get("profile"))
        params = DetectionParams.from_dict({k: v for k, v in meta.get("parameters", {}).items()})
    except (FileNotFoundError, OSError, ValueError, TypeError):
        pass
    return evaluate_arrays(ds, iv, truth, prof, params=params, threshold=thr, baselines=baselines,
                           lookalikes=lookalikes, min_snr=min_snr)


def _fmt(v, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "n/a"
    return f"{100 * v:.4f} %" if pct else f"{v:.4f}"


def behaviour_table(res: dict) -> str:
    """The per-behaviour table of :func:`evaluate`'s result, one line per behaviour."""
    lines = [f"{'behaviour':<16} {'defects':>7} {'detect.':>7} {'evidence':<18} {'recall':>8} "
             f"{'new det.':>8} {'new rec.':>8} {'onset med':>9} {'onset p90':>9}"]
    for name, v in res.get("per_behaviour", {}).items():
        o = v["onset_error_exposures"]
        lines.append(f"{name:<16} {v['defects']:>7} {v['detectable']:>7} {v['evidence']:<18} {_fmt(v['recall']):>8} "
                     f"{v['new_detectable']:>8} {_fmt(v['recall_new_defects']):>8} "
                     f"{o['median'] if o['n'] else 'n/a':>9} {o['p90_abs'] if o['n'] else 'n/a':>9}")
    return "\n".join(lines)


def lookalike_table(res: dict) -> str:
    """Flag rate on each must-not behaviour."""
    rows = res.get("lookalikes") or {}
    if not rows:
        return "look-alikes: none in the truth"
    lines = [f"{'look-alike':<16} {'pixel-exp.':>10} {'flagged':>8} {'rate':>10}"]
    for name, v in rows.items():
        lines.append(f"{name:<16} {v['pixel_exposures']:>10} {v['flagged']:>8} {_fmt(v['rate'], pct=True):>10}")
    return "\n".join(lines)


def format_report(res: dict) -> str:
    """Human-readable summary of :func:`evaluate`'s result."""
    fmt = _fmt
    lines = [f"mode: {res.get('mode', '?')}   exposures: {res['n_exposures']}   "
             f"detection threshold: {res['threshold_sigma']:.2f} sigma",
             f"{res['criterion']}",
             f"truth defects (static excluded): {res['truth_defects']}, detectable: {res['detectable_defects']}, "
             f"new detectable: {res['new_defects_detectable']}",
             "", f"{'method':<10} {'precision':>10} {'recall':>10} {'flagged':>10}"]
    for name in ("lrscube", "baseline_static", "baseline_selfcal"):
        if name in res:
            s = res[name]
            lines.append(f"{name.replace('baseline_', ''):<10} {fmt(s['precision']):>10} {fmt(s['recall']):>10} "
                         f"{s['flagged_pixel_exposures']:>10}")
    lines.append("")
    npx = res.get("normal_pixels")
    if npx:
        lines.append(f"normal pixels flagged: {npx['flagged_pixels']} of {npx['pixels']} "
                     f"({fmt(npx['fraction_pixels'], pct=True)}); pixel-exposures "
                     f"{npx['flagged_pixel_exposures']} of {npx['pixel_exposures']} "
                     f"({fmt(npx['fraction_pixel_exposures'], pct=True)})")
    lines.append("recall per class (lrscube): " + ", ".join(
        f"{k} {fmt(v['recall'])} ({v['detectable']}/{v['defects']} detectable)" for k, v in res["recall_per_class"].items()))
    lines.append(f"recall of new defects: {fmt(res['recall_new_defects'])}   "
                 f"(pixel-exposures {fmt(res['recall_new_pixel_exposures'])})")
    o = res["onset_error_exposures"]
    lines.append(f"onset error (exposures): median {o['median']}, 90th percentile |error| {o['p90_abs']} (n={o['n']})")
    own = res.get("new_defects_by_own_evidence", {}).get("all")
    if own:
        lines.append("new defects found by the change's own evidence (sigma against the pixel's other exposures): "
                     + ", ".join(f"{b} {v['found']}/{v['detectable']}" for b, v in own.items()))
    if "class_confusion" in res:
        lines.append("class (truth -> detected): " + "; ".join(
            f"{t}: " + ", ".join(f"{d} {n}" for d, n in sorted(v.items())) for t, v in sorted(res["class_confusion"].items())))
    if res.get("per_behaviour"):
        lines += ["", "per behaviour (lrscube):", behaviour_table(res)]
    if "lookalikes" in res:
        lines += ["", lookalike_table(res)]
    return "\n".join(lines)
