"""The simulator's behaviour zoo: every way a pixel goes bad, each named, with its own parameters.

A scenario's ``new.behaviours`` maps a behaviour name to its settings; ``kind`` (default: the
name) picks the generator below, so one generator can serve several named behaviours (e.g.
``weak_warm``, ``slit`` and ``subarray_edge`` are all ``kind: step`` with their own classes,
amplitudes or placement). ``share`` is the behaviour's fraction of the scenario's
``new.events_per_megapixel_per_year``. docs/simulation.md describes what each looks like in
MIRI data and where that is known.

Kinds (truth flag in brackets):

``step``          switches on at any time and stays on (HOT, WARM, DEAD, LOW_QE); optionally recovers
``recovery``      switches on, heals at a detector anneal (or at a random time), and may come back
                  later as a second row of behaviour ``reappear``
``intermittent``  on, off, on again: 2-4 episodes of weeks to months, one truth row per episode
``telegraph``     a random telegraph signal switching between exposures, mean dwell ``dwell_days``
                  (hours: between the exposures of a visit; weeks: runs of visits) [TELEGRAPH]
``rts_intra``     a random telegraph signal switching within exposures (``dwell_s``): excess scatter
                  between the integrations of a rateints file and a mean excess of amplitude x duty
                  in a rate file [TELEGRAPH]
``noisy``         mean normal, extra Gaussian scatter of ``noise_factor`` x the expected noise
                  [OTHER_BAD_PIXEL]
``drift_grow``    an excess growing linearly from 0 over ``ramp_days``; bad from when it passes
                  ``bad_above_dn_s``
``drift_fade``    on at full amplitude, then fading linearly to 0; bad until it drops below
                  ``bad_above_dn_s``
``cluster``       2-6 adjacent pixels sharing class, onset and recovery (neighbours fainter)

Every generator is a pure function of numpy arrays and a generator and returns rows in the truth
layout (:data:`ROW_COLUMNS`) plus, for telegraph kinds, each row's high state in every exposure.
How a row acts on the data (``effect``): ``add`` (an excess current, DN/s), ``mult`` (a
fractional response deficit), ``noise`` (extra scatter), ``rts_intra``; its time profile:
active from ``on_mjd`` to ``off_mjd``, scaled by a linear ramp from ``ramp_from`` at
``ramp_start_mjd`` to ``ramp_to`` at ``ramp_end_mjd`` (drifts only), gated by the high state
(telegraphs only). The truth interval (``start_mjd``, ``end_mjd``) is where the pixel is bad,
which for drifts is narrower than where it acts.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from ..intervals import active

#: Defect classes that add a current and those that scale the photon signal.
ADDITIVE = ("HOT", "WARM", "TELEGRAPH")
MULTIPLICATIVE = ("DEAD", "LOW_QE")

KINDS = ("step", "recovery", "intermittent", "telegraph", "rts_intra", "noisy", "drift_grow", "drift_fade",
         "cluster")

ROW_COLUMNS = [
    "y", "x", "flag", "start_mjd", "end_mjd", "amplitude", "static", "behaviour", "event_id", "cluster_id",
    "cluster_size", "episode", "effect", "on_mjd", "off_mjd", "ramp_start_mjd", "ramp_end_mjd", "ramp_from",
    "ramp_to", "dwell_days", "duty", "noise_factor", "mean_excess_dn_s",
]
_DTYPES = {"y": "int64", "x": "int64", "flag": "object", "static": "bool", "behaviour": "object",
           "event_id": "int64", "cluster_id": "int64", "cluster_size": "int64", "episode": "int64",
           "effect": "object"}

_NEIGHBOURS = np.array([(-1, 0), (1, 0), (0, -1), (0, 1)])


def rows_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows (dicts) as a DataFrame with every column of :data:`ROW_COLUMNS` and its type."""
    df = pd.DataFrame(rows, columns=ROW_COLUMNS)
    for c in ROW_COLUMNS:
        df[c] = df[c].astype(_DTYPES.get(c, "float64"))
    return df


def loguniform(rng: np.random.Generator, lo_hi, size=None):
    lo, hi = (float(v) for v in lo_hi)
    return np.exp(rng.uniform(math.log(lo), math.log(hi), size))


def draw_classes(rng: np.random.Generator, mix: dict[str, float], size: int) -> np.ndarray:
    names = list(mix)
    p = np.array([float(mix[k]) for k in names])
    if (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"class mix {mix!r} needs non-negative fractions that sum to more than 0")
    return np.array(names, dtype=object)[rng.choice(len(names), size=size, p=p / p.sum())]


