"""Table 8 measured on this machine: params, MFLOPs and clips/s per model.

    python -m keras_r3d.benchmark --models efficient --backends tensorflow,jax \\
        --runtimes keras,tflite,onnxruntime --batch_sizes 1,8 --tag cpu-2core

writes `<output_dir>/<tag>.json` (every measurement and the run's facts),
`<tag>.md` (laid out like Table 8, the paper's figures beside ours) and
`<tag>.png` (clips/s against MFLOPs).

A measurement is one (model, runtime, backend, precision, batch size): the
first call (trace + compile) is timed apart as `compile_s`, then `--warmup`
untimed calls lasting at least `--warmup_s` seconds, then `--repeats` timed
calls, each synchronized with the device. Keras' backend is fixed per
process, so each backend other than this process's runs in a worker
subprocess (this module with `--worker_output`), and the rows are merged;
the models' params and MFLOPs are counted in one too, so that building
them all leaves nothing in the peak memory of this process's rows. Exported runtimes (TFLite, onnxruntime, TensorRT) are
exported and timed in the TensorFlow process through `keras_r3d.export`.
`--official_repo` times the official PyTorch models side by side, imported
from the user's checkout at run time, eager and under `torch.compile`.
The Markdown and the plot are `keras_r3d.benchmark_report`'s, which also
renders them again from a JSON (`--rerender`).
"""
import contextlib
import datetime
import importlib.metadata
import importlib.util
import itertools
import json
import os
import pathlib
import platform
import shlex
import subprocess
import sys
import tempfile
import time

import numpy as np

from keras_r3d import export
from keras_r3d.benchmark_report import (EFFICIENT_ARCHS, OFFICIAL_MODES, expected_cells, missing_cells, plot_speed,
                                       render_markdown, repeats_per_round, rerender, series_label)
from keras_r3d.files import probe_writable, write_atomic
from keras_r3d.interrupts import raise_if_interrupted, sticky_interrupts
from keras_r3d.layers import IMPLEMENTATIONS, JIT_COMPILE_CHOICES, implementation, jit_compile, unavailable
from keras_r3d.runtimes import (ONNX_RUNTIMES, OPENVINO_CONFIG, OPENVINO_LAYOUT, load_runtime, openvino_core,
                                random_frames)
from keras_r3d.text import unexpected_arguments

BACKENDS = ("tensorflow", "jax", "torch")
RUNTIMES = ("keras", "tflite", "onnxruntime", "openvino", "tensorrt")
PRECISIONS = ("float32", "bfloat16", "float16", "int8")
OFFICIAL_MEMORY_FORMATS = ("contiguous", "channels_last_3d")  # PyTorch's, for the official code
# Model groups accepted by --models besides registry names.
MODEL_GROUPS = ("all", "efficient", "1.0x")
# Libraries whose versions a run records (distribution names).
VERSIONED = ("keras", "tensorflow", "tensorflow-cpu", "jax", "jaxlib", "torch", "numpy",
             "onnxruntime", "onnxruntime-gpu", "openvino", "ai-edge-litert", "tensorrt", "tf2onnx")
MIB = 1024 * 1024


# ---------------------------------------------------------------- model choice

def resolve_models(spec):
    """Registry names from `--models`: `all` (Table 8's rows), `efficient`
    (its 3D ShuffleNet/MobileNet rows), `1.0x`, or comma-separated names."""
    from keras_r3d import registry

    table8 = [name for name in registry.list_models()
              if (registry.get_spec(name).table8 or {}).get("paper")]
    groups = {
        "all": table8,
        "efficient": [n for n in table8 if registry.get_spec(n).arch in EFFICIENT_ARCHS],
        "1.0x": [n for n in table8 if n.endswith("-1.0x")],
    }
    names = []
    for item in _split(spec):
        for name in groups.get(item, [item]):
            try:
                registry.get_spec(name)
            except ValueError as error:
                raise ValueError(f"--models: {error}; or a group: {', '.join(groups)}") from None
            if name not in names:
                names.append(name)
    if not names:
        raise ValueError("--models selects no model")
    return names


def _split(text):
    return [item.strip() for item in str(text).split(",") if item.strip()]


def parse_input_shape(text):
    """`16,112,112` -> (16, 112, 112, 3)."""
    values = _split(text)
    if len(values) != 3 or not all(v.isdigit() and int(v) > 0 for v in values):
        raise ValueError(f"--input_shape must be 3 positive ints FRAMES,HEIGHT,WIDTH, got {text!r}")
    return tuple(int(v) for v in values) + (3,)


# ---------------------------------------------------------------- the machine

# The vector extensions that decide CPU kernels' speed, as /proc/cpuinfo names them.
SIMD_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def cpu_model(cpuinfo=None):
    """The CPU's model name, family, model and vector extensions from
    /proc/cpuinfo (or the platform's name). Virtual machines often report a
    bare "AMD EPYC": the family tells the generation apart (26 is Zen 5,
    25 Zen 3/4, 23 Zen 1/2), and CPU kernels' speed depends on it."""
    if cpuinfo is None:
        try:
            cpuinfo = pathlib.Path("/proc/cpuinfo").read_text()
        except OSError:
            return platform.processor() or platform.machine()
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    details = [f"{label} {fields[key]}" for key, label in (("cpu family", "family"), ("model", "model"))
               if key in fields]
    flags = set(fields.get("flags", "").split())
    details.append(" ".join(flag for flag in SIMD_FLAGS if flag in flags) or "no AVX2")
    return f"{fields['model name']} ({', '.join(details)})"


