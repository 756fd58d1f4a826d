"""The simulator writes valid, realistic rate files whose truth table is what they contain."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from stdatamodels.jwst.datamodels import ImageModel

from lrscube import flags
from lrscube.simulate import RATE_GLOB, defect_population, load_scenario, simulate

SLITLESS_Y, SLITLESS_X = (528, 944), (0, 72)
# more new defects than the default so every class has bright examples in a small subarray run
DENSE = {"new": {"events_per_megapixel_per_year": 4000}}


@pytest.fixture(scope="module")
def sub(tmp_path_factory):
    """40 SLITLESSPRISM exposures with a dense defect population."""
    return simulate(tmp_path_factory.mktemp("sub"), n=40, seed=11, full_frame=False, scenario=DENSE)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """3 full-frame exposures, one with a source in the slit."""
    return simulate(tmp_path_factory.mktemp("full"), n=3, seed=5, subarray_mix=0.0,
                    scenario={"sources": {"fraction": 0.5}})


def _open(path):
    m = ImageModel(str(path))
    return m


def _local_excess(sci, y, x, half=3):
    """Pixel minus the median of its neighbourhood (in the pixel's image coordinates)."""
    box = sci[max(0, y - half):y + half + 1, max(0, x - half):x + half + 1]
    return sci[y, x] - np.nanmedian(box)


# -- format -------------------------------------------------------------------------------------

def test_files_validate_and_have_consistent_keywords(sub, full):
    names = [p.name for p in sub.files + full.files]
    assert len(set(p.name for p in sub.files)) == len(sub.files)
    assert all(n.startswith("jw") and n.endswith("_mirimage_rate.fits") for n in names)
    for path in sub.files[:5] + full.files:
        m = _open(path)
        m.validate()
        ph = fits.getheader(path, 0)
        sh = fits.getheader(path, "SCI")
        assert (ph["TELESCOP"], ph["INSTRUME"], ph["DETECTOR"]) == ("JWST", "MIRI", "MIRIMAGE")
        assert m.data.shape == (ph["SUBSIZE2"], ph["SUBSIZE1"])
        assert ph["SUBSTRT2"] - 1 + ph["SUBSIZE2"] <= 1024 and ph["SUBSTRT1"] - 1 + ph["SUBSIZE1"] <= 1032
        if ph["SUBARRAY"] == "FULL":
            assert (ph["SUBSTRT1"], ph["SUBSTRT2"], ph["SUBSIZE1"], ph["SUBSIZE2"]) == (1, 1, 1032, 1024)
            assert ph["EXP_TYPE"] == "MIR_LRS-FIXEDSLIT"
        else:
            assert ph["SUBARRAY"] == "SLITLESSPRISM"
            assert (ph["SUBSTRT1"], ph["SUBSTRT2"], ph["SUBSIZE1"], ph["SUBSIZE2"]) == (1, 529, 72, 416)
            assert ph["EXP_TYPE"] == "MIR_LRS-SLITLESS"
        assert (ph["FASTAXIS"], ph["SLOWAXIS"]) == (1, 2)
        assert ph["EXPSTART"] < ph["EXPMID"] < ph["EXPEND"]
        assert ph["EFFEXPTM"] == pytest.approx(ph["NINTS"] * ph["EFFINTTM"])
        assert 40 < ph["EFFEXPTM"] < 2100
        for key in ("DATE-OBS", "TIME-OBS", "PROGRAM", "OBSERVTN", "VISIT", "EXPOSURE", "READPATT",
                    "NGROUPS", "NINTS"):
            assert key in ph, key
        assert sh["BUNIT"] == "DN/s" and sh["DISPAXIS"] == 2
        assert (m.data.dtype.kind, m.data.dtype.itemsize) == ("f", 4)
        assert (m.dq.dtype.kind, m.dq.dtype.itemsize) == ("u", 4)
        ok = np.isfinite(m.err)
        np.testing.assert_allclose(m.err[ok] ** 2, (m.var_poisson + m.var_rnoise)[ok], rtol=1e-4)


def test_exposures_table_and_truth_beside_the_files(sub):
    out = sub.out
    assert sorted(out.glob(RATE_GLOB)) == sorted(sub.files)
    assert sub.truth_path == out / "truth" / "truth.csv"
    assert (out / "truth" / "truth.parquet").exists() and sub.exposures_path.exists()
    truth = pd.read_csv(sub.truth_path)
    for col in ("y", "x", "flag", "start_mjd", "end_mjd", "amplitude", "static", "cluster_id", "switch_prob"):
        assert col in truth
    assert set(truth.flag) <= set(flags.DEFECT_CLASSES)
    exp = pd.read_csv(sub.exposures_path)
    assert list(exp.file) == [p.name for p in sub.files]
    assert exp.expmid.is_monotonic_increasing
    for col in ("expmid", "exptime", "subarray", "blank", "sky_factor"):
        assert col in exp
    span = exp.expmid.max() - exp.expmid.min()
    assert 300 < span < 950


def test_subarray_run_puts_every_defect_inside_the_footprint(sub):
    t = sub.truth
    assert t.y.between(*(SLITLESS_Y[0], SLITLESS_Y[1] - 1)).all()
    assert t.x.between(4, SLITLESS_X[1] - 1).all()  # never on the reference columns
    assert not t.duplicated(["y", "x"]).any()
    assert {"HOT", "WARM", "DEAD", "LOW_QE", "TELEGRAPH"} <= set(t.flag[~t.static])


def test_full_frame_reference_and_shorted_columns(full):
    m = _open(full.files[0])
    assert m.data.shape == (1024, 1032)
    ref = flags.REFERENCE_PIXEL
    assert ((m.dq[:, :4] & ref) != 0).all() and ((m.dq[:, 1028:] & ref) != 0).all()
    assert not ((m.dq[:, 4:1028] & ref) != 0).any()
    shorted = m.dq[:, 384:386]
    assert ((shorted & flags.DO_NOT_USE) != 0).all() and ((shorted & flags.PIXEL["OTHER_BAD_PIXEL"]) != 0).all()
    assert np.isnan(m.data[:, 384:386]).all()
    cols = full.truth[full.truth.flag == "OTHER_BAD_PIXEL"]
    assert len(cols) == 2048 and cols.static.all() and set(cols.x) == {384, 385}


# -- noise and sky ------------------------------------------------------------------------------

def test_err_matches_the_scatter(sub):
    """In defect-free sky, (SCI - per-row linear fit) / ERR has a robust std of ~1."""
    exp = sub.exposures
    bad = np.zeros((1024, 1032), bool)
    bad[sub.truth.y, sub.truth.x] = True
    ratios = []
    for i in np.flatnonzero(exp.blank & ~exp.emi & (exp.latent_from.fillna("") == ""))[:8]:
        m = _open(sub.files[i])
        rows = slice(560, 880)  # full frame; columns 6-50 stay clear of the reference pixels and x=72 edge
        sci, err, dq = (a[rows.start - 528:rows.stop - 528, 6:50] for a in (m.data, m.err, m.dq))
        mask = bad[rows, 6:50] | ((dq & flags.JUMP_DET) != 0) | ~np.isfinite(sci)
        xx = np.arange(sci.shape[1])
        resid = []
        for r in range(sci.shape[0]):
            ok = ~mask[r]
            coef = np.polyfit(xx[ok], sci[r, ok], 1)
            resid.append(((sci[r, ok] - np.polyval(coef, xx[ok])) / err[r, ok]) * np.sqrt(ok.sum() / (ok.sum() - 2)))
        z = np.concatenate(resid)
        ratios.append(1.4826 * np.median(np.abs(z - np.median(z))))
    assert len(ratios) >= 4
    assert np.median(ratios) == pytest.approx(1.0, abs=0.1), ratios


def test_sky_rises_with_wavelength_and_varies_between_exposures(sub, full):
    # LRS: wavelength decreases along +y, so the thermal sky is brighter at small y.
    levels = []
    for path in sub.files[:10]:
        d = _open(path).data
        red, blue = np.nanmedian(d[10:40, 6:60]), np.nanmedian(d[340:380, 6:60])
        assert red > 3 * blue
        levels.append(np.nanmedian(d[:, 6:60]))
    assert max(levels) / min(levels) > 1.3
    assert max(levels) / min(levels) < 4.5 * 1.5
    sky = sub.exposures.sky_factor
    assert 0.5 <= sky.min() and sky.max() <= 2.0
    # slit brighter than the rest of a FULL frame at the same rows
    d = _open(full.files[0]).data
    assert np.nanmedian(d[50:250, 310:340]) > 2 * np.nanmedian(d[50:250, 600:700])


def test_non_blank_exposure_has_a_trace_in_the_slit(full):
    exp = full.exposures
    assert (~exp.blank).any()
    i = int(np.flatnonzero(~exp.blank)[0])
    d = _open(full.files[i]).data
    x = int(round(exp.source_x.iat[i]))
    assert np.nanmedian(d[300:390, x]) > np.nanmedian(d[300:390, x + 10]) + 1.0


# -- defects ------------------------------------------------------------------------------------

def _pixel_series(res, y, x):
    """(expmid, excess over neighbours, err) of full-frame pixel (y, x) in every exposure that sees it."""
    out = []
    for path, row in zip(res.files, res.exposures.itertuples()):
        y0, x0 = row.substrt2 - 1, row.substrt1 - 1
        if not (y0 <= y < y0 + row.subsize2 and x0 <= x < x0 + row.subsize1):
            continue
        m = _open(path)
        out.append((row.expmid, _local_excess(m.data, y - y0, x - x0), m.err[y - y0, x - x0]))
    return np.array(out)


def _pick(truth, flag, min_sigma):
    t = truth[(truth.flag == flag) & ~truth.static & (truth.amplitude_sigma > min_sigma)
              & truth.end_mjd.isna() & (truth.cluster_size == 1)]
    return t


def test_hot_pixel_appears_at_its_onset(sub):
    exp = sub.exposures
    cands = _pick(sub.truth, "HOT", 20)
    cands = cands[[((exp.expmid < s).sum() >= 3) and ((exp.expmid >= s).sum() >= 3) for s in cands.start_mjd]]
    assert len(cands)
    hot = cands.iloc[0]
    t, excess, err = _pixel_series(sub, hot.y, hot.x).T
    before, after = t < hot.start_mjd, t >= hot.start_mjd
    assert np.median(excess[after] / err[after]) > 10
    assert abs(np.median(excess[before] / err[before])) < 3
    assert np.median(excess[after]) == pytest.approx(hot.amplitude, rel=0.3)


def test_dead_pixel_shows_a_deficit(sub):
    dead = _pick(sub.truth, "DEAD", 10).iloc[0]
    t, excess, err = _pixel_series(sub, dead.y, dead.x).T
    after = t >= (dead.start_mjd if np.isfinite(dead.start_mjd) else -np.inf)
    assert np.median(excess[after] / err[after]) < -10


def test_telegraph_pixel_switches_between_two_levels(sub):
    tel = _pick(sub.truth, "TELEGRAPH", 15)
    tel = tel[tel.n_exposures >= 10].iloc[0]
    t, excess, err = _pixel_series(sub, tel.y, tel.x).T
    on = excess[t >= tel.start_mjd]
    high = on > tel.amplitude / 2
    assert 0 < high.sum() < len(on)  # both states occur
    assert np.median(on[high]) == pytest.approx(tel.amplitude, rel=0.3)
    assert abs(np.median(on[~high])) < tel.amplitude / 4


def test_static_defects_are_nan_and_flagged(sub):
    static = sub.truth[sub.truth.static]
    assert len(static)
    m = _open(sub.files[0])
    ly, lx = static.y.to_numpy() - 528, static.x.to_numpy()
    assert np.isnan(m.data[ly, lx]).all() and np.isnan(m.err[ly, lx]).all()
    dq = m.dq[ly, lx]
    assert ((dq & flags.DO_NOT_USE) != 0).all()
    bits = np.array([flags.value(f) for f in static.flag], np.uint32)
    assert ((dq & bits) == bits).all()
    # new defects are not in DQ
    new = sub.truth[~sub.truth.static]
    assert not (m.dq[new.y.to_numpy() - 528, new.x.to_numpy()] & flags.DO_NOT_USE).any()


def test_clusters_are_adjacent_and_share_onset(sub):
    cl = sub.truth[sub.truth.cluster_id >= 0]
    assert len(cl)
    for _, g in cl.groupby("cluster_id"):
        assert len(g) == g.cluster_size.iat[0] and g.start_mjd.nunique() == 1 and g.flag.nunique() == 1
        pts = set(zip(g.y, g.x))
        for y, x in pts:
            if len(pts) > 1:
                assert {(y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)} & pts


# -- reproducibility and scale ------------------------------------------------------------------

def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_same_seed_same_files_other_seed_different(tmp_path):
    a = simulate(tmp_path / "a", n=4, seed=3, full_frame=False)
    b = simulate(tmp_path / "b", n=4, seed=3, full_frame=False)
    c = simulate(tmp_path / "c", n=4, seed=4, full_frame=False)
    assert [p.name for p in a.files] == [p.name for p in b.files]
    assert [_md5(p) for p in a.files] == [_md5(p) for p in b.files]
    pd.testing.assert_frame_equal(a.truth, b.truth)
    assert [p.name for p in a.files] != [p.name for p in c.files]
    assert not np.array_equal(_open(a.files[0]).data, _open(c.files[0]).data, equal_nan=True)


def test_defect_population_is_the_simulated_truth(sub):
    pop = defect_population(n=40, seed=11, full_frame=False, scenario=DENSE)
    pd.testing.assert_frame_equal(pop, sub.truth.drop(columns=["amplitude_sigma"]))


def test_default_full_frame_population_has_enough_new_defects():
    pop = defect_population()  # n=150, full frame, default scenario
    new = pop[~pop.static]
    assert len(new) >= 1500
    assert set(new.flag) == {"HOT", "WARM", "DEAD", "LOW_QE", "TELEGRAPH"}
    assert new.end_mjd.notna().any() and (new.cluster_id >= 0).any()
    assert 100 <= (pop.static & (pop.flag != "OTHER_BAD_PIXEL")).sum() <= 1000
    # amplitudes span faint (sub-noise) to very bright
    hot_warm = new[new.flag.isin(["HOT", "WARM"])].amplitude
    assert hot_warm.min() < 0.02 and hot_warm.max() > 10


def test_existing_rate_files_are_not_mixed_in(tmp_path):
    simulate(tmp_path, n=2, full_frame=False)
    with pytest.raises(FileExistsError, match="overwrite"):
        simulate(tmp_path, n=2, full_frame=False, seed=1)
    res = simulate(tmp_path, n=2, full_frame=False, seed=1, overwrite=True)
    assert sorted(tmp_path.glob(RATE_GLOB)) == sorted(res.files)


def test_scenario_errors_name_the_key():
    with pytest.raises(ValueError, match="amplitudes.HOT"):
        load_scenario({"amplitudes": {"HOT": [5, 1]}})
    with pytest.raises(ValueError, match="no such file"):
        load_scenario("/nonexistent/scenario.yaml")


def test_truth_holds_each_telegraph_pixels_high_states(sub):
    """high_mjd: the mid-times of the exposures inside its interval in which a TELEGRAPH pixel is
    high; in the files those exposures show the excess and the others do not."""
    from lrscube.evaluate import read_truth, simulated_telegraph_states
    from lrscube.sim_defects import parse_high_mjd

    t = sub.truth
    tel = t[t.flag == "TELEGRAPH"]
    assert len(tel) and t.loc[t.flag != "TELEGRAPH", "high_mjd"].isna().all()
    mids = sub.exposures.expmid.to_numpy()
    for _, row in tel.iterrows():
        hm = parse_high_mjd(row.high_mjd)
        assert np.isin(np.round(hm, 6), np.round(mids, 6)).all()
        inside = (mids >= (row.start_mjd if np.isfinite(row.start_mjd) else -np.inf)) & \
                 (mids < (row.end_mjd if np.isfinite(row.end_mjd) else np.inf))
        assert np.isin(np.round(hm, 6), np.round(mids[inside], 6)).all()
    # the same as regenerating them from the run's random streams (the older way, which gives
    # the states in every exposure), in CSV and Parquet
    regen = simulated_telegraph_states(sub.truth_path)
    for path in (sub.truth_path, sub.truth_path.with_suffix(".parquet")):
        back = read_truth(path)
        for i in tel.index:
            r = regen[i]
            s, e = tel.start_mjd[i], tel.end_mjd[i]
            r = r[(r >= (s if np.isfinite(s) else -np.inf)) & (r < (e if np.isfinite(e) else np.inf))]
            np.testing.assert_array_equal(parse_high_mjd(back.high_mjd[i]), r)
    # in the files: the strongest telegraph pixel is high exactly in its high exposures
    row = tel.sort_values("amplitude_sigma").iloc[-1]
    hm = np.round(parse_high_mjd(row.high_mjd), 6)
    for path, mid in zip(sub.files, mids):
        if not (row.start_mjd <= mid < (row.end_mjd if np.isfinite(row.end_mjd) else np.inf)):
            continue
        m = _open(path)
        ex = _local_excess(m.data, row.y - 528, row.x)
        assert (ex > row.amplitude / 2) == (np.round(mid, 6) in hm)
