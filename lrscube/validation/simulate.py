"""Simulated MIRI blank-sky rate files with a known truth of time-variable defects, for any mode profile.

The layout of a mode (which subarrays, EXP_TYPEs, where light falls: LRS slit and slitless
spectra, MRS slices and channels, the imager's field and its dark coronagraph area) comes from the
mode profile's ``simulation:`` block merged over the scenario (:func:`load_scenario`); rates,
amplitudes and noise come from the scenario. The parts live in their own modules:
:mod:`lrscube.validation.sim_layouts` (the sky), :mod:`lrscube.validation.sim_response` (every pixel's fixed
response: flat field and MRS fringes), :mod:`lrscube.validation.sim_behaviours` (the zoo of defect
behaviours), :mod:`lrscube.validation.sim_lookalikes` (what must not be flagged) and
:mod:`lrscube.validation.sim_defects` (static defects and truth-table helpers). docs/simulation.md says what
each part is based on.

:func:`simulate` is a short composition of named steps, each a function of plain arrays and a
random generator that can be tested alone::

    load_scenario -> plan_exposures -> draw_truth (static + zoo) -> defect_states
        -> plan_lookalikes -> detector_response
        -> for each exposure: render_exposure -> write_rate | write_rateints
        -> truth.csv/.parquet, lookalikes.csv/.parquet, exposures.csv, scenario.yaml

Everything random comes from one ``numpy.random.SeedSequence(seed)``: the plan, the defect
population, the defect states, the look-alikes and each exposure have their own child stream,
so the same seed gives the same files, and the population does not depend on how the files are
rendered (:func:`defect_population` gives it without writing anything). The detector's response
pattern has its own seed (it belongs to the detector, not to a run).

Output layout::

    OUT/jw<program><obs><visit>_<group><seq><activity>_<exposure>_<detector>_rate.fits   (one per exposure;
        detector in lower case: mirimage, mirifushort, mirifulong; _rateints.fits for the
        exposures written per integration)
    OUT/truth/truth.csv, truth.parquet   defects: one row per pixel and bad interval, with its
        behaviour and, for switching and noisy rows, high_mjd (/work/TRUTH-SCHEMA.md layout)
    OUT/truth/lookalikes.csv, .parquet   what must not be flagged: one row per pixel-exposure
    OUT/truth/exposures.csv              one row per file: times, subarray, product, sky, artefacts
    OUT/truth/scenario.yaml              the scenario actually used, with the call's arguments

Example
-------
>>> from lrscube.validation.simulate import simulate
>>> res = simulate("sim", n=20, full_frame=False, seed=1)      # doctest: +SKIP
>>> res.truth.query("not static").behaviour.value_counts()      # doctest: +SKIP
>>> mrs = simulate("sim-mrs", n=10, mode="mrs-short", seed=1)   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import yaml
from astropy.time import Time
from stdatamodels.jwst.datamodels import CubeModel, ImageModel

from ..config import flags, profiles
from . import sim_behaviours as zoo
from . import sim_defects as defects
from . import sim_layouts as layouts
from . import sim_lookalikes as look
from . import sim_response as response
from ..config.profiles import Box, Profile
from .sim_layouts import illumination, spectral_profile  # noqa: F401 (public: lrscube.reporting.spectra uses them)

DEFAULT_SCENARIO = "scenario-default.yaml"
RATE_GLOB = "*_rate.fits"
#: every product the simulator writes (rate and rateints files)
PRODUCT_GLOBS = ("*_rate.fits", "*_rateints.fits")
TRUTH_DIR = "truth"


# ----------------------------------------------------------------------------------------------
# Scenario
# ----------------------------------------------------------------------------------------------

def _configs_dir() -> Path:
    try:
        return profiles.configs_dir()
    except ModuleNotFoundError:  # a checkout that is not installed
        return Path(__file__).resolve().parents[1] / "configs"


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_scenario(scenario: str | Path | dict | None = None, profile: str | Path | Profile | None = None) -> dict:
    """The scenario as a dict: ``scenario`` (a YAML path, a shipped name or a dict) merged over the default.

    With ``profile``, the mode profile's ``simulation:`` block (its layout: subarrays, EXP_TYPEs,
    sky components) is merged between the two: default < profile < ``scenario``, so a scenario
    can still change anything. A scenario only needs the keys it changes. Raises ValueError
    naming the file and the key when a value is malformed.
    """
    default_path = _configs_dir() / DEFAULT_SCENARIO
    with open(default_path) as f:
        sc = yaml.safe_load(f)
    source = str(default_path)
    layout = profiles.load(profile).simulation if profile is not None else {}
    if layout:
        sc = _merge(sc, layout)
        source = f"{source} + {profiles.load(profile).source} (simulation:)"
    if scenario is not None:
        if isinstance(scenario, dict):
            user, user_source = scenario, "<dict>"
        else:
            path = Path(scenario)
            if not path.exists():
                shipped = _configs_dir() / f"scenario-{scenario}.yaml"
                if not shipped.exists():
                    raise ValueError(f"scenario {str(scenario)!r}: no such file, nor a shipped "
                                     f"{shipped.name}; pass a YAML path or a dict")
                path = shipped
            with open(path) as f:
                user = yaml.safe_load(f) or {}
            user_source = str(path)
            if not isinstance(user, dict):
                raise ValueError(f"{path}: a scenario must be a YAML mapping")
        sc = _merge(sc, user)
        source = f"{source} + {user_source}" if layout else user_source
    _validate_scenario(sc, source)
    sc["source"] = source
    return sc


def _validate_scenario(sc: dict, source: str) -> None:
    def get(dotted):
        d = sc
        for part in dotted.split("."):
            if not isinstance(d, dict) or part not in d:
                raise ValueError(f"{source}: scenario lacks '{dotted}' (see configs/{DEFAULT_SCENARIO})")
            d = d[part]
        return d

    for key in ("exposures.exptime_s", "exposures.per_visit", "sky.level_factor", "emi.amplitude_dn_s",
                "emi.frequency_hz", "cosmic_rays.track_length_px", "cosmic_rays.deposit_dn",
                "showers.sigma_px", "showers.peak_deposit_dn", "sources.peak_dn_s",
                *(f"amplitudes.{c}" for c in ("HOT", "WARM", "TELEGRAPH", "DEAD", "LOW_QE"))):
        v = get(key)
        if not (isinstance(v, (list, tuple)) and len(v) == 2 and float(v[0]) <= float(v[1])):
            raise ValueError(f"{source}: '{key}' must be [low, high] with low <= high, got {v!r}")
    optional = {"persistence": ("fraction",), "cr_raised": ("amplitude_dn_s", "tau_hours"),
                "line_offsets": ("lines", "amplitude_dn_s", "duration_exposures"), "sky_steps": ("factor",)}
    for block, keys in optional.items():
        if not sc.get(block):  # null/absent: that look-alike is off
            continue
        for key in keys:
            v = get(f"{block}.{key}")
            if not (isinstance(v, (list, tuple)) and len(v) == 2 and float(v[0]) <= float(v[1])):
                raise ValueError(f"{source}: '{block}.{key}' must be [low, high] with low <= high, got {v!r}")
    zoo.validate(get("new.behaviours"), source)
    for name, cfg in get("new.behaviours").items():
        for cls in (cfg.get("classes") or {}):
            flags.value(cls)
        for cls, v in (cfg.get("amplitudes") or {}).items():
            if not (isinstance(v, (list, tuple)) and len(v) == 2 and float(v[0]) <= float(v[1])):
                raise ValueError(f"{source}: 'new.behaviours.{name}.amplitudes.{cls}' must be [low, high], got {v!r}")
    for cls in get("static.classes"):
        flags.value(cls)
    mix = get("exposures.subarray_mix")
    if not 0 <= float(mix) <= 1:
        raise ValueError(f"{source}: 'exposures.subarray_mix' must be in [0, 1], got {mix!r}")
    weights = sc["exposures"].get("subarray_weights")
    if weights is not None:
        if not (isinstance(weights, dict) and weights and all(float(v) >= 0 for v in weights.values())
                and sum(float(v) for v in weights.values()) > 0):
            raise ValueError(f"{source}: 'exposures.subarray_weights' must map subarray names to weights >= 0 "
                             f"(not all zero), got {weights!r}")
    for key in ("detector.gain_e_per_dn", "detector.read_noise_dn", "exposures.gap_s"):
        if float(get(key)) < 0:
            raise ValueError(f"{source}: '{key}' must be >= 0")
    frac = float(sc["exposures"].get("rateints_fraction", 0.0) or 0.0)
    if not 0 <= frac <= 1:
        raise ValueError(f"{source}: 'exposures.rateints_fraction' must be in [0, 1], got {frac!r}")


# ----------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------

def footprints(profile: Profile, sc: dict) -> dict[str, Box]:
    """Full-frame box each subarray reads: FULL is the frame, others their corner in the profile's geometry."""
    ny, nx = profile.frame_shape
    boxes = {}
    for name in profile.subarrays:
        if name == "FULL":
            boxes[name] = Box(0, ny, 0, nx)
        elif name in profile.subarray_boxes:
            boxes[name] = profile.subarray_boxes[name]
        else:
            raise ValueError(f"subarray {name!r}: mode profile {profile.name!r} gives no corner for it in "
                             f"geometry.subarrays ({profile.source})")
    return boxes


