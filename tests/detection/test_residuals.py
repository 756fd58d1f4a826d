"""Per-exposure spatial residuals: numerics on small arrays."""

import numpy as np

import pytest

from lrscube.detection.residuals import local_linear, local_sky, running_median, sky_model, spatial_residuals, trace_mask


def test_running_median_centred_and_nan_aware():
    a = np.array([1.0, 9.0, 2.0, np.nan, 3.0], dtype="f4")
    np.testing.assert_allclose(running_median(a, 3), [5.0, 2.0, 5.5, 2.5, 3.0])


def test_local_sky_unbiased_on_a_ramp_with_edges_and_holes():
    y = (np.arange(60, dtype="f4") * 0.3)[:, None].repeat(3, axis=1)
    y[20, 1] = np.nan  # a hole (static NaN pixel)
    sky = local_sky(y, 15, axis=0)
    ok = np.isfinite(y)
    assert np.abs(sky - y)[ok].max() < 1e-3


def test_local_sky_near_an_edge_without_a_slope_from_one_median():
    # a hole 14 pixels from the footprint's edge leaves one window between them centred on its
    # pixel; a line through one median is 0 / 0, which moved the edge's sky by ten times the
    # noise in one of these columns; without a slope the cut windows keep their medians
    rng = np.random.default_rng(1)
    truth = (3.8 - 0.02 * np.arange(60))[:, None]
    y = (truth + rng.normal(0, 0.02, (60, 40))).astype("f4")
    y[14] = np.nan
    for sky in (local_sky(y, 15, axis=0), local_sky(np.ascontiguousarray(y.T), 15, axis=-1).T):
        assert np.abs(sky - truth)[:14].max() < 0.15  # a cut window's median: 3.5 pixels of slope and noise


def _frame_with_structure(rng, shape):
    """A sloped, curved sky with noise, NaN holes, a NaN run and a cut footprint edge."""
    y = np.arange(shape[-2], dtype="f4")[:, None]
    a = (3 + 0.05 * y + 2 * np.exp(-y / 20) + rng.normal(0, 0.1, shape)).astype("f4")
    a[rng.random(shape) < 0.05] = np.nan
    a[..., 10:17, 4] = np.nan  # a run longer than half a window
    a[..., :3, 6:9] = np.nan  # a footprint edge
    return a


@pytest.mark.parametrize("window,min_count", [(15, 5), (9, 3), (5, 1), (7, 7)])
def test_compiled_sky_and_line_equal_the_numpy_steps(window, min_count):
    """local_sky and local_linear along a column (one compiled pass, lanes along the row) give
    the numbers of their step-by-step numpy version (which runs along the last axis) bit for bit."""
    rng = np.random.default_rng(window)
    for shape in [(2, 70, 13), (40, 12), (9, 10), (1, 60, 9), (1, 1, 5)]:
        a = _frame_with_structure(rng, shape)
        if shape[0] == 1:  # medians of zeros of both signs on a ramp (the sign of slope * 0 shows)
            zeros = np.where(rng.random(shape) < 0.5, np.float32(0.0), np.float32(-0.0))
            a = np.where(rng.random(shape) < 0.7, zeros, a - 3.0).astype("f4")
        along_rows = np.ascontiguousarray(np.swapaxes(a, -1, -2))
        got = local_sky(a, window, axis=-2, min_count=min_count)
        ref = np.swapaxes(local_sky(along_rows, window, axis=-1, min_count=min_count), -1, -2)
        np.testing.assert_array_equal(got.view("u4"), np.ascontiguousarray(ref).view("u4"))
        got = local_linear(got, window, axis=-2)
        ref = np.swapaxes(local_linear(np.ascontiguousarray(np.swapaxes(ref, -1, -2)), window, axis=-1), -1, -2)
        np.testing.assert_array_equal(got.view("u4"), np.ascontiguousarray(ref).view("u4"))


