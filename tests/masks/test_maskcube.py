"""Mask cube: intervals -> epochs -> dq (time, y, x); time selection; least-cost merging."""

from __future__ import annotations

import itertools
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from lrscube.config import flags, profiles
from lrscube.masks import maskcube as mc

HOT, WARM, DEAD, DNU = flags.value("HOT"), flags.value("WARM"), flags.value("DEAD"), flags.DO_NOT_USE
T0 = 60000.0 + 0.5 + 0.25 / 86400  # 12:00:00.25 UTC: epoch starts are rounded down to 12:00:00


def exposures(n=10, spacing=10.0, exptime=100.0, t0=T0, subarray="FULL", **extra):
    start = t0 + np.arange(n) * spacing
    df = pd.DataFrame({"expstart": start, "mjd": start + exptime / 2 / 86400, "exptime": exptime,
                       "program": "01234", "filename": [f"e{i:03d}_rate.fits" for i in range(n)],
                       "subarray": subarray})
    for k, v in extra.items():
        df[k] = v
    return df


def truth_at(iv: pd.DataFrame, mid: float, profile=None) -> dict[tuple[int, int], int]:
    """The contract rule, pixel by pixel: bad when start <= mid-time < end."""
    out: dict[tuple[int, int], int] = {}
    for r in iv.itertuples():
        s = -np.inf if np.isnan(r.start_mjd) else r.start_mjd
        e = np.inf if np.isnan(r.end_mjd) else r.end_mjd
        if s <= mid < e:
            bits = int(r.dq) if "dq" in iv.columns else profile.flag_bits(r.flag)
            out[(r.y, r.x)] = out.get((r.y, r.x), 0) | bits
    return out


@pytest.fixture
def case():
    exp = exposures()
    s = exp["expstart"]
    iv = pd.DataFrame({
        "y": [10, 20, 20, 600, 700], "x": [5, 6, 6, 30, 40],
        "flag": ["HOT", "WARM", "HOT", "DEAD", "WARM"],
        "start_mjd": [np.nan, s[3], s[6], s[2], np.nan],
        "end_mjd": [np.nan, s[6], np.nan, s[8], np.nan],
    })
    iv["dq"] = np.array([HOT | DNU, WARM, HOT | DNU, DEAD | DNU, WARM], "uint32")
    return exp, iv


def test_epochs_start_where_any_pixel_changes(tmp_path, case):
    exp, iv = case
    ds = mc.write_mask_cube(tmp_path / "s", iv, "lrs", exp)
    starts = exp["expstart"].to_numpy()
    want = mc.floor_second(mc.mjd_to_datetime64(starts[[0, 2, 3, 6, 8]]))
    np.testing.assert_array_equal(ds.time.values.astype("datetime64[s]"), want)
    assert str(ds.time.values[0])[:19] == "2023-02-25T12:00:00"  # rounded down from 12:00:00.25
    assert ds.dq.dtype == np.uint32 and ds.dq.shape == (5, 1024, 1032)
    np.testing.assert_array_equal(ds.n_exposures.values, [2, 1, 3, 2, 2])
    assert ds.attrs["n_exposures"] == 10 and ds.attrs["programs"] == ["01234"]
    assert ds.attrs["valid_from"] == "2023-02-25T00:00:00"
    dq = ds.dq.values
    for e, first in enumerate([0, 2, 3, 6, 8]):
        want = truth_at(iv, exp["mjd"][first])
        got = {(int(y), int(x)): int(dq[e, y, x]) for y, x in zip(*np.nonzero(dq[e]))}
        assert got == want, e
    # counts per flag per epoch
    assert int(ds.flag_count.sel(flag="DEAD").values[1]) == 1
    assert int(ds.n_flagged.values[2]) == 4


