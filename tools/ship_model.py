"""Package a finished training run as a shipped model: float16 weights + model card.

    python tools/ship_model.py runs/ibug68 --name ibug68 \
        --data ../shared/data/300w_train_crops --command "flmcore train configs/ibug68_pipnet_mbv2.toml ..."

Reads RUN/best.pt (the lowest validation NME) and RUN/log.jsonl, checks that float16 storage
changes the validation predictions by less than 0.01 px (else keeps float32), evaluates the
model on the validation split (landmark boxes, with and without the test-time flip, and with
the detector when one is installed), and writes flmcore/models/weights/<file>.pt and <file>.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="training run folder (best.pt, log.jsonl, config.json)")
    ap.add_argument("--name", default="ibug68")
    ap.add_argument("--data", required=True, help="the training data folder (for the validation numbers)")
    ap.add_argument("--command", required=True, help="the exact command that trained the run")
    ap.add_argument("--config", default="configs/ibug68_pipnet_mbv2.toml",
                    help="the run's config file, as named in the repository (for the card)")
    ap.add_argument("--before", nargs="+", default=[],
                    help="log.jsonl of the runs this one started from (train.init), earliest first, "
                         "counted in the card")
    ap.add_argument("--flip-test", choices=("auto", "on", "off"), default="auto",
                    help="the stored test-time flip default (auto: on when it lowers the validation NME)")
    args = ap.parse_args(argv)

    from flmcore.datasets import LandmarkDataset
    from flmcore.evaluate import evaluate
    from flmcore.models import Landmarker, SHIPPED_MODELS, predict_dataset

    run = Path(args.run)
    cfg = json.loads((run / "config.json").read_text())
    log = [json.loads(s) for s in (run / "log.jsonl").read_text().splitlines() if s.strip()]
    lm = Landmarker.load(run / "best.pt", device="cpu", flip_test=False)
    ds = LandmarkDataset.from_folder(args.data, cfg["data"]["scheme"])
    tr, va = ds.split_by_name(cfg["data"]["val_fraction"])

    rows = {}
    t0 = time.perf_counter()
    pred32, _ = predict_dataset(lm, va)
    dt = time.perf_counter() - t0
    rows["landmark boxes"] = evaluate(pred32, va, subsets="auto")
    # float16 storage check
    tmp = run / "half_check.pt"
    lm.save(tmp, half=True)
    lm16 = Landmarker.load(tmp, device="cpu", flip_test=False)
    pred16, _ = predict_dataset(lm16, va)
    tmp.unlink()
    disp = np.linalg.norm(pred16 - pred32, axis=-1)
    half_diff, half_mean = float(np.nanmax(disp)), float(np.nanmean(disp))
    nme16 = evaluate(pred16, va).pooled["nme_interocular"]
    nme_change = abs(nme16 - rows["landmark boxes"].pooled["nme_interocular"])
    # float16 "loses nothing" when the validation NME moves by < 0.01 points and points by < 0.05 px on average
    half = nme_change < 0.01 and half_mean < 0.05
    lm.flip_test = True
    predf, _ = predict_dataset(lm, va)
    rows["landmark boxes + flip test"] = evaluate(predf, va, subsets="auto")
    flip = {"on": True, "off": False}.get(args.flip_test)
    if flip is None:
        flip = rows["landmark boxes + flip test"].pooled["nme_interocular"] < rows["landmark boxes"].pooled["nme_interocular"]
    lm.flip_test = flip
    det_note = ""
    try:
        from flmcore.detect import available_detectors

        dets = [d for d in available_detectors()]
        p, miss = predict_dataset(lm, va, boxes="detector", detector="auto")
        rows["auto detectors (dlib, dlib at 2x, OpenCV), 1 refinement pass; the default of flmcore predict"] = \
            evaluate(p, va, subsets="auto", missing=miss)
        for d in dets:
            for ref in (0, 1):
                p, miss = predict_dataset(lm, va, boxes="detector", detector=d, refine=ref)
                rows[f"{d} detector, {ref} refinement pass(es)"] = evaluate(p, va, subsets="auto", missing=miss)
    except Exception as exc:  # detectors are optional
        det_note = f"(detector rows not computed: {type(exc).__name__}: {exc})"

    entry = SHIPPED_MODELS[args.name]
    wdir = REPO / "flmcore" / "models" / "weights"
    wdir.mkdir(parents=True, exist_ok=True)
    lm.meta.update({"name": args.name, "flip_test": bool(flip), "trained_on": "300-W training set (HELEN, LFPW, AFW "
                    "trainset crops of ../shared/data/300w_train_crops), validation split excluded",
                    "terms": "research use only (300-W annotations: iBUG, non-commercial research)"})
    lm.meta.pop("config", None)
    lm.meta["config"] = json.dumps(cfg)
    lm.save(wdir / entry["weights"], half=half)
    size_mb = (wdir / entry["weights"]).stat().st_size / 1e6

    secs = sum(r["seconds"] for r in log)
    best = min(log, key=lambda r: r.get("val_nme_io", np.inf))
    before = ""
    if args.before:
        stages, n_all, s_all = [], len(log), secs
        for k, path in enumerate(args.before, 1):
            prev = [json.loads(s) for s in Path(path).read_text().splitlines() if s.strip()]
            pbest = min(prev, key=lambda r: r.get("val_nme_io", np.inf))
            s_prev = sum(r["seconds"] for r in prev)
            stages.append(f"stage {k}: {len(prev)} epochs, {s_prev / 60:.1f} min, best validation epoch "
                          f"{pbest['epoch']} (NME {pbest['val_nme_io']:.3f} %)")
            n_all, s_all = n_all + len(prev), s_all + s_prev
        before = (f"\n- Started (`train.init`) from the best weights of the earlier stage(s), each starting from "
                  f"the one before: {'; '.join(stages)}.  In all {n_all} epochs, {s_all / 60:.1f} min.")
    table = "\n\n".join(f"**{k}**\n\n{v.to_markdown()}" for k, v in rows.items())
    card = f"""# flmcore model `{args.name}`: PIPNet, 68 iBUG points

