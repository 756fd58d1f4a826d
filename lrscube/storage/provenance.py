"""Run records: what every ingest, detect and export did, kept in the store.

Each run of :func:`lrscube.ingest`, :func:`lrscube.detect` and :func:`lrscube.export_crds`
(wrapped by :func:`recorded`) leaves one record::

    STORE/runs/<started>-<command>-<id>.json     (written once, atomically, never changed)

    id, command, status (ok | failed), error
    started, finished (UTC ISO), seconds
    lrscube_version, lrscube_source (git commit of the code when run from a checkout), software
    host, user
    config, config_digest     the effective configuration and the SHA-256 of its canonical JSON
    inputs                    what went in: count and date range of exposures, programs, paths,
                              the content digest of the exposures, the run that made them
    result                    what came out: counts, classes, epochs, files

One object per run, not one shared file: an ingest and an export writing at the same time
each write their own object, so neither record can be lost to the other's read-modify-write.
:func:`write_record` is the only function that writes one; a transactional store can make that
write part of the run's commit. ``lrscube history --store S`` lists them (:func:`read_runs`).

The MASK files of an export carry the same provenance in their HISTORY
(:func:`history_lines`): the export run, the detect run that made the mask cube (its id is
kept in the mask cube's ``run`` attribute) and the ingest runs before it.
"""

from __future__ import annotations

import contextvars
import functools
import getpass
import hashlib
import inspect
import json
import os
import platform
import socket
import subprocess
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np
import pandas as pd

from . import cube, engine, store as st
from .. import __version__
from ..config import profiles
from ..times import isot, mjd_to_datetime64

#: folder of the run records inside the store
RUNS = st.RUNS

_CURRENT: contextvars.ContextVar[Run | None] = contextvars.ContextVar("lrscube_run", default=None)


