"""Official Efficient-3DCNNs PyTorch checkpoints -> keras_r3d models.

    python -m keras_r3d.convert jester_shufflenet_0.5x_G3_RGB_16_best.pth --output model.keras

The architecture comes from, in increasing priority: the official file name
(`<dataset>_<arch>_<width>x[_G<g>]_RGB_16_best.pth`,
`<dataset>_<arch>_<depth>_RGB_16_best.pth`), the checkpoint's `arch` key and
the settings its tensor shapes determine (a file name that disagrees with them
gets a warning), then explicit arguments.
"""
import collections
import hashlib
import pathlib
import re
import sys
import warnings

import numpy as np

from keras_r3d import registry
from keras_r3d.files import probe_writable, save_model_atomic
from keras_r3d.models import HEAD_LAYERS
from keras_r3d.preprocessing import DATASET_PREPROCESSING

LABELS_DIR = pathlib.Path(__file__).with_name("labels")
DATASETS = tuple(DATASET_PREPROCESSING)
# sha256 of the official checkpoints (okankop/Efficient-3DCNNs release).
OFFICIAL_SHA256 = {
    "jester_shufflenet_0.5x_G3_RGB_16_best.pth": "31d64fc6b31fb28d09f49f7e5bc38c4dc63727a76bc5bb1771614ff5e1784d60",
    "kinetics_mobilenet_0.5x_RGB_16_best.pth": "b752cfaba00b38e79b576cf390ce5273e5a4670c57aec28070b77a40b5644a1f",
    "kinetics_mobilenetv2_0.2x_RGB_16_best.pth": "64d4b528c3014ff86d9b6a9b8beafbd7959793966de6a90e62b5902bcd260574",
    "kinetics_shufflenet_0.5x_G3_RGB_16_best.pth": "7cf2131f7efd2e1d175a62e6420202b6c3153569c0312a504c195095f5f31637",
    "kinetics_shufflenetv2_0.25x_RGB_16_best.pth": "8d61b847a21ef1a39f95ccc30ec1d64a10ec1438f91b299425641fd200812acb",
    "kinetics_resnet_18_RGB_16_best.pth": "f8a7ff0676257957998414d95bb86e662be1cebee86e899f73893bd09efd60a2",
}
# Where users download the official checkpoints (its README links the folder).
OFFICIAL_CHECKPOINTS = "https://github.com/okankop/Efficient-3DCNNs (README: Pretrained models)"
OFFICIAL_NAME = re.compile(
    rf"^(?P<dataset>{'|'.join(DATASETS)})_(?P<arch>[a-z0-9]+)_"
    r"(?:(?P<width>\d+(?:\.\d+)?)x(?:_G(?P<groups>\d+))?|(?P<depth>\d+))_RGB_\d+_best\.pth$")
# Keras weight names per layer type, in PyTorch parameter order.
BN_PARAMS = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
IGNORED_BUFFERS = ("num_batches_tracked",)
# The stem conv of the width-scaled families, and its width at 1.0x.
STEM_WEIGHTS = {"shufflenet": ("conv1.0.weight", 24), "mobilenet": ("features.0.0.weight", 32),
                "mobilenetv2": ("features.0.0.weight", 32)}


class CheckpointMismatch(ValueError):
    """A checkpoint whose tensors do not fit the architecture."""


def read_state_dict(path):
    """The checkpoint's tensors as numpy arrays (without `module.`), and its
    `arch` entry if any."""
    import torch

    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises pickle, zip and runtime errors alike
        keras_model = ": a .keras file is a Keras model already, which every tool takes as it is" \
            if str(path).endswith(".keras") else ""
        raise ValueError(f"{path} is not a PyTorch checkpoint ({type(error).__name__}){keras_model}") from None
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        keys = sorted(map(str, checkpoint))[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"{path}: no state dict found (a dict of tensors, or one under 'state_dict' as the "
                         f"official training code saves it); the file holds {keys}")
    arch = checkpoint.get("arch") if "state_dict" in checkpoint else None
    arrays = {}
    for key, tensor in state.items():
        tensor = tensor.detach().cpu()
        if tensor.is_floating_point():  # bfloat16 has no numpy type; float32 is what the models hold
            tensor = tensor.float()
        arrays[key[len("module."):] if key.startswith("module.") else key] = tensor.numpy()
    return arrays, arch


