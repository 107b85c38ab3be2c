"""The zoo's few building blocks: fast on each backend, exportable under TF.

Every layer keeps one weight layout (Keras `Conv3D`'s `(kt, kh, kw, in/groups,
out)`) and chooses its computation when it is traced:

* "native": `ops.conv` / `ops.max_pool` on 5D tensors. Fastest on JAX and
  PyTorch, where grouped 3D convolution is a native kernel.
* "frames": sums of 2D ops over strided time slices (minus the slices that
  read only time padding, as in the 1-2 frame late stages). TF's CPU grouped Conv3D is
  about 10x slower than dense, and TFLite/ONNX cannot convert it, nor 3D pools;
  2D convs, depthwise convs and pools are builtins everywhere (int8 included).
* "taps": a depthwise conv as the sum of its kt*kh*kw shifted, strided views
  times per-channel weights (accumulated in float32), which XLA fuses into one
  memory-bound kernel; the rest native. cuDNN's depthwise 3D conv is the slow
  part of the zoo on GPUs.
* "taps_matmul": "taps", and 1x1x1 convs, grouped too, as matrix products.
  Dense convs stay native: the RGB stem as one matmul over its concatenated
  patches ran 1.2-1.6x slower than cuDNN's conv on an H100
  (benchmarks/gpu_stem_h100_*.json).
* "s2d": "taps_matmul", with the RGB stems (dense, strided 2 over H and W,
  at most 4 input channels) as stride-1 convs over 2x2 pixel blocks
  (`space_to_depth_conv`): cuDNN's 3-channel 3D conv ran at under 1 % of an
  H100's bf16 peak. In 16-bit floats on a GPU the blocks are padded from 12
  to 16 channels for the tensor cores (`tensor_core_channels`).
* "pallas": "s2d", with the stride-1 depthwise 3D convs as a Pallas kernel
  (`keras_r3d.gpu_kernels`; JAX only: Triton on an NVIDIA GPU, the interpreter
  elsewhere).

"auto" picks "frames" for grouped convs and pools on the TF backend, "s2d" on
JAX's CPU (2.4-10x "frames" there: benchmarks/cpu2-zen5-jax-layers*.md),
"taps_matmul" on JAX's GPU (1.4-1.8x the cuDNN lowering of the ShuffleNets and
MobileNets: benchmarks/h200-run2-b8-fp32.md), and "native" on PyTorch. On TF
a padded dense conv is one native Conv3D with "same" padding where that
equals its symmetric padding, and 2D convs otherwise
(`Conv3D._dense_lowering`). `with implementation("frames"):` forces 2D ops everywhere,
dense 3D convs included, which is what a full-int8 TFLite export needs.
Padding is explicit and symmetric, as in PyTorch, never Keras "same".
"""
import contextlib
import contextvars
import math

import keras
import numpy as np
from keras import ops

PACKAGE = "keras_r3d"
# Every tensor here is channels last, whatever keras.config.image_data_format() says.
LAYOUT = "channels_last"
IMPLEMENTATIONS = ("auto", "native", "frames", "taps", "taps_matmul", "s2d", "pallas")
_implementation = contextvars.ContextVar("keras_r3d_implementation", default="auto")


@contextlib.contextmanager
def implementation(name):
    """Chooses how the zoo's layers are traced inside the `with` block: one of
    IMPLEMENTATIONS (module doc). A zoo model's `fit`, `evaluate` and `predict`
    trace again when it differs from their last trace's. It holds in the
    calling thread (and asyncio task) only: other threads trace with "auto"."""
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {name!r}")
    if why := unavailable(name):
        raise ValueError(why)
    token = _implementation.set(name)
    try:
        yield
    finally:
        _implementation.reset(token)


def current_implementation():
    """The implementation in force here ("auto" unless `implementation` set one)."""
    return _implementation.get()


def unavailable(name):
    """Why implementation `name` cannot run on this Keras backend; None if it can."""
    if name == "pallas" and keras.backend.backend() != "jax":
        return f'implementation "pallas" needs the JAX backend, not {keras.backend.backend()}'
    return None


