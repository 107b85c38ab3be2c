"""predict: the official evaluation protocol, the CLI and its errors."""
import json
import re
import runpy
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import keras_r3d
from keras_r3d import predict, video
from tests.conftest import (AVI, GESTURE_LABELS, GESTURES, OFFICIAL_CHECKPOINT, REFERENCE, REPO,
                            VARIABLE_RATE_STEP, use_data_statistics, write_anamorphic_video, write_rotated_video,
                            write_variable_rate_video)


def test_window_indices_follow_the_official_center_crop():
    # 68 frames, 16 x downsample 2: TemporalCenterCrop starts at index 18.
    np.testing.assert_array_equal(predict.window_indices(68, 16, 2)[0], np.arange(18, 50, 2))
    # An odd window starts half of it before the center frame, rounded down: 34 - 7.
    np.testing.assert_array_equal(predict.window_indices(68, 15, 1)[0], np.arange(27, 42))
    # Short videos loop from the start of the window.
    np.testing.assert_array_equal(predict.window_indices(5, 4, 2)[0], [0, 2, 4, 1])
    spread = predict.window_indices(100, 16, 1, clips=3)
    assert spread.shape == (3, 16) and spread[0, 0] == 0 and spread[-1, -1] == 99
    # 0: every non-overlapping window, as many as evaluate's test protocol counts.
    from keras_r3d.data import window_count

    for num_frames in (1, 32, 33, 34, 64, 100):
        every = predict.window_indices(num_frames, 16, 2, clips=0)
        assert len(every) == window_count(num_frames, 32) and every[0, 0] == 0, num_frames
        assert [window[0] for window in every] == list(range(0, 32 * len(every), 32))


def test_resample_indices_follow_time():
    np.testing.assert_array_equal(video.resample_indices(10, 24.0, 12.0), [0, 2, 4, 6, 8])
    np.testing.assert_array_equal(video.resample_indices(10, 30.0, 12.0), [0, 2, 5, 8])  # nearest, not floor
    np.testing.assert_array_equal(video.resample_indices(4, None, 12.0), [0, 1, 2, 3])


def test_frame_folders_are_read_in_numeric_order(tmp_path):
    from PIL import Image

    for i in range(1, 13):  # 1.jpg ... 12.jpg: name order would put 10.jpg after 1.jpg
        Image.fromarray(np.full((8, 8, 3), 20 * i, np.uint8)).save(tmp_path / f"{i}.jpg", quality=100)
    frames, fps = video.read_video(tmp_path)
    assert fps is None and np.rint(frames.mean(axis=(1, 2, 3)) / 20).astype(int).tolist() == list(range(1, 13))


