"""Detection quality per instrument mode: simulate -> ingest -> detect -> evaluate, for each mode profile.

Every mode uses the same scenario (rates, amplitudes, noise: configs/scenario-default.yaml) and
the detection parameters of its profile (all copied from configs/lrs.yaml); only the layout of
the data (the profile's ``simulation:`` block) differs. Prints one line per mode and writes the
full evaluation of each to ``OUT/<mode>/evaluation.json``.

    python benchmarks/bench_modes.py --out /tmp/bench-modes --n 50 --seed 1
    python benchmarks/bench_modes.py --modes mrs-short imager --n 40
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import lrscube
from lrscube import profiles

MODES = ["lrs", "lrs-slit", "lrs-slitless", "mrs-short", "mrs-long", "imager"]


def _num(res: dict, *keys, default=float("nan")):
    d = res
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def run_mode(mode: str, out: Path, n: int, seed: int, scheduler: str | None) -> dict:
    work = out / mode
    if work.exists():
        shutil.rmtree(work)
    t0 = time.perf_counter()
    sim = lrscube.simulate(work / "sim", n=n, seed=seed, mode=mode)
    t1 = time.perf_counter()
    summary = lrscube.ingest(sim.files, str(work / "cube.zarr"), mode=mode, scheduler=scheduler, progress=False)
    t2 = time.perf_counter()
    lrscube.detect(str(work / "cube.zarr"))
    t3 = time.perf_counter()
    res = lrscube.evaluate(str(work / "cube.zarr"), sim.truth_path)
    t4 = time.perf_counter()
    (work / "evaluation.json").write_text(json.dumps(res, indent=1, default=str))
    intervals = lrscube.open_intervals(str(work / "cube.zarr"))
    new = sim.truth[~sim.truth.static]
    return dict(mode=mode, n=n, ingested=len(summary.ingested), rejected=len(summary.rejected),
                truth_new=len(new), intervals=int((~intervals.get("carried", False)).sum()) if len(intervals) else 0,
                res=res, seconds=dict(simulate=t1 - t0, ingest=t2 - t1, detect=t3 - t2, evaluate=t4 - t3))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/lrscube-bench-modes")
    ap.add_argument("--n", type=int, default=50, help="exposures per mode")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--modes", nargs="*", default=MODES, choices=profiles.available())
    ap.add_argument("--scheduler", default=None)
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for mode in a.modes:
        r = run_mode(mode, out, a.n, a.seed, a.scheduler)
        rows.append(r)
        res = r["res"]
        print(f"== {mode}: precision={_num(res, 'lrscube', 'precision'):.3f} recall={_num(res, 'lrscube', 'recall'):.3f} "
              f"new-defect recall={_num(res, 'recall_new_defects'):.3f} "
              f"intervals={r['intervals']} truth new defects={r['truth_new']} "
              f"time simulate/ingest/detect={r['seconds']['simulate']:.0f}/{r['seconds']['ingest']:.0f}/"
              f"{r['seconds']['detect']:.0f} s", flush=True)
        print(_format(res), flush=True)
    (out / "summary.json").write_text(json.dumps([{k: v for k, v in r.items()} for r in rows], indent=1, default=str))
    return 0


def _format(res: dict) -> str:
    from lrscube.evaluate import format_report
    try:
        return format_report(res)
    except Exception as e:  # noqa: BLE001 - the report format belongs to evaluate.py and may change
        return f"(format_report failed: {e})"


if __name__ == "__main__":
    sys.exit(main())
