"""Reading JWST level-2 products into one slope image per exposure, placed in the full frame.

Pure functions of headers and arrays (``exposure_times``, ``placement``,
``combine_integrations``, ``integration_scatter``) plus ``read_product``, which opens one file and either returns an
:class:`Exposure` or raises :class:`Rejected` with a reason a user can act on.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
from astropy.io import fits
from astropy.time import Time

from ..config import flags
from ..storage.cube import DEFAULT_CONTENT_HASH
from ..config.profiles import Profile
from ..storage.store import fs_and_path

class Rejected(Exception):
    """A file that does not belong in the cube; ``str()`` is the reason, ``kind`` a short name
    of the reason's class (what ingest's summary counts: "not FITS", "reference file", "unit",
    "time", ...)."""

    def __init__(self, reason: str, kind: str = "other"):
        super().__init__(reason)
        self.kind = kind

    def __reduce__(self):  # keeps ``kind`` through pickling (a dask worker's result)
        return (Rejected, (str(self), self.kind))


@dataclass
class Exposure:
    """One exposure's slope image in subarray coordinates, with where it sits in the frame."""

    sci: np.ndarray  # float32 (ny, nx), in native or the file's (big-endian) byte order
    err: np.ndarray  # float32
    dq: np.ndarray  # uint32
    y0: int  # 0-based full-frame row of sci[0, 0]
    x0: int
    meta: dict = field(default_factory=dict)
    #: float16 (ny, nx): the scatter between the integrations of a rateints product about their
    #: mean relative to their ERR (:func:`integration_scatter`); None for a rate product or
    #: fewer than 3 integrations
    intscat: np.ndarray | None = None


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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # erfa: "dubious year" (checked by the caller)
            return float(Time(text, format="isot", scale="utc").mjd)
    except Exception:  # astropy raises ValueError and others for text that is no date
        return None


#: earliest plausible time of a JWST product: 2010-01-01 (MJD 55197). Flight data start at launch
#: (2021-12-25, MJD 59573), but ground-test and simulated products carry earlier dates (the
#: MIRISim exposure among the tests' real-format files has EXPSTART 2019-01-01), and they are
#: products users ingest; what the window keeps out is a time no JWST product can have
#: (1722, 2100, MJD 160000, which also does not fit datetime64[ns])
EARLIEST_MJD = 55197.0
#: longest plausible exposure time (s): ~11.6 days, far beyond any JWST exposure
MAX_EXPTIME_S = 1.0e6
#: most integrations plausible in one exposure
MAX_NINTS = 1_000_000


def _number(h, key: str, kind: str) -> float | None:
    """Keyword ``key`` as a finite float; None when absent or without a value; Rejected (of
    ``kind``) when present but not a finite number."""
    if key not in h:
        return None
    v = h[key]
    if v is None or isinstance(v, fits.card.Undefined):
        return None
    try:
        if isinstance(v, bool):
            raise ValueError
        f = float(v)
    except (TypeError, ValueError):
        raise Rejected(f"{key} = {v!r} is not a number", kind) from None
    if not np.isfinite(f):
        raise Rejected(f"{key} = {v!r} is not a finite number", kind)
    return f


def latest_plausible_mjd() -> float:
    """Now + 1 day (MJD): no exposure is later."""
    return time.time() / 86400.0 + 40587.0 + 1.0


def check_time(name: str, mjd: float) -> None:
    """Rejected (kind "time") unless ``mjd`` lies from :data:`EARLIEST_MJD` to now + 1 day."""
    lo, hi = EARLIEST_MJD, latest_plausible_mjd()
    if not lo <= mjd <= hi:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # erfa: "dubious year"
            when = Time(mjd, format="mjd").isot[:10] if -1e5 < mjd < 1e6 else "far outside any date"
        raise Rejected(f"{name} = MJD {mjd:g} ({when}) is not a plausible time of a JWST product: "
                       f"MJD {lo:g} (2010-01-01) to {hi:.0f} (now + 1 day)", "time")


