"""Loading models and reading what they carry."""
import json
import pathlib
import sys
import zipfile

import keras
import numpy as np

from keras_r3d.models import HEAD_LAYERS, VideoClassifier, float32_model
from keras_r3d.preprocessing import Preprocessing, as_contract, preprocess

# The official fine-tuning head: Dropout(0.9) + Linear for the efficient nets.
FINETUNE_DROPOUT = {"shufflenet": 0.9, "shufflenetv2": 0.9, "mobilenet": 0.9, "mobilenetv2": 0.9}


def load(path, **convert_kwargs):
    """Loads a `.keras` model, uncompiled (compile it to train: that works on
    any backend), or converts an official `.pth` checkpoint in memory
    (`convert_kwargs` as in `keras_r3d.convert.convert_checkpoint`)."""
    path = check_model_path(path)
    if path.suffix == ".pth":
        from keras_r3d.convert import convert_checkpoint

        return convert_checkpoint(path, **convert_kwargs)
    if path.suffix != ".keras":
        raise ValueError(f"{path}: expected a .keras model or an official .pth checkpoint")
    if convert_kwargs:
        raise TypeError(f"{sorted(convert_kwargs)} only apply to .pth checkpoints")
    if not zipfile.is_zipfile(path):  # Keras would say "File not found"
        raise ValueError(f"{path} is not a .keras file (a .keras file is a zip archive): damaged or "
                         "cut short?")
    try:
        return keras.saving.load_model(path, compile=False)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:  # not a Keras model
        raise ValueError(f"{path} is not a loadable .keras model: {error}"[:500]) from None


class ExportedModel:
    """An artifact of `keras_r3d.export` (a .tflite, .onnx or .engine file or a
    SavedModel folder) as `evaluate` and `classify` take a model: the contract,
    class names and output kind come from its metadata, and it takes pixel
    values (its graph normalizes them), rounded to uint8 as a decoder gives them."""

    def __init__(self, path, num_threads=None):
        from keras_r3d.runtimes import load_runtime

        self.runtime = load_runtime(path, num_threads=num_threads)
        metadata = self.runtime.metadata
        if not metadata:
            raise ValueError(f"{path} carries no keras_r3d metadata (contract, class names): "
                             "make it with python -m keras_r3d.export")
        self.preprocessing = Preprocessing.from_dict(metadata["preprocessing"])
        self.class_names = metadata["class_names"] or None
        self.outputs_probabilities = metadata["output"]["kind"] == "probabilities"
        self.normalized_in_graph = metadata["input"]["normalized_in_graph"]

    def predict_on_batch(self, pixels):
        frames = np.clip(np.round(pixels), 0, 255).astype(np.uint8)
        return self.runtime(frames if self.normalized_in_graph else preprocess(frames, self.preprocessing))

    def num_outputs(self):
        shape = (1,) + self.runtime.input_shape[1:]
        return self.runtime(np.zeros(shape, self.runtime.input_dtype)).shape[-1]


def check_model_path(path):
    """`path` as a Path, after refusing one that is absent (naming where to
    download an official checkpoint) or a training run's folder (naming its
    models)."""
    path = pathlib.Path(path)
    if not path.exists():
        from keras_r3d.convert import OFFICIAL_CHECKPOINTS, OFFICIAL_NAME

        hint = (f": {path.name} is an official checkpoint; download it from {OFFICIAL_CHECKPOINTS}"
                if OFFICIAL_NAME.match(path.name) else "")
        raise FileNotFoundError(f"No model file at {path}{hint}")
    saved = [path / name for name in ("best.keras", "last.keras") if (path / name).is_file()]
    if path.is_dir() and saved:
        raise ValueError(f"{path} is a training run's folder: pass its model, {' or '.join(map(str, saved))}")
    return path


def load_for_inference(path, num_threads=None):
    """`load` for a .keras model or official .pth, computing in float32 as its
    exports do: a model that `train --precision` saved in mixed precision runs
    as a float32 copy with the same weights (so evaluate scores what is
    deployed), with a note on stderr. An `ExportedModel` for an artifact of
    `keras_r3d.export` (`num_threads`: its runtime's CPU threads)."""
    if pathlib.Path(path).suffix in (".keras", ".pth") or not pathlib.Path(path).exists():
        model = load(path)
        full = float32_model(model)
        if full is not model:
            print(f"note: {path} computes in mixed or half precision (train --precision); running it in "
                  "float32 with the same weights, as its exports compute", file=sys.stderr)
        return full
    path = check_model_path(path)
    from keras_r3d.runtimes import ARTIFACT_SUFFIXES, is_saved_model

    if not is_saved_model(path) and path.suffix.lower() not in ARTIFACT_SUFFIXES:
        kind = "a folder without saved_model.pb" if path.is_dir() else "not a model file"
        raise ValueError(f"{path}: {kind}; a model is a .keras file, an official .pth checkpoint, or an export of "
                         "keras_r3d.export (.tflite, .onnx, .engine, a SavedModel folder)")
    return ExportedModel(path, num_threads)


