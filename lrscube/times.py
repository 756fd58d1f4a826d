"""Times: MJD (UTC) <-> numpy datetime64, and the USEAFTER text format; one home for both."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

#: MJD 0 as a numpy datetime (UTC)
MJD0 = np.datetime64("1858-11-17T00:00:00", "us")
#: seconds per day
DAY = 86400.0


def mjd_to_datetime64(mjd) -> np.ndarray:
    """MJD (UTC) float(s) -> datetime64[us], rounded to the microsecond."""
    mjd = np.asarray(mjd, dtype="float64")
    us = np.round(mjd * DAY * 1e6).astype("int64")
    return MJD0 + us.astype("timedelta64[us]")


def datetime64_to_mjd(t) -> np.ndarray | float:
    """datetime64 value(s) -> MJD float(s)."""
    t = np.asarray(t, dtype="datetime64[us]")
    out = (t - MJD0).astype("int64") / (DAY * 1e6)
    return float(out) if out.ndim == 0 else out


#: times any lrscube input may name (a USEAFTER before every exposure included): 1900-2200
TIME_RANGE = (np.datetime64("1900-01-01", "us"), np.datetime64("2200-01-01", "us"))


def to_datetime64(time: Any) -> np.datetime64:
    """A time as datetime64[us] (UTC).

    Accepts an ISO string (``2023-05-01``, ``2023-05-01T12:00:00``), an MJD number or numeric
    string (``60065.5``), ``datetime``/``date`` (naive = UTC), ``numpy.datetime64``,
    ``pandas.Timestamp`` or ``astropy.time.Time``. Raises ValueError for what is no time
    (``""``, NaN, infinity, NaT) and for a time outside :data:`TIME_RANGE`.
    """
    t = _to_datetime64(time)
    if np.isnat(t):
        raise ValueError(f"cannot read time {time!r}: not a time; give an ISO date/time (2023-05-01T12:00:00) "
                         "or an MJD")
    if not TIME_RANGE[0] <= t < TIME_RANGE[1]:
        raise ValueError(f"time {time!r} ({t}) is outside the years 1900-2200")
    return t


def _to_datetime64(time: Any) -> np.datetime64:
    if isinstance(time, np.datetime64):
        return time.astype("datetime64[us]")
    if isinstance(time, (int, float, np.integer, np.floating)) and not isinstance(time, bool):
        return _mjd_checked(float(time), time)
    if hasattr(time, "utc") and hasattr(time, "isot"):  # astropy Time
        return np.datetime64(time.utc.isot, "us")
    if isinstance(time, str):
        text = time.strip()
        try:
            number = float(text)
        except ValueError:
            number = None
        if number is not None:
            return _mjd_checked(number, time)
        try:
            ts = pd.Timestamp(text)
        except (ValueError, TypeError, OverflowError):
            raise ValueError(f"cannot read time {time!r}: give an ISO date/time (2023-05-01T12:00:00) or an MJD") from None
        time = ts
    if isinstance(time, (pd.Timestamp, datetime)):
        ts = pd.Timestamp(time)
        if ts.tzinfo is not None:
            ts = ts.tz_convert("UTC").tz_localize(None)
        return np.datetime64(ts.to_datetime64(), "us")
    if isinstance(time, date):
        return np.datetime64(time.isoformat(), "us")
    raise TypeError(f"cannot read time {time!r} of type {type(time).__name__}")


def _mjd_checked(mjd: float, given: Any) -> np.datetime64:
    # an MJD beyond the years 1900-2200 is refused before it is converted (it could overflow)
    lo, hi = (datetime64_to_mjd(t) for t in TIME_RANGE)
    if not np.isfinite(mjd) or not lo <= mjd < hi:
        raise ValueError(f"time {given!r}: MJD {mjd:g} is not a time in the years 1900-2200 (MJD {lo:.0f} to {hi:.0f})")
    return mjd_to_datetime64(mjd)[()]


def floor_second(t) -> np.ndarray:
    """Round datetime64 value(s) down to the whole second."""
    return np.asarray(t, dtype="datetime64[us]").astype("datetime64[s]")


def isot(t) -> str:
    """``YYYY-MM-DDThh:mm:ss`` (rounded down to the second), the USEAFTER format."""
    return str(np.datetime64(t, "s"))
