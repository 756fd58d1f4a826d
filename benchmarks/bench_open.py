"""Reading the cube and the mask in plain xarray, next to lrscube's own frame reader, in one run.

    python benchmarks/bench_open.py --workdir /work/bench_open --n 120 --rounds 3

A cube of N synthetic full-frame exposures (written once by lrscube's writer, as
``bench_detect.py`` makes them) and a mask cube of E epochs over it. Each round times, in this
process, on dask's threaded scheduler (``--threads``, default the machine's cores):

- **lrscube reader**: ``lrscube.storage.cube.read_frames`` (what detect reads with) on batches of
  ``--batch`` exposures, one dask task per batch, reducing sci (nanmean), err (nanmean) and dq
  (bitwise OR) over time.
- **xarray, shard chunks**: what docs/notebook.md shows a user without lrscube:
  ``xr.open_zarr(STORE/exposures, chunks={"y": -1, "x": -1})``: one dask chunk per exposure
  (the store's shard), the same three reductions.
- **xarray, default chunks**: ``xr.open_zarr(STORE/exposures)``: zarr's inner (1, 256, 258)
  chunks, 16 dask tasks per exposure.
- **lrscube.open_cube**: the same three reductions on ``open_cube(store)`` (time-sorted).
- **sci only**: ``sci.mean("time")`` with shard chunks and with default chunks.
- **mask**: one ``dq.sel(time=t, method="ffill")`` per epoch (t an hour after its start) on
  ``xr.open_zarr(STORE/MASK, chunks={"y": -1, "x": -1})`` (MASK: ``detect.json``'s
  ``outputs.mask``) opened once, against ``lrscube.mask_at`` on ``open_mask(store)`` opened once
  (lrscube's reader of the mask), one ``sel`` of every query at once, and reading each epoch's
  frame with zarr directly (the floor).

Read rates are exposures (3 planes) per second; the ratio is the xarray rate over lrscube's
reader's (1.0 = as fast; the target is >= 0.7). The page cache is warm (every round reads
the same store).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def write_store(store: str, n: int, epochs: int) -> None:
    """N synthetic full-frame exposures (bench_detect.make_exposure) and a mask of ``epochs``."""
    import pandas as pd

    from bench_detect import make_exposure
    from lrscube.storage import cube
    from lrscube.config import profiles
    from lrscube.masks import maskcube as mc

    if cube.exists(store) and cube.n_committed(store) >= n:
        return
    prof = profiles.load("lrs")
    cube.create(store, prof)
    app = cube.Append(store)
    start = app.room(n)
    arrays = app.data_arrays()
    metas = []
    for i in range(n):
        e, t = make_exposure(i, seed=0, n_total=n)
        cube.write_exposure(store, start + i, e, arrays)
        metas.append({"mjd": 60000.0 + i * 0.5, "expstart": 60000.0 + i * 0.5 - 0.01, "exptime": t, "nints": 1,
                      "filename": f"bench_{i:05d}", "subarray": "FULL", "exp_type": "MIR_LRS-FIXEDSLIT",
                      "detector": "MIRIMAGE", "bunit": "DN/s", "y0": 0, "x0": 0, "ny": 1024, "nx": 1032})
    app.commit(start, metas, [cube.written(arrays)])
    app.close()
    rng = np.random.default_rng(1)
    k = 4000
    edges = 60000.0 + np.linspace(0, n * 0.5, epochs + 1)[1:-1]
    iv = pd.DataFrame({"y": rng.integers(0, 1024, k), "x": rng.integers(4, 1028, k),
                       "flag": rng.choice(["HOT", "WARM", "DEAD"], k),
                       "start_mjd": rng.choice(np.r_[np.nan, edges], k), "end_mjd": np.nan})
    mc.write_mask_cube(store, iv, prof, cube.exposure_table(store))


def reduce3(sci, err, dq):
    """The three reductions over time (axis 0) of one block: sums and counts to combine."""
    with np.errstate(invalid="ignore"):
        return (np.nansum(sci, 0), np.isfinite(sci).sum(0), np.nansum(err, 0), np.isfinite(err).sum(0),
                np.bitwise_or.reduce(dq, 0))


def lrscube_reader(url: str, n: int, batch: int):
    import dask

    from lrscube.storage.cube import read_frames

    def one(rows):
        return reduce3(*read_frames(url, rows))

    parts = dask.compute(*[dask.delayed(one)(list(range(b, min(n, b + batch)))) for b in range(0, n, batch)])
    s, c, e, ce, d = (sum(p[i] for p in parts) if i < 4 else np.bitwise_or.reduce([p[4] for p in parts])
                      for i in range(5))
    return s / c, e / ce, d


def xarray_three(ds):
    import dask
    import xarray as xr  # noqa: F401

    return dask.compute(ds.sci.mean("time"), ds.err.mean("time"), ds.dq.max("time"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--n", type=int, default=120, help="exposures in the cube")
    ap.add_argument("--epochs", type=int, default=12, help="epochs of the mask cube")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16, help="exposures per lrscube reader task")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args(argv)

    import warnings

    import dask
    import xarray as xr
    import zarr

    import lrscube
    from lrscube.storage.cube import cube_url

    warnings.filterwarnings("ignore", message=".*consolidated.*")
    os.makedirs(a.workdir, exist_ok=True)
    store = str(Path(a.workdir) / f"open-{a.n}.zarr")
    t0 = time.perf_counter()
    write_store(store, a.n, a.epochs)
    print(f"store {store}: {a.n} full-frame exposures ({time.perf_counter() - t0:.0f} s to make or find)")
    url, n = cube_url(store), a.n
    from lrscube.masks.maskcube import mask_url

    murl = mask_url(store)  # the last detect run's mask cube (detect.json's outputs)
    dask.config.set(scheduler="threads", num_workers=a.threads)

    def shard_chunks():
        return xr.open_zarr(url, chunks={"y": -1, "x": -1}).isel(time=slice(0, n))

    def default_chunks():
        return xr.open_zarr(url).isel(time=slice(0, n))

    cases = {
        "lrscube reader (read_frames, 3 planes)": lambda: lrscube_reader(url, n, a.batch),
        "xarray, shard chunks (3 planes)": lambda: xarray_three(shard_chunks()),
        "xarray, default chunks (3 planes)": lambda: xarray_three(default_chunks()),
        "lrscube.open_cube (3 planes)": lambda: xarray_three(lrscube.open_cube(store)),
        "xarray, shard chunks, sci only": lambda: shard_chunks().sci.mean("time").compute(),
        "xarray, default chunks, sci only": lambda: default_chunks().sci.mean("time").compute(),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    ref = None
    for _ in range(a.rounds):
        for name, f in cases.items():
            t = time.perf_counter()
            out = f()
            times[name].append(time.perf_counter() - t)
            if name.endswith("(3 planes)"):
                m = np.asarray(out[0])
                if ref is None:
                    ref = m
                elif not np.allclose(m, ref, equal_nan=True, rtol=1e-5):
                    raise SystemExit(f"{name}: the mean differs from the lrscube reader's")

    base = statistics.median(times["lrscube reader (read_frames, 3 planes)"])
    print(f"{a.rounds} rounds, {a.threads} threads, median per case; rate in exposures per second; "
          f"ratio = rate / the lrscube reader's")
    print(f"{'case':42s} {'time':>8s} {'per exp.':>9s} {'rate':>8s} {'ratio':>6s}   all rounds")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:42s} {med:7.2f}s {1e3 * med / n:7.1f}ms {n / med:8.1f} {base / med:6.2f}   "
              + " ".join(f"{t:.2f}" for t in ts))

    # the mask: every epoch's frame by time, through xarray and through lrscube.mask_at (both on a
    # dataset opened once), against zarr reads of the frames (the floor)
    mask = xr.open_zarr(murl, chunks={"y": -1, "x": -1})
    lmask = lrscube.open_mask(store)
    times_m = mask["time"].values
    queries = times_m + np.timedelta64(1, "h")  # an hour into each epoch
    arr = zarr.open_array(str(Path(murl) / "dq"), mode="r")
    mcases = {
        "lrscube.mask_at(open_mask(store), t)": lambda: [lrscube.mask_at(lmask, q) for q in queries],
        "xarray dq.sel(time=t, method='ffill')": lambda: [mask.dq.sel(time=q, method="ffill").values
                                                          for q in queries],
        "xarray, every t in one sel": lambda: mask.dq.sel(time=queries, method="ffill").values,
        "zarr, each epoch's frame (floor)": lambda: [arr[i] for i in range(len(times_m))],
    }
    mt: dict[str, list[float]] = {k: [] for k in mcases}
    for _ in range(max(a.rounds, 7)):
        for name, f in mcases.items():
            t = time.perf_counter()
            f()
            mt[name].append(time.perf_counter() - t)
    mbase = statistics.median(mt["lrscube.mask_at(open_mask(store), t)"])
    print(f"mask cube, {len(times_m)} epochs (opened once, then one query per epoch); "
          "ratio = rate / lrscube.mask_at's:")
    for name, ts in mt.items():
        med = statistics.median(ts)
        print(f"{name:42s} {med:7.3f}s {1e3 * med / len(times_m):7.1f}ms per epoch, ratio {mbase / med:5.2f}   "
              + " ".join(f"{t:.3f}" for t in ts))

if __name__ == "__main__":
    main()
