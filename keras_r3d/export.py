"""Export a keras_r3d model to deployable artifacts, each verified against Keras.

    python -m keras_r3d.export --model model.keras --output export/ \\
        --saved_model --tflite --onnx [--openvino] [--tftrt] [--quantize none|float16|dynamic|int8] \\
        [--calibration PATH] [--calibration_samples 100] [--verification PATH] \\
        [--raw_input] [--opset 13] [--onnx_converter auto|keras_r3d|tf2onnx]

Every artifact but the TensorRT ones (float32 pixels) takes uint8 RGB frames
`(N, T, S, S, 3)` (N dynamic) and applies
the model's preprocessing contract inside its graph with
`keras_r3d.preprocess`, then the model with its BatchNorms folded into the
convs (`keras_r3d.fold_batch_norm`; verified against the model as given), except
full-int8 TFLite, which quantizes the unfolded graph more accurately.
`--raw_input` takes already-normalized float32 instead. The contract, the class
names and the architecture travel in the artifact's metadata
(`keras_r3d.runtimes.read_metadata`). Artifacts:

    DIR/saved_model/         TensorFlow SavedModel, signature serving_default
    DIR/model_<quant>.tflite builtin ops only; traced as 2D ops so int8 is int8 throughout
    DIR/model.onnx           keras_r3d.onnx_writer (channels first, no layout transposes;
                             tf2onnx for other layers) at an opset TensorRT 8.2 parses (13)
    DIR/model_openvino.onnx  the writer's 3D-conv layout, for OpenVINO on Intel CPUs (runs
                             on onnxruntime too, slowly)
    DIR/model_trt.onnx       float32-pixel input for TensorRT (TensorRT 8.2 has no UINT8 input)
    DIR/model.engine         TensorRT engine, only where tensorrt and a GPU exist
    DIR/model.json           the engine's metadata (written by --tftrt in any case)
    DIR/export_report.json   per format: max_abs_diff, top1_agreement, size_bytes, path, runtime

Calibration (`--quantize int8`) and verification read real clips: a TFRecord
glob of `tfrecords_tools` shards, a video, a frame folder, or a folder of
videos and frame folders, cut by the official evaluation protocol.
"""
import collections
import contextlib
import functools
import hashlib
import itertools
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
import warnings

import keras
import numpy as np

from keras_r3d import runtimes
from keras_r3d.files import write_atomic
from keras_r3d.layers import implementation
from keras_r3d.models import float32_model, fold_batch_norm
from keras_r3d.preprocessing import preprocess
from keras_r3d.text import unexpected_arguments

FORMATS = ("saved_model", "tflite", "onnx", "openvino", "tftrt")
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
# TensorRT 8.2 (JetPack 4.6, Jetson TX2) parses ONNX up to opset 13.
DEFAULT_OPSET = 13
# tf2onnx's graphs of the zoo need opset 10 (strided slices); below the writer's
# own minimum (onnx_writer.MIN_OPSET), "auto" converts with tf2onnx.
MIN_OPSET = 10
ONNX_CONVERTERS = ("auto", "keras_r3d", "tf2onnx")
REPORT_NAME = "export_report.json"
# What each report key's artifact is called in the output folder ("tflite_<quantize>": model_<quantize>.tflite).
ARTIFACT_NAMES = {"saved_model": "saved_model", "onnx": "model.onnx", "openvino": "model_openvino.onnx",
                  "tensorrt_onnx": "model_trt.onnx", "tensorrt": "model.engine"}
# How messages name the report's keys that make two exports another model's.
SAME_EXPORT_KEYS = {"architecture": "architecture", "weights_sha256": "weights",
                    "preprocessing": "preprocessing contract", "class_names": "class names",
                    "outputs_probabilities": "output (logits or probabilities)", "raw_input": "--raw_input"}
# Float32 artifacts must match Keras within FLOAT32_TOLERANCE * max(1, max|logits|).
FLOAT32_TOLERANCE = 1e-4
FLOAT16_RELATIVE_TOLERANCE = 1e-2
# Quantized artifacts: the same top-1, and logits not far off in direction.
QUANTIZED_MIN_COSINE = 0.5
# Logits beyond this come from a model whose training diverged: a note, not an error.
ABSURD_LOGIT = 1e6
TRT_PROFILE_BATCHES = (1, 8, 16)  # min, opt, max batch of the TensorRT engine
# In the trtexec line for INT8: the user's calibration cache, which keras_r3d does not write.
TRT_CALIBRATION_CACHE = "CALIBRATION.cache"


def _tf():
    """TensorFlow, after checking that Keras runs on it (exports trace TF graphs)."""
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"Export needs the TensorFlow backend, but KERAS_BACKEND is {keras.backend.backend()!r}. "
            "Run with KERAS_BACKEND=tensorflow (a .keras file from any backend loads there).")
    import tensorflow as tf

    return tf


# ---------------------------------------------------------------- the serving graph

