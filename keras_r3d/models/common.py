"""What every family shares: the model class, argument checks and conv-BN units.

Layer names are the official PyTorch module paths with "." replaced by "_"
(the torch backend forbids dots): state-dict key `features.3.banch2.0.weight`
lives in layer `features_3_banch2_0`.
"""
import re

import keras
import numpy as np

from keras_r3d import layers as r3d_layers
from keras_r3d.preprocessing import DATASET_PREPROCESSING, Preprocessing

PACKAGE = r3d_layers.PACKAGE
BN_EPSILON = 1e-5  # PyTorch BatchNorm3d(eps=1e-5, momentum=0.1)
BN_MOMENTUM = 0.9
# The heads: logits (None, "linear") or probabilities ("softmax"), which every tool reads
# from `VideoClassifier.outputs_probabilities`.
CLASSIFIER_ACTIVATIONS = (None, "linear", "softmax")


@keras.saving.register_keras_serializable(PACKAGE)
class VideoClassifier(keras.Model):
    """A functional zoo model that also carries its preprocessing contract,
    class names and architecture in its config (and so in `.keras` files)."""

    def __init__(self, *args, preprocessing=None, class_names=None, architecture=None, **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(preprocessing, dict):
            preprocessing = Preprocessing.from_dict(preprocessing)
        self.preprocessing = preprocessing
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.architecture = dict(architecture or {})

    @property
    def outputs_probabilities(self):
        """True for a softmax head (`classifier_activation="softmax"`), else logits."""
        return self.architecture.get("classifier_activation") == "softmax"

    def get_config(self):
        return {
            **super().get_config(),
            "preprocessing": None if self.preprocessing is None else self.preprocessing.to_dict(),
            "class_names": self.class_names,
            "architecture": self.architecture,
        }


def check_common_args(arch, num_classes, input_shape, include_top, pooling, dropout):
    """Validates the keyword arguments shared by every builder."""
    if include_top and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"{arch}: num_classes must be a positive int, got {num_classes!r}")
    if pooling not in (None, "avg"):
        raise ValueError(f"{arch}: pooling must be None or 'avg', got {pooling!r}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"{arch}: dropout must be in [0, 1), got {dropout!r}")
    shape = tuple(input_shape)
    if len(shape) != 4 or shape[3] != 3 or any(not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(f"{arch}: input_shape must be (frames, height, width, 3), got {input_shape!r}")
    if shape[1] != shape[2]:
        raise ValueError(f"{arch}: frames must be square (height == width), got {input_shape!r}")
    return shape


def finish_model(arch, arch_kwargs, inputs, features, *, include_top, pooling, classifier_activation, head,
                 num_classes, preprocessing, class_names, name):
    """Adds the head (or pooling) and wraps the graph in a VideoClassifier."""
    if classifier_activation not in CLASSIFIER_ACTIVATIONS:
        raise ValueError(f"{arch}: classifier_activation must be one of {CLASSIFIER_ACTIVATIONS}, "
                         f"got {classifier_activation!r}")
    if include_top:
        outputs = head(features)
        if class_names is None:
            class_names = [f"class_{i:03d}" for i in range(num_classes)]
        if len(class_names) != num_classes:
            raise ValueError(f"{arch}: {len(class_names)} class names for num_classes={num_classes}")
    else:
        outputs = keras.layers.GlobalAveragePooling3D(name="avgpool")(features) \
            if pooling == "avg" else features
        class_names = None
    frames, size = inputs.shape[1], inputs.shape[2]
    if preprocessing is None:
        preprocessing = Preprocessing(frames=frames, size=size)
    elif isinstance(preprocessing, dict):
        preprocessing = Preprocessing.from_dict(preprocessing)
    elif isinstance(preprocessing, str) and preprocessing in DATASET_PREPROCESSING:
        preprocessing = DATASET_PREPROCESSING[preprocessing]
    elif not isinstance(preprocessing, Preprocessing):
        raise ValueError(f"{arch}: preprocessing must be a Preprocessing, a dict or a data set's name "
                         f"({', '.join(DATASET_PREPROCESSING)}), got {preprocessing!r}")
    preprocessing = preprocessing.replace(frames=frames, size=size)
    architecture = {"arch": arch, **arch_kwargs}
    if include_top:
        architecture["num_classes"] = num_classes
        if classifier_activation == "softmax":
            architecture["classifier_activation"] = "softmax"
    return VideoClassifier(inputs, outputs, name=name or arch, preprocessing=preprocessing,
                           class_names=class_names, architecture=architecture)


def build_graph(arch, input_shape, body):
    """Runs `body(inputs)`; a shape that the architecture cannot take becomes
    a ValueError that names the architecture and the input shape."""
    inputs = keras.Input(shape=input_shape, name="frames")
    try:
        return inputs, body(inputs)
    except ValueError as error:
        layer, message = _innermost_layer(error), _plain_message(error)
        where = f" (layer {layer})" if layer and layer not in message else ""
        raise ValueError(f"{arch} cannot be built for input_shape={input_shape}{where}: {message}") from None


def _plain_message(error):
    """The message of `error` without Keras' wrapping of a layer call's error
    (its terminal bold codes, "Exception encountered when calling" and the
    call's arguments)."""
    parts = [part.strip() for part in re.split(r"\x1b\[[0-9;]*m", str(error))]
    kept = [part for part in parts
            if part and not part.startswith(("Exception encountered when calling", "Arguments received by"))]
    return kept[0] if kept else str(error)


def _innermost_layer(error):
    """The name of the innermost Keras layer whose call raised `error`, or None."""
    name, frame = None, error.__traceback__
    while frame is not None:
        candidate = frame.tb_frame.f_locals.get("self")
        if isinstance(candidate, keras.layers.Layer):
            name = candidate.name
        frame = frame.tb_next
    return name


def batch_norm(x, name):
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)


def relu(x, name, max_value=None):
    """A ReLU (or ReLU6) layer: counted by `profile` as Table 8's counter did."""
    return keras.layers.ReLU(max_value=max_value, name=name)(x)


def conv(x, filters, kernel_size, name, strides=1, groups=1, use_bias=False, padding=None):
    """A zoo Conv3D with PyTorch's `padding=kernel_size // 2` unless given."""
    if padding is None:
        padding = tuple(k // 2 for k in r3d_layers._triple(kernel_size, "kernel_size"))
    return r3d_layers.Conv3D(filters, kernel_size, strides=strides, padding=padding, groups=groups,
                             use_bias=use_bias, name=name)(x)


def classifier(num_classes, dropout, classifier_activation, dense_name="classifier_1",
               dropout_name="classifier_0"):
    """Global average pool, dropout, linear: the efficient nets' head."""

    def head(x):
        x = keras.layers.GlobalAveragePooling3D(name="avgpool")(x)
        x = keras.layers.Dropout(dropout, name=dropout_name)(x)
        return keras.layers.Dense(num_classes, activation=classifier_activation, name=dense_name)(x)

    return head


def fold_batch_norm(model):
    """An inference copy of `model` with each BatchNormalization that is the
    only consumer of a `Conv3D` folded into that conv's kernel and bias.

    Computes what `model(x, training=False)` computes, with one op fewer per
    conv (on a GPU, XLA fuses the bias and ReLU into the conv). The BN layers
    become `Identity` layers of the same names; other layers keep their
    weights. Returns `model` itself if no BN folds. Not for training: the BN
    statistics are gone.
    """
    folds = {}  # conv name -> the BN layer that follows it
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or len(layer._inbound_nodes) != 1:
            continue
        parents = layer._inbound_nodes[0].parent_nodes
        conv = parents[0].operation if len(parents) == 1 else None
        rank = len(layer.input.shape)
        if (isinstance(conv, r3d_layers.Conv3D) and len(conv._outbound_nodes) == 1
                and layer.axis % rank == rank - 1):
            folds[conv.name] = layer
    if not folds:
        return model
    bn_names = {bn.name for bn in folds.values()}
    config = model.get_config()
    for entry in config["layers"]:
        name = entry["config"]["name"]
        if name in folds:
            entry["config"]["use_bias"] = True
        elif name in bn_names:
            entry.update(module="keras.layers", class_name="Identity", registered_name=None,
                         config={"name": name, "dtype": entry["config"].get("dtype"),
                                 "trainable": False})
            for node in entry["inbound_nodes"]:
                node["kwargs"] = {}  # BN's `training` and `mask`
    folded = model.__class__.from_config(config)
    for layer in folded.layers:
        source = model.get_layer(layer.name)
        if layer.name in folds:
            kernel, bias = _folded_conv(source, folds[layer.name])
            layer.set_weights([kernel, bias])
        elif layer.name not in bn_names:
            layer.set_weights(source.get_weights())
    return folded


def _folded_conv(conv, bn):
    """The kernel and bias of `conv` followed by `bn` in inference mode."""
    weights = {w.path.rsplit("/", 1)[-1]: keras.ops.convert_to_numpy(w).astype(np.float64)
               for w in bn.weights}
    scale = weights.get("gamma", 1.0) / np.sqrt(weights["moving_variance"] + bn.epsilon)
    shift = weights.get("beta", 0.0) - weights["moving_mean"] * scale
    kernel = keras.ops.convert_to_numpy(conv.kernel).astype(np.float64)
    bias = keras.ops.convert_to_numpy(conv.bias).astype(np.float64) if conv.use_bias else 0.0
    return (kernel * scale).astype(np.float32), (bias * scale + shift).astype(np.float32)
