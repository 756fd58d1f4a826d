"""Ingest: validate products, place subarrays in the full frame, append to the exposure cube.

The composition, in order (each step a named function)::

    writer_lock(store)                  STORE/ingest.lock (flock): one ingest per store at a time
    find_inputs(paths)                  files, directories, globs, fsspec URLs -> FITS files
                                        (lrscube.intake.inputs.expand, the rule apply shares)
    for each batch of files:
        load (on workers)               read_product: Exposure in the cube's unit, or Rejected with
                                        a reason (a task reads a group of files_per_task files, as
                                        write writes them)
        screen (here)                   drop duplicates of stored or earlier exposures
        Append.room                     slots for the accepted ones after the previous batch's (the
                                        first: after the committed ones, clearing a killed run's
                                        rest); the arrays grow for up to RESERVE files at once
        write (on workers)              each exposure writes its own shards
        Append.commit                   coordinates, then the committed count (atomic)
        IngestLog.add                   ingest_log.parquet: every file and what became of it
    Append.close                        trim the arrays to the committed exposures

The cube's unit is its mode profile's (``unit``, DN/s), fixed when the cube is created;
:func:`rejections` lists what the log says was rejected, and why.

Batches overlap: while batch b is written, batch b+1 is read and batch b-1 committed (the
client commits batches in order; batch b's room is made after batch b-1's slots, see
``cube.Append.room(after=...)``), so the workers never wait for a commit.

A batch is the unit of commit: a process killed during a batch leaves the cube with the
batches committed before it; re-running the same ingest skips what is stored and adds the rest.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import dask
import pandas as pd

from ..storage import cube, engine
from ..config import profiles as prof
from ..storage import provenance
from ..storage import store as st
from ..deploy.cluster import get_client, worker_threads
from .inputs import expand as expand_inputs
from .products import DEFAULT_CONTENT_HASH, LEGACY_CONTENT_HASH, Exposure, Rejected, read_product


#: exit status of ``lrscube ingest`` (also :attr:`IngestSummary.exit_code`)
EXIT_OK = 0  # every input stored, or a duplicate of what the cube holds
EXIT_SOME_REJECTED = 3  # some inputs rejected (each named; reasons kept in the store), the rest stored
EXIT_NOTHING_STORED = 4  # every input rejected: nothing stored

#: rejection lines printed before the summary line (all are in the store's ingest log)
SHOW_REJECTED = 20


@dataclass
class IngestSummary:
    store: str
    ingested: list[str] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    rejected_kinds: list[str] = field(default_factory=list)  # the kind of each rejection, in order
    n_in_cube: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.rejected

    @property
    def by_kind(self) -> dict[str, int]:
        """Rejections counted by kind of reason, most frequent first."""
        kinds = self.rejected_kinds + ["other"] * (len(self.rejected) - len(self.rejected_kinds))
        counts = pd.Series(kinds, dtype=object).value_counts(sort=True)
        return {str(k): int(v) for k, v in counts.items()}

    @property
    def exit_code(self) -> int:
        """:data:`EXIT_OK`, :data:`EXIT_SOME_REJECTED` or :data:`EXIT_NOTHING_STORED`."""
        if not self.rejected:
            return EXIT_OK
        return EXIT_SOME_REJECTED if (self.ingested or self.duplicates) else EXIT_NOTHING_STORED

    def summary_line(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in self.by_kind.items())
        line = (f"ingest into {self.store}: {len(self.ingested)} stored, {len(self.duplicates)} already "
                f"present (duplicates), {len(self.rejected)} rejected" + (f" ({kinds})" if kinds else "")
                + f"; the cube holds {self.n_in_cube} exposures ({self.seconds:.1f} s)")
        if self.rejected:
            line += f"; reasons: lrscube exposures --store {self.store} --rejected"
        return line

    def __str__(self) -> str:
        lines = [f"  rejected {f}: {why}" for f, why in self.rejected[:SHOW_REJECTED]]
        if len(self.rejected) > SHOW_REJECTED:
            lines.append(f"  ... and {len(self.rejected) - SHOW_REJECTED} more rejected")
        return "\n".join([*lines, self.summary_line()])


# --------------------------------------------------------------------------- steps


def find_inputs(paths) -> tuple[list[str], list[tuple[str, str]]]:
    """(files, problems) that ``paths`` name: :func:`lrscube.intake.inputs.expand`, the rule apply shares."""
    found = expand_inputs(paths)
    return found.files, found.problems


# A task handles a group of files: each dask task costs the scheduler and the worker ~2 ms of
# CPU beside its work, as much as a tenth of a file's read + write (see files_per_task).


def _load(paths: list[str], profile, clip: float, hash_algorithm: str, unit: str) -> list[Exposure | Rejected]:
    out: list[Exposure | Rejected] = []
    for path in paths:
        try:  # read_product turns whatever a file holds into an Exposure or a Rejected
            out.append(read_product(path, profile, clip=clip, hash_algorithm=hash_algorithm, unit=unit))
        except Rejected as r:
            out.append(r)
    return out


def _summary(xs: list[Exposure | Rejected]) -> list[dict]:
    return [{"rejected": str(x), "kind": x.kind} if isinstance(x, Rejected) else dict(x.meta) for x in xs]


@dataclass
class WriteFailed:
    """A write the system refused (disk full, permission denied), returned by a write task
    rather than raised, so the client reports it in one line (a task's exception is logged
    with its traceback by the worker)."""

    path: str
    errno: int | None
    strerror: str

    def error(self) -> OSError:
        return OSError(self.errno, self.strerror, self.path)


def _write(xs: list[Exposure | Rejected], slots: list[int | None], store: str, arrays=None):
    """Write each exposure of a group whose slot is given (None: rejected or a duplicate);
    returns what the append's commit takes (:func:`lrscube.storage.cube.written`), or WriteFailed."""
    for x, slot in zip(xs, slots, strict=True):
        if slot is not None:
            where = f"{cube.cube_url(store)} (exposure slot {slot})"
            try:
                cube.write_exposure(store, slot, x, arrays)
            except Exception as e:
                # the system's refusal: an OSError, or in format 4 one inside icechunk's error
                err = e if isinstance(e, OSError) else engine.os_error(e, where) if engine.is_engine_error(e) else None
                if err is None:
                    raise
                return WriteFailed(err.filename or where, err.errno, err.strerror or str(err))
    return cube.written(arrays)


