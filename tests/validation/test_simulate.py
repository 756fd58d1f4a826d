"""The simulator writes valid, realistic rate/rateints files whose truth tables are what they contain."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from stdatamodels.jwst.datamodels import CubeModel, ImageModel

from lrscube.config import flags, profiles
from lrscube.intake.products import combine_integrations
from lrscube.validation.sim_defects import parse_high_mjd
from lrscube.validation.sim_response import detector_response
from lrscube.validation.simulate import PRODUCT_GLOBS, defect_population, load_scenario, simulate

SLITLESS_Y, SLITLESS_X = (528, 944), (0, 72)
# more new defects than the default so every behaviour has bright examples in a small subarray run
DENSE = {"new": {"events_per_megapixel_per_year": 4000}}


@pytest.fixture(scope="module")
def sub(tmp_path_factory):
    """40 SLITLESSPRISM exposures with a dense defect population (default, realistic detector)."""
    return simulate(tmp_path_factory.mktemp("sub"), n=40, seed=11, full_frame=False, scenario=DENSE)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """3 full-frame exposures, one with a source in the slit."""
    return simulate(tmp_path_factory.mktemp("full"), n=3, seed=5, subarray_mix=0.0,
                    scenario={"sources": {"fraction": 0.5}})


@pytest.fixture(scope="module")
def population():
    """The default full-frame population (n=150, seed 0): no file written."""
    return defect_population()


@pytest.fixture(scope="module")
def response():
    """The MIRIMAGE detector's response, as the default scenario draws it."""
    return detector_response(profiles.load("lrs"), load_scenario(None, "lrs"), "MIRIMAGE")


def _read(path):
    """(SCI, ERR, DQ) of a rate file, or of a rateints file combined as ingest combines it."""
    with fits.open(path) as h:
        sci, err, dq = (h[k].data.astype(np.float64) if k != "DQ" else h[k].data.astype(np.uint32)
                        for k in ("SCI", "ERR", "DQ"))
    if sci.ndim == 3:
        sci, err, dq = combine_integrations(sci, err, dq)
    return sci.astype(np.float64), err.astype(np.float64), dq


def _local_excess(sci, y, x, half=3):
    """Pixel minus the median of its neighbourhood (in the pixel's image coordinates)."""
    box = sci[max(0, y - half):y + half + 1, max(0, x - half):x + half + 1]
    return sci[y, x] - np.nanmedian(box)


# -- format -------------------------------------------------------------------------------------

def test_files_validate_and_have_consistent_keywords(sub, full):
    names = [p.name for p in sub.files + full.files]
    assert len(set(p.name for p in sub.files)) == len(sub.files)
    assert all(n.startswith("jw") and n.endswith(("_mirimage_rate.fits", "_mirimage_rateints.fits")) for n in names)
    kinds = set(sub.exposures["product"])
    assert kinds == {"rate", "rateints"}, kinds  # both products are written
    for path in sub.files[:6] + full.files:
        ints = path.name.endswith("_rateints.fits")
        m = (CubeModel if ints else ImageModel)(str(path))
        m.validate()
        ph = fits.getheader(path, 0)
        sh = fits.getheader(path, "SCI")
        assert (ph["TELESCOP"], ph["INSTRUME"], ph["DETECTOR"]) == ("JWST", "MIRI", "MIRIMAGE")
        assert m.data.shape == ((ph["NINTS"],) if ints else ()) + (ph["SUBSIZE2"], ph["SUBSIZE1"])
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
        assert 10 < ph["EFFEXPTM"] < 3100
        for key in ("DATE-OBS", "TIME-OBS", "PROGRAM", "OBSERVTN", "VISIT", "EXPOSURE", "READPATT",
                    "NGROUPS", "NINTS"):
            assert key in ph, key
        assert sh["BUNIT"] == "DN/s" and sh["DISPAXIS"] == 2
        assert (m.data.dtype.kind, m.data.dtype.itemsize) == ("f", 4)
        assert (m.dq.dtype.kind, m.dq.dtype.itemsize) == ("u", 4)
        ok = np.isfinite(m.err)
        np.testing.assert_allclose(m.err[ok] ** 2, (m.var_poisson + m.var_rnoise)[ok], rtol=1e-4)


