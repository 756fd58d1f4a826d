"""Which pixel-exposures two intervals tables flag differently, checked against a simulator truth.

    lrscube intervals --store S --out before.parquet     # (detect with one checkout, then the other)
    python benchmarks/bench_intervals_diff.py --store S --before before.parquet --after after.parquet \
        --truth SIM/truth/truth.csv [--detail]

Counts, over the exposures that see each pixel (rows carried from the input mask left out), the
pixel-exposures flagged by one table and not the other and how many of them the truth has bad,
and the pixel-exposures under two rows of one pixel in each table. ``--detail``: per pixel that
gains, the exposures bad in the truth and in each table and the rows' reasons.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

import lrscube
from lrscube.intervals import active


def flagged(iv: pd.DataFrame, mjd: np.ndarray) -> dict:
    """(y, x) -> bool (time,): the exposures the pixel's rows cover."""
    return {k: active(g.start_mjd.to_numpy(float), g.end_mjd.to_numpy(float), mjd).any(axis=0)
            for k, g in iv.groupby(["y", "x"])}


def overlapping(iv: pd.DataFrame, mjd: np.ndarray) -> int:
    """Pixel-exposures under two or more rows of one pixel."""
    n = 0
    for _, g in iv.groupby(["y", "x"]):
        if len(g) > 1:
            n += int((active(g.start_mjd.to_numpy(float), g.end_mjd.to_numpy(float), mjd).sum(axis=0) > 1).sum())
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--truth", required=True)
    ap.add_argument("--detail", action="store_true")
    a = ap.parse_args()
    ds = lrscube.open_cube(a.store)
    o = np.argsort(ds["mjd"].values)
    mjd = ds["mjd"].values.astype(float)[o]
    y0, x0, ny, nx = (ds[c].values[o] for c in ("y0", "x0", "ny", "nx"))
    b, f = pd.read_parquet(a.before), pd.read_parquet(a.after)
    b, f = b[~b.carried], f[~f.carried]
    t = pd.read_csv(a.truth)
    t = t[~t["static"].astype(bool)]
    fb, fa, ft = flagged(b, mjd), flagged(f, mjd), flagged(t, mjd)
    none = np.zeros(mjd.size, bool)
    gain = lose = gain_true = lose_true = 0
    gained = []
    for k in sorted(set(fb) | set(fa)):
        y, x = k
        sees = (y0 <= y) & (y < y0 + ny) & (x0 <= x) & (x < x0 + nx)
        vb, va, vt = fb.get(k, none) & sees, fa.get(k, none) & sees, ft.get(k, none) & sees
        g, lo = va & ~vb, vb & ~va
        gain, lose = gain + int(g.sum()), lose + int(lo.sum())
        gain_true, lose_true = gain_true + int((g & vt).sum()), lose_true + int((lo & vt).sum())
        if g.any():
            gained.append((k, vt, vb, va))
    print(f"rows (not carried): before {len(b)}, after {len(f)}")
    print(f"pixel-exposures flagged after, not before: {gain} on {len(gained)} pixels, {gain_true} of them bad "
          "in the truth")
    print(f"pixel-exposures flagged before, not after: {lose} ({lose_true} bad in the truth)")
    print(f"pixel-exposures under two rows of one pixel: before {overlapping(b, mjd)}, after {overlapping(f, mjd)}")
    if a.detail:
        for (y, x), vt, vb, va in gained:
            print(f"({y}, {x}) bad exposures: truth {np.flatnonzero(vt).tolist()}")
            print(f"  before {np.flatnonzero(vb).tolist()}\n  after  {np.flatnonzero(va).tolist()}")
            for r in f[(f.y == y) & (f.x == x)].itertuples():
                print(f"  {r.flag}: {r.reason}")


if __name__ == "__main__":
    main()
