"""Deliveries: every set of MASK files ``export-crds`` wrote, recorded in the store by name, and
how two deliveries (or the masks at two dates) differ.

Layout::

    STORE/deliveries/<name>.json      the export's manifest: files, USEAFTERs, counts, rule,
                                      merge cost, the runs it came from
    STORE/deliveries/<name>.parquet   the files' masks, sparse: file, y, x, dq (flagged pixels)

Both are written once, atomically, by :func:`write_delivery` (the only writer: a transactional
store can make it part of the export's commit, with the name as a tag). ``lrscube deliveries``
lists them; ``lrscube diff A B`` compares two deliveries, or the masks valid at two dates.

Two deliveries are compared at every date either of them starts a file (from the later of the
two first USEAFTERs on): at each date, the file each delivery gives an exposure then. A pixel
that changed is counted once per class (DQ bit) and direction: ``gained`` (B flags it, A does
not) or ``lost``.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import flags, profiles
from ..storage import cube, engine
from ..storage import store as st
from .. import plots
from ..plots import class_order
from .delivery_rule import DeliveryRule
from .maskcube import BeforeValidity, default_frame, isot, mask_at, open_mask, to_datetime64

DELIVERIES = st.DELIVERIES
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


# --------------------------------------------------------------------------- the record


def check_name(name: str) -> str:
    if not NAME_RE.match(str(name)):
        raise ValueError(f"delivery name {name!r}: use letters, digits, '.', '_' and '-' (at most 80, "
                         "starting with a letter or digit)")
    return str(name)


def _url(store: str, name: str, ext: str) -> str:
    return st.join(str(store), DELIVERIES, f"{name}.{ext}")


def exists(store: str, name: str) -> bool:
    fs, path = st.fs_and_path(_url(store, name, "json"))
    return bool(fs.exists(path))


def next_name(store: str) -> str:
    """``delivery-NNN``: the first free number after the deliveries recorded so far."""
    n = len(list_deliveries(store)) + 1
    while exists(store, f"delivery-{n:03d}"):
        n += 1
    return f"delivery-{n:03d}"


def sparse_rows(k: int, frame: np.ndarray) -> pd.DataFrame:
    """The flagged pixels of file ``k``'s mask: file, y, x, dq."""
    y, x = np.nonzero(frame)
    return pd.DataFrame({"file": np.full(len(y), k, "int32"), "y": y.astype("int32"), "x": x.astype("int32"),
                         "dq": frame[y, x].astype("uint32")})


def write_delivery(store: str, name: str, record: dict, masks: pd.DataFrame) -> str:
    """Record a delivery in the store: its manifest and its files' masks. Returns the record's URL.
    In a format-4 store the cube's last commit is also tagged ``delivery-NAME`` (its snapshot id
    in the record as ``cube_snapshot``): the exposures the delivery was made from stay readable
    as they were (``readonly_session(tag="delivery-NAME")``)."""
    if cube.is_repository(store):
        tag, snapshot = engine.tag_last_commit(cube.cube_url(store), f"delivery-{name}")
        record = {**record, "cube_snapshot": snapshot, "cube_tag": tag}
    buf = io.BytesIO()
    masks.to_parquet(buf, index=False)
    st.write_bytes_atomic(_url(store, name, "parquet"), buf.getvalue())
    url = _url(store, name, "json")
    st.write_bytes_atomic(url, json.dumps(record, indent=1, default=str).encode())
    return url


def list_deliveries(store: str) -> list[dict]:
    """Every recorded delivery, oldest first."""
    fs, path = st.fs_and_path(st.join(str(store), DELIVERIES))
    if not fs.exists(path):
        return []
    names = sorted(p for p in fs.ls(path, detail=False) if p.endswith(".json"))
    if not names:
        return []
    blobs = fs.cat(names)
    recs = [json.loads(blobs[p]) for p in names]
    return sorted(recs, key=lambda r: r.get("created", ""))


def read_delivery(store: str, name: str) -> dict:
    url = _url(store, name, "json")
    fs, path = st.fs_and_path(url)
    if not fs.exists(path):
        known = [r.get("delivery") for r in list_deliveries(store)]
        raise FileNotFoundError(f"{url}: no delivery named {name!r} in {store} (recorded: {known or 'none'})")
    with fs.open(path, "rb") as f:
        return json.loads(f.read())


def read_masks(store: str, name: str) -> pd.DataFrame:
    url = _url(store, name, "parquet")
    fs, path = st.fs_and_path(url)
    with fs.open(path, "rb") as f:
        return pd.read_parquet(f)


