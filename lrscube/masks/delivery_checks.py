"""Checks a MASK delivery must pass before it is written: :func:`validate_delivery`.

The rules are those CRDS certification applies to JWST MASK files (``crds certify`` reads them
from the ``crds`` package's ``jwst/tpns``: ``all_all.tpn``, ``miri_all.tpn``, ``miri_mask.tpn``
and its includes ``miri_subarray_both.tpn``, ``miri_sci_array_both.tpn``,
``miri_dq_def_array.tpn``; the PEDIGREE and USEAFTER validators in
``crds/certify/validators/core.py``) plus the stdatamodels ``MaskModel`` schema, and a few that
make a delivery coherent as a set. Each rule has a name (docs/pipeline.md lists them)::

    file              the file opens as FITS and as a stdatamodels MaskModel
    schema            MaskModel.validate() passes, its warnings treated as errors
    required          TELESCOP=JWST, INSTRUME, DETECTOR, REFTYPE, DESCRIP, AUTHOR, PEDIGREE,
                      USEAFTER present and not empty, and HISTORY present   (all_all.tpn)
    reftype           REFTYPE = MASK
    detector          INSTRUME/DETECTOR a pair some shipped mode profile describes (miri_all.tpn:
                      MIRIMAGE, MIRIFUSHORT, MIRIFULONG; nirspec_all.tpn: NRS1, NRS2)
    useafter_format   USEAFTER is a real date written YYYY-MM-DDThh:mm:ss (&JWSTDATE; CRDS only
                      warns about other date formats, lrscube refuses them)
    pedigree          &JWSTPEDIGREE: GROUND, MODEL, DUMMY, SIMULATION, or INFLIGHT/MODEL
                      YYYY-MM-DD YYYY-MM-DD with start <= stop and no time
    subarray_keywords SUBARRAY, SUBSTRT1/2, SUBSIZE1/2, FASTAXIS, SLOWAXIS present, integers
                      (miri_subarray_both.tpn)
    subarray_bounds   1 <= SUBSTRT + SUBSIZE - 1 <= the detector's frame, on both axes
    full_frame        SUBARRAY=FULL: SUBSTRT1/2 = 1 and SUBSIZE1/2 = the full frame of the detector's
                      profile (``geometry.frame_shape``: 1032 x 1024 for MIRI, 2048 x 2048 for NIRSpec)
    axes              FASTAXIS/SLOWAXIS of the detector's profile (``geometry.axes``; MIRI: 1, 2;
                      NRS1: 2, 1; NRS2: -2, -1: nir_subarray.tpn)
    dq_array          DQ is a 2-D unsigned 32-bit integer image of shape (SUBSIZE2, SUBSIZE1)
    dq_def            DQ_DEF table with BIT, VALUE (integers), NAME, DESCRIPTION (strings)
                      (miri_dq_def_array.tpn; optional there, required here), VALUE = 2**BIT,
                      names and values those of stdatamodels dqflags.pixel, every bit set in DQ
                      defined
    one_selection     every file has the same INSTRUME, DETECTOR and SUBARRAY (one rmap case)
    useafter_order    USEAFTER strictly increasing in file order: no two files compete for one
                      date (CRDS's rmap update check refuses a duplicate)
    coverage          (with the manifest) each file's USEAFTER is at or before its first
                      exposure's start and the next file's is after its last exposure's start,
                      so CRDS picks, for every exposure, the file made for it
    checksum          (with the manifest) each file's SHA-256 is the manifest's

The same files pass ``crds certify`` against a locally built context (tests/masks/test_delivery_checks.py
runs it offline when the ``crds`` package is installed).
"""

from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from ..config import flags, profiles

REQUIRED = ("TELESCOP", "INSTRUME", "DETECTOR", "REFTYPE", "DESCRIP", "AUTHOR", "PEDIGREE", "USEAFTER")
SUBARRAY_KEYS = ("SUBARRAY", "SUBSTRT1", "SUBSTRT2", "SUBSIZE1", "SUBSIZE2", "FASTAXIS", "SLOWAXIS")
USEAFTER_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
RULES = ("file", "schema", "required", "reftype", "detector", "useafter_format", "pedigree", "subarray_keywords",
         "subarray_bounds", "full_frame", "axes", "dq_array", "dq_def", "one_selection", "useafter_order",
         "coverage", "checksum")


