"""Small hand-made lrscube stores for the report, plots and history tests.

Built with the cube module's own append/commit functions (no dask cluster, no FITS files), so
they are fast; the intervals table, ingest log and mask cube are written following the design
contracts, independently of the modules that normally write them.
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import xarray as xr

from lrscube.storage import cube
from lrscube.config import profiles
from lrscube.config import flags
from lrscube.masks import maskcube as mc
from lrscube.storage import store as st

MJD0 = 60000.0
#: SLITLESSPRISM footprint, 0-based: rows 528..943, columns 0..71
SLY0, SLX0, SLNY, SLNX = 528, 0, 416, 72

#: defects injected into the cube: (y, x, flag, start index or None, end index or None, amplitude)
DEFECTS = [
    (700, 40, "HOT", 12, None, 30.0),        # appears at exposure 12, still bad
    (650, 20, "WARM", 5, 25, 4.0),           # appears at 5, recovers at 25
    (800, 50, "DEAD", None, None, -9.0),     # dead from the start (sky 10 -> ~1)
    (600, 60, "TELEGRAPH", 20, None, 6.0),
]


def exposure_mjd(n: int) -> np.ndarray:
    return MJD0 + 3.0 * np.arange(n) + 0.5  # every 3 days, spanning several months for n >= 40


def make_cube(store, n: int = 36, n_full: int = 2, seed: int = 0, defects=DEFECTS) -> np.ndarray:
    """Exposure cube: ``n`` exposures, the first ``n_full`` full frame, the rest SLITLESSPRISM."""
    rng = np.random.default_rng(seed)
    prof = profiles.load("lrs")
    cube.create(str(store), prof)
    mjd = exposure_mjd(n)
    app = cube.Append(str(store))
    start = app.room(n)
    arrays = app.data_arrays()
    metas = []
    for i in range(n):
        full = i < n_full
        y0, x0, ny, nx = (0, 0, 1024, 1032) if full else (SLY0, SLX0, SLNY, SLNX)
        yy = np.arange(y0, y0 + ny)[:, None]
        sci = (10.0 + 2.0 * np.sin(yy / 150.0) + rng.normal(0, 0.3, (ny, nx))).astype("float32")
        for y, x, flag, a, b, amp in defects:
            if not (y0 <= y < y0 + ny and x0 <= x < x0 + nx):
                continue
            on = (a is None or i >= a) and (b is None or i < b)
            if flag == "TELEGRAPH":
                on = on and (i % 2 == 0)
            if on:
                sci[y - y0, x - x0] += amp
        err = np.full((ny, nx), 0.3, "float32")
        dq = np.zeros((ny, nx), "uint32")
        cube.write_exposure(str(store), start + i, SimpleNamespace(sci=sci, err=err, dq=dq, y0=y0, x0=x0), arrays)
        metas.append({"mjd": mjd[i], "expstart": mjd[i] - 0.001, "exptime": 100.0,
                      "exp_type": "MIR_LRS-FIXEDSLIT" if full else "MIR_LRS-SLITLESS",
                      "subarray": "FULL" if full else "SLITLESSPRISM", "detector": "MIRIMAGE",
                      "program": "01234" if i % 2 else "05678", "observation": "001", "visit": "001",
                      "exposure": f"{i:05d}", "filename": f"jw_{i:03d}_rate.fits", "source": "",
                      "product": "rate", "content_hash": f"h{i}", "exposure_key": f"k{i}", "nints": 1,
                      "bunit": "DN/s", "y0": y0, "x0": x0, "ny": ny, "nx": nx})
    app.commit(start, metas, [cube.written(arrays)])
    app.close()
    return mjd


def intervals_table(mjd: np.ndarray, defects=DEFECTS) -> pd.DataFrame:
    """The intervals a perfect detector would report for ``defects`` (contract columns)."""
    rows = []
    for y, x, flag, a, b, amp in defects:
        rows.append({"y": y, "x": x, "flag": flag,
                     "start_mjd": np.nan if a is None else mjd[a] - 0.01,
                     "end_mjd": np.nan if b is None else mjd[b] - 0.01,
                     "dq": 0, "amplitude": amp, "significance": abs(amp) / 0.3,
                     "n_bad": 10, "last_good_mjd": np.nan, "first_bad_mjd": np.nan, "first_good_mjd": np.nan})
    df = pd.DataFrame(rows)
    from lrscube.config import flags

    df["dq"] = [flags.value(f) for f in df["flag"]]
    return df.astype({"dq": "uint32"})


def write_ingest_log(store, n: int) -> pd.DataFrame:
    rows = [{"file": f"jw_{i:03d}_rate.fits", "status": "ingested", "reason": "", "when": "2024-01-01T00:00:00"}
            for i in range(n)]
    rows += [{"file": "bad_rate.fits", "status": "rejected", "reason": "not a FITS file <script>", "when": "2024-01-01"},
             {"file": "nrs_rate.fits", "status": "rejected", "reason": "instrument 'NIRSPEC' is not MIRI", "when": "2024-01-01"},
             {"file": "copy_rate.fits", "status": "duplicate", "reason": "same SCI as jw_000", "when": "2024-01-01"}]
    df = pd.DataFrame(rows)
    st.write_table(str(store), st.INGEST_LOG, df)
    return df


def write_mask(store, intervals: pd.DataFrame, mjd: np.ndarray, frame=(1024, 1032)) -> xr.Dataset:
    """A mask cube following the contract: one epoch wherever any pixel's state changes."""
    lo = np.where(np.isnan(intervals.start_mjd), -np.inf, intervals.start_mjd)
    hi = np.where(np.isnan(intervals.end_mjd), np.inf, intervals.end_mjd)
    states = np.array([(lo <= t) & (t < hi) for t in mjd])  # (time, interval)
    first = [0] + [i for i in range(1, len(mjd)) if (states[i] != states[i - 1]).any()]
    dq = np.zeros((len(first), *frame), "uint32")
    for k, i in enumerate(first):
        for j in np.flatnonzero(states[i]):
            dq[k, intervals.y.iat[j], intervals.x.iat[j]] |= np.uint32(intervals.dq.iat[j])
    t = np.datetime64("1858-11-17", "ns") + (np.asarray(mjd)[first] * 86400e9).astype("timedelta64[ns]")
    ds = xr.Dataset({"dq": (("time", "y", "x"), dq)},
                    coords={"time": t, "mjd": ("time", np.asarray(mjd)[first]),
                            "y": np.arange(frame[0]), "x": np.arange(frame[1])},
                    attrs={"valid_from": "2023-02-25T00:00:00"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.chunk({"time": 1}).to_zarr(st.zarr_store(st.join(str(store), st.MASK)), mode="w", zarr_format=3,
                                      consolidated=False)
    return ds


def make_store(path, n: int = 36, with_intervals: bool = True, with_mask: bool = True, with_log: bool = True,
               n_full: int = 2):
    """A whole small store; returns (store, mjd, intervals or None)."""
    store = str(path)
    mjd = make_cube(store, n, n_full=n_full)
    iv = intervals_table(mjd) if with_intervals else None
    if with_intervals:
        st.write_table(store, st.INTERVALS, iv)
    if with_mask and with_intervals:
        write_mask(store, iv, mjd)
    if with_log:
        write_ingest_log(store, n)
    return store, mjd, iv


def build_store(path, min_epoch_days=0.0):
    """A store with 10 exposures (FULL and SLITLESSPRISM alternating, 10 days apart from
    60000.5), six intervals (HOT, WARM, DEAD in and outside the slitless footprint) and their
    mask cube: what the CRDS export, delivery and provenance tests export."""
    HOT, WARM, DEAD, DNU = flags.value("HOT"), flags.value("WARM"), flags.value("DEAD"), flags.DO_NOT_USE
    T0 = 60000.5 + 0.5 / 86400  # 2023-02-25T12:00:00.5
    n = 10
    start = T0 + np.arange(n) * 10.0
    exp = pd.DataFrame({"expstart": start, "mjd": start + 50 / 86400, "exptime": 100.0,
                        "program": ["01234"] * 5 + ["04567"] * 5,
                        "filename": [f"e{i}_rate.fits" for i in range(n)],
                        "subarray": ["FULL", "SLITLESSPRISM"] * 5,
                        # footprints (0-based), so merge costs count only pixels an exposure sees
                        "y0": [0, 528] * 5, "x0": 0, "ny": [1024, 416] * 5, "nx": [1032, 72] * 5})
    iv = pd.DataFrame({
        # in the slitless footprint: HOT from the start, WARM from exp 3, DEAD exps 2-7, HOT from exp 6
        # outside it: WARM from exp 4 (full-frame only), HOT throughout
        "y": [600, 700, 800, 900, 100, 300],
        "x": [30, 40, 50, 60, 500, 326],
        "flag": ["HOT", "WARM", "DEAD", "HOT", "WARM", "HOT"],
        "start_mjd": [np.nan, start[3], start[2], start[6], start[4], np.nan],
        "end_mjd": [np.nan, np.nan, start[8], np.nan, np.nan, np.nan],
        "dq": np.array([HOT | DNU, WARM, DEAD | DNU, HOT | DNU, WARM, HOT | DNU], "uint32"),
    })
    st.write_table(str(path), st.INTERVALS, iv)
    mc.write_mask_cube(path, iv, "lrs", exp, min_epoch_days=min_epoch_days)
    return exp, iv
