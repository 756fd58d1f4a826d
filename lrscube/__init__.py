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
    export_crds(store, out)         MASK reference files, one per epoch
    apply_mask(store, files)        OR the right epoch into existing products' DQ
    report(store, out)              HTML page with plots
    pixel_history(store, y, x)      one pixel's residuals against time
"""

from __future__ import annotations

from importlib import import_module

__version__ = "0.1.0"

# name -> module that defines it; imported on first use so `import lrscube` stays light.
_API = {
    "simulate": "simulate",
    "ingest": "ingest",
    "open_cube": "cube",
    "detect": "detect",
    "open_intervals": "detect",
    "evaluate": "evaluate",
    "open_mask": "maskcube",
    "mask_at": "maskcube",
    "export_crds": "crds_export",
    "apply_mask": "apply",
    "report": "report",
    "pixel_history": "history",
    "get_client": "cluster",
    "load_profile": "profiles",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str):
    if name in _API:
        mod = import_module(f".{_API[name]}", __name__)
        return getattr(mod, "load" if name == "load_profile" else name)
    raise AttributeError(f"module 'lrscube' has no attribute {name!r}")