def small_subarray(profile: Profile) -> str | None:
    """The subarray ``full_frame=False`` uses: the profile's first non-FULL one (SLITLESSPRISM for LRS)."""
    subs = [s for s in profile.subarrays if s != "FULL"]
    return subs[0] if subs else None


def detector_name(profile: Profile, sc: dict) -> str:
    """DETECTOR written into the files: ``exposures.detector`` of the scenario, else the profile's first."""
    det = sc["exposures"].get("detector") or profile.detectors[0]
    if det not in profile.detectors:
        raise ValueError(f"exposures.detector {det!r} is not a detector of mode profile {profile.name!r} "
                         f"({list(profile.detectors)})")
    return str(det)


# ----------------------------------------------------------------------------------------------
# Exposure plan
# ----------------------------------------------------------------------------------------------

def _loguniform(rng, lo_hi, size=None):
    lo, hi = (float(v) for v in lo_hi)
    return np.exp(rng.uniform(math.log(lo), math.log(hi), size))


def plan_exposures(rng: np.random.Generator, n: int, sc: dict, profile: Profile, *, start: str | float = "2022-07-15",
                   span_days: float = 900.0, subarray_mix: float | None = None,
                   full_frame: bool = True) -> pd.DataFrame:
    """One row per exposure, in time order: names, subarray, timing, sky level (and sky steps),
    source, and product (``rate`` or ``rateints``).

    Exposures come in visits of ``exposures.per_visit`` back-to-back exposures sharing program,
    observation, visit and subarray; visits start at random times over ``span_days``.
    ``full_frame=False`` makes every exposure SLITLESSPRISM.
    """
    ex = sc["exposures"]
    t0 = float(start) if isinstance(start, (int, float)) else Time(str(start), scale="utc").mjd
    sizes = _visit_sizes(rng, n, *(int(v) for v in ex["per_visit"]))
    vis_sub = _visit_subarrays(rng, sizes, ex, profile, subarray_mix, full_frame)
    plan = pd.DataFrame(_exposure_rows(rng, sizes, vis_sub, ex))
    if plan.empty:
        return plan
    plan = _schedule(rng, plan, len(sizes), float(ex["gap_s"]), t0, float(span_days))
    _name_and_place(plan, sc, profile)
    _sky_and_source(rng, plan, sc)
    # products: some multi-integration exposures are written per integration (rateints)
    frac = float(ex.get("rateints_fraction", 0.0) or 0.0)
    per_int = (rng.random(len(plan)) < frac) & (plan.nints > 1) \
        & (plan.nints <= int(ex.get("rateints_max_nints", 16)))
    plan["product"] = np.where(per_int, "rateints", "rate")

    plan["file"] = [f.format(product=p) for f, p in zip(plan.file, plan["product"])]
    isot = Time(plan.expstart.to_numpy(), format="mjd", scale="utc").isot
    plan["date_obs"] = [s.split("T")[0] for s in isot]
    plan["time_obs"] = [s.split("T")[1] for s in isot]
    return plan.drop(columns=["visit_index"])


def _visit_sizes(rng: np.random.Generator, n: int, lo: int, hi: int) -> list[int]:
    """Exposures per visit, ``lo`` to ``hi`` each, ``n`` in all."""
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(rng.integers(lo, hi + 1)))
    if sizes:
        sizes[-1] -= sum(sizes) - n
    return sizes


def _visit_subarrays(rng: np.random.Generator, sizes: list[int], ex: dict, profile: Profile,
                     subarray_mix: float | None, full_frame: bool) -> list[str]:
    """Each visit's subarray: the scenario's weights, or FULL and the profile's small subarray
    mixed so that ``subarray_mix`` of the exposures are in the latter."""
    n_vis = len(sizes)
    small = small_subarray(profile)
    weights = ex.get("subarray_weights")
    if not full_frame:
        if small is None:
            raise ValueError(f"full_frame=False: mode profile {profile.name!r} accepts no subarray but FULL "
                             f"({profile.source})")
        return [small] * n_vis
    if weights is not None and subarray_mix is None:  # several subarrays: one drawn per visit
        names = [k for k in weights if float(weights[k]) > 0]
        unknown = [k for k in names if k not in profile.subarrays]
        if unknown:
            raise ValueError(f"exposures.subarray_weights names {unknown}, not accepted by mode profile "
                             f"{profile.name!r} (subarrays: {list(profile.subarrays)})")
        p = np.array([float(weights[k]) for k in names])
        return [names[k] for k in rng.choice(len(names), size=n_vis, p=p / p.sum())]
    if "FULL" not in profile.subarrays or small is None:  # one subarray only
        return [profile.subarrays[0]] * n_vis
    # fill visits in random order until the wanted number of subarray exposures is reached
    mix = float(ex["subarray_mix"] if subarray_mix is None else subarray_mix)
    want = round(mix * sum(sizes))
    vis_sub, got = ["FULL"] * n_vis, 0
    for v in rng.permutation(n_vis):
        if got + sizes[v] <= want or (got < want and rng.random() < 0.5):
            vis_sub[v] = small
            got += sizes[v]
    return vis_sub


def _exposure_rows(rng: np.random.Generator, sizes: list[int], vis_sub: list[str], ex: dict) -> list[dict]:
    """One row per exposure: its visit's ids (program, observation, visit: distinct per visit)
    and its readout (groups, integrations, times) for an exposure time drawn log-uniformly."""
    keys = set()
    prog_lo, prog_hi = (int(v) for v in ex["program_range"])
    rows = []
    for v, sub in enumerate(vis_sub):
        while True:
            key = (int(rng.integers(prog_lo, prog_hi + 1)), int(rng.integers(1, 40)), int(rng.integers(1, 4)))
            if key not in keys:
                keys.add(key)
                break
        group, seq, act = int(rng.integers(2, 5)), 1, int(rng.integers(1, 6))
        tframe = float(ex["frame_time_s"][sub])
        max_groups = int(ex["max_groups"][sub])
        for e in range(sizes[v]):
            want_t = float(_loguniform(rng, ex["exptime_s"]))
            nints = max(1, math.ceil(want_t / ((max_groups - 1) * tframe)))
            ngroups = max(5, round(want_t / nints / tframe) + 1)
            effint = (ngroups - 1) * tframe
            rows.append(dict(visit_index=v, program=key[0], observation=key[1], visit=key[2],
                             visit_group=group, sequence=seq, activity=act, exposure=e + 1,
                             subarray=sub, tframe=tframe, ngroups=ngroups, nints=nints,
                             effinttm=effint, effexptm=effint * nints,
                             duration_s=nints * (ngroups + 1) * tframe))
    return rows


def _schedule(rng: np.random.Generator, plan: pd.DataFrame, n_vis: int, gap_s: float, t0: float,
              span_days: float) -> pd.DataFrame:
    """Start, end and mid times: visits at random sorted starts, exposures back to back; visits
    never overlap. Returned in time order."""
    vis_len = plan.groupby("visit_index").duration_s.sum() + gap_s * plan.groupby("visit_index").size()
    vstart = np.sort(rng.uniform(t0, t0 + span_days, n_vis))
    order = rng.permutation(n_vis)  # which visit happens at which start
    starts = np.empty(n_vis)
    t_free = -np.inf
    for rank, v in enumerate(order):
        starts[v] = max(vstart[rank], t_free)
        t_free = starts[v] + vis_len[v] / 86400.0 + 1.0 / 24
    expstart = np.empty(len(plan))
    for v, grp in plan.groupby("visit_index"):
        t = starts[v]
        for i in grp.index:
            expstart[i] = t
            t += (plan.at[i, "duration_s"] + gap_s) / 86400.0
    plan["expstart"] = expstart
    plan["expend"] = expstart + plan["duration_s"] / 86400.0
    plan["expmid"] = 0.5 * (plan["expstart"] + plan["expend"])
    return plan.sort_values("expstart", kind="stable").reset_index(drop=True)