def export_metadata(model, *, raw_input, input_dtype, quantize="none"):
    """What a deployment needs to feed the artifact and read its output."""
    from keras_r3d import __version__

    contract = model.preprocessing
    return {
        "producer": f"keras_r3d {__version__}",
        "preprocessing": contract.to_dict(),
        "class_names": list(model.class_names or []),
        "architecture": dict(model.architecture),
        "input": {
            "name": runtimes.INPUT_NAME,
            "dtype": input_dtype,
            "layout": "NDHWC",
            # Frames come in as decoded (RGB), and the graph reorders them to the contract's order.
            "channel_order": contract.channel_order if raw_input else "RGB",
            "shape": [None, contract.frames, contract.size, contract.size, 3],
            "normalized_in_graph": not raw_input,
        },
        "output": {"name": runtimes.OUTPUT_NAME,
                   "kind": "probabilities" if model.outputs_probabilities else "logits"},
        "quantize": quantize,
    }


def serving_function(model, *, raw_input=False, input_dtype="uint8", fold=True):
    """A `tf.function` with an input signature: frames `(None, T, S, S, 3)` ->
    {"logits": ...} of `model`, with its BatchNorms folded (`fold_batch_norm`)
    if `fold`. Trace it inside `keras_r3d.implementation(...)`.

    Args:
        raw_input: take normalized float32 input instead of frames.
        input_dtype: "uint8" frames, or "float32" pixel values 0..255.
    """
    tf = _tf()
    contract = model.preprocessing
    if fold:
        model = fold_batch_norm(model)
    dtype = tf.float32 if raw_input else tf.as_dtype(input_dtype)
    spec = tf.TensorSpec([None, contract.frames, contract.size, contract.size, 3], dtype,
                         name=runtimes.INPUT_NAME)

    def serve(frames):
        x = frames if raw_input else preprocess(frames, contract)
        return {runtimes.OUTPUT_NAME: model(x, training=False)}

    return tf.function(serve, input_signature=[spec])


def _frozen(concrete):
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    return convert_variables_to_constants_v2(concrete)


# ---------------------------------------------------------------- formats

def export_saved_model(model, path, *, raw_input=False):
    """A SavedModel (signature `serving_default`) with the metadata as an asset."""
    tf = _tf()
    path = pathlib.Path(path)
    model = fold_batch_norm(model)  # what the signature runs, so the variables saved
    module = tf.Module()
    module.model = model
    with implementation("auto"):
        module.serve = serving_function(model, raw_input=raw_input, fold=False).get_concrete_function()
    metadata = export_metadata(model, raw_input=raw_input, input_dtype="float32" if raw_input else "uint8")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    with tempfile.TemporaryDirectory() as scratch:
        asset = pathlib.Path(scratch) / f"{runtimes.METADATA_KEY}.json"
        asset.write_text(json.dumps(metadata, indent=1))
        module.metadata = tf.saved_model.Asset(str(asset))
        try:
            tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():  # moved aside, then removed: the folder is never half written
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def export_tflite(model, path, *, quantize="none", calibration_clips=None, raw_input=False):
    """A builtin-ops-only `.tflite` file, traced with 2D ops only.

    `quantize="int8"` is full integer: uint8 frames in (scale 1, zero point 0,
    so the pixels themselves), int8 tensors throughout, int8 logits out (the
    runtime dequantizes them); it needs `calibration_clips`, uint8 clips.
    """
    tf = _tf()
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}")
    int8 = quantize == "int8"
    # Full int8 takes float pixels in the graph and lets the converter make the
    # uint8 input, so that no float CAST sits in front of the first QUANTIZE.
    with implementation("frames"):
        # Unfolded for int8: a folded BN scales each depthwise filter by its own
        # factor, and the per-frame partial sums, quantized per tensor, lose the
        # small channels (random weights, int8 cosine folded / unfolded:
        # MobileNetV2 0.2x 0.67 / 0.70, ShuffleNetV2 0.25x 0.53 / 0.96).
        # The function holds the folded model: kept here until frozen, or its variables may be gone.
        function = serving_function(model, raw_input=raw_input, input_dtype="float32" if int8 else "uint8",
                                    fold=not int8)
        concrete = function.get_concrete_function()
    if int8 and (calibration_clips is None or len(calibration_clips) == 0):
        raise ValueError("int8 export needs calibration clips (--calibration)")
    with _converter_logs_held():
        converter = tf.lite.TFLiteConverter.from_concrete_functions([_frozen(concrete)])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if int8:
            converter.representative_dataset = _representative(calibration_clips, model, raw_input)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8 if raw_input else tf.uint8
            converter.inference_output_type = tf.int8
        flatbuffer = converter.convert()
    input_dtype = ("int8" if int8 else "float32") if raw_input else "uint8"
    metadata = export_metadata(model, raw_input=raw_input, input_dtype=input_dtype, quantize=quantize)
    flatbuffer = add_tflite_metadata(flatbuffer, runtimes.METADATA_KEY, json.dumps(metadata).encode())
    if int8 and not raw_input:
        _check_pixel_input(flatbuffer)
    write_atomic(path, flatbuffer)
    return pathlib.Path(path)


