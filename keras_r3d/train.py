"""Training: `python -m keras_r3d.train --flagfile=configs/demo.flags [--flag=value ...]`.

Flags given after `--flagfile` override it; `--recipe=demo` reads a recipe
shipped with the package. A command line's `--pretrained` or `--model`
replaces a recipe's architecture, and its `--arch` drops the recipe's builder
flags that the new arch does not take. Everything a run writes lives in `--output_dir`
(default `runs/<flagfile stem>`):

    checkpoints/epoch_NNNN.keras   model + optimizer state after epoch NNNN
    state.json                     the resume point: epoch, history, best, wall time, the Keras
                                   backend, and the optimizer and schedule flags that --resume keeps
    best.keras, last.keras         by validation video top-1; the latest epoch
    metrics.csv, metrics.json      per-epoch metrics; the summary of the run
    accuracy.png, tensorboard/     curves

Every file is written atomically (to a temporary name, then renamed), so a run
killed at any moment loses at most the epoch in progress; `--resume` restarts
from the last finished epoch with its optimizer state, learning rate, and the
data order and dropout randomness of the next epoch (both are seeded per
epoch from `--seed`).
"""
import contextlib
import json
import math
import os
import pathlib
import re
import sys
import time

import numpy as np

from keras_r3d.files import write_atomic
from keras_r3d.interrupts import raise_if_interrupted, sticky_interrupts
from keras_r3d.layers import JIT_COMPILE_CHOICES, jit_compile
from keras_r3d.runs import BEST_MODEL, RunDirectory, TensorBoardLog
from keras_r3d.text import first_few, unexpected_arguments

CONFIGS_DIR = pathlib.Path(__file__).with_name("configs")
FINETUNE_MODES = ("complete", "last_layer")  # the whole model, or the head only
OPTIMIZERS = ("official_sgd", "adamw")
LR_SCHEDULES = ("steps", "cosine", "constant")
STRATEGIES = ("none", "mirrored", "multi_worker")

# The flags that override a contract's timing and sizes, and its normalization (comma-separated).
CONTRACT_SCALAR_FLAGS = ("frames", "size", "temporal_downsample", "fps")
CONTRACT_VALUE_FLAGS = ("value_range", "mean", "std")
# The flags that the model, the optimizer, its schedule and the loss are built
# from, with the architecture flags (`registry.ARCHITECTURE_FLAGS`): a resumed
# run takes them from its checkpoint, so `--resume` refuses changes.
RESUME_FIXED = ("optimizer", "lr", "lr_schedule", "lr_steps", "warmup_epochs", "momentum", "dampening",
                "weight_decay", "clipnorm", "label_smoothing", "precision", "batch_size",
                "model", "pretrained", "finetune", "arch", "dropout", "preprocessing",
                "seed", "crop", "hflip", "deterministic", "val_clips") \
    + CONTRACT_SCALAR_FLAGS + CONTRACT_VALUE_FLAGS
