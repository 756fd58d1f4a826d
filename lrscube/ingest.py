"""Ingest: validate products, place subarrays in the full frame, append to the exposure cube.

The composition, in order (each step a named function)::

    writer_lock(store)                  STORE/ingest.lock (flock): one ingest per store at a time
    find_inputs(paths)                  files, directories, globs, fsspec URLs -> product files
    for each batch of files:
        load (on workers)               read_product: Exposure, or Rejected with a reason (a task
                                        reads a group of files_per_task files, as write writes them)
        screen (here)                   drop duplicates of stored or earlier exposures, unit mismatches
        Append.room                     slots for the accepted ones after the previous batch's (the
                                        first: after the committed ones, clearing a killed run's
                                        rest); the arrays grow for up to RESERVE files at once
        write (on workers)              each exposure writes its own shards
        Append.commit                   coordinates, then the committed count (atomic)
        IngestLog.add                   ingest_log.parquet: every file and what became of it
    Append.close                        trim the arrays to the committed exposures

Batches overlap: while batch b is written, batch b+1 is read and batch b-1 committed (the
client commits batches in order; batch b's room is made after batch b-1's slots, see
``cube.Append.room(after=...)``), so the workers never wait for a commit.

A batch is the unit of commit: a process killed during a batch leaves the cube with the
batches committed before it; re-running the same ingest skips what is stored and adds the rest.
"""

from __future__ import annotations

import glob as globmod
import os
import re
import sys
import time
from dataclasses import dataclass, field

import dask
import pandas as pd

from . import cube
from . import profiles as prof
from . import provenance
from . import store as st
from .cluster import get_client, worker_threads
from .products import (DEFAULT_CONTENT_HASH, LEGACY_CONTENT_HASH, PRODUCT_SUFFIXES, Exposure, Rejected,
                       read_product)


