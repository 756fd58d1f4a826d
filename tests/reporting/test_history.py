"""pixel_history: a pixel's local residual against time, from a small hand-made exposure cube."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from store_factory import intervals_table, make_store

from lrscube.config import flags
from lrscube.reporting.history import bad_at, local_residual, open_intervals_or_none, pixel_history


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    store, mjd, iv = make_store(tmp_path_factory.mktemp("hist") / "s.zarr", n=30, with_mask=False, with_log=False)
    return store, mjd, iv


def test_local_residual_excludes_itself_and_do_not_use_neighbours():
    sci = np.array([[1.0, 2.0, 50.0, 1000.0, 3.0],
                    [np.nan, np.nan, 7.0, np.nan, np.nan]])
    err = np.ones_like(sci)
    dq = np.zeros(sci.shape, "uint32")
    dq[0, 3] = flags.DO_NOT_USE  # a flagged neighbour does not enter the median
    r = local_residual(sci, err, dq, centre=2)
    assert r["reference"][0] == 2.0 and r["residual"][0] == 48.0 and r["n_neighbours"][0] == 3
    # error: pixel ERR and the median's, 1.2533 * 1 / sqrt(3)
    assert np.isclose(r["err"][0], np.sqrt(1 + 1.2533**2 / 3))
    assert np.isclose(r["significance"][0], 48.0 / r["err"][0])
    # no usable neighbour: NaN, not an error
    assert np.isnan(r["residual"][1]) and r["n_neighbours"][1] == 0


def test_bad_at_follows_the_interval_rule():
    iv = pd.DataFrame({"flag": ["HOT", "WARM", "DEAD"], "start_mjd": [10.0, np.nan, 30.0],
                       "end_mjd": [20.0, 5.0, np.nan]})
    t = np.array([0.0, 5.0, 9.99, 10.0, 19.99, 20.0, 30.0, 1e6])
    bad, fl = bad_at(t, iv)
    assert bad.tolist() == [True, False, False, True, True, False, True, True]
    assert fl.tolist() == ["WARM", "", "", "HOT", "HOT", "", "DEAD", "DEAD"]
    both = pd.DataFrame({"flag": ["HOT", "OTHER_BAD_PIXEL"], "start_mjd": [0.0, 0.0], "end_mjd": [np.nan, np.nan]})
    assert bad_at(np.array([1.0]), both)[1].tolist() == ["HOT+OTHER_BAD_PIXEL"]
    assert not bad_at(t, None)[0].any()


def test_pixel_history_hot_pixel(small):
    store, mjd, iv = small
    h = pixel_history(store, 700, 40)
    assert isinstance(h, xr.Dataset)
    assert h.sizes["time"] == 30 and np.issubdtype(h["time"].dtype, np.datetime64)
    assert {"sci", "residual", "err", "significance", "bad", "flag"} <= set(h.data_vars)
    assert h.attrs["dispersion_axis"] == "y" and h.attrs["n_intervals"] == 1
    before, after = h.residual.values[:12], h.residual.values[12:]
    assert np.all(np.abs(before) < 2.0)  # sky 10 + slow gradient along y is removed
    assert np.allclose(after, 30.0, atol=2.0)
    assert h.bad.values.tolist() == [False] * 12 + [True] * 18
    assert set(h.flag.values[12:]) == {"HOT"}
    assert h.significance.values[12:].min() > 20
    assert h.residual.attrs["units"] == "DN/s"


def test_pixel_history_footprint_edges_and_errors(small):
    store, mjd, iv = small
    # a pixel outside SLITLESSPRISM: only the 2 full-frame exposures cover it
    h = pixel_history(store, 300, 500)
    assert h.sizes["time"] == 2 and not h.bad.any()
    assert pixel_history(store, 300, 500, dropna=False).sizes["time"] == 30
    # at the frame edge the window is cut, not wrapped
    h0 = pixel_history(store, 0, 10)
    assert h0.n_neighbours.values.max() == 7
    with pytest.raises(ValueError, match="outside the 1024 x 1032 frame"):
        pixel_history(store, 1024, 0)


def test_pixel_history_takes_given_intervals_and_axis(small):
    store, mjd, iv = small
    custom = pd.DataFrame({"y": [700], "x": [40], "flag": ["WARM"], "start_mjd": [mjd[20]], "end_mjd": [np.nan]})
    h = pixel_history(store, 700, 40, intervals=custom)
    assert int(h.bad.sum()) == 10 and set(h.flag.values[20:]) == {"WARM"}
    # the MRS-like case: neighbours along x instead (any profile with dispersion_axis x)
    from dataclasses import replace

    from lrscube.config import profiles

    hx = pixel_history(store, 700, 40, profile=replace(profiles.load("lrs"), dispersion_axis="x"))
    assert hx.attrs["dispersion_axis"] == "x"
    assert np.allclose(hx.residual.values[12:], 30.0, atol=2.0)


def test_open_intervals_or_none(small, tmp_path):
    store, mjd, iv = small
    got = open_intervals_or_none(store)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), intervals_table(mjd).reset_index(drop=True),
                                  check_dtype=False)
    assert open_intervals_or_none(str(tmp_path / "nothing.zarr")) is None


def test_pixel_history_plots(small):
    import matplotlib

    matplotlib.use("Agg")
    store, mjd, iv = small
    h = pixel_history(store, 650, 20)
    lines = h.residual.plot(marker="o", ls="")
    assert len(lines) == 1
    import matplotlib.pyplot as plt

    plt.close("all")
