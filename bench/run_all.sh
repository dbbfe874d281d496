#!/usr/bin/env bash
# Re-measures every benchmark in one go on a quiet machine (writes bench/results/*) and the demo.
# Usage: bench/run_all.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
q=${1:-}
python -c "import sparsesnn; print('calibration:', sparsesnn.calibrate())"
python bench/bench_lif.py $q
python bench/bench_spike_linear.py $q
python bench/bench_spike_conv.py $q
python bench/bench_packed.py $q
python bench/compare_methods.py $q
python -m sparsesnn demo --out bench/results/demo