# Recorded too, but a resumed run may change it (data moved), with a note.
RESUME_NOTED = ("val_data",)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped."""


# ---------------------------------------------------------------- the model

def build_model(config, class_names):
    """The model to train, from `--model`, `--pretrained` or `--arch`.

    `config` is a dict of the flag values. Returns a VideoClassifier whose
    head has `len(class_names)` outputs.
    """
    from keras_r3d import registry
    from keras_r3d.preprocessing import DATASET_PREPROCESSING, Preprocessing
    from keras_r3d.saving import load

    sources = [name for name in ("model", "pretrained", "arch") if config.get(name)]
    if len(sources) != 1:
        raise ValueError(f"give exactly one of --model, --pretrained, --arch (got {sources or 'none'})")
    if config.get("finetune") not in (None, "complete") and not config.get("pretrained"):
        raise ValueError(f"--finetune={config['finetune']} applies to --pretrained models only")
    builder_flags = [f"--{name}" for name in registry.ARCHITECTURE_FLAGS if config.get(name) is not None]
    if builder_flags and sources != ["arch"]:
        raise ValueError(f"{', '.join(builder_flags)} appl{'ies' if len(builder_flags) == 1 else 'y'} to --arch only: "
                         f"--{sources[0]} keeps its architecture")
    if config.get("model") and config.get("dropout") is not None:
        raise ValueError("--dropout applies to --arch and --pretrained: --model trains on as it is")
    num_classes = len(class_names)
    if config.get("model"):
        model = load(config["model"])
        if not _has_classes(model, class_names):
            raise ValueError(f"--model {config['model']} has {model.output_shape[-1]} outputs for other classes "
                             f"than the data's {num_classes}; use --pretrained to replace the head")
        contract = _override_contract(model.preprocessing, config)
        changed = [f"--{name}" for name in CONTRACT_SCALAR_FLAGS + CONTRACT_VALUE_FLAGS
                   if name != "fps" and getattr(contract, name) != getattr(model.preprocessing, name)]
        if changed:
            raise ValueError(f"--model {config['model']} trains on as it is, and {', '.join(changed)} would change "
                             "its input; --pretrained fine-tunes it with a new contract")
        # Its layers keep the dtype policy they were saved with (the head computes in float32 in any).
        mixed = {layer.dtype_policy.name for layer in model.layers if layer.weights} - {"float32"}
        saved = mixed.pop() if mixed else "float32"
        if saved != config.get("precision", "float32"):
            raise ValueError(f"--model {config['model']} computes in {saved} and trains on as it is: pass "
                             f"--precision={saved}, or --pretrained to fine-tune it in another precision")
        model.preprocessing = contract  # --fps: the rate of the records, for predict and the exports
        frozen = [layer.name for layer in model.layers if layer.weights and not layer.trainable]
        if frozen:
            print(f"note: --model {config['model']}: {len(frozen)} of its layers were saved frozen (a "
                  "--finetune=last_layer run) and stay so; --pretrained with it and --finetune=complete trains "
                  "them all, with a new head", file=sys.stderr)
        return model
    if config.get("pretrained"):
        source = load(config["pretrained"])
        return finetune_model(source, class_names, config)
    kwargs = registry.architecture_flags(config)
    arch = kwargs.pop("arch")
    unknown = sorted(set(kwargs) - set(registry.builder_kwargs(arch)))
    if unknown:
        raise ValueError(f"--{unknown[0]} does not apply to --arch={arch}")
    preprocessing = (DATASET_PREPROCESSING[config["preprocessing"]] if config.get("preprocessing")
                     else Preprocessing())
    preprocessing = _override_contract(preprocessing, config)
    kwargs = registry.with_dropout(arch, kwargs, config.get("dropout"))
    return registry.build(arch, num_classes=num_classes, class_names=list(class_names),
                          input_shape=(preprocessing.frames, preprocessing.size, preprocessing.size, 3),
                          preprocessing=preprocessing, **kwargs)


def _has_classes(model, class_names):
    """Whether `model`'s head is for `class_names`, in that order (a model
    without names: for as many)."""
    return model.output_shape[-1] == len(class_names) and model.class_names in (None, list(class_names))


def _override_contract(preprocessing, config):
    changes = {name: config[name] for name in CONTRACT_SCALAR_FLAGS if config.get(name)}
    changes.update({name: tuple(float(v) for v in config[name]) for name in CONTRACT_VALUE_FLAGS
                    if config.get(name)})
    return preprocessing.replace(**changes)


def finetune_model(source, class_names, config):
    """`keras_r3d.finetune` of `source` by the flags: `--finetune=last_layer`
    trains the head only, `--dropout`, and the contract flags (`--frames`,
    `--size`, ...) change the input."""
    from keras_r3d.saving import finetune

    mode = config.get("finetune", "complete")
    if mode not in FINETUNE_MODES:
        raise ValueError(f"finetune must be one of {', '.join(FINETUNE_MODES)}, got {mode!r}")
    return finetune(source, class_names, head_only=mode == "last_layer", dropout=config.get("dropout"),
                    preprocessing=_override_contract(source.preprocessing, config))


# ---------------------------------------------------------- the optimizer

def make_optimizer(config, steps_per_epoch):
    """The optimizer and learning-rate schedule of the flags."""
    import keras

    from keras_r3d.optimizers import OfficialSGD, step_schedule

    lr, epochs = config["lr"], config["epochs"]
    schedule_name = config["lr_schedule"]
    if schedule_name == "steps":
        schedule = step_schedule(lr, steps_per_epoch, config["lr_steps"])
    elif schedule_name == "cosine":
        warmup = int(config["warmup_epochs"] * steps_per_epoch)
        decay = max(1, epochs * steps_per_epoch - warmup)
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=lr * 0.01 if warmup else lr, decay_steps=decay,
            warmup_target=lr if warmup else None, warmup_steps=warmup)
    elif schedule_name == "constant":
        schedule = lr
    else:
        raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {schedule_name!r}")
    clip = {"global_clipnorm": config["clipnorm"]} if config.get("clipnorm") else {}
    name = config["optimizer"]
    if name == "official_sgd":
        return OfficialSGD(schedule, momentum=config["momentum"], dampening=config["dampening"],
                           l2_weight_decay=config["weight_decay"], **clip)
    if name == "adamw":
        return keras.optimizers.AdamW(schedule, weight_decay=config["weight_decay"], **clip)
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")


def compile_model(model, config, steps_per_epoch):
    import keras

    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss=keras.losses.CategoricalCrossentropy(from_logits=not model.outputs_probabilities,
                                                  label_smoothing=config["label_smoothing"]),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile(config["jit_compile"]))


def fixed_settings(config):
    """The settings that a resumed run must keep (`RESUME_FIXED` and the
    architecture flags, model files as real paths, and the epochs under cosine
    decay, which spans the run), and those it notes changes of (`RESUME_NOTED`)."""
    from keras_r3d import registry

    settings = {name: config[name] for name in RESUME_FIXED + RESUME_NOTED + registry.ARCHITECTURE_FLAGS}
    for name in ("model", "pretrained", "val_data"):
        settings[name] = settings[name] and os.path.realpath(settings[name])
    if config["lr_schedule"] == "cosine":
        settings["epochs"] = config["epochs"]
    else:
        del settings["warmup_epochs"]
    if config["lr_schedule"] != "steps":
        del settings["lr_steps"]
    return json.loads(json.dumps(settings))  # as state.json holds them


def _flag_text(name, value):
    """`--name=value` as it is typed (None: the flag left out)."""
    if value is None:
        return f"no --{name}"
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    if isinstance(value, list):
        return f"--{name}={','.join(map(str, value))}"
    return f"--{name}={value}"


def check_resumable(state, config):
    import keras

    # Settings that a run of an earlier version did not record are not compared.
    backend = state.get("backend")
    if backend and backend != keras.backend.backend():
        raise ValueError(f"--resume: the run trained on KERAS_BACKEND={backend}: its checkpoint holds that backend's "
                         f"optimizer, and the backends draw dropout differently; resume it with "
                         f"KERAS_BACKEND={backend}, or start a new --output_dir (--model with its last.keras "
                         f"trains on without the optimizer state)")
    changed = {name: f"{_flag_text(name, state['settings'][name])} (now {_flag_text(name, value)})"
               for name, value in fixed_settings(config).items()
               if name in state["settings"] and state["settings"][name] != value}
    for name in RESUME_NOTED:
        if name in changed:
            print(f"note: --resume: {changed.pop(name)}: best.keras is chosen by validation accuracy on either",
                  file=sys.stderr)
    if changed:
        raise ValueError(f"--resume continues the run with its own model, optimizer, schedule and sampling, and "
                         f"these flags differ from the run's: {', '.join(changed.values())}. Give the run's values, or "
                         f"start a new --output_dir (--pretrained with its last.keras to fine-tune from it)")


def check_steps_per_epoch(state, config, steps_per_epoch, resumed):
    """Records the run's steps per epoch in `state`; on resume, refuses
    training data that makes another number of them where the learning-rate
    schedule counts optimizer steps: the compiled schedule places its epochs
    by the run's count, so LR steps (or the cosine decay) would move to other
    epochs. Runs that did not record it are not compared (nor given a count
    that may not be theirs)."""
    recorded = state.get("steps_per_epoch")
    if resumed and recorded is None:
        return
    scheduled = config["lr_schedule"] == "cosine" or (config["lr_schedule"] == "steps" and config["lr_steps"])
    if recorded is not None and recorded != steps_per_epoch and scheduled:
        raise ValueError(f"--resume: --train_data now makes {steps_per_epoch} steps of {config['batch_size']} "
                         f"clips per epoch, but the run's {config['lr_schedule']} schedule counts {recorded}: "
                         f"its learning-rate changes would fall in other epochs. Give the run's data, or start a "
                         f"new --output_dir (--pretrained with its last.keras to fine-tune from it)")
    state["steps_per_epoch"] = steps_per_epoch


def current_learning_rate(optimizer):
    lr = optimizer.learning_rate
    return float(np.asarray(lr.numpy() if hasattr(lr, "numpy") else lr))


# ------------------------------------------------------------------ data

def ensure_synthetic(config):
    """Generates the synthetic set into `--synthetic_dir` unless it is there,
    made with the same settings; a set made with others is an error, so that
    a run never trains on stale data."""
    from tfrecords_tools import schema
    from tfrecords_tools.synthetic import SyntheticConfig, made_with, make_synthetic

    directory = pathlib.Path(config["synthetic_dir"])
    wanted = SyntheticConfig(videos_per_class=config["synthetic_videos_per_class"], size=config["synthetic_size"])
    if (directory / schema.MANIFEST).exists() and made_with(directory) == wanted:
        return
    print(f"Generating the synthetic set in {directory} ({wanted})", file=sys.stderr)
    make_synthetic(directory, wanted)  # refuses a folder made with other settings


def check_data(config):
    """The training videos (from the manifests), after refusing data that
    could not train or validate: checked before the model is built, not
    after an epoch."""
    from keras_r3d import data as r3d_data

    videos = {key: len(r3d_data.read_manifest(config[key])[1]) for key in ("train_data", "val_data")}
    if not videos["val_data"]:
        raise ValueError(f"--val_data {config['val_data']} holds no videos (its manifest lists none): "
                         "tfrecords_tools.convert's summary says why (skipped videos, an empty split)")
    if videos["train_data"] < config["batch_size"]:
        raise ValueError(f"{videos['train_data']} training videos make no batch of {config['batch_size']}: "
                         f"pass --batch_size={videos['train_data']} or less")
    return videos["train_data"]


def train_dataset(config, contract, num_classes, epoch, batch_size):
    """The training clips of one epoch, seeded by (`--seed`, epoch), with
    one-hot labels (for label smoothing)."""
    import tensorflow as tf

    from keras_r3d.data import make_dataset

    dataset = make_dataset(config["train_data"], "train", contract, batch_size,
                           shuffle_seed=config["seed"] * 100003 + epoch, crop=config["crop"],
                           hflip=config["hflip"], cache=config.get("cache"))
    dataset = dataset.map(lambda clip, label: (clip, tf.one_hot(label, num_classes)))
    # No autotuning thread: when `fit` drops an epoch's iterator, TF 2.21 blocks
    # until that thread's next wake-up, which backs off 10 ms, 20 ms, ... up to
    # a minute, so an epoch of 11 s took 20.6 s and one of 25 s took 41 s.
    # AUTOTUNE parallelism then means one call per core.
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def reseed_dropout(model, seed, epoch):
    """Sets every layer's random state from (seed, epoch), so that a resumed
    epoch draws the same dropout masks as an uninterrupted one."""
    import keras

    if keras.backend.backend() == "torch":  # there the layers' Dropout draws from torch's global RNG
        import torch

        torch.manual_seed(seed * 100003 + epoch * 1009)
    index = 0
    for layer in model._flatten_layers():
        generator = getattr(layer, "seed_generator", None)
        if isinstance(generator, keras.random.SeedGenerator):
            state = np.asarray([seed * 100003 + epoch * 1009 + index, 0])
            generator.state.assign(state.astype(generator.state.dtype))
            index += 1


# ----------------------------------------------------------- one epoch

def _progress_bar(steps, description):
    from tqdm import tqdm

    return tqdm(total=steps, desc=description, unit="batch", file=sys.stderr, dynamic_ncols=True,
                leave=False)


class EpochStats:
    """Loss, accuracy, clips/s and the first non-finite batch of one epoch,
    shown on a progress bar as the epoch runs."""

    def __init__(self, steps, batch_size, description):
        self.bar = _progress_bar(steps, description)
        self.batch_size, self.batches, self.bad_batch = batch_size, 0, None
        self.start = time.perf_counter()
        self.loss = self.accuracy = float("nan")

    def update(self, loss, accuracy):
        """Running means from the start of the epoch; returns False once the
        loss is not finite."""
        self.batches += 1
        self.loss, self.accuracy = float(loss), float(accuracy)
        self.elapsed = time.perf_counter() - self.start
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{self.loss:.4f}",
                             clips_per_s=f"{self.batches * self.batch_size / self.elapsed:.1f}")
        if not math.isfinite(self.loss):
            self.bad_batch = self.batches
            return False
        return True

    def close(self):
        self.bar.close()
        self.elapsed = time.perf_counter() - self.start
        return self


def fit_epoch(model, dataset, epoch, steps, batch_size, description):
    """Epoch `epoch` (0-based) of `model.fit` (single device or MirroredStrategy)."""
    import keras

    stats = EpochStats(steps, batch_size, description)
    # Keras on JAX and torch (and TF under a strategy, every epoch) builds a model's unbuilt loss
    # and metrics from a batch that it reads and throws away, then restarts the dataset, whose
    # next pass draws other clips: the epoch (the first after a --resume) then trained on other
    # clips than the seeded order's. Built from the dataset's shapes, nothing is read.
    strategy = getattr(model, "_distribute_strategy", None)  # TF: built under MirroredStrategy
    with strategy.scope() if strategy else contextlib.nullcontext():
        model._symbolic_build(data_batch=tuple(keras.KerasTensor(tuple(spec.shape), spec.dtype.name)
                                               for spec in dataset.element_spec))
    if strategy:  # Keras' TF fit would read one all the same (trainer._maybe_symbolic_build)
        model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None

    class Progress(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise_if_interrupted()
            if not stats.update(logs["loss"], logs["accuracy"]):
                self.model.stop_training = True

    model.fit(dataset, epochs=epoch + 1, initial_epoch=epoch, steps_per_epoch=steps,
              shuffle=False,  # the dataset shuffles; Keras' own flag would only warn that it cannot
              verbose=0, callbacks=[Progress()])
    return stats.close()


class CustomStepEpoch:
    """One epoch of a custom training step under `strategy.run`, for
    MultiWorkerMirroredStrategy, where Keras 3's `fit` fails with TF 2.21
    (keras-team/keras#20585: "Attempt to convert a value (PerReplica...)").

    The global batch is split across the replicas; every replica averages its
    loss over the global batch and the optimizer sums the gradients across
    replicas, so a step equals one step on the global batch. BatchNorm
    statistics are updated per replica and averaged across the replicas at
    the end of every epoch, which keeps the workers identical.
    """

    def __init__(self, model, strategy, config):
        import keras
        import tensorflow as tf

        self.model, self.strategy = model, strategy
        self.global_batch = config["batch_size"]
        loss_fn = keras.losses.CategoricalCrossentropy(
            from_logits=not model.outputs_probabilities, label_smoothing=config["label_smoothing"],
            reduction=None)
        optimizer = model.optimizer
        with strategy.scope():
            optimizer.build(model.trainable_variables)

        def replica_step(clips, labels):
            with tf.GradientTape() as tape:
                logits = tf.cast(model(clips, training=True), tf.float32)
                loss = tf.nn.compute_average_loss(loss_fn(labels, logits),
                                                  global_batch_size=self.global_batch)
                scaled = optimizer.scale_loss(loss)
            gradients = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1), tf.argmax(labels, -1)),
                                            tf.float32))
            return loss, correct

        @tf.function
        def train_step(iterator):
            loss, correct = strategy.run(replica_step, args=next(iterator))
            total = tf.distribute.ReduceOp.SUM
            return strategy.reduce(total, loss, axis=None), strategy.reduce(total, correct, axis=None)

        self.train_step = train_step
        statistics = [v for v in model.non_trainable_variables if "float" in str(v.dtype)]

        @tf.function
        def sync_statistics():
            for variable in statistics:
                local = strategy.run(lambda v=variable: tf.identity(v.value))
                variable.assign(strategy.reduce(tf.distribute.ReduceOp.MEAN, local, axis=None))

        self.sync_statistics = sync_statistics

    def dataset(self, make_epoch_dataset):
        """Distributes `make_epoch_dataset(per_replica_batch)`: each input
        pipeline takes every n-th batch."""
        def per_pipeline(context):
            dataset = make_epoch_dataset(context.get_per_replica_batch_size(self.global_batch))
            return dataset.shard(context.num_input_pipelines, context.input_pipeline_id)

        return self.strategy.distribute_datasets_from_function(per_pipeline)

    def __call__(self, dataset, steps, description):
        stats = EpochStats(steps, self.global_batch, description)
        iterator = iter(dataset)
        loss_sum = correct_sum = 0.0
        for step in range(steps):
            raise_if_interrupted()
            loss, correct = self.train_step(iterator)
            loss_sum += float(loss)
            correct_sum += float(correct)
            if not stats.update(loss_sum / (step + 1), correct_sum / ((step + 1) * self.global_batch)):
                break
        self.sync_statistics()
        return stats.close()


def make_strategy(name):
    """None, or the tf.distribute strategy of `--strategy`."""
    if name == "none":
        return None
    import keras
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"--strategy={name} needs KERAS_BACKEND=tensorflow")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy=multi_worker needs TF_CONFIG (the cluster and this task)")
        worker_index()  # TF_CONFIG that is not JSON, named
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")


def worker_index():
    """This worker's index in TF_CONFIG: 0 the chief (a "chief" task, else
    worker 0, or no TF_CONFIG), the workers after it; -1 another task type."""
    try:
        config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    except ValueError as error:
        raise ValueError(f"TF_CONFIG is not JSON ({error})") from None
    task = config.get("task", {})
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    if kind == "chief":
        return 0
    return index + ("chief" in config.get("cluster", {})) if kind == "worker" else -1


def check_workers_resume_alike(strategy, state, path):
    """Under --strategy=multi_worker --resume, every worker loads the run's
    checkpoint: a collective compares the epochs they found, so that workers
    that see different folders fail alike with a message rather than
    deadlock or diverge."""
    import tensorflow as tf

    epoch = float(state["epoch"]) if state else 0.0
    found = strategy.run(lambda: tf.constant([epoch, epoch * epoch], tf.float64))
    total, squares = strategy.reduce(tf.distribute.ReduceOp.SUM, found, axis=None).numpy()
    replicas = strategy.num_replicas_in_sync
    if squares / replicas - (total / replicas) ** 2 > 1e-6:
        raise ValueError(f"--resume: the workers found different runs ({path} here holds "
                         f"{'epoch ' + str(state['epoch']) if state else 'none'}): each worker loads the run to "
                         "resume it, so --output_dir must be one folder that all workers share")


def lost_worker(error):
    """What TensorFlow's `error` says of a collective whose peer is gone (the
    unhealthy tasks, where it names them), or None for any other error."""
    import tensorflow as tf

    if not isinstance(error, (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError)):
        return None
    text = str(error)
    tasks = sorted(set(re.findall(r"/job:\w+/replica:\d+/task:\d+", text))) if "unhealthy" in text else []
    return type(error).__name__ + (f": no heartbeat from {', '.join(tasks)}" if tasks else "")


def weights_fingerprint(model):
    """Per-variable sums of the weights: equal on workers that stay in sync."""
    return {v.path: float(np.sum(np.asarray(v.numpy(), np.float64))) for v in model.weights}


# ------------------------------------------------------------ the loop

def enable_determinism():
    """Deterministic kernels (slower): TensorFlow's ops, the XLA GPU kernels
    JAX compiles (its flag is read when JAX first starts a device), and
    torch's algorithms (a warning for an op that has no deterministic form)."""
    import keras
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    if keras.backend.backend() == "jax":
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            print("note: --deterministic: JAX has started its devices already; its GPU kernels stay as they are",
                  file=sys.stderr)
        elif "xla_gpu_deterministic_ops" not in os.environ.get("XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_gpu_deterministic_ops=true").strip()
    elif keras.backend.backend() == "torch":
        import torch

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's deterministic workspace
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def train(config):
    """Trains by `config` (a dict of the flag values, see `default_config`);
    returns the metrics.json summary. Raises NonFiniteLossError on a NaN loss.

    With `--strategy=multi_worker` every worker runs this; worker 0 (the
    chief) validates and writes the run, the others only write
    `workers/worker_<i>.json`, their weights' fingerprint. `--precision`
    holds for this call only; `--deterministic` stays on in the process.
    """
    import keras

    policy = keras.config.dtype_policy()
    existed = os.path.exists(config["output_dir"])
    try:
        return _train(config)
    except KeyboardInterrupt:
        run = RunDirectory(config["output_dir"])
        if not existed and not run.state_path.exists():  # the folder this run made, still empty
            with contextlib.suppress(OSError):
                run.path.rmdir()
        raise
    finally:
        keras.config.set_dtype_policy(policy)


