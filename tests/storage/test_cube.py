"""The exposure cube's storage layout and append protocol, below ingest.

Layout (format 2): one zarr shard object per exposure and plane, ``<var>/c/<slot>/0/0``,
holding the (1, 256, 258) chunks the exposure covers; a subarray's shard holds only the
chunks its footprint touches. Stores of format 1 (one object per chunk) stay readable and
appendable in their own layout.
"""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import zarr

import lrscube
from lrscube.storage import cube
from lrscube.intake.products import round_float16
from lrscube.config import profiles
from lrscube.reporting.history import pixel_history

# format 3's own mechanisms (its files, its commit by group metadata); format 4: tests/storage/test_icechunk.py
pytestmark = pytest.mark.usefixtures("format3")

SLIT = (528, 0, 416, 72)  # SLITLESSPRISM footprint: y0, x0, ny, nx
N_INNER = 16  # (1024 x 1032) / (256 x 258)


def _exposure(i, footprint=(0, 0, 1024, 1032)):
    y0, x0, ny, nx = footprint
    rng = np.random.default_rng(i)
    sci = (10.0 + rng.normal(0, 1.0, (ny, nx))).astype("float32")
    exp = SimpleNamespace(sci=sci, err=np.full((ny, nx), 0.5, "float32"),
                          dq=np.where(rng.random((ny, nx)) < 0.01, 4, 0).astype("uint32"), y0=y0, x0=x0)
    meta = {"mjd": 60000.0 + i, "expstart": 60000.0 + i, "exptime": 100.0, "filename": f"e{i}_rate.fits",
            "content_hash": f"h{i}", "exposure_key": f"k{i}", "y0": y0, "x0": x0, "ny": ny, "nx": nx,
            "subarray": "FULL" if ny == 1024 else "SLITLESSPRISM", "nints": 1, "bunit": "DN/s"}
    return exp, meta


def _objects(store: Path, var: str) -> dict[int, list[str]]:
    """Stored objects of ``var`` per time slot (relative to the slot's directory)."""
    c = store / "exposures" / var / "c"
    found = {int(t.name): sorted(str(p.relative_to(t)) for p in t.rglob("*") if p.is_file()) for t in c.iterdir()}
    return {t: objs for t, objs in found.items() if objs}  # a deleted object leaves its directories


def _inner_chunks_present(shard: Path) -> set[tuple[int, int]]:
    """Inner chunks a shard holds, from its index (zarr's sharding_indexed codec: index at the
    end, (offset, nbytes) uint64 per inner chunk, then a 4-byte crc32c; empty = 2**64-1)."""
    n = N_INNER
    raw = shard.read_bytes()[-(16 * n + 4):-4]
    index = np.frombuffer(raw, "<u8").reshape(4, 4, 2)
    return {(int(y), int(x)) for y, x in np.argwhere(index[..., 0] != np.iinfo("u8").max)}


def _write(store, start, exposures):
    for j, (exp, _) in enumerate(exposures):
        cube.write_exposure(store, start + j, exp)


def test_one_shard_per_exposure_and_plane(tmp_path):
    store = tmp_path / "store"
    cube.create(str(store), profiles.load("lrs"))
    assert cube.info(str(store))["format_version"] == 3
    exps = [_exposure(0), _exposure(1, SLIT), _exposure(2)]
    start = cube.begin_append(str(store), 3)
    _write(str(store), start, exps)
    cube.commit(str(store), start, [m for _, m in exps])

    for var in cube.DATA_VARS:
        assert _objects(store, var) == {0: ["0/0"], 1: ["0/0"], 2: ["0/0"]}, var
    sci = store / "exposures" / "sci" / "c"
    assert _inner_chunks_present(sci / "0" / "0" / "0") == {(y, x) for y in range(4) for x in range(4)}
    # the slit footprint (rows 528-943, columns 0-71) touches inner chunks (2, 0) and (3, 0) only
    assert _inner_chunks_present(sci / "1" / "0" / "0") == {(2, 0), (3, 0)}
    assert (sci / "1" / "0" / "0").stat().st_size < (sci / "0" / "0" / "0").stat().st_size / 4

    ds = lrscube.open_cube(str(store), sort=False)
    # one dask chunk per shard (a whole frame); a few pixels still read only the inner chunks
    # under them (tests/storage/test_open.py)
    assert ds.sci.data.chunksize == (1, 1024, 1032)
    np.testing.assert_array_equal(ds.sci[0].values, exps[0][0].sci)
    frame = ds.sci[1].values
    np.testing.assert_array_equal(frame[528:944, 0:72], exps[1][0].sci)
    assert np.isnan(np.delete(frame, np.s_[528:944], axis=0)).all() and np.isnan(frame[:, 72:]).all()
    np.testing.assert_array_equal(ds.dq[2].values, exps[2][0].dq)
    assert int(ds.dq[1, 0, 0]) == 0