# --------------------------------------------------------------------------- pure pieces


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no spaces: equal configurations give equal text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def config_digest(config: dict) -> str:
    """SHA-256 (hex, first 16 digits) of a configuration's canonical JSON."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]


def content_digest(values) -> str:
    """SHA-256 (first 16 hex digits) of a set of strings (e.g. the exposures' content hashes),
    independent of their order: the same exposures give the same digest."""
    h = hashlib.sha256()
    for v in sorted(str(v) for v in values):
        h.update(v.encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def _utc(t: datetime) -> str:
    """UTC ISO time to the millisecond (records of runs started within a second keep their order)."""
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@functools.lru_cache(maxsize=1)
def software() -> dict[str, str]:
    """Versions of lrscube and the libraries that decide its output."""
    from importlib import metadata


    out = {"lrscube": __version__, "python": platform.python_version()}
    for name in ("numpy", "scipy", "pandas", "dask", "distributed", "xarray", "zarr", "astropy", "stdatamodels"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


@functools.lru_cache(maxsize=1)
def source_revision() -> str:
    """The git commit of the running code when it runs from a checkout ('' otherwise), with
    '+modified' when the checkout has uncommitted changes to tracked files."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        rev = subprocess.run(["git", "-C", here, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        if rev.returncode != 0:
            return ""
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("+modified" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return ""


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 (16 hex digits) of the running package's Python sources: two runs with the same
    digest ran the same code, whether installed or from a checkout with uncommitted changes."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h = hashlib.sha256()
    for base, dirs, files in os.walk(root):  # top-down, each folder's entries in name order
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(base, name)
                h.update(os.path.relpath(path, root).encode() + b"\0")
                with open(path, "rb") as f:
                    h.update(f.read() + b"\0")
    return h.hexdigest()[:16]


def exposure_summary(exposures: pd.DataFrame) -> dict[str, Any]:
    """Count, date range, programs and content digest of an exposure table."""
    if exposures is None or not len(exposures):
        return {"exposures": 0}
    mjd = pd.to_numeric(exposures["mjd"], errors="coerce").to_numpy(float)

    out = {"exposures": int(len(exposures)),
           "first_exposure": isot(mjd_to_datetime64(np.nanmin(mjd))[()]),
           "last_exposure": isot(mjd_to_datetime64(np.nanmax(mjd))[()])}
    if "program" in exposures:
        progs = sorted({str(p) for p in exposures["program"] if str(p)})
        out["programs"] = len(progs)
    if "content_hash" in exposures:
        out["content_digest"] = content_digest(exposures["content_hash"])
    if "subarray" in exposures:
        out["subarrays"] = {str(k): int(v) for k, v in exposures["subarray"].value_counts().items()}
    return out


# --------------------------------------------------------------------------- a run


@dataclass
class Run:
    """One run being recorded: set ``inputs`` and ``result`` while it runs."""

    command: str
    store: str
    config: dict
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    inputs: dict = field(default_factory=dict)
    result: dict = field(default_factory=dict)

    @property
    def config_digest(self) -> str:
        return config_digest(self.config)

    def brief(self) -> dict[str, str]:
        """What other records and files quote of this run."""
        return {"id": self.id, "command": self.command, "started": _utc(self.started),
                "config_digest": self.config_digest}

    def record(self, status: str = "ok", error: str | None = None) -> dict[str, Any]:
        finished = datetime.now(timezone.utc)
        sw = software()
        return {
            "id": self.id, "command": self.command, "status": status, "error": error,
            "started": _utc(self.started), "finished": _utc(finished),
            "seconds": round((finished - self.started).total_seconds(), 2),
            "lrscube_version": sw["lrscube"], "lrscube_source": source_revision(), "software": sw,
            "host": socket.gethostname(), "user": _login(),
            "store": self.store,
            "config": self.config, "config_digest": self.config_digest,
            "inputs": self.inputs, "result": self.result,
        }


def current() -> Run | None:
    """The run being recorded in this context (None outside :func:`recorded` functions)."""
    return _CURRENT.get()


def record_name(record: dict) -> str:
    """``<started>-<command>-<id>.json``: names sort by start time."""
    t = record["started"].replace("-", "").replace(":", "").replace(".", "").replace("Z", "")
    return f"{t}-{record['command']}-{record['id']}.json"


def write_record(store: str, record: dict) -> str:
    """Write one run record into ``STORE/runs/`` (atomically); returns its URL."""
    url = st.join(str(store), RUNS, record_name(record))
    st.write_bytes_atomic(url, json.dumps(record, indent=1, default=_json_default).encode())
    return url


def read_runs(store: str, command: str | None = None) -> list[dict]:
    """Every run record of the store, oldest first (optionally of one command)."""
    fs, path = st.fs_and_path(st.join(str(store), RUNS))
    if not fs.exists(path):
        return []
    names = sorted(p for p in fs.ls(path, detail=False) if p.endswith(".json"))
    if command:
        names = [p for p in names if f"-{command}-" in p.rsplit("/", 1)[-1]]
    if not names:
        return []
    blobs = fs.cat(names)  # one request per object, concurrently on an object store
    out = []
    for p in names:
        try:
            out.append(json.loads(blobs[p]))
        except ValueError:
            out.append({"id": p.rsplit("/", 1)[-1], "command": "?", "status": "unreadable record"})
    return out


def history(store: str, command: str | None = None) -> list[dict]:
    """``lrscube history``: every run record, oldest first (:func:`read_runs`); in a format-4
    store also the exposure cube's commits (:func:`lrscube.storage.engine.commits`). A commit
    written while a recorded run ran (an ingest's batches, the cube's creation) is listed in that
    run's ``commits``; one written outside any (a drop, a migration) is an entry of its own,
    ``command`` "commit", at its time (left out when ``command`` picks one kind of run). An
    export's ``tags``: the delivery tags it put on the cube's last commit."""
    runs = read_runs(store)
    if not cube.is_repository(store):
        return [r for r in runs if not command or r.get("command") == command]
    try:
        commits = engine.commits(cube.cube_url(store))
    except Exception as e:  # noqa: BLE001 - a damaged repository: the runs are still worth listing
        note = {"command": "commit", "started": "~", "written_at": "", "snapshot": "", "tags": [],
                "message": f"the repository's commits cannot be read ({engine.describe(e)}): "
                           f"lrscube verify --store {store}"}
        return [r for r in runs if not command or r.get("command") == command] + ([] if command else [note])
    by_run: dict[int, list[dict]] = {}
    alone = []
    for c in commits:
        t = c["written_at"]
        inside = [i for i, r in enumerate(runs) if str(r.get("started", "")) <= t <= str(r.get("finished", ""))]
        if inside:  # runs may overlap (an export beside an ingest): the one started last
            by_run.setdefault(max(inside, key=lambda i: runs[i]["started"]), []).append(c)
        else:
            alone.append({"command": "commit", "started": t, **c})
    out = []
    for i, r in enumerate(runs):
        r = {**r, "commits": by_run.get(i, [])}
        name = (r.get("result") or {}).get("delivery")
        if r.get("command") == "export-crds" and name:
            # tag_last_commit tags the branch's last commit when the export ran: delivery-NAME, or
            # delivery-NAME-SNAPSHOT where that name was taken by another commit
            last = next((c for c in reversed(commits) if c["written_at"] <= str(r.get("finished", ""))), None)
            r["tags"] = [{"tag": t, "snapshot": last["snapshot"]} for t in (last or {}).get("tags", [])
                         if t in (f"delivery-{name}", f"delivery-{name}-{last['snapshot'][:10]}")]
        out.append(r)
    if not command:
        out += alone
    else:
        out = [r for r in out if r.get("command") == command]
    return sorted(out, key=lambda r: str(r.get("started", "")))


def find_run(store: str, run_id: str) -> dict | None:
    return next((r for r in read_runs(store) if r.get("id") == run_id), None)


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "unknown"


def _store_exists(store: str) -> bool:
    try:
        fs, path = st.fs_and_path(store)
        return bool(fs.exists(path))
    except Exception:  # noqa: BLE001 - an unusable URL: nothing to record into
        return False


def recorded(command: str, configure: Callable[[dict], dict], summarise: Callable[[Run, dict, Any], None]):
    """Decorator: record every call of an API function that takes ``store`` as one run.

    ``configure(arguments)`` returns the run's effective configuration from the call's bound
    arguments (called before the run; its digest goes into the MASK files' HISTORY);
    ``summarise(run, arguments, returned)`` fills ``run.inputs`` and ``run.result`` after it. A run that
    raises is recorded as failed, with the error, when the store exists (not when its metadata
    is lost: nothing is written into such a store). A recorded function
    called inside another one's run is not recorded again.
    """
    def deco(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if _CURRENT.get() is not None:
                return fn(*args, **kwargs)
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            arguments.update(arguments.pop("overrides", None) or {})
            store = str(arguments["store"])
            try:
                config = configure(arguments)
            except Exception as e:  # noqa: BLE001 - e.g. no cube yet: the run itself says why
                config = {k: v for k, v in arguments.items() if k != "store"}
                config["config_error"] = f"{type(e).__name__}: {e}"
            run = Run(command=command, store=store, config=_jsonable(config))
            token = _CURRENT.set(run)
            try:
                out = fn(*args, **kwargs)
            except BaseException as e:
                # a store whose metadata is lost is left exactly as found until it is repaired
                if _store_exists(store) and not isinstance(e, st.MissingMetadataError):
                    write_record(store, run.record("failed", f"{type(e).__name__}: {e}"))
                raise
            finally:
                _CURRENT.reset(token)
            try:
                summarise(run, arguments, out)
            except Exception as e:  # noqa: BLE001 - the run succeeded; say what could not be summarised
                run.result["summary_error"] = f"{type(e).__name__}: {e}"
            run.inputs, run.result = _jsonable(run.inputs), _jsonable(run.result)
            write_record(store, run.record("ok"))
            return out

        return wrapper

    return deco


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=_json_default))


# --------------------------------------------------------------------------- what each command records


def store_mode(store: str, mode) -> str:

    if mode:
        return profiles.load(mode).name
    if cube.exists(store):
        return str(cube.info(store).get("profile") or profiles.DEFAULT_MODE)
    return profiles.DEFAULT_MODE


def profile_config(name: str) -> dict:
    d = profiles.load(name).to_dict()
    d.pop("source", None)  # where the file lives is not configuration
    d.pop("simulation", None)
    return d


def ingest_config(a: dict) -> dict:
    import dask

    mode = store_mode(a["store"], a.get("mode"))
    return {"mode": mode, "batch_size": a.get("batch_size") or int(dask.config.get("lrscube.ingest.batch-size", 32)),
            "clip": a.get("clip"), "profile": profile_config(mode)}


def ingest_summary(run: Run, a: dict, s) -> None:
    paths = a.get("paths")
    paths = [str(p) for p in (paths if isinstance(paths, (list, tuple)) else [paths])]
    table = cube.exposure_table(run.store)
    new = table[table["source"].isin(set(map(str, s.ingested)))] if "source" in table else table.iloc[:0]
    run.inputs = {"paths": paths[:50], "n_paths": len(paths),
                  "files": len(s.ingested) + len(s.duplicates) + len(s.rejected),
                  **{k: v for k, v in exposure_summary(new).items() if k != "exposures"},
                  "ingested": len(s.ingested)}
    # the counts of ingest's own summary line (rejections by kind), and its exit status
    run.result = {"ingested": len(s.ingested), "duplicates": len(s.duplicates), "rejected": len(s.rejected),
                  "rejected_reasons": s.by_kind, "exit_code": s.exit_code, "n_in_cube": s.n_in_cube,
                  "cube": exposure_summary(table)}


def export_config(a: dict) -> dict:
    skip = {"store", "out", "overwrite"}
    return {k: (str(v) if k == "baseline" and v is not None else v) for k, v in a.items() if k not in skip}


def export_summary(run: Run, a: dict, man) -> None:
    files = man.get("files", [])
    run.inputs = {**{k: v for k, v in (man.get("data") or {}).items() if k in ("n_exposures", "first_exposure",
                                                                            "last_exposure", "valid_from")},
                  "exposures": (man.get("data") or {}).get("n_exposures"),
                  "mask_epochs": (man.get("epochs") or {}).get("n_mask_cube"),
                  "detect_run": man.get("detect_run")}
    cost = (man.get("merge_cost") or {}).get("pixel_exposures") or {}
    run.result = {"delivery": man.get("delivery"), "files": len(files), "out": man.get("out"),
                  "useafter_first": files[0]["useafter"] if files else None,
                  "useafter_last": files[-1]["useafter"] if files else None,
                  "merge_cost_pixel_exposures": cost, "missed_pixels": man.get("missed_pixels"),
                  "rule": man.get("rule")}


# --------------------------------------------------------------------------- reading them


def runs_table(records: list[dict]) -> pd.DataFrame:
    """One row per run: when, what, status, inputs and result in a few words."""
    rows = []
    for r in records:
        inp, res = r.get("inputs") or {}, r.get("result") or {}
        span = ""
        if inp.get("first_exposure"):
            span = f"{inp['first_exposure'][:10]}..{inp.get('last_exposure', '')[:10]}"
        rows.append({"started": str(r.get("started", ""))[:19] + "Z", "command": r.get("command", ""),
                     "status": r.get("status", ""), "seconds": r.get("seconds"), "id": r.get("id", ""),
                     "exposures": inp.get("exposures", inp.get("ingested")), "span": span,
                     "config": r.get("config_digest", ""), "version": _version(r),
                     "result": r.get("error") or summary_text(r.get("command", ""), res)})
    return pd.DataFrame(rows, columns=["started", "command", "status", "seconds", "id", "exposures", "span",
                                       "config", "version", "result"])


def _version(r: dict) -> str:
    v = str(r.get("lrscube_version", ""))
    src = r.get("lrscube_source")
    return f"{v} ({src})" if src else v


def summary_text(command: str, res: dict) -> str:
    """A run's result in one line."""
    if command == "ingest":
        kinds = ", ".join(f"{n} {k}" for k, n in (res.get("rejected_reasons") or {}).items())
        return (f"{res.get('ingested', 0)} ingested, {res.get('duplicates', 0)} duplicates, "
                f"{res.get('rejected', 0)} rejected" + (f" ({kinds})" if kinds else "")
                + f"; cube {res.get('n_in_cube', '?')}")
    if command == "detect":
        cls = ", ".join(f"{k} {v}" for k, v in (res.get("by_class") or {}).items())
        return (f"{res.get('intervals', 0)} intervals on {res.get('pixels', 0)} pixels ({cls or 'none new'}); "
                f"{res.get('mask_epochs', '-')} mask epochs")
    if command == "export-crds":
        return (f"delivery {res.get('delivery', '?')}: {res.get('files', 0)} files "
                f"{res.get('useafter_first', '')}..{res.get('useafter_last', '')} in {res.get('out', '')}")
    return ", ".join(f"{k} {v}" for k, v in res.items())


def format_history(records: list[dict]) -> str:
    """``lrscube history``: the runs, oldest first (:func:`history`: in a format-4 store with the
    exposure cube's commits, under the run that wrote them or on their own)."""
    if not records:
        return "no runs recorded"
    runs = [r for r in records if r.get("command") != "commit"]
    rows = iter(runs_table(runs).to_dict("records"))
    lines = []
    for rec in records:
        if rec.get("command") == "commit" and not rec.get("written_at"):
            lines.append(rec.get("message", ""))
            continue
        if rec.get("command") == "commit":
            lines.append(f"{str(rec['written_at'])[:19]}Z  {'commit':<11} {rec['snapshot']}  {_commit_text(rec)}")
            continue
        r = next(rows)
        secs = "" if r["seconds"] is None or pd.isna(r["seconds"]) else f"{float(r['seconds']):7.1f} s"
        exp = "" if r["exposures"] is None or pd.isna(r["exposures"]) else f"{int(r['exposures'])} exp"
        lines.append(f"{r['started']}  {r['command']:<11} {r['status']:<6} {secs:>9}  {r['id']}  "
                     f"{exp:>9} {r['span']:<22} config {r['config']}  lrscube {r['version']}\n"
                     f"      {r['result']}")
        for c in rec.get("commits") or ():
            lines.append(f"      commit {c['snapshot']}  {str(c['written_at'])[:19]}Z  {_commit_text(c)}")
        for t in rec.get("tags") or ():
            lines.append(f"      tag {t['tag']} -> commit {t['snapshot']}")
    return "\n".join(lines)


def _commit_text(c: dict) -> str:
    tags = c.get("tags") or []
    return c.get("message", "") + (f"  [tags: {', '.join(tags)}]" if tags else "")


# --------------------------------------------------------------------------- into MASK files


def history_lines(store: str, export_run: Run | None, detect_run: dict | None) -> list[str]:
    """HISTORY text naming the runs a delivery comes from: the export run, the detect run that
    made the mask cube (``detect_run`` as kept in its ``run`` attribute) and the ingest runs
    before that detect run."""
    lines = []
    if export_run is not None:
        sw = software()
        lines.append(f"PROVENANCE: export run {export_run.id} started {_utc(export_run.started)} by "
                     f"{_login()} on {socket.gethostname()}, lrscube {sw['lrscube']}"
                     + (f" (source {source_revision()})" if source_revision() else "")
                     + f", config digest {export_run.config_digest}.")
    if detect_run:
        full = find_run(store, detect_run.get("id", "")) or {}
        inp = full.get("inputs") or {}
        text = (f"PROVENANCE: mask cube from detect run {detect_run.get('id')} started {detect_run.get('started')}, "
                f"config digest {detect_run.get('config_digest')}")
        if inp:
            text += (f", over {inp.get('exposures')} exposures {inp.get('first_exposure')} to "
                     f"{inp.get('last_exposure')} (content digest {inp.get('content_digest')})")
        lines.append(text + ".")
        ingests = [r for r in read_runs(store, "ingest")
                   if r.get("status") == "ok" and r.get("started", "") < str(detect_run.get("started", ""))]
        if ingests:
            n = sum(int((r.get("result") or {}).get("ingested", 0)) for r in ingests)
            lines.append(f"PROVENANCE: exposures from {len(ingests)} ingest runs ({n} files ingested), "
                         f"{ingests[0]['started']} to {ingests[-1]['started']}; last {ingests[-1]['id']}.")
    else:
        lines.append("PROVENANCE: the mask cube carries no detect run record (written outside lrscube detect).")
    lines.append(f"PROVENANCE: full records: lrscube history --store {store}")
    return lines
