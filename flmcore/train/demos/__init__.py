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
        ``--data DIR`` given by the user, else ``None`` (use the bundled sample).
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
