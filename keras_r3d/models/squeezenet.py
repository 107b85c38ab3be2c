"""3D SqueezeNet 1.0 and 1.1 (Iandola et al. 2016), as in Efficient-3DCNNs."""
import keras

from keras_r3d import layers as r3d_layers
from keras_r3d.models import common

# Stem (channels, kernel) and the feature sequence: "pool" or
# (squeeze, expand1x1, expand3x3, bypass) for a Fire module.
STEMS = {1.0: (96, 7), 1.1: (64, 3)}
FEATURES = {
    1.0: ("pool", (16, 64, 64, False), (16, 64, 64, True), "pool", (32, 128, 128, False),
          (32, 128, 128, True), "pool", (48, 192, 192, False), (48, 192, 192, True),
          (64, 256, 256, False), "pool", (64, 256, 256, True)),
    1.1: ("pool", (16, 64, 64, False), (16, 64, 64, True), "pool", (32, 128, 128, False),
          (32, 128, 128, True), "pool", (48, 192, 192, False), (48, 192, 192, True), "pool",
          (64, 256, 256, False), (64, 256, 256, True)),
}


def _fire(x, squeeze, expand1x1, expand3x3, bypass, name):
    y = common.conv(x, squeeze, 1, f"{name}_squeeze", use_bias=True)
    y = common.relu(common.batch_norm(y, f"{name}_squeeze_bn"), f"{name}_squeeze_relu")
    e1 = common.batch_norm(common.conv(y, expand1x1, 1, f"{name}_expand1x1", use_bias=True),
                           f"{name}_expand1x1_bn")
    e3 = common.batch_norm(common.conv(y, expand3x3, 3, f"{name}_expand3x3", use_bias=True),
                           f"{name}_expand3x3_bn")
    y = keras.layers.Concatenate(name=f"{name}_concat")([e1, e3])
    if bypass:
        y = keras.layers.Add(name=f"{name}_add")([y, x])
    return common.relu(y, f"{name}_relu")


def SqueezeNet3D(version=1.1, num_classes=600, input_shape=(16, 112, 112, 3), include_top=True,
                 pooling=None, dropout=0.5, classifier_activation=None, preprocessing=None,
                 class_names=None, name=None):
    """3D SqueezeNet.

    The head is the official one: dropout, a 1x1x1 conv to the classes, a
    ReLU (so the logits are >= 0), then global average pooling.

    Args:
        version: 1.0 or 1.1.
        num_classes, input_shape, include_top, pooling, dropout,
        classifier_activation, preprocessing, class_names: as in `ShuffleNet3D`.
    Returns:
        A `VideoClassifier` mapping normalized frames to logits (probabilities
        with classifier_activation="softmax", features with include_top=False).
    """
    common.check_choice("squeezenet", "version", version, STEMS)
    shape = common.check_common_args("squeezenet", num_classes, input_shape, include_top, pooling, dropout)
    stem_channels, stem_kernel = STEMS[version]

    def body(x):
        x = common.conv(x, stem_channels, stem_kernel, "features_0", strides=(1, 2, 2), use_bias=True)
        x = common.relu(common.batch_norm(x, "features_1"), "features_2")
        for index, item in enumerate(FEATURES[version], start=3):
            if item == "pool":
                x = r3d_layers.MaxPool3D(3, strides=2, padding=1, name=f"features_{index}")(x)
            else:
                x = _fire(x, *item, name=f"features_{index}")
        return x

    def head(x):
        x = keras.layers.Dropout(dropout, name="classifier_0")(x)
        x = common.conv(x, num_classes, 1, "classifier_1", use_bias=True)
        x = common.relu(x, "classifier_2")
        x = keras.layers.GlobalAveragePooling3D(data_format="channels_last", name="classifier_3")(x)
        return keras.layers.Activation(classifier_activation or "linear", name="predictions",
                                       dtype=common.output_dtype())(x)

    inputs, features = common.build_graph("squeezenet", shape, body)
    return common.finish_model(
        "squeezenet", {"version": version}, inputs, features,
        include_top=include_top, pooling=pooling,
        classifier_activation=classifier_activation, num_classes=num_classes, head=head,
        preprocessing=preprocessing, class_names=class_names, name=name)
