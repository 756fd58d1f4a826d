"""NIRSpec NRS1/NRS2 profiles: the detector geometry a profile gives (frame, reference pixels,
axes, outputs, subarray corners, MASK keywords), and that nothing in lrscube names an
instrument, a detector or a subarray: everything specific comes from the profiles."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import yaml

import lrscube
from lrscube.config import flags, profiles
from lrscube.detection.detection_params import DetectionParams

NRS = ("nirspec-nrs1", "nirspec-nrs2")
SCHEMAS = Path(__import__("stdatamodels.jwst.datamodels", fromlist=["x"]).__file__).parent / "schemas"


def _enum(node) -> set[str]:
    out = set(node.get("enum", []))
    for sub in node.get("anyOf", []) + node.get("oneOf", []):
        out |= _enum(sub)
    return out


def _meta(name: str) -> dict:
    d = yaml.safe_load(open(SCHEMAS / name))
    return (d["allOf"][0] if "allOf" in d else d)["properties"]["meta"]["properties"]


@pytest.mark.parametrize("name", NRS)
def test_nirspec_frame_reference_border_and_accepted_values(name):
    p = profiles.load(name)
    assert p.instrument == "NIRSPEC" and p.frame_shape == (2048, 2048) and p.dispersion_axis == "x"
    ref = p.reference_mask()
    # 4 reference pixels on every edge, the 2040 x 2040 inside free
    assert ref[:4].all() and ref[-4:].all() and ref[:, :4].all() and ref[:, -4:].all()
    assert not ref[4:-4, 4:-4].any() and ref.sum() == 2048 ** 2 - 2040 ** 2
    assert p.chunk == (256, 256) and DetectionParams.from_profile(p).calibration_block_px == (256, 256)
    core = _meta("core.schema.yaml")
    assert set(p.exp_types) <= _enum(core["exposure"]["properties"]["type"])
    assert set(p.detectors) <= _enum(core["instrument"]["properties"]["detector"])
    subs = _enum(_meta("subarray.schema.yaml")["subarray"]["properties"]["name"]) | {"FULL"}
    assert set(p.subarrays) <= subs and set(p.subarray_boxes) == set(p.subarrays)
    for sub, box in p.subarray_boxes.items():
        assert 0 <= box.y0 < box.y1 <= 2048 and 0 <= box.x0 < box.x1 <= 2048, sub
    for rname, b in p.regions.items():
        assert 0 <= b.y0 < b.y1 <= 2048 and 0 <= b.x0 < b.x1 <= 2048, rname
    det = p.detectors[0]
    assert p.accepts(det, "NRS_IFU", "FULL") is None
    assert "EXP_TYPE 'NRS_BRIGHTOBJ'" in p.accepts(det, "NRS_BRIGHTOBJ", "SUB2048")
    other = {"NRS1": "NRS2", "NRS2": "NRS1"}[det]
    assert f"detector '{other}'" in p.accepts(other, "NRS_IFU", "FULL")


def test_nrs2_is_nrs1_turned_by_180_degrees():
    """Axes from CRDS nir_subarray.tpn; the outputs' order along y reverses; the fixed-slit
    subarrays sit 0-2 rows apart (PRD table in nirspec-facts.md)."""
    a, b = profiles.load("nirspec-nrs1"), profiles.load("nirspec-nrs2")
    assert a.axes == (2, 1) and b.axes == (-2, -1)
    ia, ib = a.outputs.index(a.frame_shape), b.outputs.index(b.frame_shape)
    assert ia.shape == ib.shape == (2048, 2048)
    # four 512-row bands, constant along x
    assert (ia == ia[:, :1]).all() and [int(ia[y, 0]) for y in (0, 511, 512, 2047)] == [0, 0, 1, 3]
    assert [a.outputs.order[ia[y, 0]] for y in (0, 2047)] == ["A", "D"]
    assert [b.outputs.order[ib[y, 0]] for y in (0, 2047)] == ["D", "A"]
    assert a.subarray_boxes["SUBS200A1"].y0 == 1053 and b.subarray_boxes["SUBS200A1"].y0 == 1055
    # the rest is inherited from NRS1 (one home for the shared values)
    assert (b.regions, b.exp_types, b.subarrays, b.do_not_use) == (a.regions, a.exp_types, a.subarrays, a.do_not_use)
    assert b.simulation["detector"]["gain_e_per_dn"] != a.simulation["detector"]["gain_e_per_dn"]


def test_miri_geometry_is_the_profiles_too():
    p = profiles.load("lrs")
    assert p.frame_shape == (1024, 1032) and p.chunk == (256, 258) and p.axes == (1, 2)
    assert p.reference_mask().sum() == 8 * 1024 and p.reference_rows == ()
    # four outputs reading the columns in turn (jwst refpix MIR_reference_sections)
    assert p.outputs.index(p.frame_shape)[0, :8].tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert p.subarray_boxes["SLITLESSPRISM"].slices() == (slice(528, 944), slice(0, 72))
    assert profiles.load("imager").subarray_boxes["SUB64"].slices() == (slice(778, 842), slice(0, 72))
    assert p.reference_pixel_bits() == flags.REFERENCE_PIXEL and p.mask_file == {}


def test_shipped_detectors_come_from_the_profiles():
    d = profiles.detectors()
    assert {k: (v.instrument, v.frame_shape, v.axes) for k, v in d.items() if k.startswith("NRS")} == {
        "NRS1": ("NIRSPEC", (2048, 2048), (2, 1)), "NRS2": ("NIRSPEC", (2048, 2048), (-2, -1))}
    assert d["MIRIMAGE"].frame_shape == (1024, 1032)


def _write(tmp_path, d):
    path = tmp_path / f"{d.get('name', 'p')}.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def test_geometry_errors_name_the_key(tmp_path):
    base = yaml.safe_load(open(profiles.configs_dir() / "nirspec-nrs1.yaml"))
    base.pop("extends")
    with pytest.raises(ValueError, match="belong in the geometry"):
        profiles.load(_write(tmp_path, {**base, "name": "a", "extends": "lrs", "frame_shape": [2048, 2048]}))
    g = dict(base["geometry"], axes={"fastaxis": 2, "slowaxis": 2})
    with pytest.raises(ValueError, match="geometry.axes"):
        profiles.load(_write(tmp_path, {**base, "name": "b", "extends": "lrs", "geometry": g}))
    g = dict(base["geometry"], subarrays={"SUBS200A1": {"substrt": [1, 2000], "subsize": [2048, 64]}})
    with pytest.raises(ValueError, match="SUBS200A1.*outside"):
        profiles.load(_write(tmp_path, {**base, "name": "c", "extends": "lrs", "geometry": g}))
    g = dict(base["geometry"], subarrays={"FULL": {"substrt": [1, 1], "subsize": [2048, 2048]}})
    with pytest.raises(ValueError, match="no corner for it"):
        profiles.load(_write(tmp_path, {**base, "name": "d", "extends": "lrs", "geometry": g}))
    g = {k: v for k, v in base["geometry"].items() if k != "outputs"}
    with pytest.raises(ValueError, match=r"geometry lacks \['outputs'\]"):
        profiles.load(_write(tmp_path, {**base, "name": "e", "geometry": g}))


def _names_in_profiles() -> set[str]:
    out = set()
    for name in profiles.available():
        p = profiles.load(name)
        out |= {p.instrument, *p.detectors, *p.subarrays, *p.exp_types}
    return out - {"FULL"}  # FULL is the JWST-wide name of the whole frame


def test_no_instrument_detector_or_subarray_named_in_the_code():
    """Adding a detector is adding a profile: no string literal in lrscube's code (docstrings
    aside) is an instrument, detector, subarray or EXP_TYPE name of a shipped profile."""
    names = _names_in_profiles()
    assert {"NRS1", "NRS2", "NIRSPEC", "MIRI", "MIRIMAGE", "SLITLESSPRISM", "NRS_IFU"} <= names
    root = Path(lrscube.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        docs = {id(n.body[0].value) for n in ast.walk(tree)
                if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs \
                    and node.value.upper() in names:
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.value!r}")
    assert found == []
