"""The store's integrity guarantees (docs/storage.md): checksums on every chunk, a named error for
corrupt bytes, verify and drop, no cube recreated over lost metadata, OS locks, detect runs
committed by one pointer write, SIGTERM releasing what a command holds, and a store that plain
zarr + xarray open without lrscube."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from store_factory import intervals_table, make_cube

import lrscube
from lrscube import cli
from lrscube.storage import cube
from lrscube.masks import maskcube
from lrscube.storage import store as st
from lrscube.storage.verify import verify

# format 3's own mechanisms (its files, its commit by group metadata); format 4: tests/storage/test_icechunk.py
pytestmark = pytest.mark.usefixtures("format3")


def _shard(store, var, slot) -> Path:
    return Path(store) / "exposures" / var / "c" / str(slot) / "0" / "0"


def _flip(path: Path, offset: int) -> None:
    b = bytearray(path.read_bytes())
    b[offset] ^= 0x5A
    path.write_bytes(bytes(b))


@pytest.fixture
def small(tmp_path):
    store = str(tmp_path / "s")
    mjd = make_cube(store, n=6, n_full=2)
    return store, mjd


def test_every_chunk_carries_a_crc32c_that_zarr_itself_checks(small):
    store, _ = small
    codecs = json.loads((Path(store) / "exposures" / "sci" / "zarr.json").read_text())["codecs"]
    inner = [c["name"] for c in codecs[0]["configuration"]["codecs"]]
    assert inner == ["bytes", "blosc", "crc32c"]
    for coord in ("filename", "mjd", "time"):
        meta = json.loads((Path(store) / "exposures" / coord / "zarr.json").read_text())
        assert meta["codecs"][-1]["name"] == "crc32c", coord

    _flip(_shard(store, "sci", 0), 100)  # inside the first chunk's compressed bytes
    # any zarr reader refuses the chunk (zarr's own crc32c codec), no numbers come out
    with pytest.raises(ValueError, match="checksum"):
        zarr.open_array(Path(store) / "exposures" / "sci")[0, :256, :258]
    # lrscube's own reader (detect's stage 1) names array, slot and chunk
    with pytest.raises(st.CorruptDataError, match=r"array sci, slot 0, chunk \(0, 0\)"):
        cube.read_frames(cube.cube_url(store), [1, 0])
    np.testing.assert_array_equal(cube.read_frames(cube.cube_url(store), [1])[0],
                                  lrscube.open_cube(store, sort=False).sci[1:2].values)


def test_flips_anywhere_in_a_shard_never_decode_silently(small):
    """Every byte of a full-frame shard flipped, one at a time (a sample): each is caught."""
    store, _ = small
    path = _shard(store, "err", 1)
    good = path.read_bytes()
    layout = cube.shard_layout(cube.data_arrays(store)[1])
    for offset in range(0, len(good), max(1, len(good) // 300)):
        b = bytearray(good)
        b[offset] ^= 0x01
        assert layout.check(bytes(b)), f"flip at byte {offset} of {len(good)} went unseen"
    assert layout.check(good) == []


def test_verify_lists_the_damaged_exposures_and_drop_removes_them(small, tmp_path):
    store, _ = small
    assert verify(store).ok
    _flip(_shard(store, "dq", 3), 40)
    (_shard(store, "sci", 4)).unlink()  # a committed exposure's data gone
    rep = verify(store)
    assert not rep.ok
    assert [(s, n) for s, n in rep.affected] == [(3, "jw_003_rate.fits"), (4, "jw_004_rate.fits")]
    text = str(rep)
    assert "exposures/dq [slot 3, jw_003_rate.fits]" in text and "shard missing" in text
    assert cli.main(["verify", "--store", store]) == 1

    rows = cube.drop(store, ["jw_003_rate.fits", "slot:4"])
    assert list(rows["slot"]) == [3, 4]
    assert verify(store).ok
    ds = lrscube.open_cube(store)
    assert ds.sizes["time"] == 4 and "jw_003_rate.fits" not in set(ds.filename.values)
    assert len(cube.exposure_table(store)) == 4 and cube.n_stored(store) == 4
    assert not _shard(store, "sci", 3).exists()
    with pytest.raises(ValueError, match="no stored exposure named 'nope'"):
        cube.drop(store, ["jw_000_rate.fits", "nope"])
    assert cube.n_stored(store) == 4  # nothing dropped when one name is unknown


@pytest.mark.parametrize("name", ["time", "nints", "y"])
def test_a_lost_coordinate_chunk_is_named_by_verify_and_by_the_reader(small, name):
    # a snapshot whose reference to a coordinate's chunk is lost (a flipped byte in an icechunk
    # snapshot or manifest) reads as a missing chunk, which plain zarr would give as fill values:
    # NaT times, zero integrations (verify would then ask no intscat shard), every row 0
    store, _ = small
    (Path(store) / "exposures" / name / "c" / "0").unlink()
    rep = verify(store)
    assert not rep.ok and f"exposures/{name}" in str(rep) and "missing" in str(rep)
    with pytest.raises(st.CorruptDataError, match=f"{name}/c/0 is missing"):
        lrscube.open_cube(store).load()


def test_coordinates_that_read_other_values_fail_their_checksum(small):
    """A coordinate chunk whose reference is lost reads as fill values (zarr stores no chunk that
    is all fill, so plain zarr cannot tell), and one replaced by another valid chunk reads other
    values: both fail the checksums the last commit sealed, in open_cube, exposure_table and verify."""
    import zarr

    store, _ = small
    assert verify(store).ok and cube.info(store)["coords_crc"]["exptime"]
    (Path(store) / "exposures" / "exptime" / "c" / "0").unlink()  # reads NaN
    g = zarr.open_group(str(Path(store) / "exposures"), mode="r+")
    program = g["program"][:]
    program[2] = "09999"
    g["program"][:program.size] = program  # a valid chunk, other values
    rep = verify(store)
    assert not rep.ok and "exposures/exptime" in str(rep) and "exposures/program" in str(rep)
    for read in (lambda: lrscube.open_cube(store), lambda: cube.exposure_table(store)):
        with pytest.raises(st.CorruptDataError, match="coordinates exptime, program: the values fail the checksum"):
            read()


def test_detect_on_corrupt_data_is_a_named_error_not_exit_0(small, client, capsys):
    store, _ = small
    _flip(_shard(store, "sci", 2), 100)
    with pytest.raises(st.CorruptDataError, match="jw_002_rate.fits"):
        lrscube.detect(store, progress=False)
    assert cli.main(["detect", "--store", store, "--scheduler", client.scheduler.address]) == 2
    err = capsys.readouterr().err
    assert "corrupt data in array sci, exposure 'jw_002_rate.fits' (slot 2)" in err and "Traceback" not in err
    assert not st.exists(store, st.INTERVALS)  # nothing committed from it


def test_parquet_tables_have_page_checksums(small):
    store, mjd = small
    url = st.write_table(store, st.INGEST_LOG, pd.DataFrame({"file": [f"f{i}" for i in range(500)]}))
    path = Path(url)
    _flip(path, 30)
    with pytest.raises(st.CorruptDataError, match="ingest_log.parquet"):
        st.read_table(store, st.INGEST_LOG)
    assert "ingest_log.parquet" in str(verify(store))


def test_a_cube_whose_metadata_is_lost_is_never_recreated(small, product_factory, client, capsys):
    store, _ = small
    good = product_factory("g_rate.fits")[0]
    before = sorted(p.relative_to(store) for p in Path(store).rglob("*"))
    (Path(store) / "exposures" / "zarr.json").unlink()
    with pytest.raises(st.MissingMetadataError, match="exposures/zarr.json"):
        lrscube.ingest([good], store, progress=False)
    assert cli.main(["ingest", str(good), "--store", store, "--scheduler", client.scheduler.address]) == 2
    err = capsys.readouterr().err
    assert "metadata" in err and "To repair" in err
    after = sorted(p.relative_to(store) for p in Path(store).rglob("*"))
    assert after == [p for p in before if str(p) != "exposures/zarr.json"]  # nothing written

    (Path(store) / "exposures" / "zarr.json").write_text("{not json")
    with pytest.raises(st.MissingMetadataError, match="unreadable"):
        cube.exists(store)


def test_a_lost_cube_with_an_ingest_log_is_not_replaced(tmp_path, product_factory, client):
    store = str(tmp_path / "s")
    good = product_factory("g_rate.fits")[0]
    lrscube.ingest([good], store, progress=False)
    import shutil

    shutil.rmtree(Path(store) / "exposures")
    with pytest.raises(st.MissingMetadataError, match="records 1 ingested files"):
        lrscube.ingest([good], store, progress=False)
    assert not (Path(store) / "exposures").exists()


_RACER = textwrap.dedent("""
    import os, sys, time
    from lrscube.storage import store as st
    print("ready", flush=True)
    while not os.path.exists(sys.argv[2]):  # the start signal, once every racer has imported lrscube
        time.sleep(0.001)
    try:
        with st.writer_lock(sys.argv[1]):
            print("won", flush=True)
            while not os.path.exists(sys.argv[3]):  # hold it until every racer has tried
                time.sleep(0.05)
    except st.LockedError:
        print("lost", flush=True)
