"""A real S3-compatible server on loopback for the tests: moto in server mode.

``s3`` (module-scoped fixture) starts ``moto.server.ThreadedMotoServer`` on 127.0.0.1 on a
port the OS picks, creates the bucket ``bucket`` with boto3 and sets, for the module's
duration, dummy credentials and the endpoint in ``AWS_ENDPOINT_URL`` and
``LRSCUBE_S3_ENDPOINT`` (which ``lrscube.storage.store.storage_options`` reads). Clients talk HTTP to
it like to any S3 endpoint: nothing is mocked inside the client libraries, so dask worker
processes reach it too, once they have the endpoint (see ``lrscube.deploy.cluster_specs.forward_env``).

Use it from a test module with ``from s3server import s3  # noqa: F401``.

moto checks a PUT's ``If-None-Match``/``If-Match`` condition and stores the object in two
steps with nothing between them, so on a loaded machine two concurrent conditional creates can
both succeed. S3 makes them atomic, and lrscube's writer lock relies on that; the fixture
therefore serialises moto's PUT handler (one lock around ``S3Response.put_object``) while
the server runs. Nothing on the client side is touched.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import pytest

BUCKET = "bucket"


@dataclass
class S3:
    endpoint: str
    bucket: str
    env: dict[str, str]

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"

    @property
    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(client_kwargs={"endpoint_url": self.endpoint}, skip_instance_cache=True)

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under ``prefix``, asked of the server with boto3 (not through fsspec)."""
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.endpoint)
        keys = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    pytest.importorskip("s3fs", reason="s3fs is needed for s3:// stores (pip install 'lrscube[s3]')")
    pytest.importorskip("boto3", reason="boto3 (with moto[server]) is needed to run the S3 test server")
    server_mod = pytest.importorskip("moto.server", reason="moto[server] is needed to run the S3 test server")

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    from moto.s3.responses import S3Response

    unguarded, guard = S3Response.put_object, threading.Lock()

    def atomic_put_object(self, *args, **kwargs):  # a conditional PUT is atomic on S3
        with guard:
            return unguarded(self, *args, **kwargs)

    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    nowhere = str(tmp_path_factory.mktemp("aws") / "absent")
    env = {
        "AWS_ACCESS_KEY_ID": "lrscube-test",
        "AWS_SECRET_ACCESS_KEY": "lrscube-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "LRSCUBE_S3_ENDPOINT": endpoint,
        # never read the developer's own AWS profile or credentials
        "AWS_CONFIG_FILE": nowhere,
        "AWS_SHARED_CREDENTIALS_FILE": nowhere,
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(S3Response, "put_object", atomic_put_object)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            mp.delenv(name, raising=False)
        for name, value in env.items():
            mp.setenv(name, value)
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        try:
            yield S3(endpoint=endpoint, bucket=BUCKET, env=env)
        finally:
            server.stop()
