"""The exposure cube: every ingested exposure in one zarr v3 group, ``time x y x x``.

Layout of ``STORE/exposures`` (written with zarr directly, read with xarray)::

    sci, err   float32 (time, y, x)  NaN outside the exposure's footprint
    dq         uint32  (time, y, x)  0 outside the footprint
    time       (time,) MJD mid-exposure, CF-encoded so xarray decodes datetime64
    mjd, expstart, exptime, exp_type, subarray, detector, program, observation, visit,
    exposure, filename, source, product, content_hash, exposure_key, nints, bunit,
    y0, x0, ny, nx (the footprint: 0-based first row and column, rows, columns)   (time,)

Chunks are (1, 256, 258): one exposure per chunk along time, so an append only ever writes
new chunks and never rewrites stored exposure data. Chunks wholly outside a subarray's
footprint hold the fill value and are not written at all (a SLITLESSPRISM exposure stores 2 of
16 chunks). Storage order is arrival order; :func:`open_cube` returns the time axis sorted.

Commit protocol (what makes a kill -9 harmless): the group attribute
``lrscube.n_committed`` counts the exposures whose append completed. An append (1) truncates
every array to ``n_committed``, deleting whatever a killed append left beyond it, (2) grows
the arrays and writes the new exposures' chunks and coordinates, (3) rewrites the group's
attributes with the new count. Step 3 is one atomic object write (rename on a local disk, a PUT
on an object store), so a reader sees the old or the new cube, never half an exposure.
The 1-D coordinate arrays are small and chunked by 4096 along time; an append rewrites the
last such chunk whole (atomically), never the exposure data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
import zarr

from . import store as st

CHUNK_Y, CHUNK_X = 256, 258
COORD_CHUNK = 4096
FORMAT_VERSION = 1

#: per-exposure coordinates: name -> numpy dtype ("str" for strings)
COORDS: dict[str, str] = {
    "mjd": "float64",
    "expstart": "float64",
    "exptime": "float64",
    "exp_type": "str",
    "subarray": "str",
    "detector": "str",
    "program": "str",
    "observation": "str",
    "visit": "str",
    "exposure": "str",
    "filename": "str",
    "source": "str",
    "product": "str",
    "content_hash": "str",
    "exposure_key": "str",
    "nints": "int32",
    "bunit": "str",
    # footprint in the full frame (0-based first row/column, size): what the exposure saw
    "y0": "int32",
    "x0": "int32",
    "ny": "int32",
    "nx": "int32",
}
DATA_VARS = {"sci": ("float32", np.nan), "err": ("float32", np.nan), "dq": ("uint32", 0)}
TIME_ATTRS = {"units": "days since 1858-11-17 00:00:00", "calendar": "proleptic_gregorian",
              "long_name": "mid-exposure time (UTC)"}


class StoreError(RuntimeError):
    """The store itself cannot be used (not an lrscube store, another mode, unwritable)."""


def cube_url(store: str) -> str:
    return st.join(store, st.EXPOSURES)


def _open_group(store: str, mode: str = "r") -> zarr.Group:
    read_only = mode == "r"
    return zarr.open_group(st.zarr_store(cube_url(store), read_only=read_only), mode=mode, zarr_format=3)


def exists(store: str) -> bool:
    try:
        g = _open_group(store)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return False
    return "lrscube" in g.attrs


def create(store: str, profile, bunit: str = "DN/s") -> zarr.Group:
    """Create an empty exposure cube for a mode profile (no-op check if it already exists)."""
    if exists(store):
        return _open_group(store, "r+")
    ny, nx = profile.frame_shape
    g = zarr.open_group(st.zarr_store(cube_url(store)), mode="w", zarr_format=3)
    var_attrs = {"sci": {"units": bunit, "long_name": "slope"},
                 "err": {"units": bunit, "long_name": "1-sigma uncertainty of sci"},
                 "dq": {"long_name": "JWST pixel DQ bits (stdatamodels dqflags.pixel)"}}
    for name, (dtype, fill) in DATA_VARS.items():
        # zstd level 1: as small as zarr's default level on noisy float32 sky, 4x faster to write
        g.create_array(name, shape=(0, ny, nx), chunks=(1, CHUNK_Y, CHUNK_X), dtype=dtype,
                       fill_value=fill, dimension_names=("time", "y", "x"),
                       compressors=zarr.codecs.ZstdCodec(level=1),
                       attributes={**var_attrs[name], "coordinates": " ".join(COORDS)})
    g.create_array("time", shape=(0,), chunks=(COORD_CHUNK,), dtype="float64",
                   fill_value=np.nan, dimension_names=("time",), attributes=TIME_ATTRS)
    for name, dtype in COORDS.items():
        g.create_array(name, shape=(0,), chunks=(COORD_CHUNK,), dtype=dtype,
                       fill_value="" if dtype == "str" else (np.nan if dtype.startswith("float") else 0),
                       dimension_names=("time",))
    g.create_array("y", shape=(ny,), chunks=(ny,), dtype="int32", dimension_names=("y",),
                   attributes={"long_name": "0-based full-frame row"})[:] = np.arange(ny)
    g.create_array("x", shape=(nx,), chunks=(nx,), dtype="int32", dimension_names=("x",),
                   attributes={"long_name": "0-based full-frame column"})[:] = np.arange(nx)
    g.attrs["lrscube"] = {"n_committed": 0, "profile": profile.name, "bunit": bunit,
                          "frame_shape": list(profile.frame_shape), "format_version": FORMAT_VERSION}
    return g


def info(store: str) -> dict:
    """The cube's bookkeeping attributes (n_committed, profile, bunit, ...)."""
    g = _open_group(store)
    if "lrscube" not in g.attrs:
        raise StoreError(f"{cube_url(store)}: not an lrscube exposure cube")
    return dict(g.attrs["lrscube"])


