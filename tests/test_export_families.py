"""Export of one random-weight model per family at a small input: builtin ops
only, int8 throughout, and logits close to Keras (cosine >= 0.98 float,
>= 0.95 int8), covering the grouped convs of ShuffleNet V1 and ResNeXt.
Also the CLI and the argument checks."""
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_r3d
from keras_r3d import create_model, export, fold_batch_norm, implementation, preprocess, runtimes
from keras_r3d.models import float32_model
from keras_r3d.registry import get_spec
from tests.conftest import GESTURES, use_data_statistics, write_half_white_video

FLOAT_COSINE = 0.98
INT8_COSINE = 0.95
SMALL = {"num_classes": 5, "input_shape": (16, 32, 32, 3)}
# One model per family, with --runslow (30-60 s each on 2 cores). By default,
# tests/test_export.py exports the official ShuffleNet V1 (grouped convs, 3D
# average pools) to every format.
# Open (measured 2026-11-26; random weights, 3 calibration clips, XNNPACK): the
# float exports of every family pass; the int8 TFLite of these reaches only
# this cosine. It swings with the seed (4 seeds: MobileNetV2 0.70-0.94,
# ResNeXt 0.54-0.93, ShuffleNetV2 0.43-0.97; README, "Deploy").
INT8_OPEN = {"MobileNetV2-0.2x": 0.70, "ResNeXt-50-B-c32": 0.89}
FAMILIES = [
    pytest.param(name, overrides, id=name, marks=[pytest.mark.slow] + (
        [pytest.mark.xfail(reason=f"int8 cosine {INT8_OPEN[name]} < {INT8_COSINE} with random weights")]
        if name in INT8_OPEN else []))
    for name, overrides in [
        ("ShuffleNetV1-0.5x", {}),
        ("ShuffleNetV2-0.25x", {}),
        ("MobileNetV1-0.5x", {}),
        ("MobileNetV2-0.2x", {}),
        ("SqueezeNet-1.1", {}),
        ("ResNet-18-A", {}),
        # Grouped 3x3x3 convs in 4 groups instead of 32: the same rewrite, 8x fewer 2D ops.
        ("ResNeXt-50-B-c32", {"cardinality": 4}),
        ("C3D", {}),
    ]
]


@pytest.fixture(scope="module")
def gesture_clips(fixtures_dir):
    """Real clips at the small input: the gesture folders, cut by the protocol."""
    contract = create_model("ShuffleNetV1-0.5x", **SMALL).preprocessing
    return export.load_clips(GESTURES["thumb_up"].parent, contract, 3)


@pytest.mark.parametrize("name, overrides", FAMILIES)
def test_random_weight_family_exports_close_to_keras(name, overrides, gesture_clips, tmp_path):
    keras.utils.set_random_seed(0)
    model = get_spec(name).build(**SMALL, **overrides)  # the overrides change the named configuration
    use_data_statistics(model, gesture_clips)
    float_report = export.export_model(model, tmp_path, ["tflite", "onnx"], verification=gesture_clips)
    int8_report = export.export_model(model, tmp_path, ["tflite"], quantize="int8",
                                      calibration=gesture_clips, verification=gesture_clips)
    for key in ("tflite_none", "onnx"):
        assert float_report["formats"][key]["min_cosine"] >= FLOAT_COSINE, key
        assert float_report["formats"][key]["passed"], float_report["formats"][key]
    # XNNPACK runs it (it refused graphs with a constant-zero tensor: see test_layers).
    assert int8_report["formats"]["tflite_int8"]["runtime"] == "tflite+xnnpack"
    assert int8_report["formats"]["tflite_int8"]["min_cosine"] >= INT8_COSINE
    ops, types = export.tflite_ops((tmp_path / "model_int8.tflite").read_bytes())
    assert not {op for op in ops if "FLEX" in op.upper() or op in ("CUSTOM", "CONV_3D")}, ops
    assert types <= {"UINT8", "INT8", "INT32"}, types
    float_ops, _ = export.tflite_ops((tmp_path / "model_none.tflite").read_bytes())
    assert not {op for op in float_ops if "FLEX" in op.upper() or op == "CUSTOM"}, float_ops


