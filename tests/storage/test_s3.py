"""lrscube on object storage: inputs and store on a real S3-compatible server (moto in server
mode on loopback), computed by a multi-process dask cluster whose workers reach it over HTTP.

The cluster is started with the S3 variables removed from the environment, so its workers
learn the endpoint only through ``lrscube.deploy.cluster_specs.forward_env`` -- the way workers of a
cluster lrscube did not start (dask-gateway, a shared scheduler) get it. Ingest is pointed at
it by address, as ``--scheduler`` does; its client is also this module's default client, so
lazy reads of the store compute there too.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import write_product
from s3server import s3  # noqa: F401  (fixture)

import lrscube
from lrscube.storage import cube
from lrscube import cli
from lrscube.storage import store as st
from lrscube.deploy.cluster_specs import forward_env

TIMES = [60020.0, 60000.0, 60010.0]  # uploaded out of time order
SLIT_ROWS, SLIT_COLS = slice(528, 944), slice(0, 72)  # SLITLESSPRISM in the full frame
HOT = (100, 30)  # a hot pixel in every input, subarray coordinates: full frame (628, 30)


def _endpoint_on_workers(client) -> set:
    # a lambda, not os.environ.get: a bound method would carry a pickled copy of *this*
    # process's os.environ to the worker (and client.run(os.environ.update, ...) would
    # update that copy, leaving the worker's environment untouched)
    return set(client.run(lambda: os.environ.get("LRSCUBE_S3_ENDPOINT")).values())


@pytest.fixture(scope="module")
def s3_cluster(s3):  # noqa: F811
    from distributed import Client, LocalCluster

    with pytest.MonkeyPatch.context() as mp:
        for name in s3.env:
            mp.delenv(name, raising=False)
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    # the default client for this module, as a user's would be: lazy results (open_cube(...).values,
    # detect's tiles) compute on it, not on the session cluster of conftest.py, whose workers
    # have never heard of this S3 server
    client = Client(cluster)
    try:
        assert _endpoint_on_workers(client) == {None}, "workers must not inherit the endpoint here"
        forward_env(client, s3.env)
        assert _endpoint_on_workers(client) == {s3.endpoint}
        yield cluster
    finally:
        client.close()
        cluster.close()


@pytest.fixture(scope="module")
def inputs(s3, tmp_path_factory):  # noqa: F811
    """Three SLITLESSPRISM rate files and one junk file under s3://bucket/inputs/."""
    d = tmp_path_factory.mktemp("inputs")
    written = {}
    for i, t in enumerate(TIMES):
        name = f"jw01234001001_03102_{i + 1:05d}_mirimage_rate.fits"
        sci = (10.0 + np.random.default_rng(i).normal(0, 1.0, (416, 72))).astype(np.float32)
        sci[HOT] += 500.0
        _, sci, err, dq = write_product(d / name, mjd_start=t, seed=i, exposure=f"{i + 1:05d}", sci=sci)
        written[name] = (t, sci, err, dq)
    (d / "junk_rate.fits").write_text("not a FITS file\n" * 50)
    fs = s3.fs
    for p in sorted(d.iterdir()):
        fs.put_file(str(p), f"{s3.bucket}/inputs/{p.name}")
    return written


@pytest.fixture(scope="module")
def ingested(s3, s3_cluster, inputs, tmp_path_factory):  # noqa: F811
    """The inputs ingested into s3://bucket/cube.zarr, run from an empty working directory
    (an s3:// URL mistaken for a local path would leave something there)."""
    cwd = tmp_path_factory.mktemp("cwd")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        store = s3.url("cube.zarr")
        summary = lrscube.ingest(s3.url("inputs/"), store, scheduler=s3_cluster.scheduler_address, progress=False)
    assert not any(cwd.iterdir()), f"ingest wrote into the working directory: {list(cwd.iterdir())}"
    return store, summary


