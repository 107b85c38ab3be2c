"""Writes a zoo model straight to ONNX, channels-first, in one of two layouts.

tf2onnx translates the TF graph of the NDHWC model: it wraps every per-frame
conv in NHWC<->NCHW transposes that the per-frame reshapes keep from
cancelling, and pads explicitly. On 2 CPU cores onnxruntime then spent only
20-32 % of its time in the convs (benchmarks/cpu2-onnxruntime-op-profile.md).

This writer walks the Keras graph instead and keeps every activation as
`(N*T, C, H, W)`: each frame a batch entry, channels first, onnxruntime's
native layout. A conv is then a 2D `Conv` (spatial padding as its `pads`), or
a sum of 2D convs over time slices for temporal kernels (the "frames" lowering
of `keras_r3d.layers`), with the same weights. Moving between `(N*T, ...)` and
`(N, T, ...)` is a free reshape, so the graph transposes only the input, in
the channel shuffles, and for a `Permute` or a `Flatten` (C3D's head).

That is the "frames" layout, for onnxruntime. The "ncdhw" layout keeps
every activation as `(N, C, T, H, W)` and each conv as one 3D `Conv` (pools as
3D pools): as PyTorch exports the official models, and what OpenVINO's 3D
convs are fast on (README.md, "Benchmarks"), where onnxruntime's are slow.

It supports the layers of the zoo (`SUPPORTED`); `UnsupportedLayer` names any
other. Fold the BatchNorms first (`fold_batch_norm`); unfolded ones become
`BatchNormalization` nodes.
"""
import keras
import numpy as np

from keras_r3d import layers as r3d_layers
from keras_r3d import runtimes

LAYOUTS = ("frames", "ncdhw")
SUPPORTED = ("InputLayer", "Conv3D", "BatchNormalization", "ReLU", "Activation", "Add",
             "Concatenate", "ChannelShuffle", "ChannelSlice", "MaxPool3D", "AvgPool3D",
             "GlobalAveragePooling3D", "Dropout", "Identity", "Dense", "Flatten", "Permute",
             "ZeroChannelShortcut")
MIN_OPSET = 11  # Slice, Pad and Clip take their parameters as inputs


class UnsupportedLayer(ValueError):
    """A layer the writer cannot translate."""


class _Value:
    """An ONNX tensor name with the Keras tensor it holds, in one of three
    layouts: "frames" `(N*T, C, H, W)` or "ncdhw" `(N, C, T, H, W)` for the
    NDHWC `(N, T, H, W, C)`, or "keras" (as in Keras, for flat tensors and
    after a `Permute`). `per_frame`, when set, is
    `(source, layers)`: the value is `layers` (pointwise convs, activations)
    applied to `source` frame by frame, so they commute with time slicing."""

    def __init__(self, name, shape, layout):
        self.name, self.shape, self.layout = name, tuple(shape), layout
        self.per_frame = None

    @property
    def frames(self):
        return self.shape[1]

    @property
    def channels(self):
        return self.shape[-1]

    @property
    def channels_first(self):
        return self.layout in LAYOUTS


