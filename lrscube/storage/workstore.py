"""Detect's scratch store between its two stages: one object per stage-1 batch.

Stage 1 analyses whole frames, a batch of B exposures per task; stage 2 analyses one tile of
pixels over all N exposures per task. In between, each stage-1 task writes ONE object holding,
for every stage-2 tile, that tile's residual ``r``, noise ``s``, ``sky`` (float32) and trace
bits (uint8) of its B exposures, and the scatter between integrations (float16, the cube's
optional ``intscat`` plane calibrated per exposure; absent where no exposure of the batch has
it), each tile compressed on its own; a stage-2 task reads its
tile's byte range from each of the N/B objects and stacks them along time. So a run makes N/B
objects, linear in N (an object per batch and tile would make (N/B) x tiles, and the tiles grow
in number with N as they shrink to keep stage 2's memory flat: N^2/B). Objects are written
whole and read by byte range through fsspec, so one code path serves a local folder and an
object store (``STORE/detect/RUN/work``, removed after the run).

Layout of an object (little-endian): a header (magic ``LRSW``, format 4, B, number of tiles
T), an index of T entries (the tile's first row and column, the start and end of its bytes in
the object, and their crc32c), then the tiles. A tile: a header (B, ty, tx, codec, the
precision ``delta``, the byte lengths of its six parts), then its parts, each compressed with
blosc (zstd level 1, byte shuffle) on its own. A reader first fetches the first
``INDEX_PREFIX`` bytes (the header and an index of up to ~1600 tiles; the rest of a longer index
with a second read), keeps the indexes of the objects it has read (per process, for the current
run only: ``create`` writes a token ``RUN`` that each stage-2 task reads once), then fetches one
byte range per tile and checks its crc32c (blosc carries no checksum: a damaged tile would
otherwise decode to wrong numbers).

Two tile codecs. ``LOSSLESS``: ``r, s, sky`` as float32, then the trace bits. ``QUANTISED``
(what detect writes; ``precision`` = ``detection.work_precision_sigma``): ``s`` as
``round(256 log2 s)`` in int16 (within 0.14 % of itself), ``r`` and ``sky`` as whole multiples
of ``delta`` times the pixel's own (decoded) ``s`` in int16 / int32, so each is within
``delta / 2`` of its noise; a pixel whose ``s`` is far above its tile's (more than 64 times the
median: an ERR that marks a value as unusable) or whose multiple does not fit keeps its exact
``r`` and ``sky`` (a part of its own). Stage 2 judges residuals in units of ``s``, so an error
of 1/64 of a pixel's noise changes no statistic it computes by more than that. The codes are
then packed losslessly (:func:`pack_codes`), each part in the narrowest unsigned type that
holds it (its item size in its first byte): the residual codes zigzagged (small magnitudes to
small numbers whatever their sign); the noise codes differenced along time (a pixel's noise
changes little between exposures); the sky codes less their prediction from the pixel above
(the sky is smooth along the columns, but each code counts its own pixel's noise steps, so the
prediction rescales the code above by the ratio of the two steps, in integers, and decoding
runs row by row), zigzagged. On full frames of simulated stores that is 2.0-2.4 bytes per pixel
and exposure (the scatter between integrations included) against 2.9-3.3 for the codes
compressed as they are and 6.0-6.2 for the cube's sci, err and dq (benchmarks/README.md, "Work
store size"). A tile whose ``s`` is negative or beyond what int16 holds is written
``LOSSLESS``.

Why not a zarr array per plane: zarr's per-chunk machinery cost about 1.5 ms per chunk written
or read against 0.07 ms to decode one (benchmarks/README.md, "Detection").
"""

from __future__ import annotations

import functools
import struct
import uuid

import google_crc32c
import numba
import numcodecs
import numpy as np

from . import store as st

