"""Builders: argument checks, shapes, serialization, and every backend."""
import gzip
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_r3d
from keras_r3d import runtimes
from tests import backend_check
from tests.conftest import REPO, assert_logits_mean_something, use_data_statistics

SHAPES_PATH = REPO / "tests" / "data" / "official_state_dict_shapes.json.gz"
# The smallest configuration of each family, at a reduced input (ShuffleNet V1
# and C3D need 16 frames).
SMALL = {"ShuffleNetV1-0.5x": (16, 32, 32, 3), "ShuffleNetV2-0.25x": (8, 32, 32, 3),
         "MobileNetV1-0.5x": (8, 32, 32, 3), "MobileNetV2-0.2x": (8, 32, 32, 3),
         "SqueezeNet-1.1": (8, 32, 32, 3), "ResNet-10-A": (8, 32, 32, 3),
         "ResNeXt-50-B-c32": (8, 32, 32, 3), "C3D": (16, 32, 32, 3)}


def test_small_set_covers_every_family():
    assert {keras_r3d.registry.get_spec(n).arch for n in SMALL} == set(keras_r3d.registry.BUILDERS)


def test_the_readmes_zoo_table_is_what_the_registry_measures():
    table = keras_r3d.registry.zoo_table(["ShuffleNetV2-0.25x", "SqueezeNet-1.1"]).splitlines()
    readme = (REPO / "README.md").read_text().splitlines()
    assert all(line in readme for line in table), table


def test_registry_names_include_table8():
    table8 = json.loads(keras_r3d.registry.TABLE8_PATH.read_text())["models"]
    names = keras_r3d.list_models()
    assert list(table8) == names[:len(table8)]
    assert "ShuffleNetV2-1.0x" in names and "ResNet-18-A" in names
    assert keras_r3d.list_models("mobilenetv2") == [n for n in names if n.startswith("MobileNetV2-")]


def test_build_rejects_unknown_arch_and_kwargs():
    with pytest.raises(ValueError, match="Valid archs: shufflenet, shufflenetv2"):
        keras_r3d.build("shufflenet3")
    with pytest.raises(TypeError, match="unknown arguments \\['widht_mult'\\].*width_mult"):
        keras_r3d.build("mobilenet", widht_mult=1.0)
    with pytest.raises(ValueError, match="Valid names"):
        keras_r3d.create_model("ShuffleNetV9-1.0x")
    with pytest.raises(ValueError, match="did you mean 'ShuffleNetV2-0.25x'"):
        keras_r3d.create_model("shufflenetv2-0.25x")
    with pytest.raises(ValueError, match="did you mean 'MobileNetV2-1.0x'"):
        keras_r3d.create_model("MobileNetV2-1.0")
    with pytest.raises(ValueError, match=r"ShuffleNetV2-1.0x is a registry name: create_model\('ShuffleNetV2-1.0x'\)"):
        keras_r3d.build("ShuffleNetV2-1.0x")
    # Builder kwargs that contradict the name say which call gives that model.
    with pytest.raises(ValueError, match=r"ShuffleNetV2-1.0x is width_mult=1.0, not width_mult=0.5: "
                                         r"use create_model\('ShuffleNetV2-0.5x'\)"):
        keras_r3d.create_model("ShuffleNetV2-1.0x", width_mult=0.5)
    with pytest.raises(ValueError, match=r"use build\('resnext', depth=50, cardinality=4, shortcut='B'\)"):
        keras_r3d.create_model("ResNeXt-50-B-c32", cardinality=4)
    assert keras_r3d.create_model("ShuffleNetV2-0.25x", width_mult=0.25, num_classes=3).output_shape == (None, 3)
    jester = keras_r3d.build("shufflenetv2", width_mult=0.25, preprocessing="jester", input_shape=(8, 32, 32, 3))
    assert jester.preprocessing == keras_r3d.preprocessing.DATASET_PREPROCESSING["jester"].replace(frames=8, size=32)


