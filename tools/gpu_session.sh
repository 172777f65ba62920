#!/usr/bin/env bash
# One session on a lent GPU machine (run through the device tool from the repository root):
# build the extensions ahead of time for the local GPU, run the op tests on cuda/triton, then the
# benchmarks, writing logs and pytest-benchmark JSON under $OUT (or ./gpu-out).
# Usage: tools/gpu_session.sh [tests|bench|all] [BENCH_FILES...]
set -uo pipefail
mode=${1:-all}; shift || true
out=${OUT:-gpu-out}; mkdir -p "$out"
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16}
py=${PYTHON:-python3}
dev=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '_')
echo "== device: $dev; $($py -c 'import torch,triton; print("torch", torch.__version__, "triton", triton.__version__)')"
t0=$SECONDS
$py -m pip install -q --no-build-isolation --no-deps -e . >"$out/build.log" 2>&1 || { tail -50 "$out/build.log"; exit 1; }
echo "== built in $((SECONDS - t0)) s"
$py -c "import ilsgan.ops as o; print(o.format_backend_info())" | tee "$out/backend_info.txt"
if [[ $mode == tests || $mode == all ]]; then
  timeout ${TEST_TIMEOUT:-240} $py -m pytest -q -x -p no:cacheprovider ${TEST_FILES:-tests/test_bias_act.py tests/test_upfirdn2d.py tests/test_composite.py tests/test_ils_terms.py tests/test_modulated_conv2d.py tests/test_conv2d_resample.py} 2>&1 | tail -40 | tee "$out/tests.log"
fi
if [[ $mode == bench || $mode == all ]]; then
  files=${*:-benchmarks/bench_bias_act.py benchmarks/bench_upfirdn2d.py benchmarks/bench_composite.py benchmarks/bench_ils_terms.py benchmarks/bench_modulated_conv2d.py}
  for f in $files; do
    name=$(basename "$f" .py)
    # the copy yardstick in the same run, so report.py can give bandwidth as a fraction of it
    timeout ${BENCH_TIMEOUT:-150} $py -m pytest -q -p no:cacheprovider benchmarks/bench_copy.py "$f" --benchmark-enable \
      --benchmark-json="$out/${name}_${dev}.json" 2>&1 | tail -3
    $py benchmarks/report.py "$out/${name}_${dev}.json" --md > "$out/${name}_${dev}.md" 2>&1
  done
  timeout ${TRAIN_TIMEOUT:-240} $py benchmarks/bench_train.py --presets paper64 paper128 --impls auto ref --iters 10 \
    2>&1 | grep -v Warning | tee "$out/train_${dev}.txt"
fi
echo "== done in $((SECONDS - t0)) s"