def test_rateints_are_ingested_like_their_rate(sub):
    """A rateints file goes through ingest's reader into one exposure whose ERR matches its scatter."""
    from lrscube.intake.products import read_product

    i = int(np.flatnonzero(sub.exposures["product"] == "rateints")[0])
    e = read_product(str(sub.files[i]), profiles.load("lrs"))
    assert e.meta["product"] == "rateints" and e.sci.shape == (416, 72) and e.meta["nints"] > 1
    assert e.meta["mjd"] == pytest.approx(sub.exposures.expmid.iat[i], abs=1e-6)


def test_truth_tables_beside_the_files(sub):
    out = sub.out
    assert sorted(p for g in PRODUCT_GLOBS for p in out.glob(g)) == sorted(sub.files)
    assert sub.truth_path == out / "truth" / "truth.csv"
    assert (out / "truth" / "truth.parquet").exists() and sub.exposures_path.exists()
    truth = pd.read_csv(sub.truth_path)
    for col in ("y", "x", "flag", "start_mjd", "end_mjd", "amplitude", "static", "behaviour", "high_mjd",
                "cluster_id", "event_id"):
        assert col in truth
    assert set(truth.flag) <= set(flags.DEFECT_CLASSES)
    look = pd.read_parquet(out / "truth" / "lookalikes.parquet")
    assert list(look.columns[:4]) == ["y", "x", "mjd", "behaviour"]
    pd.testing.assert_frame_equal(pd.read_csv(out / "truth" / "lookalikes.csv"), look, check_dtype=False)
    exp = pd.read_csv(sub.exposures_path)
    assert list(exp.file) == [p.name for p in sub.files]
    assert exp.expmid.is_monotonic_increasing
    for col in ("expmid", "exptime", "subarray", "product", "blank", "sky_factor", "sky_step",
                "filename", "mjd", "expstart", "effexptm"):  # the last four: TRUTH-SCHEMA's names
        assert col in exp
    span = exp.expmid.max() - exp.expmid.min()
    assert 300 < span < 950
    assert set(look.mjd.round(6)) <= set(exp.expmid.round(6))


def test_subarray_run_puts_every_defect_inside_the_footprint(sub):
    t = sub.truth
    assert t.y.between(*(SLITLESS_Y[0], SLITLESS_Y[1] - 1)).all()
    assert t.x.between(4, SLITLESS_X[1] - 1).all()  # never on the reference columns
    assert not t[t.static].duplicated(["y", "x"]).any()
    # a pixel has several rows only for behaviours with several episodes
    multi = t[~t.static & t.duplicated(["y", "x"], keep=False)]
    assert set(multi.behaviour) <= {"recovery", "reappear", "intermittent"}
    assert {"HOT", "WARM", "DEAD", "LOW_QE", "TELEGRAPH", "OTHER_BAD_PIXEL"} <= set(t.flag[~t.static])


def test_full_frame_reference_and_shorted_columns(full):
    sci, _, dq = _read(full.files[0])
    assert sci.shape == (1024, 1032)
    ref = flags.REFERENCE_PIXEL
    assert ((dq[:, :4] & ref) != 0).all() and ((dq[:, 1028:] & ref) != 0).all()
    assert not ((dq[:, 4:1028] & ref) != 0).any()
    shorted = dq[:, 384:386]
    assert ((shorted & flags.DO_NOT_USE) != 0).all() and ((shorted & flags.PIXEL["OTHER_BAD_PIXEL"]) != 0).all()
    assert np.isnan(sci[:, 384:386]).all()
    cols = full.truth[full.truth.flag == "OTHER_BAD_PIXEL"]
    cols = cols[cols.static]
    assert len(cols) == 2048 and set(cols.x) == {384, 385} and set(cols.behaviour) == {"shorted_columns"}


# -- detector response, noise and sky -----------------------------------------------------------

