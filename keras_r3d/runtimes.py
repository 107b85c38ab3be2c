"""Load and run an exported keras_r3d artifact with one call signature.

    runtime = load_runtime("export/model_int8.tflite", num_threads=2)
    logits = runtime(frames)   # uint8 (N, T, H, W, 3) -> float32 (N, classes)
    runtime.metadata["class_names"], runtime.input_shape, runtime.name

Formats, chosen by the path: `.tflite` (ai-edge-litert, XNNPACK when it
accepts the graph), `.onnx` (onnxruntime, or OpenVINO for the files of
`export --openvino`), a SavedModel folder (TensorFlow), `.engine` (TensorRT +
pycuda, for the board that built the engine).

This module is deliberately standalone: numpy plus the one runtime it runs,
no TensorFlow (except for SavedModels) and no other keras_r3d module, and
Python 3.6 syntax, so that `exports/run_on_device.py` can use it on a Jetson
(copy both files side by side).
"""
import contextlib
import io
import json
import os
import struct

import numpy as np

# The key of the export metadata: TFLite metadata entry, ONNX metadata_props
# key, and `assets/<key>.json` of a SavedModel.
METADATA_KEY = "keras_r3d"
INPUT_NAME = "frames"
OUTPUT_NAME = "logits"
# The files `load_runtime` takes, besides SavedModel folders.
TENSORRT_SUFFIXES = (".engine", ".plan", ".trt")
ARTIFACT_SUFFIXES = (".tflite", ".onnx") + TENSORRT_SUFFIXES
# What runs an .onnx file. OpenVINO's 3D convs are fast where onnxruntime's
# are slow: `export --openvino` writes its file with them (metadata
# "onnx_layout": "ncdhw"), and `load_runtime` runs such a file on OpenVINO.
ONNX_RUNTIMES = ("onnxruntime", "openvino")
OPENVINO_LAYOUT = "ncdhw"
# OpenVINO's CPU settings: float32, not the bfloat16 it picks on CPUs with AMX.
OPENVINO_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}


class Runtime(object):
    """An exported model as a function of a batch of clips.

    Attributes:
        path: the artifact.
        name: the runtime that runs it, e.g. "tflite+xnnpack", "onnxruntime".
        input_shape: `(None, T, H, W, 3)`; the batch is dynamic.
        input_dtype: numpy dtype the artifact takes (uint8 frames, or float32
            for `--raw_input` and TensorRT engines).
        metadata: the export metadata (preprocessing, class_names, input, ...).
        notes: why a faster path was not taken, if it was not.
    """

    def __init__(self, path, name, input_shape, input_dtype, metadata, notes=""):
        self.path = path
        self.name = name
        self.input_shape = tuple(input_shape)
        self.input_dtype = np.dtype(input_dtype)
        self.metadata = metadata
        self.notes = notes

    def __call__(self, batch):
        """Logits, float32 `(N, classes)`, of a batch `(N,) + input_shape[1:]`."""
        batch = np.asarray(batch)
        if batch.ndim != len(self.input_shape) or tuple(batch.shape[1:]) != self.input_shape[1:]:
            raise ValueError("{}: expected a batch of shape (N,) + {}, got {}".format(
                self.path, self.input_shape[1:], batch.shape))
        if batch.dtype != self.input_dtype:
            if self.input_dtype == np.uint8:
                raise ValueError("{} takes uint8 frames, got {}".format(self.path, batch.dtype))
            batch = batch.astype(self.input_dtype)
        return np.asarray(self._run(np.ascontiguousarray(batch)), np.float32)

    def _run(self, batch):
        raise NotImplementedError

    def __repr__(self):
        return "<{} {} input={}{}>".format(self.name, self.path, self.input_dtype.name,
                                          list(self.input_shape))


