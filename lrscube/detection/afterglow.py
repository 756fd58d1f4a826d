"""An excess that decays within hours is a latent, not a defect.

A cosmic ray (or a bright source before the exposure) can leave a pixel raised by a fraction
of a DN/s to a few DN/s, decaying over hours (MIRI latents: about 1-2 % of the signal, decaying
over hours). Where a program takes
several exposures within an hour or two (an MRS visit: 2-8 dithers), that is a run of 3-6
exposures of additive excess: long enough to pass ``min_bad_exposures``, which only single
exposures and pairs (transients) fail. A defect holds its level (a warm pixel's dark current
does not relax within hours); a latent falls. So a run of excess that lasts at most
``max_hours`` and whose last exposure lies clearly below an earlier one (by ``min_sigma`` in
their combined noise, and below ``max_ratio`` of it), and that nowhere rises by as much (a
latent only decays), is not reported.

Two more signs of a latent:

- **a hit**: the pipeline's jump step flagged the pixel (JUMP_DET) between the normal exposure
  before the run and its last exposure, and the run's exposures outside the hours after the
  hit show no excess of their own (:func:`explained_by_hit`). A cosmic ray raised it; a defect
  made by a hit (radiation damage) holds its level for longer than hours.
- **an image**: at least ``min_pixels`` adjacent pixels with a dark-current excess over the
  same hours that fade together, or as many as a point source's image core whether they are
  seen to fade or not (:func:`latent_images`): the latent of a bright source observed
  before the visit (not in the cube) or of a cosmic-ray shower. A pixel defect is a pixel, and a
  cluster of defects holds its level (even where one visit is all that sees it).

Where one span of those hours holds half of a short series, a latent over it can pass for the
pixels' normal state; nothing in a pixel's series tells the two apart, so detect only records a
caution (:func:`latent_cautions`).

Pure numpy/pandas: one run of one pixel, or the intervals table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def decays_within(e, s, hours, *, max_hours: float, min_sigma: float, max_ratio: float) -> bool:
    """True when the excess run ``e`` (DN/s per exposure, time order; noise ``s``, DN/s;
    ``hours`` the exposures' mid-times in hours) lasts at most ``max_hours`` and falls: its last
    exposure is below ``max_ratio`` of an earlier exposure's excess and below it by at least
    ``min_sigma`` in the noise of their difference; and nowhere rises by as much.

    A latent's charge only decays, so its mean rate over an exposure is below that over any
    earlier one whatever their lengths (the exposures do not overlap). An exposure clearly in
    excess followed by a later one higher by the same measure (``min_sigma``, and beyond
    ``1 / max_ratio`` of it) is a pixel whose excess comes and goes, not a latent."""
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
    return bool(np.any(ok & (drop >= min_sigma))) and not _rises(e, s, min_sigma, max_ratio)


def _rises(e, s, min_sigma: float, max_ratio: float) -> bool:
    """Whether an exposure in excess by ``min_sigma`` is followed by one above it by ``min_sigma``
    in the noise of their difference and beyond ``1 / max_ratio`` of it (the reverse of a fall)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        raised = np.isfinite(e) & np.isfinite(s) & (s > 0) & (e >= min_sigma * s)
        for i in np.flatnonzero(raised[:-1]):
            later, sl = e[i + 1:], s[i + 1:]
            up = (later - e[i]) / np.sqrt(s[i] * s[i] + sl * sl)
            if np.any(np.isfinite(up) & (up >= min_sigma) & (max_ratio * later >= e[i])):
                return True
    return False


def explained_by_hit(e, s, h, start: int, stop: int, hits, *, max_hours: float, min_sigma: float,
                     scatter_clip: float | None = None) -> bool:
    """True when a hit explains the run ``[start, stop)`` of excess ``e`` (noise ``s``, DN/s;
    ``h`` the exposures' mid-times and ``hits`` the JUMP_DET exposures', hours): a hit from the
    normal exposure before the run's first to its last, and the run's exposures outside the
    ``max_hours`` after it (after any of them: a pixel hit twice) carry no evidence of their
    own, their excess stacked in its noise below ``min_sigma`` (the level threshold). Their
    number is not asked: an exposure far beyond the noise just before a hit is no charge of that
    hit, and a telegraph pixel switching within an exposure is flagged JUMP_DET by the ramp fit
    as a hit is.

    The hit exposure's own rate does not show the charge (the ramp fit takes the jump out of
    it): the charge raises the exposures after it, so a hit in the normal exposure just before
    the run counts. A run's ends are where its level is most ambiguous: an exposure a few sigma
    high from an earlier visit, or the next visit's short exposures, is taken into the run of a
    hit's charge as easily as into a defect's, so the run need not begin at the hit nor end
    within its hours; what the exposures outside them show by themselves decides. A run within
    the hours that reaches the series' end is a latent too: charge a hit left is far more
    frequent than a hot pixel it made, and the next detect, with the exposures after it, sees
    whether the pixel holds its level. A defect that a hit made, or that began beside one,
    holds its level outside the hours and keeps its run.

    With ``scatter_clip`` the run is a span of excess scatter (a noisy or telegraph pixel's):
    the exposures outside the hours must carry no excess scatter either: their squared
    normalised excess (clipped at ``scatter_clip``) summed, its chi^2 tail (n degrees) below
    ``min_sigma`` in Gaussian sigma. A hit's charge in the exposures of its
    visit scatters far beyond the noise about any level; a noisy pixel scatters outside the
    hours as well."""
    e = np.asarray(e, float)[start:stop]
    s = np.asarray(s, float)[start:stop]
    hh = np.asarray(h, float)
    hits = np.asarray(hits, float)
    if hits.size == 0 or stop > hh.size or stop <= start:
        return False
    before = hh[start - 1] if start > 0 else -np.inf
    t = hh[start:stop]
    inside = np.zeros(t.size, bool)  # within the hours after any of the run's hits
    for hit in hits[(hits >= before) & (hits <= t[-1])]:
        inside |= (t >= hit) & (t <= hit + max_hours)
    if not inside.any():
        return False
    rest = ~inside & np.isfinite(e) & np.isfinite(s) & (s > 0)
    if not rest.any():
        return True
    w = 1.0 / (s[rest] * s[rest])
    if np.sum(w * e[rest]) / np.sqrt(np.sum(w)) >= min_sigma:
        return False
    if scatter_clip is None:
        return True
    # the sum's own tail (chi^2 with one degree per exposure; the clip only lowers it), in
    # Gaussian sigma: over the few exposures of a visit or two the Gaussian approximation of the
    # sum, (sum - n) / sqrt(2 n), puts a chance 4-sigma excess at 7
    from scipy.stats import chi2, norm

    z2 = np.minimum((e[rest] / s[rest]) ** 2, float(scatter_clip) ** 2)
    return bool(norm.isf(chi2.sf(float(np.sum(z2)), z2.size)) < min_sigma)


def latent_images(iv: pd.DataFrame, mjd, *, max_hours: float, min_pixels: int,
                  min_fall_sigma: float = 0.0, image_pixels: int | None = None, join_px: int = 1) -> np.ndarray:
    """(len(iv),) bool: the intervals that belong to a latent image: runs of a dark current (not
    a loss of response: DEAD and LOW_QE are no latent) that last at most ``max_hours`` from their
    first to their last bad exposure (``last_bad_mjd``; where a table has none, the cube's last
    exposure before the first good one, ``mjd`` every exposure's mid-time, MJD: never shorter
    than the run), are connected, pixel to pixel within ``join_px`` (1: the 8 neighbours) over
    overlapping hours, to at least ``min_pixels`` pixels in all, and fade together: their
    ``fall_sigma`` (first to last exposure, sigma) summed over the group and divided by the root
    of its count reaches ``min_fall_sigma``, or they cover at least ``image_pixels`` pixels (the
    core of a point source's image, 3 x 3 pixels for MIRI, whose PSF is 1.5-3 pixels wide at
    5-10 um: an image seen within a visit too short to fade). A cluster of defects seen in one
    visit holds its level; a latent fades within hours.

    A run either ends (a normal exposure follows) or reaches the series' last exposure: such a
    run's group is a latent only by fading, since nothing shows that it ends. ``join_px`` 2:
    the local sky takes in the interior of an image wider than its window, so what is flagged of
    it is its rim, whose pixels may lie a pixel apart."""
    n = len(iv)
    out = np.zeros(n, bool)
    if n == 0 or min_pixels < 1 or max_hours <= 0:
        return out
    mjd = np.sort(np.asarray(mjd, float))
    first = iv["first_bad_mjd"].to_numpy(float)
    good = iv["first_good_mjd"].to_numpy(float)
    dark = np.isfinite(first) & ~iv["flag"].isin(["DEAD", "LOW_QE"]).to_numpy()
    if "carried" in iv:
        dark &= ~iv["carried"].to_numpy(bool)
    ended = dark & np.isfinite(good)
    open_ = dark & ~np.isfinite(good)
    k = np.searchsorted(mjd, np.where(ended, good, 0.0), side="left") - 1
    last = np.where(ended & (k >= 0), mjd[np.clip(k, 0, None)], np.where(open_, mjd[-1], np.nan))
    if "last_bad_mjd" in iv:
        lb = iv["last_bad_mjd"].to_numpy(float)
        last = np.where(np.isfinite(lb), lb, last)
    fall = iv["fall_sigma"].to_numpy(float) if "fall_sigma" in iv else np.full(n, np.inf)
    short = (ended | open_) & (last >= first) & ((last - first) * 24.0 <= max_hours)
    idx = np.flatnonzero(short)
    if idx.size < min_pixels:
        return out
    y = iv["y"].to_numpy(int)[idx]
    x = iv["x"].to_numpy(int)[idx]
    a, b = first[idx], last[idx]
    still = open_[idx]
    # a table without falls: every ended run fades; a run to the end must be seen to
    f = np.where(np.isfinite(fall[idx]) | (np.isinf(fall[idx]) & ~still), fall[idx], 0.0)
    parent = np.arange(idx.size)

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    at: dict[tuple[int, int], list[int]] = {}
    for i in range(idx.size):
        at.setdefault((y[i], x[i]), []).append(i)
    reach = range(-int(join_px), int(join_px) + 1)
    for i in range(idx.size):
        for dy in reach:
            for dx in reach:
                for j in at.get((y[i] + dy, x[i] + dx), ()):
                    if j > i and a[i] <= b[j] and a[j] <= b[i]:
                        parent[root(i)] = root(j)
    roots = np.array([root(i) for i in range(idx.size)])
    for r in np.unique(roots):
        m = roots == r
        size = len(set(zip(y[m].tolist(), x[m].tolist())))
        fades = np.sum(f[m]) / np.sqrt(m.sum()) >= min_fall_sigma
        all_ended = not still[m].any()
        if size >= min_pixels and (fades or (all_ended and image_pixels is not None and size >= image_pixels)):
            out[idx[m]] = True
    return out


def busiest_hours(mjd, max_hours: float) -> int:
    """The most exposures (mid-times ``mjd``, days, any order) within any ``max_hours`` of each
    other: the exposures one latent can cover."""
    m = np.sort(np.asarray(mjd, float))
    if m.size == 0 or max_hours <= 0:
        return int(m.size > 0)
    end = np.searchsorted(m, m + max_hours / 24.0, side="right")
    return int(np.max(end - np.arange(m.size)))


def latent_cautions(footprints: dict, max_hours: float) -> list[str]:
    """Cautions on series a latent can dominate: ``footprints`` maps a name to the mid-times of
    the exposures that see it. A pixel's normal state is the level most of its exposures show
    (and its neighbours'); where one span of ``max_hours`` holds at least half of a footprint's
    exposures (two at least), a latent over that span (of a bright target observed just before
    the visit) can be taken for the normal state, and the exposures outside it for a defect."""
    out = []
    for name, mjd in footprints.items():
        n = int(np.size(mjd))
        k = busiest_hours(mjd, max_hours)
        if k >= 2 and 2 * k >= n:  # one exposure is no state
            out.append(f"{name}: {k} of its {n} exposures lie within {max_hours:g} h: a latent over those "
                       f"hours can be taken for the pixels' normal state (docs/detection.md, *Short series*)")
    return out
