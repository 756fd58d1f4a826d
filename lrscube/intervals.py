"""The intervals contract: one row per pixel and bad interval (``y``, ``x``, ``flag``,
``start_mjd``, ``end_mjd``, ...). A pixel is bad for an exposure whose mid-time t has
``start_mjd <= t < end_mjd``; a NaN start means since before the first exposure, a NaN end still
bad. Detection writes such tables, the mask cube is built from them, the simulator's truth uses
the same rule; every reader asks this module which times an interval covers.
"""

from __future__ import annotations

import numpy as np


def bounds(start, end) -> tuple[np.ndarray, np.ndarray]:
    """The intervals' start and end as float arrays with the open ends made infinite."""
    s = np.asarray(start, float)
    e = np.asarray(end, float)
    return np.where(np.isnan(s), -np.inf, s), np.where(np.isnan(e), np.inf, e)


def active(start, end, t) -> np.ndarray:
    """Whether each interval covers mid-time(s) ``t``: shape (n_intervals, n_times); a scalar
    ``t`` (or a single interval given as scalars) drops that axis."""
    s, e = bounds(start, end)
    t = np.asarray(t, float)
    if t.ndim == 0 or s.ndim == 0:
        return (s <= t) & (t < e)
    return (s[:, None] <= t[None, :]) & (t[None, :] < e[:, None])