def exposure_integrations(h) -> int | None:
    """NINTS as an int (None when absent); Rejected unless a whole number 1 .. MAX_NINTS."""
    n = _number(h, "NINTS", "exposure parameters")
    if n is None:
        return None
    if n != int(n) or not 1 <= n <= MAX_NINTS:
        raise Rejected(f"NINTS = {h['NINTS']!r} is not a whole number from 1 to {MAX_NINTS}", "exposure parameters")
    return int(n)


def exposure_times(h) -> tuple[float, float, float]:
    """(mid-time MJD, start MJD, exposure time s) from a primary header.

    Mid-time from EXPMID, else EXPSTART + EFFEXPTM/2, else DATE-OBS/TIME-OBS + EFFEXPTM/2
    (ground-test data carry only DATE-OBS/TIME-OBS). Exposure time from EFFEXPTM, else
    NINTS * EFFINTTM, else NaN. Raises Rejected when no time keyword is usable, or when a
    time or exposure parameter is implausible: a time before 2010 or after now + 1 day
    (:func:`check_time`), EXPMID or EXPEND before EXPSTART, EFFEXPTM or EFFINTTM not in (0, 1e6] s, NINTS
    not a whole number from 1 to 1e6.
    """
    params = "exposure parameters"
    exptime = _number(h, "EFFEXPTM", params)
    inttime = _number(h, "EFFINTTM", params)
    nints = exposure_integrations(h)
    for key, v in (("EFFEXPTM", exptime), ("EFFINTTM", inttime)):
        if v is not None and not 0 < v <= MAX_EXPTIME_S:
            raise Rejected(f"{key} = {v:g} s is not a plausible exposure time (0 to {MAX_EXPTIME_S:g} s)", params)
    if exptime is None and inttime is not None:
        exptime = inttime * (nints or 1)
    half = (exptime or 0.0) / 2 / 86400.0
    start = _number(h, "EXPSTART", "time")
    mid = _number(h, "EXPMID", "time")
    end = _number(h, "EXPEND", "time")
    date_obs = _date_obs_mjd(h)
    for name, v in (("EXPSTART", start), ("EXPMID", mid), ("EXPEND", end), ("DATE-OBS/TIME-OBS", date_obs)):
        if v is not None:
            check_time(name, v)
    if start is None:
        start = date_obs
    if mid is None:
        if start is None:
            raise Rejected("no usable time keyword: none of EXPMID, EXPSTART, DATE-OBS/TIME-OBS", "time")
        mid = start + half
    if start is None:
        start = mid - half
    tol = 1.0 / 86400  # 1 s
    if mid < start - tol or (end is not None and end < mid - tol):
        raise Rejected(f"times out of order: start {start:.6f}, mid {mid:.6f}"
                       + (f", end {end:.6f}" if end is not None else "") + " (MJD)", "time")
    return float(mid), float(start), float("nan") if exptime is None else float(exptime)


def placement(h, shape: tuple[int, int], frame_shape: tuple[int, int]) -> tuple[int, int]:
    """0-based full-frame (row, column) of the subarray's first pixel, checked against its shape.

    SUBSTRT1/SUBSIZE1 are 1-based columns, SUBSTRT2/SUBSIZE2 rows. A product without them is
    taken as full frame only when its shape is the full frame.
    """
    ny, nx = shape
    names = ("SUBSTRT1", "SUBSTRT2", "SUBSIZE1", "SUBSIZE2")
    keys = [_number(h, k, "geometry") for k in names]
    if any(k is None for k in keys):
        if (ny, nx) == tuple(frame_shape):
            return 0, 0
        raise Rejected(f"no SUBSTRT1/2, SUBSIZE1/2 keywords and SCI shape {shape} is not the full frame", "geometry")
    for k, v in zip(names, keys, strict=True):
        if v != int(v) or abs(v) > 1e6:
            raise Rejected(f"{k} = {h[k]!r} is not a whole number of pixels", "geometry")
    x1, y1, sx, sy = (int(k) for k in keys)
    if (sy, sx) != (ny, nx):
        raise Rejected(f"SCI shape {ny}x{nx} (rows x columns) does not match SUBSIZE2 x SUBSIZE1 = {sy}x{sx}",
                       "geometry")
    y0, x0 = y1 - 1, x1 - 1
    if y0 < 0 or x0 < 0 or y0 + ny > frame_shape[0] or x0 + nx > frame_shape[1]:
        raise Rejected(
            f"subarray rows {y0}:{y0 + ny}, columns {x0}:{x0 + nx} (from SUBSTRT/SUBSIZE) fall outside "
            f"the {frame_shape[0]}x{frame_shape[1]} frame", "geometry"
        )
    return y0, x0


