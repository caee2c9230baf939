"""Build script: the pure-Python package plus, when C++ sources exist, the ``fastgeo._C``
extension (CPU kernels; CUDA kernels when torch has CUDA).

Environment variables:
    FASTGEO_MARCH_NATIVE=1   compile the CPU kernels with -march=native (source builds only)
    FASTGEO_NO_EXTENSION=1   skip the extension (pure-PyTorch install)
    FASTGEO_CUDA=1 / 0       force / skip the CUDA kernels (csrc/cuda/); default: built when torch
                             sees a GPU. Needs a CUDA torch and CUDA_HOME set to the toolkit folder
                             (bench/gpu_check.sh shows how); TORCH_CUDA_ARCH_LIST picks the archs.
"""

import glob
import os

from setuptools import setup

ext_modules = []
cmdclass = {}
sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
if sources and os.environ.get("FASTGEO_NO_EXTENSION", "0") != "1":
    import torch
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    cxx = ["-O3", "-fopenmp"]
    if os.environ.get("FASTGEO_MARCH_NATIVE", "0") == "1":
        cxx.append("-march=native")
    want_cuda = os.environ.get("FASTGEO_CUDA", "1" if torch.cuda.is_available() else "0") == "1"
    if want_cuda and torch.version.cuda is None:
        raise RuntimeError("FASTGEO_CUDA=1 but this torch has no CUDA support")
    if want_cuda:
        cuda_sources = sorted(glob.glob("csrc/cuda/*.cu") + glob.glob("csrc/cuda/*.cpp"))
        ext_modules.append(
            CUDAExtension(
                "fastgeo._C",
                sources + cuda_sources,
                include_dirs=[os.path.abspath("csrc/cuda")],
                extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-std=c++17"]},
                extra_link_args=["-fopenmp"],
            )
        )
    else:
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
