"""Checks a delivery must pass: lrscube's validate_delivery and the real `crds certify`, run
offline against a context built here (pmap -> imap -> rmap for MIRI MASK), agree on good and
broken files; export-crds refuses to write a delivery that fails."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.io import fits

from lrscube.storage import provenance
from lrscube.masks import deliveries as dl
from lrscube.masks.crds_export import export_crds
from lrscube.masks.delivery_checks import InvalidDeliveryError, pedigree_problem, useafter_problem, validate_delivery
from crds_certify import certify_offline, mask_context
from store_factory import build_store

# A CRDS context of our own: the MIRI MASK rmap selects by DETECTOR and SUBARRAY, then by date,
# as the operational one does (parkey of jwst_miri_mask_*.rmap).
MAPPINGS = mask_context("MIRI", ("META.INSTRUMENT.DETECTOR", "META.SUBARRAY.NAME"),
                        {("MIRIMAGE", "FULL"): {"2022-05-01 00:00:00": "jwst_miri_mask_0036.fits"}})


def crds_certify(files, tmp_path) -> tuple[int, str]:
    """`crds certify` offline against the MIRI context above; returns (errors, log)."""
    return certify_offline(files, tmp_path, MAPPINGS)


@pytest.fixture(scope="module")
def delivery(tmp_path_factory):
    root = tmp_path_factory.mktemp("checks")
    build_store(root / "store")
    man = export_crds(root / "store", root / "out", author="T. Ester", pedigree="SIMULATION", every_epoch=True)
    return root, [root / "out" / f["file"] for f in man["files"]], man


@pytest.mark.slow
def test_an_exported_delivery_passes_lrscube_checks_and_crds_certify(delivery, tmp_path):
    root, files, man = delivery
    check = validate_delivery(files, manifest_files=man["files"])
    assert check.ok, str(check)
    assert "pass all 17 rules" in man["checks"]
    errors, log = crds_certify(files, tmp_path)
    assert errors == 0, log[-3000:]
    assert "Checking rmap update for ('miri', 'mask')" in log  # the USEAFTERs went into the rmap


def _broken(src: Path, dst: Path, change) -> Path:
    shutil.copy(src, dst)
    with fits.open(dst, mode="update") as h:
        change(h)
    return dst


def _drop(h, key):
    del h[0].header[key]


def _drop_dq_def(h):
    del h["DQ_DEF"]


# (rule lrscube reports, what crds certify says, or None where certify does not check it)
BROKEN = {
    "useafter_no_T": (lambda h: h[0].header.__setitem__("USEAFTER", "2023/03/17 12:00"), "useafter_format", "Jwstdate"),
    "pedigree_reversed": (lambda h: h[0].header.__setitem__("PEDIGREE", "INFLIGHT 2023-04-01 2023-03-01"),
                          "pedigree", "Start date > stop date"),
    "no_descrip": (lambda h: _drop(h, "DESCRIP"), "required", "META.DESCRIPTION"),
    "no_author": (lambda h: _drop(h, "AUTHOR"), "required", "META.AUTHOR"),
    "fastaxis": (lambda h: h[0].header.__setitem__("FASTAXIS", 2), "axes", "MIRIMAGE_AXIS"),
    "subsize1": (lambda h: h[0].header.__setitem__("SUBSIZE1", 1024), "full_frame", "FULLFRAME_XSIZE"),
    "substrt2": (lambda h: h[0].header.__setitem__("SUBSTRT2", 900), "subarray_bounds", "SUBARRAY_INBOUNDS_Y"),
    "no_slowaxis": (lambda h: _drop(h, "SLOWAXIS"), "subarray_keywords", "META.SUBARRAY.SLOWAXIS"),
    "detector": (lambda h: h[0].header.__setitem__("DETECTOR", "NRS1"), "detector", "DETECTOR"),
    "telescope": (lambda h: h[0].header.__setitem__("TELESCOP", "HST"), "required", "META.TELESCOPE"),
    "no_dq_def": (_drop_dq_def, "dq_def", None),  # certify: DQ_DEF optional
    "dq_def_value": (lambda h: h["DQ_DEF"].data.__setitem__("VALUE", np.roll(h["DQ_DEF"].data["VALUE"], 1)),
                     "dq_def", None),
}


@pytest.fixture(scope="module")
def broken(delivery, tmp_path_factory):
    """Every broken variant of one good file, and one `crds certify` run over all of them."""
    root, files, _ = delivery
    tmp = tmp_path_factory.mktemp("broken")
    paths = {what: _broken(files[1], tmp / f"{what}.fits", change) for what, (change, _, _) in BROKEN.items()}
    errors, log = crds_certify(list(paths.values()), tmp)
    per_file = {what: [ln for ln in log.splitlines() if "ERROR" in ln and f"'{what}.fits'" in ln] for what in paths}
    return paths, per_file


@pytest.mark.slow
@pytest.mark.parametrize("what", sorted(BROKEN))
def test_each_broken_rule_is_caught_by_lrscube_and_where_it_checks_by_crds(broken, what):
    paths, crds_errors = broken
    _, rule, crds_says = BROKEN[what]
    check = validate_delivery([paths[what]])
    assert rule in check.rules_failed(), str(check)
    if crds_says is not None:
        assert any(crds_says in ln for ln in crds_errors[what]), crds_errors[what]
    else:  # a rule lrscube adds: certify lets it through
        assert not crds_errors[what], crds_errors[what]


@pytest.mark.slow
def test_two_files_for_one_date_fail_the_order_rule_and_crds_rmap_check(delivery, tmp_path):
    root, files, _ = delivery
    a = _broken(files[1], tmp_path / "a_mask.fits", lambda h: None)
    b = _broken(files[2], tmp_path / "b_mask.fits",
                lambda h: h[0].header.__setitem__("USEAFTER", fits.getheader(files[1])["USEAFTER"]))
    check = validate_delivery([a, b])
    assert check.rules_failed() == {"useafter_order"}, str(check)
    errors, log = crds_certify([a, b], tmp_path)
    assert errors >= 1, log[-3000:]


@pytest.mark.slow
def test_manifest_rules_coverage_and_checksum(delivery, tmp_path):
    _, files, man = delivery
    recs = [dict(f) for f in man["files"]]
    recs[2]["first_exposure"] = "2020-01-01T00:00:00"  # before the file's USEAFTER
    recs[3]["sha256"] = "0" * 64
    check = validate_delivery(files, manifest_files=recs)
    assert {(f, r) for f, r, _ in check.problems} == {(str(files[2]), "coverage"), (str(files[3]), "checksum")}


def test_value_rules():
    assert pedigree_problem("INFLIGHT 2023-01-01 2023-02-01") is None and pedigree_problem("SIMULATION") is None
    assert pedigree_problem("INFLIGHT 2023-01-01T00:00 2023-02-01") and pedigree_problem("INFLIGHT")
    assert pedigree_problem("GROUND 2023-01-01 2023-02-01")  # only INFLIGHT and MODEL take dates
    assert useafter_problem("2023-01-01T00:00:00") is None
    assert useafter_problem("2023-02-30T00:00:00") and useafter_problem("2023-01-01 00:00:00")


def test_export_refuses_an_invalid_delivery_and_writes_nothing(tmp_path):
    """A mode profile whose frame is not the detector's full frame (1024 x 1024 for MIRIMAGE,
    which is 1024 x 1032) gives files CRDS would reject: nothing is written or recorded."""
    prof = yaml.safe_load(open(Path(__file__).resolve().parents[2] / "configs" / "lrs.yaml"))
    prof["name"] = "lrs-narrow"
    prof["geometry"].update(frame_shape=[1024, 1024], reference_columns=[[0, 4], [1020, 1024]],
                            subarrays={"FULL": {"substrt": [1, 1], "subsize": [1024, 1024]},
                                       "SLITLESSPRISM": {"substrt": [1, 529], "subsize": [72, 416]}})
    prof["regions"].pop("shorted_columns")
    path = tmp_path / "lrs-narrow.yaml"
    path.write_text(yaml.safe_dump(prof))
    import pandas as pd

    from lrscube.masks import maskcube as mc
    from lrscube.storage import store as st

    store = tmp_path / "s"
    start = 60000.5 + np.arange(4) * 10.0
    exp = pd.DataFrame({"expstart": start, "mjd": start, "exptime": 100.0, "subarray": "FULL", "program": "1",
                        "filename": [f"e{i}" for i in range(4)]})
    iv = pd.DataFrame({"y": [600], "x": [30], "flag": ["HOT"], "start_mjd": [start[2]], "end_mjd": [np.nan]})
    st.write_table(str(store), st.INTERVALS, iv)
    mc.write_mask_cube(store, iv, str(path), exp)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("kept")
    with pytest.raises(InvalidDeliveryError, match=r"\[full_frame\].*SUBSIZE1"):
        export_crds(store, out, author="x", pedigree="SIMULATION", every_epoch=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # no file, no staging folder left
    assert dl.list_deliveries(str(store)) == []
    (run,) = provenance.read_runs(str(store))
    assert run["status"] == "failed" and "InvalidDeliveryError" in run["error"]
