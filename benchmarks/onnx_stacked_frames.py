"""A depthwise 3x3x3 conv in onnxruntime two ways: time taps, or frames stacked.

The ONNX writer (`keras_r3d.onnx_writer`) keeps clips as `(N*T, C, H, W)` and
makes a temporal tap of a 3x3x3 conv by padding the frames in time and slicing
them (Pad, Slice, Reshape), which onnxruntime then copies into its blocked
NCHWc layout for each tap (README, "Benchmarks": half its time on CPU). With
the frames stacked in height instead, `(1, C, T*(H+1), W)` with a zero row
under each frame, the same conv is three 2D depthwise convs over the one
input: each takes the three time taps as kernel rows `H+1` apart (a dilation)
and one row of the spatial kernel (a row offset, as its pads), and a mask
zeroes the separator rows again. No copies between the convs.

This builds both graphs for one stride-1 depthwise conv followed by a ReLU
(and, with `--pointwise yes`, a 1x1 conv, as a MobileNet V1 block), checks
that they agree, times them alternately and writes OUTPUT.json and OUTPUT.md:

    python benchmarks/onnx_stacked_frames.py --output benchmarks/cpu2-xeon-onnx-stacked-frames
"""
import argparse
import datetime
import json
import os
import pathlib
import time

import numpy as np

# (frames, channels, height = width): MobileNet-like stages at 16x112x112
SHAPES = ((16, 96, 56), (8, 128, 28), (4, 384, 14))


