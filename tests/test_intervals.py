"""The intervals contract (lrscube/intervals.py): start <= t < end, a NaN end is open."""

import numpy as np

from lrscube.intervals import active, bounds


def test_an_interval_covers_its_start_but_not_its_end():
    start, end = np.array([10.0, np.nan, 10.0]), np.array([20.0, 15.0, np.nan])
    t = np.array([5.0, 10.0, 19.99, 20.0, 1e6])
    assert active(start, end, t).tolist() == [
        [False, True, True, False, False],
        [True, True, False, False, False],   # NaN start: since before the first exposure
        [False, True, True, True, True],     # NaN end: still bad
    ]
    assert active(start, end, 20.0).tolist() == [False, False, True]
    assert active(10.0, np.nan, t).tolist() == [False, True, True, True, True]


def test_bounds_open_ends_are_infinite():
    lo, hi = bounds([np.nan, 1.0], [2.0, np.nan])
    assert lo.tolist() == [-np.inf, 1.0] and hi.tolist() == [2.0, np.inf]
