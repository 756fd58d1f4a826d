"""The simulator's defect population: which pixels are bad, how, and when.

Pure functions of numpy arrays and a random generator, used by :mod:`lrscube.simulate`:

- :func:`draw_static`, :func:`static_columns` and :func:`draw_new` draw the defects on the
  pixels the exposures see;
- :func:`telegraph_states` draws each telegraph pixel's state in every exposure;
- :func:`exposure_counts` counts the exposures that see each defect while it is active;
- :func:`rows_in` and :func:`apply_defects` put the defects active in one exposure into its
  noiseless signal.

The population is a pandas DataFrame in the truth-table layout (one row per pixel and bad
interval; 0-based full-frame ``y, x``; ``flag`` a stdatamodels DQ bit name; a pixel is bad for an
exposure whose mid-time t has ``start_mjd <= t < end_mjd``, NaN start = before the first exposure,
NaN end = still bad at the last).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Defects that add a current (amplitude in DN/s) and those that scale the photon signal
#: (amplitude = fractional deficit).
ADDITIVE = ("HOT", "WARM", "TELEGRAPH")
MULTIPLICATIVE = ("DEAD", "LOW_QE")

TRUTH_COLUMNS = [
    "y", "x", "flag", "start_mjd", "end_mjd", "amplitude", "static",
    "event_id", "cluster_id", "cluster_size", "switch_prob",
]

_NEIGHBOURS = np.array([(-1, 0), (1, 0), (0, -1), (0, 1)])


def _loguniform(rng: np.random.Generator, lo_hi, size=None):
    lo, hi = (float(v) for v in lo_hi)
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size))


def _classes(rng: np.random.Generator, mix: dict[str, float], size: int) -> np.ndarray:
    names = list(mix)
    p = np.array([float(mix[k]) for k in names])
    if (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"class mix {mix!r} needs non-negative fractions that sum to more than 0")
    return np.array(names, dtype=object)[rng.choice(len(names), size=size, p=p / p.sum())]


def _amplitudes(rng: np.random.Generator, flags: np.ndarray, ranges: dict) -> np.ndarray:
    amp = np.full(len(flags), np.nan)
    for cls in np.unique(flags):
        sel = flags == cls
        if cls in ADDITIVE:
            amp[sel] = _loguniform(rng, ranges[cls], sel.sum())
        else:
            lo, hi = ranges[cls]
            amp[sel] = rng.uniform(lo, hi, sel.sum())
    return amp


def empty_truth() -> pd.DataFrame:
    """A truth table with no rows and the right column types."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(
        TRUTH_COLUMNS, ["int64", "int64", "object", "float64", "float64", "float64", "bool",
                        "int64", "int64", "int64", "float64"])})


def draw_static(rng: np.random.Generator, seen: np.ndarray, cfg: dict, frame_pixels: int) -> pd.DataFrame:
    """Static defects on pixels some exposure sees (``seen``), ``count_full_frame`` scaled by coverage.

    Their amplitude is NaN: every file flags them DO_NOT_USE and NaNs them, so nothing of their
    signal is in the data.
    """
    candidates = np.flatnonzero(seen)
    n = int(round(float(cfg["count_full_frame"]) * candidates.size / frame_pixels))
    n = min(n, candidates.size)
    if n == 0:
        return empty_truth()
    idx = rng.choice(candidates, size=n, replace=False)
    y, x = np.unravel_index(idx, seen.shape)
    return pd.DataFrame({
        "y": y.astype(np.int64), "x": x.astype(np.int64),
        "flag": _classes(rng, cfg["classes"], n),
        "start_mjd": np.nan, "end_mjd": np.nan, "amplitude": np.nan, "static": True,
        "event_id": -1, "cluster_id": -1, "cluster_size": 1, "switch_prob": np.nan,
    })


def static_columns(seen_any: np.ndarray, box, flag: str) -> pd.DataFrame:
    """One static row per pixel of a known bad region (the shorted columns) that some exposure sees."""
    inside = np.zeros_like(seen_any)
    inside[box.y0:box.y1, box.x0:box.x1] = True
    y, x = np.nonzero(inside & seen_any)
    if y.size == 0:
        return empty_truth()
    return pd.DataFrame({
        "y": y.astype(np.int64), "x": x.astype(np.int64), "flag": flag,
        "start_mjd": np.nan, "end_mjd": np.nan, "amplitude": np.nan, "static": True,
        "event_id": -1, "cluster_id": -1, "cluster_size": 1, "switch_prob": np.nan,
    })


