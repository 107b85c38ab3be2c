#!/usr/bin/env bash
# Issue 6's GPU rows, GPU training throughput and the GPU tests in one go, on a
# machine with one NVIDIA GPU, JAX (CUDA) and PyTorch (CUDA), from the
# repository root:
#
#   OFFICIAL=path/to/Efficient-3DCNNs OUT=benchmarks benchmarks/gpu_run.sh
#
# Steps (STEPS="paper large table8 stem depthwise training tests" runs all, in this order):
# paper:    the paper's protocol: batch 8, float32, Keras on JAX with the
#           "taps_matmul", "s2d" and "pallas" layers, BatchNorm as built and
#           folded into the convs, against the official code compiled (and
#           eager, with OFFICIAL_MODES=eager,compile);
# large:    batch 256, bfloat16, against the official code compiled with bf16
#           autocast and channels_last_3d;
# table8:   every Table 8 model (TABLE8_MODELS, default all), Keras only, batch 8,
#           float32, BN folded: the full table on this GPU;
# stem:     benchmarks/gpu_stem.py (the RGB stem conv's formulations) and
# depthwise: benchmarks/gpu_depthwise.py (MobileNetV2 1.0x's depthwise convs),
#           each at batch 8 float32 and batch 256 bfloat16;
# training: fit steps of the 1.0x models on JAX (benchmarks/training_throughput.py);
# tests:    tests/test_gpu.py on the JAX backend (official checkpoint on the GPU).
# TF32 is on for both sides (PyTorch's default for convolutions). Each step
# has a time limit; the benchmark JSON keeps every row measured before one.
# LAYERS, PAPER_BATCH_NORM and LARGE_BATCH_NORM narrow the Keras rows to fit
# a short lease.
set -u
: "${OFFICIAL:?set OFFICIAL to a checkout of okankop/Efficient-3DCNNs}"
out=${OUT:-benchmarks}
python=${PYTHON:-python3}
steps=${STEPS:-paper large table8 stem depthwise training tests}
models=${MODELS:-ShuffleNetV2-1.0x,MobileNetV2-1.0x,ShuffleNetV1-1.0x,MobileNetV1-1.0x,SqueezeNet-1.1}
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | sed 's/^NVIDIA //; s/[^A-Za-z0-9]\+/-/g')
tag=${TAG:-${gpu,,}}
export KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
mkdir -p "$out"

common=(--models "$models" --backends jax --runtimes keras --tf32 --warmup 10 --warmup_s 1
        --official_repo "$OFFICIAL" --output_dir "$out" --layers "${LAYERS:-taps_matmul,s2d,pallas}")
for step in $steps; do
    case $step in
    paper) timeout "${PAPER_LIMIT_S:-240}" "$python" -m keras_r3d.benchmark "${common[@]}" \
        --tag "$tag-b8-fp32" --batch_norm "${PAPER_BATCH_NORM:-separate,folded}" --batch_sizes 8 --precision float32 \
        --repeats 100 --official_modes "${OFFICIAL_MODES:-compile}" ;;
    large) timeout "${LARGE_LIMIT_S:-200}" "$python" -m keras_r3d.benchmark "${common[@]}" \
        --tag "$tag-b256-bf16" --batch_norm "${LARGE_BATCH_NORM:-separate,folded}" --batch_sizes 256 \
        --precision bfloat16 --repeats 30 --official_modes compile --official_memory_formats channels_last_3d ;;
    table8) timeout "${TABLE8_LIMIT_S:-300}" "$python" -m keras_r3d.benchmark --models "${TABLE8_MODELS:-all}" \
        --backends jax --runtimes keras --tf32 --warmup 10 --warmup_s 1 --output_dir "$out" \
        --layers "${LAYERS:-taps_matmul}" --batch_norm folded --batch_sizes 8 --precision float32 \
        --repeats 50 --tag "$tag-table8" ;;
    stem|depthwise) for setting in "8 float32" "256 bfloat16"; do
        read -r batch precision <<<"$setting"
        if [ "$step" = stem ]; then script=(benchmarks/gpu_stem.py)
        else script=(benchmarks/gpu_depthwise.py --name MobileNetV2-1.0x); fi
        timeout "${FORMULATIONS_LIMIT_S:-120}" "$python" "${script[@]}" --batch_size "$batch" --precision "$precision" \
            --output "$out/gpu_${step}_${gpu,,}_b${batch}_$precision.json"
    done ;;
    training) timeout "${TRAINING_LIMIT_S:-150}" "$python" benchmarks/training_throughput.py \
        --batch_size 32 --steps 10 --warmup 3 --output "$out/training_jax_${gpu,,}" ;;
    tests) timeout "${TEST_LIMIT_S:-300}" "$python" -m pytest -q tests/test_gpu.py ${TEST_ARGS:-} ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
    esac
done
