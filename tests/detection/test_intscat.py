"""The screen of pixels noisy between the integrations of their exposures (lrscube.detection.intscat):
the statistic on arrays, and end to end from rateints files through a store."""

from __future__ import annotations

import numpy as np
import pytest

import lrscube
from lrscube.detection import intscat
from lrscube.detection.detect import detect_dataset
from lrscube.storage import cube


def _chi2_q(rng, k, shape):
    return rng.chisquare(k, shape) / k


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


N_EXP, NINTS, NOISY, ONSET = 20, 6, (528 + 200, 36), 8


def _products(product_factory):
    """``N_EXP`` SLITLESSPRISM rateints files; pixel ``NOISY`` switches by +-2.5 ERR between the
    integrations of every exposure from ``ONSET`` on, about an unchanged mean (the slopes' mean,
    which is all the cube's sci keeps, does not move)."""
    rng = np.random.default_rng(7)
    paths = []
    for i in range(N_EXP):
        sci = (10.0 + rng.normal(0.0, 1.0, (NINTS, 416, 72))).astype(np.float32)
        if i >= ONSET:
            sci[:, NOISY[0] - 528, NOISY[1]] += 2.5 * np.resize([1.0, -1.0], NINTS).astype(np.float32)
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
