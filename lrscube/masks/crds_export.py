"""CRDS export: a delivery of full-frame MASK reference files, plus a manifest, recorded in the store.

Composition (:func:`export_crds`)::

    epochs: the delivery rule's plan from the intervals (lrscube.masks.delivery_rule), or with
            every_epoch the mask cube's epochs (re-planned when the limits differ from the cube's)
      -> frames: epoch dq | baseline | REFERENCE_PIXEL columns
      -> MaskModel per file (DQ_DEF from stdatamodels' dqflags, all CRDS keywords, HISTORY with
         the runs it came from), written to a staging folder
      -> validate_delivery (lrscube.masks.delivery_checks): every file and the set; refuse if any fails
      -> files put in place; manifest JSON + CSV: USEAFTER, counts per flag, changes from the
         previous file, cost; the delivery recorded in the store (lrscube.masks.deliveries)

USEAFTER of file k is its epoch's start (first exposure start rounded down to the second); the
first file's USEAFTER is the mask cube's ``valid_from`` (default: the first exposure's date,
00:00:00), so CRDS, ``lrscube mask-at`` and ``lrscube apply`` choose the same mask for every
exposure from ``valid_from`` on (see :mod:`lrscube.masks.maskcube`).
"""

from __future__ import annotations

import csv
import getpass
import hashlib
import inspect
import io
import json
import logging
import os
import re
import tempfile
import textwrap
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ..config import flags, profiles
from . import deliveries as dl, maskcube as mc
from ..storage import provenance
from ..storage import store as st
from .. import __version__
from .delivery_checks import InvalidDeliveryError, validate_delivery
from .delivery_rule import DeliveryRule

log = logging.getLogger(__name__)

PEDIGREE_RE = re.compile(r"^(GROUND|DUMMY|SIMULATION|MODEL|INFLIGHT \d{4}-\d{2}-\d{2} \d{4}-\d{2}-\d{2})$")
FILE_RE = r"_\d{4}\.fits$"


# --------------------------------------------------------------------------- pure pieces


def _flag_descriptions() -> dict[str, str]:
    """Descriptions of the DQ bits from the comments in stdatamodels' dqflags source."""
    from stdatamodels.jwst.datamodels import dqflags

    try:
        src = inspect.getsource(dqflags)
    except (OSError, TypeError):
        return {}
    return {m.group(1): m.group(2).strip() for m in re.finditer(r'"(\w+)":\s*2\s*\*\*\s*\d+,\s*#\s*(.+)', src)}


def dq_def_table() -> np.ndarray:
    """The DQ_DEF table: every pixel bit of stdatamodels' ``dqflags.pixel`` (BIT, VALUE, NAME, DESCRIPTION)."""
    desc = _flag_descriptions()
    rows = [(int(v).bit_length() - 1, int(v), k, desc.get(k, k.replace("_", " ").capitalize())[:80])
            for k, v in flags.PIXEL.items()]
    return np.array(rows, dtype=[("BIT", "<i4"), ("VALUE", "<u4"), ("NAME", "S40"), ("DESCRIPTION", "S80")])


def check_pedigree(pedigree: str) -> str:
    p = " ".join(str(pedigree).split()).upper()
    if not PEDIGREE_RE.match(p):
        raise ValueError(f"PEDIGREE {pedigree!r} is not one of GROUND, DUMMY, SIMULATION, MODEL or "
                         f"'INFLIGHT YYYY-MM-DD YYYY-MM-DD'")
    return p


def flag_counts(frame: np.ndarray) -> dict[str, int]:
    """Pixels with each bit set (only bits that occur)."""
    return mc.mask_counts(frame)


def flag_changes(prev: np.ndarray | None, cur: np.ndarray) -> tuple[dict[str, int], dict[str, int]]:
    """Pixels that gained (added) and lost (removed) each bit from ``prev`` to ``cur``."""
    if prev is None:
        return flag_counts(cur), {}
    changed = prev != cur
    gained = cur[changed] & ~prev[changed]
    lost = prev[changed] & ~cur[changed]
    return flag_counts(gained[gained != 0]), flag_counts(lost[lost != 0])


def reference_pixel_frame(frame_shape, geometry: dict) -> np.ndarray:
    """The reference pixels' DQ bits (a mask cube's ``geometry_of``: rows, columns, bits)."""
    out = np.zeros(frame_shape, "uint32")
    bits = np.uint32(geometry.get("reference_pixel_bits", flags.REFERENCE_PIXEL))
    for c0, c1 in geometry.get("reference_columns", ()):
        out[:, int(c0):int(c1)] = bits
    for r0, r1 in geometry.get("reference_rows", ()):
        out[int(r0):int(r1), :] = bits
    return out


