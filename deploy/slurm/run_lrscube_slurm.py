#!/usr/bin/env python
"""Run lrscube ingest -> detect (-> export) on SLURM or PBS through dask-jobqueue.

Run it on a login node, in the environment where lrscube is installed: it starts the dask
scheduler in this process, submits worker jobs, runs the steps against them and cancels the
jobs at the end (also on Ctrl-C)::

    python deploy/slurm/run_lrscube_slurm.py s3://bucket/inputs/ --store s3://bucket/cube.zarr --jobs 10
    python deploy/slurm/run_lrscube_slurm.py /project/miri/rate/ --store /project/lrscube/cube.zarr \\
        --kind pbs --jobs 4 -o queue=normal -o account=jwst-miri
    python deploy/slurm/run_lrscube_slurm.py ... --dry-run      # print the job script; submit nothing

Worker sizes come from configs/deploy.yaml (deploy.slurm / deploy.pbs), site settings from
--jobqueue-config (default: jobqueue.yaml beside this script) or ~/.config/dask/jobqueue.yaml,
and -o KEY=VALUE overrides both. Workers must see the inputs and the store: a shared
filesystem, or S3 (they get LRSCUBE_S3_ENDPOINT / AWS_ENDPOINT_URL from the job script;
credentials from ~/.aws on the shared home or the nodes' role, never from the script).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import dask
import yaml

HERE = Path(__file__).resolve().parent


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", help="input files, directories or globs (local or s3://)")
    ap.add_argument("--store", required=True, help="lrscube store: a shared path or s3://bucket/cube.zarr")
    ap.add_argument("--kind", choices=["slurm", "pbs"], default="slurm")
    ap.add_argument("--jobs", type=int, default=None, help="batch jobs to submit (default: deploy.<kind>.jobs)")
    ap.add_argument("--jobqueue-config", default=str(HERE / "jobqueue.yaml"),
                    help="dask-jobqueue YAML with your site's settings ('' for none)")
    ap.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                    help="SLURMCluster/PBSCluster option, value parsed as YAML unless it holds ':' (repeatable)")
    ap.add_argument("--mode", default=None, help="mode profile (default: the store's, else lrs)")
    ap.add_argument("--export", default=None, metavar="DIR", help="also write CRDS MASK files here")
    ap.add_argument("--min-workers", type=int, default=1, help="wait for this many workers before starting")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds to wait for them (queue time)")
    ap.add_argument("--dry-run", action="store_true", help="print the spec and job script; submit nothing")
    return ap.parse_args(argv)


def _without_nulls(d):
    if isinstance(d, dict):
        return {k: _without_nulls(v) for k, v in d.items() if v is not None}
    return d


def load_jobqueue_config(path: str) -> None:
    """Merge a dask-jobqueue YAML into this process's dask config; what it sets wins over
    lrscube's defaults, and a null means "not set" (lrscube's default stays in force)."""
    if not path:
        return
    with open(path) as f:
        cfg = yaml.safe_load(f) or {}
    if not isinstance(cfg, dict) or not isinstance(cfg.get("jobqueue", {}), dict):
        raise SystemExit(f"{path}: expected a 'jobqueue:' mapping in dask configuration format")
    dask.config.update(dask.config.config, _without_nulls(cfg), priority="new")


def overrides(items: list[str]) -> dict:
    from lrscube.deploy.cluster_specs import parse_option_value

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"-o {item!r}: expected KEY=VALUE")
        out[key.strip()] = parse_option_value(value)  # 12:00:00 stays text, not YAML's 43200
    return out


def main(argv=None) -> int:
    a = parse_args(argv)
    import lrscube
    from lrscube.deploy.cluster_specs import make_cluster_spec

    load_jobqueue_config(a.jobqueue_config)
    options = overrides(a.option)
    if a.jobs is not None:
        options["jobs"] = a.jobs
    spec = make_cluster_spec(a.kind, **options)
    print(spec, file=sys.stderr)
    print(spec.job_script)
    if a.dry_run:
        return 0

    from distributed import Client

    cluster = spec.start()
    try:
        with Client(cluster) as client:
            print(f"dask dashboard: {client.dashboard_link}", file=sys.stderr)
            t0 = time.perf_counter()
            client.wait_for_workers(a.min_workers, timeout=a.timeout)
            print(f"{len(client.scheduler_info()['workers'])} workers after {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr)
            summary = lrscube.ingest(a.paths, a.store, mode=a.mode, scheduler=cluster.scheduler_address)
            print(summary)
            from lrscube.detection.detect import detect  # computes on this process's default client

            intervals = detect(a.store, mode=a.mode)
            print(f"detect: {len(intervals)} defect intervals in {a.store}")
            if a.export:
                from lrscube.masks.crds_export import export_crds

                print(export_crds(a.store, a.export))
    finally:
        cluster.close()  # cancels the jobs
    return 0


if __name__ == "__main__":
    sys.exit(main())
