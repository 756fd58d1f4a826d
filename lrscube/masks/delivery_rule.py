"""The delivery rule: when a CRDS delivery gets a new MASK file.

A reference-file team does not deliver one file per change: a new file is worth it when the mask
changed *materially* where the mode's light falls, and not more often than every so often. The
rule (``delivery:`` block of the mode profile, overridable per export)::

    regions             profile regions where a change counts (LRS: slit, slit_spectrum, slitless);
                        none given: the whole frame
    min_interval_days   files at least this many days apart (default 30: about monthly)
    min_changed_pixels  a change is material when at least this many pixels in the regions
                        changed one class (one DQ bit: gained or lost), counted per class;
                        DO_NOT_USE counts as a class of its own (default 1)

How the export applies it (:func:`lrscube.masks.maskcube.plan_epochs` with ``rule=``):

1. a file may start only at an epoch where some pixel in the regions changes
   (:func:`candidate_starts`); changes elsewhere ride along in the next file;
2. among those starts, files at least ``min_interval_days`` apart (and at most ``max_files``),
   the merge planner picks the cut that gets the fewest pixel-exposures wrong (each weighted
   by its exposure time), as for ``--max-files``;
3. a file whose mask differs from the previous file's by less than ``min_changed_pixels`` of
   every class in the regions is folded into it (:func:`fold_immaterial`), until every file
   differs materially from the one before.

Pure numpy functions of the planner's arrays; the planner and the export compose them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import flags

#: defaults when a profile has no ``delivery:`` block
DEFAULT_MIN_INTERVAL_DAYS = 30.0
DEFAULT_MIN_CHANGED_PIXELS = 1
KEYS = ("regions", "min_interval_days", "min_changed_pixels")


@dataclass(frozen=True)
class DeliveryRule:
    """When a delivery starts a new MASK file (see the module docstring)."""

    regions: tuple[str, ...] = ()
    boxes: tuple[tuple[int, int, int, int], ...] = ()  # (y0, y1, x0, x1), 0-based half-open
    min_interval_days: float = DEFAULT_MIN_INTERVAL_DAYS
    min_changed_pixels: int = DEFAULT_MIN_CHANGED_PIXELS

    def __post_init__(self):
        if not float(self.min_interval_days) >= 0:
            raise ValueError(f"delivery min_interval_days must be >= 0, got {self.min_interval_days}")
        if int(self.min_changed_pixels) < 1:
            raise ValueError(f"delivery min_changed_pixels must be >= 1, got {self.min_changed_pixels}")

    @classmethod
    def from_profile(cls, profile, min_interval_days: float | None = None,
                     min_changed_pixels: int | None = None) -> DeliveryRule:
        """The profile's rule (its ``delivery:`` block), with per-export overrides."""
        d = dict(getattr(profile, "delivery", None) or {})
        names = tuple(d.get("regions") or ())
        regions = getattr(profile, "regions", {}) or {}
        missing = [n for n in names if n not in regions]
        if missing:
            raise ValueError(f"delivery regions {missing} are not regions of mode profile "
                             f"{getattr(profile, 'name', '?')!r} (regions: {sorted(regions)})")
        boxes = tuple((regions[n].y0, regions[n].y1, regions[n].x0, regions[n].x1) for n in names)
        return cls(regions=names, boxes=boxes,
                   min_interval_days=float(d.get("min_interval_days", DEFAULT_MIN_INTERVAL_DAYS)
                                           if min_interval_days is None else min_interval_days),
                   min_changed_pixels=int(d.get("min_changed_pixels", DEFAULT_MIN_CHANGED_PIXELS)
                                          if min_changed_pixels is None else min_changed_pixels))

    def region_frame(self, frame_shape) -> np.ndarray:
        """Boolean full frame: True where a change counts (everywhere when no regions are named)."""
        if not self.boxes:
            return np.ones(tuple(frame_shape), bool)
        out = np.zeros(tuple(frame_shape), bool)
        for y0, y1, x0, x1 in self.boxes:
            out[y0:y1, x0:x1] = True
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"regions": list(self.regions) or "whole frame", "min_interval_days": float(self.min_interval_days),
                "min_changed_pixels": int(self.min_changed_pixels)}

    def describe(self) -> str:
        where = ", ".join(self.regions) if self.regions else "the whole frame"
        return (f"a new file only where the mask changed in {where} by at least {self.min_changed_pixels} "
                f"pixel(s) of one class, and at least {self.min_interval_days:g} days after the previous file")


