"""tfrecords_tools.synthetic and inspect: the embedded default data set."""
import dataclasses

import numpy as np
import pytest
from PIL import Image

from keras_r3d.video import read_video
from tfrecords_tools import inspect, schema, synthetic

TINY = synthetic.SyntheticConfig(videos_per_class=3, size=32, frames=10, val_fraction=0.3, shards=2)
CLASSES = sorted(name for pair in synthetic.PAIRS for name in pair)
REVERSED = {a: b for pair in synthetic.PAIRS for a, b in (pair, pair[::-1])}  # each class's partner


def test_classes_come_in_time_reversed_pairs():
    assert len(set(CLASSES)) == len(CLASSES) == 8  # no class in two pairs
    assert REVERSED["swipe_left"] == "swipe_right" and REVERSED["zoom_in"] == "zoom_out"


def test_a_reversed_video_is_the_forward_one_played_backwards(tmp_path):
    config = synthetic.SyntheticConfig(size=48, frames=12)
    for motion in ("swipe_right", "zoom_in", "rotate_counterclockwise"):
        videos = []
        rendered = synthetic.render_frames(motion, np.random.default_rng(5), config)
        for reverse in (False, True):
            path = tmp_path / f"{motion}_{reverse}.mp4"
            synthetic.write_video(path, rendered[::-1] if reverse else rendered, config)
            frames, fps = read_video(path)
            assert frames.shape == (12, 48, 48, 3) and fps == 12.0
            videos.append(frames.astype(np.float32))
        forward, backward = videos
        assert np.abs(forward[::-1] - backward).mean() < 3.0  # codec noise only
        assert np.abs(forward - backward).mean() > 3 * np.abs(forward[::-1] - backward).mean()  # it moves