def _train(config):
    import keras

    from keras_r3d import data as r3d_data
    from keras_r3d import optimizers  # noqa: F401 (registers OfficialSGD for resuming)
    from keras_r3d import registry
    from keras_r3d.evaluate import evaluate
    from keras_r3d.saving import check_model_path

    wall_start = time.perf_counter()
    if config["deterministic"]:  # before anything starts a device
        enable_determinism()
    strategy = make_strategy(config["strategy"])
    replicas = strategy.num_replicas_in_sync if strategy else 1
    if config["batch_size"] % replicas:
        raise ValueError(f"--batch_size {config['batch_size']} must divide by the {replicas} replicas")
    chief = worker_index() == 0
    if config.get("synthetic_dir") and chief:
        ensure_synthetic(config)
    if config["precision"] != "float32":
        keras.mixed_precision.set_global_policy(config["precision"])
    run = RunDirectory(config["output_dir"])
    state = run.read_state() if config["resume"] else None
    if config["resume"] and config["strategy"] == "multi_worker":
        check_workers_resume_alike(strategy, state, run.path)
    if not config["resume"] and run.state_path.exists():
        raise ValueError(f"{run.path} already holds a run: pass --resume to continue it, or choose "
                         f"another --output_dir")
    if not state and any(run.checkpoints.glob("*.keras")):  # its rotation would delete this run's checkpoints
        raise ValueError(f"{run.checkpoints} holds checkpoints of another run (or of one stopped before its first "
                         "epoch was recorded): choose another --output_dir, or empty it")
    if config["resume"] and not state:
        print(f"note: --resume: no run in {run.path} yet; starting one", file=sys.stderr)
    if chief:  # before the data is read; a new run's folder is made once all checks pass
        run.check_writable(make=False)
    if not state:
        for source in ("model", "pretrained"):
            if config.get(source):
                check_model_path(config[source])
    class_names = r3d_data.label_names(config["train_data"])
    unknown = [name for name in r3d_data.label_names(config["val_data"]) if name not in class_names]
    if unknown:  # val's classes, in any order, are scored by name (evaluate.align_labels)
        raise ValueError(f"--val_data has classes that --train_data has not, which the model gets no output for: "
                         f"{first_few(unknown, 5)}; convert both splits in "
                         "one tfrecords_tools.convert run (one --annotations, or --val_fraction for folders), or "
                         "leave those classes out of --val_data")
    videos = check_data(config)
    counts = r3d_data.videos_per_class(config["train_data"])
    untrained = [] if counts is None else [name for name in class_names if not counts.get(name)]
    if untrained and chief:
        print(f"warning: {len(untrained)} of the {len(class_names)} classes have no training video: "
              f"{first_few(untrained, 5)}; the model never learns them "
              "(tfrecords_tools.convert's summary shows where their videos went)", file=sys.stderr)
    keras.utils.set_random_seed(config["seed"])
    resumed = bool(state)
    with strategy.scope() if strategy else contextlib.nullcontext():
        if resumed:
            if "settings" in state:  # runs of earlier versions did not record them
                check_resumable(state, config)
            model = run.load_checkpoint(state)
            if not _has_classes(model, class_names):
                raise ValueError(f"--resume: the run's model is for other classes ({model.output_shape[-1]}) than "
                                 f"the {len(class_names)} of --train_data; give the run's data, or start a new "
                                 "--output_dir (--pretrained with its last.keras to fine-tune from it)")
            model.jit_compile = jit_compile(config["jit_compile"])
            if chief:  # a crash after state.json may have left them behind it
                run.write_derived(state)
            if state["epoch"] >= config["epochs"]:
                print(f"{run.path}: all {state['epoch']} epochs are done; nothing to train (last.keras, "
                      "best.keras and the metrics are up to date)", file=sys.stderr)
                return json.loads(run.summary_path.read_text()) if chief else None
            print(f"Resuming {run.path} after epoch {state['epoch']}", file=sys.stderr)
        else:
            model = build_model(config, class_names)
            state = {"epoch": 0, "history": [], "best_epoch": 0, "best": -1.0, "wall_time_s": 0.0,
                     "settings": fixed_settings(config), "backend": keras.backend.backend()}
        rates = r3d_data.frame_rates(config["train_data"])
        (rate, *others) = rates[0]  # the sampled videos' rates (0: unknown)
        if not resumed and model.preprocessing.fps is None and rate and not others:
            model.preprocessing = model.preprocessing.replace(fps=rate)
            if chief:
                print(f"note: the training videos run at {rate:g} fps: the model's contract takes that rate, to "
                      "which predict and the exports resample videos (--fps sets another)", file=sys.stderr)
        contract = model.preprocessing
        r3d_data.warn_about_frame_rates(config["train_data"], contract, "training", rates)
        r3d_data.warn_about_short_videos(config["train_data"], contract, "training")
        steps_per_epoch = videos // config["batch_size"]
        check_steps_per_epoch(state, config, steps_per_epoch, resumed)
        if not resumed:
            compile_model(model, config, steps_per_epoch)
    if chief and not resumed:  # made only now, so that a run refused above leaves no folder
        run.check_writable()
    custom_step = CustomStepEpoch(model, strategy, config) \
        if config["strategy"] == "multi_worker" else None
    print(f"Training {registry.describe(model.architecture)} on {videos} videos ({len(class_names)} classes), "
          f"{steps_per_epoch} steps of {config['batch_size']} clips per epoch on {replicas} replica(s), "
          f"into {run.path}", file=sys.stderr)

    # Under a strategy, Keras' predict runs distributed (and under MirroredStrategy returned
    # each replica's rows); validation calls the model directly on each worker instead.
    predict = _direct_predict(model) if strategy else None
    segment_start = wall_start  # data generation and model building count too
    tensorboard = TensorBoardLog(run.path / "tensorboard")
    for epoch in range(state["epoch"], config["epochs"]):
        raise_if_interrupted()
        description = f"epoch {epoch + 1}/{config['epochs']}"
        reseed_dropout(model, config["seed"], epoch)
        learning_rate = current_learning_rate(model.optimizer)
        if custom_step:
            dataset = custom_step.dataset(
                lambda batch: train_dataset(config, contract, len(class_names), epoch, batch))
            stats = custom_step(dataset, steps_per_epoch, description)
        else:
            dataset = train_dataset(config, contract, len(class_names), epoch, config["batch_size"])
            stats = fit_epoch(model, dataset, epoch, steps_per_epoch, config["batch_size"], description)
        if stats.bad_batch is not None or not _head_finite(model):
            last = state.get("checkpoint")
            raise NonFiniteLossError(
                f"the loss became NaN or infinite in epoch {epoch + 1} (batch {stats.bad_batch}); "
                f"training stopped. The last good checkpoint is "
                f"{run.path / last if last else 'none (no epoch finished)'}. Lower --lr, set --clipnorm, "
                f"or check the data.")
        # Every worker validates and saves alike (non-chief workers to a scratch
        # file), so that any collective op they involve runs on all workers.
        results = evaluate(model, config["val_data"], clips=config["val_clips"], class_names=class_names,
                           batch_size=config["batch_size"], predict=predict)
        row = {"epoch": epoch + 1, "learning_rate": float(f"{learning_rate:.6g}"),
               "loss": float(f"{stats.loss:.6g}"), "train_clip_top1": float(f"{stats.accuracy:.6g}"),  # float32
               "val_clip_top1": results["clip_top1"], "val_clip_top5": results["clip_top5"],
               "val_video_top1": results["video_top1"], "val_video_top5": results["video_top5"],
               "val_video_loss": float(f"{results['video_loss']:.6g}"), "val_reversed_video_top1": None,
               "epoch_time_s": round(stats.elapsed, 2),
               "train_clips_per_s": round(steps_per_epoch * config["batch_size"] / stats.elapsed, 2)}
        last_epoch = epoch + 1 == config["epochs"]
        if config["reverse_time_eval"] and (last_epoch or config["reverse_time_eval_every_epoch"]):
            reversed_results = evaluate(model, config["val_data"], clips=config["val_clips"],
                                        class_names=class_names, batch_size=config["batch_size"],
                                        reverse_time=True, predict=predict)
            row["val_reversed_video_top1"] = reversed_results["video_top1"]
        if not chief:
            scratch = run.workers / f"worker_{worker_index()}.keras"
            scratch.parent.mkdir(parents=True, exist_ok=True)
            model.save(scratch)
            scratch.unlink()
            continue
        state["history"].append(row)
        state["epoch"] = epoch + 1
        if is_new_best(row, state):
            state["best"], state["best_video_loss"], state["best_epoch"] = \
                row["val_video_top1"], row["val_video_loss"], epoch + 1
        now = time.perf_counter()
        state["wall_time_s"] += now - segment_start
        segment_start = now
        run.write_epoch(model, state, keep=config["keep_checkpoints"])
        tensorboard.write(row)
        print(_epoch_line(row, config["epochs"], len(class_names)), file=sys.stderr)
    if strategy is not None:
        run.workers.mkdir(parents=True, exist_ok=True)
        write_atomic(run.workers / f"worker_{worker_index()}.json",
                     json.dumps(weights_fingerprint(model), indent=1) + "\n")
    if not chief:
        return None
    return json.loads(run.summary_path.read_text())


