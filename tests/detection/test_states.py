"""One pixel's normal state and intervals (lrscube.detection.states): pure numpy, one series."""

import numpy as np
import pandas as pd
import pytest

from lrscube.detection.baseline import gaussian_clipped_moments
from lrscube.detection.classify import classify
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


# 33 imager exposures (bright sky: 3-12 DN/s) of a pixel HOT (~0.7 DN/s) from its second exposure
# on, and the neighbours' population there
HOT_R = np.array([-0.1558, 0.854, 0.8065, 0.6562, 0.6823, 0.6945, 0.655, 0.6797, 0.6333, 0.5217, 0.6942, 0.6261,
                  0.6776, 0.7818, 0.7278, 1.1152, 0.8037, 0.6083, 0.4775, 0.6958, 0.6444, 0.5484, 0.681, 0.6134,
                  0.6843, 0.8217, 0.6388, 0.5962, 0.6554, 0.6579, 0.6396, 0.6633, 0.6564])
HOT_S = np.array([0.029, 0.1989, 0.0761, 0.0621, 0.0445, 0.1163, 0.199, 0.0246, 0.0317, 0.0412, 0.0201, 0.0249,
                  0.0239, 0.154, 0.0368, 0.2457, 0.1588, 0.1399, 0.1597, 0.0356, 0.1698, 0.0454, 0.0576, 0.0313,
                  0.0221, 0.1479, 0.0967, 0.0458, 0.0448, 0.0179, 0.091, 0.1101, 0.0527])
HOT_SKY = np.array([10.6538, 5.9973, 5.9274, 4.2333, 4.7779, 4.2805, 9.7056, 4.1262, 11.5447, 11.6789, 3.771, 6.5253,
                    4.7922, 4.766, 5.2058, 4.8785, 5.7934, 3.4984, 8.6389, 3.1824, 10.6758, 10.0982, 7.7491, 9.302,
                    3.8661, 4.8085, 9.5183, 8.9553, 9.5061, 4.8469, 9.7325, 6.599, 8.8637])
HOT_PRIOR = (-0.0099, 3.23e-4, -0.0023, 2.9e-5)


def _static(r, s=HOT_S, sky=HOT_SKY, prior=HOT_PRIOR):
    p = DetectionParams()
    out = pixel_intervals(r, s, sky, p, p.thresholds(1_000_000, 40), vnull=(G1, G2, 3.0), prior=prior)
    return [(w["start"], w["stop"], w["static"]) for w in out]


def test_a_hot_pixel_normal_in_its_first_exposure_is_hot_from_its_second():
    # one exposure before the onset makes no level run (min_bad_exposures); the hot state is the
    # majority one and beyond the physical limit, but that exposure is at the neighbours' level
    assert _static(HOT_R) == [(1, 33, True)]


def _hot_series(seed=3):
    rng = np.random.default_rng(seed)
    return 0.7 + rng.normal(0.0, HOT_S), 0.005 * HOT_SKY + rng.normal(0.0, HOT_S)  # hot, normal


def test_a_hot_pixel_hot_in_every_exposure_is_hot_throughout():
    hot, normal = _hot_series()
    assert _static(hot) == [(0, 33, True)]
    r = hot.copy()
    r[0] = normal[0]
    assert _static(r) == [(1, 33, True)]


def test_a_hot_pixel_that_recovers_in_its_last_exposure_is_hot_until_then():
    hot, normal = _hot_series()
    r = hot.copy()
    r[-1] = normal[-1]
    assert _static(r) == [(0, 32, True)]


def test_a_warm_pixel_where_the_sky_barely_changes_is_warm_from_its_onset():
    # MIRIMAGE's dark area (left of the imaging field): a glow of ~0.2 DN/s in every exposure, so
    # the neighbours' responses and dark levels are each poorly measured (their errors nearly
    # perfectly anticorrelated) and their scatter (va, vd) says little about how far a normal
    # pixel's level strays. WARM 0.13 DN/s from exposure 8 on: against va sky^2 + vd the warm
    # state passed for normal and the first eight exposures became a deficit; the scatter of
    # the neighbours' level at their own sky (vl) is ~0.003 DN/s
    r = np.array([-0.0002, 0.0536, 0.0106, -0.0078, -0.0152, 0.0007, -0.0301, -0.0083, 0.1399, 0.1995, 0.1156,
                  -0.0874, 0.1788, 0.1553, 0.0722, 0.1521, 0.0828, 0.1204, 0.1236, 0.1342, 0.1417, 0.1498, 0.1307,
                  0.1099, 0.1142, 0.0439, 0.1289])
    s = np.array([0.0049, 0.1157, 0.0177, 0.0157, 0.0106, 0.0529, 0.0837, 0.0061, 0.0068, 0.0872, 0.0098, 0.1782,
                  0.0809, 0.0865, 0.0608, 0.0119, 0.058, 0.0091, 0.0134, 0.0064, 0.0212, 0.0096, 0.0093, 0.005,
                  0.0189, 0.0365, 0.0119])
    sky = np.array([0.2037, 0.243, 0.2111, 0.203, 0.1945, 0.2103, 0.1922, 0.1946, 0.2006, 0.1503, 0.2044, 0.2653,
                    0.1985, 0.213, 0.2531, 0.2022, 0.2172, 0.2066, 0.2056, 0.1998, 0.2049, 0.2067, 0.2031, 0.2029,
                    0.2049, 0.2175, 0.1978])
    prior = (-0.1468, 0.02566, 0.0302, 0.001037)
    assert _intervals(r, s, sky, prior=prior + (0.2019, 9.2e-6)) == [(8, 27, 1, False)]


def test_a_hot_pixel_that_grew_over_months_is_bad_from_its_rise():
    # LRS, 20 exposures: a drift to 4.6 DN/s, three exposures before it, three on its rise (0.85
    # DN/s). A state fitted to all exposures clips the first six alike at -6 sigma: one run, not
    # at the neighbours' level, so the first three were not seen as the normal state and were
    # reported as LOW_QE before a HOT interval
    r = np.array([-0.007, -0.02, -0.015, 0.807, 0.941, 0.85, 4.557, 4.567, 4.593, 4.599, 4.619, 4.635, 4.554, 4.599,
                  4.814, 4.59, 4.556, 4.723, 4.647, 4.658])
    s = np.array([0.016, 0.024, 0.023, 0.01, 0.059, 0.019, 0.035, 0.021, 0.06, 0.027, 0.032, 0.017, 0.065, 0.046,
                  0.192, 0.033, 0.07, 0.081, 0.023, 0.081])
    sky = np.array([0.64, 0.499, 0.564, 0.465, 0.461, 0.725, 0.554, 0.442, 0.436, 0.496, 0.538, 0.382, 0.667, 0.379,
                    0.406, 0.767, 0.649, 0.769, 0.426, 0.457])
    prior = (-0.00067, 1.98e-4, 0.00135, 1.56e-5, 0.518, 1.1e-4)
    assert _intervals(r, s, sky, prior=prior) == [(3, 20, 1, False)]


def test_a_pixel_hot_for_a_while_that_faded_is_bad_from_its_onset_not_noisy_throughout():
    # LRS, 20 exposures: ten normal, four at 1.65 DN/s, then fading (0.28 to 0.07 DN/s, still
    # bad). A state fitted to all of them sits a little above the first ten (its response
    # takes part of the excess), so they made a run below the threshold and the series one span
    # of excess scatter; they are each at the neighbours' level, and far below the rest
    r = np.array([-0.009, -0.034, 0.056, 0.024, -0.032, 0.042, 0.026, 0.013, 0.066, 0.022, 1.668, 1.645, 1.692,
                  1.608, 0.277, 0.248, 0.074, 0.13, 0.141, 0.145])
    s = np.array([0.02, 0.029, 0.029, 0.008, 0.05, 0.018, 0.015, 0.008, 0.024, 0.011, 0.023, 0.011, 0.048, 0.031,
                  0.139, 0.019, 0.035, 0.044, 0.009, 0.037])
    sky = np.array([1.121, 0.822, 0.911, 0.73, 0.666, 1.275, 0.921, 0.694, 0.679, 0.768, 0.843, 0.57, 1.159, 0.541,
                    0.556, 1.285, 1.082, 1.268, 0.633, 0.731])
    prior = (0.00769, 3.29e-4, -0.00135, 1.56e-5, 0.773, 1.56e-4)
    assert _intervals(r, s, sky, prior=prior) == [(10, 20, 1, False)]


