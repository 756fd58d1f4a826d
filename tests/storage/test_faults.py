"""A worker process killed in the middle of `detect` is replaced by its nanny, its tasks are
recomputed, and the intervals equal those of a run without the failure."""

import os
import signal
import threading
import time

import pandas as pd
import pytest

import lrscube

TILES = (64, 36)  # small tiles: many tasks, so the kill lands while some are running


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, client, dense16):
    work = tmp_path_factory.mktemp("faults")
    store = str(work / "store.zarr")
    lrscube.ingest(dense16.files, store, progress=False)
    return store


def _sorted(iv: pd.DataFrame) -> pd.DataFrame:
    cols = ["y", "x", "flag", "start_mjd", "end_mjd", "dq"]
    return iv[cols].sort_values(["y", "x", "start_mjd"], na_position="first").reset_index(drop=True)


@pytest.mark.slow
def test_worker_killed_mid_detect_gives_the_same_intervals(small_store, client):
    # the session's cluster (two worker processes, each under a nanny): the nanny replaces the
    # killed one, as the end of this test checks, so the tests after it find two workers again
    c = client
    reference = _sorted(lrscube.detect(small_store, tiles=TILES, progress=False, write_mask=False))

    result, error = {}, {}

    def run():
        try:
            # full: the same exposures and settings would keep the committed run, not recompute it
            result["iv"] = lrscube.detect(small_store, tiles=TILES, progress=False, write_mask=False, full=True)
        except Exception as e:  # reported below
            error["e"] = e

    th = threading.Thread(target=run)
    th.start()
    killed = None
    t0 = time.monotonic()
    while th.is_alive() and time.monotonic() - t0 < 120:
        busy = {w: ts for w, ts in c.processing().items() if ts}
        if busy:
            victim = next(iter(busy))
            pid = c.run(os.getpid, workers=[victim])[victim]
            os.kill(pid, signal.SIGKILL)
            killed = (victim, pid)
            break
        time.sleep(0.01)
    th.join(timeout=300)
    assert killed, "detect finished before a worker could be killed"
    assert not error, f"detect failed after the worker was killed: {error.get('e')!r}"
    # the nanny started a new worker process in place of the killed one
    c.wait_for_workers(2, timeout=60)
    pids = set(c.run(os.getpid).values())
    assert killed[1] not in pids
    pd.testing.assert_frame_equal(_sorted(result["iv"]), reference)
