"""`lrscube spectra-check`: what the masks do to extracted LRS fixed-slit spectra.

On simulated fixed-slit exposures of a point source with a known spectrum, taken at several
epochs and at several positions along the slit, the spectrum is box-extracted along the trace
with

    (a) no mask                the defects' signal goes straight into the spectrum;
    (b) the static mask        the mask cube's first epoch (what one mask made at the start of the
                               data flags), then flagged pixels interpolated as the pipeline's
                               ``pixel_replace`` does;
    (c) the time-variable mask the epoch of the mask cube valid at the exposure, then the same
                               interpolation;

and a spurious feature is a run of spectral rows deviating from the known spectrum by more than
``nsigma`` (3) times the extraction's noise. The goal (issue 6): (c) removes at least 95 % of
the features (b) leaves.

Which flagged pixels are interpolated: ``pixel_replace`` replaces pixels carrying DO_NOT_USE
(``replace="DO_NOT_USE"``, the pipeline's behaviour, used for (b) and (c)). Classes the mode
profile does not give DO_NOT_USE (WARM, LOW_QE for LRS) are therefore flagged but not replaced;
method ``c-all`` replaces every flagged pixel to show what that policy costs.

The defects are those of the simulation behind the store (its truth table): each science
exposure gets the defects active at its mid-time, with the truth's amplitudes (static defects,
which the truth leaves without amplitude, get one drawn from the scenario's ranges; a telegraph
pixel is high in half of the exposures). Features are counted on noiseless renderings, so every
feature is caused by a defect or by the masking; ``noise=True`` adds a noisy rendering whose
features are reported beside those of a defect-free control with the same noise.

Composition: :func:`science_scene` (noiseless source + sky and its ERR), :func:`render_defects`,
:func:`pixel_replace`, :func:`box_extract`, :func:`find_features` are pure functions of arrays;
:func:`spectra_check` wires them to a store and a truth table and writes ``spectra_check.json``
and figures; :func:`report_section` puts them into the HTML report.
"""

from __future__ import annotations

import html
import json
import logging
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import flags
from .. import plots
from ..config import profiles as _profiles
from ..config.profiles import Box
from ..masks.maskcube import datetime64_to_mjd, open_mask as _open_mask
from ..storage.cube import exists, info
from ..validation import sim_defects
from ..validation.evaluate import read_truth
from ..validation.simulate import illumination, load_scenario, trace_image

log = logging.getLogger(__name__)

RESULT_FILE = "spectra_check.json"
#: methods in the order they are reported: name -> (mask, bits replaced, description)
METHODS = {
    "a": ("none", None, "no mask"),
    "b": ("static", "DO_NOT_USE", "static mask + pixel_replace (DO_NOT_USE)"),
    "c": ("variable", "DO_NOT_USE", "time-variable mask + pixel_replace (DO_NOT_USE)"),
    "c-all": ("variable", "ANY", "time-variable mask + replace every flagged pixel"),
}
GOAL_FRACTION = 0.95
MEDIAN_EFFICIENCY = 1.2533


# --------------------------------------------------------------------------- scene


@dataclass(frozen=True)
class Exposure:
    """Detector set-up of the simulated science exposures (noise model of lrscube.simulate)."""

    exptime_s: float = 1000.0
    tframe_s: float = 2.77504  # FULL frame time
    gain_e_per_dn: float = 5.5
    read_noise_dn: float = 6.0

    def read_variance(self) -> float:
        n = max(2, int(round(self.exptime_s / self.tframe_s)))
        return 12.0 * self.read_noise_dn**2 / (self.tframe_s**2 * (n**3 - n))


