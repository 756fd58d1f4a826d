"""The law of a tile's noise about each pixel's baseline, measured on the data at hand.

Every threshold assumes that a pixel's residual about its baseline, in units of its noise, has
the law Gaussian noise gives it: a run of two values at 5 sigma is then as rare as a 7-sigma
event. Where the noise has heavier tails (a Student t with few degrees of freedom), such pairs
are common and short runs of level or scatter pass the screens in normal pixels.

Gaussian noise does not give Gaussian residuals: the local sky is a running median whose window
holds the pixel, so a value near the median moves it and the core of the residuals is narrower
than their tails (the ratio of the 90th to the 50th percentile of ``|x|`` is 2.8-2.9 against
the Gaussian 2.44). Their tail is near the Gaussian's: the ratio of the 99th to the 90th
percentile, :data:`GAUSSIAN_INPUT_TAIL` (1.64 against the Gaussian 1.57; 1.84-1.86 with Student-t
noise of 8 degrees of freedom, 2.02-2.05 with 5, 2.48-2.51 with 3: benchmarks/README.md, *Noise
with heavier tails than Gaussian*). That ratio, over the pixels without three values beyond
:data:`DEFECT_SIGMA` (defects, whose values would be the tail), measures the tail: within
:data:`HEAVY_TAIL_FACTOR` of the Gaussian input's the law is the one every threshold was made
for, and nothing changes. Beyond it the law is the Student t with the measured tail ratio, scaled
to the measured 90th percentile (the tail is what the core's narrowing leaves nearly as the
noise's: Student-t noise of 5 degrees of freedom reads 4.6-4.9), and each residual is judged by
the Gaussian value of the same tail probability (:func:`gaussianise`): the 90th and 99th
percentiles go to the Gaussian's and the core stays near where Gaussian noise leaves it, so the
screens' thresholds keep their false-alarm rate. Amplitudes stay in DN/s.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import optimize, special, stats

#: the percentiles of |x| read: the median (a sample half of whose values are 0 is not measured),
#: and the two whose ratio measures the tail
LOW_Q, HIGH_Q, TAIL_Q = 0.5, 0.9, 0.99
#: that ratio for Gaussian noise through stage 1 (benchmarks/bench_noise_tails.py --null)
GAUSSIAN_INPUT_TAIL = 1.64
#: a tail ratio more than this factor above GAUSSIAN_INPUT_TAIL is heavier than Gaussian noise gives
HEAVY_TAIL_FACTOR = 1.15
#: pixels with MIN_DEFECT_VALUES values beyond DEFECT_SIGMA are defects: their values are not the noise's
DEFECT_SIGMA = 5.0
MIN_DEFECT_VALUES = 3
#: at most about this many values are read for the percentiles (:func:`sample_columns`)
MAX_VALUES = 1_000_000
#: fewer values than this: too few to tell, the law is Gaussian
MIN_VALUES = 2_000


class NoiseLaw(NamedTuple):
    dof: float  #: degrees of freedom of the Student t; inf: the law of Gaussian noise
    scale: float  #: its scale (units of the noise)
    tail: float  #: the measured ratio of the 99th to the 90th percentile of |x| (NaN: not measured)

    @property
    def gaussian(self) -> bool:
        return not np.isfinite(self.dof)


GAUSSIAN = NoiseLaw(np.inf, 1.0, np.nan)


def t_tail(dof: float) -> float:
    """The ratio of the :data:`TAIL_Q` to the :data:`HIGH_Q` percentile of ``|T|``, ``T`` a Student t
    of ``dof`` degrees of freedom (Gaussian: 1.566)."""
    return float(stats.t.ppf(0.5 + TAIL_Q / 2, dof) / stats.t.ppf(0.5 + HIGH_Q / 2, dof))


def sample_columns(cols: np.ndarray, n_rows: int) -> np.ndarray:
    """A strided subset of the pixel columns ``cols`` whose ``n_rows`` values each come to about
    :data:`MAX_VALUES`: enough for three percentiles, without copying a whole tile to find them."""
    return cols[::max(1, -(-int(n_rows) * cols.size // MAX_VALUES))]


def measure(x: np.ndarray, use: np.ndarray | None = None) -> NoiseLaw:
    """The law of the residuals ``x`` (time, pixels; units of the noise) where ``use``; all of
    them are read (a tile's caller passes :func:`sample_columns`)."""
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
        use = None if use is None else np.asarray(use)[:, None]
    ok = np.isfinite(x) if use is None else (np.asarray(use, bool) & np.isfinite(x))
    v = np.abs(np.where(ok, x, 0.0))
    clean = (v > DEFECT_SIGMA).sum(axis=0) < MIN_DEFECT_VALUES
    v = v[:, clean][ok[:, clean]]
    if v.size < MIN_VALUES:
        return GAUSSIAN
    lo, hi, top = np.quantile(v, [LOW_Q, HIGH_Q, TAIL_Q])
    if not lo > 0:
        return GAUSSIAN
    tail = float(top / hi)
    if tail <= HEAVY_TAIL_FACTOR * GAUSSIAN_INPUT_TAIL:
        return NoiseLaw(np.inf, 1.0, tail)
    dof = float(optimize.brentq(lambda d: t_tail(d) - tail, 1.05, 1e6)) if tail < t_tail(1.05) else 1.05
    scale = float(hi / stats.t.ppf(0.5 + HIGH_Q / 2, dof))
    return NoiseLaw(dof, scale, tail)


def gaussianise(x: np.ndarray, law: NoiseLaw) -> np.ndarray:
    """``x`` as the Gaussian values of the same two-sided tail probability under ``law`` (``x``
    itself for a Gaussian law); NaN stays NaN."""
    if law.gaussian:
        return x
    x = np.asarray(x, float)
    with np.errstate(invalid="ignore"):
        p = stats.t.sf(np.abs(x) / law.scale, law.dof)
        return np.copysign(-special.ndtri(p), x)


def describe(summary: dict | None) -> str | None:
    """One line on a run's noise laws (``detect.json``'s ``noise_law``), or None where every tile's
    noise was judged Gaussian."""
    if not summary or not summary.get("tiles_heavier_than_gaussian"):
        return None
    return (f"noise: tails heavier than Gaussian noise gives in {summary['tiles_heavier_than_gaussian']} of "
            f"{summary['tiles']} tiles (tail ratio up to {summary['tail_ratio_max']:.2f} against "
            f"{summary['tail_ratio_gaussian_input']:.2f}; Student t down to {summary['student_t_dof_min']:.1f} "
            "degrees of freedom): the screens judged residuals there by their tail probabilities")
