"""The lrscube store: one folder (or object-store prefix) holding every product of a run.

Layout (``STORE`` is a local path or an fsspec URL such as ``s3://bucket/cube.zarr``)::

    STORE/                     zarr v3 group
      exposures/               exposure cube: sci, err, dq (time, y, x) + per-exposure coords
      mask/                    mask cube: dq (time=epoch start, y, x) uint32
      intervals.parquet        defect intervals, one row per pixel and bad interval
      ingest_log.parquet       every file ingest saw: ingested, duplicate or rejected, and why
      detect.json              parameters and figures of the last detect run
      ingest.lock              present while an ingest writes to the exposure cube (who, since when)
      runs/                    one JSON record per ingest, detect and export run (lrscube.provenance)
      deliveries/              NAME.json + NAME.parquet per recorded delivery (lrscube.deliveries)

Only this module knows the layout; everything else asks it for paths and tables.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
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
INGEST_LOCK = "ingest.lock"
RUNS = "runs"
DELIVERIES = "deliveries"


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
    """A zarr store object for a local path or fsspec URL."""
    url = str(url)
    if is_remote(url):
        return zarr.storage.FsspecStore.from_url(url, storage_options=storage_options(url), read_only=read_only)
    return zarr.storage.LocalStore(url, read_only=read_only)


def exists(store: str, name: str) -> bool:
    fs, path = fs_and_path(join(store, name))
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


def write_table(store: str, name: str, df: pd.DataFrame) -> str:
    """Write a table (parquet) into the store atomically; returns its URL."""
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    url = join(store, name)
    write_bytes_atomic(url, buf.getvalue())
    return url


def read_table(store: str, name: str) -> pd.DataFrame:
    url = join(store, name)
    fs, path = fs_and_path(url)
    if not fs.exists(path):
        raise FileNotFoundError(f"{url}: not in the store (run the step that writes it first)")
    with fs.open(path, "rb") as f:
        return pd.read_parquet(f)


def write_json(store: str, name: str, obj: Any) -> None:
    write_bytes_atomic(join(store, name), json.dumps(obj, indent=2, default=str).encode())


def read_json(store: str, name: str) -> Any:
    fs, path = fs_and_path(join(store, name))
    with fs.open(path, "rb") as f:
        return json.loads(f.read())


class LockedError(RuntimeError):
    """Another process is writing to the store."""


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextlib.contextmanager
def writer_lock(store: str, name: str = INGEST_LOCK):
    """Hold ``STORE/name`` while writing: a second writer stops with a clear error instead of
    clearing the first one's uncommitted appends.

    The lock file says who holds it (host, pid, since when). A lock left by a process that died
    (kill -9) on this host is taken over; one from another host must be removed by hand, as the
    error says. On a local disk the lock is created atomically (a hard link); on an object store
    it is checked, then written (two writers starting in the same instant are not excluded there).
    """
    url = join(store, name)
    fs, path = fs_and_path(url)
    me = {"host": socket.gethostname(), "pid": os.getpid(),
          "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    data = json.dumps(me).encode()
    for attempt in (0, 1):
        try:
            if is_remote(url):
                if fs.exists(path):
                    raise FileExistsError(path)
                fs.pipe_file(path, data)
            else:  # written whole under another name, then linked: exclusive and never half-written
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                tmp = f"{path}.{uuid.uuid4().hex}.partial"
                with open(tmp, "wb") as f:
                    f.write(data)
                try:
                    os.link(tmp, path)
                finally:
                    os.remove(tmp)
            break
        except FileExistsError:
            try:
                with fs.open(path, "rb") as f:
                    holder = json.loads(f.read() or b"{}")
            except (FileNotFoundError, ValueError):
                holder = {}
            dead = holder.get("host") == me["host"] and not _alive(int(holder.get("pid", -1)))
            if attempt == 0 and (dead or not holder):  # a killed writer's lock, or unreadable
                with contextlib.suppress(FileNotFoundError):
                    fs.rm(path)
                continue
            raise LockedError(
                f"{store}: another ingest is writing to this store (pid {holder.get('pid')} on "
                f"{holder.get('host')}, since {holder.get('since')}); if none is running, "
                f"remove {url}") from None
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            fs.rm(path)
