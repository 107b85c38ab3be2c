"""Training: a short run, kill-and-resume, the NaN guard, fine-tuning from
the official checkpoint, the JAX backend and a two-worker run."""
import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from keras_r3d import train as r3d_train
from keras_r3d.runs import RunDirectory
from tests.conftest import OFFICIAL_CHECKPOINT, REPO

# A tiny model and input: the tests check the machinery, not the accuracy.
TINY = dict(arch="squeezenet", version=1.1, frames=8, size=32, batch_size=4, lr=0.01, lr_steps=[2],
            val_clips=0, keep_checkpoints=1, seed=3)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Tiny synthetic records: 8 classes x 3 videos of 8 frames at 32x32."""
    from tfrecords_tools.synthetic import SyntheticConfig, make_synthetic

    directory = tmp_path_factory.mktemp("synthetic")
    manifest = make_synthetic(directory, SyntheticConfig(videos_per_class=3, size=32, frames=8),
                              workers=1, progress=False)
    assert manifest["splits"]["train"]["videos"] >= 8 and manifest["splits"]["val"]["videos"] >= 1
    return {"train_data": str(directory / "train-*.tfrecord"), "val_data": str(directory / "val-*.tfrecord")}


def _cli(output_dir, synthetic, *flags, env=None, **overrides):
    settings = {**TINY, **synthetic, "output_dir": output_dir, **overrides}
    args = [f"--{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in settings.items()]
    return [sys.executable, "-m", "keras_r3d.train", *args, *flags]


def _weights(path):
    import keras

    model = keras.saving.load_model(path, compile=False)
    return [np.asarray(w) for w in model.get_weights()]


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_partial(tmp_path, monkeypatch):
    from keras_r3d.files import savefig_atomic, write_atomic

    target = tmp_path / "accuracy.png"
    write_atomic(target, b"old")

    class DiskFull:
        def savefig(self, path, dpi):
            path.write_bytes(b"half")
            raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"):
        savefig_atomic(DiskFull(), target)
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]
    # In a read-only folder the partial file cannot be removed either: the write's error is the one raised.
    monkeypatch.setattr(pathlib.Path, "unlink", lambda *a, **k: (_ for _ in ()).throw(OSError("Read-only")))
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "gone" / "metrics.json", "{}")


def test_probe_writable_makes_the_folders_and_refuses_one_it_cannot_write(tmp_path):
    from keras_r3d.files import probe_writable

    deep = tmp_path / "runs" / "2026" / "jester"
    probe_writable(deep, f"--output_dir {deep}")  # parents made, as the run will need them
    assert deep.is_dir() and list(deep.iterdir()) == []  # the probe leaves nothing behind
    # An existing folder that takes no files (/proc, even for root): refused, naming the flag.
    with pytest.raises(ValueError, match=r"^--output /proc/x.json: cannot write there \("):
        probe_writable("/proc", "--output /proc/x.json")
    # A file where a folder should be ("File exists" from mkdir): named.
    (tmp_path / "afile").write_text("")
    for folder in (tmp_path / "afile", tmp_path / "afile" / "run"):
        with pytest.raises(ValueError, match=f"^--output_dir {folder}: cannot write there "
                                             rf"\({tmp_path / 'afile'} is a file, not a folder\)$"):
            probe_writable(folder, f"--output_dir {folder}")
    # Without make, a folder to be made later: checked, not made.
    later = tmp_path / "runs" / "later" / "run"
    probe_writable(later, f"--output_dir {later}", make=False)
    assert not (tmp_path / "runs" / "later").exists()
    with pytest.raises(ValueError, match=r"afile/run: cannot write there \(.*afile is a file, not a folder\)$"):
        probe_writable(tmp_path / "afile" / "run", f"--output_dir {tmp_path / 'afile' / 'run'}", make=False)
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")  # a link to a folder since removed
    for make in (True, False):
        with pytest.raises(ValueError, match=r"gone/run: cannot write there \(.*gone is a link to nothing\)$"):
            probe_writable(tmp_path / "gone" / "run", f"--output_dir {tmp_path / 'gone' / 'run'}", make=make)


def test_short_training_run_writes_the_run_directory(synthetic, tmp_path):
    config = r3d_train.default_config(**TINY, **synthetic, epochs=2, output_dir=str(tmp_path / "run"),
                                      reverse_time_eval=True, label_smoothing=0.1)
    summary = r3d_train.train(config)
    run = tmp_path / "run"
    for name in ("best.keras", "last.keras", "metrics.csv", "metrics.json", "accuracy.png", "state.json"):
        assert (run / name).stat().st_size > 0, name
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["epoch_0002.keras"]
    import tensorflow as tf

    events = list((run / "tensorboard").iterdir())  # one file for the run's epochs
    assert len(events) == 1
    steps = [event.step for event in tf.compat.v1.train.summary_iterator(str(events[0]))
             for value in event.summary.value if value.tag == "loss"]
    assert steps == [1, 2]
    assert set(summary) >= {"best_epoch", "val_clip_top1", "val_video_top1", "val_video_top5", "epochs",
                            "wall_time_s", "val_reversed_video_top1"}
    assert summary["epochs"] == 2 and summary["wall_time_s"] > 0
    rows = (run / "metrics.csv").read_text().strip().split("\n")
    assert len(rows) == 3 and rows[0].startswith("epoch,learning_rate,loss")
    # the official step schedule: lr_steps=[2] -> 0.01 in epoch 1, 0.001 from epoch 2 on
    assert [float(r.split(",")[1]) for r in rows[1:]] == pytest.approx([0.01, 0.001])
    import keras_r3d

    info = keras_r3d.model_info(run / "best.keras")
    assert len(info["class_names"]) == 8 and info["preprocessing"]["frames"] == 8
    with pytest.raises(ValueError, match="--resume"):
        r3d_train.train(config)


def test_a_tie_in_accuracy_goes_to_the_lower_validation_loss(synthetic, tmp_path, monkeypatch):
    """A later epoch that ties the best validation accuracy is the best one only with a lower
    validation video loss (the official code keeps the first: `prec1 > best_prec1`)."""
    import types

    from keras_r3d import evaluate as r3d_evaluate

    results = iter([(0.5, 1.0), (0.75, 0.8), (0.75, 0.6), (0.75, 0.7), (0.25, 0.1)])  # (top-1, loss) per epoch
    stats = types.SimpleNamespace(bad_batch=None, loss=1.0, accuracy=0.5, elapsed=1.0)
    monkeypatch.setattr(r3d_train, "fit_epoch", lambda *args: stats)  # no training: only the choice
    monkeypatch.setattr(r3d_evaluate, "evaluate", lambda *args, **kwargs: dict.fromkeys(
        ("clip_top1", "clip_top5", "video_top5"), 1.0) | dict(zip(("video_top1", "video_loss"), next(results))))
    config = r3d_train.default_config(**TINY, **synthetic, epochs=5, output_dir=str(tmp_path / "run"))
    summary = r3d_train.train(config)
    assert (summary["best_epoch"], summary["val_video_top1"]) == (3, 0.75)
    assert "val_video_loss" in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")


def test_a_bad_batch_or_non_finite_head_alone_stops_the_run(synthetic, tmp_path, monkeypatch):
    """Either sign of divergence stops training: a non-finite loss (mixed_float16's loss scaling
    skips that step, so the weights stay finite) or a non-finite head (an update after the last
    loss read diverged)."""
    import types

    config = r3d_train.default_config(**TINY, **synthetic, epochs=1, output_dir=str(tmp_path / "run"))
    for bad_batch, head_finite in ((3, True), (None, False)):
        stats = types.SimpleNamespace(bad_batch=bad_batch, loss=1.0, accuracy=0.5, elapsed=1.0)
        monkeypatch.setattr(r3d_train, "fit_epoch", lambda *args: stats)
        monkeypatch.setattr(r3d_train, "_head_finite", lambda model: head_finite)
        with pytest.raises(r3d_train.NonFiniteLossError, match=rf"epoch 1 \(batch {bad_batch}\)"):
            r3d_train.train({**config, "output_dir": str(tmp_path / f"run_{bad_batch}")})


def test_train_dataset_runs_without_the_autotune_thread(synthetic, tmp_path):
    # Dropping an iterator that has tf.data's autotuning thread blocks until the
    # thread's next (exponentially backed-off) wake-up: 11 s epochs took 20.6 s.
    import keras_r3d

    config = r3d_train.default_config(**TINY, **synthetic, output_dir=str(tmp_path / "run"))
    contract = keras_r3d.Preprocessing(frames=8, size=32)
    dataset = r3d_train.train_dataset(config, contract, 8, epoch=0, batch_size=4)
    assert dataset.options().autotune.enabled is False
    clips, labels = next(iter(dataset))
    assert clips.shape == (4, 8, 32, 32, 3) and labels.shape == (4, 8)


@pytest.mark.slow  # minutes on 2 shared cores
def test_kill_and_resume_gives_the_uninterrupted_weights(synthetic, tmp_path):
    epochs = 4
    uninterrupted = r3d_train.default_config(**TINY, **synthetic, epochs=epochs, deterministic=True,
                                             output_dir=str(tmp_path / "straight"))
    r3d_train.train(uninterrupted)
    # A run killed with SIGKILL as soon as its first epoch is on disk.
    killed_dir = tmp_path / "killed"
    process = subprocess.Popen(_cli(killed_dir, synthetic, "--deterministic", epochs=epochs), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_path = killed_dir / "state.json"
    deadline = time.time() + 300
    while not state_path.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = json.loads(state_path.read_text())["epoch"]
    assert finished < epochs, "the run finished before it was killed: nothing was tested"
    r3d_train.train({**uninterrupted, "output_dir": str(killed_dir), "resume": True})
    assert json.loads(state_path.read_text())["epoch"] == epochs
    for a, b in zip(_weights(tmp_path / "straight" / "last.keras"), _weights(killed_dir / "last.keras")):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    straight = (tmp_path / "straight" / "metrics.csv").read_text().split("\n")
    resumed = (killed_dir / "metrics.csv").read_text().split("\n")
    assert [r.split(",")[:2] for r in straight] == [r.split(",")[:2] for r in resumed]


def _interrupt_training(run_dir, synthetic, when):
    """The stderr of a training run sent SIGINT once `when()` holds."""
    # SIGINT handled as in a terminal, even where this runs as a background job (which ignores it).
    process = subprocess.Popen(_cli(run_dir, synthetic, epochs=50), cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not when() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert when() and process.poll() is None, "the run did not get there in time"
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err[-2000:]
    return err


def test_ctrl_c_says_how_to_resume(synthetic, tmp_path):
    run_dir = tmp_path / "run"
    # Before the first epoch ends: nothing saved, and the run's folder is gone.
    err = _interrupt_training(run_dir, synthetic, when=run_dir.exists)
    assert "interrupted before the first epoch ended: nothing is saved" in err and not run_dir.exists()
    err = _interrupt_training(run_dir, synthetic, when=(run_dir / "state.json").exists)
    assert "Training SqueezeNet-1.1 on " in err  # the architecture by its registry name
    epoch = json.loads((run_dir / "state.json").read_text())["epoch"]
    assert f"interrupted after epoch {epoch}, saved in {run_dir}: the same command with --resume" in err
    assert "Traceback" not in err
    done = subprocess.run(_cli(run_dir, synthetic, "--resume", epochs=epoch + 1), cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"Resuming {run_dir} after epoch {epoch}" in done.stderr
    assert json.loads((run_dir / "state.json").read_text())["epoch"] == epoch + 1


def test_ctrl_c_before_the_first_epoch_keeps_a_folder_the_run_did_not_make(tmp_path, monkeypatch):
    def interrupted(config):
        pathlib.Path(config["output_dir"]).mkdir(exist_ok=True)  # as check_writable makes it
        raise KeyboardInterrupt

    monkeypatch.setattr(r3d_train, "_train", interrupted)
    (tmp_path / "mine").mkdir()
    for folder, kept in (("mine", True), ("new", False)):
        with pytest.raises(KeyboardInterrupt):
            r3d_train.train({"output_dir": str(tmp_path / folder)})
        assert (tmp_path / folder).exists() == kept


def test_a_ctrl_c_swallowed_by_a_finalizer_is_raised_again():
    """A Ctrl-C that lands in a `__del__` (TensorFlow's, matplotlib's) or a
    garbage-collector callback (JAX's) is dropped, and Python prints it as
    "Exception ignored" with a traceback; the training loop, convert and the
    benchmark print nothing then and raise it again at their next batch,
    video or row. Other errors in finalizers are still printed."""
    from keras_r3d.interrupts import raise_if_interrupted, sticky_interrupts

    class Finalized:
        def __init__(self, action):
            self.action = action

        def __del__(self):
            self.action()

    def fail():
        raise ValueError("a finalizer's own error")

    printed = []  # what Python would print as "Exception ignored"
    previous_hook, sys.unraisablehook = sys.unraisablehook, lambda unraisable: printed.append(unraisable.exc_type)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        with sticky_interrupts():
            raise_if_interrupted()  # nothing yet
            Finalized(fail)
            Finalized(lambda: signal.raise_signal(signal.SIGINT))  # finalized at once: the interrupt is swallowed
            with pytest.raises(KeyboardInterrupt):
                raise_if_interrupted()
        assert printed == [ValueError]
        raise_if_interrupted()  # forgotten outside
        # Training and the benchmark take a SIGTERM (`kill`, a scheduler's preemption) as a Ctrl-C.
        with pytest.raises(KeyboardInterrupt), sticky_interrupts(sigterm=True):
            signal.raise_signal(signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        Finalized(fail)  # the hook in place before is back
        assert printed == [ValueError, ValueError]
    finally:
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = previous_hook


def test_sticky_interrupts_leave_a_background_jobs_ignored_ctrl_c_ignored():
    """A job started with `&` ignores Ctrl-C (SIGINT is SIG_IGN): it must go
    on ignoring it, and still take a `kill` (SIGTERM) as a Ctrl-C."""
    from keras_r3d.interrupts import raise_if_interrupted, sticky_interrupts

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with pytest.raises(KeyboardInterrupt), sticky_interrupts(sigterm=True):
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            signal.raise_signal(signal.SIGINT)  # ignored, as the job asked
            raise_if_interrupted()
            signal.raise_signal(signal.SIGTERM)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, previous)


def test_sticky_interrupts_run_in_a_thread():
    """A run in a thread (a notebook's, a server's) cannot set signal handlers
    (signal.signal raises ValueError there): it runs without them."""
    import threading

    from keras_r3d.interrupts import raise_if_interrupted, sticky_interrupts

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    errors = []

    def run():
        try:
            with sticky_interrupts(sigterm=True):
                raise_if_interrupted()
        except Exception as error:
            errors.append(error)

    try:
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        assert errors == []
    finally:
        signal.signal(signal.SIGINT, previous)


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(synthetic, tmp_path, monkeypatch):
    import tensorflow as tf

    config = r3d_train.default_config(**TINY, **synthetic, epochs=1, output_dir=str(tmp_path / "run"))
    r3d_train.train(config)
    last = tmp_path / "run" / "last.keras"
    digest = hashlib.sha256(last.read_bytes()).hexdigest()
    good_dataset = r3d_train.train_dataset

    def poisoned(*args):
        return good_dataset(*args).map(lambda clip, label: (clip, label * np.float32("nan")))

    monkeypatch.setattr(r3d_train, "train_dataset", poisoned)
    with pytest.raises(r3d_train.NonFiniteLossError, match=r"epoch 2 .*checkpoints/epoch_0001\.keras"):
        r3d_train.train({**config, "epochs": 2, "resume": True})
    assert json.loads((tmp_path / "run" / "state.json").read_text())["epoch"] == 1
    assert hashlib.sha256(last.read_bytes()).hexdigest() == digest
    assert not (tmp_path / "run" / "checkpoints" / "epoch_0002.keras").exists()
    del tf


def test_finetune_from_the_official_checkpoint_replaces_the_head(fixtures_dir, tmp_path, capsys):
    import keras

    import keras_r3d

    source = keras_r3d.load(OFFICIAL_CHECKPOINT)
    names = ["a", "b", "c", "d", "e"]
    config = r3d_train.default_config(pretrained=str(OFFICIAL_CHECKPOINT), finetune="last_layer",
                                      frames=16, size=64, train_data="x", val_data="y")
    model = r3d_train.finetune_model(source, names, config)
    assert model.output_shape == (None, 5) and model.class_names == names
    assert model.input_shape == (None, 16, 64, 64, 3)
    assert model.get_layer("classifier_0").rate == 0.9  # the official fine-tuning dropout
    assert model.preprocessing.temporal_downsample == 2  # the Jester contract carries over
    source_layers = {layer.name: layer for layer in source.layers}
    copied = 0
    for layer in model.layers:
        if layer.weights and layer.name != "classifier_1":
            for a, b in zip(layer.get_weights(), source_layers[layer.name].get_weights()):
                np.testing.assert_array_equal(a, b)
            copied += 1
    assert copied > 50
    assert [w.path for w in model.trainable_weights] == ["classifier_1/kernel", "classifier_1/bias"]
    batch_norms = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert batch_norms and not any(l.trainable for l in batch_norms)  # statistics frozen
    complete = r3d_train.finetune_model(source, names, {**config, "finetune": "complete"})
    assert len(complete.trainable_weights) == len(source.trainable_weights)
    # Trained on with --model, its frozen layers stay so, with a note.
    model.save(tmp_path / "head_only.keras")
    trained_on = r3d_train.build_model({**config, "pretrained": None, "finetune": None, "frames": None,
                                        "size": None, "model": str(tmp_path / "head_only.keras")}, names)
    assert [w.path for w in trained_on.trainable_weights] == ["classifier_1/kernel", "classifier_1/bias"]
    assert f"note: --model {tmp_path / 'head_only.keras'}: {copied} of its layers were " \
           "saved frozen" in capsys.readouterr().err
    # The same from Python.
    api = keras_r3d.finetune(source, names, head_only=True, preprocessing=source.preprocessing.replace(size=64))
    assert api.input_shape == model.input_shape and api.get_layer("classifier_0").rate == 0.9
    assert [w.path for w in api.trainable_weights] == ["classifier_1/kernel", "classifier_1/bias"]
    with pytest.raises(ValueError, match="class_names must be a list of names, got 'abc'"):
        keras_r3d.finetune(source, "abc")
    with pytest.raises(ValueError, match=r"got 3 \(3 generic names: \[str\(i\) for i in range\(3\)\]\)"):
        keras_r3d.finetune(source, 3)
    with pytest.raises(TypeError, match="finetune takes a keras_r3d zoo model, got Sequential"):
        keras_r3d.finetune(keras.Sequential([keras.layers.Dense(2)]), names)
    with pytest.raises(ValueError, match="dropout: resnet has no dropout layer"):
        keras_r3d.finetune(keras_r3d.ResNet3D(10, num_classes=2, input_shape=(8, 32, 32, 3)), names, dropout=0.5)
    source.name = "gestures"  # a user's name stays
    assert keras_r3d.finetune(source, names).name == "gestures"
    with pytest.raises(ValueError, match="this one's are folded into its convs"):
        keras_r3d.finetune(keras_r3d.fold_batch_norm(source), names)


@pytest.mark.slow
def test_finetune_training_from_the_official_checkpoint(fixtures_dir, synthetic, tmp_path):
    config = r3d_train.default_config(**{**TINY, "arch": None, "version": None, "frames": 16, "size": 64},
                                      **synthetic, epochs=1,
                                      pretrained=str(OFFICIAL_CHECKPOINT), finetune="last_layer",
                                      output_dir=str(tmp_path / "run"))
    before = {l.name: l.get_weights() for l in
              r3d_train.finetune_model(__import__("keras_r3d").load(OFFICIAL_CHECKPOINT),
                                       [str(i) for i in range(8)], config).layers}
    r3d_train.train(config)
    import keras

    tuned = keras.saving.load_model(tmp_path / "run" / "last.keras", compile=False)
    bn = tuned.get_layer("conv1_1")  # the stem BatchNorm: statistics frozen
    for a, b in zip(bn.get_weights(), before["conv1_1"]):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(tuned.get_layer("classifier_1").get_weights()[0],
                              before["classifier_1"][0])


@pytest.mark.slow
def test_the_finetune_recipe_learns_a_few_dozen_own_videos(fixtures_dir, tmp_path):
    """27 overlapping cuts of the three gesture recordings, converted as a
    user's own folders: the official Jester model's new head learns them."""
    from tests.conftest import GESTURES
    from tfrecords_tools.convert import convert

    for name, folder in GESTURES.items():
        frames = sorted(folder.glob("*.jpg"))
        for cut, start in enumerate(range(0, 33, 4)):
            clip = tmp_path / "mine" / name / f"{name}_{cut}"
            clip.mkdir(parents=True)
            for index, frame in enumerate(frames[start:start + 36]):
                (clip / f"{index + 1:05d}.jpg").symlink_to(frame)
    convert("folders", tmp_path / "mine", tmp_path / "data", val_fraction=0.25, progress=False)
    config = _parse("--recipe=finetune", f"--pretrained={OFFICIAL_CHECKPOINT}", "--epochs=3",
                    f"--train_data={tmp_path / 'data' / 'train-*.tfrecord'}",
                    f"--val_data={tmp_path / 'data' / 'val-*.tfrecord'}", f"--output_dir={tmp_path / 'run'}")
    r3d_train.train(config)
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["val_video_top1"] >= 0.75, summary  # chance is 1/3


def test_training_on_the_jax_backend(synthetic, tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    result = subprocess.run(_cli(tmp_path / "run", synthetic, epochs=1), cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["epochs"] == 1 and 0.0 <= summary["val_video_top1"] <= 1.0
    assert (tmp_path / "run" / "best.keras").stat().st_size > 0


_RESUME_ON_BACKEND = """
import json, sys
import numpy as np
import keras
from keras_r3d import train
config = train.default_config(**json.loads(sys.argv[1]))
train.train({**config, "output_dir": config["output_dir"] + "/straight"})
train.train({**config, "output_dir": config["output_dir"] + "/resumed", "epochs": 1})
train.train({**config, "output_dir": config["output_dir"] + "/resumed", "resume": True})
weights = [[np.asarray(w) for w in keras.saving.load_model(f"{config['output_dir']}/{run}/last.keras").weights]
           for run in ("straight", "resumed")]
print(json.dumps(max(float(np.abs(a - b).max()) for a, b in zip(*weights))))
"""


@pytest.mark.parametrize("backend", ["torch", pytest.param("jax", marks=pytest.mark.slow)])
def test_a_resumed_run_equals_the_uninterrupted_one_on_jax_and_torch(synthetic, tmp_path, backend):
    # On both, Keras read a first batch to build the metrics and restarted the dataset, so a
    # resumed epoch drew other clips; on torch, Dropout also drew from torch's global RNG.
    settings = {**TINY, **synthetic, "epochs": 2, "deterministic": True, "output_dir": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", _RESUME_ON_BACKEND, json.dumps(settings)], cwd=REPO,
                            env={**os.environ, "KERAS_BACKEND": backend}, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == 0.0


_DETERMINISM = """
import os
import keras
from keras_r3d.train import enable_determinism
enable_determinism()
if keras.backend.backend() == "jax":
    import jax.numpy as jnp
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_enable_fast_math=false --xla_gpu_deterministic_ops=true"
    float(jnp.ones(2).sum())  # JAX starts (XLA parses its flags): too late for a second call
    enable_determinism()
else:
    import torch
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] and not torch.backends.cudnn.benchmark
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_deterministic_asks_jax_and_torch_for_deterministic_gpu_kernels(backend):
    env = {**os.environ, "KERAS_BACKEND": backend, "XLA_FLAGS": "--xla_cpu_enable_fast_math=false"}
    result = subprocess.run([sys.executable, "-c", _DETERMINISM], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    started = "note: --deterministic: JAX has started its devices already" in result.stderr
    assert started == (backend == "jax")


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow  # minutes on 2 shared cores
def test_two_workers_on_loopback_stay_in_sync(synthetic, tmp_path):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        env = {**os.environ, "KERAS_BACKEND": "tensorflow", "CUDA_VISIBLE_DEVICES": "",
               "TF_CONFIG": json.dumps({"cluster": {"worker": workers},
                                        "task": {"type": "worker", "index": index}})}
        processes.append(subprocess.Popen(
            _cli(tmp_path / "run", synthetic, "--strategy=multi_worker", epochs=2), cwd=REPO, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    assert "on 2 replica(s)" in outputs[0]
    fingerprints = [json.loads((tmp_path / "run" / "workers" / f"worker_{i}.json").read_text())
                    for i in range(2)]
    assert fingerprints[0].keys() == fingerprints[1].keys() and len(fingerprints[0]) > 10
    for key, value in fingerprints[0].items():
        assert fingerprints[1][key] == pytest.approx(value, rel=1e-6, abs=1e-6), key
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["epochs"] == 2
    # A resume where worker 1 does not see the run: both fail alike, with a message.
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index, run in enumerate(("run", "elsewhere")):
        env = {**os.environ, "KERAS_BACKEND": "tensorflow", "CUDA_VISIBLE_DEVICES": "",
               "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})}
        processes.append(subprocess.Popen(
            _cli(tmp_path / run, synthetic, "--strategy=multi_worker", "--resume", epochs=3), cwd=REPO, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 1 and "error: --resume: the workers found different runs" in output, \
            output[-3000:]
    assert f"({tmp_path / 'elsewhere'} here holds none)" in outputs[1]
    # A worker killed mid-run: the other stops with a message, not a traceback.
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        env = {**os.environ, "KERAS_BACKEND": "tensorflow", "CUDA_VISIBLE_DEVICES": "",
               "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})}
        processes.append(subprocess.Popen(
            _cli(tmp_path / "lost", synthetic, "--strategy=multi_worker", epochs=50), cwd=REPO, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    deadline = time.time() + 300
    while not (tmp_path / "lost" / "state.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    processes[1].kill()
    output = processes[0].communicate(timeout=300)[0]
    processes[1].communicate()
    assert processes[0].returncode == 1 and re.search(r"error: a worker stopped or cannot be reached \(\w+Error"
                                                      r"(: no heartbeat from /job:worker/replica:0/task:1)?\); "
                                                      r"the run keeps epoch \d+", output), output[-3000:]
    assert "start every worker again with --resume" in output and "Traceback" not in output


def test_worker_index_counts_a_chief_task_first(monkeypatch):
    cluster = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    for task, index in ((("chief", 0), 0), (("worker", 0), 1), (("worker", 1), 2), (("evaluator", 0), -1)):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": dict(zip(("type", "index"), task))}))
        assert r3d_train.worker_index() == index
    alone = {"cluster": {"worker": ["b:1"]}, "task": {"type": "worker", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(alone))
    assert r3d_train.worker_index() == 0
    monkeypatch.setenv("TF_CONFIG", "{'cluster': }")
    with pytest.raises(ValueError, match="TF_CONFIG is not JSON"):
        r3d_train.worker_index()


def test_mirrored_training_on_one_replica_equals_training_without_a_strategy(synthetic, tmp_path):
    """MirroredStrategy's fit: built in its scope, from the data's shapes (Keras
    would read a batch and reshuffle), validated outside it (its predict gave
    each replica's rows)."""
    config = r3d_train.default_config(**TINY, **synthetic, epochs=1)
    for strategy in ("none", "mirrored"):
        r3d_train.train({**config, "strategy": strategy, "output_dir": str(tmp_path / strategy)})
    for a, b in zip(_weights(tmp_path / "none" / "last.keras"), _weights(tmp_path / "mirrored" / "last.keras")):
        np.testing.assert_array_equal(a, b)
    runs = [json.loads((tmp_path / strategy / "metrics.json").read_text()) for strategy in ("none", "mirrored")]
    assert runs[0]["val_video_top1"] == runs[1]["val_video_top1"]


@pytest.mark.slow  # a minute on 2 shared cores
def test_mirrored_training_on_two_replicas(synthetic, tmp_path):
    """Two logical CPUs stand in for two GPUs."""
    script = textwrap.dedent(f"""
        import sys
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        mirrored = tf.distribute.MirroredStrategy
        tf.distribute.MirroredStrategy = lambda: mirrored(["/cpu:0", "/cpu:1"])  # as it picks all GPUs
        from absl import app
        from keras_r3d import train
        train.define_flags()
        argv = train.expand_recipe(["train"] + sys.argv[1:])
        app.run(lambda args: sys.exit(train.main(args, argv)), argv=argv)
    """)
    command = [*_cli(tmp_path / "run", synthetic, "--strategy=mirrored", epochs=1)]
    command[1:3] = ["-c", script]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "on 2 replica(s)" in done.stderr, done.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"] == 1
    odd = subprocess.run([*command, "--batch_size=5", f"--output_dir={tmp_path / 'odd'}"], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert odd.returncode == 1 and "error: --batch_size 5 must divide by the 2 replicas" in odd.stderr, \
        odd.stderr[-3000:]
    assert not (tmp_path / "odd").exists()


def test_demo_recipe_end_to_end_shortened(tmp_path):
    """The README's main command, shortened: generates the synthetic set,
    trains, evaluates, and reports the time-reversed accuracy."""
    command = [sys.executable, "-m", "keras_r3d.train", "--flagfile=configs/demo.flags",
               f"--synthetic_dir={tmp_path / 'synthetic'}", "--synthetic_videos_per_class=2",
               "--synthetic_size=32", "--size=32", "--epochs=1", "--batch_size=4",
               f"--output_dir={tmp_path / 'run'}"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "synthetic" / "manifest.json").exists()
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["epochs"] == 1 and "val_reversed_video_top1" in summary
    assert "time-reversed val video top-1" in result.stderr
    assert f"val video top-1 {summary['val_video_top1']:.3f} top-5 " in result.stderr  # 8 classes
    best = tmp_path / "run" / "best.keras"
    assert f"Done: best validation video top-1 {summary['val_video_top1']:.3f} (epoch 1) in {best}" in result.stderr
    assert f"Next: python -m keras_r3d.predict --model {best} VIDEO" in result.stderr


def test_recipes_parse_and_name_valid_architectures():
    from absl import flags

    assert r3d_train.list_recipes() == ["demo", "finetune", "jester", "kinetics600", "ucf101"]
    for recipe in r3d_train.list_recipes():
        flag_values = flags.FlagValues()
        r3d_train.define_flags(flag_values)
        flag_values(r3d_train.expand_recipe(["train", f"--recipe={recipe}"]))
        config = r3d_train.config_from_flags(flag_values, [f"--flagfile=configs/{recipe}.flags"])
        assert config["output_dir"] == f"runs/{recipe}"
        assert config["arch"] or config["pretrained"]
    with pytest.raises(SystemExit, match="unknown recipe"):
        r3d_train.expand_recipe(["train", "--recipe=nope"])
    assert (REPO / "configs" / "demo.flags").exists()  # the top-level symlink


def test_the_ucf101_recipe_gives_a_kinetics_checkpoint_ucf101s_frame_rate(tmp_path):
    """The Kinetics contract names no fps: a UCF-101 model fine-tuned from it
    said none, so predict and the exports fed a 60 fps video unresampled to a
    model trained on 25 fps records. The recipe gives the records' rate."""
    import keras_r3d
    from keras_r3d.preprocessing import DATASET_PREPROCESSING

    kinetics = keras_r3d.build("shufflenetv2", width_mult=0.25, num_classes=3, class_names=["x", "y", "z"],
                               preprocessing=DATASET_PREPROCESSING["kinetics"])
    assert kinetics.preprocessing.fps is None
    kinetics.save(tmp_path / "kinetics.keras")
    config = _parse("--recipe=ucf101", f"--pretrained={tmp_path / 'kinetics.keras'}")
    contract = r3d_train.build_model(config, ["a", "b"]).preprocessing
    assert contract.fps == DATASET_PREPROCESSING["ucf101"].fps == 25
    assert contract.channel_order == "BGR"  # the rest of the checkpoint's contract stays


def test_val_records_converted_apart_may_hold_some_of_the_training_classes(tmp_path, monkeypatch):
    """Splits converted apart (train/<class> and val/<class> folders) get
    their own class lists: training stopped on any difference, even val
    lacking a class, which evaluate scores by name. Now only a class the
    model has no output for stops it, named, with the cure."""
    from PIL import Image

    import keras_r3d
    from keras_r3d import evaluate
    from tfrecords_tools.convert import convert

    for split, classes in (("train", ("cat", "dog", "eel")), ("val", ("cat", "eel")), ("val2", ("cat", "fox"))):
        for name in classes:
            for video in ("v1", "v2"):
                (tmp_path / split / name / video).mkdir(parents=True)
                Image.new("RGB", (8, 8), (40 * len(name), 0, 0)).save(tmp_path / split / name / video / "00001.png")
        convert("folders", tmp_path / split, tmp_path / f"{split}_records", val_fraction=float(split != "train"),
                short_side=0, progress=False)
    config = r3d_train.default_config(**TINY, epochs=1, train_data=str(tmp_path / "train_records" / "train-*.tfrecord"),
                                      val_data=str(tmp_path / "val_records" / "val-*.tfrecord"),
                                      output_dir=str(tmp_path / "run"))
    assert r3d_train.train(config)["epochs"] == 1
    # A --model without class names (its outputs are the train classes, in order) scores val by name too.
    nameless = keras_r3d.load(tmp_path / "run" / "last.keras")
    nameless.class_names = None
    nameless.save(tmp_path / "nameless.keras")
    maps, align_labels = [], evaluate.align_labels

    def recorded(*args):
        maps.append(align_labels(*args))
        return maps[-1]

    monkeypatch.setattr(evaluate, "align_labels", recorded)
    model_config = {**config, "arch": None, "version": None, "model": str(tmp_path / "nameless.keras"),
                    "output_dir": str(tmp_path / "run_nameless")}
    assert r3d_train.train(model_config)["epochs"] == 1
    assert [list(label_map) for label_map in maps] == [[0, 2]]  # cat, eel
    config.update(val_data=str(tmp_path / "val2_records" / "val-*.tfrecord"), output_dir=str(tmp_path / "run2"))
    with pytest.raises(ValueError, match=r"--val_data has classes that --train_data has not, .*: fox; convert both "
                                         r"splits in one tfrecords_tools.convert run"):
        r3d_train.train(config)


def test_contract_flags_override_the_normalization():
    from absl import flags

    import keras_r3d

    flag_values = flags.FlagValues()
    r3d_train.define_flags(flag_values)
    flag_values(["train", "--synthetic_dir=unused", "--arch=shufflenetv2", "--size=32", "--value_range=0,1",
                 "--mean=0.45,0.45,0.45",
                 "--std=0.225,0.225,0.225"])
    config = r3d_train.config_from_flags(flag_values, [])
    model = r3d_train.build_model(config, ["a", "b"])
    assert model.preprocessing == keras_r3d.Preprocessing(size=32, value_range=(0.0, 1.0), mean=(0.45,) * 3,
                                                          std=(0.225,) * 3)
    with pytest.raises(ValueError, match="mean"):
        r3d_train.build_model({**config, "mean": ["0.5"]}, ["a", "b"])


def test_label_smoothing_reaches_the_compiled_loss():
    import keras

    y = np.eye(4, dtype=np.float32)
    losses = {}
    for smoothing in (0.0, 0.2):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
        model.outputs_probabilities = False
        config = r3d_train.default_config(train_data="x", val_data="y", label_smoothing=smoothing)
        r3d_train.compile_model(model, config, steps_per_epoch=1)
        losses[smoothing] = float(model.loss(y, 30 * y))  # confident and right
    assert losses[0.0] < 1e-6 and losses[0.2] > 1.0, losses


def test_jit_compile_auto_is_off_on_cpu_only_tensorflow(monkeypatch):
    import keras

    from keras_r3d.layers import jit_compile

    assert [jit_compile(v) for v in ("true", "false")] == [True, False]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        assert jit_compile("auto") is bool(gpus)
        monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["a GPU"])
        assert jit_compile("auto") is True


def _parse(*argv):
    from absl import flags

    flag_values = flags.FlagValues()
    r3d_train.define_flags(flag_values)
    full_argv = r3d_train.expand_recipe(["train", *argv])
    flag_values(full_argv)
    return r3d_train.config_from_flags(flag_values, full_argv)


def test_the_command_line_replaces_a_recipes_architecture():
    finetune = _parse("--recipe=jester", "--pretrained=x.keras")
    assert (finetune["pretrained"], finetune["arch"], finetune["groups"]) == ("x.keras", None, None)
    assert finetune["lr_steps"] == [40, 55, 65, 70] and finetune["output_dir"] == "runs/jester"  # the recipe's
    other = _parse("--recipe", "jester", "--arch=mobilenetv2", "--frames=8", "--size=32")  # space form too
    assert (other["arch"], other["groups"], other["width_mult"]) == ("mobilenetv2", None, 0.5)
    assert r3d_train.build_model(other, ["a", "b"]).architecture == {"arch": "mobilenetv2", "width_mult": 0.5,
                                                                     "num_classes": 2}
    assert _parse("--flagfile", "configs/demo.flags")["output_dir"] == "runs/demo"
    # A command-line --arch drops a recipe's --pretrained and --finetune too (ucf101 fine-tunes a checkpoint).
    scratch = _parse("--recipe=ucf101", "--arch=mobilenetv2", "--width_mult=0.2")
    assert (scratch["arch"], scratch["pretrained"], scratch["finetune"]) == ("mobilenetv2", None, "complete")
    assert r3d_train.build_model(scratch, ["a", "b"]).architecture["width_mult"] == 0.2
    with pytest.raises(ValueError, match="--groups does not apply to --arch=mobilenetv2"):
        r3d_train.build_model(_parse("--recipe=jester", "--arch=mobilenetv2", "--groups=3"), ["a", "b"])
    with pytest.raises(ValueError, match="resnet has no dropout"):
        r3d_train.build_model(_parse("--recipe=jester", "--arch=resnet", "--depth=10", "--dropout=0.5"),
                              ["a", "b"])
    with pytest.raises(ValueError, match="--finetune=last_layer applies to --pretrained models only"):
        r3d_train.build_model(_parse("--recipe=jester", "--arch=resnet", "--finetune=last_layer"), ["a", "b"])
    assert r3d_train.build_model({"arch": "resnet", "depth": 10, "finetune": None}, ["a", "b"])  # the API's None
    for flag, kind in (("--lr_steps=10,x", "ints"), ("--mean=a,b,c", "floats")):
        with pytest.raises(ValueError, match=f"{flag.split('=')[0]} takes {kind} separated by commas"):
            _parse("--recipe=jester", flag)
    # From Python, a comma-separated string is a list too.
    assert r3d_train.finish_config({**_parse("--recipe=jester"), "mean": "0.4,0.5,0.6"}, [])["mean"] == [0.4, 0.5, 0.6]


def test_the_command_line_overrides_a_recipe_before_or_after_it_and_unused_flags_are_noted():
    from absl import flags

    assert _parse("--batch_size=64", "--recipe=jester")["batch_size"] == 64
    assert _parse("--recipe=jester", "--batch_size=64")["batch_size"] == 64

    def notes(*argv):
        flag_values = flags.FlagValues()
        r3d_train.define_flags(flag_values)
        argv = r3d_train.expand_recipe(["train", *argv])
        flag_values(argv)
        return r3d_train.ignored_flags(flag_values, argv)

    assert [notes(f"--recipe={recipe}") for recipe in r3d_train.list_recipes()] == [[]] * 5
    assert notes("--recipe=demo", "--lr_schedule=steps", "--momentum=0.5") == [  # demo trains with AdamW
        "--warmup_epochs=1.0 (from the flagfile) is used with --lr_schedule=cosine only: ignored",
        "--momentum=0.5 is used with --optimizer=official_sgd only: ignored"]
    assert notes("--recipe=jester", "--optimizer=adamw", "--momentum=0.5", "--lr_schedule=cosine") == [
        "--lr_steps=40,55,65,70 (from the flagfile) is used with --lr_schedule=steps only: ignored",
        "--momentum=0.5 is used with --optimizer=official_sgd only: ignored"]


def test_data_that_cannot_train_or_validate_is_refused_before_a_run_folder_or_synthetic_set(synthetic, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "val-00000-of-00001.tfrecord").write_bytes(b"")  # every val video skipped at conversion
    labels = json.loads((pathlib.Path(synthetic["train_data"]).parent / "manifest.json").read_text())["labels"]
    (empty / "manifest.json").write_text(json.dumps({"labels": labels, "splits": {"val": {"shards": [
        {"file": "val-00000-of-00001.tfrecord", "num_frames": []}]}}}))
    run = tmp_path / "run"
    for overrides, message in (({"val_data": str(empty / "val-*.tfrecord")}, "--val_data .* holds no videos"),
                               ({"batch_size": 1000}, "training videos make no batch of 1000: pass --batch_size=")):
        config = r3d_train.default_config(**{**TINY, **synthetic, **overrides}, output_dir=str(run))
        with pytest.raises(ValueError, match=message):
            r3d_train.train(config)
        assert not run.exists()
    # A missing model file is named before the data is read (here, too few videos for the batch).
    config = r3d_train.default_config(**{**TINY, **synthetic, "arch": None, "version": None, "batch_size": 1000},
                                      pretrained=str(tmp_path / "missing.pth"), output_dir=str(run))
    with pytest.raises(FileNotFoundError, match="No model file at .*missing.pth$"):
        r3d_train.train(config)
    # As many training videos as --batch_size make one batch.
    from keras_r3d import data as r3d_data

    videos = len(r3d_data.read_manifest(synthetic["train_data"])[1])
    config = r3d_train.default_config(**{**TINY, **synthetic, "batch_size": videos}, output_dir=str(run))
    assert r3d_train.check_data(config) == videos
    # Another run's checkpoints (without its state.json): this run's rotation would delete its own.
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "epoch_0009.keras").write_bytes(b"")
    for resume in (False, True):
        config = r3d_train.default_config(**TINY, **synthetic, output_dir=str(run), resume=resume)
        with pytest.raises(ValueError, match="checkpoints holds checkpoints of another run .*: choose another"):
            r3d_train.train(config)
    # The demo recipe's synthetic set is made only for the splits it gives.
    assert r3d_train.finish_config({**r3d_train.default_config(**synthetic), "synthetic_dir": "s"}, [])[
        "synthetic_dir"] is None
    own_train = r3d_train.finish_config({**r3d_train.default_config(**synthetic), "synthetic_dir": "s",
                                         "val_data": None}, [])
    assert (own_train["synthetic_dir"], own_train["val_data"]) == ("s", "s/val-*.tfrecord")


def test_a_batch_size_that_does_not_divide_by_the_replicas_is_refused_before_a_run_folder(tmp_path, monkeypatch):
    """Each replica takes --batch_size / replicas clips of a step (test_mirrored_training_on_two_replicas
    runs two, slowly): one that does not divide is refused before any data is read."""
    import types

    monkeypatch.setattr(r3d_train, "make_strategy", lambda name: types.SimpleNamespace(num_replicas_in_sync=2))
    run = tmp_path / "run"
    config = r3d_train.default_config(**TINY, train_data=str(tmp_path / "none-*.tfrecord"),
                                      val_data=str(tmp_path / "none-*.tfrecord"), output_dir=str(run))
    with pytest.raises(ValueError, match="--batch_size 5 must divide by the 2 replicas"):
        r3d_train.train({**config, "strategy": "mirrored", "batch_size": 5})
    assert not run.exists()
    with pytest.raises(FileNotFoundError):  # 4 divides: on to reading the data, which is not there
        r3d_train.train({**config, "strategy": "mirrored", "batch_size": 4})


def test_classes_without_training_videos_are_warned_of_before_the_model_is_built(synthetic, tmp_path, monkeypatch,
                                                                                capsys):
    from keras_r3d import data as r3d_data

    classes = r3d_data.label_names(synthetic["train_data"])
    config = {**r3d_train.default_config(**TINY, **synthetic, output_dir=str(tmp_path / "run")), "arch": None}
    for counts, warned in (({name: 3 for name in classes}, False), (None, False),  # None: part of a split
                           ({name: 3 for name in classes[1:]}, True)):
        monkeypatch.setattr(r3d_data, "videos_per_class", lambda pattern: counts)
        with pytest.raises(ValueError, match="give exactly one of --model, --pretrained, --arch"):
            r3d_train.train(config)  # stopped right after the data checks
        err = capsys.readouterr().err
        assert (f"warning: 1 of the 8 classes have no training video: {classes[0]}; the model never learns them"
                in err) == warned, err


def test_the_best_epoch_is_the_most_accurate_and_then_the_surest():
    """A small val set is often all right from epoch 1 on: best.keras was
    then the first, least trained model."""
    best = {"best": 1.0, "best_video_loss": 0.3}
    assert r3d_train.is_new_best({"val_video_top1": 1.0, "val_video_loss": 0.1}, best)
    assert not r3d_train.is_new_best({"val_video_top1": 1.0, "val_video_loss": 0.5}, best)
    assert not r3d_train.is_new_best({"val_video_top1": 0.9, "val_video_loss": 0.01}, best)
    assert r3d_train.is_new_best({"val_video_top1": 0.9, "val_video_loss": 9.0}, {"best": -1.0})  # the first epoch
    # A run of an earlier version recorded no best loss: a tie keeps its best.
    assert not r3d_train.is_new_best({"val_video_top1": 1.0, "val_video_loss": 0.1}, {"best": 1.0})


def test_the_summary_reports_the_best_epoch_not_the_last(tmp_path):
    from keras_r3d.runs import METRIC_COLUMNS

    row = dict.fromkeys(METRIC_COLUMNS)
    history = [{**row, "epoch": epoch, "loss": 1.0 / epoch, "val_clip_top1": top1, "val_video_top1": top1,
                "val_video_top5": 1.0} for epoch, top1 in ((1, 0.25), (2, 0.75), (3, 0.5))]
    run = RunDirectory(tmp_path)
    run.write_metrics({"history": history, "best_epoch": 2, "epoch": 3, "wall_time_s": 12.34})
    summary = json.loads(run.summary_path.read_text())
    assert (summary["best_epoch"], summary["val_video_top1"], summary["val_clip_top1"]) == (2, 0.75, 0.75)
    assert (summary["epochs"], summary["last"]["val_video_top1"], summary["wall_time_s"]) == (3, 0.5, 12.3)


def test_the_contract_takes_the_training_videos_frame_rate_only_where_they_share_one(synthetic, tmp_path,
                                                                                     monkeypatch):
    import collections

    from keras_r3d import data as r3d_data

    class Built(Exception):
        pass

    def stop(pattern, contract, use, rates=None):  # the next step: the model and its contract are made
        raise Built(contract.fps)

    monkeypatch.setattr(r3d_data, "warn_about_frame_rates", stop)
    config = r3d_train.default_config(**TINY, **synthetic, output_dir=str(tmp_path / "run"))
    for counts, fps in (({25.0: 4}, 25.0), ({25.0: 3, 30.0: 1}, None), ({0.0: 4}, None)):  # 0: unknown
        monkeypatch.setattr(r3d_data, "frame_rates", lambda pattern: (collections.Counter(counts), 1, 1))
        with pytest.raises(Built) as built:
            r3d_train.train(config)
        assert built.value.args == (fps,), counts


def test_resume_refuses_changed_settings_other_data_and_damaged_checkpoints(synthetic, tmp_path, capsys,
                                                                            monkeypatch):
    config = r3d_train.default_config(**TINY, **synthetic, epochs=1, lr_schedule="cosine",
                                      output_dir=str(tmp_path / "run"))
    r3d_train.train({**config, "resume": True})
    err = capsys.readouterr().err
    assert f"note: --resume: no run in {tmp_path / 'run'} yet; starting one" in err
    # The records' one frame rate becomes the contract's, to which predict resamples videos.
    assert "note: the training videos run at 12 fps: the model's contract takes that rate" in err
    assert json.loads((tmp_path / "run" / "state.json").read_text())["epoch"] == 1
    import keras_r3d

    assert keras_r3d.load(tmp_path / "run" / "last.keras").preprocessing.fps == 12.0
    for flag, value in (("epochs", 2), ("lr", 0.05), ("batch_size", 2), ("precision", "mixed_bfloat16"),
                        ("arch", "mobilenet"), ("size", 48), ("version", 1.0), ("seed", 7), ("crop", "center"),
                        ("val_clips", 1)):
        with pytest.raises(ValueError, match=f"--{flag}={config[flag]} \\(now --{flag}={value}\\)"):
            r3d_train.train({**config, flag: value, "resume": True})
    # Values as they are typed; lr_steps do not matter under cosine decay.
    with pytest.raises(ValueError, match=r"flags differ from the run's: no --dropout \(now --dropout=0.5\), "
                                         r"--nohflip \(now --hflip\), --nodeterministic \(now --deterministic\)\. "
                                         r"Give"):
        r3d_train.train({**config, "dropout": 0.5, "hflip": True, "deterministic": True, "lr_steps": [5],
                         "resume": True})
    # Validation data may move, with a note.
    moved_val = tmp_path / "moved" / "val-*.tfrecord"
    val_dir = pathlib.Path(config["val_data"]).parent
    moved_val.parent.mkdir()
    for path in [val_dir / "manifest.json", *val_dir.glob(moved_val.name)]:
        shutil.copy(path, moved_val.parent)
    r3d_train.train({**config, "val_data": str(moved_val), "resume": True})
    err = capsys.readouterr().err
    assert (f"note: --resume: --val_data={os.path.realpath(config['val_data'])} (now --val_data={moved_val}): "
            "best.keras is chosen by validation accuracy on either") in err
    assert "all 1 epochs are done; nothing to train" in err
    # A checkpoint compiled on torch crashed in TensorFlow's and JAX's first step.
    state_path = tmp_path / "run" / "state.json"
    state = json.loads(state_path.read_text())
    assert state["backend"] == "tensorflow"
    state_path.write_text(json.dumps({**state, "backend": "torch"}))
    with pytest.raises(ValueError, match="the run trained on KERAS_BACKEND=torch: .* resume it with KERAS_BACKEND=torch"):
        r3d_train.train({**config, "resume": True})
    state_path.write_text(json.dumps(state))
    # Data of other classes is refused before any training.
    from keras_r3d import data as r3d_data

    classes = r3d_data.label_names(config["train_data"])
    with monkeypatch.context() as patch:
        patch.setattr(r3d_data, "label_names", lambda pattern: classes[::-1])
        with pytest.raises(ValueError, match=r"the run's model is for other classes \(8\) than the 8 of --train_data"):
            r3d_train.train({**config, "epochs": 1, "resume": True})
    checkpoint = tmp_path / "run" / "checkpoints" / "epoch_0001.keras"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(ValueError, match="epoch_0001.keras, the checkpoint of epoch 1, is damaged"):
        r3d_train.train({**config, "resume": True})
    # A folder that cannot hold a run is an error before any training, and before the data is read.
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match="--output_dir .*a_file/run: cannot write there"):
        r3d_train.train({**config, "output_dir": str(tmp_path / "a_file" / "run"),
                         "train_data": str(tmp_path / "none-*.tfrecord")})


def test_resume_refuses_data_that_would_move_the_lr_schedule():
    # The compiled schedule places epochs by the run's steps per epoch: with
    # 4 steps instead of 18, --lr_steps=4 took effect in epoch 7.
    state = {}
    for schedule in ("steps", "cosine"):
        config = {"lr_schedule": schedule, "lr_steps": [40], "batch_size": 2}
        r3d_train.check_steps_per_epoch(state, config, 18, resumed=False)
        assert state["steps_per_epoch"] == 18
        with pytest.raises(ValueError, match=f"now makes 4 steps of 2 clips per epoch, but the run's {schedule} "
                                             "schedule counts 18"):
            r3d_train.check_steps_per_epoch(state, config, 4, resumed=True)
        assert state["steps_per_epoch"] == 18
    for config in ({"lr_schedule": "constant", "lr_steps": [40]}, {"lr_schedule": "steps", "lr_steps": []}):
        r3d_train.check_steps_per_epoch(state, {**config, "batch_size": 2}, 4, resumed=True)  # the LR never moves
        assert state["steps_per_epoch"] == 4
    older = {"epoch": 3}  # a run made before the count was recorded: not compared, not given one
    r3d_train.check_steps_per_epoch(older, {"lr_schedule": "steps", "lr_steps": [40], "batch_size": 2}, 4, resumed=True)
    assert "steps_per_epoch" not in older


def test_a_crash_after_the_resume_point_is_repaired_on_resume(synthetic, tmp_path, monkeypatch, capsys):
    config = r3d_train.default_config(**TINY, **synthetic, epochs=1, output_dir=str(tmp_path / "run"))
    run = tmp_path / "run"

    def crash(self, state, best_changed=True):
        raise RuntimeError("killed after state.json")

    with monkeypatch.context() as patch:
        patch.setattr(RunDirectory, "write_derived", crash)
        with pytest.raises(RuntimeError, match="killed"):
            r3d_train.train(config)
    assert (run / "state.json").exists() and not any((run / n).exists() for n in ("last.keras", "best.keras",
                                                                                   "metrics.csv"))
    summary = r3d_train.train({**config, "resume": True})
    assert "nothing to train (last.keras, best.keras and the metrics are up to date)" in capsys.readouterr().err
    checkpoint = (run / "checkpoints" / "epoch_0001.keras").read_bytes()
    assert (run / "last.keras").read_bytes() == checkpoint == (run / "best.keras").read_bytes()
    assert summary["best_epoch"] == 1 and len((run / "metrics.csv").read_text().splitlines()) == 2
    import keras

    assert keras.config.dtype_policy().name == "float32"  # --precision held for its call only


def test_continuing_a_model_needs_the_data_to_have_its_classes(tmp_path):
    import keras_r3d

    path = tmp_path / "ab.keras"
    keras_r3d.SqueezeNet3D(num_classes=2, class_names=["a", "b"], input_shape=(8, 32, 32, 3)).save(path)
    assert r3d_train.build_model({"model": str(path)}, ["a", "b"]).class_names == ["a", "b"]
    for other in (["b", "a"], ["a", "b", "c"]):
        with pytest.raises(ValueError, match="use --pretrained to replace the head"):
            r3d_train.build_model({"model": str(path)}, other)
    # It trains on with its input contract; --fps only tells predict and the exports the records' rate.
    assert r3d_train.build_model({"model": str(path), "fps": 25.0}, ["a", "b"]).preprocessing.fps == 25.0
    with pytest.raises(ValueError, match="and --size, --mean would change its input; --pretrained fine-tunes"):
        r3d_train.build_model({"model": str(path), "size": 48, "mean": [1, 2, 3]}, ["a", "b"])
    # A recipe's contract flags, and its --pretrained (ucf101's), yield to it.
    for recipe in ("jester", "ucf101"):
        continued = _parse(f"--recipe={recipe}", f"--model={path}")
        assert r3d_train.build_model(continued, ["a", "b"]).preprocessing.size == 32, recipe
    # Flags that would not apply are refused, not ignored.
    with pytest.raises(ValueError, match="--width_mult applies to --arch only: --model keeps its architecture"):
        r3d_train.build_model({"model": str(path), "width_mult": 0.5}, ["a", "b"])
    with pytest.raises(ValueError, match="--groups applies to --arch only: --pretrained keeps its architecture"):
        r3d_train.build_model({"pretrained": str(path), "groups": 3}, ["a", "b"])
    with pytest.raises(ValueError, match="--dropout applies to --arch and --pretrained: --model trains on"):
        r3d_train.build_model({"model": str(path), "dropout": 0.5}, ["a", "b"])
    # Its layers keep the precision they were saved in: another --precision would not apply.
    with pytest.raises(ValueError, match=r"computes in float32 and trains on as it is: pass --precision=float32"):
        r3d_train.build_model({"model": str(path), "precision": "mixed_bfloat16"}, ["a", "b"])


def test_training_warns_when_the_records_frame_rate_is_not_the_contracts(synthetic, capsys):
    import keras_r3d
    from keras_r3d import data as r3d_data

    r3d_data.warn_about_frame_rates(synthetic["train_data"], keras_r3d.Preprocessing(fps=12.0), "training")
    assert capsys.readouterr().err == ""  # the synthetic videos are 12 fps
    r3d_data.warn_about_frame_rates(synthetic["train_data"], keras_r3d.Preprocessing(fps=25.0), "training")
    training = capsys.readouterr().err
    assert "the training videos' frame rates (of 14 looked at, in 4 of the 4 shards) are 12 fps: 14, but the " \
        "model's contract says 25 fps" in training and "keras_r3d.train ... --fps R" in training
    # A trained model's evaluation: converting the videos again is the way, not another --fps for training.
    r3d_data.warn_about_frame_rates(synthetic["train_data"], keras_r3d.Preprocessing(fps=25.0), "evaluation")
    evaluation = capsys.readouterr().err
    assert "the evaluation videos' frame rates" in evaluation and "keras_r3d.train" not in evaluation
    assert evaluation.endswith("(python -m tfrecords_tools.convert ... --fps 25).\n")
    r3d_data.warn_about_frame_rates(synthetic["train_data"], keras_r3d.Preprocessing(), "training")
    assert capsys.readouterr().err == ""  # no fps in the contract: frames as decoded


def test_the_frame_rate_warning_samples_shards_across_the_set(tmp_path, capsys):
    """Only the first 16 videos of the first shard were looked at: a mixed-rate
    set whose later shards run at another rate trained without a warning."""
    import tensorflow as tf

    import keras_r3d
    from keras_r3d import data as r3d_data
    from tfrecords_tools import schema

    jpeg = tf.io.encode_jpeg(np.zeros((8, 8, 3), np.uint8)).numpy()
    shards = [[25.0] * 20] + [[25.0] * 2] * 38 + [[29.97] * 2]  # the last shard's videos run at 29.97 fps
    for index, rates in enumerate(shards):
        with tf.io.TFRecordWriter(str(tmp_path / f"train-{index:05d}-of-{len(shards):05d}.tfrecord")) as writer:
            for number, fps in enumerate(rates):
                writer.write(schema.encode_video([jpeg], label_index=0, label_text="a", video_id=f"{index}-{number}",
                                                 fps=fps, height=8, width=8, source="s"))
    r3d_data.warn_about_frame_rates(str(tmp_path / "train-*.tfrecord"), keras_r3d.Preprocessing(fps=25.0), "training")
    # 32 shards spread over the 40, the first 4 videos of each (128 at most): 4 + 31 * 2.
    assert "the training videos' frame rates (of 66 looked at, in 32 of the 40 shards) are 25 fps: 64, " \
        "29.97 fps: 2, but the model's contract says 25 fps" in capsys.readouterr().err
    # Fewer videos asked than shards: one video of as many shards, not none.
    counts, shards_read, _ = r3d_data.frame_rates(str(tmp_path / "train-*.tfrecord"), videos=8)
    assert (sum(counts.values()), shards_read) == (8, 8)


def test_every_epoch_draws_other_clips_and_the_same_epoch_the_same(synthetic, tmp_path):
    # An epoch seed without the epoch would train every epoch on the same windows and crops.
    import keras_r3d

    config = r3d_train.default_config(**TINY, **synthetic, output_dir=str(tmp_path / "run"))
    contract = keras_r3d.Preprocessing(frames=8, size=32)

    def first_batch(epoch):
        clips, _ = next(iter(r3d_train.train_dataset(config, contract, 8, epoch=epoch, batch_size=4)))
        return clips.numpy()

    np.testing.assert_array_equal(first_batch(1), first_batch(1))
    assert not np.array_equal(first_batch(0), first_batch(1))


def test_each_epoch_reseeds_dropout_and_data_by_its_number_also_on_resume(synthetic, tmp_path, monkeypatch):
    # The kill-and-resume equivalence test is slow (skipped in CI); this checks, in one short
    # run and its resume, that every epoch, resumed or not, is seeded by (seed, its own number).
    reseeds, datasets = [], []
    reseed, dataset = r3d_train.reseed_dropout, r3d_train.train_dataset
    monkeypatch.setattr(r3d_train, "reseed_dropout",
                        lambda model, seed, epoch: (reseeds.append((seed, epoch)), reseed(model, seed, epoch))[1])
    monkeypatch.setattr(r3d_train, "train_dataset",
                        lambda config, *args: (datasets.append(args[2]), dataset(config, *args))[1])
    config = r3d_train.default_config(**TINY, **synthetic, epochs=1,
                                      output_dir=str(tmp_path / "run"))
    r3d_train.train(config)
    assert json.loads((tmp_path / "run" / "state.json").read_text())["steps_per_epoch"] > 0  # checked on resume
    r3d_train.train({**config, "epochs": 2, "resume": True})
    assert reseeds == [(TINY["seed"], 0), (TINY["seed"], 1)] and datasets == [0, 1]
    rows = (tmp_path / "run" / "metrics.csv").read_text().strip().split("\n")[1:]
    # lr_steps=[2]: the schedule goes on from the restored optimizer step: 0.01, then 0.001.
    assert [float(r.split(",")[1]) for r in rows] == pytest.approx([0.01, 0.001])


def test_finetune_preprocessing_dict_changes_only_the_fields_it_names():
    import keras_r3d

    source = keras_r3d.ShuffleNetV2_3D(0.25, num_classes=3, input_shape=(8, 32, 32, 3), preprocessing="kinetics")
    tuned = keras_r3d.finetune(source, ["a", "b"], preprocessing={"size": 48})
    assert tuned.input_shape == (None, 8, 48, 48, 3)
    assert tuned.preprocessing == source.preprocessing.replace(size=48)  # BGR and the rest kept
    jester = keras_r3d.ShuffleNetV2_3D(0.25, num_classes=3, input_shape=(8, 32, 32, 3), preprocessing="jester")
    tuned = keras_r3d.finetune(jester, ["a", "b"], preprocessing={"frames": 16})
    assert (tuned.preprocessing.temporal_downsample, tuned.preprocessing.fps, tuned.input_shape[1]) == (2, 12.0, 16)
    with pytest.raises(ValueError, match="Unknown preprocessing keys"):
        keras_r3d.finetune(jester, ["a", "b"], preprocessing={"sizes": 48})


def test_videos_shorter_than_a_clip_are_warned_of(synthetic, capsys):
    import keras_r3d
    from keras_r3d import data as r3d_data

    r3d_data.warn_about_short_videos(synthetic["train_data"], keras_r3d.Preprocessing(frames=8), "training")
    assert capsys.readouterr().err == ""  # the synthetic videos have 8 frames
    r3d_data.warn_about_short_videos(synthetic["train_data"], keras_r3d.Preprocessing(frames=16), "training")
    videos = len(r3d_data.read_manifest(synthetic["train_data"])[1])
    assert (f"warning: {videos} of the {videos} training videos have fewer frames than a clip's 16 (the shortest 8): "
            "their clips repeat frames to fill it; python -m tfrecords_tools.convert ... --min_frames 16 leaves "
            "them out") in capsys.readouterr().err
