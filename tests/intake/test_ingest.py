"""Ingest into the exposure cube: values, placement, order, bad inputs and duplicates."""

import shutil

import numpy as np
import pytest
import zarr
from astropy.io import fits

import lrscube
from lrscube import cli


def test_values_land_in_the_full_frame(client, product_factory, tmp_path):
    p1, sci1, err1, dq1 = product_factory("a_rate.fits", subarray="SLITLESSPRISM", mjd_start=60010.0, seed=1)
    p2, sci2, _, dq2 = product_factory("b_rate.fits", subarray="FULL", mjd_start=60000.0, seed=2,
                                       time_keys=("EXPSTART",), exptime=200.0)
    s = lrscube.ingest([p1, p2], tmp_path / "store", progress=False)
    assert s.ok and len(s.ingested) == 2
    ds = lrscube.open_cube(tmp_path / "store")
    assert ds.sizes == {"time": 2, "y": 1024, "x": 1032}
    assert ds.sci.dtype == np.float32 and ds.dq.dtype == np.uint32
    # sorted by time: the FULL exposure (earlier) comes first
    assert list(ds.filename.values) == ["b_rate.fits", "a_rate.fits"]
    np.testing.assert_array_equal(ds.sci[0].values, sci2)
    slit = ds.sci[1].values
    np.testing.assert_array_equal(slit[528:944, 0:72], sci1)
    assert np.isnan(slit[:528]).all() and np.isnan(slit[944:]).all() and np.isnan(slit[:, 72:]).all()
    np.testing.assert_array_equal(ds.dq[1].values[528:944, 0:72], dq1)
    assert int(ds.dq[1, 600, 0]) == 2**31  # REFERENCE_PIXEL survives the int32+BZERO round trip
    np.testing.assert_array_equal(ds.err[1].values[528:944, 0:72], err1)
    # coordinates
    assert ds.mjd.values[0] == pytest.approx(60000.0 + 100 / 86400)  # EXPSTART + EFFEXPTM/2
    assert ds.mjd.values[1] == pytest.approx(60010.0 + 50 / 86400)  # EXPMID
    assert list(ds.subarray.values) == ["FULL", "SLITLESSPRISM"]
    assert list(ds.exp_type.values) == ["MIR_LRS-FIXEDSLIT", "MIR_LRS-SLITLESS"]
    assert set(ds.detector.values) == {"MIRIMAGE"}
    assert list(ds.exptime.values) == [200.0, 100.0]
    # the footprint each exposure saw, 0-based
    assert [ds.y0.values.tolist(), ds.x0.values.tolist()] == [[0, 528], [0, 0]]
    assert [ds.ny.values.tolist(), ds.nx.values.tolist()] == [[1024, 416], [1032, 72]]
    assert np.issubdtype(ds.time.dtype, np.datetime64)


def test_appends_over_runs_in_any_order_give_a_sorted_cube(client, product_factory, tmp_path):
    times = [60005.0, 60001.0, 60009.0, 60003.0, 60007.0]
    files = [product_factory(f"e{i}_rate.fits", mjd_start=t, seed=i, exposure=f"{i:05d}")[0]
             for i, t in enumerate(times)]
    store = tmp_path / "store"
    lrscube.ingest(files[:2], store, progress=False)
    lrscube.ingest(files[2:], store, progress=False, batch_size=2)
    ds = lrscube.open_cube(store)
    assert np.all(np.diff(ds.mjd.values) > 0)
    assert sorted(times) == pytest.approx(ds.expstart.values.tolist())
    # storage keeps arrival order; open_cube(sort=False) shows it
    raw = lrscube.open_cube(store, sort=False)
    assert list(raw.filename.values) == [f.name for f in files]