def test_a_strongly_noisy_pixel_seen_in_its_last_five_exposures_is_noisy_from_its_onset():
    # LRS, 20 exposures: 24 times noisier than its ERR from exposure 15 on, its mean near its
    # baseline (+6.2, -4.2, -0.4, -17, +24 sigma). Its largest excursion left out twice, the
    # precise exposures at the clip fell under the threshold: no interval at all
    r = np.array([0.0017, 0.0203, 0.0064, -0.0014, -0.0122, 0.0017, 0.0359, 0.0138, 0.0135, -0.0023, -0.0104, 0.0061,
                  0.0237, 0.0055, -0.0255, 0.5785, -0.1317, -0.011, -0.1409, 0.8309])
    s = np.array([0.0189, 0.0282, 0.0277, 0.0077, 0.0487, 0.0171, 0.0146, 0.0078, 0.0229, 0.0109, 0.0136, 0.006,
                  0.0307, 0.017, 0.1338, 0.0167, 0.0328, 0.0412, 0.0086, 0.0348])
    sky = np.array([1.0188, 0.7564, 0.8516, 0.6883, 0.641, 1.1689, 0.8453, 0.6409, 0.6416, 0.735, 0.7983, 0.5387,
                    1.0706, 0.5194, 0.54, 1.2044, 0.9794, 1.1938, 0.6099, 0.6902])
    prior = (-0.0015, 3.23e-4, -0.0006, 1.55e-5, 0.694, 1.21e-4)
    assert _intervals(r, s, sky, prior=prior) == [(15, 20, 1, True)]


def test_a_normal_pixel_raised_for_three_exposures_is_not_low_qe_everywhere_else():
    # MIRIFUSHORT, 40 exposures, a normal pixel (response 4 % above its neighbours' under the
    # fringes) hit by a cosmic ray (JUMP_DET in exposure 16: clipped at 3) that left it raised
    # for three exposures, a latent. Where the sky-proportional description fits better, the
    # raised run, a higher response, was taken for the normal state, and every other exposure
    # became a loss of response of 23 %: LOW_QE in two pieces around it
    r = np.array([0.03679, 0.03303, 0.02429, 0.01966, 0.01143, 0.03768, 0.07326, -0.01037, 0.03748, 0.12532,
                  0.04813, 0.05977, 0.02861, 0.053, 0.0658, -0.01069, 0.14651, 0.54456, 0.23109, 0.03745, 0.00601,
                  0.03662, 0.02029, 0.06552, 0.02827, 0.08292, 0.21919, 0.01316, -0.03029, 0.14082, 0.02681,
                  0.02454, 0.0369, 0.0413, 0.01683, 0.06723, 0.02432, 0.0238, 0.05951, 0.02458])
    s = np.array([0.0421, 0.05388, 0.01285, 0.02534, 0.0122, 0.01193, 0.04073, 0.03566, 0.01006, 0.06566, 0.08228,
                  0.04532, 0.01694, 0.01661, 0.01147, 0.10899, 0.01584, 0.02068, 0.00824, 0.01022, 0.09213, 0.01399,
                  0.00902, 0.01493, 0.00795, 0.12115, 0.08025, 0.0218, 0.04449, 0.1348, 0.04339, 0.12594, 0.00965,
                  0.01412, 0.01596, 0.03602, 0.00884, 0.14658, 0.01057, 0.05888])
    sky = np.array([1.12951, 0.58065, 0.98439, 0.69858, 0.6174, 0.80348, 1.57516, 0.81673, 0.79588, 0.78593,
                    1.07755, 1.32233, 1.18903, 1.48243, 1.12009, 0.83367, 0.91554, 1.52189, 0.52357, 0.81071,
                    0.60681, 0.73993, 0.62225, 1.40617, 0.60389, 1.56372, 1.55524, 0.54008, 0.91869, 0.66007,
                    0.6492, 0.76079, 0.73694, 0.82729, 0.49919, 1.27969, 0.4808, 0.47123, 1.41741, 1.18735])
    hours = np.array([0.0, 0.05, 0.25, 2263.29, 2263.46, 2662.19, 2662.4, 2662.46, 2662.74, 2677.55, 2886.19,
                      3912.88, 3913.04, 3913.31, 3913.72, 6674.58, 7672.01, 7672.26, 7672.83, 9404.33, 9404.6,
                      9404.73, 9405.09, 9811.47, 9811.96, 10977.57, 12297.77, 12297.83, 12297.9, 12297.94,
                      15315.3, 15315.34, 15315.66, 19303.45, 19303.66, 20111.71, 21226.07, 21226.29, 21226.67,
                      21227.07])
    clip = np.full(40, 6.0)
    clip[16] = 3.0
    p = DetectionParams()
    out = pixel_intervals(r, s, sky, p, p.thresholds(1_000_000, 40), clip=clip, vnull=(G1, G2, 3.0),
                          prior=(0.0025, 1.035e-3, -0.0008, 5.38e-6, 0.812, 2.96e-4), hours=hours,
                          hits=np.array([7672.01]))
    assert out == []


def test_a_growing_hot_pixel_under_a_bright_sky_is_hot_from_its_rise_not_low_before_it():
    # MIRIFULONG, 26 exposures under 4-15 DN/s of sky: a hot pixel growing from exposure 4 on
    # (+0.8, +1.5, then +6 to +9 DN/s). The population's level scatters by ~0.8 DN/s here (the
    # fringes), so the first exposures of the rise and those before it both lie at the
    # neighbours' level; the states further up the rise do not, and when one was refused as the
    # normal state, the state before it (the exposures before the rise and the first of it) was
    # kept and split, the exposures before the rise becoming LOW_QE. The rest is the normal state
    r = np.array([-1.4523, -0.7695, -0.8443, -0.6914, 0.8399, 0.858, 0.7173, 1.5435, 5.6691, 5.9585, 8.3297, 8.0541,
                  7.3308, 8.1484, 8.9147, 6.6279, 6.8449, 8.4252, 8.1569, 8.3279, 8.1475, 8.0006, 8.625, 7.7558,
                  8.3006, 7.5254])
    s = np.array([0.1053, 0.0987, 0.0668, 0.0307, 0.0338, 0.0967, 0.1446, 0.1846, 0.1485, 0.0603, 0.2519, 0.0597,
                  0.0647, 0.0411, 0.2248, 0.2919, 0.2321, 0.0967, 0.1549, 0.2755, 0.1514, 0.2703, 0.0714, 0.1263,
                  0.2817, 0.1817])
    sky = np.array([10.2408, 4.528, 6.6372, 5.3232, 6.7736, 7.1948, 7.2943, 9.9104, 12.0617, 10.2658, 7.0325, 8.2204,
                    13.2948, 7.0363, 5.4759, 14.0796, 14.7956, 4.6641, 8.2016, 5.5907, 5.4819, 6.5913, 4.2987,
                    10.7015, 4.1276, 9.9183])
    hours = np.array([0.0, 0.05, 2263.29, 2263.46, 2662.19, 2662.46, 2677.55, 2886.19, 3912.88, 3913.04, 6674.58,
                      7672.01, 7672.26, 9404.33, 9404.6, 10977.57, 12297.77, 12297.83, 12297.9, 12297.94, 15315.3,
                      15315.34, 19303.66, 20111.71, 21226.29, 21227.07])
    p = DetectionParams()
    out = pixel_intervals(r, s, sky, p, p.thresholds(1_000_000, 40), vnull=(G1, G2, 3.0),
                          prior=(0.024672, 0.019816, -0.001939, 3e-05, 7.165238, 0.577203), hours=hours)
    assert [(w["start"], w["stop"], w["sign"]) for w in out] == [(4, 26, 1)]



