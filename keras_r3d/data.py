"""tf.data input pipeline: video TFRecords to normalized clips, sampled as the
official Efficient-3DCNNs code does it.

    train = make_dataset("data/train-*.tfrecord", "train", model.preprocessing, 16, shuffle_seed=1)
    model.fit(train, validation_data=make_dataset("data/val-*.tfrecord", "val", model.preprocessing, 16))

Temporal sampling, with a window of `frames * temporal_downsample` frames of
which every `temporal_downsample`-th is kept (loop-padded when the video is short):
  train: a random window starting in [0, max(0, n - window - 1)];
  val:   the center window, starting at max(0, n // 2 - window // 2);
  test:  consecutive non-overlapping windows starting at 0, window, 2 * window, ...
         before the last frame (`window_count`), each one element
         `(clip, label, video_id)`, so that scores can be averaged per video
         (`count_clips` gives their number).
Spatial: a square crop of side `int(min(H, W) * scale)` is cut and resized to
the contract's size. `crop="random"` (the official MultiScaleRandomCrop) and
`"corner"` draw the scale from 2^(-k/4), k = 0..4, once per clip; `"center"`
takes the full-height center square, as the official Scale + CenterCrop;
`"three"` (val and test) gives three clips per window: the squares of the
shorter side at both ends and the center of the longer side.
Only the sampled frames are decoded, and only inside the crop window; the
crop is resized bilinearly (antialiased when it shrinks by more than 1.25x),
and whole batches are normalized by `keras_r3d.preprocess`.
"""
import collections
import contextlib
import json
import pathlib
import sys

import numpy as np
import tensorflow as tf

from keras_r3d.preprocessing import as_contract, preprocess
from tfrecords_tools import schema

SPLITS = ("train", "val", "test")
CROPS = ("random", "corner", "center", "three")
SCALES = tuple(2.0 ** (-k / 4) for k in range(5))
CORNERS = ("c", "tl", "tr", "bl", "br")


def _files(file_pattern):
    patterns = [file_pattern] if isinstance(file_pattern, (str, pathlib.Path)) else list(file_pattern)
    shards = ("the data is the shards that tfrecords_tools writes (make them from videos and frame "
              "folders with tfrecords_tools.convert; keras_r3d.predict classifies single ones)")
    for pattern in patterns:
        if pathlib.Path(pattern).is_dir():
            found = sorted(pathlib.Path(pattern).glob("*.tfrecord"))
            if found:  # a glob per split found, so that training is never pointed at val shards
                globs = dict.fromkeys(f"'{pathlib.Path(pattern) / f.name.split('-')[0]}-*.tfrecord'"
                                      if "-" in f.name else f"'{pathlib.Path(pattern)}/*.tfrecord'" for f in found)
                raise ValueError(f"{pattern} is a folder: pass a glob of its shards, e.g. {' or '.join(globs)}")
            raise ValueError(f"{pattern} is a folder without .tfrecord shards: {shards}")
    files = sorted({f for pattern in patterns for f in schema.glob_shards(pattern)})
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {file_pattern!r}{_missing_split_hint(patterns)}")
    others = [f for f in files if not f.endswith(".tfrecord")]
    if others:
        raise ValueError(f"{others[0]} is not a .tfrecord shard: {shards}")
    return files