def _name_and_place(plan: pd.DataFrame, sc: dict, profile: Profile) -> None:
    """EXP_TYPE, DETECTOR, the file name (with a ``{product}`` field) and the subarray's corner
    and size (SUBSTRT1/2, SUBSIZE1/2) of every exposure, in place."""
    ex = sc["exposures"]
    boxes = footprints(profile, sc)
    missing = sorted({s for s in plan.subarray if s not in ex["exp_type"]})
    if missing:
        raise ValueError(f"exposures.exp_type gives no EXP_TYPE for subarray(s) {missing} (mode profile "
                         f"{profile.name!r}: add them to its simulation: exposures: exp_type:)")
    plan["exp_type"] = [ex["exp_type"][s] for s in plan.subarray]
    plan["detector"] = detector_name(profile, sc)
    tag = detector_name(profile, sc).lower()
    plan["file"] = [f"jw{r.program:05d}{r.observation:03d}{r.visit:03d}_{r.visit_group:02d}{r.sequence:1d}"
                    f"{r.activity:02d}_{r.exposure:05d}_{tag}_{{product}}.fits" for r in plan.itertuples()]
    for s, col in (("y0", "substrt2"), ("x0", "substrt1")):
        plan[col] = [getattr(boxes[sub], s) + 1 for sub in plan.subarray]
    plan["subsize1"] = [boxes[sub].x1 - boxes[sub].x0 for sub in plan.subarray]
    plan["subsize2"] = [boxes[sub].y1 - boxes[sub].y0 for sub in plan.subarray]


def _sky_and_source(rng: np.random.Generator, plan: pd.DataFrame, sc: dict) -> None:
    """Each exposure's sky (level, gradients, sky steps: a level far outside the usual range
    and a strong gradient, look-alike "sky_step") and source (blank or not, position, peak), in
    place."""
    m = len(plan)
    sky = sc["sky"]
    plan["sky_factor"] = _loguniform(rng, sky["level_factor"], m)
    plan["x_gradient"] = rng.normal(0.0, float(sky["x_gradient_sigma"]), m)
    src = sc["sources"]
    plan["blank"] = rng.random(m) >= float(src["fraction"])
    plan["source_x"] = [float(src["x_center"].get(s, np.nan)) for s in plan.subarray] \
        + rng.normal(0, float(src["x_jitter_px"]), m)
    plan["source_peak_dn_s"] = np.where(plan.blank, 0.0, _loguniform(rng, src["peak_dn_s"], m))
    plan.loc[plan.blank, "source_x"] = np.nan
    y_sigma = float(sky.get("y_gradient_sigma", 0.0) or 0.0)
    plan["y_gradient"] = rng.normal(0.0, y_sigma, m) if y_sigma > 0 else 0.0
    steps = sc.get("sky_steps") or {}
    plan["sky_step"] = rng.random(m) < float(steps.get("probability", 0.0) or 0.0)
    if plan.sky_step.any():
        k = int(plan.sky_step.sum())
        plan.loc[plan.sky_step, "sky_factor"] *= _loguniform(rng, steps["factor"], k)
        g = float(steps.get("gradient_sigma", 0.0))
        plan.loc[plan.sky_step, "x_gradient"] += rng.normal(0.0, g, k)
        plan.loc[plan.sky_step, "y_gradient"] += rng.normal(0.0, g, k)


# ----------------------------------------------------------------------------------------------
# Truth
# ----------------------------------------------------------------------------------------------

def _seen(plan: pd.DataFrame, boxes: dict[str, Box], shape, min_count: int = 1) -> np.ndarray:
    seen = np.zeros(shape, bool)
    counts = plan.subarray.value_counts()
    for sub, c in counts.items():
        if c >= min_count:
            seen[boxes[sub].slices()] = True
    return seen


def placement_masks(placeable: np.ndarray, plan: pd.DataFrame, sc: dict, profile: Profile) -> dict[str, np.ndarray]:
    """The pixels each behaviour may use: ``placeable``, narrowed by its placement rule.

    ``place_in_regions``: inside the named regions of the profile (regions it lacks are
    skipped); ``place_at_subarray_edges_px: k``: within k pixels of an edge of the footprint of
    a subarray the exposures use (a FULL frame's edges too, past the reference columns).
    """
    boxes = footprints(profile, sc)
    ref = profile.reference_mask()
    out = {}
    for name, cfg in (sc["new"].get("behaviours") or {}).items():
        mask = placeable
        regions = cfg.get("place_in_regions")
        if regions:
            inside = np.zeros_like(placeable)
            for r in regions:
                if r in profile.regions:
                    inside[profile.regions[r].slices()] = True
            mask = mask & inside
        k = int(cfg.get("place_at_subarray_edges_px", 0) or 0)
        if k > 0:
            edge = np.zeros_like(placeable)
            for sub in sorted(set(plan.subarray)) if len(plan) else []:
                b = boxes[sub]
                band = np.zeros_like(placeable)
                band[b.slices()] = True
                # the box's usable part: without the reference columns, then its rim of width k
                band &= ~ref
                cols = np.flatnonzero(band.any(axis=0))
                if cols.size == 0:
                    continue
                x0, x1 = cols.min(), cols.max() + 1
                rim = band.copy()
                rim[b.y0 + k:b.y1 - k, x0 + k:x1 - k] = False
                edge |= rim
            mask = mask & edge
        out[name] = mask
    return out


def draw_truth(rng: np.random.Generator, plan: pd.DataFrame, sc: dict, profile: Profile) -> pd.DataFrame:
    """Static defects, the known bad columns and the behaviour zoo's new defects, with ``n_exposures``
    that see each while it is bad.

    Static defects sit on pixels some exposure sees; new ones only where the subarrays used by at
    least ``placement.min_exposure_fraction`` of the exposures see them (and where their
    behaviour's placement rule allows). Reference columns, the shorted columns and already-taken
    pixels are never used again. Rows no exposure sees bad are left out. The noisy rows'
    amplitude is NaN here (:func:`noise_amplitudes` sets it).
    """
    boxes = footprints(profile, sc)
    shape = profile.frame_shape
    ref = profile.reference_mask()
    bad_cols = sc["static"]["shorted_columns"]
    cols_box = profile.regions.get(bad_cols["region"]) if bad_cols else None
    known = ref.copy()
    if cols_box is not None:
        known[cols_box.slices()] = True
    frame_pixels = int((~known).sum())

    seen_any = _seen(plan, boxes, shape)
    static = defects.draw_static(rng, seen_any & ~known, sc["static"], frame_pixels)
    parts = [static]
    if cols_box is not None:
        parts.append(defects.static_columns(seen_any, cols_box, str(bad_cols["flag"])))

    min_count = max(1, math.ceil(float(sc["placement"]["min_exposure_fraction"]) * len(plan)))
    placeable = _seen(plan, boxes, shape, min_count) & ~known
    placeable[static.y.to_numpy(), static.x.to_numpy()] = False
    exp_boxes = [boxes[s] for s in plan.subarray] if len(plan) else []
    anneals = []
    if len(plan):
        where = placement_masks(placeable, plan, sc, profile)
        new = zoo.draw_zoo(rng, placeable, where, zoo.Sightings(plan.expmid.to_numpy(float), exp_boxes),
                           sc["new"], sc["amplitudes"])
        anneals = new.attrs.get("anneals_mjd", [])
        parts.append(new)
    parts = [p for p in parts if len(p)]
    truth = pd.concat(parts, ignore_index=True) if parts else defects.empty_truth()
    truth.attrs = {}
    truth["n_exposures"] = defects.exposure_counts(truth, plan.expmid.to_numpy() if len(plan) else np.zeros(0), exp_boxes)
    truth = truth[truth.static | (truth.n_exposures > 0)].reset_index(drop=True)
    truth.attrs["anneals_mjd"] = list(anneals)
    return truth


