"""Video-level evaluation by the paper's test protocol.

    python -m keras_r3d.evaluate --model best.keras --data "data/val-*.tfrecord"
    python -m keras_r3d.evaluate --model export/model_int8.tflite --data "data/val-*.tfrecord"

Every video is cut into consecutive non-overlapping windows of the model's
`frames * temporal_downsample` frames (the last one loop-padded); the softmax
scores of its windows are averaged, and the video counts as correct at top-k
when its label is among the k best averaged scores. `--clips 1` scores the one
center window per video instead (the official per-epoch validation), and
`--clips N` keeps the N central windows of each video. `--crops 3` scores three
squares per window (both ends and the center of the longer side) and averages
them with the windows. An exported model (`--model` a .tflite, .onnx or .engine
file or a SavedModel folder) is evaluated as a device runs it: uint8 frames into
its runtime, which normalizes them (an int8 file's accuracy). Reports clip-level and
video-level top-1/top-5 and per-class video accuracy, and writes a results
JSON and a confusion-matrix PNG.
"""
import json
import pathlib
import sys

import numpy as np

from keras_r3d.files import probe_writable, savefig_atomic, write_atomic
from keras_r3d.text import first_few, unexpected_arguments

TOP_K = (1, 5)


def predict_clips(model, dataset, *, reverse_time=False, total=None, description="evaluate",
                  predict=None):
    """Softmax scores of every clip of `dataset`.

    Args:
        model: a keras model mapping normalized clips to logits.
        dataset: batches of `(clip, label, video_id)` or `(clip, label)`
            (each clip its own video).
        reverse_time: play every clip backwards (the motion check).
        total: batches, for the progress bar.
        predict: a function of a batch of clips to logits; default
            `model.predict_on_batch`.
    Returns:
        `(scores, labels, video_ids)`: float64 `(N, classes)`, int `(N,)`, and
        a list of N video ids.
    """
    from tqdm import tqdm

    predict = predict or model.predict_on_batch
    scores, labels, video_ids = [], [], []
    for batch in tqdm(dataset.as_numpy_iterator(), total=total, desc=description, unit="batch",
                      leave=False, file=sys.stderr):
        # A copy: tf.data's arrays are views of TensorFlow's buffers, which torch.compile (a
        # model compiled with jit_compile=True on torch) refuses.
        clips, batch_labels = np.array(batch[0]), batch[1]
        if reverse_time:
            clips = clips[:, ::-1]
        scores.append(class_scores(model, predict(clips)))
        labels.append(np.asarray(batch_labels).reshape(-1))
        if len(batch) == 3:
            video_ids += [v.decode() if isinstance(v, bytes) else str(v) for v in batch[2]]
        else:
            video_ids += [f"clip_{len(video_ids) + i:06d}" for i in range(len(clips))]
    if not scores:
        raise ValueError("the evaluation dataset is empty")
    return np.concatenate(scores), np.concatenate(labels).astype(np.int64), video_ids


def class_scores(model, outputs):
    """Softmax probabilities of a batch of `model`'s outputs: its logits, or
    its outputs themselves where its head applies the softmax."""
    outputs = np.asarray(outputs, np.float64)
    return outputs if getattr(model, "outputs_probabilities", False) else softmax(outputs)


def softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def central_windows(video_ids, clips):
    """Indices of at most `clips` central windows of each video (0: all),
    given the windows of a video in temporal order."""
    if clips < 0:
        raise ValueError(f"clips must be >= 0, got {clips!r}")
    groups = {}
    for index, video in enumerate(video_ids):
        groups.setdefault(video, []).append(index)
    keep = []
    for indices in groups.values():
        if clips and len(indices) > clips:
            first = (len(indices) - clips) // 2
            indices = indices[first:first + clips]
        keep += indices
    return np.asarray(sorted(keep), np.int64)


