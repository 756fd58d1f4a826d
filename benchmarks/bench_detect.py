"""detect against lrscube's own read of everything it uses, in one run on one LocalCluster.

    python benchmarks/bench_detect.py --out /work/bench/det --mixed /work/bench/full150/store \
        --n 400 1600 --cube-size 1600

For each cube (``--mixed``: an existing store, e.g. the 150 mixed exposures that
``bench_quality.py`` simulates and ingests; ``--n``: the first N exposures of a synthetic
full-frame cube written here), on ONE LocalCluster of 2 workers x 1 thread (lrscube's dask
defaults, as ``lrscube detect`` starts them), it prints:

- **floor**: ``cube.read_frames`` of sci + err + dq of every exposure, in batches of the size
  detect's stage 1 uses, as tasks on the cluster: the read detect cannot avoid;
- **detect**: ``detect_dataset(ds, work=, source=)`` as ``detect(store)`` runs it, plus the mask
  cube it writes (``maskcube.write_mask_cube``), and the ratio detect / floor;
- the workers' CPU seconds of the floor, of detect and of the xarray rolling median, and their
  ratios: on a machine shared with other jobs, wall time measures the share of the cores the
  workers got as much as the work, CPU time much less so;
- the peak resident memory of the busiest worker during detect (VmHWM, reset before it), the
  work store's size and object count (measured just before it is removed) and its size per
  exposure against the cube's;
- for cubes of at most ``--refs-max-n`` exposures, after every detect: a notebook user's
  ``open_cube(store).sci.mean("time")`` and the plain xarray robust statistic of issue 18,
  ``sci.chunk({"time": -1, "y": 64}).rolling(time=15, center=True).median().std("time")``,
  on the same cluster, and detect's speed-up against the latter.

The synthetic cube is NOT simulated + ingested: full frames (a sky rising along the dispersion,
a per-exposure level, Gaussian noise with ERR from a Poisson + read-noise model, a few thousand
hot/warm pixels switching on at random times) are written directly through ``lrscube.storage.cube``
(create / begin_append / write_exposure / commit). What is measured is the cost of reading and
analysing a cube of this shape, which does not depend on where its numbers came from. One cube
of ``--cube-size`` exposures is written once (the defects' onsets depend on it) and reused.
Figures go to stdout and, as JSON, to ``OUT/bench_detect.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

import numpy as np


class _Exp:
    pass


def make_exposure(i: int, seed: int = 0, ny: int = 1024, nx: int = 1032, n_total: int = 1600):
    rng = np.random.default_rng([seed, i])
    y = np.arange(ny, dtype=np.float32)[:, None]
    level = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    sky = (0.2 + level * (1.0 + 3.0 * np.exp(-y / 300.0))) * np.ones((1, nx), np.float32)
    t = float(np.exp(rng.uniform(np.log(100), np.log(2000))))
    err = np.sqrt(sky / (5.5 * t) + (6.0 / t) ** 2).astype(np.float32)
    sci = (sky + rng.standard_normal((ny, nx)).astype(np.float32) * err).astype(np.float32)
    # a fixed population of defects (same for every exposure: seed only), switching on over time
    drng = np.random.default_rng([seed, 10**6])
    k = 3000
    py, px = drng.integers(0, ny, k), drng.integers(4, nx - 4, k)
    onset = drng.integers(0, n_total, k)
    amp = np.exp(drng.uniform(np.log(0.02), np.log(20.0), k)).astype(np.float32)
    on = onset <= i
    sci[py[on], px[on]] += amp[on]
    dq = np.zeros((ny, nx), np.uint32)
    dq[:, :4] = dq[:, -4:] = 2**31 | 512  # reference columns
    e = _Exp()
    e.sci, e.err, e.dq, e.y0, e.x0 = sci, err, dq, 0, 0
    return e, t


def write_cube(store: str, n: int, client, seed: int = 0):
    from lrscube.storage import cube
    from lrscube.config import profiles

    prof = profiles.load("lrs")
    cube.create(store, prof)
    have = cube.n_committed(store)
    if have >= n:
        return
    app = cube.Append(store)
    start = app.room(n - have)
    arrays = app.data_arrays()

    def one(i):
        e, t = make_exposure(i, seed, n_total=n)
        cube.write_exposure(store, start + (i - have), e, arrays)
        return i, t, cube.written(arrays)  # format 4: the fork the commit merges

    got = client.gather(client.map(one, range(have, n), pure=False))
    out = {i: t for i, t, _ in got}
    metas = [{"mjd": 60000.0 + i * 0.5, "expstart": 60000.0 + i * 0.5 - 0.01, "exptime": out[i], "nints": 1,
              "filename": f"bench_{i:05d}", "subarray": "FULL", "exp_type": "MIR_LRS-FIXEDSLIT",
              "detector": "MIRIMAGE", "bunit": "DN/s", "y0": 0, "x0": 0, "ny": 1024, "nx": 1032}
             for i in range(have, n)]
    app.commit(start, metas, [w for *_, w in got])
    app.close()


def _rss_mb():
    """Peak (VmHWM) and current (VmRSS) resident memory of this process, MB (Linux)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                out["peak" if line.startswith("VmHWM") else "now"] = int(line.split()[1]) / 1024.0
    return out


