"""The preprocessing contract and its single implementation."""
import numpy as np
import pytest

from keras_r3d import Preprocessing, preprocess
from keras_r3d.preprocessing import DATASET_PREPROCESSING
from keras_r3d.runtimes import random_frames


def test_official_normalization_subtracts_the_mean_in_0_255():
    frames = np.full((1, 2, 2, 3), 100, np.uint8)
    out = preprocess(frames, Preprocessing())
    np.testing.assert_allclose(out[0, 0, 0], [100 - 114.7748, 100 - 107.7354, 100 - 99.4750], atol=1e-5)
    assert out.dtype == np.float32


def test_bgr_range_and_std():
    frames = np.zeros((1, 1, 1, 3), np.uint8)
    frames[..., 0] = 255  # red
    contract = Preprocessing(channel_order="BGR", value_range=(0, 1), mean=(0, 0, 0.5), std=(1, 1, 0.25))
    np.testing.assert_allclose(preprocess(frames, contract)[0, 0, 0], [0, 0, 2.0])


def test_the_mean_is_subtracted_in_the_value_range_before_the_std_divides():
    frames = np.array([0, 51, 255], np.uint8).reshape(1, 1, 1, 3)
    contract = Preprocessing(value_range=(-1, 1), mean=(0.5, 0.0, -0.5), std=(0.5, 2.0, 0.25))
    # ((pixel / 255 * 2 - 1) - mean) / std: (-1 - 0.5) / 0.5, (-0.6 - 0) / 2, (1 + 0.5) / 0.25.
    np.testing.assert_allclose(preprocess(frames, contract)[0, 0, 0], [-3.0, -0.3, 6.0], rtol=1e-6)


def test_the_data_sets_contracts_are_the_official_recipes():
    # Efficient-3DCNNs: pixels 0..255 minus the ActivityNet mean; Jester's 12 fps clips sampled every second
    # frame; Kinetics frames as OpenCV decoded them, BGR.
    red = np.zeros((1, 1, 1, 3), np.uint8)
    red[..., 0] = 255
    expected = {"jester": ([255 - 114.7748, -107.7354, -99.4750], 2, 12.0),
                "ucf101": ([255 - 114.7748, -107.7354, -99.4750], 1, 25.0),
                "kinetics": ([-114.7748, -107.7354, 255 - 99.4750], 1, None)}
    for name, (pixel, downsample, fps) in expected.items():
        np.testing.assert_allclose(preprocess(red, name)[0, 0, 0], pixel, atol=1e-4, err_msg=name)
        contract = DATASET_PREPROCESSING[name]
        assert (contract.frames, contract.size, contract.temporal_downsample, contract.fps) == \
            (16, 112, downsample, fps), name


def test_float_frames_are_refused():
    with pytest.raises(ValueError, match=r"uint8 frames .*got float32; these: \(frames \* 255\)"):
        preprocess(np.full((1, 2, 2, 3), 0.5, np.float32), Preprocessing())
    for pixels in (np.full((1, 2, 2, 3), 200.0, np.float32), np.full((1, 2, 2, 3), 200, np.int64)):  # 0..255
        with pytest.raises(ValueError, match=r"these: np.clip\(frames, 0, 255\).round\(\).astype\(np.uint8\)"):
            preprocess(pixels, Preprocessing())


def test_tensorflow_tensors_give_the_same_result():
    tf = pytest.importorskip("tensorflow")
    frames = random_frames(2, (3, 4, 4, 3))
    contract = Preprocessing(channel_order="BGR", std=(58.0, 57.0, 57.5))
    np.testing.assert_allclose(preprocess(tf.constant(frames), contract).numpy(),
                               preprocess(frames, contract), rtol=1e-6)


def test_contract_round_trip_and_checks():
    contract = Preprocessing(temporal_downsample=2, fps=12.0)
    assert Preprocessing.from_dict(contract.to_dict()) == contract
    with pytest.raises(ValueError, match="channel_order"):
        Preprocessing(channel_order="RGBA")
    with pytest.raises(ValueError, match="Unknown preprocessing keys"):
        Preprocessing.from_dict({"mean_value": 1})
    with pytest.raises(ValueError, match="std"):
        Preprocessing(std=(1, 0, 1))
    with pytest.raises(ValueError, match=r"value_range must span an interval, got \(1.0, 1.0\)"):
        Preprocessing(value_range=(1, 1))
    with pytest.raises(ValueError, match="3 channels"):
        preprocess(np.zeros((2, 2, 4), np.uint8), contract)
    for bad, message in (({"frames": 1.5}, "frames must be a positive int, got 1.5"),
                         ({"size": "112"}, "size must be a positive int, got '112'"),
                         ({"mean": 5}, "mean must be 3 finite numbers, got 5"),
                         ({"std": (1.0, float("nan"), 1.0)}, r"std must be 3 finite numbers, got \(1.0, nan, 1.0\)"),
                         ({"fps": float("inf")}, "fps must be a positive number of frames per second or None"),
                         ({"fps": 0}, "fps must be a positive number of frames per second or None")):
        with pytest.raises(ValueError, match=message):
            Preprocessing(**bad)
    assert Preprocessing(frames=np.int64(8), fps=np.float32(12.5)).to_dict()["frames"] == 8  # as Python numbers
    # Whatever names a contract: a data set's name, its dict, a model's.
    frames = np.full((1, 2, 2, 3), 200, np.uint8)
    jester = preprocess(frames, contract)
    np.testing.assert_array_equal(preprocess(frames, "jester"), jester)
    np.testing.assert_array_equal(preprocess(frames, contract.to_dict()), jester)
    with pytest.raises(ValueError, match="a data set's name \\(jester, ucf101, kinetics\\)"):
        preprocess(frames, None)