def test_a_weak_warm_pixel_within_the_populations_scatter_is_warm_from_its_onset():
    # MIRIMAGE, 27 exposures under 3-30 DN/s of sky: WARM 0.17 DN/s from exposure 8 on. The
    # neighbours' level scatters by 0.09-0.18 DN/s at these skies (a 1.75 % flat field), so
    # every exposure lies at the population, and each of the first eight lies within the noise
    # (0.02-0.3 DN/s) of the warm state too: the warm state was the normal one, beyond the
    # physical limit, and the pixel WARM over the whole series. Together the first eight lie 9
    # sigma off it: once the pixel is known to be bad, that is its onset
    r = np.array([-0.1385, 0.0587, 0.0946, -0.0446, -0.1233, -0.0138, -0.0577, -0.0062, 0.1628, 0.0521, 0.1501,
                  -0.1139, 0.0028, 0.0822, 0.0014, 0.1382, -0.1612, 0.0416, 0.128, -0.0019, 0.105, 0.0597, 0.0214,
                  0.0946, -0.0174, 0.1893, 0.0806])
    s = np.array([0.0298, 0.2999, 0.071, 0.06, 0.0436, 0.1103, 0.1962, 0.0242, 0.022, 0.1475, 0.0354, 0.2433, 0.1555,
                  0.1367, 0.1606, 0.0339, 0.2685, 0.0443, 0.0577, 0.0318, 0.0941, 0.0459, 0.0447, 0.0162, 0.092,
                  0.1091, 0.0542])
    sky = np.array([11.4287, 19.54, 5.7671, 4.6795, 5.3484, 4.4307, 10.2374, 4.7206, 4.6538, 4.6711, 5.4178, 5.3654,
                    5.9974, 3.7322, 9.3399, 3.3052, 30.3268, 9.9819, 8.6088, 10.3274, 9.6215, 9.5577, 10.1561,
                    4.6424, 10.7802, 7.0296, 10.0943])
    p = DetectionParams()
    out = pixel_intervals(r, s, sky, p, p.thresholds(1_000_000, 40), vnull=(G1, G2, 3.0),
                          prior=(-0.001459, 0.000306702, 0.000450136, 4.4709e-05, 6.40491, 0.013937))
    assert [(w["start"], w["stop"], w["sign"]) for w in out] == [(8, 27, 1)]


def test_a_warm_onset_that_a_small_rise_of_response_describes_as_well_is_warm_from_its_onset():
    # SLITLESSPRISM region of an LRS set, 40 exposures under 1.7-5.3 DN/s of sky: a pixel whose
    # own response is 6 % below its neighbours' turned WARM (0.105 DN/s) at exposure 24. Over
    # this range of sky the step is described as well by a 4 % rise of the response (chi^2 57 for
    # the response, 60 for the dark level), which would make the later exposures the normal
    # state and the earlier ones a loss of response too small to be a defect: the pixel went
    # unflagged. A response does not rise by a few percent on its own; a dark current steps
    r = np.array([0.0031, -0.1915, -0.1064, -0.1021, -0.1548, -0.2601, -0.281, -0.2565, -0.3137, -0.3821, -0.1518,
                  -0.2057, -0.4581, -0.1111, -0.1215, -0.1771, -0.1048, -0.0165, -0.3579, -0.1285, -0.3616, -0.411,
                  -0.1078, -0.1917, -0.0124, -0.051, -0.0667, 0.0547, -0.1028, -0.0243, -0.2284, -0.0094, 0.2067,
                  -0.1924, -0.1211, -0.18, -0.029, 0.0153, -0.1172, -0.0897])
    s = np.array([0.1758, 0.2055, 0.0386, 0.0964, 0.0187, 0.0271, 0.0216, 0.0332, 0.0366, 0.1129, 0.0477, 0.0491,
                  0.093, 0.0159, 0.0412, 0.0149, 0.0129, 0.0707, 0.0315, 0.0323, 0.0276, 0.0766, 0.0182, 0.0257,
                  0.0136, 0.0395, 0.0195, 0.064, 0.0247, 0.0099, 0.055, 0.0277, 0.1523, 0.0312, 0.0585, 0.0751,
                  0.0148, 0.0576, 0.1001, 0.1085])
    sky = np.array([2.402, 5.273, 2.665, 2.578, 2.716, 3.522, 4.213, 3.69, 4.757, 3.961, 2.573, 3.202, 4.68, 1.774,
                    2.707, 2.111, 2.295, 2.232, 4.392, 2.161, 4.745, 5.141, 1.7, 3.002, 2.129, 2.163, 2.616, 2.317,
                    2.98, 1.66, 3.881, 1.657, 1.812, 4.812, 3.761, 4.816, 2.046, 2.483, 2.87, 2.106])
    p = DetectionParams()
    out = pixel_intervals(r, s, sky, p, p.thresholds(1_000_000, 40), vnull=(G1, G2, 3.0),
                          prior=(-0.002243, 0.000493037, -0.002687, 1.56975e-05, 2.4605, 0.000134907))
    assert [(w["start"], w["stop"], w["sign"]) for w in out] == [(24, 40, 1)]
    # the same pixel with a real loss of response at exposure 24 (a fifth: LOW_QE's limit) keeps
    # the earlier exposures normal: only a change too small to be a defect gives way
    low = r.copy()
    low[24:] = r[24:] - 0.105 - 0.25 * sky[24:]
    out = pixel_intervals(low, s, sky, p, p.thresholds(1_000_000, 40), vnull=(G1, G2, 3.0),
                          prior=(-0.002243, 0.000493037, -0.002687, 1.56975e-05, 2.4605, 0.000134907))
    assert [(w["start"], w["stop"], w["sign"]) for w in out] == [(24, 40, -1)]


def test_a_pixel_more_responsive_than_its_neighbours_that_turns_warm_is_warm_from_its_onset():
    """150 exposures of skies 2.6-9.8 DN/s; the pixel's response 3 % above its neighbours'
    (within what a flat field does; the population: response 0.004 +- 0.019, dark level
    0.0015 +- 0.002 DN/s, a level scatter of 0.017 DN/s at a sky of 4.5), then a WARM onset of
    0.12 DN/s at exposure 125. Measured at the neighbours' response, the first 125 exposures sit
    0.14 DN/s above them, which reads as a dark rise, and the last 25 lie inside the
    population's band: the onset's state was taken as the normal one and the whole series
    flagged. The pixel's own fit separates the two (dark level 0.001 +- 0.009): it is a response,
    and the defect is the last 25 exposures."""
    rng = np.random.default_rng(11)
    n = 150
    sky = np.exp(rng.uniform(np.log(2.6), np.log(9.8), n))
    s = 0.05 * np.sqrt(sky / 4.6)
    r = 0.031 * sky + rng.normal(0, 1, n) * s
    r[125:] += 0.12
    p = DetectionParams()
    prior = (0.0038, 3.8e-4, 0.0015, 4.3e-6, 4.5, 2.8e-4)
    out = pixel_intervals(r, s, sky, p, p.thresholds(1_000_000, n), vnull=(G1, G2, 3.0), prior=prior)
    assert [(w["start"], w["stop"], w["sign"], w["static"]) for w in out] == [(125, 150, 1, False)]