def load_runtime(path, num_threads=None, spin=True, onnx_runtime=None):
    """Loads an artifact of `python -m keras_r3d.export` (see module doc).

    Args:
        path: a `.tflite`, `.onnx` or `.engine` file, or a SavedModel folder.
        num_threads: CPU threads (TFLite, onnxruntime, OpenVINO); None: the
            runtime's default.
        spin: onnxruntime's threads spin while they wait, OpenVINO's are pinned
            to cores: fastest on CPUs of their own; False where other busy
            processes share the cores (README, "Deploy").
        onnx_runtime: what runs an `.onnx` file, one of ONNX_RUNTIMES; None:
            OpenVINO for a file of `export --openvino` where it is installed,
            else onnxruntime.
    """
    path = str(path)
    if os.path.isdir(path):
        if not is_saved_model(path):
            raise ValueError("{}: a folder without saved_model.pb, so not a SavedModel: the model is a .tflite, "
                             ".onnx or .engine file or a SavedModel folder".format(path))
        return _SavedModelRuntime(path)
    if not os.path.isfile(path):
        raise FileNotFoundError("No exported model at {}".format(path))
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".tflite":
        return _TFLiteRuntime(path, num_threads)
    if suffix == ".onnx":
        return _onnx_runtime(path, num_threads, spin, onnx_runtime)
    if suffix in TENSORRT_SUFFIXES:
        return _TensorRTRuntime(path)
    raise ValueError("{}: expected a .tflite, .onnx or .engine file or a SavedModel folder".format(path))


def is_saved_model(path):
    """A folder holding a SavedModel (its saved_model.pb or .pbtxt)."""
    return any(os.path.isfile(os.path.join(str(path), name)) for name in ("saved_model.pb", "saved_model.pbtxt"))


def random_frames(batch_size, input_shape, seed=0):
    """Seeded uint8 frames (batch_size, *input_shape): an artifact's input."""
    return np.random.default_rng(seed).integers(0, 256, (batch_size,) + tuple(input_shape),
                                                dtype=np.uint8)


def read_metadata(path):
    """The export metadata of an artifact, without loading a runtime for
    TFLite files and SavedModels; None if it has none."""
    path = str(path)
    if os.path.isdir(path):
        asset = os.path.join(path, "assets", METADATA_KEY + ".json")
        return _load_json(asset) if os.path.isfile(asset) else None
    if path.lower().endswith(".tflite"):
        with open(path, "rb") as file:
            raw = tflite_metadata(file.read()).get(METADATA_KEY)
        return None if raw is None else json.loads(raw.decode("utf-8"))
    if path.lower().endswith(".onnx"):
        with open(path, "rb") as file:
            try:
                raw = onnx_metadata(file).get(METADATA_KEY)
            except ValueError as error:
                raise ValueError("{}: {}".format(path, error)) from None
        return None if raw is None else json.loads(raw)
    sidecar = metadata_sidecar(path)
    return _load_json(sidecar) if os.path.isfile(sidecar) else None


def metadata_sidecar(engine_path):
    """Where a TensorRT engine's metadata lies: `model.engine` -> `model.json`,
    as `export --tftrt` writes it (an engine holds none)."""
    return os.path.splitext(str(engine_path))[0] + ".json"


def _load_json(path):
    with open(path) as file:
        return json.load(file)


# ---------------------------------------------------------------- ONNX protobuf metadata

_TRUNCATED = "not an ONNX file: a truncated protobuf"


def _varint(file, first=b""):
    """The protobuf varint read from `file` (after its `first` byte, if read)."""
    value = shift = 0
    byte = first or file.read(1)
    while True:
        if not byte:
            raise ValueError(_TRUNCATED)
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
        byte = file.read(1)