def read_baseline(path: str, frame_shape, detector: str | None = None) -> np.ndarray:
    """A static MASK file's full-frame DQ (bits mapped to the standard ones by its DQ_DEF)."""
    from stdatamodels.jwst import datamodels

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = datamodels.MaskModel(str(path))
    except Exception as e:
        raise ValueError(f"baseline {path}: not a readable MASK reference file ({type(e).__name__}: {e})") from None
    with m:
        dq = np.asarray(m.dq, "uint32")
        det = m.meta.instrument.detector
        if detector and det and str(det).upper() not in (detector.upper(), "ANY", "N/A"):
            raise ValueError(f"baseline {path}: DETECTOR {det}, but the mask cube is for {detector}")
        if dq.shape != tuple(frame_shape):
            raise ValueError(f"baseline {path}: DQ shape {dq.shape} is not the full frame {tuple(frame_shape)}; "
                             "use a full-frame (SUBARRAY=FULL) MASK file")
        return dq.copy()


def mask_model(dq: np.ndarray, *, useafter: str, author: str, pedigree: str, description: str,
               instrument: str, detector: str, history: list[str], axes: tuple[int, int],
               keywords: dict | None = None):
    """A validated full-frame :class:`stdatamodels.jwst.datamodels.MaskModel`.

    ``axes``: FASTAXIS, SLOWAXIS of the detector; ``keywords``: further primary keywords from the
    profile's ``mask_file.keywords`` (FITS keyword -> value; READPATT, P_READPA, EXP_TYPE, ...),
    set through the datamodel's schema so it validates them."""
    from stdatamodels.jwst import datamodels

    ny, nx = dq.shape
    m = datamodels.MaskModel()
    m.dq = np.asarray(dq, "uint32")
    m.dq_def = dq_def_table()
    m.meta.reftype = "MASK"
    m.meta.description = description
    m.meta.author = author
    m.meta.pedigree = pedigree
    m.meta.useafter = useafter
    m.meta.telescope = "JWST"
    m.meta.instrument.name = instrument
    m.meta.instrument.detector = detector
    m.meta.subarray.name = "FULL"
    m.meta.subarray.xstart = 1
    m.meta.subarray.ystart = 1
    m.meta.subarray.xsize = int(nx)
    m.meta.subarray.ysize = int(ny)

    m.meta.subarray.fastaxis, m.meta.subarray.slowaxis = (int(v) for v in axes)
    for key, value in (keywords or {}).items():
        _set_keyword(m, key, value)
    for line in history:
        for piece in textwrap.wrap(line, 70) or [""]:
            m.add_history_entry(piece)
    with warnings.catch_warnings():
        warnings.simplefilter("error", category=_validation_warning())
        m.validate()
    return m


def _set_keyword(model, keyword: str, value) -> None:
    """Set the schema attribute that the FITS keyword ``keyword`` maps to (ValueError if none)."""
    paths = model.find_fits_keyword(str(keyword).upper())
    if not paths:
        raise ValueError(f"mask_file.keywords: {keyword!r} is not a keyword of the MaskModel schema")
    *parents, leaf = paths[0].split(".")
    node = model
    for part in parents:
        node = getattr(node, part)
    setattr(node, leaf, value)


def _validation_warning():
    from stdatamodels.exceptions import ValidationWarning

    return ValidationWarning


def _segment_info(ds: xr.Dataset) -> list[dict[str, Any]]:
    first = ds["first_exposure_mjd"].values
    last = ds["last_exposure_mjd"].values
    return [{
        "epoch_start": mc.isot(ds["time"].values[i]),
        "n_exposures": int(ds["n_exposures"].values[i]),
        "first_exposure": mc.isot(mc.mjd_to_datetime64(first[i])[()]),
        "last_exposure": mc.isot(mc.mjd_to_datetime64(last[i])[()]),
        "first_exposure_mjd": float(first[i]),
        "last_exposure_mjd": float(last[i]),
        "raw_epochs": [int(ds["raw_epoch_first"].values[i]), int(ds["raw_epoch_last"].values[i])],
    } for i in range(ds.sizes["time"])]


