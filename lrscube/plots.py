"""The report's figures: one function per figure, each a pure function of plain tables/arrays.

Every function takes pandas/numpy data (never a store), returns a ``matplotlib.figure.Figure``
built without pyplot (no global state, no display needed: ``fig.savefig`` renders with Agg),
and draws something sensible, with a note on the axes, when its input is empty. Preparing the
inputs from a store (which pixels, which counts) is :mod:`lrscube.report`'s job.

Conventions: detector maps show the full frame with y (row) increasing upward, as astronomers
display it, 0-based full-frame pixel indices on the axes; times are UTC dates on the x axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg", force=False)  # noqa: E402  (a no-op when a backend is already chosen)

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from .config import flags, profiles

#: MJD 0 as pandas Timestamp: ``MJD0 + pd.to_timedelta(mjd, "D")`` is the UTC time
MJD0 = pd.Timestamp("1858-11-17")
#: a fixed colour per defect class, so every figure of a report agrees
CLASS_COLORS = {"HOT": "tab:red", "WARM": "tab:orange", "DEAD": "black", "LOW_QE": "tab:blue",
                "TELEGRAPH": "tab:purple", "OTHER_BAD_PIXEL": "tab:green"}
_EXTRA_COLORS = ["tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray", "gold", "navy", "teal"]
#: above this many pixels a detector map is drawn as an image rather than as markers
MAX_MARKERS = 20000
#: marker area (points^2) of one pixel on a detector map
MARKER_SIZE = 16


def mjd_to_datetime(mjd) -> pd.DatetimeIndex | pd.Timestamp:
    """MJD (UTC) float(s) -> pandas datetime(s); NaN -> NaT."""
    if np.ndim(mjd) == 0:
        return pd.NaT if not np.isfinite(mjd) else MJD0 + pd.to_timedelta(float(mjd), "D")
    return MJD0 + pd.to_timedelta(np.asarray(mjd, dtype="float64"), "D")


def class_order(names) -> list[str]:
    """Defect classes in lrscube's order (HOT, WARM, DEAD, ...), then any other bit names by value."""
    names = {str(n) for n in names}
    known = [c for c in flags.DEFECT_CLASSES if c in names]
    rest = sorted(names - set(known), key=lambda n: (flags.PIXEL.get(n, 2**40), n))
    return known + rest


def class_colors(names) -> dict[str, str]:
    """A colour per class name: fixed for the defect classes, a stable extra palette for others."""
    out, k = {}, 0
    for n in class_order(names):
        if n in CLASS_COLORS:
            out[n] = CLASS_COLORS[n]
        else:
            out[n] = _EXTRA_COLORS[k % len(_EXTRA_COLORS)]
            k += 1
    return out


def _empty(fig: Figure, ax, text: str) -> Figure:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=12, color="0.3")
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def _date_axis(ax) -> None:
    loc = mdates.AutoDateLocator(minticks=3, maxticks=9)
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))


# --------------------------------------------------------------------------- defects over time


def class_counts_figure(counts: pd.DataFrame, title: str = "Defective pixels by class") -> Figure:
    """Number of defective pixels of each class against time.

    Parameters
    ----------
    counts : DataFrame
        Index: times (datetime64, e.g. exposure mid-times); one column per class (DQ bit name);
        values: number of pixels of that class bad at that time.

    Example
    -------
    >>> t = pd.to_datetime(["2023-01-01", "2023-02-01"])
    >>> fig = class_counts_figure(pd.DataFrame({"HOT": [3, 5]}, index=t))
    """
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    ax = fig.add_subplot()
    if counts is None or counts.empty or counts.shape[1] == 0:
        return _empty(fig, ax, "no defect intervals")
    colors = class_colors(counts.columns)
    t = pd.to_datetime(counts.index)
    for c in class_order(counts.columns):
        ax.step(t, counts[c].to_numpy(), where="post", color=colors[c], lw=1.6,
                label=f"{c} (now {int(counts[c].iloc[-1])}, max {int(counts[c].max())})")
    total = counts.sum(axis=1).to_numpy()
    if counts.shape[1] > 1:
        ax.step(t, total, where="post", color="0.5", lw=1, ls="--", label=f"sum of classes (now {int(total[-1])})")
    ax.set_ylabel("pixels flagged")
    top = float(np.nanmax(total)) if len(total) else 1.0
    nz = counts.max()[counts.max() > 0]
    if len(nz) > 1 and nz.max() / nz.min() > 50:  # a few new defects next to many static ones
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylim(0, top * 2)
    else:
        ax.set_ylim(0, top * 1.08 + 0.5)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    _date_axis(ax)
    return fig