def test_writes_leave_zarr_config_as_found(tmp_path):
    store = str(tmp_path / "store")
    cube.create(store, profiles.load("lrs"))
    start = cube.begin_append(store, 2)
    before = zarr.config.get("codec_pipeline.batch_size")
    cube.write_exposure(store, start, _exposure(0)[0])
    assert zarr.config.get("codec_pipeline.batch_size") == before
    with zarr.config.set({"codec_pipeline.batch_size": 3}):  # a user's own setting survives too
        cube.write_exposure(store, start + 1, _exposure(1)[0])
        assert zarr.config.get("codec_pipeline.batch_size") == 3


def test_pipelined_appends_commit_in_order_and_leftovers_are_cleared(tmp_path):
    store = tmp_path / "store"
    s = str(store)
    cube.create(s, profiles.load("lrs"))
    exps = [_exposure(i) for i in range(7)]
    a = cube.begin_append(s, 2)
    _write(s, a, exps[0:2])
    b = cube.begin_append(s, 3, after=a + 2)  # room behind the uncommitted first append
    assert (a, b) == (0, 2)
    _write(s, b, exps[2:5])
    with pytest.raises(ValueError, match="slot order"):
        cube.commit(s, b, [m for _, m in exps[2:5]])
    assert cube.commit(s, a, [m for _, m in exps[0:2]]) == 2
    assert cube.commit(s, b, [m for _, m in exps[2:5]]) == 5
    with pytest.raises(ValueError, match="below"):
        cube.begin_append(s, 1, after=3)

    # an append that never commits (a killed run) ...
    c = cube.begin_append(s, 2, after=5)
    _write(s, c, exps[5:7])
    assert set(_objects(store, "sci")) == set(range(7))
    ds = lrscube.open_cube(s, sort=False)
    assert ds.sizes["time"] == 5  # readers see the committed exposures only
    # ... is cleared by the next run's first append
    assert cube.begin_append(s, 1) == 5
    assert set(_objects(store, "sci")) == set(range(5))
    assert all(zarr.open_array(store / "exposures" / v).shape[0] == 6 for v in cube.DATA_VARS)
    np.testing.assert_array_equal(lrscube.open_cube(s, sort=False).sci[4].values, exps[4][0].sci)


def test_format_1_store_reads_and_appends_in_its_own_layout(client, product_factory, tmp_path):
    """A store written before sharding (format 1: one object per (1, 256, 258) chunk, zstd)
    opens, serves pixel histories and takes appends, which keep its layout."""
    store = tmp_path / "old"
    cube.create(str(store), profiles.load("lrs"), format_version=1)
    exps = [_exposure(0), _exposure(1, SLIT)]
    start = cube.begin_append(str(store), 2)
    _write(str(store), start, exps)
    cube.commit(str(store), start, [m for _, m in exps])
    layout = _objects(store, "sci")
    assert len(layout[0]) == N_INNER and layout[1] == ["2/0", "3/0"]  # chunk objects, no shards

    p, sci, _, _ = product_factory("jw01234001001_03102_00007_mirimage_rate.fits", subarray="FULL",
                                   mjd_start=60100.0, seed=7, exposure="00007")
    s = lrscube.ingest([p], store, progress=False)
    assert len(s.ingested) == 1 and s.n_in_cube == 3
    assert cube.info(str(store))["format_version"] == 1
    assert len(_objects(store, "sci")[2]) == N_INNER
    assert zarr.open_array(store / "exposures" / "sci").shards is None

    ds = lrscube.open_cube(str(store))
    assert ds.sizes["time"] == 3
    np.testing.assert_array_equal(ds.sci[2].values, sci)
    np.testing.assert_array_equal(ds.sci[1].values[528:944, 0:72], exps[1][0].sci)
    h = pixel_history(str(store), 600, 30, cube=ds)
    assert h.sizes["time"] == 3 and h.sci.values[1] == exps[1][0].sci[600 - 528, 30]


