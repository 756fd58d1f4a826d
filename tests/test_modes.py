"""Mode profiles: every shipped profile loads, its regions fit the frame, the simulator makes its data,
and ingest accepts a mode's files and rejects other modes' with a reason."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import yaml
from astropy.io import fits
from stdatamodels.jwst.datamodels import CubeModel, ImageModel

import lrscube
from lrscube.storage import cube
from lrscube.config import profiles
from lrscube.detection.detection_params import DetectionParams
from lrscube.intake.products import Rejected, read_product
from lrscube.validation.simulate import load_scenario, simulate

SHIPPED = ["imager", "lrs", "lrs-slit", "lrs-slitless", "mrs-long", "mrs-short"]
#: mode -> (DETECTOR, EXP_TYPEs, file-name tag)
EXPECTED = {
    "lrs-slit": ("MIRIMAGE", {"MIR_LRS-FIXEDSLIT"}, "mirimage"),
    "lrs-slitless": ("MIRIMAGE", {"MIR_LRS-SLITLESS"}, "mirimage"),
    "mrs-short": ("MIRIFUSHORT", {"MIR_MRS"}, "mirifushort"),
    "mrs-long": ("MIRIFULONG", {"MIR_MRS"}, "mirifulong"),
    "imager": ("MIRIMAGE", {"MIR_IMAGE"}, "mirimage"),
}


@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    """Two or three exposures of each non-default mode (imager: enough to see a subarray)."""
    root = tmp_path_factory.mktemp("modes")
    return {m: simulate(root / m, n=3 if m == "imager" else 2, seed=2, mode=m) for m in EXPECTED}


# -- profiles -----------------------------------------------------------------------------------

def test_available_lists_every_shipped_profile():
    assert set(SHIPPED) <= set(profiles.available())
    assert "scenario-default" not in profiles.available()


@pytest.mark.parametrize("name", SHIPPED)
def test_profile_loads_and_validates(name):
    p = profiles.load(name)
    assert p.name == name and p.instrument == "MIRI"
    assert p.frame_shape == (1024, 1032)
    DetectionParams.from_profile(p)
    ny, nx = p.frame_shape
    for rname, b in p.regions.items():
        assert 0 <= b.y0 < b.y1 <= ny and 0 <= b.x0 < b.x1 <= nx, (name, rname, b)
    for x0, x1 in p.reference_columns:
        assert 0 <= x0 < x1 <= nx
    # accepted values are ones the datamodels know
    schema = yaml.safe_load(open(_schema("core.schema.yaml")))
    inst = schema["allOf"][0]["properties"]["meta"]["properties"] if "allOf" in schema else schema["properties"]["meta"]["properties"]
    exp_enum = _enum(inst["exposure"]["properties"]["type"])
    det_enum = _enum(inst["instrument"]["properties"]["detector"])
    sub_enum = _enum(yaml.safe_load(open(_schema("subarray.schema.yaml")))["properties"]["meta"]["properties"]
                     ["subarray"]["properties"]["name"]) | {"FULL"}
    assert set(p.exp_types) <= exp_enum and set(p.detectors) <= det_enum and set(p.subarrays) <= sub_enum


@pytest.mark.parametrize("name", [m for m in SHIPPED if m != "lrs"])
def test_detection_block_is_lrs_as_is(name):
    """The detection parameters are not tuned per mode: any difference must come with a reason here.

    The MRS profiles describe where the light falls: an image slicer's slices with dark gaps
    between them (``unlit_fraction``, ``unlit_min_length_px``: lrscube.residuals.unlit_pixels),
    the narrow ones seeing the slices' wings (``gap_max_width_px``: residuals.gap_pixels);
    LRS and the imager have no dark stripes inside their light. ``sky_end_regions`` names the
    regions of the mode's own layout where a dispersed spectrum ends inside a larger frame (LRS:
    the slitless region and the slit's spectrum in full frames); other layouts have their own
    or none. The imager has no spectra, so no source traces to search (``source_traces``: a
    source there is a compact image, and the trace search found column offsets). An LRS
    spectrum runs at most ~500 rows of a 1024-row frame, so a bump along more of a column is a
    detector pattern (``trace_max_length_px``); an MRS point source's spectrum runs the length of
    the slices, the whole detector along the dispersion, so no length tells the two apart there."""
    mine, lrs = dict(profiles.load(name).detection), dict(profiles.load("lrs").detection)
    regions = profiles.load(name).regions
    assert all(r in regions for r in mine.pop("sky_end_regions", []))
    lrs.pop("sky_end_regions")
    if name.startswith("mrs"):
        assert 0 < mine.pop("unlit_fraction") < 1 and mine.pop("unlit_min_length_px") >= 15
        assert 1 <= mine.pop("gap_max_width_px") <= 5
        assert mine.pop("trace_max_length_px") is None and lrs.pop("trace_max_length_px") >= 500
    if name == "imager":
        assert mine.pop("source_traces") is False
    assert not {"unlit_fraction", "gap_max_width_px", "source_traces"} & set(lrs)
    assert mine == lrs, (f"configs/{name}.yaml's detection: block differs from configs/lrs.yaml's in "
                         f"{sorted(k for k in set(mine) | set(lrs) if mine.get(k) != lrs.get(k))}: copy it "
                         "again, or give the physical reason for the difference in both the profile and this test")
    assert profiles.load(name).do_not_use == profiles.load("lrs").do_not_use


def _schema(name):
    from importlib import resources
    return resources.files("stdatamodels.jwst.datamodels") / "schemas" / name


def _enum(node) -> set:
    out = set(node.get("enum", []))
    for sub in node.get("anyOf", []):
        out |= set(sub.get("enum", []))
    return out


def test_mrs_regions_are_channel_halves_with_a_gap():
    short, long_ = profiles.load("mrs-short"), profiles.load("mrs-long")
    c1, gap, c2 = (short.regions[k] for k in ("channel_1", "inter_channel", "channel_2"))
    assert c1.x1 == gap.x0 and gap.x1 == c2.x0 and c1.x1 < 516 < c2.x1
    c4, gap, c3 = (long_.regions[k] for k in ("channel_4", "inter_channel", "channel_3"))
    assert c4.x1 == gap.x0 and gap.x1 == c3.x0
    assert short.dispersion_axis == long_.dispersion_axis == "y"


def test_layout_errors_name_the_problem():
    bad = {"exposures": {"exp_type": {"FULL": "MIR_IMAGE"}}}
    with pytest.raises(ValueError, match="does not accept"):
        simulate("/nonexistent-never-written", n=1, mode="mrs-short", scenario=bad)
    bad = {"sky": {"components": [{"name": "x", "region": "nowhere", "level_dn_s": 1, "contrast": 1}]}}
    with pytest.raises(ValueError, match="nowhere"):
        simulate("/nonexistent-never-written", n=1, mode="imager", scenario=bad)
    with pytest.raises(ValueError, match="accepts no subarray but FULL"):
        simulate("/nonexistent-never-written", n=1, mode="mrs-short", full_frame=False)


def test_profile_layout_merges_under_the_user_scenario():
    sc = load_scenario({"sky": {"floor_dn_s": 0.5}}, "mrs-short")
    assert sc["exposures"]["exp_type"]["FULL"] == "MIR_MRS"
    assert sc["sky"]["floor_dn_s"] == 0.5 and len(sc["sky"]["components"]) == 2
    assert load_scenario(None, "lrs") == {**load_scenario(None), "source": load_scenario(None)["source"]}


# -- simulated files ----------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("mode", list(EXPECTED))
def test_simulated_files_are_valid_with_the_modes_keywords(sims, mode):
    det, exps, tag = EXPECTED[mode]
    prof = profiles.load(mode)
    res = sims[mode]
    assert res.files
    for path in res.files:
        ints = path.name.endswith(f"_{tag}_rateints.fits")
        assert ints or path.name.endswith(f"_{tag}_rate.fits")
        m = (CubeModel if ints else ImageModel)(str(path))
        m.validate()
        ph = fits.getheader(path, 0)
        assert ph["DETECTOR"] == det and ph["EXP_TYPE"] in exps and ph["SUBARRAY"] in prof.subarrays
        assert prof.accepts(ph["DETECTOR"], ph["EXP_TYPE"], ph["SUBARRAY"]) is None
        assert m.data.shape[-2:] == (ph["SUBSIZE2"], ph["SUBSIZE1"])
        if mode.startswith("mrs"):
            assert fits.getheader(path, "SCI")["DISPAXIS"] == 2
            assert ph["CHANNEL"] == ("12" if mode == "mrs-short" else "34")
        if mode == "imager":
            assert "DISPAXIS" not in fits.getheader(path, "SCI")
    t = res.truth
    assert t.x.between(4, 1027).all()


@pytest.mark.slow
def test_mrs_frame_has_slices_gaps_and_two_channel_levels(sims):
    prof = profiles.load("mrs-short")
    d = fits.getdata(sims["mrs-short"].files[0], "SCI")
    d = _mean_of_integrations(d)
    prof_x = np.nanmedian(d[300:700], axis=0)
    c1, gap, c2 = (prof.regions[k] for k in ("channel_1", "inter_channel", "channel_2"))
    floor = np.median(prof_x[gap.x0 + 2:gap.x1 - 2])
    lvl1, lvl2 = np.median(prof_x[c1.x0:c1.x1]), np.median(prof_x[c2.x0:c2.x1])
    assert lvl1 > 2 * floor and lvl2 > 2 * lvl1
    # inter-slice gaps: dark columns inside each channel (at least count - 1 of them)
    dark = prof_x[c1.x0:c1.x1] < floor + 0.3 * (lvl1 - floor)
    starts = np.flatnonzero(dark[1:] & ~dark[:-1])
    assert len(starts) >= 20


def _mean_of_integrations(d: np.ndarray) -> np.ndarray:
    """A rate image from a rate (2-D) or rateints (3-D) SCI array (pixels NaN in every integration stay NaN)."""
    if d.ndim == 2:
        return d
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(d, axis=0)


def _fractional_ripple(values: np.ndarray, window: int = 31) -> np.ndarray:
    """values / their running median - 1 along axis 0 (the fixed pattern left after the smooth sky)."""
    from scipy.ndimage import median_filter

    smooth = median_filter(values, size=(window,) + (1,) * (values.ndim - 1), mode="nearest")
    return values / smooth - 1.0


@pytest.mark.slow
def test_mrs_fringes_are_fixed_and_proportional_to_the_sky(sims):
    """MRS rate files carry the detector's fringes: along the middle columns of slices, SCI over its
    smooth trend ripples like the detector response, by the same fraction in every exposure
    whatever its sky level (a fixed, multiplicative pattern); the truth has no row for it."""
    from lrscube.validation.sim_layouts import slice_bounds
    from lrscube.validation.sim_response import detector_response

    prof = profiles.load("mrs-short")
    res = sims["mrs-short"]
    resp = detector_response(prof, load_scenario(None, prof), "MIRIFUSHORT")
    c2 = prof.regions["channel_2"]
    cols = [int(round((a + b) / 2)) for a, b in slice_bounds(c2.x0, c2.x1, 17, 3.0)][3:13]
    rows = slice(300, 700)
    taken = set(zip(res.truth.y, res.truth.x))
    expect = _fractional_ripple(resp[rows, cols])
    assert np.std(expect) > 0.02  # a few percent of ripple in channel 2
    ripples = []
    for path in res.files:
        d = fits.getdata(path, "SCI")
        d = _mean_of_integrations(d)[rows, cols].astype(float)
        ripples.append(_fractional_ripple(d))
    ok = np.array([[(y, x) not in taken for x in cols] for y in range(rows.start, rows.stop)])
    ok &= np.isfinite(ripples[0]) & np.isfinite(ripples[1])
    for r in ripples:
        assert np.corrcoef(r[ok], expect[ok])[0, 1] > 0.7
    a, b = ripples
    assert np.std(a[ok] - b[ok]) < 0.5 * np.std(expect[ok]) + 3 * np.median(np.abs(a[ok] - b[ok]))
    sky = res.exposures.sky_factor.to_numpy()
    assert max(sky) / min(sky) > 1.05  # two sky levels, one fractional pattern
    assert not res.truth.behaviour.isin(["flat", "fringe"]).any()


@pytest.mark.slow
def test_imager_frame_is_flat_with_a_dark_coronagraph_area(sims):
    prof = profiles.load("imager")
    res = sims["imager"]
    full = [p for p, s in zip(res.files, res.exposures.subarray) if s == "FULL"]
    assert full, "the imager sample has no full frame"
    d = fits.getdata(full[0], "SCI")
    d = _mean_of_integrations(d)
    field, dark = prof.regions["imaging_field"], prof.regions["dark_left"]
    sky = np.nanmedian(d[field.slices()])
    assert np.nanmedian(d[50:950, dark.x0 + 10:dark.x1 - 10]) < 0.1 * sky
    blocks = [np.nanmedian(d[y:y + 200, x:x + 200]) for y in (50, 400, 750) for x in (420, 800)]
    assert max(blocks) / min(blocks) < 1.3  # flat, a gentle gradient at most


def test_imager_simulates_imaging_subarrays(tmp_path):
    only_subarrays = {"exposures": {"subarray_weights": {"BRIGHTSKY": 1, "SUB256": 1}, "per_visit": [1, 1]}}
    res = simulate(tmp_path, n=5, seed=4, mode="imager", scenario=only_subarrays)
    subs = set(res.exposures.subarray)
    assert subs == {"BRIGHTSKY", "SUB256"}
    for path, sub in zip(res.files, res.exposures.subarray):
        ph = fits.getheader(path, 0)
        if sub == "BRIGHTSKY":
            assert (ph["SUBSTRT1"], ph["SUBSTRT2"], ph["SUBSIZE1"], ph["SUBSIZE2"]) == (457, 51, 512, 512)


# -- ingest -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_ingest_accepts_its_mode_and_rejects_others(sims, tmp_path, client):
    store = str(tmp_path / "mrs.zarr")
    s = lrscube.ingest(sims["mrs-short"].files, store, mode="mrs-short",
                       progress=False)
    assert len(s.ingested) == len(sims["mrs-short"].files) and not s.rejected
    assert cube.info(store)["profile"] == "mrs-short"
    lrs_file = sims["lrs-slit"].files[0]
    s2 = lrscube.ingest([lrs_file], store, progress=False)
    assert not s2.ingested and len(s2.rejected) == 1
    why = s2.rejected[0][1]
    assert "MIRIMAGE" in why and "detector" in why and "mrs-short" in why
    # MIRIFULONG is not MIRIFUSHORT either
    with pytest.raises(Rejected, match="MIRIFULONG"):
        read_product(str(sims["mrs-long"].files[0]), profiles.load("mrs-short"))


@pytest.mark.slow
def test_imager_file_rejected_from_an_lrs_cube(sims):
    with pytest.raises(Rejected, match="EXP_TYPE 'MIR_IMAGE'"):
        read_product(str(sims["imager"].files[0]), profiles.load("lrs"))


@pytest.mark.slow
def test_lrs_slit_and_slitless_split_the_lrs_modes(sims):
    slit, slitless = profiles.load("lrs-slit"), profiles.load("lrs-slitless")
    with pytest.raises(Rejected, match="SLITLESS"):
        read_product(str(sims["lrs-slitless"].files[0]), slit)
    with pytest.raises(Rejected, match="FIXEDSLIT"):
        read_product(str(sims["lrs-slit"].files[0]), slitless)
    lrs = profiles.load("lrs")
    for f in (sims["lrs-slit"].files[0], sims["lrs-slitless"].files[0]):
        assert read_product(str(f), lrs).meta["detector"] == "MIRIMAGE"
