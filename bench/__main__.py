"""Run every benchmark in bench/: ``python -m bench [--quick] [names...]``.

Each ``bench/bench_<name>.py`` defines ``main(argv=None) -> dict``; anchors that
are not installed are reported as skipped by the benchmark itself.
"""
import argparse
import importlib
import sys
import traceback
from pathlib import Path


def available():
    here = Path(__file__).resolve().parent
    return sorted(p.stem[len("bench_"):] for p in here.glob("bench_*.py"))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("names", nargs="*", help=f"benchmarks to run (default all: {', '.join(available())})")
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    args = ap.parse_args(argv)
    names = args.names or available()
    failed = []
    for name in names:
        print(f"\n===== bench {name} =====", flush=True)
        mod = importlib.import_module(f"bench.bench_{name}")
        try:
            mod.main(["--quick"] if args.quick else [])
        except Exception:
            traceback.print_exc()
            failed.append(name)
    if failed:
        print(f"\nbenchmarks that failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
