"""The exposure cube: every ingested exposure in one zarr v3 group, ``time x y x x``.

Layout of ``STORE/exposures`` (written with zarr directly, read with xarray)::

    sci, err   float32 (time, y, x)  NaN outside the exposure's footprint
    dq         uint32  (time, y, x)  0 outside the footprint
    intscat    float16 (time, y, x)  optional: the scatter between a rateints exposure's integrations
                                     (reduced chi-square about their mean); no shard, so NaN, for a
                                     rate exposure or one of fewer than 3 integrations; a cube made
                                     before the plane existed has no such array (read as absent)
    time       (time,) MJD mid-exposure, CF-encoded so xarray decodes datetime64
    mjd, expstart, exptime, exp_type, subarray, detector, program, observation, visit,
    exposure, filename, source, product, content_hash (of SCI's bytes in the file, with the
    algorithm named in the group attribute ``lrscube.content_hash``; blake2b-128 where it is
    absent), exposure_key, nints, bunit,
    y0, x0, ny, nx (the footprint: 0-based first row and column, rows, columns)   (time,)

Engine (format version 4, the default): ``STORE/exposures`` is an icechunk repository whose root
group is the cube, with the layout below; every append and drop is one commit
(:class:`_RepositoryAppend`, :func:`drop`, :mod:`.engine`). Formats 1-3 keep the cube as a plain
zarr v3 group with the commit protocol at the end of this docstring.

Storage (format version 3, ``lrscube.format_version`` in the group attributes): each exposure
is one zarr shard per plane, ``sci/c/<slot>/0/0``, holding the frame as chunks of the mode
profile's ``geometry.chunk`` (MIRI: 16 chunks of (1, 256, 258); NIRSpec: 64 of (1, 256, 256)), each compressed with blosc lz4 + byte shuffle and followed by its crc32c (zarr's
``crc32c`` codec, so any zarr reader checks it); the shard ends with an index of its chunks
(crc32c too). The coordinate arrays carry a crc32c per chunk as well. Format 2 is format 3
without the chunks' crc32c (stores made before it read and take appends in their own layout;
``lrscube verify`` can only find damage there that makes a chunk undecodable). One exposure per shard along time, so an append only ever writes new shards and never
rewrites stored exposure data. A subarray exposure's write touches only the chunks its footprint
overlaps: the others are absent from its shard, which reads back as the fill value (a
SLITLESSPRISM shard holds 2 of the 16 chunks). Readers (xarray/dask) read chunk by chunk: the
shard's index, then the chunk's byte range. :func:`write_exposure` encodes a format-2 shard
itself from the array's metadata (inner chunk shape, codecs, fill value, chunk key) and stores
it as one object through the array's own zarr store: the same bytes zarr's ``a[region] = data``
writes, for half its CPU; any other layout is written through zarr. Stores of format version 1
(one object per chunk, zstd level 1, no shards) read the same way and take
appends in their own layout (zarr reads each array's layout from its metadata);
``create(..., format_version=1)`` still makes one. Storage order is arrival order;
:func:`open_cube` returns the time axis sorted.

Commit protocol of formats 1-3 (what makes a kill -9 harmless): the group attribute
``lrscube.n_committed`` counts the exposures whose append completed. An append (1) truncates
every array to ``n_committed``, deleting whatever a killed append left beyond it, (2) grows
the arrays and writes the new exposures' shards and coordinates, (3) rewrites the group's
attributes with the new count. Step 3 is one atomic object write (rename on a local disk, a PUT
on an object store), so a reader sees the old or the new cube, never half an exposure.
Appends of one run may overlap: ``Append.room(k, after=m)`` makes room behind an append whose
slots end at ``m`` and are written but not committed yet (no truncation), and
:meth:`Append.commit` only accepts appends in slot order, so ``n_committed`` still only ever
covers whole, written exposures. A run grows the arrays ahead of its appends (``ahead``) and
trims them to ``n_committed`` when it ends; between, the slots past ``n_committed`` are empty
or uncommitted, and every reader stops at ``n_committed``. The 24 arrays are resized one
metadata write each, so a kill among those writes leaves them of unequal lengths (all at least
``n_committed``): readers open the arrays through :func:`committed_store`, which gives each the
committed length, and the next append truncates them all.
The 1-D coordinate arrays are small and chunked by 4096 along time; an append rewrites the
last such chunk whole (atomically), never the exposure data.
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid

import dask.array
import google_crc32c
import numpy as np
import pandas as pd
import xarray as xr
import zarr
import zarr.api.asynchronous
import zarr.errors
from zarr.codecs import Crc32cCodec

from . import engine
from . import store as st
from .shards import Unreadable, buffer_prototype, get_all, shard_layout, start, sync, together

COORD_CHUNK = 4096
#: 1: one object per (1, *geometry.chunk) chunk, zstd level 1. 2: one shard object per exposure and
#: plane holding its chunks, blosc lz4 + byte shuffle. 3: format 2 with a crc32c
#: after each chunk, and on the coordinates' chunks. Readers handle all (zarr reads the layout
#: from each array's metadata); an append keeps the layout the store has.
FORMAT_VERSION = 4

#: per-exposure coordinates: name -> numpy dtype ("str" for strings)
COORDS: dict[str, str] = {
    "mjd": "float64",
    "expstart": "float64",
    "exptime": "float64",
    "exp_type": "str",
    "subarray": "str",
    "detector": "str",
    "program": "str",
    "observation": "str",
    "visit": "str",
    "exposure": "str",
    "filename": "str",
    "source": "str",
    "product": "str",
    "content_hash": "str",
    "exposure_key": "str",
    "nints": "int32",
    "bunit": "str",
    # footprint in the full frame (0-based first row/column, size): what the exposure saw
    "y0": "int32",
    "x0": "int32",
    "ny": "int32",
    "nx": "int32",
}
DATA_VARS = {"sci": ("float32", np.nan), "err": ("float32", np.nan), "dq": ("uint32", 0)}
#: planes a cube may lack (one made before they existed reads them as absent); an exposure without
#: the plane stores no shard for it (reads as the fill value). ``intscat``: the scatter between
#: the integrations of a rateints exposure (lrscube.intake.products.integration_scatter)
OPTIONAL_VARS = {"intscat": ("float16", np.nan)}
#: every plane, in the order :func:`data_arrays` returns those a cube has
PLANES = {**DATA_VARS, **OPTIONAL_VARS}
TIME_ATTRS = {"units": "days since 1858-11-17 00:00:00", "calendar": "proleptic_gregorian",
              "long_name": "mid-exposure time (UTC)"}

DEFAULT_CONTENT_HASH = "xxh3-128"


StoreError = st.StoreError
CorruptDataError = st.CorruptDataError
MissingMetadataError = st.MissingMetadataError


def cube_url(store: str) -> str:
    return st.join(store, st.EXPOSURES)


def zarr_store(url: str, read_only: bool = False):
    """The zarr store of the exposure cube at ``url`` (:func:`cube_url`): in format 4 (an icechunk
    repository) the branch's last commit, read-only (its writes go through a session:
    :class:`Append`, :func:`drop`); else :func:`lrscube.storage.store.zarr_store`."""
    if engine.is_repository(url):
        if not read_only:
            raise StoreError(f"{url}: an icechunk repository is written through a session, not opened for writing")
        return engine.read_store(url)
    return st.zarr_store(url, read_only=read_only)


def is_repository(store: str) -> bool:
    """Is the store's cube a format-4 one, an icechunk repository (:mod:`.engine`)?"""
    return engine.is_repository(cube_url(store))


