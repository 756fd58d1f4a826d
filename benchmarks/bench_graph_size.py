"""The size of detect's task graphs: ``lrscube.detect`` on a store, on a LocalCluster of 2
workers x 1 thread (lrscube's dask defaults), printing for each batch of tasks it submits
(stage 0's response and illumination tasks, stage 1, stage 2a, stage 2), in order: the batch's
graph pickled whole (what the client sends the scheduler; an object several tasks share is
written once) and the largest and summed sizes of its tasks pickled one by one (what each
task's message to a worker carries).

    python benchmarks/bench_graph_size.py --store STORE [--intervals OUT.csv]

A task that carries arrays over the exposures grows with N; the same arrays in every tile's
task are sent tiles x N times over, i.e. as N^2 (the tile shrinks as N grows).
``--intervals``: also write the run's intervals to a CSV (to compare two commits' results).
Runs ``detect(store, full=True)``: it writes the store's intervals and mask, so give it a copy.
"""

from __future__ import annotations

import argparse
import pickle
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--intervals", default=None, help="write the intervals here (CSV)")
    a = ap.parse_args()
    from distributed import Client, LocalCluster

    import lrscube
    import lrscube.detection.detect as D
    from lrscube.deploy.cluster import load_dask_defaults

    load_dask_defaults()
    sizes = []
    submit = D._iter_compute

    def measured(tasks, progress):
        graph, each = {}, []
        for t in tasks:
            g = dict(t.__dask_graph__())
            graph.update(g)
            each.append(len(pickle.dumps(g)))
        sizes.append((len(tasks), len(pickle.dumps(graph)), max(each, default=0), sum(each)))
        return submit(tasks, progress)

    D._iter_compute = measured
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      memory_limit="4GB") as cluster, Client(cluster):
        t = time.perf_counter()
        iv = lrscube.detect(a.store, progress=False, full=True)
        print(f"{lrscube.__file__}: detect {time.perf_counter() - t:.1f} s, {len(iv)} intervals")
    for n, whole, big, total in sizes:
        print(f"  {n} tasks: graph {whole / 1e6:.3f} MB pickled whole; tasks one by one: largest "
              f"{big / 1e3:.1f} kB, all {total / 1e6:.3f} MB")
    if a.intervals:
        lrscube.open_intervals(a.store).to_csv(a.intervals, index=False)


if __name__ == "__main__":
    main()
