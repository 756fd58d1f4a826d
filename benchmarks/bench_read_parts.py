"""Where a format-4 read of frames spends more than a format-3 one, in one process.

    python benchmarks/bench_read_parts.py --workdir /work/bench/engine --rounds 24

Takes the two stores ``benchmarks/bench_engine.py`` leaves in ``--workdir`` (``s3.zarr``, format 3,
and ``s4.zarr``, format 4: the same exposures) and measures, rounds alternating the order, the CPU
seconds of this process (no cluster: nothing else's scheduling in the figures):

1. ``cube.read_frames`` of every exposure in calls of 10 (the read floor's task), both formats;
2. the shards alone: sci, err and dq of 10 full frames fetched concurrently, through icechunk's
   zarr store (a read-only session) and through zarr's ``LocalStore`` on the format-3 cube;
3. a new read-only session's first read (the cube's group metadata), with icechunk's default
   configuration (manifest preload on) and with lrscube's (:func:`lrscube.storage.engine._config`).

Prints medians and ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True, help="a bench_engine.py workdir (s3.zarr and s4.zarr)")
    ap.add_argument("--rounds", type=int, default=24)
    a = ap.parse_args()
    import zarr
    from zarr.core.buffer import default_buffer_prototype

    from lrscube.storage import cube, engine
    from lrscube.storage.shards import sync

    s3, s4 = str(Path(a.workdir) / "s3.zarr"), str(Path(a.workdir) / "s4.zarr")
    u3, u4 = cube.cube_url(s3), cube.cube_url(s4)
    n = cube.n_stored(s3)
    assert n == cube.n_stored(s4) and cube.is_repository(s4) and not cube.is_repository(s3)
    batches = [list(range(i, min(n, i + 10))) for i in range(0, n, 10)]
    proto = default_buffer_prototype()
    ic = engine._icechunk()
    local = zarr.storage.LocalStore(u3, read_only=True)
    size = {i: len(sync(local.get(f"sci/c/{i}/0/0", proto)).to_bytes()) for i in range(n)}
    full = sorted(size, key=size.get)[-10:]
    keys = [f"{p}/c/{i}/0/0" for p in ("sci", "err", "dq") for i in full]
    mb = sum(len(sync(local.get(k, proto)).to_bytes()) for k in keys) / 1e6

    async def fetch(zs):
        return await asyncio.gather(*(zs.get(k, proto) for k in keys))

    default_repo = ic.Repository.open(engine.storage(u4))
    lrscube_repo = engine.open_repository(u4)
    session_store = lrscube_repo.readonly_session(engine.BRANCH).store

    def first_read(repo):
        return lambda: sync(repo.readonly_session(engine.BRANCH).store.get("zarr.json", proto))

    steps = {
        ("read_frames", 3): lambda: [cube.read_frames(u3, b) for b in batches],
        ("read_frames", 4): lambda: [cube.read_frames(u4, b) for b in batches],
        ("shards", 3): lambda: sync(fetch(local)),
        ("shards", 4): lambda: sync(fetch(session_store)),
        ("new session's first read", "icechunk default"): first_read(default_repo),
        ("new session's first read", "lrscube (no preload)"): first_read(lrscube_repo),
    }
    cpu = {k: [] for k in steps}
    for r in range(a.rounds):
        for k in (list(steps) if r % 2 == 0 else list(steps)[::-1]):
            c0 = time.process_time()
            steps[k]()
            cpu[k].append(time.process_time() - c0)
    med = {k: statistics.median(v) * 1e3 for k, v in cpu.items()}
    print(f"{n} exposures; shards: {len(keys)} of the 10 largest exposures, {mb:.1f} MB; {a.rounds} rounds; "
          f"load average {open('/proc/loadavg').read().split()[0]}")
    print("| what | CPU ms (median) | ratio |")
    print("| --- | --- | --- |")
    for what, base, other in (("read_frames of every exposure", ("read_frames", 3), ("read_frames", 4)),
                              ("the shards alone, fetched", ("shards", 3), ("shards", 4)),
                              ("a new session's first read", ("new session's first read", "lrscube (no preload)"),
                               ("new session's first read", "icechunk default"))):
        print(f"| {what}: {base[1]} | {med[base]:.1f} | |")
        print(f"| {what}: {other[1]} | {med[other]:.1f} | {med[other] / med[base]:.2f} |")


if __name__ == "__main__":
    main()
