"""A pixel beside a defect that changed with it over the same exposures is a defect too.

Defects come in groups: a cosmic-ray hit damages neighbouring pixels together, and a cluster's
fainter members share its onset and recovery (docs/simulation.md, *Clusters*). A faint member
alone would need the full detection threshold, which pays for searching every onset and length
over the whole series of every pixel (``N log2 N`` runs). Beside a found defect the interval is
given: the neighbour is tested once, over the defect's own exposures and in its direction
(:func:`lrscube.detection.states.companion_interval`).

**The threshold keeps the detector's false-alarm rate per pixel.** The level screens spend
``alpha`` per pixel (:meth:`lrscube.detection.detection_params.DetectionParams.thresholds`); here
the ``alpha`` of a group's ``k`` pixels is spent on its ``m`` tests, each at ``alpha * k / m``
(one-sided), never below ``changepoint_sigma`` (the least evidence of any change point). Few
defects: few tests, each at a lower threshold; a crowded region: more tests at a higher one.
The companions add at most the level screen's expected false pixels once more.

**A hit's charge is not shared damage.** A cosmic ray or a shower raises neighbouring pixels
together over the hours after it (:mod:`lrscube.detection.afterglow`); only an interval lasting
longer than ``afterglow_max_hours`` is given to its neighbours.

**Coupling is not a defect.** Inter-pixel capacitance and crosstalk put a few per cent of a
pixel's signal into its neighbours (a 3 x 3 kernel: the jwst ``ipc`` step); a companion must
carry at least ``companion_min_ratio`` of its neighbour's change (excess in DN/s, or lost
response), and be of its kind (HOT or WARM beside an excess, DEAD or LOW_QE beside a loss of
response).

Pure numpy: the tests of one footprint group, from its intervals.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import ndtri

from .detection_params import static_alpha

#: classes whose change a neighbour may share: an additive excess or a loss of response
ADDITIVE = ("HOT", "WARM")
RESPONSE = ("DEAD", "LOW_QE")


class Neighbour(NamedTuple):
    """One neighbour to test over a found defect's exposures."""

    j: int  #: the neighbour's column in the group
    first: int  #: the defect's first and last bad exposure (time indices)
    last: int
    sign: int  #: +1 an additive excess, -1 a loss of response
    amplitude: float  #: the defect's excess (DN/s) or lost response (fraction), the largest neighbour's
    beside: tuple  #: the full-frame (y, x) of that defect


def neighbours(y: int, x: int, ny: int, nx: int) -> list[tuple[int, int]]:
    """The 8 neighbours of (y, x) inside a (ny, nx) tile."""
    return [(y + dy, x + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
            if (dy or dx) and 0 <= y + dy < ny and 0 <= x + dx < nx]


def to_test(found: list[dict], column: np.ndarray, spans: dict, shape, origin, min_hours: float = 0.0
            ) -> list[Neighbour]:
    """The tests of a group's neighbours of its found defects.

    ``found``: the group's classified intervals, each ``{"y", "x"`` (in the tile), ``"flag"``,
    ``"first"``, ``"last"`` (time indices), ``"hours"`` (from its first bad exposure to its
    last), ``"amplitude"``, ``"static"``, ``"noisy"``, ``"switching"}``; ``column`` (ny, nx): the group's column of each tile pixel (-1: not in it);
    ``spans``: the (first, last) exposure spans of every interval found for a pixel
    (y, x) of the tile. A neighbour is tested over a defect's exposures when it is in the group
    and has no interval of its own over any of them; a static state (bad throughout: nothing to
    compare with), a telegraph, a span of scatter and an interval of at most ``min_hours`` (a
    hit's charge) are not shared. One test per neighbour and
    interval, against the largest of the defects beside it over those exposures.
    """
    out: dict = {}
    ny, nx = shape
    for f in found:
        if (f["static"] or f["noisy"] or f["switching"] or f["flag"] not in ADDITIVE + RESPONSE
                or not f["hours"] > min_hours):
            continue
        sign = 1 if f["flag"] in ADDITIVE else -1
        for yy, xx in neighbours(f["y"], f["x"], ny, nx):
            j = int(column[yy, xx])
            if j < 0 or any(a <= f["last"] and f["first"] <= b for a, b in spans.get((yy, xx), ())):
                continue
            key = (j, f["first"], f["last"], sign)
            if key not in out or f["amplitude"] > out[key].amplitude:
                out[key] = Neighbour(j, f["first"], f["last"], sign, float(f["amplitude"]),
                                (int(f["y"] + origin[0]), int(f["x"] + origin[1])))
    return list(out.values())


def threshold(static_sigma: float, n_pixels: int, n_tests: int, floor: float) -> float:
    """One-sided threshold (sigma) of each of ``n_tests`` tests among ``n_pixels`` pixels: the
    per-pixel false-alarm rate ``alpha`` (the static screen's, one-sided over two tests:
    ``static_sigma``) of the pixels, shared by the tests, at least ``floor``.

    >>> round(threshold(5.6, 10000, 10000, 4.0), 2), round(threshold(5.6, 33000, 100, 4.0), 2)
    (5.48, 4.34)
    >>> threshold(5.6, 10000, 8, 4.5)
    4.5
    """
    per_test = min(static_alpha(static_sigma) * max(int(n_pixels), 1) / max(int(n_tests), 1), 0.5)
    return max(float(-ndtri(per_test)), float(floor))


def shares_change(row: dict, flag: str, t: Neighbour, min_ratio: float) -> bool:
    """The companion (its evidence ``row``, classified ``flag``) changed as its neighbour did: of
    its kind, by at least ``min_ratio`` of the neighbour's change in the same unit (more than
    coupling passes on)."""
    if flag not in (ADDITIVE if t.sign > 0 else RESPONSE):
        return False
    got = row["excess_dn_s"] if t.sign > 0 else row["deficit"]
    return bool(np.isfinite(got) and got >= min_ratio * t.amplitude)
