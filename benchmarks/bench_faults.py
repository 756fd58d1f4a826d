"""Fault injection against the store: many trials per fault kind, each outcome checked.

    python benchmarks/bench_faults.py --workdir /work/bench/faults [--trials 50] [--flips 200]

Inputs: simulated SLITLESSPRISM rate files (``lrscube.simulate``, small and fast). Every
command runs as a real ``python -m lrscube.cli`` process (dask in-process:
``DASK_LRSCUBE__LOCAL__PROCESSES=false``); checks and re-runs run here.

Fault kinds (one row each in the table printed at the end):

- **kill -9 during ingest**: a fresh store, the ingest killed after a random delay in
  [0, the time an unkilled run takes]; then: the store opens, ``verify`` finds nothing, every
  stored exposure equals its file and none is stored twice; the same ingest re-run completes it.
- **kill -9 during detect**: a store with a committed detect run, a second detect killed at a
  random moment; then the intervals and mask read are one run's (equal to the reference), the
  mask cube opens, ``mask-at`` works, and the next detect leaves no scratch behind.
- **kill -9 during export**: ``export-crds`` killed at a random moment; then the store is
  unchanged (``verify``) and ``export-crds --overwrite`` into the same folder completes.
- **byte flip**: one random byte of a random stored object (exposure shards, coordinate chunks,
  mask chunks, parquet tables, metadata) XOR a random non-zero value; then ``verify`` must name
  it or the data read must still equal the original (a flip in JSON whitespace, say);
  "silent" = verify clean and different numbers read.
- **concurrent ingests**: two ingest processes of disjoint file sets started together; the store
  must end holding exactly the files of the runs that exited 0, each once; a refused run exits 2
  naming the holder.
- **stale-lock takeover**: a lock holder killed (-9), then 4 writers start at the same instant:
  exactly one may hold the lock.
- **disk full**: ingest and detect under a file-size limit (RLIMIT_FSIZE, random 16 KB-4 MB):
  the command fails or completes, the store stays consistent (as after a kill) and a re-run
  without the limit completes.

Outcome words: ``ok`` (the guarantee held), ``lost`` / ``doubled`` (exposures), ``silent``
(wrong numbers without an error), ``traceback`` (a Python traceback on stderr), ``broken``
(the store does not open or a re-run fails).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

ENV = dict(os.environ, DASK_LRSCUBE__LOCAL__PROCESSES="false", PYTHONWARNINGS="ignore")


def _flip_kind(path: Path) -> str:
    """What a flipped object is: a chunk (format 3: under ``c/``; format 4: the repository's
    ``chunks/``), icechunk's own objects (snapshots, manifests, refs, ...), a table, or metadata."""
    parts = path.parts
    if "c" in parts or "chunks" in parts:
        return "chunk"
    if {"snapshots", "manifests", "refs", "transactions"} & set(parts) or path.name == "config.yaml":
        return "repository"
    return "table" if path.suffix == ".parquet" else "metadata"