**Terms: research use only.** Trained on the 300-W training annotations (iBUG, Imperial College
London; distributed for non-commercial research: Sagonas et al., ICCV-W 2013 / IVC 2016) and the
HELEN, LFPW and AFW images (Flickr / web; Le et al. ECCV 2012, Belhumeur et al. CVPR 2011, Zhu &
Ramanan CVPR 2012).  The weights inherit these terms; the backbone starts from torchvision's
ImageNet MobileNetV2 (BSD-3-Clause).  The training images are not distributed with flmcore.

## What it does
Input: a 256 x 256 RGB crop of a face, the square of side 1.25 x the longer side of the face's
*landmark box* (the tight box of its 68 points), centred on it (`flmcore.crop`).  Output: the 68
iBUG-300W points (0-based pixels), mapped back to the photo by `Landmarker.predict` /
`flmcore predict`.  Faces come from a detector (`flmcore.detect`, box mapped to a landmark box,
then one refinement pass) or from boxes you give.

## Data and split
`300w_train_crops`: {len(ds)} faces of the 300-W training set (HELEN 870, LFPW 805, AFW 337).
Validation: the fixed split `LandmarkDataset.split_by_name({cfg['data']['val_fraction']})` (CRC-32
of the image name; every face of a photo on one side): {len(va)} faces; training: {len(tr)} faces.
The 300-W test faces (HELEN/LFPW test sets, iBUG) were never used.

## Training
- Command: `{args.command}`
- Config: `{args.config}` in the repository (full config below).
- {len(log)} epochs, {secs / 60:.1f} min of training on a shared 2-core CPU (1 torch thread);
  best validation epoch {best['epoch']} (NME {best['val_nme_io']:.3f} %), which is the shipped one.{before}
- Weights stored as {'float16' if half else 'float32'} ({size_mb:.1f} MB; loaded as float32).  Float16
  storage changes the validation NME by {nme_change:.4f} points and the points by {half_mean:.3f} px on
  average (at most {half_diff:.2f} px, where two score-map cells nearly tie).
- Test-time flip (average with the mirrored crop) default: {'on' if flip else 'off'} (chosen on the
  validation NME below; `flip_test=` overrides).

## Validation numbers (NME in % of the normaliser; FR in %)
Evaluated by `flmcore.evaluate` (300-W protocol: mean NME, FR and AUC at 0.08/0.10 of the
inter-ocular NME).  Landmark-box rows crop from the ground-truth landmark box; detector rows crop
from the detector (faces it misses count as failures). {det_note}
CPU prediction time on the validation faces (landmark boxes, no flip): {1000 * dt / len(va):.1f} ms/face.

{table}

## Full config
```json
{json.dumps(cfg, indent=2)}
```
"""
    (wdir / entry["card"]).write_text(card, encoding="utf-8")
    print(card)
    return 0


if __name__ == "__main__":
    sys.exit(main())
