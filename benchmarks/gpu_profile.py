"""Which layers bound a zoo model's forward pass on the JAX backend: a
`jax.profiler` trace of the jitted inference call (as `keras_r3d.benchmark`
times it), each kernel's device time mapped through the optimized HLO's
metadata back to the Keras layer that made it.

    KERAS_BACKEND=jax python benchmarks/gpu_profile.py --models ShuffleNetV2-1.0x,MobileNetV2-1.0x \\
        --batch_size 256 --precision bfloat16 --output benchmarks/gpu_profile_h200_b256_bf16

Writes OUTPUT.json (every kernel: HLO op, kind, layer, microseconds per call)
and OUTPUT.md (per model: device time and kernel count per call, the kinds of
kernel, and the layers that take the most time). XLA launches runs of small
kernels as CUDA graphs, which the trace shows as one "command buffer" each;
`XLA_FLAGS=--xla_gpu_enable_command_buffer=` shows every kernel instead. On a
CPU it profiles XLA's CPU thunks, which is how it is tested.
"""
import argparse
import collections
import glob
import gzip
import json
import os
import pathlib
import re
import sys
import tempfile

import numpy as np

# `%name = shape opcode(...)... metadata={op_name="jit(f)/layer/..."}` in HLO text.
INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+) = .*?\s([a-z][\w\-]*)\(")
OP_NAME = re.compile(r'op_name="([^"]*)"')
FUSION_KIND = re.compile(r"kind=(k\w+)")
TARGET = re.compile(r'custom_call_target="([^"]*)"')


def hlo_ops(hlo_text):
    """{instruction name: (kind, op_name)} of an optimized HLO module's entry
    and fusion call sites; kind is the fusion kind, the custom-call target
    (cuBLAS, cuDNN) or the opcode, with "triton" marked."""
    ops = {}
    for line in hlo_text.splitlines():
        match = INSTRUCTION.match(line)
        if not match:
            continue
        name, opcode = match.groups()
        kind = opcode
        if opcode == "fusion":
            kind = "fusion:" + (FUSION_KIND.search(line) or [None, "?"])[1]
            if "triton" in line:
                kind += ":triton"
        elif opcode == "custom-call":
            kind = (TARGET.search(line) or [None, "custom-call"])[1]
        op_name = OP_NAME.search(line)
        ops[name] = (kind, op_name.group(1) if op_name else "")
    return ops


def layer_of(op_name):
    """The Keras layer in a JAX op_name such as `jit(f)/features_3_conv_0/conv`."""
    parts = [p for p in op_name.split("/") if p and not p.startswith(("jit(", "pjit(", "jvp(", "transpose("))]
    return parts[0] if len(parts) > 1 else "(outside layers)"


def kernel_times(trace_path, module_prefix):
    """{hlo_op: summed device microseconds} from a perfetto trace, taken from
    the GPU's events where there are any, else from the host's XLA thunks."""
    events = json.load(gzip.open(trace_path))["traceEvents"]
    processes = {e["pid"]: e["args"]["name"] for e in events
                 if e.get("ph") == "M" and e.get("name") == "process_name"}
    gpu = {pid for pid, name in processes.items() if "GPU" in name or "gpu" in name}
    totals = collections.Counter()
    for event in events:
        args = event.get("args") or {}
        if event.get("ph") != "X" or "hlo_op" not in args:
            continue
        if gpu and event["pid"] not in gpu:
            continue
        if not str(args.get("hlo_module", "")).startswith(module_prefix):
            continue
        totals[args["hlo_op"]] += float(event["dur"])
    if not totals and gpu:  # kernels without HLO stats: by kernel name (`loop_add_fusion_3`)
        for event in events:
            if event.get("ph") == "X" and event["pid"] in gpu:
                totals[re.sub(r"_(\d+)$", r".\1", event["name"])] += float(event["dur"])
    return totals


def profile(name, batch_size, precision, calls, input_shape, workdir):
    """One model's kernels, per call: a list of dicts, and the device name."""
    import jax
    import keras

    import keras_r3d
    from keras_r3d.benchmark import dtype_policy

    keras.utils.set_random_seed(0)
    with dtype_policy(precision):
        model = keras_r3d.fold_batch_norm(keras_r3d.create_model(name, num_classes=600,
                                                                      input_shape=input_shape))
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def forward(tv, ntv, inputs):
        return model.stateless_call(tv, ntv, inputs, training=False)[0]

    shape = (batch_size,) + tuple(model.input_shape[1:])
    x = jax.device_put(np.random.default_rng(0).normal(0, 1, shape).astype(np.float32))
    compiled = jax.jit(forward).lower(trainable, non_trainable, x).compile()
    for _ in range(3):
        compiled(trainable, non_trainable, x).block_until_ready()
    trace_dir = pathlib.Path(workdir) / name
    with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True):
        for _ in range(calls):
            compiled(trainable, non_trainable, x).block_until_ready()
    trace = glob.glob(str(trace_dir / "**" / "perfetto_trace.json.gz"), recursive=True)[0]
    ops = hlo_ops(compiled.as_text())
    module = compiled.as_text().split("\n", 1)[0].split()[1].rstrip(",")  # `HloModule jit_forward, ...`
    rows = []
    for op, microseconds in kernel_times(trace, module).items():
        kind, op_name = ops.get(op, ("?", ""))
        if op.startswith("command_buffer"):  # XLA_FLAGS=--xla_gpu_enable_command_buffer= shows its kernels
            kind = "CUDA graph (XLA command buffer)"
        rows.append({"hlo_op": op, "kind": kind, "layer": layer_of(op_name),
                     "us_per_call": microseconds / calls})
    rows.sort(key=lambda r: -r["us_per_call"])
    device = jax.devices()[0]
    return rows, getattr(device, "device_kind", device.platform)