def kept_integrations(sci: np.ndarray, err: np.ndarray, dq: np.ndarray, clip: float = 5.0) -> np.ndarray:
    """(nints, ny, nx) bool: the integrations :func:`combine_integrations` keeps.

    An integration flagged DO_NOT_USE or non-finite is dropped; with three or more usable
    integrations, one deviating from their median by more than ``clip`` times its own ERR (a
    cosmic-ray residual, a jump) is dropped too, as long as such integrations are fewer than
    half of the usable ones (a pixel that switches between levels keeps all its integrations).
    """
    sci = np.asarray(sci, dtype=np.float64)
    err = np.asarray(err, dtype=np.float64)
    dq = np.asarray(dq).astype(np.uint32)
    usable = np.isfinite(sci) & np.isfinite(err) & ((dq & flags.DO_NOT_USE) == 0)
    n_usable = usable.sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
        med = np.nanmedian(np.where(usable, sci, np.nan), axis=0)
    with np.errstate(invalid="ignore"):
        outlier = usable & (n_usable >= 3) & (np.abs(sci - med) > clip * np.where(err > 0, err, np.inf))
    # Outliers are a minority by definition: where clipping would drop half or more of the
    # usable integrations (a pixel switching between levels), keep them all.
    outlier &= (2 * outlier.sum(axis=0) < n_usable)
    return usable & ~outlier