def _protobuf_fields(file, wanted):
    """(field number, bytes) of the length-delimited fields numbered in
    `wanted` of the protobuf message a binary file object holds, to its end;
    the other fields are seeked past, not read."""
    end = file.seek(0, 2)
    file.seek(0)
    while True:
        first = file.read(1)
        if not first:
            return
        key = _varint(file, first)
        wire_type, number = key & 7, key >> 3
        if wire_type == 0:
            _varint(file)
        elif wire_type in (1, 2, 5):
            length = {1: 8, 5: 4}.get(wire_type) or _varint(file)
            if wire_type == 2 and number in wanted:
                data = file.read(length)
                if len(data) < length:
                    raise ValueError(_TRUNCATED)
                yield number, data
            elif file.seek(length, 1) > end:
                raise ValueError(_TRUNCATED)
        else:
            raise ValueError("not an ONNX file: protobuf wire type {}".format(wire_type))


def onnx_metadata(file):
    """`{key: value}` of the `metadata_props` of an ONNX file (a binary file
    object): field 14 of ModelProto, each a StringStringEntryProto (key 1,
    value 2). Without the onnx package, and without reading the graph."""
    out = {}
    for _, entry in _protobuf_fields(file, (14,)):
        fields = dict(_protobuf_fields(io.BytesIO(entry), (1, 2)))
        out[fields.get(1, b"").decode("utf-8")] = fields.get(2, b"").decode("utf-8")
    return out


# ---------------------------------------------------------------- TFLite flatbuffer metadata

def _table_field(data, table, index):
    """Absolute position of field `index` of the flatbuffer table at `table`, or None."""
    vtable = table - struct.unpack_from("<i", data, table)[0]
    vtable_size = struct.unpack_from("<H", data, vtable)[0]
    if 4 + 2 * index >= vtable_size:
        return None
    offset = struct.unpack_from("<H", data, vtable + 4 + 2 * index)[0]
    return table + offset if offset else None


def _vector(data, field):
    """(first element position, length) of the vector referenced at `field`."""
    start = field + struct.unpack_from("<I", data, field)[0]
    return start + 4, struct.unpack_from("<I", data, start)[0]


def _table_at(data, position):
    return position + struct.unpack_from("<I", data, position)[0]


def tflite_metadata(data):
    """`{name: bytes}` of the metadata entries of a `.tflite` flatbuffer
    (schema: Model.buffers is field 4, Model.metadata field 6)."""
    model = _table_at(data, 0)
    buffers_field, metadata_field = _table_field(data, model, 4), _table_field(data, model, 6)
    if metadata_field is None or buffers_field is None:
        return {}
    buffers, _ = _vector(data, buffers_field)
    entries, count = _vector(data, metadata_field)
    out = {}
    for i in range(count):
        entry = _table_at(data, entries + 4 * i)
        name_start, name_length = _vector(data, _table_field(data, entry, 0))
        name = data[name_start:name_start + name_length].decode("utf-8")
        index_field = _table_field(data, entry, 1)
        index = struct.unpack_from("<I", data, index_field)[0] if index_field else 0
        buffer = _table_at(data, buffers + 4 * index)
        data_field = _table_field(data, buffer, 0)
        if data_field is None:
            continue
        start, length = _vector(data, data_field)
        out[name] = bytes(data[start:start + length])
    return out


# ---------------------------------------------------------------- runtimes

@contextlib.contextmanager
def _needs(path, packages):
    """Turns an ImportError in its block into one naming the packages that run `path`."""
    try:
        yield
    except ImportError as error:
        raise ImportError("{}: running it needs the Python package(s) {} ({})".format(
            path, packages, error)) from None


