"""Header parsing, subarray placement and integration combining, on headers and numpy arrays."""

import numpy as np
import pytest
from astropy.io import fits

from lrscube.config import flags, profiles
from lrscube.intake.products import (
    Rejected,
    combine_integrations,
    integration_scatter,
    kept_integrations,
    scatter_integrations,
    exposure_key,
    exposure_times,
    placement,
    read_product,
)

PROFILE = profiles.load("lrs")
FRAME = (1024, 1032)


def hdr(**kw):
    h = fits.Header()
    h.update(kw)
    return h


def test_time_prefers_expmid():
    mid, start, t = exposure_times(hdr(EXPMID=60000.5, EXPSTART=60000.4, EFFEXPTM=864.0))
    assert (mid, start, t) == (60000.5, 60000.4, 864.0)


def test_time_falls_back_to_expstart_plus_half_exposure():
    mid, start, t = exposure_times(hdr(EXPSTART=60000.0, EFFEXPTM=864.0))
    assert start == 60000.0
    assert mid == pytest.approx(60000.005, abs=1e-9)


def test_time_falls_back_to_date_obs_time_obs():
    # 2023-03-08T01:02:30 UTC is MJD 60011.04340277...
    mid, start, t = exposure_times(hdr(**{"DATE-OBS": "2023-03-08", "TIME-OBS": "01:02:30"}))
    assert start == pytest.approx(60011.043402777, abs=1e-8)
    assert mid == start and np.isnan(t)


def test_exposure_time_from_integrations_when_effexptm_missing():
    _, _, t = exposure_times(hdr(EXPSTART=60000.0, EFFINTTM=10.0, NINTS=4))
    assert t == 40.0


def test_no_time_keyword_is_rejected():
    with pytest.raises(Rejected, match="no usable time keyword"):
        exposure_times(hdr(EFFEXPTM=10.0))


def test_slitlessprism_placement():
    h = hdr(SUBSTRT1=1, SUBSTRT2=529, SUBSIZE1=72, SUBSIZE2=416)
    assert placement(h, (416, 72), FRAME) == (528, 0)


def test_placement_rejects_shape_mismatch():
    h = hdr(SUBSTRT1=1, SUBSTRT2=529, SUBSIZE1=72, SUBSIZE2=416)
    with pytest.raises(Rejected, match="does not match SUBSIZE"):
        placement(h, (416, 64), FRAME)


def test_placement_rejects_subarray_outside_frame():
    h = hdr(SUBSTRT1=1000, SUBSTRT2=1, SUBSIZE1=72, SUBSIZE2=64)
    with pytest.raises(Rejected, match="outside"):
        placement(h, (64, 72), FRAME)


def test_placement_without_keywords_only_for_full_frame():
    assert placement(hdr(), FRAME, FRAME) == (0, 0)
    with pytest.raises(Rejected):
        placement(hdr(), (64, 72), FRAME)


def test_combine_drops_cosmic_ray_integration_and_propagates_error():
    sci = np.full((4, 2, 2), 5.0)
    err = np.full((4, 2, 2), 0.5)
    dq = np.zeros((4, 2, 2), np.uint32)
    sci[2, 0, 0] = 500.0  # a cosmic-ray residual in one integration
    s, e, d = combine_integrations(sci, err, dq)
    assert s[0, 0] == pytest.approx(5.0)  # the 500 was dropped, not averaged in
    assert e[0, 0] == pytest.approx(np.sqrt(3 * 0.25) / 3)  # three kept
    assert e[1, 1] == pytest.approx(np.sqrt(4 * 0.25) / 4)  # four kept
    assert s.dtype == np.float32 and d.dtype == np.uint32


def test_combine_do_not_use_everywhere_gives_nan_and_flag():
    sci = np.ones((3, 1, 2))
    err = np.ones((3, 1, 2))
    dq = np.zeros((3, 1, 2), np.uint32)
    dq[:, 0, 0] = flags.DO_NOT_USE | flags.PIXEL["HOT"]
    dq[0, 0, 1] = flags.JUMP_DET | flags.DO_NOT_USE  # one bad integration, others fine
    s, e, d = combine_integrations(sci, err, dq)
    assert np.isnan(s[0, 0]) and d[0, 0] & flags.DO_NOT_USE and d[0, 0] & flags.PIXEL["HOT"]
    assert s[0, 1] == 1.0 and not d[0, 1] & flags.DO_NOT_USE


def test_combine_two_integrations_are_never_clipped():
    # with two values neither can be called the outlier: both are kept
    s, _, _ = combine_integrations(np.array([[[1.0]], [[101.0]]]), np.ones((2, 1, 1)), np.zeros((2, 1, 1)))
    assert s[0, 0] == 51.0


