"""Figures a scientist can put on a slide (issue 14): one style helper, >= 150 dpi, legible text,
legends beside the data, plain log ticks, and the budget written on the figure."""
from pathlib import Path

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from flmcore._plotting import DPI, budget_note, figure_style, legend_outside, plain_log_axis, save_figure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _png_dpi(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.info.get("dpi", (0, 0))[0]


def test_save_figure_dpi_and_note(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1], label="a")
    ax.legend(fontsize=5)  # too small: raised to the floor
    with budget_note("demo budget"):
        out = save_figure(fig, tmp_path / "f.png", dpi=80)
    assert _png_dpi(out) >= DPI - 1
    texts = [t.get_text() for t in fig.texts]
    assert any("demo budget" in t for t in texts)
    assert min(t.get_fontsize() for t in ax.get_legend().get_texts()) >= 8


def test_legend_outside_does_not_cover_the_axes(tmp_path):
    with figure_style():
        fig, ax = plt.subplots()
        ax.plot(np.arange(10), np.arange(10), label="data")
        leg = legend_outside(ax, "right")
        fig.canvas.draw()
        lb = leg.get_window_extent()
        axb = ax.get_window_extent()
        assert lb.x0 >= axb.x1 - 1
        plt.close(fig)


def test_plain_log_axis_ticks():
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [8, 19, 30])
    ax.set_yscale("log")
    plain_log_axis(ax)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert labels and not any("times" in s or "^" in s for s in labels), labels
    plt.close(fig)


def test_demo_figures_follow_the_style(tmp_path):
    from flmcore.train.demos import atf

    curves = {"L2": [12.0, 10.5, 9.8], "Anisotropic": [11.0, 10.0, 9.1]}
    atf.plot_losses({"curves": curves}, tmp_path / "losses.png")
    atf.plot_pose({"before": [50, 200, 400, 200, 50], "undersample": [50] * 5, "oversample": [400] * 5,
                   "mean_abs_yaw": [60.0, 30.0, 5.0, 30.0, 60.0]}, tmp_path / "pose.png")
    for p in ("losses.png", "pose.png"):
        assert _png_dpi(tmp_path / p) >= DPI - 1


def test_every_figure_goes_through_the_style_helper():
    offenders = []
    # the demo parts and the benchmarks (flmcore.evaluate has its own CED figure at >= 150 dpi)
    for path in list((ROOT / "flmcore" / "train" / "demos").glob("*.py")) + list((ROOT / "bench").glob("*.py")):
        if ".savefig(" in path.read_text():
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"save figures with flmcore._plotting.save_figure: {offenders}"


def test_plot_training_log_tool_writes_a_staged_figure(tmp_path):
    """tools/plot_training_log.py (the train guide's figure) on two small stage logs."""
    import json
    import runpy
    import sys

    from conftest import REPO

    logs = []
    for k, lrs in enumerate(([1e-3, 1e-3, 1e-4], [5e-5, 5e-6])):
        p = tmp_path / f"stage{k}.jsonl"
        p.write_text("\n".join(json.dumps({"epoch": i + 1, "loss": 0.1 / (i + 1 + 3 * k), "lr": lr,
                                           "val_nme_io": 5.0 - i - k}) for i, lr in enumerate(lrs)))
        logs.append(str(p))
    out = tmp_path / "curve.png"
    argv = sys.argv
    sys.argv = ["plot_training_log.py", *logs, "--note", "1 CPU thread", "--out", str(out)]
    try:
        with pytest.raises(SystemExit) as ex:
            runpy.run_path(str(REPO / "tools" / "plot_training_log.py"), run_name="__main__")
    finally:
        sys.argv = argv
    assert ex.value.code == 0
    from PIL import Image

    w, h = Image.open(out).size
    assert w > 800 and h > 300