def _streams(seed: int):
    """Child generators of one seed: plan, truth, defect states, look-alikes; and the exposures' seed sequence."""
    plan_ss, truth_ss, tel_ss, exp_ss, look_ss = np.random.SeedSequence(seed).spawn(5)
    return (np.random.default_rng(plan_ss), np.random.default_rng(truth_ss), np.random.default_rng(tel_ss), exp_ss,
            np.random.default_rng(look_ss))


def expected_err(plan: pd.DataFrame, sc: dict, profile: Profile, resp: np.ndarray, y: np.ndarray, x: np.ndarray,
                 boxes: dict[str, Box]) -> np.ndarray:
    """(pixels, exposures) ERR (DN/s) that the blank sky gives pixels ``y, x`` in each exposure (NaN where
    an exposure does not see the pixel): the noise model of :func:`render_exposure` without defects."""
    out = np.full((len(y), len(plan)), np.nan)
    if not len(y):
        return out
    full = Box(0, profile.frame_shape[0], 0, profile.frame_shape[1])
    illum = illumination(full, profile, sc)[y, x]
    ny_f, nx_f = profile.frame_shape
    xs = (x - nx_f / 2) / (nx_f / 2)
    ys = (y - ny_f / 2) / (ny_f / 2)
    det = sc["detector"]
    floor = float(sc["sky"]["floor_dn_s"])
    for i, e in enumerate(plan.itertuples()):
        b = boxes[e.subarray]
        inside = (y >= b.y0) & (y < b.y1) & (x >= b.x0) & (x < b.x1)
        photon = resp[y, x] * (illum * e.sky_factor * (1 + e.x_gradient * xs) * (1 + e.y_gradient * ys) + floor)
        var_r = 12.0 * float(det["read_noise_dn"]) ** 2 / (e.tframe**2 * (e.ngroups**3 - e.ngroups)) / e.nints
        err = np.sqrt(np.maximum(photon, 0) / (float(det["gain_e_per_dn"]) * e.effexptm) + var_r)
        out[inside, i] = err[inside]
    return out


def noise_amplitudes(truth: pd.DataFrame, plan: pd.DataFrame, sc: dict, profile: Profile, resp: np.ndarray) -> None:
    """Set each noisy row's amplitude (excess rms, DN/s) to its noise factor x the median ERR the pixel
    has in the exposures that see it while it is bad, in place."""
    rows = np.flatnonzero((truth["effect"].to_numpy() == "noise") & ~truth["static"].to_numpy(bool))
    if not rows.size or not len(plan):
        return
    t = truth.iloc[rows]
    err = expected_err(plan, sc, profile, resp, t.y.to_numpy(), t.x.to_numpy(), footprints(profile, sc))
    bad = defects.active(t.start_mjd.to_numpy(float), t.end_mjd.to_numpy(float), plan.expmid.to_numpy(float))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(np.where(bad, err, np.nan), axis=1)
    truth.loc[truth.index[rows], "amplitude"] = t.noise_factor.to_numpy(float) * med


def defect_states(rng: np.random.Generator, truth: pd.DataFrame, plan: pd.DataFrame,
                  profile: Profile | None = None, sc: dict | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Every new defect row's high state in each exposure and the truth's ``high_mjd``.

    Returns the truth (with ``high_mjd``: for telegraphs between exposures the mid-times of their
    high exposures, for noisy and intra-exposure telegraph rows every exposure of their interval
    (they act in each), None for the others) and the (new rows, exposures) states (True for rows
    that do not switch). A telegraph that is never high in an exposure that sees it leaves no
    trace in the data: its row is dropped.
    """
    new = truth[~truth.static]
    t_mid = plan.expmid.to_numpy(float) if len(plan) else np.zeros(0)
    high = zoo.telegraph_states(rng, new, t_mid)
    switching = np.isfinite(new.dwell_days.to_numpy(float)) & (new.effect == "add").to_numpy()
    if switching.any() and profile is not None and len(plan):
        boxes = footprints(profile, sc)
        y, x = new.y.to_numpy(), new.x.to_numpy()
        sees = np.stack([(y >= b.y0) & (y < b.y1) & (x >= b.x0) & (x < b.x1)
                         for b in (boxes[s_] for s_ in plan.subarray)], axis=1)
        on = defects.active(new.start_mjd.to_numpy(float), new.end_mjd.to_numpy(float), t_mid)
        silent = switching & ~(high & sees & on).any(axis=1)
        if silent.any():
            truth = truth.drop(index=new.index[silent]).reset_index(drop=True)
            high = high[~silent]
            new = truth[~truth.static]
    listed = (np.isfinite(new.dwell_days.to_numpy(float)) | (new.effect == "noise").to_numpy())
    col = pd.Series([None] * len(truth), index=truth.index, dtype=object)
    col[new.index] = defects.high_state_mjd(listed, high, t_mid, new.start_mjd.to_numpy(float),
                                            new.end_mjd.to_numpy(float))
    truth["high_mjd"] = col
    return truth, high


def defect_population(n: int = 150, seed: int = 0, scenario: str | Path | dict | None = None, mode: str = "lrs",
                      start: str | float = "2022-07-15", span_days: float = 900.0,
                      subarray_mix: float | None = None, full_frame: bool = True) -> pd.DataFrame:
    """The truth table :func:`simulate` would write for these arguments, without writing any file.

    Same rows and values (the states too); only ``amplitude_sigma`` (which needs the rendered
    noise) is missing.
    """
    if int(n) < 1:
        raise ValueError(f"n={n}: a defect population needs at least one exposure")
    profile = profiles.load(mode)
    sc = load_scenario(scenario, profile)
    check_layout(sc, profile)
    rng_plan, rng_truth, rng_tel, _, _ = _streams(seed)
    plan = plan_exposures(rng_plan, n, sc, profile, start=start, span_days=span_days,
                          subarray_mix=subarray_mix, full_frame=full_frame)
    truth = draw_truth(rng_truth, plan, sc, profile)
    resp = response.detector_response(profile, sc, detector_name(profile, sc))
    noise_amplitudes(truth, plan, sc, profile, resp)
    truth, _ = defect_states(rng_tel, truth, plan, profile, sc)
    return truth


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------

def _band(sc: dict, box: Box) -> tuple[float, float]:
    """(red row, blue row) of a region: where the dispersed light is at 14 um and at 5 um."""
    return layouts.band_rows(bool(sc["sky"]["wavelength_increases_with_y"]), box)


def trace_image(box: Box, source_subarray: str, x_center: float, peak: float, profile: Profile, sc: dict) -> np.ndarray:
    """Noiseless point-source spectrum (DN/s) over ``box``: a Gaussian across x along the source's rows."""
    src = sc["sources"]
    rows = profile.regions[src["region"][source_subarray]]
    red, blue = _band(sc, rows)
    y = np.arange(box.y0, box.y1, dtype=float)[:, None]
    x = np.arange(box.x0, box.x1, dtype=float)[None, :]
    u = (y - blue) / (red - blue)
    length = abs(red - blue)
    cut = float(sc["sky"]["cutoff_px"])
    along = np.where(u < 0, np.exp(u * length / cut),
                     np.where(u > 1, np.exp(-(u - 1) * length / 2.0), float(src["red_to_blue"]) ** u))
    across = np.exp(-0.5 * ((x - x_center) / float(src["sigma_px"])) ** 2)
    return peak * along * across


def _emi(rng, box: Box, cfg: dict) -> tuple[np.ndarray | float, float]:
    if rng.random() >= float(cfg["probability"]):
        return 0.0, 0.0
    amp = float(rng.uniform(*cfg["amplitude_dn_s"]))
    freq = float(rng.uniform(*cfg["frequency_hz"]))
    nx = box.x1 - box.x0
    y = np.arange(box.y1 - box.y0)[:, None]
    x = np.arange(nx)[None, :]
    t = (y * (nx // 4 + 1) + x // 4) * 10e-6  # 10 us per pixel read, 4 outputs read in parallel
    return amp * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi)), amp


def _cosmic_rays(rng, box: Box, effexptm: float, cfg: dict, rate_key: str, flagged: bool):
    """Pixel coordinates (local) and residual rates of one family of cosmic-ray events."""
    ny, nx = box.y1 - box.y0, box.x1 - box.x0
    n = int(rng.poisson(float(cfg[rate_key]) * ny * nx / 1e6 * effexptm / 1000.0))
    if n == 0:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0), 0
    length = np.where(rng.random(n) < float(cfg["track_fraction"]),
                      rng.integers(int(cfg["track_length_px"][0]), int(cfg["track_length_px"][1]) + 1, n), 1)
    y0, x0 = rng.uniform(0, ny, n), rng.uniform(0, nx, n)
    theta = rng.uniform(0, np.pi, n)
    deposit = _loguniform(rng, cfg["deposit_dn"], n) / effexptm
    if flagged:
        deposit = deposit * float(cfg["flagged_residual"])
    ev = np.repeat(np.arange(n), length)
    step = np.arange(length.sum()) - np.repeat(np.cumsum(length) - length, length)
    yy = np.floor(y0[ev] + step * np.sin(theta[ev])).astype(int)
    xx = np.floor(x0[ev] + step * np.cos(theta[ev])).astype(int)
    amp = deposit[ev] * rng.uniform(0.5, 1.0, ev.size)
    ok = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
    return yy[ok], xx[ok], amp[ok], n