def test_normal_pixels_have_their_own_response_and_no_truth_row(sub, response, population):
    """Every normal pixel sees the sky through its own fixed response (a few percent rms, with
    large-scale structure); the truth marks defects only: a pixel at 0.95 has no row."""
    r = response[:, 4:1028]
    small = r / np.median(r)
    assert 0.02 < np.std(small) < 0.06           # ~2 % pixel-to-pixel and ~3 % large-scale
    assert (np.abs(small - 1) > 0.05).sum() > 5000  # many normal pixels 5 % off ...
    bad = set(zip(population.y, population.x))
    off = np.argwhere(np.abs(response - 1) > 0.08)
    off = off[(off[:, 1] >= 4) & (off[:, 1] < 1028)]
    assert len(off) > 100 and sum((int(y), int(x)) in bad for y, x in off) < 0.05 * len(off)  # ... with no row
    assert set(population.behaviour[~population.static]) <= set(load_scenario(None)["new"]["behaviours"]) | {"reappear"}
    # in the files: a normal pixel's SCI / its neighbours' follows its response, exposure after exposure
    t = sub.truth
    taken = set(zip(t.y, t.x))
    ys, xs = np.mgrid[560:880:7, 8:64:5]
    cand = [(y, x) for y, x in zip(ys.ravel(), xs.ravel()) if (y, x) not in taken]
    rows = []
    for path, e in zip(sub.files, sub.exposures.itertuples()):
        if not e.blank or e.exptime < 500:
            continue
        sci, err, _ = _read(path)
        rows.append([sci[y - 528, x] / np.nanmedian(sci[y - 528 - 3:y - 528 + 4, x]) for y, x in cand])
    ratio = np.nanmedian(np.array(rows), axis=0)
    expect = np.array([response[y, x] / np.median(response[y - 3:y + 4, x]) for y, x in cand])
    assert len(rows) >= 5 and np.corrcoef(ratio, expect)[0, 1] > 0.9


def test_err_matches_the_scatter(sub, response):
    """In defect-free sky, (SCI / response - per-row linear fit) / (ERR / response) has a robust std of ~1."""
    exp = sub.exposures
    bad = np.zeros((1024, 1032), bool)
    bad[sub.truth.y, sub.truth.x] = True
    look = sub.lookalikes
    ratios = []
    for i in np.flatnonzero(exp.blank & ~exp.emi & (exp.n_latents == 0) & (exp.n_offset_lines == 0)
                            & (exp["product"] == "rate"))[:8]:
        sci, err, dq = _read(sub.files[i])
        rows = slice(560, 880)  # full frame; columns 6-50 stay clear of the reference pixels and x=72 edge
        resp = response[rows, 6:50]
        sci, err, dq = (a[rows.start - 528:rows.stop - 528, 6:50] for a in (sci, err, dq))
        sci, err = sci / resp, err / resp
        mask = bad[rows, 6:50] | ((dq & flags.JUMP_DET) != 0) | ~np.isfinite(sci)
        hit = look[np.isclose(look.mjd, exp.expmid.iat[i], rtol=0, atol=1e-6)]
        mask[np.clip(hit.y - rows.start, 0, 319), np.clip(hit.x - 6, 0, 43)] |= \
            ((hit.y >= rows.start) & (hit.y < rows.stop) & (hit.x >= 6) & (hit.x < 50)).to_numpy()
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
        d = _read(path)[0]
        red, blue = np.nanmedian(d[10:40, 6:60]), np.nanmedian(d[340:380, 6:60])
        assert red > 3 * blue
        levels.append(np.nanmedian(d[:, 6:60]))
    assert max(levels) / min(levels) > 1.3
    sky = sub.exposures.sky_factor[~sub.exposures.sky_step]
    assert 0.5 <= sky.min() and sky.max() <= 2.0
    # slit brighter than the rest of a FULL frame at the same rows
    d = _read(full.files[0])[0]
    assert np.nanmedian(d[50:250, 310:340]) > 2 * np.nanmedian(d[50:250, 600:700])


def test_non_blank_exposure_has_a_trace_in_the_slit_and_rows_for_it(full):
    exp = full.exposures
    assert (~exp.blank).any()
    i = int(np.flatnonzero(~exp.blank)[0])
    d = _read(full.files[i])[0]
    x = int(round(exp.source_x.iat[i]))
    assert np.nanmedian(d[300:390, x]) > np.nanmedian(d[300:390, x + 10]) + 1.0
    rows = full.lookalikes[(full.lookalikes.behaviour == "source_trace")
                           & np.isclose(full.lookalikes.mjd, exp.expmid.iat[i], rtol=0, atol=1e-6)]
    assert len(rows) > 100 and rows.x.between(x - 6, x + 6).all()


# -- defects ------------------------------------------------------------------------------------