def combine_integrations(
    sci: np.ndarray, err: np.ndarray, dq: np.ndarray, clip: float = 5.0, keep: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Combine (nints, ny, nx) integration slopes into one slope image, robustly.

    Integrations of one exposure share one integration time, so the plain mean is the unbiased
    estimator (an inverse-variance mean with pipeline ERR, which grows with the measured
    signal, would bias faint pixels low). Robustness: the integrations of
    :func:`kept_integrations` (``keep``, computed here when not given). ERR = sqrt(sum ERR_i^2) / n over the kept integrations. DQ = OR of the kept
    integrations' bits; DO_NOT_USE only where no integration was kept.
    """
    if keep is None:
        keep = kept_integrations(sci, err, dq, clip)
    sci = np.asarray(sci, dtype=np.float64)
    err = np.asarray(err, dtype=np.float64)
    dq = np.asarray(dq).astype(np.uint32)
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


#: fewest kept integrations of a pixel for its scatter between them (2 degrees of freedom)
MIN_SCATTER_INTEGRATIONS = 3
#: low mantissa bits of the stored float16 scatter rounded off (7 of 10: within 6 %, 2.7 % rms,
#: unbiased; the statistic's own noise is sqrt(2 / dof), 25 % or more for up to 33 integrations),
#: so it compresses to ~0.8 byte per pixel instead of 2 (docs/storage.md)
SCATTER_DROP_BITS = 7


def scatter_integrations(sci: np.ndarray, err: np.ndarray, dq: np.ndarray, clip: float = 5.0) -> np.ndarray:
    """(nints, ny, nx) bool: the integrations :func:`integration_scatter` judges: the usable ones
    (finite, ERR > 0, not DO_NOT_USE) less at most ONE, the farthest from their median, where it
    is more than ``clip`` times its ERR from it and 3 others remain (a cosmic-ray residual). Not
    :func:`kept_integrations`: a telegraph pixel high in a few integrations of an exposure (fewer
    than half) would lose all of them to that clip, and with them the scatter it shows; two
    cosmic rays in one pixel within one exposure are rare enough to be the screen's trim's job."""
    sci = np.asarray(sci, dtype=np.float64)
    err = np.asarray(err, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(sci) & np.isfinite(err) & (err > 0) & ((np.asarray(dq).astype(np.uint32)
                                                                     & flags.DO_NOT_USE) == 0)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
        med = np.nanmedian(np.where(usable, sci, np.nan), axis=0)
        dev = np.where(usable, np.abs(sci - med) / np.where(usable, err, 1.0), -1.0)
    worst = np.argmax(dev, axis=0)
    far = (np.take_along_axis(dev, worst[None], axis=0)[0] > clip) & (usable.sum(axis=0) >= 4)
    drop = np.zeros_like(usable)
    np.put_along_axis(drop, worst[None], far[None], axis=0)
    return usable & ~drop


def integration_scatter(sci: np.ndarray, err: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """(ny, nx) float16: the reduced chi-square of the integrations' slopes about their mean,
    ``sum_i (sci_i - mean)^2 / ERR_i^2 / (n - 1)`` over the ``n`` integrations ``keep`` (from
    :func:`scatter_integrations`: one integration hit by a cosmic ray is dropped before, so it
    does not make the scatter high). A normal pixel has ~1 (chi-square of ``n - 1`` degrees of
    freedom over ``n - 1``), a pixel noisy or switching between its integrations more. NaN with
    fewer than :data:`MIN_SCATTER_INTEGRATIONS` kept. Stored as float16 with its low mantissa bits
    rounded off (:data:`SCATTER_DROP_BITS`); values beyond float16's range are kept as its largest.
    """
    sci = np.asarray(sci, dtype=np.float64)
    err = np.asarray(err, dtype=np.float64)
    keep = np.asarray(keep, bool) & (err > 0)
    n = keep.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(keep, sci, 0.0).sum(axis=0) / n
        chi2 = np.where(keep, (sci - mean) ** 2 / np.where(keep, err, 1.0) ** 2, 0.0).sum(axis=0)
        q = chi2 / (n - 1)
    q = np.where(n >= MIN_SCATTER_INTEGRATIONS, np.minimum(q, 60000.0), np.nan)
    return round_float16(q)


def round_float16(q: np.ndarray, drop: int = SCATTER_DROP_BITS) -> np.ndarray:
    """``q`` as float16 with its ``drop`` lowest mantissa bits rounded (to nearest) off."""
    h = np.asarray(q, np.float16)
    fin = np.isfinite(h)
    bits = h.view(np.uint16).copy()
    half = np.uint16(1 << (drop - 1)) if drop else np.uint16(0)
    mask = np.uint16((0xFFFF << drop) & 0xFFFF)
    bits[fin] = (bits[fin] + half) & mask
    out = bits.view(np.float16)
    out[fin & ~np.isfinite(out)] = np.float16(np.finfo(np.float16).max)  # rounded past the largest
    return out


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
    """The product a JWST file name says (rate, rateints, cal, calints), else "unknown"."""
    m = re.search(r"_(rate|rateints|cal|calints)\.fits(\.gz)?$", name)
    return m.group(1) if m else "unknown"


#: calibration steps after the slope fit that change SCI beyond a scalar factor (cal_step
#: keywords of the stdatamodels core schema): a product with any of them COMPLETE cannot be
#: converted back to DN/s from its header
_PIXEL_STEPS = {"S_BKDSUB": "background subtraction", "S_FLAT": "flat field", "S_STRAY": "straylight",
                "S_FRINGE": "fringe", "S_RESFRI": "residual fringe", "S_PTHLOS": "path loss",
                "S_BARSHA": "bar shadow", "S_IMPRNT": "imprint subtraction", "S_PXREPL": "pixel replacement",
                "S_SKYMAT": "sky matching", "S_TELEMI": "telescope emission", "S_MSBSUB": "MSA background"}


def _complete(ph, key: str) -> bool:
    return str(ph.get(key, "")).strip().upper() == "COMPLETE"


#: spellings of the slope unit seen in headers (compared without spaces, in lower case): astropy
#: would read "DN/S" as DN per siemens
_SLOPE_UNIT = {"dn/s", "dn/sec", "dn/second", "dns-1", "dns**-1", "dn.s-1", "dn.s**-1", "dns^-1"}


def normalise_unit(text: str) -> str:
    """``DN/s`` for any spelling of the slope unit (``dn/s``, ``DN/S``, ``DN / s``), else ``text``."""
    return "DN/s" if re.sub(r"\s+", "", str(text)).lower() in _SLOPE_UNIT else str(text)


def unit_factor(bunit: str | None, cube_unit: str, ph, sci_header, photom: str = "per-pixel") -> tuple[float, str]:
    """(factor, note): SCI and ERR times ``factor`` are in the cube's unit; Rejected if no
    header gives it.

    Same unit (``DN/s`` in any case or spacing): 1. Units astropy converts (``Jy/sr`` into
    ``MJy/sr``): its factor. Surface brightness (``MJy/sr``) into ``DN/s``: the pipeline's photom
    step multiplied the slopes by the SCI header's PHOTMJSR ((MJy/sr) / (DN/s)), and that is
    the whole conversion only where the mode's photom is ``scalar`` (imaging; for LRS and MRS
    it is PHOTMJSR times a wavelength-dependent or 2-D response) and no step after the slope
    fit changed pixels otherwise (flat field, background, ...: ``_PIXEL_STEPS``). Then
    factor = 1 / PHOTMJSR; otherwise the product is Rejected, naming what stands in the way.
    """
    import astropy.units as u

    if bunit is None:
        if _complete(ph, "S_PHOTOM"):
            raise Rejected("calibrated product (S_PHOTOM = COMPLETE) with no BUNIT on SCI: its unit is unknown", "unit")
        bunit = "DN/s"  # slope products of pipelines that did not write BUNIT
    try:
        have, want = u.Unit(normalise_unit(bunit)), u.Unit(normalise_unit(cube_unit))
    except ValueError:
        raise Rejected(f"SCI unit BUNIT = {bunit!r} is not a unit astropy knows (e.g. DN/s, MJy/sr)", "unit") from None
    if have == want:
        return 1.0, ""
    if have.is_equivalent(want):
        return float(have.to(want)), f"converted from {bunit} to {cube_unit}"
    if have.is_equivalent(u.MJy / u.sr) and want.is_equivalent(u.DN / u.s):
        hint = "; ingest its _rate/_rateints product instead"
        if photom != "scalar":
            raise Rejected(f"SCI unit {bunit}: in this mode the photom step multiplied the slopes by PHOTMJSR "
                           "times a wavelength-dependent (or 2-D) response that no header keyword gives, "
                           f"so {cube_unit} cannot be recovered{hint}", "unit")
        done = [what for key, what in _PIXEL_STEPS.items() if _complete(ph, key)]
        if done:
            raise Rejected(f"SCI unit {bunit} after {', '.join(done)} (S_* = COMPLETE): PHOTMJSR alone does not "
                           f"undo that, so {cube_unit} cannot be recovered{hint}", "unit")
        phot = _number(sci_header, "PHOTMJSR", "unit")
        if phot is None or phot <= 0:
            raise Rejected(f"SCI unit {bunit} without a positive PHOTMJSR on SCI to convert it to {cube_unit}{hint}",
                           "unit")
        return float(have.to(u.MJy / u.sr)) / phot * float((u.DN / u.s).to(want)), \
            f"converted from {bunit} to {cube_unit} with PHOTMJSR = {phot:g}"
    raise Rejected(f"SCI unit {bunit!r} cannot be converted to the cube's {cube_unit!r}", "unit")


# --------------------------------------------------------------------------- validating a file
# The one home of what makes a file a slope product lrscube can read: ingest (read_product) and
# apply (masks.apply) open and check files here, so both reject a bad file for the same reason.


def _local(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def open_fits(path: str, *, in_memory: bool = False) -> tuple[fits.HDUList, int]:
    """Open a local path or fsspec URL as an HDUList (and its size in bytes), or raise Rejected
    naming why no product can be read from it: not found, a directory, unreadable, empty, not
    FITS, truncated or corrupt.

    ``in_memory``: read the whole file and every HDU's data now (apply, which rewrites the file);
    otherwise a data plane is read when it is used (ingest reads SCI, ERR and DQ only).
    """
    try:
        if "://" not in path and os.path.getsize(_local(path)) == 0:
            raise Rejected("empty file (0 bytes)", "empty file")
        hdul, size = _open(path, in_memory)
    except FileNotFoundError:
        raise Rejected("file not found", "not found") from None
    except IsADirectoryError:
        raise Rejected("a directory, not a file", "not FITS") from None
    except PermissionError as e:
        raise Rejected(f"cannot be read: {e.strerror or e}", "unreadable") from None
    except Rejected:
        raise
    except Exception as e:  # astropy raises OSError/TypeError/ValueError for junk
        raise Rejected(f"not a readable FITS file ({type(e).__name__}: {e})", "not FITS") from None
    if size == 0:
        hdul.close()
        raise Rejected("empty file (0 bytes)", "empty file")
    return hdul, size


def _source(path: str, in_memory: bool):
    """A file object to open ``path`` from, and its size."""
    if in_memory or ("://" in path and not path.startswith("file://")):
        fs, p = fs_and_path(path)
        with fs.open(p, "rb") as f:
            data = f.read()
        return io.BytesIO(data), len(data)
    local = _local(path)
    size = os.path.getsize(local)
    src = open(local, "rb")
    if hasattr(os, "posix_fadvise"):
        # No kernel readahead: astropy reads each data plane in one call, and readahead
        # past DQ pulls in the planes ingest never reads (VAR_POISSON, VAR_RNOISE): 12.7
        # instead of 21.2 MB from disk per full-frame rate file (benchmarks/bench_read.py).
        os.posix_fadvise(src.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
    return src, size


def _open(path: str, in_memory: bool):
    """Open ``path`` as an HDUList; a truncated file is Rejected here."""
    src, size = _source(path, in_memory)
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
            raise Rejected(f"truncated FITS file ({text.splitlines()[0]})", "truncated")
    if in_memory:
        _load_every_hdu(hdul)
    return hdul, size


def _load_every_hdu(hdul: fits.HDUList) -> None:
    try:
        for h in hdul:
            _ = h.data
    except Exception as e:
        hdul.close()
        raise Rejected(f"truncated or corrupt FITS ({type(e).__name__}: {e})", "corrupt") from None


def check_layout(hdul: fits.HDUList) -> list[str]:
    """The extension names, if the headers are those of a level-2 slope product: not a
    reference file, not a raw ramp, a 2-D or 3-D SCI extension (raises Rejected)."""
    names = [h.name for h in hdul]
    reftype = hdul[0].header.get("REFTYPE")
    if reftype is not None:
        raise Rejected(f"a reference file (REFTYPE {str(reftype).strip()}), not an exposure", "reference file")
    if "REFOUT" in names:
        raise Rejected(
            "raw ramp product (level 1b: REFOUT extension); lrscube reads slope products "
            "(_rate, _rateints, _cal, _calints); to mask ramps, run the pipeline with "
            "--steps.dq_init.override_mask", "raw ramp"
        )
    if "SCI" not in names:
        raise Rejected(f"not an exposure: no SCI extension (extensions: {names})", "not an exposure")
    naxis = hdul["SCI"].header.get("NAXIS", 0)
    if naxis == 4:
        raise Rejected("raw ramp product (4-D SCI: integrations x groups); lrscube reads slope products",
                       "raw ramp")
    if naxis not in (2, 3):
        raise Rejected(f"SCI has {naxis} dimensions; a slope product has 2 (rate) or 3 (rateints)", "not an exposure")
    return names


def check_planes(hdul: fits.HDUList, planes=("SCI", "ERR", "DQ")) -> tuple[np.ndarray, ...]:
    """The data of ``planes``, if every one is there with data and all have one shape (raises
    Rejected)."""
    names = [h.name for h in hdul]
    missing = [p for p in planes if p not in names or hdul[p].data is None]
    if missing:
        raise Rejected(f"{' and '.join(missing)} extension{'s' if len(missing) > 1 else ''} missing or empty "
                       f"(extensions: {names})", "not an exposure")
    data = tuple(hdul[p].data for p in planes)
    if len({a.shape for a in data}) > 1:
        shapes = ", ".join(f"{p} {a.shape}" for p, a in zip(planes, data))
        raise Rejected(f"shapes differ: {shapes}", "geometry")
    return data


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
LEGACY_CONTENT_HASH = "blake2b-128"


def _xxh3_128(buf) -> str:
    import xxhash

    return xxhash.xxh3_128_hexdigest(buf)


def content_hash(sci: np.ndarray, algorithm: str = DEFAULT_CONTENT_HASH) -> str:
    """Hash of SCI's bytes as stored in the file (big-endian), hashed in place without a copy."""
    if algorithm not in CONTENT_HASHES:
        raise ValueError(f"unknown content hash {algorithm!r} (known: {sorted(CONTENT_HASHES)})")
    return CONTENT_HASHES[algorithm](np.ascontiguousarray(sci))


