"""Header fuzzing of lrscube's product reader: N products with random primary-header values.

    python benchmarks/bench_fuzz.py --n 1000

Hypothesis draws up to 8 of the keywords ingest reads (times, exposure parameters, subarray
keywords, instrument/detector/EXP_TYPE/SUBARRAY, ids, REFTYPE, calibration steps) and sets each
to a random value (integers up to 1e12, any float including NaN and infinities, printable
text, booleans, plausible values, or removes it) in a valid SLITLESSPRISM rate file, then reads
it with ``lrscube.intake.products.read_product``. The goal: every outcome is an exposure whose fields
are sane (time from 2010 to now + 1 day and within datetime64[ns], exposure time in (0, 1e6] s,
1 <= NINTS <= 1e6, footprint inside the frame) or a rejection with a reason; any other
exception stops the run and is printed (the same check as
``tests/intake/test_hostile_input.py::test_fuzzed_headers_give_an_exposure_or_a_named_rejection``,
which runs 40 cases, or ``LRSCUBE_FUZZ_EXAMPLES`` of them). Prints the outcomes by kind.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="fuzzed products")
    ap.add_argument("--seed", type=int, default=None, help="derandomize (hypothesis' fixed seed)")
    a = ap.parse_args(argv)
    from test_hostile_input import fuzz_headers

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        outcomes = fuzz_headers(a.n, Path(tmp), seed=a.seed)
    total = sum(outcomes.values())
    print(f"{total} fuzzed products read in {time.perf_counter() - t0:.0f} s: 0 exceptions other than a "
          "named rejection, every exposure sane")
    for kind, k in sorted(outcomes.items(), key=lambda kv: -kv[1]):
        print(f"  {k:6d}  {kind}")


if __name__ == "__main__":
    main()
