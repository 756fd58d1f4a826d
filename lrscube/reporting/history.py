"""One pixel's history: its robust local residual in every exposure, and when it was flagged.

``pixel_history(store, y, x)`` reads only a small window of the exposure cube around the pixel
(the pixel and ``half_width`` neighbours on each side along the dispersion axis, all exposures)
and returns an xarray Dataset over time that plots with ``.plot()``::

    >>> h = pixel_history("run.zarr", 120, 40)        # doctest: +SKIP
    >>> h.residual.plot(marker="o", ls="")             # doctest: +SKIP

The numerics are pure functions of numpy arrays (:func:`local_residual`, :func:`bad_at`);
:func:`pixel_history` only reads the window and wraps the result.

Residual: pixel minus the NaN-median of its neighbours along the dispersion axis (y for LRS,
``dispersion_axis`` in the mode profile), the pixel itself excluded, neighbours flagged
DO_NOT_USE or not finite ignored. Along the dispersion axis the sky changes slowly (it is the
sky's spectrum), while across it the slit edges make it change abruptly: the median of a short
run along the dispersion axis is a good local sky and keeps single-pixel defects in the residual.
Its uncertainty combines the pixel's ERR with that of the median (1.2533 x median neighbour ERR
/ sqrt(number of neighbours)); ``significance = residual / err``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import xarray as xr

from ..config import flags, profiles
from ..storage import store as st
from ..storage.cube import open_cube
from ..intervals import active

#: standard error of a median relative to that of a mean, for Gaussian noise
MEDIAN_EFFICIENCY = 1.2533


def open_intervals_or_none(store: str) -> pd.DataFrame | None:
    """The store's intervals table, or None when detection has not written one yet.

    Uses ``lrscube.detection.detect.open_intervals`` when that module exists (it owns the table's
    reading); until then reads the Parquet table directly.
    """
    try:
        from ..detection.detect import open_intervals
    except ImportError:
        def open_intervals(s):
            return st.read_table(s, st.INTERVALS)
    try:
        return open_intervals(store)
    except FileNotFoundError:
        return None


def local_residual(sci: np.ndarray, err: np.ndarray, dq: np.ndarray, centre: int) -> dict[str, np.ndarray]:
    """Residual of column ``centre`` against the NaN-median of the other columns, per row.

    Parameters
    ----------
    sci, err, dq : arrays (n_times, window)
        The pixel and its neighbours along the dispersion axis, one row per exposure.
    centre : int
        Index of the pixel in the window.

    Returns
    -------
    dict of arrays (n_times,)
        ``sci`` (the pixel), ``reference`` (neighbour median), ``residual``, ``err``,
        ``significance``, ``n_neighbours``.

    Example
    -------
    >>> s = np.array([[1.0, 1.0, 5.0, 1.0, 1.0]])
    >>> local_residual(s, np.ones_like(s), np.zeros(s.shape, "uint32"), 2)["residual"]
    array([4.])
    """
    sci = np.asarray(sci, "float64")
    err = np.asarray(err, "float64")
    dq = np.asarray(dq, "uint32")
    keep = np.ones(sci.shape[1], bool)
    keep[centre] = False
    nb, ne, nd = sci[:, keep], err[:, keep], dq[:, keep]
    usable = np.isfinite(nb) & ((nd & np.uint32(flags.DO_NOT_USE)) == 0)
    nb = np.where(usable, nb, np.nan)
    ne = np.where(usable, ne, np.nan)
    n = usable.sum(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: exposures not covering the window
        ref = np.nanmedian(nb, axis=1)
        ref_err = MEDIAN_EFFICIENCY * np.nanmedian(ne, axis=1) / np.sqrt(np.maximum(n, 1))
    pix = sci[:, centre]
    res = pix - ref
    e = np.sqrt(err[:, centre] ** 2 + ref_err**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        sig = np.where(e > 0, res / e, np.nan)
    return {"sci": pix, "reference": ref, "residual": res, "err": e, "significance": sig,
            "n_neighbours": n.astype("int32")}


def bad_at(mjd: np.ndarray, intervals: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Which times fall in an interval of ``intervals`` (one pixel's rows), and which flags.

    Contract rule: bad when ``start_mjd <= t < end_mjd``; NaN start = since before the first
    exposure, NaN end = still bad. Returns ``(bad, flag)``: bool array and string array
    (flag names joined by ``+`` where intervals overlap, "" where good).
    """
    mjd = np.asarray(mjd, "float64")
    bad = np.zeros(mjd.shape, bool)
    names = [[] for _ in range(mjd.size)]
    if intervals is not None and len(intervals):
        for start, end, flag in zip(intervals["start_mjd"].to_numpy(float), intervals["end_mjd"].to_numpy(float),
                                    intervals["flag"].astype(str), strict=True):
            hit = active(np.array([start]), np.array([end]), mjd)[0]
            bad |= hit
            for i in np.flatnonzero(hit):
                if flag not in names[i]:
                    names[i].append(flag)
    return bad, np.array(["+".join(n) for n in names], dtype=object)