def _direct_predict(model):
    import tensorflow as tf

    call = tf.function(lambda clips: model(clips, training=False), reduce_retracing=True)
    return lambda clips: call(tf.constant(clips)).numpy()


def is_new_best(row, state):
    """An epoch's `row` beats the run's best by validation video top-1, or
    ties it with a lower validation video loss: where a small val set
    saturates at 1.0 early, the later, surer model is kept. (A run of an
    earlier version, which recorded no best loss, keeps its best on a tie.)"""
    return row["val_video_top1"] > state["best"] or (
        row["val_video_top1"] == state["best"] and row["val_video_loss"] < state.get("best_video_loss", -math.inf))


def _head_finite(model):
    """The head's weights are finite (a NaN anywhere reaches them within a step)."""
    return all(np.all(np.isfinite(np.asarray(v))) for v in model.trainable_weights[-2:])


def _epoch_line(row, epochs, num_classes):
    top5 = f" top-5 {row['val_video_top5']:.3f}" if num_classes > 5 else ""  # else always 1
    line = (f"epoch {row['epoch']}/{epochs}: loss {row['loss']:.4f}, train clip top-1 "
            f"{row['train_clip_top1']:.3f}, val clip top-1 {row['val_clip_top1']:.3f}, val video top-1 "
            f"{row['val_video_top1']:.3f}{top5}, {row['train_clips_per_s']:.1f} clips/s, lr {row['learning_rate']:g}")
    if row["val_reversed_video_top1"] is not None:
        line += f", time-reversed val video top-1 {row['val_reversed_video_top1']:.3f}"
    return line


