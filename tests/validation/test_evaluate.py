"""Evaluation numerics, and the quality of detect on a simulated subarray-only set."""

import numpy as np
import pandas as pd
import pytest

from lrscube.detection.detection_params import DetectionParams
from lrscube.validation.evaluate import detectable, detectable_span, format_report, selfcal_flags


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


def _hand_made(n=20, ny=10, nx=10):
    """A tiny noiseless cube (sky 1 DN/s, ERR 0.1) whose right answers are known, with a truth of
    four behaviours, detected intervals and look-alikes."""
    import xarray as xr

    mjd = 60000.0 + np.arange(n)
    ds = xr.Dataset({"sci": (("time", "y", "x"), np.ones((n, ny, nx), "f4")),
                     "err": (("time", "y", "x"), np.full((n, ny, nx), 0.1, "f4")),
                     "dq": (("time", "y", "x"), np.zeros((n, ny, nx), "u4"))},
                    coords={"mjd": ("time", mjd), "y": 100 + np.arange(ny), "x": 300 + np.arange(nx)})
    t = lambda i: 60000.0 + i - 0.5  # noqa: E731 - a boundary between exposures i-1 and i
    truth = pd.DataFrame([
        dict(y=102, x=303, flag="HOT", start_mjd=t(5), end_mjd=np.nan, amplitude=1.0, behaviour="step", high_mjd=None),
        dict(y=104, x=304, flag="WARM", start_mjd=t(5), end_mjd=np.nan, amplitude=0.01, behaviour="weak_warm",
             high_mjd=None),
        dict(y=106, x=306, flag="OTHER_BAD_PIXEL", start_mjd=t(10), end_mjd=np.nan, amplitude=0.3,
             behaviour="noisy", high_mjd=" ".join(str(v) for v in mjd[10:])),
        dict(y=108, x=308, flag="TELEGRAPH", start_mjd=t(10), end_mjd=np.nan, amplitude=1.0, behaviour="rts_inter",
             high_mjd=" ".join(str(v) for v in mjd[[12, 13, 17]])),
    ])
    truth["static"] = False
    iv = pd.DataFrame([
        dict(y=102, x=303, flag="HOT", start_mjd=t(6), end_mjd=np.nan, carried=False),      # one exposure late
        dict(y=106, x=306, flag="TELEGRAPH", start_mjd=t(10), end_mjd=np.nan, carried=False),
        dict(y=100, x=300, flag="WARM", start_mjd=t(0), end_mjd=np.nan, carried=False),     # a normal pixel
    ])
    look = pd.DataFrame([dict(y=101, x=301, mjd=mjd[3], behaviour="cosmic_ray"),
                         dict(y=100, x=300, mjd=mjd[5], behaviour="cosmic_ray"),
                         dict(y=102, x=303, mjd=mjd[10], behaviour="cosmic_ray"),   # bad in the truth: left out
                         dict(y=105, x=305, mjd=mjd[7], behaviour="persistence")])
    return ds, iv, truth, look


