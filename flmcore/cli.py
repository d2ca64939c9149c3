"""Command-line interface: ``flmcore demo | train | evaluate | predict | export | bench | info``.

``flmcore demo`` runs every method of the library on the bundled real faces
(or ``--data DIR``) and writes a markdown report with PNG figures;
``flmcore bench`` runs the benchmarks of ``bench/`` (source checkout only);
``flmcore info`` prints versions, thread settings and the compiled kernels;
``flmcore train CONFIG`` runs a training run (:func:`flmcore.train.train`);
``flmcore evaluate MODEL DATASET`` scores a model (or a predictions file) with
the 300-W protocol (:mod:`flmcore.evaluate`); ``flmcore predict`` writes the
landmarks of photos (:func:`flmcore.models.predict_files`); ``flmcore export``
writes an ONNX file (:func:`flmcore.models.export_onnx`).

Structure: one ``cmd_<name>(args) -> int`` function per subcommand, each
registered in :func:`build_parser` with ``set_defaults(func=cmd_<name>)``.
Exit codes: 0 success, 1 a step failed, 2 bad arguments, 3 no data to run on.
Errors print one line; set ``FLMCORE_DEBUG=1`` for the full traceback.
"""
from __future__ import annotations

import argparse
from contextlib import nullcontext
import importlib
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import List, Optional

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_DATA = 0, 1, 2, 3


def _debug() -> bool:
    return os.environ.get("FLMCORE_DEBUG", "") not in ("", "0")


def _error(cmd: str, msg: str) -> None:
    print(f"flmcore {cmd}: {msg}", file=sys.stderr)


def _progress_factory(enabled: bool):
    def progress(iterable, desc: str = "", total: Optional[int] = None):
        if not enabled:
            return iterable
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True)

    return progress


def _no_data_message(needed: List[str], data_dir: Optional[Path]) -> str:
    files = ", ".join(f"{n}.npz" for n in needed)
    where = (f"--data {data_dir} holds none of the files the demo reads ({files})" if data_dir is not None
             else "the bundled real-face sample is not installed (it is research-use data kept only in the "
                  "source repository, not in wheels)")
    return (f"no data to run on: {where}.\n"
            "  - from a source checkout:  pip install \"torch==2.13.0\" -e .  &&  flmcore demo\n"
            f"  - or pass a folder of sample files:  flmcore demo --data DIR  (DIR/<name>.npz in the format "
            f"of flmcore.data.load_sample: {files}; or an iBUG folder of images + .pts for pipnet and lddmm)")


def cmd_demo(args) -> int:
    """Run the demo parts on real faces and write ``report.md`` with figures."""
    from flmcore.data import use_data_dir
    from flmcore.train.demos import NEEDS, PARTS, plan

    parts = args.parts or list(PARTS)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        _error("demo", f"unknown part(s) {', '.join(unknown)}; known: {', '.join(PARTS)}")
        return EXIT_USAGE
    data_dir = Path(args.data).expanduser().resolve() if args.data else None
    if data_dir is not None and not data_dir.is_dir():
        _error("demo", f"--data {data_dir} is not a folder")
        return EXIT_USAGE
    runnable, reasons = plan(parts, data_dir)
    if not runnable:
        needed = sorted({n for p in parts for n in NEEDS.get(p, ())})
        _error("demo", _no_data_message(needed, data_dir))
        return EXIT_NO_DATA
    for p, why in reasons.items():
        _error("demo", f"skipping part {p}: {why}")
    from flmcore._plotting import budget_note, figure_style

    note = (f"flmcore demo{' --quick' if args.quick else ''}, seed {args.seed}: "
            f"{'reduced' if args.quick else 'demo'} budget; the README's numbers come from longer runs")
    with (use_data_dir(data_dir) if data_dir is not None else nullcontext()), figure_style(), budget_note(note):
        return _run_demo(args, runnable, data_dir, skipped=reasons)


