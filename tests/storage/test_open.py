"""The cube and the mask open with icechunk + xarray (no lrscube), one dask chunk per stored
exposure or epoch, and lrscube's open_cube reads the same values in time order."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lrscube
from lrscube.storage import cube
from lrscube.masks import maskcube as mc
from store_factory import intervals_table, make_cube

#: what docs/notebook.md shows a user without lrscube (the test runs this text)
XARRAY_ONLY = '''
import json, sys
import icechunk
import numpy as np
import xarray as xr

store, out = sys.argv[1], sys.argv[2]
repo = icechunk.Repository.open(icechunk.local_filesystem_storage(f"{store}/exposures"))
cube = xr.open_zarr(repo.readonly_session("main").store, consolidated=False, chunks={"y": -1, "x": -1})
attrs = cube.attrs["lrscube"]
keep = [i for i in range(attrs["n_committed"]) if i not in set(attrs.get("dropped", []))]
cube = cube.isel(time=keep)
mean = cube.sci.mean("time").compute()
history = cube.sci.isel(y=slice(640, 661), x=20).sortby("time")
outputs = json.load(open(f"{store}/detect.json"))["outputs"]
mask = xr.open_zarr(f"{store}/{outputs['mask']}", consolidated=False, chunks={"y": -1, "x": -1})
m = mask.dq.sel(time=sys.argv[3], method="ffill")
np.savez(out, mean=mean.values, mask=m.values, history=history.values,
         time=cube.time.sortby(cube.time).values.astype("datetime64[ns]").astype("int64"))
print(json.dumps({"lrscube_imported": any(k.split(".")[0] == "lrscube" for k in sys.modules),
                  "cube_chunks": [list(c) for c in cube.sci.chunks],
                  "mask_chunks": [list(c) for c in mask.dq.chunks],
                  "n": len(keep), "filenames": sorted(str(f) for f in cube.filename.values)}))
'''
#: the lines of XARRAY_ONLY that docs/notebook.md shows (the test checks they are there)
SHOWN = ['repo = icechunk.Repository.open(icechunk.local_filesystem_storage(f"{store}/exposures"))',
         'cube = xr.open_zarr(repo.readonly_session("main").store, consolidated=False, chunks={"y": -1, "x": -1})',
         "cube = cube.isel(time=keep)",
         "mask = xr.open_zarr(f\"{store}/{outputs['mask']}\", consolidated=False, chunks={\"y\": -1, \"x\": -1})"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("open") / "store.zarr"
    mjd = make_cube(path, n=26, n_full=3)
    iv = intervals_table(mjd)
    mc.write_mask_cube(str(path), iv, "lrs", cube.exposure_table(str(path)))
    return str(path)


def test_open_with_xarray_and_zarr_only(store, tmp_path):
    docs = (Path(__file__).resolve().parents[2] / "docs" / "notebook.md").read_text()
    assert all(line in docs for line in SHOWN)
    script = tmp_path / "open_xarray_only.py"
    script.write_text(XARRAY_ONLY)
    when = "2023-03-20T00:00:00"
    res = subprocess.run([sys.executable, str(script), store, str(tmp_path / "out.npz"), when],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["lrscube_imported"] is False
    n = got["n"]
    assert n == 26 and got["cube_chunks"] == [[1] * n, [1024], [1032]]
    n_epochs = lrscube.open_mask(store).sizes["time"]
    assert got["mask_chunks"] == [[1] * n_epochs, [1024], [1032]]
    arrays = np.load(tmp_path / "out.npz")
    ds = lrscube.open_cube(store)
    assert got["filenames"] == sorted(ds.filename.values.tolist())
    np.testing.assert_array_equal(arrays["time"], ds.time.values.astype("datetime64[ns]").astype("int64"))
    np.testing.assert_array_equal(arrays["mean"], ds.sci.mean("time").values)
    np.testing.assert_array_equal(arrays["history"], ds.sci.isel(y=slice(640, 661), x=20).values)
    np.testing.assert_array_equal(arrays["mask"], lrscube.mask_at(store, when).values)


def test_open_cube_and_open_mask_chunks_are_the_stored_objects(store):
    ds = lrscube.open_cube(store)
    n = ds.sizes["time"]
    for name in ("sci", "err", "dq"):
        assert ds[name].chunks == ((1,) * n, (1024,), (1032,))
    m = lrscube.open_mask(store)
    assert m.dq.chunks == ((1,) * m.sizes["time"], (1024,), (1032,))
    # other chunks on request, the same values
    other = lrscube.open_cube(store, chunks={"time": 4, "y": 256, "x": 258})
    assert other.sci.chunks[0] == (4,) * 6 + (2,) and other.sci.chunks[1] == (256,) * 4
    np.testing.assert_array_equal(other.dq.values, ds.dq.values)


def test_open_cube_sorts_time_and_reads_slices_of_the_store(store, tmp_path):
    """Storage keeps arrival order; open_cube's time axis is sorted, and reading a few pixels
    asks zarr for those pixels of each exposure, never for a whole frame."""
    # a store whose arrival order is not time order: the exposures appended in reverse
    src = lrscube.open_cube(store)
    rev = tmp_path / "reversed.zarr"
    cube.create(str(rev), lrscube.load_profile("lrs"))
    n = src.sizes["time"]
    table = cube.exposure_table(store)
    metas, exps = [], []
    for k, i in enumerate(range(n - 1, -1, -1)):
        one = src.isel(time=i)
        e = type("E", (), {"sci": one.sci.values, "err": one.err.values, "dq": one.dq.values, "y0": 0, "x0": 0})
        exps.append(e)
        metas.append({c: table[c].iloc[i] for c in cube.COORDS if c in table})
    cube.append_exposures(str(rev), exps, metas)
    ds = lrscube.open_cube(str(rev))
    assert (np.diff(ds.time.values.astype("int64")) > 0).all()
    np.testing.assert_array_equal(ds.sci.values, src.sci.values)
    assert ds.filename.values.tolist() == src.filename.values.tolist()
    unsorted = lrscube.open_cube(str(rev), sort=False)
    assert unsorted.filename.values.tolist() == src.filename.values[::-1].tolist()

    # what zarr is asked for when one pixel's history is read
    asked = []
    for a in (ds.sci.data, ds.err.data):
        frames = next(v for v in dict(a.__dask_graph__()).values() if isinstance(v, cube._InTimeOrder))
        frames.array = _Spy(frames.array, asked)
    # in this process (a distributed client of another test may be the default scheduler)
    h = ds[["sci", "err"]].isel(y=slice(640, 661), x=20).compute(scheduler="synchronous")
    np.testing.assert_array_equal(h.sci.values, src.sci.isel(y=slice(640, 661), x=20).values)
    assert len(asked) == 2 * n
    assert all(k[1] == slice(640, 661, None) and k[2] == 20 for k in asked), asked[:3]


class _Spy:
    """An array that notes every key it is read with."""

    def __init__(self, real, asked: list):
        self.real, self.asked = real, asked
        self.shape, self.dtype, self.ndim = real.shape, real.dtype, real.ndim

    def __getitem__(self, key):
        self.asked.append(key)
        return self.real[key]


def test_in_time_order_reads_runs_of_slots_as_slices():
    base = np.arange(6 * 2 * 2).reshape(6, 2, 2)
    asked = []
    order = np.array([3, 4, 5, 0, 1, 2])
    v = cube._InTimeOrder(_Spy(base, asked), order)
    np.testing.assert_array_equal(v[:, 1, :], base[order][:, 1, :])
    assert [k[0] for k in asked] == [slice(3, 6), slice(0, 3)]
    np.testing.assert_array_equal(v[4], base[1])
    np.testing.assert_array_equal(v[2:2], base[0:0])


def test_open_cube_in_a_fresh_process_does_not_load_stdatamodels(store):
    code = ("import sys, lrscube; ds = lrscube.open_cube(sys.argv[1]); ds.sci.isel(time=0).values; "
            "print(sorted(m for m in ('stdatamodels', 'matplotlib', 'astropy.io.fits') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code, store], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