def read_product(path: str, profile: Profile, clip: float = 5.0, hash_algorithm: str = DEFAULT_CONTENT_HASH,
                 unit: str | None = None) -> Exposure:
    """Read one slope product into an :class:`Exposure` in the cube's unit, or raise Rejected.

    ``unit``: the unit of the cube it goes into (default the profile's, ``profile.unit``);
    ``hash_algorithm``: the cube's content hash (:data:`CONTENT_HASHES`). Whatever the file
    holds, the outcome is an Exposure or a Rejected naming the reason: an unforeseen error in
    reading it is a rejection too (kind "error"), never an exception of another type.
    """
    path = str(path)
    try:
        return _read_product(path, profile, clip, hash_algorithm, unit or profile.unit)
    except Rejected:
        raise
    except Exception as e:
        raise Rejected(f"could not be read ({type(e).__name__}: {e})", "error") from None


def _read_product(path: str, profile: Profile, clip: float, hash_algorithm: str, unit: str) -> Exposure:
    hdul, _ = open_fits(path)
    with hdul:
        try:
            return _exposure(hdul, path, profile, clip, hash_algorithm, unit)
        except Rejected:
            raise
        except Exception as e:
            raise Rejected(f"truncated or corrupt FITS ({type(e).__name__}: {e})", "corrupt") from None