def n_committed(store: str) -> int:
    return int(info(store)["n_committed"]) if exists(store) else 0


def _arrays(g: zarr.Group) -> list[zarr.Array]:
    return [g[name] for name in [*DATA_VARS, "time", *COORDS]]


def begin_append(store: str, k: int) -> int:
    """Make room for ``k`` exposures after the committed ones; returns the first new index.

    Anything a killed append left beyond ``n_committed`` is deleted first.
    """
    g = _open_group(store, "r+")
    n = int(g.attrs["lrscube"]["n_committed"])
    for a in _arrays(g):
        if a.shape[0] != n:
            a.resize((n, *a.shape[1:]))
        a.resize((n + k, *a.shape[1:]))
    return n


def write_exposure(store: str, index: int, exp) -> None:
    """Write one exposure's footprint into slot ``index`` (runs on a worker)."""
    g = _open_group(store, "r+")
    ny, nx = exp.sci.shape
    region = (index, slice(exp.y0, exp.y0 + ny), slice(exp.x0, exp.x0 + nx))
    g["sci"][region] = exp.sci
    g["err"][region] = exp.err
    g["dq"][region] = exp.dq


def commit(store: str, start: int, metas: list[dict]) -> int:
    """Write the coordinates of exposures ``start .. start+len(metas)`` and count them committed."""
    g = _open_group(store, "r+")
    k = len(metas)
    if k:
        sl = slice(start, start + k)
        g["time"][sl] = np.array([m["mjd"] for m in metas], dtype="float64")
        for name, dtype in COORDS.items():
            vals = [m.get(name) for m in metas]
            if dtype == "str":
                g[name][sl] = np.array(["" if v is None else str(v) for v in vals], dtype=object)
            else:
                g[name][sl] = np.array([np.nan if v is None else v for v in vals], dtype=dtype)
    attrs = dict(g.attrs["lrscube"])
    attrs["n_committed"] = start + k
    g.attrs["lrscube"] = attrs  # the commit point: one atomic write of the group metadata
    return start + k


def _as_str(values) -> np.ndarray:
    # zarr returns numpy's variable-width StringDType; plain fixed-width str plays well everywhere
    return np.array([str(v) for v in values], dtype=str)


def open_cube(store: str, sort: bool = True, chunks: dict | None = None) -> xr.Dataset:
    """Open the exposure cube as an xarray Dataset ``(time, y, x)``, lazily (dask).

    Only committed exposures are returned; ``sort`` orders the time axis (storage keeps
    arrival order). Pixel coordinates ``y``/``x`` are 0-based full-frame indices.
    """
    if not exists(store):
        raise FileNotFoundError(f"{cube_url(store)}: no exposure cube here (run `lrscube ingest` first)")
    n = n_committed(store)
    ds = xr.open_zarr(st.zarr_store(cube_url(store), read_only=True), consolidated=False,
                      zarr_format=3, chunks=chunks or {})
    ds = ds.isel(time=slice(0, n))
    ds = ds.set_coords([c for c in COORDS if c in ds.data_vars])
    for c in COORDS:
        if COORDS[c] == "str" and c in ds.coords:
            ds.coords[c] = ("time", _as_str(ds[c].values))
    ds.attrs = {k: v for k, v in ds.attrs.items() if k != "lrscube"}
    ds.attrs.update(info(store))
    return ds.sortby("time") if sort and n else ds


def exposure_table(store: str) -> pd.DataFrame:
    """Per-exposure coordinates as a DataFrame (one row per committed exposure, sorted by time)."""
    if not exists(store):
        return pd.DataFrame(columns=["time", *COORDS])
    g = _open_group(store)
    n = int(g.attrs["lrscube"]["n_committed"])
    present = set(g.array_keys())  # a store written before a coordinate was added lacks it
    df = pd.DataFrame({name: _as_str(g[name][:n]) if dtype == "str" else g[name][:n]
                       for name, dtype in COORDS.items() if name in present})
    df.insert(0, "time", pd.to_datetime(df["mjd"].to_numpy() - 40587.0, unit="D"))
    return df.sort_values("mjd", kind="stable").reset_index(drop=True)
