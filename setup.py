"""Build script: the pure-Python package plus, when C++ sources exist, the ``fastgeo._C``
extension (CPU kernels; CUDA kernels when torch has CUDA).

Environment variables:
    FASTGEO_MARCH_NATIVE=1   compile the CPU kernels with -march=native (source builds only)
    FASTGEO_NO_EXTENSION=1   skip the extension (pure-PyTorch install)
"""

import glob
import os

from setuptools import setup

ext_modules = []
cmdclass = {}
sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
if sources and os.environ.get("FASTGEO_NO_EXTENSION", "0") != "1":
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    cxx = ["-O3", "-fopenmp", "-std=c++17"]
    if os.environ.get("FASTGEO_MARCH_NATIVE", "0") == "1":
        cxx.append("-march=native")
    ext_modules.append(
        CppExtension(
            "fastgeo._C",
            sources,
            extra_compile_args={"cxx": cxx},
            extra_link_args=["-fopenmp"],
        )
    )
    cmdclass["build_ext"] = BuildExtension.with_options(use_ninja=True)

setup(ext_modules=ext_modules, cmdclass=cmdclass)