def test_sky_model_neighbours_of_a_dead_pixel_unbiased_on_a_steep_sky():
    # steep sky: the ramp step per row (0.07) is comparable to the noise (0.1)
    rng = np.random.default_rng(0)
    n = 400
    truth = (2 + 0.07 * np.arange(60))[None, :, None] * np.ones((n, 1, 5))
    err = np.full(truth.shape, 0.1, "f4")
    sci = (truth + rng.normal(0, 0.1, truth.shape)).astype("f4")
    sci[:, 30, 2] = 0.0  # dead pixel
    sky = sky_model(sci, err, 15, axis=1)
    bias = np.delete((sci - sky)[:, 23:38, 2].mean(axis=0) / 0.1, 7)  # the dead pixel left out
    plain = np.delete((sci - running_median(sci, 15, axis=1))[:, 23:38, 2].mean(axis=0) / 0.1, 7)
    # a plain running median inherits most of a ramp step (0.7 sigma) next to the dead pixel,
    # which stacking over ~100 exposures turns into false detections; the sky model does not
    assert np.abs(plain).max() > 0.4
    assert np.abs(bias).max() < 0.2


@pytest.mark.parametrize("along_rows", [False, True])
def test_sky_model_neighbours_of_a_hot_pixel_unbiased_on_a_sky_many_sigma_steep(along_rows):
    # the fall-off beyond a spectrum's end: the sky climbs 8 sigma per row, so the running median
    # of a column is the middle value of its window, and a hot pixel moves it by a whole row's
    # step in every window that holds it; the neighbours must not inherit that step, whether as
    # false outliers left out of the second median or through the trend
    rng = np.random.default_rng(0)
    n = 600
    truth = (2 + 0.8 * np.arange(60))[None, :, None] * np.ones((n, 1, 5))
    err = np.full(truth.shape, 0.1, "f4")
    sci = (truth + rng.normal(0, 0.1, truth.shape)).astype("f4")
    sci[:, 30, 2] += 30.0  # hot
    if along_rows:  # the dispersion along x (NIRSpec): the same lines, transposed
        sky = np.swapaxes(sky_model(np.swapaxes(sci, 1, 2).copy(), np.swapaxes(err, 1, 2).copy(), 15, axis=2), 1, 2)
    else:
        sky = sky_model(sci, err, 15, axis=1)
    bias = np.delete((sci - sky)[:, 16:45, 2].mean(axis=0) / 0.1, 14)  # the hot pixel left out
    assert np.abs(bias).max() < 0.2  # 1.9 sigma per exposure when the neighbours were outliers
    assert abs(float(np.mean((sci - sky)[:, 30, 2])) - 30.0) < 0.1  # the hot pixel keeps its excess


def test_hot_pixel_kept_and_row_offsets_removed():
    rng = np.random.default_rng(1)
    sci = (5 + rng.normal(0, 0.05, (2, 64, 40))).astype("f4")
    sci += (0.2 * np.where(np.arange(64) % 2, 1, -1))[None, :, None].astype("f4")  # odd/even rows
    sci[0, 20, 10] += 3.0
    res = spatial_residuals(sci, np.full_like(sci, 0.05))
    assert abs(res.resid[0, 20, 10] - 3.0) < 0.2
    others = np.delete(res.resid[1].ravel(), 20 * 40 + 10)
    assert np.nanstd(others) < 0.08  # the 0.2 DN/s row pattern is gone
    z = res.resid / res.sigma
    assert 0.8 < np.nanstd(z[1]) < 1.2  # noise calibrated


def test_a_row_offset_leaves_nothing_where_the_row_s_response_is_low():
    # MRS fringes put whole rows at a trough of response (here 0.88 across the row, between
    # rows at 1.0); an electronics offset of that row (-0.5 DN/s, additive) is 0.5 / 0.88 in the
    # flat-fielded image: it must leave the row's residuals at their response's share of the
    # sky, (g - 1) sky, not 0.5 (1 - 1 / 0.88) = -0.07 DN/s lower, which over the few exposures
    # the offset lasts is a dark change of every pixel of the row
    rng = np.random.default_rng(3)
    ny, nx, sky = 64, 200, 2.0
    g = (1.0 + rng.normal(0, 0.02, (ny, nx))).astype("f4")
    g[30] *= 0.88
    sci = (g * sky + rng.normal(0, 0.01, (2, ny, nx))).astype("f4")
    sci[1, 30] -= 0.5
    err = np.full(sci.shape, 0.01, "f4")
    res = spatial_residuals(sci, err, response=g)
    own = (g - 1.0) * res.sky
    for t in (0, 1):
        left = res.resid[t, 30] - own[t, 30]
        assert abs(np.nanmedian(left)) < 0.005, t
    # the exposure with the offset against the one without: the same residuals, pixel by pixel
    assert np.nanstd(res.resid[1, 30] - res.resid[0, 30]) < 0.03
    assert abs(np.nanmedian(res.resid[1, 30] - res.resid[0, 30])) < 0.005
    # the trough over part of the row only (another slice's fringes are at a crest), the sky's
    # structure across the dispersion taken out as in detect (cross_window): each part is left
    # at its own share of the sky
    g[30] = np.where(np.arange(nx) < 100, 0.88, 1.06) * (1.0 + rng.normal(0, 0.02, nx))
    sci = (g * sky + rng.normal(0, 0.01, (2, ny, nx))).astype("f4")
    sci[1, 30] -= 0.5
    res = spatial_residuals(sci, err, response=g, cross_window=15)
    step = res.resid[1, 30] - res.resid[0, 30]
    for part in (slice(10, 90), slice(110, 190)):
        assert abs(np.nanmedian(step[part])) < 0.006, part