def _cpu_s():
    """User + system CPU seconds of this process so far."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_now(client) -> tuple[float, float]:
    """(CPU seconds of all workers, of this process: client and scheduler) so far."""
    return sum(client.run(_cpu_s).values()), _cpu_s()


def _reset_peak():
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def tree_bytes(path) -> tuple[int, int]:
    """(bytes, files) under ``path``."""
    size = n = 0
    for d, _, files in os.walk(path):
        for f in files:
            try:
                size += os.stat(os.path.join(d, f)).st_size
                n += 1
            except FileNotFoundError:
                pass
    return size, n


def _read_batch(url, rows):
    from lrscube.storage.cube import read_frames

    sci, err, dq = read_frames(url, rows)
    return sci.nbytes + err.nbytes + dq.nbytes


def read_floor(client, ds, store) -> tuple[float, int]:
    """Wall seconds to read sci + err + dq of every exposure of ``ds`` with ``cube.read_frames``
    on the cluster, in stage 1's batches; and the bytes read (decompressed)."""
    from lrscube.deploy.cluster import worker_threads
    from lrscube.storage.cube import cube_url
    from lrscube.detection.detect import _storage_rows, balanced_batch
    from lrscube.detection.detection_params import DetectionParams

    url = cube_url(store)
    rows = _storage_rows(ds, url)
    n = len(rows)
    b = balanced_batch(n, DetectionParams().work_batch_exposures, worker_threads())
    c0 = cpu_now(client)
    t = time.perf_counter()
    got = client.gather(client.map(_read_batch, [url] * len(range(0, n, b)),
                                   [rows[a:a + b] for a in range(0, n, b)], pure=False))
    t = time.perf_counter() - t
    c1 = cpu_now(client)
    return t, int(sum(got)), c1[0] - c0[0], c1[1] - c0[1]


def run_detect(client, ds, store, work, overrides) -> dict:
    """detect_dataset as detect(store) runs it, then the mask cube; the work store measured
    just before it is removed, the workers' peak memory during it."""
    import importlib

    from lrscube.config import profiles
    from lrscube.storage import store as lst
    from lrscube.storage.cube import cube_url
    from lrscube.masks.maskcube import write_mask_cube

    D = importlib.import_module("lrscube.detection.detect")
    prof = profiles.load("lrs" if "mode" not in ds.attrs else ds.attrs["mode"])
    client.run(_reset_peak)
    c0 = cpu_now(client)
    t = time.perf_counter()
    iv, meta = D.detect_dataset(ds, prof, work=work, source=cube_url(store), **overrides)
    t_det = time.perf_counter() - t
    size, objects = tree_bytes(work)
    shutil.rmtree(work, ignore_errors=True)
    t = time.perf_counter()
    lst.write_table(store, lst.INTERVALS, iv)
    exp = _exposure_table(store, ds)
    write_mask_cube(store, iv, prof, exposures=exp)
    t_mask = time.perf_counter() - t
    c1 = cpu_now(client)
    peak = max(v["peak"] for v in client.run(_rss_mb).values())
    return {"detect_s": t_det + t_mask, "stages_s": t_det, "mask_cube_s": t_mask, "peak_worker_mb": peak,
            "detect_worker_cpu_s": c1[0] - c0[0], "detect_client_cpu_s": c1[1] - c0[1],
            "work_bytes": size, "work_objects": objects, "timing": meta.get("timing"),
            "tiles": meta["tiles"], "intervals": meta["intervals"], "threshold": meta["threshold_sigma"]}