# --------------------------------------------------------------------------- detector maps


def _frame_shape(frame_shape) -> tuple[int, int]:
    """The frame a map is drawn on: ``frame_shape``, or the default mode profile's."""
    return tuple(frame_shape) if frame_shape is not None else profiles.load().frame_shape


def _frame_axes(fig: Figure, frame_shape: tuple[int, int]):
    ax = fig.add_subplot()
    ny, nx = frame_shape
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(-0.5, ny - 0.5)  # y upward: row 0 at the bottom
    ax.set_aspect("equal")
    ax.set_xlabel("x (column, 0-based full frame)")
    ax.set_ylabel("y (row, 0-based full frame)")
    ax.add_patch(Rectangle((-0.5, -0.5), nx, ny, fill=False, lw=0.8, ec="0.6"))
    return ax


def _outlines(ax, outlines: Mapping[str, Sequence[int]] | None) -> list:
    """Draw boxes ``name -> (y0, y1, x0, x1)`` (0-based, half-open); returns legend handles."""
    handles = []
    styles = ["--", ":", "-.", (0, (5, 1, 1, 1))]
    for i, (name, (y0, y1, x0, x1)) in enumerate((outlines or {}).items()):
        ls = styles[i % len(styles)]
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=1.1, ec="0.25", ls=ls))
        ax.text(x0, y1 + 4, name, fontsize=7, color="0.25", va="bottom", ha="left", clip_on=True)
        handles.append(Line2D([], [], color="0.25", ls=ls, lw=1.1, label=name))
    return handles


def _raster(frame_shape, y, x, v, fill=np.nan) -> np.ndarray:
    img = np.full(frame_shape, fill, dtype="float64")
    img[np.asarray(y, int), np.asarray(x, int)] = v
    return img


def _map_axes(fig: Figure, frame_shape, outlines, title: str):
    """Full-frame axes with the footprint outlines and a title: the frame of every detector map."""
    ax = _frame_axes(fig, frame_shape)
    handles = _outlines(ax, outlines)
    ax.set_title(title)
    return ax, handles


