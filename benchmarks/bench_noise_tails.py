"""Normal pixels flagged as the noise's tails grow: the independent cube of the tests with Gaussian
and Student-t noise.

    python benchmarks/bench_noise_tails.py --seeds 11 12 13 14 15 --dof inf 5 4 3

``tests/detection/test_detect.py::independent_cube`` (made with assumptions unlike the
simulator's: 70 exposures of 200 x 40 pixels, 45 defects, cosmic rays, a source trace) with its
noise drawn from a Student t of ``dof`` degrees of freedom scaled to ERR (``inf``: Gaussian),
the same sky, defects and hits for each ``dof`` of a seed; ``detect_dataset`` with the lrs
profile's defaults; ``evaluate_arrays``. Prints, per noise law and seed, the normal pixels flagged
(of 7,955), what their rows say they are (the reason's first words), precision, recall and the
recall of new defects, then the totals per noise law.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "detection"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13, 14, 15])
    ap.add_argument("--dof", nargs="+", default=["inf", "5", "4", "3"])
    a = ap.parse_args()
    from test_detect import independent_cube

    from lrscube.detection.detect import detect_dataset
    from lrscube.validation.evaluate import evaluate_arrays

    warnings.simplefilter("ignore", RuntimeWarning)
    totals = {}
    print(f"{'noise':>8} {'seed':>4} {'normal px':>9} {'precision':>9} {'recall':>7} {'new rec.':>8}  normal pixels' rows")
    for dof in a.dof:
        nu = float(dof)
        label = "Gaussian" if np.isinf(nu) else f"t{dof}"
        for seed in a.seeds:
            ds, truth = independent_cube(seed=seed, dof=nu)
            iv, _ = detect_dataset(ds, "lrs", tiles=(100, 40))
            res = evaluate_arrays(ds, iv, truth, "lrs", baselines=False)
            bad = set(zip(truth.y, truth.x))
            rows = iv[[(y, x) not in bad for y, x in zip(iv.y, iv.x)]]
            kinds = rows.reason.str.split(" ").str[:2].str.join(" ").value_counts().to_dict()
            n = res["normal_pixels"]["flagged_pixels"]
            t = totals.setdefault(label, [0, 0, []])
            t[0] += n
            t[1] += res["normal_pixels"]["pixels"]
            t[2].append(res["lrscube"]["precision"])
            print(f"{label:>8} {seed:>4} {n:>9} {res['lrscube']['precision']:>9.4f} {res['lrscube']['recall']:>7.4f} "
                  f"{res['recall_new_defects']:>8.4f}  {kinds}", flush=True)
    print()
    for label, (n, pixels, prec) in totals.items():
        print(f"{label:>8}: {n} of {pixels} normal pixels flagged ({100 * n / pixels:.3f} %), "
              f"precision {min(prec):.4f}-{max(prec):.4f}")


if __name__ == "__main__":
    main()