def cpu_count():
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def gpu_names():
    """The GPUs nvidia-smi reports, or [] without one."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def library_versions():
    versions = {"python": platform.python_version()}
    for dist in VERSIONED:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    from keras_r3d import __version__

    versions["keras_r3d"] = __version__
    return versions


def git_commit():
    root = pathlib.Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=30, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "keras_r3d"],
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+uncommitted" if dirty else "")


def reset_peak_rss():
    """Resets the kernel's peak-RSS counter (VmHWM) of this process; False
    where the kernel does not allow it (then the peak is the process's)."""
    try:
        pathlib.Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _proc_status_mib(field):
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MiB, or None."""
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return None


def peak_rss_mib():
    import resource

    return _proc_status_mib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def with_rss_added(on_row):
    """`on_row` for the rows of the model (or artifact) about to be built,
    adding to each timed row `rss_added_mib`: its peak RSS less the process's
    RSS now (what earlier models left resident is not this one's), where the
    peak was reset before the measurement."""
    before = _proc_status_mib("VmRSS")

    def add(row):
        if before is not None and row.get("peak_rss_scope") == "measurement":
            row = {**row, "rss_added_mib": row["peak_rss_mib"] - before}
        on_row(row)
    return add


# ---------------------------------------------------------------- timing

def summarize(latencies_s, batch_size):
    """Median/min/max clips/s and p50/p99 latency of timed calls."""
    lat = np.asarray(latencies_s, dtype=np.float64)
    cps = batch_size / lat
    return {  # the median clips/s is the batch over the median call, as p50 is
        "clips_per_s": {"median": float(batch_size / np.median(lat)), "min": float(cps.min()),
                        "max": float(cps.max())},
        "latency_ms": {"p50": float(np.percentile(lat, 50) * 1e3),
                       "p99": float(np.percentile(lat, 99) * 1e3)},
        "repeats": int(lat.size),
    }


def time_runner(call, sync, warmup, repeats, batch_size, gpu=None, warmup_s=0.0):
    """Times `sync(call())`: the first call apart (compile), then at least
    `warmup` calls and `warmup_s` seconds untimed (a GPU left idle during the
    compile needs time to raise its clocks), then `repeats` timed calls.
    `gpu` resets and reads peak device memory."""
    rss_reset = reset_peak_rss()
    if gpu:
        gpu.reset()
    start = time.perf_counter()
    sync(call())
    compile_s = time.perf_counter() - start
    done, start = 0, time.perf_counter()
    while done < warmup or time.perf_counter() - start < warmup_s:
        sync(call())
        done += 1
    latencies = []
    for _ in range(repeats):
        start = time.perf_counter()
        sync(call())
        latencies.append(time.perf_counter() - start)
    return {
        **summarize(latencies, batch_size),
        "latencies_s": latencies,
        "compile_s": compile_s,
        "peak_rss_mib": peak_rss_mib(),
        "peak_rss_scope": "measurement" if rss_reset else "process",
        "gpu_peak_mib": gpu.peak_mib() if gpu else None,
        "gpu_peak_scope": gpu.scope if gpu else None,
    }


class _GpuMemory:
    """Peak device memory through the framework's own counters; `reset` None
    where the framework cannot reset its peak (JAX): the process's peak so far."""

    def __init__(self, reset, peak_bytes):
        self.reset = reset or (lambda: None)
        self.scope = "measurement" if reset else "process"
        self._peak_bytes = peak_bytes

    def peak_mib(self):
        return self._peak_bytes() / MIB


# ---------------------------------------------------------------- keras backends

def configure_backend(threads, tf32):
    """Thread count and TF32 for this process's Keras backend; call before
    any model is built. JAX has no thread setting: `pins_jax` says when its
    rows run in a worker pinned to `threads` CPUs instead. Returns a
    description of the compute device."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        tf.config.experimental.enable_tensor_float_32_execution(tf32)
        gpus = tf.config.list_physical_devices("GPU")
        return f"GPU ({len(gpus)})" if gpus else "CPU"
    if backend == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "tensorfloat32" if tf32 else "highest")
        return str(jax.devices()[0].platform).upper()
    import torch

    configure_torch(threads, tf32)
    return "GPU" if torch.cuda.is_available() else "CPU"


def configure_torch(threads, tf32):
    """Thread count and TF32 for PyTorch: the Keras torch backend's and the official code's."""
    import torch

    torch.set_num_threads(threads)
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def pins_jax(backend, threads):
    """Whether JAX's rows need a process pinned to `threads` CPUs (XLA sizes
    its CPU thread pool by the CPUs it may use)."""
    return backend == "jax" and threads < cpu_count() and hasattr(os, "sched_setaffinity")


def gpu_copy_bandwidth():
    """Device memory bandwidth in GB/s (bytes read + written) of a 1 GiB
    on-device copy through this process's JAX or PyTorch, or None without
    a GPU: the ceiling of the bandwidth-bound column."""
    import keras

    backend, nbytes, repeats = keras.backend.backend(), 1 << 30, 20
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        if jax.devices()[0].platform != "gpu":
            return None
        x = jnp.ones(nbytes // 4, jnp.float32)
        add = jax.jit(lambda a: a + 1.0)

        def copies():
            for _ in range(repeats):
                y = add(x)
            y.block_until_ready()
    elif backend == "torch":
        import torch

        if not torch.cuda.is_available():
            return None
        x = torch.ones(nbytes // 4, device="cuda")
        y = torch.empty_like(x)

        def copies():
            for _ in range(repeats):
                y.copy_(x)
            torch.cuda.synchronize()
    else:
        return None
    copies()  # allocations and clocks settle
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        copies()
        best = min(best, time.perf_counter() - start)
    return 2 * nbytes * repeats / best / 1e9


def keras_runner(model, x, jit_compile=True):
    """(call, sync, gpu) running `model` on `x` with this process's backend:
    a tf.function on TF (XLA-compiled if `jit_compile`), a jitted
    `stateless_call` on JAX, and eager `torch.inference_mode` on torch."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        fn = tf.function(lambda inputs: model(inputs, training=False), jit_compile=jit_compile)
        xt = tf.constant(x)
        gpu = None
        if tf.config.list_physical_devices("GPU"):
            gpu = _GpuMemory(lambda: tf.config.experimental.reset_memory_stats("GPU:0"),
                             lambda: tf.config.experimental.get_memory_info("GPU:0")["peak"])
        return (lambda: fn(xt)), (lambda y: y.numpy()), gpu
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        @jax.jit
        def fn(tv, ntv, inputs):
            return model.stateless_call(tv, ntv, inputs, training=False)[0]

        device = jax.devices()[0]
        xj = jax.device_put(x, device)
        gpu = None
        if device.platform == "gpu" and device.memory_stats():
            stats = device.memory_stats
            gpu = _GpuMemory(None, lambda: stats()["peak_bytes_in_use"])
        compiled = []

        def call():
            if not compiled:  # the timed first call; XLA's cost estimate goes in the row
                compiled.append(fn.lower(trainable, non_trainable, xj).compile())
                cost = compiled[0].cost_analysis()
                cost = cost[0] if isinstance(cost, list) else cost
                call.facts = {"xla_bytes_accessed_per_clip": cost.get("bytes accessed", 0) / len(x),
                              "xla_flops_per_clip": cost.get("flops", 0) / len(x)}
            return compiled[0](trainable, non_trainable, xj)

        return call, (lambda y: y.block_until_ready()), gpu
    import torch

    cuda = torch.cuda.is_available()
    xt = torch.as_tensor(x, device="cuda" if cuda else "cpu")

    def call():
        with torch.inference_mode():
            return model(xt, training=False)

    if cuda:
        gpu = _GpuMemory(torch.cuda.reset_peak_memory_stats, torch.cuda.max_memory_allocated)
        return call, (lambda y: torch.cuda.synchronize()), gpu
    return call, (lambda y: y.cpu()), None


@contextlib.contextmanager
def dtype_policy(precision):
    """Builds Keras models in `precision` (mixed policies for 16-bit)."""
    import keras

    policy = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy[precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def model_facts(name, model):
    """Params and MFLOPs (ours, paper convention) beside Table 8's figures."""
    from keras_r3d import profile, registry

    counts = profile(model)
    spec = registry.get_spec(name)
    paper = (spec.table8 or {}).get("paper") or {}
    return {
        "params_M": counts["trainable_params"] / 1e6,
        "mflops": counts["flops_paper"] / 1e6,
        "conv_pool_io_elements": counts["conv_pool_io_elements"],
        "paper": {key: paper.get(key) for key in ("params_M", "mflops", "titan_xp_cps",
                                                  "jetson_tx2_cps")},
    }


# ---------------------------------------------------------------- measuring

def random_clips(batch_size, input_shape, layout="ndhwc"):
    """Seeded standard-normal clips: already-normalized model input."""
    x = np.random.default_rng(0).standard_normal((batch_size,) + tuple(input_shape))
    if layout == "ncdhw":
        x = np.moveaxis(x, -1, 1)
    return np.ascontiguousarray(x, dtype=np.float32)


def measure(base, batch_sizes, make_runner, settings, on_row):
    """One row per batch size: `make_runner(batch)` gives (call, sync, gpu);
    a failure becomes the row's status and the run goes on."""
    for batch in batch_sizes:
        row = {**base, "batch_size": batch}
        try:
            call, sync, gpu = make_runner(batch)
            row.update(time_runner(call, sync, settings["warmup"], settings["repeats"], batch, gpu,
                                   settings["warmup_s"]))
            row.update(getattr(call, "facts", {}))
            row["status"] = "ok"
        except Exception as error:  # recorded in the results; the run goes on
            row["status"] = f"error: {type(error).__name__}: {error}"[:500]
        row["load_1min"] = os.getloadavg()[0]
        row["usable_cpus"] = cpu_count()
        on_row(row)
        raise_if_interrupted()


def untimed(base, batch_sizes, status, on_row):
    """A row per batch size that says why nothing was timed."""
    for batch in batch_sizes:
        on_row({**base, "batch_size": batch, "status": status[:500]})


def measure_keras(name, settings, on_row):
    """Every precision and batch size of one model on this process's backend."""
    import keras

    from keras_r3d import create_model
    from keras_r3d.models import fold_batch_norm

    backend = keras.backend.backend()
    # XLA on/off only exists on TF; JAX is always jitted, torch runs eager.
    jit_choices = tf_jit_choices(settings["tf_jit_compile"]) if backend == "tensorflow" else [None]
    for precision, jit, layers, batch_norm in itertools.product(
            settings["precisions"], jit_choices, settings["layers"], settings["batch_norm"]):
        base = {"model": name, "runtime": "keras", "backend": backend, "precision": precision}
        if jit is not None:
            base["jit_compile"] = jit
        if layers != "auto":
            base["layers"] = layers
        if batch_norm == "folded":
            base["batch_norm"] = batch_norm
        if precision == "int8":
            int8_runtimes = [runtime for runtime, kinds in EXPORT_PRECISIONS.items() if "int8" in kinds]
            untimed(base, settings["batch_sizes"], f"not applicable: int8 is measured as an export "
                    f"(--runtimes {','.join(int8_runtimes)})", on_row)
            continue
        if why := unavailable(layers):
            untimed(base, settings["batch_sizes"], f"not applicable: {why}", on_row)
            continue
        keras.utils.set_random_seed(0)
        cell_row = with_rss_added(on_row)
        with dtype_policy(precision):
            model = create_model(name, num_classes=settings["num_classes"],
                                 input_shape=settings["input_shape"])
            if batch_norm == "folded":
                model = fold_batch_norm(model)
        with implementation(layers):  # the first (compile) call traces the layers
            measure(base, settings["batch_sizes"],
                    lambda batch: keras_runner(model, random_clips(batch, settings["input_shape"]),
                                               jit),
                    settings, cell_row)


def tf_jit_choices(values):
    """`--tf_jit_compile` values -> booleans (`layers.jit_compile`)."""
    return list(dict.fromkeys(jit_compile(value)
                              for value in values))


# ---------------------------------------------------------------- the official code

def load_official_module(repo, arch):
    """Imports `models/<arch>.py` from a checkout of the official code."""
    path = pathlib.Path(repo) / "models" / f"{arch}.py"
    if not path.is_file():
        raise FileNotFoundError(f"--official_repo {repo}: no models/{arch}.py there")
    module_spec = importlib.util.spec_from_file_location(f"official_efficient3dcnns_{arch}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def build_official(repo, name, num_classes, input_shape):
    """The official PyTorch model of registry configuration `name`."""
    from keras_r3d import registry

    spec = registry.get_spec(name)
    kw = spec.kwargs
    frames, size = input_shape[0], input_shape[1]
    module = load_official_module(repo, spec.arch)
    if spec.arch == "shufflenet":
        return module.ShuffleNet(groups=kw["groups"], width_mult=kw["width_mult"],
                                 num_classes=num_classes)
    if spec.arch == "shufflenetv2":
        return module.ShuffleNetV2(num_classes=num_classes, sample_size=size,
                                   width_mult=kw["width_mult"])
    if spec.arch == "mobilenet":
        return module.MobileNet(num_classes=num_classes, sample_size=size, width_mult=kw["width_mult"])
    if spec.arch == "mobilenetv2":
        return module.MobileNetV2(num_classes=num_classes, sample_size=size,
                                  width_mult=kw["width_mult"])
    if spec.arch == "squeezenet":
        return module.SqueezeNet(sample_size=size, sample_duration=frames, version=kw["version"],
                                 num_classes=num_classes)
    if spec.arch == "resnet":
        return getattr(module, f"resnet{kw['depth']}")(
            sample_size=size, sample_duration=frames, shortcut_type=kw["shortcut"],
            num_classes=num_classes)
    if spec.arch == "resnext":
        return getattr(module, f"resnext{kw['depth']}")(
            sample_size=size, sample_duration=frames, shortcut_type=kw["shortcut"],
            cardinality=kw["cardinality"], num_classes=num_classes)
    if spec.arch == "c3d":
        return module.C3D(sample_size=size, sample_duration=frames, num_classes=num_classes)
    raise ValueError(f"No official builder for arch {spec.arch!r}")


def official_runner(model, x_ncdhw, mode, precision, channels_last):
    """(call, sync, gpu) for an official model: eager or `torch.compile`,
    fp32 or bf16/fp16 autocast, optionally channels_last_3d."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.eval().to(device)
    x = torch.as_tensor(x_ncdhw, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    fn = torch.compile(model) if mode == "compile" else model
    autocast = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(precision)

    def call():
        with torch.inference_mode(), torch.autocast(device, dtype=autocast or torch.float32,
                                                    enabled=autocast is not None):
            return fn(x)

    if device == "cuda":
        gpu = _GpuMemory(torch.cuda.reset_peak_memory_stats, torch.cuda.max_memory_allocated)
        return call, (lambda y: torch.cuda.synchronize()), gpu
    return call, (lambda y: y.cpu()), None


def measure_official(name, settings, on_row):
    """The official code's model `name`, eager and compiled, every precision,
    memory format and batch size, on this process's PyTorch (any Keras backend)."""
    import torch

    configure_torch(settings["threads"], settings["tf32"])
    input_shape = settings["input_shape"]
    for mode, memory_format, precision in itertools.product(
            settings["official_modes"], settings["official_memory_formats"], settings["precisions"]):
        channels_last = memory_format == "channels_last_3d"
        base = {"model": name, "runtime": f"official-{mode}", "backend": "torch",
                "precision": precision, "channels_last_3d": channels_last}
        if precision == "int8":
            untimed(base, settings["batch_sizes"], "not applicable: the official code has no int8", on_row)
            continue
        torch.manual_seed(0)
        cell_row = with_rss_added(on_row)
        try:
            model = build_official(settings["official_repo"], name, settings["num_classes"], input_shape)
        except Exception as error:  # another version of the code, say: recorded, and the run goes on
            untimed(base, settings["batch_sizes"], f"error: official model: {type(error).__name__}: {error}",
                    on_row)
            continue
        measure(base, settings["batch_sizes"],
                lambda batch: official_runner(model, random_clips(batch, input_shape, "ncdhw"),
                                              mode, precision, channels_last),
                settings, cell_row)
        if mode == "compile":
            torch._dynamo.reset()  # frees the compiled graphs of this model


# ---------------------------------------------------------------- exported runtimes

CONVERTED_RUNTIMES = ("onnxruntime", "tensorrt")  # --onnx_converters applies
EXPORT_PRECISIONS = {"tflite": ("float32", "float16", "int8"), "onnxruntime": ("float32",),
                     "openvino": ("float32",), "tensorrt": ("float32", "float16")}
CALIBRATION_CLIPS = 2  # int8 calibration clips: they set the scales, not the speed


def measure_exported(name, runtimes, settings, on_row):
    """TFLite / onnxruntime / OpenVINO / TensorRT artifacts made by `keras_r3d.export`,
    run through `keras_r3d.runtimes` on uint8 frames (the deployed input:
    the preprocessing runs inside the artifact). Export time is recorded
    per artifact; int8 calibrates on seeded random frames, which sets the
    scales but not the speed."""
    import keras

    from keras_r3d import create_model

    keras.utils.set_random_seed(0)
    model = create_model(name, num_classes=settings["num_classes"],
                         input_shape=settings["input_shape"])
    with tempfile.TemporaryDirectory(prefix="keras_r3d_export_") as workdir:
        for runtime in runtimes:
            converters = settings["onnx_converters"] if runtime in CONVERTED_RUNTIMES else ["auto"]
            for precision, converter in itertools.product(settings["precisions"], converters):
                base = {"model": name, "runtime": runtime, "backend": runtime, "precision": precision}
                if converter != "auto":
                    base["onnx_converter"] = converter
                if precision not in EXPORT_PRECISIONS[runtime]:
                    untimed(base, settings["batch_sizes"], f"not applicable: {runtime} exports "
                            f"{', '.join(EXPORT_PRECISIONS[runtime])}", on_row)
                    continue
                cell_row = with_rss_added(on_row)  # this artifact's share
                try:
                    start = time.perf_counter()
                    artifact = export_artifact(model, runtime, precision, workdir, settings, converter)
                    export_s = time.perf_counter() - start
                    loaded = load_runtime(artifact, num_threads=settings["threads"],
                                          onnx_runtime=runtime if runtime in ONNX_RUNTIMES else None)
                except NotMeasured as why:
                    untimed(base, settings["batch_sizes"], f"not measured: {why}", on_row)
                    continue
                except Exception as error:  # recorded; the run goes on
                    untimed(base, settings["batch_sizes"], f"error: export: {type(error).__name__}: {error}",
                            on_row)
                    continue
                base.update(export_s=export_s, artifact_bytes=pathlib.Path(artifact).stat().st_size,
                            backend=loaded.name, notes=loaded.notes)
                if runtime in ONNX_RUNTIMES and converter == "auto":  # which converter "auto" chose
                    base["converted_by"] = (loaded.metadata or {}).get("converter")
                if runtime == "tflite":  # the op mix (reshapes, slices, BatchNorm MUL/ADD) bounds small models
                    base["tflite_op_counts"] = export.tflite_ops(pathlib.Path(artifact).read_bytes())[0]
                if loaded.name in OP_PROFILERS:
                    base[f"{loaded.name}_op_time"] = OP_PROFILERS[loaded.name](
                        artifact, settings["threads"], random_frames(1, settings["input_shape"]))
                measure(base, settings["batch_sizes"],
                        lambda batch: artifact_runner(loaded, batch, settings["input_shape"]),
                        settings, cell_row)


def artifact_runner(loaded, batch_size, input_shape):
    """(call, sync, gpu) of a loaded artifact: its outputs come back as
    numpy arrays, so a call is already synchronized."""
    clips = random_frames(batch_size, input_shape)
    return (lambda: loaded(clips)), (lambda logits: logits), None


class NotMeasured(Exception):
    """This machine cannot run a measurement (e.g. TensorRT without a GPU)."""


def export_artifact(model, runtime, precision, workdir, settings, onnx_converter="auto"):
    """The artifact file of `runtime` at `precision`, written in `workdir`
    (ONNX by `export.export_onnx`'s `onnx_converter`)."""
    workdir = pathlib.Path(workdir)
    quantize = {"float32": "none", "float16": "float16", "int8": "int8"}[precision]  # as export names them
    if runtime == "tflite":
        clips = random_frames(CALIBRATION_CLIPS, settings["input_shape"], seed=1) \
            if quantize == "int8" else None
        return export.export_tflite(model, workdir / f"model_{quantize}.tflite", quantize=quantize,
                                    calibration_clips=clips)
    if runtime == "onnxruntime":
        return export.export_onnx(model, workdir / f"model_{onnx_converter}.onnx", converter=onnx_converter)
    if runtime == "openvino":
        return export.export_onnx(model, workdir / "model_openvino.onnx", converter=onnx_converter,
                                  layout=OPENVINO_LAYOUT)
    missing = export.tensorrt_missing()
    if missing:
        raise NotMeasured("; ".join(missing))
    onnx_path = export.export_onnx(model, workdir / f"model_trt_{onnx_converter}.onnx", input_dtype="float32",
                                   converter=onnx_converter)
    return export.build_tensorrt_engine(onnx_path, workdir / f"model_{precision}.engine",
                                        export.tensorrt_precision(quantize), settings["input_shape"])


def onnxruntime_op_time(path, threads, clips, calls=10):
    """{ONNX op type: [share of the kernel time, nodes run per call]} over
    `calls` CPU runs on `clips` after one warm-up, from onnxruntime's own
    profiler, largest share first: where the layout transposes, slices and
    pads of the 2D lowering cost show."""
    import collections

    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="keras_r3d_ort_") as folder:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(pathlib.Path(folder) / "profile")
        if threads:
            options.intra_op_num_threads, options.inter_op_num_threads = int(threads), 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: clips}
        for _ in range(1 + calls):
            session.run(None, feed)
        events = json.loads(pathlib.Path(session.end_profiling()).read_text())
    runs = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    timed_from = runs[1] if len(runs) > 1 else 0  # the warm-up run is not counted
    time_us, nodes = collections.Counter(), collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= timed_from:
            time_us[event["args"]["op_name"]] += event["dur"]
            nodes[event["args"]["op_name"]] += 1
    return _op_shares(time_us, nodes, calls)


def _op_shares(time_us, nodes, calls):
    """{op: [share of the summed time, nodes run per call]}, largest share first."""
    total = sum(time_us.values()) or 1
    return {op: [round(us / total, 4), nodes[op] // calls] for op, us in time_us.most_common()}


def openvino_op_time(path, threads, clips, calls=10):
    """`onnxruntime_op_time` for OpenVINO: {node type of its compiled graph
    (e.g. GroupConvolution, Reorder): [share of the kernel time, nodes run
    per call]} from its performance counters, over `calls` runs after one
    warm-up, compiled as `keras_r3d.runtimes` compiles it (float32, static
    shapes)."""
    import collections

    core = openvino_core()
    model = core.read_model(str(path))
    model.reshape(list(clips.shape))
    config = dict(OPENVINO_CONFIG, PERF_COUNT=True)
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    request = core.compile_model(model, "CPU", config).create_infer_request()
    request.infer([clips])
    time_us, nodes = collections.Counter(), collections.Counter()
    for _ in range(calls):
        request.infer([clips])
        for info in request.get_profiling_info():
            if info.status == info.Status.EXECUTED:
                time_us[info.node_type] += info.real_time.total_seconds() * 1e6
                nodes[info.node_type] += 1
    return _op_shares(time_us, nodes, calls)


# The runtimes whose own profilers say where the time goes (benchmark_report.OP_PROFILED).
OP_PROFILERS = {"onnxruntime": onnxruntime_op_time, "openvino": openvino_op_time}


# ---------------------------------------------------------------- per-layer profile

def layer_kind(layer):
    """A short class of a layer for the profile: depthwise / grouped /
    pointwise / dense 3D conv, batch norm, activation, pool, or its class."""
    from keras_r3d import layers as r3d_layers

    if isinstance(layer, r3d_layers.Conv3D):
        channels = layer.input.shape[-1]
        if layer.groups > 1 and layer.groups == channels == layer.filters:
            return "conv depthwise " + "x".join(map(str, layer.kernel_size))
        if layer.groups > 1:
            return f"conv grouped {'x'.join(map(str, layer.kernel_size))}"
        return "conv " + "x".join(map(str, layer.kernel_size))
    return type(layer).__name__


def profile_layers(model, batch_size, repeats, layers="frames"):
    """Median ms of each layer of a TF-backend model run alone on random
    input of its input shape, traced with the layer implementation `layers`
    ("frames" is how the TFLite export lowers them), less the time of an
    identity tf.function on the same input (call and copy overhead).
    Returns rows sorted by time, slowest first."""
    import keras
    import tensorflow as tf

    rng = np.random.default_rng(0)
    rows = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer.input, list):
            inputs = [tf.constant(rng.standard_normal((batch_size,) + tuple(t.shape[1:])), tf.float32)
                      for t in layer.input]
        else:
            inputs = tf.constant(rng.standard_normal((batch_size,) + tuple(layer.input.shape[1:])),
                                 tf.float32)
        with implementation(layers):
            fn = tf.function(layer.__call__, autograph=False)  # training=None: inference
            fn(inputs)  # trace
        identity = tf.function(lambda x: tf.nest.map_structure(tf.identity, x), autograph=False)
        identity(inputs)
        ms = _median_ms(fn, inputs, repeats) - _median_ms(identity, inputs, repeats)
        rows.append({"layer": layer.name, "kind": layer_kind(layer),
                     "output_shape": list(layer.output.shape[1:]), "ms": max(ms, 0.0)})
    return sorted(rows, key=lambda row: -row["ms"])


def _median_ms(fn, inputs, repeats):
    import tensorflow as tf

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), fn(inputs))
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


