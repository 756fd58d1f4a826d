"""What the chunks' crc32c (store format 3) costs the shard encoder of ingest's writes.

    python benchmarks/bench_checksum.py

Encodes 10 synthetic full-frame exposures (``bench_detect.make_exposure``: sci, err, dq) with
lrscube's shard encoder (``cube.shard_layout(a).encode``, what ``cube.write_exposure`` runs on
the workers), with and without the crc32c after each chunk, alternating over 7 rounds in one
process. Times are this thread's CPU time (``time.thread_time``), so other jobs on the machine
do not enter them.
"""
import sys, time, dataclasses, statistics
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import numpy as np
from bench_detect import make_exposure
from lrscube.storage import cube
from lrscube.config import profiles
import tempfile
d = tempfile.mkdtemp()
cube.create(d + "/s", profiles.load("lrs"))
a = cube.data_arrays(d + "/s")
lay = {n: cube.shard_layout(x) for n, x in zip(cube.DATA_VARS, a)}
exps = [make_exposure(i)[0] for i in range(10)]
res = {True: [], False: []}
for r in range(7):
    for crc in (r % 2 == 0, r % 2 == 1):
        t = time.thread_time()
        for e in exps:
            for n in cube.DATA_VARS:
                dataclasses.replace(lay[n], crc=crc).encode(getattr(e, n), 0, 0)
        res[crc].append((time.thread_time() - t) / len(exps))
t = time.thread_time()
blobs = [dataclasses.replace(lay[n], crc=True).encode(getattr(e, n), 0, 0) for e in exps for n in cube.DATA_VARS]
import google_crc32c
t = time.thread_time()
for b in blobs: google_crc32c.value(b)
crc_only = (time.thread_time() - t) / len(exps)
print(f"encode per full-frame exposure (sci+err+dq), CPU time, median of 7 alternating rounds: without crc32c {1e3*statistics.median(res[False]):.2f} ms, with {1e3*statistics.median(res[True]):.2f} ms; crc32c alone over the 3 shards {1e3*crc_only:.3f} ms; MB per exposure {sum(map(len, blobs))/len(exps)/1e6:.2f}")