def _showers(rng, box: Box, effexptm: float, cfg: dict) -> tuple[np.ndarray | float, int]:
    """The glow (DN/s over ``box``) of this exposure's showers, and how many there are."""
    ny, nx = box.y1 - box.y0, box.x1 - box.x0
    n = int(rng.poisson(float(cfg["per_megapixel_per_ks"]) * ny * nx / 1e6 * effexptm / 1000.0))
    if n == 0:
        return 0.0, 0
    img = np.zeros((ny, nx))
    for _ in range(n):
        cy, cx = rng.uniform(0, ny), rng.uniform(0, nx)
        s = float(rng.uniform(*cfg["sigma_px"]))
        peak = float(_loguniform(rng, cfg["peak_deposit_dn"])) / effexptm
        r = int(math.ceil(4 * s))
        ys, xs = slice(max(0, int(cy) - r), min(ny, int(cy) + r + 1)), slice(max(0, int(cx) - r), min(nx, int(cx) + r + 1))
        yy = np.arange(ys.start, ys.stop)[:, None] + 0.5
        xx = np.arange(xs.start, xs.stop)[None, :] + 0.5
        img[ys, xs] += peak * np.exp(-0.5 * ((yy - cy) ** 2 + (xx - cx) ** 2) / s**2)
    return img, n


@dataclass
class _Context:
    """What every exposure's rendering shares: scenario, geometry, the detector, the defects, look-alikes."""

    sc: dict
    profile: Profile
    plan: pd.DataFrame
    boxes: dict[str, Box]
    static_dq: np.ndarray          # full-frame DQ of static defects, shorted and reference columns
    resp: np.ndarray               # full-frame response of every pixel (flat x fringes)
    new: pd.DataFrame              # new-defect truth rows (their render columns)
    high: np.ndarray               # (new rows, exposures) high state (True where a row does not switch)
    sigma: np.ndarray              # (new rows, exposures) excess / ERR, NaN where not seen
    latents: list                  # per exposure: latent images it carries (sim_lookalikes.plan_latents)
    raised: pd.DataFrame           # cosmic-ray hits that leave a pixel raised (plan_cr_raised)
    lines: list                    # per exposure: offset rows/columns (plan_line_offsets)
    illum: dict[str, np.ndarray] = field(default_factory=dict)

    def illumination(self, sub: str) -> np.ndarray:
        if sub not in self.illum:
            self.illum[sub] = illumination(self.boxes[sub], self.profile, self.sc)
        return self.illum[sub]


def _static_dq(truth: pd.DataFrame, profile: Profile) -> np.ndarray:
    dq = np.zeros(profile.frame_shape, np.uint32)
    ref = profile.reference_mask()
    dq[ref] |= np.uint32(flags.REFERENCE_PIXEL | flags.NON_SCIENCE)
    st = truth[truth.static]
    for cls, grp in st.groupby("flag"):
        dq[grp.y.to_numpy(), grp.x.to_numpy()] |= np.uint32(flags.value(cls) | flags.DO_NOT_USE)
    return dq


def _acting(ctx: _Context, i: int, box: Box) -> np.ndarray:
    """Indices of the new-defect rows acting on exposure ``i`` inside ``box``."""
    t = float(ctx.plan.expmid.iat[i])
    new = ctx.new
    idx = defects.rows_in(box, t, new.y.to_numpy(), new.x.to_numpy(), new.on_mjd.to_numpy(float),
                          new.off_mjd.to_numpy(float))
    return idx[ctx.high[idx, i]]


def render_exposure(i: int, ctx: _Context, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, Any],
                                                                              pd.DataFrame]:
    """SCI, ERR, DQ, VAR_POISSON, VAR_RNOISE of exposure ``i`` (subarray-sized; with a leading
    integration axis when the exposure is written as rateints), its info and its look-alike rows.

    Noiseless light = (floor + sky x level x gradients + source trace + latents) x each pixel's
    response, scaled by multiplicative defects, plus additive defect currents and raised
    pixels. SCI draws Poisson electrons from it over the integration time and adds read noise;
    ERR is the 1-sigma of that noise from the noiseless signal (ERR^2 = VAR_POISSON +
    VAR_RNOISE). Noisy pixels' extra scatter, row offsets, EMI, cosmic-ray residuals and showers
    are added without changing ERR (a pipeline's ERR does not know them). Look-alike rows: the
    pixel-exposures a look-alike changes by at least ``truth.lookalike_min_sigma`` x ERR.
    """
    exp = ctx.plan.iloc[i]
    box = ctx.boxes[exp.subarray]
    nints = int(exp.nints) if exp["product"] == "rateints" else 1
    light = _light(ctx, i, exp, box)
    acting = _defects_in_exposure(ctx, i, exp, box, light.photon, nints, rng)
    noise = _noisy_slopes(rng, ctx.sc["detector"], exp, nints, light.photon, acting)
    ctx.sigma[acting.rows, i] = _defect_sigma(acting, noise.err_rate)
    pattern = _electronic_patterns(rng, ctx, i, box)
    noise.sci += pattern.image[None]
    hits = _hits(rng, ctx, box, exp, nints, noise.sci, acting)
    lookalikes = _lookalike_rows(ctx, i, exp, box, light, acting, pattern, hits, noise.err_rate)
    arrays = _product_arrays(noise, hits.dq, exp["product"] == "rateints")
    info = dict(sky_median_dn_s=light.sky_median, row_offset_dn_s=pattern.row_offset, emi=bool(pattern.emi_amp > 0),
                emi_amplitude_dn_s=pattern.emi_amp, n_cr_flagged=hits.n_flag, n_cr_unflagged=hits.n_unflag,
                n_showers=hits.n_showers, n_latents=len(ctx.latents[i]),
                latent_from=" ".join(sorted({ctx.plan.file.iat[lat["source"]] for lat in ctx.latents[i]
                                             if lat["kind"] == "trace"})),
                n_raised=int(acting.ry.size), n_offset_lines=len(ctx.lines[i]),
                median_err_dn_s=float(np.nanmedian(noise.err_rate[::4, ::4])))
    return arrays, info, lookalikes


def _light(ctx: _Context, i: int, exp: pd.Series, box: Box) -> SimpleNamespace:
    """The noiseless light of exposure ``i`` before defects (``photon``): sky with its level and
    gradients, the source's trace and latents, times each pixel's response (``resp``)."""
    sc, profile = ctx.sc, ctx.profile
    xs = (np.arange(box.x0, box.x1) - profile.frame_shape[1] / 2) / (profile.frame_shape[1] / 2)
    sky = ctx.illumination(exp.subarray) * (exp.sky_factor * (1.0 + exp.x_gradient * xs))[None, :]
    if exp.y_gradient:
        ys = (np.arange(box.y0, box.y1) - profile.frame_shape[0] / 2) / (profile.frame_shape[0] / 2)
        sky *= (1.0 + exp.y_gradient * ys)[:, None]
    sky += float(sc["sky"]["floor_dn_s"])
    trace = trace_image(box, exp.subarray, exp.source_x, exp.source_peak_dn_s, profile, sc) if not exp.blank else 0.0
    latent = 0.0
    for lat in ctx.latents[i]:
        if lat["kind"] == "trace":
            src = ctx.plan.iloc[lat["source"]]
            latent = latent + lat["scale"] * trace_image(box, src.subarray, src.source_x, src.source_peak_dn_s,
                                                         profile, sc)
        else:
            latent = latent + look.blob_image(box, lat["cy"], lat["cx"], lat["sigma"], lat["peak"])
    resp = ctx.resp[box.slices()]
    photon = np.maximum(sky + trace + latent, 0.0) * resp
    return SimpleNamespace(trace=trace, latent=latent, resp=resp, photon=photon,
                           sky_median=float(np.median(photon[::8, ::8])))


