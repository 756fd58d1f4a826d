"""The compiled running median equals bottleneck's move_median, the running mean scipy's uniform_filter1d."""

import warnings

import bottleneck as bn
import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lrscube.detection import running
from lrscube.detection.running import line_moments, running_mean, running_median, selection_network


def reference(a, window, axis, min_count):
    """bottleneck's move_median, centred, with no values beyond the ends."""
    window = int(window) | 1
    half = window // 2
    a = np.moveaxis(np.asarray(a, np.float32), axis, -1)
    p = np.pad(a, [(0, 0)] * (a.ndim - 1) + [(half, half)], constant_values=np.nan)
    out = bn.move_median(p, window, min_count=min(min_count, window), axis=-1)[..., window - 1:]
    return np.moveaxis(out, -1, axis)


@pytest.mark.parametrize("shape", [(7,), (1, 50, 33), (3, 130, 70), (40, 9, 11), (2, 200, 300)])
def test_equals_bottleneck_on_images_with_holes_and_edges(shape):
    rng = np.random.default_rng(len(shape) + shape[-1])
    a = rng.normal(10, 1, shape).astype(np.float32)
    a[rng.random(shape) < 0.05] = np.nan
    a[..., : min(3, shape[-1])] = np.nan  # a NaN edge, as outside a footprint
    for axis in range(len(shape)):
        for window in (1, 3, 5, 9, 15, 21):
            for min_count in (1, 3, 5, 20):
                np.testing.assert_array_equal(running_median(a, window, axis, min_count),
                                              reference(a, window, axis, min_count))


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 90)),
              elements=st.one_of(st.floats(-1e6, 1e6, width=32), st.just(np.nan))),
       st.integers(1, 25), st.integers(0, 1), st.integers(1, 9))
def test_equals_bottleneck_property(a, window, axis, min_count):
    np.testing.assert_array_equal(running_median(a, window, axis, min_count), reference(a, window, axis, min_count))