class _Graph:
    """Collects nodes and initializers with unique names."""

    def __init__(self, opset):
        import onnx

        self.onnx, self.opset = onnx, opset
        self.nodes, self.initializers, self._count = [], [], 0
        self.shapes = {}  # tensor name -> its ONNX shape, declared as value_info
        self._constants = {}  # key -> name, for weights emitted more than once
        self._splits = {}  # "frames" value name -> its `(N, T, C, H, W)` tensor

    def name(self, hint):
        self._count += 1
        return f"{hint}_{self._count}"

    def constant(self, hint, value, dtype=np.float32):
        name = self.name(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def weight(self, name, value):
        """The float32 initializer `name`, emitted once however often it is used."""
        if name not in self._constants:
            self._constants[name] = self.constant(name, value)
        return self._constants[name]

    def op(self, op_type, inputs, hint, **attributes):
        output = self.name(hint)
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [output], name=output,
                                                     **attributes))
        return output

    # -- layout moves (free reshapes but for the transposes)

    def split_time(self, value):
        """`(N, T, C, H, W)` of a "frames" value: the tensor it was merged
        from, or one Reshape per value."""
        if value.name not in self._splits:
            _, t, h, w, c = value.shape
            self._splits[value.name] = self.op(
                "Reshape", [value.name, self.constant("shape", [-1, t, c, h, w], np.int64)], "split_time")
        return self._splits[value.name]

    def merge_time(self, name, shape):
        """A "frames" value from `(N, T, C, H, W)` named `name`; `shape` is NDHWC."""
        _, _, h, w, c = shape
        merged = self.op("Reshape", [name, self.constant("shape", [-1, c, h, w], np.int64)],
                         "merge_time")
        self._splits[merged] = name  # its `split_time` is `name` itself
        return self.declare(_Value(merged, shape, "frames"))

    def prune(self, output):
        """Drops the nodes, initializers and shapes that `output` does not need
        (the full-length pointwise layers whose only reader took its time
        slices before them)."""
        needed = {output}
        kept = []
        for node in reversed(self.nodes):
            if needed.intersection(node.output):
                kept.append(node)
                needed.update(node.input)
        self.nodes = kept[::-1]
        self.initializers = [i for i in self.initializers if i.name in needed]
        self.shapes = {name: shape for name, shape in self.shapes.items() if name in needed}

    def declare(self, value):
        """Records the shape of a "frames" value, `(N*T, C, H, W)` with N*T a
        named dimension: onnxruntime cannot infer it through the reshapes, and
        without it does not fuse the sums of the time taps into the convs."""
        if value.layout == "frames":
            _, t, h, w, c = value.shape
            self.shapes[value.name] = [f"N*{t}", c, h, w]
        return value

    def five_d(self, value):
        """(the 5D tensor of a channels-first value, where NDHWC axes 0-4 lie in
        it): `(N, T, C, H, W)` of a "frames" value, an "ncdhw" value itself."""
        if value.layout == "frames":
            return self.split_time(value), (0, 1, 3, 4, 2)
        return value.name, (0, 2, 3, 4, 1)

    def from_five_d(self, name, shape, layout):
        """The `layout` value of the 5D tensor `name` (as `five_d` gives it)."""
        if layout == "frames":
            return self.merge_time(name, shape)
        return _Value(name, shape, layout)

    def to_keras(self, value):
        """The NDHWC tensor of a channels-first value."""
        if value.layout == "keras":
            return value
        name, axes = self.five_d(value)
        ndhwc = self.op("Transpose", [name], "to_ndhwc", perm=list(axes))
        return _Value(ndhwc, value.shape, "keras")

    def time_taps(self, value, window, stride, padding, output_shifts=False):
        """[(tap, `(N*T', C, H, W)`: per output frame, the frame that tap reads,
        shift)] of a temporal window over a "frames" value, zero-padded in time
        (`keras_r3d.layers.temporal_taps`: taps that read only padding are left
        out, as the "frames" lowering does). A tap that reads every frame in
        order is the value itself. Every tap covers every output frame, so
        onnxruntime fuses the sum of the per-tap convs into them.

        A time slice, a pad and their layout reorders in onnxruntime cost a copy
        each, so they are taken where the tensor is smallest (README.md,
        "Benchmarks"): a strided tap slices only the frames it reads, then pads;
        where the value is an expansion (`per_frame`, 4x the channels or more),
        it slices the narrower source and reapplies the pointwise layers to the
        slice; and with `output_shifts` (for a conv whose output is smaller
        than its input by its spatial stride), a strided tap that reads padding
        and then another tap's frames `shift` output frames later (earlier if
        < 0) comes as those frames with that `shift`, for the caller to shift
        the conv's output (`shift_time`). Without a stride the output is as
        large as the input: slicing the input is cheaper there."""
        t = value.frames
        taps = r3d_layers.temporal_taps(t, window, stride, padding)
        real = {j: reads for j, reads in taps if all(0 <= r < t for r in reads)}
        frames, padded = {}, None
        result = []
        for j, reads in taps:
            source, shift = j, 0  # the tap whose frames `j` reads, `shift` output frames apart
            if reads == list(range(t)):
                frames[j] = value.name
            elif stride > 1:
                if output_shifts:
                    source, shift = _partner(j, reads, real, stride, t) or (j, 0)
                if source not in frames:
                    frames[source] = self._strided_tap(value, real.get(source, reads), stride)
            else:
                split = self.split_time(value)
                if all(0 <= r < t for r in reads):
                    whole, start = split, reads[0]
                else:
                    if padded is None:
                        pads = [0, padding, 0, 0, 0, 0, padding, 0, 0, 0]
                        padded = self.op("Pad", [split, self.constant("pads", pads, np.int64)], "pad_time")
                    whole, start = padded, reads[0] + padding
                frames[j] = self.time_slice(whole, start, len(reads), stride, value.shape).name
            result.append((j, frames[source], shift))
        return result

    def shift_time(self, value, shift):
        """`value` moved `shift` frames later (earlier if < 0) in time, zero
        frames in and as many frames out."""
        t, n = value.frames, abs(shift)
        kept = self.time_slice(self.split_time(value), 0 if shift > 0 else n, t - n, 1, value.shape)
        pads = [0, n, 0, 0, 0, 0, 0, 0, 0, 0] if shift > 0 else [0, 0, 0, 0, 0, 0, n, 0, 0, 0]
        padded = self.op("Pad", [self.split_time(kept), self.constant("pads", pads, np.int64)], "shift_time")
        return self.merge_time(padded, value.shape)

    def time_slice(self, split, start, count, stride, shape):
        """The "frames" value of `count` frames from `start` by `stride` of the
        `(N, T, C, H, W)` tensor `split` (NDHWC `shape`)."""
        end = start + stride * (count - 1) + 1
        sliced = self.op("Slice", [split, self.constant("starts", [start], np.int64),
                                   self.constant("ends", [end], np.int64),
                                   self.constant("axes", [1], np.int64),
                                   self.constant("steps", [stride], np.int64)], "time_slice")
        _, _, h, w, c = shape
        return self.merge_time(sliced, (None, count, h, w, c))

    def _strided_tap(self, value, reads, stride):
        """One strided tap of `time_taps`: the frames it reads, zero frames
        where it reads padding."""
        t = value.frames
        real = [r for r in reads if 0 <= r < t]
        source, layers = value.per_frame or (value, ())
        if source.channels * 4 > value.channels:
            source, layers = value, ()
        tap = self.time_slice(self.split_time(source), real[0], len(real), stride, source.shape)
        for layer in layers:
            tap = _per_frame_layer(self, layer, tap)
        before, after = sum(r < 0 for r in reads), sum(r >= t for r in reads)
        if not (before or after):
            return tap.name
        pads = [0, before, 0, 0, 0, 0, after, 0, 0, 0]
        padded = self.op("Pad", [self.split_time(tap), self.constant("pads", pads, np.int64)], "pad_time")
        _, _, h, w, c = value.shape
        return self.merge_time(padded, (None, len(reads), h, w, c)).name

    def total(self, names, hint, op_type="Add"):
        """`names` combined pairwise by `op_type` ("Add" or "Max")."""
        out = names[0]
        for name in names[1:]:
            out = self.op(op_type, [out, name], hint)
        return out