class _TFLiteRuntime(Runtime):
    """ai-edge-litert (XNNPACK by default); a quantized output is dequantized,
    and a float batch given to an int8/uint8 input is quantized."""

    def __init__(self, path, num_threads):
        try:
            from ai_edge_litert import interpreter as litert
        except ImportError:  # tflite-runtime: Python 3.7-3.9 on aarch64 (JetPack 5); none for 3.6 on Linux
            with _needs(path, "ai-edge-litert or tflite-runtime"):
                from tflite_runtime import interpreter as litert
            if int(np.__version__.split(".")[0]) >= 2:  # its last release (2.14) is built for numpy 1
                raise ImportError("{}: tflite-runtime fails on numpy {} (a SystemError on loading): "
                                  "pip install \"numpy<2\", or ai-edge-litert in place of tflite-runtime".format(
                                      path, np.__version__))

        notes = ""
        try:
            interpreter = litert.Interpreter(model_path=path, num_threads=num_threads)
        except ValueError as error:  # not a TFLite flatbuffer: say which file, as for the other runtimes
            raise ValueError("{}: the TFLite interpreter cannot load it: {}".format(
                path, (str(error).splitlines() or [type(error).__name__])[0])) from None
        try:
            interpreter.allocate_tensors()
            name = "tflite+xnnpack"
        except RuntimeError as error:
            # XNNPACK rejects some quantized graphs at allocation (see
            # exports/README.md); the builtin kernels run every builtin op.
            notes = "XNNPACK refused the graph ({}); builtin kernels".format(
                str(error).splitlines()[0][:200])
            interpreter = litert.Interpreter(
                model_path=path, num_threads=num_threads,
                experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            interpreter.allocate_tensors()
            name = "tflite"
        self._interpreter = interpreter
        self._input = interpreter.get_input_details()[0]
        self._output = interpreter.get_output_details()[0]
        self._batch = int(self._input["shape"][0])
        shape = [None] + [int(d) for d in self._input["shape_signature"][1:]]
        scale, zero_point = self._input["quantization"]
        # uint8 frames quantized with scale 1, zero point 0 are the pixels
        # themselves; any other quantized input takes float and is quantized here.
        takes_pixels = self._input["dtype"] == np.uint8 and (not scale or (scale, zero_point) == (1.0, 0))
        dtype = self._input["dtype"] if takes_pixels or not scale else np.float32
        Runtime.__init__(self, path, name, shape, dtype, read_metadata(path), notes)

    def _run(self, batch):
        it = self._interpreter
        if batch.dtype != self._input["dtype"]:
            scale, zero_point = self._input["quantization"]
            info = np.iinfo(self._input["dtype"])
            batch = np.clip(np.round(batch / scale) + zero_point, info.min, info.max)
            batch = batch.astype(self._input["dtype"])
        if len(batch) != self._batch:
            it.resize_tensor_input(self._input["index"], list(batch.shape))
            it.allocate_tensors()
            self._batch = len(batch)
        it.set_tensor(self._input["index"], batch)
        it.invoke()
        out = it.get_tensor(self._output["index"])
        scale, zero_point = self._output["quantization"]
        if scale:
            out = (out.astype(np.float32) - zero_point) * scale
        return out


class _OnnxRuntime(Runtime):
    """onnxruntime on the CPU (or CUDA/TensorRT providers where installed)."""

    def __init__(self, path, num_threads, spin, notes=""):
        with _needs(path, "onnxruntime"):
            import onnxruntime as ort

        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
            options.inter_op_num_threads = 1
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in ort.get_available_providers()]
        try:
            self._session = ort.InferenceSession(path, options, providers=providers)
        except Exception as error:  # onnxruntime's own exception types derive from Exception only
            raise ValueError("{}: onnxruntime cannot load it: {}".format(
                path, (str(error).splitlines() or [type(error).__name__])[0])) from None
        spec = self._session.get_inputs()[0]
        self._input_name = spec.name
        dtypes = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32}
        if spec.type not in dtypes:
            raise ValueError("{}: unsupported input type {}".format(path, spec.type))
        shape = [None] + [int(d) for d in spec.shape[1:]]
        name = "onnxruntime" + ("+" + self._session.get_providers()[0]
                                if self._session.get_providers()[0] != "CPUExecutionProvider" else "")
        raw = self._session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)  # no `onnx` needed
        Runtime.__init__(self, path, name, shape, dtypes[spec.type], None if raw is None else json.loads(raw),
                         notes)

    def _run(self, batch):
        return self._session.run(None, {self._input_name: batch})[0]


