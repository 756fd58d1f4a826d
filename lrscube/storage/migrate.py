"""``lrscube migrate``: a store of format 1-3 copied into a new store of format 4 (icechunk).

The cube's committed, not dropped exposures are read (every chunk checked against its checksum
where the format has one) and appended to the new cube in batches, each one commit; every other
part of the store (ingest log, detect runs and ``detect.json``, run records, deliveries) is
copied as it is. The old store is only read. Both are verified: a store with damage is not
migrated (drop the exposures ``lrscube verify`` names first), and the new one must verify clean
with the same exposures.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from . import cube, engine
from . import store as st
from .verify import verify

#: exposures per commit of the copy
BATCH = 32
#: what a migration does not copy: the cube (re-appended) and the locks
_NOT_COPIED = {st.EXPOSURES, st.INGEST_LOCK, st.DETECT_LOCK}


def migrate(store: str, out: str, batch: int = BATCH, progress: bool = False) -> dict:
    """Copy ``store`` (format 1-3) into a new format-4 store ``out``; returns a summary."""
    if not cube.exists(store):
        raise FileNotFoundError(f"{cube.cube_url(store)}: no exposure cube here")
    if cube.is_repository(store):
        raise st.StoreError(f"{store}: already format 4 (an icechunk repository); nothing to migrate")
    out_fs, out_path = st.fs_and_path(out)
    if out_fs.exists(out_path):
        raise st.StoreError(f"{out}: exists; migrate writes a new store")
    with st.writer_lock(store, st.INGEST_LOCK, "ingest"), st.writer_lock(store, st.DETECT_LOCK, "detect"):
        before = verify(store)
        if not before.ok:
            raise st.CorruptDataError(f"the store does not verify ({len(before.problems)} problems): drop the "
                                      "exposures `lrscube verify` lists, then migrate", url=store)
        info = cube.info(store)
        from ..config import profiles

        profile = profiles.load(info["profile"])
        cube.create(out, profile, bunit=info["bunit"], format_version=4)
        slots = cube.kept_slots(info)
        names = [*cube.COORDS]
        url = cube.cube_url(store)
        coords = dict(zip(["time", *names], (a[:] for a in cube._open_arrays(store, ["time", *names])), strict=True))
        for b0 in range(0, len(slots), batch):
            rows = slots[b0:b0 + batch]
            sci, err, dq, scat = cube.read_frames(url, rows, missing="error", planes=("intscat",))
            exps, metas = [], []
            for k, i in enumerate(rows):
                meta = {n: _plain(coords[n][i]) for n in names}
                meta["mjd"] = float(coords["time"][i])
                y0, x0, ny, nx = (int(meta[c]) for c in ("y0", "x0", "ny", "nx"))
                cut = (slice(y0, y0 + ny), slice(x0, x0 + nx))
                plane = scat[k][cut] if scat is not None and np.isfinite(scat[k][cut]).any() else None
                exps.append(SimpleNamespace(sci=sci[k][cut], err=err[k][cut], dq=dq[k][cut], intscat=plane,
                                            y0=y0, x0=x0))
                metas.append(meta)
            cube.append_exposures(out, exps, metas)
            if progress:
                print(f"migrate: {min(b0 + batch, len(slots))}/{len(slots)} exposures", flush=True)
        copied = _copy_the_rest(store, out)
    after = verify(out)
    new = cube.exposure_table(out)
    old = cube.exposure_table(store)
    if not after.ok or list(new["exposure_key"]) != list(old["exposure_key"]):
        raise st.StoreError(f"{out}: the migrated store does not match {store} ({after}); the old store is unchanged")
    return {"exposures": len(new), "copied": copied, "commits": len(list(
        engine.open_repository(cube.cube_url(out)).ancestry(branch=engine.BRANCH))) - 1}


def _plain(v):
    """A coordinate value as the appends take it (numpy scalars and strings to Python's)."""
    return v.item() if isinstance(v, np.generic) else (str(v) if not isinstance(v, (int, float)) else v)


def _copy_the_rest(store: str, out: str) -> list[str]:
    """Every top-level part of ``store`` but the cube and the locks, copied to ``out``."""
    fs, src = st.fs_and_path(store)
    _, dst = st.fs_and_path(out)
    copied = []
    for path in sorted(fs.ls(src, detail=False)):
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if name in _NOT_COPIED:
            continue
        fs.copy(path, f"{dst}/{name}", recursive=True)
        copied.append(name)
    return copied