# MIRIFULONG, 40 exposures, between the channels: 0.02-0.05 DN/s of scattered light that barely
# changes, noise 0.003-0.14 DN/s. The neighbours' levels there scatter by 0.002 DN/s (level
# variance 4.45e-6); the slices' fringes on the same tile scatter theirs by 2 DN/s. A response
# and a dark level cannot be told apart under light that does not change, so only the
# population says which state of a pixel that changed is the normal one
VA, VD, VL = 0.01692, 6.56e-5, 4.45e-6
FAINT = {
    # DEAD from exposure 19 on: its level falls 0.03 DN/s below its neighbours', 14 times their
    # scatter. With the tile's one scatter of the level (the slices', 0.88 (DN/s)^2) the
    # exposures before the onset were a WARM excess over a normal dead state
    "dead": dict(
        r=[-0.0334, -0.047, -0.0091, -0.0036, -0.0061, -0.0159, 0.0075, -0.0229, -0.0014, -0.0817, 0.0161, 0.0406,
           -0.0005, -0.0064, -0.0035, -0.0895, -0.0079, 0.0062, -0.0023, -0.0317, -0.0236, -0.0357, -0.0288, -0.032,
           -0.0299, 0.0061, 0.0017, -0.0456, -0.0192, -0.0525, -0.0157, -0.0403, -0.0333, -0.0336, -0.0333, -0.0368,
           -0.0253, -0.0179, -0.0317, -0.0576],
        s=[0.0202, 0.0427, 0.0047, 0.011, 0.0057, 0.0047, 0.0137, 0.0188, 0.004, 0.0495, 0.0622, 0.0203, 0.0053,
           0.0046, 0.0037, 0.0952, 0.0052, 0.0056, 0.004, 0.0035, 0.0807, 0.0047, 0.0034, 0.0039, 0.0029, 0.0952,
           0.0512, 0.0087, 0.0248, 0.1238, 0.0288, 0.1133, 0.0029, 0.0049, 0.0072, 0.0115, 0.0038, 0.1389, 0.0035,
           0.0352],
        sky=[0.0451, 0.0276, 0.0309, 0.0277, 0.0273, 0.0328, 0.03, 0.0344, 0.0312, 0.0497, 0.0423, 0.0262, 0.0294,
             0.0312, 0.0305, 0.0, 0.0334, 0.0281, 0.0286, 0.025, 0.0262, 0.0283, 0.0296, 0.0289, 0.0284, 0.0767,
             0.0534, 0.0307, 0.0248, 0.0242, 0.0379, 0.0366, 0.0291, 0.0277, 0.0328, 0.0287, 0.0278, -0.0404,
             0.0491, 0.0215],
        ma_md_sk=(-0.0974, 0.00198, 0.0306), found=(19, 40, -1)),
    # LOW_QE (a loss of 0.58) from exposure 11 on (healed and back between two exposures; the
    # fall is within the noise of exposure 11, so found from 12), beside the pixel above. Its
    # level fell 0.017 DN/s below its neighbours', eight times their scatter; the free fit of the
    # low state gave most of the fall to a dark level below the neighbours' (its response 0.13
    # lower), which a dark current cannot be: at the neighbours' dark level it lost 0.85
    "low_qe": dict(
        r=[-0.0451, -0.0842, 0.0044, -0.0153, -0.0071, -0.0001, 0.0053, 0.0194, -0.0051, 0.0176, -0.0382, 0.0019,
           -0.014, -0.0165, -0.0175, -0.0462, -0.0219, -0.0216, -0.0173, -0.0133, 0.0158, -0.009, -0.0246, -0.0129,
           -0.0176, -0.0739, 0.0067, -0.0083, -0.0041, -0.3075, -0.0403, 0.0991, -0.0204, -0.027, -0.009, -0.0042,
           -0.0167, 0.0673, -0.014, 0.0114],
        s=[0.0202, 0.0427, 0.0047, 0.0111, 0.0057, 0.0047, 0.0137, 0.0188, 0.004, 0.0495, 0.0622, 0.0198, 0.0049,
           0.0043, 0.0034, 0.095, 0.0048, 0.0053, 0.0037, 0.0037, 0.0809, 0.005, 0.0036, 0.0041, 0.0031, 0.0955,
           0.0515, 0.0092, 0.0252, 0.1242, 0.0292, 0.1136, 0.003, 0.0051, 0.0075, 0.012, 0.004, 0.1389, 0.0037,
           0.0355],
        sky=[0.0478, 0.0442, 0.0301, 0.03, 0.0344, 0.0322, 0.0349, 0.0393, 0.0351, 0.0144, 0.0262, 0.021, 0.0282,
             0.0288, 0.0298, 0.0215, 0.0305, 0.0305, 0.0275, 0.0339, 0.0263, 0.0333, 0.0315, 0.0279, 0.031, -0.0062,
             0.0218, 0.0336, 0.0318, 0.0809, 0.0394, 0.0367, 0.0316, 0.0314, 0.0276, 0.0256, 0.0303, 0.0583,
             0.0159, 0.0137],
        ma_md_sk=(-0.2625, 0.00933, 0.03), found=(12, 40, -1)),
}


@pytest.mark.parametrize("case", sorted(FAINT))
def test_a_pixel_that_lost_its_response_under_faint_light_is_bad_from_its_onset_not_before(case):
    c = FAINT[case]
    (ma, md, sk), arrays = c["ma_md_sk"], [np.array(c[k]) for k in ("r", "s", "sky")]
    assert [w[:3] for w in _intervals(*arrays, prior=(ma, VA, md, VD, sk, VL))] == [c["found"]]
    if case == "dead":  # what one scatter for the tile said
        assert [w[:3] for w in _intervals(*arrays, prior=(ma, VA, md, VD, sk, 0.88))] == [(2, 19, 1)]


def test_a_rise_of_response_too_small_to_leave_a_defect_behind_is_not_the_normal_state():
    # MIRIMAGE, 27 exposures under 3-38 DN/s of sky: a HOT pixel growing (drift_grow) over the
    # last ten. The raised exposures are described better as a response 2.6 % above the rest
    # than as a dark level (chi^2 51 against 78), and the neighbours' levels at 6 DN/s scatter by
    # 0.11 DN/s (a 1.8 % flat), so the raised state lies within their population: it was taken as
    # the normal state, and the first 21 exposures as a loss of response too small to be a defect
    # (the pixel went unflagged). A response does not rise on its own, and 2.6 % less is what a
    # flat field does: the first exposures are the normal state
    r = np.array([0.1403, 0.2248, 0.1371, -0.0234, 0.0951, 0.1748, 0.5046, 0.0837, 0.0803, -0.2608, 0.0814, -0.1181,
                  0.2627, 0.2182, 0.1171, -0.0054, 0.5651, 0.0153, 0.0858, 0.1591, -0.0535, 0.3557, 0.2903, 0.1508,
                  0.6308, 0.1389, 0.5619])
    s = np.array([0.0295, 0.2763, 0.07, 0.0607, 0.0436, 0.112, 0.1943, 0.0247, 0.0212, 0.1441, 0.0353, 0.2421, 0.156,
                  0.1341, 0.1561, 0.0335, 0.3019, 0.0432, 0.0576, 0.032, 0.0924, 0.0456, 0.0445, 0.0163, 0.0933,
                  0.1104, 0.0566])
    sky = np.array([10.689, 15.541, 5.469, 4.566, 5.195, 4.58, 9.626, 4.721, 4.34, 4.43, 5.344, 5.238, 6.027, 3.605,
                    8.791, 3.284, 38.062, 9.71, 8.353, 10.36, 9.087, 9.159, 9.749, 4.374, 10.67, 6.976, 10.467])
    prior = (0.000137, 0.000359, 0.000741, 4.99e-05, 6.18, 0.0126)
    assert [w[:3] for w in _intervals(r, s, sky, prior=prior)] == [(17, 27, 1)]


def test_a_pixel_outside_the_light_that_loses_all_of_it_is_dead_and_one_losing_a_third_is_not():
    # MIRIFULONG, 40 exposures: a pixel at the frame's lit edge sees 0.18 of the slice's light
    # beside it (0.4-1.4 DN/s) and is outside the light (below 0.3 of it). DEAD from exposure 15.
    # Against the sky around, its loss was 0.15 of that sky, too small to be a defect, and the
    # pixel went unflagged; against its own light it lost 0.97 of it
    r = np.array([0.9397, 0.4095, 0.9341, 0.5453, 0.5379, 0.6975, 1.4264, 0.7565, 0.6865, 0.6933, 0.8727, 1.1451,
                  1.0579, 1.3321, 0.9826, -0.0869, 0.0452, 0.087, 0.0379, 0.0363, 0.1032, 0.0481, 0.0172, 0.0737,
                  0.0346, 0.1596, 0.0641, 0.026, 0.0919, -0.0811, 0.1489, -0.0258, 0.0476, 0.0579, 0.0403, 0.1025,
                  0.0336, 0.2114, 0.0602, 0.1071])
    s = np.array([0.0473, 0.0631, 0.0149, 0.0276, 0.0139, 0.0134, 0.0456, 0.0407, 0.011, 0.0765, 0.0948, 0.0509,
                  0.0191, 0.0188, 0.0127, 0.1148, 0.0068, 0.0079, 0.0032, 0.005, 0.0975, 0.0068, 0.0047, 0.0062,
                  0.0042, 0.1159, 0.0639, 0.0118, 0.0318, 0.1495, 0.0357, 0.1364, 0.0042, 0.007, 0.0095, 0.017,
                  0.0051, 0.1673, 0.0043, 0.0443])
    sky = np.array([5.115, 2.486, 4.806, 2.899, 2.812, 3.796, 7.462, 3.701, 3.66, 3.734, 4.979, 6.137, 5.639, 7.245,
                    5.197, 3.978, 4.167, 7.218, 2.438, 3.851, 2.82, 3.527, 2.846, 6.714, 2.633, 7.252, 7.128, 2.411,
                    4.313, 2.994, 3.163, 3.521, 3.551, 3.849, 2.174, 6.22, 2.253, 2.442, 6.658, 5.646])
    p = DetectionParams()
    prior = (0.209355, 0.016004, 0.026322, 4.9e-05, 3.754715, 0.077598)

    def rows(r, lit):
        return pixel_intervals(r, s, sky, p, p.thresholds(1_000_000, 40), vnull=(G1, G2, 3.0), prior=prior, lit=lit)

    (dead,) = rows(r, lit=False)
    assert (dead["start"], dead["stop"], dead["sign"]) == (15, 40, -1) and dead["deficit"] > 0.95
    assert classify(pd.DataFrame([dead]), p.classes).tolist() == ["DEAD"]
    # its scattered light falling by a third (what the model of that light does between visits)
    # is no defect outside the light, though a third is more than LOW_QE's loss of response
    rng = np.random.default_rng(3)
    third = (0.18 * sky + 0.025) * np.where(np.arange(40) < 15, 1.0, 0.67) + rng.normal(0, s)
    assert rows(third, lit=False) == []