# ---------------------------------------------------------------- one process's share

def plan_processes(backends, runtimes):
    """{Keras backend of a process: the runtimes that process measures}.
    Exports need the TensorFlow backend, so exported runtimes run there."""
    shares = {}
    if "keras" in runtimes:
        for backend in backends:
            shares.setdefault(backend, []).append("keras")
    exported = [runtime for runtime in runtimes if runtime != "keras"]
    if exported:
        shares.setdefault("tensorflow", []).extend(exported)
    return shares


def run_share(runtimes, settings, on_row, official=False):
    """Measures `runtimes` for every model here, and the official code right
    after each model's own rows, so that both sides see the machine in the
    same state (a shared machine's speed drifts over minutes). With
    `settings["rounds"]` > 1, a model's cells are measured that many times,
    each with its share of the timed calls, one after the other, and merged
    (`merge_rounds`): every cell then samples the same stretch of time."""
    import keras
    from tqdm import tqdm

    exported = [runtime for runtime in runtimes if runtime != "keras"]
    rounds = settings.get("rounds", 1)
    per_round = {**settings, "repeats": repeats_per_round(settings)}
    label = f"benchmark [{keras.backend.backend()}: {', '.join(runtimes) or 'official'}]"
    progress = tqdm(settings["models"], desc=label, unit="model", file=sys.stderr)
    for name in progress:
        rows = []
        merged = rows.append if rounds > 1 else (lambda row: on_row(merge_rounds([row])[0]))

        def sink(row, merged=merged):  # the bar names each cell as it ends: a model can take minutes
            progress.set_postfix_str(f"{row['model']}: {series_label(row)} b{row['batch_size']} "
                                     f"{row['status'].split(':')[0]}")
            merged(row)
        for _ in range(rounds):
            if "keras" in runtimes:
                measure_keras(name, per_round, sink)
            if exported:
                measure_exported(name, exported, per_round, sink)
            if official:
                measure_official(name, per_round, sink)
        for row in merge_rounds(rows):
            on_row(row)