@pytest.mark.slow
def test_ingest_from_s3_into_s3(s3, s3_cluster, inputs, ingested):  # noqa: F811
    store, s = ingested

    assert sorted(Path(f).name for f in s.ingested) == sorted(inputs)
    assert all(f.startswith("s3://bucket/inputs/") for f in s.ingested)
    assert [f for f, _ in s.rejected] == [s3.url("inputs/junk_rate.fits")]
    assert "not a readable FITS" in s.rejected[0][1]
    assert s.n_in_cube == 3 and not s.duplicates

    ds = lrscube.open_cube(store)
    assert ds.sizes == {"time": 3, "y": 1024, "x": 1032}
    order = sorted(inputs, key=lambda n: inputs[n][0])
    assert list(ds.filename.values) == order  # sorted by time, not by upload order
    assert list(ds.source.values) == [s3.url(f"inputs/{n}") for n in order]
    for i, name in enumerate(order):
        t, sci, err, dq = inputs[name]
        assert ds.expstart.values[i] == pytest.approx(t)
        frame = ds.sci[i].values
        np.testing.assert_array_equal(frame[SLIT_ROWS, SLIT_COLS], sci)
        assert np.isnan(frame[:528]).all() and np.isnan(frame[:, 72:]).all()
        np.testing.assert_array_equal(ds.err[i].values[SLIT_ROWS, SLIT_COLS], err)
        np.testing.assert_array_equal(ds.dq[i].values[SLIT_ROWS, SLIT_COLS], dq)
    assert set(ds.subarray.values) == {"SLITLESSPRISM"}
    assert np.issubdtype(ds.time.dtype, np.datetime64)

    # the store really is on the server: ask it directly, not through fsspec
    keys = set(s3.keys("cube.zarr/"))
    # the cube is an icechunk repository (format 4) under the store's prefix
    assert {"cube.zarr/exposures/refs/branch.main/ref.json", "cube.zarr/ingest_log.parquet"} <= keys
    assert any(k.startswith("cube.zarr/exposures/chunks/") for k in keys)
    # one shard per exposure and plane, as the repository records them
    from zarr.core.sync import sync

    from lrscube.storage import engine

    session = engine.open_repository(cube.cube_url(store)).readonly_session("main")

    async def shards(name):
        return sorted([tuple(c) async for c in session.chunk_coordinates(f"/{name}")])

    assert all(sync(shards(v)) == [(0, 0, 0), (1, 0, 0), (2, 0, 0)] for v in ("sci", "err", "dq"))

    log = st.read_table(store, st.INGEST_LOG)
    assert sorted(log["status"]) == ["ingested"] * 3 + ["rejected"]

    # a re-run skips what is stored and rejects the junk again
    s2 = lrscube.ingest(s3.url("inputs/"), store, scheduler=s3_cluster.scheduler_address, progress=False)
    assert not s2.ingested and len(s2.duplicates) == 3 and len(s2.rejected) == 1
    assert all("same exposure as" in why for _, why in s2.duplicates)
    assert lrscube.open_cube(store).sizes["time"] == 3
    assert len(st.read_table(store, st.INGEST_LOG)) == 8


def test_cli_ingest_on_s3(s3, s3_cluster, inputs, capsys):  # noqa: F811
    store = s3.url("cli.zarr")
    rc = cli.main(["ingest", s3.url("inputs/*_rate.fits"), "--store", store,
                   "--scheduler", s3_cluster.scheduler_address])
    out = capsys.readouterr().out
    assert rc == 3, out  # some inputs rejected: the junk file
    assert "3 stored" in out and "1 rejected (1 not FITS)" in out and "junk_rate.fits" in out
    assert cli.main(["exposures", "--store", store, "--rejected"]) == 0
    assert "junk_rate.fits" in capsys.readouterr().out
    assert lrscube.open_cube(store).sizes["time"] == 3