@contextlib.contextmanager
def _converter_logs_held():
    """Holds back what the TFLite converter writes to stderr (a dozen lines of
    its C++ and Python internals per file, and its warnings), and lets it out
    if it fails. A crash of the process leaves it in the temporary folder, as
    keras_r3d_tflite_converter_*.log."""
    held = tempfile.NamedTemporaryFile("w+", prefix="keras_r3d_tflite_converter_", suffix=".log", delete=False)
    sys.stderr.flush()
    stderr = os.dup(2)
    try:
        os.dup2(held.fileno(), 2)
        with contextlib.redirect_stderr(held), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # "Statistics for quantized inputs were expected", say
            yield
    except Exception:
        held.flush()
        held.seek(0)
        os.write(stderr, held.read().encode())
        for warning in caught:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
        raise
    finally:
        held.close()
        os.dup2(stderr, 2)
        os.close(stderr)
        os.unlink(held.name)


def _representative(clips, model, raw_input):
    """Calibration batches of one clip. Pixel input must calibrate to exactly
    0..255 (scale 1, zero point 0): each clip carries one 0 and one 255 pixel."""
    def batches():
        for clip in clips:
            clip = np.array(clip[None], np.uint8)
            clip.reshape(-1)[:2] = (0, 255)
            yield [preprocess(clip, model.preprocessing) if raw_input else clip.astype(np.float32)]

    return batches


def _check_pixel_input(flatbuffer):
    from ai_edge_litert.interpreter import Interpreter

    detail = Interpreter(model_content=flatbuffer).get_input_details()[0]
    if detail["dtype"] != np.uint8 or tuple(detail["quantization"]) != (1.0, 0):
        raise RuntimeError(f"int8 export: the input is {detail['dtype']} quantized as "
                           f"{detail['quantization']}, not uint8 pixels (scale 1, zero point 0)")


def add_tflite_metadata(flatbuffer, name, payload):
    """The flatbuffer with a `Model.metadata` entry `name` holding `payload` bytes."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(payload, np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != name.encode()] + [entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def tflite_ops(flatbuffer):
    """`({op name: how many}, tensor dtypes)` of a `.tflite` flatbuffer, from
    its schema; the most frequent op first."""
    import collections

    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    ops, types = collections.Counter(), set()
    for subgraph in model.subgraphs:
        ops.update(flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) for op in subgraph.operators)
        types.update(flatbuffer_utils.type_to_name(tensor.type) for tensor in subgraph.tensors)
    return dict(ops.most_common()), types


def export_onnx(model, path, *, opset=DEFAULT_OPSET, raw_input=False, input_dtype="uint8",
                converter="auto", layout="frames", log=print):
    """An ONNX file, metadata (with the converter used, and the writer's
    layout) in `metadata_props`.

    Args:
        converter: "keras_r3d" (`keras_r3d.onnx_writer`: channels first, no layout
            transposes; faster in onnxruntime: benchmarks/cpu2-onnx-writer-*.md),
            "tf2onnx" (the TF graph), or "auto": the writer, and tf2onnx for a
            model with layers the writer lacks.
        layout: the writer's layout: "frames" for onnxruntime, or "ncdhw" (3D
            convs) for OpenVINO (`runtimes.OPENVINO_LAYOUT`).
    """
    import onnx

    from keras_r3d import onnx_writer

    if converter not in ONNX_CONVERTERS:
        raise ValueError(f"converter must be one of {ONNX_CONVERTERS}, got {converter!r}")
    _check_opset(opset)
    proto = None
    if converter != "tf2onnx":
        try:
            proto = onnx_writer.model_proto(fold_batch_norm(model), opset=int(opset),
                                            raw_input=raw_input, input_dtype=input_dtype, layout=layout)
        except onnx_writer.UnsupportedLayer as error:
            if converter == "keras_r3d":
                raise onnx_writer.UnsupportedLayer(
                    f"the keras_r3d ONNX writer cannot translate this model ({error}); "
                    "--onnx_converter auto or tf2onnx converts it with tf2onnx") from None
            log(f"{pathlib.Path(path).name}: {error}; converting with tf2onnx instead"
                + (" (without the 3D-conv layout: keras_r3d.runtimes runs it on onnxruntime)"
                   if layout != "frames" else ""))
    if proto is None:
        _tf()
        import tf2onnx

        function = serving_function(model, raw_input=raw_input, input_dtype=input_dtype)
        with implementation("auto"):
            proto, _ = tf2onnx.convert.from_function(
                function, input_signature=function.input_signature, opset=int(opset))
    metadata = export_metadata(model, raw_input=raw_input,
                               input_dtype="float32" if raw_input else input_dtype)
    metadata["converter"] = proto.producer_name
    if proto.producer_name == "keras_r3d":
        metadata["onnx_layout"] = layout
    onnx.helper.set_model_props(proto, {runtimes.METADATA_KEY: json.dumps(metadata)})
    write_atomic(path, proto.SerializeToString())
    return pathlib.Path(path)


# ---------------------------------------------------------------- TensorRT

def tensorrt_precision(quantize):
    """The TensorRT precision of an export's `--quantize`."""
    return {"none": "fp32", "dynamic": "fp32", "float16": "fp16", "int8": "int8"}[quantize]


