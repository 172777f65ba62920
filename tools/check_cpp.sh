#!/usr/bin/env bash
# Syntax/type-check C++ sources against torch's headers without building the extension (~20 s a file).
# Run it on a csrc/cpu/*.cpp file before saving it there: a broken file breaks everyone's build.
# Usage: tools/check_cpp.sh FILE.cpp [PYTHON]
set -euo pipefail
file=$1
py=${2:-python}
incs=$("$py" - <<'PY'
import sysconfig
from torch.utils.cpp_extension import include_paths
print(" ".join("-I" + p for p in include_paths() + [sysconfig.get_paths()["include"]]))
PY
)
exec g++ -fsyntax-only -std=c++17 -fopenmp -O0 -D_GLIBCXX_USE_CXX11_ABI=1 -DTORCH_EXTENSION_NAME=_C -DILSGAN_EXT_NAME=_C $incs "$file"
