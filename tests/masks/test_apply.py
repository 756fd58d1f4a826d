"""apply: OR the right epoch into existing products, never touching the input unless asked."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from lrscube.config import flags
from lrscube.masks import maskcube as mc
from lrscube.masks.apply import apply_mask

HOT, WARM, DNU = flags.value("HOT"), flags.value("WARM"), flags.DO_NOT_USE
# The real file's EXPSTART is 58484.70833 (2019-01-01T17:00); its DATE-OBS says 2022-08-18.
REAL_START = 58484.70833333334


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Mask cube: exposures every 100 days from 2018-09-23; pixels change around the real file's time."""
    path = tmp_path_factory.mktemp("apply") / "store"
    start = 58384.0 + np.arange(8) * 100.0  # 2018-09-23, 2019-01-01T00:00, ... (every 100 days)
    exp = pd.DataFrame({"expstart": start, "mjd": start + 0.001, "exptime": 100.0, "program": "01",
                        "filename": [f"e{i}" for i in range(8)], "subarray": "FULL"})
    iv = pd.DataFrame({
        # full-frame (y, x): inside SLITLESSPRISM rows 528-943, columns 0-71
        "y": [528, 600, 943, 700, 100],
        "x": [0, 37, 71, 10, 500],
        "flag": ["HOT", "HOT", "WARM", "HOT", "HOT"],
        "start_mjd": [np.nan, start[1], np.nan, start[2], np.nan],  # (600, 37) bad before the real file
        "end_mjd": [np.nan, np.nan, np.nan, np.nan, np.nan],        # (700, 10) only after it
        "dq": np.array([HOT | DNU, HOT | DNU, WARM, HOT | DNU, HOT | DNU], "uint32"),
    })
    mc.write_mask_cube(path, iv, "lrs", exp)
    return path


def test_real_rateints_gets_the_epoch_and_input_stays_byte_identical(store, tmp_path, rateints_real):
    before = sha(rateints_real)
    res = apply_mask(store, [rateints_real], out=tmp_path / "out")
    assert sha(rateints_real) == before
    assert res.ok, str(res)
    row = res.files[0]
    out = Path(row["output"])
    assert out == tmp_path / "out" / rateints_real.name and out.exists()
    m = mc.mask_at(store, REAL_START)
    assert row["epoch"] == m.attrs["epoch"] == 1  # by EXPSTART, as ingest reads it
    assert "DATE-OBS" in row["reason"]  # the file's EXPSTART and DATE-OBS disagree: said so
    with fits.open(rateints_real) as a, fits.open(out) as b:
        assert b["DQ"].header["BITPIX"] == 32 and b["DQ"].header["BZERO"] == 2**31  # as the pipeline stores it
        dq_in, dq_out = a["DQ"].data, b["DQ"].data
        assert dq_out.shape == (4, 416, 72) and dq_out.dtype == np.uint32
        cut = m.values[528:944, 0:72]
        np.testing.assert_array_equal(dq_out, dq_in | cut[None])
        assert dq_out[0, 0, 0] & (HOT | DNU) and dq_out[2, 600 - 528, 37] & DNU
        assert not (dq_out[:, 700 - 528, 10] & HOT).any()  # appears only in a later epoch
        assert dq_out[1, 943 - 528, 71] & WARM
        np.testing.assert_array_equal(b["SCI"].data, a["SCI"].data)  # no set_nan: SCI untouched
        h = b[0].header
        assert h["LRSCEPOC"] == 1 and h["LRSCUSEA"] == m.attrs["useafter"] and h["LRSCVER"]
        assert any("lrscube" in str(c) and "epoch 1" in str(c) for c in h["HISTORY"])
        assert [x.name for x in a] == [x.name for x in b]  # INT_TIMES, ASDF etc. kept


def test_output_opens_as_a_jwst_datamodel(store, tmp_path, rateints_real):
    from stdatamodels.jwst import datamodels

    res = apply_mask(store, [rateints_real], out=tmp_path)
    with datamodels.open(res.files[0]["output"]) as dm:
        assert dm.dq.shape == (4, 416, 72)
        assert dm.dq[0, 600 - 528, 37] & DNU


def test_set_nan_and_in_place(store, tmp_path, rateints_real):
    copy = tmp_path / "x_rateints.fits"
    shutil.copy(rateints_real, copy)
    copy.chmod(0o644)
    res = apply_mask(store, [copy], in_place=True, set_nan=True)
    assert res.ok, str(res)
    assert res.files[0]["output"] == str(copy)
    with fits.open(copy) as h:
        sci = h["SCI"].data
        assert np.isnan(sci[:, 600 - 528, 37]).all() and np.isnan(sci[:, 0, 0]).all()
        assert np.isfinite(sci[:, 943 - 528, 71]).all()  # WARM: no DO_NOT_USE, no NaN
        assert h[0].header["LRSCNAN"] is True
    # default output: beside the input, *_lrscube.fits; the input untouched
    before = sha(copy)
    res = apply_mask(store, copy)
    assert res.files[0]["output"] == str(tmp_path / "x_rateints_lrscube.fits") and sha(copy) == before
    with pytest.raises(ValueError, match="not both"):
        apply_mask(store, copy, out=tmp_path, in_place=True)


