"""Ingest throughput against the floor of merely reading the same files with astropy.

    python benchmarks/bench_ingest.py --n 100 [--workdir DIR] [--workers 2]

Prints files/s, MB/s and peak memory per worker for ingest, next to two floors measured in
the same run on the same LocalCluster: reading SCI/ERR/DQ of every file with astropy
(in parallel on the workers, and serially in one process). The ratio ingest / parallel floor
is the figure to watch (target <= 2 on 2 cores). Files are simulated full-frame exposures.

By default the page cache is warmed first, so the floor is a memory copy. With ``--cold`` the
page cache is dropped (root only: /proc/sys/vm/drop_caches) before each timed step, so the
floor and ingest both read the files from disk, as an ingest of an archive does.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits


def read_all(path: str) -> int:
    with fits.open(path, memmap=False) as h:
        return int(sum(np.asarray(h[e].data).nbytes for e in ("SCI", "ERR", "DQ")))


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
    a = ap.parse_args(argv)

    from distributed import Client, LocalCluster

    import lrscube

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
        t = time.perf_counter()
        s = lrscube.ingest(files, store, progress=False)
        ingest_s = time.perf_counter() - t
        assert len(s.ingested) == len(files), s
        peaks = client.run(peak_rss_mb)

    store_mb = sum(p.stat().st_size for p in store.rglob("*") if p.is_file()) / 1e6
    print(f"files: {len(files)} full-frame rate files, {mbytes:.0f} MB, {a.workers} workers x 1 thread, "
          f"page cache {'dropped before each step' if a.cold else 'warm'}; load average {os.getloadavg()[0]:.1f}")
    print(f"read floor (astropy, parallel on the workers): {floor_par:6.2f} s  {len(files) / floor_par:6.1f} files/s  {mbytes / floor_par:6.1f} MB/s")
    print(f"read floor (astropy, serial, one process):     {floor_serial:6.2f} s  {len(files) / floor_serial:6.1f} files/s  {mbytes / floor_serial:6.1f} MB/s")
    print(f"lrscube ingest:                                {ingest_s:6.2f} s  {len(files) / ingest_s:6.1f} files/s  {mbytes / ingest_s:6.1f} MB/s")
    print(f"ingest / parallel read floor: {ingest_s / floor_par:.2f}x   ingest / serial read floor: {ingest_s / floor_serial:.2f}x")
    print(f"peak RSS per worker (MB): {', '.join(f'{v:.0f}' for v in peaks.values())};  store size {store_mb:.0f} MB")
    if not a.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
