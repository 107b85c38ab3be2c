#!/usr/bin/env bash
# Issue 6's GPU rows and the GPU tests in one go, on a machine with one NVIDIA
# GPU, JAX (CUDA) and PyTorch (CUDA), from the repository root:
#
#   OFFICIAL=path/to/Efficient-3DCNNs OUT=benchmarks benchmarks/gpu_run.sh
#
# 1. tests/test_gpu.py on the JAX backend (official checkpoint on the GPU);
# 2. the paper's protocol: batch 8, float32, Keras on JAX with the cuDNN
#    ("native") and the "taps" layers, against the official code eager and compiled;
# 3. large batch: 256, bfloat16, against the official code compiled with bf16
#    autocast and channels_last_3d.
# TF32 is on for both sides (PyTorch's default for convolutions). Each step
# has a time limit; the benchmark JSON keeps every row measured before one.
set -u
: "${OFFICIAL:?set OFFICIAL to a checkout of okankop/Efficient-3DCNNs}"
out=${OUT:-benchmarks}
python=${PYTHON:-python3}
models=${MODELS:-ShuffleNetV2-1.0x,MobileNetV2-1.0x,ShuffleNetV1-1.0x,MobileNetV1-1.0x,SqueezeNet-1.1}
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | sed 's/^NVIDIA //; s/[^A-Za-z0-9]\+/-/g')
export KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
mkdir -p "$out"

timeout "${TEST_LIMIT_S:-150}" "$python" -m pytest -q tests/test_gpu.py ${TEST_ARGS:-}

common=(--models "$models" --backends jax --runtimes keras --tf32 --warmup 10 --official_repo "$OFFICIAL"
        --output_dir "$out")
timeout "${PAPER_LIMIT_S:-240}" "$python" -m keras_r3d.benchmark "${common[@]}" --tag "${gpu,,}-b8-fp32" \
    --layers native,taps,taps_matmul --batch_sizes 8 --precision float32 --repeats 100 --official_modes eager,compile
timeout "${LARGE_LIMIT_S:-200}" "$python" -m keras_r3d.benchmark "${common[@]}" --tag "${gpu,,}-b256-bf16" \
    --layers taps,taps_matmul --batch_sizes 256 --precision bfloat16 --repeats 30 --official_modes compile \
    --official_channels_last
