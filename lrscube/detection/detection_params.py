"""Detection parameters: one typed object, validated once from the profile's ``detection:`` block.

Every threshold and window of the detector lives here with its unit; the defaults are the
documented values of ``configs/lrs.yaml`` (see docs/detection.md for why each value).
``DetectionParams.from_profile(profile, **overrides)`` reads a profile and applies keyword
overrides (the CLI passes its options this way).

>>> p = DetectionParams.from_dict({"sky_window_px": 21})
>>> p.sky_window_px, p.clip_sigma
(21, 6.0)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

from . import classify
from ..config import profiles
from .states import Thresholds


def norm_sf(x: float) -> float:
    """Upper tail probability of the standard normal."""
    return float(ndtr(-float(x)))


def static_alpha(static_sigma: float) -> float:
    """The per-pixel false-alarm rate a static threshold implies: the inverse of
    :meth:`DetectionParams.thresholds`' ``static`` (one-sided, over two tests)."""
    return 2.0 * norm_sf(float(static_sigma))


@dataclass(frozen=True)
class DetectionParams:
    # --- spatial residual (per exposure) ---------------------------------------------------
    #: running-median length along the dispersion for the local sky (pixels, odd)
    sky_window_px: int = 15
    #: fewest finite pixels in that window for a sky value
    min_sky_pixels: int = 5
    #: remove odd/even row offsets and row striping (lines across the dispersion)
    remove_line_offsets: bool = True
    #: running median of the residual across the dispersion removed (pixels, odd; 0 = off):
    #: structure shared by neighbouring columns of a row is sky, not a pixel defect
    cross_sky_window_px: int = 15
    #: exposures (spread over the data set) that measure the pixels' response pattern, which
    #: flat-fields each pixel's neighbours for its sky (0 = none)
    response_exposures: int = 16
    #: passes of the response estimate, each on the images flat-fielded by the last (the smooth
    #: sky each pass divides by carries a trace of a strong pattern: MRS fringes)
    response_passes: int = 2
    #: pixels whose illumination is below this fraction of the brightest across the dispersion
    #: nearby are outside the light (an image slicer's gaps, residuals.unlit_pixels): lit and
    #: unlit pixels each get a sky from their own kind (None: every pixel is lit, as in LRS)
    unlit_fraction: float | None = None
    #: a dark stretch is outside the light only when it runs this far along the dispersion
    #: (pixels): a slice gap runs the length of the spectrum, a cluster of dead pixels does not
    unlit_min_length_px: int = 64
    #: unlit runs across the dispersion at most this wide (pixels) are narrow gaps between
    #: slices, which see the slices' wings: their pixels are judged against the light of their
    #: gap along the dispersion, not the sky around (residuals.gap_pixels; None: none is)
    gap_max_width_px: int | None = None
    # --- non-blank exposures (source traces, their latents) ---------------------------------
    #: the mode's exposures can hold a source's spectrum, a long bump of the sky along the
    #: dispersion, whose exposures are left out (false: no trace is searched)
    source_traces: bool = True
    #: running-median width across the dispersion that defines a bump-free sky profile (pixels)
    trace_cross_window_px: int = 9
    #: threshold on the sky bump, averaged along the dispersion, in sigma of the sky estimate
    trace_sigma: float = 5.0
    #: length along the dispersion over which the bump is averaged (pixels)
    trace_min_length_px: int = 21
    #: a source's spectrum runs at most this far along the dispersion (pixels); a bump longer
    #: than that is a detector pattern (column offsets, EMI striping), which the running sky
    #: along the dispersion follows anyway, not a source (None: any length is a trace)
    trace_max_length_px: int | None = None
    #: pixels excluded on each side of a trace across the dispersion
    trace_margin_px: int = 2
    #: a pixel on a "trace" in more than this fraction of its exposures is a defect, not a source
    trace_max_fraction: float = 0.5
    # --- temporal statistics ------------------------------------------------------------------
    #: each exposure's noise-normalised residual is clipped to +-clip_sigma (sigma)
    clip_sigma: float = 6.0
    #: ... and to +-jump_clip_sigma in an exposure whose DQ has JUMP_DET for the pixel (the
    #: pipeline found a cosmic ray there; what its correction left is not in ERR)
    jump_clip_sigma: float = 3.0
    #: running-median length along time for single-exposure events (exposures, odd)
    transient_window: int = 5
    #: single-exposure event threshold above that running median (sigma)
    transient_sigma: float = 5.0
    #: a pixel with more single-exposure events than this is kept whole (telegraph candidates)
    max_transients: int = 2
    #: expected number of falsely flagged pixels per run over the whole detector; sets the
    #: detection threshold from the number of pixels and exposures
    false_alarm_pixels: float = 0.1
    #: explicit detection threshold (sigma); None = from false_alarm_pixels
    detection_sigma: float | None = None
    #: screening threshold as a fraction of the detection threshold (scan on a geometric grid)
    screen_fraction: float = 0.85
    #: runs of a candidate pixel are searched recursively while their significance reaches this
    #: (sigma); telegraph pieces are merged from such runs; every final interval must still
    #: reach the detection threshold
    changepoint_sigma: float = 4.0
    #: fewest exposures in a bad interval (runs shorter than this are single-exposure events)
    min_bad_exposures: int = 3
    #: a run of excess lasting at most this (hours) whose last exposure falls below an earlier
    #: one (afterglow_decay_sigma, afterglow_max_ratio) is a latent decaying, not a defect
    #: (MIRI latents decay over hours; lrscube.detection.afterglow)
    afterglow_max_hours: float = 6.0
    afterglow_decay_sigma: float = 3.5
    afterglow_max_ratio: float = 0.75
    #: at least this many adjacent pixels bad over the same hours (a run that ends within
    #: afterglow_max_hours) are a latent image of a bright source or a shower, not defects
    #: (lrscube.detection.afterglow.latent_images; 0: off)
    latent_min_pixels: int = 3
    #: ... and this many are one whether or not they are seen to fade within the visit (the core
    #: of a point source's image: MIRI's PSF is 1.5-3 pixels wide at 5-10 um)
    latent_image_pixels: int = 9
    #: pixels of one image may lie this far apart (Chebyshev, pixels): the local sky takes in
    #: the interior of an image wider than its window, leaving its rim
    latent_join_px: int = 2
    #: profile regions whose dispersed light ends at their own rows inside a larger frame (a
    #: spectrum's blue or red end): the sky windows along the dispersion stop there, as at a
    #: footprint's edge, so the steep fall-off beyond is not averaged into the pixels inside
    sky_end_regions: tuple = ()
    #: a change point is kept only where the stretch on its normal side lies this many standard
    #: errors (sigma, one-sided) below the defect's level; otherwise the interval extends over it
    boundary_sigma: float = 3.0
    #: excess runs of a TELEGRAPH pixel are one interval when the quiet stretch between them has
    #: at least this probability under the pixel's own switching rate ((1 - p_switch)^gap)
    telegraph_gap_probability: float = 0.001
    #: ... and when their high-state levels (DN/s) are within this ratio of each other (0-1)
    telegraph_level_ratio: float = 0.25
    #: state threshold for the telegraph evidence (sigma)
    state_sigma: float = 3.0
    #: a pixel beside a found HOT, WARM, DEAD or LOW_QE interval is tested over its exposures
    #: (lrscube.detection.companions) ...
    companion_test: bool = True
    #: ... and is a defect when it changed by at least this fraction of its neighbour's change
    #: (inter-pixel coupling passes on a few per cent)
    companion_min_ratio: float = 0.1
    # --- physical limits of a pixel's normal state, and of excess scatter ----------------------
    #: a normal state whose response is at most this fraction of its neighbours' is LOW_QE (or
    #: DEAD, below the DEAD class's max_response) in every exposure (jwst_reffiles: 0.5)
    low_qe_response: float = 0.5
    #: a normal state whose additive dark excess, measured apart from its response, is at least
    #: this (DN/s) over its neighbours' is WARM (HOT above the HOT class's threshold) in every
    #: exposure: rate files are dark-subtracted, and this is the weakest WARM that matters
    static_warm_dn_s: float = 0.02
    #: a level that is a defect whichever description fits, where the sky does not separate the
    #: two: an excess of at least this (DN/s) that as a response would be more than twice the
    #: neighbours', or a response loss to LOW_QE that as a dark level would be this far below
    static_excess_dn_s: float = 0.1
    #: excess scatter is a defect (TELEGRAPH) when its rms is at least this many times the
    #: noise expected from ERR and the pixel's neighbours
    noisy_rms_ratio: float = 1.5
    #: each exposure's calibrated residual (about its level) is clipped at this (sigma) in the
    #: excess-scatter statistic (a single exposure adds at most this squared)
    variance_clip_sigma: float = 3.0
    #: per-class thresholds, {class: {keyword: value}}, see lrscube.detection.classify
    classes: dict[str, dict[str, Any]] = field(default_factory=dict)
    # --- dask ---------------------------------------------------------------------------------
    #: memory budget of one stage-2 tile's arrays (MB); the tile area shrinks as exposures grow
    tile_memory_mb: float = 256.0
    #: exposures per stage-1 task (whole frames) and per time chunk of the work store
    work_batch_exposures: int = 16
    #: detect's scratch keeps each residual and sky to within half this fraction of the pixel's
    #: own noise (lrscube.storage.workstore, QUANTISED); 0 keeps float32
    work_precision_sigma: float = 1 / 32
    #: block of each exposure (pixels y, x) with its own noise calibration; default the stored
    #: chunk (the profile's ``geometry.chunk``; without a profile, the default profile's)
    calibration_block_px: tuple[int, int] = field(default_factory=lambda: tuple(profiles.load().chunk))

    def __post_init__(self):
        for name in ("sky_window_px", "trace_cross_window_px", "trace_min_length_px", "transient_window"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"detection.{name} must be a positive integer (pixels/exposures), got {v!r}")
        for name in ("clip_sigma", "jump_clip_sigma", "transient_sigma", "changepoint_sigma", "trace_sigma",
                     "screen_fraction", "tile_memory_mb", "false_alarm_pixels", "boundary_sigma",
                     "low_qe_response", "static_warm_dn_s", "static_excess_dn_s", "noisy_rms_ratio", "variance_clip_sigma"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v > 0):
                raise ValueError(f"detection.{name} must be a positive number, got {v!r}")
        if not 0 <= self.telegraph_gap_probability < 1:
            raise ValueError("detection.telegraph_gap_probability must be in [0, 1)")
        if not 0 <= self.companion_min_ratio <= 1:
            raise ValueError(f"detection.companion_min_ratio must be in [0, 1], got {self.companion_min_ratio!r}")
        if not 0 <= self.telegraph_level_ratio <= 1:
            raise ValueError("detection.telegraph_level_ratio must be in [0, 1]")
        if self.unlit_fraction is not None and not 0 < self.unlit_fraction < 1:
            raise ValueError(f"detection.unlit_fraction must be in (0, 1) or null, got {self.unlit_fraction!r}")
        if self.trace_max_length_px is not None and not (isinstance(self.trace_max_length_px, int)
                                                        and self.trace_max_length_px >= self.trace_min_length_px):
            raise ValueError("detection.trace_max_length_px must be an integer >= trace_min_length_px or null, "
                             f"got {self.trace_max_length_px!r}")
        if self.gap_max_width_px is not None and not (isinstance(self.gap_max_width_px, int)
                                                     and self.gap_max_width_px >= 1):
            raise ValueError(f"detection.gap_max_width_px must be an integer >= 1 or null, got {self.gap_max_width_px!r}")
        if not (isinstance(self.work_precision_sigma, (int, float)) and 0 <= self.work_precision_sigma <= 0.5):
            raise ValueError(f"detection.work_precision_sigma must be in [0, 0.5] (0: float32), got {self.work_precision_sigma!r}")
        if self.work_batch_exposures < 1:
            raise ValueError("detection.work_batch_exposures must be >= 1")
        if self.min_bad_exposures < 1:
            raise ValueError("detection.min_bad_exposures must be >= 1")
        if not (self.afterglow_max_hours >= 0 and self.afterglow_decay_sigma > 0 and 0 < self.afterglow_max_ratio <= 1):
            raise ValueError("detection.afterglow_max_hours must be >= 0 (0: off), afterglow_decay_sigma > 0 and "
                             "afterglow_max_ratio in (0, 1]")
        if not (isinstance(self.latent_image_pixels, int) and self.latent_image_pixels >= 1):
            raise ValueError(f"detection.latent_image_pixels must be an integer >= 1, got {self.latent_image_pixels!r}")
        if not (isinstance(self.latent_join_px, int) and self.latent_join_px >= 1):
            raise ValueError(f"detection.latent_join_px must be an integer >= 1, got {self.latent_join_px!r}")
        if not (isinstance(self.latent_min_pixels, int) and self.latent_min_pixels >= 0):
            raise ValueError(f"detection.latent_min_pixels must be an integer >= 0 (0: off), got {self.latent_min_pixels!r}")
        object.__setattr__(self, "classes", classify.class_parameters(self.classes))

    @classmethod
    def from_dict(cls, d: dict | None, **overrides) -> DetectionParams:
        d = dict(d or {})
        d.update({k: v for k, v in overrides.items() if v is not None})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"detection: unknown parameter(s) {sorted(unknown)}; known: {sorted(names)}")
        kw = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                continue
            v = d[f.name]
            if f.name == "calibration_block_px":
                v = tuple(int(a) for a in v)
            elif f.name == "sky_end_regions":
                v = tuple(str(a) for a in (v or ()))
            elif isinstance(f.default, bool):
                v = bool(v)
            elif isinstance(f.default, int) and not isinstance(f.default, bool):
                v = int(v)
            elif isinstance(f.default, float):
                v = float(v)
            kw[f.name] = v
        return cls(**kw)

    @classmethod
    def from_profile(cls, profile, **overrides) -> DetectionParams:
        """Parameters from a loaded mode profile's ``detection:`` block, with keyword overrides."""
        try:
            p = cls.from_dict({"calibration_block_px": profile.chunk, **profile.detection}, **overrides)
            unknown = [r for r in p.sky_end_regions if r not in profile.regions]
            if unknown:
                raise ValueError(f"detection.sky_end_regions: {unknown} not among the profile's regions "
                                 f"{sorted(profile.regions)}")
            return p
        except (ValueError, TypeError) as e:
            raise ValueError(f"{getattr(profile, 'source', 'profile')}: {e}") from None

    def threshold(self, n_pixels: int, n_exposures: int) -> float:
        """Detection threshold (sigma) of a level run over ``n_pixels`` pixels and ``n_exposures``."""
        return self.thresholds(n_pixels, n_exposures).level

    def thresholds(self, n_pixels: int, n_exposures: int):
        """The significances each screen's intervals must reach (:class:`lrscube.detection.states.Thresholds`).

        One false-alarm rate per pixel, ``false_alarm_pixels / n_pixels``, shared equally by the
        three screens: a level run (two-sided, ``N log2 N`` effectively independent runs), a run
        of excess scatter (one-sided, as many runs) and a normal state beyond a physical limit
        (one-sided, two tests: excess and response). ``detection_sigma`` sets the level
        threshold directly (the others then follow from its false-alarm rate).
        """
        n = max(int(n_exposures), 2)
        runs = n * np.ceil(np.log2(n))
        if self.detection_sigma is not None:
            level = float(self.detection_sigma)
            alpha = float(2.0 * runs * norm_sf(level))  # the per-pixel rate this level implies
        else:
            alpha = float(self.false_alarm_pixels) / 3.0 / max(int(n_pixels), 1)
            level = float(-ndtri(min(alpha / (2.0 * runs), 0.5)))
        variance = float(-ndtri(min(alpha / runs, 0.5)))
        static = float(-ndtri(min(alpha / 2.0, 0.5)))  # static_alpha inverts it
        return Thresholds(level, variance, static, alpha)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
