"""Deliveries: the default export follows the delivery rule (checked against every allowed cut),
is recorded by name, and two deliveries or two dates can be compared pixel by pixel."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from lrscube.masks import deliveries as dl
from lrscube.masks import maskcube as mc
from lrscube.config import profiles
from lrscube.storage import store as st
from lrscube.cli import main
from lrscube.masks.crds_export import export_crds
from lrscube.masks.delivery_rule import DeliveryRule, candidate_starts, class_changes, fold_immaterial, is_material

LRS = profiles.load("lrs")
HOT, WARM, DEAD = (LRS.flag_bits(c) for c in ("HOT", "WARM", "DEAD"))  # with DO_NOT_USE, as the profile says
T0 = 60000.5
WEEKS = 53


def weekly_exposures() -> pd.DataFrame:
    start = T0 + 7.0 * np.arange(WEEKS)
    return pd.DataFrame({"expstart": start, "mjd": start + 50 / 86400, "exptime": 100.0, "program": "01234",
                         "filename": [f"w{i}_rate.fits" for i in range(WEEKS)], "subarray": "FULL",
                         "y0": 0, "x0": 0, "ny": 1024, "nx": 1032})


def week(i):
    return T0 + 7.0 * i


# In the rule's regions (the slitless footprint y 528-944, x 0-72 and the slit spectrum x 303-349):
# HOT from week 8, two WARM from week 20, DEAD weeks 22-39. Outside them: WARM from week 5, HOT
# from week 31: these must never start a file.
INTERVALS = pd.DataFrame({
    "y": [600, 700, 150, 800, 100, 900],
    "x": [30, 40, 320, 50, 500, 700],
    "flag": ["HOT", "WARM", "WARM", "DEAD", "WARM", "HOT"],
    "start_mjd": [week(8), week(20), week(20), week(22), week(5), week(31)],
    "end_mjd": [np.nan, np.nan, np.nan, week(40), np.nan, np.nan],
    "dq": np.array([HOT, WARM, WARM, DEAD, WARM, HOT], "uint32"),
})
IN_REGION = [True, True, True, True, False, False]


def make_store(path, intervals=INTERVALS):
    exp = weekly_exposures()
    st.write_table(str(path), st.INTERVALS, intervals)
    mc.write_mask_cube(path, intervals, "lrs", exp)
    return exp


def truth(intervals, exp) -> np.ndarray:
    """(exposure, pixel) state by the contract rule start <= mid < end, computed directly."""
    mid = exp["mjd"].to_numpy()[:, None]
    s = intervals["start_mjd"].to_numpy()[None]
    e = intervals["end_mjd"].to_numpy()[None]
    on = (np.isnan(s) | (s <= mid)) & (np.isnan(e) | (mid < e))
    return np.where(on, intervals["dq"].to_numpy()[None], 0).astype("uint32")


def cut_cost(states: np.ndarray, starts: list[int]) -> tuple[int, list[np.ndarray]]:
    """Pixel-exposures wrong when each file (from each start to the next) takes each pixel's
    majority value (ties flag), and the files' values."""
    bounds = [*starts, len(states)]
    cost, values = 0, []
    for a, b in zip(bounds, bounds[1:]):
        seg = states[a:b]
        v = []
        for j in range(seg.shape[1]):
            u, n = np.unique(seg[:, j], return_counts=True)
            best = u[n == n.max()].max()
            v.append(best)
            cost += int((seg[:, j] != best).sum())
        values.append(np.array(v, "uint32"))
    return cost, values


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("deliv")
    exp = make_store(root / "store")
    return root, root / "store", exp


@pytest.fixture(scope="module")
def exported(store):
    """The store's deliveries, delivery-001 to -005 in this order (each test may run alone)."""
    root, s, _ = store
    kw = dict(author="T. Ester", pedigree="SIMULATION")
    return {"default": export_crds(s, root / "default", **kw),
            "every": export_crds(s, root / "every", every_epoch=True, **kw),
            "two": export_crds(s, root / "two", min_changed_pixels=2, **kw),
            "slow": export_crds(s, root / "slow", min_epoch_days=100, **kw),
            "one": export_crds(s, root / "one", min_epoch_days=200, **kw)}


