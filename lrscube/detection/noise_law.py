"""The law of a tile's noise about each pixel's baseline, measured on the data at hand.

Every threshold assumes that a pixel's residual about its baseline, in units of its noise, has
the law Gaussian noise gives it: a run of two values at 5 sigma is then as rare as a 7-sigma
event. Where the noise has heavier tails (a Student t with few degrees of freedom), such pairs
are common and short runs of level or scatter pass the screens in normal pixels.

Gaussian noise does not give Gaussian residuals: the local sky is a running median whose window
holds the pixel, so a value near the median moves it and the core of the residuals is narrower
than their tails (the ratio of the 90th to the 50th percentile of ``|x|`` is 2.8-2.9 against
the Gaussian 2.44). Their tail is near the Gaussian's: the ratio of the 99th to the 90th
percentile of the values' size on either side, :data:`GAUSSIAN_INPUT_TAIL` (1.63-1.65 on each
side against the Gaussian 1.57; the larger side's 1.86-1.88 with Student-t noise of 8 degrees of
freedom, 2.05-2.07 with 5, 2.53-2.57 with 3: benchmarks/README.md, *Noise with heavier tails than
Gaussian* and *Hits below the jump threshold*). That ratio, over the pixels without three values beyond
:data:`DEFECT_SIGMA` (defects, whose values would be the tail), measures the tail: within
:data:`HEAVY_TAIL_FACTOR` of the Gaussian input's the law is the one every threshold was made
for, and nothing changes. Beyond it the law is the Student t with the measured tail ratio, scaled
to the measured 90th percentile (the tail is what the core's narrowing leaves nearly as the
noise's: Student-t noise of 5 degrees of freedom reads 4.5-4.8), and each residual is judged by
the Gaussian value of the same tail probability (:func:`gaussianise`): the 90th and 99th
percentiles go to the Gaussian's and the core stays near where Gaussian noise leaves it, so the
screens' thresholds keep their false-alarm rate. Amplitudes stay in DN/s.

Each side is measured and mapped apart (:class:`NoiseLaw`): hits below the jump step's threshold
raise a pixel's rate and never lower it, a heavy upper tail beside a Gaussian lower one.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import optimize, special, stats

#: the percentiles of a side's |x| read: the median (a sample half of whose values are 0 is not
#: measured), and the two whose ratio measures the tail
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
#: fewer values than this on a side: too few to tell, that side's law is Gaussian
MIN_VALUES = 1_000


class Tail(NamedTuple):
    """The law of one side of the residuals: ``|x|`` of the values on that side."""

    dof: float  #: degrees of freedom of the Student t; inf: the law of Gaussian noise
    scale: float  #: its scale (units of the noise)
    ratio: float  #: the measured ratio of the 99th to the 90th percentile (NaN: not measured)

    @property
    def gaussian(self) -> bool:
        return not np.isfinite(self.dof)


GAUSSIAN_TAIL = Tail(np.inf, 1.0, np.nan)


class NoiseLaw(NamedTuple):
    """The law of the residuals, each side apart: hits below the jump step's threshold raise a
    pixel's rate now and then and never lower it, so a detector's upper tail can be heavy where
    its lower one is Gaussian."""

    upper: Tail = GAUSSIAN_TAIL
    lower: Tail = GAUSSIAN_TAIL

    @property
    def gaussian(self) -> bool:
        return self.upper.gaussian and self.lower.gaussian


GAUSSIAN = NoiseLaw()


def t_tail(dof: float) -> float:
    """The ratio of the :data:`TAIL_Q` to the :data:`HIGH_Q` percentile of ``|T|``, ``T`` a Student t
    of ``dof`` degrees of freedom (Gaussian: 1.566)."""
    return float(stats.t.ppf(0.5 + TAIL_Q / 2, dof) / stats.t.ppf(0.5 + HIGH_Q / 2, dof))


def sample_columns(cols: np.ndarray, n_rows: int) -> np.ndarray:
    """A strided subset of the pixel columns ``cols`` whose ``n_rows`` values each come to about
    :data:`MAX_VALUES`: enough for three percentiles, without copying a whole tile to find them."""
    return cols[::max(1, -(-int(n_rows) * cols.size // MAX_VALUES))]


def measure(x: np.ndarray, use: np.ndarray | None = None) -> NoiseLaw:
    """The law of the residuals ``x`` (time, pixels; units of the noise) where ``use``, each side
    apart; all of them are read (a tile's caller passes :func:`sample_columns`)."""
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
        use = None if use is None else np.asarray(use)[:, None]
    ok = np.isfinite(x) if use is None else (np.asarray(use, bool) & np.isfinite(x))
    xv = np.where(ok, x, 0.0)
    clean = (np.abs(xv) > DEFECT_SIGMA).sum(axis=0) < MIN_DEFECT_VALUES
    v, ok = xv[:, clean], ok[:, clean]
    # a value exactly 0 (the pixel was its window's median) belongs to both sides, as to |x|
    return NoiseLaw(_tail(v[ok & (v >= 0)]), _tail(-v[ok & (v <= 0)]))


def _tail(v: np.ndarray) -> Tail:
    """The :class:`Tail` of the magnitudes ``v`` of one side's values."""
    if v.size < MIN_VALUES:
        return GAUSSIAN_TAIL
    lo, hi, top = np.quantile(v, [LOW_Q, HIGH_Q, TAIL_Q])
    if not lo > 0:
        return GAUSSIAN_TAIL
    ratio = float(top / hi)
    if ratio <= HEAVY_TAIL_FACTOR * GAUSSIAN_INPUT_TAIL:
        return Tail(np.inf, 1.0, ratio)
    dof = float(optimize.brentq(lambda d: t_tail(d) - ratio, 1.05, 1e6)) if ratio < t_tail(1.05) else 1.05
    return Tail(dof, float(hi / stats.t.ppf(0.5 + HIGH_Q / 2, dof)), ratio)


def gaussianise(x: np.ndarray, law: NoiseLaw) -> np.ndarray:
    """``x`` as the Gaussian values of the same tail probability under its side's law of ``law``
    (``x`` itself for a Gaussian law; a Gaussian side's values as they are); NaN stays NaN."""
    if law.gaussian:
        return x
    x = np.asarray(x, float)
    out = x.copy()
    with np.errstate(invalid="ignore"):
        for side, sign in ((law.upper, 1.0), (law.lower, -1.0)):
            if side.gaussian:
                continue
            on = sign * x > 0
            p = stats.t.sf(sign * x[on] / side.scale, side.dof)
            out[on] = sign * -special.ndtri(p)
    return out


def describe(summary: dict | None) -> str | None:
    """One line on a run's noise laws (``detect.json``'s ``noise_law``), or None where every tile's
    noise was judged Gaussian."""
    if not summary or not summary.get("tiles_heavier_than_gaussian"):
        return None
    parts = [f"the {side} side in {n}" for side in ("upper", "lower")
             if (n := (summary.get(side) or {}).get("tiles_heavier_than_gaussian"))]
    parts += [f"tail ratio up to {summary['tail_ratio_max']:.2f} against {summary['tail_ratio_gaussian_input']:.2f}",
              f"Student t down to {summary['student_t_dof_min']:.1f} degrees of freedom"]
    return (f"noise: tails heavier than Gaussian noise gives in {summary['tiles_heavier_than_gaussian']} of "
            f"{summary['tiles']} tiles ({'; '.join(parts)}): the screens judged residuals there by their tail "
            "probabilities")
