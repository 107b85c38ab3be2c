"""Official checkpoint import: exact logits, every architecture's state dict."""
import gzip
import json
import pathlib
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_r3d
from keras_r3d import convert
from tests.conftest import OFFICIAL_CHECKPOINT, REFERENCE

SHAPES = json.loads(gzip.open(pathlib.Path(__file__).with_name("data") / "official_state_dict_shapes.json.gz",
                              "rt").read())


@pytest.fixture(scope="module")
def official_model(fixtures_dir):
    return convert.convert_checkpoint(OFFICIAL_CHECKPOINT)


def test_official_checkpoint_reproduces_reference_logits(official_model):
    clips = sorted(REFERENCE.glob("*.npz"))
    assert len(clips) >= 7
    for path in clips:
        reference = np.load(path)
        if "frames_uint8_thwc" in reference:
            x = keras_r3d.preprocess(reference["frames_uint8_thwc"][None], official_model.preprocessing)
            np.testing.assert_allclose(x, reference["input_ncdhw"].transpose(0, 2, 3, 4, 1), atol=1e-4)
        else:  # the seeded noise probe
            x = reference["input_ncdhw"].transpose(0, 2, 3, 4, 1)
        logits = np.asarray(official_model(x, training=False))
        tolerance = 1e-4 * max(1.0, np.abs(reference["logits"]).max())
        assert np.abs(logits - reference["logits"]).max() <= tolerance, path.name


def test_official_checkpoint_settings(official_model):
    assert official_model.architecture == {"arch": "shufflenet", "width_mult": 0.5, "groups": 3,
                                           "num_classes": 27}
    assert official_model.preprocessing == keras_r3d.preprocessing.DATASET_PREPROCESSING["jester"]
    assert official_model.class_names[:2] == ["Doing_other_things", "Drumming_Fingers"]
    assert len(official_model.class_names) == 27


def _tagged_state(shapes):
    """Each tensor filled with its own index, so every Keras weight shows
    which tensor it came from (cheap even for ResNet-200)."""
    return {k: np.full(s, i, np.float32) if s else np.int64(3) for i, (k, s) in enumerate(shapes.items())}


