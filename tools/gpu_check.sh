#!/usr/bin/env bash
# First-GPU-run check of sparsesnn: builds the package with CUDA, runs the CUDA tests, runs
# compute-sanitizer (memcheck, racecheck, synccheck) on every CUDA op once, then the GPU
# benchmarks. Everything (logs, JUnit XML, JSON, Markdown) goes into OUTDIR; a one-screen
# summary is printed at the end and written to OUTDIR/summary.md and summary.json.
#
#   tools/gpu_check.sh OUTDIR
#
# Needs one NVIDIA GPU, Python with a CUDA build of torch, nvcc, cmake, ninja, pybind11,
# scikit-build-core (no network: the build uses --no-build-isolation --no-deps). Whole run is
# budgeted to GPU_CHECK_BUDGET_S (default 450 s) so it ends within 8 minutes on an H100/H200.
# Exit status: 0 all steps passed, 1 a step failed, 2 no usable GPU / bad usage.
# GPU_CHECK_BUILD_ONLY=1: only the preflight (GPU not required) and the build.
# GPU_CHECK_SKIP_BUILD=1: use the sparsesnn already installed. GPU_CHECK_BUILD_S: build time
# limit (default 300 s; a 16-core machine builds in about 2 minutes).
set -u -o pipefail

if [ $# -ne 1 ]; then
  echo "usage: tools/gpu_check.sh OUTDIR" >&2
  exit 2
fi
mkdir -p "$1" || exit 2
OUT=$(cd "$1" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET_S:-450}
T0=$(date +%s)
cd "$ROOT" || exit 2

NAMES=() STATUS=() SECS=() NOTES=()
record() { NAMES+=("$1"); STATUS+=("$2"); SECS+=("$3"); NOTES+=("$4"); }

# step NAME LIMIT_S CMD...: runs CMD with its output in OUT/NAME.log, bounded by LIMIT_S and
# by what is left of the budget (a step with under 15 s left is skipped, not started). Sets
# LAST_STATUS (PASS/FAIL/TIMEOUT/SKIP) and LAST_SECS; the caller records the step.
step() {
  local name=$1 limit=$2 left start rc
  shift 2
  left=$((BUDGET - ($(date +%s) - T0)))
  if [ "$left" -lt 15 ]; then
    LAST_STATUS=SKIP LAST_SECS=0
    echo "== $name skipped: time budget spent" | tee "$OUT/$name.log"
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  start=$(date +%s)
  printf '== %-12s (limit %3ss) ... ' "$name" "$limit"
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  LAST_SECS=$(($(date +%s) - start))
  if [ $rc -eq 0 ]; then LAST_STATUS=PASS; elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then LAST_STATUS=TIMEOUT; else LAST_STATUS=FAIL; fi
  echo "$LAST_STATUS (${LAST_SECS}s, rc $rc)"
  return $rc
}

# ---- preflight: what is here, and is there a GPU ------------------------------------------
"$PY" - >"$OUT/env.json" 2>"$OUT/preflight.log" <<'EOF'
import json, shutil, subprocess, sys
info = {"python": sys.version.split()[0]}
try:
    import torch
    info.update(torch=torch.__version__, torch_cuda=torch.version.cuda,
                gpu_count=torch.cuda.device_count(),
                gpus=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
except Exception as exc:  # torch missing or broken
    info.update(torch=None, torch_error=repr(exc), gpu_count=0)
for tool in ("nvcc", "cmake", "ninja", "compute-sanitizer", "nvidia-smi"):
    info[tool] = shutil.which(tool)
if info["nvidia-smi"]:
    r = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                        "--format=csv,noheader"], capture_output=True, text=True)
    info["nvidia_smi"] = (r.stdout or r.stderr).strip()
print(json.dumps(info, indent=2))
EOF
GPUS=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1])).get('gpu_count', 0))" "$OUT/env.json" 2>/dev/null || echo 0)
if [ "${GPUS:-0}" -lt 1 ] && [ "${GPU_CHECK_BUILD_ONLY:-0}" != 1 ]; then
  {
    echo "gpu_check: FAILED: no CUDA GPU is visible to torch, so nothing CUDA can be checked."
    echo "  torch/GPU seen: $(tr -d '\n' <"$OUT/env.json" | tr -s ' ')"
    echo "  CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-<unset>}"
    echo "  Run this on a machine with an NVIDIA GPU and a CUDA build of torch"
    echo "  (GPU_CHECK_BUILD_ONLY=1 checks only that the CUDA build compiles)."
  } | tee "$OUT/summary.md" >&2
  printf '{"status": "no_gpu", "env": "env.json"}\n' >"$OUT/summary.json"
  exit 2
fi
if [ -z "$(command -v nvcc)" ] && [ "${GPU_CHECK_SKIP_BUILD:-0}" != 1 ]; then
  echo "gpu_check: FAILED: nvcc not found on PATH; the CUDA build needs it" | tee "$OUT/summary.md" >&2
  exit 2
fi

