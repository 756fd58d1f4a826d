"""Defect classes: the registry and its tests."""

import pandas as pd
import pytest

from lrscube.detection import classify


def ev(**kw):
    base = {"sign": 1, "n": 20, "excess_dn_s": 0.1, "excess_err": 0.01, "deficit": 0.0, "deficit_err": 0.01,
            "chi2_add": 20.0, "chi2_mult": 20.0, "variance_ratio": 1.0, "frac_high": 0.0, "frac_low": 1.0,
            "high_level_dn_s": 0.1}
    base.update(kw)
    return base


def test_registry_has_the_classes_in_order():
    names = [t.name for t in classify.ordered()]
    assert names[0] == "TELEGRAPH" and names[-1] == "OTHER_BAD_PIXEL"
    assert set(names) == {"HOT", "WARM", "DEAD", "LOW_QE", "TELEGRAPH", "OTHER_BAD_PIXEL"}
    for t in classify.ordered():
        assert t.description and t.func.__doc__


def test_physical_classes():
    df = pd.DataFrame([
        ev(excess_dn_s=5.0, chi2_mult=900),                                    # HOT
        ev(excess_dn_s=0.05, chi2_mult=60),                                    # WARM
        ev(sign=-1, excess_dn_s=-3, deficit=0.97, chi2_add=800, chi2_mult=15),  # DEAD
        ev(sign=-1, excess_dn_s=-1, deficit=0.4, chi2_add=300, chi2_mult=18),   # LOW_QE
        ev(excess_dn_s=1.0, variance_ratio=30, frac_high=0.5, frac_low=0.5),     # TELEGRAPH
        ev(sign=-1, excess_dn_s=-1, deficit=0.4, chi2_add=15, chi2_mult=300),   # deficit not ~ sky
    ])
    assert classify.classify(df).tolist() == ["HOT", "WARM", "DEAD", "LOW_QE", "TELEGRAPH", "OTHER_BAD_PIXEL"]


def test_thresholds_from_parameters():
    df = pd.DataFrame([ev(excess_dn_s=0.5)])
    assert classify.classify(df).iloc[0] == "WARM"
    assert classify.classify(df, {"HOT": {"threshold_dn_s": 0.3}}).iloc[0] == "HOT"


def test_unknown_parameters_rejected():
    with pytest.raises(ValueError, match="unknown parameter"):
        classify.class_parameters({"HOT": {"threshold": 1}})
    with pytest.raises(ValueError, match="unknown class"):
        classify.class_parameters({"SPARKLY": {}})


def test_floors():
    df = pd.DataFrame([ev(sign=-1, deficit=0.05), ev(sign=-1, deficit=0.3), ev(excess_dn_s=0.01)])
    assert classify.passes_floors(df).tolist() == [False, True, True]


def test_noisy_and_static_intervals_pass_the_floors_on_their_own_limits():
    # a span of excess scatter whose mean stays at the baseline, and a normal state beyond a
    # physical limit, were judged against their own limits (noisy_rms_ratio, low_qe_response /
    # static_excess_dn_s) before they reach the floors; a small change of response was not
    df = pd.DataFrame([
        ev(sign=-1, deficit=0.05, noisy=True, static=False),
        ev(sign=1, excess_dn_s=-0.001, noisy=False, static=True),
        ev(sign=-1, deficit=0.05, noisy=False, static=False),
    ])
    assert classify.passes_floors(df).tolist() == [True, True, False]
    noisy = pd.DataFrame([ev(excess_dn_s=0.0, noisy=True, frac_high=0.05, frac_low=0.9, excess_rms_dn_s=0.4)])
    cls = classify.classify(noisy)
    assert cls.iloc[0] == "TELEGRAPH"
    assert classify.amplitude(noisy, cls)[0] == 0.4  # the rms of its excess scatter