# ----------------------------------------------------------------- flags

def define_flags(flag_values=None):
    """Defines the training flags on `flag_values` (default absl's global FLAGS)."""
    import functools

    from absl import flags

    from keras_r3d import registry
    from keras_r3d.optimizers import STEP_FACTOR
    from keras_r3d.preprocessing import DATASET_PREPROCESSING
    from tfrecords_tools import synthetic

    flag_values = flags.FLAGS if flag_values is None else flag_values

    class d:  # the DEFINE_* functions, bound to flag_values
        def __getattr__(self, name):
            return functools.partial(getattr(flags, name), flag_values=flag_values)

    d = d()
    d.DEFINE_string("recipe", None, f"A shipped recipe ({', '.join(list_recipes())}); same as "
                    f"--flagfile=<package>/configs/<recipe>.flags.")
    d.DEFINE_string("train_data", None, "Glob of training TFRecords.")
    d.DEFINE_string("val_data", None, "Glob of validation TFRecords.")
    d.DEFINE_string("synthetic_dir", None, "Generate the synthetic set here if absent (demo).")
    d.DEFINE_integer("synthetic_videos_per_class", synthetic.DEFAULTS.videos_per_class,
                     "Synthetic videos per class.", lower_bound=2)
    d.DEFINE_integer("synthetic_size", synthetic.DEFAULTS.size, "Synthetic video side in pixels.",
                     lower_bound=32)
    registry.define_architecture_flags(flag_values, "Architecture to train from scratch.")
    flags.adopt_module_key_flags(registry, flag_values)  # listed in --help, not only --helpfull
    d.DEFINE_float("dropout", None, "Head dropout (default: the builder's; 0.9 when fine-tuning "
                   "the efficient nets).")
    d.DEFINE_string("model", None, "A .keras model file to continue training (same classes).")
    d.DEFINE_string("pretrained", None, "A .keras or official .pth to fine-tune (new head).")
    d.DEFINE_enum("finetune", "complete", list(FINETUNE_MODES), "What trains when fine-tuning.")
    d.DEFINE_enum("preprocessing", None, list(DATASET_PREPROCESSING),
                  "Contract of a model trained from scratch (default: 0..255 minus the ActivityNet mean).")
    d.DEFINE_integer("frames", None, "Clip length (overrides the contract).", lower_bound=1)
    d.DEFINE_integer("size", None, "Crop side (overrides the contract).", lower_bound=8)
    d.DEFINE_integer("temporal_downsample", None, "Keep every n-th frame (overrides the contract).",
                     lower_bound=1)
    d.DEFINE_float("fps", None, "Frame rate of the training records, to which predict and the exports "
                   "resample videos (overrides the contract).", lower_bound=0.1)
    d.DEFINE_list("value_range", None, "LOW,HIGH: pixels are scaled from 0..255 to this (overrides the contract).")
    d.DEFINE_list("mean", None, "R,G,B mean subtracted after scaling (overrides the contract).")
    d.DEFINE_list("std", None, "R,G,B std divided by after the mean (overrides the contract).")
    d.DEFINE_enum("crop", "random", ["random", "corner", "center"], "Training crop.")
    d.DEFINE_bool("hflip", False, "Random horizontal flips (never for gestures).")
    d.DEFINE_string("cache", None, "Cache the training records: 'memory' or a file prefix.")
    d.DEFINE_integer("batch_size", 16, "Global batch size (split across replicas).", lower_bound=1)
    d.DEFINE_integer("epochs", 10, "Epochs to train in total.", lower_bound=1)
    d.DEFINE_enum("optimizer", "official_sgd", list(OPTIMIZERS), "Optimizer.")
    d.DEFINE_float("lr", 0.1, "Learning rate (peak, for cosine).", lower_bound=0.0)
    d.DEFINE_enum("lr_schedule", "steps", list(LR_SCHEDULES), "Learning-rate schedule.")
    d.DEFINE_list("lr_steps", ["40", "55", "65", "70", "200", "250"], f"Epochs where lr *= {STEP_FACTOR:g}.")
    d.DEFINE_float("warmup_epochs", 0.0, "Linear warmup before cosine decay.", lower_bound=0.0)
    d.DEFINE_float("momentum", 0.9, "SGD momentum.")
    d.DEFINE_float("dampening", 0.9, "SGD dampening (the official code's 0.9).")
    d.DEFINE_float("weight_decay", 1e-3, "L2 (SGD, coupled) or decoupled (AdamW) weight decay.", lower_bound=0.0)
    d.DEFINE_float("label_smoothing", 0.0, "Label smoothing.", lower_bound=0.0, upper_bound=1.0)
    d.DEFINE_enum("precision", "float32", ["float32", "mixed_float16", "mixed_bfloat16"], "Precision.")
    d.DEFINE_float("clipnorm", None, "Clip the global gradient norm.", lower_bound=0.0)
    d.DEFINE_integer("seed", 1, "Seeds initialization, data order, augmentation and dropout.")
    d.DEFINE_enum("jit_compile", "auto", list(JIT_COMPILE_CHOICES), "XLA-compile the train and "
                  "predict steps (true on torch: torch.compile); auto: yes on JAX and on TF with a GPU, no on "
                  "CPU-only TF, where XLA trains the demo recipe 2.5x slower (but ShuffleNetV2-1.0x at 8x32x32 "
                  "2.1x faster), and no on torch.")
    d.DEFINE_bool("deterministic", False, "Deterministic kernels (slower): with a fixed --seed, a resumed run "
                  "then reproduces an uninterrupted one bit for bit (checked on CPUs; on a GPU, TensorFlow's, "
                  "XLA's for JAX and torch's deterministic kernels are chosen, not yet checked there).")
    d.DEFINE_integer("val_clips", 0, "Validation windows per video: 0 = all (paper), 1 = center.",
                     lower_bound=0)
    d.DEFINE_bool("reverse_time_eval", False, "Also evaluate on time-reversed validation clips.")
    d.DEFINE_bool("reverse_time_eval_every_epoch", False, "... after every epoch, not only the last.")
    d.DEFINE_string("output_dir", None, "Run directory (default runs/<flagfile stem>).")
    d.DEFINE_bool("resume", False, "Continue the run in --output_dir.")
    d.DEFINE_integer("keep_checkpoints", 2, "Epoch checkpoints to keep.", lower_bound=1)
    d.DEFINE_enum("strategy", "none", list(STRATEGIES), "Distribution strategy.")


