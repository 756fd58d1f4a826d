"""The simulator's detector response: every normal pixel's own fixed gain for light.

Rate products are not flat-fielded (the FLAT and, for the MRS, the FRINGE reference files are
applied later, in spec2/image2), so each pixel of a rate file sees the sky through its own,
fixed response. A pixel with response 0.96 is a NORMAL pixel: the truth has no row for it.
The response multiplies the light (sky, floor, source, latents), never a dark-current excess.

It is the product of (docs/simulation.md says what each part is based on):

- **pixel-to-pixel** response: independent per pixel, Gaussian with rms
  ``detector.pixel_response_rms`` (clipped at 5 rms so that no normal pixel looks like a
  LOW_QE one);
- **large-scale** structure: a smooth random field of rms ``detector.large_scale_response_rms``
  and correlation length ``detector.large_scale_px``;
- **fringes** (``detector.fringes``, the MRS): per channel, sinusoids in wavenumber mapped to
  detector rows through the band's wavelength range, each a Fabry-Perot component of the
  detector or the dichroics with its period in cm^-1, its amplitude varying smoothly across the
  detector, its phase across the columns, and averaged over a pixel's height (a fringe of a
  period near one row washes out).

The pattern belongs to the detector, not to a run: it is drawn from ``detector.response_seed``
(default: derived from the DETECTOR name), so every simulated set of one detector shares it.
Pure numpy/scipy functions of the frame shape, a config dict and a generator.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
from scipy import ndimage

from ..config.profiles import Box, Profile

#: a normal pixel's response is clipped at this many rms from 1
CLIP_RMS = 5.0


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """A smooth random field over ``shape`` with unit rms and correlation length ~``scale_px``.

    Drawn on a coarse grid (a few cells per scale length), smoothed there and interpolated
    up with cubic splines: cheap for a full frame at any scale.
    """
    ny, nx = shape
    step = max(1, int(scale_px // 4))
    cy, cx = ny // step + 4, nx // step + 4
    coarse = ndimage.gaussian_filter(rng.standard_normal((cy, cx)), sigma=scale_px / step / 2.0, mode="wrap")
    yy = np.arange(ny) / step + 1.5
    xx = np.arange(nx) / step + 1.5
    grid = np.meshgrid(yy, xx, indexing="ij")
    field = ndimage.map_coordinates(coarse, grid, order=3, mode="wrap")
    sd = field.std()
    return (field - field.mean()) / sd if sd > 0 else np.zeros(shape)


def pixel_response(rng: np.random.Generator, shape: tuple[int, int], pixel_rms: float,
                   large_rms: float, large_px: float) -> np.ndarray:
    """Multiplicative response of every pixel, mean ~1: small-scale x large-scale."""
    out = np.ones(shape)
    if pixel_rms > 0:
        out *= 1.0 + np.clip(rng.standard_normal(shape), -CLIP_RMS, CLIP_RMS) * pixel_rms
    if large_rms > 0:
        out *= 1.0 + np.clip(smooth_field(rng, shape, large_px), -CLIP_RMS, CLIP_RMS) * large_rms
    return out


def band_wavenumber(rows: np.ndarray, box: Box, wavelength_um: tuple[float, float],
                    increases_with_y: bool) -> np.ndarray:
    """Wavenumber (cm^-1) at each row of a channel whose band covers ``wavelength_um`` over ``box``'s rows,
    wavelength linear along the rows (the MRS dispersion)."""
    lo, hi = (float(v) for v in wavelength_um)
    u = (rows - box.y0) / max(1, box.y1 - 1 - box.y0)
    lam = lo + (hi - lo) * (u if increases_with_y else 1.0 - u)
    return 1e4 / lam


def fringe_component(rng: np.random.Generator, shape: tuple[int, int], box: Box, sigma: np.ndarray,
                     period_cm: float, amplitude: tuple[float, float], scale_px: float) -> np.ndarray:
    """One fringe component over ``box`` (1 elsewhere): 1 + A(y, x) sin(2 pi sigma / period + phi(x)),
    averaged over each pixel's height.

    ``sigma``: wavenumber of every row of the frame (cm^-1). A(y, x) spans ``amplitude`` smoothly
    across the detector; phi(x) wanders smoothly across the columns (a slice images another
    part of the field, through another optical path).
    """
    ny, nx = shape
    out = np.ones(shape)
    rows = np.arange(box.y0, box.y1)
    s = sigma[rows]
    # local period in rows: the fringe period in wavenumber over the row-to-row wavenumber step
    step = np.abs(np.gradient(s)) if s.size > 1 else np.ones_like(s)
    period_rows = period_cm / np.maximum(step, 1e-12)
    wash = np.sinc(1.0 / period_rows)  # average of a sinusoid over one row
    a_lo, a_hi = (float(v) for v in amplitude)
    u = 0.5 * (1.0 + np.tanh(smooth_field(rng, (ny, nx), scale_px)[box.slices()]))
    amp = a_lo + (a_hi - a_lo) * u
    phi = 2.0 * math.pi * smooth_field(rng, (1, nx), scale_px / 2.0)[0, box.x0:box.x1]
    phase = 2.0 * math.pi * s[:, None] / period_cm + phi[None, :]
    out[box.slices()] = 1.0 + amp * wash[:, None] * np.sin(phase)
    return out


def fringes(rng: np.random.Generator, profile: Profile, cfg: dict | None) -> np.ndarray:
    """The product of every fringe component of every channel of ``cfg`` (``detector.fringes``)."""
    shape = profile.frame_shape
    out = np.ones(shape)
    if not cfg:
        return out
    scale = float(cfg.get("amplitude_scale_px", 150.0))
    rows = np.arange(shape[0], dtype=float)
    for ch in cfg.get("channels", []):
        box = profile.regions[ch["region"]]
        sigma = band_wavenumber(rows, box, ch["wavelength_um"], bool(ch.get("wavelength_increases_with_y", True)))
        for comp in cfg.get("components", []):
            amp = ch.get("amplitude", {}).get(comp["name"], comp.get("amplitude"))
            if amp is None or max(float(a) for a in amp) <= 0:
                continue
            out *= fringe_component(rng, shape, box, sigma, float(comp["period_cm"]), amp, scale)
    return out


def response_seed(det: dict, detector: str) -> int:
    """The seed of a detector's pattern: ``detector.response_seed``, else one derived from its name."""
    seed = det.get("response_seed")
    return int(seed) if seed is not None else zlib.crc32(detector.encode())