def test_a_run_longer_than_its_reserve_grows_in_blocks(client, product_factory, tmp_path, monkeypatch, format3):
    """A run grows the arrays for at most RESERVE files at a time; past it, later batches grow
    them again, and the run ends trimmed to exactly the exposures it committed (format 3: a
    format-4 cube grows with each commit)."""
    import importlib

    monkeypatch.setattr(importlib.import_module("lrscube.intake.ingest"), "RESERVE", 3)  # lrscube.ingest is the function
    files = [product_factory(f"r{i}_rate.fits", mjd_start=60000.0 + i, seed=60 + i, exposure=f"{i:05d}")[0]
             for i in range(11)]
    store = tmp_path / "store"
    s = lrscube.ingest(files, store, progress=False, batch_size=2)
    assert len(s.ingested) == 11 and s.n_in_cube == 11
    raw = lrscube.open_cube(store, sort=False)
    assert list(raw.filename.values) == sorted(f.name for f in files)  # the order ingest reads them
    for i, name in enumerate(raw.filename.values):
        with fits.open(tmp_path / name) as h:
            np.testing.assert_array_equal(raw.sci.values[i, 528:944, :72], h["SCI"].data)
    assert all(zarr.open_array(store / "exposures" / v).shape[0] == 11 for v in ("sci", "dq", "mjd", "filename"))


def test_duplicates_are_skipped_and_counted(client, product_factory, tmp_path):
    p, *_ = product_factory("jw01234001001_03102_00001_mirimage_rate.fits", seed=3)
    copy = tmp_path / "renamed_rate.fits"
    shutil.copy(p, copy)
    # the same exposure as a rateints product (same ids and start time, other content)
    ints, *_ = product_factory("jw01234001001_03102_00001_mirimage_rateints.fits", seed=4, nints=3)
    store = tmp_path / "store"
    s = lrscube.ingest([copy, ints, p], store, progress=False)
    assert len(s.ingested) == 1 and len(s.duplicates) == 2 and not s.rejected
    # whatever the order given, the exposure keeps its JWST rate-file name, not the copy's
    assert lrscube.open_cube(store).filename.values.tolist() == [p.name]
    s2 = lrscube.ingest([tmp_path, tmp_path], store, progress=False)  # the same directory twice
    assert not s2.ingested and len(s2.duplicates) == 3
    assert lrscube.open_cube(store).sizes["time"] == 1


def _copy_with_other_ids(src, dst):
    """The same SCI under other JWST ids: only the content hash can tell it is a duplicate."""
    shutil.copy(src, dst)
    with fits.open(dst, mode="update") as h:
        h[0].header["PROGRAM"] = "09999"


@pytest.mark.parametrize("old_cube", [False, True])
def test_content_hash_is_the_cubes_own(client, product_factory, tmp_path, old_cube, format3):
    import hashlib

    import xxhash

    from lrscube.storage import cube
    from lrscube.config import profiles

    p, *_ = product_factory("jw01234001001_03102_00001_mirimage_rate.fits", seed=5)
    store = tmp_path / "store"
    if old_cube:  # a cube made before cubes recorded their hash: its exposures hold blake2b
        cube.create(str(store), profiles.load("lrs"))
        g = cube._open_group(str(store), "r+")
        attrs = dict(g.attrs["lrscube"])
        del attrs["content_hash"]
        attrs.pop("crc")  # nor their attributes' checksum
        g.attrs["lrscube"] = attrs
    assert lrscube.ingest([p], store, progress=False).ingested
    with fits.open(p) as h:
        raw = np.ascontiguousarray(h["SCI"].data)  # the file's bytes, big-endian
    want = hashlib.blake2b(raw, digest_size=16).hexdigest() if old_cube else xxhash.xxh3_128_hexdigest(raw)
    assert lrscube.open_cube(store).content_hash.values.tolist() == [want]
    assert cube.info(str(store)).get("content_hash", "blake2b-128") == ("blake2b-128" if old_cube else "xxh3-128")
    _copy_with_other_ids(p, tmp_path / "relabelled_rate.fits")
    s = lrscube.ingest([tmp_path / "relabelled_rate.fits"], store, progress=False)
    assert not s.ingested and len(s.duplicates) == 1