def test_a_row_s_offset_is_read_from_its_dark_pixels_not_from_a_line_of_the_sky_spectrum():
    # MRS: a row crosses slices (lit) and the dark bands between them; a sky emission line puts
    # the whole row 10 % above the rows around in the light (the column's running median does
    # not follow a one-row feature), which is light, not an offset. The row's electronics
    # offset (-0.5 DN/s in the second exposure) is what its dark pixels show.
    rng = np.random.default_rng(4)
    ny, nx, sky = 64, 200, 2.0
    unlit = np.zeros((ny, nx), bool)
    unlit[:, :20] = unlit[:, 100:110] = True
    g = (1.0 + rng.normal(0, 0.02, (ny, nx))).astype("f4")
    g[30] *= 0.88
    light = np.full((ny, nx), sky, "f4")
    light[30] *= 1.10
    sci = (np.where(unlit, 0.0, g * light) + rng.normal(0, 0.01, (2, ny, nx))).astype("f4")
    sci[1, 30] -= 0.5
    err = np.full(sci.shape, 0.01, "f4")
    res = spatial_residuals(sci, err, response=g, unlit=unlit, cross_window=15)
    lit = ~unlit[30]
    for t in (0, 1):  # each exposure at the response's share of its light
        left = (res.resid[t, 30] - (g[30] - 1.0) * light[30])[lit]
        assert abs(np.nanmedian(left)) < 0.008, t
    step = (res.resid[1, 30] - res.resid[0, 30])[lit]
    assert abs(np.nanmedian(step)) < 0.006
    dark = res.resid[:, 30, :20]
    assert abs(np.nanmedian(dark[1] - dark[0])) < 0.006  # the dark pixels lose the offset too


def test_trace_found_slit_edge_not():
    rng = np.random.default_rng(2)
    sky = np.zeros((1, 100, 60), "f4")
    sky[..., 20:45] = 10.0  # slit: a plateau with hard edges
    err = np.full(sky.shape, 0.3, "f4")
    sci = sky + rng.normal(0, 0.3, sky.shape).astype("f4")
    blank = spatial_residuals(sci, err)
    assert not trace_mask(blank.sky, err).any()
    xs = np.arange(60)
    src = sci + (20 * np.exp(-0.5 * ((xs - 32) / 1.5) ** 2))[None, None, :].astype("f4")
    res = spatial_residuals(src, err)
    m = trace_mask(res.sky, err)
    assert m[0, 50, 32] and m[0, 50, 30] and not m[0, 50, 10]


