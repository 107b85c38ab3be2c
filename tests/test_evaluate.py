"""Evaluation: the paper's video-level protocol against a hand computation,
and the official Jester checkpoint on the gesture fixtures."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_r3d import evaluate
from tests.conftest import GESTURE_LABELS, OFFICIAL_CHECKPOINT, REPO, gesture_records


def test_summarize_matches_a_hand_computation():
    # Video "a" (label 0): two windows; "b" (label 2): three; "c" (label 1): one.
    scores = np.array([
        [0.6, 0.3, 0.1],   # a: window right
        [0.2, 0.7, 0.1],   # a: window wrong; mean [0.4, 0.5, 0.1] -> video wrong, label 2nd
        [0.1, 0.2, 0.7],   # b: right
        [0.5, 0.1, 0.4],   # b: wrong
        [0.3, 0.3, 0.4],   # b: right; mean [0.3, 0.2, 0.5] -> video right
        [0.3, 0.2, 0.5],   # c: wrong, label 3rd
    ])
    labels = np.array([0, 0, 2, 2, 2, 1])
    ids = ["a", "a", "b", "b", "b", "c"]
    results = evaluate.summarize(scores, labels, ids, ["x", "y", "z"])
    assert results["num_clips"] == 6 and results["num_videos"] == 3
    assert results["clip_top1"] == pytest.approx(3 / 6)
    assert results["video_top1"] == pytest.approx(1 / 3)
    assert results["video_top5"] == 1.0  # k is capped at the 3 classes
    # The true class's mean scores: a 0.4, b 0.5, c 0.2.
    assert results["video_loss"] == pytest.approx(-(np.log(0.4) + np.log(0.5) + np.log(0.2)) / 3)
    assert evaluate.top_k_accuracy(scores, labels, 2) == pytest.approx(5 / 6)
    assert results["per_class"] == {"x": 0.0, "y": 0.0, "z": 1.0}
    # rows: true class, columns: predicted
    assert results["confusion"] == [[0, 1, 0], [0, 0, 1], [0, 0, 1]]
    by_id = {v["id"]: v for v in results["videos"]}
    assert by_id["a"]["prediction"] == "y" and by_id["a"]["score"] == pytest.approx(0.5)


def test_summarize_rejects_inconsistent_input():
    with pytest.raises(ValueError, match="different labels"):
        evaluate.summarize(np.full((2, 2), 0.5), np.array([0, 1]), ["v", "v"])
    with pytest.raises(ValueError, match="labels outside"):
        evaluate.summarize(np.full((1, 2), 0.5), np.array([2]), ["v"])


def test_central_windows_keeps_the_middle_of_each_video():
    ids = ["a"] * 5 + ["b"] * 2 + ["c"]
    assert evaluate.central_windows(ids, 0).tolist() == list(range(8))
    assert evaluate.central_windows(ids, 1).tolist() == [2, 5, 7]
    assert evaluate.central_windows(ids, 3).tolist() == [1, 2, 3, 5, 6, 7]


@pytest.mark.slow
def test_official_jester_checkpoint_scores_the_gestures(fixtures_dir, tmp_path):
    """The CLI on the converted official checkpoint: 3/3 with --clips 1; the
    full protocol (every window) is written beside it for the README."""
    from keras_r3d.convert import convert_checkpoint

    data = gesture_records(fixtures_dir, tmp_path)
    model_path = tmp_path / "jester.keras"
    convert_checkpoint(OFFICIAL_CHECKPOINT).save(model_path)
    outputs = {}
    for clips in (1, 0):
        output = tmp_path / f"clips{clips}.json"
        subprocess.run([sys.executable, "-m", "keras_r3d.evaluate", f"--model={model_path}",
                        f"--data={data}", f"--clips={clips}", f"--output={output}"],
                       check=True, cwd=REPO, timeout=600)
        outputs[clips] = json.loads(output.read_text())
        assert output.with_suffix(".png").stat().st_size > 0
    center = outputs[1]
    assert center["num_videos"] == 3 and center["video_top1"] == 1.0, center["videos"]
    assert all(v["prediction"] == v["label"] for v in center["videos"])
    assert sorted(v["label"] for v in center["videos"]) == sorted(GESTURE_LABELS.values())
    full = outputs[0]
    assert full["num_videos"] == 3 and full["num_clips"] > 3
    assert full["video_top1"] >= 2 / 3, full["videos"]
    print(json.dumps({k: full[k] for k in ("video_top1", "video_top5", "clip_top1", "clip_top5")}))
    print(json.dumps(full["videos"]))


def test_three_crops_are_averaged_with_the_windows_of_their_video(tmp_path):
    """Each video is 40 wide frames, red at the left end and blue at the right:
    the left crop says class 0, the right crop class 1, and the center ties."""
    from PIL import Image

    import keras_r3d
    from tfrecords_tools.convert import convert

    for label in ("left", "right"):
        folder = tmp_path / "in" / label / "video"
        folder.mkdir(parents=True)
        frame = np.zeros((32, 64, 3), np.uint8)
        frame[:, :16, 0] = frame[:, 48:, 2] = 255
        for i in range(40):
            Image.fromarray(frame).save(folder / f"{i + 1:05d}.jpg", quality=95)
    convert("folders", tmp_path / "in", tmp_path / "records", short_side=0, progress=False)

    class Model:  # what evaluate reads of a model
        preprocessing = keras_r3d.Preprocessing(frames=4, size=16, temporal_downsample=2,
                                                value_range=(0.0, 1.0), mean=(0.0,) * 3)
        class_names = ["left", "right"]

    def red_minus_blue(clips):
        red_blue = clips[..., [0, 2]].mean(axis=(1, 2, 3))
        return 10 * (red_blue - red_blue[:, ::-1])

    records = str(tmp_path / "records" / "train-*.tfrecord")
    for clips, crops, expected_clips in ((0, 1, 10), (0, 3, 30), (1, 3, 6), (2, 3, 12)):
        seen = []  # each clip's top class, in the order evaluated

        def recording(clips):
            logits = red_minus_blue(clips)
            seen.extend(np.argmax(logits, axis=1))
            return logits

        results = evaluate.evaluate(Model(), records, clips=clips, crops=crops, predict=recording)
        assert (results["num_clips"], results["num_videos"], results["crops"]) == (expected_clips, 2, crops)
        if crops == 3:  # each window's crops come left (red: class 0), center, right (blue: class 1)
            assert set(seen[0::3]) == {0} and set(seen[2::3]) == {1}
            assert evaluate.format_results(results).startswith(
                f"2 videos, {expected_clips} clips ({expected_clips // 3} windows x 3 crops; clips=")
            assert "\nvideo top-1 per class:\n  left: " in evaluate.format_results(results)
            assert "top-5" not in evaluate.format_results(results)  # 2 classes: always 1
        assert sorted(v["id"] for v in results["videos"]) == ["left/video", "right/video"]  # --clips 1 too
        # Sure left and right crops and a tied center average to a tie; so does the center alone.
        assert all(v["score"] == pytest.approx(0.5, abs=0.05) for v in results["videos"])
    with pytest.raises(ValueError, match="crops must be 1 or 3"):
        evaluate.evaluate(Model(), records, crops=2, predict=red_minus_blue)

    class Gestures(Model):  # a model of other classes: an error, not an accuracy
        class_names = ["Thumb_Up", "Thumb_Down"]

    def never(clips):
        raise AssertionError("a class mismatch is known before any clip is predicted")

    with pytest.raises(ValueError, match="not among the model's"):
        evaluate.evaluate(Gestures(), records, predict=never)
    with pytest.raises(ValueError, match="is a folder: pass a glob of its shards"):
        evaluate.evaluate(Model(), str(tmp_path / "records"), predict=never)
    (tmp_path / "frames").mkdir()  # a frame folder, say
    with pytest.raises(ValueError, match="is a folder without .tfrecord shards: the data is the shards that "
                                         "tfrecords_tools writes"):
        evaluate.evaluate(Model(), str(tmp_path / "frames"), predict=never)

    # The CLI writes into the working folder by default, and a path it cannot write is a clean error.
    model_path = tmp_path / "models" / "lr.keras"
    model_path.parent.mkdir()
    keras_r3d.create_model("ShuffleNetV2-0.25x", num_classes=2, input_shape=(4, 16, 16, 3),
                           class_names=["left", "right"]).save(model_path)
    run = [sys.executable, "-m", "keras_r3d.evaluate", f"--model={model_path}", f"--data={records}",
           "--clips=1"]
    work = tmp_path / "work"
    work.mkdir()

    def evaluate_cli(*extra):
        return subprocess.run(run + list(extra), cwd=work, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "PYTHONPATH": str(REPO)})

    done = evaluate_cli()
    assert done.returncode == 0, done.stderr[-2000:]
    assert (work / "lr_eval.json").exists() and (work / "lr_eval.png").exists()
    # A run's best.keras and last.keras are named after the run.
    assert evaluate.default_output("runs/a/best.keras") == "a_best_eval.json"
    assert evaluate.default_output("last.keras").endswith("_last_eval.json")  # the working folder's name
    assert evaluate.default_output("runs/a/jester.keras") == "jester_eval.json"
    assert not list(model_path.parent.glob("*_eval.*"))
    done = evaluate_cli(f"--output={model_path}/results.json")
    assert done.returncode == 1 and "error: --output" in done.stderr and "Traceback" not in done.stderr
    # A shard cut short (a copy interrupted): one line that says so, no traceback.
    shard = next((tmp_path / "records").glob("train-*.tfrecord"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size * 3 // 4])  # mid-record
    done = evaluate_cli()
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert f"error: a TFRecord of {records} is truncated or corrupt" in done.stderr
    assert "function_node" not in done.stderr and "tfrecords_tools.inspect names it" in done.stderr
    # One cut at a record boundary (here: emptied) holds fewer videos than the manifest lists.
    shard.write_bytes(b"")
    done = evaluate_cli()
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert f"error: a TFRecord of {records} holds another number of videos than the manifest.json" in done.stderr
    # An existing folder it cannot write (/proc, even for root) is refused before the evaluation.
    done = evaluate_cli("--output=/proc/results.json")
    assert done.returncode == 1 and "error: --output /proc/results.json: cannot write there" in done.stderr
    assert "a TFRecord" not in done.stderr


_PREDICT_COMPILED_ON_TORCH = """
import keras, numpy as np, tensorflow as tf
from keras_r3d.evaluate import predict_clips
model = keras.Sequential([keras.Input((2, 4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(3)])
model.compile(loss="mse", jit_compile=True)  # torch.compile
clips = tf.data.Dataset.from_tensor_slices((np.ones((4, 2, 4, 4, 3), "float32"), np.arange(4))).batch(2)
for reverse_time in (False, True):
    print(predict_clips(model, clips, reverse_time=reverse_time)[0].shape)
"""


def test_a_model_compiled_with_torch_compile_takes_the_records_clips():
    # train --jit_compile=true on torch trained, then crashed in its first validation:
    # "Expected np.nditer base, got <class 'tensorflow_wrapper'>".
    result = subprocess.run([sys.executable, "-c", _PREDICT_COMPILED_ON_TORCH], cwd=REPO, capture_output=True,
                            text=True, timeout=600, env={**os.environ, "KERAS_BACKEND": "torch"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["(4,", "3)", "(4,", "3)"]


def test_data_labels_map_to_the_model_outputs_by_name():
    assert evaluate.align_labels(["a", "b", "c"], ["a", "b", "c"], 3).tolist() == [0, 1, 2]
    assert evaluate.align_labels(["a", "b", "c"], ["c", "a"], 3).tolist() == [2, 0]
    assert evaluate.align_labels(None, ["x", "y"], 3).tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"\['thumb_up', 'waving'\] are not among the model's .*names "
                                         r"\(spelled differently there: thumb_up ~ Thumb_Up\)$"):
        evaluate.align_labels(["Thumb_Up", "Stop_Sign"], ["Stop_Sign", "thumb_up", "waving"], 2)
    with pytest.raises(ValueError, match="3 classes but the model only 2 outputs"):
        evaluate.align_labels(None, ["x", "y", "z"], 2)


def test_an_unquoted_glob_is_named_as_such(tmp_path):
    """The shell expands `--data data/*.tfrecord` into one flag and stray files."""
    shards = [tmp_path / f"val-0000{i}-of-00002.tfrecord" for i in range(2)]
    for shard in shards:
        shard.write_bytes(b"")
    done = subprocess.run([sys.executable, "-m", "keras_r3d.evaluate", "--model=m.keras", f"--data={shards[0]}",
                           str(shards[1])], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and (f"error: unexpected arguments {shards[1]}; an unquoted glob is expanded by "
                                     "the shell into files: quote it") in done.stderr, done.stderr[-2000:]
    from keras_r3d.text import unexpected_arguments

    assert unexpected_arguments(["extra"]) == "error: unexpected arguments extra"  # not a file: no hint