def _exposure_table(store, ds):
    from lrscube.storage.cube import exposure_table

    exp = exposure_table(store)
    if "filename" in exp:
        exp = exp[exp["filename"].isin(set(ds["filename"].values))]
    return exp


def xarray_refs(client, store, n) -> dict:
    """A notebook user's mean over time, and the plain xarray rolling median of issue 18."""
    from lrscube.storage.cube import open_cube

    sci = open_cube(store).sci.isel(time=slice(0, n))
    t = time.perf_counter()
    sci.mean("time").compute()
    t_mean = time.perf_counter() - t
    c0 = cpu_now(client)
    t = time.perf_counter()
    sci.chunk({"time": -1, "y": 64}).rolling(time=15, center=True).median().std("time").compute()
    t = time.perf_counter() - t
    c1 = cpu_now(client)
    return {"xarray_mean_s": t_mean, "xarray_rolling_median_s": t, "xarray_rolling_median_worker_cpu_s": c1[0] - c0[0]}


def cube_bytes(store, ds) -> float:
    """Bytes per exposure of the stored sci + err + dq."""
    size, _ = tree_bytes(os.path.join(store, "exposures"))
    from lrscube.storage.cube import n_committed

    return size / max(n_committed(store), 1)


def commit_of_tree() -> str:
    import subprocess

    import lrscube

    root = os.path.dirname(os.path.dirname(os.path.abspath(lrscube.__file__)))
    try:
        c = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                           check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "lrscube"], capture_output=True,
                               text=True).stdout.strip()
        return c + ("+uncommitted" if dirty else "")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def _print_row(r):
    tm = r["timing"] or {}
    xm = f"{r['xarray_mean_s']:.1f}" if "xarray_mean_s" in r else "-"
    xr_ = f"{r['xarray_rolling_median_s']:.1f}" if "xarray_rolling_median_s" in r else "-"
    sp = f"{r['xarray_rolling_median_s'] / r['detect_s']:.1f}x" if "xarray_rolling_median_s" in r else "-"
    print(f"{r['cube']:>10} {r['n']:>5} {r['floor_s']:>8.1f} {r['detect_s']:>9.1f} {r['ratio']:>6.1f} "
          f"{tm.get('stage1_s', 0):>6.1f}/{tm.get('stage2_s', 0):.1f}/{r['mask_cube_s']:.1f} "
          f"{r['peak_worker_mb']:>8.0f} {r['work_bytes'] / r['n'] / 1e6:>11.2f} "
          f"{r['cube_bytes_per_exposure'] / 1e6:>11.2f} {r['work_objects']:>8} {xm:>9} {xr_:>12} {sp:>8} "
          f"{r['load_average']:>5.1f}  | worker CPU s: floor {r['floor_worker_cpu_s']:.1f}, detect "
          f"{r['detect_worker_cpu_s']:.1f} ({r['cpu_ratio']:.1f}x), client {r['detect_client_cpu_s']:.1f}"
          + (f", xarray rolling median {r['xarray_rolling_median_worker_cpu_s']:.1f} "
             f"({r['xarray_rolling_median_worker_cpu_s'] / r['detect_worker_cpu_s']:.1f}x detect)"
             if "xarray_rolling_median_worker_cpu_s" in r else ""), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for the synthetic cube (about 8 MB per exposure) and work stores")
    ap.add_argument("--mixed", default=None, help="an existing store to measure first (e.g. bench_quality's 150 mixed)")
    ap.add_argument("--n", type=int, nargs="*", default=[400, 1600], help="full-frame cube sizes (first N exposures)")
    ap.add_argument("--memory-limit", default="4GB")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--detect-param", action="append", default=[], metavar="KEY=VALUE",
                    help="detection parameter override, e.g. tile_memory_mb=1024 (repeatable)")
    ap.add_argument("--cube-size", type=int, default=None,
                    help="exposures in the synthetic cube (default max(--n)); defect onsets depend on it, so runs "
                         "to be compared need the same cube size")
    ap.add_argument("--refs-max-n", type=int, default=400,
                    help="run the xarray references only for cubes of at most this many exposures")
    ap.add_argument("--repeat", type=int, default=1, help="measure floor and detect this many times per cube")
    ap.add_argument("--commit", default=None, help="the commit measured, when lrscube is not a git checkout")
    a = ap.parse_args()
    from distributed import Client, LocalCluster

    from lrscube.deploy.cluster import load_dask_defaults
    from lrscube.storage.cube import open_cube

    load_dask_defaults()  # configs/dask.yaml (worker memory, malloc settings) as `lrscube detect` gets it
    overrides = {k: float(v) if "." in v else int(v) for k, v in (p.split("=", 1) for p in a.detect_param)}
    os.makedirs(a.out, exist_ok=True)
    synth = os.path.join(a.out, "store")
    cubes = ([("mixed", a.mixed, None)] if a.mixed else []) + [(f"full {n}", synth, n) for n in sorted(a.n)]
    results = []
    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit=a.memory_limit, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        client.run(lambda: __import__("lrscube.detection.detect") and None)  # the module itself does not pickle
        if a.n:
            size = a.cube_size or max(a.n)
            t = time.perf_counter()
            write_cube(synth, size, client, a.seed)
            print(f"synthetic cube of {size} full-frame exposures ready ({time.perf_counter() - t:.0f} s)", flush=True)
        print(f"code {a.commit or commit_of_tree()}, load average at start {os.getloadavg()[0]:.1f}", flush=True)
        print(f"{'cube':>10} {'N':>5} {'floor s':>8} {'detect s':>9} {'ratio':>6} {'stage1/2/mask s':>17} "
              f"{'peak MB':>8} {'work MB/exp':>11} {'cube MB/exp':>11} {'objects':>8} {'xr mean s':>9} "
              f"{'xr rollmed s':>12} {'speed-up':>8} {'load':>5}", flush=True)
        for label, store, n in cubes:
            ds = open_cube(store)
            if n is not None:
                ds = ds.isel(time=slice(0, n))
            n = ds.sizes["time"]
            for rep in range(a.repeat):
                t_floor, nbytes, floor_wcpu, floor_ccpu = read_floor(client, ds, store)
                d = run_detect(client, ds, store, os.path.join(a.out, f"work_{label.replace(' ', '_')}"), overrides)
                r = {"cube": label, "n": n, "floor_s": t_floor, "floor_bytes": nbytes, "floor_worker_cpu_s": floor_wcpu,
                     "floor_client_cpu_s": floor_ccpu, **d, "cpu_ratio": d["detect_worker_cpu_s"] / floor_wcpu,
                     "ratio": d["detect_s"] / t_floor, "cube_bytes_per_exposure": cube_bytes(store, ds),
                     "load_average": os.getloadavg()[0], "store": store}
                results.append(r)
                _print_row(r)
        # the xarray references last: slow, and the detect figures come first
        for r in [r for r in results if r["n"] <= a.refs_max_n]:
            if any(q.get("xarray_rolling_median_s") for q in results if q["cube"] == r["cube"]):
                continue
            r.update(xarray_refs(client, r["store"], r["n"]), load_average_refs=os.getloadavg()[0])
            _print_row(r)
    with open(os.path.join(a.out, "bench_detect.json"), "w") as f:
        json.dump({"commit": a.commit or commit_of_tree(), "results": results}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
