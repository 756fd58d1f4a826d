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

**Detectable** (decided from the truth and the cube's ERR, never from the detector's output):
a truth interval is detectable when it lasts ``min_bad_exposures`` or more exposures that see
the pixel and its expected stacked significance

    S = sum_t min(A_t / ERR_t, clip_sigma) / sqrt(n)

reaches the run's detection threshold plus 2.33 sigma (so that a detector working at the
threshold finds it with 99 % probability). ``A_t`` is the amplitude in DN/s for HOT and WARM, and
the fractional deficit times the local sky (median SCI of the 14 neighbours along the
dispersion) for DEAD and LOW_QE; a deficit below LOW_QE's ``min_deficit`` is not a defect by
definition and not detectable. A TELEGRAPH pixel in its quiet state looks exactly like a good
one, so only its span from the first to the last high state is detectable (:func:`detectable_span`),
with ``A_t`` counted in the high exposures; the states come from the truth (``high_mjd``, written
by the simulator) or, for older truth tables, are regenerated from the simulator's run
(:func:`simulated_telegraph_states`); without them the whole interval counts with half the
clipped term.

Baselines scored in the same run:

* ``static``: the defects present at the first exposure (truth), flagged for all time: what a
  constant mask made at the start of the mission could at best do;
* ``selfcal``: per exposure, the residual against a median filter along the dispersion
  (kernel 15), flagging the most extreme 0.1 % at each tail, in the spirit of the pipeline's
  ``badpix_selfcal`` (which has no memory across time).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import profiles
from .detection_params import DetectionParams
from .residuals import running_median

POWER_MARGIN_SIGMA = 2.33


def active(start, end, t) -> np.ndarray:
    """(n_rows, n_times) bool: start <= t < end, NaN start/end open."""
    s = np.where(np.isnan(start), -np.inf, start)
    e = np.where(np.isnan(end), np.inf, end)
    return (s[:, None] <= t[None, :]) & (t[None, :] < e[:, None])


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


