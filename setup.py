"""Build script: the pure-Python package plus, when C++ sources exist, the ``fastgeo._C``
extension (operator schemas and CPU kernels) and, when torch has CUDA, ``fastgeo._C_cuda`` (the
CUDA C++ kernels).

Environment variables:
    FASTGEO_MARCH_NATIVE=1   compile the CPU kernels with -march=native (source builds only)
    FASTGEO_NO_EXTENSION=1   skip the extension (pure-PyTorch install)
    FASTGEO_CUDA=1 / 0       force / skip fastgeo._C_cuda (csrc/cuda/); default: built when torch
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

    # torch's C++ ABI, stated: cpp_extension no longer passes it, and a compiler whose default
    # differs (a toolchain built for the old ABI) makes every std::string that crosses into torch
    # (the message of each failed TORCH_CHECK) crash the process.
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
    cxx = ["-O3", "-fopenmp", abi]
    if os.environ.get("FASTGEO_MARCH_NATIVE", "0") == "1":
        cxx.append("-march=native")
    want_cuda = os.environ.get("FASTGEO_CUDA", "1" if torch.cuda.is_available() else "0") == "1"
    if want_cuda and torch.version.cuda is None:
        raise RuntimeError("FASTGEO_CUDA=1 but this torch has no CUDA support")
    # fastgeo._C: the operators' schemas and their CPU kernels (always).
    ext_modules.append(
        CppExtension("fastgeo._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])
    )
    if want_cuda:
        # fastgeo._C_cuda: the CUDA C++ kernels, called by the operators' CUDA kernels.
        cuda_sources = sorted(glob.glob("csrc/cuda/*.cu") + glob.glob("csrc/cuda/*.cpp"))
        ext_modules.append(
            CUDAExtension(
                "fastgeo._C_cuda",
                cuda_sources,
                include_dirs=[os.path.abspath("csrc/cuda")],
                extra_compile_args={"cxx": ["-O3", abi], "nvcc": ["-O3", "-std=c++17", abi]},
            )
        )
    cmdclass["build_ext"] = BuildExtension.with_options(use_ninja=True)

setup(ext_modules=ext_modules, cmdclass=cmdclass)
