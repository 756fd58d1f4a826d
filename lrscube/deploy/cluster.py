"""Where the work runs: an existing dask scheduler, or an embedded LocalCluster.

``get_client(address)`` connects to ``address`` (or ``DASK_SCHEDULER_ADDRESS``) when given,
else starts a LocalCluster sized to the machine. The dask settings that matter live in
``configs/dask.yaml`` and are loaded the way dask recommends for libraries
(``dask.config.update_defaults``): a user's own dask config still wins.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

import dask
import yaml

from ..config.profiles import configs_dir
from .quiet_workers import QuietTaskFailures

_DEFAULTS_LOADED = False


def load_dask_defaults() -> None:
    """Merge configs/dask.yaml into dask's defaults once (user config and env vars still win)."""
    global _DEFAULTS_LOADED
    if _DEFAULTS_LOADED:
        return
    import distributed  # noqa: F401  (its own defaults first, so ours override them)

    path = configs_dir() / "dask.yaml"
    if path.exists():
        with open(path) as f:
            defaults = yaml.safe_load(f) or {}
        # update_defaults merges into the live config too; no refresh(), which would let
        # distributed's defaults (imported later or elsewhere) win again
        dask.config.update_defaults(defaults)
    _DEFAULTS_LOADED = True


def scheduler_address(address: str | None = None) -> str | None:
    return address or os.environ.get("DASK_SCHEDULER_ADDRESS") or None


def start_local_cluster(n_workers: int | None = None, threads_per_worker: int | None = None,
                        memory_limit: str | None = None, processes: bool | None = None, **kwargs):
    """An embedded LocalCluster sized to the machine (one worker process per core by default)."""
    from distributed import LocalCluster

    load_dask_defaults()
    cores = os.cpu_count() or 1
    n_workers = n_workers or int(dask.config.get("lrscube.local.n-workers", None) or cores)
    threads_per_worker = threads_per_worker or int(dask.config.get("lrscube.local.threads-per-worker", 1))
    memory_limit = memory_limit or dask.config.get("lrscube.local.memory-limit", "auto")
    if processes is None:
        processes = bool(dask.config.get("lrscube.local.processes", True))
    return LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                        memory_limit=memory_limit, processes=processes,
                        dashboard_address=kwargs.pop("dashboard_address", ":0"), **kwargs)


def worker_threads(client=None) -> int:
    """Threads of all workers of ``client`` (default: the active distributed client; 1 without one)."""
    try:
        if client is None:
            from distributed import get_client as active

            client = active()
        return max(1, sum(client.nthreads().values()))
    except (ImportError, ValueError):
        return 1


@contextlib.contextmanager
def get_client(address: str | None = None, quiet: bool = False, **local_kwargs):
    """Context manager yielding a distributed Client; prints the dashboard link.

    An existing client in this process (a notebook's) is reused as it is.
    """
    from distributed import Client, default_client

    load_dask_defaults()
    address = scheduler_address(address)
    existing = None
    if address is None:
        with contextlib.suppress(ValueError):
            existing = default_client()
    if existing is not None:
        yield existing
        return
    dlog = logging.getLogger("distributed")
    old_level = dlog.level
    if dlog.getEffectiveLevel() < logging.WARNING:
        # Worker start/stop chatter at INFO is noise here. Set before the LocalCluster starts:
        # it restores the level it found when it closes.
        dlog.setLevel(logging.WARNING)
    cluster = None
    try:
        if address:
            client = Client(address)
        else:
            cluster = start_local_cluster(**local_kwargs)
            client = Client(cluster)
            if dlog.getEffectiveLevel() >= logging.WARNING:
                # a failed task reaches the caller as its exception; not also as a worker's log
                client.register_plugin(QuietTaskFailures())
        if not quiet:
            print(f"dask dashboard: {client.dashboard_link}", file=sys.stderr)
        try:
            yield client
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()
        dlog.setLevel(old_level)
