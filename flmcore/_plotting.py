"""One plotting style for every figure flmcore writes (demo parts, benchmarks, docs).

Figures meant for a slide: at least 150 dpi, text of 9 pt or more, labelled axes with
units, legends placed beside or below the data (never over it), plain numbers on log
axes, and a note saying which budget produced the numbers.

Use::

    from flmcore._plotting import figure_style, legend_outside, save_figure

    with figure_style():
        fig, ax = plt.subplots()
        ax.plot(...)
        legend_outside(ax)
        save_figure(fig, "out.png", note="demo budget (10 epochs)")

``save_figure`` also stamps the note set by :func:`budget_note` (``flmcore demo``
sets it for the whole run: seed and budget).  matplotlib is imported lazily; the
core never needs it.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Optional

__all__ = ["DPI", "STYLE", "figure_style", "legend_outside", "plain_log_axis", "save_figure", "budget_note"]

DPI = 150
STYLE = {
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.05,
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.framealpha": 0.9,
    "figure.titlesize": 10,
    "axes.grid": False,
    "grid.alpha": 0.3,
    "lines.linewidth": 1.5,
}
_MIN_FONT = 8.0
_NOTE: Optional[str] = None


@contextlib.contextmanager
def figure_style() -> Iterator[None]:
    """``with figure_style():`` -- flmcore's rcParams (150 dpi, legible text) for the block."""
    import matplotlib

    with matplotlib.rc_context(STYLE):
        yield


@contextlib.contextmanager
def budget_note(text: Optional[str]) -> Iterator[None]:
    """Within the block every :func:`save_figure` stamps ``text`` (e.g. the demo's budget)."""
    global _NOTE
    saved, _NOTE = _NOTE, text
    try:
        yield
    finally:
        _NOTE = saved


def legend_outside(ax, where: str = "right", **kw):
    """A legend beside (``"right"``) or below (``"below"``) the axes, never over the data.

    ``ax`` may be an Axes or a Figure (one legend for all its axes, from the first
    axes' handles).  Returns the legend (``None`` when there is nothing to label).
    """
    from matplotlib.figure import Figure

    if isinstance(ax, Figure):
        handles, labels = ax.axes[0].get_legend_handles_labels()
        target = ax
    else:
        handles, labels = ax.get_legend_handles_labels()
        target = ax
    if not handles:
        return None
    if where == "right":
        opts = dict(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    elif where == "below":
        opts = dict(loc="upper center", bbox_to_anchor=(0.5, -0.02 if isinstance(ax, Figure) else -0.15),
                    ncol=min(len(handles), 3))
    else:
        raise ValueError(f"where must be 'right' or 'below', got {where!r}")
    opts.update(kw)
    opts["fontsize"] = max(float(opts.get("fontsize", STYLE["legend.fontsize"])), _MIN_FONT)
    return target.legend(handles, labels, **opts)


def plain_log_axis(ax, axis: str = "y") -> None:
    """Log-scale axis whose ticks read as plain numbers (``20``, not ``2x10^1``)."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator

    a = ax.yaxis if axis == "y" else ax.xaxis
    a.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    a.set_major_formatter(FormatStrFormatter("%g"))
    a.set_minor_formatter(FormatStrFormatter(""))


def save_figure(fig, path, *, note: Optional[str] = None, dpi: int = DPI) -> Path:
    """Save ``fig`` as PNG at ``dpi`` (at least 150) with the budget note, and close it.

    ``note`` (and the one set by :func:`budget_note`) is written under the figure in
    small grey text, so the numbers carry the budget that produced them.
    """
    import matplotlib.pyplot as plt

    notes = [t for t in (note, _NOTE) if t]
    if notes:
        fig.text(0.01, -0.01, "; ".join(notes), ha="left", va="top", fontsize=_MIN_FONT, color="0.35")
    for text in fig.findobj(lambda o: hasattr(o, "get_fontsize") and hasattr(o, "set_fontsize")):
        try:
            if text.get_fontsize() < _MIN_FONT:
                text.set_fontsize(_MIN_FONT)
        except (TypeError, ValueError):
            pass
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=max(int(dpi), DPI), bbox_inches="tight", pad_inches=0.05)
    plt.close(fig)
    return path
