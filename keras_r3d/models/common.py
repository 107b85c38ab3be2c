"""What every family shares: the model class, argument checks and conv-BN units.

Layer names are the official PyTorch module paths with "." replaced by "_"
(the torch backend forbids dots): state-dict key `features.3.banch2.0.weight`
lives in layer `features_3_banch2_0`.
"""
import collections
import math
import re

import keras
import numpy as np

from keras_r3d import layers as r3d_layers
from keras_r3d.preprocessing import Preprocessing, as_contract

PACKAGE = r3d_layers.PACKAGE
BN_EPSILON = 1e-5  # PyTorch BatchNorm3d(eps=1e-5, momentum=0.1)
BN_MOMENTUM = 0.9
# The heads: logits (None, "linear") or probabilities ("softmax"), which every tool reads
# from `VideoClassifier.outputs_probabilities`.
CLASSIFIER_ACTIVATIONS = (None, "linear", "softmax")
HALF_PRECISION_POLICIES = ("mixed_float16", "mixed_bfloat16", "float16", "bfloat16")


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

    # Keras keeps its compiled train/test/predict functions; one traced under
    # another `keras_r3d.implementation` is traced again.
    def make_train_function(self, force=False):
        return super().make_train_function(force=self._implementation_changed("train") or force)

    def make_test_function(self, force=False):
        return super().make_test_function(force=self._implementation_changed("test") or force)

    def make_predict_function(self, force=False):
        return super().make_predict_function(force=self._implementation_changed("predict") or force)

    def predict(self, x, *args, **kwargs):
        # Keras on JAX traces predict without checking the input's shape, and a failed
        # trace leaves the model unusable for the process (Keras 3.15): check arrays first.
        shape, expected = getattr(x, "shape", None), self.input_shape
        if shape is not None and (len(shape) != len(expected) or any(
                want is not None and want != got for want, got in zip(expected[1:], shape[1:]))):
            hint = (": channels go last (from PyTorch's N, C, T, H, W: np.moveaxis(x, 1, -1))"
                    if len(shape) == len(expected) and shape[1] == expected[-1] else "")
            raise ValueError(f"{self.name} takes clips of shape {expected}, got {tuple(shape)}{hint}")
        return super().predict(x, *args, **kwargs)

    def save(self, filepath, *args, **kwargs):
        if str(filepath).lower().endswith((".h5", ".hdf5")):  # Keras' legacy format: the model would not load back
            raise ValueError(f"{filepath}: a keras_r3d model saves as .keras, which keeps its preprocessing "
                             "contract, class names and architecture; HDF5 keeps none of them")
        return super().save(filepath, *args, **kwargs)

    def _implementation_changed(self, step):
        traced = self.__dict__.setdefault("_traced_implementations", {})  # untracked by Keras: no state
        now = r3d_layers.current_implementation()
        changed = traced.get(step, now) != now
        traced[step] = now
        return changed

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


def _is_int(value):
    """A Python int, not a bool (numpy ints would end up in the model's config)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_choice(arch, name, value, choices):
    """`value` must be one of `choices`, as a Python number, an int where they
    are ints (a bool, a numpy scalar or 18.0 compares equal to one, but would
    end up in the model's config as it is)."""
    integers = all(_is_int(choice) for choice in choices)
    if not (_is_int(value) if integers else _is_number(value)) or value not in choices:
        raise ValueError(f"{arch}: {name} must be one of {sorted(choices)}, got {value!r}")


def check_width(arch, width_mult):
    """A width multiplier must be a positive, finite Python number."""
    if not _is_number(width_mult) or not 0 < width_mult < math.inf:
        raise ValueError(f"{arch}: width_mult must be a positive Python number, got {width_mult!r}")


def check_common_args(arch, num_classes, input_shape, include_top, pooling, dropout):
    """Validates the keyword arguments shared by every builder."""
    if not isinstance(include_top, bool):
        raise ValueError(f"{arch}: include_top must be True or False, got {include_top!r}")
    if include_top and (not _is_int(num_classes) or num_classes < 1):
        raise ValueError(f"{arch}: num_classes must be a positive Python int, got {num_classes!r}")
    if pooling not in (None, "avg"):
        raise ValueError(f"{arch}: pooling must be None or 'avg', got {pooling!r}")
    if include_top and pooling is not None:
        raise ValueError(f"{arch}: pooling={pooling!r} applies with include_top=False (the head pools already)")
    if not _is_number(dropout) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"{arch}: dropout must be a Python number in [0, 1), got {dropout!r}")
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else ()
    if len(shape) != 4 or shape[3] != 3 or any(not _is_int(d) or d < 1 for d in shape):
        raise ValueError(f"{arch}: input_shape must be (frames, height, width, 3) of Python ints, "
                         f"got {input_shape!r}")
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
        if isinstance(class_names, str):  # would be taken letter by letter
            raise ValueError(f"{arch}: class_names must be a list of names, got {class_names!r}")
        if len(class_names) != num_classes:
            raise ValueError(f"{arch}: {len(class_names)} class names for num_classes={num_classes}")
        repeated = sorted(name for name, count in collections.Counter(class_names).items() if count > 1)
        if repeated:
            raise ValueError(f"{arch}: class_names name {', '.join(map(repr, repeated[:3]))} more than once")
    else:
        if class_names is not None:
            raise ValueError(f"{arch}: class_names name the head's outputs, and include_top=False has none")
        outputs = keras.layers.GlobalAveragePooling3D(data_format="channels_last", name="avgpool")(features) \
            if pooling == "avg" else features
    frames, size = inputs.shape[1], inputs.shape[2]
    try:
        preprocessing = Preprocessing() if preprocessing is None else as_contract(preprocessing)
    except ValueError as error:
        raise ValueError(f"{arch}: preprocessing: {error}") from None
    preprocessing = preprocessing.replace(frames=frames, size=size)
    architecture = {"arch": arch, **arch_kwargs}
    if include_top:
        architecture["num_classes"] = num_classes
        if classifier_activation == "softmax":
            architecture["classifier_activation"] = "softmax"
    return VideoClassifier(inputs, outputs, name=name or arch, preprocessing=preprocessing,
                           class_names=class_names, architecture=architecture)