@pytest.mark.parametrize("name", sorted(SHAPES["models"]))
def test_every_configuration_matches_the_official_model(name):
    """Official names and shapes (from the official code): every tensor lands
    in exactly one Keras weight, in the Keras layout; Table 8's counts hold."""
    spec = keras_r3d.registry.get_spec(name)
    state = _tagged_state(SHAPES["models"][name])
    conv_key = next(k for k, v in state.items() if v.ndim == 5 and v.shape[2] > 1)
    state[conv_key] = np.random.default_rng(0).standard_normal(state[conv_key].shape).astype(np.float32)
    model = convert.convert_state_dict(state, arch=spec.arch)  # the rest is inferred from shapes
    assert {k: v for k, v in model.architecture.items() if k != "num_classes"} == \
        {"arch": spec.arch, **spec.kwargs}
    assert model.architecture["num_classes"] == SHAPES["num_classes"]
    assert keras_r3d.registry.describe(model.architecture) == name

    tags = sorted(float(np.asarray(w.value).flat[0]) for w in model.weights)
    expected = sorted(float(v.flat[0]) for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert tags == expected  # each tensor used exactly once
    layer = model.get_layer(conv_key.rsplit(".", 1)[0].replace(".", "_"))
    np.testing.assert_array_equal(np.asarray(layer.kernel), state[conv_key].transpose(2, 3, 4, 1, 0))
    if spec.table8:  # Table 8's exact counts, measured on the official models
        counts = keras_r3d.profile(model)
        assert counts["trainable_params"] == spec.table8["trainable_params_600"]
        assert counts["macs"] == spec.table8["macs_conv_and_dense"]
        assert counts["flops_paper"] == pytest.approx(spec.table8["flops_paper_convention"], rel=2e-5)


def test_profile_counts_the_linear_head_as_table8s_counter():
    # thop's nn.Linear: out * (2 * in - 1) operations; the pooled features before it count nothing more.
    kwargs = {"width_mult": 0.25, "input_shape": (8, 32, 32, 3)}
    full = keras_r3d.profile(keras_r3d.ShuffleNetV2_3D(num_classes=7, **kwargs))
    features = keras_r3d.profile(keras_r3d.ShuffleNetV2_3D(include_top=False, pooling="avg", **kwargs))
    assert full["flops_paper"] - features["flops_paper"] == 7 * (2 * 1024 - 1)
    assert full["macs"] - features["macs"] == 7 * 1024


def test_mismatched_checkpoint_names_first_bad_tensors():
    state = _tagged_state(SHAPES["models"]["ShuffleNetV2-0.5x"])
    state["features.0.banch2.0.weight"] = np.zeros((7, 24, 1, 1, 1), np.float32)
    del state["conv_last.1.running_var"]
    with pytest.raises(convert.CheckpointMismatch) as error:
        convert.convert_state_dict(state, arch="shufflenetv2", width_mult=0.5)
    message = str(error.value)
    assert "features.0.banch2.0.weight" in message and "conv_last_1/moving_variance" in message
    # A tensor of another shape is named once, not also as missing.
    state = _tagged_state(SHAPES["models"]["ShuffleNetV2-0.5x"])
    state["conv_last.0.weight"] = state["conv_last.0.weight"][:-1]
    with pytest.raises(convert.CheckpointMismatch) as error:
        convert.convert_state_dict(state, arch="shufflenetv2", width_mult=0.5)
    assert str(error.value).count("conv_last_0/kernel") == 1 and "no tensor" not in str(error.value)
    # A wrong --arch finds no classifier: the class count comes from the data set's list, and
    # the error names the tensors, not the count.
    state = _tagged_state(SHAPES["models"]["ShuffleNetV2-0.5x"])
    with pytest.raises(convert.CheckpointMismatch, match="conv1.0.weight .*: no matching Keras weight"):
        convert.convert_state_dict(state, arch="resnet", depth=18, dataset="jester")
    with pytest.raises(ValueError, match=r"num_classes=10, but the checkpoint's classifier \(classifier.1.weight\) "
                                         r"has 600 classes: conversion keeps the checkpoint's head"):
        convert.convert_state_dict(state, dataset="jester", arch="shufflenetv2", num_classes=10)
    with pytest.raises(ValueError, match="the bundled jester list has 27 classes, not 600; pass --labels"):
        convert.convert_state_dict(state, dataset="jester", arch="shufflenetv2")
    # A builder argument that does not apply: named with the architecture, not the whole contract.
    with pytest.raises(ValueError, match=r"^cannot build the checkpoint's ShuffleNetV2-0.5x with pooling='avg': "
                                         r"shufflenetv2: pooling='avg' applies with include_top=False"):
        convert.convert_state_dict(state, dataset="kinetics", arch="shufflenetv2", pooling="avg")
    # A width that neither a file name nor the official widths tell (a 16-channel stem here).
    state = _tagged_state(SHAPES["models"]["MobileNetV2-0.45x"])
    state["features.0.0.weight"] = np.zeros((16, 3, 3, 3, 3), np.float32)
    with pytest.raises(convert.CheckpointMismatch, match="not an official one or not in its file name: pass "
                                                         r"--width_mult$"):
        convert.convert_state_dict(state, arch="mobilenetv2", dataset="kinetics")


def test_official_file_name_is_parsed():
    assert convert.parse_official_name("kinetics_shufflenet_0.5x_G3_RGB_16_best.pth") == \
        {"dataset": "kinetics", "arch": "shufflenet", "width_mult": 0.5, "groups": 3}
    assert convert.parse_official_name("ucf101_resnext_101_RGB_16_best.pth") == \
        {"dataset": "ucf101", "arch": "resnext", "depth": 101}
    assert convert.parse_official_name("my_model.pth") == {}


def test_read_labels_accepts_classind_and_plain_lists(tmp_path):
    (tmp_path / "classInd.txt").write_text("2 b\n1 a\n3 c\n")
    (tmp_path / "names.txt").write_text("x\ny\n\n")
    assert convert.read_labels(tmp_path / "classInd.txt") == ["a", "b", "c"]
    assert convert.read_labels(tmp_path / "names.txt") == ["x", "y"]


def test_cli_converts_with_labels_and_rejects_bad_hash(fixtures_dir, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"gesture {i}\n" for i in range(27)))
    output = tmp_path / "model.keras"
    run = subprocess.run([sys.executable, "-m", "keras_r3d.convert", str(OFFICIAL_CHECKPOINT),
                          "--output", str(output), "--labels", str(labels)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    info = keras_r3d.model_info(output)
    assert info["class_names"][5] == "gesture 5"
    assert info["preprocessing"]["temporal_downsample"] == 2
    assert info["architecture"]["arch"] == "shufflenet"

    tampered = tmp_path / OFFICIAL_CHECKPOINT.name
    tampered.write_bytes(OFFICIAL_CHECKPOINT.read_bytes() + b"\0")
    with pytest.warns(UserWarning, match=r"sha256 \w+ differs from the official file's \w+: a damaged download, or "
                                         "another checkpoint under an official name"):
        convert.check_sha256(tampered)
    with pytest.raises(ValueError, match="sha256"):
        convert.check_sha256(tampered, strict=True)
    tampered.write_bytes(OFFICIAL_CHECKPOINT.read_bytes()[:100_000])  # an interrupted download
    with pytest.warns(UserWarning, match="sha256"), pytest.raises(ValueError, match="damaged or incomplete download"):
        convert.convert_checkpoint(tampered)

    labels.write_text("only\ntwo\n")
    run = subprocess.run([sys.executable, "-m", "keras_r3d.convert", str(OFFICIAL_CHECKPOINT),
                          "--output", str(tmp_path / "bad.keras"), "--labels", str(labels)],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "2 labels for num_classes=27" in run.stderr
    assert not (tmp_path / "bad.keras").exists()


def test_load_converts_pth_in_memory(fixtures_dir):
    model = keras_r3d.load(OFFICIAL_CHECKPOINT)
    assert model.architecture["groups"] == 3


def test_a_missing_official_checkpoint_says_where_to_download_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"kinetics_shufflenet_0.5x_G3_RGB_16_best.pth is an official "
                                                r"checkpoint; download it from https://github.com/okankop"):
        keras_r3d.load(tmp_path / "kinetics_shufflenet_0.5x_G3_RGB_16_best.pth")
    with pytest.raises(FileNotFoundError, match=r"No model file at \S+mine.pth$"):
        keras_r3d.load(tmp_path / "mine.pth")


def test_conversion_arguments_given_with_a_keras_file_are_an_error(tmp_path):
    """load(model.keras, dataset=...) would silently ignore them: they only convert a .pth."""
    (tmp_path / "model.keras").write_bytes(b"")
    with pytest.raises(TypeError, match=r"\['dataset', 'labels'\] only apply to .pth checkpoints"):
        keras_r3d.load(tmp_path / "model.keras", labels=["a"], dataset="jester")


def test_load_refuses_other_model_formats_naming_the_two_it_takes(tmp_path):
    (tmp_path / "model.h5").write_bytes(b"\x89HDF\r\n")
    with pytest.raises(ValueError, match=r"model.h5: expected a .keras model or an official .pth checkpoint$"):
        keras_r3d.load(tmp_path / "model.h5")


def test_a_zip_that_holds_no_keras_model_is_a_clear_error(tmp_path):
    """A .keras name on another zip archive (a dataset, a renamed export folder)."""
    import zipfile

    with zipfile.ZipFile(tmp_path / "model.keras", "w") as archive:
        archive.writestr("readme.txt", "not a model")
    with pytest.raises(ValueError, match=r"model.keras is not a loadable .keras model: "):
        keras_r3d.load(tmp_path / "model.keras")


def test_a_renamed_checkpoint_warns_and_bad_inputs_are_clear_errors(fixtures_dir, tmp_path):
    renamed = tmp_path / "mycopy.pth"
    renamed.write_bytes(OFFICIAL_CHECKPOINT.read_bytes())
    with pytest.warns(UserWarning, match=r"mycopy.pth: the data set is not in the file name.*--dataset jester for "
                                         r"the official ones"):
        model = convert.convert_checkpoint(renamed)
    assert model.class_names[0] == "class_000"
    model = convert.convert_checkpoint(renamed, dataset="jester")
    assert model.class_names[0] == "Doing_other_things" and model.preprocessing.temporal_downsample == 2
    # A file name that disagrees with the checkpoint: the checkpoint's arch key and shapes win.
    for name, says in (("jester_shufflenetv2_1.0x_RGB_16_best.pth", "arch='shufflenetv2' where the checkpoint "
                        "has 'shufflenet'; width_mult=1.0 where the checkpoint has 0.5"),
                       ("jester_shufflenet_1.0x_G3_RGB_16_best.pth", "width_mult=1.0 where the checkpoint has 0.5")):
        (tmp_path / name).symlink_to(OFFICIAL_CHECKPOINT)
        with pytest.warns(UserWarning, match=f"{name}: the file name says {re.escape(says)}: converting the "
                                             "checkpoint's"):
            model = convert.convert_checkpoint(tmp_path / name)
        assert model.architecture == {**model.architecture, "arch": "shufflenet", "width_mult": 0.5, "groups": 3}
        assert model.class_names[0] == "Doing_other_things"  # the data set still comes from the name
    # ... unless its class list does not fit the checkpoint's classifier (27 classes, not Kinetics' 600).
    (tmp_path / "kinetics_shufflenet_0.5x_G3_RGB_16_best.pth").symlink_to(OFFICIAL_CHECKPOINT)
    with pytest.warns(UserWarning, match="the file name says kinetics, whose official models have 600 classes, not "
                                         "this one's 27, so the model gets the default preprocessing contract "
                                         "and generic class names; pass --dataset jester"):
        model = convert.convert_checkpoint(tmp_path / "kinetics_shufflenet_0.5x_G3_RGB_16_best.pth")
    assert model.class_names[0] == "class_000" and model.architecture["width_mult"] == 0.5
    with pytest.raises(ValueError, match=r"cannot tell the architecture of the state dict: its file name is not an "
                                         r"official one and it has no 'arch' entry; pass --arch, one of "):
        convert.convert_state_dict({"fc.weight": np.zeros((3, 4), np.float32)})

    with pytest.raises(TypeError, match=r"unknown arguments \['foo'\]"):  # the caller's mistake, as it is
        convert.convert_checkpoint(renamed, foo=1)
    not_a_checkpoint = tmp_path / "clip.pth"
    not_a_checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"clip.pth is not a PyTorch checkpoint \(\w+\)$"):
        convert.read_state_dict(not_a_checkpoint)
    not_a_checkpoint.rename(tmp_path / "model.keras")
    with pytest.raises(ValueError, match=r"model.keras is not a PyTorch checkpoint \(\w+\): a .keras file is a Keras "
                                         "model already"):
        convert.read_state_dict(tmp_path / "model.keras")
    run = subprocess.run([sys.executable, "-m", "keras_r3d.convert", str(OFFICIAL_CHECKPOINT),
                          "--output", str(tmp_path / "model.h5")], capture_output=True, text=True)
    assert run.returncode == 1 and "is written as a .keras file" in run.stderr
    run = subprocess.run([sys.executable, "-m", "keras_r3d.convert", str(renamed), "--output",
                          str(tmp_path / "x.keras"), "--depth", "18"], capture_output=True, text=True)
    assert run.returncode == 1 and "error: shufflenet got unknown arguments ['depth']" in run.stderr
    # Warnings print as one line each, as the command's other notes do.
    assert "\nwarning: mycopy.pth: the data set is not in the file name" in run.stderr
    assert "warnings.warn" not in run.stderr
    assert "Traceback" not in run.stderr
    run = subprocess.run([sys.executable, "-m", "keras_r3d.convert", str(OFFICIAL_CHECKPOINT), "--output",
                          str(tmp_path / "x.keras"), "--labels", "missing.txt"], capture_output=True, text=True)
    assert run.returncode == 1 and "error: --labels missing.txt: no such file" in run.stderr
    run = subprocess.run([sys.executable, "-m", "keras_r3d.convert", str(OFFICIAL_CHECKPOINT), "--output",
                          str(renamed / "x.keras")], capture_output=True, text=True)  # under a file
    assert run.returncode == 1 and f"error: --output {renamed / 'x.keras'}: cannot write there (" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "model.h5").exists()
    for module in ("keras_r3d.convert", "keras_r3d.train"):  # the architecture flags, not only in --helpfull
        run = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True)
        assert "--width_mult" in run.stdout and "--arch" in run.stdout, module


