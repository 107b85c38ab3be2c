"""Run in a subprocess with KERAS_BACKEND set: loads the `.keras` models that
the TF test saved, checks their logits, and takes one training step. On JAX
("auto" is "s2d" on a CPU) the logits also under "taps_matmul", JAX's GPU
default, and for PALLAS_MODEL under "pallas" (Pallas' interpreter on a CPU;
tests/pallas_check.py checks its gradient); the families of JAX_UNTRAINED take
no step there. On torch each family also takes a training step built under
mixed_bfloat16 (XLA's CPU runs bfloat16 convs too slowly for the suite:
minutes for the eight).

    KERAS_BACKEND=jax python -m tests.backend_check DIR
"""
import json
import pathlib
import sys

import keras
import numpy as np

import keras_r3d

PALLAS_MODEL = "MobileNetV2-0.2x"  # stride-1 depthwise convs; the interpreter is slow
# XLA compiles a train step of these for 13-21 s on a CPU; their convs (depthwise and pointwise, at
# both strides) are all in the ShuffleNets, whose steps stand for theirs; ReLU6 is Keras' own ReLU.
JAX_UNTRAINED = ("MobileNetV1-0.5x", "MobileNetV2-0.2x")


def check(directory):
    results = {}
    for path in sorted(pathlib.Path(directory).glob("*.keras")):
        data = np.load(path.with_suffix(".npz"))
        model = keras.saving.load_model(path, compile=False)
        implementations = ["auto"]
        if keras.backend.backend() == "jax":
            implementations += ["taps_matmul", "pallas"] if path.stem == PALLAS_MODEL else ["taps_matmul"]
        errors = {}
        for name in implementations:
            with keras_r3d.implementation(name):  # compiled on JAX (an eager call compiles op by op: 10x slower)
                logits = np.asarray(model.predict_on_batch(data["x"]))
            errors[name] = float(np.abs(logits - data["logits"]).max())
        results[path.stem] = {"max_abs_error": errors, "backend": keras.backend.backend()}
        if keras.backend.backend() == "jax" and path.stem in JAX_UNTRAINED:
            continue
        model.compile(optimizer=keras.optimizers.SGD(0.01),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        before = [np.array(w) for w in model.trainable_weights]
        loss = float(model.train_on_batch(data["x"], data["labels"]))
        changed = sum(not np.array_equal(b, np.array(w)) for b, w in zip(before, model.trainable_weights))
        results[path.stem].update(loss=loss, changed=changed, trainable=len(before),
                                  mixed_bfloat16_loss=mixed_precision_loss(path.stem, data)
                                  if keras.backend.backend() == "torch" else None)
    print(json.dumps(results))


def mixed_precision_loss(name, data):
    """One training step of the family built under mixed_bfloat16 (on torch's
    CPU, AvgPool3D has no half-precision kernel of its own)."""
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        model = keras_r3d.create_model(name, num_classes=5, input_shape=data["x"].shape[1:])
        model.compile(optimizer=keras.optimizers.SGD(0.01),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return float(model.train_on_batch(data["x"], data["labels"]))
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


if __name__ == "__main__":
    check(sys.argv[1])
