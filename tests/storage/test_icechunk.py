"""Format 4, the default: the exposure cube is an icechunk repository (lrscube/storage/engine.py).

What a user relies on: an ingest batch and a drop are one commit each, older commits stay
readable, a killed ingest leaves the last commit, damaged chunk bytes are a named error, a lost
branch is refused, and a format-3 store migrates with nothing lost. (Opening the cube with
icechunk and xarray alone: tests/storage/test_open.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import icechunk
import numpy as np
import pytest
import zarr

import lrscube
from lrscube import cli
from lrscube.storage import cube, engine
from lrscube.storage import store as st
from lrscube.storage.verify import verify
from store_factory import make_cube


def _history(store: str) -> list:
    """The branch's commits, newest first (without the repository's own first, empty one)."""
    repo = icechunk.Repository.open(engine.storage(cube.cube_url(store)))
    return list(repo.ancestry(branch="main"))[:-1]


def _committed_at(store: str, snapshot_id: str) -> int:
    g = zarr.open_group(engine.read_store(cube.cube_url(store), snapshot=snapshot_id), mode="r")
    return int(g.attrs["lrscube"]["n_committed"])


@pytest.fixture
def products(product_factory):
    return [product_factory(f"jw_{i:03d}_rate.fits", mjd_start=60000.0 + 3 * i, seed=i, exposure=f"{i + 1:05d}")
            for i in range(7)]


def test_every_ingest_batch_is_one_commit_and_older_commits_stay_readable(tmp_path, products, client):
    store = str(tmp_path / "s.zarr")
    lrscube.ingest([str(p) for p, *_ in products], store, scheduler=client.scheduler.address,
                   batch_size=3, progress=False)
    assert cube.is_repository(store) and cube.info(store)["format_version"] == 4
    history = _history(store)
    # create, then one commit per batch of 3, 3, 1 exposures
    assert [_committed_at(store, c.id) for c in history] == [7, 6, 3, 0]
    assert [c.message.split(":")[0] for c in history] == ["ingest"] * 3 + ["create the exposure cube"]
    ds = lrscube.open_cube(store)
    path, sci, err, dq = products[4]
    one = ds.sel(time=ds.time[ds.filename == path.name][0])
    y0, x0 = int(one.y0), int(one.x0)
    np.testing.assert_array_equal(one.sci.values[y0:y0 + sci.shape[0], x0:x0 + sci.shape[1]], sci)
    assert int(np.isfinite(one.sci.values).sum()) == sci.size
    assert verify(store).ok


def test_drop_is_one_commit_and_the_commit_before_still_holds_the_exposure(tmp_path, products, client):
    store = str(tmp_path / "s.zarr")
    lrscube.ingest([str(p) for p, *_ in products[:4]], store, scheduler=client.scheduler.address, progress=False)
    before = _history(store)[0].id
    cube.drop(store, ["jw_002_rate.fits"])
    history = _history(store)
    assert history[0].message.startswith("drop") and history[1].id == before
    assert sorted(cube.exposure_table(store).filename) == ["jw_000_rate.fits", "jw_001_rate.fits", "jw_003_rate.fits"]
    old = zarr.open_group(engine.read_store(cube.cube_url(store), snapshot=before), mode="r")
    slot = list(old["filename"][:]).index("jw_002_rate.fits")
    assert np.isfinite(old["sci"][slot]).any()  # the history keeps what a drop removed
    assert verify(store).ok


def _chunk_objects(store: str) -> list[Path]:
    return sorted((Path(store) / "exposures" / "chunks").iterdir(), key=lambda p: p.stat().st_size)


def test_flipped_bytes_in_a_stored_chunk_are_a_named_error(tmp_path, capsys):
    store = str(tmp_path / "s")
    make_cube(store, n=4, n_full=0)
    assert verify(store).ok
    biggest = _chunk_objects(store)[-1]  # a shard of sci or err: the largest objects
    b = bytearray(biggest.read_bytes())
    b[len(b) // 3] ^= 0x5A
    biggest.write_bytes(bytes(b))
    rep = verify(store)
    assert not rep.ok and len(rep.affected) == 1
    slot, name = rep.affected[0]
    assert name == f"jw_{slot:03d}_rate.fits" and "checksum" in str(rep)
    with pytest.raises(st.CorruptDataError, match=rf"slot {slot}"):
        cube.read_frames(cube.cube_url(store), [slot])
    assert cli.main(["drop", "--store", store, name]) == 0
    assert verify(store).ok and cube.n_stored(store) == 3


def test_a_lost_branch_is_refused_never_recreated(tmp_path, product_factory, client, capsys):
    store = tmp_path / "s"
    make_cube(str(store), n=3, n_full=0)
    ref = store / "exposures" / "refs"
    for p in sorted(ref.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    ref.rmdir()
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    path, *_ = product_factory("jw_new_rate.fits", mjd_start=60100.0)
    assert cli.main(["ingest", str(path), "--store", str(store)]) == 2
    assert "lost its branch" in capsys.readouterr().err
    assert sorted(p.relative_to(store) for p in store.rglob("*") if "ingest" not in p.name) == \
        [p for p in before if "ingest" not in p.name]


_INGEST = "import sys, lrscube; lrscube.ingest(sys.argv[2:], sys.argv[1], batch_size=2, progress=False)"


@pytest.mark.slow
def test_kill_minus_nine_during_ingest_leaves_whole_batches_then_a_rerun_completes(tmp_path, product_factory, client):
    files = [str(product_factory(f"jw_{i:03d}_rate.fits", mjd_start=60000.0 + i, seed=i, exposure=f"{i + 1:05d}")[0])
             for i in range(10)]
    store = str(tmp_path / "s.zarr")
    env = {**os.environ, "DASK_SCHEDULER_ADDRESS": client.scheduler.address}
    p = subprocess.Popen([sys.executable, "-c", _INGEST, store, *files], env=env, start_new_session=True)
    t0 = time.time()
    while time.time() - t0 < 120 and p.poll() is None:
        if cube.is_repository(store) and cube.exists(store) and cube.n_stored(store) >= 2:
            break
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    n = cube.n_stored(store)
    assert n >= 2 and n % 2 == 0  # whole batches only (10 files: a run that ended shows 10)
    assert verify(store).ok
    table = cube.exposure_table(store)
    assert len(set(table.filename)) == n
    lrscube.ingest(files, store, scheduler=client.scheduler.address, progress=False)
    table = cube.exposure_table(store)
    assert sorted(table.filename) == sorted(Path(f).name for f in files)  # none lost, none doubled
    assert verify(store).ok


def test_migrate_copies_a_format3_store_into_format4_with_nothing_lost(tmp_path, format3, capsys):
    from store_factory import intervals_table

    from lrscube.masks import maskcube as mc

    old = str(tmp_path / "old")
    mjd = make_cube(old, n=30, n_full=2)
    mc.write_mask_cube(old, intervals_table(mjd), "lrs", cube.exposure_table(old))
    cube.drop(old, ["jw_003_rate.fits"])
    assert not cube.is_repository(old)
    files_before = sorted((p.relative_to(old), p.stat().st_mtime_ns) for p in Path(old).rglob("*") if p.is_file()
                          and not p.name.endswith(".lock"))
    new = str(tmp_path / "new")
    assert cli.main(["migrate", "--store", old, "--out", new]) == 0
    assert "29 exposures" in capsys.readouterr().out
    assert cube.is_repository(new) and cube.info(new)["format_version"] == 4 and verify(new).ok
    a, b = lrscube.open_cube(old), lrscube.open_cube(new)
    assert list(a.filename.values) == list(b.filename.values) and "jw_003_rate.fits" not in b.filename.values
    for v in ("sci", "err", "dq"):
        np.testing.assert_array_equal(a[v].values, b[v].values)
    np.testing.assert_array_equal(lrscube.open_mask(old).dq.values, lrscube.open_mask(new).dq.values)
    assert len(lrscube.open_intervals(new)) == len(lrscube.open_intervals(old))
    # the old store is only read
    assert sorted((p.relative_to(old), p.stat().st_mtime_ns) for p in Path(old).rglob("*") if p.is_file()
                  and not p.name.endswith(".lock")) == files_before
    assert cli.main(["migrate", "--store", old, "--out", new]) == 2  # never over an existing store
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize("where", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_a_flipped_byte_in_the_last_snapshot_is_named_or_changes_nothing_read(tmp_path, where):
    """icechunk's snapshots carry no checksum of their own: a flipped byte is named (verify, a
    CorruptDataError on reading) or lands where nothing read depends on it; never other numbers."""
    store = tmp_path / "s"
    make_cube(str(store), n=3, n_full=0)
    ref = lrscube.open_cube(str(store)).load()
    newest = max((store / "exposures" / "snapshots").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    b = bytearray(newest.read_bytes())
    b[int(len(b) * where)] ^= 0x5A
    newest.write_bytes(bytes(b))
    try:
        named = not verify(str(store)).ok
    except st.StoreError:
        named = True
    try:
        got = lrscube.open_cube(str(store)).load()
    except st.StoreError:
        assert named
        return
    same = got.identical(ref)
    assert same or named, "a flipped snapshot byte changed what is read without an error"


def test_a_create_killed_before_the_branch_existed_is_made_again(tmp_path, product_factory, client):
    """icechunk writes a new repository's first snapshot before its branch, and a commit its
    snapshot before it moves the branch: what a create killed in between leaves holds nothing,
    and the next ingest makes the cube (a repository whose branch is lost after commits is
    refused: test_a_lost_branch_is_refused_never_recreated)."""
    store = tmp_path / "s"
    url = cube.cube_url(str(store))
    engine.create(url)
    ref = store / "exposures" / "refs"
    for p in sorted(ref.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    ref.rmdir()
    assert not cube.exists(str(store))  # nothing committed: no cube, and no error
    path, *_ = product_factory("jw_new_rate.fits", mjd_start=60100.0)
    lrscube.ingest([str(path)], str(store), scheduler=client.scheduler.address, progress=False)
    assert cube.exposure_table(str(store)).filename.tolist() == ["jw_new_rate.fits"] and verify(str(store)).ok


def test_a_recorded_delivery_tags_the_commit_it_was_made_from(tmp_path):
    from store_factory import intervals_table

    from lrscube.masks import deliveries, maskcube as mc

    store = str(tmp_path / "s")
    mjd = make_cube(store, n=30, n_full=2)
    mc.write_mask_cube(store, intervals_table(mjd), "lrs", cube.exposure_table(store))
    lrscube.export_crds(store, str(tmp_path / "out"), author="test", name="d1")
    rec = deliveries.read_delivery(store, "d1")
    repo = icechunk.Repository.open(engine.storage(cube.cube_url(store)))
    assert rec["cube_tag"] == "delivery-d1" and repo.lookup_tag("delivery-d1") == rec["cube_snapshot"]
    cube.drop(store, ["jw_004_rate.fits"])  # the cube moves on; the delivery's commit stays
    then = zarr.open_group(repo.readonly_session(tag="delivery-d1").store, mode="r")
    assert "jw_004_rate.fits" in list(then["filename"][:]) and cube.n_stored(store) == 29


@pytest.mark.parametrize("name", ["time", "filename"])
def test_a_missing_chunk_of_a_coordinate_every_append_writes_is_damage_not_fill(tmp_path, format3, name):
    """zarr stores no chunk that is all fill value, so a lost chunk reads as NaN or "" silently;
    the times and file names of committed exposures are never that (a lost reference in an
    icechunk snapshot showed as NaT times)."""
    store = tmp_path / "s"
    make_cube(str(store), n=3, n_full=0)
    (chunk,) = [p for p in (store / "exposures" / name / "c").rglob("*") if p.is_file()]
    chunk.unlink()
    with pytest.raises(st.CorruptDataError, match=f"coordinate {name}"):
        lrscube.open_cube(str(store))