def _lowering():
    """The implementation in force, with "auto" resolved for this backend."""
    choice = _implementation.get()
    if choice != "auto":
        return choice
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return "frames"
    if backend == "jax":
        import jax

        return "s2d" if jax.default_backend() == "cpu" else "taps_matmul"
    return "native"


JIT_COMPILE_CHOICES = ("auto", "true", "false")


def jit_compile(choice):
    """Whether a step is XLA-compiled (`jit_compile`) for a flag value of
    JIT_COMPILE_CHOICES. "auto": on TF where it sees a GPU, not on CPU only,
    where XLA ran the zoo 2.8-4.4x slower at inference
    (benchmarks/cpu2-tf-xla-vs-graph.md) and the demo recipe 2.5x slower in
    training, though not every model and input (README, "Train and evaluate");
    JAX always compiles; torch runs eager."""
    if choice != "auto":
        return choice == "true"
    if keras.backend.backend() != "tensorflow":
        return keras.backend.backend() == "jax"
    return _on_gpu()


def _uses_frames(dense=False):
    """True if a layer should lower to 2D ops; `dense` for ungrouped convs,
    which "auto" keeps native (TF's dense Conv3D is fast)."""
    if _lowering() != "frames":
        return False
    return not dense or _implementation.get() == "frames"


def _triple(value, name):
    if isinstance(value, int):
        return (value,) * 3
    value = tuple(int(v) for v in value)
    if len(value) != 3:
        raise ValueError(f"{name} must be an int or 3 ints, got {value!r}")
    return value


def _pad(x, padding, value=0.0):
    if not any(padding):
        return x
    pads = [(0, 0)] + [(p, p) for p in padding] + [(0, 0)]
    return ops.pad(x, pads, constant_values=value)


def temporal_taps(frames, window, stride, padding):
    """[(tap j, the input frame each output frame reads through it)] of a
    temporal window over `frames` frames zero-padded by `padding` on each side
    (a read < 0 or >= `frames` is padding), for the taps that read at least one
    real frame. An all-padding tap adds zeros: skipping it saves ops and, in
    int8, a constant-zero tensor (scale 0, which XNNPACK refuses)."""
    t_out = (frames + 2 * padding - window) // stride + 1
    if t_out < 1:
        raise ValueError(f"{frames + 2 * padding} frames (after padding) are fewer than the window {window}")
    reads = [[j - padding + stride * k for k in range(t_out)] for j in range(window)]
    return [(j, r) for j, r in enumerate(reads) if any(0 <= i < frames for i in r)]


def _time_slices(x, window, stride, padding):
    """(j, the strided time slice of the `padding`-padded `x` that tap j reads)
    for the taps of `temporal_taps`."""
    taps = temporal_taps(x.shape[1] - 2 * padding, window, stride, padding)
    return [(j, x[:, j : j + stride * (len(reads) - 1) + 1 : stride]) for j, reads in taps]