def onset_map_figure(pixels: pd.DataFrame, frame_shape: tuple[int, int] | None = None,
                     outlines: Mapping[str, Sequence[int]] | None = None,
                     title: str = "Defective pixels by onset date") -> Figure:
    """Full-frame map of defective pixels coloured by the date they went bad.

    Parameters
    ----------
    pixels : DataFrame
        One row per pixel: ``y, x, onset_mjd`` (NaN: bad since before the first exposure) and
        optionally ``recovered`` (bool: the pixel is good again at the last exposure; drawn open).
    frame_shape : (ny, nx), optional
        The detector frame (its profile's ``geometry.frame_shape``); default the default profile's.
    outlines : mapping name -> (y0, y1, x0, x1)
        Boxes to outline (subarray footprints, slit), 0-based half-open.
    """
    fig = Figure(figsize=(9.6, 8.0), layout="constrained")
    frame_shape = _frame_shape(frame_shape)
    ax, handles = _map_axes(fig, frame_shape, outlines, title)
    if pixels is None or len(pixels) == 0:
        ax.text(0.5, 0.5, "no defective pixels", ha="center", va="center", transform=ax.transAxes, color="0.3")
        return fig
    onset = pixels["onset_mjd"].to_numpy(float)
    rec = pixels["recovered"].to_numpy(bool) if "recovered" in pixels else np.zeros(len(pixels), bool)
    y, x = pixels["y"].to_numpy(int), pixels["x"].to_numpy(int)
    known = np.isfinite(onset)
    lo, hi = (np.nanmin(onset), np.nanmax(onset)) if known.any() else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 1, hi + 1
    norm = Normalize(lo, hi)
    cmap = matplotlib.colormaps["viridis"]
    if len(pixels) > MAX_MARKERS:
        img = _raster(frame_shape, y[known], x[known], onset[known])
        base = _raster(frame_shape, y[~known], x[~known], 1.0)
        ax.imshow(base, origin="lower", cmap="Greys", vmin=0, vmax=1.5, interpolation="nearest")
        ax.imshow(img, origin="lower", cmap=cmap, norm=norm, interpolation="nearest")
    else:
        size = MARKER_SIZE
        sel = ~known
        ax.scatter(x[sel & ~rec], y[sel & ~rec], s=size, c="0.55", lw=0, label="bad since before the first exposure")
        ax.scatter(x[sel & rec], y[sel & rec], s=size, facecolors="none", edgecolors="0.55", lw=0.7)
        sel = known & ~rec
        ax.scatter(x[sel], y[sel], s=size, c=onset[sel], cmap=cmap, norm=norm, lw=0)
        sel = known & rec
        ax.scatter(x[sel], y[sel], s=size, facecolors="none", edgecolors=cmap(norm(onset[sel])), lw=0.7)
        handles = [Line2D([], [], marker="o", ls="", color="0.55", label="bad since before the first exposure"),
                   Line2D([], [], marker="o", ls="", mfc="none", mec="0.3", label="recovered since (open)"),
                   *handles]
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    cb = fig.colorbar(sm, ax=ax, shrink=0.75, pad=0.01)
    ticks = np.linspace(lo, hi, 6)
    cb.set_ticks(ticks)
    cb.set_ticklabels([mjd_to_datetime(t).strftime("%Y-%m-%d") for t in ticks])
    cb.set_label("onset (UTC date)")
    ax.legend(handles=handles, fontsize=7, loc="upper right", framealpha=0.85)
    return fig


def class_map_figure(pixels: pd.DataFrame, frame_shape: tuple[int, int] | None = None,
                     outlines: Mapping[str, Sequence[int]] | None = None,
                     title: str = "Defective pixels by class") -> Figure:
    """Full-frame map of defective pixels coloured by class.

    ``pixels``: one row per pixel, ``y, x, flag`` and optionally ``recovered`` (drawn open).
    """
    fig = Figure(figsize=(8.6, 8.0), layout="constrained")
    frame_shape = _frame_shape(frame_shape)
    ax, handles = _map_axes(fig, frame_shape, outlines, title)
    if pixels is None or len(pixels) == 0:
        ax.text(0.5, 0.5, "no defective pixels", ha="center", va="center", transform=ax.transAxes, color="0.3")
        return fig
    fl = pixels["flag"].astype(str).to_numpy()
    rec = pixels["recovered"].to_numpy(bool) if "recovered" in pixels else np.zeros(len(pixels), bool)
    colors = class_colors(np.unique(fl))
    y, x = pixels["y"].to_numpy(int), pixels["x"].to_numpy(int)
    cls_handles = []
    for c in class_order(colors):
        sel = fl == c
        n = int(sel.sum())
        if len(pixels) > MAX_MARKERS:
            img = _raster(frame_shape, y[sel], x[sel], 1.0)
            cm = matplotlib.colors.ListedColormap([colors[c]])
            ax.imshow(np.ma.masked_invalid(img), origin="lower", cmap=cm, interpolation="nearest")
        else:
            ax.scatter(x[sel & ~rec], y[sel & ~rec], s=MARKER_SIZE, c=colors[c], lw=0)
            ax.scatter(x[sel & rec], y[sel & rec], s=MARKER_SIZE, facecolors="none", edgecolors=colors[c], lw=0.7)
        cls_handles.append(Patch(color=colors[c], label=f"{c} ({n})"))
    if len(pixels) <= MAX_MARKERS and rec.any():
        cls_handles.append(Line2D([], [], marker="o", ls="", mfc="none", mec="0.3", label="recovered since (open)"))
    ax.legend(handles=cls_handles + handles, fontsize=7, loc="upper right", framealpha=0.85)
    return fig


