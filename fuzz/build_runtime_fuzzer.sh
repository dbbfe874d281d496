#!/usr/bin/env bash
# Builds the libFuzzer harness for the runtime's plan loader with ASan + UBSan:
#   fuzz/build_runtime_fuzzer.sh [out=/tmp/fuzz_runtime_load]
#   /tmp/fuzz_runtime_load fuzz/runtime_corpus -runs=1000000     (seed corpus: make_runtime_corpus.py)
# Needs clang with its fuzzer runtime (Debian: apt-get install clang libclang-rt-14-dev).
# Serial kernels (no OpenMP), the same sources as libsparsesnn_runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/fuzz_runtime_load}
clang++ -std=c++17 -O1 -g -march=native -fsanitize=fuzzer,address,undefined \
  -fno-sanitize-recover=undefined -Wno-unknown-pragmas -Icsrc/include -Icsrc/runtime \
  -DSPARSESNN_VERSION='"fuzz"' fuzz/fuzz_runtime_load.cpp csrc/runtime/*.cpp csrc/cpu/*.cpp -o "$OUT"
echo "built $OUT"
