"""Parameter and operation counts of a built model, per clip."""
import math

import keras

from keras_r3d import layers as r3d_layers


# thop multiplied out tuple kernel sizes only: for the max pools that these
# official models declare as `kernel_size=3` it counted 2 ops per output.
INT_KERNEL_POOL_ARCHS = ("shufflenet", "shufflenetv2", "squeezenet")


def _numel(shape):
    return math.prod(d for d in shape[1:])


def profile(model):
    """Counts a model's parameters and operations for one clip.

    Returns a dict with `params`, `trainable_params`, `macs` (convs and dense
    layers) and `flops_paper`: operations counted as Table 8 counted them
    (the official repo's bundled thop): a conv is `out * (in/groups * k + bias)`,
    a linear layer `out * (2 * in - 1)`, a BatchNorm `2 * in`, a ReLU module
    `in` (MobileNet V1's functional ReLUs were not counted), a max pool
    `out * (window - 1)` (see INT_KERNEL_POOL_ARCHS), an average pool module `out * window`.
    `conv_pool_io_elements` is the input plus output size of every conv and
    pool: the fewest elements a clip moves through memory if each of them
    reads its input and writes its output once, with everything else fused.
    """
    arch = getattr(model, "architecture", {}).get("arch")
    macs = 0
    flops = 0
    io_elements = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            raise ValueError(f"profile expects a flat model; {layer.name!r} is a nested model")
        if isinstance(layer, keras.layers.InputLayer) or isinstance(layer.input, list):
            continue  # merges (add, concatenate) count nothing
        in_shape = layer.input.shape
        out_shape = layer.output.shape
        if isinstance(layer, (r3d_layers.Conv3D, r3d_layers.MaxPool3D, r3d_layers.AvgPool3D)):
            io_elements += _numel(in_shape) + _numel(out_shape)
        if isinstance(layer, r3d_layers.Conv3D):
            per_output = in_shape[-1] // layer.groups * math.prod(layer.kernel_size)
            macs += _numel(out_shape) * per_output
            flops += _numel(out_shape) * (per_output + int(layer.use_bias))
        elif isinstance(layer, keras.layers.Dense):
            macs += in_shape[-1] * layer.units
            flops += (2 * in_shape[-1] - 1) * layer.units
        elif isinstance(layer, keras.layers.BatchNormalization):
            flops += 2 * _numel(in_shape)
        elif isinstance(layer, keras.layers.ReLU):
            flops += _numel(in_shape)
        elif isinstance(layer, r3d_layers.MaxPool3D):
            window = math.prod(layer.pool_size)
            if arch in INT_KERNEL_POOL_ARCHS and len(set(layer.pool_size)) == 1:
                window = layer.pool_size[0]
            flops += _numel(out_shape) * (window - 1)
        elif isinstance(layer, r3d_layers.AvgPool3D):
            flops += _numel(out_shape) * math.prod(layer.pool_size)
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    return {
        "params": sum(math.prod(w.shape) for w in model.weights),
        "trainable_params": trainable,
        "macs": macs,
        "flops_paper": flops,
        "conv_pool_io_elements": io_elements,
    }