def _junk(tmp_path, product_factory, ramp_real):
    """Bad inputs of every kind, each with the words its rejection must contain."""
    bad = {}
    (tmp_path / "empty_rate.fits").write_bytes(b"")
    bad["empty_rate.fits"] = "empty"
    (tmp_path / "notes_rate.fits").write_text("this is not FITS at all\n" * 100)
    bad["notes_rate.fits"] = "not a readable FITS"
    good, *_ = product_factory("whole_rate.fits", seed=9, exposure="00090")
    data = good.read_bytes()
    (tmp_path / "truncated_rate.fits").write_bytes(data[: len(data) * 2 // 3])
    bad["truncated_rate.fits"] = "truncated"
    product_factory("nircam_rate.fits", instrument="NIRCAM", detector="NRCA1", exposure="00091")
    bad["nircam_rate.fits"] = "instrument 'NIRCAM'"
    product_factory("mrs_rate.fits", detector="MIRIFUSHORT", exp_type="MIR_MRS", exposure="00092")
    bad["mrs_rate.fits"] = "detector 'MIRIFUSHORT'"
    product_factory("image_rate.fits", exp_type="MIR_IMAGE", exposure="00093")
    bad["image_rate.fits"] = "EXP_TYPE 'MIR_IMAGE'"
    product_factory("notime_rate.fits", time_keys=(), exposure="00094")
    bad["notime_rate.fits"] = "no usable time keyword"
    product_factory("shape_rate.fits", shape=(416, 64), exposure="00095")
    bad["shape_rate.fits"] = "does not match SUBSIZE"
    product_factory("mjysr_cal.fits", bunit="MJy/sr", exposure="00096")
    bad["mjysr_cal.fits"] = "unit"
    shutil.copy(ramp_real, tmp_path / "ramp_rate.fits")
    bad["ramp_rate.fits"] = "raw ramp"
    (tmp_path / "whole_rate.fits").unlink()
    return bad


def test_every_bad_input_is_named_with_its_reason(client, product_factory, tmp_path, rateints_real, ramp_real):
    bad = _junk(tmp_path, product_factory, ramp_real)
    goods = [product_factory(f"good{i}_rate.fits", seed=20 + i, exposure=f"{i:05d}", mjd_start=60000 + i)[0]
             for i in range(3)]
    shutil.copy(rateints_real, tmp_path / "ers_rateints.fits")
    store = tmp_path / "store"
    s = lrscube.ingest([tmp_path, tmp_path / "missing_rate.fits"], store, progress=False)
    reasons = {p.rsplit("/", 1)[-1]: why for p, why in s.rejected}
    for name, words in bad.items():
        assert name in reasons, f"{name} was not rejected"
        assert words in reasons[name], f"{name}: {reasons[name]!r} lacks {words!r}"
    assert "missing_rate.fits" in reasons and "no such file" in reasons["missing_rate.fits"]
    assert sorted(f.rsplit("/", 1)[-1] for f in s.ingested) == sorted(
        [g.name for g in goods] + ["ers_rateints.fits"])
    ds = lrscube.open_cube(store)
    assert ds.sizes["time"] == 4 and not set(ds.filename.values) & set(bad)
    # each exposure in its own slot although junk files shared its load/write task
    for g in goods:
        e = ds.isel(time=np.flatnonzero(ds.filename.values == g.name))
        with fits.open(g) as h:
            y0, ny, nx = 528, *h["SCI"].data.shape
            np.testing.assert_array_equal(e.sci.values[0, y0:y0 + ny, :nx], h["SCI"].data)
    log = lrscube.storage.store.read_table(str(store), lrscube.storage.store.INGEST_LOG)
    assert set(log.loc[log.status == "rejected", "file"].str.rsplit("/", n=1).str[-1]) >= set(bad)


def test_cli_exit_codes(client, product_factory, tmp_path, capsys):
    """0: every input stored or already present; 3: some rejected; 4: nothing stored, all
    rejected; 2: the store unusable. One summary line ends the output and says where the
    reasons are kept; `lrscube exposures` lists the stored exposures and the rejections."""
    good, *_ = product_factory("good_rate.fits")
    (tmp_path / "junk_rate.fits").write_text("junk")
    store = str(tmp_path / "store")
    assert cli.main(["ingest", str(good), str(tmp_path / "junk_rate.fits"), "--store", store]) == 3
    out = capsys.readouterr().out.strip().splitlines()
    assert "junk_rate.fits: not a readable FITS file" in out[0]
    assert out[-1].startswith(f"ingest into {store}: 1 stored, 0 already present (duplicates), 1 rejected "
                              "(1 not FITS); the cube holds 1 exposures")
    assert out[-1].endswith(f"reasons: lrscube exposures --store {store} --rejected")

    assert cli.main(["ingest", str(good), "--store", store]) == 0  # already present
    assert "0 stored, 1 already present (duplicates), 0 rejected;" in capsys.readouterr().out

    assert cli.main(["exposures", "--store", store]) == 0
    out = capsys.readouterr().out
    assert "good_rate.fits" in out and "junk_rate.fits" not in out and out.strip().endswith("1 exposures stored")
    assert cli.main(["exposures", "--store", store, "--rejected"]) == 0
    out = capsys.readouterr().out
    assert "junk_rate.fits" in out and "not FITS" in out and "good_rate.fits" not in out

    # every input rejected: nothing stored, a clear message, exit 4; the reasons are listed
    new = str(tmp_path / "new")
    assert cli.main(["ingest", str(tmp_path / "junk_rate.fits"), str(tmp_path / "absent"), "--store", new]) == 4
    cap = capsys.readouterr()
    assert "nothing was stored: every input was rejected (2)" in cap.err
    assert "0 stored, 0 already present (duplicates), 2 rejected (1 no input, 1 not FITS)" in cap.out
    assert not lrscube.storage.cube.exists(new)
    rej = lrscube.rejections(new)
    assert sorted(rej["kind"]) == ["no input", "not FITS"] and rej["reason"].str.len().min() > 10
    assert cli.main(["ingest", str(tmp_path / "junk_rate.fits"), "--store", new, "--strict"]) == 4
    assert cli.main(["exposures", "--store", new]) == 0 and "0 exposures stored" in capsys.readouterr().out

    # a file rejected once and stored later is no rejection any more
    shutil.copy(good, tmp_path / "junk_rate.fits")
    assert cli.main(["ingest", str(tmp_path / "junk_rate.fits"), "--store", new]) == 0
    assert lrscube.rejections(new)["file"].str.endswith("absent").tolist() == [True]

    # a store that is not an lrscube store is an error of the store: exit 2 with its name
    (tmp_path / "notastore" / "exposures").mkdir(parents=True)
    (tmp_path / "notastore" / "exposures" / "zarr.json").write_text("{broken")
    assert cli.main(["ingest", str(good), "--store", str(tmp_path / "notastore")]) == 2
    assert cli.main(["exposures", "--store", str(tmp_path / "nothing")]) == 2


def _reference_file(path, reftype="FLAT"):
    """A CRDS reference file as the pipeline's are laid out: PRIMARY with REFTYPE and the
    keywords CRDS selects on (EXP_TYPE a pattern), SCI/ERR/DQ full frame, DQ_DEF."""
    ph = fits.Header({"TELESCOP": "JWST", "INSTRUME": "MIRI", "DETECTOR": "MIRIMAGE", "REFTYPE": reftype,
                      "EXP_TYPE": "MIR_LRS-FIXEDSLIT|MIR_LRS-SLITLESS|", "SUBARRAY": "FULL",
                      "USEAFTER": "2022-05-01T00:00:00", "AUTHOR": "test", "PEDIGREE": "INFLIGHT 2022-05-01 2022-06-01",
                      "SUBSTRT1": 1, "SUBSTRT2": 1, "SUBSIZE1": 1032, "SUBSIZE2": 1024})
    shape = (1024, 1032)
    fits.HDUList([fits.PrimaryHDU(header=ph), fits.ImageHDU(np.ones(shape, np.float32), name="SCI"),
                  fits.ImageHDU(np.full(shape, 0.01, np.float32), name="ERR"),
                  fits.ImageHDU(np.zeros(shape, np.uint32), name="DQ"),
                  fits.BinTableHDU.from_columns([fits.Column(name="BIT", format="J", array=[0])], name="DQ_DEF"),
                  ]).writeto(path)


def test_a_directory_is_judged_by_content(client, product_factory, tmp_path, capsys):
    """Every FITS file under a directory is considered whatever its name; the ones that are not
    exposures are rejected with their reason; other files are passed over; a symlink loop is
    entered once."""
    import gzip

    d = tmp_path / "data"
    (d / "deep" / "deeper").mkdir(parents=True)
    product_factory("data/exposure_one.fits", seed=1, exposure="00001", mjd_start=60001)
    p2, *_ = product_factory("data/deep/second.fits", seed=2, exposure="00002", mjd_start=60002)
    (d / "deep" / "second.fits.gz").write_bytes(gzip.compress(p2.read_bytes()))
    p2.unlink()
    p3, *_ = product_factory("data/deep/deeper/third.fits", seed=3, exposure="00003", mjd_start=60003)
    p3.rename(d / "deep" / "deeper" / "third.dat")  # FITS by content, not by name
    _reference_file(d / "jwst_miri_flat_0789.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column(name="WAVELENGTH", format="D", array=[5.0, 6.0])], name="EXTRACT1D")]).writeto(d / "spec_x1d.fits")
    (d / "notes.txt").write_text("observing notes")
    (d / "deep" / "loop").symlink_to("..")  # data/deep/loop -> data: a loop
    store = tmp_path / "store"
    s = lrscube.ingest([d], store, progress=False)
    names = sorted(f.rsplit("/", 1)[-1] for f in s.ingested)
    assert names == ["exposure_one.fits", "second.fits.gz", "third.dat"]
    reasons = {f.rsplit("/", 1)[-1]: why for f, why in s.rejected}
    assert reasons == {"jwst_miri_flat_0789.fits": "a reference file (REFTYPE FLAT), not an exposure",
                       "spec_x1d.fits": "not an exposure: no SCI extension (extensions: ['PRIMARY', 'EXTRACT1D'])"}
    assert s.by_kind == {"not an exposure": 1, "reference file": 1} and s.exit_code == 3
    assert sorted(lrscube.open_cube(store).product.values) == ["rate", "rate", "rate"]
    # the run record counts what the summary line counts
    run, = lrscube.storage.provenance.read_runs(store)
    assert run["result"]["rejected_reasons"] == s.by_kind and run["result"]["exit_code"] == 3
    # a ** glob through the loop ends, and finds each file once (all already stored)
    s = lrscube.ingest([str(d / "**" / "*.fits*")], store, progress=False)
    assert len(s.duplicates) == 2 and not s.ingested
    assert sorted(f.rsplit("/", 1)[-1] for f, _ in s.rejected) == ["jwst_miri_flat_0789.fits", "spec_x1d.fits"]


def test_a_cal_file_first_does_not_decide_the_unit(client, product_factory, tmp_path):
    """The cube's unit is the mode profile's, fixed when the cube is created: a _cal file
    sorting first is rejected (LRS photom cannot be undone from the header), the rate files
    after it are stored in DN/s."""
    cal_keys = {"S_PHOTOM": "COMPLETE", "S_FLAT": "COMPLETE"}
    product_factory("a_cal.fits", bunit="MJy/sr", exposure="00001", mjd_start=60001, header=cal_keys,
                    sci_header={"PHOTMJSR": 2.5})
    product_factory("b_rate.fits", seed=2, exposure="00002", mjd_start=60002)
    product_factory("c_rate.fits", seed=3, exposure="00003", mjd_start=60003, bunit="dn/s")  # any case
    store = tmp_path / "store"
    s = lrscube.ingest([tmp_path], store, progress=False)
    assert sorted(f.rsplit("/", 1)[-1] for f in s.ingested) == ["b_rate.fits", "c_rate.fits"]
    (f, why), = s.rejected
    assert f.endswith("a_cal.fits") and "wavelength-dependent" in why and "_rate" in why
    assert s.by_kind == {"unit": 1} and s.exit_code == 3
    ds = lrscube.open_cube(store)
    assert ds.attrs["bunit"] == "DN/s" and ds.sci.attrs["units"] == "DN/s" and set(ds.bunit.values) == {"DN/s"}


def test_a_calibrated_imaging_product_is_converted_when_the_header_gives_the_factor(client, product_factory, tmp_path):
    """Imaging photom is PHOTMJSR alone: a product calibrated without flat field converts back
    to DN/s (SCI and ERR / PHOTMJSR); one flat-fielded, or without PHOTMJSR, is rejected."""
    kw = dict(subarray="FULL", exp_type="MIR_IMAGE", bunit="MJy/sr")
    p, sci, err, _ = product_factory("a_cal.fits", exposure="00001", mjd_start=60001, **kw,
                                     header={"S_PHOTOM": "COMPLETE", "S_FLAT": "SKIPPED"}, sci_header={"PHOTMJSR": 2.5})
    product_factory("b_cal.fits", exposure="00002", mjd_start=60002, seed=2, **kw,
                    header={"S_PHOTOM": "COMPLETE", "S_FLAT": "COMPLETE"}, sci_header={"PHOTMJSR": 2.5})
    product_factory("c_cal.fits", exposure="00003", mjd_start=60003, seed=3, **kw, header={"S_PHOTOM": "COMPLETE"})
    store = tmp_path / "store"
    s = lrscube.ingest([tmp_path], store, mode="imager", progress=False)
    assert [f.rsplit("/", 1)[-1] for f in s.ingested] == ["a_cal.fits"]
    reasons = {f.rsplit("/", 1)[-1]: why for f, why in s.rejected}
    assert "after flat field" in reasons["b_cal.fits"] and "without a positive PHOTMJSR" in reasons["c_cal.fits"]
    ds = lrscube.open_cube(store)
    assert ds.attrs["bunit"] == "DN/s"
    np.testing.assert_allclose(ds.sci.values[0], sci / np.float32(2.5), rtol=1e-6)
    np.testing.assert_allclose(ds.err.values[0], err / np.float32(2.5), rtol=1e-6)
    log = lrscube.storage.store.read_table(str(store), lrscube.storage.store.INGEST_LOG)
    assert "PHOTMJSR = 2.5" in log.loc[log.status == "ingested", "reason"].iloc[0]


def test_one_ingest_at_a_time_and_a_dead_writers_lock_is_released(client, product_factory, tmp_path, capsys):
    """A second ingest into a store another process is writing to stops with the holder's name
    and leaves the cube as it was; the lock is an OS lock (flock), so a holder that died (kill
    -9) has released it and the next ingest goes ahead, whatever the file says."""
    import json
    import socket
    import subprocess
    import sys

    goods = [product_factory(f"g{i}_rate.fits", seed=40 + i, exposure=f"{i:05d}", mjd_start=60100 + i)[0]
             for i in range(3)]
    store = tmp_path / "store"
    lrscube.ingest(goods[:1], store, progress=False)
    lock = store / lrscube.storage.store.INGEST_LOCK
    assert not lock.exists()  # released when the ingest ends

    # a live writer: another process holding the lock as an ingest does
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from lrscube.storage import store as st\n"
         "with st.writer_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)", str(store)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(lrscube.storage.store.LockedError, match=f"pid {holder.pid} on {socket.gethostname()}"):
            lrscube.ingest(goods[1:], store, progress=False)
        assert cli.main(["ingest", str(goods[1]), "--store", str(store)]) == 2
        assert f"pid {holder.pid}" in capsys.readouterr().err
        assert lrscube.open_cube(store).sizes["time"] == 1 and lock.exists()
    finally:
        holder.kill()
        holder.wait()

    # the holder was killed: its file is still there, naming it, but the kernel released its lock
    assert json.loads(lock.read_text())["pid"] == holder.pid
    s = lrscube.ingest(goods[1:], store, progress=False)
    assert len(s.ingested) == 2 and lrscube.open_cube(store).sizes["time"] == 3 and not lock.exists()


def test_mode_of_an_existing_store_cannot_change(client, product_factory, tmp_path):
    good, *_ = product_factory("good_rate.fits")
    store = tmp_path / "store"
    lrscube.ingest([good], store, progress=False)
    with pytest.raises(Exception, match="holds mode 'lrs'"):
        lrscube.ingest([good], store, mode=str(_other_profile(tmp_path)), progress=False)


def _other_profile(tmp_path):
    import yaml

    from lrscube.config.profiles import configs_dir

    d = yaml.safe_load((configs_dir() / "lrs.yaml").read_text())
    d["name"] = "other"
    p = tmp_path / "other.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def test_real_rateints_through_the_cli(client, tmp_path, capsys, rateints_real, ramp_real):
    store = str(tmp_path / "store")
    assert cli.main(["ingest", str(rateints_real), str(ramp_real), "--store", store]) == 3  # the ramp rejected
    ds = lrscube.open_cube(store)
    finite = np.argwhere(np.isfinite(ds.sci[0].values))
    assert finite.min(0).tolist() == [528, 0] and finite.max(0).tolist() == [943, 71]
    with fits.open(rateints_real) as h:
        assert ds.mjd.values[0] == pytest.approx(h[0].header["EXPSTART"] + h[0].header["EFFEXPTM"] / 2 / 86400)
    assert "raw ramp" in capsys.readouterr().out


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.8, 0.99])
def test_truncated_anywhere_is_rejected(product_factory, fraction):
    from lrscube.config import profiles
    from lrscube.intake.products import Rejected, read_product

    good, *_ = product_factory("whole_rate.fits", subarray="FULL")
    data = good.read_bytes()
    cut = good.with_name("cut_rate.fits")
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(Rejected, match="truncated|not a readable") as e:
        read_product(str(cut), profiles.load("lrs"))
    assert e.value.kind in ("truncated", "not FITS")  # counted under its own kind, not "other"


def test_ingest_keeps_the_scatter_between_integrations_of_a_rateints_file_only(client, product_factory, tmp_path):
    """A rateints file of 6 integrations gets the plane ``intscat`` (~1 where the integrations
    scatter as ERR says, high for a pixel noisy between them, NaN outside its footprint); a rate
    file and a rateints file of 2 integrations store none (no shard: NaN, and verify does not
    miss one)."""
    rng = np.random.default_rng(5)
    sci = (10.0 + rng.normal(0.0, 1.0, (6, 416, 72))).astype(np.float32)  # the factory's ERR is 1
    sci[:, 200, 30] += np.array([3, -3, 3, -3, 3, -3], np.float32)  # switching between integrations
    ints, *_ = product_factory("jw01234001001_03102_00001_mirimage_rateints.fits", nints=6, sci=sci)
    rate, *_ = product_factory("jw01234001001_03102_00002_mirimage_rate.fits", exposure="00002", seed=2,
                               mjd_start=60001.0)
    two, *_ = product_factory("jw01234001001_03102_00003_mirimage_rateints.fits", exposure="00003", seed=3,
                              mjd_start=60002.0, nints=2)
    store = tmp_path / "store"
    assert len(lrscube.ingest([ints, rate, two], store, progress=False).ingested) == 3
    ds = lrscube.open_cube(store)
    assert ds.intscat.dtype == np.float16 and ds.filename.values[0] == ints.name
    q = ds.intscat.values.astype(float)
    inside = q[0, 528:944, :72]
    outside = q[0].copy()
    outside[528:944, :72] = 0.0
    assert np.isfinite(inside).all() and np.isnan(outside[outside != 0]).all() and (outside == 0).sum() == 416 * 72
    assert np.median(inside) == pytest.approx(stats_chi2_median(5) / 5, abs=0.05)
    assert inside[200, 30] > 6  # ~ 1 + 6 x 9 / 5
    assert np.isnan(q[1:]).all()
    from zarr.core.sync import sync

    from lrscube.storage import cube as cube_mod

    async def keys(zs, prefix):
        return sorted([k async for k in zs.list_prefix(prefix)])

    shards = [k for k in sync(keys(cube_mod.zarr_store(cube_mod.cube_url(str(store)), read_only=True), "intscat/"))
              if "/c/" in k]
    assert shards == ["intscat/c/0/0/0"]  # slot 0 only: the rate file and the 2-integration file store nothing
    from lrscube.storage.verify import verify

    assert verify(str(store)).ok


def stats_chi2_median(k: int) -> float:
    from scipy import stats

    return float(stats.chi2.median(k))
