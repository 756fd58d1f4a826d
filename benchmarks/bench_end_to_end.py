"""End to end on N full-frame exposures: ingest, detect, a default delivery, each against its floor.

    python benchmarks/bench_end_to_end.py --out /work/bench/e2e --n 2000 [--batch 250] [--templates 8]
    python benchmarks/bench_end_to_end.py --out /work/bench/e2e_small --n 200 --batch 100   # smaller, same steps

One LocalCluster of 2 workers x 1 thread (lrscube's dask defaults) runs everything:

1. **ingest**, as users run it at scale: real-format full-frame rate files made in rolling
   batches of ``--batch`` (``bench_scale.InputFactory``: simulated templates with new ids,
   times and noise; making them is not timed), each batch ingested with one
   ``lrscube.ingest`` call and deleted. Floor: astropy reading SCI, ERR and DQ of the batch's
   files on the workers, just before the ingest (both from the page cache: the files are new).
2. **detect**: ``lrscube.detect(store)`` (stages 1 and 2, intervals, mask cube). Floor:
   ``cube.read_frames`` of sci + err + dq of every exposure on the workers, in stage 1's batches.
3. **delivery**: ``lrscube.export_crds(store, out)`` with its defaults (one MASK file per
   epoch). Floor: writing as many plain FITS files of the same uint32 frame with astropy.

Prints each stage's seconds, floor and ratio, the total against the 5-minute goal of issue 18,
the workers' peak memory and the store's size; JSON in ``OUT/e2e.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_detect import _read_batch, _reset_peak, _rss_mb, commit_of_tree, tree_bytes  # noqa: E402


def _read_fits(path: str) -> int:
    from astropy.io import fits

    with fits.open(path, memmap=False) as h:
        return int(sum(np.asarray(h[e].data).nbytes for e in ("SCI", "ERR", "DQ")))


def detect_floor(client, store) -> float:
    from lrscube.deploy.cluster import worker_threads
    from lrscube.storage.cube import cube_url, n_committed
    from lrscube.detection.detect import balanced_batch
    from lrscube.detection.detection_params import DetectionParams

    url = cube_url(store)
    n = n_committed(store)
    b = balanced_batch(n, DetectionParams().work_batch_exposures, worker_threads())
    t = time.perf_counter()
    client.gather(client.map(_read_batch, [url] * len(range(0, n, b)),
                             [np.arange(a, min(a + b, n)) for a in range(0, n, b)], pure=False))
    return time.perf_counter() - t


def delivery_floor(n_files: int, shape, out: Path) -> float:
    from astropy.io import fits

    out.mkdir(parents=True, exist_ok=True)
    frame = np.zeros(shape, np.uint32)
    t = time.perf_counter()
    for i in range(n_files):
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(frame, name="DQ")]).writeto(out / f"f{i}.fits", overwrite=True)
    s = time.perf_counter() - t
    shutil.rmtree(out, ignore_errors=True)
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=250, help="files made and ingested per ingest run")
    ap.add_argument("--templates", type=int, default=8, help="simulated full frames the inputs derive from")
    ap.add_argument("--span-days", type=float, default=900.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--memory-limit", default="4GB")
    a = ap.parse_args()
    from bench_scale import InputFactory, make_templates
    from distributed import Client, LocalCluster

    import lrscube
    from lrscube.deploy.cluster import load_dask_defaults

    load_dask_defaults()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    # cube (6.3 MB per full frame with intscat) + work store (2.2) + a batch of inputs + margin
    need_gb = a.n * (6.3 + 2.2) / 1e3 + a.batch * 21.2e-3 + 2
    free_gb = shutil.disk_usage(out).free / 1e9
    if free_gb < need_gb:
        raise SystemExit(f"{out}: {free_gb:.0f} GB free, about {need_gb:.0f} GB needed for {a.n} exposures")
    make_templates(out / "templates", a.templates, a.seed)
    factory = InputFactory(out / "templates", a.n, a.span_days, 60000.0, a.seed)
    store = out / "store"
    shutil.rmtree(store, ignore_errors=True)
    inputs = out / "inputs"
    inputs.mkdir(exist_ok=True)
    res = {"commit": commit_of_tree(), "n": a.n, "load_average_start": os.getloadavg()[0]}
    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit=a.memory_limit, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        client.run(lambda: __import__("lrscube.intake.ingest") and __import__("lrscube.detection.detect"))
        print(f"code {res['commit']}; {a.n} full frames in ingest runs of {a.batch}; load average "
              f"{res['load_average_start']:.1f}", flush=True)
        t_ing = t_ing_floor = t_gen = 0.0
        peak = 0.0
        for start in range(0, a.n, a.batch):
            k = min(a.batch, a.n - start)
            t = time.perf_counter()
            files = [str(factory.write(i, inputs)) for i in range(start, start + k)]
            os.sync()
            t_gen += time.perf_counter() - t
            t = time.perf_counter()
            client.gather(client.map(_read_fits, files, pure=False))
            t_ing_floor += time.perf_counter() - t
            client.run(_reset_peak)
            t = time.perf_counter()
            s = lrscube.ingest(files, str(store), "lrs", progress=False)
            t_ing += time.perf_counter() - t
            peak = max(peak, max(v["peak"] for v in client.run(_rss_mb).values()))
            if len(s.ingested) != k:
                raise SystemExit(f"ingest run at {start}: expected {k} ingested, got:\n{s}")
            for f in files:
                os.remove(f)
            print(f"  ingested {start + k:5d} / {a.n}: ingest {t_ing:.1f} s, floor {t_ing_floor:.1f} s", flush=True)
        cube_size, cube_objects = tree_bytes(store / "exposures")
        t_det_floor = detect_floor(client, str(store))
        client.run(_reset_peak)
        t = time.perf_counter()
        lrscube.detect(str(store))
        t_det = time.perf_counter() - t
        peak_det = max(v["peak"] for v in client.run(_rss_mb).values())
        meta = json.loads((store / "detect.json").read_text())
        crds = out / "crds"
        shutil.rmtree(crds, ignore_errors=True)
        t = time.perf_counter()
        manifest = lrscube.export_crds(str(store), str(crds), pedigree="SIMULATION")
        t_del = time.perf_counter() - t
        n_files = len(manifest["files"])
        t_del_floor = delivery_floor(n_files, (1024, 1032), out / "floor_fits")
    rows = [("ingest", t_ing, t_ing_floor), ("detect", t_det, t_det_floor), ("delivery", t_del, t_del_floor)]
    total = sum(r[1] for r in rows)
    print(f"\n{'stage':>9} {'s':>8} {'floor s':>8} {'ratio':>6}")
    for name, s_, f_ in rows:
        print(f"{name:>9} {s_:8.1f} {f_:8.1f} {s_ / f_:6.1f}")
    print(f"{'total':>9} {total:8.1f} {sum(r[2] for r in rows):8.1f}   goal <= 300 s: {'met' if total <= 300 else 'NOT met'}")
    print(f"(input files made in {t_gen:.0f} s, not counted); cube {cube_size / 1e9:.2f} GB in {cube_objects} objects; "
          f"detect stage 1 / 2: {meta.get('timing', {}).get('stage1_s')} / {meta.get('timing', {}).get('stage2_s')} s; "
          f"{n_files} MASK files; peak worker MB: ingest {peak:.0f}, detect {peak_det:.0f}")
    res.update({"stages": {n: {"s": s_, "floor_s": f_, "ratio": s_ / f_} for n, s_, f_ in rows}, "total_s": total,
                "cube_bytes": cube_size, "cube_objects": cube_objects, "detect_timing": meta.get("timing"),
                "mask_files": n_files, "peak_worker_mb": {"ingest": peak, "detect": peak_det},
                "input_generation_s": t_gen, "load_average_end": os.getloadavg()[0]})
    (out / "e2e.json").write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
