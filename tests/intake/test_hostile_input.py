"""Hostile input (issue 17, findings 1, 5, 7-13): every bad input is one named rejection, never an
abort; times that are no time are errors; apply never overwrites what it should not; system
errors end in one line, not a traceback, and leave the store as it was."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

import lrscube
from conftest import REALDATA, write_product
from lrscube import cli
from lrscube.config import profiles
from lrscube.intake.products import Exposure, Rejected, read_product
from lrscube.masks import maskcube

LRS = profiles.load("lrs")


def _edit(path, primary=None, sci=None, err=None, dq=None, sci_header=None):
    """Rewrite a product with some keywords (None removes one) or planes replaced."""
    with fits.open(path) as h:
        hdus = [x.copy() for x in h]
    out = fits.HDUList(hdus)
    for k, v in (primary or {}).items():
        if v is None:
            out[0].header.remove(k, ignore_missing=True)
        else:
            out[0].header[k] = v
    for k, v in (sci_header or {}).items():
        out["SCI"].header[k] = v
    for name, data in (("SCI", sci), ("ERR", err), ("DQ", dq)):
        if data is not None:
            hdr = out[name].header
            for key in ("BZERO", "BSCALE"):
                hdr.remove(key, ignore_missing=True)
            out[name] = fits.ImageHDU(data, header=hdr, name=name, do_not_scale_image_data=True)
    out.writeto(path, overwrite=True)
    return path


def _reason(path, profile=LRS) -> Rejected:
    with pytest.raises(Rejected) as e:
        read_product(str(path), profile)
    return e.value


# --------------------------------------------------------------------------- headers (findings 1, 5, 8)

HEADER_CASES = {
    # finding 1: beyond datetime64[ns]
    "expmid_far_future": ({"EXPMID": 160000.0}, "time", "not a plausible time"),
    "expmid_far_past": ({"EXPMID": -100000.0}, "time", "not a plausible time"),
    # finding 5
    "expstart_1e12": ({"EXPSTART": 1e12, "EXPMID": None}, "time", "EXPSTART = MJD 1e+12"),
    "nints_3e9": ({"NINTS": 3e9}, "exposure parameters", "NINTS"),
    # finding 8
    "date_obs_1722": ({"EXPSTART": None, "EXPMID": None, "DATE-OBS": "1722-03-01", "TIME-OBS": "00:00:00"},
                      "time", "1722-03-01"),
    "expstart_1845": ({"EXPSTART": -4700.0, "EXPMID": None}, "time", "not a plausible time"),
    "expstart_2100": ({"EXPSTART": 88069.0, "EXPMID": None}, "time", "2100-01-01"),
    "effexptm_negative": ({"EFFEXPTM": -1e9}, "exposure parameters", "EFFEXPTM = -1e+09 s"),
    "effexptm_zero": ({"EFFEXPTM": 0.0}, "exposure parameters", "EFFEXPTM = 0 s"),
    "nints_fraction": ({"NINTS": 2.5}, "exposure parameters", "NINTS"),
    "nints_zero": ({"NINTS": 0}, "exposure parameters", "NINTS"),
    "mid_before_start": ({"EXPSTART": 60000.5, "EXPMID": 60000.0}, "time", "out of order"),
    "end_before_mid": ({"EXPEND": 59999.0}, "time", "out of order"),
    "expstart_text": ({"EXPSTART": "yesterday"}, "time", "EXPSTART = 'yesterday' is not a number"),
    # finding 11: fractional SUBSTRT, a frame outside the detector
    "substrt_fraction": ({"SUBSTRT1": 1.5}, "geometry", "SUBSTRT1 = 1.5 is not a whole number"),
    "frame_outside": ({"SUBSTRT2": 700}, "geometry", "outside the 1024x1032 frame"),
    "subsize_negative": ({"SUBSIZE1": -72}, "geometry", "does not match SUBSIZE"),
}


@pytest.mark.parametrize("case", sorted(HEADER_CASES))
def test_implausible_header_values_are_named_rejections(product_factory, case):
    keys, kind, words = HEADER_CASES[case]
    p, *_ = product_factory(f"{case}_rate.fits", header=keys)
    r = _reason(p)
    assert r.kind == kind and words in str(r), str(r)


# --------------------------------------------------------------------------- values (finding 11)

SHAPE = (416, 72)
VALUE_CASES = {
    "sci_all_nan": (dict(sci=np.full(SHAPE, np.nan, np.float32)), "SCI holds no finite value"),
    "sci_all_inf": (dict(sci=np.full(SHAPE, np.inf, np.float32)), "SCI holds no finite value"),
    "sci_integer": (dict(sci=np.ones(SHAPE, np.int16)), "SCI holds int16 values"),
    "err_negative": (dict(err=np.full(SHAPE, -1.0, np.float32)), "ERR holds negative values"),
    "err_zero": (dict(err=np.zeros(SHAPE, np.float32)), "ERR is zero, NaN or infinite wherever SCI is finite"),
    "dq_float": (dict(dq=np.zeros(SHAPE, np.float32)), "DQ holds float32 values"),
    "dq_negative": (dict(dq=np.full(SHAPE, -1, np.int32)), "DQ holds negative values"),
}


@pytest.mark.parametrize("case", sorted(VALUE_CASES))
def test_values_no_slope_product_holds_are_named_rejections(product_factory, case):
    planes, words = VALUE_CASES[case]
    p, *_ = product_factory(f"{case}_rate.fits")
    _edit(p, **planes)
    r = _reason(p)
    assert r.kind == "values" and words in str(r), str(r)


def test_empty_and_wrongly_shaped_planes_are_rejected(product_factory, tmp_path):
    p, *_ = product_factory("empty_rate.fits")
    _edit(p, primary={"SUBSIZE1": 0, "SUBSIZE2": 0}, sci=np.zeros((0, 0), np.float32),
          err=np.zeros((0, 0), np.float32), dq=np.zeros((0, 0), np.uint32))
    assert "SCI" in str(_reason(p))  # a 0x0 SCI is no slope image
    cube3, *_ = product_factory("three_d_rate.fits", nints=3)  # rateints content under a _rate name
    r = _reason(cube3)
    assert r.kind == "values" and "3-D SCI in a _rate file" in str(r)
    (tmp_path / "three_d_rate.fits").rename(tmp_path / "three_d_rateints.fits")
    assert isinstance(read_product(str(tmp_path / "three_d_rateints.fits"), LRS), Exposure)
    flat, *_ = product_factory("flat_rateints.fits")
    assert "2-D SCI in a _rateints file" in str(_reason(flat))


@pytest.mark.parametrize("bunit", ["DN/s", "dn/s", "DN/S", "DN / s", None])
def test_bunit_spelled_any_way_is_dn_per_second(product_factory, bunit):
    p, sci, *_ = product_factory("unit_rate.fits", bunit=bunit)
    e = read_product(str(p), LRS)
    assert e.meta["bunit"] == "DN/s"
    np.testing.assert_array_equal(e.sci, sci)


def test_unknown_bunit_is_named(product_factory):
    p, *_ = product_factory("unit_rate.fits", bunit="mjy/sr")  # milli or mega? astropy does not guess
    r = _reason(p)
    assert r.kind == "unit" and "'mjy/sr' is not a unit astropy knows" in str(r)


# --------------------------------------------------------------------------- fuzzing (finding 5)

FUZZ_KEYS = ("EXPSTART", "EXPMID", "EXPEND", "DATE-OBS", "TIME-OBS", "EFFEXPTM", "EFFINTTM", "NINTS",
             "SUBSTRT1", "SUBSTRT2", "SUBSIZE1", "SUBSIZE2", "INSTRUME", "DETECTOR", "EXP_TYPE", "SUBARRAY",
             "PROGRAM", "EXPOSURE", "REFTYPE", "S_PHOTOM", "S_FLAT")
FUZZ_EXAMPLES = int(os.environ.get("LRSCUBE_FUZZ_EXAMPLES", "40"))


def header_values():
    from hypothesis import strategies as hs

    text = hs.text(alphabet=[chr(c) for c in range(32, 127)], max_size=20)
    number = hs.one_of(hs.integers(-10**12, 10**12), hs.floats(allow_nan=True, allow_infinity=True),
                       hs.sampled_from([0, 1, -1, 59573.0, 60000.0, 1e12, -1e12, 2**31, 2**63 - 1]))
    plausible = hs.sampled_from(["MIRI", "MIRIMAGE", "MIR_LRS-SLITLESS", "SLITLESSPRISM", "COMPLETE",
                                 "2023-03-08", "01:02:30", "MASK"])
    value = hs.one_of(hs.none(), hs.booleans(), number, text, plausible)
    return hs.dictionaries(hs.sampled_from(FUZZ_KEYS), value, max_size=8)


def check_outcome(path) -> str:
    """read_product's outcome for a file: an Exposure whose fields are sane, or a named
    Rejected; any other exception fails."""
    try:
        e = read_product(str(path), LRS)
    except Rejected as r:
        assert str(r) and r.kind, "a rejection without a reason"
        return r.kind
    m = e.meta
    assert 55197.0 <= m["mjd"] <= lrscube.intake.products.latest_plausible_mjd() + 1
    assert np.isnan(m["exptime"]) or 0 < m["exptime"] <= 1e6
    assert 1 <= m["nints"] <= 1_000_000 and isinstance(m["nints"], int)
    assert 0 <= e.y0 and e.y0 + m["ny"] <= 1024 and 0 <= e.x0 and e.x0 + m["nx"] <= 1032
    np.datetime64(maskcube.mjd_to_datetime64(m["mjd"]), "ns")  # fits datetime64[ns]
    return "exposure"


def fuzz_headers(n_examples: int, folder: Path, seed: int | None = None) -> dict[str, int]:
    """Write products with fuzzed primary headers and read each; returns outcomes counted."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as hs

    outcomes: dict[str, int] = {}
    base, *_ = write_product(folder / "base_rate.fits")
    data = base.read_bytes()

    @settings(max_examples=n_examples, deadline=None, database=None, derandomize=seed is not None,
              suppress_health_check=list(HealthCheck))
    @given(header_values(), hs.integers(0, 10**6))
    def one(keys, k):
        path = folder / f"fuzz{k % 7}_rate.fits"
        path.write_bytes(data)
        try:
            with fits.open(path, mode="update") as h:
                for key, v in keys.items():
                    if v is None:
                        h[0].header.remove(key, ignore_missing=True)
                    else:
                        h[0].header[key] = v
        except (ValueError, TypeError, OverflowError, fits.VerifyError):
            outcomes["header astropy cannot write"] = outcomes.get("header astropy cannot write", 0) + 1
            return
        kind = check_outcome(path)
        outcomes[kind] = outcomes.get(kind, 0) + 1

    one()
    return outcomes


