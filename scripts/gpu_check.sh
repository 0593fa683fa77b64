#!/usr/bin/env bash
# The GPU check: one prepared run on a machine with a GPU OpenCL driver, results in one folder.
#
#   bash scripts/gpu_check.sh OUTDIR [--short | --full] [--dry-run] [--no-tests] [--bench-rows ROWS]
#
#   --short      the test suite with -x (stop at the first failure; the default); either mode stops
#                after GPU_CHECK_TEST_SECONDS (420) so the benchmarks still run
#   --full       the whole test suite
#   --dry-run    no GPU needed: the first device of any type stands in (PoCL here), small benchmarks,
#                torch on the CPU as the stand-in baseline; proves the script end to end
#   --no-tests   skip the test suite
#   --bench-rows the bench.py rows to run (default: all, --quick)
#
# On the lent GPU machine (no network, no pyopencl), carry the wheels listed in .whl/ (see the README's
# "GPU check" section for the download command); this script installs them into /tmp/site itself.
# The NVIDIA OpenCL driver may be present without an ICD file; run as root, the script registers the
# libnvidia-opencl.so.1 it finds (elsewhere it points OCL_ICD_VENDORS at a private copy).
#
# OUTDIR receives (8 files at most, as the device tool brings back): env.txt, devices.txt, tests.log,
# bench.txt, bench.json, bench_gpu.txt, bench_gpu.json, summary.txt.
set -uo pipefail

out="${1:-}"
if [ -z "$out" ] || [ "${out#--}" != "$out" ]; then
  echo "usage: bash scripts/gpu_check.sh OUTDIR [--short|--full] [--dry-run] [--no-tests] [--bench-rows ROWS]" >&2
  exit 2
fi
shift
mode=short dry=0 tests=1 rows=""
while [ $# -gt 0 ]; do
  case "$1" in
    --short) mode=short ;;
    --full) mode=full ;;
    --dry-run) dry=1 ;;
    --no-tests) tests=0 ;;
    --bench-rows) rows="$2"; shift ;;
    *) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root" || exit 2
mkdir -p "$out"
out="$(cd "$out" && pwd)"
summary="$out/summary.txt"
: > "$summary"
say() { echo "$*" | tee -a "$summary"; }
export PYTHONUNBUFFERED=1

# Python: the project's venv here, the machine's python3 elsewhere.
py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi

# pyopencl and friends from carried wheels, when the machine lacks them.
if ! "$py" -c "import pyopencl" 2>/dev/null; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    say "installed the carried wheels into /tmp/site: $(ls .whl | tr '\n' ' ')"
  fi
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

# An ICD file for NVIDIA's OpenCL driver when none is registered.
if ! grep -qsl nvidia /etc/OpenCL/vendors/*.icd 2>/dev/null; then
  lib=""
  for cand in $(ldconfig -p 2>/dev/null | awk '/libnvidia-opencl.so.1/ {print $NF}') \
              /usr/local/nvidia/lib64/libnvidia-opencl.so.1 /usr/lib/x86_64-linux-gnu/libnvidia-opencl.so.1 \
              /usr/lib64/libnvidia-opencl.so.1; do
    if [ -e "$cand" ]; then lib="$cand"; break; fi
  done
  if [ -n "$lib" ]; then
    if [ "$(id -u)" = 0 ] && mkdir -p /etc/OpenCL/vendors 2>/dev/null && echo "$lib" > /etc/OpenCL/vendors/nvidia.icd; then
      say "registered NVIDIA's OpenCL driver: /etc/OpenCL/vendors/nvidia.icd -> $lib"
    else
      mkdir -p /tmp/axonml_icd && echo "$lib" > /tmp/axonml_icd/nvidia.icd
      export OCL_ICD_VENDORS=/tmp/axonml_icd
      say "NVIDIA's OpenCL driver at $lib, registered through OCL_ICD_VENDORS=/tmp/axonml_icd"
    fi
  else
    say "no libnvidia-opencl.so.1 found (ldconfig, /usr/local/nvidia/lib64, /usr/lib*/): no NVIDIA ICD registered"
  fi
fi

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "uname: $(uname -a)"
  echo "python: $("$py" --version 2>&1) ($py)"
  "$py" -c "import numpy, pyopencl; print('numpy', numpy.__version__, '| pyopencl', pyopencl.VERSION_TEXT)" 2>&1
  "$py" -c "import torch; print('torch', torch.__version__, '| cuda', torch.cuda.is_available(), torch.version.cuda, '| hip', getattr(torch.version, 'hip', None))" 2>&1
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  ls -l /etc/OpenCL/vendors 2>&1
} > "$out/env.txt"
cat "$out/env.txt"

# The device table, and the first GPU's selector.
"$py" -c "from axonml_autograd.devices_cli import main; main()" > "$out/devices.txt" 2>&1
cat "$out/devices.txt"
selector=$("$py" - <<'EOF'
from axonml_autograd.device import all_device_infos
gpus = [d for d in all_device_infos() if d.type == "GPU"]
print(gpus[0].selector if gpus else "")
EOF
)
if [ -z "$selector" ]; then
  if [ "$dry" = 1 ]; then
    selector=$("$py" -c "from axonml_autograd.device import default_device; print(default_device().selector)")
    say "dry run: no GPU device, the default device $selector stands in"
  else
    say "FAILED: no OpenCL GPU device found (see devices.txt and env.txt)"
    exit 1
  fi
fi
export AXONML_DEVICE="$selector"
say "device under test: AXONML_DEVICE=$selector ($("$py" -c "from axonml_autograd import default_device as d; x=d(); print(x.name, '|', x.info.driver_version)"))"

status=0
if [ "$tests" = 1 ]; then
  flags=(-q -p no:cacheprovider)
  [ "$mode" = short ] && flags+=(-x)
  # Time-boxed, so the benchmarks still run inside a short device lease: a first visit to a GPU
  # compiles every kernel variant the suite uses (GPU_CHECK_TEST_SECONDS, default 420).
  limit="${GPU_CHECK_TEST_SECONDS:-420}"
  timeout "$limit" "$py" -m pytest "${flags[@]}" > "$out/tests.log" 2>&1
  rc=$?
  if [ $rc = 124 ]; then
    say "tests ($mode): stopped after ${limit} s (GPU_CHECK_TEST_SECONDS); the log so far is in tests.log"
  else
    say "tests ($mode): exit $rc; $(tail -n 1 "$out/tests.log")"
  fi
  [ $rc = 0 ] || status=1
fi

bench_args=(--quick --json "$out/bench.json")
[ -n "$rows" ] && bench_args+=(--rows "$rows")
"$py" scripts/bench.py "${bench_args[@]}" > "$out/bench.txt" 2>&1
rc=$?
say "bench.py --quick: exit $rc; $(grep -E '^[0-9]+ rows in' "$out/bench.txt" | tail -n 1)"
[ $rc = 0 ] || status=1

gpu_args=(--json "$out/bench_gpu.json")
[ "$dry" = 1 ] && gpu_args+=(--dry-run)
if "$py" -c "import torch" 2>/dev/null; then
  "$py" scripts/bench_gpu.py "${gpu_args[@]}" > "$out/bench_gpu.txt" 2>&1
  rc=$?
  say "bench_gpu.py: exit $rc; $(grep -E '^targets missed' "$out/bench_gpu.txt" | tail -n 1)"
  [ $rc = 0 ] || status=1
else
  say "bench_gpu.py: skipped (no torch)"
fi
say "gpu_check: $([ $status = 0 ] && echo ok || echo FAILED), results in $out"
exit $status
