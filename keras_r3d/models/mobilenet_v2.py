"""3D MobileNet V2 (Sandler et al. 2018), as in Efficient-3DCNNs."""
import keras

from keras_r3d.models import common

STEM_CHANNELS = 32
LAST_CHANNELS = 1280
# (expansion t, channels c, blocks n, stride s of the first block), as in the paper.
BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
          (6, 160, 3, 2), (6, 320, 1, 1))


def _conv_bn(x, filters, kernel_size, name, index, strides=1, groups=1, relu6=True):
    x = common.conv(x, filters, kernel_size, f"{name}_{index}", strides=strides, groups=groups)
    x = common.batch_norm(x, f"{name}_{index + 1}")
    return common.relu(x, f"{name}_{index + 2}", max_value=6.0) if relu6 else x


def _inverted_residual(x, out_channels, stride, expansion, name):
    in_channels = x.shape[-1]
    hidden = round(in_channels * expansion)
    y, index = x, 0
    if expansion != 1:
        y = _conv_bn(y, hidden, 1, name, 0)
        index = 3
    y = _conv_bn(y, hidden, 3, name, index, strides=stride, groups=hidden)
    y = _conv_bn(y, out_channels, 1, name, index + 3, relu6=False)
    if stride == 1 and in_channels == out_channels:
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    return y


def MobileNetV2_3D(width_mult=1.0, num_classes=600, input_shape=(16, 112, 112, 3), include_top=True,
                   pooling=None, dropout=0.2, classifier_activation=None, preprocessing=None,
                   class_names=None, name=None):
    """3D MobileNet V2.

    Args:
        width_mult: multiplies every width (`int(c * width_mult)`, no rounding to
            multiples of 8); the last conv has 1280 channels unless width_mult > 1.
        num_classes, input_shape, include_top, pooling, dropout,
        classifier_activation, preprocessing, class_names: as in `ShuffleNet3D`.
    Returns:
        A `VideoClassifier` mapping normalized frames to logits (probabilities
        with classifier_activation="softmax", features with include_top=False).
    """
    common.check_width("mobilenetv2", width_mult)
    widths = [int(c * width_mult) for c in (STEM_CHANNELS,) + tuple(c for _, c, _, _ in BLOCKS)]
    if min(widths) < 1:
        raise ValueError(f"mobilenetv2: width_mult={width_mult!r} leaves a layer with no channels")
    last_channels = int(LAST_CHANNELS * width_mult) if width_mult > 1.0 else LAST_CHANNELS
    shape = common.check_common_args("mobilenetv2", num_classes, input_shape, include_top, pooling, dropout)

    def body(x):
        x = _conv_bn(x, widths[0], 3, "features_0", 0, strides=(1, 2, 2))
        index = 1
        for expansion, channels, blocks, stride in BLOCKS:
            for i in range(blocks):
                x = _inverted_residual(x, int(channels * width_mult), stride if i == 0 else 1,
                                       expansion, f"features_{index}_conv")
                index += 1
        return _conv_bn(x, last_channels, 1, f"features_{index}", 0)

    inputs, features = common.build_graph("mobilenetv2", shape, body)
    return common.finish_model(
        "mobilenetv2", {"width_mult": width_mult}, inputs, features,
        include_top=include_top, pooling=pooling,
        classifier_activation=classifier_activation, num_classes=num_classes,
        head=common.classifier(num_classes, dropout, classifier_activation),
        preprocessing=preprocessing, class_names=class_names, name=name)