def test_fuzzed_headers_give_an_exposure_or_a_named_rejection(tmp_path):
    """Hypothesis writes products with random primary-header values (numbers huge, negative,
    NaN, text, booleans, keywords removed); each read is an Exposure with sane fields or a
    Rejected with a reason. LRSCUBE_FUZZ_EXAMPLES sets the number of cases (benchmarks/
    bench_fuzz.py runs 1,000+ and prints the outcomes)."""
    outcomes = fuzz_headers(FUZZ_EXAMPLES, tmp_path, seed=0)
    assert sum(outcomes.values()) >= FUZZ_EXAMPLES * 0.9


# --------------------------------------------------------------------------- one ingest (findings 1, 5)

def test_one_bad_file_never_stops_the_others(client, product_factory, tmp_path):
    goods = [product_factory(f"g{i}_rate.fits", seed=i, exposure=f"{i:05d}", mjd_start=60000 + i)[0]
             for i in range(6)]
    bad = {
        "b_expstart_rate.fits": {"EXPSTART": 1e12, "EXPMID": None},
        "b_nints_rate.fits": {"NINTS": 3e9},
        "b_future_rate.fits": {"EXPMID": 160000.0},
        "b_past_rate.fits": {"EXPMID": -100000.0},
        "b_exptime_rate.fits": {"EFFEXPTM": -1e9},
    }
    for i, (name, keys) in enumerate(bad.items()):
        product_factory(name, seed=50 + i, exposure=f"{50 + i:05d}", header=keys)
    nan, *_ = product_factory("b_nan_rate.fits", seed=60, exposure="00060")
    _edit(nan, sci=np.full(SHAPE, np.nan, np.float32))
    store = tmp_path / "store"
    for run in range(2):  # the re-run skips what is stored and rejects the same files again
        s = lrscube.ingest([tmp_path], store, batch_size=3, progress=False)
        assert sorted(Path(f).name for f, _ in s.rejected) == sorted([*bad, "b_nan_rate.fits"])
        assert s.exit_code == 3
        assert (len(s.ingested), len(s.duplicates)) == ((6, 0) if run == 0 else (0, 6))
    ds = lrscube.open_cube(store)
    assert sorted(ds.filename.values) == sorted(g.name for g in goods)
    assert (np.diff(ds.time.values.astype("int64")) > 0).all()
    assert len(lrscube.exposure_table(store)) == 6


