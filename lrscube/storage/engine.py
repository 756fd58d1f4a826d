"""The exposure cube's storage engine in format 4: an icechunk repository.

A format-4 cube (``STORE/exposures``) is an icechunk repository (https://icechunk.io) whose root
group is the cube: the same arrays, shards and chunk checksums as format 3, but every ingest
batch and every drop is one icechunk commit (a snapshot on branch ``main``), so a reader sees the
cube of one commit, a killed writer leaves the last commit, and the history stays readable. On
a local disk the repository is a folder; on an object store a prefix (``s3://bucket/cube.zarr``
-> bucket ``bucket``, prefix ``cube.zarr/exposures``), the endpoint and credentials from the
environment as for the rest of the store (:func:`lrscube.storage.store.storage_options`).

This module only opens repositories and sessions; :mod:`lrscube.storage.cube` decides what a
commit holds. icechunk's local storage is not safe for concurrent commits, so writers still hold
the store's own writer lock (:func:`lrscube.storage.store.writer_lock`).
"""

from __future__ import annotations

import datetime
import functools
import os
import re

import zarr

from . import store as st

#: the branch every lrscube commit goes to
BRANCH = "main"


@functools.cache
def _icechunk():
    import icechunk

    if not os.environ.get("ICECHUNK_LOG"):
        # icechunk warns on every open of a local repository that its storage is not safe for
        # concurrent commits; lrscube's writer lock keeps writers apart (module docstring)
        icechunk.set_logs_filter("error")
    return icechunk