def _exposures_from_cube(ds: xr.Dataset) -> pd.DataFrame:
    fp = ds["exposure_footprint"].values.astype("float64")
    fp[fp < 0] = np.nan
    return pd.DataFrame({
        "mjd": ds["exposure_mjd"].values, "expstart": ds["exposure_expstart"].values,
        "exptime": ds["exposure_exptime"].values, "program": ds["exposure_program"].values,
        "filename": ds["exposure_filename"].values, "subarray": ds["exposure_subarray"].values,
        "y0": fp[:, 0], "x0": fp[:, 1], "ny": fp[:, 2], "nx": fp[:, 3],
    })


def _out_path(out: str, name: str) -> str:
    return st.join(out, name) if st.is_remote(out) else os.path.join(out, name)


def _write_file(out: str, name: str, data: bytes) -> str:
    path = _out_path(out, name)
    st.write_bytes_atomic(path, data)
    return path


# --------------------------------------------------------------------------- the export


class Manifest(dict):
    """The export manifest (a plain dict, JSON-able) that prints as a short table."""

    def __str__(self) -> str:
        files = self.get("files", [])
        cost = (self.get("merge_cost") or {}).get("pixel_exposures") or {}
        ep = self.get("epochs", {})
        px = (self.get("merge_cost") or {}).get("pixels") or {}
        rule = self.get("rule") or {}
        lines = [f"delivery {self.get('delivery')}: {len(files)} MASK files in {self.get('out')} "
                 f"({ep.get('n_unmerged')} unmerged epochs, {ep.get('n_mask_cube')} in the mask cube; "
                 f"epochs: {ep.get('source')})",
                 f"rule: {rule.get('describe', 'none (every epoch)')}",
                 f"merge cost: {cost.get('total', 0):.0f} pixel-exposures wrong ({cost.get('wrongly_flagged', 0):.0f} "
                 f"wrongly flagged, {cost.get('missed', 0):.0f} missed, {cost.get('relabelled', 0):.0f} relabelled)"
                 + (f"; distinct pixels wrong for some exposure: {px.get('missed', 0)} missed"
                    + (f" ({px['missed_in_regions']} in the rule's regions)" if "missed_in_regions" in px else "")
                    + f", {px.get('wrongly_flagged', 0)} wrongly flagged" if px else ""),
                 str(self.get("checks", ""))]
        for f in files:
            add = sum(v for k, v in f["added"].items() if k != "DO_NOT_USE")
            rem = sum(v for k, v in f["removed"].items() if k != "DO_NOT_USE")
            # class flags gained and lost since the previous file (a pixel may change two)
            lines.append(f"  {f['file']}  USEAFTER {f['useafter']}  {f['n_flagged']:7d} pixels flagged, "
                         f"class flags +{add} -{rem}  ({f['n_exposures']} exposures)")
        lines.append(f"manifest: {self.get('manifest_json')}, {self.get('manifest_csv')}")
        return "\n".join(lines)


