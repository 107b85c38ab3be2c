"""tfrecords_tools: each format from real fixtures, bad inputs, bad annotations, resume."""
import json
import multiprocessing
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import av
import numpy as np
import pytest
from PIL import Image

from tests.conftest import AVI, FIXTURES, GESTURE_LABELS, GESTURES, REPO
from tfrecords_tools import convert as tool
from tfrecords_tools import schema, sources
from tfrecords_tools.sources import AnnotationError

CLIPS = FIXTURES / "clips"
AVI2 = CLIPS / "ucf101" / "paddlevideo_example_archery.avi"
MP4 = CLIPS / "kinetics" / "mmaction2_demo_arm_wrestling_k400.mp4"
MP4_2 = CLIPS / "kinetics" / "mmaction2_tests_test_cleaning_pool_k400.mp4"
ANNOTATIONS = FIXTURES / "official" / "annotations"


def pyav_frames(path):
    """A direct PyAV decode, independent of keras_r3d.video."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def resized(frames, height, width):
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BILINEAR)) for f in frames])


def assert_same_frames(actual, expected, tolerance=4.0):
    """Equal count, every frame within JPEG error of its source, and in order:
    each frame is closer to its own source frame than to any other."""
    assert actual.shape == expected.shape
    errors = np.abs(actual.astype(np.float32) - expected.astype(np.float32)).mean(axis=(1, 2, 3))
    assert errors.max() < tolerance, errors.max()
    small = lambda x: x[:, ::8, ::8].reshape(len(x), -1).astype(np.float64)
    a, e = small(actual), small(expected)
    distances = (a**2).sum(1)[:, None] - 2 * a @ e.T + (e**2).sum(1)[None, :]  # squared L2
    own = np.diag(distances)
    # Static stretches and repeated frames hold near-identical frames: a near-tie
    # is allowed; a frame out of order is 100x further from its own source.
    assert np.all(own <= 1.2 * distances.min(axis=1) + 1.0)


def records(output, split="*"):
    return {v["video_id"]: v for v in schema.read_videos(str(output / f"{split}-*.tfrecord"))}


def link(target, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)
    return path


@pytest.fixture
def jester_tree(fixtures_dir, tmp_path):
    ids = {"1001": "thumb_up", "1002": "thumb_down", "1003": "stop_sign"}
    for video_id, name in ids.items():
        link(GESTURES[name], tmp_path / "frames" / video_id)
    notes = tmp_path / "annotations"
    notes.mkdir()
    shutil.copy(ANNOTATIONS / "jester_classInd.txt", notes / "classInd.txt")
    labels = [line.split()[1] for line in (notes / "classInd.txt").read_text().split("\n") if line.strip()]
    index = lambda name: labels.index(GESTURE_LABELS[name]) + 1
    (notes / "trainlist.txt").write_text(f"1001 {index('thumb_up')}\n1002 {index('thumb_down')}\n")
    (notes / "vallist.txt").write_text(f"1003 {index('stop_sign')}\n1004 {index('stop_sign')}\n")
    return tmp_path, ids, labels


def test_jester_frame_folders(jester_tree):
    root, ids, labels = jester_tree
    manifest = tool.convert("jester", root / "frames", root / "out", annotations=root / "annotations",
                            short_side=0, progress=False)
    assert manifest["labels"] == labels and len(labels) == 27
    assert manifest["splits"]["train"]["videos"] == 2 and manifest["splits"]["val"]["videos"] == 1
    assert manifest["skipped"] == [{"source": str(root / "frames" / "1004"),
                                    "reason": "missing: no such frame folder"}]
    assert sorted(p.name for p in (root / "out").glob("*.tfrecord")) == [
        "train-00000-of-00001.tfrecord", "val-00000-of-00001.tfrecord"]
    videos = records(root / "out")
    for video_id, name in ids.items():
        video = videos[video_id]
        assert video["label_text"] == GESTURE_LABELS[name]
        assert video["label_index"] == labels.index(GESTURE_LABELS[name])
        assert video["fps"] is None and video["source"] == str(root / "frames" / video_id)
        source = np.stack([np.asarray(Image.open(f)) for f in sorted(GESTURES[name].glob("*.jpg"))])
        assert video["num_frames"] == len(source) == 68
        assert (video["height"], video["width"]) == (240, 320)
        assert_same_frames(video["frames"], source)


def test_jester_20bn_csv_gives_the_official_class_order(jester_tree):
    root, ids, labels = jester_tree
    notes = root / "annotations_20bn"
    notes.mkdir()
    spaced = [name.replace("_", " ") for name in labels]
    (notes / "jester-v1-labels.csv").write_text("\n".join(spaced[::-1]) + "\n")  # any order
    (notes / "jester-v1-train.csv").write_text("1001;Thumb Up\n")
    (notes / "jester-v1-validation.csv").write_text("1003;Stop Sign\n")
    manifest = tool.convert("jester", root / "frames", root / "out", annotations=notes,
                            short_side=32, progress=False)
    assert manifest["labels"] == labels
    videos = records(root / "out")
    assert videos["1001"]["label_index"] == labels.index("Thumb_Up")
    assert videos["1003"]["label_text"] == "Stop_Sign"
    assert (videos["1003"]["height"], videos["1003"]["width"]) == (32, 43)


@pytest.fixture
def ucf_tree(fixtures_dir, tmp_path, ucf_notes):
    link(AVI, tmp_path / "videos" / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.avi")
    link(AVI2, tmp_path / "videos" / "Archery" / "v_Archery_g01_c01.avi")
    return tmp_path


def test_ucf101_avi_resized_short_side(ucf_tree):
    manifest = tool.convert("ucf101", ucf_tree / "videos", ucf_tree / "out",
                            annotations=ucf_tree / "annotations", split=1, progress=False)
    assert len(manifest["labels"]) == 101
    assert manifest["splits"]["train"]["per_class"] == {"ApplyEyeMakeup": 1}
    assert manifest["splits"]["val"]["per_class"] == {"Archery": 1}
    videos = records(ucf_tree / "out")
    for video_id, path, label in (("v_ApplyEyeMakeup_g01_c01", AVI, 0), ("v_Archery_g01_c01", AVI2, 2)):
        video = videos[video_id]
        assert video["label_index"] == label and video["fps"] == 25.0
        assert (video["height"], video["width"]) == (128, 171)  # 320x240 -> short side 128
        assert_same_frames(video["frames"], resized(pyav_frames(path), 128, 171))
    with pytest.raises(AnnotationError, match="split 2"):
        tool.convert("ucf101", ucf_tree / "videos", ucf_tree / "out2",
                     annotations=ucf_tree / "annotations", split=2, progress=False)


def test_kinetics_mp4_original_size(fixtures_dir, tmp_path):
    link(MP4, tmp_path / "videos" / "arm wrestling" / "abcdefghijk_000010_000020.mp4")
    link(MP4_2, tmp_path / "videos" / "x" / "ABCDEFGHIJK_000001_000011.mp4")
    csv = tmp_path / "kinetics.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split\n"  # labels out of order: sorted for the indices
                   "zumba,notdownloaded,0,10,val\n"
                   "cleaning pool,ABCDEFGHIJK,1,11,val\n"
                   "arm wrestling,abcdefghijk,10,20,train\n")
    manifest = tool.convert("kinetics", tmp_path / "videos", tmp_path / "out", annotations=csv,
                            short_side=0, progress=False)
    assert manifest["labels"] == ["arm wrestling", "cleaning pool", "zumba"]
    assert manifest["skipped"][0]["source"] == "notdownloaded_000000_000010"
    videos = records(tmp_path / "out")
    train, val = videos["abcdefghijk_000010_000020"], videos["ABCDEFGHIJK_000001_000011"]
    assert (train["label_text"], train["label_index"], val["label_index"]) == ("arm wrestling", 0, 1)
    assert abs(val["fps"] - 30.0) < 0.1 and train["num_frames"] == 280
    # Its 340x256 pixels are 64:51 wide (mmaction2's resize of a wider video): stored as shown.
    assert_same_frames(train["frames"], resized(pyav_frames(MP4), 204, 340))


def folders_tree(root):
    link(GESTURES["thumb_up"], root / "in" / "up" / "clip_a")
    link(MP4, root / "in" / "up" / "clip_b.mp4")
    link(GESTURES["thumb_down"], root / "in" / "down" / "clip_c")
    link(AVI, root / "in" / "down" / "clip_d.avi")
    return root / "in"


def test_folders_mixed_inputs_and_hashed_val_split(fixtures_dir, tmp_path):
    source = folders_tree(tmp_path)
    manifest = tool.convert("folders", source, tmp_path / "out", val_fraction=0.5, short_side=64,
                            workers=2, progress=False)
    assert manifest["labels"] == ["down", "up"]
    splits = {split: entry["videos"] for split, entry in manifest["splits"].items()}
    assert sum(splits.values()) == 4 and not manifest["skipped"]
    videos = records(tmp_path / "out")
    assert {v: videos[v]["label_text"] for v in videos} == {
        "up/clip_a": "up", "up/clip_b": "up", "down/clip_c": "down", "down/clip_d": "down"}
    assert videos["down/clip_d"]["frames"].shape == (164, 64, 85, 3)
    again = tool.convert("folders", source, tmp_path / "again", val_fraction=0.5, short_side=64, progress=False)
    assert again["splits"] == manifest["splits"]  # the hash split is stable
    from tfrecords_tools.sources import list_folders

    _, items, _ = list_folders(source, val_fraction=1.0)  # all in val: an evaluation set
    assert len(items) == 4 and {item.split for item in items} == {"val"}
    with pytest.raises(AnnotationError, match=r"must be in \[0, 1\]"):
        list_folders(source, val_fraction=1.5)


def test_a_small_val_fraction_still_gives_val_a_video_and_a_class_without_train_videos_is_warned_of(
        fixtures_dir, tmp_path, capsys):
    import hashlib

    from keras_r3d import data
    from tfrecords_tools.sources import list_folders

    def digest(name):
        return int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big")

    source = folders_tree(tmp_path)
    names = ("clip_a", "clip_b.mp4", "clip_c", "clip_d.avi")
    # A one-video class whose file name hashes lowest of all: it stays in train, and val takes the
    # lowest of the classes with two videos.
    solo = min((f"solo_{i}" for i in range(100)), key=digest)
    assert digest(solo) < min(digest(name) for name in names)
    link(GESTURES["stop_sign"], source / "solo" / solo)
    lowest = min(names, key=digest)
    _, items, _ = list_folders(source, val_fraction=1e-9)
    assert [item.source for item in items if item.split == "val"] == [str(next(source.glob(f"*/{lowest}")))]
    assert {item.split for item in list_folders(source, val_fraction=0.0)[1]} == {"train"}
    # A fraction that takes the one video of a class is warned of.
    fraction = digest(solo) / 2.0**64 * (1 + 1e-9)
    assert tool.main(["--format", "folders", "--input", str(source), "--output", str(tmp_path / "out"),
                      "--val_fraction", str(fraction), "--short_side", "64"]) == 0
    err = capsys.readouterr().err
    assert "warning: 1 of the 3 classes have no train video (only other splits): solo; a model never learns them" in err
    assert ("warning: 2 of the 3 classes have no val video: down, up; validation never scores them (a larger "
            "--val_fraction gives them some)") in err
    singles = tmp_path / "singles"
    link(GESTURES["thumb_up"], singles / "up" / "a")
    link(GESTURES["thumb_down"], singles / "down" / "b")
    assert tool.main(["--format", "folders", "--input", str(singles), "--output", str(tmp_path / "singles_out"),
                      "--val_fraction", "0.1", "--short_side", "64"]) == 0
    assert "warning: no val videos: every class has one video, which stays in train" in capsys.readouterr().err
    # train warns too, where the shards are whole splits (the manifest counts classes per split).
    assert data.videos_per_class(str(tmp_path / "out" / "*.tfrecord")) == {"down": 2, "up": 2, "solo": 1}
    assert data.videos_per_class(str(tmp_path / "out" / "train-*.tfrecord")) == {"down": 2, "up": 2}
    # Without --val_fraction, everything is train: convert says how to get a val split, and so does
    # the error of a val glob there.
    assert tool.main(["--format", "folders", "--input", str(singles), "--output", str(tmp_path / "all_train"),
                      "--short_side", "64"]) == 0
    assert (f"note: every video went to train, and training needs a val split too: delete {tmp_path / 'all_train'} "
            "and convert again with --val_fraction 0.1") in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="made no val split, only train .*--val_fraction holds some videos out"):
        data.read_manifest(str(tmp_path / "all_train" / "val-*.tfrecord"))


@pytest.mark.parametrize("short_side", [64, 0])
def test_shards_are_sized_by_the_frames_as_they_will_be_encoded(fixtures_dir, tmp_path, short_side):
    source = folders_tree(tmp_path)
    tool.convert("folders", source, tmp_path / "one", short_side=short_side, progress=False)
    written = sum(path.stat().st_size for path in (tmp_path / "one").glob("train-*.tfrecord"))
    tool.convert("folders", source, tmp_path / "three", short_side=short_side,
                 shard_size_mb=written / 2.5 / 2**20, progress=False)
    assert len(list((tmp_path / "three").glob("train-*.tfrecord"))) == 3  # an estimate within 20 %


def test_bad_inputs_are_skipped_with_a_reason(fixtures_dir, tmp_path):
    good = link(GESTURES["thumb_up"], tmp_path / "in" / "a" / "good")
    (tmp_path / "in" / "a" / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    (tmp_path / "in" / "a" / "empty.avi").write_bytes(b"")
    (tmp_path / "in" / "a" / "truncated.mp4").write_bytes(MP4.read_bytes()[:3000])
    (tmp_path / "in" / "b" / "no_frames").mkdir(parents=True)
    bad_frame = tmp_path / "in" / "b" / "bad_frame"
    bad_frame.mkdir()
    shutil.copy(GESTURES["thumb_up"] / "00001.jpg", bad_frame / "00001.jpg")
    (bad_frame / "00002.jpg").write_bytes(b"not a jpeg")
    short = tmp_path / "in" / "b" / "short"
    short.mkdir()
    for i in range(1, 4):
        shutil.copy(GESTURES["thumb_down"] / f"{i:05d}.jpg", short / f"{i:05d}.jpg")
    (tmp_path / "in" / "b" / "unreadable.mp4").symlink_to(tmp_path / "nowhere.mp4")
    (tmp_path / "in" / "b" / "notes.txt").write_text("not a video")
    manifest = tool.convert("folders", tmp_path / "in", tmp_path / "out", short_side=32, min_frames=8,
                            progress=False)
    reasons = {pathlib.Path(s["source"]).name: s["reason"] for s in manifest["skipped"]}
    assert manifest["splits"]["train"]["videos"] == 1, reasons
    assert sorted(reasons) == ["bad_frame", "corrupt.mp4", "empty.avi", "no_frames", "notes.txt",
                               "short", "truncated.mp4", "unreadable.mp4"]
    assert reasons["corrupt.mp4"].endswith("cannot decode: no video FFmpeg can read: a file cut short (an unfinished "
                                           "copy, download or recording) or not a video")
    assert reasons["empty.avi"].endswith("cannot decode: an empty file")
    assert "no .jpg" in reasons["no_frames"] and "unreadable frame" in reasons["bad_frame"]
    assert "too short: 3 frames" in reasons["short"] and "no such file" in reasons["unreadable.mp4"]
    assert "not a video" in reasons["notes.txt"]
    assert list(records(tmp_path / "out")) == ["a/good"] and good.exists()


def test_fps_resamples_video_files_and_a_cut_video_is_skipped(fixtures_dir, tmp_path):
    link(AVI, tmp_path / "in" / "a" / "clip.avi")  # 25 fps
    link(GESTURES["thumb_up"], tmp_path / "in" / "a" / "frames")  # no frame rate: kept as is
    (tmp_path / "in" / "b").mkdir()
    (tmp_path / "in" / "b" / "cut.avi").write_bytes(AVI2.read_bytes()[:20000])  # a download cut short
    manifest = tool.convert("folders", tmp_path / "in", tmp_path / "out", short_side=32, fps=12.5,
                            progress=False)
    assert manifest["arguments"]["fps"] == 12.5
    [skipped] = manifest["skipped"]
    assert skipped["source"].endswith("cut.avi") and "truncated or corrupt" in skipped["reason"]
    assert "decoded 4 of the 131 frames its header declares" in skipped["reason"]
    videos = records(tmp_path / "out")
    source = pyav_frames(AVI)
    every_other = resized(source[::2], *videos["a/clip"]["frames"].shape[1:3])
    assert videos["a/clip"]["fps"] == 12.5 and len(videos["a/clip"]["frames"]) == len(source) // 2
    assert_same_frames(videos["a/clip"]["frames"], every_other)
    assert videos["a/frames"]["num_frames"] == len(list(GESTURES["thumb_up"].iterdir()))
    with pytest.raises(AnnotationError, match="--fps must be > 0"):
        tool.convert("folders", tmp_path / "in", tmp_path / "out2", fps=0, progress=False)


def test_inspect_shows_the_frame_rates(fixtures_dir, tmp_path, capsys):
    """inspect showed no frame rate: a set converted at the wrong one went unseen."""
    from tfrecords_tools import inspect

    for name, clip in (("a", AVI), ("b", MP4), ("c", MP4_2)):  # 25, 28 and 30 fps
        link(clip, tmp_path / "in" / name / clip.name)
    link(GESTURES["thumb_up"], tmp_path / "in" / "d" / "frames")
    tool.convert("folders", tmp_path / "in", tmp_path / "out", short_side=16, progress=False)
    assert inspect.main([str(tmp_path / "out"), "--sheet", ""]) == 0
    out = capsys.readouterr().out
    assert "frame rates: 25 fps: 1, 28 fps: 1, 30 fps: 1, 1 without a rate (frame folders)\n" in out
    # The frames per video: their least, mean (not median) and most.
    counts = [len(v["frames"]) for v in schema.read_videos(str(tmp_path / "out" / "*.tfrecord"))]
    assert len(counts) == 4 and np.mean(counts) != np.median(counts)
    assert f"frames per video min {min(counts)}, mean {np.mean(counts):.1f}, max {max(counts)}\n" in out
    # Many rates: their spread over the videos.
    from keras_r3d.data import frame_rates_text

    assert frame_rates_text({12.0: 1, 15.0: 1, 25.0: 5, 29.97: 2, 60.0: 1}) == \
        "5 rates, min 12, median 25, max 60 fps"


@pytest.mark.parametrize("case, message", [
    ("no_class_list", r"found no class list \(classInd.txt, categories.txt, jester-v1-labels.csv\)"),
    ("no_lists", "no train or validation list"),
    ("unknown_index", "unknown class index 28"),
    ("bad_line", "expected '<video id> <class index>'"),
    ("unknown_csv_label", "unknown label 'Waving'"),
    ("a_file", "trainlist.txt: a file; it takes the folder that holds the class list and the train and val lists"),
])
def test_bad_jester_annotations_fail_before_any_work(jester_tree, case, message):
    root, _, _ = jester_tree
    notes = root / "annotations"
    if case == "no_class_list":
        (notes / "classInd.txt").unlink()
    elif case == "no_lists":
        (notes / "trainlist.txt").unlink()
        (notes / "vallist.txt").unlink()
    elif case == "unknown_index":
        (notes / "vallist.txt").write_text("1003 28\n")
    elif case == "bad_line":
        (notes / "trainlist.txt").write_text("1001\n")
    elif case == "a_file":
        notes = notes / "trainlist.txt"
    else:
        for name in ("classInd.txt", "trainlist.txt", "vallist.txt"):
            (notes / name).unlink()
        (notes / "jester-v1-labels.csv").write_text("Thumb Up\nStop Sign\n")
        (notes / "jester-v1-train.csv").write_text("1001;Waving\n")
    with pytest.raises(AnnotationError, match=message):
        tool.convert("jester", root / "frames", root / "out", annotations=notes, progress=False)
    assert not (root / "out").exists()


def test_bad_ucf_kinetics_and_folders_annotations(ucf_tree, fixtures_dir, tmp_path):
    notes = ucf_tree / "annotations"
    (notes / "testlist01.txt").write_text("Juggling/v_Juggling_g01_c01.avi\n")
    with pytest.raises(AnnotationError, match="unknown class 'Juggling'"):
        tool.convert("ucf101", ucf_tree / "videos", tmp_path / "out", annotations=notes, progress=False)
    (notes / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi 7\n")
    with pytest.raises(AnnotationError, match="index 7 is not 'Archery'"):
        tool.convert("ucf101", ucf_tree / "videos", tmp_path / "out", annotations=notes, progress=False)
    with pytest.raises(AnnotationError, match="missing annotation file"):
        tool.convert("ucf101", ucf_tree / "videos", tmp_path / "out", annotations=tmp_path, progress=False)
    with pytest.raises(AnnotationError, match=f"{notes} is a folder: give the Kinetics CSV file itself"):
        tool.convert("kinetics", ucf_tree / "videos", tmp_path / "out", annotations=notes, progress=False)
    csv = tmp_path / "k.csv"
    csv.write_text("label,youtube_id,split\nzumba,abc,train\n")
    with pytest.raises(AnnotationError, match=r"missing columns \['time_start', 'time_end'\]"):
        tool.convert("kinetics", ucf_tree / "videos", tmp_path / "out", annotations=csv, progress=False)
    csv.write_text("label,youtube_id,time_start,time_end,split\nzumba,abc,0,10,holdout\n")
    with pytest.raises(AnnotationError, match="unknown split 'holdout'"):
        tool.convert("kinetics", ucf_tree / "videos", tmp_path / "out", annotations=csv, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnnotationError, match="expected class folders"):
        tool.convert("folders", tmp_path / "empty", tmp_path / "out", progress=False)
    with pytest.raises(AnnotationError, match="is not a folder"):
        tool.convert("folders", tmp_path / "nowhere", tmp_path / "out", progress=False)
    # Frame folders given as the class folders: frames where videos should be.
    with pytest.raises(AnnotationError, match="no videos in its class folders .*a folder of frames is one "
                                              "video, so put each in a class folder"):
        tool.convert("folders", GESTURES["thumb_up"].parent, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_reports_annotation_errors_and_nothing_converted(tmp_path, capsys):
    assert tool.main(["--format", "folders", "--input", str(tmp_path), "--output", str(tmp_path / "o")]) == 2
    assert "error: " in capsys.readouterr().err
    (tmp_path / "in" / "cls").mkdir(parents=True)
    (tmp_path / "in" / "cls" / "broken.avi").write_bytes(b"not a video")
    assert tool.main(["--format", "folders", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o"),
                      "--workers", "1"]) == 1
    captured = capsys.readouterr()
    assert "error: no video was converted" in captured.err
    assert f"skipped 1 inputs (all in {tmp_path / 'o'}/manifest.json):\n  {tmp_path / 'in' / 'cls' / 'broken.avi'}: " \
        "cannot decode" in captured.out
    (tmp_path / "file").write_text("")
    assert tool.main(["--format", "folders", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "file")]) == 2
    assert "error: --output " + str(tmp_path / "file") + ": cannot write there" in capsys.readouterr().err


def test_cli_warns_of_a_class_left_without_videos(fixtures_dir, tmp_path, capsys):
    link(GESTURES["thumb_up"], tmp_path / "in" / "up" / "clip")
    (tmp_path / "in" / "broken").mkdir()
    (tmp_path / "in" / "broken" / "cut.avi").write_bytes(b"not a video")
    assert tool.main(["--format", "folders", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o"),
                      "--workers", "1", "--short_side", "32"]) == 0
    assert "warning: 1 of the 2 classes have no video in any split: broken (a model still gets an output for " \
        "each)" in capsys.readouterr().err


def test_a_worker_that_dies_stops_the_run_with_a_message(fixtures_dir, tmp_path, monkeypatch, capsys):
    """A worker killed mid-run (by the out-of-memory killer, say) must not hang the
    conversion; stale shards of another run in --output are refused."""
    source = folders_tree(tmp_path)
    encode = tool.encode_item

    def dies_on_one(item, *args):  # the forked workers see this module's patched function
        if item.video_id.endswith("clip_b"):
            os.kill(os.getpid(), signal.SIGKILL)
        return encode(item, *args)

    monkeypatch.setattr(tool, "encode_item", dies_on_one)
    out = tmp_path / "out"
    assert tool.main(["--format", "folders", "--input", str(source), "--output", str(out), "--workers", "2"]) == 1
    assert "error: a worker process died (killed by the system: out of memory?)" in capsys.readouterr().err
    monkeypatch.setattr(tool, "encode_item", encode)
    # The same command resumes.
    assert tool.convert("folders", source, out, workers=2, progress=False)["splits"]["train"]["videos"] == 4
    (out / "train-00000-of-00009.tfrecord").write_bytes(b"")
    with pytest.raises(AnnotationError, match="holds shards that this conversion does not write "
                                              "\\(train-00000-of-00009.tfrecord\\)"):
        tool.convert("folders", source, out, workers=2, progress=False)
    # A set without the plan of its conversion (copied without the dot files): its shards, whatever their
    # names, are refused before any work, no plan written.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / tool.schema.MANIFEST).write_text("{}")
    (fresh / "train-00000-of-00001.tfrecord").write_bytes(b"")
    with pytest.raises(AnnotationError, match=r"already holds a set \(train-00000-of-00001.tfrecord, manifest.json\) "
                                              "that this conversion did not plan: use another --output"):
        tool.convert("folders", source, fresh, progress=False)
    assert not (fresh / tool.PLAN).exists()


def test_a_ctrl_c_stops_the_workers_at_once(fixtures_dir, tmp_path, monkeypatch, capsys):
    """A Ctrl-C does not wait for the videos being encoded (a long one takes
    minutes): the workers exit at once, the shards under their final names
    are the finished ones, and the same command resumes."""
    source = folders_tree(tmp_path)
    encode = tool.encode_item

    def interrupted_on_one(item, *args):  # the forked workers see this module's patched function
        if item.video_id.endswith("clip_b"):
            os.kill(os.getppid(), signal.SIGINT)
            time.sleep(600)
        return encode(item, *args)

    monkeypatch.setattr(tool, "encode_item", interrupted_on_one)
    out = tmp_path / "out"
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, also in a background job
    start = time.monotonic()
    try:
        code = tool.main(["--format", "folders", "--input", str(source), "--output", str(out), "--workers", "2",
                          "--num_shards", "4"])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 130
    assert time.monotonic() - start < 60
    assert "interrupted: the finished shards in" in capsys.readouterr().err
    assert not multiprocessing.active_children()
    plan = json.loads((out / tool.PLAN).read_text())["shards"]
    for shard in out.glob("*.tfrecord"):  # a final name always holds a complete shard
        assert [v["video_id"] for v in schema.read_videos(str(shard))] == [e["video_id"] for e in plan[shard.name]]
    monkeypatch.setattr(tool, "encode_item", encode)
    resumed = tool.convert("folders", source, out, workers=2, num_shards=4, progress=False)
    assert resumed["splits"]["train"]["videos"] == 4


def test_cli_warns_when_a_listed_split_ends_up_empty(ucf_tree, capsys):
    (ucf_tree / "videos" / "Archery" / "v_Archery_g01_c01.avi").unlink()  # the only val video
    assert tool.main(["--format", "ucf101", "--input", str(ucf_tree / "videos"), "--output", str(ucf_tree / "o"),
                      "--annotations", str(ucf_tree / "annotations"), "--workers", "1"]) == 0
    captured = capsys.readouterr()
    assert "train: 1 videos in 1 shards" in captured.out
    assert (f"warning: no val videos: each of its inputs was skipped or missing (all in {ucf_tree / 'o'}/"
            f"{schema.MANIFEST})") in captured.err
    assert json.loads((ucf_tree / "o" / schema.MANIFEST).read_text())["empty_splits"] == ["val"]


def test_resume_keeps_finished_shards_and_rejects_other_arguments(fixtures_dir, tmp_path):
    source = folders_tree(tmp_path)
    out = tmp_path / "out"
    first = tool.convert("folders", source, out, num_shards=3, short_side=32, progress=False)
    shards = sorted(out.glob("train-*.tfrecord"))
    assert [p.name for p in shards] == [tool.shard_name("train", i, 3) for i in range(3)]
    stamps = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shards}
    # A run killed while writing shard 1: no completion record, a stale temporary file.
    (out / tool.PROGRESS / f"{shards[1].name}.json").unlink()
    shards[1].rename(out / f".{shards[1].name}.tmp-12345")
    # Killed between renaming shard 2 into place and writing its record: redone too.
    (out / tool.PROGRESS / f"{shards[2].name}.json").unlink()
    (out / schema.MANIFEST).unlink()
    second = tool.convert("folders", source, out, num_shards=3, short_side=32, progress=False)
    assert second == first
    assert (shards[0].stat().st_ino, shards[0].stat().st_mtime_ns) == stamps[shards[0].name]
    assert shards[2].stat().st_ino != stamps[shards[2].name][0]  # written anew, renamed into place
    assert not list(out.glob(".*.tmp-*"))
    assert len(records(out)) == 4
    with pytest.raises(AnnotationError, match="other arguments \\(short_side\\)"):
        tool.convert("folders", source, out, num_shards=3, short_side=64, progress=False)
    with pytest.raises(AnnotationError, match="other arguments \\(fps\\)"):  # absent from the plan's arguments
        tool.convert("folders", source, out, num_shards=3, short_side=32, fps=12.0, progress=False)
    # A class or a video added since: the plan's labels and videos no longer hold.
    link(GESTURES["stop_sign"], source / "stop" / "clip_e")
    with pytest.raises(AnnotationError, match="other videos or classes"):
        tool.convert("folders", source, out, num_shards=3, short_side=32, progress=False)
    shutil.rmtree(source / "stop")
    link(GESTURES["stop_sign"], source / "up" / "clip_e")
    with pytest.raises(AnnotationError, match="4 videos planned, 5 listed"):
        tool.convert("folders", source, out, num_shards=3, short_side=32, progress=False)


def test_folders_skip_hidden_and_empty_folders_odd_names_and_an_output_inside(fixtures_dir, tmp_path):
    source = folders_tree(tmp_path)
    link(GESTURES["stop_sign"], source / ".ipynb_checkpoints" / "clip_x")
    (source / "up" / ".DS_Store").write_bytes(b"\0")
    (source / "empty_class").mkdir()
    odd = os.fsdecode(b"bad\xff name.avi")
    (source / "down" / odd).write_bytes(AVI.read_bytes())
    manifest = tool.convert("folders", source, tmp_path / "out", short_side=32, progress=False)
    assert manifest["labels"] == ["down", "up"] and manifest["splits"]["train"]["videos"] == 4
    reasons = sorted(s["reason"] for s in manifest["skipped"])
    assert reasons == ["no video file or frame folder in it: not a class", "the name is not valid UTF-8"]
    with pytest.raises(AnnotationError, match="inside --input"):
        tool.convert("folders", source, source / "records", progress=False)


def test_resume_after_the_process_is_killed(fixtures_dir, tmp_path):
    source = folders_tree(tmp_path)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "tfrecords_tools.convert", "--format", "folders", "--input", str(source),
               "--output", str(out), "--num_shards", "4", "--workers", "1", "--short_side", "96"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(out.glob("train-*.tfrecord")) and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    if (out / schema.MANIFEST).exists():
        pytest.skip("the conversion finished before it could be killed")
    finished = sorted(out.glob("train-*.tfrecord"))
    assert 1 <= len(finished) < 4
    plan = json.loads((out / tool.PLAN).read_text())["shards"]
    for shard in finished:  # a final name always holds a complete shard
        ids = [v["video_id"] for v in schema.read_videos(str(shard))]
        assert ids == [entry["video_id"] for entry in plan[shard.name]]
    # inspect names the shards that are missing
    inspected = subprocess.run([sys.executable, "-m", "tfrecords_tools.inspect", str(out), "--sheet", ""], cwd=REPO,
                               env=env, capture_output=True, text=True)
    absent = sorted(set(plan) - {shard.name for shard in finished})
    assert inspected.returncode == 1 and f"{len(absent)} shards of this set are missing (the conversion did not " \
        f"finish; the same tfrecords_tools.convert command resumes it): {absent[0]}" in \
        inspected.stderr, inspected.stderr
    one = subprocess.run([sys.executable, "-m", "tfrecords_tools.inspect", str(finished[0]), "--sheet", ""],
                         cwd=REPO, env=env, capture_output=True, text=True)  # its siblings are on disk
    assert f"{len(absent)} shards of this set are missing" in one.stderr, one.stderr
    subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True)
    manifest = json.loads((out / schema.MANIFEST).read_text())
    assert manifest["splits"]["train"]["videos"] == 4 and len(records(out)) == 4


def test_record_errors_read_without_tensorflow_internals():
    import tensorflow as tf

    eager = "{{function_node __wrapped__IteratorGetNext}} truncated record at 12790987 [Op:IteratorGetNext] name: x"
    traced = ("Graph execution error:\n\nDetected at node IteratorGetNext defined at (most recent call last):\n"
              "  File \"train.py\", line 7, in run\n\ntruncated record at 12790987' failed with Read less bytes "
              "than requested\n\t [[{{node IteratorGetNext}}]] [Op:__inference_run_27]")
    assert schema.error_text(tf.errors.DataLossError(None, None, eager)) == "truncated record at 12790987"
    assert schema.error_text(tf.errors.DataLossError(None, None, traced)) == \
        "truncated record at 12790987' failed with Read less bytes than requested"


# Listing: what each format finds on disk, without converting anything.


def touch(path, data=b""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def ucf_notes(tmp_path):
    """The official UCF-101 class list and a split that names two videos."""
    notes = tmp_path / "annotations"
    notes.mkdir()
    shutil.copy(ANNOTATIONS / "ucf101_classInd.txt", notes / "classInd.txt")
    (notes / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1\n")
    (notes / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi\n")
    return notes


def test_ucf101_finds_a_listed_video_by_its_name_in_another_case(fixtures_dir, tmp_path, ucf_notes):
    # Copies renamed to the class folder's case (v_HandstandPushups_...) while the lists keep
    # the official v_HandStandPushups_...
    videos = tmp_path / "UCF-101"
    touch(videos / "ApplyEyeMakeup" / "v_applyeyemakeup_g01_c01.avi")
    touch(videos / "Archery" / "v_Archery_g01_c01.avi")
    _, items, missing = sources.list_ucf101(videos, ucf_notes)
    assert not missing
    assert sorted((item.video_id, item.source) for item in items)[0] == (
        "v_ApplyEyeMakeup_g01_c01", str(videos / "ApplyEyeMakeup" / "v_applyeyemakeup_g01_c01.avi"))
    # Two copies that differ only in case, neither the listed name: which one is meant is
    # unknown, so the listed video is missing, not one of them guessed.
    touch(videos / "ApplyEyeMakeup" / "v_APPLYEYEMAKEUP_g01_c01.avi")
    _, items, missing = sources.list_ucf101(videos, ucf_notes)
    assert [item.video_id for item in items] == ["v_Archery_g01_c01"]
    assert [(name, reason) for name, reason, _ in missing] == [
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "missing: no such .avi or frame folder under --input")]


def test_a_conversion_resumes_from_another_folder_and_a_wrong_input_writes_nothing(ucf_tree, monkeypatch):
    monkeypatch.chdir(ucf_tree)
    first = tool.convert("ucf101", "videos", "out", annotations="annotations", progress=False)
    monkeypatch.chdir(ucf_tree / "videos")
    again = tool.convert("ucf101", ucf_tree / "videos", ucf_tree / "out", annotations=ucf_tree / "annotations",
                         progress=False)
    assert again["splits"] == first["splits"]
    # A UCF-101 list read as Jester's: every listed id missing, refused before a file is written.
    with pytest.raises(AnnotationError, match=r"none of the \d+ videos the annotations list is under --input .*"
                                              r"check --input and --format"):
        tool.convert("jester", ucf_tree / "videos", ucf_tree / "wrong", annotations=ucf_tree / "annotations",
                     progress=False)
    assert not (ucf_tree / "wrong").exists()


def test_ucf101_follows_symlinked_class_folders_and_ends_link_loops(fixtures_dir, tmp_path, ucf_notes):
    videos = tmp_path / "UCF-101"
    touch(videos / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.avi")
    touch(tmp_path / "elsewhere" / "Archery" / "v_Archery_g01_c01.avi")
    link(tmp_path / "elsewhere" / "Archery", videos / "Archery")
    link(videos, videos / "ApplyEyeMakeup" / "loop")  # a link back up: walked once
    _, items, missing = sources.list_ucf101(videos, ucf_notes)
    assert not missing
    assert sorted(item.source for item in items) == [
        str(videos / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.avi"),
        str(videos / "Archery" / "v_Archery_g01_c01.avi")]


def test_ucf101_takes_the_official_codes_frame_folders(fixtures_dir, tmp_path, ucf_notes):
    """The official code extracts UCF-101 to `Class/v_X/image_00001.jpg` frame
    folders; they were all 'missing: no such .avi', and nothing converted."""
    frames = tmp_path / "UCF-101-jpg"
    folder = frames / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01"
    folder.mkdir(parents=True)
    for index in range(1, 4):
        Image.new("RGB", (16, 12), (80 * index, 0, 0)).save(folder / f"image_{index:05d}.jpg")
    link(GESTURES["stop_sign"], frames / "Archery" / "v_Archery_g01_c01")
    manifest = tool.convert("ucf101", frames, tmp_path / "out", annotations=ucf_notes, short_side=0, progress=False)
    assert manifest["skipped"] == []
    videos = records(tmp_path / "out")
    assert [(v["label_index"], v["label_text"], v["num_frames"], v["fps"]) for v in videos.values()] == [
        (0, "ApplyEyeMakeup", 3, None), (2, "Archery", 68, None)]
    # An .avi and a frame folder of the listed name: the .avi at the listed path is converted.
    avi = touch(frames / "Archery" / "v_Archery_g01_c01.avi")
    _, items, missing = sources.list_ucf101(frames, ucf_notes)
    assert [item.source for item in items if item.split == "val"] == [str(avi)]
    assert missing == [(str(frames / "Archery" / "v_Archery_g01_c01"), f"the same name as {avi}, which is converted",
                        "val")]


def test_a_video_name_found_twice_prefers_the_listed_path_and_reports_the_other(
        fixtures_dir, tmp_path, ucf_notes, capsys):
    videos = tmp_path / "UCF-101"
    touch(videos / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.avi")
    real = touch(videos / "Archery" / "v_Archery_g01_c01.avi")
    stale = touch(videos / "0_incomplete" / "v_Archery_g01_c01.avi")  # first in path order
    _, items, missing = sources.list_ucf101(videos, ucf_notes)
    assert [item.source for item in items if item.split == "val"] == [str(real)]
    assert missing == [(str(stale), f"the same name as {real}, which is converted", "val")]
    assert f"1 left out as another video of the same name is converted: {stale}" in capsys.readouterr().err
    # Kinetics: no listed path, so the first in path order, the same on every run.
    mkv, mp4 = touch(tmp_path / "k" / "abc_000000_000010.mkv"), touch(tmp_path / "k" / "abc_000000_000010.mp4")
    (tmp_path / "k.csv").write_text("label,youtube_id,time_start,time_end,split\nzumba,abc,0,10,train\n")
    _, items, missing = sources.list_kinetics(tmp_path / "k", tmp_path / "k.csv")
    assert [item.source for item in items] == [str(mkv)]
    assert missing == [(str(mp4), f"the same name as {mkv}, which is converted", "train")]


def test_folders_keep_one_of_a_class_folders_inputs_of_the_same_name(tmp_path):
    root = tmp_path / "in"
    touch(root / "walk" / "a.avi")
    touch(root / "walk" / "a.mkv")
    touch(root / "walk" / "clip" / "00001.jpg")
    touch(root / "walk" / "clip.mp4")
    touch(root / "walk" / "b.mp4")
    labels, items, missing = sources.list_folders(root)
    assert labels == ["walk"]
    assert {item.video_id: pathlib.Path(item.source).name for item in items} == {
        "walk/a": "a.avi", "walk/b": "b.mp4", "walk/clip": "clip"}
    assert sorted(missing) == [
        (str(root / "walk" / "a.mkv"), f"the same name as {root / 'walk' / 'a.avi'}, which is converted", None),
        (str(root / "walk" / "clip.mp4"), f"the same name as {root / 'walk' / 'clip'}, which is converted", None)]


def test_jester_takes_the_official_repos_and_20bn_list_names_and_warns_of_a_missing_list(
        jester_tree, capsys):
    root, _, labels = jester_tree
    notes = root / "annotations"
    # okankop/Efficient-3DCNNs annotation_Jester: categories.txt, trainlist.txt, vallist01.txt
    (notes / "classInd.txt").rename(notes / "categories.txt")
    (notes / "vallist.txt").rename(notes / "vallist01.txt")
    assert sources.list_jester(root / "frames", notes)[0] == labels
    assert {item.split for item in sources.list_jester(root / "frames", notes)[1]} == {"train", "val"}
    (notes / "trainlist.txt").rename(notes / "trainlist01.txt")  # utils/jester_json.py's name
    (notes / "vallist01.txt").unlink()
    _, items, _ = sources.list_jester(root / "frames", notes)
    assert {item.split for item in items} == {"train"}
    assert f"warning: {notes}: no val list (vallist.txt or vallist01.txt): no val split" in capsys.readouterr().err
    (notes / "vallist.txt").write_text("\n")  # an empty list warns as a missing one
    sources.list_jester(root / "frames", notes)
    assert f"warning: {notes / 'vallist.txt'} is empty: no val split" in capsys.readouterr().err


def test_flags_of_other_formats_and_an_unwritable_output_are_errors(jester_tree, tmp_path, capsys):
    root, _, _ = jester_tree
    common = ["--input", str(root / "frames"), "--annotations", str(root / "annotations"), "--workers", "1"]
    for flag, message in ((["--val_fraction", "0.5"], "--val_fraction is for --format folders; jester's annotations "
                                                      "give the splits"),
                          (["--split", "2"], "--split chooses one of UCF-101's three splits; --format jester has one")):
        assert tool.main(["--format", "jester", "--output", str(tmp_path / "o"), *common, *flag]) == 2
        assert f"error: {message}" in capsys.readouterr().err
    # An existing output folder that cannot be written (read-only, say) is refused before any work.
    assert tool.main(["--format", "jester", "--output", "/proc", *common]) == 2  # unwritable even for root
    assert "error: --output /proc: cannot write there (" in capsys.readouterr().err


def test_annotation_files_saved_with_a_byte_order_mark(fixtures_dir, tmp_path, ucf_notes):
    bom = "\ufeff"
    (ucf_notes / "classInd.txt").write_text(bom + (ANNOTATIONS / "ucf101_classInd.txt").read_text())
    touch(tmp_path / "UCF-101" / "Archery" / "v_Archery_g01_c01.avi")
    labels, items, _ = sources.list_ucf101(tmp_path / "UCF-101", ucf_notes)
    assert labels[0] == "ApplyEyeMakeup" and [item.label_index for item in items] == [2]
    touch(tmp_path / "k" / "abc_000000_000010.mp4")
    (tmp_path / "k.csv").write_text(bom + "label,youtube_id,time_start,time_end,split\nzumba,abc,0,10,train\n")
    assert sources.list_kinetics(tmp_path / "k", tmp_path / "k.csv")[0] == ["zumba"]


def test_a_header_only_kinetics_csv_lists_no_videos(tmp_path):
    (tmp_path / "k.csv").write_text("label,youtube_id,time_start,time_end,split\n")
    with pytest.raises(AnnotationError, match=r"k\.csv: the annotations list no videos"):
        sources.list_kinetics(tmp_path, tmp_path / "k.csv")


def test_kinetics_label_lookup_does_not_grow_with_the_class_count(tmp_path):
    """A search of the label list per row took classes x rows string comparisons
    (Kinetics: 600 x 650,000); equal-length labels make each comparison cost."""
    header, name, rows = "label,youtube_id,time_start,time_end,split\n", "x" * 4000, 8000
    for i in range(rows):
        touch(tmp_path / "in" / f"v{i:05d}_000000_000010.mp4")
    elapsed = {}
    for case, label in (("one class", lambda i: name), ("a class each", lambda i: f"{name}{i:05d}")):
        (tmp_path / "k.csv").write_text(header + "".join(f"{label(i)},v{i:05d},0,10,train\n" for i in range(rows)))
        start = time.perf_counter()
        sources.list_kinetics(tmp_path / "in", tmp_path / "k.csv")
        elapsed[case] = time.perf_counter() - start
    assert elapsed["a class each"] < 3 * elapsed["one class"] + 0.3, elapsed


def test_folders_refuse_a_class_folder_name_that_is_not_utf8(tmp_path):
    root = tmp_path / "in"
    touch(root / "walk" / "a.mp4")
    bad = root / os.fsdecode(b"caf\xe9")
    touch(bad / "b.mp4")
    labels, items, missing = sources.list_folders(root)
    assert labels == ["walk"] and [item.video_id for item in items] == ["walk/a"]
    assert missing == [(str(root / "caf\\xe9"), "the name is not valid UTF-8", None)]  # readable, printable


def test_folders_report_videos_outside_class_folders_and_classes_without_videos(tmp_path, capsys):
    root = tmp_path / "in"
    touch(root / "walk" / "a.mp4")
    touch(root / "notes" / "readme.txt")
    touch(root / "stray.mp4")
    touch(root / "README.md")  # not a video: no report
    labels, items, missing = sources.list_folders(root)
    assert labels == ["walk"] and len(items) == 1
    assert sorted(missing) == [
        (str(root / "notes"), "no video file or frame folder in it: not a class", None),
        (str(root / "notes" / "readme.txt"), "not a video file or frame folder", None),
        (str(root / "stray.mp4"), "a video outside the class folders (INPUT/<class>/<video>)", None)]
    assert f"2 entries of {root} are not class folders with videos, so not converted: {root / 'stray.mp4'}, " \
        f"{root / 'notes'}" in capsys.readouterr().err


@pytest.mark.parametrize("text, message", [
    ("0 a\n1 b\n", r"class indices must be 1\.\.2"),
    ("1 a\n1 b\n", r"class indices must be 1\.\.2"),
    ("1 a\nb\n", r"expected '<index> <class name>' on every line, got 'b'"),
    ("1 a\n2 a\n", r"class names listed twice: \['a'\]"),
])
def test_one_class_list_parser_for_checkpoints_and_datasets(tmp_path, ucf_notes, text, message):
    from keras_r3d.convert import read_labels

    (ucf_notes / "classInd.txt").write_text(text)
    with pytest.raises(ValueError, match=message):
        read_labels(ucf_notes / "classInd.txt")
    with pytest.raises(AnnotationError, match=message):
        sources.list_ucf101(tmp_path, ucf_notes)
