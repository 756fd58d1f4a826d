"""Cold reads of rate files by lrscube's reader, with and without kernel readahead.

    python benchmarks/bench_read.py --n 40 --workdir /work/bench --rounds 3   # root: drops the page cache

``products.read_product`` opens each file with ``posix_fadvise(POSIX_FADV_RANDOM)``: astropy
reads each data plane in one call, so readahead only adds the planes ingest never reads. This
reads the same N simulated full-frame rate files (made by bench_ingest.py, or here) in one
process, the page cache dropped before each pass, alternating passes with the advice as the code
gives it and with it turned off (``os.posix_fadvise`` patched out: the reader as it was before),
and prints per file: wall time, bytes fetched from disk (``/proc/self/io`` read_bytes) and the
process's user + system CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import subprocess
import time
from pathlib import Path
from unittest import mock


def drop_page_cache() -> None:
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def disk_read_bytes() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("read_bytes:"))


def one_pass(files, profile, readahead: bool) -> tuple[float, float, float]:
    from lrscube.intake.products import read_product

    patch = mock.patch.object(os, "posix_fadvise", lambda *a: None) if readahead else contextlib.nullcontext()
    drop_page_cache()
    with patch:
        r0, b0, t0 = resource.getrusage(resource.RUSAGE_SELF), disk_read_bytes(), time.perf_counter()
        for f in files:
            read_product(f, profile)
        t, b, r = time.perf_counter() - t0, disk_read_bytes() - b0, resource.getrusage(resource.RUSAGE_SELF)
    cpu = r.ru_utime - r0.ru_utime + r.ru_stime - r0.ru_stime
    n = len(files)
    return 1e3 * t / n, b / n / 1e6, 1e3 * cpu / n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", required=True, help="inputs-N of bench_ingest.py are reused from here")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("needs root to drop the page cache")

    import lrscube
    from lrscube.config import profiles

    inputs = Path(a.workdir) / f"inputs-{a.n}"
    if not inputs.exists() or len(list(inputs.glob("*_rate.fits"))) < a.n:
        lrscube.simulate(inputs, n=a.n, seed=1, full_frame=True, subarray_mix=0.0)
    files = sorted(str(p) for p in inputs.glob("*_rate.fits"))[: a.n]
    profile = profiles.load("lrs")
    one_pass(files[:2], profile, False)  # imports and first-call costs outside the timings
    rows = {False: [], True: []}
    for _ in range(a.rounds):
        for readahead in (False, True):
            rows[readahead].append(one_pass(files, profile, readahead))
    print(f"{len(files)} full-frame rate files ({Path(files[0]).stat().st_size / 1e6:.1f} MB each), "
          f"{a.rounds} passes each, alternating; load average {os.getloadavg()[0]:.1f}")
    for readahead, label in ((False, "no readahead (as the code reads)"), (True, "kernel readahead (before)")):
        ms, mb, cpu = (statistics.median(r[k] for r in rows[readahead]) for k in range(3))
        each = ", ".join(f"{r[0]:.1f}" for r in rows[readahead])
        print(f"  {label:34s} {ms:5.1f} ms per file (passes: {each}); {mb:5.1f} MB from disk; "
              f"{cpu:5.1f} ms CPU (user + system)")


if __name__ == "__main__":
    main()