def _grow_cluster(rng, seed_yx, size, free: np.ndarray) -> list[tuple[int, int]]:
    """Up to ``size`` free pixels 4-connected to ``seed_yx`` (which is taken already)."""
    members = [seed_yx]
    for _ in range(size - 1):
        options = []
        for (py, px) in members:
            for dy, dx in _NEIGHBOURS:
                qy, qx = py + dy, px + dx
                if 0 <= qy < free.shape[0] and 0 <= qx < free.shape[1] and free[qy, qx]:
                    options.append((qy, qx))
        if not options:
            break
        q = options[rng.integers(len(options))]
        free[q] = False
        members.append(q)
    return members


def draw_new(rng: np.random.Generator, placeable: np.ndarray, t_mid: np.ndarray, boxes: list,
             cfg: dict, amplitudes: dict, telegraph: dict) -> pd.DataFrame:
    """New defects on the ``placeable`` pixels of exposures with mid-times ``t_mid`` and footprints ``boxes``.

    The number of events scales with the placeable pixels and the time from the first to the
    last exposure. Each onset is uniform between the first and the last exposure that sees the
    event's pixel, so at least one exposure sees the pixel good before and bad after; a recovery
    comes after at least one exposure has seen the pixel bad (a later recovery than the last
    exposure is no recovery). ``placeable`` is modified: pixels taken are set False.
    """
    t_mid = np.asarray(t_mid, float)
    if t_mid.size == 0:
        return empty_truth()
    t_first, t_last = float(t_mid.min()), float(t_mid.max())
    span_years = (t_last - t_first) / 365.25
    mpix = placeable.sum() / 1e6
    n_events = int(rng.poisson(float(cfg["events_per_megapixel_per_year"]) * mpix * span_years))
    n_events = min(n_events, int(placeable.sum()))
    if n_events == 0:
        return empty_truth()

    # seeds: distinct placeable pixels; clusters grow into free neighbours further down
    seeds = rng.choice(np.flatnonzero(placeable), size=n_events, replace=False)
    placeable.flat[seeds] = False
    sy, sx = np.unravel_index(seeds, placeable.shape)
    sees = np.stack([(sy >= b.y0) & (sy < b.y1) & (sx >= b.x0) & (sx < b.x1) for b in boxes], axis=1)
    t_seen = np.where(sees, t_mid[None, :], np.nan)
    first_seen, last_seen = np.nanmin(t_seen, axis=1), np.nanmax(t_seen, axis=1)

    cls = _classes(rng, cfg["classes"], n_events)
    onset = rng.uniform(first_seen, last_seen)
    recovers = rng.random(n_events) < float(cfg["recovery_fraction"])
    end = onset + _loguniform(rng, cfg["recovery_after_days"], n_events)
    # the first exposure that sees the pixel bad comes before the recovery
    first_bad = np.nanmin(np.where(t_seen >= onset[:, None], t_seen, np.nan), axis=1)
    end = np.maximum(end, first_bad + 1.0 / 86400)
    end[~recovers | (end >= t_last)] = np.nan
    lo, hi = (int(v) for v in cfg["cluster_size"])
    size = np.where(rng.random(n_events) < float(cfg["cluster_fraction"]),
                    rng.integers(lo, hi + 1, n_events), 1)
    amp = _amplitudes(rng, cls, amplitudes)
    p_lo, p_hi = telegraph["switch_probability"]
    switch = np.where(cls == "TELEGRAPH", rng.uniform(p_lo, p_hi, n_events), np.nan)

    rows = []
    cluster_id = 0
    for e in range(n_events):
        members = [(int(sy[e]), int(sx[e]))]
        if size[e] > 1:
            members = _grow_cluster(rng, members[0], int(size[e]), placeable)
        cid = cluster_id if len(members) > 1 else -1
        cluster_id += len(members) > 1
        for k, (py, px) in enumerate(members):
            # neighbours of a cluster are fainter versions of its seed pixel
            a = amp[e]
            if k and cls[e] in ADDITIVE:
                a *= rng.uniform(0.3, 1.0)
            rows.append((py, px, cls[e], onset[e], end[e], a, False, e, cid, len(members), switch[e]))
    return pd.DataFrame(rows, columns=TRUTH_COLUMNS)