def _input(graph, contract, raw_input, input_dtype, layout):
    """The graph input and the normalized `layout` value it becomes, as
    `keras_r3d.preprocess` normalizes: uint8 or float32 pixels `(N, T, S, S, 3)`,
    or already normalized float32 with `raw_input`."""
    frames, size = contract.frames, contract.size
    dtype = "float32" if raw_input else input_dtype
    types = {"uint8": graph.onnx.TensorProto.UINT8, "float32": graph.onnx.TensorProto.FLOAT}
    if dtype not in types:
        raise ValueError(f"input_dtype must be 'uint8' or 'float32', got {input_dtype!r}")
    spec = graph.onnx.helper.make_tensor_value_info(runtimes.INPUT_NAME, types[dtype],
                                                    ["N", frames, size, size, 3])
    x = runtimes.INPUT_NAME
    if layout == "frames":  # transposed first: uint8 moves a quarter of the bytes
        x = graph.op("Transpose", [x], "channels_first", perm=[0, 1, 4, 2, 3])
        x = graph.op("Reshape", [x, graph.constant("shape", [-1, 3, size, size], np.int64)], "merge_time")
        channel_axis, per_channel = 1, lambda v: v.reshape(3, 1, 1)
    else:
        # Normalized as NDHWC, then transposed: OpenVINO merges that transpose
        # into the first conv's own reorder to channels-last, where a transpose
        # of the uint8 input costs a slow copy and a reorder (benchmarks/README.md,
        # "met with OpenVINO": MobileNetV1 1.0x 1.19x the clips/s without). Tiled
        # along the width, the constants broadcast over contiguous rows.
        channel_axis, per_channel = 4, lambda v: np.tile(v, (size, 1))
    if dtype == "uint8":
        x = graph.op("Cast", [x], "to_float", to=graph.onnx.TensorProto.FLOAT)
    if not raw_input:
        if contract.channel_order == "BGR":
            x = graph.op("Gather", [x, graph.constant("bgr", [2, 1, 0], np.int64)], "bgr", axis=channel_axis)
        scale, shift = contract.affine()
        if (scale != 1.0).any():
            x = graph.op("Mul", [x, graph.constant("scale", per_channel(scale))], "scale")
        if shift.any():
            x = graph.op("Add", [x, graph.constant("shift", per_channel(shift))], "shift")
    if layout == "ncdhw":
        x = graph.op("Transpose", [x], "channels_first", perm=[0, 4, 1, 2, 3])
    return spec, graph.declare(_Value(x, (None, frames, size, size, 3), layout))


