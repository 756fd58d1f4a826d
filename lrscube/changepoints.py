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

from dataclasses import dataclass

import numpy as np

from .temporal import geometric_lengths


def best_run(z: np.ndarray, min_length: int = 1) -> tuple[int, int, float]:
    """Run [i, j) of ``z`` with the largest |sum| / sqrt(length); returns (i, j, statistic).

    >>> best_run(np.r_[np.zeros(5), np.full(3, 3.0), np.zeros(5)])
    (5, 8, 5.196152422706632)
    """
    z = np.asarray(z, float)
    n = z.size
    if n == 0:
        return 0, 0, 0.0
    c = np.concatenate([[0.0], np.cumsum(z)])
    best = (0, min(n, max(1, min_length)), -1.0)
    for L in geometric_lengths(n):
        if L < min_length:
            continue
        st = np.abs(c[L:] - c[:-L]) / np.sqrt(L)
        i = int(np.argmax(st))
        if st[i] > best[2]:
            best = (i, i + L, float(st[i]))
    i, j, _ = best
    sign = 1.0 if c[j] - c[i] >= 0 else -1.0
    # coordinate ascent on the ends, exact for the sign found
    for _ in range(4):
        js = np.arange(i + max(1, min_length), n + 1)
        if js.size:
            st = sign * (c[js] - c[i]) / np.sqrt(js - i)
            j = int(js[np.argmax(st)])
        is_ = np.arange(0, j - max(1, min_length) + 1)
        if is_.size:
            st = sign * (c[j] - c[is_]) / np.sqrt(j - is_)
            i = int(is_[np.argmax(st)])
    stat = float(abs(c[j] - c[i]) / np.sqrt(j - i))
    return i, j, stat


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


def settle_boundaries(found: list[tuple[int, int]], z: np.ndarray, boundary_sigma: float) -> list[tuple[int, int]]:
    """Keep a change point only where the normal side rejects the defect's level.

    ``found`` are runs [i, j) in time order. The most significant run puts its ends where the
    likelihood of a step is largest, which is right when both sides are long; next to the start
    or end of the series, or to another run, the normal side may be only a few exposures, and
    for a weak defect (a level of one or two sigma per exposure) a noise dip there moves the end
    of the run: a still-bad pixel is declared recovered at its last exposures. So each boundary
    is a claim that the pixel is *normal* on its other side, and it must be supported: the mean
    of that stretch (up to the neighbouring run or the series end) must lie ``boundary_sigma``
    standard errors below the run's own mean level (one-sided). Otherwise the run is extended
    over the stretch (to the series end, or merged with a neighbouring run of the same sign).
    Long normal stretches always pass, so the likelihood location of real steps is kept.
    """
    runs = [list(r) for r in found]
    n = z.size
    changed = True
    while changed and runs:
        changed = False
        for k, r in enumerate(runs):
            i, j = r
            seg = z[i:j]
            mu = float(seg.mean())
            sign = 1.0 if mu >= 0 else -1.0
            # after side
            nxt = runs[k + 1][0] if k + 1 < len(runs) else n
            if j < nxt:
                m = nxt - j
                ev = sign * (mu - float(z[j:nxt].mean())) * np.sqrt(m)
                if ev < boundary_sigma:
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
            prev = runs[k - 1][1] if k > 0 else 0
            if prev < i and k == 0:
                m = i - prev
                ev = sign * (mu - float(z[prev:i].mean())) * np.sqrt(m)
                if ev < boundary_sigma:
                    r[0] = 0
                    changed = True
                    break
    return [tuple(r) for r in runs]


def find_runs(z: np.ndarray, *, min_sigma: float = 4.0, min_length: int = 1, max_runs: int = 64,
              boundary_sigma: float | None = None) -> list[Run]:
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
    if boundary_sigma is not None and found:
        spans = settle_boundaries([(i, j) for i, j, _, _ in found], z, boundary_sigma)
        found = []
        for i, j in spans:
            v = z[i:j]
            found.append((i, j, float(abs(v.sum()) / np.sqrt(v.size)), 1 if v.sum() >= 0 else -1))
    runs = []
    for k, (i, j, st, sign) in enumerate(found):
        prev_end = found[k - 1][1] if k > 0 else 0
        next_start = found[k + 1][0] if k + 1 < len(found) else z.size
        on = _change_stat(z, prev_end, i, j) if i > 0 else float("inf")
        rec = _change_stat(z[::-1], z.size - next_start, z.size - j, z.size - i) if j < z.size else float("inf")
        runs.append(Run(i, j, sign, st, on, rec))
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
