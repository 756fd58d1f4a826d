"""detect's scratch store: one object per stage-1 batch, tiles read back by byte range, on a
local folder and on a real S3-compatible server (moto in server mode on loopback)."""

import uuid

import numpy as np
import pytest
from s3server import s3  # noqa: F401  (fixture)

from lrscube.storage import store as st
from lrscube.storage import workstore


@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path):
    """A folder URL for a scratch store: a local path, or a prefix in the S3 test server's bucket."""
    if request.param == "local":
        return lambda name: str(tmp_path / name)
    server = request.getfixturevalue("s3")
    run = uuid.uuid4().hex[:8]
    return lambda name: server.url(f"{run}/{name}")


def _listing(work):
    fs, path = st.fs_and_path(work)
    fs.invalidate_cache()
    return sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))


def _batch(rng, b, ny, nx):
    r, s, sky = (rng.normal(size=(b, ny, nx)).astype("f4") for _ in range(3))
    r[0, 1, 2] = np.nan
    bits = rng.integers(0, 4, (b, ny, nx)).astype(np.uint8)
    return r, s, sky, bits


def test_tiles_read_back_from_one_object_per_batch(where):
    rng = np.random.default_rng(0)
    ny, nx, ty, tx = 12, 10, 5, 4  # tiles cut at the edges
    spans = [(a, min(a + ty, ny), b, min(b + tx, nx)) for a in range(0, ny, ty) for b in range(0, nx, tx)]
    work = where("work")
    workstore.create(work)
    batches = {0: _batch(rng, 3, ny, nx), 3: _batch(rng, 2, ny, nx)}
    for start, arrays in batches.items():
        assert workstore.write_batch(work, start, spans, *arrays) == 1
    assert _listing(work) == ["00000000", "00000003", "RUN"]  # one object per batch, whatever the tiles
    for ya, yb, xa, xb in spans:
        got = workstore.read_tile(work, [0, 3], ya, xa)
        for k in range(4):
            want = np.concatenate([batches[a][k][:, ya:yb, xa:xb] for a in (0, 3)])
            np.testing.assert_array_equal(got[k], want)


def test_an_index_longer_than_the_first_read(where):
    rng = np.random.default_rng(1)
    ny, nx = 60, 50  # 3000 one-pixel tiles: an index of 120 kB, longer than INDEX_PREFIX
    spans = [(a, a + 1, b, b + 1) for a in range(ny) for b in range(nx)]
    assert len(spans) * workstore._ENTRY.itemsize > workstore.INDEX_PREFIX
    work = where("work")
    workstore.create(work)
    arrays = _batch(rng, 2, ny, nx)
    workstore.write_batch(work, 0, spans, *arrays)
    for ya, xa in [(0, 0), (59, 49), (30, 7)]:
        got = workstore.read_tile(work, [0], ya, xa)
        np.testing.assert_array_equal(got[0], arrays[0][:, ya:ya + 1, xa:xa + 1])
        np.testing.assert_array_equal(got[3], arrays[3][:, ya:ya + 1, xa:xa + 1])


def test_a_folder_made_again_at_the_same_path_is_read_afresh(where):
    """The indexes a process keeps belong to one run: a new run in a folder of the same path
    (its tiles at other byte positions) reads its own."""
    rng = np.random.default_rng(2)
    work = where("work")
    fs, path = st.fs_and_path(work)
    for ny, nx, ty, tx in [(8, 8, 4, 4), (8, 8, 2, 8)]:
        if fs.exists(path):
            fs.rm(path, recursive=True)
        workstore.create(work)
        spans = [(a, a + ty, b, b + tx) for a in range(0, ny, ty) for b in range(0, nx, tx)]
        arrays = _batch(rng, 2, ny, nx)
        workstore.write_batch(work, 0, spans, *arrays)
        got = workstore.read_tile(work, [0], 0, 0)
        np.testing.assert_array_equal(got[0], arrays[0][:, :ty, :tx])


