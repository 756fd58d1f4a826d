"""`lrscube demo`: the whole flow on a small simulated set, on an embedded dask cluster.

simulate -> ingest (with a few junk files among the inputs) -> detect -> evaluate against the
simulator's truth -> export MASK reference files -> HTML report, then a summary of each step.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from .deploy.cluster import get_client
from .detection.detect import detect, summarize_intervals
from .intake.ingest import ingest
from .masks.crds_export import export_crds
from .masks.maskcube import open_mask
from .reporting.report import report
from .validation.evaluate import evaluate, format_report
from .validation.simulate import simulate


def _junk(folder: Path, good: Path) -> list[Path]:
    """A few of the messy files real archives hold, to show how ingest rejects them."""
    folder.mkdir(parents=True, exist_ok=True)
    data = good.read_bytes()
    junk = {
        "jw09999001001_02101_00001_mirimage_rate.fits": data[: len(data) // 2],  # truncated copy
        "jw09999001001_02101_00002_mirimage_rate.fits": b"",  # empty
        "notes_rate.fits": b"SIMPLE = not really a FITS file\n",
    }
    for name, content in junk.items():
        (folder / name).write_bytes(content)
    shutil.copy(good, folder / "copy_of_first_rate.fits")  # a duplicate under another name
    return [folder / n for n in [*junk, "copy_of_first_rate.fits"]]


def demo(n: int = 60, workdir: str | None = None, seed: int = 1, full_frame: bool = False,
         scheduler: str | None = None) -> int:
    """Run the whole flow on ``n`` simulated exposures; returns a process exit code."""

    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="lrscube-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    store = work / "store.zarr"
    lines = [f"lrscube demo in {work}"]
    t0 = time.perf_counter()

    # A subarray-only set covers 3 % of the frame: raise the defect rate so the demo has
    # enough new defects to show (the detection parameters are not touched).
    scenario = None if full_frame else {"new": {"events_per_megapixel_per_year": 4000}}
    sim = simulate(work / "inputs", n=n, seed=seed, scenario=scenario, full_frame=full_frame,
                            progress=False, overwrite=True)
    new = sim.truth[~sim.truth.get("static", False).astype(bool)] if "static" in sim.truth else sim.truth
    lines.append(f"simulate: {len(sim.files)} exposures, {len(sim.truth)} defect intervals "
                 f"({len(new)} appearing after the start)")
    junk = _junk(work / "junk", Path(sim.files[0]))

    with get_client(scheduler) as client:
        lines.append(f"dask: {len(client.scheduler_info().get('workers', {}))} workers, dashboard {client.dashboard_link}")
        s = ingest([work / "inputs", *junk], store)
        lines += [f"  rejected {Path(f).name}: {why}" for f, why in s.rejected]
        lines.append(s.summary_line())
        t = time.perf_counter()
        iv = detect(str(store))
        lines.append(f"{summarize_intervals(iv)}  ({time.perf_counter() - t:.0f} s)")
    mask = open_mask(str(store))
    lines.append(f"mask cube: {mask.sizes['time']} epochs from {str(mask.time.values[0])[:10]} "
                 f"to {str(mask.time.values[-1])[:10]}")
    ev = evaluate(str(store), sim.truth_path)
    lines.append("evaluate against the simulator's truth, with two baselines:")
    lines += ["  " + ln for ln in format_report(ev).splitlines()]
    lines.append("recall of new defects per behaviour: " + ", ".join(
        f"{name} {v['recall_new_defects']:.3f} ({v['new_detectable']})" if v["new_detectable"] else f"{name} n/a"
        for name, v in ev["per_behaviour"].items()))
    crds = export_crds(str(store), str(work / "crds"), author="lrscube demo", pedigree="SIMULATION",
                       max_files=12, overwrite=True)
    lines.append("export-crds (the delivery rule, at most 12 files):")
    lines += ["  " + ln for ln in str(crds).splitlines()]
    page = report(str(store), work / "report", manifest=crds.get("manifest_json"))
    lines.append(f"report: {page}")

    lines.append(f"done in {time.perf_counter() - t0:.0f} s; store: {store}")
    print("\n".join(lines))
    return 0