def test_default_export_is_the_cheapest_cut_the_rule_allows(store, exported):
    root, s, exp = store
    man = exported["default"]
    states = truth(INTERVALS, exp)
    starts_w = [int(np.searchsorted(exp["expstart"].to_numpy(), mc.datetime64_to_mjd(np.datetime64(f["epoch_start"])) - 1e-6))
                for f in man["files"]]
    # every cut the rule allows: files start where a pixel in the regions changes, 30+ days apart
    region_changes = sorted({i for i in range(1, WEEKS)
                             if np.any(states[i, IN_REGION] != states[i - 1, IN_REGION])})
    assert region_changes == [8, 20, 22, 40]
    best = None
    for k in range(len(region_changes) + 1):
        for sub in itertools.combinations(region_changes, k):
            cut = [0, *sub]
            if any(7 * (b - a) < 30 for a, b in zip(cut, cut[1:])):
                continue
            c, vals = cut_cost(states, cut)
            material = all(np.any(v1[IN_REGION] != v0[IN_REGION]) for v0, v1 in zip(vals, vals[1:]))
            if material and (best is None or c < best[0]):
                best = (c, cut)
    assert starts_w == best[1] == [0, 8, 20, 40]
    assert man["merge_cost"]["pixel_exposures"]["total"] == best[0]
    assert man["merge_cost"]["pixel_exposures"]["bad"] == int((states != 0).sum())  # every pixel here changes
    # outside-only changes (weeks 5 and 31) started no file; the WARM of week 5 rides in file 1
    assert not {5, 31} & set(starts_w)
    assert man["rule"]["regions"] == ["slit", "slit_spectrum", "slitless"] and man["rule"]["min_interval_days"] == 30
    useafters = [f["useafter"] for f in man["files"]]
    assert useafters[0] == "2023-02-25T00:00:00" and useafters == sorted(useafters)
    assert all(fits.getheader(root / "default" / f["file"])["USEAFTER"] == f["useafter"] for f in man["files"])
    # missed pixels: bad for an exposure while the file for it is clean, counted directly
    _, vals = cut_cost(states, best[1])
    bounds = [*best[1], WEEKS]
    missed = set()
    for (a, b), v in zip(zip(bounds, bounds[1:]), vals):
        missed |= {j for j in range(states.shape[1]) if np.any(states[a:b, j] != 0) and v[j] == 0}
    px = man["merge_cost"]["pixels"]
    assert px["missed"] == len(missed) and px["missed_in_regions"] == len({j for j in missed if IN_REGION[j]})


def test_every_epoch_and_a_higher_materiality_threshold(store, exported):
    root, s, exp = store
    every = exported["every"]
    assert len(every["files"]) == mc.open_mask(s).sizes["time"] == 7  # weeks 0, 5, 8, 20, 22, 31, 40
    two = exported["two"]
    # HOT alone (week 8) and the DEAD recovery (week 40) change one pixel of a class: folded
    assert [f["useafter"][:10] for f in two["files"]] == ["2023-02-25", "2023-07-15"]
    frames = [np.array(fits.getdata(root / "two" / f["file"], "DQ")) for f in two["files"]]
    region = DeliveryRule.from_profile(LRS).region_frame((1024, 1032))
    changes = class_changes(frames[0][region], frames[1][region])
    assert max(changes.values()) >= 2 and changes["WARM"] == 2
    slow = exported["slow"]
    starts = [mc.datetime64_to_mjd(np.datetime64(f["epoch_start"])) for f in slow["files"]]
    assert len(starts) >= 2 and all(b - a >= 100 for a, b in zip(starts, starts[1:]))
    assert {round((t - T0) / 7) for t in starts[1:]} <= {20, 22, 40}
    # 200 days: a file could start at week 40 (the DEAD recovery), but its mask would equal the
    # first one's in the regions (the DEAD, bad for 18 of the first 40 weeks, is not flagged
    # there): folded into one file, the DEAD missed
    one = exported["one"]
    assert len(one["files"]) == 1 and one["merge_cost"]["pixels"]["missed_in_regions"] >= 1