def _onnx_runtime(path, num_threads, spin, onnx_runtime):
    """An .onnx file on `onnx_runtime` (see `load_runtime`)."""
    if onnx_runtime not in (None,) + ONNX_RUNTIMES:
        raise ValueError("onnx_runtime must be one of {}, got {!r}".format(ONNX_RUNTIMES, onnx_runtime))
    notes = ""
    if onnx_runtime is None:
        onnx_runtime = "onnxruntime"
        try:
            layout = (read_metadata(path) or {}).get("onnx_layout")
        except ValueError:  # not an ONNX file: onnxruntime says so below
            layout = None
        if layout == OPENVINO_LAYOUT:
            try:
                import openvino  # noqa: F401
                onnx_runtime = "openvino"
            except ImportError:
                notes = ("written for OpenVINO (export --openvino), which is not installed: onnxruntime "
                         "runs its 3D convs slower than the 2D ones of export --onnx's file "
                         "(pip install openvino)")
    if onnx_runtime == "openvino":
        return _OpenVinoRuntime(path, num_threads, spin)
    return _OnnxRuntime(path, num_threads, spin, notes)


_OPENVINO_CORE = []  # openvino_core's one Core


def openvino_core():
    """The process's one `openvino.Core`, kept for its lifetime. A Core sets
    an alternate signal stack on its thread and, once deleted, puts back the
    one before it, even where that one's Core is gone: Cores deleted out of
    order (openvino 2026.4) leave a freed stack, on which the next Ctrl-C
    crashes the process with SIGSEGV instead of raising KeyboardInterrupt."""
    if not _OPENVINO_CORE:
        import openvino as ov

        _OPENVINO_CORE.append(ov.Core())
    return _OPENVINO_CORE[0]


class _OpenVinoRuntime(Runtime):
    """OpenVINO on the CPU (OPENVINO_CONFIG), compiled for each batch size it
    is given: a static shape runs faster than a dynamic batch."""

    def __init__(self, path, num_threads, spin):
        with _needs(path, "openvino"):
            import openvino  # noqa: F401
        self._core = openvino_core()
        try:
            self._model = self._core.read_model(path)
        except RuntimeError as error:
            raise ValueError("{}: OpenVINO cannot load it: {}".format(
                path, (str(error).strip().splitlines() or [type(error).__name__])[0])) from None
        self._config = dict(OPENVINO_CONFIG, ENABLE_CPU_PINNING=bool(spin))
        if num_threads:
            self._config["INFERENCE_NUM_THREADS"] = int(num_threads)
        self._requests = {}  # batch size -> infer request of the model compiled for it
        port = self._model.input(0)
        dtypes = {"u8": np.uint8, "f32": np.float32}
        if port.get_element_type().get_type_name() not in dtypes:
            raise ValueError("{}: unsupported input type {}".format(path, port.get_element_type()))
        shape = [None] + [d.get_length() for d in list(port.get_partial_shape())[1:]]
        Runtime.__init__(self, path, "openvino", shape, dtypes[port.get_element_type().get_type_name()],
                         read_metadata(path))

    def _run(self, batch):
        request = self._requests.get(len(batch))
        if request is None:
            model = self._model.clone()
            model.reshape([len(batch)] + list(self.input_shape[1:]))
            request = self._core.compile_model(model, "CPU", self._config).create_infer_request()
            self._requests[len(batch)] = request
        return request.infer([batch], share_inputs=True)[0]


class _SavedModelRuntime(Runtime):
    """A SavedModel's `serving_default` signature, in TensorFlow."""

    def __init__(self, path):
        import tensorflow as tf

        try:
            self._function = tf.saved_model.load(path).signatures["serving_default"]
            spec = self._function.structured_input_signature[1][INPUT_NAME]
        except (KeyError, OSError) as error:  # another model's signature; a damaged saved_model.pb
            raise ValueError("{}: not a SavedModel of keras_r3d.export (no serving_default signature with "
                             "input {!r}: {})".format(path, INPUT_NAME, str(error).splitlines()[0][:200])) from None
        shape = [None] + spec.shape.as_list()[1:]
        Runtime.__init__(self, path, "tensorflow-savedmodel", shape, spec.dtype.as_numpy_dtype,
                         read_metadata(path))

    def _run(self, batch):
        return self._function(**{INPUT_NAME: batch})[OUTPUT_NAME].numpy()


