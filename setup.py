"""Build the Cython extensions in src/ddm_core (one extension per .pyx, the .pxd beside it is its contract)."""

import os
from glob import glob

from setuptools import Extension, setup

DEBUG = os.environ.get("DDM_DEBUG") == "1"


def extensions() -> list:
    from Cython.Build import cythonize

    macros = [("DDM_DEBUG", "1" if DEBUG else "0")]
    exts = [
        Extension(
            "ddm_core." + os.path.splitext(os.path.basename(path))[0],
            [path],
            define_macros=macros,
            extra_compile_args=["-O2"] if not DEBUG else ["-O0", "-g"],
        )
        for path in sorted(glob("src/ddm_core/*.pyx"))
    ]
    return cythonize(
        exts,
        compiler_directives={
            "language_level": "3",
            "boundscheck": DEBUG,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
        annotate=os.environ.get("DDM_ANNOTATE") == "1",
    )


setup(ext_modules=extensions())