_HEADER = struct.Struct("<4Qd6Q")  # a tile: B, ty, tx, codec, delta, byte lengths of its 6 parts
_OBJECT = struct.Struct("<4sIQQ")  # an object: magic, format, B, tiles
_ENTRY = np.dtype([("ya", "<u8"), ("xa", "<u8"), ("start", "<u8"), ("end", "<u8"), ("crc", "<u8")])
_MAGIC = b"LRSW"
_FORMAT = 4
LOSSLESS, QUANTISED = 1, 2
#: bytes fetched first from an object: its header and (most often all of) its index
INDEX_PREFIX = 65536
#: the indexes this process has read, of one run's scratch folder: {start: {(ya, xa): (start, end, crc)}}
_INDEX: dict = {"run": None, "objects": {}, "entries": 0}
#: at most this many index entries are kept (~100 bytes each); then they are read again
_INDEX_MAX_ENTRIES = 2_000_000
_SHUFFLED = numcodecs.Blosc(cname="zstd", clevel=1, shuffle=numcodecs.Blosc.SHUFFLE)
_BITS = numcodecs.Blosc(cname="zstd", clevel=1, shuffle=numcodecs.Blosc.NOSHUFFLE)
#: ``s`` is kept as round(LOG_STEPS * log2 s): a step of 2**(1/256), 0.27 %
LOG_STEPS = 256
_NAN16, _ZERO16, _INF16 = -32768, -32767, 32767
_NAN32 = np.iinfo(np.int32).min
#: a pixel whose ``s`` is more than this times its tile's median keeps exact ``r`` and ``sky``
EXACT_ABOVE_MEDIAN_S = 64.0
_EXCEPTIONS = np.dtype([("i", "<u4"), ("r", "<f4"), ("sky", "<f4")])


