"""Formulations of the zoo's RGB stem conv (3 -> C channels, 3x3x3,
stride 1x2x2, padding 1) on JAX, checked against each other and timed:

* native:  one 3D conv (cuDNN on a GPU);
* patches: the 27 shifted views concatenated along channels, one matmul;
* frames9: each output frame a 2D conv over its 3 input frames stacked along
  channels (9 channels), batch x time as the 2D batch;
* pallas:  a Pallas (Triton) kernel: one program per output row, all output
  channels, 81 strided row loads (27 taps x 3 channels) each broadcast against
  its weights and accumulated in float32 (the Pallas interpreter on a CPU);
* s2d:     `keras_r3d.layers.space_to_depth_conv` (the "s2d" layers): a 3D conv
  over 2x2 pixel blocks (12 channels, a 3x2x2 kernel, stride 1);
* s2d_frames: the same blocks, each output frame a 2D conv (2x2) over its 3
  input frames stacked (36 channels);
* pallas_s2d: the same blocks in a Pallas kernel: one program per output row,
  12 matrix products (row of blocks x the taps' weights) on the tensor cores;
* native_c4, native_c8, s2d_c4: native and s2d with the clip's channels
  zero-padded to 4 or 8 (s2d_c4: 16-channel blocks). cuDNN's tensor-core
  kernels want channel rows of a multiple of 16 bytes (8 bfloat16 values, 4
  float32), and XLA pads only float16 convs for them.

    python3 benchmarks/gpu_stem.py --batch_size 8 --precision float32 --output OUT.json

Prints and writes ms per call (median of --calls synchronized calls). Needs
KERAS_BACKEND=jax (set when run as a script) for the s2d formulations.
"""
import argparse
import functools
import json
import os
import time

if __name__ == "__main__":  # before keras loads (not on import: a test's environment stays as it was)
    os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import jax.numpy as jnp
import keras
import numpy as np

DIMENSIONS_3D = ("NDHWC", "DHWIO", "NDHWC")
DIMENSIONS_2D = ("NHWC", "HWIO", "NHWC")


def _pad(x):
    return jnp.pad(x, ((0, 0), (1, 1), (1, 1), (1, 1), (0, 0)))


def native(x, kernel):
    return jax.lax.conv_general_dilated(_pad(x), kernel, (1, 2, 2), "VALID",
                                        dimension_numbers=DIMENSIONS_3D)


def patches(x, kernel):
    x = _pad(x)
    t, h, w = x.shape[1] - 2, (x.shape[2] - 3) // 2 + 1, (x.shape[3] - 3) // 2 + 1
    views = [x[:, a:a + t, b:b + 2 * h - 1:2, c:c + 2 * w - 1:2] for a, b, c in np.ndindex(3, 3, 3)]
    return jnp.concatenate(views, axis=-1) @ kernel.reshape(-1, kernel.shape[-1])


def frames9(x, kernel):
    x = _pad(x)
    n, t = x.shape[0], x.shape[1] - 2
    stacked = jnp.concatenate([x[:, a:a + t] for a in range(3)], axis=-1)  # channels (dt, c)
    stacked = stacked.reshape((n * t,) + stacked.shape[2:])
    kernel2d = jnp.transpose(kernel, (1, 2, 0, 3, 4)).reshape(3, 3, -1, kernel.shape[-1])
    y = jax.lax.conv_general_dilated(stacked, kernel2d, (2, 2), "VALID", dimension_numbers=DIMENSIONS_2D)
    return y.reshape((n, t) + y.shape[1:])