IDENTITY = ("model", "runtime", "precision", "batch_size", "jit_compile", "layers", "batch_norm",
            "onnx_converter", "channels_last_3d")  # what makes two rows of one share one cell


def merge_rounds(rows):
    """One row per cell of `rows` (the rounds of one model, in order): the
    timed calls of all its rounds summarized together, the first round's
    compile time, the largest peak memory; a failed round's row as it is."""
    cells = {}
    for row in rows:
        cells.setdefault(tuple(row.get(key) for key in IDENTITY), []).append(row)
    merged = []
    for group in cells.values():
        failed = [row for row in group if row["status"] != "ok"]
        row = dict(failed[0] if failed else group[0])
        if not failed:
            row.update(summarize([s for r in group for s in r["latencies_s"]], row["batch_size"]))
            for key in ("peak_rss_mib", "rss_added_mib"):
                if row.get(key) is not None:
                    row[key] = max(r[key] for r in group)
            if row.get("gpu_peak_mib") is not None:
                row["gpu_peak_mib"] = max(r["gpu_peak_mib"] for r in group)
            if len(group) > 1:
                row["rounds"] = len(group)
        row.pop("latencies_s", None)
        merged.append(row)
    return merged


class CannotStart(ValueError):
    """A run that cannot start: no model can take the input shape."""