@dataclass
class DeliveryCheck:
    """What :func:`validate_delivery` found: ``problems`` as (file, rule, message)."""

    files: list[str]
    problems: list[tuple[str, str, str]] = field(default_factory=list)
    checked: tuple[str, ...] = RULES

    @property
    def ok(self) -> bool:
        return not self.problems

    def rules_failed(self) -> set[str]:
        return {r for _, r, _ in self.problems}

    def __str__(self) -> str:
        if self.ok:
            return f"delivery checks: {len(self.files)} files pass all {len(self.checked)} rules"
        lines = [f"delivery checks: {len(self.problems)} problems in {len(self.files)} files"]
        lines += [f"  {f}: [{r}] {m}" for f, r, m in self.problems]
        return "\n".join(lines)


class InvalidDeliveryError(ValueError):
    """A delivery failed :func:`validate_delivery`; nothing was written."""


# --------------------------------------------------------------------------- rules on values


def pedigree_problem(value: str) -> str | None:
    """Why ``value`` is not a valid JWST PEDIGREE (None when it is), as crds certify's
    JwstpedigreeValidator decides."""
    parts = str(value).split()
    if not parts:
        return "PEDIGREE is empty"
    kind = parts[0].upper()
    if len(parts) == 1:
        return None if kind in ("GROUND", "MODEL", "DUMMY", "SIMULATION") else \
            f"PEDIGREE {value!r}: {kind} cannot be used without dates (GROUND, MODEL, DUMMY or SIMULATION can)"
    if len(parts) != 3 or kind not in ("INFLIGHT", "MODEL"):
        return f"PEDIGREE {value!r} is not 'INFLIGHT YYYY-MM-DD YYYY-MM-DD'"
    try:
        start, stop = (datetime.strptime(p, "%Y-%m-%d") for p in parts[1:])
    except ValueError:
        return f"PEDIGREE {value!r}: dates must be YYYY-MM-DD, without a time"
    if start > stop:
        return f"PEDIGREE {value!r}: start date after stop date"
    return None


def useafter_problem(value: str) -> str | None:
    """Why ``value`` is not a USEAFTER lrscube delivers (None when it is)."""
    if not USEAFTER_RE.match(str(value)):
        return f"USEAFTER {value!r} is not YYYY-MM-DDThh:mm:ss"
    try:
        datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return f"USEAFTER {value!r} is not a real date and time"
    return None


def _int(h, key):
    v = h.get(key)
    return v if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else None


def header_problems(h) -> list[tuple[str, str]]:
    """(rule, message) for one primary header (astropy Header or a dict)."""
    out = []
    for key in REQUIRED:
        if key not in h or str(h.get(key, "")).strip() == "":
            out.append(("required", f"keyword {key} is missing or empty"))
    if h.get("TELESCOP") not in (None, "") and h.get("TELESCOP") != "JWST":
        out.append(("required", f"TELESCOP is {h.get('TELESCOP')!r}, not 'JWST'"))
    history = h.get("HISTORY") if hasattr(h, "get") else None
    if history is None or not len(list(history)):
        out.append(("required", "no HISTORY (CRDS requires it: the data and software the file came from)"))
    if h.get("REFTYPE") not in (None, "") and str(h.get("REFTYPE")).upper() != "MASK":
        out.append(("reftype", f"REFTYPE is {h.get('REFTYPE')!r}, not 'MASK'"))
    det = str(h.get("DETECTOR", "")).upper()
    known = profiles.detectors()  # detector -> a profile that describes it
    if det and det not in known:
        out.append(("detector", f"DETECTOR {det!r} is not one of {sorted(known)}"))
    elif det and str(h.get("INSTRUME", "")).upper() != known[det].instrument.upper():
        out.append(("detector", f"DETECTOR {det} belongs to {known[det].instrument}, not INSTRUME {h.get('INSTRUME')!r}"))
    if h.get("USEAFTER"):
        p = useafter_problem(h["USEAFTER"])
        if p:
            out.append(("useafter_format", p))
    if h.get("PEDIGREE"):
        p = pedigree_problem(h["PEDIGREE"])
        if p:
            out.append(("pedigree", p))
    ints = {}
    for key in SUBARRAY_KEYS:
        if key not in h:
            out.append(("subarray_keywords", f"keyword {key} is missing"))
        elif key != "SUBARRAY":
            v = _int(h, key)
            if v is None:
                out.append(("subarray_keywords", f"{key} = {h.get(key)!r} is not an integer"))
            else:
                ints[key] = int(v)
    if det in known:
        (ny, nx), (fast, slow) = known[det].frame_shape, known[det].axes
        if {"SUBSTRT1", "SUBSIZE1"} <= set(ints) and not 1 <= ints["SUBSTRT1"] + ints["SUBSIZE1"] - 1 <= nx:
            out.append(("subarray_bounds", f"SUBSTRT1 + SUBSIZE1 - 1 = {ints['SUBSTRT1'] + ints['SUBSIZE1'] - 1} "
                                           f"is outside 1..{nx}"))
        if {"SUBSTRT2", "SUBSIZE2"} <= set(ints) and not 1 <= ints["SUBSTRT2"] + ints["SUBSIZE2"] - 1 <= ny:
            out.append(("subarray_bounds", f"SUBSTRT2 + SUBSIZE2 - 1 = {ints['SUBSTRT2'] + ints['SUBSIZE2'] - 1} "
                                           f"is outside 1..{ny}"))
        if str(h.get("SUBARRAY", "")).upper() == "FULL":
            want = {"SUBSTRT1": 1, "SUBSTRT2": 1, "SUBSIZE1": nx, "SUBSIZE2": ny}
            bad = {k: ints.get(k) for k, v in want.items() if ints.get(k) != v}
            if bad:
                out.append(("full_frame", f"SUBARRAY=FULL but {bad}; the {det} full frame is "
                                          f"SUBSTRT1/2 = 1, SUBSIZE1 = {nx}, SUBSIZE2 = {ny}"))
        if {"FASTAXIS", "SLOWAXIS"} <= set(ints) and (ints["FASTAXIS"], ints["SLOWAXIS"]) != (fast, slow):
            out.append(("axes", f"FASTAXIS, SLOWAXIS = {ints['FASTAXIS']}, {ints['SLOWAXIS']}; {det} needs {fast}, {slow}"))
    return out


