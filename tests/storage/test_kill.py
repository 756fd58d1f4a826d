"""A real `lrscube ingest` process killed with SIGKILL at several points leaves a store that
opens and holds exactly the exposures whose append completed; re-running completes it."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from conftest import write_product

import lrscube

# format 3's own mechanisms (its files, its commit by group metadata); format 4: tests/storage/test_icechunk.py
pytestmark = pytest.mark.usefixtures("format3")

N_FILES = 12


@pytest.fixture(scope="module")
def full_frame_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    for i in range(N_FILES):
        write_product(d / f"jw01234001001_03102_{i:05d}_mirimage_rate.fits", subarray="FULL",
                      mjd_start=60000.0 + i, seed=i, exposure=f"{i:05d}")
    return d


def _committed(store: Path) -> int:
    meta = store / "exposures" / "zarr.json"
    try:
        return int(json.loads(meta.read_text())["attributes"]["lrscube"]["n_committed"])
    except (FileNotFoundError, KeyError, ValueError):
        return 0


def _written_slots(store: Path) -> set[int]:
    """Slots whose sci data is on disk, committed or not: the store keeps one shard object per
    exposure, ``sci/c/<slot>/0/0`` (zarr writes it to a temporary name and renames it)."""
    d = store / "exposures" / "sci" / "c"
    try:
        return {int(e) for e in os.listdir(d) if (d / e / "0" / "0").is_file()}
    except FileNotFoundError:
        return set()


def _start(inputs, store):
    env = dict(os.environ, DASK_LRSCUBE__LOCAL__PROCESSES="false")  # the whole job in one process
    # the ingest at a lower priority than this test's polling: on a loaded machine the poller
    # would otherwise miss a short window (the first batch written, not yet committed)
    return subprocess.Popen(
        [sys.executable, "-m", "lrscube.cli", "ingest", str(inputs), "--store", str(store), "--batch-size", "4"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        preexec_fn=lambda: os.nice(10))


def _kill_when(proc, cond, timeout=120.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return False


def _check_store(store: Path, inputs: Path) -> int:
    """Every stored exposure equals its file, none twice; returns how many are stored."""
    if not (store / "exposures" / "zarr.json").exists():
        return 0
    ds = lrscube.open_cube(store)
    names = list(ds.filename.values)
    assert len(names) == len(set(names)), "an exposure is stored twice"
    for i, name in enumerate(names):
        with fits.open(inputs / name) as h:
            np.testing.assert_array_equal(ds.sci[i].values, h["SCI"].data)
    return len(names)


@pytest.mark.parametrize("point", ["before-first-commit", "mid-append", "after-a-commit"])
def test_kill_minus_nine_then_rerun(point, full_frame_files, tmp_path, client):
    store = tmp_path / "store"
    if point == "before-first-commit":
        cond = lambda: bool(_written_slots(store)) and _committed(store) == 0  # noqa: E731
    elif point == "mid-append":
        cond = lambda: _committed(store) >= 4 and max(_written_slots(store), default=-1) >= _committed(store)  # noqa: E731
    else:
        cond = lambda: _committed(store) >= 4  # noqa: E731
    # the windows are milliseconds long: on a loaded machine the poller can miss one, and an
    # ingest that ran to its end says nothing about a kill, so it is started again afresh
    for _ in range(3):
        killed = _kill_when(_start(full_frame_files, store), cond)
        if killed:
            break
        shutil.rmtree(store, ignore_errors=True)
    assert killed, f"the ingest finished before the kill point {point!r} was seen, three times"
    n_before = _committed(store)
    if point != "after-a-commit":
        # the kill really came while an append was under way: data beyond the committed count
        assert max(_written_slots(store), default=-1) >= n_before
    assert _check_store(store, full_frame_files) == n_before
    assert (store / "ingest.lock").exists()  # the killed ingest's, taken over by the re-run below

    s = lrscube.ingest(full_frame_files, store, progress=False)
    assert len(s.ingested) == N_FILES - n_before and len(s.duplicates) == n_before and not s.rejected
    assert _check_store(store, full_frame_files) == N_FILES
    assert not (store / "ingest.lock").exists()
