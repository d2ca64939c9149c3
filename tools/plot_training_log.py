"""Figure of one training, possibly in stages (a run and the runs continued from it with train.init).

    python tools/plot_training_log.py configs/ibug68_pipnet_mbv2.log.jsonl \
        configs/ibug68_pipnet_mbv2_continued.log.jsonl configs/ibug68_pipnet_mbv2_unfrozen.log.jsonl \
        --note "1 CPU thread" --out docs/_static/train_ibug68_curve.png

Left axis: mean training loss per epoch; right panel: validation NME (inter-ocular, %) per epoch.
Epochs are numbered across the stages; a dotted line marks where a stage starts and the note
gives each stage's learning-rate schedule as read from the logs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("logs", nargs="+", type=Path, help="log.jsonl files, in training order")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--note", default="", help="the budget the logs do not record (e.g. the threads), "
                    "written under the figure after each stage's schedule")
    a = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flmcore._plotting import figure_style, save_figure

    stages = [[json.loads(s) for s in p.read_text().splitlines() if s.strip()] for p in a.logs]
    with figure_style():
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
        start, notes = 0, []
        for k, recs in enumerate(stages):
            ep = [start + r["epoch"] - recs[0]["epoch"] + 1 for r in recs]
            lab = f"stage {k + 1}" if len(stages) > 1 else None
            ax1.plot(ep, [r["loss"] for r in recs], marker=".", label=lab)
            ax2.plot(ep, [r.get("val_nme_io") for r in recs], marker=".", label=lab)
            if k:
                for ax in (ax1, ax2):
                    ax.axvline(start + 0.5, color="0.5", ls=":", lw=1)
            lrs = sorted({r["lr"] for r in recs}, reverse=True)
            notes.append(f"stage {k + 1}: {len(recs)} epochs, lr " + " -> ".join(f"{v:.0e}" for v in lrs))
            start = ep[-1]
        best = min((r.get("val_nme_io", float("inf")), i) for i, r in enumerate(sum(stages, [])))
        ax2.annotate(f"best {best[0]:.2f} %", (best[1] + 1, best[0]), textcoords="offset points", xytext=(-70, 40),
                     arrowprops={"arrowstyle": "->", "lw": 0.8})
        ax1.set_xlabel("epoch")
        ax1.set_ylabel("training loss (PIPNet, mean per batch)")
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("validation NME, inter-ocular (%)")
        if len(stages) > 1:
            ax2.legend(loc="upper right")
        save_figure(fig, a.out, note="\n".join(notes + ([a.note] if a.note else [])))  # one line per stage
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