class _TensorRTRuntime(Runtime):
    """A serialized TensorRT engine on its GPU, with pycuda buffers.

    Handles the TensorRT 8 binding API (JetPack 4.6/5) and the TensorRT 10
    tensor API. Not run in this repository's CI (no GPU); see exports/README.md.
    """

    def __init__(self, path):
        with _needs(path, "tensorrt and pycuda"):
            import pycuda.autoinit  # noqa: F401  (creates the CUDA context)
            import pycuda.driver as cuda
            import tensorrt as trt

        self._cuda = cuda
        logger = trt.Logger(trt.Logger.WARNING)
        with open(path, "rb") as file:
            self._engine = trt.Runtime(logger).deserialize_cuda_engine(file.read())
        if self._engine is None:
            raise ValueError("{}: TensorRT could not deserialize the engine (built for "
                             "another GPU or TensorRT version?)".format(path))
        self._context = self._engine.create_execution_context()
        self._tensor_api = hasattr(self._engine, "num_io_tensors")
        if self._tensor_api:
            names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
            self._input_name = [n for n in names
                                if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT][0]
            self._output_name = [n for n in names if n != self._input_name][0]
            shape = self._engine.get_tensor_shape(self._input_name)
            dtype = trt.nptype(self._engine.get_tensor_dtype(self._input_name))
        else:
            self._input_index = [i for i in range(self._engine.num_bindings)
                                 if self._engine.binding_is_input(i)][0]
            self._output_index = 1 - self._input_index
            shape = self._engine.get_binding_shape(self._input_index)
            dtype = trt.nptype(self._engine.get_binding_dtype(self._input_index))
        self._stream = cuda.Stream()
        self._buffers = None  # (input shape, output shape, device input, device output) of the last call
        Runtime.__init__(self, path, "tensorrt", [None] + list(shape)[1:], dtype, read_metadata(path))

    def _device_buffers(self, batch):
        """The device buffers for `batch`'s shape, allocated again only when it
        changes (so that timed calls do not include allocation)."""
        if self._buffers is None or self._buffers[0] != batch.shape:
            self._buffers = None  # the old buffers are freed first
            if self._tensor_api:
                self._context.set_input_shape(self._input_name, batch.shape)
                out_shape = tuple(self._context.get_tensor_shape(self._output_name))
            else:
                self._context.set_binding_shape(self._input_index, batch.shape)
                out_shape = tuple(self._context.get_binding_shape(self._output_index))
            d_in = self._cuda.mem_alloc(batch.nbytes)
            d_out = self._cuda.mem_alloc(int(np.prod(out_shape)) * np.dtype(np.float32).itemsize)
            if self._tensor_api:
                self._context.set_tensor_address(self._input_name, int(d_in))
                self._context.set_tensor_address(self._output_name, int(d_out))
            self._buffers = (batch.shape, out_shape, d_in, d_out)
        return self._buffers[1:]

    def _run(self, batch):
        cuda = self._cuda
        out_shape, d_in, d_out = self._device_buffers(batch)
        out = np.empty(out_shape, np.float32)
        cuda.memcpy_htod_async(d_in, batch, self._stream)
        if self._tensor_api:
            self._context.execute_async_v3(self._stream.handle)
        else:
            bindings = [0, 0]
            bindings[self._input_index], bindings[self._output_index] = int(d_in), int(d_out)
            self._context.execute_async_v2(bindings, self._stream.handle)
        cuda.memcpy_dtoh_async(out, d_out, self._stream)
        self._stream.synchronize()
        return out
