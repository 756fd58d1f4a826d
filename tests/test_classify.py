"""Defect classes: the registry and its tests."""

import pandas as pd
import pytest

from lrscube import classify


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


def test_static_small_excess_is_flat_field_not_a_defect():
    # bad in every exposure (no onset, no recovery) and 2 % of the sky: the pixel's response (rate
    # files are not flat-fielded) or a static sky-model error, not a defect; with an onset it is
    # one, and so is a static excess of 30 % of the sky or above the HOT threshold
    inf = float("inf")
    df = pd.DataFrame([
        ev(excess_dn_s=0.02, deficit=-0.02, onset_significance=inf, recovery_significance=inf),
        ev(excess_dn_s=0.02, deficit=-0.02, onset_significance=8.0, recovery_significance=inf),
        ev(excess_dn_s=0.3, deficit=-0.3, onset_significance=inf, recovery_significance=inf),
        ev(excess_dn_s=5.0, deficit=-0.05, onset_significance=inf, recovery_significance=inf),
    ])
    assert classify.passes_floors(df).tolist() == [False, True, True, True]