def _defects_in_exposure(ctx: _Context, i: int, exp: pd.Series, box: Box, photon: np.ndarray, nints: int,
                         rng: np.random.Generator) -> SimpleNamespace:
    """The defects acting in exposure ``i``, applied to ``photon`` in place (multiplicative ones
    scale it, additive ones and pixels raised after a cosmic-ray hit add a current), and the
    high fraction of each integration of the telegraphs switching within it."""
    rows = _acting(ctx, i, box)
    new = ctx.new.iloc[rows]
    ly, lx = new.y.to_numpy() - box.y0, new.x.to_numpy() - box.x0
    effect = new.effect.to_numpy()
    amp = new.amplitude.to_numpy(float) * zoo.ramp_factor(new, float(exp.expmid))
    clean = photon[ly, lx].copy()
    mult = effect == "mult"
    photon[ly[mult], lx[mult]] *= 1.0 - amp[mult]
    add = effect == "add"
    photon[ly[add], lx[add]] += amp[add]
    # raised pixels after a cosmic-ray hit earlier in the visit: a current, like a warm pixel
    ry, rx, ramp_, hit_here = look.raised_in(ctx.raised, i, ctx.plan, box)
    np.add.at(photon, (ry - box.y0, rx - box.x0), ramp_)
    intra = np.flatnonzero(effect == "rts_intra")
    fractions = np.zeros((intra.size, nints))
    for k, j in enumerate(intra):
        tau = float(new.dwell_days.iat[j]) * 86400.0
        duty = float(new.duty.iat[j])
        fractions[k] = zoo.integration_high_fractions(rng, nints, float(exp.effexptm) / nints,
                                                      2 * tau * duty, 2 * tau * (1 - duty))
    return SimpleNamespace(rows=rows, ly=ly, lx=lx, effect=effect, amp=amp, clean=clean, mult=mult,
                           ry=ry, rx=rx, ramp=ramp_, hit_here=hit_here, intra=intra, fractions=fractions)


def _noisy_slopes(rng: np.random.Generator, det: dict, exp: pd.Series, nints: int, photon: np.ndarray,
                  acting: SimpleNamespace) -> SimpleNamespace:
    """SCI (Poisson electrons over each integration plus read noise, noisy pixels' extra
    scatter), ERR, VAR_POISSON and VAR_RNOISE per integration, and the exposure's ERR."""
    g = float(det["gain_e_per_dn"])
    t_int = exp.effexptm / nints
    n_g = int(exp.ngroups)
    var_r_int = 12.0 * float(det["read_noise_dn"]) ** 2 / (exp.tframe**2 * (n_g**3 - n_g))
    var_r = var_r_int / exp.nints if nints == 1 else var_r_int
    ly, lx, amp = acting.ly, acting.lx, acting.amp
    stack = np.repeat(photon[None], nints, axis=0)
    for k, j in enumerate(acting.intra):
        stack[:, ly[j], lx[j]] += amp[j] * acting.fractions[k]
    var_p = stack / (g * t_int)
    sci = rng.poisson(stack * g * t_int) / (g * t_int)
    sci += rng.standard_normal(sci.shape) * math.sqrt(var_r)
    err = np.sqrt(var_p + var_r)
    # noisy pixels: extra scatter, amp rms in the exposure's mean (sqrt(nints) x per integration)
    noisy = np.flatnonzero(acting.effect == "noise")
    sci[:, ly[noisy], lx[noisy]] += rng.standard_normal((nints, noisy.size)) * amp[noisy] * math.sqrt(nints)
    err_rate = np.sqrt(photon / (g * exp.effexptm) + var_r_int / exp.nints)  # the exposure's ERR
    return SimpleNamespace(sci=sci, err=err, var_p=var_p, var_r=var_r, err_rate=err_rate)


def _defect_sigma(acting: SimpleNamespace, err_rate: np.ndarray) -> np.ndarray:
    """Signal-to-noise of each acting defect in the exposure (the truth's amplitude_sigma)."""
    amp, intra = acting.amp, acting.intra
    excess = np.where(acting.mult, amp * acting.clean, amp)
    if intra.size:
        excess[intra] = amp[intra] * acting.fractions.mean(axis=1)
    return excess / err_rate[acting.ly, acting.lx]


def _electronic_patterns(rng: np.random.Generator, ctx: _Context, i: int, box: Box) -> SimpleNamespace:
    """Odd/even row offsets, offset rows and columns, and EMI of exposure ``i`` (one image)."""
    sc = ctx.sc
    d = float(rng.normal(0.0, float(sc["row_offsets"]["sigma_dn_s"])))
    parity = np.where(np.arange(box.y0, box.y1) % 2 == 1, d, -d)
    rows_img = look.line_image([ln for ln in ctx.lines[i] if ln[0] == "row"], box)
    cols_img = look.line_image([ln for ln in ctx.lines[i] if ln[0] == "column"], box)
    emi, emi_amp = _emi(rng, box, sc["emi"])
    return SimpleNamespace(row_offset=d, parity=parity, rows_img=rows_img, cols_img=cols_img, emi_amp=emi_amp,
                           image=np.asarray(parity[:, None] + rows_img + cols_img + emi))


def _hits(rng: np.random.Generator, ctx: _Context, box: Box, exp: pd.Series, nints: int, sci: np.ndarray,
          acting: SimpleNamespace) -> SimpleNamespace:
    """Cosmic-ray residuals (flagged JUMP_DET in DQ or not; each in one integration) and
    showers added to ``sci`` in place; DQ with the static defects and the jumps."""
    dq = np.repeat(ctx.static_dq[box.slices()][None], nints, axis=0)
    cr = ctx.sc["cosmic_rays"]
    yy, xx, a, n_flag = _cosmic_rays(rng, box, exp.effexptm, cr, "flagged_per_megapixel_per_ks", True)
    kk = rng.integers(0, nints, yy.size)
    np.add.at(sci, (kk, yy, xx), a * nints)
    dq[kk, yy, xx] |= np.uint32(flags.JUMP_DET)
    hit_here = acting.hit_here
    dq[:, acting.ry[hit_here] - box.y0, acting.rx[hit_here] - box.x0] |= np.uint32(flags.JUMP_DET)  # the raising hit
    cr_y, cr_x, cr_a = [yy], [xx], [a]
    yy, xx, a, n_unflag = _cosmic_rays(rng, box, exp.effexptm, cr, "unflagged_per_megapixel_per_ks", False)
    np.add.at(sci, (rng.integers(0, nints, yy.size), yy, xx), a * nints)
    cr_y.append(yy), cr_x.append(xx), cr_a.append(a)
    glow, n_showers = _showers(rng, box, exp.effexptm, ctx.sc["showers"])
    if n_showers:
        sci[int(rng.integers(0, nints))] += glow * nints
    return SimpleNamespace(dq=dq, n_flag=n_flag, n_unflag=n_unflag, glow=glow, n_showers=n_showers,
                           cr_y=np.concatenate(cr_y), cr_x=np.concatenate(cr_x), cr_a=np.concatenate(cr_a))


