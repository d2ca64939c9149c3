"""Parts of ``flmcore demo``: one module per method, each with ``run(ctx) -> str``.

``run`` receives a :class:`DemoContext`, does a short real-data run (well under a
minute on 2 CPU cores), writes its PNG figures into ``ctx.out_dir`` and returns a
markdown section (``## Title`` + text/tables + ``![](figure.png)``) that the CLI
puts into ``report.md``.

The parts live under :mod:`flmcore.train` because they are short training runs
on real data (several use torch), and the core below ``flmcore.nn`` never imports
torch; the geometry and ssr parts stay NumPy-only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

# Order in which ``flmcore demo`` runs the parts (module names in this package).
PARTS = ("geometry", "ssr", "cascade", "lddmm", "pipnet", "atf")

# The :func:`flmcore.data.load_sample` parts each demo part reads.  ``flmcore demo``
# checks them before running (a wheel install has no sample: one clear message,
# no tracebacks); ``--data DIR`` supplies them as ``DIR/<name>.npz``.
NEEDS = {
    "geometry": ("helen68_shapes", "aflw2000"),
    "ssr": ("helen_pairs",),
    "cascade": ("helen_pairs",),
    "lddmm": ("helen68_shapes",),
    "pipnet": ("helen_pairs",),
    "atf": ("helen_pairs", "aflw2000"),
}


def _plain_progress(iterable: Iterable, desc: str = "", total: Optional[int] = None):
    return iterable


@dataclass
class DemoContext:
    """What every demo part receives.

    Attributes
    ----------
    out_dir : pathlib.Path
        Folder for figures (PNG) and the report.
    data_dir : pathlib.Path or None
        A folder of the part's own data, else ``None``: read through
        :func:`flmcore.data.load_sample` (the bundled sample, or the ``--data DIR``
        folder of ``<name>.npz`` files, which ``flmcore demo`` installs with
        :func:`flmcore.data.use_data_dir`).
    quick : bool
        Smaller budgets (used by the tests).
    seed : int
        Seed for every random choice.
    progress : callable
        ``progress(iterable, desc=..., total=...)`` wraps loops in a progress bar.
    """

    out_dir: Path
    data_dir: Optional[Path] = None
    quick: bool = False
    seed: int = 0
    progress: Callable = field(default=_plain_progress)

    def rng(self) -> np.random.Generator:
        """A fresh generator seeded with ``seed``."""
        return np.random.default_rng(self.seed)
