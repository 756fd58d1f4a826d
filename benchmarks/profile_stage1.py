"""Where a stage-1 task's time goes, per step and per frame (line_profiler; one process).

    python benchmarks/profile_stage1.py --store /work/bench/full150/store [--frames 12] [--lines 25]

Reads ``--frames`` exposures of each subarray kind (FULL, SLITLESSPRISM, ...) from the store
with ``cube.read_frames`` (as a stage-1 task does), runs ``detect._stage1_to_work`` into a
temporary work store batch by batch, and prints the CPU time per frame of the task's steps
(read, spatial_stage, work-store write) and the most expensive source lines of the stage-1
functions (per frame). CPU time of this process (``time.process_time``), so that other jobs on
the machine inflate it less than wall time.
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
    ap.add_argument("--frames", type=int, default=12, help="exposures per subarray kind")
    ap.add_argument("--batch", type=int, default=6)
    ap.add_argument("--lines", type=int, default=25, help="source lines to print")
    a = ap.parse_args()
    from line_profiler import LineProfiler

    from lrscube.storage import cube, workstore
    from lrscube.config import profiles
    from lrscube.detection import residuals, running
    from lrscube.detection.detection_params import DetectionParams

    D = importlib.import_module("lrscube.detection.detect")
    prof = profiles.load("lrs")
    p = DetectionParams.from_profile(prof)
    url = cube.cube_url(a.store)
    table = cube.exposure_table(a.store)
    g = __import__("zarr").open_group(cube.zarr_store(url, read_only=True), mode="r")
    names = [v.decode() if isinstance(v, bytes) else str(v) for v in g["filename"][:len(table)]]
    where = {n: i for i, n in enumerate(names)}
    ty, tx = D.tile_shape(len(table), p)
    spans = [(y, min(y + ty, 1024), x, min(x + tx, 1032)) for y in range(0, 1024, ty) for x in range(0, 1032, tx)]
    funcs = [D.spatial_stage, residuals.spatial_residuals, residuals._sky_parts, residuals.local_sky,
             residuals.local_linear, residuals.cross_deviation, residuals.fill_holes, residuals._noise_scale,
             residuals.trace_mask, residuals._line_offsets, residuals.window_median_position,
             residuals.calibrated_sigma if hasattr(residuals, "calibrated_sigma") else None]
    for kind, grp in table.groupby("subarray"):
        rows = np.array([where[f] for f in grp["filename"].values[:a.frames]])
        work = tempfile.mkdtemp(prefix="lrscube-prof-")
        try:
            # compile and warm up outside the timings
            D._stage1_to_work(work, 0, None, None, None, p, prof, spans, url, rows[:1])
            lp = LineProfiler()
            for f in funcs:
                if f is not None:
                    lp.add_function(f)
            t_read = t_stage = t_write = 0.0
            for b0 in range(0, rows.size, a.batch):
                r = rows[b0:b0 + a.batch]
                t = time.process_time()
                sci, err, dq = cube.read_frames(url, r)
                t_read += time.process_time() - t
                t = time.process_time()
                out = lp.runcall(D.spatial_stage, sci, err, dq, p, prof)
                t_stage += time.process_time() - t
                bits = out["trace"].astype(np.uint8) | (out["jump"].astype(np.uint8) << 1)
                t = time.process_time()
                workstore.write_batch(work, b0, spans, out["r"], out["s"], out["sky"], bits)
                t_write += time.process_time() - t
        finally:
            shutil.rmtree(work, ignore_errors=True)
        n = rows.size
        print(f"\n{kind}: {n} frames, CPU per frame: read sci+err+dq {1e3 * t_read / n:.1f} ms, "
              f"spatial_stage {1e3 * t_stage / n:.1f} ms (under line_profiler), "
              f"work-store write {1e3 * t_write / n:.1f} ms")
        stats = lp.get_stats()
        lines = []
        for (fn, line, name), timings in stats.timings.items():
            for ln, hits, total in timings:
                lines.append((total * stats.unit / n, name, ln, hits / n))
        src = {}
        for (fn, line, name) in stats.timings:
            src[name] = open(fn).read().splitlines()
        lines.sort(reverse=True)
        print(f"  {'ms/frame':>8} {'calls/frame':>11}  function:line  source")
        inner = {"spatial_stage", "spatial_residuals", "_sky_parts"}  # callers: their lines include callees
        shown = 0
        for ms, name, ln, hits in lines:
            if name in inner and ms > 0 and any(c in src[name][ln - 1] for c in ("(", "=")):
                pass
            print(f"  {1e3 * ms:8.1f} {hits:11.1f}  {name}:{ln}  {src[name][ln - 1].strip()[:90]}")
            shown += 1
            if shown >= a.lines:
                break


if __name__ == "__main__":
    main()