def _model(nodes, initializers, input_shape, output_shape):
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "depthwise", [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _pointwise(nodes, initializers, pointwise, source, output):
    """A 1x1 conv of `source` into `output` where `pointwise` weights are given
    (a MobileNet V1 block), else `source` renamed."""
    from onnx import helper, numpy_helper

    if pointwise is None:
        nodes.append(helper.make_node("Identity", [source], [output]))
        return
    initializers.append(numpy_helper.from_array(pointwise, "pointwise"))
    nodes.append(helper.make_node("Conv", [source, "pointwise"], [output]))


def time_taps_graph(kernel, frames, height, pointwise=None):
    """The writer's formulation: the center tap reads the input, the others
    slices of it padded in time; the three convs are summed."""
    from onnx import helper, numpy_helper

    _, channels = kernel.shape[:2]
    shape = [frames, channels, height, height]
    initializers = [numpy_helper.from_array(kernel[j], f"k{j}") for j in range(3)]
    constants = {"split": [-1, frames, channels, height, height], "merge": [-1, channels, height, height],
                 "pads": [0, 1, 0, 0, 0, 0, 1, 0, 0, 0], "axis": [1],
                 "start0": [0], "end0": [frames], "start2": [2], "end2": [frames + 2]}
    initializers += [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in constants.items()]
    nodes = [helper.make_node("Reshape", ["x", "split"], ["x5"]), helper.make_node("Pad", ["x5", "pads"], ["padded"])]
    for j in (0, 2):
        nodes += [helper.make_node("Slice", ["padded", f"start{j}", f"end{j}", "axis"], [f"slice{j}"]),
                  helper.make_node("Reshape", [f"slice{j}", "merge"], [f"tap{j}"])]
    for j, tap in enumerate(("tap0", "x", "tap2")):
        nodes.append(helper.make_node("Conv", [tap, f"k{j}"], [f"term{j}"], group=channels, pads=[1, 1, 1, 1]))
    nodes += [helper.make_node("Add", ["term0", "term1"], ["sum"]), helper.make_node("Add", ["sum", "term2"], ["d"]),
              helper.make_node("Relu", ["d"], ["r"])]
    _pointwise(nodes, initializers, pointwise, "r", "y")
    return _model(nodes, initializers, shape, shape)


def stacked_graph(kernel, frames, height, pointwise=None):
    """Frames stacked in height, a zero row under each: three dilated convs,
    one per row of the spatial kernel, then the mask."""
    from onnx import helper, numpy_helper

    _, channels = kernel.shape[:2]
    rows = frames * (height + 1)
    mask = np.ones((1, 1, rows, 1), np.float32)
    mask[0, 0, height::height + 1] = 0
    initializers = [numpy_helper.from_array(mask, "mask")]
    nodes = []
    for row in (-1, 0, 1):  # the kernel row; the conv's kernel rows are the time taps
        weights = np.ascontiguousarray(kernel[:, :, 0, 1 + row, :].transpose(1, 0, 2)[:, None])
        initializers.append(numpy_helper.from_array(weights, f"k{row}"))
        nodes.append(helper.make_node("Conv", ["x", f"k{row}"], [f"term{row}"], group=channels,
                                      dilations=[height + 1, 1], pads=[height + 1 - row, 1, height + 1 + row, 1]))
    nodes += [helper.make_node("Add", ["term-1", "term0"], ["sum"]), helper.make_node("Add", ["sum", "term1"], ["d"]),
              helper.make_node("Relu", ["d"], ["r"])]
    _pointwise(nodes, initializers, pointwise, "r", "p")
    nodes.append(helper.make_node("Mul", ["p", "mask"], ["y"]))
    shape = [1, channels, rows, height]
    return _model(nodes, initializers, shape, shape)


def stack(clip):
    """`(T, C, H, W)` frames as `(1, C, T*(H+1), W)`, a zero row under each."""
    frames, channels, height, width = clip.shape
    padded = np.concatenate([clip, np.zeros((frames, channels, 1, width), clip.dtype)], axis=2)
    return padded.transpose(1, 0, 2, 3).reshape(1, channels, frames * (height + 1), width)


def unstack(stacked, frames):
    _, channels, rows, width = stacked.shape
    return stacked.reshape(channels, frames, rows // frames, width)[:, :, :-1].transpose(1, 0, 2, 3)


def measure(shapes, threads, calls, rounds, pointwise=False, seed=0):
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    rows = []
    for frames, channels, height in shapes:
        kernel = rng.standard_normal((3, channels, 1, 3, 3)).astype(np.float32)
        clip = rng.standard_normal((frames, channels, height, height)).astype(np.float32)
        weights = rng.standard_normal((channels, channels, 1, 1)).astype(np.float32) / channels**0.5 \
            if pointwise else None
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        sessions = {name: (ort.InferenceSession(build(kernel, frames, height, weights).SerializeToString(), options,
                                                providers=["CPUExecutionProvider"]), feed)
                    for name, build, feed in (("time taps", time_taps_graph, clip),
                                              ("stacked frames", stacked_graph, stack(clip)))}
        outputs = {name: session.run(None, {"x": feed})[0] for name, (session, feed) in sessions.items()}
        difference = float(np.abs(unstack(outputs["stacked frames"], frames) - outputs["time taps"]).max())
        times = {name: [] for name in sessions}
        for _ in range(rounds):  # alternated, so that both see the same moments of the machine
            for name, (session, feed) in sessions.items():
                for _ in range(3):
                    session.run(None, {"x": feed})
                for _ in range(calls):
                    start = time.perf_counter()
                    session.run(None, {"x": feed})
                    times[name].append(time.perf_counter() - start)
        medians = {name: float(np.median(values)) * 1e3 for name, values in times.items()}
        rows.append({"frames": frames, "channels": channels, "size": height, "threads": threads, "pointwise": pointwise,
                     "median_ms": medians, "speedup": medians["time taps"] / medians["stacked frames"],
                     "max_abs_difference": difference, "max_abs_output": float(np.abs(outputs["time taps"]).max())})
    return rows


def render(result):
    lines = ["# A depthwise 3×3×3 conv in onnxruntime: time taps or stacked frames", "",
             f"- Command: `{result['command']}`", f"- Machine: {result['cpu']}; onnxruntime {result['onnxruntime']}",
             f"- Started {result['started_utc']}, git {result['git']}; 1-minute load {result['load_1min_before']:.2f} "
             f"before, {result['load_1min_after']:.2f} after",
             f"- {result['calls']} timed calls per formulation in each of {result['rounds']} alternating rounds; "
             "median. One stride-1 depthwise conv (padding 1) and a ReLU, then, in the rows marked so, a 1×1 conv "
             "to as many channels (a MobileNet V1 block).", "",
             "| T × C × H × W | then 1×1 conv | threads | time taps, ms | stacked frames, ms | speedup | "
             "max abs difference |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in result["rows"]:
        lines.append(f"| {row['frames']} × {row['channels']} × {row['size']} × {row['size']} | "
                     f"{'yes' if row['pointwise'] else 'no'} | {row['threads']} | "
                     f"{row['median_ms']['time taps']:.3f} | {row['median_ms']['stacked frames']:.3f} | "
                     f"{row['speedup']:.2f}× | {row['max_abs_difference']:.1e} (of {row['max_abs_output']:.0f}) |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    import sys

    import onnxruntime

    from keras_r3d.benchmark import cpu_model, git_commit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="OUTPUT.json and OUTPUT.md")
    parser.add_argument("--threads", default="1,2", help="onnxruntime intra-op threads, comma-separated")
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--pointwise", default="no,yes",
                        help="without and/or with a 1x1 conv after the depthwise conv: no, yes or no,yes")
    parser.add_argument("--shapes", default=";".join(",".join(map(str, s)) for s in SHAPES),
                        help="frames,channels,size;... (size: height = width)")
    args = parser.parse_args(argv)
    shapes = [tuple(int(v) for v in item.split(",")) for item in args.shapes.split(";")]
    started, load_before = datetime.datetime.now(datetime.timezone.utc), os.getloadavg()[0]
    rows = [row for pointwise in args.pointwise.split(",") for threads in args.threads.split(",")
            for row in measure(shapes, int(threads), args.calls, args.rounds, pointwise == "yes")]
    result = {"command": " ".join(["python", "benchmarks/onnx_stacked_frames.py"] + (argv or sys.argv[1:])),
              "cpu": cpu_model(), "onnxruntime": onnxruntime.__version__, "git": git_commit(),
              "started_utc": started.strftime("%Y-%m-%dT%H:%M:%SZ"), "load_1min_before": load_before,
              "load_1min_after": os.getloadavg()[0], "calls": args.calls, "rounds": args.rounds, "rows": rows}
    output = pathlib.Path(args.output)
    output.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    output.with_suffix(".md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
