"""The mask cube's DQ graph: its size against the epochs' values it renders, and the time to
render one epoch.

    python benchmarks/bench_mask_graph.py --store STORE [--intervals CSV] [--profile lrs]

Plans the epochs of ``write_mask_cube`` from the store's exposures and the intervals (the
store's own, or a CSV written by ``lrscube intervals``), builds the (epoch, y, x) DQ array, and
prints: epochs, changing pixels, the (epochs x pixels) values' bytes, the graph pickled whole
(what the client sends the scheduler; dask warns above 10 MB) and seconds per epoch rendered
(every epoch's frame, synchronous scheduler). Reads the store; writes nothing.
"""

from __future__ import annotations

import argparse
import pickle
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--intervals", default=None, help="intervals CSV (default: the store's)")
    ap.add_argument("--profile", default="lrs")
    a = ap.parse_args()
    import pandas as pd

    import lrscube
    from lrscube.config import profiles
    from lrscube.masks import maskcube as mc
    from lrscube.storage.cube import exposure_table

    iv = pd.read_csv(a.intervals) if a.intervals else lrscube.open_intervals(a.store)
    prof = profiles.load(a.profile)
    plan = mc.plan_epochs(iv, exposure_table(a.store), prof)
    t = time.perf_counter()
    dq = mc._dq_frames(plan, prof.frame_shape)
    graph = len(pickle.dumps(dict(dq.__dask_graph__())))
    built = time.perf_counter() - t
    t = time.perf_counter()
    for e in range(plan.n_epochs):
        dq[e].compute(scheduler="sync")
    per = (time.perf_counter() - t) / max(plan.n_epochs, 1)
    print(f"{lrscube.__file__}: {plan.n_epochs} epochs x {len(plan.ys)} changing pixels, values "
          f"{plan.values.nbytes / 1e6:.2f} MB; graph {graph / 1e6:.3f} MB pickled whole (built in "
          f"{built:.2f} s); {per * 1e3:.1f} ms per epoch rendered")


if __name__ == "__main__":
    main()
