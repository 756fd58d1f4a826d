"""An excess that decays within hours is a latent, not a defect.

A cosmic ray (or a bright source before the exposure) can leave a pixel raised by a fraction
of a DN/s to a few DN/s, decaying over hours (MIRI latents: about 1-2 % of the signal, decaying
over hours). Where a program takes
several exposures within an hour or two (an MRS visit: 2-8 dithers), that is a run of 3-6
exposures of additive excess: long enough to pass ``min_bad_exposures``, which only single
exposures and pairs (transients) fail. A defect holds its level (a warm pixel's dark current
does not relax within hours); a latent falls. So a run of excess that lasts at most
``max_hours`` and whose last exposure lies clearly below an earlier one (by ``min_sigma`` in
their combined noise, and below ``max_ratio`` of it) is not reported.

Pure numpy on one run of one pixel.
"""

from __future__ import annotations

import numpy as np


def decays_within(e, s, hours, *, max_hours: float, min_sigma: float, max_ratio: float) -> bool:
    """True when the excess run ``e`` (DN/s per exposure, time order; noise ``s``, DN/s;
    ``hours`` the exposures' mid-times in hours) lasts at most ``max_hours`` and falls: its last
    exposure is below ``max_ratio`` of an earlier exposure's excess and below it by at least
    ``min_sigma`` in the noise of their difference."""
    e = np.asarray(e, float)
    s = np.asarray(s, float)
    h = np.asarray(hours, float)
    if e.size < 2 or not np.all(np.isfinite(h)) or h[-1] - h[0] > max_hours:
        return False
    last, sl = e[-1], s[-1]
    earlier, se = e[:-1], s[:-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        drop = (earlier - last) / np.sqrt(se * se + sl * sl)
    ok = (earlier > 0) & (last <= max_ratio * earlier) & np.isfinite(drop)
    return bool(np.any(ok & (drop >= min_sigma)))