def _pixel_series(res, y, x, response):
    """(expmid, excess over neighbours, err) of full-frame pixel (y, x) in every exposure that sees it,
    after dividing out the detector response (which the truth does not count)."""
    out = []
    for path, row in zip(res.files, res.exposures.itertuples()):
        y0, x0 = row.substrt2 - 1, row.substrt1 - 1
        if not (y0 <= y < y0 + row.subsize2 and x0 <= x < x0 + row.subsize1):
            continue
        sci, err, _ = _read(path)
        resp = response[y0:y0 + row.subsize2, x0:x0 + row.subsize1]
        out.append((row.expmid, _local_excess(sci / resp, y - y0, x - x0), err[y - y0, x - x0] / resp[y - y0, x - x0]))
    return np.array(out)


def _pick(truth, behaviour, min_sigma, flag=None):
    t = truth[(truth.behaviour == behaviour) & ~truth.static & (truth.amplitude_sigma > min_sigma)
              & truth.end_mjd.isna() & (truth.cluster_size == 1)]
    return t[t.flag == flag] if flag else t


def test_hot_pixel_appears_at_its_onset(sub, response):
    exp = sub.exposures
    cands = _pick(sub.truth, "step", 20, "HOT")
    cands = cands[[((exp.expmid < s).sum() >= 3) and ((exp.expmid >= s).sum() >= 3) for s in cands.start_mjd]]
    assert len(cands)
    hot = cands.iloc[0]
    t, excess, err = _pixel_series(sub, hot.y, hot.x, response).T
    before, after = t < hot.start_mjd, t >= hot.start_mjd
    assert np.median(excess[after] / err[after]) > 10
    assert abs(np.median(excess[before] / err[before])) < 3
    assert np.median(excess[after]) == pytest.approx(hot.amplitude, rel=0.3)


def test_dead_pixel_shows_a_deficit(sub, response):
    t = sub.truth
    dead = t[(t.flag == "DEAD") & ~t.static & (t.amplitude_sigma > 10) & (t.cluster_size == 1)].iloc[0]
    tt, excess, err = _pixel_series(sub, dead.y, dead.x, response).T
    after = (tt >= dead.start_mjd) & (tt < (dead.end_mjd if np.isfinite(dead.end_mjd) else np.inf))
    assert np.median(excess[after] / err[after]) < -10


def test_telegraph_pixel_is_high_in_its_high_exposures_only(sub, response):
    """high_mjd: the mid-times of the exposures inside its interval in which a telegraph pixel is
    high; in the files those exposures show the excess and the others do not."""
    t = sub.truth
    tel = t[t.behaviour.isin(["rts_inter", "rts_slow"])]
    assert len(tel) and (tel.flag == "TELEGRAPH").all()
    # a telegraph never high while seen leaves no trace in the data: no row for it
    assert all(parse_high_mjd(h).size for h in tel.high_mjd)
    assert t.loc[t.behaviour.isin(["step", "weak_warm", "cluster", "slit"]), "high_mjd"].isna().all()
    mids = sub.exposures.expmid.to_numpy()
    for _, row in tel.iterrows():
        hm = parse_high_mjd(row.high_mjd)
        inside = (mids >= (row.start_mjd if np.isfinite(row.start_mjd) else -np.inf)) & \
                 (mids < (row.end_mjd if np.isfinite(row.end_mjd) else np.inf))
        assert np.isin(np.round(hm, 6), np.round(mids[inside], 6)).all()
    # in the files: a strong telegraph pixel is high exactly in its high exposures
    strong = tel[tel.amplitude_sigma > 15]
    strong = strong[[0 < parse_high_mjd(h).size < n for h, n in zip(strong.high_mjd, strong.n_exposures)]]
    row = strong.sort_values("amplitude_sigma").iloc[-1]
    hm = np.round(parse_high_mjd(row.high_mjd), 6)
    tt, excess, err = _pixel_series(sub, row.y, row.x, response).T
    inside = (tt >= row.start_mjd) & (tt < (row.end_mjd if np.isfinite(row.end_mjd) else np.inf))
    assert ((excess[inside] > row.amplitude / 2) == np.isin(np.round(tt[inside], 6), hm)).all()


