"""The workers of a cluster lrscube starts for a command keep off the user's terminal what the
client already reports (lrscube.deploy.quiet_workers), and nothing else."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_a_command_s_workers_log_what_the_client_does_not_report(tmp_path):
    # a worker process of a real LocalCluster logs a failed task, a heartbeat that found the
    # scheduler gone (as when a command closes its cluster after an error) and a warning of
    # its own; the command's stderr (which the worker processes share) keeps only the warning
    code = textwrap.dedent("""
        import logging
        from lrscube.deploy.cluster import get_client

        def log_on_worker():
            log = logging.getLogger("distributed.worker")
            try:
                raise OSError("Stream is closed")
            except OSError:
                log.exception("Failed to communicate with scheduler during heartbeat.")
                log.error("Compute Failed\\nKey: x\\nException: %r", OSError("No space left on device"))
            log.warning("a worker's own warning")

        with get_client(quiet=True, n_workers=1) as client:
            client.run(log_on_worker)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "a worker's own warning" in res.stderr
    assert "heartbeat" not in res.stderr and "Compute Failed" not in res.stderr
    assert "Traceback" not in res.stderr, res.stderr


def test_a_closing_worker_s_last_heartbeat_stays_off_the_terminal():
    # a worker closing removes its plugins before it stops its heartbeat (distributed's
    # Worker.close): a beat under way then logs the scheduler gone, after the plugin's teardown
    import logging

    from lrscube.deploy.quiet_workers import QuietTaskFailures

    log = logging.getLogger("distributed.worker")
    plugin = QuietTaskFailures()
    plugin.setup(worker=None)
    try:
        plugin.teardown(worker=None)
        rec = log.makeRecord(log.name, logging.ERROR, __file__, 0,
                             "Failed to communicate with scheduler during heartbeat.", (), None)
        assert not log.filter(rec)
        own = log.makeRecord(log.name, logging.WARNING, __file__, 0, "a worker's own warning", (), None)
        assert log.filter(own)
    finally:
        for f in list(log.filters):
            if type(f).__name__ == "_DropReported":
                log.removeFilter(f)
