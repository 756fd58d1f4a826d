"""zarr's internals, in this one module: the shard encoding lrscube writes and reads itself.

A frame of the exposure cube is one shard object per plane (zarr v3 ``sharding_indexed``: bytes +
blosc [+ crc32c] per inner chunk, the index with its crc32c at the end). ``cube.write_exposure``
encodes it and ``cube.read_frames`` decodes it here, one store ``set``/``get`` per shard, because
zarr's codec pipeline costs about twice the CPU per frame (benchmarks/README.md). The bytes are
zarr's own: zarr reads what this writes and the other way round (tests/storage/test_cube.py).

What it takes from zarr beyond the public API (tested on the zarr versions pyproject allows):
``zarr.core.sync.sync`` and ``_get_loop`` (run coroutines on zarr's event loop, waiting or not), ``zarr.core.buffer`` (the buffer
prototype of store ``get``/``set``), ``zarr.core.chunk_grids.RegularChunkGrid``,
``zarr.core.indexing.morton_order_iter`` (the order zarr lays chunks out in a shard) and the
sharding codec's ``MAX_UINT_64`` / ``ShardingCodecIndexLocation``. If a zarr release moves the
encoding internals, :data:`INTERNALS` is False, :func:`shard_layout` answers None for every array,
and every read and write goes through zarr's public ``a[region]`` API (slower, same bytes).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import struct
from dataclasses import dataclass

import google_crc32c
import numcodecs.blosc
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec
from zarr.core.sync import sync  # noqa: F401  (re-exported: the one way lrscube runs zarr's coroutines)

from .store import CorruptDataError

try:
    from zarr.codecs.sharding import MAX_UINT_64, ShardingCodecIndexLocation
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.chunk_grids import RegularChunkGrid
    from zarr.core.indexing import morton_order_iter
    INTERNALS = True
except ImportError:  # a zarr whose internals moved: zarr's public API does all the work
    INTERNALS = False


def buffer_prototype():
    """The buffer prototype zarr's store ``get`` takes (CPU buffers)."""
    return default_buffer_prototype() if INTERNALS else zarr.core.buffer.default_buffer_prototype()


async def together(coros) -> list:
    """Run coroutines concurrently on zarr's event loop (``sync(together([...]))``)."""
    return await asyncio.gather(*coros)


def start(coro) -> concurrent.futures.Future:
    """Run a coroutine on zarr's event loop without waiting for it (``.result()`` waits): I/O
    that overlaps the caller's work. Where zarr's loop cannot be had, it runs here and now."""
    try:
        from zarr.core.sync import _get_loop

        return asyncio.run_coroutine_threadsafe(coro, _get_loop())
    except ImportError:
        done: concurrent.futures.Future = concurrent.futures.Future()
        done.set_result(sync(coro))
        return done


class Unreadable(str):
    """Why the storage engine could not give a stored object (its text): what :func:`get_all`
    returns for it, so that a reader names the exposure instead of failing without a name."""


async def _get(path, proto):
    try:
        b = await path.get(prototype=proto)
    except CorruptDataError as e:  # the storage engine's damage (lrscube.storage.engine); OS errors go on up
        return Unreadable(e.reason)
    return None if b is None else b.to_bytes()


async def get_all(paths) -> list:
    """The bytes of each store path (``None`` where absent, :class:`Unreadable` where the
    storage engine cannot give them), fetched concurrently."""
    proto = buffer_prototype()
    return list(await asyncio.gather(*(_get(path, proto) for path in paths)))


