"""Training throughput (clips/s) of zoo models: `model.fit` steps with the
official SGD on in-memory random clips, so that the input pipeline is not
measured. Writes benchmarks/training_<backend>_<device>.{json,md}, where
device is `cpu` or the GPU's name (`h100`).

    python benchmarks/training_throughput.py --models ShuffleNetV2-1.0x,MobileNetV2-1.0x
    python benchmarks/training_throughput.py --jit_compile true,false ...   # XLA against the graph
"""
import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_MODELS = "ShuffleNetV1-1.0x,ShuffleNetV2-1.0x,MobileNetV1-1.0x,MobileNetV2-1.0x"


def compute_device():
    """("cpu", None) or (a short GPU name such as "h100", its full name) for
    this process's Keras backend."""
    import keras

    backend, name = keras.backend.backend(), None
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        name = device.device_kind if device.platform == "gpu" else None
    elif backend == "torch":
        import torch

        name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    else:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name") if gpus else None
    if not name:
        return "cpu", None
    words = [w for w in name.replace("NVIDIA", "").split() if any(c.isdigit() for c in w)]
    return (words[0] if words else name.split()[-1]).lower(), name


def measure(name, batch_size, frames, size, steps, warmup, jit_compile):
    """Seconds per step after `warmup` steps (tracing included there)."""
    import keras

    import keras_r3d
    from keras_r3d.optimizers import OfficialSGD

    model = keras_r3d.create_model(name, num_classes=27, input_shape=(frames, size, size, 3))
    model.compile(optimizer=OfficialSGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit_compile)
    rng = np.random.default_rng(0)
    clips = rng.normal(0, 50, (batch_size, frames, size, size, 3)).astype(np.float32)
    labels = rng.integers(0, 27, batch_size)
    start = time.perf_counter()
    for _ in range(warmup):
        model.train_on_batch(clips, labels)
    first = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(clips, labels)
        times.append(time.perf_counter() - start)
    median = float(np.median(times))
    return {"model": name, "jit_compile": jit_compile, "batch_size": batch_size, "input": [frames, size, size, 3],
            "warmup_s": round(first, 2), "step_s_median": round(median, 3),
            "clips_per_s": round(batch_size / median, 2), "steps": steps}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--jit_compile", default="auto",
                        help="auto (as keras_r3d.train), true or false; several, comma-separated, time each")
    parser.add_argument("--output", default=None, help="stem of the .json/.md (default by backend/device)")
    args = parser.parse_args()
    from tqdm import tqdm

    from keras_r3d.benchmark import tf_jit_choices

    choices = args.jit_compile.split(",")
    if not set(choices) <= {"auto", "true", "false"}:
        parser.error(f"--jit_compile takes auto, true or false, got {args.jit_compile!r}")
    jits = tf_jit_choices(choices)
    rows = []
    for name in tqdm(args.models.split(","), desc="models", file=sys.stderr):
        for jit in jits:
            load = os.getloadavg()[0]
            rows.append(measure(name, args.batch_size, args.frames, args.size, args.steps, args.warmup, jit))
            write(rows, args, load)


def write(rows, args, load):
    """Writes the rows so far (a crash keeps the models already measured)."""
    import keras

    from keras_r3d.benchmark import cpu_model

    device, gpu = compute_device()
    result = {"backend": keras.backend.backend(), "device": device, "gpu": gpu, "cpu": cpu_model(),
              "cpu_count": os.cpu_count(), "load_average_1min_before": round(load, 2),
              "load_average_1min_after": round(os.getloadavg()[0], 2),
              "command": " ".join([pathlib.Path(sys.executable).name] + sys.argv), "results": rows}
    stem = pathlib.Path(args.output) if args.output else HERE / f"training_{result['backend']}_{device}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")  # small: rewritten per model
    where = f"{gpu}, host {result['cpu']}" if gpu else result["cpu"]
    lines = [f"# Training throughput, {result['backend']} backend, {where} "
             f"({result['cpu_count']} cores, 1-min load {result['load_average_1min_before']} before the last model, "
             f"{result['load_average_1min_after']} after)", "",
             f"`{result['command']}`: `model.train_on_batch` with OfficialSGD on in-memory random clips, "
             f"median of {args.steps} steps after {args.warmup} warm-up steps.", "",
             "| model | XLA | input | batch | clips/s | s/step | warm-up s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['model']} | {'yes' if r.get('jit_compile') else 'no'} | {'x'.join(map(str, r['input'][:3]))} "
              f"| {r['batch_size']} | {r['clips_per_s']} "
              f"| {r['step_s_median']} | {r['warmup_s']} |" for r in rows]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    main()