def summarize(scores, labels, video_ids, class_names=None):
    """Clip- and video-level accuracy of per-clip softmax `scores`.

    Scores of clips sharing a video id are averaged. Returns a dict with
    `clip_top1`, `clip_top5`, `video_top1`, `video_top5`, `video_loss` (the
    mean cross-entropy of the averaged scores), `num_clips`,
    `num_videos`, `per_class` (video top-1 per class name, None for classes
    without videos), `confusion` (rows: true class, columns: predicted), and
    `videos` (id, label, prediction, score per video).
    """
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, np.int64)
    num_classes = scores.shape[1]
    if class_names is None:
        class_names = [f"class_{i:03d}" for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} scores per clip")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels outside [0, {num_classes}): {sorted(set(labels.tolist()))[:10]}")
    order, inverse = np.unique(np.asarray(video_ids), return_inverse=True)
    video_scores = np.zeros((len(order), num_classes))
    np.add.at(video_scores, inverse, scores)
    video_scores /= np.bincount(inverse)[:, None]
    video_labels = np.zeros(len(order), np.int64)
    video_labels[inverse] = labels
    if np.any(video_labels[inverse] != labels):
        raise ValueError("clips of one video carry different labels")
    predictions = video_scores.argmax(axis=1)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (video_labels, predictions), 1)
    per_class = {name: (float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else None)
                 for i, name in enumerate(class_names)}
    true_scores = video_scores[np.arange(len(order)), video_labels]
    results = {"num_clips": int(len(labels)), "num_videos": int(len(order)),
               "video_loss": float(-np.log(np.maximum(true_scores, 1e-12)).mean())}
    for k in TOP_K:
        results[f"clip_top{k}"] = top_k_accuracy(scores, labels, k)
        results[f"video_top{k}"] = top_k_accuracy(video_scores, video_labels, k)
    results.update(per_class=per_class, confusion=confusion.tolist(), class_names=list(class_names),
                   videos=[{"id": str(v), "label": class_names[l], "prediction": class_names[p],
                            "score": float(s[p])}
                           for v, l, p, s in zip(order, video_labels, predictions, video_scores)])
    return results


def top_k_accuracy(scores, labels, k):
    """Fraction of rows whose label is among the k highest scores (k is capped
    at the class count)."""
    k = min(k, scores.shape[1])
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(best == labels[:, None], axis=1)))


def align_labels(model_names, data_names, num_outputs):
    """The model output index of each data label index. The same class list
    maps to itself; data classes that are all among the model's map by name.
    Any other pair is an error, not a silently wrong accuracy."""
    if model_names is None or list(model_names) == list(data_names):
        if len(data_names) > num_outputs:
            raise ValueError(f"the data has {len(data_names)} classes but the model only {num_outputs} outputs")
        return np.arange(len(data_names))
    index = {name: i for i, name in enumerate(model_names)}
    missing = [name for name in data_names if name not in index]
    if missing:
        def plain(name):
            return "".join(c for c in str(name).lower() if c.isalnum())

        by_plain = {plain(name): name for name in model_names}
        near = [f"{name} ~ {by_plain[plain(name)]}" for name in missing if plain(name) in by_plain]
        raise ValueError(f"the data's classes {missing[:10]} are not among the model's "
                         f"({first_few(model_names, 10)}): "
                         f"label the records with the model's class names"
                         + (f" (spelled differently there: {first_few(near, 10)})" if near else ""))
    return np.asarray([index[name] for name in data_names])