# --------------------------------------------------------------------------- discovery (finding 7)

def test_a_glob_over_a_symlink_loop_ends(product_factory, tmp_path):
    d = tmp_path / "data"
    (d / "a").mkdir(parents=True)
    product_factory("data/a/x_rate.fits")
    (d / "a" / "up").symlink_to("..")
    (d / "self").symlink_to(".")
    code = ("import sys, json; from lrscube.intake.inputs import expand; "
            "print(json.dumps([expand([sys.argv[1]]).files, expand([sys.argv[2]]).files]))")
    res = subprocess.run([sys.executable, "-c", code, f"{d}/**/*.fits", str(d)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    by_glob, by_dir = json.loads(res.stdout)
    assert by_glob == by_dir == [str(d / "a" / "x_rate.fits")]


# --------------------------------------------------------------------------- times (finding 9)

@pytest.fixture(scope="module")
def masked_store(tmp_path_factory):
    from store_factory import intervals_table, make_cube

    from lrscube.storage import cube
    from lrscube.masks import maskcube as mc

    path = tmp_path_factory.mktemp("hostile") / "store.zarr"
    mjd = make_cube(path, n=26, n_full=1)
    mc.write_mask_cube(str(path), intervals_table(mjd), "lrs", cube.exposure_table(str(path)))
    return str(path)


@pytest.mark.parametrize("when", ["", "nan", "inf", "-inf", "NaT", "1e12", "-1e12", "2100-01-01", "yesterday"])
def test_mask_at_refuses_what_is_no_time(masked_store, when, capsys):
    assert cli.main(["mask-at", "--store", masked_store, f"--time={when}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lrscube mask-at: error:") and "time" in err and "\n" not in err
    with pytest.raises(ValueError):
        lrscube.mask_at(masked_store, when)


def test_mask_at_a_real_time_still_works(masked_store, capsys):
    assert cli.main(["mask-at", "--store", masked_store, "--time", "60030"]) == 0
    assert "epoch" in capsys.readouterr().out


# --------------------------------------------------------------------------- apply's outputs (finding 10)

def _rate(path, **kw):
    return write_product(path, mjd_start=60010.0, **kw)[0]


def test_apply_refuses_two_inputs_with_one_output(masked_store, tmp_path, capsys):
    (tmp_path / "night1").mkdir()
    (tmp_path / "night2").mkdir()
    a = _rate(tmp_path / "night1" / "x_rate.fits")
    b = _rate(tmp_path / "night2" / "x_rate.fits", seed=1)
    out = tmp_path / "out"
    rc = cli.main(["apply", "--store", masked_store, "--out", str(out), str(a), str(b)])
    assert rc == 4
    text = capsys.readouterr().out
    assert text.count("would also be written for") == 2 and str(a) in text and str(b) in text
    assert not out.exists() or not any(out.iterdir())
    # an output that is another input of the run
    c = _rate(tmp_path / "y_rate.fits")
    _rate(tmp_path / "y_rate_lrscube.fits", seed=3)
    res = lrscube.apply_mask(masked_store, [c, tmp_path / "y_rate_lrscube.fits"])
    by = {Path(r["file"]).name: r for r in res.files}
    assert by["y_rate.fits"]["status"] == "rejected" and "is another input of this run" in by["y_rate.fits"]["reason"]
    assert by["y_rate_lrscube.fits"]["status"] == "applied"


def test_apply_in_place_writes_through_a_symlink_and_keeps_the_mode(masked_store, tmp_path):
    real = _rate(tmp_path / "real_rate.fits")
    os.chmod(real, 0o640)
    link = tmp_path / "link_rate.fits"
    link.symlink_to(real.name)
    res = lrscube.apply_mask(masked_store, [link], in_place=True)
    assert res.ok, str(res)
    assert link.is_symlink() and os.readlink(link) == real.name
    with fits.open(real) as h:
        assert "LRSCEPOC" in h[0].header
    assert os.stat(real).st_mode & 0o7777 == 0o640
    # a read-only file is not modified in place
    ro = _rate(tmp_path / "ro_rate.fits", seed=2)
    os.chmod(ro, 0o444)
    before = ro.read_bytes()
    res = lrscube.apply_mask(masked_store, [ro], in_place=True)
    assert res.files[0]["status"] == "rejected" and "read-only" in res.files[0]["reason"]
    assert ro.read_bytes() == before and os.stat(ro).st_mode & 0o777 == 0o444
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


# --------------------------------------------------------------------------- export (finding 13)

def test_a_rejected_author_leaves_no_folder(masked_store, tmp_path, capsys):
    out = tmp_path / "crds"
    assert cli.main(["export-crds", "--store", masked_store, "--out", str(out), "--author", "Zoë"]) == 2
    assert "printable ASCII" in capsys.readouterr().err
    assert not out.exists()


# --------------------------------------------------------------------------- system errors (finding 12)

#: a child that obeys file permissions although this is root: without the capabilities that
#: let root pass every permission check (util-linux setpriv)
NO_OVERRIDE = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
               "--bounding-set=-dac_override,-dac_read_search", "--"]


def _cli(args, tmp_path, fsize: int | None = None, timeout=600):
    """Run ``lrscube ARGS`` in a fresh process that obeys file permissions; returns it."""
    import shutil

    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without util-linux setpriv: permissions cannot be tested")
        prefix = NO_OVERRIDE

    def pre():
        if fsize is not None:
            import resource

            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run([*prefix, sys.executable, "-m", "lrscube.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, preexec_fn=pre, cwd=tmp_path)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line_no_traceback(res, *words):
    err = res.stderr.strip()
    assert "Traceback" not in res.stderr, res.stderr
    last = err.splitlines()[-1]
    assert all(w in last for w in words), err
    return last


@pytest.mark.slow
def test_os_errors_end_in_one_line_and_leave_the_store_as_it_was(client, tmp_path, masked_store):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    good = [write_product(inputs / f"g{i}_rate.fits", seed=i, exposure=f"{i:05d}", mjd_start=60000 + i)[0]
            for i in range(3)]
    store = tmp_path / "store.zarr"
    lrscube.ingest(good[:1], store, progress=False)
    subprocess.run(["chmod", "-R", "a-w", str(store)], check=True)
    before = _snapshot(store)

    # a read-only store
    res = _cli(["ingest", inputs, "--store", store], tmp_path)
    assert res.returncode == 2
    _one_line_no_traceback(res, "lrscube ingest: error:", "Permission denied", str(store))
    assert _snapshot(store) == before

    # a store where there is no room (a file-size limit: writes fail as on a full disk)
    subprocess.run(["chmod", "-R", "u+w", str(store)], check=True)
    res = _cli(["ingest", inputs, "--store", store], tmp_path, fsize=20_000)
    assert res.returncode == 2, res.stdout + res.stderr
    _one_line_no_traceback(res, "lrscube ingest: error:", "File too large")
    assert lrscube.open_cube(store).sizes["time"] == 1
    assert lrscube.exposure_table(store)["filename"].tolist() == ["g0_rate.fits"]
    assert not (store / "ingest.lock").exists()

    # an input that may not be read: that file is rejected, the others stored
    os.chmod(good[2], 0o000)
    res = _cli(["ingest", inputs, "--store", store], tmp_path)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "g2_rate.fits: cannot be read: Permission denied" in res.stdout
    assert sorted(lrscube.open_cube(store).filename.values) == ["g0_rate.fits", "g1_rate.fits"]

    # outputs into folders that may not be written
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    res = _cli(["export-crds", "--store", masked_store, "--out", locked / "crds"], tmp_path)
    assert res.returncode == 2
    _one_line_no_traceback(res, "lrscube export-crds: error:", "Permission denied")
    res = _cli(["mask-at", "--store", masked_store, "--time", "60030", "--out", locked / "m.fits"], tmp_path)
    assert res.returncode == 2
    _one_line_no_traceback(res, "lrscube mask-at: error:", "Permission denied")
    res = _cli(["apply", "--store", masked_store, "--out", locked / "x", good[0]], tmp_path)
    assert res.returncode == 4
    assert "Permission denied" in res.stdout and "Traceback" not in res.stderr