def test_sel_ffill_gives_each_exposures_mask(tmp_path, case):
    exp, iv = case
    mc.write_mask_cube(tmp_path / "s", iv, "lrs", exp)
    ds = mc.open_mask(tmp_path / "s")
    for i, row in exp.iterrows():
        want = truth_at(iv, row["mjd"])
        t = mc.mjd_to_datetime64(row["expstart"])[()]
        m = ds.dq.sel(time=t, method="ffill").values
        for (y, x), v in want.items():
            assert m[y, x] == v, (i, y, x)
        assert np.count_nonzero(m) == len(want)
        assert int(mc.mask_at(tmp_path / "s", row["expstart"])[20, 6]) == want.get((20, 6), 0)


def test_mask_at_accepts_every_time_form_and_is_strict_before_valid_from(tmp_path, case):
    exp, iv = case
    mc.write_mask_cube(tmp_path / "s", iv, "lrs", exp)
    s3 = float(exp["expstart"][3])
    iso = mc.isot(mc.mjd_to_datetime64(s3)[()])  # the epoch start itself (rounded down)
    forms = [s3, str(s3), iso, np.datetime64(iso), datetime.fromisoformat(iso),
             datetime.fromisoformat(iso).replace(tzinfo=timezone.utc), pd.Timestamp(iso)]
    for f in forms:
        m = mc.mask_at(tmp_path / "s", f)
        assert m.attrs["epoch"] == 2 and m.attrs["epoch_start"] == iso, f
        assert m.dims == ("y", "x") and m.dtype == np.uint32
    # one second before the boundary: previous epoch
    assert mc.mask_at(tmp_path / "s", s3 - 1.0 / 86400).attrs["epoch"] == 1
    # between valid_from (00:00) and the first exposure (12:00): first epoch, marked
    m = mc.mask_at(tmp_path / "s", "2023-02-25T06:00:00")
    assert m.attrs["epoch"] == 0 and m.attrs["before_first_epoch"] and m.attrs["useafter"] == "2023-02-25T00:00:00"
    with pytest.raises(ValueError, match="before the mask's validity.*--extrapolate"):
        mc.mask_at(tmp_path / "s", "2023-02-24T23:59:59")
    assert mc.mask_at(tmp_path / "s", "2020-01-01", extrapolate=True).attrs["epoch"] == 0
    with pytest.raises(ValueError, match="cannot read time"):
        mc.mask_at(tmp_path / "s", "not a time")
    text = mc.summarize_mask(mc.mask_at(tmp_path / "s", s3))
    assert "epoch 2 of 5" in text and "WARM" in text


def test_policy_bits_when_dq_column_is_absent(tmp_path, case):
    import dataclasses

    exp, iv = case
    prof = profiles.load("lrs")
    ds = mc.write_mask_cube(tmp_path / "s", iv.drop(columns="dq"), prof, exp)
    last = ds.dq.isel(time=-1).values
    assert last[10, 5] == HOT | DNU  # HOT gets DO_NOT_USE by the lrs policy
    assert last[700, 40] == WARM | DNU  # so does a new WARM pixel (not in the dark reference)
    # the policy is the profile's: a profile that leaves WARM usable gets no DO_NOT_USE there
    lenient = dataclasses.replace(prof, do_not_use=("HOT",))
    ds = mc.write_mask_cube(tmp_path / "s2", iv.drop(columns="dq"), lenient, exp)
    last = ds.dq.isel(time=-1).values
    assert last[10, 5] == HOT | DNU and last[700, 40] == WARM


def test_interval_boundaries_at_mid_times_also_work(tmp_path, case):
    exp, iv = case
    iv = iv.copy()
    # a detector that wrote mid-times instead of start times: same epochs
    for col in ("start_mjd", "end_mjd"):
        iv[col] = iv[col] + 50 / 86400
    ds = mc.write_mask_cube(tmp_path / "s", iv, "lrs", exp)
    assert ds.sizes["time"] == 5


def test_fsspec_url_store(case):
    import dask

    exp, iv = case
    url = "memory://lrscube-test-maskcube/store"
    # memory:// lives in this process only: with a distributed client as the default (earlier
    # tests leave one), worker processes would write into their own memories
    with dask.config.set(scheduler="threads"):
        ds = mc.write_mask_cube(url, iv, "lrs", exp)
        assert ds.sizes["time"] == 5
        assert int(mc.mask_at(url, float(exp["expstart"][9]))[20, 6]) == HOT | DNU


