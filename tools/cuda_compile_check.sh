#!/usr/bin/env bash
# Compile-only check of the CUDA extension on a machine without a GPU.
#
# Usage: tools/cuda_compile_check.sh PYTHON
#   PYTHON: an interpreter whose torch is a CUDA build (e.g. a venv with 'pip install torch==2.14.1').
# Builds ilsgan._C_cuda for TORCH_CUDA_ARCH_LIST (default 8.0;9.0+PTX) into a temporary folder,
# checks that the cubins for sm_80 and sm_90 are in it, and loads it to check that every kernel
# registered with the dispatcher. Nothing in the source tree is touched.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:?usage: $0 PYTHON (with a CUDA build of torch)}"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export PATH="$CUDA_HOME/bin:$PATH"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0;9.0+PTX}"
export MAX_JOBS="${MAX_JOBS:-2}"
out="$(mktemp -d /tmp/ilsgan-cuda-check.XXXXXX)"
echo "== CUDA compile check: $("$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'), nvcc $("$CUDA_HOME/bin/nvcc" --version | tail -1)"
echo "== arch list: $TORCH_CUDA_ARCH_LIST; build dir: $out"
ILSGAN_REQUIRE_CUDA=1 flock /tmp/ilsgan-build.lock "$PY" setup.py -q build_ext --build-lib "$out/lib" --build-temp "$out/tmp"
so="$(ls "$out"/lib/ilsgan/_C_cuda*.so)"
# Some toolkits ship nvcc without cuobjdump; triton's wheel carries one.
cuobjdump="$CUDA_HOME/bin/cuobjdump"
[[ -x "$cuobjdump" ]] || cuobjdump="$("$PY" -c 'import os, triton; print(os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump"))' 2>/dev/null || true)"
[[ -x "$cuobjdump" ]] || cuobjdump="$(command -v cuobjdump || true)"
[[ -x "$cuobjdump" ]] || { echo "FAIL: no cuobjdump (neither in $CUDA_HOME/bin nor in triton's wheel) to list the cubins"; exit 1; }
archs="$("$cuobjdump" --list-elf "$so" | grep -o 'sm_[0-9]*' | sort -u | tr '\n' ' ')"
ptx="$("$cuobjdump" --list-ptx "$so" | grep -o 'sm_[0-9]*' | sort -u | tr '\n' ' ')"
echo "== cubins: $archs; ptx: $ptx"
for a in sm_80 sm_90; do
  [[ " $archs " == *" $a "* ]] || { echo "FAIL: no $a cubin in $so"; exit 1; }
done
[[ -n "$ptx" ]] || { echo "FAIL: no PTX in $so"; exit 1; }
src="$PWD/csrc/cuda"
cd "$out/lib"
SRC="$src" "$PY" - <<'PYEOF'
import glob, importlib.util, os, re, sys
import torch
# every op the CUDA sources define (m.def("name(...")) must be registered once the library loads
wanted = sorted({n for p in glob.glob(os.path.join(os.environ["SRC"], "*.cu"))
                 for n in re.findall(r'm\.def\(\s*"([A-Za-z0-9_]+)\(', open(p).read())})
spec = importlib.util.spec_from_file_location("ilsgan._C_cuda", glob.glob("ilsgan/_C_cuda*.so")[0])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
missing = [n for n in wanted if not hasattr(torch.ops.ilsgan_cuda, n)]
print(f"== loaded on CPU; {len(wanted) - len(missing)}/{len(wanted)} CUDA ops registered: {', '.join(wanted)}")
if not wanted or missing:
    print(f"FAIL: not registered: {missing or 'no m.def found in the sources'}")
    sys.exit(1)
PYEOF
echo "== CUDA compile check passed"
rm -rf "$out"
