"""The ``lrscube`` command: a thin layer over the Python API (``lrscube.*``).

Every subcommand parses its arguments, calls one API function and prints its summary.
Exit codes: 0 success; 1 ``verify`` found damage; 2 a usage, store or system error (one line
naming the path and the cause: a store that is not one, a store another ingest holds,
permission denied, disk full; nothing half-done is left); 130 / 143 interrupted (Ctrl-C /
SIGTERM: the store keeps its last committed state); ``ingest`` and ``apply``: 3 when some
inputs were rejected (each
named with its reason, the others done) and 4 when every input was rejected, so nothing was
stored or written. ``ingest`` exits 0 when every input was stored or was already in the cube
(``lrscube exposures --rejected`` lists the rejected files with their reasons), ``apply`` when
every file was applied or skipped (before the mask's first epoch; ``--strict``: 3 then).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import traceback

from . import __version__


def _add_store(p, required=True):
    p.add_argument("--store", required=required, help="lrscube store: a path or an fsspec URL (s3://bucket/cube.zarr)")


def _add_scheduler(p):
    p.add_argument("--scheduler", default=None,
                   help="dask scheduler address (default: $DASK_SCHEDULER_ADDRESS, else an embedded LocalCluster)")


def _add_mode(p):
    p.add_argument("--mode", default=None, help="mode profile name or YAML path (default: the store's, else 'lrs')")


# --------------------------------------------------------------------------- commands


def cmd_simulate(a):
    from .validation.simulate import simulate

    res = simulate(a.out, n=a.n, seed=a.seed, scenario=a.scenario, mode=a.mode or "lrs",
                   start=a.start, span_days=a.span_days, subarray_mix=a.subarray_mix,
                   full_frame=not a.subarray_only, progress=True, overwrite=a.overwrite)
    print(f"wrote {len(res.files)} exposures to {res.out}; truth table {res.truth_path} "
          f"({len(res.truth)} defect intervals), look-alikes {res.lookalikes_path} ({len(res.lookalikes)} rows)")
    return 0


def cmd_ingest(a):
    from .intake.ingest import EXIT_NOTHING_STORED, ingest

    s = ingest(a.paths, a.store, mode=a.mode, scheduler=a.scheduler, batch_size=a.batch_size)
    print(s)
    if s.exit_code == EXIT_NOTHING_STORED:
        print(f"lrscube ingest: error: nothing was stored: every input was rejected ({len(s.rejected)}) "
              f"(reasons above, and in `lrscube exposures --store {a.store} --rejected`)", file=sys.stderr)
    return s.exit_code


#: columns `lrscube exposures` shows of the exposure table
EXPOSURE_COLUMNS = ["time", "filename", "product", "exp_type", "subarray", "program", "observation",
                    "visit", "exposure", "exptime", "nints", "bunit"]


def cmd_exposures(a):
    from .storage import store as st
    from .storage.cube import exists, exposure_table
    from .intake.ingest import rejections

    if not exists(a.store) and not st.exists(a.store, st.INGEST_LOG):
        raise FileNotFoundError(f"{a.store}: no lrscube store here (run `lrscube ingest PATH... --store {a.store}` first)")
    if a.rejected:
        df = rejections(a.store)
        what = f"{len(df)} files rejected by ingest (the last outcome of each file)"
    else:
        t = exposure_table(a.store)
        df = t[[c for c in EXPOSURE_COLUMNS if c in t]]
        what = f"{len(df)} exposures stored"
    if a.out:
        _write_table(df, a.out, "exposures")
        print(f"wrote {what} to {a.out}")
    else:
        if len(df):
            print(df.to_string(index=False))
        print(f"{a.store}: {what}")
    return 0


def _write_table(df, out: str, command: str) -> None:
    out = str(out)
    if out.endswith(".csv"):
        df.to_csv(out, index=False)
    elif out.endswith(".parquet"):
        df.to_parquet(out, index=False)
    else:
        raise SystemExit(f"lrscube {command}: --out {out}: name a .csv or .parquet file")


def cmd_detect(a):
    from .deploy.cluster import get_client
    from .detection import noise_law
    from .detection.detect import detect
    from .storage import store as st

    overrides = {k: v for k, v in (("false_alarm_pixels", a.false_alarm_pixels),
                                   ("detection_sigma", a.detection_sigma),
                                   ("tile_memory_mb", a.tile_memory_mb)) if v is not None}
    before = (st.detect_meta(a.store) or {}).get("run")
    with get_client(a.scheduler):
        iv = detect(a.store, mode=a.mode, min_epoch_days=a.min_epoch_days, write_mask=not a.no_mask,
                    tiles=tuple(a.tiles) if a.tiles else None, full=a.full, **overrides)
    if before is not None and (st.detect_meta(a.store) or {}).get("run") == before:
        print(f"nothing changed since detect run {before} (the same exposures, settings, code and "
              "libraries): its intervals and mask are kept (--full recomputes)")
    print(_summarize_intervals(iv))
    meta = st.detect_meta(a.store) or {}
    for c in meta.get("cautions", []):
        print("caution: " + c)
    line = noise_law.describe(meta.get("noise_law"))
    if line:
        print(line)
    return 0


def cmd_intervals(a):
    from .detection.detect import open_intervals

    df = open_intervals(a.store)
    out = str(a.out)
    _write_table(df, out, "intervals")
    print(f"wrote {len(df)} intervals ({df[['y', 'x']].drop_duplicates().shape[0]} pixels) to {out}")
    return 0


def cmd_mask_at(a):
    from .masks.maskcube import mask_at, summarize_mask
    from .masks.crds_export import write_mask_fits

    m = mask_at(a.store, a.time, extrapolate=a.extrapolate)
    print(summarize_mask(m))
    if a.out:
        write_mask_fits(m, a.out)
        print(f"wrote {a.out}")
    return 0


def cmd_export_crds(a):
    from .masks.crds_export import export_crds

    res = export_crds(a.store, a.out, author=a.author, pedigree=a.pedigree, max_files=a.max_files,
                      min_epoch_days=a.min_epoch_days, baseline=a.baseline,
                      first_useafter=a.first_useafter, overwrite=a.overwrite, **_delivery_options(a))
    print(res)
    return 0


def cmd_apply(a):
    from .masks.apply import apply_mask

    res = apply_mask(a.store, a.files, out=a.out, in_place=a.in_place, set_nan=a.set_nan,
                     extrapolate=a.extrapolate)
    print(res)
    if res.exit_code == 4:
        print(f"lrscube apply: error: no file was written: every input was rejected ({len(res)})", file=sys.stderr)
    if a.strict and not res.ok:
        return res.exit_code or 3  # a skipped file counts as rejected
    return res.exit_code


def cmd_evaluate(a):
    from .validation.evaluate import evaluate, format_report

    min_snr = None if a.min_snr == "threshold" else float(a.min_snr)
    print(format_report(evaluate(a.store, a.truth, mode=a.mode, baselines=not a.no_baselines,
                                 lookalikes=a.lookalikes, min_snr=min_snr)))
    return 0


def cmd_report(a):
    from .reporting.report import report

    path = report(a.store, a.out, manifest=a.manifest, spectra=a.spectra, top=a.top)
    print(f"report: {path}")
    return 0


def cmd_spectra_check(a):
    from .reporting.spectra import spectra_check

    res = spectra_check(a.store, a.truth, out=a.out, epochs=a.epochs, nsigma=a.nsigma, noise=a.noise, seed=a.seed)
    print(res)
    return 0


def cmd_verify(a):
    from .storage.verify import verify

    rep = verify(a.store)
    print(rep)
    return 0 if rep.ok else 1


def cmd_drop(a):
    from .storage.cube import drop, n_stored

    rows = drop(a.store, a.names)
    print(f"dropped {len(rows)} exposures from {a.store} (it holds {n_stored(a.store)}); "
          "run `lrscube detect` again to recompute the mask without them")
    for r in rows.itertuples(index=False):
        print(f"  slot:{r.slot}  {getattr(r, 'filename', '')}")
    return 0


def cmd_migrate(a):
    from .storage.migrate import migrate

    got = migrate(a.store, a.out, progress=True)
    print(f"migrated {a.store} -> {a.out}: {got['exposures']} exposures in {got['commits']} commits "
          f"(format 4, an icechunk repository); copied {', '.join(got['copied']) or 'nothing else'}; "
          f"{a.store} is unchanged")
    return 0


def cmd_demo(a):
    from .demo import demo

    return demo(n=a.n, workdir=a.workdir, seed=a.seed, full_frame=a.full_frame, scheduler=a.scheduler)


# --------------------------------------------------------------------------- runs and deliveries


def _delivery_options(a) -> dict:
    return {"every_epoch": a.every_epoch, "min_changed_pixels": a.min_changed_pixels, "name": a.name}


def _add_delivery_options(p):
    """export-crds options of the delivery rule (lrscube.masks.delivery_rule)."""
    p.add_argument("--every-epoch", action="store_true",
                   help="one file per mask-cube epoch (no delivery rule; --max-files/--min-epoch-days still merge)")
    p.add_argument("--min-changed-pixels", type=int, default=None,
                   help="a new file needs at least this many pixels of one class changed in the mode's regions "
                        "(default: the profile's delivery.min_changed_pixels, 1)")
    p.add_argument("--name", default=None, help="the delivery's name in the store (default delivery-NNN)")


def cmd_history(a):
    from .storage.provenance import format_history, history

    runs = history(a.store, a.command_filter)
    if a.json:
        import json

        print(json.dumps(runs, indent=1))
    else:
        print(format_history(runs[-a.last:] if a.last else runs))
    return 0


def cmd_deliveries(a):
    from .masks.deliveries import format_deliveries, list_deliveries

    recs = list_deliveries(a.store)
    if a.json:
        import json

        print(json.dumps(recs, indent=1, default=str))
    else:
        print(format_deliveries(recs))
    return 0


def cmd_diff(a):
    from .masks.deliveries import diff

    print(diff(a.store, a.a, a.b, out=a.out, delivery=a.delivery))
    return 0


def _add_ops_commands(sub):
    p = sub.add_parser("history", help="the runs recorded in the store (ingest, detect, export-crds) and, in a "
                                       "format-4 store, the exposure cube's commits (ingest batches, drops, "
                                       "delivery tags)")
    _add_store(p)
    p.add_argument("--command", dest="command_filter", default=None, choices=["ingest", "detect", "export-crds"],
                   help="only runs of this command")
    p.add_argument("--last", type=int, default=None, help="only the last N entries (runs, and commits made outside a run)")
    p.add_argument("--json", action="store_true", help="the full records as JSON")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("deliveries", help="the MASK deliveries recorded in the store")
    _add_store(p)
    p.add_argument("--json", action="store_true", help="the full records (manifests) as JSON")
    p.set_defaults(func=cmd_deliveries)

    p = sub.add_parser("diff", help="pixels that changed between two deliveries, or the masks at two dates")
    _add_store(p)
    p.add_argument("a", help="a delivery name, or a date (ISO or MJD)")
    p.add_argument("b", help="a delivery name, or a date (ISO or MJD)")
    p.add_argument("--delivery", default=None, help="with two dates: take the masks from this delivery's files "
                                                    "(default: the mask cube)")
    p.add_argument("--out", default=".", help="folder for the map (PNG), the pixels (CSV) and a summary (JSON)")
    p.set_defaults(func=cmd_diff)


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lrscube", description=__doc__.split("\n")[0] + " Time-variable bad-pixel masks for JWST MIRI LRS.")
    ap.add_argument("--version", action="version", version=f"lrscube {__version__}")
    ap.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for add in (_simulate_parser, _ingest_parser, _exposures_parser, _detect_parser, _intervals_parser,
                _mask_at_parser, _export_crds_parser, _apply_parser, _evaluate_parser, _report_parser,
                _spectra_check_parser, _verify_parser, _drop_parser, _migrate_parser, _demo_parser):  # the order of --help
        add(sub)
    _add_ops_commands(sub)
    return ap


def _simulate_parser(sub) -> None:
    p = sub.add_parser("simulate", help="write simulated MIRI rate/rateints files and their truth tables")
    p.add_argument("out", help="output directory (rate and rateints files; truth/ beside them)")
    p.add_argument("--n", type=int, default=150, help="number of exposures (default 150)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scenario", default=None, help="scenario YAML or shipped name, e.g. 'ideal' "
                                                    "(default configs/scenario-default.yaml)")
    p.add_argument("--start", default="2022-07-15", help="date of the first exposure (ISO)")
    p.add_argument("--span-days", type=float, default=900.0, help="time span of the set in days")
    p.add_argument("--subarray-mix", type=float, default=None, help="fraction of exposures in the mode's first non-FULL subarray "
                                                                         "(LRS: SLITLESSPRISM), 0-1")
    p.add_argument("--subarray-only", action="store_true", help="only the mode's first non-FULL subarray (LRS: "
                                                                      "SLITLESSPRISM; small and fast)")
    p.add_argument("--overwrite", action="store_true", help="replace rate/rateints files already in OUT")
    _add_mode(p)
    p.set_defaults(func=cmd_simulate)


def _ingest_parser(sub) -> None:
    p = sub.add_parser("ingest", help="add rate/rateints/cal/calints files to the exposure cube")
    p.add_argument("paths", nargs="+", help="files, directories or globs (local or fsspec URLs)")
    _add_store(p)
    _add_mode(p)
    _add_scheduler(p)
    # a rejection always gives a non-zero status; --strict is still accepted by scripts that pass it
    p.add_argument("--strict", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=None, help="exposures per atomic commit")
    p.set_defaults(func=cmd_ingest)


def _exposures_parser(sub) -> None:
    p = sub.add_parser("exposures", help="list the stored exposures, or with --rejected the rejected files and why")
    _add_store(p)
    p.add_argument("--rejected", action="store_true",
                   help="the files ingest rejected (last outcome of each file), with the kind and the reason")
    p.add_argument("--out", default=None, help="write the table to F.csv or F.parquet instead of printing it")
    p.set_defaults(func=cmd_exposures)


def _detect_parser(sub) -> None:
    p = sub.add_parser("detect", help="find defect intervals and build the mask cube")
    _add_store(p)
    _add_mode(p)
    _add_scheduler(p)
    p.add_argument("--min-epoch-days", type=float, default=0.0, help="merge mask epochs shorter than this")
    p.add_argument("--false-alarm-pixels", type=float, default=None,
                   help="expected false pixels over the detector per run; sets the threshold (profile default 0.1)")
    p.add_argument("--detection-sigma", type=float, default=None, help="explicit detection threshold (sigma)")
    p.add_argument("--tile-memory-mb", type=float, default=None, help="memory budget of one tile (MB)")
    p.add_argument("--tiles", type=int, nargs=2, metavar=("TY", "TX"), default=None, help="tile size (pixels)")
    p.add_argument("--no-mask", action="store_true", help="write the intervals only, not the mask cube")
    p.add_argument("--full", action="store_true",
                   help="recompute even when the exposures, settings and code are those of the committed run")
    p.set_defaults(func=cmd_detect)


def _intervals_parser(sub) -> None:
    p = sub.add_parser("intervals", help="export the defect intervals table")
    _add_store(p)
    p.add_argument("--out", required=True, help="F.csv or F.parquet")
    p.set_defaults(func=cmd_intervals)


def _mask_at_parser(sub) -> None:
    p = sub.add_parser("mask-at", help="the mask valid at a time")
    _add_store(p)
    p.add_argument("--time", required=True, help="ISO date/time (UTC) or MJD")
    p.add_argument("--out", default=None, help="write that mask as a MASK FITS file")
    p.add_argument("--extrapolate", action="store_true", help="before the first epoch, use the first epoch's mask")
    p.set_defaults(func=cmd_mask_at)


def _export_crds_parser(sub) -> None:
    p = sub.add_parser("export-crds", help="write a CRDS delivery of MASK reference files")
    _add_store(p)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--author", default=None, help="AUTHOR keyword (default: your login name)")
    p.add_argument("--pedigree", default=None,
                   help="default: INFLIGHT <first> <last> exposure dates of each file; SIMULATION for simulated data")
    p.add_argument("--max-files", type=int, default=None, help="merge epochs, least cost first, to at most this many files")
    p.add_argument("--min-epoch-days", type=float, default=None,
                   help="files at least this many days apart (default: the profile's delivery interval, 30; "
                        "with --every-epoch: as in the mask cube)")
    p.add_argument("--baseline", default=None, help="existing static MASK file whose flags every epoch keeps")
    p.add_argument("--first-useafter", default=None,
                   help="USEAFTER of the first file (default: the first exposure); earlier covers older data")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in OUT (and a delivery of that name)")
    _add_delivery_options(p)
    p.set_defaults(func=cmd_export_crds)


def _apply_parser(sub) -> None:
    p = sub.add_parser("apply", help="OR the right epoch's mask into existing products' DQ")
    _add_store(p)
    p.add_argument("files", nargs="+")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--out", default=None, help="directory for the new files (default: beside the input, *_lrscube.fits)")
    g.add_argument("--in-place", action="store_true", help="modify the input files")
    p.add_argument("--set-nan", action="store_true", help="also set SCI to NaN where DO_NOT_USE is applied")
    p.add_argument("--extrapolate", action="store_true",
                   help="files before the mask's first epoch get the first epoch (default: skipped)")
    p.add_argument("--strict", action="store_true",
                   help="exit 3 also when files were skipped (before the mask's first epoch)")
    p.set_defaults(func=cmd_apply)


def _evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="score the detection against a simulator truth table")
    _add_store(p)
    p.add_argument("--truth", required=True, help="truth.csv written by `lrscube simulate`")
    _add_mode(p)
    p.add_argument("--no-baselines", action="store_true", help="skip the static-mask and selfcal baselines")
    p.add_argument("--lookalikes", default=None,
                   help="must-not table (default: lookalikes.parquet/.csv beside the truth table)")
    p.add_argument("--min-snr", default="5",
                   help="stacked significance (sigma) that makes a defect detectable; 'threshold' = the "
                        "detection threshold + 2.33 sigma")
    p.set_defaults(func=cmd_evaluate)


def _report_parser(sub) -> None:
    p = sub.add_parser("report", help="write an HTML report with plots")
    _add_store(p)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--manifest", default=None, help="the *_manifest.json of export-crds (changes between MASK files)")
    p.add_argument("--spectra", default=None, help="spectra_check.json of spectra-check (spectral-impact section)")
    p.add_argument("--top", type=int, default=8, help="histories of this many most significant pixels")
    p.set_defaults(func=cmd_report)


def _spectra_check_parser(sub) -> None:
    p = sub.add_parser("spectra-check",
                       help="spurious features in simulated fixed-slit spectra: no mask, static mask, time-variable mask")
    _add_store(p)
    p.add_argument("--truth", required=True, help="truth.csv (or the simulation folder) of the simulated inputs")
    p.add_argument("--out", default=None, help="folder for spectra_check.json and figures (the report shows them)")
    p.add_argument("--epochs", type=int, default=8, help="science exposures at this many times over the mask's span")
    p.add_argument("--nsigma", type=float, default=3.0, help="feature threshold in extraction-noise sigma")
    p.add_argument("--noise", action="store_true",
                   help="also a noisy extraction and a defect-free control with the same noise (features are counted noiseless)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_spectra_check)


def _verify_parser(sub) -> None:
    p = sub.add_parser("verify", help="check every stored byte against its checksum; list the exposures affected")
    _add_store(p)
    p.set_defaults(func=cmd_verify)


def _drop_parser(sub) -> None:
    p = sub.add_parser("drop", help="remove named exposures from the exposure cube")
    _add_store(p)
    p.add_argument("names", nargs="+", metavar="NAME",
                   help="file name, source path/URL, exposure key, or slot:N (as `lrscube verify` lists them)")
    p.set_defaults(func=cmd_drop)


def _migrate_parser(sub) -> None:
    p = sub.add_parser("migrate", help="copy a store of format 1-3 into a new format-4 store (icechunk)")
    _add_store(p)
    p.add_argument("--out", required=True, help="the new store (must not exist)")
    p.set_defaults(func=cmd_migrate)


def _demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="simulate, ingest, detect, export and report on a small set")
    p.add_argument("--n", type=int, default=60, help="number of simulated exposures")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", default=None, help="keep everything here (default: a temporary directory)")
    p.add_argument("--full-frame", action="store_true", help="simulate full-frame and slitless exposures (slower)")
    _add_scheduler(p)
    p.set_defaults(func=cmd_demo)


def _summarize_intervals(iv) -> str:
    from .detection.detect import summarize_intervals

    return summarize_intervals(iv)


def main(argv=None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not a.verbose:  # distributed logs every worker start and stop at INFO
        logging.getLogger("distributed").setLevel(logging.WARNING)
    # SIGTERM (a batch system's cancel, `kill`) unwinds like Ctrl-C: locks are released and the
    # run's scratch removed on the way out; what was committed stays
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if main_thread else None
    try:
        return int(a.func(a) or 0)
    except KeyboardInterrupt:
        print(f"lrscube {a.command}: interrupted; the store keeps its last committed state", file=sys.stderr)
        return 130
    except _Terminated:
        print(f"lrscube {a.command}: terminated (SIGTERM); the store keeps its last committed state",
              file=sys.stderr)
        return 128 + signal.SIGTERM
    except Exception as e:
        if not isinstance(e, _expected_errors()):
            raise  # a bug: the traceback says where
        if a.verbose:
            traceback.print_exc()
        print(f"lrscube {a.command}: error: {describe_error(e)}", file=sys.stderr)
        return 2
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


class _Terminated(BaseException):
    """Raised in the main thread by SIGTERM (a BaseException, so no `except Exception` eats it)."""


def _terminated(signum, frame):
    raise _Terminated()


def _expected_errors() -> tuple[type[BaseException], ...]:
    """What a command reports in one line: bad input or arguments (ValueError), the system
    (OSError: permission denied, disk full, a missing path), an unusable or locked store (the
    modules that raise those are imported by the commands that use them)."""
    known: list[type[BaseException]] = [OSError, ValueError]
    if "lrscube.storage.store" in sys.modules:
        store = sys.modules["lrscube.storage.store"]
        known += [store.StoreError, store.LockedError]
    if "icechunk" in sys.modules:  # the exposure cube's storage engine (format 4)
        known.append(sys.modules["icechunk"].IcechunkError)
    return tuple(known)


def describe_error(e: BaseException) -> str:
    """One line: for an OS error the path and its cause (``STORE/ingest.lock: Permission
    denied``), otherwise the message."""
    if isinstance(e, OSError) and e.strerror:
        path = e.filename if e.filename is not None else ""
        return f"{path}: {e.strerror}" if path else e.strerror
    if isinstance(e, ValueError) and "checksum" in str(e):  # zarr's crc32c codec on a damaged chunk
        return f"corrupt data in the store ({e}); `lrscube verify --store STORE` lists what is damaged"
    if "icechunk" in sys.modules and isinstance(e, sys.modules["icechunk"].IcechunkError):
        from .storage.engine import describe, os_error

        system = os_error(e, "")
        if system is not None:  # a full disk, a permission
            return f"the exposure cube's icechunk repository: {system.strerror}; nothing was committed"
        return (f"the exposure cube's icechunk repository failed ({describe(e)}); nothing was committed; "
                "`lrscube verify --store STORE` lists what is damaged")
    return str(e) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