def test_min_epoch_days_merges_short_epochs(tmp_path, case):
    exp, iv = case
    ds = mc.write_mask_cube(tmp_path / "s", iv, "lrs", exp, min_epoch_days=25)
    t = ds.time.values
    assert ds.sizes["time"] < 5
    assert all((t[i + 1] - t[i]) >= np.timedelta64(25, "D") for i in range(len(t) - 1))
    assert ds.attrs["n_raw_epochs"] == 5
    cost = ds.attrs["merge_cost_pixel_exposures"]
    assert cost["total"] > 0 and cost["total"] == pytest.approx(
        cost["wrongly_flagged"] + cost["missed"] + cost["relabelled"])
    # each merged epoch's value is the exposure-time-weighted majority of what it replaces
    assert int(ds.dq.sel(time=ds.time.values[0]).values[600, 30]) in (0, DEAD | DNU)


# --------------------------------------------------------------------------- merging vs brute force


def brute_force(values, w, secs, min_len_s, max_seg):
    """Cheapest segmentation by enumeration, cost by direct per-pixel loops (independent code)."""
    E, P = values.shape
    best = (np.inf, None)
    for cuts in itertools.product([0, 1], repeat=E - 1):
        starts = [0] + [i + 1 for i, c in enumerate(cuts) if c]
        if len(starts) > max_seg:
            continue
        segs = list(zip(starts, [s - 1 for s in starts[1:]] + [E - 1]))
        if any(b != E - 1 and secs[b + 1] - secs[a] < max(min_len_s, 1) for a, b in segs):
            continue
        cost = 0.0
        for a, b in segs:
            for p in range(P):
                tally: dict[int, float] = {}
                for e in range(a, b + 1):
                    tally[int(values[e, p])] = tally.get(int(values[e, p]), 0.0) + w[e, p]
                cost += sum(tally.values()) - max(tally.values())
        if cost < best[0] - 1e-9 or (abs(cost - best[0]) <= 1e-9 and len(segs) < len(best[1])):
            best = (cost, segs)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_merge_dynamic_program_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    E, P = 7, 9
    values = np.zeros((E, P), "uint32")
    for p in range(P):  # each pixel: a few random state changes among 0, HOT, WARM
        v = rng.choice([0, HOT, WARM])
        for e in range(E):
            if rng.random() < 0.3:
                v = rng.choice([0, HOT | DNU, WARM])
            values[e, p] = v
    group = rng.integers(0, 2, P)  # two footprint patterns
    wpat = rng.integers(1, 6, (E, 2)).astype(float) * 100.0
    w = wpat[:, group]
    secs = np.cumsum(rng.integers(1, 20, E)) * 86400
    times = (np.datetime64("2023-01-01T00:00:00", "s") + secs.astype("timedelta64[s]"))
    codes, table = mc.canonical_codes(values)
    np.testing.assert_array_equal(np.take_along_axis(table, codes.T, axis=1).T, values)
    C = mc.segment_cost_matrix(codes, wpat, group)
    for max_seg, min_days in [(1, 0), (2, 0), (3, 0), (4, 0), (7, 0), (7, 15), (3, 10)]:
        segs, cost = mc.best_segmentation(C, times, min_days, max_seg)
        bf_cost, bf_segs = brute_force(values, w, secs - secs[0], min_days * 86400, max_seg)
        assert cost == pytest.approx(bf_cost), (max_seg, min_days)
        merged = mc.segment_values(values, w, segs)
        assert mc.merge_cost(values, merged, segs, w)["total"] == pytest.approx(bf_cost)
        assert len(segs) <= max_seg and segs[0][0] == 0 and segs[-1][1] == E - 1
        assert len(segs) == len(bf_segs)  # fewest files among the cheapest