def list_recipes():
    return sorted(path.stem for path in CONFIGS_DIR.glob("*.flags"))


def expand_recipe(argv):
    """`argv` with `--recipe=x` (or `--recipe x`) replaced by
    `--flagfile=<package>/configs/x.flags`, `--flagfile x` joined into
    `--flagfile=x`, and the flagfiles (in their order) moved before the other
    flags: the command line overrides a recipe wherever it names it."""
    expanded, args = [], iter(argv)
    for arg in args:
        name, equals, value = arg.lstrip("-").partition("=")
        if arg.startswith("-") and name in ("recipe", "flagfile"):
            if not equals:
                value = next(args, None)
                if value is None:
                    raise SystemExit(f"--{name} needs a value")
            if name == "recipe":
                value = CONFIGS_DIR / f"{value}.flags"
                if not value.exists():
                    raise SystemExit(f"unknown recipe {value.stem!r}; shipped: {', '.join(list_recipes())}")
            arg = f"--flagfile={value}"
        expanded.append(arg)
    flagfiles = [arg for arg in expanded[1:] if arg.startswith("--flagfile=")]
    return expanded[:1] + flagfiles + [arg for arg in expanded[1:] if not arg.startswith("--flagfile=")]


# Flags that only some settings use: (flag, the setting it needs, whether the config has it).
CONDITIONAL_FLAGS = (("warmup_epochs", "--lr_schedule=cosine", lambda config: config["lr_schedule"] == "cosine"),
                     ("lr_steps", "--lr_schedule=steps", lambda config: config["lr_schedule"] == "steps"),
                     ("momentum", "--optimizer=official_sgd", lambda config: config["optimizer"] == "official_sgd"),
                     ("dampening", "--optimizer=official_sgd", lambda config: config["optimizer"] == "official_sgd"))


