"""The figures the notebooks draw more than once: curves over turns with their 95% bands (SR@k, the
diagnostic's loss, gains over the base), grouped bars with interval whiskers (the sharded-task rates), and
where a figure is saved. Each helper makes the same matplotlib calls, in the same order, as the notebook
code it replaced, so executed figures stay byte-identical. The notebooks keep the story: which rows,
which titles."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from sml.settings import DOMAINS


def figures_dir(out_root: str | Path) -> Path:
    """``<out_root>/reports/figures``, created if missing."""
    folder = Path(out_root) / "reports" / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save(fig, out_root: str | Path, name: str) -> Path:
    """Save ``fig`` as ``reports/figures/<name>`` under ``out_root`` (100 dpi, tight box); returns the path."""
    path = figures_dir(out_root) / name
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def band(ax, curve: pd.DataFrame, y: str = "success", *, label=None, color=None, alpha: float = 0.2, **line):
    """One curve of ``curve`` (columns ``turn``, ``y``, ``ci_low``, ``ci_high``): ``y`` against ``turn`` with
    round markers, and its interval as a band. Without ``color`` the line and the band each take the next
    colour of the axes' cycles, as matplotlib does by itself; ``line``: more Line2D settings (``ms=3``)."""
    style = {} if color is None else {"color": color}
    named = {} if label is None else {"label": label}
    ax.plot(curve["turn"], curve[y], marker="o", **line, **named, **style)
    ax.fill_between(curve["turn"], curve["ci_low"], curve["ci_high"], alpha=alpha, **style)


def curve_panels(rows: pd.DataFrame, *, order, y: str = "success", series: str = "condition",
                 panel: str = "eval_domain", panels=DOMAINS, title: str = "{panel}", xlabel: str = "student turns k",
                 ylabel: str = "SR@k", xticks=None, colors: dict | None = None, alpha: float = 0.12,
                 line: dict | None = None, skip_empty: bool = True, decorate=None, legend_title: str = "condition",
                 **subplots):
    """One panel per value of ``panel`` (``panels``, left to right), in it one :func:`band` per ``series``
    value of ``order`` that has rows there (with ``skip_empty=False``: also an empty one, legend entry and
    all). ``title`` may name ``{panel}``; ``decorate(ax, panel)`` draws extras before the titles are set;
    the legend goes on the first panel. ``subplots``: for ``plt.subplots`` (figsize, sharey; constrained
    layout unless told). Returns ``(fig, axes)``."""
    fig, axes = plt.subplots(1, len(panels), squeeze=False, **{"constrained_layout": True, **subplots})
    axes = axes[0]
    for ax, name in zip(axes, panels):
        for who in order:
            curve = rows[(rows[series] == who) & (rows[panel] == name)]
            if skip_empty and curve.empty:
                continue
            band(ax, curve, y, label=who, color=None if colors is None else colors[who], alpha=alpha, **(line or {}))
        if decorate is not None:
            decorate(ax, name)
        ax.set(title=title.format(panel=name), xlabel=xlabel, ylabel=ylabel)
        if xticks is not None:
            ax.set_xticks(xticks)
    axes[0].legend(title=legend_title, fontsize=8)
    return fig, axes


def grouped_bars(ax, table: pd.DataFrame, *, group: str, groups, place: str, places, colors: dict | None = None,
                 capsize: float = 3):
    """Bars of ``value`` at each of ``places`` (the ``place`` column), one bar per ``groups`` member (the
    ``group`` column) side by side, whiskers from ``low`` to ``high``. A group with no row at a place gets an
    empty (NaN) bar, so the positions and the legend stay the same from panel to panel."""
    width = 0.8 / len(groups)
    for k, name in enumerate(groups):
        bars = table[table[group] == name].set_index(place).reindex(places)
        style = {} if colors is None else {"color": colors[name]}
        ax.bar(np.arange(len(places)) + k * width, bars["value"], width, label=name, **style,
               yerr=[bars["value"] - bars["low"], bars["high"] - bars["value"]], capsize=capsize)
    ax.set_xticks(np.arange(len(places)) + 0.4 - width / 2, places)


def bar_panels(table: pd.DataFrame, metrics, *, group: str, groups, place: str, places, colors: dict | None = None,
               capsize: float = 3, title: str = "sharded tasks: {metric}", style: dict | None = None, **subplots):
    """One panel of :func:`grouped_bars` per metric of a long table (``metric, <group>, <place>, value, low,
    high``); ``title`` may name ``{metric}``, which is also the y label; ``style``: more ``ax.set`` settings
    (``ylim``, ``xlabel``); the legend goes on the first panel. Returns ``(fig, axes)``."""
    fig, axes = plt.subplots(1, len(metrics), squeeze=False, **{"constrained_layout": True, **subplots})
    axes = axes[0]
    for ax, metric in zip(axes, metrics):
        grouped_bars(ax, table[table["metric"] == metric], group=group, groups=groups, place=place, places=places,
                     colors=colors, capsize=capsize)
        ax.set(title=title.format(metric=metric), ylabel=metric, **(style or {}))
    axes[0].legend(fontsize=8)
    return fig, axes
