"""Formulations of the zoo's depthwise 3x3x3 convs on JAX, checked against
cuDNN's grouped conv and timed on every depthwise layer of a model:

* native:   one grouped 3D conv (`feature_group_count`: cuDNN on a GPU);
* taps:     `keras_r3d.layers.depthwise_taps` ("taps"): the 27 strided views of the padded
            input times per-channel weights, summed in float32 (XLA fuses the
            pad, the views and the sum into one loop kernel);
* taps_pad: the same, with the padded input materialized first, so that the
            sum reads plain offsets instead of bounds-checking every view;
* flat:     the padded clip flattened, so that each tap is one contiguous
            slice at a constant offset; the border outputs are computed and
            cropped (stride-1 layers; strided ones run taps_pad);
* pallas:   `keras_r3d.gpu_kernels` (the "pallas" layers): one Triton program per
            output row and block of 32 channels (16, 64: pallas_c16, pallas_c64),
            27 strided row loads accumulated in float32 (the Pallas interpreter
            on a CPU, so slow there).

    python3 benchmarks/gpu_depthwise.py --name MobileNetV2-1.0x --batch_size 8 --precision float32 \\
        --output OUT.json

The H100 profile (benchmarks/README.md) found XLA's fused taps at about a
sixth of the copy bandwidth, bounded by index arithmetic rather than memory.
Prints and writes, per layer shape and formulation, ms per synchronized call
(median of --calls) and the largest difference from native.
"""
import argparse
import collections
import functools
import os
import time

if __name__ == "__main__":  # before keras loads (not on import: a test's environment stays as it was)
    os.environ.setdefault("KERAS_BACKEND", "jax")  # the layers' "taps" on JAX arrays

import jax
import jax.numpy as jnp
import keras
import numpy as np
from gpu_stem import finish  # benchmarks/ is this script's folder

from keras_r3d import gpu_kernels, layers

KERNEL = (3, 3, 3)
PADDING = ((0, 0), (1, 1), (1, 1), (1, 1), (0, 0))


def native(x, kernel, strides):
    channels = x.shape[-1]
    return jax.lax.conv_general_dilated(
        jnp.pad(x, PADDING), kernel.reshape(KERNEL + (1, channels)), strides, "VALID",
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"), feature_group_count=channels)


def taps(x, kernel, strides):
    return layers.depthwise_taps(jnp.pad(x, PADDING), kernel, strides)


def taps_pad(x, kernel, strides):
    return layers.depthwise_taps(jax.lax.optimization_barrier(jnp.pad(x, PADDING)), kernel, strides)


def flat(x, kernel, strides):
    if strides != (1, 1, 1):
        return taps_pad(x, kernel, strides)
    n, t, h, w, c = x.shape
    padded = jax.lax.optimization_barrier(jnp.pad(x, PADDING))
    hp, wp = h + 2, w + 2
    positions = padded.reshape(n, -1, c)
    # Output (t, h, w) starts at flat position t*hp*wp + h*wp + w of the padded clip.
    length = t * hp * wp
    positions = jnp.pad(positions, ((0, 0), (0, 2 * hp * wp + 2 * wp + 2 + length - positions.shape[1]), (0, 0)))
    out = None
    for dt, dh, dw in np.ndindex(*KERNEL):
        start = dt * hp * wp + dh * wp + dw
        term = positions[:, start:start + length].astype(jnp.float32) * kernel[dt, dh, dw].astype(jnp.float32)
        out = term if out is None else out + term
    return out.reshape(n, t, hp, wp, c)[:, :, :h, :w].astype(x.dtype)


def pallas(x, kernel, strides, block_channels=gpu_kernels.BLOCK_CHANNELS):
    return gpu_kernels._depthwise_pallas(jnp.pad(x, PADDING), kernel, strides, block_channels)


FORMULATIONS = {"native": native, "taps": taps, "taps_pad": taps_pad, "flat": flat, "pallas": pallas,
                "pallas_c16": functools.partial(pallas, block_channels=16),
                "pallas_c64": functools.partial(pallas, block_channels=64)}


def depthwise_layers(model_name, input_shape):
    """{(input shape without batch, strides): count} of the model's depthwise 3x3x3 convs."""
    import keras_r3d

    model = keras_r3d.create_model(model_name, input_shape=input_shape, num_classes=10)
    found = collections.Counter()
    for layer in model.layers:
        if (isinstance(layer, layers.Conv3D) and layer.groups > 1 and layer.groups == layer.filters
                and layer.kernel_size == KERNEL and layer.padding == (1, 1, 1)):
            found[(tuple(layer.input.shape[1:]), tuple(layer.strides))] += 1
    return found


def _time(call, args, calls):
    for _ in range(3):
        jax.block_until_ready(call(*args))
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        jax.block_until_ready(call(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default="MobileNetV2-1.0x", help="a registry name")
    parser.add_argument("--input_shape", default="16,112,112", help="FRAMES,HEIGHT,WIDTH")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--formulations", default=",".join(FORMULATIONS))
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--output", help="JSON file to write")
    args = parser.parse_args(argv)
    if {"taps", "taps_pad"} & set(args.formulations.split(",")) and keras.backend.backend() != "jax":
        parser.error("the taps formulations need KERAS_BACKEND=jax")
    input_shape = tuple(int(v) for v in args.input_shape.split(",")) + (3,)
    rng = np.random.default_rng(0)
    rows, totals = [], collections.Counter()
    for (shape, strides), count in depthwise_layers(args.name, input_shape).items():
        x = jnp.asarray(rng.normal(size=(args.batch_size,) + shape), args.precision)
        kernel = jnp.asarray(rng.normal(size=KERNEL + (shape[-1],)) / 5, args.precision)
        reference = np.asarray(jax.jit(native, static_argnums=2)(x, kernel, strides), np.float32)
        for name in args.formulations.split(","):
            call = jax.jit(FORMULATIONS[name], static_argnums=2)
            try:
                y = np.asarray(call(x, kernel, strides), np.float32)
            except Exception as failure:  # one that this JAX or GPU cannot lower or run: record it, go on
                rows.append({"shape": list(shape), "strides": list(strides), "count": count, "formulation": name,
                             "error": f"{type(failure).__name__}: {failure}"[:1000]})
                print(f"{str(shape):24s} stride {strides} {name} failed: {rows[-1]['error'][:200]}", flush=True)
                finish(args, rows, total_ms=dict(totals), complete=False)
                continue
            difference = float(np.max(np.abs(y - reference)) / max(1.0, float(np.max(np.abs(reference)))))
            ms = _time(call, (x, kernel, strides), args.calls)
            totals[name] += count * ms
            rows.append({"shape": list(shape), "strides": list(strides), "count": count, "formulation": name,
                         "ms_median": ms, "max_rel_diff_vs_native": difference})
            print(f"{str(shape):24s} stride {strides} x{count} {name:10s} {ms:8.3f} ms  diff {difference:.1e}",
                  flush=True)
            finish(args, rows, total_ms=dict(totals), complete=False)
    for name, total in totals.items():
        print(f"all depthwise layers, {name}: {total:.3f} ms per call")
    return finish(args, rows, total_ms=dict(totals), complete=True)


if __name__ == "__main__":
    main()