def test_a_damaged_tile_is_an_error_not_numbers(where):
    """blosc carries no checksum: a byte changed inside a tile's compressed floats would decode
    to other numbers, so each tile's crc32c in the index is checked on read."""
    rng = np.random.default_rng(3)
    spans = [(0, 4, 0, 8), (4, 8, 0, 8)]
    work = where("work")
    workstore.create(work)
    workstore.write_batch(work, 0, spans, *_batch(rng, 2, 8, 8))
    fs, path = st.fs_and_path(work)
    key = f"{path}/00000000"
    data = bytearray(fs.cat_file(key))
    workstore._INDEX.update(run=None, objects={}, entries=0)
    lo, hi, _ = workstore._index(fs, key, None, 0)[(4, 0)]
    data[lo + workstore._HEADER.size + 40] ^= 0x10  # inside the second tile's floats
    fs.pipe_file(key, bytes(data))
    workstore.create(work)  # a new token: this process forgets the indexes it read
    np.testing.assert_array_equal(workstore.read_tile(work, [0], 0, 0)[3].shape, (2, 4, 8))  # the first is intact
    with pytest.raises(st.StoreError, match=r"00000000: detect's work-store tile \(4, 0\) fails its checksum"):
        workstore.read_tile(work, [0], 4, 0)


def test_quantised_tiles_keep_each_value_within_half_a_step_of_its_noise():
    """detect writes residual and sky as multiples of 1/32 of each pixel's own noise: read back,
    each is within 1/64 of that noise, the noise within 0.14 % of itself; NaN stays NaN."""
    rng = np.random.default_rng(4)
    b, ny, nx = 3, 16, 12
    s = np.exp(rng.normal(np.log(0.03), 1.0, (b, ny, nx))).astype("f4")  # noise over a wide range
    r = (rng.standard_t(3, (b, ny, nx)) * s).astype("f4")
    sky = rng.uniform(-0.1, 50, (b, ny, nx)).astype("f4")
    r[0, 0, :3] = [np.nan, 5e4 * s[0, 0, 1], -np.inf]  # unusable, far beyond int16 steps, infinite
    sky[1, 2, 3] = np.nan
    bits = rng.integers(0, 4, (b, ny, nx)).astype(np.uint8)
    data = workstore.encode(r, s, sky, bits, precision=1 / 32)
    rq, sq, kq, bq = workstore.decode(data)
    np.testing.assert_array_equal(bq, bits)
    for got, want in ((rq, r), (sq, s), (kq, sky)):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert rq[0, 0, 1] == r[0, 0, 1] and rq[0, 0, 2] == -np.inf  # kept exactly
    fin = np.isfinite(r)
    assert np.max(np.abs(rq - r)[fin] / s[fin]) <= 1 / 64 * 1.001
    fin = np.isfinite(sky)
    assert np.max(np.abs(kq - sky)[fin] / s[fin]) <= 1 / 64 * 1.001
    assert np.max(np.abs(sq / s - 1)) < 1.4e-3


def test_a_pixel_marked_unusable_by_a_huge_noise_keeps_its_exact_values():
    """An ERR of 1e15 (a value the pipeline marks unusable) would make a step of its noise
    meaningless in DN/s: such pixels keep exact residual and sky; zero and NaN noise too."""
    r = np.full((1, 4, 4), 0.25, "f4")
    sky = np.full((1, 4, 4), 2.0, "f4")
    s = np.full((1, 4, 4), 0.03, "f4")
    s[0, 0, 0], s[0, 1, 1], s[0, 2, 2] = 1e15, 0.0, np.nan
    rq, sq, kq, _ = workstore.decode(workstore.encode(r, s, sky, np.zeros(r.shape, np.uint8), 1 / 32))
    for y in range(3):
        assert rq[0, y, y] == r[0, y, y] and kq[0, y, y] == sky[0, y, y]
    assert sq[0, 1, 1] == 0 and np.isnan(sq[0, 2, 2]) and abs(sq[0, 0, 0] / 1e15 - 1) < 1.4e-3


