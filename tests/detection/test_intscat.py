"""The screen of pixels noisy between the integrations of their exposures (lrscube.detection.intscat):
the statistic on arrays, and end to end from rateints files through a store."""

from __future__ import annotations

import numpy as np
import pytest

import lrscube
from lrscube.config import profiles
from lrscube.detection import intscat, variance
from lrscube.detection.detect import TileContext, _with_intscat, detect_dataset
from lrscube.detection.detection_params import DetectionParams
from lrscube.intervals import active
from lrscube.storage import cube


def _chi2_q(rng, k, shape):
    return rng.chisquare(k, shape) / k


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_terms_compiled_equal_numpy(dtype):
    """The compiled terms are the numpy ones bit for bit: NaN and inf in the plane, exposures
    without degrees of freedom (0, negative, NaN), 1-D and 3-D planes."""
    rng = np.random.default_rng(3)
    dof = rng.choice([0.0, 2.0, 4.0, 9.0], 25)
    dof[[3, 7]] = [-1.0, np.nan]
    q = _chi2_q(rng, 4.0, (25, 300))
    q[rng.random(q.shape) < 0.1] = np.nan
    q[rng.random(q.shape) < 0.02] = np.inf
    q[:, 4] = 1e4
    q = q.astype(dtype)
    for args in ((q, dof), (q, dof, 3.0), (q[:, 9], dof), (q.reshape(25, 15, 20), dof)):
        for got, want in zip(intscat.terms(*args), intscat.terms_numpy(*args)):
            assert got.shape == want.shape
            np.testing.assert_array_equal(got, want)


def test_the_run_statistic_finds_a_noisy_span_with_its_ends_and_not_two_enormous_exposures():
    rng = np.random.default_rng(1)
    n, k = 40, 5.0
    dof = np.full(n, k)
    dof[::3] = 0.0  # rate exposures: no plane
    q = _chi2_q(rng, k, (n, 500))
    q[dof == 0] = np.nan
    q[12:30, 0] *= 3.0  # a pixel 1.7x noisier between integrations from exposure 12 to 29
    q[[5, 20], 1] = 500.0  # two exposures with a latent decaying through them
    u, v = intscat.terms(q, dof)
    scale = intscat.null_scale(u, v)
    stat = intscat.scan(u, v) / scale
    assert 0.8 < scale < 1.5
    assert stat[0] > 6.5 and stat[1] < 3
    assert np.percentile(stat[2:], 99.8) < 4.5  # the null: no normal pixel near a threshold of ~6
    a, b, sig, ratio = intscat.best_run(u[:, 0], v[:, 0])
    have = np.flatnonzero(dof > 0)
    assert a == have[have >= 12][0] and b == have[have <= 29][-1]
    assert ratio == pytest.approx(np.sqrt(3.0), rel=0.2) and sig >= stat[0] * scale
    # a recovery must be supported: cut before a still-noisy end, the run goes on to the end
    q2 = q[:, 0].copy()
    q2[30:] *= 3.0
    u2, v2 = intscat.terms(q2[:, None], dof)
    a2, b2, *_ = intscat.best_run(u2[:, 0], v2[:, 0], boundary_sigma=3.0)
    assert b2 == have[-1] and 12 <= a2 <= 16
    assert intscat.best_run(u[:, 0], v[:, 0], boundary_sigma=3.0)[1] == b  # recovered: supported


def test_an_exposure_scatters_beyond_chance_where_chi2_of_its_dof_puts_the_event_threshold():
    """``beyond``: k q past the quantile of chi2(k) at the one-sided Gaussian tail of sigma,
    per exposure's k; no plane (NaN) or no degrees of freedom: never; a null scale above 1
    widens the excess over 1 (never narrows it)."""
    from scipy import stats

    dof = np.array([2.0, 5.0, 0.0, 30.0])
    thr = stats.chi2.isf(stats.norm.sf(5.0), dof[[0, 1, 3]]) / dof[[0, 1, 3]]
    assert np.all(thr > 1.0)
    q = np.zeros((4, 3))
    q[[0, 1, 3], 0] = thr * 1.01          # just beyond
    q[[0, 1, 3], 1] = thr * 0.99          # just short
    q[2, :] = 1e6                         # an exposure without degrees of freedom
    q[:, 2] = np.nan                      # no plane
    got = intscat.beyond(q, dof, 5.0)
    assert got[:, 0].tolist() == [True, True, False, True]
    assert not got[:, 1:].any()
    wide = intscat.beyond(q, dof, 5.0, scale=2.0)
    assert not wide[:, 0].any()
    assert intscat.beyond(np.array([[1.0 + (thr[1] - 1.0) * 2.0 * 1.01]]), dof[[1]], 5.0, scale=2.0).all()
    assert (intscat.beyond(q, dof, 5.0, scale=0.5) == got).all()
    # chance: pure chi2 noise crosses it about as often as a Gaussian crosses 5 sigma
    rng = np.random.default_rng(3)
    assert intscat.beyond(_chi2_q(rng, 5, (1, 2_000_000)), np.array([5.0]), 5.0).sum() <= 3


