"""CRDS export: valid MASK files the real dq_init applies; USEAFTER rule agrees with mask-at and apply."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.time import Time
from stdatamodels.jwst import datamodels
from stdatamodels.jwst.datamodels import dqflags

from lrscube.config import flags
from lrscube.masks import maskcube as mc
from lrscube.storage import store as st
from lrscube.masks.apply import apply_mask
from lrscube.masks.crds_export import export_crds
from store_factory import build_store

HOT, WARM, DEAD, DNU = flags.value("HOT"), flags.value("WARM"), flags.value("DEAD"), flags.DO_NOT_USE
REF = flags.REFERENCE_PIXEL
T0 = 60000.5 + 0.5 / 86400  # 2023-02-25T12:00:00.5
SLITLESS = (528, 0, 416, 72)  # y0, x0, ny, nx (0-based) of SLITLESSPRISM


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("crds")
    store = root / "store"
    exp, iv = build_store(store)
    man = export_crds(store, root / "out", author="T. Ester", every_epoch=True)
    return store, root / "out", man, exp, iv


def test_files_are_valid_mask_models_with_crds_keywords(exported):
    store, out, man, exp, _ = exported
    files = [out / f["file"] for f in man["files"]]
    assert [f.name for f in files] == [f"jwst_miri_mask_lrscube_{i:04d}.fits" for i in range(1, 7)]
    useafters = []
    for f in files:
        with datamodels.MaskModel(str(f)) as m:
            m.validate()
            assert m.dq.shape == (1024, 1032) and m.dq.dtype == np.uint32
            names = [n.decode() if isinstance(n, bytes) else n for n in m.dq_def["NAME"]]
            assert dict(zip(names, m.dq_def["VALUE"].tolist())) == {k: v for k, v in dqflags.pixel.items() if v}
            assert list(m.dq_def["BIT"]) == [int(v).bit_length() - 1 for v in m.dq_def["VALUE"]]
        h = fits.getheader(f)
        for key in ("DESCRIP", "AUTHOR", "PEDIGREE", "USEAFTER", "TELESCOP", "INSTRUME", "DETECTOR"):
            assert h[key], key
        assert (h["REFTYPE"], h["SUBARRAY"], h["TELESCOP"], h["INSTRUME"], h["DETECTOR"]) == \
               ("MASK", "FULL", "JWST", "MIRI", "MIRIMAGE")
        assert (h["SUBSTRT1"], h["SUBSTRT2"], h["SUBSIZE1"], h["SUBSIZE2"]) == (1, 1, 1032, 1024)
        assert (h["FASTAXIS"], h["SLOWAXIS"]) == (1, 2)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", h["USEAFTER"])
        assert re.fullmatch(r"INFLIGHT \d{4}-\d\d-\d\d \d{4}-\d\d-\d\d", h["PEDIGREE"])
        hist = " ".join(str(c) for c in h["HISTORY"])
        assert "10 exposures" in hist and "01234, 04567" in hist and "lrscube" in hist
        useafters.append(h["USEAFTER"])
    assert useafters == sorted(set(useafters))  # strictly increasing
    assert useafters[0] == "2023-02-25T00:00:00"  # valid_from: the first exposure's date
    assert useafters[1:] == [mc.isot(mc.mjd_to_datetime64(exp["expstart"][i])[()]) for i in (2, 3, 4, 6, 8)]
    # reference columns flagged
    with datamodels.MaskModel(str(files[0])) as m:
        assert np.all(m.dq[:, :4] & REF) and np.all(m.dq[:, -4:] & REF) and not np.any(m.dq[:, 4:-4] & REF)


def test_manifest_json_and_csv(exported):
    _, out, man, _, _ = exported
    j = json.loads((out / "jwst_miri_mask_lrscube_manifest.json").read_text())
    assert [f["file"] for f in j["files"]] == [f["file"] for f in man["files"]]
    csv = pd.read_csv(out / "jwst_miri_mask_lrscube_manifest.csv")
    assert list(csv["useafter"]) == [f["useafter"] for f in man["files"]]
    # file 3 (epoch from exp 3): WARM appears at (700, 40); file 4 (exp 6): HOT at (900, 60) added
    assert j["files"][1]["added"] == {"DO_NOT_USE": 1, "DEAD": 1}
    assert j["files"][2]["added"] == {"WARM": 1} and j["files"][3]["added"] == {"WARM": 1}
    assert j["files"][4]["added"] == {"DO_NOT_USE": 1, "HOT": 1} and j["files"][4]["removed"] == {}
    assert j["files"][5]["removed"] == {"DO_NOT_USE": 1, "DEAD": 1} and j["files"][5]["added"] == {}
    assert int(csv.loc[5, "removed_DEAD"]) == 1 and int(csv.loc[4, "added_HOT"]) == 1
    assert int(csv.loc[0, "n_REFERENCE_PIXEL"]) == 8 * 1024
    assert j["merge_cost"]["pixel_exposures"]["total"] == 0
    assert j["data"]["n_exposures"] == 10
    assert [f["n_exposures"] for f in j["files"]] == [2, 1, 1, 2, 2, 2]
    # the summary's line per file: its pixels flagged, then the class flags gained and lost
    line = next(t for t in str(man).splitlines() if t.strip().startswith(j["files"][4]["file"]))
    assert f"{j['files'][4]['n_flagged']} pixels flagged, class flags +1 -0" in line


def _ramp(subarray):
    shape = {"FULL": (1024, 1032), "SLITLESSPRISM": (416, 72)}[subarray]
    r = datamodels.RampModel((1, 3, *shape))
    r.meta.instrument.name = "MIRI"
    r.meta.instrument.detector = "MIRIMAGE"
    r.meta.exposure.type = "MIR_LRS-SLITLESS" if subarray != "FULL" else "MIR_LRS-FIXEDSLIT"
    r.meta.subarray.name = subarray
    r.meta.subarray.xstart, r.meta.subarray.ystart = (1, 529) if subarray != "FULL" else (1, 1)
    r.meta.subarray.xsize, r.meta.subarray.ysize = shape[1], shape[0]
    return r


@pytest.mark.parametrize("subarray", ["FULL", "SLITLESSPRISM"])
def test_real_dq_init_applies_each_file(exported, subarray):
    from jwst.dq_init.dq_initialization import do_dqinit

    _, out, man, _, _ = exported
    for f in man["files"]:
        with datamodels.MaskModel(str(out / f["file"])) as mask:
            full = np.array(mask.dq)
            ramp = do_dqinit(_ramp(subarray), mask)
        cut = full if subarray == "FULL" else full[528:944, 0:72]
        np.testing.assert_array_equal(ramp.pixeldq, cut)
        dnu = (cut & DNU) != 0
        assert ramp.groupdq.shape[:2] == (1, 3)
        np.testing.assert_array_equal((ramp.groupdq & DNU) != 0, np.broadcast_to(dnu, ramp.groupdq.shape))
        assert ramp.meta.cal_step.dq_init == "COMPLETE"
        if subarray == "SLITLESSPRISM":
            assert cut[600 - 528, 30] == HOT | DNU  # the HOT pixel is in every epoch
        ramp.close()


def _crds_choice(out, man, date_obs, time_obs):
    """The CRDS rule: the file with the latest USEAFTER at or before DATE-OBS TIME-OBS."""
    t = np.datetime64(f"{date_obs}T{time_obs}")
    ok = [f for f in man["files"] if np.datetime64(fits.getheader(out / f["file"])["USEAFTER"]) <= t]
    return max(ok, key=lambda f: f["useafter"]) if ok else None


def test_apply_mask_at_and_crds_choose_the_same_mask(exported, tmp_path):
    store, out, man, exp, _ = exported
    s = exp["expstart"].to_numpy()
    sec = 1 / 86400
    times = {
        "exactly at the boundary of epoch 4": s[6],
        "0.6 s before that boundary": s[6] - 0.6 * sec,
        "within the same second as the boundary, later": s[6] + 0.4 * sec,
        "mid-epoch": s[4] + 3.0,
        "after the last exposure": s[9] + 100.0,
        "between valid_from and the first exposure": 60000.25,
        "exactly valid_from": 60000.0,
    }
    for what, t in times.items():
        date_obs, time_obs = Time(t, format="mjd", scale="utc").isot.split("T")
        crds = _crds_choice(out, man, date_obs, time_obs)
        m = mc.mask_at(store, t)
        # a SLITLESSPRISM rate file at that time, through apply
        path = tmp_path / f"t{abs(hash(what))}_rate.fits"
        hdr = fits.Header({"TELESCOP": "JWST", "INSTRUME": "MIRI", "DETECTOR": "MIRIMAGE",
                           "EXP_TYPE": "MIR_LRS-SLITLESS", "SUBARRAY": "SLITLESSPRISM", "SUBSTRT1": 1,
                           "SUBSTRT2": 529, "SUBSIZE1": 72, "SUBSIZE2": 416, "EXPSTART": t,
                           "EXPMID": t + 50 * sec, "EFFEXPTM": 100.0, "DATE-OBS": date_obs, "TIME-OBS": time_obs})
        fits.HDUList([fits.PrimaryHDU(header=hdr), fits.ImageHDU(np.ones((416, 72), np.float32), name="SCI"),
                      fits.ImageHDU(np.zeros((416, 72), np.uint32), name="DQ")]).writeto(path)
        res = apply_mask(store, [path], out=tmp_path / "out")
        assert res.ok, (what, str(res))
        row = res.files[0]
        assert crds is not None, what
        assert row["useafter"] == crds["useafter"] == m.attrs["useafter"], what
        with fits.open(row["output"]) as h:
            applied = h["DQ"].data
            assert h[0].header["LRSCUSEA"] == crds["useafter"]
        with datamodels.MaskModel(str(out / crds["file"])) as f:
            file_dq = np.array(f.dq)
        cut = file_dq[528:944, 0:72]  # the file adds REFERENCE_PIXEL columns; products have them already
        np.testing.assert_array_equal(applied | (cut & REF), cut, err_msg=what)
        np.testing.assert_array_equal(m.values | (file_dq & REF), file_dq, err_msg=what)


def test_max_files_merges_at_least_cost_and_reports_it(exported, tmp_path):
    store, _, _, exp, iv = exported
    man = export_crds(store, tmp_path / "two", author="T. Ester", max_files=2, pedigree="SIMULATION",
                      every_epoch=True)
    assert len(man["files"]) == 2 and man["epochs"]["source"].startswith("re-planned")
    cost = man["merge_cost"]["pixel_exposures"]
    # independent check: best cost over all ways to cut the 10 exposures' raw epochs in two,
    # counting only exposures whose footprint covers each pixel
    plan = mc.plan_epochs(iv, exp, None)
    starts = exp["expstart"].to_numpy()
    covered = {(y, x): np.array([(sub == "FULL") or (528 <= y < 944 and x < 72) for sub in exp["subarray"]])
               for y, x in zip(iv["y"], iv["x"])}
    truth = np.array([[_state(iv, m, y, x) for (y, x) in covered] for m in exp["mjd"]])
    best = np.inf
    for cut in range(1, plan.n_epochs):
        b = plan.raw.first_exposure[cut]
        c = 0
        for seg in (slice(0, b), slice(b, len(starts))):
            for j, key in enumerate(covered):
                vals = truth[seg, j][covered[key][seg]]
                if len(vals):
                    _, counts = np.unique(vals, return_counts=True)
                    c += len(vals) - counts.max()
        best = min(best, c)
    assert cost["total"] == best
    assert man["files"][0]["pedigree"] == "SIMULATION"
    for f in man["files"]:
        assert fits.getheader(tmp_path / "two" / f["file"])["PEDIGREE"] == "SIMULATION"
    assert f"{best:.0f} pixel-exposures" in " ".join(
        str(c) for c in fits.getheader(tmp_path / "two" / man["files"][0]["file"])["HISTORY"])


def _state(iv, mid, y, x):
    v = 0
    for r in iv[(iv.y == y) & (iv.x == x)].itertuples():
        if (np.isnan(r.start_mjd) or r.start_mjd <= mid) and (np.isnan(r.end_mjd) or mid < r.end_mjd):
            v |= int(r.dq)
    return v


def test_baseline_flags_every_file_and_refusal_to_overwrite(exported, tmp_path):
    store, out, man, _, _ = exported
    base = datamodels.MaskModel()
    base.dq = np.zeros((1024, 1032), np.uint32)
    base.dq[5, 5] = DEAD | DNU
    base.dq[700, 40] = WARM  # same bit lrscube finds later: no change there any more
    base.meta.instrument.name, base.meta.instrument.detector = "MIRI", "MIRIMAGE"
    base.meta.reftype, base.meta.description, base.meta.author = "MASK", "static", "x"
    base.meta.pedigree, base.meta.useafter = "GROUND", "2022-01-01T00:00:00"
    bpath = tmp_path / "static_mask.fits"
    base.save(str(bpath))
    man2 = export_crds(store, tmp_path / "b", author="T. Ester", baseline=str(bpath), every_epoch=True)
    for f in man2["files"]:
        with datamodels.MaskModel(str(tmp_path / "b" / f["file"])) as m:
            assert m.dq[5, 5] == DEAD | DNU and m.dq[700, 40] & WARM
    # the WARM appearance at (700, 40) no longer changes anything: that epoch is folded
    assert len(man2["files"]) == len(man["files"]) - 1
    mine = tmp_path / "out"  # a copy of the module's delivery: the other tests read the original
    shutil.copytree(out, mine)
    with pytest.raises(FileExistsError, match="overwrite"):
        export_crds(store, mine, author="T. Ester")
    again = export_crds(store, mine, author="T. Ester", overwrite=True, max_files=3, every_epoch=True)
    assert sorted(p.name for p in mine.glob("*.fits")) == [f["file"] for f in again["files"]]
