#!/usr/bin/env python3
"""Time and run a keras_r3d export on a device: a Jetson board, a desktop GPU
box, or any Linux machine. Needs numpy, the runtime of the artifact (LiteRT /
tflite-runtime, onnxruntime, OpenVINO, or TensorRT + pycuda) and, to decode video,
OpenCV or PyAV (+ Pillow). No TensorFlow, no keras_r3d: copy this file and
keras_r3d/runtimes.py into one folder. Python 3.6+ (JetPack 4.6).

    python3 run_on_device.py model_int8.tflite --benchmark --threads 2
    python3 run_on_device.py model.engine --benchmark --batch_sizes 1,8
    python3 run_on_device.py model.onnx clip.mp4 frames_folder/ --top_k 3
    python3 run_on_device.py model_openvino.onnx --benchmark --threads 2   # OpenVINO
    python3 run_on_device.py model.onnx --stream 0            # camera 0 (OpenCV)
    python3 run_on_device.py model.onnx --stream video.mp4 --every 4

The preprocessing contract (clip length, temporal downsampling, crop size,
frame rate) and the class names come from the artifact's metadata; the
normalization itself is inside the exported graph.
"""
import argparse
import collections
import importlib.util
import json
import math
import os
import re
import sys
import time

import numpy as np

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mkv", ".mov")  # as keras_r3d.video's


