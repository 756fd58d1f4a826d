"""Running medians and means along an axis of an image stack, compiled (numba): the same
numbers as ``bottleneck.move_median`` and ``scipy.ndimage.uniform_filter1d``, several times
faster on images.

Detection takes about seven running medians of every full frame (the sky along the dispersion,
the residual across it, the trace profile) and one along time per tile. For the windows it
uses (5, 9, 15: ``SHARED_WINDOWS``) and arrays at least a window long, neighbouring outputs
share their work: k = 4 outputs of a 15-pixel window share 12 of their values, a pruned sorting
network finds the 4 middle ranks of those once, and each output merges its 3 own values in with
a few min/max (:func:`median_kernel_source`, generated straight-line code in
``lrscube/detection/_median_kernels.py`` that keeps every value in vector registers, one lane per
column). Along the last axis, strips of 64 rows are transposed so that the lanes are columns
again. A window cut by an edge or holding NaN (the sum of its values is NaN) is sorted and
judged pixel by pixel with bottleneck's rules: the median of the finite values, NaN when there
are fewer than ``min_count``, the mean of the middle two (in double precision) for an even
count; the k windows of such a lane, and the windows cut by an edge, overlap, so a sorted
window slides from one to the next (one value out, one in). A
1024 x 1032 frame costs ~1.5 ms along columns and ~3 ms along rows (one core; bottleneck's
double-heap median ~30 ms). Other windows take one pruned selection network per output
(Batcher's odd-even merge sort, evaluated for 64 neighbouring pixels at once). Either way the
result equals ``bottleneck.move_median`` bit for bit (tests/detection/test_running.py).

The running means (a dozen per frame, for the local slope of the sky) are scipy's running sum
in double precision, with the pixels of a row side by side instead of one column at a time.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numba
import numpy as np

from . import jitcache

jitcache.configure(__file__)  # before any kernel is decorated: no cache files in site-packages

from . import _median_kernels  # noqa: E402

#: pixels evaluated side by side (a multiple of every SIMD width; the buffer stays in L1 cache)
LANES = 64


def _oddeven_merge_sort(n: int) -> list[tuple[int, int]]:
    """Comparators (i, j), i < j, of Batcher's odd-even merge sort of n = 2**k values."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


