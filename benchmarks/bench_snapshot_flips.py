"""Every single-byte flip of a format-4 cube's last snapshot: named, or nothing read changes.

    python benchmarks/bench_snapshot_flips.py --store STORE [--step 1]

icechunk's snapshots carry no checksum of their own. For each byte position of the newest file
in ``STORE/exposures/snapshots`` (on a copy of the store), the byte is XORed with 0x5A, then
``lrscube.verify`` runs and ``lrscube.open_cube`` is loaded and compared with the cube before.
Each position counts as *named* (verify reports a problem, or reading raises lrscube's
``StoreError``), *unchanged* (what is read is identical) or *silent* (other values, no error),
and any other exception is listed with its type. Prints the counts and the silent positions
with the coordinates or planes that changed.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True, help="a format-4 lrscube store (copied; the original is only read)")
    ap.add_argument("--step", type=int, default=1, help="try every STEP-th byte")
    a = ap.parse_args()
    import lrscube
    from lrscube.storage import store as st
    from lrscube.storage.verify import verify

    work = Path(tempfile.mkdtemp()) / "s"
    shutil.copytree(a.store, work)
    ref = lrscube.open_cube(str(work)).load()
    snap = max((work / "exposures" / "snapshots").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    raw = snap.read_bytes()
    counts = {"named": 0, "unchanged": 0, "silent": 0, "other error": 0}
    t0 = time.perf_counter()
    for pos in range(0, len(raw), a.step):
        b = bytearray(raw)
        b[pos] ^= 0x5A
        snap.write_bytes(bytes(b))
        try:
            named = not verify(str(work)).ok
        except st.StoreError:
            named = True
        try:
            got = lrscube.open_cube(str(work)).load()
        except st.StoreError:
            counts["named"] += 1
            continue
        except BaseException as e:  # noqa: BLE001 - what a user would see instead of lrscube's error
            counts["other error"] += 1
            print(f"byte {pos}: {type(e).__name__}: {str(e)[:120]}")
            continue
        if got.identical(ref):
            counts["unchanged"] += 1
        elif named:
            counts["named"] += 1
        else:
            counts["silent"] += 1
            names = [k for k in (*ref.coords, *ref.data_vars) if k in got and not np.array_equal(
                ref[k].values, got[k].values, equal_nan=ref[k].dtype.kind == "f")]
            print(f"byte {pos}: silent, changed: {', '.join(names) or 'attributes or dtypes'}")
    snap.write_bytes(raw)
    shutil.rmtree(work.parent)
    tried = sum(counts.values())
    print(f"{a.store}: last snapshot {len(raw)} bytes, {tried} flips tried in {time.perf_counter() - t0:.0f} s: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
