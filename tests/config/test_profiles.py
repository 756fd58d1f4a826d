"""Mode profiles: loading, validation, and inheritance with `extends:`."""

import pytest
import yaml

from lrscube.config import flags, profiles


def test_lrs_profile_policy_and_regions():
    p = profiles.load("lrs")
    assert p.detectors == ("MIRIMAGE",) and p.dispersion_axis == "y"
    assert p.flag_bits("HOT") == flags.value("HOT") | flags.DO_NOT_USE
    assert p.regions["slitless"].slices() == (slice(528, 944), slice(0, 72))
    assert p.accepts("MIRIMAGE", "MIR_LRS-SLITLESS", "SLITLESSPRISM") is None
    assert "EXP_TYPE 'MIR_IMAGE'" in p.accepts("MIRIMAGE", "MIR_IMAGE", "FULL")


def _write(tmp_path, name, d):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def test_extends_inherits_detection_and_policy_and_overrides_one_parameter(tmp_path):
    child = _write(tmp_path, "child", {
        "kind": "mode-profile", "extends": "lrs", "name": "child", "detectors": ["MIRIFULONG"],
        "detection": {"clip_sigma": 7.0, "classes": {"HOT": {"threshold_dn_s": 2.0}}}})
    base, p = profiles.load("lrs"), profiles.load(child)
    assert p.name == "child" and p.detectors == ("MIRIFULONG",)
    assert p.do_not_use == base.do_not_use and p.exp_types == base.exp_types
    assert p.detection["clip_sigma"] == 7.0
    assert p.detection["classes"]["HOT"] == {**base.detection["classes"]["HOT"], "threshold_dn_s": 2.0}
    assert {k: v for k, v in p.detection.items() if k not in ("clip_sigma", "classes")} == \
        {k: v for k, v in base.detection.items() if k not in ("clip_sigma", "classes")}


def test_extends_an_unknown_profile_is_a_clear_error(tmp_path):
    bad = _write(tmp_path, "bad", {"kind": "mode-profile", "extends": "nonesuch", "name": "bad"})
    with pytest.raises(ValueError, match="extends: nonesuch"):
        profiles.load(bad)


def test_not_a_profile_and_unknown_name_are_named(tmp_path):
    with pytest.raises(ValueError, match="not a mode profile"):
        profiles.load(_write(tmp_path, "x", {"kind": "scenario"}))
    with pytest.raises(ValueError, match="unknown mode profile 'nope'"):
        profiles.load("nope")
    with pytest.raises(ValueError, match="unknown DQ flag"):
        profiles.load(_write(tmp_path, "y", {"kind": "mode-profile", "extends": "lrs", "do_not_use": ["HOTT"]}))
