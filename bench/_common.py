"""Shared timing and reporting for the benchmarks in bench/ (not part of the library).

Every benchmark runs flmcore and its anchors on the same data in one process,
alternating between them, and reports median times and ratios.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def median_times(fns: Dict[str, Callable[[], object]], repeat: int = 7, warmup: int = 1,
                 min_time: float = 0.0) -> Dict[str, float]:
    """Median wall time (s) of each callable, alternating between them each round.

    ``warmup`` untimed rounds run first (JIT compilation, caches).  When ``min_time``
    is set, each timing repeats the call until that much time has passed and
    divides by the count (for sub-millisecond calls).
    """
    for _ in range(warmup):
        for f in fns.values():
            f()
    samples: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            n = 0
            t0 = time.perf_counter()
            while True:
                f()
                n += 1
                el = time.perf_counter() - t0
                if el >= min_time:
                    break
            samples[k].append(el / n)
    return {k: float(np.median(v)) for k, v in samples.items()}


def print_table(rows: List[dict], columns: Optional[List[str]] = None) -> None:
    """Print rows (dicts) as an aligned text table."""
    if not rows:
        return
    columns = columns or list(rows[0].keys())
    fmt = []
    for c in columns:
        vals = [_fmt(r.get(c, "")) for r in rows]
        fmt.append(max(len(c), *(len(v) for v in vals)))
    print("  ".join(c.ljust(w) for c, w in zip(columns, fmt)))
    for r in rows:
        print("  ".join(_fmt(r.get(c, "")).ljust(w) for c, w in zip(columns, fmt)))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_json(name: str, payload: dict, out: Optional[str] = None) -> Path:
    """Write results with machine info to ``bench/results/<name>.json`` (or ``out``)."""
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(payload)
    payload["machine"] = {"platform": platform.platform(), "python": platform.python_version(),
                          "cpu_count": os.cpu_count()}
    path.write_text(json.dumps(payload, indent=2, default=float))
    return path


def thread_limits(n: int):
    """Context manager limiting numba, torch and OpenMP threads to ``n`` for a block."""
    import contextlib

    @contextlib.contextmanager
    def _cm():
        saved = {}
        try:
            import numba
            saved["numba"] = numba.get_num_threads()
            numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        except Exception:
            pass
        try:
            import torch
            saved["torch"] = torch.get_num_threads()
            torch.set_num_threads(n)
        except Exception:
            pass
        try:
            yield
        finally:
            if "numba" in saved:
                import numba
                numba.set_num_threads(saved["numba"])
            if "torch" in saved:
                import torch
                torch.set_num_threads(saved["torch"])
    return _cm()
