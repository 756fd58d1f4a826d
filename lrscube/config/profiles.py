"""Mode profiles: what one instrument mode's data look like, loaded once from YAML.

A profile (``configs/<name>.yaml``) names the detector, the EXP_TYPEs and subarrays a cube
accepts, the dispersion axis, regions of the detector, the detection parameters and the
DO_NOT_USE policy. Adding a mode is adding a profile, not code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

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

    The child's top-level keys replace the base's, except ``detection:``, which is merged key by
    key: a mode inherits the detection parameters and the DO_NOT_USE policy of its base and
    states (with a reason, in a comment) only what it changes.
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
    merged["detection"] = _merge_detection(base.get("detection") or {}, d.get("detection") or {})
    return merged


_REQUIRED = ("name", "instrument", "detectors", "exp_types", "subarrays", "frame_shape", "dispersion_axis")


def load(name_or_path: str | Path | Profile | None = None) -> Profile:
    """Load and validate a mode profile by name (``lrs``, ``mrs-short``, ...) or YAML path."""
    if isinstance(name_or_path, Profile):
        return name_or_path
    spec = str(name_or_path or DEFAULT_MODE)
    path = Path(spec)
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        path = configs_dir() / f"{spec}.yaml"
        if not path.exists():
            raise ValueError(f"unknown mode profile {spec!r}: no file {path}; shipped profiles: {available()}")
    d = _read_with_base(path)
    missing = [k for k in _REQUIRED if k not in d]
    if missing:
        raise ValueError(f"{path}: mode profile lacks {missing}")
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
    delivery = dict(d.get("delivery") or {})
    unknown = set(delivery) - {"regions", "min_interval_days", "min_changed_pixels"}
    if unknown:
        raise ValueError(f"{path}: delivery: unknown key(s) {sorted(unknown)} "
                         "(known: regions, min_interval_days, min_changed_pixels)")
    missing_regions = [r for r in delivery.get("regions") or () if r not in regions]
    if missing_regions:
        raise ValueError(f"{path}: delivery regions {missing_regions} are not regions of the profile "
                         f"(regions: {sorted(regions)})")
    prof = Profile(
        name=str(d["name"]),
        description=str(d.get("description", "")),
        instrument=str(d["instrument"]),
        detectors=tuple(d["detectors"]),
        exp_types=tuple(d["exp_types"]),
        subarrays=tuple(d["subarrays"]),
        frame_shape=tuple(int(v) for v in d["frame_shape"]),
        dispersion_axis=axis,
        reference_columns=tuple(tuple(int(v) for v in r) for r in d.get("reference_columns", ())),
        regions=regions,
        do_not_use=dnu,
        detection=dict(d.get("detection") or {}),
        simulation=dict(d.get("simulation") or {}),
        delivery=delivery,
        source=str(path),
        unit=str(d.get("unit", "DN/s")),
        photom=photom,
    )
    return prof