def pallas(x, kernel, interpret=False):
    from jax.experimental import pallas as pl

    x = _pad(x)
    n, tp, hp, wp, c = x.shape
    filters = kernel.shape[-1]
    to, ho, wo = tp - 2, (hp - 3) // 2 + 1, (wp - 3) // 2 + 1
    bw, bf = pl.next_power_of_2(wo), pl.next_power_of_2(filters)
    # Blocks must lie inside the arrays: pad W to the row block and the filters to a power of 2.
    x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, max(0, 2 * bw + 1 - wp)), (0, 0)))
    weights = jnp.pad(kernel.reshape(27 * c, filters).astype(jnp.float32), ((0, 0), (0, bf - filters)))

    def row(x_ref, w_ref, o_ref):
        nt, h = pl.program_id(0), pl.program_id(1)
        b, t = nt // to, nt % to
        acc = jnp.zeros((bw, bf), jnp.float32)
        for i, (dt, dh, dw, channel) in enumerate(np.ndindex(3, 3, 3, c)):
            view = x_ref[b, t + dt, 2 * h + dh, pl.ds(dw, bw, 2), pl.ds(channel, 1)]  # (bw, 1)
            acc += view.astype(jnp.float32) * w_ref[pl.ds(i, 1), :]
        o_ref[b, t, h, :, :] = acc.astype(o_ref.dtype)

    return _per_row(row, x, weights, (n, to, ho, bw, bf), interpret)[:, :, :, :wo, :filters]


def _per_row(row, x, weights, out_shape, interpret):
    """A Pallas call of `row` once per output row (grid: batch x time, H) on whole-array refs."""
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plt

    n, to, ho = out_shape[:3]
    return pl.pallas_call(
        row, out_shape=jax.ShapeDtypeStruct(out_shape, x.dtype), grid=(n * to, ho),
        in_specs=[pl.BlockSpec(memory_space=pl.ANY)] * 2, out_specs=pl.BlockSpec(memory_space=pl.ANY),
        compiler_params=plt.CompilerParams(num_warps=4, num_stages=1), interpret=interpret)(x, weights)


def s2d(x, kernel):
    from keras_r3d.layers import space_to_depth_conv

    return space_to_depth_conv(_pad(x), kernel, (1, 2, 2))


def _blocks(x, kernel):
    """The padded clip and the kernel over 2x2 pixel blocks, and the output's H, W."""
    from keras_r3d.layers import space_to_depth, space_to_depth_kernel

    x = _pad(x)
    size = ((x.shape[2] - 3) // 2 + 1, (x.shape[3] - 3) // 2 + 1)
    return space_to_depth(x), space_to_depth_kernel(kernel), size


def s2d_frames(x, kernel):
    x, kernel, (h, w) = _blocks(x, kernel)
    n, t = x.shape[0], x.shape[1] - 2
    stacked = jnp.concatenate([x[:, a:a + t] for a in range(3)], axis=-1)  # channels (dt, block)
    stacked = stacked.reshape((n * t,) + stacked.shape[2:])
    kernel2d = jnp.transpose(kernel, (1, 2, 0, 3, 4)).reshape(2, 2, -1, kernel.shape[-1])
    y = jax.lax.conv_general_dilated(stacked, kernel2d, (1, 1), "VALID", dimension_numbers=DIMENSIONS_2D)
    return y.reshape((n, t) + y.shape[1:])[:, :, :h, :w]


def pallas_s2d(x, kernel, interpret=False):
    from jax.experimental import pallas as pl

    x, kernel, (ho, wo) = _blocks(x, kernel)
    n, tp, _, w2, c = x.shape
    filters = kernel.shape[-1]
    to = tp - 2
    # Triton's matrix products need power-of-2 blocks of at least 16.
    bw, bc, bf = (max(16, pl.next_power_of_2(v)) for v in (wo, c, filters))
    x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, max(0, bw + 1 - w2)), (0, bc - c)))
    weights = jnp.pad(kernel, ((0, 0), (0, 0), (0, 0), (0, bc - c), (0, bf - filters)))
    weights = weights.reshape(12, bc, bf).astype(x.dtype)

    def row(x_ref, w_ref, o_ref):
        nt, h = pl.program_id(0), pl.program_id(1)
        b, t = nt // to, nt % to
        acc = jnp.zeros((bw, bf), jnp.float32)
        for i, (dt, dh, dw) in enumerate(np.ndindex(3, 2, 2)):
            view = x_ref[b, t + dt, h + dh, pl.ds(dw, bw), :]  # (bw, bc)
            acc += jnp.dot(view, w_ref[i], preferred_element_type=jnp.float32)
        o_ref[b, t, h, :, :] = acc.astype(o_ref.dtype)

    return _per_row(row, x, weights, (n, to, ho, bw, bf), interpret)[:, :, :, :wo, :filters]