def science_scene(box: Box, x_center: float, peak_dn_s: float, profile, scenario: dict,
                  exposure: Exposure = Exposure()) -> tuple[np.ndarray, np.ndarray]:
    """Noiseless fixed-slit exposure (sky through the slit + point-source trace) and its ERR.

    Uses the simulator's own models (:func:`lrscube.validation.simulate.illumination` and
    :func:`lrscube.validation.simulate.trace_image`), sky factor 1, over the full-frame ``box``.
    """
    photon = illumination(box, profile, scenario) + float(scenario["sky"]["floor_dn_s"])
    photon = photon + trace_image(box, "FULL", x_center, peak_dn_s, profile, scenario)
    gt = exposure.gain_e_per_dn * exposure.exptime_s
    err = np.sqrt(np.maximum(photon, 0) / gt + exposure.read_variance())
    return photon, err


def render_defects(photon: np.ndarray, box: Box, defects: pd.DataFrame, high: np.ndarray) -> np.ndarray:
    """``photon`` with the given defects (truth rows inside ``box``, with amplitudes) applied."""
    out = photon.copy()
    if len(defects):
        ly = defects["y"].to_numpy(int) - box.y0
        lx = defects["x"].to_numpy(int) - box.x0
        sim_defects.apply_defects(out, ly, lx, defects["flag"].astype(str).to_numpy(),
                                  defects["amplitude"].to_numpy(float), np.asarray(high, bool))
    return out


# --------------------------------------------------------------------------- pipeline-like steps


