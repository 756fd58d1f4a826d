"""`lrscube report`: a static HTML page with PNG figures describing a store.

The page (``OUT/index.html`` with the figures beside it; no server, no JavaScript needed) has::

    summary             counts per class, epochs, exposures, time span, ingest outcome
    defects over time   pixels bad in each class at each exposure
    detector maps       full frame, y upward, by onset date and by class, footprints outlined
    amplitudes          histogram per class
    pixel histories     the most significant pixels: residual against time, interval shaded
    mask epochs         timeline of the mask cube and what changed between consecutive epochs
                        (and between consecutive MASK files, when a manifest is given)
    input coverage      exposures per month by subarray and EXP_TYPE; rejected files and why
    deliveries and runs the MASK deliveries recorded in the store (files, USEAFTERs, rule, what
                        merging missed) and the runs (ingest, detect, export) that made them
    spectral impact     figures of `lrscube spectra-check`, when its result is given

Composition: :func:`gather` reads what the store has (each piece may be missing: the page then
says so), pure functions turn tables into the figures' inputs (:func:`class_counts`,
:func:`pixel_table`, :func:`top_pixels`, :func:`epoch_changes`, ...), :mod:`lrscube.plots` draws
them, and :func:`render_html` writes the page. Only :func:`gather` touches the store.
"""

from __future__ import annotations

import html
import json
import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import flags, profiles
from .. import __version__, plots
from ..storage import store as st
from ..masks.deliveries import deliveries_table, history_frame, list_deliveries
from ..detection import noise_law
from ..masks.maskcube import default_frame
from ..storage.cube import exists as cube_exists, exposure_table, info, open_cube
from ..storage.provenance import read_runs, runs_table
from .history import open_intervals_or_none, pixel_history
from .spectra import report_section
from ..intervals import bounds

log = logging.getLogger(__name__)

#: the page's figures, in order: file name -> caption
FIGURES = {
    "class_counts.png": "Defective pixels of each class at each exposure time (interval rule "
                        "start_mjd <= t < end_mjd).",
    "map_onset.png": "Defective pixels on the full frame (y upward), coloured by the date they went bad; "
                     "grey: bad since before the first exposure; open markers: recovered since.",
    "map_class.png": "Defective pixels on the full frame (y upward), coloured by class.",
    "amplitudes.png": "Amplitude of each detected defect interval, per class.",
    "histories.png": "The most significant pixels: local residual (pixel minus the median of its "
                     "neighbours along the dispersion axis) in each exposure, bad intervals shaded.",
    "epochs.png": "Epochs of the mask cube: pixels carrying each DQ bit in each epoch; the rug marks "
                  "the exposures, coloured alternately by epoch.",
    "coverage.png": "Exposures in the cube per month, by subarray and by EXP_TYPE.",
    "deliveries.png": "MASK deliveries recorded in the store (oldest at the bottom): a tick at each file's USEAFTER.",
}


# --------------------------------------------------------------------------- inputs


@dataclass
class Inputs:
    """What the store holds; each piece None when missing, with the reason in ``notes``."""

    store: str
    profile: Any = None
    #: the detector frame (rows, columns): the profile's, else what the cube records
    frame_shape: tuple[int, int] | None = None
    exposures: pd.DataFrame | None = None
    intervals: pd.DataFrame | None = None
    ingest_log: pd.DataFrame | None = None
    mask: Any = None  # xarray Dataset
    manifest: pd.DataFrame | None = None
    detect_meta: dict | None = None
    spectra: dict | None = None
    deliveries: list[dict] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)


def read_manifest(path: str | Path) -> pd.DataFrame:
    """The MASK file manifest written by ``lrscube export-crds`` (JSON or CSV), one row per file.

    JSON may be a list of per-file records or an object holding such a list (under ``files``,
    or the first list value); nested values (counts per flag, ...) stay dicts.
    """
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return pd.read_csv(path)
    with open(path) as f:
        d = json.load(f)
    if isinstance(d, dict):
        rows = d.get("files")
        if rows is None:
            rows = next((v for v in d.values() if isinstance(v, list)), [])
    else:
        rows = d
    return pd.DataFrame(rows)


def _fmt_counts(d) -> str:
    if not isinstance(d, dict):
        return "" if d is None or (isinstance(d, float) and np.isnan(d)) else str(d)
    return ", ".join(f"{k} {v}" for k, v in d.items() if v)


