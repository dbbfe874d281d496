#!/usr/bin/env bash
# Builds the extension with ASan + UBSan and runs the tests that reach the C++ kernels under it.
#
#   tools/sanitize_tests.sh [pytest args...]      (default: the kernel test files below)
#
# Python itself is not instrumented, so the ASan runtime is preloaded (LD_PRELOAD) and leak
# detection is off (CPython and torch keep allocations alive at exit by design). UBSan aborts on
# the first report (-fno-sanitize-recover), so a clean exit means no report.
# Needs: gcc with libasan/libubsan; the venv's python on PATH or $PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
BUILD=${SANITIZE_BUILD_DIR:-/tmp/sparsesnn-asan-build}
SPARSESNN_CUDA=OFF SPARSESNN_SANITIZE=address,undefined \
  "$PY" -m pip install -q --no-build-isolation --no-deps -Cbuild-dir="$BUILD" -e .
ASAN_LIB=$(${CXX:-g++} -print-file-name=libasan.so)
UBSAN_LIB=$(${CXX:-g++} -print-file-name=libubsan.so)
TESTS=("$@")
if [ ${#TESTS[@]} -eq 0 ]; then
  # Every test file that reaches C++ (the kernels, the runtime through ctypes and its C example,
  # STDP, deploy, models); left out: subprocess-heavy and pure-Python files (README blocks, CLI,
  # method comparison, DDP, the conv demo), which add minutes and no C++ paths of their own.
  TESTS=(tests -q -p no:cacheprovider
         --ignore=tests/test_readme.py --ignore=tests/test_cli.py --ignore=tests/test_compare_methods.py
         --ignore=tests/test_ddp.py --ignore=tests/test_demo_conv.py --ignore=tests/test_gpu_check.py)
fi
LD_PRELOAD="$ASAN_LIB $UBSAN_LIB" \
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:detect_odr_violation=0:halt_on_error=1 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
SPARSESNN_REQUIRE_EXT=1 "$PY" -m pytest "${TESTS[@]}"
echo "sanitizer run clean"
echo "rebuild the normal extension afterwards: pip install --no-build-isolation -e ."
