"""Reading JWST level-2 products into one slope image per exposure, placed in the full frame.

Pure functions of headers and arrays (``exposure_times``, ``placement``,
``combine_integrations``) plus ``read_product``, which opens one file and either returns an
:class:`Exposure` or raises :class:`Rejected` with a reason a user can act on.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
from astropy.io import fits
from astropy.time import Time

from . import flags
from .profiles import Profile

#: file-name endings ingest looks for in a directory
PRODUCT_SUFFIXES = ("_rate.fits", "_rateints.fits", "_cal.fits", "_calints.fits")


class Rejected(Exception):
    """A file that does not belong in the cube; ``str()`` is the reason."""


@dataclass
class Exposure:
    """One exposure's slope image in subarray coordinates, with where it sits in the frame."""

    sci: np.ndarray  # float32 (ny, nx), in native or the file's (big-endian) byte order
    err: np.ndarray  # float32
    dq: np.ndarray  # uint32
    y0: int  # 0-based full-frame row of sci[0, 0]
    x0: int
    meta: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- pure functions


def _num(h, key):
    v = h.get(key)
    if v is None or isinstance(v, bool):
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def date_obs_text(h) -> str | None:
    """DATE-OBS joined with TIME-OBS as one ISO string (what CRDS compares with USEAFTER)."""
    date, tim = h.get("DATE-OBS"), h.get("TIME-OBS")
    if not date:
        return None
    text = str(date).strip()
    if "T" not in text and tim:
        text = f"{text}T{str(tim).strip()}"
    return text


def _date_obs_mjd(h) -> float | None:
    text = date_obs_text(h)
    if text is None:
        return None
    try:
        return float(Time(text, format="isot", scale="utc").mjd)
    except ValueError:
        return None


def exposure_times(h) -> tuple[float, float, float]:
    """(mid-time MJD, start MJD, exposure time s) from a primary header.

    Mid-time from EXPMID, else EXPSTART + EFFEXPTM/2, else DATE-OBS/TIME-OBS + EFFEXPTM/2
    (ground-test data carry only DATE-OBS/TIME-OBS). Exposure time from EFFEXPTM, else
    NINTS * EFFINTTM, else NaN. Raises Rejected when no time keyword is usable.
    """
    exptime = _num(h, "EFFEXPTM")
    if exptime is None and _num(h, "EFFINTTM") is not None:
        exptime = _num(h, "EFFINTTM") * (_num(h, "NINTS") or 1)
    half = (exptime or 0.0) / 2 / 86400.0
    start = _num(h, "EXPSTART")
    if start is None:
        start = _date_obs_mjd(h)
    mid = _num(h, "EXPMID")
    if mid is None:
        if start is None:
            raise Rejected("no usable time keyword: none of EXPMID, EXPSTART, DATE-OBS/TIME-OBS")
        mid = start + half
    if start is None:
        start = mid - half
    return float(mid), float(start), float("nan") if exptime is None else float(exptime)


def placement(h, shape: tuple[int, int], frame_shape: tuple[int, int]) -> tuple[int, int]:
    """0-based full-frame (row, column) of the subarray's first pixel, checked against its shape.

    SUBSTRT1/SUBSIZE1 are 1-based columns, SUBSTRT2/SUBSIZE2 rows. A product without them is
    taken as full frame only when its shape is the full frame.
    """
    ny, nx = shape
    keys = [_num(h, k) for k in ("SUBSTRT1", "SUBSTRT2", "SUBSIZE1", "SUBSIZE2")]
    if any(k is None for k in keys):
        if (ny, nx) == tuple(frame_shape):
            return 0, 0
        raise Rejected(f"no SUBSTRT1/2, SUBSIZE1/2 keywords and SCI shape {shape} is not the full frame")
    x1, y1, sx, sy = (int(k) for k in keys)
    if (sy, sx) != (ny, nx):
        raise Rejected(f"SCI shape {ny}x{nx} (rows x columns) does not match SUBSIZE2 x SUBSIZE1 = {sy}x{sx}")
    y0, x0 = y1 - 1, x1 - 1
    if y0 < 0 or x0 < 0 or y0 + ny > frame_shape[0] or x0 + nx > frame_shape[1]:
        raise Rejected(
            f"subarray rows {y0}:{y0 + ny}, columns {x0}:{x0 + nx} (from SUBSTRT/SUBSIZE) fall outside "
            f"the {frame_shape[0]}x{frame_shape[1]} frame"
        )
    return y0, x0


