#!/usr/bin/env python
"""Run lrscube on a dask-gateway cluster (a JupyterHub/daskhub deployment, say).

    python deploy/kubernetes/gateway_example.py s3://bucket/inputs/ --store s3://bucket/cube.zarr \\
        --address https://gateway.example.org --workers 10 -c image=registry.example.org/lrscube:0.1.0
    python deploy/kubernetes/gateway_example.py ... --dry-run       # print the spec; contact nothing

Inside a daskhub notebook the gateway address and authentication come from the hub's dask
configuration: leave --address out. ``-c NAME=VALUE`` sets a cluster option your gateway server
defines (``gateway.cluster_options()`` lists them; ``image``, ``worker_cores``, ``worker_memory``
are common). The worker image needs lrscube and dask-gateway at the server's version (build
deploy/docker/Dockerfile with ``--build-arg EXTRA_PIP=dask-gateway==X.Y.Z``).

Workers started by the gateway do not inherit this process's environment: the spec forwards
the S3 endpoint variables (LRSCUBE_S3_ENDPOINT, AWS_ENDPOINT_URL, region) to every worker,
present and future, with a worker plugin. Credentials are not forwarded: give the workers a
cloud role or set them through a cluster option your server offers (e.g. ``environment``).

In a notebook the same thing is four lines::

    from lrscube.deploy.cluster_specs import make_cluster_spec
    cluster = make_cluster_spec("gateway", n_workers=10).start()
    client = cluster.get_client()                  # lrscube uses this client from here on
    lrscube.ingest("s3://bucket/inputs/", "s3://bucket/cube.zarr")
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", help="input files or prefixes (s3:// -- gateway workers see no local disk)")
    ap.add_argument("--store", required=True, help="s3://bucket/cube.zarr")
    ap.add_argument("--address", default=None, help="gateway address (default: dask config gateway.address)")
    ap.add_argument("--workers", type=int, default=None, help="workers to request (default: deploy.gateway.n-workers)")
    ap.add_argument("-c", "--cluster-option", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--mode", default=None)
    ap.add_argument("--dry-run", action="store_true", help="print the spec; contact nothing")
    a = ap.parse_args(argv)

    import lrscube
    from lrscube.deploy.cluster_specs import make_cluster_spec, parse_option_value

    cluster_options = {}
    for item in a.cluster_option:
        name, sep, value = item.partition("=")
        if not sep:
            ap.error(f"-c {item!r}: expected NAME=VALUE")
        cluster_options[name] = parse_option_value(value)
    options = {"cluster_options": cluster_options}
    if a.address:
        options["address"] = a.address
    if a.workers is not None:
        options["n_workers"] = a.workers
    spec = make_cluster_spec("gateway", **options)
    print(spec.render())
    if a.dry_run:
        return 0

    cluster = spec.start()  # creates the gateway cluster, forwards the S3 settings, scales
    try:
        with cluster.get_client() as client:  # the default client: lrscube's steps use it
            print(f"dask dashboard: {client.dashboard_link}", file=sys.stderr)
            client.wait_for_workers(1, timeout=1800)
            print(lrscube.ingest(a.paths, a.store, mode=a.mode))
            from lrscube.detection.detect import detect

            print(f"detect: {len(detect(a.store, mode=a.mode))} defect intervals in {a.store}")
    finally:
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