@pytest.fixture(scope="module")
def tiny_model():
    """The cheapest model to trace (a few seconds per export)."""
    keras.utils.set_random_seed(0)
    return create_model("SqueezeNet-1.1", num_classes=4, input_shape=(8, 32, 32, 3))


@pytest.fixture(scope="module")
def raw_input_tflite(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("raw_input")
    return export.export_model(tiny_model, out, ["tflite"], raw_input=True), out / "model_none.tflite"


def test_a_diverged_models_outputs_are_warned_of(tiny_model, tmp_path):
    diverged = keras_r3d.clone_model(tiny_model)
    head = next(layer for layer in reversed(diverged.layers) if layer.weights)
    kernel, bias = head.get_weights()
    head.set_weights([kernel, bias + 1e7])
    lines = []
    export.export_model(diverged, tmp_path, ["onnx"], log=lines.append)
    assert any(line.startswith("warning: the model's outputs reach ") and "its training diverged" in line
               for line in lines), lines
    healthy = []  # the warning is the diverged model's only
    export.export_model(tiny_model, tmp_path / "healthy", ["onnx"], log=healthy.append)
    assert not any("outputs reach" in line for line in healthy), healthy


def test_tftrt_without_tensorrt_writes_float_pixel_onnx_and_says_why(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` fails, as where it is missing
    lines = []
    report = export.export_model(tiny_model, tmp_path, ["tftrt"], quantize="float16", log=lines.append)
    assert report["tensorrt"]["path"] == "trtexec" and report["tensorrt"]["precision"] == "fp16"
    assert not (tmp_path / "model.engine").exists()
    sidecar = json.loads((tmp_path / "model.json").read_text())  # read_metadata of the engine
    assert sidecar["input"]["dtype"] == "float32" and sidecar["class_names"] == tiny_model.class_names
    assert report["formats"]["tensorrt_onnx"]["passed"]  # verified in onnxruntime
    runtime = runtimes.load_runtime(tmp_path / "model_trt.onnx")
    assert runtime.input_dtype == np.float32  # TensorRT 8.2 parses no UINT8 input
    message = "\n".join(lines)
    assert "tensorrt` is not installed" in message and report["tensorrt"]["trtexec"] in message
    assert "--onnx=model_trt.onnx --saveEngine=model.engine " in message  # the target's folder, not ours
    assert report["formats"]["tensorrt_onnx"]["verification_inputs"].startswith("seeded uint8 noise")
    assert set(report["tensorrt"]) == {"path", "precision", "missing", "trtexec"}


def test_raw_input_takes_normalized_float(raw_input_tflite):
    report, path = raw_input_tflite
    assert report["passed"] and report["raw_input"]
    metadata = runtimes.read_metadata(path)
    assert metadata["input"]["dtype"] == "float32" and not metadata["input"]["normalized_in_graph"]
    assert runtimes.load_runtime(path).input_dtype == np.float32
    # The device runner times it, and refuses only to classify frames with it.
    runner = [sys.executable, str(pathlib.Path(__file__).resolve().parents[1] / "exports" / "run_on_device.py"),
              str(path), "--benchmark", "--iterations", "1", "--warmup", "0", "--batch_sizes", "1"]
    timed = subprocess.run(runner, capture_output=True, text=True, timeout=300)
    assert timed.returncode == 0 and '"clips_per_s"' in timed.stdout, timed.stderr
    refused = subprocess.run(runner + [str(path.parent)], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "exported with --raw_input" in refused.stderr


def test_exports_run_the_model_with_batch_norm_folded(tiny_model):
    """Every format traces `serving_function`, which runs the folded model:
    its graph captures the folded weights (no BN statistics)."""
    folded = fold_batch_norm(tiny_model)
    assert len(folded.weights) < len(tiny_model.weights)
    with implementation("frames"):
        concrete = export.serving_function(tiny_model).get_concrete_function()
    assert len(concrete.variables) == len(folded.weights)
    assert not [v for v in concrete.variables if "moving_" in v.name]


def test_export_model_folds_batch_norm_once(tiny_model, tmp_path, monkeypatch):
    folds = []

    def counting_fold(model):
        folded = fold_batch_norm(model)
        if folded is not model:
            folds.append(model.name)
        return folded

    monkeypatch.setattr(export, "fold_batch_norm", counting_fold)
    report = export.export_model(tiny_model, tmp_path, ["saved_model", "tflite", "onnx"])
    assert report["passed"] and folds == [tiny_model.name]
    folds.clear()
    export.export_model(tiny_model, tmp_path, ["tflite"], quantize="int8",
                        calibration=runtimes.random_frames(2, tiny_model.input_shape[1:]))
    assert folds == []  # full int8 quantizes the unfolded model


def test_a_mixed_precision_model_exports_in_float32(tiny_model, tmp_path):
    """`train --precision mixed_*` saves layers that compute in half precision,
    which TFLite cannot convert: the export starts from a float32 copy."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        mixed = create_model("SqueezeNet-1.1", num_classes=4, input_shape=(8, 32, 32, 3))
    finally:
        keras.config.set_dtype_policy(previous)
    mixed.set_weights(tiny_model.get_weights())
    assert mixed.get_layer("features_0").compute_dtype == "float16"
    assert mixed.outputs[0].dtype == "float32"  # the head computes in float32 (Keras' advice)
    assert float32_model(tiny_model) is tiny_model
    copy = float32_model(mixed)
    assert {layer.compute_dtype for layer in copy.layers} == {"float32"}
    clips = preprocess(runtimes.random_frames(2, tiny_model.input_shape[1:]), tiny_model.preprocessing)
    np.testing.assert_array_equal(copy.predict_on_batch(clips), tiny_model.predict_on_batch(clips))
    half, full = mixed.predict_on_batch(clips), copy.predict_on_batch(clips)
    assert np.abs(half - full).max() < 0.02 * np.abs(full).max()  # float16's rounding, random weights' scale

    lines = []
    report = export.export_model(mixed, tmp_path, ["tflite", "onnx"], log=lines.append)
    assert report["passed"] and "exporting it in float32" in lines[0]


def test_argument_checks(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="subset"):
        export.export_model(tiny_model, tmp_path, ["tflite", "coreml"])
    with pytest.raises(ValueError, match="calibration"):
        export.export_model(tiny_model, tmp_path, ["tflite"], quantize="int8")
    with pytest.raises(ValueError, match="quantize"):
        export.export_model(tiny_model, tmp_path, ["tflite"], quantize="int4")
    with pytest.raises(ValueError, match="raw_input"):
        export.export_model(tiny_model, tmp_path, ["tftrt"], raw_input=True)
    with pytest.raises(FileNotFoundError):
        runtimes.load_runtime(tmp_path / "missing.tflite")
    (tmp_path / "clip.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match="clip.mp4 is a file: the output is a folder"):
        export.export_model(tiny_model, tmp_path / "clip.mp4", ["onnx"])
    out = tmp_path / "old_opset"
    for opset in (9, None):  # refused before any format is written
        with pytest.raises(ValueError, match=f"an opset of 10 or later, got {opset!r}"):
            export.export_model(tiny_model, out, ["tflite", "onnx"], opset=opset)
        assert not out.exists() or not any(out.iterdir())


def test_an_export_that_stops_part_way_reports_the_artifacts_it_verified(tiny_model, tmp_path, monkeypatch):
    # An earlier export of other weights into the folder: its entries must not outlive the files.
    stale = {"weights_sha256": "other", "passed": True,
             "formats": {"tflite_none": {"path": str(tmp_path / "model_none.tflite"), "passed": True}}}
    (tmp_path / export.REPORT_NAME).write_text(json.dumps(stale))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # or a converter's crash, or a TensorRT build that fails

    monkeypatch.setattr(export, "export_onnx", interrupted)  # written after the TFLite file
    with pytest.raises(KeyboardInterrupt):
        export.export_model(tiny_model, tmp_path, ["onnx", "tflite"])
    report = json.loads((tmp_path / export.REPORT_NAME).read_text())
    assert report["weights_sha256"] == export.weights_digest(tiny_model)
    assert list(report["formats"]) == ["tflite_none"] and report["formats"]["tflite_none"]["passed"]
    assert report["passed"]


def test_an_export_stopped_at_its_first_artifact_leaves_no_stale_report(tiny_model, tmp_path, monkeypatch):
    """The report is rewritten before the first artifact: an earlier export's
    entry must not vouch for a file that a crash left replaced but unverified."""
    assert export.export_model(tiny_model, tmp_path, ["tflite"])["formats"]["tflite_none"]["passed"]

    def replaced_then_interrupted(model, path, **kwargs):
        pathlib.Path(path).write_bytes(b"new, never verified")
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "export_tflite", replaced_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        export.export_model(tiny_model, tmp_path, ["tflite"])
    report = json.loads((tmp_path / export.REPORT_NAME).read_text())
    assert report["formats"] == {} and (tmp_path / "model_none.tflite").read_bytes() == b"new, never verified"


def test_a_saved_model_exported_again_replaces_the_folder_and_leaves_nothing_beside_it(tiny_model, tmp_path):
    path = tmp_path / "saved_model"
    export.export_saved_model(tiny_model, path)
    (path / "stale_file").write_text("of the earlier export")
    export.export_saved_model(tiny_model, path)
    assert [p.name for p in tmp_path.iterdir()] == ["saved_model"]  # no .saved_model.old-* or .tmp-* left
    assert not (path / "stale_file").exists()
    assert runtimes.load_runtime(path).metadata["class_names"] == tiny_model.class_names


def test_a_saved_model_export_that_fails_keeps_the_old_folder_and_no_partial(tiny_model, tmp_path, monkeypatch):
    import tensorflow as tf

    path = tmp_path / "saved_model"
    export.export_saved_model(tiny_model, path)
    before = sorted(p.relative_to(path) for p in path.rglob("*"))

    def disk_full(module, export_dir, **kwargs):
        pathlib.Path(export_dir).mkdir()
        (pathlib.Path(export_dir) / "saved_model.pb").write_bytes(b"half")
        raise OSError("No space left on device")

    monkeypatch.setattr(tf.saved_model, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        export.export_saved_model(tiny_model, path)
    assert [p.name for p in tmp_path.iterdir()] == ["saved_model"]
    assert sorted(p.relative_to(path) for p in path.rglob("*")) == before


def test_an_int8_tflite_without_calibration_clips_is_a_clear_error(tiny_model, tmp_path):
    for clips in (None, np.zeros((0, 8, 32, 32, 3), np.uint8)):
        with pytest.raises(ValueError, match=r"int8 export needs calibration clips \(--calibration\)"):
            export.export_tflite(tiny_model, tmp_path / "model_int8.tflite", quantize="int8", calibration_clips=clips)
    assert not (tmp_path / "model_int8.tflite").exists()


def test_clip_arrays_must_be_uint8_batches_of_clips(tiny_model):
    contract = tiny_model.preprocessing
    clips = runtimes.random_frames(3, tiny_model.input_shape[1:])
    assert export.load_clips(clips, contract, 2).shape == (2, 8, 32, 32, 3)
    for bad in (clips[0], clips.astype(np.float32)):  # one clip without its batch axis; float pixels
        with pytest.raises(ValueError, match="clips must be uint8 \\(N, T, S, S, 3\\)"):
            export.load_clips(bad, contract, 2)


def test_the_calibration_clips_verify_at_most_verification_samples(tiny_model, tmp_path):
    calibration = runtimes.random_frames(5, tiny_model.input_shape[1:])
    lines = []
    report = export.export_model(tiny_model, tmp_path, ["onnx"], calibration=calibration, verification_samples=3,
                                 log=lines.append)
    assert report["formats"]["onnx"]["verification_clips"] == 3
    assert report["formats"]["onnx"]["verification_inputs"] == "5 given uint8 clips"
    assert "verification: 3 clips from 5 given uint8 clips" in lines


def test_metadata_says_the_input_channel_order():
    """A BGR contract (the official Kinetics models) still takes RGB frames; only normalized input is BGR."""
    model = create_model("SqueezeNet-1.1", num_classes=4, input_shape=(8, 32, 32, 3), preprocessing="kinetics")
    frames = export.export_metadata(model, raw_input=False, input_dtype="uint8")
    assert frames["preprocessing"]["channel_order"] == "BGR" and frames["input"]["channel_order"] == "RGB"
    normalized = export.export_metadata(model, raw_input=True, input_dtype="float32")
    assert normalized["input"]["channel_order"] == "BGR"


def test_tflite_metadata_reader_reads_what_the_writer_wrote(tiny_model, raw_input_tflite):
    _, path = raw_input_tflite
    data = export.add_tflite_metadata(path.read_bytes(), "other", b"\x00\x01payload")
    entries = runtimes.tflite_metadata(data)
    assert entries["other"] == b"\x00\x01payload"
    assert json.loads(entries[runtimes.METADATA_KEY])["class_names"] == tiny_model.class_names


def test_a_graph_xnnpack_refuses_runs_on_the_builtin_kernels(raw_input_tflite, monkeypatch):
    """XNNPACK refuses some quantized graphs at allocation: the runtime says so
    in its notes and runs the builtin kernels instead."""
    from ai_edge_litert import interpreter

    _, path = raw_input_tflite
    default = interpreter.Interpreter
    builtin = interpreter.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES

    class RefusedByXnnpack(default):
        def __init__(self, *args, experimental_op_resolver_type=interpreter.OpResolverType.AUTO, **kwargs):
            super().__init__(*args, experimental_op_resolver_type=experimental_op_resolver_type, **kwargs)
            self.builtin = experimental_op_resolver_type == builtin

        def allocate_tensors(self):
            if not self.builtin:
                raise RuntimeError("Failed to apply XNNPACK delegate.\nNode number 3 failed to prepare.")
            return super().allocate_tensors()

    expected = runtimes.load_runtime(path)
    monkeypatch.setattr(interpreter, "Interpreter", RefusedByXnnpack)
    runtime = runtimes.load_runtime(path)
    assert expected.name == "tflite+xnnpack" and runtime.name == "tflite"
    assert runtime.notes == "XNNPACK refused the graph (Failed to apply XNNPACK delegate.); builtin kernels"
    clips = np.random.default_rng(0).standard_normal((2,) + runtime.input_shape[1:]).astype(np.float32)
    np.testing.assert_allclose(runtime(clips), expected(clips), atol=1e-4)


def test_cli_exports_and_reports(tiny_model, tmp_path):
    model_path = tmp_path / "tiny.keras"
    tiny_model.save(model_path)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "keras_r3d.export", f"--model={model_path}",
                           f"--output={out}", "--onnx"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / export.REPORT_NAME).read_text())
    assert set(report["formats"]) == {"onnx"} and report["passed"]
    assert set(report["formats"]["onnx"]) >= {"max_abs_diff", "top1_agreement", "size_bytes", "path",
                                              "runtime"}
    none = subprocess.run([sys.executable, "-m", "keras_r3d.export", f"--model={model_path}",
                           f"--output={out}"], capture_output=True, text=True, timeout=300)
    assert none.returncode == 2 and "choose at least one" in none.stderr
    # An earlier export into the folder that failed fails this one too, which names it.
    report["formats"]["tflite_int8"] = {"path": str(out / "model_int8.tflite"), "passed": False}
    (out / "model_int8.tflite").write_bytes(b"x")
    (out / export.REPORT_NAME).write_text(json.dumps(report))
    again = subprocess.run([sys.executable, "-m", "keras_r3d.export", f"--model={model_path}",
                            f"--output={out}", "--onnx"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 1, again.stderr
    assert (f"error: an earlier export kept in {out} failed its check: tflite_int8 (model_int8.tflite); export "
            "that format again") in again.stderr and "not within tolerance" not in again.stderr
    assert json.loads((out / export.REPORT_NAME).read_text())["kept"] == ["tflite_int8"]
    # Another model's export there, which this one would not replace all of, is an error that names
    # the files it would leave; --overwrite deletes them first.
    other = keras_r3d.load(model_path)
    other.weights[0].assign(other.weights[0] * 2.0)
    other.save(tmp_path / "other.keras")
    refused = subprocess.run([sys.executable, "-m", "keras_r3d.export", f"--model={tmp_path / 'other.keras'}",
                              f"--output={out}", "--onnx", "--saved_model"], capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode == 2 and not (out / "saved_model").exists()
    assert (f"error: {out} holds an export that differs from this one in its weights, with files that this "
            "export would not replace: model_int8.tflite. Pass --overwrite") in refused.stderr
    lines = []
    report = export.export_model(other, out, ["saved_model"], overwrite=True, log=lines.append)
    assert report["passed"] and report["kept"] == [] and list(report["formats"]) == ["saved_model"]
    assert sorted(path.name for path in out.iterdir()) == [export.REPORT_NAME, "saved_model"]
    assert "deleted the files of an export that differed from this one in its weights: model.onnx, " \
        "model_int8.tflite" in lines
    # One that this export writes again (a retrained model, say) needs no --overwrite.
    lines = []
    report = export.export_model(tiny_model, out, ["saved_model"], log=lines.append)
    assert report["passed"] and list(report["formats"]) == ["saved_model"]
    assert "deleted the files of an export that differed from this one in its weights: saved_model" in lines


def test_export_refuses_other_backends(tmp_path):
    code = "import keras_r3d.export as e, keras_r3d as k; " \
           "e.export_model(k.create_model('SqueezeNet-1.1', num_classes=2, input_shape=(8, 32, 32, 3)), " \
           f"{str(tmp_path)!r}, ['onnx'])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "KERAS_BACKEND": "jax"})
    assert done.returncode != 0 and "needs the TensorFlow backend" in done.stderr


def test_the_recipes_export_and_run_commands_take_their_flags():
    """Every `keras_r3d.export` and `run_on_device.py` command of the READMEs names flags that
    exist, and an export names its --model and --output (both required)."""
    import re

    repo = pathlib.Path(__file__).resolve().parents[1]
    known = {"keras_r3d.export": set(re.findall(r'DEFINE_\w+\("(\w+)"', (repo / "keras_r3d/export.py").read_text())),
             "run_on_device.py": set(re.findall(r'add_argument\("--(\w+)"',
                                                (repo / "exports/run_on_device.py").read_text()))}
    commands = 0
    for doc in [repo / "README.md", *sorted((repo / "exports").glob("*.md"))]:
        text = doc.read_text().replace("\\\n", " ")  # continued lines
        for program, rest in re.findall(r"(keras_r3d\.export|run_on_device\.py)([^`\n#]*)", text):
            flags = set(re.findall(r"(?:^|\s)--(\w+)", rest))
            if not flags:  # the name in prose
                continue
            commands += 1
            assert flags <= known[program], (doc.name, rest)
            if program == "keras_r3d.export":
                assert {"model", "output"} <= flags, (doc.name, rest)
    assert commands >= 15


@pytest.mark.parametrize("path", ["keras_r3d/runtimes.py", "exports/run_on_device.py"])
def test_device_files_are_python36_and_standalone(path):
    import ast
    import pathlib

    source = (pathlib.Path(__file__).resolve().parents[1] / path).read_text()
    tree = ast.parse(source, feature_version=(3, 6))  # JetPack 4.6 ships Python 3.6
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    top_level = {alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import)
                 for alias in node.names}
    assert not imported & {"keras", "keras_r3d", "dataclasses"}, imported
    assert top_level <= {"argparse", "collections", "contextlib", "importlib", "io", "json", "math", "os", "re",
                         "struct", "sys", "time", "numpy"}, top_level


def test_calibration_reads_tfrecords_as_the_val_pipeline_does(tmp_path):
    from keras_r3d.data import make_dataset
    from tfrecords_tools import synthetic

    config = synthetic.SyntheticConfig(videos_per_class=1, size=32, frames=16, shards=1, val_fraction=0.5)
    synthetic.make_synthetic(tmp_path, config, workers=1, progress=False)
    contract = create_model("SqueezeNet-1.1", num_classes=2, input_shape=(8, 32, 32, 3)).preprocessing
    pattern = str(tmp_path / "val-*.tfrecord*")
    clips = export.load_clips(pattern, contract, 3)
    assert clips.dtype == np.uint8 and clips.shape[1:] == (8, 32, 32, 3) and 1 <= len(clips) <= 3
    dataset = make_dataset(pattern, "val", contract, 1, shuffle_seed=0)
    normalized = np.concatenate([c.numpy() for c, _ in dataset.take(3)])
    np.testing.assert_allclose(preprocess(clips, contract), normalized, atol=1e-4)


def test_calibration_folders_skip_unreadable_videos_with_a_warning(tmp_path, capsys):
    contract = create_model("SqueezeNet-1.1", num_classes=2, input_shape=(8, 32, 32, 3)).preprocessing
    (tmp_path / "a_damaged.mp4").write_bytes(b"not a video")
    write_half_white_video(tmp_path / "b_good.mp4", 48, 40, frames=10)
    clips = export.load_clips(tmp_path, contract, 5)
    assert clips.shape == (1, 8, 32, 32, 3) and clips[0, 0, 16, 4].min() == 255  # the white left half
    warnings = capsys.readouterr().err
    assert "warning: skipped" in warnings and "a_damaged.mp4" in warnings
    (tmp_path / "b_good.mp4").unlink()
    with pytest.raises(ValueError, match="no readable videos"):
        export.load_clips(tmp_path, contract, 5)
    with pytest.raises(ValueError, match="a_damaged.mp4"):  # a file named alone is an error, not skipped
        export.load_clips(tmp_path / "a_damaged.mp4", contract, 5)


def test_calibration_folders_are_searched_at_any_depth(fixtures_dir):
    """`--calibration`/`--verification` DIR: videos and frame folders in DIR's
    subfolders too (the fixtures: clips/gestures/<gesture>/, clips/kinetics/*.mp4, ...),
    taken in turn from each subfolder (class), so that a few span them all."""
    contract = create_model("SqueezeNet-1.1", num_classes=2, input_shape=(8, 32, 32, 3)).preprocessing
    clips = export.load_clips(fixtures_dir / "clips", contract, 100)
    gestures = export.load_clips(fixtures_dir / "clips" / "gestures", contract, 100)
    assert len(gestures) == 3 and len(clips) == 3 + 2 + 1 + 2
    firsts = [export.load_clips(fixtures_dir / "clips" / folder, contract, 1)[0]
              for folder in ("gestures", "kinetics", "other", "ucf101")]
    np.testing.assert_array_equal(export.load_clips(fixtures_dir / "clips", contract, 4), firsts)
    np.testing.assert_array_equal(clips[[0, 4, 7]], gestures)  # the gestures' turns: 1st, 2nd after 3 others, 3rd


def test_the_tflite_converters_logs_are_held_back_unless_it_fails(tiny_model, tmp_path, capfd):
    import warnings

    export.export_tflite(tiny_model, tmp_path / "model.tflite")
    assert capfd.readouterr().err == ""  # grappler's sessions, the converter's options and warnings

    with export._converter_logs_held():
        os.write(2, b"I0000 devices.cc:76] Number of eligible GPUs\n")
        warnings.warn("Statistics for quantized inputs were expected")
    assert capfd.readouterr().err == ""
    with pytest.raises(RuntimeError, match="converter failed"), pytest.warns(UserWarning, match="converter's"):
        with export._converter_logs_held():
            os.write(2, b"error: 'tfl.conv_2d' op is neither a custom op nor a flex op\n")
            warnings.warn("the converter's warning")
            raise RuntimeError("converter failed")
    assert capfd.readouterr().err == "error: 'tfl.conv_2d' op is neither a custom op nor a flex op\n"
    os.write(2, b"after\n")  # stderr is itself again
    assert capfd.readouterr().err == "after\n"
