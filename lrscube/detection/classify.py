"""Defect classes: one registered, documented test per class (xclim ``dataflags`` style).

Each class is a function decorated with :func:`register` that takes the evidence table of
candidate bad intervals (one row per interval, columns described in :data:`EVIDENCE`) and
keyword thresholds with units, and returns a boolean Series: "this interval is of my class".
:func:`classify` runs the registered tests in their order; an interval gets the first class
whose test passes; ``OTHER_BAD_PIXEL`` is the fallback. The thresholds come from the
``detection: classes:`` block of the mode profile, keyed by class name and keyword. Adding a
class is adding one function here and one entry in the profile.

The physics behind the evidence: inside a bad interval a pixel's residual against the local sky
``S`` is modelled two ways, by weighted least squares over its exposures:

* additive, ``r = a`` (DN/s): a current independent of the sky (hot, warm, telegraph pixels);
* multiplicative, ``r = -d * S``: a deficit proportional to the sky (dead, low-QE pixels),
  ``d`` the fractional deficit (1 = no response at all).

Because the sky level changes from exposure to exposure (season, pointing, slit or slitless),
the two models predict different residual series, and the better one (lower chi^2) tells which
physics is at work.

Example
-------
>>> import pandas as pd
>>> ev = pd.DataFrame({"sign": [1, -1], "excess_dn_s": [5.0, -2.0], "deficit": [-0.5, 0.97],
...     "chi2_add": [10.0, 900.0], "chi2_mult": [800.0, 12.0], "n": [10, 10],
...     "frac_high": [1.0, 0.0], "frac_low": [0.0, 0.0], "variance_ratio": [1.0, 1.2]})
>>> classify(ev, {}).tolist()
['HOT', 'DEAD']
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from ..config import flags

#: Columns of the evidence table the tests read.
EVIDENCE = {
    "sign": "+1 for an excess over the local sky, -1 for a deficit",
    "n": "exposures in the interval used for the fits",
    "excess_dn_s": "additive model: level a of r = a (DN/s)",
    "excess_err": "standard error of excess_dn_s (DN/s)",
    "deficit": "multiplicative model: d of r = -d * sky (fraction; 1 = no response)",
    "deficit_err": "standard error of deficit",
    "chi2_add": "chi^2 of the additive model",
    "chi2_mult": "chi^2 of the multiplicative model",
    "variance_ratio": "chi^2 / (n - 1) of the better model: excess scatter inside the interval",
    "frac_high": "fraction of exposures more than state_sigma above zero",
    "frac_low": "fraction of exposures within state_sigma of zero",
    "high_level_dn_s": "mean residual of the high exposures (DN/s)",
    "noisy": "excess scatter about its level, significant and beyond the noisy_rms_ratio limit (bool)",
    "static": "the pixel's normal state itself lies beyond a physical limit: bad in every exposure (bool)",
    "switching": "high-state runs at one level joined across quiet stretches the pixel's own switching "
                 "makes probable (bool)",
}


@dataclass(frozen=True)
class ClassTest:
    name: str
    func: Callable[..., pd.Series]
    description: str
    order: int

    def defaults(self) -> dict:
        sig = inspect.signature(self.func)
        return {k: p.default for k, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY}


REGISTRY: dict[str, ClassTest] = {}


def register(name: str, *, order: int, description: str):
    """Register a class test under the DQ bit name ``name`` (checked against stdatamodels)."""
    flags.value(name)

    def deco(func):
        REGISTRY[name] = ClassTest(name, func, description, order)
        func.description = description
        return func

    return deco


def _fits_additive(ev: pd.DataFrame, model_preference_chi2: float) -> pd.Series:
    return (ev["chi2_add"] - ev["chi2_mult"]) <= model_preference_chi2


def _fits_multiplicative(ev: pd.DataFrame, model_preference_chi2: float) -> pd.Series:
    return (ev["chi2_mult"] - ev["chi2_add"]) <= model_preference_chi2


@register("TELEGRAPH", order=10, description=(
    "Random telegraph signal or noisy pixel: inside the interval the pixel switches between a "
    "normal and a high state from exposure to exposure (both states populated, the scatter "
    "about a single level far above the noise), or scatters about its level by more than the "
    "noisy limit (jwst_reffiles' dark-based mask gives pixels with many jumps the TELEGRAPH bit)."))
def telegraph(ev: pd.DataFrame, *, variance_ratio: float = 4.0, min_state_fraction: float = 0.15,
              min_exposures: int = 6) -> pd.Series:
    """TELEGRAPH when ``variance_ratio`` (chi^2/dof, dimensionless) is at least ``variance_ratio``
    and at least ``min_state_fraction`` of the ``n >= min_exposures`` exposures are in each state,
    or when the interval is one of excess scatter (``noisy``), or of high-state runs joined across
    probable quiet stretches (``switching``: both states seen, whatever the duty cycle)."""
    switching = ((ev["variance_ratio"] >= variance_ratio) & (ev["frac_high"] >= min_state_fraction)
                 & (ev["frac_low"] >= min_state_fraction) & (ev["n"] >= min_exposures))
    noisy = ev["noisy"].fillna(False).astype(bool) if "noisy" in ev else False
    joined = ev["switching"].fillna(False).astype(bool) if "switching" in ev else False
    return switching | noisy | joined


@register("DEAD", order=20, description=(
    "Dead pixel: a deficit proportional to the sky that removes (nearly) all of the response."))
def dead(ev: pd.DataFrame, *, max_response: float = 0.05, model_preference_chi2: float = 25.0) -> pd.Series:
    """DEAD when the sky-proportional model fits (not worse than the additive one by more than
    ``model_preference_chi2``) and the remaining response 1 - deficit is at most ``max_response``
    (fraction of a normal pixel's; jwst_reffiles badpix_from_flats: 0.05)."""
    return (ev["sign"] < 0) & (1.0 - ev["deficit"] <= max_response) & _fits_multiplicative(ev, model_preference_chi2)


@register("LOW_QE", order=30, description=(
    "Low quantum efficiency: a deficit proportional to the sky, part of the response left."))
def low_qe(ev: pd.DataFrame, *, min_deficit: float = 0.2, model_preference_chi2: float = 25.0) -> pd.Series:
    """LOW_QE when the sky-proportional model fits and the fractional deficit is at least
    ``min_deficit`` (fraction; pixel-to-pixel response differences of a few percent are normal)."""
    return (ev["sign"] < 0) & (ev["deficit"] >= min_deficit) & _fits_multiplicative(ev, model_preference_chi2)


@register("HOT", order=40, description=(
    "Hot pixel: an additive excess current, independent of the sky, of threshold_dn_s or more."))
def hot(ev: pd.DataFrame, *, threshold_dn_s: float = 1.0, model_preference_chi2: float = 25.0) -> pd.Series:
    """HOT when the additive model fits and the excess is at least ``threshold_dn_s`` (DN/s)."""
    return (ev["sign"] > 0) & (ev["excess_dn_s"] >= threshold_dn_s) & _fits_additive(ev, model_preference_chi2)


@register("WARM", order=50, description=(
    "Warm pixel: an additive excess current below the HOT threshold, found by stacking."))
def warm(ev: pd.DataFrame, *, min_excess_dn_s: float = 0.0, model_preference_chi2: float = 25.0) -> pd.Series:
    """WARM when the additive model fits and the excess is positive and at least
    ``min_excess_dn_s`` (DN/s; HOT, tested first, takes the larger ones)."""
    return (ev["sign"] > 0) & (ev["excess_dn_s"] > min_excess_dn_s) & _fits_additive(ev, model_preference_chi2)


@register("OTHER_BAD_PIXEL", order=1000, description=(
    "Significant and persistent, but neither an additive excess nor a sky-proportional deficit "
    "(e.g. a deficit that does not scale with the sky, or an excess that does)."))
def other(ev: pd.DataFrame) -> pd.Series:
    """Always true: the fallback for significant intervals no other class explains."""
    return pd.Series(True, index=ev.index)


def ordered() -> list[ClassTest]:
    return sorted(REGISTRY.values(), key=lambda t: t.order)


def class_parameters(params: dict | None) -> dict[str, dict]:
    """Validate ``{class: {keyword: value}}`` against the registered tests; fill in defaults."""
    params = dict(params or {})
    out = {}
    for name, test in REGISTRY.items():
        given = dict(params.pop(name, None) or {})
        known = test.defaults()
        unknown = set(given) - set(known)
        if unknown:
            raise ValueError(f"detection.classes.{name}: unknown parameter(s) {sorted(unknown)}; "
                             f"known: {sorted(known)}")
        known.update({k: type(known[k])(v) if known[k] is not None else v for k, v in given.items()})
        out[name] = known
    if params:
        raise ValueError(f"detection.classes: unknown class(es) {sorted(params)}; registered: {sorted(REGISTRY)}")
    return out


def classify(ev: pd.DataFrame, params: dict | None = None) -> pd.Series:
    """Class name of each interval: the first registered test (in order) that passes."""
    cp = class_parameters(params)
    out = pd.Series(pd.NA, index=ev.index, dtype=object)
    if len(ev) == 0:
        return out.astype(object)
    for test in ordered():
        hit = test.func(ev, **cp[test.name]).fillna(False).astype(bool) & out.isna()
        out[hit] = test.name
    return out.astype(object)


def amplitude(ev: pd.DataFrame, cls: pd.Series) -> np.ndarray:
    """Amplitude in the class's unit: DN/s for additive classes, fractional deficit for DEAD/LOW_QE,
    the high-state level for TELEGRAPH."""
    amp = ev["excess_dn_s"].to_numpy(float).copy()
    mult = cls.isin(["DEAD", "LOW_QE"]).to_numpy()
    amp[mult] = ev["deficit"].to_numpy(float)[mult]
    tel = (cls == "TELEGRAPH").to_numpy()
    amp[tel] = ev["high_level_dn_s"].to_numpy(float)[tel]
    if "excess_rms_dn_s" in ev and "noisy" in ev:
        # a noisy pixel whose scatter is not two states: the rms of its excess scatter
        noisy = tel & ev["noisy"].fillna(False).to_numpy(bool) & (ev["frac_high"].to_numpy(float) < 0.15)
        amp[noisy] = ev["excess_rms_dn_s"].to_numpy(float)[noisy]
    return amp


def describe() -> str:
    """The registered classes and their parameters, for docs and --help."""
    lines = []
    for t in ordered():
        lines.append(f"{t.name}: {t.description} Parameters: {t.defaults()}")
    return "\n".join(lines)


def passes_floors(ev: pd.DataFrame, params: dict | None = None) -> pd.Series:
    """Whether an interval's effect is large enough to be a defect at all.

    Every interval is a change against the pixel's own normal state (or that state itself,
    beyond a physical limit: ``static``). An excess must exceed WARM's ``min_excess_dn_s``; a
    deficit must reach LOW_QE's ``min_deficit`` of the normal response (a smaller change of
    response is within what the flat field itself does), unless no sky-proportional deficit
    could be measured (no sky); excess scatter (``noisy``) and a static state beyond its limit
    (both judged against their own limits before) pass.
    """
    cp = class_parameters(params)
    pos = (ev["sign"] > 0) & (ev["excess_dn_s"] > cp["WARM"]["min_excess_dn_s"])
    neg = (ev["sign"] < 0) & ((ev["deficit"] >= cp["LOW_QE"]["min_deficit"]) | ev["deficit"].isna())
    out = pos | neg
    for col in ("noisy", "static"):
        if col in ev:
            out = out | ev[col].fillna(False).astype(bool)
    return out
