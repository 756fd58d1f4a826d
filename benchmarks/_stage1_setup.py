"""What the stage-1 benchmarks (bench_stage1_cpu.py, bench_workstore_size.py) share: a store's
exposures of one subarray in time order, the detection parameters and tiles detect would use, and
stage 0 run as detect._stage0 runs its tasks, one after the other in this process."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np


def stage1_setup(store: str, subarray: str = "FULL", max_exposures: int = 0) -> SimpleNamespace:
    """url, prof, p, rows (storage slots in time order), N, dof (or None), tiles ty x tx and their
    spans, batch B, frame fy x fx and origin of the store's committed, kept ``subarray`` exposures
    (the first ``max_exposures``; 0: all)."""
    import zarr

    from lrscube.config import profiles
    from lrscube.detection import detect as D
    from lrscube.detection import intscat as intscat_screen
    from lrscube.detection.detection_params import DetectionParams
    from lrscube.storage import cube

    url = cube.cube_url(store)
    info = cube.info(store)
    prof = profiles.load(info["profile"])
    p = DetectionParams.from_profile(prof)
    g = zarr.open_group(cube.zarr_store(url, read_only=True), mode="r")
    n = cube.n_committed(store)
    sub = np.array([str(v) for v in g["subarray"][:n]])
    order = np.argsort(np.asarray(g["mjd"][:n], float), kind="stable")
    kept = set(int(i) for i in cube.kept_slots(info))
    rows = np.array([i for i in order if sub[i] == subarray and i in kept], np.int64)
    if max_exposures:
        rows = rows[:max_exposures]
    N = rows.size
    nints = np.asarray(g["nints"][:n])[rows] if "nints" in g else None
    dof = None
    if "intscat" in cube.optional_planes(g) and nints is not None:
        dof = intscat_screen.degrees_of_freedom(nints)
        dof = dof if (dof > 0).any() else None
    ty, tx = D.tile_shape(N, p)
    fy, fx = prof.frame_shape
    spans = [(y, min(y + ty, fy), x, min(x + tx, fx)) for y in range(0, fy, ty) for x in range(0, fx, tx)]
    B = D.balanced_batch(N, int(p.work_batch_exposures), 2)
    return SimpleNamespace(url=url, prof=prof, p=p, rows=rows, N=N, dof=dof, ty=ty, tx=tx, spans=spans, B=B,
                           fy=fy, fx=fx, origin=(0, 0))


def stage0(s: SimpleNamespace):
    """(response, unlit) of :func:`stage1_setup`'s exposures, as detect._stage0 computes them."""
    from lrscube.detection import detect as D
    from lrscube.detection.residuals import response_pattern

    p, prof, url, rows, origin = s.p, s.prof, s.url, s.rows, s.origin
    idx = D.response_indices(s.N, p.response_exposures)
    groups = [idx[k:k + 4] for k in range(0, idx.size, 4)]
    resp = gate = None
    for _ in range(max(1, p.response_passes) if groups else 0):
        q, gate = response_pattern(np.concatenate([D._response_task(None, None, p, prof, url, rows[gi], resp, origin)
                                                   for gi in groups]), **D._pattern_kw(p, prof),
                                   gate_variance=gate, return_gate=True)
        resp = q if resp is None else np.clip(resp * q, D.RESPONSE_RANGE[0], D.RESPONSE_RANGE[1]).astype(np.float32)
    unlit = None
    if p.unlit_fraction is not None and groups:
        unlit = D.unlit_of(np.stack([D._illumination_task(None, None, url, rows[gi]) for gi in groups]), p, prof)
    return resp, unlit