def clone_model(model, **kwargs):
    """`keras.models.clone_model` (kwargs as there) of a zoo model, keeping its
    preprocessing contract, class names and architecture, which Keras' clone
    drops: it rebuilds the model class from the graph alone."""
    if not isinstance(model, VideoClassifier):
        raise TypeError(f"clone_model takes a keras_r3d model, got {type(model).__name__}")
    clone = keras.models.clone_model(model, **kwargs)
    if not isinstance(clone, VideoClassifier):
        raise ValueError("the clone is not a functional model of the same class; set its contract yourself")
    frames, height, width = clone.input_shape[1:4]  # `input_tensors` may change them
    if not (isinstance(frames, int) and isinstance(height, int) and height == width):
        raise ValueError(f"clone_model: the contract needs known frames and square frames, got input shape "
                         f"{clone.input_shape}")
    clone.preprocessing = model.preprocessing.replace(frames=frames, size=height)
    clone.class_names, clone.architecture = model.class_names, dict(model.architecture)
    return clone


def finetune(model, class_names, *, head_only=False, dropout=None, preprocessing=None):
    """A copy of the zoo `model` with a new head for `class_names`, as the
    official code fine-tunes (and `train --pretrained`); compile and fit it.

    Every layer but the head takes `model`'s weights.
    Args:
        head_only: train the head only (`--finetune=last_layer`): the other
            layers are frozen, their BatchNorm statistics included.
        dropout: the head's dropout rate; by default the official fine-tuning
            0.9 for the efficient nets (ResNets and C3D have their own).
        preprocessing: a new input contract (other frames or size, say); by
            default the model's. A dict changes only the fields it names
            (`{"size": 64}` keeps the model's mean, channel order, temporal
            downsample and fps), where `keras_r3d.build` takes one as a whole
            contract; a name or a `Preprocessing` replaces the contract.
    """
    from keras_r3d import registry

    if not isinstance(model, VideoClassifier) or not model.architecture:
        raise TypeError(f"finetune takes a keras_r3d zoo model, got {type(model).__name__}")
    if isinstance(class_names, (str, int)) or not hasattr(class_names, "__len__") or len(class_names) < 1:
        hint = f" ({class_names} generic names: [str(i) for i in range({class_names})])" \
            if isinstance(class_names, int) else ""
        raise ValueError(f"class_names must be a list of names, got {class_names!r}{hint}")
    if any(isinstance(layer, keras.layers.Identity) for layer in model.layers):  # fold_batch_norm's
        raise ValueError("finetune takes a model with its BatchNorm layers; this one's are folded into its convs "
                         "(keras_r3d.fold_batch_norm, for inference): fine-tune the model before folding")
    architecture = dict(model.architecture)
    arch = architecture.pop("arch")
    architecture.pop("num_classes", None)
    dropout = FINETUNE_DROPOUT.get(arch) if dropout is None else dropout
    architecture = registry.with_dropout(arch, architecture, dropout)
    if preprocessing is None:
        contract = model.preprocessing
    elif isinstance(preprocessing, dict):  # fields not named stay the model's, not the defaults
        contract = Preprocessing.from_dict({**model.preprocessing.to_dict(), **preprocessing})
    else:
        contract = as_contract(preprocessing)
    new = registry.build(arch, num_classes=len(class_names), class_names=list(class_names),
                         preprocessing=contract, input_shape=(contract.frames, contract.size, contract.size, 3),
                         name=model.name, **architecture)
    head = HEAD_LAYERS[arch]
    source_layers = {layer.name: layer for layer in model.layers}
    for layer in new.layers:
        if layer.name == head or not layer.weights:
            continue
        if layer.name not in source_layers:
            raise ValueError(f"the source model has no layer {layer.name!r} for {arch}")
        weights = source_layers[layer.name].get_weights()
        shapes = [w.shape for w in layer.get_weights()]
        if [w.shape for w in weights] != shapes:
            raise ValueError(f"the source layer {layer.name!r} has shapes {[w.shape for w in weights]}, "
                             f"the new model {shapes} (C3D's fc layers fix the input size)")
        layer.set_weights(weights)
    if head_only:
        for layer in new.layers:
            layer.trainable = layer.name == head
    return new


def model_info(model_or_path):
    """`{"preprocessing": {...}, "class_names": [...], "architecture": {...}}`
    of a model, or of a `.keras` file without building it."""
    if isinstance(model_or_path, keras.Model):
        config = model_or_path.get_config()
    elif isinstance(model_or_path, (str, pathlib.Path)):
        path = pathlib.Path(model_or_path)
        if not path.exists():
            raise FileNotFoundError(f"No model file at {path}")
        try:
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json"))["config"]
        except (zipfile.BadZipFile, KeyError, OSError, ValueError, TypeError) as error:  # ValueError: not JSON
            raise ValueError(f"{path} is not a keras_r3d .keras model: {error}") from None
        if not isinstance(config, dict):
            raise ValueError(f"{path} is not a keras_r3d .keras model: its config is not a JSON object")
    else:
        raise TypeError(f"model_info takes a keras_r3d model or a .keras path, got {type(model_or_path).__name__}")
    if config.get("preprocessing") is None:
        raise ValueError("Not a keras_r3d model, or one that lost its contract (keras.models.clone_model "
                         "drops it: use keras_r3d.clone_model): its config has no preprocessing contract")
    info = {key: config.get(key) for key in ("preprocessing", "class_names", "architecture")}
    info["preprocessing"] = Preprocessing.from_dict(info["preprocessing"]).to_dict()
    return info