def test_noisy_pixel_scatters_about_a_normal_mean(sub, response):
    t = sub.truth
    noisy = t[(t.behaviour == "noisy") & (t.noise_factor > 10) & (t.n_exposures >= 8)]
    assert len(noisy) and (noisy.flag == "OTHER_BAD_PIXEL").all()
    row = noisy.iloc[0]
    # its high_mjd lists every exposure of its interval (it is noisy in each)
    assert parse_high_mjd(row.high_mjd).size >= row.n_exposures
    tt, excess, err = _pixel_series(sub, row.y, row.x, response).T
    inside = (tt >= row.start_mjd) & (tt < (row.end_mjd if np.isfinite(row.end_mjd) else np.inf))
    z = excess[inside] / err[inside]
    assert np.std(z) > 4                                    # scatter many times the noise ...
    assert abs(np.median(excess[inside])) < 0.5 * np.std(excess[inside])  # ... about a normal mean
    assert np.std(excess[inside]) == pytest.approx(row.amplitude, rel=0.6)


def test_intra_exposure_telegraph_scatters_between_integrations(sub):
    """rts_intra: in a rateints file, the integrations of one exposure scatter far beyond their ERR."""
    t = sub.truth
    rows = t[(t.behaviour == "rts_intra") & (t.amplitude > 1.0)]
    assert len(rows) and (rows.flag == "TELEGRAPH").all() and (rows.mean_excess_dn_s > 0).all()
    exp = sub.exposures
    found = 0
    for _, row in rows.iterrows():
        for i in np.flatnonzero((exp["product"] == "rateints") & (exp.nints >= 4)):
            mid = exp.expmid.iat[i]
            if not (row.start_mjd <= mid < (row.end_mjd if np.isfinite(row.end_mjd) else np.inf)):
                continue
            with fits.open(sub.files[i]) as h:
                sci, err = h["SCI"].data[:, row.y - 528, row.x], h["ERR"].data[:, row.y - 528, row.x]
                ref = h["SCI"].data[:, row.y - 528, row.x + (1 if row.x < 60 else -1)]
            if np.std(sci) > 3 * np.median(err) and np.std(ref) < 2 * np.median(err):
                found += 1
    assert found >= 1


def test_drift_grows_and_recovery_ends(sub, response):
    t = sub.truth
    grow = t[(t.behaviour == "drift_grow") & (t.amplitude_sigma > 5)]
    assert len(grow)
    row = grow.sort_values("amplitude_sigma").iloc[-1]
    tt, excess, err = _pixel_series(sub, row.y, row.x, response).T
    ramp = (tt > row.ramp_start_mjd) & (tt < row.ramp_end_mjd)
    if ramp.sum() >= 3:  # rising inside the ramp
        assert np.corrcoef(tt[ramp], excess[ramp])[0, 1] > 0.5
    assert row.start_mjd > row.ramp_start_mjd  # bad only once past bad_above_dn_s
    rec = t[(t.behaviour == "recovery") & t.end_mjd.notna() & (t.amplitude_sigma > 10) & (t.flag == "HOT")]
    assert len(rec)
    row = rec.iloc[0]
    tt, excess, err = _pixel_series(sub, row.y, row.x, response).T
    other = t[(t.y == row.y) & (t.x == row.x) & (t.behaviour == "reappear")]
    after = (tt >= row.end_mjd) & (tt < (other.start_mjd.min() if len(other) else np.inf))
    during = (tt >= row.start_mjd) & (tt < row.end_mjd)
    assert np.median(excess[during] / err[during]) > 5
    if after.sum():
        assert abs(np.median(excess[after] / err[after])) < 3


def test_static_defects_are_nan_and_flagged(sub):
    static = sub.truth[sub.truth.static]
    assert len(static)
    path = next(p for p, k in zip(sub.files, sub.exposures["product"]) if k == "rate")
    m = ImageModel(str(path))
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
    assert len(cl) and set(cl.behaviour) == {"cluster"}
    for _, g in cl.groupby("cluster_id"):
        assert len(g) == g.cluster_size.iat[0] and g.start_mjd.nunique() == 1 and g.flag.nunique() == 1
        pts = set(zip(g.y, g.x))
        for y, x in pts:
            if len(pts) > 1:
                assert {(y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)} & pts