# --------------------------------------------------------------------------- amplitudes


def amplitude_histograms_figure(intervals: pd.DataFrame, unit: str = "DN/s",
                                title: str = "Amplitude of detected defects") -> Figure:
    """One histogram of ``amplitude`` per class (``flag``).

    A panel uses logarithmic bins when its amplitudes are all positive and span more than two
    decades; classes without finite amplitudes are named in a note.
    """
    have = intervals is not None and len(intervals) and "amplitude" in intervals
    if have:
        d = intervals[["flag", "amplitude"]].copy()
        d["flag"] = d["flag"].astype(str)
        d = d[np.isfinite(d["amplitude"].to_numpy(float))]
    classes = class_order(d["flag"].unique()) if have else []
    n = max(1, len(classes))
    ncols = min(3, n)
    nrows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(4.0 * ncols + 0.5, 3.0 * nrows + 0.6), layout="constrained")
    fig.suptitle(title)
    if not classes:
        return _empty(fig, fig.add_subplot(), "no defect amplitudes")
    colors = class_colors(classes)
    for i, c in enumerate(classes):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        a = d.loc[d["flag"] == c, "amplitude"].to_numpy(float)
        pos = a[a > 0]
        if len(pos) == len(a) and len(a) > 1 and pos.max() / pos.min() > 100:
            bins = np.geomspace(pos.min(), pos.max(), 30)
            ax.set_xscale("log")
        else:
            bins = 30 if len(a) > 1 else 5
        ax.hist(a, bins=bins, color=colors[c], alpha=0.85)
        ax.set_title(f"{c}: {len(a)} intervals, median {np.median(a):.3g}", fontsize=9)
        ax.set_xlabel(f"amplitude ({unit})" if unit else "amplitude")
        ax.set_ylabel("intervals")
        ax.grid(alpha=0.3)
    return fig


# --------------------------------------------------------------------------- pixel histories


def pixel_histories_figure(histories: Sequence[Mapping], ncols: int = 2,
                           title: str = "Most significant pixels: residual against time") -> Figure:
    """A panel per pixel: its residual against time with its bad intervals shaded.

    Parameters
    ----------
    histories : sequence of mappings with keys
        ``title`` (str), ``time`` (datetime64 array), ``residual`` and ``err`` (arrays, same
        length), ``spans`` (list of ``(start, end, flag)``: datetimes, None/NaT for open ends),
        and optionally ``unit``.
    """
    n = max(1, len(histories))
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(6.0 * ncols, 2.7 * nrows + 0.6), layout="constrained")
    fig.suptitle(title)
    if not histories:
        return _empty(fig, fig.add_subplot(), "no pixel histories (no intervals)")
    for i, h in enumerate(histories):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        t = pd.to_datetime(np.asarray(h["time"]))
        r = np.asarray(h["residual"], float)
        e = np.asarray(h["err"], float)
        ok = np.isfinite(r)
        if len(t):
            tmin, tmax = t.min(), t.max()
            pad = (tmax - tmin) * 0.02 if tmax > tmin else pd.Timedelta(days=1)
            lo, hi = tmin - pad, tmax + pad
        else:
            lo = hi = None
        colors = class_colors({s[2] for s in h.get("spans", [])})
        seen = set()
        for start, end, flag in h.get("spans", []):
            a = lo if start is None or pd.isna(start) else pd.Timestamp(start)
            b = hi if end is None or pd.isna(end) else pd.Timestamp(end)
            if a is None or b is None:
                continue
            ax.axvspan(a, b, color=colors[flag], alpha=0.18, lw=0, label=None if flag in seen else f"{flag} interval")
            seen.add(flag)
        ax.errorbar(t[ok], r[ok], yerr=np.where(np.isfinite(e[ok]), e[ok], 0), fmt="o", ms=2.5, lw=0.6,
                    color="0.15", ecolor="0.6")
        ax.axhline(0, color="0.5", lw=0.6)
        if lo is not None:
            ax.set_xlim(lo, hi)
        ax.set_title(h.get("title", ""), fontsize=9)
        unit = h.get("unit", "DN/s")
        ax.set_ylabel(f"residual ({unit})" if unit else "residual")
        ax.grid(alpha=0.3)
        if seen:
            ax.legend(fontsize=7, loc="best")
        _date_axis(ax)
    return fig