def class_changes(prev: np.ndarray, cur: np.ndarray) -> dict[str, int]:
    """Pixels whose DQ bit differs between two masks (gained or lost), per bit name."""
    diff = np.asarray(prev, "uint32") ^ np.asarray(cur, "uint32")
    diff = diff[diff != 0]
    out: dict[str, int] = {}
    for name, value in flags.PIXEL.items():
        if value:
            n = int(np.count_nonzero(diff & np.uint32(value)))
            if n:
                out[name] = n
    return out


def is_material(prev: np.ndarray, cur: np.ndarray, min_changed_pixels: int) -> bool:
    """At least ``min_changed_pixels`` pixels changed one class between the two masks."""
    return any(n >= min_changed_pixels for n in class_changes(prev, cur).values())


def candidate_starts(values: np.ndarray, in_region: np.ndarray) -> np.ndarray:
    """(E,) bool: epochs where some pixel in the regions changes (epoch 0 always)."""
    E = values.shape[0]
    out = np.zeros(E, bool)
    if E:
        out[0] = True
    if E > 1 and in_region.any():
        v = values[:, in_region]
        out[1:] = np.any(v[1:] != v[:-1], axis=1)
    return out


def fold_immaterial(segments: list[tuple[int, int]], merged_value, in_region: np.ndarray,
                    min_changed_pixels: int) -> list[tuple[int, int]]:
    """Fold every file whose mask in the regions does not differ materially from the previous
    file's into that file, until none is left.

    ``merged_value(a, b)`` returns the (P,) mask the planner gives epochs a..b merged.
    """
    segs = list(segments)
    vals = [merged_value(a, b) for a, b in segs]
    s = 1
    while s < len(segs):
        if is_material(vals[s - 1][in_region], vals[s][in_region], min_changed_pixels):
            s += 1
            continue
        a, b = segs[s - 1][0], segs[s][1]
        segs[s - 1:s + 1] = [(a, b)]
        vals[s - 1:s + 1] = [merged_value(a, b)]
        s = max(1, s - 1)  # the merged file's value changed: check it against its predecessor again
    return segs


def pixels_wrong(values: np.ndarray, merged: np.ndarray, segments: list[tuple[int, int]],
                 seen: np.ndarray, in_region: np.ndarray | None = None) -> dict[str, int]:
    """Distinct pixels a merged delivery gets wrong for at least one exposure that sees them.

    ``values`` (E, P) the unmerged epochs' masks, ``merged`` (S, P) the files', ``seen`` (E, P)
    True where epoch e has an exposure covering pixel p. ``missed``: bad then, the file clean;
    ``wrongly_flagged``: good then, the file flags it; ``relabelled``: both flagged, other bits.
    ``changing``: the pixels whose state changes at all (the others are never wrong). With
    ``in_region`` the same counts within the rule's regions (``*_in_regions``).
    """
    P = values.shape[1]
    missed = np.zeros(P, bool)
    wrong = np.zeros(P, bool)
    relab = np.zeros(P, bool)
    for s, (a, b) in enumerate(segments):
        truth = values[a:b + 1]
        m = merged[s][None]
        sn = seen[a:b + 1]
        missed |= np.any((truth != 0) & (m == 0) & sn, axis=0)
        wrong |= np.any((truth == 0) & (m != 0) & sn, axis=0)
        relab |= np.any((truth != 0) & (m != 0) & (truth != m) & sn, axis=0)
    out = {"missed": int(missed.sum()), "wrongly_flagged": int(wrong.sum()), "relabelled": int(relab.sum()),
           "changing": int(P)}
    if in_region is not None:
        out.update({"changing_in_regions": int(in_region.sum()),
                    "missed_in_regions": int((missed & in_region).sum()),
                    "wrongly_flagged_in_regions": int((wrong & in_region).sum()),
                    "relabelled_in_regions": int((relab & in_region).sum())})
    return out