def pixel_replace(data: np.ndarray, bad: np.ndarray, n_adjacent: int = 3) -> np.ndarray:
    """Estimate flagged pixels from the cross-dispersion profile of adjacent rows.

    The profile-fit idea of the jwst ``pixel_replace`` step, for a 2-D spectrum dispersed
    along axis 0 (rows are cross-dispersion profiles): for a row with flagged pixels, the
    profiles of up to ``n_adjacent`` rows on each side (their own flagged pixels left out), each
    normalised to its peak, are median-combined; the median profile is scaled to the row's good
    pixels (least squares) and the flagged pixels take the scaled profile's values. Rows without
    a good pixel are left as they are (NaN where flagged).
    """
    data = np.asarray(data, float)
    bad = np.asarray(bad, bool)
    out = np.where(bad, np.nan, data)
    rows = np.flatnonzero(bad.any(axis=1))
    clean = np.where(bad, np.nan, data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        peak = np.nanmax(np.abs(clean), axis=1, keepdims=True)
        norm = clean / np.where(peak > 0, peak, np.nan)
        for r in rows:
            lo, hi = max(0, r - n_adjacent), min(data.shape[0], r + n_adjacent + 1)
            adj = [k for k in range(lo, hi) if k != r]
            prof = np.nanmedian(norm[adj], axis=0)
            good = ~bad[r] & np.isfinite(data[r]) & np.isfinite(prof)
            if not good.any():
                continue
            p, c = prof[good], data[r, good]
            denom = float(np.dot(p, p))
            scale = float(np.dot(p, c)) / denom if denom > 0 else 0.0
            fill = bad[r] & np.isfinite(prof)
            out[r, fill] = scale * prof[fill]
    return out


def box_extract(data: np.ndarray, err: np.ndarray, box_cols: np.ndarray, bg_cols: np.ndarray,
                exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Background-subtracted box sum per row and its 1-sigma noise.

    ``box_cols``/``bg_cols``: column indices (into ``data``) of the extraction box and of the
    background; the background is the per-row median of the background columns (pixels in
    ``exclude`` left out), subtracted from every box pixel. NaN box pixels count as zero (a
    flagged pixel that was not replaced leaves a divot, as in an extraction that skips it).
    """
    data = np.asarray(data, float)
    bgd = data[:, bg_cols].copy()
    bge = np.asarray(err, float)[:, bg_cols].copy()
    if exclude is not None:
        bgd[exclude[:, bg_cols]] = np.nan
        bge[exclude[:, bg_cols]] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        bg = np.nanmedian(bgd, axis=1)
        n_bg = np.sum(np.isfinite(bgd), axis=1)
        bg_err = MEDIAN_EFFICIENCY * np.nanmedian(bge, axis=1) / np.sqrt(np.maximum(n_bg, 1))
    nb = len(box_cols)
    flux = np.nansum(data[:, box_cols] - bg[:, None], axis=1)
    sigma = np.sqrt(np.sum(np.asarray(err, float)[:, box_cols] ** 2, axis=1) + (nb * bg_err) ** 2)
    return flux, sigma


def find_features(dev: np.ndarray, sigma: np.ndarray, nsigma: float = 3.0) -> list[tuple[int, int, float, float]]:
    """Runs of consecutive rows with ``|dev| > nsigma * sigma``: ``(first, last, peak |dev|/sigma,
    dev at the peak)`` with row indices into ``dev``."""
    z = np.abs(dev) / sigma
    hit = np.isfinite(z) & (z > nsigma)
    out = []
    i = 0
    n = len(z)
    while i < n:
        if hit[i]:
            j = i
            while j + 1 < n and hit[j + 1]:
                j += 1
            k = i + int(np.nanargmax(z[i:j + 1]))
            out.append((i, j, float(z[k]), float(dev[k])))
            i = j + 1
        else:
            i += 1
    return out


def overlaps(a: tuple[int, int], features: list[tuple]) -> bool:
    return any(f[0] <= a[1] and a[0] <= f[1] for f in features)


# --------------------------------------------------------------------------- inputs


def fill_static_amplitudes(truth: pd.DataFrame, scenario: dict, rng: np.random.Generator) -> pd.DataFrame:
    """Give rows without an amplitude (the simulator's static defects) one from the scenario's
    ranges: log-uniform for HOT/WARM/TELEGRAPH, uniform for DEAD/LOW_QE; other classes
    (e.g. OTHER_BAD_PIXEL columns) act as DEAD."""
    t = truth.copy()
    t["flag"] = t["flag"].astype(str)
    amp = pd.to_numeric(t.get("amplitude"), errors="coerce") if "amplitude" in t else pd.Series(np.nan, t.index)
    t["amplitude"] = amp.to_numpy(float)
    ranges = scenario.get("amplitudes", {})
    for i in np.flatnonzero(~np.isfinite(t["amplitude"].to_numpy())):
        f = t["flag"].iat[i]
        if f not in ranges:
            t.iat[i, t.columns.get_loc("flag")] = "DEAD"
            f = "DEAD"
        lo, hi = ranges.get(f, (0.9, 1.0))
        if f in sim_defects.ADDITIVE:
            t.iat[i, t.columns.get_loc("amplitude")] = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        else:
            t.iat[i, t.columns.get_loc("amplitude")] = float(rng.uniform(lo, hi))
    return t


def _active(truth: pd.DataFrame, t_mid: float, box: Box) -> pd.DataFrame:
    on = sim_defects.active(truth["start_mjd"].to_numpy(float), truth["end_mjd"].to_numpy(float), t_mid)
    y, x = truth["y"].to_numpy(int), truth["x"].to_numpy(int)
    inside = (y >= box.y0) & (y < box.y1) & (x >= box.x0) & (x < box.x1)
    return truth[on & inside].drop_duplicates(["y", "x"], keep="last")


def _epoch_index(mask_times: np.ndarray, t_start: np.datetime64) -> int:
    i = int(np.searchsorted(mask_times, t_start, side="right")) - 1
    return max(i, 0)


# --------------------------------------------------------------------------- composition


@dataclass
class SpectraResult:
    """What :func:`spectra_check` found; ``summary`` per method, ``features`` one row per feature."""

    summary: pd.DataFrame
    features: pd.DataFrame
    per_exposure: pd.DataFrame
    removal_fraction: float
    removal_fraction_all: float
    goal_met: bool
    parameters: dict[str, Any]
    noisy: pd.DataFrame | None = None
    #: like removal_fraction, over all of (b)'s features, mask artefacts included
    removal_fraction_any: float = float("nan")
    figures: list[str] = field(default_factory=list)
    path: Path | None = None

    def __str__(self) -> str:
        lines = ["spectral impact (features = runs of rows > "
                 f"{self.parameters['nsigma']} sigma from the known spectrum, noiseless renderings):"]
        for r in self.summary.itertuples(index=False):
            lines.append(f"  ({r.method}) {r.description}: {r.features} features ({r.defect_features} from defects, "
                         f"{r.mask_artefacts} from masking), {r.rows} rows, median peak {r.median_peak_sigma:.3g} "
                         f"sigma, largest {r.max_abs_percent:.3g} % of the flux")
        lines.append(f"  (c) removes {100 * self.removal_fraction:.1f} % of the defect features (b) leaves "
                     f"(goal {100 * GOAL_FRACTION:.0f} %: {'met' if self.goal_met else 'NOT met'}); "
                     f"(c-all) {100 * self.removal_fraction_all:.1f} %; (c) over all of (b)'s features, "
                     f"mask artefacts included: {100 * self.removal_fraction_any:.1f} %")
        if self.path:
            lines.append(f"  result: {self.path}")
        return "\n".join(lines)


def spectra_check(store: str, truth, out: str | Path | None = None, *, epochs: int = 8,
                  offsets: tuple[float, ...] = (-12.0, -6.0, 0.0, 6.0, 12.0), peak_dn_s: float = 200.0,
                  exposure: Exposure = Exposure(), half_width: int = 3, bg_gap: int = 2,
                  nsigma: float = 3.0, n_adjacent: int = 3, noise: bool = False, seed: int = 0,
                  mode: str | None = None) -> SpectraResult:
    """Count spurious spectral features with no mask, the static mask and the time-variable mask.

    Parameters
    ----------
    store : str
        lrscube store that has been through ``detect`` (it needs the mask cube), built from the
        simulated exposures whose truth is ``truth``.
    truth : DataFrame, path or simulation folder
        The simulator's truth table (``y, x, flag, start_mjd, end_mjd, amplitude``).
    out : path, optional
        Folder for ``spectra_check.json`` and the figures.
    epochs : int
        Science exposures are taken at this many times spread evenly over the mask cube's span.
    offsets : columns
        Positions of the trace along the slit relative to the slit centre (x=325.1), one
        exposure each per epoch (as nodding and dithers would place it).
    peak_dn_s : float
        Source brightness at the blue end of the trace (DN/s, the simulator's spectral shape).
    exposure : Exposure
        Exposure time and noise model.
    half_width : int
        Extraction box: columns within ``half_width`` of the trace centre.
    bg_gap : int
        Background: slit columns more than ``half_width + bg_gap`` from the trace centre.
    nsigma : float
        Feature threshold in units of the extraction noise.
    n_adjacent : int
        Rows on each side used by the profile-fit replacement (pipeline default 3).
    noise : bool
        Also extract noisy renderings (and a defect-free control with the same noise).
    seed : int
        Seed for static amplitudes, telegraph states and noise.

    Returns
    -------
    SpectraResult (``print`` it for a summary).
    """

    rng = np.random.default_rng(seed)
    profile = _profiles.load(mode or (info(store).get("profile") if _cube_exists(store) else None))
    if profile.dispersion_axis != "y" or "slit_spectrum" not in profile.regions:
        raise ValueError(f"mode profile {profile.name!r}: spectra-check knows the LRS fixed-slit layout "
                         "(dispersion along y, region slit_spectrum)")

    scenario = load_scenario(None)
    box = profile.regions["slit_spectrum"]
    slit_center = float(scenario["sources"]["x_center"]["FULL"])
    truth_t = fill_static_amplitudes(read_truth(truth), scenario, rng)

    ds = _open_mask(store)
    mask_times = ds["time"].values.astype("datetime64[us]")
    static_dq = np.asarray(ds["dq"].isel(time=0)[box.y0:box.y1, box.x0:box.x1].values, "uint32")
    lo, hi = _mask_span(ds)
    times = np.linspace(lo, hi, epochs) if epochs > 1 else np.array([0.5 * (lo + hi)])

    rows_all: list[dict] = []
    per_exp: list[dict] = []
    noisy_rows: list[dict] = []
    examples: list[dict] = []
    cols = np.arange(box.x0, box.x1)
    for e, t0 in enumerate(times):
        t_mid = t0 + exposure.exptime_s / 2 / 86400.0
        i_ep = _epoch_index(mask_times, plots.mjd_to_datetime(t0).to_datetime64().astype("datetime64[us]"))
        var_dq = np.asarray(ds["dq"].isel(time=i_ep)[box.y0:box.y1, box.x0:box.x1].values, "uint32")
        act = _active(truth_t, t_mid, box)
        masks = {"none": None, "static": static_dq, "variable": var_dq}
        for off in offsets:
            xc = slit_center + off
            photon, err = science_scene(box, xc, peak_dn_s, profile, scenario, exposure)
            high = rng.random(len(act)) < 0.5
            imgs = _renderings(rng, photon, err, render_defects(photon, box, act, high), noise)
            box_cols = np.flatnonzero(np.abs(cols - xc) <= half_width)
            bg_cols = np.flatnonzero((np.abs(cols - xc) > half_width + bg_gap) & (cols >= box.x0 + 2) & (cols < box.x1 - 2))
            ref, sig = box_extract(photon, err, box_cols, bg_cols)
            where = {"epoch": e, "mjd": float(t0), "offset": off}
            extracted = {}
            for kind, m, dev, feats in _extractions(imgs, masks, err, box_cols, bg_cols, ref, sig, nsigma, n_adjacent):
                if kind == "noiseless":
                    extracted[m] = dev
                    rows_all += [{**where, "method": m, **row} for row in
                                 _feature_rows(feats, ref, act, box, box_cols, bg_cols, var_dq, static_dq)]
                    per_exp.append({**where, "method": m, "features": len(feats), "mask_epoch": i_ep})
                else:
                    noisy_rows.append({"epoch": e, "offset": off, "method": "control" if kind == "control" else m,
                                       "features": len(feats)})
            examples.append({"epoch": e, "offset": off, "mjd": float(t0), "ref": ref, "sigma": sig, "dev": extracted})

    params = {"store": str(store), "epochs": int(epochs), "offsets": list(offsets), "peak_dn_s": peak_dn_s,
              "exptime_s": exposure.exptime_s, "half_width": half_width, "bg_gap": bg_gap, "nsigma": nsigma,
              "n_adjacent": n_adjacent, "noise": noise, "seed": seed, "rows": [box.y0, box.y1],
              "columns": [box.x0, box.x1], "slit_center": slit_center,
              "times_mjd": [float(t) for t in times], "n_mask_epochs": int(ds.sizes["time"]),
              "static_mask": "mask cube epoch 0", "methods": {k: v[2] for k, v in METHODS.items()}}
    res = _result(rows_all, per_exp, noisy_rows if noise else [], params)
    if out is not None:
        _write(res, Path(out), examples, box)
    return res


def _feature_rows(feats, ref, act, box, box_cols, bg_cols, var_dq, static_dq) -> list[dict]:
    """One row per feature: its rows, size (sigma, DN/s, percent of the spectrum) and cause."""
    rows = []
    for a, b, z, d in feats:
        cause, n_def = _cause(act, box, a, b, box_cols, bg_cols, var_dq, static_dq)
        rows.append({"first_row": int(box.y0 + a), "last_row": int(box.y0 + b), "peak_sigma": z, "dev_dn_s": d,
                     "percent": 100.0 * abs(d) / max(abs(ref[a:b + 1]).max(), 1e-12),
                     "defect": n_def > 0, "cause": cause})
    return rows


def _renderings(rng: np.random.Generator, photon: np.ndarray, err: np.ndarray, with_defects: np.ndarray,
                noise: bool) -> dict[str, np.ndarray]:
    """The images extracted: noiseless with defects; with ``noise``, the same noisy and a
    defect-free control with the same noise."""
    imgs = {"noiseless": with_defects}
    if noise:
        nz = rng.standard_normal(photon.shape) * err
        imgs["noisy"] = with_defects + nz
        imgs["control"] = photon + nz
    return imgs


def _extractions(imgs, masks, err, box_cols, bg_cols, ref, sig, nsigma, n_adjacent):
    """(image kind, method, deviation from the defect-free spectrum, its features) for every
    image and method (the control: method "a" only)."""
    for kind, img in imgs.items():
        for m, (mask_name, bits, desc) in METHODS.items():
            if kind == "control" and m != "a":
                continue
            dq = masks[mask_name]
            data, excl = img, None
            if dq is not None:
                excl = dq != 0
                rep = (dq & np.uint32(flags.DO_NOT_USE)) != 0 if bits == "DO_NOT_USE" else excl
                data = pixel_replace(img, rep, n_adjacent)
            f, _ = box_extract(data, err, box_cols, bg_cols, exclude=excl)
            dev = f - ref
            yield kind, m, dev, find_features(dev, sig, nsigma)


def _result(rows_all: list[dict], per_exp: list[dict], noisy_rows: list[dict], params: dict) -> SpectraResult:
    """The features, their summary and the fractions of defect features each mask removes."""
    feats = pd.DataFrame(rows_all, columns=["epoch", "mjd", "offset", "method", "first_row", "last_row",
                                            "peak_sigma", "dev_dn_s", "percent", "defect", "cause"])
    per = pd.DataFrame(per_exp)
    frac = _removal(feats, "b", "c")
    noisy = pd.DataFrame(noisy_rows).groupby("method", sort=False)["features"].sum().reset_index() if noisy_rows else None
    return SpectraResult(summary=_summarise(feats, per), features=feats, per_exposure=per, removal_fraction=frac,
                         removal_fraction_all=_removal(feats, "b", "c-all"), goal_met=bool(frac >= GOAL_FRACTION),
                         parameters=params, noisy=noisy, removal_fraction_any=_removal(feats, "b", "c", defects_only=False))


def _cube_exists(store) -> bool:
    return exists(store)


def _mask_span(ds) -> tuple[float, float]:
    if "exposure_expstart" in ds:
        v = ds["exposure_expstart"].values.astype(float)
        return float(np.nanmin(v)), float(np.nanmax(v))
    if "mjd" in ds.coords:
        v = ds["mjd"].values.astype(float)
        return float(v.min()), float(v.max()) + 1.0

    v = datetime64_to_mjd(ds["time"].values)
    return float(np.min(v)), float(np.max(v)) + 1.0


def _cause(act: pd.DataFrame, box: Box, a: int, b: int, box_cols, bg_cols, var_dq, static_dq) -> tuple[str, int]:
    """The truth defects on a feature's rows in the box or background columns, their flags in the
    time-variable and static masks, and how many there are."""
    y0, y1 = box.y0 + a, box.y0 + b
    sel = act[(act["y"] >= y0) & (act["y"] <= y1)]
    parts = []
    for r in sel.itertuples(index=False):
        lx = int(r.x) - box.x0
        where = "box" if lx in set(box_cols.tolist()) else ("background" if lx in set(bg_cols.tolist()) else None)
        if where is None:
            continue
        ly = int(r.y) - box.y0
        v = flags.names(var_dq[ly, lx]) or ["unflagged"]
        s = "static-flagged" if static_dq[ly, lx] else "not in static"
        parts.append(f"{r.flag} ({r.y},{r.x}) {where}, mask: {'|'.join(v)}, {s}")
    return "; ".join(parts) or "no defect on these rows (masking/interpolation)", len(parts)


def _summarise(feats: pd.DataFrame, per: pd.DataFrame) -> pd.DataFrame:
    rows = []
    n_exp = int(per[per["method"] == "a"].shape[0]) if len(per) else 0
    for m, (_, _, desc) in METHODS.items():
        f = feats[feats["method"] == m]
        rows.append({"method": m, "description": desc, "exposures": n_exp, "features": int(len(f)),
                     "defect_features": int(f["defect"].sum()) if len(f) else 0,
                     "mask_artefacts": int((~f["defect"].astype(bool)).sum()) if len(f) else 0,
                     "rows": int((f["last_row"] - f["first_row"] + 1).sum()) if len(f) else 0,
                     "median_peak_sigma": float(f["peak_sigma"].median()) if len(f) else 0.0,
                     "max_abs_percent": float(f["percent"].max()) if len(f) else 0.0})
    return pd.DataFrame(rows)


def _removal(feats: pd.DataFrame, base: str, new: str, defects_only: bool = True) -> float:
    """Fraction of ``base``'s features (those caused by a defect, unless ``defects_only`` is
    False) with no feature of ``new`` on overlapping rows of the same exposure (1.0 when
    ``base`` has none)."""
    b = feats[feats["method"] == base]
    if defects_only:
        b = b[b["defect"].astype(bool)]
    if not len(b):
        return 1.0
    n = feats[feats["method"] == new]
    left = 0
    for (e, off), grp in b.groupby(["epoch", "offset"]):
        other = n[(n["epoch"] == e) & (n["offset"] == off)]
        ofe = [(r.first_row, r.last_row) for r in other.itertuples(index=False)]
        for r in grp.itertuples(index=False):
            if overlaps((r.first_row, r.last_row), ofe):
                left += 1
    return 1.0 - left / len(b)


# --------------------------------------------------------------------------- output


def _write(res: SpectraResult, out: Path, examples: list[dict], box: Box) -> None:
    out.mkdir(parents=True, exist_ok=True)
    feats = res.features
    epochs = res.per_exposure.groupby("epoch")["mjd"].first() if len(res.per_exposure) else pd.Series(dtype=float)
    index = plots.mjd_to_datetime(epochs.to_numpy()) if len(epochs) else pd.DatetimeIndex([])

    def per_epoch(sel: pd.DataFrame) -> pd.DataFrame:
        t = sel.groupby(["epoch", "method"]).size().unstack(fill_value=0)
        t = t.reindex(index=epochs.index, columns=list(METHODS), fill_value=0)
        t.index = index
        return t

    defect = feats["defect"].astype(bool)
    fig = plots.spectra_counts_figure(per_epoch(feats[defect]), {m: v[2] for m, v in METHODS.items()},
                                      artefacts=per_epoch(feats[~defect]))
    fig.savefig(out / "spectra_counts.png", dpi=100)
    # the exposure where (b) leaves the most features
    best = max(examples, key=lambda ex: int(np.sum(np.abs(ex["dev"].get("b", np.zeros(1))) > 3 * ex["sigma"]))
               if "b" in ex["dev"] else 0) if examples else None
    figs = ["spectra_counts.png"]
    if best is not None:
        rows = np.arange(box.y0, box.y1)
        fig = plots.spectra_example_figure(rows, best["ref"], best["sigma"],
                                           {m: best["dev"][m] for m in METHODS if m in best["dev"]},
                                           {m: v[2] for m, v in METHODS.items()},
                                           title=f"Exposure at {plots.mjd_to_datetime(best['mjd']):%Y-%m-%d}, "
                                                 f"trace at slit offset {best['offset']:+g} columns",
                                           nsigma=res.parameters["nsigma"])
        fig.savefig(out / "spectra_example.png", dpi=100)
        figs.append("spectra_example.png")
    res.figures = figs
    res.path = out / RESULT_FILE
    doc = {"parameters": res.parameters, "removal_fraction": res.removal_fraction,
           "removal_fraction_all": res.removal_fraction_all, "removal_fraction_any": res.removal_fraction_any,
           "goal_fraction": GOAL_FRACTION,
           "goal_met": res.goal_met, "summary": res.summary.to_dict("records"),
           "features": res.features.to_dict("records"), "figures": figs,
           "noisy": None if res.noisy is None else res.noisy.to_dict("records")}
    res.path.write_text(json.dumps(doc, indent=2, default=float))


def report_section(result: dict, out: Path) -> str:
    """HTML for the report's spectral-impact section from a ``spectra_check.json`` document
    (figures are copied next to the page)."""
    esc = html.escape
    src = Path(result.get("_dir", "."))
    parts = []
    s = pd.DataFrame(result.get("summary", []))
    frac = result.get("removal_fraction")
    if frac is not None:
        met = "met" if result.get("goal_met") else "NOT met"
        parts.append(f"<p><b>The time-variable mask (c) removes {100 * frac:.1f} % of the spurious features "
                     f"caused by defects that the static mask (b) leaves</b> (goal "
                     f"{100 * result.get('goal_fraction', GOAL_FRACTION):.0f} %: {met}). Replacing every flagged "
                     f"pixel instead of DO_NOT_USE ones only (c-all): "
                     f"{100 * result.get('removal_fraction_all', float('nan')):.1f} %. Counting also (b)'s features "
                     f"on rows without a defect (masking artefacts): "
                     f"{100 * result.get('removal_fraction_any', float('nan')):.1f} %.</p>")
    p = result.get("parameters", {})
    parts.append(f"<p class='meta'>{esc(str(p.get('epochs')))} epochs x {len(p.get('offsets', []))} trace positions; "
                 f"source peak {esc(str(p.get('peak_dn_s')))} DN/s, {esc(str(p.get('exptime_s')))} s; box "
                 f"+-{esc(str(p.get('half_width')))} columns; feature = run of rows &gt; {esc(str(p.get('nsigma')))} "
                 f"sigma from the known spectrum (noiseless renderings); static mask = "
                 f"{esc(str(p.get('static_mask')))}.</p>")
    if len(s):
        parts.append(s.to_html(index=False, border=0, float_format=lambda v: f"{v:.3g}"))
    for name in result.get("figures", []):
        f = src / name
        if f.exists():
            if f.resolve() != (out / name).resolve():
                shutil.copy(f, out / name)
            parts.append(f"<figure><img src='{esc(name)}' alt='{esc(name)}'><figcaption>"
                         f"{esc(_CAPTIONS.get(name, ''))}</figcaption></figure>")
    feats = pd.DataFrame(result.get("features", []))
    if len(feats):
        left = feats[feats["method"] == "c"]
        is_def = left["defect"].astype(bool) if "defect" in left else pd.Series(True, left.index)
        cols = [c for c in ("epoch", "offset", "first_row", "last_row", "peak_sigma", "percent", "cause") if c in left]
        if is_def.any():
            parts.append("<h3>Features from defects the time-variable mask leaves (method c)</h3>")
            parts.append(left[is_def][cols].head(200).to_html(index=False, border=0, float_format=lambda v: f"{v:.3g}"))
        art = feats[~feats["defect"].astype(bool)] if "defect" in feats else feats.iloc[:0]
        if len(art):
            parts.append("<h3>Features on rows without a defect (made by masking: flagged pixels that could "
                         "not be interpolated, or flags on good pixels)</h3>")
            g = (art.groupby(["method", "first_row", "last_row"])
                 .agg(exposures=("epoch", "size"), max_percent=("percent", "max")).reset_index())
            parts.append(g.to_html(index=False, border=0, float_format=lambda v: f"{v:.3g}"))
    return "\n".join(parts)


_CAPTIONS = {
    "spectra_counts.png": "Spurious features per epoch (all trace positions) for each method.",
    "spectra_example.png": "One exposure: the known spectrum and the deviation of each extraction from it, "
                           "in units of the extraction noise.",
}