def test_max_epochs_plan_reports_cost_in_both_units(case):
    exp, iv = case
    plan = mc.plan_epochs(iv, exp, None, max_epochs=2)
    assert plan.n_epochs == 2
    ps, pe = plan.cost["pixel_seconds"], plan.cost["pixel_exposures"]
    assert ps["total"] == pytest.approx(pe["total"] * 100.0)  # every exposure is 100 s
    # brute force over the 5 raw epochs with exposure-count weights
    raw = plan.raw
    n_per_epoch = np.bincount(raw.exposure_epoch)[:, None] * np.ones(len(raw.ys))
    bf, _ = brute_force(raw.values, n_per_epoch, raw.times.astype("int64"), 0, 2)
    assert pe["total"] == pytest.approx(bf)


def test_footprints_weight_only_covered_pixels():
    # 4 FULL exposures then 4 SLITLESSPRISM ones; a full-frame-only pixel changes during the
    # slitless run: merging that change away costs nothing, since no exposure there sees it.
    exp = exposures(8, subarray=["FULL"] * 4 + ["SLITLESSPRISM"] * 4)
    exp["y0"] = [0] * 4 + [528] * 4
    exp["x0"] = 0
    exp["ny"] = [1024] * 4 + [416] * 4
    exp["nx"] = [1032] * 4 + [72] * 4
    s = exp["expstart"]
    iv = pd.DataFrame({"y": [100, 600], "x": [500, 30], "flag": ["HOT", "HOT"],
                       "start_mjd": [s[6], s[2]], "end_mjd": [np.nan, np.nan], "dq": [HOT, HOT]})
    plan = mc.plan_epochs(iv, exp, None, max_epochs=2)
    assert plan.cost["pixel_exposures"]["total"] == 0
    assert [a for a, _ in plan.segments] == [0, 1]


def test_many_epochs_render_their_own_masks_from_a_graph_without_the_epoch_by_pixel_values():
    # 300 exposures, 2,000 pixels each bad over its own span: ~300 epochs x 2,000 changing pixels
    # (2.4 MB of values). Each epoch's task must render that epoch's mask, and the graph carry
    # each pixel's few changes, not the values of every epoch (dask warns of a "large graph"
    # at 10 MB: 1,600 real exposures).
    import pickle

    rng = np.random.default_rng(3)
    exp = exposures(300, spacing=1.0)
    s = exp["expstart"].to_numpy()
    P = 2000
    a = rng.integers(0, 300, P)
    b = a + rng.integers(1, 100, P)
    yx = rng.permutation(1024 * 1032)[:P]  # distinct pixels
    iv = pd.DataFrame({"y": yx // 1032, "x": yx % 1032, "flag": "WARM", "start_mjd": s[a],
                       "end_mjd": np.where(b < 300, s[np.minimum(b, 299)], np.nan), "dq": np.uint32(WARM)})
    plan = mc.plan_epochs(iv, exp, None)
    assert plan.n_epochs > 250 and plan.values.nbytes > 2_000_000
    dq = mc._dq_frames(plan, (1024, 1032))
    graph_bytes = len(pickle.dumps(dict(dq.__dask_graph__())))
    assert graph_bytes < plan.values.nbytes / 10, graph_bytes
    for e in range(0, plan.n_epochs, 12):
        frame = dq[e].compute(scheduler="sync")
        np.testing.assert_array_equal(frame, plan.frame(e, (1024, 1032)), str(e))
        want = truth_at(iv, exp["mjd"][plan.raw.first_exposure[plan.segments[e][0]]])
        assert {(int(y), int(x)): int(frame[y, x]) for y, x in zip(*np.nonzero(frame))} == want, e


@pytest.mark.parametrize("shape", [(1, 5), (7, 1), (30, 40), (4, 0)])
def test_value_changes_give_back_every_epochs_values(shape):
    rng = np.random.default_rng(shape[0])
    values = np.where(rng.random(shape) < 0.8, 0, rng.choice([HOT, WARM | DNU], shape)).astype("uint32")
    values = np.maximum.accumulate(values, axis=0) * (rng.random(shape[1]) < 0.9)  # runs of one state
    changes = mc.value_changes(values)
    assert len(changes[0]) <= shape[1] + np.count_nonzero(values[1:] != values[:-1])
    for s in range(shape[0]):
        np.testing.assert_array_equal(mc.values_at(s, *changes), values[s])