def build_graph(arch, input_shape, body, settings=None):
    """Runs `body(inputs)`; a shape that the architecture cannot take becomes
    a ValueError that names the architecture and the input shape, or its
    `settings` (a dict) where they give a grouped conv channels its groups do
    not divide."""
    inputs = keras.Input(shape=input_shape, name="frames")
    try:
        return inputs, body(inputs)
    except ValueError as error:
        layer, message = _innermost_layer(error), _plain_message(error)
        where = f" (layer {layer})" if layer and layer not in message else ""
        if settings and isinstance(error, r3d_layers.GroupsMismatch):
            cause = "with " + " and ".join(f"{key}={value!r}" for key, value in settings.items())
        else:
            cause = f"for input_shape={input_shape}"
        raise ValueError(f"{arch} cannot be built {cause}{where}: {message}") from None


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


def output_dtype():
    """The output layer's dtype: float32 under a mixed policy (Keras' advice,
    for a stable softmax and loss), else the global policy's."""
    return "float32" if keras.config.dtype_policy().name.startswith("mixed_") else None


def classifier(num_classes, dropout, classifier_activation):
    """Global average pool, dropout, linear: the efficient nets' head."""

    def head(x):
        x = keras.layers.GlobalAveragePooling3D(data_format="channels_last", name="avgpool")(x)
        x = keras.layers.Dropout(dropout, name="classifier_0")(x)
        return keras.layers.Dense(num_classes, activation=classifier_activation, name="classifier_1",
                                  dtype=output_dtype())(x)

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


def float32_model(model):
    """`model` computing in float32: a copy with the same weights where a
    layer computes in (mixed) float16 or bfloat16, as `train --precision`
    builds, else `model` itself. What an export starts from (TFLite cannot
    convert half-precision ops), and what `load_for_inference` returns."""
    config = model.get_config()
    halved = False
    for entry in config["layers"]:
        dtype = entry["config"].get("dtype")
        if isinstance(dtype, dict) and dtype["config"]["name"] in HALF_PRECISION_POLICIES:
            entry["config"]["dtype"], halved = "float32", True
    if not halved:
        return model
    copy = model.__class__.from_config(config)
    for layer in copy.layers:
        layer.set_weights([w.astype(np.float32) for w in model.get_layer(layer.name).get_weights()])
    return copy


def _folded_conv(conv, bn):
    """The kernel and bias of `conv` followed by `bn` in inference mode."""
    weights = {w.path.rsplit("/", 1)[-1]: keras.ops.convert_to_numpy(w).astype(np.float64)
               for w in bn.weights}
    scale = weights.get("gamma", 1.0) / np.sqrt(weights["moving_variance"] + bn.epsilon)
    shift = weights.get("beta", 0.0) - weights["moving_mean"] * scale
    kernel = keras.ops.convert_to_numpy(conv.kernel).astype(np.float64)
    bias = keras.ops.convert_to_numpy(conv.bias).astype(np.float64) if conv.use_bias else 0.0
    return (kernel * scale).astype(np.float32), (bias * scale + shift).astype(np.float32)
