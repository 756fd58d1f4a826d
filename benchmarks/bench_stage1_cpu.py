"""Detect's stage 0 (response pattern, unlit pixels) and stage 1 (spatial residuals into the work
store) alone: CPU seconds per exposure, in one process, on a store's exposures of one subarray.

    export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1
    python benchmarks/bench_stage1_cpu.py --store /work/perf3-store.zarr [--subarray FULL] [--save OUT.npz]

Runs what ``detect`` runs for these exposures (``detect._stage0``'s tasks, then
``detect._stage1_to_work`` batch by batch, each task reading its frames from the cube as on the
cluster) after one warm-up task (numba compilation), under the workers' malloc settings
(configs/dask.yaml), and prints the CPU seconds of this process (``time.process_time``) per
exposure of each stage. ``--save``: the response pattern, the unlit
pixels and stage 1's outputs (``spatial_stage``: r, s, sky, trace and jump bits) of the first
``--save-frames`` exposures, to compare two commits bit for bit (``--compare A.npz B.npz``).
Works with older commits on ``PYTHONPATH`` (it uses only functions they have).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np


def compare(a_path: str, b_path: str) -> int:
    a, b = np.load(a_path), np.load(b_path)
    bad = 0
    for k in sorted(set(a.files) | set(b.files)):
        if k not in a.files or k not in b.files:
            print(f"{k}: only in {'A' if k in a.files else 'B'}")
            bad += 1
            continue
        x, y = a[k], b[k]
        same = x.shape == y.shape and x.dtype == y.dtype and x.tobytes() == y.tobytes()
        print(f"{k}: {x.shape} {x.dtype}: {'identical bit for bit' if same else 'DIFFERENT'}")
        bad += not same
    return bad


def as_workers_run() -> None:
    """Run this script again under the malloc settings lrscube gives its dask workers
    (configs/dask.yaml, ``pre-spawn-environ``: freed frame-sized blocks stay for reuse instead of
    being page-faulted in again), unless they are set; glibc reads them at start-up only."""
    import yaml

    from lrscube.config.profiles import configs_dir

    with open(configs_dir() / "dask.yaml") as f:
        env = {k: str(v) for k, v in yaml.safe_load(f)["distributed"]["nanny"]["pre-spawn-environ"].items()}
    if any(os.environ.get(k) != v for k, v in env.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **env})


def main():
    as_workers_run()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store")
    ap.add_argument("--subarray", default="FULL")
    ap.add_argument("--max", type=int, default=0, help="at most this many exposures (0: all)")
    ap.add_argument("--save", help="write the stage-0 and stage-1 outputs here (.npz)")
    ap.add_argument("--save-frames", type=int, default=8)
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two --save files and exit")
    a = ap.parse_args()
    if a.compare:
        sys.exit(1 if compare(*a.compare) else 0)

    from _stage1_setup import stage0, stage1_setup

    from lrscube.detection import detect as D
    from lrscube.storage import cube, workstore

    s = stage1_setup(a.store, a.subarray, a.max)
    url, prof, p, rows, N, dof, spans, B, origin = s.url, s.prof, s.p, s.rows, s.N, s.dof, s.spans, s.B, s.origin
    ty, tx, fy, fx = s.ty, s.tx, s.fy, s.fx

    # warm-up: compile the kernels on one exposure, outside the timings
    work = tempfile.mkdtemp(prefix="lrscube-s1-")
    try:
        workstore.create(work)
        D._response_task(None, None, p, prof, url, rows[:1], None, origin)
        D._stage1_to_work(work, 0, None, None, None, p, prof, spans, url, rows[:1], None, None, None,
                          None if dof is None else dof[:1], origin)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # stage 0, as detect._stage0 runs its tasks (here one after the other)
    t = time.process_time()
    resp, unlit = stage0(s)
    t_stage0 = time.process_time() - t

    # stage 1, batch by batch
    work = tempfile.mkdtemp(prefix="lrscube-s1-")
    try:
        workstore.create(work)
        t = time.process_time()
        for a0 in range(0, N, B):
            D._stage1_to_work(work, a0, None, None, None, p, prof, spans, url, rows[a0:a0 + B], resp, unlit, None,
                              None if dof is None else dof[a0:a0 + B], origin)
        t_stage1 = time.process_time() - t
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"{a.store}: {N} {a.subarray} exposures, batches of {B}, intscat {'read' if dof is not None else 'none'}")
    print(f"stage 0 {t_stage0:.2f} CPU-s ({1e3 * t_stage0 / N:.1f} ms per exposure over {N}), "
          f"stage 1 {t_stage1:.2f} CPU-s ({1e3 * t_stage1 / N:.1f} ms per exposure), "
          f"stage 0 + 1 {1e3 * (t_stage0 + t_stage1) / N:.1f} ms per exposure")

    if a.save:
        k = min(a.save_frames, N)
        sci, err, dq = cube.read_frames(url, rows[:k], missing="error")
        out = D.spatial_stage(sci, err, dq, p, prof, response=resp, unlit=unlit, origin=origin)
        bits = out["trace"].astype(np.uint8) | (out["jump"].astype(np.uint8) << 1)
        save = {"r": out["r"], "s": out["s"], "sky": out["sky"], "bits": bits, "and_bits": out["and_bits"],
                "n_seen": out["n_seen"], "trace_pixels": out["trace_pixels"]}
        if resp is not None:
            save["response"] = resp
        if unlit is not None:
            save["unlit"] = unlit
        np.savez(a.save, **save)
        print(f"saved {sorted(save)} of {k} exposures to {a.save}")


if __name__ == "__main__":
    main()