# --------------------------------------------------------------------------- mask epochs


def epoch_timeline_figure(epochs: pd.DataFrame, exposure_times=None, exposure_epoch=None,
                          title: str = "Mask cube epochs") -> Figure:
    """The epochs of the mask cube against time and the pixels each flags, per bit.

    Parameters
    ----------
    epochs : DataFrame
        One row per epoch in time order: ``time`` (epoch start, datetime64) and one column per
        DQ bit name with the number of pixels carrying that bit in the epoch.
    exposure_times : array of datetime64, optional
        Exposure times, drawn as a rug under the epochs.
    exposure_epoch : array of int, optional
        The epoch each exposure belongs to (colours the rug alternately by epoch).
    """
    fig = Figure(figsize=(10, 4.6), layout="constrained")
    if epochs is None or len(epochs) == 0:
        return _empty(fig, fig.add_subplot(), "no mask cube")
    gs = fig.add_gridspec(2, 1, height_ratios=[5, 1])
    ax = fig.add_subplot(gs[0])
    rug = fig.add_subplot(gs[1], sharex=ax)
    t = pd.to_datetime(epochs["time"]).to_numpy()
    cols = [c for c in epochs.columns if c != "time"]
    colors = class_colors(cols)
    ext = None
    if exposure_times is not None and len(exposure_times):
        et = pd.to_datetime(np.asarray(exposure_times)).to_numpy()
        ext = max(et.max(), t[-1])
    else:
        et = None
    end = ext if ext is not None else t[-1] + (t[-1] - t[0]) * 0.05 if len(t) > 1 else t[-1] + np.timedelta64(1, "D")
    tt = np.append(t, end)
    for c in class_order(cols):
        v = epochs[c].to_numpy(float)
        ax.step(tt, np.append(v, v[-1]), where="post", color=colors[c], lw=1.5, label=f"{c} (last {int(v[-1])})")
    for s in t:
        ax.axvline(s, color="0.6", lw=0.5, ls=":")
    ax.set_ylabel("pixels flagged in epoch")
    top = float(epochs[cols].to_numpy(float).max()) if cols else 1.0
    ax.set_ylim(0, top * 1.08 + 0.5)
    ax.set_title(f"{title}: {len(t)} epochs (dotted lines: epoch starts)")
    if cols:  # a mask with no class has nothing to name
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(alpha=0.3)
    if et is not None:
        ep = np.asarray(exposure_epoch) if exposure_epoch is not None else np.searchsorted(t, et, side="right") - 1
        col = np.where(np.asarray(ep) % 2 == 0, "tab:blue", "tab:orange")
        rug.vlines(et, 0, 1, colors=col, lw=0.8)
    rug.set_yticks([])
    rug.set_ylabel("exposures", fontsize=8)
    _date_axis(rug)
    ax.tick_params(labelbottom=False)
    return fig


# --------------------------------------------------------------------------- deliveries


