#!/usr/bin/env bash
# Development build: compiles sparsesnn._C into ./build and copies it next to the sources,
# so `PYTHONPATH=. python -m pytest` uses it without reinstalling. Users run `pip install .`.
# SPARSESNN_CUDA=OFF|AUTO|ON as for the pip build (default OFF here: faster rebuilds).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DSPARSESNN_CUDA="${SPARSESNN_CUDA:-OFF}" \
  -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" >/dev/null
cmake --build "$build" -j "${JOBS:-2}"
cp "$build"/_C*.so sparsesnn/
