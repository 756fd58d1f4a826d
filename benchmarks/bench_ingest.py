"""Ingest throughput against the floor of merely reading the same files with astropy.

    python benchmarks/bench_ingest.py --n 100 [--workdir DIR] [--workers 2] [--cold] [--tasks]

Prints files/s, MB/s and peak memory per worker for ingest, next to two floors measured in
the same run on the same LocalCluster: reading SCI/ERR/DQ of every file with astropy
(in parallel on the workers, and serially in one process). The ratio ingest / parallel floor
is the figure to watch (target <= 2 on 2 cores). Files are simulated full-frame exposures.

The workers import lrscube (and with it astropy, zarr, xarray, ...) before anything is timed:
that takes about a second per fresh worker process, once, whatever the number of files, and is
printed on its own.

By default the page cache is warmed first, so the floor is a memory copy. With ``--cold`` the
page cache is dropped (root only: /proc/sys/vm/drop_caches) before each timed step, so the
floor and ingest both read the files from disk, as an ingest of an archive does.

With ``--sizes`` it also writes the first 20 files through ``lrscube.storage.cube`` in each store
layout (format 1: a zarr object per chunk; format 2: a shard per exposure and plane), whole and
cut to the SLITLESSPRISM footprint, and prints the bytes per exposure of sci + err + dq.

With ``--tasks`` the ingest runs under ``distributed.get_task_stream``: prints the workers'
busy fraction, compute time per task kind (load = read + validate + hash, write = the three
planes into the store; a task handles up to 4 files, ``lrscube.intake.ingest.files_per_task``) and the worker processes' CPU time per exposure (all their threads).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import subprocess
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from astropy.io import fits


def read_all(path: str) -> int:
    with fits.open(path, memmap=False) as h:
        return int(sum(np.asarray(h[e].data).nbytes for e in ("SCI", "ERR", "DQ")))


def import_lrscube() -> None:
    import lrscube.intake.ingest  # noqa: F401  (the modules an ingest task needs, and astropy with them)


def layout_sizes(files: list[str], work: Path) -> None:
    """Bytes per exposure of sci + err + dq, per store layout, full frame and SLITLESSPRISM."""
    from lrscube.storage import cube
    from lrscube.config import profiles
    from lrscube.intake.products import read_product

    prof = profiles.load("lrs")
    exps = [read_product(f, prof) for f in files]
    for version in (1, 2):
        for kind, (y0, x0, ny, nx) in (("full frame", (0, 0, 1024, 1032)), ("SLITLESSPRISM", (528, 0, 416, 72))):
            store = work / f"sizes-v{version}"
            shutil.rmtree(store, ignore_errors=True)
            cube.create(str(store), prof, format_version=version)
            start = cube.begin_append(str(store), len(exps))
            for i, e in enumerate(exps):
                cut = SimpleNamespace(sci=e.sci[y0:y0 + ny, x0:x0 + nx], err=e.err[y0:y0 + ny, x0:x0 + nx],
                                      dq=e.dq[y0:y0 + ny, x0:x0 + nx], y0=y0, x0=x0)
                cube.write_exposure(str(store), start + i, cut)
            planes = [store / "exposures" / v / "c" for v in cube.DATA_VARS]
            objects = [p for d in planes for p in d.rglob("*") if p.is_file()]
            size = sum(p.stat().st_size for p in objects)
            print(f"store format {version}, {kind:13s}: {size / len(exps) / 1e3:7.1f} kB per exposure "
                  f"(sci + err + dq), {len(objects) / len(exps):4.1f} objects per exposure")
            shutil.rmtree(store, ignore_errors=True)


def drop_page_cache() -> None:
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--workdir", default=None, help="keep inputs and store here (inputs are reused)")
    ap.add_argument("--cold", action="store_true", help="drop the page cache before each timed step (root)")
    ap.add_argument("--tasks", action="store_true", help="record the task stream of the ingest and summarise it")
    ap.add_argument("--sizes", action="store_true", help="store size per exposure in each layout (full frame, subarray)")
    a = ap.parse_args(argv)

    from dask.utils import key_split
    from distributed import Client, LocalCluster, get_task_stream

    import lrscube
    from lrscube.deploy.cluster import load_dask_defaults

    load_dask_defaults()  # configs/dask.yaml (worker memory, malloc settings) as `lrscube ingest` gets it
    work = Path(a.workdir or tempfile.mkdtemp(prefix="lrscube-bench-"))
    inputs = work / f"inputs-{a.n}"
    if not inputs.exists() or len(list(inputs.glob("*_rate.fits"))) < a.n:
        t = time.perf_counter()
        lrscube.simulate(inputs, n=a.n, seed=1, full_frame=True, subarray_mix=0.0)
        print(f"simulated {a.n} full-frame exposures in {time.perf_counter() - t:.1f} s")
    files = sorted(str(p) for p in inputs.glob("*_rate.fits"))[: a.n]
    mbytes = sum(Path(f).stat().st_size for f in files) / 1e6
    if a.cold:
        if os.geteuid() != 0:
            raise SystemExit("--cold needs root to drop the page cache")
        before = drop_page_cache
    else:
        for f in files:  # warm the page cache so every timing below reads from memory alike
            Path(f).read_bytes()
        before = lambda: None  # noqa: E731

    with LocalCluster(n_workers=a.workers, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        t = time.perf_counter()
        client.run(import_lrscube)
        imports_s = time.perf_counter() - t
        before()
        t = time.perf_counter()
        client.gather(client.map(read_all, files, pure=False))
        floor_par = time.perf_counter() - t

        before()
        t = time.perf_counter()
        for f in files:
            read_all(f)
        floor_serial = time.perf_counter() - t

        store = work / "store"
        shutil.rmtree(store, ignore_errors=True)
        client.run(lambda: None)
        before()
        cpu0 = client.run(time.process_time)
        here0, main0 = time.process_time(), time.thread_time()
        with (get_task_stream(client) if a.tasks else contextlib.nullcontext()) as ts:
            t = time.perf_counter()
            s = lrscube.ingest(files, store, progress=False)
            ingest_s = time.perf_counter() - t
        here, main_thread = time.process_time() - here0, time.thread_time() - main0
        cpu1 = client.run(time.process_time)
        assert len(s.ingested) == len(files), s
        peaks = client.run(peak_rss_mb)

    store_mb = sum(p.stat().st_size for p in store.rglob("*") if p.is_file()) / 1e6
    print(f"files: {len(files)} full-frame rate files, {mbytes:.0f} MB, {a.workers} workers x 1 thread, "
          f"page cache {'dropped before each step' if a.cold else 'warm'}; load average {os.getloadavg()[0]:.1f}")
    print(f"importing lrscube in the fresh workers (once per cluster, not in the times below): {imports_s:.2f} s")
    print(f"read floor (astropy, parallel on the workers): {floor_par:6.2f} s  {len(files) / floor_par:6.1f} files/s  {mbytes / floor_par:6.1f} MB/s")
    print(f"read floor (astropy, serial, one process):     {floor_serial:6.2f} s  {len(files) / floor_serial:6.1f} files/s  {mbytes / floor_serial:6.1f} MB/s")
    print(f"lrscube ingest:                                {ingest_s:6.2f} s  {len(files) / ingest_s:6.1f} files/s  {mbytes / ingest_s:6.1f} MB/s")
    print(f"ingest / parallel read floor: {ingest_s / floor_par:.2f}x   ingest / serial read floor: {ingest_s / floor_serial:.2f}x")
    print(f"peak RSS per worker (MB): {', '.join(f'{v:.0f}' for v in peaks.values())};  "
          f"store size {store_mb:.0f} MB ({store_mb / len(files):.2f} MB per exposure)")
    if a.tasks:
        cpu = sum(cpu1[w] - cpu0[w] for w in cpu0)
        kinds: dict[str, list[float]] = {}
        spans: dict[str, list[tuple[float, float]]] = {}
        for task in ts.data:
            for ss in task["startstops"]:
                if ss["action"] == "compute":
                    kinds.setdefault(key_split(task["key"]), []).append(ss["stop"] - ss["start"])
                    spans.setdefault(task["worker"], []).append((ss["start"], ss["stop"]))
        # the time a worker spends between one task and the next (its own and the scheduler's
        # bookkeeping); gaps over 15 ms are waits for work, not per-task overhead
        gaps = [b[0] - a[1] for v in spans.values() for a, b in zip(sorted(v), sorted(v)[1:])]
        small = sorted(g for g in gaps if 0 <= g <= 0.015)
        busy = sum(sum(v) for v in kinds.values())
        print(f"task stream: workers busy {busy:.2f} of {a.workers * ingest_s:.2f} worker-seconds "
              f"({100 * busy / (a.workers * ingest_s):.0f} %); worker processes' CPU {cpu:.2f} s "
              f"({1e3 * cpu / len(files):.1f} ms per exposure); this process (ingest's client side and "
              f"the scheduler) {here:.2f} s, of which the main thread (ingest's own code) {main_thread:.2f} s")
        if small:
            print(f"  between tasks: {len(small)} gaps under 15 ms, {1e3 * sum(small) / len(spans):.0f} ms per "
                  f"worker in all, median {1e3 * small[len(small) // 2]:.1f} ms")
        for k, v in sorted(kinds.items(), key=lambda kv: -sum(kv[1])):
            print(f"  {k:10s} {len(v):5d} tasks  {1e3 * sum(v) / len(v):6.1f} ms each  {sum(v):6.2f} s in all  "
                  f"({1e3 * sum(v) / len(files):5.1f} ms per file)")
    if a.sizes:
        layout_sizes(files[:20], work)
    if not a.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
