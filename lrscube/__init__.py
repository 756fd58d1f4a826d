"""lrscube: time-variable bad-pixel masks for JWST MIRI LRS from every blank-sky exposure.

The public API (the CLI calls only this; a notebook can do everything the CLI does)::

    simulate(out, n=...)            simulated rate files + truth table
    ingest(paths, store)            rate/rateints/cal/calints files -> exposure cube
    open_cube(store)                exposure cube as an xarray Dataset (time, y, x)
    exposure_table(store)           the stored exposures, one row each (pandas)
    rejections(store)               every file ingest rejected, with its reason (pandas)
    detect(store)                   defect intervals + mask cube
    open_intervals(store)           defect intervals table (pandas)
    open_mask(store)                mask cube as an xarray Dataset (time=epoch start, y, x)
    mask_at(store, time)            the 2-D mask valid at a time
    evaluate(store, truth)          precision / recall against a truth table
    export_crds(store, out)         a CRDS delivery of MASK reference files, checked and recorded
    apply_mask(store, files)        OR the right epoch into existing products' DQ
    report(store, out)              HTML page with plots
    pixel_history(store, y, x)      one pixel's residuals against time

Each name is imported from its module when first used (PEP 562), so ``import lrscube`` (and
every dask worker that unpickles an lrscube function) does not pay for numpy, xarray, zarr,
stdatamodels or matplotlib until something needs them.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> (module, attribute)
_API = {
    "apply_mask": ("masks.apply", "apply_mask"),
    "detect": ("detection.detect", "detect"),
    "evaluate": ("validation.evaluate", "evaluate"),
    "export_crds": ("masks.crds_export", "export_crds"),
    "exposure_table": ("storage.cube", "exposure_table"),
    "get_client": ("deploy.cluster", "get_client"),
    "ingest": ("intake.ingest", "ingest"),
    "load_profile": ("config.profiles", "load"),
    "mask_at": ("masks.maskcube", "mask_at"),
    "open_cube": ("storage.cube", "open_cube"),
    "open_intervals": ("detection.detect", "open_intervals"),
    "open_mask": ("masks.maskcube", "open_mask"),
    "pixel_history": ("reporting.history", "pixel_history"),
    "rejections": ("intake.ingest", "rejections"),
    "report": ("reporting.report", "report"),
    "simulate": ("validation.simulate", "simulate"),
}

__all__ = ["__version__", *sorted(_API)]


def __getattr__(name: str):
    if name in _API:
        module, attr = _API[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
    else:
        try:  # a submodule: lrscube.storage.store, lrscube.storage.cube, ...
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})