def ignored_flags(flag_values, argv):
    """Notes on the flags set away from their defaults that the other flags
    leave unused (`--warmup_epochs` under a step schedule, say), naming those
    that a flagfile set rather than `argv` itself."""
    config = {name: flag_values[name].value for name in flag_values}
    typed = command_line_flags(argv)
    return [f"--{name}={','.join(map(str, value)) if isinstance(value, list) else value}"
            f"{'' if name in typed else ' (from the flagfile)'} is used with {needs} only: ignored"
            for name, needs, uses in CONDITIONAL_FLAGS
            if not uses(config) and (value := flag_values[name].value) != flag_values[name].default]


def command_line_flags(argv):
    """The names of the flags given in `argv` itself, not in its flagfiles."""
    return {arg.lstrip("-").partition("=")[0] for arg in argv
            if arg.startswith("-") and not arg.lstrip("-").startswith("flagfile")}


def yield_recipe_architecture(config, argv):
    """A flagfile's model source yields to the command line: `--model`,
    `--pretrained` or `--arch` there drops the recipe's other two, and the
    recipe's builder flags that no longer apply (all but the new arch's);
    `--model` also drops the recipe's contract flags, `--finetune` and
    `--dropout` (a model that trains on keeps its input and head), and an
    `--arch` without dropout the `--dropout`. A recipe's `--finetune=complete`
    is the default, so it stays."""
    from keras_r3d import registry

    given = command_line_flags(argv)
    sources = ("model", "pretrained", "arch")
    if not given & set(sources):
        return config
    dropped = [name for name in sources if name not in given]
    kept = registry.builder_kwargs(config["arch"]) if "arch" in given and config["arch"] else ()
    dropped += [name for name in registry.ARCHITECTURE_FLAGS if name not in given and name not in kept]
    if "dropout" not in given and ("model" in given or "arch" in given and "dropout" not in kept):
        dropped.append("dropout")  # --pretrained fine-tunes with the recipe's
    if "model" in given:
        dropped += [name for name in CONTRACT_SCALAR_FLAGS + CONTRACT_VALUE_FLAGS + ("finetune",) if name not in given]
    return {**config, **{name: None for name in dropped}}


