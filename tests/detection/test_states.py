"""One pixel's normal state and intervals (lrscube.detection.states): pure numpy, one series."""

import numpy as np

from lrscube.detection.baseline import gaussian_clipped_moments
from lrscube.detection.detection_params import DetectionParams
from lrscube.detection.states import pixel_intervals

G1, G2 = gaussian_clipped_moments(1.0, 3.0)

# 20 full-frame exposures of a simulated LRS set (faint sky: 0.4-1 DN/s), the residual of a
# pixel against its neighbours' sky, its calibrated noise, and the neighbours' population
S = np.array([0.0168, 0.0261, 0.0254, 0.007, 0.047, 0.0153, 0.0133, 0.0076, 0.022, 0.0106, 0.0129, 0.0059, 0.0284,
              0.0173, 0.1362, 0.0152, 0.0306, 0.0394, 0.0083, 0.0342])
SKY = np.array([0.791, 0.605, 0.68, 0.553, 0.541, 0.891, 0.665, 0.521, 0.532, 0.606, 0.665, 0.445, 0.828, 0.444,
                0.459, 0.963, 0.788, 0.963, 0.506, 0.567])


def _intervals(r, s=S, sky=SKY, prior=(-0.0127, 2.13e-4, 0.0027, 1.58e-5)):
    p = DetectionParams()
    out = pixel_intervals(r, s, sky, p, p.thresholds(1_000_000, 40), vnull=(G1, G2, 3.0), prior=prior)
    return [(w["start"], w["stop"], w["sign"], w["noisy"]) for w in out]


def test_a_warm_pixel_seen_in_few_exposures_before_its_onset_is_warm_from_its_onset():
    # WARM 0.084 DN/s from exposure 7 on: the state of most exposures is the warm one, and a
    # response fitted to all of them made the first seven a deficit; they are at the neighbours'
    # dark level, the rest above it
    r = np.array([-0.0455, 0.0469, -0.0415, -0.01, -0.0026, 0.0156, -0.005, 0.0853, 0.0533, 0.055, 0.0615, 0.0736,
                  0.119, 0.0777, 0.3115, 0.0417, 0.0716, 0.117, 0.0843, 0.0956])
    assert _intervals(r) == [(7, 20, 1, False)]


def test_a_pixel_that_lost_half_its_response_early_is_low_qe_from_its_onset():
    # LOW_QE (deficit 0.47) from exposure 3 on: the first three exposures, at the neighbours'
    # response, are normal, not a warm excess over the low state
    r = np.array([-0.032, 0.0023, -0.007, -0.2917, -0.259, -0.4776, -0.359, -0.288, -0.2442, -0.275, -0.2861, -0.2285,
                  -0.459, -0.2346, -0.4565, -0.4958, -0.3777, -0.5103, -0.2479, -0.296])
    s = np.array([0.0174, 0.0268, 0.0252, 0.0056, 0.0416, 0.0116, 0.0102, 0.0056, 0.0164, 0.0079, 0.0098, 0.0043,
                  0.0215, 0.0129, 0.1286, 0.0114, 0.0232, 0.0299, 0.0061, 0.0273])
    sky = np.array([0.879, 0.664, 0.703, 0.594, 0.528, 0.986, 0.737, 0.565, 0.575, 0.618, 0.661, 0.479, 0.918, 0.445,
                    0.499, 0.999, 0.852, 0.991, 0.519, 0.587])
    assert _intervals(r, s, sky, prior=(0.0006, 2.89e-4, 0.0008, 1.55e-5)) == [(3, 20, -1, False)]


def test_a_warm_pixel_that_recovers_late_is_warm_until_its_recovery_and_a_normal_one_is_not_flagged():
    rng = np.random.default_rng(5)
    normal = 0.01 * SKY + rng.normal(0, S)
    assert _intervals(normal) == []
    r = normal.copy()
    r[:14] += 0.08  # warm from the start, healed by an anneal before exposure 14
    assert _intervals(r) == [(0, 14, 1, False)]


def test_a_warm_pixel_under_fringes_is_warm_from_its_onset_not_noisy_throughout():
    # MIRIFUSHORT, 40 exposures: WARM 0.069 DN/s from exposure 15 on, on a pixel whose response is
    # 4-5 % above its neighbours' (fringes: the population's response scatters by 5 %). One state
    # fitted to all exposures took part of the step into the response: neither side's run reached
    # the threshold and the residual scattered like a noisy pixel's over the whole series
    r = np.array([0.111, -0.061, 0.062, 0.044, 0.08, 0.076, 0.183, 0.076, 0.095, 0.139, 0.178, 0.116, 0.108, 0.115,
                  0.138, 0.139, 0.171, 0.211, 0.117, 0.159, 0.208, 0.148, 0.121, 0.195, 0.149, 0.07, 0.373, 0.108,
                  0.106, 0.164, 0.153, 0.203, 0.135, 0.144, 0.089, 0.201, 0.104, 0.132, 0.209, 0.065])
    s = np.array([0.065, 0.068, 0.02, 0.041, 0.019, 0.018, 0.064, 0.052, 0.015, 0.086, 0.107, 0.069, 0.027, 0.026,
                  0.018, 0.131, 0.024, 0.029, 0.009, 0.016, 0.109, 0.022, 0.014, 0.024, 0.012, 0.158, 0.115, 0.033,
                  0.066, 0.152, 0.06, 0.143, 0.013, 0.022, 0.024, 0.055, 0.013, 0.16, 0.017, 0.082])
    sky = np.array([3.03, 1.33, 2.42, 1.99, 1.59, 2.02, 4.17, 2.11, 2.05, 2.1, 2.95, 3.57, 3.06, 3.73, 3.0, 2.11, 2.45,
                    3.94, 1.33, 2.09, 1.52, 1.79, 1.61, 3.59, 1.64, 4.2, 4.43, 1.4, 2.42, 1.61, 1.64, 2.0, 1.81, 2.18,
                    1.27, 3.17, 1.17, 1.28, 3.69, 2.99])
    assert _intervals(r, s, sky, prior=(0.01, 2.38e-3, 0.0006, 1.07e-5)) == [(15, 40, 1, False)]