def _profile_axis(ds: xr.Dataset, profile) -> str:
    prof = profiles.load(profile or ds.attrs.get("profile") or None)
    return prof.dispersion_axis


def pixel_history(store: str, y: int, x: int, half_width: int = 7, *, profile=None,
                  intervals: pd.DataFrame | None = None, dropna: bool = True,
                  cube: xr.Dataset | None = None) -> xr.Dataset:
    """The robust local residual of pixel (y, x) in every exposure, and its bad intervals.

    Parameters
    ----------
    store : str
        lrscube store (path or fsspec URL) holding an exposure cube.
    y, x : int
        0-based full-frame row and column.
    half_width : int
        Neighbours on each side along the dispersion axis used for the local sky (default 7).
    profile : str or Profile, optional
        Mode profile for the dispersion axis; default the cube's own profile.
    intervals : DataFrame, optional
        Intervals table (``y, x, flag, start_mjd, end_mjd``); default the store's, if any.
    dropna : bool
        Drop exposures whose footprint does not cover the pixel (SCI NaN and DQ 0).
    cube : xarray.Dataset, optional
        The store's exposure cube already opened with ``open_cube`` (saves re-opening it when
        drawing many pixels).

    Returns
    -------
    xarray.Dataset over ``time`` (mid-exposure, datetime64) with coordinates ``mjd``,
    ``subarray``, ``exp_type``, ``filename``, and variables ``sci``, ``reference``,
    ``residual``, ``err``, ``significance``, ``n_neighbours``, ``dq`` (the pixel's own DQ),
    ``bad`` (bool, from the intervals) and ``flag`` (class names active at that time).
    Attributes: ``y``, ``x``, ``half_width``, ``dispersion_axis``, ``n_intervals``.

    Example
    -------
    >>> h = pixel_history("run.zarr", 120, 40)             # doctest: +SKIP
    >>> h.significance.plot(marker=".", ls="")              # doctest: +SKIP
    """
    ds = cube if cube is not None else open_cube(store)
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    y, x = int(y), int(x)
    if not (0 <= y < ny and 0 <= x < nx):
        raise ValueError(f"pixel (y={y}, x={x}) is outside the {ny} x {nx} frame of {store}")
    axis = _profile_axis(ds, profile)
    if axis == "y":
        lo, hi = max(0, y - half_width), min(ny, y + half_width + 1)
        win = ds[["sci", "err", "dq"]].isel(y=slice(lo, hi), x=x)
        centre = y - lo
    else:
        lo, hi = max(0, x - half_width), min(nx, x + half_width + 1)
        win = ds[["sci", "err", "dq"]].isel(y=y, x=slice(lo, hi))
        centre = x - lo
    win = win.load()
    r = local_residual(win["sci"].values, win["err"].values, win["dq"].values, centre)
    pix_dq = win["dq"].values[:, centre].astype("uint32")

    coords = {"time": ds["time"].values}
    for c in ("mjd", "subarray", "exp_type", "filename", "exptime"):
        if c in ds.coords:
            coords[c] = ("time", ds[c].values)
    mjd = ds["mjd"].values if "mjd" in ds.coords else \
        (ds["time"].values.astype("datetime64[us]") - np.datetime64("1858-11-17", "us")).astype("int64") / 86400e6
    if intervals is None:
        intervals = open_intervals_or_none(store)
    mine = None
    if intervals is not None and len(intervals):
        mine = intervals[(intervals["y"].to_numpy() == y) & (intervals["x"].to_numpy() == x)]
    bad, flag = bad_at(mjd, mine)

    unit = ds["sci"].attrs.get("units", ds.attrs.get("bunit", ""))
    out = xr.Dataset(
        {
            "sci": ("time", r["sci"], {"long_name": "pixel value", "units": unit}),
            "reference": ("time", r["reference"], {"long_name": f"median of neighbours along {axis}", "units": unit}),
            "residual": ("time", r["residual"], {"long_name": "local residual", "units": unit}),
            "err": ("time", r["err"], {"long_name": "1-sigma uncertainty of residual", "units": unit}),
            "significance": ("time", r["significance"], {"long_name": "residual / err"}),
            "n_neighbours": ("time", r["n_neighbours"], {"long_name": "neighbours used"}),
            "dq": ("time", pix_dq, {"long_name": "pixel DQ bits in the exposure"}),
            "bad": ("time", bad, {"long_name": "flagged by the defect intervals"}),
            "flag": ("time", flag, {"long_name": "defect classes active"}),
        },
        coords=coords,
        attrs={"y": y, "x": x, "half_width": int(half_width), "dispersion_axis": axis,
               "n_intervals": 0 if mine is None else int(len(mine)), "store": str(store)},
    )
    if dropna:
        covered = np.isfinite(r["sci"]) | (pix_dq != 0)
        out = out.isel(time=np.flatnonzero(covered))
    return out