def error_rows(cells, status):
    """An error row for each of `cells` (`benchmark_report.cell`s)."""
    return [{"model": model, "runtime": runtime,
             "backend": backend or ("torch" if runtime.startswith("official-") else runtime),
             "precision": precision, "batch_size": batch, "status": status[:500]}
            for model, runtime, backend, precision, batch in cells]


def run_worker(backend, runtimes, settings, workdir, on_row):
    """Runs one share in a subprocess with KERAS_BACKEND=`backend` and passes
    its rows to `on_row`; where it failed, an error row for every cell it
    did not measure (on Ctrl-C, the rows it finished, and the interrupt goes on)."""
    workdir = pathlib.Path(workdir)
    settings_path, output_path = workdir / f"settings_{backend}.json", workdir / f"rows_{backend}.json"
    write_json_atomic(settings_path, {**settings, "runtimes": runtimes})
    try:
        code = _run_worker_process(settings_path, output_path, backend)
    except KeyboardInterrupt:  # subprocess.run stops the worker on the way out
        code = None
    rows = json.loads(output_path.read_text()) if output_path.exists() else []
    if code:
        share = {**settings, "backends": [backend], "runtimes": runtimes, "official_repo": None}
        rows += error_rows(missing_cells(share, rows), f"error: the {backend} worker exited with code {code}")
    for row in rows:
        on_row(row)
    if code is None:  # Ctrl-C: its finished rows are kept, and the interrupt goes on
        raise KeyboardInterrupt


