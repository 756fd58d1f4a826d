"""The work store's tile codec alone: CPU milliseconds per full frame to encode and decode a
QUANTISED tile, the compiled passes against their numpy formulations in the same run.

    python benchmarks/bench_workstore_codec.py [--batch 12] [--rounds 20]

A synthetic tile of ``--batch`` exposures x 256 x 258 pixels (stage 2's tile at N ~ 100): a sky
smooth along the columns and rows, noise following it with 10 % pixel-to-pixel scatter,
Gaussian residuals, 1 % NaN. Each step is timed ``--rounds`` times (``time.process_time``)
and the fastest is printed, scaled to a full frame (1024 x 1032); then the compiled and numpy
results are compared byte for byte. ``decode`` runs once per stage-2a and stage-2 read of a
tile, ``encode`` once per stage-1 write.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _best(f, rounds: int) -> float:
    best = np.inf
    for _ in range(rounds):
        c = time.process_time()
        f()
        best = min(best, time.process_time() - c)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args()
    from lrscube.storage import workstore as W

    rng = np.random.default_rng(0)
    b, ty, tx = a.batch, 256, 258
    yy, xx = np.mgrid[0:ty, 0:tx]
    sky = ((15 + 0.01 * yy + 0.002 * xx)[None] * rng.uniform(0.8, 1.2, (b, 1, 1))).astype(np.float32)
    s = (0.05 * np.sqrt(sky / 15) * rng.uniform(0.9, 1.1, sky.shape)).astype(np.float32)
    r = (rng.normal(0, 1, sky.shape) * s).astype(np.float32)
    r[rng.random(r.shape) < 0.01] = np.nan
    bits = np.zeros(sky.shape, np.uint8)
    delta = 1 / 32
    qr, qs, qk, exc = W.quantise(r, s, sky, delta)
    parts = W.pack_codes(qr, qs, qk) + [exc.tobytes()]
    data = W.encode(r, s, sky, bits, precision=delta)
    frame = b * ty * tx / (1024 * 1032)

    def numpy_decode():
        return W.dequantise(*W.unpack_codes(parts[:3], r.shape), exc, delta)

    steps = [
        ("encode (quantise, pack, blosc)", lambda: W.encode(r, s, sky, bits, precision=delta)),
        ("  pack_codes (compiled)", lambda: W.pack_codes(qr, qs, qk)),
        ("  pack_codes_numpy", lambda: W.pack_codes_numpy(qr, qs, qk)),
        ("decode (blosc, codes, values)", lambda: W.decode(data)),
        ("  decode_quantised (compiled)", lambda: W.decode_quantised(parts, r.shape, delta)),
        ("  unpack_codes + dequantise (numpy)", numpy_decode),
    ]
    print(f"tile {b} x {ty} x {tx} = {frame:.3f} full frames, {len(data) / r.size:.2f} bytes per pixel")
    for name, f in steps:
        print(f"{name:36s} {1000 * _best(f, a.rounds) / frame:7.2f} CPU-ms per full frame")
    same_pack = W.pack_codes(qr, qs, qk) == W.pack_codes_numpy(qr, qs, qk)
    same_decode = all(x.tobytes() == y.tobytes() for x, y in zip(W.decode_quantised(parts, r.shape, delta),
                                                                  numpy_decode()))
    print(f"the same bytes: pack {same_pack}, decode {same_decode}")


if __name__ == "__main__":
    main()
