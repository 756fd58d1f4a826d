"""Detect's scratch store between its two stages: one object per stage-1 batch and stage-2 tile.

Stage 1 analyses whole frames, a batch of B exposures per task; stage 2 analyses one tile of
pixels over all N exposures per task. In between, each stage-1 task writes, for every stage-2
tile, one object holding that tile's residual ``r``, noise ``s``, ``sky`` (float32) and trace
bits (uint8) of its B exposures; a stage-2 task reads the N/B objects of its tile and stacks
them along time. Objects are written and read whole through fsspec, so one code path serves a
local folder and an object store (``STORE/detect/RUN/work``, removed after the run).

Layout of an object: a 32-byte little-endian header (B, ty, tx, length of the float part),
then ``r, s, sky`` stacked as one (3, B, ty, tx) float32 array compressed with blosc lz4 and
byte shuffle (as the cube's shards), then the trace bits (B, ty, tx) with blosc lz4.

Why not a zarr array per plane (what detect used before): zarr's per-chunk machinery cost
about 1.5 ms per chunk written or read against 0.07 ms to decode one, and with four planes a
chunk per plane, stage 1 wrote and stage 2 read 4 N/B x tiles chunks: at N = 1600, 153,600 of
each way, most of detect's time beyond the numerics (benchmarks/README.md, "Detection").
"""

from __future__ import annotations

import struct

import numcodecs
import numpy as np

from . import store as st

_HEADER = struct.Struct("<4Q")
_FLOATS = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
_BITS = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.NOSHUFFLE)


def create(work: str) -> None:
    """Make the (empty) scratch folder."""
    fs, path = st.fs_and_path(work)
    fs.makedirs(path, exist_ok=True)


def _key(path: str, start: int, ya: int, xa: int) -> str:
    return f"{path.rstrip('/')}/{start:08d}_{ya:05d}_{xa:05d}"


def encode(r: np.ndarray, s: np.ndarray, sky: np.ndarray, bits: np.ndarray) -> bytes:
    """One object's bytes from (B, ty, tx) arrays."""
    b, ty, tx = r.shape
    floats = _FLOATS.encode(np.ascontiguousarray(np.stack([r, s, sky]), dtype=np.float32))
    return _HEADER.pack(b, ty, tx, len(floats)) + floats + _BITS.encode(np.ascontiguousarray(bits, dtype=np.uint8))


def decode(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(r, s, sky, bits) of one object."""
    b, ty, tx, nf = _HEADER.unpack_from(data)
    h = _HEADER.size
    floats = np.frombuffer(numcodecs.blosc.decompress(data[h:h + nf]), np.float32).reshape(3, b, ty, tx)
    bits = np.frombuffer(numcodecs.blosc.decompress(data[h + nf:]), np.uint8).reshape(b, ty, tx)
    return floats[0], floats[1], floats[2], bits


def write_batch(work: str, start: int, spans, r, s, sky, bits) -> int:
    """Stage 1: write a batch's (B, y, x) arrays, one object per tile ``(ya, yb, xa, xb)`` of
    ``spans``; returns the number of objects."""
    fs, path = st.fs_and_path(work)
    for ya, yb, xa, xb in spans:
        sl = (slice(None), slice(ya, yb), slice(xa, xb))
        fs.pipe_file(_key(path, start, ya, xa), encode(r[sl], s[sl], sky[sl], bits[sl]))
    return len(spans)


def read_tile(work: str, starts, ya: int, xa: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stage 2: one tile over all exposures, the batches starting at ``starts`` stacked in order."""
    fs, path = st.fs_and_path(work)
    parts = [decode(fs.cat_file(_key(path, a, ya, xa))) for a in starts]
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(4))
