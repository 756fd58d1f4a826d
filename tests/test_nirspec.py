"""NIRSpec NRS1 and NRS2 end to end, from their profiles alone: simulate (fixed-slit subarray
exposures, both orientations), ingest, detect, export a MASK delivery per detector that the
real jwst dq_init applies to NIRSpec ramps (full frame and subarray) and that `crds certify`
accepts offline."""

from __future__ import annotations

import re

import numpy as np
import pytest
from astropy.io import fits
from stdatamodels.jwst import datamodels

import lrscube
from crds_certify import certify_offline, mask_context
from lrscube.config import flags, profiles
from lrscube.masks.crds_export import export_crds
from lrscube.masks.delivery_checks import validate_delivery
from lrscube.storage import cube
from lrscube.validation.evaluate import evaluate, format_report

pytestmark = pytest.mark.slow

MODES = ("nirspec-nrs1", "nirspec-nrs2")
N = 16


@pytest.fixture(scope="module")
def runs(tmp_path_factory, client):
    out = {}
    for k, mode in enumerate(MODES):
        root = tmp_path_factory.mktemp(mode)
        sim = lrscube.simulate(root / "files", n=N, mode=mode, full_frame=False, seed=3 + k)
        store = str(root / "store")
        summary = lrscube.ingest(root / "files", store, mode=mode, progress=False)
        iv = lrscube.detect(store, progress=False)
        rep = evaluate(store, str(root / "files" / "truth" / "truth.csv"))
        print(mode, format_report(rep))
        # one prefix per detector: CRDS file names are unique across NRS1 and NRS2
        man = export_crds(store, root / "crds", author="T. Ester", pedigree="SIMULATION", max_files=2,
                          prefix=f"jwst_nirspec_{sim.exposures.detector[0].lower()}_mask_lrscube")
        out[mode] = dict(root=root, sim=sim, store=store, summary=summary, iv=iv, rep=rep, man=man,
                         profile=profiles.load(mode))
    return out


@pytest.mark.parametrize("mode", MODES)
def test_files_carry_the_detectors_geometry_and_ingest_into_its_frame(runs, mode):
    r = runs[mode]
    p, det = r["profile"], r["profile"].detectors[0]
    box = p.subarray_boxes["SUBS200A1"]
    for path in r["sim"].files:
        h = fits.getheader(path, 0)
        assert (h["INSTRUME"], h["DETECTOR"], h["EXP_TYPE"], h["SUBARRAY"]) == ("NIRSPEC", det, "NRS_FIXEDSLIT", "SUBS200A1")
        assert (h["FASTAXIS"], h["SLOWAXIS"]) == p.axes
        assert (h["SUBSTRT1"], h["SUBSTRT2"], h["SUBSIZE1"], h["SUBSIZE2"]) == (1, box.y0 + 1, 2048, 64)
        assert re.search(rf"_{det.lower()}_rate(ints)?\.fits$", path.name), path.name
    assert len(r["summary"].ingested) == N and not r["summary"].rejected
    info = cube.info(r["store"])
    assert info["profile"] == mode and tuple(info["frame_shape"]) == (2048, 2048)
    ds = cube.open_cube(r["store"])
    sci = ds.sci.isel(time=0).values
    seen = np.isfinite(sci)
    rows = np.flatnonzero(seen.any(axis=1))
    assert (rows.min(), rows.max() + 1) == (box.y0, box.y1)  # placed where its header says
    dq = ds.dq.isel(time=0).values[box.slices()]
    ref = r["profile"].reference_mask()[box.slices()]
    assert ((dq[ref] & flags.REFERENCE_PIXEL) != 0).all() and not (dq[~ref] & flags.REFERENCE_PIXEL).any()


@pytest.mark.parametrize("mode", MODES)
def test_detection_finds_the_simulated_defects(runs, mode):
    """Figures on 16 exposures of one fixed-slit subarray (benchmarks/README.md, "NIRSpec", has
    the measured ones on a larger set): most detectable new defects found, few false pixels,
    none on the reference border."""
    r = runs[mode]
    rep, iv = r["rep"], r["iv"]
    lr = rep["methods"]["lrscube"] if "methods" in rep else rep["lrscube"]
    assert lr["precision"] >= 0.8 and lr["recall"] >= 0.6, format_report(rep)
    assert len(iv) and not r["profile"].reference_mask()[iv.y.to_numpy(), iv.x.to_numpy()].any()
    box = r["profile"].subarray_boxes["SUBS200A1"]
    assert ((iv.y >= box.y0) & (iv.y < box.y1)).all()