def test_make_synthetic_builds_and_resumes(tmp_path, capsys, monkeypatch):
    manifest = synthetic.make_synthetic(tmp_path, TINY, workers=1, progress=False)
    assert manifest["labels"] == CLASSES
    assert sum(e["videos"] for e in manifest["splits"].values()) == 24 and not manifest["skipped"]
    assert manifest["splits"]["val"]["videos"] > 0 and len(manifest["splits"]["train"]["shards"]) == 2
    assert len(list((tmp_path / "videos").glob("*/*.mp4"))) == 24
    video = next(schema.read_videos(str(tmp_path / "val-*.tfrecord")))
    assert video["frames"].shape == (10, 32, 32, 3) and video["label_text"] in CLASSES
    # A video and its time-reversed partner share the split and the frames.
    split_of = {v["video_id"]: split for split in ("train", "val")
                for v in schema.read_videos(str(tmp_path / f"{split}-*.tfrecord"))}
    partner = f"{REVERSED[video['label_text']]}/{video['video_id'].split('/')[1]}"
    assert split_of[partner] == "val"
    frames = {v["video_id"]: v["frames"] for v in schema.read_videos(str(tmp_path / "val-*.tfrecord"))}
    assert np.abs(frames[partner][::-1].astype(float) - video["frames"]).mean() < 3.0
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.tfrecord")}
    assert synthetic.make_synthetic(tmp_path, TINY, workers=1, progress=False) == manifest
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.tfrecord")} == stamps
    # Other settings never mix into this set's videos and records.
    for other in (dataclasses.replace(TINY, videos_per_class=4), dataclasses.replace(TINY, size=48)):
        with pytest.raises(ValueError, match="made with other settings"):
            synthetic.make_synthetic(tmp_path, other, workers=1, progress=False)
        assert synthetic.main(["--output", str(tmp_path), "--size", str(other.size), "--videos_per_class",
                               str(other.videos_per_class), "--frames", "10", "--shards", "2"]) == 2
    assert synthetic.made_with(tmp_path) == TINY

    assert [inspect._columns(label) for label in ("walk", "日本語")] == [4, 6]  # the label table's padding
    summary = inspect.summarize(str(tmp_path / "*.tfrecord"))
    assert summary["videos"] == 24 and summary["frames"] == 240 and summary["sizes"] == {(32, 32): 24}
    assert sum(summary["labels"].values()) == 24 and len(summary["labels"]) == 8
    sheet = inspect.contact_sheet(str(tmp_path / "train-*.tfrecord"), tmp_path / "sheet.png", clips=4, columns=5)
    assert Image.open(sheet).size == (160 + 5 * 64, 4 * 64)
    # A row's tiles run from the video's first frame to its last.
    first = next(schema.read_videos(str(tmp_path / "train-*.tfrecord")))["frames"]
    tiles = np.asarray(Image.open(sheet))[:64, 160:].reshape(64, 5, 64, 3).transpose(1, 0, 2, 3)
    for tile, frame in zip(tiles[[0, -1]], first[[0, -1]]):
        np.testing.assert_array_equal(tile, np.asarray(Image.fromarray(frame).resize((64, 64))))
    # The CLI takes the records' folder too, and names a file that is not a TFRecord.
    assert inspect.main([str(tmp_path), "--sheet", str(tmp_path / "folder.png"), "--clips", "2"]) == 0
    assert "24 videos, 240 frames" in capsys.readouterr().out and (tmp_path / "folder.png").exists()
    # Rows are 64 px high, not as high as the set has labels (8).
    assert Image.open(tmp_path / "folder.png").size == (160 + 8 * 64, 2 * 64)
    # With fewer labels than --clips, the sheet stops reading once it has them all and --clips videos.
    train, read, read_videos = str(tmp_path / "train-*.tfrecord"), [], schema.read_videos
    two = sorted({v["label_index"] for v in read_videos(train)})[:2]
    assert sum(v["label_index"] in two for v in read_videos(train)) > 3
    monkeypatch.setattr(schema, "read_videos",  # a set of two labels
                        lambda *a: (read.append(v) or v for v in read_videos(*a) if v["label_index"] in two))
    inspect.contact_sheet(train, tmp_path / "few.png", clips=3, num_labels=2)
    assert len(read) == 3
    # A shard of another conversion beside the set is named.
    stale = tmp_path / "train-00000-of-00009.tfrecord"
    stale.write_bytes(sorted(tmp_path.glob("train-*.tfrecord"))[0].read_bytes())
    assert inspect.main([str(tmp_path), "--sheet", ""]) == 1
    assert "error: 1 shards are not in the manifest.json beside them (left by another conversion; training " \
        "refuses them): train-00000-of-00009.tfrecord" \
        in capsys.readouterr().err
    stale.unlink()
    emptied = sorted(tmp_path.glob("val-*.tfrecord"))[0]
    records = emptied.read_bytes()
    emptied.write_bytes(b"")  # cut at a record boundary
    assert inspect.main([str(tmp_path), "--sheet", ""]) == 1
    assert "error: 1 shards hold another number of videos than the manifest.json beside them lists (replaced or " \
        f"cut short: convert them again): {emptied.name}" in capsys.readouterr().err
    emptied.write_bytes(records + records)  # the records of another conversion appended
    assert inspect.main([str(tmp_path), "--sheet", ""]) == 1
    assert f"error: 1 shards hold another number of videos than the manifest.json beside them lists (replaced or " \
        f"cut short: convert them again): {emptied.name}" in capsys.readouterr().err
    emptied.write_bytes(records)
    assert inspect.main([str(tmp_path / "folder.png"), "--sheet", ""]) == 2
    assert "folder.png: truncated or corrupt (corrupted record at 0 (Is this even a TFRecord file?))" \
        in capsys.readouterr().err
    cut = tmp_path / "cut"
    cut.mkdir()
    shard = sorted(tmp_path.glob("train-*.tfrecord"))[0]
    (cut / shard.name).write_bytes(shard.read_bytes()[: shard.stat().st_size * 3 // 4])
    assert inspect.main([str(cut), "--sheet", ""]) == 2
    err = capsys.readouterr().err
    assert f"error: {cut / shard.name}: truncated or corrupt (" in err and "function_node" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "val-00000-of-00001.tfrecord").write_bytes(b"")
    assert inspect.main([str(empty)]) == 0  # and no contact sheet of nothing
    out = capsys.readouterr().out
    assert "0 videos in 1 files" in out and "frame sizes" not in out and "frame rates" not in out


def test_config_checks():
    with pytest.raises(ValueError, match="even"):
        synthetic.SyntheticConfig(size=63)
    with pytest.raises(ValueError, match="val_fraction"):
        synthetic.SyntheticConfig(val_fraction=0.0)
    with pytest.raises(ValueError, match="shape_scale"):
        synthetic.SyntheticConfig(shape_scale=0.9)
    with pytest.raises(ValueError, match="rotation degrees"):
        synthetic.SyntheticConfig(rotation_min_degrees=200, rotation_max_degrees=100)
    with pytest.raises(ValueError, match="spiral_arms"):
        synthetic.SyntheticConfig(spiral_arms=-1)


@pytest.mark.parametrize("arms", [0, 2])
def test_shapes_carry_spiral_stripes_about_their_centre(arms):
    """The fill is one colour without arms; with them, about half of it is
    the darker stripe, split evenly between the halves of the shape that face
    each other across its centre (two arms: the pattern is symmetric under a
    half turn)."""
    config = synthetic.SyntheticConfig(spiral_arms=arms)
    sprite = np.array(synthetic._sprite(np.random.default_rng(0), 96, config)).astype(int)
    fill = (sprite[..., 3] > 0) & (sprite[..., :3].sum(-1) > 0)  # inside, not the black outline
    brightness = sprite[..., :3].sum(-1)
    dark = fill & (brightness < 0.6 * brightness[fill].max())
    if arms == 0:
        assert not dark.any()
        return
    assert 0.3 < dark.sum() / fill.sum() < 0.7
    both = fill & np.rot90(fill, 2)
    assert np.mean(np.rot90(dark, 2)[both] == dark[both]) > 0.9


def test_shape_scale_and_rotation_range_change_the_rendering():
    """The shape grows with shape_scale, and a rotating video turns through
    the chosen range."""
    def shape_pixels(frames):
        return float(np.mean([np.abs(f.astype(float) - np.median(f, axis=(0, 1))).sum(-1) > 60
                              for f in frames]))

    small, large = (synthetic.render_frames("swipe_right", np.random.default_rng(3),
                                            synthetic.SyntheticConfig(size=64, shape_scale=s))
                    for s in (0.3, 0.6))
    assert shape_pixels(large) > 2.5 * shape_pixels(small)
    config = synthetic.SyntheticConfig(rotation_min_degrees=280, rotation_max_degrees=340)
    for seed in range(5):
        angle = synthetic._trajectory(np.random.default_rng(seed), "rotate_counterclockwise", config)[3]
        assert 280 <= angle[-1] - angle[0] <= 340 and np.all(np.diff(angle) > 0)


def test_the_demo_never_trains_on_a_set_made_with_other_settings(tmp_path):
    from keras_r3d.train import ensure_synthetic

    config = {"synthetic_dir": str(tmp_path / "set"), "synthetic_videos_per_class": 2, "synthetic_size": 32}
    ensure_synthetic(config)
    manifest = (tmp_path / "set" / "manifest.json").stat().st_mtime_ns
    assert synthetic.made_with(tmp_path / "set") == synthetic.SyntheticConfig(videos_per_class=2, size=32)
    ensure_synthetic(config)  # the same settings: kept as it is
    assert (tmp_path / "set" / "manifest.json").stat().st_mtime_ns == manifest
    with pytest.raises(ValueError, match="other settings"):
        ensure_synthetic({**config, "synthetic_size": 48})
    settings = tmp_path / "set" / synthetic.SETTINGS_FILE
    settings.write_text('{"videos_per_class": 2, "colour": "red"}')  # not this version's settings
    with pytest.raises(ValueError, match="synthetic.json: not the settings of a synthetic set"):
        ensure_synthetic(config)
    settings.unlink()  # as an older version left it
    with pytest.raises(ValueError, match="delete it to regenerate"):
        ensure_synthetic(config)
