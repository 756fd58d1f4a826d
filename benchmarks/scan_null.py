"""The tail of the level statistic under the null against the count behind the threshold.

The level threshold (`DetectionParams.thresholds`) takes `N log2 N` effectively independent runs
per pixel, two-sided, Gaussian (docs/detection.md "The thresholds"). This script draws Gaussian
series of N exposures, takes each one's largest |sum over a run| / sqrt(run length) over every
run of at least `--min-length` exposures (what `changepoints.best_run` searches), and prints, at
a few levels b, the fraction of series beyond b against the Bonferroni count's
`2 N ceil(log2 N) Q(b)`. The ratio shows whether the count over- or understates the scan's tail
where the Monte Carlo reaches; the threshold itself (6.5-7 sigma) lies far beyond it.

    python benchmarks/scan_null.py --n 150 --series 200000
"""
import argparse

import numpy as np
from scipy.stats import norm


def scan_max(z: np.ndarray, min_length: int) -> np.ndarray:
    """(series,) the largest |sum of z over a run| / sqrt(length) of each row of ``z``."""
    m, n = z.shape
    c = np.concatenate([np.zeros((m, 1), z.dtype), np.cumsum(z, axis=1)], axis=1)
    best = np.zeros(m, z.dtype)
    for L in range(min_length, n + 1):
        np.maximum(best, np.abs(c[:, L:] - c[:, :-L]).max(axis=1) / np.sqrt(L), out=best)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=150, help="exposures per series")
    ap.add_argument("--series", type=int, default=200_000, help="Gaussian series drawn")
    ap.add_argument("--min-length", type=int, default=3, help="shortest run (min_bad_exposures)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    chunk = 20_000
    mx = np.concatenate([scan_max(rng.standard_normal((min(chunk, a.series - i), a.n)).astype(np.float32), a.min_length)
                         for i in range(0, a.series, chunk)])
    runs = a.n * np.ceil(np.log2(a.n))
    print(f"N = {a.n}, {a.series} series, runs of >= {a.min_length}; Bonferroni count 2 N ceil(log2 N) = {2 * runs:.0f}")
    print(f"{'b':>5} {'Monte Carlo':>12} {'Bonferroni':>11} {'ratio':>6}")
    for b in (3.5, 4.0, 4.25, 4.5, 4.75, 5.0):
        mc, bf = float((mx > b).mean()), float(2 * runs * norm.sf(b))
        print(f"{b:5.2f} {mc:12.2e} {bf:11.2e} {mc / bf:6.3f}")


if __name__ == "__main__":
    main()