def dq_problems(dq: np.ndarray | None, dq_def: dict[str, np.ndarray] | None, h) -> list[tuple[str, str]]:
    """(rule, message) for the DQ image and DQ_DEF table (column name, upper case -> values,
    scaled as FITS TZERO says) against the header."""
    out = []
    if dq is None:
        return [("dq_array", "no DQ extension")]
    if dq.ndim != 2:
        out.append(("dq_array", f"DQ has {dq.ndim} dimensions, not 2"))
    elif _int(h, "SUBSIZE1") is not None and _int(h, "SUBSIZE2") is not None and \
            dq.shape != (int(h["SUBSIZE2"]), int(h["SUBSIZE1"])):
        out.append(("dq_array", f"DQ shape {dq.shape} is not (SUBSIZE2, SUBSIZE1) = "
                                f"({h['SUBSIZE2']}, {h['SUBSIZE1']})"))
    if dq.dtype != np.uint32:
        out.append(("dq_array", f"DQ is {dq.dtype}, not uint32"))
    if dq_def is None:
        out.append(("dq_def", "no DQ_DEF table"))
        return out
    need = {"BIT": "iu", "VALUE": "iu", "NAME": "SU", "DESCRIPTION": "SU"}
    for c, kinds in need.items():
        if c not in dq_def:
            out.append(("dq_def", f"DQ_DEF lacks column {c}"))
        elif np.asarray(dq_def[c]).dtype.kind not in kinds:
            out.append(("dq_def", f"DQ_DEF column {c} is {np.asarray(dq_def[c]).dtype}, "
                                  f"not {'an integer' if 'i' in kinds else 'a string'}"))
    if any(p[0] == "dq_def" for p in out):
        return out
    col = {n: np.asarray(dq_def[n]) for n in need}
    bit = np.asarray(col["BIT"], "int64")
    value = np.asarray(col["VALUE"], "int64")
    text = [v.decode() if isinstance(v, bytes) else str(v) for v in col["NAME"]]
    if np.any(value != 2 ** bit):
        out.append(("dq_def", "DQ_DEF VALUE is not 2**BIT in every row"))
    wrong = [f"{n}={v}" for n, v in zip(text, value) if n in flags.PIXEL and flags.PIXEL[n] != v]
    unknown = [n for n in text if n not in flags.PIXEL]
    if wrong or unknown:
        out.append(("dq_def", f"DQ_DEF names/values differ from stdatamodels dqflags.pixel: "
                              f"{', '.join(wrong + [f'{n} unknown' for n in unknown])}"))
    used = int(np.bitwise_or.reduce(dq.ravel())) if dq.size else 0
    undefined = used & ~int(np.bitwise_or.reduce(value)) if len(value) else used
    if undefined:
        out.append(("dq_def", f"DQ sets bits not defined in DQ_DEF: {[b for b in range(32) if undefined >> b & 1]}"))
    return out