def draw_amplitude(rng: np.random.Generator, cls: str, ranges: dict) -> float:
    """Log-uniform excess (DN/s) for additive classes, uniform fractional deficit otherwise."""
    lo_hi = ranges[cls]
    if cls in MULTIPLICATIVE:
        return float(rng.uniform(*(float(v) for v in lo_hi)))
    return float(loguniform(rng, lo_hi))


def anneal_times(rng: np.random.Generator, t_first: float, t_last: float, every_days) -> np.ndarray:
    """Anneal dates (MJD) between the first and last exposure: gaps uniform in ``every_days``."""
    if not every_days:
        return np.zeros(0)
    lo, hi = (float(v) for v in every_days)
    out, t = [], t_first + rng.uniform(0, hi)
    while t < t_last:
        out.append(t)
        t += rng.uniform(lo, hi)
    return np.array(out)


def two_state(rng: np.random.Generator, t_eval: np.ndarray, t0: float, t1: float, tau_high: float,
              tau_low: float) -> np.ndarray:
    """States (True = high) at times ``t_eval`` of a two-state process running from ``t0`` to ``t1``.

    Dwell times are exponential with means ``tau_high`` and ``tau_low`` (same unit as t); the
    state at ``t0`` is drawn from the stationary probabilities. Outside [t0, t1) the state is low.
    """
    t_eval = np.asarray(t_eval, float)
    out = np.zeros(t_eval.shape, bool)
    inside = (t_eval >= t0) & (t_eval < t1)
    if not inside.any():
        return out
    state = rng.random() < tau_high / (tau_high + tau_low)
    edges, states, t = [t0], [state], t0
    mean = 0.5 * (tau_high + tau_low)
    while t < t1:
        n = int(min(1e6, max(16, 1.2 * (t1 - t) / mean + 16)))
        taus = np.where((np.arange(n) % 2 == 0) == state, tau_high, tau_low)
        dwell = rng.exponential(1.0, n) * taus
        times = t + np.cumsum(dwell)
        flips = np.arange(1, n + 1) % 2 == 1
        new_states = np.where(flips, not state, state)
        edges.extend(times.tolist())
        states.extend(new_states.tolist())
        t = float(times[-1])
        state = bool(new_states[-1])
    idx = np.searchsorted(np.asarray(edges), t_eval[inside], side="right") - 1
    out[inside] = np.asarray(states, bool)[idx]
    return out


def integration_high_fractions(rng: np.random.Generator, n_ints: int, t_int_s: float, tau_high_s: float,
                               tau_low_s: float) -> np.ndarray:
    """Fraction of each of ``n_ints`` back-to-back integrations of ``t_int_s`` seconds spent high."""
    total = n_ints * t_int_s
    p_high = tau_high_s / (tau_high_s + tau_low_s)
    state = rng.random() < p_high
    n = int(max(16, 3 * total / (0.5 * (tau_high_s + tau_low_s)) + 16))
    taus = np.where((np.arange(n) % 2 == 0) == state, tau_high_s, tau_low_s)
    times = np.concatenate([[0.0], np.cumsum(rng.exponential(1.0, n) * taus)])
    while times[-1] < total:  # rare: more switches than drawn
        extra = rng.exponential(1.0, n) * np.where((np.arange(n) % 2 == (len(times) - 1) % 2) == state,
                                                    tau_high_s, tau_low_s)
        times = np.concatenate([times, times[-1] + np.cumsum(extra)])
    seg_high = (np.arange(len(times) - 1) % 2 == 0) == state  # segment k: [times[k], times[k+1])
    bounds = np.arange(n_ints + 1) * t_int_s
    # time spent high up to each bound: integrate the segment indicator
    cum = np.concatenate([[0.0], np.cumsum(np.diff(times) * seg_high)])

    def high_until(t):
        k = np.searchsorted(times, t, side="right") - 1
        k = np.clip(k, 0, len(times) - 2)
        return cum[k] + np.where(seg_high[k], t - times[k], 0.0)

    return np.clip(np.diff(high_until(bounds)) / t_int_s, 0.0, 1.0)  # exact up to rounding


