"""Score LDDMM-Face runs (issue 12): landmark NME, curve error NME_c and cross-annotation.

Each run is an output folder of ``flmcore train`` with ``model.type = "lddmm"``
(``configs/lddmm_face/*.toml``).  Three test sets:

* **validation**: the run's own validation split (fixed name hash, the 234 pair faces
  excluded as in training): NME (inter-ocular, 68 points), NME_c with the official
  LDDMM-Face definition (``mode="lddmm_face"``) and the polyline one;
* **HELEN 68/29 pairs** (held out of training): the 68-point NME, and the
  cross-annotation NME of the 29 Zhou et al. points that the model never saw,
  predicted by flowing the 29-point mean face through the predicted
  diffeomorphisms (LDDMM-Face section 4.3, :meth:`flmcore.nn.models.LDDMMFace.predict`).
  Two baselines carry the same 29-point mean face without the flow: placed by
  the affine map fitted from the 68-point mean face to the predicted 68 points
  on the points the two schemes share, and placed unchanged in the crop (no
  prediction at all).

The 29-point mean face comes from the 114 faces of ``helen_29pt_zhou`` that have
no 68-point label (each in its own landmark-box crop); the pair faces only serve
as test.  The 29-point labels live on downscaled copies of the HELEN images; they
are mapped into the ``300w_train_crops`` image of the same face (via the original
image size and ``crops.csv``), so both label sets share the image the model sees.

Usage::

    python tools/lddmm_face_experiment.py RUN [RUN ...] --data ../shared/data --out results/
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from flmcore.crop import crop_transform, landmark_box, transform_points, uncrop_points
from flmcore.io import read_helen_zhou_mat
from flmcore.metrics import nme, nme_curve
from flmcore.pip import mean_face
from flmcore.schemes import correspondences

ZHOU = "helen_zhou29"


def helen_pairs_29(data: Path):
    """29-point labels of the HELEN pair faces in ``300w_train_crops`` image pixels, and the
    29-only faces' shapes (downscaled-image pixels).

    Returns ``(pairs, only29)``: ``pairs`` maps a face name to its ``(29, 2)`` shape.
    """
    zhou = read_helen_zhou_mat(data / "helen_29pt_zhou" / "helen.mat")
    sizes = {}
    with open(data / "300w_helen_trainset_68pt" / "image_sizes.csv", newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            sizes[r["image"].strip()] = (int(r["width"]), int(r["height"]))
    crops = {}
    with open(data / "300w_train_crops" / "crops.csv", newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            if r["subset"] == "helen":
                crops[r["name"]] = r
    from PIL import Image

    pairs, only29 = {}, []
    for name, s29 in zip(zhou["names"], zhou["shapes"]):
        stem = Path(name).stem
        if name not in sizes or stem not in crops:
            only29.append(np.asarray(s29, np.float64))
            continue
        with Image.open(data / "helen_29pt_zhou" / "img" / name) as im:
            ws, hs = im.size
        w0, h0 = sizes[name]
        orig = (np.asarray(s29, np.float64) + 0.5) * [w0 / ws, h0 / hs] - 0.5   # pixel-centre rescaling
        c = crops[stem]
        sx, sy = float(c["scale_x"]), float(c["scale_y"])
        pairs[stem] = (orig - [float(c["x0"]), float(c["y0"])] + 0.5) * [sx, sy] - 0.5  # crops.csv, inverted
    return pairs, np.stack(only29)


def _crop_and_predict(lm, ds, scheme=None, mean_shape=None, batch: int = 32):
    """Predictions in image pixels for every face of ``ds`` (landmark-box crops)."""
    import torch

    out = []
    for i in range(0, len(ds), batch):
        items = [ds[j] for j in range(i, min(len(ds), i + batch))]
        cs, Ts = zip(*(lm.crop(it["image"], it["box"]) for it in items))
        x = torch.from_numpy(np.stack(cs)).permute(0, 3, 1, 2).float().div_(255.0)
        p = lm.network.predict(x, scheme=scheme, mean_shape=mean_shape).double().numpy()
        out.append(uncrop_points(p, np.stack(Ts)))
    return np.concatenate(out)


def score_run(run: Path, data: Path) -> dict:
    from flmcore.models import Landmarker
    from flmcore.nn._lddmm import _fit_affine  # the least-squares affine map of LDDMMFace's cross-annotation
    from flmcore.train._run import check_config, load_dataset, split_dataset

    lm = Landmarker.load(run / "best.pt", device="cpu")
    cfg = check_config(json.loads(lm.meta["config"]))
    cfg["data"]["root"] = str(data / "300w_train_crops")
    full = load_dataset(cfg["data"])
    _, va = split_dataset(full, cfg["data"])
    res = {"run": run.name, "preset": cfg["model"]["lddmm_preset"], "input_size": cfg["model"]["input_size"],
           "epoch": lm.meta.get("best_epoch"), "train_faces": lm.meta.get("train_faces")}
    pv = _crop_and_predict(lm, va)
    res["val_faces"] = len(va)
    res["val_nme"] = 100 * float(np.mean(nme(pv, va.shapes, "interocular", scheme="ibug68")))
    res["val_nme_c_official"] = 100 * float(np.mean(nme_curve(pv, va.shapes, "ibug68", mode="lddmm_face")))
    res["val_nme_c_polyline"] = 100 * float(np.mean(nme_curve(pv, va.shapes, "ibug68", mode="polyline")))

    pairs, only29 = helen_pairs_29(data)
    held = [n for n in full.names if n.rsplit("/", 1)[-1] in pairs]
    te = full.subset(np.array([n in set(held) for n in full.names]))
    gt29 = np.stack([pairs[n.rsplit("/", 1)[-1]] for n in te.names])
    size, margin = lm.size, lm.margin
    m29 = mean_face(np.stack([transform_points(s, crop_transform(landmark_box(s), size, margin=margin))
                              for s in only29]))
    p68 = _crop_and_predict(lm, te)
    p29 = _crop_and_predict(lm, te, scheme=ZHOU, mean_shape=m29)
    d_io = np.linalg.norm(te.shapes[:, 36] - te.shapes[:, 45], axis=1)  # outer eye corners of the 68 labels
    # baselines: the 29-point mean face placed by an affine map (68 mean face -> predicted 68 points)
    pairs_idx = correspondences(ZHOU, "ibug68")
    y0, _ = lm.network.face.other_scheme_points(ZHOU, m29)  # 29-point mean face in the 68 mean-face frame
    mean68 = lm.network.mean_shape.double().numpy()
    Ts = np.stack([crop_transform(b, size, margin=margin) for b in te.boxes])
    p68_crop = transform_points(p68, Ts)
    aff = np.stack([uncrop_points((np.c_[y0, np.ones(len(y0))] @ _fit_affine(mean68[pairs_idx[:, 1]], q[pairs_idx[:, 1]]))
                                  [None], T[None])[0] for q, T in zip(p68_crop, Ts)])
    still = uncrop_points(np.broadcast_to(y0, (len(te), *y0.shape)), Ts)

    def n29(p):
        return 100 * float(np.mean(np.linalg.norm(p - gt29, axis=-1).mean(1) / d_io))

    res.update({"pair_faces": len(te), "pair_nme68": 100 * float(np.mean(nme(p68, te.shapes, "interocular",
                                                                             scheme="ibug68"))),
                "pair_nme29_flow": n29(p29), "pair_nme29_affine": n29(aff), "pair_nme29_mean_face": n29(still)})
    return res


def table(rows) -> str:
    head = ("| preset | val NME (68) | val NME_c official | val NME_c polyline | pairs NME (68) "
            "| pairs NME (29, flow) | (29, affine from 68) | (29, mean face) |\n|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        lines.append(f"| `{r['preset']}` | {r['val_nme']:.2f} | {r['val_nme_c_official']:.2f} | "
                     f"{r['val_nme_c_polyline']:.2f} | {r['pair_nme68']:.2f} | {r['pair_nme29_flow']:.2f} | "
                     f"{r['pair_nme29_affine']:.2f} | {r['pair_nme29_mean_face']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="output folders of flmcore train (best.pt)")
    ap.add_argument("--data", type=Path, required=True, help="the shared data folder (300w_train_crops, ...)")
    ap.add_argument("--out", type=Path, default=None, help="write results.json and results.md here")
    a = ap.parse_args(argv)
    rows = [score_run(r, a.data) for r in a.runs]
    md = table(rows)
    print(md)
    if a.out is not None:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "results.json").write_text(json.dumps(rows, indent=2))
        (a.out / "results.md").write_text(md + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