def test_calibration_takes_out_an_exposures_err_that_overstates_the_scatter():
    rng = np.random.default_rng(2)
    q = np.stack([_chi2_q(rng, 3, (60, 60)), _chi2_q(rng, 3, (60, 60)) * 0.2]).astype(np.float32)
    q[0, 0, 0] = np.nan
    cal = intscat.calibrate(q, np.array([3.0, 3.0])).astype(float)
    assert cal.dtype == float
    for b in range(2):
        assert np.nanmean(cal[b]) == pytest.approx(1.0, abs=0.08)
    assert np.isnan(cal[0, 0, 0])
    # too few values, or no degrees of freedom: left as they are
    np.testing.assert_array_equal(intscat.calibrate(q[:, :5, :5], np.array([3.0, 3.0])).astype(np.float32),
                                  q[:, :5, :5].astype(np.float16).astype(np.float32))


N_T = 40
_T = 60000.0 + 2.0 * np.arange(N_T)  # exposure mid-times
_CTX = TileContext(expstart=_T - 0.01, mjd=_T, params=DetectionParams(), profile=profiles.load("lrs"), threshold=6.0)


def _row(flag, first, stop, y=5, x=7):
    """A row of the other screens over exposures ``first .. stop - 1`` (stop == N_T: still bad)."""
    return {"y": y, "x": x, "flag": flag, "start_mjd": _T[first] - 0.01 if first > 0 else np.nan,
            "end_mjd": _T[stop] - 0.01 if stop < N_T else np.nan, "dq": 1, "amplitude": 3.0, "significance": 20.0,
            "onset_significance": 9.0, "recovery_significance": 8.0, "n_bad": stop - first,
            "last_good_mjd": _T[first - 1] if first > 0 else np.nan, "first_bad_mjd": _T[first],
            "first_good_mjd": _T[stop] if stop < N_T else np.nan, "reason": f"{flag} level", "carried": False}


def _run(first, last, y=5, x=7):
    return {"y": y, "x": x, "t_all": np.arange(N_T), "first": first, "last": last, "significance": 12.0,
            "ratio": 2.0}


def _bad(rows, y=5, x=7):
    """(rows, exposures): which exposures each of the pixel's rows makes bad (the mask's rule)."""
    mine = [r for r in rows if (r["y"], r["x"]) == (y, x)]
    return mine, active(np.array([r["start_mjd"] for r in mine]), np.array([r["end_mjd"] for r in mine]), _T)


