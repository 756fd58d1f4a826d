"""The lrscube store: one folder (or object-store prefix) holding every product of a run.

Layout (``STORE`` is a local path or an fsspec URL such as ``s3://bucket/cube.zarr``)::

    STORE/
      exposures/               exposure cube: sci, err, dq (time, y, x) + per-exposure coords;
                               an icechunk repository (format 4, lrscube.storage.engine) or a
                               zarr v3 group (format 3 and before)
      detect.json              the last detect run: parameters, figures, and where its outputs are
      detect/RUN/              one detect run's outputs, written before detect.json names them:
        intervals.parquet      defect intervals, one row per pixel and bad interval
        mask/                  mask cube: dq (time=epoch start, y, x) uint32
        work/                  the run's scratch (removed when it ends, or by the next detect)
      ingest_log.parquet       every file ingest saw: ingested, duplicate or rejected, and why
      ingest.lock              held while an ingest (or drop) writes to the exposure cube
      detect.lock              held while a detect runs
      runs/                    one JSON record per ingest, detect and export run (lrscube.storage.provenance)
      deliveries/              NAME.json + NAME.parquet per recorded delivery (lrscube.masks.deliveries)

A detect run commits by rewriting ``detect.json`` (one atomic write) to name its folder, so a
reader finds the intervals and the mask of one run, never a mix, and a killed detect leaves the
previous run's outputs in place. Stores written before this layout have ``intervals.parquet``
and ``mask/`` at the top and a ``detect.json`` without ``outputs``; they read as before.

Only this module knows the layout; everything else asks it for paths and tables.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import fsspec
import pandas as pd
import zarr

EXPOSURES = "exposures"
MASK = "mask"
INTERVALS = "intervals.parquet"
INGEST_LOG = "ingest_log.parquet"
DETECT_META = "detect.json"
DETECT_RUNS = "detect"
INGEST_LOCK = "ingest.lock"
RUNS = "runs"
DELIVERIES = "deliveries"
DETECT_LOCK = "detect.lock"
#: the scratch folder of detect runs before they kept it in their own run folder
LEGACY_WORK = "_detect_work"


class StoreError(RuntimeError):
    """The store itself cannot be used (not an lrscube store, another mode, unwritable, damaged)."""


class CorruptDataError(StoreError):
    """Stored bytes that fail their checksum or do not decode. ``url``, ``array``, ``slot``
    (storage position along time), ``chunk`` and ``exposure`` say where, as far as known."""

    def __init__(self, reason: str, url: str | None = None, array: str | None = None,
                 slot: int | None = None, chunk=None, exposure: str | None = None):
        super().__init__(reason)
        self.reason, self.url, self.array, self.slot, self.chunk, self.exposure = reason, url, array, slot, chunk, exposure

    def __str__(self) -> str:
        where = [f"array {self.array}" if self.array else None,
                 f"exposure {self.exposure!r} (slot {self.slot})" if self.exposure
                 else (f"slot {self.slot}" if self.slot is not None else None),
                 f"chunk {tuple(self.chunk)}" if self.chunk is not None else None]
        where = ", ".join(w for w in where if w)
        return (f"{self.url or 'store'}: corrupt data{' in ' + where if where else ''}: {self.reason}. "
                "Nothing was computed from it. `lrscube verify --store STORE` lists every damaged "
                "exposure; `lrscube drop --store STORE FILE...` removes them, then ingest their files again")


class MissingMetadataError(StoreError):
    """A store part whose metadata is missing or unreadable while its data is there."""


def storage_options(url: str) -> dict[str, Any]:
    """fsspec options for ``url``: for s3, the endpoint from LRSCUBE_S3_ENDPOINT or AWS_ENDPOINT_URL."""
    if str(url).startswith("s3://"):
        endpoint = os.environ.get("LRSCUBE_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            return {"client_kwargs": {"endpoint_url": endpoint}}
    return {}


def is_remote(url: str) -> bool:
    return "://" in str(url) and not str(url).startswith("file://")


def join(store: str, *parts: str) -> str:
    base = str(store).rstrip("/")
    return "/".join([base, *parts])


def fs_and_path(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(str(url), **storage_options(str(url)))
    return fs, path


def zarr_store(url: str, read_only: bool = False):
    """A zarr store object for a local path or fsspec URL (the exposure cube's:
    :func:`lrscube.storage.cube.zarr_store`, which knows format 4)."""
    url = str(url)
    if is_remote(url):
        return zarr.storage.FsspecStore.from_url(url, storage_options=storage_options(url), read_only=read_only)
    return zarr.storage.LocalStore(url, read_only=read_only)


def exists(store: str, name: str) -> bool:
    url = output_url(store, name) if name in (INTERVALS, MASK) else join(store, name)
    if url is None:
        return False
    fs, path = fs_and_path(url)
    return fs.exists(path)


def write_bytes_atomic(url: str, data: bytes) -> None:
    """Write a whole object so readers see the old or the new content, never a half-written one."""
    fs, path = fs_and_path(url)
    if is_remote(url):  # an object-store PUT is atomic already
        fs.pipe_file(path, data)
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{uuid.uuid4().hex}.partial"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def table_bytes(df: pd.DataFrame) -> bytes:
    """A table as parquet bytes, each page with its CRC (checked by :func:`read_table`)."""
    buf = io.BytesIO()
    df.to_parquet(buf, index=False, write_page_checksum=True)
    return buf.getvalue()


def write_table(store: str, name: str, df: pd.DataFrame) -> str:
    """Write a table (parquet, page checksums) into the store atomically; returns its URL."""
    url = join(store, name)
    write_bytes_atomic(url, table_bytes(df))
    return url


def read_table_url(url: str) -> pd.DataFrame:
    """A parquet table, its pages' CRCs checked: damage is a :class:`CorruptDataError`."""
    import pyarrow.parquet as pq

    fs, path = fs_and_path(url)
    if not fs.exists(path):
        raise FileNotFoundError(f"{url}: not in the store (run the step that writes it first)")
    with fs.open(path, "rb") as f:
        data = f.read()
    try:
        return pq.read_table(io.BytesIO(data), page_checksum_verification=True).to_pandas()
    except Exception as e:  # pyarrow: OSError (CRC, thrift), ArrowInvalid (bad footer), ...
        raise CorruptDataError(f"parquet table does not read ({type(e).__name__}: {e})", url=url) from None