def test_a_tile_with_negative_noise_is_written_lossless():
    rng = np.random.default_rng(5)
    r, s, sky, bits = _batch(rng, 2, 4, 4)  # s standard normal: half negative
    got = workstore.decode(workstore.encode(r, s, sky, bits, precision=1 / 32))
    for k in range(4):
        np.testing.assert_array_equal(got[k], (r, s, sky, bits)[k])


def _noise_of_numpy(q):
    """workstore.noise_of as numpy computed it before the table."""
    s = np.exp2(q.astype(np.float32) / workstore.LOG_STEPS)
    s[q == workstore._NAN16] = np.nan
    s[q == workstore._ZERO16] = 0.0
    s[q == workstore._INF16] = np.inf
    return s


def test_noise_table_and_median_from_codes_equal_numpy():
    """noise_of's table gives numpy's exp2 of every code bit for bit (in one call and element by
    element), and the median of the finite positive noise found from the codes is numpy's
    nanmedian of it: odd and even counts, ties, only special codes, one value."""
    import warnings

    codes = np.arange(-32768, 32768).astype(np.int16)
    got = workstore.noise_of(codes)
    np.testing.assert_array_equal(got.view(np.int32), _noise_of_numpy(codes).view(np.int32))
    rng = np.random.default_rng(9)
    for k in rng.integers(0, codes.size, 200):  # position within a numpy call does not matter
        one = codes[k:k + 1]
        assert workstore.noise_of(one).view(np.int32)[0] == _noise_of_numpy(one).view(np.int32)[0]
    special = [workstore._NAN16, workstore._ZERO16, workstore._INF16]
    cases = [rng.integers(-3000, 3000, n).astype(np.int16) for n in (1, 2, 3, 10, 1001, 5000)]
    cases += [rng.integers(-5, 5, 400).astype(np.int16), np.array(special, np.int16),
              np.array(special + [7], np.int16), np.array(special + [7, 9], np.int16)]
    for q in cases:
        q = q.copy()
        if q.size > 10:
            q[rng.random(q.size) < 0.1] = rng.choice(special)
        sd = _noise_of_numpy(q)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            want = np.nanmedian(np.where(np.isfinite(sd) & (sd > 0), sd, np.nan))
        got = workstore._positive_median(q)
        assert type(got) is type(want) or np.isnan(got)
        assert np.float32(got).view(np.int32) == np.float32(want).view(np.int32) or (np.isnan(got) and np.isnan(want))