def test_other_layouts_and_precisions_of_a_checkpoint(official_model, tmp_path):
    import torch

    state = torch.load(OFFICIAL_CHECKPOINT, map_location="cpu", weights_only=True)["state_dict"]
    torch.save({"epoch": 3, "model": state}, tmp_path / "other_layout.pth")  # another training script's
    with pytest.raises(ValueError, match=r"other_layout.pth: no state dict found \(a dict of tensors, or one under "
                                         r"'state_dict' .*\); the file holds \['epoch', 'model'\]"):
        convert.read_state_dict(tmp_path / "other_layout.pth")
    # bfloat16 tensors (numpy has no such type) load as float32.
    torch.save({"arch": "shufflenet", "state_dict": {key: value.bfloat16() if value.is_floating_point() else value
                                                     for key, value in state.items()}}, tmp_path / "bf16.pth")
    model = convert.convert_checkpoint(tmp_path / "bf16.pth", dataset="jester")
    kernel, rounded = model.get_layer("classifier_1").kernel, official_model.get_layer("classifier_1").kernel
    np.testing.assert_allclose(np.asarray(kernel), np.asarray(rounded), rtol=2 ** -8)


def test_class_names_and_a_feature_extractor_from_an_official_checkpoint(official_model):
    names = [f"gesture {i}" for i in range(27)]
    assert convert.convert_checkpoint(OFFICIAL_CHECKPOINT, labels=names).class_names == names
    assert keras_r3d.load(OFFICIAL_CHECKPOINT, class_names=names).class_names == names
    with pytest.raises(ValueError, match="the class names: 2 labels for num_classes=27"):
        convert.convert_checkpoint(OFFICIAL_CHECKPOINT, class_names=["a", "b"])
    with pytest.raises(TypeError, match="labels= or class_names=, not both"):
        convert.convert_checkpoint(OFFICIAL_CHECKPOINT, labels=names, class_names=names)
    features = keras_r3d.load(OFFICIAL_CHECKPOINT, include_top=False, pooling="avg")  # its head left out
    pooled = keras.Model(official_model.input, official_model.get_layer("avgpool").output)
    assert features.class_names is None and features.output_shape == pooled.output_shape
    x = np.random.default_rng(0).standard_normal((1, 16, 112, 112, 3)).astype(np.float32)
    np.testing.assert_allclose(features(x, training=False), pooled(x, training=False), atol=1e-5)