def _ramp(det: str, axes, sub: str, box) -> datamodels.RampModel:
    ny, nx = box.y1 - box.y0, box.x1 - box.x0
    r = datamodels.RampModel((1, 3, ny, nx))
    r.meta.instrument.name = "NIRSPEC"
    r.meta.instrument.detector = det
    r.meta.exposure.type = "NRS_FIXEDSLIT" if sub != "FULL" else "NRS_MSASPEC"
    r.meta.exposure.readpatt = "NRSRAPID"
    r.meta.subarray.name = sub
    r.meta.subarray.xstart, r.meta.subarray.ystart = box.x0 + 1, box.y0 + 1
    r.meta.subarray.xsize, r.meta.subarray.ysize = nx, ny
    r.meta.subarray.fastaxis, r.meta.subarray.slowaxis = axes
    return r


@pytest.mark.parametrize("mode", MODES)
def test_mask_files_are_what_dq_init_applies_to_nirspec_ramps(runs, mode):
    from jwst.dq_init.dq_initialization import do_dqinit

    r = runs[mode]
    p, det, man = r["profile"], r["profile"].detectors[0], r["man"]
    files = [r["root"] / "crds" / f["file"] for f in man["files"]]
    assert files and all(f.name.startswith(f"jwst_nirspec_{det.lower()}_mask_lrscube_") for f in files)
    check = validate_delivery(files, manifest_files=man["files"])
    assert check.ok, str(check)
    flagged = {(int(y), int(x)) for y, x in zip(r["iv"].y, r["iv"].x)}
    for path in files:
        h = fits.getheader(path, 0)
        assert (h["INSTRUME"], h["DETECTOR"], h["SUBARRAY"], h["READPATT"], h["EXP_TYPE"]) == \
               ("NIRSPEC", det, "FULL", "ANY", "ANY")
        assert (h["FASTAXIS"], h["SLOWAXIS"]) == p.axes and h["P_READPA"].startswith("NRSRAPID|")
        assert (h["SUBSTRT1"], h["SUBSTRT2"], h["SUBSIZE1"], h["SUBSIZE2"]) == (1, 1, 2048, 2048)
        with datamodels.MaskModel(str(path)) as mask:
            full = np.array(mask.dq)
            assert full.shape == (2048, 2048)
            ref = (full & flags.REFERENCE_PIXEL) != 0
            np.testing.assert_array_equal(ref, p.reference_mask())  # 4 pixels on every edge
            defects = {(int(y), int(x)) for y, x in zip(*np.nonzero(full & ~np.uint32(flags.REFERENCE_PIXEL)))}
            assert defects and defects <= flagged  # only pixels the detection reported
            for sub in ("FULL", "SUBS200A1"):
                box = p.subarray_boxes[sub]
                ramp = do_dqinit(_ramp(det, p.axes, sub, box), mask)
                cut = full[box.slices()]
                np.testing.assert_array_equal(ramp.pixeldq, cut)
                dnu = (cut & flags.DO_NOT_USE) != 0
                np.testing.assert_array_equal((ramp.groupdq[0, 0] & flags.DO_NOT_USE) != 0, dnu)
                assert ramp.meta.cal_step.dq_init == "COMPLETE"


def _nirspec_context() -> dict[str, str]:
    """A CRDS context of our own whose NIRSpec MASK rmap selects by DETECTOR, SUBARRAY and
    READPATT, then by date (jwst docs mask_selection.inc), with an earlier NRS1 file for the
    traditional patterns (P_READPA as lrscube writes it). An rmap with one case per pattern
    would refuse these files (an equal-weight special case): the live rmap's cases are not
    known here (nirspec-facts.md, "Not confirmed")."""
    return mask_context(
        "NIRSPEC", ("META.INSTRUMENT.DETECTOR", "META.SUBARRAY.NAME", "META.EXPOSURE.READPATT"),
        {("NRS1", "FULL", "NRS|NRSN16R4|NRSN32R8|NRSN8R2|NRSRAPID|NRSRAPIDD1|NRSRAPIDD2|NRSRAPIDD6|NRSSLOW"):
         {"2022-05-01 00:00:00": "jwst_nirspec_mask_0040.fits"}})


def test_crds_certify_accepts_both_deliveries(runs, tmp_path):
    files = [runs[m]["root"] / "crds" / f["file"] for m in MODES for f in runs[m]["man"]["files"]]
    errors, log = certify_offline(files, tmp_path, _nirspec_context())
    assert errors == 0, log[-3000:]
    assert "Checking rmap update for ('nirspec', 'mask')" in log
