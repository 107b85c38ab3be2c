"""The preprocessing contract a model carries, and its one implementation.

A keras_r3d model maps float32 frames, already normalized by its contract, to
logits. The contract travels in the saved model's config; `preprocess` is the
only code that applies it (data pipeline, predict, evaluate and exports).
"""
import dataclasses
import math
import numbers

import numpy as np

ACTIVITYNET_MEAN = (114.7748, 107.7354, 99.4750)


def checked_fps(fps):
    """`fps` as a float, or None; anything but a positive finite number is a ValueError."""
    if fps is None:
        return None
    if not isinstance(fps, numbers.Real) or isinstance(fps, bool) or not 0 < fps < math.inf:
        raise ValueError(f"fps must be a positive number of frames per second or None, got {fps!r}")
    return float(fps)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How uint8 RGB frames become a model's input.

    Attributes:
        channel_order: "RGB" or "BGR", the channel order the model expects.
            Decoders always produce RGB; "BGR" reverses the channels.
        value_range: pixel values are scaled linearly from 0..255 to this range.
        mean: subtracted per input channel, after reordering and scaling.
        std: divides per input channel, after the mean.
        frames: clip length in frames.
        size: spatial side of the square crop.
        temporal_downsample: keep every n-th frame of a window of
            `frames * temporal_downsample` frames.
        fps: frame rate the model was trained at, or None for "as decoded".
    """

    channel_order: str = "RGB"
    value_range: tuple = (0.0, 255.0)
    mean: tuple = ACTIVITYNET_MEAN
    std: tuple = (1.0, 1.0, 1.0)
    frames: int = 16
    size: int = 112
    temporal_downsample: int = 1
    fps: float = None

    def __post_init__(self):
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        for name, count in (("value_range", 2), ("mean", 3), ("std", 3)):
            value = getattr(self, name)
            if not isinstance(value, (tuple, list, np.ndarray)) or len(value) != count \
                    or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
                               for v in value):
                raise ValueError(f"{name} must be {count} finite numbers, got {value!r}")
            object.__setattr__(self, name, tuple(float(v) for v in value))
        if self.value_range[0] == self.value_range[1]:
            raise ValueError(f"value_range must span an interval, got {self.value_range}")
        if any(s == 0 for s in self.std):
            raise ValueError(f"std must be non-zero, got {self.std!r}")
        for name in ("frames", "size", "temporal_downsample"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
            object.__setattr__(self, name, int(value))
        object.__setattr__(self, "fps", checked_fps(self.fps))

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, config):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(config) - known
        if unknown:
            raise ValueError(f"Unknown preprocessing keys {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**config)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def affine(self):
        """(scale, shift), float32 per channel in `channel_order`: the
        normalized input is `pixels * scale + shift` (pixels 0..255)."""
        low, high = self.value_range
        inv_std = np.asarray([1.0 / s for s in self.std], np.float64)
        scale = (high - low) / 255.0 * inv_std
        shift = (low - np.asarray(self.mean, np.float64)) * inv_std
        return scale.astype(np.float32), shift.astype(np.float32)


# The official recipes (Efficient-3DCNNs opts.py and run scripts): pixels in
# 0..255 minus the ActivityNet mean, std 1. Kinetics frames were decoded by
# OpenCV and never converted, so those models expect BGR.
DATASET_PREPROCESSING = {
    "jester": Preprocessing(temporal_downsample=2, fps=12.0),
    "ucf101": Preprocessing(fps=25.0),
    "kinetics": Preprocessing(channel_order="BGR"),
}


def as_contract(contract):
    """A `Preprocessing` from one, its dict, a data set's name (its official
    contract, DATASET_PREPROCESSING) or a model that carries one."""
    if isinstance(contract, Preprocessing):
        return contract
    if isinstance(contract, dict):
        return Preprocessing.from_dict(contract)
    if isinstance(contract, str) and contract in DATASET_PREPROCESSING:
        return DATASET_PREPROCESSING[contract]
    if isinstance(getattr(contract, "preprocessing", None), Preprocessing):
        return contract.preprocessing
    raise ValueError(f"a preprocessing contract is a Preprocessing, its dict, a data set's name "
                     f"({', '.join(DATASET_PREPROCESSING)}) or a keras_r3d model, got {contract!r}"[:300])


def preprocess(frames, contract):
    """Normalizes uint8 RGB frames `(..., T, H, W, 3)` by `contract` (anything
    `as_contract` takes).

    Accepts numpy arrays and TensorFlow tensors (in tf.data and exported
    graphs, where float32 pixel values 0..255 also go), and returns float32
    of the same kind.
    """
    contract = as_contract(contract)
    scale, shift = contract.affine()
    if type(frames).__module__.startswith("tensorflow"):
        import tensorflow as tf

        x = tf.cast(frames, tf.float32)
    else:
        frames = np.asarray(frames)
        if frames.dtype != np.uint8:  # 0..1 floats would pass as a nearly black clip
            in_unit_range = frames.size and np.issubdtype(frames.dtype, np.floating) and frames.max() <= 1.0
            fix = ("(frames * 255).round().astype(np.uint8)" if in_unit_range else
                   "np.clip(frames, 0, 255).round().astype(np.uint8)")
            raise ValueError(f"Expected uint8 frames (0..255, as decoded), got {frames.dtype}; these: {fix}")
        x = frames.astype(np.float32)
    if x.ndim < 1 or x.shape[-1] != 3:
        raise ValueError(f"Expected frames with 3 channels last, got shape {tuple(x.shape)}")
    if contract.channel_order == "BGR":
        x = x[..., ::-1]
    # Each op is a pass over the whole batch: skip the identities (the official contracts only shift).
    if (scale != 1.0).any():
        x = x * scale
    return x + shift if shift.any() else x
