"""Detect's scratch store between its two stages: one object per stage-1 batch.

Stage 1 analyses whole frames, a batch of B exposures per task; stage 2 analyses one tile of
pixels over all N exposures per task. In between, each stage-1 task writes ONE object holding,
for every stage-2 tile, that tile's residual ``r``, noise ``s``, ``sky`` (float32) and trace
bits (uint8) of its B exposures, each tile compressed on its own; a stage-2 task reads its
tile's byte range from each of the N/B objects and stacks them along time. So a run makes N/B
objects, linear in N (an object per batch and tile would make (N/B) x tiles, and the tiles grow
in number with N as they shrink to keep stage 2's memory flat: N^2/B). Objects are written
whole and read by byte range through fsspec, so one code path serves a local folder and an
object store (``STORE/detect/RUN/work``, removed after the run).

Layout of an object (little-endian): a header (magic ``LRSW``, format 1, B, number of tiles
T), an index of T entries (the tile's first row and column, the start and end of its bytes in
the object, and their crc32c), then the tiles. A tile: a 32-byte header (B, ty, tx, length of
the float part), ``r, s, sky`` stacked as one (3, B, ty, tx) float32 array compressed with
blosc lz4 and byte shuffle (as the cube's shards), then the trace bits (B, ty, tx) with blosc
lz4. A reader first fetches the first ``INDEX_PREFIX`` bytes (the header and an index of up to
~1600 tiles; the rest of a longer index with a second read), keeps the indexes of the objects
it has read (per process, for the current run only: ``create`` writes a token ``RUN`` that
each stage-2 task reads once), then fetches one byte range per tile and checks its crc32c
(blosc carries no checksum: a damaged tile would otherwise decode to wrong numbers).

Why not a zarr array per plane: zarr's per-chunk machinery cost about 1.5 ms per chunk written
or read against 0.07 ms to decode one (benchmarks/README.md, "Detection").
"""

from __future__ import annotations

import struct
import uuid

import google_crc32c
import numcodecs
import numpy as np

from . import store as st

_HEADER = struct.Struct("<4Q")  # a tile: B, ty, tx, bytes of the float part
_OBJECT = struct.Struct("<4sIQQ")  # an object: magic, format, B, tiles
_ENTRY = np.dtype([("ya", "<u8"), ("xa", "<u8"), ("start", "<u8"), ("end", "<u8"), ("crc", "<u8")])
_MAGIC = b"LRSW"
_FORMAT = 1
#: bytes fetched first from an object: its header and (most often all of) its index
INDEX_PREFIX = 65536
#: the indexes this process has read, of one run's scratch folder: {start: {(ya, xa): (start, end, crc)}}
_INDEX: dict = {"run": None, "objects": {}, "entries": 0}
#: at most this many index entries are kept (~100 bytes each); then they are read again
_INDEX_MAX_ENTRIES = 2_000_000
_FLOATS = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
_BITS = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.NOSHUFFLE)


def create(work: str) -> None:
    """Make the (empty) scratch folder, with a token naming this run (``RUN``): readers key the
    indexes they keep by it, so a folder made again at the same path is read afresh."""
    fs, path = st.fs_and_path(work)
    fs.makedirs(path, exist_ok=True)
    fs.pipe_file(f"{path.rstrip('/')}/RUN", uuid.uuid4().hex.encode())


def _key(path: str, start: int) -> str:
    return f"{path.rstrip('/')}/{start:08d}"


def encode(r: np.ndarray, s: np.ndarray, sky: np.ndarray, bits: np.ndarray) -> bytes:
    """One tile's bytes from (B, ty, tx) arrays."""
    b, ty, tx = r.shape
    floats = _FLOATS.encode(np.ascontiguousarray(np.stack([r, s, sky]), dtype=np.float32))
    return _HEADER.pack(b, ty, tx, len(floats)) + floats + _BITS.encode(np.ascontiguousarray(bits, dtype=np.uint8))


