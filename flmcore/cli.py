"""Command-line interface: ``flmcore demo | bench | info``.

``flmcore demo`` runs every method of the library on the bundled real faces
(or ``--data DIR``) and writes a markdown report with PNG figures;
``flmcore bench`` runs the benchmarks of ``bench/`` (source checkout only);
``flmcore info`` prints versions, thread settings and the compiled kernels.
"""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import List, Optional

__all__ = ["main"]


def _progress_factory(enabled: bool):
    def progress(iterable, desc: str = "", total: Optional[int] = None):
        if not enabled:
            return iterable
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True)

    return progress


def cmd_demo(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from flmcore.train.demos import PARTS, DemoContext

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(args.data).resolve() if args.data else None
    if data_dir is not None and not data_dir.is_dir():
        print(f"flmcore demo: --data {data_dir} is not a folder", file=sys.stderr)
        return 2
    parts = args.parts or list(PARTS)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        print(f"flmcore demo: unknown part(s) {unknown}; known: {', '.join(PARTS)}", file=sys.stderr)
        return 2
    ctx = DemoContext(out_dir=out, data_dir=data_dir, quick=args.quick, seed=args.seed,
                      progress=_progress_factory(not args.no_progress))
    sections: List[str] = []
    failed: List[str] = []
    from tqdm.auto import tqdm

    bar = tqdm(parts, desc="flmcore demo", disable=args.no_progress, dynamic_ncols=True)
    for name in bar:
        bar.set_postfix_str(name)
        t0 = time.perf_counter()
        try:
            mod = importlib.import_module(f"flmcore.train.demos.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"flmcore.train.demos.{name}":
                continue  # part not built in this version
            raise
        try:
            text = mod.run(ctx)
            sections.append(f"{text.rstrip()}\n\n_({name}: {time.perf_counter() - t0:.1f} s)_\n")
        except Exception as exc:  # report and go on with the other parts
            failed.append(name)
            tb = traceback.format_exc()
            print(tb, file=sys.stderr)
            sections.append(f"## {name}\n\nThis part failed: `{type(exc).__name__}: {exc}`\n")
    from flmcore import __version__

    header = (f"# flmcore demo report\n\nflmcore {__version__}, Python {platform.python_version()}, "
              f"{os.cpu_count()} CPU(s). Data: {'bundled sample (flmcore.data.load_sample)' if data_dir is None else data_dir}.\n")
    report = out / "report.md"
    report.write_text(header + "\n" + "\n".join(sections))
    print(f"report: {report}")
    for p in sorted(out.glob("*.png")):
        print(f"figure: {p}")
    if failed:
        print(f"flmcore demo: parts that failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _repo_root() -> Optional[Path]:
    root = Path(__file__).resolve().parents[1]
    return root if (root / "bench" / "__main__.py").is_file() else None


def cmd_bench(args) -> int:
    root = _repo_root()
    if root is None:
        print("flmcore bench: the benchmarks live in the source repository (bench/); "
              "run this command from an editable install of a checkout", file=sys.stderr)
        return 2
    sys.path.insert(0, str(root))
    bench_main = importlib.import_module("bench.__main__")
    argv = list(args.names) + (["--quick"] if args.quick else [])
    return int(bench_main.main(argv) or 0)


def cmd_info(args) -> int:
    import numpy as np

    from flmcore import __version__
    from flmcore._ext import compiled_status

    print(f"flmcore {__version__}")
    print(f"python {platform.python_version()} ({platform.platform()})")
    print(f"numpy {np.__version__}")
    for mod in ("scipy", "sklearn", "numba", "skimage", "torch", "cv2"):
        try:
            m = importlib.import_module(mod)
            print(f"{mod} {getattr(m, '__version__', '?')}")
        except ImportError:
            print(f"{mod} not installed")
    print(f"cpu count {os.cpu_count()}; affinity {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'}")
    for var in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS"):
        print(f"{var}={os.environ.get(var, '(unset)')}")
    try:
        import numba

        print(f"numba threads {numba.get_num_threads()} (layer {numba.threading_layer() if _numba_layer_ready() else 'not yet chosen'})")
    except ImportError:
        pass
    try:
        import torch

        print(f"torch threads {torch.get_num_threads()}; cuda available {torch.cuda.is_available()}")
    except ImportError:
        pass
    status = compiled_status()
    if not status:
        print("compiled kernels: none found")
    for name, ok in status.items():
        print(f"compiled kernel flmcore._ext.{name}: {'active' if ok else 'NOT BUILT (reinstall with pip install -e .)'}")
    return 0 if all(status.values()) else 1


def _numba_layer_ready() -> bool:
    try:
        import numba

        numba.threading_layer()
        return True
    except Exception:
        return False


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="flmcore", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run every method on the bundled real faces and write a report")
    d.add_argument("--out", default="flmcore_out", help="output folder (default: ./flmcore_out)")
    d.add_argument("--data", default=None, help="folder of another data set (see each part's docs)")
    d.add_argument("--quick", action="store_true", help="smaller budgets (seconds per part)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.add_argument("parts", nargs="*", help="parts to run (default: all)")
    d.set_defaults(func=cmd_demo)
    b = sub.add_parser("bench", help="run the benchmarks of bench/ (source checkout)")
    b.add_argument("--quick", action="store_true")
    b.add_argument("names", nargs="*")
    b.set_defaults(func=cmd_bench)
    i = sub.add_parser("info", help="versions, threads and compiled kernels")
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
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