def _run_worker_process(settings_path, output_path, backend):
    """This module as a worker subprocess (`worker_main`) on Keras backend
    `backend`; returns its exit code."""
    package_root = str(pathlib.Path(__file__).resolve().parents[1])
    env = {**os.environ, "KERAS_BACKEND": backend,
           "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "keras_r3d.benchmark", f"--worker_settings={settings_path}",
               f"--worker_output={output_path}"]
    return subprocess.run(command, env=env, check=False).returncode


def all_model_facts(settings):
    """`{"facts": {model: model_facts}, "refused": {model: why}}`: the
    models that can take the input shape, and why the others cannot."""
    import keras

    from keras_r3d import create_model

    facts, refused = {}, {}
    for name in settings["models"]:
        keras.utils.set_random_seed(0)
        try:
            model = create_model(name, num_classes=settings["num_classes"], input_shape=settings["input_shape"])
        except ValueError as error:
            refused[name] = str(error)
            continue
        facts[name] = model_facts(name, model)
    return {"facts": facts, "refused": refused}


def facts_in_worker(settings, workdir, backend):
    """`all_model_facts` in a worker subprocess: built here, every model's
    memory would stay in this process and in the peak RSS of its rows.
    CannotStart where no model can take the input shape."""
    workdir = pathlib.Path(workdir)
    settings_path, output_path = workdir / "settings_facts.json", workdir / "facts.json"
    write_json_atomic(settings_path, {**settings, "facts_only": True})
    code = _run_worker_process(settings_path, output_path, backend)
    if code or not output_path.exists():
        raise CannotStart(f"the worker that builds the models exited with code {code}")
    built = json.loads(output_path.read_text())
    if not built["facts"]:
        raise CannotStart("; ".join(f"{name}: {why}" for name, why in built["refused"].items()))
    return built["facts"], built["refused"]


def worker_main(settings_path, output_path):
    """The subprocess side of `run_worker` and `facts_in_worker`."""
    settings = json.loads(pathlib.Path(settings_path).read_text())
    settings["input_shape"] = tuple(settings["input_shape"])
    if settings.get("facts_only"):
        write_json_atomic(output_path, all_model_facts(settings))
        return
    import keras

    if pins_jax(keras.backend.backend(), settings["threads"]):  # before XLA's CPU client exists
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:settings["threads"]])
    configure_backend(settings["threads"], settings["tf32"])
    rows = []

    def on_row(row):
        rows.append(row)
        write_json_atomic(output_path, rows)

    write_json_atomic(output_path, rows)
    run_share(settings["runtimes"], settings, on_row)