def detectable(truth: pd.DataFrame, seen: np.ndarray, bad: np.ndarray, err: np.ndarray, sky: np.ndarray,
               params: DetectionParams, threshold: float, high: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per truth row: (detectable bool, expected stacked significance).

    ``seen``, ``err`` and ``sky`` are (time, row) for each row's pixel; ``bad`` (time, row) says
    whether the row's interval covers the exposure; ``high`` (time, row), when known, is the
    high state of TELEGRAPH rows (see :func:`detectable_span`): then ``bad`` should already be
    the detectable span and the stacked signal is counted over its high exposures only.
    """
    amp = truth["amplitude"].to_numpy(float)
    flag = truth["flag"].to_numpy()
    mult = np.isin(flag, ["DEAD", "LOW_QE"])
    tel = flag == "TELEGRAPH"
    a = amp[None, :] * np.ones_like(err)
    a = np.where(mult[None, :], amp[None, :] * np.where(sky > 0, sky, 0.0), a)
    with np.errstate(all="ignore"):
        z = np.minimum(np.abs(a) / err, params.clip_sigma)
    if high is not None:
        known = tel & high.any(axis=0)
        z = np.where(known[None, :], np.where(high, z, 0.0), np.where(tel[None, :], 0.5 * z, z))
    else:
        z = np.where(tel[None, :], 0.5 * z, z)
    use = seen & bad & np.isfinite(z)
    n = use.sum(axis=0)
    s = np.where(use, z, 0.0).sum(axis=0) / np.sqrt(np.maximum(n, 1))
    floor_ok = np.where(mult, amp >= params.classes["LOW_QE"]["min_deficit"],
                        amp > params.classes["WARM"]["min_excess_dn_s"])
    ok = (n >= params.min_bad_exposures) & (s >= threshold + POWER_MARGIN_SIGMA) & floor_ok & np.isfinite(amp)
    return ok, s


def detectable_span(bad: np.ndarray, seen: np.ndarray, high: np.ndarray | None, telegraph: np.ndarray) -> np.ndarray:
    """(time, row) bool: the part of each truth interval that the data can show to be bad.

    For every class but TELEGRAPH, the whole interval. A telegraph pixel in its quiet state is
    indistinguishable from a good pixel, so before its first high state (seen by an exposure)
    the data hold no trace of the defect, nor after its last one: no method can date the onset
    earlier than the first high exposure or the recovery later than the last. Its detectable
    span runs from the first to the last high exposure inside the interval (quiet exposures
    between them count: a method can bridge them). Where the states are unknown, the whole
    interval is used.
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


def simulated_telegraph_states(truth_path) -> pd.Series | None:
    """High-state MJDs of each TELEGRAPH row of an older simulator truth table, or None.

    Truth tables written before the simulator wrote ``high_mjd`` do not hold the telegraph
    states; they are regenerated here from the run recorded in ``truth/scenario.yaml`` (same seed, same random
    streams, :mod:`lrscube.simulate`), and used only if the regenerated defect population equals
    the truth table's. Returns a Series indexed like the truth table (object: array of the mid
    times of the exposures in the high state; None for other rows).
    """
    from pathlib import Path

    import yaml

    path = Path(truth_path)
    sc_path = path.parent / "scenario.yaml"
    if not sc_path.exists():
        return None
    try:
        import importlib

        # the package exports the function simulate(); the module is needed here
        sim = importlib.import_module("lrscube.simulate")
        sim_defects = importlib.import_module("lrscube.sim_defects")

        used = yaml.safe_load(sc_path.read_text())
        run = used.pop("run")
        truth = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
        sc = sim.load_scenario(used)
        prof = profiles.load(run.get("mode", "lrs"))
        start = run.get("start", "2022-07-15")
        try:
            start = float(start)
        except (TypeError, ValueError):
            pass
        rng_plan, rng_truth, rng_tel, _ = sim._streams(int(run["seed"]))
        plan = sim.plan_exposures(rng_plan, int(run["n"]), sc, prof, start=start,
                                  span_days=float(run.get("span_days", 900.0)),
                                  subarray_mix=run.get("subarray_mix"), full_frame=bool(run.get("full_frame", True)))
        t2 = sim.draw_truth(rng_truth, plan, sc, prof)
        new2 = t2[~t2.static.astype(bool)]
        new = truth[~truth.static.astype(bool)]
        if len(new) != len(new2) or not (np.array_equal(new.y.to_numpy(), new2.y.to_numpy())
                                         and np.array_equal(new.x.to_numpy(), new2.x.to_numpy())
                                         and np.array_equal(new.flag.to_numpy(), new2.flag.to_numpy())):
            return None
        high = sim_defects.telegraph_states(rng_tel, new2.switch_prob.fillna(0.0).to_numpy(), len(plan))
        high &= (new2.flag == "TELEGRAPH").to_numpy()[:, None]
    except Exception:  # noqa: BLE001 - any mismatch: states unknown
        return None
    t_mid = plan.expmid.to_numpy(float)
    out = pd.Series([None] * len(truth), index=truth.index, dtype=object)
    for k, idx in enumerate(new.index):
        if new.flag.iloc[k] == "TELEGRAPH":
            out[idx] = t_mid[high[k]]
    return out


def read_truth(path) -> pd.DataFrame:
    """A simulator truth table (CSV or Parquet) with the telegraph states in ``high_mjd``.

    The simulator writes each TELEGRAPH row's high-state mid-times itself; for truth tables
    written before it did, they are regenerated (:func:`simulated_telegraph_states`) when that
    reproduces the table's population, and left out otherwise.
    """
    from pathlib import Path

    path = Path(path)
    truth = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype={"high_mjd": object})
    if "high_mjd" not in truth:
        states = simulated_telegraph_states(path)
        if states is not None:
            truth["high_mjd"] = states
    return truth


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


