"""Onset and recovery of one pixel's series."""

import numpy as np

from lrscube.detection.changepoints import best_run, find_runs, merge_close, split_holes


def test_best_run_locates_a_step_exactly():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1, 100)
    z[40:] += 3.0
    i, j, st = best_run(z)
    assert (i, j) == (40, 100) and st > 20


def test_short_defect_in_a_long_series():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1, 120)
    z[34:45] = 6.0  # clipped hot pixel for 11 exposures, recovers
    runs = find_runs(z, min_sigma=4.0)
    assert [(u.start, u.stop) for u in runs] == [(34, 45)]
    assert runs[0].onset_significance > 10 and runs[0].recovery_significance > 10


def test_two_intervals_and_signs():
    rng = np.random.default_rng(2)
    z = rng.normal(0, 1, 150)
    z[20:40] += 4.0
    z[90:130] -= 3.0
    runs = find_runs(z, min_sigma=5.0)
    assert [(u.start, u.stop, u.sign) for u in runs] == [(20, 40, 1), (90, 130, -1)]


def test_bad_from_the_start_has_infinite_onset_significance():
    z = np.r_[np.full(10, 5.0), np.zeros(20)]
    (run,) = find_runs(z, min_sigma=4.0)
    assert run.start == 0 and run.onset_significance == np.inf


def test_noise_gives_no_run_above_a_high_threshold():
    rng = np.random.default_rng(3)
    hits = sum(bool(find_runs(rng.normal(0, 1, 100), min_sigma=5.5)) for _ in range(200))
    assert hits <= 2


def test_merge_close():
    z = np.zeros(60)
    z[10:15] = 6
    z[30:37] = 6
    runs = find_runs(z, min_sigma=4.0)
    assert [(u.start, u.stop) for u in runs] == [(10, 15), (30, 37)]
    assert len(merge_close(runs, z, max_gap=8)) == 2
    merged = merge_close(runs, z, max_gap=15)
    assert [(u.start, u.stop) for u in merged] == [(10, 37)]


def _telegraph_series(seed=5):
    """A pixel normal for 20 exposures, then switching: high (clipped at 6 sigma) for 15,
    then high in a random 60 % of 36 exposures, then high again for 4."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1, 75)
    z[20:35] = 6.0
    mixed = rng.random(36) < 0.6
    z[35:71] = np.where(mixed, 6.0, rng.normal(0, 1, 36))
    z[71:] = 6.0
    return z


def test_a_stretch_of_mixed_high_and_low_states_is_not_a_hole():
    # below the median of a run whose high states are clipped, but 20 sigma above normal: the
    # pixel is still switching there, not back to normal; only its stretches free of high states
    # are holes, and every high state stays in a piece of the run
    z = _telegraph_series()
    high = np.flatnonzero(z == 6.0)
    for pieces in (split_holes([(20, 75)], z, min_sigma=4.0),
                   [(u.start, u.stop) for u in find_runs(z, min_sigma=4.0, boundary_sigma=3.0)]):
        covered = np.zeros(z.size, bool)
        for a, b in pieces:
            covered[a:b] = True
        assert covered[high].all() and not covered[:20].any()


def test_a_stretch_back_at_normal_splits_the_run():
    rng = np.random.default_rng(6)
    z = rng.normal(0, 1, 70)
    z[20:35] = 6.0
    z[45:60] = 6.0  # normal from 35 to 45: a recovery and a re-onset
    assert split_holes([(20, 60)], z, min_sigma=4.0) == [(20, 35), (45, 60)]


def test_weak_defect_still_bad_at_the_end_is_not_cut_by_a_noise_dip():
    # a weak excess (1.5 sigma per exposure) from exposure 30 to the end; the last two exposures
    # dip by noise: the most significant run ends before them, the settled run does not
    z = np.zeros(60)
    z[30:] = 1.5
    z[-2:] = 0.3
    (raw,) = find_runs(z, min_sigma=4.0)
    assert raw.stop == 58
    (run,) = find_runs(z, min_sigma=4.0, boundary_sigma=3.0)
    assert (run.start, run.stop) == (30, 60) and run.recovery_significance == np.inf


def test_a_clear_recovery_is_kept_even_near_the_end():
    z = np.zeros(60)
    z[30:58] = 6.0  # strong defect, recovers 2 exposures before the end
    (run,) = find_runs(z, min_sigma=4.0, boundary_sigma=3.0)
    assert (run.start, run.stop) == (30, 58)


def test_onset_is_not_moved_back_to_the_start_of_the_series():
    # a weak defect (1.2 sigma per exposure) from exposure 8; the 8 exposures before it average
    # 0.5 sigma: not 3 standard errors below the defect's level, but closer to normal than to
    # the defect, so the likelihood onset stays (it used to be extended to the series start)
    z = np.zeros(80)
    z[:8] = 0.5
    z[8:] = 1.2
    (run,) = find_runs(z, min_sigma=4.0, boundary_sigma=3.0)
    assert run.start == 8 and run.stop == 80


def test_an_onset_falls_between_visits_not_inside_one():
    """Ten visits a month apart, three exposures each a few minutes apart. A weak defect (2 sigma
    per exposure) appears between visits 5 and 6; the last exposure of visit 5 happens to lie
    nearer the defect's level (+1.6) than normal. By likelihood alone the onset is that exposure;
    a change between two exposures minutes apart is ~10^4 times less likely than in the month
    before the next visit, so with the exposures' times it is the next visit's first. A strong
    defect that appears inside a visit is dated there all the same. The run's significance (its
    evidence) stays the likelihood's."""
    from lrscube.detection.changepoints import boundary_log_prior

    hours = (24.0 * 30.0 * np.arange(10)[:, None] + np.array([0.0, 0.1, 0.2])[None, :]).ravel()
    lp = boundary_log_prior(hours)
    ones = np.ones(30)
    z = np.r_[np.zeros(18), np.full(12, 2.0)]
    z[17] = 1.6
    kw = dict(min_sigma=4.0, shapes=(ones, ones), cap=np.full(30, 10.0), raw=z)
    (plain,) = find_runs(z, **kw)
    assert plain.start == 17
    (run,) = find_runs(z, log_prior=lp, **kw)
    assert (run.start, run.stop) == (18, 30)
    # the evidence is the likelihood's: the run's significance is that of the likelihood's run,
    # whatever exposure the prior leaves out of it or takes in
    assert run.significance == plain.significance
    strong = np.r_[np.zeros(19), np.full(11, 9.0)]
    (run,) = find_runs(strong, log_prior=lp, **dict(kw, raw=strong))
    assert run.start == 19


