"""Detection quality with more JUMP_DET flags than the simulator sets: the latent rules' cost.

    python benchmarks/bench_jump_flags.py --store STORE --truth TRUTH_DIR --rates 0 0.03 0.1

The pipeline's jump step flags a pixel-exposure where it finds a cosmic ray; in real MIRI
exposures of ~1000 s that is a few percent of the pixels, against ~0.2 % in lrscube's simulated
sets. `afterglow.explained_by_hit` treats a run of excess that holds a hit as the hit's charge
unless the exposures outside the hours after it carry evidence of their own, so spurious hits in
a real defect's run take some of its evidence. This script adds JUMP_DET (the flag alone, no
charge) to a random fraction of the store's pixel-exposures, runs `detect_dataset` in memory
(small stores only: the test module's subarray set), and scores the intervals against the truth
(`lrscube.validation.evaluate`, detectability at 5 sigma). Run it with two checkouts on
PYTHONPATH to compare their rules.
"""

from __future__ import annotations

import argparse


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True, help="an ingested store small enough to detect in memory")
    ap.add_argument("--truth", required=True, help="the simulation's truth folder")
    ap.add_argument("--mode", default="lrs")
    ap.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.03, 0.1],
                    help="fractions of pixel-exposures given JUMP_DET")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    import numpy as np

    import lrscube
    import lrscube.detection.detect as D
    import lrscube.validation.evaluate as E
    from lrscube.config import flags

    ds = lrscube.open_cube(a.store)
    ds = ds[[v for v in ("sci", "err", "dq", "intscat") if v in ds.data_vars]].load()
    fin = np.isfinite(ds.sci.values)
    jump = np.uint32(flags.JUMP_DET)
    print(f"{lrscube.__file__}: {ds.sizes['time']} exposures; JUMP_DET in the store: "
          f"{((ds.dq.values & jump) != 0)[fin].mean() * 100:.2f} % of pixel-exposures")
    truth = E.read_truth(a.truth)
    for rate in a.rates:
        rng = np.random.default_rng(a.seed)
        add = (rng.random(ds.dq.shape) < rate) & fin
        d = ds.assign(dq=ds.dq.copy(data=np.where(add, ds.dq.values | jump, ds.dq.values)))
        iv, _ = D.detect_dataset(d, a.mode, progress=False)
        res = E.evaluate_arrays(lrscube.open_cube(a.store), iv, truth, a.mode, baselines=False)
        print(f"JUMP_DET added to {rate * 100:5.1f} %: precision {res['lrscube']['precision']:.4f}, recall "
              f"{res['lrscube']['recall']:.4f}, new-defect recall {res['recall_new_defects']:.4f} "
              f"({res['new_defects_detectable']} detectable), {len(iv)} intervals", flush=True)


if __name__ == "__main__":
    main()