def evaluate_arrays(ds, intervals: pd.DataFrame, truth: pd.DataFrame, profile=None,
                    params: DetectionParams | None = None, threshold: float | None = None,
                    baselines: bool = True) -> dict:
    """Scores of ``intervals`` against ``truth`` for the cube ``ds`` (see the module docstring)."""
    prof = profiles.load(profile)
    p = params or DetectionParams.from_profile(prof)
    ds = ds.sortby("mjd")
    mjd = np.asarray(ds["mjd"].values, float)
    n_t = mjd.size
    thr = threshold if threshold is not None else p.threshold(int(np.prod(prof.frame_shape)), n_t)
    iv = intervals.copy()
    carried = iv[iv["carried"]] if "carried" in iv else iv.iloc[:0]
    det = iv[~iv["carried"]] if "carried" in iv else iv
    static_keys = set((carried["y"] * 4096 + carried["x"]).tolist())
    truth = truth.copy()
    if "static" not in truth:
        truth["static"] = False
    tk = truth["y"].to_numpy() * 4096 + truth["x"].to_numpy()
    truth = truth[~np.isin(tk, list(static_keys))].reset_index(drop=True)
    keys = np.unique(np.r_[truth["y"].to_numpy() * 4096 + truth["x"].to_numpy(),
                           det["y"].to_numpy() * 4096 + det["x"].to_numpy()]).astype(np.int64)
    key_index = {int(k): i for i, k in enumerate(keys)}
    py, px = keys // 4096, keys % 4096
    import xarray as xr

    ys = np.asarray(ds["y"].values) if "y" in ds.coords else np.arange(ds.sizes["y"])
    xs = np.asarray(ds["x"].values) if "x" in ds.coords else np.arange(ds.sizes["x"])
    iy = np.searchsorted(ys, py)
    ix = np.searchsorted(xs, px)
    sel = dict(y=xr.DataArray(iy, dims="p"), x=xr.DataArray(ix, dims="p"))
    sci = ds["sci"].isel(**sel).values
    dq = ds["dq"].isel(**sel).values
    err = ds["err"].isel(**sel).values.astype(float)
    seen = np.isfinite(sci) | (dq != 0)

    bad = _pixel_matrix(truth, keys, key_index, mjd)
    flagged = _pixel_matrix(det, keys, key_index, mjd)
    # per truth row
    col = np.array([key_index[int(k)] for k in tk[~np.isin(tk, list(static_keys))]], dtype=int)
    row_bad = active(truth["start_mjd"].to_numpy(float), truth["end_mjd"].to_numpy(float), mjd).T
    mult_rows = truth["flag"].isin(["DEAD", "LOW_QE"]).to_numpy()
    sky = np.full((n_t, len(truth)), np.nan)
    if mult_rows.any():
        sky[:, mult_rows] = _sky_at(ds, iy[col[mult_rows]], ix[col[mult_rows]], prof.dispersion_axis)
    high = None
    if "high_mjd" in truth and truth["high_mjd"].notna().any():
        from .sim_defects import parse_high_mjd

        high = np.zeros((n_t, len(truth)), bool)
        for i, hm in enumerate(truth["high_mjd"]):
            hm = parse_high_mjd(hm)
            if hm.size:
                high[:, i] = np.isin(np.round(mjd, 6), np.round(hm, 6))
    tel_rows = truth["flag"].to_numpy() == "TELEGRAPH"
    row_bad = detectable_span(row_bad, seen[:, col], high, tel_rows)
    ok, snr = detectable(truth, seen[:, col], row_bad, err[:, col], sky, p, thr, high=high)
    det_bad = np.zeros_like(bad)
    for i in np.flatnonzero(ok):
        det_bad[:, col[i]] |= row_bad[:, i]

    out = {"n_exposures": int(n_t), "threshold_sigma": float(thr),
           "criterion": (f"detectable: >= {p.min_bad_exposures} exposures and "
                         f"sum(min(A/ERR, {p.clip_sigma}))/sqrt(n) >= threshold + {POWER_MARGIN_SIGMA}; "
                         + ("TELEGRAPH counted from its first to its last high state"
                            if high is not None else "TELEGRAPH states unknown: whole intervals, half amplitude")),
           "telegraph_states_known": high is not None,
           "truth_defects": int(len(truth)), "detectable_defects": int(ok.sum()),
           "static_pixels_excluded": int(len(static_keys))}
    out["lrscube"] = _scores(flagged, bad, det_bad, seen)
    # per class recall
    per = {}
    for cls in sorted(truth["flag"].unique()):
        m = np.zeros_like(bad)
        for i in np.flatnonzero(ok & (truth["flag"].to_numpy() == cls)):
            m[:, col[i]] |= row_bad[:, i]
        n = int((m & seen).sum())
        per[cls] = {"recall": (int((m & seen & flagged).sum()) / n) if n else float("nan"),
                    "detectable_pixel_exposures": n,
                    "defects": int((truth["flag"] == cls).sum()), "detectable": int((ok & (truth["flag"] == cls).to_numpy()).sum())}
    out["recall_per_class"] = per
    # new defects
    first = mjd[0]
    new = ~truth["static"].to_numpy(bool) & (truth["start_mjd"].to_numpy(float) > first)
    m = np.zeros_like(bad)
    found, errs, n_new = 0, [], 0
    for i in np.flatnonzero(ok & new):
        c = col[i]
        tb = row_bad[:, i] & seen[:, c]
        m[:, c] |= row_bad[:, i]
        n_new += 1
        hit = (flagged[:, c] & tb).sum() >= 0.5 * tb.sum()
        if hit:
            found += 1
            idx = np.flatnonzero(seen[:, c])
            pos = {t: j for j, t in enumerate(idx)}
            t_true = np.flatnonzero(tb)[0]
            # the flagged run that overlaps the truth: walk back from the first flagged bad exposure
            f = np.flatnonzero(flagged[:, c] & tb)[0]
            j = pos[f]
            while j > 0 and flagged[idx[j - 1], c]:
                j -= 1
            errs.append(j - pos[t_true])
    nm = int((m & seen).sum())
    out["recall_new_pixel_exposures"] = int((m & seen & flagged).sum()) / nm if nm else float("nan")
    out["new_defects_detectable"] = n_new
    out["recall_new_defects"] = found / n_new if n_new else float("nan")
    errs = np.asarray(errs, float)
    out["onset_error_exposures"] = {
        "median": float(np.median(errs)) if errs.size else float("nan"),
        "p90_abs": float(np.percentile(np.abs(errs), 90)) if errs.size else float("nan"),
        "n": int(errs.size)}
    # classification agreement on true positives
    if len(det) and len(truth):
        conf = {}
        for i in range(len(truth)):
            c = col[i]
            k = int(keys[c])
            rows = det[(det["y"] * 4096 + det["x"]) == k]
            if len(rows) and ok[i]:
                conf.setdefault(truth["flag"].iloc[i], {}).setdefault(rows["flag"].iloc[0], 0)
                conf[truth["flag"].iloc[i]][rows["flag"].iloc[0]] += 1
        out["class_confusion"] = conf
    if baselines:
        out["baseline_static"] = _static_baseline(truth, keys, key_index, mjd, bad, det_bad, seen)
        out["baseline_selfcal"] = _selfcal_baseline(ds, prof, keys, bad, det_bad, seen, static_keys)
    return out


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


