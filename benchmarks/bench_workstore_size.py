"""Detect's work store against the cube: bytes per pixel and exposure, per plane, on a store's
exposures of one subarray.

    python benchmarks/bench_workstore_size.py --store /work/perf3-store.zarr [--subarray FULL] [--max 48]

The cube: the stored bytes of each exposure's shard of sci, err, dq (and intscat, shown apart),
as ingest wrote them (the store's own sizes). The work store: what ``detect`` writes for these
exposures (stage 0's response and unlit pixels, then ``detect._stage1_to_work`` batch by batch
into a temporary folder, each task reading its frames from the cube), its tiles' parts summed
from their headers. Works with older commits on ``PYTHONPATH`` (format 3 tiles have the same
header). Also prints the CPU time of encoding and decoding the objects' tiles per exposure.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

import numpy as np


def cube_bytes(store: str, rows) -> dict:
    """Stored bytes of each plane's shards of ``rows``, summed (the shard of an exposure is its frame)."""
    import zarr

    from lrscube.storage import cube

    zs = cube.zarr_store(cube.cube_url(store), read_only=True)
    g = zarr.open_group(zs, mode="r")
    out = {}
    for k in ("sci", "err", "dq", "intscat"):
        if k not in g:
            continue
        nd = g[k].ndim
        out[k] = sum(_size(zs, f"{k}/c/{int(i)}" + "/0" * (nd - 1)) for i in rows)
    return out


def _size(zs, key: str) -> int:
    """The stored bytes of ``key``; 0 for a chunk never written (read as its fill value)."""
    from zarr.core.sync import sync

    try:
        return sync(zs.getsize(key))
    except FileNotFoundError:
        return 0


def work_bytes(work: str) -> tuple[dict, int, float]:
    """Bytes per part over every tile of every object in ``work``, the number of tiles, and the
    CPU seconds of decoding them all."""
    import glob

    from lrscube.storage import workstore as W

    names = ["residual", "noise", "sky", "exact values", "trace bits", "intscat"]
    tot = dict.fromkeys(names + ["float32 (lossless tiles)", "headers and index"], 0)
    n, t_dec = 0, 0.0
    for f in sorted(glob.glob(f"{work}/0*")):
        data = open(f, "rb").read()
        _, _, _, ntiles = W._OBJECT.unpack_from(data)
        ix = np.frombuffer(data[W._OBJECT.size:W._OBJECT.size + ntiles * W._ENTRY.itemsize], W._ENTRY)
        tot["headers and index"] += W._OBJECT.size + ix.nbytes + ntiles * W._HEADER.size
        for e in ix:
            tile = data[int(e["start"]):int(e["end"])]
            _, _, _, codec, _, *lengths = W._HEADER.unpack_from(tile)
            for name, m in zip(names, lengths):
                tot["float32 (lossless tiles)" if codec == W.LOSSLESS and name == "residual" else name] += m
            t = time.process_time()
            W.decode(tile, with_intscat=True)
            t_dec += time.process_time() - t
            n += 1
    return tot, n, t_dec


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--subarray", default="FULL")
    ap.add_argument("--max", type=int, default=0, help="at most this many exposures (0: all)")
    a = ap.parse_args()

    from _stage1_setup import stage0, stage1_setup

    from lrscube.detection import detect as D
    from lrscube.storage import workstore

    s = stage1_setup(a.store, a.subarray, a.max)
    url, prof, p, rows, N, dof, spans, B, origin = s.url, s.prof, s.p, s.rows, s.N, s.dof, s.spans, s.B, s.origin
    ty, tx, fy, fx = s.ty, s.tx, s.fy, s.fx

    resp, unlit = stage0(s)

    work = tempfile.mkdtemp(prefix="lrscube-wsize-")
    try:
        workstore.create(work)
        for a0 in range(0, N, B):
            D._stage1_to_work(work, a0, None, None, None, p, prof, spans, url, rows[a0:a0 + B], resp, unlit, None,
                              None if dof is None else dof[a0:a0 + B], origin)
        wb, ntiles, t_dec = work_bytes(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cb = cube_bytes(a.store, rows)

    px = N * fy * fx
    print(f"{a.store}: {N} {a.subarray} exposures of {fy} x {fx}, batches of {B}, tiles of {ty} x {tx}, "
          f"work-store format {workstore._FORMAT}, work_precision_sigma {p.work_precision_sigma}")
    print("work store, bytes per pixel and exposure: " + ", ".join(f"{k} {v / px:.3f}" for k, v in wb.items() if v)
          + f"; total {sum(wb.values()) / px:.3f}")
    main3 = sum(v for k, v in cb.items() if k != "intscat")
    print("cube, bytes per pixel and exposure: " + ", ".join(f"{k} {v / px:.3f}" for k, v in cb.items())
          + f"; sci + err + dq {main3 / px:.3f}")
    print(f"work store / cube (sci + err + dq): {sum(wb.values()) / main3:.3f}; "
          f"decoding every tile {1e3 * t_dec / N:.1f} CPU-ms per exposure ({ntiles} tiles)")


if __name__ == "__main__":
    main()
