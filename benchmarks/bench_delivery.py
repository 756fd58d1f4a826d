"""Size of a default CRDS delivery on the full-size set, against one file per epoch.

    .venv/bin/python benchmarks/bench_delivery.py --out /tmp/full150 --n 150 --seed 3

The set is the one of bench_quality.py (simulate, default scenario, full frame and SLITLESSPRISM
mixed over 900 days -> ingest -> detect; what exists in --out is reused; --detect re-runs
detection on the stored cube). Then exports of the same mask cube: the default delivery (the
profile's delivery rule), the rule with --min-changed-pixels 5, with files at least 14 or 90
days apart, and --every-epoch; for each, the number of files, what merging gets wrong against
the unmerged epochs (distinct pixels missed / wrongly flagged for at least one exposure that
sees them, in total and in the rule's regions, and pixel-exposures), whether the checks passed,
and the export's time; then how many exposures each file of the default delivery serves.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time


def _row(name, man, secs):
    px = (man["merge_cost"].get("pixels") or {})
    pe = man["merge_cost"].get("pixel_exposures") or {}
    bad = pe.get("bad") or float("nan")
    return (f"{name:<28} {len(man['files']):>5} {px.get('missed', 0):>7} {px.get('missed_in_regions', '-'):>7} "
            f"{px.get('wrongly_flagged', 0):>7} {px.get('wrongly_flagged_in_regions', '-'):>7} "
            f"{pe.get('missed', 0):>9.0f} {100 * pe.get('missed', 0) / bad:>6.2f}% {pe.get('wrongly_flagged', 0):>9.0f} "
            f"{secs:>7.1f}  {'ok' if 'pass all' in man['checks'] else 'FAILED'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--detect", action="store_true", help="re-run detect on the stored cube (this code's detection)")
    a = ap.parse_args()
    import numpy as np

    from lrscube.masks import maskcube as mc
    from lrscube.deploy.cluster import get_client
    from lrscube.masks.crds_export import export_crds
    from lrscube.detection.detect import detect
    from lrscube.intake.ingest import ingest
    from lrscube.validation.simulate import simulate

    rate, store = os.path.join(a.out, "rate"), os.path.join(a.out, "store")
    truth_path = os.path.join(rate, "truth", "truth.csv")
    if not os.path.exists(truth_path):
        t = time.perf_counter()
        simulate(rate, n=a.n, seed=a.seed, full_frame=True, overwrite=True, progress=False)
        print(f"simulate: {time.perf_counter() - t:.0f} s", flush=True)
    if a.detect or not os.path.exists(os.path.join(store, "detect.json")):
        with get_client(quiet=True):
            if not os.path.exists(os.path.join(store, "exposures")):
                print(ingest([rate], store, progress=False), flush=True)
            t = time.perf_counter()
            detect(store, progress=False)
            print(f"detect: {time.perf_counter() - t:.0f} s", flush=True)
    cube = mc.open_mask(store)
    print(f"mask cube: {cube.sizes['time']} epochs ({cube.attrs.get('n_raw_epochs')} unmerged) over "
          f"{cube.attrs['n_exposures']} exposures, {cube.attrs['first_exposure'][:10]} to "
          f"{cube.attrs['last_exposure'][:10]}")

    exports = os.path.join(a.out, "exports")
    shutil.rmtree(exports, ignore_errors=True)
    runs = [("default (rule: 30 d, 1 px)", {}), ("rule, 5 px per class", {"min_changed_pixels": 5}),
            ("rule, 14 days", {"min_epoch_days": 14}), ("rule, 90 days", {"min_epoch_days": 90}),
            ("--every-epoch", {"every_epoch": True})]
    print(f"{'export':<28} {'files':>5} {'missed':>7} {'(reg.)':>7} {'wrong':>7} {'(reg.)':>7} "
          f"{'miss p-e':>9} {'of bad':>7} {'wrong p-e':>9} {'s':>7}  checks")
    print("  (missed / wrong: distinct pixels wrong for at least one exposure; p-e: pixel-exposures;\n"
          "   of bad: missed p-e / the pixel-exposures the unmerged epochs flag among the changing pixels)")
    mans = {}
    for i, (name, kw) in enumerate(runs):
        t = time.perf_counter()
        man = export_crds(store, os.path.join(exports, f"e{i}"), author="bench", pedigree="SIMULATION",
                          name=f"bench-{int(time.time())}-{i}", **kw)
        mans[name] = man
        print(_row(name, man, time.perf_counter() - t), flush=True)
    px = mans[runs[0][0]]["merge_cost"]["pixels"]
    print(f"pixels whose state changes over the set: {px['changing']} ({px['changing_in_regions']} in the "
          f"rule's regions); the others are never wrong", flush=True)

    # which file CRDS gives each exposure under the default delivery
    man = mans[runs[0][0]]
    from lrscube.storage.cube import exposure_table

    exp = exposure_table(store)
    ua = np.array([np.datetime64(f["useafter"]) for f in man["files"]])
    start = mc.mjd_to_datetime64(exp["expstart"].to_numpy())
    k = np.searchsorted(ua, start, side="right") - 1
    print(f"default delivery: {len(man['files'])} files, USEAFTER {man['files'][0]['useafter']} to "
          f"{man['files'][-1]['useafter']}; exposures per file: "
          f"{', '.join(str(int(n)) for n in np.bincount(k, minlength=len(ua)))}")


if __name__ == "__main__":
    main()