def _conv(graph, layer, x, output_shape):
    kernel = keras.ops.convert_to_numpy(layer.kernel)  # (kt, kh, kw, in/groups, out)
    _, sh, sw = layer.strides
    _, ph, pw = layer.padding
    taps = graph.time_taps(x, layer.kernel_size[0], layer.strides[0], layer.padding[0],
                           output_shifts=sh * sw > 1)
    biased = next(j for j, _, shift in taps if not shift) if layer.use_bias else None
    terms = []
    # The shifted terms last: onnxruntime fuses the sum of the others into their convs.
    for j, frames, shift in sorted(taps, key=lambda tap: bool(tap[2])):
        inputs = [frames, graph.weight(f"{layer.name}_w{j}", kernel[j].transpose(3, 2, 0, 1))]
        if j == biased:
            inputs.append(graph.weight(f"{layer.name}_b", keras.ops.convert_to_numpy(layer.bias)))
        term = graph.op("Conv", inputs, layer.name, group=layer.groups, strides=[sh, sw],
                        pads=[ph, pw, ph, pw], kernel_shape=list(kernel.shape[1:3]))
        if shift:
            term = graph.shift_time(_Value(term, output_shape, "frames"), shift).name
        terms.append(term)
    return _Value(graph.total(terms, layer.name), output_shape, "frames")


def _conv_3d(graph, layer, x, output_shape):
    """An "ncdhw" conv: one 3D `Conv` with the layer's groups."""
    kernel = keras.ops.convert_to_numpy(layer.kernel)  # (kt, kh, kw, in/groups, out)
    inputs = [x.name, graph.weight(f"{layer.name}_w", kernel.transpose(4, 3, 0, 1, 2))]
    if layer.use_bias:
        inputs.append(graph.weight(f"{layer.name}_b", keras.ops.convert_to_numpy(layer.bias)))
    y = graph.op("Conv", inputs, layer.name, group=layer.groups, strides=list(layer.strides),
                 pads=list(layer.padding) * 2, kernel_shape=list(layer.kernel_size))
    return _Value(y, output_shape, "ncdhw")


def _partner(j, reads, real, stride, t):
    """(j2, shift) where tap `j` reads zero padding and then tap j2's frames
    `shift` output frames later (or earlier, < 0), of `t` frames; None if there
    is no such tap."""
    before, after = sum(r < 0 for r in reads), sum(r >= t for r in reads)
    for shift in (before, -after):
        j2 = j + stride * shift
        if shift and (before == 0 or after == 0) and j2 in real:
            return j2, shift
    return None


def _per_frame_layer(graph, layer, x):
    """`layer`, a pointwise conv or an activation, applied to the "frames"
    value `x`, with `per_frame` extended so that later time slices can be
    taken before it (`_Graph.time_taps`), from its narrowest point."""
    source, layers = x.per_frame or (x, ())
    if x.channels <= source.channels:
        source, layers = x, ()
    if isinstance(layer, r3d_layers.Conv3D):
        out = _conv(graph, layer, x, x.shape[:-1] + (layer.filters,))
    else:
        name = _activation(graph, layer, x)
        if name is None:
            return x
        out = _Value(name, x.shape, "frames")
    out.per_frame = (source, layers + (layer,))
    return graph.declare(out)


