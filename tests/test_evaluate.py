"""Evaluation numerics, and the quality of detect on a simulated subarray-only set."""

import numpy as np
import pandas as pd
import pytest

from lrscube.detection_params import DetectionParams
from lrscube.evaluate import detectable, detectable_span, format_report, selfcal_flags


def test_selfcal_flags_tails_per_exposure():
    rng = np.random.default_rng(0)
    img = (3 + rng.normal(0, 0.1, (200, 50))).astype("f4")
    img[100, 20] += 10
    f = selfcal_flags(img, kernel=15, tail=0.001)
    assert f[100, 20]
    assert 0.0015 < f.mean() < 0.003  # 0.1 % at each tail


def test_detectable_criterion():
    p = DetectionParams()
    truth = pd.DataFrame({"flag": ["WARM", "WARM", "HOT", "LOW_QE", "LOW_QE"],
                          "amplitude": [0.05, 0.5, 10.0, 0.5, 0.05]})
    n = 100
    seen = np.ones((n, 5), bool)
    bad = np.zeros((n, 5), bool)
    bad[50:] = True
    bad[:98, 2] = False  # hot for only 2 exposures: a single-exposure-like event
    err = np.full((n, 5), 0.1)
    sky = np.full((n, 5), 1.0)
    ok, snr = detectable(truth, seen, bad, err, sky, p, threshold=6.4)
    # 0.5 sigma x sqrt(50) = 3.5 < 8.7; 5 sigma x sqrt(50) = 35; 2 exposures < 3;
    # 0.5 deficit x 1 DN/s / 0.1 -> clipped 5 sigma; deficit 0.05 below LOW_QE min_deficit
    assert ok.tolist() == [False, True, False, True, False]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """60 SLITLESSPRISM exposures over ~2.5 years, defect rate raised so that ~200 new defects land
    in the 72 x 416 footprint; simulated, ingested and detected once for the module."""
    sim = pytest.importorskip("lrscube.simulate")
    from lrscube.detect import detect
    from lrscube.evaluate import evaluate
    from lrscube.ingest import ingest

    out = tmp_path_factory.mktemp("sim")
    sim.simulate(out / "rate", n=60, seed=7, full_frame=False,
                 scenario={"new": {"events_per_megapixel_per_year": 4000}})
    store = str(out / "store")
    ingest([str(out / "rate")], store, progress=False)
    iv = detect(store, progress=False)
    res = evaluate(store, str(out / "rate" / "truth" / "truth.csv"))
    print(format_report(res))
    return iv, res


def test_telegraph_detectable_span_starts_at_the_first_high_state():
    n = 20
    bad = np.zeros((n, 2), bool)
    bad[5:, :] = True
    seen = np.ones((n, 2), bool)
    high = np.zeros((n, 2), bool)
    high[[9, 10, 14], 0] = True  # quiet at 5-8 and after 14: invisible
    span = detectable_span(bad, seen, high, np.array([True, False]))
    assert np.flatnonzero(span[:, 0]).tolist() == list(range(9, 15))
    assert span[:, 1].tolist() == bad[:, 1].tolist()  # other classes: the whole interval


@pytest.mark.slow
def test_simulated_quality_goal_of_issue_3(simulated):
    """The issue's quality goal on the subarray set (docs/detection.md, "Measured quality": all
    four goals are met here, recall 0.9913, and on the full-size set)."""
    iv, res = simulated
    assert res["telegraph_states_known"]
    assert res["new_defects_detectable"] >= 150
    assert res["lrscube"]["precision"] >= 0.995
    assert res["recall_new_defects"] >= 0.98
    assert res["onset_error_exposures"]["median"] == 0
    assert res["onset_error_exposures"]["p90_abs"] <= 1
    # recall of detectable pixel-exposures >= 0.99 (0.9913 here); per class, the achieved level
    assert res["lrscube"]["recall"] >= 0.99
    for cls in ("HOT", "DEAD", "LOW_QE"):
        assert res["recall_per_class"][cls]["recall"] >= 0.99
    assert res["recall_per_class"]["WARM"]["recall"] >= 0.97
    assert res["recall_per_class"]["TELEGRAPH"]["recall"] >= 0.93
    # the baselines are scored in the same run and do worse
    assert res["baseline_selfcal"]["recall"] < res["lrscube"]["recall"]
    assert res["baseline_selfcal"]["precision"] < res["lrscube"]["precision"]
    assert res["baseline_static"]["recall"] < 0.1
