"""Build the Cython kernels of flmcore._ext.

Every ``flmcore/_ext/*.pyx`` becomes an extension module ``flmcore._ext.<name>``,
compiled with OpenMP when the compiler supports it.  Set ``FLMCORE_ONLY=a,b`` to
build only some of them (handy while developing one kernel).
"""
import os
import sys
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

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

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True,
                             "initializedcheck": False},
    ),
)
