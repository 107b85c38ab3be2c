"""onnxruntime's clips/s over time with 2 threads (spinning or not) and 1 thread.

A VM's cores can slow down in spells, minutes apart, and a multi-threaded
runtime loses more there than a single-threaded one (README, "Benchmarks").
This alternates the three settings, each in a fresh process timing `--calls`
batch-1 calls of the model's ONNX file (keras_r3d's writer), for `--seconds`,
and writes OUTPUT.json (every round), OUTPUT.md (a summary) and OUTPUT.png
(clips/s against time):

    python benchmarks/onnxruntime_threads.py --name ShuffleNetV1-1.0x --seconds 180 \\
        --output benchmarks/cpu2-zen5-onnxruntime-threads
"""
import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

# (label, intra-op threads, spinning allowed)
SETTINGS = (("2 threads, spinning", 2, 1), ("2 threads, no spinning", 2, 0), ("1 thread", 1, 1))

CHILD = """
import sys, time
import numpy as np
import onnxruntime as ort
path, threads, spin, calls = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
options = ort.SessionOptions()
options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
options.add_session_config_entry("session.intra_op.allow_spinning", spin)
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
feed = {session.get_inputs()[0].name: np.random.default_rng(0).integers(0, 256, (1, 16, 112, 112, 3), np.uint8)}
for _ in range(5):
    session.run(None, feed)
times = []
for _ in range(calls):
    start = time.perf_counter()
    session.run(None, feed)
    times.append(time.perf_counter() - start)
print(1 / float(np.median(times)))
"""


def measure(path, threads, spin, calls):
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), str(threads), str(spin), str(calls)],
                          capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def summary(rounds):
    lines = ["| Setting | rounds | clips/s median [min–max] |", "| --- | ---: | ---: |"]
    for label, _, _ in SETTINGS:
        values = [r[label] for r in rounds]
        lines.append(f"| {label} | {len(values)} | {np.median(values):.0f} [{min(values):.0f}–{max(values):.0f}] |")
    single_wins = sum(r["1 thread"] > r["2 threads, spinning"] for r in rounds)
    lines += ["", f"1 thread beat 2 spinning threads in {single_wins} of {len(rounds)} rounds."]
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="ShuffleNetV1-1.0x", help="a registry name")
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--calls", type=int, default=60, help="timed calls per process")
    parser.add_argument("--output", required=True, help="stem of the .json, .md and .png")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_r3d import create_model, export
    from keras_r3d.benchmark import cpu_model

    rounds = []
    with tempfile.TemporaryDirectory() as scratch:
        path = pathlib.Path(scratch) / "model.onnx"
        export.export_onnx(create_model(args.name, num_classes=600), path, converter="keras_r3d")
        start = time.time()
        while time.time() - start < args.seconds:
            row = {"t_s": round(time.time() - start, 1)}
            for label, threads, spin in SETTINGS:
                row[label] = round(measure(path, threads, spin, args.calls), 1)
            rounds.append(row)
            print(row, flush=True)
    output = pathlib.Path(args.output)
    command = " ".join(["python"] + sys.argv)
    machine = cpu_model()
    result = {"command": command, "cpu_model": machine, "model": args.name, "rounds": rounds}
    output.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    output.with_suffix(".md").write_text("\n".join(
        [f"# onnxruntime threads over time: {args.name}", "", f"- Command: `{command}`",
         f"- Machine: {machine}", f"- Batch 1, 16×112×112, {args.calls} timed calls per process", ""]
        + summary(rounds)) + "\n")
    figure, axes = plt.subplots(figsize=(9, 4))
    for label, _, _ in SETTINGS:
        axes.plot([r["t_s"] for r in rounds], [r[label] for r in rounds], marker=".", label=label)
    axes.set(xlabel="seconds", ylabel="clips/s (median per process)", title=f"{args.name}: {machine}")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(output.with_suffix(".png"), dpi=100)


if __name__ == "__main__":
    main()