@provenance.recorded("export-crds", provenance.export_config, provenance.export_summary)
def export_crds(store: str, out: str, author: str | None = None, pedigree: str | None = None,
                max_files: int | None = None, min_epoch_days: float | None = None,
                baseline: str | None = None, first_useafter: Any = None,
                description: str | None = None, prefix: str | None = None, start_index: int = 1,
                reference_pixels: bool = True, overwrite: bool = False, every_epoch: bool = False,
                min_changed_pixels: int | None = None, name: str | None = None) -> dict[str, Any]:
    """Write a CRDS delivery of MASK reference files into ``out``, plus a manifest (JSON and CSV),
    and record it in the store under ``name``.

    By default the files follow the mode profile's delivery rule (:mod:`lrscube.masks.delivery_rule`):
    a new file only where the mask changed materially in the regions the mode uses, and files at
    least ``min_epoch_days`` (the profile's ``delivery.min_interval_days``, 30) apart; the merge
    planner chooses, under those limits, the cut that gets the fewest pixel-exposures wrong.
    ``every_epoch=True``: no rule, one file per epoch of the mask cube (merged only as
    ``max_files``/``min_epoch_days`` ask). Every file is checked (:func:`lrscube.masks.delivery_checks.
    validate_delivery`) before any is written: an invalid delivery raises
    :class:`~lrscube.masks.delivery_checks.InvalidDeliveryError` and leaves ``out`` as it was.

    Parameters
    ----------
    store : str
        lrscube store with a mask cube (``lrscube detect`` writes it).
    out : str
        Output folder (created; local path or fsspec URL).
    author : str, optional
        AUTHOR keyword (default: the login name).
    pedigree : str, optional
        PEDIGREE for every file; default ``INFLIGHT <first> <last>`` dates of each file's own
        exposures. Use ``SIMULATION`` for simulated data.
    max_files : int, optional
        At most this many files (the planner merges at the least cost; reported).
    min_epoch_days : float, optional
        Files at least this many days apart (the last exempt); default: the profile's delivery
        interval, or with ``every_epoch`` as the mask cube was built.
    baseline : str, optional
        A static full-frame MASK file whose flags are ORed into every file.
    first_useafter : time, optional
        USEAFTER of the first file; default the mask cube's ``valid_from``. An earlier date makes
        CRDS use the first epoch for older data too (``mask-at``/``apply`` then need
        ``extrapolate=True`` to agree there).
    description, prefix, start_index
        DESCRIP text; file names ``{prefix}_{NNNN}.fits`` (default prefix
        ``jwst_<instrument>_mask_lrscube``) numbered from ``start_index``.
    reference_pixels : bool
        Flag the mode profile's reference rows and columns with its reference-pixel bits
        (``mask_file.reference_pixel_flags``; REFERENCE_PIXEL, as the pipeline's masks do).
    overwrite : bool
        Replace files of an earlier export with the same prefix in ``out`` (else refuse), and a
        recorded delivery of the same ``name``.
    every_epoch : bool
        One file per epoch instead of the delivery rule.
    min_changed_pixels : int, optional
        The rule's materiality threshold (default the profile's ``delivery.min_changed_pixels``).
    name : str, optional
        The delivery's name in the store (default ``delivery-NNN``, the next free number).

    Returns the manifest (dict): files with USEAFTER and counts, the rule, the merge cost (in
    pixel-exposures and in distinct pixels missed), the checks.

    Example::

        >>> m = export_crds("run.zarr", "crds/", author="A. Astronomer", name="2024-q3")  # doctest: +SKIP
        >>> [f["useafter"] for f in m["files"]]  # doctest: +SKIP
    """

    cube = mc.open_mask(store)
    attrs = dict(cube.attrs)
    geometry = mc.geometry_of(attrs)
    frame_shape = tuple(geometry["frame_shape"])
    instrument = str(geometry["instrument"])
    detector = _one_detector(geometry)
    author, pedigree, prefix = _checked_header_text(author, description, prefix, pedigree, instrument)
    run = provenance.current()
    created = datetime.now(timezone.utc)
    name = dl.check_name(name or dl.next_name(store))
    if dl.exists(store, name) and not overwrite:
        raise FileExistsError(f"{store}: a delivery named {name!r} is recorded already (lrscube deliveries "
                              f"--store {store}); choose another --name, or --overwrite")
    profile, rule, min_days = _rule_of(attrs, every_epoch, min_epoch_days, min_changed_pixels)
    base = read_baseline(baseline, frame_shape, detector) if baseline else None
    _prepare_out(out, prefix, overwrite, remove=False)  # refuse early; old files go once the new ones pass

    ep = _export_epochs(store, cube, profile, rule, min_days, max_files, base, frame_shape)
    segs = _segment_info(ep.ds)
    first_ua = mc.floor_second(mc.to_datetime64(first_useafter or attrs["valid_from"]))[()]
    if first_ua > ep.ds["time"].values[0].astype("datetime64[s]"):
        raise ValueError(f"first_useafter {mc.isot(first_ua)} is after the first epoch start "
                         f"{segs[0]['epoch_start']}: exposures in between would get no lrscube mask")
    extra = reference_pixel_frame(frame_shape, geometry) if reference_pixels else np.zeros(frame_shape, "uint32")
    files, masks = _file_masks(ep.ds, segs, extra if base is None else extra | base, mc.isot(first_ua))

    from stdatamodels import __version__ as sdm_version

    common = _history_common(attrs, __version__, sdm_version, min_days, max_files, baseline, ep.source, ep.cost,
                             reference_pixels, ep.ds.sizes["time"], rule, name)
    common += provenance.history_lines(str(store), run, attrs.get("run"))
    header = dict(author=author, pedigree=pedigree, description=description, instrument=instrument,
                  detector=detector, axes=geometry["axes"], keywords=geometry["mask_keywords"], history=common)
    check = _write_delivery(out, files, masks, frame_shape, header, name, prefix, start_index, overwrite,
                            run.id if run else created.strftime("%H%M%S%f"))
    manifest = Manifest({
        "delivery": name, "created": created.isoformat(timespec="seconds"), "lrscube_version": __version__,
        "store": str(store), "out": str(out), "instrument": instrument, "detector": detector,
        "frame_shape": list(frame_shape), "every_epoch": bool(every_epoch),
        "rule": None if rule is None else {**rule.to_dict(), "describe": rule.describe()},
        "parameters": {"author": author, "pedigree": pedigree, "max_files": max_files,
                       "min_epoch_days": min_days, "baseline": str(baseline) if baseline else None,
                       "first_useafter": mc.isot(first_ua), "reference_pixels": reference_pixels,
                       "prefix": prefix, "start_index": start_index, "every_epoch": bool(every_epoch),
                       "min_changed_pixels": None if rule is None else rule.min_changed_pixels},
        **_manifest_data(attrs, cube, ep, len(files), check, run),
        "files": files,
        "manifest_json": _out_path(out, f"{prefix}_manifest.json"),
        "manifest_csv": _out_path(out, f"{prefix}_manifest.csv"),
    })
    _write_file(out, f"{prefix}_manifest.json", json.dumps(manifest, indent=2, default=_json_default).encode())
    _write_file(out, f"{prefix}_manifest.csv", manifest_csv(files).encode())
    dl.write_delivery(str(store), name, json.loads(json.dumps(manifest, default=_json_default)),
                      pd.concat(masks, ignore_index=True) if masks else dl.sparse_rows(0, np.zeros((1, 1), "uint32")))
    return manifest


