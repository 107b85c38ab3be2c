"""3D ShuffleNet V1 (Zhang et al. 2018), as in Efficient-3DCNNs."""
import keras

from keras_r3d import layers as r3d_layers
from keras_r3d.models import common

# Stage widths per group count, before the width multiplier (stem included).
STAGE_WIDTHS = {1: (24, 144, 288, 567), 2: (24, 200, 400, 800), 3: (24, 240, 480, 960),
                4: (24, 272, 544, 1088), 8: (24, 384, 768, 1536)}
STAGE_BLOCKS = (4, 8, 4)
# The official code leaves the first 1x1 conv ungrouped only when it reads 24 channels.
UNGROUPED_INPUT_CHANNELS = 24


def _bottleneck(x, out_channels, stride, groups, name):
    in_channels = x.shape[-1]
    mid = out_channels // 4
    branch_channels = out_channels - in_channels if stride == 2 else out_channels
    g1 = 1 if in_channels == UNGROUPED_INPUT_CHANNELS else groups
    y = common.conv(x, mid, 1, f"{name}_conv1", groups=g1)
    y = common.batch_norm(y, f"{name}_bn1")
    y = common.relu(y, f"{name}_relu1")
    y = r3d_layers.ChannelShuffle(groups, name=f"{name}_shuffle")(y)
    y = common.conv(y, mid, 3, f"{name}_conv2", strides=stride, groups=mid)
    y = common.batch_norm(y, f"{name}_bn2")
    y = common.conv(y, branch_channels, 1, f"{name}_conv3", groups=groups)
    y = common.batch_norm(y, f"{name}_bn3")
    if stride == 2:
        shortcut = r3d_layers.AvgPool3D((2, 3, 3), strides=2, padding=(0, 1, 1),
                                        name=f"{name}_shortcut")(x)
        y = keras.layers.Concatenate(name=f"{name}_concat")([y, shortcut])
    else:
        y = keras.layers.Add(name=f"{name}_add")([y, x])
    return common.relu(y, f"{name}_relu")


def ShuffleNet3D(width_mult=1.0, groups=3, num_classes=600, input_shape=(16, 112, 112, 3),
                 include_top=True, pooling=None, dropout=0.2, classifier_activation=None,
                 preprocessing=None, class_names=None, name=None):
    """3D ShuffleNet V1.

    Args:
        width_mult: multiplies every stage width, the stem included.
        groups: 1, 2, 3, 4 or 8, the groups of the 1x1x1 convs. Pairs that the
            official code cannot build raise a ValueError naming the pair and the layer.
        num_classes, input_shape, include_top, pooling, dropout,
        classifier_activation: as in every keras_r3d builder.
        preprocessing: a `Preprocessing`, a dict, or a data set's name (its official contract,
            `keras_r3d.preprocessing.DATASET_PREPROCESSING`) for the model to carry; frames and size
            follow `input_shape`.
        class_names: names of the outputs; `class_000`... by default.
    Returns:
        A `VideoClassifier` mapping normalized frames to logits (probabilities
        with classifier_activation="softmax", features with include_top=False).
    """
    common.check_choice("shufflenet", "groups", groups, STAGE_WIDTHS)
    common.check_width("shufflenet", width_mult)
    shape = common.check_common_args("shufflenet", num_classes, input_shape, include_top, pooling, dropout)
    widths = [int(w * width_mult) for w in STAGE_WIDTHS[groups]]
    if widths[0] < 1 or min(widths[1:]) // 4 < 1:  # the stem, and each unit's bottleneck (a quarter)
        raise ValueError(f"shufflenet: width_mult={width_mult!r} leaves a layer with no channels")

    def body(x):
        x = common.conv(x, widths[0], 3, "conv1_0", strides=(1, 2, 2))
        x = common.batch_norm(x, "conv1_1")
        x = common.relu(x, "conv1_2")
        x = r3d_layers.MaxPool3D(3, strides=2, padding=1, name="maxpool")(x)
        for stage, (width, blocks) in enumerate(zip(widths[1:], STAGE_BLOCKS), start=1):
            for i in range(blocks):
                x = _bottleneck(x, width, 2 if i == 0 else 1, groups, f"layer{stage}_{i}")
        return x

    settings = {"width_mult": width_mult, "groups": groups}
    inputs, features = common.build_graph("shufflenet", shape, body, settings)
    return common.finish_model(
        "shufflenet", settings, inputs, features,
        include_top=include_top, pooling=pooling,
        classifier_activation=classifier_activation, num_classes=num_classes,
        head=common.classifier(num_classes, dropout, classifier_activation),
        preprocessing=preprocessing, class_names=class_names, name=name)
