"""Run in a subprocess with KERAS_BACKEND set: loads the `.keras` models that
the TF test saved, checks their logits, and takes one training step. On JAX
the logits also under the "s2d" layers, and for PALLAS_MODEL the "pallas" ones
(Pallas' interpreter on a CPU; tests/pallas_check.py checks its gradient).

    KERAS_BACKEND=jax python -m tests.backend_check DIR
"""
import json
import pathlib
import sys

import keras
import numpy as np

import keras_r3d

PALLAS_MODEL = "MobileNetV2-0.2x"  # stride-1 depthwise convs; the interpreter is slow


def check(directory):
    results = {}
    for path in sorted(pathlib.Path(directory).glob("*.keras")):
        data = np.load(path.with_suffix(".npz"))
        model = keras.saving.load_model(path, compile=False)
        implementations = ["auto"]
        if keras.backend.backend() == "jax":
            implementations += ["s2d", "pallas"] if path.stem == PALLAS_MODEL else ["s2d"]
        errors = {}
        for name in implementations:
            with keras_r3d.implementation(name):
                logits = np.asarray(keras.ops.convert_to_numpy(model(data["x"], training=False)))
            errors[name] = float(np.abs(logits - data["logits"]).max())
        model.compile(optimizer=keras.optimizers.SGD(0.01),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        before = [np.array(w) for w in model.trainable_weights]
        loss = float(model.train_on_batch(data["x"], data["labels"]))
        changed = sum(not np.array_equal(b, np.array(w)) for b, w in zip(before, model.trainable_weights))
        results[path.stem] = {"max_abs_error": errors, "loss": loss, "changed": changed,
                              "trainable": len(before), "backend": keras.backend.backend()}
    print(json.dumps(results))


if __name__ == "__main__":
    check(sys.argv[1])