@pytest.mark.parametrize("others, run, telegraph", [
    ([("HOT", 10, 30)], (12, 25), []),  # inside: the other row has it all
    ([("HOT", 15, 30)], (10, 25), [(10, 15)]),  # starts before
    ([("HOT", 10, 20)], (15, 29), [(20, 30)]),  # ends after
    ([("HOT", 10, 25)], (20, 39), [(25, 40)]),  # ends after, still bad at the end
    ([("HOT", 10, 15), ("WARM", 20, 25)], (5, 34), [(5, 10), (15, 20), (25, 35)]),  # spans two rows
    ([("HOT", 10, 15)], (20, 30), [(20, 31)]),  # no overlap: the run as it is
    ([], (0, 12), [(0, 13)]),  # no other row, bad from the first exposure
])
def test_an_intscat_run_keeps_the_exposures_no_other_row_of_its_pixel_covers(others, run, telegraph):
    """Every exposure of the run or of the other rows is bad, under exactly one row; the other
    rows are unchanged; the run's uncovered pieces are TELEGRAPH rows with their onset at their
    first exposure and their recovery at the exposure after their last."""
    rows = [_row(*o) for o in others] + [_row("HOT", 0, 40, y=6)]  # another pixel's row
    out = _with_intscat([_run(*run)], rows, _CTX)
    mine, bad = _bad(out)
    expect = np.zeros(N_T, bool)
    expect[run[0]:run[1] + 1] = True
    for _, a, b in others:
        expect[a:b] = True
    np.testing.assert_array_equal(bad.any(axis=0), expect)
    assert bad.sum(axis=0).max() <= 1  # a pixel's rows do not overlap
    assert [r for r in mine if r["flag"] != "TELEGRAPH"] == [_row(*o) for o in others]
    assert [r for r in out if r["y"] == 6] == [rows[-1]]
    tel = sorted((r for r in mine if r["flag"] == "TELEGRAPH"), key=lambda r: r["first_bad_mjd"])
    assert [(int(np.flatnonzero(_T == r["first_bad_mjd"])[0]), r["n_bad"]) for r in tel] == [
        (a, b - a) for a, b in telegraph]
    for r, (a, b) in zip(tel, telegraph, strict=True):
        assert (np.isnan(r["last_good_mjd"]) and np.isnan(r["start_mjd"])) if a == 0 else (
            r["last_good_mjd"] == _T[a - 1] and r["start_mjd"] == _T[a] - 0.01)
        assert (np.isnan(r["first_good_mjd"]) and np.isnan(r["end_mjd"])) if b == N_T else (
            r["first_good_mjd"] == _T[b] and r["end_mjd"] == _T[b] - 0.01)
        assert r["significance"] == 12.0 and "between integrations" in r["reason"]
        assert ("the rest in the pixel's other rows" in r["reason"]) == (b - a != run[1] - run[0] + 1)


def test_an_intscat_piece_touching_a_telegraph_row_joins_it():
    """Scatter between integrations from exposure 10 and a TELEGRAPH row of the other screens from
    15: one TELEGRAPH row from 10 (the run's onset, no onset significance) to the row's recovery."""
    out = _with_intscat([_run(10, 25)], [_row("TELEGRAPH", 15, 30), _row("HOT", 32, 36)], _CTX)
    mine, bad = _bad(out)
    assert sorted(r["flag"] for r in mine) == ["HOT", "TELEGRAPH"] and bad.sum(axis=0).max() <= 1
    tel = next(r for r in mine if r["flag"] == "TELEGRAPH")
    assert tel["first_bad_mjd"] == _T[10] and tel["last_good_mjd"] == _T[9] and tel["start_mjd"] == _T[10] - 0.01
    assert tel["first_good_mjd"] == _T[30] and tel["recovery_significance"] == 8.0
    assert np.isnan(tel["onset_significance"]) and tel["n_bad"] == 20 and tel["significance"] == 20.0
    assert tel["amplitude"] == 3.0 and "between integrations" in tel["reason"]
    # a piece between two TELEGRAPH rows joins both
    out = _with_intscat([_run(12, 22)], [_row("TELEGRAPH", 5, 15), _row("TELEGRAPH", 20, 30)], _CTX)
    assert len(out) == 1 and out[0]["first_bad_mjd"] == _T[5] and out[0]["first_good_mjd"] == _T[30]
    assert out[0]["n_bad"] == 25 and out[0]["onset_significance"] == 9.0
    # pieces before and after one TELEGRAPH row: one row, the run's evidence said once
    out = _with_intscat([_run(5, 25)], [_row("TELEGRAPH", 10, 20)], _CTX)
    assert len(out) == 1 and out[0]["first_bad_mjd"] == _T[5] and out[0]["first_good_mjd"] == _T[26]
    assert out[0]["reason"].count("between integrations") == 1 and "over 21 exposures" in out[0]["reason"]


N_EXP, NINTS, NOISY, ONSET = 20, 6, (528 + 200, 36), 8


def _products(product_factory, level_from=None):
    """``N_EXP`` SLITLESSPRISM rateints files; pixel ``NOISY`` switches by +-2.5 ERR between the
    integrations of every exposure from ``ONSET`` on, about an unchanged mean (the slopes' mean,
    which is all the cube's sci keeps, does not move). ``level_from``: from that exposure on, its
    level is also 3 DN/s higher (3 ERR in each integration)."""
    rng = np.random.default_rng(7)
    paths = []
    for i in range(N_EXP):
        sci = (10.0 + rng.normal(0.0, 1.0, (NINTS, 416, 72))).astype(np.float32)
        if i >= ONSET:
            sci[:, NOISY[0] - 528, NOISY[1]] += 2.5 * np.resize([1.0, -1.0], NINTS).astype(np.float32)
        if level_from is not None and i >= level_from:
            sci[:, NOISY[0] - 528, NOISY[1]] += 3.0
        p, *_ = product_factory(f"jw01234001001_03102_{i + 1:05d}_mirimage_rateints.fits", nints=NINTS, sci=sci,
                                exposure=f"{i + 1:05d}", mjd_start=60000.0 + 3.0 * i, exptime=600.0)
        paths.append(p)
    return paths


