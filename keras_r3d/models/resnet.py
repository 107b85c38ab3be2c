"""3D ResNet and ResNeXt (Hara et al. 2018), the paper's baselines."""
import keras

from keras_r3d import layers as r3d_layers
from keras_r3d.models import common

# depth -> (block kind, blocks per stage)
RESNET_DEPTHS = {10: ("basic", (1, 1, 1, 1)), 18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
                 50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3)),
                 152: ("bottleneck", (3, 8, 36, 3)), 200: ("bottleneck", (3, 24, 36, 3))}
RESNEXT_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
RESNET_PLANES = (64, 128, 256, 512)
RESNEXT_PLANES = (128, 256, 512, 1024)
EXPANSION = {"basic": 1, "bottleneck": 4, "resnext": 2}
SHORTCUTS = ("A", "B")


def _shortcut(x, filters, stride, shortcut, name):
    if stride == 1 and x.shape[-1] == filters:
        return x
    if shortcut == "A":
        return r3d_layers.ZeroChannelShortcut(filters, stride, name=f"{name}_downsample")(x)
    x = common.conv(x, filters, 1, f"{name}_downsample_0", strides=stride)
    return common.batch_norm(x, f"{name}_downsample_1")


def _block(x, kind, planes, stride, shortcut, cardinality, name):
    out_channels = planes * EXPANSION[kind]
    residual = _shortcut(x, out_channels, stride, shortcut, name)
    if kind == "basic":
        y = common.conv(x, planes, 3, f"{name}_conv1", strides=stride)
        y = common.relu(common.batch_norm(y, f"{name}_bn1"), f"{name}_relu1")
        y = common.batch_norm(common.conv(y, planes, 3, f"{name}_conv2"), f"{name}_bn2")
    else:
        mid = planes if kind == "bottleneck" else cardinality * (planes // 32)
        groups = 1 if kind == "bottleneck" else cardinality
        y = common.conv(x, mid, 1, f"{name}_conv1")
        y = common.relu(common.batch_norm(y, f"{name}_bn1"), f"{name}_relu1")
        y = common.conv(y, mid, 3, f"{name}_conv2", strides=stride, groups=groups)
        y = common.relu(common.batch_norm(y, f"{name}_bn2"), f"{name}_relu2")
        y = common.batch_norm(common.conv(y, out_channels, 1, f"{name}_conv3"), f"{name}_bn3")
    y = keras.layers.Add(name=f"{name}_add")([y, residual])
    return common.relu(y, f"{name}_relu")


def _resnet(arch, arch_kwargs, kind, stage_blocks, planes, shortcut, cardinality, num_classes,
            input_shape, include_top, pooling, classifier_activation, preprocessing, class_names, name):
    if shortcut not in SHORTCUTS:
        raise ValueError(f"{arch}: shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
    shape = common.check_common_args(arch, num_classes, input_shape, include_top, pooling, 0.0)

    def body(x):
        x = common.conv(x, 64, 7, "conv1", strides=(1, 2, 2))
        x = common.relu(common.batch_norm(x, "bn1"), "relu")
        x = r3d_layers.MaxPool3D(3, strides=2, padding=1, name="maxpool")(x)
        for stage, (blocks, width) in enumerate(zip(stage_blocks, planes), start=1):
            for i in range(blocks):
                stride = 2 if stage > 1 and i == 0 else 1
                x = _block(x, kind, width, stride, shortcut, cardinality, f"layer{stage}_{i}")
        return x

    def head(x):
        # AvgPool3d over the last feature map, then fc: no dropout.
        x = keras.layers.GlobalAveragePooling3D(data_format="channels_last", name="avgpool")(x)
        return keras.layers.Dense(num_classes, activation=classifier_activation, name="fc",
                                  dtype=common.output_dtype())(x)

    inputs, features = common.build_graph(arch, shape, body)
    return common.finish_model(
        arch, arch_kwargs, inputs, features, include_top=include_top, pooling=pooling,
        classifier_activation=classifier_activation,
        num_classes=num_classes, head=head, preprocessing=preprocessing, class_names=class_names,
        name=name)


def ResNet3D(depth=18, shortcut="B", num_classes=600, input_shape=(16, 112, 112, 3), include_top=True,
             pooling=None, classifier_activation=None, preprocessing=None, class_names=None, name=None):
    """3D ResNet.

    Args:
        depth: 10, 18, 34 (basic blocks), 50, 101, 152 or 200 (bottlenecks).
        shortcut: "A" (strided identity plus zero channels, no gradient) or
            "B" (1x1x1 conv and BN) where the shape changes.
        num_classes, input_shape, include_top, pooling, classifier_activation,
        preprocessing, class_names: as in `ShuffleNet3D`. No dropout.
    Returns:
        A `VideoClassifier` mapping normalized frames to logits (probabilities
        with classifier_activation="softmax", features with include_top=False).
    """
    common.check_choice("resnet", "depth", depth, RESNET_DEPTHS)
    kind, stage_blocks = RESNET_DEPTHS[depth]
    return _resnet("resnet", {"depth": depth, "shortcut": shortcut}, kind, stage_blocks, RESNET_PLANES,
                   shortcut, None, num_classes, input_shape, include_top, pooling,
                   classifier_activation, preprocessing, class_names, name)


def ResNeXt3D(depth=101, cardinality=32, shortcut="B", num_classes=600, input_shape=(16, 112, 112, 3),
              include_top=True, pooling=None, classifier_activation=None, preprocessing=None,
              class_names=None, name=None):
    """3D ResNeXt.

    Args:
        depth: 50, 101 or 152.
        cardinality: groups of the 3x3x3 convs (32 in the paper).
        shortcut, num_classes, input_shape, include_top, pooling,
        classifier_activation, preprocessing, class_names: as in `ResNet3D`.
    Returns:
        A `VideoClassifier` mapping normalized frames to logits (probabilities
        with classifier_activation="softmax", features with include_top=False).
    """
    common.check_choice("resnext", "depth", depth, RESNEXT_DEPTHS)
    if not common._is_int(cardinality) or cardinality < 1:
        raise ValueError(f"resnext: cardinality must be a positive int, got {cardinality!r}")
    return _resnet("resnext", {"depth": depth, "cardinality": cardinality, "shortcut": shortcut},
                   "resnext", RESNEXT_DEPTHS[depth], RESNEXT_PLANES, shortcut, cardinality,
                   num_classes, input_shape, include_top, pooling, classifier_activation,
                   preprocessing, class_names, name)
