"""The two store formats through lrscube's own code, in one run: ingest, read and detect.

    python benchmarks/bench_engine.py --workdir /work/bench/engine --n 48 --rounds 3 [--reads 5] [--detect]

One set of simulated files (``lrscube.simulate``, the default FULL / SLITLESSPRISM mix), then
rounds alternating the order of the two formats: ``lrscube.ingest`` into a new store of format 3
(the cube a plain zarr group, lrscube's own commit) and of format 4 (an icechunk repository, a
commit per batch), both on one LocalCluster (2 workers x 1 thread); then the read floor,
``cube.read_frames`` of every exposure (sci, err, dq decoded) in tasks of 10, ``--reads`` times
over (a read of 40 exposures is a second: one pass is mostly noise on a busy machine); with ``--detect``,
``lrscube.detect`` on each store. Printed per round: wall seconds and the CPU seconds of all
processes (workers, client and scheduler: what a busy machine inflates least); then the medians
and format 4 / format 3.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import dask

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_icechunk import _all_cpu  # noqa: E402  (CPU seconds of every process of the cluster)

READ_BATCH = 10


def _timed(fn, client):
    c0, t0 = _all_cpu(client), time.perf_counter()
    fn()
    return time.perf_counter() - t0, _all_cpu(client) - c0


def _read_all(store: str, client) -> None:
    import numpy as np

    from lrscube.storage import cube

    url, n = cube.cube_url(store), cube.n_stored(store)

    def task(rows):
        sci, err, dq = cube.read_frames(url, rows)
        return float(np.nanmean(sci[:, ::64, ::64]))

    client.gather(client.map(task, [list(range(a, min(n, a + READ_BATCH))) for a in range(0, n, READ_BATCH)],
                             pure=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reads", type=int, default=1, help="passes of the read floor per round")
    ap.add_argument("--detect", action="store_true")
    a = ap.parse_args()
    from distributed import Client, LocalCluster

    import lrscube

    work = Path(a.workdir)
    files = work / "files"
    if not files.exists():
        lrscube.simulate(files, n=a.n, seed=11)
    paths = sorted(str(p) for p in files.glob("*.fits"))
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    client = Client(cluster)
    rows: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for r in range(a.rounds):
        for fmt in ((3, 4) if r % 2 == 0 else (4, 3)):
            store = str(work / f"s{fmt}.zarr")
            shutil.rmtree(store, ignore_errors=True)
            with dask.config.set({"lrscube.store.format": fmt}):
                steps = [("ingest", lambda: lrscube.ingest(paths, store, scheduler=client.scheduler.address,
                                                           progress=False)),
                         ("read", lambda: [_read_all(store, client) for _ in range(a.reads)])]
                if a.detect:
                    steps.append(("detect", lambda: lrscube.detect(store, progress=False)))  # this client
                for name, fn in steps:
                    wall, cpu = _timed(fn, client)
                    rows.setdefault((name, fmt), []).append((wall, cpu))
                    print(f"round {r + 1} format {fmt} {name}: wall {wall:.2f} s, CPU {cpu:.2f} s", flush=True)
    print(f"\n{len(paths)} files, {a.rounds} rounds, {a.reads} read passes, load average {open('/proc/loadavg').read().split()[0]}")
    print("| step | format 3 wall / CPU (s) | format 4 wall / CPU (s) | format 4 / 3: wall, CPU |")
    print("| --- | --- | --- | --- |")
    for name in dict.fromkeys(k for k, _ in rows):
        m = {f: tuple(statistics.median(v[i] for v in rows[(name, f)]) for i in (0, 1)) for f in (3, 4)}
        print(f"| {name} | {m[3][0]:.2f} / {m[3][1]:.2f} | {m[4][0]:.2f} / {m[4][1]:.2f} | "
              f"{m[4][0] / m[3][0]:.2f}, {m[4][1] / m[3][1]:.2f} |")
    client.close()
    cluster.close()


if __name__ == "__main__":
    main()
