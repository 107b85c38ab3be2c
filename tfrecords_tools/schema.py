"""The TFRecord layout of a video: written and read here, nowhere else.

One `tf.train.SequenceExample` per video. The context holds one fact per key;
the feature list `image/encoded` holds one JPEG per frame, in display order.
The key names match the TF Model Garden video reader.
"""
import fnmatch
import io
import os
import re

import numpy as np

SCHEMA_VERSION = 1
# The file beside a set's shards that lists their labels, videos and frame counts.
MANIFEST = "manifest.json"

LABEL_INDEX = "clip/label/index"
LABEL_TEXT = "clip/label/text"
VIDEO_ID = "video/id"
FPS = "video/fps"
NUM_FRAMES = "video/num_frames"
HEIGHT = "video/height"
WIDTH = "video/width"
SOURCE = "video/source"
VERSION = "schema/version"
IMAGES = "image/encoded"


def encode_video(jpegs, *, label_index, label_text, video_id, fps, height, width, source):
    """Serializes one video (a list of JPEG byte strings) to SequenceExample bytes."""
    import tensorflow as tf

    if not jpegs:
        raise ValueError(f"{video_id}: a video needs at least one frame")
    example = tf.train.SequenceExample()
    context = example.context.feature
    context[LABEL_INDEX].int64_list.value.append(int(label_index))
    context[LABEL_TEXT].bytes_list.value.append(label_text.encode())
    context[VIDEO_ID].bytes_list.value.append(video_id.encode())
    context[FPS].float_list.value.append(float(fps or 0.0))
    context[NUM_FRAMES].int64_list.value.append(len(jpegs))
    context[HEIGHT].int64_list.value.append(int(height))
    context[WIDTH].int64_list.value.append(int(width))
    context[SOURCE].bytes_list.value.append(source.encode())
    context[VERSION].int64_list.value.append(SCHEMA_VERSION)
    frames = example.feature_lists.feature_list[IMAGES].feature
    for jpeg in jpegs:
        frames.add().bytes_list.value.append(jpeg)
    return example.SerializeToString()


def parse_video(serialized):
    """Parses SequenceExample bytes (a scalar tf.string tensor) in TensorFlow.

    Returns a dict: `label_index` int32, `label_text`, `video_id`, `source`
    strings, `fps` float32 (0 when unknown), `num_frames`, `height`, `width`
    int32, and `images`, the `(num_frames,)` JPEG strings. Fails with a clear
    error on another schema version.
    """
    import tensorflow as tf

    context_spec = {
        LABEL_INDEX: tf.io.FixedLenFeature([], tf.int64),
        LABEL_TEXT: tf.io.FixedLenFeature([], tf.string),
        VIDEO_ID: tf.io.FixedLenFeature([], tf.string),
        FPS: tf.io.FixedLenFeature([], tf.float32),
        NUM_FRAMES: tf.io.FixedLenFeature([], tf.int64),
        HEIGHT: tf.io.FixedLenFeature([], tf.int64),
        WIDTH: tf.io.FixedLenFeature([], tf.int64),
        SOURCE: tf.io.FixedLenFeature([], tf.string),
        VERSION: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    }
    sequence_spec = {IMAGES: tf.io.FixedLenSequenceFeature([], tf.string)}
    context, sequence = tf.io.parse_single_sequence_example(serialized, context_spec, sequence_spec)
    check = tf.debugging.assert_equal(
        context[VERSION], tf.constant(SCHEMA_VERSION, tf.int64),
        message=f"keras_r3d video record of another schema version (this reader knows "
                f"schema/version {SCHEMA_VERSION}; -1 means no version): re-convert with "
                f"this version of tfrecords_tools")
    with tf.control_dependencies([check]):
        images = tf.identity(sequence[IMAGES])
    return {
        "label_index": tf.cast(context[LABEL_INDEX], tf.int32),
        "label_text": context[LABEL_TEXT],
        "video_id": context[VIDEO_ID],
        "source": context[SOURCE],
        "fps": context[FPS],
        "num_frames": tf.cast(context[NUM_FRAMES], tf.int32),
        "height": tf.cast(context[HEIGHT], tf.int32),
        "width": tf.cast(context[WIDTH], tf.int32),
        "images": images,
    }


def rounded_fps(video):
    """The frame rate of a parsed video, rounded to 0.01 fps as it is counted
    and shown (0 where unknown: frame folders)."""
    return round(float(video["fps"]), 2)


def glob_shards(pattern):
    """The sorted files that a shard glob names: an existing file as it is (its
    name may hold `[`, `]` or `*`), else the glob's matches, with the folder
    taken literally where the whole pattern matches nothing
    (`data/set [v1]/train-*.tfrecord`)."""
    import tensorflow as tf

    pattern = str(pattern)
    if tf.io.gfile.exists(pattern) and not tf.io.gfile.isdir(pattern):
        return [pattern]
    files = tf.io.gfile.glob(pattern)
    folder, name = os.path.split(pattern)
    if not files and folder and tf.io.gfile.isdir(folder):
        files = [os.path.join(folder, n) for n in tf.io.gfile.listdir(folder) if fnmatch.fnmatchcase(n, name)]
    return sorted(files)


def read_videos(file_pattern):
    """Yields every video of the matching shards as a dict of numpy values.

    Keys: those of `parse_video` (strings decoded, `fps` None when unknown), with
    `frames`, the uint8 `(T, H, W, 3)` RGB frames, in place of `images`.
    For tests and inspection.
    """
    import tensorflow as tf
    from PIL import Image

    files = glob_shards(file_pattern)
    if not files:
        raise FileNotFoundError(f"no files match {file_pattern!r}")
    for serialized in tf.data.TFRecordDataset(files):
        video = {k: v.numpy() for k, v in parse_video(serialized).items()}
        for key in ("label_text", "video_id", "source"):
            video[key] = video[key].decode()
        video["fps"] = float(video["fps"]) or None
        for key in ("label_index", "num_frames", "height", "width"):
            video[key] = int(video[key])
        video["frames"] = np.stack(
            [np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")) for jpeg in video.pop("images")])
        yield video


def error_text(error):
    """The first line of a TensorFlow error reading records, without the
    names of TensorFlow's internal functions and ops."""
    lines = (error.message or "").splitlines()
    if lines and lines[0].startswith("Graph execution error"):  # a traced call: the message follows the stack
        lines = [line for line in lines[1:] if line.strip() and not line.startswith(("Detected at", "  "))]
    line = lines[0] if lines else type(error).__name__
    line = re.sub(r"\{\{function_node [^}]*\}\}|\s*\[Op:\w+\].*$", "", line)
    return line.strip(" '")