def test_a_steady_defect_does_not_recover_and_return_inside_one_visit():
    """Ten visits a month apart, four exposures each minutes apart; a defect at 3 sigma per
    exposure from visit 4 on. Two exposures inside visit 6 dip to normal: 4.2 sigma below the
    defect's level, so by the boundary test alone the pixel recovered and came back within
    minutes. Two changes between exposures minutes apart are ~10^7 times less likely than none:
    with the exposures' times the run is one. The same dip over a whole visit, its changes in
    the months between visits, splits the run."""
    from lrscube.detection.changepoints import boundary_log_prior

    hours = (24.0 * 30.0 * np.arange(10)[:, None] + np.array([0.0, 0.05, 0.1, 0.15])[None, :]).ravel()
    lp = boundary_log_prior(hours)
    n = hours.size
    kw = dict(min_sigma=4.0, boundary_sigma=3.0, shapes=(np.ones(n), np.ones(n)), cap=np.full(n, 10.0))
    inside = np.r_[np.zeros(16), np.full(24, 3.0)]
    inside[25:27] = 0.0
    assert [(r.start, r.stop) for r in find_runs(inside, raw=inside, **kw)] == [(16, 25), (27, 40)]
    assert [(r.start, r.stop) for r in find_runs(inside, raw=inside, log_prior=lp, **kw)] == [(16, 40)]
    whole = np.r_[np.zeros(16), np.full(24, 3.0)]
    whole[28:32] = 0.0
    assert [(r.start, r.stop) for r in find_runs(whole, raw=whole, log_prior=lp, **kw)] == [(16, 28), (32, 40)]


def test_a_steady_run_s_evidence_weighs_each_exposure_by_the_level_it_sees():
    """A constant excess over exposures of very different depths: 2 sigma in the deep ones, 0.2
    in the short ones (ten times the noise). The run's significance is the likelihood ratio's,
    ``sum z mu / sqrt(sum mu^2)`` = sqrt(sum mu^2) for a noise-free series, not the plain mean's
    ``sum z / sqrt(n)``, which the short exposures dilute: 4.9 sigma plain, 6.4 weighed."""
    s = np.tile([1.0, 10.0], 10)  # the noise (DN/s) of each exposure: deep, short, ...
    excess = 1.0 / s  # the shape of an additive level in units of the noise
    z = np.r_[np.zeros(20), 2.0 * excess]
    shapes = (np.r_[np.ones(20), excess], np.r_[np.ones(20), excess])
    kw = dict(min_sigma=4.0, cap=np.full(40, 6.0))
    (run,) = find_runs(z, shapes=shapes, raw=z, **kw)
    assert (run.start, run.stop) == (20, 40)
    plain = z[20:].sum() / np.sqrt(20)  # 4.92
    assert abs(run.significance - np.sqrt(10 * 4.0 + 10 * 0.04)) < 1e-9 and run.significance > plain + 1.4