def _lookalike_rows(ctx: _Context, i: int, exp: pd.Series, box: Box, light: SimpleNamespace,
                    acting: SimpleNamespace, pattern: SimpleNamespace, hits: SimpleNamespace,
                    err_rate: np.ndarray) -> pd.DataFrame:
    """The pixel-exposures a look-alike changed by at least ``truth.lookalike_min_sigma`` x ERR."""
    sc = ctx.sc
    ny, nx = box.y1 - box.y0, box.x1 - box.x0
    thr = float((sc.get("truth") or {}).get("lookalike_min_sigma", 1.0)) * err_rate
    usable = (hits.dq[0] & np.uint32(flags.DO_NOT_USE | flags.REFERENCE_PIXEL)) == 0
    t_mid, resp = float(exp.expmid), light.resp
    parts = []

    def note(mask, behaviour):
        if np.any(mask):
            parts.append(look.rows_where(mask & usable, box, t_mid, behaviour))

    hit = np.zeros((ny, nx))
    np.add.at(hit, (hits.cr_y, hits.cr_x), hits.cr_a)
    note(hit >= thr, "cosmic_ray")
    if hits.n_showers:
        note(hits.glow >= thr, "shower")
    if acting.ry.size:
        raised = np.zeros((ny, nx))
        np.add.at(raised, (acting.ry - box.y0, acting.rx - box.x0), acting.ramp)
        note(raised * resp >= thr, "cr_raised")
    if np.ndim(light.latent):
        note(np.abs(light.latent * resp) >= thr, "persistence")
    if np.ndim(light.trace):
        note(light.trace * resp >= thr, "source_trace")
    # patterns over the whole exposure (odd/even rows, a sky step) are noted on a grid of pixels
    pitch = int((sc.get("truth") or {}).get("grid_px", 16))
    grid = np.zeros((ny, nx), bool)
    grid[(pitch - box.y0 % pitch) % pitch::pitch, (pitch - box.x0 % pitch) % pitch::pitch] = True
    offset_rows = np.zeros((ny, 1), bool)
    for axis, idx, _ in ctx.lines[i]:
        if axis == "row" and box.y0 <= idx < box.y1:
            offset_rows[idx - box.y0] = True
    note((np.abs(pattern.parity[:, None] + pattern.rows_img) >= thr) & (offset_rows | grid), "row_offsets")
    if np.ndim(pattern.cols_img):
        note(np.abs(pattern.cols_img) >= thr, "column_offsets")
    if exp.sky_step:
        note(grid, "sky_step")
    return pd.concat(parts, ignore_index=True) if parts else look.empty_lookalikes()


def _product_arrays(noise: SimpleNamespace, dq: np.ndarray, per_integration: bool) -> dict[str, np.ndarray]:
    """The product's planes, float32, NaN where DO_NOT_USE; 2-D unless written per integration."""
    var_r_img = np.full(noise.sci.shape, noise.var_r, np.float32)
    var_p, sci, err = (a.astype(np.float32) for a in (noise.var_p, noise.sci, noise.err))
    dnu = (dq & np.uint32(flags.DO_NOT_USE)) != 0
    for arr in (sci, err, var_p, var_r_img):
        arr[dnu] = np.nan
    arrays = dict(data=sci, err=err, dq=dq, var_poisson=var_p, var_rnoise=var_r_img)
    return arrays if per_integration else {k: v[0] for k, v in arrays.items()}


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------

class _FixedDate:
    """A datamodel whose DATE is fixed (so a seed gives byte-identical files) and that saves as
    the datamodel class it extends (``_saved_as``)."""

    _fixed_date: str | None = None
    _saved_as = ""

    @property
    def _model_type(self):
        return self._saved_as

    def on_save(self, path=None):
        super().on_save(path)
        if self._fixed_date:
            self.meta.date = self._fixed_date


class _RateModel(_FixedDate, ImageModel):
    """A rate product: one slope image."""

    _saved_as = "ImageModel"


class _RateintsModel(_FixedDate, CubeModel):
    """A rateints product: one slope image per integration."""

    _saved_as = "CubeModel"


def write_rate(path: Path, exp: pd.Series, arrays: dict[str, np.ndarray], sc: dict, profile: Profile) -> Path:
    """Write one exposure as a level-2 ``_rate.fits`` ImageModel with the primary keywords of a real one,
    or, when ``arrays`` are 3-D (integration, row, column), as a ``_rateints.fits`` CubeModel.
    INSTRUME and FASTAXIS/SLOWAXIS are the profile's."""
    # assignments are not validated one by one (slow); save() validates the whole model once
    cube = np.ndim(arrays["data"]) == 3
    m = (_RateintsModel if cube else _RateModel)(validate_on_assignment=False)
    for name, arr in arrays.items():
        setattr(m, name, arr)
    ex = sc["exposures"]
    meta = m.meta
    meta.telescope = "JWST"
    meta.instrument.name = profile.instrument
    meta.instrument.detector = str(exp.detector)
    if ex.get("filter"):
        meta.instrument.filter = str(ex["filter"])
    for key in ("channel", "band"):  # MRS: CHANNEL ('12', '34') and BAND (SHORT, MEDIUM, LONG)
        if ex.get(key):
            setattr(meta.instrument, key, str(ex[key]))
    _exposure_keywords(meta.exposure, exp, str(ex["readpatt"]))
    _observation_keywords(meta.observation, exp)
    meta.subarray.name = exp.subarray
    meta.subarray.xstart = int(exp.substrt1)
    meta.subarray.ystart = int(exp.substrt2)
    meta.subarray.xsize = int(exp.subsize1)
    meta.subarray.ysize = int(exp.subsize2)
    meta.subarray.fastaxis, meta.subarray.slowaxis = profile.axes
    dispaxis = ex.get("dispaxis", 2)  # DISPAXIS as jwst.lib.dispaxis gives it; none for imaging
    if dispaxis is not None:
        meta.wcsinfo.dispersion_direction = int(dispaxis)
    meta.bunit_data = "DN/s"
    meta.bunit_err = "DN/s"
    # a product is made after its exposure: a fixed, plausible creation date keeps files reproducible
    m._fixed_date = Time(float(exp.expend) + 1.0, format="mjd", scale="utc").isot
    m.save(str(path))
    m.close()
    return Path(path)


def _exposure_keywords(e, exp: pd.Series, readpatt: str) -> None:
    """The readout and times of ``exp`` into a datamodel's ``meta.exposure``."""
    e.type = exp.exp_type
    e.readpatt = readpatt
    e.nints = int(exp.nints)
    e.ngroups = int(exp.ngroups)
    e.nframes = 1
    e.groupgap = 0
    e.frame_time = float(exp.tframe)
    e.group_time = float(exp.tframe)
    e.integration_time = float(exp.effinttm)
    e.exposure_time = float(exp.effexptm)
    e.effective_exposure_time = float(exp.effexptm)
    e.duration = float(exp.duration_s)
    e.start_time = float(exp.expstart)
    e.mid_time = float(exp.expmid)
    e.end_time = float(exp.expend)
    e.start_time_mjd = float(exp.expstart)
    e.mid_time_mjd = float(exp.expmid)
    e.end_time_mjd = float(exp.expend)


def _observation_keywords(o, exp: pd.Series) -> None:
    """The date and ids of ``exp`` into a datamodel's ``meta.observation``."""
    o.date = exp.date_obs
    o.time = exp.time_obs
    o.program_number = f"{exp.program:05d}"
    o.observation_number = f"{exp.observation:03d}"
    o.visit_number = f"{exp.visit:03d}"
    o.visit_group = f"{exp.visit_group:02d}"
    o.sequence_id = f"{exp.sequence:d}"
    o.activity_id = f"{exp.activity:02d}"
    o.exposure_number = f"{exp.exposure:d}"
    o.visit_id = f"{exp.program:05d}{exp.observation:03d}{exp.visit:03d}"


def check_layout(sc: dict, profile: Profile) -> None:
    """Raise ValueError when the scenario's layout cannot be simulated on ``profile``, naming the key and the fix.

    The EXP_TYPE each simulated subarray gets and the detector must be ones the profile accepts
    (otherwise the files could not be ingested into a cube of that mode); every sky component
    and fringe channel must name regions of the profile.
    """
    ex = sc["exposures"]
    detector_name(profile, sc)
    response.validate(sc, profile, sc.get("source", "scenario"))
    for sub in profile.subarrays:
        et = ex["exp_type"].get(sub)
        if et is not None and et not in profile.exp_types:
            raise ValueError(f"exposures.exp_type gives {sub} EXP_TYPE {et!r}, which mode profile {profile.name!r} "
                             f"does not accept ({list(profile.exp_types)}); fix its simulation: block "
                             f"({profile.source})")
    layouts.validate_components(sc, profile)


@dataclass
class SimulationResult:
    """What :func:`simulate` wrote: the rate/rateints files (time order), the truth tables and where they are."""

    out: Path
    files: list[Path]
    truth_path: Path
    truth: pd.DataFrame
    exposures_path: Path
    exposures: pd.DataFrame
    lookalikes: pd.DataFrame = field(default_factory=look.empty_lookalikes)
    lookalikes_path: Path | None = None


_EXPOSURE_COLUMNS = ["file", "product", "expstart", "expmid", "expend", "exptime", "effinttm", "nints", "ngroups",
                     "subarray", "exp_type", "detector", "substrt1", "substrt2", "subsize1", "subsize2", "blank",
                     "sky_factor", "sky_step", "sky_median_dn_s", "median_err_dn_s", "x_gradient", "y_gradient",
                     "source_x", "source_peak_dn_s", "n_latents", "latent_from", "n_raised", "n_offset_lines",
                     "row_offset_dn_s", "emi", "emi_amplitude_dn_s", "n_cr_flagged", "n_cr_unflagged", "n_showers",
                     "program", "observation", "visit", "exposure"]


