"""Where detect's time goes, on one core and no cluster: one stage-1 batch and one stage-2 tile.

    /work/venv/bin/python benchmarks/bench_detect_parts.py --store /work/scratch_det/bench/store

Needs a full-frame cube (e.g. the one ``bench_detect.py`` writes). Prints, per full frame, the
time to read its three planes (zarr, whole frames), to read ``sci`` alone (what "read once"
reads), to compute stage 1 (spatial residuals, noise, traces), to write the work store, and
the time of stage 2 for one tile of all N exposures, per exposure of the frame.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import tempfile
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--batch", type=int, default=16, help="exposures in the stage-1 batch")
    ap.add_argument("--n", type=int, default=100, help="exposures in the stage-2 tile")
    a = ap.parse_args()
    import zarr

    from lrscube.config import profiles
    from lrscube.storage.cube import cube_url, open_cube
    from lrscube.detection.detection_params import DetectionParams

    D = importlib.import_module("lrscube.detection.detect")
    prof = profiles.load("lrs")
    p = DetectionParams.from_profile(prof)
    g = zarr.open_group(cube_url(a.store), mode="r")
    B = a.batch
    t = time.perf_counter()
    sci = np.stack([g["sci"][i] for i in range(B)])
    t_sci = (time.perf_counter() - t) / B
    t = time.perf_counter()
    err = np.stack([g["err"][i] for i in range(B)])
    dq = np.stack([g["dq"][i] for i in range(B)])
    t_read = t_sci + (time.perf_counter() - t) / B
    t = time.perf_counter()
    out = D.spatial_stage(sci, err, dq, p, prof)
    t_comp = (time.perf_counter() - t) / B
    work = tempfile.mkdtemp(prefix="lrscube-parts-")
    try:
        from lrscube.storage import workstore

        ty, tx = D.tile_shape(a.n, p)
        spans = [(y, min(y + ty, 1024), x, min(x + tx, 1032)) for y in range(0, 1024, ty) for x in range(0, 1032, tx)]
        bits = out["trace"].astype(np.uint8) | (out["jump"].astype(np.uint8) << 1)
        t = time.perf_counter()
        workstore.write_batch(work, 0, spans, out["r"], out["s"], out["sky"], bits)  # as a stage-1 task does
        t_write = (time.perf_counter() - t) / B
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"stage 1, per full frame (batch of {B}): read sci {t_sci:.3f} s, read sci+err+dq {t_read:.3f} s, "
          f"compute {t_comp:.3f} s, write work store {t_write:.3f} s")

    ds = open_cube(a.store).isel(time=slice(0, a.n), y=slice(256, 512), x=slice(258, 387)).load()
    st1 = D.spatial_stage(ds.sci.values, ds.err.values, ds.dq.values, p, prof)
    ctx = D._context(ds, prof, p)
    ctx.ys, ctx.xs = ds.y.values, ds.x.values
    ex = np.zeros(st1["r"].shape[1:], bool)
    t = time.perf_counter()
    iv, diag = D.temporal_stage(st1["r"], st1["s"], st1["sky"], st1["trace"], ex, ctx, (256, 258))
    t2 = time.perf_counter() - t
    tiles_per_frame = (1024 * 1032) / (256 * 129)
    print(f"stage 2, one 256 x 129 tile of {a.n} exposures: {t2:.2f} s "
          f"= {t2 * tiles_per_frame / a.n:.3f} s per full frame and exposure")
    print(f"total per full frame: {t_read + t_comp + t_write + t2 * tiles_per_frame / a.n:.3f} s "
          f"against {t_sci:.3f} s to read sci")


if __name__ == "__main__":
    main()