def deliveries_table(records: list[dict]) -> pd.DataFrame:
    """One row per delivery: name, when, files, USEAFTER span, exposures, rule, what merging missed."""
    rows = []
    for r in records:
        files = r.get("files", [])
        rule = r.get("rule") or {}
        pix = ((r.get("merge_cost") or {}).get("pixels") or {})
        pe = ((r.get("merge_cost") or {}).get("pixel_exposures") or {})
        rows.append({
            "delivery": r.get("delivery"), "created": r.get("created"), "files": len(files),
            "first_useafter": files[0]["useafter"] if files else "", "last_useafter": files[-1]["useafter"] if files else "",
            "exposures": (r.get("data") or {}).get("n_exposures"),
            "rule": rule.get("describe", "every epoch" if r.get("every_epoch") else ""),
            "missed_pixels": pix.get("missed"), "missed_pixel_exposures": pe.get("missed"),
            "out": r.get("out"), "run": (r.get("run") or {}).get("id"),
        })
    return pd.DataFrame(rows, columns=["delivery", "created", "files", "first_useafter", "last_useafter",
                                       "exposures", "rule", "missed_pixels", "missed_pixel_exposures", "out", "run"])


def format_deliveries(records: list[dict]) -> str:
    if not records:
        return "no deliveries recorded (lrscube export-crds records one)"
    lines = []
    for _, r in deliveries_table(records).iterrows():
        missed = "" if r["missed_pixels"] is None or pd.isna(r["missed_pixels"]) else \
            f"; merging missed {int(r['missed_pixels'])} pixels ({r['missed_pixel_exposures']:.0f} pixel-exposures)"
        lines.append(f"{r['delivery']}  created {r['created']}  {r['files']} files, USEAFTER {r['first_useafter']} "
                     f"to {r['last_useafter']}, {r['exposures']} exposures{missed}\n"
                     f"      {r['rule']}; in {r['out']} (run {r['run']})")
    return "\n".join(lines)


# --------------------------------------------------------------------------- masks to compare


@dataclass
class Masks:
    """Masks over time to compare: a delivery's files, or one mask at one date."""

    label: str
    useafters: list[str]  # USEAFTER of each mask (one for a date: the date itself)
    frames: list[np.ndarray]
    files: list[str] = field(default_factory=list)

    def at(self, t: str) -> int | None:
        """Index of the mask valid at ISO time ``t`` (latest USEAFTER at or before it)."""
        i = int(np.searchsorted(np.array(self.useafters), t, side="right")) - 1
        return i if i >= 0 else None


def delivery_masks(store: str, name: str, frame_shape) -> Masks:
    rec = read_delivery(store, name)
    rows = read_masks(store, name)
    frames = []
    for k in range(len(rec["files"])):
        f = np.zeros(tuple(frame_shape), "uint32")
        r = rows[rows["file"] == k]
        f[r["y"].to_numpy(), r["x"].to_numpy()] = r["dq"].to_numpy("uint32")
        frames.append(f)
    return Masks(label=name, useafters=[f["useafter"] for f in rec["files"]], frames=frames,
                 files=[f["file"] for f in rec["files"]])


def date_mask(store: str, time, delivery: str | None, frame_shape) -> Masks:
    """The mask valid at ``time``: from a delivery's files, or from the store's mask cube."""
    t = isot(to_datetime64(time))
    if delivery:
        d = delivery_masks(store, delivery, frame_shape)
        i = d.at(t)
        if i is None:
            raise ValueError(f"{t} is before the first file of delivery {delivery} (USEAFTER {d.useafters[0]})")
        return Masks(label=f"{t} ({delivery}: {d.files[i]})", useafters=[t], frames=[d.frames[i]], files=[d.files[i]])
    try:
        m = mask_at(store, time, extrapolate=False)
    except BeforeValidity as e:  # a diff compares known masks: none is known before the first epoch
        raise BeforeValidity(e.reason, "the mask cube holds no mask before then") from None
    return Masks(label=f"{t} (mask cube epoch {m.attrs['epoch']})", useafters=[t],
                 frames=[np.asarray(m.values, "uint32")], files=[f"epoch {m.attrs['epoch']}"])


# --------------------------------------------------------------------------- the diff (pure)