def plan_lookalikes(rng: np.random.Generator, plan: pd.DataFrame, sc: dict, profile: Profile) -> dict:
    """The look-alikes that span exposures: latents, raised pixels after hits, offset lines."""
    boxes = footprints(profile, sc)
    return dict(latents=look.plan_latents(rng, plan, boxes, sc.get("persistence") or {}),
                raised=look.plan_cr_raised(rng, plan, boxes, sc.get("cr_raised") or {}),
                lines=look.plan_line_offsets(rng, plan, boxes, sc.get("line_offsets") or {}))


def simulate(out: str | Path, n: int = 150, seed: int = 0, scenario: str | Path | dict | None = None,
             mode: str = "lrs", start: str | float = "2022-07-15", span_days: float = 900.0,
             subarray_mix: float | None = None, full_frame: bool = True, progress: bool = False,
             overwrite: bool = False) -> SimulationResult:
    """Write ``n`` simulated MIRI rate files of mode ``mode`` to ``out`` and the truth to ``out/truth/``.

    Parameters
    ----------
    out : path
        Folder for the ``*_rate.fits`` files; the truth goes to ``out/truth/`` (outside the glob).
    n : int
        Number of exposures.
    seed : int
        Seed of every random draw: the same seed gives identical files.
    scenario : YAML path, shipped name or dict, optional
        Merged over ``configs/scenario-default.yaml`` (rates, amplitudes, mixes; documented there).
    mode : str
        Mode profile (``lrs``, ``lrs-slit``, ``lrs-slitless``, ``mrs-short``, ``mrs-long``, ``imager``
        or a YAML path): detector, subarrays, regions, and the layout of its ``simulation:`` block
        (EXP_TYPEs, sky components: slit and slitless spectra, MRS slices and channels, the
        imager's field and dark coronagraph area).
    start : ISO date or MJD
        Earliest visit start; visits are spread over ``span_days`` days.
    subarray_mix : float, optional
        Fraction of SLITLESSPRISM exposures (default from the scenario); for other modes, of
        exposures in the profile's first non-FULL subarray (instead of ``exposures.subarray_weights``).
    full_frame : bool
        False makes every exposure SLITLESSPRISM (72 x 416; other modes: their first non-FULL
        subarray, an error for FULL-only modes): small data for tests and demos; defects then all
        sit inside that footprint.
    progress : bool
        Print a counter.
    overwrite : bool
        Remove ``*_rate.fits`` already in ``out`` first (otherwise such files are an error, since they
        would mix with this run's and contradict its truth).

    Returns
    -------
    SimulationResult

    Examples
    --------
    >>> res = simulate("sim", n=30, full_frame=False)      # doctest: +SKIP
    >>> len(res.files), res.truth_path.name                  # doctest: +SKIP
    (30, 'truth.csv')
    """
    if int(n) < 1:
        raise ValueError(f"n={n}: simulate needs at least one exposure")
    out = Path(out)
    old = sorted(p for g in PRODUCT_GLOBS for p in out.glob(g)) if out.exists() else []
    if old and not overwrite:
        raise FileExistsError(f"{out} already holds {len(old)} rate/rateints files (e.g. {old[0].name}); "
                              "choose an empty folder or pass overwrite=True")
    profile = profiles.load(mode)
    sc = load_scenario(scenario, profile)
    check_layout(sc, profile)
    rng_plan, rng_truth, rng_tel, exp_ss, rng_look = _streams(seed)
    plan = plan_exposures(rng_plan, n, sc, profile, start=start, span_days=span_days,
                          subarray_mix=subarray_mix, full_frame=full_frame)
    truth = draw_truth(rng_truth, plan, sc, profile)
    resp = response.detector_response(profile, sc, detector_name(profile, sc))
    noise_amplitudes(truth, plan, sc, profile, resp)
    anneals = truth.attrs.get("anneals_mjd", [])
    truth, high = defect_states(rng_tel, truth, plan, profile, sc)
    truth.attrs["anneals_mjd"] = anneals
    new = truth[~truth.static]
    ctx = _Context(sc=sc, profile=profile, plan=plan, boxes=footprints(profile, sc),
                   static_dq=_static_dq(truth, profile), resp=resp, new=new.reset_index(drop=True), high=high,
                   sigma=np.full((len(new), len(plan)), np.nan, np.float32),
                   **plan_lookalikes(rng_look, plan, sc, profile))

    out.mkdir(parents=True, exist_ok=True)
    for p in old:
        p.unlink()
    files, infos, lookalikes = [], [], []
    exp_seeds = exp_ss.spawn(len(plan))
    for i in range(len(plan)):
        arrays, info, rows = render_exposure(i, ctx, np.random.default_rng(exp_seeds[i]))
        files.append(write_rate(out / plan.file.iat[i], plan.iloc[i], arrays, sc, profile))
        infos.append(info)
        lookalikes.append(rows)
        if progress:
            print(f"simulate: {i + 1}/{len(plan)} {plan.file.iat[i]}", flush=True)
    _truth_amplitude_sigma(truth, ctx.sigma)
    lookalikes = pd.concat(lookalikes, ignore_index=True) if lookalikes else look.empty_lookalikes()
    exposures = _exposures_table(plan, infos)
    run = dict(n=n, seed=seed, mode=mode, start=str(start), span_days=float(span_days),
               subarray_mix=subarray_mix, full_frame=full_frame)
    truth_dir = _write_truth(out, truth, lookalikes, exposures, sc, run)
    return SimulationResult(out=out, files=files, truth_path=truth_dir / "truth.csv", truth=truth,
                            exposures_path=truth_dir / "exposures.csv", exposures=exposures, lookalikes=lookalikes,
                            lookalikes_path=truth_dir / "lookalikes.csv")


def _truth_amplitude_sigma(truth: pd.DataFrame, sigma: np.ndarray) -> None:
    """Each new defect's amplitude_sigma: the median over the exposures that saw it of its
    excess / ERR (``sigma``: new rows x exposures, NaN where not seen), in place."""
    n_new = int((~truth.static).sum())
    sig = np.full(n_new, np.nan)
    seen = np.isfinite(sigma).any(axis=1) if sigma.shape[1] else np.zeros(n_new, bool)
    if seen.any():
        sig[seen] = np.nanmedian(sigma[seen], axis=1)
    truth["amplitude_sigma"] = np.nan
    truth.loc[~truth.static, "amplitude_sigma"] = np.abs(sig)


def _exposures_table(plan: pd.DataFrame, infos: list[dict]) -> pd.DataFrame:
    """The truth's exposures table: the plan and what rendering each exposure recorded."""
    exposures = pd.concat([plan.reset_index(drop=True), pd.DataFrame(infos)], axis=1).rename(columns={"effexptm": "exptime"})
    exposures = exposures[[c for c in _EXPOSURE_COLUMNS if c in exposures]] if len(exposures) else exposures
    # the shared contract's names (/work/TRUTH-SCHEMA.md) beside this module's
    exposures.insert(1, "filename", exposures["file"])
    exposures.insert(2, "mjd", exposures["expmid"])
    exposures.insert(3, "effexptm", exposures["exptime"])
    return exposures


def _write_truth(out: Path, truth: pd.DataFrame, lookalikes: pd.DataFrame, exposures: pd.DataFrame, sc: dict,
                 run: dict) -> Path:
    """The truth folder: defects, look-alikes, exposures and the scenario used (with ``run``)."""
    truth_dir = out / TRUTH_DIR
    truth_dir.mkdir(exist_ok=True)
    truth.to_csv(truth_dir / "truth.csv", index=False)
    truth.to_parquet(truth_dir / "truth.parquet", index=False)
    lookalikes.to_csv(truth_dir / "lookalikes.csv", index=False)
    lookalikes.to_parquet(truth_dir / "lookalikes.parquet", index=False)
    exposures.to_csv(truth_dir / "exposures.csv", index=False)
    used = {k: v for k, v in sc.items() if k != "source"}
    used["run"] = dict(run, scenario_source=sc["source"],
                       anneals_mjd=[float(t) for t in truth.attrs.get("anneals_mjd", [])])
    with open(truth_dir / "scenario.yaml", "w") as f:
        yaml.safe_dump(used, f, sort_keys=False)
    return truth_dir