def diff_map_figure(changes: pd.DataFrame, frame_shape: tuple[int, int] | None = None,
                    outlines: Mapping[str, Sequence[int]] | None = None,
                    title: str = "Pixels that changed") -> Figure:
    """Full-frame map of the pixels that changed between two masks, coloured by class.

    ``changes``: one row per pixel and class (``y, x, class, change``), ``change`` either
    ``gained`` (drawn filled: the second mask flags it) or ``lost`` (drawn open). ``outlines``:
    the regions where a change counts for a delivery.
    """
    fig = Figure(figsize=(8.6, 8.0), layout="constrained")
    frame_shape = _frame_shape(frame_shape)
    ax, handles = _map_axes(fig, frame_shape, outlines, title)
    if changes is None or len(changes) == 0:
        ax.text(0.5, 0.5, "no pixel changed", ha="center", va="center", transform=ax.transAxes, color="0.3")
        if handles:
            ax.legend(handles=handles, fontsize=7, loc="upper right", framealpha=0.85)
        return fig
    u = changes.drop_duplicates(["y", "x", "class", "change"])
    colors = class_colors(u["class"].unique())
    cls_handles = []
    order = class_order(colors)
    for c in order[::-1]:  # defect classes last, on top of DO_NOT_USE at the same pixel
        g = u[u["class"] == c]
        gain, lose = g[g["change"] == "gained"], g[g["change"] == "lost"]
        ax.scatter(gain["x"], gain["y"], s=MARKER_SIZE, c=colors[c], lw=0)
        ax.scatter(lose["x"], lose["y"], s=MARKER_SIZE, facecolors="none", edgecolors=colors[c], lw=0.8)
    for c in order:
        g = u[u["class"] == c]
        cls_handles.append(Patch(color=colors[c], label=f"{c} (+{int((g['change'] == 'gained').sum())} "
                                                         f"-{int((g['change'] == 'lost').sum())})"))
    cls_handles += [Line2D([], [], marker="o", ls="", color="0.3", label="gained (filled)"),
                    Line2D([], [], marker="o", ls="", mfc="none", mec="0.3", label="lost (open)")]
    ax.legend(handles=cls_handles + handles, fontsize=7, loc="upper right", framealpha=0.85)
    return fig


def deliveries_figure(files: pd.DataFrame, title: str = "Deliveries: the USEAFTER of each MASK file") -> Figure:
    """One row per recorded delivery (oldest at the bottom), a tick at each file's USEAFTER.

    ``files``: one row per file, ``delivery``, ``created`` and ``useafter`` (ISO).
    """
    fig = Figure(figsize=(10, 1.6 + 0.45 * max(1, files["delivery"].nunique() if files is not None and len(files) else 1)),
                 layout="constrained")
    ax = fig.add_subplot()
    if files is None or len(files) == 0:
        return _empty(fig, ax, "no deliveries recorded")
    order = files.drop_duplicates("delivery").sort_values("created")["delivery"].tolist()
    for i, name in enumerate(order):
        t = pd.to_datetime(files.loc[files["delivery"] == name, "useafter"]).to_numpy()
        ax.vlines(t, i - 0.35, i + 0.35, color="tab:blue", lw=1.4)
        ax.text(1.005, i, f"{len(t)} file{'s' if len(t) != 1 else ''}", transform=ax.get_yaxis_transform(),
                va="center", fontsize=8)
    ax.set_yticks(range(len(order)))
    ax.set_yticklabels(order, fontsize=8)
    ax.set_ylim(-0.7, len(order) - 0.3)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="x")
    _date_axis(ax)
    return fig


# --------------------------------------------------------------------------- inputs


def coverage_figure(exposures: pd.DataFrame, title: str = "Input coverage: exposures per month") -> Figure:
    """Exposures per month, stacked by subarray (top) and by EXP_TYPE (bottom).

    ``exposures``: one row per exposure with ``time`` (datetime64), ``subarray`` and ``exp_type``.
    """
    fig = Figure(figsize=(10, 6.2), layout="constrained")
    if exposures is None or len(exposures) == 0:
        return _empty(fig, fig.add_subplot(), "no exposures in the cube")
    fig.suptitle(f"{title} ({len(exposures)} exposures)")
    month = pd.to_datetime(exposures["time"]).dt.to_period("M").dt.to_timestamp()
    months = pd.period_range(month.min(), month.max(), freq="M").to_timestamp()
    axes = [fig.add_subplot(2, 1, 1)]
    axes.append(fig.add_subplot(2, 1, 2, sharex=axes[0]))
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray"]
    for ax, key, label in zip(axes, ("subarray", "exp_type"), ("SUBARRAY", "EXP_TYPE"), strict=True):
        tab = pd.crosstab(month, exposures[key].astype(str).replace("", "(none)")).reindex(months, fill_value=0)
        bottom = np.zeros(len(tab))
        for i, c in enumerate(tab.columns):
            v = tab[c].to_numpy()
            ax.bar(tab.index, v, width=25, bottom=bottom, align="edge", color=palette[i % len(palette)],
                   label=f"{c} ({int(v.sum())})")
            bottom += v
        ax.set_ylabel("exposures / month")
        ax.legend(fontsize=8, title=label, title_fontsize=8, loc="upper left")
        ax.grid(alpha=0.3, axis="y")
        _date_axis(ax)
    axes[0].tick_params(labelbottom=False)
    return fig