def manifest_view(manifest: pd.DataFrame) -> pd.DataFrame:
    """A readable table of a MASK file manifest: file, USEAFTER, exposures, flagged pixels,
    counts per flag and the change from the previous file (``HOT +3 -1``).

    Understands the export's JSON (``counts``/``added``/``removed`` dicts) and CSV
    (``n_X``/``added_X``/``removed_X`` columns); any other manifest is shown as it is.
    """
    m = manifest.copy()
    if "counts" not in m and any(c.startswith("n_") and c[2:] in flags.PIXEL for c in m.columns):
        names = [c[2:] for c in m.columns if c.startswith("n_") and c[2:] in flags.PIXEL]
        m["counts"] = [{n: int(r[f"n_{n}"]) for n in names} for _, r in m.iterrows()]
        m["added"] = [{n: int(r.get(f"added_{n}", 0) or 0) for n in names} for _, r in m.iterrows()]
        m["removed"] = [{n: int(r.get(f"removed_{n}", 0) or 0) for n in names} for _, r in m.iterrows()]
    if "added" in m or "removed" in m:
        changes = []
        for i, (_, r) in enumerate(m.iterrows()):
            add = r.get("added") if isinstance(r.get("added"), dict) else {}
            rem = r.get("removed") if isinstance(r.get("removed"), dict) else {}
            if i == 0:
                changes.append("(first file)")
                continue
            names = sorted(set(add) | set(rem), key=lambda n: (flags.PIXEL.get(n, 2**40), n))
            parts = [f"{n} +{add.get(n, 0)} -{rem.get(n, 0)}" for n in names if add.get(n, 0) or rem.get(n, 0)]
            changes.append(", ".join(parts) or "no change")
        m["change from previous file"] = changes
    if "counts" in m:
        m["counts"] = m["counts"].map(_fmt_counts)
    known = ["file", "useafter", "n_exposures", "n_flagged", "counts", "change from previous file", "change"]
    keep = [c for c in known if c in m]
    if "file" in keep and len(keep) > 2:
        return m[keep]
    for c in m.columns:  # unknown layout: everything, nested values as JSON
        if m[c].map(lambda v: isinstance(v, (dict, list))).any():
            m[c] = m[c].map(lambda v: json.dumps(v) if isinstance(v, (dict, list)) else v)
    return m


def _open_mask(store: str):
    """``lrscube.masks.maskcube.open_mask``, or a plain xarray read of ``STORE/mask`` without that module."""
    try:
        from ..masks.maskcube import open_mask
    except ImportError:
        import xarray as xr

        def open_mask(s):
            if not st.exists(s, st.MASK):
                raise FileNotFoundError(st.join(s, st.MASK))
            return xr.open_zarr(st.zarr_store(st.join(s, st.MASK), read_only=True), consolidated=False,
                                zarr_format=3)
    return open_mask(store)


def gather(store: str, manifest: str | Path | None = None, spectra: str | Path | dict | None = None) -> Inputs:
    """Read everything the report shows from the store; missing pieces become notes."""

    store = str(store)
    inp = Inputs(store=store)
    _gather_cube(inp)
    _gather_detect(inp)
    _gather_records(inp, manifest)
    if spectra is not None:
        _gather_spectra(inp, spectra)
    return inp


def _gather_cube(inp: Inputs) -> None:
    """The exposures, the mode profile and the frame shape."""
    store, prof_name = inp.store, None
    if cube_exists(store):
        meta = info(store)
        prof_name = meta.get("profile")
        inp.frame_shape = tuple(meta["frame_shape"]) if meta.get("frame_shape") else None
        inp.exposures = exposure_table(store)
        if not len(inp.exposures):
            inp.notes["exposures"] = "The exposure cube holds no exposures yet."
    else:
        inp.notes["exposures"] = (f"No exposure cube at {st.join(store, st.EXPOSURES)}: run "
                                  f"`lrscube ingest PATH --store {store}` first.")
    try:
        inp.profile = profiles.load(prof_name)
        inp.frame_shape = tuple(inp.profile.frame_shape)
    except ValueError as e:
        inp.frame_shape = default_frame(inp.frame_shape)
        inp.notes["profile"] = (f"Mode profile {prof_name!r} could not be loaded ({e}); using a "
                                f"{inp.frame_shape[0]} x {inp.frame_shape[1]} frame.")


def _gather_detect(inp: Inputs) -> None:
    """The intervals, the ingest log and the mask cube."""
    store = inp.store
    inp.intervals = open_intervals_or_none(store)
    if inp.intervals is None:
        inp.notes["intervals"] = (f"No defect intervals yet ({st.join(store, st.INTERVALS)} is absent): "
                                  f"run `lrscube detect --store {store}`.")
    elif not len(inp.intervals):
        inp.notes["intervals"] = "Detection ran and found no defective pixels."
    if st.exists(store, st.INGEST_LOG):
        inp.ingest_log = st.read_table(store, st.INGEST_LOG)
    else:
        inp.notes["ingest_log"] = f"No ingest log ({st.join(store, st.INGEST_LOG)}) in the store."
    try:
        inp.mask = _open_mask(store)
    except FileNotFoundError as e:
        inp.notes["mask"] = (f"No mask cube at {st.join(store, st.MASK)} ({type(e).__name__}): "
                             f"run `lrscube detect --store {store}`.")


