"""Build ilsgan and its kernels ahead of time.

``pip install -e . --no-build-isolation`` compiles, against the torch that is installed:
- ``ilsgan._C``: the CPU kernels in ``csrc/cpu/*.cpp`` (OpenMP, vectorized); always.
- ``ilsgan._C_cuda``: the CUDA kernels in ``csrc/cuda/*.cu``, when torch is a CUDA build and a
  CUDA toolkit is found (``CUDA_HOME`` or ``nvcc`` on PATH). Architectures come from
  ``TORCH_CUDA_ARCH_LIST``, by default ``8.0;9.0+PTX`` (A100, H100, and PTX for newer GPUs).
Nothing is compiled at import time. Environment knobs:
- ``ILSGAN_NO_CUDA=1``: skip the CUDA extension even when it could be built.
- ``ILSGAN_REQUIRE_CUDA=1``: fail instead of skipping it (used by the CI compile check).
- ``ILSGAN_CPU_ARCH``: value for ``-march=`` (default ``native``: the build runs where it is used).
"""

import glob
import os
import shutil
import sys
import sysconfig

from setuptools import find_packages, setup

try:
    import torch
    from torch.utils import cpp_extension
except ImportError:  # pragma: no cover - message for users who skipped the README's install
    sys.exit(
        "ilsgan compiles its kernels against the torch you run: install torch first, then "
        "'pip install -e . --no-build-isolation' (without --no-build-isolation pip builds against "
        "a different torch in a throw-away environment)."
    )

HERE = os.path.dirname(os.path.abspath(__file__))


def _sources(pattern):
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern)))


def _cuda_skip_reason():
    if os.environ.get("ILSGAN_NO_CUDA") == "1":
        return "ILSGAN_NO_CUDA=1"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    if cpp_extension.CUDA_HOME is None:
        return "no CUDA toolkit found (set CUDA_HOME or put nvcc on PATH)"
    if not _sources("csrc/cuda/*.cu"):
        return "no CUDA sources"
    return None


def _pip_cuda_include_dirs():
    # CUDA wheels of torch ship the CUDA library headers (cuBLAS, cuSPARSE, ...) that ATen's CUDA
    # headers include; a bare toolkit may lack them.
    site = sysconfig.get_paths()["purelib"]
    return sorted(glob.glob(os.path.join(site, "nvidia", "*", "include")))


class AtomicBuildExtension(cpp_extension.BuildExtension):
    """Replace in-place extension files atomically, so running processes keep their mapping."""

    def copy_file(self, src, dst, *args, **kwargs):
        tmp = f"{dst}.tmp{os.getpid()}"
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        return dst, 1


def _torch_release():
    """(major, minor) of the installed torch: "2.14.0a0+git..." -> (2, 14)."""
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


# torch 2.14's headers use C++20 features; older releases are built (and tested) as C++17.
CXX_STD = "-std=c++20" if _torch_release() >= (2, 14) else "-std=c++17"
cxx_flags = ["-O3", CXX_STD, "-fopenmp", f"-march={os.environ.get('ILSGAN_CPU_ARCH', 'native')}"]
ext_modules = [
    cpp_extension.CppExtension(
        name="ilsgan._C",
        sources=["csrc/module_init.cpp"] + _sources("csrc/cpu/*.cpp"),
        include_dirs=[os.path.join(HERE, "csrc")],
        define_macros=[("ILSGAN_EXT_NAME", "_C")],
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=["-fopenmp"],
    )
]

skip = _cuda_skip_reason()
if skip is None:
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
    print(f"ilsgan: building ilsgan._C_cuda for TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']}")
    ext_modules.append(
        cpp_extension.CUDAExtension(
            name="ilsgan._C_cuda",
            sources=["csrc/module_init.cpp"] + _sources("csrc/cuda/*.cu"),
            include_dirs=[os.path.join(HERE, "csrc")] + _pip_cuda_include_dirs(),
            define_macros=[("ILSGAN_EXT_NAME", "_C_cuda")],
            extra_compile_args={"cxx": ["-O3", CXX_STD], "nvcc": ["-O3", CXX_STD]},
        )
    )
elif os.environ.get("ILSGAN_REQUIRE_CUDA") == "1":
    sys.exit(f"ILSGAN_REQUIRE_CUDA=1 but the CUDA extension cannot be built: {skip}")
else:
    print(f"ilsgan: not building the CUDA extension: {skip}")

setup(
    name="ilsgan",
    version="0.1.0",
    description="ILSGAN (Independent Layer Synthesis GAN) for unsupervised fg/bg segmentation, with its own kernels",
    python_requires=">=3.9",
    packages=find_packages(include=["ilsgan", "ilsgan.*"]) + ["ilsgan.kernels"],
    package_dir={"ilsgan.kernels": "kernels"},
    # What the package and its command lines import at run time.
    install_requires=["torch>=2.4", "numpy", "pillow", "tqdm", "matplotlib"],
    extras_require={
        # the triton backend of every op (GPU; on CPU only under TRITON_INTERPRET=1)
        "triton": ["triton>=3.4"],
        # reads the .mat annotation files of Stanford Dogs / Cars (python -m ilsgan.data prep-dogs|prep-cars)
        "data": ["scipy"],
        # the grabcut baseline of python -m ilsgan.data baselines
        "grabcut": ["opencv-python-headless"],
        "test": ["pytest", "pytest-benchmark"],
    },
    ext_modules=ext_modules,
    cmdclass={"build_ext": AtomicBuildExtension.with_options(use_ninja=True)},
    zip_safe=False,
)