def _open_group(store: str, mode: str = "r") -> zarr.Group:
    """The cube's group; in a format-4 cube always the last commit, read-only (its writes go
    through a session: :class:`Append`, :func:`drop`)."""
    read_only = mode == "r" or is_repository(store)
    return zarr.open_group(zarr_store(cube_url(store), read_only=read_only), mode="r" if read_only else mode,
                           zarr_format=3)


def exists(store: str) -> bool:
    """Does the store hold an exposure cube? False when there is none at all; a cube whose
    metadata is missing or unreadable while its arrays are there is not "none": that raises
    :class:`MissingMetadataError` (an ingest must never create a new cube over it)."""
    if is_repository(store):
        return _repository_has_cube(store)
    try:
        g = zarr.open_group(st.zarr_store(cube_url(store), read_only=True), mode="r", zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        _refuse_orphaned_arrays(store, "is missing")
        return False
    except (ValueError, TypeError, KeyError) as e:  # zarr.json there but not readable metadata
        raise _missing_metadata(store, f"is unreadable ({type(e).__name__}: {e})") from None
    if "lrscube" not in g.attrs:
        _refuse_orphaned_arrays(store, "lacks the lrscube attributes")
        return False
    return True


def _repository_has_cube(store: str) -> bool:
    """:func:`exists` for a format-4 cube, judged on one commit: the one read, whose history
    cannot change while another process commits (the branch may move between two reads)."""
    url = cube_url(store)
    session = engine.read_session(url)
    try:
        g = zarr.open_group(engine.reads(session, url), mode="r", zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        if engine.has_commits(url, session.snapshot_id):  # only the repository's first commit holds no cube
            raise st.CorruptDataError(
                f"the branch's last commit holds no exposure cube: a damaged snapshot or branch ref "
                f"(exposures/snapshots/, exposures/refs/). Nothing was written; restore them from a backup "
                f"of the store, or move {store} aside and ingest the files its ingest log lists into a new "
                "store", url=url) from None
        return False
    except (ValueError, TypeError, KeyError) as e:
        raise st.CorruptDataError(f"the cube's group in the last commit is unreadable ({type(e).__name__}: "
                                  f"{e})", url=url) from None
    if "lrscube" not in g.attrs:  # a create commits the group with its attributes
        raise st.CorruptDataError("the cube's group in the last commit lacks its lrscube attributes", url=url)
    return True


def _missing_metadata(store: str, what: str, repository: bool = False) -> st.MissingMetadataError:
    if repository:  # format 4: the branch's ref names the last commit; without it nothing is readable
        return st.MissingMetadataError(
            f"{cube_url(store)}: the exposure cube's icechunk repository has lost its branch "
            f"(exposures/refs/branch.{engine.BRANCH}), but its snapshots and chunks are there: the store "
            f"is damaged and nothing was written to it. To repair: restore exposures/refs/ from a backup "
            f"of the store; or move {store} aside and ingest the files its ingest log lists "
            "(ingest_log.parquet, status 'ingested') into a new store")
    return st.MissingMetadataError(
        f"{cube_url(store)}: the exposure cube's metadata (exposures/zarr.json) {what}, but its arrays "
        f"are there: the store is damaged and nothing was written to it. To repair: restore "
        f"exposures/zarr.json from a backup or snapshot of the store; or move {store} aside and "
        f"ingest the files its ingest log lists (ingest_log.parquet, status 'ingested') into a new store")


def _refuse_orphaned_arrays(store: str, what: str) -> None:
    """Arrays without the group's lrscube attributes: what a create killed before its last write
    leaves (empty arrays, no data: :func:`create` starts over), or a cube whose metadata was lost
    (arrays grown or holding data: refused)."""
    fs, path = st.fs_and_path(cube_url(store))
    try:
        inside = [p for p in fs.ls(path, detail=False) if not p.rstrip("/").endswith("zarr.json")]
    except (FileNotFoundError, NotADirectoryError):
        return
    if not inside:
        return
    if {p.rstrip("/").rsplit("/", 1)[-1] for p in inside} & {"snapshots", "manifests", "chunks", "config.yaml"}:
        # an icechunk repository without its branch: lost (it had commits), or a create killed
        # (or still running) before the branch was written, which holds nothing (made again)
        # (a branch there now: a create wrote it since this was first looked at)
        if engine.snapshot_count(cube_url(store)) > 1 and not is_repository(store):
            raise _missing_metadata(store, what, repository=True)
        return
    try:
        shape = json.loads(fs.cat_file(f"{path}/sci/zarr.json"))["shape"]
        written = fs.exists(f"{path}/sci/c")
    except (FileNotFoundError, ValueError, KeyError):
        shape, written = [0], False
    if shape[0] or written:
        raise _missing_metadata(store, what)


def data_layout(frame_shape: tuple[int, int], chunk: tuple[int, int], format_version: int = FORMAT_VERSION) -> dict:
    """``create_array`` keywords (chunks, shards, compressors) of sci/err/dq in a layout version;
    ``chunk``: (rows, columns) of one stored chunk (the profile's ``geometry.chunk``)."""
    chunks = (1, *(int(v) for v in chunk))
    if format_version == 1:
        # zstd level 1: as small as zarr's default level on noisy float32 sky, 4x faster to write
        return {"chunks": chunks, "compressors": zarr.codecs.ZstdCodec(level=1)}
    if format_version not in (2, 3, 4):
        raise ValueError(f"unknown exposure-cube format version {format_version}")
    ny, nx = frame_shape
    # one shard per exposure and plane: the whole frame, rounded up to whole chunks
    shards = (1, -(-ny // chunks[1]) * chunks[1], -(-nx // chunks[2]) * chunks[2])
    # blosc lz4 + byte shuffle: on noisy float32 sky 1/3 smaller than zstd level 1 and
    # 2.5x cheaper to encode, 3x cheaper to decode (benchmarks/README.md, "Ingest")
    codec = zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle=zarr.codecs.BloscShuffle.shuffle)
    # format 3: each chunk's crc32c after it, checked by every zarr reader (docs/storage.md)
    compressors = (codec, Crc32cCodec()) if format_version >= 3 else codec
    return {"chunks": chunks, "shards": shards, "compressors": compressors}


def plane_layout(name: str, frame_shape: tuple[int, int], chunk: tuple[int, int],
                 format_version: int = FORMAT_VERSION) -> dict:
    """:func:`data_layout` of plane ``name``. ``intscat`` (float16 with few mantissa bits,
    lrscube.intake.products.integration_scatter) takes blosc zstd: half the bytes lz4 leaves of
    it (lz4 + shuffle barely compresses it; docs/storage.md, "The planes of the cube")."""
    layout = data_layout(frame_shape, chunk, format_version)
    if name in OPTIONAL_VARS and format_version >= 2:
        codec = zarr.codecs.BloscCodec(cname="zstd", clevel=5, shuffle=zarr.codecs.BloscShuffle.shuffle)
        layout["compressors"] = (codec, Crc32cCodec()) if format_version >= 3 else codec
    return layout


def coord_compressors(format_version: int = FORMAT_VERSION):
    """``create_array`` compressors of the small arrays: zarr's default zstd, + crc32c in format 3."""
    if format_version >= 3:
        return {"compressors": (zarr.codecs.ZstdCodec(level=0), Crc32cCodec())}
    return {}


def default_format() -> int:
    """The format of new cubes: ``lrscube.store.format`` in the dask config, else :data:`FORMAT_VERSION`."""
    return int(dask.config.get("lrscube.store.format", None) or FORMAT_VERSION)


def create(store: str, profile, bunit: str | None = None, format_version: int | None = None) -> zarr.Group:
    """Create an empty exposure cube for a mode profile (no-op check if it already exists).

    ``bunit``: the unit of sci and err, fixed for the cube's life (default ``profile.unit``).

    ``format_version``: default :func:`default_format`; 4 makes the cube an icechunk repository
    and its creation one commit; 3 and 2 the sharded layout on plain zarr storage; 1 the old
    unsharded layout (kept for tests of old stores).
    """
    if exists(store):
        return _open_group(store, "r+")
    format_version = default_format() if format_version is None else int(format_version)
    bunit = bunit or getattr(profile, "unit", "DN/s")
    ny, nx = profile.frame_shape
    session = None
    if format_version >= 4:
        url = cube_url(store)
        # a repository without a commit is what a create killed before its commit leaves; one
        # killed before its branch existed holds nothing (exists() refuses any with commits)
        fs, path = st.fs_and_path(url)
        if not engine.is_repository(url) and fs.exists(path):
            fs.rm(path, recursive=True)
        repo = engine.open_repository(url) if engine.is_repository(url) else engine.create(url)
        session = repo.writable_session(engine.BRANCH)
        zs = session.store
    else:
        zs = st.zarr_store(cube_url(store))
    g = zarr.open_group(zs, mode="w", zarr_format=3)
    var_attrs = {"sci": {"units": bunit, "long_name": "slope"},
                 "err": {"units": bunit, "long_name": "1-sigma uncertainty of sci"},
                 "dq": {"long_name": "JWST pixel DQ bits (stdatamodels dqflags.pixel)"},
                 "intscat": {"units": "1", "long_name": "reduced chi-square of the integrations' slopes about "
                             "their mean (rateints, >= 3 integrations kept; NaN otherwise)"}}
    specs = {name: dict(shape=(0, ny, nx), dtype=dtype, fill_value=fill, dimension_names=("time", "y", "x"),
                        **plane_layout(name, (ny, nx), profile.chunk, format_version),
                        attributes={**var_attrs[name], "coordinates": " ".join(COORDS)})
             for name, (dtype, fill) in PLANES.items()}
    small = coord_compressors(format_version)
    specs["time"] = dict(shape=(0,), chunks=(COORD_CHUNK,), dtype="float64", fill_value=np.nan,
                         dimension_names=("time",), attributes=TIME_ATTRS, **small)
    for name, dtype in COORDS.items():
        specs[name] = dict(shape=(0,), chunks=(COORD_CHUNK,), dtype=dtype, dimension_names=("time",),
                           fill_value="" if dtype == "str" else (np.nan if dtype.startswith("float") else 0),
                           **small)
    for name, n, what in (("y", ny, "row"), ("x", nx, "column")):
        specs[name] = dict(shape=(n,), chunks=(n,), dtype="int32", dimension_names=(name,),
                           attributes={"long_name": f"0-based full-frame {what}"}, **small)
    # created together: on an object store a few round trips instead of a few per array
    made = sync(together([zarr.api.asynchronous.create_array(zs, name=name, zarr_format=3, **kw)
                           for name, kw in specs.items()]))
    arrays = dict(zip(specs, made, strict=True))
    sync(together([arrays["y"].setitem(slice(None), np.arange(ny, dtype="int32")),
                    arrays["x"].setitem(slice(None), np.arange(nx, dtype="int32"))]))

    attrs = {"n_committed": 0, "profile": profile.name, "bunit": bunit,
             "frame_shape": list(profile.frame_shape), "format_version": format_version,
             "content_hash": DEFAULT_CONTENT_HASH}
    if format_version == 3:  # every array's metadata but its shape, checked by open_cube and verify
        attrs["metadata_crc"] = {k: v for k, v in st.seal_metadata(cube_url(store), list(specs)).items() if k}
    elif format_version >= 4:  # the same, read from the session (icechunk's snapshots carry no checksum)
        attrs["metadata_crc"] = st.metadata_crcs(_metadata_docs(cube_url(store), zs, list(specs)))
    g.attrs["lrscube"] = seal(attrs)
    if session is not None:  # format 4: the arrays, their metadata and the attributes in one commit
        session.commit("create the exposure cube")
        return _open_group(store)
    return g


def check_metadata(store: str, attrs: dict) -> None:
    """The arrays' metadata against the checksums recorded at creation (formats 3 and 4)."""
    crcs = attrs.get("metadata_crc")
    if not crcs:
        return
    url = cube_url(store)
    docs = _metadata_docs(url, zarr_store(url, read_only=True), list(crcs)) if is_repository(store) else None
    st.check_metadata(url, crcs, docs=docs)


def _metadata_docs(url: str, zs, names) -> dict[str, dict]:
    """The zarr.json documents of the arrays ``names`` as the zarr store ``zs`` gives them."""
    blobs = sync(get_all([zarr.storage.StorePath(zs, f"{n}/zarr.json") for n in names]))
    return {n: st.parse_metadata(url, n, b) for n, b in zip(names, blobs, strict=True)}


def seal(attrs: dict) -> dict:
    """The lrscube attributes with ``crc``: the crc32c of the others (canonical JSON), so a
    damaged count or drop list is an error, not a different cube. Written with every commit."""
    body = {k: v for k, v in attrs.items() if k != "crc"}
    return {**body, "crc": google_crc32c.value(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())}


def _checked(store: str, attrs) -> dict:
    attrs = dict(attrs)
    if "crc" in attrs and seal(attrs)["crc"] != attrs["crc"]:  # stores before the crc have none
        raise st.CorruptDataError("the lrscube attributes fail their checksum (crc32c): the committed count "
                                  "or the drop list may be wrong; restore exposures/zarr.json from a backup",
                                  url=st.join(cube_url(store), "zarr.json"))
    return attrs


def _coord_bytes(name: str, values, first: bool) -> bytes:
    """The bytes a coordinate's checksum runs over, for ``values`` of consecutive slots
    (``first``: starting at slot 0): strings joined by 0x1f, numbers as their stored dtype."""
    dtype = COORDS[name]
    if dtype == "str":
        text = "\x1f".join(str(x) for x in np.asarray(values, dtype=object).ravel())
        return (text if first else "\x1f" + text).encode()
    return np.ascontiguousarray(np.asarray(values, dtype=dtype)).tobytes()


def coords_crc(values: dict) -> dict[str, int]:
    """crc32c of each per-exposure coordinate's values over the stored slots (``values``: name ->
    the slots' values, as read): sealed into the attributes at every commit, so a coordinate
    chunk whose reference a damaged snapshot lost (read as fill values) or changed is an error,
    not other file names, footprints or times."""
    return {name: int(google_crc32c.value(_coord_bytes(name, v, True)))
            for name, v in values.items() if name in COORDS}


def failed_coords(attrs: dict, values: dict) -> list[str]:
    """The coordinates among ``values`` (name -> values over the stored slots) whose checksums
    differ from the last commit's (stores committed before there were any have none)."""
    want = attrs.get("coords_crc") or {}
    got = coords_crc({k: v for k, v in values.items() if k in want})
    return sorted(k for k in got if got[k] != int(want[k]))


def check_coords(store: str, attrs: dict, values: dict) -> None:
    """Raise :class:`CorruptDataError` naming the coordinates that fail :func:`failed_coords`."""
    bad = failed_coords(attrs, values)
    if bad:
        raise st.CorruptDataError(f"coordinate{'s' if len(bad) > 1 else ''} {', '.join(bad)}: the values fail "
                                  "the checksum (crc32c) of the last commit: a chunk reference lost or changed "
                                  "in the committed state", url=cube_url(store))


def _sealed_coords(attrs: dict, arrays, start: int, new: dict) -> None:
    """``attrs["coords_crc"]`` after the coordinates ``new`` (name -> values, as
    :func:`_write_coords` wrote them) of slots ``start ..``: the last commit's checksums
    extended by them (crc32c extends over appended bytes), or, where the last commit has none
    for a coordinate (a store committed before there were any), the ``arrays`` read back over
    every stored slot (one read each, together)."""
    have = dict(attrs.get("coords_crc") or {})
    names = [a.basename for a in arrays if a.basename in COORDS]
    if start > 0 and any(n not in have for n in names):
        arrays = [a for a in arrays if a.basename in COORDS]
        values = sync(together([a.async_array.getitem(slice(0, start)) for a in arrays]))
        have = coords_crc({a.basename: v for a, v in zip(arrays, values, strict=True)})
    attrs["coords_crc"] = {n: int(google_crc32c.extend(have[n], _coord_bytes(n, new[n], False)))
                           if start > 0 else int(google_crc32c.value(_coord_bytes(n, new[n], True)))
                           for n in names}


def info(store: str) -> dict:
    """The cube's bookkeeping attributes (n_committed, profile, bunit, ...)."""
    g = _open_group(store)
    if "lrscube" not in g.attrs:
        raise StoreError(f"{cube_url(store)}: not an lrscube exposure cube")
    return _checked(store, g.attrs["lrscube"])


def n_committed(store: str) -> int:
    """Slots committed (dropped ones included: see :func:`n_stored`)."""
    return int(info(store)["n_committed"]) if exists(store) else 0


def dropped_slots(attrs: dict) -> set[int]:
    """Slots removed by :func:`drop` (the ``lrscube.dropped`` attribute)."""
    return {int(i) for i in attrs.get("dropped", ())}


def kept_slots(attrs: dict) -> np.ndarray:
    """Committed slots that are not dropped, in storage order: the cube's exposures."""
    gone = dropped_slots(attrs)
    return np.array([i for i in range(int(attrs["n_committed"])) if i not in gone], dtype=np.int64)


def n_stored(store: str) -> int:
    """Exposures in the cube: committed and not dropped."""
    return len(kept_slots(info(store))) if exists(store) else 0


def _open_arrays(store: str, names, read_only: bool = True) -> list[zarr.Array]:
    """The cube's arrays ``names``, opened together: on an object store one round trip for all
    of them instead of one after another (24 x ~30 ms on S3)."""
    return _arrays_on(zarr_store(cube_url(store), read_only=read_only), names)


def _arrays_on(zs, names, optional=()) -> list[zarr.Array | None]:
    """The arrays ``names``, then ``optional`` (None for each the store lacks), opened together."""
    async def maybe(n):
        try:
            return await zarr.api.asynchronous.open_array(store=zs, path=n, zarr_format=3)
        except zarr.errors.ArrayNotFoundError:
            return None

    opened = sync(together([*(zarr.api.asynchronous.open_array(store=zs, path=n, zarr_format=3) for n in names),
                            *(maybe(n) for n in optional)]))
    return [None if a is None else zarr.Array(a) for a in opened]


class Append:
    """One writer's appends to a cube: the group and its arrays opened once, room made ahead.

    A run of appends can ask :meth:`room` for slots ``ahead`` of what it needs now, so that its
    24 arrays are resized once per block instead of once per append (each resize rewrites every
    array's metadata). Slots past ``n_committed`` are invisible to readers, and :meth:`close` (or
    the next writer's first :meth:`room`) trims the arrays back to the committed exposures.
    """

    def __new__(cls, store: str):
        if cls is Append and is_repository(store):
            return super().__new__(_RepositoryAppend)
        return super().__new__(cls)

    def __init__(self, store: str):
        self.store = store
        self.group = _open_group(store, "r+")
        self.arrays = _open_arrays(store, [*DATA_VARS, "time", *COORDS], read_only=False)
        self.optional = _open_arrays(store, optional_planes(self.group), read_only=False)
        self._committed = int(_checked(store, self.group.attrs["lrscube"])["n_committed"])

    def _resize(self, n: int) -> None:
        todo = [a for a in (*self.arrays, *self.optional) if a.shape[0] != n]
        if todo:  # the arrays' metadata rewrites go out together
            sync(together([a.async_array.resize((n, *a.shape[1:])) for a in todo]))

    def room(self, k: int, after: int | None = None, ahead: int = 0) -> int:
        """Make room for ``k`` exposures; returns the first new slot.

        By default the room starts after the committed exposures, and anything a killed append
        left beyond ``n_committed`` is deleted first. ``after=m`` puts it after slot ``m - 1``
        instead, growing the arrays only: for an append pipelined behind earlier ones of the
        same run whose exposures (slots ``n_committed .. m - 1``) are written but not yet
        committed. When the arrays must grow, they grow by ``ahead`` more slots than needed.
        """
        n = self._committed
        if after is None:
            self._resize(n)
            after = n
        elif after < n:
            raise ValueError(f"append after slot {after}: below the {n} committed exposures")
        if min(a.shape[0] for a in (*self.arrays, *self.optional)) < after + k:
            self._resize(after + k + max(0, ahead))
        return after

    def data_arrays(self) -> tuple[zarr.Array, ...]:
        """sci, err, dq (and the optional planes the cube has) as :func:`data_arrays` opens them,
        without reading the store again (made after each :meth:`room`: they carry the shape of
        that moment)."""
        return tuple(_for_writes(a) for a in (*self.arrays[:len(DATA_VARS)], *self.optional))

    def commit(self, start: int, metas: list[dict], written=()) -> int:
        """Write the coordinates of slots ``start .. start+len(metas)`` and count them committed.
        ``written``: what the write tasks of these slots returned (:func:`written`; format 4)."""
        n = self._committed
        if start != n:
            raise ValueError(f"commit of slots from {start}: the cube has {n} committed exposures "
                             "(appends commit in slot order)")
        stored = int(info(self.store)["n_committed"])  # one read of the group's metadata
        if stored != n:  # the ingest lock keeps other writers out; this catches one that got past it
            raise StoreError(f"{cube_url(self.store)}: {stored} exposures committed, not the {n} this "
                             "append started from: another process wrote to the cube meanwhile")
        k = len(metas)
        if k:
            new = _write_coords(self.arrays[len(DATA_VARS):], start, metas)
        attrs = dict(self.group.attrs["lrscube"])
        attrs["n_committed"] = start + k
        if k:
            _sealed_coords(attrs, self.arrays[len(DATA_VARS):], start, new)
        self.group.attrs["lrscube"] = seal(attrs)  # the commit point: one atomic write of the group metadata
        self._committed = start + k
        return start + k

    def close(self) -> None:
        """Trim the arrays to the committed exposures (slots reserved ahead, or written by an
        append that did not commit)."""
        self._resize(self._committed)


class _RepositoryAppend(Append):
    """:class:`Append` on a format-4 cube (an icechunk repository): each commit one icechunk commit.

    A session with changes cannot be forked to the workers, so the arrays cannot grow before
    the forks: each append's fork (:meth:`data_arrays`) grows sci/err/dq itself, the workers
    write their shards into copies of it, and :meth:`commit` merges the copies the write tasks
    return (:func:`written`) into a session on the branch as it is then, grows and writes the
    coordinates, sets the committed count and commits. Nothing of an append is visible before
    its commit and all of it after; a killed writer leaves the last commit, with no slot past
    ``n_committed`` to trim. An append pipelined behind one not yet committed forks from the
    same commit; its forks merge onto the next commit (each grows the arrays further).
    """

    def __init__(self, store: str):
        self.store = store
        self.repo = engine.open_repository(cube_url(store))
        self._fork_base()
        self._room = self._committed

    def _fork_base(self) -> None:
        """A session without changes on the branch's last commit, to fork the workers' sessions from."""
        self.session = self.repo.writable_session(engine.BRANCH)
        g = zarr.open_group(self.session.store, mode="r", zarr_format=3)
        self._committed = int(_checked(self.store, g.attrs["lrscube"])["n_committed"])
        self._planes = [*DATA_VARS, *optional_planes(g)]

    def room(self, k: int, after: int | None = None, ahead: int = 0) -> int:
        n = self._committed
        if after is None:
            after = n
        elif after < n:
            raise ValueError(f"append after slot {after}: below the {n} committed exposures")
        self._room = after + k
        return after

    def data_arrays(self) -> tuple[zarr.Array, ...]:
        """The planes on a fork of the last commit, grown to the last :meth:`room`: picklable
        with the fork; each write task's copy comes back through :func:`written`."""
        fork = self.session.fork()
        arrays = _arrays_on(fork.store, self._planes)
        for a in arrays:
            if a.shape[0] < self._room:
                a.resize((self._room, *a.shape[1:]))
        return tuple(_for_writes(a) for a in arrays)

    def commit(self, start: int, metas: list[dict], written=()) -> int:
        n = self._committed
        if start != n:
            raise ValueError(f"commit of slots from {start}: the cube has {n} committed exposures "
                             "(appends commit in slot order)")
        session = self.repo.writable_session(engine.BRANCH)
        g = zarr.open_group(session.store, mode="r+", zarr_format=3)
        attrs = _checked(self.store, g.attrs["lrscube"])
        if int(attrs["n_committed"]) != n:  # the ingest lock keeps other writers out; this catches one that got past it
            raise StoreError(f"{cube_url(self.store)}: {attrs['n_committed']} exposures committed, not the {n} "
                             "this append started from: another process wrote to the cube meanwhile")
        forks = [f for f in written if f is not None]
        if forks:
            session.merge(*forks)
        k = len(metas)
        if k:
            arrays = _arrays_on(session.store, [*self._planes, "time", *COORDS])
            sync(together([a.async_array.resize((start + k, *a.shape[1:])) for a in arrays
                           if a.shape[0] != start + k]))
            # zarr's resize updates the array's metadata in place: the coordinates take their writes as opened
            new = _write_coords(arrays[len(self._planes):], start, metas)
            _sealed_coords(attrs, arrays[len(self._planes):], start, new)
        attrs["n_committed"] = start + k
        g.attrs["lrscube"] = seal(attrs)
        try:
            session.commit(f"ingest: {k} exposures, slots {start}..{start + k - 1}" if k else "ingest: no exposures")
        except Exception as e:  # a full disk, a permission: the system's error, in one line
            raise (engine.os_error(e, cube_url(self.store)) if engine.is_engine_error(e) else None) or e from None
        self._fork_base()
        return start + k

    def close(self) -> None:
        """Nothing to trim: what was not committed was never part of the cube."""


def written(arrays) -> object | None:
    """What a write task returns so that its writes are committed: the icechunk fork its
    ``arrays`` (:meth:`Append.data_arrays`) wrote to (format 4), None otherwise."""
    return engine.session_of(arrays[0]) if arrays else None


def _write_coords(coords, start: int, metas: list[dict]) -> dict:
    """The per-exposure coordinates of slots ``start .. start+len(metas)`` into the arrays
    ``coords``; returns the values written (name -> array)."""
    sl = slice(start, start + len(metas))
    values = {"time": np.array([m["mjd"] for m in metas], dtype="float64")}
    for name, dtype in COORDS.items():
        vals = [m.get(name) for m in metas]
        if dtype == "str":
            values[name] = np.array(["" if v is None else str(v) for v in vals], dtype=object)
        else:
            values[name] = np.array([np.nan if v is None else v for v in vals], dtype=dtype)
    # the 22 small writes (one chunk each, read-modify-write) go out together
    sync(together([a.async_array.setitem(sl, values[a.basename]) for a in coords]))
    return values


def append_exposures(store: str, exposures, metas: list[dict]) -> int:
    """Append ``exposures`` (each with ``sci``, ``err``, ``dq``, ``y0``, ``x0``) and their
    coordinates ``metas`` in this process, as one commit; returns the committed count."""
    app = Append(store)
    start = app.room(len(metas))
    arrays = app.data_arrays()
    for i, e in enumerate(exposures):
        write_exposure(store, start + i, e, arrays)
    n = app.commit(start, metas, [written(arrays)])
    app.close()
    return n


def begin_append(store: str, k: int, after: int | None = None) -> int:
    """Make room for ``k`` exposures in the store; returns the first new index (:meth:`Append.room`).
    Formats 1-3 only, where the room is in the store itself; a format-4 cube appends through
    one :class:`Append` (or :func:`append_exposures`)."""
    return Append(store).room(k, after)


#: zarr settings while zarr writes exposures (layouts write_exposure does not encode itself):
#: the chunks of a shard go through zarr's codec pipeline in one batch instead of one by one
#: (about 5 ms less per exposure)
_WRITE_CONFIG = {"codec_pipeline.batch_size": 16}
_write_config_lock = threading.Lock()
_write_config_users = 0
_write_config_saved: dict = {}


@contextlib.contextmanager
def _write_config():
    """``zarr.config.set(_WRITE_CONFIG)`` for the duration of the writes of every thread in
    this process that is inside it (zarr's config is process-wide; the first thread in sets it,
    the last one out restores what was there)."""
    global _write_config_users
    with _write_config_lock:
        if _write_config_users == 0:
            _write_config_saved.clear()
            _write_config_saved.update({key: zarr.config.get(key) for key in _WRITE_CONFIG})
            zarr.config.set(_WRITE_CONFIG)
        _write_config_users += 1
    try:
        yield
    finally:
        with _write_config_lock:
            _write_config_users -= 1
            if _write_config_users == 0:
                zarr.config.set(dict(_write_config_saved))


def data_arrays(store: str) -> tuple[zarr.Array, ...]:
    """sci, err, dq, then the :data:`OPTIONAL_VARS` the cube has, opened for :func:`write_exposure`;
    picklable, so a client can open them once per append and send them with each exposure (a
    worker then reads no metadata)."""
    g = _open_group(store, "r+")
    return tuple(_for_writes(g[name]) for name in (*DATA_VARS, *optional_planes(g)))


def optional_planes(g: zarr.Group) -> list[str]:
    """The :data:`OPTIONAL_VARS` the cube's group holds (none in a cube made before they existed)."""
    have = set(g.array_keys())
    return [name for name in OPTIONAL_VARS if name in have]


def _for_writes(a: zarr.Array) -> zarr.Array:
    # write_empty_chunks: inner chunks outside a subarray's footprint are never touched by its
    # write, and a touched one that happens to be all fill value costs a few hundred bytes
    # compressed, so checking every chunk for the fill value (zarr's default) only costs time.
    # (write_exposure's own shard encoder stores every touched chunk the same way.)
    return a.with_config({"write_empty_chunks": True})


def write_exposure(store: str, index: int, exp, arrays: tuple[zarr.Array, ...] | None = None) -> None:
    """Write one exposure's footprint into slot ``index`` (runs on a worker).

    ``arrays``: :func:`data_arrays` of the store, opened after the append's
    :func:`begin_append` (default: opened here).

    A plane whose array has the format-2 layout (one shard per slot; see :func:`.shards.shard_layout`)
    is encoded here, shard and index, and stored as one object with one ``set`` on the array's
    own store (local disk or fsspec/S3), about half the CPU of ``a[region] = data`` through
    zarr's codec pipeline. Any other layout (format 1, unexpected codecs) goes through zarr.
    """
    if arrays is None and is_repository(store):
        raise StoreError(f"{cube_url(store)}: a format-4 cube is written through Append.data_arrays(), "
                         "and its commit takes what written() returns")
    arrays = arrays or data_arrays(store)
    ny, nx = exp.sci.shape
    shards: list[tuple[zarr.Array, bytes]] = []
    via_zarr: list[tuple[zarr.Array, str]] = []
    for a, name in zip(arrays, list(PLANES)[:len(arrays)], strict=True):
        layout = shard_layout(a)
        data = getattr(exp, name, None)
        if data is None:  # an optional plane the exposure does not have: no shard (reads as absent)
            continue
        if layout is not None and np.shape(data) == (ny, nx) and layout.fits(a, index, exp.y0, exp.x0, data):
            shards.append((a, layout.encode(data, exp.y0, exp.x0)))
        else:
            via_zarr.append((a, name))
    if shards:
        # One slot is one shard, and a slot is always new: begin_append made room, and nothing
        # is stored there yet (or only what a killed append left, which this exposure replaces
        # whole). So there is no read-modify-write of an existing shard (zarr would GET the
        # shard first for a subarray). The planes' writes go out together.
        proto = buffer_prototype()
        sync(together([(a.store_path / a.metadata.encode_chunk_key((index, 0, 0))).set(proto.buffer.from_bytes(blob))
                        for a, blob in shards]))
    if via_zarr:
        _write_exposure_zarr(index, exp, *zip(*via_zarr, strict=True))


def _write_exposure_zarr(index: int, exp, arrays: tuple[zarr.Array, ...],
                         names: tuple[str, ...] | None = None) -> None:
    """Write planes ``names`` (default: those of :data:`PLANES` that ``arrays`` are, in order) of
    one exposure through zarr's ``a[region] = data`` (the path for layouts the shard encoder does
    not take; the reference of its tests and benchmark); a plane the exposure lacks is skipped."""
    ny, nx = exp.sci.shape
    region = (index, slice(exp.y0, exp.y0 + ny), slice(exp.x0, exp.x0 + nx))
    names = list(PLANES)[:len(arrays)] if names is None else names
    with _write_config():
        for a, name in zip(arrays, names, strict=True):
            data = getattr(exp, name, None)
            if data is not None:
                a[region] = data


def read_plane(url: str, rows, name: str) -> np.ndarray | None:
    """Plane ``name`` (an :data:`OPTIONAL_VARS` one) of the exposures at storage positions
    ``rows``, whole frames (an exposure without it: the fill value); None when the cube has no
    such array (made before it existed)."""
    g = zarr.open_group(zarr_store(url, read_only=True), mode="r")
    if name not in optional_planes(g):
        return None
    return _read_planes(url, [g[name]], rows, "fill")[0]


def read_frames(url: str, rows, missing: str = "fill", planes=(),
                region: tuple[slice, slice] | None = None) -> tuple[np.ndarray | None, ...]:
    """``sci, err, dq`` (B, y, x) of the exposures at storage positions ``rows`` of the exposure
    cube at ``url`` (``cube_url(store)``), whole frames, then each of ``planes`` (names of
    :data:`OPTIONAL_VARS`) as :func:`read_plane` reads it (the fill value for an exposure
    without it, None where the cube has no such array), all opened and fetched in one pass.
    ``region`` (rows, columns: slices with steps of 1): that part of the frames only (a shard
    is still fetched whole; only the chunks under the region are decoded).

    Formats 2 and 3: each plane's shard is fetched as one object and its chunks decoded here
    (through zarr's reader a frame cost 16 chunk reads with their per-chunk machinery, ~3x the
    decode). Other layouts are read through zarr. Damaged bytes raise :class:`CorruptDataError`
    naming the array, slot and chunk. A slot without a shard reads as the fill value, or with
    ``missing="error"`` (committed exposures, which always have one) raises it too.
    """
    # the arrays opened together (no group: nothing of it is needed), their shards then
    # fetched together: two round trips to the store in all, not one per array and plane
    unknown = [n for n in planes if n not in OPTIONAL_VARS]
    if unknown:
        raise ValueError(f"read_frames: {unknown} are not optional planes ({list(OPTIONAL_VARS)})")
    arrays = _arrays_on(zarr_store(url, read_only=True), list(DATA_VARS), optional=planes)
    have = [a for a in arrays if a is not None]
    got = iter(_read_planes(url, have, rows, [missing] * len(DATA_VARS) + ["fill"] * (len(have) - len(DATA_VARS)),
                            region))
    return tuple(None if a is None else next(got) for a in arrays)


def _read_planes(url: str, arrays, rows, missing, region=None) -> list[np.ndarray]:
    """The frames of ``rows`` of each array (``region`` of them: :func:`read_frames`); sharded
    planes fetched one plane ahead of the decode (the next plane's shards are read while this
    one's are decoded; two planes' bytes in memory at most). ``missing``: as
    :func:`read_frames` has it, or one such value per array."""
    layouts = [shard_layout(a) for a in arrays]
    if region is not None:
        region = tuple(slice(*sl.indices(n)[:2]) for sl, n in zip(region, arrays[0].shape[1:], strict=True))
    cut = region if region is not None else (slice(None), slice(None))
    shape = arrays[0].shape[1:] if region is None else tuple(sl.stop - sl.start for sl in region)
    missing = [missing] * len(arrays) if isinstance(missing, str) else list(missing)

    def fetch(a):
        return start(get_all([a.store_path / a.metadata.encode_chunk_key((int(i), 0, 0)) for i in rows]))

    sharded = [k for k, layout in enumerate(layouts) if layout is not None]
    pending = {sharded[0]: fetch(arrays[sharded[0]])} if sharded else {}
    out = []
    for j, (a, layout) in enumerate(zip(arrays, layouts, strict=True)):
        if layout is None:
            out.append(np.stack([a[(int(i), *cut)] for i in rows]) if len(rows) else np.empty((0, *shape), a.dtype))
            continue
        blobs = pending.pop(j).result()
        after = [k for k in sharded if k > j]
        if after:
            pending[after[0]] = fetch(arrays[after[0]])
        frames = np.empty((len(rows), *shape), dtype=a.dtype)
        try:
            for k, blob in enumerate(blobs):
                try:
                    if blob is None and missing[j] == "error":
                        raise CorruptDataError("shard missing: a committed exposure's data is not in the store")
                    if isinstance(blob, Unreadable):
                        raise CorruptDataError(f"shard unreadable ({blob})")
                    layout.decode_into(blob, frames[k], region)
                except CorruptDataError as e:
                    e.url, e.array, e.slot = url, a.basename, int(rows[k])
                    raise
        except BaseException:
            for f in pending.values():  # a read started ahead is not left running unobserved
                f.cancel()
            raise
        out.append(frames)
    return out


def commit(store: str, start: int, metas: list[dict]) -> int:
    """Write the coordinates of exposures ``start .. start+len(metas)`` and count them committed
    (:meth:`Append.commit`)."""
    return Append(store).commit(start, metas)


def _as_str(values) -> np.ndarray:
    # zarr returns numpy's variable-width StringDType; plain fixed-width str plays well everywhere
    return np.array([str(v) for v in values], dtype=str)


#: dask chunks of sci, err and dq in :func:`open_cube`: one exposure's whole frame, which is the
#: store's shard, so a reduction over time reads each shard whole in one task (zarr's inner
#: chunks as dask chunks make 16 tasks (MIRI) per exposure, each reading the shard's index
#: again); a slice of a few pixels still reads only the inner chunks under it, because dask
#: fuses the slice into the read (see :class:`_InTimeOrder`)
FRAME_CHUNKS = {"time": 1, "y": -1, "x": -1}


class _InTimeOrder:
    """A stored (time, y, x) zarr array seen with its time axis in ``order``, for
    ``dask.array.from_array``: every read is a zarr read of slices, so dask can fuse a later
    slice (one pixel's history) into it. (``isel(time=order)`` on the dask array makes
    fancy-index tasks after which a pixel's read decodes whole frames, and zarr's orthogonal
    indexing by an index array reads sharded arrays ~100x slower than by slices.)"""

    def __init__(self, array: zarr.Array, order: np.ndarray):
        self.array, self.order = array, np.asarray(order, dtype=np.int64)
        self.shape, self.dtype, self.ndim = (len(self.order), *array.shape[1:]), array.dtype, array.ndim

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        slots, rest = self.order[key[0]], key[1:]
        if np.ndim(slots) == 0:
            return self.array[(int(slots), *rest)]
        # runs of consecutive slots are read as one slice each
        runs = np.split(slots, np.flatnonzero(np.diff(slots) != 1) + 1) if slots.size else []
        parts = [self.array[(slice(int(r[0]), int(r[-1]) + 1), *rest)] for r in runs]
        return np.concatenate(parts, axis=0) if parts else self.array[(slice(0, 0), *rest)]


def open_cube(store: str, sort: bool = True, chunks: dict | None = None) -> xr.Dataset:
    """Open the exposure cube as an xarray Dataset ``(time, y, x)``, lazily (dask).

    Only committed exposures are returned; ``sort`` orders the time axis (storage keeps
    arrival order). Pixel coordinates ``y``/``x`` are 0-based full-frame indices. ``chunks``:
    dask chunks of sci, err and dq per dimension (default :data:`FRAME_CHUNKS`: one whole
    frame per exposure, as stored).
    """
    if not exists(store):
        raise FileNotFoundError(f"{cube_url(store)}: no exposure cube here (run `lrscube ingest` first)")
    attrs = info(store)
    check_metadata(store, attrs)
    n = int(attrs["n_committed"])
    # the arrays cut to the committed slots: a killed append may leave them of unequal lengths
    ds = xr.open_zarr(committed_store(store, n), consolidated=False, zarr_format=3, chunks={"y": -1, "x": -1})
    check_coords(store, attrs, {k: ds[k].values for k in attrs.get("coords_crc", {}) if k in ds.coords})
    slots = np.arange(n)  # storage slot of each exposure of ds
    if dropped_slots(attrs):
        slots = np.asarray(kept_slots(attrs), dtype=np.int64)
        ds = ds.isel(time=slots)
        n = len(slots)
    ds = ds.set_coords([c for c in COORDS if c in ds.data_vars])
    for c in COORDS:
        if COORDS[c] == "str" and c in ds.coords:
            ds.coords[c] = ("time", _as_str(ds[c].values))
    ds.attrs = {k: v for k, v in ds.attrs.items() if k != "lrscube"}
    ds.attrs.update(attrs)
    order = np.argsort(ds["time"].values, kind="stable") if sort and n else np.arange(n)
    ds = ds.isel(time=order)
    want = {**FRAME_CHUNKS, **(chunks or {})}
    token = uuid.uuid4().hex
    names = [*DATA_VARS, *(v for v in OPTIONAL_VARS if v in ds.data_vars)]
    for name, a in zip(names, _open_arrays(store, names), strict=True):
        frames = _InTimeOrder(a, slots[order])
        data = dask.array.from_array(frames, chunks=tuple(want.get(d, -1) for d in ds[name].dims),
                                     name=f"open_cube-{name}-{token}")
        ds[name] = ds[name].copy(data=data)
    return ds


#: coordinates always stored, never as their fill value (NaN, "", 0), so a chunk not there is
#: a reference lost, not fill values: the per-exposure ones every append writes (a product has
#: at least one integration: ingest writes ``nints or 1``, and zeros would tell verify an
#: exposure needs no ``intscat`` shard) and the full frame's rows and columns, written at creation
ALWAYS_WRITTEN = frozenset({"time", "mjd", "expstart", "filename", "nints", "y", "x"})


class _CommittedView(zarr.storage.WrapperStore):
    """A read-only view of the cube's zarr store in which every array along ``time`` has
    exactly ``n`` slots, whatever its stored length.

    An append resizes the cube's 24 arrays (one metadata object each), so a writer killed
    among those writes leaves arrays of unequal lengths, all at least ``n_committed``; xarray
    refuses a dimension of two sizes. Readers see the committed slots only, so they take the
    shape from here: the arrays' metadata as stored but ``shape[0] = n``.
    """

    def __init__(self, store, n: int):
        super().__init__(store)
        self.n = int(n)

    def _with_store(self, store):
        return type(self)(store, self.n)

    async def get(self, key, prototype, byte_range=None):
        buf = await self._store.get(key, prototype, byte_range)
        if buf is None and self.n and key.rpartition("/c/")[0] in ALWAYS_WRITTEN:
            # these are always written, never as their fill value (zarr stores no chunk that
            # is all fill): a chunk not there is damage (a reference lost in a snapshot), not
            # fill values (NaT times, zero integrations, every row 0)
            raise st.CorruptDataError(f"coordinate {key.partition('/')[0]}: chunk {key} is missing from the "
                                      "committed state", url=str(self._store))
        if buf is None or byte_range is not None or not key.endswith("/zarr.json"):
            return buf
        try:
            doc = json.loads(buf.to_bytes())
        except ValueError:
            return buf  # zarr reports it
        dims = doc.get("dimension_names") or [None]
        shape = doc.get("shape")
        if doc.get("node_type") != "array" or dims[0] != "time" or not shape or shape[0] <= self.n:
            return buf
        doc["shape"] = [self.n, *shape[1:]]
        return prototype.buffer.from_bytes(json.dumps(doc).encode())


def committed_store(store: str, n: int):
    """The cube's zarr store as readers open it: arrays cut to the ``n`` committed slots
    (:class:`_CommittedView`)."""
    return _CommittedView(zarr_store(cube_url(store), read_only=True), n)


def exposure_table(store: str) -> pd.DataFrame:
    """Per-exposure coordinates as a DataFrame (one row per committed exposure, sorted by time)."""
    if not exists(store):
        return pd.DataFrame(columns=["time", *COORDS])
    g = _open_group(store)
    attrs = _checked(store, g.attrs["lrscube"])
    n = int(attrs["n_committed"])
    present = set(g.array_keys())  # a store written before a coordinate was added lacks it
    names = [name for name in COORDS if name in present]
    # opened and read together: on an object store two round trips, not two per coordinate
    arrays = _open_arrays(store, names)
    values = sync(together([a.async_array.getitem(slice(0, n)) for a in arrays]))
    check_coords(store, attrs, dict(zip(names, values, strict=True)))
    df = pd.DataFrame({name: _as_str(v) if COORDS[name] == "str" else v for name, v in zip(names, values, strict=True)})
    if dropped_slots(attrs):
        df = df.iloc[kept_slots(attrs)]
    df.insert(0, "time", pd.to_datetime(df["mjd"].to_numpy() - 40587.0, unit="D"))
    return df.sort_values("mjd", kind="stable").reset_index(drop=True)


def drop(store: str, names) -> pd.DataFrame:
    """Remove exposures from the cube; returns the rows of :func:`exposure_table` removed (with
    their ``slot``).

    ``names``: file names (as in ``filename``), sources (paths or URLs the files were ingested
    from), exposure keys, or ``slot:N`` (a storage position, as ``lrscube verify`` prints it,
    for an exposure whose coordinates cannot be read). Every name must match, or nothing is
    changed. One commit: the group attribute ``lrscube.dropped`` gains their slots (readers
    leave them out from then on), then their shards are deleted. A file dropped can be ingested
    again (it is no longer a duplicate). Holds the ingest and the detect lock.
    """
    names = [str(n) for n in names]
    with st.writer_lock(store, st.INGEST_LOCK, "ingest"), st.writer_lock(store, st.DETECT_LOCK, "detect"):
        if not exists(store):
            raise FileNotFoundError(f"{cube_url(store)}: no exposure cube here")
        # format 4: the drop list and the shards' deletion in one icechunk commit
        session = engine.writable_session(cube_url(store)) if is_repository(store) else None
        g = zarr.open_group(session.store, mode="r+", zarr_format=3) if session else _open_group(store, "r+")
        attrs = _checked(store, g.attrs["lrscube"])
        n = int(attrs["n_committed"])
        gone = dropped_slots(attrs)
        keys = {}
        table = {}
        try:
            cols = ["filename", "source", "exposure_key"]
            values = sync(together([a.async_array.getitem(slice(0, n)) for a in _open_arrays(store, cols)]))
            table = dict(zip(cols, (_as_str(v) for v in values), strict=True))
            for i in range(n):
                if i in gone:
                    continue
                for c in cols:
                    v = table[c][i]
                    if v:
                        keys.setdefault(v, set()).add(i)
                        if c == "source":
                            keys.setdefault(v.rsplit("/", 1)[-1], set()).add(i)
        except ValueError:  # unreadable coordinates (verify names their slots): slot:N still works
            table = {}
        slots: set[int] = set()
        unknown = []
        for name in names:
            if name.startswith("slot:") and name[5:].isdigit() and int(name[5:]) < n and int(name[5:]) not in gone:
                slots.add(int(name[5:]))
            elif name in keys:
                slots |= keys[name]
            else:
                unknown.append(name)
        if unknown:
            raise ValueError(f"{cube_url(store)}: no stored exposure named {', '.join(map(repr, unknown))} "
                             "(give file names, sources, exposure keys or slot:N); nothing was dropped")
        attrs["dropped"] = sorted(gone | slots)
        g.attrs["lrscube"] = seal(attrs)  # format 3: the commit, one atomic write of the group metadata
        planes = [*DATA_VARS, *optional_planes(g)]
        arrays = _arrays_on(session.store, planes) if session else _open_arrays(store, planes, read_only=False)
        for a in arrays:  # format 3: the data goes after the commit; a kill here leaves unread shards only
            _delete_slots(a, sorted(slots))
        if session is not None:
            session.commit(f"drop: slots {', '.join(map(str, sorted(slots)))}")
    rows = pd.DataFrame({"slot": sorted(slots)})
    for c, v in table.items():
        rows[c] = [v[i] for i in rows["slot"]]
    return rows


def _delete_slots(a: zarr.Array, slots) -> None:
    layout = shard_layout(a)
    if layout is not None:
        sync(together([(a.store_path / a.metadata.encode_chunk_key((int(i), 0, 0))).delete() for i in slots]))
        return
    for i in slots:  # other layouts: every chunk of the slot
        ny = -(-a.shape[1] // a.chunks[1])
        nx = -(-a.shape[2] // a.chunks[2])
        sync(together([(a.store_path / a.metadata.encode_chunk_key((int(i), y, x))).delete()
                        for y in range(ny) for x in range(nx)]))
