"""Full-size quality run: >= 150 mixed FULL/SLITLESSPRISM exposures over ~2.5 years, default settings.

    python benchmarks/bench_quality.py --out /work/scratch_sim/full150 --n 150 --seed 3
    python benchmarks/bench_quality.py --out /work/scratch_sim/ideal150 --scenario ideal

simulate (the default scenario: a real-looking detector, every behaviour of the zoo and the
look-alikes; FULL and SLITLESSPRISM mixed over 900 days) -> ingest -> detect (default
settings) -> evaluate against the truth, printing the evaluate figures, the two baselines
(static mask, badpix_selfcal-like), the per-behaviour table, the normal pixels flagged and the
flag rate on each look-alike. Existing simulated files / store in --out are reused (delete the
folder to start over); the full evaluation is written to OUT/evaluation.json.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--scenario", default=None, help="scenario name or YAML (default: configs/scenario-default.yaml)")
    ap.add_argument("--min-snr", default="5", help="detectability (sigma), or 'threshold'")
    ap.add_argument("--skip-detect", action="store_true", help="evaluate the intervals already in the store")
    a = ap.parse_args()
    from lrscube.deploy.cluster import get_client
    from lrscube.detection.detect import detect
    from lrscube.intake.ingest import ingest

    sim = importlib.import_module("lrscube.validation.simulate")
    ev = importlib.import_module("lrscube.validation.evaluate")
    rate, store = os.path.join(a.out, "rate"), os.path.join(a.out, "store")
    truth = os.path.join(rate, "truth", "truth.csv")
    if not os.path.exists(truth):
        t = time.perf_counter()
        sim.simulate(rate, n=a.n, seed=a.seed, scenario=a.scenario, full_frame=True, overwrite=True)
        print(f"simulate: {time.perf_counter() - t:.0f} s", flush=True)
    if not a.skip_detect:
        with get_client(quiet=True):
            if not os.path.exists(os.path.join(store, "exposures")):
                t = time.perf_counter()
                print(ingest([rate], store, progress=False), flush=True)
                print(f"ingest: {time.perf_counter() - t:.0f} s", flush=True)
            t = time.perf_counter()
            detect(store, progress=False)
            print(f"detect: {time.perf_counter() - t:.0f} s", flush=True)
    t = time.perf_counter()
    res = ev.evaluate(store, truth, min_snr=None if a.min_snr == "threshold" else float(a.min_snr))
    print(f"evaluate: {time.perf_counter() - t:.0f} s", flush=True)
    tr = ev.read_truth(truth)
    new = tr[~tr.static.astype(bool)]
    print(f"truth: {len(tr)} rows, {len(new)} new defects in {new.behaviour.nunique()} behaviours")
    print(ev.format_report(res))
    with open(os.path.join(a.out, "evaluation.json"), "w") as f:
        json.dump(res, f, indent=1, default=str)


if __name__ == "__main__":
    main()