def decode(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(r, s, sky, bits) of one tile."""
    b, ty, tx, nf = _HEADER.unpack_from(data)
    h = _HEADER.size
    floats = np.frombuffer(numcodecs.blosc.decompress(data[h:h + nf]), np.float32).reshape(3, b, ty, tx)
    bits = np.frombuffer(numcodecs.blosc.decompress(data[h + nf:]), np.uint8).reshape(b, ty, tx)
    return floats[0], floats[1], floats[2], bits


def write_batch(work: str, start: int, spans, r, s, sky, bits) -> int:
    """Stage 1: write a batch's (B, y, x) arrays as one object, a tile per ``(ya, yb, xa, xb)``
    of ``spans``; returns the number of objects written (1)."""
    fs, path = st.fs_and_path(work)
    tiles = []
    for ya, yb, xa, xb in spans:
        sl = (slice(None), slice(ya, yb), slice(xa, xb))
        tiles.append(encode(r[sl], s[sl], sky[sl], bits[sl]))
    index = np.zeros(len(spans), _ENTRY)
    pos = _OBJECT.size + index.nbytes
    for k, ((ya, _, xa, _), t) in enumerate(zip(spans, tiles)):
        index[k] = (ya, xa, pos, pos + len(t), google_crc32c.value(t))
        pos += len(t)
    head = _OBJECT.pack(_MAGIC, _FORMAT, int(r.shape[0]), len(spans))
    key = _key(path, start)
    try:
        fs.pipe_file(key, b"".join([head, index.tobytes(), *tiles]))
    except OSError as e:  # disk full, a file-size limit, permissions: name the object
        raise st.StoreError(f"{key}: cannot write detect's scratch: {e.strerror or e}") from None
    return 1


def _index(fs, key: str, run: tuple, start: int) -> dict:
    """{(ya, xa): (start, end, crc)} of the object of batch ``start``, read once per process and run."""
    if _INDEX["run"] != run or _INDEX["entries"] > _INDEX_MAX_ENTRIES:
        _INDEX.update(run=run, objects={}, entries=0)  # another run's scratch folder, or too many
    got = _INDEX["objects"].get(start)
    if got is not None:
        return got
    # start= and end= by keyword: s3fs takes a version id as its second positional argument
    head = fs.cat_file(key, start=0, end=INDEX_PREFIX)
    if len(head) < _OBJECT.size:
        raise st.StoreError(f"{key}: detect's work-store object is truncated ({len(head)} bytes); run detect again")
    magic, fmt, _, n = _OBJECT.unpack_from(head)
    if magic != _MAGIC or fmt != _FORMAT:
        raise st.StoreError(f"{key}: not a work-store object of format {_FORMAT}; run detect again")
    end = _OBJECT.size + n * _ENTRY.itemsize
    if end > len(head):
        head = head + fs.cat_file(key, start=len(head), end=end)
    ix = np.frombuffer(head[_OBJECT.size:end], _ENTRY)
    got = {(int(e["ya"]), int(e["xa"])): (int(e["start"]), int(e["end"]), int(e["crc"])) for e in ix}
    _INDEX["objects"][start] = got
    _INDEX["entries"] += len(got)
    return got


def read_tile(work: str, starts, ya: int, xa: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stage 2: one tile over all exposures, the batches starting at ``starts`` stacked in order."""
    fs, path = st.fs_and_path(work)
    run = (work, fs.cat_file(f"{path.rstrip('/')}/RUN"))
    parts = []
    for a in starts:
        key = _key(path, a)
        lo, hi, crc = _index(fs, key, run, a)[(int(ya), int(xa))]
        data = fs.cat_file(key, start=lo, end=hi)
        if len(data) != hi - lo or google_crc32c.value(data) != crc:
            raise st.StoreError(f"{key}: detect's work-store tile ({ya}, {xa}) fails its checksum "
                                "(damaged scratch); run detect again")
        parts.append(decode(data))
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(4))