def test_a_variable_frame_rate_video_is_read_on_a_time_line(fixtures_dir, tmp_path):
    """A phone's video slows down in the dark: the frames come at the average
    rate, each the one nearest in time, not one per decoded frame. An AVI's
    time stamps are its B-frames' decoding times, out of order: its frames
    come as decoded."""
    import av

    path, milliseconds = write_variable_rate_video(tmp_path / "variable.mp4")
    frames, fps = video.read_video(path)
    slots = np.arange(len(frames)) / fps
    nearest = np.abs(slots[:, None] - np.array(milliseconds) / 1000).argmin(axis=1)
    assert len(frames) == round(milliseconds[-1] / 1000 * fps) + 1
    np.testing.assert_allclose(frames.mean(axis=(1, 2, 3)), nearest * VARIABLE_RATE_STEP, atol=3)

    with av.open(str(AVI)) as container:
        decoded = [(frame.time, frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]
    assert any(b[0] <= a[0] for a, b in zip(decoded, decoded[1:]))  # what the case is about
    np.testing.assert_array_equal(video.read_video(AVI)[0], np.stack([image for _, image in decoded]))


def test_clips_reproduce_the_official_frames(fixtures_dir):
    """Decoding, Scale(112) and CenterCrop(112) give the official model's input."""
    from keras_r3d.video import read_video

    contract = keras_r3d.preprocessing.DATASET_PREPROCESSING["jester"]
    for name, folder in GESTURES.items():
        frames, fps = read_video(folder)
        clip = predict.clips_from_frames(frames, contract, fps)[0]
        expected = np.load(REFERENCE / f"{name}.npz")["frames_uint8_thwc"]
        assert np.abs(clip.astype(int) - expected).max() <= 1


def test_frames_cropped_as_they_decode_give_the_same_clips(fixtures_dir):
    """classify and export crop each frame as it is decoded (a long video is never
    held at full size): the windows equal those cut from the full-size frames."""
    from keras_r3d.video import read_video

    contract = keras_r3d.preprocessing.DATASET_PREPROCESSING["ucf101"]
    path = fixtures_dir / "clips" / "ucf101" / "paddlevideo_example_archery.avi"
    full, fps = read_video(path)
    cropped, _ = predict.read_cropped(path, contract)
    assert cropped.shape == (len(full), contract.size, contract.size, 3)
    np.testing.assert_array_equal(predict.clips_from_frames(cropped, contract, fps, clips=3),
                                  predict.clips_from_frames(full, contract, fps, clips=3))


def test_a_cut_matroska_file_is_refused_where_completeness_is_asked(tmp_path, capsys):
    """Matroska and WebM headers count no frames: their duration shows the cut
    (refused where completeness is asked, else warned of)."""
    import av

    from keras_r3d.video import VideoError, read_video

    whole = tmp_path / "whole.mkv"
    with av.open(str(whole), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        noise = np.random.default_rng(0).integers(0, 256, (50, 48, 64, 3), np.uint8)  # no frame compresses away
        for frame in noise:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert len(read_video(whole, complete=True)[0]) == 50
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert 0 < len(read_video(cut)[0]) < 50  # what decoded, where completeness is not asked
    assert re.search(r"warning: .*cut.mkv: decoded [\d.]+ s of the 2.00 s its header declares: truncated or corrupt; "
                     "read as the frames that decoded", capsys.readouterr().err)
    with pytest.raises(VideoError, match=r"cut.mkv: decoded [\d.]+ s of the 2.00 s its header declares: truncated"):
        read_video(cut, complete=True)
    # A whole file whose audio runs longer than its video is complete.
    longer_audio = tmp_path / "audio.mkv"
    with av.open(str(longer_audio), "w") as container:
        video_stream = container.add_stream("libx264", rate=25)
        video_stream.width, video_stream.height, video_stream.pix_fmt = 64, 48, "yuv420p"
        audio_stream = container.add_stream("aac", rate=16000)
        for frame in noise[:25]:
            for packet in video_stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in video_stream.encode():
            container.mux(packet)
        for i in range(3 * 16000 // 1024):  # 3 s of silence against 1 s of video
            silence = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            silence.sample_rate, silence.pts = 16000, i * 1024
            for packet in audio_stream.encode(silence):
                container.mux(packet)
        for packet in audio_stream.encode():
            container.mux(packet)
    assert len(read_video(longer_audio, complete=True)[0]) == 25
    assert len(read_video(longer_audio)[0]) == 25 and "warning" not in capsys.readouterr().err


def test_a_cut_video_is_read_with_a_warning(fixtures_dir, tmp_path, capsys):
    """predict classifies what decoded of a cut file, as before, but says so
    (tfrecords_tools.convert skips such a file)."""
    from keras_r3d.video import read_video

    avi = fixtures_dir / "clips" / "ucf101" / "paddlevideo_example_archery.avi"
    cut = tmp_path / "cut.avi"
    cut.write_bytes(avi.read_bytes()[:30000])
    frames, _ = read_video(cut)
    assert 0 < len(frames) < 131
    assert (f"warning: {cut}: decoded {len(frames)} of the 131 frames its header declares: truncated or corrupt; "
            "read as the frames that decoded") in capsys.readouterr().err
    assert len(read_video(avi)[0]) == 131 and "warning" not in capsys.readouterr().err


@pytest.fixture(scope="module")
def jester_model(fixtures_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "jester.keras"
    keras_r3d.load(OFFICIAL_CHECKPOINT).save(path)
    return path


def test_predict_cli_classifies_the_gestures(jester_model, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    paths = [str(p) for p in GESTURES.values()] + [str(broken)]
    run = subprocess.run([sys.executable, "-m", "keras_r3d.predict", "--model", str(jester_model), "--json",
                          "--clips", "1", *paths], capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stderr  # one input failed, the others were still classified
    results = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["path"] for r in results] == paths
    for result, name in zip(results, GESTURES):
        assert result["top"][0]["label"] == GESTURE_LABELS[name]
        assert len(result["top"]) == 5 and result["windows"] == 1
        assert sum(c["prob"] for c in result["top"]) <= 1.0 + 1e-6
    assert "cannot decode: no video FFmpeg can read" in results[-1]["error"]


def test_classify_python_api_on_a_video_file(jester_model, fixtures_dir):
    model = keras_r3d.load(jester_model)
    result = keras_r3d.classify(model, fixtures_dir / "clips" / "ucf101" / "paddlevideo_example_archery.avi",
                                top_k=3, clips=4)
    assert result["windows"] == 4 and len(result["top"]) == 3
    assert result["top"][0]["prob"] >= result["top"][1]["prob"] >= result["top"][2]["prob"]
    assert "note" not in result
    # Frames given as an array are resampled from the fps given (any real number), as a file's are.
    frames = video.read_video(fixtures_dir / "clips" / "ucf101" / "paddlevideo_example_archery.avi")[0]
    assert keras_r3d.classify(model, frames, top_k=3, fps=np.float32(25.0), clips=4) == result
    for bad in ({"top_k": 0}, {"top_k": True}, {"fps": 0}, {"fps": -5}, {"fps": "12"}, {"fps": float("nan")}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be a positive"):
            keras_r3d.classify(model, frames, **bad)
    short = keras_r3d.classify(model, np.zeros((5, 120, 160, 3), np.uint8))
    assert short["note"] == ("5 frames, fewer than the 32 of one window: the window repeats them "
                             "(loop padding, as the official code pads)")


def test_a_softmax_head_is_not_softmaxed_again(tmp_path):
    """`classifier_activation="softmax"` models output probabilities: predict,
    evaluate, training's loss and the export metadata take them as such."""
    from keras_r3d import evaluate, export

    model = keras_r3d.ShuffleNetV2_3D(width_mult=0.25, num_classes=3, input_shape=(4, 32, 32, 3),
                                      classifier_activation="softmax")
    model.save(tmp_path / "softmax.keras")
    model = keras_r3d.load(tmp_path / "softmax.keras")
    assert model.outputs_probabilities
    frames = np.random.default_rng(0).integers(0, 256, (12, 40, 40, 3), np.uint8)
    clip = predict.clips_from_frames(frames, model.preprocessing)
    probabilities = model.predict_on_batch(keras_r3d.preprocess(clip, model.preprocessing))
    result = keras_r3d.classify(model, frames, top_k=3)
    assert sorted(p["prob"] for p in result["top"]) == pytest.approx(sorted(probabilities[0]), abs=1e-6)
    assert evaluate.class_scores(model, probabilities) == pytest.approx(probabilities)
    metadata = export.export_metadata(model, raw_input=False, input_dtype="uint8")
    assert metadata["output"]["kind"] == "probabilities"
    runner = runpy.run_path(str(REPO / "exports" / "run_on_device.py"))  # reads that kind
    (best,) = runner["top_k"]([0.2, 0.7, 0.1], ["a", "b", "c"], 1, probabilities=True)
    assert best == {"label": "b", "prob": pytest.approx(0.7)}
    logits = keras_r3d.ShuffleNetV2_3D(width_mult=0.25, num_classes=3, input_shape=(4, 32, 32, 3))
    assert not logits.outputs_probabilities
    assert export.export_metadata(logits, raw_input=False, input_dtype="uint8")["output"]["kind"] == "logits"


def test_a_mixed_precision_model_is_run_in_float32_and_resumed_as_saved(tmp_path, capsys):
    """`train --precision mixed_*` saves layers that compute in float16:
    evaluate and predict run a float32 copy, as the exports compute; training
    (--model, --resume) goes on with the model as saved."""
    import keras

    from keras_r3d.runs import RunDirectory
    from keras_r3d.saving import load_for_inference

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    keras.utils.set_random_seed(0)
    try:
        mixed = keras_r3d.SqueezeNet3D(num_classes=3, input_shape=(8, 32, 32, 3), class_names=["a", "b", "c"],
                                       preprocessing="jester")
    finally:
        keras.config.set_dtype_policy(previous)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 8, 32, 32, 3), np.uint8)
    use_data_statistics(mixed, pixels)  # else the random-weight logits may all be 0
    path = tmp_path / "mixed.keras"
    mixed.save(path)
    model = load_for_inference(path)
    assert f"note: {path} computes in mixed or half precision" in capsys.readouterr().err
    assert {layer.compute_dtype for layer in model.layers} == {"float32"}
    assert keras_r3d.model_info(model) == keras_r3d.model_info(path)  # contract, class names, architecture
    for a, b in zip(model.get_weights(), mixed.get_weights()):
        np.testing.assert_array_equal(a, b)
    clips = keras_r3d.preprocess(pixels, model.preprocessing)
    half, full = mixed.predict_on_batch(clips), model.predict_on_batch(clips)
    # float16's rounding, through the whole net (a wrong weight or layout would be off by the order of `full`)
    assert np.abs(full).max() > 0 and np.abs(half - full).max() < 0.1 * np.abs(full).max()
    model.save(tmp_path / "float32.keras")  # a float32 model loads as it is, without a note
    assert load_for_inference(tmp_path / "float32.keras").get_layer("features_0").compute_dtype == "float32"
    assert "note" not in capsys.readouterr().err
    assert keras_r3d.load(path).get_layer("features_0").compute_dtype == "float16"
    resumed = RunDirectory(tmp_path).load_checkpoint({"checkpoint": "mixed.keras", "epoch": 1})
    assert resumed.get_layer("features_0").compute_dtype == "float16"


def test_python_api_mistakes_are_clear_errors(tmp_path):
    import keras

    model = keras_r3d.ShuffleNetV2_3D(width_mult=0.25, num_classes=3, input_shape=(4, 32, 32, 3),
                                      class_names=["a", "b", "c"], preprocessing="jester")
    frames = np.random.default_rng(0).integers(0, 256, (12, 40, 40, 3), np.uint8)
    with pytest.raises(video.VideoError, match="expected uint8 RGB frames"):
        keras_r3d.classify(model, frames.astype(np.float32) / 255)
    # PyTorch's layout, in predict: the same clear error on every backend (JAX's trace broke the model).
    clips = np.zeros((1, 4, 32, 32, 3), np.float32)
    with pytest.raises(ValueError, match=r"takes clips of shape \(None, 4, 32, 32, 3\), got \(1, 3, 4, 32, 32\): "
                                         r"channels go last \(from PyTorch's N, C, T, H, W: np.moveaxis\(x, 1, -1\)\)"):
        model.predict(np.moveaxis(clips, -1, 1), verbose=0)
    assert model.predict(clips, verbose=0).shape == (1, 3)
    headless = keras_r3d.ShuffleNetV2_3D(width_mult=0.25, input_shape=(4, 32, 32, 3), include_top=False,
                                         pooling="avg")
    with pytest.raises(ValueError, match="this model has no class names"):
        keras_r3d.classify(headless, frames)
    # Keras' clone drops what a zoo model carries; keras_r3d's keeps it.
    with pytest.raises(ValueError, match="use keras_r3d.clone_model"):
        keras_r3d.model_info(keras.models.clone_model(model))
    clone = keras_r3d.clone_model(model)
    assert keras_r3d.model_info(clone) == keras_r3d.model_info(model) and clone is not model
    larger = keras_r3d.clone_model(model, input_tensors=keras.Input((8, 48, 48, 3)))
    assert (larger.preprocessing.frames, larger.preprocessing.size) == (8, 48)
    with pytest.raises(ValueError, match="clone_model: the contract needs known frames and square frames"):
        keras_r3d.clone_model(model, input_tensors=keras.Input((8, 32, 48, 3)))
    with pytest.raises(TypeError, match="model_info takes a keras_r3d model or a .keras path, got list"):
        keras_r3d.model_info([model])
    with pytest.raises(ValueError, match="is not a keras_r3d .keras model"):
        keras_r3d.model_info(tmp_path)
    with zipfile.ZipFile(tmp_path / "list.keras", "w") as archive:
        archive.writestr("config.json", "[1, 2]")
    with pytest.raises(ValueError, match="list.keras is not a keras_r3d .keras model: list indices"):
        keras_r3d.model_info(tmp_path / "list.keras")
    (tmp_path / "bad.keras").write_text("hi")
    with pytest.raises(ValueError, match="bad.keras is not a .keras file .*damaged or cut short"):
        keras_r3d.load(tmp_path / "bad.keras")
    with pytest.raises(ValueError, match="x.h5: a keras_r3d model saves as .keras, which keeps its preprocessing"):
        model.save(tmp_path / "x.h5")
    # A training run's folder, given as a model: the error names its model files.
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "best.keras")
    for load in (keras_r3d.load, keras_r3d.saving.load_for_inference):
        with pytest.raises(ValueError, match=f"{run} is a training run's folder: pass its model, {run}/best.keras$"):
            load(run)
    # Neither a model nor an export: the error lists every kind of model the tools take.
    (tmp_path / "clip.mp4").write_bytes(b"")
    for path, kind in ((tmp_path / "clip.mp4", "not a model file"), (tmp_path, "a folder without saved_model.pb")):
        with pytest.raises(ValueError, match=f"{kind}; a model is a .keras file, an official .pth checkpoint, or an "
                                             r"export of keras_r3d.export \(.tflite, .onnx, .engine, a SavedModel"):
            keras_r3d.saving.load_for_inference(path)
    with pytest.raises(ValueError, match="Unknown arch 'ShuffleNetV2'. Valid archs: shufflenet, shufflenetv2"):
        keras_r3d.list_models("ShuffleNetV2")


def test_odd_videos_and_frame_folders(fixtures_dir, tmp_path, capsys):
    """Phone videos' display rotation, pixels that are not square, a frame
    size that changes, macOS `._` files among the frames, and 16-bit
    grayscale PNG frames."""
    import fractions
    import shutil

    import av
    from PIL import Image

    from keras_r3d.video import VideoError, read_video

    frames, _ = read_video(write_rotated_video(tmp_path / "rotated.mp4"))
    assert frames.shape == (5, 64, 32, 3)  # upright: 32 wide, 64 high
    assert frames[0, 40:].mean() > 200 and frames[0, :24].mean() < 50  # the white half now at the bottom

    # Pixels that are not square (DV, DVD, broadcast): shown as a player shows them, one side shrunk.
    (tmp_path / "anamorphic").mkdir()
    for aspect, shape in ((fractions.Fraction(2), (24, 64)), (fractions.Fraction(1, 2), (48, 32))):
        frames, _ = read_video(write_anamorphic_video(tmp_path / "anamorphic" / f"{aspect.numerator}.avi", aspect))
        assert frames.shape == (3, *shape, 3)
        half = shape[1] // 2  # the white half stays the left half
        assert frames[0, :, :half - 2].mean() > 240 and frames[0, :, half + 2:].mean() < 15

    parts = []
    for width in (64, 96):  # one stream whose size changes midway: MPEG-TS segments joined
        part = tmp_path / f"part{width}.ts"
        with av.open(str(part), "w") as container:
            stream = container.add_stream("mpeg2video", rate=25)
            stream.width, stream.height, stream.pix_fmt = width, 48, "yuv420p"
            for _ in range(5):
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.zeros((48, width, 3), np.uint8),
                                                                       format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        parts.append(part.read_bytes())
    (tmp_path / "mixed.ts").write_bytes(b"".join(parts))
    with pytest.raises(VideoError, match=r"frames of different sizes: \(64, 48\) then \(96, 48\) at frame \d"):
        read_video(tmp_path / "mixed.ts")

    folder = tmp_path / "thumb_up"
    shutil.copytree(GESTURES["thumb_up"], folder)
    (folder / "._00001.jpg").write_bytes(b"\0\5\26\7 AppleDouble")
    np.testing.assert_array_equal(read_video(folder)[0], read_video(GESTURES["thumb_up"])[0])
    Image.fromarray(np.zeros((60, 80, 3), np.uint8)).save(folder / "00069.jpg")
    with pytest.raises(VideoError, match=r"frames of different sizes: \(320, 240\) then \(80, 60\) at 00069.jpg"):
        read_video(folder)
    (folder / "00069.jpg").rename(folder / "flow_x_00001.jpg")  # mmaction2's rawframes hold three sequences
    with pytest.raises(VideoError, match=r"frames of 2 sequences \(N.jpg: 68, flow_x_N.jpg: 1\); keep one per folder"):
        read_video(folder)
    (folder / "flow_x_00001.jpg").unlink()
    shutil.copy(folder / "00001.jpg", folder / "1.jpg")
    with pytest.raises(VideoError, match="00001.jpg and 1.jpg have the same frame number"):
        read_video(folder)
    (folder / "1.jpg").unlink()
    (folder / "00030.jpg").unlink()  # a gap: warned of, read as consecutive
    assert len(read_video(folder)[0]) == 67
    assert "frames missing from the numbering (00029.jpg then 00031.jpg): read as consecutive" in \
        capsys.readouterr().err
    shutil.copy(GESTURES["thumb_up"] / "00030.jpg", folder)

    deep = tmp_path / "deep"
    deep.mkdir()
    Image.fromarray(np.full((8, 8), 200 * 257, np.uint16)).save(deep / "00001.png")
    assert read_video(deep)[0][0, 0, 0].tolist() == [200, 200, 200]

    # Natural mistakes: one frame instead of its folder, a folder of frame folders.
    with pytest.raises(VideoError, match="one image, not a video: pass the folder of its frames"):
        read_video(folder / "00001.jpg")
    with pytest.raises(VideoError, match=r"it holds videos \(rotated.mp4\) and frame folders \(deep, thumb_up\); "
                                         r"pass those"):
        read_video(tmp_path)
    (tmp_path / "videos").mkdir()
    for name in ("b.avi", "a.MP4", "c.mkv", "d.webm"):
        (tmp_path / "videos" / name).write_bytes(b"")
    with pytest.raises(VideoError, match=r"a folder with no .jpg/.jpeg/.png frames: it holds videos \(a.MP4, b.avi, "
                                         r"c.mkv, ...\); pass those"):
        read_video(tmp_path / "videos")
