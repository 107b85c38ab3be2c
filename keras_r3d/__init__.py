"""keras_r3d: the resource-efficient 3D CNNs of Kopuklu et al. (2019) in Keras 3.

    from keras_r3d import MobileNetV2_3D
    model = MobileNetV2_3D(width_mult=1.0, num_classes=27)
"""
__version__ = "0.1.0"

import warnings

# `python -m keras_r3d.registry` runs a module that this package imports: runpy's
# warning about that says nothing to a user.
warnings.filterwarnings("ignore", message=r"'keras_r3d\.registry' found in sys\.modules",
                        category=RuntimeWarning)

from keras_r3d.layers import implementation
from keras_r3d.models import (
    C3D,
    MobileNet3D,
    MobileNetV2_3D,
    ResNeXt3D,
    ResNet3D,
    ShuffleNet3D,
    ShuffleNetV2_3D,
    SqueezeNet3D,
    VideoClassifier,
    fold_batch_norm,
)
from keras_r3d.preprocessing import Preprocessing, preprocess
from keras_r3d.profiling import profile
from keras_r3d.registry import build, create_model, list_models
from keras_r3d.saving import clone_model, finetune, load, model_info


def classify(model, path_or_frames, top_k=5, clips=1, fps=None):
    """Classifies a video file, frame folder or uint8 `(T, H, W, 3)` RGB frames
    (at `fps`, where known): `{"top": [{"label", "prob"}, ...], "windows": n}`
    (and a "note" for a video shorter than one window);
    `keras_r3d.predict.classify` has the details."""
    from keras_r3d.predict import classify as _classify

    return _classify(model, path_or_frames, top_k=top_k, clips=clips, fps=fps)


__all__ = [
    "C3D", "MobileNet3D", "MobileNetV2_3D", "ResNeXt3D", "ResNet3D", "ShuffleNet3D",
    "ShuffleNetV2_3D", "SqueezeNet3D", "VideoClassifier", "Preprocessing", "build", "classify",
    "clone_model", "create_model", "finetune", "fold_batch_norm", "implementation", "list_models", "load", "model_info",
    "preprocess", "profile",
]