def write_json_atomic(path, value):
    write_atomic(path, json.dumps(value, indent=1) + "\n")


# ---------------------------------------------------------------- a whole run

def run_benchmark(settings, output_dir, tag, command):
    """Measures everything `settings` asks for; writes and returns the
    results (`{"run", "models", "results"}`) as `<tag>.json/.md/.png`."""
    import keras

    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: output_dir / f"{tag}.{ext}" for ext in ("json", "md", "png")}
    gpus = gpu_names()
    results = {
        "run": {
            "tag": tag, "command": command, "started_utc": _utc_now(),
            "cpu_model": cpu_model(), "cpu_cores": cpu_count(), "gpus": gpus,
            "host_platform": platform.platform(), "versions": library_versions(),
            "git_commit": git_commit(),
            "load_1min_before": os.getloadavg()[0],
            "settings": {**settings, "input_shape": list(settings["input_shape"])},
        },
        "models": {},
        "results": [],
    }
    current = keras.backend.backend()
    results["run"]["device"] = configure_backend(settings["threads"], settings["tf32"])

    def save():
        write_json_atomic(paths["json"], results)

    def on_row(row):
        row.setdefault("load_1min", os.getloadavg()[0])
        results["results"].append(row)
        save()

    official = bool(settings["official_repo"])
    with tempfile.TemporaryDirectory(prefix="keras_r3d_benchmark_") as workdir:
        results["models"], refused = facts_in_worker(settings, workdir, current)
        for name, why in refused.items():  # an error row for each of their cells; the others are measured
            for row in error_rows(expected_cells({**settings, "models": [name]}), f"error: {why}"):
                on_row(row)
        settings = {**settings, "models": list(results["models"])}
        save()
        for backend, runtimes in plan_processes(settings["backends"], settings["runtimes"]).items():
            if backend == current and not pins_jax(backend, settings["threads"]):
                run_share(runtimes, settings, on_row, official=official)
                official = False
            else:
                run_worker(backend, runtimes, settings, workdir, on_row)
    if official:  # nothing ran in this process
        run_share([], settings, on_row, official=True)
    if settings["profile_layers"]:
        results["layer_profiles"] = run_layer_profiles(settings, current)
        save()
    # Last, so that its buffers stay out of the rows' peak GPU memory.
    results["run"]["gpu_copy_gb_per_s"] = gpu_copy_bandwidth() if gpus else None
    results["run"]["load_1min_after"] = os.getloadavg()[0]
    results["run"]["finished_utc"] = _utc_now()
    save()
    write_atomic(paths["md"], render_markdown(results))
    plot_speed(results, paths["png"])
    return results


