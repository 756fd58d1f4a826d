"""Normal pixels flagged as the noise's tails grow: the independent cube of the tests with Gaussian
and Student-t noise.

    python benchmarks/bench_noise_tails.py --seeds 11 12 13 14 15 --dof inf 8 5 4 3
    python benchmarks/bench_noise_tails.py --seeds 11 12 13 14 15 --dof inf --faint-hits 0.01 5
    python benchmarks/bench_noise_tails.py --null

``tests/detection/test_detect.py::independent_cube`` (made with assumptions unlike the
simulator's: 70 exposures of 200 x 40 pixels, 45 defects, cosmic rays, a source trace) with its
noise drawn from a Student t of ``dof`` degrees of freedom scaled to ERR (``inf``: Gaussian),
the same sky, defects and hits for each ``dof`` of a seed; ``detect_dataset`` with the lrs
profile's defaults; ``evaluate_arrays``. Prints, per noise law and seed, the normal pixels flagged
(of 7,955), what their rows say they are (the reason's first words), precision, recall and the
recall of new defects, then the totals per noise law. ``--faint-hits FRACTION MEAN``: hits
below the jump step's threshold on top of that noise, raising that fraction of the
pixel-exposures by an exponential amount of that mean (units of ERR) and lowering none.

``--null``: the tail ratio of the residuals on each side (:mod:`lrscube.detection.noise_law`) that Gaussian
noise gives after stage 1, on cubes of pure Gaussian noise (no defect, no hit) under a flat sky,
exposure times of 100-1500 s, sky levels from a gamma law, a structured sky, and all three:
``noise_law.GAUSSIAN_INPUT_TAIL``.
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
    ap.add_argument("--dof", nargs="+", default=["inf", "8", "5", "4", "3"])
    ap.add_argument("--faint-hits", type=float, nargs=2, default=(0.0, 5.0), metavar=("FRACTION", "MEAN"),
                    help="hits below the jump threshold: a fraction of the pixel-exposures raised by an exponential")
    ap.add_argument("--null", action="store_true", help="the tail ratio of Gaussian noise after stage 1")
    a = ap.parse_args()
    if a.null:
        return null_tails(a.seeds)
    from test_detect import independent_cube

    from lrscube.detection.detect import detect_dataset
    from lrscube.validation.evaluate import evaluate_arrays

    warnings.simplefilter("ignore", RuntimeWarning)
    totals = {}
    print(f"{'noise':>14} {'seed':>4} {'tail ratio':>10} {'t dof':>5} {'normal px':>9} {'precision':>9} {'recall':>7} {'new rec.':>8}  normal pixels' rows")
    for dof in a.dof:
        nu = float(dof)
        label = ("Gaussian" if np.isinf(nu) else f"t{dof}") + (
            f"+{100 * a.faint_hits[0]:g}%x{a.faint_hits[1]:g}" if a.faint_hits[0] > 0 else "")
        for seed in a.seeds:
            ds, truth = independent_cube(seed=seed, dof=nu, faint_hits=tuple(a.faint_hits))
            iv, meta = detect_dataset(ds, "lrs", tiles=(100, 40))
            res = evaluate_arrays(ds, iv, truth, "lrs", baselines=False)
            bad = set(zip(truth.y, truth.x))
            rows = iv[[(y, x) not in bad for y, x in zip(iv.y, iv.x)]]
            kinds = rows.reason.str.split(" ").str[:2].str.join(" ").value_counts().to_dict()
            n = res["normal_pixels"]["flagged_pixels"]
            t = totals.setdefault(label, [0, 0, []])
            t[0] += n
            t[1] += res["normal_pixels"]["pixels"]
            t[2].append(res["lrscube"]["precision"])
            law = meta["noise_law"]
            dof_min = law["student_t_dof_min"]
            print(f"{label:>14} {seed:>4} {law['tail_ratio_max']:>10.3f} {'-' if dof_min is None else f'{dof_min:.1f}':>5} {n:>9} {res['lrscube']['precision']:>9.4f} {res['lrscube']['recall']:>7.4f} "
                  f"{res['recall_new_defects']:>8.4f}  {kinds}", flush=True)
    print()
    for label, (n, pixels, prec) in totals.items():
        print(f"{label:>14}: {n} of {pixels} normal pixels flagged ({100 * n / pixels:.3f} %), "
              f"precision {min(prec):.4f}-{max(prec):.4f}")


def null_tails(seeds):
    import xarray as xr

    from lrscube.detection.detect import detect_dataset

    n, ny, nx = 70, 200, 40
    print(f"{'sky':>16} {'seed':>4} {'largest tail ratio: upper':>25} {'lower':>6} {'tiles heavier':>6}")
    for variant in ("flat", "exposure times", "levels", "structured", "all three"):
        for seed in seeds:
            rng = np.random.default_rng(seed)
            mjd = 60000 + np.sort(rng.uniform(0, 1000, n))
            varied = variant in ("exposure times", "all three")
            exptime = rng.uniform(100, 1500, n) if varied else np.full(n, 800.0)
            level = rng.gamma(8, 1 / 8, n) if variant in ("levels", "all three") else np.ones(n)
            yy, xx = np.arange(ny)[:, None], np.arange(nx)[None, :]
            shape = (3 + 0.02 * yy + 0.5 * np.sin(yy / 9.0) + 0.01 * xx if variant in ("structured", "all three")
                     else np.full((ny, nx), 3.0))
            sky = level[:, None, None] * shape[None]
            err = np.sqrt(sky / (4.0 * exptime[:, None, None]) + (0.04 * np.sqrt(1000 / exptime))[:, None, None] ** 2)
            sci = sky + rng.standard_normal(sky.shape) * err
            ds = xr.Dataset({"sci": (("time", "y", "x"), sci.astype("f4")), "err": (("time", "y", "x"), err.astype("f4")),
                             "dq": (("time", "y", "x"), np.zeros(sci.shape, "u4"))},
                            coords={"mjd": ("time", mjd), "expstart": ("time", mjd - exptime / 172800),
                                    "y": np.arange(ny) + 300, "x": np.arange(nx) + 300})
            _, meta = detect_dataset(ds, "lrs", tiles=(100, 40))
            law = meta["noise_law"]
            print(f"{variant:>16} {seed:>4} {law['upper']['tail_ratio_max']:>25.3f} {law['lower']['tail_ratio_max']:>6.3f} "
                  f"{law['tiles_heavier_than_gaussian']:>6}", flush=True)


if __name__ == "__main__":
    main()