def default_output_dir(argv):
    stems = [pathlib.Path(arg.split("=", 1)[1]).stem for arg in argv if arg.startswith("--flagfile=")]
    return str(pathlib.Path("runs") / (stems[-1] if stems else "train"))


def default_config(**overrides):
    """The flag defaults as a config dict, updated by `overrides` (for
    calling `train` from Python)."""
    from absl import flags

    flag_values = flags.FlagValues()
    define_flags(flag_values)
    flag_values(["train"])
    config = {name: flag_values[name].value for name in flag_values}
    unknown = set(overrides) - set(config)
    if unknown:
        raise ValueError(f"unknown training options {sorted(unknown)}")
    config.update(overrides)
    return finish_config(config, [])


def config_from_flags(flag_values, argv):
    """The parsed flags as a config dict."""
    config = {name: flag_values[name].value for name in _flag_names()}
    return finish_config(yield_recipe_architecture(config, argv), argv)


def _flag_names():
    from absl import flags

    probe = flags.FlagValues()
    define_flags(probe)
    return list(probe)


def finish_config(config, argv):
    """Fills the derived settings: output_dir and the synthetic data paths."""
    config = dict(config)
    for name, kind in (("lr_steps", int),) + tuple((name, float) for name in CONTRACT_VALUE_FLAGS):
        values = config[name].split(",") if isinstance(config[name], str) else config[name]
        if values is not None:
            try:
                config[name] = [kind(v) for v in values]
            except (TypeError, ValueError):
                raise ValueError(f"--{name} takes {kind.__name__}s separated by commas, got "
                                 f"{','.join(map(str, values))!r}") from None
    config["output_dir"] = config["output_dir"] or default_output_dir(argv)
    if config["synthetic_dir"]:
        if config["train_data"] and config["val_data"]:
            config["synthetic_dir"] = None  # the data is the user's: nothing to generate
        for key, split in (("train_data", "train"), ("val_data", "val")):
            config[key] = config[key] or str(pathlib.Path(config["synthetic_dir"]) / f"{split}-*.tfrecord")
    for key in ("train_data", "val_data"):
        if not config[key]:
            raise ValueError(f"--{key} is required (or --synthetic_dir)")
    return config


def main(argv, full_argv):
    from absl import flags

    if len(argv) > 1:
        print(unexpected_arguments(argv[1:]), file=sys.stderr)
        return 1
    try:
        config = config_from_flags(flags.FLAGS, full_argv)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for note in ignored_flags(flags.FLAGS, full_argv):
        print(f"note: {note}", file=sys.stderr)
    from keras_r3d.data import damaged_records_as_value_errors

    try:
        with sticky_interrupts(sigterm=True), damaged_records_as_value_errors("--train_data or --val_data"):
            summary = train(config)
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        state = RunDirectory(config["output_dir"]).read_state()
        print("\ninterrupted " + (f"after epoch {state['epoch']}, saved in {config['output_dir']}: the same "
                                  "command with --resume continues" if state else
                                  "before the first epoch ended: nothing is saved"), file=sys.stderr)
        return 130
    except Exception as error:
        lost = config["strategy"] == "multi_worker" and lost_worker(error)
        if not lost:
            raise
        state = RunDirectory(config["output_dir"]).read_state()
        print(f"error: a worker stopped or cannot be reached ({lost}); the run "
              f"keeps {'epoch ' + str(state['epoch']) if state else 'no epoch'}: start every worker again with "
              "--resume", file=sys.stderr)
        return 1
    if summary:  # the chief's
        run = RunDirectory(config["output_dir"])
        best = run.path / BEST_MODEL
        print(f"Done: best validation video top-1 {summary['val_video_top1']:.3f} (epoch {summary['best_epoch']}) "
              f"in {best}; curves in {run.accuracy_png} and {run.metrics_csv}.\n"
              f"Next: python -m keras_r3d.predict --model {best} VIDEO, or python -m keras_r3d.export "
              f"--model {best} --tflite --output export/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from absl import app

    from keras_r3d.text import plain_warnings

    plain_warnings()
    define_flags()
    full_argv = expand_recipe(sys.argv)
    app.run(lambda argv: sys.exit(main(argv, full_argv)), argv=full_argv)