def read_table(store: str, name: str) -> pd.DataFrame:
    """A table of the store (the intervals of the last detect run for ``INTERVALS``)."""
    url = output_url(store, name) if name == INTERVALS else join(store, name)
    if url is None:
        raise FileNotFoundError(f"{join(store, name)}: the last detect run wrote none")
    return read_table_url(url)


def write_json(store: str, name: str, obj: Any) -> None:
    write_bytes_atomic(join(store, name), json.dumps(obj, indent=2, default=str).encode())


def read_json(store: str, name: str) -> Any:
    fs, path = fs_and_path(join(store, name))
    with fs.open(path, "rb") as f:
        data = f.read()
    try:
        return json.loads(data)
    except ValueError as e:
        raise CorruptDataError(f"not readable JSON ({e})", url=join(store, name)) from None


# --------------------------------------------------------------------------- metadata checksums

#: the group attribute holding a zarr group's metadata checksums (:func:`seal_metadata`)
METADATA_CRC = "lrscube_metadata_crc"


def _metadata_crc(doc: dict, volatile=("shape",)) -> int:
    import google_crc32c

    body = {k: v for k, v in doc.items() if k not in volatile}
    if "attributes" in body:
        body["attributes"] = {k: v for k, v in body["attributes"].items() if k not in (METADATA_CRC, "lrscube")}
    return google_crc32c.value(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def _read_metadata(url: str, names) -> dict[str, dict]:
    fs, path = fs_and_path(url)
    keys = {n: f"{path}/{n}/zarr.json" if n else f"{path}/zarr.json" for n in names}
    got = fs.cat(list(keys.values()), on_error="return")
    return {n: parse_metadata(url, n, got.get(k)) for n, k in keys.items()}


def metadata_crcs(docs: dict[str, dict], volatile=("shape",)) -> dict[str, int]:
    """:func:`seal_metadata` of documents already read."""
    return {n: _metadata_crc(d, volatile) for n, d in docs.items()}


def parse_metadata(url: str, n: str, data) -> dict:
    """One zarr.json document, or :class:`CorruptDataError` naming it."""
    if isinstance(data, Exception) or data is None or not isinstance(data, bytes):
        raise CorruptDataError(f"metadata {n or '(group)'}/zarr.json unreadable ({data})", url=url)
    try:
        return json.loads(data)
    except ValueError as e:
        raise CorruptDataError(f"metadata {n or '(group)'}/zarr.json is not JSON ({e})", url=url) from None


def seal_metadata(url: str, names, volatile=("shape",)) -> dict[str, int]:
    """crc32c of the zarr.json of the group at ``url`` ("") and of its arrays ``names``, without
    the keys in ``volatile`` (an array's shape grows with appends) and without these checksums
    themselves: what :func:`check_metadata` compares. The caller stores them in the group's
    attributes, so a damaged attribute, codec, fill value or time unit is an error, not other
    numbers."""
    docs = _read_metadata(url, ["", *names])
    return {n: _metadata_crc(d, volatile) for n, d in docs.items()}


def check_metadata(url: str, crcs: dict, volatile=("shape",), docs: dict | None = None) -> None:
    """Raise :class:`CorruptDataError` naming the first zarr.json whose checksum differs
    (``docs``: the documents, where they are not files under ``url``)."""
    docs = _read_metadata(url, list(crcs)) if docs is None else docs
    for n, want in crcs.items():
        if _metadata_crc(docs[n], volatile) != int(want):
            raise CorruptDataError(f"metadata {n + '/' if n else ''}zarr.json fails its checksum (crc32c): "
                                   "an attribute, codec, fill value or unit was changed or damaged", url=url)


# --------------------------------------------------------------------------- detect runs


def new_run_id() -> str:
    """A detect run's folder name: sortable by start time, unique."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def run_url(store: str, run: str, *parts: str) -> str:
    return join(store, DETECT_RUNS, run, *parts)


def detect_meta(store: str) -> dict | None:
    """detect.json of the store (the last committed detect run), or None."""
    fs, path = fs_and_path(join(store, DETECT_META))
    try:
        with fs.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    try:
        return json.loads(data)
    except ValueError as e:
        raise CorruptDataError(f"not readable JSON ({e}); run `lrscube detect` again to rewrite it",
                               url=join(store, DETECT_META)) from None


def output_url(store: str, name: str) -> str | None:
    """Where the last detect run's ``INTERVALS`` or ``MASK`` is: the folder detect.json names,
    or the top of the store (stores written before run folders); None when that run wrote none
    (``--no-mask``)."""
    meta = detect_meta(store)
    outputs = (meta or {}).get("outputs")
    if isinstance(outputs, dict):
        rel = outputs.get(name)
        return None if not rel else join(store, rel)
    return join(store, name)


def publish_detect(store: str, run: str, meta: dict, intervals: bool = True, mask: bool = True) -> None:
    """Commit a detect run: detect.json names its outputs (one atomic write). Everything the run
    wrote must be complete before this."""
    meta = dict(meta)
    meta["run"] = run
    meta["outputs"] = {INTERVALS: f"{DETECT_RUNS}/{run}/{INTERVALS}" if intervals else None,
                       MASK: f"{DETECT_RUNS}/{run}/{MASK}" if mask else None}
    write_json(store, DETECT_META, meta)


def clean_detect_runs(store: str, keep_previous: bool = True) -> list[str]:
    """Remove run folders no reader needs: every one but the committed run (and, with
    ``keep_previous``, the one before it, which a reader that opened it may still be reading),
    a killed run's scratch, and the top-level outputs of the layout before run folders once a
    run has replaced them. Call with the detect lock held. Returns what was removed."""
    meta = detect_meta(store) or {}
    current = meta.get("run") if isinstance(meta.get("outputs"), dict) else None
    fs, base = fs_and_path(join(store, DETECT_RUNS))
    try:
        runs = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(base, detail=False))
    except FileNotFoundError:
        runs = []
    keep = set()
    if current in runs:
        keep.add(current)
        older = [r for r in runs if r < current]
        if keep_previous and older:
            keep.add(older[-1])
    removed = []
    for r in runs:
        if r not in keep:
            _rm(run_url(store, r))
            removed.append(run_url(store, r))
        elif r != current:  # the previous run: its outputs stay, its scratch goes
            _rm(run_url(store, r, "work"))
    legacy = [LEGACY_WORK] + ([INTERVALS, MASK] if current else [])
    for name in legacy:
        if _rm(join(store, name)):
            removed.append(join(store, name))
    return removed


def _rm(url: str) -> bool:
    fs, path = fs_and_path(url)
    try:
        if not fs.exists(path):
            return False
        fs.rm(path, recursive=True)
        return True
    except FileNotFoundError:
        return False


class LockedError(RuntimeError):
    """Another process is writing to the store."""


#: an object-store lock not renewed for this long belongs to a dead writer and may be taken over
LEASE_SECONDS = 120.0


def _me() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _locked(store: str, url: str, holder: dict, what: str, how: str) -> LockedError:
    return LockedError(
        f"{store}: another {what} holds {url} (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
        f"since {holder.get('since', '?')}); {how}")


@contextlib.contextmanager
def writer_lock(store: str, name: str = INGEST_LOCK, what: str = "ingest"):
    """Hold ``STORE/name`` while writing: a second writer stops with :class:`LockedError`
    naming the holder instead of clearing or overwriting the first one's work.

    Local disk: an OS lock (``flock``) on the file, so the kernel releases it when its holder
    dies, however it dies: no stale lock, no takeover race. Object store: the lock object is
    created only if absent (a conditional PUT, ``If-None-Match: *``), renewed every
    ``LEASE_SECONDS / 4`` by its holder, and one not renewed for ``LEASE_SECONDS`` (its holder
    died) is taken over by a conditional replace (``If-Match`` its ETag), so of two writers
    taking it over at once one wins.
    """
    url = join(store, name)
    if is_remote(url):
        with _object_lock(store, url, what):
            yield
    else:
        with _file_lock(store, url, what):
            yield


@contextlib.contextmanager
def _file_lock(store: str, url: str, what: str):
    import fcntl

    _, path = fs_and_path(url)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                holder = {}
            os.close(fd)
            raise _locked(store, url, holder, what, "wait for it to finish (the lock goes with the process)") from None
        # the holder before us removes the file as it releases it: if we locked a file that is no
        # longer at the path, someone else may hold the one there now; lock that one instead
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        data = json.dumps(_me()).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # still locked: nobody can lock this file and find it gone after us
        os.close(fd)


def _object_etag(fs, path: str) -> str | None:
    try:
        return fs.info(path, refresh=True).get("ETag")
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def _object_lock(store: str, url: str, what: str):
    fs, path = fs_and_path(url)
    me = _me()

    def body():
        return json.dumps({**me, "renewed": time.time()}).encode()

    etag = None
    try:
        out = fs.pipe_file(path, body(), mode="create")
        etag = (out or {}).get("ETag") if isinstance(out, dict) else None
    except FileExistsError:
        old_etag = _object_etag(fs, path)
        try:
            holder = json.loads(fs.cat_file(path) or b"{}")
        except (FileNotFoundError, ValueError):
            holder = {}
        age = time.time() - float(holder.get("renewed", 0) or 0)
        if age < LEASE_SECONDS or old_etag is None:
            raise _locked(store, url, holder, what,
                          f"a lock not renewed for {LEASE_SECONDS:.0f} s is taken over (this one was "
                          f"renewed {age:.0f} s ago)") from None
        try:  # a dead writer's lease: replace it only if nobody else replaced it first
            out = fs.pipe_file(path, body(), IfMatch=old_etag)
        except OSError:
            raise _locked(store, url, holder, what, "another writer took over its expired lease first") from None
        etag = (out or {}).get("ETag") if isinstance(out, dict) else None
    etag = etag or _object_etag(fs, path)
    stop = threading.Event()
    lost: list[str] = []

    def renew():
        nonlocal etag
        while not stop.wait(LEASE_SECONDS / 4):
            try:
                out = fs.pipe_file(path, body(), IfMatch=etag)
                etag = (out or {}).get("ETag") or _object_etag(fs, path)
            except OSError as e:
                lost.append(str(e))
                return

    t = threading.Thread(target=renew, name=f"lrscube-lock-{os.path.basename(path)}", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
        if not lost:
            with contextlib.suppress(FileNotFoundError):
                fs.rm(path)
    if lost:
        raise LockedError(f"{store}: lost {url} while writing (not renewed in time: {lost[0]}); "
                          "another writer may have taken over: check the store with `lrscube verify`")
