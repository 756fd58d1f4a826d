"""icechunk against lrscube's own store, on what ingest and detect do to storage, in one run.

    python benchmarks/bench_icechunk.py --n 100 --workdir /work/bench/ice [--detect]

Both stores get the same cube (``lrscube.storage.cube.create``'s arrays, format 3: one shard per
exposure and plane, blosc lz4 + crc32c per chunk) and the same bytes: every shard is encoded by
lrscube's shard encoder (``cube.shard_layout(a).encode``), on the workers of one LocalCluster
(2 workers x 1 thread), from the synthetic full frames of ``bench_detect.make_exposure``.

- **ingest's storage work**: batches of 32 exposures (ingest's default), each written by the
  workers and committed by the client. Today's store: ``cube.Append`` (room, write_exposure,
  commit: the coordinates and the group's metadata). icechunk: a writable session per batch,
  forked to the workers (``Session.fork``), each fork writes its shards through
  ``session.store``, the client merges the forks, writes the coordinates and commits.
- **detect's storage work**: stage 1 reads every exposure's three shards whole and decodes them
  (``cube.read_frames``), 10 exposures per task; with ``--detect`` also the whole
  ``detect_dataset`` on the first N exposures, stage 1 reading through each store.

Rounds alternate between the two stores (``--rounds``) so that load on the machine falls on
both alike; the figures are the per-round wall times, the CPU seconds of all processes
(workers, client and scheduler: what a busy machine inflates least), and their medians.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

BATCH = 32
READ_BATCH = 10


def _metas(idx):
    return [{"mjd": 60000.0 + i * 0.5, "expstart": 60000.0 + i * 0.5 - 0.01, "exptime": 100.0, "nints": 1,
             "filename": f"bench_{i:05d}", "subarray": "FULL", "exp_type": "MIR_LRS-FIXEDSLIT",
             "detector": "MIRIMAGE", "bunit": "DN/s", "y0": 0, "x0": 0, "ny": 1024, "nx": 1032,
             "content_hash": f"h{i}", "exposure_key": f"k{i}"} for i in idx]


# ------------------------------------------------------------------ today's store


def write_zarr(store: str, n: int, client) -> float:
    from bench_detect import make_exposure

    from lrscube.storage import cube
    from lrscube.config import profiles

    cube.create(store, profiles.load("lrs"), format_version=3)  # lrscube's own commit scheme
    t0 = time.perf_counter()
    app = cube.Append(store)
    end = None
    for b0 in range(0, n, BATCH):
        idx = list(range(b0, min(n, b0 + BATCH)))
        start = app.room(len(idx), after=end, ahead=n - b0)  # grown once, as ingest's reserve does
        end = start + len(idx)
        arrays = app.data_arrays()

        def one(i, start=start, arrays=arrays, b0=b0):
            e, _ = make_exposure(i)
            cube.write_exposure(store, start + i - b0, e, arrays)

        client.gather(client.map(one, idx, pure=False))
        app.commit(start, _metas(idx))
    app.close()
    return time.perf_counter() - t0


def read_zarr(store: str, n: int, client) -> float:
    from lrscube.storage import cube

    url = cube.cube_url(store)

    def task(rows):
        sci, err, dq = cube.read_frames(url, rows)
        return float(np.nanmean(sci[:, ::64, ::64]))

    t0 = time.perf_counter()
    client.gather(client.map(task, [list(range(a, min(n, a + READ_BATCH))) for a in range(0, n, READ_BATCH)],
                             pure=False))
    return time.perf_counter() - t0


# ------------------------------------------------------------------ icechunk


def _repo(path: str, create: bool = False):
    import icechunk

    storage = icechunk.local_filesystem_storage(path)
    return icechunk.Repository.create(storage) if create else icechunk.Repository.open(storage)


def _ice_path(store) -> "zarr.storage.StorePath":  # noqa: F821
    import zarr

    return zarr.storage.StorePath(store, "exposures")


def write_ice(path: str, n: int, client) -> float:
    import icechunk  # noqa: F401
    import zarr
    from bench_detect import make_exposure

    from lrscube.storage import cube, store as st
    from lrscube.config import profiles

    repo = _repo(path, create=True)
    session = repo.writable_session("main")
    real, real_seal = st.zarr_store, st.seal_metadata
    st.zarr_store = lambda url, read_only=False: _ice_path(session.store)  # cube.create's arrays, in the repo
    st.seal_metadata = lambda url, names: {}  # reads metadata files by path; the repo has its own checksums
    try:
        cube.create(path, profiles.load("lrs"), format_version=3)  # the same arrays, inside the session
    finally:
        st.zarr_store, st.seal_metadata = real, real_seal
    session.commit("create the exposure cube")
    t0 = time.perf_counter()
    # grown once for all n, as ingest's reserve does (a session with changes cannot be forked)
    session = repo.writable_session("main")
    g = zarr.open_group(_ice_path(session.store), mode="r+")
    for v in (*cube.DATA_VARS, "time", *cube.COORDS):
        g[v].resize((n, *g[v].shape[1:]))
    session.commit("room for the exposures")
    for b0 in range(0, n, BATCH):
        idx = list(range(b0, min(n, b0 + BATCH)))
        session = repo.writable_session("main")
        fork = session.fork()

        def one(i, fork=fork):
            import zarr as z
            from zarr.core.buffer import default_buffer_prototype
            from zarr.core.sync import sync

            e, _ = make_exposure(i)
            grp = z.open_group(_ice_path(fork.store), mode="r+")
            proto = default_buffer_prototype()
            for name in cube.DATA_VARS:
                a = grp[name]
                blob = cube.shard_layout(a).encode(getattr(e, name), 0, 0)
                sync((a.store_path / a.metadata.encode_chunk_key((i, 0, 0))).set(proto.buffer.from_bytes(blob)))
            return fork

        forks = client.gather(client.map(one, idx, pure=False))
        session.merge(*forks)
        g = zarr.open_group(_ice_path(session.store), mode="r+")
        arrays = [g[v] for v in (*cube.DATA_VARS, "time", *cube.COORDS)]
        metas = _metas(idx)
        sl = slice(b0, b0 + len(idx))
        arrays[len(cube.DATA_VARS)][sl] = np.array([m["mjd"] for m in metas])
        for a in arrays[len(cube.DATA_VARS) + 1:]:
            vals = [m.get(a.basename) for m in metas]
            if cube.COORDS[a.basename] == "str":
                a[sl] = np.array(["" if v is None else str(v) for v in vals], dtype=object)
            else:
                a[sl] = np.array([np.nan if v is None else v for v in vals], dtype=cube.COORDS[a.basename])
        session.commit(f"append {len(idx)} exposures")
    return time.perf_counter() - t0


def _read_ice_frames(path: str, rows):
    import zarr
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    from lrscube.storage import cube

    session = _repo(path).readonly_session(branch="main")
    g = zarr.open_group(_ice_path(session.store), mode="r")
    out = []
    for name in cube.DATA_VARS:
        a = g[name]
        layout = cube.shard_layout(a)
        frames = np.empty((len(rows), *a.shape[1:]), dtype=a.dtype)

        async def get_all(paths):
            import asyncio

            proto = default_buffer_prototype()
            got = await asyncio.gather(*(p.get(prototype=proto) for p in paths))
            return [None if b is None else b.to_bytes() for b in got]

        blobs = sync(get_all([a.store_path / a.metadata.encode_chunk_key((int(i), 0, 0)) for i in rows]))
        for k, blob in enumerate(blobs):
            layout.decode_into(blob, frames[k])
        out.append(frames)
    return tuple(out)


def read_ice(path: str, n: int, client) -> float:
    def task(rows):
        sci, err, dq = _read_ice_frames(path, rows)
        return float(np.nanmean(sci[:, ::64, ::64]))

    t0 = time.perf_counter()
    client.gather(client.map(task, [list(range(a, min(n, a + READ_BATCH))) for a in range(0, n, READ_BATCH)],
                             pure=False))
    return time.perf_counter() - t0


# ------------------------------------------------------------------ detect through either store


def detect_time(store: str, n: int, work: str, ice_path: str | None, client) -> float:
    """detect_dataset on the first n exposures (stage 1 reading its frames itself); with
    ``ice_path`` the workers' ``cube.read_frames`` reads the icechunk repository instead."""
    from lrscube.storage.cube import cube_url, open_cube
    from lrscube.detection.detect import detect_dataset

    def route(path):
        import lrscube.storage.cube as c

        if path is None:
            if hasattr(c, "_bench_read_frames"):
                c.read_frames = c._bench_read_frames
            return
        c._bench_read_frames = getattr(c, "_bench_read_frames", c.read_frames)
        c.read_frames = lambda url, rows, missing="fill": _read_ice_frames(path, rows)

    client.run(route, ice_path)
    ds = open_cube(store).isel(time=slice(0, n))
    t0 = time.perf_counter()
    detect_dataset(ds, "lrs", work=work, source=cube_url(store), progress=False)
    t = time.perf_counter() - t0
    client.run(route, None)
    shutil.rmtree(work, ignore_errors=True)
    return t


