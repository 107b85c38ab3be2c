"""3D MobileNet V1 (Howard et al. 2017), as in Efficient-3DCNNs."""
import keras

from keras_r3d.models import common

STEM_CHANNELS = 32
# (channels, blocks, stride of the first block); strides apply to T, H and W.
BLOCKS = ((64, 1, 2), (128, 2, 2), (256, 2, 2), (512, 6, 2), (1024, 2, 1))


def _relu(x, name):
    # The official block calls F.relu, which Table 8's counter did not count.
    return keras.layers.Activation("relu", name=name)(x)


def MobileNet3D(width_mult=1.0, num_classes=600, input_shape=(16, 112, 112, 3), include_top=True,
                pooling=None, dropout=0.2, classifier_activation=None, preprocessing=None,
                class_names=None, name=None):
    """3D MobileNet V1.

    Args:
        width_mult: multiplies every width (`int(c * width_mult)`); any value
            that leaves every layer at least one channel.
        num_classes, input_shape, include_top, pooling, dropout,
        classifier_activation, preprocessing, class_names: as in `ShuffleNet3D`.
    Returns:
        A `VideoClassifier` mapping normalized frames to logits (probabilities
        with classifier_activation="softmax", features with include_top=False).
    """
    common.check_width("mobilenet", width_mult)
    widths = [int(c * width_mult) for c in (STEM_CHANNELS,) + tuple(c for c, _, _ in BLOCKS)]
    if min(widths) < 1:
        raise ValueError(f"mobilenet: width_mult={width_mult!r} leaves a layer with no channels")
    shape = common.check_common_args("mobilenet", num_classes, input_shape, include_top, pooling, dropout)

    def body(x):
        x = common.conv(x, widths[0], 3, "features_0_0", strides=(1, 2, 2))
        x = common.batch_norm(x, "features_0_1")
        x = common.relu(x, "features_0_2")
        index = 1
        for (channels, blocks, stride) in BLOCKS:
            for i in range(blocks):
                name = f"features_{index}"
                x = common.conv(x, x.shape[-1], 3, f"{name}_conv1", strides=stride if i == 0 else 1,
                                groups=x.shape[-1])
                x = _relu(common.batch_norm(x, f"{name}_bn1"), f"{name}_relu1")
                x = common.conv(x, int(channels * width_mult), 1, f"{name}_conv2")
                x = _relu(common.batch_norm(x, f"{name}_bn2"), f"{name}_relu2")
                index += 1
        return x

    inputs, features = common.build_graph("mobilenet", shape, body)
    return common.finish_model(
        "mobilenet", {"width_mult": width_mult}, inputs, features,
        include_top=include_top, pooling=pooling,
        classifier_activation=classifier_activation, num_classes=num_classes,
        head=common.classifier(num_classes, dropout, classifier_activation),
        preprocessing=preprocessing, class_names=class_names, name=name)