def make_dataset(file_pattern, split, contract, batch_size, *, shuffle_seed=None, crop=None,
                 hflip=False, cache=None, shuffle_buffer=256, drop_remainder=None, repeat=False,
                 video_ids=None, num_parallel_calls=tf.data.AUTOTUNE):
    """A `tf.data.Dataset` of normalized clips from video TFRecords.

    Args:
        file_pattern: glob (or list of globs) of `tfrecords_tools` shards.
        split: "train", "val" or "test": selects the sampling only (see module doc).
        contract: the model's `Preprocessing` (or its dict, or the model):
            frames, size, temporal_downsample and the normalization.
        batch_size: clips per batch.
        shuffle_seed: seeds the shard order, the shuffle and every random draw,
            for deterministic runs; None draws fresh randomness. The val and test
            splits always keep the file order.
        crop: "random" | "corner" | "center" | "three" (val and test only);
            default "random" for train and "center" otherwise.
        hflip: flip each clip horizontally with probability 0.5 (train only;
            off for gestures, where it swaps left and right).
        cache: None, "memory", or a file path prefix: caches the encoded
            records, so sampling stays random on every epoch.
        shuffle_buffer: videos in the train shuffle buffer.
        drop_remainder: drop the last partial batch; default True for train.
        repeat: repeat the videos forever (each pass reshuffled and resampled);
            then pass `steps_per_epoch` to `fit`.
        video_ids: also yield each clip's video id; default for test only
            (`fit` would take a third element for sample weights).
        num_parallel_calls: parallel parse/decode calls.

    Returns:
        A dataset of `(clip, label)`, or `(clip, label, video_id)` (test, or `video_ids`);
        clip is float32 `(batch, frames, size, size, 3)`, label int32.
    """
    contract = as_contract(contract)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    crop = crop or ("random" if split == "train" else "center")
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if crop == "three" and split == "train":
        raise ValueError("crop='three' is an evaluation mode (val or test), not a training crop")
    if hflip and split != "train":
        raise ValueError("hflip is a training augmentation; it must be off for val and test")
    if cache is not None and not isinstance(cache, (str, pathlib.Path)):
        raise ValueError(f"cache must be None, 'memory' or a path prefix, got {cache!r}")
    video_ids = split == "test" if video_ids is None else video_ids
    deterministic = shuffle_seed is not None or split != "train"  # eval order = file order
    train = split == "train"
    files = _files(file_pattern)

    records = tf.data.Dataset.from_tensor_slices(files)
    if train:
        records = records.shuffle(len(files), seed=shuffle_seed, reshuffle_each_iteration=True)
    records = records.interleave(
        tf.data.TFRecordDataset, cycle_length=min(len(files), 8), block_length=1,
        num_parallel_calls=min(len(files), 8), deterministic=True)
    if cache is not None:
        records = records.cache("" if cache == "memory" else str(cache))
    if repeat:
        records = records.repeat()
    if train:
        records = records.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=shuffle_seed, rerandomize_each_iteration=True)
    videos = tf.data.Dataset.zip((records.map(schema.parse_video, num_parallel_calls=num_parallel_calls,
                                              deterministic=deterministic), seeds))

    window = contract.frames * contract.temporal_downsample
    if split == "test":
        def windows(video, seed):
            count = window_count(video["num_frames"], window)
            starts = tf.data.Dataset.range(tf.cast(count, tf.int64))
            return starts.map(lambda i: (video, tf.cast(i, tf.int32) * window, seed, 1))

        samples = videos.flat_map(windows)
    else:
        def begin(video, seed):
            n = video["num_frames"]
            if train:
                last = tf.maximum(0, n - window - 1)
                start = tf.random.stateless_uniform([], _seed(seed, 0), 0, last + 1, tf.int32)
            else:
                start = tf.maximum(0, n // 2 - window // 2)
            return video, start, seed, 1

        samples = videos.map(begin)
    if crop == "three":  # positions 0, 1, 2 along the longer side
        samples = samples.flat_map(lambda video, start, seed, _: tf.data.Dataset.range(3).map(
            lambda position: (video, start, seed, tf.cast(position, tf.int32))))

    def clip(video, start, seed, position):
        frames = _decode_clip(video, start, seed, contract, crop, hflip, position)
        label = video["label_index"]
        return (frames, label, video["video_id"]) if video_ids else (frames, label)

    clips = samples.map(clip, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
    if not repeat:
        # The clip count from the manifest: the batches' count follows, for fit's steps and
        # progress bar, and a shard holding other videos than it lists is an error.
        try:
            count = count_clips(file_pattern, split, contract, crop)
        except FileNotFoundError:  # shards without their manifest: unknown
            count = None
        if count is not None:
            clips = clips.apply(tf.data.experimental.assert_cardinality(count))
    if drop_remainder is None:
        drop_remainder = train
    if drop_remainder and not repeat:  # else fit would run no step, with only Keras' "ran out of data"
        videos = len(read_manifest(file_pattern)[1])
        if videos < batch_size:
            raise ValueError(f"{file_pattern}: {videos} videos make no batch of {batch_size} (a train split drops "
                             "its last partial batch): pass a smaller batch_size, or drop_remainder=False")
    batches = clips.batch(batch_size, drop_remainder=drop_remainder)
    # Normalized per batch: fewer, larger ops than clip by clip.
    batches = batches.map(lambda clip, *rest: (preprocess(clip, contract), *rest),
                          num_parallel_calls=num_parallel_calls, deterministic=deterministic)
    return batches.prefetch(tf.data.AUTOTUNE)


def window_count(num_frames, window):
    """Test windows of videos of `num_frames` (ints or a tensor): they start at
    0, window, 2 * window, ... before the last frame, as the official
    `range(1, n_frames, step)` (1-based) starts them; at least one."""
    return (tf.maximum(num_frames, 2) - 2) // window + 1


def _seed(seed, stream):
    return tf.stack([seed, tf.constant(stream, tf.int64)])


def frame_indices(num_frames, start, contract):
    """0-based frames of the window at `start`: `frames * temporal_downsample`
    consecutive frames, loop-padded at the end of the video, every
    `temporal_downsample`-th kept (tensors or ints)."""
    window = contract.frames * contract.temporal_downsample
    available = tf.maximum(1, tf.minimum(window, num_frames - start))
    return (start + tf.range(window) % available)[:: contract.temporal_downsample]


def crop_window(height, width, seed, crop, position=1):
    """`[y, x, side, side]` of the square crop (see module doc) for one clip;
    `position` 0, 1 or 2 places a "three" crop at the start, center or end."""
    short = tf.minimum(height, width)
    if crop in ("center", "three"):
        return tf.stack([(height - short) * position // 2, (width - short) * position // 2, short, short])
    k = tf.random.stateless_uniform([], _seed(seed, 1), 0, len(SCALES), tf.int32)
    side = tf.maximum(1, tf.cast(tf.cast(short, tf.float32) * tf.gather(SCALES, k), tf.int32))
    if crop == "random":
        u = tf.random.stateless_uniform([2], _seed(seed, 2))
        y = tf.cast(u[0] * tf.cast(height - side, tf.float32), tf.int32)
        x = tf.cast(u[1] * tf.cast(width - side, tf.float32), tf.int32)
        return tf.stack([y, x, side, side])
    corner = tf.random.stateless_uniform([], _seed(seed, 2), 0, len(CORNERS), tf.int32)
    ys = tf.stack([(height - side) // 2, 0, 0, height - side, height - side])
    xs = tf.stack([(width - side) // 2, 0, width - side, 0, width - side])
    return tf.stack([tf.gather(ys, corner), tf.gather(xs, corner), side, side])


def _decode_clip(video, start, seed, contract, crop, hflip, position):
    indices = frame_indices(video["num_frames"], start, contract)
    window = crop_window(video["height"], video["width"], seed, crop, position)
    # One decode op per sampled frame (a static count): the executor runs them
    # in parallel, and only the crop window is decoded.
    images = tf.gather(video["images"], indices)
    decoded = tf.stack([tf.image.decode_and_crop_jpeg(images[i], window, channels=3)
                        for i in range(contract.frames)])
    size = contract.size
    # Antialiasing (as PIL's bilinear) costs 4x a plain bilinear resize and only
    # matters when shrinking by more than 1.25x (128 -> 112 px differs by < 1 level).
    frames = tf.cond(tf.cast(window[2], tf.float32) > 1.25 * size,
                     lambda: tf.image.resize(decoded, [size, size], "bilinear", antialias=True),
                     lambda: tf.image.resize(decoded, [size, size], "bilinear"))
    if hflip:
        flip = tf.random.stateless_uniform([], _seed(seed, 3)) < 0.5
        frames = tf.cond(flip, lambda: tf.reverse(frames, [2]), lambda: frames)
    return tf.ensure_shape(frames, [contract.frames, size, size, 3])  # float 0..255, not re-quantized


def manifest_shards(manifest):
    """The shards a `manifest.json` (its dict) lists: file name -> its entry."""
    return {shard["file"]: shard for entry in manifest.get("splits", {}).values() for shard in entry["shards"]}


def _manifests(file_pattern):
    """{manifest.json path: (its dict, the names of the matching shards beside
    it, in order)}, each manifest read once."""
    manifests = {}
    for file in _files(file_pattern):
        path = pathlib.Path(file)
        manifest_path = path.parent / schema.MANIFEST
        if manifest_path not in manifests:
            if not manifest_path.exists():
                raise FileNotFoundError(f"{manifest_path}: no manifest beside {path.name}")
            manifests[manifest_path] = (json.loads(manifest_path.read_text()), [])
        manifests[manifest_path][1].append(path.name)
    return manifests


def _missing_split_hint(patterns):
    """Where a pattern names a split (`data/x/val-*.tfrecord`) that the
    conversion beside it did not make: which splits it made, and why."""
    for pattern in patterns:
        path = pathlib.Path(pattern)
        manifest_path = path.parent / schema.MANIFEST
        split = path.name.split("-")[0]
        if "-" not in path.name or not manifest_path.is_file():
            continue
        try:
            made = list(json.loads(manifest_path.read_text()).get("splits", {}))
        except (OSError, ValueError):
            continue
        if made and split not in made:
            folders = " (for --format folders, --val_fraction holds some videos out for val)" if split == "val" else ""
            return f": the conversion in {path.parent} made no {split} split, only {', '.join(made)}{folders}"
    return ""


def read_manifest(file_pattern):
    """The label names and per-video frame counts of the matching shards, from
    the `manifest.json` beside them: `(labels, num_frames)`, num_frames a list
    of the frame counts of every video, shard by shard."""
    labels, num_frames = None, []
    for manifest_path, (manifest, names) in _manifests(file_pattern).items():
        if labels is not None and manifest["labels"] != labels:
            raise ValueError(f"{manifest_path}: other labels than the other shards")
        labels = manifest["labels"]
        shards = manifest_shards(manifest)
        for name in names:
            if name not in shards:
                raise ValueError(f"{manifest_path.parent / name} is not listed in {manifest_path}")
            num_frames += shards[name]["num_frames"]
    return labels, num_frames


def videos_per_class(file_pattern):
    """{label: videos} of the matching shards, from their manifests' counts per
    split, or None where the shards are part of a split (the manifest counts
    labels per split, not per shard)."""
    counts = collections.Counter()
    for manifest, names in _manifests(file_pattern).values():
        matched = set(names)
        for entry in manifest.get("splits", {}).values():
            shards = {shard["file"] for shard in entry["shards"]}
            if shards & matched and not shards <= matched:
                return None
            if shards <= matched:
                counts.update(entry["per_class"])
    return dict(counts)


def count_clips(file_pattern, split, contract, crop=None):
    """Elements `make_dataset(file_pattern, split, contract, crop=crop, ...)`
    yields before batching: one per video for train and val, one per window
    for test, times three for `crop="three"`."""
    contract = as_contract(contract)
    _, num_frames = read_manifest(file_pattern)
    crops = 3 if crop == "three" else 1
    if split == "test":
        window = contract.frames * contract.temporal_downsample
        return crops * int(tf.reduce_sum(window_count(np.asarray(num_frames, np.int64), window)))
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return crops * len(num_frames)


def frame_rates_text(videos_per_rate, listed=4):
    """Frame rates (rate -> videos; 0 where unknown, as for frame folders) in
    words: each with its count, or the min, median and max of the videos'
    rates where more than `listed` differ; then the videos without a rate."""
    rated = {rate: count for rate, count in videos_per_rate.items() if rate}
    parts = [f"{rate:g} fps: {count}" for rate, count in sorted(rated.items())]
    if len(rated) > listed:
        rates = np.repeat(list(rated), list(rated.values()))  # one per video
        parts = [f"{len(rated)} rates, min {rates.min():g}, median {np.median(rates):g}, max {rates.max():g} fps"]
    if videos_per_rate.get(0.0):
        parts.append(f"{videos_per_rate[0.0]} without a rate (frame folders)")
    return ", ".join(parts)


def frame_rates(file_pattern, videos=128, shards=32):
    """How many videos of a sample of the matching shards run at each frame
    rate (`schema.rounded_fps`): the first videos of up to `shards`
    shards spread evenly over the set, `videos` in all (at most), so that a set
    of thousands of shards costs a few records of each of a few. Returns the
    counts, the number of shards read and the number of shards."""
    files = _files(file_pattern)
    spread = np.linspace(0, len(files) - 1, min(shards, videos, len(files))).round().astype(int)
    sampled = [files[i] for i in spread]
    per_shard = videos // len(sampled)
    records = tf.data.Dataset.from_tensor_slices(sampled).interleave(  # shards opened in parallel
        lambda file: tf.data.TFRecordDataset(file).take(per_shard), num_parallel_calls=tf.data.AUTOTUNE)
    rates = [schema.rounded_fps(video) for video in records.map(schema.parse_video).as_numpy_iterator()]
    return collections.Counter(rates), len(sampled), len(files)


def warn_about_frame_rates(file_pattern, contract, use, rates=None):
    """Training and evaluation take the records' frames as converted, but
    predict and the exports resample videos to the contract's fps: a
    difference means the model sees motion at another speed than deployed.
    `use`: "training" or "evaluation". `rates`: `frame_rates(file_pattern)`,
    where already read."""
    counts, shards_read, shards = rates or frame_rates(file_pattern)
    if contract.fps and any(rate and abs(rate - contract.fps) > 0.5 for rate in counts):
        print(f"warning: the {use} videos' frame rates (of {sum(counts.values())} looked at, in {shards_read} of "
              f"the {shards} shards) are {frame_rates_text(counts)}, but the model's contract says "
              f"{contract.fps:g} fps, to which predict and the exports resample videos: the deployed "
              f"model would see motion at another speed. Convert the videos at {contract.fps:g} fps "
              f"(python -m tfrecords_tools.convert ... --fps {contract.fps:g})"
              + (", or give the model the records' rate (python -m keras_r3d.train ... --fps R)."
                 if use == "training" else "."), file=sys.stderr)


def warn_about_short_videos(file_pattern, contract, use):
    """Videos with fewer frames than a clip repeat theirs to fill it (as the
    official code pads them): a video of a few frames trains or scores as a
    still. Warns, with their count, where there are any."""
    num_frames = read_manifest(file_pattern)[1]
    short = [count for count in num_frames if count < contract.frames]
    if short:
        print(f"warning: {len(short)} of the {len(num_frames)} {use} videos have fewer frames than a clip's "
              f"{contract.frames} (the shortest {min(short)}): their clips repeat frames to fill it; "
              f"python -m tfrecords_tools.convert ... --min_frames {contract.frames} leaves them out",
              file=sys.stderr)


def label_names(file_pattern):
    """The class names of the matching shards, by label index (from the manifest)."""
    return read_manifest(file_pattern)[0]


@contextlib.contextmanager
def damaged_records_as_value_errors(where):
    """Re-raises, as a one-line ValueError, what reading a damaged set of
    `where` raises: a shard truncated or corrupt (DataLossError), or holding
    another number of videos than its manifest.json lists (`make_dataset`'s
    cardinality check, a FailedPreconditionError)."""
    try:
        yield
    except tf.errors.DataLossError as error:
        raise ValueError(f"a TFRecord of {where} is truncated or corrupt ({schema.error_text(error)}); "
                         "python -m tfrecords_tools.inspect names it") from None
    except tf.errors.FailedPreconditionError as error:
        if "expected to contain" not in str(error):
            raise
        raise ValueError(f"a TFRecord of {where} holds another number of videos than the {schema.MANIFEST} "
                         "beside it lists (replaced, or cut at a record boundary); python -m "
                         "tfrecords_tools.inspect names it") from None


__all__ = ["make_dataset", "count_clips", "label_names", "read_manifest", "frame_indices", "crop_window",
           "SCALES"]