def _one_detector(geometry: dict) -> str:
    detectors = list(geometry["detectors"])
    if len(detectors) != 1:
        raise ValueError(f"mask cube covers detectors {detectors}; a MASK file is for one detector")
    return detectors[0]


def _checked_header_text(author, description, prefix, pedigree, instrument: str) -> tuple[str, str | None, str]:
    """Author (default the login name), pedigree and file-name prefix, checked before anything
    is written: FITS headers hold printable ASCII only."""
    author = author or _login()
    for what, text in (("author", author), ("description", description), ("prefix", prefix)):
        check_header_text(what, text)
    if pedigree is not None:
        pedigree = check_pedigree(pedigree)
    return author, pedigree, prefix or f"jwst_{instrument.lower()}_mask_lrscube"


def _rule_of(attrs: dict, every_epoch: bool, min_epoch_days, min_changed_pixels):
    """The mask cube's mode profile (None if not known here), the delivery rule (None with
    every_epoch) and the days files must be apart."""
    try:
        profile = profiles.load(attrs.get("profile") or None)
    except ValueError:
        profile = None
    rule = None if every_epoch else DeliveryRule.from_profile(profile, min_epoch_days, min_changed_pixels)
    cube_min = float(attrs.get("min_epoch_days", 0.0))
    min_days = (cube_min if min_epoch_days is None else float(min_epoch_days)) if rule is None \
        else float(rule.min_interval_days)
    return profile, rule, min_days


@dataclass
class _Epochs:
    """The epochs a delivery's files are cut from and what merging them costs."""

    ds: Any            # mask dataset (time = epoch start, y, x)
    cost: dict         # pixel_seconds, pixel_exposures, pixels (None where not known)
    source: str        # where the epochs come from, in words
    replanned: bool    # planned here, not the mask cube's own


def _export_epochs(store, cube, profile, rule, min_days: float, max_files, base, frame_shape) -> _Epochs:
    """The delivery rule's epochs; with every_epoch (``rule`` None) the mask cube's, or a
    re-plan from the intervals table when the limits differ from the cube's."""
    attrs = cube.attrs
    cube_min = float(attrs.get("min_epoch_days", 0.0))
    replan = rule is not None or (min_days != cube_min) or (max_files is not None and max_files < cube.sizes["time"])
    if not replan:
        cost = {"pixel_seconds": attrs.get("merge_cost_pixel_seconds"),
                "pixel_exposures": attrs.get("merge_cost_pixel_exposures"), "pixels": None}
        return _Epochs(cube, cost, "the mask cube's epochs", False)
    intervals = st.read_table(store, st.INTERVALS)
    plan = mc.plan_epochs(intervals, _exposures_from_cube(cube), profile, min_epoch_days=min_days,
                          max_epochs=max_files, baseline=base, frame_shape=frame_shape, rule=rule)
    ds = mc.mask_dataset(plan, profile, valid_from=attrs.get("valid_from"), frame_shape=frame_shape)
    cost = {"pixel_seconds": plan.cost["pixel_seconds"], "pixel_exposures": plan.cost["pixel_exposures"],
            "pixels": plan.cost.get("pixels")}
    return _Epochs(ds, cost, "the delivery rule" if rule is not None else "re-planned from the intervals table", True)


