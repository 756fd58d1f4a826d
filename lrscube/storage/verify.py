"""``lrscube verify``: every stored byte of a store checked against its checksum.

What is checked, part by part (docs/storage.md, "Checksums")::

    exposures/zarr.json        present and readable, with the lrscube attributes
    exposures/<array>          every array's metadata; sci/err/dq long enough for the committed slots
    coordinates                every chunk of time, mjd, filename, ...: crc32c (format 3)
    sci, err, dq               each committed exposure's shard: present, its index's crc32c, every
                               chunk's crc32c (format 3; format 2 chunks are decompressed instead),
                               and every chunk its footprint covers present
    intscat (if the cube has it)  the same, for the exposures that have the plane: a shard is
                               required of a rateints exposure of 3 or more integrations (product
                               and nints coordinates); one present elsewhere is checked too
    the mask cube              every chunk of every array (crc32c in stores written since it has one)
    intervals, ingest log      every parquet page's CRC
    detect.json                readable

The shards are checked without decoding their pixels (a crc32c of the compressed bytes), so
verify reads the store once at disk speed. Damage is reported with the exposures it affects
(file name and slot); ``lrscube drop`` removes those, and ingesting their files again restores
them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import zarr
from zarr.core.sync import sync

from . import cube
from . import store as st
from .shards import Unreadable, get_all, shard_layout, sync

#: slots whose shards are fetched together
BATCH = 64


@dataclass
class Problem:
    part: str  #: what is damaged: an array, a table, a metadata object
    what: str  #: how
    slot: int | None = None
    exposure: str | None = None


@dataclass
class VerifyReport:
    store: str
    checked: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def affected(self) -> list[tuple[int, str]]:
        """(slot, file name) of every exposure with damaged data, in slot order."""
        return sorted({(p.slot, p.exposure or "") for p in self.problems if p.slot is not None})

    def __str__(self) -> str:
        counts = ", ".join(f"{n} {k}" for k, n in self.checked.items())
        head = (f"verify {self.store}: {'OK' if self.ok else f'{len(self.problems)} problems'} "
                f"(checked {counts or 'nothing'})")
        lines = [head] + [f"  note: {n}" for n in self.notes]
        for p in self.problems:
            who = f" [slot {p.slot}{', ' + p.exposure if p.exposure else ''}]" if p.slot is not None else ""
            lines.append(f"  {p.part}{who}: {p.what}")
        if self.affected:
            lines.append(f"exposures affected ({len(self.affected)}): drop them with "
                         f"`lrscube drop --store {self.store} NAME...`, then ingest their files again:")
            lines += [f"  {name or '(name unreadable)'}  slot:{slot}" for slot, name in self.affected]
        return "\n".join(lines)


def verify(store: str) -> VerifyReport:
    """Check the whole store; returns a report (``.ok``, ``.problems``, ``.affected``)."""
    store = str(store)
    rep = VerifyReport(store=store)
    _verify_cube(store, rep)
    _verify_detect(store, rep)
    if st.exists(store, st.INGEST_LOG):
        _table(st.join(store, st.INGEST_LOG), st.INGEST_LOG, rep)
    return rep


def _verify_cube(store: str, rep: VerifyReport) -> None:
    try:
        if not cube.exists(store):
            rep.notes.append("no exposure cube")
            return
        attrs = cube.info(store)
    except st.StoreError as e:
        rep.problems.append(Problem("exposures/zarr.json", str(e)))
        return
    try:
        cube.check_metadata(store, attrs)
    except st.CorruptDataError as e:
        rep.problems.append(Problem("exposures metadata", e.reason))
    n = int(attrs["n_committed"])
    version = int(attrs.get("format_version", 1))
    if version < 3:
        rep.notes.append(f"exposure cube format {version}: its chunks carry no checksum (format 3 does); "
                         "damage is found only where it makes a chunk undecodable")
    g = zarr.open_group(cube.zarr_store(cube.cube_url(store), read_only=True), mode="r")
    arrays = {}
    for name in (*cube.PLANES, "time", *cube.COORDS, "y", "x"):
        try:
            arrays[name] = g[name]
        except KeyError:
            if name in cube.DATA_VARS or name == "time":  # an optional plane may be absent
                rep.problems.append(Problem(f"exposures/{name}", "array missing"))
        except Exception as e:  # noqa: BLE001 - unreadable metadata of any kind
            rep.problems.append(Problem(f"exposures/{name}/zarr.json", f"unreadable ({type(e).__name__}: {e})"))
    names = _coordinates(arrays, n, rep, attrs)
    kept = cube.kept_slots(attrs)
    for name in cube.PLANES:
        a = arrays.get(name)
        if a is None:
            continue
        if a.shape[0] < n:
            rep.problems.append(Problem(f"exposures/{name}", f"{a.shape[0]} slots, fewer than the {n} committed"))
            continue
        required = None if name in cube.DATA_VARS else _has_plane(arrays, n)
        _shards(a, name, kept, names, _footprints(arrays, n), rep, required)
    rep.checked["exposures"] = len(kept)


def _coordinates(arrays: dict, n: int, rep: VerifyReport, attrs: dict) -> list[str] | None:
    """Check every chunk of the 1-D arrays, and their values against the checksums of the last
    commit; returns the file names (None if unreadable)."""
    names = None
    chunks = 0
    read: dict[str, list] = {}  # each coordinate's chunks as read, for its checksum
    whole = set()  # ... where every one of them read
    for name, a in arrays.items():
        if name in cube.PLANES:
            continue
        read[name] = []
        whole.add(name)
        for k in range(a.cdata_shape[0]):
            lo, hi = k * a.chunks[0], min((k + 1) * a.chunks[0], a.shape[0])
            if name not in ("y", "x") and lo >= n:
                break
            chunks += 1
            try:
                # every append writes these for its slots and zarr stores no all-fill chunk, so
                # one not there is a reference lost (plain zarr would read it as fill values)
                if name in cube.ALWAYS_WRITTEN and not sync(a.store_path.store.exists(
                        f"{a.path}/{a.metadata.encode_chunk_key((k,))}")):
                    raise st.CorruptDataError("chunk missing from the committed state")
                read[name].append(a.get_block_selection((k,)))
            except Exception as e:  # noqa: BLE001 - crc mismatch (ValueError) or undecodable bytes
                whole.discard(name)
                what = f"chunk {k} (slots {lo}..{hi - 1}) corrupt ({type(e).__name__}: {e})"
                rep.problems.append(Problem(f"exposures/{name}", what))
                if name in ("filename", "time", "mjd"):  # the exposures of this chunk lose their identity
                    rep.problems += [Problem(f"exposures/{name}", "coordinate unreadable", slot=i)
                                     for i in range(lo, min(hi, n))]
    rep.checked["coordinate chunks"] = chunks
    values = {k: np.concatenate(v)[:n] if v else np.array([]) for k, v in read.items() if k in whole}
    for name in cube.failed_coords(attrs, values):
        rep.problems.append(Problem(f"exposures/{name}", "the values fail the checksum (crc32c) of the last "
                                    "commit: a chunk reference lost or changed in the committed state"))
    if "filename" in whole:
        names = [str(v) for v in values["filename"]]
    for p in rep.problems:
        if p.slot is not None and names is not None and p.exposure is None:
            p.exposure = names[p.slot]
    return names


def _footprints(arrays: dict, n: int):
    try:
        return np.stack([np.asarray(arrays[k][:n], dtype=np.int64) for k in ("y0", "x0", "ny", "nx")], axis=1)
    except Exception:  # noqa: BLE001 - missing (old store) or unreadable (reported): no footprint check
        return None


def _has_plane(arrays: dict, n: int) -> np.ndarray:
    """(n,) bool: the slots whose exposures have the optional plane ``intscat`` (a rateints
    product of 3 or more integrations); all False where the coordinates cannot be read."""
    try:
        product = np.array([str(v) for v in arrays["product"][:n]])
        nints = np.asarray(arrays["nints"][:n], dtype=np.int64)
    except Exception:  # noqa: BLE001 - missing or unreadable (reported): every shard optional
        return np.zeros(n, bool)
    return np.isin(product, ("rateints", "calints")) & (nints >= 3)


def _shards(a: zarr.Array, name: str, slots: np.ndarray, names, footprints, rep: VerifyReport,
            required: np.ndarray | None = None) -> None:
    """Check the shards of ``slots``; ``required`` (per slot, optional planes): where False, a
    missing shard is an exposure without the plane, not damage."""
    layout = shard_layout(a)
    part = f"exposures/{name}"

    def add(slot, what):
        rep.problems.append(Problem(part, what, slot=int(slot), exposure=names[slot] if names else None))

    if layout is None:  # format 1 (a chunk per object) or a layout zarr writes: read through zarr
        for i in slots:
            try:
                a[int(i)]
            except Exception as e:  # noqa: BLE001
                add(i, f"unreadable ({type(e).__name__}: {e})")
        rep.checked[f"{name} frames"] = len(slots)
        return
    cy, cx = layout.chunk
    n_chunks = 0
    for b0 in range(0, len(slots), BATCH):
        batch = slots[b0:b0 + BATCH]
        blobs = sync(get_all([a.store_path / a.metadata.encode_chunk_key((int(i), 0, 0)) for i in batch]))
        for i, blob in zip(batch, blobs, strict=True):
            if blob is None:
                if required is None or required[i]:
                    add(i, "shard missing: a committed exposure's data is not in the store")
                continue
            if isinstance(blob, Unreadable):
                add(i, f"shard unreadable ({blob})")
                continue
            for chunk, what in layout.check(blob):
                add(i, what if chunk is None else f"chunk {chunk}: {what}")
            if footprints is not None and not any(p.slot == i and p.part == part for p in rep.problems[-3:]):
                y0, x0, ny, nx = footprints[i]
                try:
                    index = layout._index(blob)
                except st.CorruptDataError:
                    continue
                want = {(iy, ix) for iy in range(y0 // cy, -(-(y0 + ny) // cy))
                        for ix in range(x0 // cx, -(-(x0 + nx) // cx))}
                absent = sorted(c for c in want if index[(0, *c)][0] == np.iinfo("u8").max)
                if absent:
                    add(i, f"chunks {absent} of the exposure's footprint missing from its shard")
            n_chunks += 1
    rep.checked[f"{name} shards"] = n_chunks


def _verify_detect(store: str, rep: VerifyReport) -> None:
    try:
        meta = st.detect_meta(store)
    except st.CorruptDataError as e:
        rep.problems.append(Problem(st.DETECT_META, e.reason))
        return
    if meta is None and not st.exists(store, st.MASK) and not st.exists(store, st.INTERVALS):
        return
    url = st.output_url(store, st.INTERVALS)
    if url is not None and st.fs_and_path(url)[0].exists(st.fs_and_path(url)[1]):
        _table(url, "intervals", rep)
    elif url is not None and meta is not None and isinstance(meta.get("outputs"), dict):
        rep.problems.append(Problem("intervals", f"{url} missing (named by {st.DETECT_META})"))
    url = st.output_url(store, st.MASK)
    if url is None:
        return
    try:
        g = zarr.open_group(st.zarr_store(url, read_only=True), mode="r")
        arrays = list(g.arrays())
        if g.attrs.get(st.METADATA_CRC):
            st.check_metadata(url, g.attrs[st.METADATA_CRC], volatile=())
    except st.CorruptDataError as e:
        rep.problems.append(Problem("mask metadata", e.reason))
        return
    except Exception as e:  # noqa: BLE001
        if meta is not None and isinstance(meta.get("outputs"), dict):
            rep.problems.append(Problem("mask", f"{url} unreadable ({type(e).__name__}: {e})"))
        return
    chunks = 0
    for name, a in arrays:
        for idx in np.ndindex(*a.cdata_shape):
            chunks += 1
            try:
                a.get_block_selection(idx)
            except Exception as e:  # noqa: BLE001
                rep.problems.append(Problem(f"mask/{name}", f"chunk {idx} corrupt ({type(e).__name__}: {e})"))
    rep.checked["mask chunks"] = chunks


def _table(url: str, part: str, rep: VerifyReport) -> None:
    try:
        st.read_table_url(url)
    except st.CorruptDataError as e:
        rep.problems.append(Problem(part, e.reason))
    rep.checked["tables"] = rep.checked.get("tables", 0) + 1