def quantise_noise(s: np.ndarray) -> np.ndarray | None:
    """``s`` as int16 ``round(LOG_STEPS * log2 s)`` (NaN, 0 and +inf as codes of their own);
    None when some ``s`` is negative or outside what int16 holds."""
    s = np.asarray(s, np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.rint(np.log2(s) * LOG_STEPS)
    normal = np.isfinite(q)
    if (s < 0).any() or (np.abs(q[normal]) >= _INF16).any():
        return None
    out = np.where(normal, q, 0).astype(np.int16)
    out[np.isnan(s)] = _NAN16
    out[s == 0] = _ZERO16
    out[np.isposinf(s)] = _INF16
    return out


@functools.lru_cache(maxsize=1)
def _noise_table() -> np.ndarray:
    """The ``s`` of each of the 65,536 int16 codes, index ``code + 32768``: numpy's
    ``exp2(code / LOG_STEPS)`` in float32, NaN, 0 and +inf for their codes."""
    q = np.arange(-32768, 32768).astype(np.int16)
    s = np.exp2(q.astype(np.float32) / LOG_STEPS)
    s[q == _NAN16] = np.nan
    s[q == _ZERO16] = 0.0
    s[q == _INF16] = np.inf
    s.flags.writeable = False
    return s


def noise_of(q: np.ndarray) -> np.ndarray:
    """The ``s`` that :func:`quantise_noise` codes (float32), from a table of every code (one
    gather instead of an ``exp2`` and three masks per value)."""
    return _noise_table()[np.asarray(q, np.int16).astype(np.intp) + 32768]


def _positive_median(qs: np.ndarray) -> np.float32:
    """``np.nanmedian`` of the finite positive ``noise_of(qs)``, from the codes: the noise grows
    with its code, so its order statistics are those of the codes, found by counting them; the
    mean of the middle two in float32, as numpy takes it (NaN when there is none)."""
    counts = np.bincount(np.asarray(qs, np.int16).astype(np.intp).ravel() + 32768, minlength=65536)
    counts[[_NAN16 + 32768, _ZERO16 + 32768, _INF16 + 32768]] = 0
    n = int(counts.sum())
    if n == 0:
        return np.float32(np.nan)
    c = np.cumsum(counts)
    table = _noise_table()
    hi = table[np.searchsorted(c, n // 2 + 1)]  # the (n // 2)-th smallest, from 0
    if n % 2:
        return hi
    lo = table[np.searchsorted(c, n // 2)]
    return (np.float32(lo) + np.float32(hi)) / np.float32(2)


def quantise(r, s, sky, delta: float):
    """(r as int16, s code, sky as int32, exceptions) of one tile, each of ``r`` and ``sky``
    within ``delta / 2`` of its pixel's noise; None where the tile must stay lossless."""
    qs = quantise_noise(s)
    if qs is None:
        return None
    sd = noise_of(qs)
    r, sky = np.asarray(r, np.float32), np.asarray(sky, np.float32)
    med = _positive_median(qs)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        step = sd * np.float32(delta)
        zr = np.divide(r, step)
        np.rint(zr, out=zr)
        zk = np.divide(sky, step)
        np.rint(zk, out=zk)
        # kept exact: a value (finite or not) whose step is unusable (not finite and positive, or
        # the noise far above the tile's), a multiple beyond its integer type, an infinity
        exact = ~((step > 0) & (step < np.inf))
        exact |= sd > EXACT_ABOVE_MEDIAN_S * med
        nan_r, nan_k = np.isnan(r), np.isnan(sky)
        exact &= ~(nan_r & nan_k)
        exact |= np.abs(zr) >= _INF16  # NaN (a NaN value) compares False
        exact |= np.abs(zk) >= -(_NAN32 + 1)
        exact |= np.isinf(r)
        exact |= np.isinf(sky)
    zr[exact | nan_r] = _NAN16
    qr = zr.astype(np.int16)
    zk[exact | nan_k] = _NAN32
    qk = zk.astype(np.int32)
    i = np.flatnonzero(exact)
    exc = np.empty(i.size, _EXCEPTIONS)
    exc["i"], exc["r"], exc["sky"] = i, r.ravel()[i], sky.ravel()[i]
    return qr, qs, qk, exc


def dequantise(qr, qs, qk, exc, delta: float):
    """``r, s, sky`` (float32) from :func:`quantise`'s parts."""
    s = noise_of(qs)
    step = s * np.float32(delta)
    with np.errstate(invalid="ignore"):
        r = np.where(qr == _NAN16, np.float32(np.nan), qr * step).astype(np.float32)
        sky = np.where(qk == _NAN32, np.float32(np.nan), qk * step).astype(np.float32)
    r.ravel()[exc["i"]] = exc["r"]
    sky.ravel()[exc["i"]] = exc["sky"]
    return r, s, sky


def create(work: str) -> None:
    """Make the (empty) scratch folder, with a token naming this run (``RUN``): readers key the
    indexes they keep by it, so a folder made again at the same path is read afresh."""
    fs, path = st.fs_and_path(work)
    fs.makedirs(path, exist_ok=True)
    fs.pipe_file(f"{path.rstrip('/')}/RUN", uuid.uuid4().hex.encode())


def _key(path: str, start: int) -> str:
    return f"{path.rstrip('/')}/{start:08d}"


def zigzag(v: np.ndarray) -> np.ndarray:
    """Signed integers as unsigned, small magnitudes to small codes (0, -1, 1, -2 ... to 0, 1, 2,
    3 ...): the high bytes of a residual near zero are then zero whatever its sign, which the
    byte shuffle and zstd take to almost nothing (two's complement spends a byte of 0x00 or 0xff)."""
    v = np.asarray(v)
    bits = 8 * v.dtype.itemsize
    u = np.dtype(f"u{v.dtype.itemsize}")
    return ((v << 1) ^ (v >> (bits - 1))).view(u)


def unzigzag(u: np.ndarray) -> np.ndarray:
    """The inverse of :func:`zigzag`."""
    u = np.asarray(u)
    i = np.dtype(f"i{u.dtype.itemsize}")
    return ((u >> 1) ^ -(u & 1)).view(i)


def _pack(u: np.ndarray, top: int | None = None) -> bytes:
    """Unsigned codes as (their item size, one byte) + blosc of them in the narrowest unsigned
    type that holds ``top``, their largest value (found here when None)."""
    if top is None:
        top = int(u.max()) if u.size else 0
    narrow = next(t for t in (np.uint8, np.uint16, np.uint32, np.uint64) if top <= np.iinfo(t).max)
    u = np.ascontiguousarray(u.astype(narrow, copy=False))
    return bytes([u.dtype.itemsize]) + _SHUFFLED.encode(u)


def _unpack(data: bytes, shape) -> np.ndarray:
    return np.frombuffer(numcodecs.blosc.decompress(data[1:]), np.dtype(f"<u{data[0]}")).reshape(shape)


#: the sky code's predictor scales the code above by the ratio of the two pixels' noise steps,
#: ``2**(dq / LOG_STEPS)`` in 16-bit fixed point, for each difference ``dq`` of two int16 noise
#: codes (index ``dq + 65535``); 0 beyond a factor 256 (a prediction of 0)
_RATIO_SPAN = 8 * LOG_STEPS
_RATIO = np.zeros(2 * 65535 + 1, np.int64)
_RATIO[65535 - _RATIO_SPAN:65535 + _RATIO_SPAN + 1] = np.rint(
    np.exp2(np.arange(-_RATIO_SPAN, _RATIO_SPAN + 1) / LOG_STEPS) * 65536).astype(np.int64)


def _sky_ratios(qs: np.ndarray) -> np.ndarray:
    """int64 (B, ty, tx): for each pixel below the first row, the ratio of the noise step of the
    pixel above to its own (:data:`_RATIO`); 0 in the first row. The codes of NaN, zero and
    infinite noise take part as any other: the predictor need only be the same on both sides."""
    dq = np.full(qs.shape, -65535, np.int32)
    np.subtract(qs[:, :-1], qs[:, 1:], out=dq[:, 1:], dtype=np.int32)
    dq += 65535
    return _RATIO[dq]


@numba.njit(cache=True, nogil=True, inline="always")
def _zigzag(v, mask):
    """:func:`zigzag` of one code given in int64, within ``mask`` (its integer type's bits)."""
    return ((v << 1) ^ (v >> 63)) & mask


@numba.njit(cache=True, nogil=True)
def _zigzag_codes(qr, qs, qk, ratio, zr, zs, zk):
    """:func:`pack_codes_numpy`'s zigzagged differences in one compiled pass, into ``zr, zs``
    (uint16) and ``zk`` (uint32); returns their largest values."""
    b, ty, tx = qr.shape
    mr = ms = mk = 0
    for t in range(b):
        for y in range(ty):
            for x in range(tx):
                z = _zigzag(np.int64(qr[t, y, x]), 0xFFFF)
                zr[t, y, x] = z
                mr = max(mr, z)
                q = np.int64(qs[t, y, x])
                d = np.int64(np.int16(q - np.int64(qs[t - 1, y, x]))) if t > 0 else q  # int16 differences wrap
                z = _zigzag(d, 0xFFFF)
                zs[t, y, x] = z
                ms = max(ms, z)
                pred = 0
                if y > 0:
                    pred = (np.int64(qk[t, y - 1, x]) * ratio[np.int64(qs[t, y - 1, x]) - q + 65535] + 32768) >> 16
                d = np.int64(np.int32(np.int64(qk[t, y, x]) - pred))  # wraps in int32
                z = _zigzag(d, 0xFFFFFFFF)
                zk[t, y, x] = z
                mk = max(mk, z)
    return mr, ms, mk


def pack_codes(qr, qs, qk) -> list[bytes]:
    """:func:`quantise`'s codes as three compact parts, losslessly: :func:`pack_codes_numpy`'s
    bytes from one compiled pass."""
    qr, qs, qk = (np.ascontiguousarray(v) for v in (qr, qs, qk))
    zr, zs, zk = np.empty(qr.shape, np.uint16), np.empty(qr.shape, np.uint16), np.empty(qr.shape, np.uint32)
    tops = _zigzag_codes(qr, qs, qk, _RATIO, zr, zs, zk) if qr.size else (0, 0, 0)
    return [_pack(z, int(top)) for z, top in zip((zr, zs, zk), tops)]


def pack_codes_numpy(qr, qs, qk) -> list[bytes]:
    """:func:`quantise`'s codes as three compact parts, losslessly: the residual codes zigzagged;
    the noise codes differenced along time (a pixel's noise changes little from one exposure to
    the next); the sky codes less their prediction from the pixel above (the sky is smooth along
    the columns; each code is a multiple of its own pixel's noise step, so the prediction rescales
    the code above to this pixel's step), zigzagged. Differences wrap around in the codes' own
    integer type, as the sums that undo them do."""
    ds = np.diff(qs, axis=0, prepend=np.int16(0))
    # the prediction: the code above times the ratio of the steps, in integers (the encoder and
    # the decoder get the same bits; 0 where the ratio is); any code above predicts, the NaN code
    # of an exact value included: a worse guess there costs bytes, never a value
    pred = np.zeros(qk.shape, np.int64)
    np.multiply(qk[:, :-1], _sky_ratios(qs)[:, 1:], out=pred[:, 1:])
    pred += 32768
    pred >>= 16
    dk = np.subtract(qk, pred, dtype=np.int64).astype(np.int32)
    return [_pack(zigzag(qr)), _pack(zigzag(ds)), _pack(zigzag(dk))]


def unpack_codes(parts, shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(qr int16, qs int16, qk int32) from :func:`pack_codes`'s parts; the sky codes row by row
    (each row's prediction needs the row above decoded)."""
    qr = unzigzag(_unpack(parts[0], shape).astype(np.uint16))
    qs = unzigzag(_unpack(parts[1], shape).astype(np.uint16))
    for i in range(1, shape[0]):  # faster than cumsum along the first axis
        qs[i] += qs[i - 1]
    k = unzigzag(_unpack(parts[2], shape).astype(np.uint32))
    ratio = _sky_ratios(qs)
    row = np.empty((shape[0], shape[2]), np.int64)
    for y in range(1, shape[1]):
        np.multiply(k[:, y - 1], ratio[:, y], out=row)
        row += 32768
        row >>= 16
        np.add(k[:, y], row, out=k[:, y], casting="unsafe")  # wraps in int32, as the difference did
    return qr, qs, k


@numba.njit(cache=True, nogil=True, inline="always")
def _unzigzag(u):
    """:func:`unzigzag` of one code, in int64 (the caller narrows it to its integer type)."""
    v = np.int64(u)
    return (v >> 1) ^ -(v & 1)


@numba.njit(cache=True, nogil=True)
def _decode_codes(ur, us, uk, ratio, table, delta, exc_i, exc_r, exc_sky, r, s, sky):
    """:func:`unpack_codes` then :func:`dequantise` in one compiled pass over a tile, into the
    float32 (B, ty, tx) ``r, s, sky``, from the parts as unpacked (``ur, us, uk``: unsigned, in
    their narrowest types): the same integer arithmetic, wrapping where numpy's does, and the
    same float32 and float64 products, so the same bits (tests/storage/test_workstore.py)."""
    b, ty, tx = r.shape
    step_of = np.float32(delta)
    qs = np.empty((ty, tx), np.int16)  # the noise codes of the exposure being decoded
    k_up = np.empty(tx, np.int32)  # the sky codes of the row above
    for t in range(b):
        for y in range(ty):
            for x in range(tx):
                d = _unzigzag(us[t, y, x])
                q = np.int16(d) if t == 0 else np.int16(np.int64(qs[y, x]) + d)  # int16 sums wrap
                k = np.int64(np.int32(_unzigzag(uk[t, y, x])))
                if y > 0:  # the prediction from the pixel above, rescaled to this pixel's step
                    k += (np.int64(k_up[x]) * ratio[np.int64(qs[y - 1, x]) - np.int64(q) + 65535] + 32768) >> 16
                qk = np.int32(k)  # wraps as the difference did
                qs[y, x] = q
                k_up[x] = qk
                sd = table[np.int64(q) + 32768]
                step = sd * step_of
                qr = np.int16(_unzigzag(ur[t, y, x]))
                s[t, y, x] = sd
                r[t, y, x] = np.float32(np.nan) if qr == _NAN16 else np.float32(qr) * step
                # numpy multiplies int32 by float32 in float64
                sky[t, y, x] = np.float32(np.nan) if qk == _NAN32 else np.float32(np.float64(qk) * np.float64(step))
    for j in range(exc_i.shape[0]):
        t, rest = divmod(np.int64(exc_i[j]), ty * tx)
        y, x = divmod(rest, tx)
        r[t, y, x] = exc_r[j]
        sky[t, y, x] = exc_sky[j]


def decode_quantised(parts, shape, delta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(r, s, sky) float32 of a ``QUANTISED`` tile's first four parts: :func:`dequantise` of
    :func:`unpack_codes`, compiled."""
    r, s, sky = (np.empty(shape, np.float32) for _ in range(3))
    exc = np.frombuffer(parts[3], _EXCEPTIONS)
    _decode_codes(*(_unpack(p, shape) for p in parts[:3]), _RATIO, _noise_table(), float(delta),
                  np.ascontiguousarray(exc["i"]), np.ascontiguousarray(exc["r"]), np.ascontiguousarray(exc["sky"]),
                  r, s, sky)
    return r, s, sky


def encode(r: np.ndarray, s: np.ndarray, sky: np.ndarray, bits: np.ndarray, precision: float | None = None,
           intscat: np.ndarray | None = None) -> bytes:
    """One tile's bytes from (B, ty, tx) arrays: ``QUANTISED`` to ``precision`` (a fraction
    of each pixel's noise), or ``LOSSLESS`` when ``precision`` is None; ``intscat`` (float16, or
    None: an empty part) as it is."""
    b, ty, tx = r.shape
    q = None if precision is None else quantise(r, s, sky, float(precision))
    if q is None:
        codec, delta = LOSSLESS, 0.0
        parts = [_SHUFFLED.encode(np.ascontiguousarray(np.stack([r, s, sky]), dtype=np.float32))]
    else:
        codec, delta = QUANTISED, float(precision)
        qr, qs, qk, exc = q
        parts = [*pack_codes(qr, qs, qk), exc.tobytes()]
    parts = (parts + [b""] * 4)[:4] + [_BITS.encode(np.ascontiguousarray(bits, dtype=np.uint8))]
    parts.append(b"" if intscat is None else _SHUFFLED.encode(np.ascontiguousarray(intscat, dtype=np.float16)))
    return _HEADER.pack(b, ty, tx, codec, delta, *map(len, parts)) + b"".join(parts)


def decode(data: bytes, with_intscat: bool = False) -> tuple[np.ndarray, ...]:
    """(r, s, sky, bits) of one tile, and its ``intscat`` (float16, NaN where absent) with
    ``with_intscat``."""
    b, ty, tx, codec, delta, *lengths = _HEADER.unpack_from(data)
    pos, parts = _HEADER.size, []
    for n in lengths:
        parts.append(data[pos:pos + n])
        pos += n
    shape = (b, ty, tx)
    bits = np.frombuffer(numcodecs.blosc.decompress(parts[4]), np.uint8).reshape(shape)
    if codec == LOSSLESS:
        floats = np.frombuffer(numcodecs.blosc.decompress(parts[0]), np.float32).reshape((3, *shape))
        out = (floats[0], floats[1], floats[2], bits)
    else:
        out = (*decode_quantised(parts, shape, delta), bits)
    if not with_intscat:
        return out
    q = (np.frombuffer(numcodecs.blosc.decompress(parts[5]), np.float16).reshape(shape) if parts[5]
         else np.full(shape, np.nan, np.float16))
    return (*out, q)


def write_batch(work: str, start: int, spans, r, s, sky, bits, precision: float | None = None,
                intscat: np.ndarray | None = None) -> int:
    """Stage 1: write a batch's (B, y, x) arrays as one object, a tile per ``(ya, yb, xa, xb)``
    of ``spans`` (:func:`encode` to ``precision``; ``intscat`` float16 (B, y, x) or None);
    returns the number of objects written (1)."""
    fs, path = st.fs_and_path(work)
    tiles = []
    for ya, yb, xa, xb in spans:
        sl = (slice(None), slice(ya, yb), slice(xa, xb))
        q = None if intscat is None or not np.isfinite(intscat[sl]).any() else intscat[sl]
        tiles.append(encode(r[sl], s[sl], sky[sl], bits[sl], precision, q))
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


def read_tile(work: str, starts, ya: int, xa: int, with_intscat: bool = False) -> tuple[np.ndarray, ...]:
    """Stage 2: one tile over all exposures, the batches starting at ``starts`` stacked in order:
    (r, s, sky, bits), and ``intscat`` with ``with_intscat`` (:func:`decode`)."""
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
        parts.append(decode(data, with_intscat))
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(len(parts[0])))
