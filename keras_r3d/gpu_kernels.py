"""Pallas kernels behind the zoo's layers on JAX (`implementation("pallas")`).

The depthwise 3D conv (the layers use it at stride 1): one Triton program per
output row and block of channels, its kt*kh*kw strided row loads multiplied by
per-channel weights and accumulated in float32. XLA's fusion of the same sum
ran at about a sixth of an H100's copy bandwidth (benchmarks/README.md). Off
CUDA the kernel runs in Pallas' interpreter (slow; for tests). Gradients come
from the "taps" formulation, which computes the same function.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from keras_r3d.layers import depthwise_taps

BLOCK_CHANNELS = 32


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def depthwise_conv(x, kernel, strides):
    """Depthwise conv of a padded NDHWC `x` with a (kt, kh, kw, C) `kernel`."""
    return _depthwise_pallas(x, kernel, tuple(strides))


def _depthwise_forward(x, kernel, strides):
    return _depthwise_pallas(x, kernel, tuple(strides)), (x, kernel)


def _depthwise_backward(strides, residuals, gradient):
    _, pullback = jax.vjp(lambda x, kernel: depthwise_taps(x, kernel, strides), *residuals)
    return pullback(gradient)


depthwise_conv.defvjp(_depthwise_forward, _depthwise_backward)


def _depthwise_pallas(x, kernel, strides, block_channels=BLOCK_CHANNELS):
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plt

    n, tp, hp, wp, c = x.shape
    window = kernel.shape[:3]
    st, sh, sw = strides
    to, ho, wo = ((size - k) // s + 1 for size, k, s in zip((tp, hp, wp), window, strides))
    bw, bc = pl.next_power_of_2(wo), block_channels
    cp = pl.cdiv(c, bc) * bc
    # Blocks must lie inside the arrays: pad W to the row block and C to the channel block.
    padded = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, max(0, (bw - 1) * sw + window[2] - wp)), (0, cp - c)))
    if padded.size >= 2**31:  # beyond Triton's int32 indexing
        return depthwise_taps(x, kernel, strides)
    weights = jnp.pad(kernel.reshape(-1, c).astype(jnp.float32), ((0, 0), (0, cp - c)))

    def row(x_ref, w_ref, o_ref):
        nt, h, block = pl.program_id(0), pl.program_id(1), pl.program_id(2)
        b, t = nt // to, nt % to
        channels = pl.ds(pl.multiple_of(block * bc, bc), bc)
        acc = jnp.zeros((bw, bc), jnp.float32)
        for i, (dt, dh, dw) in enumerate(np.ndindex(*window)):
            view = x_ref[b, t * st + dt, h * sh + dh, pl.ds(dw, bw, sw), channels]
            acc += view.astype(jnp.float32) * w_ref[i, channels][None, :]
        o_ref[b, t, h, :, channels] = acc.astype(o_ref.dtype)

    call = functools.partial(
        pl.pallas_call, row, out_shape=jax.ShapeDtypeStruct((n, to, ho, bw, cp), x.dtype),
        grid=(n * to, ho, cp // bc), in_specs=[pl.BlockSpec(memory_space=pl.ANY)] * 2,
        out_specs=pl.BlockSpec(memory_space=pl.ANY), compiler_params=plt.CompilerParams(num_warps=4, num_stages=1))
    # Chosen where it is lowered: Triton for an NVIDIA GPU, the interpreter elsewhere.
    out = jax.lax.platform_dependent(padded, weights, cuda=call(), default=call(interpret=True))
    return out[:, :, :, :wo, :c]