def test_room_ahead_is_trimmed_and_a_commit_after_another_writers_fails(tmp_path):
    """Room made ahead is invisible to readers and trimmed at close; an append whose start was
    committed by another writer meanwhile fails instead of committing over it."""
    s = str(tmp_path / "store")
    cube.create(s, profiles.load("lrs"))
    exps = [_exposure(i) for i in range(3)]
    a = cube.Append(s)
    assert a.room(2, ahead=10) == 0
    assert all(arr.shape[0] == 12 for arr in a.arrays)
    _write(s, 0, exps[:2])
    a.commit(0, [m for _, m in exps[:2]])
    assert lrscube.open_cube(s).sizes["time"] == 2
    a.close()
    assert all(zarr.open_array(tmp_path / "store" / "exposures" / v).shape[0] == 2 for v in [*cube.DATA_VARS, "mjd"])

    first, second = cube.Append(s), cube.Append(s)
    assert first.room(1) == second.room(1) == 2
    _write(s, 2, exps[2:])
    second.commit(2, [exps[2][1]])
    with pytest.raises(cube.StoreError, match="another process wrote to the cube"):
        first.commit(2, [exps[0][1]])
    assert list(lrscube.open_cube(s, sort=False).filename.values) == ["e0_rate.fits", "e1_rate.fits", "e2_rate.fits"]


def _awkward_exposure(i, footprint):
    """An exposure in the inputs' own form: big-endian float32 (as FITS gives it), NaNs in sci
    and err, DQ bits up to 2**31."""
    y0, x0, ny, nx = footprint
    rng = np.random.default_rng(100 + i)
    sci = (10.0 + rng.normal(0, 1.0, (ny, nx))).astype(">f4")
    sci[::7, ::5] = np.nan
    err = np.abs(rng.normal(0, 0.5, (ny, nx))).astype("float32")
    err[3::11] = np.nan
    dq = np.where(rng.random((ny, nx)) < 0.05, 2**31 + 4, 0).astype("uint32")
    intscat = round_float16(rng.chisquare(4, (ny, nx)) / 4)
    intscat[5::13] = np.nan
    return SimpleNamespace(sci=sci, err=err, dq=dq, y0=y0, x0=x0, intscat=intscat)


def test_shard_encoder_writes_what_zarr_writes(tmp_path):
    """write_exposure encodes format-2 shards itself; zarr's own ``a[region] = data`` writes the
    same bytes (same Morton chunk order, blosc settings and index), for full frames and subarrays
    (only the touched chunks stored, fill value around the footprint inside them)."""
    footprints = [(0, 0, 1024, 1032), SLIT, (100, 300, 300, 400)]  # the last one on no chunk edge
    exps = [_awkward_exposure(i, f) for i, f in enumerate(footprints)]
    stores = {k: tmp_path / k for k in ("zarr", "ours")}
    for s in stores.values():
        cube.create(str(s), profiles.load("lrs"))
        cube.begin_append(str(s), len(exps))
    ref = cube.data_arrays(str(stores["zarr"]))
    assert all(cube.shard_layout(a) is not None for a in cube.data_arrays(str(stores["ours"])))
    for i, exp in enumerate(exps):
        cube._write_exposure_zarr(i, exp, ref)
        cube.write_exposure(str(stores["ours"]), i, exp)

    for var in cube.PLANES:  # intscat (float16, zstd) too
        assert _objects(stores["ours"], var) == _objects(stores["zarr"], var) == {0: ["0/0"], 1: ["0/0"], 2: ["0/0"]}
        for i in range(len(exps)):
            ours = (stores["ours"] / "exposures" / var / "c" / str(i) / "0" / "0").read_bytes()
            theirs = (stores["zarr"] / "exposures" / var / "c" / str(i) / "0" / "0").read_bytes()
            assert ours == theirs, (var, i)
    sci = stores["ours"] / "exposures" / "sci" / "c"
    assert _inner_chunks_present(sci / "1" / "0" / "0") == {(2, 0), (3, 0)}
    assert _inner_chunks_present(sci / "2" / "0" / "0") == {(0, 1), (0, 2), (1, 1), (1, 2)}

    # read back by plain zarr: exactly what was written, fill value around the footprints
    for var, (_, fill) in cube.PLANES.items():
        got = zarr.open_array(stores["ours"] / "exposures" / var)[:]
        np.testing.assert_array_equal(got, zarr.open_array(stores["zarr"] / "exposures" / var)[:])
        for i, exp in enumerate(exps):
            y0, x0, ny, nx = footprints[i]
            np.testing.assert_array_equal(got[i, y0:y0 + ny, x0:x0 + nx], getattr(exp, var))
            outside = np.ones((1024, 1032), bool)
            outside[y0:y0 + ny, x0:x0 + nx] = False
            np.testing.assert_array_equal(got[i][outside], np.full(outside.sum(), fill, got.dtype))
    # and by xarray/dask, chunk by chunk
    _, metas = zip(*[_exposure(i) for i in range(len(exps))], strict=True)
    cube.commit(str(stores["ours"]), 0, list(metas))
    ds = lrscube.open_cube(str(stores["ours"]), sort=False)
    np.testing.assert_array_equal(ds.err[2].values[100:400, 300:700], exps[2].err)
    assert np.isnan(ds.err[2].values[:100]).all() and int(ds.dq[1].values[:528].max()) == 0