@pytest.mark.slow
def test_ingest_detect_export_all_on_s3(s3, s3_cluster, ingested):  # noqa: F811
    """ingest -> detect -> export with inputs, store and reference files on S3."""
    detect_mod = pytest.importorskip("lrscube.detection.detect", reason="lrscube.detect is not in this tree yet")
    crds = pytest.importorskip("lrscube.masks.crds_export", reason="lrscube.masks.crds_export is not in this tree yet")
    from distributed import default_client

    store, _ = ingested
    assert default_client().scheduler.address == s3_cluster.scheduler_address  # detect computes there
    intervals = detect_mod.detect(store, progress=False)
    y, x = HOT[0] + SLIT_ROWS.start, HOT[1] + SLIT_COLS.start
    hot = intervals[(intervals["y"] == y) & (intervals["x"] == x)]
    assert len(hot) >= 1, f"the hot pixel ({y}, {x}) was not found: {intervals[['y', 'x', 'flag']]}"
    keys = set(s3.keys("cube.zarr/"))
    run = st.read_json(store, st.DETECT_META)["run"]  # detect.json names the run that committed
    assert {f"cube.zarr/detect/{run}/intervals.parquet", "cube.zarr/detect.json"} <= keys
    assert any(k.startswith(f"cube.zarr/detect/{run}/mask/") for k in keys)
    assert not any("/work/" in k for k in keys)  # the run's scratch is gone
    assert not any(k.endswith(".lock") for k in keys)  # and its lock

    out = s3.url("crds/")
    manifest = crds.export_crds(store, out, author="lrscube-test", pedigree="SIMULATION")
    written = [k for k in s3.keys("crds/") if k.endswith(".fits")]
    assert written and len(written) == len(manifest["files"])
    from astropy.io import fits

    with s3.fs.open(f"{s3.bucket}/{written[0]}", "rb") as f, fits.open(f) as hdul:
        assert hdul[0].header["REFTYPE"] == "MASK"
        assert hdul["DQ"].data[y, x] != 0


def test_object_store_lock_is_a_conditional_create_with_a_lease(s3, monkeypatch):  # noqa: F811
    """On S3 the writer lock is created only if absent (If-None-Match: *): of writers starting
    together exactly one holds it. A lock whose holder stopped renewing it for LEASE_SECONDS is
    taken over by a conditional replace (If-Match its ETag): again exactly one wins."""
    import json
    import threading
    import time

    store = s3.url("locked.zarr")
    key = f"{s3.bucket}/locked.zarr/{st.INGEST_LOCK}"

    def race(n=6):
        barrier, results = threading.Barrier(n), []
        release = threading.Event()

        def one():
            barrier.wait()
            try:
                with st.writer_lock(store):
                    results.append("won")
                    release.wait(30)
            except st.LockedError:
                results.append("lost")

        threads = [threading.Thread(target=one) for _ in range(n)]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        while len(results) < n and time.monotonic() - t0 < 60:
            time.sleep(0.01)
        release.set()
        for t in threads:
            t.join()
        return sorted(results)

    assert race() == ["lost"] * 5 + ["won"]
    assert not s3.fs.exists(key)  # released

    # a dead writer's lock: never renewed since long ago
    dead = {"host": "node-9", "pid": 1, "since": "then", "renewed": time.time() - 10 * st.LEASE_SECONDS}
    s3.fs.pipe_file(key, json.dumps(dead).encode())
    assert race() == ["lost"] * 5 + ["won"]
    # a live one (renewed now) is respected
    s3.fs.pipe_file(key, json.dumps({**dead, "renewed": time.time()}).encode())
    with pytest.raises(st.LockedError, match="pid 1 on node-9"):
        with st.writer_lock(store):
            pass
    s3.fs.rm(key)

    # the holder renews its lease while it works
    monkeypatch.setattr(st, "LEASE_SECONDS", 0.8)
    with st.writer_lock(store):
        first = json.loads(s3.fs.cat_file(key))["renewed"]
        time.sleep(0.8)
        assert json.loads(s3.fs.cat_file(key))["renewed"] > first
    assert not s3.fs.exists(key)