def pixel_changes(a: np.ndarray, b: np.ndarray, in_region: np.ndarray | None = None) -> pd.DataFrame:
    """One row per pixel and DQ bit that differs from mask ``a`` to mask ``b``: y, x, class,
    change (gained: set in b only; lost: set in a only), before, after, in_region."""
    d = np.asarray(a, "uint32") ^ np.asarray(b, "uint32")
    y, x = np.nonzero(d)
    rows = []
    for name, value in flags.PIXEL.items():
        if not value:
            continue
        sel = (d[y, x] & np.uint32(value)) != 0
        if not sel.any():
            continue
        yy, xx = y[sel], x[sel]
        gained = (np.asarray(b, "uint32")[yy, xx] & np.uint32(value)) != 0
        rows.append(pd.DataFrame({"y": yy, "x": xx, "class": name, "change": np.where(gained, "gained", "lost"),
                                  "before": np.asarray(a, "uint32")[yy, xx], "after": np.asarray(b, "uint32")[yy, xx],
                                  "in_region": in_region[yy, xx] if in_region is not None else True}))
    if not rows:
        return pd.DataFrame(columns=["y", "x", "class", "change", "before", "after", "in_region"])
    return pd.concat(rows, ignore_index=True)


def class_table(changes: pd.DataFrame) -> pd.DataFrame:
    """Pixels gained and lost per class, in total and in the regions (each pixel once per class
    and direction)."""
    cols = ["class", "gained", "lost", "gained_in_regions", "lost_in_regions"]
    if changes is None or not len(changes):
        return pd.DataFrame(columns=cols)
    u = changes.drop_duplicates(["y", "x", "class", "change"])
    out = []

    for c in class_order(u["class"].unique()):
        g = u[u["class"] == c]
        out.append({"class": c, "gained": int((g["change"] == "gained").sum()), "lost": int((g["change"] == "lost").sum()),
                    "gained_in_regions": int(((g["change"] == "gained") & g["in_region"].astype(bool)).sum()),
                    "lost_in_regions": int(((g["change"] == "lost") & g["in_region"].astype(bool)).sum())})
    return pd.DataFrame(out, columns=cols)


@dataclass
class Diff:
    """What :func:`diff` found."""

    a: str
    b: str
    dates: pd.DataFrame  # per comparison date: date, file_a, file_b, pixels changed (in regions)
    changes: pd.DataFrame  # per pixel, class and date
    by_class: pd.DataFrame
    regions: list[str]
    files: dict[str, str] = field(default_factory=dict)

    @property
    def n_pixels(self) -> int:
        return int(self.changes[["y", "x"]].drop_duplicates().shape[0]) if len(self.changes) else 0

    def __str__(self) -> str:
        where = ", ".join(self.regions) if self.regions else "the whole frame"
        lines = [f"diff {self.a} -> {self.b}: {self.n_pixels} pixels differ at {len(self.dates)} date(s) "
                 f"compared (regions: {where})"]
        if len(self.by_class):
            lines.append(f"  {'class':<16}{'gained':>8}{'lost':>8}   in regions: gained  lost")
            for _, r in self.by_class.iterrows():
                lines.append(f"  {r['class']:<16}{r['gained']:>8}{r['lost']:>8}{r['gained_in_regions']:>20}"
                             f"{r['lost_in_regions']:>6}")
        if len(self.dates) > 1:
            lines.append("  per date (file A -> file B: pixels changed, in regions):")
            for _, r in self.dates.iterrows():
                lines.append(f"    {r['date']}  {r['file_a']} -> {r['file_b']}: {r['pixels']} ({r['pixels_in_regions']})")
        lines += [f"  {k}: {v}" for k, v in self.files.items()]
        return "\n".join(lines)