def _product(name: str, ndim: int, ph) -> str:
    """rate / rateints / cal / calints: from the file name where it says, else from the content
    (3-D SCI: per integration; S_PHOTOM COMPLETE: calibrated); Rejected where they disagree."""
    kind = product_kind(name)
    per_int = kind in ("rateints", "calints")
    if kind != "unknown":
        if ndim == 3 and not per_int:
            raise Rejected(f"3-D SCI in a _{kind} file: a _{kind} product holds one 2-D slope image", "values")
        if ndim == 2 and per_int:
            raise Rejected(f"2-D SCI in a _{kind} file: a _{kind} product holds one image per integration", "values")
        return kind
    calibrated = _complete(ph, "S_PHOTOM")
    return ("calints" if calibrated else "rateints") if ndim == 3 else ("cal" if calibrated else "rate")


def check_values(sci: np.ndarray, err: np.ndarray, dq: np.ndarray) -> None:
    """Rejected unless the planes hold what a slope product holds: SCI and ERR floating point,
    SCI finite somewhere, ERR never negative and positive somewhere SCI is finite, DQ integer
    bits (no negative values: a signed DQ without BZERO), not empty."""
    if sci.size == 0:
        raise Rejected(f"SCI is empty (shape {sci.shape})", "values")
    for name, a in (("SCI", sci), ("ERR", err)):
        if a.dtype.kind != "f":
            raise Rejected(f"{name} holds {a.dtype.name} values: a slope product holds floating point (float32)",
                           "values")
    if dq.dtype.kind not in "iu":
        raise Rejected(f"DQ holds {dq.dtype.name} values: DQ is integer bits (uint32)", "values")
    if dq.dtype.kind == "i" and dq.size and dq.min() < 0:
        raise Rejected("DQ holds negative values: not DQ bits (a signed DQ written without BZERO?)", "values")
    if dq.dtype.itemsize > 4 and dq.size and dq.max() > np.iinfo(np.uint32).max:
        raise Rejected("DQ holds values beyond 32 bits: not JWST DQ bits", "values")
    finite = np.isfinite(sci)
    if not finite.any():
        raise Rejected("SCI holds no finite value (all NaN or infinite)", "values")
    with np.errstate(invalid="ignore"):
        if (err < 0).any():
            raise Rejected("ERR holds negative values", "values")
        if not (finite & (err > 0)).any():
            raise Rejected("ERR is zero, NaN or infinite wherever SCI is finite: no usable uncertainty", "values")