@pytest.mark.parametrize("version", [1, 2, 3])
def test_read_frames_equals_zarrs_reader(tmp_path, version):
    """cube.read_frames (detect's stage-1 reads: each format-2 shard fetched whole and decoded
    by lrscube) gives what zarr reads, for full frames, subarrays, a slot never written, and
    any order of slots; format 1 goes through zarr itself."""
    footprints = [(0, 0, 1024, 1032), SLIT, (100, 300, 300, 400)]
    exps = [_awkward_exposure(i, f) for i, f in enumerate(footprints)]
    store = str(tmp_path / "s")
    cube.create(store, profiles.load("lrs"), format_version=version)
    cube.begin_append(store, len(exps) + 1)  # slot 3 stays empty
    for i, exp in enumerate(exps):
        cube.write_exposure(store, i, exp)
    rows = [2, 0, 3, 1, 2]
    got = cube.read_frames(cube.cube_url(store), rows)
    for name, frames in zip(cube.DATA_VARS, got, strict=True):
        want = zarr.open_array(tmp_path / "s" / "exposures" / name)[:][rows]
        assert frames.dtype == want.dtype and frames.dtype.isnative
        np.testing.assert_array_equal(frames, want)
    assert np.isnan(got[0][2]).all() and int(got[2][2].max()) == 0  # the empty slot: fill value
    # a region (detect's box of a subarray set): the same pixels, only the chunks under it decoded;
    # one inside a chunk, one across chunk edges to the frame's corner
    for region in ((slice(300, 310), slice(5, 9)), (slice(200, 1024), slice(250, 1032))):
        part = cube.read_frames(cube.cube_url(store), rows, region=region)
        for a, b in zip(part, got, strict=True):
            np.testing.assert_array_equal(a, b[:, region[0], region[1]])