@dataclass
class IngestSummary:
    store: str
    ingested: list[str] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    n_in_cube: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.rejected

    def __str__(self) -> str:
        lines = [f"ingest into {self.store}: {len(self.ingested)} ingested, "
                 f"{len(self.duplicates)} duplicates skipped, {len(self.rejected)} rejected "
                 f"({self.seconds:.1f} s); the cube holds {self.n_in_cube} exposures"]
        for f, why in self.rejected:
            lines.append(f"  rejected {f}: {why}")
        for f, why in self.duplicates:
            lines.append(f"  duplicate {f}: {why}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- steps


_JWST_NAME = re.compile(r"^jw\d{11}_\d{5}_\d{5}_[a-z0-9]+_(rate|rateints|cal|calints)\.fits$")


def find_inputs(paths) -> tuple[list[str], list[tuple[str, str]]]:
    """Expand files, directories (searched for product files) and globs; local or fsspec URLs.

    Returns (files, problems) where problems name inputs that matched nothing.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[str] = []
    problems: list[tuple[str, str]] = []
    for p in map(str, paths):
        if st.is_remote(p):
            fs, root = st.fs_and_path(p)
            proto = p.split("://", 1)[0]
            if any(ch in root for ch in "*?["):
                found = sorted(fs.glob(root))
            elif fs.isdir(root):
                found = sorted(f for f in fs.find(root) if f.endswith(PRODUCT_SUFFIXES))
            else:
                found = [root] if fs.exists(root) else []
            if not found:
                problems.append((p, "no such file, or no product files (*_rate/_rateints/_cal/_calints.fits) under it"))
            files.extend(f"{proto}://{f}" for f in found)
            continue
        if os.path.isdir(p):
            found = sorted(
                os.path.join(d, f) for d, _, fs_ in os.walk(p) for f in fs_ if f.endswith(PRODUCT_SUFFIXES)
            )
            if not found:
                problems.append((p, "directory holds no *_rate/_rateints/_cal/_calints.fits files"))
        elif os.path.exists(p):
            found = [p]
        else:
            found = sorted(globmod.glob(p, recursive=True))
            if not found:
                problems.append((p, "no such file (and no file matches it as a glob)"))
        files.extend(os.path.abspath(f) for f in found)
    # One entry per file (the same directory given twice). Files named as JWST products come
    # first, so when a copy under another name duplicates one, the cube keeps the JWST name.
    files = sorted(dict.fromkeys(files), key=lambda f: (not _JWST_NAME.match(f.rsplit("/", 1)[-1]), f))
    return files, problems


# A task handles a group of files: each dask task costs the scheduler and the worker ~2 ms of
# CPU beside its work, as much as a tenth of a file's read + write (see files_per_task).


def _load(paths: list[str], profile, clip: float, hash_algorithm: str) -> list[Exposure | Rejected]:
    out: list[Exposure | Rejected] = []
    for path in paths:
        try:
            out.append(read_product(path, profile, clip=clip, hash_algorithm=hash_algorithm))
        except Rejected as r:
            out.append(r)
    return out


def _summary(xs: list[Exposure | Rejected]) -> list[dict]:
    return [{"rejected": str(x)} if isinstance(x, Rejected) else dict(x.meta) for x in xs]


def _write(xs: list[Exposure | Rejected], slots: list[int | None], store: str, arrays=None) -> list[int]:
    """Write each exposure of a group whose slot is given (None: rejected or a duplicate)."""
    for x, slot in zip(xs, slots, strict=True):
        if slot is not None:
            cube.write_exposure(store, slot, x, arrays)
    return [s for s in slots if s is not None]


def files_per_task(batch_size: int, threads: int) -> int:
    """Files per load/write task: ``lrscube.ingest.files-per-task``, or by default as many as
    still give every worker thread four tasks per batch, at most 4 (one on a big cluster)."""
    configured = dask.config.get("lrscube.ingest.files-per-task", None)
    if configured:
        return max(1, int(configured))
    return max(1, min(4, batch_size // (4 * max(1, threads))))


def screen(summaries: list[dict], seen_hash: dict, seen_key: dict, bunit: str | None):
    """Split a batch's summaries into accepted metas, duplicates and rejections.

    A duplicate has the content hash of its SCI data or the exposure identity (ids + start
    time) of an exposure already stored or earlier in this batch. ``seen_*`` are updated.
    A new cube takes the unit of its first exposure; returns (accepted, dups, rejects, bunit).
    """
    accepted, dups, rejects = [], [], []
    for i, m in enumerate(summaries):
        if "rejected" in m:
            rejects.append((i, m["rejected"]))
            continue
        if bunit is not None and m["bunit"] != bunit:
            rejects.append((i, f"SCI unit {m['bunit']!r} differs from the cube's {bunit!r}; "
                               "ingest the rate products, or use a separate store"))
            continue
        prev = seen_hash.get(m["content_hash"]) or seen_key.get(m["exposure_key"])
        if prev is not None:
            dups.append((i, f"same exposure as {prev}"))
            continue
        seen_hash[m["content_hash"]] = m["filename"]
        seen_key[m["exposure_key"]] = m["filename"]
        bunit = bunit or m["bunit"]
        accepted.append(i)
    return accepted, dups, rejects, bunit


class IngestLog:
    """The store's ingest log (``ingest_log.parquet``): read once per run, rewritten whole and
    atomically with each batch's rows added."""

    def __init__(self, store: str):
        self.store = store
        self._table: pd.DataFrame | None = None

    def add(self, rows: list[dict]) -> None:
        if not rows:
            return
        if self._table is None:
            self._table = st.read_table(self.store, st.INGEST_LOG) if st.exists(self.store, st.INGEST_LOG) else None
        new = pd.DataFrame(rows)
        self._table = new if self._table is None else pd.concat([self._table, new], ignore_index=True)
        st.write_table(self.store, st.INGEST_LOG, self._table)


#: most slots an ingest run adds to the arrays ahead of the batches that fill them: bounds what
#: a killed run leaves for the next one to delete, while a run of 100s of files resizes once
RESERVE = 1024


# --------------------------------------------------------------------------- composition


@provenance.recorded("ingest", provenance.ingest_config, provenance.ingest_summary)
def ingest(paths, store: str, mode: str | None = None, *, scheduler: str | None = None,
           batch_size: int | None = None, clip: float = 5.0, progress: bool = True) -> IngestSummary:
    """Ingest product files into the exposure cube at ``store``; returns an IngestSummary.

    Parameters
    ----------
    paths : path, URL, glob or directory, or a list of them
    store : local path or fsspec URL of the lrscube store (created if absent)
    mode : mode profile name or YAML path; default the cube's own, else ``lrs``
    scheduler : dask scheduler address; default DASK_SCHEDULER_ADDRESS or a LocalCluster
    batch_size : exposures per atomic commit (default from configs/dask.yaml)
    clip : rateints integrations deviating by more than ``clip`` x ERR from their median are dropped

    Example
    -------
    >>> s = lrscube.ingest("data/", "cube.zarr")   # doctest: +SKIP
    >>> print(s)                                    # doctest: +SKIP

    One ingest writes to a store at a time: a second one stops with :class:`lrscube.store.
    LockedError` (``STORE/ingest.lock`` names the holder) instead of clearing the first one's
    uncommitted appends.
    """
    t0 = time.perf_counter()
    store = str(store)
    with st.writer_lock(store):
        summary = _ingest(paths, store, mode, scheduler, batch_size, clip, progress)
    summary.seconds = time.perf_counter() - t0
    return summary


def _ingest(paths, store: str, mode, scheduler, batch_size, clip, progress) -> IngestSummary:
    if cube.exists(store):
        meta = cube.info(store)
        if mode and prof.load(mode).name != meta["profile"]:
            raise cube.StoreError(f"{store}: the cube holds mode {meta['profile']!r}, not {mode!r}")
        profile = prof.load(mode or meta["profile"])
        bunit = meta["bunit"]
        hash_algorithm = meta.get("content_hash", LEGACY_CONTENT_HASH)  # as its exposures were hashed
    else:
        _refuse_lost_cube(store)
        profile = prof.load(mode)
        bunit = None
        hash_algorithm = DEFAULT_CONTENT_HASH
    files, problems = find_inputs(paths)
    summary = IngestSummary(store=store, rejected=list(problems))
    known = cube.exposure_table(store)
    seen_hash = dict(zip(known["content_hash"], known["filename"]))
    seen_key = dict(zip(known["exposure_key"], known["filename"]))
    batch_size = batch_size or int(dask.config.get("lrscube.ingest.batch-size", 32))

    with get_client(scheduler, quiet=not progress) as client:
        batches = [files[b0:b0 + batch_size] for b0 in range(0, len(files), batch_size)]
        per_task = files_per_task(batch_size, worker_threads(client))

        def submit(bi):
            # Tasks run batch by batch (priority -bi): dask otherwise interleaves the loads of
            # batches submitted within 100 ms of each other, and a batch's summaries submitted
            # after the next batch's loads would wait behind them.
            groups = [batches[bi][g0:g0 + per_task] for g0 in range(0, len(batches[bi]), per_task)]
            loads = client.map(_load, groups, profile=profile, clip=clip, hash_algorithm=hash_algorithm,
                               pure=False, priority=-bi)
            return loads, client.map(_summary, loads, pure=False, priority=-bi)

        upcoming = submit(0) if batches else ([], [])
        app: cube.Append | None = None
        log = IngestLog(store)
        end = None  # the slot after the last one this run has made room for
        pending = None  # the batch whose writes were submitted last, not yet committed

        def finish(batch_done):
            """Wait for a batch's writes, commit it, log it."""
            start, metas, writes, log_rows = batch_done
            client.gather(writes)
            if metas:
                app.commit(start, metas)
            for r in log_rows:
                if r["status"] == "ingested":
                    summary.ingested.append(r["file"])
            now = pd.Timestamp.now(tz="UTC").isoformat()
            for r in log_rows:
                r["when"] = now
            log.add(log_rows)

        for bi, batch in enumerate(batches):
            loaded, summarised = upcoming
            # read the next batch while this one is screened and written and the one before committed
            upcoming = submit(bi + 1) if bi + 1 < len(batches) else ([], [])
            summaries = [m for group in client.gather(summarised) for m in group]
            new_cube = bunit is None
            accepted, dups, rejects, bunit = screen(summaries, seen_hash, seen_key, bunit)
            log_rows = []
            for i, why in rejects:
                summary.rejected.append((batch[i], why))
                log_rows.append({"file": batch[i], "status": "rejected", "reason": why})
            for i, why in dups:
                summary.duplicates.append((batch[i], why))
                log_rows.append({"file": batch[i], "status": "duplicate", "reason": why})
            start, writes = None, []
            if accepted:
                if new_cube:
                    cube.create(store, profile, bunit=bunit)
                app = app or cube.Append(store)
                # The first append of the run clears what a killed run left beyond the committed
                # exposures; later ones go after the previous batch, which may still be writing.
                unread = len(files) - bi * batch_size - len(batch)
                start = app.room(len(accepted), after=end, ahead=min(unread, RESERVE))
                end = start + len(accepted)
                arrays = app.data_arrays()
                slot = {i: start + j for j, i in enumerate(accepted)}
                for gi, group in enumerate(loaded):
                    slots = [slot.get(i) for i in range(gi * per_task, min((gi + 1) * per_task, len(batch)))]
                    if any(s is not None for s in slots):
                        writes.append(client.submit(_write, group, slots, store, arrays, pure=False, priority=-bi))
                log_rows += [{"file": batch[i], "status": "ingested", "reason": ""} for i in accepted]
            del loaded, summarised
            # commit the previous batch while this one is written and the next one read
            if pending is not None:
                finish(pending)
            pending = (start, [summaries[i] for i in accepted], writes, log_rows)
            if progress:
                done = min((bi + 1) * batch_size, len(files))
                print(f"ingest: {done}/{len(files)} files read, {len(summary.ingested)} ingested, "
                      f"{len(summary.duplicates)} duplicates, {len(summary.rejected)} rejected",
                      file=sys.stderr, flush=True)
        if pending is not None:
            finish(pending)
        if app is not None:
            app.close()
    if problems:
        log.add([{"file": f, "status": "rejected", "reason": why,
                  "when": pd.Timestamp.now(tz="UTC").isoformat()} for f, why in problems])
    summary.n_in_cube = cube.n_stored(store)
    return summary


def _refuse_lost_cube(store: str) -> None:
    """No cube, but the ingest log says exposures were ingested: the cube was lost, and a new
    empty one must not silently take its place."""
    if not st.exists(store, st.INGEST_LOG):
        return
    log = st.read_table(store, st.INGEST_LOG)
    n = int((log["status"] == "ingested").sum()) if "status" in log else 0
    if n:
        raise st.MissingMetadataError(
            f"{cube.cube_url(store)}: no exposure cube, but {st.join(store, st.INGEST_LOG)} records {n} "
            f"ingested files: the cube was deleted or lost, and nothing was written. To repair: restore "
            f"{cube.cube_url(store)} from a backup; or, to rebuild it, move {st.join(store, st.INGEST_LOG)} "
            "aside and ingest the files it lists again")
