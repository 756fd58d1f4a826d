"""The MRS through a real store: simulate (MIRIFUSHORT, full frames: the MRS reads nothing else)
-> ingest -> detect on a multi-process cluster -> evaluate. The image slicer's gaps are dark (a
few percent of the slices' light), so detect judges their pixels on their own (unlit), and the
slices' fixed pattern (flat field, fringes, soft edges) is not a defect."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

import lrscube
from lrscube.config import profiles
from lrscube.config.profiles import Box
from lrscube.validation.evaluate import evaluate, format_report
from lrscube.validation.simulate import load_scenario
from lrscube.validation.sim_layouts import illumination

pytestmark = pytest.mark.slow

N = 12


@pytest.fixture(scope="module")
def run(tmp_path_factory, client):
    root = tmp_path_factory.mktemp("mrs")
    # more new defects than the default rate, so that the gaps (~6 % of the pixels) get some
    sc = load_scenario(None, "mrs-short")
    sc["new"]["events_per_megapixel_per_year"] = 2000
    sim = lrscube.simulate(root / "files", n=N, mode="mrs-short", seed=11, scenario=sc)
    store = str(root / "store")
    summary = lrscube.ingest(root / "files", store, mode="mrs-short", progress=False)
    iv = lrscube.detect(store, progress=False)
    rep = evaluate(store, str(root / "files" / "truth" / "truth.csv"))
    print(format_report(rep))
    return dict(sim=sim, summary=summary, iv=iv, rep=rep)


def _gaps(prof):
    """Pixels inside the channels at most 10 % of the brightest light within 7 columns: the gaps."""
    from scipy.ndimage import maximum_filter1d

    ny, nx = prof.frame_shape
    light = illumination(Box(0, ny, 0, nx), prof, load_scenario(None, prof))
    inside = np.zeros(light.shape, bool)
    for name in ("channel_1", "channel_2"):
        inside[prof.regions[name].slices()] = True
    inside[:16] = inside[-16:] = False  # the slices' ends are another geometry
    return inside & (light <= 0.1 * maximum_filter1d(light, 15, axis=1))


def test_the_gaps_are_dark_and_their_pixels_not_flagged(run):
    prof = profiles.load("mrs-short")
    gaps = _gaps(prof)
    assert gaps.sum() > 10_000  # 36 inter-slice gaps of 1-3 columns over ~990 rows (17,022 pixels)
    sci = fits.getdata(run["sim"].files[0], "SCI")
    sci = sci if sci.ndim == 2 else np.nanmean(sci, axis=0)
    lit = np.zeros_like(gaps)
    lit[prof.regions["channel_2"].slices()] = True
    lit &= ~gaps
    assert np.nanmedian(sci[gaps]) < 0.1 * np.nanmedian(sci[lit])
    truth = run["sim"].truth
    iv = run["iv"][~run["iv"]["carried"]]
    bad = set(zip(truth.y, truth.x))
    flagged = set(zip(iv.y, iv.x))
    in_gap = {p for p in flagged if gaps[p]}
    false_in_gap = in_gap - bad
    assert len(false_in_gap) <= 0.0005 * gaps.sum(), sorted(false_in_gap)[:20]
    # defects in the gaps are found: a hot or warm pixel outside the light is judged by its dark
    # level. Measured (2026-12-04): 21 of the 26 seen bad in >= 3 exposures; the misses are two
    # clusters of adjacent HOT pixels in gaps (3 pixels at 2.8-6.1 DN/s, 2 at 0.4-0.5 DN/s), bad
    # in 7 of the 12 exposures (why is not established). The bound holds what is reached.
    gap_truth = truth[gaps[truth.y, truth.x] & truth.flag.isin(["HOT", "WARM"]) & ~truth.static]
    strong = gap_truth[(gap_truth.amplitude >= 0.2) & (gap_truth.n_exposures >= 3)]
    assert len(strong) >= 5
    found = [(y, x) in flagged for y, x in zip(strong.y, strong.x)]
    assert np.mean(found) >= 0.75, strong.assign(found=found)[["y", "x", "flag", "behaviour", "amplitude", "n_exposures", "found"]]


def test_mrs_quality_through_the_store(run):
    """Ingest took every file; the fixed pattern of the slices is not a defect. Measured
    (2026-12-04, with unlit hot clusters): normal pixels flagged 0.0051 %, precision 0.905,
    new-defect recall 0.658 over 12 exposures with ~5,300 defects (weak WARM 0.007: 12 exposures do not stack
    them); these bounds hold what is reached, the goals of issue 14 are higher."""
    assert len(run["summary"].ingested) == N and not run["summary"].rejected
    rep = run["rep"]
    assert rep["normal_pixels"]["fraction_pixels"] <= 0.0002
    assert rep["lrscube"]["precision"] >= 0.88
    assert rep["recall_new_defects"] >= 0.6