@pytest.mark.parametrize("version", [3, 4])
def test_read_frames_reads_optional_planes_in_the_same_pass(tmp_path, version, monkeypatch):
    """read_frames(..., planes=("intscat",)) gives sci, err, dq as without it and the plane as
    read_plane gives it (fill value for a slot without a shard), on a format-3 store and an
    icechunk (format-4) one; a cube made without the plane gives None for it."""
    footprints = [(0, 0, 1024, 1032), SLIT]
    exps = [_awkward_exposure(i, f) for i, f in enumerate(footprints)]
    store = str(tmp_path / "s")
    cube.create(store, profiles.load("lrs"), format_version=version)
    app = cube.Append(store)
    start = app.room(len(exps) + 1)  # the last slot stays empty
    arrays = app.data_arrays()
    for i, exp in enumerate(exps):
        cube.write_exposure(store, start + i, exp, arrays)
    metas = [_exposure(i, ([*footprints, SLIT])[i])[1] for i in range(len(exps) + 1)]
    app.commit(start, metas, [cube.written(arrays)])
    app.close()
    url = cube.cube_url(store)
    rows = [2, 0, 1, 0]
    sci, err, dq, scat = cube.read_frames(url, rows, planes=("intscat",))
    for a, b in zip((sci, err, dq), cube.read_frames(url, rows), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(scat, cube.read_plane(url, rows, "intscat"))
    region = (slice(500, 700), slice(0, 300))
    for a, b in zip(cube.read_frames(url, rows, planes=("intscat",), region=region), (sci, err, dq, scat), strict=True):
        np.testing.assert_array_equal(a, b[:, 500:700, 0:300])
    assert scat.dtype == np.float16 and np.isnan(scat[0]).all()  # the empty slot: fill value
    np.testing.assert_array_equal(scat[1], exps[0].intscat)
    y0, x0, ny, nx = SLIT
    np.testing.assert_array_equal(scat[2, y0:y0 + ny, x0:x0 + nx], exps[1].intscat)
    assert np.isnan(scat[2, :y0]).all()
    with pytest.raises(ValueError, match="not optional planes"):
        cube.read_frames(url, rows, planes=("sci",))

    monkeypatch.setattr(cube, "OPTIONAL_VARS", {})
    monkeypatch.setattr(cube, "PLANES", dict(cube.DATA_VARS))
    old = str(tmp_path / "old")
    cube.create(old, profiles.load("lrs"), format_version=version)
    cube.begin_append(old, 1)
    monkeypatch.undo()
    got = cube.read_frames(cube.cube_url(old), [0], planes=("intscat",))
    assert len(got) == 4 and got[3] is None and np.isnan(got[0]).all()


def test_shard_encoder_only_takes_layouts_it_knows(tmp_path):
    """Format 1 (no shards) and sharded arrays with other codecs or index placement are written
    by zarr; write_exposure still stores them right."""
    old = tmp_path / "v1"
    cube.create(str(old), profiles.load("lrs"), format_version=1)
    assert all(cube.shard_layout(a) is None for a in cube.data_arrays(str(old)))

    g = zarr.open_group(tmp_path / "other", mode="w", zarr_format=3)
    kw = {"shape": (1, 1024, 1032), "dtype": "float32", "fill_value": np.nan, "chunks": (1, 256, 258),
          "shards": (1, 1024, 1032)}
    blosc = zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle=zarr.codecs.BloscShuffle.shuffle)
    assert cube.shard_layout(g.create_array("ok", compressors=blosc, **kw)) is not None
    assert cube.shard_layout(g.create_array("zstd", compressors=zarr.codecs.ZstdCodec(level=1), **kw)) is None
    assert cube.shard_layout(g.create_array("two_slots", compressors=blosc,
                                             **{**kw, "shape": (2, 1024, 1032), "shards": (2, 1024, 1032)})) is None
    for where, known in (("end", True), ("start", False)):  # the sharding codec given by hand
        codec = zarr.codecs.ShardingCodec(chunk_shape=(1, 256, 258), index_location=where,
                                          codecs=[zarr.codecs.BytesCodec(), blosc])
        a = g.create_array(where, **{**kw, "chunks": (1, 1024, 1032), "shards": None}, serializer=codec,
                           compressors=None)
        assert (cube.shard_layout(a) is not None) is known, where

    exp = _awkward_exposure(0, SLIT)
    start = cube.begin_append(str(old), 1)
    cube.write_exposure(str(old), start, exp)
    assert _objects(old, "sci") == {0: ["2/0", "3/0"]}  # chunk objects, not a shard
    np.testing.assert_array_equal(zarr.open_array(old / "exposures" / "sci")[0, 528:944, 0:72], exp.sci)


def test_without_zarrs_internals_every_frame_goes_through_zarrs_public_api(tmp_path, monkeypatch):
    """lrscube/storage/shards.py alone uses zarr's internals; if a zarr release moves them
    (INTERNALS False), writes and reads go through ``a[region]`` and store the same bytes."""
    from lrscube.storage import shards

    footprints = [(0, 0, 1024, 1032), SLIT]
    exps = [_awkward_exposure(i, f) for i, f in enumerate(footprints)]
    fast = str(tmp_path / "fast")
    cube.create(fast, profiles.load("lrs"))
    cube.begin_append(fast, len(exps))
    for i, exp in enumerate(exps):
        cube.write_exposure(fast, i, exp)
    want = cube.read_frames(cube.cube_url(fast), [1, 0])

    monkeypatch.setattr(shards, "INTERNALS", False)
    public = str(tmp_path / "public")
    cube.create(public, profiles.load("lrs"))
    assert all(cube.shard_layout(a) is None for a in cube.data_arrays(public))
    cube.begin_append(public, len(exps))
    for i, exp in enumerate(exps):
        cube.write_exposure(public, i, exp)
    got = cube.read_frames(cube.cube_url(public), [1, 0])
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    for var in cube.DATA_VARS:
        for i in range(len(exps)):
            rel = Path("exposures") / var / "c" / str(i) / "0" / "0"
            assert (tmp_path / "public" / rel).read_bytes() == (tmp_path / "fast" / rel).read_bytes(), (var, i)