def _intervals_of(iv, yx):
    return iv[(iv.y == yx[0]) & (iv.x == yx[1]) & ~iv.carried]


@pytest.mark.slow
def test_a_pixel_noisy_between_integrations_is_found_from_rateints_files(client, product_factory, tmp_path,
                                                                        monkeypatch):
    """End to end: rateints files -> ingest (the plane kept) -> detect in a store (two stages,
    on the cluster) and in memory (the same intervals): the pixel is TELEGRAPH from the first
    exposure it scatters in. A store made without the plane (as before it existed) still detects,
    and there the pixel is invisible: its mean never moved."""
    paths = _products(product_factory)
    store = tmp_path / "store"
    lrscube.ingest(paths, store, progress=False)
    iv = lrscube.detect(str(store), progress=False, write_mask=False)
    mine = _intervals_of(iv, NOISY)
    ds = lrscube.open_cube(store)
    assert len(mine) == 1 and mine.flag.iloc[0] == "TELEGRAPH", iv
    assert mine.start_mjd.iloc[0] == pytest.approx(ds.expstart.values[ONSET]) and np.isnan(mine.end_mjd.iloc[0])
    assert "between integrations" in mine.reason.iloc[0]
    assert len(iv[~iv.carried]) == 1  # nothing else on pure noise
    mem, _ = detect_dataset(ds.load(), "lrs")
    cols = ["y", "x", "flag", "start_mjd", "end_mjd", "significance"]
    np.testing.assert_allclose(mem[~mem.carried][cols[3:]].to_numpy(float), iv[~iv.carried][cols[3:]].to_numpy(float))
    assert mem[~mem.carried][cols[:3]].values.tolist() == iv[~iv.carried][cols[:3]].values.tolist()

    # a store made without the plane (before it existed): read as absent, detect runs as before
    monkeypatch.setattr(cube, "OPTIONAL_VARS", {})
    monkeypatch.setattr(cube, "PLANES", dict(cube.DATA_VARS))
    old = tmp_path / "old"
    lrscube.ingest(paths, old, progress=False)
    monkeypatch.undo()
    assert "intscat" not in lrscube.open_cube(old).data_vars
    assert cube.read_plane(cube.cube_url(str(old)), [0], "intscat") is None
    iv_old = lrscube.detect(str(old), progress=False, write_mask=False)
    assert len(_intervals_of(iv_old, NOISY)) == 0 and len(iv_old[~iv_old.carried]) == 0
    from lrscube.storage.verify import verify

    assert verify(str(old)).ok and verify(str(store)).ok


@pytest.mark.slow
def test_the_mask_covers_a_pixel_noisy_between_integrations_before_its_level_shifts(client, product_factory,
                                                                                   tmp_path):
    """The pixel scatters between integrations from exposure ``ONSET`` and its level rises from
    ``ONSET + 6``: the level's row has the exposures from the rise, a TELEGRAPH row those before
    it, and the mask flags the pixel in every exposure from ``ONSET`` on and in none before."""
    rise = ONSET + 6
    store = tmp_path / "store"
    lrscube.ingest(_products(product_factory, level_from=rise), store, progress=False)
    iv = lrscube.detect(str(store), progress=False)
    ds = lrscube.open_cube(store)
    mine = _intervals_of(iv, NOISY).sort_values("first_bad_mjd")
    assert len(mine) == 2 and mine.flag.iloc[0] == "TELEGRAPH" and mine.flag.iloc[1] != "TELEGRAPH", mine
    t = ds.expstart.values
    assert mine.start_mjd.iloc[0] == pytest.approx(t[ONSET]) and mine.end_mjd.iloc[0] == pytest.approx(t[rise])
    assert mine.start_mjd.iloc[1] == pytest.approx(t[rise]) and np.isnan(mine.end_mjd.iloc[1])
    assert "between integrations" in mine.reason.iloc[0] and "the rest in the pixel's other rows" in mine.reason.iloc[0]
    flagged = [int(lrscube.mask_at(str(store), float(s) + 1e-6).values[NOISY]) != 0 for s in t]
    assert flagged == [i >= ONSET for i in range(N_EXP)]


