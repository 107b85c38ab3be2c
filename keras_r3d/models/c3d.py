"""C3D with batch normalization (Tran et al. 2015), as in Efficient-3DCNNs."""
import keras

from keras_r3d import layers as r3d_layers
from keras_r3d.models import common

# Per group: conv widths, then the max pool (kernel, stride, padding).
GROUPS = (((64,), ((2, 2, 2), (1, 2, 2), 0)),
          ((128,), (2, 2, 0)),
          ((256, 256), (2, 2, 0)),
          ((512, 512), (2, 2, 0)),
          ((512, 512), ((1, 2, 2), 2, (0, 1, 1))))
FC_UNITS = 4096


def C3D(num_classes=600, input_shape=(16, 112, 112, 3), include_top=True, pooling=None, dropout=0.5,
        classifier_activation=None, preprocessing=None, class_names=None, name=None):
    """C3D with BN.

    The classifier flattens in PyTorch's (C, T, H, W) order, so official fc
    weights load unchanged.

    Args:
        num_classes, input_shape, include_top, pooling, dropout,
        classifier_activation, preprocessing, class_names: as in `ShuffleNet3D`.
    Returns:
        A `VideoClassifier` mapping normalized frames to logits (probabilities
        with classifier_activation="softmax", features with include_top=False).
    """
    shape = common.check_common_args("c3d", num_classes, input_shape, include_top, pooling, dropout)

    def body(x):
        for g, (widths, (pool, stride, padding)) in enumerate(GROUPS, start=1):
            index = 0
            for width in widths:
                x = common.conv(x, width, 3, f"group{g}_{index}", use_bias=True)
                x = common.relu(common.batch_norm(x, f"group{g}_{index + 1}"), f"group{g}_{index + 2}")
                index += 3
            x = r3d_layers.MaxPool3D(pool, strides=stride, padding=padding, name=f"group{g}_{index}")(x)
        return x

    def head(x):
        x = keras.layers.Permute((4, 1, 2, 3), name="to_channels_first")(x)
        x = keras.layers.Flatten(data_format="channels_last", name="flatten")(x)
        for fc in ("fc1", "fc2"):
            x = keras.layers.Dense(FC_UNITS, name=f"{fc}_0")(x)
            x = common.relu(x, f"{fc}_1")
            x = keras.layers.Dropout(dropout, name=f"{fc}_2")(x)
        return keras.layers.Dense(num_classes, activation=classifier_activation, name="fc_0",
                                  dtype=common.output_dtype())(x)

    inputs, features = common.build_graph("c3d", shape, body)
    return common.finish_model(
        "c3d", {}, inputs, features, include_top=include_top, pooling=pooling,
        classifier_activation=classifier_activation,
        num_classes=num_classes, head=head, preprocessing=preprocessing, class_names=class_names,
        name=name)