def _output_size(layer, input_shape, window):
    """(T, H, W) after a padded, strided window; a clear error if it vanishes."""
    size = []
    for n, k, s, p in zip(input_shape[1:4], window, layer.strides, layer.padding):
        if n is not None and n + 2 * p < k:
            raise ValueError(
                f"Layer {layer.name!r}: input (T, H, W) = {tuple(input_shape[1:4])} is too small "
                f"for window {window} with padding {layer.padding}")
        size.append(None if n is None else (n + 2 * p - k) // s + 1)
    return size


def depthwise_taps(x, kernel, strides):
    """The "taps" depthwise conv of a padded NDHWC `x` with a `(kt, kh, kw, C)`
    kernel: the sum of each tap's strided view times its per-channel weights,
    accumulated in float32."""
    kernel = ops.cast(kernel, "float32")
    size = [(n - k) // s + 1 for n, k, s in zip(x.shape[1:4], kernel.shape[:3], strides)]
    out = None
    for offset in np.ndindex(*kernel.shape[:3]):
        view = x[(slice(None),) + tuple(slice(o, o + s * (n - 1) + 1, s) for o, s, n in zip(offset, strides, size))]
        term = ops.cast(view, "float32") * kernel[offset]
        out = term if out is None else out + term
    return ops.cast(out, x.dtype)


def space_to_depth(x):
    """(N, T, H, W, C) -> (N, T, H/2, W/2, 4C): each 2x2 pixel block as channels
    (p, q, c), after zero-padding an odd H or W by one."""
    t, h, w, channels = x.shape[1:]
    x = ops.pad(x, [(0, 0), (0, 0), (0, h % 2), (0, w % 2), (0, 0)])
    x = ops.reshape(x, (-1, t, (h + 1) // 2, 2, (w + 1) // 2, 2, channels))
    return ops.reshape(ops.transpose(x, (0, 1, 2, 4, 3, 5, 6)), (-1, t, (h + 1) // 2, (w + 1) // 2, 4 * channels))


def space_to_depth_kernel(kernel):
    """A (kt, kh, kw, C, F) kernel strided 2 over H and W as the stride-1 kernel
    over `space_to_depth` blocks: tap (a, b) holds taps (2a + p, 2b + q), zero
    past the edge."""
    kt, kh, kw, channels, filters = kernel.shape
    kh2, kw2 = (kh + 1) // 2, (kw + 1) // 2
    kernel = ops.pad(kernel, [(0, 0), (0, 2 * kh2 - kh), (0, 2 * kw2 - kw), (0, 0), (0, 0)])
    kernel = ops.reshape(kernel, (kt, kh2, 2, kw2, 2, channels, filters))
    return ops.reshape(ops.transpose(kernel, (0, 1, 3, 2, 4, 5, 6)), (kt, kh2, kw2, 4 * channels, filters))


def space_to_depth_conv(x, kernel, strides, channel_multiple=1):
    """A dense conv of a padded NDHWC `x`, strided 2 over H and W, as a conv
    over 2x2 pixel blocks: 4x the channels, a quarter of the positions, the
    same output. The blocks are zero-padded to a multiple of
    `channel_multiple` channels."""
    if tuple(strides[1:]) != (2, 2):
        raise ValueError(f"space_to_depth_conv needs strides (t, 2, 2), got {tuple(strides)}")
    _, kh, kw = kernel.shape[:3]
    h, w = x.shape[2:4]
    blocks, kernel = space_to_depth(x), space_to_depth_kernel(kernel)
    extra = -blocks.shape[-1] % channel_multiple
    if extra:
        blocks = ops.pad(blocks, [(0, 0)] * 4 + [(0, extra)])
        kernel = ops.pad(kernel, [(0, 0)] * 3 + [(0, extra), (0, 0)])
    y = ops.conv(blocks, kernel, strides=(strides[0], 1, 1), padding="valid", data_format=LAYOUT)
    return y[:, :, : (h - kh) // 2 + 1, : (w - kw) // 2 + 1]


def tensor_core_channels(dtype):
    """The channel multiple that a GPU's tensor-core convs want for `dtype`:
    8 for 16-bit floats on a GPU (rows of 16 bytes; XLA pads only float16
    convs for them, and cuDNN's bfloat16 3-channel stem ran at under 1 % of
    an H100's peak), else 1. float32 (TF32) needs 4, which an RGB clip's
    12-channel blocks already have."""
    if keras.backend.standardize_dtype(dtype) not in ("bfloat16", "float16"):
        return 1
    return 8 if _on_gpu() else 1


def _on_gpu():
    """Whether this Keras backend computes on a GPU."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.default_backend() == "gpu"
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    return False


def _per_frame(fn, x):
    """Applies a 2D op to every frame of (N, T, H, W, C)."""
    t = x.shape[1]
    y = fn(ops.reshape(x, (-1,) + tuple(x.shape[2:])))
    return ops.reshape(y, (-1, t) + tuple(y.shape[1:]))


@keras.saving.register_keras_serializable(PACKAGE)
class FanOutNormal(keras.initializers.Initializer):
    """PyTorch's `kaiming_normal_(mode="fan_out")`, the official conv init.

    Drawn with numpy (seeded by `keras.utils.set_random_seed`): on JAX a
    backend draw compiles once per kernel shape, which made building a model
    take 15 s instead of 1 s.
    """

    def __call__(self, shape, dtype=None):
        fan_out = math.prod(shape[:-2]) * shape[-1]
        rng = np.random.default_rng(np.random.randint(2**31))  # follows the global seed
        value = rng.standard_normal(shape, dtype=np.float32) * np.float32(math.sqrt(2.0 / fan_out))
        return ops.convert_to_tensor(value, dtype=dtype or "float32")


class GroupsMismatch(ValueError):
    """A grouped conv whose channels its groups do not divide."""


@keras.saving.register_keras_serializable(PACKAGE)
class Conv3D(keras.layers.Layer):
    """3D convolution with symmetric zero padding and any number of groups.

    `groups == in_channels == filters` is a depthwise conv. The kernel has
    Keras `Conv3D(groups=...)`'s shape `(kt, kh, kw, in/groups, filters)`,
    which is PyTorch's `(out, in/groups, kt, kh, kw)` transposed.
    """

    def __init__(self, filters, kernel_size, strides=1, padding=0, groups=1, use_bias=False,
                 kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = _triple(kernel_size, "kernel_size")
        self.strides = _triple(strides, "strides")
        self.padding = _triple(padding, "padding")
        self.groups = int(groups)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer or FanOutNormal())
        if self.groups < 1:
            raise ValueError(f"{self.name}: groups must be >= 1, got {groups}")
        if self.filters % self.groups:
            raise GroupsMismatch(f"{self.name}: filters={filters} is not divisible by groups={groups}")

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels % self.groups:
            raise GroupsMismatch(
                f"{self.name}: {channels} input channels are not divisible by groups={self.groups}")
        self.kernel = self.add_weight(
            name="kernel", shape=self.kernel_size + (channels // self.groups, self.filters),
            initializer=self.kernel_initializer)
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros") \
            if self.use_bias else None

    def call(self, x):
        lowering = _lowering()
        depthwise = self.groups == x.shape[-1] == self.filters and self.groups > 1
        dense = self._dense_lowering()
        if depthwise or dense != "same":
            x = _pad(x, self.padding)
        if lowering in ("taps", "taps_matmul", "s2d", "pallas"):
            return self._taps(x, lowering, depthwise)
        if self.groups == 1:
            y = self._dense(x, self.kernel) if dense == "frames" else self._native(x, dense)
        elif _uses_frames():
            y = self._depthwise_frames(x) if depthwise else self._split_groups(x, dense)
        else:
            y = self._native(x)
        return y + self.bias if self.use_bias else y

    def _dense_lowering(self):
        """How an ungrouped conv (or each group of a grouped one) is traced:
        "frames" (2D convs), or a native conv on the input padded here
        ("valid") or padded by the conv itself ("same").

        TF's Grappler remapper (oneDNN) fuses a Pad into the native Conv3D
        after it, and on an AVX-512 CPU (Zen 5) that broke MobileNetV2's
        inference graph: a Reshape of a later depthwise conv received the
        padded size (`predict` failed; eager calls and training did not). So
        on TF a native Conv3D never follows a Pad: "same" padding where it
        equals the symmetric padding, 2D convs elsewhere."""
        if _uses_frames(dense=True):
            return "frames"
        if keras.backend.backend() == "tensorflow" and _lowering() == "frames" and any(self.padding):
            same = all(s == 1 and k % 2 and p == k // 2
                       for k, s, p in zip(self.kernel_size, self.strides, self.padding))
            return "same" if same else "frames"
        return "valid"

    def _native(self, x, padding="valid"):
        return ops.conv(x, self.kernel, strides=self.strides, padding=padding, data_format=LAYOUT)

    def _taps(self, x, lowering, depthwise):
        if lowering != "taps" and self.kernel_size == (1, 1, 1):
            y = self._pointwise_matmul(x)
        elif depthwise:
            kernel = ops.reshape(self.kernel, self.kernel_size + (self.filters,))
            # Strided, the taps beat the kernel in every layer timed (benchmarks/README.md, run 4).
            if lowering == "pallas" and self.strides == (1, 1, 1):
                from keras_r3d import gpu_kernels

                y = gpu_kernels.depthwise_conv(x, kernel, self.strides)
            else:
                y = depthwise_taps(x, kernel, self.strides)
        elif lowering in ("s2d", "pallas") and self.groups == 1 and x.shape[-1] <= 4 and self.strides[1:] == (2, 2):
            y = space_to_depth_conv(x, self.kernel, self.strides, tensor_core_channels(x.dtype))
        else:
            y = self._native(x)
        return y + self.bias if self.use_bias else y

    def _pointwise_matmul(self, x):
        if self.strides != (1, 1, 1):
            x = x[:, ::self.strides[0], ::self.strides[1], ::self.strides[2]]
        cin, groups = x.shape[-1], self.groups
        if groups == 1:
            return ops.matmul(x, ops.reshape(self.kernel, (cin, self.filters)))
        # Output channel g * (filters / groups) + o reads input group g.
        kernel = ops.reshape(self.kernel, (cin // groups, groups, self.filters // groups))
        lead = (-1,) + tuple(x.shape[1:-1])
        y = ops.einsum("...gi,igo->...go", ops.reshape(x, lead + (groups, cin // groups)), kernel)
        return ops.reshape(y, lead + (self.filters,))

    def _dense(self, x, kernel):
        """Ungrouped conv as a sum of 2D convs over time."""
        _, sh, sw = self.strides
        out = None
        for k, xs in _time_slices(x, kernel.shape[0], self.strides[0], self.padding[0]):
            y = _per_frame(lambda f: ops.conv(f, kernel[k], strides=(sh, sw), padding="valid", data_format=LAYOUT), xs)
            out = y if out is None else out + y
        return out

    def _depthwise_frames(self, x):
        _, sh, sw = self.strides
        kt, kh, kw = self.kernel_size
        out = None
        for k, xs in _time_slices(x, kt, self.strides[0], self.padding[0]):
            kernel = ops.reshape(self.kernel[k], (kh, kw, self.filters, 1))
            y = _per_frame(
                lambda f: ops.depthwise_conv(f, kernel, strides=(sh, sw), padding="valid", data_format=LAYOUT), xs)
            out = y if out is None else out + y
        return out

    def _split_groups(self, x, dense):
        cin = x.shape[-1] // self.groups
        cout = self.filters // self.groups
        outs = []
        for g in range(self.groups):
            kernel = self.kernel[..., g * cout : (g + 1) * cout]
            xg = x[..., g * cin : (g + 1) * cin]
            outs.append(self._dense(xg, kernel) if dense == "frames"
                        else ops.conv(xg, kernel, strides=self.strides, padding=dense, data_format=LAYOUT))
        return ops.concatenate(outs, axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *_output_size(self, input_shape, self.kernel_size), self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "groups": self.groups,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


class _Pool3D(keras.layers.Layer):
    """Shared config of the 3D pools: explicit symmetric zero padding."""

    def __init__(self, pool_size, strides=None, padding=0, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = _triple(pool_size, "pool_size")
        self.strides = _triple(self.pool_size if strides is None else strides, "strides")
        self.padding = _triple(padding, "padding")

    def _frames(self, x, pool2d, reduce):
        _, sh, sw = self.strides
        _, ph, pw = self.pool_size
        x = _per_frame(lambda f: pool2d(f, (ph, pw), strides=(sh, sw), padding="valid", data_format=LAYOUT), x)
        return reduce([xs for _, xs in _time_slices(x, self.pool_size[0], self.strides[0], self.padding[0])])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *_output_size(self, input_shape, self.pool_size), input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides,
                "padding": self.padding}


@keras.saving.register_keras_serializable(PACKAGE)
class MaxPool3D(_Pool3D):
    """Max pooling over (T, H, W) with symmetric zero padding.

    PyTorch pads max pools with -inf; every padded max pool of the zoo follows
    a ReLU, where zero padding gives the same result and stays int8-friendly.
    """

    def call(self, x):
        x = _pad(x, self.padding)
        if _uses_frames():
            return self._frames(x, ops.max_pool, _reduce_max)
        return ops.max_pool(x, self.pool_size, strides=self.strides, padding="valid", data_format=LAYOUT)


@keras.saving.register_keras_serializable(PACKAGE)
class AvgPool3D(_Pool3D):
    """Average pooling over (T, H, W) that counts the zero padding, like
    PyTorch's default `count_include_pad=True`."""

    def call(self, x):
        x = _pad(x, self.padding)
        if _uses_frames():
            # The skipped padding frames are zeros: divide by the whole window.
            total = self._frames(x, ops.average_pool, _reduce_sum)
            return total if self.pool_size[0] == 1 else total * (1.0 / self.pool_size[0])
        dtype = keras.backend.standardize_dtype(x.dtype)
        if keras.backend.backend() == "torch" and dtype in ("float16", "bfloat16") \
                and str(getattr(x, "device", "")).startswith("cpu"):
            # PyTorch's CPU avg_pool3d has no half-precision kernel (mixed precision).
            return ops.cast(ops.average_pool(ops.cast(x, "float32"), self.pool_size, strides=self.strides,
                                             padding="valid", data_format=LAYOUT), dtype)
        return ops.average_pool(x, self.pool_size, strides=self.strides, padding="valid", data_format=LAYOUT)


def _reduce_max(slices):
    out = slices[0]
    for s in slices[1:]:
        out = ops.maximum(out, s)
    return out


def _reduce_sum(slices):
    out = slices[0]
    for s in slices[1:]:
        out = out + s
    return out


@keras.saving.register_keras_serializable(PACKAGE)
class ChannelShuffle(keras.layers.Layer):
    """ShuffleNet's channel shuffle: (g, C/g) -> (C/g, g) on the last axis."""

    def __init__(self, groups, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)

    def call(self, x):
        channels = x.shape[-1]
        if channels % self.groups:
            raise ValueError(f"{self.name}: {channels} channels are not divisible by {self.groups}")
        y = ops.reshape(x, (-1, self.groups, channels // self.groups))
        y = ops.transpose(y, (0, 2, 1))
        return ops.reshape(y, (-1,) + tuple(x.shape[1:]))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


@keras.saving.register_keras_serializable(PACKAGE)
class ChannelSlice(keras.layers.Layer):
    """Channels [start, stop) of the last axis (ShuffleNetV2's channel split)."""

    def __init__(self, start, stop, **kwargs):
        super().__init__(**kwargs)
        self.start, self.stop = int(start), int(stop)

    def call(self, x):
        return x[..., self.start : self.stop]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.stop - self.start,)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}


@keras.saving.register_keras_serializable(PACKAGE)
class ZeroChannelShortcut(keras.layers.Layer):
    """ResNet shortcut "A": subsample by `stride`, then append zero channels.

    As in the official code, no gradient flows through it.
    """

    def __init__(self, filters, stride, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.stride = int(stride)

    def call(self, x):
        s = self.stride
        y = ops.stop_gradient(x[:, ::s, ::s, ::s, :])
        extra = self.filters - x.shape[-1]
        return ops.pad(y, [(0, 0)] * 4 + [(0, extra)]) if extra else y

    def compute_output_shape(self, input_shape):
        s = self.stride
        spatial = [None if n is None else (n + s - 1) // s for n in input_shape[1:4]]
        return (input_shape[0], *spatial, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "stride": self.stride}