def _quantise_numpy(r, s, sky, delta):
    """workstore.quantise in its first numpy formulation (the reference for the current one)."""
    qs = workstore.quantise_noise(s)
    if qs is None:
        return None
    sd = _noise_of_numpy(qs)
    r, sky = np.asarray(r, np.float32), np.asarray(sky, np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(np.where(np.isfinite(sd) & (sd > 0), sd, np.nan))
        step = sd * np.float32(delta)
        zr, zk = np.rint(r / step), np.rint(sky / step)
    usable = np.isfinite(step) & (step > 0) & ~(sd > workstore.EXACT_ABOVE_MEDIAN_S * med)
    exact = ((np.isfinite(r) | np.isfinite(sky)) & ~usable) | (np.isfinite(r) & ~(np.abs(zr) < workstore._INF16)) \
        | (np.isfinite(sky) & ~(np.abs(zk) < -(workstore._NAN32 + 1)))
    exact |= np.isinf(r) | np.isinf(sky)
    qr = np.where(np.isfinite(r) & ~exact, zr, workstore._NAN16).astype(np.int16)
    qk = np.where(np.isfinite(sky) & ~exact, zk, workstore._NAN32).astype(np.int32)
    i = np.flatnonzero(exact)
    exc = np.empty(i.size, workstore._EXCEPTIONS)
    exc["i"], exc["r"], exc["sky"] = i, r.ravel()[i], sky.ravel()[i]
    return qr, qs, qk, exc


def test_quantise_equals_its_numpy_formulation():
    """quantise (fewer passes, the codes' table and median) gives the parts of its first numpy
    formulation bit for bit: NaN, +-inf, zero, huge and tiny noise, values beyond int16 and int32
    steps, a tile without usable noise, views of a larger batch."""
    rng = np.random.default_rng(12)
    b, ny, nx = 4, 40, 33
    s = np.exp(rng.normal(np.log(0.03), 1.0, (b, ny, nx))).astype("f4")
    r = (rng.standard_t(3, (b, ny, nx)) * s).astype("f4")
    sky = rng.uniform(-0.1, 50, (b, ny, nx)).astype("f4")
    r.ravel()[rng.integers(0, r.size, 40)] = np.nan
    sky.ravel()[rng.integers(0, r.size, 40)] = np.nan
    r.ravel()[rng.integers(0, r.size, 5)] = np.inf
    sky.ravel()[rng.integers(0, r.size, 5)] = -np.inf
    r[0, 0, :4] = [5e4 * s[0, 0, 0], -5e4 * s[0, 0, 1], 0.0, -0.0]
    sky[0, 1, :2] = [1e9 * s[0, 1, 0], 3e8]
    s[1, 0, :6] = [1e15, 0.0, np.nan, np.inf, 1e-30, 3e3]
    s[1, 1, :3] = np.nan
    r[1, 1, :3] = [1.0, np.nan, np.inf]
    tiles = [(r, s, sky), (r[:, 5:30, 3:20], s[:, 5:30, 3:20], sky[:, 5:30, 3:20]),
             (r[2:3], np.full_like(s[2:3], np.nan), sky[2:3]), (r[:1, :1, :1], s[:1, :1, :1], sky[:1, :1, :1])]
    for tr, ts, tk in tiles:
        for delta in (1 / 32, 1 / 4):
            got, want = workstore.quantise(tr, ts, tk, delta), _quantise_numpy(tr, ts, tk, delta)
            assert (got is None) == (want is None)
            for g, w in zip(got or (), want or (), strict=True):
                assert g.dtype == w.dtype and g.shape == w.shape
                assert g.tobytes() == w.tobytes()
    assert workstore.quantise(r, -s, sky, 1 / 32) is None  # a negative noise: the tile stays lossless


def _extreme_codes(seed):
    """(qr, qs, qk) of a (4, 9, 7) tile: random codes over the whole of int16 and int32, a column
    holding the codes of NaN, zero and infinite noise and the types' extremes side by side, and a
    column of close noises (the sky predictor's ratio is used)."""
    rng = np.random.default_rng(seed)
    b, ny, nx = 4, 9, 7
    qr = rng.integers(-32768, 32768, (b, ny, nx)).astype(np.int16)
    qs = rng.integers(-32768, 32768, (b, ny, nx)).astype(np.int16)
    qk = rng.integers(-2**31, 2**31, (b, ny, nx), dtype=np.int64).astype(np.int32)
    qs[0, :, 0] = [workstore._NAN16, workstore._INF16, workstore._ZERO16, 32767, -32768, 0, 1, -1, 5000]
    qk[0, :, 0] = [np.iinfo(np.int32).min, np.iinfo(np.int32).max, 0, -1, 1, np.iinfo(np.int32).min,
                   np.iinfo(np.int32).max, np.iinfo(np.int32).max, np.iinfo(np.int32).min]
    qs[1:, :, 1] = -1500 + np.arange(ny)
    return qr, qs, qk


def test_packed_codes_decode_to_the_codes_bit_for_bit():
    """The QUANTISED tile's parts (residual codes zigzagged, noise codes differenced along time,
    sky codes less their prediction from the pixel above) give back quantise's codes exactly:
    the extremes of int16 and int32 side by side, the codes of NaN, zero and infinite noise,
    noises a factor 1e6 apart, one-row and one-exposure tiles."""
    qr, qs, qk = _extreme_codes(13)
    for sl in [np.s_[:], np.s_[:, :1], np.s_[:1], np.s_[:, 3:5, 2:3]]:
        want = (qr[sl], qs[sl], qk[sl])
        got = workstore.unpack_codes(workstore.pack_codes(*want), want[0].shape)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype and g.tobytes() == w.tobytes()


def test_the_compiled_coder_is_the_numpy_coding_bit_for_bit():
    """pack_codes gives pack_codes_numpy's bytes, and decode_quantised (one compiled pass)
    dequantise(unpack_codes(...))'s bits: codes at
    the extremes of int16 and int32 (the sums and the sky's prediction wrap), the codes of NaN,
    zero and infinite noise, residual and sky codes at their NaN codes, exceptions (first and last
    value of the tile), parts narrowed to uint8, one-row, one-column and one-exposure tiles."""
    qr, qs, qk = _extreme_codes(15)
    qr[1, :, 0] = workstore._NAN16
    b, ny, nx = qr.shape
    rng = np.random.default_rng(16)
    small = (rng.integers(-3, 4, (b, ny, nx)).astype(np.int16), np.full((b, ny, nx), -1400, np.int16),
             rng.integers(-3, 4, (b, ny, nx)).astype(np.int32))  # every part narrowed to uint8
    for codes in [(qr, qs, qk), small]:
        for sl in [np.s_[:], np.s_[:, :1], np.s_[:1], np.s_[:, :, :1], np.s_[:, 3:5, 2:3]]:
            c = tuple(np.ascontiguousarray(v[sl]) for v in codes)
            n = c[0].size
            exc = np.zeros(min(n, 3), workstore._EXCEPTIONS)
            exc["i"] = [0, n - 1, n // 2][:exc.size]
            exc["r"], exc["sky"] = [1.5, np.nan, -np.inf][:exc.size], [np.inf, 2.5, np.nan][:exc.size]
            assert workstore.pack_codes(*c) == workstore.pack_codes_numpy(*c)  # the encoder's bytes too
            for delta in (1 / 32, 0.3):
                parts = workstore.pack_codes(*c) + [exc.tobytes()]
                got = workstore.decode_quantised(parts, c[0].shape, delta)
                want = workstore.dequantise(*workstore.unpack_codes(parts[:3], c[0].shape), exc, delta)
                for g, w in zip(got, want, strict=True):
                    assert g.dtype == w.dtype == np.float32 and g.tobytes() == w.tobytes()


def test_a_quantised_tile_decodes_to_the_dequantised_codes_and_a_smooth_sky_packs_small():
    """decode(encode(...)) is dequantise(quantise(...)) bit for bit; a sky smooth along the
    columns (in steps of each pixel's own noise, which is not smooth) takes a fraction of the
    bytes its raw int32 codes would."""
    rng = np.random.default_rng(14)
    b, ny, nx = 6, 64, 48
    s = (0.02 * np.exp(rng.normal(0, 0.3, (1, ny, nx))) * rng.uniform(0.98, 1.02, (b, 1, 1))).astype("f4")
    sky = (np.linspace(0.5, 1.5, ny)[None, :, None] * rng.uniform(0.5, 2, (b, 1, 1))
           + 0.01 * np.linspace(0, 1, nx)).astype("f4") * np.ones((b, ny, nx), "f4")
    r = (rng.normal(size=(b, ny, nx)) * s).astype("f4")
    r[0, 3, 4], s[1, 2, 2] = np.nan, 1e15
    data = workstore.encode(r, s, sky, np.zeros((b, ny, nx), np.uint8), 1 / 32)
    got = workstore.decode(data)
    want = workstore.dequantise(*workstore.quantise(r, s, sky, 1 / 32), 1 / 32)
    for g, w in zip(got[:3], want, strict=True):
        assert g.tobytes() == w.tobytes()
    lengths = workstore._HEADER.unpack_from(data)[5:]
    raw_sky = len(workstore._SHUFFLED.encode(workstore.quantise(r, s, sky, 1 / 32)[2]))
    assert lengths[2] < 0.6 * raw_sky
