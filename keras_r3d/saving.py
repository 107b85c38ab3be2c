"""Loading models and reading what they carry."""
import json
import pathlib
import zipfile

import keras

from keras_r3d.models import VideoClassifier
from keras_r3d.preprocessing import Preprocessing


def load(path, **convert_kwargs):
    """Loads a `.keras` model, or converts an official `.pth` checkpoint in
    memory (`convert_kwargs` as in `keras_r3d.convert.convert_checkpoint`)."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No model file at {path}")
    if path.suffix == ".pth":
        from keras_r3d.convert import convert_checkpoint

        return convert_checkpoint(path, **convert_kwargs)
    if path.suffix != ".keras":
        raise ValueError(f"{path}: expected a .keras model or an official .pth checkpoint")
    if convert_kwargs:
        raise TypeError(f"{sorted(convert_kwargs)} only apply to .pth checkpoints")
    try:
        return keras.saving.load_model(path, compile=False)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:  # not a Keras model
        raise ValueError(f"{path} is not a loadable .keras model: {error}"[:500]) from None


def model_info(model_or_path):
    """`{"preprocessing": {...}, "class_names": [...], "architecture": {...}}`
    of a model, or of a `.keras` file without building it."""
    if isinstance(model_or_path, VideoClassifier):
        config = model_or_path.get_config()
    else:
        path = pathlib.Path(model_or_path)
        try:
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json"))["config"]
        except (zipfile.BadZipFile, KeyError, FileNotFoundError) as error:
            raise ValueError(f"{path} is not a keras_r3d .keras model: {error}") from None
    if "preprocessing" not in config:
        raise ValueError("Not a keras_r3d model: its config has no preprocessing contract")
    info = {key: config.get(key) for key in ("preprocessing", "class_names", "architecture")}
    info["preprocessing"] = Preprocessing.from_dict(info["preprocessing"]).to_dict()
    return info
