#!/usr/bin/env bash
# The CUDA checks of issue 12, as run on a lent GPU machine (PyTorch preinstalled there; pydantic
# carried as wheels in .whl/, see README "GPU"). Writes logs and the updated benchmark JSON to $OUT.
set -uo pipefail
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
OUT=${OUT:-/tmp/cuda_check}; mkdir -p "$OUT"
nvidia-smi -L; python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"
timeout "${T_TESTS:-200}" python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_counter_rng.py 2>&1 | tee "$OUT/tests.log"
timeout "${T_ENGINE:-200}" python3 -m benchmarks.engine --devices cuda 2>&1 | tee "$OUT/engine.log"
cp benchmarks/results/engine.json "$OUT/" 2>/dev/null
timeout "${T_SCALE:-220}" python3 -m benchmarks.scale --devices cuda --vgg-fc 2>&1 | tee "$OUT/scale.log"
cp benchmarks/results/scale.json "$OUT/" 2>/dev/null
exit 0