def test_a_column_offset_the_length_of_a_full_frame_is_no_trace_a_spectrum_still_is():
    """A source's spectrum runs at most ~500 rows along the dispersion (LRS); a bump along a
    whole 1024-row column is a detector pattern (a column offset, EMI striping: lrs (283, 572)
    of the 40-exposure set, a new HOT pixel beside a column offset, lost three of its four
    exposures as "on a trace"). In a subarray no longer than a spectrum the same bump is still
    taken for a trace (a slitless spectrum fills it)."""
    rng = np.random.default_rng(4)
    ny, nx = 1024, 60
    err = np.full((1, ny, nx), 0.02, "f4")
    sci = (1.0 + rng.normal(0, 0.02, (1, ny, nx))).astype("f4")
    sci[..., 40:42] += 0.05                       # an even/odd column pair, the whole column
    xs = np.arange(nx)
    spec = np.zeros(ny, "f4")
    spec[100:500] = np.linspace(2.0, 6.0, 400)    # a spectrum over 400 rows
    sci += (spec[:, None] * np.exp(-0.5 * ((xs - 15) / 1.2) ** 2)[None, :])[None].astype("f4")
    sky = spatial_residuals(sci, err).sky
    m = trace_mask(sky, err, max_length=600)
    assert m[0, 300, 15] and m[0, 300, 13] and not m[0, 700, 15]
    assert not m[..., 36:46].any()
    every = trace_mask(sky, err)                  # no longest spectrum: any length is a trace
    assert every[0, 300, 15] and every[0, 300, 40] and every[0, 800, 41]
    sub = trace_mask(sky[:, 100:516], err[:, 100:516], max_length=600)
    assert sub[0, 200, 15] and sub[0, 200, 40]


def test_a_flat_fields_column_pattern_under_a_bright_sky_is_no_trace_a_source_still_is():
    # a deep exposure under a bright sky (15 DN/s, ERR 0.02): each pixel's response 2 % rms,
    # which leaves every column's running-median sky its own mean response over the window
    # (~0.4 %, several times the noise of the sky estimate), at the same columns in every exposure
    rng = np.random.default_rng(3)
    ny, nx = 400, 60
    flat = (1 + 0.02 * rng.normal(size=(ny, nx))).astype("f4")
    err = np.full((1, ny, nx), 0.02, "f4")
    sci = (15.0 * flat + rng.normal(0, 0.02, (ny, nx)).astype("f4"))[None]
    g = flat / flat.mean(axis=0)  # the response pattern is relative to the pixel's column
    blank = spatial_residuals(sci, err, response=g)
    assert not trace_mask(blank.sky, err).any()
    # a faint point source's spectrum (1 DN/s at its peak, 7 % of the sky) is still a trace
    xs = np.arange(nx)
    src = sci + (1.0 * np.exp(-0.5 * ((xs - 30) / 1.5) ** 2))[None, None, :].astype("f4")
    m = trace_mask(spatial_residuals(src, err, response=g).sky, err)
    assert m[0, 200, 30] and not m[0, 200, 10]


def _cusp_sky(ny=120, nx=40):
    """A dispersed sky with a sharp end (not the simulator's): rising along y with a 5-pixel
    exponential scale to a peak at row 60, then falling slowly; the same in every column."""
    y = np.arange(ny, dtype=float)
    prof = np.where(y < 60, 10 * np.exp((y - 60) / 5.0), 10 - 0.02 * (y - 60))
    return np.repeat(prof[:, None], nx, axis=1) + 0.3


def test_sharp_end_of_the_sky_unbiased_next_to_a_hole_and_not_blind():
    # a long exposure: the running median along the column is off by tens of ERR at the peak;
    # the cross-dispersion step removes it, also in the column with a static hole (which gets
    # its neighbours' value across for its sky) and without leaving the peak rows unanalysed
    # (they used to be all "outliers" of the biased first sky, so the sky there was NaN)
    rng = np.random.default_rng(3)
    sky = _cusp_sky()
    err = np.sqrt(sky / 5000.0).astype("f4")
    k = 40
    z = np.zeros(sky.shape)
    for _ in range(k):
        sci = (sky + rng.normal(0, 1, sky.shape) * err).astype("f4")
        sci[64, 20] = np.nan  # static bad pixel just past the peak
        res = spatial_residuals(sci[None], err[None], cross_window=15, calibrate_noise=False)
        z += (res.resid[0] / err) / np.sqrt(k)  # stacked over k exposures
    assert np.isfinite(z[50:75, 5:35]).sum() == 25 * 30 - 1  # every pixel analysed but the hole
    col = z[50:75, 20]
    assert np.nanmax(np.abs(col)) < 4.5  # stacked over 40 exposures: no false defect
    assert np.nanmax(np.abs(z[50:75, 8:32])) < 5.0