def test_network_selects_the_middle_value():
    rng = np.random.default_rng(0)
    for window in (3, 5, 9, 15, 17):
        n, pairs = selection_network(window)
        for _ in range(200):
            v = np.concatenate([rng.permutation(window).astype(float), np.full(n - window, np.inf)])
            for i, j in pairs:
                if v[j] < v[i]:
                    v[i], v[j] = v[j], v[i]
            assert v[window // 2] == window // 2


def reference_mean(line, size):
    """The running mean as documented: a double-precision running sum of the window (zero
    beyond the ends), updated by the value entering minus the one leaving, divided at output."""
    s1 = size // 2
    padded = np.concatenate([np.zeros(s1), np.asarray(line, np.float64), np.zeros(size - s1 - 1)])
    out = np.empty(len(line), np.float32)
    tmp = 0.0
    for v in padded[:size]:
        tmp += v
    out[0] = tmp / size
    for i in range(1, len(line)):
        tmp += padded[i - 1 + size] - padded[i - 1]
        out[i] = tmp / size
    return out


@pytest.mark.parametrize("shape", [(1, 40, 33), (3, 30, 7), (12, 5)])
def test_running_mean_is_the_documented_running_sum_and_scipys_filter(shape):
    from scipy import ndimage

    rng = np.random.default_rng(shape[-1])
    a = (rng.normal(size=shape) * rng.choice([1, 1e3, 1e-3], size=shape)).astype(np.float32)
    for axis in range(len(shape)):
        for window in (1, 3, 5, 15, 31):
            got = running_mean(a, window, axis)
            moved = np.moveaxis(a, axis, -1)
            want = np.moveaxis(np.apply_along_axis(reference_mean, -1, moved, window), -1, axis)
            np.testing.assert_array_equal(got, want)
            np.testing.assert_allclose(got, ndimage.uniform_filter1d(a, window, axis=axis, mode="constant"),
                                       rtol=1e-5, atol=1e-6 * float(np.abs(a).max()))


def test_line_moments_equal_the_running_means_of_the_products():
    rng = np.random.default_rng(5)
    for shape, axis in (((2, 60, 37), 1), ((2, 60, 37), 2), ((50, 4), 0)):
        w = (rng.random(shape) > 0.2).astype(np.float32)
        m = np.where(w > 0, rng.normal(100, 5, shape), 0).astype(np.float32)
        i = np.arange(shape[axis], dtype=np.float32).reshape([-1 if d == axis else 1 for d in range(len(shape))])
        for window in (5, 31):
            got = line_moments(w, m, window, axis)
            want = [running_mean(v, window, axis) for v in (w, w * i, w * i * i, m, m * i)]
            for g, x in zip(got, want, strict=True):
                np.testing.assert_array_equal(g, x)


def test_max_window_sums_equal_the_numpy_expression():
    from lrscube.detection.running import max_window_sums

    rng = np.random.default_rng(2)
    for n, p in ((1, 3), (7, 5), (300, 40)):
        c = np.zeros((n + 1, p), np.float32)
        c[1:] = np.cumsum(rng.normal(size=(n, p)), axis=0)
        lengths = [L for L in (1, 2, 3, 5, 8, 13, 300) if L <= n]
        want = np.full(p, 0.5, np.float32)
        for L in lengths:
            np.maximum(want, np.abs(c[L:] - c[:-L]).max(axis=0) / np.float32(np.sqrt(L)), out=want)
        got = max_window_sums(c, lengths, np.full(p, 0.5, np.float32))
        np.testing.assert_array_equal(got, want)


def _shift(a, k):
    out = np.full_like(a, np.nan)
    n = a.shape[0]
    if k >= 0:
        if k < n:
            out[:n - k] = a[k:]
    elif -k < n:
        out[-k:] = a[:n + k]
    return out


def block_events_numpy(a, s, k, half, nsigma):
    """The numpy formulation the compiled block_events replaced (lrscube.detection.temporal._block_events)."""
    ok = np.isfinite(a)
    vs = [(_shift(a, j), _shift(s, j)) for j in range(k)]
    for offsets in (range(-half, 0), range(k, k + half)):
        any_exceeded = np.zeros(a.shape, bool)
        any_value = np.zeros(a.shape, bool)
        for o in offsets:
            w, sw = _shift(a, o), _shift(s, o)
            fin = np.isfinite(w)
            any_value |= fin
            exceeded = fin.copy()
            with np.errstate(invalid="ignore", divide="ignore"):
                for v, sv in vs:
                    exceeded &= (v - w) / np.sqrt(sv * sv + sw * sw) > nsigma
            any_exceeded |= exceeded
        ok &= ~any_value | any_exceeded
    return ok


def test_block_events_equal_the_numpy_formulation():
    from lrscube.detection.running import block_events

    rng = np.random.default_rng(1)
    for n, p in ((1, 4), (2, 3), (5, 7), (60, 50), (400, 20)):
        a = rng.normal(size=(n, p)).astype(np.float32)
        s = np.abs(rng.normal(1, 0.3, size=(n, p))).astype(np.float32)
        a[rng.random(a.shape) < 0.05] += 20  # events
        a[rng.random(a.shape) < 0.03] = np.nan
        a[rng.random(a.shape) < 0.01] = np.inf
        s[rng.random(a.shape) < 0.02] = 0
        s[rng.random(a.shape) < 0.01] = np.nan
        for k in (1, 2):
            for half in (1, 2, 3):
                for nsigma in (np.float64(5.0) / np.sqrt(2.0), np.float64(3.0)):
                    np.testing.assert_array_equal(block_events(a, s, k, half, nsigma),
                                                  block_events_numpy(a, s, k, half, nsigma))


def test_generated_kernels_are_current():
    """lrscube/detection/_median_kernels.py is what the generator writes (regenerate it when it changes)."""
    from pathlib import Path

    from lrscube.detection import running

    path = Path(running.__file__).with_name("_median_kernels.py")
    assert path.read_text() == running.median_kernel_source()


@pytest.mark.parametrize("window", sorted(__import__("lrscube.detection.running").detection.running.SHARED_WINDOWS))
def test_shared_kernels_equal_bottleneck_at_edges_holes_and_group_ends(window):
    """Every length from the shortest the shared kernel takes (its last group overlapping the one
    before it), with NaN runs, infinities and ties, along both axes of a frame."""
    rng = np.random.default_rng(window)
    k = __import__("lrscube.detection.running").detection.running.SHARED_WINDOWS[window]
    for length in range(window + k - 1, window + 3 * k + 2):
        a = rng.integers(0, 6, (length, 37)).astype(np.float32)  # ties
        a[rng.random(a.shape) < 0.08] = np.nan
        a[length // 2, 3] = np.inf
        a[length // 3, 5] = -np.inf
        a[:, 7] = np.nan
        for axis in (0, 1):
            b = a if axis == 0 else np.ascontiguousarray(a.T)
            for min_count in (1, window // 2 + 1, window):
                np.testing.assert_array_equal(running_median(b, window, axis, min_count),
                                              reference(b, window, axis, min_count))


def _median_both(values):
    """(median_inplace, median_hoare, np.median) of a 1-D float64 array, each on its own copy."""
    a, b = values.copy(), values.copy()
    n = values.size
    return running.median_inplace(a, n), running.median_hoare(b, n), np.median(values) if n else np.nan


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 8, 31, 48, 64, 99, 400])
def test_median_inplace_is_hoares_quickselect_bit_for_bit(n):
    """The branch-free quickselect gives the same bits as Hoare's (and numpy's median where
    there is no NaN): noise, many ties, infinities, zeros of both signs, NaN, only the first
    n values of a longer buffer."""
    rng = np.random.default_rng(n)
    cases = [rng.normal(size=n), np.round(rng.normal(size=n) * 2) + 0.5, rng.integers(0, 3, n).astype(float),
             np.abs(rng.standard_cauchy(n)), np.sort(rng.normal(size=n)), np.sort(rng.normal(size=n))[::-1].copy()]
    if n:
        x = rng.normal(size=n)
        x[rng.random(n) < 0.2] = np.inf
        x[rng.random(n) < 0.2] = -np.inf
        cases.append(x)
        z = rng.normal(size=n)
        z[rng.random(n) < 0.5] = 0.0
        z[rng.random(n) < 0.3] = -0.0
        cases.append(z)
        w = rng.normal(size=n)
        w[rng.integers(0, n)] = np.nan
        cases.append(w)
    for v in cases:
        got, hoare, ref = _median_both(v)
        assert np.array_equal(np.float64(got).view(np.int64), np.float64(hoare).view(np.int64)) or \
            (np.isnan(got) and np.isnan(hoare))
        if not np.isnan(v).any():
            assert got == ref or (np.isnan(got) and np.isnan(ref))
    longer = np.r_[rng.normal(size=n), np.full(5, -1e300)]
    assert running.median_inplace(longer.copy(), n) == _median_both(longer[:n])[2] or n == 0


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 8, 31, 48, 64, 99, 400])
def test_median_about_a_guess_is_median_inplace_bit_for_bit(n):
    """Whatever the band (holding the median's ranks or not, empty, NaN): the same bits as
    median_inplace, on noise, ties, infinities, zeros of both signs and NaN."""
    rng = np.random.default_rng(100 + n)
    for trial in range(200):
        v = [rng.normal(size=n), np.round(rng.normal(size=n) * 2) + 0.5, rng.integers(1, 4, n).astype(float),
             np.abs(rng.standard_cauchy(n))][trial % 4]
        if trial % 7 == 3 and n:
            v[rng.integers(0, n)] = [np.inf, -np.inf, np.nan, 0.0, -0.0][trial % 5]
        med = np.median(v) if n else 0.0
        width = [0.0, 0.05, 0.3, 1.0, 5.0][trial % 5] * (np.std(v) if n else 1.0)
        shift = [0.0, 0.1, -0.5, 2.0][trial % 4] * (np.std(v) if n else 1.0)
        for lo, hi in ((med + shift - width, med + shift + width), (np.nan, np.nan), (1.0, -1.0)):
            want = running.median_inplace(v.copy(), n)
            got = running.median_about(v.copy(), n, lo, hi, np.empty(n))
            assert np.float64(got).view(np.int64) == np.float64(want).view(np.int64) or \
                (np.isnan(got) and np.isnan(want)), (trial, lo, hi, got, want)


