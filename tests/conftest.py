"""Shared fixtures: a dask client for the session and a small writer of JWST-format products.

The product writer here is deliberately independent of lrscube's simulator: plain astropy
HDUs with the keywords real pipeline products carry, so ingest is tested on files lrscube's
own simulator did not make (and on malformed ones it never would).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import dask
import pytest
from astropy.io import fits

ROOT = Path(__file__).resolve().parents[1]
#: Real-format files made by others (not part of the project): the folder named by
#: LRSCUBE_REALDATA, by default ../shared/realdata beside the checkout (where CI has it). Tests
#: that need one are skipped, naming the file, when it is absent; with LRSCUBE_REQUIRE_REALDATA=1
#: (set by .ci/run) its absence fails them instead.
REALDATA = Path(os.environ.get("LRSCUBE_REALDATA") or ROOT.parent / "shared" / "realdata")
REALDATA_FILES = {
    "rateints": "ERS_NGTS10_2022_new_drift_041_rateints.fits",  # SLITLESSPRISM rateints, CAL_VER 1.4.1
    "ramp": "MIRI_5582_89_S_20180308-010230_SCE1_pipe.fits",    # ground-test raw ramp, level 1b
}


def realdata_file(key: str) -> Path:
    """The real-format file ``key`` of REALDATA_FILES; skips (or fails under CI) when absent."""
    path = REALDATA / REALDATA_FILES[key]
    if not path.is_file():
        msg = (f"real-format file {REALDATA_FILES[key]} not found in {REALDATA} "
               f"(set LRSCUBE_REALDATA to the folder that holds it)")
        if os.environ.get("LRSCUBE_REQUIRE_REALDATA", "") not in ("", "0"):
            pytest.fail(msg + "; LRSCUBE_REQUIRE_REALDATA is set, so this is a failure", pytrace=False)
        pytest.skip(msg)
    return path


@pytest.fixture
def rateints_real() -> Path:
    return realdata_file("rateints")


@pytest.fixture
def ramp_real() -> Path:
    return realdata_file("ramp")

SUBARRAYS = {  # name: (SUBSTRT1, SUBSTRT2, SUBSIZE1, SUBSIZE2, EXP_TYPE)
    "FULL": (1, 1, 1032, 1024, "MIR_LRS-FIXEDSLIT"),
    "SLITLESSPRISM": (1, 529, 72, 416, "MIR_LRS-SLITLESS"),
}


@pytest.fixture
def format3(monkeypatch):
    """New exposure cubes in format 3 (plain zarr storage, lrscube's own commit scheme): for the
    tests of that format's own mechanisms (format 4, the default, is an icechunk repository).
    The environment variable carries it to the commands a test runs in another process."""
    monkeypatch.setenv("DASK_LRSCUBE__STORE__FORMAT", "3")
    with dask.config.set({"lrscube.store.format": 3}):
        yield


@pytest.fixture(scope="session")
def client():
    """One real multi-process LocalCluster for the tests that ingest or detect."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="session")
def dense16(tmp_path_factory):
    """16 SLITLESSPRISM rate files (seed 5) with a dense new-defect population, simulated once
    for the session: the inputs of the run-record and worker-fault tests, which only read them."""
    import lrscube

    return lrscube.simulate(tmp_path_factory.mktemp("dense16") / "inputs", n=16, seed=5, full_frame=False,
                            progress=False, scenario={"new": {"events_per_megapixel_per_year": 4000}})


def write_product(path, *, subarray="SLITLESSPRISM", mjd_start=60000.0, exptime=100.0, seed=0,
                  nints=None, instrument="MIRI", detector="MIRIMAGE", exp_type=None,
                  time_keys=("EXPSTART", "EXPMID"), program="01234", exposure="00001",
                  shape=None, sci=None, bunit="DN/s", header=None, sci_header=None):
    """Write a rate (or, with ``nints``, rateints) file; returns (path, sci, err, dq) as written.

    ``header`` / ``sci_header``: more keywords for the primary / SCI header (None removes one)."""
    rng = np.random.default_rng(seed)
    s1, s2, w, h, default_exp = SUBARRAYS[subarray]
    ny, nx = shape or (h, w)
    full = (nints, ny, nx) if nints else (ny, nx)
    if sci is None:
        sci = (10.0 + rng.normal(0, 1.0, full)).astype(np.float32)
    err = np.full(full, 1.0, np.float32)
    dq = np.zeros(full, np.uint32)
    dq[..., 0:2] = 2**31  # REFERENCE_PIXEL in the first columns, to exercise the top bit
    ph = fits.Header()
    ph.update({"TELESCOP": "JWST", "INSTRUME": instrument, "DETECTOR": detector,
               "EXP_TYPE": exp_type or default_exp, "SUBARRAY": subarray,
               "SUBSTRT1": s1, "SUBSTRT2": s2, "SUBSIZE1": w, "SUBSIZE2": h,
               "EFFEXPTM": exptime, "EFFINTTM": exptime / (nints or 1), "NINTS": nints or 1,
               "PROGRAM": program, "OBSERVTN": "001", "VISIT": "001", "EXPOSURE": exposure})
    if "EXPSTART" in time_keys:
        ph["EXPSTART"] = mjd_start
    if "EXPMID" in time_keys:
        ph["EXPMID"] = mjd_start + exptime / 2 / 86400
    if "DATE-OBS" in time_keys:
        from astropy.time import Time

        d, t = Time(mjd_start, format="mjd").isot.split("T")
        ph["DATE-OBS"], ph["TIME-OBS"] = d, t
    dq_hdu = fits.ImageHDU(dq, name="DQ")  # astropy stores uint32 as int32 + BZERO, as the pipeline does
    sci_hdu = fits.ImageHDU(sci, name="SCI")
    if bunit is not None:
        sci_hdu.header["BUNIT"] = bunit
    for h, extra in ((ph, header), (sci_hdu.header, sci_header)):
        for k, v in (extra or {}).items():
            if v is None:
                h.remove(k, ignore_missing=True)
            else:
                h[k] = v
    fits.HDUList([fits.PrimaryHDU(header=ph), sci_hdu, fits.ImageHDU(err, name="ERR"), dq_hdu]).writeto(
        path, overwrite=True)
    return Path(path), sci, err, dq


@pytest.fixture
def product_factory(tmp_path):
    def make(name, **kw):
        return write_product(tmp_path / name, **kw)

    return make
