"""The zoo on a GPU (JAX or PyTorch backend): the official checkpoint keeps
the official logits with every layer implementation, in float32 and bfloat16.

    KERAS_BACKEND=jax python -m pytest tests/test_gpu.py
"""
import keras
import numpy as np
import pytest

import keras_r3d
from keras_r3d import convert
from tests.conftest import OFFICIAL_CHECKPOINT, REFERENCE

pytestmark = pytest.mark.gpu

GPU_IMPLEMENTATIONS = ("native", "taps", "taps_matmul", "s2d", "pallas")


@pytest.fixture(scope="module")
def on_gpu():
    """Full float32 precision (no TF32) on the backend's GPU."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        if jax.default_backend() != "gpu":
            pytest.skip("JAX sees no GPU")
        jax.config.update("jax_default_matmul_precision", "highest")
    elif backend == "torch":
        import torch

        if not torch.cuda.is_available():
            pytest.skip("PyTorch sees no GPU")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    else:
        pytest.skip(f"GPU tests run on the JAX or PyTorch backend, not {backend}")
    return backend


@pytest.fixture(scope="module")
def clips(fixtures_dir):
    """(name, preprocessed NDHWC clip, official logits) of the real clips."""
    out = []
    for path in sorted(REFERENCE.glob("*.npz")):
        reference = np.load(path)
        if "frames_uint8_thwc" in reference:
            out.append((path.stem, reference["input_ncdhw"].transpose(0, 2, 3, 4, 1),
                        reference["logits"]))
    assert len(out) >= 3
    return out


def _skip_if_unavailable(implementation):
    if implementation == "pallas" and keras.backend.backend() != "jax":
        pytest.skip("the Pallas kernels are JAX's")


def _logits(model, x):
    # Compiled, as deployed: eager calls took over 40 s per Pallas test on an H200.
    return np.asarray(model.predict_on_batch(x), np.float64)


@pytest.mark.parametrize("implementation", GPU_IMPLEMENTATIONS)
def test_official_checkpoint_on_gpu_float32(on_gpu, clips, implementation):
    _skip_if_unavailable(implementation)
    model = convert.convert_checkpoint(OFFICIAL_CHECKPOINT)
    with keras_r3d.implementation(implementation):
        for name, x, reference in clips:
            logits = _logits(model, x)
            tolerance = 1e-4 * max(1.0, np.abs(reference).max())
            assert np.abs(logits - reference).max() <= tolerance, (name, implementation)


@pytest.mark.parametrize("implementation", GPU_IMPLEMENTATIONS)
def test_official_checkpoint_on_gpu_bfloat16_keeps_top1(on_gpu, clips, implementation):
    _skip_if_unavailable(implementation)
    float32 = convert.convert_checkpoint(OFFICIAL_CHECKPOINT)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = keras_r3d.build(float32.architecture["arch"],
                                **{k: v for k, v in float32.architecture.items() if k != "arch"})
    finally:
        keras.config.set_dtype_policy(previous)
    model.set_weights(float32.get_weights())
    with keras_r3d.implementation(implementation):
        for name, x, reference in clips:
            logits = _logits(model, x)
            assert logits.argmax() == reference.argmax(), (name, implementation)
            relative = np.linalg.norm(logits - reference) / np.linalg.norm(reference)
            assert relative <= 0.05, (name, implementation, relative)