def grow_cluster(rng: np.random.Generator, seed_yx, size: int, free: np.ndarray) -> list[tuple[int, int]]:
    """Up to ``size`` free pixels 4-connected to ``seed_yx`` (which is taken already); marks them taken."""
    members = [seed_yx]
    for _ in range(size - 1):
        options = []
        for (py, px) in members:
            for dy, dx in _NEIGHBOURS:
                qy, qx = py + dy, px + dx
                if 0 <= qy < free.shape[0] and 0 <= qx < free.shape[1] and free[qy, qx]:
                    options.append((qy, qx))
        if not options:
            break
        q = options[rng.integers(len(options))]
        free[q] = False
        members.append(q)
    return members


class Sightings:
    """When exposures see a pixel: mid-times ``t_mid`` (time order) and full-frame footprints ``boxes``."""

    def __init__(self, t_mid: np.ndarray, boxes: list):
        self.t_mid = np.asarray(t_mid, float)
        self.boxes = boxes

    def times(self, y: int, x: int) -> np.ndarray:
        return self.t_mid[[b.y0 <= y < b.y1 and b.x0 <= x < b.x1 for b in self.boxes]] if self.boxes \
            else np.zeros(0)

    def sees_bad(self, y: int, x: int, start: float, end: float) -> bool:
        t = self.times(y, x)
        return bool(active(start, end, t).any())


def _row(y, x, flag, start, end, amp, behaviour, event, effect, **kw) -> dict:
    r = dict(y=int(y), x=int(x), flag=str(flag), start_mjd=start, end_mjd=end, amplitude=float(amp),
             static=False, behaviour=behaviour, event_id=int(event), cluster_id=-1, cluster_size=1, episode=1,
             effect=effect, on_mjd=start, off_mjd=end, ramp_start_mjd=np.nan, ramp_end_mjd=np.nan,
             ramp_from=np.nan, ramp_to=np.nan, dwell_days=np.nan, duty=np.nan, noise_factor=np.nan,
             mean_excess_dn_s=np.nan)
    r.update(kw)
    return r


def _effect(cls: str) -> str:
    return "mult" if cls in MULTIPLICATIVE else "add"


def _onset(rng, seen: np.ndarray) -> float:
    """Uniform between the first and the last exposure that sees the pixel (at least one sees it good
    before and bad after, unless the onset falls before the first)."""
    return float(rng.uniform(seen.min(), seen.max()))


def _recovery(rng, cfg: dict, onset: float, seen: np.ndarray, t_last: float) -> float:
    """NaN (never) or a recovery time after the first exposure that sees the pixel bad."""
    if rng.random() >= float(cfg.get("recovery_fraction", 0.0) or 0.0):
        return np.nan
    end = onset + float(loguniform(rng, cfg.get("recovery_after_days", (5, 600))))
    bad = seen[seen >= onset]
    if bad.size:
        end = max(end, float(bad.min()) + 1.0 / 86400)
    return np.nan if end >= t_last else end


# ----------------------------------------------------------------------------------------------
# Generators: one event at pixel (y, x) -> rows
# ----------------------------------------------------------------------------------------------

def gen_step(rng, y, x, event, name, cfg, ranges, sight: Sightings, t_last, **_):
    seen = sight.times(y, x)
    cls = draw_classes(rng, cfg["classes"], 1)[0]
    onset = _onset(rng, seen)
    return [_row(y, x, cls, onset, _recovery(rng, cfg, onset, seen, t_last), draw_amplitude(rng, cls, ranges), name,
                 event, _effect(cls))]


def gen_recovery(rng, y, x, event, name, cfg, ranges, sight: Sightings, t_last, anneals=np.zeros(0), **_):
    seen = sight.times(y, x)
    cls = draw_classes(rng, cfg["classes"], 1)[0]
    onset = _onset(rng, seen)
    first_bad = seen[seen >= onset]
    if first_bad.size == 0:
        return []
    earliest = max(float(first_bad.min()) + 1.0 / 86400, onset + float(cfg.get("min_days", 0.0)))
    end = np.nan
    if rng.random() < float(cfg.get("at_anneal_fraction", 1.0)):
        heal = float(cfg.get("heal_probability", 1.0))
        for t in anneals[anneals >= earliest]:
            if rng.random() < heal:
                end = float(t)
                break
    else:
        end = max(earliest, onset + float(loguniform(rng, cfg.get("after_days", (5, 300)))))
    if not np.isfinite(end) or end >= t_last:
        return [_row(y, x, cls, onset, np.nan, draw_amplitude(rng, cls, ranges), name, event, _effect(cls))]
    amp = draw_amplitude(rng, cls, ranges)
    rows = [_row(y, x, cls, onset, end, amp, name, event, _effect(cls))]
    if rng.random() < float(cfg.get("reappear_fraction", 0.0)):
        again = end + float(loguniform(rng, cfg.get("reappear_after_days", (10, 200))))
        if (seen >= again).any():
            amp2 = amp * float(rng.uniform(0.5, 1.5)) if cls not in MULTIPLICATIVE else min(1.0, amp)
            rows.append(_row(y, x, cls, again, np.nan, amp2, str(cfg.get("reappear_behaviour", "reappear")), event,
                             _effect(cls), episode=2))
    return rows