def evaluate(model, data, *, clips=0, crops=1, batch_size=16, reverse_time=False, class_names=None,
             predict=None):
    """Evaluates `model` on the video TFRecords `data` (a glob).

    Args:
        model: a Keras model of the zoo, or a `saving.ExportedModel`.
        clips: 0 for every non-overlapping window (the paper's test protocol),
            1 for the center window, N for the N central windows per video.
        crops: 1 (the center square) or 3 (both ends and the center).
        reverse_time: play the clips backwards.
        class_names: defaults to the model's.
        predict: as in `predict_clips`.
    Returns:
        The `summarize` dict, plus `clips`, `crops` and `reverse_time`; every
        crop counts as a clip.
    """
    from keras_r3d import data as r3d_data
    from keras_r3d.saving import ExportedModel

    if int(clips) != clips or clips < 0:
        raise ValueError(f"clips must be an integer >= 0, got {clips!r}")
    if crops not in (1, 3):
        raise ValueError(f"crops must be 1 or 3, got {crops!r}")
    exported = isinstance(model, ExportedModel)
    names = class_names or model.class_names
    # Before the pass over the data: a class mismatch is known from the manifest.
    if names is not None:
        num_outputs = len(names)
    else:
        num_outputs = model.num_outputs() if exported else model.outputs[0].shape[-1]
    label_map = align_labels(names, r3d_data.label_names(data), num_outputs)
    contract = model.preprocessing
    if exported:  # the artifact normalizes: the data gives RGB pixel values
        contract = contract.replace(channel_order="RGB", value_range=(0.0, 255.0), mean=(0.0, 0.0, 0.0),
                                    std=(1.0, 1.0, 1.0))
    split = "val" if clips == 1 else "test"
    crop = "three" if crops == 3 else "center"
    # A seed makes the test windows come in order, which `central_windows` needs.
    dataset = r3d_data.make_dataset(data, split, contract, batch_size, shuffle_seed=0, crop=crop,
                                    video_ids=True)
    scores, labels, video_ids = predict_clips(model, dataset, reverse_time=reverse_time,
                                              total=int(dataset.cardinality()),  # from the manifest
                                              predict=predict)
    if clips > 1:  # elements come window by window, each window's crops together
        windows = central_windows(video_ids[::crops], clips)
        keep = (windows[:, None] * crops + np.arange(crops)).reshape(-1)
        scores, labels, video_ids = scores[keep], labels[keep], [video_ids[i] for i in keep]
    labels = label_map[labels]
    results = summarize(scores, labels, video_ids, names)
    results.update(clips=int(clips), crops=int(crops), reverse_time=bool(reverse_time))
    return results


def plot_confusion(confusion, class_names, path, title="Confusion (videos)"):
    """Writes the confusion matrix (rows true, columns predicted) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = np.asarray(confusion)
    n = len(class_names)
    side = min(4 + 0.35 * n, 40)
    figure, axes = plt.subplots(figsize=(side, side))
    axes.imshow(confusion, cmap="Blues")
    axes.set_xticks(range(n), class_names, rotation=90, fontsize=8)
    axes.set_yticks(range(n), class_names, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=9, wrap=True)
    if n <= 30:
        dark = confusion.max() / 2  # white digits on the darker cells
        for (i, j), count in np.ndenumerate(confusion):
            if count:
                axes.text(j, i, str(count), ha="center", va="center", fontsize=7,
                          color="white" if count > dark else "black")
    figure.tight_layout()
    savefig_atomic(figure, path)
    plt.close(figure)


def format_results(results):
    crops = results["crops"]
    windows = f"{results['num_clips'] // crops} windows x {crops} crops; " if crops > 1 else ""
    top5 = len(results["class_names"]) > 5  # else always 1
    lines = [f"{results['num_videos']} videos, {results['num_clips']} clips "
             f"({windows}clips={results['clips'] or 'all'}, reverse_time={results['reverse_time']})",
             f"video top-1 {results['video_top1']:.4f}" + (f"  top-5 {results['video_top5']:.4f}" if top5 else ""),
             f"clip  top-1 {results['clip_top1']:.4f}" + (f"  top-5 {results['clip_top5']:.4f}" if top5 else "")]
    scored = [(name, acc) for name, acc in results["per_class"].items() if acc is not None]
    if scored and len(scored) <= 30:
        lines += ["video top-1 per class:"] + [f"  {name}: {acc:.3f}" for name, acc in scored]
    return "\n".join(lines)


def default_output(model_path):
    """`<model stem>_eval.json`, with the run folder's name first for a run's
    best.keras and last.keras (`runs/a/best.keras` -> `a_best_eval.json`),
    so that the runs' results do not overwrite each other."""
    from keras_r3d.runs import BEST_MODEL, LAST_MODEL

    path = pathlib.Path(model_path).absolute()
    run = f"{path.parent.name}_" if path.name in (BEST_MODEL, LAST_MODEL) and path.parent.name else ""
    return f"{run}{path.stem}_eval.json"