def evaluate(store: str, truth, mode: str | None = None, *, baselines: bool = True) -> dict:
    """Score the store's intervals against a truth table (CSV path or DataFrame).

    Returns a dict; :func:`format_report` prints it.
    """
    from .cube import open_cube
    from .detect import open_intervals
    from . import store as st

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
    except (FileNotFoundError, OSError, ValueError):
        pass
    return evaluate_arrays(ds, iv, truth, prof, params=params, threshold=thr, baselines=baselines)


def format_report(res: dict) -> str:
    """Human-readable summary of :func:`evaluate`'s result."""
    def fmt(v):
        return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.4f}"

    lines = [f"exposures: {res['n_exposures']}   detection threshold: {res['threshold_sigma']:.2f} sigma",
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
    lines.append("recall per class (lrscube): " + ", ".join(
        f"{k} {fmt(v['recall'])} ({v['detectable']}/{v['defects']} detectable)" for k, v in res["recall_per_class"].items()))
    lines.append(f"recall of new defects: {fmt(res['recall_new_defects'])}   "
                 f"(pixel-exposures {fmt(res['recall_new_pixel_exposures'])})")
    o = res["onset_error_exposures"]
    lines.append(f"onset error (exposures): median {o['median']}, 90th percentile |error| {o['p90_abs']} (n={o['n']})")
    if "class_confusion" in res:
        lines.append("class (truth -> detected): " + "; ".join(
            f"{t}: " + ", ".join(f"{d} {n}" for d, n in sorted(v.items())) for t, v in sorted(res["class_confusion"].items())))
    return "\n".join(lines)