def gen_intermittent(rng, y, x, event, name, cfg, ranges, sight: Sightings, t_last, **_):
    seen = sight.times(y, x)
    cls = draw_classes(rng, cfg["classes"], 1)[0]
    amp = draw_amplitude(rng, cls, ranges)
    lo, hi = (int(v) for v in cfg.get("episodes", (2, 4)))
    n_ep = int(rng.integers(lo, hi + 1))
    t = _onset(rng, seen[: max(1, seen.size // 2)]) if seen.size > 1 else float(seen[0])
    rows = []
    for k in range(n_ep):
        end = t + float(loguniform(rng, cfg.get("on_days", (10, 150))))
        end = np.nan if end >= t_last else end
        if sight.sees_bad(y, x, t, end):
            rows.append(_row(y, x, cls, t, end, amp * float(rng.uniform(0.7, 1.3)) if cls not in MULTIPLICATIVE
                             else amp, name, event, _effect(cls), episode=len(rows) + 1))
        if np.isnan(end):
            break
        t = end + float(loguniform(rng, cfg.get("off_days", (20, 250))))
        if t >= t_last:
            break
    return rows


def _dwell_duty(rng, cfg, key):
    tau = float(loguniform(rng, cfg[key]))
    duty = float(rng.uniform(*(float(v) for v in cfg.get("duty", (0.2, 0.8)))))
    return tau, duty


def gen_telegraph(rng, y, x, event, name, cfg, ranges, sight: Sightings, t_last, **_):
    seen = sight.times(y, x)
    onset = _onset(rng, seen)
    tau, duty = _dwell_duty(rng, cfg, "dwell_days")
    amp = draw_amplitude(rng, "TELEGRAPH", ranges)
    return [_row(y, x, "TELEGRAPH", onset, _recovery(rng, cfg, onset, seen, t_last), amp, name, event, "add",
                 dwell_days=tau, duty=duty)]


def gen_rts_intra(rng, y, x, event, name, cfg, ranges, sight: Sightings, t_last, **_):
    seen = sight.times(y, x)
    onset = _onset(rng, seen)
    tau_s, duty = _dwell_duty(rng, cfg, "dwell_s")
    amp = draw_amplitude(rng, "TELEGRAPH", ranges)
    return [_row(y, x, "TELEGRAPH", onset, _recovery(rng, cfg, onset, seen, t_last), amp, name, event,
                 "rts_intra", dwell_days=tau_s / 86400.0, duty=duty, mean_excess_dn_s=amp * duty)]


def gen_noisy(rng, y, x, event, name, cfg, ranges, sight: Sightings, t_last, **_):
    """Amplitude (the excess rms in DN/s) is set later from the pixel's expected noise (it needs the
    exposures' noise): here NaN, with the noise factor drawn."""
    seen = sight.times(y, x)
    onset = _onset(rng, seen)
    cls = draw_classes(rng, cfg.get("classes", {"OTHER_BAD_PIXEL": 1.0}), 1)[0]
    nf = float(loguniform(rng, cfg.get("noise_factor", (3, 300))))
    return [_row(y, x, cls, onset, _recovery(rng, cfg, onset, seen, t_last), np.nan, name, event, "noise",
                 noise_factor=nf)]


def gen_drift_grow(rng, y, x, event, name, cfg, ranges, sight: Sightings, t_last, **_):
    seen = sight.times(y, x)
    cls = draw_classes(rng, cfg["classes"], 1)[0]
    amp = draw_amplitude(rng, cls, ranges)
    thr = float(cfg.get("bad_above_dn_s", 0.02))
    t0 = _onset(rng, seen)
    ramp = float(loguniform(rng, cfg.get("ramp_days", (60, 360))))
    start = t0 + ramp * min(1.0, thr / amp) if amp > thr else np.nan
    if not np.isfinite(start) or start >= t_last or not sight.sees_bad(y, x, start, np.nan):
        return []
    return [_row(y, x, cls, start, np.nan, amp, name, event, "add", on_mjd=t0, off_mjd=np.nan,
                 ramp_start_mjd=t0, ramp_end_mjd=t0 + ramp, ramp_from=0.0, ramp_to=1.0)]


def gen_drift_fade(rng, y, x, event, name, cfg, ranges, sight: Sightings, t_last, **_):
    seen = sight.times(y, x)
    cls = draw_classes(rng, cfg["classes"], 1)[0]
    amp = draw_amplitude(rng, cls, ranges)
    thr = float(cfg.get("bad_above_dn_s", 0.02))
    onset = _onset(rng, seen[: max(1, (2 * seen.size) // 3)])
    fade0 = onset + float(rng.uniform(*(float(v) for v in cfg.get("plateau_days", (0, 120)))))
    ramp = float(loguniform(rng, cfg.get("ramp_days", (60, 360))))
    end = fade0 + ramp * (1.0 - thr / amp) if amp > thr else onset
    off = fade0 + ramp
    end = np.nan if end >= t_last else end
    if not sight.sees_bad(y, x, onset, end):
        return []
    return [_row(y, x, cls, onset, end, amp, name, event, "add", on_mjd=onset,
                 off_mjd=np.nan if off >= t_last else off,
                 ramp_start_mjd=fade0, ramp_end_mjd=off, ramp_from=1.0, ramp_to=0.0)]


def gen_cluster(rng, y, x, event, name, cfg, ranges, sight: Sightings, t_last, free=None, cluster_id=-1, **_):
    seen = sight.times(y, x)
    cls = draw_classes(rng, cfg["classes"], 1)[0]
    onset = _onset(rng, seen)
    end = _recovery(rng, cfg, onset, seen, t_last)
    lo, hi = (int(v) for v in cfg.get("size", (2, 6)))
    members = grow_cluster(rng, (y, x), int(rng.integers(lo, hi + 1)), free)
    amp = draw_amplitude(rng, cls, ranges)
    rows = []
    for k, (py, px) in enumerate(members):
        a = amp * float(rng.uniform(0.3, 1.0)) if k and cls in ADDITIVE else amp  # fainter neighbours
        rows.append(_row(py, px, cls, onset, end, a, name, event, _effect(cls), cluster_id=cluster_id,
                         cluster_size=len(members)))
    return rows


GENERATORS = {"step": gen_step, "recovery": gen_recovery, "intermittent": gen_intermittent,
              "telegraph": gen_telegraph, "rts_intra": gen_rts_intra, "noisy": gen_noisy,
              "drift_grow": gen_drift_grow, "drift_fade": gen_drift_fade, "cluster": gen_cluster}


def kind_of(name: str, cfg: dict) -> str:
    return str(cfg.get("kind", name))


def validate(behaviours: dict, source: str = "scenario") -> None:
    """Raise ValueError naming the behaviour and key when its settings are malformed."""
    if not isinstance(behaviours, dict):
        raise ValueError(f"{source}: 'new.behaviours' must map behaviour names to settings")
    for name, cfg in behaviours.items():
        if not isinstance(cfg, dict):
            raise ValueError(f"{source}: behaviour {name!r} needs a mapping of settings, got {cfg!r}")
        kind = kind_of(name, cfg)
        if kind not in GENERATORS:
            raise ValueError(f"{source}: behaviour {name!r} has kind {kind!r}; known kinds: {', '.join(KINDS)}")
        if float(cfg.get("share", 0)) < 0:
            raise ValueError(f"{source}: behaviour {name!r}: share must be >= 0")
        for key in ("recovery_after_days", "after_days", "reappear_after_days", "on_days", "off_days", "dwell_days",
                    "dwell_s", "duty", "noise_factor", "ramp_days", "plateau_days", "size", "episodes"):
            v = cfg.get(key)
            if v is not None and not (isinstance(v, (list, tuple)) and len(v) == 2 and 0 <= float(v[0]) <= float(v[1])):
                raise ValueError(f"{source}: 'new.behaviours.{name}.{key}' must be [low, high] with 0 <= low <= high, "
                                 f"got {v!r}")
        if kind == "telegraph" and "dwell_days" not in cfg:
            raise ValueError(f"{source}: behaviour {name!r} (kind telegraph) needs dwell_days")
        if kind == "rts_intra" and "dwell_s" not in cfg:
            raise ValueError(f"{source}: behaviour {name!r} (kind rts_intra) needs dwell_s")
        if kind not in ("telegraph", "rts_intra", "noisy") and not cfg.get("classes"):
            raise ValueError(f"{source}: behaviour {name!r} needs classes (a mix of DQ flag names)")


def draw_zoo(rng: np.random.Generator, placeable: np.ndarray, where: dict[str, np.ndarray], sight: Sightings,
             new_cfg: dict, amplitudes: dict) -> pd.DataFrame:
    """Every behaviour's defects (rows in :data:`ROW_COLUMNS`), on distinct pixels.

    ``placeable``: pixels seen often enough for a new defect (modified: taken pixels become False);
    ``where[name]``: the pixels behaviour ``name`` may use (placeable and its placement rule). The
    number of events is Poisson with mean ``events_per_megapixel_per_year`` x placeable
    megapixels x years from the first to the last exposure, split between behaviours by share.
    """
    t_mid = sight.t_mid
    if t_mid.size == 0:
        return rows_frame([])
    t_first, t_last = float(t_mid.min()), float(t_mid.max())
    years = (t_last - t_first) / 365.25
    n_events = int(rng.poisson(float(new_cfg["events_per_megapixel_per_year"]) * placeable.sum() / 1e6 * years))
    behaviours = {k: v for k, v in (new_cfg.get("behaviours") or {}).items() if float(v.get("share", 0)) > 0}
    if n_events == 0 or not behaviours:
        return rows_frame([])
    names = list(behaviours)
    shares = np.array([float(behaviours[k]["share"]) for k in names])
    counts = rng.multinomial(n_events, shares / shares.sum())
    anneals = anneal_times(rng, t_first, t_last, (new_cfg.get("anneals") or {}).get("every_days"))
    rows: list[dict] = []
    event = 0
    cluster_id = 0
    for name, count in zip(names, counts):
        cfg = behaviours[name]
        gen = GENERATORS[kind_of(name, cfg)]
        ranges = {**amplitudes, **(cfg.get("amplitudes") or {})}
        cand = iter(rng.permutation(np.flatnonzero(where[name] & placeable)))
        for _ in range(int(count)):
            idx = next((int(k) for k in cand if placeable.flat[k]), None)  # skip pixels taken meanwhile
            if idx is None:
                break
            y, x = np.unravel_index(idx, placeable.shape)
            placeable[y, x] = False
            new = gen(rng, int(y), int(x), event, name, cfg, ranges, sight, t_last, anneals=anneals,
                      free=placeable, cluster_id=cluster_id)
            if new and new[0]["cluster_size"] > 1:
                cluster_id += 1
            rows.extend(new)
            event += 1
    df = rows_frame(rows)
    df.attrs["anneals_mjd"] = anneals.tolist()
    return df


def telegraph_states(rng: np.random.Generator, rows: pd.DataFrame, t_mid: np.ndarray) -> np.ndarray:
    """(rows, exposures) bool: each row's high state in every exposure (time order).

    An ``add`` row with a finite ``dwell_days`` is a telegraph between exposures: a two-state
    process from its onset to its recovery (or past the last exposure). Every other row is
    "high" (acting) in every exposure.
    """
    t_mid = np.asarray(t_mid, float)
    high = np.ones((len(rows), t_mid.size), bool)
    if not len(rows) or not t_mid.size:
        return high
    t_end = float(t_mid.max()) + 1.0
    for i in np.flatnonzero((rows["effect"].to_numpy() == "add") & np.isfinite(rows["dwell_days"].to_numpy(float))):
        tau, duty = float(rows["dwell_days"].iat[i]), float(rows["duty"].iat[i])
        s = float(rows["start_mjd"].iat[i])
        e = float(rows["end_mjd"].iat[i])
        high[i] = two_state(rng, t_mid, s if np.isfinite(s) else float(t_mid.min()) - 1.0,
                            e if np.isfinite(e) else t_end, 2 * tau * duty, 2 * tau * (1 - duty))
    return high


def ramp_factor(rows: pd.DataFrame, t: float) -> np.ndarray:
    """Each row's amplitude scale at time ``t`` (1 for rows without a ramp)."""
    t0 = rows["ramp_start_mjd"].to_numpy(float)
    t1 = rows["ramp_end_mjd"].to_numpy(float)
    a, b = rows["ramp_from"].to_numpy(float), rows["ramp_to"].to_numpy(float)
    has = np.isfinite(t0) & np.isfinite(t1)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = np.clip((t - t0) / np.where(t1 > t0, t1 - t0, 1.0), 0.0, 1.0)
    return np.where(has, a + (b - a) * u, 1.0)