def _gather_records(inp: Inputs, manifest) -> None:
    """The recorded deliveries and runs, the MASK files' manifest (given, else the latest
    delivery's) and the detect run's record."""
    try:
        inp.deliveries, inp.runs = list_deliveries(inp.store), read_runs(inp.store)
    except (OSError, ValueError) as e:
        inp.notes["deliveries"] = f"The store's delivery and run records could not be read: {e}"
    if manifest is not None:
        try:
            inp.manifest = read_manifest(manifest)
        except (OSError, ValueError) as e:
            inp.notes["manifest"] = f"Could not read the MASK file manifest {manifest}: {e}"
    elif inp.deliveries:  # the latest recorded delivery's files
        inp.manifest = pd.DataFrame(inp.deliveries[-1].get("files", []))
        inp.notes["manifest_source"] = f"MASK files of the latest delivery, {inp.deliveries[-1].get('delivery')}."
    if st.exists(inp.store, st.DETECT_META):
        try:
            inp.detect_meta = st.read_json(inp.store, st.DETECT_META)
        except (OSError, ValueError) as e:
            inp.notes["detect_meta"] = f"{st.join(inp.store, st.DETECT_META)} unreadable: {e}"


def _gather_spectra(inp: Inputs, spectra) -> None:
    """The spectral-impact result (a dict, or the JSON spectra-check wrote)."""
    if isinstance(spectra, dict):
        inp.spectra = spectra
        return
    try:
        with open(spectra) as f:
            inp.spectra = json.load(f)
        inp.spectra.setdefault("_dir", str(Path(spectra).parent))
    except (OSError, ValueError) as e:
        inp.notes["spectra"] = f"Could not read the spectral-impact result {spectra}: {e}"


# --------------------------------------------------------------------------- pure table functions