def combine_integrations(
    sci: np.ndarray, err: np.ndarray, dq: np.ndarray, clip: float = 5.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Combine (nints, ny, nx) integration slopes into one slope image, robustly.

    Integrations of one exposure share one integration time, so the plain mean is the unbiased
    estimator (an inverse-variance mean with pipeline ERR, which grows with the measured
    signal, would bias faint pixels low). Robustness: an integration flagged DO_NOT_USE or
    non-finite is dropped; with three or more usable integrations, one deviating from their
    median by more than ``clip`` times its own ERR (a cosmic-ray residual, a jump) is dropped
    too, as long as such integrations are fewer than half of the usable ones (a pixel that
    switches between levels keeps all its integrations). ERR = sqrt(sum ERR_i^2) / n over the kept integrations. DQ = OR of the kept
    integrations' bits; DO_NOT_USE only where no integration was kept.
    """
    sci = np.asarray(sci, dtype=np.float64)
    err = np.asarray(err, dtype=np.float64)
    dq = np.asarray(dq).astype(np.uint32)
    usable = np.isfinite(sci) & np.isfinite(err) & ((dq & flags.DO_NOT_USE) == 0)
    n_usable = usable.sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
        med = np.nanmedian(np.where(usable, sci, np.nan), axis=0)
    outlier = usable & (n_usable >= 3) & (np.abs(sci - med) > clip * np.where(err > 0, err, np.inf))
    # Outliers are a minority by definition: where clipping would drop half or more of the
    # usable integrations (a pixel switching between levels), keep them all.
    outlier &= (2 * outlier.sum(axis=0) < n_usable)
    keep = usable & ~outlier
    n = keep.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out_sci = np.where(keep, sci, 0.0).sum(axis=0) / n
        out_err = np.sqrt(np.where(keep, err**2, 0.0).sum(axis=0)) / n
    out_dq = np.bitwise_or.reduce(np.where(keep, dq, 0).astype(np.uint32), axis=0)
    # bits that mark the pixel itself (not one integration) hold even where nothing was kept
    out_dq |= np.bitwise_and.reduce(dq, axis=0)
    none = n == 0
    out_dq[none] |= flags.DO_NOT_USE
    out_sci[none] = np.nan
    out_err[none] = np.nan
    return out_sci.astype(np.float32), out_err.astype(np.float32), out_dq.astype(np.uint32)


_ID_KEYS = ("PROGRAM", "OBSERVTN", "VISIT", "VISITGRP", "SEQ_ID", "ACT_ID", "EXPOSURE")


def exposure_key(h, detector: str, start_mjd: float) -> str:
    """Identity of an exposure independent of file name and product level (rate vs rateints).

    JWST ids (program, observation, visit, group, sequence, activity, exposure, detector) plus
    the start time to 0.1 s, so a rate and a rateints file of one exposure, or one file copied
    under another name, are recognised as the same exposure.
    """
    ids = [str(h.get(k, "")).strip() for k in _ID_KEYS]
    return "|".join([*ids, detector, f"{start_mjd * 86400:.1f}"])


def product_kind(name: str) -> str:
    m = re.search(r"_(rate|rateints|cal|calints)\.fits(\.gz)?$", name)
    return m.group(1) if m else "unknown"


# --------------------------------------------------------------------------- reading a file


def _open(path: str):
    """Open a local path or fsspec URL as an HDUList; a truncated file is Rejected here."""
    if "://" in path and not path.startswith("file://"):
        import io

        from .store import fs_and_path

        fs, p = fs_and_path(path)
        with fs.open(p, "rb") as f:
            data = f.read()
        src, size = io.BytesIO(data), len(data)
    else:
        local = path[len("file://"):] if path.startswith("file://") else path
        size = os.path.getsize(local)
        src = open(local, "rb")
        if hasattr(os, "posix_fadvise"):
            # No kernel readahead: astropy reads each data plane in one call, and readahead
            # past DQ pulls in the planes ingest never reads (VAR_POISSON, VAR_RNOISE): 12.7
            # instead of 21.2 MB from disk per full-frame rate file (benchmarks/bench_read.py).
            os.posix_fadvise(src.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
    # Scanning every header (lazy_load_hdus=False) checks each HDU's declared size against the
    # file without reading the data planes ingest does not use (VAR_POISSON, VAR_RNOISE, ...).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            hdul = fits.open(src, memmap=False, lazy_load_hdus=False)
        except BaseException:
            src.close()  # astropy closes a file object it was given only with the HDUList
            raise
    for w in caught:
        text = str(w.message)
        if "truncated" in text or "Error validating header" in text:
            hdul.close()
            raise Rejected(f"truncated FITS file ({text.splitlines()[0]})")
    return hdul, size


def _upper(v) -> str | None:
    return None if v is None else str(v).strip().upper()


#: content-hash algorithms of SCI's stored bytes. A cube records the one its exposures were hashed
#: with (``lrscube.content_hash`` in its attributes; cubes from before that record hold blake2b);
#: new cubes use xxh3: 0.3 ms per full frame against ~7 ms, a fifth of an ingest task's CPU.
#: Duplicate detection does not depend on it alone: the exposure identity (ids + start) is
#: checked as well.
CONTENT_HASHES = {
    "blake2b-128": lambda buf: hashlib.blake2b(buf, digest_size=16).hexdigest(),
    "xxh3-128": lambda buf: _xxh3_128(buf),
}
DEFAULT_CONTENT_HASH = "xxh3-128"
LEGACY_CONTENT_HASH = "blake2b-128"


def _xxh3_128(buf) -> str:
    import xxhash

    return xxhash.xxh3_128_hexdigest(buf)


def content_hash(sci: np.ndarray, algorithm: str = DEFAULT_CONTENT_HASH) -> str:
    """Hash of SCI's bytes as stored in the file (big-endian), hashed in place without a copy."""
    if algorithm not in CONTENT_HASHES:
        raise ValueError(f"unknown content hash {algorithm!r} (known: {sorted(CONTENT_HASHES)})")
    return CONTENT_HASHES[algorithm](np.ascontiguousarray(sci))


def read_product(path: str, profile: Profile, clip: float = 5.0, hash_algorithm: str = DEFAULT_CONTENT_HASH) -> Exposure:
    """Read one rate/rateints/cal/calints file into an :class:`Exposure` or raise Rejected.

    ``hash_algorithm``: the content hash of the cube it goes into (:data:`CONTENT_HASHES`)."""
    path = str(path)
    if "://" not in path and os.path.exists(path) and os.path.getsize(path) == 0:
        raise Rejected("empty file (0 bytes)")
    try:
        hdul, size = _open(path)
    except FileNotFoundError:
        raise Rejected("file not found") from None
    except Rejected:
        raise
    except Exception as e:  # astropy raises OSError/TypeError/ValueError for junk
        raise Rejected(f"not a readable FITS file ({type(e).__name__}: {e})") from None
    if size == 0:
        raise Rejected("empty file (0 bytes)")
    with hdul:
        try:
            names = [h.name for h in hdul]
            ph = hdul[0].header
            if "REFOUT" in names:
                raise Rejected(
                    "raw ramp product (level 1b: REFOUT extension); ingest slope products "
                    "(_rate, _rateints, _cal, _calints) instead"
                )
            if "SCI" not in names:
                raise Rejected(f"no SCI extension (extensions: {names})")
            sci_hdu = hdul["SCI"]
            naxis = sci_hdu.header.get("NAXIS", 0)
            if naxis == 4:
                raise Rejected("raw ramp product (4-D SCI: integrations x groups); ingest slope products instead")
            if naxis not in (2, 3):
                raise Rejected(f"SCI has {naxis} dimensions; a slope product has 2 (rate) or 3 (rateints)")
            instrument = _upper(ph.get("INSTRUME"))
            if instrument != profile.instrument:
                raise Rejected(f"instrument {instrument!r}, not {profile.instrument} (mode profile {profile.name!r})")
            detector, exp_type, subarray = (_upper(ph.get(k)) for k in ("DETECTOR", "EXP_TYPE", "SUBARRAY"))
            why = profile.accepts(detector, exp_type, subarray)
            if why:
                raise Rejected(why)
            mid, start, exptime = exposure_times(ph)
            sci = sci_hdu.data
            err = hdul["ERR"].data if "ERR" in names else None
            dq = hdul["DQ"].data if "DQ" in names else None
            if sci is None:
                raise Rejected("SCI extension has no data")
            if err is None or dq is None:
                raise Rejected("ERR or DQ extension missing or empty")
            if not (sci.shape == err.shape == dq.shape):
                raise Rejected(f"SCI {sci.shape}, ERR {err.shape} and DQ {dq.shape} shapes differ")
            bunit = str(sci_hdu.header.get("BUNIT", "DN/s")).strip()
            digest = content_hash(sci, hash_algorithm)
            if sci.ndim == 3:
                sci, err, dq = combine_integrations(sci, err, dq, clip=clip)
            else:
                # float32 in the file's (big-endian) byte order stays as it is: the shard
                # encoder converts chunk by chunk as it copies, so no whole-frame copy here
                sci, err = (a if a.dtype.kind == "f" and a.itemsize == 4 else a.astype(np.float32)
                            for a in (sci, err))
                # DQ may be int32 with BZERO=2**31 on disk; astropy rescales to uint32, we keep
                # the bits (a signed DQ without BZERO is cast bit for bit)
                dq = np.asarray(dq, dtype=np.uint32)
            y0, x0 = placement(ph, sci.shape, profile.frame_shape)
        except Rejected:
            raise
        except Exception as e:
            raise Rejected(f"truncated or corrupt FITS ({type(e).__name__}: {e})") from None
        name = path.rstrip("/").rsplit("/", 1)[-1]
        meta = {
            "filename": name,
            "source": path,
            "product": product_kind(name),
            "mjd": mid,
            "expstart": start,
            "exptime": exptime,
            "exp_type": exp_type,
            "subarray": subarray,
            "detector": detector,
            "program": str(ph.get("PROGRAM", "")).strip(),
            "observation": str(ph.get("OBSERVTN", "")).strip(),
            "visit": str(ph.get("VISIT", "")).strip(),
            "exposure": str(ph.get("EXPOSURE", "")).strip(),
            "nints": int(_num(ph, "NINTS") or 1),
            "y0": y0,
            "x0": x0,
            "ny": int(sci.shape[0]),
            "nx": int(sci.shape[1]),
            "bunit": bunit,
            "content_hash": digest,
            "exposure_key": exposure_key(ph, detector, start),
            "cal_ver": str(ph.get("CAL_VER", "")).strip(),
            "date_obs": Time(start, format="mjd", scale="utc").isot,
            "read_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    return Exposure(sci=sci, err=err, dq=dq, y0=y0, x0=x0, meta=meta)
