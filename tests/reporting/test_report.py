"""The HTML report: its table functions, the page on whole and partial stores, and a real browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from store_factory import make_cube, make_store, write_ingest_log

from lrscube.config import flags
from lrscube.storage import store as st
from lrscube.reporting.report import (FIGURES, class_counts, class_summary, epoch_changes, footprint_box, pixel_table,
                            manifest_view, read_manifest, report, top_pixels)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: every figure of the full page: the report's own and the spectral-impact run's
ALL_FIGURES = sorted([*FIGURES, "spectra_counts.png", "spectra_example.png"])


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """A store with cube, intervals, mask cube and ingest log, and its report."""
    root = tmp_path_factory.mktemp("rep")
    store, mjd, iv = make_store(root / "s.zarr", n=30, n_full=1)
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps({"created": "2024-01-01", "files": [  # as `lrscube export-crds` writes it
        {"file": "miri_mask_0001.fits", "useafter": "2023-02-25T00:00:00", "n_exposures": 5, "n_flagged": 1,
         "counts": {"DEAD": 1}, "added": {"DEAD": 1}, "removed": {}, "raw_epochs": [0, 0]},
        {"file": "miri_mask_0002.fits", "useafter": "2023-03-13T12:00:00", "n_exposures": 7, "n_flagged": 2,
         "counts": {"DEAD": 1, "WARM": 1}, "added": {"WARM": 1}, "removed": {}, "raw_epochs": [1, 1]}]}))
    # a spectral-impact run on this store: one new HOT pixel on the trace, flagged by no mask
    from lrscube.reporting.spectra import spectra_check

    truth = pd.DataFrame({"y": [150], "x": [325], "flag": ["HOT"], "start_mjd": [mjd[0]], "end_mjd": [np.nan],
                          "amplitude": [5.0], "static": [False]})
    spectra_check(store, truth, out=root / "spectra", epochs=2, offsets=(0.0,))
    # a delivery and its run, recorded as export-crds records them (this store's mask cube is a
    # bare one, without the exposure table an export re-plans from)
    from lrscube.masks import deliveries
    from lrscube.storage import provenance

    run = provenance.Run(command="export-crds", store=store, config={"author": "x"})
    run.result = {"delivery": "first", "files": 2}
    provenance.write_record(store, run.record())
    deliveries.write_delivery(store, "first", {**json.loads(manifest.read_text()), "delivery": "first",
                                               "created": "2024-01-01T00:00:00", "run": run.brief()},
                              deliveries.sparse_rows(0, np.eye(4, dtype="uint32")))
    page = report(store, root / "out", manifest=manifest, spectra=root / "spectra" / "spectra_check.json")
    return store, mjd, iv, page


# --------------------------------------------------------------------------- pure tables


def _iv(rows):
    return pd.DataFrame(rows, columns=["y", "x", "flag", "start_mjd", "end_mjd", "amplitude", "significance"])


def test_class_counts_interval_rule():
    iv = _iv([(1, 1, "HOT", 10.0, 20.0, 5, 9), (2, 2, "HOT", np.nan, 15.0, 5, 8), (3, 3, "DEAD", 12.0, np.nan, -1, 7)])
    c = class_counts(iv, np.array([20.0, 5.0, 10.0, 14.99, 15.0, 100.0]))  # unsorted input times
    assert list(c.columns) == ["HOT", "DEAD"]
    assert c["HOT"].tolist() == [1, 2, 2, 1, 0, 0]  # t = 5, 10, 14.99, 15, 20, 100
    assert c["DEAD"].tolist() == [0, 0, 1, 1, 1, 1]
    assert c.index[0] == pd.Timestamp("1858-11-22")
    assert class_counts(iv.iloc[:0], np.array([1.0])).shape == (1, 0)


def test_pixel_table_and_class_summary():
    iv = _iv([(1, 1, "WARM", 10.0, 20.0, 2, 5), (1, 1, "HOT", 30.0, np.nan, 9, 30),
              (2, 2, "DEAD", np.nan, np.nan, -3, 10), (3, 3, "HOT", 5.0, 8.0, 7, 12)])
    p = pixel_table(iv, last_mjd=40.0).set_index(["y", "x"])
    assert p.loc[(1, 1), "flag"] == "HOT" and p.loc[(1, 1), "onset_mjd"] == 10.0
    assert not p.loc[(1, 1), "recovered"] and p.loc[(1, 1), "n_intervals"] == 2
    assert np.isnan(p.loc[(2, 2), "onset_mjd"]) and not p.loc[(2, 2), "recovered"]
    assert p.loc[(3, 3), "recovered"]
    s = class_summary(iv, last_mjd=40.0).set_index("class")
    assert list(s.index) == ["HOT", "WARM", "DEAD"]
    assert s.loc["HOT", "DQ value"] == flags.value("HOT")
    assert s.loc["HOT", ["intervals", "pixels", "bad at last exposure", "recovered pixels"]].tolist() == [2, 2, 1, 1]
    assert s.loc["WARM", "recovered pixels"] == 1 and s.loc["DEAD", "median amplitude"] == "-3"


def test_top_pixels_one_row_per_pixel():
    iv = _iv([(1, 1, "WARM", 1, 2, 2, 5), (1, 1, "HOT", 3, 4, 9, 30), (2, 2, "DEAD", 1, 2, -3, -40), (3, 3, "HOT", 1, 2, 7, 12)])
    t = top_pixels(iv, 2)
    assert list(zip(t.y, t.x, strict=True)) == [(2, 2), (1, 1)]  # |significance| ranks
    assert top_pixels(iv.drop(columns=["significance"]), 1)[["y", "x"]].values.tolist() == [[1, 1]]


def test_epoch_changes():
    a = np.zeros((4, 5), "uint32")
    b = a.copy()
    b[1, 1] = flags.value("HOT") | flags.DO_NOT_USE
    c = b.copy()
    c[1, 1] = flags.value("WARM")
    c[2, 2] = flags.value("DEAD")
    t = pd.to_datetime(["2023-01-01", "2023-02-01", "2023-03-01"]).to_numpy()
    changes, counts = epoch_changes(t, iter([a, b, c]))
    assert changes["flagged"].tolist() == [0, 1, 2]
    assert changes["newly flagged"].tolist()[1:] == [1, 1]
    assert changes["bits changed"].tolist()[1:] == [0, 1]
    assert changes["by bit"].iloc[2] == "DO_NOT_USE +0 -1, DEAD +1 -0, HOT +0 -1, WARM +1 -0"  # by bit value
    assert counts.columns.tolist()[0] == "time"
    assert counts["HOT"].tolist() == [0, 1, 0] and counts["DEAD"].tolist() == [0, 0, 1]


def test_footprint_box():
    m = np.zeros((10, 12), bool)
    assert footprint_box(m) is None
    m[3:7, 0:4] = True
    assert footprint_box(m) == (3, 7, 0, 4)


def test_subarray_footprints_from_table_or_data(full):
    from lrscube.storage.cube import exposure_table
    from lrscube.reporting.report import subarray_footprints

    store = full[0]
    ex = exposure_table(store)
    expect = {"SLITLESSPRISM": (528, 944, 0, 72)}  # FULL is the frame itself: not outlined
    assert subarray_footprints(store, ex, (1024, 1032)) == expect
    assert subarray_footprints(store, ex.drop(columns=["y0", "x0", "ny", "nx"]), (1024, 1032)) == expect


def test_read_manifest_json_and_csv(tmp_path):
    files = [{"file": "a.fits", "useafter": "2023-01-01T00:00:00", "n_exposures": 3, "n_flagged": 2,
              "counts": {"HOT": 2}, "added": {"HOT": 2}, "removed": {}, "sha256": "x"},
             {"file": "b.fits", "useafter": "2023-02-01T00:00:00", "n_exposures": 4, "n_flagged": 2,
              "counts": {"HOT": 1, "DEAD": 1}, "added": {"DEAD": 1}, "removed": {"HOT": 1}, "sha256": "y"}]
    j = tmp_path / "m.json"
    j.write_text(json.dumps({"created": "now", "files": files}))
    view = manifest_view(read_manifest(j))
    assert view.columns.tolist() == ["file", "useafter", "n_exposures", "n_flagged", "counts",
                                     "change from previous file"]
    assert view["counts"].tolist() == ["HOT 2", "HOT 1, DEAD 1"]
    assert view["change from previous file"].tolist() == ["(first file)", "DEAD +1 -0, HOT +0 -1"]
    # the export's CSV: n_X / added_X / removed_X columns
    c = tmp_path / "m.csv"
    c.write_text("file,useafter,pedigree,epoch_start,n_exposures,first_exposure,last_exposure,n_flagged,"
                 "n_DEAD,n_HOT,added_DEAD,added_HOT,removed_DEAD,removed_HOT,sha256\n"
                 "a.fits,2023-01-01T00:00:00,P,E,3,F,L,2,0,2,0,2,0,0,x\n"
                 "b.fits,2023-02-01T00:00:00,P,E,4,F,L,2,1,1,1,0,0,1,y\n")
    v2 = manifest_view(read_manifest(c))
    assert v2["counts"].tolist() == ["HOT 2", "DEAD 1, HOT 1"]
    assert v2["change from previous file"].tolist() == ["(first file)", "DEAD +1 -0, HOT +0 -1"]
    # something else: shown whole
    o = tmp_path / "o.json"
    o.write_text(json.dumps([{"name": "x", "info": {"a": 1}}]))
    assert manifest_view(read_manifest(o)).to_dict("records") == [{"name": "x", "info": '{"a": 1}'}]


# --------------------------------------------------------------------------- the page


def _imgs(html: str) -> list[str]:
    return re.findall(r"<img src='([^']+)'", html)


def test_full_report_has_every_section_and_figure(full):
    store, mjd, iv, page = full
    html = page.read_text()
    assert page.name == "index.html"
    assert sorted(_imgs(html)) == ALL_FIGURES  # every figure, each once
    for name in ALL_FIGURES:
        assert (page.parent / name).stat().st_size > 5000
    for heading in ("Summary", "Defective pixels over time", "Detector maps", "Amplitudes", "Pixel histories",
                    "Mask epochs", "Input coverage", "Rejected files", "What changed between consecutive epochs",
                    "What changed between consecutive MASK files", "Deliveries and runs", "Runs"):
        assert f">{heading}</h" in html, heading
    assert "<th>exposures in the cube</th><td>30</td>" in html
    assert "ingested 30, duplicate 1, rejected 2" in html
    assert "miri_mask_0002.fits" in html and "2023-03-13T12:00:00" in html  # manifest table
    assert "<td>WARM +1 -0</td>" in html and "<td>DEAD 1, WARM 1</td>" in html
    assert "instrument 'NIRSPEC' is not MIRI" in html
    assert "&lt;script&gt;" in html and "not a FITS file <script>" not in html  # reasons are escaped
    assert "class='note'" not in html  # nothing missing
    # epoch table: 5 epochs, the HOT pixel's arrival listed
    assert "HOT +1 -0" in html and "WARM +0 -1" in html
    # spectral impact: the unflagged HOT pixel is left by every mask and named as the cause
    assert ">Spectral impact</h2>" in html and "HOT (150,325) box, mask: unflagged" in html


def test_report_without_intervals_or_mask_says_so(tmp_path):
    store, mjd, _ = make_store(tmp_path / "s.zarr", n=6, with_intervals=False)
    page = report(store, tmp_path / "out")
    html = page.read_text()
    assert "No defect intervals yet" in html and "lrscube detect --store" in html
    assert "No mask cube at" in html
    assert _imgs(html) == ["coverage.png"]
    assert "No MASK file manifest was given" in html


def test_report_on_an_empty_store_and_on_detection_without_defects(tmp_path):
    html = report(str(tmp_path / "nothing.zarr"), tmp_path / "out1").read_text()
    assert "No exposure cube at" in html and "lrscube ingest" in html and "No ingest log" in html
    store = str(tmp_path / "s.zarr")
    make_cube(store, n=4, n_full=0)
    write_ingest_log(store, 4)
    st.write_table(store, st.INTERVALS, pd.DataFrame(columns=["y", "x", "flag", "start_mjd", "end_mjd"]))
    html = report(store, tmp_path / "out2").read_text()
    assert "Detection ran and found no defective pixels." in html


def test_report_bad_manifest_is_a_note(tmp_path):
    store, mjd, _ = make_store(tmp_path / "s.zarr", n=4, with_intervals=False, with_log=False)
    bad = tmp_path / "manifest.json"
    bad.write_text("{not json")
    html = report(store, tmp_path / "out", manifest=bad).read_text()
    assert "Could not read the MASK file manifest" in html


# --------------------------------------------------------------------------- a real browser


def _chromium(*args, tmp: Path, timeout=90) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp / 'chromium-profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install -y chromium); "
                                             "the browser check of the report needs it")
def test_report_renders_in_chromium_and_every_image_loads(full, tmp_path):
    store, mjd, iv, page = full
    url = page.resolve().as_uri()
    dom = _chromium("--dump-dom", url, tmp=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    m = re.search(r'<p id="image-check"([^>]*)>([^<]*)</p>', dom.stdout)
    assert m, dom.stdout[-2000:]
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', m.group(1)))
    assert attrs["data-checked"] == "yes"  # the load handler ran in the browser
    assert int(attrs["data-images"]) == len(ALL_FIGURES)
    assert attrs["data-broken"] == "", f"images that did not load: {attrs['data-broken']}"
    assert m.group(2) == f"All {len(ALL_FIGURES)} figures loaded."

    shot = tmp_path / "report.png"
    res = _chromium(f"--screenshot={shot}", "--window-size=1400,4000", url, tmp=tmp_path)
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    from PIL import Image

    im = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert im.shape == (4000, 1400)
    assert im.std() > 10  # text and figures, not a blank page
    keep = Path(page.parent) / "screenshot.png"  # left beside the page for a person to look at
    shutil.copy(shot, keep)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install -y chromium)")
def test_chromium_check_detects_a_missing_image(full, tmp_path):
    """The browser check is honest: a removed figure is reported as broken."""
    store, mjd, iv, page = full
    copy = tmp_path / "copy"
    shutil.copytree(page.parent, copy)
    (copy / "coverage.png").unlink()
    dom = _chromium("--dump-dom", (copy / "index.html").resolve().as_uri(), tmp=tmp_path)
    assert 'data-broken="coverage.png"' in dom.stdout
