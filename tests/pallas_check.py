"""Run in a subprocess with KERAS_BACKEND=jax: checks the Pallas kernels of
keras_r3d.gpu_kernels, benchmarks/gpu_stem.py and benchmarks/gpu_depthwise.py
from this CPU. Prints {check: passed} as JSON:

* the kernels lower to a Triton call for a CUDA GPU, at the 1.0x models' shapes;
* the layers' depthwise kernel in Pallas' interpreter equals the taps, values
  and gradients, at an uneven window and a channel count that is not a
  multiple of its channel block;
* an input beyond Triton's int32 indexing lowers to the taps instead.

    KERAS_BACKEND=jax python -m tests.pallas_check
"""
import functools
import itertools
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_depthwise  # noqa: E402
import gpu_stem  # noqa: E402

from keras_r3d import gpu_kernels, layers  # noqa: E402

STRIDE_1 = (1, 1, 1)


def lowers_to_triton_for_cuda(function, *shapes):
    lowered = jax.jit(function).trace(*shapes).lower(lowering_platforms=("cuda",))
    return "xla.gpu.triton" in lowered.as_text()


def interpreter_equals_taps():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 5, 7, 9, 40)), jnp.float32)  # padded input
    kernel = jnp.asarray(rng.standard_normal((3, 2, 3, 40)), jnp.float32)

    def loss(conv, x, kernel):
        y = conv(x, kernel, STRIDE_1)
        return jnp.sum(y * jnp.cos(y)), y

    outputs = []
    for conv in (gpu_kernels.depthwise_conv, layers.depthwise_taps):
        (_, y), grads = jax.value_and_grad(functools.partial(loss, conv), (0, 1), has_aux=True)(x, kernel)
        outputs.append((y, *grads))
    return all(np.allclose(a, b, atol=1e-4) for a, b in zip(*outputs))


def main():
    results = {}
    clip = (2, 16, 112, 112, 3)
    for name, dtype in itertools.product(gpu_stem.PALLAS, (jnp.bfloat16, jnp.float32)):
        results[f"stem {name} {dtype.__name__} lowers"] = lowers_to_triton_for_cuda(
            gpu_stem.FORMULATIONS[name], jax.ShapeDtypeStruct(clip, dtype),
            jax.ShapeDtypeStruct((3, 3, 3, 3, 24), dtype))
    # MobileNetV2 1.0x's third block: 144 channels at 16x56x56, stride 1 and 2.
    features = jax.ShapeDtypeStruct((2, 16, 56, 56, 144), jnp.bfloat16)
    for strides, name in itertools.product((STRIDE_1, (2, 2, 2)), ("pallas", "pallas_c16", "pallas_c64")):
        results[f"depthwise {name} {strides} lowers"] = lowers_to_triton_for_cuda(
            functools.partial(gpu_depthwise.FORMULATIONS[name], strides=strides), features,
            jax.ShapeDtypeStruct((3, 3, 3, 144), jnp.bfloat16))
    padded = jax.ShapeDtypeStruct((2, 18, 58, 58, 144), jnp.float32)
    weights = jax.ShapeDtypeStruct((3, 3, 3, 144), jnp.float32)
    results["layers' kernel with its gradient lowers"] = lowers_to_triton_for_cuda(
        jax.value_and_grad(lambda x, k: gpu_kernels.depthwise_conv(x, k, STRIDE_1).sum(), (0, 1)), padded, weights)
    results["layers' kernel equals the taps, values and gradients"] = interpreter_equals_taps()
    huge = jax.ShapeDtypeStruct((512, 18, 58, 58, 160), jnp.bfloat16)  # 4.96e9 elements
    results["an input beyond int32 indexing runs the taps"] = not lowers_to_triton_for_cuda(
        lambda x, k: gpu_kernels.depthwise_conv(x, k, STRIDE_1), huge,
        jax.ShapeDtypeStruct((3, 3, 3, 160), jnp.bfloat16))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
