"""CPU time of detect's per-frame kernels and of its stage-1 task on full frames (one process).

    python benchmarks/bench_kernels.py --store /work/bench/full150/store
    PYTHONPATH=/path/to/export-of-another-commit python benchmarks/bench_kernels.py --store ...   # the same, older code

Prints, per 1024 x 1032 frame, the process CPU time (``time.process_time``, the least of
``--repeat`` runs: other jobs on the machine inflate it less than wall time) of the running
median along columns and along rows (windows 15 and 9; on noise, and on a real residual frame
with its NaN holes), the local sky (median + slope correction), and ``detect.spatial_stage`` on
``--frames`` FULL exposures of the store (cropped to their footprint as stage 1 does). Run it
for two commits one after the other (``PYTHONPATH``) for a before/after.
"""

from __future__ import annotations

import argparse
import importlib
import os
import time

import numpy as np


def cpu_ms(f, *a, repeat=5, **k):
    f(*a, **k)  # compile / warm up
    best = np.inf
    for _ in range(repeat):
        t = time.process_time()
        f(*a, **k)
        best = min(best, time.process_time() - t)
    return 1e3 * best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True, help="a store with FULL exposures (e.g. bench_quality's)")
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    import zarr

    import lrscube
    from lrscube.storage import cube
    from lrscube.config import profiles
    from lrscube.detection import residuals as R
    from lrscube.detection.detection_params import DetectionParams

    D = importlib.import_module("lrscube.detection.detect")
    prof = profiles.load("lrs")
    p = DetectionParams.from_profile(prof)
    url = cube.cube_url(a.store)
    table = cube.exposure_table(a.store)
    g = zarr.open_group(url, mode="r")
    names = [v.decode() if isinstance(v, bytes) else str(v) for v in g["filename"][:len(table)]]
    full = [names.index(f) for f in table[table.subarray == "FULL"].filename.values[:a.frames]]
    sci, err, dq = cube.read_frames(url, full)
    res = R.spatial_residuals(sci[:1, :, 4:-4], err[:1, :, 4:-4], sky_window=15, calibration_block=(256, 258),
                              cross_window=15)
    resid = np.ascontiguousarray(res.resid)
    noise = np.random.default_rng(0).normal(size=(1, 1024, 1032)).astype(np.float32)
    print(f"lrscube from {os.path.dirname(lrscube.__file__)}; load average {os.getloadavg()[0]:.1f}; "
          f"CPU ms per 1024 x 1032 frame, least of {a.repeat}")
    rows = [("running median, 15 along columns, noise", R.running_median, (noise, 15, -2, 5)),
            ("running median, 15 along rows, noise", R.running_median, (noise, 15, -1, 5)),
            ("running median, 9 along rows, noise", R.running_median, (noise, 9, -1, 3)),
            (f"running median, 15 along columns, residual ({int(np.isnan(resid).sum())} NaN)", R.running_median,
             (resid, 15, -2, 5)),
            ("running median, 15 along rows, residual", R.running_median, (resid, 15, -1, 5)),
            ("local sky (median + slope correction), columns", R.local_sky, (sci[:1, :, 4:-4], 15, -2, 5))]
    for label, f, args in rows:
        print(f"  {label:60s} {cpu_ms(f, *args, repeat=a.repeat):8.2f}")
    per = cpu_ms(D.spatial_stage, sci, err, dq, p, prof, repeat=max(1, a.repeat // 2)) / len(full)
    print(f"  {'detect.spatial_stage, per FULL frame (' + str(len(full)) + ' frames)':60s} {per:8.2f}")


if __name__ == "__main__":
    main()