@lru_cache(maxsize=None)
def selection_network(window: int) -> tuple[int, np.ndarray]:
    """(n, comparators) placing the median of ``window`` values at index window // 2.

    The values go into n = 2**k slots, the slots past ``window`` hold +inf (they sort last);
    comparators that cannot change the middle slot are dropped (15 values: 53 of 63).
    """
    n = 1
    while n < window:
        n *= 2
    need = {window // 2}
    kept = []
    for i, j in reversed(_oddeven_merge_sort(n)):
        if i in need or j in need:
            kept.append((i, j))
            need |= {i, j}
    kept.reverse()
    return n, np.array(kept, dtype=np.int64).reshape(-1, 2)


@numba.njit(cache=True, nogil=True)
def _insert(small, k, v):
    """Insert v into the sorted small[:k]; returns k + 1."""
    p = k
    while p > 0 and small[p - 1] > v:
        small[p] = small[p - 1]
        p -= 1
    small[p] = v
    return k + 1


@numba.njit(cache=True, nogil=True)
def _remove(small, k, v):
    """Remove (one copy of) v from the sorted small[:k]; returns k - 1."""
    p = 0
    while small[p] != v:
        p += 1
    while p < k - 1:
        small[p] = small[p + 1]
        p += 1
    return k - 1


@numba.njit(cache=True, nogil=True)
def _median_sorted(small, k, min_count):
    """bottleneck's median of the k sorted finite values (NaN below min_count)."""
    if k < min_count or k == 0:
        return np.float32(np.nan)
    if k % 2 == 1:
        return small[k // 2]
    return np.float32((np.float64(small[k // 2 - 1]) + np.float64(small[k // 2])) / 2.0)


@numba.njit(cache=True, nogil=True)
def _network(buf, pairs):
    for c in range(pairs.shape[0]):
        x = pairs[c, 0]
        y = pairs[c, 1]
        for lane in range(LANES):
            u = buf[x, lane]
            v = buf[y, lane]
            buf[x, lane] = u if u < v else v
            buf[y, lane] = v if u < v else u


@numba.njit(cache=True, nogil=True)
def _fallback(keep, lane, window, min_count, small):
    """Median of the finite values among keep[:window, lane] (bottleneck's rules)."""
    k = 0
    for q in range(window):
        v = keep[q, lane]
        if v == v:
            k = _insert(small, k, v)
    return _median_sorted(small, k, min_count)


@numba.njit(cache=True, nogil=True)
def _median_block(buf, keep, total, pairs, nl, window, min_count, small, out_row, o0):
    """Medians of one block of lanes into out_row[o0:o0 + nl]: the network's middle slot where
    the window is whole (its sum is a number), else the one-by-one median of a copy kept
    from before the network."""
    half = window // 2
    whole = True
    for lane in range(nl):
        if total[lane] != total[lane]:
            whole = False
            break
    if not whole:
        keep[:, :] = buf
    _network(buf, pairs)
    for lane in range(nl):
        if whole or total[lane] == total[lane]:
            out_row[o0 + lane] = buf[half, lane]
        else:
            out_row[o0 + lane] = _fallback(keep, lane, window, min_count, small)


@numba.njit(cache=True, nogil=True)
def _scratch(n, window):
    """A block's buffers: the window values (n x LANES) before and after the network, the
    lanes' sums, and room to sort one window."""
    return (np.empty((n, LANES), np.float32), np.empty((n, LANES), np.float32), np.empty(LANES, np.float32),
            np.empty(window, np.float32))


@numba.njit(cache=True, nogil=True)
def _along_rows(a, window, min_count, n, pairs, out):
    """Running median along axis 0 of a (L, M) array, lanes along axis 1."""
    L, M = a.shape
    half = window // 2
    buf, keep, total, small = _scratch(n, window)
    inf, nan = np.float32(np.inf), np.float32(np.nan)
    for i in range(L):
        lo = i - half
        for m0 in range(0, M, LANES):
            nl = min(LANES, M - m0)
            for k in range(window):
                p = lo + k
                if p >= 0 and p < L:
                    for lane in range(nl):
                        buf[k, lane] = a[p, m0 + lane]
                else:
                    for lane in range(nl):
                        buf[k, lane] = nan
                for lane in range(nl, LANES):
                    buf[k, lane] = inf
            for k in range(window, n):
                buf[k, :] = inf
            # a window holding NaN, or cut by an edge (NaN there), has a NaN sum
            total[:] = 0
            for k in range(window):
                for lane in range(LANES):
                    total[lane] += buf[k, lane]
            _median_block(buf, keep, total, pairs, nl, window, min_count, small, out[i], m0)


@numba.njit(cache=True, nogil=True)
def _along_last(a, window, min_count, n, pairs, out):
    """Running median along axis 1 of a (R, C) array, lanes along axis 1 (shifted loads)."""
    R, C = a.shape
    half = window // 2
    buf, keep, total, small = _scratch(n, window)
    inf, nan = np.float32(np.inf), np.float32(np.nan)
    for r in range(R):
        row = a[r]
        for x0 in range(0, C, LANES):
            nl = min(LANES, C - x0)
            total[:] = 0
            inner = x0 - half >= 0 and x0 + nl - 1 + half < C
            for k in range(window):
                if inner:
                    for lane in range(nl):
                        v = row[x0 + lane - half + k]
                        buf[k, lane] = v
                        total[lane] += v
                else:
                    for lane in range(nl):
                        p = x0 + lane - half + k
                        v = row[p] if p >= 0 and p < C else nan
                        buf[k, lane] = v
                        total[lane] += v
                for lane in range(nl, LANES):
                    buf[k, lane] = inf
            for k in range(window, n):
                buf[k, :] = inf
            _median_block(buf, keep, total, pairs, nl, window, min_count, small, out[r], x0)


@numba.njit(cache=True, nogil=True)
def _shared_axis0(a, window, k, min_count, out):
    """Running median along axis 0 of (L, M) ``a`` (L >= window + k - 1) with the generated
    kernel of ``window``; windows cut by an edge or holding NaN one by one."""
    L, M = a.shape
    half = window // 2
    flag = np.empty(M, np.float32)
    small = np.empty(window, np.float32)
    last = L - half - k
    g = half
    while True:
        gg = min(g, last)  # the last group overlaps the one before it: the same values again
        _median_kernels.group(a, out, gg, flag, window)
        for j in range(M):
            if flag[j] != flag[j]:  # NaN in the lane's values: its k windows slide one by one
                n = 0
                for p in range(gg - half, gg + half + 1):
                    v = a[p, j]
                    if v == v:
                        n = _insert(small, n, v)
                out[gg, j] = _median_sorted(small, n, min_count)
                for q in range(1, k):
                    v = a[gg + q - 1 - half, j]
                    if v == v:
                        n = _remove(small, n, v)
                    v = a[gg + q + half, j]
                    if v == v:
                        n = _insert(small, n, v)
                    out[gg + q, j] = _median_sorted(small, n, min_count)
        if gg == last:
            break
        g += k
    # the windows cut by an edge are nested: each adds one row to the one before it
    for j in range(M):
        n = 0
        for p in range(half):
            v = a[p, j]
            if v == v:
                n = _insert(small, n, v)
        for i in range(half):
            v = a[i + half, j]
            if v == v:
                n = _insert(small, n, v)
            out[i, j] = _median_sorted(small, n, min_count)
        n = 0
        for p in range(L - half, L):
            v = a[p, j]
            if v == v:
                n = _insert(small, n, v)
        for i in range(L - 1, L - 1 - half, -1):
            v = a[i - half, j]
            if v == v:
                n = _insert(small, n, v)
            out[i, j] = _median_sorted(small, n, min_count)


#: rows transposed together for a running median along the last axis (the kernel's lanes)
STRIP = 64


@numba.njit(cache=True, nogil=True)
def _shared_last(a, window, k, min_count, out):
    """Running median along axis 1 of (R, C) ``a``: strips of STRIP rows transposed into a
    (C, STRIP) buffer, :func:`_shared_axis0` on it, and back."""
    R, C = a.shape
    buf = np.zeros((C, STRIP), np.float32)
    res = np.empty((C, STRIP), np.float32)
    for r0 in range(0, R, STRIP):
        ns = min(STRIP, R - r0)
        if ns < STRIP:
            buf[:, :] = 0
        for s in range(ns):
            for x in range(C):
                buf[x, s] = a[r0 + s, x]
        _shared_axis0(buf, window, k, min_count, res)
        for s in range(ns):
            for x in range(C):
                out[r0 + s, x] = res[x, s]


def running_median(a: np.ndarray, window: int, axis: int = -1, min_count: int = 1) -> np.ndarray:
    """Centred, NaN-aware running median along ``axis`` (window made odd), float32.

    Beyond the ends of the axis there are no values; a window with fewer than ``min_count``
    finite values gives NaN. Equal to ``bottleneck.move_median`` of the NaN-padded array.

    >>> running_median(np.array([1., 9., 2., np.nan, 3.]), 3)
    array([5. , 2. , 5.5, 2.5, 3. ], dtype=float32)
    """
    window = int(window) | 1
    min_count = max(1, min(int(min_count), window))
    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.ndim == 0 or a.size == 0:
        return a.copy()
    axis = axis % a.ndim
    n, pairs = selection_network(window)
    pre = int(np.prod(a.shape[:axis], dtype=np.int64))
    length = a.shape[axis]
    post = int(np.prod(a.shape[axis + 1:], dtype=np.int64))
    out = np.empty_like(a)
    k = SHARED_WINDOWS.get(window, 0)
    if k and length >= window + k - 1:  # a generated kernel (whole frames: almost always)
        if post == 1:
            _shared_last(a.reshape(pre, length), window, k, min_count, out.reshape(pre, length))
        else:
            a3, o3 = a.reshape(pre, length, post), out.reshape(pre, length, post)
            for i in range(pre):
                _shared_axis0(a3[i], window, k, min_count, o3[i])
        return out
    if post == 1:  # the last axis: lanes along it
        _along_last(a.reshape(pre, length), window, min_count, n, pairs, out.reshape(pre, length))
    else:  # lanes along the (contiguous) axes after it
        a3, o3 = a.reshape(pre, length, post), out.reshape(pre, length, post)
        for k in range(pre):
            _along_rows(a3[k], window, min_count, n, pairs, o3[k])
    return out


# --------------------------------------------------------------------------------------------
# running medians of whole frames: neighbouring windows share a sorted core (generated kernels)

#: windows with a generated kernel (lrscube/detection/_median_kernels.py), and how many neighbouring
#: outputs share one core: the default sky, cross-dispersion and trace windows, and the
#: transients' window along time
SHARED_WINDOWS = {5: 2, 9: 4, 15: 4}


def _pruned_network(nvals: int, need) -> tuple[list[tuple[int, int]], list[int]]:
    """Comparators of Batcher's network on ``nvals`` values that the ranks ``need`` depend on,
    with the padding slots (+inf) folded away; and the slot holding each needed rank."""
    n = 1
    while n < nvals:
        n *= 2
    needed, kept = set(need), []
    for i, j in reversed(_oddeven_merge_sort(n)):
        if i in needed or j in needed:
            kept.append((i, j))
            needed |= {i, j}
    kept.reverse()
    phys = list(range(nvals)) + [-1] * (n - nvals)  # -1: a padding slot, +inf
    out = []
    for i, j in kept:
        if phys[j] < 0:  # min(x, inf) = x: nothing moves
            continue
        if phys[i] < 0:  # the value moves down, the inf up: a renaming, no instruction
            phys[i], phys[j] = phys[j], phys[i]
            continue
        out.append((phys[i], phys[j]))
    return out, [phys[k] for k in need]


def median_kernel_source() -> str:
    """Source of lrscube/detection/_median_kernels.py (tests/detection/test_running.py checks that it is current).

    For a window of w = 2h + 1 values and k neighbouring outputs g .. g + k - 1, the w + k - 1
    values v[t] = a[g - h + t] are loaded once per lane; the k outputs share the core
    v[k - 1 .. w - 1] (w - k + 1 values), of which a pruned sorting network finds the ranks
    h - k + 1 .. h; output q adds its k - 1 extras (sorted by a small network) and its median
    (the rank-h value of core and extras) is min(C[h], max(C[h - 1], E[0]), ...,
    max(C[h - k + 1], E[k - 2])): of the h + 1 smallest values, some number m come from the
    extras, and each term is the largest of one choice of m. Straight-line code on scalars, one
    lane per column: the compiler keeps the values in vector registers. Valid only where the
    window holds no NaN: the sum of the loaded values goes to ``flag`` and a NaN there sends
    the lane's outputs to the one-by-one median.
    """
    lines = ['"""Generated by lrscube.detection.running.median_kernel_source(): running-median kernels of fixed windows',
             "(see there). Do not edit; regenerate with",
             "",
             "    python -c \"from lrscube.detection import running; print(running.median_kernel_source(), end='')\" "
             "> lrscube/detection/_median_kernels.py",
             '"""', "", "import numba", "", ""]
    for w, k in sorted(SHARED_WINDOWS.items()):
        h = w // 2
        c = w - k + 1
        core_net, core_slots = _pruned_network(c, list(range(h - k + 1, h + 1)))
        lines += ["@numba.njit(cache=True, nogil=True)",
                  f"def group_w{w}(a, out, g, flag):",
                  f'    """Running median over {w} rows of rows g .. g + {k - 1} of (L, M) ``a`` into ``out``; the sum of',
                  f'    rows g - {h} .. g + {k - 1 + h} into ``flag``. Generated straight-line code (an unrolled',
                  "    sorting network): exempt from the limit on a function's length (tests/test_architecture.py).\"\"\"",
                  "    for j in range(a.shape[1]):"]
        nv = w + k - 1
        for t in range(nv):
            off = f" + {t - h}" if t > h else (f" - {h - t}" if t < h else "")
            lines.append(f"        v{t} = a[g{off}, j]")
        # the core, renamed c0..; comparators in place
        for i in range(c):
            lines.append(f"        c{i} = v{k - 1 + i}")
        for i, j in core_net:
            lines.append(f"        c{i}, c{j} = (c{i} if c{i} < c{j} else c{j}), (c{j} if c{i} < c{j} else c{i})")
        ranks = dict(zip(range(h - k + 1, h + 1), core_slots))
        ext_net, _ = _pruned_network(k - 1, list(range(k - 1)))
        for q in range(k):
            ext = list(range(q, k - 1)) + list(range(w, w + q))
            for e, t in enumerate(ext):
                lines.append(f"        e{e} = v{t}")
            for i, j in ext_net:
                lines.append(f"        e{i}, e{j} = (e{i} if e{i} < e{j} else e{j}), (e{j} if e{i} < e{j} else e{i})")
            lines.append(f"        m = c{ranks[h]}")
            for e in range(k - 1):
                lines.append(f"        u = c{ranks[h - 1 - e]} if c{ranks[h - 1 - e]} > e{e} else e{e}")
                lines.append("        m = m if m < u else u")
            lines.append(f"        out[g{f' + {q}' if q else ''}, j] = m")
        lines.append("        flag[j] = " + " + ".join(f"v{t}" for t in range(nv)))
        lines += ["", ""]
    lines += ["@numba.njit(cache=True, nogil=True)",
              "def group(a, out, g, flag, window):",
              '    """The kernel of ``window`` (one of lrscube.detection.running.SHARED_WINDOWS)."""']
    for n_, (w, _) in enumerate(sorted(SHARED_WINDOWS.items())):
        lines.append(f"    {'if' if n_ == 0 else 'elif'} window == {w}:")
        lines.append(f"        group_w{w}(a, out, g, flag)")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# running means


@numba.njit(cache=True, nogil=True)
def _mean_along_rows(a, size, out):
    """Running mean along axis 0 of (L, M), zero beyond the ends, lanes along axis 1: per lane,
    scipy's running sum in double precision (scipy 1.17's ``NI_UniformFilter1D``: the window's
    sum updated by the value entering minus the one leaving, divided by the size at output)."""
    L, M = a.shape
    size1 = size // 2
    tmp = np.zeros(M, np.float64)
    fs = np.float64(size)
    for ll in range(size):
        p = ll - size1
        if p >= 0 and p < L:  # beyond the ends the value is 0: adding it changes nothing
            for m in range(M):
                tmp[m] += np.float64(a[p, m])
    for m in range(M):
        out[0, m] = tmp[m] / fs
    for ll in range(1, L):
        p2 = ll - 1 + size - size1   # the value entering the window
        p1 = ll - 1 - size1          # the value leaving it
        in2 = p2 >= 0 and p2 < L
        in1 = p1 >= 0 and p1 < L
        for m in range(M):
            v2 = np.float64(a[p2, m]) if in2 else 0.0
            v1 = np.float64(a[p1, m]) if in1 else 0.0
            tmp[m] += v2 - v1
            out[ll, m] = tmp[m] / fs


def running_mean(a: np.ndarray, window: int, axis: int) -> np.ndarray:
    """Centred running mean over ``window`` values along ``axis``, zero beyond the ends:
    ``scipy.ndimage.uniform_filter1d(a, window, axis, mode="constant", cval=0.0)`` for float32
    ``a`` (bit for bit with scipy 1.17), vectorised across the contiguous axes after ``axis``;
    scipy walks one line at a time, which along a column of an image means strided copies.
    Along the last axis scipy itself runs."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    axis = axis % a.ndim
    post = int(np.prod(a.shape[axis + 1:], dtype=np.int64))
    if post == 1 or a.size == 0:
        from scipy import ndimage

        return ndimage.uniform_filter1d(a, int(window), axis=axis, mode="constant", cval=0.0)
    pre = int(np.prod(a.shape[:axis], dtype=np.int64))
    a3 = a.reshape(pre, a.shape[axis], post)
    out = np.empty_like(a)
    o3 = out.reshape(a3.shape)
    for k in range(pre):
        _mean_along_rows(a3[k], int(window), o3[k])
    return out


@numba.njit(cache=True, nogil=True)
def _moment_sums_start(w, m, size, t):
    """The window sums of w, w*i, w*i*i, m and m*i (i: the position along axis 0 of (L, M)) of
    the first window (centred on row 0, ``size`` rows) into ``t`` (5, M), in order."""
    L, M = w.shape
    size1 = size // 2
    for k in range(size):
        p = k - size1
        if p >= 0 and p < L:
            fi = np.float32(p)
            for j in range(M):
                a = w[p, j]
                b = m[p, j]
                t[0, j] += np.float64(a)
                t[1, j] += np.float64(a * fi)
                t[2, j] += np.float64(a * fi * fi)
                t[3, j] += np.float64(b)
                t[4, j] += np.float64(b * fi)


@numba.njit(cache=True, nogil=True)
def _moment_sums_step(w, m, size, ll, t):
    """Move the window sums in ``t`` from the window centred on row ``ll - 1`` to row ``ll``:
    add the row entering it, take away the row leaving it."""
    L, M = w.shape
    size1 = size // 2
    p2 = ll - 1 + size - size1
    p1 = ll - 1 - size1
    in2 = p2 >= 0 and p2 < L
    in1 = p1 >= 0 and p1 < L
    f2 = np.float32(p2)
    f1 = np.float32(p1)
    for j in range(M):
        a2 = w[p2, j] if in2 else np.float32(0)
        b2 = m[p2, j] if in2 else np.float32(0)
        a1 = w[p1, j] if in1 else np.float32(0)
        b1 = m[p1, j] if in1 else np.float32(0)
        t[0, j] += np.float64(a2) - np.float64(a1)
        t[1, j] += np.float64(a2 * f2) - np.float64(a1 * f1)
        t[2, j] += np.float64(a2 * f2 * f2) - np.float64(a1 * f1 * f1)
        t[3, j] += np.float64(b2) - np.float64(b1)
        t[4, j] += np.float64(b2 * f2) - np.float64(b1 * f1)


@numba.njit(cache=True, nogil=True)
def _moments_along_rows(w, m, size, s0, s1, s2, sy, sxy):
    """The running means of w, w*i, w*i*i, m and m*i along axis 0 of (L, M) (i: the position
    along it), each exactly as :func:`_mean_along_rows` of that float32 product would give,
    without making the products."""
    L, M = w.shape
    fs = np.float64(size)
    t = np.zeros((5, M), np.float64)
    _moment_sums_start(w, m, size, t)
    for ll in range(L):
        if ll > 0:
            _moment_sums_step(w, m, size, ll, t)
        for j in range(M):
            s0[ll, j] = t[0, j] / fs
            s1[ll, j] = t[1, j] / fs
            s2[ll, j] = t[2, j] / fs
            sy[ll, j] = t[3, j] / fs
            sxy[ll, j] = t[4, j] / fs


def line_moments(w: np.ndarray, m: np.ndarray, window: int, axis: int) -> tuple[np.ndarray, ...]:
    """Running means along ``axis`` of ``w``, ``w*i``, ``w*i*i``, ``m`` and ``m*i`` (float32;
    ``i`` the position along the axis): the sums of a local least-squares line through ``m``
    with weights ``w``. The same numbers as :func:`running_mean` of each product, in one pass."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    m = np.ascontiguousarray(m, dtype=np.float32)
    axis = axis % w.ndim
    post = int(np.prod(w.shape[axis + 1:], dtype=np.int64))
    if post == 1 or w.size == 0:
        i = np.arange(w.shape[axis], dtype=np.float32).reshape([-1 if d == axis else 1 for d in range(w.ndim)])
        return tuple(running_mean(v, window, axis) for v in (w, w * i, w * i * i, m, m * i))
    pre = int(np.prod(w.shape[:axis], dtype=np.int64))
    shape3 = (pre, w.shape[axis], post)
    outs = [np.empty_like(w) for _ in range(5)]
    w3, m3 = w.reshape(shape3), m.reshape(shape3)
    o3 = [o.reshape(shape3) for o in outs]
    for k in range(pre):
        _moments_along_rows(w3[k], m3[k], int(window), *(o[k] for o in o3))
    return tuple(outs)


# --------------------------------------------------------------------------------------------
# the local sky's slope correction and local straight line, fused (lanes along the last axis)


@numba.njit(cache=True, nogil=True)
def _median_position(fin, i, j, window, min_count):
    """lrscube.detection.residuals.window_median_position of row i, lane j of the bool (L, M) ``fin``."""
    L = fin.shape[0]
    half = window // 2
    lo = max(i - half, 0)
    hi = min(i + half, L - 1) + 1
    n = 0
    for p in range(lo, hi):
        if fin[p, j]:
            n += 1
    if n < max(1, min(min_count, window)):
        return np.float32(np.nan)
    k1 = (n - 1) // 2
    k2 = n // 2
    c = 0
    p1 = p2 = 0
    for p in range(lo, hi):
        if fin[p, j]:
            if c == k1:
                p1 = p
            if c == k2:
                p2 = p
                break
            c += 1
    return np.float32(0.5 * (np.float64(p1) + np.float64(p2)))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _sky_correction_rows(img, med, window, min_count, out):
    """:func:`lrscube.detection.residuals.local_sky` after its running median, along axis 0 of (L, M):
    the window's median position, the running least-squares slope of the medians whose window
    is (nearly) centred (the five running means of :func:`_moments_along_rows` over
    2 * window + 1 rows, the same double-precision sums), and the median moved back to the
    pixel along it. The same float32 operations, in the same order, as the numpy version."""
    L, M = img.shape
    half = window // 2
    fin = np.empty((L, M), np.bool_)
    for i in range(L):
        for j in range(M):
            v = img[i, j]
            fin[i, j] = v - v == 0  # finite
    offset = np.empty((L, M), np.float32)
    wm = np.empty((L, M), np.float32)
    mm = np.empty((L, M), np.float32)
    count = np.zeros(M, np.int64)  # finite values in rows i - half .. i + half
    for p in range(min(half, L)):
        for j in range(M):
            count[j] += fin[p, j]
    for i in range(L):
        p_in, p_out = i + half, i - half - 1
        if p_in < L:
            for j in range(M):
                count[j] += fin[p_in, j]
        if p_out >= 0:
            for j in range(M):
                count[j] -= fin[p_out, j]
        whole = i - half >= 0 and i + half < L
        fi = np.float32(i)
        for j in range(M):
            if whole and count[j] == window:
                centre = fi
            else:
                centre = _median_position(fin, i, j, window, min_count)
            off = fi - centre
            offset[i, j] = off
            m = med[i, j]
            use = (m - m == 0) and abs(off) <= np.float32(0.25)
            wm[i, j] = np.float32(1.0) if use else np.float32(0.0)
            mm[i, j] = m if use else np.float32(0.0)
    size = 2 * window + 1
    fs = np.float64(size)
    t = np.zeros((5, M), np.float64)
    _moment_sums_start(wm, mm, size, t)
    for ll in range(L):
        if ll > 0:
            _moment_sums_step(wm, mm, size, ll, t)
        for j in range(M):
            off = offset[ll, j]
            m = med[ll, j]
            if not (off - off == 0 and off != 0) and m != 0:
                # a centred window (or none): the correction is a zero, which leaves a non-zero
                # median as it is (a zero median takes the sign of slope * 0 below)
                out[ll, j] = m + np.float32(0.0)
                continue
            s0 = np.float32(t[0, j] / fs)
            s1 = np.float32(t[1, j] / fs)
            s2 = np.float32(t[2, j] / fs)
            sy = np.float32(t[3, j] / fs)
            sxy = np.float32(t[4, j] / fs)
            slope = (sxy - s1 * sy / s0) / (s2 - s1 * s1 / s0)
            line = t[0, j] >= 1.5  # two centred medians at least: through one, a slope is 0 / 0
            corr = slope * off if (line and slope - slope == 0 and off - off == 0) else np.float32(0.0)
            out[ll, j] = m + corr


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _local_line_rows(m, window, out):
    """:func:`lrscube.detection.residuals.local_linear` along axis 0 of (L, M): the running means of
    :func:`_moments_along_rows` over ``window`` rows (finite values weighted 1) and the line
    through them at each pixel, in the numpy version's float32 operations and order."""
    L, M = m.shape
    size1 = window // 2
    fs = np.float64(window)
    t = np.zeros((5, M), np.float64)
    fw = np.float32(window)
    lim = np.float32(1e-6)

    def wv(p, j):
        v = m[p, j]
        return (np.float32(1.0), v) if v - v == 0 else (np.float32(0.0), np.float32(0.0))

    for k in range(window):
        p = k - size1
        if p >= 0 and p < L:
            fp = np.float32(p)
            for j in range(M):
                a, b = wv(p, j)
                t[0, j] += np.float64(a)
                t[1, j] += np.float64(a * fp)
                t[2, j] += np.float64(a * fp * fp)
                t[3, j] += np.float64(b)
                t[4, j] += np.float64(b * fp)
    for ll in range(L):
        if ll > 0:
            p2 = ll - 1 + window - size1
            p1 = ll - 1 - size1
            in2 = p2 >= 0 and p2 < L
            in1 = p1 >= 0 and p1 < L
            f2 = np.float32(p2)
            f1 = np.float32(p1)
            for j in range(M):
                a2, b2 = wv(p2, j) if in2 else (np.float32(0), np.float32(0))
                a1, b1 = wv(p1, j) if in1 else (np.float32(0), np.float32(0))
                t[0, j] += np.float64(a2) - np.float64(a1)
                t[1, j] += np.float64(a2 * f2) - np.float64(a1 * f1)
                t[2, j] += np.float64(a2 * f2 * f2) - np.float64(a1 * f1 * f1)
                t[3, j] += np.float64(b2) - np.float64(b1)
                t[4, j] += np.float64(b2 * f2) - np.float64(b1 * f1)
        fi = np.float32(ll)
        for j in range(M):
            s0 = np.float32(t[0, j] / fs)
            s1 = np.float32(t[1, j] / fs)
            s2 = np.float32(t[2, j] / fs)
            sy = np.float32(t[3, j] / fs)
            sxy = np.float32(t[4, j] / fs)
            xbar = s1 / s0
            ybar = sy / s0
            den = s2 / s0 - xbar * xbar
            slope = (sxy / s0 - xbar * ybar) / den if den > lim else np.float32(0.0)
            v = ybar + slope * (fi - xbar)
            out[ll, j] = v if s0 * fw >= np.float32(2) else np.float32(np.nan)


def _rows3(a, axis):
    a = np.ascontiguousarray(a, dtype=np.float32)
    axis = axis % a.ndim
    pre = int(np.prod(a.shape[:axis], dtype=np.int64))
    post = int(np.prod(a.shape[axis + 1:], dtype=np.int64))
    return a.reshape(pre, a.shape[axis], post)


def sky_correction(img: np.ndarray, med: np.ndarray, window: int, axis: int, min_count: int) -> np.ndarray:
    """``med`` (the running median of ``img`` along ``axis``) moved back to each pixel along the
    local slope where the window is cut or has holes: the tail of
    :func:`lrscube.detection.residuals.local_sky` in one compiled pass per image (``axis`` not the last)."""
    i3, m3 = _rows3(img, axis), _rows3(med, axis)
    out = np.empty(i3.shape, np.float32)
    for k in range(i3.shape[0]):
        _sky_correction_rows(i3[k], m3[k], int(window), int(min_count), out[k])
    return out.reshape(np.shape(img))


def local_line(m: np.ndarray, window: int, axis: int) -> np.ndarray:
    """:func:`lrscube.detection.residuals.local_linear` in one compiled pass per image (``axis`` not the last)."""
    m3 = _rows3(m, axis)
    out = np.empty(m3.shape, np.float32)
    for k in range(m3.shape[0]):
        _local_line_rows(m3[k], int(window), out[k])
    return out.reshape(np.shape(m))


# --------------------------------------------------------------------------------------------
# the largest window sum


@numba.njit(cache=True, nogil=True)
def _max_abs_window_sum(c, lengths, scale, out, signed=False):
    """out[p] = max over L in lengths, t of |c[t + L, p] - c[t, p]| * ... see max_window_sums."""
    n1, P = c.shape
    best = np.empty(P, np.float32)
    for li in range(lengths.shape[0]):
        L = lengths[li]
        best[:] = -np.inf
        for t in range(n1 - L):
            for p in range(P):
                d = c[t + L, p] - c[t, p]
                if not signed:
                    d = d if d >= 0 else -d
                best[p] = d if d > best[p] else best[p]
        for p in range(P):
            v = best[p] / scale[li]
            out[p] = v if v > out[p] else out[p]


@numba.njit(cache=True, nogil=True)
def _column_cumsums(z, cols, c):
    """c[1:, k] = float32 of np.cumsum(z[:, cols[k]]) (float64, axis 0: the first term as it
    is, then each added in order); c[0] = 0."""
    n = z.shape[0]
    m = cols.shape[0]
    acc = np.empty(m)
    c[0, :] = 0.0
    if n == 0:
        return
    for k in range(m):
        acc[k] = z[0, cols[k]]
        c[1, k] = acc[k]
    for t in range(1, n):
        for k in range(m):
            acc[k] += z[t, cols[k]]
            c[t + 1, k] = acc[k]


def column_cumsums(z: np.ndarray, cols) -> np.ndarray:
    """(n + 1, len(cols)) float32: 0, then the float64 running sums of the columns ``cols`` of
    (n, P) ``z`` along axis 0, rounded to float32: ``c[1:] = np.cumsum(z[:, cols], axis=0)``
    with ``c[0] = 0``, the same numbers without the column copy and the float64 sums."""
    z = np.asarray(z, float)
    cols = np.asarray(cols, np.int64).reshape(-1)
    c = np.empty((z.shape[0] + 1, cols.size), np.float32)
    _column_cumsums(z, cols, c)
    return c


def max_window_sums(c: np.ndarray, lengths, out: np.ndarray, signed: bool = False, scale=None) -> np.ndarray:
    """For cumulative sums ``c`` (n + 1, P) float32: ``out = max(out, max_t |c[t+L] - c[t]| /
    float32(sqrt(L)))`` over the run ``lengths``, per pixel, in place; the same float32 numbers as
    the numpy expression (max first, then the division: it is monotonic), without a (n, P)
    temporary per length. ``signed``: the largest sum itself instead of its absolute value
    (one-sided: runs above zero only). ``scale``: the divisor of each length instead of its
    square root."""
    lengths = np.asarray(lengths, np.int64)
    if scale is None:
        scale = np.array([np.float32(np.sqrt(L)) for L in lengths], np.float32)
    else:
        scale = np.asarray(scale, np.float32)
    _max_abs_window_sum(np.ascontiguousarray(c, dtype=np.float32), lengths, scale, out, bool(signed))
    return out


#: relative margin of :func:`_may_exceed`'s test, far beyond the rounding of either side
_TIGHT = 1e-9


@numba.njit(cache=True, nogil=True, inline="always")
def _filter(best):
    """(mode, bb) of :func:`_may_exceed`'s test against the largest ratio so far ``best``: mode 0
    (no test: ``best`` zero, infinite or NaN), 1 (``best`` > 0) or 2 (``best`` < 0); ``bb`` is
    ``best^2`` with the margin on the side that keeps the test conservative."""
    if best == best and best != 0.0 and abs(best) != np.inf:
        if best > 0.0:
            return 1, best * best * (1.0 - _TIGHT)
        return 2, best * best * (1.0 + _TIGHT)
    return 0, 0.0


@numba.njit(cache=True, nogil=True, inline="always")
def _may_exceed(num, den, mode, bb):
    """False where the window's ratio ``num / sqrt(den)`` is certainly below the ``best`` of
    :func:`_filter` (or ``den`` is not positive, a window the scan skips), from ``num^2`` against
    ``best^2 den`` with a margin of 1e-9 (the ratio's rounding is ~1e-16), without the square root
    and the division; True where it may reach it, and where ``num``, ``den`` or the products are
    not finite, or near the ends of the exponent range (those windows are computed)."""
    q = num * num
    lim = bb * den
    unsure = (lim <= 1e-290) | (lim >= 1e290) | (q >= 1e290)
    if mode == 1:  # a ratio above best > 0 needs num > 0 and num^2 > best^2 den
        return (den > 0.0) & (num > 0.0) & ((q >= lim) | unsure)
    if mode == 2:  # a ratio below best < 0 needs num < 0 and num^2 > best^2 den
        return (den > 0.0) & ((num >= 0.0) | (q <= lim) | unsure)
    return den > 0.0


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _trimmed_window(U, V, sp, kk, i, uo, uL, trim):
    """(sum u - trim max(max u, 0), sum v) of the window of length ``uL`` at ``i`` from the prefix
    sums ``U, V`` and the sparse table ``sp`` (level ``kk``, second block at ``i + uo``); unsigned
    indices, which numba indexes without the negative-index wrap (contiguous vector loads)."""
    a = sp[kk, i]
    b = sp[kk, i + uo]
    m = a if a > b else b
    m = 0.0 if m < 0.0 else m
    return U[i + uL] - U[i] - trim * m, V[i + uL] - V[i]


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _count_may_exceed(U, V, sp, kk, off, L, nw, trim, mode, bb):
    """How many of the ``nw`` windows of length ``L`` :func:`_may_exceed` keeps (a vectorised pass)."""
    c = 0
    uL = np.uint64(L)
    uo = np.uint64(off)
    for ii in range(nw):
        num, den = _trimmed_window(U, V, sp, kk, np.uint64(ii), uo, uL, trim)
        c += _may_exceed(num, den, mode, bb)
    return c


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _max_trimmed_ratio(u, v, lengths, trim, out):
    """out[p] = max over L in lengths, i of (sum u - trim[p] max(max u, 0)) / sqrt(sum v) over
    u[i:i + L, p], v[i:i + L, p] ((time, pixel) arrays, read column by column where they are:
    neighbouring pixels share cache lines, and transposed copies cost a third of the scan);
    the window maxima from a sparse table (O(n log n) per pixel).

    The square root and the division (most of the cost: they share one execution unit) are taken
    only for the windows whose ratio may exceed the largest so far (:func:`_may_exceed`, a few in
    a thousand on noise): a length none of whose windows may is passed over after one vectorised
    count. The largest ratio goes through the same values in the same order as when every window
    was computed (a window passed over could not have replaced it), so the result has the same
    bits, the sign of a zero included (tests/detection/test_running.py)."""
    n, P = u.shape
    K = 1
    while (1 << K) <= n:
        K += 1
    sp = np.empty((K, n))
    U = np.empty(n + 1)
    V = np.empty(n + 1)
    for p in range(P):
        U[0] = 0.0
        V[0] = 0.0
        for t in range(n):
            U[t + 1] = U[t] + u[t, p]
            V[t + 1] = V[t] + v[t, p]
            sp[0, t] = u[t, p]
        k = 1
        while (1 << k) <= n:
            h = 1 << (k - 1)
            for t in range(n - (1 << k) + 1):
                a = sp[k - 1, t]
                b = sp[k - 1, t + h]
                sp[k, t] = a if a > b else b
            k += 1
        best = -np.inf
        for li in range(lengths.shape[0]):
            L = lengths[li]
            if L > n or L < 1:
                continue
            kk = 0
            while (1 << (kk + 1)) <= L:
                kk += 1
            off = L - (1 << kk)
            nw = n - L + 1
            mode, bb = _filter(best)
            if mode and _count_may_exceed(U, V, sp, kk, off, L, nw, trim[p], mode, bb) == 0:
                continue
            uL = np.uint64(L)
            uo = np.uint64(off)
            for ii in range(nw):
                num, den = _trimmed_window(U, V, sp, kk, np.uint64(ii), uo, uL, trim[p])
                if not _may_exceed(num, den, mode, bb):
                    continue
                st = num / np.sqrt(den)
                if st > best:
                    best = st
                    mode, bb = _filter(best)
        out[p] = best


def max_trimmed_ratio(u: np.ndarray, v: np.ndarray, lengths, trim) -> np.ndarray:
    """For terms ``u, v`` (n, P): per pixel, the largest ``(sum u - trim max(max u, 0)) /
    sqrt(sum v)`` over windows of the given ``lengths`` and every start
    (:func:`lrscube.detection.variance.scan`); ``-inf`` where none fits. ``trim``: one number,
    or one per pixel (P,)."""
    # writable C-order arrays always: another layout (or a read-only view) is another compile
    u, v = (np.require(a, np.float64, ["C", "W"]) for a in (u, v))
    out = np.empty(u.shape[1], np.float64)
    tr = np.require(np.broadcast_to(np.asarray(trim, np.float64), (u.shape[1],)), requirements=["C", "W"])
    _max_trimmed_ratio(u, v, np.asarray(lengths, np.int64), tr, out)
    return out


# --------------------------------------------------------------------------------------------
# blocks above both sides (single-exposure events)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _block_events_kernel(a, s, k, half, nsigma, ok):
    n, P = a.shape
    for t in range(n):
        for p in range(P):
            good = a[t, p] == a[t, p] and abs(a[t, p]) != np.inf
            for side in range(2):
                lo = -half if side == 0 else k
                any_value = False
                any_exceeded = False
                for o in range(lo, lo + half):
                    tt = t + o
                    if tt < 0 or tt >= n:
                        continue  # beyond the ends: NaN, neither a value nor exceeded
                    w = a[tt, p]
                    sw = s[tt, p]
                    if not (w == w and abs(w) != np.inf):
                        continue
                    any_value = True
                    exceeded = True
                    for j in range(k):
                        tj = t + j
                        if tj >= n:
                            exceeded = False
                            break
                        v = a[tj, p]
                        sv = s[tj, p]
                        x = (v - w) / np.sqrt(sv * sv + sw * sw)
                        if not (np.float64(x) > nsigma):
                            exceeded = False
                            break
                    if exceeded:
                        any_exceeded = True
                if any_value and not any_exceeded:
                    good = False
            ok[t, p] = good


def block_events(a: np.ndarray, s: np.ndarray, k: int, half: int, nsigma: float) -> np.ndarray:
    """:func:`lrscube.detection.temporal._block_events` compiled, for float32 (time, pixel) ``a`` and ``s``:
    the same float32 arithmetic per comparison (compared with ``nsigma`` in double precision,
    as numpy does with a float64 threshold), without the shifted copies."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    s = np.ascontiguousarray(s, dtype=np.float32)
    ok = np.empty(a.shape, bool)
    _block_events_kernel(a, s, int(k), int(half), float(nsigma), ok)
    return ok


@numba.njit(cache=True, nogil=True)
def median_inplace(v, n):
    """Median of the first ``n`` values of ``v`` (the mean of the middle two when ``n`` is even;
    NaN when it is 0), found in place by quickselect: the order of ``v`` is lost.

    The partitions move every value and advance by the comparison's outcome instead of branching
    on it (a branch per value mispredicts half the time on noise: twice the cost at 48 values).
    Values holding NaN or a zero go to :func:`median_hoare`, whose result they define (where
    NaN lands, which zero's sign is returned); any other value equal to the median is the same
    number, so both give the same bits (tests/detection/test_running.py)."""
    if n == 0:
        return np.nan
    for t in range(n):
        x = v[t]
        if x != x or x == 0.0:
            return median_hoare(v, n)
    return _median_branch_free(v, n)


@numba.njit(cache=True, nogil=True)
def _median_branch_free(v, n):
    """:func:`median_inplace`'s partitions, for ``n`` > 0 values without NaN, and zeros of one
    sign only (their order then cannot change the result)."""
    h = n // 2
    lo, hi = 0, n - 1
    while lo < hi:
        a, b, c = v[lo], v[(lo + hi) // 2], v[hi]
        p = max(min(a, b), min(max(a, b), c))  # the median of three: a value of the window
        i = lo
        for j in range(lo, hi + 1):  # [lo, i): below p
            x = v[j]
            v[j] = v[i]
            v[i] = x
            i += x < p
        if h < i:
            hi = i - 1
            continue
        e = i
        for j in range(i, hi + 1):  # [i, e): equal to p (at least p itself)
            x = v[j]
            v[j] = v[e]
            v[e] = x
            e += x == p
        if h < e:
            break  # v[h] is p
        lo = e
    return _selected_median(v, n, h)


@numba.njit(cache=True, nogil=True)
def _selected_median(v, n, h):
    """The median of ``v[:n]`` once a selection has put its ``h``-th smallest (h = n // 2) in
    ``v[h]`` with nothing larger before it."""
    if n % 2:
        return v[h]
    below = v[0]
    for k in range(1, h):  # everything before v[h] is no larger than it: the (h-1)-th is their maximum
        below = max(below, v[k])
    return 0.5 * (below + v[h])


@numba.njit(cache=True, nogil=True)
def median_hoare(v, n):
    """:func:`median_inplace` by Hoare's quickselect (branching on each comparison)."""
    if n == 0:
        return np.nan
    h = n // 2
    lo, hi = 0, n - 1
    while lo < hi:  # Hoare's selection of the h-th smallest into v[h]
        x = v[(lo + hi) // 2]
        i, j = lo, hi
        while i <= j:
            while v[i] < x:
                i += 1
            while v[j] > x:
                j -= 1
            if i <= j:
                v[i], v[j] = v[j], v[i]
                i += 1
                j -= 1
        if h <= j:
            hi = j
        elif h >= i:
            lo = i
        else:
            break
    return _selected_median(v, n, h)


@numba.njit(cache=True, nogil=True)
def median_about(v, n, lo, hi, band):
    """:func:`median_inplace` of ``v[:n]`` (the same bits) when its ranks are likely to lie in
    ``[lo, hi]`` (about a guess: the median of a neighbouring pixel's similar values): the values
    in that band are gathered into ``band`` (scratch, at least ``n``) and the median's ranks
    selected among those few, by insertion sort; where the band does not hold them (or holds
    more than 32 values), and where any value is NaN or a zero (which define the result of
    :func:`median_hoare`), :func:`median_inplace` of all of them (the order of ``v`` is lost)."""
    m = 0
    under = 0
    plain = True
    for t in range(n):
        x = v[t]
        plain = plain and x == x and x != 0.0
        under += x < lo
        band[m] = x
        m += (x >= lo) and (x <= hi)
    h = n // 2
    if not (plain and n > 0 and m <= 32 and under <= h - 1 + n % 2 and under + m > h):
        return median_inplace(v, n)
    for i in range(1, m):
        x = band[i]
        k = i - 1
        while k >= 0 and band[k] > x:
            band[k + 1] = band[k]
            k -= 1
        band[k + 1] = x
    return band[h - under] if n % 2 else 0.5 * (band[h - 1 - under] + band[h - under])


# --------------------------------------------------------------------------------------------
# whole-line medians (stage 1's line offsets) and the response scatter's bisection


@numba.njit(cache=True, nogil=True)
def _row_nanmedians(a, out, signed_zero):
    """NaN-skipping median of each row of (R, C) ``a`` into ``out`` (NaN for a row without a
    value); ``signed_zero[r]``: the row holds a -0.0 (its median is left to the caller)."""
    R, C = a.shape
    buf = np.empty(C, a.dtype)
    for r in range(R):
        n = 0
        neg0 = False
        for c in range(C):
            x = a[r, c]
            buf[n] = x
            n += x == x
            neg0 = neg0 or (x == 0 and math.copysign(1.0, x) < 0)
        if neg0:  # zeros of both signs may be: the caller asks bottleneck which one it gives
            out[r] = 0.0
            signed_zero[r] = True
        else:
            out[r] = _median_branch_free(buf, n) if n else np.nan
            signed_zero[r] = False


def row_nanmedians(a: np.ndarray) -> np.ndarray:
    """``bottleneck.nanmedian(a, axis=-1)`` of a float32 array, the same bits, compiled.

    A median is the value of one or two order statistics, which any selection finds; only the
    sign of a zero can depend on the algorithm, and only where the values hold zeros of both
    signs: the rows holding a -0.0 (rare) are taken from bottleneck."""
    import bottleneck as bn

    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.size == 0:
        return bn.nanmedian(a, axis=-1)
    out = np.empty(a.shape[:-1], np.float32)
    a2 = a.reshape(-1, a.shape[-1])
    o1 = out.reshape(-1)
    signed_zero = np.empty(o1.size, np.bool_)
    _row_nanmedians(a2, o1, signed_zero)
    for r in np.flatnonzero(signed_zero):
        o1[r] = bn.nanmedian(a2[r])
    return out


@numba.njit(cache=True, nogil=True)
def response_bisection(u2, w2, target, hi, steps):
    """The bisection of :func:`lrscube.detection.residuals.response_scatter`: ``steps`` halvings
    of [0, hi] for the ``f`` with ``median(u2 / (w2 + f^2)) = target``, each median over all the
    values (float64, the same operations as ``np.median`` of the numpy expression)."""
    n = u2.size
    buf = np.empty(n, np.float64)
    h = n // 2
    lo = 0.0
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        m2 = mid * mid
        # only the side of the target the median lies on matters: count the values above it,
        # and keep the nearest on each side, the two middle values when exactly half are above
        above = 0
        low_max, high_min = -np.inf, np.inf
        plain = True
        for i in range(n):
            x = u2[i] / (w2[i] + m2)
            buf[i] = x
            plain = plain and x == x
            if x > target:
                above += 1
                high_min = min(high_min, x)
            else:
                low_max = max(low_max, x)
        if not plain or n == 0:
            med = median_inplace(buf, n)
            up = med > target
        elif n % 2:
            up = above >= h + 1  # the middle value, the h-th smallest, is above
        elif above == h:  # the middle two straddle the target: their mean, as median_inplace takes it
            up = 0.5 * (low_max + high_min) > target
        else:  # both middle values on one side: so is their mean (rounding is monotonic)
            up = above > h
        if up:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@numba.njit(cache=True, nogil=True)
def _first_axis_nanmedians(a, pairs, kpad, out, signed_zero):
    """NaN-skipping median over axis 0 of (K, P) ``a`` for each column into ``out``: blocks of
    columns copied into lanes, NaN as +inf (after every value) and padding to ``kpad`` rows,
    sorted by the comparator network ``pairs`` (branch-free across the lanes), then the middle
    of each column's n values; ``signed_zero[j]``: the column holds a -0.0 (its median left
    to the caller: a network does not order zeros by sign)."""
    K, P = a.shape
    BL = 256
    inf = np.float32(np.inf)
    blk = np.empty((kpad, BL), np.float32)
    cnt = np.empty(BL, np.int64)
    neg = np.empty(BL, np.bool_)
    for j0 in range(0, P, BL):
        nb = min(BL, P - j0)
        cnt[:] = 0
        neg[:] = False
        for k in range(K):
            for jj in range(nb):
                x = a[k, j0 + jj]
                ok = x == x
                cnt[jj] += ok
                neg[jj] = neg[jj] or (x == 0 and math.copysign(1.0, x) < 0)
                blk[k, jj] = x if ok else inf
        for k in range(K, kpad):
            for jj in range(nb):
                blk[k, jj] = inf
        for q in range(pairs.shape[0]):
            i, j = pairs[q, 0], pairs[q, 1]
            for jj in range(nb):
                u, v = blk[i, jj], blk[j, jj]
                blk[i, jj] = u if u < v else v
                blk[j, jj] = v if u < v else u
        for jj in range(nb):
            n = cnt[jj]
            j = j0 + jj
            signed_zero[j] = neg[jj]
            if n == 0 or neg[jj]:
                out[j] = np.nan
            elif n % 2:
                out[j] = blk[n // 2, jj]
            else:
                out[j] = 0.5 * (blk[n // 2 - 1, jj] + blk[n // 2, jj])


def _network_first_axis(a: np.ndarray):
    """The sorting network's medians along axis 0 of a non-empty contiguous float32 ``a``:
    ``(out, a2, o1, signed_zero)``, ``out`` the medians (``a.shape[1:]``), ``a2`` and ``o1``
    ``a`` and ``out`` with the columns flattened, ``signed_zero`` the columns holding a -0.0
    (the sign of a zero median is the caller's to settle)."""
    out = np.empty(a.shape[1:], np.float32)
    a2 = a.reshape(a.shape[0], -1)
    o1 = out.reshape(-1)
    signed_zero = np.empty(o1.size, np.bool_)
    kpad = 1 << max(0, (a.shape[0] - 1).bit_length())
    pairs = np.array(_oddeven_merge_sort(kpad) or [(0, 0)], np.int64).reshape(-1, 2)
    _first_axis_nanmedians(a2, pairs, kpad, o1, signed_zero)
    return out, a2, o1, signed_zero


def first_axis_nanmedians(a: np.ndarray) -> np.ndarray:
    """``bottleneck.nanmedian(a, axis=0)`` of a float32 array, the same bits, compiled (see
    :func:`row_nanmedians`: the columns holding a -0.0 are bottleneck's own)."""
    import bottleneck as bn

    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.ndim == 0 or a.size == 0:
        return bn.nanmedian(a, axis=0)
    out, a2, o1, signed_zero = _network_first_axis(a)
    for j in np.flatnonzero(signed_zero):
        o1[j] = bn.nanmedian(a2[:, j])
    return out


@numba.njit(cache=True, nogil=True)
def _coverage(sci, dq, jump_bit, jump, and_bits, n_seen):
    B, Y, X = sci.shape
    for b in range(B):
        for y in range(Y):
            for x in range(X):
                d = dq[b, y, x]
                jump[b, y, x] = (d & jump_bit) != 0
                if d != 0 or np.isfinite(sci[b, y, x]):
                    and_bits[y, x] &= d
                    n_seen[y, x] += 1


def coverage(sci: np.ndarray, dq: np.ndarray, jump_bit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stage 1's DQ bookkeeping of a batch ``(B, y, x)`` in one pass, without block-sized
    temporaries: ``jump`` ((B, y, x) bool, ``dq & jump_bit`` set), ``and_bits`` ((y, x) uint32,
    the bits set in the DQ of every exposure that covers the pixel, all ones where none does)
    and ``n_seen`` ((y, x) int32, the exposures that cover it: a finite SCI or a non-zero DQ)."""
    sci = np.ascontiguousarray(sci, dtype=np.float32)
    dq = np.ascontiguousarray(dq, dtype=np.uint32)
    jump = np.empty(dq.shape, np.bool_)
    and_bits = np.full(dq.shape[1:], 0xFFFFFFFF, np.uint32)
    n_seen = np.zeros(dq.shape[1:], np.int32)
    _coverage(sci, dq, np.uint32(jump_bit), jump, and_bits, n_seen)
    return jump, and_bits, n_seen


def first_axis_nanmedians_numpy(a: np.ndarray) -> np.ndarray:
    """``np.nanmedian(a, axis=0)`` of a float32 array, the same bits, compiled.

    numpy takes the middle two of an even count as ``(lo + hi) / 2`` in float32, as the network
    of :func:`first_axis_nanmedians` does; the middle one of an odd count it takes as
    ``(m + m) / 2`` (fewer than 600 rows), which overflows for ``|m| >= 2**127``; so the columns
    holding such a value, or a -0.0 (the sign of a zero median is the sorting algorithm's), are
    numpy's own."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.ndim == 0 or a.size == 0:
        return np.nanmedian(a, axis=0)
    out, a2, o1, signed_zero = _network_first_axis(a)
    with np.errstate(invalid="ignore"):
        own = np.flatnonzero(signed_zero | (np.abs(a2) >= np.float32(2.0 ** 127)).any(axis=0))
    if own.size:  # the same call on those columns alone: numpy's medians are column by column
        o1[own] = np.nanmedian(a2[:, own], axis=0)
    return out
