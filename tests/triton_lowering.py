"""Run in a subprocess with KERAS_BACKEND=jax: lowers the Pallas kernels of
benchmarks/gpu_stem.py, benchmarks/gpu_depthwise.py and keras_r3d.gpu_kernels
for a CUDA GPU from this CPU, at the 1.0x models' shapes, and prints
{kernel: whether the lowering holds a Triton call} as JSON.

    KERAS_BACKEND=jax python -m tests.triton_lowering
"""
import functools
import itertools
import json
import sys

import jax
import jax.numpy as jnp

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_depthwise  # noqa: E402
import gpu_stem  # noqa: E402

from keras_r3d import gpu_kernels  # noqa: E402


def lowers_to_triton_for_cuda(function, *shapes):
    lowered = jax.jit(function).trace(*shapes).lower(lowering_platforms=("cuda",))
    return "xla.gpu.triton" in lowered.as_text()


def main():
    results = {}
    for name, dtype in itertools.product(gpu_stem.PALLAS, (jnp.bfloat16, jnp.float32)):
        results[f"stem {name} {dtype.__name__}"] = lowers_to_triton_for_cuda(
            gpu_stem.FORMULATIONS[name], jax.ShapeDtypeStruct((2, 16, 112, 112, 3), dtype),
            jax.ShapeDtypeStruct((3, 3, 3, 3, 24), dtype))
    for strides, name in itertools.product(((1, 1, 1), (2, 2, 2)), ("pallas", "pallas_c16", "pallas_c64")):
        results[f"depthwise {name} {strides}"] = lowers_to_triton_for_cuda(
            functools.partial(gpu_depthwise.FORMULATIONS[name], strides=strides),
            jax.ShapeDtypeStruct((2, 16, 56, 56, 144), jnp.bfloat16), jax.ShapeDtypeStruct((3, 3, 3, 144), jnp.bfloat16))
    # The layers' kernel with its gradient (from the taps), on an already padded input.
    results["gpu_kernels.depthwise_conv value_and_grad"] = lowers_to_triton_for_cuda(
        jax.value_and_grad(lambda x, k: gpu_kernels.depthwise_conv(x, k, (1, 2, 2)).sum(), argnums=(0, 1)),
        jax.ShapeDtypeStruct((2, 10, 30, 30, 96), jnp.float32), jax.ShapeDtypeStruct((3, 3, 3, 96), jnp.float32))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
