"""3D ShuffleNet V2 (Ma et al. 2018), as in Efficient-3DCNNs."""
import keras

from keras_r3d import layers as r3d_layers
from keras_r3d.models import common

STEM_CHANNELS = 24
# Stage widths and the last 1x1x1 conv, per width multiplier.
STAGE_WIDTHS = {0.25: (32, 64, 128, 1024), 0.5: (48, 96, 192, 1024), 1.0: (116, 232, 464, 1024),
                1.5: (176, 352, 704, 1024), 2.0: (224, 488, 976, 2048)}
STAGE_BLOCKS = (4, 8, 4)


def _pointwise_bn_relu(x, filters, name, first):
    x = common.conv(x, filters, 1, f"{name}_{first}")
    x = common.batch_norm(x, f"{name}_{first + 1}")
    return common.relu(x, f"{name}_{first + 2}")


def _depthwise_bn(x, stride, name, first):
    x = common.conv(x, x.shape[-1], 3, f"{name}_{first}", strides=stride, groups=x.shape[-1])
    return common.batch_norm(x, f"{name}_{first + 1}")


def _branch2(x, filters, stride, name):
    x = _pointwise_bn_relu(x, filters, name, 0)
    x = _depthwise_bn(x, stride, name, 3)
    return _pointwise_bn_relu(x, filters, name, 5)


def _block(x, out_channels, stride, name):
    half = out_channels // 2
    if stride == 1:
        channels = x.shape[-1]
        x1 = r3d_layers.ChannelSlice(0, channels // 2, name=f"{name}_split1")(x)
        x2 = r3d_layers.ChannelSlice(channels // 2, channels, name=f"{name}_split2")(x)
        y = [x1, _branch2(x2, half, 1, f"{name}_banch2")]
    else:
        b1 = _depthwise_bn(x, stride, f"{name}_banch1", 0)
        b1 = _pointwise_bn_relu(b1, half, f"{name}_banch1", 2)
        y = [b1, _branch2(x, half, stride, f"{name}_banch2")]
    y = keras.layers.Concatenate(name=f"{name}_concat")(y)
    return r3d_layers.ChannelShuffle(2, name=f"{name}_shuffle")(y)


def ShuffleNetV2_3D(width_mult=1.0, num_classes=600, input_shape=(16, 112, 112, 3), include_top=True,
                    pooling=None, dropout=0.2, classifier_activation=None, preprocessing=None,
                    class_names=None, name=None):
    """3D ShuffleNet V2.

    Args:
        width_mult: 0.25, 0.5, 1.0, 1.5 or 2.0 (the official widths).
        num_classes, input_shape, include_top, pooling, dropout,
        classifier_activation, preprocessing, class_names: as in `ShuffleNet3D`.
    Returns:
        A `VideoClassifier` mapping normalized frames to logits (probabilities
        with classifier_activation="softmax", features with include_top=False).
    """
    common.check_choice("shufflenetv2", "width_mult", width_mult, STAGE_WIDTHS)
    shape = common.check_common_args("shufflenetv2", num_classes, input_shape, include_top, pooling, dropout)
    *stage_widths, last_channels = STAGE_WIDTHS[width_mult]

    def body(x):
        x = common.conv(x, STEM_CHANNELS, 3, "conv1_0", strides=(1, 2, 2))
        x = common.batch_norm(x, "conv1_1")
        x = common.relu(x, "conv1_2")
        x = r3d_layers.MaxPool3D(3, strides=2, padding=1, name="maxpool")(x)
        index = 0
        for width, blocks in zip(stage_widths, STAGE_BLOCKS):
            for i in range(blocks):
                x = _block(x, width, 2 if i == 0 else 1, f"features_{index}")
                index += 1
        return _pointwise_bn_relu(x, last_channels, "conv_last", 0)

    inputs, features = common.build_graph("shufflenetv2", shape, body)
    return common.finish_model(
        "shufflenetv2", {"width_mult": width_mult}, inputs, features,
        include_top=include_top, pooling=pooling,
        classifier_activation=classifier_activation, num_classes=num_classes,
        head=common.classifier(num_classes, dropout, classifier_activation),
        preprocessing=preprocessing, class_names=class_names, name=name)
