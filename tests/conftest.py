"""Shared test setup: fixture discovery, the slow and GPU markers, and
random-weight models whose logits mean something."""
import os
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = pathlib.Path(os.environ.get("KERAS_R3D_FIXTURES", REPO.parent / "shared" / "fixtures"))
OFFICIAL_CHECKPOINT = FIXTURES / "official" / "jester_shufflenet_0.5x_G3_RGB_16_best.pth"
REFERENCE = FIXTURES / "reference" / "jester_shufflenet_0.5x_G3"
GESTURES = {name: FIXTURES / "clips" / "gestures" / name for name in ("thumb_up", "thumb_down", "stop_sign")}
GESTURE_LABELS = {"thumb_up": "Thumb_Up", "thumb_down": "Thumb_Down", "stop_sign": "Stop_Sign"}
AVI = FIXTURES / "clips" / "ucf101" / "mmaction2_tests_test_ApplyEyeMakeup.avi"  # MPEG-4 with B-frames, 25 fps


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--runslow"):
        skip = pytest.mark.skip(reason="slow: takes minutes on 2 CPU cores; run with --runslow")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)
    if not _gpu_visible():
        skip = pytest.mark.skip(reason="needs a GPU and none is visible")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


def _gpu_visible():
    return any(pathlib.Path("/dev").glob("nvidia[0-9]*"))


@pytest.fixture(autouse=True)
def keras_backend_left_alone():
    """Fails a test that leaves KERAS_BACKEND changed in os.environ: every later
    subprocess in its worker would run on that backend (a CI failure once)."""
    before = os.environ.get("KERAS_BACKEND")
    yield
    assert os.environ.get("KERAS_BACKEND") == before, "this test changed KERAS_BACKEND in os.environ"


@pytest.fixture(scope="session")
def fixtures_dir():
    """The shared real fixtures: required under CI=true, else skipped if absent."""
    if not (FIXTURES / "README.md").exists():
        message = f"real fixtures not found at {FIXTURES} (set KERAS_R3D_FIXTURES)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return FIXTURES


def use_data_statistics(model, clips):
    """Sets every BatchNorm's moving statistics to those of `clips`, as training
    would: with the official fan-out init and identity statistics, the logits
    of deep random-weight nets vanish (MobileNet V1: about 1e-20), and no
    comparison means anything. Variances are floored at the layer's median:
    late layers see a handful of values per channel, and a near-zero variance
    would amplify float rounding by orders of magnitude."""
    import keras

    from keras_r3d import preprocess

    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    model(preprocess(clips, model.preprocessing), training=True)
    for layer in norms:
        layer.momentum = 0.9
        variance = layer.moving_variance.numpy()
        layer.moving_variance.assign(np.maximum(variance, np.median(variance)))


def assert_logits_mean_something(logits):
    """Reference logits (two or more clips) that a wrong output could not
    match by chance: not vanishing, and not the same whatever the input."""
    scale = np.abs(logits).max()
    assert scale > 0.1 and np.abs(logits[0] - logits[1]).max() > 0.01 * scale, logits


def write_half_white_video(path, width, height, frames, rotation=0, aspect=None):
    """An mpeg4 video of `frames` frames, stored `width`x`height`, whose left
    half is white; with a display `rotation` (degrees, counterclockwise, as
    phones record) and pixels `aspect` (a fraction) as wide as high, where given."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if aspect:
            stream.codec_context.sample_aspect_ratio = aspect
        if rotation:
            stream.set_display_rotation(rotation)
        frame = np.zeros((height, width, 3), np.uint8)
        frame[:, :width // 2] = 255
        for _ in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_rotated_video(path, frames=5):
    """A 64x32 video whose left half is white, stored with a 90° display
    rotation: upright, it is 32 wide and 64 high, white at the bottom."""
    return write_half_white_video(path, 64, 32, frames, rotation=90)


def write_anamorphic_video(path, aspect, frames=3, rotation=0):
    """A 64x48 video whose left half is white, with pixels `aspect` as wide as
    high: shown 64x48 times that ratio (turned by `rotation`, where given)."""
    return write_half_white_video(path, 64, 48, frames, rotation, aspect)


VARIABLE_RATE_STEP = 14  # the gray level of frame i is 14 i


def write_variable_rate_video(path):
    """A 32x32 mpeg4 video of 17 gray frames at irregular times (10 fps, then
    25, then 5); returns the path and the frames' times in milliseconds."""
    import fractions

    import av

    milliseconds = [0, 100, 200, 300, 400, 440, 480, 520, 560, 600, 640, 680, 720, 760, 800, 1000, 1200]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.codec_context.time_base = fractions.Fraction(1, 1000)
        for index, time in enumerate(milliseconds):
            gray = np.full((32, 32, 3), index * VARIABLE_RATE_STEP, np.uint8)
            frame = av.VideoFrame.from_ndarray(gray, format="rgb24")
            frame.pts, frame.time_base = time, fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path, milliseconds


def gesture_records(fixtures_dir, tmp_path):
    """A Jester-format TFRecord of the three gesture frame folders."""
    from tfrecords_tools.convert import convert

    labels = [line.split()[1] for line in
              (fixtures_dir / "official" / "annotations" / "jester_classInd.txt").read_text().split("\n")
              if line.strip()]
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    (annotations / "classInd.txt").write_text(
        (fixtures_dir / "official" / "annotations" / "jester_classInd.txt").read_text())
    (annotations / "vallist.txt").write_text(
        "".join(f"{name} {labels.index(GESTURE_LABELS[name]) + 1}\n" for name in GESTURES))
    convert("jester", GESTURES["thumb_up"].parent, tmp_path / "records", annotations=annotations,
            progress=False)
    return str(tmp_path / "records" / "val-*.tfrecord")
