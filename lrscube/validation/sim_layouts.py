"""The simulator's noiseless sky: where light falls on the detector in each instrument mode.

A mode's illumination is a sum of **sky components**, each described in YAML (the scenario's
``sky.components``, usually given by a mode profile's ``simulation:`` block), so a new mode needs
a profile, not code. One component is::

    - name: channel_1              # for messages
      region: channel_1            # mode-profile region: its rows carry the dispersed light ...
      columns_region: channel_1    # ... over these columns (default: the same region)
      level_dn_s: 1.0              # DN/s at the red (long-wavelength) end, sky factor 1
      contrast: 2.0                # red end / blue end (1 = flat along y)
      wavelength_increases_with_y: true   # default: sky.wavelength_increases_with_y
      edge_px: 0.7                 # softness of the column edges inside the frame (0 = hard)
      clip_rows: false             # true: constant beyond the region's rows instead of falling off
      slices:                      # optional: IFU slices, vertical stripes separated by dark gaps
        count: 21
        gap_px: 3.0                # dark columns between neighbouring slices
        throughput_scatter: 0.1    # slice-to-slice throughput, fractional sigma (fixed pattern)
        pattern_seed: 1            # the pattern belongs to the instrument, not to a run
        curvature_px: 2.0          # slice edges bend by this many columns from the middle row to
                                   # the top and bottom rows (parabola): edge pixels are partly lit

``region: null`` means the whole frame. Every pixel not covered by a component sees only
the scenario's ``sky.floor_dn_s`` (dark regions: inter-slice and inter-channel gaps, the
coronagraph area of the imager). Reference columns see no light.

Without ``sky.components`` the legacy LRS layout of ``configs/scenario-default.yaml`` applies
(``sky.frame``, ``sky.slit``, ``sky.slitless``); :func:`sky_components` turns it into the same
components, so LRS images are what they always were.
"""

from __future__ import annotations

import math

import numpy as np

from ..config.profiles import Box, Profile

_LRS_COMPONENTS = ("slit", "slitless")


def sky_components(sc: dict) -> list[dict]:
    """The scenario's sky as a list of component dicts (legacy LRS keys converted)."""
    sky = sc["sky"]
    comps = sky.get("components")
    if comps is not None:
        if not isinstance(comps, list):
            raise ValueError(f"sky.components must be a list of components, got {type(comps).__name__}")
        return comps
    out = [dict(name="frame", region=None, level_dn_s=sky["frame"]["level_dn_s"],
                contrast=sky["frame"]["contrast"], edge_px=0.0, clip_rows=True)]
    for comp in _LRS_COMPONENTS:
        c = sky[comp]
        out.append(dict(name=comp, region=c["region"], columns_region=c.get("columns_region", c["region"]),
                        level_dn_s=c["level_dn_s"], contrast=c["contrast"], edge_px=c["edge_px"]))
    return out


def validate_components(sc: dict, profile: Profile) -> None:
    """Raise ValueError naming the component and key when a component cannot be drawn on ``profile``."""
    for i, c in enumerate(sky_components(sc)):
        name = c.get("name", f"#{i}")
        for key in ("region", "columns_region"):
            r = c.get(key)
            if r is not None and r not in profile.regions:
                raise ValueError(f"sky component {name!r}: {key} {r!r} is not a region of mode profile "
                                 f"{profile.name!r} (regions: {sorted(profile.regions)})")
        for key in ("level_dn_s", "contrast"):
            if key not in c or float(c[key]) <= 0:
                raise ValueError(f"sky component {name!r}: '{key}' must be a positive number, got {c.get(key)!r}")
        sl = c.get("slices")
        if sl:
            if int(sl.get("count", 0)) < 1 or float(sl.get("gap_px", 0)) < 0:
                raise ValueError(f"sky component {name!r}: slices need count >= 1 and gap_px >= 0, got {sl!r}")


def band_rows(increases_with_y: bool, box: Box) -> tuple[float, float]:
    """(red row, blue row) of a region: where its dispersed light is at the long and short end."""
    if increases_with_y:
        return float(box.y1 - 1), float(box.y0)
    return float(box.y0), float(box.y1 - 1)


def spectral_profile(y: np.ndarray, red: float, blue: float, contrast: float, cutoff_px: float) -> np.ndarray:
    """Smooth profile along y rising with wavelength: 1 at the red row, 1/contrast at the blue row,
    falling off over ``cutoff_px`` beyond either end (the region's rows bound the dispersed light)."""
    length = abs(red - blue)
    u = (y - blue) / (red - blue)
    lnc = math.log(contrast)
    inside = np.exp(lnc * (np.clip(u, 0.0, 1.0) - 1.0))
    beyond = np.exp(-(np.maximum(-u, 0.0) + np.maximum(u - 1.0, 0.0)) * length / cutoff_px)
    return inside * beyond