""")


@pytest.mark.slow
def test_a_dead_writers_lock_goes_to_exactly_one_of_many(tmp_path):
    """The holder was killed (its lock file names it): 6 writers starting in the same instant,
    one gets the lock (the kernel's flock, not a check-then-take-over)."""
    store = tmp_path / "s"
    store.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom lrscube.storage import store as st\n"
                               "with st.writer_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)",
                               str(store)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    assert (store / st.INGEST_LOCK).exists()
    for trial in range(2):
        start, release = tmp_path / f"start-{trial}", tmp_path / f"release-{trial}"
        racers = [subprocess.Popen([sys.executable, "-c", _RACER, str(store), str(start), str(release)],
                                   stdout=subprocess.PIPE, text=True) for _ in range(6)]
        assert [p.stdout.readline().strip() for p in racers] == ["ready"] * 6
        start.touch()  # every racer is waiting on it (polling each millisecond): they start together
        outs = sorted(p.stdout.readline().strip() for p in racers)
        release.touch()
        for p in racers:
            p.wait(timeout=120)
        assert outs == ["lost"] * 5 + ["won"], outs


def _plain_open(store: str) -> str:
    """Open cube and mask with zarr + xarray only, as docs/storage.md shows, in a fresh process."""
    code = textwrap.dedent(f"""
        import json, sys
        import numpy as np, xarray as xr, zarr
        store = {store!r}
        g = zarr.open_group(store + "/exposures", mode="r")
        attrs = g.attrs["lrscube"]
        keep = [i for i in range(attrs["n_committed"]) if i not in set(attrs.get("dropped", []))]
        cube = xr.open_zarr(store + "/exposures", consolidated=False).isel(time=keep)
        outputs = json.load(open(store + "/detect.json"))["outputs"]
        mask = xr.open_zarr(store + "/" + outputs["mask"], consolidated=False)
        float(cube.sci.mean()), int(mask.dq.max())
        assert "lrscube" not in sys.modules
        print(cube.sizes["time"], mask.sizes["time"], sorted(cube.filename.values)[0])
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_mask_commits_by_one_pointer_write_and_plain_xarray_reads_it(small):
    store, mjd = small
    iv = intervals_table(mjd, [(700, 40, "HOT", 2, None, 30.0), (650, 20, "WARM", 1, 4, 4.0),
                               (800, 50, "DEAD", None, None, -9.0)])
    first = maskcube.write_mask_cube(store, iv, "lrs")
    run1 = st.read_json(store, st.DETECT_META)["run"]
    # a second run killed while writing its mask: its folder is there, half written, uncommitted
    half = Path(store) / "detect" / "20991231T000000-deadbeef" / "mask"
    (half / "dq").mkdir(parents=True)
    (half / "zarr.json").write_text("{")
    again = maskcube.open_mask(store)
    assert again.sizes == first.sizes and st.read_json(store, st.DETECT_META)["run"] == run1
    np.testing.assert_array_equal(again.dq.values, first.dq.values)
    assert _plain_open(store).split()[:2] == ["6", str(first.sizes["time"])]

    cube.drop(store, ["jw_005_rate.fits"])
    assert _plain_open(store).split()[0] == "5"
    # the next run commits and removes the killed run's folder; the one before is kept a while
    maskcube.write_mask_cube(store, iv.iloc[:2], "lrs")
    run2 = st.read_json(store, st.DETECT_META)["run"]
    assert sorted(p.name for p in (Path(store) / "detect").iterdir()) == sorted([run1, run2])
    assert len(lrscube.open_intervals(store)) == 2


# The ingest run by the SIGTERM test: the real CLI, held after its first commit until the
# signal arrives, so the signal always lands mid-ingest (a fast machine could otherwise
# finish first). The hold sleeps in the main thread, where the CLI's handler raises.
_HELD_INGEST = textwrap.dedent("""
    import sys, time
    from lrscube import cli
    from lrscube.storage import cube
    commit = cube.Append.commit
    def held(self, *a, **k):
        out = commit(self, *a, **k)
        print("committed", flush=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(0.05)
        return out
    cube.Append.commit = held
    sys.exit(cli.main(sys.argv[1:]))
""")


def test_sigterm_releases_the_lock_and_keeps_the_committed_state(tmp_path, product_factory):
    files = [product_factory(f"f{i}_rate.fits", seed=i, exposure=f"{i:05d}", mjd_start=60000 + i)[0]
             for i in range(6)]
    store = tmp_path / "s"
    env = dict(os.environ, DASK_LRSCUBE__LOCAL__PROCESSES="false")
    p = subprocess.Popen([sys.executable, "-c", _HELD_INGEST, "ingest", *map(str, files), "--store", str(store),
                          "--batch-size", "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:  # until the first batch is committed (the CLI may print before it)
        while (line := p.stdout.readline()) and line.strip() != "committed":
            pass
        assert line, p.stderr.read()
    except BaseException:
        p.kill()
        raise
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM, err
    assert "terminated (SIGTERM)" in err and "Traceback" not in err
    assert not (store / st.INGEST_LOCK).exists()
    assert cube.n_stored(str(store)) == 2
    assert lrscube.open_cube(store).sizes["time"] == 2
    assert verify(str(store)).ok


def test_a_damaged_committed_count_is_an_error_not_another_cube(small):
    store, _ = small
    meta = Path(store) / "exposures" / "zarr.json"
    text = meta.read_text()
    assert '"n_committed": 6' in text
    meta.write_text(text.replace('"n_committed": 6', '"n_committed": 4'))
    with pytest.raises(st.CorruptDataError, match="fail their checksum"):
        lrscube.open_cube(store)
    assert not verify(store).ok


def test_damaged_metadata_values_are_errors_not_other_numbers(small):
    """A flip that leaves valid JSON: the mask's time unit, the cube's fill value."""
    store, mjd = small
    maskcube.write_mask_cube(store, intervals_table(mjd, [(700, 40, "HOT", 2, None, 30.0)]), "lrs")
    url = st.output_url(store, st.MASK)
    tmeta = Path(url) / "time" / "zarr.json"
    text = tmeta.read_text()
    assert " since 2" in text
    tmeta.write_text(text.replace(" since 2", " since 1"))  # the epochs a millennium earlier
    with pytest.raises(st.CorruptDataError, match="time/zarr.json fails its checksum"):
        maskcube.open_mask(store)
    assert "mask metadata" in str(verify(store))
    tmeta.write_text(text)
    maskcube.open_mask(store)

    smeta = Path(store) / "exposures" / "sci" / "zarr.json"
    text = smeta.read_text()
    smeta.write_text(text.replace('"fill_value": "NaN"', '"fill_value": 0.0'))
    with pytest.raises(st.CorruptDataError, match="sci/zarr.json fails its checksum"):
        lrscube.open_cube(store)


def test_a_kill_among_the_arrays_resizes_leaves_every_reader_at_the_committed_count(small, client, tmp_path):
    """An append grows (and a run's end trims) the cube's 24 arrays with one metadata write
    each; a kill -9 among them leaves arrays of unequal lengths (all >= n_committed). Every
    reader reads the committed slots whatever the lengths; the next append evens them out."""
    store, _ = small
    before = cube.open_cube(store, sort=False).load()
    arrays = cube._open_arrays(store, [*cube.DATA_VARS, "time", *cube.COORDS], read_only=False)
    for a in arrays[::2]:  # the kill: half the arrays grown to 10 slots, the others still at 6
        a.resize((10, *a.shape[1:]))
    assert sorted({a.shape[0] for a in cube._open_arrays(store, [a.basename for a in arrays])}) == [6, 10]
    with pytest.raises(ValueError, match="conflicting sizes"):  # what xarray alone makes of it
        xr.open_zarr(cube.cube_url(store), consolidated=False)

    ds = cube.open_cube(store, sort=False)
    assert ds.sizes["time"] == 6
    xr.testing.assert_identical(ds.load(), before)
    assert list(cube.exposure_table(store)["filename"]) == [f"jw_{i:03d}_rate.fits" for i in range(6)]
    np.testing.assert_array_equal(cube.read_frames(cube.cube_url(store), [1])[0][0], before.sci.values[1])
    assert verify(store).ok
    assert cli.main(["detect", "--store", store, "--scheduler", client.scheduler.address]) == 0
    assert len(lrscube.open_intervals(store)) > 0
    assert cli.main(["report", "--store", store, "--out", str(tmp_path / "r.html")]) == 0

    app = cube.Append(store)  # the next append trims every array to the committed count first
    assert app.room(1) == 6
    app.close()
    assert {a.shape[0] for a in cube._open_arrays(store, [a.basename for a in arrays])} == {6}


def test_a_full_disk_during_detect_is_one_named_line_and_changes_nothing(small):
    """A file-size limit (RLIMIT_FSIZE: what a full disk or a quota does to a writer) hit while
    detect writes its scratch: exit 2, one line naming the object and the cause, no traceback
    (neither the client's nor a worker's), no run committed, the store as it was."""
    import resource

    store, _ = small

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64_000, 64_000))

    env = dict(os.environ, DASK_LRSCUBE__LOCAL__PROCESSES="false")
    p = subprocess.run([sys.executable, "-m", "lrscube.cli", "detect", "--store", store], env=env,
                       capture_output=True, text=True, preexec_fn=limit, timeout=600)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("lrscube detect: error: ") and last.endswith("File too large"), p.stderr
    assert "/work/" in last  # the scratch object it could not write
    assert not (Path(store) / st.DETECT_META).exists()
    assert not list((Path(store) / st.DETECT_RUNS).glob("*/work"))  # its scratch removed
    assert verify(store).ok
