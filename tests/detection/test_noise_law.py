"""The noise's law measured on the data, each side apart: Gaussian noise judged as before, heavy
tails by their tail probabilities (lrscube.detection.noise_law)."""

import numpy as np
import pytest
from scipy import special

from lrscube.detection import noise_law


def test_gaussian_residuals_keep_the_gaussian_law_and_are_left_as_they_are():
    x = np.random.default_rng(0).standard_normal((100, 5000))
    law = noise_law.measure(x)
    assert law.gaussian
    for side in law:
        assert side.ratio == pytest.approx(special.ndtri(0.995) / special.ndtri(0.95), abs=0.02)
    assert noise_law.gaussianise(x, law) is x


def test_student_t_residuals_are_heavier_and_gaussianised_to_gaussian_tails():
    rng = np.random.default_rng(1)
    x = rng.standard_t(3, (100, 5000)) / np.sqrt(3.0)
    law = noise_law.measure(x)
    assert not law.gaussian
    for side in law:
        assert 2.5 < side.dof < 3.5  # the percentiles of a t with 3 degrees of freedom
    g = noise_law.gaussianise(x, law)
    # Gaussian tails after the map: the fraction beyond 2 and 3 sigma as a Gaussian's, beyond 4
    # (~30 of the 500,000 values) within a factor 2 of it
    for b in (2.0, 3.0):
        assert np.mean(np.abs(g) > b) == pytest.approx(2 * special.ndtr(-b), rel=0.15)
    assert 0.5 < np.mean(np.abs(g) > 4.0) / (2 * special.ndtr(-4.0)) < 2.0
    assert np.mean(np.abs(x) > 4.0) > 5 * 2 * special.ndtr(-4.0)  # as the raw values are not
    order = np.argsort(x.ravel()[:1000])
    assert np.all(np.diff(g.ravel()[:1000][order]) >= 0)  # monotone: a larger residual stays larger
    assert np.array_equal(np.sign(g), np.sign(x))


def test_defects_among_gaussian_pixels_do_not_make_the_law_heavy():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((80, 20000))
    x[40:, :400] += 20.0  # 2 % of the pixels hot from half-way: their values are not the noise
    x[rng.random(x.shape) < 5e-4] += 30.0  # cosmic rays: single values
    assert noise_law.measure(x).gaussian


def test_nan_and_unused_values_are_left_out_and_nan_stays_nan():
    rng = np.random.default_rng(3)
    x = rng.standard_t(3, (60, 4000)) / np.sqrt(3.0)
    use = rng.random(x.shape) > 0.3
    law = noise_law.measure(np.where(use, x, np.nan))
    assert law == noise_law.measure(x, use)
    g = noise_law.gaussianise(np.array([np.nan, 0.0, -2.0, 2.0]), law)
    assert np.isnan(g[0]) and g[1] == 0 and g[3] > 0
    assert g[2] == pytest.approx(-g[3], rel=0.02)  # each side its own fit of the same law


def test_hits_that_only_raise_make_the_upper_side_heavy_and_leave_the_lower_as_it_is():
    # hits below the jump step's threshold: 1 % of the values raised by an exponential of mean 5
    rng = np.random.default_rng(5)
    x = rng.standard_normal((100, 5000))
    x += (rng.random(x.shape) < 0.01) * rng.exponential(5.0, x.shape)
    law = noise_law.measure(x)
    assert not law.upper.gaussian and law.lower.gaussian
    assert law.upper.ratio > noise_law.HEAVY_TAIL_FACTOR * noise_law.GAUSSIAN_INPUT_TAIL > law.lower.ratio
    g = noise_law.gaussianise(x, law)
    low = x < 0
    assert np.array_equal(g[low], x[low])  # the Gaussian side as it is
    # the upper side's core as a Gaussian's; its far tail, which the hits make 10,000 times the
    # Gaussian's beyond 5, brought within a factor 100 of it (a Student t of two percentiles does
    # not follow a mixture's shape further)
    assert np.mean(g > 2.0) == pytest.approx(special.ndtr(-2.0), rel=0.25)
    assert np.mean(x > 5.0) > 1e4 * special.ndtr(-5.0)
    assert np.mean(g > 5.0) < 1e2 * special.ndtr(-5.0)


def test_too_few_values_are_taken_as_gaussian():
    assert noise_law.measure(np.random.default_rng(4).standard_t(2, (10, 50))).gaussian


def test_the_line_on_a_run_names_the_heavier_side_and_reads_a_summary_without_sides():
    summary = {"tiles": 4, "tail_ratio_gaussian_input": 1.64, "tail_ratio_max": 2.3, "tiles_heavier_than_gaussian": 3,
               "student_t_dof_min": 3.4,
               "upper": {"tail_ratio_max": 2.3, "tiles_heavier_than_gaussian": 3, "student_t_dof_min": 3.4},
               "lower": {"tail_ratio_max": 1.65, "tiles_heavier_than_gaussian": 0, "student_t_dof_min": None}}
    line = noise_law.describe(summary)
    assert line.startswith("noise: tails heavier than Gaussian noise gives in 3 of 4 tiles (the upper side in 3; ")
    assert "lower side" not in line and "2.30 against 1.64" in line and "3.4 degrees" in line
    # a detect.json written before the sides were measured apart
    old = {k: v for k, v in summary.items() if k not in ("upper", "lower")}
    assert noise_law.describe(old).startswith("noise: tails heavier than Gaussian noise gives in 3 of 4 tiles (tail ratio")
    assert noise_law.describe({**summary, "tiles_heavier_than_gaussian": 0}) is None