def trtexec_command(onnx_path, engine_path, precision, frames_shape):
    """The `trtexec` line that builds the engine on the target board."""
    dims = "x".join(str(d) for d in frames_shape)
    shapes = " ".join(f"--{kind}Shapes={runtimes.INPUT_NAME}:{batch}x{dims}"
                      for kind, batch in zip(("min", "opt", "max"), TRT_PROFILE_BATCHES))
    flags = {"fp32": "", "fp16": " --fp16", "int8": f" --int8 --fp16 --calib={TRT_CALIBRATION_CACHE}"}[precision]
    return f"trtexec --onnx={onnx_path} --saveEngine={engine_path} {shapes}{flags}"


def tensorrt_missing():
    """What keeps this machine from building a TensorRT engine ([] if nothing)."""
    missing = []
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        missing.append("the Python package `tensorrt` is not installed")
    dev = pathlib.Path("/dev")
    if not (any(dev.glob("nvidia[0-9]*")) or (dev / "nvhost-ctrl-gpu").exists()):
        missing.append("no NVIDIA GPU is visible (/dev/nvidia*, /dev/nvhost-ctrl-gpu)")
    return missing


def plan_tensorrt(onnx_path, engine_path, precision, frames_shape, missing=None):
    """Decides the TensorRT path: build here, or hand over a trtexec command.

    Returns `{"path": "build" | "trtexec", "precision", "missing", "trtexec"}`.
    INT8 engines need a calibrator, which this exporter does not build: they
    always go to trtexec, where `--calib=<cache>` supplies the scales.
    """
    missing = tensorrt_missing() if missing is None else list(missing)
    if precision == "int8":
        missing.append("INT8 engines need a TensorRT calibration cache, which keras_r3d does not "
                       f"write: replace {TRT_CALIBRATION_CACHE} in the command below with yours (without "
                       "one, INT8 scales are placeholders and the engine's outputs are meaningless)")
    return {
        "path": "trtexec" if missing else "build",
        "precision": precision,
        "missing": missing,
        "trtexec": trtexec_command(onnx_path, engine_path, precision, frames_shape),
    }


