"""Build the Cython kernels of flmcore._ext.

Every ``flmcore/_ext/*.pyx`` becomes an extension module ``flmcore._ext.<name>``,
compiled with OpenMP when the compiler supports it.  Set ``FLMCORE_ONLY=a,b`` to
build only some of them (handy while developing one kernel).

Editable installs (``pip install -e .``) reuse a kernel already built in the source
tree when it is newer than its ``.pyx``/``.c``/``.h`` sources, instead of compiling
every kernel again (60-70 s); ``FLMCORE_REBUILD=1`` forces a full rebuild.  With
``pip install --no-build-isolation -e .`` pip also skips creating a fresh build
environment (it uses your installed setuptools, Cython and NumPy).
"""
import filecmp
import os
import shutil
import sys
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext as _build_ext

here = Path(__file__).parent
only = {s.strip() for s in os.environ.get("FLMCORE_ONLY", "").split(",") if s.strip()}
if sys.platform == "win32":
    omp_compile, omp_link = ["/openmp"], []
elif sys.platform == "darwin":
    omp_compile, omp_link = [], []  # Apple clang has no OpenMP by default: kernels run serially
else:
    omp_compile, omp_link = ["-fopenmp"], ["-fopenmp"]

extensions = []
for pyx in sorted((here / "flmcore" / "_ext").glob("*.pyx")):
    if only and pyx.stem not in only:
        continue
    extensions.append(
        Extension(
            f"flmcore._ext.{pyx.stem}",
            [str(pyx.relative_to(here))],
            include_dirs=[np.get_include(), str(pyx.parent.relative_to(here))],
            depends=[str(h.relative_to(here)) for h in sorted(pyx.parent.glob(f"{pyx.stem}*.h"))],
            extra_compile_args=["-O3"] + omp_compile if sys.platform != "win32" else ["/O2"] + omp_compile,
            extra_link_args=omp_link,
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        )
    )



class build_ext(_build_ext):
    """build_ext that, in editable mode, reuses up-to-date kernels of the source tree."""

    def _in_tree(self, ext) -> Path:
        return here / self.get_ext_filename(ext.name)

    def _up_to_date(self, ext) -> bool:
        so = self._in_tree(ext)
        if not so.is_file():
            return False
        deps = [here / d for d in list(ext.sources) + list(ext.depends)]
        deps += [p.with_suffix(".pyx") for p in deps if p.suffix in (".c", ".cpp")]
        return all(so.stat().st_mtime >= d.stat().st_mtime for d in deps if d.is_file())

    def build_extension(self, ext):
        if getattr(self, "editable_mode", False) and not os.environ.get("FLMCORE_REBUILD") and self._up_to_date(ext):
            dest = Path(self.get_ext_fullpath(ext.name))
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.resolve() != self._in_tree(ext).resolve():
                shutil.copy2(self._in_tree(ext), dest)
            print(f"flmcore: {ext.name} is up to date in the source tree: not recompiled "
                  "(FLMCORE_REBUILD=1 forces it)")
            return
        super().build_extension(ext)

    def copy_extensions_to_source(self):
        # Do not rewrite an identical in-tree module (a running process may have it
        # loaded); replace a changed one atomically (loaded copies keep their inode).
        build_py = self.get_finalized_command("build_py")
        for ext in self.extensions:
            inplace_file, regular_file = self._get_inplace_equivalent(build_py, ext)
            if not os.path.exists(regular_file):
                if not ext.optional:
                    raise FileNotFoundError(regular_file)
                continue
            if os.path.exists(inplace_file) and filecmp.cmp(regular_file, inplace_file, shallow=False):
                continue
            tmp = inplace_file + ".tmp"
            shutil.copy2(regular_file, tmp)
            os.replace(tmp, inplace_file)

setup(
    cmdclass={"build_ext": build_ext},
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True,
                             "initializedcheck": False},
    ),
)
