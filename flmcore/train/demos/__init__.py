"""Parts of ``flmcore demo``: one module per method, each with ``run(ctx) -> str``.

Each part is a small, fixed configuration of public calls -- nothing in a part is
experiment logic a user cannot call: ``pipnet`` writes a training config and runs it
with :func:`flmcore.train.train`, then scores the run with
:func:`flmcore.models.predict_dataset` and :func:`flmcore.evaluate.evaluate` (the
report shows the config as TOML and the ``flmcore train`` / ``flmcore evaluate``
commands that repeat it); ``geometry``, ``ssr``, ``cascade``, ``lddmm`` and ``atf``
call the estimators and functions of :mod:`flmcore.procrustes`, :mod:`flmcore.pose`,
:mod:`flmcore.anisotropic`, :mod:`flmcore.metrics`, :mod:`flmcore.ssr`,
:mod:`flmcore.cascade`, :mod:`flmcore.lddmm`, :mod:`flmcore.nn` and :mod:`flmcore.train`
(``fit_drn_ssr``, ``drn_ssr_init``, ``fit_atf``, ``ATDPSampler``,
``PoseBalancedSampler``); their protocol functions (``cascade.experiment``,
``lddmm.sparse_to_dense``, ``atf.run_atf_experiment``, ...) are public too.

``run`` receives a :class:`DemoContext`, does a short real-data run (well under a
minute on 2 CPU cores), writes its PNG figures into ``ctx.out_dir`` and returns a
markdown section (``## Title`` + text/tables + ``![](figure.png)``) that the CLI
puts into ``report.md``; every section names its data source.

Data (:func:`plan`): without ``--data`` every part reads the bundled sample
(:func:`flmcore.data.load_sample`).  With ``--data DIR`` a part reads ``DIR/<name>.npz``
for each sample file of :data:`NEEDS`; ``pipnet`` and ``lddmm`` also accept an iBUG
folder (images / shapes in ``.pts`` files) and then train on ``DIR`` itself.  A part
that can use neither is not run: the report says so and ``flmcore demo`` exits
non-zero -- a part never falls back to the bundled sample when ``DIR`` was given.

The parts live under :mod:`flmcore.train` because they are short training runs
on real data (several use torch), and the core below ``flmcore.nn`` never imports
torch; the geometry and ssr parts stay NumPy-only.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple

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


# Parts that also run on an iBUG folder (``DIR`` with ``.pts`` files): ``pipnet`` trains on
# its images + .pts, ``lddmm`` reads its 68-point shapes.
FOLDER_PARTS = ("pipnet", "lddmm")


def _has_pts(folder) -> bool:
    return folder is not None and Path(folder).is_dir() and next(Path(folder).rglob("*.pts"), None) is not None


def plan(parts: Iterable[str], data_dir=None) -> Tuple[List[str], Dict[str, str]]:
    """Which parts can run on ``data_dir`` (``None``: the bundled sample), and why the others cannot.

    Returns
    -------
    runnable : list of str
    reasons : dict of part -> str
        One line per part that cannot run.
    """
    from flmcore.data import sample_available, use_data_dir

    runnable, reasons = [], {}
    with (use_data_dir(data_dir) if data_dir is not None else nullcontext()):
        for p in parts:
            miss = [n for n in NEEDS[p] if not sample_available(n)]
            if not miss or (data_dir is not None and p in FOLDER_PARTS and _has_pts(data_dir)):
                runnable.append(p)
                continue
            files = ", ".join(f"{n}.npz" for n in miss)
            if data_dir is None:
                reasons[p] = f"the bundled sample lacks {files}"
            else:
                alt = " or .pts files (an iBUG folder)" if p in FOLDER_PARTS else ""
                reasons[p] = (f"--data {data_dir} holds no {files}{alt}; this part does not run on other data "
                              "(it never substitutes the bundled sample)")
    return runnable, reasons


def load_part(name: str, data_dir=None) -> dict:
    """``data_dir/<name>.npz`` when ``data_dir`` is given (an error if absent: no silent
    fallback to the bundled sample), else :func:`flmcore.data.load_sample`."""
    if data_dir is not None:
        f = Path(data_dir) / f"{name}.npz"
        if not f.is_file():
            raise FileNotFoundError(f"{f} does not exist (the demo reads {name}.npz from --data DIR)")
        with np.load(f, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    from flmcore.data import load_sample

    return load_sample(name)


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
        The ``--data DIR`` folder (``<name>.npz`` sample files, or an iBUG folder for
        the parts of :data:`FOLDER_PARTS`), else ``None``: the bundled sample
        (:func:`flmcore.data.load_sample`).
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

    def load(self, name: str) -> dict:
        """The sample file ``name`` from ``data_dir`` or the bundled sample (:func:`load_part`)."""
        return load_part(name, self.data_dir)

    def source(self, *names: str) -> str:
        """Where :meth:`load` reads ``names`` from, for the report."""
        files = ", ".join(f"{n}.npz" for n in names)
        if self.data_dir is None:
            return f"the bundled sample ({', '.join(names)}, `flmcore.data.load_sample`)"
        return f"`{self.data_dir}` (--data: {files})"

    def rng(self) -> np.random.Generator:
        """A fresh generator seeded with ``seed``."""
        return np.random.default_rng(self.seed)