def compare(a: Masks, b: Masks, in_region: np.ndarray | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Compare two sets of masks at every date either starts a mask (from the later first one).

    Returns (dates, changes): one row per date compared, one per changed pixel, class and date.
    """
    if len(a.useafters) == 1 and len(b.useafters) == 1:  # two single masks (two dates)
        dates = [None]
    else:
        start = max(a.useafters[0], b.useafters[0])
        dates = sorted({t for t in (*a.useafters, *b.useafters) if t >= start})
    rows, changes = [], []
    for t in dates:
        ia, ib = (0, 0) if t is None else (a.at(t), b.at(t))
        ch = pixel_changes(a.frames[ia], b.frames[ib], in_region)
        ch.insert(0, "date", t or f"{a.useafters[0]} vs {b.useafters[0]}")
        changes.append(ch)
        px = ch[["y", "x"]].drop_duplicates()
        rows.append({"date": t or f"{a.useafters[0]} vs {b.useafters[0]}", "file_a": a.files[ia] if a.files else ia,
                     "file_b": b.files[ib] if b.files else ib, "pixels": int(len(px)),
                     "pixels_in_regions": int(ch.loc[ch["in_region"].astype(bool), ["y", "x"]].drop_duplicates().shape[0])
                     if len(ch) else 0})
    return pd.DataFrame(rows), (pd.concat(changes, ignore_index=True) if changes else pixel_changes(
        np.zeros((1, 1), "uint32"), np.zeros((1, 1), "uint32")))


def diff(store: str, a: str, b: str, out: str | Path | None = None, delivery: str | None = None) -> Diff:
    """How two deliveries, or the masks valid at two dates, differ; with a map.

    ``a``/``b``: delivery names (both), or dates (ISO or MJD; both), the masks then taken from
    the store's mask cube or, with ``delivery``, from that delivery's files. ``out``: a folder
    for ``diff_<a>_<b>.png`` (map), ``.csv`` (every changed pixel) and ``.json`` (summary).
    """

    store = str(store)
    try:
        attrs = dict(open_mask(store).attrs)
    except FileNotFoundError:
        attrs = {}
    frame_shape = default_frame(attrs.get("frame_shape"))
    try:
        profile = profiles.load(attrs.get("profile") or None)
        rule = DeliveryRule.from_profile(profile)
    except ValueError:
        profile, rule = None, DeliveryRule()
    if delivery is None:  # the stored deliveries' frame, when the mask cube is gone
        recs = {r.get("delivery"): r for r in list_deliveries(store)}
        if a in recs and recs[a].get("frame_shape"):
            frame_shape = tuple(recs[a]["frame_shape"])
    is_a, is_b = exists(store, a), exists(store, b)
    if is_a and is_b:
        ma, mb = delivery_masks(store, a, frame_shape), delivery_masks(store, b, frame_shape)
    elif not is_a and not is_b:
        ma, mb = (date_mask(store, t, delivery, frame_shape) for t in (a, b))
    else:
        raise ValueError(f"give two deliveries or two dates: {a if is_a else b!r} is a delivery, "
                         f"{b if is_a else a!r} is not (deliveries: {[r.get('delivery') for r in list_deliveries(store)]})")
    in_region = rule.region_frame(frame_shape)
    dates, changes = compare(ma, mb, in_region if rule.regions else None)
    res = Diff(a=ma.label, b=mb.label, dates=dates, changes=changes, by_class=class_table(changes),
               regions=list(rule.regions))
    if out is not None:
        res.files = write_diff(res, Path(out), f"{_slug(a)}_{_slug(b)}", frame_shape, profile, rule)
    return res


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(s)).strip("-")


def write_diff(res: Diff, out: Path, stem: str, frame_shape, profile, rule) -> dict[str, str]:
    """The map (PNG), every changed pixel (CSV) and the summary (JSON) of a diff."""
    import warnings


    out.mkdir(parents=True, exist_ok=True)
    outlines = {}
    if profile is not None:
        for n in rule.regions:
            bx = profile.regions[n]
            outlines[n] = (bx.y0, bx.y1, bx.x0, bx.x1)
    png, csv_, js = out / f"diff_{stem}.png", out / f"diff_{stem}.csv", out / f"diff_{stem}.json"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="matplotlib")
        fig = plots.diff_map_figure(res.changes, frame_shape, outlines, title=f"{res.a} -> {res.b}")
        fig.savefig(png, dpi=110)
    res.changes.to_csv(csv_, index=False)
    js.write_text(json.dumps({"a": res.a, "b": res.b, "pixels": res.n_pixels, "regions": res.regions,
                              "by_class": res.by_class.to_dict("records"), "dates": res.dates.to_dict("records")},
                             indent=1, default=str))
    return {"map": str(png), "pixels": str(csv_), "summary": str(js)}


def history_frame(records: list[dict]) -> pd.DataFrame:
    """One row per file of every delivery (for the report's timeline): delivery, file, useafter."""
    rows = [{"delivery": r.get("delivery"), "created": r.get("created"), "file": f.get("file"),
             "useafter": f.get("useafter"), "n_flagged": f.get("n_flagged")}
            for r in records for f in r.get("files", [])]
    return pd.DataFrame(rows, columns=["delivery", "created", "file", "useafter", "n_flagged"])
