"""Apply the mask cube to products already processed: OR the right epoch into their DQ.

For each rate / rateints / cal / calints file (:func:`apply_mask`)::

    read (local or fsspec URL, fully, so a truncated file shows here)
      -> check: FITS, slope product (not a raw ramp), INSTRUME and DETECTOR of the mask cube
      -> times: start from EXPSTART (else DATE-OBS/TIME-OBS), mid-time from EXPMID (else
         start + EFFEXPTM/2) -- the same rule as ingest (lrscube.intake.products.exposure_times)
      -> epoch: the latest epoch start at or before the exposure START (the CRDS rule)
      -> cut the subarray (SUBSTRT1/2, SUBSIZE1/2, 1-based), OR into DQ (2-D or 3-D)
      -> optionally SCI (and ERR, VAR_*) = NaN where the applied mask has DO_NOT_USE
      -> header: LRSC* keywords + HISTORY; write a new file (input untouched unless in_place)

A file that cannot be used is reported with the reason and the others go on.
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd
from astropy.io import fits

from ..config import flags
from . import maskcube as mc
from ..storage import store as st
from ..intake.inputs import expand as expand_inputs
from ..intake.products import (Rejected, check_layout, check_planes, date_obs_text, exposure_times, open_fits,
                               placement)
from .. import __version__

#: the suffix of new files written beside their input when no ``out`` folder is given
OUT_SUFFIX = "_lrscube"
#: extensions set to NaN with ``set_nan`` (those present)
NAN_EXTENSIONS = ("SCI", "ERR", "VAR_POISSON", "VAR_RNOISE", "VAR_FLAT")


@dataclass
class ApplyResult:
    """Per-file outcome of :func:`apply_mask`; ``ok`` is False when any file was rejected."""

    files: list[dict[str, Any]] = field(default_factory=list)

    @property
    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.files)

    @property
    def ok(self) -> bool:
        return all(f["status"] == "applied" for f in self.files)

    @property
    def exit_code(self) -> int:
        """0: no file rejected (applied, or skipped: before the mask's validity); 3: some
        rejected; 4: every file rejected. The codes of ``lrscube ingest``."""
        rejected = sum(f["status"] == "rejected" for f in self.files)
        if not rejected:
            return 0
        return 4 if rejected == len(self.files) else 3

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self):
        return iter(self.files)

    def __str__(self) -> str:
        lines = []
        for f in self.files:
            if f["status"] == "applied":
                lines.append(f"applied  {f['file']} -> {f['output']}: epoch {f['epoch']} (USEAFTER {f['useafter']}), "
                             f"{f['n_pixels_changed']} pixels gained bits, {f['n_do_not_use']} DO_NOT_USE in the cut")
            else:
                lines.append(f"{f['status']:8s} {f['file']}: {f['reason']}")
        n_ok = sum(f["status"] == "applied" for f in self.files)
        lines.append(f"{n_ok} of {len(self.files)} files applied")
        return "\n".join(lines)


# --------------------------------------------------------------------------- pure pieces


def cut_mask(frame: np.ndarray, y0: int, x0: int, shape: tuple[int, int]) -> np.ndarray:
    """The part of a full-frame mask under a subarray (0-based corner, (rows, columns))."""
    ny, nx = shape
    return frame[y0:y0 + ny, x0:x0 + nx]


def or_into(dq: np.ndarray, cut: np.ndarray) -> tuple[np.ndarray, int]:
    """``dq | cut`` (cut broadcast over integrations) and the number of pixels that gained bits."""
    dq = np.asarray(dq).astype("uint32")
    new = dq | cut.astype("uint32")
    gained = np.any(new != dq, axis=tuple(range(new.ndim - 2))) if new.ndim > 2 else new != dq
    return new, int(np.count_nonzero(gained))


def start_from_date_obs(h) -> np.datetime64 | None:
    """DATE-OBS/TIME-OBS (what CRDS compares with USEAFTER) as datetime64, or None.

    Parsed to datetime64 directly, not through an MJD float, so a time exactly on an epoch
    boundary compares exactly.
    """
    text = date_obs_text(h)
    if text is None:
        return None
    try:
        return np.datetime64(text, "us")
    except ValueError:
        return None


# --------------------------------------------------------------------------- one file


def _target(path: str, out: str | None, in_place: bool) -> str:
    if in_place:
        # through a symbolic link: the file it points to is rewritten, the link stays
        return path if st.is_remote(path) else os.path.realpath(path)
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if out is None:
        stem, ext = (name[:-8], name[-8:]) if name.endswith(".fits.gz") else os.path.splitext(name)
        folder = path[: len(path) - len(name)]
        return f"{folder}{stem}{OUT_SUFFIX}{ext}"
    return st.join(out, name) if st.is_remote(out) else os.path.join(out, name)


def _key(path: str) -> str:
    return path.rstrip("/") if st.is_remote(path) else os.path.realpath(path)


def output_collisions(files: list[str], out: str | None, in_place: bool) -> dict[str, str]:
    """Inputs that must not be written, and why: two inputs whose outputs are one file (``--out
    DIR`` with two inputs of the same name), or an output that is another input of the run."""
    if in_place:
        return {}
    by_target: dict[str, list[str]] = {}
    for f in files:
        by_target.setdefault(_key(_target(f, out, False)), []).append(f)
    inputs = {_key(f): f for f in files}
    bad: dict[str, str] = {}
    for t, group in by_target.items():
        if len(group) > 1:
            for f in group:
                others = ", ".join(o for o in group if o != f)
                bad[f] = (f"output {t} would also be written for {others}: nothing written; give the inputs "
                          "distinct names or apply them in separate runs")
        elif t in inputs and inputs[t] != group[0]:
            bad[group[0]] = f"output {t} is another input of this run: nothing written"
    return bad


def write_output(target: str, data: bytes, *, like: str | None = None) -> None:
    """Write a product whole (readers see the old or the new file). On a local disk the new
    file gets the mode of ``like`` (the file it replaces), else the default; a failed write
    leaves no partial file behind."""
    if st.is_remote(target):
        st.write_bytes_atomic(target, data)
        return
    mode = None
    if like is not None and os.path.exists(like):
        mode = os.stat(like).st_mode & 0o7777
    folder, name = os.path.split(os.path.abspath(target))
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.partial")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _same_file(a: str, b: str) -> bool:
    if st.is_remote(a) or st.is_remote(b):
        return a.rstrip("/") == b.rstrip("/")
    try:
        return os.path.exists(b) and os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def apply_one(path: str, ds, frames: dict, *, out: str | None = None, in_place: bool = False,
              set_nan: bool = False, extrapolate: bool = False, store_name: str = "",
              named: bool = True) -> dict[str, Any]:
    """Apply the mask cube ``ds`` to one file; returns its status row (raises Rejected).

    ``named``: the file was named, not found in a directory or by a pattern; a file found so
    that is itself an output of apply (LRSCEPOC in its header) is skipped."""
    path = str(path)
    hdul = _open_product(path, named)
    names = [h.name for h in hdul]
    ph = hdul[0].header
    dq = hdul["DQ"].data
    _check_detector(ph, ds)
    frame_shape = tuple(mc.geometry_of(ds.attrs)["frame_shape"])
    mid, start, _ = exposure_times(ph)  # raises Rejected when no time keyword is usable
    y0, x0 = placement(ph, dq.shape[-2:], frame_shape)

    t_start = mc.mjd_to_datetime64(start)[()]
    try:
        epoch, before = mc.select_epoch(ds, t_start, extrapolate)
    except mc.BeforeValidity as e:
        raise _Skipped(str(e)) from None
    if epoch not in frames:
        frames.clear()  # keep one epoch in memory
        frames[epoch] = np.asarray(ds["dq"].isel(time=epoch).values, "uint32")
    cut = cut_mask(frames[epoch], y0, x0, dq.shape[-2:])
    new_dq, n_changed = or_into(dq, cut)
    hdul["DQ"].data = new_dq
    dnu = (cut & flags.DO_NOT_USE) != 0
    if set_nan and dnu.any():
        for ext in NAN_EXTENSIONS:
            if ext in names and hdul[ext].data is not None and np.issubdtype(hdul[ext].data.dtype, np.floating):
                arr = hdul[ext].data
                arr[..., dnu] = np.nan

    useafter = mc.useafter_of(ds, epoch)
    notes = []
    dobs = start_from_date_obs(ph)
    if dobs is not None and abs((dobs - t_start) / np.timedelta64(1, "s")) > 1.0:
        notes.append(f"EXPSTART ({mc.isot(t_start)}) and DATE-OBS/TIME-OBS ({mc.isot(dobs)}) disagree; "
                     "the epoch was chosen with EXPSTART, as ingest does (CRDS would use DATE-OBS)")
    if before:
        notes.append(f"exposure starts before the first epoch ({mc.isot(ds['time'].values[0])}); first epoch used")
    if "LRSCEPOC" in ph:
        notes.append("file already had an lrscube mask (LRSCEPOC); bits ORed again")

    _stamp(ph, ds, epoch, useafter, t_start, n_changed, set_nan, store_name, y0, x0, dq.shape)
    target = _write(hdul, path, out, in_place)
    return {
        "file": path, "status": "applied", "reason": "; ".join(notes), "output": target,
        "epoch": int(epoch), "useafter": useafter, "epoch_start": mc.isot(ds["time"].values[epoch]),
        "start": mc.isot(t_start), "mjd": float(mid), "subarray": str(ph.get("SUBARRAY", "")).strip(),
        "n_pixels_changed": n_changed, "n_do_not_use": int(np.count_nonzero(dnu)),
    }


def _open_product(path: str, named: bool) -> fits.HDUList:
    """The file as an HDU list, if it is a slope product apply can take (raises Rejected/_Skipped):
    opened and checked as ingest checks it (``intake.products``), ERR not needed."""
    hdul, _ = open_fits(path, in_memory=True)
    try:
        if "LRSCEPOC" in hdul[0].header and not named:
            raise _Skipped("an output of lrscube apply (LRSCEPOC set) found beside its input; "
                           "name it explicitly to apply a mask to it again")
        check_layout(hdul)
        check_planes(hdul, ("SCI", "DQ"))
    except BaseException:
        hdul.close()
        raise
    return hdul


def _check_detector(ph, ds) -> None:
    """The file is from the instrument and a detector the mask cube is for (raises Rejected)."""
    instrument = str(ph.get("INSTRUME", "")).strip().upper()
    geometry = mc.geometry_of(ds.attrs)
    want = str(geometry["instrument"]).upper()
    if instrument != want:
        raise Rejected(f"instrument {instrument or 'missing'!r}, but the mask cube is for {want}")
    detector = str(ph.get("DETECTOR", "")).strip().upper()
    dets = [str(d).upper() for d in ds.attrs.get("detectors", [])]
    if dets and detector not in dets:
        raise Rejected(f"detector {detector or 'missing'!r}, but the mask cube is for {dets}")


def _stamp(ph, ds, epoch, useafter, t_start, n_changed, set_nan, store_name, y0, x0, shape) -> None:
    """The keywords and HISTORY that say which lrscube mask epoch a file got."""
    ph["LRSCVER"] = (__version__, "lrscube version that applied its mask")
    ph["LRSCEPOC"] = (int(epoch), "lrscube mask epoch applied (0-based)")
    ph["LRSCUSEA"] = (useafter, "USEAFTER of that epoch")
    ph["LRSCESTA"] = (mc.isot(ds["time"].values[epoch]), "start of that epoch")
    ph["LRSCTIME"] = (mc.isot(t_start), "exposure start that chose it")
    ph["LRSCNPIX"] = (n_changed, "pixels whose DQ gained bits from lrscube")
    ph["LRSCNAN"] = (bool(set_nan), "SCI NaN where lrscube set DO_NOT_USE")
    ph["LRSCSTOR"] = (str(store_name)[-45:], "lrscube store")
    ph.add_history(f"lrscube {__version__}: ORed time-variable bad-pixel mask epoch {epoch} "
                   f"(USEAFTER {useafter}) into DQ, subarray rows {y0}:{y0 + shape[-2]}, "
                   f"columns {x0}:{x0 + shape[-1]}; {n_changed} pixels gained bits"
                   + ("; SCI/ERR/VAR set to NaN at DO_NOT_USE." if set_nan else "."))


def _write(hdul, path: str, out, in_place: bool) -> str:
    """Write the product to its target (a new file, or the input in place); returns the target."""
    target = _target(path, out, in_place)
    if not in_place and _same_file(path, target):
        raise Rejected(f"output {target} is the input file; use in_place=True (--in-place) or another out folder")
    if in_place and not st.is_remote(target):
        mode = os.stat(target).st_mode
        if not mode & 0o222 or not os.access(target, os.W_OK):
            raise Rejected(f"{target} is read-only (mode {mode & 0o777:04o}): not modified; make it writable "
                           "to apply in place, or write new files (--out)")
    if out is not None and not st.is_remote(out):
        os.makedirs(out, exist_ok=True)
    buf = io.BytesIO()
    checksum = any("CHECKSUM" in h.header for h in hdul)
    hdul.writeto(buf, checksum=checksum, output_verify="silentfix")
    write_output(target, buf.getvalue(), like=target)
    return target


class _Skipped(Exception):
    """A readable file the mask makes no claim about (its time is before the mask's validity)."""


def apply_mask(store: str, files: Iterable[str] | str, out: str | None = None, in_place: bool = False,
               set_nan: bool = False, extrapolate: bool = False) -> ApplyResult:
    """OR the right epoch of the mask cube into the DQ of existing products.

    Parameters
    ----------
    store : str
        lrscube store with a mask cube.
    files : str or list of str
        rate / rateints / cal / calints files: paths, fsspec URLs, folders (every FITS file under
        them) or globs, expanded as ingest expands them (:func:`lrscube.intake.inputs.expand`).
    out : str, optional
        Folder for the new files (same names). Default: beside each input as ``NAME_lrscube.fits``.
    in_place : bool
        Rewrite the inputs themselves (atomically) instead.
    set_nan : bool
        Also set SCI (and ERR, VAR_*) to NaN where the applied mask has DO_NOT_USE.
    extrapolate : bool
        Use the first epoch for exposures before the mask's ``valid_from`` (else skipped).

    Returns an :class:`ApplyResult` (``.files`` rows, ``.table`` DataFrame, ``.ok``).

    Example::

        >>> res = apply_mask("run.zarr", ["jw01234_rateints.fits"], out="masked/")  # doctest: +SKIP
        >>> print(res)  # doctest: +SKIP
    """
    if in_place and out is not None:
        raise ValueError("give out=FOLDER or in_place=True, not both")
    if isinstance(files, (str, os.PathLike)):
        files = [str(files)]
    ds = mc.open_mask(store)
    frames: dict[int, np.ndarray] = {}
    result = ApplyResult()
    found = expand_inputs(files)  # the rule ingest uses: directories give every FITS file under them
    for path, why in found.problems:
        result.files.append({"file": path, "status": "rejected", "reason": why})
    clashes = output_collisions(found.files, out, in_place)
    for path in found.files:
        try:
            if path in clashes:
                raise Rejected(clashes[path])
            row = apply_one(path, ds, frames, out=out, in_place=in_place, set_nan=set_nan,
                            extrapolate=extrapolate, store_name=str(store), named=path in found.named)
        except Rejected as e:
            row = {"file": path, "status": "rejected", "reason": str(e)}
        except _Skipped as e:
            row = {"file": path, "status": "skipped", "reason": str(e)}
        except OSError as e:  # permission denied, disk full, ...: this file is not written, the others go on
            row = {"file": path, "status": "rejected", "reason": f"{e.filename or path}: {e.strerror or e}"}
        except Exception as e:  # anything unforeseen: name it, go on with the others
            row = {"file": path, "status": "rejected", "reason": f"{type(e).__name__}: {e}"}
        result.files.append(row)
    return result