def _bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.int32)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 1), (3, 2), (40, 333), (2, 30, 64)])
def test_row_nanmedians_are_bottlenecks_bit_for_bit(shape):
    """Stage 1's line offsets: the compiled row medians give bottleneck's nanmedian bit for bit
    on noise, NaN holes, all-NaN rows, infinities, ties, and rows whose median is a zero of
    either sign (the rows holding -0.0 are bottleneck's own)."""
    rng = np.random.default_rng(sum(shape))
    n = shape[-1]
    cases = []
    for k in range(12):
        a = rng.normal(size=shape).astype(np.float32)
        if k % 6 == 1:
            a[rng.random(shape) < 0.3] = np.nan
        if k % 6 == 2:
            a.reshape(-1, n)[::2] = np.nan  # rows without a value
        if k % 6 == 3:
            a[rng.random(shape) < 0.1] = np.inf
            a[rng.random(shape) < 0.1] = -np.inf
        if k % 6 == 4:
            a = np.round(a * 2).astype(np.float32)  # ties, and many zeros: +0.0 from rounding
        if k % 6 == 5:
            a = np.where(rng.random(shape) < 0.6, np.float32(0.0), a).astype(np.float32)
            a[rng.random(shape) < 0.3] = -0.0
        cases.append(a)
    cases.append(np.asfortranarray(cases[0]))  # not contiguous along the rows
    for a in cases:
        want = bn.nanmedian(a, axis=-1)
        got = running.row_nanmedians(a)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_array_equal(_bits(got), _bits(want))


