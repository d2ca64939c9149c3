"""Real-data evidence for flmcore.ssr (cross-scheme sparse shape regression, DRN-SSR eq. 7/14).

* AFLW2000: AFLW-21 (original manual labels) -> re-annotated iBUG-68 of the same faces.
  AFLW-21 has missing (invisible) points: the 21 -> 68 map is learnt and tested on the faces
  with all 21 points visible; the 19 -> 68 map (ear lobes dropped, the aflw19 protocol) on the
  faces with those 19 visible.
* HELEN pairs: the 234 faces with both iBUG-68 and LFPW-29 labels, 68 -> 29 and 29 -> 68.

Each task: a random half of the faces trains, the other half tests; NME of the predicted target
points on the test half for tau in {1.0, 1.4, 10, inf} and the tau chosen by 5-fold CV on the
train half.  NME = mean point error / inter-ocular distance (outer eye corners) of the target
scheme.  Also writes the figure of selected source landmarks (the paper's Fig. 7).

Run from the repository root::

    python -m bench.ssr_realdata            # table + JSON + docs/_static/ssr_*.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench._common import print_table, write_json

TAUS = (1.0, 1.4, 10.0, np.inf)
STATIC = Path(__file__).resolve().parents[1] / "docs" / "_static"


def _split(n, rng):
    perm = rng.permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2:])


def _task(name, src, dst, target_scheme, rng, cv=5):
    from flmcore.ssr import SparseShapeRegression, SparseShapeRegressionCV

    tr, te = _split(src.shape[0], rng)
    row = {"task": name, "n_train": int(tr.size), "n_test": int(te.size)}
    models = {}
    for tau in TAUS:
        m = SparseShapeRegression(tau=tau, target_scheme=target_scheme).fit(src[tr], dst[tr])
        row[f"tau={tau:g}"] = 100 * -m.score(src[te], dst[te])
        row[f"nnz/row tau={tau:g}"] = float(m.support_.sum(axis=1).mean())
        models[tau] = m
    # the paper's raw H S (no normalisation; not translation-equivariant) for comparison
    raw = SparseShapeRegression(tau=1.4, normalize=None, target_scheme=target_scheme).fit(src[tr], dst[tr])
    row["raw tau=1.4"] = 100 * -raw.score(src[te], dst[te])
    cvm = SparseShapeRegressionCV(cv=cv, rng=0, target_scheme=target_scheme).fit(src[tr], dst[tr])
    row["cv tau"] = cvm.tau_
    row["tau=cv"] = 100 * -cvm.score(src[te], dst[te])
    return row, models, (tr, te)


def _fig7(model, src_mean, dst_mean, targets, labels, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.lines import Line2D

    from flmcore._plotting import save_figure

    fig, axes = plt.subplots(1, len(targets), figsize=(2.8 * len(targets), 3.2))
    for ax, r, lab in zip(axes, targets, labels):
        h = model.H_[r]
        ax.plot(dst_mean[:, 0], dst_mean[:, 1], ".", color="0.8", ms=3)
        ax.plot(src_mean[:, 0], src_mean[:, 1], "o", mfc="none", mec="0.5", ms=4)
        sel = np.flatnonzero(h)
        ax.scatter(src_mean[sel, 0], src_mean[sel, 1], s=25 + 250 * np.abs(h[sel]) / np.abs(h).max(),
                   c=np.where(h[sel] > 0, "tab:blue", "tab:orange"), alpha=0.8, zorder=3)
        ax.plot(dst_mean[r, 0], dst_mean[r, 1], "r*", ms=12, zorder=4)
        ax.set_title(f"{lab}: {sel.size} of {h.size} source points")
        ax.invert_yaxis()
        ax.set_aspect("equal")
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    keys = [Line2D([], [], ls="", marker="o", mfc="none", mec="0.5", label="source scheme (mean shape)"),
            Line2D([], [], ls="", marker=".", color="0.8", label="target scheme (mean shape)"),
            Line2D([], [], ls="", marker="o", color="tab:blue", label="weight > 0 (size ~ |weight|)"),
            Line2D([], [], ls="", marker="o", color="tab:orange", label="weight < 0"),
            Line2D([], [], ls="", marker="*", color="r", label="the predicted target point")]
    fig.legend(handles=keys, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, frameon=False)
    save_figure(fig, path)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer CV folds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-figures", action="store_true")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/ssr_realdata.json)")
    args = ap.parse_args(argv)
    from flmcore.data import load_sample

    cv = 3 if args.quick else 5
    rows = []
    a = load_sample("aflw2000")
    p21, p68 = a["pts21"], a["pts68"]
    vis21 = ~np.isnan(p21).any(axis=(1, 2))
    keep19 = [k for k in range(21) if k not in (12, 16)]
    vis19 = ~np.isnan(p21[:, keep19]).any(axis=(1, 2))
    r, m21, _ = _task("AFLW2000 21->68", p21[vis21], p68[vis21], "ibug68", np.random.default_rng(args.seed), cv)
    rows.append(r)
    r, m19, _ = _task("AFLW2000 19->68", p21[vis19][:, keep19], p68[vis19], "ibug68",
                      np.random.default_rng(args.seed), cv)
    rows.append(r)
    h = load_sample("helen_pairs")
    s68, s29 = h["shapes68"], h["shapes29"]
    r, m6829, _ = _task("HELEN 68->29", s68, s29, "helen_zhou29", np.random.default_rng(args.seed), cv)
    rows.append(r)
    r, m2968, _ = _task("HELEN 29->68", s29, s68, "ibug68", np.random.default_rng(args.seed), cv)
    rows.append(r)
    cols = ["task", "n_train", "n_test"] + [f"tau={t:g}" for t in TAUS] + ["cv tau", "tau=cv", "raw tau=1.4"] + \
        [f"nnz/row tau={t:g}" for t in TAUS]
    print("NME (% of inter-ocular distance, test half) of the predicted target points")
    print_table(rows, cols)
    if not args.no_figures:
        STATIC.mkdir(parents=True, exist_ok=True)
        m = m21[1.4]
        ref21 = m.reference_
        # mean target shape in the same normalised frame
        a_, c_ = m._frames(p21[vis21])
        dst_mean = m._apply(p68[vis21], a_, c_).mean(axis=0)
        _fig7(m, ref21, dst_mean, [8, 19, 37, 30, 62], ["chin 8", "brow 19", "upper lid 37", "nose tip 30",
                                                        "inner lip 62"],
              STATIC / "ssr_selected_aflw21_to_68.png",
              "AFLW-21 -> iBUG-68, tau = 1.4: source points used (size ~ |h|, blue > 0, orange < 0) "
              "for the target (red star)")
        m = m2968[1.4]
        a_, c_ = m._frames(s29)
        _fig7(m, m.reference_, m._apply(s68, a_, c_).mean(axis=0), [0, 8, 40, 57, 66],
              ["jaw 0", "chin 8", "lower lid 40", "lower lip 57", "inner lip 66"],
              STATIC / "ssr_selected_helen29_to_68.png", "HELEN LFPW-29 -> iBUG-68, tau = 1.4")
    out = {"rows": rows, "taus": [float(t) for t in TAUS], "seed": args.seed, "cv": cv}
    path = write_json("ssr_realdata", out, args.out)
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