def channels_padded(formulation, channels):
    """`formulation` on the clip and kernel zero-padded to `channels` input channels."""
    def padded(x, kernel):
        extra = channels - x.shape[-1]
        return formulation(jnp.pad(x, ((0, 0),) * 4 + ((0, extra),)),
                           jnp.pad(kernel, ((0, 0),) * 3 + ((0, extra), (0, 0))))
    return padded


FORMULATIONS = {"native": native, "patches": patches, "frames9": frames9, "pallas": pallas, "s2d": s2d,
                "s2d_frames": s2d_frames, "pallas_s2d": pallas_s2d, "native_c4": channels_padded(native, 4),
                "native_c8": channels_padded(native, 8), "s2d_c4": channels_padded(s2d, 4)}
PALLAS = ("pallas", "pallas_s2d")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--input_shape", default="16,112,112", help="FRAMES,HEIGHT,WIDTH")
    parser.add_argument("--filters", type=int, default=24)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--formulations", default=",".join(FORMULATIONS))
    parser.add_argument("--output", help="JSON file to write")
    args = parser.parse_args(argv)
    if {"s2d", "s2d_frames", "pallas_s2d", "s2d_c4"} & set(args.formulations.split(",")) and keras.backend.backend() != "jax":
        parser.error("the s2d formulations need KERAS_BACKEND=jax")
    frames, height, width = (int(v) for v in args.input_shape.split(","))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(args.batch_size, frames, height, width, 3)), args.precision)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 3, 3, args.filters)) / 9, args.precision)
    reference = np.asarray(jax.jit(native)(x, kernel), np.float32)
    rows = []
    for name in args.formulations.split(","):
        function = FORMULATIONS[name]
        if name in PALLAS:
            function = functools.partial(function, interpret=jax.default_backend() == "cpu")
        call = jax.jit(function)
        try:
            y = np.asarray(call(x, kernel), np.float32)
        except Exception as failure:  # one that this JAX or GPU cannot lower or run: record it, go on
            rows.append({"formulation": name, "error": f"{type(failure).__name__}: {failure}"[:1000]})
            print(f"{name:10s} failed: {rows[-1]['error'][:200]}", flush=True)
            finish(args, rows, complete=False)
            continue
        error = float(np.max(np.abs(y - reference)) / max(1.0, np.max(np.abs(reference))))
        for _ in range(5):
            call(x, kernel).block_until_ready()
        times = []
        for _ in range(args.calls):
            start = time.perf_counter()
            call(x, kernel).block_until_ready()
            times.append(time.perf_counter() - start)
        rows.append({"formulation": name, "ms_median": 1e3 * float(np.median(times)),
                     "ms_min": 1e3 * float(np.min(times)), "max_rel_diff_vs_native": error})
        print(f"{name:10s} {rows[-1]['ms_median']:8.3f} ms (min {rows[-1]['ms_min']:.3f}), "
              f"max diff vs native {error:.1e}", flush=True)
        finish(args, rows, complete=False)
    return finish(args, rows, complete=True)


def finish(args, rows, **extra):
    """The run's result (device, settings, rows, `extra`), written to --output if given:
    after every row, so that a run stopped by a time limit keeps what it measured."""
    result = {"device": str(jax.devices()[0].device_kind), "settings": vars(args), "rows": rows, **extra}
    if args.output:
        from keras_r3d.files import write_atomic

        write_atomic(args.output, json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