def storage(url: str):
    """The icechunk storage of the repository at ``url`` (a local path or ``s3://``)."""
    ic = _icechunk()
    url = str(url).rstrip("/")
    if url.startswith("s3://"):
        bucket, _, prefix = url[5:].partition("/")
        endpoint = os.environ.get("LRSCUBE_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
        return ic.s3_storage(bucket=bucket, prefix=prefix, endpoint_url=endpoint,
                             allow_http=bool(endpoint and endpoint.startswith("http://")),
                             force_path_style=bool(endpoint), from_env=True,
                             region=os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION"))
    if st.is_remote(url):
        raise st.StoreError(f"{url}: a format-4 store (icechunk) lives on a local disk or on s3://")
    return ic.local_filesystem_storage(os.path.abspath(url.removeprefix("file://")))


def is_repository(url: str) -> bool:
    """Is there an icechunk repository at ``url``? (its branch refs are there)"""
    fs, path = st.fs_and_path(url)
    try:
        return fs.exists(f"{path.rstrip('/')}/refs/branch.{BRANCH}")
    except (OSError, ValueError):
        return False


def create(url: str):
    """A new, empty repository at ``url``."""
    return _icechunk().Repository.create(storage(url))


@functools.cache
def _config():
    """How lrscube opens a repository (nothing of it is stored): no manifest preload. icechunk
    preloads, on every new session, the manifests of arrays named like coordinates (``time``,
    ``y``, ``x``), which a read of frames never asks for; each read task opens its own session,
    and the preload cost it 5-10 ms (fetching the task's 30 shards: 20-50 ms; benchmarks/README.md,
    "Format-4 reads"). A coordinate's manifest is fetched when it is read, as any other."""
    ic = _icechunk()
    off = ic.ManifestPreloadConfig(max_total_refs=0, preload_if=ic.ManifestPreloadCondition.false())
    return ic.RepositoryConfig(manifest=ic.ManifestConfig(preload=off))


def open_repository(url: str):
    try:
        return _icechunk().Repository.open(storage(url), config=_config())
    except Exception as e:  # icechunk raises its own error types for an unreadable repository
        raise st.MissingMetadataError(f"{url}: the exposure cube's icechunk repository cannot be opened "
                                      f"({describe(e)})") from None


def read_session(url: str, snapshot: str | None = None):
    """A read-only session of the repository at ``url``: the branch's last commit, or ``snapshot``."""
    repo = open_repository(url)
    try:
        return repo.readonly_session(snapshot_id=snapshot) if snapshot else repo.readonly_session(BRANCH)
    except Exception as e:  # a snapshot the branch names is missing or unreadable
        raise st.CorruptDataError(f"the icechunk commit cannot be read ({describe(e)})", url=url) from None


def read_store(url: str, snapshot: str | None = None):
    """A read-only zarr store of the cube at ``url``: the branch's last commit, or ``snapshot``."""
    return reads(read_session(url, snapshot), url)


def reads(session, url: str):
    """The zarr store of a read-only ``session``, its errors lrscube's (:class:`_Reads`)."""
    return _Reads(session.store, url)


#: icechunk's own errors, and its Rust code panicking through pyo3 (a damaged snapshot's
#: flatbuffer can make it panic instead of returning an error)
_ENGINE_ERRORS = frozenset({"IcechunkError", "RustPanic", "PanicException"})


def is_engine_error(e: BaseException) -> bool:
    """Is ``e`` icechunk's own error (damaged or missing repository objects, a failed commit)?"""
    return any(c.__name__ in _ENGINE_ERRORS for c in type(e).__mro__)


def describe(e: BaseException) -> str:
    """icechunk's error in one line (its message carries a multi-line context)."""
    lines = [ln.strip(" x|`->") for ln in str(e).strip().splitlines()]
    return next((ln for ln in lines if ln), type(e).__name__)


def os_error(e: BaseException, path: str) -> OSError | None:
    """The operating system's error inside icechunk's (a full disk, a permission), as an
    OSError on ``path``; None when it is not one."""
    for line in reversed(str(e).strip().splitlines()):
        m = re.search(r"([^:>|`]*?)\s*\(os error (\d+)\)\s*$", line)
        if m:
            return OSError(int(m.group(2)), m.group(1).strip(" x|`->") or os.strerror(int(m.group(2))), path)
    return None


class _Reads(zarr.storage.WrapperStore):
    """A read-only session's store whose errors are :class:`~lrscube.storage.store.CorruptDataError`
    naming the key: a snapshot or manifest that is damaged or gone is damage in the store, and
    every reader (lrscube's, xarray's, a dask task's) reports it as such."""

    def __init__(self, store, url: str):
        super().__init__(store)
        self.url = url

    def _with_store(self, store):
        return type(self)(store, self.url)

    def _damage(self, e: Exception, key: str) -> Exception:
        if not is_engine_error(e):
            return e
        return st.CorruptDataError(f"the icechunk repository cannot give {key} ({describe(e)})", url=self.url)

    async def get(self, key, prototype, byte_range=None):
        try:
            return await self._store.get(key, prototype, byte_range)
        except Exception as e:
            raise self._damage(e, key) from None

    async def get_partial_values(self, prototype, key_ranges):
        try:
            return await self._store.get_partial_values(prototype, key_ranges)
        except Exception as e:
            raise self._damage(e, ", ".join(k for k, _ in key_ranges)[:200]) from None

    async def exists(self, key):
        try:
            return await self._store.exists(key)
        except Exception as e:
            raise self._damage(e, key) from None


def has_commits(url: str, snapshot: str | None = None) -> bool:
    """Has the branch (or ``snapshot``: a commit once read, whose history cannot change) a commit
    of lrscube's, one beyond the repository's own first, empty one? A history that cannot be read
    counts as one: it is damage, not an empty cube. (Snapshots the branch does not reach are no
    sign of damage: a commit writes its snapshot before it moves the branch, so a killed or
    running commit leaves one.)"""
    try:
        repo = open_repository(url)
        history = repo.ancestry(snapshot_id=snapshot) if snapshot else repo.ancestry(branch=BRANCH)
        return next(history, None) is not None and next(history, None) is not None
    except Exception:  # noqa: BLE001 - any unreadable snapshot
        return True


def snapshot_count(url: str) -> int:
    """Snapshots stored in the repository folder at ``url`` (0 where there is none)."""
    fs, path = st.fs_and_path(url)
    try:
        return len(fs.ls(f"{path.rstrip('/')}/snapshots", detail=False))
    except FileNotFoundError:
        return 0


def tag_last_commit(url: str, tag: str) -> tuple[str, str]:
    """Tag the branch's last commit; returns (the tag, its snapshot id). icechunk's tags never
    move: where ``tag`` names another commit already (a delivery recorded again under its
    name), this one is tagged ``tag-SNAPSHOT`` instead."""
    repo = open_repository(url)
    snapshot = repo.lookup_branch(BRANCH)
    tags = set(repo.list_tags())
    if tag in tags and repo.lookup_tag(tag) != snapshot:
        tag = f"{tag}-{snapshot[:10]}"
    if tag not in tags:
        repo.create_tag(tag, snapshot_id=snapshot)
    return tag, snapshot


def commits(url: str) -> list[dict]:
    """The branch's commits, oldest first: ``snapshot`` (id), ``written_at`` (UTC ISO, to the
    millisecond), ``message``, ``parent`` and ``tags`` (the repository's tags naming it)."""
    repo = open_repository(url)
    tagged: dict[str, list[str]] = {}
    for tag in sorted(repo.list_tags()):
        tagged.setdefault(repo.lookup_tag(tag), []).append(tag)
    out = []
    for c in repo.ancestry(branch=BRANCH):
        out.append({"snapshot": c.id, "parent": c.parent_id, "message": c.message,
                    "written_at": c.written_at.astimezone(datetime.timezone.utc)
                    .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                    "tags": tagged.get(c.id, [])})
    return out[::-1]


def writable_session(url: str):
    """A writable session on the branch: its changes become visible at ``session.commit``."""
    return open_repository(url).writable_session(BRANCH)


def session_of(array):
    """The icechunk session an array opened from a session's store writes to (None otherwise)."""
    return getattr(getattr(array.store_path, "store", None), "session", None)
