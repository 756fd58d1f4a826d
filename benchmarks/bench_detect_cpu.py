"""detect's CPU seconds in this process, in total and in stage 2 (the temporal statistics), on a
block of a store's cube held in memory: robust to a busy machine where wall times are not.

    python benchmarks/bench_detect_cpu.py --store /work/indep/stores/lrs_small--main \
        --y 528 944 --x 0 72

``--n``: the first N exposures only (stage 2's cost per exposure grows with N).
Compare two checkouts by running this alternately with each on ``PYTHONPATH`` (a ratio per
pair). The block is read once, a short warm-up run compiles the kernels, then
``detection.detect.detect_dataset`` runs on the whole block with ``temporal_stage`` timed.
"""

from __future__ import annotations

import argparse
import importlib
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--y", type=int, nargs=2, required=True, help="rows [start, stop)")
    ap.add_argument("--x", type=int, nargs=2, required=True, help="columns [start, stop)")
    ap.add_argument("--mode", default="lrs")
    ap.add_argument("--n", type=int, default=None, help="the first N exposures only (default: all)")
    a = ap.parse_args()
    import lrscube

    D = importlib.import_module("lrscube.detection.detect")
    ds = lrscube.open_cube(a.store).isel(time=slice(0, a.n), y=slice(*a.y), x=slice(*a.x))
    ds = ds[[v for v in ("sci", "err", "dq", "intscat") if v in ds.data_vars]].load()  # intscat: rateints
    D.detect_dataset(ds.isel(time=slice(0, 8)), a.mode, progress=False)  # compile the kernels
    spent = {"stage2": 0.0}
    orig = D.temporal_stage

    def timed(*args, **kw):
        c = time.process_time()
        try:
            return orig(*args, **kw)
        finally:
            spent["stage2"] += time.process_time() - c

    D.temporal_stage = timed
    c = time.process_time()
    iv, _ = D.detect_dataset(ds, a.mode, progress=False)
    total = time.process_time() - c
    n = ds.sizes["time"]
    print(f"{lrscube.__file__}: {n} exposures, {ds.sizes['y']} x {ds.sizes['x']} pixels: CPU total {total:.2f} s "
          f"({total / n * 1000:.1f} ms per exposure), stage 2 {spent['stage2']:.2f} s; {len(iv)} intervals")


if __name__ == "__main__":
    main()
