"""A pixel beside a found defect, tested over that defect's exposures (lrscube.detection.companions)."""

import numpy as np

from lrscube.config import profiles
from lrscube.detection import companions
from lrscube.detection.detect import TileContext, analyse_tile
from lrscube.detection.detection_params import DetectionParams, static_alpha
from lrscube.detection.states import companion_interval


def _defect(y, x, flag="WARM", first=20, last=44, amplitude=0.3, **kw):
    return {"y": y, "x": x, "flag": flag, "first": first, "last": last, "amplitude": amplitude, "hours": 100.0,
            "static": False, "noisy": False, "switching": False, **kw}


def test_tests_are_the_neighbours_inside_the_group_without_an_interval_of_their_own_over_those_exposures():
    column = np.arange(5 * 4).reshape(5, 4)
    column[0, 0] = -1  # not in the group (another footprint)
    spans = {(1, 2): [(30, 50)],  # its own interval over the defect's exposures: not tested
             (2, 2): [(0, 10)]}  # one elsewhere: tested
    got = companions.to_test([_defect(1, 1)], column, spans, (5, 4), (100, 200))
    assert sorted((int(t.j) // 4, int(t.j) % 4) for t in got) == [(0, 1), (0, 2), (1, 0), (2, 0), (2, 1), (2, 2)]
    assert all(t.sign == 1 and (t.first, t.last) == (20, 44) and t.beside == (101, 201) for t in got)
    # a corner of the tile: three neighbours; a loss of response is tested as one
    got = companions.to_test([_defect(4, 3, flag="LOW_QE", amplitude=0.4)], column, {}, (5, 4), (0, 0))
    assert sorted(int(t.j) for t in got) == [14, 15, 18] and {t.sign for t in got} == {-1}


def test_states_bad_throughout_telegraphs_and_scatter_are_not_shared_and_a_pixel_is_tested_once():
    column = np.arange(9).reshape(3, 3)
    for kw in ({"static": True}, {"noisy": True}, {"switching": True}, {"flag": "TELEGRAPH"},
               {"flag": "OTHER_BAD_PIXEL"}, {"hours": 5.0}):  # the last: within a hit's afterglow
        assert companions.to_test([_defect(1, 1, **kw)], column, {}, (3, 3), (0, 0), 6.0) == []
    assert len(companions.to_test([_defect(1, 1, hours=7.0)], column, {}, (3, 3), (0, 0), 6.0)) == 8
    # two defects side by side over the same exposures: their common neighbours once, against the larger
    got = companions.to_test([_defect(1, 0, amplitude=0.2), _defect(1, 1, amplitude=0.5)], column,
                           {(1, 0): [(20, 44)], (1, 1): [(20, 44)]}, (3, 3), (0, 0))
    js = [int(t.j) for t in got]
    assert sorted(js) == [0, 1, 2, 5, 6, 7, 8] and len(js) == len(set(js))
    assert {t.amplitude for t in got if t.j in (0, 6)} == {0.5}
    assert {t.amplitude for t in got if t.j in (2, 5, 8)} == {0.5}


def test_threshold_spends_the_groups_false_alarm_rate_on_its_tests():
    static = 5.6  # one-sided, over two tests: alpha = 2 sf(5.6) per pixel
    few, many = companions.threshold(static, 30000, 8, 0.0), companions.threshold(static, 30000, 3000, 0.0)
    assert few < many < companions.threshold(static, 30000, 30000, 0.0)
    # every pixel tested: the per-pixel rate itself
    assert abs(companions.threshold(static, 100, 100, 0.0) - 5.4786) < 1e-3
    assert companions.threshold(static, 30000, 1, 4.0) == 4.0  # never below the floor



def test_static_alpha_is_the_per_pixel_rate_the_thresholds_were_made_from():
    p = DetectionParams(false_alarm_pixels=0.1)
    th = p.thresholds(1_000_000, 150)
    assert abs(static_alpha(th.static) / (0.1 / 3 / 1_000_000) - 1) < 1e-6


def test_coupling_of_a_few_percent_or_another_kind_of_change_is_not_sharing_it():
    t = companions.Neighbour(0, 20, 44, 1, 2.5, (0, 0))
    assert not companions.shares_change({"excess_dn_s": 0.05, "deficit": np.nan}, "WARM", t, 0.1)  # 2 %
    assert companions.shares_change({"excess_dn_s": 0.5, "deficit": np.nan}, "WARM", t, 0.1)
    assert not companions.shares_change({"excess_dn_s": 0.5, "deficit": np.nan}, "OTHER_BAD_PIXEL", t, 0.1)
    t = companions.Neighbour(0, 20, 44, -1, 0.8, (0, 0))
    assert not companions.shares_change({"excess_dn_s": np.nan, "deficit": np.nan}, "LOW_QE", t, 0.1)
    assert companions.shares_change({"excess_dn_s": -0.1, "deficit": 0.3}, "LOW_QE", t, 0.1)
    assert not companions.shares_change({"excess_dn_s": -0.1, "deficit": 0.3}, "WARM", t, 0.1)


def _series(rng, n=60, s=0.05):
    sky = 4.0 * rng.uniform(1.0, 5.0, n)
    return sky, np.full(n, s)


def test_companion_interval_finds_a_weak_excess_over_the_given_exposures_and_its_sign():
    rng = np.random.default_rng(3)
    p = DetectionParams()
    sky, s = _series(rng)
    r = 0.02 * sky + rng.normal(0, 0.05, sky.size)  # its own response, 2 % off its neighbours
    r[20:45] += 0.06  # 1.2 sigma per exposure, 6 sigma over the 25
    row = companion_interval(r, s, sky, p, 20, 45, +1, 4.0)
    assert row is not None and row["sign"] == 1 and (row["start"], row["stop"]) == (20, 45)
    assert 4.0 <= row["significance"] and abs(row["excess_dn_s"] - 0.06) < 0.03
    assert companion_interval(r, s, sky, p, 20, 45, -1, 4.0) is None  # not a loss of response
    assert companion_interval(r, s, sky, p, 0, 20, +1, 4.0) is None  # nor an excess before it


def test_companion_interval_judges_against_the_normal_state_not_the_pixels_own_other_defect():
    """A pixel dead from exposure 45: against a baseline that holds its dead exposures the normal
    ones before look like an excess; left out, they do not."""
    rng = np.random.default_rng(5)
    p = DetectionParams()
    sky, s = _series(rng)
    r = 0.01 * sky + rng.normal(0, 0.05, sky.size)
    r[45:] -= 0.95 * sky[45:]
    dead = np.zeros(sky.size, bool)
    dead[45:] = True
    assert companion_interval(r, s, sky, p, 20, 40, +1, 4.0) is not None
    assert companion_interval(r, s, sky, p, 20, 40, +1, 4.0, exclude=dead) is None


def test_companion_interval_false_alarms_and_a_single_exposure_far_beyond_its_noise():
    rng = np.random.default_rng(4)
    p = DetectionParams()
    sky, s = _series(rng)
    hits = 0
    for _ in range(2000):
        r = rng.normal(0, 0.05, sky.size)
        hits += companion_interval(r, s, sky, p, 40, 57, +1, 3.0) is not None
    assert hits <= 8  # sf(3) = 0.00135: 2.7 expected
    r = rng.normal(0, 0.05, sky.size)
    r[45] += 50 * 0.05  # one exposure far beyond the noise (what the single-exposure screen left in)
    assert companion_interval(r, s, sky, p, 40, 57, +1, 4.0) is None


def _tile(rng, n=60):
    lvl = rng.uniform(1.0, 5.0, n)[:, None, None]
    sci = (4 * lvl + rng.normal(0, 0.05, (n, 60, 30))).astype("f4")
    return sci, np.full_like(sci, 0.05)


def _ctx(n, **kw):
    t = 60000 + np.arange(n, dtype=float)
    return TileContext(expstart=t - 0.01, mjd=t, params=DetectionParams(**kw), profile=profiles.load("lrs"),
                       threshold=6.5)


def test_a_faint_cluster_member_is_found_with_its_neighbours_interval_a_coupled_neighbour_is_not():
    """A warm pixel (0.4 DN/s from exposure 20 to 44) and its fainter neighbour (0.07 DN/s: about
    5 sigma against its baseline, below the level threshold alone): the neighbour is WARM over
    the same exposures. A hot pixel's neighbour raised by 2 % of its 3.5 DN/s (inter-pixel
    coupling) over its interval, as significant, is not a defect."""
    rng = np.random.default_rng(5)
    n = 60
    sci, err = _tile(rng, n)
    sci[20:45, 30, 12] += 0.4
    sci[20:45, 30, 13] += 0.07
    sci[20:45, 10, 20] += 3.5
    sci[20:45, 10, 21] += 0.07
    dq = np.zeros(sci.shape, "u4")
    without, _ = analyse_tile(sci, err, dq, _ctx(n, companion_test=False))
    assert set(zip(without.y, without.x)) == {(30, 12), (10, 20)}  # the faint ones below the threshold alone
    iv, diag = analyse_tile(sci, err, dq, _ctx(n))
    assert set(zip(iv.y, iv.x)) == {(30, 12), (30, 13), (10, 20)}
    faint = iv[(iv.y == 30) & (iv.x == 13)]
    assert faint.flag.tolist() == ["WARM"]
    assert faint.first_bad_mjd.iloc[0] == 60020 and faint.first_good_mjd.iloc[0] == 60045
    assert "beside it at (y, x) = (30, 12)" in faint.reason.iloc[0]
    # the coupled neighbour is as significant: it is the ratio that leaves it out
    loose, _ = analyse_tile(sci, err, dq, _ctx(n, companion_min_ratio=0.01))
    assert loose[(loose.y == 10) & (loose.x == 21)].flag.tolist() == ["WARM"]


def test_a_pixel_between_two_defects_with_overlapping_intervals_gets_one_interval():
    """Beside two warm pixels whose intervals overlap (exposures 20-44 and 26-44), a faint pixel
    sharing their change is one interval, the longer one's, not two over the same exposures."""
    rng = np.random.default_rng(5)
    n = 60
    sci, err = _tile(rng, n)
    sci[20:45, 30, 12] += 0.4
    sci[26:45, 30, 14] += 0.4
    sci[20:45, 30, 13] += 0.08  # found only beside them
    iv, _ = analyse_tile(sci, err, np.zeros(sci.shape, "u4"), _ctx(n, companion_test=True))
    mid = iv[(iv.y == 30) & (iv.x == 13)]
    assert len(mid) == 1 and mid.first_bad_mjd.iloc[0] == 60020 and mid.first_good_mjd.iloc[0] == 60045
