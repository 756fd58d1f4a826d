"""Import time of lrscube in fresh processes, against an empty interpreter in the same run.

    python benchmarks/bench_import.py --rounds 7

Every figure is the median over ``--rounds`` fresh ``python -c`` processes (round-robin, so a
busy moment hits every row alike) of the wall time from before the import to after it, measured
inside the process (``time.perf_counter``), plus the whole process's wall time for the first
rows. Rows: ``import lrscube`` (what a notebook and every dask worker pay first), the modules a
dask worker imports to run ingest's tasks (``lrscube.ingest``) and detect's (``lrscube.detect``),
``lrscube --help``, and what stays out of ``import lrscube`` (stdatamodels' datamodels,
matplotlib, pandas, distributed). ``--importtime`` also prints the 15 slowest modules of
``python -X importtime -c "import lrscube"``. ``--other DIR`` adds ``import lrscube`` of another
tree (``git archive COMMIT | tar -x -C DIR``, imported through PYTHONPATH) in the same rounds,
e.g. the code before the lazy imports.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

TIMED = "import time; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"
ROWS = {
    "import lrscube": "import lrscube",
    "import lrscube.intake.ingest (ingest's worker tasks)": "import lrscube.intake.ingest",
    "import lrscube.detection.detect (detect's worker tasks)": "import lrscube.detection.detect",
    "lrscube.cli.main(['--help'])": "import lrscube.cli, contextlib, io\n"
                                    "with contextlib.redirect_stdout(io.StringIO()):\n"
                                    "    try: lrscube.cli.main(['--help'])\n"
                                    "    except SystemExit: pass",
    "stdatamodels.jwst.datamodels (not in import lrscube)": "import stdatamodels.jwst.datamodels",
    "matplotlib.pyplot (not in import lrscube)": "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot",
    "pandas (not in import lrscube)": "import pandas",
    "distributed (not in import lrscube)": "import distributed",
}
LOADED = ("import lrscube, sys; print(sorted(m for m in ('numpy', 'pandas', 'xarray', 'zarr', 'dask', "
          "'distributed', 'astropy', 'stdatamodels', 'matplotlib', 'scipy') if m in sys.modules))")


def _run(code: str, pythonpath: str | None = None) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": pythonpath} if pythonpath else None
    t0 = time.perf_counter()
    # cwd "/": `python -c` puts the working directory first on sys.path, where a checkout's
    # lrscube would shadow the one under test
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env,
                         cwd="/").stdout
    wall = time.perf_counter() - t0
    return float(out.strip().splitlines()[-1]), wall


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--importtime", action="store_true", help="also the slowest modules of -X importtime")
    ap.add_argument("--other", default=None, help="another tree: its `import lrscube` in the same rounds")
    a = ap.parse_args(argv)
    rows = {"(empty interpreter: pass)": "pass", **ROWS}
    paths = {k: None for k in rows}
    if a.other:
        key = f"import lrscube of {a.other}"
        rows[key], paths[key] = "import lrscube", a.other
        check = "import lrscube; print(lrscube.__file__)"
        where = subprocess.run([sys.executable, "-c", check], check=True, capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": a.other}, cwd="/").stdout.strip()
        if not where.startswith(os.path.abspath(a.other)):
            raise SystemExit(f"--other {a.other}: `import lrscube` there imports {where}")
    inside: dict[str, list[float]] = {k: [] for k in rows}
    whole: dict[str, list[float]] = {k: [] for k in rows}
    for _ in range(a.rounds):
        for name, stmt in rows.items():
            code = TIMED.format(stmt="exec(" + repr(stmt) + ")")
            t_in, t_whole = _run(code, paths[name])
            inside[name].append(t_in)
            whole[name].append(t_whole)
    med = {k: statistics.median(v) for k, v in inside.items()}
    base = statistics.median(whole["(empty interpreter: pass)"])
    print(f"python {sys.version.split()[0]}, {a.rounds} fresh processes per row (medians)")
    print(f"{'':55s} {'import':>9s} {'process':>9s} {'process - empty':>16s}")
    for name in rows:
        w = statistics.median(whole[name])
        print(f"{name:55s} {med[name]:8.3f}s {w:8.3f}s {w - base:15.3f}s")
    loaded = subprocess.run([sys.executable, "-c", LOADED], check=True, capture_output=True, text=True,
                            cwd="/").stdout
    print(f"heavy packages loaded by `import lrscube`: {loaded.strip()}")
    if a.importtime:
        err = subprocess.run([sys.executable, "-X", "importtime", "-c", "import lrscube"],
                             check=True, capture_output=True, text=True, cwd="/").stderr
        lines = [ln for ln in err.splitlines() if ln.startswith("import time:") and "|" in ln[13:]]
        parsed = []
        for ln in lines[1:]:
            _, self_us, cum_us, mod = (p.strip() for p in ln.replace("import time:", "|").split("|"))
            parsed.append((int(cum_us), mod))
        print("slowest modules (cumulative, python -X importtime -c 'import lrscube'):")
        for cum, mod in sorted(parsed, reverse=True)[:15]:
            print(f"  {cum / 1e3:8.1f} ms  {mod}")


if __name__ == "__main__":
    main()