def test_deliveries_are_recorded_listed_and_names_unique(store, exported, capsys):
    root, s, _ = store
    recs = dl.list_deliveries(s)
    assert [r["delivery"] for r in recs][:4] == ["delivery-001", "delivery-002", "delivery-003", "delivery-004"]
    assert main(["deliveries", "--store", str(s)]) == 0
    text = capsys.readouterr().out
    assert "delivery-001" in text and "4 files" in text and "every epoch" in text
    with pytest.raises(FileExistsError, match="delivery named 'delivery-001'"):
        export_crds(s, root / "again", author="x", name="delivery-001")
    assert not (root / "again").exists() or not list((root / "again").glob("*.fits"))
    with pytest.raises(ValueError, match="delivery name"):
        export_crds(s, root / "again", author="x", name="bad name!")
    # the stored masks are the files' masks
    rec = dl.read_delivery(s, "delivery-001")
    d = dl.delivery_masks(s, "delivery-001", (1024, 1032))
    for f, frame in zip(rec["files"], d.frames):
        np.testing.assert_array_equal(frame, fits.getdata(root / "default" / f["file"], "DQ"))


def test_diff_of_two_deliveries_names_every_changed_pixel(tmp_path):
    exp = make_store(tmp_path / "s")
    # one file per epoch: the files hold exactly what the intervals say, so the diff is known
    export_crds(tmp_path / "s", tmp_path / "a", author="x", pedigree="SIMULATION", name="2023-q1", every_epoch=True)
    # a re-detection: one more HOT in the slit spectrum from week 30, the outside WARM gone
    iv = pd.concat([INTERVALS[INTERVALS["x"] != 500],
                    pd.DataFrame({"y": [250], "x": [330], "flag": ["HOT"], "start_mjd": [week(30)],
                                  "end_mjd": [np.nan], "dq": np.array([HOT], "uint32")})], ignore_index=True)
    make_store(tmp_path / "s", iv)
    export_crds(tmp_path / "s", tmp_path / "b", author="x", pedigree="SIMULATION", name="2023-q2", every_epoch=True)
    res = dl.diff(str(tmp_path / "s"), "2023-q1", "2023-q2", out=tmp_path / "d")
    ch = res.changes.drop_duplicates(["y", "x", "class", "change"])
    assert set(map(tuple, ch[["y", "x", "class", "change"]].to_numpy())) == {
        (100, 500, "WARM", "lost"), (100, 500, "DO_NOT_USE", "lost"),
        (250, 330, "HOT", "gained"), (250, 330, "DO_NOT_USE", "gained")}
    by = res.by_class.set_index("class")
    assert by.loc["HOT", "gained"] == 1 and by.loc["HOT", "gained_in_regions"] == 1
    assert by.loc["WARM", "lost"] == 1 and by.loc["WARM", "lost_in_regions"] == 0
    png = Path(res.files["map"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(pd.read_csv(res.files["pixels"])) == len(res.changes)
    assert json.loads(Path(res.files["summary"]).read_text())["pixels"] == 2
    del exp


def test_diff_of_two_dates_from_the_mask_cube_and_from_a_delivery(store, exported, tmp_path, capsys):
    root, s, exp = store
    res = dl.diff(str(s), "2023-03-01", str(week(45)))
    ch = res.changes.drop_duplicates(["y", "x", "class", "change"])
    got = {(int(r.y), int(r.x), r["class"]) for _, r in ch[ch["class"] != "DO_NOT_USE"].iterrows()}
    assert got == {(600, 30, "HOT"), (700, 40, "WARM"), (150, 320, "WARM"), (100, 500, "WARM"), (900, 700, "HOT")}
    assert (ch["change"] == "gained").all()
    assert main(["diff", "--store", str(s), "2023-03-01", str(week(45)), "--delivery", "delivery-001",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "delivery-001" in out and list(tmp_path.glob("diff_*.png"))
    with pytest.raises(ValueError, match="two deliveries or two dates"):
        dl.diff(str(s), "delivery-001", "2023-03-01")
    # a date before the mask cube's first epoch: nothing to compare, and no option offered that
    # diff does not have
    assert main(["diff", "--store", str(s), "2000-01-01", str(week(45)), "--out", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "before the mask's validity" in err and "holds no mask before then" in err and "extrapolate" not in err


def test_report_shows_the_delivery_history(store, tmp_path):
    from lrscube.reporting.report import report

    _, s, _ = store
    man = export_crds(s, tmp_path / "x", author="x", pedigree="SIMULATION", name="for-the-report")
    page = report(str(s), tmp_path / "r")
    html = page.read_text()
    assert "Deliveries and runs" in html and "for-the-report" in html and "deliveries.png" in html
    assert (tmp_path / "r" / "deliveries.png").read_bytes()[:4] == b"\x89PNG"
    assert "MASK files of the latest delivery, for-the-report" in html
    assert all(f["file"] in html for f in man["files"])
    assert man["run"]["id"] in html  # the runs table


# --------------------------------------------------------------------------- the rule's pieces


def test_class_changes_counts_each_bit_gained_or_lost():
    a = np.array([HOT, WARM, 0, DEAD], "uint32")
    b = np.array([HOT, HOT, WARM, 0], "uint32")
    c = class_changes(a, b)
    # pixel 1: WARM -> HOT (DO_NOT_USE kept); pixel 2 gains WARM + DO_NOT_USE; pixel 3 loses DEAD + DO_NOT_USE
    assert c == {"DO_NOT_USE": 2, "DEAD": 1, "HOT": 1, "WARM": 2}
    assert is_material(a, b, 2) and not is_material(a, b, 3)


def test_candidate_starts_only_where_the_regions_change():
    values = np.array([[0, 0], [0, HOT], [WARM, HOT], [WARM, 0]], "uint32")  # pixel 0 outside, 1 inside
    assert candidate_starts(values, np.array([False, True])).tolist() == [True, True, False, True]
    assert candidate_starts(values, np.array([False, False])).tolist() == [True, False, False, False]


def test_fold_immaterial_until_every_file_differs_materially():
    vals = {(0, 0): np.array([0, 0]), (1, 1): np.array([HOT, 0]), (2, 2): np.array([HOT, WARM]),
            (0, 1): np.array([HOT, 0]), (1, 2): np.array([HOT, WARM]), (0, 2): np.array([HOT, 0])}
    inside = np.array([True, True])
    assert fold_immaterial([(0, 0), (1, 1), (2, 2)], lambda a, b: vals[(a, b)], inside, 1) == [(0, 0), (1, 1), (2, 2)]
    # two pixels of one class needed: no single change qualifies, everything folds into one file
    assert fold_immaterial([(0, 0), (1, 1), (2, 2)], lambda a, b: vals[(a, b)], inside, 2) == [(0, 2)]


def test_profile_delivery_block_is_checked(tmp_path):
    import yaml

    for bad, msg in (({"regions": ["nowhere"]}, "delivery regions"), ({"interval": 3}, "unknown key")):
        path = tmp_path / "p.yaml"
        path.write_text(yaml.safe_dump({"kind": "mode-profile", "extends": "lrs", "name": "p", "delivery": bad}))
        with pytest.raises(ValueError, match=msg):
            profiles.load(path)
    rule = DeliveryRule.from_profile(profiles.load("lrs-slitless"), min_interval_days=14)
    assert rule.regions == ("slitless",) and rule.min_interval_days == 14 and rule.min_changed_pixels == 1
    frame = rule.region_frame((1024, 1032))
    assert frame.sum() == 416 * 72 and frame[600, 30] and not frame[300, 320]
    with pytest.raises(ValueError, match="min_changed_pixels"):
        DeliveryRule(min_changed_pixels=0)