def telegraph_states(rng: np.random.Generator, switch_prob: np.ndarray, n_exposures: int) -> np.ndarray:
    """(n_pixels, n_exposures) bool: high state of each telegraph pixel in each exposure (time order).

    A two-state Markov chain: the state flips between consecutive exposures with the pixel's
    switching probability; the first state is random.
    """
    p = np.asarray(switch_prob, float)[:, None]
    if n_exposures == 0 or p.size == 0:
        return np.zeros((p.size, n_exposures), bool)
    flips = rng.random((p.shape[0], n_exposures)) < p
    flips[:, 0] = rng.random(p.shape[0]) < 0.5
    return (np.cumsum(flips, axis=1) % 2).astype(bool)


def high_state_mjd(flag: np.ndarray, high: np.ndarray, t_mid: np.ndarray, start: np.ndarray,
                   end: np.ndarray) -> list:
    """The truth table's ``high_mjd`` of each row: for a TELEGRAPH row, the mid-times (MJD) of the
    exposures inside its interval in which it is in its high state, written as one string of
    space-separated numbers (the same in CSV and Parquet; :func:`parse_high_mjd` reads it back);
    None for other rows. ``high`` is (rows, exposures), exposures in time order like ``t_mid``.
    """
    t_mid = np.asarray(t_mid, float)
    on = active(np.asarray(start, float), np.asarray(end, float), t_mid) if len(flag) \
        else np.zeros((0, t_mid.size), bool)
    out = []
    for k in range(len(flag)):
        if flag[k] != "TELEGRAPH":
            out.append(None)
            continue
        out.append(" ".join(repr(float(t)) for t in t_mid[np.asarray(high[k], bool) & on[k]]))
    return out


def parse_high_mjd(value) -> np.ndarray:
    """Mid-times (MJD) of a truth row's high states from its ``high_mjd`` value: a string of
    space-separated numbers (as :func:`high_state_mjd` writes it), a sequence, or empty/None/NaN."""
    if value is None:
        return np.zeros(0)
    if isinstance(value, str):
        return np.array([float(v) for v in value.replace(",", " ").split()], float)
    if isinstance(value, float) and np.isnan(value):
        return np.zeros(0)
    return np.asarray(value, float).ravel()


def active(start: np.ndarray, end: np.ndarray, t: float | np.ndarray) -> np.ndarray:
    """Whether each interval covers mid-time(s) t: start <= t < end, NaN start/end = open."""
    s = np.where(np.isnan(start), -np.inf, start)
    e = np.where(np.isnan(end), np.inf, end)
    t = np.asarray(t)
    if t.ndim == 0:
        return (s <= t) & (t < e)
    return (s[:, None] <= t[None, :]) & (t[None, :] < e[:, None])


def exposure_counts(truth: pd.DataFrame, t_mid: np.ndarray, boxes: list) -> np.ndarray:
    """Number of exposures that see each truth pixel while its interval covers the exposure."""
    y, x = truth["y"].to_numpy(), truth["x"].to_numpy()
    on = active(truth["start_mjd"].to_numpy(float), truth["end_mjd"].to_numpy(float), np.asarray(t_mid))
    inside = np.stack([(y >= b.y0) & (y < b.y1) & (x >= b.x0) & (x < b.x1) for b in boxes], axis=1) \
        if len(boxes) else np.zeros((len(y), 0), bool)
    return (on & inside).sum(axis=1)


def rows_in(box, t_mid: float, y: np.ndarray, x: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Indices of the defects active at ``t_mid`` that lie inside full-frame ``box``."""
    return np.flatnonzero(active(start, end, t_mid) & (y >= box.y0) & (y < box.y1) & (x >= box.x0) & (x < box.x1))


def apply_defects(photon: np.ndarray, ly: np.ndarray, lx: np.ndarray, kind: np.ndarray, amp: np.ndarray,
                  high: np.ndarray) -> None:
    """Put defects into one exposure's noiseless photon signal (DN/s), in place.

    ``ly, lx`` are the defects' (distinct) pixels in ``photon``'s coordinates, ``kind`` their flag
    names, ``amp`` their amplitudes, ``high`` their telegraph state in this exposure (ignored for
    other classes). Multiplicative defects (DEAD, LOW_QE) scale the signal by ``1 - amp``; HOT and
    WARM add ``amp``; TELEGRAPH adds ``amp`` in its high state.
    """
    mult = np.isin(kind, MULTIPLICATIVE)
    photon[ly[mult], lx[mult]] *= 1.0 - amp[mult]
    add = np.where(kind == "TELEGRAPH", amp * high, np.where(np.isin(kind, ("HOT", "WARM")), amp, 0.0))
    photon[ly[~mult], lx[~mult]] += add[~mult]