def parse_official_name(path):
    """The settings encoded in an official file name, or {}."""
    match = OFFICIAL_NAME.match(pathlib.Path(path).name)
    if not match:
        return {}
    found = {"dataset": match["dataset"], "arch": match["arch"]}
    if match["width"]:
        found["width_mult"] = float(match["width"])
    if match["groups"]:
        found["groups"] = int(match["groups"])
    if match["depth"]:
        found["depth"] = int(match["depth"])
    return found


def read_lines(path):
    """The non-blank lines of a text file, stripped. A byte-order mark (Excel,
    Notepad) is not part of the first line."""
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_labels(path):
    """Class names from a class list: `classInd.txt` lines `<index> <name>`
    with indices 1..K in any order, or one name per line. Checkpoints
    (--labels) and datasets (tfrecords_tools) read their class lists here."""
    lines = read_lines(path)
    if not lines:
        raise ValueError(f"{path}: no classes")
    indexed = [re.fullmatch(r"(\d+)\s+(.+)", line) for line in lines]
    if any(indexed):
        unindexed = next((line for line, match in zip(lines, indexed) if not match), None)
        if unindexed is not None:
            raise ValueError(f"{path}: expected '<index> <class name>' on every line, got {unindexed!r}")
        by_index = {int(match[1]): match[2] for match in indexed}
        if sorted(by_index) != list(range(1, len(lines) + 1)):
            raise ValueError(f"{path}: class indices must be 1..{len(lines)}, each once")
        lines = [by_index[index] for index in range(1, len(lines) + 1)]
    repeated = sorted(name for name, count in collections.Counter(lines).items() if count > 1)
    if repeated:
        raise ValueError(f"{path}: class names listed twice: {repeated[:3]}")
    return lines


def _stage_blocks(state):
    return tuple(len({k.split(".")[1] for k in state if k.startswith(f"layer{i}.")}) for i in (1, 2, 3, 4))