def _is_pointwise(layer):
    return all(tuple(v) == (1, 1, 1) for v in (layer.kernel_size, layer.strides)) \
        and tuple(layer.padding) == (0, 0, 0)


def _pool(graph, layer, x, output_shape, relu_outputs):
    """A pool: a 3D pool of an "ncdhw" value; of a "frames" value a 2D pool,
    then the max or mean of its time taps."""
    kt, kh, kw = layer.pool_size
    _, sh, sw = layer.strides
    pt, ph, pw = layer.padding
    is_max = isinstance(layer, r3d_layers.MaxPool3D)
    padded = any(layer.padding) if x.layout == "ncdhw" else ph or pw  # "frames" pads time itself
    if is_max and padded and x.name not in relu_outputs:
        raise UnsupportedLayer(f"{layer.name}: a padded max pool must follow a ReLU "
                               "(ONNX pads max pools with -inf, the layer with zeros)")
    op_type = "MaxPool" if is_max else "AveragePool"
    extra = {} if is_max else {"count_include_pad": 1}
    if x.layout == "ncdhw":
        pooled = graph.op(op_type, [x.name], layer.name, kernel_shape=list(layer.pool_size),
                          strides=list(layer.strides), pads=list(layer.padding) * 2, **extra)
        return _Value(pooled, output_shape, "ncdhw")
    pooled = graph.op(op_type, [x.name], layer.name, kernel_shape=[kh, kw], strides=[sh, sw],
                      pads=[ph, pw, ph, pw], **extra)
    _, _, h, w, c = output_shape
    spatial = _Value(pooled, (None, x.frames, h, w, c), "frames")
    # Zero padding in time, as the layer pads (and ONNX MaxPool does not).
    taps = [frames for _, frames, _ in graph.time_taps(spatial, kt, layer.strides[0], pt)]
    out = graph.total(taps, layer.name, "Max" if is_max else "Add")
    if not is_max and kt > 1:  # skipped padding taps are zeros: divide by the whole window
        out = graph.op("Mul", [out, graph.constant("inv_window", np.float32(1.0 / kt))], layer.name)
    return _Value(out, output_shape, "frames")


def _activation(graph, layer, x):
    """Relu, or Clip for ReLU6 (a `ReLU` or an `Activation` layer); None for
    a linear activation."""
    config = layer.get_config()
    if isinstance(layer, keras.layers.Activation):
        name = config["activation"]
        if name == "linear":
            return None
        if name not in ("relu", "relu6"):
            raise UnsupportedLayer(f"{layer.name}: activation {name!r}")
        max_value, plain = (6.0 if name == "relu6" else None), True
    else:
        max_value = config.get("max_value")
        plain = not config.get("negative_slope") and not config.get("threshold")
    if not plain:
        raise UnsupportedLayer(f"{layer.name}: only ReLU and ReLU6-style clipping are supported")
    if max_value is None:
        return graph.op("Relu", [x.name], layer.name)
    return graph.op("Clip", [x.name, graph.weight("clip_min", 0.0),
                             graph.weight(f"clip_max_{max_value:g}", max_value)], layer.name)