def build_tensorrt_engine(onnx_path, engine_path, precision, frames_shape):
    """Builds and writes a TensorRT engine (fp32 or fp16) from the ONNX file."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(pathlib.Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape(runtimes.INPUT_NAME, *[(b,) + tuple(frames_shape) for b in TRT_PROFILE_BATCHES])
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError("TensorRT failed to build the engine (see the log above)")
    write_atomic(engine_path, bytes(engine))
    return pathlib.Path(engine_path)


# ---------------------------------------------------------------- real clips

def load_clips(source, contract, limit):
    """Up to `limit` uint8 clips `(N, T, S, S, 3)` cut by the official
    evaluation protocol (center window, shorter side scaled, center crop).

    Args:
        source: a TFRecord glob (`*.tfrecord*`), a video file, a frame folder,
            a folder holding videos and frame folders (at any depth), or a
            uint8 array of clips.
    """
    if isinstance(source, np.ndarray):
        clips = source[:limit]
        if clips.dtype != np.uint8 or clips.ndim != 5:
            raise ValueError(f"clips must be uint8 (N, T, S, S, 3), got {clips.dtype} {clips.shape}")
        return clips
    source = str(source)
    if ".tfrecord" in source:
        return _tfrecord_clips(source, contract, limit)
    from keras_r3d.predict import clips_from_frames, read_cropped
    from keras_r3d.video import VIDEO_SUFFIXES, VideoError, frame_files

    def videos_under(folder):  # videos and frame folders at any depth, in sorted order
        items = []
        for child in sorted(folder.iterdir()):
            if child.name.startswith("."):  # .DS_Store, macOS ._ files, .ipynb_checkpoints
                continue
            if child.is_dir():
                items += [child] if frame_files(child) else videos_under(child)
            elif child.suffix.lower() in VIDEO_SUFFIXES:
                items.append(child)
        return items

    path = pathlib.Path(source)
    items = videos_under(path) if path.is_dir() and not frame_files(path) else [path]
    # In turn from each subfolder (class), so that the first `limit` span them all.
    by_folder = collections.defaultdict(list)
    for item in items:
        by_folder[item.relative_to(path).parts[0] if item != path else ""].append(item)
    items = [item for turn in itertools.zip_longest(*by_folder.values()) for item in turn if item is not None]
    clips, skipped = [], []
    for item in items:
        if len(clips) == limit:
            break
        try:  # one damaged file in a folder costs its clip, not the export
            frames, fps = read_cropped(item, contract)
            clips.append(clips_from_frames(frames, contract, fps)[0])
        except VideoError as error:
            if item == path:  # a file or frame folder named alone
                raise
            skipped.append(error)
    for error in skipped[:3]:
        print(f"warning: skipped {error}", file=sys.stderr)
    if len(skipped) > 3:
        print(f"warning: skipped {len(skipped) - 3} more unreadable inputs under {source}", file=sys.stderr)
    if not clips:
        raise VideoError(f"{source}: no readable videos or frame folders")
    return np.stack(clips)


def _tfrecord_clips(pattern, contract, limit):
    """Center clips of `keras_r3d.data`'s val pipeline, kept as uint8: the
    pipeline runs with an identity contract, so it returns the pixels."""
    from keras_r3d.data import make_dataset

    identity = contract.replace(channel_order="RGB", value_range=(0.0, 255.0),
                                mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    dataset = make_dataset(pattern, "val", identity, 1, shuffle_seed=0)  # seeded: a fixed order
    clips = [clip.numpy() for clip, _ in dataset.take(limit)]
    return np.round(np.concatenate(clips)).astype(np.uint8)


# ---------------------------------------------------------------- verification

def compare(logits, reference, quantize):
    """Agreement of an artifact's logits with Keras', and whether the
    tolerance for that precision holds."""
    logits = np.asarray(logits, np.float64)
    reference = np.asarray(reference, np.float64)
    diff = float(np.max(np.abs(logits - reference)))
    scale = float(np.max(np.abs(reference)))
    cosines = np.sum(logits * reference, -1) / np.maximum(
        np.linalg.norm(logits, axis=-1) * np.linalg.norm(reference, axis=-1), 1e-30)
    # Keras' top class among the artifact's top scores (int8 ties neighbours one level apart),
    # unless the artifact scores every class alike (a diverged model's int8 file) and Keras does not.
    agree = logits[np.arange(len(logits)), np.argmax(reference, -1)] == logits.max(-1)
    flat = [np.all(x == x.max(-1, keepdims=True), -1) for x in (logits, reference)]
    top1 = float(np.mean(agree & (~flat[0] | flat[1])))
    result = {"max_abs_diff": diff, "max_abs_logit": scale, "relative_error": diff / max(scale, 1e-30),
              "top1_agreement": top1, "min_cosine": float(np.min(cosines))}
    if quantize == "none":
        result["tolerance"] = f"max_abs_diff <= {FLOAT32_TOLERANCE} * max(1, max|logits|)"
        result["passed"] = diff <= FLOAT32_TOLERANCE * max(1.0, scale)
    elif quantize == "float16":
        result["tolerance"] = f"same top-1, relative error <= {FLOAT16_RELATIVE_TOLERANCE}"
        result["passed"] = top1 == 1.0 and result["relative_error"] <= FLOAT16_RELATIVE_TOLERANCE
    else:
        result["tolerance"] = f"same top-1, cosine >= {QUANTIZED_MIN_COSINE}"
        result["passed"] = top1 == 1.0 and result["min_cosine"] >= QUANTIZED_MIN_COSINE
    return result


def verify(artifact, clips, reference, quantize, raw_input, contract):
    """Runs `artifact` on `clips` and compares it with the Keras logits."""
    runtime = runtimes.load_runtime(artifact, num_threads=2)
    # Frames go in as uint8; a float-pixel artifact (TensorRT) gets them cast by the runtime.
    batch = preprocess(clips, contract) if raw_input else clips
    result = compare(runtime(batch), reference, quantize)
    path = pathlib.Path(artifact)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() \
        else path.stat().st_size
    result.update(path=str(path), size_bytes=size, runtime=runtime.name, quantize=quantize)
    if "converter" in (runtime.metadata or {}):
        result["converter"] = runtime.metadata["converter"]
    if runtime.notes:
        result["runtime_notes"] = runtime.notes
    return result


# ---------------------------------------------------------------- the whole export

def export_model(model, output_dir, formats, *, quantize="none", calibration=None,
                 calibration_samples=100, verification=None, verification_samples=8,
                 raw_input=False, opset=DEFAULT_OPSET, onnx_converter="auto", overwrite=False, log=print):
    """Exports `model` to `formats` in `output_dir`, verifies every artifact
    against Keras and writes `export_report.json`.

    Args:
        model: a `keras_r3d.VideoClassifier`.
        formats: a subset of FORMATS.
        quantize: the TFLite (and TensorRT) precision.
        calibration: int8 calibration clips: a path for `load_clips` or a uint8 array.
        verification: clips to verify on (same forms); default the calibration
            clips, else seeded uint8 noise (recorded as such in the report).
        onnx_converter: `export_onnx`'s converter.
        overwrite: delete the files of an earlier export of another model in
            `output_dir` (its report's) first; without it, that is an error
            where this export would not write all of them again.
    Returns:
        The report dict; `report["passed"]` is False if any artifact failed.
    """
    formats = list(dict.fromkeys(formats))
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}, got {formats}")
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}")
    if quantize == "int8" and "tflite" in formats and calibration is None:
        raise ValueError("--quantize int8 needs --calibration (a TFRecord glob or a folder of "
                         "videos / frame folders)")
    if raw_input and "tftrt" in formats:
        raise ValueError("--tftrt builds from float-pixel input; it cannot be combined with --raw_input")
    if {"onnx", "openvino", "tftrt"} & set(formats):
        _check_opset(opset)  # before any format is written
    out = pathlib.Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file: the output is a folder, where the artifacts and "
                         f"{REPORT_NAME} go")
    _tf()
    contract = model.preprocessing
    exported = float32_model(model)
    if exported is not model:
        log(f"note: {model.name} computes in mixed or half precision (as --precision trains); "
            "exporting it in float32 (--quantize float16 makes a half-precision TFLite file)")
        model = exported
    # What an artifact computes: exports into one folder that agree on all of it share one report.
    report = {"model": model.name, "architecture": model.architecture, "weights_sha256": weights_digest(model),
              "preprocessing": contract.to_dict(), "class_names": list(model.class_names or []),
              "outputs_probabilities": model.outputs_probabilities, "raw_input": raw_input, "formats": {}}
    # Folded once, on first use: the format functions then find nothing left to
    # fold. Full int8 TFLite quantizes the unfolded model (export_tflite says why).
    folded = functools.cache(lambda: fold_batch_norm(model))
    exports = []  # (report key, precision, a function that writes the artifact to a path)
    if "saved_model" in formats:
        exports.append(("saved_model", "none",
                        lambda path: export_saved_model(folded(), path, raw_input=raw_input)))
    if "tflite" in formats:
        exports.append((f"tflite_{quantize}", quantize, lambda path: export_tflite(
            model if quantize == "int8" else folded(), path, quantize=quantize,
            calibration_clips=calibration_clips, raw_input=raw_input)))
    if "onnx" in formats:
        exports.append(("onnx", "none", lambda path: export_onnx(
            folded(), path, opset=opset, raw_input=raw_input, converter=onnx_converter, log=log)))
    if "openvino" in formats:
        exports.append(("openvino", "none", lambda path: export_onnx(
            folded(), path, opset=opset, raw_input=raw_input,
            converter=onnx_converter, layout=runtimes.OPENVINO_LAYOUT, log=log)))
    if "tftrt" in formats:
        exports.append(("tensorrt_onnx", "none", lambda path: export_onnx(
            folded(), path, opset=opset, input_dtype="float32", converter=onnx_converter, log=log)))
    redone = {key for key, _, _ in exports} | ({"tensorrt"} if "tftrt" in formats else set())
    kept, differ, stale = _earlier_report(out, report, redone)
    # Another model's files: deleted, once the inputs have been read, where this export writes
    # them all again; else (a folder that would mix two models) only with --overwrite. An engine
    # is written only where TensorRT is installed; its metadata always.
    written = {_artifact_path(out, key) for key in redone if key != "tensorrt"}
    if "tftrt" in formats:
        written.add(pathlib.Path(runtimes.metadata_sidecar(_artifact_path(out, "tensorrt"))))
    left = [path.name for path in stale if path not in written]
    if left and not overwrite:
        raise ValueError(f"{out} holds an export that differs from this one in its "
                         f"{', '.join(SAME_EXPORT_KEYS[key] for key in differ)}, with files that this export "
                         f"would not replace: {', '.join(left)}. Pass --overwrite to delete them first, or "
                         "choose another --output")

    calibration_clips = None  # the TFLite export above reads it when it runs
    if calibration is not None:
        calibration_clips = load_clips(calibration, contract, calibration_samples)
        log(f"calibration: {len(calibration_clips)} clips from {_describe(calibration)}")
        if not (quantize == "int8" and "tflite" in formats):
            log("note: only full-int8 TFLite calibrates on --calibration (TensorRT INT8 takes a "
                "calibration cache); here its clips only verify")
    if verification is not None:
        clips, inputs = load_clips(verification, contract, verification_samples), _describe(verification)
    elif calibration_clips is not None:
        clips, inputs = calibration_clips[:verification_samples], _describe(calibration)
    else:
        clips = runtimes.random_frames(verification_samples,
                                       (contract.frames, contract.size, contract.size, 3))
        inputs = "seeded uint8 noise (pass --verification PATH for real clips)"
    log(f"verification: {len(clips)} clips from {inputs}")
    if quantize != "none" and not {"tflite", "tftrt"} & set(formats):
        log(f"note: --quantize {quantize} applies to TFLite and TensorRT; SavedModel and ONNX stay float32")
    reference = np.asarray(model.predict_on_batch(preprocess(clips, contract)))
    largest = np.abs(reference).max()
    if largest > ABSURD_LOGIT:
        log(f"warning: the model's outputs reach {largest:.3g} on these clips: its training "
            "diverged or its BatchNorm statistics never settled, and its exports compute as it does")
    out.mkdir(parents=True, exist_ok=True)  # once the inputs have been read
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    if stale:
        log(f"deleted the files of an export that differed from this one in its "
            f"{', '.join(SAME_EXPORT_KEYS[key] for key in differ)}: {', '.join(path.name for path in stale)}")
    report.update(kept)
    report["kept"] = sorted(report["formats"])  # of an earlier export into this folder
    if report["formats"]:
        log(f"{REPORT_NAME}: keeping the earlier export's {', '.join(report['formats'])} "
            "(same model, contract and input)")

    def save():
        report["passed"] = all(r["passed"] for r in report["formats"].values())
        write_atomic(out / REPORT_NAME, json.dumps(report, indent=1).encode())

    # Written first (no entry left of the files about to be replaced) and after
    # each artifact: a crash or Ctrl-C part way loses none of those verified.
    save()
    for key, precision, write in exports:
        start = time.perf_counter()
        path = write(_artifact_path(out, key))
        result = verify(path, clips, reference, precision, raw_input, contract)
        result["seconds"] = round(time.perf_counter() - start, 1)  # export + verification
        result.update(verification_inputs=inputs, verification_clips=int(len(clips)))
        report["formats"][key] = result
        log(f"{key:14s} {'ok    ' if result['passed'] else 'FAILED'} {path}  "
            f"max_abs_diff={result['max_abs_diff']:.3g}  top1={result['top1_agreement']:.0%}  "
            f"cos={result['min_cosine']:.5f}  {result['size_bytes'] / 1e6:.2f} MB  [{result['runtime']}"
            f"{', ' + result['converter'] if 'converter' in result else ''}]  "
            f"{result['seconds']}s")
        save()
        if key == "tensorrt_onnx":
            report["tensorrt"], engine = _tensorrt_engine(model, out, path, quantize, log)
            if engine is not None:
                trt_precision = {"fp32": "none", "fp16": "float16"}[report["tensorrt"]["precision"]]
                report["formats"]["tensorrt"] = verify(engine, clips, reference, trt_precision,
                                                       raw_input, contract)
            save()
    return report


def _earlier_report(out, report, redone=()):
    """What an earlier export's report in `out` leaves to this export, so that
    exports run one after another into one folder keep one report:
    `(kept, differ, stale)`. If it agrees with `report` on SAME_EXPORT_KEYS,
    `kept` is `{"formats": ...}`, its verified formats but `redone` whose files
    are still there, and its "tensorrt" plan (the engine's trtexec command) with
    a kept "tensorrt_onnx". Else `kept` has no formats, `differ` lists the keys
    that differ and `stale` the paths of its files still there (another model's)."""
    try:
        earlier = json.loads((out / REPORT_NAME).read_text())
        formats = dict(earlier["formats"])
    except (OSError, ValueError, KeyError, TypeError):
        return {"formats": {}}, [], []
    # By the names export gives them, not the report's paths: the earlier run may have named `out`
    # from another working folder, and a report edited by hand names nothing to delete.
    files = {key: _artifact_path(out, key) for key in formats
             if key in ARTIFACT_NAMES or key.startswith("tflite_") and key[len("tflite_"):] in QUANTIZATIONS}
    differ = [key for key in SAME_EXPORT_KEYS  # compared as JSON holds them (tuples as lists)
              if earlier.get(key) != json.loads(json.dumps(report[key]))]
    if differ:
        if "tensorrt_onnx" in files:  # the engine trtexec built from it on the target, and its metadata
            files["tensorrt"] = _artifact_path(out, "tensorrt")
            files["tensorrt_metadata"] = pathlib.Path(runtimes.metadata_sidecar(files["tensorrt"]))
        stale = sorted({path for path in files.values() if path.exists() or path.is_symlink()})
        return {"formats": {}}, differ, stale
    kept = {key: dict(formats[key], path=str(path)) for key, path in files.items()
            if key not in redone and path.exists()}
    if "tensorrt_onnx" in kept and "tensorrt" in earlier:
        return {"formats": kept, "tensorrt": earlier["tensorrt"]}, [], []
    return {"formats": kept}, [], []


def _artifact_path(out, key):
    """Where the artifact of report key `key` lies in the output folder `out`."""
    if key.startswith("tflite_"):
        return out / f"model_{key[len('tflite_'):]}.tflite"
    return out / ARTIFACT_NAMES[key]


def _check_opset(opset):
    try:
        fits = int(opset) >= MIN_OPSET
    except (TypeError, ValueError):
        fits = False
    if not fits:
        raise ValueError(f"ONNX export needs an opset of {MIN_OPSET} or later, got {opset!r}")


def weights_digest(model):
    """sha256 of the model's weights, in order."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight.value)).tobytes())
    return digest.hexdigest()


def _describe(source):
    return f"{len(source)} given uint8 clips" if isinstance(source, np.ndarray) else str(source)


def _tensorrt_engine(model, out, onnx_path, quantize, log):
    """The TensorRT engine from the float-pixel ONNX where this machine can
    build it; else the exact trtexec command for the target."""
    contract = model.preprocessing
    frames_shape = (contract.frames, contract.size, contract.size, 3)
    engine_path = _artifact_path(out, "tensorrt")
    # The trtexec line runs on the target, in a folder holding the exported files: bare names.
    plan = plan_tensorrt(onnx_path.name, engine_path.name, tensorrt_precision(quantize), frames_shape)
    if quantize == "dynamic":
        log("tensorrt: TensorRT has no dynamic-range quantization; the engine is FP32")
    # The engine's metadata sidecar (runtimes.read_metadata), also for an engine built by trtexec.
    sidecar = runtimes.metadata_sidecar(engine_path)
    metadata = export_metadata(model, raw_input=False, input_dtype="float32", quantize=quantize)
    write_atomic(sidecar, json.dumps(metadata, indent=1).encode())
    engine = None
    if plan["path"] == "build":
        engine = build_tensorrt_engine(onnx_path, engine_path, plan["precision"], frames_shape)
        log(f"tensorrt: built {engine} ({plan['precision']}) with the tensorrt Python package")
    else:
        log("tensorrt: no engine built here: " + "; ".join(plan["missing"]) + ".\n"
            f"  Wrote {onnx_path} (float32 pixel input) and {sidecar} (keep it beside the "
            f"engine). On the target, in a folder holding both, run (trtexec is /usr/src/tensorrt/bin/trtexec on "
            f"JetPack, where it is not on the PATH):\n  {plan['trtexec']}")
    return plan, engine


# ---------------------------------------------------------------- CLI

def main(argv):
    import logging

    from absl import flags
    from absl import logging as absl_logging

    from keras_r3d.saving import load

    absl_logging.set_verbosity(absl_logging.WARNING)  # TensorFlow's SavedModel INFO lines would bury ours
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    f = flags.FLAGS
    if len(argv) > 1:
        print(unexpected_arguments(argv[1:]), file=sys.stderr)
        return 2
    formats = [name for name in FORMATS if getattr(f, name)]
    if not formats:
        print("error: choose at least one of --saved_model --tflite --onnx --openvino --tftrt", file=sys.stderr)
        return 2
    try:
        model = load(f.model)
        report = export_model(model, f.output, formats, quantize=f.quantize,
                              calibration=f.calibration, calibration_samples=f.calibration_samples,
                              verification=f.verification, raw_input=f.raw_input, opset=f.opset,
                              onnx_converter=f.onnx_converter, overwrite=f.overwrite)
    except (ValueError, RuntimeError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"report: {pathlib.Path(f.output) / REPORT_NAME}")
    if not report["passed"]:  # a kept earlier artifact too
        failed = {kept: ", ".join(f"{key} ({pathlib.Path(result['path']).name})"
                                  for key, result in report["formats"].items()
                                  if not result["passed"] and (key in report["kept"]) == kept)
                  for kept in (False, True)}
        if failed[False]:
            print(f"error: not within tolerance of the Keras model: {failed[False]}", file=sys.stderr)
        if failed[True]:
            print(f"error: an earlier export kept in {f.output} failed its check: {failed[True]}; export that "
                  "format again, or delete its file", file=sys.stderr)
        return 1
    return 0


def _define_flags():
    from absl import flags

    flags.DEFINE_string("model", None, "A .keras model or an official .pth checkpoint.", required=True)
    flags.DEFINE_string("output", None, "Output folder.", required=True)
    flags.DEFINE_bool("saved_model", False, "Write DIR/saved_model/.")
    flags.DEFINE_bool("tflite", False, "Write DIR/model_<quantize>.tflite (builtin ops only).")
    flags.DEFINE_bool("onnx", False, "Write DIR/model.onnx.")
    flags.DEFINE_bool("openvino", False, "Write DIR/model_openvino.onnx: 3D convs, for OpenVINO on Intel "
                      "CPUs (verified there where the openvino package is installed).")
    flags.DEFINE_bool("tftrt", False, "TensorRT: build DIR/model.engine from ONNX where tensorrt and "
                      "a GPU exist, else write DIR/model_trt.onnx and print the trtexec command.")
    flags.DEFINE_enum("quantize", "none", QUANTIZATIONS, "TFLite (and TensorRT) precision.")
    flags.DEFINE_string("calibration", None, "int8 calibration clips: a TFRecord glob, a video, a "
                        "frame folder, or a folder of videos and frame folders.")
    flags.DEFINE_integer("calibration_samples", 100, "Calibration clips used at most.", lower_bound=1)
    flags.DEFINE_string("verification", None, "Clips to verify the artifacts on (same forms); "
                        "default: the calibration clips.")
    flags.DEFINE_bool("overwrite", False, "Delete the files of another model's export in --output first "
                      "(without it, that is an error; an export of the same model is added to).")
    flags.DEFINE_bool("raw_input", False, "Take normalized float32 input (no preprocessing in the graph).")
    flags.DEFINE_integer("opset", DEFAULT_OPSET, "ONNX opset (13: TensorRT 8.2 / JetPack 4.6).",
                         lower_bound=MIN_OPSET)
    flags.DEFINE_enum("onnx_converter", "auto", ONNX_CONVERTERS,
                      "ONNX (and TensorRT) export: keras_r3d's channels-first writer, tf2onnx, or "
                      "auto: the writer, tf2onnx for layers it lacks.")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    from keras_r3d.interrupts import exit_code
    from keras_r3d.text import plain_warnings

    plain_warnings()
    app.run(lambda argv: sys.exit(exit_code(main, argv)))
