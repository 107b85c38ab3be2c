"""Temporal sampling read back from the pixels: every frame of a synthetic
video is a uniform gray whose level is its index, so a clip shows which
frames it holds (audit: catches train windows that never move or that start
past the official range, and a shifted val window)."""
import numpy as np
from PIL import Image

import keras_r3d
from keras_r3d import data
from tfrecords_tools import convert as tool

N = 20  # frames of the one video
CONTRACT = keras_r3d.Preprocessing(frames=4, size=16, temporal_downsample=2, mean=(0.0, 0.0, 0.0))
WINDOW = CONTRACT.frames * CONTRACT.temporal_downsample


def _records(tmp_path):
    folder = tmp_path / "in" / "only" / "video"
    folder.mkdir(parents=True)
    for i in range(N):
        Image.fromarray(np.full((16, 24, 3), 10 * i + 5, np.uint8)).save(folder / f"{i + 1:05d}.jpg", quality=100)
    tool.convert("folders", tmp_path / "in", tmp_path / "out", short_side=0, progress=False)
    return str(tmp_path / "out" / "train-*.tfrecord")


def _frame_numbers(clips):
    """(clips, frames) frame indices from the gray levels."""
    levels = clips.reshape(clips.shape[0], clips.shape[1], -1).mean(-1)
    return np.rint((levels - 5) / 10).astype(int)


def test_train_and_val_windows_are_the_official_ones(tmp_path):
    pattern = _records(tmp_path)
    train = data.make_dataset(pattern, "train", CONTRACT, 1, shuffle_seed=0, repeat=True, crop="center")
    indices = _frame_numbers(np.concatenate([clip.numpy() for clip, _ in train.take(300)]))
    starts = indices[:, 0]
    # Official TemporalRandomCrop: begin in [0, max(0, n - window - 1)], every downsample-th frame kept.
    np.testing.assert_array_equal(indices, starts[:, None] + CONTRACT.temporal_downsample * np.arange(4))
    assert set(starts.tolist()) == set(range(N - WINDOW)), sorted(set(starts.tolist()))
    # Official TemporalCenterCrop: begin at n // 2 - window // 2.
    (clip, _), = data.make_dataset(pattern, "val", CONTRACT, 1).as_numpy_iterator()
    assert _frame_numbers(clip).tolist() == [[6, 8, 10, 12]]