def test_per_behaviour_normal_pixel_and_lookalike_figures_on_a_hand_made_case():
    from lrscube.validation.evaluate import evaluate_arrays

    ds, iv, truth, look = _hand_made()
    res = evaluate_arrays(ds, iv, truth, "lrs", baselines=False, lookalikes=look)
    pb = res["per_behaviour"]
    # step: 15 bad exposures, flagged from the 2nd: recall 14/15, found, onset +1
    assert pb["step"]["detectable"] == 1 and pb["step"]["recall"] == pytest.approx(14 / 15)
    assert pb["step"]["recall_new_defects"] == 1.0 and pb["step"]["onset_error_exposures"]["median"] == 1
    # 0.01 DN/s at ERR 0.1 over 15 exposures: 0.39 sigma stacked, not detectable
    assert pb["weak_warm"]["detectable"] == 0 and np.isnan(pb["weak_warm"]["recall"])
    # noisy: 3 sigma rms over 10 exposures: excess variance 90 / sqrt(20) = 20 sigma; found at once
    assert pb["noisy"]["evidence"] == "noise" and pb["noisy"]["detectable"] == 1
    assert pb["noisy"]["recall"] == 1.0 and pb["noisy"]["onset_error_exposures"]["median"] == 0
    # telegraph: span 12..17 (6 exposures), 3 high at 10 sigma clipped to 6: 18 / sqrt(6) = 7.3; missed
    assert pb["rts_inter"]["detectable"] == 1 and pb["rts_inter"]["recall"] == 0.0
    assert pb["rts_inter"]["recall_new_defects"] == 0.0
    assert res["recall_new_defects"] == pytest.approx(2 / 3)
    assert res["lrscube"]["recall"] == pytest.approx((14 + 10) / (15 + 10 + 6))
    assert res["lrscube"]["precision"] == pytest.approx((14 + 10) / (14 + 10 + 20))
    # normal pixels: 100 - 4 with truth rows; one flagged in all of its 20 exposures
    npx = res["normal_pixels"]
    assert (npx["pixels"], npx["flagged_pixels"]) == (96, 1)
    assert (npx["pixel_exposures"], npx["flagged_pixel_exposures"]) == (96 * 20, 20)
    assert npx["fraction_pixels"] == pytest.approx(1 / 96)
    # look-alikes: the hit on the flagged normal pixel counts, the one on a bad pixel does not
    assert res["lookalikes"]["cosmic_ray"] == {"pixel_exposures": 2, "flagged": 1, "rate": 0.5}
    assert res["lookalikes"]["persistence"]["rate"] == 0.0
    # the change's own evidence, against the pixel's other exposures: the step 23.2 sigma stacked
    # over 15 exposures with 5 before it, 11.6; the noisy pixel 20 with 10 of 20 good, 14.1; the
    # telegraph 7.3 over its 6-exposure span with 14 others, 6.1: below the 6.3-sigma threshold
    own = res["new_defects_by_own_evidence"]
    below, at, above = own["all"]
    assert below.startswith("below 6.3") and above.startswith("above 8.6")
    assert own["all"][below] == {"detectable": 1, "found": 0} and own["TELEGRAPH"][below]["detectable"] == 1
    assert own["all"][at] == {"detectable": 0, "found": 0}
    assert own["all"][above] == {"detectable": 2, "found": 2} and own["HOT"][above] == {"detectable": 1, "found": 1}
    text = format_report(res)
    assert "per behaviour" in text and "rts_inter" in text and "normal pixels flagged: 1 of 96" in text
    assert f"{below} 0/1" in text


def test_noisy_detectability_is_its_excess_variance():
    truth = pd.DataFrame({"flag": ["OTHER_BAD_PIXEL"] * 3, "amplitude": [0.1, 0.1, 0.3],
                          "behaviour": ["noisy"] * 3})
    n = 12
    seen = np.ones((n, 3), bool)
    bad = np.ones((n, 3), bool)
    bad[:, 1] = False
    bad[:2, 1] = True  # 2 exposures only
    err = np.full((n, 3), 0.1)
    ok, sig = detectable(truth, seen, bad, err, np.ones((n, 3)), min_snr=5.0)
    # 1 sigma rms: 12 / sqrt(24) = 2.4 < 5; 2 exposures < 3; 3 sigma rms: 108 / sqrt(24) = 22
    assert ok.tolist() == [False, False, True]
    assert sig[0] == pytest.approx(12 / np.sqrt(24)) and sig[2] == pytest.approx(108 / np.sqrt(24))


