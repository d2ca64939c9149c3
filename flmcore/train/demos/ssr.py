"""Demo part ``ssr``: cross-scheme landmark transfer with sparse shape regression (DRN-SSR eq. 7, 8, 14).

Uses the bundled ``helen_pairs`` sample (234 HELEN face crops with both the iBUG-68 and the
LFPW-29 labels), or ``<data_dir>/helen_pairs.npz`` with the same keys (never the sample
when ``data_dir`` is given).  Public calls only (the estimators of :mod:`flmcore.ssr`).

1. A random half of the faces trains :class:`flmcore.ssr.SparseShapeRegression` for
   68 -> 29 and 29 -> 68 at several L1 budgets ``tau`` (and the CV choice); the other
   half measures the NME (inter-ocular) of the transferred points.
2. :class:`flmcore.ssr.SchemeUnion` builds the union of the two schemes (common points once,
   from :func:`flmcore.schemes.correspondences`) and maps held-out 29-point faces onto it.
3. Figure: held-out crops with the 29 ground-truth points and the points predicted from the
   68-point labels, and the source points one target uses (the paper's Fig. 7).

Run alone: ``python -m flmcore.train.demos.ssr --out DIR``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

__all__ = ["run", "main"]


def _figure(path, images, truth29, pred29, src_train, dst_train, model, target, label):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.lines import Line2D

    from flmcore._plotting import save_figure

    n = len(images)
    fig, axes = plt.subplots(1, n + 1, figsize=(2.6 * (n + 1), 3.0))
    for ax, img, t, p in zip(axes[:n], images, truth29, pred29):
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        ax.plot(t[:, 0], t[:, 1], "o", mfc="none", mec="lime", ms=4, label="29-pt truth")
        ax.plot(p[:, 0], p[:, 1], "r+", ms=5, label="from 68 pts")
        ax.axis("off")
    ax = axes[n]
    h = model.H_[target]
    ref = model.reference_
    sel = np.flatnonzero(h)
    ax.plot(ref[:, 0], ref[:, 1], ".", color="0.6", ms=3)
    ax.scatter(ref[sel, 0], ref[sel, 1], s=20 + 200 * np.abs(h[sel]) / np.abs(h).max(),
               c=np.where(h[sel] > 0, "tab:blue", "tab:orange"), zorder=3)
    a, m = model._frames(src_train)
    tmean = model._apply(dst_train, a, m).mean(axis=0)  # mean target shape in the normalised frame
    ax.plot(tmean[target, 0], tmean[target, 1], "r*", ms=11, zorder=4)
    ax.set_title(f"{label}: {sel.size}/68 source points used")
    ax.invert_yaxis()
    ax.set_aspect("equal")
    ax.axis("off")
    fig.tight_layout()
    keys = [Line2D([], [], ls="", marker="o", mfc="none", mec="lime", label="29-point truth"),
            Line2D([], [], ls="", marker="+", color="r", label="predicted from the 68 points"),
            Line2D([], [], ls="", marker="o", color="tab:blue", label="weight > 0 (size ~ |weight|)"),
            Line2D([], [], ls="", marker="o", color="tab:orange", label="weight < 0"),
            Line2D([], [], ls="", marker="*", color="r", label="the predicted target point")]
    fig.legend(handles=keys, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, frameon=False)
    save_figure(fig, path)


def run(ctx) -> str:
    """Run the part and return its markdown section (see module docstring)."""
    from flmcore.schemes import get_scheme
    from flmcore.ssr import SchemeUnion, SparseShapeRegression, SparseShapeRegressionCV

    d = ctx.load("helen_pairs")
    s68, s29, images = d["shapes68"], d["shapes29"], d["images"]
    rng = ctx.rng()
    perm = rng.permutation(s68.shape[0])
    tr, te = np.sort(perm[: perm.size // 2]), np.sort(perm[perm.size // 2:])
    taus = (1.0, 1.4, np.inf) if ctx.quick else (0.7, 1.0, 1.4, 3.0, np.inf)
    tasks = [("68 -> 29", s68, s29, "helen_zhou29"), ("29 -> 68", s29, s68, "ibug68")]
    table = {}
    models = {}
    for name, src, dst, tgt in ctx.progress(tasks, desc="ssr"):
        row = {}
        for tau in taus:
            m = SparseShapeRegression(tau=tau, target_scheme=tgt).fit(src[tr], dst[tr])
            row[tau] = (100 * -m.score(src[te], dst[te]), float(m.support_.sum(axis=1).mean()))
            models[(name, tau)] = m
        if not ctx.quick:
            cvm = SparseShapeRegressionCV(cv=5, rng=ctx.seed, target_scheme=tgt).fit(src[tr], dst[tr])
            row["cv"] = (100 * -cvm.score(src[te], dst[te]), float(cvm.support_.sum(axis=1).mean()), cvm.tau_)
        table[name] = row
    # union of the two schemes, learnt on the training pairs; held-out 29-point faces -> union
    union = SchemeUnion.from_schemes(["ibug68", "helen_zhou29"], tau=1.4).fit({(0, 1): (s68[tr], s29[tr])})
    U = union.transform(s29[te], dataset=1)
    io = get_scheme("ibug68").interocular_distance(s68[te])
    own68 = U[:, union.index_[0]]
    union_nme = 100 * float((np.linalg.norm(own68 - s68[te], axis=2).mean(axis=1) / io).mean())
    m = models[("68 -> 29", 1.4)]
    pred = m.predict(s68[te[:4]])
    fig = Path(ctx.out_dir) / "ssr.png"
    _figure(fig, images[te[:4]], s29[te[:4]], pred, s68[tr], s29[tr], m, 12, "left upper lid (29-pt 12)")
    n_pred = int(np.isin(union.index_[0], union.index_[1], invert=True).sum())

    lines = ["## Sparse shape regression: cross-scheme transfer (DRN-SSR)", "",
             f"Data: {ctx.source('helen_pairs')}. `flmcore.ssr.SparseShapeRegression` / "
             "`SparseShapeRegressionCV` / `SchemeUnion`. "
             f"HELEN faces with both iBUG-68 and LFPW-29 labels: {tr.size} train / {te.size} test "
             f"(seed {ctx.seed}). NME in % of the target scheme's inter-ocular distance on the test "
             "faces; `nnz` = source points used per target point (Procrustes-normalised fit, "
             "similarity-equivariant predictions).", ""]
    head = "| task | " + " | ".join(f"tau={t:g}" for t in taus) + (" | CV |" if not ctx.quick else " |")
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for name, row in table.items():
        cells = [f"{row[t][0]:.2f} (nnz {row[t][1]:.1f})" for t in taus]
        if "cv" in row:
            cells.append(f"{row['cv'][0]:.2f} (tau={row['cv'][2]:.2g})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"Union of ibug68 and helen_zhou29: {union.n_union_} points "
                  f"({68 + 29 - union.n_union_} common). Held-out 29-point faces mapped onto the union: "
                  f"NME of their 68 iBUG points ({n_pred} of them predicted) = {union_nme:.2f} %.", "",
              "![ssr](ssr.png)", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    from flmcore.train.demos import DemoContext

    ap = argparse.ArgumentParser(description="flmcore demo part: sparse shape regression")
    ap.add_argument("--out", default="demo_ssr")
    ap.add_argument("--data", default=None)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = run(DemoContext(out_dir=out, data_dir=Path(args.data) if args.data else None, quick=args.quick))
    (out / "report.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