def files_per_task(batch_size: int, threads: int) -> int:
    """Files per load/write task: ``lrscube.ingest.files-per-task``, or by default as many as
    still give every worker thread four tasks per batch, at most 4 (one on a big cluster)."""
    configured = dask.config.get("lrscube.ingest.files-per-task", None)
    if configured:
        return max(1, int(configured))
    return max(1, min(4, batch_size // (4 * max(1, threads))))


def screen(summaries: list[dict], seen_hash: dict, seen_key: dict):
    """Split a batch's summaries into accepted metas, duplicates and rejections.

    A duplicate has the content hash of its SCI data or the exposure identity (ids + start
    time) of an exposure already stored or earlier in this batch. ``seen_*`` are updated.
    Returns (accepted, dups, rejects); a rejection is (index, reason, kind).
    """
    accepted, dups, rejects = [], [], []
    for i, m in enumerate(summaries):
        if "rejected" in m:
            rejects.append((i, m["rejected"], m.get("kind", "other")))
            continue
        prev = seen_hash.get(m["content_hash"]) or seen_key.get(m["exposure_key"])
        if prev is not None:
            dups.append((i, f"same exposure as {prev}"))
            continue
        seen_hash[m["content_hash"]] = m["filename"]
        seen_key[m["exposure_key"]] = m["filename"]
        accepted.append(i)
    return accepted, dups, rejects


def rejections(store: str) -> pd.DataFrame:
    """Every file whose last ingest into ``store`` rejected it: ``file, kind, reason, when``.

    From the store's ingest log (``ingest_log.parquet``), which keeps every file each ingest saw;
    a file rejected once and stored later is not listed.
    """
    cols = ["file", "kind", "reason", "when"]
    if not st.exists(store, st.INGEST_LOG):
        return pd.DataFrame(columns=cols)
    log = st.read_table(store, st.INGEST_LOG)
    for c in cols:
        if c not in log:
            log[c] = ""
    last = log.drop_duplicates("file", keep="last")
    out = last[last["status"] == "rejected"][cols].fillna("")
    return out.reset_index(drop=True)


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

    One ingest writes to a store at a time: a second one stops with :class:`lrscube.storage.store.
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
        unit = meta["bunit"]  # fixed when the cube was created
        hash_algorithm = meta.get("content_hash", LEGACY_CONTENT_HASH)  # as its exposures were hashed
    else:
        _refuse_lost_cube(store)
        profile = prof.load(mode)
        unit = profile.unit
        hash_algorithm = DEFAULT_CONTENT_HASH
    files, problems = find_inputs(paths)
    summary = IngestSummary(store=store, rejected=list(problems), rejected_kinds=["no input"] * len(problems))
    known = cube.exposure_table(store)
    seen_hash = dict(zip(known["content_hash"], known["filename"]))
    seen_key = dict(zip(known["exposure_key"], known["filename"]))
    batch_size = batch_size or int(dask.config.get("lrscube.ingest.batch-size", 32))

    log = IngestLog(store)
    if files:
        _ingest_files(files, store, summary, log, profile, unit, hash_algorithm, seen_hash, seen_key,
                      scheduler, batch_size, clip, progress)
    if problems:
        log.add([{"file": f, "status": "rejected", "kind": "no input", "reason": why,
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


def _ingest_files(files, store, summary, log, profile, unit, hash_algorithm, seen_hash, seen_key,
                  scheduler, batch_size, clip, progress) -> None:
    with get_client(scheduler, quiet=not progress) as client:
        run = _Batches(client, files, store, summary, log, batch_size, dict(profile=profile, clip=clip,
                                                                            hash_algorithm=hash_algorithm, unit=unit))
        upcoming = run.submit(0) if run.batches else ([], [])
        pending = None  # the batch whose writes were submitted last, not yet committed
        for bi, batch in enumerate(run.batches):
            loaded, summarised = upcoming
            # read the next batch while this one is screened and written and the one before committed
            upcoming = run.submit(bi + 1) if bi + 1 < len(run.batches) else ([], [])
            summaries = [m for group in client.gather(summarised) for m in group]
            accepted, dups, rejects = screen(summaries, seen_hash, seen_key)
            log_rows = run.refused(batch, rejects, dups)
            start, writes = run.write(bi, batch, loaded, accepted) if accepted else (None, [])
            log_rows += [{"file": batch[i], "status": "ingested", "kind": "",
                          "reason": summaries[i].get("unit_note", "")} for i in accepted]
            del loaded, summarised
            # commit the previous batch while this one is written and the next one read
            if pending is not None:
                run.finish(*pending)
            pending = (start, [summaries[i] for i in accepted], writes, log_rows)
            if progress:
                run.progress(bi, len(accepted))
        if pending is not None:
            run.finish(*pending)
        if run.app is not None:
            run.app.close()


class _Batches:
    """One ingest's files in batches on a dask client: each batch read (``submit``), its
    refusals recorded (``refused``), its exposures written (``write``), then committed and
    logged (``finish``) while the next batch is read and written."""

    def __init__(self, client, files, store, summary, log, batch_size: int, read_options: dict):
        self.client, self.files, self.store, self.summary, self.log = client, files, store, summary, log
        self.batch_size, self.read_options = batch_size, read_options
        self.batches = [files[b0:b0 + batch_size] for b0 in range(0, len(files), batch_size)]
        self.per_task = files_per_task(batch_size, worker_threads(client))
        self.app: cube.Append | None = None
        self.end = None  # the slot after the last one this run has made room for

    def submit(self, bi: int):
        """Futures of batch ``bi``'s loads (a group of files per task) and of their summaries."""
        # Tasks run batch by batch (priority -bi): dask otherwise interleaves the loads of
        # batches submitted within 100 ms of each other, and a batch's summaries submitted
        # after the next batch's loads would wait behind them.
        batch, k = self.batches[bi], self.per_task
        groups = [batch[g0:g0 + k] for g0 in range(0, len(batch), k)]
        loads = self.client.map(_load, groups, **self.read_options, pure=False, priority=-bi)
        return loads, self.client.map(_summary, loads, pure=False, priority=-bi)

    def refused(self, batch, rejects, dups) -> list[dict]:
        """The log rows of the batch's rejected and duplicate files, counted in the summary."""
        rows = []
        for i, why, kind in rejects:
            self.summary.rejected.append((batch[i], why))
            self.summary.rejected_kinds.append(kind)
            rows.append({"file": batch[i], "status": "rejected", "kind": kind, "reason": why})
        for i, why in dups:
            self.summary.duplicates.append((batch[i], why))
            rows.append({"file": batch[i], "status": "duplicate", "kind": "", "reason": why})
        return rows

    def write(self, bi: int, batch, loaded, accepted: list[int]):
        """Make room for the accepted exposures and submit their writes; (first slot, futures)."""
        if self.app is None and not cube.exists(self.store):
            cube.create(self.store, self.read_options["profile"], bunit=self.read_options["unit"])
        self.app = self.app or cube.Append(self.store)
        # The first append of the run clears what a killed run left beyond the committed
        # exposures; later ones go after the previous batch, which may still be writing.
        unread = len(self.files) - bi * self.batch_size - len(batch)
        start = self.app.room(len(accepted), after=self.end, ahead=min(unread, RESERVE))
        self.end = start + len(accepted)
        arrays = self.app.data_arrays()
        slot = {i: start + j for j, i in enumerate(accepted)}
        writes, k = [], self.per_task
        for gi, group in enumerate(loaded):
            slots = [slot.get(i) for i in range(gi * k, min((gi + 1) * k, len(batch)))]
            if any(s is not None for s in slots):
                writes.append(self.client.submit(_write, group, slots, self.store, arrays, pure=False, priority=-bi))
        return start, writes

    def finish(self, start, metas, writes, log_rows) -> None:
        """Wait for a batch's writes, commit it, log it."""
        done = self.client.gather(writes)
        for d in done:
            if isinstance(d, WriteFailed):
                raise d.error()
        if metas:
            self.app.commit(start, metas, done)
        for r in log_rows:
            if r["status"] == "ingested":
                self.summary.ingested.append(r["file"])
        now = pd.Timestamp.now(tz="UTC").isoformat()
        for r in log_rows:
            r["when"] = now
        self.log.add(log_rows)

    def progress(self, bi: int, n_accepted: int) -> None:
        done = min((bi + 1) * self.batch_size, len(self.files))
        s = self.summary
        # stored = committed; this batch is committed with the next one (or at the end)
        writing = f", {n_accepted} being written" if n_accepted else ""
        print(f"ingest: {done}/{len(self.files)} files read, {len(s.ingested)} stored{writing}, "
              f"{len(s.duplicates)} duplicates, {len(s.rejected)} rejected", file=sys.stderr, flush=True)