def _slicer_frames(k=30, seed=5):
    """Exposures of an image slicer: slices 12 columns wide, 3-column dark gaps (3 % scattered
    light) that drift 2 columns over the frame (the slices curve), slices ending 2 rows before
    the frame's edge along the dispersion; the sky changes by 4x between exposures."""
    rng = np.random.default_rng(seed)
    ny, nx = 120, 75
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    pos = (xx - 2.0 * yy / ny) % 15.0
    illum = np.where(pos < 12.0, 1.0, 0.03)
    illum[:2] = 0.03
    levels = rng.uniform(0.5, 2.0, k)
    sky = levels[:, None, None] * 0.2 * illum * (1.0 + 0.2 * yy / ny)
    err = np.sqrt(0.01 ** 2 + 0.002 * sky).astype("f4")
    sci = (sky + rng.normal(0, 1, sky.shape) * err).astype("f4")
    return sci, err, illum, levels


def test_unlit_pixels_are_the_gaps_and_the_slices_ends():
    from lrscube.detection.residuals import unlit_pixels

    sci, err, illum, _ = _slicer_frames()
    sci[:, 60, 7] = 5.0  # a hot pixel in a slice is lit, and so is a dead one
    sci[:, 40, 20] = 0.0
    u = unlit_pixels(sci / err, fraction=0.3, window=15, cross_window=15, min_length=64)
    dark = illum < 0.5
    assert u[:2].all()  # past the slices' ends
    assert (u == dark)[5:].mean() > 0.97 and not u[60, 7] and not u[40, 20]
    # a frame dark everywhere has nothing lit to compare with
    assert not unlit_pixels(np.zeros((3, 50, 40)), fraction=0.3).any()


def test_a_hot_cluster_in_a_gap_stays_in_the_gap():
    """Three hot pixels along the dispersion in a gap, bright in most exposures, survive the
    3-pixel median: they are still unlit (else they would be their own sky), while a short
    slice cut off by unusable rows stays lit."""
    from lrscube.detection.residuals import unlit_pixels

    sci, err, illum, _ = _slicer_frames()
    gap_col = [x for x in range(1, 74) if illum[29:36, x - 1:x + 2].max() < 0.5][0]  # inside a gap
    sci[:, 31:34, gap_col] = 5.0
    sci[:, 90:92, :] = np.nan  # a band of unusable rows: the slices' pieces above it are short
    u = unlit_pixels(sci / err, fraction=0.3, window=15, cross_window=15, min_length=64)
    assert u[31:34, gap_col].all()
    lit_pieces = (illum[92:, :] > 0.5)
    assert not u[92:][lit_pieces].any()
    # a hot pixel in a slice is still lit
    sci2, err2, illum2, _ = _slicer_frames()
    sci2[:, 60:63, 7] = 5.0
    assert not unlit_pixels(sci2 / err2, fraction=0.3, window=15, cross_window=15, min_length=64)[60:63, 7].any()


def test_unlit_pixels_get_their_own_sky_and_a_baseline_that_fits():
    # every pixel of a slicer's frame against its own baseline r = a sky + d (fitted over the
    # exposures): a dark pixel whose column runs out of a slice, or in the rows past the
    # slices' ends, was judged against a lit sky and scattered far beyond its noise
    from lrscube.detection.residuals import unlit_pixels

    sci, err, illum, levels = _slicer_frames()
    u = unlit_pixels(sci / err, fraction=0.3, window=15, cross_window=15, min_length=64)

    def worst_chi2(unlit):
        res = spatial_residuals(sci, err, cross_window=15, calibrate_noise=False, unlit=unlit)
        r, k, s = res.resid, res.sky, res.sigma
        k = np.where(np.isfinite(k), k, 0.0)
        chi2 = np.full(r.shape[1:], np.nan)
        for y, x in zip(*np.nonzero(illum < 0.5)):
            ok = np.isfinite(r[:, y, x])
            if ok.sum() < 10:
                continue
            A = np.stack([k[ok, y, x], np.ones(ok.sum())], 1) / s[ok, y, x][:, None]
            b = r[ok, y, x] / s[ok, y, x]
            c = np.linalg.lstsq(A, b, rcond=None)[0]
            chi2[y, x] = np.sum((b - A @ c) ** 2) / (ok.sum() - 2)
        return chi2

    with_u, without = worst_chi2(u), worst_chi2(None)
    assert np.isfinite(with_u[illum < 0.5]).mean() > 0.99  # every dark pixel analysed
    assert np.nanmax(with_u) < 2.5
    assert np.nanmax(without) > 5.0  # what the two populations fix