def detector_response(profile: Profile, sc: dict, detector: str) -> np.ndarray:
    """Full-frame multiplicative response of ``detector`` (pixel x large-scale x fringes)."""
    det = sc["detector"]
    rng = np.random.default_rng(response_seed(det, detector))
    flat = pixel_response(rng, profile.frame_shape, float(det.get("pixel_response_rms", 0.0) or 0.0),
                          float(det.get("large_scale_response_rms", 0.0) or 0.0),
                          float(det.get("large_scale_px", 100.0)))
    return flat * fringes(rng, profile, det.get("fringes"))


def validate(sc: dict, profile: Profile, source: str = "scenario") -> None:
    """Raise ValueError naming the key when the response settings cannot be drawn on ``profile``."""
    det = sc["detector"]
    for key in ("pixel_response_rms", "large_scale_response_rms"):
        v = float(det.get(key, 0.0) or 0.0)
        if not 0 <= v < 0.2:
            raise ValueError(f"{source}: 'detector.{key}' must be in [0, 0.2) (a fraction), got {v!r}")
    fr = det.get("fringes")
    if not fr:
        return
    names = {c.get("name") for c in fr.get("components", [])}
    for c in fr.get("components", []):
        if float(c.get("period_cm", 0)) <= 0:
            raise ValueError(f"{source}: fringe component {c.get('name')!r} needs period_cm > 0")
    for ch in fr.get("channels", []):
        if ch.get("region") not in profile.regions:
            raise ValueError(f"{source}: detector.fringes channel region {ch.get('region')!r} is not a region of "
                             f"mode profile {profile.name!r} ({sorted(profile.regions)})")
        lo, hi = ch.get("wavelength_um", (0, 0))
        if not 0 < float(lo) < float(hi):
            raise ValueError(f"{source}: detector.fringes channel {ch['region']!r} needs wavelength_um [lo, hi], "
                             f"0 < lo < hi, got {ch.get('wavelength_um')!r}")
        for name, amp in (ch.get("amplitude") or {}).items():
            if name not in names:
                raise ValueError(f"{source}: detector.fringes channel {ch['region']!r} gives an amplitude for "
                                 f"{name!r}, which is not a component ({sorted(names)})")
            if not (len(amp) == 2 and 0 <= float(amp[0]) <= float(amp[1]) < 1):
                raise ValueError(f"{source}: fringe amplitude of {name!r} in {ch['region']!r} must be [lo, hi] "
                                 f"with 0 <= lo <= hi < 1, got {amp!r}")