def run_layer_profiles(settings, backend):
    """{model: per-layer rows} at batch 1 (`profile_layers`), TF only."""
    import keras
    from tqdm import tqdm

    from keras_r3d import create_model

    if backend != "tensorflow":
        return {"error": f"--profile_layers needs KERAS_BACKEND=tensorflow, not {backend}"}
    profiles = {}
    for name in tqdm(settings["models"], desc="per-layer profile", unit="model", file=sys.stderr):
        keras.utils.set_random_seed(0)
        model = create_model(name, num_classes=settings["num_classes"],
                             input_shape=settings["input_shape"])
        profiles[name] = profile_layers(model, 1, max(3, settings["repeats"] // 2))
    return profiles


def _utc_now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- the command line

def _define_flags():
    from absl import flags

    flags.DEFINE_string("models", "all", "Registry names, comma-separated, or a group: "
                        + ", ".join(MODEL_GROUPS) + " (all = Table 8's rows).")
    flags.DEFINE_list("backends", ["tensorflow"], f"Keras backends: {', '.join(BACKENDS)}.")
    flags.DEFINE_list("runtimes", ["keras"], f"Runtimes: {', '.join(RUNTIMES)}.")
    flags.DEFINE_list("batch_sizes", ["1", "8"], "Batch sizes.")
    flags.DEFINE_list("precision", ["float32"], f"One or more of {', '.join(PRECISIONS)}.")
    flags.DEFINE_integer("warmup", 3, "Untimed calls after the compile call.", lower_bound=0)
    flags.DEFINE_float("warmup_s", 1.0, "Untimed seconds after the compile call, at least.",
                       lower_bound=0.0)
    flags.DEFINE_integer("repeats", 10, "Timed calls per measurement.", lower_bound=1)
    flags.DEFINE_integer("rounds", 1, "Measure each model's cells (runtimes, the official code) "
                         "this many times in turn, each with its share of --repeats (rounded up), and "
                         "merge: all cells then sample the same moments of a machine whose speed "
                         "drifts. Each round builds, exports and compiles again, so that a measurement "
                         "holds only its own compiled model or artifact (its peak memory stays its "
                         "own); rows keep the first round's export and compile times.", lower_bound=1)
    flags.DEFINE_string("output_dir", "benchmarks", "Where <tag>.json/.md/.png go.")
    flags.DEFINE_string("tag", None, "Name of this run's files (default: device and UTC time).")
    flags.DEFINE_bool("overwrite", False, "Replace the files of an earlier run of the same --tag.")
    flags.DEFINE_string("official_repo", None,
                        "A checkout of okankop/Efficient-3DCNNs to time side by side.")
    flags.DEFINE_list("official_memory_formats", ["contiguous"], "Memory formats of the official "
                      f"models and clips: {', '.join(OFFICIAL_MEMORY_FORMATS)}.")
    flags.DEFINE_string("input_shape", "16,112,112", "FRAMES,HEIGHT,WIDTH of the clips.")
    flags.DEFINE_integer("num_classes", 600, "Classifier size (Table 8: Kinetics-600).",
                         lower_bound=1)
    flags.DEFINE_integer("threads", None, "CPU threads per runtime (default: the usable cores).",
                         lower_bound=1)
    flags.DEFINE_bool("profile_layers", False, "Also time every layer alone (TF backend, batch 1) "
                      "to show which layers bound each model.")
    flags.DEFINE_bool("tf32", False, "Allow TF32 matmuls/convs on GPUs (same on every side).")
    flags.DEFINE_list("tf_jit_compile", ["auto"], "TensorFlow tf.function XLA: true, false or "
                      "auto (XLA on GPU, graph on CPU); several values time each.")
    flags.DEFINE_list("layers", ["auto"], "How the zoo's layers are traced for the keras runtime "
                      f"(keras_r3d.implementation): one of {', '.join(IMPLEMENTATIONS)} (see "
                      "keras_r3d.layers); several values time each.")
    flags.DEFINE_list("batch_norm", ["separate"], "Keras runtime: separate (as built) or folded "
                      "(keras_r3d.fold_batch_norm: BN folded into the convs, for inference); "
                      "both values time each.")
    flags.DEFINE_list("onnx_converters", ["auto"], "How onnxruntime and TensorRT artifacts are "
                      "exported (keras_r3d.export --onnx_converter): auto, keras_r3d or tf2onnx; "
                      "several values time each.")
    flags.DEFINE_list("official_modes", list(OFFICIAL_MODES),
                      f"How the official code runs: {', '.join(OFFICIAL_MODES)}.")
    flags.DEFINE_string("rerender", None, "Only rewrite the .md and .png beside this results JSON "
                        "(e.g. of a run stopped early).")
    flags.DEFINE_string("worker_settings", None, "Internal: a worker subprocess's settings.")
    flags.DEFINE_string("worker_output", None, "Internal: where a worker writes its rows.")


def settings_from_flags(f):
    """Validated settings dict from the parsed flags."""
    def choices(values, valid, name):
        values = [v.strip() for v in values if v.strip()]
        bad = [v for v in values if v not in valid]
        if bad or not values:
            raise ValueError(f"--{name}: {bad or 'nothing'} not among {', '.join(valid)}")
        return list(dict.fromkeys(values))

    try:
        batch_sizes = sorted({int(b) for b in f.batch_sizes})
    except ValueError:
        raise ValueError(f"--batch_sizes must be integers, got {f.batch_sizes}") from None
    if not batch_sizes or batch_sizes[0] < 1:
        raise ValueError(f"--batch_sizes must be positive, got {f.batch_sizes}")
    models = resolve_models(f.models)
    if f.official_repo:
        from keras_r3d import registry

        files = sorted({f"models/{registry.get_spec(name).arch}.py" for name in models})
        absent = [file for file in files if not (pathlib.Path(f.official_repo) / file).is_file()]
        if absent:
            raise ValueError(f"--official_repo {f.official_repo} has no {', '.join(absent)}: point it at a "
                             "checkout of okankop/Efficient-3DCNNs")
    return {
        "models": models,
        "backends": choices(f.backends, BACKENDS, "backends"),
        "runtimes": choices(f.runtimes, RUNTIMES, "runtimes"),
        "precisions": choices(f.precision, PRECISIONS, "precision"),
        "batch_sizes": batch_sizes,
        "input_shape": parse_input_shape(f.input_shape),
        "num_classes": f.num_classes,
        "warmup": f.warmup,
        "warmup_s": f.warmup_s,
        "repeats": f.repeats,
        "rounds": f.rounds,
        "threads": f.threads or cpu_count(),
        "tf32": f.tf32,
        "tf_jit_compile": choices(f.tf_jit_compile, JIT_COMPILE_CHOICES, "tf_jit_compile"),
        "official_modes": choices(f.official_modes, OFFICIAL_MODES, "official_modes"),
        "layers": choices(f.layers, IMPLEMENTATIONS, "layers"),
        "batch_norm": choices(f.batch_norm, ("separate", "folded"), "batch_norm"),
        "onnx_converters": choices(f.onnx_converters, export.ONNX_CONVERTERS, "onnx_converters"),
        "official_repo": str(pathlib.Path(f.official_repo).resolve()) if f.official_repo else None,
        "official_memory_formats": choices(f.official_memory_formats, OFFICIAL_MEMORY_FORMATS,
                                           "official_memory_formats"),
        "profile_layers": f.profile_layers,
    }


def default_tag():
    gpus = gpu_names()
    device = gpus[0].split(",")[0] if gpus else f"cpu{cpu_count()}"
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return "".join(c if c.isalnum() or c in "-._" else "-" for c in f"{device}-{stamp}")


def main(argv):
    from absl import flags

    f = flags.FLAGS
    if len(argv) > 1:
        raise SystemExit(unexpected_arguments(argv[1:]))
    if f.worker_settings:
        try:
            worker_main(f.worker_settings, f.worker_output)
        except KeyboardInterrupt:  # the main process reports it
            return 130
        return 0
    if f.rerender:
        if f["tag"].present or f["output_dir"].present:
            raise SystemExit("error: --rerender writes beside its JSON; --tag and --output_dir do not apply")
        try:
            md, png = rerender(f.rerender)
        except (OSError, ValueError) as error:
            raise SystemExit(f"error: --rerender: {error}") from None
        print(f"wrote {md}, {png}", file=sys.stderr)
        return 0
    try:
        settings = settings_from_flags(f)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    tag = f.tag or default_tag()
    if not tag.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise SystemExit(f"error: --tag may hold letters, digits, '-', '_' and '.', got {tag!r}")
    backend = [f"KERAS_BACKEND={os.environ['KERAS_BACKEND']}"] if os.environ.get("KERAS_BACKEND") else []
    command = shlex.join([*backend, "python", "-m", "keras_r3d.benchmark", *sys.argv[1:]])
    json_path, started = pathlib.Path(f.output_dir) / f"{tag}.json", time.time()
    if json_path.exists() and not f.overwrite:
        raise SystemExit(f"error: {json_path} holds an earlier run: pass --overwrite to replace it, or another --tag")
    try:
        probe_writable(f.output_dir, f"--output_dir {f.output_dir}")
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    try:
        with sticky_interrupts(sigterm=True):  # a `kill` keeps the rows measured so far, as Ctrl-C does
            results = run_benchmark(settings, f.output_dir, tag, command)
    except CannotStart as error:
        raise SystemExit(f"error: {error}") from None
    except KeyboardInterrupt:
        written = json_path.exists() and json_path.stat().st_mtime >= started
        print("\ninterrupted: " + (f"the rows measured so far are in {json_path}; python -m keras_r3d.benchmark "
                                   f"--rerender {json_path} writes their Markdown and plot" if written else
                                   "before anything was measured"), file=sys.stderr)
        return 130
    failed = [row for row in results["results"] if row["status"].startswith("error")]
    out = pathlib.Path(f.output_dir) / tag
    print(f"wrote {out}.json, {out}.md, {out}.png ({len(results['results'])} rows, "
          f"{len(failed)} failed)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    from absl import app

    from keras_r3d.text import plain_warnings

    plain_warnings()
    _define_flags()
    app.run(lambda argv: sys.exit(main(argv)))