def _infer_from_tensors(arch, state):
    """Settings that the tensor shapes determine unambiguously."""
    from keras_r3d.models import resnet, shufflenet_v2

    found = {}
    if arch in ("resnet", "resnext"):
        found["shortcut"] = "B" if any(".downsample.0.weight" in k for k in state) else "A"
        blocks = _stage_blocks(state)
        if arch == "resnet":
            kind = "bottleneck" if "layer1.0.conv3.weight" in state else "basic"
            depths = [d for d, entry in resnet.RESNET_DEPTHS.items() if entry == (kind, blocks)]
        else:
            depths = [d for d, entry in resnet.RESNEXT_DEPTHS.items() if entry == blocks]
            if "layer1.0.conv2.weight" in state:
                mid, per_group = state["layer1.0.conv2.weight"].shape[:2]
                found["cardinality"] = int(mid // per_group)
        if len(depths) == 1:
            found["depth"] = depths[0]
    elif arch == "shufflenet" and "layer1.1.conv3.weight" in state:
        per_group = state["layer1.1.conv3.weight"].shape[1]
        found["groups"] = int(state["layer1.1.conv2.weight"].shape[0] // per_group)
    elif arch == "squeezenet" and "features.0.weight" in state:
        found["version"] = 1.0 if state["features.0.weight"].shape[2] == 7 else 1.1
    # The width: the registry width whose channels match, if exactly one does.
    if arch == "shufflenetv2" and "conv_last.0.weight" in state:
        value, channels = state["conv_last.0.weight"].shape[1], lambda w: shufflenet_v2.STAGE_WIDTHS[w][2]
    elif arch in STEM_WEIGHTS and STEM_WEIGHTS[arch][0] in state:
        key, stem = STEM_WEIGHTS[arch]
        value, channels = state[key].shape[0], lambda w: int(stem * w)
    else:
        return found
    widths = {spec.kwargs["width_mult"] for spec in map(registry.get_spec, registry.list_models(arch))}
    matches = [w for w in sorted(widths) if channels(w) == value]
    if len(matches) == 1:
        found["width_mult"] = matches[0]
    return found


def resolve_settings(file_name, state, overrides, checkpoint_arch=None):
    """Merges the official file name, the checkpoint (its `arch` key and tensor
    shapes) and `overrides`, in increasing priority."""
    named = parse_official_name(file_name)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    found = {"arch": checkpoint_arch} if checkpoint_arch else {}
    arch = overrides.get("arch", found.get("arch", named.get("arch")))
    if arch not in registry.BUILDERS:
        source = file_name or "the state dict"
        reason = (f"its arch is {arch!r}" if arch else "its file name is not an official one and it has no "
                  "'arch' entry")
        raise ValueError(f"cannot tell the architecture of {source}: {reason}; pass --arch, one of "
                         f"{', '.join(registry.BUILDERS)}")
    found.update(_infer_from_tensors(arch, state))
    named = {k: v for k, v in named.items() if k in ("arch", "dataset") or k in registry.builder_kwargs(arch)}
    differ = [f"{k}={named[k]!r} where the checkpoint has {found[k]!r}"
              for k in found if k in named and k not in overrides and named[k] != found[k]]
    if differ:
        warnings.warn(f"{file_name}: the file name says {'; '.join(differ)}: converting the checkpoint's "
                      "(pass the settings as flags to choose)", stacklevel=3)
    settings = {**named, **found, **overrides}
    # The head's kernel, by the official name of its layer: its first dimension is the class count.
    head_weight = f"{HEAD_LAYERS[arch]}_weight"
    classifier_key = next((key for key in state if key.replace(".", "_") == head_weight), None)
    if classifier_key is not None:
        classes = int(state[classifier_key].shape[0])
        if settings.setdefault("num_classes", classes) != classes:
            raise ValueError(f"num_classes={settings['num_classes']}, but the checkpoint's classifier "
                             f"({classifier_key}) has {classes} classes: conversion keeps the checkpoint's head "
                             "(python -m keras_r3d.train --pretrained gives a model a new one)")
    return settings


def _assign(model, state, headless=False):
    """Copies every tensor into its Keras weight; raises on any mismatch
    (`headless`: the tensors of layers the model lacks are the head's)."""
    layers = {layer.name: layer for layer in model.layers}
    assigned = {}  # id(keras variable) -> torch key
    misfits = set()  # id(keras variable) whose tensor has another shape
    problems = []
    for key, value in state.items():
        module, param = key.rsplit(".", 1)
        if param in IGNORED_BUFFERS:
            continue
        layer = layers.get(module.replace(".", "_"))
        if layer is None and headless:
            continue
        target = _target_weight(layer, param) if layer is not None else None
        if target is None:
            problems.append(f"{key} {tuple(value.shape)}: no matching Keras weight")
            continue
        array = _to_keras_layout(param, value)
        if tuple(target.shape) != array.shape:
            problems.append(f"{key} {tuple(value.shape)}: Keras {target.path} expects "
                            f"{tuple(target.shape)} after transposition, got {array.shape}")
            misfits.add(id(target))
            continue
        if id(target) in assigned:
            problems.append(f"{key}: {target.path} already set from {assigned[id(target)]}")
            continue
        target.assign(array)
        assigned[id(target)] = key
    missing = [w.path for w in model.weights if id(w) not in assigned and id(w) not in misfits]
    problems += [f"Keras weight {path}: no tensor in the checkpoint" for path in missing]
    if problems:
        shown = "\n  ".join(problems[:8])
        more = f"\n  ... and {len(problems) - 8} more" if len(problems) > 8 else ""
        raise CheckpointMismatch(f"the checkpoint does not fit {model.name}:\n  {shown}{more}")
    return assigned


def _target_weight(layer, param):
    import keras

    from keras_r3d import layers as r3d_layers

    if isinstance(layer, keras.layers.BatchNormalization):
        name = BN_PARAMS.get(param)
    elif isinstance(layer, (r3d_layers.Conv3D, keras.layers.Dense)):
        name = {"weight": "kernel", "bias": "bias"}.get(param)
    else:
        return None
    return getattr(layer, name, None) if name else None


def _to_keras_layout(param, value):
    """PyTorch (out, in/g, kt, kh, kw) -> (kt, kh, kw, in/g, out); (out, in) -> (in, out)."""
    if param != "weight" or value.ndim == 1:
        return value
    if value.ndim == 5:
        return np.transpose(value, (2, 3, 4, 1, 0))
    return value.T


def check_sha256(path, strict=False):
    """Warns (raises with strict) when a known official file has the wrong hash."""
    expected = OFFICIAL_SHA256.get(pathlib.Path(path).name)
    if expected is None:
        return None
    digest = hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()
    if digest != expected:
        message = (f"{path}: sha256 {digest} differs from the official file's {expected}: a damaged download, "
                   "or another checkpoint under an official name")
        if strict:
            raise ValueError(message)
        warnings.warn(message, stacklevel=2)
    return digest == expected


def default_class_names(dataset, num_classes):
    """The bundled class list of `dataset`, or `class_000`... without one."""
    if dataset is None:
        return None
    names = read_labels(LABELS_DIR / f"{dataset}.txt")
    if num_classes is not None and len(names) != num_classes:
        raise ValueError(f"the bundled {dataset} list has {len(names)} classes, not {num_classes}; "
                         "pass --labels with the model's class list")
    return names


def convert_checkpoint(path, *, labels=None, dataset=None, strict=False, **overrides):
    """Builds the Keras model of an official checkpoint and loads its weights.

    Args:
        path: the `.pth` file.
        labels: a class list file (classInd lines or one name per line), or
            the class names themselves (also as `class_names=`).
        dataset: "jester", "kinetics" or "ucf101": selects the preprocessing
            contract and the bundled class names; read from official file names.
        strict: fail, instead of warning, when a known official file name has
            the wrong sha256.
        **overrides: `arch` and builder kwargs (`width_mult`, `groups`,
            `depth`, `shortcut`, `cardinality`, `version`, `num_classes`,
            `input_shape`, ...), taking precedence over what is inferred;
            with `include_top=False` the head's tensors are left out.
    Returns:
        A `VideoClassifier` whose every weight came from the checkpoint.
    Raises:
        CheckpointMismatch: naming the first tensors that do not fit.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}")
    official = check_sha256(path, strict=strict)
    try:
        state, checkpoint_arch = read_state_dict(path)
    except ValueError:
        if official is False:  # a known file that does not read: a broken download
            raise ValueError(f"{path}: a damaged or incomplete download (it does not read as a checkpoint and "
                             f"its sha256 is not the official file's); download it again from "
                             f"{OFFICIAL_CHECKPOINTS}") from None
        raise
    return convert_state_dict(state, labels=labels, dataset=dataset, file_name=path.name,
                              checkpoint_arch=checkpoint_arch, **overrides)


def convert_state_dict(state, *, labels=None, dataset=None, file_name=None, checkpoint_arch=None,
                       **overrides):
    """`convert_checkpoint` for a state dict of numpy arrays (official names,
    no `module.` prefix); `file_name` is parsed as an official file name, and
    `checkpoint_arch` is the checkpoint's `arch` entry."""
    if "class_names" in overrides:  # the builders' name for labels
        if labels is not None:
            raise TypeError("pass labels= or class_names=, not both")
        labels = overrides.pop("class_names")
    settings = resolve_settings(file_name or "", state, overrides, checkpoint_arch)
    if dataset is not None and dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    arch = settings.pop("arch")
    num_classes = settings.get("num_classes")
    named_dataset = settings.pop("dataset", None)
    unknown_dataset = "the data set is not in the file name"
    if dataset is None and named_dataset is not None:  # a renamed file's name may not fit its classes
        bundled = len(read_labels(LABELS_DIR / f"{named_dataset}.txt"))
        if num_classes in (None, bundled):
            dataset = named_dataset
        else:
            unknown_dataset = (f"the file name says {named_dataset}, whose official models have {bundled} "
                               f"classes, not this one's {num_classes}")
    headless = settings.get("include_top") is False  # a feature extractor: no classes, no head tensors
    if headless:
        class_names = None
    elif isinstance(labels, (list, tuple)):
        class_names = [str(name) for name in labels]
    else:
        class_names = read_labels(labels) if labels else default_class_names(dataset, num_classes)
    if class_names is not None and num_classes is None:  # no classifier found: the overrides do not fit
        settings["num_classes"] = num_classes = len(class_names)  # so that _assign names the tensors
    if class_names is not None and len(class_names) != num_classes:
        source = "the class names" if isinstance(labels, (list, tuple)) else labels
        raise ValueError(f"{source}: {len(class_names)} labels for num_classes={num_classes}")
    if dataset is not None:
        settings.setdefault("preprocessing", DATASET_PREPROCESSING[dataset])
    elif "preprocessing" not in settings:
        likely = [name for name in DATASETS if len(read_labels(LABELS_DIR / f"{name}.txt")) == num_classes]
        names = "" if headless or labels else " and generic class names"
        warnings.warn(f"{file_name or 'the state dict'}: {unknown_dataset}, so the model gets the default "
                      f"preprocessing contract{names}; pass --dataset {' or '.join(likely or DATASETS)} for the "
                      "official ones", stacklevel=2)
    try:
        model = registry.build(arch, class_names=class_names, **settings)
    except ValueError as error:  # a TypeError (an unknown argument) is the caller's, as it is
        given = ", ".join(f"{key}={value!r}" for key, value in overrides.items()
                          if key not in ("arch", "preprocessing"))
        raise CheckpointMismatch(f"cannot build the checkpoint's {registry.describe({'arch': arch, **settings})}"
                                 f"{f' with {given}' if given else ''}: {error}") from None
    try:
        _assign(model, state, headless=headless)
    except CheckpointMismatch as error:
        if "width_mult" in registry.builder_kwargs(arch) and "width_mult" not in settings:
            raise CheckpointMismatch(f"{error}\nIts width is not an official one or not in its file name: pass "
                                     "--width_mult") from None
        raise
    return model


def main(argv):
    from absl import flags

    f = flags.FLAGS
    if len(argv) != 2:
        raise SystemExit("usage: python -m keras_r3d.convert CKPT.pth --output X.keras [flags]")
    output = pathlib.Path(f.output)
    if output.suffix != ".keras":
        print(f"error: --output {output}: the model is written as a .keras file", file=sys.stderr)
        return 1
    if f.labels and not pathlib.Path(f.labels).is_file():
        print(f"error: --labels {f.labels}: no such file", file=sys.stderr)
        return 1
    overrides = registry.architecture_flags(f.flag_values_dict())
    if f.num_classes is not None:
        overrides["num_classes"] = f.num_classes
    try:
        probe_writable(output.parent, f"--output {output}")
        model = convert_checkpoint(argv[1], labels=f.labels, dataset=f.dataset, strict=f.strict,
                                   **overrides)
        save_model_atomic(model, output)
    except (ValueError, TypeError, OSError) as error:  # TypeError: a flag the arch does not take
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Wrote {output}: {registry.describe(model.architecture)} with {len(model.class_names)} classes, "
          f"preprocessing {model.preprocessing.to_dict()}", file=sys.stderr)
    return 0


def _define_flags():
    from absl import flags

    flags.DEFINE_string("output", None, "Where to write the .keras model.", required=True)
    flags.DEFINE_string("labels", None, "Class list: classInd lines or one name per line.")
    flags.DEFINE_enum("dataset", None, list(DATASETS), "Preprocessing contract and bundled labels.")
    flags.DEFINE_bool("strict", False, "Fail when a known official file has the wrong sha256.")
    registry.define_architecture_flags(flags.FLAGS, "Architecture (else inferred).")
    flags.adopt_module_key_flags(registry, flags.FLAGS)  # listed in --help, not only --helpfull
    flags.DEFINE_integer("num_classes", None, "Class count (else read from the classifier).")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    from keras_r3d.interrupts import exit_code
    from keras_r3d.text import plain_warnings

    plain_warnings()
    app.run(lambda argv: sys.exit(exit_code(main, argv)))