# --------------------------------------------------------------------------- spectral impact

_METHOD_COLORS = {"a": "tab:red", "b": "tab:orange", "c": "tab:blue", "c-all": "tab:green"}


def spectra_counts_figure(counts: pd.DataFrame, labels: Mapping[str, str] | None = None,
                          artefacts: pd.DataFrame | None = None,
                          title: str = "Spurious spectral features per epoch") -> Figure:
    """Grouped bars per epoch (index) and method (columns): features caused by defects (solid)
    and, stacked on them when given, features on rows without any defect (hatched: artefacts of
    masking and interpolation)."""
    fig = Figure(figsize=(12.5, 4.4), layout="constrained")
    ax = fig.add_subplot()
    if counts is None or counts.empty:
        return _empty(fig, ax, "no spectra")
    labels = dict(labels or {})
    n = counts.shape[1]
    x = np.arange(len(counts))
    w = 0.8 / n
    for i, m in enumerate(counts.columns):
        v = counts[m].to_numpy(float)
        pos = x + (i - (n - 1) / 2) * w
        color = _METHOD_COLORS.get(m, f"C{i}")
        ax.bar(pos, v, width=w, color=color, label=f"({m}) {labels.get(m, '')}: {int(v.sum())} from defects")
        if artefacts is not None and m in artefacts:
            extra = artefacts[m].reindex(counts.index).fillna(0).to_numpy(float)
            if extra.sum():
                ax.bar(pos, extra, width=w, bottom=v, facecolor="white", edgecolor=color, hatch="///", lw=0.8)
    if artefacts is not None and np.nansum(artefacts.to_numpy(float)) > 0:
        ax.bar([np.nan], [np.nan], facecolor="white", edgecolor="0.3", hatch="///",
               label="hatched: on rows without a defect (masking)")
    idx = counts.index
    ax.set_xticks(x, [pd.Timestamp(t).strftime("%Y-%m-%d") if isinstance(t, (pd.Timestamp, np.datetime64)) else str(t)
                      for t in idx], rotation=30, ha="right")
    ax.set_ylabel("features (all trace positions)")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return fig


def spectra_example_figure(rows: np.ndarray, reference: np.ndarray, sigma: np.ndarray,
                           deviations: Mapping[str, np.ndarray], labels: Mapping[str, str] | None = None,
                           title: str = "", nsigma: float = 3.0) -> Figure:
    """Known spectrum (top) and each method's deviation from it in units of the noise (bottom),
    against detector row (the dispersion axis)."""
    fig = Figure(figsize=(10, 6), layout="constrained")
    gs = fig.add_gridspec(2, 1, height_ratios=[1, 2])
    top = fig.add_subplot(gs[0])
    bot = fig.add_subplot(gs[1], sharex=top)
    rows = np.asarray(rows)
    top.plot(rows, reference, color="0.2", lw=1)
    top.fill_between(rows, reference - sigma, reference + sigma, color="0.7", lw=0)
    top.set_ylabel("known spectrum (DN/s)")
    top.set_title(title or "Extraction deviations")
    top.grid(alpha=0.3)
    labels = dict(labels or {})
    widths = {"a": 3.0, "b": 1.8}
    for m, dev in deviations.items():
        z = np.asarray(dev) / sigma
        bot.plot(rows, z, lw=widths.get(m, 0.9), color=_METHOD_COLORS.get(m), label=f"({m}) {labels.get(m, '')}",
                 drawstyle="steps-mid", alpha=0.85)
    bot.axhspan(-nsigma, nsigma, color="0.85", lw=0, label=f"+-{nsigma:g} sigma")
    bot.set_yscale("symlog", linthresh=nsigma)
    bot.set_ylabel("(extracted - known) / sigma")
    bot.set_xlabel("detector row y (dispersion axis)")
    bot.grid(alpha=0.3)
    bot.legend(fontsize=8, loc="upper right")
    top.tick_params(labelbottom=False)
    return fig