def _two_channel_frames(k=30, seed=11):
    """Exposures of a long-wavelength image slicer: two channels whose sky levels change
    independently between exposures (their wavelengths differ), each with narrow gaps whose
    centre column takes 8 % of the slices' light (their diffraction wings and scattered light),
    a 12-column band between the channels that sees none, and an offset on every row of every
    exposure (the electronics', twice the dark pixels' noise)."""
    rng = np.random.default_rng(seed)
    ny, nx = 160, 200
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    left, right = xx < 88, xx >= 100
    gaps = (xx % 9 == 8) & (left | right)
    illum = np.where(left | right, np.where(gaps, 0.08, 1.0), 0.0) * (1.0 + 0.3 * yy / ny)
    la, lb = rng.uniform(1.0, 5.0, k), rng.uniform(1.0, 5.0, k)
    level = np.where(left, la[:, None, None], lb[:, None, None])
    sky = level * illum
    err = np.sqrt(0.004 ** 2 + 0.0005 * sky).astype("f4")
    rows = rng.normal(0, 0.008, (k, ny, 1))
    sci = (sky + rows + rng.normal(0, 1, sky.shape) * err).astype("f4")
    unlit = np.broadcast_to(gaps | ~(left | right), (ny, nx))
    return sci, err, unlit, ~(left | right)


def _baseline_chi2(res, pixels):
    """chi2 per degree of freedom of each pixel's fit r = a sky + d over the exposures."""
    r, s, k = res.resid, res.sigma, np.where(np.isfinite(res.sky), res.sky, 0.0)
    out = []
    for y, x in zip(*np.nonzero(pixels)):
        ok = np.isfinite(r[:, y, x]) & np.isfinite(s[:, y, x])
        A = np.stack([k[ok, y, x], np.ones(ok.sum())], 1) / s[ok, y, x][:, None]
        b = r[ok, y, x] / s[ok, y, x]
        c = np.linalg.lstsq(A, b, rcond=None)[0]
        out.append(np.sum((b - A @ c) ** 2) / (ok.sum() - 2))
    return np.array(out)


def test_dark_pixels_keep_their_level_when_the_narrow_gaps_see_light():
    # MIRIFULONG: most unlit pixels of a row are the centres of narrow gaps, lit by the slices'
    # wings at tens of times the dark pixels' noise; the dark band between the channels sees
    # nothing. The row's offset taken as the median of the raw unlit values was that light, and
    # the dark pixels got minus the gaps' light, which follows neither channel's sky: a misfit of
    # tens of sigma in every exposure, flagged WARM and TELEGRAPH
    sci, err, unlit, band = _two_channel_frames()
    res = spatial_residuals(sci, err, cross_window=15, unlit=unlit)
    inner = band.copy()
    inner[:8] = inner[-8:] = False  # a running median along the column needs a full window
    dark = _baseline_chi2(res, inner)
    # (an offset taken from the row's 12 dark pixels carries their noise over 12: chi2 ~1.2)
    assert dark.size == inner.sum() and np.median(dark) < 1.35 and dark.max() < 3.5
    assert abs(np.nanmedian(res.resid[:, inner])) < 0.5 * 0.004  # no light taken from them
    # the narrow gaps' own light is theirs: a sky-proportional baseline fits it
    gap = unlit & ~band
    gap[:8] = gap[-8:] = False
    assert np.median(_baseline_chi2(res, gap)) < 1.5
    # the row offsets are still taken out: without that, the dark pixels scatter 2.2x their ERR
    raw = spatial_residuals(sci, err, cross_window=15, unlit=unlit, remove_line_offsets=False, calibrate_noise=False)
    assert np.median(_baseline_chi2(raw, inner)) > 3.0