def test_a_gap_pixel_that_lost_all_but_a_twentieth_of_its_light_within_its_error_is_dead():
    # MIRIFULONG, 40 exposures, (669, 538): in a narrow gap between slices, its sky the gap's own
    # light (0.19-0.83 DN/s). DEAD from exposure 35 (12 sigma): it lost 0.947 +- 0.006 of its
    # light, 0.053 left where DEAD's limit is 0.05. A limit that ignores the loss's error
    # dropped it; within changepoint_sigma of it, it is kept
    r = np.array([-0.0052, -0.0062, 0.0, -0.0462, -0.0251, -0.0319, -0.0038, -0.0837, -0.0002, 0.0037, -0.0869,
                  -0.096, -0.0464, -0.0152, -0.0387, -0.0561, -0.0172, -0.0377, -0.0284, -0.0096, -0.197, -0.0023,
                  -0.0208, -0.0238, -0.0161, -0.0176, -0.0109, -0.0305, -0.0899, -0.2444, 0.0341, -0.031, -0.014,
                  -0.0279, -0.015, -0.6006, -0.24, -0.2915, -0.6809, -0.6324])
    s = np.array([0.0381, 0.051, 0.0163, 0.0231, 0.0115, 0.0112, 0.0356, 0.032, 0.0107, 0.0626, 0.0802, 0.0409,
                  0.0163, 0.0147, 0.0105, 0.1086, 0.0173, 0.0167, 0.014, 0.0155, 0.091, 0.0128, 0.0116, 0.0154,
                  0.0079, 0.119, 0.0779, 0.0187, 0.04, 0.1347, 0.0412, 0.1255, 0.0082, 0.0131, 0.0151, 0.0149, 0.0052,
                  0.141, 0.0041, 0.0407])
    sky = np.array([0.592, 0.2808, 0.4732, 0.3964, 0.3189, 0.4095, 0.7988, 0.4322, 0.4047, 0.4215, 0.6081, 0.6905,
                    0.6033, 0.7277, 0.5846, 0.4029, 0.4845, 0.7666, 0.2796, 0.4197, 0.3322, 0.3672, 0.3307, 0.6966,
                    0.3318, 0.71, 0.825, 0.2768, 0.4919, 0.3413, 0.3296, 0.3681, 0.3629, 0.4383, 0.2653, 0.6233,
                    0.2498, 0.1928, 0.7162, 0.5656])
    prior = (-0.006476, 0.012877, -0.001058, 1.9e-05, 0.478524, 0.151713)
    p = DetectionParams()
    (dead,) = pixel_intervals(r, s, sky, p, p.thresholds(1_000_000, 40), vnull=(G1, G2, 3.0), prior=prior,
                              lit=False, gap=True)
    assert (dead["start"], dead["stop"], dead["sign"]) == (35, 40, -1) and 0.9 < dead["deficit"] < 0.95


def test_a_pixel_between_the_channels_that_went_dead_late_keeps_its_healthy_exposures_normal():
    # MIRIFUSHORT, 40 exposures, (655, 506): outside the light between the two channels, where its
    # neighbours share a glow of 0.029 DN/s (md of the prior) under 0.2-0.8 DN/s of sky around.
    # DEAD from exposure 35: its level falls to ~0. A step of the dark level, and the lower side
    # was taken as normal: the 35 healthy exposures at the neighbours' level became WARM. Outside
    # the light the whole level is light, so the side at the population's level is normal (the
    # five dead exposures, 6.2 sigma, are below the threshold: no interval at all)
    r = np.array([0.0597, 0.1022, 0.0323, 0.0347, 0.03, 0.0343, 0.0142, 0.0073, 0.0368, 0.0753, 0.0765, 0.0354,
                  0.0251, 0.0274, 0.0315, 0.0679, 0.0306, 0.035, 0.0415, 0.0263, -0.029, 0.0364, 0.0237, 0.0313,
                  0.0309, 0.1605, -0.0288, 0.0322, 0.0332, -0.1947, 0.0105, -0.1399, 0.0356, 0.0364, 0.0446, 0.0066,
                  0.0016, -0.139, -0.0003, 0.0633])
    s = np.array([0.0227, 0.0479, 0.0051, 0.0124, 0.0064, 0.0053, 0.0155, 0.021, 0.0045, 0.0556, 0.0696, 0.0227,
                  0.0057, 0.0053, 0.0042, 0.1067, 0.0058, 0.0064, 0.0035, 0.0044, 0.0913, 0.0061, 0.0044, 0.0049,
                  0.0038, 0.1077, 0.0584, 0.0112, 0.0289, 0.14, 0.0333, 0.1282, 0.004, 0.0062, 0.009, 0.013, 0.0044,
                  0.1565, 0.003, 0.0394])
    sky = np.array([0.5582, 0.2596, 0.4551, 0.3523, 0.2999, 0.3797, 0.7608, 0.3949, 0.3844, 0.4119, 0.5533, 0.6421,
                    0.5552, 0.6899, 0.5489, 0.3981, 0.4493, 0.7134, 0.2623, 0.3917, 0.3376, 0.3427, 0.3062, 0.6554,
                    0.3076, 0.713, 0.7817, 0.2614, 0.479, 0.3489, 0.2993, 0.3791, 0.3481, 0.4054, 0.2463, 0.5914,
                    0.2332, 0.2018, 0.6752, 0.5516])
    prior = (0.00417, 0.000773, 0.028867, 5e-06, 0.438783, 0.000221)
    p = DetectionParams()
    out = pixel_intervals(r, s, sky, p, p.thresholds(1_000_000, 40), vnull=(G1, G2, 3.0), prior=prior, lit=False)
    assert not any(w["start"] < 35 for w in out)


def test_a_pixel_of_a_narrow_gap_that_loses_its_gap_s_light_is_dead_and_one_losing_a_third_is_not():
    # MIRIFULONG, 40 exposures: a pixel in a narrow gap between two slices, its sky the gap's own
    # light (0.4-1.4 DN/s, the sky of the test above; residuals.gap_pixels) of which it sees 0.17
    # more than its gap's median. DEAD from exposure 15: its residual is then minus the light it saw
    rng = np.random.default_rng(8)
    s = np.full(40, 0.02)
    sky = np.array([0.875, 0.398, 0.662, 0.636, 0.444, 0.564, 1.171, 0.624, 0.59, 0.662, 0.842, 1.108, 0.847, 1.01,
                    0.866, 0.616, 0.701, 1.098, 0.388, 0.568, 0.519, 0.483, 0.457, 1.001, 0.507, 1.218, 1.4, 0.408,
                    0.724, 0.509, 0.469, 0.587, 0.497, 0.64, 0.393, 0.854, 0.333, 0.399, 1.04, 0.818])
    own = 1.17 * sky
    lost = np.where(np.arange(40) < 15, 1.0, 0.02)
    p = DetectionParams()
    prior = (0.0, 0.01, 0.0, 1e-4, 0.7, 0.01)

    def rows(r, gap):
        return pixel_intervals(r, s, sky, p, p.thresholds(1_000_000, 40), vnull=(G1, G2, 3.0), prior=prior,
                               lit=False, gap=gap)

    (dead,) = rows(own * lost - sky + rng.normal(0, s), gap=True)
    assert (dead["start"], dead["stop"], dead["sign"]) == (15, 40, -1) and dead["deficit"] > 0.95
    assert classify(pd.DataFrame([dead]), p.classes).tolist() == ["DEAD"]
    # a third of it lost is no defect outside the light
    assert rows(own * np.where(np.arange(40) < 15, 1.0, 0.67) - sky + rng.normal(0, s), gap=True) == []


