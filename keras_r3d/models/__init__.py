"""One builder per family; `BUILDERS` maps the official arch names to them."""
from keras_r3d.models.c3d import C3D
from keras_r3d.models.common import VideoClassifier, float32_model, fold_batch_norm
from keras_r3d.models.mobilenet import MobileNet3D
from keras_r3d.models.mobilenet_v2 import MobileNetV2_3D
from keras_r3d.models.resnet import ResNeXt3D, ResNet3D
from keras_r3d.models.shufflenet import ShuffleNet3D
from keras_r3d.models.shufflenet_v2 import ShuffleNetV2_3D
from keras_r3d.models.squeezenet import SqueezeNet3D

BUILDERS = {
    "shufflenet": ShuffleNet3D,
    "shufflenetv2": ShuffleNetV2_3D,
    "mobilenet": MobileNet3D,
    "mobilenetv2": MobileNetV2_3D,
    "squeezenet": SqueezeNet3D,
    "resnet": ResNet3D,
    "resnext": ResNeXt3D,
    "c3d": C3D,
}
# The output layer of each family: the one `finetune` replaces, and whose
# kernel gives a checkpoint's class count.
HEAD_LAYERS = {"shufflenet": "classifier_1", "shufflenetv2": "classifier_1", "mobilenet": "classifier_1",
               "mobilenetv2": "classifier_1", "squeezenet": "classifier_1", "resnet": "fc",
               "resnext": "fc", "c3d": "fc_0"}
