#!/usr/bin/env bash
# CUDA check (docs/cuda.md): the device-parametrised tests on cpu + cuda (and the bench tests),
# a short CUDA benchmark with the cost-against-size table. Under 10 minutes on one GPU.
#   scripts/gpu-check.sh [OUTDIR]        (default: runs/gpu-check; TEAMATTACK_DATA must point to the datasets)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu-check}
mkdir -p "$OUT"
PY=${PYTHON:-python}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
$PY - <<'PY' | tee "$OUT/device.txt"
import torch
assert torch.cuda.is_available(), "no CUDA device: this script is for a CUDA machine"
print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0))
PY
# 1. every test that takes the `device` fixture (cpu and cuda), and the bench tests
timeout 300 $PY -m pytest -q -p no:xdist tests/test_devices.py tests/test_bench.py tests/test_curvature_choose.py \
    2>&1 | tee "$OUT/tests.txt"
# 2. a short benchmark on CUDA: ResNet56, TEAM vs DDN-100 (with and without quantisation), 64 images
timeout 240 $PY -m teamattack.cli bench --device cuda --dataset cifar10 --model cifar10-resnet56 \
    --suite untargeted-l2 -n 64 --seed 0 --batch-size 64 --no-progress \
    --attacks team-l2,ddn-100,ddn-100:levels=None,fmn-l2-100 \
    --json "$OUT/untargeted-l2-cifar10-resnet56-cuda.json" --markdown "$OUT/untargeted-l2-cifar10-resnet56-cuda.md" --fresh
# 3. seconds and peak memory per image against input size, on CUDA
timeout 120 $PY -m teamattack.bench.scaling --device cuda --sizes 28,32,64,224 -n 4 --memory-gb 8 \
    --json "$OUT/scaling-cuda.json" --markdown "$OUT/scaling-cuda.md"
echo "gpu-check: done; results in $OUT"