def _file_masks(ds, segs: list[dict], extra: np.ndarray, first_useafter: str) -> tuple[list[dict], list]:
    """One file per epoch (``extra``'s bits ORed in), an epoch identical to the previous one
    folded into its file; each file's row and its mask as sparse rows."""
    files: list[dict[str, Any]] = []
    masks = []
    prev = None
    for i in range(ds.sizes["time"]):
        frame = np.asarray(ds["dq"].isel(time=i).values, "uint32") | extra
        if prev is not None and np.array_equal(frame, prev):
            files[-1]["raw_epochs"][1] = segs[i]["raw_epochs"][1]
            files[-1]["n_exposures"] += segs[i]["n_exposures"]
            files[-1]["last_exposure"] = segs[i]["last_exposure"]
            files[-1]["folded_epochs"] += 1
            continue
        useafter = first_useafter if i == 0 else segs[i]["epoch_start"]
        added, removed = flag_changes(prev, frame)
        masks.append(dl.sparse_rows(len(files), frame))
        files.append({**segs[i], "epoch": i, "useafter": useafter, "folded_epochs": 0,
                      "counts": flag_counts(frame), "n_flagged": int(np.count_nonzero(frame)),
                      "added": added, "removed": removed})
        prev = frame
    return files, masks


def _write_delivery(out, files: list[dict], masks: list, frame_shape, header: dict, name: str, prefix: str,
                    start_index: int, overwrite: bool, staging_id: str):
    """Write every file into a staging folder, check the set, then put it in place (raises
    InvalidDeliveryError, leaving ``out`` as it was, when the set fails the checks)."""
    n_files = len(files)
    staging, final = _staging(out, staging_id)
    try:
        for k, f in enumerate(files):
            f["file"] = f"{prefix}_{start_index + k:04d}.fits"
            f["pedigree"] = header["pedigree"] or f"INFLIGHT {f['first_exposure'][:10]} {f['last_exposure'][:10]}"
            data = _model_bytes(_file_model(f, k, n_files, masks[k], frame_shape, header, name), f["file"])
            f["sha256"] = hashlib.sha256(data).hexdigest()
            with open(os.path.join(staging, f["file"]), "wb") as fh:
                fh.write(data)
        check = validate_delivery([os.path.join(staging, f["file"]) for f in files], manifest_files=files,
                                  names=[f["file"] for f in files])
        if not check.ok:
            raise InvalidDeliveryError(f"delivery {name} not written to {out}: it fails the CRDS checks\n{check}")
        _prepare_out(out, prefix, overwrite, remove=True)
        for f in files:
            f["path"] = final(f["file"])
            log.info("wrote %s (USEAFTER %s, %d flagged)", f["path"], f["useafter"], f["n_flagged"])
    finally:
        _remove_staging(staging)
    return check


def _file_model(f: dict, k: int, n_files: int, rows: pd.DataFrame, frame_shape, header: dict, name: str):
    """The MaskModel of file ``k`` of ``n_files``: its mask and its header, with HISTORY that says
    which epochs and exposures it covers and what changed since the previous file."""
    desc = header["description"] or (f"{header['instrument']} {header['detector']} time-variable bad-pixel mask, "
                                     f"lrscube {k + 1} of {n_files}")
    hist = [*header["history"],
            f"DELIVERY: file {k + 1} of {n_files} of delivery {name}, USEAFTER {f['useafter']}; epoch "
            f"{f['epoch']} (unmerged epochs {f['raw_epochs'][0]}-{f['raw_epochs'][1]}) with {f['n_exposures']} "
            f"exposures from {f['first_exposure']} to {f['last_exposure']}.",
            f"DIFFERENCES: flagged pixels {f['n_flagged']}: " + _counts_text(f["counts"])
            + "; since the previous file: added " + (_counts_text(f["added"]) or "none")
            + ", removed " + (_counts_text(f["removed"]) or "none") + "."]
    frame = np.zeros(frame_shape, "uint32")
    frame[rows["y"].to_numpy(), rows["x"].to_numpy()] = rows["dq"].to_numpy("uint32")
    return mask_model(frame, useafter=f["useafter"], author=header["author"], pedigree=f["pedigree"],
                      description=desc, instrument=header["instrument"], detector=header["detector"], history=hist,
                      axes=header["axes"], keywords=header["keywords"])