def _exposure(hdul, path: str, profile: Profile, clip: float, hash_algorithm: str, unit: str) -> Exposure:
    check_layout(hdul)
    ph = hdul[0].header
    detector, exp_type, subarray = _check_mode(ph, profile)
    mid, start, exptime = exposure_times(ph)
    nints = exposure_integrations(ph)
    sci, err, dq = check_planes(hdul, ("SCI", "ERR", "DQ"))
    name = path.rstrip("/").rsplit("/", 1)[-1]
    product = _product(name, sci.ndim, ph)
    check_values(sci, err, dq)
    sci_header = hdul["SCI"].header
    factor, unit_note = unit_factor(_bunit(sci_header), unit, ph, sci_header, profile.photom)
    y0, x0 = placement(ph, sci.shape[-2:], profile.frame_shape)
    digest = content_hash(sci, hash_algorithm)
    sci, err, dq, intscat = _slope_image(sci, err, dq, clip, factor)
    meta = {
        "filename": name, "source": path, "product": product,
        "mjd": mid, "expstart": start, "exptime": exptime,
        "exp_type": exp_type, "subarray": subarray, "detector": detector,
        **_program_ids(ph),
        "nints": nints or 1,
        "y0": y0, "x0": x0, "ny": int(sci.shape[0]), "nx": int(sci.shape[1]),
        "bunit": unit, "unit_note": unit_note,
        "content_hash": digest,
        "exposure_key": exposure_key(ph, detector, start),
        "cal_ver": str(ph.get("CAL_VER", "")).strip(),
        "date_obs": Time(start, format="mjd", scale="utc").isot,
        "read_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return Exposure(sci=sci, err=err, dq=dq, y0=y0, x0=x0, meta=meta, intscat=intscat)


def _check_mode(ph, profile: Profile) -> tuple[str | None, str | None, str | None]:
    """DETECTOR, EXP_TYPE and SUBARRAY, if the instrument and these are the profile's (raises
    Rejected)."""
    instrument = _upper(ph.get("INSTRUME"))
    if instrument != profile.instrument:
        raise Rejected(f"instrument {instrument!r}, not {profile.instrument} (mode profile {profile.name!r})",
                       "other instrument")
    detector, exp_type, subarray = (_upper(ph.get(k)) for k in ("DETECTOR", "EXP_TYPE", "SUBARRAY"))
    why = profile.accepts(detector, exp_type, subarray)
    if why:
        raise Rejected(why, "not in this mode")
    return detector, exp_type, subarray


def _bunit(sci_header) -> str | None:
    raw = sci_header.get("BUNIT")
    return None if raw is None or isinstance(raw, fits.card.Undefined) else str(raw).strip()


def _slope_image(sci, err, dq, clip: float, factor: float):
    """One 2-D slope image (integrations combined), float32 SCI/ERR in the cube's unit, uint32 DQ,
    and the scatter between the integrations (:func:`integration_scatter`: unit-free; None for a
    2-D product or fewer than :data:`MIN_SCATTER_INTEGRATIONS` integrations)."""
    intscat = None
    if sci.ndim == 3:
        keep = kept_integrations(sci, err, dq, clip)
        if sci.shape[0] >= MIN_SCATTER_INTEGRATIONS:
            intscat = integration_scatter(sci, err, scatter_integrations(sci, err, dq, clip))
        sci, err, dq = combine_integrations(sci, err, dq, clip=clip, keep=keep)
    else:
        # float32 in the file's (big-endian) byte order stays as it is: the shard
        # encoder converts chunk by chunk as it copies, so no whole-frame copy here
        sci, err = (a if a.dtype.kind == "f" and a.itemsize == 4 else a.astype(np.float32)
                    for a in (sci, err))
        # DQ may be int32 with BZERO=2**31 on disk; astropy rescales to uint32, we keep
        # the bits
        dq = np.asarray(dq, dtype=np.uint32)
    if factor != 1.0:
        sci, err = (np.asarray(a, dtype=np.float32) * np.float32(factor) for a in (sci, err))
    return sci, err, dq, intscat


def _program_ids(ph) -> dict[str, str]:
    return {meta: str(ph.get(key, "")).strip() for meta, key in
            (("program", "PROGRAM"), ("observation", "OBSERVTN"), ("visit", "VISIT"), ("exposure", "EXPOSURE"))}