def test_line_offsets_compiled_equal_bottleneck():
    """residuals._line_offsets (compiled along rows) equals its bottleneck formulation on a frame
    with holes, an empty row and columns, for both dispersion axes."""
    from lrscube.detection import residuals

    rng = np.random.default_rng(3)
    a = rng.normal(size=(1, 120, 77)).astype(np.float32)
    a[rng.random(a.shape) < 0.05] = np.nan
    a[0, 10] = np.nan
    a[0, :, 5] = np.nan
    a[0, 20:30] = np.round(a[0, 20:30])
    for disp, cross in ((-2, -1), (-1, -2)):
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                off = bn.nanmedian(a, axis=cross)
        want = np.expand_dims(np.where(np.isfinite(off), off, 0.0).astype(np.float32), cross)
        np.testing.assert_array_equal(_bits(residuals._line_offsets(a, disp)), _bits(want))


def _numpy_bisection(u2, w2, target, hi, steps):
    """residuals.response_scatter's bisection as numpy had it."""
    lo = 0.0
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if np.median(u2 / (w2 + mid * mid)) > target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@pytest.mark.parametrize("n", [1, 2, 3, 50, 51, 20000])
def test_response_bisection_equals_numpy(n):
    """The compiled bisection of the response scatter (which counts the values above each trial
    instead of selecting their median) gives numpy's number bit for bit (even and odd counts,
    zero deviations, ties, a scatter far above and within ERR)."""
    rng = np.random.default_rng(n)
    for scale in (0.0, 0.01, 0.05, 1.0, "ties"):
        if scale == "ties":  # a few distinct values: the middle two often equal, or straddling
            d = rng.integers(0, 3, n) * 0.2
            scale = 0.1
        else:
            d = rng.normal(size=n) * np.sqrt(0.04 + scale ** 2)
        d[rng.random(n) < 0.1] = 0.0
        u2 = d.astype(float) ** 2
        w2 = np.full(n, 0.04) if scale != 1.0 else np.round(rng.uniform(0.01, 0.1, n), 2)
        hi = float(np.sqrt(np.median(u2) / 0.454936423119572)) + 1e-9
        want = _numpy_bisection(u2, w2, 0.454936423119572, hi, 40)
        got = running.response_bisection(u2, w2, 0.454936423119572, hi, 40)
        assert np.float64(got).view(np.int64) == np.float64(want).view(np.int64), (scale, got, want)


