#!/usr/bin/env bash
# The GPU checks and measurements of the CUDA engine, on a lent GPU machine
# (the device tool's H100/H200: CuPy for CUDA 13, numba, numba-cuda,
# threadpoolctl and PyTorch with cuDNN, and no package registry).
#
# convmm runs from src/; the two packages that image lacks travel as wheels in
# .whl/, which git ignores.  Here, once:
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp -d .whl array-api-compat==1.16.0 array-api-strict==2.6.1
#
# Then one device call per step (each fits in a call's 10 minutes), carrying .whl:
#
#   bash tools/gpu_session.sh tests   # the whole suite: cupy backend, CUDA engine on CuPy arrays
#   bash tools/gpu_session.sh bench   # bench --backend cupy: strict float32, then TF32 allowed
#
# Logs and JSON figures go to $OUT (the device tool's folder that comes back).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/convmm-gpu}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD/src" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -c "import cupy, numba_cuda, torch; print('cupy', cupy.__version__, 'numba-cuda',
numba_cuda.__version__, 'torch', torch.__version__, 'cudnn', torch.backends.cudnn.version())" \
    | tee -a "$out/gpu.txt"
case "${1:-tests}" in
    tests)
        python3 -m pytest -q -p no:cacheprovider 2>&1 | tee "$out/pytest.log" ;;
    bench)
        python3 -m convmm bench --backend cupy --json "$out/gpu_fp32.json" 2>/dev/null \
            | tee "$out/bench_fp32.txt"
        python3 -m convmm bench --backend cupy --tf32 --no-startup --json "$out/gpu_tf32.json" \
            2>/dev/null | tee "$out/bench_tf32.txt" ;;
    *)
        echo "usage: bash tools/gpu_session.sh tests|bench" >&2
        exit 2 ;;
esac