def test_placed_behaviours_sit_where_they_should(sub):
    t = sub.truth
    slit = t[t.behaviour == "slit"]
    assert len(slit) and slit.x.between(30, 45).all() and slit.y.between(528, 922).all()  # slitless trace
    edge = t[t.behaviour == "subarray_edge"]
    assert len(edge)
    near = (edge.y - 528 < 2) | (943 - edge.y < 2) | (edge.x - 4 < 2) | (71 - edge.x < 2)
    assert near.all()


# -- look-alikes --------------------------------------------------------------------------------

def test_lookalikes_of_every_kind_and_they_are_in_the_files(sub):
    look = sub.lookalikes
    assert {"cosmic_ray", "row_offsets", "column_offsets", "cr_raised", "sky_step"} <= set(look.behaviour)
    # a raised pixel stays raised for a few exposures after its hit
    raised = look[look.behaviour == "cr_raised"]
    assert raised.groupby(["y", "x"]).size().max() >= 2
    # an offset column is offset along its whole length in its exposure
    col = look[look.behaviour == "column_offsets"]
    first = col.groupby(["x", "mjd"]).size()
    assert first.max() >= 300


def test_persistence_decays_over_the_next_exposures(tmp_path):
    sc = {"sources": {"fraction": 0.3}, "persistence": {"fraction": [0.05, 0.05], "deficit_fraction": 0.0},
          "exposures": {"per_visit": [4, 4], "rateints_fraction": 0.0}, "new": {"events_per_megapixel_per_year": 0}}
    res = simulate(tmp_path, n=12, seed=3, full_frame=False, scenario=sc)
    exp = res.exposures
    look = res.lookalikes[res.lookalikes.behaviour == "persistence"]
    assert len(look)
    after = [i for i in range(1, len(exp)) if exp.n_latents.iat[i] > 0]
    assert after and all(exp.latent_from.iat[i] for i in after)
    counts = [int(np.isclose(look.mjd, exp.expmid.iat[i], rtol=0, atol=1e-6).sum()) for i in after]
    assert max(counts) > 0


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
    pd.testing.assert_frame_equal(a.lookalikes, b.lookalikes)
    assert [p.name for p in a.files] != [p.name for p in c.files]
    assert not np.array_equal(_read(a.files[0])[0], _read(c.files[0])[0], equal_nan=True)


def test_defect_population_is_the_simulated_truth(sub):
    pop = defect_population(n=40, seed=11, full_frame=False, scenario=DENSE)
    pd.testing.assert_frame_equal(pop, sub.truth.drop(columns=["amplitude_sigma"]))


def test_default_population_has_every_behaviour(population):
    """The default scenario mixes every behaviour of the zoo, each with enough defects to score."""
    new = population[~population.static]
    assert len(new) >= 1500
    wanted = {k for k, v in load_scenario(None)["new"]["behaviours"].items() if v["share"] > 0} | {"reappear"}
    counts = new.behaviour.value_counts()
    assert set(counts.index) == wanted
    assert counts.min() >= 30, counts
    assert set(new.flag) == {"HOT", "WARM", "DEAD", "LOW_QE", "TELEGRAPH", "OTHER_BAD_PIXEL"}
    assert new.end_mjd.notna().any() and (new.cluster_id >= 0).any()
    assert 100 <= (population.static & (population.flag != "OTHER_BAD_PIXEL")).sum() <= 1000
    weak = new[new.behaviour == "weak_warm"].amplitude
    assert weak.between(0.02, 0.05).all()
    hot_warm = new[new.flag.isin(["HOT", "WARM"])].amplitude
    assert hot_warm.max() > 10
    # switching and noisy rows carry their high states, the others none
    listed = new.behaviour.isin(["rts_inter", "rts_slow", "rts_intra", "noisy"])
    assert new.high_mjd[listed].notna().all() and new.high_mjd[~listed].isna().all()
    # recoveries heal at anneals mostly; re-appearances come after their recovery
    rec = new[(new.behaviour == "recovery") & new.end_mjd.notna()]
    back = new[new.behaviour == "reappear"].merge(rec[["y", "x", "end_mjd"]], on=["y", "x"], suffixes=("", "_rec"))
    assert len(back) and (back.start_mjd > back.end_mjd_rec).all()
    inter = new[new.behaviour == "intermittent"].groupby(["y", "x"]).size()
    assert (inter >= 2).sum() >= 10  # on, off, on again