@pytest.mark.parametrize("shape", [(1, 7), (2, 5), (3, 40, 9), (16, 64, 33), (17, 20, 30)])
def test_first_axis_nanmedians_are_bottlenecks_bit_for_bit(shape):
    """Stage 0's response pattern: medians over a stack of exposures equal bottleneck's nanmedian
    along axis 0 bit for bit, on noise, NaN holes, columns without a value, infinities, ties and
    zeros of both signs (the columns holding -0.0 are bottleneck's own)."""
    rng = np.random.default_rng(sum(shape))
    for k in range(10):
        a = (1.0 + 0.05 * rng.normal(size=shape)).astype(np.float32)
        if k % 5 == 1:
            a[rng.random(shape) < 0.4] = np.nan
            a.reshape(shape[0], -1)[:, ::7] = np.nan  # columns without a value
        if k % 5 == 2:
            a[rng.random(shape) < 0.1] = np.inf
            a[rng.random(shape) < 0.1] = -np.inf
        if k % 5 == 3:
            a = np.round(a * 10).astype(np.float32)  # ties
        if k % 5 == 4:
            a = np.where(rng.random(shape) < 0.5, np.float32(0.0), a - 1.0).astype(np.float32)
            a[rng.random(shape) < 0.2] = -0.0
        want = bn.nanmedian(a, axis=0)
        got = running.first_axis_nanmedians(a)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_array_equal(_bits(got), _bits(want))


# ---------------------------------------------------------------------------------------------
# the trimmed-ratio scan: the kernel that computed every window, the reference of the one that
# computes only the windows that may exceed the largest ratio so far

@numba.njit(cache=True, nogil=True, error_model="numpy")
def _max_trimmed_ratio_before(ut, vt, lengths, trim, out):
    P, n = ut.shape
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
            U[t + 1] = U[t] + ut[p, t]
            V[t + 1] = V[t] + vt[p, t]
            sp[0, t] = ut[p, t]
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
            for i in range(n - L + 1):
                den = V[i + L] - V[i]
                if not den > 0.0:
                    continue
                a = sp[kk, i]
                b = sp[kk, i + off]
                m = a if a > b else b
                if m < 0.0:
                    m = 0.0
                st = (U[i + L] - U[i] - trim * m) / np.sqrt(den)
                if st > best:
                    best = st
        out[p] = best


def _trimmed_ratio_cases():
    """(name, u, v (P, n), lengths) of the scan's cases: noise terms with unused exposures, a
    run, NaN, inf, -0.0 and ties, non-positive v, maxima at +-0, the ends of the exponent range,
    one exposure, one pixel, none of either, lengths beyond n."""
    rng = np.random.default_rng(3)
    P, n = 400, 48
    u = rng.normal(-0.1, 1.0, (P, n))
    v = rng.uniform(0.5, 2.0, (P, n))
    unused = rng.random((P, n)) < 0.2
    u[unused], v[unused] = 0.0, 0.0
    u[10, 20:30] += 3.0  # a run
    u[11], v[11] = np.nan, 1.0
    u[12, 5] = np.nan
    v[13, 7] = np.nan
    u[14, 9] = np.inf
    u[15, 9] = -np.inf
    v[16, 3] = np.inf
    u[17], v[17] = -0.0, 1.0  # every ratio -0.0 or 0.0
    u[18] = np.where(rng.random(n) < 0.5, -0.0, 0.0)
    u[19], v[19] = -1.0, 1.0  # every window below zero, ties
    u[20], v[20] = 0.0, 0.0  # no window with sum v > 0
    v[21, ::2] = -1.0
    u[22] *= 1e-160  # squares below the normal range
    v[22] *= 1e-160
    u[23] *= 1e155
    u[24] *= 1e-300
    v[25] *= 1e-310  # subnormal
    u[26] = np.round(u[26])  # ties between windows
    u[27], v[27] = 1.0, 1.0
    lengths = np.array([3, 4, 5, 6, 8, 10, 12, 15, 19, 24, 30, 37, 47, 48])
    yield "tile", u, v, lengths
    yield "lengths beyond n and of one", u, v, np.array([1, 2, 60, 48, 100, 0])
    yield "one exposure", u[:, :1], v[:, :1], np.array([1, 3])
    yield "one pixel", u[10:11], v[10:11], lengths
    yield "no pixels", u[:0], v[:0], lengths
    yield "no exposures", u[:, :0], v[:, :0], lengths
    yield "no lengths", u, v, np.zeros(0, np.int64)


