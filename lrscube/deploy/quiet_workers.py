"""A worker plugin that keeps a failed task's traceback off the workers' log.

distributed logs every failed task on its worker ("Compute Failed", with the traceback) and
sends the same exception to the client. On a cluster lrscube starts for a command, the client
side already says it: the CLI reports an expected error (a corrupt chunk, a full disk) in one
line, and a bug with its full traceback (remote frames included); the worker's copy only
buried that line under a traceback. So would a heartbeat that finds the scheduler gone while
the command closes its cluster after such an error ("Failed to communicate with scheduler
during heartbeat", an OSError's traceback): the worker only retries at the next beat, and a
scheduler lost during a run reaches the client as its own error. ``--verbose`` (distributed
logging at INFO) keeps both.
"""

from __future__ import annotations

import logging

from distributed.diagnostics.plugin import WorkerPlugin


#: the starts of the worker log messages the client already reports
DROPPED = ("Compute Failed", "Failed to communicate with scheduler during heartbeat")


class _DropReported(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(DROPPED)


_FILTER = _DropReported()


class QuietTaskFailures(WorkerPlugin):
    name = "lrscube-quiet-task-failures"

    def setup(self, worker):
        logging.getLogger("distributed.worker").addFilter(_FILTER)  # once per process (addFilter dedups)

    # No teardown: a closing worker removes its plugins before it stops its heartbeat, and a beat
    # already under way then finds the scheduler gone; the filter stays for the process's life.
