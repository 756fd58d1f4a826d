"""Detection quality per instrument mode: simulate -> ingest -> detect -> evaluate, for each mode profile.

Every mode uses the same scenario (rates, amplitudes, noise, behaviours, look-alikes:
configs/scenario-default.yaml, a real-looking detector with a few-percent pixel response, and
fringes for the MRS) and the detection parameters of its profile (all copied from
configs/lrs.yaml); only the layout of the data (the profile's ``simulation:`` block) differs.
Prints each mode's evaluation, then one table per mode (precision, recall, new-defect recall,
normal pixels flagged, the worst look-alike flag rate) and one of new-defect recall per
behaviour and mode; writes the full evaluation of each to ``OUT/<mode>/evaluation.json``.

    python benchmarks/bench_modes.py --out /tmp/bench-modes --n 50 --seed 1
    python benchmarks/bench_modes.py --modes mrs-short imager --n 40 --scenario ideal
    python benchmarks/bench_modes.py --out /tmp/bench-modes --n 50 --seed 1 --redetect   # this code, the same cubes
    python benchmarks/bench_modes.py --modes nirspec-nrs1 nirspec-nrs2 --n 60 --subarray-only --drop-products

``--subarray-only``: every exposure in the profile's first non-FULL subarray (NIRSpec: SUBS200A1,
2048 x 64; a 2048 x 2048 rate file is 84 MB). ``--drop-products``: delete the simulated FITS
files once ingested (the truth tables stay), for small disks.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import lrscube
from lrscube.config import profiles
from lrscube.validation.evaluate import read_truth

MODES = ["lrs", "mrs-short", "mrs-long", "imager"]


def _num(res: dict, *keys, default=float("nan")):
    d = res
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def run_mode(mode: str, out: Path, n: int, seed: int, scheduler: str | None, scenario: str | None = None,
             evaluate_only: bool = False, subarray_only: bool = False, drop_products: bool = False,
             redetect: bool = False) -> dict:
    work = out / mode
    truth_path = work / "sim" / "truth" / "truth.csv"
    t0 = time.perf_counter()
    if evaluate_only and (work / "cube.zarr").exists():
        t1 = t2 = t3 = t0
        summary = None
    elif redetect and (work / "cube.zarr").exists():
        t1 = t2 = t0
        summary = None
        lrscube.detect(str(work / "cube.zarr"))
        t3 = time.perf_counter()
    else:
        if work.exists():
            shutil.rmtree(work)
        sim = lrscube.simulate(work / "sim", n=n, seed=seed, mode=mode, scenario=scenario,
                               full_frame=not subarray_only)
        t1 = time.perf_counter()
        summary = lrscube.ingest(sim.files, str(work / "cube.zarr"), mode=mode, scheduler=scheduler, progress=False)
        t2 = time.perf_counter()
        if drop_products:
            for f in sim.files:
                f.unlink()
        lrscube.detect(str(work / "cube.zarr"))
        t3 = time.perf_counter()
    res = lrscube.evaluate(str(work / "cube.zarr"), truth_path)
    t4 = time.perf_counter()
    (work / "evaluation.json").write_text(json.dumps(res, indent=1, default=str))
    intervals = lrscube.open_intervals(str(work / "cube.zarr"))
    truth = read_truth(truth_path)
    new = truth[~truth.static.astype(bool)]
    return dict(mode=mode, n=n, ingested=len(summary.ingested) if summary else None,
                rejected=len(summary.rejected) if summary else None,
                truth_new=len(new), intervals=int((~intervals.get("carried", False)).sum()) if len(intervals) else 0,
                res=res, seconds=dict(simulate=t1 - t0, ingest=t2 - t1, detect=t3 - t2, evaluate=t4 - t3))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/lrscube-bench-modes")
    ap.add_argument("--n", type=int, default=50, help="exposures per mode")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--modes", nargs="*", default=MODES, choices=profiles.available())
    ap.add_argument("--scheduler", default=None)
    ap.add_argument("--scenario", default=None, help="scenario name or YAML (default: the realistic default)")
    ap.add_argument("--evaluate-only", action="store_true",
                    help="evaluate the cubes already in OUT (detect times are then not measured)")
    ap.add_argument("--redetect", action="store_true",
                    help="detect again on the cubes already in OUT (the same data, this code: a before/after)")
    ap.add_argument("--subarray-only", action="store_true",
                    help="every exposure in the profile's first non-FULL subarray")
    ap.add_argument("--drop-products", action="store_true", help="delete the simulated files once ingested")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for mode in a.modes:
        r = run_mode(mode, out, a.n, a.seed, a.scheduler, a.scenario, a.evaluate_only, a.subarray_only,
                     a.drop_products, a.redetect)
        rows.append(r)
        res = r["res"]
        print(f"== {mode}: precision={_num(res, 'lrscube', 'precision'):.3f} recall={_num(res, 'lrscube', 'recall'):.3f} "
              f"new-defect recall={_num(res, 'recall_new_defects'):.3f} "
              f"intervals={r['intervals']} truth new defects={r['truth_new']} "
              f"time simulate/ingest/detect={r['seconds']['simulate']:.0f}/{r['seconds']['ingest']:.0f}/"
              f"{r['seconds']['detect']:.0f} s", flush=True)
        print(_format(res), flush=True)
    (out / "summary.json").write_text(json.dumps([{k: v for k, v in r.items()} for r in rows], indent=1, default=str))
    print()
    print(mode_table(rows))
    print()
    print(behaviour_by_mode(rows))
    return 0


def mode_table(rows: list[dict]) -> str:
    """One line per mode: the headline figures, normal pixels flagged, the worst look-alike."""
    out = ["| mode | precision | recall | new-defect recall | normal pixels flagged | worst look-alike (rate) | "
           "detectable / truth new | detect (s) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        res = r["res"]
        npx = res.get("normal_pixels", {})
        look = res.get("lookalikes") or {}
        worst = max(look.items(), key=lambda kv: kv[1]["rate"], default=None)
        worst_s = f"{worst[0]} ({100 * worst[1]['rate']:.3f} %)" if worst else "n/a"
        out.append(f"| {r['mode']} | {_num(res, 'lrscube', 'precision'):.4f} | {_num(res, 'lrscube', 'recall'):.4f} | "
                   f"{_num(res, 'recall_new_defects'):.4f} | {npx.get('flagged_pixels', 0)} / {npx.get('pixels', 0)} "
                   f"({100 * npx.get('fraction_pixels', float('nan')):.3f} %) | {worst_s} | "
                   f"{res.get('new_defects_detectable', 0)} / {r['truth_new']} | {r['seconds']['detect']:.0f} |")
    return "\n".join(out)


def behaviour_by_mode(rows: list[dict]) -> str:
    """New-defect recall per behaviour (rows) and mode (columns), with the detectable count."""
    names = sorted({b for r in rows for b in r["res"].get("per_behaviour", {})})
    out = ["| behaviour | " + " | ".join(r["mode"] for r in rows) + " |", "|---|" + "---|" * len(rows)]
    for b in names:
        cells = []
        for r in rows:
            v = r["res"].get("per_behaviour", {}).get(b)
            cells.append("-" if not v else (f"{v['recall_new_defects']:.3f} ({v['new_detectable']})"
                                            if v["new_detectable"] else f"n/a (0/{v['defects']})"))
        out.append(f"| {b} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def _format(res: dict) -> str:
    from lrscube.validation.evaluate import format_report
    try:
        return format_report(res)
    except Exception as e:  # noqa: BLE001 - the report format belongs to evaluate.py and may change
        return f"(format_report failed: {e})"


if __name__ == "__main__":
    sys.exit(main())