@pytest.mark.parametrize("shape", [(1, 5), (2, 50), (3, 200), (8, 300), (100, 3000), (129, 500), (0, 5)])
def test_null_scale_of_a_tile_is_that_of_its_terms_bit_for_bit(shape):
    """The tile's null scale from one compiled pass over the chosen columns is that of the
    terms of their copy, and so is each pixel's full-series statistic, bit for bit (pairwise
    sums, pixels with too few terms left out): NaN and infinite values, columns without any,
    exposures without degrees of freedom, float64, float32 and float16-rounded values, no
    exposures (None: nothing finite)."""
    T, P = shape
    rng = np.random.default_rng(T * P)
    q = rng.chisquare(4, shape) / 4 * rng.uniform(0.5, 3, P)
    q[rng.random(shape) < 0.2] = np.nan
    q[rng.random(shape) < 0.01] = np.inf
    q[:, :P // 10] = np.nan
    dof = np.maximum(rng.integers(0, 6, T) - 1.0, 0.0)
    h = np.flatnonzero(rng.random(P) < 0.8)
    for qq in (q, q.astype(np.float32), q.astype(np.float16).astype(np.float32)):
        qh = np.take(qq, h, axis=1)
        want = intscat.null_scale(*intscat.terms(qh, dof, 6.0)) if T and np.isfinite(qh).any() else None
        assert intscat.null_scale_of(qq, dof, 6.0, h) == want
        if T:
            u, v = intscat.terms(qh, dof, 6.0)
            has = (v > 0).sum(axis=0) >= 3
            stat, keep, _ = intscat._null_columns(qq, dof, 6.0, h, 3, 2.0)
            assert np.array_equal(keep, has)
            ref = variance.full(u, v, np.flatnonzero(has), pairwise=True)
            nan = np.isnan(ref)
            assert np.array_equal(np.isnan(stat[keep]), nan)
            assert np.array_equal(stat[keep][~nan].view(np.int64), ref[~nan].view(np.int64))
    assert intscat.null_scale_of(np.full((4, 6), np.nan), np.ones(4), 6.0, np.arange(6)) is None


def _before_calibrate(q, dof):
    """intscat.calibrate as it was: the block as float32 first."""
    from scipy import stats
    q = np.asarray(q, np.float32)
    out = np.empty(q.shape, np.float16)
    for b in range(q.shape[0]):
        k = float(dof[b])
        out[b] = q[b]
        if k <= 0:
            continue
        fin = np.isfinite(q[b])
        if fin.sum() < intscat.MIN_CALIBRATION_PIXELS:
            continue
        scale = float(np.median(q[b][fin])) / (stats.chi2.median(k) / k)
        if scale > 0:
            out[b] = q[b] / scale
    return out


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_calibration_without_a_float32_copy_of_the_block_is_the_same_bit_for_bit(dtype):
    """Each exposure widened alone gives the block's calibrated planes bit for bit: exposures
    without the plane (all NaN), with too few values, without degrees of freedom, with a zero
    median, with values beyond float16's range, an even and an odd count; float16, float32 and
    float64 planes."""
    rng = np.random.default_rng(3)
    B, ny, nx = 7, 30, 40
    q = (rng.chisquare(4, (B, ny, nx)) / 4 * 1.3).astype(dtype)
    q[rng.random(q.shape) < 0.05] = np.nan
    q[0] = np.nan                                     # no plane
    q[1, 15:] = np.nan                                # 600 values, then fewer than 200
    q[2, 5:] = np.nan
    q[3] = 0.0                                        # a zero median: unchanged
    q[4, :, :20] = np.inf if dtype == np.float16 else 7e4   # beyond float16
    q[5, 0, 0] = np.nan                               # an odd count
    dof = np.array([3.0, 3.0, 3.0, 3.0, 3.0, 0.0, 4.0])
    got, want = intscat.calibrate(q, dof), _before_calibrate(q, dof)
    assert got.dtype == want.dtype == np.float16
    assert np.array_equal(got.view(np.uint16), want.view(np.uint16))
