"""The files of a training run: checkpoints, state, metrics, plot, TensorBoard."""
import csv
import io
import json
import pathlib
import zipfile

import numpy as np

from keras_r3d.files import copy_atomic, probe_writable, save_model_atomic, savefig_atomic, write_atomic

# The models a run folder holds (evaluate names its results after the folder for them).
BEST_MODEL, LAST_MODEL = "best.keras", "last.keras"
METRIC_COLUMNS = ("epoch", "learning_rate", "loss", "train_clip_top1", "val_clip_top1", "val_clip_top5",
                  "val_video_top1", "val_video_top5", "val_video_loss", "val_reversed_video_top1", "epoch_time_s",
                  "train_clips_per_s")


class RunDirectory:
    """The files of one run, written atomically."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.state_path = self.path / "state.json"
        self.summary_path = self.path / "metrics.json"
        self.metrics_csv, self.accuracy_png = self.path / "metrics.csv", self.path / "accuracy.png"
        self.workers = self.path / "workers"  # multi-worker runs: each worker's files

    def read_state(self):
        if not self.state_path.exists():
            return None
        return json.loads(self.state_path.read_text())

    def check_writable(self, make=True):
        """Makes the folder and writes a probe in it (without `make`, checks
        only that it could be made where it is not there yet): a folder that
        cannot hold the run is an error before any training."""
        probe_writable(self.path, f"--output_dir {self.path}", make=make)

    def load_checkpoint(self, state):
        import keras

        path = self.path / state["checkpoint"]
        try:
            return keras.saving.load_model(path, compile=True)
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            # Keras says "File not found" for a damaged zip too.
            problem = ("is missing" if not path.exists() else "is damaged (not a complete .keras file)"
                       if not zipfile.is_zipfile(path) else f"does not load ({str(error).splitlines()[0][:300]})")
            raise ValueError(f"--resume: {path}, the checkpoint of epoch {state['epoch']}, {problem}; an "
                             f"earlier one in {self.checkpoints}, if any, or last.keras can start a new "
                             "--output_dir with --model") from None

    def write_epoch(self, model, state, keep):
        """The checkpoint, then the resume point (state.json), then the files
        derived from them, which `write_derived` redoes on resume: a crash at
        any point leaves a run that resumes consistently (but for the epoch's
        TensorBoard row, which is appended after)."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        checkpoint = self.checkpoints / f"epoch_{state['epoch']:04d}.keras"
        save_model_atomic(model, checkpoint)
        state["checkpoint"] = str(checkpoint.relative_to(self.path))
        write_atomic(self.state_path, json.dumps(state, indent=1) + "\n")
        self.write_derived(state, best_changed=state["best_epoch"] == state["epoch"])
        for old in sorted(self.checkpoints.glob("epoch_*.keras"))[:-keep]:
            old.unlink()

    def write_derived(self, state, best_changed=True):
        """last.keras, best.keras (while its epoch's checkpoint is kept: the
        rotation runs only after this) and the metrics files, from `state`."""
        copy_atomic(self.path / state["checkpoint"], self.path / LAST_MODEL)
        best = self.checkpoints / f"epoch_{state['best_epoch']:04d}.keras"
        if best_changed and best.exists():
            copy_atomic(best, self.path / BEST_MODEL)
        self.write_metrics(state)

    def write_metrics(self, state):
        history = state["history"]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)
        write_atomic(self.metrics_csv, text.getvalue())
        best = history[state["best_epoch"] - 1]
        summary = {"best_epoch": state["best_epoch"], "val_clip_top1": best["val_clip_top1"],
                   "val_video_top1": best["val_video_top1"], "val_video_top5": best["val_video_top5"],
                   "epochs": state["epoch"], "wall_time_s": round(state["wall_time_s"], 1),
                   "last": history[-1]}
        reversed_rows = [row for row in history if row.get("val_reversed_video_top1") is not None]
        if reversed_rows:  # measured on the last epoch (or every epoch)
            summary["val_reversed_video_top1"] = reversed_rows[-1]["val_reversed_video_top1"]
        write_atomic(self.summary_path, json.dumps(summary, indent=1) + "\n")
        plot_accuracy(history, self.accuracy_png, state["best_epoch"])


def plot_accuracy(history, path, best_epoch=None):
    """Train and validation accuracy and the training loss per epoch, with the
    best epoch marked, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] for row in history]
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if best_epoch:
        axes.axvline(best_epoch, color="gray", linestyle=":", label=f"best (epoch {best_epoch})")
    loss_axes = axes.twinx()
    loss_axes.plot(epochs, [row["loss"] for row in history], color="black", alpha=0.35, label="train loss")
    loss_axes.set_ylabel("train loss")
    loss_axes.set_ylim(bottom=0)
    for key, label in (("train_clip_top1", "train clips"), ("val_clip_top1", "val clips"),
                       ("val_video_top1", "val videos"),
                       ("val_reversed_video_top1", "val videos, time-reversed")):
        values = [row.get(key) for row in history]
        if any(v is not None and v != "" for v in values):
            axes.plot(epochs, [np.nan if v in (None, "") else v for v in values], marker="o",
                      markersize=3, label=label)
    axes.set_xlabel("epoch")
    axes.set_ylabel("top-1 accuracy")
    axes.set_ylim(-0.02, 1.02)
    axes.grid(alpha=0.3)
    handles = [h for a in (axes, loss_axes) for h in a.get_legend_handles_labels()[0]]
    axes.legend(handles=handles, fontsize=8)
    figure.tight_layout()
    savefig_atomic(figure, path)
    plt.close(figure)


class TensorBoardLog:
    """A run's metrics as TensorBoard scalars (written with `tf.summary.write`,
    which needs no tensorboard package): one event file per training session,
    made at its first epoch and flushed after each."""

    def __init__(self, directory):
        self.directory = pathlib.Path(directory)
        self._writer = None

    def write(self, row):
        """Appends the epoch's `row` of metrics (at step `row["epoch"]`)."""
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.directory))
        with self._writer.as_default():
            for key, value in row.items():
                if key != "epoch" and value is not None:
                    tf.summary.write(key, tf.constant(float(value)), step=row["epoch"],
                                     metadata=metadata.SerializeToString())
        self._writer.flush()
