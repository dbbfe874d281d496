#!/usr/bin/env bash
# Re-measures every benchmark in one go on a quiet machine (writes bench/results/*) and the demo.
# Each script times the public API with default settings, each library in its own fresh
# process (bench/_common.py: isolated); nothing here tunes what a user would not have.
# Usage: bench/run_all.sh [--quick | --smoke]     (PYTHON=... to pick the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
q=${1:-}
py=${PYTHON:-python}
"$py" bench/bench_lif.py $q
"$py" bench/bench_allocator.py $q
"$py" bench/bench_first_call.py $q
"$py" bench/bench_spike_linear.py $q
"$py" bench/bench_spike_conv.py $q
"$py" bench/bench_packed.py $q
"$py" bench/bench_packed.py $q --threads 1 --name packed_1thread
"$py" bench/compare_methods.py $q
"$py" bench/bench_model.py $q
"$py" -m sparsesnn demo --out bench/results/demo ${q:+--quick}
"$py" -m sparsesnn demo --model conv --out bench/results/demo_conv ${q:+--quick}