# ---- 1. build with CUDA --------------------------------------------------------------------
if [ "${GPU_CHECK_SKIP_BUILD:-0}" != 1 ]; then
  export SPARSESNN_CUDA=ON  # fail the build instead of silently dropping the CUDA kernels
  if step build "${GPU_CHECK_BUILD_S:-300}" "$PY" -m pip install --no-build-isolation --no-deps -v -e "$ROOT" &&
     "$PY" -c "import sparsesnn, sys; i = sparsesnn.info(); print(i); sys.exit(0 if i.get('cuda') else 1)" \
       >>"$OUT/build.log" 2>&1; then
    record build PASS "$LAST_SECS" "$(grep -o "'cuda_archs': '[^']*'" "$OUT/build.log" | tail -1)"
  else
    [ "$LAST_STATUS" = PASS ] && LAST_STATUS=FAIL  # built, but without loadable CUDA kernels
    record build "$LAST_STATUS" "$LAST_SECS" "see build.log (compile error, or CUDA kernels missing)"
  fi
fi
if [ "${GPU_CHECK_BUILD_ONLY:-0}" = 1 ]; then
  [ "${STATUS[0]:-SKIP}" = PASS ] && echo "gpu_check: build only: PASS ($OUT/build.log)" && exit 0
  echo "gpu_check: build FAILED, see $OUT/build.log" >&2
  exit 1
fi

# ---- 2. CUDA tests -----------------------------------------------------------------------
export SPARSESNN_REQUIRE_EXT=1
step tests 210 "$PY" -m pytest -q -p no:cacheprovider tests/test_lif_cuda.py tests/test_spike_cuda.py \
  tests/test_packed_cuda.py tests/test_launch_cuda.py --junitxml="$OUT/cuda_tests.xml"
record tests "$LAST_STATUS" "$LAST_SECS" "$(grep -E '(passed|failed|error)' "$OUT/tests.log" | tail -1)"

# ---- 3. compute-sanitizer on every CUDA op once --------------------------------------------
# Without torch's caching allocator, so an out-of-bounds access lands outside any allocation.
SAN_SCRIPT="import sys, torch; sys.path.insert(0, 'tests'); from test_launch_cuda import _every_op; _every_op('cuda'); torch.cuda.synchronize(); print('ok')"
if command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck synccheck; do
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 step "san_$tool" 75 compute-sanitizer --tool "$tool" \
      --error-exitcode 9 --target-processes all "$PY" -c "$SAN_SCRIPT"
    record "san_$tool" "$LAST_STATUS" "$LAST_SECS" "$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/san_$tool.log" | tail -1)"
  done
else
  record sanitizer SKIP 0 "compute-sanitizer not on PATH"
fi

# ---- 4. GPU benchmarks ---------------------------------------------------------------------
step bench_ops 60 "$PY" tools/gpu_bench.py "$OUT"
record bench_ops "$LAST_STATUS" "$LAST_SECS" "gpu_bench.json / gpu_bench.md"
step bench_lif 90 "$PY" bench/bench_lif.py --device cuda --quick
cp bench/results/lif_cuda.* "$OUT/" 2>/dev/null
record bench_lif "$LAST_STATUS" "$LAST_SECS" "lif_cuda.json / .md"

# ---- summary -------------------------------------------------------------------------------
TOTAL=$(($(date +%s) - T0))
FAILED=0
{
  echo "# sparsesnn gpu_check: $(grep -o '"gpus": \[[^]]*\]' "$OUT/env.json" | head -1), ${TOTAL}s"
  echo
  echo "| step | status | s | note |"
  echo "|---|---|---:|---|"
  for i in "${!NAMES[@]}"; do
    echo "| ${NAMES[$i]} | ${STATUS[$i]} | ${SECS[$i]} | ${NOTES[$i]} |"
    case "${STATUS[$i]}" in FAIL|TIMEOUT) FAILED=1 ;; esac
  done
  if [ -f "$OUT/cuda_tests.xml" ]; then
    echo
    FAILS=$(grep -oE 'testcase classname="[^"]*" name="[^"]*"[^>]*>[[:space:]]*<(failure|error)' "$OUT/cuda_tests.xml" \
      | sed -E 's/testcase classname="([^"]*)" name="([^"]*)".*/  \1::\2/')
    echo "Failed tests ($(printf '%s' "$FAILS" | grep -c .)):"
    printf '%s\n' "${FAILS:-  none}" | head -15
  fi
  [ -f "$OUT/gpu_bench.md" ] && echo && cat "$OUT/gpu_bench.md"
  echo
  echo "Logs, JUnit XML, JSON and Markdown: $OUT"
} >"$OUT/summary.md"
"$PY" - "$OUT" "$TOTAL" "${NAMES[@]}" -- "${STATUS[@]}" <<'EOF' >"$OUT/summary.json" 2>/dev/null
import json, sys
out, total, rest = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
i = rest.index("--")
print(json.dumps({"total_s": total, "steps": dict(zip(rest[:i], rest[i + 1:]))}, indent=2))
EOF
echo
cat "$OUT/summary.md"
exit $FAILED