def test_a_dead_pixel_whose_response_follows_the_sky_a_little_is_dead_from_its_onset_not_noisy_throughout():
    # imager, 27 exposures under 4-38 DN/s: normal, then DEAD from exposure 20 (6 % of the sky
    # left). Its residual is that 6 % of the sky less the sky, which follows the sky model to
    # half a percent (0.933-0.944) where its noise, with no photons left, is 0.005-0.04 DN/s:
    # 4.3 times its noise about its level, so no steady level, and about zero it made the whole
    # series one span of excess scatter (TELEGRAPH from the first exposure)
    r = np.array([0.06, 0.053, -0.055, -0.044, 0.069, -0.12, -0.045, -0.046, -0.042, -0.11, -0.058, -0.24, 0.0,
                  -0.036, -0.309, -0.024, -0.343, 0.095, -0.019, -0.034, -9.31, -9.308, -9.897, -4.514, -10.746,
                  -7.031, -10.521])
    s = np.array([0.031, 0.275, 0.073, 0.063, 0.045, 0.116, 0.202, 0.026, 0.022, 0.149, 0.037, 0.248, 0.161, 0.138,
                  0.162, 0.035, 0.301, 0.045, 0.06, 0.033, 0.027, 0.012, 0.012, 0.005, 0.026, 0.039, 0.016])
    sky = np.array([11.57, 15.4, 6.07, 4.95, 5.55, 4.87, 10.68, 5.07, 4.76, 4.77, 5.81, 5.49, 6.61, 3.83, 9.51, 3.57,
                    38.05, 10.6, 8.95, 11.15, 9.86, 9.87, 10.51, 4.81, 11.51, 7.55, 11.19])
    prior = (-0.003859, 3.59e-4, 0.002308, 4.99e-5, 6.589, 0.012565)
    assert _intervals(r, s, sky, prior=prior) == [(20, 27, -1, False)]


def test_a_pixel_dead_from_its_second_exposure_is_dead_from_it():
    # imager, 27 exposures: normal in the first, DEAD from the second (2.7 % of the sky left).
    # Its dead state is the normal one (26 of 27) and lies beyond DEAD's limit, but the
    # response follows the sky model to a few tenths of a percent (0.962-0.977 of it lost, 1.03
    # in two short exposures) where its noise, with no photons left, is 0.003-0.02 DN/s: 3 times
    # its noise about the state, so not "one state" in noise units, and no interval at all
    r = np.array([0.1319, -16.86, -5.59, -4.435, -5.133, -4.51, -9.725, -4.516, -4.525, -4.495, -5.229, -5.316,
                  -5.806, -3.646, -8.941, -3.157, -26.76, -9.693, -8.203, -9.869, -9.291, -9.175, -9.729, -4.511,
                  -10.31, -6.586, -9.617])
    s = np.array([0.03, 0.121, 0.0167, 0.014, 0.0095, 0.0512, 0.0858, 0.00514, 0.00487, 0.0828, 0.00735, 0.176,
                  0.0781, 0.0824, 0.0596, 0.00764, 0.0655, 0.00857, 0.0118, 0.00603, 0.0198, 0.00862, 0.00881,
                  0.00343, 0.018, 0.0332, 0.0111])
    sky = np.array([11.23, 17.33, 5.754, 4.569, 5.269, 4.389, 9.991, 4.654, 4.653, 4.66, 5.354, 5.161, 6.007, 3.791,
                    9.156, 3.262, 27.47, 9.945, 8.419, 10.12, 9.56, 9.405, 9.994, 4.643, 10.61, 6.815, 9.889])
    prior = (-0.002004, 3.396e-4, 1.017e-4, 4.786e-5, 6.162, 0.0126)
    p = DetectionParams()
    (w,) = pixel_intervals(r, s, sky, p, p.thresholds(1_000_000, 40), vnull=(G1, G2, 3.0), prior=prior)
    assert (w["start"], w["stop"], w["sign"], w["static"]) == (1, 27, -1, True)
    assert classify(pd.DataFrame([w]), p.classes).iloc[0] == "DEAD"


# an mrs-long pixel of the simulator (40 exposures): noisy from exposure 33, its excursions 20-67
# times its noise both ways, five of its seven below the baseline
NB_R = np.array([-1.7044, -0.6393, -1.2137, -1.1861, -0.8486, -1.0390, -2.1784, -1.1534, -1.0647, -1.2111, -1.4969,
                 -1.9284, -1.5811, -1.8648, -1.6130, -1.0882, -1.3063, -1.9946, -0.6932, -1.0683, -0.7530, -0.9021,
                 -0.8587, -1.7820, -0.8989, -2.2079, -2.3617, -0.7675, -1.4523, -1.2023, -0.8413, -1.0452, -0.8959,
                 -2.8376, 0.4209, -5.1731, -0.3810, -1.7653, -2.6698, -2.4991])
NB_S = np.array([0.0755, 0.0744, 0.0229, 0.0492, 0.0217, 0.0207, 0.0750, 0.0616, 0.0178, 0.0972, 0.1226, 0.0816,
                 0.0308, 0.0296, 0.0214, 0.1394, 0.0286, 0.0335, 0.0113, 0.0188, 0.1178, 0.0236, 0.0166, 0.0268,
                 0.0149, 0.1759, 0.1340, 0.0385, 0.0746, 0.1604, 0.0660, 0.1545, 0.0147, 0.0252, 0.0277, 0.0617,
                 0.0146, 0.1643, 0.0196, 0.0924])
NB_SKY = np.array([6.1034, 2.5716, 4.4005, 4.1994, 3.0631, 3.7668, 8.1756, 4.1231, 3.9775, 4.3052, 5.7961, 7.0366,
                   5.8066, 6.9461, 5.9392, 3.8628, 4.8459, 7.5622, 2.5270, 3.9912, 3.1154, 3.2588, 3.1385, 6.7708,
                   3.3200, 8.3322, 8.9387, 2.7290, 4.7838, 3.2218, 3.0649, 3.8641, 3.3058, 4.2604, 2.5271, 5.8403,
                   2.1284, 2.3573, 7.1053, 5.4945])
NB_PRIOR = (-0.0002536, 0.0137949, -0.0028549, 2.06e-05)


def test_a_noisy_pixel_whose_few_excursions_sit_mostly_below_is_noisy_not_a_level():
    # its last three exposures make a level run below the normal state, and the median of its
    # seven exceeds their robust scatter by chance: a level does not describe a span that goes
    # beyond the event threshold twice on each side (as a small deficit it passed no physical
    # limit, and the pixel had no interval)
    p = DetectionParams()
    out = pixel_intervals(NB_R, NB_S, NB_SKY, p, p.thresholds(1_000_000, 40), prior=NB_PRIOR)
    assert [(w["start"], w["stop"], w["noisy"]) for w in out] == [(33, 40, True)]


def test_a_noisy_span_with_one_huge_rise_and_falls_is_not_one_low_level():
    """lrs-slit (182, 741) of the 40-exposure set, noisy over its last seven exposures: -29,
    -21 and -26 sigma, then +87, 0, -13 and -5.5 about its baseline. The first three make a
    low-QE run; the span of excess scatter over all seven was taken for that one level (its
    median below its robust scatter, one exposure only above the event threshold) and the
    exposures after the run were left unflagged. A rise and a fall beyond the tile's swing
    level within a few exposures are the pixel swinging both ways (a cosmic ray only adds
    charge): the span is noisy to the series' end. Where the noise itself makes such falls
    (a swing level above them), the level still describes it."""
    rng = np.random.default_rng(7)
    n = 40
    sky = rng.uniform(0.6, 1.5, n)
    s = rng.uniform(0.01, 0.06, n)
    r = rng.normal(0, 1, n) * s
    s[33:] = [0.0153, 0.0182, 0.0365, 0.0097, 0.1535, 0.0111, 0.0607]  # DN/s, as the pixel's
    r[33:] = np.array([-29.0, -21.0, -26.0, 87.0, 0.2, -13.0, -5.5]) * s[33:]
    p = DetectionParams()
    th = p.thresholds(1_000_000, n)
    for swing, noisy_to_end in ((11.5, True), (np.inf, False)):
        ev = pd.DataFrame(pixel_intervals(r, s, sky, p, th._replace(swing=swing)))
        assert len(ev) >= 1 and ev.start.min() == 33
        assert (ev.stop.max() == n and bool(ev.noisy.any())) == noisy_to_end, (swing, ev[["start", "stop", "noisy"]])