def main(argv):
    from absl import flags

    from keras_r3d import data as r3d_data
    from keras_r3d.saving import load_for_inference

    f = flags.FLAGS
    if len(argv) > 1:
        raise SystemExit(unexpected_arguments(argv[1:]))
    # In the working folder by default, not beside the model (a download folder, perhaps read-only).
    output = pathlib.Path(f.output or default_output(f.model))
    try:
        probe_writable(output.parent, f"--output {output}")
        model = load_for_inference(f.model, f.threads)
        with r3d_data.damaged_records_as_value_errors(f.data):
            r3d_data.warn_about_frame_rates(f.data, model.preprocessing, "evaluation")
            r3d_data.warn_about_short_videos(f.data, model.preprocessing, "evaluation")
            results = evaluate(model, f.data, clips=f.clips, crops=f.crops, batch_size=f.batch_size,
                               reverse_time=f.reverse_time)
    except (ValueError, OSError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    results.update(model=str(f.model), data=str(f.data))
    print(format_results(results))
    confusion_png = output.with_suffix(".png")
    model_path = pathlib.Path(f.model).absolute()
    title = (f"{model_path.parent.name}/{model_path.name}\n{results['num_videos']} videos, video top-1 "
             f"{results['video_top1']:.3f}\nclips={f.clips or 'all'}, crops={f.crops}"
             f"{', time-reversed' if f.reverse_time else ''}")
    try:
        write_atomic(output, json.dumps(results, indent=1) + "\n")
        plot_confusion(results["confusion"], results["class_names"], confusion_png, title=title)
    except OSError as error:
        print(f"error: cannot write the results: {error}", file=sys.stderr)
        return 1
    print(f"Wrote {output} and {confusion_png}", file=sys.stderr)
    return 0


def _define_flags():
    from absl import flags

    flags.DEFINE_string("model", None, "A .keras model, an official .pth, or an artifact of "
                        "keras_r3d.export (.tflite, .onnx, .engine, SavedModel folder).", required=True)
    flags.DEFINE_string("data", None, "Glob of video TFRecords.", required=True)
    flags.DEFINE_integer("clips", 0, "Windows per video: 0 = all (paper), 1 = center, N = N central.",
                         lower_bound=0)
    flags.DEFINE_integer("crops", 1, "Spatial crops per window: 1 (center) or 3 (ends and center).")
    flags.register_validator("crops", lambda crops: crops in (1, 3), "--crops must be 1 or 3")
    flags.DEFINE_integer("batch_size", 16, "Clips per batch.", lower_bound=1)
    flags.DEFINE_bool("reverse_time", False, "Play every clip backwards.")
    flags.DEFINE_integer("threads", None, "CPU threads of an exported model's runtime (default: its own).",
                         lower_bound=1)
    flags.DEFINE_string("output", None, "Results JSON (default <model file stem>_eval.json in the "
                        "working folder, <run folder>_best_eval.json for a run's best.keras); the "
                        "confusion matrix PNG goes beside it.")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    from keras_r3d.interrupts import exit_code
    from keras_r3d.text import plain_warnings

    plain_warnings()
    app.run(lambda argv: sys.exit(exit_code(main, argv)))
