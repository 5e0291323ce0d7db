#!/usr/bin/env bash
# The GPU checks and measurements of the CUDA engine in one run, on a lent GPU machine
# (the device tool's H100/H200: CuPy for CUDA 13, numba, numba-cuda, threadpoolctl,
# pytest-xdist and PyTorch with cuDNN, and no package registry).
#
# convmm runs from src/; the two packages that image lacks travel as wheels in
# .whl/, which git ignores.  Here, once:
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp -d .whl array-api-compat==1.16.0 array-api-strict==2.6.1 \
#       array-api-extra==0.11.5
#
# Then one device call, carrying .whl:
#
#   bash tools/gpu_session.sh          # all: the tests, then the bench twice
#   bash tools/gpu_session.sh tests    # the test matrix alone
#   bash tools/gpu_session.sh bench    # the bench alone
#
# The tests: every test of the cupy backend (the xp fixture's "cupy" cases) and the
# CUDA engine's own tests on CuPy arrays (tests/test_cuda_engine.py, default and tiny
# tiles; tests/test_cuda_compile.py), in parallel.  The bench: ``bench --backend cupy``
# (N = 64, CUDA events, medians) in strict float32, then with TF32 allowed.  Each step
# runs under a time limit of its own (TEST_S, BENCH_S, TF32_S seconds) so that the run
# ends well inside a device call's 10 minutes, and a step that fails does not stop the
# next.  Logs and JSON figures go to $OUT (the device tool's folder that comes back):
# gpu.txt, pytest.log, bench_fp32.txt, gpu_fp32.json, bench_tf32.txt, gpu_tf32.json,
# bench.err.  PYTEST_ARGS adds arguments to pytest (a file or -k to rerun a few tests).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/convmm-gpu}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD/src" PYTHONUNBUFFERED=1

info() {
    git log -1 --format='convmm %h %s' 2>/dev/null | cut -c1-100
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    python3 -c "import cupy, numba, numba_cuda, numpy, torch; print('cupy', cupy.__version__,
'numba', numba.__version__, 'numba-cuda', numba_cuda.__version__, 'numpy', numpy.__version__,
'torch', torch.__version__, 'cudnn', torch.backends.cudnn.version())"
}

run_tests() {
    # Two threads per worker for the CPU engine's and BLAS's own work: 8 workers share 16 cores.
    # pytest-benchmark (in that image) refuses xdist with a warning, which the suite makes an error.
    NUMBA_NUM_THREADS=2 OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 \
        timeout -k 10 "${TEST_S:-240}" python3 -m pytest -q -p no:cacheprovider -p no:benchmark \
        -n "${WORKERS:-8}" --timeout 150 -rfE --durations 10 -k "cupy or cuda" ${PYTEST_ARGS:-} \
        > "$out/pytest.log" 2>&1
    echo "pytest exit status $?"
    grep -E "^(FAILED|ERROR)" "$out/pytest.log" | cut -c1-220 | head -40
    tail -n 14 "$out/pytest.log"
}

run_bench() {
    timeout -k 10 "${BENCH_S:-170}" python3 -m convmm bench --backend cupy --no-startup \
        --json "$out/gpu_fp32.json" > "$out/bench_fp32.txt" 2> "$out/bench.err"
    echo "bench (float32) exit status $?"
    cat "$out/bench_fp32.txt"
    timeout -k 10 "${TF32_S:-90}" python3 -m convmm bench --backend cupy --tf32 --no-startup \
        --no-gemm --no-large --pass forward backward --json "$out/gpu_tf32.json" \
        > "$out/bench_tf32.txt" 2>> "$out/bench.err"
    echo "bench (TF32) exit status $?"
    cat "$out/bench_tf32.txt"
    grep -v $'\r' "$out/bench.err" | tail -n 20
}

info | tee "$out/gpu.txt"
case "${1:-all}" in
    all) run_tests; run_bench ;;
    tests) run_tests ;;
    bench) run_bench ;;
    *) echo "usage: bash tools/gpu_session.sh [all|tests|bench]" >&2; exit 2 ;;
esac