def _run_demo(args, parts: List[str], data_dir: Optional[Path], skipped: Optional[dict] = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from tqdm.auto import tqdm

    from flmcore import __version__
    from flmcore.train.demos import PARTS, DemoContext

    skipped = dict(skipped or {})
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # every part reads DIR (its npz files, or an iBUG folder where it can), never the bundled sample
    ctx = DemoContext(out_dir=out, data_dir=data_dir, quick=args.quick, seed=args.seed,
                      progress=_progress_factory(not args.no_progress))
    sections: List[str] = []
    failed: List[str] = []
    bar = tqdm(parts, desc="flmcore demo", disable=args.no_progress, dynamic_ncols=True)
    for name in bar:
        bar.set_postfix_str(name)
        t0 = time.perf_counter()
        try:
            mod = importlib.import_module(f"flmcore.train.demos.{name}")
            text = mod.run(ctx)
            sections.append(f"{text.rstrip()}\n\n_({name}: {time.perf_counter() - t0:.1f} s)_\n")
        except Exception as exc:  # report in one line and go on with the other parts
            failed.append(name)
            if _debug():
                traceback.print_exc()
            _error("demo", f"part {name} failed: {type(exc).__name__}: {exc}")
            sections.append(f"## {name}\n\nThis part failed: `{type(exc).__name__}: {exc}`\n")
    order = {p: i for i, p in enumerate(PARTS)}
    for name in sorted(skipped, key=lambda p: order.get(p, len(order))):
        sections.append(f"## {name}\n\nNot run: {skipped[name]}.\n")
    budget = "reduced budgets (--quick)" if args.quick else "demo budgets (shorter than the README's runs)"
    header = (f"# flmcore demo report\n\nflmcore {__version__}, Python {platform.python_version()}, "
              f"{os.cpu_count()} CPU(s), seed {args.seed}, {budget}. Data: "
              f"{'bundled sample (flmcore.data.load_sample)' if data_dir is None else f'--data {data_dir}'}"
              f"{'; parts not run: ' + ', '.join(skipped) if skipped else ''}.\n")
    report = out / "report.md"
    report.write_text(header + "\n" + "\n".join(sections))
    print(f"report: {report}")
    for p in sorted(out.glob("*.png")):
        print(f"figure: {p}")
    if failed:
        _error("demo", f"parts that failed: {', '.join(failed)} (FLMCORE_DEBUG=1 shows tracebacks)")
        return EXIT_FAILED
    if skipped:
        _error("demo", f"parts not run for lack of data: {', '.join(skipped)} (see the report)")
        return EXIT_NO_DATA
    return EXIT_OK


def _repo_root() -> Optional[Path]:
    root = Path(__file__).resolve().parents[1]
    return root if (root / "bench" / "__main__.py").is_file() else None


def _bench_names() -> List[str]:
    root = _repo_root()
    if root is None:
        return []
    return sorted(p.stem[len("bench_"):] for p in (root / "bench").glob("bench_*.py"))


def cmd_bench(args) -> int:
    """Run the benchmarks of ``bench/`` (each beside its anchor)."""
    root = _repo_root()
    if root is None:
        _error("bench", "the benchmarks live in the source repository (bench/), not in this install; "
                        "run this command from an editable install of a checkout (pip install -e .)")
        return EXIT_USAGE
    known = _bench_names()
    unknown = [n for n in args.names if n not in known]
    if unknown:
        _error("bench", f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(known)}")
        return EXIT_USAGE
    sys.path.insert(0, str(root))
    bench_main = importlib.import_module("bench.__main__")
    argv = list(args.names) + (["--quick"] if args.quick else [])
    return int(bench_main.main(argv) or 0)


def cmd_train(args) -> int:
    """Run or resume a training run from a TOML/JSON config (:func:`flmcore.train.train`)."""
    from flmcore.train import train

    res = train(args.config, args.out, resume=args.resume, time_limit=args.time_limit,
                progress=not args.no_progress, max_epochs=args.max_epochs, threads=args.threads)
    best = res["best_val_nme_io"]
    print(f"{res['stopped']}: {res['epochs_done']} epoch(s) in {res['seconds']:.0f} s; "
          + (f"best validation NME {best:.3f} % (epoch {res['best_epoch']}); " if best is not None else "")
          + f"checkpoints in {res['out_dir']} (best.pt, last.pt), log {res['out_dir']}/log.jsonl")
    return EXIT_OK


def _load_eval_dataset(args):
    from flmcore.datasets import LandmarkDataset

    ds = LandmarkDataset.from_folder(args.dataset, args.scheme)
    if args.split != "all":
        tr, va = ds.split_by_name(args.val_fraction)
        ds = va if args.split == "val" else tr
    if len(ds) == 0:
        raise ValueError(f"the {args.split} split of {args.dataset} is empty")
    return ds


def cmd_evaluate(args) -> int:
    """Score a model (or a predictions JSON file) on an annotated folder with the 300-W protocol."""
    from flmcore.evaluate import evaluate, evaluate_predictions

    ds = _load_eval_dataset(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if str(args.model).lower().endswith(".json"):
        res = evaluate_predictions(args.model, ds, subsets="auto")
        label = Path(args.model).stem
    else:
        from flmcore.models import load_model, predict_dataset

        model = load_model(args.model, flip_test=args.flip_test)
        pred, missing = predict_dataset(model, ds, boxes=args.boxes, detector=args.detector,
                                        progress=not args.no_progress)
        res = evaluate(pred, ds, subsets="auto", missing=missing)
        label = Path(str(args.model)).stem
    res.to_json(out / "results.json")
    table = res.to_markdown()
    (out / "results.md").write_text(f"# {label} on {args.dataset} ({args.split}, boxes: {args.boxes})\n\n{table}\n")
    res.plot_ced(out / "ced.png", title=f"{label}: {args.split} faces, {args.boxes} boxes", labels=[label])
    print(table)
    print(f"written: {out / 'results.json'}, {out / 'results.md'}, {out / 'ced.png'}")
    return EXIT_OK


def cmd_predict(args) -> int:
    """Landmarks of every face in photos, as JSON in image pixels (+ optional overlays)."""
    from flmcore.models import load_model, predict_files, write_predictions

    model = load_model(args.model, flip_test=args.flip_test)
    res = predict_files(model, args.inputs, boxes=args.boxes, detector=args.detector, box_kind=args.box_kind,
                        refine=args.refine, overlay_dir=args.overlay, progress=not args.no_progress)
    write_predictions(res, args.out)
    n_img = len(res["images"])
    n_face = sum(len(e["faces"]) for e in res["images"])
    bad = [e["file"] for e in res["images"] if "error" in e]
    print(f"{n_face} face(s) in {n_img} image(s) -> {args.out}" + (f"; {len(bad)} image(s) with errors" if bad else ""))
    return EXIT_FAILED if bad and len(bad) == n_img else EXIT_OK


def cmd_export(args) -> int:
    """Export a model (shipped name or checkpoint) to ONNX."""
    from flmcore.models import export_onnx, load_model

    model = load_model(args.model, device="cpu")
    export_onnx(model, args.output, decode=not args.no_decode)
    print(f"written: {args.output}")
    return EXIT_OK


def _dist_version(*dists: str) -> Optional[str]:
    from importlib import metadata

    for d in dists:
        try:
            return metadata.version(d)
        except metadata.PackageNotFoundError:
            continue
    return None


def cmd_info(args) -> int:
    """Print versions, thread settings and which compiled kernels are built."""
    from flmcore import __version__

    # Versions from the installed metadata: no heavy imports (fast).
    print(f"flmcore {__version__}")
    print(f"python {platform.python_version()} ({platform.platform()})")
    for label, dists in (("numpy", ("numpy",)), ("scipy", ("scipy",)), ("scikit-learn", ("scikit-learn",)),
                         ("numba", ("numba",)), ("scikit-image", ("scikit-image",)), ("torch", ("torch",)),
                         ("opencv", ("opencv-python-headless", "opencv-python", "opencv-contrib-python"))):
        v = _dist_version(*dists)
        print(f"{label} {v if v else 'not installed'}")
    aff = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(f"cpu count {os.cpu_count()}; affinity {aff}")
    for var in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS"):
        print(f"{var}={os.environ.get(var, '(unset)')}")
    # torch first, and Numba's count from its config only: starting Numba's
    # threading layer (numba.get_num_threads) initialises OpenMP and would change
    # what torch then reports.
    try:
        import torch

        print(f"torch threads {torch.get_num_threads()}; cuda available {torch.cuda.is_available()}")
    except ImportError:
        pass
    try:
        from numba.core import config as numba_config

        print(f"numba threads {numba_config.NUMBA_NUM_THREADS} (threading layer starts on first use)")
    except ImportError:
        pass
    from flmcore._ext import compiled_status

    status = compiled_status()
    if not status:
        print("compiled kernels: none found")
    for name, ok in status.items():
        print(f"compiled kernel flmcore._ext.{name}: "
              f"{'active' if ok else 'NOT BUILT (reinstall: pip install --no-build-isolation -e .)'}")
    return EXIT_OK if all(status.values()) else EXIT_FAILED


_DESCRIPTION = ("flmcore: facial landmark detection (sparse shape regression, LDDMM-Face, PIPNet, "
                "ATF, anisotropic losses).")
_EPILOG = ("exit codes: 0 success, 1 a step failed, 2 bad arguments, 3 no data to run on. "
           "Set FLMCORE_DEBUG=1 for full tracebacks. Docs: docs/ in the source repository.")


def build_parser() -> argparse.ArgumentParser:
    """The ``flmcore`` argument parser: one subparser per ``cmd_<name>`` function."""
    # Keep this light: --help and --version must not import torch (flmcore.train).
    from flmcore import __version__

    ap = argparse.ArgumentParser(prog="flmcore", description=_DESCRIPTION, epilog=_EPILOG)
    ap.add_argument("--version", action="version", version=f"flmcore {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    parts = "geometry, ssr, cascade, lddmm, pipnet, atf"  # flmcore.train.demos.PARTS (checked by a test)
    d = sub.add_parser(
        "demo", help="run every method on real faces and write a report with figures",
        description="Run every method of flmcore on real faces (the sample bundled with a source checkout, "
                    "or --data DIR) and write OUT/report.md with PNG figures.",
        epilog=f"parts: {parts}. Without a source checkout (a wheel install) pass --data DIR, a folder of "
               "helen_pairs.npz, helen68_shapes.npz and aflw2000.npz in the format of "
               "flmcore.data.load_sample; pipnet and lddmm also run on an iBUG folder (images + .pts). "
               "A part that cannot use DIR is not run (never the bundled sample instead): the report "
               "says so and the exit code is 3. " + _EPILOG)
    d.add_argument("--out", default="flmcore_out", help="output folder (default: ./flmcore_out)")
    d.add_argument("--data", default=None, metavar="DIR",
                   help="folder of <name>.npz sample files, or an iBUG folder (images + .pts) for pipnet and "
                        "lddmm, used instead of the bundled sample")
    d.add_argument("--quick", action="store_true", help="smaller budgets (seconds per part)")
    d.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.add_argument("parts", nargs="*", metavar="PART", help="parts to run (default: all)")
    d.set_defaults(func=cmd_demo)

    names = _bench_names()
    b = sub.add_parser(
        "bench", help="run the benchmarks of bench/ beside their anchors (source checkout)",
        description="Run benchmarks of bench/ (source checkout only), each beside its anchor, "
                    "printing median times and ratios.",
        epilog=("benchmarks: " + ", ".join(names)) if names else
               "benchmarks: none in this install (they live in the source repository's bench/ folder)")
    b.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    b.add_argument("names", nargs="*", metavar="NAME",
                   help="benchmarks to run (default: all" + (f": {', '.join(names)})" if names else ")"))
    b.set_defaults(func=cmd_bench)

    t = sub.add_parser("train", help="train a model from a TOML config (checkpoints, resume, time budget)",
                       description="Run a training run from a TOML/JSON config (see flmcore.train and "
                                   "configs/ in the repository): a progress bar, OUT/log.jsonl, OUT/last.pt and "
                                   "OUT/best.pt.")
    t.add_argument("config", help="config file (.toml or .json)")
    t.add_argument("--out", required=True, help="output folder of the run")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    t.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="wall-clock budget; ends cleanly keeping the best checkpoint")
    t.add_argument("--max-epochs", type=int, default=None, help="stop after this many epochs in this call")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads (overrides train.threads)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="score a model or a predictions file (NME/FR/AUC, CED)",
                       description="Crop, predict, uncrop and score every face of an annotated folder (images "
                                   "with .pts beside them) with the 300-W protocol: NME (inter-ocular, inter-pupil, "
                                   "box), FR and AUC at 0.08 / 0.10, per subset (first folder level) and pooled. "
                                   "MODEL is a shipped model name, a checkpoint, or a predictions .json file (then "
                                   "it is scored as is).")
    e.add_argument("model", metavar="MODEL", help="shipped model name (ibug68), checkpoint, or predictions .json")
    e.add_argument("dataset", metavar="DATASET", help="folder of images with .pts files beside them")
    e.add_argument("--scheme", default="ibug68", help="annotation scheme of the .pts files (default: ibug68)")
    e.add_argument("--split", choices=("all", "val", "train"), default="all",
                   help="faces to score: all, or the val/train part of the fixed name-hash split")
    e.add_argument("--val-fraction", type=float, default=0.1, help="validation fraction of the split (0.1)")
    e.add_argument("--boxes", choices=("landmark", "detector"), default="landmark",
                   help="crop from the landmark box (300-W protocol, default) or from the face detector")
    e.add_argument("--detector", default="auto", help="detector for --boxes detector (default: auto)")
    e.add_argument("--flip-test", action=argparse.BooleanOptionalAction, default=None,
                   help="average with the mirrored crop's prediction (default: as stored with the model)")
    e.add_argument("--out", default="flmcore_eval", help="output folder (results.json, results.md, ced.png)")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="landmarks of every face in photos -> JSON (image pixels)",
                        description="Detect faces (or take --boxes), predict their landmarks and write "
                                    "{\"images\": [{\"file\", \"faces\": [{\"box\", \"score\", \"points\"}]}]} "
                                    "with points and boxes in image pixels (0-based, centre of the top-left pixel "
                                    "at (0, 0)).")
    pr.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files and/or folders")
    pr.add_argument("--out", required=True, metavar="FILE.json", help="output JSON file")
    pr.add_argument("--model", default="ibug68", help="shipped model name or checkpoint (default: ibug68)")
    pr.add_argument("--boxes", default=None, metavar="FILE.json",
                    help="face boxes in the output format (points optional); then no detector runs")
    pr.add_argument("--box-kind", default="landmark",
                    help="what --boxes are: landmark (tight landmark boxes, default) or a detector name to map")
    pr.add_argument("--detector", default="auto", help="face detector (default: auto)")
    pr.add_argument("--refine", type=int, default=None,
                    help="extra passes cropped from the previous points (default: 1 with a detector, 0 with boxes)")
    pr.add_argument("--flip-test", action=argparse.BooleanOptionalAction, default=None,
                    help="average with the mirrored crop's prediction (default: as stored with the model)")
    pr.add_argument("--overlay", default=None, metavar="DIR", help="write PNGs with the points drawn")
    pr.add_argument("--no-progress", action="store_true", help="no progress bar")
    pr.set_defaults(func=cmd_predict)

    x = sub.add_parser("export", help="export a model to ONNX (decoding included)",
                       description="Write an ONNX file of a shipped model or a checkpoint; the graph takes "
                                   "(B, 3, S, S) float32 crops in [0, 1] and returns (B, P, 2) crop pixels.")
    x.add_argument("model", metavar="MODEL", help="shipped model name (ibug68) or checkpoint")
    x.add_argument("output", metavar="OUT.onnx", help="output file")
    x.add_argument("--no-decode", action="store_true", help="export the raw head maps (decode with "
                   "flmcore.models.decode_onnx_outputs)")
    x.set_defaults(func=cmd_export)

    i = sub.add_parser("info", help="versions, threads and compiled kernels",
                       description="Print versions, thread settings and which compiled kernels are built.")
    i.set_defaults(func=cmd_info)
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``flmcore`` console script.

    Examples
    --------
    >>> main(["info"])  # doctest: +SKIP
    0
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        _error(args.command, "interrupted")
        return 130
    except Exception as exc:  # one line for users; FLMCORE_DEBUG=1 for developers
        if _debug():
            raise
        _error(args.command, f"{type(exc).__name__}: {exc} (FLMCORE_DEBUG=1 shows the traceback)")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