def _import_runtimes():
    """keras_r3d/runtimes.py, standalone: beside this file, or in the repository."""
    here = os.path.dirname(os.path.abspath(__file__))
    for path in (os.path.join(here, "runtimes.py"),
                 os.path.join(here, os.pardir, "keras_r3d", "runtimes.py")):
        if os.path.isfile(path):
            spec = importlib.util.spec_from_file_location("keras_r3d_runtimes", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    sys.exit("error: runtimes.py not found; copy keras_r3d/runtimes.py next to this script")


runtimes = _import_runtimes()


# ---------------------------------------------------------------- decoding

def _cv2():
    # FFmpeg's own log lines ("moov atom not found") would interleave with the JSON lines; the errors say
    # it. OpenCV 4.1 (JetPack 4.6) ignores this setting.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    try:
        import cv2
        return cv2
    except ImportError:
        return None


def _frame_names(folder):
    """The frame images of a folder in natural order; hidden files (macOS's ._*) are no frames."""
    return sorted((n for n in os.listdir(folder) if n.lower().endswith(FRAME_SUFFIXES) and not n.startswith(".")),
                  key=_natural_key)


def read_frames(path, size=None):
    """uint8 (T, H, W, 3) RGB frames, each scaled and center-cropped to `size`
    as it is decoded where given, and the fps (None for frame folders), with
    keras_r3d.predict's errors."""
    cv2 = _cv2()
    if os.path.isdir(path):
        names = _frame_names(path)
        if not names:
            videos = sorted(n for n in os.listdir(path) if n.lower().endswith(VIDEO_SUFFIXES))
            folders = sorted(n for n in os.listdir(path)
                             if os.path.isdir(os.path.join(path, n)) and _frame_names(os.path.join(path, n)))
            held = " and ".join("{} ({}{})".format(kind, ", ".join(names[:3]), ", ..." if len(names) > 3 else "")
                                for kind, names in (("videos", videos), ("frame folders", folders)) if names)
            hint = ": it holds {}; pass those".format(held) if held else ""
            raise ValueError("{}: a folder with no {} frames{}".format(path, "/".join(FRAME_SUFFIXES), hint))
        _check_one_sequence(path, names)
        images = ((n, _read_image(os.path.join(path, n), cv2)) for n in names)
        return _collect(path, images, size), None
    if path.lower().endswith(FRAME_SUFFIXES) and os.path.isfile(path):
        raise ValueError("{}: one image, not a video: pass the folder of its frames".format(path))
    if path.lower().endswith(".tfrecord") and os.path.isfile(path):  # PyAV read its JPEGs as one video
        raise ValueError("{}: a TFRecord shard of many videos, not a video: keras_r3d.evaluate --data "
                         "takes a glob of shards".format(path))
    if not os.path.isfile(path):
        raise ValueError("{}: no such file or folder".format(path))
    fps, frames = open_video(path)
    return _collect(path, (("frame {}".format(i), f) for i, f in enumerate(frames)), size), fps


def _check_one_sequence(path, names):
    """keras_r3d.video's check: one numbered sequence per folder (not
    mmaction2's img_/x_/y_ frames), no frame number twice; a gap is warned of."""
    sequences = collections.OrderedDict()
    for name in names:
        match = re.fullmatch(r"(.*?)(\d+)(\D*)", name)
        key = (match.group(1), match.group(3).lower()) if match else (name, "")
        sequences.setdefault(key, []).append((int(match.group(2)) if match else 0, name))
    if len(sequences) > 1:
        kinds = ", ".join("{}N{}: {}".format(prefix, suffix, len(members))
                          for (prefix, suffix), members in sequences.items())
        raise ValueError("{}: frames of {} sequences ({}); keep one per folder".format(path, len(sequences), kinds))
    members = next(iter(sequences.values()))
    pairs = [(a, b, b[0] - a[0]) for a, b in zip(members, members[1:])]
    for before, after, step in pairs:
        if step == 0:
            raise ValueError("{}: {} and {} have the same frame number".format(path, before[1], after[1]))
    usual = min((step for _, _, step in pairs), default=1)
    gaps = [(before[1], after[1]) for before, after, step in pairs if step != usual]
    if gaps:
        more = " and {} more gaps".format(len(gaps) - 1) if len(gaps) > 1 else ""
        print("warning: {}: frames missing from the numbering ({} then {}{}): read as consecutive".format(
            path, gaps[0][0], gaps[0][1], more), file=sys.stderr)


def _collect(path, images, size):
    """Stacks (name, frame) pairs, cropped to `size` where given, into one array
    that doubles as it fills, as keras_r3d.video does (kept frames in a list
    among large per-frame temporaries fragment the heap)."""
    array, count, shape, last = None, 0, None, (None, None)
    for name, image in images:
        if shape and image.shape != shape:
            raise ValueError("{}: frames of different sizes: {} then {} at {}".format(
                path, shape[1::-1], image.shape[1::-1], name))
        shape = image.shape
        if image is not last[0]:  # a frame the timeline repeats is cropped once
            last = (image, scale_center_crop(image, size) if size else image)
        frame = last[1]
        if array is None:
            array = np.empty((64,) + frame.shape, np.uint8)
        elif count == len(array):
            array = np.concatenate([array, np.empty_like(array)])
        array[count] = frame
        count += 1
    if not count:
        raise ValueError("{}: no frames could be decoded".format(path))
    return array[:count]


def open_video(source):
    """(fps or None, an iterator of RGB frames) of a video file, or of a camera
    index (OpenCV only). Decodes with OpenCV, else PyAV."""
    camera = str(source).isdigit()
    if str(source).lower().endswith(runtimes.ARTIFACT_SUFFIXES):
        raise ValueError("{}: a model, not a video: give the model first, then the inputs".format(source))
    if not camera and not os.path.isfile(source):
        raise ValueError("{}: {}".format(source, "a folder: --stream takes a video file or a camera index"
                                         if os.path.isdir(source) else "no such file"))
    cv2 = _cv2()
    # OpenCV turns a phone video upright from 4.5 on (CAP_PROP_ORIENTATION_AUTO), PyAV from 14.1
    # (VideoFrame.rotation; Python 3.6 builds 10 at most). Older OpenCV (JetPack 4.6 ships 4.1)
    # does not, so files go to a PyAV that turns them where one is installed.
    cv2_turns = cv2 is not None and hasattr(cv2, "CAP_PROP_ORIENTATION_AUTO")
    pyav_turns = _pyav_turns()
    if not camera and not (cv2_turns or pyav_turns):
        _warn_once("neither this OpenCV (4.5 or later turns videos) nor PyAV (14.1 or later) reads a "
                   "phone video's rotation: such a video is read as stored, not upright")
    if cv2 is not None and (camera or cv2_turns or not pyav_turns):
        if not camera and int(cv2.__version__.split(".")[0]) < 4:
            _warn_once("OpenCV {} gives no frame time stamps: a variable-frame-rate video is read as "
                       "evenly spaced frames (OpenCV 4.1 or later reads its time line)".format(cv2.__version__))
        capture = cv2.VideoCapture(int(source) if camera else _opencv_path(source))
        if not capture.isOpened():
            raise ValueError("{}: cannot open{}".format(source, "" if camera else ": " + _unreadable(source, "OpenCV")))
        fps = capture.get(cv2.CAP_PROP_FPS) or None
        if camera:
            return fps, (image for image, _ in _capture_frames(source, capture, cv2, 0))
        # Matroska/WebM count no frames: OpenCV's estimate from the duration is no header count.
        matroska = source.lower().endswith((".mkv", ".webm"))
        declared = 0 if matroska else int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        return fps, _on_time_line(_capture_frames(source, capture, cv2, declared), fps)
    if camera:
        raise ValueError("a camera needs OpenCV (pip install opencv-python-headless)")
    if not _has_pyav():
        raise ValueError("{}: decoding a video needs OpenCV or PyAV (pip install opencv-python-headless, "
                         "or av)".format(source))
    import av
    try:
        container = av.open(source)
    except av.error.InvalidDataError:
        raise ValueError("{}: cannot open: {}".format(source, _unreadable(source, "FFmpeg")))
    except (OSError, av.error.FFmpegError) as error:
        raise ValueError("{}: cannot open ({})".format(source, error))
    if not container.streams.video:
        container.close()
        raise ValueError("{}: no video stream".format(source))
    stream = container.streams.video[0]
    fps = float(stream.average_rate) if stream.average_rate else None
    return fps, _on_time_line(_pyav_frames(source, container, stream, stream.frames), fps)


def _unreadable(path, decoder):
    """Why a video file that `decoder` cannot open is so, as keras_r3d.video says it."""
    if not os.access(path, os.R_OK):
        return "no permission to read it"
    if os.path.getsize(path) == 0:
        return "an empty file"
    return "no video {} can read: a file cut short (an unfinished copy, download or recording) or not a video{}".format(
        decoder, ", or one of a format this OpenCV was built without" if decoder == "OpenCV" else "")


def _pyav_frames(source, container, stream, declared):
    import av
    aspect = stream.sample_aspect_ratio  # FFmpeg's guess from the container and codec, once
    decoded = 0
    try:
        for frame in container.decode(stream):
            decoded += 1
            yield _upright_rgb(frame, aspect), frame.time
    except av.error.FFmpegError as error:
        if not decoded:
            raise ValueError("{}: cannot decode ({})".format(source, error))
        _warn_cut(source, "decoding failed after {} frames ({})".format(decoded, error))
        return
    finally:
        container.close()
    _check_count(source, decoded, declared)


def _check_count(source, decoded, declared):
    """keras_r3d.video's check of a file cut short: fewer frames than its header declares."""
    if decoded < declared - max(2, declared // 20):
        _warn_cut(source, "decoded {} of the {} frames its header declares".format(decoded, declared))


def _warn_cut(source, problem):
    """keras_r3d.video's warning of a file cut short."""
    print("warning: {}: {}: truncated or corrupt; read as the frames that decoded".format(source, problem),
          file=sys.stderr)


def _on_time_line(timed_frames, fps):
    """keras_r3d.video's timeline: (RGB frame, seconds) pairs of a file as
    frames at `fps` from the first one's time, each slot the frame nearest to
    it (a variable-frame-rate video is resampled by time); a gap is held for
    at most a second on each side (the rest of it is skipped); from the first
    missing or non-increasing time stamp on (AVI's B-frames), one frame each."""
    held, start, filled, timed = None, None, 0, bool(fps)

    def slots(seconds, next_seconds):
        """The slots nearer to the frame at `seconds` than to the next one."""
        nonlocal filled
        if not timed:
            filled += 1
            return 1
        until = seconds + ((seconds + 1.0 / fps if next_seconds is None else next_seconds) - seconds) / 2
        end = int(math.ceil((until - start) * fps - 1e-6))
        count = max(0, min(end - filled, int(math.ceil(fps))))
        filled = max(filled, end)
        return count

    for image, seconds in timed_frames:
        if timed and (seconds is None or (held is not None and seconds <= held[1])):
            timed = False
        if held is not None:
            for _ in range(slots(held[1], seconds)):
                yield held[0]
        if start is None:
            start = seconds
        held = (image, seconds)
    if held is not None:
        for _ in range(slots(held[1], None)):
            yield held[0]


_WARNED = set()


def _warn_once(message):
    if message not in _WARNED:
        _WARNED.add(message)
        print("warning: " + message, file=sys.stderr)


def _opencv_path(path):
    """`path` as OpenCV takes it: Python 3.6 in the C locale holds a non-ASCII
    name as surrogate escapes, on which OpenCV crashed (segmentation fault)."""
    return os.fsencode(path).decode("utf-8", "replace")


def _has_pyav():
    try:
        import av  # noqa: F401
        return True
    except ImportError:
        return False


def _pyav_turns():
    """Whether PyAV is installed and reads a frame's display rotation (14.1 or later)."""
    try:
        import av
    except ImportError:
        return False
    return hasattr(av.VideoFrame, "rotation")


def _square_pixels_size(width, height, aspect):
    """keras_r3d.video's display size of a frame whose pixels are not square
    (sample aspect ratio `aspect`): one side shrunk; None where they are square."""
    if not aspect or aspect == 1:
        return None
    if aspect > 1:
        return width, max(1, int(round(height / aspect)))
    return max(1, int(round(width * aspect))), height


def _upright_rgb(frame, aspect):
    """A PyAV frame as RGB with square pixels, turned by its display rotation
    (phone videos), as keras_r3d.predict reads it."""
    size = _square_pixels_size(frame.width, frame.height, aspect)
    if size is None:
        image = frame.to_ndarray(format="rgb24")
    else:
        image = frame.to_ndarray(format="rgb24", width=size[0], height=size[1], interpolation="AREA")
    turns = int(round(getattr(frame, "rotation", 0) / 90.0)) % 4  # counterclockwise
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def _natural_key(name):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _read_image(path, cv2):
    """A frame as RGB, pixels as stored (no EXIF turn): with Pillow, as
    keras_r3d.predict reads it (a truncated JPEG is an error), else OpenCV
    (which decodes what it can of a truncated JPEG)."""
    try:
        from PIL import Image
    except ImportError:
        Image = None
    if Image is not None:
        try:
            with Image.open(path) as image:
                if image.mode.startswith("I"):  # 16-bit grayscale: the high byte, as predict reads it
                    image = Image.fromarray((np.asarray(image, np.uint32) >> 8).clip(0, 255).astype(np.uint8))
                return np.asarray(image.convert("RGB"))
        except OSError as error:
            raise ValueError("{}: unreadable frame ({})".format(path, error))
    if cv2 is None:
        raise ValueError("{}: reading frames needs Pillow or OpenCV (pip install pillow, or "
                         "opencv-python-headless)".format(path))
    image = cv2.imread(_opencv_path(path), cv2.IMREAD_COLOR | getattr(cv2, "IMREAD_IGNORE_ORIENTATION", 0))
    if image is None:
        raise ValueError("{}: unreadable frame".format(path))
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _capture_aspect(capture, cv2):
    """The sample aspect ratio of the frames `capture` gives, or None where it
    says none: OpenCV leaves pixels as stored, and where it turns a phone video
    upright a quarter turn, their width is the frames' height."""
    denominator = capture.get(getattr(cv2, "CAP_PROP_SAR_DEN", -1))
    aspect = capture.get(cv2.CAP_PROP_SAR_NUM) / denominator if denominator > 0 else None
    turned = (hasattr(cv2, "CAP_PROP_ORIENTATION_AUTO") and capture.get(cv2.CAP_PROP_ORIENTATION_AUTO)
              and int(round(capture.get(cv2.CAP_PROP_ORIENTATION_META) / 90.0)) % 2)
    return 1.0 / aspect if aspect and turned else aspect


def _capture_frames(source, capture, cv2, declared):
    aspect = _capture_aspect(capture, cv2)
    decoded, times = 0, []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            decoded += 1
            size = _square_pixels_size(frame.shape[1], frame.shape[0], aspect)
            if size:
                frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            seconds = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if seconds == 0.0 and len(times) >= 2:  # OpenCV 4.5.4-4.6 at a file's end: one step on
                seconds = 2 * times[-1] - times[-2]
            times = times[-1:] + [seconds]
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), seconds
    finally:
        capture.release()
    _check_count(source, decoded, declared)


def scale_center_crop(frame, size):
    """Shorter side scaled to `size` (bilinear), then the center square, as
    the official evaluation (Scale + CenterCrop)."""
    height, width = frame.shape[:2]
    if width < height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    if (new_w, new_h) != (width, height):
        try:  # Pillow's bilinear, as keras_r3d.predict and the official code scale
            from PIL import Image
            frame = np.asarray(Image.fromarray(frame).resize((new_w, new_h), Image.BILINEAR))
        except ImportError:  # OpenCV's linear resize aliases when it shrinks; its area resize is closer
            cv2 = _cv2()
            if cv2 is None:
                raise ValueError("scaling frames needs Pillow or OpenCV (pip install pillow)")
            frame = cv2.resize(frame, (new_w, new_h),
                               interpolation=cv2.INTER_AREA if new_w < width else cv2.INTER_LINEAR)
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    return frame[top:top + size, left:left + size]


def center_clip(frames, fps, contract):
    """The official center window: `frames * temporal_downsample` frames around
    the middle (loop-padded), every `temporal_downsample`-th kept, each frame
    scaled and center-cropped. Frames are first resampled to the model's fps.

    Returns the clip, and a note where the frames are fewer than one window (else None)."""
    target = contract.get("fps")
    if fps and target and abs(fps - target) > 1e-3:
        count = max(1, int(len(frames) * target / fps))
        frames = frames[np.minimum(np.round(np.arange(count) * fps / target).astype(int),
                                   len(frames) - 1)]
    span = contract["frames"] * contract["temporal_downsample"]
    note = None
    if len(frames) < span:
        note = ("{} frames{}, fewer than the {} of one window: the window repeats them (loop padding, "
                "as the official code pads)").format(len(frames), " at {:g} fps".format(target)
                                                       if fps and target else "", span)
    begin = max(0, len(frames) // 2 - span // 2)
    window = np.resize(np.arange(begin, min(begin + span, len(frames))), span)
    window = window[::contract["temporal_downsample"]]
    return np.stack([scale_center_crop(frames[i], contract["size"]) for i in window]), note


def softmax(logits):
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def top_k(outputs, labels, k, probabilities=False):
    """The k best classes of one clip's outputs: logits, or already
    probabilities for a model with a softmax head (metadata output kind)."""
    outputs = np.asarray(outputs, np.float64)
    probs = outputs if probabilities else softmax(outputs)
    best = np.argsort(-probs)[:k]
    return [{"label": labels[i] if i < len(labels) else str(i), "prob": float(probs[i])} for i in best]


# ---------------------------------------------------------------- modes

def benchmark(runtime, batch_sizes, warmup, iterations):
    """p50/p99 latency and clips/s (batch / p50) per batch size, on seeded input."""
    rng = np.random.RandomState(0)
    rows = []
    for batch in batch_sizes:
        shape = (batch,) + tuple(runtime.input_shape[1:])
        if runtime.input_dtype == np.uint8:
            x = rng.randint(0, 256, shape).astype(np.uint8)
        else:
            x = rng.standard_normal(shape).astype(runtime.input_dtype)
        for _ in range(warmup):
            runtime(x)
        times = []
        for _ in range(iterations):
            start = time.perf_counter()
            runtime(x)
            times.append(time.perf_counter() - start)
        p50, p99 = np.percentile(times, 50), np.percentile(times, 99)
        rows.append({"batch_size": batch, "p50_ms": 1e3 * p50, "p99_ms": 1e3 * p99,
                     "clips_per_s": batch / p50, "iterations": iterations})
    return rows


def _contract(runtime):
    metadata = runtime.metadata
    if not metadata:
        if runtime.name == "tensorrt":  # built by trtexec under another name than model.engine
            sys.exit("error: {}: no {} beside it; copy the model.json that export --tftrt wrote there, "
                     "under that name".format(runtime.path, runtimes.metadata_sidecar(runtime.path)))
        sys.exit("error: {} carries no keras_r3d metadata; re-export it".format(runtime.path))
    if not metadata["input"]["normalized_in_graph"]:
        sys.exit("error: {} was exported with --raw_input (it expects normalized input); "
                 "re-export it without --raw_input to classify frames".format(runtime.path))
    probabilities = metadata["output"].get("kind") == "probabilities"
    return metadata["preprocessing"], metadata["class_names"], probabilities


def classify(runtime, paths, k):
    """One result per path, as each is classified (an error does not stop the others)."""
    contract, labels, probabilities = _contract(runtime)
    for path in paths:
        try:
            frames, fps = read_frames(path, contract["size"])
            clip, note = center_clip(frames, fps, contract)
            result = {"path": path, "top": top_k(runtime(clip[None])[0], labels, k, probabilities)}
            yield dict(result, note=note) if note else result
        except (ValueError, OSError) as error:
            yield {"path": path, "error": str(error)}


def stream(runtime, source, every, k):
    """Sliding window over a video file or camera: classifies the latest
    `frames * temporal_downsample` frames, resampled to the model's fps as
    `center_clip` resamples, at least `every` source frames apart: at the
    first frame that the resampling keeps once `every` have passed."""
    contract, labels, probabilities = _contract(runtime)
    span = contract["frames"] * contract["temporal_downsample"]
    try:
        fps, frames = open_video(source)
    except ValueError as error:
        sys.exit("error: {}".format(error))
    target = contract.get("fps")
    ratio = fps / target if fps and target else 1.0  # source frames per model frame
    window = collections.deque(maxlen=span)
    kept, last, index = 0, -every, -1  # model frames so far; the source frame last classified
    for index, frame in enumerate(frames):
        copies = 0  # model frame j is source frame round(j * ratio)
        while round(kept * ratio) <= index:
            kept, copies = kept + 1, copies + 1
        if not copies:
            continue
        window.extend([scale_center_crop(frame, contract["size"])] * copies)
        if len(window) == span and index - last >= every:
            last = index
            clip = np.stack(list(window)[::contract["temporal_downsample"]])
            start = time.perf_counter()
            logits = runtime(clip[None])[0]
            latency = 1e3 * (time.perf_counter() - start)
            best = top_k(logits, labels, k, probabilities)
            print(json.dumps({"frame": index, "latency_ms": round(latency, 2), "top": best}),
                  flush=True)
    if len(window) < span:
        needed = "{} frames".format(span) + (" at {:g} fps ({:.1f} s)".format(target, span / target)
                                             if target else "")
        print(json.dumps({"source": str(source), "frames": index + 1,
                          "error": "shorter than one window: {} needed; without --stream its frames are "
                                   "repeated to fill one".format(needed)}), flush=True)
        return False
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help=".tflite, .onnx or .engine file (or SavedModel folder)")
    parser.add_argument("inputs", nargs="*", help="videos or frame folders to classify")
    parser.add_argument("--benchmark", action="store_true", help="time batch sizes on seeded input")
    parser.add_argument("--batch_sizes", default="1,8")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (TFLite, onnxruntime, OpenVINO)")
    parser.add_argument("--no_spin", action="store_true", help="onnxruntime: threads wait without "
                        "spinning, OpenVINO: threads not pinned to cores (for cores shared with other "
                        "busy processes, e.g. a camera pipeline)")
    parser.add_argument("--onnx_runtime", choices=runtimes.ONNX_RUNTIMES, default=None,
                        help="what runs an .onnx file (default: OpenVINO for the file of export "
                        "--openvino where it is installed, else onnxruntime)")
    parser.add_argument("--stream", default=None, help="video file or camera index for a sliding window")
    parser.add_argument("--every", type=int, default=4, help="--stream: classify every N source frames (or the "
                        "next one kept at the model's frame rate)")
    parser.add_argument("--top_k", type=int, default=5)
    # Options may come between the model and the inputs: argparse leaves the
    # inputs after them over (Python 3.6 has no parse_intermixed_args).
    args, rest = parser.parse_known_args(argv)
    unknown = [arg for arg in rest if arg.startswith("-")]
    if unknown:
        parser.error("unrecognized arguments: {}".format(" ".join(unknown)))
    args.inputs += rest
    if not (args.benchmark or args.inputs or args.stream):
        parser.error("give videos/frame folders to classify, --benchmark, or --stream")
    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        parser.error("--batch_sizes takes integers separated by commas, got {!r}".format(args.batch_sizes))
    if min(batch_sizes) < 1 or args.iterations < 1 or args.every < 1 or args.top_k < 1 or \
            (args.threads is not None and args.threads < 1):
        parser.error("batch sizes, --iterations, --every, --top_k and --threads must be >= 1")

    try:
        runtime = runtimes.load_runtime(args.model, num_threads=args.threads, spin=not args.no_spin,
                                        onnx_runtime=args.onnx_runtime)
    except (ValueError, OSError, ImportError) as error:  # OSError: a missing file too
        parser.exit(2, "error: {}\n".format(error))
    header = {"model": args.model, "runtime": runtime.name, "input": runtime.input_dtype.name,
              "input_shape": list(runtime.input_shape)}
    if runtime.notes:
        header["notes"] = runtime.notes
    print(json.dumps(header), flush=True)
    if args.benchmark:
        for row in benchmark(runtime, batch_sizes, args.warmup, args.iterations):
            print(json.dumps(row), flush=True)
    failed = False
    for result in classify(runtime, args.inputs, args.top_k) if args.inputs else ():
        failed = failed or "error" in result
        print(json.dumps(result), flush=True)
    if args.stream and not stream(runtime, args.stream, args.every, args.top_k):
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the way to stop --stream; its capture is released on the way out
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
