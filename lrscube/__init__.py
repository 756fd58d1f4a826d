"""lrscube: time-variable bad-pixel masks for JWST MIRI LRS from every blank-sky exposure.

The public API (the CLI calls only this; a notebook can do everything the CLI does)::

    simulate(out, n=...)            simulated rate files + truth table
    ingest(paths, store)            rate/rateints/cal/calints files -> exposure cube
    open_cube(store)                exposure cube as an xarray Dataset (time, y, x)
    detect(store)                   defect intervals + mask cube
    open_intervals(store)           defect intervals table (pandas)
    open_mask(store)                mask cube as an xarray Dataset (time=epoch start, y, x)
    mask_at(store, time)            the 2-D mask valid at a time
    evaluate(store, truth)          precision / recall against a truth table
    export_crds(store, out)         a CRDS delivery of MASK reference files, checked and recorded
    apply_mask(store, files)        OR the right epoch into existing products' DQ
    report(store, out)              HTML page with plots
    pixel_history(store, y, x)      one pixel's residuals against time
"""

from __future__ import annotations

__version__ = "0.1.0"

# Functions are bound here eagerly: a submodule of the same name (lrscube.ingest) would
# otherwise shadow the function once anything imports it.
from .cluster import get_client
from .apply import apply_mask
from .crds_export import export_crds
from .cube import exposure_table, open_cube
from .detect import detect, open_intervals
from .evaluate import evaluate
from .history import pixel_history
from .maskcube import mask_at, open_mask
from .ingest import ingest
from .profiles import load as load_profile
from .report import report
from .simulate import simulate

__all__ = [
    "__version__",
    "apply_mask",
    "detect",
    "evaluate",
    "export_crds",
    "exposure_table",
    "get_client",
    "ingest",
    "load_profile",
    "mask_at",
    "open_cube",
    "open_intervals",
    "open_mask",
    "pixel_history",
    "report",
    "simulate",
]
