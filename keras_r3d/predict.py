"""Classify videos and frame folders with a keras_r3d model.

    python -m keras_r3d.predict --model model.keras [--json] [--clips N|0] [--top_k 5] PATH...

The official evaluation protocol: frames resampled to the model's fps (when the
source's is known), the shorter side scaled to the model size (PIL bilinear),
a center crop, and the temporal center window; `--clips N` averages the
softmax of N evenly spaced windows instead, and `--clips 0` of every
non-overlapping window (the test protocol of `evaluate --clips 0`).
"""
import json
import pathlib
import sys

import numpy as np

from keras_r3d.evaluate import class_scores
from keras_r3d.preprocessing import checked_fps, preprocess
from keras_r3d.video import VideoError, read_video, resample_indices


def window_indices(num_frames, frames, downsample, clips=1):
    """Frame indices of `clips` windows of `frames * downsample` frames.

    One clip is the official TemporalCenterCrop; several are evenly spaced;
    0 is every non-overlapping window (`data.window_count`'s, the test
    protocol). Short videos are loop-padded, as in the official code.
    """
    if clips < 0:
        raise ValueError(f"clips must be >= 0, got {clips}")
    span = frames * downsample
    if clips == 0:
        begins = range(0, max(num_frames - 1, 1), span)
    elif clips == 1:
        begins = [max(0, num_frames // 2 - span // 2)]
    else:
        begins = np.linspace(0, max(0, num_frames - span), clips).round().astype(int)
    windows = []
    for begin in begins:
        available = np.arange(begin, min(begin + span, num_frames))
        padded = np.resize(available, span)  # cyclic repetition
        windows.append(padded[::downsample])
    return np.stack(windows)


def scale_center_crop(frame, size):
    """Official Scale(size) (shorter side, PIL bilinear) then CenterCrop(size)
    of one uint8 (H, W, 3) frame."""
    from PIL import Image

    height, width = frame.shape[:2]
    if width < height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    if (new_w, new_h) != (width, height):
        frame = np.asarray(Image.fromarray(frame).resize((new_w, new_h), Image.BILINEAR))
    return frame[top : top + size, left : left + size]


def read_cropped(path, contract):
    """A video's or frame folder's frames, each scaled and center-cropped to the
    model size as it is decoded (so never held at full size), and its fps:
    `clips_from_frames` takes them as they are."""
    return read_video(path, frame_transform=lambda frame: scale_center_crop(frame, contract.size))


def clips_from_frames(frames, contract, fps=None, clips=1):
    """uint8 (N, H, W, 3) RGB frames -> uint8 (clips, T, S, S, 3) model windows."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise VideoError(f"expected frames of shape (T, H, W, 3), got {frames.shape}")
    if frames.dtype != np.uint8:
        raise VideoError(f"expected uint8 RGB frames (0..255, as decoded), got {frames.dtype}")
    frames = frames[resample_indices(len(frames), fps, contract.fps)]
    indices = window_indices(len(frames), contract.frames, contract.temporal_downsample, clips)
    cropped = {i: scale_center_crop(frames[i], contract.size) for i in np.unique(indices)}
    return np.stack([[cropped[i] for i in window] for window in indices])


def classify(model, path_or_frames, top_k=5, clips=1, fps=None):
    """Classifies one video, frame folder, or uint8 `(T, H, W, 3)` RGB array.

    Args:
        fps: the frame rate of an array's frames, to resample them to the
            model's as a video file's are (None: taken as they are).
    Returns:
        `{"top": [{"label": str, "prob": float}, ...], "windows": int}` with
        the `top_k` most likely classes by the averaged window softmax, and a
        "note" where the video is shorter than one window.
    """
    from keras_r3d.saving import ExportedModel, load_for_inference

    if isinstance(model, (str, pathlib.Path)):
        model = load_for_inference(model)
    if not getattr(model, "class_names", None):
        raise ValueError("classify needs a keras_r3d classifier: this model has no class names (no head, "
                         "include_top=False, or not a keras_r3d model)")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ValueError(f"top_k must be a positive int, got {top_k!r}")
    fps = checked_fps(fps)
    contract = model.preprocessing
    if isinstance(path_or_frames, (str, pathlib.Path)):
        if fps is not None:
            raise ValueError("fps is for frames given as an array: a file's frame rate is read from it")
        frames, fps = read_cropped(path_or_frames, contract)
    else:
        frames = path_or_frames
    windows = clips_from_frames(frames, contract, fps, clips)
    outputs = model.predict_on_batch(windows if isinstance(model, ExportedModel) else preprocess(windows, contract))
    probs = class_scores(model, outputs).mean(axis=0)
    best = np.argsort(-probs)[:top_k]
    result = {"top": [{"label": model.class_names[i], "prob": float(probs[i])} for i in best],
              "windows": len(windows)}
    count = len(resample_indices(len(frames), fps, contract.fps))
    span = contract.frames * contract.temporal_downsample
    if count < span:
        rate = f" at {contract.fps:g} fps" if fps and contract.fps else ""
        result["note"] = (f"{count} frames{rate}, fewer than the {span} of one window: "
                          "the window repeats them (loop padding, as the official code pads)")
    return result


def main(argv):
    from absl import flags

    from keras_r3d.saving import load_for_inference

    f = flags.FLAGS
    paths = argv[1:]
    if not paths:
        print("error: give one or more video files or frame folders", file=sys.stderr)
        return 2
    try:
        model = load_for_inference(f.model, f.threads)
    except (ValueError, OSError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    failed = False
    for path in paths:
        try:
            result = {"path": path, **classify(model, path, top_k=f.top_k, clips=f.clips)}
        except (VideoError, OSError) as error:
            result, failed = {"path": path, "error": str(error)}, True
        if f.json:
            print(json.dumps(result), flush=True)
        elif "error" in result:
            print(f"{path}\n  error: {result['error']}", flush=True)
        else:
            lines = [f"  {c['prob']:7.2%}  {c['label']}" for c in result["top"]]
            lines += [f"  note: {result['note']}"] if "note" in result else []
            print(f"{path}  ({result['windows']} window{'s' * (result['windows'] > 1)})\n"
                  + "\n".join(lines), flush=True)
    return 1 if failed else 0


def _define_flags():
    from absl import flags

    flags.DEFINE_string("model", None, "A .keras model, an official .pth, or an artifact of "
                        "keras_r3d.export (.tflite, .onnx, .engine, SavedModel folder).", required=True)
    flags.DEFINE_integer("threads", None, "CPU threads of an exported model's runtime (default: its own).",
                         lower_bound=1)
    flags.DEFINE_bool("json", False, "One JSON object per input on stdout.")
    flags.DEFINE_integer("clips", 1, "Windows averaged per video (1: the center window; 0: every "
                         "non-overlapping window, as evaluate --clips 0).", lower_bound=0)
    flags.DEFINE_integer("top_k", 5, "Classes reported per video.", lower_bound=1)


if __name__ == "__main__":
    from absl import app

    _define_flags()
    from keras_r3d.interrupts import exit_code
    from keras_r3d.text import plain_warnings

    plain_warnings()
    app.run(lambda argv: sys.exit(exit_code(main, argv)))
