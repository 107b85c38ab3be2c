"""keras_r3d.data: official temporal sampling and crops, determinism, test windows, fit on TF and JAX."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import keras_r3d
from keras_r3d import data
from tests.conftest import AVI, GESTURES, REPO
from tfrecords_tools import convert as tool
from tfrecords_tools import schema

CONTRACT = keras_r3d.Preprocessing(frames=8, size=64, temporal_downsample=2)


@pytest.fixture(scope="module")
def shards(fixtures_dir, tmp_path_factory):
    """Gesture frame folders and a UCF-101 .avi, 2 classes, in 2 train shards."""
    root = tmp_path_factory.mktemp("data")
    for name, path in (("gesture/up", GESTURES["thumb_up"]), ("gesture/down", GESTURES["thumb_down"]),
                       ("gesture/stop", GESTURES["stop_sign"]), ("ucf/makeup.avi", AVI)):
        (root / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "in" / name).symlink_to(path)
    tool.convert("folders", root / "in", root / "out", num_shards=2, short_side=128, progress=False)
    return root / "out"


def official_indices(n, begin, frames, downsample):
    """Efficient-3DCNNs TemporalRandomCrop/TemporalCenterCrop after `begin`, 0-based."""
    window = frames * downsample
    out = list(range(n))[begin:min(begin + window, n)]
    for index in out:
        if len(out) >= window:
            break
        out.append(index)
    return [out[i] for i in range(0, window, downsample)]


@pytest.mark.parametrize("n, begin, frames, downsample", [
    (100, 0, 16, 1), (100, 37, 16, 2), (40, 10, 16, 2), (5, 0, 4, 2), (20, 18, 8, 1), (1, 0, 16, 2)])
def test_frame_indices_follow_the_official_code(n, begin, frames, downsample):
    contract = keras_r3d.Preprocessing(frames=frames, temporal_downsample=downsample)
    actual = data.frame_indices(tf.constant(n), tf.constant(begin), contract).numpy().tolist()
    assert actual == official_indices(n, begin, frames, downsample)


def test_a_folder_of_shards_is_answered_with_a_glob_per_split(tmp_path):
    # Not always the val glob: --train_data=FOLDER must not be told to read val shards.
    for name in ("val-00000-of-00001.tfrecord", "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ValueError, match=f"is a folder: pass a glob of its shards, e.g. '{tmp_path}/train-\\*"
                                         f"\\.tfrecord' or '{tmp_path}/val-\\*\\.tfrecord'$"):
        data.make_dataset(str(tmp_path), "train", CONTRACT, 2)
    other = tmp_path / "other"  # shards named otherwise: one glob of them all
    other.mkdir()
    for name in ("ucf101.tfrecord", "ucf101_val.tfrecord"):
        (other / name).write_bytes(b"")
    with pytest.raises(ValueError, match=f"e.g. '{other}/\\*\\.tfrecord'$"):
        data.make_dataset(str(other), "train", CONTRACT, 2)


def test_crop_windows_stay_inside_and_use_the_official_scales():
    height, width, short = 128, 171, 128
    sides = {int(short * s) for s in data.SCALES}
    assert sides == {128, 107, 90, 76, 64}
    corners, seen_sides, quadrants = set(), set(), set()
    for seed in range(60):
        y, x, side, side2 = data.crop_window(height, width, tf.constant(seed, tf.int64), "random").numpy()
        assert side == side2 and side in sides and 0 <= y <= height - side and 0 <= x <= width - side
        seen_sides.add(side)
        if side < height:
            quadrants.add((y / (height - side) < 0.5, x / (width - side) < 0.5))
        y, x, side, _ = data.crop_window(height, width, tf.constant(seed, tf.int64), "corner").numpy()
        positions = [((height - side) // 2, (width - side) // 2), (0, 0), (0, width - side),
                     (height - side, 0), (height - side, width - side)]
        assert (y, x) in positions
        if side < height:  # at full height, corners coincide
            corners.add(positions.index((y, x)))
    assert seen_sides == sides and len(corners) == 5
    assert len(quadrants) == 4  # the official MultiScaleRandomCrop draws x and y apart, not along a diagonal
    assert data.crop_window(height, width, tf.constant(0, tf.int64), "center").numpy().tolist() == [0, 21, 128, 128]
    three = [data.crop_window(height, width, tf.constant(0, tf.int64), "three", i).numpy().tolist()
             for i in range(3)]
    assert three == [[0, 0, 128, 128], [0, 21, 128, 128], [0, 43, 128, 128]]


def official_val_clip(frames, contract):
    """Scale(size) on the shorter side (PIL bilinear), CenterCrop(size), center window, minus the mean."""
    n = len(frames)
    window = contract.frames * contract.temporal_downsample
    indices = official_indices(n, max(0, n // 2 - window // 2), contract.frames, contract.temporal_downsample)
    clip = []
    for i in indices:
        image = Image.fromarray(frames[i])
        w, h = image.size
        scaled = (contract.size, round(h * contract.size / w)) if w < h else (round(w * contract.size / h), contract.size)
        image = image.resize(scaled, Image.BILINEAR)
        left, top = round((scaled[0] - contract.size) / 2), round((scaled[1] - contract.size) / 2)
        clip.append(np.asarray(image.crop((left, top, left + contract.size, top + contract.size))))
    return np.stack(clip).astype(np.float32) - np.asarray(contract.mean, np.float32)


def test_val_clips_match_the_official_transform(shards):
    shard = str(shards / "train-00000-of-00002.tfrecord")
    videos = list(schema.read_videos(shard))
    clips = list(data.make_dataset(shard, "val", CONTRACT, 1))
    assert len(clips) == len(videos) == data.count_clips(shard, "val", CONTRACT)
    for (clip, label), video in zip(clips, videos):
        assert int(label[0]) == video["label_index"]
        expected = official_val_clip(video["frames"], CONTRACT)
        assert clip.shape == (1, 8, 64, 64, 3) and clip.dtype == tf.float32
        assert np.abs(clip[0].numpy() - expected).mean() < 2.0  # only the resampling differs


def first_batches(shards, count=2, **kwargs):
    dataset = data.make_dataset(str(shards / "train-*.tfrecord"), "train", CONTRACT, 2, **kwargs)
    return [(clip.numpy(), label.numpy()) for clip, label in dataset.take(count)]


def test_train_is_deterministic_with_a_seed(shards):
    a, b, c = (first_batches(shards, shuffle_seed=seed) for seed in (7, 7, 8))
    for (clip_a, label_a), (clip_b, label_b) in zip(a, b):
        np.testing.assert_array_equal(clip_a, clip_b)
        np.testing.assert_array_equal(label_a, label_b)
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a, c))
    for (clip_a, _), (clip_random, _) in zip(a, first_batches(shards, shuffle_seed=7, crop="random")):
        np.testing.assert_array_equal(clip_a, clip_random)  # train crops at random unless told otherwise
    clip, label = a[0]
    assert clip.shape == (2, 8, 64, 64, 3) and label.dtype == np.int32 and set(label) <= {0, 1}
    pixels = clip + np.asarray(CONTRACT.mean, np.float32)
    assert pixels.min() >= -1e-3 and pixels.max() <= 255 + 1e-3


def test_train_epochs_draw_new_windows(shards):
    dataset = data.make_dataset(str(shards / "train-*.tfrecord"), "train", CONTRACT, 4, shuffle_seed=3)
    epochs = [np.concatenate([clip.numpy() for clip, _ in dataset]) for _ in range(2)]
    assert not np.array_equal(epochs[0], epochs[1])


def test_hflip_mirrors_some_clips_and_keeps_the_rest(shards):
    plain = first_batches(shards, 4, shuffle_seed=5)
    flipped = first_batches(shards, 4, shuffle_seed=5, hflip=True)
    same = mirrored = 0
    for (a, _), (b, _) in zip(plain, flipped):
        for clip_a, clip_b in zip(a, b):
            if np.array_equal(clip_a, clip_b):
                same += 1
            else:
                np.testing.assert_array_equal(clip_a[:, :, ::-1], clip_b)
                mirrored += 1
    assert same and mirrored


@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_cache_gives_the_same_clips(shards, cache, tmp_path):
    cache = "memory" if cache == "memory" else str(tmp_path / "cache")
    expected = first_batches(shards, shuffle_seed=11)
    for _ in range(2):  # fills, then reads the cache
        actual = first_batches(shards, shuffle_seed=11, cache=cache)
        for (clip_a, label_a), (clip_b, label_b) in zip(expected, actual):
            np.testing.assert_array_equal(clip_a, clip_b)
            np.testing.assert_array_equal(label_a, label_b)


def test_test_split_yields_every_window_of_every_video(shards):
    pattern = str(shards / "train-*.tfrecord")
    _, num_frames = data.read_manifest(pattern)
    assert sorted(num_frames) == [68, 68, 68, 164]
    dataset = data.make_dataset(pattern, "test", CONTRACT, 5)
    ids, labels = [], []
    for clip, label, video_id in dataset:
        assert clip.shape[1:] == (8, 64, 64, 3)
        ids += [v.decode() for v in video_id.numpy()]
        labels += label.numpy().tolist()
    assert len(ids) == data.count_clips(pattern, "test", CONTRACT) == 3 * 5 + 11  # ceil(n / 16)
    # The batch count is known up front (fit's steps and progress bar): 26 windows in batches of 5.
    assert int(dataset.cardinality()) == 6
    assert int(data.make_dataset(pattern, "train", CONTRACT, 3).cardinality()) == 1  # 4 videos, remainder dropped
    with pytest.raises(ValueError, match="4 videos make no batch of 5 .*pass a smaller batch_size"):
        data.make_dataset(pattern, "train", CONTRACT, 5)  # fit would run no step
    assert int(data.make_dataset(pattern, "train", CONTRACT, 5, drop_remainder=False).cardinality()) == 1
    runs = [ids[0]] + [b for a, b in zip(ids, ids[1:]) if a != b]
    assert len(runs) == 4 == len(set(runs))  # each video's windows are consecutive
    counts = {video: ids.count(video) for video in runs}
    assert counts["ucf/makeup"] == 11 and counts["gesture/up"] == 5
    assert data.label_names(pattern) == ["gesture", "ucf"]
    assert all(label == (video == "ucf/makeup") for label, video in zip(labels, ids))


def test_three_crops_give_both_ends_and_the_center_of_every_window(shards):
    pattern = str(shards / "train-*.tfrecord")
    center = [b for b in data.make_dataset(pattern, "test", CONTRACT, 6).as_numpy_iterator()]
    three = [b for b in data.make_dataset(pattern, "test", CONTRACT, 6, crop="three").as_numpy_iterator()]
    clips_center, clips_three = (np.concatenate([b[0] for b in batches]) for batches in (center, three))
    ids_center, ids_three = (np.concatenate([b[2] for b in batches]) for batches in (center, three))
    assert len(clips_three) == data.count_clips(pattern, "test", CONTRACT, "three") == 3 * len(clips_center)
    np.testing.assert_array_equal(ids_three[1::3], ids_center)
    np.testing.assert_array_equal(clips_three[1::3], clips_center)  # the middle crop is the center crop
    ends = np.abs(clips_three[0::3] - clips_three[2::3]).mean(axis=(1, 2, 3, 4))
    assert ends.min() > 1.0  # every video is wider than high: the ends are other squares
    with pytest.raises(ValueError, match="evaluation mode"):
        data.make_dataset(pattern, "train", CONTRACT, 2, crop="three")


def test_another_schema_version_is_a_clear_error(tmp_path):
    record = tf.train.SequenceExample.FromString(schema.encode_video(
        [tf.io.encode_jpeg(np.zeros((8, 8, 3), np.uint8)).numpy()], label_index=0, label_text="a",
        video_id="v", fps=None, height=8, width=8, source="s"))
    record.context.feature[schema.VERSION].int64_list.value[0] = schema.SCHEMA_VERSION + 1
    path = str(tmp_path / "x.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(record.SerializeToString())
    with pytest.raises(tf.errors.InvalidArgumentError, match="another schema version"):
        list(data.make_dataset(path, "val", CONTRACT, 1))
    with pytest.raises(tf.errors.InvalidArgumentError, match="another schema version"):
        list(schema.read_videos(path))


def test_only_a_damaged_set_becomes_a_one_line_value_error():
    with pytest.raises(ValueError, match=r"^a TFRecord of X is truncated or corrupt \(corrupted record at 12\); "):
        with data.damaged_records_as_value_errors("X"):
            raise tf.errors.DataLossError(None, None, "corrupted record at 12")
    with pytest.raises(tf.errors.FailedPreconditionError):  # another failed precondition is not ours to name
        with data.damaged_records_as_value_errors("X"):
            raise tf.errors.FailedPreconditionError(None, None, "Could not find variable")


def test_argument_errors(shards, tmp_path):
    pattern = str(shards / "train-*.tfrecord")
    with pytest.raises(ValueError, match="split must be one of"):
        data.make_dataset(pattern, "training", CONTRACT, 1)
    with pytest.raises(ValueError, match="crop must be one of"):
        data.make_dataset(pattern, "train", CONTRACT, 1, crop="multiscale")
    with pytest.raises(ValueError, match="hflip is a training augmentation"):
        data.make_dataset(pattern, "val", CONTRACT, 1, hflip=True)
    with pytest.raises(ValueError, match="batch_size"):
        data.make_dataset(pattern, "train", CONTRACT, 0)
    with pytest.raises(ValueError, match="a preprocessing contract is a Preprocessing"):
        data.make_dataset(pattern, "train", (16, 112), 1)
    with pytest.raises(FileNotFoundError, match="no TFRecord files"):
        data.make_dataset(str(tmp_path / "*.tfrecord"), "train", CONTRACT, 1)


def test_glob_characters_in_a_folder_or_file_name_are_taken_literally(shards, tmp_path):
    from tfrecords_tools import inspect as inspect_tool

    folder = tmp_path / "set [v1]"  # [v1] would match a folder named "setv" or "set1"
    shutil.copytree(shards, folder)
    literal = str(folder / "train-00000-of-00002.tfrecord")
    assert data._files(literal) == [literal]
    assert data._files(str(folder / "train-*.tfrecord")) == sorted(str(f) for f in folder.glob("train-*.tfrecord"))
    assert inspect_tool.summarize(literal)["videos"] >= 1
    assert data.label_names(str(folder / "train-*.tfrecord")) == data.label_names(str(shards / "train-*.tfrecord"))
    # Classes per split from the manifest: of whole splits only.
    assert sum(data.videos_per_class(str(folder / "train-*.tfrecord")).values()) == 4
    assert data.videos_per_class(literal) is None  # one of the split's two shards
    # A file whose own name holds glob characters is taken as it is.
    odd = folder / "train [1].tfrecord"
    shutil.copy(literal, odd)
    assert data._files(str(odd)) == [str(odd)]


def test_shards_of_sets_with_other_class_lists_are_refused(shards, tmp_path):
    """Shards of two conversions train together only where their manifests
    give the same labels: a label index means one class in both."""
    import json

    other = tmp_path / "other"
    shutil.copytree(shards, other)
    both = [str(shards / "train-*.tfrecord"), str(other / "train-*.tfrecord")]
    labels, _ = data.read_manifest(both)
    manifest = json.loads((other / schema.MANIFEST).read_text())
    (other / schema.MANIFEST).write_text(json.dumps({**manifest, "labels": labels[::-1]}))
    with pytest.raises(ValueError, match=f"{other / schema.MANIFEST}: other labels than the other shards"):
        data.read_manifest(both)


def fit_twice(pattern):
    """Two epochs of a tiny model on the pipeline; returns the backend name."""
    import keras

    contract = keras_r3d.Preprocessing(frames=4, size=32)
    model = keras.Sequential([keras.Input((4, 32, 32, 3)), keras.layers.Conv3D(4, 3, strides=2, activation="relu"),
                              keras.layers.GlobalAveragePooling3D(), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    train = data.make_dataset(pattern, "train", contract, 2, shuffle_seed=1, hflip=True)
    val = data.make_dataset(pattern, "val", contract, 3)
    history = model.fit(train, validation_data=val, epochs=2, verbose=0).history
    assert len(history["loss"]) == 2 and np.isfinite(history["val_loss"]).all(), history
    return keras.backend.backend()


def test_feeds_model_fit_on_tensorflow(shards):
    assert fit_twice(str(shards / "train-*.tfrecord")) == "tensorflow"


def test_feeds_model_fit_on_jax(shards):
    script = "import sys; from tests.test_data import fit_twice; print('FIT-OK', fit_twice(sys.argv[1]))"
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", script, str(shards / "train-*.tfrecord")], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "FIT-OK jax" in result.stdout


def test_test_windows_start_before_the_last_frame_as_the_official_loop():
    """The official test split: `range(1, n_frames, step)` (1-based) window starts."""
    for window in (8, 16, 32):
        for n in range(1, 100):
            assert int(data.window_count(n, window)) == max(1, len(range(1, n, window))), (n, window)


GRAY_FRAMES = 20  # frames of a video whose frame i is the gray level 10 i + 5
GRAY_CONTRACT = keras_r3d.Preprocessing(frames=4, size=16, temporal_downsample=2, mean=(0.0, 0.0, 0.0))
GRAY_WINDOW = GRAY_CONTRACT.frames * GRAY_CONTRACT.temporal_downsample


def _gray_records(tmp_path):
    folder = tmp_path / "in" / "only" / "video"
    folder.mkdir(parents=True)
    for i in range(GRAY_FRAMES):
        Image.fromarray(np.full((16, 24, 3), 10 * i + 5, np.uint8)).save(folder / f"{i + 1:05d}.jpg", quality=100)
    tool.convert("folders", tmp_path / "in", tmp_path / "out", short_side=0, progress=False)
    return str(tmp_path / "out" / "train-*.tfrecord")


def _frame_numbers(clips):
    """(clips, frames) frame indices from the gray levels."""
    levels = clips.reshape(clips.shape[0], clips.shape[1], -1).mean(-1)
    return np.rint((levels - 5) / 10).astype(int)


def test_train_and_val_windows_are_the_official_ones(tmp_path):
    """Read back from the pixels: which frames each clip holds."""
    pattern = _gray_records(tmp_path)
    train = data.make_dataset(pattern, "train", GRAY_CONTRACT, 1, shuffle_seed=0, repeat=True, crop="center")
    indices = _frame_numbers(np.concatenate([clip.numpy() for clip, _ in train.take(300)]))
    starts = indices[:, 0]
    # Official TemporalRandomCrop: begin in [0, max(0, n - window - 1)], every downsample-th frame kept.
    np.testing.assert_array_equal(indices, starts[:, None] + GRAY_CONTRACT.temporal_downsample * np.arange(4))
    assert set(starts.tolist()) == set(range(GRAY_FRAMES - GRAY_WINDOW)), sorted(set(starts.tolist()))
    # Official TemporalCenterCrop: begin at n // 2 - window // 2.
    (clip, _), = data.make_dataset(pattern, "val", GRAY_CONTRACT, 1).as_numpy_iterator()
    assert _frame_numbers(clip).tolist() == [[6, 8, 10, 12]]


def test_test_windows_and_a_video_shorter_than_the_window_are_the_official_ones(tmp_path):
    """Read back from the pixels: the test split's consecutive windows, loop-padded
    at the end, and the val clip of a video shorter than its window."""
    pattern = _gray_records(tmp_path)
    clips = np.concatenate([batch[0] for batch in data.make_dataset(pattern, "test", GRAY_CONTRACT, 8)
                            .as_numpy_iterator()])
    assert _frame_numbers(clips).tolist() == [official_indices(GRAY_FRAMES, start, 4, 2) for start in (0, 8, 16)]
    longer = GRAY_CONTRACT.replace(frames=16)  # a window of 32 frames: the center crop begins at 0
    (clip, _), = data.make_dataset(pattern, "val", longer, 1).as_numpy_iterator()
    assert _frame_numbers(clip).tolist() == [official_indices(GRAY_FRAMES, 0, 16, 2)]