@pytest.mark.parametrize("dispersion_axis", ["y", "x"])
def test_gap_pixels_are_the_unlit_runs_at_most_so_wide_across_the_dispersion(dispersion_axis):
    from lrscube.detection.residuals import DARK, GAP, gap_pixels, unlit_codes

    u = np.zeros((80, 120), bool)
    u[:, 0:4] = True      # the frame's edge, 4 columns
    u[:, 30] = True       # a slicer gap, 1 column
    u[:, 60:63] = True    # one of 3
    u[:, 90:102] = True   # the band between two channels, 12
    u[:10, 40:44] = True  # the end of a slice, 4 wide (and a run of 10 along the dispersion)
    if dispersion_axis == "x":
        u = u.T.copy()
    g = gap_pixels(u, dispersion_axis=dispersion_axis, max_width=3)
    want = np.zeros((80, 120), bool)
    want[:, 30] = want[:, 60:63] = True
    assert np.array_equal(g, want if dispersion_axis == "y" else want.T)
    codes = unlit_codes(u, dispersion_axis=dispersion_axis, gap_max_width=3)
    assert codes.dtype == np.uint8 and np.array_equal(codes == GAP, g) and np.array_equal(codes == DARK, u & ~g)
    assert not (unlit_codes(u, dispersion_axis=dispersion_axis) == GAP).any()  # None: no pixel is in a gap


def test_a_narrow_gap_is_judged_against_its_own_light_when_that_light_changes_colour():
    # the narrow gaps see the slices' wings, which widen with wavelength: how much of the slices'
    # light reaches a gap changes from exposure to exposure with the light's colour (here 4-12 %
    # where _two_channel_frames' gaps take 8 %),
    # not in proportion to the slices' sky. Against the sky around, the gap pixels' residuals carry
    # that change, many times their noise; against their gap's own light they are noise, and a
    # gap pixel that loses its light is minus that light
    from lrscube.detection.residuals import unlit_codes

    sci, err, unlit, band = _two_channel_frames()
    k = sci.shape[0]
    rng = np.random.default_rng(4)
    unlit = unlit[0] if unlit.ndim == 3 else unlit
    gap = unlit & ~band
    colour = rng.uniform(0.5, 1.5, k)[:, None, None]
    sci = np.where(gap, sci * colour, sci).astype("f4")
    dead = (np.array([50, 90, 91]), np.array([62, 62, 62]))  # gap pixels that lost their light
    sci[:, dead[0], dead[1]] *= 0.02
    codes = unlit_codes(unlit, gap_max_width=3)
    inner = gap.copy()
    inner[:8] = inner[-8:] = False
    inner[40:100, 62] = False
    around = spatial_residuals(sci, err, cross_window=15, unlit=unlit)
    own = spatial_residuals(sci, err, cross_window=15, unlit=codes)
    assert np.median(_baseline_chi2(around, inner)) > 20
    assert np.median(_baseline_chi2(own, inner)) < 1.5
    lost = own.resid[:, dead[0], dead[1]] / own.sky[:, dead[0], dead[1]]  # its noise: 0.03-0.3 of the light
    assert np.all(np.abs(np.median(lost, axis=0) + 0.98) < 0.03) and np.all(lost < -0.5)
    # the lit pixels and the dark band between the channels are as they were
    lit = ~unlit
    assert np.array_equal(np.isnan(own.resid[:, lit]), np.isnan(around.resid[:, lit]))
    assert np.allclose(own.resid[:, lit], around.resid[:, lit], equal_nan=True)
    assert np.allclose(own.resid[:, band], around.resid[:, band], equal_nan=True)


@pytest.mark.parametrize("cross_axis", [-1, -2])
def test_cross_deviation_apart_takes_each_kind_s_own_median(cross_axis):
    """With ``apart``, each pixel's cross-dispersion median is of its own kind's pixels only: the
    whole-array medians of either kind (NaN elsewhere), though the part's is computed over its
    bounding box; a part of any shape, NaN and edges included, bit for bit."""
    from lrscube.detection.residuals import cross_deviation, running_median

    rng = np.random.default_rng(2)
    r = rng.normal(0, 1, (1, 60, 50)).astype("f4")
    r[0, rng.random((60, 50)) < 0.05] = np.nan
    apart = np.zeros((60, 50), bool)
    apart[20:45, 0:18] = True
    apart[30:33, 18:25] = True  # not a box
    mc = 5
    want = np.where(apart, running_median(np.where(apart, r, np.nan), 15, axis=cross_axis, min_count=mc),
                    running_median(np.where(apart, np.nan, r), 15, axis=cross_axis, min_count=mc))
    for keep_nan in (False, True):
        got = cross_deviation(r, 15, cross_axis, keep_nan=keep_nan, apart=apart)
        ref = r - want if keep_nan else r - np.where(np.isfinite(want), want, 0.0).astype(np.float32)
        np.testing.assert_array_equal(got, ref)
    assert np.array_equal(cross_deviation(r, 15, cross_axis, apart=np.zeros((60, 50), bool)),
                          cross_deviation(r, 15, cross_axis), equal_nan=True)


