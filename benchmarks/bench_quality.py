"""Full-size quality run of issue 3: >= 150 mixed exposures over ~2.5 years, default settings.

    /work/venv/bin/python benchmarks/bench_quality.py --out /work/scratch_det/full150 --n 150 --seed 3

simulate (default scenario, full frame and SLITLESSPRISM mixed, 900 days) -> ingest -> detect
-> evaluate against the truth, printing the evaluate figures and the two baselines (static
mask, badpix_selfcal-like). Existing simulated files / store in --out are reused.
"""

from __future__ import annotations

import argparse
import importlib
import os
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--seed", type=int, default=3)
    a = ap.parse_args()
    from lrscube.cluster import get_client
    from lrscube.detect import detect
    from lrscube.ingest import ingest

    sim = importlib.import_module("lrscube.simulate")
    ev = importlib.import_module("lrscube.evaluate")
    rate, store = os.path.join(a.out, "rate"), os.path.join(a.out, "store")
    truth = os.path.join(rate, "truth", "truth.csv")
    if not os.path.exists(truth):
        t = time.perf_counter()
        sim.simulate(rate, n=a.n, seed=a.seed, full_frame=True, overwrite=True)
        print(f"simulate: {time.perf_counter() - t:.0f} s", flush=True)
    with get_client(quiet=True) as client:
        if not os.path.exists(os.path.join(store, "exposures")):
            print(ingest([rate], store, progress=False), flush=True)
        t = time.perf_counter()
        detect(store, progress=False)
        print(f"detect: {time.perf_counter() - t:.0f} s", flush=True)
    res = ev.evaluate(store, truth)
    import pandas as pd

    tr = pd.read_csv(truth)
    print(f"truth: {len(tr)} rows, {int((~tr.static).sum())} new defects")
    print(ev.format_report(res))


if __name__ == "__main__":
    main()