def _cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _all_cpu(client) -> float:
    """CPU seconds so far of the workers' processes and of this one (client and scheduler)."""
    return sum(client.run(_cpu_s).values()) + _cpu_s()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--detect", action="store_true", help="also the whole detect_dataset through each store")
    a = ap.parse_args(argv)

    import icechunk
    import zarr
    from distributed import Client, LocalCluster

    from lrscube.deploy.cluster import load_dask_defaults

    load_dask_defaults()
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    res = {k: [] for k in ("write_zarr", "write_ice", "read_zarr", "read_ice", "detect_zarr", "detect_ice")}
    cpu = {k: [] for k in res}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        client.run(lambda: __import__("lrscube.detection.detect") and __import__("icechunk"))
        for r in range(a.rounds):
            zs, ice = str(work / f"zarr-{r}"), str(work / f"ice-{r}")
            shutil.rmtree(zs, ignore_errors=True)
            shutil.rmtree(ice, ignore_errors=True)
            order = [("zarr", zs), ("ice", ice)] if r % 2 == 0 else [("ice", ice), ("zarr", zs)]
            for kind, path in order:
                c0 = _all_cpu(client)
                t = (write_zarr if kind == "zarr" else write_ice)(path, a.n, client)
                res[f"write_{kind}"].append(t)
                cpu[f"write_{kind}"].append(_all_cpu(client) - c0)
            for kind, path in order:
                c0 = _all_cpu(client)
                t = (read_zarr if kind == "zarr" else read_ice)(path, a.n, client)
                res[f"read_{kind}"].append(t)
                cpu[f"read_{kind}"].append(_all_cpu(client) - c0)
            if a.detect:
                for kind, path in order:
                    c0 = _all_cpu(client)
                    t = detect_time(zs, a.n, str(work / "work"), ice if kind == "ice" else None, client)
                    res[f"detect_{kind}"].append(t)
                    cpu[f"detect_{kind}"].append(_all_cpu(client) - c0)
            sizes = {k: sum(f.stat().st_size for f in Path(p).rglob("*") if f.is_file()) / 1e6 for k, p in
                     (("zarr", zs), ("ice", ice))}
            print(f"round {r}: " + "  ".join(f"{k} {v[-1]:.2f} s (cpu {cpu[k][-1]:.2f})" for k, v in res.items() if v)
                  + f"  store MB zarr {sizes['zarr']:.0f} ice {sizes['ice']:.0f}; load {os.getloadavg()[0]:.1f}",
                  flush=True)
    print(f"\n{a.n} full-frame exposures, batches of {BATCH}, 2 workers x 1 thread; icechunk {icechunk.__version__}, "
          f"zarr {zarr.__version__}; medians of {a.rounds} alternating rounds")
    for what in ("write", "read", "detect"):
        z, i = res[f"{what}_zarr"], res[f"{what}_ice"]
        if z:
            mz, mi = statistics.median(z), statistics.median(i)
            label = {"write": "ingest's storage work (write + commit)", "read": "detect stage 1 reads",
                     "detect": "detect_dataset"}[what]
            print(f"{label:40s} today's store {mz:7.2f} s   icechunk {mi:7.2f} s   icechunk / today {mi / mz:5.2f}x"
                  f"   ({1e3 * mz / a.n:.1f} vs {1e3 * mi / a.n:.1f} ms per exposure)")
            cz, ci = statistics.median(cpu[f"{what}_zarr"]), statistics.median(cpu[f"{what}_ice"])
            print(f"{'  CPU seconds, all processes':40s} today's store {cz:7.2f} s   icechunk {ci:7.2f} s   icechunk / today {ci / cz:5.2f}x"
                  f"   (rounds {', '.join(f'{y / x:.2f}' for x, y in zip(cpu[f'{what}_zarr'], cpu[f'{what}_ice']))})")
    for r in range(a.rounds):
        shutil.rmtree(work / f"zarr-{r}", ignore_errors=True)
        shutil.rmtree(work / f"ice-{r}", ignore_errors=True)


if __name__ == "__main__":
    main()