def markdown(results, args, top):
    lines = [f"# Where the time goes: {results['device']}, JAX, batch {args.batch_size}, {args.precision}", "",
             f"`{results['command']}`: kernels of the jitted forward (BatchNorm folded, the layers' "
             f"\"auto\" lowering), {args.calls} traced calls after 3 warm-up calls, device time per call "
             "mapped to layers through the optimized HLO's metadata.", ""]
    for name, rows in results["models"].items():
        total = sum(r["us_per_call"] for r in rows)
        if not total:
            lines += [f"## {name}", "", "No kernel events in the trace.", ""]
            continue
        lines += [f"## {name}", "",
                  f"{total / 1e3:.2f} ms of kernels per call in {len(rows)} kernels "
                  f"({args.batch_size * 1e6 / total:,.0f} clips/s if nothing else ran).", "",
                  "| kind of kernel | kernels | ms per call | share |", "| --- | ---: | ---: | ---: |"]
        kinds = collections.defaultdict(list)
        for r in rows:
            kinds[r["kind"]].append(r["us_per_call"])
        for kind, times in sorted(kinds.items(), key=lambda kv: -sum(kv[1])):
            lines.append(f"| {kind} | {len(times)} | {sum(times) / 1e3:.3f} | {sum(times) / total:.0%} |")
        layers = collections.defaultdict(list)
        for r in rows:
            layers[r["layer"]].append(r)
        lines += ["", f"Top {top} layers:", "", "| layer | kernels | ms per call | share | its kernels' kinds |",
                  "| --- | ---: | ---: | ---: | --- |"]
        ranked = sorted(layers.items(), key=lambda kv: -sum(r["us_per_call"] for r in kv[1]))
        for layer, kernels in ranked[:top]:
            us = sum(r["us_per_call"] for r in kernels)
            kinds_here = ", ".join(sorted({r["kind"] for r in kernels}))
            lines.append(f"| {layer} | {len(kernels)} | {us / 1e3:.3f} | {us / total:.0%} | {kinds_here} |")
        lines.append("")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="ShuffleNetV2-1.0x,MobileNetV2-1.0x")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--precision", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--input_shape", default="16,112,112", help="FRAMES,HEIGHT,WIDTH")
    parser.add_argument("--top", type=int, default=12, help="layers listed per model")
    parser.add_argument("--output", required=True, help="stem of the .json/.md")
    args = parser.parse_args()
    import keras

    if keras.backend.backend() != "jax":
        parser.error("run with KERAS_BACKEND=jax")
    input_shape = tuple(int(n) for n in args.input_shape.split(",")) + (3,)
    results = {"command": " ".join([pathlib.Path(sys.executable).name] + sys.argv), "models": {}}
    stem = pathlib.Path(args.output)
    stem.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu_profile_") as workdir:
        for name in args.models.split(","):
            results["models"][name], results["device"] = profile(
                name, args.batch_size, args.precision, args.calls, input_shape, workdir)
            stem.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
            stem.with_suffix(".md").write_text(markdown(results, args, args.top))
            print(f"{name}: {sum(r['us_per_call'] for r in results['models'][name]) / 1e3:.2f} ms of kernels "
                  f"per call", file=sys.stderr, flush=True)


if __name__ == "__main__":
    os.environ.setdefault("KERAS_BACKEND", "jax")
    main()
