"""Scale benchmark (issue 5 item 6): ingest and detect of thousands of full-frame exposures.

    /work/venv/bin/python benchmarks/bench_scale.py --out /work/scale/big \
        --n-ingest 4000 --batch 250 --n-detect 300 1000 [--reserve-gb 15] [--memory-limit 4GB]

Prints figures; not a test. Three parts:

1. **Ingest at scale, as users do it**: many ingest runs appending to one store. Inputs are
   real-format full-frame MIRI rate FITS files written in rolling batches (``--batch`` files),
   each batch ingested with one ``lrscube.ingest([...], store)`` call and then deleted, so the
   inputs never fill the disk. ``lrscube.simulate`` is too slow to make thousands of full
   frames, so it makes a small pool of templates once (``--templates``); every input is derived
   from one with astropy: unique JWST exposure ids in the header and in the file name
   (jwPPPPPOOOVVV_GGSAA_EEEEE_mirimage_rate.fits), a new EXPSTART/EXPMID/EXPEND/DATE-OBS/TIME-OBS
   (exposures spread evenly over ``--span-days``), and SCI = the template's noiseless signal
   (VAR_POISSON x gain x EFFEXPTM: sky, traces, defects) + fresh Gaussian noise of the template's
   ERR, so every SCI content hash is new. Templates are used in time order (exposure i of
   ``--n-ingest`` takes template floor(i K / n)), so the defect history is piecewise constant
   with K - 1 steps, not a random telegraph. Lost against ``simulate``: cosmic rays, showers,
   row offsets and EMI of the derived exposures (the template's were in its SCI only).
   Per batch: input generation time (apart), ingest wall time, files/s, worker-seconds per
   exposure by task (read+validate = ``_load``, write = ``_write``, from the dask task stream),
   client-side serial time (begin_append + commit + ingest-log rewrite, timed by wrapping those
   lrscube functions), cumulative store size, and worker RSS (the run's peak = VmHWM reset
   before each run, and now).
   Stops at ``--n-ingest`` or before free disk would fall below ``--reserve-gb`` (which must hold
   detect's scratch store for max(--n-detect): about ``--work-mb`` MB per exposure).

2. **Detect at scale**: for each N in ``--n-detect``, on a fresh LocalCluster (2 workers x 1
   thread, ``--memory-limit`` per worker), as benchmarks/bench_detect.py:
   ``lrscube.detection.detect.detect_dataset(ds.isel(time=slice(0, N)), "lrs", work=..., source=...)``
   (``source``, the cube's URL, as ``lrscube detect`` passes it, where lrscube takes it): wall time,
   exposures/s, stage 1 / stage 2 (``meta["timing"]``), worker-seconds per task kind (task
   stream), peak RSS per worker (Linux VmHWM, reset just before detect), the size of the work store
   (deleted after measuring); then, on the same cluster, the time to read sci once
   (``ds.sci[:N].mean("time")``). ``--detect-param KEY=VALUE`` overrides detection parameters
   (``tile_memory_mb``, ``work_batch_exposures``); ``--whole-frames`` opens the cube in
   whole-frame dask chunks of ``work_batch_exposures`` exposures instead of the stored chunks.
   ``--n-ingest 0`` runs detect on the store an earlier run kept (``--keep-store``).

3. A summary table, also written as JSON to ``OUT/scale_results.json`` (the store is
   ``OUT/store``; ``--keep-store`` keeps it, else it is deleted at the end).

The inputs are freshly written, so ingest reads them from the page cache (the warm case of
benchmarks/bench_ingest.py), not from disk or S3.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

GAIN_E_PER_DN = 5.5  # configs/scenario-default.yaml detector.gain_e_per_dn (simulate's ERR model)


# ----------------------------------------------------------------------------- helpers


def disk_free_gb(path) -> float:
    return shutil.disk_usage(path).free / 1e9


def tree_bytes(path) -> tuple[int, int, int]:
    """(apparent bytes, bytes on disk, files) under ``path``."""
    app = disk = n = 0
    for d, _, files in os.walk(path):
        for f in files:
            try:
                s = os.stat(os.path.join(d, f))
            except FileNotFoundError:
                continue
            app += s.st_size
            disk += s.st_blocks * 512
            n += 1
    return app, disk, n


def _rss_mb():
    """Peak (VmHWM) and current (VmRSS) resident memory of this process, MB.

    Not ru_maxrss: a worker process started by fork + exec inherits its parent's high-water mark
    in ru_maxrss (here the client's, which holds the templates: ~1.1 GB), so small peaks
    would read as the client's size. VmHWM belongs to the process's own memory and can be reset.
    """
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                out["peak" if line.startswith("VmHWM") else "now"] = int(line.split()[1]) / 1024.0
    return out


def _reset_peak():
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def reset_worker_peaks(client) -> None:
    client.run(_reset_peak)


def _mbs(rss: dict, key: str, sep: str = "/") -> str:
    return sep.join(f"{v[key]:.0f}" for v in rss.values())


def worker_rss(client) -> dict:
    return {w.rsplit(":", 1)[-1]: v for w, v in client.run(_rss_mb).items()}


def code_version() -> dict:
    """Where lrscube was imported from and which commit that is."""
    import lrscube

    root = Path(lrscube.__file__).resolve().parent.parent
    out = {"lrscube": str(Path(lrscube.__file__).resolve().parent)}
    try:
        out["commit"] = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], check=True,
                                       capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "lrscube"],
                               capture_output=True, text=True).stdout.strip()
        out["uncommitted_changes_in_lrscube"] = dirty.splitlines()
    except (subprocess.CalledProcessError, FileNotFoundError):
        f = root / "COMMIT"  # a `git archive` snapshot: the commit written next to it
        out["commit"] = f.read_text().strip() if f.exists() else "unknown"
        out["uncommitted_changes_in_lrscube"] = []
    return out


def task_seconds(ts_data) -> dict:
    """Worker-seconds of compute per task prefix, and task counts, from a task stream."""
    from dask.utils import key_split

    out: dict[str, dict] = {}
    for t in ts_data:
        name = key_split(t["key"])
        d = out.setdefault(name, {"tasks": 0, "compute_s": 0.0, "transfer_s": 0.0})
        d["tasks"] += 1
        for ss in t.get("startstops", ()):
            dur = ss["stop"] - ss["start"]
            if ss["action"] == "compute":
                d["compute_s"] += dur
            elif ss["action"] == "transfer":
                d["transfer_s"] += dur
    return {k: {kk: (round(vv, 2) if isinstance(vv, float) else vv) for kk, vv in v.items()} for k, v in out.items()}


class ClientTimer:
    """Time spent in the client's serial per-batch steps of ingest (wraps lrscube functions)."""

    # (owner, name): ingest's serial steps on the client, where ingest looks them up
    NAMES = (("cube", "create"), ("cube", "exposure_table"), ("Append", "room"), ("Append", "commit"),
             ("_RepositoryAppend", "room"), ("_RepositoryAppend", "commit"),
             ("_RepositoryAppend", "data_arrays"))

    def __init__(self):
        cube = importlib.import_module("lrscube.storage.cube")
        self.owners = {"cube": cube, "Append": cube.Append, "_RepositoryAppend": cube._RepositoryAppend}
        self.orig = {}
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        for owner, name in self.NAMES:
            fn = self.owners[owner].__dict__[name]  # the owner's own, not an inherited one
            self.orig[(owner, name)] = fn
            setattr(self.owners[owner], name, self._wrap(f"{owner}.{name}", fn))

    def _wrap(self, name, fn):
        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t
                self.calls[name] = self.calls.get(name, 0) + 1
        return timed

    def take(self) -> dict:
        out = {k: {"s": round(v, 3), "calls": self.calls[k]} for k, v in self.seconds.items()}
        self.seconds, self.calls = {}, {}
        return out

    def restore(self):
        for (owner, name), fn in self.orig.items():
            setattr(self.owners[owner], name, fn)


# ----------------------------------------------------------------------------- inputs


class InputFactory:
    """Derive unique full-frame rate files from a pool of simulated templates."""

    def __init__(self, tdir: Path, n_target: int, span_days: float, start_mjd: float, seed: int):
        from astropy.io import fits

        files = sorted(tdir.glob("*_rate.fits"))
        self.templates = []
        for f in files:
            h = fits.open(f, memmap=False, lazy_load_hdus=False)
            for hdu in h:
                _ = hdu.data  # load everything into memory
            ph = h[0].header
            gt = GAIN_E_PER_DN * float(ph["EFFEXPTM"])
            model = (np.asarray(h["VAR_POISSON"].data, np.float64) * gt).astype(np.float32)
            err = np.asarray(h["ERR"].data, np.float32)
            self.templates.append({"hdul": h, "model": model, "err": err, "start": float(ph["EXPSTART"]),
                                   "dur": float(ph["EXPEND"]) - float(ph["EXPSTART"]),
                                   "mid": float(ph["EXPMID"]) - float(ph["EXPSTART"])})
        self.templates.sort(key=lambda t: t["start"])
        self.n_target, self.span, self.start, self.seed = n_target, span_days, start_mjd, seed

    @staticmethod
    def ids(i: int) -> dict:
        v = i // 4  # 4 exposures per visit, 999 visits per observation, program 04999
        return {"PROGRAM": "04999", "OBSERVTN": f"{v // 999 + 1:03d}", "VISIT": f"{v % 999 + 1:03d}",
                "VISITGRP": "02", "SEQ_ID": "1", "ACT_ID": "01", "EXPOSURE": str(i % 4 + 1)}

    def name(self, i: int) -> str:
        d = self.ids(i)
        return (f"jw{d['PROGRAM']}{d['OBSERVTN']}{d['VISIT']}_{d['VISITGRP']}{d['SEQ_ID']}{d['ACT_ID']}_"
                f"{int(d['EXPOSURE']):05d}_mirimage_rate.fits")

    def write(self, i: int, out_dir: Path) -> Path:
        from astropy.time import Time

        K = len(self.templates)
        t = self.templates[min(K - 1, i * K // max(self.n_target, 1))]
        rng = np.random.default_rng([self.seed, i])
        step = self.span / max(self.n_target, 1)
        start = self.start + i * step + rng.uniform(0, 0.5) * step
        h = t["hdul"]
        ph = h[0].header
        ids = self.ids(i)
        for k, v in ids.items():
            ph[k] = v
        ph["VISIT_ID"] = f"{ids['PROGRAM']}{ids['OBSERVTN']}{ids['VISIT']}"
        name = self.name(i)
        ph["FILENAME"] = name
        ph["EXPSTART"], ph["EXPMID"], ph["EXPEND"] = start, start + t["mid"], start + t["dur"]
        iso = Time(start, format="mjd", scale="utc").isot
        ph["DATE-OBS"], ph["TIME-OBS"] = iso[:10], iso[11:23]
        sh = h["SCI"].header
        for k, v in (("MJD-BEG", start), ("MJD-AVG", start + t["mid"]), ("MJD-END", start + t["dur"])):
            if k in sh:
                sh[k] = v
        noise = rng.standard_normal(t["model"].shape, dtype=np.float32)
        h["SCI"].data = t["model"] + noise * t["err"]  # NaN where the template's ERR is NaN (DO_NOT_USE)
        path = out_dir / name
        h.writeto(path, overwrite=True)
        return path


# ----------------------------------------------------------------------------- parts


def make_templates(tdir: Path, k: int, seed: int) -> dict:
    have = len(list(tdir.glob("*_rate.fits"))) if tdir.exists() else 0
    if have >= k:
        return {"templates": have, "simulate_s": None, "simulate_s_per_file": None}
    shutil.rmtree(tdir, ignore_errors=True)
    sim = importlib.import_module("lrscube.validation.simulate")
    t = time.perf_counter()
    sim.simulate(tdir, n=k, seed=seed, full_frame=True, subarray_mix=0)
    s = time.perf_counter() - t
    print(f"templates: {k} full-frame exposures simulated in {s:.1f} s ({s / k:.2f} s each)", flush=True)
    return {"templates": k, "simulate_s": round(s, 1), "simulate_s_per_file": round(s / k, 3)}


def run_ingest(a, store: Path, factory: InputFactory, results: dict) -> int:
    from distributed import Client, LocalCluster, get_task_stream

    import lrscube

    inputs = Path(a.out) / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    timer = ClientTimer()
    rows = results["ingest"]
    done = 0
    stop_reason = f"reached --n-ingest {a.n_ingest}"
    with LocalCluster(n_workers=a.workers, threads_per_worker=1, memory_limit=a.memory_limit, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        print(f"ingest cluster: {a.workers} workers x 1 thread, memory limit {a.memory_limit} each; "
              f"dashboard {client.dashboard_link}", flush=True)
        hdr = (f"{'batch':>5} {'N':>6} {'gen s':>6} {'ingest s':>8} {'files/s':>7} {'load ws/exp':>11} "
               f"{'write ws/exp':>12} {'client s':>8} {'store GB':>8} {'MB/exp':>6} {'free GB':>7} "
               f"{'worker peak MB':>15} {'worker now MB':>14} {'load1':>5}")
        print(hdr, flush=True)
        b = 0
        while done < a.n_ingest:
            k = min(a.batch, a.n_ingest - done)
            app, _, _ = tree_bytes(store) if store.exists() else (0, 0, 0)
            per_exp = app / done if done else 7e6
            need = (k * 21.2e6 + k * per_exp) / 1e9
            free = disk_free_gb(a.out)
            if free - need < a.reserve_gb:
                stop_reason = (f"disk: {free:.1f} GB free, the next batch needs {need:.1f} GB (inputs + store) "
                               f"and {a.reserve_gb} GB are reserved")
                break
            t = time.perf_counter()
            files = [str(factory.write(i, inputs)) for i in range(done, done + k)]
            os.sync()
            gen_s = time.perf_counter() - t
            timer.take()
            reset_worker_peaks(client)  # peaks below are this run's own
            with get_task_stream(client) as ts:
                t = time.perf_counter()
                s = lrscube.ingest(files, str(store), "lrs", progress=False)
                ing_s = time.perf_counter() - t
            cl = timer.take()
            if len(s.ingested) != k or s.duplicates or s.rejected:
                raise SystemExit(f"batch {b}: expected {k} ingested, got:\n{s}")
            for f in files:
                os.remove(f)
            done += k
            tasks = task_seconds(ts.data)
            app, disk, nfiles = tree_bytes(store)
            rss = worker_rss(client)
            client_s = sum(v["s"] for v in cl.values())
            row = {"batch": b, "n_total": done, "files": k, "gen_s": round(gen_s, 2), "ingest_s": round(ing_s, 2),
                   "files_per_s": round(k / ing_s, 2),
                   "load_ws_per_exp": round(tasks.get("load", {}).get("compute_s", 0) / k, 4),
                   "write_ws_per_exp": round(tasks.get("write", {}).get("compute_s", 0) / k, 4),
                   "summary_ws_per_exp": round(tasks.get("summary", {}).get("compute_s", 0) / k, 4),
                   "worker_busy_fraction": round(sum(v["compute_s"] for v in tasks.values())
                                                 / (ing_s * a.workers), 3),
                   "client_serial": cl, "client_serial_s": round(client_s, 2),
                   "store_bytes": app, "store_disk_bytes": disk, "store_files": nfiles,
                   "free_gb": round(disk_free_gb(a.out), 1), "worker_rss_mb": rss,
                   "client_rss_mb": _rss_mb(), "load_avg": os.getloadavg()}
            rows.append(row)
            print(f"{b:>5} {done:>6} {gen_s:>6.1f} {ing_s:>8.1f} {k / ing_s:>7.2f} {row['load_ws_per_exp']:>11.3f} "
                  f"{row['write_ws_per_exp']:>12.3f} {client_s:>8.2f} {app / 1e9:>8.2f} {app / done / 1e6:>6.2f} "
                  f"{row['free_gb']:>7.1f} {_mbs(rss, 'peak'):>15} "
                  f"{_mbs(rss, 'now'):>14} {os.getloadavg()[0]:>5.1f}",
                  flush=True)
            b += 1
            _dump(a, results)
    timer.restore()
    shutil.rmtree(inputs, ignore_errors=True)
    results["ingest_stop_reason"] = stop_reason
    print(f"ingest stopped: {stop_reason}; the cube holds {done} exposures", flush=True)
    return done


def run_detect(a, store: Path, n: int) -> dict:
    from distributed import Client, LocalCluster, get_task_stream

    from lrscube.storage.cube import open_cube
    from lrscube.detection.detect import detect_dataset

    work = Path(a.out) / f"work_{n}"
    shutil.rmtree(work, ignore_errors=True)
    with LocalCluster(n_workers=a.workers, threads_per_worker=1, memory_limit=a.memory_limit, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        print(f"detect N={n}: cluster {a.workers} workers x 1 thread, memory limit {a.memory_limit} each; "
              f"dashboard {client.dashboard_link}", flush=True)
        overrides = dict(a.detect_param)
        if a.whole_frames:
            # stage-1 inputs as whole-frame dask chunks of work_batch_exposures exposures (one read
            # task per plane and batch) instead of the stored (1, 256, 258) chunks
            from lrscube.config import profiles
            from lrscube.detection.detection_params import DetectionParams

            B = DetectionParams.from_profile(profiles.load("lrs"), **overrides).work_batch_exposures
            ds = open_cube(str(store), chunks={"time": B, "y": -1, "x": -1}).isel(time=slice(0, n))
        else:
            ds = open_cube(str(store)).isel(time=slice(0, n))
        ds_chunks = int(sum(ds[v].data.npartitions for v in ("sci", "err", "dq")))  # dask chunks of the input
        # as `lrscube detect` calls it: with the cube's URL, where this lrscube accepts one
        # (stage-1 tasks then read their frames from the cube themselves)
        src = {}
        if "source" in inspect.signature(detect_dataset).parameters and not a.whole_frames:
            from lrscube.storage.cube import cube_url

            src = {"source": cube_url(str(store))}
        la0 = os.getloadavg()
        reset_worker_peaks(client)  # the peak after detect is detect's own
        with get_task_stream(client) as ts:
            t = time.perf_counter()
            iv, meta = detect_dataset(ds, "lrs", work=str(work), progress=False, **src, **overrides)
            t_det = time.perf_counter() - t
        la1 = os.getloadavg()
        rss = worker_rss(client)
        tasks = task_seconds(ts.data)
        reset_worker_peaks(client)
        t = time.perf_counter()
        open_cube(str(store)).isel(time=slice(0, n)).sci.mean("time").compute()
        t_read = time.perf_counter() - t
        after_read = worker_rss(client)
    app, disk, nfiles = tree_bytes(work)
    shutil.rmtree(work, ignore_errors=True)
    tm = meta.get("timing") or {}
    r = {"n": n, "read_once_s": round(t_read, 1), "detect_s": round(t_det, 1), "ratio": round(t_det / t_read, 2),
         "exposures_per_s": round(n / t_det, 3), "stage1_s": tm.get("stage1_s"), "stage2_s": tm.get("stage2_s"),
         "stage1_tasks": tm.get("stage1_tasks"), "stage2_tasks": tm.get("stage2_tasks"),
         "input_dask_chunks": ds_chunks, "tile": meta["tiles"], "tasks": tasks,
         "worker_rss_mb_read_once": after_read, "worker_rss_mb": rss, "detect_overrides": overrides,
         "whole_frames": a.whole_frames, "stage1_reads": tm.get("stage1_reads", "dask chunks"),
         "store_format": _store_format(store),
         "peak_worker_mb": round(max(v["peak"] for v in rss.values())),
         "work_bytes": app, "work_disk_bytes": disk, "work_files": nfiles,
         "work_mb_per_exposure": round(app / n / 1e6, 2), "intervals": meta["intervals"],
         "threshold_sigma": round(meta["threshold_sigma"], 2), "memory_limit": a.memory_limit,
         "load_avg_before": la0, "load_avg_after": la1}
    s1 = tasks.get("stage1_to_work", {}).get("compute_s", 0.0)
    s2 = tasks.get("stage2_from_work", {}).get("compute_s", 0.0)
    r["stage1_ws_per_exp"] = round(s1 / n, 3)
    r["stage2_ws_per_exp"] = round(s2 / n, 3)
    r["stage2_ws_per_tile"] = round(s2 / max(tm.get("stage2_tasks") or 1, 1), 2)
    print(f"detect N={n}: read once {t_read:.1f} s, detect {t_det:.1f} s ({n / t_det:.3f} exp/s, "
          f"{t_det / t_read:.1f}x read); stage 1 {tm.get('stage1_s')} s / stage 2 {tm.get('stage2_s')} s; "
          f"worker-s per exposure: stage 1 {r['stage1_ws_per_exp']}, stage 2 {r['stage2_ws_per_exp']}; "
          f"tile {meta['tiles']} ({tm.get('stage2_tasks')} tiles); peak RSS per worker "
          f"{_mbs(rss, 'peak', ', ')} MB; work store {app / 1e9:.2f} GB "
          f"({app / n / 1e6:.2f} MB/exposure, {nfiles} files); stage-1 reads: {r['stage1_reads']}; "
          f"load {la0[0]:.1f} -> {la1[0]:.1f}", flush=True)
    return r


def _store_format(store: Path):
    from lrscube.storage import cube

    return cube.info(str(store)).get("format_version")


def _param(text: str) -> tuple[str, float | int]:
    k, v = text.split("=", 1)
    return k.strip(), (int(v) if v.strip().lstrip("-").isdigit() else float(v))


def _dump(a, results):
    p = Path(a.out) / "scale_results.json"
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str))
    os.replace(tmp, p)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for templates, inputs, store, work stores, JSON")
    ap.add_argument("--n-ingest", type=int, default=10000, help="0: run detect on an existing OUT/store")
    ap.add_argument("--batch", type=int, default=250, help="input files per ingest run")
    ap.add_argument("--n-detect", type=int, nargs="*", default=[500])
    ap.add_argument("--reserve-gb", type=float, default=12.0)
    ap.add_argument("--work-mb", type=float, default=10.0,
                    help="detect work store per exposure (MB), to check --reserve-gb against")
    ap.add_argument("--templates", type=int, default=24)
    ap.add_argument("--span-days", type=float, default=900.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="4GB")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep-store", action="store_true")
    ap.add_argument("--detect-param", action="append", default=[], type=_param, metavar="KEY=VALUE",
                    help="detection parameter override, e.g. tile_memory_mb=1024 (repeatable)")
    ap.add_argument("--whole-frames", action="store_true",
                    help="open the cube for detect in whole-frame chunks of work_batch_exposures exposures")
    a = ap.parse_args(argv)

    from lrscube.deploy.cluster import load_dask_defaults

    load_dask_defaults()  # configs/dask.yaml (worker memory thresholds) as lrscube's own clusters get it
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "store"
    if store.exists() and a.n_ingest > 0:
        raise SystemExit(f"{store} exists: remove it first (the benchmark starts from an empty store), "
                         "or give --n-ingest 0 to run detect on it")
    need_work = a.work_mb * max(a.n_detect or [0]) / 1e3
    if need_work > a.reserve_gb:
        print(f"warning: --reserve-gb {a.reserve_gb} is less than detect's work store for N={max(a.n_detect)} "
              f"(about {need_work:.1f} GB at {a.work_mb} MB per exposure); raising it", flush=True)
        a.reserve_gb = need_work + 2
    results = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]), "args": vars(a),
               "started": _dt.datetime.now().isoformat(timespec="seconds"), "code": code_version(),
               "machine": {"cores": os.cpu_count(), "mem_gb": round(os.sysconf("SC_PAGE_SIZE")
                                                                    * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)},
               "load_avg_start": os.getloadavg(), "free_gb_start": round(disk_free_gb(out), 1),
               "ingest": [], "detect": []}
    print(f"bench_scale: {results['started']}, code {results['code']}, load average {os.getloadavg()}, "
          f"{results['free_gb_start']} GB free on {out}, reserve {a.reserve_gb} GB", flush=True)
    results["templates"] = make_templates(out / "templates", a.templates, a.seed)
    factory = InputFactory(out / "templates", a.n_ingest, a.span_days, 59800.0, a.seed)
    # one derived file, timed alone
    t = time.perf_counter()
    p = factory.write(0, out)
    results["templates"]["derive_s_per_file"] = round(time.perf_counter() - t, 3)
    results["templates"]["file_bytes"] = p.stat().st_size
    p.unlink()

    t = time.perf_counter()
    if a.n_ingest > 0:
        n_in = run_ingest(a, store, factory, results)
    else:
        from lrscube.storage.cube import n_committed

        n_in = n_committed(str(store))
        results["ingest_stop_reason"] = f"--n-ingest 0: detect on the existing store ({n_in} exposures)"
        print(results["ingest_stop_reason"], flush=True)
    results["ingest_total_s"] = round(time.perf_counter() - t, 1)
    results["store_format"] = _store_format(store) if n_in else None
    results["n_ingested"] = n_in
    _dump(a, results)

    for n in sorted(a.n_detect):
        if n > n_in:
            print(f"detect N={n}: skipped, the cube holds only {n_in}", flush=True)
            continue
        est = a.work_mb * n / 1e3
        if disk_free_gb(out) - est < 2:
            print(f"detect N={n}: skipped, {disk_free_gb(out):.1f} GB free < {est:.1f} GB work store + 2", flush=True)
            continue
        results["detect"].append(run_detect(a, store, n))
        _dump(a, results)

    results["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
    results["load_avg_end"] = os.getloadavg()
    ing = results["ingest"]
    if ing:
        last = ing[-1]
        tot_ing = sum(r["ingest_s"] for r in ing)
        tot_gen = sum(r["gen_s"] for r in ing)
        results["ingest_summary"] = {
            "exposures": n_in, "ingest_s": round(tot_ing, 1), "files_per_s": round(n_in / tot_ing, 2),
            "gen_s": round(tot_gen, 1), "store_gb": round(last["store_bytes"] / 1e9, 2),
            "store_mb_per_exposure": round(last["store_bytes"] / n_in / 1e6, 3),
            "store_files": last["store_files"],
            "load_ws_per_exp": round(np.mean([r["load_ws_per_exp"] for r in ing]), 4),
            "write_ws_per_exp": round(np.mean([r["write_ws_per_exp"] for r in ing]), 4),
            "client_serial_s_per_batch_run": round(np.mean([r["client_serial_s"] for r in ing]), 2),
            "peak_worker_mb": round(max(v["peak"] for r in ing for v in r["worker_rss_mb"].values())),
            "stop_reason": results["ingest_stop_reason"]}
    _dump(a, results)
    print("\nsummary")
    if ing:
        s = results["ingest_summary"]
        print(f"ingest: {n_in} exposures (store format {results['store_format']}) in {len(ing)} runs of "
              f"{a.batch}: {s['ingest_s']} s "
              f"({s['files_per_s']} files/s), input generation {s['gen_s']} s apart; store {s['store_gb']} GB "
              f"({s['store_mb_per_exposure']} MB/exposure, {s['store_files']} files); worker-s per exposure "
              f"read {s['load_ws_per_exp']} + write {s['write_ws_per_exp']}; client serial "
              f"{s['client_serial_s_per_batch_run']} s per run; peak worker RSS {s['peak_worker_mb']} MB; "
              f"stopped: {s['stop_reason']}")
        first, mid_, last = ing[0], ing[len(ing) // 2], ing[-1]
        print(f"  files/s first/middle/last run: {first['files_per_s']} / {mid_['files_per_s']} / "
              f"{last['files_per_s']}")
    print(f"{'N':>6} {'read once s':>11} {'detect s':>9} {'ratio':>6} {'exp/s':>6} {'stage1 s':>8} {'stage2 s':>8} "
          f"{'s1 ws/exp':>9} {'s2 ws/exp':>9} {'tile':>9} {'tiles':>5} {'peak MB/worker':>14} {'work MB/exp':>11}")
    for r in results["detect"]:
        print(f"{r['n']:>6} {r['read_once_s']:>11} {r['detect_s']:>9} {r['ratio']:>6} {r['exposures_per_s']:>6} "
              f"{r['stage1_s']!s:>8} {r['stage2_s']!s:>8} {r['stage1_ws_per_exp']:>9} {r['stage2_ws_per_exp']:>9} "
              f"{'x'.join(map(str, r['tile'])):>9} {r['stage2_tasks']!s:>5} {r['peak_worker_mb']:>14} "
              f"{r['work_mb_per_exposure']:>11}")
    print(f"results: {Path(a.out) / 'scale_results.json'}")
    if not a.keep_store:
        shutil.rmtree(store, ignore_errors=True)
        print(f"removed {store}")


if __name__ == "__main__":
    main()
