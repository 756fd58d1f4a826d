"""The simulator's static defects and truth-table helpers.

Pure functions of numpy arrays and a random generator, used by :mod:`lrscube.simulate` (the
new, time-variable defects are the behaviour zoo of :mod:`lrscube.validation.sim_behaviours`):

- :func:`draw_static` and :func:`static_columns` draw the defects present before the first
  exposure, on the pixels the exposures see;
- :func:`exposure_counts` counts the exposures that see each defect while it is bad;
- :func:`high_state_mjd` / :func:`parse_high_mjd` write and read a row's ``high_mjd``;
- :func:`apply_defects` puts steady defects into a noiseless image (used by lrscube.reporting.spectra).

The population is a pandas DataFrame in the truth-table layout of /work/TRUTH-SCHEMA.md (one row
per pixel and bad interval; 0-based full-frame ``y, x``; ``flag`` a stdatamodels DQ bit name; a
pixel is bad for an exposure whose mid-time t has ``start_mjd <= t < end_mjd``, NaN start =
before the first exposure, NaN end = still bad at the last; ``behaviour`` the zoo name).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .sim_behaviours import ADDITIVE, MULTIPLICATIVE, ROW_COLUMNS, draw_classes, rows_frame  # noqa: F401
from ..intervals import active


def empty_truth() -> pd.DataFrame:
    """A truth table with no rows and the right column types."""
    return rows_frame([])


def _static_rows(y: np.ndarray, x: np.ndarray, flag, behaviour: str) -> pd.DataFrame:
    n = len(y)
    df = pd.DataFrame({"y": np.asarray(y, np.int64), "x": np.asarray(x, np.int64)})
    df["flag"] = np.broadcast_to(np.asarray(flag, dtype=object), (n,)).copy() if n else np.zeros(0, object)
    for c in ROW_COLUMNS:
        if c not in df:
            df[c] = np.nan
    df["static"] = True
    df["behaviour"] = behaviour
    df["event_id"], df["cluster_id"], df["cluster_size"], df["episode"] = -1, -1, 1, 1
    df["effect"] = "static"
    return df[ROW_COLUMNS].astype(rows_frame([]).dtypes.to_dict())


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
    return _static_rows(y, x, draw_classes(rng, cfg["classes"], n), "static")


def static_columns(seen_any: np.ndarray, box, flag: str) -> pd.DataFrame:
    """One static row per pixel of a known bad region (the shorted columns) that some exposure sees."""
    inside = np.zeros_like(seen_any)
    inside[box.y0:box.y1, box.x0:box.x1] = True
    y, x = np.nonzero(inside & seen_any)
    if y.size == 0:
        return empty_truth()
    return _static_rows(y, x, flag, "shorted_columns")


def high_state_mjd(listed: np.ndarray, high: np.ndarray, t_mid: np.ndarray, start: np.ndarray,
                   end: np.ndarray) -> list:
    """The truth table's ``high_mjd`` of each row: for a ``listed`` row (a switching or noisy one),
    the mid-times (MJD) of the exposures inside its interval in which it is in its high (bad)
    state, written as one string of space-separated numbers (the same in CSV and Parquet;
    :func:`parse_high_mjd` reads it back); None for other rows. ``high`` is (rows, exposures),
    exposures in time order like ``t_mid``.
    """
    t_mid = np.asarray(t_mid, float)
    on = active(np.asarray(start, float), np.asarray(end, float), t_mid) if len(listed) \
        else np.zeros((0, t_mid.size), bool)
    out = []
    for k in range(len(listed)):
        if not listed[k]:
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


def exposure_counts(truth: pd.DataFrame, t_mid: np.ndarray, boxes: list) -> np.ndarray:
    """Number of exposures that see each truth pixel while its interval covers the exposure."""
    y, x = truth["y"].to_numpy(), truth["x"].to_numpy()
    on = active(truth["start_mjd"].to_numpy(float), truth["end_mjd"].to_numpy(float), np.asarray(t_mid))
    inside = np.stack([(y >= b.y0) & (y < b.y1) & (x >= b.x0) & (x < b.x1) for b in boxes], axis=1) \
        if len(boxes) else np.zeros((len(y), 0), bool)
    return (on & inside).sum(axis=1)


def rows_in(box, t_mid: float, y: np.ndarray, x: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Indices of the rows acting at ``t_mid`` (``start <= t < end``) that lie inside full-frame ``box``."""
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