def test_existing_rate_files_are_not_mixed_in(tmp_path):
    simulate(tmp_path, n=2, full_frame=False)
    with pytest.raises(FileExistsError, match="overwrite"):
        simulate(tmp_path, n=2, full_frame=False, seed=1)
    res = simulate(tmp_path, n=2, full_frame=False, seed=1, overwrite=True)
    assert sorted(p for g in PRODUCT_GLOBS for p in tmp_path.glob(g)) == sorted(res.files)


def test_scenario_errors_name_the_key():
    with pytest.raises(ValueError, match="amplitudes.HOT"):
        load_scenario({"amplitudes": {"HOT": [5, 1]}})
    with pytest.raises(ValueError, match="no such file"):
        load_scenario("/nonexistent/scenario.yaml")
    with pytest.raises(ValueError, match="new.behaviours.noisy.noise_factor"):
        load_scenario({"new": {"behaviours": {"noisy": {"noise_factor": [5, 1]}}}})
    with pytest.raises(ValueError, match="kind 'wobbly'"):
        load_scenario({"new": {"behaviours": {"x": {"kind": "wobbly", "share": 1}}}})


def test_ideal_scenario_has_identical_pixels_and_the_simple_behaviours():
    sc = load_scenario("ideal")
    assert sc["detector"]["pixel_response_rms"] == 0 and not sc["detector"]["fringes"]
    r = detector_response(profiles.load("lrs"), sc, "MIRIMAGE")
    assert np.all(r == 1.0)
    pop = defect_population(n=30, seed=2, full_frame=False, scenario="ideal")
    assert set(pop.behaviour[~pop.static]) <= {"step", "cluster", "rts_inter"}


# -- pure functions of the zoo and the response --------------------------------------------------

def test_two_state_process_spends_its_duty_high_and_dwells_as_asked():
    from lrscube.validation.sim_behaviours import integration_high_fractions, two_state

    rng = np.random.default_rng(0)
    t = np.linspace(0, 10000, 200001)
    s = two_state(rng, t, 0.0, 10000.0, tau_high=3.0, tau_low=7.0)
    assert s.mean() == pytest.approx(0.3, abs=0.03)
    runs = np.diff(np.flatnonzero(np.diff(s.astype(int)) != 0))
    assert np.mean(runs) * (t[1] - t[0]) == pytest.approx(5.0, rel=0.1)  # mean dwell (3 + 7) / 2
    assert not two_state(rng, np.array([-1.0, 20000.0]), 0.0, 10000.0, 1.0, 1.0).any()  # low outside
    f = np.concatenate([integration_high_fractions(rng, 8, 100.0, 30.0, 70.0) for _ in range(300)])
    assert ((f >= 0) & (f <= 1)).all() and f.mean() == pytest.approx(0.3, abs=0.03)
    assert 0.05 < f.std() < 0.45  # integrations differ: switching within the exposure


def test_fringe_period_follows_the_band_and_washes_out_below_two_rows():
    from lrscube.config.profiles import Box
    from lrscube.validation.sim_response import band_wavenumber, fringe_component

    rng = np.random.default_rng(1)
    box = Box(0, 1024, 0, 8)
    sigma = band_wavenumber(np.arange(1024.0), box, (17.70, 20.95), True)  # channel 4A
    comp = fringe_component(rng, (1024, 8), box, sigma, 2.5, (0.1, 0.1), 150.0)
    col = comp[:, 4] - 1
    # the period in rows is 2.5 cm^-1 over the wavenumber step: ~29 rows at the blue end
    step = abs(sigma[1] - sigma[0])
    crossings = np.flatnonzero(np.diff(np.sign(col[:200])) != 0)
    assert np.median(np.diff(crossings)) * 2 == pytest.approx(2.5 / step, rel=0.15)
    assert np.abs(col).max() == pytest.approx(0.1, rel=0.05)
    # channel 1A: the detector fringe (0.345 cm^-1) is ~1.2 rows and averages out over a pixel
    sigma1 = band_wavenumber(np.arange(1024.0), box, (4.90, 5.74), True)
    fine = fringe_component(rng, (1024, 8), box, sigma1, 0.345, (0.1, 0.1), 150.0)
    assert np.abs(fine - 1).max() < 0.04
