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

import os

from . import store as st

#: the branch every lrscube commit goes to
BRANCH = "main"


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


def open_repository(url: str):
    try:
        return _icechunk().Repository.open(storage(url))
    except Exception as e:  # icechunk raises its own error types for an unreadable repository
        raise st.MissingMetadataError(f"{url}: the exposure cube's icechunk repository cannot be opened "
                                      f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def read_store(url: str, snapshot: str | None = None):
    """A read-only zarr store of the cube at ``url``: the branch's last commit, or ``snapshot``."""
    repo = open_repository(url)
    try:
        session = repo.readonly_session(snapshot_id=snapshot) if snapshot else repo.readonly_session(BRANCH)
    except Exception as e:  # a snapshot the branch names is missing or unreadable
        raise st.CorruptDataError(f"the icechunk commit cannot be read ({type(e).__name__}: "
                                  f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})", url=url) from None
    return session.store


def writable_session(url: str):
    """A writable session on the branch: its changes become visible at ``session.commit``."""
    return open_repository(url).writable_session(BRANCH)


def session_of(array):
    """The icechunk session an array opened from a session's store writes to (None otherwise)."""
    return getattr(getattr(array.store_path, "store", None), "session", None)
