"""Spectral impact: the pipeline-like steps on small arrays, and spectra_check on a hand-made store."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from store_factory import make_cube, write_mask

from lrscube.config import flags
from lrscube.reporting.spectra import box_extract, find_features, pixel_replace, report_section, spectra_check


def _trace(ny=60, nx=30, xc=14.3, sigma=1.5):
    y = np.arange(ny)[:, None]
    x = np.arange(nx)[None, :]
    flux = 100.0 * (1 + 0.01 * y)  # smooth along the dispersion axis
    return 2.0 + flux * np.exp(-0.5 * ((x - xc) / sigma) ** 2)


def test_pixel_replace_recovers_a_smooth_trace():
    img = _trace()
    bad = np.zeros(img.shape, bool)
    bad[20, 14] = bad[21, 15] = bad[40, 10] = True  # on the trace peak, its wing, and the sky
    hurt = np.where(bad, 1e4, img)
    fixed = pixel_replace(hurt, bad)
    assert np.allclose(fixed[bad], img[bad], rtol=0.02)
    assert np.array_equal(fixed[~bad], img[~bad])
    # a row with nothing good stays NaN where flagged
    allbad = np.zeros(img.shape, bool)
    allbad[5] = True
    assert np.isnan(pixel_replace(img, allbad)[5]).all()


def test_box_extract_and_features():
    img = _trace()
    err = np.full(img.shape, 0.5)
    box = np.arange(11, 18)
    bg = np.r_[0:7, 23:30]
    flux, sig = box_extract(img, err, box, bg)
    truth = (img[:, box] - 2.0).sum(axis=1)
    assert np.allclose(flux, truth, rtol=1e-3)
    assert np.allclose(sig, np.sqrt(7 * 0.25 + (7 * 1.2533 * 0.5 / np.sqrt(14)) ** 2))
    dev = np.zeros(60)
    dev[10] = 5 * sig[10]
    dev[30:33] = -4 * sig[30]
    f = find_features(dev, sig, 3.0)
    assert [(a, b) for a, b, *_ in f] == [(10, 10), (30, 32)]
    assert np.isclose(f[0][2], 5.0) and f[1][3] < 0
    # a flagged background pixel is left out of the median; a NaN box pixel is a divot
    ex = np.zeros(img.shape, bool)
    ex[:, 0] = True
    hot = img.copy()
    hot[:, 0] = 1e6
    assert np.allclose(box_extract(hot, err, box, bg, exclude=ex)[0], flux)
    hole = img.copy()
    hole[7, 14] = np.nan
    assert box_extract(hole, err, box, bg)[0][7] < flux[7] * 0.8


T0 = 60000.0


@pytest.fixture(scope="module")
def check_store(tmp_path_factory):
    """A store whose mask cube flags some of the defects the truth puts on the trace."""
    root = tmp_path_factory.mktemp("spec")
    store = str(root / "s.zarr")
    make_cube(store, n=3, n_full=0)
    hot, dnu = flags.value("HOT"), flags.DO_NOT_USE
    # 0-based; the trace runs along y at x = 325.1 (slit centre) with the default offsets +-6, +-12
    truth = pd.DataFrame([
        # y, x, flag, start, end, amplitude, static
        (100, 325, "HOT", np.nan, np.nan, np.nan, True),      # static: in every mask epoch
        (150, 326, "HOT", T0 + 10, np.nan, 5.0, False),       # new, flagged from T0+10
        (200, 319, "LOW_QE", T0 + 20, np.nan, 0.5, False),     # new, flagged LOW_QE without DO_NOT_USE
        (250, 331, "HOT", T0 + 5, np.nan, 3.0, False),        # new, never flagged (missed)
    ], columns=["y", "x", "flag", "start_mjd", "end_mjd", "amplitude", "static"])
    iv = pd.DataFrame({"y": [100, 150, 200], "x": [325, 326, 319], "flag": ["HOT", "HOT", "LOW_QE"],
                       "start_mjd": [np.nan, T0 + 10, T0 + 20], "end_mjd": [np.nan] * 3,
                       "dq": np.array([hot | dnu, hot | dnu, flags.value("LOW_QE")], "uint32")})
    write_mask(store, iv, np.array([T0, T0 + 10, T0 + 20, T0 + 30]))
    return store, truth, root


def test_spectra_check_counts_what_each_mask_removes(check_store):
    store, truth, root = check_store
    out = root / "out"
    res = spectra_check(store, truth, out=out, epochs=4)
    # epochs start at T0, T0+10, T0+20 (no state change at T0+30): span T0 .. T0+21
    assert res.parameters["times_mjd"] == pytest.approx([T0, T0 + 7, T0 + 14, T0 + 21])
    f = res.features
    assert not (~f["defect"].astype(bool)).any()  # no feature without a defect: masking is clean here

    def feats(method, y=None):
        s = f[f["method"] == method]
        return s if y is None else s[(s["first_row"] <= y) & (s["last_row"] >= y)]

    # no mask: the static HOT pixel shows in every exposure whose box covers x=325 (offsets -6..+6 -> 0, +6)
    assert len(feats("a", 100)) > 0 and len(feats("b", 100)) == 0 and len(feats("c", 100)) == 0
    # the new HOT pixel: the static mask leaves it, the time-variable one removes it
    assert len(feats("b", 150)) > 0 and len(feats("c", 150)) == 0
    # LOW_QE is flagged without DO_NOT_USE: pixel_replace leaves it, replacing every flag removes it
    assert len(feats("c", 200)) == len(feats("b", 200)) > 0 and len(feats("c-all", 200)) == 0
    # the missed HOT pixel stays in every method
    assert len(feats("a", 250)) == len(feats("b", 250)) == len(feats("c", 250)) == len(feats("c-all", 250)) > 0
    nb = len(feats("b"))
    assert res.removal_fraction == pytest.approx(len(feats("b", 150)) / nb)
    assert res.removal_fraction_all == pytest.approx((len(feats("b", 150)) + len(feats("b", 200))) / nb)
    assert not res.goal_met
    assert "NOT met" in str(res)
    doc = json.loads((out / "spectra_check.json").read_text())
    assert doc["removal_fraction"] == pytest.approx(res.removal_fraction)
    assert sorted(doc["figures"]) == ["spectra_counts.png", "spectra_example.png"]
    assert all((out / n).stat().st_size > 5000 for n in doc["figures"])
    # the report section copies the figures and lists what (c) leaves, with the cause
    page = root / "page"
    page.mkdir()
    html = report_section({**doc, "_dir": str(out)}, page)
    assert (page / "spectra_counts.png").exists() and "LOW_QE (200,319) box, mask: LOW_QE" in html
    assert "HOT (250,331) box, mask: unflagged" in html


def test_spectra_check_with_noise_reports_a_control(check_store):
    store, truth, root = check_store
    res = spectra_check(store, truth, epochs=2, offsets=(0.0,), noise=True, seed=1)
    assert set(res.noisy["method"]) == {"a", "b", "c", "c-all", "control"}
    assert res.path is None  # no out: nothing written
