"""Mode profiles: what one instrument mode's data look like, loaded once from YAML.

A profile (``configs/<name>.yaml``) names the detector, the EXP_TYPEs and subarrays a cube
accepts, the dispersion axis, regions of the detector, the detection parameters and the
DO_NOT_USE policy, and describes the detector in its ``geometry:`` block (frame shape,
reference pixels, the stored chunk, readout axes, outputs, subarray corners) and the keywords of
its MASK reference files in ``mask_file:``. Adding a mode or a detector is adding a profile, not
code: nothing in lrscube tests an instrument or detector name.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from . import flags

DEFAULT_MODE = "lrs"


@dataclass(frozen=True)
class Box:
    """A 0-based, half-open full-frame box: rows y0:y1, columns x0:x1."""

    y0: int
    y1: int
    x0: int
    x1: int

    @classmethod
    def from_yaml(cls, name: str, d: dict) -> Box:
        try:
            (y0, y1), (x0, x1) = d["y"], d["x"]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"region {name!r} needs y: [y0, y1] and x: [x0, x1], got {d!r}") from None
        return cls(int(y0), int(y1), int(x0), int(x1))

    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


@functools.lru_cache(maxsize=8)
def _reference_mask(frame_shape, columns, rows) -> np.ndarray:
    ref = np.zeros(frame_shape, bool)
    for a, b in columns:
        ref[:, a:b] = True
    for a, b in rows:
        ref[a:b, :] = True
    ref.flags.writeable = False
    return ref


@dataclass(frozen=True)
class Outputs:
    """How the detector's outputs (amplifiers) split the DMS-oriented frame.

    ``layout: blocks``: ``count`` bands of equal width along ``axis`` (NIRSpec: four 512-row
    bands along y); ``interleaved``: pixel ``i`` along ``axis`` belongs to output ``i % count``
    (MIRI: columns read by four outputs in turn). ``order`` names the outputs in increasing
    coordinate (NRS2's are reversed).
    """

    count: int
    axis: str
    layout: str
    order: tuple[str, ...]

    @classmethod
    def from_yaml(cls, d: dict, source: str) -> Outputs:
        try:
            out = cls(int(d["count"]), str(d["axis"]), str(d["layout"]),
                      tuple(str(v) for v in d.get("order") or [chr(ord("A") + i) for i in range(int(d["count"]))]))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{source}: geometry.outputs needs count, axis (x|y) and layout "
                             f"(blocks|interleaved), got {d!r}") from None
        if out.axis not in ("x", "y") or out.layout not in ("blocks", "interleaved") or len(out.order) != out.count:
            raise ValueError(f"{source}: geometry.outputs: axis must be x or y, layout blocks or interleaved, "
                             f"and order name {out.count} outputs; got {d!r}")
        return out

    def index(self, frame_shape: tuple[int, int]) -> np.ndarray:
        """(ny, nx) int8: the output (0 .. count-1, in ``order``) that reads each pixel."""
        ny, nx = frame_shape
        n = ny if self.axis == "y" else nx
        i = np.arange(n)
        along = i % self.count if self.layout == "interleaved" else (i * self.count) // n
        along = along.astype("int8")
        return np.broadcast_to(along[:, None] if self.axis == "y" else along[None, :], (ny, nx))


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    instrument: str
    detectors: tuple[str, ...]
    exp_types: tuple[str, ...]
    subarrays: tuple[str, ...]
    frame_shape: tuple[int, int]
    #: "y" when light is dispersed along rows (DISPAXIS=2, as for LRS), "x" otherwise
    dispersion_axis: str
    #: 0-based half-open column ranges of reference pixels
    reference_columns: tuple[tuple[int, int], ...]
    regions: dict[str, Box] = field(default_factory=dict)
    #: defect classes that also get DO_NOT_USE (only that bit stops the ramp fit)
    do_not_use: tuple[str, ...] = ()
    #: detection parameters, validated by lrscube.detection.detection_params
    detection: dict[str, Any] = field(default_factory=dict)
    #: simulator settings for this mode (layout of sky, slices, dark regions)
    simulation: dict[str, Any] = field(default_factory=dict)
    #: when a CRDS delivery starts a new file (lrscube.masks.delivery_rule): regions, min_interval_days,
    #: min_changed_pixels
    delivery: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    #: unit of the cube's sci and err, fixed when the cube is created (DN/s: rate products)
    unit: str = "DN/s"
    #: what the pipeline's photom step does in this mode: "scalar" (SCI multiplied by PHOTMJSR
    #: alone, as for imaging) or "per-pixel" (a wavelength-dependent response on top of the
    #: scalar PHOTMJSR keeps, as for LRS and MRS), which no header factor undoes
    photom: str = "per-pixel"
    #: 0-based half-open row ranges of reference pixels (NIRSpec: 4 on every edge)
    reference_rows: tuple[tuple[int, int], ...] = ()
    #: stored chunk of the exposure cube (rows, columns): whole chunks tile the frame
    chunk: tuple[int, int] = (256, 256)
    #: FASTAXIS, SLOWAXIS of the full frame in DMS orientation (CRDS nir_subarray.tpn, miri_subarray_both.tpn)
    axes: tuple[int, int] = (1, 2)
    outputs: Outputs | None = None
    #: 0-based full-frame box of each subarray whose corner the profile knows (geometry.subarrays)
    subarray_boxes: dict[str, Box] = field(default_factory=dict)
    #: MASK reference file: keyword -> value beyond the CRDS selectors lrscube always writes
    #: (e.g. READPATT, P_READPA, EXP_TYPE), and the DQ bits of reference pixels
    mask_file: dict[str, Any] = field(default_factory=dict)
    reference_pixel_flags: tuple[str, ...] = ("REFERENCE_PIXEL",)

    def reference_mask(self) -> np.ndarray:
        """(ny, nx) bool, read-only: the reference pixels (rows and columns of ``geometry``)."""
        return _reference_mask(tuple(self.frame_shape), tuple(self.reference_columns), tuple(self.reference_rows))

    def reference_pixel_bits(self) -> int:
        """DQ bits written on reference pixels in a MASK file."""
        bits = 0
        for name in self.reference_pixel_flags:
            bits |= flags.value(name)
        return bits

    def accepts(self, detector: str | None, exp_type: str | None, subarray: str | None) -> str | None:
        """None when a product of this detector/EXP_TYPE/subarray belongs in the cube, else why not."""
        if detector not in self.detectors:
            return f"detector {detector!r} is not one of {list(self.detectors)} accepted by mode profile {self.name!r}"
        if exp_type not in self.exp_types:
            return f"EXP_TYPE {exp_type!r} is not one of {list(self.exp_types)} accepted by mode profile {self.name!r}"
        if subarray not in self.subarrays:
            return f"SUBARRAY {subarray!r} is not one of {list(self.subarrays)} accepted by mode profile {self.name!r}"
        return None

    def flag_bits(self, cls: str) -> int:
        """DQ bits written for a defect of class ``cls``, with DO_NOT_USE where the policy says."""
        bits = flags.value(cls)
        if cls in self.do_not_use:
            bits |= flags.DO_NOT_USE
        return bits

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["regions"] = {k: {"y": [b.y0, b.y1], "x": [b.x0, b.x1]} for k, b in self.regions.items()}
        d["subarray_boxes"] = {k: {"y": [b.y0, b.y1], "x": [b.x0, b.x1]} for k, b in self.subarray_boxes.items()}
        return d


def configs_dir() -> Path:
    """Where the shipped profiles live (configs/ in a checkout, lrscube/configs when installed)."""
    return Path(str(resources.files("lrscube.configs")))


def available() -> list[str]:
    """Names of the shipped mode profiles."""
    return sorted(p.stem for p in configs_dir().glob("*.yaml") if _is_profile(p))


def _is_profile(path: Path) -> bool:
    with open(path) as f:
        head = yaml.safe_load(f)
    return isinstance(head, dict) and head.get("kind") == "mode-profile"


def _merge_detection(base: dict, child: dict) -> dict:
    out = dict(base)
    for k, v in child.items():
        out[k] = _merge_detection(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_with_base(path: Path, seen: tuple = ()) -> dict:
    """A profile's YAML with ``extends: NAME`` resolved.

    The child's top-level keys replace the base's, except ``detection:`` and ``simulation:``,
    merged key by key at every depth, and ``geometry:`` and ``mask_file:``, merged one level
    deep (a child's ``geometry.subarrays`` is the whole list): a mode inherits the detection
    parameters, the DO_NOT_USE policy and the detector of its base and states (with a reason,
    in a comment) only what it changes.
    """
    with open(path) as f:
        d = yaml.safe_load(f)
    if not isinstance(d, dict) or d.get("kind") != "mode-profile":
        raise ValueError(f"{path}: not a mode profile (needs 'kind: mode-profile')")
    base_name = d.pop("extends", None)
    if base_name is None:
        return d
    base_path = configs_dir() / f"{base_name}.yaml"
    if not base_path.exists() or base_name in seen:
        raise ValueError(f"{path}: 'extends: {base_name}' names no shipped profile (or a cycle)")
    base = _read_with_base(base_path, (*seen, base_name))
    merged = {**base, **d}
    for key in ("detection", "simulation"):
        merged[key] = _merge_detection(base.get(key) or {}, d.get(key) or {})
    for key in ("geometry", "mask_file"):  # a detector's entry replaces the base's whole
        merged[key] = {**(base.get(key) or {}), **(d.get(key) or {})}
    return merged


_REQUIRED = ("name", "instrument", "detectors", "exp_types", "subarrays", "geometry", "dispersion_axis")
_GEOMETRY_REQUIRED = ("frame_shape", "chunk", "axes", "outputs")
_GEOMETRY_KNOWN = {*_GEOMETRY_REQUIRED, "reference_columns", "reference_rows", "subarrays"}


def _ranges(v, what: str, source: str) -> tuple[tuple[int, int], ...]:
    try:
        out = tuple((int(a), int(b)) for a, b in (v or ()))
    except (TypeError, ValueError):
        raise ValueError(f"{source}: geometry.{what} must be a list of [start, end) pairs, got {v!r}") from None
    return out


def _subarray_boxes(subs: dict, frame_shape, source: str) -> dict[str, Box]:
    """geometry.subarrays (1-based SUBSTRT1/2, SUBSIZE1/2 as in headers) as 0-based full-frame boxes."""
    out = {}
    for name, d in (subs or {}).items():
        try:
            (x1, y1), (nx, ny) = d["substrt"], d["subsize"]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{source}: geometry.subarrays.{name} needs substrt: [SUBSTRT1, SUBSTRT2] and "
                             f"subsize: [SUBSIZE1, SUBSIZE2], got {d!r}") from None
        box = Box(int(y1) - 1, int(y1) - 1 + int(ny), int(x1) - 1, int(x1) - 1 + int(nx))
        if box.y0 < 0 or box.x0 < 0 or box.y1 > frame_shape[0] or box.x1 > frame_shape[1]:
            raise ValueError(f"{source}: geometry.subarrays.{name} {d!r} lies outside the "
                             f"{frame_shape[0]}x{frame_shape[1]} frame")
        out[str(name)] = box
    return out


def _geometry(g: dict, source: str) -> dict[str, Any]:
    """The Profile fields of a ``geometry:`` block, validated."""
    if not isinstance(g, dict):
        raise ValueError(f"{source}: geometry must be a mapping, got {g!r}")
    missing = [k for k in _GEOMETRY_REQUIRED if k not in g]
    unknown = set(g) - _GEOMETRY_KNOWN
    if missing or unknown:
        raise ValueError(f"{source}: geometry lacks {missing} or has unknown keys {sorted(unknown)} "
                         f"(known: {sorted(_GEOMETRY_KNOWN)})")
    frame = tuple(int(v) for v in g["frame_shape"])
    chunk = tuple(int(v) for v in g["chunk"])
    if len(frame) != 2 or len(chunk) != 2 or min(*frame, *chunk) <= 0:
        raise ValueError(f"{source}: geometry.frame_shape and chunk must be [rows, columns] > 0, "
                         f"got {g['frame_shape']!r}, {g['chunk']!r}")
    axes = g["axes"]
    try:
        axes = (int(axes["fastaxis"]), int(axes["slowaxis"]))
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{source}: geometry.axes needs fastaxis and slowaxis (+-1, +-2), got {axes!r}") from None
    if sorted(abs(a) for a in axes) != [1, 2]:
        raise ValueError(f"{source}: geometry.axes: one of fastaxis/slowaxis is +-1 and the other +-2, got {axes}")
    return {"frame_shape": frame, "chunk": chunk, "axes": axes,
            "reference_columns": _ranges(g.get("reference_columns"), "reference_columns", source),
            "reference_rows": _ranges(g.get("reference_rows"), "reference_rows", source),
            "outputs": Outputs.from_yaml(g["outputs"], source),
            "subarray_boxes": _subarray_boxes(g.get("subarrays"), frame, source)}


def _mask_file(d: dict, source: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    """(keywords, reference-pixel flags) of the ``mask_file:`` block."""
    d = dict(d or {})
    unknown = set(d) - {"keywords", "reference_pixel_flags"}
    if unknown:
        raise ValueError(f"{source}: mask_file: unknown key(s) {sorted(unknown)} (known: keywords, "
                         "reference_pixel_flags)")
    ref_flags = tuple(d.get("reference_pixel_flags") or ("REFERENCE_PIXEL",))
    for name in ref_flags:
        flags.value(name)
    return dict(d.get("keywords") or {}), ref_flags


def load(name_or_path: str | Path | Profile | None = None) -> Profile:
    """Load and validate a mode profile by name (``lrs``, ``mrs-short``, ...) or YAML path."""
    if isinstance(name_or_path, Profile):
        return name_or_path
    path = _profile_path(str(name_or_path or DEFAULT_MODE))
    d = _read_with_base(path)
    missing = [k for k in _REQUIRED if k not in d]
    if missing:
        raise ValueError(f"{path}: mode profile lacks {missing}")
    misplaced = [k for k in ("frame_shape", "reference_columns") if k in d]
    if misplaced:
        raise ValueError(f"{path}: {misplaced} belong in the geometry: block")
    geometry = _geometry(d["geometry"], str(path))
    keywords, ref_flags = _mask_file(d.get("mask_file"), str(path))
    axis = d["dispersion_axis"]
    if axis not in ("x", "y"):
        raise ValueError(f"{path}: dispersion_axis must be 'x' or 'y', got {axis!r}")
    photom = str(d.get("photom", "per-pixel"))
    if photom not in ("scalar", "per-pixel"):
        raise ValueError(f"{path}: photom must be 'scalar' or 'per-pixel', got {photom!r}")
    regions = {k: Box.from_yaml(k, v) for k, v in (d.get("regions") or {}).items()}
    dnu = tuple(d.get("do_not_use", ()))
    for cls in dnu:
        flags.value(cls)
    delivery = _delivery_block(d.get("delivery"), regions, path)
    prof = Profile(
        name=str(d["name"]),
        description=str(d.get("description", "")),
        instrument=str(d["instrument"]),
        detectors=tuple(d["detectors"]),
        exp_types=tuple(d["exp_types"]),
        subarrays=tuple(d["subarrays"]),
        dispersion_axis=axis,
        regions=regions,
        do_not_use=dnu,
        detection=dict(d.get("detection") or {}),
        simulation=dict(d.get("simulation") or {}),
        delivery=delivery,
        source=str(path),
        unit=str(d.get("unit", "DN/s")),
        photom=photom,
        mask_file=keywords,
        reference_pixel_flags=ref_flags,
        **geometry,
    )
    for sub in prof.subarrays:
        if sub != "FULL" and prof.subarray_boxes and sub not in prof.subarray_boxes:
            raise ValueError(f"{path}: subarray {sub!r} is accepted but geometry.subarrays gives no corner for it")
    return prof


def _profile_path(spec: str) -> Path:
    """A YAML path as given, or the shipped profile of that name."""
    path = Path(spec)
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        path = configs_dir() / f"{spec}.yaml"
        if not path.exists():
            raise ValueError(f"unknown mode profile {spec!r}: no file {path}; shipped profiles: {available()}")
    return path


def _delivery_block(block, regions: dict, path: Path) -> dict:
    """The ``delivery:`` block, its keys known and its regions the profile's."""
    delivery = dict(block or {})
    unknown = set(delivery) - {"regions", "min_interval_days", "min_changed_pixels"}
    if unknown:
        raise ValueError(f"{path}: delivery: unknown key(s) {sorted(unknown)} "
                         "(known: regions, min_interval_days, min_changed_pixels)")
    missing_regions = [r for r in delivery.get("regions") or () if r not in regions]
    if missing_regions:
        raise ValueError(f"{path}: delivery regions {missing_regions} are not regions of the profile "
                         f"(regions: {sorted(regions)})")
    return delivery


@functools.lru_cache(maxsize=1)
def detectors() -> dict[str, Profile]:
    """Detector name -> the first shipped profile describing it (frame, axes, instrument): what a
    MASK file of that detector must look like."""
    out: dict[str, Profile] = {}
    for name in available():
        prof = load(name)
        for det in prof.detectors:
            out.setdefault(det.upper(), prof)
    return out