def _lo_hi(intervals: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return bounds(pd.to_numeric(intervals["start_mjd"], errors="coerce"),
                  pd.to_numeric(intervals["end_mjd"], errors="coerce"))


def class_counts(intervals: pd.DataFrame, mjd: np.ndarray) -> pd.DataFrame:
    """Pixels bad in each class at each time (rule ``start_mjd <= t < end_mjd``).

    Returns a DataFrame indexed by the times (datetime64, sorted) with one column per class.
    A pixel counts once per class as long as its intervals of one class do not overlap (the
    intervals contract).

    Example
    -------
    >>> iv = pd.DataFrame({"y": [1], "x": [2], "flag": ["HOT"], "start_mjd": [60001.0], "end_mjd": [np.nan]})
    >>> class_counts(iv, np.array([60000.0, 60002.0]))["HOT"].tolist()
    [0, 1]
    """
    mjd = np.sort(np.asarray(mjd, float))
    index = plots.mjd_to_datetime(mjd)
    if intervals is None or not len(intervals):
        return pd.DataFrame(index=index)
    lo, hi = _lo_hi(intervals)
    fl = intervals["flag"].astype(str).to_numpy()
    out = {}
    for c in plots.class_order(np.unique(fl)):
        sel = fl == c
        started = np.searchsorted(np.sort(lo[sel]), mjd, side="right")  # lo <= t
        ended = np.searchsorted(np.sort(hi[sel]), mjd, side="right")  # hi <= t
        out[c] = (started - ended).astype("int64")
    return pd.DataFrame(out, index=index)


def pixel_table(intervals: pd.DataFrame, last_mjd: float | None = None) -> pd.DataFrame:
    """One row per defective pixel: ``y, x, flag, onset_mjd, recovered, n_intervals``.

    ``onset_mjd``: its earliest interval start (NaN when bad since before the first exposure);
    ``flag``: the class of its latest interval; ``recovered``: no interval of it is bad at
    ``last_mjd`` (default: the latest interval boundary).
    """
    cols = ["y", "x", "flag", "onset_mjd", "recovered", "n_intervals"]
    if intervals is None or not len(intervals):
        return pd.DataFrame(columns=cols)
    lo, hi = _lo_hi(intervals)
    d = pd.DataFrame({"y": intervals["y"].to_numpy(int), "x": intervals["x"].to_numpy(int),
                      "flag": intervals["flag"].astype(str).to_numpy(), "lo": lo, "hi": hi})
    if last_mjd is None:
        fin = np.concatenate([lo[np.isfinite(lo)], hi[np.isfinite(hi)]])
        last_mjd = float(fin.max()) if fin.size else 0.0
    d["bad_now"] = (d["lo"] <= last_mjd) & (last_mjd < d["hi"])
    d = d.sort_values(["y", "x", "lo"], kind="stable")
    g = d.groupby(["y", "x"], sort=True)
    out = pd.DataFrame({"flag": g["flag"].last(), "onset_mjd": g["lo"].min(),
                        "recovered": ~g["bad_now"].any(), "n_intervals": g.size()}).reset_index()
    out["onset_mjd"] = out["onset_mjd"].where(np.isfinite(out["onset_mjd"]), np.nan)
    return out[cols]


def class_summary(intervals: pd.DataFrame, last_mjd: float | None = None) -> pd.DataFrame:
    """Per class: DQ value, intervals, pixels, pixels bad at ``last_mjd``, recovered, median amplitude."""
    cols = ["class", "DQ value", "intervals", "pixels", "bad at last exposure", "recovered pixels",
            "median amplitude", "median significance"]
    if intervals is None or not len(intervals):
        return pd.DataFrame(columns=cols)
    lo, hi = _lo_hi(intervals)
    if last_mjd is None:
        fin = np.concatenate([lo[np.isfinite(lo)], hi[np.isfinite(hi)]])
        last_mjd = float(fin.max()) if fin.size else 0.0
    fl = intervals["flag"].astype(str).to_numpy()
    rows = []
    for c in plots.class_order(np.unique(fl)):
        sel = fl == c
        sub = intervals[sel]
        pix = set(zip(sub["y"].to_numpy(int), sub["x"].to_numpy(int), strict=True))
        now = sel & (lo <= last_mjd) & (last_mjd < hi)
        now_pix = set(zip(intervals["y"].to_numpy(int)[now], intervals["x"].to_numpy(int)[now], strict=True))
        amp = pd.to_numeric(sub["amplitude"], errors="coerce") if "amplitude" in sub else pd.Series(dtype=float)
        sig = pd.to_numeric(sub["significance"], errors="coerce") if "significance" in sub else pd.Series(dtype=float)
        rows.append({"class": c, "DQ value": flags.PIXEL.get(c, ""), "intervals": int(sel.sum()),
                     "pixels": len(pix), "bad at last exposure": len(now_pix),
                     "recovered pixels": len(pix - now_pix),
                     "median amplitude": f"{amp.median():.3g}" if amp.notna().any() else "",
                     "median significance": f"{sig.median():.3g}" if sig.notna().any() else ""})
    return pd.DataFrame(rows, columns=cols)


def top_pixels(intervals: pd.DataFrame, n: int = 8) -> pd.DataFrame:
    """The ``n`` distinct pixels with the most significant intervals (``significance``, else
    ``|amplitude|``, else table order): ``y, x, score``, most significant first."""
    if intervals is None or not len(intervals) or n <= 0:
        return pd.DataFrame(columns=["y", "x", "score"])
    for c in ("significance", "amplitude"):
        if c in intervals:
            score = pd.to_numeric(intervals[c], errors="coerce").abs().fillna(-1.0).to_numpy()
            break
    else:
        score = -np.arange(len(intervals), dtype=float)
    d = pd.DataFrame({"y": intervals["y"].to_numpy(int), "x": intervals["x"].to_numpy(int), "score": score})
    d = d.groupby(["y", "x"], as_index=False)["score"].max()
    return d.sort_values(["score", "y", "x"], ascending=[False, True, True], kind="stable").head(n).reset_index(drop=True)


def _bit_counts(values: np.ndarray) -> dict[str, int]:
    """Pixels with each DQ bit set among ``values`` (bits that occur, in bit order)."""
    vals, n = np.unique(np.asarray(values, "uint32"), return_counts=True)
    out: dict[str, int] = {}
    for v, k in zip(vals, n, strict=True):
        for name in flags.names(v):
            out[name] = out.get(name, 0) + int(k)
    return dict(sorted(out.items(), key=lambda kv: flags.PIXEL[kv[0]]))


def epoch_changes(times: Iterable, masks: Iterable[np.ndarray]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per epoch: pixels flagged and what changed from the previous epoch.

    Parameters
    ----------
    times : epoch start times (datetime64), in order
    masks : the epochs' 2-D uint32 DQ masks, in the same order (consumed one at a time)

    Returns
    -------
    (changes, counts)
        ``changes``: one row per epoch: ``epoch, start, flagged, newly flagged, unflagged,
        bits changed, by bit`` (e.g. ``HOT +12 -3``); ``counts``: ``time`` and one column per DQ
        bit with the pixels carrying it (the timeline's input).
    """
    rows, counts = [], []
    prev = None
    for i, (t, m) in enumerate(zip(times, masks, strict=True)):
        m = np.asarray(m, "uint32")
        flagged = m[m != 0]
        counts.append({"time": pd.Timestamp(t), **_bit_counts(flagged)})
        row = {"epoch": i, "start": pd.Timestamp(t).strftime("%Y-%m-%d %H:%M:%S"), "flagged": int(flagged.size)}
        if prev is None:
            row.update({"newly flagged": "", "unflagged": "", "bits changed": "", "by bit": "(first epoch)"})
        else:
            ch = m != prev  # work on the few pixels that changed
            a, b = prev[ch], m[ch]
            on, off = _bit_counts((b & ~a)[(b & ~a) != 0]), _bit_counts((a & ~b)[(a & ~b) != 0])
            names = sorted(set(on) | set(off), key=lambda n: flags.PIXEL[n])
            row.update({"newly flagged": int(((b != 0) & (a == 0)).sum()),
                        "unflagged": int(((b == 0) & (a != 0)).sum()),
                        "bits changed": int(((b != 0) & (a != 0)).sum()),
                        "by bit": ", ".join(f"{n} +{on.get(n, 0)} -{off.get(n, 0)}" for n in names) or "no change"})
        rows.append(row)
        prev = m
    counts_df = pd.DataFrame(counts).fillna(0)
    for c in counts_df.columns:
        if c != "time":
            counts_df[c] = counts_df[c].astype("int64")
    return pd.DataFrame(rows), counts_df


def footprint_box(covered: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box ``(y0, y1, x0, x1)`` (0-based, half-open) of True pixels, None when none."""
    rows = np.flatnonzero(covered.any(axis=1))
    cols = np.flatnonzero(covered.any(axis=0))
    if not rows.size:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def subarray_footprints(store: str, exposures: pd.DataFrame, frame_shape) -> dict[str, tuple[int, int, int, int]]:
    """Each subarray's footprint in the frame: from the exposure table's ``y0, x0, ny, nx`` when
    ingest recorded them, else from the data of the subarray's first exposure (full-frame
    footprints are the frame itself and are not returned)."""
    out: dict[str, tuple[int, int, int, int]] = {}
    if exposures is None or not len(exposures):
        return out
    full = (0, frame_shape[0], 0, frame_shape[1])
    if {"y0", "x0", "ny", "nx"} <= set(exposures.columns):  # footprints recorded at ingest
        for sub, grp in exposures.groupby(exposures["subarray"].astype(str), sort=False):
            r = grp.iloc[0]
            if int(r["ny"]) > 0 and int(r["nx"]) > 0:
                box = (int(r["y0"]), int(r["y0"]) + int(r["ny"]), int(r["x0"]), int(r["x0"]) + int(r["nx"]))
                if box != full:
                    out[sub] = box
        if all(int(v) > 0 for v in exposures["ny"]):
            return out
    ds = open_cube(store)
    names = ds["subarray"].values
    for sub in pd.unique(exposures["subarray"].astype(str)):
        idx = np.flatnonzero(names == sub)
        if not idx.size:
            continue
        one = ds.isel(time=int(idx[0]))
        covered = np.isfinite(one["sci"].values) | (one["dq"].values != 0)
        box = footprint_box(covered)
        if sub not in out and box is not None and box != full:
            out[sub] = box
    return out


# --------------------------------------------------------------------------- figures


def _save(fig, path: Path) -> str:
    fig.savefig(path, dpi=100)
    return path.name


def _history_inputs(store: str, inp: Inputs, n: int) -> tuple[list[dict], list[str]]:

    hist, problems = [], []
    ds = open_cube(store)
    iv = inp.intervals
    top = top_pixels(iv, n)
    for y, x, score in top.itertuples(index=False):
        mine = iv[(iv["y"].to_numpy() == y) & (iv["x"].to_numpy() == x)]
        try:
            h = pixel_history(store, int(y), int(x), profile=inp.profile, intervals=mine, cube=ds)
        except Exception as e:  # one unreadable pixel must not take the page down
            problems.append(f"pixel (y={y}, x={x}): {type(e).__name__}: {e}")
            continue
        spans = [(plots.mjd_to_datetime(s) if np.isfinite(s) else None,
                  plots.mjd_to_datetime(e) if np.isfinite(e) else None, str(f))
                 for s, e, f in zip(mine["start_mjd"].to_numpy(float), mine["end_mjd"].to_numpy(float),
                                    mine["flag"], strict=True)]
        fl = "+".join(plots.class_order(mine["flag"].astype(str).unique()))
        what = "significance" if "significance" in iv else "score"
        hist.append({"title": f"y={y}, x={x}: {fl}, {what} {score:.3g}", "time": h["time"].values,
                     "residual": h["residual"].values, "err": h["err"].values, "spans": spans,
                     "unit": h["residual"].attrs.get("units", "")})
    return hist, problems


# --------------------------------------------------------------------------- HTML


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 1250px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num, th.num { text-align: right; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #444; max-width: 60em; }
.note { background: #fff7e0; border-left: 4px solid #e0a800; padding: 0.5em 0.8em; margin: 0.8em 0; }
.meta { color: #555; font-size: 0.9em; }
nav a { margin-right: 1em; }
#image-check { color: #777; font-size: 0.8em; }
"""

#: fills in #image-check whether every <img> loaded (for readers, and for the browser test)
IMAGE_CHECK_JS = """
window.addEventListener("load", function () {
  var imgs = document.querySelectorAll("img"), broken = [];
  for (var i = 0; i < imgs.length; i++) {
    if (!(imgs[i].complete && imgs[i].naturalWidth > 0)) broken.push(imgs[i].getAttribute("src"));
  }
  var p = document.getElementById("image-check");
  p.setAttribute("data-images", String(imgs.length));
  p.setAttribute("data-broken", broken.join(" "));
  p.setAttribute("data-checked", "yes");
  p.textContent = broken.length ? ("Images that failed to load: " + broken.join(", "))
                                : ("All " + imgs.length + " figures loaded.");
});
"""


def _esc(s) -> str:
    return html.escape(str(s))


def _table(df: pd.DataFrame, max_rows: int | None = None) -> str:
    if df is None or not len(df):
        return "<p class='meta'>(empty)</p>"
    more = ""
    if max_rows is not None and len(df) > max_rows:
        more = f"<p class='meta'>First {max_rows} of {len(df)} rows shown.</p>"
        df = df.head(max_rows)
    return df.to_html(index=False, border=0, na_rep="", escape=True) + more


def _note(text: str) -> str:
    return f"<p class='note'>{_esc(text)}</p>"


def _figure(name: str | None, caption: str, alt: str) -> str:
    if not name:
        return ""
    return (f"<figure><img src='{_esc(name)}' alt='{_esc(alt)}'>"
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def _kv_table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _span(mjd: np.ndarray) -> tuple[str, str, float]:
    a, b = float(np.nanmin(mjd)), float(np.nanmax(mjd))
    f = "%Y-%m-%d %H:%M"
    return plots.mjd_to_datetime(a).strftime(f), plots.mjd_to_datetime(b).strftime(f), b - a


def summary_rows(inp: Inputs) -> list[tuple[str, Any]]:
    """The page's headline numbers as (label, value) pairs."""
    rows: list[tuple[str, Any]] = [("store", inp.store)]
    if inp.profile is not None:
        rows.append(("mode profile", f"{inp.profile.name} ({', '.join(inp.profile.detectors)}; "
                                     f"dispersion along {inp.profile.dispersion_axis})"))
    ex = inp.exposures
    if ex is not None and len(ex):
        a, b, days = _span(ex["mjd"].to_numpy(float))
        rows += [("exposures in the cube", len(ex)),
                 ("time span (mid-exposure, UTC)", f"{a} to {b} ({days:.1f} days)"),
                 ("programs", ex["program"].nunique()),
                 ("subarrays", ", ".join(f"{k} {v}" for k, v in ex["subarray"].value_counts().items())),
                 ("EXP_TYPEs", ", ".join(f"{k} {v}" for k, v in ex["exp_type"].value_counts().items()))]
    else:
        rows.append(("exposures in the cube", 0))
    if inp.ingest_log is not None:
        vc = inp.ingest_log["status"].value_counts()
        rows.append(("files seen by ingest", ", ".join(f"{k} {vc.get(k, 0)}" for k in ("ingested", "duplicate", "rejected"))))
    iv = inp.intervals
    if iv is not None:
        npix = len(iv[["y", "x"]].drop_duplicates()) if len(iv) else 0
        rows.append(("defect intervals", f"{len(iv)} on {npix} pixels"))
    if inp.mask is not None:
        rows.append(("mask cube epochs", int(inp.mask.sizes["time"])))
    if inp.manifest is not None:
        rows.append(("MASK files (manifest)", len(inp.manifest)))
    return rows


def render_html(title: str, sections: list[tuple[str, str, str]], meta: str) -> str:
    """The page: ``sections`` are ``(anchor, heading, inner_html)``."""
    nav = " ".join(f"<a href='#{_esc(a)}'>{_esc(h)}</a>" for a, h, _ in sections)
    body = "\n".join(f"<section id='{_esc(a)}'><h2>{_esc(h)}</h2>\n{inner}\n</section>" for a, h, inner in sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)}</title>
<style>{CSS}</style>
<script>{IMAGE_CHECK_JS}</script>
</head>
<body>
<h1>{_esc(title)}</h1>
<p class="meta">{meta}</p>
<nav>{nav}</nav>
{body}
<p id="image-check" data-checked="no">(Figures are PNG files beside this page.)</p>
</body>
</html>
"""


# --------------------------------------------------------------------------- composition


def report(store: str, out: str | Path, *, manifest: str | Path | None = None, top: int = 8,
           spectra: str | Path | dict | None = None, title: str | None = None) -> Path:
    """Write ``OUT/index.html`` and its PNG figures for the store; returns the page's path.

    Parameters
    ----------
    store : str
        lrscube store (path or fsspec URL).
    out : path
        Local folder for the page and figures (created; existing figures are overwritten).
    manifest : path, optional
        MASK file manifest from ``lrscube export-crds`` (JSON or CSV): adds what changed between
        consecutive MASK files.
    top : int
        Number of most significant pixels whose histories are shown.
    spectra : path or dict, optional
        Result of :func:`lrscube.reporting.spectra.spectra_check` (its JSON file): adds the spectral-impact
        section.

    Missing pieces (no intervals, no mask cube, no ingest log) give a note in the page, not an
    error. Example::

        >>> report("run.zarr", "run-report")     # doctest: +SKIP
        PosixPath('run-report/index.html')
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store = str(store)
    inp = gather(store, manifest=manifest, spectra=spectra)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="matplotlib")
        sections = [
            ("summary", "Summary", _summary_section(inp)),
            ("over-time", "Defective pixels over time", _counts_section(inp, out)),
            ("maps", "Detector maps", _maps_section(inp, out)),
            ("amplitudes", "Amplitudes", _amplitude_section(inp, out)),
            ("histories", "Pixel histories", _histories_section(inp, out, top)),
            ("epochs", "Mask epochs", _epochs_section(inp, out)),
            ("coverage", "Input coverage", _coverage_section(inp, out)),
            ("deliveries", "Deliveries and runs", _deliveries_section(inp, out)),
        ]
        if inp.spectra is not None or "spectra" in inp.notes:
            sections.append(("spectra", "Spectral impact", _spectra_section(inp, out)))

    meta = (f"lrscube {_esc(__version__)} &middot; store <code>{_esc(store)}</code> &middot; written "
            f"{_esc(datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))}")
    page = out / "index.html"
    page.write_text(render_html(title or "lrscube report: time-variable bad-pixel mask", sections, meta))
    log.info("report: %s", page)
    return page


def _summary_section(inp: Inputs) -> str:
    parts = [_kv_table(summary_rows(inp))]
    for key in ("exposures", "profile", "intervals", "mask", "ingest_log"):
        if key in inp.notes:
            parts.append(_note(inp.notes[key]))
    for caution in (inp.detect_meta or {}).get("cautions", []):
        parts.append(_note("Caution: " + caution))
    noise = noise_law.describe((inp.detect_meta or {}).get("noise_law"))
    if noise:
        parts.append(_note(noise[0].upper() + noise[1:]))
    if inp.intervals is not None and len(inp.intervals):
        last = float(inp.exposures["mjd"].max()) if inp.exposures is not None and len(inp.exposures) else None
        parts.append("<h3>Defects per class</h3>" + _table(class_summary(inp.intervals, last)))
    if inp.detect_meta:
        parts.append("<details><summary>Detection run (detect.json)</summary><pre>"
                     + _esc(json.dumps(inp.detect_meta, indent=2, default=str)[:20000]) + "</pre></details>")
    return "\n".join(parts)


def _exposure_mjd(inp: Inputs) -> np.ndarray:
    if inp.exposures is not None and len(inp.exposures):
        return inp.exposures["mjd"].to_numpy(float)
    lo, hi = _lo_hi(inp.intervals)
    b = np.concatenate([lo[np.isfinite(lo)], hi[np.isfinite(hi)]])
    return np.unique(b)


def _counts_section(inp: Inputs, out: Path) -> str:
    if inp.intervals is None or not len(inp.intervals):
        return _note(inp.notes.get("intervals", "No defect intervals."))
    mjd = _exposure_mjd(inp)
    if not mjd.size:
        return _note("No exposure times to count defects at.")
    name = _save(plots.class_counts_figure(class_counts(inp.intervals, mjd)), out / "class_counts.png")
    return _figure(name, FIGURES[name], "defective pixels by class against time")


def _maps_section(inp: Inputs, out: Path) -> str:
    if inp.intervals is None or not len(inp.intervals):
        return _note(inp.notes.get("intervals", "No defect intervals."))
    last = float(inp.exposures["mjd"].max()) if inp.exposures is not None and len(inp.exposures) else None
    pix = pixel_table(inp.intervals, last)
    outlines: dict[str, tuple[int, int, int, int]] = {}
    notes = []
    try:
        outlines.update(subarray_footprints(inp.store, inp.exposures, inp.frame_shape))
    except Exception as e:  # noqa: BLE001 - outlines are a nicety
        notes.append(_note(f"Subarray footprints could not be read from the cube: {type(e).__name__}: {e}"))
    if inp.profile is not None and "slit" in inp.profile.regions:
        b = inp.profile.regions["slit"]
        outlines["slit"] = (b.y0, b.y1, b.x0, b.x1)
    a = _save(plots.onset_map_figure(pix, inp.frame_shape, outlines), out / "map_onset.png")
    b = _save(plots.class_map_figure(pix, inp.frame_shape, outlines), out / "map_class.png")
    return "\n".join([*notes, _figure(a, FIGURES[a], "detector map by onset date"),
                      _figure(b, FIGURES[b], "detector map by class")])


def _amplitude_section(inp: Inputs, out: Path) -> str:
    if inp.intervals is None or not len(inp.intervals):
        return _note(inp.notes.get("intervals", "No defect intervals."))
    if "amplitude" not in inp.intervals:
        return _note("The intervals table has no amplitude column.")
    unit = inp.exposures is not None and "bunit" in inp.exposures and len(inp.exposures) and inp.exposures["bunit"].iloc[0]
    name = _save(plots.amplitude_histograms_figure(inp.intervals, unit=unit or ""), out / "amplitudes.png")
    return _figure(name, FIGURES[name], "amplitude histograms per class")


def _histories_section(inp: Inputs, out: Path, top: int) -> str:
    if inp.intervals is None or not len(inp.intervals):
        return _note(inp.notes.get("intervals", "No defect intervals."))
    if inp.exposures is None or not len(inp.exposures):
        return _note(inp.notes.get("exposures", "No exposures to draw histories from."))
    hist, problems = _history_inputs(inp.store, inp, top)
    parts = [_note(p) for p in problems]
    if hist:
        name = _save(plots.pixel_histories_figure(hist), out / "histories.png")
        parts.append(_figure(name, FIGURES[name], "pixel histories"))
    parts.append("<p class='meta'>Any pixel: <code>lrscube.pixel_history(store, y, x).residual.plot()</code>.</p>")
    return "\n".join(parts)


def _epochs_section(inp: Inputs, out: Path) -> str:
    parts = []
    if inp.mask is None:
        parts.append(_note(inp.notes.get("mask", "No mask cube.")))
    else:
        ds = inp.mask
        times = ds["time"].values
        changes, counts = epoch_changes(times, (ds["dq"].isel(time=i).values for i in range(len(times))))
        exp_t = exp_ep = None
        if "exposure_mjd" in ds and "exposure_epoch" in ds:
            exp_t = plots.mjd_to_datetime(ds["exposure_mjd"].values)
            exp_ep = ds["exposure_epoch"].values
        elif inp.exposures is not None and len(inp.exposures):
            exp_t = inp.exposures["time"].to_numpy()
        if "n_exposures" in ds:
            changes.insert(2, "exposures", ds["n_exposures"].values.astype(int))
        name = _save(plots.epoch_timeline_figure(counts, exp_t, exp_ep), out / "epochs.png")
        vf = ds.attrs.get("valid_from")
        parts.append(_figure(name, FIGURES[name], "mask cube epoch timeline"))
        if vf:
            parts.append(f"<p class='meta'>The first epoch is valid from {_esc(vf)}.</p>")
        parts.append("<h3>What changed between consecutive epochs</h3>" + _table(changes, max_rows=500))
    parts.append("<h3>What changed between consecutive MASK files</h3>")
    if inp.manifest is not None:
        if "manifest_source" in inp.notes:
            parts.append(f"<p class='meta'>{_esc(inp.notes['manifest_source'])}</p>")
        parts.append(_table(manifest_view(inp.manifest), max_rows=500))
    elif "manifest" in inp.notes:
        parts.append(_note(inp.notes["manifest"]))
    else:
        parts.append(_note("No MASK file manifest was given (`lrscube export-crds` writes one; pass it "
                           "with --manifest). MASK files are one per epoch, so the epoch table above "
                           "shows the same changes."))
    return "\n".join(parts)


def _coverage_section(inp: Inputs, out: Path) -> str:
    parts = []
    if inp.exposures is not None and len(inp.exposures):
        name = _save(plots.coverage_figure(inp.exposures), out / "coverage.png")
        parts.append(_figure(name, FIGURES[name], "exposures per month"))
    else:
        parts.append(_note(inp.notes.get("exposures", "No exposures in the cube.")))
    parts.append("<h3>Rejected files</h3>")
    log_ = inp.ingest_log
    if log_ is None:
        parts.append(_note(inp.notes.get("ingest_log", "No ingest log.")))
    else:
        rej = log_[log_["status"] == "rejected"]
        if not len(rej):
            parts.append(f"<p>No file was rejected ({len(log_)} files seen by ingest).</p>")
        else:
            by = rej.groupby("reason").size().sort_values(ascending=False).rename("files").reset_index()
            parts.append(f"<p>{len(rej)} of {len(log_)} files seen by ingest were rejected.</p>")
            cols = [c for c in ("file", "reason", "when") if c in rej]
            parts.append(_table(rej[cols].sort_values("file"), max_rows=300))
            if len(by) < len(rej):  # some reasons are shared: the tally helps
                parts.append("<h4>Rejections by reason</h4>" + _table(by, max_rows=100))
        dup = int((log_["status"] == "duplicate").sum())
        if dup:
            parts.append(f"<p class='meta'>{dup} file{'s were' if dup > 1 else ' was'} skipped as "
                         "duplicate of exposures already in the cube.</p>")
    return "\n".join(parts)


def _spectra_section(inp: Inputs, out: Path) -> str:
    if inp.spectra is None:
        return _note(inp.notes.get("spectra", "No spectral-impact result."))

    return report_section(inp.spectra, out)


def _deliveries_section(inp: Inputs, out: Path) -> str:

    parts = []
    if "deliveries" in inp.notes:
        parts.append(_note(inp.notes["deliveries"]))
    if inp.deliveries:
        name = _save(plots.deliveries_figure(history_frame(inp.deliveries)), out / "deliveries.png")
        parts.append(_figure(name, FIGURES[name], "delivery timeline"))
        parts.append(_table(deliveries_table(inp.deliveries)[::-1], max_rows=200))
        parts.append("<p class='meta'>Compare two: <code>lrscube diff --store STORE A B</code> (pixels that "
                     "changed, by class, with a map).</p>")
    else:
        parts.append(_note(f"No delivery recorded yet: `lrscube export-crds --store {inp.store} --out DIR` "
                           "writes one and records it."))
    parts.append("<h3>Runs</h3>")
    if inp.runs:
        parts.append(_table(runs_table(inp.runs)[::-1], max_rows=200))
    else:
        parts.append(_note("No runs recorded in this store (`lrscube history --store STORE`)."))
    return "\n".join(parts)