def test_a_noisy_pixel_s_low_excursions_are_not_the_state_its_healthy_exposures_are_an_excess_over():
    # LRS slit, 40 full frames: a pixel at its neighbours' level, noisy from exposure 33 with its
    # largest excursions below (-10 and -9.7 sigma at 36 and 38). The four exposures from 36 on
    # were taken for the normal state (the lowest dark level; a step's lower side), and the 36
    # healthy ones for a WARM excess over it. Those 36 each lie at the neighbours' level and the
    # four 4.8 standard errors below it at the neighbours' response: a dark current does not fall
    # below the normal one, so the healthy exposures are normal and the excursions a run below them
    r = np.array([0.0337, -0.0079, -0.0195, -0.024, -0.0182, -0.0184, -0.0503, 0.0232, -0.0185, 0.0769,
                  -0.0772, 0.0445, -0.029, -0.0598, -0.0408, -0.1032, -0.05, -0.0596, -0.0177, -0.0245,
                  -0.0205, 0.002, -0.0338, -0.0617, -0.0187, 0.0067, -0.0788, -0.0357, -0.0627, -0.0055,
                  -0.1216, -0.1095, -0.0156, -0.0315, 0.0601, -0.0087, -0.1001, -0.2419, -0.1057, -0.1697])
    s = np.array([0.0447, 0.0558, 0.0132, 0.0286, 0.0133, 0.0126, 0.0423, 0.0379, 0.0106, 0.0681, 0.0845,
                  0.0472, 0.0177, 0.0168, 0.0121, 0.1107, 0.0161, 0.0189, 0.0067, 0.0108, 0.0951, 0.0146,
                  0.0098, 0.0151, 0.0089, 0.1234, 0.0838, 0.0241, 0.0467, 0.1379, 0.0457, 0.1281, 0.009,
                  0.0149, 0.0177, 0.036, 0.0095, 0.1491, 0.0109, 0.0595])
    sky = np.array([1.377, 0.687, 1.127, 0.98, 0.811, 0.961, 1.824, 1.02, 0.991, 1.046, 1.344, 1.59, 1.372,
                  1.638, 1.371, 1.052, 1.151, 1.722, 0.704, 1.001, 0.816, 0.877, 0.815, 1.583, 0.837, 1.834,
                  1.904, 0.713, 1.161, 0.849, 0.838, 0.943, 0.882, 1.047, 0.686, 1.426, 0.631, 0.649, 1.63,
                  1.3])
    p = DetectionParams()
    out = pixel_intervals(r, s, sky, p, p.thresholds(1_000_000, 40), vnull=(G1, G2, 3.0),
                          prior=(-0.00222, 0.000322, -0.00212, 8.1e-06, 0.995, 0.000288))
    assert [(w["start"], w["stop"], w["sign"]) for w in out] == [(36, 40, -1)]



def test_a_level_one_deep_exposure_carries_between_short_ones_is_a_hit_not_a_defect():
    # LRS slit, 40 full frames: a normal pixel hit by a cosmic ray the jump step missed in
    # exposure 24 (2,042 s, 7.4 sigma), followed by two short ones (47 s and 72 s, noise 14 and
    # 9 times larger) at +1.5 and +2.1 sigma, then normal. Weighed by the level each exposure
    # sees, the deep one carried the run 24-26 to 6.6 sigma (threshold 6.4): a WARM pixel for
    # three exposures. Seven pixels of that set held such a run over the same three exposures.
    r = np.array([0.0756, 0.0341, 0.0148, 0.0003, 0.0107, -0.0025, 0.1075, 0.0258, -0.005, 0.0062, 0.1465,
                  -0.0451, 0.0073, 0.0244, -0.0171, 0.3299, 0.0266, 0.0247, 0.0164, 0.0001, 0.0137, 0.0013,
                  -0.0023, 0.0219, 0.0744, 0.21, 0.1929, 0.009, -0.0102, 0.0657, 0.0111, 0.0388, 0.0071,
                  -0.0122, 0.0049, 0.0327, -0.0199, 0.0088, 0.0202, -0.0474])
    s = np.array([0.0441, 0.0568, 0.0139, 0.0271, 0.0135, 0.013, 0.0423, 0.0381, 0.0108, 0.0682, 0.0844,
                  0.0471, 0.018, 0.0176, 0.012, 0.1129, 0.0161, 0.0192, 0.0068, 0.011, 0.0949, 0.0153,
                  0.0098, 0.0157, 0.0087, 0.1235, 0.0822, 0.0242, 0.0472, 0.1374, 0.047, 0.1281, 0.0096,
                  0.0148, 0.0179, 0.0379, 0.0099, 0.1498, 0.0111, 0.0617])
    sky = np.array([1.309, 0.735, 1.222, 0.844, 0.811, 1.012, 1.814, 1.021, 0.997, 1.001, 1.309, 1.538,
                    1.411, 1.755, 1.333, 0.99, 1.117, 1.76, 0.725, 1.035, 0.829, 0.959, 0.811, 1.643, 0.781,
                    1.818, 1.741, 0.719, 1.129, 0.81, 0.86, 0.932, 0.961, 1.028, 0.683, 1.544, 0.685, 0.71,
                    1.669, 1.451])
    p = DetectionParams()
    th = p.thresholds(1_000_000, 40)

    def runs(r, s, sky):
        out = pixel_intervals(r, s, sky, p, th, vnull=(G1, G2, 3.0),
                              prior=(0.00239, 0.000337, -0.00031, 8.21e-06, 1.02, 0.000336))
        return [(w["start"], w["stop"], w["sign"]) for w in out]

    assert runs(r, s, sky) == []
    # the next deep exposure (27, 0.024 DN/s noise) shows the same excess: two carry the level
    seen_twice = r.copy()
    seen_twice[27] += 0.1
    assert runs(seen_twice, s, sky) == [(24, 28, 1)]
    # the excess holds from 24 on: a step
    step = r.copy()
    step[27:] += 0.07
    assert runs(step, s, sky) == [(24, 40, 1)]
    # the series ends after 26: nothing shows that the level fell back, and the run stays
    assert runs(r[:27], s[:27], sky[:27]) == [(24, 27, 1)]

def test_a_step_down_is_no_pair_of_falls_about_the_running_median():
    """Stressed lrs (841, 428), 20 exposures as its tile gives them to the analysis: normal, then
    from exposure 13 a loss of 18-77 sigma (LOW_QE, following the sky). About the first look's
    running median of 5 the step's edge leaves two exposures far below, which the two-falls rule
    (a pixel's excursions its own, ``Thresholds.fall``) must not take for a swing: the pixel is
    one low level from 13, as without the rule, not a span of scatter from exposure 2."""
    from lrscube.config import profiles
    from lrscube.detection.states import Thresholds

    f32 = lambda v: np.array(v, np.float32)  # noqa: E731
    r = f32([-0.0013962605, 0.0077169738, -0.057073973, -0.032256648, -0.016136646, -0.047562212, -0.065374404,
             -0.16343059, -0.0060177594, -0.05090607, 0.079329938, -0.0058872397, -0.014668901, -0.33823141,
             -0.79988563, -0.27307445, -0.2885828, -1.0125192, -0.3435666, -0.42542261])
    s = f32([0.0096670296, 0.013412945, 0.018699873, 0.020831395, 0.012209255, 0.0375790, 0.20104824, 0.16593166,
             0.010021764, 0.010612955, 0.11301699, 0.017510591, 0.018017106, 0.0090500256, 0.018778732, 0.011006000,
             0.0039345687, 0.055041533, 0.016674282, 0.019301418])
    sky = f32([0.44184244, 0.40292999, 0.86798239, 0.54926401, 1.0221208, 2.2660131, 0.3502149, 0.36951262,
               0.39561415, 1.1389105, 0.35299596, 0.32276809, 0.61232418, 0.35583627, 0.87462556, 0.33273083,
               0.31288189, 1.2376041, 0.40071818, 0.47068682])
    hours = np.array([1435369.22457254, 1435369.5896609, 1435369.8237057, 1435370.00841645, 1435762.86147868,
                      1435763.23967139, 1435763.32455779, 1437193.24191009, 1437193.46863186, 1437194.08732804,
                      1437194.51100057, 1444121.71392128, 1444121.88360057, 1449038.16523278, 1449038.28403634,
                      1449038.39358976, 1449038.81687687, 1451687.2261162, 1451687.28633558, 1453896.07991225])
    m1, m2 = gaussian_clipped_moments(1.0, 3.0)
    n = r.size
    vnull = (np.full(n, m1), np.full(n, m2), np.full(n, 3.0))
    prior = (0.009451421909034252, 0.0012968393499921955, -0.0004102825769223273, 4.422977681173957e-06,
             0.464888317973596, 0.000350316319721532)
    p = DetectionParams.from_profile(profiles.load("lrs"))
    got = {}
    for fall in (np.inf, 5.0):
        th = Thresholds(6.425510161555801, 6.319238126711501, 5.532650737146643, 3.154271640826873e-08, swing=15.0,
                        fall=fall)
        rows = pixel_intervals(r, s, sky, p, th, np.full(n, 6.0), vnull, prior=prior, hours=hours,
                               line_response=0.9975892305374146, hits=np.array([]))
        got[fall] = [(w["start"], w["stop"], bool(w.get("noisy"))) for w in rows]
    assert got[np.inf] == [(13, 20, False)]
    assert got[5.0] == got[np.inf]