def _manifest_data(attrs: dict, cube, ep: _Epochs, n_files: int, check, run) -> dict:
    """The manifest's account of the data, the epochs, the merge cost, the checks and the runs."""
    n_epochs = int(ep.ds.sizes["time"])
    return {
        "data": {k: attrs.get(k) for k in ("n_exposures", "first_exposure", "last_exposure", "programs",
                                           "valid_from", "profile", "footprints_known")},
        "epochs": {"source": ep.source, "n_unmerged": int(attrs.get("n_raw_epochs", n_epochs)),
                   "n_mask_cube": int(cube.sizes["time"]), "n_export_epochs": n_epochs,
                   "n_files": n_files,
                   "same_as_mask_cube": (not ep.replanned)
                   or bool(np.array_equal(ep.ds["time"].values, cube["time"].values))},
        "merge_cost": {**ep.cost, "unit": "pixel-exposures the files get wrong against the unmerged epochs: "
                                          "pixel_seconds weights each by its exposure time (what merging minimises); "
                                          "pixels: distinct pixels wrong for at least one exposure that sees them"},
        "checks": str(check),
        "run": run.brief() if run else None,
        "detect_run": attrs.get("run"),
    }


def _counts_text(d: dict[str, int]) -> str:
    return ", ".join(f"{n} {c}" for c, n in d.items() if n)


def _staging(out: str, tag: str):
    """A local folder to write the files into before they are checked, and how to put one in place.

    Local ``out``: a hidden folder inside it (same disk: each file is renamed into place);
    fsspec ``out``: a temporary folder, files uploaded once checked.
    """
    if st.is_remote(out):
        staging = tempfile.mkdtemp(prefix="lrscube-delivery-")
        fs, base = st.fs_and_path(out)

        def final(fname):
            fs.put_file(os.path.join(staging, fname), f"{base.rstrip('/')}/{fname}")
            return _out_path(out, fname)
    else:
        os.makedirs(out, exist_ok=True)
        staging = os.path.join(out, f".lrscube-staging-{tag}")
        os.makedirs(staging, exist_ok=True)

        def final(fname):
            path = os.path.join(out, fname)
            os.replace(os.path.join(staging, fname), path)
            return path
    return staging, final


def _remove_staging(staging: str) -> None:
    import shutil

    shutil.rmtree(staging, ignore_errors=True)