def cli(*args, limit: int | None = None) -> subprocess.Popen:
    pre = None
    if limit:
        def pre():
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return subprocess.Popen([sys.executable, "-m", "lrscube.cli", *map(str, args)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=pre)


def run(*args, limit=None, timeout=600) -> tuple[int, str]:
    p = cli(*args, limit=limit)
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out + err


def kill_after(p: subprocess.Popen, delay: float) -> bool:
    """SIGKILL the process group after ``delay`` s; False if it ended first."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < delay:
        if p.poll() is not None:
            p.communicate()
            return False
        time.sleep(0.005)
    os.killpg(p.pid, signal.SIGKILL)
    p.communicate()
    return True


class Table:
    def __init__(self):
        self.rows: dict[str, collections.Counter] = {}
        self.notes: dict[str, list[str]] = collections.defaultdict(list)

    def add(self, kind: str, outcome: str, note: str = "") -> None:
        self.rows.setdefault(kind, collections.Counter())[outcome] += 1
        print(f"trial: {kind}: {outcome} {note}", file=sys.stderr, flush=True)  # progress, one line a trial
        if note and len(self.notes[kind]) < 5:
            self.notes[kind].append(f"{outcome}: {note}")

    def __str__(self) -> str:
        lines = ["| fault | trials | outcomes |", "| --- | --- | --- |"]
        for kind, c in self.rows.items():
            lines.append(f"| {kind} | {sum(c.values())} | "
                         + ", ".join(f"{k} {v}" for k, v in sorted(c.items(), key=lambda kv: -kv[1])) + " |")
        for kind, notes in self.notes.items():
            lines += [f"  {kind}: {n}" for n in notes]
        return "\n".join(lines)


# ------------------------------------------------------------------ checks


def store_state(store: str, truth: dict) -> tuple[str, int, str]:
    """(outcome, exposures stored, note) of a store after a fault."""
    import lrscube
    from lrscube.storage import cube
    from lrscube.storage.verify import verify

    try:
        if not cube.exists(store):
            return "ok", 0, ""
        rep = verify(store)
        if not rep.ok:
            return "broken", 0, str(rep).splitlines()[1]
        ds = lrscube.open_cube(store, sort=False)
        names = list(ds.filename.values)
        if len(names) != len(set(names)):
            return "doubled", len(names), ""
        for i, name in enumerate(names):
            y0, x0, ny, nx = (int(ds[k].values[i]) for k in ("y0", "x0", "ny", "nx"))
            got = ds.sci[i, y0:y0 + ny, x0:x0 + nx].values
            if not np.array_equal(got, truth[name], equal_nan=True):
                return "silent", len(names), f"{name} differs from its file"
        return "ok", len(names), ""
    except Exception as e:  # noqa: BLE001 - every failure is an outcome here
        return "broken", 0, f"{type(e).__name__}: {e}"


def complete(store: str, inputs: Path, truth: dict) -> tuple[str, str]:
    rc, text = run("ingest", inputs, "--store", store, "--batch-size", "2")
    if "Traceback" in text:
        return "traceback", text.strip().splitlines()[-1]
    if rc != 0:
        return "broken", text.strip().splitlines()[-1]
    outcome, n, note = store_state(store, truth)
    if outcome == "ok" and n != len(truth):
        return "lost", f"{n} of {len(truth)} after the re-run"
    return outcome, note


# ------------------------------------------------------------------ fault kinds


def kill_ingest(t: Table, work: Path, inputs: Path, truth: dict, trials: int, rng) -> None:
    store = work / "ki"
    shutil.rmtree(store, ignore_errors=True)
    t0 = time.monotonic()
    rc, text = run("ingest", inputs, "--store", store, "--batch-size", "2")
    full = time.monotonic() - t0
    assert rc == 0, text
    for _ in range(trials):
        shutil.rmtree(store, ignore_errors=True)
        killed = kill_after(cli("ingest", inputs, "--store", store, "--batch-size", "2"), rng.uniform(0, full))
        outcome, n, note = store_state(str(store), truth)
        if outcome == "ok":
            outcome, note = complete(str(store), inputs, truth)
            note = note or f"{n} committed at the kill" + ("" if killed else " (finished first)")
        t.add("kill -9 during ingest", outcome, note if outcome != "ok" else "")


def _detect_outputs(store: str):
    import lrscube

    return lrscube.open_intervals(store).sort_values(["y", "x", "start_mjd"]).reset_index(drop=True), \
        lrscube.open_mask(store).dq.values


def kill_detect(t: Table, work: Path, store: str, trials: int, rng) -> None:
    import pandas as pd

    from lrscube.storage import store as st

    t0 = time.monotonic()
    rc, text = run("detect", "--store", store)
    full = time.monotonic() - t0
    assert rc == 0, text
    ref_iv, ref_mask = _detect_outputs(store)
    for _ in range(trials):
        kill_after(cli("detect", "--store", store), rng.uniform(0, full))
        try:
            iv, mask = _detect_outputs(store)
            pd.testing.assert_frame_equal(iv, ref_iv)
            same = np.array_equal(mask, ref_mask)
            rc, text = run("mask-at", "--store", store, "--time", "60100")
            if "Traceback" in text:
                outcome, note = "traceback", text.strip().splitlines()[-1]
            elif not same or rc != 0:
                outcome, note = "broken", f"mask-at exit {rc}" if same else "mask differs from the reference"
            else:
                outcome, note = "ok", ""
        except Exception as e:  # noqa: BLE001
            outcome, note = "broken", f"{type(e).__name__}: {e}"
        t.add("kill -9 during detect", outcome, note)
    rc, text = run("detect", "--store", store)
    runs = sorted(p.name for p in (Path(store) / st.DETECT_RUNS).iterdir())
    left = [p for p in (Path(store) / st.DETECT_RUNS).glob("*/work")]
    t.add("kill -9 during detect", "ok" if rc == 0 and len(runs) <= 2 and not left else "broken",
          "" if rc == 0 and len(runs) <= 2 and not left else f"after the last detect: runs {runs}, scratch {left}")


def kill_export(t: Table, work: Path, store: str, trials: int, rng) -> None:
    from lrscube.storage.verify import verify

    out = work / "export"
    shutil.rmtree(out, ignore_errors=True)
    meta = (Path(store) / "detect.json").read_bytes()
    t0 = time.monotonic()
    rc, text = run("export-crds", "--store", store, "--out", out, "--pedigree", "SIMULATION", "--author", "bench")
    full = time.monotonic() - t0
    assert rc == 0, text
    for _ in range(trials):
        kill_after(cli("export-crds", "--store", store, "--out", out, "--pedigree", "SIMULATION", "--author", "bench",
                       "--overwrite"), rng.uniform(0, full))
        ok_store = verify(store).ok and (Path(store) / "detect.json").read_bytes() == meta
        rc, text = run("export-crds", "--store", store, "--out", out, "--pedigree", "SIMULATION", "--author", "bench",
                       "--overwrite")
        if "Traceback" in text:
            t.add("kill -9 during export", "traceback", text.strip().splitlines()[-1])
        elif not ok_store or rc != 0:
            t.add("kill -9 during export", "broken", f"store unchanged {ok_store}, re-run exit {rc}")
        else:
            t.add("kill -9 during export", "ok")


def byte_flips(t: Table, store: str, trials: int, rng) -> None:
    import xarray as xr

    import lrscube
    from lrscube.storage.verify import verify

    files = [p for p in Path(store).rglob("*") if p.is_file() and not p.name.endswith(".lock")
             and "work" not in p.relative_to(store).parts]
    ref_cube = lrscube.open_cube(store, sort=False).load()
    ref_mask = lrscube.open_mask(store).load()
    ref_iv = lrscube.open_intervals(store)
    for _ in range(trials):
        path = rng.choice(files)
        data = path.read_bytes()
        if not data:
            continue
        b = bytearray(data)
        off = rng.randrange(len(b))
        b[off] ^= rng.randrange(1, 256)
        path.write_bytes(bytes(b))
        kind = _flip_kind(path)
        try:
            try:
                found = not verify(store).ok
            except Exception as e:  # noqa: BLE001 - a named error is a detection too
                found = True if isinstance(e, (lrscube.storage.store.StoreError, ValueError)) else None
                if found is None:
                    raise
            if found:
                outcome = "ok (named by verify)"
            else:
                same = (lrscube.open_cube(store, sort=False).load().identical(ref_cube)
                        and lrscube.open_mask(store).load().identical(ref_mask)
                        and lrscube.open_intervals(store).equals(ref_iv))
                outcome = "ok (no change to what is read)" if same else "silent"
            t.add(f"byte flip ({kind})", outcome, f"{path.relative_to(store)} byte {off}" if outcome == "silent" else "")
        except Exception as e:  # noqa: BLE001
            t.add(f"byte flip ({kind})", "traceback", f"{path.relative_to(store)} byte {off}: {type(e).__name__}: {e}")
        finally:
            path.write_bytes(data)
    assert verify(store).ok


def concurrent_ingests(t: Table, work: Path, inputs: Path, truth: dict, trials: int, rng) -> None:
    import lrscube

    files = sorted(inputs.glob("*_rate.fits"))
    store = work / "ci"
    for _ in range(trials):
        shutil.rmtree(store, ignore_errors=True)
        rng.shuffle(files)
        half = len(files) // 2
        a, b = files[:half], files[half:]
        pa = cli("ingest", *a, "--store", store)
        time.sleep(rng.uniform(0, 0.5))
        pb = cli("ingest", *b, "--store", store)
        (oa, ea), (ob, eb) = pa.communicate(timeout=600), pb.communicate(timeout=600)
        text = oa + ea + ob + eb
        won = [x for x, p in ((a, pa), (b, pb)) if p.returncode == 0]
        refused = [p for p in (pa, pb) if p.returncode == 2]
        if "Traceback" in text:
            t.add("concurrent ingests", "traceback", text.strip().splitlines()[-1])
            continue
        if len(won) + len(refused) != 2 or (refused and "another ingest holds" not in text):
            t.add("concurrent ingests", "broken", f"exit codes {pa.returncode}, {pb.returncode}")
            continue
        outcome, n, note = store_state(str(store), truth)
        want = sorted(f.name for x in won for f in x)
        got = sorted(lrscube.open_cube(store).filename.values) if outcome == "ok" and n else []
        if outcome == "ok" and got != want:
            outcome = "lost" if len(got) < len(want) else "doubled"
            note = f"{len(got)} stored, {len(want)} ingested by the runs that exited 0"
        t.add("concurrent ingests", outcome, note)


_RACER = textwrap.dedent("""
    import os, sys, time
    from lrscube.storage import store as st
    time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
    try:
        with st.writer_lock(sys.argv[1]):
            print("won", flush=True)
            while not os.path.exists(sys.argv[3]):
                time.sleep(0.02)
    except st.LockedError:
        print("lost", flush=True)
""")
_HOLDER = "import sys, time\nfrom lrscube.storage import store as st\nwith st.writer_lock(sys.argv[1]):\n" \
          "    print('held', flush=True); time.sleep(600)"


def stale_locks(t: Table, work: Path, trials: int, n: int = 4) -> None:
    store = work / "sl"
    store.mkdir(parents=True, exist_ok=True)
    for k in range(trials):
        holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(store)], stdout=subprocess.PIPE, text=True)
        holder.stdout.readline()
        holder.kill()
        holder.wait()
        release = work / f"release-{k}"
        t0 = time.time() + 4.0
        racers = [subprocess.Popen([sys.executable, "-c", _RACER, str(store), str(t0), str(release)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)]
        outs = sorted(p.stdout.readline().strip() for p in racers)
        release.touch()
        errs = "".join(p.communicate()[1] for p in racers)
        if "Traceback" in errs:
            t.add("stale-lock takeover", "traceback", errs.strip().splitlines()[-1])
        elif outs.count("won") == 1:
            t.add("stale-lock takeover", "ok")
        else:
            t.add("stale-lock takeover", "broken", f"{outs.count('won')} writers held the lock")


def disk_full(t: Table, work: Path, inputs: Path, truth: dict, trials: int, rng) -> None:
    store = work / "df"
    for k in range(trials):
        shutil.rmtree(store, ignore_errors=True)
        limit = int(np.exp(rng.uniform(np.log(16e3), np.log(4e6))))
        step = "ingest" if k % 2 == 0 else "detect"
        if step == "detect":
            rc, text = run("ingest", inputs, "--store", store)
            rc, text = run("detect", "--store", store, limit=limit)
        else:
            rc, text = run("ingest", inputs, "--store", store, "--batch-size", "2", limit=limit)
        kind = f"disk full during {step}"
        if "Traceback" in text:
            t.add(kind, "traceback", f"limit {limit} B: {text.strip().splitlines()[-1]}")
            continue
        outcome, n, note = store_state(str(store), truth)
        if outcome == "ok":
            if step == "ingest":
                outcome, note = complete(str(store), inputs, truth)
            else:
                rc2, text2 = run("detect", "--store", store)
                outcome = "ok" if rc2 == 0 else "broken"
                note = "" if rc2 == 0 else text2.strip().splitlines()[-1]
        t.add(kind, outcome, note or (f"limit {limit} B: exit {rc}: {text.strip().splitlines()[-1][:120]}"
                                       if rc else ""))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--trials", type=int, default=50, help="trials per kill kind, and concurrent + stale-lock")
    ap.add_argument("--flips", type=int, default=200)
    ap.add_argument("--disk-full", type=int, default=20)
    ap.add_argument("--n", type=int, default=10, help="input files")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", default=None,
                    help="fault kinds: ingest detect export flips concurrent stale diskfull")
    a = ap.parse_args(argv)

    from astropy.io import fits

    import lrscube

    rng = random.Random(a.seed)
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    inputs = work / "inputs"
    if not inputs.exists():
        lrscube.simulate(inputs, n=a.n, seed=a.seed, full_frame=False)
    truth = {}
    for f in sorted(inputs.glob("*_rate.fits")):
        with fits.open(f) as h:
            truth[f.name] = np.asarray(h["SCI"].data, dtype=np.float32)
    only = set(a.only or ["ingest", "detect", "export", "flips", "concurrent", "stale", "diskfull"])
    t = Table()
    t0 = time.monotonic()
    base = str(work / "base")
    if only & {"detect", "export", "flips"}:
        shutil.rmtree(base, ignore_errors=True)
        rc, text = run("ingest", inputs, "--store", base)
        assert rc == 0, text
        rc, text = run("detect", "--store", base)  # the committed run every fault must leave
        assert rc == 0, text
    steps = [("flips", lambda: byte_flips(t, base, a.flips, rng)),
             ("stale", lambda: stale_locks(t, work, a.trials - a.trials // 2)),
             ("concurrent", lambda: concurrent_ingests(t, work, inputs, truth, a.trials // 2, rng)),
             ("diskfull", lambda: disk_full(t, work, inputs, truth, a.disk_full, rng)),
             ("export", lambda: kill_export(t, work, base, a.trials, rng)),
             ("detect", lambda: kill_detect(t, work, base, a.trials, rng)),
             ("ingest", lambda: kill_ingest(t, work, inputs, truth, a.trials, rng))]
    for name, step in steps:
        if name in only:
            s = time.monotonic()
            step()
            print(f"{name}: done in {time.monotonic() - s:.0f} s, load average {os.getloadavg()[0]:.1f}\n{t}",
                  file=sys.stderr, flush=True)
    from lrscube import __version__

    print(f"\n{len(truth)} SLITLESSPRISM inputs, seed {a.seed}, lrscube {__version__}, "
          f"{time.monotonic() - t0:.0f} s, load average {os.getloadavg()[0]:.1f}")
    print(t)


if __name__ == "__main__":
    main()