def test_integration_scatter_is_one_for_normal_pixels_high_for_a_noisy_one_not_for_a_cosmic_ray():
    """The reduced chi-square of the integrations about their mean: ~1 for pixels that scatter as
    their ERR says; a pixel scattering 3x its ERR between integrations ~10; one integration hit
    by a cosmic ray (25 ERR) is dropped and leaves the pixel at ~1 (kept, it would make it ~80);
    a telegraph pixel high by 25 ERR in 2 of 8 integrations keeps both (the ingest's slope clip
    would drop them as cosmic rays: its scatter would vanish); fewer than 3 integrations: NaN."""
    rng = np.random.default_rng(3)
    n, npix = 8, 3000
    err = np.full((n, 1, npix), 0.2)
    sci = 10.0 + rng.normal(0.0, 0.2, (n, 1, npix))
    dq = np.zeros((n, 1, npix), np.uint32)
    noisy = sci.copy()
    noisy[:, :, :100] += rng.normal(0.0, 0.6, (n, 1, 100))  # 3x the ERR: 1 + 9 = 10 (less what the clip drops)
    hit = sci.copy()
    hit[2, :, :100] += 5.0
    switching = sci.copy()
    switching[[2, 5], :, :100] += 5.0
    q = {name: integration_scatter(a, err, scatter_integrations(a, err, dq))[0].astype(float)
         for name, a in (("normal", sci), ("noisy", noisy), ("hit", hit), ("switching", switching))}
    assert integration_scatter(sci, err, scatter_integrations(sci, err, dq)).dtype == np.float16
    assert np.mean(q["normal"]) == pytest.approx(1.0, abs=0.03)
    assert np.median(q["noisy"][:100]) > 4 and np.median(q["noisy"][100:]) < 1.2
    assert np.median(q["switching"][:100]) > 50
    assert kept_integrations(switching, err, dq)[[2, 5], :, :100].sum() == 0  # what the slope clip does
    assert np.median(q["hit"][:100]) == pytest.approx(np.median(q["normal"][:100]), abs=0.15)
    unclipped = integration_scatter(hit, err, np.ones(hit.shape, bool))[0].astype(float)
    assert np.median(unclipped[:100]) > 50  # what the clip protects against
    assert np.isnan(integration_scatter(sci[:2], err[:2], np.ones((2, 1, npix), bool))).all()


def test_exposure_key_ignores_file_name_but_not_start_time():
    h = hdr(PROGRAM="01234", OBSERVTN="001", VISIT="001", EXPOSURE="00001")
    assert exposure_key(h, "MIRIMAGE", 60000.0) == exposure_key(h.copy(), "MIRIMAGE", 60000.0)
    assert exposure_key(h, "MIRIMAGE", 60000.0) != exposure_key(h, "MIRIMAGE", 60000.1)


def test_real_rateints_is_read_placed_and_combined(rateints_real):
    exp = read_product(str(rateints_real), PROFILE)
    assert (exp.y0, exp.x0) == (528, 0)
    assert exp.sci.shape == (416, 72)
    with fits.open(rateints_real) as h:
        sci, err, dq = h["SCI"].data, h["ERR"].data, h["DQ"].data
        expstart, effexptm = h[0].header["EXPSTART"], h[0].header["EFFEXPTM"]
    assert dq.dtype == np.uint32  # int32 + BZERO on disk, rescaled
    s, e, d = combine_integrations(sci, err, dq)
    np.testing.assert_array_equal(exp.sci, s)
    np.testing.assert_array_equal(exp.dq, d)
    assert exp.meta["mjd"] == pytest.approx(expstart + effexptm / 2 / 86400, abs=1e-9)
    assert exp.meta["subarray"] == "SLITLESSPRISM" and exp.meta["nints"] == 4
    # the scatter between its 4 integrations, per pixel; this file's ERR states ~2x the scatter
    # between integrations (median 0.16 against chi2(3)/3's 0.79): detect calibrates it per exposure
    q = exp.intscat.astype(float)
    assert exp.intscat.shape == (416, 72) and np.isfinite(q).sum() > 20000
    assert 0.1 < np.nanmedian(q) < 0.25


def test_real_raw_ramp_is_rejected_as_raw(ramp_real):
    with pytest.raises(Rejected, match="raw ramp"):
        read_product(str(ramp_real), PROFILE)


# --------------------------------------------------------------------------- properties

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as hs  # noqa: E402


@given(x0=hs.integers(0, 1031), y0=hs.integers(0, 1023), w=hs.integers(1, 1032), h=hs.integers(1, 1024))
@settings(max_examples=200, deadline=None)
def test_placement_is_substrt_minus_one_or_rejected(x0, y0, w, h):
    hd = hdr(SUBSTRT1=x0 + 1, SUBSTRT2=y0 + 1, SUBSIZE1=w, SUBSIZE2=h)
    inside = y0 + h <= 1024 and x0 + w <= 1032
    if inside:
        assert placement(hd, (h, w), FRAME) == (y0, x0)
    else:
        with pytest.raises(Rejected):
            placement(hd, (h, w), FRAME)


@given(vals=hs.lists(hs.floats(-1e4, 1e4, allow_nan=False), min_size=1, max_size=8),
       errs=hs.lists(hs.floats(0.01, 100), min_size=8, max_size=8))
@settings(max_examples=200, deadline=None)
def test_combined_slope_lies_within_the_kept_integrations(vals, errs):
    n = len(vals)
    sci = np.array(vals, float).reshape(n, 1, 1)
    err = np.array(errs[:n], float).reshape(n, 1, 1)
    s, e, d = combine_integrations(sci, err, np.zeros((n, 1, 1), np.uint32))
    assert min(vals) - 1e-3 <= s[0, 0] <= max(vals) + 1e-3
    # the combined error never exceeds the largest single-integration error
    assert e[0, 0] <= err.max() * (1 + 1e-6)
    assert d[0, 0] == 0
