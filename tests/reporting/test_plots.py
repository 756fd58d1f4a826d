"""Figures of the report: each a pure function of small tables, checked without a store."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from lrscube import plots


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=50)
    data = buf.getvalue()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return data


def _texts(fig: Figure) -> str:
    out = [t.get_text() for t in fig.findobj(lambda o: hasattr(o, "get_text"))]
    return " | ".join(out)


def test_mjd_to_datetime_and_class_order():
    assert plots.mjd_to_datetime(60000.0) == pd.Timestamp("2023-02-25")
    assert pd.isna(plots.mjd_to_datetime(np.nan))
    assert list(plots.mjd_to_datetime(np.array([60000.0, 60000.5]))) == [pd.Timestamp("2023-02-25"),
                                                                          pd.Timestamp("2023-02-25 12:00")]
    assert plots.class_order(["DEAD", "NON_SCIENCE", "HOT", "DO_NOT_USE"]) == ["HOT", "DEAD", "DO_NOT_USE", "NON_SCIENCE"]
    colors = plots.class_colors(["HOT", "NON_SCIENCE", "RC"])
    assert colors["HOT"] == "tab:red" and len(set(colors.values())) == 3


def test_class_counts_figure():
    t = pd.to_datetime(["2023-01-01", "2023-02-01", "2023-03-01"])
    fig = plots.class_counts_figure(pd.DataFrame({"WARM": [0, 2, 1], "HOT": [1, 1, 3]}, index=t))
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[:2] == ["HOT (now 3, max 3)", "WARM (now 1, max 2)"]  # lrscube's class order
    assert any(lab.startswith("sum of classes (now 4)") for lab in labels)
    _png(fig)


def test_class_counts_log_scale_when_static_bits_dominate():
    t = pd.to_datetime(["2023-01-01", "2023-02-01"])
    fig = plots.class_counts_figure(pd.DataFrame({"HOT": [1, 2], "NON_SCIENCE": [5000, 5000]}, index=t))
    assert fig.axes[0].get_yscale() == "symlog"


@pytest.mark.parametrize("func", [plots.class_counts_figure, plots.amplitude_histograms_figure,
                                  plots.pixel_histories_figure, plots.epoch_timeline_figure,
                                  plots.coverage_figure, plots.deliveries_figure, plots.diff_map_figure])
def test_empty_inputs_draw_a_note(func):
    arg = [] if func is plots.pixel_histories_figure else pd.DataFrame()
    fig = func(arg)
    assert isinstance(fig, Figure)
    assert "no " in _texts(fig)
    _png(fig)


def test_maps_full_frame_y_upward_with_outlines():
    pix = pd.DataFrame({"y": [10, 900, 500], "x": [5, 1000, 40], "flag": ["HOT", "DEAD", "NON_SCIENCE"],
                        "onset_mjd": [np.nan, 60010.0, 60100.0], "recovered": [False, True, False]})
    outlines = {"SLITLESSPRISM": (528, 944, 0, 72)}
    for fig in (plots.onset_map_figure(pix, (1024, 1032), outlines), plots.class_map_figure(pix, (1024, 1032), outlines)):
        ax = fig.axes[0]
        y0, y1 = ax.get_ylim()
        assert y0 < y1 and (y0, y1) == (-0.5, 1023.5)  # row 0 at the bottom, as astronomers display it
        assert ax.get_xlim() == (-0.5, 1031.5)
        assert "SLITLESSPRISM" in _texts(fig)
        _png(fig)
    assert "HOT (1)" in _texts(plots.class_map_figure(pix, (1024, 1032)))
    # the onset colour bar is labelled with dates
    assert "2023-" in _texts(plots.onset_map_figure(pix))


def test_maps_rasterise_many_pixels():
    rng = np.random.default_rng(0)
    n = plots.MAX_MARKERS + 10
    pix = pd.DataFrame({"y": rng.integers(0, 1024, n), "x": rng.integers(0, 1032, n),
                        "flag": np.where(rng.random(n) < 0.5, "HOT", "NON_SCIENCE"),
                        "onset_mjd": np.where(rng.random(n) < 0.5, np.nan, 60000 + rng.random(n) * 100)})
    fig = plots.class_map_figure(pix)
    assert fig.axes[0].images  # drawn as images, not 20000 markers
    assert plots.onset_map_figure(pix).axes[0].images


def test_empty_maps():
    for f in (plots.onset_map_figure, plots.class_map_figure):
        assert "no defective pixels" in _texts(f(pd.DataFrame(columns=["y", "x", "flag", "onset_mjd"])))


def test_amplitude_histograms_per_class_and_log_bins():
    iv = pd.DataFrame({"flag": ["HOT"] * 4 + ["DEAD"] * 2 + ["WARM"],
                       "amplitude": [0.5, 5.0, 50.0, 500.0, -9.0, -8.0, np.nan]})
    fig = plots.amplitude_histograms_figure(iv)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["HOT: 4 intervals, median 27.5", "DEAD: 2 intervals, median -8.5"]  # NaN-only WARM left out
    assert fig.axes[0].get_xscale() == "log" and fig.axes[1].get_xscale() == "linear"
    _png(fig)


def test_pixel_histories_shade_intervals_open_ends():
    t = pd.date_range("2023-01-01", periods=20, freq="7D").to_numpy()
    r = np.r_[np.zeros(10), np.full(10, 5.0)]
    h = [{"title": "y=1, x=2: HOT", "time": t, "residual": r, "err": np.ones(20),
          "spans": [(pd.Timestamp(t[10]), None, "HOT")]},
         {"title": "y=3, x=4: DEAD", "time": t, "residual": -r, "err": np.ones(20),
          "spans": [(None, pd.Timestamp(t[5]), "DEAD"), (pd.Timestamp(t[12]), pd.Timestamp(t[15]), "WARM")]}]
    fig = plots.pixel_histories_figure(h)
    assert len(fig.axes) == 2
    from matplotlib.patches import Polygon, Rectangle

    def spans(ax):
        return [p for p in ax.patches if isinstance(p, (Polygon, Rectangle))]

    assert len(spans(fig.axes[0])) == 1 and len(spans(fig.axes[1])) == 2
    # an open end runs to the axis limit, a closed one stops at its end
    import matplotlib.dates as mdates

    x0, x1 = fig.axes[0].get_xlim()
    hot = spans(fig.axes[0])[0]
    xs = hot.get_transform().transform(hot.get_path().vertices)[:, 0]
    xs = fig.axes[0].transData.inverted().transform(np.c_[xs, np.zeros_like(xs)])[:, 0]
    assert np.isclose(xs.max(), x1) and np.isclose(xs.min(), mdates.date2num(t[10]))
    assert "y=1, x=2: HOT" in _texts(fig)
    _png(fig)


def test_epoch_timeline():
    ep = pd.DataFrame({"time": pd.to_datetime(["2023-01-01", "2023-02-01", "2023-03-01"]),
                       "HOT": [1, 3, 2], "DO_NOT_USE": [1, 3, 3]})
    et = pd.date_range("2023-01-01", periods=10, freq="7D").to_numpy()
    fig = plots.epoch_timeline_figure(ep, et)
    assert "3 epochs" in fig.axes[0].get_title()
    assert "HOT (last 2)" in _texts(fig)
    _png(fig)


def test_coverage_by_month_subarray_and_exp_type():
    ex = pd.DataFrame({"time": pd.to_datetime(["2023-01-03", "2023-01-20", "2023-03-02", "2023-03-05"]),
                       "subarray": ["FULL", "SLITLESSPRISM", "SLITLESSPRISM", "SLITLESSPRISM"],
                       "exp_type": ["MIR_LRS-FIXEDSLIT", "MIR_LRS-SLITLESS", "MIR_LRS-SLITLESS", ""]})
    fig = plots.coverage_figure(ex)
    top, bottom = fig.axes
    # three months (February empty) x two subarrays
    assert len(top.patches) == 3 * 2
    heights = sorted(p.get_height() for p in top.patches)
    assert heights == [0, 0, 0, 1, 1, 2]
    assert "(none) (1)" in _texts(fig)
    _png(fig)


def test_diff_map_gained_filled_lost_open_by_class():
    ch = pd.DataFrame({"y": [600, 600, 100], "x": [30, 30, 500], "class": ["HOT", "DO_NOT_USE", "WARM"],
                       "change": ["gained", "gained", "lost"]})
    fig = plots.diff_map_figure(ch, (1024, 1032), {"slitless": (528, 944, 0, 72)})
    text = _texts(fig)
    assert "HOT (+1 -0)" in text and "WARM (+0 -1)" in text and "DO_NOT_USE (+1 -0)" in text and "slitless" in text
    ax = fig.axes[0]
    assert ax.get_ylim() == (-0.5, 1023.5)
    pts = {}
    for col in ax.collections:
        for (x, y) in col.get_offsets():
            filled = len(col.get_facecolors()) and col.get_facecolors()[0][3] > 0
            pts.setdefault((int(x), int(y)), set()).add(bool(filled))
    assert pts[(30, 600)] == {True} and pts[(500, 100)] == {False}
    _png(fig)


def test_deliveries_figure_one_row_per_delivery():
    files = pd.DataFrame({"delivery": ["a", "a", "b"], "created": ["2024-01-01", "2024-01-01", "2024-06-01"],
                          "useafter": ["2023-01-01T00:00:00", "2023-02-01T00:00:00", "2023-01-01T00:00:00"]})
    fig = plots.deliveries_figure(files)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["a", "b"]
    assert "2 files" in _texts(fig) and "1 file" in _texts(fig)
    _png(fig)