def tophat(x: np.ndarray, x0: float, x1: float, edge: float, width: int) -> np.ndarray:
    """1 inside columns [x0, x1), soft edges of scale ``edge`` where the box ends inside the frame."""
    out = np.ones_like(x, dtype=float)
    for xb, sign, at_frame_edge in ((x0 - 0.5, 1.0, x0 <= 0), (x1 - 0.5, -1.0, x1 >= width)):
        if at_frame_edge:
            continue
        if edge > 0:
            with np.errstate(over="ignore"):  # exp overflows far from the edge: 1 / inf = 0, as wanted
                out *= 1.0 / (1.0 + np.exp(-sign * (x - xb) / edge))
        else:
            out *= (sign * (x - xb)) > 0
    return out


def slice_bounds(x0: int, x1: int, count: int, gap_px: float) -> list[tuple[float, float]]:
    """Column ranges [a, b) of ``count`` equal slices filling [x0, x1) with ``gap_px`` between neighbours."""
    width = (x1 - x0 - (count - 1) * gap_px) / count
    if width <= 0:
        raise ValueError(f"{count} slices with {gap_px}-pixel gaps do not fit in columns [{x0}, {x1})")
    return [(x0 + k * (width + gap_px), x0 + k * (width + gap_px) + width) for k in range(count)]


def slice_pattern(x: np.ndarray, cols: Box, cfg: dict, edge: float, width: int,
                  y: np.ndarray | None = None, height: int | None = None) -> np.ndarray:
    """Relative throughput over columns ``x``: slices of fixed, slightly different throughput, dark gaps.

    With ``curvature_px`` (and the rows ``y`` of a frame ``height`` rows high), the slice edges
    bend along the rows like the curved slice images of an IFU: the result is then 2-D.
    """
    bounds = slice_bounds(cols.x0, cols.x1, int(cfg["count"]), float(cfg.get("gap_px", 0.0)))
    rng = np.random.default_rng(int(cfg.get("pattern_seed", 0)))
    scatter = float(cfg.get("throughput_scatter", 0.0))
    thr = np.clip(1.0 + scatter * rng.standard_normal(len(bounds)), 0.2, None)
    curve = float(cfg.get("curvature_px", 0.0) or 0.0)
    if curve and y is not None and height:
        half = height / 2.0
        x = x - curve * ((np.asarray(y, float) - half) / half) ** 2  # shifting x shifts every edge
    out = np.zeros(np.broadcast(x, np.zeros(1)).shape, dtype=float)
    for (a, b), t in zip(bounds, thr):
        out = out + t * tophat(x, a, b, edge, width)
    return out


def component_image(c: dict, y: np.ndarray, x: np.ndarray, profile: Profile, sc: dict) -> np.ndarray:
    """One component (DN/s at sky factor 1) on the grid ``y`` (column vector) x ``x`` (row vector)."""
    sky = sc["sky"]
    ny_f, nx_f = profile.frame_shape
    frame = Box(0, ny_f, 0, nx_f)
    rows = profile.regions[c["region"]] if c.get("region") is not None else frame
    col_name = c.get("columns_region", c.get("region"))
    cols = profile.regions[col_name] if col_name is not None else frame
    red, blue = band_rows(bool(c.get("wavelength_increases_with_y", sky["wavelength_increases_with_y"])), rows)
    yy = np.clip(y, min(red, blue), max(red, blue)) if c.get("clip_rows") else y
    along = spectral_profile(yy, red, blue, float(c["contrast"]), float(sky["cutoff_px"]))
    edge = float(c.get("edge_px", 0.0))
    if c.get("slices"):
        across = slice_pattern(x, cols, c["slices"], edge, nx_f, y=y, height=ny_f)
    else:
        across = tophat(x, cols.x0, cols.x1, edge, nx_f)
    return float(c["level_dn_s"]) * along * across


def illumination(box: Box, profile: Profile, sc: dict) -> np.ndarray:
    """Noiseless sky (DN/s) over full-frame ``box`` at sky factor 1, without floor or gradient.

    Zero on the reference columns (they see no light).
    """
    y = np.arange(box.y0, box.y1, dtype=float)[:, None]
    x = np.arange(box.x0, box.x1, dtype=float)[None, :]
    img = None
    for c in sky_components(sc):
        part = component_image(c, y, x, profile, sc)
        img = part if img is None else img + part
    if img is None:
        img = np.zeros((box.y1 - box.y0, box.x1 - box.x0))
    img = np.broadcast_to(img, (box.y1 - box.y0, box.x1 - box.x0)).copy()
    img[profile.reference_mask()[box.slices()]] = 0.0
    return img
