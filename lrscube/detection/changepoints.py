"""Change points of one pixel's noise-normalised residual series: onset and recovery.

Pure functions of 1-D numpy arrays (one candidate pixel, its exposures in time order, gaps
removed). The series ``z`` is the clipped residual in units of its noise, so a good pixel is
N(0, 1) about a known level, zero (it agrees with the sky of its neighbours), and a defect is a
run of exposures whose mean is not zero.

Method: the most significant run. For a run [i, j) the statistic is ``|sum(z[i:j])| / sqrt(j -
i)``, the significance of its mean against the known zero level. :func:`best_run` finds the
run that maximises it (a coarse scan over run lengths on a geometric grid, then exact
coordinate ascent on the onset and the end, so a step is located to the exposure).
:func:`find_runs` takes that run, then looks again in what lies before and after it, while
runs reach ``min_sigma``: a recursive segmentation against the known level (unlike a
change-in-mean segmentation it is not confused by a short defect in the middle of a long
series, nor by a defect whose level changes with the sky). Each run also gets the significance
of its onset and of its recovery: the standardised difference between its mean and the mean of
the normal stretch before (after) it.

Example
-------
>>> z = np.r_[np.zeros(10), np.full(5, 4.0), np.zeros(10)]
>>> [(u.start, u.stop) for u in find_runs(z, min_sigma=4.0)]
[(10, 15)]
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numba
import numpy as np

from .running import median_inplace
from .temporal import geometric_lengths


def best_run(z: np.ndarray, min_length: int = 1) -> tuple[int, int, float]:
    """Run [i, j) of ``z`` with the largest |sum| / sqrt(length); returns (i, j, statistic).

    A scan over run lengths on a geometric grid (:func:`geometric_lengths`), then coordinate
    ascent on the ends, exact for the sign found. Compiled (:func:`_best_run`): it runs once per
    segment of every candidate pixel.

    >>> best_run(np.r_[np.zeros(5), np.full(3, 3.0), np.zeros(5)])
    (5, 8, 5.196152422706632)
    """
    z = np.asarray(z, float)
    n = z.size
    if n == 0:
        return 0, 0, 0.0
    c = np.concatenate([[0.0], np.cumsum(z)])
    i, j, stat = _best_run(c, _lengths(n), int(min_length))
    return int(i), int(j), float(stat)


@functools.lru_cache(maxsize=1024)
def _lengths(n: int) -> np.ndarray:
    """:func:`geometric_lengths` of ``n`` as int64, read-only: best_run runs for every segment of
    every candidate, on a few series lengths."""
    out = geometric_lengths(n).astype(np.int64)
    out.flags.writeable = False
    return out


@numba.njit(cache=True, nogil=True)
def _best_run(c, lengths, min_length):
    """:func:`best_run` on the cumulative sums ``c`` (n + 1,) of the series."""
    n = c.size - 1
    bi, bj, bs = 0, min(n, max(1, min_length)), -1.0
    for L in lengths:
        if L < min_length:
            continue
        q = np.sqrt(L)
        for i in range(n - L + 1):  # the first run of the largest statistic, as np.argmax
            st = abs(c[i + L] - c[i]) / q
            if st > bs:
                bi, bj, bs = i, i + L, st
    i, j = bi, bj
    sign = 1.0 if c[j] - c[i] >= 0 else -1.0
    m = max(1, min_length)
    for _ in range(4):
        if i + m <= n:
            best, arg = -np.inf, -1
            for jj in range(i + m, n + 1):
                st = sign * (c[jj] - c[i]) / np.sqrt(jj - i)
                if st > best or arg < 0:
                    best, arg = st, jj
            j = arg
        if j - m + 1 > 0:
            best, arg = -np.inf, -1
            for ii in range(0, j - m + 1):
                st = sign * (c[j] - c[ii]) / np.sqrt(j - ii)
                if st > best or arg < 0:
                    best, arg = st, ii
            i = arg
    return i, j, abs(c[j] - c[i]) / np.sqrt(j - i)


@dataclass
class Run:
    """A bad interval of a series: values ``start:stop`` (indices into the series)."""

    start: int
    stop: int
    sign: int  #: +1 excess, -1 deficit
    significance: float  #: |sum z| / sqrt(n) over the run (sigma)
    onset_significance: float  #: change statistic at the start (inf when the series starts bad)
    recovery_significance: float  #: change statistic at the stop (inf when still bad at the end)


def _change_stat(z: np.ndarray, a: int, i: int, j: int) -> float:
    """Standardised difference of the means of z[a:i] (normal stretch) and z[i:j] (the run)."""
    left, right = z[a:i], z[i:j]
    if left.size == 0 or right.size == 0:
        return float("inf")
    return float(abs(left.mean() - right.mean()) * np.sqrt(left.size * right.size / (left.size + right.size)))


def expected_levels(z: np.ndarray, i: int, j: int, shapes=None, cap=None, raw=None) -> np.ndarray | None:
    """The level in every exposure (z units) of the defect that is the run ``z[i:j]``.

    Without ``shapes``, the run's mean in every exposure. With ``shapes`` = (excess, deficit),
    each an array over the exposures, the defect's level follows the shape of its sign: a defect
    is a constant current (excess: shape 1 / sigma in z units) or a fraction of the sky
    (deficit: sky / sigma), so an exposure with twice the noise sees it at half the level. The
    level is the median over the run of ``raw / shape`` (``raw``: z before clipping; the
    current, or the fraction of the sky, of each exposure), capped at ``cap`` (the clip of
    ``z``). A run whose exposures scatter about that level by more than
    :data:`STEADY_VARIANCE_RATIO` (robust variance in units of the noise: a switching,
    telegraph-like run) and by more than :data:`STEADY_FRACTION` of the level (rms) has
    no single level: None. (A dead pixel's level is its lost response times the sky, which
    follows the sky model to half a percent where its own noise, with no photons left, is a
    tenth of that: beyond its noise, one level all the same.)
    """
    v = z[i:j]
    if shapes is None:
        return np.full(z.size, float(v.mean()) if v.size else 0.0)
    u = np.asarray(shapes[0] if v.sum() >= 0 else shapes[1], float)
    w = np.asarray(z if raw is None else raw, float)
    level, scat = _level_and_scatter(w[i:j], u[i:j])
    if not np.isfinite(level):
        return np.full(z.size, float(v.mean()))
    mu = level * u
    if j - i > 1 and scat > STEADY_VARIANCE_RATIO and not within_fraction(w[i:j], mu[i:j]):
        return None
    if cap is not None:
        mu = np.clip(mu, -np.asarray(cap, float), np.asarray(cap, float))
    return mu


@numba.njit(cache=True, nogil=True, error_model="numpy")  # w / 0 is inf or NaN, as in numpy
def _level_and_scatter(w, u):
    """(the median of ``w / u`` over its finite ratios, the robust (MAD) variance of ``w`` about
    that level times ``u``), NaN when no ratio is finite or a deviation is NaN."""
    n = w.size
    buf = np.empty(n)
    m = 0
    for t in range(n):
        q = w[t] / u[t]
        if q == q:
            buf[m] = q
            m += 1
    level = median_inplace(buf, m)
    if not np.isfinite(level):
        return level, np.nan
    for t in range(n):
        buf[t] = w[t] - level * u[t]
        if buf[t] != buf[t]:
            return level, np.nan
    med = median_inplace(buf, n)
    for t in range(n):
        buf[t] = abs((w[t] - level * u[t]) - med)
    return level, (1.4826 * median_inplace(buf, n)) ** 2


def within_fraction(w: np.ndarray, mu: np.ndarray) -> bool:
    """The values ``w`` keep to the levels ``mu`` within :data:`STEADY_FRACTION` of them (rms over
    rms, not robust: three exposures of a noisy pixel can share a median deviation of nothing):
    one steady level (a run's, :func:`expected_levels`; a state's, the states module's) though
    beyond its noise."""
    ok = np.isfinite(w) & np.isfinite(mu)
    d, m = w[ok] - mu[ok], mu[ok]
    return bool(ok.any() and np.sum(d * d) <= STEADY_FRACTION ** 2 * np.sum(m * m))


#: a run scattering more than this (chi^2 / dof) about its level is switching, not steady: its
#: ends stay those of the most significant run (the TELEGRAPH class test uses the same figure)
STEADY_VARIANCE_RATIO = 4.0
#: ... unless it keeps to its level within this fraction of it (a strong steady defect whose
#: level follows the sky model a little more than its noise allows)
STEADY_FRACTION = 0.1


def boundary_log_prior(hours: np.ndarray) -> np.ndarray:
    """(n + 1,): the log prior of a change just before each exposure of a series at mid-times
    ``hours`` (time order), up to a constant; index ``n``: no change inside the series.

    A pixel goes bad (or recovers) at a random time, so a change lies in the stretch between two
    exposures with a probability that grows with its length: between two visits weeks apart
    it is thousands of times likelier than between two exposures of one visit minutes apart.
    The log of each stretch, relative to the series' mean stretch, which also stands for the
    unseen stretches before the first exposure and after the last. Stretches shorter than a
    minute count as one (two products of one exposure have the same time)."""
    h = np.asarray(hours, float)
    n = h.size
    out = np.zeros(n + 1)
    if n < 2 or not np.all(np.isfinite(h)):
        return out
    mean = max((h[-1] - h[0]) / (n - 1), 1.0 / 60.0)
    out[1:n] = np.log(np.maximum(np.diff(h), 1.0 / 60.0) / mean)
    return out


def _bad_loglik(z: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """(n + 1,): the cumulative log-likelihood ratio of "bad at level ``mu``" against normal,
    ``sum z mu - mu^2 / 2`` over the first k exposures, k = 0 .. n."""
    return np.concatenate([[0.0], np.cumsum(z * mu - 0.5 * mu * mu)])


def refine_ends(found: list[tuple[int, int]], z: np.ndarray, shapes, cap=None, raw=None) -> list[tuple[int, int]]:
    """Onset and end of each steady run [i, j) by likelihood with the defect's level in every exposure.

    :func:`best_run` treats a run as one level in z; a defect's level in z changes from exposure
    to exposure with their noise (:func:`expected_levels`), so an exposure next to a boundary is
    bad when it is nearer the defect's level *in that exposure* than normal: each exposure adds
    ``z mu - mu^2 / 2`` to the log-likelihood of "bad", and each end is put where the sum over
    the run is largest, between the neighbouring runs. Switching runs are left as they are.
    """
    n = z.size
    out: list[tuple[int, int]] = []
    for k, (i, j) in enumerate(found):
        lo = out[-1][1] if out else 0
        hi = found[k + 1][0] if k + 1 < len(found) else n
        i, j = max(i, lo), max(j, max(i, lo) + 1)
        for _ in range(2):
            mu = expected_levels(z, i, j, shapes, cap, raw)
            if mu is None:
                break
            g = _bad_loglik(z, mu)
            i = lo + int(np.argmax(g[j] - g[lo:j]))
            j = i + 1 + int(np.argmax(g[i + 1:hi + 1] - g[i]))
        out.append((i, j))
    return out


def _matched_significance(z, i, j, mu, plain: float, isolated: bool = False) -> float:
    """The significance of the steady run [i, j) with each exposure weighed by the defect's level
    ``mu`` in it (:func:`expected_levels`): ``|sum z mu| / sqrt(sum mu^2)``, the likelihood
    ratio's; a level seen at 2 sigma in deep exposures and 0.2 in short ones is not averaged
    with equal weights. ``plain`` (the unweighted ``|sum z| / sqrt(n)``) for switching runs
    (``mu`` None).

    ``isolated``: the run has normal exposures on both sides, and at most one of its exposures
    reaches its clip by itself. Its largest weight is then no larger than its next: a level that one deep
    exposure alone carries, among short ones that cannot tell it from zero, rises from normal
    and falls back as a hit the jump step missed does (two exposures beyond the clip are no one
    hit), and a run that ends holds no later exposure to show the level persists."""
    if mu is None:
        return plain
    m = np.abs(mu[i:j])
    if isolated and m.size > 1:
        k = int(np.argmax(m))
        m = m.copy()
        m[k] = min(m[k], float(np.max(np.delete(m, k))))
    den = float(np.sqrt(np.sum(m * m)))
    return float(abs(np.sum(z[i:j] * m)) / den) if den > 0 else plain


def _isolated(i: int, j: int, sign: int, prev_end: int, next_start: int, raw: np.ndarray, cap: np.ndarray) -> bool:
    """Whether the run [i, j) of ``sign`` is :func:`_matched_significance`'s ``isolated``: normal
    exposures on both sides (the run before ends before ``i``, the next begins after ``j``; the
    series' ends count as runs) and fewer than two of its exposures at or beyond their clip
    ``cap`` in the series before clipping, ``raw``."""
    return prev_end < i and j < next_start and int(np.sum(sign * raw[i:j] >= cap[i:j])) < 2


def date_onsets(found: list[tuple[int, int]], z: np.ndarray, levels: list,
                log_prior: np.ndarray | None = None) -> list[int]:
    """The most probable onset of each steady run [i, j): where the log-likelihood of "bad" over
    [onset, j) (:func:`refine_ends`) plus the log prior of a change just before the onset
    (:func:`boundary_log_prior`: a change falls between visits, not between the exposures of
    one) is largest, after the previous run. An exposure that cannot tell the two levels apart
    (a short one at the end of a visit, before the next visit shows the defect) then stays
    normal with its visit. ``levels``: each run's :func:`expected_levels`. Switching runs (None)
    keep their onsets; so do all without ``log_prior``."""
    if log_prior is None:
        return [i for i, _ in found]
    lp = np.asarray(log_prior, float)
    out = []
    for k, ((i, j), mu) in enumerate(zip(found, levels)):
        lo = found[k - 1][1] if k else 0
        if mu is None or j <= lo:
            out.append(i)
            continue
        g = _bad_loglik(z, mu)
        out.append(lo + int(np.argmax(g[j] - g[lo:j] + lp[lo:j])))
    return out


def settle_boundaries(found: list[tuple[int, int]], z: np.ndarray, boundary_sigma: float, shapes=None,
                      cap=None, raw=None, log_prior: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Keep a recovery only where the normal side after it rejects the defect's level.

    ``found`` are runs [i, j) in time order. The most significant run puts its ends where the
    likelihood of a step is largest, which is right when both sides are long; next to the end
    of the series, or to the next run, the normal side may be only a few exposures, and for a
    weak defect (a level of one or two sigma per exposure) a noise dip there moves the end of
    the run: a still-bad pixel is declared recovered at its last exposures. So a recovery is a
    claim that the pixel is *normal* after it, and it must be supported: that stretch (up to
    the next run or the series end) must lie ``boundary_sigma`` standard errors below the
    defect's level (one-sided): with the defect's level ``mu_t`` in each exposure of the
    stretch (:func:`expected_levels`; the run's mean when no ``shapes`` are given), the
    statistic is ``sum mu_t (mu_t - z_t) / sqrt(sum mu_t^2)``. Otherwise the run is extended over the stretch
    (to the series end, or merged with the next run of the same sign). Long normal stretches
    always pass, so the likelihood location of real steps is kept.

    A normal stretch between two runs of one sign is two changes, a recovery and a return: with
    ``log_prior`` (:func:`boundary_log_prior`) the stretch must also be the more probable
    reading once their places are counted, ``sum (mu_t^2 / 2 - z_t mu_t) + log_prior[j] +
    log_prior[next] > 0``. A steady defect does not recover and come back between the exposures
    of one visit, minutes apart, on a 3-sigma dip (a telegraph pixel's pieces are grouped by
    its own switching later).

    Onsets are not moved: a run is never extended back to the start of the series. The run's
    start is already the likelihood estimate (:func:`best_run` extends a run backwards as long
    as that raises its significance, i.e. over every stretch closer to the defect's level than
    to normal), and a pixel that was bad before the first exposure is in the input static mask
    (carried, not analysed), so "bad since the start" is not the default for a defect found in
    the series. Extending to the start whenever the stretch before could not be shown normal
    at ``boundary_sigma`` flagged a weak defect's whole early history, up to a dozen good
    exposures.
    """
    runs = [list(r) for r in found]
    n = z.size
    changed = True
    while changed and runs:
        changed = False
        for k, r in enumerate(runs):
            i, j = r
            sign = 1.0 if z[i:j].sum() >= 0 else -1.0
            # after side
            nxt = runs[k + 1][0] if k + 1 < len(runs) else n
            if j < nxt:
                mu = expected_levels(z, i, j, shapes, cap, raw)
                mu = (expected_levels(z, i, j) if mu is None else mu)[j:nxt]
                norm = float(np.sqrt(np.sum(mu * mu)))
                ev = float(np.sum(mu * (mu - z[j:nxt]))) / norm if norm > 0 else 0.0
                supported = ev >= boundary_sigma
                if supported and log_prior is not None and k + 1 < len(runs):
                    # a recovery and a return: the stretch's log-likelihood ratio plus both priors
                    supported = norm * ev - 0.5 * norm * norm + log_prior[j] + log_prior[nxt] > 0
                if not supported:
                    if k + 1 < len(runs):
                        nmu = float(z[runs[k + 1][0]:runs[k + 1][1]].mean())
                        if np.sign(nmu) == sign:
                            r[1] = runs[k + 1][1]
                            del runs[k + 1]
                            changed = True
                            break
                    else:
                        r[1] = n
                        changed = True
                        break
    return [tuple(r) for r in runs]


def _is_hole(d: np.ndarray, v: np.ndarray, a: int, b: int, sign: float, min_hole: int,
             min_sigma: float) -> bool:
    """Whether [a, b) is a hole: ``min_hole`` exposures, below the run's level at ``min_sigma``
    (``d``'s ``sum / sqrt(n)``) and consistent with normal: its clipped z ``v`` not beyond
    ``min_sigma`` on the run's side (``sign``) of zero."""
    n = b - a
    return bool(n >= min_hole and d[a:b].sum() / np.sqrt(n) >= min_sigma
                and sign * float(np.sum(v[a:b])) / np.sqrt(n) < min_sigma)


def _quiet_hole(d: np.ndarray, high: np.ndarray, v: np.ndarray, sign: float, min_hole: int,
                min_sigma: float) -> tuple[int, int]:
    """The most significant hole (:func:`_is_hole`) among the maximal stretches free of
    ``high`` states; (0, 0) if none."""
    edges = np.flatnonzero(np.diff(np.r_[0, (~high).astype(np.int8), 0]))
    best, out = -np.inf, (0, 0)
    for a, b in zip(edges[::2], edges[1::2]):
        if _is_hole(d, v, a, b, sign, min_hole, min_sigma) and d[a:b].sum() / np.sqrt(b - a) >= best:
            best, out = d[a:b].sum() / np.sqrt(b - a), (int(a), int(b))
    return out


def split_holes(found: list[tuple[int, int]], z: np.ndarray, min_sigma: float, min_hole: int = 2,
                max_splits: int = 32, shapes=None, cap=None, raw=None) -> list[tuple[int, int]]:
    """Split each run [i, j) at stretches inside it where the pixel is back to normal.

    The most significant run of a defect that recovers for a few exposures and comes back
    spans both pieces and the quiet stretch between them (clipped at clip_sigma, the pieces'
    exposures outweigh a short stretch at zero). A stretch [h0, h1) strictly inside a run, of
    at least ``min_hole`` exposures, whose values lie below the run's typical level (its median
    ``mu``) by ``min_sigma`` standard errors (``sum(mu - z) sign(mu) / sqrt(n)``, each exposure
    counting at most ``|mu|``: one far below zero is noise, not more normal), is normal if it
    is also consistent with zero (:func:`_is_hole`) once its ends are moved inside the
    exposures nearer the level than zero (high states). A stretch below the level but not at
    normal (a telegraph pixel's mixed high and low states) gives its most significant stretch
    free of high states instead (:func:`_quiet_hole`). The run is split at the hole, and the
    pieces are examined again. Telegraph pieces are merged back
    where the pixel's switching makes the stretch probable (detect's telegraph grouping).
    With ``shapes`` (see :func:`expected_levels`), a steady run's typical level is the defect's
    level in each exposure: a constant current seen in a noisy exposure is a small z, not a hole.
    """
    out: list[tuple[int, int]] = []
    todo = list(found)
    splits = 0
    while todo:
        i, j = todo.pop(0)
        if j - i < min_hole + 2 or splits >= max_splits:
            out.append((i, j))
            continue
        mu = float(np.median(z[i:j]))
        sign = 1.0 if mu >= 0 else -1.0
        lv = expected_levels(z, i, j, shapes, cap, raw) if shapes is not None else None
        m = np.full(j - i - 2, mu) if lv is None else lv[i + 1:j - 1]
        # evidence for "back to normal", each exposure counting at most as much as one at zero
        d = np.minimum((m - z[i + 1:j - 1]) * sign, np.abs(m))
        if mu == 0 or d.size < min_hole:
            out.append((i, j))
            continue
        h0, h1, st = best_run(d, min_hole)
        if not (st >= min_sigma and d[h0:h1].sum() > 0 and h1 - h0 >= min_hole):
            out.append((i, j))
            continue
        v = z[i + 1:j - 1]
        high = v * sign >= 0.5 * np.abs(m)  # nearer the level than normal
        while h0 < h1 and high[h0]:  # a hole ends at the pixel's high states, not beyond them
            h0 += 1
        while h1 > h0 and high[h1 - 1]:
            h1 -= 1
        if not _is_hole(d, v, h0, h1, sign, min_hole, min_sigma):
            # below the run's level but not back to normal (a telegraph pixel's stretch of mixed
            # high and low states): its holes are the stretches free of high states
            h0, h1 = _quiet_hole(d, high, v, sign, min_hole, min_sigma)
        if h1 > h0:
            h0, h1 = h0 + i + 1, h1 + i + 1
            todo[:0] = [(i, h0), (h1, j)]
            splits += 1
        else:
            out.append((i, j))
    return sorted(out)


def find_runs(z: np.ndarray, *, min_sigma: float = 4.0, min_length: int = 1, max_runs: int = 64,
              boundary_sigma: float | None = None, shapes=None, cap=None, raw=None, split: bool = True,
              log_prior: np.ndarray | None = None) -> list[Run]:
    """Runs of ``z`` whose mean differs from zero, by recursive :func:`best_run`, in time order.

    Parameters
    ----------
    z : 1-D array
        Noise-normalised (clipped) series, no NaN.
    min_sigma : float
        Runs are taken while their statistic reaches this (sigma).
    min_length : int
        Shortest run searched.
    boundary_sigma : float, optional
        Boundaries are settled by :func:`settle_boundaries` at this significance (sigma).
    split : bool
        Split runs where the series is back to normal inside them (:func:`split_holes`; not
        for a series of excess scatter, whose quiet exposures are part of it).
    shapes : (array, array), optional
        The defect's level per exposure for an excess and for a deficit (z units, any scale;
        see :func:`expected_levels`); the ends are then placed by :func:`refine_ends` and the
        boundaries settled with those levels. ``cap``: the clip of ``z`` (scalar or array);
        ``raw``: ``z`` before clipping (for the levels).
    log_prior : (n + 1,) array, optional
        The log prior of a change before each exposure (:func:`boundary_log_prior`): each
        steady run's onset is then its most probable one (:func:`date_onsets`), its evidence
        (the run found, its significance) the likelihood's.
    """
    z = np.asarray(z, float)
    found: list[tuple[int, int, float, int]] = []
    stack = [(0, z.size)]
    while stack and len(found) < max_runs:
        a, b = stack.pop()
        if b - a < max(1, min_length):
            continue
        i, j, st = best_run(z[a:b], min_length)
        if st < min_sigma:
            continue
        i, j = a + i, a + j
        found.append((i, j, st, 1 if z[i:j].sum() >= 0 else -1))
        stack.append((a, i))
        stack.append((j, b))
    found.sort()
    if found:  # adjacent runs of one sign and level are one; a recovery and re-onset inside a run splits it
        spans = []
        for i, j, st, sg in found:
            if spans and spans[-1][1] == i and spans[-1][2] == sg:
                a0 = spans[-1][0]
                merged = abs(z[a0:j].sum()) / np.sqrt(j - a0)
                if merged >= max(spans[-1][3], st):
                    spans[-1] = (a0, j, sg, merged)
                    continue
            spans.append((i, j, sg, st))
        spans = [(i, j) for i, j, _, _ in spans]
        if split:
            spans = split_holes(spans, z, min_sigma, shapes=shapes, cap=cap, raw=raw)
        found = [(i, j, float(abs(z[i:j].sum()) / np.sqrt(j - i)), 1 if z[i:j].sum() >= 0 else -1) for i, j in spans]
    if shapes is not None and found:
        spans = refine_ends([(i, j) for i, j, _, _ in found], z, shapes, cap, raw)
        found = [(i, j, float(abs(z[i:j].sum()) / np.sqrt(j - i)), 1 if z[i:j].sum() >= 0 else -1) for i, j in spans]
    if boundary_sigma is not None and found:
        spans = settle_boundaries([(i, j) for i, j, _, _ in found], z, boundary_sigma, shapes, cap, raw,
                                  log_prior)
        found = []
        for i, j in spans:
            v = z[i:j]
            found.append((i, j, float(abs(v.sum()) / np.sqrt(v.size)), 1 if v.sum() >= 0 else -1))
    onsets = [i for i, _, _, _ in found]
    if shapes is not None and found:  # a steady run's evidence weighs each exposure by the level it sees there
        levels = [expected_levels(z, i, j, shapes, cap, raw) for i, j, _, _ in found]
        ends = [0] + [j for _, j, _, _ in found]
        starts = [i for i, _, _, _ in found[1:]] + [z.size]
        w = np.asarray(z if raw is None else raw, float)
        c = np.broadcast_to(np.inf if cap is None else np.asarray(cap, float), w.shape)
        found = [(i, j, _matched_significance(z, i, j, mu, st, isolated=_isolated(i, j, sg, prev, nxt, w, c)), sg)
                 for (i, j, st, sg), mu, prev, nxt in zip(found, levels, ends, starts)]
        # the evidence is the likelihood's (the runs, their significances); the onsets are the most
        # probable ones: the exposures the prior moves into or out of a run carry little of its evidence
        onsets = date_onsets([(i, j) for i, j, _, _ in found], z, levels, log_prior)
    runs = []
    for k, ((i, j, st, sign), di) in enumerate(zip(found, onsets)):
        prev_end = found[k - 1][1] if k > 0 else 0
        next_start = found[k + 1][0] if k + 1 < len(found) else z.size
        on = _change_stat(z, prev_end, i, j) if i > 0 else float("inf")
        rec = _change_stat(z[::-1], z.size - next_start, z.size - j, z.size - i) if j < z.size else float("inf")
        runs.append(Run(di, j, sign, st, on, rec))
    return runs


def merge_close(runs: list[Run], z: np.ndarray, max_gap: int) -> list[Run]:
    """Merge runs of the same sign separated by at most ``max_gap`` values (telegraph pixels)."""
    if not runs or max_gap <= 0:
        return runs
    out = [runs[0]]
    for r in runs[1:]:
        p = out[-1]
        if r.sign == p.sign and r.start - p.stop <= max_gap:
            v = z[p.start : r.stop]
            out[-1] = Run(p.start, r.stop, p.sign, float(abs(v.sum()) / np.sqrt(v.size)),
                          p.onset_significance, r.recovery_significance)
        else:
            out.append(r)
    return out