def _layer(graph, layer, inputs, output_shape, relu_outputs):
    """The `_Value` of `layer` applied to `inputs`."""
    kind = type(layer).__name__
    x = inputs[0]
    frames = x.layout == "frames"
    if kind in ("Dropout", "Identity"):
        return x
    if kind == "Conv3D" and x.layout == "ncdhw":
        return _conv_3d(graph, layer, x, output_shape)
    if kind == "Conv3D" and frames:
        if _is_pointwise(layer):
            return _per_frame_layer(graph, layer, x)
        return _conv(graph, layer, x, output_shape)
    if kind in ("MaxPool3D", "AvgPool3D") and x.channels_first:
        return _pool(graph, layer, x, output_shape, relu_outputs)
    if kind in ("ReLU", "Activation"):
        if x.per_frame:
            out = _per_frame_layer(graph, layer, x)
        else:
            name = _activation(graph, layer, x)
            out = x if name is None else _Value(name, output_shape, x.layout)
        if out is not x:
            relu_outputs.add(out.name)
        return out
    channels_last = layer.axis in (-1, len(x.shape) - 1) if kind == "BatchNormalization" else False
    if channels_last and (x.channels_first or len(x.shape) == 2):  # an unfolded BatchNormalization
        weights = {w.path.rsplit("/", 1)[-1]: keras.ops.convert_to_numpy(w) for w in layer.weights}
        c = x.channels
        names = [graph.constant(f"{layer.name}_{key}", weights.get(key, default))
                 for key, default in (("gamma", np.ones(c)), ("beta", np.zeros(c)),
                                      ("moving_mean", None), ("moving_variance", None))]
        out = graph.op("BatchNormalization", [x.name] + names, layer.name, epsilon=float(layer.epsilon))
        return _Value(out, output_shape, x.layout)
    if kind in ("Add", "Concatenate"):
        layouts = {v.layout for v in inputs}
        if len(layouts) > 1:
            inputs = [graph.to_keras(v) for v in inputs]
        names = [v.name for v in inputs]
        if kind == "Add":
            return _Value(graph.total(names, layer.name), output_shape, inputs[0].layout)
        axis = layer.axis % len(output_shape)
        if inputs[0].channels_first:
            if axis != len(output_shape) - 1:
                raise UnsupportedLayer(f"{layer.name}: concatenation along axis {layer.axis}")
            axis = 1
        return _Value(graph.op("Concat", names, layer.name, axis=axis), output_shape, inputs[0].layout)
    if kind == "ChannelShuffle" and x.channels_first:
        _, t, h, w, c = x.shape
        g = layer.groups
        positions = h * w if frames else t * h * w
        y = graph.op("Reshape", [x.name, graph.constant("shape", [-1, g, c // g, positions], np.int64)],
                     layer.name)
        y = graph.op("Transpose", [y], layer.name, perm=[0, 2, 1, 3])
        shape = [-1, c, h, w] if frames else [-1, c, t, h, w]
        y = graph.op("Reshape", [y, graph.constant("shape", shape, np.int64)], layer.name)
        return graph.declare(_Value(y, output_shape, x.layout))
    if kind == "ChannelSlice" and x.channels_first:
        y = graph.op("Slice", [x.name, graph.constant("starts", [layer.start], np.int64),
                               graph.constant("ends", [layer.stop], np.int64),
                               graph.constant("axes", [1], np.int64)], layer.name)
        return _Value(y, output_shape, x.layout)
    if kind == "ZeroChannelShortcut" and x.channels_first:
        s = layer.stride
        name, axes = graph.five_d(x)
        y = graph.op("Slice", [name, graph.constant("starts", [0, 0, 0], np.int64),
                               graph.constant("ends", [2**62] * 3, np.int64),
                               graph.constant("axes", axes[1:4], np.int64),
                               graph.constant("steps", [s, s, s], np.int64)], layer.name)
        extra = layer.filters - x.channels
        if extra:
            pads = [0] * 10
            pads[5 + axes[4]] = extra
            y = graph.op("Pad", [y, graph.constant("pads", pads, np.int64)], layer.name)
        return graph.from_five_d(y, output_shape, x.layout)
    if kind == "GlobalAveragePooling3D" and x.channels_first and not layer.keepdims:
        name, axes = graph.five_d(x)
        axes = list(axes[1:4])
        if graph.opset >= 18:  # axes became an input
            y = graph.op("ReduceMean", [name, graph.constant("axes", axes, np.int64)],
                         layer.name, keepdims=0)
        else:
            y = graph.op("ReduceMean", [name], layer.name, axes=axes, keepdims=0)
        return _Value(y, output_shape, "keras")
    if kind == "Permute":
        if x.channels_first:  # one transpose of its 5D tensor
            name, axes = graph.five_d(x)
            y = graph.op("Transpose", [name], layer.name, perm=[0] + [axes[d] for d in layer.dims])
        else:
            y = graph.op("Transpose", [x.name], layer.name, perm=[0] + list(layer.dims))
        return _Value(y, output_shape, "keras")
    if kind == "Flatten":
        x = graph.to_keras(x)
        y = graph.op("Flatten", [x.name], layer.name, axis=1)
        return _Value(y, output_shape, "keras")
    if kind == "Dense" and len(x.shape) == 2:
        inputs = [x.name, graph.constant(f"{layer.name}_w", keras.ops.convert_to_numpy(layer.kernel))]
        y = graph.op("MatMul", inputs, layer.name)
        if layer.use_bias:
            y = graph.op("Add", [y, graph.constant(f"{layer.name}_b",
                                                   keras.ops.convert_to_numpy(layer.bias))], layer.name)
        activation = layer.get_config()["activation"]
        if activation == "relu":
            y = graph.op("Relu", [y], layer.name)
        elif activation == "softmax":  # classifier_activation="softmax"
            y = graph.op("Softmax", [y], layer.name, axis=1)
        elif activation != "linear":
            raise UnsupportedLayer(f"{layer.name}: Dense activation {activation!r}")
        return _Value(y, output_shape, "keras")
    raise UnsupportedLayer(f"Layer {layer.name!r} ({kind}) on a {x.layout} tensor of shape "
                           f"{x.shape} is not supported by the ONNX writer")


def model_proto(model, contract=None, *, opset, raw_input=False, input_dtype="uint8", layout="frames"):
    """The ONNX `ModelProto` of `model`: frames `(N, T, S, S, 3)` in, normalized
    in the graph by `contract` (a Preprocessing; default: the model's), logits out.

    Args:
        opset: the ONNX opset (`keras_r3d.export` chooses it).
        raw_input: take normalized float32 input instead.
        input_dtype: "uint8" frames, or "float32" pixel values 0..255.
        layout: "frames" (for onnxruntime) or "ncdhw" (for OpenVINO); see the
            module doc.
    Raises:
        UnsupportedLayer: for a layer, layout or opset outside the writer's.
    """
    import onnx

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if opset < MIN_OPSET:
        raise UnsupportedLayer(f"the ONNX writer needs opset >= {MIN_OPSET}, got {opset}")
    contract = contract or model.preprocessing
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UnsupportedLayer("the ONNX writer takes models with one input and one output")
    graph = _Graph(opset)
    spec, value = _input(graph, contract, raw_input, input_dtype, layout)
    values = {id(model.inputs[0]): value}
    relu_outputs = set()
    for layer in model.layers:
        if type(layer).__name__ not in SUPPORTED:
            raise UnsupportedLayer(f"Layer {layer.name!r} ({type(layer).__name__}) is not supported "
                                   f"by the ONNX writer; it supports {', '.join(SUPPORTED)}")
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if len(layer._inbound_nodes) != 1:
            raise UnsupportedLayer(f"Layer {layer.name!r} is called {len(layer._inbound_nodes)} times")
        node = layer._inbound_nodes[0]
        inputs = [values[id(t)] for t in node.input_tensors]
        output = node.output_tensors[0]
        values[id(output)] = _layer(graph, layer, inputs, tuple(output.shape), relu_outputs)
    logits = values[id(model.outputs[0])]
    if logits.layout != "keras" or len(logits.shape) != 2:
        raise UnsupportedLayer(f"the model's output must be (N, classes), got {logits.shape}")
    graph.nodes.append(onnx.helper.make_node("Identity", [logits.name], [runtimes.OUTPUT_NAME]))
    graph.prune(runtimes.OUTPUT_NAME)
    float32 = onnx.TensorProto.FLOAT
    onnx_graph = onnx.helper.make_graph(
        graph.nodes, model.name, [spec],
        [onnx.helper.make_tensor_value_info(runtimes.OUTPUT_NAME, float32, ["N", logits.shape[-1]])],
        graph.initializers,
        value_info=[onnx.helper.make_tensor_value_info(name, float32, shape)
                    for name, shape in graph.shapes.items()])
    opsets = [onnx.helper.make_opsetid("", opset)]
    # The IR version of the opset, not the onnx package's newest: older runtimes
    # (onnxruntime 1.10 for JetPack 4.6's Python 3.6, IR 8 at most) refuse newer ones.
    proto = onnx.helper.make_model(onnx_graph, opset_imports=opsets, producer_name="keras_r3d",
                                   ir_version=onnx.helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(proto)
    return proto