def _write_rate(path, *, instrument="MIRI", keys=("EXPSTART", "EXPMID", "DATE-OBS"), start=58700.3,
                subarray="FULL", shape=(1024, 1032)):
    h = fits.Header({"TELESCOP": "JWST", "INSTRUME": instrument, "DETECTOR": "MIRIMAGE",
                     "EXP_TYPE": "MIR_LRS-FIXEDSLIT", "SUBARRAY": subarray, "SUBSTRT1": 1, "SUBSTRT2": 1,
                     "SUBSIZE1": shape[1], "SUBSIZE2": shape[0], "EFFEXPTM": 100.0})
    if "EXPSTART" in keys:
        h["EXPSTART"] = start
    if "EXPMID" in keys:
        h["EXPMID"] = start + 50 / 86400
    if "DATE-OBS" in keys:
        h["DATE-OBS"], h["TIME-OBS"] = str(mc.mjd_to_datetime64(start)[()])[:23].split("T")
    fits.HDUList([fits.PrimaryHDU(header=h), fits.ImageHDU(np.ones(shape, np.float32), name="SCI"),
                  fits.ImageHDU(np.zeros(shape, np.uint32), name="DQ")]).writeto(path)
    return path


def test_bad_inputs_are_named_and_the_others_go_on(store, tmp_path, rateints_real, ramp_real):
    text = tmp_path / "notes_rate.fits"
    text.write_text("this is not FITS\n" * 20)
    truncated = tmp_path / "cut_rateints.fits"
    truncated.write_bytes(rateints_real.read_bytes()[:200_000])
    nircam = _write_rate(tmp_path / "nrc_rate.fits", instrument="NIRCAM")
    notime = _write_rate(tmp_path / "notime_rate.fits", keys=())
    early = _write_rate(tmp_path / "early_rate.fits", start=58000.0)  # before the mask's valid_from
    good = _write_rate(tmp_path / "good_rate.fits", keys=("DATE-OBS",))  # DATE-OBS/TIME-OBS only
    files = [text, truncated, nircam, notime, ramp_real, tmp_path / "missing_rate.fits", early, good]
    hashes = {f: sha(f) for f in files if Path(f).exists()}
    res = apply_mask(store, files, out=tmp_path / "out")
    by = {Path(r["file"]).name: r for r in res.files}
    assert not res.ok
    assert by["notes_rate.fits"]["status"] == "rejected" and "FITS" in by["notes_rate.fits"]["reason"]
    assert by["cut_rateints.fits"]["status"] == "rejected" and "truncated" in by["cut_rateints.fits"]["reason"]
    assert "instrument 'NIRCAM'" in by["nrc_rate.fits"]["reason"]
    assert "no usable time keyword" in by["notime_rate.fits"]["reason"]
    assert "raw ramp" in by[ramp_real.name]["reason"]
    assert by["missing_rate.fits"]["reason"] == "no such file or directory"
    assert by["early_rate.fits"]["status"] == "skipped" and "valid_from" in by["early_rate.fits"]["reason"]
    assert "--extrapolate" in by["early_rate.fits"]["reason"]  # what the user can do about it
    assert by["good_rate.fits"]["status"] == "applied"
    with fits.open(by["good_rate.fits"]["output"]) as h:
        assert h["DQ"].data[100, 500] == HOT | DNU and h["DQ"].data[528, 0] == HOT | DNU
        assert h["DQ"].data[700, 10] == HOT | DNU  # 58700 is after (700, 10) went bad
    assert all(sha(f) == v for f, v in hashes.items())  # nothing harmed
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good_rate.fits"]
    assert "1 of 8 files applied" in str(res)
    assert list(res.table.columns[:3]) == ["file", "status", "reason"]
    # extrapolate: the early file gets the first epoch
    res = apply_mask(store, [early], out=tmp_path / "out2", extrapolate=True)
    assert res.ok and res.files[0]["epoch"] == 0


def _bad_products(tmp_path, rateints_real, ramp_real) -> dict[str, Path]:
    """One file for each way a file can fail the product checks apply and ingest share."""
    files = {"not FITS": tmp_path / "notes_rate.fits", "empty": tmp_path / "empty_rate.fits",
             "truncated": tmp_path / "cut_rateints.fits", "reference": tmp_path / "flat.fits",
             "no DQ": tmp_path / "nodq_rate.fits", "raw ramp": ramp_real}
    files["not FITS"].write_text("this is not FITS\n" * 20)
    files["empty"].write_bytes(b"")
    files["truncated"].write_bytes(rateints_real.read_bytes()[:200_000])
    fits.HDUList([fits.PrimaryHDU(header=fits.Header({"REFTYPE": "FLAT", "INSTRUME": "MIRI"})),
                  fits.ImageHDU(np.ones((8, 8), np.float32), name="SCI")]).writeto(files["reference"])
    good = _write_rate(tmp_path / "good_rate.fits")
    with fits.open(good) as h:
        err = fits.ImageHDU(np.ones_like(h["SCI"].data), name="ERR")
        fits.HDUList([h[0].copy(), h["SCI"].copy(), err]).writeto(files["no DQ"])  # apply needs no ERR
    return files


def test_apply_and_ingest_reject_a_bad_file_for_the_same_reason(store, tmp_path, rateints_real, ramp_real):
    from lrscube.config import profiles
    from lrscube.intake.products import Rejected, read_product

    files = _bad_products(tmp_path, rateints_real, ramp_real)
    res = apply_mask(store, list(files.values()), out=tmp_path / "out")
    applied = {r["file"]: r for r in res.files}
    for what, path in files.items():
        with pytest.raises(Rejected) as ingest_says:
            read_product(str(path), profiles.load("lrs"))
        row = applied[str(path)]
        assert row["status"] == "rejected", what
        assert row["reason"] == str(ingest_says.value), what
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
