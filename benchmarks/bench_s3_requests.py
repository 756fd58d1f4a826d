"""S3 requests of an ingest into an object store, counted on a moto server on loopback.

    python benchmarks/bench_s3_requests.py --workdir /work/bench/s3req [--latency-ms 30] [--code DIR]

Simulated rate files (SLITLESSPRISM and FULL) are ingested from local disk into
``s3://bucket/store`` on moto in server mode (127.0.0.1, a port the OS picks), by a LocalCluster
of 2 worker processes that reach it through ``lrscube.deploy.cluster_specs.forward_env``. Every HTTP
request the server answers is counted by method (werkzeug's request log, in this process), per
ingest: the counts say what a batch and an exposure cost in requests, not in time (moto on
loopback tells nothing of S3's latency). ``--latency-ms L`` makes the server wait L ms before
answering each request (requests in flight together wait together, as on S3), and the ingest
times then show what the serial requests cost. ``--code DIR`` runs another lrscube (an export of an
older commit) by putting DIR first on sys.path, for a before/after comparison.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import re
import sys
import tempfile
import time
from pathlib import Path


class _Count(logging.Handler):
    """werkzeug logs one INFO line per request: '127.0.0.1 - - [date] "PUT /bucket/key HTTP/1.1" 200 -'."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.by_method: collections.Counter = collections.Counter()

    def emit(self, record):
        msg = re.sub(r"\x1b\[[0-9;]*m", "", record.getMessage())  # werkzeug colours some lines
        if '"' in msg:
            self.by_method[msg.split('"')[1].split(" ")[0]] += 1


def _server(latency_s: float):
    """moto's ThreadedMotoServer, answering each request ``latency_s`` late (one thread per request)."""
    from moto.moto_server import threaded_moto_server as tms

    class Slow(tms.ThreadedMotoServer):
        def _server_entry(self) -> None:
            inner = tms.DomainDispatcherApplication(tms.create_backend_app)

            def app(environ, start_response):
                time.sleep(latency_s)
                return inner(environ, start_response)

            self._server = tms.make_server(self._ip_address, self._port, app, True,
                                           request_handler=tms.MotoRequestHandler)
            self._server_ready_event.set()
            self._server.serve_forever()

    return Slow(ip_address="127.0.0.1", port=0, verbose=False)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--latency-ms", type=float, default=0.0, help="delay of every answer of the server")
    ap.add_argument("--code", default=None, help="a directory holding another lrscube package, used instead")
    a = ap.parse_args(argv)
    if a.code:
        sys.path.insert(0, a.code)

    import boto3
    from distributed import Client, LocalCluster

    import lrscube
    from lrscube.deploy.cluster import load_dask_defaults
    from lrscube.deploy.cluster_specs import forward_env

    print(f"lrscube from {Path(lrscube.__file__).parent}")
    work = Path(a.workdir or tempfile.mkdtemp(prefix="lrscube-s3req-"))
    inputs = {"SLITLESSPRISM": work / "slitless", "FULL": work / "full"}
    for kind, d in inputs.items():
        if not d.exists():
            lrscube.simulate(d, n=24 if kind == "SLITLESSPRISM" else 8, seed=5,
                             subarray_mix=1.0 if kind == "SLITLESSPRISM" else 0.0)

    count = _Count()
    wlog = logging.getLogger("werkzeug")
    wlog.setLevel(logging.INFO)
    wlog.addHandler(count)
    wlog.propagate = False
    server = _server(a.latency_ms / 1e3)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=endpoint, LRSCUBE_S3_ENDPOINT=endpoint)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bucket")
    load_dask_defaults()
    # (inputs, files, batch size, store): the last run appends one more file to the first store
    runs = [("SLITLESSPRISM", 8, 32, 0), ("SLITLESSPRISM", 24, 32, 1), ("SLITLESSPRISM", 24, 8, 2),
            ("FULL", 8, 32, 3), ("SLITLESSPRISM", 1, 32, 0)]
    try:
        with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, \
                Client(cluster) as client:
            forward_env(client)
            print(f"server latency {a.latency_ms:g} ms per request")
            print(f"{'inputs':28s} {'requests':>8s} {'ingest':>8s}  by method")
            for kind, n, batch, i in runs:
                files = sorted(str(p) for p in inputs[kind].glob("*_rate.fits"))
                files = files[:n] if i else files[8:8 + n] if n == 1 else files[:n]
                count.by_method.clear()
                t = time.perf_counter()
                s = lrscube.ingest(files, f"s3://bucket/store{i}", batch_size=batch, progress=False)
                t = time.perf_counter() - t
                assert len(s.ingested) == n, s
                label = f"{n} {kind}" + ("" if batch == 32 else f", batch size {batch}")
                label += ", into the first store" if n == 1 else ""
                methods = ", ".join(f"{m} {c}" for m, c in sorted(count.by_method.items()))
                print(f"{label:28s} {sum(count.by_method.values()):8d} {t:7.2f}s  {methods}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