def test_response_pattern_keeps_a_level_that_holds_in_every_exposure_and_only_that():
    """Ratio samples (16 exposures) of a frame (300 rows) whose rows 20-40 share a level 0.7 (a fall-off the
    smooth sky of a column does not follow) in every exposure, and whose rows 60-80 share a level
    that changes from exposure to exposure (0.4-1.6: a light of its own under a changing sky);
    each pixel its own response (2 % rms); half the pixels faint (ratio noise 10 %), half bright
    (0.5 %). Faint pixels of the fixed level take the level, not 1; those of the changing one
    stay near 1; bright pixels keep what they measure where the level holds."""
    from lrscube.detection.residuals import response_pattern

    rng = np.random.default_rng(4)
    k, ny, nx = 16, 300, 80  # the structure covers 40 of the 300 rows
    g = 1 + rng.normal(0, 0.02, (ny, nx))
    level = np.ones((k, ny, 1))
    level[:, 20:40] = 0.7
    level[:, 60:80] = rng.uniform(0.4, 1.6, (k, 1, 1))
    noise = np.where(rng.random((ny, nx)) < 0.5, 0.10, 0.005)
    q = (level * g + rng.normal(0, 1, (k, ny, nx)) * noise).astype("f4")
    pat = response_pattern(q)
    faint, bright = noise >= 0.1, noise < 0.1
    fixed = np.zeros((ny, nx), bool)
    fixed[22:38, 8:72] = True
    assert np.median(np.abs(pat[fixed & faint] / 0.7 - 1)) < 0.04  # shrunk towards 1: 0.24
    assert np.median(np.abs(pat[fixed & bright] / (0.7 * g[fixed & bright]) - 1)) < 0.01
    changing = np.zeros((ny, nx), bool)
    changing[62:78, 8:72] = True
    assert np.median(np.abs(pat[changing] - 1)) < 0.1


def test_response_pattern_takes_no_level_where_the_smooth_sky_is_cut_by_the_data_s_end():
    """Ratio samples whose first and last 10 rows along the dispersion (LRS: y) read 0.8 in every
    exposure: the smooth sky there is cut short by the data's end (a frame's or a subarray's),
    the same bias in every exposure, so it looks like a firm level. It is not the sky's, and
    flat-fielding by it flags the pixels beside the end (NIRSpec's columns next to the reference
    border). A fall-off in the middle of the lines (rows 100-120 at 0.75) is still taken."""
    from lrscube.detection.residuals import response_pattern

    rng = np.random.default_rng(8)
    k, ny, nx = 16, 300, 80
    g = 1 + rng.normal(0, 0.02, (ny, nx))
    level = np.ones((k, ny, 1))
    level[:, :10] = level[:, -10:] = 0.8
    level[:, 100:120] = 0.75
    q = (level * g + rng.normal(0, 0.10, (k, ny, nx))).astype("f4")  # faint pixels: the level decides
    pat = response_pattern(q, dispersion_axis="y", edge=15)
    plain = response_pattern(q, dispersion_axis="y", window=None)  # no level anywhere
    np.testing.assert_array_equal(pat[:15], plain[:15])  # within the edge: each pixel's own, shrunk towards 1
    np.testing.assert_array_equal(pat[-15:], plain[-15:])
    assert np.median(np.abs(pat[102:118, 8:72] / (0.75 * g[102:118, 8:72]) - 1)) < 0.04
    assert np.median(np.abs(plain[102:118, 8:72] / (0.75 * g[102:118, 8:72]) - 1)) > 0.1
    cut = response_pattern(q, dispersion_axis="y", edge=0)  # taken as a level without the rule
    assert np.median(np.abs(cut[:10, 8:72] / (0.8 * g[:10, 8:72]) - 1)) < 0.04
