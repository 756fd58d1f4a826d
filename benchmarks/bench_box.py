"""detect on a set of subarray exposures: in the box of their footprints against whole frames,
in one run on one LocalCluster.

    python benchmarks/bench_box.py --out /work/bench/box --sets lrs:40 nirspec-nrs1:16 --repeat 3

For each set (``MODE:N``: N simulated subarray exposures of the mode, seed 3, simulated and
ingested into ``OUT/MODE-N`` once and reused), on ONE LocalCluster of 2 workers x 1 thread
(lrscube's dask defaults), after a warm-up run of each (numba's caches loaded on the workers),
``--repeat`` alternating pairs of:

- **whole frames**: ``detect_dataset`` as ``detect(store)`` runs it (``work=``, ``source=``) on
  the cube without its footprint coordinates (``y0, x0, ny, nx``), so that nothing tells it
  where the exposures lie: every stage reads and holds whole frames;
- **box**: the same on the cube as opened (``detect.seen_box``: the footprints' box on the
  tile grid).

It prints each run's wall seconds, its stages' (``detect.json``'s ``timing``) and the workers' CPU
seconds, the box's ratio to the whole frames, and the read floor of each (``cube.read_frames``
of sci + err + dq of every exposure, whole frames and the box's region, as tasks of stage 1's
batch size); and checks that both give the same intervals, every column of every row.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench_detect import cpu_now  # noqa: E402  (the script's folder is on sys.path)


def _read_batch(url, rows, region):
    from lrscube.storage.cube import read_frames

    return sum(a.nbytes for a in read_frames(url, rows, region=region))


def read_floor(client, url, rows, batch, region) -> float:
    t = time.perf_counter()
    client.gather(client.map(_read_batch, [url] * len(range(0, len(rows), batch)),
                             [rows[a:a + batch] for a in range(0, len(rows), batch)],
                             [region] * len(range(0, len(rows), batch)), pure=False))
    return time.perf_counter() - t


def make_set(out: Path, mode: str, n: int) -> str:
    import lrscube

    root = out / f"{mode}-{n}"
    store = root / "store"
    if not store.exists():
        shutil.rmtree(root, ignore_errors=True)
        lrscube.simulate(root / "files", n=n, mode=mode, full_frame=False, seed=3, progress=False)
        lrscube.ingest(root / "files", str(store), mode=mode, progress=False)
    return str(store)


def run(client, ds, prof, url) -> tuple[float, float, dict, object]:
    from lrscube.detection.detect import detect_dataset

    work = tempfile.mkdtemp(prefix="bench_box_work_")
    c0 = cpu_now(client)[0]
    t = time.perf_counter()
    try:
        iv, meta = detect_dataset(ds, prof, progress=False, work=work, source=url)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return time.perf_counter() - t, cpu_now(client)[0] - c0, meta, iv


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--sets", nargs="+", default=["lrs:40", "nirspec-nrs1:16"], help="MODE:N")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    import pandas as pd
    from distributed import Client, LocalCluster

    from lrscube.config import profiles
    from lrscube.deploy.cluster import worker_threads
    from lrscube.detection.detect import _storage_rows, balanced_batch, seen_box, tile_shape
    from lrscube.detection.detection_params import DetectionParams
    from lrscube.storage.cube import cube_url, open_cube

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        for spec in a.sets:
            mode, n = spec.split(":")
            store = make_set(out, mode, int(n))
            prof = profiles.load(mode)
            url = cube_url(store)
            boxed = open_cube(store)
            whole = boxed.drop_vars(["y0", "x0", "ny", "nx"])
            p = DetectionParams.from_profile(prof)
            n_t = boxed.sizes["time"]
            tile = tile_shape(n_t, p, prof.chunk)
            region = seen_box(boxed, tile)
            rows = _storage_rows(boxed, url)
            batch = balanced_batch(n_t, p.work_batch_exposures, worker_threads())
            print(f"\n{mode}: {n_t} exposures of {boxed.sizes['y']} x {boxed.sizes['x']}; "
                  f"box rows {region[0].start}-{region[0].stop}, columns {region[1].start}-{region[1].stop}")
            runs = {"whole frames": whole, "box": boxed}
            got = {k: run(client, v, prof, url)[3] for k, v in runs.items()}  # warm-up
            pd.testing.assert_frame_equal(got["box"], got["whole frames"])
            wall = {k: [] for k in runs}
            cpu = {k: [] for k in runs}
            floors = {"whole frames": [], "box": []}
            for r in range(a.repeat):
                for k, ds in runs.items():
                    w, c, meta, iv = run(client, ds, prof, url)
                    pd.testing.assert_frame_equal(iv, got[k])
                    wall[k].append(w)
                    cpu[k].append(c)
                    tm = meta["timing"]
                    print(f"  pair {r + 1} {k:13s} wall {w:6.2f} s, workers' CPU {c:6.2f} s; stages 0/1/2a/2 "
                          f"{tm['stage0_s']}/{tm['stage1_s']}/{tm['stage2a_s']}/{tm['stage2_s']} s")
                floors["whole frames"].append(read_floor(client, url, rows, batch, None))
                floors["box"].append(read_floor(client, url, rows, batch, region))
            for k in runs:
                f = statistics.median(floors[k])
                print(f"  {k:13s} median wall {statistics.median(wall[k]):6.2f} s, CPU {statistics.median(cpu[k]):6.2f} s; "
                      f"read floor {f:5.2f} s; detect / floor {statistics.median(wall[k]) / f:5.1f}")
            print(f"  box / whole frames: wall {statistics.median(wall['box']) / statistics.median(wall['whole frames']):.2f}, "
                  f"CPU {statistics.median(cpu['box']) / statistics.median(cpu['whole frames']):.2f}; "
                  f"intervals identical ({len(got['box'])} rows)")


if __name__ == "__main__":
    main()