def test_old_truth_tables_without_behaviour_still_read(tmp_path):
    from lrscube.validation.evaluate import evaluate_arrays, read_truth

    ds, iv, truth, _ = _hand_made()
    old = truth.drop(columns=["behaviour", "high_mjd"])
    old["cluster_id"] = -1
    old.to_csv(tmp_path / "truth.csv", index=False)
    back = read_truth(tmp_path / "truth.csv")
    assert back.behaviour.tolist() == ["step", "step", "step", "telegraph"] and back.high_mjd.isna().all()
    res = evaluate_arrays(ds, iv, back, "lrs", baselines=False)
    assert not res["telegraph_states_known"] and res["lookalikes"] == {}
    assert set(res["per_behaviour"]) == {"step", "telegraph"}


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """60 SLITLESSPRISM exposures over ~2.5 years, defect rate raised so that ~200 new defects land
    in the 72 x 416 footprint; simulated, ingested and detected once for the module."""
    sim = pytest.importorskip("lrscube.validation.simulate")
    from lrscube.detection.detect import detect
    from lrscube.validation.evaluate import evaluate
    from lrscube.intake.ingest import ingest

    out = tmp_path_factory.mktemp("sim")
    # the default scenario: a real-looking detector (each pixel its own response, ~2 % rms, on a
    # large-scale pattern), every behaviour of the zoo and the look-alikes
    sc = sim.load_scenario()
    sc["new"]["events_per_megapixel_per_year"] = 4000
    sim.simulate(out / "rate", n=60, seed=7, full_frame=False, scenario=sc)
    store = str(out / "store")
    ingest([str(out / "rate")], store, progress=False)
    iv = detect(store, progress=False)
    # issue 3's goal was set with detectability relative to the detection threshold (+2.33 sigma)
    res = evaluate(store, str(out / "rate" / "truth" / "truth.csv"), min_snr=None)
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
def test_simulated_quality_on_a_real_looking_detector(simulated):
    """Quality on the subarray set of the default scenario (each pixel its own response, the
    behaviour zoo, the look-alikes), detectability relative to the detection threshold. Measured
    (benchmarks/README.md): precision 0.994, recall 0.887, new-defect recall 0.925 (199
    detectable), onset error median 0 and 90th percentile 1; normal pixels flagged 4 of 27,981;
    latents (persistence) 0.17 % of their pixel-exposures flagged (1.2 % before the image rule). The goals of issues 14/15 (precision >= 0.998,
    new-defect recall >= 0.98) are not met yet: these bounds hold what is reached."""
    iv, res = simulated
    assert res["telegraph_states_known"]
    assert res["new_defects_detectable"] >= 150
    assert res["lrscube"]["precision"] >= 0.98
    assert res["lrscube"]["recall"] >= 0.78
    assert res["recall_new_defects"] >= 0.88
    # noisy pixels (a normal mean, scatter several times the noise): the weighted excess-variance
    # screen finds them with their onset (measured 0.885 of 26, onset median 0)
    noisy = res["per_behaviour"]["noisy"]
    assert noisy["recall_new_defects"] >= 0.8
    assert noisy["onset_error_exposures"]["median"] == 0
    assert res["onset_error_exposures"]["median"] == 0
    assert res["onset_error_exposures"]["p90_abs"] <= 3
    assert res["recall_per_class"]["DEAD"]["recall"] >= 0.99
    assert res["recall_per_class"]["HOT"]["recall"] >= 0.9
    # a pixel's own response is not a defect: normal pixels are (nearly) never flagged
    assert res["normal_pixels"]["fraction_pixels"] <= 0.0005  # issue 14's goal: 0.05 %
    for k in ("cosmic_ray", "row_offsets", "column_offsets", "source_trace", "shower", "sky_step"):
        if k in res["lookalikes"]:
            assert res["lookalikes"][k]["rate"] <= 0.002, k
    # a latent image of a bright source seen before a visit is not a defect (afterglow.latent_images)
    assert res["lookalikes"]["persistence"]["rate"] <= 0.005
    # the baselines are scored in the same run and do worse
    assert res["baseline_selfcal"]["recall"] < res["lrscube"]["recall"]
    assert res["baseline_selfcal"]["precision"] < res["lrscube"]["precision"]
    assert res["baseline_static"]["recall"] < 0.1