def test_trimmed_ratio_scan_is_that_of_every_window_bit_for_bit():
    for name, u, v, lengths in _trimmed_ratio_cases():
        for trim in (2.0, 0.0, 1.0):
            ut, vt = np.ascontiguousarray(u), np.ascontiguousarray(v)
            lengths = np.asarray(lengths, np.int64)
            got, want = np.empty(ut.shape[0]), np.empty(ut.shape[0])
            running._max_trimmed_ratio(ut.T, vt.T, lengths, np.full(ut.shape[0], trim), got)  # (time, pixel)
            _max_trimmed_ratio_before(ut, vt, lengths, trim, want)
            assert np.array_equal(got.view(np.int64), want.view(np.int64)), (name, trim)
            got_c = np.empty(ut.shape[0])  # C-ordered (time, pixel), as variance.scan passes its terms
            running._max_trimmed_ratio(np.ascontiguousarray(ut.T), np.ascontiguousarray(vt.T), lengths,
                                       np.full(ut.shape[0], trim), got_c)
            assert np.array_equal(got_c.view(np.int64), want.view(np.int64)), (name, trim)
    assert np.signbit(want[17]) == np.signbit(got[17])  # the zeros' signs, as computed before


def test_column_cumsums_are_numpys_cumsum_bit_for_bit():
    """The float32 running sums of chosen columns are those of ``np.cumsum`` of the column copy
    in float64 (the first term as it is: a leading -0.0 stays), with inf, NaN, overflow beyond
    float32, float32 input, strided input, no columns, no exposures and one."""
    rng = np.random.default_rng(1)
    for n in (0, 1, 2, 5, 100):
        z = rng.normal(size=(n, 50)) * 10.0 ** rng.uniform(-5, 5, (n, 50))
        if n:
            z[0, 3] = -0.0
            z[:, 4] = -0.0
            z[n // 2, 5] = np.inf
            z[n // 2, 6] = np.nan
            z[:, 7] = 1e308
        for cols in (np.arange(50), np.flatnonzero(rng.random(50) < 0.5), np.arange(0)):
            for zz in (z, z.astype(np.float32), z[:, ::-1]):
                want = np.zeros((n + 1, cols.size), np.float32)
                with np.errstate(over="ignore", invalid="ignore"):
                    want[1:] = np.cumsum(np.asarray(zz, float)[:, cols], axis=0)
                got = running.column_cumsums(zz, cols)
                assert got.shape == want.shape and got.dtype == np.float32
                assert np.array_equal(got.view(np.int32), want.view(np.int32))


def _coverage_numpy(sci, dq, jump_bit):
    """spatial_stage's DQ bookkeeping as numpy had it."""
    inside = np.isfinite(sci) | (dq != 0)
    jump = (dq & np.uint32(jump_bit)) != 0
    and_bits = np.bitwise_and.reduce(np.where(inside, dq, np.uint32(0xFFFFFFFF)), axis=0).astype(np.uint32) \
        if sci.shape[0] else np.full(sci.shape[1:], np.uint32(0xFFFFFFFF), np.uint32)
    return jump, and_bits, inside.sum(axis=0).astype(np.int32)


@pytest.mark.parametrize("shape", [(0, 4, 5), (1, 1, 1), (3, 1, 1), (7, 13, 29), (12, 40, 64)])
def test_coverage_is_the_numpy_bookkeeping(shape):
    """Stage 1's jump plane, AND of the DQ bits over the covering exposures and their count, in
    one compiled pass: numpy's arrays on NaN outside a footprint, DQ set where SCI is NaN,
    pixels no exposure covers (all ones, zero) and every bit pattern, one pixel and no exposure."""
    from lrscube.config import flags

    rng = np.random.default_rng(sum(shape))
    sci = rng.normal(size=shape).astype(np.float32)
    dq = rng.choice(np.array([0, 1, 4, 5, 2 ** 31, 0xFFFFFFFF, 1 | 2 ** 20], np.uint32), size=shape)
    sci[rng.random(shape) < 0.3] = np.nan
    sci[rng.random(shape) < 0.05] = np.inf
    if shape[0] > 2:
        sci[:, 0] = np.nan  # a row no exposure covers where DQ is 0
        dq[:, 0] = np.where(rng.random(dq[:, 0].shape) < 0.5, 0, dq[:, 0])
        sci[1] = np.nan  # one exposure outside its footprint everywhere
        dq[1] = 0
    cases = [(sci, dq), (np.full(shape, np.nan, np.float32), np.zeros(shape, np.uint32)),  # all masked
             (sci[:, ::-1], dq[:, :, ::-1])]  # not contiguous
    for s, d in cases:
        want = _coverage_numpy(s, d, flags.JUMP_DET)
        got = running.coverage(s, d, flags.JUMP_DET)
        for g, w in zip(got, want):
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("shape", [(1, 1), (2, 1), (1, 50), (6, 300), (7, 300), (16, 257, 3), (601, 40)])
def test_first_axis_nanmedians_numpy_are_numpys_bit_for_bit(shape):
    """Stage 0's illumination: the compiled medians over axis 0 give np.nanmedian's bits (its
    masked sort below 600 rows, its partition above) on noise, NaN holes, all-NaN columns,
    ties, zeros of either sign, values near the float32 limit (numpy's m + m overflows)."""
    rng = np.random.default_rng(sum(shape))
    cases = []
    for k in range(10):
        a = (rng.normal(size=shape) * 10.0 ** rng.integers(-3, 4)).astype(np.float32)
        if k % 5 == 1:
            a[rng.random(shape) < 0.4] = np.nan
            a.reshape(shape[0], -1)[:, ::3] = np.nan  # columns without a value
        if k % 5 == 2:
            a = np.round(a).astype(np.float32)  # ties, zeros
        if k % 5 == 3:
            a = np.where(rng.random(shape) < 0.5, np.float32(0.0), a).astype(np.float32)
            a[rng.random(shape) < 0.3] = -0.0
        if k % 5 == 4:
            big = (np.float32(3e38) * np.sign(rng.normal(size=shape))).astype(np.float32)
            a = np.where(rng.random(shape) < 0.2, big, a).astype(np.float32)
        cases.append(a)
    for a in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            want = np.nanmedian(a, axis=0)
            got = running.first_axis_nanmedians_numpy(a)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_array_equal(_bits(got), _bits(want))


def test_illumination_stage_is_numpys_nanmedian():
    """detect.illumination_stage (compiled medians) against its numpy formulation, with NaN,
    zero and negative ERR, an empty footprint row and no exposure."""
    from lrscube.detection.detect import illumination_stage

    rng = np.random.default_rng(5)
    for k in (0, 1, 4, 9):
        sci = rng.normal(50, 10, (k, 30, 41)).astype(np.float32)
        err = rng.uniform(0.5, 2, (k, 30, 41)).astype(np.float32)
        sci[rng.random(sci.shape) < 0.2] = np.nan
        sci[:, 3] = np.nan
        err[rng.random(err.shape) < 0.05] = 0.0
        err[rng.random(err.shape) < 0.05] = -1.0
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            q = sci / err
            want = np.nanmedian(np.where(np.isfinite(q), q, np.nan), axis=0).astype(np.float32)
            got = illumination_stage(sci, err)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_array_equal(_bits(got), _bits(want))