# 75 FULL exposures of the full-size simulated LRS set (150 exposures over 900 days; 0.7-4.5
# DN/s of sky): a pixel's calibrated noise and sky, and its neighbours' population
S75 = np.array([0.0196, 0.0424, 0.0176, 0.0117, 0.0641, 0.0107, 0.2025, 0.0143, 0.1515, 0.0088, 0.0786, 0.0275,
                0.1686, 0.156, 0.0305, 0.0077, 0.1257, 0.0469, 0.0961, 0.0194, 0.0218, 0.1484, 0.0119, 0.0134, 0.0111,
                0.0663, 0.0299, 0.0143, 0.0235, 0.0451, 0.0313, 0.0107, 0.0236, 0.0342, 0.0092, 0.0422, 0.0245,
                0.1173, 0.0497, 0.0318, 0.0192, 0.0217, 0.1315, 0.009, 0.1169, 0.0469, 0.1018, 0.01, 0.1472, 0.1575,
                0.0749, 0.0273, 0.0125, 0.0178, 0.0096, 0.0248, 0.0271, 0.0087, 0.0256, 0.0206, 0.0104, 0.0174, 0.029,
                0.0253, 0.0272, 0.1196, 0.0464, 0.0764, 0.0128, 0.1953, 0.0387, 0.0904, 0.0151, 0.0159, 0.028])
SKY75 = np.array([1.767, 2.001, 0.883, 1.115, 1.219, 1.368, 2.004, 1.903, 0.918, 0.849, 0.749, 0.852, 1.085, 1.185,
                  2.086, 0.75, 4.408, 2.108, 0.91, 1.044, 0.865, 0.703, 1.724, 1.648, 1.048, 0.801, 0.868, 0.967, 0.742,
                  0.685, 1.375, 1.234, 1.398, 1.733, 0.708, 0.791, 0.846, 1.817, 1.163, 1.836, 0.785, 1.129, 1.813,
                  1.048, 0.807, 0.717, 0.838, 0.785, 2.895, 4.536, 1.448, 1.015, 2.088, 0.912, 0.943, 0.828, 0.88,
                  0.704, 2.01, 3.197, 0.877, 1.477, 1.132, 1.549, 0.944, 2.07, 0.777, 0.731, 1.641, 1.356, 1.367,
                  1.329, 0.711, 1.187, 1.805])
PRIOR75 = (-0.0100, 3.26e-4, 0.00026, 3.27e-6, 1.122, 3.02e-4)


def _full_size(r, prior=PRIOR75):
    p = DetectionParams()
    out = pixel_intervals(r, S75, SKY75, p, p.thresholds(1024 * 1032, 150), vnull=(G1, G2, 3.0), prior=prior)
    return [(w["start"], w["stop"], w["sign"]) for w in out]


def test_a_weak_warm_pixel_from_its_seventh_exposure_is_warm_and_within_a_scattered_population_normal():
    # WARM 0.04 DN/s from exposure 6 on: stacked over its 69 exposures 10 sigma, but the six
    # exposures before it show the change at 5.7, under the threshold of a new defect (6.7).
    # Rate files are dark-subtracted, so a dark excess of 0.04 DN/s over the neighbours' is a
    # WARM pixel whenever it began, and once it is known to be one, the six date its onset.
    # Where the neighbours' own dark levels scatter by 0.02 DN/s, it is one of them; 0.012
    # DN/s is below the weakest WARM
    rng = np.random.default_rng(11)
    normal = PRIOR75[0] * SKY75 + PRIOR75[2] + rng.normal(0, S75)
    assert _full_size(normal) == []
    warm = normal.copy()
    warm[6:] += 0.04
    assert _full_size(warm) == [(6, 75, 1)]
    scattered = PRIOR75[:3] + (0.02 ** 2,) + PRIOR75[4:]
    assert _full_size(warm, scattered) == []
    faint = normal.copy()
    faint[6:] += 0.012
    assert _full_size(faint) == []


def test_a_warm_pixel_with_a_low_response_is_warm_to_the_series_end():
    # The full-size set's (31, 652): response 6 % below its neighbours', WARM 0.088 DN/s from
    # exposure 32 to the end. A state fitted over all its exposures, the normal ones included,
    # is neither of its two: it made the first 32 a loss of response, or (judged against the
    # physical limit) its last 17, under other skies, a recovery. The warm state is that of its
    # exposures after the onset
    r = np.array([-0.1275, 0.0087, -0.0889, -0.0572, -0.0205, -0.0732, -0.1825, -0.0925, 0.0718, -0.0372, -0.1221,
                  -0.0992, -0.1599, 0.091, -0.0965, -0.0321, -0.2116, -0.0895, -0.1252, -0.0398, -0.0345, 0.0064,
                  -0.1059, -0.0732, -0.0519, -0.0596, -0.0868, -0.0512, -0.0371, -0.0557, -0.0506, -0.059, 0.0107,
                  -0.0376, 0.0282, 0.0329, 0.045, 0.0992, 0.0596, 0.0085, 0.0893, 0.0098, -0.0327, 0.0306, -0.0788,
                  0.0558, -0.024, 0.0438, -0.0081, -0.059, 0.1458, 0.0634, -0.0171, 0.0156, 0.0332, 0.1019, 0.0377,
                  0.056, -0.011, -0.075, 0.0366, -0.0202, 0.0211, 0.0205, 0.0578, -0.18, 0.1161, -0.0487, 0.0142,
                  -0.1516, 0.0191, -0.0763, 0.0607, 0.0296, 0.0348])
    assert _full_size(r) == [(32, 75, 1)]


def test_a_pixel_at_a_fringe_peak_is_no_warm_pixel_for_the_light_its_response_does_not_scale():
    # Stressed MIRIFUSHORT set, 40 exposures under 0.1-3.9 DN/s of sky: a normal pixel whose
    # response is 1.27 of its neighbours' (a fringe peak; theirs scatter by 4 %). Against a sky
    # model that its response scales, it reads a dark excess of 0.025 DN/s, 8 sigma: light that
    # its response does not scale (stray light) reads as a dark level in proportion to how far
    # its response is off. So WARM from 0.02 DN/s holds for a pixel whose response is one of
    # its neighbours'; this one needs static_excess_dn_s, as a real WARM pixel of 0.12 has
    r = np.array([0.0979, 0.0403, 0.3059, 0.07, 0.3207, 0.2189, 0.1768, 0.1585, 0.0938, 0.1019, 0.0858, 0.1974,
                  0.1379, 0.2709, 0.3249, 0.2313, 0.3075, 0.0802, 0.1, 0.2662, 0.0786, -0.2048, 0.8535, 0.1387,
                  0.1355, 1.1181, 0.4415, 0.1912, 0.1254, 0.0738, 0.17, 0.103, 0.3031, 0.1755, 0.0761, 0.0853,
                  0.1436, 0.0724, 0.0329, 0.1595])
    s = np.array([0.0053, 0.0408, 0.0245, 0.0108, 0.0152, 0.0147, 0.0109, 0.0182, 0.0067, 0.0149, 0.0061,
                  0.1766, 0.0091, 0.0223, 0.0264, 0.1151, 0.0103, 0.0105, 0.0057, 0.1944, 0.0085, 0.2624,
                  0.2141, 0.0142, 0.0128, 0.2308, 0.1191, 0.0196, 0.0073, 0.0243, 0.0152, 0.0223, 0.0094,
                  0.0211, 0.0055, 0.0049, 0.1048, 0.0129, 0.0484, 0.0147])
    sky = np.array([0.242, 0.257, 1.117, 0.152, 1.114, 0.77, 0.489, 0.433, 0.281, 0.29, 0.243, 0.805, 0.406,
                    0.92, 1.1, 0.097, 0.997, 0.196, 0.25, 0.987, 0.178, 0.205, 0.932, 0.485, 0.44, 3.9, 0.728,
                    0.598, 0.384, 0.167, 0.484, 0.404, 1.049, 0.499, 0.241, 0.196, 0.783, 0.177, 0.127, 0.447])
    p = DetectionParams()
    prior = (0.0331, 1.52e-3, 0.00374, 1.93e-6, 0.351, 1.92e-4)

    def found(r):
        out = pixel_intervals(r, s, sky, p, p.thresholds(1024 * 1032, 40), vnull=(G1, G2, 3.0), prior=prior)
        return [(w["start"], w["stop"], w["sign"]) for w in out]

    assert found(r) == []
    assert found(r + 0.12) == [(0, 40, 1)]