def manifest_csv(files: list[dict[str, Any]]) -> str:
    """One row per file: USEAFTER, counts per flag, pixels added/removed per flag."""
    names = [n for n in flags.PIXEL if any(n in f["counts"] or n in f["added"] or n in f["removed"] for f in files)]
    head = ["file", "useafter", "pedigree", "epoch_start", "n_exposures", "first_exposure", "last_exposure",
            "n_flagged", *[f"n_{n}" for n in names], *[f"added_{n}" for n in names],
            *[f"removed_{n}" for n in names], "sha256"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(head)
    for f in files:
        w.writerow([f["file"], f["useafter"], f["pedigree"], f["epoch_start"], f["n_exposures"],
                    f["first_exposure"], f["last_exposure"], f["n_flagged"],
                    *[f["counts"].get(n, 0) for n in names], *[f["added"].get(n, 0) for n in names],
                    *[f["removed"].get(n, 0) for n in names], f["sha256"]])
    return buf.getvalue()


def _history_common(attrs, version, sdm_version, min_days, max_files, baseline, source, cost,
                    reference_pixels, n_epochs, rule=None, name=None) -> list[str]:
    """HISTORY lines every file of a delivery shares, labelled as reference-file HISTORY usually
    is (DOCUMENT, SOFTWARE, DATA USED, ...)."""
    programs = attrs.get("programs") or []
    progs = ", ".join(programs) if programs else "unknown"
    ps = (cost or {}).get("pixel_seconds") or {}
    pe = (cost or {}).get("pixel_exposures") or {}
    px = (cost or {}).get("pixels") or {}
    how = (f"delivery rule: {rule.describe()}" if rule is not None else "one file per epoch")
    lines = [
        f"DOCUMENT: time-variable bad-pixel mask from blank-sky exposures, one file per period of constant "
        f"mask (lrscube docs/pipeline.md); delivery {name}.",
        f"SOFTWARE: lrscube {version} (stdatamodels {sdm_version}, numpy {np.__version__}).",
        f"DATA USED: {attrs.get('n_exposures')} exposures from {attrs.get('first_exposure')} to "
        f"{attrs.get('last_exposure')} (MJD {attrs.get('first_exposure_mjd', float('nan')):.5f} to "
        f"{attrs.get('last_exposure_mjd', float('nan')):.5f}); programs: {progs}.",
        f"METHOD: mode profile {attrs.get('profile')}; DO_NOT_USE also set for "
        f"{', '.join(attrs.get('do_not_use_policy') or []) or 'none'}; {how}.",
        f"PARAMETERS: min_epoch_days={min_days}, max_files={max_files}, baseline="
        f"{os.path.basename(str(baseline)) if baseline else 'none'}, reference_pixels={reference_pixels}; "
        f"epochs: {source} ({attrs.get('n_raw_epochs')} unmerged, {n_epochs} exported).",
        f"MERGE COST: {pe.get('total', 0):.0f} pixel-exposures ({ps.get('total', 0):.0f} pixel-seconds) wrong "
        f"against the unmerged epochs ({pe.get('wrongly_flagged', 0):.0f} wrongly flagged, "
        f"{pe.get('missed', 0):.0f} missed, {pe.get('relabelled', 0):.0f} relabelled)"
        + (f"; {px.get('missed', 0)} distinct pixels missed for some exposure" if px else "") + ".",
        "RULE: the file with the latest USEAFTER at or before the exposure start applies.",
    ]
    return lines


def _model_bytes(model, name: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model.save(path)
        with open(path, "rb") as f:
            return f.read()


def _prepare_out(out: str, prefix: str, overwrite: bool, remove: bool = True) -> None:
    """Refuse an ``out`` holding an earlier export with this prefix unless ``overwrite``; with
    ``remove``, delete that export's files."""
    fs, path = st.fs_and_path(out)
    fs.makedirs(path, exist_ok=True)
    pat = re.compile(re.escape(prefix) + r"(" + FILE_RE[:-1] + r"|_manifest\.(json|csv))$")
    listing = fs.ls(path, detail=False) if fs.exists(path) else []  # an S3 'folder' exists once written to
    old = [p for p in listing if pat.search(p.rsplit("/", 1)[-1])]
    if old and not overwrite:
        raise FileExistsError(f"{out} already holds {len(old)} files of an export with prefix {prefix!r} "
                              f"(e.g. {old[0].rsplit('/', 1)[-1]}); pass overwrite=True (--overwrite) to replace "
                              "them, or another --out")
    if remove:
        for p in old:
            fs.rm(p)


def check_header_text(what: str, text: str | None) -> None:
    """ValueError unless ``text`` (a header value such as the author) is printable ASCII."""
    if text is not None and not (str(text).isascii() and str(text).isprintable()):
        raise ValueError(f"{what} {text!r}: a FITS header value must be printable ASCII (no accents, no line breaks)")


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def write_mask_fits(mask: xr.DataArray, path: str, author: str = "lrscube", pedigree: str | None = None,
                    reference_pixels: bool = True) -> str:
    """Write a mask from :func:`mask_at` as a full-frame MASK reference file.

    The file is the one the CRDS export writes for that epoch (same DQ, USEAFTER, reference
    pixels), so ``--steps.dq_init.override_mask=path`` gives what CRDS would.
    """
    a = mask.attrs
    dq = np.asarray(mask.values, "uint32").copy()
    if reference_pixels:
        dq |= reference_pixel_frame(dq.shape, a)
    ped = pedigree or f"INFLIGHT {a['epoch_first_exposure'][:10]} {a['epoch_last_exposure'][:10]}"
    model = mask_model(
        dq, useafter=a["useafter"], author=author, pedigree=check_pedigree(ped),
        description=f"{a['instrument']} {a['detector']} lrscube mask, epoch {a['epoch']}",
        instrument=a["instrument"], detector=a["detector"], axes=a["axes"], keywords=a["mask_keywords"],
        history=[f"lrscube mask epoch {a['epoch']} of {a['n_epochs']} from {a['epoch_start']} "
                 f"(USEAFTER {a['useafter']}), {a.get('epoch_n_exposures')} exposures from "
                 f"{a['epoch_first_exposure']} to {a['epoch_last_exposure']}, requested for {a['requested_time']}.",
                 *_provenance_lines(a)])
    data = _model_bytes(model, os.path.basename(str(path)) or "mask.fits")
    st.write_bytes_atomic(str(path), data)
    return str(path)


def _provenance_lines(attrs: dict) -> list[str]:
    """HISTORY naming the runs a mask from :func:`mask_at` comes from (see lrscube.storage.provenance)."""
    if attrs.get("store"):
        return provenance.history_lines(attrs["store"], None, attrs.get("detect_run") or None)
    run = attrs.get("detect_run") or {}
    return [f"PROVENANCE: mask cube from detect run {run.get('id')} started {run.get('started')}, config digest "
            f"{run.get('config_digest')}."] if run else []