def schema_problems(path: str) -> list[tuple[str, str]]:
    """(rule, message) from opening the file as a MaskModel and validating it."""
    from stdatamodels.exceptions import ValidationWarning
    from stdatamodels.jwst import datamodels

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ValidationWarning)
            with datamodels.MaskModel(path) as m:
                m.validate()
    except ValidationWarning as w:
        return [("schema", f"MaskModel schema: {str(w).splitlines()[0][:300]}")]
    except Exception as e:  # noqa: BLE001 - whatever stops the datamodel is the finding
        return [("file", f"does not open as a MaskModel: {type(e).__name__}: {str(e).splitlines()[0][:300]}")]
    return []


# --------------------------------------------------------------------------- one file, a set


def check_file(path: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Check one MASK file; returns (its selection keywords, [(rule, message)])."""
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdul:
            h = hdul[0].header
            names = [hdu.name for hdu in hdul]
            dq = np.asarray(hdul["DQ"].data) if "DQ" in names and hdul["DQ"].data is not None else None
            table = hdul["DQ_DEF"].data if "DQ_DEF" in names else None
            dq_def = None if table is None else {c.upper(): np.array(table[c]) for c in table.columns.names}
            if dq is not None and dq.dtype.byteorder not in ("=", "|"):
                dq = dq.astype(dq.dtype.newbyteorder("="))
            info = {k: h.get(k) for k in ("INSTRUME", "DETECTOR", "SUBARRAY", "USEAFTER")}
            problems = header_problems(h) + dq_problems(dq, dq_def, h)
    except Exception as e:  # noqa: BLE001 - an unreadable file is the finding
        return {}, [("file", f"not a readable FITS file: {type(e).__name__}: {e}")]
    return info, problems + schema_problems(path)


def validate_delivery(files: list[str], manifest_files: list[dict] | None = None,
                      names: list[str] | None = None) -> DeliveryCheck:
    """Check a delivery's MASK files (local paths, in USEAFTER order) against every rule above.

    ``manifest_files``: the export manifest's per-file records (``useafter``,
    ``first_exposure``, ``last_exposure``, ``sha256``) for the coverage and checksum rules;
    ``names``: the names to report the files by (default the paths).
    """
    names = names or [str(f) for f in files]
    res = DeliveryCheck(files=list(names))
    infos = []
    for path, name in zip(files, names):
        info, probs = check_file(str(path))
        infos.append(info)
        res.problems += [(name, r, m) for r, m in probs]
    sel = {(i.get("INSTRUME"), i.get("DETECTOR"), i.get("SUBARRAY")) for i in infos if i}
    if len(sel) > 1:
        res.problems.append(("(delivery)", "one_selection", f"files for several selections {sorted(map(str, sel))}"))
    ua = [str(i.get("USEAFTER", "")) for i in infos]
    for k in range(1, len(ua)):
        if ua[k] and ua[k - 1] and not ua[k] > ua[k - 1]:
            res.problems.append((names[k], "useafter_order",
                                 f"USEAFTER {ua[k]} is not after the previous file's {ua[k - 1]}"))
    if manifest_files is not None:
        if len(manifest_files) != len(files):
            res.problems.append(("(delivery)", "coverage", f"{len(files)} files but {len(manifest_files)} in the manifest"))
        for k, (path, name, m) in enumerate(zip(files, names, manifest_files)):
            if ua[k] and m.get("useafter") and ua[k] != m["useafter"]:
                res.problems.append((name, "coverage", f"USEAFTER {ua[k]} but the manifest says {m['useafter']}"))
            if ua[k] and m.get("first_exposure") and not ua[k] <= m["first_exposure"]:
                res.problems.append((name, "coverage", f"USEAFTER {ua[k]} is after its first exposure "
                                                       f"{m['first_exposure']}: CRDS would give that exposure the previous file"))
            if k + 1 < len(ua) and ua[k + 1] and m.get("last_exposure") and not ua[k + 1] > m["last_exposure"]:
                res.problems.append((name, "coverage", f"its last exposure {m['last_exposure']} is not before the "
                                                       f"next file's USEAFTER {ua[k + 1]}: CRDS would give it the next file"))
            if m.get("sha256"):
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                if digest != m["sha256"]:
                    res.problems.append((name, "checksum", "SHA-256 differs from the manifest's"))
    return res
