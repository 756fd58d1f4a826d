"""The simulator's look-alikes: things in blank-sky data that look like defects and must not be flagged.

Each is planned here once for the whole run (it spans several exposures) and put into each
exposure by :mod:`lrscube.simulate`; every pixel-exposure it touches by at least
``truth.lookalike_min_sigma`` x ERR becomes one row of ``truth/lookalikes.csv`` (``y, x, mjd,
behaviour``). docs/simulation.md describes each and where it is known from.

- ``persistence``: latents of a bright image (a source in the slit of an exposure of the set, or
  a bright target observed just before a visit and not in the set), ``fraction`` of it,
  decaying as exp(-dt / tau) over the following exposures; some are a deficit;
- ``cr_raised``: a cosmic-ray hit that leaves a pixel raised, decaying over hours, so that the
  next exposures of the visit see it too;
- ``row_offsets`` / ``column_offsets``: whole detector rows or columns offset for a few
  consecutive exposures, with an amplitude that changes from one to the next;
- ``sky_step``: an exposure whose sky level and gradient are far outside the usual range;
- ``cosmic_ray``, ``shower`` and ``source_trace`` are drawn per exposure by the simulator itself.

Pure functions of the exposure plan, a config dict and a generator.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .sim_behaviours import loguniform


def _inside(box, y, x) -> bool:
    return box.y0 <= y < box.y1 and box.x0 <= x < box.x1


def plan_latents(rng: np.random.Generator, plan: pd.DataFrame, boxes: dict, cfg: dict) -> list[list[dict]]:
    """Per exposure, the latents it carries: ``{"kind": "trace", "source": i, "scale": s}`` (the
    trace of exposure ``i`` of the set) or ``{"kind": "blob", "cy", "cx", "sigma", "peak"}`` (an
    unseen bright target), signed scale/peak (negative = a deficit)."""
    m = len(plan)
    out: list[list[dict]] = [[] for _ in range(m)]
    if not cfg or m == 0:
        return out
    tau_d = float(cfg["tau_hours"]) / 24.0
    max_d = float(cfg["max_delay_hours"]) / 24.0
    deficit = float(cfg.get("deficit_fraction", 0.0) or 0.0)
    start = plan["expstart"].to_numpy(float)
    end = plan["expend"].to_numpy(float)
    blank = plan["blank"].to_numpy(bool)
    for i in np.flatnonzero(~blank):  # sources of the set: latent in every later exposure within max_delay
        frac = float(rng.uniform(*(float(v) for v in cfg["fraction"])))
        sign = -1.0 if rng.random() < deficit else 1.0
        for j in range(i + 1, m):
            dt = start[j] - end[i]
            if dt > max_d:
                break
            out[j].append({"kind": "trace", "source": int(i), "scale": sign * frac * math.exp(-dt / tau_d)})
    ub = cfg.get("unseen_bright") or {}
    p_visit = float(ub.get("per_visit", 0.0) or 0.0)
    if p_visit > 0:
        visit_key = plan[["program", "observation", "visit"]].astype(str).agg("-".join, axis=1).to_numpy()
        firsts = np.flatnonzero(np.r_[True, visit_key[1:] != visit_key[:-1]])
        for i in firsts:
            if rng.random() >= p_visit:
                continue
            box = boxes[plan["subarray"].iat[i]]
            cy, cx = rng.uniform(box.y0, box.y1), rng.uniform(box.x0, box.x1)
            sigma = float(rng.uniform(*(float(v) for v in ub["sigma_px"])))
            peak = float(loguniform(rng, ub["peak_dn_s"])) * float(rng.uniform(*(float(v) for v in cfg["fraction"])))
            sign = -1.0 if rng.random() < deficit else 1.0
            t_bright = start[i] - float(rng.uniform(*(float(v) for v in ub["gap_hours"]))) / 24.0
            for j in range(i, m):
                dt = start[j] - t_bright
                if dt > max_d:
                    break
                out[j].append({"kind": "blob", "cy": cy, "cx": cx, "sigma": sigma,
                               "peak": sign * peak * math.exp(-dt / tau_d)})
    return out


def blob_image(box, cy: float, cx: float, sigma: float, peak: float) -> np.ndarray:
    """A Gaussian image (DN/s) over ``box`` (full-frame centre ``cy, cx``)."""
    y = np.arange(box.y0, box.y1, dtype=float)[:, None] + 0.5
    x = np.arange(box.x0, box.x1, dtype=float)[None, :] + 0.5
    return peak * np.exp(-0.5 * ((y - cy) ** 2 + (x - cx) ** 2) / sigma**2)


def plan_cr_raised(rng: np.random.Generator, plan: pd.DataFrame, boxes: dict, cfg: dict) -> pd.DataFrame:
    """Cosmic-ray hits that leave a pixel raised: one row per hit (exposure of the hit ``hit``, full-frame
    ``y, x``, ``t_hit`` MJD, ``amplitude`` DN/s at the hit, ``tau_days``). The raised level
    decays from the hit on, over the rest of its exposure (where the jump step flags the hit)
    and the following exposures."""
    cols = ["hit", "y", "x", "t_hit", "amplitude", "tau_days"]
    if not cfg or float(cfg.get("per_megapixel_per_ks", 0) or 0) <= 0 or len(plan) == 0:
        return pd.DataFrame(columns=cols)
    rows = []
    for i, r in enumerate(plan.itertuples()):
        box = boxes[r.subarray]
        area = (box.y1 - box.y0) * (box.x1 - box.x0)
        n = int(rng.poisson(float(cfg["per_megapixel_per_ks"]) * area / 1e6 * r.effexptm / 1000.0))
        for _ in range(n):
            rows.append((i, int(rng.integers(box.y0, box.y1)), int(rng.integers(box.x0, box.x1)),
                         float(rng.uniform(r.expstart, r.expend)), float(loguniform(rng, cfg["amplitude_dn_s"])),
                         float(loguniform(rng, cfg["tau_hours"])) / 24.0))
    return pd.DataFrame(rows, columns=cols)


def raised_in(events: pd.DataFrame, i: int, plan: pd.DataFrame, box) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                           np.ndarray]:
    """Full-frame (y, x), mean excess (DN/s) over exposure ``i`` and whether the hit itself falls in
    ``i`` (then the pipeline's jump step flags it), of the pixels raised by hits up to ``i``."""
    empty = np.zeros(0, int), np.zeros(0, int), np.zeros(0), np.zeros(0, bool)
    if events.empty:
        return empty
    ev = events[events["hit"] <= i]
    if ev.empty:
        return empty
    t0, t1 = float(plan["expstart"].iat[i]), float(plan["expend"].iat[i])
    t_hit = ev["t_hit"].to_numpy(float)
    tau = ev["tau_days"].to_numpy(float)
    a0 = ev["amplitude"].to_numpy(float)
    # mean of a0 exp(-(t - t_hit)/tau) over the part of the exposure after the hit
    start = np.maximum(t0, t_hit)
    mean = a0 * np.exp(-(start - t_hit) / tau) * tau / (t1 - t0) * (1 - np.exp(-(t1 - start) / tau))
    y, x = ev["y"].to_numpy(int), ev["x"].to_numpy(int)
    keep = (mean > 1e-4) & (y >= box.y0) & (y < box.y1) & (x >= box.x0) & (x < box.x1)
    return y[keep], x[keep], mean[keep], (ev["hit"].to_numpy() == i)[keep]


def plan_line_offsets(rng: np.random.Generator, plan: pd.DataFrame, boxes: dict, cfg: dict) -> list[list[tuple]]:
    """Per exposure, the offset lines it carries: ``(axis, full-frame index, DN/s)``, axis "row" or "column".

    Events start in an exposure with probability ``events_per_exposure`` (Poisson mean), on
    ``lines`` adjacent rows or columns of its footprint, last ``duration_exposures``
    consecutive exposures and change amplitude from one exposure to the next by a factor
    log-uniform in [1 / (1 + change), 1 + change].
    """
    m = len(plan)
    out: list[list[tuple]] = [[] for _ in range(m)]
    if not cfg or m == 0:
        return out
    p_row = float(cfg.get("row_fraction", 0.5))
    change = float(cfg.get("change", 0.5))
    for i in range(m):
        box = boxes[plan["subarray"].iat[i]]
        for _ in range(int(rng.poisson(float(cfg["events_per_exposure"])))):
            axis = "row" if rng.random() < p_row else "column"
            lo_hi = (box.y0, box.y1) if axis == "row" else (box.x0 + 4 if box.x0 == 0 else box.x0, box.x1)
            n_lines = int(rng.integers(int(cfg["lines"][0]), int(cfg["lines"][1]) + 1))
            first = int(rng.integers(lo_hi[0], max(lo_hi[0] + 1, lo_hi[1] - n_lines)))
            amp = float(loguniform(rng, cfg["amplitude_dn_s"])) * (1 if rng.random() < 0.5 else -1)
            dur = int(rng.integers(int(cfg["duration_exposures"][0]), int(cfg["duration_exposures"][1]) + 1))
            for j in range(i, min(m, i + dur)):
                for k in range(n_lines):
                    out[j].append((axis, first + k, amp))
                amp *= float(loguniform(rng, (1.0 / (1.0 + change), 1.0 + change)))
    return out


def line_image(lines: list[tuple], box) -> np.ndarray | float:
    """The offsets of ``lines`` over ``box`` (0 where none)."""
    if not lines:
        return 0.0
    img = np.zeros((box.y1 - box.y0, box.x1 - box.x0))
    for axis, idx, amp in lines:
        if axis == "row" and box.y0 <= idx < box.y1:
            img[idx - box.y0, :] += amp
        elif axis == "column" and box.x0 <= idx < box.x1:
            img[:, idx - box.x0] += amp
    return img


def rows_where(mask: np.ndarray, box, mjd: float, behaviour: str) -> pd.DataFrame:
    """Look-alike rows (full-frame y, x; mjd; behaviour) of the True pixels of a ``box``-shaped mask."""
    ly, lx = np.nonzero(mask)
    return pd.DataFrame({"y": (ly + box.y0).astype(np.int32), "x": (lx + box.x0).astype(np.int32),
                         "mjd": np.full(ly.size, mjd), "behaviour": behaviour})


LOOKALIKE_COLUMNS = ["y", "x", "mjd", "behaviour"]


def empty_lookalikes() -> pd.DataFrame:
    return pd.DataFrame({"y": pd.Series(dtype="int32"), "x": pd.Series(dtype="int32"),
                         "mjd": pd.Series(dtype="float64"), "behaviour": pd.Series(dtype="object")})