@pytest.mark.parametrize("arch,kwargs,message", [
    ("shufflenetv2", {"width_mult": 0.75}, "width_mult must be one of"),
    ("shufflenet", {"groups": 5}, "groups must be one of"),
    ("shufflenet", {"width_mult": 0.3, "groups": 3}, "layer1_0_conv1"),
    ("mobilenetv2", {"width_mult": 0.01}, "no channels"),
    ("shufflenet", {"width_mult": 0.01}, "no channels"),
    ("mobilenetv2", {"width_mult": None}, "width_mult must be a positive Python number, got None"),
    ("mobilenetv2", {"width_mult": float("inf")}, "width_mult must be a positive Python number, got inf"),
    ("mobilenet", {"dropout": "0.5"}, r"dropout must be a Python number in \[0, 1\), got '0.5'"),
    ("mobilenet", {"dropout": 1.0}, r"dropout must be a Python number in \[0, 1\), got 1.0"),
    ("mobilenet", {"num_classes": True}, "num_classes must be a positive Python int, got True"),
    ("mobilenet", {"num_classes": np.int64(5)}, "num_classes must be a positive Python int"),
    ("mobilenet", {"input_shape": (np.int64(8), 32, 32, 3)}, r"\(frames, height, width, 3\) of Python ints"),
    ("mobilenet", {"pooling": "avg"}, "applies with include_top=False"),
    ("mobilenet", {"include_top": False, "class_names": ["a"]}, "include_top=False has none"),
    ("squeezenet", {"version": 1.2}, "version must be one of"),
    ("shufflenetv2", {"width_mult": True}, "width_mult must be one of .*, got True"),  # True == 1.0
    ("shufflenet", {"groups": np.int64(3)}, "groups must be one of"),
    ("resnet", {"depth": np.int64(10)}, "depth must be one of"),
    ("resnext", {"cardinality": True}, "cardinality must be a positive int, got True"),
    ("resnet", {"depth": 18.0}, "depth must be one of .*, got 18.0"),
    ("mobilenet", {"class_names": "ab", "num_classes": 2}, "class_names must be a list of names, got 'ab'"),
    ("mobilenet", {"class_names": ["a", "b", "a"], "num_classes": 3}, "class_names name 'a' more than once"),
    ("mobilenet", {"include_top": "yes"}, "include_top must be True or False, got 'yes'"),
    ("resnet", {"depth": 20}, "depth must be one of"),
    ("resnet", {"shortcut": "C"}, "shortcut must be one of"),
    ("resnext", {"depth": 18}, "depth must be one of"),
    ("mobilenet", {"input_shape": (16, 112, 96, 3)}, "square"),
    ("mobilenet", {"input_shape": (16, 112, 112)}, "input_shape"),
    ("c3d", {"input_shape": (8, 112, 112, 3)}, "group4_6.*too small"),
    ("shufflenet", {"input_shape": (9, 32, 32, 3)}, r"\(layer layer1_0_concat\): .*Concatenate"),
    ("mobilenet", {"classifier_activation": "sigmoid"}, "classifier_activation must be one of"),
    ("mobilenet", {"pooling": "max"}, "pooling"),
    ("mobilenet", {"num_classes": 0}, "num_classes"),
    ("mobilenet", {"class_names": ["a", "b"], "num_classes": 3}, "2 class names"),
    ("mobilenet", {"preprocessing": "imagenet"}, "preprocessing: a preprocessing contract is a Preprocessing, its "
                                                 "dict, a data set"),
])
def test_builders_reject_bad_arguments(arch, kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        keras_r3d.build(arch, **kwargs)
    assert "\x1b" not in str(error.value) and "Arguments received" not in str(error.value)  # Keras' wrapping


def test_shufflenet_builds_exactly_the_official_pairs():
    """Every (groups, width) pair that the official code builds and runs
    builds here; every other pair is a ValueError naming the layer."""
    pairs = json.loads(gzip.open(SHAPES_PATH, "rt").read())["shufflenet_pairs"]
    assert sum(pairs.values()) >= 20
    for pair, official_builds in pairs.items():
        groups, width = pair.split("/")
        if official_builds:
            model = keras_r3d.ShuffleNet3D(width_mult=float(width), groups=int(groups),
                                           input_shape=(16, 32, 32, 3))
            assert model.output.shape == (None, 600)
        else:
            with pytest.raises(ValueError, match=rf"shufflenet cannot be built with width_mult={float(width)} and "
                                                 rf"groups={groups}: layer\d_\d+_conv\d: .* divisible by groups"):
                keras_r3d.ShuffleNet3D(width_mult=float(width), groups=int(groups))


def test_width_multipliers_truncate_channels_as_the_official_code():
    # The official int(c * width_mult), not rounded: 567 * 0.5 = 283.5 -> 283, 32 * 0.3 = 9.6 -> 9.
    shufflenet = keras_r3d.ShuffleNet3D(width_mult=0.5, groups=1, include_top=False, pooling="avg",
                                        input_shape=(16, 32, 32, 3))
    assert shufflenet.output.shape == (None, 283)
    mobilenet = keras_r3d.MobileNet3D(width_mult=0.3, include_top=False, pooling="avg", input_shape=(8, 32, 32, 3))
    assert mobilenet.get_layer("features_0_0").filters == 9 and mobilenet.output.shape == (None, 307)


def test_feature_extraction_and_input_sizes():
    features = keras_r3d.MobileNetV2_3D(width_mult=0.2, include_top=False, input_shape=(16, 64, 64, 3))
    assert features.output.shape == (None, 1, 2, 2, 1280)
    assert features.class_names is None
    pooled = keras_r3d.ShuffleNetV2_3D(width_mult=0.25, include_top=False, pooling="avg",
                                       input_shape=(32, 128, 128, 3))
    assert pooled.output.shape == (None, 1024)
    assert pooled.preprocessing.frames == 32 and pooled.preprocessing.size == 128


def test_saved_model_carries_contract_and_classes(tmp_path):
    contract = keras_r3d.Preprocessing(channel_order="BGR", temporal_downsample=2, fps=12.0)
    model = keras_r3d.ShuffleNetV2_3D(width_mult=0.25, num_classes=3, input_shape=(8, 32, 32, 3),
                                      class_names=["left", "right", "up"], preprocessing=contract,
                                      classifier_activation="softmax")
    clips = runtimes.random_frames(2, (8, 32, 32, 3))
    use_data_statistics(model, clips)  # else its probabilities are 1/3 +- 1e-6 whatever the weights
    path = tmp_path / "m.keras"
    model.save(path)
    info = keras_r3d.model_info(path)
    assert info["class_names"] == ["left", "right", "up"]
    assert info["preprocessing"] == contract.replace(frames=8, size=32).to_dict()
    assert info["architecture"] == {"arch": "shufflenetv2", "width_mult": 0.25, "num_classes": 3,
                                    "classifier_activation": "softmax"}
    loaded = keras_r3d.load(path)
    x = keras_r3d.preprocess(clips, model.preprocessing)
    # The softmax may saturate to one class for both clips: the features under it are compared too.
    features, loaded_features = (keras.Model(m.input, m.get_layer("avgpool").output)(x) for m in (model, loaded))
    assert_logits_mean_something(np.asarray(features))
    np.testing.assert_allclose(loaded_features, features, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    assert loaded.preprocessing == model.preprocessing
    with pytest.raises(FileNotFoundError, match="No model file at .*missing.keras"):
        keras_r3d.model_info(tmp_path / "missing.keras")


@pytest.fixture(scope="module")
def saved_families(tmp_path_factory):
    """Each family built, saved and run on TF, which also takes a training step.
    Its BatchNorm statistics are its input's: with the initial ones, the
    MobileNets' and ShuffleNetV2's logits are 1e-8 to 1e-22, and an error
    bound of 1e-4 would hold for any output."""
    directory = tmp_path_factory.mktemp("families")
    keras.utils.set_random_seed(0)
    logits = {}
    for name, shape in SMALL.items():
        model = keras_r3d.create_model(name, num_classes=5, input_shape=shape)
        clips = runtimes.random_frames(2, shape, seed=1)
        use_data_statistics(model, clips)
        x = keras_r3d.preprocess(clips, model.preprocessing)
        labels = np.array([1, 3])
        logits[name] = np.asarray(model(x, training=False))
        assert_logits_mean_something(logits[name])
        model.save(directory / f"{name}.keras")
        np.savez(directory / f"{name}.npz", x=x, logits=logits[name], labels=labels)
        model.compile(optimizer=keras.optimizers.SGD(0.01),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        assert np.isfinite(model.train_on_batch(x, labels))
    return directory, logits


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_every_backend_computes_the_same_and_trains(saved_families, backend):
    """JAX and torch load the files TF saved, give the same logits, and train
    (JAX with its GPU's "taps_matmul" layers too, and "pallas" for MobileNetV2;
    the MobileNets take no training step on JAX: see backend_check)."""
    directory, expected = saved_families
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, "-m", "tests.backend_check", str(directory)], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(results) == set(SMALL)
    for name, result in results.items():
        assert result["backend"] == backend
        jax_layers = ["taps_matmul", "pallas"] if name == "MobileNetV2-0.2x" else ["taps_matmul"]
        assert list(result["max_abs_error"]) == ["auto", *(jax_layers if backend == "jax" else [])]
        scale = max(1.0, float(np.abs(expected[name]).max()))
        assert all(error <= 1e-4 * scale for error in result["max_abs_error"].values()), (name, result)
        if backend == "jax" and name in backend_check.JAX_UNTRAINED:
            assert "loss" not in result
            continue
        assert np.isfinite(result["loss"]) and result["changed"] > 0, (name, result)
        assert backend != "torch" or np.isfinite(result["mixed_bfloat16_loss"]), (name, result)


@pytest.mark.parametrize("layers", ["auto", "native"])
def test_a_channels_first_keras_config_changes_nothing(saved_families, layers):
    """A PyTorch user's keras.json (image_data_format: channels_first) changes
    neither the models built nor the files saved without it."""
    directory, expected = saved_families
    keras.config.set_image_data_format("channels_first")
    try:
        for name, shape in SMALL.items():
            data = np.load(directory / f"{name}.npz")
            loaded = keras.saving.load_model(directory / f"{name}.keras", compile=False)
            built = keras_r3d.create_model(name, num_classes=5, input_shape=shape)
            assert built.output_shape == (None, 5), name
            built.set_weights(loaded.get_weights())
            scale = max(1.0, float(np.abs(expected[name]).max()))
            with keras_r3d.implementation(layers):
                for model in (loaded, built):
                    np.testing.assert_allclose(model(data["x"], training=False), expected[name],
                                               atol=1e-4 * scale, err_msg=name)
    finally:
        keras.config.set_image_data_format("channels_last")


def test_models_do_not_import_tensorflow():
    """The zoo runs on JAX or PyTorch machines without TensorFlow."""
    code = ("import sys, keras_r3d; m = keras_r3d.create_model('MobileNetV2-0.2x', input_shape=(8, 32, 32, 3));"
            "keras_r3d.profile(m); print('tensorflow' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "KERAS_BACKEND": "jax"}, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.parametrize("name", sorted(SMALL))
def test_fold_batch_norm_computes_the_same(name, tmp_path):
    """Every BN that follows a conv folds into it; the logits stay the same,
    also after a save and load, with trained-looking BN affines and statistics
    (the data's: random statistics left MobileNetV1's logits alike for any input)."""
    keras.utils.set_random_seed(0)
    model = keras_r3d.create_model(name, num_classes=5, input_shape=SMALL[name])
    rng = np.random.default_rng(2)
    batch_norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in batch_norms:
        layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape).astype(np.float32))
        layer.beta.assign(rng.normal(0.0, 0.3, layer.beta.shape).astype(np.float32))
    clips = runtimes.random_frames(2, SMALL[name], seed=3)
    use_data_statistics(model, clips)
    folded = keras_r3d.fold_batch_norm(model)
    assert batch_norms and not [layer for layer in folded.layers
                                if isinstance(layer, keras.layers.BatchNormalization)]
    assert [layer.name for layer in folded.layers] == [layer.name for layer in model.layers]
    assert folded.class_names == model.class_names and folded.preprocessing == model.preprocessing
    x = keras_r3d.preprocess(clips, model.preprocessing)
    expected = np.asarray(model(x, training=False))
    assert_logits_mean_something(expected)
    # These random nets turn a 1e-7 change of the input into up to 2e-5 of the logits: float32 rounding alone.
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(folded(x), expected, atol=1e-4 * scale)
    folded.save(tmp_path / "folded.keras")
    np.testing.assert_allclose(keras_r3d.load(tmp_path / "folded.keras")(x), expected, atol=1e-4 * scale)