@functools.lru_cache(maxsize=16)
def _chunk_order(chunks_per_shard: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """The order zarr puts a shard's chunks in (Morton order), so our shards match its bytes;
    any order is a valid shard (the index says where each chunk is)."""
    return tuple(tuple(int(i) for i in c) for c in morton_order_iter(chunks_per_shard))


@dataclass(frozen=True)
class _ShardLayout:
    """How one plane's shard is encoded, read from the array's own metadata: the sharding_indexed
    codec (inner chunks ``chunk``, index at the end) with bytes + blosc per chunk and the index
    encoded bytes little-endian + crc32c (zarr's default)."""

    dtype: np.dtype  # the array's dtype in the byte order of its BytesCodec
    fill: object  # fill value (a numpy scalar of the array's dtype)
    chunk: tuple[int, int]  # inner chunk (y, x); along time 1
    chunks_per_shard: tuple[int, int, int]
    cname: bytes
    clevel: int
    shuffle: int
    blocksize: int
    typesize: int
    crc: bool = False  # a crc32c after each chunk (format 3)

    def fits(self, a: zarr.Array, index: int, y0: int, x0: int, data) -> bool:
        """Is this write one the encoder handles: a non-empty 2-D footprint inside the frame of
        an existing slot (anything else goes to zarr, which writes or raises as it always did)."""
        _, ny_a, nx_a = a.shape
        shape = getattr(data, "shape", ())
        return (len(shape) == 2 and 0 <= index < a.shape[0] and shape[0] > 0 and shape[1] > 0
                and 0 <= y0 and y0 + shape[0] <= ny_a and 0 <= x0 and x0 + shape[1] <= nx_a)

    def encode(self, data, y0: int, x0: int) -> bytes:
        """The shard object of a slot whose footprint ``data`` starts at row ``y0``, column ``x0``.

        Only the inner chunks the footprint overlaps are stored; inside them, pixels outside the
        footprint hold the fill value (what zarr writes into a chunk it creates). The others are
        absent: index entry (2**64-1, 2**64-1), read back as the fill value.
        """
        data = np.asarray(data)
        ny, nx = data.shape
        cy, cx = self.chunk
        index = np.full((*self.chunks_per_shard, 2), MAX_UINT_64, dtype="<u8")
        buf = np.empty((cy, cx), dtype=self.dtype)  # one chunk, reused (blosc copies it out)
        parts: list[bytes] = []
        offset = 0
        for coords in _chunk_order(self.chunks_per_shard):
            _, iy, ix = coords
            ys, xs = iy * cy, ix * cx
            a0, a1 = max(y0, ys), min(y0 + ny, ys + cy)
            b0, b1 = max(x0, xs), min(x0 + nx, xs + cx)
            if a0 >= a1 or b0 >= b1:
                continue  # not touched by the footprint: absent from the shard
            if (a1 - a0, b1 - b0) != (cy, cx):
                buf.fill(self.fill)
            # numpy casts (unsafe, as zarr's astype) and byte-swaps to the stored dtype
            buf[a0 - ys:a1 - ys, b0 - xs:b1 - xs] = data[a0 - y0:a1 - y0, b0 - x0:b1 - x0]
            # numcodecs honours numcodecs.blosc.use_threads, which zarr sets to False on import:
            # blosc_compress_ctx with one thread, the same call zarr's BloscCodec makes
            c = numcodecs.blosc.compress(buf, self.cname, self.clevel, self.shuffle,
                                         self.blocksize, self.typesize)
            parts.append(c)
            n = len(c)
            if self.crc:  # zarr's crc32c codec: the checksum of the compressed bytes, little-endian
                parts.append(struct.pack("<I", google_crc32c.value(c)))
                n += 4
            index[coords] = (offset, n)
            offset += n
        raw = index.tobytes()
        parts.append(raw)
        parts.append(struct.pack("<I", google_crc32c.value(raw)))
        return b"".join(parts)

    def check(self, blob) -> list[tuple[tuple[int, int] | None, str]]:
        """The damage in a shard object's bytes, without decoding its pixels: ``(chunk (y, x) or
        None for the index, what)`` per damaged part (empty: intact). Format 3 checks each
        chunk's crc32c; format 2 chunks (no checksum) are decompressed to see that they decode."""
        try:
            index = self._index(blob)
        except CorruptDataError as e:
            return [(None, e.reason)]
        bad = []
        mv = memoryview(blob)
        for coords in np.ndindex(*self.chunks_per_shard):
            off, length = (int(v) for v in index[coords])
            if off == MAX_UINT_64:
                continue
            try:
                self._chunk(mv, off, length)
            except CorruptDataError as e:
                bad.append(((coords[1], coords[2]), e.reason))
        return bad

    def _index(self, blob) -> np.ndarray:
        mv = memoryview(blob)
        n_index = int(np.prod(self.chunks_per_shard)) * 16
        if len(mv) < n_index + 4:
            raise CorruptDataError(f"shard of {len(mv)} bytes, shorter than its index")
        raw = mv[len(mv) - n_index - 4:len(mv) - 4]
        if struct.unpack("<I", mv[len(mv) - 4:])[0] != google_crc32c.value(bytes(raw)):
            raise CorruptDataError("shard index checksum mismatch")
        index = np.frombuffer(raw, dtype="<u8").reshape(*self.chunks_per_shard, 2)
        present = index[..., 0] != MAX_UINT_64
        if present.any() and int((index[..., 0][present] + index[..., 1][present]).max()) > len(mv) - n_index - 4:
            raise CorruptDataError("shard index points past the shard's data")
        return index

    def _chunk(self, mv, off: int, length: int) -> np.ndarray:
        """One chunk's pixels, its checksum checked (format 3); a chunk that does not decode to
        a whole chunk is corrupt too."""
        data = mv[off:off + length]
        if self.crc:
            if length < 4 or struct.unpack("<I", data[length - 4:])[0] != google_crc32c.value(bytes(data[:length - 4])):
                raise CorruptDataError("chunk checksum (crc32c) mismatch")
            data = data[:length - 4]
        cy, cx = self.chunk
        try:
            raw = numcodecs.blosc.decompress(data)
        except Exception as e:  # blosc raises RuntimeError (or worse) on damaged bytes
            raise CorruptDataError(f"chunk does not decompress ({type(e).__name__}: {e})") from None
        if len(raw) != cy * cx * self.dtype.itemsize:
            raise CorruptDataError(f"chunk decompresses to {len(raw)} bytes, not {cy * cx * self.dtype.itemsize}")
        return np.frombuffer(raw, dtype=self.dtype).reshape(cy, cx)

    def decode_into(self, blob, frame: np.ndarray, region: tuple[slice, slice] | None = None) -> None:
        """Fill ``frame`` (the array's (y, x), native byte order) from a shard object's bytes
        (``None``: no shard stored, all fill value). The index's crc32c and (format 3) each
        chunk's are checked, as zarr does: damage raises :class:`CorruptDataError` (its
        ``chunk`` says which), never wrong numbers. ``region`` (rows, columns of the array,
        slices with steps of 1): ``frame`` is that part only, and only the chunks under it are
        decoded."""
        if blob is None:
            frame.fill(self.fill)
            return
        mv = memoryview(blob)
        index = self._index(blob)
        cy, cx = self.chunk
        ry, rx = region if region is not None else (slice(0, frame.shape[0]), slice(0, frame.shape[1]))
        y0, x0 = ry.start, rx.start
        ny, nx = ry.stop, rx.stop
        for coords in np.ndindex(*self.chunks_per_shard):
            _, iy, ix = coords
            ys, xs = iy * cy, ix * cx
            ye, xe = min(ys + cy, ny), min(xs + cx, nx)
            ya, xa = max(ys, y0), max(xs, x0)  # the part of the chunk inside the region
            if ya >= ye or xa >= xe:
                continue
            out = frame[ya - y0:ye - y0, xa - x0:xe - x0]
            off, length = (int(v) for v in index[coords])
            if off == MAX_UINT_64:
                out[...] = self.fill
                continue
            try:
                chunk = self._chunk(mv, off, length)
            except CorruptDataError as e:
                e.chunk = (iy, ix)
                raise
            out[...] = chunk[ya - ys:ye - ys, xa - xs:xe - xs]


_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


def shard_layout(a: zarr.Array) -> _ShardLayout | None:
    """The array's shard encoding if lrscube can write (:func:`write_exposure`) and read
    (:func:`read_frames`) its shards itself, else ``None`` (zarr does it).

    Required: zarr v3, C order, shards of one slot each spanning the whole frame (so a slot's
    write is one whole new shard), codecs exactly ``sharding_indexed(bytes, blosc[, crc32c])``
    with the index ``bytes(little) + crc32c`` at the end, a plain numeric dtype.
    """
    if not INTERNALS:
        return None
    md = a.metadata
    if md.zarr_format != 3 or a.order != "C" or len(md.codecs) != 1 or a.ndim != 3:
        return None
    sc = md.codecs[0]
    if not isinstance(sc, ShardingCodec) or not isinstance(md.chunk_grid, RegularChunkGrid):
        return None
    shard = tuple(md.chunk_grid.chunk_shape)
    chunk = tuple(sc.chunk_shape)
    if (shard[0] != 1 or shard[1] < a.shape[1] or shard[2] < a.shape[2] or len(chunk) != 3
            or chunk[0] != 1 or shard[1] % chunk[1] or shard[2] % chunk[2]):
        return None
    if sc.index_location != ShardingCodecIndexLocation.end:
        return None
    ic = tuple(sc.index_codecs)
    if not (len(ic) == 2 and type(ic[0]) is BytesCodec and ic[0].endian is not None
            and ic[0].endian.value == "little" and type(ic[1]) is Crc32cCodec):
        return None
    cc = tuple(sc.codecs)
    crc = len(cc) == 3 and type(cc[2]) is Crc32cCodec
    if not (len(cc) in (2, 3) and type(cc[0]) is BytesCodec and type(cc[1]) is BloscCodec and (len(cc) == 2 or crc)):
        return None
    bytes_codec, blosc = cc[:2]
    if getattr(blosc, "_tunable_attrs", None):  # not evolved to the dtype yet: let zarr do it
        return None
    dtype = np.dtype(a.dtype)
    if dtype.kind not in "fiu":
        return None
    if dtype.itemsize > 1:
        if bytes_codec.endian is None:
            return None
        dtype = dtype.newbyteorder("<" if bytes_codec.endian.value == "little" else ">")
    return _ShardLayout(
        dtype=dtype, fill=np.asarray(md.fill_value, dtype=dtype)[()],
        chunk=(chunk[1], chunk[2]), chunks_per_shard=(1, shard[1] // chunk[1], shard[2] // chunk[2]),
        cname=blosc.cname.value.encode(), clevel=int(blosc.clevel), shuffle=_SHUFFLE[blosc.shuffle.value],
        blocksize=int(blosc.blocksize), typesize=int(blosc.typesize), crc=crc)
